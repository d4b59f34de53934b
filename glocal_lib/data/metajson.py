"""Read and write the released code's ``meta.json`` so users can move between both codes.

Format (``generate_dataset_json/*.py``): ``{"train": {cls: [rec...]}, "test": {cls: [rec...]}}``,
records ``{img_path, mask_path, cls_name, specie_name, anomaly}``; DAGM uses ``"Train"/"Test"``.
Several released scripts write ABSOLUTE paths from the authors' machine; on read we make them
relative to the dataset root (by the part under the root, a path suffix that exists there, or the
root's folder name), so a meta.json prepared elsewhere still works.

``specie_name`` <-> ``defect_type``: normal rows become ``good``; an empty specie becomes
``anomaly``. On write we reproduce what the released script for that dataset writes (``ok`` for
BTAD normals, ``no`` for BrainMRI, ``""`` for VisA/DAGM/polyp sets...), so released file ->
index -> file round-trips, and so does index -> file -> index.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path, PurePosixPath

import pandas as pd

from glocal_lib.data.converters import INDEX_COLUMNS
from glocal_lib.data.index import check_index_frame, escapes_root, is_absolute
from glocal_lib.data.registry import Manifest, load_manifest
from glocal_lib.errors import DataError
from glocal_lib.io import atomic_write_text

PathLike = str | os.PathLike[str]
RECORD_KEYS = ("img_path", "mask_path", "cls_name", "specie_name", "anomaly")


def _split_keys(m: Manifest) -> tuple[str, str]:
    keys = m.data.get("metajson", {}).get("split_keys", ["train", "test"])
    return str(keys[0]), str(keys[1])


def _released_specie(m: Manifest, label: int, defect_type: str) -> str:
    lay = m.layout
    if m.converter in ("visa_csv", "dagm") or (m.converter == "images_masks" and not lay.get("any_image_dir")):
        return ""
    if label == 0:
        return str((lay.get("normal_dirs") or ["good"])[0])
    return defect_type


class _Relativiser:
    """Turns absolute paths from another machine into root-relative ones (one prefix per file)."""

    def __init__(self, root: Path, source: str) -> None:
        self.root, self.source, self.prefix = root, source, None

    def __call__(self, p: str) -> str:
        p = p.replace("\\", "/")
        if not p or not is_absolute(p):
            return p[2:] if p.startswith("./") else p
        pp = PurePosixPath(p)
        for prefix in (PurePosixPath(self.root.resolve().as_posix()), self.prefix):
            if prefix is not None and pp.is_relative_to(prefix):
                return pp.relative_to(prefix).as_posix()
        parts = pp.parts
        for i in range(1, len(parts)):  # the longest suffix that exists under the root
            if (self.root / Path(*parts[i:])).exists():
                self.prefix = PurePosixPath(*parts[:i])
                return PurePosixPath(*parts[i:]).as_posix()
        if self.root.name in parts[:-1]:  # files absent (e.g. checking a meta.json alone): use the root's name
            i = len(parts) - 1 - parts[::-1].index(self.root.name)
            self.prefix = PurePosixPath(*parts[: i + 1])
            return PurePosixPath(*parts[i + 1:]).as_posix()
        raise DataError(f"absolute path {p} is not under the dataset root {self.root} and no part of "
                        "it exists there; regenerate meta.json for this machine or pass the right --root.")


def read_meta_json(path: PathLike, key: str, root: PathLike | None = None, split: str = "test") -> pd.DataFrame:
    """Unified index from a released-format meta.json (``path`` = the file or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "meta.json"
    if not path.is_file():
        raise DataError(f"meta.json not found: {path}; create it with the released generate_dataset_json script or "
                        "use `glocal data index` on the native layout instead.")
    m = load_manifest(key)
    root = Path(root) if root is not None else path.parent
    try:
        text = path.read_text(encoding="utf-8")
        meta = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); regenerate it.") from None
    wanted = {k.lower(): k for k in meta} if isinstance(meta, dict) else {}
    if split.lower() not in wanted:
        raise DataError(f"{path} has no {split!r} section (keys: {list(meta) if isinstance(meta, dict) else '?'}).")
    section, rel, rows = meta[wanted[split.lower()]], _Relativiser(root, str(path)), []
    if not isinstance(section, dict):
        raise DataError(f"{path}: the {split!r} section must map class names to lists of records; regenerate it.")
    for cls, records in section.items():
        for r in records if isinstance(records, list) else [records]:
            label, image, mask = _checked_record(r, cls, path, text)
            defect = "good" if label == 0 else (r["specie_name"] or "anomaly")
            try:
                paths = (rel(image), rel(mask))
            except DataError as err:
                raise DataError(f"{path} line {_line_of(text, image)}: {err}") from None
            for field_, p in zip(("img_path", "mask_path"), paths):
                if escapes_root(p):
                    raise DataError(f"{path} line {_line_of(text, r.get(field_))}, {field_}: {r[field_]} points "
                                    f"outside the dataset root {root}; every path must stay inside it. Fix the "
                                    "record or regenerate meta.json.")
            rows.append((*paths, str(r["cls_name"]), label, defect, split.lower()))
    df = pd.DataFrame(rows, columns=INDEX_COLUMNS).astype({"label": "int64"})
    unknown = sorted(set(df["category"]) - set(m.categories))
    if unknown:
        raise DataError(f"{path}: unknown categories {unknown} for {m.name}; expected {m.categories}.")
    return df


