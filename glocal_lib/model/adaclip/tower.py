"""AdaCLIP's towers (spec 3-4): visual prompt tokens appended after the patches, text prompts spliced in.

Vision (spec 3.1): the Lp prompt tokens join the sequence before block 1 (no positional embedding),
are replaced before blocks 2..J and then flow through every later block; features are read from
the raw residual stream at the feature layers, prompts and CLS dropped; the global embedding is
ln_post(CLS) @ proj. Attention is the math path with q pre-scaled (what ``nn.MultiheadAttention``
with ``need_weights=True`` computes); ``fused=True`` uses SDPA (equal up to float rounding).
Text (spec 4.2): positions 1..Lp of every sentence are replaced before blocks 2..J by that
sentence's image's hybrid prompt (``glocal_lib.model.text.encode_prompts`` with per-sequence
prompts).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from glocal_lib.model.vision import DualPathVisionEncoder, split_qkv


def block_forward(block: nn.Module, x: torch.Tensor, fused: bool = False) -> torch.Tensor:
    """One open_clip residual attention block on x (B, L, W), batch first, no mask."""
    qkv = split_qkv(block.ln_1(x), block.attn)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if fused:
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        q = q * (q.shape[-1] ** -0.5)  # nn.MultiheadAttention's math path scales q before the product
        out = (q @ k.transpose(-2, -1)).softmax(dim=-1) @ v
    b, h, n, d = out.shape
    out = block.attn.out_proj(out.transpose(1, 2).reshape(b, n, h * d))
    x = x + block.ls_1(out)
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def splice_fp16(ctx: torch.Tensor, dtype: torch.dtype, rounding: bool) -> torch.Tensor:
    """The released ``.half()`` on injected prompts: fp16 rounding, then the stream's dtype."""
    return ctx.half().to(dtype) if rounding else ctx.to(dtype)


class PromptedVisionTower(DualPathVisionEncoder):
    """The frozen open_clip vision tower run with appended prompt tokens (no parameters of its own).

    Shares the project encoder's patch embedding (matmul, not a TF32 convolution on GPUs) and its
    positional resize, here bicubic by default; no dual path.
    """

    def __init__(self, visual: nn.Module, feature_layers: Sequence[int], image_size: int | None,
                 pos_resize: str = "bicubic") -> None:
        super().__init__(visual, vv_start_layer=None, feature_layers=feature_layers, alias_final_layer=False,
                         image_size=image_size, pos_resize=pos_resize)

    def forward(self, images: torch.Tensor, prompts: Sequence[torch.Tensor] | None = None,
                fp16_rounding: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """images (B, 3, S, S); prompts[j] (B, Lp, W) spliced before block j+1 (None: the plain tower).

        Returns (global (B, D) = ln_post(CLS) @ proj, [patch tokens (B, N, W) per feature layer]).
        """
        x = self.embed(images)
        n_tokens = x.shape[1]
        prompts = list(prompts or [])
        out: list[torch.Tensor] = []
        for j, block in enumerate(self.visual.transformer.resblocks):
            if j < len(prompts):
                ctx = splice_fp16(prompts[j], x.dtype, fp16_rounding)
                x = torch.cat([x if j == 0 else x[:, :n_tokens], ctx], dim=1)
            x = block_forward(block, x, self.fused_attention)
            if j + 1 in self.feature_layers:
                out.append(x[:, 1:n_tokens])
        cls = self.visual.ln_post(x[:, 0])
        return cls @ self.visual.proj, out_by_layer(out, self.feature_layers)


def out_by_layer(collected: list[torch.Tensor], layers: tuple[int, ...]) -> list[torch.Tensor]:
    """Tokens in the order of ``layers`` (collected in block order, one per distinct layer)."""
    order = sorted(set(layers))
    return [collected[order.index(k)] for k in layers]
