"""Method comparison tables: T1/T2 (`comparison_table`) and appendix E per category (`per_category_table`).

Rows are the artifact's `methods` (experiments.yaml `methods:` columns), evaluated under the main
protocol on its `datasets`; each cell is set beside the published value of the `paper` CSV.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from glocal_lib.experiments import provenance as prov_mod
from glocal_lib.experiments.kinds.base import Drawing, Kind, TableBody, register_kind
from glocal_lib.experiments.paper_values import category_key, load_paper_table, lookup
from glocal_lib.experiments.registry import Cell, Registry
from glocal_lib.experiments.results import CellResult
from glocal_lib.experiments.tables import (
    INCONSISTENT_MEAN,
    INCONSISTENT_MEAN_NOTE,
    MARK,
    METRIC_LABELS,
    MISSING_NOTE,
    SELECTION_NAN_NOTE,
    lam_of,
    long_row,
    paper_metric,
    pct,
)


def method_cells(reg: Registry, art: dict[str, Any]) -> list[Cell]:
    """One cell per method x kept dataset of the artifact, under the main protocol (method-major), or
    the artifact's own `protocol` (another paper's training/evaluation pairs, e.g. KAnoCLIP's)."""
    wanted = [d for d in art["datasets"] if reg.keep(d)]
    domains = [art["domain"]] if "domain" in art else sorted({reg.domain_of(d) for d in wanted})
    cells: list[Cell] = []
    for m in reg.methods_of(art):
        for dom in domains:
            cells += reg.cells_for(reg.method(m), m, dom, art.get("protocol", "main"), wanted)
    return cells


def inconsistent_mean(mean: float, rows: list[float]) -> bool:
    """Whether a printed Mean disagrees with its printed rows beyond rounding (each printed to 0.1: the
    mean of rounded rows is within 0.05 of the true mean, the printed Mean within 0.05 of it). Rows
    without a printed value (an image-level set's pixel metrics) are not part of the printed Mean."""
    rows = [v for v in rows if not math.isnan(v)]
    if math.isnan(mean) or len(rows) < 2:
        return False
    return abs(float(np.mean(rows)) - mean) > 0.1 + 1e-9


def cross_check(reg: Registry, rows: list[dict[str, Any]], cross: dict[str, Any]) -> list[str]:
    """Where the published dataset means of these rows differ from another table's published value for
    the same (dataset, method, metric), e.g. TE's AnomalyCLIP-paper values vs GlocalCLIP's Table 1 (T1)."""
    other = load_paper_table(cross["file"])
    differ, compared = [], 0
    for r in rows:
        if r["category"] != "mean" or math.isnan(r["paper"]):
            continue
        level, pm = paper_metric(reg, r["metric"])
        pv = lookup(other, table=cross["table"], domain=r["domain"], dataset=r["dataset"], method=r["row"],
                    level=level, metric=pm)
        if math.isnan(pv):
            continue
        compared += 1
        if abs(pv - r["paper"]) > 1e-9:
            differ.append(f"{r['row']} {r['dataset']} {METRIC_LABELS.get(r['metric'], r['metric'])} "
                          f"{r['paper']:g} here vs {pv:g}")
    if not differ:
        return []
    shown = "; ".join(differ[:4]) + (f"; ... (+{len(differ) - 4})" if len(differ) > 4 else "")
    return [f"published means here contradict {cross['artifact']}'s published values ({cross['file']}, "
            f"{cross['table']}) in {len(differ)} of {compared} shared cells: {shown}"]


def source_note(reg: Registry, method: str) -> str | None:
    """'<method>: preset <p> = <source>' for presets that say where their setting comes from."""
    from glocal_lib.config import preset_info

    entry = reg.method(method)
    if entry.get("reproduced", True) is False:
        return None
    preset = reg.resolve_preset(str(entry["preset"]))
    source = preset_info(preset).get("source")
    return f"{method}: preset {preset} = {' '.join(str(source).split())}" if source else None