def _line_of(text: str, value: object) -> int | str:
    """1-based line of the first occurrence of a JSON value in the file text ('?' if not found)."""
    pos = text.find(json.dumps(value)) if value is not None else -1
    return text.count("\n", 0, pos) + 1 if pos >= 0 else "?"


def _checked_record(r: object, cls: str, path: Path, text: str) -> tuple[int, str, str]:
    """(label, img_path, mask_path) of one meta.json record, or a DataError naming the file, line and field."""
    if not isinstance(r, dict) or any(k not in r for k in RECORD_KEYS):
        raise DataError(f"{path}: record {r} in class {cls!r} lacks one of {RECORD_KEYS}; regenerate meta.json.")

    def where() -> str:  # the line is looked up only for an error (a find in the whole text)
        return f"{path} line {_line_of(text, r['img_path'])}"

    for key in ("img_path", "mask_path", "cls_name", "specie_name"):
        if not isinstance(r[key], str):
            raise DataError(f"{where()}, {key}: {r[key]!r} must be a string (\"\" for none); fix the record.")
    label = r["anomaly"]
    if isinstance(label, bool) or label not in (0, 1):
        raise DataError(f"{where()}, anomaly: {label!r} is not 0 or 1; write 0 (normal) or 1 (anomalous) as a number.")
    return int(label), r["img_path"], r["mask_path"]


def to_meta_dict(index: pd.DataFrame, key: str) -> dict[str, dict[str, list[dict]]]:
    """The released meta.json structure for an index (categories in manifest order)."""
    m = load_manifest(key)
    check_index_frame(index, "index")
    train_key, test_key = _split_keys(m)
    out: dict[str, dict[str, list[dict]]] = {train_key: {}, test_key: {}}
    for split, skey in (("train", train_key), ("test", test_key)):
        part = index[index["split"] == split]
        for cat in m.categories:
            rows = part[part["category"] == cat]
            if len(rows):
                out[skey][cat] = [
                    {"img_path": r.image_path, "mask_path": r.mask_path, "cls_name": cat,
                     "specie_name": _released_specie(m, int(r.label), r.defect_type), "anomaly": int(r.label)}
                    for r in rows.itertuples(index=False)
                ]
    return out


def write_meta_json(index: pd.DataFrame, path: PathLike, key: str) -> Path:
    """Write a released-format meta.json (the authors' loader expects it at ``<root>/meta.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "meta.json"
    m = load_manifest(key)
    if m.key == "dagm" and path.parent.name != m.released_key:
        warnings.warn(f"the released loader reads DAGM's 'Test' section only when the root folder is named "
                      f"{m.released_key}; {path.parent} is not. Rename the folder before using the authors' code.",
                      UserWarning, stacklevel=2)
    return atomic_write_text(path, json.dumps(to_meta_dict(index, key), indent=4) + "\n")
