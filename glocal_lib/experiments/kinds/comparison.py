"""Method comparison tables: T1/T2 (`comparison_table`) and appendix E per category (`per_category_table`).

Rows are the artifact's `methods` (experiments.yaml `methods:` columns), evaluated under the main
protocol on its `datasets`; each cell is set beside the published value of the `paper` CSV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from glocal_lib.data.registry import load_manifest
from glocal_lib.errors import ConfigError
from glocal_lib.experiments import provenance as prov_mod
from glocal_lib.experiments.kinds.base import Drawing, Kind, TableBody, register_kind
from glocal_lib.experiments.paper_values import category_key, load_paper_table, lookup, published_value
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
from glocal_lib.metrics.summary import MEAN_ROW


def method_cells(reg: Registry, art: dict[str, Any]) -> list[Cell]:
    """One cell per method x kept dataset of the artifact, under the main protocol (method-major), or
    the artifact's own `protocol` (another paper's training/evaluation pairs, e.g. KAnoCLIP's), or the
    method's own `protocol` (a column run as its authors ran it, e.g. AdaCLIP's released models A/B),
    which wins over both; datasets that protocol does not evaluate get no cell."""
    wanted = [d for d in art["datasets"] if reg.keep(d)]
    domains = [art["domain"]] if "domain" in art else sorted({reg.domain_of(d) for d in wanted})
    cells: list[Cell] = []
    for m in reg.methods_of(art):
        for dom in domains:
            cells += reg.cells_for(reg.method(m), m, dom, method_protocol(reg, m, art), wanted)
    return cells


def method_protocol(reg: Registry, method: str, art: dict[str, Any]) -> str:
    """The protocol a method column of `art` is run under: the method's own, else the artifact's, else main."""
    return str(reg.method(method).get("protocol") or art.get("protocol", "main"))


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
        if r["category"] != MEAN_ROW or math.isnan(r["paper"]):
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


@dataclass(frozen=True)
class PublishedSource:
    """Where one method's published values come from: a transcribed CSV, the rows of one printed table,
    and how that table names the method, the datasets, the metrics and its average row."""

    file: str
    table: str
    domain: str | None
    method: str  # as the CSV prints it
    datasets: dict[str, str | None] = field(default_factory=dict)  # our key -> printed name (None: no row)
    metric_names: dict[str, str] = field(default_factory=dict)  # registry paper metric -> the CSV's
    mean: str = "Mean"  # the printed name of the average row
    own: bool = False  # a per-method source (`paper.sources`), not the artifact's own paper
    label: str | None = None  # the paper, as the notes name it
    note: str | None = None  # e.g. "not published under this protocol: ..."

    @property
    def ref(self) -> str:
        """'vip2clip_table1.csv (Table 1)': what the long form's `paper_source` says of each value."""
        return f"{self.file} ({self.table})"

    def printed(self, reg: Registry, dataset: str) -> str | None:
        return self.datasets.get(dataset, reg.dataset_name(dataset))

    def value(self, reg: Registry, dataset: str | None, level: str, metric: str | None, domain: str) -> float:
        """The published value of one dataset (None: the average row), NaN where the table has none."""
        printed = self.mean if dataset is None else self.printed(reg, dataset)
        if printed is None or metric is None:
            return float("nan")
        return published_value(self.file, table=self.table, domain=self.domain or domain, dataset=printed,
                               method=self.method, level=level, metric=self.metric_names.get(metric, metric))

    def averaged(self, level: str, metric: str | None, domain: str) -> set[str]:
        """The printed datasets the average row of (level, metric) averages: those with a published value."""
        df = load_paper_table(self.file)
        sub = df[(df["table"] == self.table) & (df["domain"] == (self.domain or domain)) & (df["method"] == self.method)
                 & (df["level"] == level) & (df["metric"] == self.metric_names.get(str(metric), metric))
                 & (df["dataset"] != self.mean)]
        return set(sub.dropna(subset=["value"])["dataset"])


