"""Check a dataset (native tree or an index) and report every problem at once.

Cheap by default: images and masks are opened with PIL's lazy ``Image.open``, which reads the
header only, so sizes and "is this an image at all" cost microseconds per file. ``deep=True``
decodes every file, which also finds truncated images and reports mask values (the released
loader binarises masks with ``> 0``, so JPEG noise or VisA's small values count as foreground).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from glocal_lib.data.converters import convert, suggest_root
from glocal_lib.data.index import check_index_frame, is_absolute, read_string_csv
from glocal_lib.data.issues import ERROR, WARNING, Issue, error, format_issues, issues_frame, warning
from glocal_lib.data.registry import Manifest, load_manifest
from glocal_lib.errors import DataError

PathLike = str | os.PathLike[str]
OPEN_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)
COUNT_COLUMNS = ["category", "expected_normal", "found_normal", "expected_anomalous", "found_anomalous", "status"]


@dataclass
class ValidationReport:
    """Result of validate_dataset: the problems, the per-category counts and the index checked."""

    key: str
    root: str
    issues: list[Issue]
    counts: pd.DataFrame
    index: pd.DataFrame = field(repr=False)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == ERROR]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def table(self) -> pd.DataFrame:
        """One row per problem (severity, kind, file, message), errors first."""
        return issues_frame(self.issues)

    def summary(self) -> pd.DataFrame:
        """Per-category counts vs expectation plus the number of errors/warnings per kind."""
        return self.counts

    def text(self) -> str:
        head = (f"{self.key} at {self.root}: {len(self.index)} test images, {len(self.errors)} error(s), "
                f"{len(self.warnings)} warning(s)")
        body = self.counts.to_string(index=False)
        probs = format_issues(self.errors + self.warnings, limit=40)
        kinds = self.table().groupby(["severity", "kind"]).size()
        by_kind = ", ".join(f"{n} {sev} {kind}" for (sev, kind), n in kinds.items())
        return f"{head}\n{body}" + (f"\nproblems ({by_kind}):\n{probs}" if self.issues else "")

    def raise_if_errors(self) -> None:
        if self.errors:
            raise DataError(f"{len(self.errors)} error(s) in dataset {self.key!r} at {self.root}:\n"
                            f"{format_issues(self.errors)}\nFix the files named above and run the check again.")


def _open_size(path: Path, deep: bool) -> tuple[tuple[int, int] | None, np.ndarray | None, str]:
    """(size, decoded L array if deep mask wanted, error text) without keeping a file handle."""
    try:
        with Image.open(path) as im:
            size = im.size
            if deep:
                im.load()
                return size, np.asarray(im.convert("L")), ""
            return size, None, ""
    except OPEN_ERRORS as err:
        return None, None, f"{type(err).__name__}: {err}"


def check_rows(m: Manifest, root: Path, index: pd.DataFrame, deep: bool = False) -> list[Issue]:
    """Per-row checks: paths, categories, labels vs masks, files readable, sizes, (deep) mask values."""
    issues: list[Issue] = []
    cats = set(m.categories)
    for r in index.itertuples(index=False):
        img = r.image_path
        if is_absolute(img) or is_absolute(r.mask_path):
            issues.append(error("absolute_path", img, "index paths must be relative to the dataset root; rebuild the "
                                "index (read_meta_json converts absolute meta.json paths)."))
            continue
        if r.category not in cats:
            issues.append(error("unknown_category", img, f"category {r.category!r} is not one of {sorted(cats)}; "
                                "fix the category name in the index or rename the folder."))
        if int(r.label) == 1 and m.pixel_level and not r.mask_path:
            issues.append(error("missing_mask", img, "anomalous image in a pixel-level dataset has no mask; add it."))
        if int(r.label) == 0 and r.mask_path:
            issues.append(warning("mask_on_normal", r.mask_path, "a normal image has a mask; it is ignored (normal "
                                  "images always get an all-zero mask)."))
        isize, _, err = _open_size(root / img, deep)
        if err:
            kind = "missing_image" if not (root / img).exists() else "corrupt_image"
            fix = "restore the file" if kind == "missing_image" else "re-extract it from the archive or delete it"
            issues.append(error(kind, img, f"cannot read the image ({err}); {fix}."))
        if not r.mask_path or int(r.label) == 0:
            continue
        msize, arr, err = _open_size(root / r.mask_path, deep)
        if err:
            kind = "missing_mask" if not (root / r.mask_path).exists() else "corrupt_mask"
            issues.append(error(kind, r.mask_path, f"cannot read the mask of {img} ({err}); restore or re-extract it."))
            continue
        if isize is not None and msize != isize:
            issues.append(error("size_mismatch", r.mask_path,
                                f"mask is {msize[0]}x{msize[1]} but its image {img} is {isize[0]}x{isize[1]} (WxH); "
                                "the mask belongs to another image or was resized: restore the original mask."))
        if arr is not None:
            values = np.unique(arr)
            if values.max(initial=0) == 0:
                issues.append(warning("empty_mask", r.mask_path, "all-zero mask on an anomalous image: anomalous at "
                                      "image level, no positive pixels (known for a few BTAD masks)."))
            elif len(values) > 2 or int(values.max()) not in (1, 255):
                nz = values[values > 0]
                shown = ", ".join(map(str, nz[:6].tolist())) + (", ..." if len(nz) > 6 else "")
                why = ("small label values, as in VisA" if nz.max() < 128
                       else "grey levels, typically JPEG noise near the border")
                issues.append(warning("non_binary_mask", r.mask_path,
                                      f"non-zero values {shown} ({why}); binarised with > 0 as the released loader "
                                      "does, so every non-zero pixel counts as a defect pixel."))
    return issues


def compare_counts(m: Manifest, index: pd.DataFrame, expected: pd.DataFrame | None = None
                   ) -> tuple[pd.DataFrame, list[Issue]]:
    """Per-category normal/anomalous counts vs the manifest (or ``expected``, e.g. a stand-in's counts)."""
    from_manifest = expected is None
    exp = m.expected_counts() if from_manifest else expected.copy()
    exp["category"] = exp["category"].astype(str)
    found = index.groupby("category")["label"].agg(found_normal=lambda s: int((s == 0).sum()),
                                                   found_anomalous=lambda s: int((s == 1).sum()))
    rows, issues = [], []
    tag = {str(c["name"]): c.get("tag", "?") for c in m.data["categories"]}
    for cat in sorted(set(exp["category"]) - set(m.categories)):
        issues.append(error("unknown_category", f"{cat}/", f"the expected counts name {cat!r}, which is not a "
                            f"{m.name} category ({', '.join(m.categories)}); fix the name in the expected-counts file."))
    for r in exp.itertuples(index=False):
        fn, fa = (int(found.loc[r.category, "found_normal"]), int(found.loc[r.category, "found_anomalous"])) \
            if r.category in found.index else (0, 0)
        en = None if pd.isna(r.test_normal) else int(r.test_normal)
        ea = None if pd.isna(r.test_anomalous) else int(r.test_anomalous)
        if en is None or ea is None:
            status = "not known per category"
        elif (fn, fa) == (en, ea):
            status = "ok"
        else:
            status = "MISMATCH"
            src = f"the manifest ([{tag.get(r.category, '?')}])" if from_manifest else "the expected counts"
            issues.append(error("wrong_count", f"{r.category}/",
                                f"found {fn} normal / {fa} anomalous test images, {src} expects {en} / {ea}. Look for "
                                "missing or extra files, or a different release of the dataset."))
        rows.append((r.category, en, fn, ea, fa, status))
    counts = pd.DataFrame(rows, columns=COUNT_COLUMNS).astype({"expected_normal": "Int64", "expected_anomalous": "Int64"})
    if from_manifest and counts["status"].eq("not known per category").any():
        tn, ta = m.expected_totals()
        fn, fa = int(counts["found_normal"].sum()), int(counts["found_anomalous"].sum())
        status = "ok" if (fn, fa) == (tn, ta) else "MISMATCH"
        if status != "ok":
            issues.append(error("wrong_count", "./", f"found {fn} normal / {fa} anomalous test images in total, the "
                                f"manifest expects {tn} / {ta} ([{m.data['totals'].get('tag', '?')}]). Look for missing "
                                "or extra files, or a different release of the dataset."))
        total = pd.DataFrame([("(total)", tn, fn, ta, fa, status)], columns=COUNT_COLUMNS)
        counts = pd.concat([counts, total.astype(counts.dtypes.to_dict())], ignore_index=True)
    return counts, issues


EXPECTED_COLUMNS = ("category", "test_normal", "test_anomalous")


def read_expected(path: PathLike) -> pd.DataFrame:
    """An expected-counts CSV (category,test_normal,test_anomalous), or a DataError naming the line and field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"expected-counts file not found: {path}")
    df = read_string_csv(path, str(path), f"expected the header {','.join(EXPECTED_COLUMNS)} and one row per "
                         "category.")
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in EXPECTED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(missing)} (has {', '.join(df.columns)}); expected "
                        f"the header {','.join(EXPECTED_COLUMNS)}.")
    out = df[list(EXPECTED_COLUMNS)].copy()
    for col in EXPECTED_COLUMNS[1:]:
        for i, v in enumerate(out[col]):
            if not v.strip().isdigit():
                raise DataError(f"{path} line {i + 2}, {col}: {v!r} is not a whole number of images; fix the value.")
        out[col] = out[col].astype("int64")
    out["category"] = out["category"].str.strip()
    return out


def validate_dataset(key: str, root: PathLike, index: pd.DataFrame | None = None,
                     expected: pd.DataFrame | None = None, deep: bool = False, check_counts: bool = True,
                     raise_on_error: bool = True, categories: list[str] | None = None) -> ValidationReport:
    """Validate dataset ``key`` under ``root`` (its native tree, or ``index`` if given).

    ``expected``: a DataFrame (category, test_normal, test_anomalous) replacing the manifest counts
    (stand-ins). ``categories`` restricts the check to some categories. Raises DataError listing all
    errors when ``raise_on_error``.
    """
    m = load_manifest(key)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}\n{m.how_to_get()}")
    issues: list[Issue] = []
    if index is None:
        index, issues = convert(m, root, categories)
        better = suggest_root(m, root) if len(index) == 0 else None
        if better is not None:
            issues.insert(0, error("wrong_root", "./", f"no {m.name} images here, but {better} holds them: "
                                   f"pass --root {better} (the root is one level too high)."))
    else:
        check_index_frame(index, "the given index")
    if expected is None and categories is not None:
        expected = m.expected_counts()
        expected = expected[expected["category"].isin(categories)].reset_index(drop=True)
    issues += check_rows(m, root, index, deep=deep)
    counts, count_issues = compare_counts(m, index, expected)
    if check_counts:
        issues += count_issues
    seen, unique = set(), []
    for i in issues:
        if (i.kind, i.file) not in seen:
            seen.add((i.kind, i.file))
            unique.append(i)
    report = ValidationReport(m.key, str(root), unique, counts, index)
    if raise_on_error:
        report.raise_if_errors()
    return report
