"""Dual-path vision encoder against brute force and an independent re-implementation of the released code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from glocal_lib.errors import ConfigError
from glocal_lib.model.backbone import load_clip
from glocal_lib.model.vision import ATTENTION_VARIANTS, DualPathVisionEncoder, dual_path_attention

TINY8_LAYERS = (2, 4, 6, 8)


@pytest.fixture(scope="module")
def tiny8():
    return load_clip("glocal-tiny-8", seed=3)


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 56, 56, generator=g)  # 4x4 grid: positional table resized from 16x16


# ---------------------------------------------------------------- attention arithmetic, per head by hand
def _brute_force_attention(x: np.ndarray, w_in, b_in, w_out, b_out, heads: int, variant: str) -> np.ndarray:
    """Loop over images, heads, query tokens and key tokens in float64."""
    n_img, n_tok, width = x.shape
    d = width // heads
    out = np.zeros_like(x)
    pick = {"q": 0, "k": 1, "v": 2}
    for b in range(n_img):
        proj = x[b] @ w_in.T + b_in  # (N, 3W): q | k | v
        heads_out = np.zeros((n_tok, width))
        for h in range(heads):
            part = {name: proj[:, i * width + h * d : i * width + (h + 1) * d] for name, i in pick.items()}
            left, right = part[variant[0]], part[variant[1]]
            for i in range(n_tok):
                scores = np.array([left[i] @ right[j] for j in range(n_tok)]) / np.sqrt(d)
                weights = np.exp(scores - scores.max())
                weights /= weights.sum()
                heads_out[i, h * d : (h + 1) * d] = sum(weights[j] * part["v"][j] for j in range(n_tok))
        out[b] = heads_out @ w_out.T + b_out
    return out


@pytest.mark.parametrize("variant", sorted(ATTENTION_VARIANTS))
def test_attention_variants_match_per_head_brute_force(tiny8, variant):
    attn = tiny8.visual.transformer.resblocks[3].attn
    assert attn.num_heads == 2
    x = torch.randn(2, 7, attn.embed_dim, generator=torch.Generator().manual_seed(1))
    original, second = dual_path_attention(x, attn, variant)
    args = [t.detach().double().numpy() for t in (attn.in_proj_weight, attn.in_proj_bias)]
    args += [t.detach().double().numpy() for t in (attn.out_proj.weight, attn.out_proj.bias)]
    ref_second = _brute_force_attention(x.double().numpy(), *args, heads=attn.num_heads, variant=variant)
    ref_original = _brute_force_attention(x.double().numpy(), *args, heads=attn.num_heads, variant="qk")
    np.testing.assert_allclose(second.double().numpy(), ref_second, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(original.double().numpy(), ref_original, atol=2e-5, rtol=1e-4)
    # the ordinary attention is what nn.MultiheadAttention computes
    torch.testing.assert_close(original, attn(x, x, x, need_weights=False)[0], atol=1e-5, rtol=1e-5)


def test_attention_variants_differ(tiny8):
    attn = tiny8.visual.transformer.resblocks[3].attn
    x = torch.randn(1, 9, attn.embed_dim, generator=torch.Generator().manual_seed(2))
    outs = {v: dual_path_attention(x, attn, v)[1] for v in ATTENTION_VARIANTS}
    for a in outs:
        for b in outs:
            if a < b:
                assert not torch.allclose(outs[a], outs[b], atol=1e-4), (a, b)


# ------------------------------------------------ the released code's forward, written out layer by layer
def _ln(x, mod):
    return F.layer_norm(x, mod.normalized_shape, mod.weight, mod.bias, mod.eps)


def _mlp(x, block):
    h = F.linear(x, block.mlp.c_fc.weight, block.mlp.c_fc.bias)
    h = h * torch.sigmoid(1.702 * h)  # QuickGELU
    return F.linear(h, block.mlp.c_proj.weight, block.mlp.c_proj.bias)


def _released_attention(x_lnd, attn):
    """The released `Attention` module: input LND, returns (v-v result, q-k result), LND."""
    x = x_lnd.transpose(0, 1)
    b, n, c = x.shape
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).reshape(
        b, n, 3, attn.num_heads, c // attn.num_heads
    )
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    scale = (c // attn.num_heads) ** -0.5
    attn_ori = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
    attn_vv = ((v @ v.transpose(-2, -1)) * scale).softmax(dim=-1)
    x_ori = F.linear(
        (attn_ori @ v).transpose(1, 2).reshape(b, n, c), attn.out_proj.weight, attn.out_proj.bias
    )
    x_vv = F.linear((attn_vv @ v).transpose(1, 2).reshape(b, n, c), attn.out_proj.weight, attn.out_proj.bias)
    return x_vv.transpose(0, 1), x_ori.transpose(0, 1)


def _released_forward(visual, images, features, dpam_start, clone):
    """Sequence-first (LND) forward with the released in-place updates; `clone` = AnomalyCLIP's copies."""
    patch = visual.conv1.kernel_size[0]
    x = F.conv2d(images, visual.conv1.weight, stride=patch)
    b, c = x.shape[:2]
    x = x.reshape(b, c, -1).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding + torch.zeros(b, 1, c), x], dim=1)
    side = int((visual.positional_embedding.shape[0] - 1) ** 0.5)
    new_side = int((x.shape[1] - 1) ** 0.5)
    pos = visual.positional_embedding
    if side != new_side:
        grid = pos[1:].reshape(1, side, side, c).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, (new_side, new_side), mode="bilinear")
        pos = torch.cat([pos[:1], grid.reshape(c, -1).transpose(0, 1)], 0)
    x = _ln(x + pos, visual.ln_pre).permute(1, 0, 2)
    out_tokens = []
    for idx, block in enumerate(visual.transformer.resblocks, start=1):
        a = block.attn
        if idx < dpam_start:
            h = _ln(x, block.ln_1)
            res = F.multi_head_attention_forward(
                h,
                h,
                h,
                a.embed_dim,
                a.num_heads,
                a.in_proj_weight,
                a.in_proj_bias,
                None,
                None,
                False,
                0.0,
                a.out_proj.weight,
                a.out_proj.bias,
                need_weights=False,
            )[0]
            x = x + res
            x = x + _mlp(_ln(x, block.ln_2), block)
        elif not isinstance(x, list):  # start of the dual path
            res, ori_res = _released_attention(_ln(x, block.ln_1), a)
            x_ori = x + ori_res
            x_ori = x_ori + _mlp(_ln(x_ori, block.ln_2), block)
            x += res
            x = [x, x_ori]
        else:
            xv, xo = x
            res, ori_res = _released_attention(_ln(xo, block.ln_1), a)
            xo += ori_res
            xo = xo + _mlp(_ln(xo, block.ln_2), block)
            xv += res
            x = [xv, xo]
        if idx in features:
            t = x[0] if isinstance(x, list) else x
            out_tokens.append(t.clone() if clone else t)
    x_ori = x[1] if isinstance(x, list) else x
    patches = [_ln(t.permute(1, 0, 2), visual.ln_post) @ visual.proj for t in out_tokens]
    return x_ori[0] @ visual.proj, torch.stack(patches, 1)[:, :, 1:]