def published_sources(paper_cfg: dict[str, Any], method: str) -> list[PublishedSource]:
    """The sources of one method column, first hit wins: its own `paper.sources.<method>` (one mapping or
    a list, e.g. Table 1 then Table 2 of another paper) or else the artifact's `paper` itself."""
    own = (paper_cfg.get("sources") or {}).get(method)
    if own is None:
        if not paper_cfg.get("file"):
            return []
        return [PublishedSource(
            file=paper_cfg["file"], table=paper_cfg["table"], domain=paper_cfg.get("domain"),
            method=(paper_cfg.get("methods") or {}).get(method, method), datasets=dict(paper_cfg.get("datasets") or {}),
            metric_names=dict(paper_cfg.get("metric_names") or {}), mean=paper_cfg.get("mean", "Mean"))]
    out = []
    for src in own if isinstance(own, list) else [own]:
        lacking = [k for k in ("file", "table") if k not in src]
        if lacking:
            raise ConfigError(f"paper.sources.{method} lacks {lacking} (experiments.yaml): each source names the "
                              "transcribed CSV (file) and the printed table (table)")
        out.append(PublishedSource(
            file=src["file"], table=src["table"], domain=src.get("domain"), method=src.get("method", method),
            datasets=dict(src.get("datasets") or {}), metric_names=dict(src.get("metric_names") or {}),
            mean=src.get("mean", "Mean"), own=True, label=src.get("label"), note=src.get("note")))
    return out


def first_published(reg: Registry, sources: list[PublishedSource], dataset: str | None, level: str,
                    metric: str | None, domain: str) -> tuple[float, PublishedSource | None]:
    """(value, its source) from the first source that has it; (NaN, None) when none has."""
    for src in sources:
        v = src.value(reg, dataset, level, metric, domain)
        if not math.isnan(v):
            return v, src
    return float("nan"), None


def comparable_mean(reg: Registry, src: PublishedSource, datasets: list[str], level: str, metric: str | None,
                    domain: str) -> str | None:
    """None when a per-method source's average row averages exactly the datasets of this table that define
    the metric (so it can stand beside our Mean); else why not. The artifact's own paper is trusted as is."""
    if not src.own:
        return None
    ours = [d for d in datasets if load_manifest(d).eval_level in ("both", level)]
    printed = {src.printed(reg, d): reg.dataset_name(d) for d in ours}
    theirs = src.averaged(level, metric, domain)
    if set(printed) == theirs:
        return None
    why = [f"its {src.mean} also averages {', '.join(sorted(theirs - set(printed)))}"] if theirs - set(printed) else []
    if set(printed) - theirs:
        why.append(f"our Mean also averages {', '.join(sorted(printed[p] for p in set(printed) - theirs))}")
    return "; ".join(why)


def source_notes(method: str, sources: list[PublishedSource], mean_gaps: list[tuple[str, str]]) -> list[str]:
    """Which paper a method column's published values come from (per-method sources only)."""
    own = [s for s in sources if s.own]
    if not own:
        return []
    where = "; ".join(f"{s.label + ', ' if s.label else ''}{s.table} (paper/{s.file})" for s in own)
    notes = [f"{method}: published values from {where}, not from this table's paper"]
    notes += [f"{method}: {s.note}" for s in own if s.note]
    if mean_gaps:  # (metric label, why), grouped by the reason
        by_why: dict[str, list[str]] = {}
        for label, why in mean_gaps:
            by_why.setdefault(why, []).append(label)
        said = "; ".join(f"{', '.join(labels)}: {why}" for why, labels in by_why.items())
        notes.append(f"{method}: no published value beside our Mean ({said})")
    return notes


def protocol_text(reg: Registry, which: str, domain: str) -> str:
    """'MVTec AD + CVC-ColonDB -> VisA, MPDD; ...' for one domain of a protocol (as this profile runs it)."""
    pairs = reg.protocol(which, domain)
    return "; ".join(f"{reg.dataset_name(t)} -> {', '.join(reg.dataset_name(d) for d in ev)}" for t, ev in pairs)


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
        if "headline" in art and art["headline"] not in art["methods"]:
            raise ConfigError(f"{reg.source}: artifact {aid} has headline {art['headline']!r}, which is not one of "
                              f"its methods {art['methods']}")
        return method_cells(reg, art)


