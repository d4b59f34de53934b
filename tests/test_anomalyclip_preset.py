"""The `anomalyclip` preset (released train.sh/test.sh: top layer only, local loss x4) equals the
original code (four local layers aliased to the final V-V tokens, local loss x1): same losses, same
gradients, maps 4x apart, hence identical metrics. Checked on a tiny random CLIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_model import small_cfg, tiny_model
from sklearn.metrics import roc_auc_score

from glocal_lib.metrics import image_metrics, pixel_metrics

SIZE = 56  # 4x4 patch grid on the tiny towers


def _batch(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, SIZE, SIZE, generator=g)
    masks = torch.zeros(n, SIZE, SIZE)
    for i in range(1, n, 2):  # every other image anomalous: one rectangle each
        y, x = (int(v) for v in torch.randint(0, SIZE // 2, (2,), generator=g))
        masks[i, y : y + SIZE // 3, x : x + SIZE // 4] = 1
    labels = (masks.flatten(1).amax(1) > 0).long()
    return images, labels, masks


@pytest.fixture(scope="module")
def pair():
    """(released scripts' preset, original code: 4 aliased layers x1), same backbone and prompts."""
    top = tiny_model(small_cfg("anomalyclip"), image_size=SIZE, seed=3)
    orig_cfg = small_cfg("anomalyclip", feature_layers=None, alias_final_layer=True, local_loss_weight=1.0)
    orig = tiny_model(orig_cfg, image_size=SIZE, seed=3)
    assert top.feature_layers == (8,) and orig.feature_layers == (2, 4, 6, 8)
    assert torch.equal(top.text_embeddings(), orig.text_embeddings())
    return top, orig


def test_features_top_layer_is_the_aliased_one(pair):
    top, orig = pair
    images, _, _ = _batch()
    ft, fo = top.encode_image(images), orig.encode_image(images)
    assert ft.patch.shape[1] == 1 and fo.patch.shape[1] == 4
    for i in range(4):  # the original code's four "layers" are all the final V-V tokens
        torch.testing.assert_close(fo.patch[:, i], ft.patch[:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(fo.global_emb, ft.global_emb, rtol=0, atol=0)


def test_same_losses_and_gradients(pair):
    top, orig = pair
    images, labels, masks = _batch()
    outs, grads = [], []
    for model in (top, orig):
        feats = model.encode_image(images)
        params = model.prompt_parameters()
        for p in params:
            p.grad = None
        out = model.compute_losses(feats, labels, masks)
        out["total"].backward()
        outs.append({k: v.detach() for k, v in out.items()})
        grads.append([p.grad.clone() for p in params])
    a, b = outs
    torch.testing.assert_close(4 * a["local"], b["local"], rtol=1e-6, atol=1e-6)  # x4 weight vs 4 layers
    torch.testing.assert_close(a["global"], b["global"], rtol=0, atol=0)
    torch.testing.assert_close(a["total"], b["total"], rtol=1e-6, atol=1e-6)
    assert len(grads[0]) == len(grads[1]) and any(g.abs().sum() > 0 for g in grads[0])
    for ga, gb in zip(*grads):
        torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sigma", [0.0, 4.0 * SIZE / 518, 2.0])
def test_maps_are_4x_and_metrics_identical(pair, sigma):
    top, orig = pair
    images, labels, masks = _batch(n=8, seed=1)
    pt, po = top.predict(top.encode_image(images), sigma=sigma), orig.predict(orig.encode_image(images), sigma=sigma)
    torch.testing.assert_close(pt.image_scores, po.image_scores, rtol=0, atol=0)  # global prompts only
    torch.testing.assert_close(po.maps, 4 * pt.maps, rtol=1e-5, atol=1e-6)  # summed map = 4 x single map
    scores, y = pt.image_scores.numpy(), labels.numpy()
    mt, mo, mk = pt.maps.numpy(), po.maps.numpy(), masks.numpy().astype(np.uint8)
    it, io = image_metrics(scores, y), image_metrics(po.image_scores.numpy(), y)
    xt, xo = pixel_metrics(mt, mk), pixel_metrics(mo, mk)
    assert it == io
    for k in ("pixel_auroc", "pixel_ap", "aupro_cflow", "aupro_mvtec"):
        assert abs(xt[k] - xo[k]) < 1e-6, (k, xt[k], xo[k])
    # and against an independent computation of the pixel AUROC
    ref = roc_auc_score(mk.ravel(), mo.ravel())
    assert abs(xt["pixel_auroc"] - ref) < 1e-6
