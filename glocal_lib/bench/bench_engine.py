"""Engine benchmark: cached vs uncached training, engine vs released-style evaluation, side by side.

    python -m glocal_lib.bench.bench_engine                       # CPU, both configs, writes the record
    python -m glocal_lib.bench.bench_engine --configs smoke --epochs 3 --out /tmp/x.md   # quick look
    python -m glocal_lib.bench.bench_engine --configs custom --device cuda \\
        --backbone ViT-L-14-336-quickgelu --image-size 518 --weights ViT-L-14-336px.pt   # GPU user

Everything runs in ONE process on the same model and data, one after the other:
- training: the same TrainSpec trained twice, features from the cache (built inside the timed run)
  and recomputed every batch as the released train.py does; losses compared step by step;
- evaluation: the engine (the profile's defaults: fused attention, batch sizes by image size,
  smoothing on the device, no pictures; cold = cache built in the timed run, warm = cache reused)
  against a released-style loop (test.py: batch 1, the released attention arithmetic, text encoded
  once, scipy gaussian_filter per image on the CPU, a cv2 picture per image as its visualizer
  writes them; imports before the clock), metrics of both from glocal_lib.metrics and compared;
  --repeats rounds alternate the three and the record shows medians (and every round's time).
Peak memory per variant, in fresh subprocesses: glocal_lib.bench.bench_cold_eval.
Configs: `smoke` = the smoke profile (glocal-tiny-8 at 112 px: the text tower dominates a step);
`balance` = glocal-tiny-24 at the paper's 518 px and layers 6/12/18/24 (a narrow ViT whose
vision:text cost ratio is close to ViT-L/14 at 518 px, which is what caching saves).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from glocal_lib.bench.machine import machine_info, median, timed
from glocal_lib.config import PRECISIONS
from glocal_lib.metrics.summary import MEAN_ROW

CONFIGS: dict[str, dict[str, Any]] = {
    "smoke": {"backbone": "glocal-tiny-8", "image_size": 112, "train_rows": None, "eval_rows": None},
    # vision batch sizes: the profile's choice by image size (glocal_lib.engine.speed)
    "balance": {"backbone": "glocal-tiny-24", "image_size": 518, "train_rows": 8, "eval_rows": 12},
}


def head_rows(data: Any, rows: int | None) -> Any:
    from glocal_lib.engine.data_prep import DataInfo, index_hash

    if rows is None:
        return data
    # one normal and one anomalous image per category, categories in order: every category has both labels
    first = data.index.groupby(["category", "label"], sort=False).head(1)
    idx = first.sort_values("category", kind="stable", key=lambda c: c.map(
        {k: i for i, k in enumerate(data.categories)})).head(rows).reset_index(drop=True)
    return DataInfo(data.key, data.root, idx, data.eval_level, index_hash(idx))


def picture_writer() -> tuple[str, Any]:
    """(name, write(path, image_path, amap, size)) for the released-style loop's pictures.

    The released test.py (AnomalyCLIP/GlocalCLIP ``visualization.py``) reads the image with cv2,
    resizes it, min-max normalises the map, colours it with COLORMAP_JET, blends 50/50 and writes it
    with ``cv2.imwrite``; this does the same steps. Without opencv (the `bench` extra) no picture is
    written and the record says so.
    """
    try:
        import cv2
    except ImportError:
        return "none (opencv-python-headless not installed)", None

    def write(path: Path, image_path: Path, amap: np.ndarray, size: int) -> None:
        rgb = cv2.cvtColor(cv2.resize(cv2.imread(str(image_path)), (size, size)), cv2.COLOR_BGR2RGB)
        span = float(amap.max() - amap.min())
        norm = (amap - amap.min()) / span if span > 0 else np.zeros_like(amap)
        heat = cv2.cvtColor(cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        blend = (0.5 * rgb.astype(float) + 0.5 * heat).astype(np.uint8)
        cv2.imwrite(str(path), cv2.cvtColor(blend, cv2.COLOR_RGB2BGR))

    return "cv2.imwrite of the JET overlay (as the released visualization.py)", write


def released_style_eval(model: Any, data: Any, sigma: float, pics: Path | None
                        ) -> tuple[float, pd.DataFrame, dict[str, np.ndarray]]:
    """test.py's loop: batch 1, CPU scipy smoothing, a cv2 picture per image, metrics at the end.

    Imports happen before the clock starts (the released script pays them once at start-up, as
    our engine does); returns (seconds, metrics rows, map per image path).
    """
    import warnings

    from scipy.ndimage import gaussian_filter

    from glocal_lib.data import AnomalyDataset
    from glocal_lib.metrics import image_metrics, pixel_metrics
    from glocal_lib.model import scoring

    _, write = picture_writer() if pics is not None else ("", None)
    t0 = time.perf_counter()
    ds = AnomalyDataset(data.root, data.index, image_size=model.image_size)
    loader = torch.utils.data.DataLoader(ds, batch_size=1, shuffle=False)
    results: dict[str, dict[str, list[Any]]] = {}
    maps_by_path: dict[str, np.ndarray] = {}
    with torch.no_grad():
        gpair, lpair = model.text_pairs()  # released test.py encodes the prompts once
        for n, item in enumerate(loader):
            feats = model.encode_image(item["image"])
            score = scoring.image_scores(feats.global_emb, gpair, model.cfg.temperature)
            layer = scoring.layer_maps(feats.patch, lpair, model.image_size, model.cfg.temperature)
            amap = scoring.anomaly_map(layer)
            if model.cfg.map_reduction == "mean":
                amap = amap / layer.shape[1]
            amap = np.stack([gaussian_filter(m, sigma=sigma) for m in amap.cpu().numpy()])
            r = results.setdefault(item["category"][0], {"s": [], "y": [], "m": [], "g": []})
            r["s"].append(float(score[0]))
            r["y"].append(int(item["label"][0]))
            r["m"].append(amap[0])
            maps_by_path[item["image_path"][0]] = amap[0]
            r["g"].append((item["mask"][0].numpy() > 0.5).astype(np.uint8))
            if write is not None and pics is not None:
                write(pics / f"{n}.png", Path(data.root) / item["image_path"][0], amap[0], model.image_size)
    rows = []
    for cat, r in results.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = {}
            if data.has_image_metrics:
                m.update(image_metrics(np.array(r["s"]), np.array(r["y"])))
            if data.has_pixel_metrics:
                m.update(pixel_metrics(np.stack(r["m"]), np.stack(r["g"])))
        rows += [(cat, k, float(v)) for k, v in m.items()]
    return time.perf_counter() - t0, pd.DataFrame(rows, columns=["category", "metric", "value"]), maps_by_path


def bench_config(name: str, cfg: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from glocal_lib.engine import (
        EvalSpec,
        TrainSpec,
        load_profile,
        load_run,
        prepare_data,
        run_eval,
        run_train,
    )

    base = work / name
    prof = load_profile("smoke", backbone=cfg["backbone"], image_size=cfg["image_size"], epochs=args.epochs,
                        device=args.device, precision=args.precision, weights=cfg.get("weights"),
                        results_root=str(base / "results"), cache_dir=str(base / "cache"),
                        data_root=str(work / "data"), cache_dtype=args.cache_dtype,
                        torch_threads=args.threads, eval_batch_size=args.eval_batch_size,
                        encode_batch_size=cfg.get("encode_batch_size") or args.encode_batch_size)
    data = prepare_data(prof, ["mvtec", "visa"])
    train_data, eval_data = head_rows(data["mvtec"], cfg["train_rows"]), head_rows(data["visa"], cfg["eval_rows"])
    out: dict[str, Any] = {"config": name, "backbone": prof.backbone, "image_size": prof.image_size,
                           "train_images": len(train_data.index), "eval_images": len(eval_data.index),
                           "epochs": args.epochs}
    spec = TrainSpec("bench", train_dataset="mvtec")
    # warm-up (imports, allocator, tokenizer) outside the timings, on its own results and cache folders
    warm_prof = prof.replace(results_root=str(base / "warmup"), cache_dir=str(base / "warmup-cache"))
    run_train(replace(spec, epochs=1), warm_prof, progress=False, data=head_rows(data["mvtec"], 4))
    print(f"[{name}] training {len(train_data.index)} images x {args.epochs} epochs, cached ...", flush=True)
    t = time.perf_counter()
    cached = run_train(spec, prof, progress=False, data=train_data)
    out["train_cached_s"] = time.perf_counter() - t
    print(f"[{name}]   {out['train_cached_s']:.1f} s; uncached ...", flush=True)
    t = time.perf_counter()
    live = run_train(replace(spec, use_cache=False), prof, progress=False, data=train_data)
    out["train_live_s"] = time.perf_counter() - t
    print(f"[{name}]   {out['train_live_s']:.1f} s", flush=True)
    tc, tl = load_run(cached), load_run(live)
    for key, run in (("cached", tc), ("live", tl)):
        timing = __import__("json").loads((run.path / "timing.json").read_text())
        out[f"{key}_features_s"] = timing["features_s"]
        out[f"{key}_epoch_s"] = float(np.mean(list(timing["epochs_s"].values())))
    cols = ["global", "local", "focal", "dice", "gcl", "total"]
    out["loss_max_abs_diff"] = float(np.abs(tc.losses()[cols].to_numpy() - tl.losses()[cols].to_numpy()).max())
    out["loss_first_last"] = (float(tc.losses()["total"].iloc[0]), float(tc.losses()["total"].iloc[-1]))

    print(f"[{name}] evaluating {len(eval_data.index)} images: released-style loop ...", flush=True)
    from glocal_lib.engine.modeling import build_detector, config_from_dict

    exact = prof.replace(fused_attention=False)  # the released attention arithmetic
    sigma = float(config_from_dict(tc.config["model"]).sigma) * prof.image_size / 518.0
    times: dict[str, list[float]] = {"released": [], "cold": [], "warm": []}
    for rep in range(args.repeats):  # side by side, alternating, median of the repeats
        def released(rep: int = rep) -> tuple[Any, ...]:
            model = build_detector(config_from_dict(tc.config["model"]), exact, seed=spec.seed,
                                   checkpoint=tc.checkpoint())
            pics = base / f"released_pictures_{rep}"
            pics.mkdir(parents=True, exist_ok=True)
            return released_style_eval(model, eval_data, sigma, pics)

        (_, ref, ref_maps), wall, _ = timed(released)
        times["released"].append(wall)
        shutil.rmtree(base / "cache", ignore_errors=True)  # cold start for the engine's evaluation
        cold, wall, _ = timed(lambda rep=rep: run_eval(EvalSpec(f"bench-cold-{rep}", "visa", train_run=cached),
                                                       prof, progress=False, data=eval_data))
        times["cold"].append(wall)
        warm, wall, _ = timed(lambda rep=rep: run_eval(EvalSpec(f"bench-warm-{rep}", "visa", train_run=cached),
                                                       prof, progress=False, data=eval_data))
        times["warm"].append(wall)
        print(f"[{name}]   repeat {rep}: released {times['released'][-1]:.1f} s, engine cold "
              f"{times['cold'][-1]:.1f} s, warm {times['warm'][-1]:.1f} s", flush=True)
    out["eval_released_s"], out["eval_engine_cold_s"], out["eval_engine_warm_s"] = (
        median(times["released"]), median(times["cold"]), median(times["warm"]))
    out["eval_times"] = times
    got = load_run(cold).metrics()
    got = got[got["category"] != MEAN_ROW].merge(ref, on=["category", "metric"], suffixes=("", "_ref"))
    out["metric_rows_compared"] = len(got)
    out["metric_max_abs_diff"] = float((got["value"] - got["value_ref"]).abs().max())
    out["metric_diffs"] = {k: float(g["value"].sub(g["value_ref"]).abs().max()) for k, g in got.groupby("metric")}
    samples = load_run(cold).samples()
    out["map_max_abs_diff"] = max(
        float(np.abs(np.load(load_run(cold).path / f)["map"] - ref_maps[p]).max())
        for f, p in zip(samples["file"], samples["image_path"]))
    warm_m = load_run(warm).metrics()
    out["warm_equals_cold"] = bool(np.allclose(warm_m["value"], load_run(cold).metrics()["value"], equal_nan=True))
    cold_m = load_run(cold).metrics()
    mean = cold_m[cold_m["category"] == MEAN_ROW].set_index("metric")["value"]
    out["eval_mean"] = {k: round(float(v), 4) for k, v in mean.items()}
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        out["gpu_peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def _report(results: list[dict[str, Any]], machine: dict[str, str], argv: list[str], total_s: float) -> str:
    lines = ["# Engine benchmark: cached vs uncached training, engine vs released-style evaluation", "",
             "Recorded output of `python -m glocal_lib.bench.bench_engine` (all numbers from ONE run, side by side, "
             "same machine, same model and data). Synthetic stand-in data and random tiny backbones: these are "
             "timings, not paper results.", "",
             "Command:", "", "```", "python -m glocal_lib.bench.bench_engine " + shlex.join(argv), "```", "",
             "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    lines += [f"- load average at end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}" if hasattr(os, "getloadavg")
              else "", f"- benchmark wall time: {total_s:.0f} s", "",
              "The machine is shared with other jobs (see the load average): wall times carry that noise; both "
              "sides of every comparison ran back to back in the same process.", "",
              f"## Training ({results[0]['epochs'] if results else '?'} epochs (the paper's protocol: 15), batch 8, "
              "Adam 1e-3 (0.5, 0.999), seed 111; one run per side)", "",
              "| config | backbone @ px | images | epochs | uncached: s/epoch | uncached total s | cached: build s | "
              "cached: s/epoch | cached total s | speed-up (total) | speed-up per epoch after build | "
              "max abs loss diff |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['config']} | {r['backbone']} @ {r['image_size']} | {r['train_images']} | {r['epochs']} | "
            f"{r['live_epoch_s']:.2f} | {r['train_live_s']:.1f} | {r['cached_features_s']:.2f} | "
            f"{r['cached_epoch_s']:.2f} | {r['train_cached_s']:.1f} | **{r['train_live_s'] / r['train_cached_s']:.1f}x** | "
            f"{r['live_epoch_s'] / r['cached_epoch_s']:.1f}x | {r['loss_max_abs_diff']:.2e} |")
    lines += ["", "Totals include building the model; 'cached total' includes building the feature cache inside "
              "the timed run (a cold cache). Runs that share a cache (the lambda sweep, the ablations with the "
              "same vision options, evaluation of the same dataset) skip the build: for k runs the saving tends "
              "to the per-epoch ratio.", "",
              "## Evaluation", "",
              "| config | images | released-style s (img/s) | engine cold s (img/s) | engine warm s (img/s) | "
              "speed-up cold | speed-up warm | metric values compared | max abs metric diff |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        n = r["eval_images"]
        lines.append(
            f"| {r['config']} | {n} | {r['eval_released_s']:.1f} ({n / r['eval_released_s']:.1f}) | "
            f"{r['eval_engine_cold_s']:.1f} ({n / r['eval_engine_cold_s']:.1f}) | "
            f"{r['eval_engine_warm_s']:.1f} ({n / r['eval_engine_warm_s']:.1f}) | "
            f"**{r['eval_released_s'] / r['eval_engine_cold_s']:.1f}x** | "
            f"{r['eval_released_s'] / r['eval_engine_warm_s']:.1f}x | {r['metric_rows_compared']} | "
            f"{r['metric_max_abs_diff']:.2e} |")
    lines += ["", "Released-style loop = the released test.py's structure on our model: batch 1, the released "
              "attention arithmetic, prompts encoded once, per-image `scipy.ndimage.gaussian_filter` on the CPU, "
              "one picture per image written as the released visualizer does (cv2 JET overlay + `cv2.imwrite`), "
              "metrics by glocal_lib.metrics at the end; imports happen before its clock starts. Engine = "
              "`run_eval` with the profile's defaults (batched, fused attention, smoothing on the device, "
              "per-category streaming, anomaly maps only for the figure samples); cold includes building the "
              "feature cache, warm reuses it. Times: median of the repeats (each repeat runs the three one after "
              "the other): " + "; ".join(
                  f"{r['config']} " + ", ".join(f"{k} {[round(x, 1) for x in v]}" for k, v in r["eval_times"].items())
                  for r in results) + ".", ""]
    for r in results:
        lines.append(f"- {r['config']}: training loss {r['loss_first_last'][0]:.3f} -> {r['loss_first_last'][1]:.3f}; "
                     f"evaluation means {r['eval_mean']}; warm == cold metrics: {r['warm_equals_cold']}"
                     + f"; largest metric difference per metric {({k: f'{v:.1e}' for k, v in r['metric_diffs'].items()})}"
                     + f"; max abs anomaly-map difference on the saved samples {r['map_max_abs_diff']:.1e}"
                     + (f"; GPU peak memory {r['gpu_peak_mem_gib']:.1f} GiB" if "gpu_peak_mem_gib" in r else ""))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m glocal_lib.bench.bench_engine", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="smoke,balance", help="comma list of: smoke, balance, custom")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--backbone", default="ViT-L-14-336-quickgelu", help="backbone of the 'custom' config")
    p.add_argument("--image-size", type=int, default=518, help="image size of the 'custom' config")
    p.add_argument("--weights", default=None, help="weights of the 'custom' config (None: random)")
    p.add_argument("--train-rows", type=int, default=16, help="training images of the 'custom' config")
    p.add_argument("--eval-rows", type=int, default=32, help="evaluation images of the 'custom' config")
    p.add_argument("--cache-dtype", default="fp32", choices=("fp32", "fp16"))
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--encode-batch-size", type=int, default=None,
                   help="images per vision forward when filling the cache (default: the profile's)")
    p.add_argument("--repeats", type=int, default=3, help="evaluation repeats per side (median)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: best on a busy 2-core machine)")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary folder, removed)")
    p.add_argument("--out", default="results/benchmarks/engine.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = dict(CONFIGS)
    configs["custom"] = {"backbone": args.backbone, "image_size": args.image_size, "weights": args.weights,
                         "train_rows": args.train_rows, "eval_rows": args.eval_rows}
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    machine = machine_info(args.device)
    t0 = time.perf_counter()
    tmp = None if args.work else tempfile.mkdtemp(prefix="bench_engine_")
    work = Path(args.work or tmp)
    try:
        results = [bench_config(n, configs[n], args, work) for n in names]
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    text = _report(results, machine, list(sys.argv[1:] if argv is None else argv), time.perf_counter() - t0)
    from glocal_lib.io import atomic_write_text

    atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
