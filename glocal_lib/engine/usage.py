"""What a run costs besides its wall time: peak memory and the hardware it ran on.

Written into every run's ``timing.json`` (informative only: never part of a run's identity), so that
an efficiency table (ViP2-CLIP's Table 3: training time, inference ms/image, GPU memory) is drawn from
saved run records like every other table. On a GPU the peak is ``torch.cuda.max_memory_allocated``
(the tensors the run allocated, as papers usually report it); on a CPU there is no per-run allocator
counter, so it is the process's peak resident set (VmHWM), reset at the start of the run through
``/proc/self/clear_refs`` where Linux allows it (else the peak since the process started, said so).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from glocal_lib.bench.machine import cpu_model

CUDA_KIND = "cuda max_memory_allocated"
RSS_KIND = "cpu peak RSS of the process during the run (VmHWM, reset at its start)"
RSS_UNRESET_KIND = "cpu peak RSS of the process since it started (VmHWM could not be reset)"


def _vm_hwm_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_vm_hwm() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def hardware(device: str) -> str:
    """'NVIDIA H200 (cuda)' or 'Intel Xeon ... CPU, 2 cores, 1 torch thread': what a timing was made on."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))} ({device})"
    threads = torch.get_num_threads()
    return f"{cpu_model()} CPU, {os.cpu_count()} cores, {threads} torch thread{'s' if threads != 1 else ''}"


class PeakMemory:
    """Peak memory of one run: ``start()`` resets the counter, ``record()`` reads it back as the fields
    ``peak_memory_bytes``, ``peak_memory_kind`` and ``hardware`` of timing.json, with ``cpu_s``, the
    process's CPU seconds (user + system, all threads) since ``start()`` (what a smoke budget counts)."""

    def __init__(self, device: str) -> None:
        self.device = str(device)
        self.cuda = self.device.startswith("cuda") and torch.cuda.is_available()
        self.reset = False
        self.cpu0 = time.process_time()

    def start(self) -> PeakMemory:
        self.cpu0 = time.process_time()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.reset = True
        else:
            self.reset = _reset_vm_hwm()
        return self

    def record(self) -> dict[str, Any]:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak: int | None = int(torch.cuda.max_memory_allocated(self.device))
            kind = CUDA_KIND
        else:
            peak = _vm_hwm_bytes()
            kind = RSS_KIND if self.reset else RSS_UNRESET_KIND
        return {"peak_memory_bytes": peak, "peak_memory_kind": kind, "hardware": hardware(self.device),
                "cpu_s": round(time.process_time() - self.cpu0, 4)}


def synchronize(device: str) -> None:
    """Wait for the device's queued work (GPU timings are otherwise the launch time only)."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize(torch.device(device))
