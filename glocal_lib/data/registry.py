"""Dataset manifests: the facts about each dataset, stored as data (YAML), not code.

Where manifests are found (first hit wins):

1. ``$GLOCAL_MANIFESTS`` (a folder of ``<key>.yaml``), for users who keep edited copies;
2. the repository's top-level ``data_manifests/`` when running from a checkout or an editable
   install (the canonical copy, the one to edit);
3. the packaged copy ``glocal_lib/data/manifests/`` that ships inside the wheel (package data).

The packaged copy is regenerated from the canonical one with
``python -m glocal_lib.data.sync_manifests``; a test fails when the two differ, so a wheel never
ships stale facts.

The manifests are the only place dataset facts live: the dataset keys are the manifest files found,
and names, domains, categories, counts and layouts are read from them by everything else (the
experiment registry, the stand-in generator, the converters). Adding a dataset is adding a manifest.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from glocal_lib.errors import DataError
from glocal_lib.io import read_yaml
from glocal_lib.locate import first_dir

ENV_VAR = "GLOCAL_MANIFESTS"
PACKAGED_DIR = Path(__file__).resolve().parent / "manifests"
REPO_DIR = Path(__file__).resolve().parents[2] / "data_manifests"
EVAL_LEVELS = ("image", "pixel", "both")
DOMAINS = ("industrial", "medical")


def manifest_dir() -> Path:
    """The folder manifests are read from (see the module docstring for the order)."""
    return first_dir(ENV_VAR, (REPO_DIR, PACKAGED_DIR), holding="*.yaml", what="dataset manifests", error=DataError)


@dataclass(frozen=True)
class Manifest:
    """One dataset's manifest; ``data`` is the YAML as loaded, properties give the parts code uses."""

    key: str
    path: Path
    data: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return str(self.data.get("name", self.key))

    @property
    def short_name(self) -> str:
        """The name as the papers' tables print it (table rows, published-value lookups)."""
        return str(self.data["short_name"])

    @property
    def domain(self) -> str:
        return str(self.data["domain"])

    @property
    def released_key(self) -> str:
        return str(self.data["released_key"])

    @property
    def eval_level(self) -> str:
        return str(self.data["eval_level"])

    @property
    def has_masks(self) -> bool:
        return bool(self.data["masks"]["present"])

    @property
    def pixel_level(self) -> bool:
        return self.eval_level in ("pixel", "both")

    @property
    def layout(self) -> dict[str, Any]:
        return dict(self.data["layout"])

    @property
    def converter(self) -> str:
        return str(self.data["layout"]["converter"])

    @property
    def categories(self) -> list[str]:
        return [str(c["name"]) for c in self.data["categories"]]

    @property
    def urls(self) -> list[str]:
        return list(self.data.get("source", {}).get("urls", []))

    def expected_counts(self) -> pd.DataFrame:
        """Per-category test counts (``<NA>`` where the manifest does not know them)."""
        rows = [(str(c["name"]), c.get("test_normal"), c.get("test_anomalous")) for c in self.data["categories"]]
        df = pd.DataFrame(rows, columns=["category", "test_normal", "test_anomalous"])
        return df.astype({"test_normal": "Int64", "test_anomalous": "Int64"})

    def expected_totals(self) -> tuple[int, int]:
        t = self.data["totals"]
        return int(t["test_normal"]), int(t["test_anomalous"])

    def how_to_get(self) -> str:
        """Human text naming the layout and the download places, used in missing-folder errors."""
        tree = self.layout.get("tree", "").rstrip()
        urls = "\n".join(f"    {u}" for u in self.urls) or "    (no known source)"
        note = self.data.get("source", {}).get("note")
        variants = [f"    {v['name']} (recognised by {v['detect']}/)" for v in self.layout.get("variants") or []]
        if variants:
            tree += "\n  Also accepted:\n" + "\n".join(variants)
        return (
            f"Expected layout for {self.name} (key '{self.key}', released code: --dataset {self.released_key}, "
            f"root {self.data.get('released_root')}):\n"
            + "\n".join(f"    {line}" for line in tree.splitlines())
            + f"\n  Download from:\n{urls}" + (f"\n  Note: {note}" if note else "")
        )


def _check(data: Any, key: str, path: Path) -> dict[str, Any]:
    need = ("key", "name", "short_name", "domain", "released_key", "eval_level", "layout", "masks", "categories",
            "totals")
    if not isinstance(data, dict) or any(k not in data for k in need):
        raise DataError(f"manifest {path} is not a valid dataset manifest (needs keys {', '.join(need)}).")
    if data["key"] != key:
        raise DataError(f"manifest {path} declares key {data['key']!r}; rename the file to {data['key']}.yaml.")
    if data["eval_level"] not in EVAL_LEVELS:
        raise DataError(f"manifest {path}: eval_level must be one of {EVAL_LEVELS}, not {data['eval_level']!r}.")
    if data["domain"] not in DOMAINS:
        raise DataError(f"manifest {path}: domain must be one of {DOMAINS}, not {data['domain']!r}.")
    return data


