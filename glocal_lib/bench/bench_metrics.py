"""Benchmark: our metrics vs scikit-learn and vs straightforward loops, same inputs, side by side.

    python -m glocal_lib.bench.bench_metrics [--n 100 --size 256] [--out results/benchmarks/metrics.md]

Inputs are synthetic and deterministic (``--seed``): ellipse masks (1-4 per anomalous image, some
images normal) and noisy smoothed maps correlated with them. Prints a Markdown table (time, value,
absolute difference, speed-up) and, with --out, records it with the command line and machine info.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

from glocal_lib.bench.machine import command_line, machine_info, markdown_machine, median, timed
from glocal_lib.bench.reference_metrics import (
    aupro_cflow_reference,
    aupro_mvtec_bruteforce,
    aupro_mvtec_global_sort,
)
from glocal_lib.io import atomic_write_text
from glocal_lib.metrics import aupro, image_metrics, pixel_metrics
from glocal_lib.metrics.classification import ranked


def synthetic_maps(
    n: int, size: int, seed: int = 0, normal_fraction: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(maps float32 (n,S,S), masks bool, image scores (n,), image labels (n,)), deterministic."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        if rng.random() < normal_fraction:
            continue
        for _ in range(int(rng.integers(1, 5))):
            cy, cx = rng.uniform(0, size, 2)
            ay, ax = rng.uniform(0.02, 0.12, 2) * size
            ang = rng.uniform(0, np.pi)
            dy, dx = yy - cy, xx - cx
            u = dx * np.cos(ang) + dy * np.sin(ang)
            v = -dx * np.sin(ang) + dy * np.cos(ang)
            masks[i] |= (u / ax) ** 2 + (v / ay) ** 2 <= 1
    noise = ndimage.gaussian_filter(rng.normal(size=masks.shape), sigma=(0, 2, 2))
    signal = ndimage.gaussian_filter(masks.astype(np.float64), sigma=(0, 3, 3))
    strength = rng.uniform(0.05, 0.6, size=(n, 1, 1))
    maps = (0.5 + 0.15 * noise + strength * signal).astype(np.float32)
    labels = masks.reshape(n, -1).any(axis=1)
    scores = maps.reshape(n, -1).max(axis=1) + rng.normal(0, 0.1, n)
    return maps, masks, scores, labels


def _timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float]:
    """(value, median wall time of `repeat` calls)."""
    times, value = [], None
    for _ in range(repeat):
        value, wall, _ = timed(fn)
        times.append(wall)
    return value, median(times)


def _sk_f1max(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import precision_recall_curve

    p, r, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * p * r / (p + r)
    return float(np.max(f1[np.isfinite(f1)]))


def machine_lines() -> str:
    import scipy
    import skimage
    import sklearn

    return "\n".join(markdown_machine(machine_info())) + (
        f"\n- numpy {np.__version__}, scipy {scipy.__version__}, scikit-learn {sklearn.__version__}, "
        f"scikit-image {skimage.__version__}"
    )


def run(n: int, size: int, seed: int, repeat: int, quantise: int, skip_reference: bool) -> str:
    from sklearn.metrics import average_precision_score, roc_auc_score

    maps, masks, scores, labels = synthetic_maps(n, size, seed)
    flat_m, flat_g = maps.ravel(), masks.ravel()
    rows: list[tuple[str, float, str, float | None, float, float | None]] = []

    def add(name: str, ours: Callable[[], float], ref_name: str, ref: Callable[[], float] | None, rep=repeat):
        v, t = _timed(ours, rep)
        rv, rt = _timed(ref, rep) if ref is not None else (None, None)
        rows.append((name, t, ref_name, rt, v, rv))

    add(
        "image AUROC",
        lambda: image_metrics(scores, labels)["image_auroc"],
        "sklearn roc_auc_score",
        lambda: roc_auc_score(labels, scores),
    )
    add(
        "image AP",
        lambda: image_metrics(scores, labels)["image_ap"],
        "sklearn average_precision_score",
        lambda: average_precision_score(labels, scores),
    )
    add(
        "image F1-max",
        lambda: image_metrics(scores, labels)["image_f1max"],
        "sklearn precision_recall_curve (released formula)",
        lambda: _sk_f1max(labels, scores),
    )
    add(
        "pixel AUROC",
        lambda: ranked(flat_m, flat_g).auroc(),
        "sklearn roc_auc_score (flattened)",
        lambda: roc_auc_score(flat_g, flat_m),
    )
    add(
        "pixel AP",
        lambda: ranked(flat_m, flat_g).average_precision(),
        "sklearn average_precision_score (flattened)",
        lambda: average_precision_score(flat_g, flat_m),
    )
    add(
        "pixel F1-max",
        lambda: ranked(flat_m, flat_g).f1_max(),
        "sklearn precision_recall_curve (flattened)",
        lambda: _sk_f1max(flat_g, flat_m),
    )
    add(
        "AUPRO cflow",
        lambda: aupro(maps, masks, "cflow"),
        "released-style loop (200 thresholds x images x regions, skimage label/regionprops)",
        None if skip_reference else (lambda: aupro_cflow_reference(maps, masks)),
    )
    aupro(maps[:2], masks[:2], "cflow", device="cpu")  # warm-up: torch import and kernels
    add(
        "AUPRO cflow (torch cpu)",
        lambda: aupro(maps, masks, "cflow", device="cpu"),
        "torch backend on CPU (bucketize/bincount; device='cuda' on a GPU), vs the loop's value",
        None,
    )
    add(
        "AUPRO mvtec",
        lambda: aupro(maps, masks, "mvtec"),
        "MVTec AD algorithm structure (argsort of all pixels, cumulative increments)",
        lambda: aupro_mvtec_global_sort(maps, masks),
    )
    qmaps = (np.round(maps * quantise) / quantise).astype(np.float32)
    add(
        f"AUPRO mvtec, maps rounded to 1/{quantise}",
        lambda: aupro(qmaps, masks, "mvtec"),
        "brute force: map >= t at every distinct score t, direct masks",
        lambda: aupro_mvtec_bruteforce(qmaps, masks),
    )
    add("pixel_metrics() (all 5 pixel metrics)", lambda: pixel_metrics(maps, masks), "", None)

    # fill in the torch row's reference value from the cflow row
    rows = [
        (r[0], r[1], r[2], r[3], r[4], rows[6][5]) if r[0] == "AUPRO cflow (torch cpu)" else r for r in rows
    ]
    n_regions = sum(int(ndimage.label(m, structure=np.ones((3, 3)))[1]) for m in masks)
    head = (
        f"Inputs: {n} maps of {size}x{size} (seed {seed}), {int(labels.sum())} anomalous images, "
        f"{n_regions} regions, {int(masks.sum())} anomalous of {masks.size} pixels. "
        f"Times: median of {repeat} calls, ours and the reference alike, one process, one after the other; "
        "the released-style AUPRO loop runs all 200 thresholds (no extrapolation).\n\n"
        "| metric | ours (s) | reference | reference (s) | speed-up | ours | reference value | abs diff |\n"
        "|---|---:|---|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for name, t, ref_name, rt, v, rv in rows:
        if isinstance(v, dict):
            vs = ", ".join(f"{k}={x:.6f}" for k, x in v.items())
            lines.append(f"| {name} | {t:.3f} | | | | {vs} | | |")
            continue
        speed = f"{rt / t:.0f}x" if rt is not None else ""
        rts = f"{rt:.3f}" if rt is not None else ""
        rvs = f"{rv:.12f}" if rv is not None else ""
        diff = f"{abs(v - rv):.1e}" if rv is not None else ""
        lines.append(f"| {name} | {t:.4f} | {ref_name} | {rts} | {speed} | {v:.12f} | {rvs} | {diff} |")
    return head + "\n".join(lines) + "\n"


def large_run(n: int, size: int, seed: int) -> str:
    """Time and peak extra memory (tracemalloc) at a VisA-category scale, ours only."""
    import tracemalloc

    maps, masks, _, _ = synthetic_maps(n, size, seed)
    lines = [
        f"\nScale check: {n} maps of {size}x{size} ({maps.nbytes / 1e6:.0f} MB of float32 maps), ours only, "
        "one run each; peak = extra memory allocated during the call (tracemalloc).\n",
        "| call | time (s) | peak extra memory (MB) | value |",
        "|---|---:|---:|---|",
    ]
    calls = {
        "aupro(method='cflow')": lambda: aupro(maps, masks, "cflow"),
        "aupro(method='mvtec')": lambda: aupro(maps, masks, "mvtec"),
        "pixel_metrics()": lambda: pixel_metrics(maps, masks),
    }
    tracemalloc.start()
    for name, fn in calls.items():
        tracemalloc.reset_peak()
        value, t = _timed(fn)
        peak = tracemalloc.get_traced_memory()[1]
        shown = (
            ", ".join(f"{k}={v:.6f}" for k, v in value.items())
            if isinstance(value, dict)
            else f"{value:.12f}"
        )
        lines.append(f"| {name} | {t:.2f} | {peak / 1e6:.0f} | {shown} |")
    tracemalloc.stop()
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="number of maps")
    ap.add_argument("--size", type=int, default=256, help="map side in pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="calls per function, ours and reference (median)")
    ap.add_argument("--quantise", type=int, default=256, help="levels per unit for the brute-force row")
    ap.add_argument("--large-n", type=int, default=0, help="also time ours on this many maps (0: skip)")
    ap.add_argument("--large-size", type=int, default=518, help="map side for the --large-n check")
    ap.add_argument("--skip-reference", action="store_true", help="skip the slow released-style loop")
    ap.add_argument(
        "--out", default=None, help="write the Markdown report here (e.g. results/benchmarks/metrics.md)"
    )
    args = ap.parse_args(argv)
    table = run(args.n, args.size, args.seed, args.repeat, args.quantise, args.skip_reference)
    if args.large_n:
        table += large_run(args.large_n, args.large_size, args.seed)
    cmd = command_line("glocal_lib.bench.bench_metrics", argv)
    report = f"# Metrics benchmark\n\nCommand: `{cmd.strip()}`\n\n{machine_lines()}\n\n{table}"
    print(report)
    if args.out:
        atomic_write_text(args.out, report)


if __name__ == "__main__":
    main()
