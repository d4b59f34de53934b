"""Process-wide speed settings that do not change any number: allocator tuning, thread count,
batch size per image size; and the opt-ins that do (TF32), applied only when a profile asks.

Why the allocator: at 518 px every attention materialises (heads, 1370, 1370) score tensors of
~15 MB per image; glibc serves blocks above M_MMAP_THRESHOLD with fresh mmap()s and returns them
on free(), so every attention of every block pays ~4k page faults (measured: ~20-40% system time
on a 2-core CPU at batch 1-8). Raising the mmap and trim thresholds keeps freed blocks in the heap
for the next block to reuse. Peak memory stays the live set (checked by bench_engine's VmHWM).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap (glibc 2.36 accepts it)
TRIM_THRESHOLD_BYTES = 1 << 30
# Query-key pairs per CPU vision forward: above ~2M pairs the score tensors fall out of the caches
# and batching only adds memory (measured at 518 px, 1370 tokens: batch 1 is fastest).
CPU_ATTENTION_PAIRS = 1 << 21
# Map pixels per CPU prediction batch: per image ~10 float32 maps of S x S live at once (layers,
# probabilities, blur), so 2^20 pixels keep a batch's temporaries near 40 MB (518 px: 3 images).
CPU_MAP_PIXELS = 1 << 20
_TUNED = {"allocator": False}


def tune_allocator() -> bool:
    """Raise glibc's mmap/trim thresholds once per process; False where there is no glibc (macOS,
    musl) or mallopt refuses. Set GLOCAL_NO_MALLOPT=1 to skip."""
    import os

    if _TUNED["allocator"] or os.environ.get("GLOCAL_NO_MALLOPT") or not sys.platform.startswith("linux"):
        return _TUNED["allocator"]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                                TRIM_THRESHOLD_BYTES))
    _TUNED["allocator"] = ok
    return ok


def apply_runtime(profile: Any) -> None:
    """Threads, allocator and (opt-in) TF32 for the process running `profile`'s runs."""
    import torch

    threads = getattr(profile, "torch_threads", None)
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if str(getattr(profile, "device", "cpu")).startswith("cpu"):
        tune_allocator()
    set_tf32(bool(getattr(profile, "allow_tf32", False)))


def set_tf32(enabled: bool) -> None:
    """TF32 for fp32 matmuls and cuDNN convolutions (Ampere and later); off = torch's fp32 default
    for matmuls. Set explicitly both ways so one run's opt-in does not leak into the next."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def auto_encode_batch(device: str, image_size: int, fallback: int, patch: int = 14) -> int:
    """Vision batch size when a profile does not set one: on a CPU as many images as keep one
    attention's query-key pairs under CPU_ATTENTION_PAIRS (112 px: 32, 224 px: 31, 336 px: 6,
    518 px: 1), capped by `fallback`; on a GPU `fallback` (larger batches fill the device)."""
    if not str(device).startswith("cpu"):
        return max(1, int(fallback))
    tokens = (int(image_size) // patch) ** 2 + 1
    return max(1, min(int(fallback), 32, CPU_ATTENTION_PAIRS // (tokens * tokens)))


def auto_predict_batch(device: str, image_size: int, batch_size: int) -> int:
    """Prediction batch: `batch_size` on a GPU; on a CPU at most CPU_MAP_PIXELS // S^2 images
    (112 px: 83, 518 px: 3), which costs no speed there (the maps are per-pixel work)."""
    if not str(device).startswith("cpu"):
        return max(1, int(batch_size))
    return max(1, min(int(batch_size), CPU_MAP_PIXELS // (int(image_size) ** 2)))
