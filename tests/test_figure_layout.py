"""Figure layout: legends beside the data, readable ticks, "no mask" where a dataset has none, colour scales.

Each check measures the drawn figure (rendered bounding boxes), not the code that placed things.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from matplotlib.transforms import Bbox
from report_fakes import FakeProfile, FakeStore, populate

from glocal_lib.data.registry import load_manifest
from glocal_lib.experiments import figures, kinds
from glocal_lib.experiments.registry import load_registry


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """draw(aid) -> the finished matplotlib figure (before the footer margins), rendered."""
    root = tmp_path_factory.mktemp("results") / "smoke"
    reg = load_registry(profile="smoke")
    store = FakeStore(FakeProfile("smoke", root))
    populate(reg, store, ["F4", "F5", "F8", "F9", "F36"])
    caught: dict[str, Any] = {}

    def draw(aid: str) -> Any:
        mp = pytest.MonkeyPatch()
        mp.setattr(figures, "save_figure", lambda fig, *a, **k: caught.update(fig=fig) or [])
        try:
            kinds.build_figure(reg, store, aid, root / "figures")
        finally:
            mp.undo()
        fig = caught["fig"]
        fig.canvas.draw()
        return fig

    return draw


def _overlap(a: Bbox, b: Bbox) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _data_axes(fig: Any) -> list[Any]:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_umap_legend_lies_outside_every_panel(drawn: Any) -> None:
    fig = drawn("F8")
    renderer = fig.canvas.get_renderer()
    assert fig.legends, "F8 has no legend"
    box = fig.legends[0].get_window_extent(renderer)
    assert all(ax.get_legend() is None for ax in fig.axes)
    assert not any(_overlap(box, ax.get_window_extent(renderer)) for ax in fig.axes)


def test_score_histogram_tick_labels_do_not_touch(drawn: Any) -> None:
    fig = drawn("F9")
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        boxes.sort(key=lambda b: b.x0)
        assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), ax.get_title()


def test_sweep_ticks_are_integers_on_integer_settings(drawn: Any) -> None:
    fig = drawn("F5")
    for ax in fig.axes:
        if not ax.lines:
            continue
        xs = {float(x) for line in ax.lines for x in line.get_xdata()}
        assert all(x.is_integer() for x in xs)  # the registry's sweeps are prompt lengths and depths
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), (ax.get_title(), ticks)


def test_image_level_ground_truth_says_no_mask_and_maps_have_a_colour_scale(drawn: Any) -> None:
    fig = drawn("F4")  # VisA (pixel), BrainMRI (image-level), Kvasir (pixel)
    axes = _data_axes(fig)
    rows = {ax.get_ylabel(): i for i, ax in enumerate(axes) if ax.get_ylabel()}
    ncols = len(axes) // len(rows)
    for name, first in rows.items():
        truth = axes[first + 1]
        says = [t.get_text() for t in truth.texts]
        key = {"VisA": "visa", "BrainMRI": "brainmri", "Kvasir": "kvasir"}[name]
        if load_manifest(key).pixel_level:
            assert truth.images and "no mask" not in says, name
        else:
            assert says == ["no mask"] and np.ptp(truth.images[0].get_array()) == 0, name  # a blank, sized panel
    n_maps = sum(1 for ax in axes if ax.images and ax.images[0].get_cmap().name == "jet")
    n_bars = sum(1 for ax in fig.axes if ax.get_label() == "<colorbar>")
    assert n_maps == len(rows) * (ncols - 2) and n_bars == n_maps
