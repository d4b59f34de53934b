"""AUPRO, two ways: the released code's 200-threshold approximation and the MVTec AD definition.

``method="cflow"`` reproduces the released ``cal_pro_score`` (spec section 7) number for number,
including the numpy-1.24 arithmetic it ran with:

- step = float64(float32(max - min)) / 200 over all maps, thresholds = float64
  ``arange(min, max, step)`` with numpy 1.24's length rule (see ``cflow_thresholds``), each rounded
  to the maps' dtype (float32) before the comparison ``map > th``;
- PRO(th) = mean over every 8-connected region of every mask of the fraction of its pixels above th;
- FPR(th) = false positives / (float32 sum of 1 - mask over the whole stack, numpy 1.24 order);
- keep FPR < limit (strict), min-max rescale the kept FPRs to [0, 1], trapezoid.

The released loop relabels every mask and re-binarises every map at each of the 200 thresholds.
Here each mask is labelled once (8-connectivity: ``scipy.ndimage.label`` with a 3x3 structure;
empty masks skipped) and each pixel gets its threshold index, the number of thresholds strictly
below its value (an arithmetic guess on the near-uniform grid, corrected exactly; or
``torch.bucketize`` on a device). A ``bincount`` of the index over all pixels and one of
(region, index) over the anomalous pixels give every region's and the normal pixels' histograms
over the grid; reverse cumulative sums give every overlap and FP count at every threshold. Work is
done in chunks of images, so memory stays a small multiple of one chunk (~4M pixels).

``method="mvtec"`` is the official MVTec AD definition: the exact PRO/FPR curve at every distinct
score (a pixel is positive when score >= threshold), PRO averaged over all regions of the set, FPR
over all normal pixels of the set, integrated from 0 to the limit with linear interpolation at the
limit and divided by the limit. Only pixels above the score where FPR first reaches the limit
(found with a partition) are sorted, normal and anomalous values separately, and the curve is
read off them with ``searchsorted`` at the anomalous scores (the only places where PRO changes).
FPRs are exact counts in float64; the official code stores them in float32, so it agrees to ~1e-7.

Undefined cases (no anomalous region, no normal pixel, constant maps, fewer than two FPR points
below the limit) return NaN with an UndefinedMetricWarning, where the released code crashes or
returns NaN silently.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from glocal_lib.errors import MetricInputError
from glocal_lib.metrics.inputs import check_maps_masks, undefined

CFLOW_STEPS = 200
CHUNK_PIXELS = 1 << 22  # ~4M pixels per chunk: ~16 images of 518x518, bounded temporaries

# Full 8-connectivity, as skimage's ``label`` default that the released code used.
_STRUCTURE = np.ones((3, 3), dtype=bool)

Method = Literal["cflow", "mvtec"]


def aupro(
    maps: Any,
    masks: Any,
    method: Method = "cflow",
    fpr_limit: float = 0.3,
    *,
    device: str | None = None,
) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, normalised to [0, 1].

    maps: (N, H, W) anomaly maps (or (N, 1, H, W)); masks: same shape, values 0/1 or bool.
    method: "cflow" (released code, produced the paper's numbers) or "mvtec" (official definition).
    device: optional torch device (e.g. "cuda") for the per-pixel binning of "cflow".
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise MetricInputError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    m, g = check_maps_masks(maps, masks)
    if method == "cflow":
        return aupro_cflow(m, g, fpr_limit=fpr_limit, device=device, _checked=True)
    if method == "mvtec":
        return aupro_mvtec(m, g, fpr_limit=fpr_limit, _checked=True)
    raise MetricInputError(f"unknown AUPRO method {method!r}; use 'cflow' or 'mvtec'")


# ----------------------------------------------------------------------------------------------
# shared: regions labelled once


def _chunks(n_images: int, pixels_per_image: int) -> Iterator[slice]:
    step = max(1, CHUNK_PIXELS // max(1, pixels_per_image))
    for start in range(0, n_images, step):
        yield slice(start, min(n_images, start + step))


def label_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 8-connected regions of one (H, W) bool mask as 1..n."""
    labels, n = ndimage.label(mask, structure=_STRUCTURE)
    return labels, int(n)


