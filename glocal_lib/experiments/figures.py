"""Figures from saved run outputs (PNG, PDF on request), each with its provenance in a footer and a sidecar JSON.

Kinds (experiments.yaml): method_gallery (F3), variant_gallery (F4), sweep_curves (F5), umap (F6-F8),
score_distribution (F9-F11), category_gallery (F12-F36). A figure whose runs are missing is still
drawn, with the missing panels saying so, so that the index never links to nothing.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from glocal_lib.data.registry import load_manifest  # noqa: E402
from glocal_lib.errors import ConfigError  # noqa: E402
from glocal_lib.experiments import provenance as prov_mod  # noqa: E402
from glocal_lib.experiments.registry import Cell, EvalJob, Registry  # noqa: E402
from glocal_lib.experiments.results import ResultStore  # noqa: E402
from glocal_lib.io import atomic_save_with, atomic_write_json  # noqa: E402

DEFAULT_FORMATS = ("png", "pdf")
FIGURE_KINDS = ("method_gallery", "variant_gallery", "sweep_curves", "umap", "score_distribution",
                "category_gallery")
_LEGEND_IN = 1.6  # inches added on the right of F6-F8 for their legend
PROMPT_COLORS = {"gn": "#1f77b4", "ga": "#d62728", "ln": "#2ca02c", "la": "#ff7f0e",
                 "n": "#1f77b4", "a": "#d62728"}


class FigureBuilder:
    """Draws every figure kind of the registry from a ResultStore."""

    def __init__(self, registry: Registry, store: ResultStore) -> None:
        self.reg = registry
        self.store = store
        self._run_ids: list[str] = []
        self._presets: set[str] = set()
        self._notes: list[str] = []

    # --- helpers
    def _use(self, job: EvalJob | None) -> Any:
        if job is None:
            return None
        run = self.store.eval_run(job)
        if run is not None:
            self._run_ids.append(run.run_id)
            self._presets.add(job.method_preset)
            if job.train is not None:
                tr = self.store.train_run(job.train)
                if tr is not None:
                    self._run_ids.append(tr.run_id)
        return run

    def _cell_run(self, cell: Cell | None) -> Any:
        return self._use(self.store.best_job(cell)) if cell is not None else None

    def build(self, artifact_id: str, out_dir: str | Path) -> list[Path]:
        art = self.reg.artifact(artifact_id)
        kind = art["kind"]
        if kind not in FIGURE_KINDS:
            raise ConfigError(f"artifact {artifact_id} ({kind}) is a table, not a figure")
        self._run_ids, self._presets, self._notes = [], set(), []
        fig = getattr(self, f"_{kind}")(artifact_id, art)
        prov = prov_mod.build(artifact_id, art["title"], profile=self.store.profile,
                              glocal_preset=self.reg.glocal_preset, presets=sorted(self._presets),
                              run_ids=self._run_ids, runs_commit=self.store.commit_of(self._run_ids),
                              notes=self._notes + self.reg.method_notes(self.reg.methods_of(art)))
        formats = getattr(self.store.profile, "formats", DEFAULT_FORMATS)
        return save_figure(fig, Path(out_dir), artifact_id, prov, formats=formats)

    # --- galleries
    def _gallery(self, title: str, rows: list[tuple[str, list[tuple[str, Any]]]]) -> plt.Figure:
        """rows: (row label, [(column label, sample dict | None)]) -> image grid."""
        ncols = max((len(cols) for _, cols in rows), default=1)
        nrows = max(len(rows), 1)
        fig_h = 1.9 * nrows + 0.6
        fig, axes = plt.subplots(nrows, ncols, figsize=(max(1.9 * ncols, 5.0), fig_h), squeeze=False)
        fig.subplots_adjust(top=1 - 0.8 / fig_h, bottom=0.02, hspace=0.12, wspace=0.3)  # room for colour bars
        for r, (label, cols) in enumerate(rows):
            for c in range(ncols):
                ax = axes[r][c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c >= len(cols):
                    ax.axis("off")
                    continue
                col_label, item = cols[c]
                if r == 0:
                    ax.set_title(col_label, fontsize=8)
                if c == 0:
                    ax.set_ylabel(label, fontsize=7)
                _draw_panel(ax, item)
        if not rows:
            axes[0][0].text(0.5, 0.5, "no runs for this figure yet", ha="center", va="center")
            axes[0][0].axis("off")
        fig.suptitle(title, fontsize=9, y=1 - 0.2 / fig_h)
        return fig

    def _sample_for(self, run: Any, *, image_path: str | None = None, category: str | None = None,
                    k: int = 0) -> dict[str, Any] | None:
        if run is None:
            return None
        try:
            samples = run.samples()
        except (OSError, ValueError):
            return None
        if image_path is not None:
            samples = samples[samples["image_path"].astype(str) == image_path]
        elif category is not None:
            samples = samples[samples["category"].astype(str) == category]
            samples = samples.sort_values("label", ascending=False, kind="stable")
        else:
            samples = samples.sort_values("label", ascending=False, kind="stable")
        if len(samples) <= k:
            return None
        row = samples.iloc[k]
        with np.load(Path(run.path) / str(row["file"])) as z:
            item = {key: z[key] for key in z.files}
        item.update(label=int(row["label"]), image_path=str(row["image_path"]), category=str(row["category"]))
        return item

    def _columns_gallery(self, title: str, columns: list[tuple[str, dict[str, Cell]]], datasets: list[str]) -> plt.Figure:
        rows = []
        for ds in datasets:
            runs = [(label, self._cell_run(cells.get(ds))) for label, cells in columns]
            ref = next((self._sample_for(r) for _, r in runs if r is not None), None)
            path = ref["image_path"] if ref else None
            cols: list[tuple[str, Any]] = [("input", ref and {"image": ref["image"]}),
                                           ("ground truth", ref and _truth(ref, ds))]
            for label, run in runs:
                item = self._sample_for(run, image_path=path) if path else None
                cols.append((label, item and {"map": item["map"]}))
            rows.append((self.reg.dataset_name(ds), cols))
        return self._gallery(title, rows)

    def _method_gallery(self, aid: str, art: dict[str, Any]) -> plt.Figure:
        datasets = [d for d in art["datasets"] if self.reg.keep(d) and self.reg.main_pair_for(d)]
        columns = []
        for m in self.reg.methods_of(art):
            cells: dict[str, Cell] = {}
            for ds in datasets:
                dom, _ = self.reg.main_pair_for(ds)  # type: ignore[misc]
                for c in self.reg.cells_for(self.reg.method(m), m, dom, "main", [ds]):
                    cells[ds] = c
            columns.append((m, cells))
        return self._columns_gallery(f"{aid}: {art['title']}", columns, datasets)

    def _variant_gallery(self, aid: str, art: dict[str, Any]) -> plt.Figure:
        datasets = [d for dom in ("industrial", "medical") for _, ev in self.reg.protocol("ablation", dom) for d in ev]
        columns = []
        for col in art["columns"]:
            cells = {}
            for dom in ("industrial", "medical"):
                for c in self.reg.cells_for(self.reg.variant(col["variant"]), col["variant"], dom, "ablation"):
                    cells[c.dataset] = c
            columns.append((col["label"], cells))
        return self._columns_gallery(f"{aid}: {art['title']}", columns, list(dict.fromkeys(datasets)))

    def _category_gallery(self, aid: str, art: dict[str, Any]) -> plt.Figure:
        ds = art["dataset"]
        pair = self.reg.main_pair_for(ds) if self.reg.keep(ds) else None
        run = None
        if pair:
            cells = self.reg.cells_for(self.reg.method(art["method"]), art["method"], pair[0], "main", [ds])
            run = self._cell_run(cells[0]) if cells else None
        per_cat = int(getattr(self.store.profile, "samples_per_category", 2) or 2)
        rows = []
        for cat in art["categories"]:
            for k in range(per_cat):
                item = self._sample_for(run, category=cat, k=k)
                if item is None and k > 0:
                    break
                state = "" if item is None else (" (anomalous)" if item["label"] else " (normal)")
                rows.append((f"{cat}{state}", [("input", item and {"image": item["image"]}),
                                               ("ground truth", item and _truth(item, ds)),
                                               (art["method"], item and {"map": item["map"]})]))
        return self._gallery(f"{aid}: {art['title']}", rows)

    # --- curves
    def _sweep_curves(self, aid: str, art: dict[str, Any]) -> plt.Figure:
        panels = art["panels"]
        fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False)
        for ax, panel in zip(axes[0], panels):
            sweep = self.reg.data["sweeps"][panel]
            for dom in art["domains"]:
                points: dict[Any, dict[str, list[float]]] = {}
                for v, train, entry in self.reg.sweep_entries(panel, dom):
                    for ds in dict(self.reg.protocol("ablation", dom)).get(train, []):
                        cands, select = self.reg.candidates(entry, train, ds)
                        cell = Cell(f"{panel}={v}", dom, train, ds, tuple(cands), select)
                        res = self.store.cell(cell)
                        self._run_ids += res.run_ids
                        for c in cands:
                            self._presets.add(c.job.method_preset)
                        for m in ("image_auroc", "pixel_auroc"):
                            val = res.values.get(m)
                            if val is not None and not math.isnan(val):
                                points.setdefault(v, {}).setdefault(m, []).append(val * 100)
                xs = sorted(points)
                for m, style in (("image_auroc", "-o"), ("pixel_auroc", "--s")):
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

    def _umap(self, aid: str, art: dict[str, Any]) -> plt.Figure:
        panels = self.reg.umap_train_jobs(aid)
        n = max(len(panels), 1)
        fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.6), squeeze=False)
        min_umap = int(getattr(self.store.profile, "umap_min_points", 0) or 0)
        used: set[str] = set()
        for ax, (label, job) in zip(axes[0], panels):
            run = self.store.train_run(job)
            ax.set_title(label, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if run is None:
                ax.text(0.5, 0.5, "train run missing", transform=ax.transAxes, ha="center")
                continue
            self._run_ids.append(run.run_id)
            self._presets.add(job.preset)
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
            self._notes.append(f"2-D projection: {projection} (inputs under {min_umap} points use PCA instead "
                               "of UMAP, whose start-up dominates tiny inputs; the paper profile always uses UMAP)")
        title = str(art["title"])
        if projection != "UMAP":  # the figure says which projection drew it
            said = f"({projection}; UMAP from {min_umap} points)"
            title = title.replace("(UMAP)", said) if "(UMAP)" in title else f"{title} {said}"
        fig.suptitle(f"{aid}: {title}", fontsize=9, y=0.98)
        fig.set_figwidth(fig.get_figwidth() + _LEGEND_IN)  # room for the legend on the right
        fig.subplots_adjust(bottom=0.06, top=0.82, right=right)
        return fig

    def _score_distribution(self, aid: str, art: dict[str, Any]) -> plt.Figure:
        import seaborn as sns

        frames = []
        for ds in art["datasets"]:
            pair = self.reg.main_pair_for(ds) if self.reg.keep(ds) else None
            if pair is None:
                continue
            cells = self.reg.cells_for(self.reg.method(art["method"]), art["method"], pair[0], "main", [ds])
            run = self._cell_run(cells[0]) if cells else None
            if run is None:
                continue
            df = run.scores()
            df["panel"] = (df["category"].astype(str) if art.get("by_category")
                           else self.reg.dataset_name(ds))
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


def _truth(item: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The ground-truth panel of a sample: its mask, or none where the dataset has no masks (image-level)."""
    has_masks = load_manifest(dataset).pixel_level
    return {"mask": item.get("mask") if has_masks else None, "image": item["image"]}


