"""Plots: hyper-parameter curves (`sweep_curves`: F5), prompt embeddings across epochs (`umap`: F6-F8)
and image-score histograms (`score_distribution`: F9-F11)."""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from glocal_lib.experiments.figures import _LEGEND_IN, PROMPT_COLORS, project_2d
from glocal_lib.experiments.kinds.base import Drawing, Kind, register_kind
from glocal_lib.experiments.kinds.galleries import main_cells
from glocal_lib.experiments.registry import Cell, Registry, TrainJob

CURVE_METRICS = (("image_auroc", "-o"), ("pixel_auroc", "--s"))


def sweep_cells(reg: Registry, art: dict[str, Any]) -> list[tuple[str, str, Any, Cell]]:
    """(panel, domain, x value, cell) for every point of every F5 panel (experiments.yaml `sweeps`)."""
    out = []
    for dom in art["domains"]:
        for panel in art["panels"]:
            for v, train, entry in reg.sweep_entries(panel, dom):
                for ds in dict(reg.protocol("ablation", dom)).get(train, []):
                    cands, select = reg.candidates(entry, train, ds)
                    out.append((panel, dom, v, Cell(f"{panel}={v}", dom, train, ds, tuple(cands), select)))
    return out


@register_kind("sweep_curves")
class SweepCurves(Kind):
    """One panel per `panels` sweep: image and pixel AUROC (domain means) against the swept field."""

    output = "figure"
    required = ("title", "notebook", "domains", "panels")

    def cells(self, reg: Registry, aid: str, art: dict[str, Any]) -> list[Cell]:
        return [cell for *_, cell in sweep_cells(reg, art)]

    def draw(self, ctx: Drawing, aid: str, art: dict[str, Any]) -> plt.Figure:
        reg = ctx.reg
        panels = art["panels"]
        points_of = sweep_cells(reg, art)
        fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False)
        for ax, panel in zip(axes[0], panels):
            sweep = reg.data["sweeps"][panel]
            for dom in art["domains"]:
                points: dict[Any, dict[str, list[float]]] = {}
                for _, _, v, cell in [p for p in points_of if p[0] == panel and p[1] == dom]:
                    res = ctx.cell(cell)
                    for m, _ in CURVE_METRICS:
                        val = res.values.get(m)
                        if val is not None and not math.isnan(val):
                            points.setdefault(v, {}).setdefault(m, []).append(val * 100)
                xs = sorted(points)
                for m, style in CURVE_METRICS:
                    ys = [np.mean(points[x][m]) if points[x].get(m) else np.nan for x in xs]
                    if xs:
                        ax.plot(xs, ys, style, label=f"{dom} {m.replace('_', ' ')}", ms=4)
            ax.set_title(f"({panel}) {sweep['title']}", fontsize=9)
            if all(float(x).is_integer() for line in ax.lines for x in line.get_xdata()):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # lengths and depths are integers
            ax.set_xlabel(sweep["field"], fontsize=8)
            ax.set_ylabel("AUROC (%)", fontsize=8)
            ax.grid(alpha=0.3)
            if not ax.lines:
                ax.text(0.5, 0.5, "runs missing", transform=ax.transAxes, ha="center")
        handles, labels = axes[0][0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, bbox_to_anchor=(0.5, 0.06))
        fig.suptitle(f"{aid}: {art['title']}", fontsize=9, y=0.98)
        fig.subplots_adjust(bottom=0.32, top=0.78, wspace=0.35)
        return fig


