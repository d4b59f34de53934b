"""Map galleries: every method (`method_gallery`: F3), two variants (`variant_gallery`: F4) and one
method per category (`category_gallery`: F12-F36, from experiments.yaml `category_galleries`)."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt

from glocal_lib.experiments.figures import gallery, sample_for, truth
from glocal_lib.experiments.kinds.ablation import variant_cells
from glocal_lib.experiments.kinds.base import Drawing, Kind, register_kind
from glocal_lib.experiments.kinds.comparison import method_cells
from glocal_lib.experiments.registry import Cell, Registry


def columns_gallery(ctx: Drawing, title: str, columns: list[tuple[str, dict[str, Cell]]],
                    datasets: list[str]) -> plt.Figure:
    """One row per dataset: input, ground truth, then each column's map of the same test image."""
    rows = []
    for ds in datasets:
        runs = [(label, ctx.run(cells[ds]) if ds in cells else None) for label, cells in columns]
        ref = next((sample_for(r) for _, r in runs if r is not None), None)
        path = ref["image_path"] if ref else None
        cols: list[tuple[str, Any]] = [("input", ref and {"image": ref["image"]}),
                                       ("ground truth", ref and truth(ref, ds))]
        for label, run in runs:
            item = sample_for(run, image_path=path) if path else None
            cols.append((label, item and {"map": item["map"]}))
        rows.append((ctx.reg.dataset_name(ds), cols))
    return gallery(title, rows)


def main_cells(reg: Registry, method: str, datasets: list[str]) -> list[Cell]:
    """`method`'s cells on the kept `datasets` that the main protocol evaluates."""
    out: list[Cell] = []
    for ds in datasets:
        pair = reg.main_pair_for(ds) if reg.keep(ds) else None
        if pair is not None:
            out += reg.cells_for(reg.method(method), method, pair[0], "main", [ds])
    return out


@register_kind("method_gallery")
class MethodGallery(Kind):
    """Rows = `datasets`, columns = input, ground truth, one map per `methods` entry."""

    output = "figure"
    required = ("title", "notebook", "datasets", "methods")

    def cells(self, reg: Registry, aid: str, art: dict[str, Any]) -> list[Cell]:
        return method_cells(reg, art)

    def draw(self, ctx: Drawing, aid: str, art: dict[str, Any]) -> plt.Figure:
        reg = ctx.reg
        planned = self.cells(reg, aid, art)
        datasets = [d for d in art["datasets"] if reg.keep(d) and reg.main_pair_for(d)]
        columns = [(m, {c.dataset: c for c in planned if c.row == m}) for m in reg.methods_of(art)]
        return columns_gallery(ctx, f"{aid}: {art['title']}", columns, datasets)


@register_kind("variant_gallery")
class VariantGallery(Kind):
    """Rows = the ablation protocol's datasets of `domains`, columns = input, truth, one map per `columns` variant."""

    output = "figure"
    required = ("title", "notebook", "domains", "columns")

    def cells(self, reg: Registry, aid: str, art: dict[str, Any]) -> list[Cell]:
        return [c for col in art["columns"] for dom in art["domains"] for c in variant_cells(reg, col["variant"], dom)]

    def draw(self, ctx: Drawing, aid: str, art: dict[str, Any]) -> plt.Figure:
        reg = ctx.reg
        datasets = [d for dom in art["domains"] for _, ev in reg.protocol("ablation", dom) for d in ev]
        columns = [(col["label"], {c.dataset: c for dom in art["domains"]
                                   for c in variant_cells(reg, col["variant"], dom)}) for col in art["columns"]]
        return columns_gallery(ctx, f"{aid}: {art['title']}", columns, list(dict.fromkeys(datasets)))


@register_kind("category_gallery")
class CategoryGallery(Kind):
    """Rows = samples of each of `categories` (anomalous first), columns = input, truth, `method`'s map."""

    output = "figure"
    required = ("title", "notebook", "method", "dataset", "categories")

    def cells(self, reg: Registry, aid: str, art: dict[str, Any]) -> list[Cell]:
        return main_cells(reg, art["method"], [art["dataset"]])

    def draw(self, ctx: Drawing, aid: str, art: dict[str, Any]) -> plt.Figure:
        ds = art["dataset"]
        cells = self.cells(ctx.reg, aid, art)
        run = ctx.run(cells[0]) if cells else None
        per_cat = int(getattr(ctx.store.profile, "samples_per_category", 2) or 2)
        rows = []
        for cat in art["categories"]:
            for k in range(per_cat):
                item = sample_for(run, category=cat, k=k)
                if item is None and k > 0:
                    break
                state = "" if item is None else (" (anomalous)" if item["label"] else " (normal)")
                rows.append((f"{cat}{state}", [("input", item and {"image": item["image"]}),
                                               ("ground truth", item and truth(item, ds)),
                                               (art["method"], item and {"map": item["map"]})]))
        return gallery(f"{aid}: {art['title']}", rows)
