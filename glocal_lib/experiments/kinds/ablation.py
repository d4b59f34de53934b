"""Ablation tables (`ablation_table`: T3, T4, T6-T10, TA) and released code vs paper text (`released_vs_paper`: TX).

Rows are experiments.yaml `variants` (a preset plus ModelConfig overrides), evaluated under the
ablation protocol; ablation tables show domain means, TX per dataset A, B and B - A.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from glocal_lib.experiments import provenance as prov_mod
from glocal_lib.experiments.kinds.base import Drawing, Kind, TableBody, register_kind
from glocal_lib.experiments.paper_values import load_paper_table, lookup
from glocal_lib.experiments.registry import Cell, Registry
from glocal_lib.experiments.tables import (
    DIFF_NOTE,
    MARK,
    SELECTION_NAN_NOTE,
    lam_of,
    long_row,
    paper_metric,
    pct,
)


def variant_cells(reg: Registry, variant: str, domain: str, protocol: str = "ablation") -> list[Cell]:
    """A variant's cells on every dataset of the ablation protocol (or a named one) in one domain."""
    return reg.cells_for(reg.variant(variant), variant, domain, protocol)


def row_label(reg: Registry, spec: dict[str, Any]) -> str:
    if spec.get("label"):
        return str(spec["label"])
    vlabel = reg.variant_label(spec["variant"])
    pl = spec.get("paper_label")
    return f"{pl} ({vlabel})" if pl and pl != vlabel else vlabel


def identical_rows(rows: list[dict[str, Any]], digits: int = 1) -> list[str]:
    """'rows A and B are identical in every printed cell' for rows whose reproduced values agree at the
    printed precision (and exist): a reader seeing two equal rows is told it is not a copy error."""
    values: dict[str, list[float]] = {}
    for r in rows:
        values.setdefault(r["row"], []).append(r["reproduced"])
    labels, out = list(values), []
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            va, vb = np.round(values[a], digits), np.round(values[b], digits)
            if len(va) == len(vb) and np.isfinite(va).any() and np.array_equal(va, vb, equal_nan=True):
                out.append(f"rows '{a}' and '{b}' are identical in every printed cell")
    return out


@register_kind("ablation_table")
class AblationTable(Kind):
    """Rows = `rows` (variants), columns = domain x metric; each cell a mean over the domain's datasets."""

    required = ("title", "notebook", "domains", "rows")

    def cells(self, reg: Registry, aid: str, art: dict[str, Any]) -> list[Cell]:
        return [c for dom in art["domains"] for r in art["rows"] for c in variant_cells(reg, r["variant"], dom)]

    def draw(self, ctx: Drawing, aid: str, art: dict[str, Any]) -> TableBody:
        reg = ctx.reg
        paper_cfg = art.get("paper") or {}
        paper = load_paper_table(paper_cfg["file"]) if paper_cfg.get("file") else None
        metrics = list(reg.data["table_metrics"])
        out = []
        for dom in art["domains"]:
            for spec in art["rows"]:
                label = row_label(reg, spec)
                cells = variant_cells(reg, spec["variant"], dom)
                ok = [r for r in (ctx.cell(c) for c in cells) if not r.missing]
                for m in metrics:
                    level, pm = paper_metric(reg, m)
                    vals = [v for v in (pct(r.values, m) for r in ok) if not math.isnan(v)]
                    pv = (lookup(paper, table=paper_cfg["table"], domain=dom, dataset="Mean",
                                 method=spec.get("paper_label"), level=level, metric=pm)
                          if paper is not None and spec.get("paper_label") else np.nan)
                    note = f"mean over {len(vals)} of {len(cells)} evaluated datasets" if cells else "no runs"
                    out.append(long_row(aid, domain=dom, row=label, dataset="Mean", metric=m,
                                   reproduced=float(np.mean(vals)) if vals else np.nan, paper=pv,
                                   run_ids=" ".join(i for r in ok for i in r.run_ids), note=note))
        ctx.notes += identical_rows(out)
        prot = reg.data["profiles"][reg.profile]["ablation_protocol"]
        ctx.notes.append(f"domain means over the '{prot}' protocol: " + "; ".join(
            f"{d}: " + ", ".join(f"{t}->{'/'.join(e)}" for t, e in reg.protocol("ablation", d))
            for d in art["domains"]))
        if any(reg.variant(r["variant"]).get("lambda") not in (None, "select") for r in art["rows"]):
            ctx.notes.append("ablation variants train with a fixed lambda (see the variant); the lambda "
                             "picked on test data appears only in T1/T2/TX")
        return TableBody(out, ["row"], ["metric"], "domain")


