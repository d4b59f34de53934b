"""Deep text prompt encoder vs a manual, per-prompt, layer-by-layer computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_model import small_cfg, tiny_clip

from glocal_lib.model.prompts import build_prompt_learner
from glocal_lib.model.text import DeepTextPrompts, encode_prompts


@pytest.fixture(scope="module")
def clip():
    return tiny_clip()


def _manual_block(x: torch.Tensor, block, heads: int) -> torch.Tensor:
    """One CLIP text block written out: causal multi-head attention + QuickGELU MLP, x (L, W)."""
    L, W = x.shape
    d = W // heads
    h = F.layer_norm(x, (W,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
    qkv = h @ block.attn.in_proj_weight.T + block.attn.in_proj_bias
    q, k, v = qkv.split(W, dim=-1)
    causal = torch.full((L, L), float("-inf")).triu(1)
    outs = []
    for i in range(heads):
        sl = slice(i * d, (i + 1) * d)
        w = (q[:, sl] @ k[:, sl].T) / d**0.5 + causal
        outs.append(w.softmax(-1) @ v[:, sl])
    x = x + torch.cat(outs, -1) @ block.attn.out_proj.weight.T + block.attn.out_proj.bias
    h = F.layer_norm(x, (W,), block.ln_2.weight, block.ln_2.bias, block.ln_2.eps)
    h = h @ block.mlp.c_fc.weight.T + block.mlp.c_fc.bias
    h = h * torch.sigmoid(1.702 * h)
    return x + h @ block.mlp.c_proj.weight.T + block.mlp.c_proj.bias


def _manual_encode(clip, emb, ids, deep, round16):
    """Per prompt, per layer: replace rows 1..t before blocks 2..d, then ln_final[EOS] @ proj."""
    heads = clip.transformer.resblocks[0].attn.num_heads
    out = []
    for p in range(emb.shape[0]):
        x = emb[p] + clip.positional_embedding
        for j, block in enumerate(clip.transformer.resblocks):
            if 1 <= j <= len(deep):
                t = deep[j - 1].detach().numpy()
                if round16:
                    t = t.astype(np.float16).astype(np.float32)
                x = x.clone()
                x[1 : 1 + t.shape[0]] = torch.from_numpy(t)
            x = _manual_block(x, block, heads)
        x = F.layer_norm(x, x.shape[-1:], clip.ln_final.weight, clip.ln_final.bias, clip.ln_final.eps)
        eos = int(np.argmax(ids[p].numpy()))
        out.append(x[eos] @ clip.text_projection)
    return torch.stack(out)


def _inputs(clip, depth=5, length=3, seed=0):
    cfg = small_cfg(deep_depth=depth, deep_length=length)
    gen = torch.Generator().manual_seed(seed)
    learner = build_prompt_learner(cfg, 128, 77, gen)
    deep = DeepTextPrompts(depth, length, 128, generator=gen)
    with torch.no_grad():  # larger than N(0, 0.02) so fp16 rounding is clearly visible
        for t in deep.tensors:
            t.mul_(50)
    emb, ids = learner(clip.token_embedding)
    return emb, ids, deep


@pytest.mark.parametrize("round16", [True, False])
def test_deep_injection_matches_manual_loop(clip, round16):
    emb, ids, deep = _inputs(clip)
    emb, ids = emb[1:3], ids[1:3]  # two prompts of different lengths keep the manual loop quick
    with torch.no_grad():
        ours = encode_prompts(clip, emb, ids, list(deep.tensors), fp16_rounding=round16)
        ref = _manual_encode(clip, emb, ids, list(deep.tensors), round16)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_fp16_rounding_changes_features_and_equals_prerounded_input(clip):
    emb, ids, deep = _inputs(clip)
    tensors = list(deep.tensors)
    with torch.no_grad():
        on = encode_prompts(clip, emb, ids, tensors, fp16_rounding=True)
        off = encode_prompts(clip, emb, ids, tensors, fp16_rounding=False)
        pre = encode_prompts(clip, emb, ids, [t.half().float() for t in tensors], fp16_rounding=False)
    assert not torch.equal(on, off)
    assert torch.equal(on, pre)


def test_fp16_rounding_rounds_the_gradient(clip):
    """Backward of the released cast: each prompt's gradient is rounded to fp16 (then summed)."""
    emb, ids, deep = _inputs(clip, depth=3, length=2)
    emb, ids = emb[:1].detach(), ids[:1]  # one prompt: the sum over prompts is trivial, so exact
    weights = torch.randn(1, 64, generator=torch.Generator().manual_seed(3)) * 1e3
    out = encode_prompts(clip, emb, ids, list(deep.tensors), fp16_rounding=True)
    (grad,) = torch.autograd.grad((out * weights).sum(), deep.tensors[0])
    rounded = [t.detach().half().float().requires_grad_() for t in deep.tensors]
    o = encode_prompts(clip, emb, ids, rounded, fp16_rounding=False)
    (exact,) = torch.autograd.grad((o * weights).sum(), rounded[0])
    assert torch.equal(grad, exact.half().float())
    assert not torch.equal(grad, exact)  # the rounding is real


def test_no_deep_prompts_equals_open_clip_encode_text(clip):
    ids = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 269, 49407] + [0] * 69])
    with torch.no_grad():
        ours = encode_prompts(clip, clip.token_embedding(ids), ids, None)
        ref = clip.encode_text(ids)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)  # we stop at the last EOS


def test_unused_projections_frozen_and_counted(clip):
    deep = DeepTextPrompts(9, 4, 128)
    assert len(deep.tensors) == 8 and len(deep.unused_projections) == 8
    assert deep.unused_projections[0].weight.shape == (896, 128)
    assert all(not p.requires_grad for p in deep.unused_projections.parameters())
    assert deep.trainable() == list(deep.tensors)
