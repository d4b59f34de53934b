"""Tables from saved run outputs: reproduced value, published value and difference in every cell.

Each table is built as one long DataFrame (one row per cell and metric: reproduced, paper, diff,
the runs and the lambda selection) and written three ways: CSV (the long form, machine-readable),
Markdown and HTML (pivoted like the paper). Every file starts with its provenance; smoke outputs say
"synthetic data, random model — not paper results" at the top.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glocal_lib.errors import ConfigError
from glocal_lib.experiments import provenance as prov_mod
from glocal_lib.experiments.paper_values import category_key, load_paper_table, lookup
from glocal_lib.experiments.registry import Cell, Registry
from glocal_lib.experiments.results import CellResult, ResultStore
from glocal_lib.io import atomic_write_json, atomic_write_text

METRIC_LABELS = {
    "image_auroc": "image AUROC", "image_ap": "image AP", "pixel_auroc": "pixel AUROC",
    "aupro_cflow": "PRO (cflow)", "aupro_mvtec": "AUPRO (MVTec)",
    "categories": "categories", "test_normal": "test normal", "test_anomalous": "test anomalous",
}
LONG_COLUMNS = ["artifact", "section", "domain", "row", "dataset", "category", "metric", "reproduced",
                "paper", "diff", "selected_lambda", "lambda_selected_on_test", "run_ids", "note"]
LEGEND = ("each cell: reproduced / published (reproduced − published); — = no value (not reproduced or not "
          "published); missing = its run is not made yet (`glocal reproduce --only <ID>` makes it); undefined = "
          "its run finished but the metric has no value there (e.g. a test set with one label only)")
MISSING_NOTE = "not run yet"
SELECTION_NAN_NOTE = "a selection metric undefined on a run (NaN) is left out of its mean, not counted"
MARK = "†"
# artifact kinds drawn as tables (released_checkpoint = RC, built by experiments.verify)
TABLE_KINDS = frozenset({"comparison_table", "ablation_table", "per_category_table", "released_vs_paper",
                         "dataset_stats", "released_checkpoint"})
DIFF_NOTE = "difference of the two settings (B − A)"


@dataclass
class Table:
    """One artifact's table: long data + how to pivot it + provenance."""

    artifact: str
    title: str
    data: pd.DataFrame
    index: list[str]
    columns: list[str]
    provenance: dict[str, Any]
    group_by: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def run_ids(self) -> list[str]:
        return self.provenance["run_ids"]


# ----------------------------------------------------------------------------------- builders
def _row(artifact: str, **kw: Any) -> dict[str, Any]:
    row = dict.fromkeys(LONG_COLUMNS, "")
    row.update(artifact=artifact, reproduced=np.nan, paper=np.nan, diff=np.nan, selected_lambda=np.nan,
               lambda_selected_on_test=False)
    row.update(kw)
    if not (math.isnan(row["reproduced"]) or math.isnan(row["paper"])):
        row["diff"] = row["reproduced"] - row["paper"]
    return row


def _pct(values: dict[str, float], metric: str) -> float:
    v = values.get(metric, float("nan"))
    return float(v) * 100.0 if v is not None and not math.isnan(float(v)) else float("nan")


