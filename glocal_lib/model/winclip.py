"""WinCLIP (Jeong et al., CVPR 2023), zero-shot, as the published comparison numbers were made.

GlocalCLIP's Table 1 (and AnomalyCLIP's) WinCLIP numbers come from the AnomalyCLIP authors'
re-implementation, zqhang/Accurate-WinCLIP-pytorch (``reproduce_WinCLIP.py``, zero-shot, ViT-B-16-
plus-240 with open_clip's ``laion400m_e31`` weights at 240 px); anomalib's ``WinClipModel`` makes the
same choices. The defaults here are that code's ("released"); our earlier reading of the paper text
stays available as named ``ModelConfig`` switches (preset ``winclip-paper``):

- prompts (``ensemble``): released = 7 normal x 4 anomalous state words x the 21 templates listed
  there, its duplicated "a jpeg corrupted photo of the {}." included (147 + 84 sentences);
  paper = 7 x 5 states x 35 templates (CLIP's ImageNet-style list).
- text feature of a state (``ensemble_mean``): released = plain mean of the UNnormalised sentence
  embeddings, normalised afterwards; normalized = normalise each sentence first.
- temperature 0.07 (released) vs CLIP's 0.01; no Gaussian smoothing (sigma 0) vs sigma 4.
- scales (``scale_fusion``): released = harmonic mean, per patch, of the full-image score and every
  scale's map, on the patch grid, then bilinear upsampling; mean = arithmetic mean of the scale maps.

Shared by both: a window of k x k patches (stride 1) is the frozen tower run on CLS + only the
window's tokens (the others are dropped after the positional embedding, each kept token with its own
position; ln_pre is per token), embedded as ln_post(CLS) @ proj; its score is the softmax over
(normal, anomalous) cosine similarities / temperature; a patch's score at scale k is the harmonic
mean of the scores of the windows covering it. Image score: the full-image CLS embedding (with
ln_post) scored the same way.

Window embeddings are stored like patch features, (B, n_scales, N, D): the window with top-left
patch (r, c) sits at row r*G + c, rows of positions where no window starts are zero. That keeps them
in the same cacheable ``VisionFeatures`` container as every other method.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# zqhang/Accurate-WinCLIP-pytorch reproduce_WinCLIP.py (prompt_order); the duplicate is theirs.
NORMAL_STATES = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw",
                 "{} without defect", "{} without damage")
ANOMALY_STATES = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")
TEMPLATES = (
    "a cropped photo of the {}.", "a close-up photo of a {}.", "a close-up photo of the {}.",
    "a bright photo of a {}.", "a bright photo of the {}.", "a dark photo of the {}.",
    "a dark photo of a {}.", "a jpeg corrupted photo of the {}.", "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.", "a blurry photo of a {}.", "a photo of a {}.", "a photo of the {}.",
    "a photo of a small {}.", "a photo of the small {}.", "a photo of a large {}.",
    "a photo of the large {}.", "a photo of the {} for visual inspection.",
    "a photo of a {} for visual inspection.", "a photo of the {} for anomaly detection.",
    "a photo of a {} for anomaly detection.",
)
# Our earlier reading of the paper: one more anomalous state, CLIP's 35 ImageNet-style templates.
PAPER_ANOMALY_STATES = ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")
PAPER_TEMPLATES = (
    "a bad photo of a {}.", "a low resolution photo of the {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a bright photo of a {}.", "a dark photo of the {}.",
    "a photo of my {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a photo of one {}.", "a close-up photo of the {}.", "a photo of a {}.",
    "a low resolution photo of a {}.", "a photo of a large {}.", "a blurry photo of a {}.",
    "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a photo of the small {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "a dark photo of a {}.",
    "a photo of a cool {}.", "a photo of a small {}.", "there is a {} in the scene.",
    "there is the {} in the scene.", "this is a {} in the scene.", "this is the {} in the scene.",
    "this is one {} in the scene.",
)
# ensemble name -> (normal states, anomalous states, templates)
ENSEMBLES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "released": (NORMAL_STATES, ANOMALY_STATES, TEMPLATES),
    "paper": (NORMAL_STATES, PAPER_ANOMALY_STATES, PAPER_TEMPLATES),
}


def ensemble_sentences(class_name: str, ensemble: str = "released") -> tuple[list[str], list[str]]:
    """(normal sentences, anomalous sentences): every template around every state, state-major."""
    normal, anomalous, templates = ENSEMBLES[ensemble]
    return ([t.format(s.format(class_name)) for s in normal for t in templates],
            [t.format(s.format(class_name)) for s in anomalous for t in templates])


def window_starts(grid: int, k: int) -> torch.Tensor:
    """Row-major indices r*grid + c of every window's top-left patch (stride 1)."""
    r = torch.arange(grid - k + 1)
    return (r[:, None] * grid + r[None, :]).flatten()


