"""Pixel AUROC, AP and F1-max in torch, on the device that holds the maps (a GPU evaluation keeps
its maps there instead of copying every batch to the host and sorting ~50M pixels in numpy).

Same arithmetic as ``classification.RankedScores``: positives and negatives sorted separately,
unique positive values with their counts, ``searchsorted`` for the negatives below/at each value,
AUROC as the Mann-Whitney count in int64 divided once (exact), AP as sklearn's step sum and
F1-max as the released formula, both in float64. Values equal the numpy path's (AUROC and F1-max
bit for bit; AP up to the summation order, ~1e-16).
"""

from __future__ import annotations

from typing import Any

import torch

from glocal_lib.errors import MetricInputError
from glocal_lib.metrics.inputs import undefined


def _check(maps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps, masks = maps[:, 0], masks[:, 0] if masks.ndim == 4 else masks
    if maps.numel() == 0:
        raise MetricInputError("anomaly maps are empty; there is nothing to evaluate")
    if maps.shape != masks.shape:
        raise MetricInputError(f"anomaly maps have shape {tuple(maps.shape)} but masks have shape "
                               f"{tuple(masks.shape)}; they must match")
    if not bool(torch.isfinite(maps).all()):
        raise MetricInputError("anomaly maps contain NaN or infinite values; check the model output")
    if masks.dtype != torch.bool:
        if not bool(((masks == 0) | (masks == 1)).all()):
            raise MetricInputError("masks must be binary (0/1 or bool)")
        masks = masks.bool()
    if not maps.is_floating_point() or maps.dtype in (torch.float16, torch.bfloat16):
        maps = maps.float()
    return maps.reshape(-1), masks.reshape(-1)


def pixel_classification_torch(maps: Any, masks: Any, device: str | torch.device | None = None
                               ) -> dict[str, float]:
    """pixel_auroc, pixel_ap, pixel_f1max of maps (N, H, W) against masks, computed on `device`
    (default: where `maps` is)."""
    maps_t = torch.as_tensor(maps)
    dev = torch.device(device) if device is not None else maps_t.device
    scores, labels = _check(maps_t.to(dev), torch.as_tensor(masks).to(dev))
    pos = torch.sort(scores[labels]).values
    neg = torch.sort(scores[~labels]).values
    n_pos, n_neg = int(pos.numel()), int(neg.numel())
    reason = "no positive (anomalous) sample" if n_pos == 0 else "no negative (normal) sample" if n_neg == 0 else None
    if reason is not None:
        return {"pixel_auroc": undefined("AUROC", reason), "pixel_ap": undefined("average precision", reason),
                "pixel_f1max": undefined("F1-max", reason)}
    values, counts = torch.unique_consecutive(pos, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    tp = (n_pos - starts).double()
    neg_lt = torch.searchsorted(neg, values, right=False)
    neg_le = torch.searchsorted(neg, values, right=True)
    twice_u = int((counts.long() * (neg_lt + neg_le).long()).sum().item())
    precision = tp / (tp + (n_neg - neg_lt).double())
    recall = tp / n_pos
    return {
        "pixel_auroc": twice_u / (2 * n_pos * n_neg),
        "pixel_ap": float((counts.double() / n_pos * precision).sum().item()),
        "pixel_f1max": float((2 * precision * recall / (precision + recall)).max().item()),
    }
