"""Small builders shared by the model tests (tiny random backbones, fast on 2 CPU cores)."""

from __future__ import annotations

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
