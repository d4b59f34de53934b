"""Input checks shared by every metric, and the one way an undefined metric is reported.

Metrics are computed on arrays that come from long evaluation runs; a NaN in a map or a mask that
was resized without binarising should fail loudly here, with the fix in the message, rather than
turn into a plausible-looking number in a table.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from glocal_lib.errors import MetricInputError


class UndefinedMetricWarning(UserWarning):
    """A metric is mathematically undefined for these inputs and was set to NaN (message says why)."""


def undefined(metric: str, reason: str) -> float:
    """Warn that ``metric`` is undefined and return NaN: the documented value, never a silent 0."""
    warnings.warn(f"{metric} is undefined ({reason}); returning NaN", UndefinedMetricWarning, stacklevel=3)
    return float("nan")


def _finite_float(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype == np.float64 or a.dtype == np.float32:
        out = a
    elif a.dtype.kind in "fiub":
        # float16 / integer / bool scores: compare in float32 (exact for the usual value ranges).
        out = a.astype(np.float32)
    else:
        raise MetricInputError(f"{what} has dtype {a.dtype}; pass a real-valued numeric array")
    if not np.isfinite(out).all():
        bad = int(out.size - np.count_nonzero(np.isfinite(out)))
        raise MetricInputError(
            f"{what} contains {bad} NaN/inf value(s); fix the model output (or replace them) "
            "before computing metrics"
        )
    return out


def _binary(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype == bool:
        return a
    if a.dtype.kind not in "fiub":
        raise MetricInputError(f"{what} has dtype {a.dtype}; pass 0/1 values")
    is_one = a == 1
    if not np.logical_or(is_one, a == 0).all():
        raise MetricInputError(
            f"{what} contains values other than 0 and 1; binarise first "
            "(the released code uses mask > 0.5 -> 1, else 0)"
        )
    return is_one


def to_numpy(x: Any) -> np.ndarray:
    """Arrays, lists or torch tensors (any device) as a numpy array, without copying when possible."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def check_scores_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return (finite float scores, bool labels), both 1-D, or raise MetricInputError."""
    s = to_numpy(scores)
    y = to_numpy(labels)
    if s.size == 0:
        raise MetricInputError("scores are empty; there is nothing to evaluate")
    if s.shape != y.shape:
        raise MetricInputError(
            f"scores have shape {s.shape} but labels have shape {y.shape}; they must match"
        )
    return _finite_float(s.ravel(), "scores"), _binary(y.ravel(), "labels")


def _squeeze_channel(a: np.ndarray) -> np.ndarray:
    # (N, 1, H, W) as the released code stores them -> (N, H, W), like its squeeze(1).
    return a[:, 0] if a.ndim == 4 and a.shape[1] == 1 else a


def check_maps_masks(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return (finite float maps (N,H,W) C-contiguous, bool masks (N,H,W)) or raise MetricInputError.

    float32 and float64 maps keep their dtype (the released threshold comparisons happen in it);
    other numeric dtypes are converted to float32.
    """
    m = _squeeze_channel(to_numpy(maps))
    g = _squeeze_channel(to_numpy(masks))
    if m.size == 0:
        raise MetricInputError("anomaly maps are empty; there is nothing to evaluate")
    if m.ndim != 3:
        raise MetricInputError(f"anomaly maps must have shape (N, H, W) or (N, 1, H, W), got {m.shape}")
    if m.shape != g.shape:
        raise MetricInputError(
            f"anomaly maps have shape {m.shape} but masks have shape {g.shape}; resize the masks "
            "(nearest) or the maps to the same size first"
        )
    return np.ascontiguousarray(_finite_float(m, "anomaly maps")), np.ascontiguousarray(_binary(g, "masks"))
