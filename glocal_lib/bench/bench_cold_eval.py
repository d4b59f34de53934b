"""Cold-cache evaluation, engine vs the released-style loop: wall time, CPU time and peak memory.

    python -m glocal_lib.bench.bench_cold_eval                       # tiny 24-layer tower at 518 px
    python -m glocal_lib.bench.bench_cold_eval --images 8 --repeats 1 --out /tmp/x.md   # quick look

Each variant runs in a FRESH subprocess (peak memory is per process: VmHWM from /proc/self/status
sees torch's C++ allocations, which tracemalloc does not), the variants alternate within every
repeat (released first on even repeats, engine first on odd ones) and the record shows medians.
- released: the released test.py's structure (bench_engine.released_style_eval): batch 1, the
  released attention arithmetic, scipy smoothing on the CPU, a cv2 picture per image, metrics at
  the end; no allocator tuning.
- engine: `run_eval` with an empty feature cache (cold: the cache fill and its probe image are in
  the timing), the profile's defaults (fused attention, batch sizes chosen by image size,
  allocator tuning), no pictures except the figure samples.
- engine-exact (optional): the engine with the released attention arithmetic.
Both score the same zero-shot model (random tower, initial prompts) on the same synthetic images.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glocal_lib.bench.machine import command_line, machine_info, markdown_machine, median, peak_rss_mb, timed
from glocal_lib.metrics.summary import MEAN_ROW

MODULE = "glocal_lib.bench.bench_cold_eval"
VARIANTS = ("released", "engine", "engine-exact")


def _profile(args: argparse.Namespace, work: Path, tag: str) -> Any:
    from glocal_lib.engine import load_profile

    return load_profile("smoke", backbone=args.backbone, image_size=args.image_size, device="cpu",
                        results_root=str(work / f"results-{tag}"), cache_dir=str(work / f"cache-{tag}"),
                        data_root=str(work / "data"), torch_threads=args.threads, samples_per_category=1)


def _data(prof: Any, rows: int) -> Any:
    from glocal_lib.bench.bench_engine import head_rows
    from glocal_lib.engine import prepare_data

    return head_rows(prepare_data(prof, ["visa"])["visa"], rows)


def child(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """One variant, measured in this (fresh) process."""
    import scipy.ndimage  # noqa: F401  (imports outside the clock, for every variant alike)
    import torch

    import glocal_lib.data
    import glocal_lib.metrics
    import glocal_lib.model  # noqa: F401
    from glocal_lib.bench.bench_engine import picture_writer, released_style_eval
    from glocal_lib.engine import EvalSpec, load_run, run_eval
    from glocal_lib.engine.evaluate import eval_identity
    from glocal_lib.engine.modeling import build_detector

    work = Path(args.work)
    torch.set_num_threads(args.threads)
    prof = _profile(args, work, f"{variant}-{args.rep}")
    data = _data(prof, args.images)
    spec = EvalSpec("cold", "visa")
    picture_writer()  # cv2 import
    rss_before = peak_rss_mb()
    if variant == "released":
        prof = prof.replace(fused_attention=False)
        identity, cfg, ckpt, seed = eval_identity(spec, prof, data)
        pics = work / f"pictures-{args.rep}"
        pics.mkdir(parents=True, exist_ok=True)

        def go() -> pd.DataFrame:
            model = build_detector(cfg, prof, seed=seed, checkpoint=ckpt)
            return released_style_eval(model, data, identity["sigma"], pics)[1]

        metrics, wall, cpu = timed(go)
    else:
        if variant == "engine-exact":
            prof = prof.replace(fused_attention=False)
        run, wall, cpu = timed(lambda: run_eval(spec, prof, progress=False, data=data))
        m = load_run(run).metrics()
        metrics = m[m["category"] != MEAN_ROW][["category", "metric", "value"]]
    return {"variant": variant, "rep": args.rep, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak_rss_mb(),
            "rss_after_imports_mb": rss_before, "images": len(data.index),
            "metrics": metrics.to_dict(orient="records")}


def _run_child(variant: str, rep: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out = work / f"{variant}-{rep}.json"
    cmd = [sys.executable, "-m", MODULE, "--child", variant, "--rep", str(rep), "--work", str(work),
           "--backbone", args.backbone, "--image-size", str(args.image_size), "--images", str(args.images),
           "--threads", str(args.threads), "--child-out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run(cmd, check=True, env=env)
    return json.loads(out.read_text())


def _metric_diff(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> tuple[int, float]:
    m = pd.DataFrame(a).merge(pd.DataFrame(b), on=["category", "metric"], suffixes=("", "_ref"))
    return len(m), float((m["value"] - m["value_ref"]).abs().max())


def report(results: list[dict[str, Any]], variants: Sequence[str], args: argparse.Namespace,
           machine: dict[str, str], argv: Sequence[str] | None) -> str:
    by = {v: [r for r in results if r["variant"] == v] for v in variants}
    med = {v: {k: median([r[k] for r in rs]) for k in ("wall_s", "cpu_s", "peak_rss_mb")} for v, rs in by.items()}
    base = med["released"]
    n = results[0]["images"]
    lines = [f"# Cold-cache evaluation: engine vs the released-style loop ({args.backbone} @ {args.image_size} px)",
             "", "Command:", "", "```", command_line(MODULE, argv), "```", "", "## Machine", "",
             *markdown_machine(machine), f"- load average at end: {_load()}", "",
             f"{n} synthetic VisA stand-in images, zero-shot GlocalCLIP (released preset, random tower), "
             f"{args.repeats} repeat(s); every variant in a fresh subprocess, variants alternating within each "
             "repeat. Times from model build to metrics (the released side's imports happen before its "
             "clock starts, as the engine's). Peak memory = the subprocess's VmHWM (includes ~the same "
             "interpreter + torch baseline on every side, shown as 'after imports').", "",
             "| variant | wall s (median) | img/s | CPU s (median) | speed-up wall | speed-up CPU | "
             "peak RSS MB (median) | after imports MB | runs (wall s) | metric values compared | max abs diff vs released |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for v in variants:
        rs, m = by[v], med[v]
        count, diff = _metric_diff(rs[0]["metrics"], by["released"][0]["metrics"])
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in rs)
        lines.append(
            f"| {v} | {m['wall_s']:.1f} | {n / m['wall_s']:.2f} | {m['cpu_s']:.1f} | "
            f"**{base['wall_s'] / m['wall_s']:.2f}x** | {base['cpu_s'] / m['cpu_s']:.2f}x | {m['peak_rss_mb']:.0f} | "
            f"{median([r['rss_after_imports_mb'] for r in rs]):.0f} | {walls} | "
            f"{count} | {diff:.1e} |")
    lines += ["", "The machine is shared (see the load averages): the CPU-time column is the less noisy one."]
    return "\n".join(lines) + "\n"


def _load() -> str:
    from glocal_lib.bench.machine import load_average

    return load_average()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="glocal-tiny-24")
    p.add_argument("--image-size", type=int, default=518)
    p.add_argument("--images", type=int, default=16, help="evaluation images (one normal + one anomalous per category)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", default="released,engine", help=f"comma list of {VARIANTS}; 'released' always runs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary folder, removed)")
    p.add_argument("--out", default="results/benchmarks/cold_eval.md")
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--rep", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        from glocal_lib.io import atomic_write_text

        atomic_write_text(args.child_out, json.dumps(child(args.child, args)))
        return 0
    variants = ["released"] + [v for v in args.variants.split(",") if v.strip() and v.strip() != "released"]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {VARIANTS}")
    machine = machine_info()
    tmp = None if args.work else tempfile.mkdtemp(prefix="bench_cold_eval_")
    work = Path(args.work or tmp)
    try:
        _data(_profile(args, work, "setup"), args.images)  # generate the stand-in images once
        results = []
        for rep in range(args.repeats):
            for v in (variants if rep % 2 == 0 else variants[::-1]):
                print(f"[repeat {rep}] {v} ...", flush=True)
                results.append(_run_child(v, rep, args, work))
                print(f"[repeat {rep}] {v}: {results[-1]['wall_s']:.1f} s, peak {results[-1]['peak_rss_mb']:.0f} MB",
                      flush=True)
    finally:
        if tmp:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    text = report(results, variants, args, machine, argv)
    if args.out:
        from glocal_lib.io import atomic_write_text

        atomic_write_text(args.out, text)
    print(text)
    return 0 if np.isfinite(results[0]["wall_s"]) else 1


if __name__ == "__main__":
    sys.exit(main())
