"""Building the detector a run needs from (profile, preset, overrides, seed, checkpoint).

The engine never interprets the preset: it hands it to the model package and treats the result as
an opaque `nn.Module` honouring the Model API (encode_image, predict, compute_losses, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from glocal_lib.engine.profiles import Profile

AUTO = "auto"


def resolve_variant(preset: str, variant: str | None, train_dataset: str | None = None,
                    eval_dataset: str | None = None) -> str | None:
    """'auto' -> the preset's variant for this (train, eval) pair (e.g. the training set), else as given."""
    if variant != AUTO:
        return variant
    from glocal_lib.config import variant_for

    return variant_for(preset, train_dataset=train_dataset, eval_dataset=eval_dataset)


def model_config(preset: str, overrides: dict[str, Any] | None = None, variant: str | None = None,
                 precision: str | None = None, device: str | None = None) -> Any:
    """Config of a preset (+ variant, overrides); the profile's precision unless overridden.

    A preset that names its own precision (AdaCLIP's released fp16 autocast) keeps it on a CUDA device:
    that precision is the method's published GPU setting; elsewhere the profile's applies.
    """
    from glocal_lib.config import load_preset

    values = dict(overrides or {})
    on_gpu = device is not None and str(device).startswith("cuda")
    if precision is not None and "precision" not in values and not (on_gpu and _preset_precision(preset, variant)):
        values["precision"] = precision
    return load_preset(preset, variant, **values)


def _preset_precision(preset: str, variant: str | None) -> str | None:
    from glocal_lib.config import preset_info

    entry = preset_info(preset)
    values = dict(entry.get("config") or {})
    name = variant if variant is not None else entry.get("default_variant")
    if name is not None:
        values.update((entry.get("variants") or {}).get(name) or {})
    return values.get("precision")


def method_profile(profile: Profile, preset: str | None) -> Profile:
    """The profile a preset runs under: its ``profile_fields`` for this profile applied (methods.yaml).

    WinCLIP's published numbers come from its own tower and input size (ViT-B-16-plus-240 at 240
    px), not the GlocalCLIP backbone; the preset says so as data, per profile, so the smoke profile's
    tiny random tower stays. Unknown fields fail like any profile override.
    """
    if preset is None:
        return profile
    from glocal_lib.config import preset_info

    fields = (preset_info(preset).get("profile_fields") or {}).get(profile.name)
    return profile.replace(**fields) if fields else profile


def config_from_dict(d: dict[str, Any]) -> Any:
    """The method config a run recorded (its method's config class)."""
    from glocal_lib.config import config_from_dict as from_dict

    return from_dict(d)


def build_detector(cfg: Any, profile: Profile, *, seed: int, checkpoint: str | Path | None = None) -> Any:
    """The model on the profile's device, in eval mode.

    `seed` seeds the random backbone (smoke) and the initial prompts, as build_model defines it.
    A checkpoint's prompt tensors are loaded into a model built from `cfg` (not the checkpoint's
    own config), so evaluation-time switches such as precision can differ from training. The
    checkpoint is ours or an official ``{"prompt_learner": ...}`` file (e.g. released AnomalyCLIP).
    The frozen tower is shared by every detector of this process with the same backbone, weights,
    seed and device (built once, not once per run).
    """
    from glocal_lib.model import build_model, load_prompts

    torch.manual_seed(seed)
    model = build_model(cfg, backbone=profile.backbone, weights=profile.weights, device=profile.device,
                        image_size=profile.image_size, seed=seed, backbone_seed=backbone_seed(profile, seed),
                        share_backbone=True)
    if checkpoint is not None:
        load_prompts(model, checkpoint)
    model.vision.fused_attention = bool(profile.fused_attention)  # a kernel choice, part of the cache key
    model.eval()
    return model


def backbone_seed(profile: Profile, seed: int) -> int | None:
    """Seed of the random backbone: the profile's fixed one, else the run seed; None with real weights."""
    if profile.weights is not None:
        return None
    return profile.backbone_seed if profile.backbone_seed is not None else seed


def prompt_names(model: Any, count: int) -> list[str]:
    """Names of the rows of model.text_embeddings(), from the model when it says, else by convention."""
    names = getattr(model, "prompt_names", None)
    if callable(names):
        names = names()
    if names is not None and len(list(names)) == count:
        return [str(n) for n in names]
    if count == 4:
        return ["global_normal", "global_anomaly", "local_normal", "local_anomaly"]
    if count == 2:
        return ["normal", "anomaly"]
    return [f"prompt_{i}" for i in range(count)]


def effective_sigma(cfg: Any, profile: Profile, sigma: float | None = None) -> float:
    """Smoothing sigma: explicit > profile > the preset's sigma scaled to the image size (518 px basis),
    so a small smoke image is smoothed like the published sigma 8 at 518 px."""
    if sigma is not None:
        return float(sigma)
    if profile.sigma is not None:
        return float(profile.sigma)
    return float(cfg.sigma) * profile.image_size / 518.0
