"""Metrics against independent computations: sklearn, brute force, the released-style AUPRO loop."""

from __future__ import annotations

import hashlib
import importlib
import warnings

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from glocal_lib.bench.bench_metrics import synthetic_maps
from glocal_lib.bench.reference_metrics import (
    aupro_cflow_reference,
    aupro_mvtec_bruteforce,
    aupro_mvtec_global_sort,
)
from glocal_lib.errors import MetricInputError
from glocal_lib.metrics import (
    UndefinedMetricWarning,
    aupro,
    auroc,
    average_precision,
    category_mean,
    category_metrics,
    cflow_curve,
    f1_max,
    group_by_category,
    image_metrics,
    pixel_metrics,
)
from glocal_lib.metrics.aupro import cflow_thresholds, normal_pixel_count_float32

# the package re-exports the function `aupro`, which shadows the submodule attribute
aupro_module = importlib.import_module("glocal_lib.metrics.aupro")

# ------------------------------------------------------------------------------ classification


def _tied_scores(seed: int, n: int, levels: int, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.3
    scores = (
        np.round(rng.normal(size=n) + labels * 0.8, 0) / levels if levels else rng.normal(size=n) + labels
    )
    return scores.astype(dtype), labels.astype(np.int64)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [0, 1, 4])
def test_auroc_ap_equal_sklearn_with_ties(seed: int, levels: int) -> None:
    s, y = _tied_scores(seed, 500 + 97 * seed, levels, np.float32 if seed % 2 else np.float64)
    assert abs(auroc(s, y) - roc_auc_score(y, s)) < 1e-9
    assert abs(average_precision(s, y) - average_precision_score(y, s)) < 1e-9


def _f1max_bruteforce(scores: np.ndarray, labels: np.ndarray) -> float:
    best = -1.0
    pos = labels.astype(bool)
    for t in np.unique(scores):
        pred = scores >= t
        tp, fp = np.sum(pred & pos), np.sum(pred & ~pos)
        p, r = tp / (tp + fp), tp / pos.sum()
        if p + r > 0:
            best = max(best, 2 * p * r / (p + r))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_f1max_equals_bruteforce_and_released_formula(seed: int) -> None:
    s, y = _tied_scores(seed, 300, 2 if seed % 2 else 0)
    ours = f1_max(s, y)
    assert abs(ours - _f1max_bruteforce(s, y)) < 1e-12
    p, r, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore"):
        f1 = 2 * p * r / (p + r)
    assert abs(ours - np.max(f1[np.isfinite(f1)])) < 1e-12


