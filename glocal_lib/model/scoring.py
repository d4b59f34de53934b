"""Image scores, per-layer anomaly maps and the scipy-equivalent Gaussian smoothing, in torch.

Everything works on batches and runs on the GPU. Text pairs are always ordered (normal, anomaly).
Spec section 4; the released test script's image score is only right for batch size 1 (spec 9.11),
here every image gets its own score.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DEFAULT_TEMPERATURE = 0.07


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def image_logits(
    global_emb: torch.Tensor, text_pair: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE
) -> torch.Tensor:
    """Cosine similarities to (normal, anomaly) over the temperature: (B, D), (2, D) -> (B, 2)."""
    return _normalise(global_emb) @ _normalise(text_pair).transpose(0, 1) / temperature


def image_scores(
    global_emb: torch.Tensor, text_pair: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE
) -> torch.Tensor:
    """Anomaly probability per image (B,)."""
    return image_logits(global_emb, text_pair, temperature).softmax(dim=-1)[:, 1]


def patch_probabilities(
    patch: torch.Tensor, text_pair: torch.Tensor, image_size: int, temperature: float = DEFAULT_TEMPERATURE
) -> torch.Tensor:
    """(normal, anomaly) probabilities per patch, bilinearly upsampled to the image.

    patch (B, nL, N, D) with N a square grid -> (B, nL, 2, S, S); the losses train on these.
    """
    b, n_layers, n, _ = patch.shape
    grid = math.isqrt(n)
    if grid * grid != n:
        raise ValueError(f"{n} patch tokens do not form a square grid")
    probs = (_normalise(patch) @ _normalise(text_pair).transpose(0, 1) / temperature).softmax(dim=-1)
    probs = probs.reshape(b * n_layers, grid, grid, 2).permute(0, 3, 1, 2)
    probs = F.interpolate(probs, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return probs.reshape(b, n_layers, 2, image_size, image_size)


def maps_from_probabilities(probs: torch.Tensor) -> torch.Tensor:
    """(p_anomaly + 1 - p_normal) / 2 per layer: (B, nL, 2, S, S) -> (B, nL, S, S)."""
    return (probs[:, :, 1] + 1 - probs[:, :, 0]) / 2


def layer_maps(
    patch: torch.Tensor, text_pair: torch.Tensor, image_size: int, temperature: float = DEFAULT_TEMPERATURE
) -> torch.Tensor:
    """Per-layer anomaly maps (B, nL, S, S) from patch embeddings and the local text pair."""
    return maps_from_probabilities(patch_probabilities(patch, text_pair, image_size, temperature))


def anomaly_map(maps: torch.Tensor) -> torch.Tensor:
    """Sum over layers (the released code sums, range 0..n_layers): (B, nL, S, S) -> (B, S, S)."""
    return maps.sum(dim=1)


def gaussian_kernel1d(sigma: float, radius: int, device: torch.device | str | None = None) -> torch.Tensor:
    """scipy's normalised Gaussian taps exp(-x^2 / (2 sigma^2)), x = -radius..radius (float64)."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    phi = torch.exp(-0.5 / (sigma * sigma) * x * x)
    return phi / phi.sum()


def reflect_indices(n: int, radius: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Source index of every position in -radius..n+radius-1 under scipy's 'reflect' mode
    (d c b a | a b c d | d c b a), repeating as often as needed when radius > n."""
    i = torch.arange(-radius, n + radius, device=device)
    m = torch.remainder(i, 2 * n)
    return torch.where(m >= n, 2 * n - 1 - m, m)


def _blur_last_axis(x: torch.Tensor, kernel: torch.Tensor, radius: int) -> torch.Tensor:
    n = x.shape[-1]
    padded = x.index_select(-1, reflect_indices(n, radius, x.device))
    lead = padded.shape[:-1]
    out = F.conv1d(padded.reshape(-1, 1, n + 2 * radius), kernel.view(1, 1, -1))
    return out.reshape(*lead, n)


def gaussian_blur(maps: torch.Tensor, sigma: float | None, truncate: float = 4.0) -> torch.Tensor:
    """Per-image 2-D Gaussian filter equal to ``scipy.ndimage.gaussian_filter(map, sigma)``.

    maps (B, H, W) or (H, W); radius int(truncate * sigma + 0.5), reflect border, rows then columns
    as scipy does. Computed in at least float32; returned in the input dtype. sigma None/0: unchanged.
    """
    if sigma is None or sigma <= 0:
        return maps
    squeeze = maps.ndim == 2
    x = maps.unsqueeze(0) if squeeze else maps
    work_dtype = torch.promote_types(x.dtype, torch.float32)
    x = x.to(work_dtype)
    radius = int(truncate * float(sigma) + 0.5)
    kernel = gaussian_kernel1d(float(sigma), radius, x.device).to(work_dtype)
    with torch.autocast(device_type=x.device.type, enabled=False):  # keep the taps in full precision
        x = _blur_last_axis(x.transpose(-1, -2), kernel, radius).transpose(-1, -2)  # axis 0 first, as scipy
        x = _blur_last_axis(x, kernel, radius)
    x = x.to(maps.dtype)
    return x.squeeze(0) if squeeze else x
