"""Shared set-up for the engine tests: the smoke profile pointed at one per-session folder.

Stand-ins and feature caches are generated once per test session (prepare_data and the feature
cache are idempotent), so the engine test modules share them instead of rebuilding.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glocal_lib.engine import DataInfo, Profile, load_profile, prepare_data, select_categories

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
