"""ViP2-CLIP (spec vip2clip.md): image-conditioned prompts (ICA), fine-grained perception (FGP) and
unified text-patch alignment (UTPA) on a frozen plain CLIP.

Data flow per batch: frozen features (cacheable: global embedding without ln_post, plain q-k patch
tokens at 6/12/18/24) -> ICA turns each image's global embedding into its own pair of prompts ->
the text tower encodes the 2B prompts in one pass -> FGP refines the pair per layer against that
layer's patches -> patch/text cosines give the maps, the top-k patches the image score.
Everything trainable sits downstream of the vision tower, so the feature cache is exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..vip2clip_config import Vip2ClipConfig
from . import scoring, vip2clip_checkpoint
from .backbone import feature_layers_for
from .detector import FrozenTowerDetector, Prediction, VisionFeatures
from .losses import global_loss, local_losses
from .prompts import tokenize, tokenizer
from .text import encode_prompts
from .vision import DualPathVisionEncoder

PLACEHOLDER = "X"


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _uniform(shape: tuple[int, ...], bound: float, gen: torch.Generator) -> nn.Parameter:
    """PyTorch's default Linear/Conv1d init range U(-1/sqrt(fan_in), +), drawn from ``gen``."""
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound, generator=gen))


def round_tf32(x: torch.Tensor) -> torch.Tensor:
    """Round float32 to TF32's 10-bit mantissa (nearest, ties away), as tensor cores see their inputs."""
    if x.dtype != torch.float32:
        return x
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


class AffineMap(nn.Module):
    """y = x W^T + b over the last axis: the released 1x1 Conv1d, computed as a matmul (exact fp32
    on every device; ``tf32`` emulates the TF32 inputs of cuDNN's default convolutions)."""

    def __init__(self, d_in: int, d_out: int, bias: bool, gen: torch.Generator) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)
        self.weight = _uniform((d_out, d_in), bound, gen)
        self.bias = _uniform((d_out,), bound, gen) if bias else None

    def forward(self, x: torch.Tensor, tf32: bool = False) -> torch.Tensor:
        w = self.weight
        if tf32:
            x, w = round_tf32(x), round_tf32(w)
        return F.linear(x, w, self.bias)


