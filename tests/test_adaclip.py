"""AdaCLIP (spec adaclip.md section 14): the checkable facts on a tiny random CLIP, brute-force checks.

Every expected value is computed independently here (explicit loops, F.interpolate, the spec's
parameter formula, a per-row dice loop), never copied from a run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_model import BACKBONE

from glocal_lib.adaclip_config import AdaCLIPConfig
from glocal_lib.config import config_from_dict, load_preset
from glocal_lib.errors import ConfigError
from glocal_lib.model import build_model, save_checkpoint
from glocal_lib.model.adaclip import AdaCLIPDetector, adaclip_class_name, sentences
from glocal_lib.model.adaclip.fusion import cluster_mean, hybrid_semantic_fusion, top_patches
from glocal_lib.model.backbone import load_clip, resize_positional_embedding
from glocal_lib.model.images import ImageBatch
from glocal_lib.model.losses import dice_loss

torch.set_num_threads(1)
SIZE = 56  # 4x4 patch grid (patch 14): 16 patches


def model(seed: int = 0, size: int = SIZE, **over) -> AdaCLIPDetector:
    cfg = AdaCLIPConfig(precision="fp32", ensemble=over.pop("ensemble", "minimal"), **over)
    return build_model(cfg, backbone=BACKBONE, image_size=size, seed=seed)


def images(n: int = 1, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_preset_and_config_round_trip():
    cfg = load_preset("adaclip-glocal-protocol")
    assert type(cfg) is AdaCLIPConfig and cfg.precision == "fp16" and cfg.select == "last_epoch"
    assert config_from_dict(cfg.to_dict()) == cfg
    assert load_preset("adaclip-released").select == "best_epoch"
    with pytest.raises(ConfigError, match="dice_reduction"):
        AdaCLIPConfig(dice_reduction="mean")


def test_gelu_swap_in_both_towers_and_bicubic_resize():
    m = model()
    blocks = [*m.clip.visual.transformer.resblocks, *m.clip.transformer.resblocks]
    assert all(type(b.mlp.gelu) is torch.nn.GELU and b.mlp.gelu.approximate == "none" for b in blocks)
    pos = m.clip.visual.positional_embedding
    g_old, g_new = round((pos.shape[0] - 1) ** 0.5), 7
    grid = pos[1:].reshape(1, g_old, g_old, -1).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(g_new, g_new), mode="bicubic", align_corners=False)
    got = resize_positional_embedding(pos, g_new, mode="bicubic")
    assert torch.equal(got[0], pos[0])
    assert torch.allclose(got[1:], want.reshape(pos.shape[1], -1).T)
    assert not torch.allclose(got, resize_positional_embedding(pos, g_new))  # bilinear differs


def test_openai_weights_with_gelu_only_as_an_explicit_choice(tmp_path):
    from glocal_lib.errors import WeightsError
    from glocal_lib.model.backbone import save_openai_state_dict

    path = save_openai_state_dict(load_clip(BACKBONE), tmp_path / "openai.pt")
    with pytest.raises(WeightsError, match="QuickGELU"):
        load_clip("ViT-B-16", path)  # a GELU config refuses OpenAI weights by default (wrong shapes aside)
    clip = load_clip(None, path, activation="gelu")
    assert clip.glocal_activation == "gelu"
    assert type(clip.transformer.resblocks[0].mlp.gelu) is torch.nn.GELU


def test_parameter_count_is_the_spec_formula():
    m = model(ensemble="released")
    clip = m.clip
    w, wt, d = clip.visual.conv1.out_channels, clip.ln_final.weight.shape[0], clip.visual.proj.shape[1]
    j, lp, nl = 4, 5, 4
    formula = j * lp * (wt + w) + nl * (w * d + d) + (d * d + d) + lp * (d * w + w) + lp * (d * wt + wt)
    assert sum(p.numel() for p in m.prompt_parameters()) == formula
    w, wt, d = 1024, 768, 768  # ViT-L: ViP2-CLIP Table 3's 10.67 M
    assert j * lp * (wt + w) + nl * (w * d + d) + (d * d + d) + lp * (d * w + w) + lp * (d * wt + wt) == 10_665_472


def test_prompted_vision_sequence_and_cache_invalidity():
    m = model()
    x = images()
    batch = m.encode_image(x)
    from glocal_lib.model.adaclip import tower

    seen: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []
    real = tower.block_forward

    def spy(block, t, fused=False):
        seen.append(t)
        out = real(block, t, fused)
        outs.append(out)
        return out

    tower.block_forward = spy
    try:
        feats = m.forward_features(batch, ["object"])
    finally:
        tower.block_forward = real
    n = (SIZE // 14) ** 2
    assert [t.shape[1] for t in seen] == [1 + n + 5] * len(seen)
    depth = m.cfg.prompt_depth
    for j in range(depth, len(seen)):  # blocks J+1..: the previous output unchanged
        assert torch.equal(seen[j], outs[j - 1])
    for j in range(1, depth):  # blocks 2..J: image tokens kept, prompt tokens replaced
        assert torch.equal(seen[j][:, :1 + n], outs[j - 1][:, :1 + n])
        assert not torch.equal(seen[j][:, 1 + n:], outs[j - 1][:, 1 + n:])
    _, tokens = m.vision(x, m._hybrid(m.prompts.visual_prompter, m._dynamic(m.static_features(x)["f0"])[0], 1,
                                      range(depth)))
    assert [t.shape for t in tokens] == [(1, n, m.clip.visual.conv1.out_channels)] * 4
    # changing one static visual prompt changes the first feature layer AND the global embedding
    cls, patch, _ = feats
    with torch.no_grad():
        m.prompts.visual_prompter.static_prompts[0].add_(0.5)
    cls2, patch2, _ = m.forward_features(m.encode_image(x), ["object"])
    assert not torch.allclose(patch[0], patch2[0]) and not torch.allclose(cls, cls2)


def test_visual_branch_off_gives_the_plain_residual_stream():
    m = model(prompt_branch="L")
    x = images()
    _, tokens = m.vision(x, None)
    h = m.vision.embed(x)
    plain = []
    for k, block in enumerate(m.clip.visual.transformer.resblocks, start=1):
        h = block(h)  # open_clip's own block (math attention inside nn.MultiheadAttention)
        if k in m.feature_layers:
            plain.append(h[:, 1:])
    for a, b in zip(tokens, plain):
        assert torch.allclose(a, b, atol=1e-5)


def test_text_depth_facts():
    m = model()
    f0 = torch.randn(1, m.clip.visual.proj.shape[1])
    _, dt = m._dynamic(f0)
    base = m.text_features(["bottle"], dt)
    with torch.no_grad():
        m.prompts.text_prompter.static_prompts[0].add_(1.0)  # S^t_0: computed, never used
    assert torch.equal(m.text_features(["bottle"], dt), base)
    with torch.no_grad():
        m.prompts.text_prompter.static_prompts[1].add_(1.0)
    assert not torch.allclose(m.text_features(["bottle"], dt), base)
    # gradient: None for S^t_0, non-zero for S^t_1
    m.compute_losses(m.encode_image(images()), torch.tensor([1]), torch.zeros(1, SIZE, SIZE), ["bottle"])["total"].backward()
    assert m.prompts.text_prompter.static_prompts[0].grad is None
    assert m.prompts.text_prompter.static_prompts[1].grad.abs().sum() > 0


def test_dynamic_prompts_and_batching_equal_single_images():
    m = model()
    x = images(3)
    batch = m.encode_image(x)
    names = ["bottle", "cable", "bottle"]
    cls, patch, text = m.forward_features(batch, names)
    assert not torch.allclose(text[0], text[2])  # same class name, other image -> other text (dynamic)
    for i in range(3):
        c1, p1, t1 = m.forward_features(batch[i], [names[i]])
        assert torch.allclose(c1, cls[i:i + 1], atol=1e-5) and torch.allclose(t1, text[i:i + 1], atol=1e-5)
        assert all(torch.allclose(a, b[i:i + 1], atol=1e-5) for a, b in zip(p1, patch))


def test_hsf_brute_force_and_weighted_form():
    gen = torch.Generator().manual_seed(3)
    b, n, d, nl, k = 2, 30, 8, 4, 4
    patch = [F.normalize(torch.randn(b, n, d, generator=gen), dim=-1).requires_grad_() for _ in range(nl)]
    logits = [torch.randn(b, n, 2, generator=gen) for _ in range(nl)]
    top = 2  # k' = min(N, 2 * K) = 8
    labels = [np.arange(top * k) % k for _ in range(b)]
    h = hybrid_semantic_fusion(patch, logits, k_clusters=k, top_factor=top, labels=labels)
    # brute force: mean over layers of the softmax anomaly column, explicit top-k, double loop
    prob = torch.stack([torch.softmax(sum(z[i] for z in logits) / nl, dim=-1)[:, 1] for i in range(b)])
    for i in range(b):
        order = sorted(range(n), key=lambda p: -float(prob[i, p]))[:top * k]
        centres = []
        for c in range(k):
            vecs = [patch[layer][i, order[q]] for layer in range(nl) for q in range(top * k) if labels[i][q] == c]
            centres.append(torch.stack(vecs).mean(0))
        want = F.normalize(torch.stack(centres).mean(0), dim=0)
        assert torch.allclose(h[i], want, atol=1e-6)
        # weighted form: w_q = 1 / (K n_c(q)), summed over the layer means
        counts = np.bincount(labels[i], minlength=k)
        weighted = sum(torch.stack([patch[layer][i, order[q]] for layer in range(nl)]).mean(0) / (k * counts[labels[i][q]])
                       for q in range(top * k))
        assert torch.allclose(F.normalize(weighted, dim=0), want, atol=1e-6)
    h.sum().backward()
    selected = top_patches(logits, top * k)
    for layer in range(nl):
        nz = patch[layer].grad.abs().sum(-1) > 0
        mask = torch.zeros(b, n, dtype=torch.bool)
        mask.scatter_(1, selected, True)
        assert torch.equal(nz, mask)


def test_torch_kmeans_recovers_separated_clusters():
    from glocal_lib.model.adaclip.fusion import torch_kmeans_labels

    gen = torch.Generator().manual_seed(1)
    truth = torch.arange(60) % 6
    points = torch.randn(6, 16, generator=gen)[truth] * 10 + 0.1 * torch.randn(60, 16, generator=gen)
    labels = torch_kmeans_labels(points, 6, seed=0)
    assert torch.equal(torch.as_tensor(labels), torch.as_tensor(torch_kmeans_labels(points, 6, seed=0)))
    pairs = {(int(t), int(lab)) for t, lab in zip(truth, labels)}
    assert len(pairs) == 6 and len({lab for _, lab in pairs}) == 6  # one label per true cluster


def test_hsf_empty_cluster_is_nan_unless_skipped():
    sel = [torch.randn(6, 4) for _ in range(2)]
    lab = np.array([0, 0, 1, 1, 2, 2])
    assert torch.isnan(cluster_mean(sel, lab, 4)).all()
    assert torch.allclose(cluster_mean(sel, lab, 4, skip_empty=True), cluster_mean(sel, lab, 3))


def test_test_map_is_softmax_of_mean_logits():
    m = model()
    batch = m.encode_image(images(2))
    pred = m.predict(batch, sigma=0, class_names=["bottle", "bottle"])
    p_img, up = m._scores(batch, ["bottle", "bottle"])
    manual = torch.softmax((up[0] + up[1] + up[2] + up[3]) / 4, dim=1)
    assert torch.allclose(pred.maps, manual[:, 1], atol=1e-6)  # (Q_a + 1 - Q_n)/2 = Q_a
    assert torch.allclose(pred.image_scores, p_img[:, 1])
    per_layer_mean = torch.stack([torch.softmax(z, dim=1)[:, 1] for z in up]).mean(0)
    assert not torch.allclose(pred.maps, per_layer_mean, atol=1e-4)
    # align_corners True: the corner pixels are the corner patches' logits exactly
    cls, patch, text = m.forward_features(batch, ["bottle", "bottle"])
    z = 100 * patch[0] @ text
    assert torch.allclose(up[0][:, :, 0, 0], z[:, 0], atol=1e-5)
    assert torch.allclose(up[0][:, :, -1, -1], z[:, -1], atol=1e-5)


def test_row_dice_is_the_released_b1_dice_and_differs_from_per_image():
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(1, 6, 6, generator=gen)
    mask = torch.zeros(1, 6, 6)
    mask[0, 2:4, 1:5] = 1  # rows 0, 1, 4, 5 empty
    rows = [1 - (2 * (probs[0, r] * mask[0, r]).sum() + 1) / (probs[0, r].sum() + mask[0, r].sum() + 1)
            for r in range(6)]
    m_rows, m_img = model(), model(dice_reduction="per_image")
    assert torch.allclose(m_rows._dice(probs, mask), torch.stack(rows).mean(), atol=1e-6)
    assert torch.allclose(m_img._dice(probs, mask), dice_loss(probs, mask))
    assert not torch.allclose(m_rows._dice(probs, mask), m_img._dice(probs, mask))


def test_losses_are_focal_image_plus_layer_terms_and_a_step_lowers_them():
    m = model()
    batch = m.encode_image(images(2))
    labels = torch.tensor([0, 1])
    masks = torch.zeros(2, SIZE, SIZE)
    masks[1, 10:30, 10:30] = 1
    names = ["bottle", "bottle"]
    opt = m.make_optimizer()
    assert type(opt) is torch.optim.AdamW and opt.defaults["weight_decay"] == 0.01 and opt.defaults["lr"] == 0.01
    first = m.compute_losses(batch, labels, masks, names)
    p_img, _ = m._scores(batch, names)
    pt = torch.where(labels == 1, p_img[:, 1], p_img[:, 0]) * (1 - 2e-5) + 1e-5 + 1e-5  # clamped one-hot
    assert torch.allclose(first["global"], (-(1 - pt) ** 2 * pt.log()).mean(), atol=1e-5)
    assert torch.allclose(first["total"], first["global"] + first["focal"] + first["dice"], atol=1e-5)
    for _ in range(3):
        opt.zero_grad()
        m.compute_losses(batch, labels, masks, names)["total"].backward()
        opt.step()
    assert float(m.compute_losses(batch, labels, masks, names)["total"].detach()) < float(first["total"].detach())


def test_determinism_and_checkpoint_round_trip(tmp_path):
    a, b = model(seed=5), model(seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.prompt_parameters(), b.prompt_parameters()))
    x = a.encode_image(images(1))
    assert torch.equal(a.predict(x, sigma=0, class_names=["bottle"]).maps,
                       b.predict(x, sigma=0, class_names=["bottle"]).maps)
    save_checkpoint(a, tmp_path / "a.pt")
    c = build_model(checkpoint=tmp_path / "a.pt")
    assert type(c) is AdaCLIPDetector
    assert torch.equal(c.predict(x, sigma=0, class_names=["bottle"]).maps, a.predict(x, sigma=0, class_names=["bottle"]).maps)


def test_sentences_and_class_names():
    normal, anomalous = sentences("metal_nut")
    assert len(normal) == 28 and len(anomalous) == 20
    assert normal[0] == "a bad photo of a metal_nut." and anomalous[-1] == "a cropped photo of the metal_nut with damage."
    assert sentences("a-b")[0][0] == "a bad photo of a a b."
    assert adaclip_class_name("sdd", "electrical commutators") == "SDD"
    assert adaclip_class_name("brainmri", "brain") == "brain_mri" and adaclip_class_name("headct", "brain") == "headct"
    assert adaclip_class_name("mvtec", "bottle") == "bottle"
    # the detector's choice (cfg.class_names): AdaCLIP's names, the index's, or "object" for every category
    for choice, want in (("adaclip", "SDD"), ("project", "electrical commutators"), ("object", "object")):
        assert model(class_names=choice).class_name("sdd", "electrical commutators") == want


def test_image_batch_static_features_are_the_plain_tower():
    m = model()
    x = images(2)
    batch = m.encode_image(x)
    assert isinstance(batch, ImageBatch) and batch.static["f0"].shape == (2, m.clip.visual.proj.shape[1])
    h = m.vision.embed(x)
    for block in m.clip.visual.transformer.resblocks:
        h = block(h)
    assert torch.allclose(batch.static["f0"], m.clip.visual.ln_post(h[:, 0]) @ m.clip.visual.proj, atol=1e-5)


def test_released_checkpoint_format_round_trip(tmp_path):
    from glocal_lib.model import export_official, load_prompts

    a = model(seed=4)
    path = export_official(a, tmp_path / "pretrained_mvtec_colondb.pth")
    state = torch.load(path, weights_only=True)
    clip = a.clip
    w, wt, d = clip.visual.conv1.out_channels, clip.ln_final.weight.shape[0], clip.visual.proj.shape[1]
    # spec 13's key list and shapes
    assert state["clip_model.text_prompter.static_prompts.3"].shape == (5, wt)
    assert state["clip_model.visual_prompter.static_prompts.0"].shape == (5, w)
    assert state["clip_model.patch_token_layer.head.3.weight"].shape == (d, w)
    assert state["clip_model.cls_token_layer.head.0.bias"].shape == (d,)
    assert state["clip_model.dynamic_visual_prompt_generator.head.4.weight"].shape == (w, d)
    assert state["clip_model.dynamic_text_prompt_generator.head.4.weight"].shape == (wt, d)
    assert len(state) == 4 + 4 + 2 * 4 + 2 + 2 * 5 + 2 * 5
    b = model(seed=9)
    assert load_prompts(b, path) == "official"
    assert all(torch.equal(p, q) for p, q in zip(a.prompt_parameters(), b.prompt_parameters()))
    c = build_model(backbone=BACKBONE, image_size=SIZE, checkpoint=path)  # config inferred: adaclip-released
    assert type(c) is AdaCLIPDetector and c.cfg.select == "best_epoch"
