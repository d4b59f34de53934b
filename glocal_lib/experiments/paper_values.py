"""The published numbers: the project's transcriptions of the papers' tables (paper/*.csv).

Where they are read from, in order: ``$GLOCAL_PAPER_DIR``; the project's shared transcription folder
next to the repository (``../shared/paper``); the copy shipped inside the package
(``glocal_lib/experiments/paper/``), so that a clean install needs nothing else. A test keeps the copy
identical to the shared folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from glocal_lib.errors import ConfigError
from glocal_lib.locate import find_file, first_dir

PACKAGED_DIR = Path(__file__).with_name("paper")
SIBLING_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "paper"
ENV_VAR = "GLOCAL_PAPER_DIR"
KEY_COLUMNS = ("table", "domain", "dataset", "category", "method", "level", "metric")
# the key of one dataset-level published value (what a comparison table looks up, many times per drawing)
VALUE_KEY = ("table", "domain", "dataset", "method", "level", "metric")


def paper_dir() -> Path:
    """The folder the published values come from (see module docstring for the order)."""
    return first_dir(ENV_VAR, (SIBLING_DIR, PACKAGED_DIR), holding="*.csv", what="published-value CSVs")


def paper_file(name: str) -> Path:
    """Path of one transcription CSV; the packaged copy backs up a folder that lacks it."""
    found, searched = find_file(name, (paper_dir(), PACKAGED_DIR))
    if found is None:
        raise ConfigError(f"published-values file {name} not found (looked at: {', '.join(map(str, searched))}); "
                          f"set {ENV_VAR} to the folder holding the paper CSVs")
    return found


@lru_cache(maxsize=32)
def _read(path: str, mtime: float) -> pd.DataFrame:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "value" in df.columns:
        df["value_text"] = df["value"]
        df["value"] = pd.to_numeric(df["value"].replace("", np.nan), errors="coerce")
    if "category" in df.columns:
        df["category_key"] = df["category"].map(category_key)
    return df


def load_paper_table(name: str) -> pd.DataFrame:
    """One transcription CSV; `value` as float (NaN where the paper printed "-"), text kept in value_text."""
    path = paper_file(name)
    return _read(str(path), path.stat().st_mtime).copy()


@lru_cache(maxsize=32)
def _value_index(path: str, mtime: float) -> Mapping[tuple[str, ...], tuple[float, ...]]:
    """Every value of one CSV by its VALUE_KEY (several where the key is ambiguous), read-only."""
    df = _read(path, mtime)
    groups: dict[tuple[str, ...], list[float]] = {}
    for key, value in zip(df[list(VALUE_KEY)].itertuples(index=False, name=None), df["value"], strict=True):
        groups.setdefault(key, []).append(float(value))
    return MappingProxyType({k: tuple(v) for k, v in groups.items()})


def published_value(name: str, **key: str | None) -> float:
    """``lookup(load_paper_table(name), **key)`` without copying the table per call: a full VALUE_KEY is
    read from a per-file index; any other filter set (or a None filter, which matches anything) is
    handed to ``lookup``."""
    if set(key) != set(VALUE_KEY) or any(v is None for v in key.values()):
        return lookup(load_paper_table(name), **key)
    path = paper_file(name)
    hits = _value_index(str(path), path.stat().st_mtime).get(tuple(key[c] for c in VALUE_KEY), ())
    if len(hits) > 1:
        raise ConfigError(_ambiguous(key, len(hits)))
    return hits[0] if hits else float("nan")


def _ambiguous(filters: dict[str, str | None], n: int) -> str:
    return f"published values are ambiguous for {filters}: {n} rows"


def category_key(printed: str) -> str:
    """Printed category name -> the datasets.csv key ('Metal nut' -> 'metal_nut'), per the paper README."""
    return printed.strip().lower().replace(" ", "_") if printed else ""


def lookup(df: pd.DataFrame, **filters: str) -> float:
    """The single published value matching the filters, NaN when the paper has none."""
    mask = np.ones(len(df), dtype=bool)
    for col, val in filters.items():
        if val is None:
            continue
        mask &= (df[col] == val).to_numpy()
    hits = df[mask]
    if len(hits) > 1:
        raise ConfigError(_ambiguous(filters, len(hits)))
    return float(hits["value"].iloc[0]) if len(hits) else float("nan")
