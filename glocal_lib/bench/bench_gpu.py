"""GPU benchmark: forward throughput, per-phase peak memory, achieved TFLOP/s, evaluation and training.

    python -m glocal_lib.bench.bench_gpu                      # one GPU: ViT-L-14-336-quickgelu @ 518, ~5 min
    python -m glocal_lib.bench.bench_gpu --device cpu --backbone glocal-tiny-24 --image-size 224 \\
        --out results/benchmarks/gpu_cpu.md                   # the same code path on a CPU (CI runs a tiny one)

Random full-size weights (speed does not depend on the values). Sections, all in one process:
1. vision forward only (the frozen dual-path tower, what fills the feature cache) per precision
   (fp32 / bf16 / fp16 autocast): images/s, peak device memory of the phase, achieved TFLOP/s from
   the FLOPs counted by torch.utils.flop_counter on one image, and the fraction of the device's dense
   bf16 tensor peak (table below; unknown devices say so);
2. a full evaluation on synthetic images: the engine (cold cache, then warm) against the released
   test.py's structure (batch 1, CPU smoothing, a cv2 picture per image), metrics compared;
3. training for --epochs (15: the paper's protocol) with cached features against recomputing them
   every batch as the released train.py does.
Every CUDA timing is bracketed by torch.cuda.synchronize(). --costs-out writes the measured
per-image seconds in the keys of glocal_lib/bench/costs.yaml (for `glocal reproduce --costs`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glocal_lib.bench.machine import command_line, load_average, machine_info, markdown_machine, median
from glocal_lib.metrics.summary import MEAN_ROW

MODULE = "glocal_lib.bench.bench_gpu"
# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from the vendors' data sheets, by name fragment.
DENSE_BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,  # torch names the SXM part "NVIDIA H100 80GB HBM3"; the others say PCIe / NVL
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "A100": 312.0,
    "L40S": 362.0,
    "RTX 4090": 165.0,
    "L4": 121.0,
}


def dense_bf16_peak(name: str) -> float | None:
    """Peak dense bf16 TFLOP/s for a device name (longest matching fragment), None if unknown."""
    hits = [k for k in DENSE_BF16_PEAK_TFLOPS if k.lower() in name.lower()]
    return DENSE_BF16_PEAK_TFLOPS[max(hits, key=len)] if hits else None


def vision_flops(model: Any) -> int:
    """FLOPs of one image's dual-path vision forward (2 per multiply-add), from the tower's sizes.

    Patch embedding; per block qkv (6NW^2), per attention scores + weighted sum (4N^2W) and output
    projection (2NW^2), MLP (2 * 2N * W * hidden); two attentions from vv_start_layer on; the final
    projection per distinct feature layer and for the CLS token. Softmax, norms and activations are
    not counted. tests/test_bench.py checks it against torch.utils.flop_counter, which misses
    attention kernels on CPUs (SDPA, nn.MultiheadAttention's fast path), so it cannot be used here.
    """
    vis = model.vision
    visual = vis.visual
    w = int(visual.conv1.weight.shape[0])
    n = vis.grid ** 2 + 1
    hidden = int(visual.transformer.resblocks[0].mlp.c_fc.weight.shape[0])
    total = 2 * (n - 1) * int(visual.conv1.weight[0].numel()) * w
    for block in range(1, vis.depth + 1):
        attentions = 1 if vis.vv_start_layer is None or block < vis.vv_start_layer else 2
        total += 6 * n * w * w + attentions * (4 * n * n * w + 2 * n * w * w) + 4 * n * w * hidden
    distinct = {"final" if vis._aliased(layer) or layer == vis.depth else layer for layer in vis.feature_layers}
    return total + len(distinct) * 2 * (n - 1) * w * vis.output_dim + 2 * w * vis.output_dim


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _phase(device: str, fn: Callable[[], Any]) -> tuple[Any, float, float | None]:
    """(result, seconds, peak device GiB of this phase; None on a CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = fn()
    _sync(device)
    sec = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return out, sec, peak


def forward_rows(model: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    from glocal_lib.engine.features import autocast

    rows = []
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=gen).to(args.device)
    peak = dense_bf16_peak(torch.cuda.get_device_name(0)) if args.device.startswith("cuda") else None
    flops = vision_flops(model)
    for precision in args.precisions.split(","):

        def run(precision: str = precision) -> None:
            with torch.no_grad(), autocast(args.device, precision):
                model.vision(images)

        run()  # warm-up: kernels, allocator, autotuning
        times = []
        peak_mem = None
        for _ in range(args.iters):
            _, sec, mem = _phase(args.device, run)
            times.append(sec)
            peak_mem = mem
        sec = median(times)
        achieved = flops * args.batch / sec / 1e12
        rows.append({"precision": precision, "batch": args.batch, "s_per_batch": sec,
                     "images_per_s": args.batch / sec, "peak_gib": peak_mem, "tflop_per_image": flops / 1e12,
                     "tflops": achieved, "fraction": achieved / peak if peak else None})
    return rows


def _profile(args: argparse.Namespace, work: Path, precision: str = "fp32") -> Any:
    from glocal_lib.engine import load_profile

    return load_profile("smoke", backbone=args.backbone, image_size=args.image_size, device=args.device,
                        precision=precision, epochs=args.epochs, results_root=str(work / "results"),
                        cache_dir=str(work / "cache"), data_root=str(work / "data"),
                        torch_threads=args.threads, num_workers=args.workers, cache_dtype=args.cache_dtype,
                        eval_batch_size=args.eval_batch, encode_batch_size=args.encode_batch)


def evaluation_rows(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from glocal_lib.bench.bench_engine import head_rows, released_style_eval
    from glocal_lib.engine import EvalSpec, load_run, prepare_data, run_eval
    from glocal_lib.engine.evaluate import eval_identity
    from glocal_lib.engine.modeling import build_detector

    prof = _profile(args, work)
    data = head_rows(prepare_data(prof, ["visa"])["visa"], args.eval_images)
    spec = EvalSpec("bench", "visa")
    exact = prof.replace(fused_attention=False)
    identity, cfg, ckpt, seed = eval_identity(spec, exact, data)
    pics = work / "pictures"
    pics.mkdir(parents=True, exist_ok=True)

    def released() -> Any:
        model = build_detector(cfg, exact, seed=seed, checkpoint=ckpt)
        return released_style_eval(model, data, identity["sigma"], pics)[1]

    ref, t_ref, m_ref = _phase(args.device, released)
    run, t_cold, m_cold = _phase(args.device, lambda: run_eval(spec, prof, progress=False, data=data))
    spec_warm = replace(spec, name="bench-warm")
    _, t_warm, m_warm = _phase(args.device, lambda: run_eval(spec_warm, prof, progress=False, data=data))
    got = load_run(run).metrics()
    got = got[got["category"] != MEAN_ROW].merge(ref, on=["category", "metric"], suffixes=("", "_ref"))
    return {"images": len(data.index), "released_s": t_ref, "cold_s": t_cold, "warm_s": t_warm,
            "peak": (m_ref, m_cold, m_warm), "compared": len(got),
            "max_diff": float((got["value"] - got["value_ref"]).abs().max())}


def training_rows(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from glocal_lib.bench.bench_engine import head_rows
    from glocal_lib.engine import TrainSpec, load_run, prepare_data, run_train

    prof = _profile(args, work)
    data = head_rows(prepare_data(prof, ["mvtec"])["mvtec"], args.train_images)
    spec = TrainSpec("bench", train_dataset="mvtec")
    cached, t_cached, m_cached = _phase(args.device, lambda: run_train(spec, prof, progress=False, data=data))
    live, t_live, m_live = _phase(args.device, lambda: run_train(replace(spec, use_cache=False), prof,
                                                                 progress=False, data=data))
    cols = ["global", "local", "focal", "dice", "gcl", "total"]
    diff = float(np.abs(load_run(cached).losses()[cols].to_numpy() - load_run(live).losses()[cols].to_numpy()).max())
    return {"images": len(data.index), "epochs": args.epochs, "cached_s": t_cached, "live_s": t_live,
            "peak": (m_cached, m_live), "loss_diff": diff}


def _gib(x: float | None) -> str:
    return f"{x:.2f}" if x is not None else "n/a (CPU)"


def report(fwd: list[dict[str, Any]], ev: dict[str, Any], tr: dict[str, Any], machine: dict[str, str],
           args: argparse.Namespace, argv: Sequence[str] | None, total_s: float) -> str:
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    peak = dense_bf16_peak(name) if args.device.startswith("cuda") else None
    lines = [f"# GPU benchmark: {args.backbone} @ {args.image_size} px on {args.device}", "",
             "Command:", "", "```", command_line(MODULE, argv), "```", "", "## Machine", "",
             *markdown_machine(machine), f"- load average at end: {load_average()}",
             f"- benchmark wall time: {total_s:.0f} s", ""]
    if not args.device.startswith("cuda"):
        lines += ["**No GPU was used for this record**: it runs the GPU benchmark's code on a CPU with a "
                  "small tower, so the numbers say nothing about a GPU. Peak device memory is n/a on a CPU.", ""]
    lines += ["## 1. Vision forward only (frozen dual-path tower, random weights)", "",
              f"Batch {args.batch}, median of {args.iters} timed calls after one warm-up; FLOPs per image "
              "counted from the tower's sizes (bench_gpu.vision_flops: matmuls and attention, 2 per "
              "multiply-add; softmax, norms and activations not counted). Device dense bf16 peak: "
              + (f"{peak:.0f} TFLOP/s ({name})" if peak else f"unknown for '{name}' (no fraction computed)") + ".",
              "", "| precision | images/s | s/batch | peak memory GiB | GFLOP/image | achieved TFLOP/s | "
              "fraction of dense bf16 peak |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in fwd:
        frac = f"{100 * r['fraction']:.1f}%" if r["fraction"] is not None else "n/a"
        lines.append(f"| {r['precision']} | {r['images_per_s']:.2f} | {r['s_per_batch']:.3f} | {_gib(r['peak_gib'])} | "
                     f"{1000 * r['tflop_per_image']:.4g} | {r['tflops']:.4g} | {frac} |")
    n = ev["images"]
    lines += ["", f"## 2. Full evaluation, {n} synthetic images (fp32)", "",
              "| variant | s | images/s | speed-up | peak memory GiB |", "|---|---:|---:|---:|---:|",
              f"| released-style loop (batch 1, CPU smoothing, cv2 pictures) | {ev['released_s']:.2f} | "
              f"{n / ev['released_s']:.1f} | 1.00x | {_gib(ev['peak'][0])} |",
              f"| engine, cold cache (fill included) | {ev['cold_s']:.2f} | {n / ev['cold_s']:.1f} | "
              f"**{ev['released_s'] / ev['cold_s']:.2f}x** | {_gib(ev['peak'][1])} |",
              f"| engine, warm cache | {ev['warm_s']:.2f} | {n / ev['warm_s']:.1f} | "
              f"{ev['released_s'] / ev['warm_s']:.2f}x | {_gib(ev['peak'][2])} |", "",
              f"Metric values compared: {ev['compared']}, max abs difference {ev['max_diff']:.1e}.", "",
              f"## 3. Training, {tr['epochs']} epochs on {tr['images']} images (fp32)", "",
              "| variant | s | speed-up | peak memory GiB |", "|---|---:|---:|---:|",
              f"| uncached (vision every batch, as the released train.py) | {tr['live_s']:.2f} | 1.00x | "
              f"{_gib(tr['peak'][1])} |",
              f"| cached features (cache built inside the timing) | {tr['cached_s']:.2f} | "
              f"**{tr['live_s'] / tr['cached_s']:.2f}x** | {_gib(tr['peak'][0])} |", "",
              f"Max abs loss difference cached vs uncached over all steps: {tr['loss_diff']:.1e}."]
    return "\n".join(lines) + "\n"


def costs_yaml(fwd: list[dict[str, Any]], ev: dict[str, Any], tr: dict[str, Any], machine: dict[str, str],
               args: argparse.Namespace) -> str:
    """Measured per-image seconds in costs.yaml's keys (encode per precision; others measured in fp32)."""
    enc = {r["precision"]: round(1 / r["images_per_s"], 6) for r in fwd}
    step = round(tr["cached_s"] / max(1, tr["epochs"] * tr["images"]), 6)
    ev_s = round(ev["warm_s"] / max(1, ev["images"]), 6)
    lines = [f'source: "measured by python -m {MODULE} ({machine["date"]})"',
             f'machine: "{machine.get("gpu") if args.device.startswith("cuda") else machine["cpu"]}"',
             f"backbone: {args.backbone}", f"image_size: {args.image_size}", "seconds_per_image:",
             "  encode: {" + ", ".join(f"{k}: {v}" for k, v in enc.items()) + "}",
             f"  train_step: {{fp32: {step}}}  # includes the cache build of the timed run",
             f"  eval: {{fp32: {ev_s}}}  # warm cache"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backbone", default="ViT-L-14-336-quickgelu")
    p.add_argument("--image-size", type=int, default=518)
    p.add_argument("--precisions", default="fp32,bf16,fp16")
    p.add_argument("--batch", type=int, default=8, help="images per forward in section 1")
    p.add_argument("--iters", type=int, default=5, help="timed forwards per precision (median)")
    p.add_argument("--eval-images", type=int, default=64)
    p.add_argument("--train-images", type=int, default=16)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--eval-batch", type=int, default=16)
    p.add_argument("--encode-batch", type=int, default=None, help="cache fill batch (default: by device/size)")
    p.add_argument("--cache-dtype", default="fp32", choices=("fp16", "fp32"),
                   help="feature cache dtype (fp32: metrics comparable to the loop; fp16 = the paper profile, ~1e-3)")
    p.add_argument("--workers", type=int, default=None, help="decoding workers (default: 4 on a GPU, 0 on a CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--allow-tf32", action="store_true", help="TF32 fp32 matmuls (off: exact fp32)")
    p.add_argument("--out", default=None, help="Markdown record (default results/benchmarks/gpu.md on a GPU)")
    p.add_argument("--costs-out", default=None, help="also write measured per-image costs (costs.yaml keys)")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary folder, removed)")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda but torch sees no GPU; use --device cpu with a small tower (see the docstring)")
    if args.workers is None:
        args.workers = 4 if args.device.startswith("cuda") else 0
    if args.threads:
        torch.set_num_threads(args.threads)
    from glocal_lib.engine.speed import set_tf32

    set_tf32(args.allow_tf32)
    out = args.out or ("results/benchmarks/gpu.md" if args.device.startswith("cuda") else None)
    machine = machine_info(args.device)
    t0 = time.perf_counter()
    tmp = None if args.work else tempfile.mkdtemp(prefix="bench_gpu_")
    work = Path(args.work or tmp)
    try:
        from glocal_lib.engine.modeling import build_detector, model_config

        prof = _profile(args, work)
        model = build_detector(model_config("glocalclip-released"), prof, seed=0)
        print("[bench_gpu] forward ...", flush=True)
        fwd = forward_rows(model, args)
        del model
        print("[bench_gpu] evaluation ...", flush=True)
        ev = evaluation_rows(args, work / "eval")
        print("[bench_gpu] training ...", flush=True)
        tr = training_rows(args, work / "train")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    text = report(fwd, ev, tr, machine, args, argv, time.perf_counter() - t0)
    from glocal_lib.io import atomic_write_text

    if out:
        atomic_write_text(out, text)
    if args.costs_out:
        atomic_write_text(args.costs_out, costs_yaml(fwd, ev, tr, machine, args))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