class _MethodTable(Kind):
    required = ("title", "notebook", "datasets", "methods")

    def cells(self, reg: Registry, aid: str, art: dict[str, Any]) -> list[Cell]:
        return method_cells(reg, art)


def table_metrics(reg: Registry, art: dict[str, Any]) -> list[str]:
    """The artifact's `metrics` (keys of experiments.yaml `metrics`), default the registry's table_metrics."""
    return list(art.get("metrics") or reg.data["table_metrics"])


@register_kind("comparison_table")
class ComparisonTable(_MethodTable):
    """Rows = datasets + Mean, columns = method x metric (T1, T2): any paper's "Table N, reproduced vs
    published" is an entry of this kind. Keys: `domain` (protocol), `datasets`, `methods` (columns),
    optional `metrics` and `protocol` (a named protocol instead of the main one); `paper: {file, table,
    domain}` filters the transcribed CSV (long format of glocal_lib/experiments/paper), optional
    `paper.methods: {our column: name in that CSV}`, `paper.datasets: {our key: printed name, or null =
    no published row}`, `paper.metric_names: {AUROC: AUC}` and `paper.note`."""

    required = (*_MethodTable.required, "domain", "paper")
    headline = True

    def draw(self, ctx: Drawing, aid: str, art: dict[str, Any]) -> TableBody:
        reg = ctx.reg
        paper_cfg = art["paper"]
        paper = load_paper_table(paper_cfg["file"])
        domain = art["domain"]
        datasets = [d for d in art["datasets"] if reg.keep(d)]
        metrics = table_metrics(reg, art)
        named = dict(paper_cfg.get("methods") or {})
        paper_names = dict(paper_cfg.get("datasets") or {})  # our key -> the dataset as the CSV prints it
        metric_names = dict(paper_cfg.get("metric_names") or {})  # registry paper metric -> the CSV's
        by_cell = {(c.row, c.dataset): c for c in self.cells(reg, aid, art)}
        if "protocol" in art:  # another paper's protocol, which a profile may shorten (smoke)
            skipped = [d for d in datasets if not any(ds == d for _, ds in by_cell)]
            datasets = [d for d in datasets if d not in skipped]
            if skipped:
                ctx.notes.append(f"not evaluated under this profile's protocol "
                                 f"({reg.protocol_name(art['protocol'])}): "
                                 f"{', '.join(reg.dataset_name(d) for d in skipped)}")
        out = []
        for method in reg.methods_of(art):
            entry = reg.method(method)
            published_as = named.get(method, method)
            per_metric: dict[str, list[float]] = {m: [] for m in metrics}
            if entry.get("reproduced", True) is False:
                ctx.notes.append(f"{method}: {entry.get('reason', 'not reproduced')}")
            if (note := source_note(reg, method)) is not None:
                ctx.notes.append(note)
            for ds in datasets:
                cell = by_cell.get((method, ds))
                res = ctx.cell(cell) if cell is not None else CellResult(missing=True)
                for m in metrics:
                    level, pm = paper_metric(reg, m)
                    printed = paper_names.get(ds, reg.dataset_name(ds))  # None: the paper has no such row
                    pv = np.nan if printed is None else lookup(
                        paper, table=paper_cfg["table"], domain=paper_cfg.get("domain", domain), dataset=printed,
                        method=published_as, level=level, metric=metric_names.get(pm, pm))
                    rv = pct(res.values, m)
                    if not math.isnan(rv):
                        per_metric[m].append(rv)
                    out.append(long_row(aid, domain=domain, row=method, dataset=reg.dataset_name(ds), metric=m,
                                   reproduced=rv, paper=pv, selected_lambda=lam_of(res),
                                   lambda_selected_on_test=res.select_on_test, run_ids=" ".join(res.run_ids),
                                   note=MISSING_NOTE if res.missing and entry.get("reproduced", True) else ""))
            for m in metrics:
                level, pm = paper_metric(reg, m)
                pv = lookup(paper, table=paper_cfg["table"], domain=paper_cfg.get("domain", domain), dataset="Mean",
                            method=published_as, level=level, metric=metric_names.get(pm, pm))
                vals = per_metric[m]
                rows_pv = [r["paper"] for r in out if r["row"] == method and r["metric"] == m and r["dataset"] != "Mean"]
                note = f"mean over {len(vals)} datasets"
                if inconsistent_mean(pv, rows_pv):
                    note += f"; {INCONSISTENT_MEAN} ({np.nanmean(rows_pv):.2f})"
                    ctx.notes.append(INCONSISTENT_MEAN_NOTE)
                out.append(long_row(aid, domain=domain, row=method, dataset="Mean", metric=m,
                                    reproduced=float(np.mean(vals)) if vals else np.nan, paper=pv, note=note))
            if entry.get("lambda") == "select" and reg.glocal_preset == "glocalclip-released":
                ctx.notes.append(prov_mod.LAMBDA_NOTE + f" ({MARK} marks such cells; {SELECTION_NAN_NOTE})")
        ctx.notes += reg.method_notes(reg.methods_of(art))
        return TableBody(out, ["dataset"], ["row"], "metric")  # one block per metric: readable at 1400 px