@register_kind("released_vs_paper")
class ReleasedVsPaper(Kind):
    """One section per `sections` entry: setting A vs setting B (and B - A) per dataset (TX, VX, AX).

    A section may compare two metrics of one run (`metric_a`/`metric_b`, shown as `metric_label`) and
    name its rows (`label_a`/`label_b`, default: the variants' labels). Optional `protocol` (default the
    ablation protocol: another paper's, e.g. ViP2-CLIP's; AX: AdaCLIP's, with validation sets) and
    `metrics` (default the table metrics)."""

    required = ("title", "notebook", "domains", "sections", "paper")

    def cells(self, reg: Registry, aid: str, art: dict[str, Any]) -> list[Cell]:
        names = sorted({s[k] for s in art["sections"] for k in ("a", "b")})
        prot = art.get("protocol", "ablation")
        return [c for dom in art["domains"] for v in names for c in variant_cells(reg, v, dom, prot)]

    def draw(self, ctx: Drawing, aid: str, art: dict[str, Any]) -> TableBody:
        reg = ctx.reg
        pcfg = art["paper"]
        paper = load_paper_table(pcfg["file"])
        out = []
        prot = art.get("protocol", "ablation")
        picks: set[tuple[str, int | None]] = set()
        for sec in art["sections"]:
            la = sec.get("label_a") or reg.variant_label(sec["a"])
            lb = sec.get("label_b") or reg.variant_label(sec["b"])
            ma, mb = sec.get("metric_a"), sec.get("metric_b")
            for dom in art["domains"]:
                cb = {c.dataset: c for c in variant_cells(reg, sec["b"], dom, prot)}
                for cell_a in variant_cells(reg, sec["a"], dom, prot):
                    ra, rb = ctx.cell(cell_a), ctx.cell(cb[cell_a.dataset])
                    picks |= {(r.epoch_selected_on, r.selected_epoch) for r in (ra, rb) if r.epoch_selected_on}
                    name = reg.dataset_name(cell_a.dataset)
                    for m in [ma] if ma else list(art.get("metrics") or reg.data["table_metrics"]):
                        level, pm = paper_metric(reg, m)
                        pv = lookup(paper, table=pcfg["table"], domain=dom, dataset=name, method=pcfg["method"],
                                    level=level, metric=pm)
                        va, vb = pct(ra.values, m), pct(rb.values, mb or m)
                        common = dict(section=sec["title"], domain=dom, dataset=name,
                                      metric=sec.get("metric_label") or m)
                        out.append(long_row(aid, row=f"A: {la}", reproduced=va, paper=pv, selected_lambda=lam_of(ra),
                                       lambda_selected_on_test=ra.select_on_test, run_ids=" ".join(ra.run_ids),
                                       **common))
                        out.append(long_row(aid, row=f"B: {lb}", reproduced=vb, paper=pv, selected_lambda=lam_of(rb),
                                       lambda_selected_on_test=rb.select_on_test, run_ids=" ".join(rb.run_ids),
                                       **common))
                        out.append(long_row(aid, row="B − A", reproduced=vb - va, note=DIFF_NOTE, **common))
        if any(reg.variant(s[k]).get("lambda") == "select" for s in art["sections"] for k in ("a", "b")):
            ctx.notes.append(prov_mod.LAMBDA_NOTE + f" ({MARK} marks such cells; {SELECTION_NAN_NOTE})")
        if picks:
            ctx.notes.append(prov_mod.epoch_note(str(pcfg.get("method", aid)), picks, reg.dataset_name, MARK))
        variants = dict.fromkeys(s[k] for s in art["sections"] for k in ("a", "b"))
        ctx.notes += [f"{reg.variant_label(v)} ({reg.profile} profile): {note}" for v in variants
                      if (note := (reg.variant(v).get("profile_notes") or {}).get(reg.profile))]
        if prot != "ablation":
            ctx.notes.append(f"protocol {reg.protocol_name(prot)}: " + "; ".join(
                f"{reg.dataset_name(t)} -> {', '.join(reg.dataset_name(d) for d in e)}"
                + (f" (epochs ranked on {reg.dataset_name(v)})" if (v := reg.pair_validation(prot, dom, t)) else "")
                for dom in art["domains"] for t, e in reg.protocol(prot, dom)))
        return TableBody(out, ["dataset", "row"], ["metric"], "section")
