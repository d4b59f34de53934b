"""Build, write and read the unified index (a CSV kept OUTSIDE the dataset tree).

The released scripts write ``meta.json`` into the dataset root; a second run then sees it as a
class folder (AnomalyCLIP's br35h/covid scripts crash). Our index therefore lives elsewhere by
default: ``$GLOCAL_INDEX_DIR`` or ``~/.cache/glocal_repro/index/<key>-<hash of root>.csv``, and
``write_index`` refuses a path inside the dataset root unless told otherwise.
"""

from __future__ import annotations

import os
import posixpath
import warnings
from pathlib import Path, PurePosixPath, PureWindowsPath

import pandas as pd

from glocal_lib.data.converters import INDEX_COLUMNS, convert, suggest_root
from glocal_lib.data.issues import ERROR, format_issues, raise_if_errors
from glocal_lib.data.registry import load_manifest
from glocal_lib.errors import DataError
from glocal_lib.io import atomic_save_with, stable_hash

PathLike = str | os.PathLike[str]


class DataWarning(UserWarning):
    """Doubtful but usable dataset content (stray files, missing train/ folders...)."""


def build_index(key: str, root: PathLike, strict: bool = True, categories: list[str] | None = None
                ) -> pd.DataFrame:
    """Index the test split of dataset ``key`` stored in its native layout under ``root``.

    Raises DataError listing every error (missing masks, unpaired masks, forbidden folders...) when
    ``strict``; warnings are summarised in one DataWarning. No image is opened. ``categories``
    restricts the index to some categories.
    """
    m = load_manifest(key)
    df, issues = convert(m, root, categories)
    if len(df) == 0:
        better = suggest_root(m, Path(root))
        hint = (f"\n{better} holds {m.name}: did you mean --root {better}?" if better is not None
                else f"\n{m.how_to_get()}")
        raise DataError(f"no test images found for {m.name} under {root}:\n{format_issues(issues, 5)}{hint}")
    if strict:
        raise_if_errors(issues, f"dataset {m.key!r} at {root}")
    others = [i for i in issues if i.severity != ERROR]
    if others:
        warnings.warn(f"{len(others)} warning(s) while indexing {m.key!r} at {root}:\n{format_issues(others, 5)}",
                      DataWarning, stacklevel=2)
    return df


def default_index_path(key: str, root: PathLike) -> Path:
    """Where an index is stored when no path is given: outside any dataset tree."""
    base = os.environ.get("GLOCAL_INDEX_DIR")
    folder = Path(base) if base else Path.home() / ".cache" / "glocal_repro" / "index"
    return folder / f"{key}-{stable_hash(str(Path(root).resolve()))}.csv"


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def write_index(df: pd.DataFrame, path: PathLike, root: PathLike | None = None,
                allow_inside_root: bool = False) -> Path:
    """Write an index as CSV atomically; refuses to write inside ``root`` (the data tree) by default."""
    path = Path(path)
    if root is not None and not allow_inside_root and _inside(path, Path(root)):
        raise DataError(f"refusing to write the index {path} inside the dataset folder {root}: index files in the "
                        "data tree are picked up as data by the released scripts. Choose a path outside it.")
    check_index_frame(df, str(path))
    return atomic_save_with(path, lambda p: df[INDEX_COLUMNS].to_csv(p, index=False))


def is_absolute(p: str) -> bool:
    return bool(p) and (PurePosixPath(p).is_absolute() or PureWindowsPath(p).is_absolute())


def escapes_root(p: str) -> bool:
    """Whether a relative path climbs out of the dataset root (``../x``, ``a/../../x``)."""
    norm = posixpath.normpath(str(p).replace("\\", "/"))
    return norm == ".." or norm.startswith("../")


def _row(i: int) -> str:
    return f"row {i} (CSV line {i + 2})"


def check_index_frame(df: pd.DataFrame, where: str) -> None:
    """Columns present, labels 0/1, paths relative and inside the root: what every consumer relies on."""
    missing = [c for c in INDEX_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"index {where} lacks columns {missing}; rebuild it with `glocal data index`.")
    bad = ~df["label"].isin([0, 1])
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise DataError(f"index {where} {_row(i)}: label {df['label'].iloc[i]!r} must be 0 or 1; rebuild the index.")
    for col in ("image_path", "mask_path"):
        for i, p in enumerate(df[col]):
            if is_absolute(p):
                raise DataError(f"index {where} holds absolute paths ({_row(i)}, {col}: {p}); paths must be "
                                "relative to the dataset root. Rebuild it, or read meta.json with read_meta_json (it makes them "
                                "relative).")
            if escapes_root(p):
                raise DataError(f"index {where} {_row(i)}, {col}: {p} points outside the dataset root; every path "
                                "must stay inside it. Rebuild the index with `glocal data index`.")


def read_string_csv(path: Path, what: str, expected: str) -> pd.DataFrame:
    """A CSV read with every cell a string (BTAD's '01' stays '01'), or a DataError saying what was expected."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{what} is not a readable CSV ({str(err).strip().splitlines()[0]}); {expected}") from None


def read_index(path: PathLike) -> pd.DataFrame:
    """Read an index written by write_index (strings stay strings: BTAD's '01' is not 1)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"index file not found: {path}; create it with `glocal data index <dataset> --root PATH`.")
    df = read_string_csv(path, f"index {path}", f"expected the columns {', '.join(INDEX_COLUMNS)}. "
                         "Rebuild it with `glocal data index`.")
    if "label" in df.columns:
        labels = pd.to_numeric(df["label"].str.strip(), errors="coerce")
        if not labels.isin([0, 1]).all():
            i = int((~labels.isin([0, 1])).to_numpy().argmax())
            raise DataError(f"index {path} {_row(i)}, label: {df['label'].iloc[i]!r} is not 0 or 1; fix the row or "
                            "rebuild the index.") from None
        df["label"] = labels.astype("int64")
    check_index_frame(df, str(path))
    return df[INDEX_COLUMNS].reset_index(drop=True)
