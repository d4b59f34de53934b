"""Frozen CLIP vision tower with the dual path ("DPAM") of AnomalyCLIP / GlocalCLIP.

From block `vv_start_layer` on, every block feeds two residual streams from the SAME normalised
input ln_1(o): the original stream o (ordinary attention + MLP, it gives the global embedding) and
a second stream v that only adds an attention whose weights come from value-value similarity
(or q-q / k-k / q-k for the ablation) and skips the MLP. Patch features are read from v.

The released GlocalCLIP code keeps references to v instead of copies, so every "layer" it returns
is the final v; `alias_final_layer=True` reproduces that, False gives true per-layer tokens
(AnomalyCLIP, and the paper's description). See spec sections 2 and 9.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from glocal_lib.errors import ConfigError
from glocal_lib.model.backbone import resize_positional_embedding

# Which projections build the attention weights of the second stream: (left, right) of left @ right^T.
ATTENTION_VARIANTS = {"vv": (2, 2), "qq": (0, 0), "kk": (1, 1), "qk": (0, 1)}


def split_qkv(x: torch.Tensor, attn: nn.MultiheadAttention) -> torch.Tensor:
    """In-projection of x (B, N, W) into q, k, v per head: (3, B, H, N, W/H), heads laid out as
    nn.MultiheadAttention lays them out."""
    b, n, w = x.shape
    h = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    return qkv.reshape(b, n, 3, h, w // h).permute(2, 0, 3, 1, 4)


def attend(left: torch.Tensor, right: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """softmax((left @ right^T) * d^-0.5) @ values, per head; the scale is applied after the product
    as in the released code."""
    scale = left.shape[-1] ** -0.5
    weights = (left @ right.transpose(-2, -1)) * scale
    return weights.softmax(dim=-1) @ values


def merge_heads(x: torch.Tensor, attn: nn.MultiheadAttention) -> torch.Tensor:
    """(B, H, N, d) -> out_proj of (B, N, H*d), with the block's own output projection and bias."""
    b, h, n, d = x.shape
    return attn.out_proj(x.transpose(1, 2).reshape(b, n, h * d))


