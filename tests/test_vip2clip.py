"""ViP2-CLIP (spec vip2clip.md section 12): each checkable fact on a tiny random CLIP, brute-force
versions of FGP and the top-k image score, training, determinism and the released checkpoint format."""

from __future__ import annotations

import math

import pytest
import torch
from helpers_model import BACKBONE, tiny_clip
from torch import nn

from glocal_lib.config import config_from_dict, load_preset
from glocal_lib.errors import ConfigError
from glocal_lib.model import VisionFeatures, build_model
from glocal_lib.model.prompts import tokenize
from glocal_lib.model.vip2clip import (
    FineGrainedPerception,
    ImageConditionedPrompts,
    Vip2ClipDetector,
    round_tf32,
)
from glocal_lib.model.vision import DualPathVisionEncoder
from glocal_lib.vip2clip_config import Vip2ClipConfig

SIZE = 56  # 4x4 patch grid
TOPK = 5


def cfg(**kw) -> Vip2ClipConfig:
    return Vip2ClipConfig(**{"n_ctx": 3, "n_cls": 2, "topk": TOPK, **kw})


def model(seed: int = 0, **kw) -> Vip2ClipDetector:
    return Vip2ClipDetector(tiny_clip(), cfg(**kw), backbone=BACKBONE, image_size=SIZE, seed=seed)


def images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def sharpen(m: Vip2ClipDetector, gain: float = 6.0) -> None:
    """Non-trivial FGP weights: at the default init the attention is nearly uniform (spec 13)."""
    with torch.no_grad():
        for fgp in m.fgp:
            fgp.q_proj.weight.mul_(gain)
            fgp.k_proj.weight.mul_(gain)


def test_preset_and_config_registry():
    c = load_preset("vip2clip-released")
    assert type(c) is Vip2ClipConfig and c.n_ctx == 7 and c.n_cls == 3 and c.topk == 50 and c.sigma == 8.0
    assert config_from_dict(c.to_dict()) == c
    assert c.adam_betas == (0.9, 0.999) and c.fgp_lr_scale == 0.01
    paper = load_preset("vip2clip-paper")
    assert (paper.normal_state_word_bug, paper.fgp_scale, paper.image_score) == (False, "sqrt_dim", "paper")


# ---- 1. token layout ---------------------------------------------------------------------
@pytest.mark.parametrize("bug", [True, False])
def test_token_layout(bug):
    m = model(normal_state_word_bug=bug)
    ica = m.ica
    n, r = ica.n_ctx, ica.n_cls
    assert ica.token_ids.argmax(-1).tolist() == [1 + n + 1 + r] * 2
    emb, ids = ica(None)
    tok = m.clip.token_embedding
    word = "damaged" if bug else "good"
    expected = tok(tokenize(word)[1:2])[0]
    assert torch.equal(emb[0, n + 1], expected)
    assert torch.equal(emb[1, n + 1], tok(tokenize("damaged")[1:2])[0])
    diff = (emb[0] != emb[1]).any(-1).nonzero().flatten().tolist()
    assert diff == (list(range(1, n + 1)) if bug else list(range(1, n + 2)))
    assert torch.equal(emb[0, 1 : n + 1], ica.ctx_pos) and torch.equal(emb[0, n + 2 : n + 2 + r], ica.cls_ctx)


def test_multi_token_state_word_is_refused():
    with pytest.raises(ConfigError, match="BPE tokens"):
        model(anomaly_state="zzzqqqxx")


def test_topk_larger_than_grid_is_refused():
    with pytest.raises(ConfigError, match="topk=17 exceeds the 16 patch tokens"):
        model(topk=17)


# ---- 2. ICA conditioning -------------------------------------------------------------------
def test_ica_conditions_text_on_each_image():
    m = model()
    feats = m.encode_image(images(3))
    f = feats.global_emb / feats.global_emb.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        text = m.image_text(f)
        assert not torch.allclose(text[0], text[1], atol=1e-6)
        for h in m.ica.meta_nets:
            h.fc2.weight.zero_()
            h.fc2.bias.zero_()
        flat = m.image_text(f)
    assert torch.allclose(flat, flat[:1].expand_as(flat), atol=1e-6)
    assert torch.allclose(flat[0], m.text_embeddings(), atol=1e-6)


def test_predict_is_per_image():
    m = model()
    sharpen(m)
    feats = m.encode_image(images(3))
    both = m.predict(feats, sigma=1.0)
    for i in range(3):
        one = m.predict(feats[i], sigma=1.0)
        assert torch.allclose(one.image_scores, both.image_scores[i : i + 1], atol=1e-6)
        assert torch.allclose(one.maps, both.maps[i : i + 1], atol=1e-6)