def test_image_metrics_keys_and_single_label_nan() -> None:
    s, y = _tied_scores(0, 100, 0)
    out = image_metrics(s, y)
    assert set(out) == {"image_auroc", "image_ap", "image_f1max"}
    assert out["image_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    with pytest.warns(UndefinedMetricWarning, match="no negative"):
        one = image_metrics(s, np.ones_like(y))
    assert all(np.isnan(v) for v in one.values())


@pytest.mark.parametrize(
    ("scores", "labels", "match"),
    [
        ([0.1, np.nan], [0, 1], "NaN"),
        ([0.1, np.inf], [0, 1], "NaN/inf"),
        ([], [], "empty"),
        ([0.1, 0.2, 0.3], [0, 1], "shape"),
        ([0.1, 0.2], [0, 2], "0 and 1"),
    ],
)
def test_bad_score_inputs_raise(scores, labels, match) -> None:
    with pytest.raises(MetricInputError, match=match):
        image_metrics(np.asarray(scores, dtype=float), np.asarray(labels))


# ------------------------------------------------------------------------------ AUPRO inputs


def _blob_case(seed: int, n: int = 5, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Several regions per mask, one empty mask, a plateau in the maps."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(1, n):
        for _ in range(int(rng.integers(1, 4))):
            y, x = rng.integers(0, size, 2)
            h, w = rng.integers(1, 6, 2)
            masks[i, y : y + h, x : x + w] = True
    maps = ndimage.gaussian_filter(rng.normal(size=masks.shape), (0, 1, 1)) * 0.3 + masks * rng.uniform(
        0.1, 1
    )
    maps[2, :6, :6] = 0.25  # constant region
    return maps.astype(np.float32), masks


def _diagonal_case() -> tuple[np.ndarray, np.ndarray]:
    """A region made of two squares touching at a corner: one region only under 8-connectivity."""
    masks = np.zeros((3, 16, 16), dtype=bool)
    masks[0, 2:8, 2:8] = True
    masks[0, 8:10, 8:10] = True  # touches (7,7) diagonally
    masks[1, 10, 10] = masks[1, 11, 11] = masks[1, 12, 12] = True  # a diagonal line
    maps = np.zeros(masks.shape, dtype=np.float32) + np.linspace(0, 0.2, 16, dtype=np.float32)
    maps[0, 2:8, 2:8] += 1.0  # the big square is found, its diagonal neighbour is not
    maps[1, 10, 10] += 0.8
    return maps, masks


def _grid_case() -> tuple[np.ndarray, np.ndarray]:
    """Map values exactly on the (float32-rounded) threshold grid: tests '>' and the rounding."""
    rng = np.random.default_rng(7)
    masks = np.zeros((4, 20, 20), dtype=bool)
    masks[1, 3:9, 3:12] = masks[2, 10:18, 2:6] = masks[3, 0:4, 0:20] = True
    k = rng.integers(0, 201, size=masks.shape)
    maps = (k / 200.0 + 0.5 * masks * rng.random(masks.shape)).astype(np.float32)
    maps = np.where(rng.random(masks.shape) < 0.5, (np.round(maps * 200) / 200).astype(np.float32), maps)
    return maps.astype(np.float32), masks


CASES = {
    **{f"blobs{s}": (lambda s=s: _blob_case(s)) for s in range(4)},
    "diagonal": _diagonal_case,
    "grid": _grid_case,
    "synthetic": lambda: synthetic_maps(5, 32, seed=3)[:2],
}


@pytest.mark.parametrize("case", list(CASES))
def test_cflow_equals_released_style_loop(case: str) -> None:
    maps, masks = CASES[case]()
    assert abs(aupro(maps, masks, "cflow") - aupro_cflow_reference(maps, masks)) < 1e-9


def test_cflow_uses_8_connectivity(monkeypatch: pytest.MonkeyPatch) -> None:
    maps, masks = _diagonal_case()
    ours = aupro(maps, masks, "cflow")
    # counting the two squares as separate regions (4-connectivity) gives a different number
    four = ndimage.generate_binary_structure(2, 1)
    monkeypatch.setattr(aupro_module, "label_regions", lambda g: ndimage.label(g, structure=four))
    assert abs(aupro(maps, masks, "cflow") - ours) > 1e-3


@pytest.mark.parametrize("case", list(CASES))
def test_mvtec_equals_bruteforce_definition(case: str) -> None:
    maps, masks = CASES[case]()
    ours = aupro(maps, masks, "mvtec")
    assert abs(ours - aupro_mvtec_bruteforce(maps, masks)) < 1e-6
    assert abs(ours - aupro_mvtec_global_sort(maps, masks)) < 1e-9


def test_mvtec_limit_hit_exactly_and_other_limits() -> None:
    # 10 normal pixels: FPR steps of 0.1, so FPR = 0.3 is a curve point (no interpolation)
    maps = np.array([[[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.95, 0.35]]], dtype=np.float32)
    masks = np.zeros_like(maps, dtype=bool)
    masks[0, 0, 10:] = True
    for limit in (0.3, 0.25, 1.0):
        assert (
            abs(aupro(maps, masks, "mvtec", fpr_limit=limit) - aupro_mvtec_bruteforce(maps, masks, limit))
            < 1e-9
        )
    maps2, masks2 = _blob_case(1)
    for limit in (0.05, 0.5):
        assert (
            abs(aupro(maps2, masks2, "mvtec", fpr_limit=limit) - aupro_mvtec_bruteforce(maps2, masks2, limit))
            < 1e-9
        )


def test_chunked_processing_matches_single_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    maps, masks = synthetic_maps(6, 24, seed=5)[:2]
    whole = (aupro(maps, masks, "cflow"), aupro(maps, masks, "mvtec"))
    monkeypatch.setattr(aupro_module, "CHUNK_PIXELS", 2 * 24 * 24)  # 2 images per chunk
    assert aupro(maps, masks, "cflow") == pytest.approx(whole[0], abs=1e-12)
    assert aupro(maps, masks, "mvtec") == pytest.approx(whole[1], abs=1e-12)
    assert abs(whole[0] - aupro_cflow_reference(maps, masks)) < 1e-9
    assert abs(whole[1] - aupro_mvtec_bruteforce(maps, masks)) < 1e-6


def test_cflow_torch_backend_equals_numpy() -> None:
    pytest.importorskip("torch")
    maps, masks = _grid_case()
    assert aupro(maps, masks, "cflow", device="cpu") == aupro(maps, masks, "cflow")


# ------------------------------------------------------------------------------ numpy-1.24 arithmetic


# Values below were produced by the released arithmetic run under numpy 1.24.4 itself
# (``np.arange(mn, mx, (mx - mn) / 200)`` on float32 scalars, ``(1 - masks).sum()`` in float32).


def test_thresholds_equal_numpy_124_output() -> None:
    digest = hashlib.sha256()
    long_grids, differs_from_numpy2 = [], 0
    for i in range(3000):
        lo = np.float32((i * 7919 % 1000 - 500) / 37.0)
        hi = np.float32(float(lo) + (i * 104729 % 997 + 1) / 131.0)
        th = cflow_thresholds(np.array([[[lo, hi]]], dtype=np.float32))
        assert th.dtype == np.float32
        digest.update(th.tobytes())
        if th.size != 200:
            long_grids.append(i)
        naive = np.arange(lo, hi, (hi - lo) / 200)  # the same source line under numpy 2
        differs_from_numpy2 += naive.size != th.size or bool(np.any(naive != th))
    assert len(long_grids) == 197 and long_grids[:8] == [11, 43, 46, 50, 57, 66, 68, 73]
    assert digest.hexdigest() == "e958098284b334bc9556b00fff0f32c40246f828994d64cf39b668ba62da29a3"
    assert differs_from_numpy2 > 2000


def _hash_pattern(shape: tuple[int, ...], mod: int, below: int) -> np.ndarray:
    k = np.arange(int(np.prod(shape)), dtype=np.int64)
    return (((k * 2654435761) % mod) < below).reshape(shape)


@pytest.mark.parametrize(
    ("shape", "mod", "below", "numpy124_sum"),
    [
        ((300, 256, 256), 101, 2, 19271488.0),  # exact count 19271476
        ((90, 518, 518), 7, 1, 20699278.0),  # exact count 20699280
        ((37, 333, 517), 89, 5, 6012092.0),
        ((5, 64, 64), 13, 2, 17329.0),
    ],
)
def test_fpr_denominator_equals_numpy_124_float32_sum(shape, mod, below, numpy124_sum) -> None:
    # also checked once (too slow for the suite): (200, 518, 518), 97, 3 -> 52003848.0 (exact 52005064)
    assert normal_pixel_count_float32(_hash_pattern(shape, mod, below)) == np.float32(numpy124_sum)


def test_cflow_fprs_equal_numpy_124_output() -> None:
    k = np.arange(3 * 40 * 40, dtype=np.int64)
    masks = _hash_pattern((3, 40, 40), 23, 4)
    maps = (((k * 7919) % 1009) / 1009.0 * 3.0 - 1.0).reshape(3, 40, 40).astype(np.float32)
    maps = (maps + masks * np.float32(0.5)).astype(np.float32)
    _, fprs, _ = cflow_curve(maps, masks)
    assert fprs.size == 200
    assert hashlib.sha256(fprs.tobytes()).hexdigest() == (
        "1eb9470751e66e660f7c2abafbc8cd92685f98b03bfb19dc9ff7553f9ca24d24"
    )


# ------------------------------------------------------------------------------ degenerate inputs


def test_aupro_degenerate_inputs() -> None:
    maps, masks = _blob_case(0)
    with pytest.raises(MetricInputError, match="NaN"):
        bad = maps.copy()
        bad[0, 0, 0] = np.nan
        aupro(bad, masks)
    with pytest.raises(MetricInputError, match="shape"):
        aupro(maps, masks[:, :-1])
    with pytest.raises(MetricInputError, match="empty"):
        aupro(np.zeros((0, 4, 4), np.float32), np.zeros((0, 4, 4)))
    with pytest.raises(MetricInputError, match="0 and 1"):
        aupro(maps, masks * 0.5)
    with pytest.raises(MetricInputError, match="method"):
        aupro(maps, masks, "pro")
    for method in ("cflow", "mvtec"):
        with pytest.warns(UndefinedMetricWarning, match="no anomalous region"):
            assert np.isnan(aupro(maps, np.zeros_like(masks), method))
        with pytest.warns(UndefinedMetricWarning, match="no normal pixel"):
            assert np.isnan(aupro(maps, np.ones_like(masks), method))
    with pytest.warns(UndefinedMetricWarning, match="equal"):
        assert np.isnan(aupro(np.ones_like(maps), masks, "cflow"))


def test_released_layout_n1hw_accepted() -> None:
    maps, masks = _blob_case(2)
    assert aupro(maps[:, None], masks[:, None].astype(np.float32)) == aupro(maps, masks)


# ------------------------------------------------------------------------------ summaries


def test_pixel_metrics_match_sklearn_and_references() -> None:
    maps, masks = synthetic_maps(5, 32, seed=1)[:2]
    out = pixel_metrics(maps, masks)
    assert set(out) == {"pixel_auroc", "pixel_ap", "pixel_f1max", "aupro_cflow", "aupro_mvtec"}
    assert abs(out["pixel_auroc"] - roc_auc_score(masks.ravel(), maps.ravel())) < 1e-9
    assert abs(out["pixel_ap"] - average_precision_score(masks.ravel(), maps.ravel())) < 1e-9
    assert abs(out["aupro_cflow"] - aupro_cflow_reference(maps, masks)) < 1e-9
    assert set(pixel_metrics(maps, masks, aupro_methods=("mvtec",))) == {
        "pixel_auroc",
        "pixel_ap",
        "pixel_f1max",
        "aupro_mvtec",
    }


def test_category_metrics_mean_and_undefined_category() -> None:
    maps, masks, scores, labels = synthetic_maps(12, 24, seed=2)
    cats = np.array(["a"] * 6 + ["b"] * 6)
    labels = labels.copy()
    labels[6:] = True  # category b: anomalous images only -> image metrics undefined
    data = group_by_category(cats, scores=scores, labels=labels, maps=maps, masks=masks)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = category_metrics(data, dataset="toy")
    messages = " ".join(str(w.message) for w in caught)
    assert "category 'b'" in messages and "undefined for b" in messages
    assert list(df.columns) == ["dataset", "category", "metric", "value"]
    v = df.set_index(["category", "metric"])["value"]
    assert v[("a", "image_auroc")] == pytest.approx(roc_auc_score(labels[:6], scores[:6]), abs=1e-12)
    assert np.isnan(v[("b", "image_auroc")])
    assert v[("mean", "image_auroc")] == v[("a", "image_auroc")]
    expected = (aupro(maps[:6], masks[:6]) + aupro(maps[6:], masks[6:])) / 2
    assert v[("mean", "aupro_cflow")] == pytest.approx(expected, abs=1e-12)


def test_category_mean_skips_undefined_categories_like_nanmean() -> None:
    by_cat = {"a": 0.25, "b": float("nan"), "c": None, "d": 0.75, "e": 0.5}
    mean, left_out = category_mean(by_cat)
    assert mean == pytest.approx(np.nanmean([0.25, np.nan, np.nan, 0.75, 0.5]), abs=1e-15)
    assert left_out == ["b", "c"]
    mean, left_out = category_mean({"a": float("nan")})
    assert np.isnan(mean) and left_out == ["a"]


def test_category_metrics_image_only_and_pixel_only_datasets() -> None:
    maps, masks, scores, labels = synthetic_maps(8, 24, seed=4, normal_fraction=0.5)
    assert 0 < labels.sum() < len(labels)
    img = category_metrics({"headct": {"scores": scores, "labels": labels}}, dataset="headct")
    assert set(img["metric"]) == {"image_auroc", "image_ap", "image_f1max"}
    px = category_metrics([("isic", {"maps": maps, "masks": masks})], dataset="isic")
    assert set(px["metric"]) == {"pixel_auroc", "pixel_ap", "pixel_f1max", "aupro_cflow", "aupro_mvtec"}
    assert set(px["category"]) == {"isic", "mean"}
    with pytest.raises(MetricInputError, match="neither"):
        category_metrics({"x": {"scores": scores}})
