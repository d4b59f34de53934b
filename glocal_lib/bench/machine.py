"""What every benchmark record names: the machine, the software, the load, the command."""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def machine_info(device: str = "cpu") -> dict[str, str]:
    """CPU model, cores (all and usable), torch version and threads, GPU name, load average."""
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": f"{os.cpu_count()} ({usable} usable)",
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load average (1/5/15 min) at start": load_average(),
    }
    if torch.cuda.is_available():
        info["gpu"] = f"{torch.cuda.get_device_name(0)} (cuda {torch.version.cuda}; used: {device.startswith('cuda')})"
    else:
        info["gpu"] = "none: no GPU was available to this run"
    return info


def command_line(module: str, argv: Sequence[str] | None) -> str:
    return f"python -m {module} " + shlex.join(list(sys.argv[1:] if argv is None else argv))


def markdown_machine(info: dict[str, str]) -> list[str]:
    return [f"- {k}: {v}" for k, v in info.items()]


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM, Linux) in MB; NaN elsewhere. Unlike tracemalloc it
    sees torch's C++ allocations too; it is per process, so compare variants in fresh subprocesses."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, this process's CPU seconds) of one call."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))