# ---- 3. FGP brute force ----------------------------------------------------------------------
def brute_fgp(fgp: FineGrainedPerception, text: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(text)
    d = text.shape[-1]
    h = fgp.heads
    dh = d // h

    def lin(m, x):
        return x @ m.weight.T + (m.bias if m.bias is not None else 0)

    for b in range(text.shape[0]):
        k, v = lin(fgp.k_proj, patches[b]), lin(fgp.v_proj, patches[b])
        for t in range(text.shape[1]):
            q = lin(fgp.q_proj, text[b, t])
            heads = []
            for j in range(h):
                sl = slice(j * dh, (j + 1) * dh)
                logits = torch.tensor([float(q[sl] @ k[m, sl]) * fgp.scale for m in range(k.shape[0])],
                                      dtype=torch.float64)
                w = torch.softmax(logits, 0).float()
                heads.append((w[:, None] * v[:, sl]).sum(0))
            o = lin(fgp.out_proj, torch.cat(heads))
            out[b, t] = o / o.norm()
    return out


@pytest.mark.parametrize("scale", ["none", "sqrt_dim"])
def test_fgp_matches_brute_force_and_is_permutation_invariant(scale):
    m = model(fgp_scale=scale)
    sharpen(m)
    fgp = m.fgp[0]
    g = torch.Generator().manual_seed(3)
    text = nn.functional.normalize(torch.randn(2, 2, 64, generator=g), dim=-1)
    patches = nn.functional.normalize(torch.randn(2, 16, 64, generator=g), dim=-1)
    with torch.no_grad():
        out = fgp(text, patches)
        assert torch.allclose(out, brute_fgp(fgp, text, patches), atol=2e-5)
        assert torch.allclose(out.norm(dim=-1), torch.ones(2, 2), atol=1e-6)
        perm = torch.randperm(16, generator=g)
        assert torch.allclose(fgp(text, patches[:, perm]), out, atol=1e-6)
        weights = fgp.attention(text, patches)[0]
    assert weights.std() > 1e-3  # the test weights make the attention non-uniform


# ---- 4. image score brute force ------------------------------------------------------------
def brute_score(m: Vip2ClipDetector, feats: VisionFeatures, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(image scores (B,), mean selected cosines (B, 2)) by sorting each layer's patches."""
    tau = m.cfg.temperature
    f = feats.global_emb / feats.global_emb.norm(dim=-1, keepdim=True)
    out = []
    for b in range(len(feats)):
        text = m.image_text(f[b : b + 1])[0]
        picked = []
        for li in range(feats.patch.shape[1]):
            p = feats.patch[b, li] / feats.patch[b, li].norm(dim=-1, keepdim=True)
            t = m.fgp[0](text[None], p[None])[0]
            cos = p @ t.T
            pa = (cos / tau).softmax(-1)[:, 1]
            picked.append(cos[pa.argsort(descending=True)[:k]])
        out.append(torch.cat(picked).mean(0))
    means = torch.stack(out)
    return (means / tau).softmax(-1)[:, 1], means


def test_image_score_matches_brute_force():
    m = model()
    sharpen(m)
    feats = m.encode_image(images(3))
    with torch.no_grad():
        scores, means = brute_score(m, feats, TOPK)
        assert torch.allclose(m.predict(feats, sigma=0).image_scores, scores, atol=1e-6)
        assert torch.allclose(m.forward_features(feats).image_logits * m.cfg.temperature, means, atol=1e-6)
        assert (means[:, 1] - means[:, 0]).abs().max() > 1e-3  # not a trivial tie
        full = model(topk=16)
        full.load_state_dict(m.state_dict())
        out = full.forward_features(feats)
        mean_all = out.cosines.mean(dim=(1, 2)) / full.cfg.temperature
        assert torch.allclose(out.image_logits, mean_all, atol=1e-5)


# ---- 5. map ------------------------------------------------------------------------------
def test_map_is_mean_over_layers_of_anomaly_probability():
    m = model()
    sharpen(m)
    feats = m.encode_image(images(2))
    with torch.no_grad():
        pred = m.predict(feats, sigma=0)
        probs = m.upsampled(m.forward_features(feats).probs)
    assert torch.allclose(pred.maps, probs[:, :, 1].mean(1), atol=1e-6)
    assert pred.layer_maps.shape == (2, 4, SIZE, SIZE) and float(pred.maps.max()) <= 1.0


# ---- 6. vision features, frozen backbone ----------------------------------------------------
def test_vision_is_plain_clip_and_backbone_gets_no_gradient():
    m = model()
    x = images(2)
    ref = DualPathVisionEncoder(m.clip.visual, vv_start_layer=None, feature_layers=m.feature_layers,
                                global_ln_post=False, alias_final_layer=False, image_size=SIZE)
    with torch.no_grad():
        g, p = ref(x)
    feats = m.encode_image(x)
    assert torch.equal(feats.global_emb, g) and torch.equal(feats.patch, p)
    masks = (torch.rand(2, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    m.compute_losses(feats, torch.tensor([0, 1]), masks)["total"].backward()
    assert all(p.grad is None for p in m.clip.parameters())
    assert m.fgp[0].prompt_temp_l1.grad is None
    assert all(p.grad is not None for p in m.ica.parameters())


# ---- 7. parameter count (full-size shapes) and optimiser groups ------------------------------
def full_size_count(**kw) -> dict[str, int]:
    c = Vip2ClipConfig(**kw)
    tok = nn.Embedding(49408, 768, device="meta")
    gen = torch.Generator().manual_seed(0)
    ica = ImageConditionedPrompts(c, tok, 768, 77, gen)
    fgp = FineGrainedPerception(c, 768, gen)
    return {"ica": sum(p.numel() for p in ica.parameters()), "fgp": sum(p.numel() for p in fgp.parameters())}


def test_parameter_count_matches_table3_formula():
    n, r, wt, d, hid = 7, 3, 768, 768, 384
    counts = full_size_count()
    assert counts["ica"] == 2 * n * wt + r * wt + d + r * (d * hid + hid + hid * wt + wt) == 1_786_752
    assert counts["fgp"] == 4 * (d * d + d) + 1 == 2_362_369
    assert sum(counts.values()) == 4_149_121  # Table 3: 4.15 M
    assert round(sum(counts.values()) / 1e6, 2) == 4.15


def test_param_groups_put_fgp_at_a_hundredth():
    m = model()
    groups = m.param_groups(1e-3)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-5)]
    fgp_ids = {id(p) for p in m.fgp.parameters()}
    assert {id(p) for p in groups[1]["params"]} == fgp_ids
    assert sum(len(g["params"]) for g in groups) == len(m.prompt_parameters())
    assert m.trainable_count() == {"ica": sum(p.numel() for p in groups[0]["params"]),
                                   "fgp": sum(p.numel() for p in groups[1]["params"])}


# ---- training and determinism -------------------------------------------------------------
def test_training_steps_lower_the_loss():
    m = model()
    feats = m.encode_image(images(4))
    labels = torch.tensor([0, 1, 0, 1])
    masks = torch.zeros(4, SIZE, SIZE)
    masks[1, 10:30, 10:30] = 1
    masks[3, 30:50, 5:25] = 1
    opt = torch.optim.Adam(m.param_groups(1e-3), betas=m.cfg.adam_betas)
    first = None
    for _ in range(8):
        losses = m.compute_losses(feats, labels, masks)
        first = float(losses["total"].detach()) if first is None else first
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    last = float(m.compute_losses(feats, labels, masks)["total"].detach())
    assert last < first - 1e-3
    assert set(losses) >= {"global", "local", "focal", "dice", "total"}
    assert float(losses["total"]) == pytest.approx(float(losses["local"] + losses["global"]), rel=1e-6)


def test_determinism():
    a, b, c = model(seed=4), model(seed=4), model(seed=5)
    sa, sb, sc = a.prompts.state_dict(), b.prompts.state_dict(), c.prompts.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["ica.ctx_pos"], sc["ica.ctx_pos"])
    feats = a.encode_image(images(2))
    assert torch.equal(a.predict(feats).image_scores, b.predict(feats).image_scores)


# ---- variants ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{"use_ica": False, "use_fgp": False}, {"use_utpa": False},
                                {"image_score": "paper"}, {"fgp_shared": False, "fgp_heads": 1},
                                {"ica_bias": False, "fgp_bias": False, "fgp_output_norm": False}])
