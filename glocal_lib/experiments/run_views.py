"""What notebooks 01/02 show about the runs they made: loss curves per train run, metrics per eval run.

Both read only the run files (losses.csv, metrics.csv, scores.csv) through `engine.runs.Run`, like the
tables and figures, so they draw the same on a copied results folder.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless, whatever the kernel's backend
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from glocal_lib.engine.train import LOSS_KEYS  # noqa: E402
from glocal_lib.metrics.summary import MEAN_ROW  # noqa: E402

# a label (the job name) and the run's losses.csv (columns epoch, step, then one per loss term)
LossLog = tuple[str, pd.DataFrame]


def plotted_terms(losses: pd.DataFrame) -> list[str]:
    """Loss terms the run logged a value for (every column but epoch/step: each method logs its own
    terms, engine.train.loss_keys; a term that is NaN at every step was not computed)."""
    return [str(k) for k in losses.columns if k not in ("epoch", "step") and losses[k].notna().any()]


def plot_loss_curves(logs: Sequence[LossLog], ncols: int = 3, panel_in: tuple[float, float] = (4.2, 2.6)) -> plt.Figure:
    """One panel per training run: every logged loss term against the optimisation step, with the
    epoch boundaries dotted (a resumed run's steps continue, so the curve stays one line)."""
    if not logs:
        raise ValueError("no training runs to plot")
    ncols = max(1, min(ncols, len(logs)))
    nrows = math.ceil(len(logs) / ncols)
    height = panel_in[1] * nrows + 0.5  # the legend's row at the bottom
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_in[0] * ncols, height), squeeze=False)
    # fixed margins: a constrained layout costs seconds per panel when dozens of runs are drawn
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.3 / height, bottom=0.85 / height, hspace=0.65, wspace=0.22)
    # one colour per term in every panel: the common terms first (stable across figures), then the others
    terms = list(dict.fromkeys([*LOSS_KEYS, *(t for _, df in logs for t in plotted_terms(df))]))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {t: cycle[i % len(cycle)] for i, t in enumerate(terms)}
    for ax, (label, df) in zip(axes.flat, logs):
        for term in plotted_terms(df):
            ax.plot(df["step"].to_numpy(), df[term].to_numpy(), label=term, color=colours[term],
                    lw=2.0 if term == "total" else 1.0)
        for step in df.groupby("epoch")["step"].max().to_numpy()[:-1]:
            ax.axvline(step + 0.5, color="#bbb", lw=0.6, ls=":")
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))  # steps are integers
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))  # few ticks: tick layout is most of the drawing time
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(logs):]:
        ax.set_visible(False)
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_lines() if not h.get_label().startswith("_")}
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncols=len(handles), fontsize=8, frameon=False)
    return fig


def figure_png(fig: plt.Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes (shown inline whatever the kernel's matplotlib backend), then closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


NOT_MEASURED = "n/a"  # the dataset has no such level (image-level medical sets have no masks)


def metrics_table(runs: Sequence[tuple[str, Any]], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per evaluation run: its dataset-level value of each metric in % (the mean over the
    categories where it is defined; NaN = undefined everywhere, e.g. one label only; "n/a" = not
    measured on this dataset), its categories, and the test images (anomalous ones) it scored."""
    rows = []
    for name, run in runs:
        df = run.metrics()
        mean = df[df["category"].astype(str) == MEAN_ROW].set_index("metric")["value"]
        scores = run.scores()
        row: dict[str, Any] = {"run": name, "dataset": str(df["dataset"].iloc[0]) if len(df) else "",
                               "categories": int(df.loc[df["category"].astype(str) != MEAN_ROW, "category"].nunique()),
                               "images": len(scores), "anomalous": int((scores["label"] == 1).sum())}
        row.update({m: 100 * float(mean[m]) if m in mean.index else NOT_MEASURED for m in metrics})
        rows.append(row)
    return pd.DataFrame(rows).set_index("run") if rows else pd.DataFrame()


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "undefined" if math.isnan(value) else f"{value:.1f}"


def styled_metrics(table: pd.DataFrame, metrics: Sequence[str]) -> Any:
    """The metrics table for display: one decimal, "undefined" (never a blank or 0) where no category
    defines a metric, "n/a" where the dataset does not measure it."""
    if table.empty:
        return table
    return table.style.format(_cell, subset=[m for m in metrics if m in table.columns])
