"""Figures from saved run outputs (PNG, PDF on request), each with its provenance in a footer and a sidecar JSON.

The drawing helpers the figure kinds share (glocal_lib/experiments/kinds/galleries.py, plots.py):
image grids, saved samples, 2-D projections and saving with provenance. A figure whose runs are
missing is still drawn, with the missing panels saying so, so that the index never links to nothing.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from glocal_lib.data.registry import load_manifest  # noqa: E402
from glocal_lib.errors import RunError  # noqa: E402
from glocal_lib.experiments import provenance as prov_mod  # noqa: E402
from glocal_lib.io import atomic_save_with, atomic_write_json  # noqa: E402

DEFAULT_FORMATS = ("png", "pdf")
_LEGEND_IN = 1.6  # inches added on the right of F6-F8 for their legend
PROMPT_COLORS = {"gn": "#1f77b4", "ga": "#d62728", "ln": "#2ca02c", "la": "#ff7f0e",
                 "n": "#1f77b4", "a": "#d62728"}


def gallery(title: str, rows: list[tuple[str, list[tuple[str, Any]]]]) -> plt.Figure:
    """rows: (row label, [(column label, sample dict | None)]) -> image grid ("missing" where None)."""
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
            draw_panel(ax, item)
    if not rows:
        axes[0][0].text(0.5, 0.5, "no runs for this figure yet", ha="center", va="center")
        axes[0][0].axis("off")
    fig.suptitle(title, fontsize=9, y=1 - 0.2 / fig_h)
    return fig


def sample_for(run: Any, *, image_path: str | None = None, category: str | None = None,
               k: int = 0) -> dict[str, Any] | None:
    """A saved sample of an eval run (image, mask, map): by image path, or the k-th of a category
    (anomalous first), or the k-th overall; None when the run has no such sample."""
    if run is None:
        return None
    index = Path(run.path) / "samples" / "index.csv"
    if not index.is_file():  # evaluated without saved samples (samples_per_category 0)
        return None
    try:
        samples = run.samples()
    except (OSError, ValueError) as err:
        raise RunError(f"{index} is unreadable ({err}): the run {run.run_id} is damaged; delete {run.path} and "
                       "rerun notebook 02_evaluate to remake it") from None
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


def truth(item: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The ground-truth panel of a sample: its mask, or none where the dataset has no masks (image-level)."""
    has_masks = load_manifest(dataset).pixel_level
    return {"mask": item.get("mask") if has_masks else None, "image": item["image"]}


def draw_panel(ax: Any, item: dict[str, Any] | None) -> None:
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