def test_variants_run(kw):
    m = model(**kw)
    feats = m.encode_image(images(2))
    pred = m.predict(feats)
    assert pred.image_scores.shape == (2,) and torch.isfinite(pred.maps).all()
    losses = m.compute_losses(feats, torch.tensor([0, 1]), torch.zeros(2, SIZE, SIZE))
    losses["total"].backward()
    if kw.get("use_fgp") is False:
        assert not len(m.fgp) and len(m.param_groups(1e-3)) == 1
    if kw.get("fgp_shared") is False:
        assert len(m.fgp) == 4


def test_tf32_rounding_keeps_ten_mantissa_bits():
    x = torch.tensor([1.0 + 2**-11, 1.0 + 2**-10 + 2**-12, -3.14159265])
    y = round_tf32(x)
    assert y[0] == 1.0 + 2**-10 or y[0] == 1.0  # halfway: rounded to a 10-bit neighbour
    assert y[1] == 1.0 + 2**-10
    assert abs(float(y[2]) + 3.14159265) < 2**-9 and (y.view(torch.int32) & 0x1FFF == 0).all()


def test_fgp_attention_shape():
    m = model()
    att = m.fgp_attention(m.encode_image(images(2)))
    assert att.shape == (2, 4, 2, 16)
    assert torch.allclose(att.sum(-1), torch.ones(2, 4, 2), atol=1e-5)


