"""Slow, obviously-correct metric implementations that the fast ones are checked and timed against.

- ``aupro_cflow_reference``: the released ``cal_pro_score`` loop structure (per threshold, per
  image, per region, relabelling every mask with skimage at every threshold), with the numpy-1.24
  arithmetic it ran under (threshold grid, float32 comparison, float32 FPR denominator) written
  out so that it gives the released number under numpy 2.
- ``aupro_mvtec_global_sort``: the MVTec AD evaluation algorithm's structure (argsort of every
  pixel, per-pixel FPR/PRO increments, cumulative sums), FPRs kept in float64.
- ``aupro_mvtec_bruteforce``: the official definition evaluated directly at every distinct score
  with boolean masks, then integrated segment by segment; quadratic, for small inputs only.

Written for this package from the published definitions; none of it is used by the library.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np
from skimage import measure


def aupro_cflow_reference(
    maps: np.ndarray, masks: np.ndarray, max_step: int = 200, expect_fpr: float = 0.3
) -> float:
    """Released-style AUPRO loop; maps float32 (N,H,W), masks 0/1 (N,H,W)."""
    amaps = np.asarray(maps)
    masks = np.asarray(masks).astype(np.float32)
    binary = np.zeros(amaps.shape, dtype=bool)
    lo, hi = amaps.min(), amaps.max()
    # numpy 1.24: float32 scalar / python int -> float64 step; np.arange took its length from the
    # float32 scalars' difference and filled start + i * ((start + step) - start)
    delta = np.float64(hi - lo) / max_step
    n = int(np.ceil(np.float64(hi - lo) / delta))
    first = float(lo)
    second = first + float(delta)
    thresholds = [first, second] + [first + i * (second - first) for i in range(2, n)]
    inverse = np.float32(1) - masks
    # numpy 1.24 summed float32 in buffers of 8192 elements, accumulated one after another
    flat_inverse = inverse.ravel()
    inverse_sum = np.float32(0)
    for i in range(0, flat_inverse.size, 8192):
        inverse_sum = np.float32(inverse_sum + flat_inverse[i : i + 8192].sum())
    pros, fprs = [], []
    for th in thresholds:
        th_cmp = amaps.dtype.type(th)  # numpy 1.24 compared a float32 array with a float64 scalar in float32
        binary[amaps <= th_cmp], binary[amaps > th_cmp] = False, True
        pro = []
        for binary_map, mask in zip(binary, masks):
            for region in measure.regionprops(measure.label(mask.astype(np.uint8))):
                tp_pixels = binary_map[region.coords[:, 0], region.coords[:, 1]].sum()
                pro.append(tp_pixels / region.area)
        fp_pixels = np.logical_and(inverse, binary).sum()
        fprs.append(fp_pixels / inverse_sum)
        pros.append(np.array(pro).mean())
    pros_a, fprs_a = np.array(pros), np.array(fprs)
    keep = fprs_a < expect_fpr
    f = fprs_a[keep]
    f = (f - f.min()) / (f.max() - f.min())
    y = pros_a[keep]
    dx = np.diff(f)
    direction = -1.0 if np.any(dx < 0) else 1.0
    return float(direction * np.sum(dx * (y[1:] + y[:-1]) / 2.0))


def _regions(masks: np.ndarray) -> list[list[np.ndarray]]:
    """Per image, the list of 8-connected region masks (skimage default connectivity)."""
    out = []
    for mask in np.asarray(masks):
        lab = measure.label(mask.astype(np.uint8))
        out.append([lab == k for k in range(1, lab.max() + 1)])
    return out


def _official_trapezoid(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    correction = 0.0
    if x_max not in x:
        ins = bisect_right(list(x), x_max)
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    keep = x <= x_max
    x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def aupro_mvtec_global_sort(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """MVTec AD algorithm structure: global argsort + cumulative per-pixel increments."""
    maps = np.asarray(maps)
    fp_inc = np.zeros(maps.shape, dtype=np.float64)
    pro_inc = np.zeros(maps.shape, dtype=np.float64)
    n_ok, n_regions = 0, 0
    for i, regions in enumerate(_regions(masks)):
        ok = ~np.asarray(masks[i]).astype(bool)
        n_ok += int(ok.sum())
        fp_inc[i][ok] = 1.0
        for region in regions:
            pro_inc[i][region] = 1.0 / region.sum()
            n_regions += 1
    order = np.argsort(maps.ravel())[::-1]
    scores = maps.ravel()[order]
    fprs = np.cumsum(fp_inc.ravel()[order]) / n_ok
    pros = np.cumsum(pro_inc.ravel()[order]) / n_regions
    keep = np.append(np.diff(scores) != 0, True)
    fprs = np.concatenate(([0.0], np.clip(fprs[keep], None, 1.0)))
    pros = np.concatenate(([0.0], np.clip(pros[keep], None, 1.0)))
    return _official_trapezoid(fprs, pros, fpr_limit) / fpr_limit


def aupro_mvtec_bruteforce(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """The definition, point by point: at every distinct score t (descending), FPR and PRO of ``map >= t``."""
    maps = np.asarray(maps)
    normal = ~np.asarray(masks).astype(bool)
    regions = [(i, r) for i, rs in enumerate(_regions(masks)) for r in rs]
    xs, ys = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        above = maps >= t
        xs.append(float(np.sum(above & normal)) / float(np.sum(normal)))
        ys.append(float(np.mean([np.sum(above[i] & r) / np.sum(r) for i, r in regions])))
        if xs[-1] >= fpr_limit:
            break
    area = 0.0
    for x0, x1, y0, y1 in zip(xs[:-1], xs[1:], ys[:-1], ys[1:]):
        if x0 >= fpr_limit:
            break
        if x1 <= fpr_limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_at = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            area += (fpr_limit - x0) * (y0 + y_at) / 2
            break
    return area / fpr_limit
