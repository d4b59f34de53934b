"""Benchmark scripts: the GPU benchmark runs end to end on a CPU with a tiny tower, its FLOP count
matches the transformer formula, and the released-style pictures are written as cv2 writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from glocal_lib.bench.bench_gpu import dense_bf16_peak, main, vision_flops
from glocal_lib.engine import load_profile
from glocal_lib.engine.modeling import build_detector, model_config


@pytest.mark.parametrize("vv_start", [1, 2])
def test_vision_flops_equal_torchs_count(tmp_path: Path, vv_start: int):
    """Against torch.utils.flop_counter on the exact attention path with nn.MultiheadAttention's fast
    path off; the counter does not see the ordinary blocks' fused attention (blocks < vv_start)."""
    from torch.utils.flop_counter import FlopCounterMode

    prof = load_profile("smoke", image_size=56, results_root=str(tmp_path), fused_attention=False)
    model = build_detector(model_config("glocalclip-released", {"vv_start_layer": vv_start}), prof, seed=0)
    counter = FlopCounterMode(display=False)
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), counter:
            model.vision(torch.zeros(1, 3, 56, 56))
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    n, w = model.vision.grid ** 2 + 1, 128
    unseen = (vv_start - 1) * 4 * n * n * w
    assert counter.get_total_flops() + unseen == vision_flops(model)


def test_dense_bf16_peak_table():
    assert dense_bf16_peak("NVIDIA H200") == 989.0
    assert dense_bf16_peak("NVIDIA H100 80GB HBM3") == 989.0
    assert dense_bf16_peak("NVIDIA H100 PCIe") == 756.0  # longest fragment wins over "H100"
    assert dense_bf16_peak("NVIDIA A100-SXM4-80GB") == 312.0
    assert dense_bf16_peak("NVIDIA GeForce RTX 4090") == 165.0
    assert dense_bf16_peak("Some Future Accelerator") is None


def test_gpu_benchmark_runs_on_cpu_with_a_tiny_tower(tmp_path: Path):
    out, costs = tmp_path / "gpu_cpu.md", tmp_path / "costs.yaml"
    main(["--device", "cpu", "--backbone", "glocal-tiny-8", "--image-size", "56", "--precisions", "fp32",
          "--batch", "2", "--iters", "1", "--eval-images", "2", "--train-images", "2", "--epochs", "1",
          "--threads", "1", "--out", str(out), "--costs-out", str(costs), "--work", str(tmp_path / "w")])
    text = out.read_text()
    assert "No GPU was used for this record" in text and "glocal-tiny-8 @ 56 px on cpu" in text
    for section in ("## 1. Vision forward only", "## 2. Full evaluation", "## 3. Training"):
        assert section in text
    from glocal_lib.io import read_yaml

    measured = read_yaml(costs)
    assert measured["seconds_per_image"]["encode"]["fp32"] > 0 and measured["image_size"] == 56


def test_released_style_picture_is_the_cv2_jet_overlay(tmp_path: Path):
    cv2 = pytest.importorskip("cv2")
    from glocal_lib.bench.bench_engine import picture_writer

    name, write = picture_writer()
    assert "cv2" in name
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # a red image on disk (stored BGR by cv2)
    cv2.imwrite(str(tmp_path / "img.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    amap = np.linspace(0, 3, 16 * 16, dtype=np.float32).reshape(16, 16)
    write(tmp_path / "out.png", tmp_path / "img.png", amap, 16)
    got = cv2.cvtColor(cv2.imread(str(tmp_path / "out.png")), cv2.COLOR_BGR2RGB)
    assert got.shape == (16, 16, 3)
    # the map's maximum is JET's dark red (128, 0, 0) blended 50/50 with the image's red 200
    assert tuple(got[-1, -1]) == (int(0.5 * 200 + 0.5 * 128), 0, 0)
    assert tuple(got[0, 0]) == (int(0.5 * 200), 0, int(0.5 * 128))  # minimum: JET's dark blue (0, 0, 128)
