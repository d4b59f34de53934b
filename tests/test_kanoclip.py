"""KAnoCLIP (spec/kanoclip.md section 14): the checkable facts on a tiny random CLIP, each against an
independent computation (brute-force attention, open_clip's encode_text, hand-written formulas)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from glocal_lib.errors import ConfigError
from glocal_lib.model.backbone import load_clip
from glocal_lib.model.detector import VisionFeatures
from glocal_lib.model.kanoclip import KAnoCLIPConfig, KAnoCLIPDetector, kd_hinge
from glocal_lib.model.kanoclip.bica import Attention, DeformableSelfAttention
from glocal_lib.model.kanoclip.knowledge import Knowledge, encode_texts
from glocal_lib.model.vision import DualPathVisionEncoder

BACKBONE, SIZE = "glocal-tiny-8", 56  # 4x4 patch grid
CATS = ["bottle", "metal_nut", "bottle", "metal_nut"]
PATHS = [f"{c}/test/{i}.png" for i, c in enumerate(CATS)]


def _model(seed: int = 0, **cfg) -> KAnoCLIPDetector:
    cfg = KAnoCLIPConfig(**{"prompt_length": 3, **cfg})
    return KAnoCLIPDetector(load_clip(BACKBONE, seed=0), cfg, backbone=BACKBONE, image_size=SIZE, seed=seed)


def _knowledge(n_class: int = 5) -> Knowledge:
    classes = {f"mvtec/{c}": tuple(f"An abnormal image of {c} shows defect {i}." for i in range(n_class))
               for c in dict.fromkeys(CATS)}
    images = {f"mvtec/{p}": (f"The {c} has a small hole near item {i}.",) for i, (c, p) in enumerate(zip(CATS, PATHS))}
    return Knowledge("test.json", "sha-test", classes, images)


def _index() -> pd.DataFrame:
    return pd.DataFrame({"category": CATS, "image_path": PATHS})


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(len(CATS), 3, SIZE, SIZE, generator=g)
    masks = (torch.rand(len(CATS), SIZE, SIZE, generator=g) > 0.8).float()
    masks[0] = 0
    labels = (masks.flatten(1).amax(1) > 0).long()
    return images, labels, masks


@pytest.fixture(scope="module")
def model():
    m = _model()
    m.attach_knowledge(_knowledge(), "mvtec", _index())
    return m


@pytest.fixture(scope="module")
def feats(model):
    images, labels, masks = _batch()
    return model.encode_image(images), labels, masks


def _cos_logits(patch: torch.Tensor, text: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    return F.normalize(patch, dim=-1) @ F.normalize(text, dim=-1).T / tau


# ---- fact 1: the KD loss -----------------------------------------------------------------------
def test_kd_hinge_by_hand():
    g = torch.Generator().manual_seed(0)
    k, n, a = (torch.randn(5, 16, generator=g) for _ in range(3))
    got = kd_hinge(k, n, a)
    for i in range(5):
        ku, nu, au = (v[i] / math.sqrt(float((v[i] ** 2).sum())) for v in (k, n, a))
        da = math.sqrt(float(((ku - au) ** 2).sum()))
        dn = math.sqrt(float(((ku - nu) ** 2).sum()))
        assert float(got[i]) == pytest.approx(max(0.0, da - dn), abs=1e-6)


def test_knowledge_vector_is_mean_of_six_raw_text_features(model):
    kn = _knowledge()
    sentences = list(kn.classes["mvtec/bottle"]) + list(kn.images[f"mvtec/{PATHS[0]}"])
    ref = model.clip.encode_text(torch.cat([_tok(s) for s in sentences])).mean(0)  # open_clip, independent
    got = model._kvec[("bottle", PATHS[0])]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def _tok(s: str) -> torch.Tensor:
    import open_clip

    return open_clip.tokenize([s])


def test_kd_loss_of_a_batch_and_zero_gradient_when_inactive(model, feats):
    f, labels, masks = feats
    out = model.compute_losses(f, labels, masks, CATS, PATHS)
    rows = []
    for c, p in zip(CATS, PATHS):
        raw = model.text_features(c).detach()
        rows.append(kd_hinge(model._kvec[(c, p)][None], raw[0:1], raw[1:2]))
    torch.testing.assert_close(out["kd"], torch.cat(rows).mean(), atol=1e-6, rtol=1e-5)
    # hinge inactive for every image: w^k = w^a (knowledge closer to the abnormal prompt than the normal one)
    m = _model(global_loss_weight=0.0, local_loss_weight=0.0)
    m.attach_knowledge(_knowledge(), "mvtec", _index())
    for c, p in zip(CATS, PATHS):
        m._kvec[(c, p)] = m.text_features(c).detach()[1]
    loss = m.compute_losses(f, labels, masks, CATS, PATHS)
    assert float(loss["kd"].detach()) == 0.0
    loss["total"].backward()
    for p in m.text_prompts.parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0


def test_kd_gradient_reaches_prompts_through_frozen_text_tower(model, feats):
    m = _model(global_loss_weight=0.0, local_loss_weight=0.0)
    m.attach_knowledge(_knowledge(), "mvtec", _index())
    noise = torch.randn(64, generator=torch.Generator().manual_seed(4))
    for c, p in zip(CATS, PATHS):  # w^k near w^n: every hinge on (|k^ - a^| > |k^ - n^|)
        w = m.text_features(c).detach()[0]
        m._kvec[(c, p)] = w + 0.05 * w.norm() * noise / noise.norm()
    f, labels, masks = feats
    loss = m.compute_losses(f, labels, masks, CATS, PATHS)
    assert float(loss["kd"].detach()) > 0
    loss["total"].backward()
    assert all(torch.count_nonzero(p.grad) > 0 for p in m.text_prompts.parameters())
    assert all(p.grad is None for p in m.clip.parameters())


# ---- fact 2: BiCA at initialisation is the identity ----------------------------------------------
def test_bica_at_init_gives_plain_cosine_logits(model, feats):
    f, _, _ = feats
    text = model.text_embeddings("bottle").detach()
    for i, bica in enumerate(model.bica):
        z = bica(f.patch[:2, i], text.expand(2, -1, -1))
        torch.testing.assert_close(z, _cos_logits(f.patch[:2, i], text), atol=1e-4, rtol=1e-5)
    pred = model.predict(f[:1], sigma=0, class_names=["bottle"])
    zsum = sum(_cos_logits(f.patch[0, i], text) for i in range(4))  # (N, 2)
    g = int(math.isqrt(zsum.shape[0]))
    ma = zsum.softmax(-1)[:, 1].reshape(1, 1, g, g)
    ma = F.interpolate(ma, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(pred.maps[0], ma, atol=1e-5, rtol=1e-5)  # softmax: (M^a + 1 - M^n)/2 = M^a


@pytest.mark.parametrize("norm", ["softmax", "minmax"])
def test_confident_maps_keep_their_small_values(feats, norm, monkeypatch):
    """A confident model (Z_a - Z_n ~ -28: M^a ~ 1e-12, below fp32's rounding of 1) keeps a non-constant
    map equal to Eq. 10 computed in float64; ``M^a + 1 - M^n`` in fp32 made it exactly 0 (smoke KAnoCLIP)."""
    m = _model(map_norm=norm)
    f, _, _ = feats
    n = f.patch.shape[2]
    z = torch.randn(len(CATS), 4, n, 2, generator=torch.Generator().manual_seed(6))
    z[..., 0] += 7.0
    monkeypatch.setattr(m, "_stage_logits", lambda patch, text: z)
    pred = m.predict(f, sigma=0, class_names=CATS)
    zs = z.sum(1).double()  # (B, N, 2)
    if norm == "softmax":
        ma, mn = torch.sigmoid(zs[..., 1] - zs[..., 0]), torch.sigmoid(zs[..., 0] - zs[..., 1])
    else:
        lo, hi = zs.amin(1, keepdim=True), zs.amax(1, keepdim=True)
        ma, mn = ((zs - lo) / (hi - lo))[..., 1], ((zs - lo) / (hi - lo))[..., 0]
    g = int(math.isqrt(n))
    up = [F.interpolate(c.reshape(-1, 1, g, g), size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
          for c in (ma, mn)]
    ref = (up[0] + (1 - up[1])) / 2 if norm == "minmax" else up[0]  # float64: no cancellation to speak of
    if norm == "softmax":
        assert float(ref.max()) < 2**-24
    assert float(pred.maps.min()) > 0 and len(torch.unique(pred.maps)) > 100
    torch.testing.assert_close(pred.maps.double(), ref, rtol=1e-4, atol=1e-7 if norm == "minmax" else 0.0)


def test_without_bica_equals_fresh_bica(feats):
    f, _, _ = feats
    a = _model(use_bica=False).predict(f, class_names=CATS)
    b = _model().predict(f, class_names=CATS)
    torch.testing.assert_close(a.maps, b.maps, atol=1e-5, rtol=1e-5)


# ---- fact 3: DSA with stride 1 and zero offsets is global attention -------------------------------
def _randomise(mod: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in mod.named_parameters():
            if "offset_pw" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_dsa_stride1_zero_offsets_equals_brute_force_mha():
    dim, heads, g = 16, 4, 5
    dsa = DeformableSelfAttention(dim, heads, groups=4, stride=1)
    _randomise(dsa, 0)
    x = torch.randn(2, g * g, dim, generator=torch.Generator().manual_seed(1))
    got = dsa(x, x)
    # brute force with the same weights, per image, head and query
    q, k, v = dsa.q(x), dsa.k(x), dsa.v(x)
    d = dim // heads
    ref = torch.zeros_like(q)
    for b in range(2):
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            for i in range(g * g):
                w = torch.softmax(torch.stack([q[b, i, sl] @ k[b, j, sl] for j in range(g * g)]) / math.sqrt(d), 0)
                ref[b, i, sl] = (w[:, None] * v[b, :, sl]).sum(0)
    torch.testing.assert_close(got, dsa.out(ref), atol=1e-5, rtol=1e-5)
    glob = Attention(dim, heads)
    glob.load_state_dict({k: v for k, v in dsa.state_dict().items() if not k.startswith("offset")})
    torch.testing.assert_close(got, glob(x, x), atol=1e-5, rtol=1e-5)


def test_dsa_stride2_samples_a_reduced_grid_and_learns_offsets():
    dim, g = 16, 7
    dsa = DeformableSelfAttention(dim, 4, groups=4, stride=2)
    x = torch.randn(1, g * g, dim, generator=torch.Generator().manual_seed(2))
    pts = dsa.sample_points(dsa.q(x).transpose(1, 2).reshape(1, dim, g, g))
    assert pts.shape == (4, 4, 4, 2)  # groups, G_r = 4 for G = 7, (x, y)
    # zero offsets: the reference points are exactly the tokens 0, 2, 4, 6 in normalised coordinates
    torch.testing.assert_close(pts[0, 0, :, 0], torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]))
    _randomise(dsa, 3)
    dsa(x, x).sum().backward()
    assert dsa.offset_pw.weight.grad is not None and torch.count_nonzero(dsa.offset_pw.weight.grad) > 0


# ---- fact 4: maps and scores ---------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["softmax", "minmax"])
def test_maps_and_scores_ranges(feats, norm):
    m = _model(map_norm=norm)
    _randomise(m.bica, 5)
    f, _, _ = feats
    z = m._stage_logits(f.patch, m._batch_text(CATS, len(CATS), True)[0]).sum(1)
    probs = m._normalise_maps(z)
    if norm == "softmax":
        torch.testing.assert_close(probs.sum(1), torch.ones_like(probs[:, 0]), atol=1e-6, rtol=0)
    pred = m.predict(f, class_names=CATS)
    assert float(pred.maps.min()) >= 0 and float(pred.maps.max()) <= 1 + 1e-6
    assert bool(((pred.image_scores >= 0) & (pred.image_scores <= 1)).all())
    # S_global = (p_a + max M)/2 by hand
    text = m._batch_text(CATS, len(CATS), True)[0]
    ga = F.normalize(m.adapter(f.global_emb), dim=-1)
    p_a = torch.stack([(ga[i] @ text[i].T / 0.07).softmax(-1)[1] for i in range(len(CATS))])
    torch.testing.assert_close(pred.image_scores, (p_a + pred.maps.flatten(1).amax(1)) / 2, atol=1e-5, rtol=1e-5)
    lit = _model(map_norm=norm, global_score="literal_sum")
    lit.load_state_dict(m.state_dict())
    torch.testing.assert_close(lit.predict(f, class_names=CATS).image_scores, p_a + pred.maps.flatten(1).amax(1),
                               atol=1e-5, rtol=1e-5)


# ---- fact 5: vision features and a frozen tower ---------------------------------------------------
def _brute_force_vv(visual: torch.nn.Module, x: torch.Tensor, start: int, layers: tuple[int, ...]):
    """V-V dual path written out with nn.MultiheadAttention for the original stream."""
    o = DualPathVisionEncoder(visual, feature_layers=layers, image_size=SIZE).embed(x)
    v, taken = None, {}
    for idx, blk in enumerate(visual.transformer.resblocks, start=1):
        if idx < start:
            o = blk(o)
        else:
            v = o if v is None else v
            y = blk.ln_1(o)
            a = blk.attn
            h, w = a.num_heads, y.shape[-1]
            vals = F.linear(y, a.in_proj_weight[2 * w:], a.in_proj_bias[2 * w:])
            vh = vals.reshape(y.shape[0], -1, h, w // h).transpose(1, 2)
            vv = ((vh @ vh.transpose(-1, -2)) / math.sqrt(w // h)).softmax(-1) @ vh
            v = v + a.out_proj(vv.transpose(1, 2).reshape(y.shape))
            o = o + a(y, y, y, need_weights=False)[0]
            o = o + blk.mlp(blk.ln_2(o))
        if idx in layers:
            taken[idx] = v if v is not None else o
    patch = torch.stack([visual.ln_post(taken[k][:, 1:]) @ visual.proj for k in layers], 1)
    return visual.ln_post(v[:, 0]) @ visual.proj, o[:, 0] @ visual.proj, patch


def test_vision_features_match_anomalyclip_dual_path_and_vv_global(model):
    images, _, _ = _batch(1)
    f = model.encode_image(images)
    ref = DualPathVisionEncoder(model.clip.visual, vv_start_layer=2, feature_layers=(2, 4, 6, 8),
                                alias_final_layer=False, image_size=SIZE)(images)
    torch.testing.assert_close(f.patch, ref[1], atol=1e-5, rtol=1e-5)
    g_vv, g_orig, patch = _brute_force_vv(model.clip.visual, images, 2, (2, 4, 6, 8))
    torch.testing.assert_close(f.global_emb, g_vv, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(f.patch, patch, atol=1e-4, rtol=1e-4)
    orig = _model(global_source="original").encode_image(images)
    torch.testing.assert_close(orig.global_emb, ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(orig.global_emb, g_orig, atol=1e-4, rtol=1e-4)
    assert model.vision_signature()["global_source"] == "vv"


def test_total_loss_leaves_the_backbone_without_gradients(feats):
    m = _model()
    m.attach_knowledge(_knowledge(), "mvtec", _index())
    f, labels, masks = feats
    m.compute_losses(f, labels, masks, CATS, PATHS)["total"].backward()
    assert all(p.grad is None for p in m.clip.parameters())
    assert all(p.grad is not None for p in m.prompt_parameters())


# ---- fact 6: class-aware batching ----------------------------------------------------------------
def test_mixed_batch_equals_each_category_alone(feats):
    m = _model()
    _randomise(m.bica, 7)
    f, _, _ = feats
    mixed = m.predict(f, class_names=CATS)
    for cat in dict.fromkeys(CATS):
        idx = torch.tensor([i for i, c in enumerate(CATS) if c == cat])
        alone = m.predict(f[idx], class_names=[cat] * len(idx))
        torch.testing.assert_close(mixed.maps[idx], alone.maps, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(mixed.image_scores[idx], alone.image_scores, atol=1e-6, rtol=1e-5)


# ---- fact 8: parameter count ---------------------------------------------------------------------
def test_parameter_count_matches_spec_formula(model):
    d, wt, k = 64, 128, 3
    bica = 4 * 4 * (d * d + d) + 6 * 2 * d + ((d // 4) * 25 + d // 4 + (d // 4) * 2)
    db = d // 4
    adapter = 2 * d + d * db + db + db * d + d
    assert sum(p.numel() for p in model.prompt_parameters()) == 2 * k * wt + 4 * bica + adapter


def test_vit_l_formula_is_the_specs_38_2m():
    d, wt, k, db = 768, 768, 12, 192
    bica = 4 * 4 * (d * d + d) + 6 * 2 * d + ((d // 4) * 25 + d // 4 + (d // 4) * 2)
    assert bica == 9_464_064
    assert 2 * k * wt + 4 * bica + (2 * d + d * db + db + db * d + d) == 38_172_096


# ---- prompts, training, options ------------------------------------------------------------------
def test_prompts_hold_adjective_and_class_with_multi_token_words(model):
    texts = model.text_prompts.prompt_texts("metal nut")
    assert texts == ["X X X normal metal nut.", "X X X perfect metal nut.", "X X X abnormal metal nut.",
                     "X X X defective metal nut."]
    ids = model.text_prompts.token_ids("metal nut")
    assert int(ids[3].argmax()) > int(ids[2].argmax())  # "defective" is two BPE tokens
    raw = model.text_features("metal_nut")  # '_' -> ' '
    emb, tok = model.text_prompts(model.clip.token_embedding, "metal nut")
    feats = model.clip.encode_text(tok)  # placeholders not replaced: differs; replace by hand instead
    assert feats.shape == (4, 64)
    from glocal_lib.model.text import encode_prompts

    ref = encode_prompts(model.clip, emb, tok)
    torch.testing.assert_close(raw, torch.stack([ref[:2].mean(0), ref[2:].mean(0)]))


def test_adam_steps_lower_the_loss(feats):
    m = _model()
    m.attach_knowledge(_knowledge(), "mvtec", _index())
    f, labels, masks = feats
    opt = torch.optim.Adam(m.prompt_parameters(), lr=1e-3, betas=(0.5, 0.999))
    frozen = {k: v.clone() for k, v in m.clip.state_dict().items()}
    first = None
    for _ in range(8):
        loss = m.compute_losses(f, labels, masks, CATS, PATHS)
        first = float(loss["total"].detach()) if first is None else first
        opt.zero_grad()
        loss["total"].backward()
        opt.step()
    assert float(m.compute_losses(f, labels, masks, CATS, PATHS)["total"]) < first
    assert all(torch.equal(v, frozen[k]) for k, v in m.clip.state_dict().items())


def test_loss_composition_and_literal_sum_training(feats):
    f, labels, masks = feats
    m = _model(kd_weight=0.5, global_loss_weight=2.0, local_loss_weight=3.0)
    m.attach_knowledge(_knowledge(), "mvtec", _index())
    out = m.compute_losses(f, labels, masks, CATS, PATHS)
    torch.testing.assert_close(out["total"], 0.5 * out["kd"] + 2 * out["global"] + 3 * out["local"])
    torch.testing.assert_close(out["local"], out["focal"] + out["dice"])
    lit = _model(global_score="literal_sum", kd_weight=0.0)
    lit.load_state_dict(m.state_dict())
    text = lit._batch_text(CATS, len(CATS), True)[0]
    p_a = lit._global_probability(f.global_emb, text)
    ref = F.binary_cross_entropy(p_a, labels.float())
    torch.testing.assert_close(lit.compute_losses(f, labels, masks, CATS)["global"], ref)


def test_no_knowledge_needs_none_and_knowledge_loss_without_it_is_a_clear_error(feats):
    f, labels, masks = feats
    out = _model(kd_weight=0.0).compute_losses(f, labels, masks, CATS)
    assert float(out["kd"]) == 0.0
    with pytest.raises(ConfigError, match="kanoclip-noknowledge"):
        _model().compute_losses(f, labels, masks, CATS, PATHS)


def test_same_seed_same_model_and_config_checks():
    a, b = _model(seed=3), _model(seed=3)
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), ka
    with pytest.raises(ConfigError, match="map_norm"):
        KAnoCLIPConfig(map_norm="sigmoid")
    with pytest.raises(ConfigError, match=r"unknown KAnoCLIPConfig option\(s\) \[.gcl_lambda.\]"):
        KAnoCLIPConfig.from_dict({"method": "kanoclip", "gcl_lambda": 1.0})
    cfg = KAnoCLIPConfig(normal_adjectives=("flawless",))
    assert KAnoCLIPConfig.from_dict(cfg.to_dict()) == cfg


def test_table3_base_variant_runs_on_plain_clip(feats):
    images, labels, masks = _batch()
    m = _model(dual_path=False, use_bica=False, use_adapter=False, kd_weight=0.0)
    f = m.encode_image(images)
    v = m.clip.visual
    ref = DualPathVisionEncoder(v, vv_start_layer=None, feature_layers=(2, 4, 6, 8), image_size=SIZE,
                                global_source="vv")(images)
    torch.testing.assert_close(f.patch, ref[1])
    assert m.prompt_parameters() == list(m.text_prompts.parameters())
    pred = m.predict(f, class_names=CATS)
    assert pred.maps.shape == (len(CATS), SIZE, SIZE)
    assert isinstance(f, VisionFeatures)


def test_encode_texts_truncates_long_descriptions_keeping_eos(model):
    long = " ".join(["scratch"] * 120)
    feats, n = encode_texts(model.clip, [long, "a short one"])
    assert n == 1 and feats.shape == (2, 64)
