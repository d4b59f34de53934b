"""Small builders shared by the model tests (tiny random backbones, fast on 2 CPU cores) and the
numpy references they compare with."""

from __future__ import annotations

import numpy as np
import torch

from glocal_lib.config import ModelConfig, load_preset
from glocal_lib.model.backbone import load_clip
from glocal_lib.model.detector import GlocalDetector

BACKBONE = "glocal-tiny-8"
IMAGE_SIZE = 28  # 2x2 patch grid: enough for every shape, fast


def tiny_clip(backbone: str = BACKBONE, seed: int = 0) -> torch.nn.Module:
    """A fresh frozen tiny random CLIP (about 0.2 s)."""
    return load_clip(backbone, seed=seed)


def small_cfg(preset: str = "glocalclip-released", **overrides) -> ModelConfig:
    """Preset with short prompts so the text tower runs fast."""
    base = {"normal_length": 3, "anomaly_length": 2, "deep_depth": 4, "deep_length": 2}
    if preset in ("clip",):
        base = {}
    if preset == "coop":
        base = {"normal_length": 3}
    if preset.startswith("anomalyclip"):
        base = {"normal_length": 3, "anomaly_length": 3, "deep_depth": 4, "deep_length": 2}
    base.update(overrides)
    return load_preset(preset, **base)


def tiny_model(cfg: ModelConfig | None = None, seed: int = 0, image_size: int = IMAGE_SIZE,
               backbone: str = BACKBONE) -> GlocalDetector:
    cfg = cfg or small_cfg()
    return GlocalDetector(tiny_clip(backbone, seed), cfg, backbone=backbone, image_size=image_size, seed=seed,
                          backbone_seed=seed)


def bilinear_resize_np(img: np.ndarray, size: int) -> np.ndarray:
    """align_corners=False bilinear resize of (C, h, w) to (C, size, size), written from the formula
    (half-pixel centres, source coordinate clamped at 0, right/bottom neighbour clamped to the edge)."""
    c, h, w = img.shape
    out = np.zeros((c, size, size))
    for y in range(size):
        sy = max((y + 0.5) * h / size - 0.5, 0.0)
        y0 = int(np.floor(sy))
        y1, ly = min(y0 + 1, h - 1), sy - y0
        for x in range(size):
            sx = max((x + 0.5) * w / size - 0.5, 0.0)
            x0 = int(np.floor(sx))
            x1, lx = min(x0 + 1, w - 1), sx - x0
            out[:, y, x] = (1 - ly) * ((1 - lx) * img[:, y0, x0] + lx * img[:, y0, x1]) + ly * (
                (1 - lx) * img[:, y1, x0] + lx * img[:, y1, x1]
            )
    return out
