"""Tables from saved run outputs: reproduced value, published value and difference in every cell.

The table kinds (glocal_lib/experiments/kinds/) fill the rows; this module holds the long form and
its renderings. Each table is built as one long DataFrame (one row per cell and metric: reproduced, paper, diff,
the runs and the lambda selection) and written three ways: CSV (the long form, machine-readable),
Markdown and HTML (pivoted like the paper). Every file starts with its provenance; smoke outputs say
"synthetic data, random model — not paper results" at the top.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glocal_lib.experiments import provenance as prov_mod
from glocal_lib.experiments.registry import Registry
from glocal_lib.experiments.results import CellResult
from glocal_lib.io import atomic_write_json, atomic_write_text

METRIC_LABELS = {
    "image_auroc": "image AUROC", "image_ap": "image AP", "pixel_auroc": "pixel AUROC",
    "aupro_cflow": "PRO (cflow)", "aupro_mvtec": "AUPRO (MVTec)", "image_f1max": "image F1-max",
    "pixel_f1max": "pixel F1-max",
    "categories": "categories", "test_normal": "test normal", "test_anomalous": "test anomalous",
}
# digits a metric prints with, where 1 would hide its meaning (e.g. parameters in millions); other metrics: 1
METRIC_DIGITS: dict[str, int] = {}
LONG_COLUMNS = ["artifact", "section", "domain", "row", "dataset", "category", "metric", "reproduced",
                "paper", "diff", "selected_lambda", "lambda_selected_on_test", "run_ids", "note",
                "paper_source"]  # paper_source: the transcribed CSV (table) a published value comes from
LEGEND = ("each cell: reproduced / published (reproduced − published); — = no value (not reproduced or not "
          "published); missing = its run is not made yet (`glocal reproduce --only <ID>` makes it); undefined = "
          "its run finished but the metric has no value there (e.g. a test set with one label only)")
MISSING_NOTE = "not run yet"
# a run made before the engine recorded a quantity (e.g. peak memory, V3): not undefined, just not recorded
NOT_RECORDED_NOTE = "not recorded by its run"
SELECTION_NAN_NOTE = "a selection metric undefined on a run (NaN) is left out of its mean, not counted"
MARK = "†"
MEAN_MARK = "‡"
INCONSISTENT_MEAN = "published Mean ≠ mean of the published rows"
INCONSISTENT_MEAN_NOTE = (f"{MEAN_MARK} = the paper's own inconsistency: its printed Mean differs from the mean of "
                          "its printed rows by more than rounding (0.1)")
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

    def _repr_markdown_(self) -> str:  # a notebook cell ending in a table shows it
        return to_markdown(self)


# ----------------------------------------------------------------------------------- builders
def long_row(artifact: str, **kw: Any) -> dict[str, Any]:
    """One row of a table's long form (LONG_COLUMNS); the difference is computed where both values exist."""
    row = dict.fromkeys(LONG_COLUMNS, "")
    row.update(artifact=artifact, reproduced=np.nan, paper=np.nan, diff=np.nan, selected_lambda=np.nan,
               lambda_selected_on_test=False)
    row.update(kw)
    if not (math.isnan(row["reproduced"]) or math.isnan(row["paper"])):
        row["diff"] = row["reproduced"] - row["paper"]
    return row


def pct(values: dict[str, float], metric: str) -> float:
    """A run's metric (a fraction) in percent, NaN when the run has no value for it."""
    v = values.get(metric, float("nan"))
    return float(v) * 100.0 if v is not None and not math.isnan(float(v)) else float("nan")


def lam_of(res: CellResult) -> float:
    """The lambda a cell's value comes from (NaN: none was selected)."""
    return float(res.selected_lambda) if res.selected_lambda is not None else np.nan


def paper_metric(reg: Registry, metric: str) -> tuple[str, str | None]:
    """(level, published header) of one of our metric keys (experiments.yaml `metrics`)."""
    info = reg.data["metrics"][metric]
    return info["level"], info["paper"]


def paper_sources(art: dict[str, Any]) -> list[str]:
    """The transcribed CSVs an artifact's published values come from, for its provenance."""
    p = art.get("paper") or {}
    files = [p["file"]] if p.get("file") else []
    files += list((p.get("files") or {}).values())
    out = [f"paper/{f}" + (f" ({p['table']})" if p.get("table") else "") for f in files]
    for own in (p.get("sources") or {}).values():  # per-method sources (comparison kinds)
        out += [f"paper/{src['file']} ({src['table']})" for src in (own if isinstance(own, list) else [own])]
    return list(dict.fromkeys(out))


def paper_notes(art: dict[str, Any]) -> list[str]:
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
    if r.get("note") == NOT_RECORDED_NOTE:
        return "not recorded"
    return "undefined" if str(r.get("run_ids") or "").strip() else "—"


def cell_text(r: pd.Series, digits: int = 1) -> str:
    """'71.2† / 83.3 (-12.1)': reproduced (mark = lambda picked on test) / published (difference)."""
    if r.get("note") == DIFF_NOTE:
        return "—" if pd.isna(r["reproduced"]) else _fmt_num(r["reproduced"], digits, "+")
    mark = MARK if bool(r.get("lambda_selected_on_test")) and not pd.isna(r["reproduced"]) else ""
    if mark and not pd.isna(r.get("selected_lambda")):
        mark += f"λ={r['selected_lambda']:g}"
    flag = MEAN_MARK if INCONSISTENT_MEAN in str(r.get("note") or "") else ""
    text = f"{_reproduced_text(r, digits)}{mark} / {_fmt_num(r['paper'], digits)}{flag}"
    if not pd.isna(r["diff"]):
        text += f" ({_fmt_num(r['diff'], digits, '+')})"
    return text


def pivot(table: Table, data: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper-like layout of (a group of) the table: one text cell per index x columns."""
    df = (table.data if data is None else data).copy()
    digits = 0 if table.data["metric"].isin(["categories", "test_normal", "test_anomalous"]).all() else 1
    df["cell"] = df.apply(lambda r: cell_text(r, METRIC_DIGITS.get(str(r["metric"]), digits)), axis=1)
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
    return [(METRIC_LABELS.get(str(g), str(g)), d) for g, d in table.data.groupby(table.group_by, sort=False)]


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
    out.append(f"_{LEGEND}; {MARK}λ = lambda (or a training epoch) picked on this dataset's test set_\n")
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
             f"<p class='legend'>{html.escape(LEGEND)}; {MARK}λ = lambda (or a training epoch) picked on this "
             f"dataset's test set</p>"]
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
    df = pd.read_csv(path, skiprows=skip)
    if "paper_source" in df.columns:  # text, empty where no published value: '' as written, not NaN
        df["paper_source"] = df["paper_source"].astype(object).fillna("").astype(str)
    return df
