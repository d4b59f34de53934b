"""GlocalDetector: frozen CLIP + dual-path vision encoder + prompt learner + deep text prompts.

A plain ``nn.Module`` with no training logic: it turns images into features, features and prompts
into scores, maps and loss components. Loops, files, caching and optimisers live in the engine.
The same class runs GlocalCLIP, AnomalyCLIP, CoOp and zero-shot CLIP; ``ModelConfig`` says which.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from . import scoring
from .backbone import SHARED_FLAG, feature_layers_for, vv_start_layer_for
from .losses import gcl_loss, global_loss, local_losses
from .prompts import FixedPrompts, LearnedPrompts, PromptEnsemble, build_prompt_learner
from .text import DeepTextPrompts, encode_prompts
from .vision import DualPathVisionEncoder
from .winclip import encode_windows, fuse_scales, window_score_maps

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: str | torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for 'bf16'/'fp16', a no-op for 'fp32' (the released code's precision).

    The one definition: the detector, the feature cache and evaluation all enter it.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=_AUTOCAST_DTYPES[precision])


@dataclass
class VisionFeatures:
    """What the frozen vision tower gives per image; what the feature cache stores.

    global_emb (B, D) raw; patch (B, n_layers, N, D) raw (after ln_post @ proj, CLS dropped).
    """

    global_emb: torch.Tensor
    patch: torch.Tensor

    def __len__(self) -> int:
        return self.global_emb.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> VisionFeatures:
        return VisionFeatures(self.global_emb.to(device=device, dtype=dtype),
                              self.patch.to(device=device, dtype=dtype))

    def __getitem__(self, idx: int | slice | torch.Tensor) -> VisionFeatures:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return VisionFeatures(self.global_emb[idx], self.patch[idx])

    @staticmethod
    def cat(parts: Sequence[VisionFeatures]) -> VisionFeatures:
        return VisionFeatures(torch.cat([p.global_emb for p in parts]), torch.cat([p.patch for p in parts]))


@dataclass
class Prediction:
    """image_scores (B,); maps (B, S, S) smoothed; layer_maps (B, n_layers, S, S) unsmoothed."""

    image_scores: torch.Tensor
    maps: torch.Tensor
    layer_maps: torch.Tensor


def layer_aliases(feature_layers: Sequence[int], vv_start_layer: int | None, alias_final_layer: bool) -> list[int]:
    """Index of the feature layer each layer repeats under the released aliasing (itself if none)."""
    n = len(feature_layers)
    if not alias_final_layer or vv_start_layer is None:
        return list(range(n))
    aliased = [i for i, layer in enumerate(feature_layers) if layer >= vv_start_layer - 1]
    return [aliased[0] if i in aliased else i for i in range(n)]


class FrozenTowerDetector(nn.Module):
    """What every detector on a frozen CLIP shares: ``clip`` (frozen, always in eval mode),
    ``vision`` (its encoder: image size, grid, feature layers) and ``cfg.precision``."""

    clip: nn.Module
    vision: DualPathVisionEncoder
    prompts: nn.Module  # every trained tensor but the deep text prompts
    deep: DeepTextPrompts | None

    def _freeze_clip(self, clip: nn.Module, cfg: Any, backbone: str | None, weights: str | None, seed: int,
                     backbone_seed: int) -> int:
        """The constructor head every detector shares: keep what rebuilds the model (config, backbone,
        weights, prompt seed, random-backbone seed) and hold `clip` frozen in eval mode; returns its
        number of vision blocks."""
        self.cfg = cfg
        self.backbone_name = backbone
        self.weights = weights
        self.seed = seed  # initial prompt vectors
        self.backbone_seed = backbone_seed  # random backbone (weights None); recorded for rebuilding
        clip.requires_grad_(False)
        self.clip = clip.eval()
        return len(clip.visual.transformer.resblocks)

    @property
    def image_size(self) -> int:
        return self.vision.image_size

    @property
    def grid(self) -> int:
        return self.vision.grid

    @property
    def feature_layers(self) -> tuple[int, ...]:
        return self.vision.feature_layers

    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    def train(self, mode: bool = True) -> FrozenTowerDetector:
        """Only the prompt modules change mode; the frozen backbone always stays in eval."""
        super().train(mode)
        self.clip.eval()
        return self

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context of ``cfg.precision`` (nothing for fp32, the released precision)."""
        return autocast(self.device, self.cfg.precision)

    def prompt_parameters(self) -> list[nn.Parameter]:
        """What the optimiser trains: the parameters of ``prompts`` that require grad (context vectors),
        then the deep text prompts of ``deep`` (None: none); empty for zero-shot CLIP."""
        params = [p for p in self.prompts.parameters() if p.requires_grad]
        if self.deep is not None:
            params += self.deep.trainable()
        return params

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> VisionFeatures:
        """Frozen features of normalised images (B, 3, S, S), float32: the encoder's global embedding
        (B, D) and patch tokens (B, n_layers, N, D)."""
        images = images.to(self.device, torch.float32)
        with self.autocast():
            global_emb, patch = self.vision(images)
        return VisionFeatures(global_emb.float(), patch.float())

    def _as_features(self, feats_or_images: VisionFeatures | torch.Tensor) -> VisionFeatures:
        if isinstance(feats_or_images, VisionFeatures):
            return feats_or_images.to(self.device, torch.float32)
        return self.encode_image(feats_or_images)

    def _training_batch(self, feats: VisionFeatures, labels: torch.Tensor, masks: torch.Tensor
                        ) -> tuple[VisionFeatures, torch.Tensor, torch.Tensor]:
        """A training batch on the model's device (features and masks float32); masks must be S x S."""
        s = self.image_size
        if masks.shape[-2:] != (s, s):
            raise ValueError(f"masks of size {tuple(masks.shape[-2:])}, model image size {s}")
        return feats.to(self.device, torch.float32), labels.to(self.device), masks.to(self.device, torch.float32)