@register_kind("per_category_table")
class PerCategoryTable(_MethodTable):
    """One section per dataset: rows = categories + mean, columns = method x metric (TE)."""

    def draw(self, ctx: Drawing, aid: str, art: dict[str, Any]) -> TableBody:
        reg = ctx.reg
        files = (art.get("paper") or {}).get("files", {})
        metrics = table_metrics(reg, art)
        cross = (art.get("paper") or {}).get("cross_check")
        by_cell = {(c.row, c.dataset): c for c in self.cells(reg, aid, art)}
        out = []
        ctx.notes += reg.method_notes(reg.methods_of(art))
        for ds in [d for d in art["datasets"] if reg.keep(d)]:
            pair = reg.main_pair_for(ds)
            if pair is None:
                continue
            dom, _ = pair
            paper = load_paper_table(files[ds]) if ds in files else None
            for method in reg.methods_of(art):
                cell = by_cell.get((method, ds))
                if cell is None:
                    continue
                if (note := source_note(reg, method)) is not None:
                    ctx.notes.append(note)
                res = ctx.cell(cell, per_category=True)
                cats = res.per_category if res.per_category is not None else pd.DataFrame(
                    columns=["category", "metric", "value"])
                categories = list(dict.fromkeys(cats["category"].astype(str)))
                for cat in categories + ["mean"]:
                    for m in metrics:
                        level, pm = paper_metric(reg, m)
                        if cat == "mean":
                            rv = pct(res.values, m)
                        else:
                            hit = cats[(cats["category"].astype(str) == cat) & (cats["metric"] == m)]["value"]
                            rv = float(hit.iloc[0]) * 100 if len(hit) and not pd.isna(hit.iloc[0]) else np.nan
                        pv = np.nan
                        if paper is not None:
                            sub = paper[(paper["method"] == method) & (paper["level"] == level)
                                        & (paper["metric"] == pm)]
                            key = "mean" if cat == "mean" else category_key(cat)
                            hit = sub[sub["category_key"] == key]["value"]
                            pv = float(hit.iloc[0]) if len(hit) else np.nan
                        out.append(long_row(aid, section=reg.dataset_name(ds), domain=dom, row=method,
                                       dataset=reg.dataset_name(ds), category=cat, metric=m, reproduced=rv,
                                       paper=pv, selected_lambda=lam_of(res),
                                       lambda_selected_on_test=res.select_on_test, run_ids=" ".join(res.run_ids)))
        if cross:
            ctx.notes += cross_check(reg, out, cross)
        return TableBody(out, ["category", "row"], ["metric"], "dataset")