class TableBuilder:
    """Builds every table kind of the registry from a ResultStore (saved runs only)."""

    def __init__(self, registry: Registry, store: ResultStore) -> None:
        self.reg = registry
        self.store = store
        self.metrics: list[str] = list(registry.data["table_metrics"])
        self._run_ids: list[str] = []
        self._presets: set[str] = set()
        self._notes: list[str] = []

    def _paper_metric(self, metric: str) -> tuple[str, str | None]:
        info = self.reg.data["metrics"][metric]
        return info["level"], info["paper"]

    def _cell_values(self, cell: Cell) -> CellResult:
        res = self.store.cell(cell)
        self._run_ids += res.run_ids
        for c in cell.candidates:
            self._presets.add(c.job.method_preset)
        return res

    def build(self, artifact_id: str, data_indexes: dict[str, pd.DataFrame] | None = None) -> Table:
        art = self.reg.artifact(artifact_id)
        self._run_ids, self._presets, self._notes = [], set(), []
        kind = art["kind"]
        if kind == "comparison_table":
            rows, index, columns, group = self._comparison(artifact_id, art), ["dataset"], ["row", "metric"], None
        elif kind == "ablation_table":
            rows, index, columns, group = self._ablation(artifact_id, art), ["row"], ["domain", "metric"], None
        elif kind == "per_category_table":
            rows, index, columns, group = self._per_category(artifact_id, art), ["category"], ["row", "metric"], "dataset"
        elif kind == "released_vs_paper":
            rows, index, columns, group = self._released_vs_paper(artifact_id, art), ["dataset"], ["row", "metric"], "section"
        elif kind == "dataset_stats":
            if data_indexes is None:
                raise ConfigError("T5 is built from the data indexes: pass data_indexes (notebook 00_data)")
            rows, index, columns, group = self._dataset_stats(artifact_id, art, data_indexes), ["dataset"], ["metric"], None
        else:
            raise ConfigError(f"artifact {artifact_id} ({kind}) is a figure, not a table")
        df = pd.DataFrame(rows, columns=LONG_COLUMNS)
        notes = list(dict.fromkeys(self._notes + _paper_notes(art)))
        sources = _paper_sources(art)
        prov = prov_mod.build(artifact_id, art["title"], profile=self.store.profile,
                              glocal_preset=self.reg.glocal_preset, presets=sorted(self._presets),
                              run_ids=self._run_ids, runs_commit=self.store.commit_of(self._run_ids),
                              sources=sources, notes=notes)
        return Table(artifact_id, art["title"], df, index, columns, prov, group, notes)

    def _source_note(self, method: str, entry: dict[str, Any]) -> None:
        """'<method>: preset <p> = <source>' for presets that say where their setting comes from."""
        from glocal_lib.config import preset_info

        if entry.get("reproduced", True) is False:
            return
        preset = self.reg.resolve_preset(str(entry["preset"]))
        source = preset_info(preset).get("source")
        if source:
            self._notes.append(f"{method}: preset {preset} = {' '.join(str(source).split())}")

    # --- T1 / T2
    def _comparison(self, aid: str, art: dict[str, Any]) -> list[dict[str, Any]]:
        paper_cfg = art["paper"]
        paper = load_paper_table(paper_cfg["file"])
        domain = art["domain"]
        datasets = [d for d in art["datasets"] if self.reg.keep(d)]
        out = []
        for method in self.reg.methods_of(art):
            entry = self.reg.method(method)
            cells = {c.dataset: c for c in self.reg.cells_for(entry, method, domain, "main", datasets)}
            per_metric: dict[str, list[float]] = {m: [] for m in self.metrics}
            if entry.get("reproduced", True) is False:
                self._notes.append(f"{method}: {entry.get('reason', 'not reproduced')}")
            self._source_note(method, entry)
            for ds in datasets:
                res = self._cell_values(cells[ds]) if ds in cells else CellResult(missing=True)
                for m in self.metrics:
                    level, pm = self._paper_metric(m)
                    pv = lookup(paper, table=paper_cfg["table"], domain=domain, dataset=self.reg.dataset_name(ds),
                                method=method, level=level, metric=pm)
                    rv = _pct(res.values, m)
                    if not math.isnan(rv):
                        per_metric[m].append(rv)
                    out.append(_row(aid, domain=domain, row=method, dataset=self.reg.dataset_name(ds), metric=m,
                                    reproduced=rv, paper=pv, selected_lambda=_lam(res),
                                    lambda_selected_on_test=res.select_on_test,
                                    run_ids=" ".join(res.run_ids),
                                    note=MISSING_NOTE if res.missing and entry.get("reproduced", True) else ""))
            for m in self.metrics:
                level, pm = self._paper_metric(m)
                pv = lookup(paper, table=paper_cfg["table"], domain=domain, dataset="Mean", method=method,
                            level=level, metric=pm)
                vals = per_metric[m]
                out.append(_row(aid, domain=domain, row=method, dataset="Mean", metric=m,
                                reproduced=float(np.mean(vals)) if vals else np.nan, paper=pv,
                                note=f"mean over {len(vals)} datasets"))
            if entry.get("lambda") == "select" and self.reg.glocal_preset == "glocalclip-released":
                self._notes.append(prov_mod.LAMBDA_NOTE + f" ({MARK} marks such cells; {SELECTION_NAN_NOTE})")
        self._notes += self.reg.method_notes(self.reg.methods_of(art))
        return out

    # --- T3, T4, T6-T10, TA
    def _ablation(self, aid: str, art: dict[str, Any]) -> list[dict[str, Any]]:
        paper_cfg = art.get("paper") or {}
        paper = load_paper_table(paper_cfg["file"]) if paper_cfg.get("file") else None
        out = []
        for dom in art["domains"]:
            for row in art["rows"]:
                vname = row["variant"]
                label = _row_label(self.reg, row)
                cells = self.reg.cells_for(self.reg.variant(vname), vname, dom, "ablation")
                results = [self._cell_values(c) for c in cells]
                ok = [r for r in results if not r.missing]
                for m in self.metrics:
                    level, pm = self._paper_metric(m)
                    vals = [v for v in (_pct(r.values, m) for r in ok) if not math.isnan(v)]
                    pv = (lookup(paper, table=paper_cfg["table"], domain=dom, dataset="Mean",
                                 method=row.get("paper_label"), level=level, metric=pm)
                          if paper is not None and row.get("paper_label") else np.nan)
                    note = f"mean over {len(vals)} of {len(cells)} evaluated datasets" if cells else "no runs"
                    out.append(_row(aid, domain=dom, row=label, dataset="Mean", metric=m,
                                    reproduced=float(np.mean(vals)) if vals else np.nan, paper=pv,
                                    run_ids=" ".join(i for r in ok for i in r.run_ids), note=note))
        prot = self.reg.data["profiles"][self.reg.profile]["ablation_protocol"]
        self._notes.append(f"domain means over the '{prot}' protocol: " + "; ".join(
            f"{d}: " + ", ".join(f"{t}->{'/'.join(e)}" for t, e in self.reg.protocol("ablation", d))
            for d in art["domains"]))
        if any(self.reg.variant(r["variant"]).get("lambda") not in (None, "select") for r in art["rows"]):
            self._notes.append("ablation variants train with a fixed lambda (see the variant); the lambda "
                               "picked on test data appears only in T1/T2/TX")
        return out

    # --- TE
    def _per_category(self, aid: str, art: dict[str, Any]) -> list[dict[str, Any]]:
        files = (art.get("paper") or {}).get("files", {})
        out = []
        self._notes += self.reg.method_notes(self.reg.methods_of(art))
        for ds in [d for d in art["datasets"] if self.reg.keep(d)]:
            pair = self.reg.main_pair_for(ds)
            if pair is None:
                continue
            dom, _ = pair
            paper = load_paper_table(files[ds]) if ds in files else None
            for method in self.reg.methods_of(art):
                entry = self.reg.method(method)
                cells = self.reg.cells_for(entry, method, dom, "main", [ds])
                if not cells:
                    continue
                self._source_note(method, entry)
                res = self.store.cell(cells[0], per_category=True)
                self._run_ids += res.run_ids
                self._presets |= {c.job.method_preset for c in cells[0].candidates}
                cats = res.per_category if res.per_category is not None else pd.DataFrame(
                    columns=["category", "metric", "value"])
                categories = list(dict.fromkeys(cats["category"].astype(str)))
                for cat in categories + ["mean"]:
                    for m in self.metrics:
                        level, pm = self._paper_metric(m)
                        if cat == "mean":
                            rv = _pct(res.values, m)
                        else:
                            hit = cats[(cats["category"].astype(str) == cat) & (cats["metric"] == m)]["value"]
                            rv = float(hit.iloc[0]) * 100 if len(hit) and not pd.isna(hit.iloc[0]) else np.nan
                        pv = np.nan
                        if paper is not None:
                            sub = paper[(paper["method"] == method) & (paper["level"] == level) & (paper["metric"] == pm)]
                            key = "mean" if cat == "mean" else category_key(cat)
                            hit = sub[sub["category_key"] == key]["value"]
                            pv = float(hit.iloc[0]) if len(hit) else np.nan
                        out.append(_row(aid, section=self.reg.dataset_name(ds), domain=dom, row=method,
                                        dataset=self.reg.dataset_name(ds), category=cat, metric=m, reproduced=rv,
                                        paper=pv, selected_lambda=_lam(res),
                                        lambda_selected_on_test=res.select_on_test,
                                        run_ids=" ".join(res.run_ids)))
        return out

    # --- TX
    def _released_vs_paper(self, aid: str, art: dict[str, Any]) -> list[dict[str, Any]]:
        pcfg = art["paper"]
        paper = load_paper_table(pcfg["file"])
        out = []
        for sec in art["sections"]:
            la, lb = self.reg.variant_label(sec["a"]), self.reg.variant_label(sec["b"])
            ma, mb = sec.get("metric_a"), sec.get("metric_b")
            if sec["name"] == "aupro":
                la, lb = "AUPRO cflow (released approximation)", "AUPRO MVTec-official"
            for dom in art["domains"]:
                ca = self.reg.cells_for(self.reg.variant(sec["a"]), sec["a"], dom, "ablation")
                cb = {c.dataset: c for c in self.reg.cells_for(self.reg.variant(sec["b"]), sec["b"], dom, "ablation")}
                for cell_a in ca:
                    ra, rb = self._cell_values(cell_a), self._cell_values(cb[cell_a.dataset])
                    name = self.reg.dataset_name(cell_a.dataset)
                    metrics = [ma] if ma else self.metrics
                    for m in metrics:
                        mb_ = mb or m
                        level, pm = self._paper_metric(m)
                        pv = lookup(paper, table=pcfg["table"], domain=dom, dataset=name, method=pcfg["method"],
                                    level=level, metric=pm)
                        va, vb = _pct(ra.values, m), _pct(rb.values, mb_)
                        label_m = "PRO" if sec["name"] == "aupro" else m
                        common = dict(section=sec["title"], domain=dom, dataset=name, metric=label_m)
                        out.append(_row(aid, row=f"A: {la}", reproduced=va, paper=pv, selected_lambda=_lam(ra),
                                        lambda_selected_on_test=ra.select_on_test, run_ids=" ".join(ra.run_ids),
                                        **common))
                        out.append(_row(aid, row=f"B: {lb}", reproduced=vb, paper=pv, selected_lambda=_lam(rb),
                                        lambda_selected_on_test=rb.select_on_test, run_ids=" ".join(rb.run_ids),
                                        **common))
                        out.append(_row(aid, row="B − A", reproduced=vb - va, note=DIFF_NOTE,
                                        **common))
        self._notes.append(f"published column = {pcfg['method']} in {pcfg['file']} ({pcfg['table']}), "
                           "the released script's best-lambda-on-test numbers")
        self._notes.append(prov_mod.LAMBDA_NOTE + f" ({MARK} marks such cells; {SELECTION_NAN_NOTE})")
        return out

    # --- T5
    def _dataset_stats(self, aid: str, art: dict[str, Any], indexes: dict[str, pd.DataFrame]) -> list[dict[str, Any]]:
        pcfg = art["paper"]
        paper = load_paper_table(pcfg["file"])
        out = []
        for ds in [d for d in art["datasets"] if self.reg.keep(d)]:
            name = self.reg.dataset_name(ds)
            pub = paper[paper["dataset"] == name]
            idx = indexes.get(ds)
            if idx is not None and "split" in idx.columns:
                idx = idx[idx["split"] == "test"]
            repro = ({} if idx is None else
                     {"categories": float(idx["category"].nunique()),
                      "test_normal": float((idx["label"].astype(int) == 0).sum()),
                      "test_anomalous": float((idx["label"].astype(int) == 1).sum())})
            for m, col in (("categories", "num_subsets"), ("test_normal", "test_normal"),
                           ("test_anomalous", "test_anomalous")):
                pv = float(pub[col].iloc[0]) if len(pub) and str(pub[col].iloc[0]).strip() else np.nan
                out.append(_row(aid, domain=self.reg.domain_of(ds), row="count", dataset=name, metric=m,
                                reproduced=repro.get(m, np.nan), paper=pv,
                                note="" if idx is not None else "missing: no data index; run notebook 00_data "
                                "(glocal reproduce --only T5)"))
        return out