def _draw_panel(ax: Any, item: dict[str, Any] | None) -> None:
    if item is None:
        ax.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=7, transform=ax.transAxes)
        return
    if "map" in item:
        shown = ax.imshow(np.asarray(item["map"], dtype=np.float32), cmap="jet")
        bar = ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)  # each map is scaled to its own range
        bar.ax.tick_params(labelsize=5, length=2)
        bar.ax.yaxis.set_major_locator(MaxNLocator(nbins=3))
        return
    if "mask" in item:
        mask = item.get("mask")
        if mask is None or np.asarray(mask).size == 0:  # an image-level dataset: blank is not "no defect"
            ax.imshow(np.full(np.asarray(item["image"]).shape[:2], 0.85), cmap="gray", vmin=0, vmax=1)
            ax.text(0.5, 0.5, "no mask", ha="center", va="center", fontsize=7, color="#444",
                    transform=ax.transAxes)
            return
        ax.imshow(np.asarray(mask, dtype=np.float32), cmap="gray", vmin=0, vmax=1)
        return
    ax.imshow(np.asarray(item["image"]))


def project_2d(points: np.ndarray, min_umap_points: int = 0, seed: int = 0) -> tuple[np.ndarray, str]:
    """(2-D coordinates, "UMAP" | "PCA"): PCA below `min_umap_points` points (or under 4), else UMAP."""
    if len(points) < max(4, min_umap_points):
        return pca_2d(points), "PCA"
    return umap_2d(points, seed), "UMAP"


