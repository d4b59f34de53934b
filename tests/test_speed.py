"""Speed settings: they must not change numbers beyond float rounding, and they choose sane sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glocal_lib.engine import load_profile
from glocal_lib.engine.speed import (
    CPU_ATTENTION_PAIRS,
    CPU_MAP_PIXELS,
    apply_runtime,
    auto_encode_batch,
    auto_predict_batch,
    set_tf32,
    tune_allocator,
)
from glocal_lib.model.backbone import load_clip
from glocal_lib.model.vision import DualPathVisionEncoder

LAYERS = (2, 4, 6, 8)


@pytest.fixture(scope="module")
def towers():
    return load_clip("glocal-tiny-8", seed=5), load_clip("glocal-tiny-8", seed=5).double()


@pytest.mark.parametrize("attention", ["vv", "qk"])
@pytest.mark.parametrize("alias", [True, False])
def test_fused_attention_as_accurate_as_the_released_arithmetic(towers, attention, alias):
    """SDPA (the profiles' default) against the exact path run in float64 (the brute-force reference
    for float32 rounding): its error must be of the same size as the exact float32 path's."""
    f32, f64 = towers
    kw = {"vv_start_layer": 2, "feature_layers": LAYERS, "image_size": 112, "attention": attention,
          "alias_final_layer": alias}
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref_g, ref_p = DualPathVisionEncoder(f64.visual, **kw)(x.double())
        ex_g, ex_p = DualPathVisionEncoder(f32.visual, **kw)(x)
        fu_g, fu_p = DualPathVisionEncoder(f32.visual, fused_attention=True, **kw)(x)
    for exact, fused, ref in ((ex_g, fu_g, ref_g), (ex_p, fu_p, ref_p)):
        err_exact = (exact.double() - ref).abs().max().item()
        err_fused = (fused.double() - ref).abs().max().item()
        assert err_fused < 1e-5 * max(1.0, ref.abs().max().item())
        assert err_fused <= 4 * err_exact + 1e-7
        assert (fused - exact).abs().max().item() < 1e-5


def test_aliased_layers_projected_once_equal_per_layer_projection(towers):
    """Layers aliased to the final V-V tokens share one ln_post + proj; the result equals projecting
    each layer's tokens separately (the straightforward computation)."""
    clip = towers[0]
    enc = DualPathVisionEncoder(clip.visual, vv_start_layer=3, feature_layers=LAYERS, image_size=56)
    x = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, patch = enc(x)
        o, v = enc.embed(x), None
        tokens = {}
        for idx, block in enumerate(clip.visual.transformer.resblocks, start=1):
            if idx < 3:
                o = block(o)
            else:
                v = o if v is None else v
                from glocal_lib.model.vision import dual_path_attention

                a, b = dual_path_attention(block.ln_1(o), block.attn)
                v, o = v + b, o + a
                o = o + block.mlp(block.ln_2(o))
            tokens[idx] = o if v is None else v
        # layers >= vv_start - 1 = 2 are the final V-V tokens (released aliasing)
        want = [clip.visual.ln_post(v[:, 1:]) @ clip.visual.proj for _ in LAYERS]
    for i, w in enumerate(want):
        torch.testing.assert_close(patch[:, i], w, atol=1e-5, rtol=1e-5)


def test_auto_batch_sizes_follow_image_size():
    assert auto_encode_batch("cpu", 112, 64) == 32
    assert auto_encode_batch("cpu", 518, 64) == 1
    assert auto_encode_batch("cpu", 336, 64) == CPU_ATTENTION_PAIRS // (577 * 577)
    assert auto_encode_batch("cuda", 518, 16) == 16
    assert auto_predict_batch("cpu", 518, 16) == CPU_MAP_PIXELS // 518**2 == 3
    assert auto_predict_batch("cpu", 112, 64) == 64
    assert auto_predict_batch("cuda:0", 518, 16) == 16
    prof = load_profile("smoke", image_size=518)
    assert prof.encode_batch(64) == 1 and prof.predict_batch() == 3
    assert load_profile("smoke", image_size=518, encode_batch_size=4).encode_batch(64) == 4  # explicit wins


def test_runtime_settings_applied_and_reverted():
    threads = torch.get_num_threads()
    try:
        apply_runtime(load_profile("smoke", allow_tf32=True, torch_threads=1))
        assert torch.backends.cuda.matmul.allow_tf32 and torch.get_num_threads() == 1
        apply_runtime(load_profile("smoke"))
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        set_tf32(False)
        torch.set_num_threads(threads)
    assert tune_allocator() in (True, False)  # glibc only; repeated calls are no-ops