def _lam(res: CellResult) -> float:
    return float(res.selected_lambda) if res.selected_lambda is not None else np.nan


def _row_label(reg: Registry, row: dict[str, Any]) -> str:
    if row.get("label"):
        return str(row["label"])
    vlabel = reg.variant_label(row["variant"])
    pl = row.get("paper_label")
    return f"{pl} ({vlabel})" if pl and pl != vlabel else vlabel


def _paper_sources(art: dict[str, Any]) -> list[str]:
    p = art.get("paper") or {}
    files = [p["file"]] if p.get("file") else []
    files += list((p.get("files") or {}).values())
    return [f"paper/{f}" + (f" ({p['table']})" if p.get("table") else "") for f in files]


def _paper_notes(art: dict[str, Any]) -> list[str]:
    p = art.get("paper") or {}
    return [f"published values: {p['note']}"] if p.get("note") else []


# ---------------------------------------------------------------------------------- rendering
def _fmt_num(v: float, digits: int = 1, sign: str = "") -> str:
    """Fixed digits, never '-0.0' (a value that rounds to zero prints as 0.0 / +0.0)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{round(float(v), digits) + 0.0:{sign}.{digits}f}"


def _reproduced_text(r: pd.Series, digits: int) -> str:
    """The reproduced value, or why there is none: its run is missing, or the metric is undefined."""
    if not pd.isna(r["reproduced"]):
        return _fmt_num(r["reproduced"], digits)
    if r.get("note") == MISSING_NOTE:
        return "missing"
    return "undefined" if str(r.get("run_ids") or "").strip() else "—"


def cell_text(r: pd.Series, digits: int = 1) -> str:
    """'71.2† / 83.3 (-12.1)': reproduced (mark = lambda picked on test) / published (difference)."""
    if r.get("note") == DIFF_NOTE:
        return "—" if pd.isna(r["reproduced"]) else _fmt_num(r["reproduced"], digits, "+")
    mark = MARK if bool(r.get("lambda_selected_on_test")) and not pd.isna(r["reproduced"]) else ""
    if mark and not pd.isna(r.get("selected_lambda")):
        mark += f"λ={r['selected_lambda']:g}"
    text = f"{_reproduced_text(r, digits)}{mark} / {_fmt_num(r['paper'], digits)}"
    if not pd.isna(r["diff"]):
        text += f" ({_fmt_num(r['diff'], digits, '+')})"
    return text


def pivot(table: Table, data: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper-like layout of (a group of) the table: one text cell per index x columns."""
    df = (table.data if data is None else data).copy()
    digits = 0 if table.data["metric"].isin(["categories", "test_normal", "test_anomalous"]).all() else 1
    df["cell"] = df.apply(lambda r: cell_text(r, digits), axis=1)
    df["metric"] = df["metric"].map(lambda m: METRIC_LABELS.get(m, m))
    order = {c: list(dict.fromkeys(df[c])) for c in table.index + table.columns}
    wide = df.pivot_table(index=table.index, columns=table.columns, values="cell", aggfunc="first")
    wide = wide.reindex(index=pd.MultiIndex.from_product([order[c] for c in table.index])
                        if len(table.index) > 1 else order[table.index[0]])
    cols = [c for c in pd.MultiIndex.from_product([order[c] for c in table.columns]) if c in wide.columns] \
        if len(table.columns) > 1 else [c for c in order[table.columns[0]] if c in wide.columns]
    return wide.reindex(columns=cols).fillna("")


