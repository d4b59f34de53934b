"""KAnoCLIPDetector: frozen CLIP + CLIP-VV features + knowledge-driven prompts + Bi-CMCI + Conv-Adapter.

Implements the Model API the engine uses (encode_image, predict, compute_losses, prompt_parameters,
text_embeddings, vision_signature, autocast, train) for the method of spec/kanoclip.md. The trainable
parts (prompt vectors N and A, four BiCA blocks, the adapter) all act after the frozen tower, so
the engine's feature cache is valid: ``encode_image`` is AnomalyCLIP's dual path with true layers.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...kanoclip_config import KAnoCLIPConfig
from .. import scoring
from ..backbone import feature_layers_for, vv_start_layer_for
from ..detector import FrozenTowerDetector, Prediction, VisionFeatures
from ..losses import local_losses
from ..prompts import LearnedPrompts, PromptLayout
from ..text import encode_prompts
from ..vision import DualPathVisionEncoder
from .bica import BiCA, ConvAdapter
from .knowledge import (
    Knowledge,
    KnowledgeEmbeddings,
    KnowledgeError,
    check_coverage,
    knowledge_embeddings,
    read_knowledge,
    template_knowledge,
)

PLACEHOLDER = "X"  # one BPE token standing in for each learnable vector [ours: CoOp/AnomalyCLIP]


def kanoclip_layouts(cfg: KAnoCLIPConfig) -> list[PromptLayout]:
    """One prompt per (state, adjective): "X ... X {adj} {class}." with the K positions taken by N or A."""
    k = cfg.prompt_length
    return ([PromptLayout(f"normal:{a}", f"{a} {{}}", PLACEHOLDER, (("normal", 0, k),)) for a in cfg.normal_adjectives]
            + [PromptLayout(f"anomaly:{a}", f"{a} {{}}", PLACEHOLDER, (("anomaly", 0, k),))
               for a in cfg.abnormal_adjectives])


def kd_hinge(knowledge: torch.Tensor, normal: torch.Tensor, anomaly: torch.Tensor) -> torch.Tensor:
    """Eq. 2 per row: max(0, |k^ - a^| - |k^ - n^|) on (B, D) raw features (Euclidean, no margin)."""
    def unit(x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=-1, keepdim=True)

    k = unit(knowledge)
    return F.relu((k - unit(anomaly)).norm(dim=-1) - (k - unit(normal)).norm(dim=-1))


class KAnoCLIPTrainables(nn.Module):
    """Every trained tensor (what our checkpoints store as ``prompts``): the prompt vectors N and A
    (``text``), the BiCA block of each stage (``bica``, None without Bi-CMCI) and the Conv-Adapter."""

    def __init__(self, text: LearnedPrompts, bica: nn.ModuleList | None, adapter: ConvAdapter | None) -> None:
        super().__init__()
        self.text, self.bica, self.adapter = text, bica, adapter


class KAnoCLIPDetector(FrozenTowerDetector):
    """Zero-shot anomaly detector of KAnoCLIP on a frozen open_clip CLIP (see the module docstring)."""

    # what compute_losses returns and the engine logs to losses.csv: the KD term of Eq. 13 among them
    loss_names = ("kd", "global", "local", "focal", "dice", "total")

    def __init__(self, clip: nn.Module, cfg: KAnoCLIPConfig, *, backbone: str | None = None,
                 weights: str | None = None, image_size: int | None = None, seed: int = 0,
                 backbone_seed: int = 0) -> None:
        super().__init__()
        depth = self._freeze_clip(clip, cfg, backbone, weights, seed, backbone_seed)
        self.vision = DualPathVisionEncoder(
            clip.visual, vv_start_layer=vv_start_layer_for(cfg.vv_start_layer, depth) if cfg.dual_path else None,
            feature_layers=feature_layers_for(cfg.feature_layers, depth), attention="vv", global_ln_post=False,
            alias_final_layer=False, image_size=image_size, global_source=cfg.global_source)
        width = int(clip.ln_final.weight.shape[0])
        dim = self.vision.output_dim
        gen = torch.Generator().manual_seed(int(seed))
        text = LearnedPrompts(cfg, width, int(clip.positional_embedding.shape[0]), gen, layouts=kanoclip_layouts(cfg))
        with torch.random.fork_rng(devices=[]):  # the heads' default inits, seeded by the run seed
            torch.manual_seed(int(seed))
            bica = nn.ModuleList(
                BiCA(dim, cfg.bica_heads, cfg.bica_dim, cfg.visual_self_attention, cfg.dsa_groups, cfg.dsa_stride,
                     cfg.dsa_kernel, cfg.dsa_offset_range, cfg.temperature)
                for _ in self.vision.feature_layers) if cfg.use_bica else None
            bottleneck = cfg.adapter_dim if cfg.adapter_dim is not None else max(dim // 4, 1)
            adapter = ConvAdapter(dim, bottleneck, cfg.adapter_residual) if cfg.use_adapter else None
        self.prompts = KAnoCLIPTrainables(text, bica, adapter)
        self.deep = None  # no deep text prompts (spec 3)
        self.knowledge: KnowledgeEmbeddings | None = None
        self._kvec: dict[tuple[str, str], torch.Tensor | None] = {}
        self.to(next(clip.parameters()).device)

    # ---- properties / API -------------------------------------------------------------------
    @property
    def prompt_names(self) -> tuple[str, ...]:
        return ("normal", "anomaly")

    @property
    def text_prompts(self) -> LearnedPrompts:
        return self.prompts.text

    @property
    def bica(self) -> nn.ModuleList | None:
        return self.prompts.bica

    @property
    def adapter(self) -> ConvAdapter | None:
        return self.prompts.adapter

    def prompt_parameters(self) -> list[nn.Parameter]:
        """Every trainable parameter: N, A, then the BiCA blocks and the Conv-Adapter (spec 7)."""
        return list(self.prompts.parameters())

    def vision_signature(self) -> dict[str, object]:
        return {
            "backbone": self.backbone_name, "weights": self.weights, "backbone_seed": self.backbone_seed,
            "image_size": self.image_size, "method": "patch", "dual_path": self.vision.vv_start_layer is not None,
            "vv_start_layer": self.vision.vv_start_layer, "feature_layers": list(self.feature_layers),
            "attention": "vv", "global_ln_post": False, "alias_final_layer": False, "window_scales": None,
            "precision": self.cfg.precision, "fused_attention": self.vision.fused_attention,
            "global_source": self.cfg.global_source,
        }

    # ---- text -------------------------------------------------------------------------------
    def _class_text(self, class_name: str | None) -> str | None:
        if class_name is None:
            return None
        return class_name.replace("_", " ") if self.cfg.class_name_spaces else class_name

    def text_features(self, class_name: str | None = None) -> torch.Tensor:
        """(w^n, w^a) (2, D): raw means over the adjectives of the prompt features (Eq. 1-3's "features")."""
        return self.class_text_features([class_name])[0]

    def class_text_features(self, class_names: Sequence[str | None]) -> torch.Tensor:
        """``text_features`` of several classes (C, 2, D), their prompts encoded in one text-tower pass."""
        with self.autocast():
            parts = [self.text_prompts(self.clip.token_embedding, self._class_text(c)) for c in class_names]
            emb = torch.cat([e for e, _ in parts])
            ids = torch.cat([i for _, i in parts])
            feats = encode_prompts(self.clip, emb, ids, None).float()
        feats = feats.reshape(len(class_names), -1, feats.shape[-1])
        n = len(self.cfg.normal_adjectives)
        return torch.stack([feats[:, :n].mean(1), feats[:, n:].mean(1)], dim=1)

    def text_embeddings(self, class_name: str | None = None) -> torch.Tensor:
        """F_text = [F_n; F_a] (2, D), L2-normalised, order (normal, anomaly)."""
        t = self.text_features(class_name)
        return t / t.norm(dim=-1, keepdim=True)

    def _batch_text(self, class_names: Sequence[str] | None, n: int, frozen: bool
                    ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Per image: normalised F_text (B, 2, D), raw (w^n, w^a) (B, 2, D), and its class group index."""
        names = list(class_names) if class_names is not None else [None] * n
        if len(names) != n:
            raise ValueError(f"{len(names)} class names for {n} images")
        groups = list(dict.fromkeys(names))
        ctx = torch.no_grad() if frozen else contextlib.nullcontext()
        with ctx:
            raw = self.class_text_features(groups)  # (C, 2, D)
        which = [groups.index(c) for c in names]
        idx = torch.tensor(which, device=raw.device)
        raw_b = raw[idx]
        return raw_b / raw_b.norm(dim=-1, keepdim=True), raw_b, which

    # ---- heads ------------------------------------------------------------------------------
    def _stage_logits(self, patch: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """z_i (B, n_stages, N, 2): BiCA_i(F_patch^i, F_text), or plain cosine logits without Bi-CMCI."""
        out = []
        for i in range(patch.shape[1]):
            if self.bica is not None:
                out.append(self.bica[i](patch[:, i], text))
            else:
                v = patch[:, i] / patch[:, i].norm(dim=-1, keepdim=True)
                out.append(v @ text.transpose(1, 2) / self.cfg.temperature)
        return torch.stack(out, dim=1)

    def _normalise_maps(self, z: torch.Tensor) -> torch.Tensor:
        """"Norm" of Eq. 9 on logits (..., N, 2) -> (M^n, M^a) channels (..., 2, S, S), upsampled."""
        if self.cfg.map_norm == "softmax":
            probs = z.softmax(dim=-1)
        else:  # per image and channel min-max over the tokens
            lo, hi = z.amin(dim=-2, keepdim=True), z.amax(dim=-2, keepdim=True)
            probs = (z - lo) / (hi - lo).clamp_min(1e-12)
        lead, (n, c) = probs.shape[:-2], probs.shape[-2:]
        g = math.isqrt(n)
        probs = probs.reshape(-1, g, g, c).permute(0, 3, 1, 2)
        s = self.image_size
        probs = F.interpolate(probs, size=(s, s), mode="bilinear", align_corners=False)
        return probs.reshape(*lead, c, s, s)

    def _pixel_maps(self, probs: torch.Tensor) -> torch.Tensor:
        """Eq. 10's (M^a + 1 - M^n)/2 (before the Gaussian) from (..., 2, S, S), without fp32 cancellation.

        Evaluated left to right, ``M^a + 1`` rounds every M^a below 2**-24 (6e-8) away, so a confident
        model's map becomes exactly 0 (constant maps: AUPRO undefined). Under the softmax 1 - M^n is
        M^a, so the map is M^a itself (the spec's identity, exact here); under min-max the channels are
        independent and 1 - M^n is formed first (exact for M^n >= 1/2).
        """
        anomaly = probs[..., 1, :, :]
        if self.cfg.map_norm == "softmax":
            return anomaly
        return (anomaly + (1 - probs[..., 0, :, :])) / 2

    def _global_probability(self, global_emb: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """p_a (B,): softmax of cos(I^_G, F_n)/tau, cos(I^_G, F_a)/tau (Eq. 12) at the anomaly channel."""
        g = self.adapter(global_emb) if self.adapter is not None else global_emb
        g = g / g.norm(dim=-1, keepdim=True)
        logits = (g[:, None] @ text.transpose(1, 2))[:, 0] / self.cfg.temperature
        return logits.softmax(dim=-1)[:, 1]

    def _score(self, p_a: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        m = maps.flatten(1).amax(dim=1)
        return (p_a + m) / 2 if self.cfg.global_score == "mean" else p_a + m

    # ---- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, feats_or_images: VisionFeatures | torch.Tensor, sigma: float | None = None,
                class_names: Sequence[str] | None = None) -> Prediction:
        """Scores S_global (B,), smoothed maps M (B, S, S), per-stage maps (B, 4, S, S) unsmoothed.

        sigma None -> ``cfg.sigma``; the image score uses the smoothed map's maximum (Eq. 10, 12).
        """
        feats = (feats_or_images.to(self.device, torch.float32) if isinstance(feats_or_images, VisionFeatures)
                 else self.encode_image(feats_or_images))
        text, _, _ = self._batch_text(class_names, len(feats), frozen=True)
        with self.autocast():
            z = self._stage_logits(feats.patch, text).float()
            probs = self._normalise_maps(z.sum(dim=1))
            stage = self._normalise_maps(z)
            p_a = self._global_probability(feats.global_emb, text).float()
        maps = scoring.gaussian_blur(self._pixel_maps(probs), self.cfg.sigma if sigma is None else sigma)
        layer_maps = self._pixel_maps(stage)
        return Prediction(self._score(p_a, maps), maps, layer_maps)

    # ---- knowledge --------------------------------------------------------------------------
    @property
    def uses_image_keys(self) -> bool:
        """The engine passes each image's index path to compute_losses (its VQA knowledge)."""
        return self.cfg.uses_knowledge

    def prepare_training(self, dataset: str, index: pd.DataFrame, inputs: dict[str, Any]) -> dict[str, int]:
        """Attach the knowledge a training run uses (engine hook; nothing to do with kd_weight 0).

        ``inputs`` is ``KAnoCLIPConfig.training_inputs``' result: the knowledge file and its SHA-256.
        """
        cfg = self.cfg
        if not cfg.uses_knowledge:
            return {}
        if cfg.knowledge_source == "template":
            kn = template_knowledge(dataset, index["category"].astype(str), cfg.knowledge_template,
                                    cfg.class_name_spaces)
        else:
            entry = inputs.get("knowledge") or {}
            path = entry.get("path") or str(cfg.knowledge_path(dataset))
            kn = read_knowledge(path)
            if entry.get("sha256") not in (None, kn.sha256):
                raise KnowledgeError(f"knowledge file {path} changed after the run was planned (sha256 "
                                     f"{str(entry['sha256'])[:12]} -> {kn.sha256[:12]}); start the run again")
        return self.attach_knowledge(kn, dataset, index)

    def attach_knowledge(self, knowledge: Knowledge, dataset: str, index: pd.DataFrame) -> dict[str, int]:
        """Encode (once, cached per file and tower) and check the knowledge for a training index.

        Returns the coverage counts of ``check_coverage``; raises KnowledgeError for missing classes
        unless ``knowledge_missing: skip``.
        """
        cats = [str(c) for c in index["category"]]
        paths = [str(p) for p in index["image_path"]]
        stats = check_coverage(knowledge, dataset, cats, paths, self.cfg.knowledge_missing)
        tower = {"backbone": self.backbone_name, "weights": self.weights, "seed": self.backbone_seed}
        self.knowledge = knowledge_embeddings(knowledge, self.clip, tower)
        by_class: dict[str, list[str]] = {}
        for c, p in zip(cats, paths):
            by_class.setdefault(c, []).append(p)
        self._kvec = {}
        for c, p in zip(cats, paths):
            v = self.knowledge.vector(dataset, c, p, self.cfg.knowledge_scope, by_class[c])
            self._kvec[(c, p)] = None if v is None else v.to(self.device)
        return stats

    def _knowledge_batch(self, class_names: Sequence[str] | None, image_keys: Sequence[str] | None,
                         n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(w^k (B, D), has-knowledge mask (B,)) for a batch, from the attached knowledge."""
        if self.knowledge is None:
            raise ConfigError("KAnoCLIP's knowledge loss (kd_weight > 0) needs knowledge: attach it with "
                              "model.attach_knowledge(...) (the engine does so from knowledge_file), or set "
                              "kd_weight: 0 (preset kanoclip-noknowledge)")
        if class_names is None or image_keys is None or len(class_names) != n or len(image_keys) != n:
            raise ValueError("KAnoCLIP's knowledge loss needs class_names and image_keys for every image")
        rows, ok = [], []
        for c, p in zip(class_names, image_keys):
            if (c, p) not in self._kvec:
                raise ConfigError(f"image {p!r} ({c}) is not in the index the knowledge was attached for")
            v = self._kvec[(c, p)]
            ok.append(v is not None)
            rows.append(v if v is not None else torch.zeros(self.knowledge.dim, device=self.device))
        return torch.stack(rows), torch.tensor(ok, device=self.device)

    # ---- training ---------------------------------------------------------------------------
    def compute_losses(self, feats: VisionFeatures, labels: torch.Tensor, masks: torch.Tensor,
                       class_names: Sequence[str] | None = None, image_keys: Sequence[str] | None = None
                       ) -> dict[str, torch.Tensor]:
        """L_total = alpha L_KD + beta L_global + gamma L_local (Eq. 13) and its parts, for one batch.

        image_keys: each image's index path (for its VQA knowledge; only needed with kd_weight > 0).
        """
        cfg = self.cfg
        feats = feats.to(self.device, torch.float32)
        labels = labels.to(self.device)
        masks = masks.to(self.device, torch.float32)
        s = self.image_size
        if masks.shape[-2:] != (s, s):
            raise ValueError(f"masks of size {tuple(masks.shape[-2:])}, model image size {s}")
        n = len(feats)
        text, raw, _ = self._batch_text(class_names, n, frozen=False)
        with self.autocast():
            z = self._stage_logits(feats.patch, text).float()
            probs = self._normalise_maps(z.sum(dim=1))  # (B, 2, S, S): M^n, M^a
            p_a = self._global_probability(feats.global_emb, text).float()
        local, focal, dice = local_losses(probs[:, None], masks, cfg.focal_gamma)
        maps = self._pixel_maps(probs)
        if cfg.train_map == "smoothed":
            maps = scoring.gaussian_blur(maps, cfg.sigma)
        target = (labels > 0).float()
        score = self._score(p_a, maps) if cfg.global_score == "mean" else p_a
        glob = F.binary_cross_entropy(score.clamp(0.0, 1.0), target)
        if cfg.kd_weight > 0:
            wk, ok = self._knowledge_batch(class_names, image_keys, n)
            kd = (kd_hinge(wk, raw[:, 0], raw[:, 1]) * ok).sum() / n
        else:
            kd = local.new_zeros(())
        total = cfg.kd_weight * kd + cfg.global_loss_weight * glob + cfg.local_loss_weight * local
        return {"kd": kd, "global": glob, "local": local, "focal": focal, "dice": dice, "total": total}
