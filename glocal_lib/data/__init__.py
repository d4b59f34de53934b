"""Datasets: manifests (facts as data), native-layout converters, validation and the torch Dataset.

Public API (see .plan/contract.md): ``load_manifest``, ``DATASETS``, ``build_index``,
``write_index``, ``read_index``, ``validate_dataset``, ``AnomalyDataset``, ``read_meta_json``,
``write_meta_json``. The stand-in generator lives in ``glocal_lib.data.synthetic`` (imported on
demand, it is not needed to load real data).
"""

from typing import Any

from glocal_lib.data.index import build_index, default_index_path, read_index, write_index
from glocal_lib.data.issues import Issue
from glocal_lib.data.metajson import read_meta_json, to_meta_dict, write_meta_json
from glocal_lib.data.registry import (
    DATASET_KEYS,
    DATASETS,
    Manifest,
    load_manifest,
    manifest_table,
    resolve_key,
)
from glocal_lib.data.validate import ValidationReport, validate_dataset

__all__ = [
    "AnomalyDataset", "DATASETS", "DATASET_KEYS", "Issue", "Manifest", "ValidationReport", "build_index",
    "default_index_path", "load_manifest", "manifest_table", "read_index", "read_meta_json", "resolve_key", "to_meta_dict",
    "validate_dataset", "write_index", "write_meta_json",
]


def __getattr__(name: str) -> Any:
    """Import the torch Dataset lazily: indexing and checking data must not pay torch's import time."""
    if name == "AnomalyDataset":
        from glocal_lib.data.dataset import AnomalyDataset

        return AnomalyDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