def test_allocator_tuning_keeps_numbers():
    a = torch.randn(64, 1370, generator=torch.Generator().manual_seed(0))
    before = (a @ a.T).softmax(-1).numpy()
    tune_allocator()
    np.testing.assert_array_equal((a @ a.T).softmax(-1).numpy(), before)


# ---------------------------------------------------------------- metrics on the device (torch code path)
def _maps(seed: int, n: int = 6, size: int = 32, levels: int | None = None):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n // 2):
        r, c = rng.integers(4, size - 8, 2)
        masks[i, r:r + 5, c:c + 7] = 1
    maps = (rng.random((n, size, size)) + 0.8 * masks).astype(np.float32)
    if levels:  # many ties
        maps = (np.round(maps * levels) / levels).astype(np.float32)
    return maps, masks


@pytest.mark.parametrize("levels", [None, 8])
def test_pixel_metrics_torch_path_equals_numpy_path_and_sklearn(levels):
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    from glocal_lib.metrics import pixel_metrics
    from glocal_lib.metrics.device import pixel_classification_torch

    maps, masks = _maps(0, levels=levels)
    ref = pixel_metrics(maps, masks)
    dev = pixel_metrics(torch.from_numpy(maps), torch.from_numpy(masks), device="cpu")
    assert dev["pixel_auroc"] == ref["pixel_auroc"] and dev["pixel_f1max"] == ref["pixel_f1max"]
    assert dev["pixel_ap"] == pytest.approx(ref["pixel_ap"], abs=1e-14)
    for k in ("aupro_cflow", "aupro_mvtec"):
        assert dev[k] == pytest.approx(ref[k], abs=1e-12)
    y, s = masks.ravel(), maps.ravel()
    p, r, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * p * r / (p + r)
    assert dev["pixel_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert dev["pixel_ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert dev["pixel_f1max"] == pytest.approx(np.max(f1[np.isfinite(f1)]), abs=1e-12)
    half = pixel_classification_torch(torch.from_numpy(maps).half(), torch.from_numpy(masks))
    assert np.isfinite(list(half.values())).all()


def test_pixel_metrics_torch_path_undefined_and_bad_inputs():
    from glocal_lib.errors import MetricInputError
    from glocal_lib.metrics import UndefinedMetricWarning
    from glocal_lib.metrics.device import pixel_classification_torch

    maps, masks = _maps(1)
    with pytest.warns(UndefinedMetricWarning):
        out = pixel_classification_torch(torch.from_numpy(maps), torch.zeros(maps.shape))
    assert all(np.isnan(v) for v in out.values())
    bad = torch.from_numpy(maps).clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(MetricInputError, match="NaN"):
        pixel_classification_torch(bad, torch.from_numpy(masks))
    with pytest.raises(MetricInputError, match="shape"):
        pixel_classification_torch(torch.from_numpy(maps), torch.from_numpy(masks[:2]))


def test_evaluation_accumulator_device_path_equals_host_path(tmp_path):
    """The evaluation's GPU branch (maps kept as device tensors, metrics in torch) run on the CPU
    device gives the same per-category metrics as the host (numpy) branch."""
    import json
    from types import SimpleNamespace

    from glocal_lib.engine.evaluate import _CategoryAccumulator

    maps, masks = _maps(3, n=6, size=24)
    scores = maps.reshape(6, -1).max(axis=1)
    labels = masks.reshape(6, -1).any(axis=1).astype(np.int64)
    data = SimpleNamespace(has_image_metrics=True, has_pixel_metrics=True)
    out = {}
    for name, device in (("host", None), ("device", "cpu")):
        acc = _CategoryAccumulator(np.arange(6), 24, True, device)
        for i in range(6):
            amap, mask = (torch.from_numpy(maps[i]), torch.from_numpy(masks[i])) if device else (maps[i], masks[i])
            acc.add(i, float(scores[i]), int(labels[i]), amap, mask)
        assert acc.complete
        acc.finish(tmp_path / f"{name}.npz", data)
        with np.load(tmp_path / f"{name}.npz") as z:
            out[name] = json.loads(str(z["metrics"]))
    assert out["host"].keys() == out["device"].keys() and len(out["host"]) == 8
    for k, v in out["host"].items():
        assert out["device"][k] == pytest.approx(v, abs=1e-14), k
