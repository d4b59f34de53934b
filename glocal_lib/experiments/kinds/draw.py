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


def sample_sizes(ctx: Drawing) -> str | None:
    """'sample sizes (test sets): VisA 24 images / 12 anomalous / 12 with masks; ...' for the datasets
    whose cells the artifact drew, from the indexes 00_data recorded (None when it drew no cell)."""
    parts = []
    for ds in dict.fromkeys(c.dataset for c in ctx.used):
        idx = ctx.store.data_index(ds)
        name = ctx.reg.dataset_name(ds)
        if idx is None:
            parts.append(f"{name} not recorded (notebook 00_data records it)")
            continue
        anomalous = int((idx["label"].astype(int) == 1).sum())
        masks = f" / {int(idx['has_mask'].astype(bool).sum())} with masks" if "has_mask" in idx.columns else ""
        parts.append(f"{name} {len(idx)} images / {anomalous} anomalous{masks}")
    return "sample sizes (test sets): " + "; ".join(parts) if parts else None


def shortcut_notes(ctx: Drawing) -> list[str]:
    """What a smoke (or rehearsal) drawing does differently from the paper's setting, printed on it."""
    profile = ctx.store.profile
    if not prov_mod.banner_for(profile):
        return []
    out = []
    if hasattr(profile, "backbone"):
        out.append(f"{profile.name} shortcuts: backbone {profile.backbone} with "
                   f"{'random' if profile.weights is None else 'given'} weights at {profile.image_size} px, "
                   f"{profile.epochs} training epoch(s)" + (", synthetic stand-ins for the datasets"
                                                          if getattr(profile, "synthetic", False) else ""))
    keep = ctx.reg.data["profiles"][ctx.reg.profile].get("lambda_grid")
    if keep and any(c.select_on_test for c in ctx.used):
        out.append(f"{ctx.reg.profile} shortcut: lambda picked on test among {', '.join(f'{x:g}' for x in keep)} "
                   "only (the presets' own grids are longer)")
    return out


def build_table(reg: Registry, store: ResultStore, aid: str) -> Table | None:
    """The table of `aid` from saved runs (None for a kind drawn elsewhere: RC)."""
    kind, art = kind_of(reg, aid), reg.artifact(aid)
    ctx = Drawing(reg, store)
    body = kind.draw(ctx, aid, art)
    if body is None:
        return None
    df = pd.DataFrame(body.rows, columns=LONG_COLUMNS)
    sizes = sample_sizes(ctx) if prov_mod.banner_for(store.profile) else None
    extra = [*(art.get("notes") or []), *shortcut_notes(ctx), *([sizes] if sizes else [])]
    notes = list(dict.fromkeys(ctx.notes + paper_notes(art) + extra))
    prov = _provenance(ctx, aid, art, notes, paper_sources(art))
    return Table(aid, art["title"], df, body.index, body.columns, prov, body.group_by, notes)


def build_figure(reg: Registry, store: ResultStore, aid: str, out_dir: str | Path) -> list[Path]:
    """Draw the figure of `aid` and save it (profile's formats) with its provenance sidecar."""
    kind, art = kind_of(reg, aid), reg.artifact(aid)
    ctx = Drawing(reg, store)
    fig = kind.draw(ctx, aid, art)
    notes = [*ctx.notes, *reg.method_notes(reg.methods_of(art)), *(art.get("notes") or []), *shortcut_notes(ctx)]
    prov = _provenance(ctx, aid, art, list(dict.fromkeys(notes)), [])
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
