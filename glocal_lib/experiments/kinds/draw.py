"""Drawing an artifact by id: its kind draws the body, this adds provenance and writes the files.

`draw(artifact_id, registry, store, ...)` is the one entry point (the notebooks reach it through
`Reproduction.draw_artifact`); `build_tables` / `build_figures` draw several.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from glocal_lib.experiments import figures as figures_mod
from glocal_lib.experiments import provenance as prov_mod
from glocal_lib.experiments.kinds.base import Drawing, kind_of
from glocal_lib.experiments.registry import Registry
from glocal_lib.experiments.results import ResultStore
from glocal_lib.experiments.tables import LONG_COLUMNS, Table, paper_notes, paper_sources, write_table


def ids_of(reg: Registry, output: str, ids: Iterable[str] | None = None) -> list[str]:
    """The artifacts among `ids` (all when None) whose kind draws a `output` ("table" | "figure")."""
    return [a for a in reg.expand_ids(ids) if kind_of(reg, a).output == output]


def _provenance(ctx: Drawing, aid: str, art: dict[str, Any], notes: list[str], sources: list[str]) -> dict[str, Any]:
    return prov_mod.build(aid, art["title"], profile=ctx.store.profile, glocal_preset=ctx.reg.glocal_preset,
                          presets=sorted(ctx.presets), run_ids=ctx.run_ids,
                          runs_commit=ctx.store.commit_of(ctx.run_ids), sources=sources, notes=notes)


def build_table(reg: Registry, store: ResultStore, aid: str) -> Table | None:
    """The table of `aid` from saved runs (None for a kind drawn elsewhere: RC)."""
    kind, art = kind_of(reg, aid), reg.artifact(aid)
    ctx = Drawing(reg, store)
    body = kind.draw(ctx, aid, art)
    if body is None:
        return None
    df = pd.DataFrame(body.rows, columns=LONG_COLUMNS)
    notes = list(dict.fromkeys(ctx.notes + paper_notes(art)))
    prov = _provenance(ctx, aid, art, notes, paper_sources(art))
    return Table(aid, art["title"], df, body.index, body.columns, prov, body.group_by, notes)


def build_figure(reg: Registry, store: ResultStore, aid: str, out_dir: str | Path) -> list[Path]:
    """Draw the figure of `aid` and save it (profile's formats) with its provenance sidecar."""
    kind, art = kind_of(reg, aid), reg.artifact(aid)
    ctx = Drawing(reg, store)
    fig = kind.draw(ctx, aid, art)
    prov = _provenance(ctx, aid, art, ctx.notes + reg.method_notes(reg.methods_of(art)), [])
    formats = getattr(store.profile, "formats", figures_mod.DEFAULT_FORMATS)
    return figures_mod.save_figure(fig, Path(out_dir), aid, prov, formats=formats)


def build_tables(reg: Registry, store: ResultStore, ids: Iterable[str] | None, out_dir: str | Path) -> dict[str, Table]:
    """Build and write the table artifacts among `ids`; returns them for display."""
    out = {}
    for aid in ids_of(reg, "table", ids):
        table = build_table(reg, store, aid)
        if table is not None:
            write_table(table, out_dir)
            out[aid] = table
    return out


def build_figures(reg: Registry, store: ResultStore, ids: Iterable[str] | None,
                  out_dir: str | Path) -> dict[str, list[Path]]:
    return {aid: build_figure(reg, store, aid, out_dir) for aid in ids_of(reg, "figure", ids)}


def draw(artifact_id: str, reg: Registry, store: ResultStore, *, tables_dir: str | Path,
         figures_dir: str | Path) -> Table | list[Path] | None:
    """Draw one artifact and write its files: a Table (tables), the written paths (figures), None (RC)."""
    if kind_of(reg, artifact_id).output == "figure":
        return build_figure(reg, store, artifact_id, figures_dir)
    table = build_table(reg, store, artifact_id)
    if table is not None:
        write_table(table, tables_dir)
    return table