def window_members(grid: int, k: int) -> torch.Tensor:
    """(n_windows, k*k) patch indices of each window, windows in ``window_starts`` order."""
    offsets = (torch.arange(k)[:, None] * grid + torch.arange(k)[None, :]).flatten()
    return window_starts(grid, k)[:, None] + offsets[None, :]


def encode_windows(tokens: torch.Tensor, visual: nn.Module, grid: int, scales: Sequence[int],
                   chunk: int = 2048) -> torch.Tensor:
    """Window embeddings from ln_pre'd tokens (B, 1 + G*G, W) -> (B, n_scales, G*G, D), top-left rows."""
    b = tokens.shape[0]
    out = tokens.new_zeros(b, len(scales), grid * grid, visual.proj.shape[1])
    batch_first = getattr(visual.transformer, "batch_first", True)
    for si, k in enumerate(scales):
        members = window_members(grid, k).to(tokens.device)  # (nW, k*k)
        starts = window_starts(grid, k).to(tokens.device)
        n_w = members.shape[0]
        seq = torch.cat([tokens[:, None, :1].expand(b, n_w, 1, -1), tokens[:, 1:][:, members]], dim=2)
        seq = seq.reshape(b * n_w, 1 + k * k, -1)
        cls = []
        for part in seq.split(chunk):
            x = part
            for block in visual.transformer.resblocks:
                x = block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)
            cls.append(x[:, 0])
        emb = visual.ln_post(torch.cat(cls)) @ visual.proj
        out[:, si, starts] = emb.reshape(b, n_w, -1).to(out.dtype)
    return out


def window_score_maps(windows: torch.Tensor, text_pair: torch.Tensor, grid: int, scales: Sequence[int],
                      temperature: float) -> torch.Tensor:
    """Per-patch scores (B, n_scales, G, G): harmonic mean over the windows covering each patch."""
    t = text_pair / text_pair.norm(dim=-1, keepdim=True)
    maps = []
    for si, k in enumerate(scales):
        starts = window_starts(grid, k).to(windows.device)
        w = windows[:, si, starts]
        w = w / w.norm(dim=-1, keepdim=True)
        score = (w @ t.T / temperature).softmax(-1)[..., 1]  # (B, nW)
        n = grid - k + 1
        inv = (1.0 / score).reshape(-1, 1, n, n)
        ones = torch.ones_like(inv)
        box = torch.ones(1, 1, k, k, device=windows.device, dtype=inv.dtype)
        # a patch (i, j) is covered by windows starting in [i-k+1, i] x [j-k+1, j]: full conv
        inv_sum = F.conv2d(inv, box, padding=k - 1)
        count = F.conv2d(ones, box, padding=k - 1)
        maps.append((count / inv_sum).reshape(-1, grid, grid))
    return torch.stack(maps, dim=1)


def fuse_scales(image_scores: torch.Tensor, scale_maps: torch.Tensor, rule: str = "harmonic") -> torch.Tensor:
    """One (B, G, G) map from the per-scale maps (B, n_scales, G, G) and the image scores (B,).

    harmonic (released): (n+1) / (1/z + sum_k 1/m_k), the full image counting as one more scale;
    0 where a score is 0 (the released nan_to_num). mean: the scale maps' arithmetic mean.
    """
    if rule == "mean":
        return scale_maps.mean(dim=1)
    inv = (1.0 / scale_maps).sum(dim=1) + (1.0 / image_scores)[:, None, None]
    return torch.nan_to_num((scale_maps.shape[1] + 1) / inv, nan=0.0, posinf=0.0, neginf=0.0)
