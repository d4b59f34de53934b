"""WinCLIP: windows, harmonic aggregation and the prompt ensemble against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_model import tiny_model
from open_clip.tokenizer import tokenize as oc_tokenize

from glocal_lib.config import load_preset
from glocal_lib.errors import ConfigError
from glocal_lib.model.winclip import (
    ANOMALY_STATES,
    NORMAL_STATES,
    TEMPLATES,
    ensemble_sentences,
    window_members,
    window_score_maps,
)

SIZE = 56  # 4x4 patch grid


@pytest.fixture(scope="module")
def model():
    return tiny_model(load_preset("winclip", window_scales=[2, 3]), image_size=SIZE)


def test_window_members_brute_force():
    g, k = 5, 3
    rows = [[(r + a) * g + (c + b) for a in range(k) for b in range(k)]
            for r in range(g - k + 1) for c in range(g - k + 1)]
    assert window_members(g, k).tolist() == rows


def test_window_embeddings_match_a_direct_forward(model):
    images = torch.randn(1, 3, SIZE, SIZE)
    feats = model.encode_image(images)
    visual, g = model.clip.visual, model.grid
    tokens = model.vision.embed(images)
    for si, k in enumerate((2, 3)):
        for r, c in ((0, 0), (g - k, 1 if k == 2 else 0)):
            idx = [1 + (r + a) * g + (c + b) for a in range(k) for b in range(k)]
            x = tokens[:, [0] + idx]
            with torch.no_grad():
                for block in visual.transformer.resblocks:
                    x = block(x)
                ref = visual.ln_post(x[:, 0]) @ visual.proj
            torch.testing.assert_close(feats.patch[0, si, r * g + c], ref[0], atol=1e-5, rtol=1e-5)
    assert not feats.patch[0, 1, g - 1].any()  # no 3x3 window starts in the last column


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


def test_prompt_ensemble_equals_averaged_encode_text(model):
    ours = model.text_embeddings("bottle")
    sentences = ensemble_sentences("bottle")
    assert len(sentences) == (len(NORMAL_STATES) + len(ANOMALY_STATES)) * len(TEMPLATES)
    assert sentences[0] == "a bad photo of a bottle." and "damaged bottle" in sentences[len(NORMAL_STATES) * 35]
    with torch.no_grad():
        e = model.clip.encode_text(oc_tokenize(sentences))
    e = e / e.norm(dim=-1, keepdim=True)
    n = len(NORMAL_STATES) * len(TEMPLATES)
    ref = torch.stack([e[:n].mean(0), e[n:].mean(0)])
    ref = ref / ref.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_predict_and_zero_shot_training_refused(model):
    images = torch.randn(2, 3, SIZE, SIZE)
    pred = model.predict(images, sigma=0, class_names=["bottle", "bottle"])
    assert pred.layer_maps.shape == (2, 2, SIZE, SIZE)
    torch.testing.assert_close(pred.maps, pred.layer_maps.mean(1))
    assert model.prompt_parameters() == []
    feats = model.encode_image(images)
    with pytest.raises(ConfigError, match="zero-shot"):
        model.compute_losses(feats, torch.zeros(2), torch.zeros(2, SIZE, SIZE))
