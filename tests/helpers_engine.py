"""Shared set-up for the engine tests: the smoke profile pointed at one per-session folder.

Stand-ins and feature caches are generated once per test session (prepare_data and the feature
cache are idempotent), so the engine test modules share them instead of rebuilding.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from glocal_lib.engine import DataInfo, Profile, load_profile, load_run, prepare_data, select_categories

# the smoke profile runs torch single-threaded (2 threads on a busy 2-core machine are ~30x slower);
# tests that call the model outside run_train/run_eval do the same
torch.set_num_threads(1)

# short prompts: the text tower dominates a training step on the tiny backbone
SMALL = {"normal_length": 3, "anomaly_length": 2, "deep_depth": 3, "deep_length": 2}


def shared_root(factory: pytest.TempPathFactory) -> Path:
    root = factory.getbasetemp() / "engine-shared"
    root.mkdir(parents=True, exist_ok=True)
    return root


def profile_at(base: Path, results: str = "results", **over: object) -> Profile:
    """Smoke profile with data and feature cache shared under `base` and results in base/results."""
    return load_profile("smoke", data_root=str(base / "data"), cache_dir=str(base / "cache"),
                        results_root=str(base / results), **over)


def small_data(profile: Profile, key: str, categories: list[str] | None = None) -> DataInfo:
    data = prepare_data(profile, [key])[key]
    return select_categories(data, categories) if categories else data


def kill_after_first_epoch(run_dir: Path, base: Path, results: str, epochs: int, train_call: str,
                           timeout: float) -> None:
    """Train in a subprocess (profile `results` under `base`, `epochs` epochs) and SIGKILL it as soon as
    its first epoch checkpoint exists; the run is left unfinished. The set-up of the kill -9 resume tests.

    `train_call`: Python source of the run_train call, with `p` the profile (TrainSpec, run_train,
    small_data and SMALL are imported).
    """
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]);"
        "from helpers_engine import profile_at, small_data, SMALL;"
        "from pathlib import Path; from glocal_lib.engine import TrainSpec, run_train;"
        f"p = profile_at(Path(sys.argv[3]), {results!r}, epochs={epochs});"
        + train_call
    )
    tests = Path(__file__).resolve().parent
    proc = subprocess.Popen([sys.executable, "-c", code, str(tests.parent), str(tests), str(base)],
                            env={**os.environ, "PYTHONPATH": str(tests.parent)})
    deadline = time.time() + timeout
    while not (run_dir / "checkpoints" / "epoch_01.pt").is_file():
        assert proc.poll() is None, "training subprocess ended early"
        assert time.time() < deadline, "no epoch finished in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not load_run(run_dir).done
