"""Deep text prompts and the text encoder that runs prompt embeddings through open_clip's tower.

Deep prompts (spec 3.2): d-1 learnable tensors (t, Wt), shared by all prompts. Before text block j
(1-based, j = 2..d) token positions 1..t of every prompt are REPLACED by tensor j-1 (no positional
embedding added). The released code casts the injected tensor to fp16 before splicing it into the
fp32 sequence; with ``fp16_rounding`` we reproduce that, including its backward: the gradient of
each prompt's copy is rounded to fp16 before the copies are summed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class DeepTextPrompts(nn.Module):
    """The deep prompt tensors, plus the released learner's unused projection layers.

    The released prompt learner also creates d-1 ``Linear(Wt, 896)`` layers that nothing calls.
    We keep them (frozen) only so that official checkpoints import and our exports load in the
    released code; they never receive gradients.
    """

    def __init__(self, depth: int, length: int, width: int, std: float = 0.02,
                 unused_projection_dim: int = 896, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.depth, self.length, self.width = depth, length, width
        tensors = []
        for _ in range(max(depth - 1, 0)):
            t = torch.empty(length, width)
            t.normal_(0.0, std, generator=generator)
            tensors.append(nn.Parameter(t))
        self.tensors = nn.ParameterList(tensors)
        projections = []
        for _ in range(max(depth - 1, 0)):
            lin = nn.Linear(width, unused_projection_dim)
            bound = width**-0.5  # nn.Linear's default init range, drawn from our generator
            with torch.no_grad():
                lin.weight.uniform_(-bound, bound, generator=generator)
                lin.bias.uniform_(-bound, bound, generator=generator)
            lin.requires_grad_(False)
            projections.append(lin)
        self.unused_projections = nn.ModuleList(projections)

    def trainable(self) -> list[nn.Parameter]:
        return list(self.tensors)


def _inject(x: torch.Tensor, ctx: torch.Tensor, fp16_rounding: bool) -> torch.Tensor:
    """Replace positions 1..t of every sequence in x (P, L, W) by ctx (t, W), or by its own row of
    ctx (P, t, W) (per-sequence prompts: AdaCLIP's image-conditioned ones)."""
    t = ctx.shape[-2]
    if ctx.ndim == 2:
        ctx = ctx.unsqueeze(0).expand(x.shape[0], -1, -1)
    # the cast happens after the broadcast, as in the released code, so the backward rounds the
    # gradient of each prompt's copy to fp16 before the copies are summed
    ctx = ctx.half().to(x.dtype) if fp16_rounding else ctx.to(x.dtype)
    return torch.cat([x[:, :1], ctx, x[:, 1 + t :]], dim=1)


def encode_prompts(clip: nn.Module, embeddings: torch.Tensor, token_ids: torch.Tensor,
                   deep: Sequence[torch.Tensor] | None = None, fp16_rounding: bool = True) -> torch.Tensor:
    """Text features (P, D), not normalised: ln_final(x)[EOS] @ text_projection.

    ``embeddings`` (P, L, Wt) are prompt token embeddings (before positional embedding);
    ``token_ids`` (P, L): EOS = argmax. ``deep[k]`` (t, Wt), or (P, t, Wt) one per prompt, replaces
    positions 1..t before block k+2.
    Raises ValueError if a deep prompt would reach the EOS of a prompt.
    """
    if deep and int(token_ids.argmax(dim=-1).min()) <= deep[0].shape[-2]:
        raise ValueError("deep prompts of length t overwrite positions 1..t, which must lie before every EOS")
    transformer = clip.transformer
    blocks = transformer.resblocks
    deep = list(deep) if deep is not None else []
    if len(deep) > len(blocks) - 1:
        raise ValueError(f"{len(deep)} deep prompt tensors but only {len(blocks) - 1} blocks after the first")
    cast = transformer.get_cast_dtype() if hasattr(transformer, "get_cast_dtype") else embeddings.dtype
    # The mask is causal, so no token after the last EOS can influence any EOS output: run only
    # the first max(EOS)+1 positions (same values up to float summation order, ~4x less work).
    eos = token_ids.argmax(dim=-1)
    length = int(eos.max()) + 1
    x = embeddings[:, :length].to(cast) + clip.positional_embedding[:length].to(cast)
    mask = clip.attn_mask
    if mask is not None:
        mask = mask[:length, :length]
    batch_first = getattr(transformer, "batch_first", True)
    for j, block in enumerate(blocks):
        if 1 <= j <= len(deep):
            x = _inject(x, deep[j - 1], fp16_rounding)
        if batch_first:
            x = block(x, attn_mask=mask)
        else:
            x = block(x.transpose(0, 1), attn_mask=mask).transpose(0, 1)
    x = clip.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), eos]
    proj = clip.text_projection
    if isinstance(proj, nn.Linear):
        return proj(x)
    return x @ proj.to(x.dtype)