def _groups(table: Table) -> list[tuple[str | None, pd.DataFrame]]:
    if table.group_by is None:
        return [(None, table.data)]
    return [(str(g), d) for g, d in table.data.groupby(table.group_by, sort=False)]


def _md_table(wide: pd.DataFrame) -> str:
    heads = [" / ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in wide.columns]
    idx_name = " / ".join(str(n) for n in wide.index.names if n) or ""
    lines = ["| " + " | ".join([idx_name, *heads]) + " |", "|" + "---|" * (len(heads) + 1)]
    for idx, row in wide.iterrows():
        label = " / ".join(map(str, idx)) if isinstance(idx, tuple) else str(idx)
        lines.append("| " + " | ".join([label, *(str(v).replace("|", "\\|") for v in row)]) + " |")
    return "\n".join(lines)


def to_markdown(table: Table) -> str:
    prov = table.provenance
    out = []
    if prov["banner"]:
        out.append(f"> **{prov['banner'].upper()}**\n")
    out.append(f"# {table.artifact}: {table.title}\n")
    out.append(f"_{LEGEND}; {MARK}λ = lambda picked on this dataset's test set_\n")
    for name, data in _groups(table):
        if name:
            out.append(f"## {name}\n")
        out.append(_md_table(pivot(table, data)) + "\n")
    out.append("## Provenance\n")
    out += [f"- {line}" for line in prov_mod.lines(prov)]
    return "\n".join(out) + "\n"


def to_csv(table: Table) -> str:
    header = "".join(f"# {line}\n" for line in prov_mod.lines(table.provenance))
    data = table.data.copy()
    nums = data.select_dtypes("number").columns
    data[nums] = data[nums].round(4) + 0.0  # no "-0.0000" for a value that rounds to zero
    return header + data.to_csv(index=False, float_format="%.4f")


CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
.banner{background:#b00020;color:#fff;font-weight:700;padding:.6em 1em;border-radius:4px;margin:.5em 0;
text-transform:uppercase;letter-spacing:.03em}
table.result{border-collapse:collapse;font-size:13px}table.result td,table.result th{border:1px solid #ccc;
padding:3px 6px;white-space:nowrap}table.result th{background:#f3f3f3}
details.provenance table{font-size:12px;border-collapse:collapse}details.provenance th{text-align:left;
padding-right:1em;vertical-align:top}.legend{color:#555;font-style:italic}.note{color:#444;font-size:13px}"""


def to_html(table: Table) -> str:
    prov = table.provenance
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(table.artifact)}</title>"
             f"<style>{CSS}</style></head><body>",
             prov_mod.html_block(prov),
             f"<h1>{html.escape(table.artifact)}: {html.escape(table.title)}</h1>",
             f"<p class='legend'>{html.escape(LEGEND)}; {MARK}λ = lambda picked on this dataset's test set</p>"]
    for name, data in _groups(table):
        if name:
            parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(pivot(table, data).to_html(classes="result", border=0, escape=True))
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in table.notes]
    parts.append("<p><a href='" + html.escape(f"{table.artifact}.csv") + "'>CSV (long form)</a> · <a href='"
                 + html.escape(f"{table.artifact}.md") + "'>Markdown</a></p></body></html>")
    return "\n".join(parts)