def table_metrics(reg: Registry, art: dict[str, Any]) -> list[str]:
    """The artifact's `metrics` (keys of experiments.yaml `metrics`), default the registry's table_metrics."""
    return list(art.get("metrics") or reg.data["table_metrics"])


MEAN_SUBSET = "our Mean and the published one average different datasets"  # then no difference is shown


@register_kind("comparison_table")
class ComparisonTable(_MethodTable):
    """Rows = datasets + Mean, columns = method x metric (T1, T2): any paper's "Table N, reproduced vs
    published" is an entry of this kind. Keys: `domain` (protocol), `datasets`, `methods` (columns),
    optional `metrics` and `protocol` (a named protocol instead of the main one); `paper: {file, table,
    domain}` filters the transcribed CSV (long format of glocal_lib/experiments/paper), optional
    `paper.methods: {our column: name in that CSV}`, `paper.datasets: {our key: printed name, or null =
    no published row}`, `paper.metric_names: {AUROC: AUC}`, `paper.mean` (the printed name of the average row, default Mean)
    and `paper.note`; `paper.sources: {column: {file, table, domain, datasets, mean, method, label, note}}`
    (one mapping or a list) takes that column's published values from another paper (PublishedSource),
    its average row only where it averages the same datasets as our Mean. `headline` names the method whose
    Mean row the results index shows on the card (default GlocalCLIP; another paper's table names its own)."""

    required = (*_MethodTable.required, "domain", "paper")
    headline = True

    def draw(self, ctx: Drawing, aid: str, art: dict[str, Any]) -> TableBody:
        reg = ctx.reg
        paper_cfg = art["paper"]
        domain = art["domain"]
        datasets = [d for d in art["datasets"] if reg.keep(d)]
        metrics = table_metrics(reg, art)
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
            sources = published_sources(paper_cfg, method)
            per_metric: dict[str, list[float]] = {m: [] for m in metrics}
            picks: set[tuple[str, int | None]] = set()
            if entry.get("reproduced", True) is False:
                ctx.notes.append(f"{method}: {entry.get('reason', 'not reproduced')}")
            if (note := source_note(reg, method)) is not None:
                ctx.notes.append(note)
            own = entry.get("protocol") if entry.get("reproduced", True) else None
            if own:
                ctx.notes.append(f"{method}: run under its own protocol {reg.protocol_name(own)} ("
                                 f"{protocol_text(reg, own, domain)})")
            for ds in datasets:
                cell = by_cell.get((method, ds))
                res = ctx.cell(cell) if cell is not None else CellResult(missing=True)
                if res.epoch_selected_on:
                    picks.add((res.epoch_selected_on, res.selected_epoch))
                for m in metrics:
                    level, pm = paper_metric(reg, m)
                    pv, src = first_published(reg, sources, ds, level, pm, domain)
                    rv = pct(res.values, m)
                    if not math.isnan(rv):
                        per_metric[m].append(rv)
                    out.append(long_row(aid, domain=domain, row=method, dataset=reg.dataset_name(ds), metric=m,
                                   reproduced=rv, paper=pv, selected_lambda=lam_of(res),
                                   lambda_selected_on_test=res.select_on_test, run_ids=" ".join(res.run_ids),
                                   note=(f"not evaluated by {reg.protocol_name(own)}" if own and cell is None
                                         else MISSING_NOTE if res.missing and entry.get("reproduced", True) else ""),
                                   paper_source=src.ref if src is not None else ""))
            mean_gaps: list[tuple[str, str]] = []
            subset_means: list[str] = []
            for m in metrics:
                level, pm = paper_metric(reg, m)
                pv, src = first_published(reg, sources, None, level, pm, domain)
                if src is not None and (gap := comparable_mean(reg, src, datasets, level, pm, domain)) is not None:
                    pv, src = float("nan"), None
                    mean_gaps.append((METRIC_LABELS.get(m, m), gap))
                vals = per_metric[m]
                rows = [r for r in out if r["row"] == method and r["metric"] == m and r["dataset"] != "Mean"]
                rows_pv = [r["paper"] for r in rows]
                note = f"mean over {len(vals)} datasets"
                if inconsistent_mean(pv, rows_pv):
                    note += f"; {INCONSISTENT_MEAN} ({np.nanmean(rows_pv):.2f})"
                    ctx.notes.append(INCONSISTENT_MEAN_NOTE)
                row = long_row(aid, domain=domain, row=method, dataset="Mean", metric=m,
                               reproduced=float(np.mean(vals)) if vals else np.nan, paper=pv, note=note,
                               paper_source=src.ref if src is not None else "")
                ours, published = ({r["dataset"] for r in rows if not math.isnan(r[k])} for k in ("reproduced", "paper"))
                if not math.isnan(row["diff"]) and published and ours != published:
                    row["diff"] = np.nan  # the two means average different datasets: no difference shown
                    row["note"] += f"; no difference: {MEAN_SUBSET} ({len(ours & published)} of the {len(published)} published)"
                    subset_means.append(METRIC_LABELS.get(m, m))
                out.append(row)
            if subset_means:
                ctx.notes.append(f"{method}: Mean without a difference ({', '.join(subset_means)}): {MEAN_SUBSET}")
            ctx.notes += source_notes(method, sources, mean_gaps)
            if picks:
                ctx.notes.append(prov_mod.epoch_note(method, picks, reg.dataset_name, MARK))
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
        own = {m: published_sources(art.get("paper") or {}, m) for m in reg.methods_of(art)
               if m in ((art.get("paper") or {}).get("sources") or {})}
        for m, srcs in own.items():
            ctx.notes += source_notes(m, srcs, [])
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
                if res.epoch_selected_on:
                    ctx.notes.append(prov_mod.epoch_note(method, {(res.epoch_selected_on, res.selected_epoch)},
                                                         reg.dataset_name, MARK))
                cats = res.per_category if res.per_category is not None else pd.DataFrame(
                    columns=["category", "metric", "value"])
                categories = list(dict.fromkeys(cats["category"].astype(str)))
                for cat in categories + [MEAN_ROW]:
                    for m in metrics:
                        level, pm = paper_metric(reg, m)
                        if cat == MEAN_ROW:
                            rv = pct(res.values, m)
                        else:
                            hit = cats[(cats["category"].astype(str) == cat) & (cats["metric"] == m)]["value"]
                            rv = float(hit.iloc[0]) * 100 if len(hit) and not pd.isna(hit.iloc[0]) else np.nan
                        pv, src_ref = np.nan, ""
                        if method in own:  # another paper's dataset means (no per-category values)
                            if cat == MEAN_ROW:
                                pv, src = first_published(reg, own[method], ds, level, pm, dom)
                                src_ref = src.ref if src is not None else ""
                        elif paper is not None:
                            sub = paper[(paper["method"] == method) & (paper["level"] == level)
                                        & (paper["metric"] == pm)]
                            key = MEAN_ROW if cat == MEAN_ROW else category_key(cat)
                            hit = sub[sub["category_key"] == key]["value"]
                            pv = float(hit.iloc[0]) if len(hit) else np.nan
                            src_ref = files[ds] if len(hit) else ""
                        out.append(long_row(aid, section=reg.dataset_name(ds), domain=dom, row=method,
                                       dataset=reg.dataset_name(ds), category=cat, metric=m, reproduced=rv,
                                       paper=pv, selected_lambda=lam_of(res),
                                       lambda_selected_on_test=res.select_on_test, run_ids=" ".join(res.run_ids),
                                       paper_source=src_ref))
        if cross:
            ctx.notes += cross_check(reg, out, cross)
        return TableBody(out, ["category", "row"], ["metric"], "dataset")
