"""GlocalDetector: training step, precision, batching, loss composition, scores vs a direct formula."""

from __future__ import annotations

import pytest
import torch
from helpers_model import IMAGE_SIZE, small_cfg, tiny_model

from glocal_lib.model import VisionFeatures
from glocal_lib.model.losses import local_losses


def _batch(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    masks = (torch.rand(n, IMAGE_SIZE, IMAGE_SIZE, generator=g) > 0.7).float()
    masks[0] = 0
    labels = (masks.flatten(1).amax(1) > 0).long()
    return images, labels, masks


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def feats(model):
    images, labels, masks = _batch()
    return model.encode_image(images), labels, masks


def test_shapes_and_names(model, feats):
    f, _, _ = feats
    assert f.global_emb.shape == (3, 64) and f.patch.shape == (3, 4, model.grid**2, 64)
    t = model.text_embeddings()
    assert t.shape == (4, 64) and model.prompt_names[0] == "global_normal"
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(4))


def test_one_adam_step_changes_only_prompt_parameters(feats):
    model = tiny_model()
    f, labels, masks = feats
    frozen = {k: v.clone() for k, v in model.clip.state_dict().items()}
    unused = [p.clone() for p in model.deep.unused_projections.parameters()]
    params = model.prompt_parameters()
    before = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=1e-3, betas=(0.5, 0.999))
    opt.zero_grad()
    model.compute_losses(f, labels, masks)["total"].backward()
    grads = [p.grad.clone() for p in params]
    opt.step()
    for p, b, g in zip(params, before, grads):
        assert not torch.equal(p, b)
        # Adam's first step: theta - lr * g / (|g| + eps)
        torch.testing.assert_close(p.detach(), b - 1e-3 * g / (g.abs() + 1e-8), atol=1e-8, rtol=1e-6)
    for k, v in model.clip.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    for p, b in zip(model.deep.unused_projections.parameters(), unused):
        assert p.grad is None and torch.equal(p, b)
    assert all(not p.requires_grad for p in model.clip.parameters())


def test_loss_composition(model, feats):
    f, labels, masks = feats
    out = model.compute_losses(f, labels, masks)
    torch.testing.assert_close(out["total"], out["local"] + out["global"] + 1.0 * out["gcl"])
    torch.testing.assert_close(out["local"], out["focal"] + out["dice"])
    # released aliasing: the four local layers are the same tensor, so local = 4 x one layer
    assert torch.equal(f.patch[:, 0], f.patch[:, 3])
    single = VisionFeatures(f.global_emb, f.patch[:, :1])
    one = model.compute_losses(single, labels, masks)
    torch.testing.assert_close(out["local"], 4 * one["local"], rtol=1e-5, atol=1e-6)
    # global loss = cross-entropy of the cosine logits / 0.07, written out
    gpair = model.text_embeddings()[:2]
    g = f.global_emb / f.global_emb.norm(dim=-1, keepdim=True)
    logits = g @ gpair.T / 0.07
    ce = -(logits.log_softmax(-1)[torch.arange(3), labels]).mean()
    torch.testing.assert_close(out["global"], ce, rtol=1e-5, atol=1e-6)


def test_anomalyclip_trainpy_defaults_total_and_true_layers():
    model = tiny_model(small_cfg("anomalyclip-trainpy-defaults"))
    images, labels, masks = _batch()
    f = model.encode_image(images)
    assert not torch.equal(f.patch[:, 0], f.patch[:, 3])  # true multi-layer features
    out = model.compute_losses(f, labels, masks)
    torch.testing.assert_close(out["total"], 4 * out["local"] + out["global"])
    assert float(out["gcl"]) == 0.0 and model.text_embeddings().shape == (2, 64)
    probs = torch.stack([_probs(model, f.patch[:, i]) for i in range(4)], dim=1)
    local, _, _ = local_losses(probs, masks)
    torch.testing.assert_close(out["local"], local, rtol=1e-5, atol=1e-6)


def _probs(model, patch):
    """(B, 2, S, S) probabilities for one layer, written without the scoring module."""
    lpair = model.text_embeddings()[-2:]
    p = patch / patch.norm(dim=-1, keepdim=True)
    s = (p @ lpair.T / 0.07).softmax(-1)
    b, n, _ = s.shape
    g = int(n**0.5)
    s = s.reshape(b, g, g, 2).permute(0, 3, 1, 2)
    return torch.nn.functional.interpolate(s, size=(model.image_size,) * 2, mode="bilinear", align_corners=False)


def test_predict_matches_direct_formula(model, feats):
    f, _, _ = feats
    pred = model.predict(f, sigma=0)
    t = model.text_embeddings()
    g = f.global_emb / f.global_emb.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(pred.image_scores, (g @ t[:2].T / 0.07).softmax(-1)[:, 1])
    layer0 = _probs(model, f.patch[:, 0])
    torch.testing.assert_close(pred.layer_maps[:, 0], (layer0[:, 1] + 1 - layer0[:, 0]) / 2)
    torch.testing.assert_close(pred.maps, pred.layer_maps.sum(1))  # a sum over layers (released)
    mean_model = tiny_model(small_cfg(map_reduction="mean"))
    torch.testing.assert_close(mean_model.predict(f, sigma=0).maps, pred.maps / 4)


