"""WinCLIP against brute-force versions of the released re-implementation's formulas.

The ``winclip`` preset is zqhang/Accurate-WinCLIP-pytorch's ``reproduce_WinCLIP.py`` (zero-shot). The
brute-force side below re-derives that code's computation with explicit loops over sentences,
windows and patches, from open_clip's own modules (conv1, ``encode_text``, ``encode_image``), so it
shares nothing with our vectorised path but the frozen weights.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_model import tiny_model
from open_clip.tokenizer import tokenize as oc_tokenize

from glocal_lib import config as config_mod
from glocal_lib.config import load_preset
from glocal_lib.engine import load_profile
from glocal_lib.engine.evaluate import EvalSpec, spec_profile
from glocal_lib.engine.modeling import method_profile
from glocal_lib.errors import ConfigError, WeightsError
from glocal_lib.experiments import provenance
from glocal_lib.experiments.registry import load_registry
from glocal_lib.model import winclip
from glocal_lib.model.backbone import LAION400M_E31_VIT_B_16_PLUS_240, load_clip
from glocal_lib.model.winclip import (
    TEMPLATES,
    ensemble_sentences,
    fuse_scales,
    window_members,
    window_score_maps,
)

NATIVE = 224  # glocal-tiny-8's own size (16x16 grid of 14 px patches): no positional resize involved
SIZE = 56  # 4x4 grid, for the cheaper checks


@pytest.fixture(scope="module")
def released():
    return tiny_model(load_preset("winclip"), image_size=NATIVE)


# --- the five released points -----------------------------------------------------------------
def test_released_prompt_ensemble_counts_and_duplicate():
    normal, anomalous = ensemble_sentences("bottle")
    assert len(TEMPLATES) == 21 and len(set(TEMPLATES)) == 20
    assert TEMPLATES[7] == TEMPLATES[8] == "a jpeg corrupted photo of the {}."  # kept, as released
    assert len(normal) == 7 * 21 and len(anomalous) == 4 * 21
    assert normal[0] == "a cropped photo of the bottle." and anomalous[0] == "a cropped photo of the damaged bottle."
    assert anomalous[-1] == "a photo of a bottle with damage for anomaly detection."
    p_normal, p_anomalous = ensemble_sentences("bottle", "paper")
    assert len(p_normal) == 7 * 35 and len(p_anomalous) == 5 * 35
    assert tuple(winclip.ENSEMBLES) == config_mod.ENSEMBLES  # the config's choices = the lists we have


def test_presets_differ_exactly_in_the_named_switches():
    rel, paper = load_preset("winclip"), load_preset("winclip-paper")
    assert (rel.temperature, rel.sigma, rel.scale_fusion, rel.ensemble, rel.ensemble_mean) == (
        0.07, 0.0, "harmonic", "released", "raw")
    assert rel.window_scales == (2, 3) and rel.use_class_names and not rel.class_name_spaces
    diff = {k for k, v in rel.to_dict().items() if paper.to_dict()[k] != v}
    assert diff == {"temperature", "sigma", "scale_fusion", "ensemble", "ensemble_mean", "class_name_spaces"}
    with pytest.raises(ConfigError, match="scale_fusion"):
        load_preset("winclip", scale_fusion="max")


def test_fuse_scales_harmonic_with_the_image_score():
    torch.manual_seed(0)
    maps, z = torch.rand(3, 2, 4, 4) + 0.01, torch.rand(3) + 0.01
    ours = fuse_scales(z, maps)
    for b in range(3):
        for i in range(4):
            for j in range(4):
                vals = [float(z[b]), float(maps[b, 0, i, j]), float(maps[b, 1, i, j])]
                assert math.isclose(float(ours[b, i, j]), 3 / sum(1 / v for v in vals), rel_tol=1e-6)
    maps[0, 0, 0, 0] = 0.0  # a zero score: released nan_to_num gives 0, not inf/nan
    assert float(fuse_scales(z, maps)[0, 0, 0]) == 0.0
    torch.testing.assert_close(fuse_scales(z, maps, "mean"), maps.mean(1))


# --- brute force of reproduce_WinCLIP.py on a small random model --------------------------------
def _reference_text(clip, class_name: str) -> torch.Tensor:
    """prepare_text_future: the plain mean of the unnormalised sentence embeddings per state."""
    out = []
    for sentences in ensemble_sentences(class_name):
        total = None
        for s in sentences:
            e = clip.encode_text(oc_tokenize([s]))[0]
            total = e if total is None else total + e
        out.append(total / len(sentences))
    return torch.stack(out)


def _reference_window(clip, image: torch.Tensor, members: list[int]) -> torch.Tensor:
    """CLS + the window's tokens (1-based after CLS) through the tower; ln_post(CLS) @ proj."""
    v = clip.visual
    x = v.conv1(image[None]).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(1, 1, -1), x], dim=1) + v.positional_embedding
    x = v.ln_pre(x[:, [0] + [m + 1 for m in members]])
    for block in v.transformer.resblocks:
        x = block(x)
    return v.ln_post(x[:, 0])[0] @ v.proj


