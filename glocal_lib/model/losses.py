"""Training losses (spec 5) with the released code's arithmetic.

- focal: inputs are already probabilities (B, 2, H, W); the one-hot target is clamped to
  [1e-5, 1 - 1e-5], pt = sum(onehot * p) + 1e-5, loss = mean(-(1 - pt)^gamma * log pt), alpha 1.
- dice: per image 1 - (2 sum(p t) + 1) / (sum p + sum t + 1), averaged over images.
- triplet: mean(d(a, p)^2 + max(0, margin - d(a, n))^2) with torch.pairwise_distance
  (d(a, b) = ||a - b + 1e-6||); with margin 0 the push-away term is identically zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

SMOOTH = 1e-5  # the released focal loss's clamp / additive constant


def focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               smooth: float = SMOOTH) -> torch.Tensor:
    """Focal loss on class probabilities ``probs`` (B, C, H, W) and integer mask ``target`` (B, H, W)."""
    num_class = probs.shape[1]
    p = probs.movedim(1, -1).reshape(-1, num_class)
    idx = target.reshape(-1).long()
    one_hot = F.one_hot(idx, num_class).to(p.dtype)
    one_hot = one_hot.clamp(smooth / (num_class - 1), 1.0 - smooth)
    pt = (one_hot * p).sum(dim=1) + smooth
    return (-((1.0 - pt) ** gamma) * pt.log()).mean()


def dice_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary dice on one probability channel ``probs`` (B, H, W) vs ``target`` (B, H, W), smooth 1."""
    n = target.shape[0]
    p = probs.reshape(n, -1)
    t = target.reshape(n, -1).to(p.dtype)
    dice = (2.0 * (p * t).sum(1) + 1.0) / (p.sum(1) + t.sum(1) + 1.0)
    return 1.0 - dice.sum() / n


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                 margin: float = 0.0) -> torch.Tensor:
    """mean(d(a,p)^2 + clamp(margin - d(a,n), 0)^2) with torch.pairwise_distance semantics."""
    pos = torch.pairwise_distance(anchor, positive, keepdim=True)
    neg = torch.pairwise_distance(anchor, negative, keepdim=True)
    return torch.mean(pos**2 + torch.clamp(margin - neg, min=0.0) ** 2)


def gcl_loss(global_pair: torch.Tensor, local_pair: torch.Tensor, margin: float = 0.0,
             anchor: str = "global") -> torch.Tensor:
    """Glocal contrastive loss on normalised text embeddings (2, D) each, order (normal, anomaly).

    anchor "global" (released): T(g_n, l_n, l_a) + T(g_a, l_a, l_n);
    anchor "local": T(l_n, g_n, g_a) + T(l_a, g_a, g_n).
    """
    a, o = (global_pair, local_pair) if anchor == "global" else (local_pair, global_pair)
    return (triplet_loss(a[0:1], o[0:1], o[1:2], margin)
            + triplet_loss(a[1:2], o[1:2], o[0:1], margin))


def global_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Image-level cross-entropy on (B, 2) logits already divided by the temperature."""
    return F.cross_entropy(logits, labels.long().to(logits.device))


def local_losses(layer_probs: Sequence[torch.Tensor] | torch.Tensor, masks: torch.Tensor,
                 gamma: float = 2.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local loss over layers; ``layer_probs`` (B, nL, 2, H, W) or a list of (B, 2, H, W).

    Returns (local, focal_sum, dice_sum). ``local`` accumulates focal, dice(anomaly),
    dice(normal) layer after layer, in the released code's order of float additions. A layer given
    as the very same tensor object as an earlier one (aliased layers) reuses that layer's terms:
    identical inputs give identical terms, so this is exact and saves the repeated work.
    """
    if isinstance(layer_probs, torch.Tensor):
        layer_probs = list(layer_probs.unbind(dim=1))
    target = masks.to(layer_probs[0].dtype)
    local = layer_probs[0].new_zeros(())
    focal = layer_probs[0].new_zeros(())
    dice = layer_probs[0].new_zeros(())
    seen: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    for probs in layer_probs:
        if id(probs) not in seen:
            seen[id(probs)] = (focal_loss(probs, target, gamma), dice_loss(probs[:, 1], target),
                               dice_loss(probs[:, 0], 1.0 - target))
        f, d_anomaly, d_normal = seen[id(probs)]
        local = local + f + d_anomaly + d_normal
        focal = focal + f
        dice = dice + d_anomaly + d_normal
    return local, focal, dice