def test_build_model_builds_vip2clip():
    m = build_model(cfg(), backbone=BACKBONE, image_size=SIZE, seed=2)
    assert type(m) is Vip2ClipDetector
    assert math.isclose(float(m.fgp[0].prompt_temp_l1), math.log(1 / 0.07), rel_tol=1e-6)


# ---- 8. checkpoints: ours and the released format ---------------------------------------------
def trained(seed: int = 0, **kw) -> Vip2ClipDetector:
    m = model(seed=seed, **kw)
    sharpen(m)
    with torch.no_grad():
        for p in m.prompt_parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return m


def test_our_checkpoint_round_trip(tmp_path):
    from glocal_lib.model import save_checkpoint

    m = trained()
    path = save_checkpoint(m, tmp_path / "ours.pt")
    again = build_model(checkpoint=path)
    assert type(again) is Vip2ClipDetector and again.cfg == m.cfg
    feats = m.encode_image(images(2))
    a, b = m.predict(feats), again.predict(feats)
    assert torch.equal(a.image_scores, b.image_scores) and torch.equal(a.maps, b.maps)


def test_official_export_import_round_trip(tmp_path):
    from glocal_lib.model import export_official, import_official

    m = trained()
    path = export_official(m, tmp_path / "epoch_10.pth")
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"prompt_learner", "Zero_try"}
    assert obj["Zero_try"]["q_proj_pre.weight"].shape == (64, 64, 1)
    assert obj["prompt_learner"]["tokenized_prompts_pos"].dtype == torch.int32
    assert obj["prompt_learner"]["cls_prompter.fc.1.2.weight"].shape == (128, 384)
    fresh = model(seed=9)
    import_official(fresh, path)
    feats = m.encode_image(images(2))
    a, b = m.predict(feats), fresh.predict(feats)
    assert torch.equal(a.image_scores, b.image_scores) and torch.equal(a.maps, b.maps)
    built = build_model(checkpoint=path, backbone=BACKBONE, image_size=SIZE, cfg=cfg())
    assert torch.equal(built.predict(feats).image_scores, a.image_scores)
    # the config is inferred from the file when none is given (n_ctx, n_cls from the shapes)
    inferred = build_model(checkpoint=path, backbone=BACKBONE, image_size=112, cfg=None)  # 64 patches >= 50
    assert (inferred.cfg.n_ctx, inferred.cfg.n_cls, inferred.cfg.topk) == (3, 2, 50)


def test_released_format_with_conv_kernels_imports_and_checks_the_state_word(tmp_path):
    from glocal_lib.model import import_official
    from glocal_lib.model.vip2clip_checkpoint import official_checkpoint

    m = trained()
    obj = official_checkpoint(m)
    released = {"prompt_learner": dict(obj["prompt_learner"]),
                "Zero_try": {k: v.clone() for k, v in obj["Zero_try"].items()}}
    fresh = model(seed=3)
    import_official(fresh, released, "released.pth")
    assert torch.equal(fresh.fgp[0].k_proj.weight, m.fgp[0].k_proj.weight)
    with pytest.raises(ConfigError, match="normal_state_word_bug=True"):
        import_official(model(normal_state_word_bug=False), released, "released.pth")
    broken = {"prompt_learner": {k: v for k, v in obj["prompt_learner"].items() if k != "cls_ctx"},
              "Zero_try": obj["Zero_try"]}
    from glocal_lib.errors import WeightsError

    with pytest.raises(WeightsError, match=r"missing \['cls_ctx'\]"):
        import_official(model(), broken, "broken.pth")
    with pytest.raises(WeightsError, match="shape"):
        import_official(model(n_ctx=4), obj, "other.pth")
    with pytest.raises(ConfigError, match="one shared FGP"):
        import_official(model(fgp_shared=False), obj, "x.pth")