def region_pixels(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Anomalous pixels of a (n, H, W) stack: (flat index into the stack, region number 0.., #regions).

    Regions are numbered image by image; masks without any anomalous pixel are skipped.
    """
    per_image = masks.shape[1] * masks.shape[2]
    flat_idx: list[np.ndarray] = [np.zeros(0, dtype=np.intp)]
    region: list[np.ndarray] = [np.zeros(0, dtype=np.intp)]
    n_total = 0
    for i in np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1)):
        labels, n = label_regions(masks[i])
        flat = np.flatnonzero(labels)
        flat_idx.append(flat + i * per_image)
        region.append(labels.ravel()[flat].astype(np.intp) - 1 + n_total)
        n_total += n
    return np.concatenate(flat_idx), np.concatenate(region), n_total


# ----------------------------------------------------------------------------------------------
# cflow (released code)


def cflow_thresholds(maps: np.ndarray) -> np.ndarray:
    """Thresholds of the released code exactly as numpy 1.24 computed them, rounded to the maps' dtype.

    numpy 1.24 ran ``np.arange(min, max, (max - min) / 200)`` with float32 scalars as: span =
    float32(max - min); step = float64(span) / 200; length = ceil(float64(span) / step) (the
    range subtraction is done on the float32 scalars, so the length is 200, rarely 201); values
    start, start + step, then start + i * delta with delta = (start + step) - start (numpy's
    fill). numpy 2 computes the length from float64(max) - float64(min) instead, which gives 201
    thresholds for other value ranges; the result here was checked against numpy 1.24.4 itself.
    """
    lo, hi = maps.min(), maps.max()  # numpy scalars of the maps' dtype
    span = hi - lo  # rounded in the maps' dtype, as in the released code
    if not np.isfinite(span):
        raise MetricInputError("anomaly map value range overflows; rescale the maps")
    if span == 0:
        return np.empty(0, dtype=maps.dtype)
    step = np.float64(span) / CFLOW_STEPS
    n = max(0, math.ceil(np.float64(span) / step))
    start = np.float64(lo)
    grid = np.empty(n, dtype=np.float64)
    grid[0] = start
    if n > 1:
        grid[1] = start + step
        grid[2:] = start + np.arange(2, n, dtype=np.float64) * (grid[1] - start)
    return grid.astype(maps.dtype)


NUMPY_REDUCE_BUFFER = 8192  # numpy 1.24 reduced a float32 array in buffers of this many elements


def normal_pixel_count_float32(masks: np.ndarray) -> np.float32:
    """The released FPR denominator: float32 ``(1 - masks).sum()`` as numpy 1.24 computed it.

    numpy 1.24 summed a contiguous float32 array in buffers of 8192 elements: each buffer's
    (pairwise) sum is exact for 0/1 values, and the buffer sums were added one after another to a
    float32 accumulator, which rounds once the count passes 2**24 (a VisA category at 518 x 518
    has ~5e7 normal pixels: off by up to a few hundred). numpy 2 sums differently; the values here
    were checked against numpy 1.24.4 itself. float32 ``cumsum`` accumulates sequentially too.
    """
    flat = masks.reshape(-1)
    n_full = flat.size // NUMPY_REDUCE_BUFFER
    full = flat[: n_full * NUMPY_REDUCE_BUFFER].reshape(n_full, NUMPY_REDUCE_BUFFER)
    anomalous = np.add.reduce(full, axis=1, dtype=np.int64)
    blocks = NUMPY_REDUCE_BUFFER - anomalous
    rest = flat[n_full * NUMPY_REDUCE_BUFFER :]
    if rest.size:
        blocks = np.append(blocks, rest.size - int(np.count_nonzero(rest)))
    return np.cumsum(blocks.astype(np.float32), dtype=np.float32)[-1]


def threshold_index(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each value, how many thresholds lie strictly below it (= ``searchsorted(th, v, 'left')``).

    Exact for any non-decreasing thresholds and fast for the released near-uniform grid: an
    arithmetic guess in the values' dtype, one vectorised check th[i-1] < v <= th[i], and a
    ``searchsorted`` for the few values (next to a threshold) where the guess is off.
    """
    k = thresholds.size
    dt = values.dtype
    lo = np.float64(thresholds[0]) if k else 0.0
    step = (np.float64(thresholds[-1]) - lo) / (k - 1) if k > 1 else 0.0
    if not step > 0:
        return np.searchsorted(thresholds, values, side="left")
    guess = np.subtract(values, dt.type(lo), dtype=dt)
    guess *= dt.type(1.0 / step)
    guess += dt.type(1.0)
    np.clip(guess, 0, k, out=guess)
    idx = guess.astype(np.intp)
    del guess
    th = thresholds.astype(dt)
    below = np.insert(th, 0, np.array(-np.inf, dtype=dt))  # below[i] = th[i - 1]
    above = np.append(th, np.array(np.inf, dtype=dt))  # above[i] = th[i]
    ok = below[idx] < values
    ok &= above[idx] >= values
    wrong = np.flatnonzero(~ok)
    idx[wrong] = np.searchsorted(th, values[wrong], side="left")
    return idx


def cflow_counts(
    maps: np.ndarray, masks: np.ndarray, thresholds: np.ndarray, device: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-threshold counts: (FP count (K,), region overlaps (R, K), region areas (R,)).

    A pixel with value v is above threshold k (``v > th_k``) exactly for k < #(th < v). One
    histogram of that index over all pixels, and one per region over the anomalous pixels, give
    every count; normal = all - anomalous.
    """
    k = thresholds.size
    fp_hist = np.zeros(k + 1, dtype=np.int64)
    region_hists: list[np.ndarray] = [np.zeros((0, k + 1), dtype=np.int64)]
    torch_th = None
    if device is not None:
        import torch

        torch_th = torch.as_tensor(thresholds, device=device)
    for sl in _chunks(len(maps), maps.shape[1] * maps.shape[2]):
        values = maps[sl].reshape(-1)
        pix, region, n_regions = region_pixels(masks[sl])
        if torch_th is None:
            idx = threshold_index(values, thresholds)
            all_hist = np.bincount(idx, minlength=k + 1)
            idx_anomalous = idx[pix]
        else:
            import torch

            idx_t = torch.bucketize(torch.as_tensor(values, device=device), torch_th, right=False)
            all_hist = torch.bincount(idx_t, minlength=k + 1).cpu().numpy()
            idx_anomalous = idx_t[torch.as_tensor(pix, device=device)].cpu().numpy()
        hist = np.bincount(region * (k + 1) + idx_anomalous, minlength=n_regions * (k + 1))
        hist = hist.reshape(n_regions, k + 1)
        fp_hist += all_hist - hist.sum(axis=0)
        region_hists.append(hist)
    regions = np.concatenate(region_hists, axis=0)
    areas = regions.sum(axis=1)
    # pixels above threshold j = total - pixels with index <= j
    overlaps = areas[:, None] - np.cumsum(regions, axis=1)[:, :k]
    fp = int(fp_hist.sum()) - np.cumsum(fp_hist)[:k]
    return fp, overlaps, areas


def cflow_curve(
    maps: Any, masks: Any, device: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds float64 as rounded, FPR, PRO) at every released threshold, before the FPR cut."""
    m, g = check_maps_masks(maps, masks)
    return _cflow_curve(m, g, device)


def _cflow_curve(m: np.ndarray, g: np.ndarray, device: str | None) -> tuple[np.ndarray, ...]:
    th = cflow_thresholds(m)
    fp, overlaps, areas = cflow_counts(m, g, th, device=device)
    denominator = np.float64(normal_pixel_count_float32(g))
    with np.errstate(invalid="ignore", divide="ignore"):
        fprs = fp / denominator
        pros = (overlaps / areas[:, None]).mean(axis=0) if len(areas) else np.full(th.size, np.nan)
    return th.astype(np.float64), fprs, pros


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """sklearn ``auc``: trapezoid, with the sign flipped for a decreasing x."""
    dx = np.diff(x)
    direction = -1.0 if np.any(dx < 0) else 1.0
    return float(direction * np.sum(dx * (y[1:] + y[:-1]) / 2.0))


def aupro_cflow(
    maps: Any, masks: Any, fpr_limit: float = 0.3, device: str | None = None, *, _checked: bool = False
) -> float:
    """The released code's AUPRO (``cal_pro_score``), computed by counting; see module docstring."""
    m, g = (maps, masks) if _checked else check_maps_masks(maps, masks)
    if not g.any():
        return undefined("AUPRO (cflow)", "the masks contain no anomalous region")
    if g.all():
        return undefined("AUPRO (cflow)", "the masks contain no normal pixel")
    _, fprs, pros = _cflow_curve(m, g, device)
    if fprs.size == 0:
        return undefined("AUPRO (cflow)", "all anomaly map values are equal (no threshold range)")
    keep = fprs < fpr_limit
    kept = fprs[keep]
    if kept.size < 2 or kept.max() == kept.min():
        return undefined(
            "AUPRO (cflow)", f"fewer than two distinct FPR values below {fpr_limit} among the 200 thresholds"
        )
    scaled = (kept - kept.min()) / (kept.max() - kept.min())
    return _trapezoid(pros[keep], scaled)


# ----------------------------------------------------------------------------------------------
# mvtec (official definition)


def _first_count_reaching(limit: float, n_ok: int) -> int:
    """Smallest k with k / n_ok >= limit (float64 division, like the curve's FPRs)."""
    k = max(1, math.ceil(limit * n_ok))
    while k > 1 and (k - 1) / n_ok >= limit:
        k -= 1
    while k / n_ok < limit:
        k += 1
    return k


def mvtec_curve(maps: Any, masks: Any, fpr_limit: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of the exact (FPR, PRO) curve from (0, 0) up to the first point with FPR >= fpr_limit.

    Points where only normal pixels change are collinear and left out; the curve is the same.
    """
    m, g = check_maps_masks(maps, masks)
    return _mvtec_curve(m, g, fpr_limit)


def _mvtec_curve(m: np.ndarray, g: np.ndarray, fpr_limit: float) -> tuple[np.ndarray, np.ndarray]:
    n_ok = int(g.size - np.count_nonzero(g))
    chunks = list(_chunks(len(m), m.shape[1] * m.shape[2]))
    # 1) the score at which FPR first reaches the limit: the k-th largest normal value
    k = _first_count_reaching(fpr_limit, n_ok)
    normal_values = np.empty(n_ok, dtype=m.dtype)
    filled = 0
    for sl in chunks:
        part = m[sl][~g[sl]]
        normal_values[filled : filled + part.size] = part
        filled += part.size
    normal_values.partition(n_ok - k)  # in place: no second copy
    cut = normal_values[n_ok - k]
    del normal_values
    # 2) only pixels >= cut matter: normal values, and anomalous values with their region weight
    normal_parts, anomalous_parts, weight_parts = [], [], []
    n_regions_total = 0
    for sl in chunks:
        values = m[sl].reshape(-1)
        pix, region, n_regions = region_pixels(g[sl])
        inv_area = 1.0 / np.bincount(region, minlength=n_regions)
        above = values >= cut
        anomalous_above = above[pix]
        anomalous_parts.append(values[pix][anomalous_above])
        weight_parts.append(inv_area[region[anomalous_above]])
        above[pix] = False
        normal_parts.append(values[above])
        n_regions_total += n_regions
    normal = np.sort(np.concatenate(normal_parts))
    anomalous = np.concatenate(anomalous_parts)
    order = np.argsort(anomalous)
    anomalous = anomalous[order]
    weight_from_top = np.concatenate(([0.0], np.cumsum(np.concatenate(weight_parts)[order][::-1])))
    # 3) PRO only changes at anomalous scores: between two of them the curve is a horizontal line,
    # so its vertices are, at every such score t (and at the cut), the points for "> t" and ">= t".
    t = np.unique(np.append(anomalous, cut))[::-1]
    t = t[t >= cut]
    at = np.repeat(t, 2)  # t1, t1, t2, t2, ...
    side_right = np.tile([True, False], t.size)  # "> t" first, then ">= t"
    n_normal = normal.size - np.where(
        side_right, np.searchsorted(normal, at, "right"), np.searchsorted(normal, at, "left")
    )
    n_anomalous = anomalous.size - np.where(
        side_right, np.searchsorted(anomalous, at, "right"), np.searchsorted(anomalous, at, "left")
    )
    fprs = np.concatenate(([0.0], n_normal / n_ok))
    pros = np.concatenate(([0.0], np.minimum(weight_from_top[n_anomalous] / n_regions_total, 1.0)))
    return fprs, pros


def area_to_limit(fprs: np.ndarray, pros: np.ndarray, limit: float) -> float:
    """Trapezoid area of a non-decreasing-FPR curve from 0 to ``limit``, interpolating at the limit."""
    inside = int(np.searchsorted(fprs, limit, side="right"))  # points with fpr <= limit
    x, y = fprs[:inside], pros[:inside]
    area = float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)))
    if x[-1] < limit and inside < fprs.size:
        x0, x1, y0, y1 = fprs[inside - 1], fprs[inside], pros[inside - 1], pros[inside]
        y_at = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += float(0.5 * (y_at + y0) * (limit - x0))
    return area


def aupro_mvtec(maps: Any, masks: Any, fpr_limit: float = 0.3, *, _checked: bool = False) -> float:
    """Official MVTec AD AUPRO: exact curve, integrated to ``fpr_limit``, divided by it."""
    m, g = (maps, masks) if _checked else check_maps_masks(maps, masks)
    if not g.any():
        return undefined("AUPRO (mvtec)", "the masks contain no anomalous region")
    if g.all():
        return undefined("AUPRO (mvtec)", "the masks contain no normal pixel")
    fprs, pros = _mvtec_curve(m, g, fpr_limit)
    return float(area_to_limit(fprs, pros, fpr_limit) / fpr_limit)
