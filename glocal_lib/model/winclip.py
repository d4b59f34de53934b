"""WinCLIP (Jeong et al., CVPR 2023), zero-shot: compositional prompt ensemble + multi-scale windows.

Text: every (state word x template) sentence is encoded; the L2-normalised embeddings are averaged
per state (normal / anomalous) and normalised again.
Vision: for each window scale k (in patches, stride 1) the frozen CLIP runs on the CLS token plus
only the k x k patch tokens of the window (tokens outside are dropped after ln_pre, each keeping its
own positional embedding); the window embedding is ln_post(CLS) @ proj. A window's anomaly score is
the softmax over (normal, anomalous) cosine similarities / temperature; a patch's score at scale k is
the harmonic mean of the scores of the windows covering it; the map is the mean over scales.
Image score: the full-image CLIP score with the ensemble prompts (zero-shot WinCLIP).

Window embeddings are stored like patch features, (B, n_scales, N, D): the window with top-left
patch (r, c) sits at row r*G + c, rows of positions where no window starts are zero. That keeps them
in the same cacheable ``VisionFeatures`` container as every other method.

This is our implementation from the paper's description (the GlocalCLIP and AnomalyCLIP authors
report WinCLIP numbers without code): the scales, temperature and state words are ``ModelConfig``
fields of the ``winclip`` preset.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NORMAL_STATES = ("{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw",
                 "{} without defect", "{} without damage")
ANOMALY_STATES = ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")
TEMPLATES = (
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


def ensemble_sentences(class_name: str, states: Sequence[str] = NORMAL_STATES + ANOMALY_STATES,
                       templates: Sequence[str] = TEMPLATES) -> list[str]:
    return [t.format(s.format(class_name)) for s in states for t in templates]


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