def manifest_keys(folder: Path | None = None) -> tuple[str, ...]:
    """The dataset keys: the stems of the ``<key>.yaml`` files in the manifest folder, sorted."""
    return tuple(sorted(p.stem for p in (folder or manifest_dir()).glob("*.yaml")))


def resolve_key(name: str) -> str:
    """Our key for a name: accepts our keys and the released code's ones (``SDD``, ``brain_mri``...)."""
    low = name.strip().lower()
    if low in DATASETS:
        return low
    for key, m in DATASETS.items():
        if m.released_key.lower() == low:
            return key
    raise DataError(f"unknown dataset {name!r}; use one of: {', '.join(DATASETS)}.")


def load_manifest(key: str) -> Manifest:
    """Load (and cache) the manifest for a dataset key or a released-code key."""
    return DATASETS[resolve_key(key)]


class _Manifests(Mapping[str, Manifest]):
    """``DATASETS``: a read-only dict key -> Manifest over the current manifest folder (see
    ``manifest_dir``), reading each YAML on first use; the cache follows the folder, so pointing
    ``$GLOCAL_MANIFESTS`` elsewhere takes effect at once."""

    def __init__(self) -> None:
        self._folder: Path | None = None
        self._keys: tuple[str, ...] = ()
        self._cache: dict[str, Manifest] = {}

    def _current(self) -> Path:
        folder = manifest_dir()
        if folder != self._folder:
            self._folder, self._keys, self._cache = folder, manifest_keys(folder), {}
        return folder

    def __getitem__(self, key: str) -> Manifest:
        folder = self._current()
        if key not in self._keys:
            raise KeyError(key)
        if key not in self._cache:
            path = folder / f"{key}.yaml"
            self._cache[key] = Manifest(key, path, _check(read_yaml(path), key, path))
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        self._current()
        return iter(self._keys)

    def __len__(self) -> int:
        self._current()
        return len(self._keys)

    def clear_cache(self) -> None:
        self._folder = None


DATASETS = _Manifests()
# The keys found when the package was imported (for parametrised tests and help texts); code that must
# follow a changed $GLOCAL_MANIFESTS iterates DATASETS instead.
def _keys_at_import() -> tuple[str, ...]:
    try:
        return tuple(DATASETS)
    except DataError:  # a bad $GLOCAL_MANIFESTS: not an import error; every use of DATASETS says what is wrong
        return ()


DATASET_KEYS: tuple[str, ...] = _keys_at_import()


def sync_packaged_copy(src: Path = REPO_DIR, dst: Path = PACKAGED_DIR) -> list[Path]:
    """Make the packaged manifests equal the canonical ones (run after editing data_manifests/): every
    ``<key>.yaml`` is copied and a packaged manifest whose dataset was removed is deleted."""
    dst.mkdir(parents=True, exist_ok=True)
    keys = manifest_keys(src)
    for stale in sorted(set(manifest_keys(dst)) - set(keys)):
        (dst / f"{stale}.yaml").unlink()
    out = []
    for key in keys:
        shutil.copyfile(src / f"{key}.yaml", dst / f"{key}.yaml")
        out.append(dst / f"{key}.yaml")
    return out


def manifest_table() -> pd.DataFrame:
    """One row per dataset (name, level, categories, totals, license, tags): for notebooks and docs."""
    rows = []
    for key, m in DATASETS.items():
        tn, ta = m.expected_totals()
        rows.append({
            "key": key, "name": m.name, "short_name": m.short_name, "released_key": m.released_key,
            "domain": m.domain,
            "eval_level": m.eval_level, "n_categories": len(m.categories), "test_normal": tn,
            "test_anomalous": ta, "counts_tag": m.data["totals"].get("tag"),
            "license": m.data.get("license", {}).get("name"), "license_tag": m.data.get("license", {}).get("tag"),
        })
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ training sets
TRAIN_JOIN = "+"  # "mvtec+colondb": the name of a concatenated training set in run and job names


def train_keys(train: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The dataset keys of a training set: one key, or several trained on as one concatenated set
    (AdaCLIP's released models: MVTec AD + ColonDB, VisA + ClinicDB). "a+b" is read as (a, b)."""
    keys = tuple(str(train).split(TRAIN_JOIN)) if isinstance(train, str) else tuple(str(k) for k in train)
    if not keys or any(not k for k in keys):
        raise DataError(f"training set {train!r} names no dataset key; give one key or several (e.g. [mvtec, colondb])")
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise DataError(f"training set {train!r} lists {dupes} twice; each dataset is concatenated once")
    return keys


def train_label(train: str | tuple[str, ...] | list[str]) -> str:
    """One printable name for a training set: the key, or the keys joined by '+'."""
    return TRAIN_JOIN.join(train_keys(train))


def train_value(train: str | tuple[str, ...] | list[str]) -> str | tuple[str, ...]:
    """Canonical form: a single key stays a string (so single-set run ids and job names never change),
    several keys are a tuple in the order given (the concatenation order)."""
    keys = train_keys(train)
    return keys[0] if len(keys) == 1 else keys