@pytest.mark.parametrize(
    ("alias", "start", "layers"),
    [(True, 2, TINY8_LAYERS), (False, 2, TINY8_LAYERS), (True, 4, (2, 3, 5, 8)), (False, 4, (2, 3, 5, 8))],
)
def test_dual_path_matches_released_layer_by_layer(tiny8, images, alias, start, layers):
    enc = DualPathVisionEncoder(
        tiny8.visual, vv_start_layer=start, feature_layers=layers, alias_final_layer=alias, image_size=56
    )
    with torch.no_grad():
        g, p = enc(images)
        g_ref, p_ref = _released_forward(tiny8.visual, images, layers, start, clone=not alias)
    assert g.shape == (2, 64) and p.shape == (2, 4, 16, 64)
    torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p, p_ref, atol=1e-5, rtol=1e-5)


def test_size_not_multiple_of_patch_behaves_like_strided_conv(tiny8):
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))  # 4x4 grid, 8 pixels unused
    enc = DualPathVisionEncoder(tiny8.visual, vv_start_layer=2, feature_layers=TINY8_LAYERS, image_size=64)
    assert enc.grid == 4
    with torch.no_grad():
        g, p = enc(x)
        g_ref, p_ref = _released_forward(tiny8.visual, x, TINY8_LAYERS, 2, clone=False)
    torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(p, p_ref, atol=1e-5, rtol=1e-5)


def test_released_aliasing_all_layers_equal_final(tiny8, images):
    kw = {"vv_start_layer": 2, "feature_layers": TINY8_LAYERS, "image_size": 56}
    with torch.no_grad():
        _, aliased = DualPathVisionEncoder(tiny8.visual, alias_final_layer=True, **kw)(images)
        _, true_layers = DualPathVisionEncoder(tiny8.visual, alias_final_layer=False, **kw)(images)
    for i in range(4):
        assert torch.equal(aliased[:, i], aliased[:, 3])
        assert torch.equal(aliased[:, i], true_layers[:, 3])
    for i in range(3):
        assert (true_layers[:, i] - true_layers[:, 3]).abs().max() > 1e-3


