"""``build_model``: the one entry point that turns (config, backbone, weights, checkpoint) into a model.

The Model API, what the engine relies on (every method's detector implements it; the engine never
asks which method it runs):

- built as ``Detector(clip, cfg, backbone=, weights=, image_size=, seed=, backbone_seed=)`` on a
  frozen open_clip CLIP; its config class (``glocal_lib.config.register_config``) names it;
- attributes ``cfg``, ``clip``, ``backbone_name``, ``weights``, ``seed``, ``backbone_seed``,
  ``image_size``, ``prompt_names``; ``prompts``: an ``nn.Module`` holding every trained tensor
  except ``deep`` (None or a module), which is what our checkpoints store;
- ``encode_image(images) -> VisionFeatures`` (the batch the feature cache stores),
  ``vision_signature()`` (what determines it: the cache key), ``predict(feats_or_images, sigma=,
  class_names=) -> Prediction``, ``compute_losses(feats, labels, masks, class_names=)`` (a dict with
  ``total``), ``prompt_parameters()``, ``text_embeddings()`` (logged per epoch for the UMAP figure),
  ``autocast()``, and ``train(mode)`` that keeps the frozen tower in eval mode;
- optional ``loss_names``: the terms of compute_losses written to losses.csv (and drawn in notebook
  01), default ``engine.train.LOSS_KEYS``; a method with other terms (KAnoCLIP's "kd") declares its own.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from ..config import MethodConfig, config_from_dict, detector_class, load_preset
from ..errors import ConfigError, WeightsError
from .backbone import load_clip, load_clip_shared
from .checkpoint import (
    check_backbone,
    checkpoint_kind,
    import_official,
    infer_official_config,
    load_prompt_state,
    load_torch_file,
    official_flavour,
)

OFFICIAL_PRESETS = {"glocalclip": "glocalclip-released", "anomalyclip": "anomalyclip",
                    "vip2clip": "vip2clip-released", "adaclip": "adaclip-released"}
# fields that change how a trained model is evaluated, not what its checkpoint holds
INFERENCE_ONLY_FIELDS = ("precision", "sigma", "map_reduction")


def build_model(
    cfg: MethodConfig | str | None = None,
    backbone: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    image_size: int | None = None,
    seed: int | None = None,
    backbone_seed: int | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
    allow_download: bool = False,
    allow_other_backbone: bool = False,
    share_backbone: bool = False,
) -> nn.Module:
    """Build the detector of ``cfg``'s method (GlocalDetector for the methods of ModelConfig).

    cfg: a method config, a preset name, or None (taken from the checkpoint; else the
        ``glocalclip-released`` preset).
    backbone / weights: see ``backbone.load_clip`` (weights None = random init seeded with ``seed``).
    checkpoint: our checkpoint (carries config, backbone, weights hint and image size: enough on its
        own) or an official ``{"prompt_learner": ...}`` file (config inferred from its shapes when
        ``cfg`` is None; a given ``cfg`` must agree with it).
    image_size: input size S (None: the checkpoint's, else the backbone's native size).
    seed: seeds the initial prompt vectors (None: the checkpoint's seed, else 0).
    backbone_seed: seeds the random backbone when weights is None (None: the checkpoint's, else
        ``seed``). Pass a fixed value (e.g. 0) so that a prompt-seed sweep keeps the same stand-in
        "pretrained" CLIP.
    allow_other_backbone: with our checkpoint, accept a backbone / weights / image size other than
        the ones it was trained with (refused by default: shapes may fit while the numbers are wrong).
    share_backbone: reuse this process's frozen tower for the same (backbone, weights, seed,
        device) instead of building it again (the engine builds one detector per run).
    """
    if isinstance(cfg, str):
        cfg = load_preset(cfg)
    ckpt: Any = None
    kind = None
    if checkpoint is not None:
        ckpt = load_torch_file(checkpoint)
        kind = checkpoint_kind(ckpt)
        if kind == "unknown":
            raise WeightsError(f"{checkpoint}: neither a glocal_lib checkpoint nor an official "
                              "{'prompt_learner': ...} file")
    if kind == "ours":
        try:
            saved = config_from_dict(ckpt["config"])
        except ConfigError as exc:
            raise ConfigError(f"{checkpoint}: its saved config is not valid for this version: {exc}") from exc
        if cfg is not None:
            diff = sorted(k for k, v in cfg.to_dict().items() if saved.to_dict().get(k) != v)
            if set(diff) - set(INFERENCE_ONLY_FIELDS):
                raise ConfigError(f"{checkpoint} was saved with a different config (fields {diff}); "
                                  "pass cfg=None to use the checkpoint's, or change only "
                                  f"{list(INFERENCE_ONLY_FIELDS)}")
        cfg = cfg if cfg is not None else saved
        if not allow_other_backbone:
            check_backbone(ckpt, str(checkpoint), backbone, weights, image_size)
        backbone = backbone or ckpt.get("backbone")
        weights = weights if weights is not None else ckpt.get("weights")
        image_size = image_size or ckpt.get("image_size")
        seed = seed if seed is not None else ckpt.get("seed")
        backbone_seed = backbone_seed if backbone_seed is not None else ckpt.get("backbone_seed")
    elif kind == "official":
        implied = infer_official_config(ckpt.get("prompt_learner", ckpt), str(checkpoint))
        if cfg is None:
            cfg = load_preset(OFFICIAL_PRESETS[implied["method"]], **implied)
    if cfg is None:
        cfg = load_preset("glocalclip-released")
    seed = 0 if seed is None else int(seed)
    backbone_seed = seed if backbone_seed is None else int(backbone_seed)
    if kind == "official":
        official_flavour(cfg)  # clear ConfigError before loading a large backbone
    loader = load_clip_shared if share_backbone else load_clip
    # a config's ``activation`` field (AdaCLIP: exact GELU on OpenAI weights) is an explicit loader choice
    clip = loader(backbone, weights, device=device, seed=backbone_seed, weights_dir=weights_dir,
                  allow_download=allow_download, activation=getattr(cfg, "activation", None))
    model = detector_class(cfg)(clip, cfg, backbone=backbone, image_size=image_size, seed=seed,
                           backbone_seed=backbone_seed, weights=None if weights is None else str(weights))
    if kind == "ours":
        load_prompt_state(model, ckpt, str(checkpoint))
    elif kind == "official":
        import_official(model, ckpt, str(checkpoint))
    return model.to(device)