def _prob(emb: torch.Tensor, text: torch.Tensor, temperature: float = 0.07) -> float:
    cos = [float(emb @ t / (emb.norm() * t.norm())) for t in text]
    e = [math.exp(c / temperature) for c in cos]
    return e[1] / (e[0] + e[1])


def test_released_scores_and_maps_equal_a_brute_force_reference(released):
    torch.manual_seed(3)
    images = torch.randn(2, 3, NATIVE, NATIVE)
    classes = ["metal_nut", "bottle"]  # underscores stay in the prompts, as released
    pred = released.predict(images, class_names=classes)
    clip, g = released.clip, NATIVE // 14
    with torch.no_grad():
        for b, cls in enumerate(classes):
            text = _reference_text(clip, cls)
            z = _prob(clip.encode_image(images[b : b + 1])[0], text)  # open_clip's own full-image path
            assert math.isclose(float(pred.image_scores[b]), z, abs_tol=1e-5)
            per_scale = []
            for k in (2, 3):
                score = {}
                for r in range(g - k + 1):
                    for c in range(g - k + 1):
                        members = [(r + a) * g + (c + d) for a in range(k) for d in range(k)]
                        score[(r, c)] = _prob(_reference_window(clip, images[b], members), text)
                m = torch.zeros(g, g, dtype=torch.float64)
                for i in range(g):
                    for j in range(g):
                        cover = [s for (r, c), s in score.items() if r <= i < r + k and c <= j < c + k]
                        m[i, j] = len(cover) / sum(1 / s for s in cover)
                per_scale.append(m)
            fused = 3 / (1 / per_scale[0] + 1 / per_scale[1] + 1 / z)
            ref_map = F.interpolate(fused[None, None], size=(NATIVE, NATIVE), mode="bilinear")[0, 0]
            assert float((pred.maps[b].double() - ref_map).abs().max()) < 1e-5
            up = [F.interpolate(m[None, None], size=(NATIVE, NATIVE), mode="bilinear")[0, 0] for m in per_scale]
            assert float((pred.layer_maps[b].double() - torch.stack(up)).abs().max()) < 1e-5
    # no Gaussian smoothing: the preset's sigma is 0, so an explicit 0 changes nothing
    torch.testing.assert_close(released.predict(images, sigma=0, class_names=classes).maps, pred.maps)


# --- pieces shared with the paper variant ------------------------------------------------------
def test_window_members_brute_force():
    g, k = 5, 3
    rows = [[(r + a) * g + (c + b) for a in range(k) for b in range(k)]
            for r in range(g - k + 1) for c in range(g - k + 1)]
    assert window_members(g, k).tolist() == rows


def test_harmonic_aggregation_brute_force():
    torch.manual_seed(0)
    g, scales, temp = 4, (2, 3), 0.07
    windows = torch.randn(2, len(scales), g * g, 8)
    text = torch.randn(2, 8)
    ours = window_score_maps(windows, text, g, scales, temp)
    t = torch.nn.functional.normalize(text, dim=-1).numpy()
    for si, k in enumerate(scales):
        n = g - k + 1
        for b in range(2):
            score = {}
            for r in range(n):
                for c in range(n):
                    w = windows[b, si, r * g + c].numpy()
                    logits = (t @ (w / np.linalg.norm(w))) / temp
                    e = np.exp(logits - logits.max())
                    score[(r, c)] = e[1] / e.sum()
            for i in range(g):
                for j in range(g):
                    cover = [s for (r, c), s in score.items() if r <= i < r + k and c <= j < c + k]
                    hm = len(cover) / sum(1 / s for s in cover)
                    assert np.isclose(float(ours[b, si, i, j]), hm, rtol=1e-5)