def dual_path_attention(
    x: torch.Tensor, attn: nn.MultiheadAttention, variant: str = "vv", fused: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both attentions of a dual-path block on x (B, N, W) = ln_1(o): (ordinary q-k, variant).

    fused=True uses torch's scaled_dot_product_attention kernels: no (heads, N, N) score tensors in
    memory, ~1.4x less CPU time at 518 px, flash/memory-efficient kernels on GPUs. It equals the
    released arithmetic (fused=False, this function's default) up to float32 rounding: on the
    24-layer tiny tower at 518 px both are within 3e-6 of a float64 run and within 2e-6 of each
    other (tests/test_speed.py checks this), below the 1e-5 this package accepts as "the same
    numbers", so the run profiles turn it on (`fused_attention: true`; false gives the released
    arithmetic bit for bit).
    """
    qkv = split_qkv(x, attn)
    left, right = ATTENTION_VARIANTS[variant]
    op = F.scaled_dot_product_attention if fused else attend
    original = merge_heads(op(qkv[0], qkv[1], qkv[2]), attn)
    second = merge_heads(op(qkv[left], qkv[right], qkv[2]), attn)
    return original, second


class DualPathVisionEncoder(nn.Module):
    """Global embedding + per-layer patch embeddings from an open_clip VisionTransformer.

    Holds no trainable parameters; the wrapped tower stays frozen. The caller chooses no_grad and
    autocast (bf16 / fp16 work; LayerNorms follow open_clip's dtype handling).
    """

    def __init__(
        self,
        visual: nn.Module,
        *,
        vv_start_layer: int | None = 6,
        feature_layers: Sequence[int] = (6, 12, 18, 24),
        attention: str = "vv",
        global_ln_post: bool = False,
        alias_final_layer: bool = True,
        image_size: int | None = None,
        fused_attention: bool = False,
        global_source: str = "original",
        pos_resize: str = "bilinear",
    ) -> None:
        super().__init__()
        _check_supported(visual)
        self.visual = visual
        self.depth = len(visual.transformer.resblocks)
        self.feature_layers = tuple(int(layer) for layer in feature_layers)
        if not self.feature_layers or any(not 1 <= layer <= self.depth for layer in self.feature_layers):
            raise ConfigError(f"feature_layers {feature_layers} must be block numbers in 1..{self.depth}")
        if vv_start_layer is not None and not 1 <= vv_start_layer <= self.depth:
            raise ConfigError(
                f"vv_start_layer {vv_start_layer} must be in 1..{self.depth} (or None: no dual path)"
            )
        if attention not in ATTENTION_VARIANTS:
            raise ConfigError(f"attention '{attention}' must be one of {sorted(ATTENTION_VARIANTS)}")
        if global_source not in ("original", "vv"):
            raise ConfigError(f"global_source '{global_source}' must be 'original' or 'vv'")
        # original: the original stream's CLS (ln_post only with global_ln_post); vv: the final V-V
        # stream's CLS after ln_post (KAnoCLIP's literal reading, "S_l[0]" of the local-aware stream)
        self.global_source = global_source
        self.vv_start_layer = vv_start_layer
        self.attention = attention
        self.global_ln_post = global_ln_post
        self.alias_final_layer = alias_final_layer
        self.fused_attention = fused_attention
        self.pos_resize = pos_resize  # positional-table resize: bilinear (released GlocalCLIP) | bicubic (AdaCLIP)
        self.patch_size = int(visual.conv1.kernel_size[0])
        self.image_size = int(image_size if image_size is not None else visual.image_size[0])
        # Like CLIP's strided conv, a size that is not a multiple of the patch drops the last pixels.
        self.grid = self.image_size // self.patch_size
        if self.grid < 1:
            raise ConfigError(
                f"image_size {self.image_size} is smaller than the patch size {self.patch_size}"
            )
        self.output_dim = int(visual.proj.shape[1])

    @property
    def num_layers(self) -> int:
        return len(self.feature_layers)

    def _aliased(self, layer: int) -> bool:
        # In the released code the tensor leaving block k-1 becomes the V-V stream and is updated in
        # place by every later block, so layers k-1.. all end up as the final V-V tokens.
        return self.alias_final_layer and self.vv_start_layer is not None and layer >= self.vv_start_layer - 1

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patchify, prepend CLS, add the (resized) positional table, ln_pre: (B, 1 + G*G, W).

        The patch projection is written as a matmul rather than conv1: same numbers, but on GPUs it
        avoids cuDNN's default TF32 convolutions, which would break fp32 agreement (~1e-3).
        """
        v = self.visual
        b, c, h, w = images.shape
        p, g = self.patch_size, self.grid
        if h // p != g or w // p != g:
            raise ConfigError(
                f"images of size {h}x{w} give a {h // p}x{w // p} patch grid; this encoder was built for "
                f"{self.image_size}x{self.image_size}"
            )
        patches = images[:, :, : g * p, : g * p].reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
        weight = v.conv1.weight
        patches = patches.to(weight.dtype)  # as the released `image.type(self.dtype)`; autocast still applies
        x = patches.reshape(b, g * g, c * p * p) @ weight.reshape(weight.shape[0], -1).transpose(0, 1)
        cls = v.class_embedding.to(x.dtype).expand(b, 1, -1)
        pos = resize_positional_embedding(v.positional_embedding, g, mode=self.pos_resize)
        x = torch.cat([cls, x], dim=1) + pos.to(x.dtype)
        return v.ln_pre(x)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, S, S) -> (global_emb (B, D), patch (B, n_layers, G*G, D)), both unnormalised."""
        o = self.embed(images)
        v: torch.Tensor | None = None
        wanted = set(self.feature_layers)
        taken: dict[int, torch.Tensor] = {}
        batch_first = getattr(self.visual.transformer, "batch_first", True)
        for idx, block in enumerate(self.visual.transformer.resblocks, start=1):
            if self.vv_start_layer is None or idx < self.vv_start_layer:
                o = block(o) if batch_first else block(o.transpose(0, 1)).transpose(0, 1)
            else:
                if v is None:
                    v = o
                original, second = dual_path_attention(
                    block.ln_1(o), block.attn, self.attention, self.fused_attention
                )
                v = v + block.ls_1(second)
                o = o + block.ls_1(original)
                o = o + block.ls_2(block.mlp(block.ln_2(o)))
            if idx in wanted:
                taken[idx] = o if v is None else v
        final_v = v if v is not None else o
        # ln_post + proj once per distinct token tensor: aliased layers share the final V-V result
        # (a view, as in the released code, where they are the same tensor).
        sources = [final_v if self._aliased(layer) else taken[layer] for layer in self.feature_layers]
        distinct: list[torch.Tensor] = []
        for t in sources:
            if not any(t is d for d in distinct):
                distinct.append(t)
        projected = self.visual.ln_post(torch.stack(distinct, dim=1)[:, :, 1:]) @ self.visual.proj
        slot = [next(i for i, d in enumerate(distinct) if t is d) for t in sources]
        patch = projected if slot == list(range(len(sources))) else projected[:, slot]
        if self.global_source == "vv":
            cls = self.visual.ln_post(final_v[:, 0])
        else:
            cls = o[:, 0]
            if self.global_ln_post:
                cls = self.visual.ln_post(cls)
        return cls @ self.visual.proj, patch


def _check_supported(visual: nn.Module) -> None:
    """The dual path needs OpenAI-style blocks (ln_1, nn.MultiheadAttention, ln_2, mlp) and a CLS token."""
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    ok = (
        blocks is not None
        and hasattr(visual, "conv1")
        and getattr(visual, "proj", None) is not None
        and getattr(visual, "attn_pool", None) is None
        and all(
            isinstance(getattr(b, "attn", None), nn.MultiheadAttention) and hasattr(b, "ln_1") for b in blocks
        )
    )
    if not ok:
        raise ConfigError(
            "DualPathVisionEncoder supports open_clip ViTs with standard residual attention blocks, a class "
            "token and a projection (OpenAI CLIP style); this backbone has a different vision tower."
        )