class MetaNet(nn.Module):
    """h_i: Linear(D, hidden) -> ReLU -> Linear(hidden, Wt), default init from ``gen``."""

    def __init__(self, d_in: int, hidden: int, d_out: int, gen: torch.Generator) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_in, hidden), nn.Linear(hidden, d_out)
        with torch.no_grad():
            for lin in (self.fc1, self.fc2):
                bound = 1.0 / math.sqrt(lin.in_features)
                lin.weight.uniform_(-bound, bound, generator=gen)
                lin.bias.uniform_(-bound, bound, generator=gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


def single_token(word: str) -> int:
    """The BPE id of a one-token word; ConfigError otherwise (the released slicing assumes one)."""
    ids = tokenizer().encode(word)
    if len(ids) != 1:
        raise ConfigError(f"vip2clip state word {word!r} is {len(ids)} BPE tokens; the prompt layout needs "
                          "exactly one (e.g. good, damaged, normal, abnormal, perfect, flawed, flawless, imperfect)")
    return ids[0]


class ImageConditionedPrompts(nn.Module):
    """ICA (spec 3.2): static templates [SOS] v_1..v_n <state> z_1..z_r [EOS] with z_i = o_i + h_i(f + b).

    Learnable: ``ctx_pos`` / ``ctx_neg`` (n, Wt), ``cls_ctx`` (r, Wt), ``bias`` (1, D), ``meta_nets``.
    The fixed token embeddings are recomputed from the backbone (non-persistent buffers).
    """

    def __init__(self, cfg: Vip2ClipConfig, token_embedding: nn.Embedding, embed_dim: int,
                 context_length: int, gen: torch.Generator) -> None:
        super().__init__()
        self.n_ctx, self.n_cls = cfg.n_ctx, cfg.n_cls
        width = int(token_embedding.weight.shape[1])
        std = cfg.ctx_init_std
        # the released order of draws: cls_ctx, ctx_pos, ctx_neg, then the adapter
        self.cls_ctx = nn.Parameter(torch.empty(cfg.n_cls, width).normal_(0.0, std, generator=gen))
        self.ctx_pos = nn.Parameter(torch.empty(cfg.n_ctx, width).normal_(0.0, std, generator=gen))
        self.ctx_neg = nn.Parameter(torch.empty(cfg.n_ctx, width).normal_(0.0, std, generator=gen))
        self.bias = (nn.Parameter(torch.empty(1, embed_dim).normal_(0.0, std, generator=gen))
                     if cfg.use_ica and cfg.ica_bias else None)
        self.meta_nets = nn.ModuleList(
            [MetaNet(embed_dim, cfg.ica_hidden, width, gen) for _ in range(cfg.n_cls)] if cfg.use_ica else [])
        words = (cfg.normal_state, cfg.anomaly_state)
        for w in words:
            single_token(w)
        ids = torch.stack([tokenize(self.sentence(w), context_length) for w in words])  # (2, L)
        embed_words = (cfg.anomaly_state, cfg.anomaly_state) if cfg.normal_state_word_bug else words
        embed_ids = torch.stack([tokenize(self.sentence(w), context_length) for w in embed_words])
        dev = token_embedding.weight.device
        with torch.no_grad():
            fixed = token_embedding(embed_ids.to(dev)).float()
        self.register_buffer("token_ids", ids.to(dev), persistent=False)
        self.register_buffer("fixed", fixed, persistent=False)  # (2, L, Wt): SOS, state word, EOS, padding

    def sentence(self, state: str) -> str:
        return " ".join([PLACEHOLDER] * self.n_ctx + [state] + [PLACEHOLDER] * self.n_cls)

    @property
    def eos(self) -> int:
        return 1 + self.n_ctx + 1 + self.n_cls

    def image_tokens(self, global_emb: torch.Tensor | None) -> torch.Tensor:
        """z (B, r, Wt) from the normalised global embeddings (B, D); None or no ICA: o itself (1, r, Wt)."""
        if global_emb is None or not self.meta_nets:
            return self.cls_ctx.unsqueeze(0)
        u = global_emb if self.bias is None else global_emb + self.bias
        return self.cls_ctx.unsqueeze(0) + torch.stack([h(u) for h in self.meta_nets], dim=1)

    def forward(self, global_emb: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings (2B, L, Wt) ordered [normal of images 1..B; anomaly of 1..B] and ids (2B, L)."""
        z = self.image_tokens(global_emb)
        b = z.shape[0]
        n = self.n_ctx
        halves = []
        for i, ctx in enumerate((self.ctx_pos, self.ctx_neg)):
            fixed = self.fixed[i].unsqueeze(0).expand(b, -1, -1)
            halves.append(torch.cat([fixed[:, :1], ctx.unsqueeze(0).expand(b, -1, -1), fixed[:, n + 1 : n + 2],
                                     z, fixed[:, self.eos :]], dim=1))
        ids = self.token_ids.repeat_interleave(b, dim=0)
        return torch.cat(halves), ids


class FineGrainedPerception(nn.Module):
    """FGP (spec 3.4): text queries attend over one layer's patches, per head softmax over patches.

    Released: 8 heads, no logit scale, affine maps with biases, output L2-normalised, no residual.
    ``prompt_temp_l1`` is the released module's unused parameter (kept for the format and the count).
    """

    def __init__(self, cfg: Vip2ClipConfig, dim: int, gen: torch.Generator) -> None:
        super().__init__()
        if dim % cfg.fgp_heads:
            raise ConfigError(f"vip2clip: fgp_heads={cfg.fgp_heads} does not divide the embedding width {dim}")
        self.heads = cfg.fgp_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            AffineMap(dim, dim, cfg.fgp_bias, gen) for _ in range(4))
        self.prompt_temp_l1 = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.scale = {"none": 1.0, "sqrt_dim": dim**-0.5, "sqrt_head": (dim // self.heads) ** -0.5}[cfg.fgp_scale]
        self.output_norm = cfg.fgp_output_norm
        self.tf32 = cfg.tf32_convs

    def attention(self, text: torch.Tensor, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights (B, heads, 2, N), head outputs (B, 2, D)) for text (B, 2, D), patches (B, N, D)."""
        b, t, d = text.shape
        h = self.heads
        q = self.q_proj(text, self.tf32).reshape(b, t, h, d // h)
        k = self.k_proj(patches, self.tf32).reshape(b, -1, h, d // h)
        v = self.v_proj(patches, self.tf32).reshape(b, -1, h, d // h)
        weights = (torch.einsum("bnhc,bmhc->bhnm", q, k) * self.scale).softmax(dim=-1)
        return weights, torch.einsum("bhnm,bmhc->bnhc", weights, v).reshape(b, t, d)

    def forward(self, text: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        out = self.out_proj(self.attention(text, patches)[1], self.tf32)
        return _normalise(out) if self.output_norm else out


@dataclass
class Vip2Outputs:
    """Per-batch intermediate values (B images, nL layers, N patches)."""

    text: torch.Tensor  # (B, 2, D) normalised ICA text
    layer_text: torch.Tensor  # (B, nL, 2, D) FGP-refined text per layer
    cosines: torch.Tensor  # (B, nL, N, 2) raw patch/text cosines
    probs: torch.Tensor  # (B, nL, N, 2) softmax(cosines / tau)
    image_logits: torch.Tensor  # (B, 2) released / no-UTPA; (B, nL, 2) paper (per layer)


def topk_indices(probs: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, nL, k) of the k largest anomaly probabilities per layer, as the released
    ``torch.topk(..., sorted=False)`` picks them (ties broken the same way)."""
    return torch.topk(probs[..., 1], k=k, dim=-1, largest=True, sorted=False).indices


def topk_image_logits(cosines: torch.Tensor, probs: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    """Released image logits (B, 2): mean of the raw cosines of the k selected patches of every layer,
    over the temperature."""
    b, n_layers, _, _ = cosines.shape
    idx = topk_indices(probs, k)
    picked = cosines.gather(2, idx.unsqueeze(-1).expand(-1, -1, -1, 2))  # (B, nL, k, 2)
    return picked.reshape(b, n_layers * k, 2).mean(dim=1) / temperature


def paper_image_logits(patches: torch.Tensor, layer_text: torch.Tensor, probs: torch.Tensor, k: int,
                       temperature: float) -> torch.Tensor:
    """Paper Eq. 8 logits per layer (B, nL, 2): cosine of the mean top-k patch feature with the layer text."""
    idx = topk_indices(probs, k)
    pooled = patches.gather(2, idx.unsqueeze(-1).expand(-1, -1, -1, patches.shape[-1])).mean(dim=2)
    return torch.einsum("bld,bltd->blt", _normalise(pooled), layer_text) / temperature


class Vip2ClipDetector(FrozenTowerDetector):
    """ViP2-CLIP on a frozen open_clip CLIP (Model API of ``glocal_lib.model.api``).

    ``prompts`` holds every trained tensor: ``prompts.ica`` (ImageConditionedPrompts) and
    ``prompts.fgp`` (a ModuleList: one shared FGP, or one per layer); ``param_groups`` gives the two
    learning rates of the released optimiser.
    """

    def __init__(self, clip: nn.Module, cfg: Vip2ClipConfig, *, backbone: str | None = None,
                 weights: str | None = None, image_size: int | None = None, seed: int = 0,
                 backbone_seed: int = 0) -> None:
        super().__init__()
        depth = self._freeze_clip(clip, cfg, backbone, weights, seed, backbone_seed)
        self.deep = None
        self.vision = DualPathVisionEncoder(clip.visual, vv_start_layer=None,
                                            feature_layers=feature_layers_for(cfg.feature_layers, depth),
                                            global_ln_post=False, alias_final_layer=False, image_size=image_size)
        n_patches = self.vision.grid**2
        if cfg.use_utpa and cfg.topk > n_patches:
            raise ConfigError(f"vip2clip: topk={cfg.topk} exceeds the {n_patches} patch tokens at image size "
                              f"{self.vision.image_size}; set topk <= {n_patches}")
        dim = self.vision.output_dim
        gen = torch.Generator().manual_seed(int(seed))
        ica = ImageConditionedPrompts(cfg, clip.token_embedding, dim, int(clip.positional_embedding.shape[0]), gen)
        n_fgp = 0 if not cfg.use_fgp else 1 if cfg.fgp_shared else len(self.vision.feature_layers)
        fgp = nn.ModuleList([FineGrainedPerception(cfg, dim, gen) for _ in range(n_fgp)])
        self.prompts = nn.ModuleDict({"ica": ica, "fgp": fgp}).to(self.device)

    # Model API attributes (image_size, grid, device, train, autocast, encode_image, prompt_parameters):
    # FrozenTowerDetector
    prompt_names = ("normal", "anomaly")

    @property
    def ica(self) -> ImageConditionedPrompts:
        return self.prompts["ica"]

    @property
    def fgp(self) -> nn.ModuleList:
        return self.prompts["fgp"]

    def param_groups(self, lr: float) -> list[dict]:
        """Optimiser groups: ICA at ``lr``, FGP at ``lr * fgp_lr_scale`` (released 1e-3 / 1e-5)."""
        groups = [{"params": list(self.ica.parameters()), "lr": lr},
                  {"params": list(self.fgp.parameters()), "lr": lr * self.cfg.fgp_lr_scale}]
        return [g for g in groups if g["params"]]

    def vision_signature(self) -> dict[str, object]:
        """What determines ``encode_image`` (the feature-cache key): plain CLIP, no ln_post on the CLS."""
        return {
            "backbone": self.backbone_name, "weights": self.weights, "backbone_seed": self.backbone_seed,
            "image_size": self.image_size, "method": "patch", "dual_path": False, "vv_start_layer": None,
            "feature_layers": list(self.feature_layers), "attention": "vv", "global_ln_post": False,
            "alias_final_layer": False, "window_scales": None, "precision": self.cfg.precision,
            "fused_attention": self.vision.fused_attention,
        }

    # ---- text -------------------------------------------------------------------------------
    def image_text(self, global_emb: torch.Tensor | None) -> torch.Tensor:
        """Normalised text (B, 2, D) = (normal, anomaly) per image from normalised global embeddings;
        None: the static templates (z_i = o_i), (1, 2, D). One text-tower pass for all 2B prompts."""
        emb, ids = self.ica(global_emb)
        feats = encode_prompts(self.clip, emb, ids, None).float()
        b = feats.shape[0] // 2
        return _normalise(torch.stack([feats[:b], feats[b:]], dim=1))

    def text_embeddings(self, class_name: str | None = None) -> torch.Tensor:
        """The static templates' text (2, D) (no image: z_i = o_i), logged per epoch by the engine."""
        return self.image_text(None)[0]

    # ---- UTPA -------------------------------------------------------------------------------
    def layer_fgp(self, i: int) -> FineGrainedPerception | None:
        if not len(self.fgp):
            return None
        return self.fgp[0] if self.cfg.fgp_shared else self.fgp[i]

    def forward_features(self, feats: VisionFeatures) -> Vip2Outputs:
        """Text, per-layer text, cosines, probabilities and image logits of a batch (differentiable)."""
        cfg = self.cfg
        f = _normalise(feats.global_emb)
        patches = _normalise(feats.patch)  # (B, nL, N, D)
        text = self.image_text(f)
        layer_text = []
        for i in range(patches.shape[1]):
            fgp = self.layer_fgp(i)
            layer_text.append(text if fgp is None else fgp(text, patches[:, i]))
        layer_text_t = torch.stack(layer_text, dim=1)  # (B, nL, 2, D)
        cosines = patches @ layer_text_t.transpose(-1, -2)  # (B, nL, N, 2)
        probs = (cosines / cfg.temperature).softmax(dim=-1)
        if not cfg.use_utpa:
            logits = torch.einsum("bd,btd->bt", f, text) / cfg.temperature
        elif cfg.image_score == "paper":
            logits = paper_image_logits(patches, layer_text_t, probs, cfg.topk, cfg.temperature)
        else:
            logits = topk_image_logits(cosines, probs, cfg.topk, cfg.temperature)
        return Vip2Outputs(text, layer_text_t, cosines, probs, logits)

    def upsampled(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, nL, N, 2) patch probabilities -> (B, nL, 2, S, S), bilinear (align_corners False)."""
        b, n_layers, n, _ = probs.shape
        g, s = self.grid, self.image_size
        x = probs.reshape(b * n_layers, g, g, 2).permute(0, 3, 1, 2)
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        return x.reshape(b, n_layers, 2, s, s)

    def image_scores_from(self, out: Vip2Outputs) -> torch.Tensor:
        if out.image_logits.ndim == 3:  # paper: mean over layers of the per-layer probabilities
            return out.image_logits.softmax(dim=-1)[..., 1].mean(dim=1)
        return out.image_logits.softmax(dim=-1)[:, 1]

    @torch.no_grad()
    def predict(self, feats_or_images: VisionFeatures | torch.Tensor, sigma: float | None = None,
                class_names: Sequence[str] | None = None) -> Prediction:
        """Image scores (top-k UTPA) and maps (mean over layers of (P_a + 1 - P_n) / 2, then the
        scipy-equivalent Gaussian, sigma None -> cfg.sigma). Per image: batching changes nothing.
        ``class_names`` is accepted and ignored (the prompts are object-agnostic)."""
        feats = self._as_features(feats_or_images)
        with self.autocast():
            out = self.forward_features(feats)
            lmaps = scoring.maps_from_probabilities(self.upsampled(out.probs)).float()
            scores = self.image_scores_from(out).float()
        maps = lmaps.mean(dim=1) if self.cfg.map_reduction == "mean" else lmaps.sum(dim=1)
        maps = scoring.gaussian_blur(maps, self.cfg.sigma if sigma is None else sigma)
        return Prediction(scores, maps, lmaps)

    # ---- training ---------------------------------------------------------------------------
    def compute_losses(self, feats: VisionFeatures, labels: torch.Tensor, masks: torch.Tensor,
                       class_names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """global: CE of the image logits; local: sum over layers of focal + dice(anomaly) +
        dice(normal) on the upsampled probabilities; total = lambda * local + global (spec 5)."""
        cfg = self.cfg
        feats, labels, masks = self._training_batch(feats, labels, masks)
        with self.autocast():
            out = self.forward_features(feats)
            if out.image_logits.ndim == 3:  # paper: one CE per layer, averaged
                glob = torch.stack([global_loss(out.image_logits[:, i].float(), labels)
                                    for i in range(out.image_logits.shape[1])]).mean()
            else:
                glob = global_loss(out.image_logits.float(), labels)
            if cfg.local_loss_weight != 0:
                local, focal, dice = local_losses(self.upsampled(out.probs).float(), masks, cfg.focal_gamma)
            else:
                local = focal = dice = glob.new_zeros(())
        total = cfg.local_loss_weight * local + cfg.global_loss_weight * glob
        return {"global": glob, "local": local, "focal": focal, "dice": dice, "gcl": glob.new_zeros(()),
                "total": total}

    # ---- analysis ---------------------------------------------------------------------------
    @torch.no_grad()
    def fgp_attention(self, feats: VisionFeatures) -> torch.Tensor:
        """Head-averaged FGP attention (B, nL, 2, N) of the normal and anomaly queries (Fig. 3)."""
        feats = self._as_features(feats)
        text = self.image_text(_normalise(feats.global_emb))
        patches = _normalise(feats.patch)
        rows = []
        for i in range(patches.shape[1]):
            fgp = self.layer_fgp(i)
            if fgp is None:
                raise ConfigError("vip2clip: use_fgp is off, there is no FGP attention to show")
            rows.append(fgp.attention(text, patches[:, i])[0].mean(dim=1))
        return torch.stack(rows, dim=1)

    def trainable_count(self) -> dict[str, int]:
        """Parameter counts of ICA and FGP (the paper's Table 3 counts both, 4.15 M on ViT-L)."""
        return {"ica": sum(p.numel() for p in self.ica.parameters()),
                "fgp": sum(p.numel() for p in self.fgp.parameters())}

    # ---- the released checkpoint format (hooks of glocal_lib.model.checkpoint) ----------------
    check_official = staticmethod(vip2clip_checkpoint.check_official)
    official_config = staticmethod(vip2clip_checkpoint.implied_config)

    @staticmethod
    def recognises_official(state: dict) -> bool:
        """Whether an official ``prompt_learner`` state dict is ViP2-CLIP's (its ICA keys)."""
        return "cls_ctx" in state and "ctx_pos" in state

    def official_checkpoint(self) -> dict:
        return vip2clip_checkpoint.official_checkpoint(self)

    def load_official(self, obj: dict, source: str) -> None:
        vip2clip_checkpoint.load_official(self, obj, source)