class GlocalDetector(FrozenTowerDetector):
    """Zero-shot anomaly detector on a frozen open_clip CLIP (see module docstring)."""

    def __init__(self, clip: nn.Module, cfg: ModelConfig, *, backbone: str | None = None,
                 weights: str | None = None, image_size: int | None = None, seed: int = 0,
                 backbone_seed: int = 0) -> None:
        super().__init__()
        depth = self._freeze_clip(clip, cfg, backbone, weights, seed, backbone_seed)
        self.vision = DualPathVisionEncoder(
            clip.visual,
            vv_start_layer=vv_start_layer_for(cfg.vv_start_layer, depth) if cfg.dual_path else None,
            feature_layers=feature_layers_for(cfg.feature_layers, depth),
            attention=cfg.attention,
            global_ln_post=cfg.global_ln_post,
            alias_final_layer=cfg.alias_final_layer,
            image_size=image_size,
        )
        width = int(clip.ln_final.weight.shape[0])
        context_length = int(clip.positional_embedding.shape[0])
        text_blocks = len(clip.transformer.resblocks)
        if cfg.has_deep_prompts and cfg.deep_depth > text_blocks:
            raise ConfigError(
                f"deep_depth={cfg.deep_depth} needs {cfg.deep_depth} text blocks; this backbone has {text_blocks}"
            )
        gen = torch.Generator().manual_seed(int(seed))
        self.prompts: LearnedPrompts | FixedPrompts | PromptEnsemble = build_prompt_learner(cfg, width, context_length, gen)
        self.deep: DeepTextPrompts | None = None
        if cfg.has_deep_prompts:
            first_eos = int(self.prompts.token_ids().argmax(dim=-1).min())
            if cfg.deep_length >= first_eos:
                raise ConfigError(
                    f"deep_length={cfg.deep_length} would overwrite the end of the shortest prompt (EOS at "
                    f"position {first_eos}); use deep_length < {first_eos} or longer prompts"
                )
            self.deep = DeepTextPrompts(cfg.deep_depth, cfg.deep_length, width, cfg.ctx_init_std,
                                        cfg.unused_projection_dim, gen)
        device = next(clip.parameters()).device
        self.prompts.to(device)
        if self.deep is not None:
            self.deep.to(device)

    # ---- properties -------------------------------------------------------------------------
    @property
    def prompt_names(self) -> tuple[str, ...]:
        return self.prompts.prompt_names

    # ---- text -------------------------------------------------------------------------------
    def text_embeddings(self, class_name: str | None = None) -> torch.Tensor:
        """L2-normalised prompt embeddings (P, D) in float32, order ``prompt_names``.

        GlocalCLIP: global normal, global anomaly, local normal, local anomaly; otherwise
        (normal, anomaly). Differentiable w.r.t. the prompt parameters.
        """
        deep = list(self.deep.tensors) if self.deep is not None else None
        with self.autocast():
            emb, ids = self.prompts(self.clip.token_embedding, class_name)
            feats = encode_prompts(self.clip, emb, ids, deep, self.cfg.deep_fp16_rounding)
        feats = feats.float()
        if isinstance(self.prompts, PromptEnsemble):  # WinCLIP: average each state's sentences
            if self.cfg.ensemble_mean == "normalized":
                feats = feats / feats.norm(dim=-1, keepdim=True)
            feats = torch.stack([g.mean(0) for g in feats.split(list(self.prompts.group_sizes))])
        return feats / feats.norm(dim=-1, keepdim=True)

    def text_pairs(self, class_name: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(global pair (2, D), local pair (2, D)), each ordered (normal, anomaly)."""
        t = self.text_embeddings(class_name)
        if t.shape[0] == 4:
            return t[0:2], t[2:4]
        return t, t

    def _frozen_text_pairs(self, class_name: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        """text_pairs for inference, cached until a prompt parameter changes (in-place updates by
        an optimiser or a checkpoint load bump the tensors' version counters)."""
        key = (class_name, tuple((p.data_ptr(), p._version) for p in self.prompt_parameters()),
               self.device, self.cfg)
        cache = self.__dict__.setdefault("_text_cache", {})
        if self.deep is None and not key[1] and getattr(self.clip, SHARED_FLAG, False):
            # zero-shot prompts on a shared frozen tower: every detector built on it (one per
            # evaluation run) encodes the same sentences, so they share one cache
            cache = self.clip.__dict__.setdefault("_zero_shot_text_cache", {})
        if key not in cache:
            if len(cache) > 64:
                cache.clear()
            with torch.no_grad():
                cache[key] = tuple(t.detach() for t in self.text_pairs(class_name))
        return cache[key]

    # ---- vision -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> VisionFeatures:
        """Frozen features of normalised images (B, 3, S, S), float32."""
        images = images.to(self.device, torch.float32)
        with self.autocast():
            global_emb, patch = self.vision(images)
            if self.cfg.method == "winclip":  # window embeddings replace the patch features
                patch = encode_windows(self.vision.embed(images), self.clip.visual, self.grid,
                                       self.cfg.window_scales)
        return VisionFeatures(global_emb.float(), patch.float())

    def _class_groups(self, n: int, class_names: Sequence[str] | None) -> Iterator[tuple[str | None, torch.Tensor]]:
        """(class name, image indices) groups; one group with the default name unless the method
        puts class names in its prompts."""
        if not self.cfg.use_class_names or class_names is None:
            yield None, torch.arange(n)
            return
        if len(class_names) != n:
            raise ValueError(f"{len(class_names)} class names for {n} images")
        for name in dict.fromkeys(class_names):
            idx = torch.tensor([i for i, c in enumerate(class_names) if c == name])
            yield name.replace("_", " ") if self.cfg.class_name_spaces else name, idx

    def _unique_layers(self, patch: torch.Tensor) -> list[int]:
        """For each feature layer, the index of the layer whose features it repeats (itself if none).

        Released GlocalCLIP aliases every local layer from ``vv_start_layer - 1`` on to the final V-V
        tokens (spec 2), so those layers hold the same features; computing them once is exact and ~4x
        cheaper at 518 px. Decided from the config, not by comparing values: batched matmuls can make
        the copies differ in the last bit, and the choice must not depend on that float noise.
        """
        n = patch.shape[1]
        if self.cfg.method == "winclip" or n != len(self.feature_layers):
            return list(range(n))
        return layer_aliases(self.feature_layers, self.vision.vv_start_layer, self.cfg.alias_final_layer)

    def _per_layer(self, patch: torch.Tensor, fn) -> list[torch.Tensor]:
        """fn(patch[:, [i]]) for each unique layer i, returned per layer (aliases share the object)."""
        rep = self._unique_layers(patch)
        cache: dict[int, torch.Tensor] = {}
        out = []
        for j in rep:
            if j not in cache:
                cache[j] = fn(patch[:, j : j + 1])[:, 0]
            out.append(cache[j])
        return out

    def vision_signature(self) -> dict[str, object]:
        """The resolved settings that determine ``encode_image``'s output (feature-cache key)."""
        return {
            "backbone": self.backbone_name, "weights": self.weights, "backbone_seed": self.backbone_seed,
            "image_size": self.image_size, "method": "winclip" if self.cfg.method == "winclip" else "patch",
            "dual_path": self.vision.vv_start_layer is not None, "vv_start_layer": self.vision.vv_start_layer,
            "feature_layers": list(self.feature_layers), "attention": self.cfg.attention,
            "global_ln_post": self.cfg.global_ln_post, "alias_final_layer": self.cfg.alias_final_layer,
            "window_scales": list(self.cfg.window_scales) if self.cfg.method == "winclip" else None,
            "precision": self.cfg.precision, "fused_attention": self.vision.fused_attention,
        }

    # ---- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, feats_or_images: VisionFeatures | torch.Tensor, sigma: float | None = None,
                class_names: Sequence[str] | None = None) -> Prediction:
        """Image scores (global prompts) and anomaly maps (local prompts), per image.

        sigma None -> ``cfg.sigma``; 0 -> no smoothing. Maps are the sum (released) or mean of the
        per-layer maps, then a scipy-equivalent Gaussian filter per image. WinCLIP: layer_maps are
        the per-scale maps, maps their fusion with the image score (``cfg.scale_fusion``).
        """
        feats = self._as_features(feats_or_images)
        n = len(feats)
        s = self.image_size
        winclip = self.cfg.method == "winclip"
        scores = torch.empty(n, device=self.device)
        lmaps = torch.empty(n, feats.patch.shape[1], s, s, device=self.device)
        fused = torch.empty(n, s, s, device=self.device) if winclip else None
        for name, idx in self._class_groups(n, class_names):
            gpair, lpair = self._frozen_text_pairs(name)
            idx = idx.to(self.device)
            part = feats if len(idx) == len(feats) else feats[idx]  # no copy when one group
            with self.autocast():
                sc = scoring.image_scores(part.global_emb, gpair, self.cfg.temperature)
                if winclip:  # scales fused on the patch grid, then upsampled (the released order)
                    grid_maps = window_score_maps(part.patch, lpair, self.grid, self.cfg.window_scales,
                                                  self.cfg.temperature)
                    both = torch.cat([fuse_scales(sc, grid_maps, self.cfg.scale_fusion)[:, None], grid_maps], 1)
                    both = F.interpolate(both, size=(s, s), mode="bilinear", align_corners=False)
                    fused[idx] = both[:, 0].float()
                    lm = both[:, 1:]
                else:
                    lm = torch.stack(self._per_layer(
                        part.patch, lambda x, lp=lpair: scoring.layer_maps(x, lp, s, self.cfg.temperature)), dim=1)
            scores[idx] = sc.float()
            lmaps[idx] = lm.float()
        if fused is not None:
            maps = fused
        else:
            maps = scoring.anomaly_map(lmaps)
            if self.cfg.map_reduction == "mean":
                maps = maps / lmaps.shape[1]
        maps = scoring.gaussian_blur(maps, self.cfg.sigma if sigma is None else sigma)
        return Prediction(scores, maps, lmaps)

    # ---- training ---------------------------------------------------------------------------
    def compute_losses(self, feats: VisionFeatures, labels: torch.Tensor, masks: torch.Tensor,
                       class_names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Loss components for one batch; ``total`` is what backpropagates.

        global: CE of the image logits (global prompts); local: sum over layers of focal + dice
        (anomaly) + dice (normal) on the upsampled patch probabilities (local prompts); gcl: glocal
        contrastive loss (zero for two-prompt methods); total = local_w * local + global_w * global
        + gcl_lambda * gcl.
        """
        if not self.prompt_parameters():
            raise ConfigError(f"method {self.cfg.method!r} is zero-shot: it has no prompt parameters to train")
        feats, labels, masks = self._training_batch(feats, labels, masks)
        s = self.image_size
        cfg = self.cfg
        parts = {k: [] for k in ("global", "local", "focal", "dice", "gcl")}
        weights = []
        for name, idx in self._class_groups(len(feats), class_names):
            idx = idx.to(self.device)
            part = feats if len(idx) == len(feats) else feats[idx]  # no copy when one group
            with self.autocast():
                gpair, lpair = self.text_pairs(name)
                logits = scoring.image_logits(part.global_emb, gpair, cfg.temperature)
                parts["global"].append(global_loss(logits.float(), labels[idx]))
                if cfg.local_loss_weight != 0:
                    probs = self._per_layer(
                        part.patch, lambda x, lp=lpair: scoring.patch_probabilities(x, lp, s, cfg.temperature).float())
                    local, focal, dice = local_losses(probs, masks[idx], cfg.focal_gamma)
                else:
                    local = focal = dice = gpair.new_zeros(())
                if self.prompts.prompt_names[0].startswith("global_"):
                    gcl = gcl_loss(gpair, lpair, cfg.gcl_margin, cfg.gcl_anchor)
                else:
                    gcl = gpair.new_zeros(())
            parts["local"].append(local)
            parts["focal"].append(focal)
            parts["dice"].append(dice)
            parts["gcl"].append(gcl)
            weights.append(len(idx) / len(feats))
        out = {}
        for key, values in parts.items():
            if len(values) == 1:
                out[key] = values[0].float()
            else:  # class-aware methods: batch-size weighted mean over class groups
                out[key] = sum(w * v.float() for w, v in zip(weights, values))
        out["total"] = (cfg.local_loss_weight * out["local"] + cfg.global_loss_weight * out["global"]
                        + cfg.gcl_lambda * out["gcl"])
        return out
