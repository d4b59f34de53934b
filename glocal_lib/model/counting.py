"""Trainable-parameter counts of a method at a full-size architecture, without its weights.

Efficiency tables (ViP2-CLIP's Table 3) print the parameters each method trains on ViT-L/14@336;
a smoke run's tiny tower has other widths, so its own count says nothing. The detector is built as
usual on an open_clip CLIP created on the ``meta`` device (shapes only: no memory, no weights, well
under a second), so the count comes from the same modules that train, not from a separate formula.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

FULL_SIZE_BACKBONE = "ViT-L-14-336-quickgelu"
FULL_SIZE_IMAGE = 518


@dataclass(frozen=True)
class ParameterCount:
    """optimised: what ``prompt_parameters()`` hands the optimiser; modules: every parameter of the
    trained modules (``prompts`` and ``deep``), including parts no loss reaches (AnomalyCLIP's unused
    projection layers), which is how the ViP2-CLIP paper counts AnomalyCLIP."""

    optimised: int
    modules: int


def _numel(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def full_size_count(cfg: Any, backbone: str = FULL_SIZE_BACKBONE, image_size: int = FULL_SIZE_IMAGE) -> ParameterCount:
    """The trainable parameters of ``cfg``'s detector on ``backbone`` at ``image_size`` (meta device)."""
    import open_clip

    from ..config import detector_class
    from .backbone import register_model_configs, set_activation

    register_model_configs()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip says no pretrained weights were loaded: intended
    try:
        with torch.device("meta"):  # initialisers run on meta tensors too: no CPU work (else ~4 s per ViT-L)
            clip = open_clip.create_model(backbone, pretrained=None, device="meta")
    finally:
        logging.disable(previous)
    if getattr(cfg, "activation", None):
        set_activation(clip, cfg.activation)
    model = detector_class(cfg)(clip, cfg, backbone=backbone, image_size=image_size)
    optimised = sum(p.numel() for p in model.prompt_parameters())
    return ParameterCount(optimised=optimised, modules=_numel(model.prompts) + _numel(getattr(model, "deep", None)))