def test_paper_variant_ensemble_normalises_first_and_averages_scales():
    model = tiny_model(load_preset("winclip-paper"), image_size=SIZE)
    ours = model.text_embeddings("metal nut")
    normal, anomalous = ensemble_sentences("metal nut", "paper")
    with torch.no_grad():
        e = model.clip.encode_text(oc_tokenize(normal + anomalous))
    e = e / e.norm(dim=-1, keepdim=True)
    ref = torch.stack([e[: len(normal)].mean(0), e[len(normal):].mean(0)])
    torch.testing.assert_close(ours, ref / ref.norm(dim=-1, keepdim=True), atol=1e-5, rtol=1e-5)
    images = torch.randn(2, 3, SIZE, SIZE)
    pred = model.predict(images, sigma=0, class_names=["metal_nut", "metal_nut"])  # "_" -> " " here
    torch.testing.assert_close(pred.maps, pred.layer_maps.mean(1))
    torch.testing.assert_close(model.text_pairs("metal nut")[0], ours)


def test_zero_shot_training_refused():
    model = tiny_model(load_preset("winclip"), image_size=SIZE)
    feats = model.encode_image(torch.randn(2, 3, SIZE, SIZE))
    assert feats.patch.shape[:2] == (2, 2) and model.prompt_parameters() == []
    with pytest.raises(ConfigError, match="zero-shot"):
        model.compute_losses(feats, torch.zeros(2), torch.zeros(2, SIZE, SIZE))


# --- its own tower under the paper profile -----------------------------------------------------
def test_winclip_runs_on_its_own_tower_in_the_paper_profile(monkeypatch):
    monkeypatch.delenv("GLOCAL_WINCLIP_WEIGHTS", raising=False)
    paper = load_profile("paper")
    own = method_profile(paper, "winclip")
    assert (own.backbone, own.image_size) == ("ViT-B-16-plus-240", 240)
    assert own.weights == f"weights/{LAION400M_E31_VIT_B_16_PLUS_240.filename}"
    assert method_profile(paper, "winclip-paper") == own
    assert method_profile(paper, "glocalclip-released") == paper  # others keep the profile's tower
    smoke = load_profile("smoke")
    assert spec_profile(EvalSpec("w", "mvtec", preset="winclip"), smoke) == smoke  # tiny random tower
    monkeypatch.setenv("GLOCAL_WINCLIP_WEIGHTS", "/data/w.bin")
    assert spec_profile(EvalSpec("w", "mvtec", preset="winclip"), paper).weights == "/data/w.bin"


def test_missing_or_corrupt_tower_says_where_to_get_it(tmp_path):
    name = LAION400M_E31_VIT_B_16_PLUS_240.filename
    with pytest.raises(WeightsError, match="8fb26589") as err:
        load_clip("ViT-B-16-plus-240", tmp_path / "nowhere" / name)
    assert LAION400M_E31_VIT_B_16_PLUS_240.url in str(err.value) and "laion400m_e31" in str(err.value)
    (tmp_path / name).write_bytes(b"truncated download")
    with pytest.raises(WeightsError, match="SHA256 starting 8fb26589"):
        load_clip("ViT-B-16-plus-240", tmp_path / name)


def test_smoke_shortcuts_are_printed_on_the_artifacts_that_show_winclip():
    smoke = load_registry(profile="smoke")
    notes = [n for n in smoke.method_notes(smoke.methods_of(smoke.artifact("F3"))) if n.startswith("WinCLIP")]
    assert len(notes) == 1 and "one window scale" in notes[0] and "'object'" in notes[0]
    assert smoke.method_notes(["CLIP", "CoOp"]) == []
    assert load_registry(profile="paper").method_notes(["WinCLIP"]) == []  # the preset unchanged
    prov = provenance.build("F3", "maps", profile="smoke", glocal_preset="glocalclip-released", presets=[],
                            run_ids=[], notes=notes)
    assert notes[0] in provenance.footer(prov)  # figures print their notes in the footer


@pytest.mark.slow
def test_full_size_vit_b_16_plus_240_shapes():
    """The published tower at 240 px: 15x15 grid, 196 + 169 windows, 640-d embeddings (random weights)."""
    clip = load_clip("ViT-B-16-plus-240", seed=0)
    from glocal_lib.model.detector import GlocalDetector

    model = GlocalDetector(clip, load_preset("winclip"), backbone="ViT-B-16-plus-240", image_size=240)
    feats = model.encode_image(torch.randn(1, 3, 240, 240))
    assert model.grid == 15 and feats.patch.shape == (1, 2, 225, 640)
    assert int(feats.patch[0, 0].abs().sum(-1).gt(0).sum()) == 14 * 14
    assert int(feats.patch[0, 1].abs().sum(-1).gt(0).sum()) == 13 * 13
    pred = model.predict(feats, class_names=["bottle"])
    assert pred.maps.shape == (1, 240, 240) and pred.layer_maps.shape == (1, 2, 240, 240)
    assert bool(((pred.image_scores > 0) & (pred.image_scores < 1)).all())