def pca_2d(points: np.ndarray) -> np.ndarray:
    """The first two principal axes (zero-padded when there are fewer)."""
    centered = points - points.mean(0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    out = centered @ vt[:2].T
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def umap_2d(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D UMAP of the prompt embeddings (cosine); tiny inputs (a 1-2 epoch smoke run) still work."""
    n = len(points)
    if n < 4:  # UMAP needs a neighbourhood; with 3 points or fewer show the first two principal axes
        return pca_2d(points)
    import warnings

    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(15, n - 1)), metric="cosine",
                            random_state=seed, init="random" if n < 16 else "spectral", min_dist=0.3)
        return np.asarray(reducer.fit_transform(points.astype(np.float32)))


def _add_margins(fig: plt.Figure, top_in: float, bottom_in: float) -> None:
    """Grow the figure by fixed bands (banner on top, footer below) without moving what is drawn."""
    h = fig.get_figheight()
    new_h = h + top_in + bottom_in
    scale, shift = h / new_h, bottom_in / new_h
    fig.set_figheight(new_h)
    for ax in fig.axes:
        pos = ax.get_position()
        ax.set_position([pos.x0, pos.y0 * scale + shift, pos.width, pos.height * scale])
    texts = list(fig.texts) + ([fig._suptitle] if getattr(fig, "_suptitle", None) is not None else [])
    for text in texts:
        x, y = text.get_position()
        text.set_position((x, y * scale + shift))
    for legend in fig.legends:
        box = legend.get_bbox_to_anchor().transformed(fig.transFigure.inverted())
        legend.set_bbox_to_anchor((box.x0, box.y0 * scale + shift, box.width, box.height * scale),
                                  transform=fig.transFigure)


def save_figure(fig: plt.Figure, out_dir: Path, artifact_id: str, prov: dict[str, Any],
                formats: Sequence[str] = DEFAULT_FORMATS) -> list[Path]:
    """The figure in `formats` (PNG, PDF...) with the provenance footer (and the smoke banner on top),
    plus a JSON sidecar; PDFs are slow to write, so the smoke profile asks for PNG only."""
    _add_margins(fig, top_in=0.32 if prov["banner"] else 0.0, bottom_in=0.26)
    if prov["banner"]:
        fig.text(0.5, 1 - 0.04 / fig.get_figheight(), prov["banner"].upper(), ha="center", va="top", fontsize=8,
                 color="white", fontweight="bold", bbox={"facecolor": "#b00020", "edgecolor": "none", "pad": 2})
    footer = "\n".join(textwrap.wrap(prov_mod.footer(prov), width=max(60, int(fig.get_figwidth() * 26))))
    fig.text(0.005, 0.03 / fig.get_figheight(), footer, fontsize=5, color="#444", ha="left", va="bottom")
    meta_pdf = {"Title": f"{artifact_id}: {prov['title']}", "Subject": " | ".join(prov_mod.lines(prov, 20)),
                "Keywords": prov["banner"] or "glocalclip-repro"}
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"png": {"Description": meta_pdf["Subject"]}, "pdf": meta_pdf, "svg": {"Title": meta_pdf["Title"]}}
    paths = [atomic_save_with(out_dir / f"{artifact_id}.{ext}",
                              lambda p, ext=ext: fig.savefig(p, format=ext, dpi=110 if ext == "png" else "figure",
                                                          metadata=meta[ext]))
             for ext in formats]
    for ext in set(DEFAULT_FORMATS + ("svg",)) - set(formats):  # never leave a stale copy of an older drawing
        (out_dir / f"{artifact_id}.{ext}").unlink(missing_ok=True)
    paths.append(atomic_write_json(out_dir / f"{artifact_id}.provenance.json", prov))
    plt.close(fig)
    return paths


def figure_ids(registry: Registry, ids: Sequence[str] | None = None) -> list[str]:
    return [a for a in registry.expand_ids(ids) if registry.artifact(a)["kind"] in FIGURE_KINDS]


def build_figures(registry: Registry, store: ResultStore, ids: Sequence[str], out_dir: str | Path) -> dict[str, list[Path]]:
    builder = FigureBuilder(registry, store)
    return {aid: builder.build(aid, out_dir) for aid in figure_ids(registry, ids)}
