"""Datasets a run needs, ready to use: generated stand-ins (smoke) or validated real folders (paper).

The engine only ever sees a `DataInfo`: the root, the test-split index, the evaluation level and a
hash of the index rows *and of every listed file's bytes* (part of every cache key and run id, so a
dataset re-extracted or fixed under the same file names is never mistaken for the old one). File
digests are memoised per path, size and mtime in a small JSON file, so only new or touched files are
read again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from glocal_lib.engine.locks import clear_write_errors, exclusive
from glocal_lib.engine.profiles import Profile
from glocal_lib.errors import DataError
from glocal_lib.io import atomic_write_json, sha256_file, stable_hash

EVAL_LEVELS = ("image", "pixel", "image-pixel")
INDEX_COLUMNS = ("image_path", "mask_path", "category", "label", "defect_type", "split")


@dataclass(frozen=True)
class DataInfo:
    """One dataset as the engine uses it (test split only: the protocol trains on test splits too)."""

    key: str
    root: Path
    index: pd.DataFrame
    eval_level: str
    index_hash: str
    digests: dict[str, str] = field(default_factory=dict, repr=False, compare=False)  # rel path -> sha256

    def files_hash(self) -> str:
        """Hash of every image/mask file's size and mtime: a replaced or regenerated file with the same
        name gives a new feature cache (the run identity keeps to index_hash so that copying a dataset
        to another machine does not make finished runs look new)."""
        stats = []
        for col in ("image_path", "mask_path"):
            for rel in self.index[col].astype(str):
                if rel:
                    st = (self.root / rel).stat()
                    stats.append((rel, st.st_size, st.st_mtime_ns))
        return stable_hash(stats, 16)

    @property
    def categories(self) -> list[str]:
        return list(dict.fromkeys(self.index["category"]))

    @property
    def has_image_metrics(self) -> bool:
        return "image" in self.eval_level.split("-")

    @property
    def has_pixel_metrics(self) -> bool:
        return "pixel" in self.eval_level.split("-")


def index_hash(index: pd.DataFrame, digests: dict[str, str] | None = None) -> str:
    """Hash of the index rows (paths, categories, labels) and, given `digests`, of the bytes of each
    row's image and mask: the identity of a dataset's content (machine-independent, unlike mtimes)."""
    cols = [c for c in INDEX_COLUMNS if c in index.columns]
    records = index[cols].astype(str).values.tolist()
    if digests:
        files = [[digests.get(str(rel), "") for rel in index[col].astype(str)] for col in ("image_path", "mask_path")]
        records = [[*r, img, msk] for r, img, msk in zip(records, *files)]
    return stable_hash(records, 16)


def file_digests(root: Path, index: pd.DataFrame, memo_dir: Path | None = None) -> dict[str, str]:
    """sha256 of every image and mask the index lists, memoised per (path, size, mtime_ns).

    The memo lives in `memo_dir` (the profile's cache folder), one JSON file per dataset root; a
    file whose size or mtime changed is read again. Unreadable memo files are ignored (rebuilt).
    """
    rels = [r for col in ("image_path", "mask_path") for r in index[col].astype(str) if r]
    memo_file = memo_dir / "file_sha256" / f"{stable_hash(str(Path(root).resolve()), 16)}.json" if memo_dir else None
    memo: dict[str, list[Any]] = {}
    if memo_file is not None and memo_file.is_file():
        with contextlib.suppress(ValueError, OSError):
            memo = json.loads(memo_file.read_text())
    out: dict[str, str] = {}
    changed = False
    for rel in dict.fromkeys(rels):
        path = Path(root) / rel
        try:
            st = os.stat(path)
        except OSError as exc:
            raise DataError(f"dataset file {path} listed by the index cannot be read ({exc.strerror}); "
                            f"check the folder (glocal data check) and rerun") from None
        old = memo.get(rel)
        if old is not None and old[0] == st.st_size and old[1] == st.st_mtime_ns:
            out[rel] = str(old[2])
            continue
        out[rel] = sha256_file(path)
        memo[rel] = [st.st_size, st.st_mtime_ns, out[rel]]
        changed = True
    if changed and memo_file is not None:
        with contextlib.suppress(OSError):  # the memo only saves time: a read-only cache is fine
            atomic_write_json(memo_file, memo)
    return out


def _manifest_eval_level(key: str) -> str | None:
    """The evaluation level the dataset's manifest declares (``both`` -> ``image-pixel``), or None for
    a key without a manifest (an index made by hand), whose level the index decides."""
    from glocal_lib.data.registry import DATASETS

    if key not in DATASETS:
        return None
    level = DATASETS[key].eval_level
    return "image-pixel" if level == "both" else level


def infer_eval_level(index: pd.DataFrame) -> str:
    """Level the data supports: image metrics need both labels, pixel metrics need masks."""
    has_masks = bool((index["mask_path"].astype(str) != "").any())
    both_labels = index["label"].nunique() == 2
    if has_masks and both_labels:
        return "image-pixel"
    if has_masks:
        return "pixel"
    return "image"


def eval_level(key: str, index: pd.DataFrame) -> str:
    return _manifest_eval_level(key) or infer_eval_level(index)


def _standin_params(key: str, profile: Profile) -> dict[str, Any]:
    return {"key": key, "seed": profile.synthetic_seed, "scale": profile.synthetic_scale,
            "image_size": profile.synthetic_image_size}


def _generate_standin(key: str, root: Path, profile: Profile) -> None:
    """Write a synthetic stand-in once; a marker file records the parameters it was made with."""
    from glocal_lib.data.synthetic import make_standin

    params = _standin_params(key, profile)
    marker = root / ".standin.json"
    with exclusive(root.parent / f".{key}.lock", f"stand-in {root}"), clear_write_errors(root.parent):
        if marker.is_file():
            with contextlib.suppress(ValueError):
                if json.loads(marker.read_text()) == params:
                    return
            shutil.rmtree(root)  # a stand-in made with other parameters: it is ours to replace
        elif root.exists() and any(root.iterdir()):
            raise DataError(
                f"{root} exists but is not a generated stand-in (no .standin.json); the smoke profile "
                f"generates its data there: point data_root elsewhere or remove the folder"
            )
        tmp = root.parent / f".{key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        info = make_standin(key, tmp, seed=profile.synthetic_seed, image_size=profile.synthetic_image_size,
                            scale=profile.synthetic_scale)
        if isinstance(info, pd.DataFrame):
            info.to_csv(tmp / ".standin_counts.csv", index=False)
        atomic_write_json(tmp / ".standin.json", params)
        if root.exists():
            root.rmdir()  # empty (checked above)
        tmp.rename(root)


def load_data(key: str, root: Path, memo_dir: Path | None = None) -> DataInfo:
    """Index a dataset folder (native layout) and describe it for the engine (memo_dir: file digests)."""
    from glocal_lib.data import build_index

    if not Path(root).exists():
        raise DataError(
            f"dataset {key!r}: folder {root} does not exist; set GLOCAL_DATA_ROOT (or GLOCAL_DATA_ROOT_{key.upper()}, "
            f"or --data-root) to the folder holding the unpacked dataset"
        )
    index = build_index(key, root)
    if "split" in index.columns:
        index = index[index["split"] == "test"]
    index = index.reset_index(drop=True)
    if index.empty:
        raise DataError(f"dataset {key!r} at {root}: no test images found; check the layout (glocal data check)")
    index["label"] = index["label"].astype(int)
    index["mask_path"] = index["mask_path"].fillna("").astype(str)
    digests = file_digests(Path(root), index, memo_dir)
    return DataInfo(key=key, root=Path(root), index=index, eval_level=eval_level(key, index),
                    index_hash=index_hash(index, digests), digests=digests)


def prepare_data(profile: Profile, datasets: list[str] | tuple[str, ...] | str) -> dict[str, DataInfo]:
    """Make the named datasets usable: smoke generates stand-ins, paper checks the real folders."""
    keys = [datasets] if isinstance(datasets, str) else list(datasets)
    out: dict[str, DataInfo] = {}
    for key in dict.fromkeys(keys):
        root = profile.dataset_root(key)
        if profile.synthetic:
            from glocal_lib.data.synthetic import standin_root

            _generate_standin(key, root, profile)
            root = standin_root(key, root)
        else:
            with contextlib.suppress(ImportError):
                from glocal_lib.data import validate_dataset

                validate_dataset(key, root)
        out[key] = load_data(key, root, memo_dir=profile.cache_dir)
    return out


def existing_data(profile: Profile, key: str) -> DataInfo | None:
    """The dataset as prepare_data would give it, if it is already there (nothing generated or
    validated): what drawing a table needs to find the runs of datasets this invocation did not prepare."""
    root = profile.dataset_root(key)
    if profile.synthetic:
        from glocal_lib.data.synthetic import standin_root

        try:
            if json.loads((root / ".standin.json").read_text()) != _standin_params(key, profile):
                return None
        except (OSError, ValueError):
            return None
        root = standin_root(key, root)
    elif not Path(root).is_dir():
        return None
    try:
        return load_data(key, root, memo_dir=profile.cache_dir)
    except DataError:
        return None


def select_categories(data: DataInfo, categories: list[str] | tuple[str, ...]) -> DataInfo:
    """The same dataset restricted to some categories (quick runs, tests); its own index hash."""
    unknown = sorted(set(categories) - set(data.categories))
    if unknown:
        raise DataError(f"categories {unknown} are not in dataset {data.key!r} ({data.root}); it has {data.categories}")
    index = data.index[data.index["category"].isin(list(categories))].reset_index(drop=True)
    return DataInfo(key=data.key, root=data.root, index=index, eval_level=data.eval_level,
                    index_hash=index_hash(index, data.digests), digests=data.digests)