@register_kind("umap")
class PromptUmap(Kind):
    """One panel per training run of `panels` (every lambda of the preset's grid): the four prompt
    embeddings of every epoch, projected to 2-D."""

    output = "figure"
    required = ("title", "notebook", "panels")

    def train_jobs(self, reg: Registry, aid: str, art: dict[str, Any]) -> list[TrainJob]:
        return [job for _, job in reg.umap_train_jobs(aid)]

    def draw(self, ctx: Drawing, aid: str, art: dict[str, Any]) -> plt.Figure:
        panels = ctx.reg.umap_train_jobs(aid)
        n = max(len(panels), 1)
        fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.6), squeeze=False)
        min_umap = int(getattr(ctx.store.profile, "umap_min_points", 0) or 0)
        used: set[str] = set()
        for ax, (label, job) in zip(axes[0], panels):
            run = ctx.train_run(job)
            ax.set_title(label, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if run is None:
                ax.text(0.5, 0.5, "train run missing", transform=ax.transAxes, ha="center")
                continue
            emb, names, epochs = run.prompt_embeddings()
            flat, how = project_2d(emb.reshape(-1, emb.shape[-1]), min_umap)
            used.add(how)
            xy = flat.reshape(emb.shape[0], emb.shape[1], 2)
            for p, name in enumerate(names):
                color = PROMPT_COLORS.get(name)
                ax.plot(xy[:, p, 0], xy[:, p, 1], "-", color=color, alpha=0.5, lw=1)
                ax.scatter(xy[:, p, 0], xy[:, p, 1], color=color, s=14, label=name, zorder=3)
                for e in (0, len(epochs) - 1) if len(epochs) > 6 else range(len(epochs)):
                    ax.annotate(f"E{int(epochs[e])}", xy[e, p], fontsize=6, xytext=(2, 2), textcoords="offset points")
        right = 3.6 * n / (3.6 * n + _LEGEND_IN)
        handles, labels = next((a.get_legend_handles_labels() for a in axes[0] if a.collections), ([], []))
        if handles:  # one legend beside the panels, never over the points
            fig.legend(handles, labels, loc="center left", bbox_to_anchor=(right + 0.01, 0.45), fontsize=7,
                       frameon=False)
        if not panels:
            axes[0][0].text(0.5, 0.5, "no train runs for this figure", ha="center")
        projection = " + ".join(sorted(used)) or "none"
        if used - {"UMAP"}:
            ctx.notes.append(f"2-D projection: {projection} (inputs under {min_umap} points use PCA instead "
                             "of UMAP, whose start-up dominates tiny inputs; the paper profile always uses UMAP)")
        title = str(art["title"])
        if projection != "UMAP":  # the figure says which projection drew it
            said = f"({projection}; UMAP from {min_umap} points)"
            title = title.replace("(UMAP)", said) if "(UMAP)" in title else f"{title} {said}"
        fig.suptitle(f"{aid}: {title}", fontsize=9, y=0.98)
        fig.set_figwidth(fig.get_figwidth() + _LEGEND_IN)  # room for the legend on the right
        fig.subplots_adjust(bottom=0.06, top=0.82, right=right)
        return fig


@register_kind("score_distribution")
class ScoreDistribution(Kind):
    """Histograms of `method`'s image scores, normal vs anomalous, per category (`by_category`) or dataset."""

    output = "figure"
    required = ("title", "notebook", "method", "datasets")

    def cells(self, reg: Registry, aid: str, art: dict[str, Any]) -> list[Cell]:
        return main_cells(reg, art["method"], list(art["datasets"]))

    def draw(self, ctx: Drawing, aid: str, art: dict[str, Any]) -> plt.Figure:
        import seaborn as sns

        frames = []
        for cell in self.cells(ctx.reg, aid, art):
            run = ctx.run(cell)
            if run is None:
                continue
            df = run.scores()
            df["panel"] = (df["category"].astype(str) if art.get("by_category")
                           else ctx.reg.dataset_name(cell.dataset))
            frames.append(df)
        data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["panel", "score", "label"])
        panels = list(dict.fromkeys(data["panel"])) or ["(no runs)"]
        ncols = min(5, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(max(6.5, 2.6 * ncols), 2.2 * nrows + 0.8), squeeze=False)
        for i, ax in enumerate(axes.flat):
            if i >= len(panels) or data.empty:
                ax.axis("off")
                if data.empty and i == 0:
                    ax.text(0.5, 0.5, "eval runs missing", ha="center")
                continue
            sub = data[data["panel"] == panels[i]].copy()
            sub["state"] = np.where(sub["label"].astype(int) == 1, "anomalous", "normal")
            sns.histplot(sub, x="score", hue="state", ax=ax, stat="density", common_norm=False, bins=12,
                         element="step", palette={"normal": "#1f77b4", "anomalous": "#d62728"},
                         hue_order=["normal", "anomalous"], legend=(i == 0))
            ax.set_title(panels[i], fontsize=8)
            if ax.get_legend() is not None:
                sns.move_legend(ax, "upper center", fontsize=6, title=None, frameon=False)
            ax.set_xlabel("image anomaly score", fontsize=7)
            ax.set_ylabel("density", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4))  # close scores: few ticks, so labels never touch
        fig.suptitle(f"{aid}: {art['title']}", fontsize=9, y=0.98)
        fig.subplots_adjust(bottom=0.18, top=0.74, hspace=0.6, wspace=0.35)
        return fig