def test_batched_predict_equals_per_image(model):
    images, _, _ = _batch(n=4, seed=1)
    batched = model.predict(images, sigma=1.0)
    for i in range(4):
        one = model.predict(images[i : i + 1], sigma=1.0)
        torch.testing.assert_close(batched.image_scores[i : i + 1], one.image_scores, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(batched.maps[i : i + 1], one.maps, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("precision,tol", [("bf16", 0.03), ("fp16", 0.005)])
def test_low_precision_close_to_fp32(model, feats, precision, tol):
    low = tiny_model(model.cfg.replace(precision=precision))
    f, labels, masks = feats
    t32, tlow = model.text_embeddings().detach(), low.text_embeddings().detach()
    assert tlow.dtype == torch.float32
    assert float((t32 * tlow).sum(-1).min()) > 1 - tol  # cosine similarity
    p32, plow = model.predict(f), low.predict(f)
    torch.testing.assert_close(plow.image_scores, p32.image_scores, atol=5 * tol, rtol=0)
    torch.testing.assert_close(plow.maps, p32.maps, atol=20 * tol, rtol=0)
    if precision == "bf16":  # CPU fp16 kernels are slow; one backward is enough
        images, _, _ = _batch()
        fl = low.encode_image(images)
        torch.testing.assert_close(fl.global_emb, f.global_emb, atol=0.1, rtol=0.05)
        low.compute_losses(fl, labels, masks)["total"].backward()
        assert all(p.grad is not None for p in low.prompt_parameters())


def test_class_names_route_per_class_prompts():
    model = tiny_model(small_cfg("coop"))
    images, _, _ = _batch(n=3)
    f = model.encode_image(images)
    names = ["bottle", "metal_nut", "bottle"]
    mixed = model.predict(f, sigma=0, class_names=names)
    for i, name in enumerate(names):
        one = model.predict(f[i], sigma=0, class_names=[name])
        torch.testing.assert_close(mixed.image_scores[i : i + 1], one.image_scores)
    other = model.predict(f, sigma=0)  # default class "object"
    assert not torch.allclose(other.image_scores, mixed.image_scores)
    assert model.deep is None and not model.vision.vv_start_layer


def test_clip_zero_shot_has_no_parameters():
    model = tiny_model(small_cfg("clip"))
    assert model.prompt_parameters() == []
    images, _, _ = _batch(n=2)
    pred = model.predict(images, class_names=["bottle", "cable"])
    assert pred.image_scores.shape == (2,) and torch.isfinite(pred.maps).all()


def test_predict_text_cache_follows_parameter_updates():
    model = tiny_model()
    images, _, _ = _batch(n=2)
    f = model.encode_image(images)
    before = model.predict(f).image_scores
    assert torch.equal(model.predict(f).image_scores, before)
    with torch.no_grad():
        model.prompts.ctx["global_anomaly"].mul_(-3.0)  # in place, like an optimiser step
    after = model.predict(f).image_scores
    assert not torch.equal(after, before)
    gpair, _ = model.text_pairs()
    g = f.global_emb / f.global_emb.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(after, (g @ gpair.T / 0.07).softmax(-1)[:, 1])


def test_aliased_layers_computed_once_give_the_same_maps(model):
    assert model._unique_layers(torch.zeros(1, 4, 1, 1)) == [0, 0, 0, 0]  # released aliasing
    true_layers = tiny_model(model.cfg.replace(alias_final_layer=False))
    assert true_layers._unique_layers(torch.zeros(1, 4, 1, 1)) == [0, 1, 2, 3]
    torch.manual_seed(0)
    a = torch.randn(2, model.grid**2, 64)
    f = VisionFeatures(torch.randn(2, 64), torch.stack([a] * 4, dim=1))
    pred = model.predict(f, sigma=0)
    lpair = model.text_embeddings()[2:]
    p = _probs_of(model, a, lpair)
    for i in range(4):
        torch.testing.assert_close(pred.layer_maps[:, i], (p[:, 1] + 1 - p[:, 0]) / 2)
    masks = (torch.rand(2, IMAGE_SIZE, IMAGE_SIZE) > 0.5).float()
    out = model.compute_losses(f, torch.tensor([0, 1]), masks)
    ref, _, _ = local_losses([p.clone() for _ in range(4)], masks)  # four separate computations
    assert torch.equal(out["local"].detach(), ref)  # bit-identical to computing each layer


def _probs_of(model, patch, lpair):
    p = patch / patch.norm(dim=-1, keepdim=True)
    s = (p @ lpair.detach().T / 0.07).softmax(-1)
    g = model.grid
    s = s.reshape(-1, g, g, 2).permute(0, 3, 1, 2)
    return torch.nn.functional.interpolate(s, size=(model.image_size,) * 2, mode="bilinear", align_corners=False)


def test_vision_signature_tracks_only_vision_settings(model):
    sig = model.vision_signature()
    assert sig == tiny_model(model.cfg.replace(gcl_lambda=0.0, normal_length=4)).vision_signature()
    assert sig != tiny_model(model.cfg.replace(attention="qq")).vision_signature()
    assert sig["feature_layers"] == [2, 4, 6, 8] and sig["vv_start_layer"] == 2