def write_table(table: Table, out_dir: str | Path) -> list[Path]:
    """<out_dir>/<ID>.csv, .md, .html and .provenance.json (atomic writes)."""
    out_dir = Path(out_dir)
    paths = [
        atomic_write_text(out_dir / f"{table.artifact}.csv", to_csv(table)),
        atomic_write_text(out_dir / f"{table.artifact}.md", to_markdown(table)),
        atomic_write_text(out_dir / f"{table.artifact}.html", to_html(table)),
        atomic_write_json(out_dir / f"{table.artifact}.provenance.json", table.provenance),
    ]
    return paths


def read_table_csv(path: str | Path) -> pd.DataFrame:
    """Read back a table CSV: skip the leading '#' provenance lines (cells may contain '#')."""
    with open(path, encoding="utf-8") as f:
        skip = 0
        for line in f:
            if not line.startswith("#"):
                break
            skip += 1
    return pd.read_csv(path, skiprows=skip)


def table_ids(registry: Registry, ids: Iterable[str] | None = None) -> list[str]:
    return [a for a in registry.expand_ids(ids) if registry.artifact(a)["kind"] in TABLE_KINDS]


def build_tables(registry: Registry, store: ResultStore, ids: Sequence[str], out_dir: str | Path,
                 data_indexes: dict[str, pd.DataFrame] | None = None) -> dict[str, Table]:
    """Build and write the given table artifacts; returns them for display."""
    builder = TableBuilder(registry, store)
    out = {}
    for aid in table_ids(registry, ids):
        kind = registry.artifact(aid)["kind"]
        if (kind == "dataset_stats" and data_indexes is None) or kind == "released_checkpoint":
            continue  # T5 needs the data indexes; RC evaluates checkpoints (experiments.verify.reproduce_rc)
        table = builder.build(aid, data_indexes)
        write_table(table, out_dir)
        out[aid] = table
    return out
