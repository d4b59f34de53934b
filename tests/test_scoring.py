"""Scores, maps and Gaussian smoothing against scipy and explicit numpy formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_model import bilinear_resize_np
from scipy.ndimage import gaussian_filter

from glocal_lib.model.scoring import (
    anomaly_map,
    gaussian_blur,
    image_logits,
    image_scores,
    layer_maps,
    maps_from_probabilities,
    patch_probabilities,
    reflect_indices,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("sigma", [1, 4, 8])
@pytest.mark.parametrize("shape", [(3, 37, 41), (2, 5, 7), (1, 1, 3), (2, 64, 64)])
def test_gaussian_blur_matches_scipy(sigma, shape):
    rng = np.random.default_rng(sigma * 100 + shape[1])
    maps = (rng.random(shape) * 4).astype(np.float32)
    expected = np.stack([gaussian_filter(m, sigma=sigma) for m in maps])
    got = gaussian_blur(torch.from_numpy(maps), sigma).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_gaussian_blur_2d_input_float64_and_identity():
    rng = np.random.default_rng(0)
    m = rng.random((20, 30))
    np.testing.assert_allclose(
        gaussian_blur(torch.from_numpy(m), 2.5).numpy(), gaussian_filter(m, 2.5), atol=1e-12
    )
    t = torch.from_numpy(m)
    assert gaussian_blur(t, 0) is t and gaussian_blur(t, None) is t


def test_reflect_indices_are_scipy_reflect():
    # scipy 'reflect': (d c b a | a b c d | d c b a), repeated for wide kernels
    assert reflect_indices(4, 5).tolist() == [3, 3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gaussian_blur_on_gpu_matches_scipy():
    rng = np.random.default_rng(1)
    maps = (rng.random((4, 518, 518)) * 4).astype(np.float32)
    expected = np.stack([gaussian_filter(m, sigma=8) for m in maps])
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = gaussian_blur(torch.from_numpy(maps).cuda(), 8).cpu().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_image_scores_per_image_in_a_batch():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(5, 16, generator=g) * 3
    text = torch.randn(2, 16, generator=g)
    expected = _softmax((_unit(emb.double().numpy()) @ _unit(text.double().numpy()).T) / 0.07)[:, 1]
    scores = image_scores(emb, text)
    np.testing.assert_allclose(scores.double().numpy(), expected, atol=1e-6)
    singles = torch.cat([image_scores(emb[i : i + 1], text) for i in range(5)])
    torch.testing.assert_close(scores, singles)
    assert len(set(np.round(expected, 6))) == 5  # really different images, not one score repeated
    torch.testing.assert_close(image_logits(emb, text).softmax(-1)[:, 1], scores)


def test_layer_maps_match_explicit_formula():
    g = torch.Generator().manual_seed(1)
    b, n_layers, grid, d, size = 2, 3, 4, 8, 14
    patch = torch.randn(b, n_layers, grid * grid, d, generator=g)
    text = torch.randn(2, d, generator=g)
    probs = patch_probabilities(patch, text, size)
    maps = layer_maps(patch, text, size)
    assert probs.shape == (b, n_layers, 2, size, size) and maps.shape == (b, n_layers, size, size)
    torch.testing.assert_close(probs.sum(2), torch.ones(b, n_layers, size, size))
    p = _softmax(_unit(patch.double().numpy()) @ _unit(text.double().numpy()).T / 0.07)  # (b, L, N, 2)
    for i in range(b):
        for layer in range(n_layers):
            grid_probs = p[i, layer].reshape(grid, grid, 2).transpose(2, 0, 1)
            up = bilinear_resize_np(grid_probs, size)
            np.testing.assert_allclose(probs[i, layer].double().numpy(), up, atol=1e-6)
            np.testing.assert_allclose(maps[i, layer].double().numpy(), (up[1] + 1 - up[0]) / 2, atol=1e-6)
    torch.testing.assert_close(maps_from_probabilities(probs), maps)
    total = anomaly_map(maps)
    torch.testing.assert_close(total, maps[:, 0] + maps[:, 1] + maps[:, 2])  # a sum, not a mean
    assert float(total.max()) <= n_layers and float(total.min()) >= 0


def test_patch_grid_must_be_square():
    with pytest.raises(ValueError):
        patch_probabilities(torch.randn(1, 1, 15, 4), torch.randn(2, 4), 8)