def test_layer_before_dual_path_is_not_aliased(tiny8, images):
    # block 1 output is an ordinary tensor the released code never updates in place (start 3: block 2's is)
    kw = {"vv_start_layer": 3, "feature_layers": (1, 2, 8), "image_size": 56}
    with torch.no_grad():
        _, aliased = DualPathVisionEncoder(tiny8.visual, alias_final_layer=True, **kw)(images)
        _, true_layers = DualPathVisionEncoder(tiny8.visual, alias_final_layer=False, **kw)(images)
    torch.testing.assert_close(aliased[:, 0], true_layers[:, 0])
    assert torch.equal(aliased[:, 1], aliased[:, 2])
    assert not torch.allclose(true_layers[:, 1], true_layers[:, 2], atol=1e-3)


def test_original_stream_is_plain_clip(tiny8):
    """The original stream is untouched CLIP: with ln_post its CLS equals open_clip's encode_image, and
    without a dual path the last layer's tokens equal open_clip's output tokens."""
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = tiny8.encode_image(x)
        for start in (2, None):
            enc = DualPathVisionEncoder(
                tiny8.visual, vv_start_layer=start, feature_layers=(8,), global_ln_post=True
            )
            g, p = enc(x)
            torch.testing.assert_close(g, expected, atol=1e-5, rtol=1e-5)
        tiny8.visual.output_tokens = True
        try:
            _, tokens = tiny8.visual(x)
        finally:
            tiny8.visual.output_tokens = False
        torch.testing.assert_close(p[:, 0], tokens @ tiny8.visual.proj, atol=1e-5, rtol=1e-5)
        g_raw, _ = DualPathVisionEncoder(tiny8.visual, vv_start_layer=2, feature_layers=(8,))(x)
    assert not torch.allclose(g_raw, expected, atol=1e-3)  # released default skips ln_post


def test_bad_configuration_rejected(tiny8):
    with pytest.raises(ConfigError):
        DualPathVisionEncoder(tiny8.visual, feature_layers=(6, 12))
    with pytest.raises(ConfigError):
        DualPathVisionEncoder(tiny8.visual, vv_start_layer=2, feature_layers=TINY8_LAYERS, attention="vq")
    with pytest.raises(ConfigError):
        DualPathVisionEncoder(tiny8.visual, vv_start_layer=2, feature_layers=TINY8_LAYERS, image_size=10)
    enc = DualPathVisionEncoder(tiny8.visual, vv_start_layer=2, feature_layers=TINY8_LAYERS, image_size=56)
    with pytest.raises(ConfigError):
        enc(torch.zeros(1, 3, 70, 70))


def test_bf16_autocast_close_to_fp32(tiny8, images):
    enc = DualPathVisionEncoder(tiny8.visual, vv_start_layer=2, feature_layers=TINY8_LAYERS, image_size=56)
    with torch.no_grad():
        g32, p32 = enc(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            g16, p16 = enc(images)
    for a, b in ((g32, g16.float()), (p32, p16.float())):
        cos = F.cosine_similarity(a.flatten(0, -2), b.flatten(0, -2), dim=-1)
        assert cos.min() > 0.99
    assert not torch.equal(p32, p16.float())  # autocast really ran in half precision


def test_fused_attention_close_to_exact(tiny8, images):
    kw = {"vv_start_layer": 2, "feature_layers": TINY8_LAYERS, "image_size": 56}
    with torch.no_grad():
        g, p = DualPathVisionEncoder(tiny8.visual, **kw)(images)
        gf, pf = DualPathVisionEncoder(tiny8.visual, fused_attention=True, **kw)(images)
    torch.testing.assert_close(gf, g, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pf, p, atol=1e-4, rtol=1e-4)


def test_no_trainable_parameters(tiny8):
    enc = DualPathVisionEncoder(tiny8.visual, vv_start_layer=2, feature_layers=TINY8_LAYERS)
    assert not any(p.requires_grad for p in enc.parameters())


@pytest.mark.slow
def test_full_size_vit_l_14_336_at_518():
    model = load_clip("ViT-L-14-336-quickgelu", seed=0)
    # fused kernels halve the CPU time; the exact arithmetic is checked on the tiny towers above
    enc = DualPathVisionEncoder(model.visual, image_size=518, fused_attention=True)
    assert enc.grid == 37 and enc.depth == 24 and enc.output_dim == 768
    assert model.visual.transformer.resblocks[0].attn.num_heads == 16
    with torch.no_grad():
        g, p = enc(torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(0)))
    assert g.shape == (1, 768) and p.shape == (1, 4, 1369, 768)
    assert torch.isfinite(p).all() and torch.isfinite(g).all()
    assert torch.equal(p[:, 0], p[:, 3])  # released aliasing default
