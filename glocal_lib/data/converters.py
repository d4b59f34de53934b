"""Native dataset layouts -> one unified index (one row per test image).

Each converter reads one family of layouts (documented in ``.plan/layouts.md`` and in each
manifest's ``layout``) and returns the rows plus every problem it met. Two rules shape the code:

* masks are paired with images by NAME (stem + the dataset's suffix), never by sort position: the
  released converters zip two sorted lists, so a single stray file shifts every later pair;
* only folders the manifest names are trusted. The released scripts label "anything not called
  good" as anomalous, so an extra folder (Br35H ``pred/``, COVID ``Viral Pneumonia/``) silently
  changes the counts; here it is an error that names the folder.

Converters only list folders (``os.scandir``); they never open an image.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from glocal_lib.data.issues import Issue, error, warning
from glocal_lib.data.registry import Manifest
from glocal_lib.errors import DataError

INDEX_COLUMNS = ["image_path", "mask_path", "category", "label", "defect_type", "split"]
SYSTEM_FILES = {"thumbs.db", "desktop.ini"}
INDEX_FILES = {"meta.json"}  # written into the root by the released scripts: expected, ignored


def _ext(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_FILES


def _scan(path: Path, unreadable: list[tuple[str, str]] | None = None) -> tuple[list[str], list[str]]:
    """Sorted (sub-folder names, file names) of a folder; ([], []) if it does not exist.

    Entries that cannot be followed (a symlink loop, a dangling link, no permission) are left out
    and (name, reason) appended to ``unreadable``: converters never recurse, so a loop cannot hang them.
    """
    dirs, files = [], []
    try:
        with os.scandir(path) as it:
            for e in it:
                try:
                    is_dir = e.is_dir()
                    if not is_dir and e.is_symlink() and not os.path.exists(e.path):
                        raise OSError(f"dangling symbolic link to {os.readlink(e.path)}")
                except OSError as err:
                    if unreadable is not None:
                        unreadable.append((e.name, err.strerror or str(err)))
                    continue
                (dirs if is_dir else files).append(e.name)
    except FileNotFoundError:
        pass
    except OSError as err:  # the folder itself is a loop or unreadable
        if unreadable is None:
            raise
        unreadable.append(("", err.strerror or str(err)))
    return sorted(dirs), sorted(files)


@dataclass
class _Builder:
    """Collects rows and issues while a converter walks the tree."""

    root: Path
    categories: list[str]
    layout: dict
    rows: list[tuple[str, str, str, int, str, str]] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def add(self, image: str, mask: str, category: str, label: int, defect_type: str) -> None:
        self.rows.append((image, mask, category, int(label), defect_type, "test"))

    def scan(self, folder: Path) -> tuple[list[str], list[str]]:
        """``_scan`` that reports entries it cannot follow (symlink loops...) as errors naming them."""
        bad: list[tuple[str, str]] = []
        out = _scan(folder, bad)
        for name, why in bad:
            where = folder / name if name else folder
            rel = self.rel(where) if where.is_relative_to(self.root) else str(where)
            self.issues.append(error("unreadable_entry", rel, f"cannot be followed ({why}); it is not indexed. "
                                     "Remove the link or point it at a real file or folder."))
        return out

    def same_stems(self, folder: Path, names: list[str], what: str) -> None:
        """Error for files whose stems differ only in case or extension (a.png + A.PNG, a.png + a.jpg):
        pairing by name cannot tell them apart, and case-insensitive file systems keep only one."""
        groups: dict[str, list[str]] = {}
        for n in names:
            groups.setdefault(_stem(n).lower(), []).append(n)
        for same in (g for g in groups.values() if len(g) > 1):
            self.issues.append(error(
                "duplicate_stem", self.rel(folder / same[0]),
                f"{len(same)} {what} files share the name {_stem(same[0])!r} up to case/extension: "
                f"{', '.join(self.rel(folder / n) for n in same)}; keep one of them (they would pair with the same "
                "mask, and on a case-insensitive disk one overwrites the other)."))

    def images(self, folder: Path, exts: set[str]) -> list[str]:
        """Image file names in a folder; everything else there is reported as stray."""
        dirs, files = self.scan(folder)
        keep = []
        for name in files:
            if not _hidden(name) and _ext(name) in exts:
                keep.append(name)
            else:
                self.issues.append(warning(
                    "stray_file", self.rel(folder / name),
                    f"not an image ({', '.join(sorted(exts))}); it is not indexed. Delete it or move it out of "
                    "the dataset (the released converters would index it or shift every mask pair)."))
        for name in dirs:
            self.issues.append(warning("stray_folder", self.rel(folder / name),
                                       "unexpected sub-folder; it is not indexed. Move it out of the dataset."))
        self.same_stems(folder, keep, "image")
        return keep

    def has_files(self, folder: Path) -> bool:
        """Whether a folder holds any file at all (used to pick a layout variant without reporting)."""
        return bool(self.scan(folder)[1])

    def mask_table(self, folder: Path, exts: set[str], suffix_end: str = "") -> dict[str, str]:
        """Map mask stem -> file name for one mask folder; strays and duplicates are reported."""
        table: dict[str, str] = {}
        _, files = self.scan(folder)
        for name in files:
            if _hidden(name) or _ext(name) not in exts or (suffix_end and not _stem(name).endswith(suffix_end)):
                if name != "Labels.txt":  # DAGM's label list sits beside the label images
                    self.issues.append(warning(
                        "stray_file", self.rel(folder / name),
                        "not a mask file; it is not used. Delete it or move it out of the mask folder."))
                continue
            stem = _stem(name)
            if stem in table:
                self.issues.append(error(
                    "duplicate_mask", self.rel(folder / name),
                    f"two masks share the stem {stem!r} ({table[stem]}, {name}); keep one of them."))
                continue
            table[stem] = name
        self.same_stems(folder, list(table.values()), "mask")
        return table

    def pair(self, image_rel: str, table: dict[str, str], suffixes: list[str], used: set[str],
             mask_folder: Path) -> str:
        """Relative mask path for an image by stem rule, or '' (and an error) if none exists."""
        stem = _stem(image_rel.rsplit("/", 1)[-1])
        for suf in suffixes:
            if stem + suf in table:
                used.add(stem + suf)
                return self.rel(mask_folder / table[stem + suf])
        self.issues.append(error(
            "missing_mask", image_rel,
            f"anomalous image has no mask named {stem}{suffixes[0]}.<ext> in {self.rel(mask_folder)}/; "
            "add the mask, or move the image out of the test set."))
        return ""

    def unpaired(self, table: dict[str, str], used: set[str], mask_folder: Path, hint: str) -> None:
        for stem in sorted(set(table) - used):
            self.issues.append(error(
                "unpaired_mask", self.rel(mask_folder / table[stem]),
                f"mask without an image ({hint}); delete it or add its image. The released converters pair "
                "by sort position, so this file would shift every later image/mask pair."))

    def frame(self, categories: list[str]) -> pd.DataFrame:
        df = pd.DataFrame(self.rows, columns=INDEX_COLUMNS)
        order = {c: i for i, c in enumerate(categories)}
        df["_o"] = df["category"].map(order)
        df = df.sort_values(["_o", "image_path"], kind="stable").drop(columns="_o").reset_index(drop=True)
        return df.astype({"label": "int64"})


def _unknown_dirs(b: _Builder, root: Path, categories: list[str]) -> None:
    dirs, _ = b.scan(root)
    for d in dirs:
        if d not in categories and not _hidden(d):
            b.issues.append(warning(
                "unknown_category", d + "/",
                f"folder is not a category of this dataset ({', '.join(categories)}); it is not indexed. "
                "Rename it to the exact category name or move it out."))


def _exts(layout: dict, key: str) -> set[str]:
    return {e.lower() for e in layout[key]}


def convert_mvtec_style(root: Path, m: Manifest, b: _Builder) -> None:
    """``<cat>/test/<d>/<img>`` + ``<cat>/ground_truth/<d>/<stem><suffix>.<ext>`` (MVTec, MPDD, BTAD, SDD, DTD)."""
    lay = b.layout
    normal, suffixes = set(lay["normal_dirs"]), list(lay["mask_suffixes"])
    img_exts, mask_exts = _exts(lay, "image_exts"), _exts(lay, "mask_exts")
    _unknown_dirs(b, root, m.categories)
    for cat in b.categories:
        cdir = root / cat
        if not (cdir / "test").is_dir():
            what = "category folder" if not cdir.is_dir() else "test/ folder"
            b.issues.append(error("missing_folder", f"{cat}/test/",
                                  f"{what} missing; expected {cat}/test/<defect>/ (see the manifest layout)."))
            continue
        if not (cdir / "train").is_dir():
            b.issues.append(warning(
                "missing_train", f"{cat}/train/",
                f"not needed here, but the released generate_dataset_json script crashes without it: "
                f"create an empty {cat}/train/{lay['normal_dirs'][0]}/ if you also use the authors' code."))
        test_dirs, test_files = b.scan(cdir / "test")
        for name in test_files:
            b.issues.append(warning("stray_file", f"{cat}/test/{name}",
                                    "file directly under test/ is not indexed; move it into a defect folder or out."))
        gt = cdir / lay["mask_dir"]
        for d in test_dirs:
            names = b.images(cdir / "test" / d, img_exts)
            if d in normal:
                for n in names:
                    b.add(f"{cat}/test/{d}/{n}", "", cat, 0, "good")
                continue
            if d.lower() in {x.lower() for x in normal}:
                b.issues.append(error("wrong_case", f"{cat}/test/{d}/",
                                      f"rename to {sorted(normal)[0]!r}: the normal folder name is case-sensitive."))
                continue
            table, used = b.mask_table(gt / d, mask_exts), set()
            if not (gt / d).is_dir() and names:
                b.issues.append(error("missing_folder", b.rel(gt / d) + "/",
                                      f"mask folder for defect {d!r} is missing ({len(names)} images have no mask)."))
                for n in names:
                    b.add(f"{cat}/test/{d}/{n}", "", cat, 1, d)
                continue
            for n in names:
                img = f"{cat}/test/{d}/{n}"
                b.add(img, b.pair(img, table, suffixes, used, gt / d), cat, 1, d)
            b.unpaired(table, used, gt / d, f"no matching image in {cat}/test/{d}/")
        for d in b.scan(gt)[0]:
            if d not in test_dirs:
                b.unpaired(b.mask_table(gt / d, mask_exts), set(), gt / d, f"there is no {cat}/test/{d}/ folder")


def convert_visa_csv(root: Path, m: Manifest, b: _Builder) -> None:
    """VisA: test rows of ``split_csv/1cls.csv`` (object, split, label, image, mask); paths relative to root."""
    lay = b.layout
    csv = root / lay["split_csv"]
    if not csv.is_file():
        b.issues.append(error(
            "missing_file", lay["split_csv"],
            "VisA's split file is missing; it ships inside VisA_20220922.tar (re-extract the archive) or copy "
            "split_csv/ from https://github.com/amazon-science/spot-diff."))
        return
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df.columns = [c.strip().lower() for c in df.columns]
    if list(df.columns[:5]) != lay["columns"]:
        b.issues.append(error("bad_csv", lay["split_csv"],
                              f"columns are {list(df.columns)}, expected {lay['columns']}; use the original file."))
        return
    df = df[df["split"].str.strip() == "test"]
    for obj in sorted(set(df["object"]) - set(m.categories)):
        b.issues.append(warning("unknown_category", lay["split_csv"],
                                f"object {obj!r} is not a VisA category; its rows are not indexed."))
    for row in df[df["object"].isin(b.categories)].itertuples(index=False):
        image = row.image.strip().replace("\\", "/")
        label = row.label.strip()
        if label not in ("normal", "anomaly"):
            b.issues.append(error("bad_label", image, f"label {label!r} in 1cls.csv; expected normal or anomaly."))
            continue
        if not (root / image).is_file():
            b.issues.append(error("missing_image", image, "listed in split_csv/1cls.csv but not found; re-extract VisA."))
            continue
        mask = row.mask.strip().replace("\\", "/") if label == "anomaly" else ""
        if label == "anomaly" and (not mask or not (root / mask).is_file()):
            b.issues.append(error("missing_mask", image,
                                  f"mask {mask or '(empty)'} listed in 1cls.csv is missing; re-extract VisA."))
            mask = ""
        b.add(image, mask, row.object, int(label == "anomaly"), "anomaly" if label == "anomaly" else "good")


def convert_image_folders(root: Path, m: Manifest, b: _Builder) -> None:
    """Image-level sets: ``<subdir>/<normal>/`` and ``<subdir>/<anomalous>/`` (HeadCT, BrainMRI, Br35H, COVID)."""
    lay = b.layout
    sub = lay["subdir"].strip("/")
    pre = "" if sub in ("", ".") else sub + "/"
    base, cat = root / pre, m.categories[0]
    if not base.is_dir():
        b.issues.append(error("missing_folder", pre,
                              f"folder missing under the root; expected {pre}{lay['normal_dirs'][0]}/ "
                              "and an anomalous folder beside it."))
        return
    normal, anomalous = list(lay["normal_dirs"]), lay.get("anomalous_dirs")
    forbidden: dict[str, str] = lay.get("forbidden_dirs") or {}
    excluded: dict[str, str] = lay.get("excluded_dirs") or {}
    exts = _exts(lay, "image_exts")
    dirs, files = b.scan(base)
    for name in files:
        if name not in INDEX_FILES and not _hidden(name) and not (pre == "" and _ext(name) in {"csv", "txt", "md", "json", "zip"}):
            b.issues.append(warning("stray_file", f"{pre}{name}", "file is not indexed; move it out."))
    found_normal, found_anom = [], []
    for d in dirs:
        where = f"{pre}{d}/"
        if _hidden(d):
            continue
        if d in excluded:
            b.issues.append(warning("excluded_folder", where, excluded[d]))
            continue
        if d in forbidden:
            b.issues.append(error("forbidden_folder", where, forbidden[d]))
            continue
        if d in normal:
            label = 0
            found_normal.append(d)
        elif d.lower() in {x.lower() for x in normal}:
            b.issues.append(error("wrong_case", where, f"rename to {normal[0]!r}: the released script compares "
                                  "names exactly and would count this folder as anomalous."))
            continue
        elif anomalous is None or d in anomalous:
            label = 1
            found_anom.append(d)
        else:
            b.issues.append(error("unknown_folder", where,
                                  f"neither the normal folder ({normal[0]}) nor an anomalous one ({', '.join(anomalous)}); "
                                  "the released script would count its images as anomalous. Move it out."))
            continue
        for n in b.images(base / d, exts):
            b.add(f"{where}{n}", "", cat, label, "good" if label == 0 else d)
    if not found_normal:
        b.issues.append(error("missing_folder", f"{pre}{normal[0]}/", "normal-image folder is missing."))
    if not found_anom:
        b.issues.append(error("missing_folder", pre or "./",
                              f"no anomalous-image folder found (expected {', '.join(anomalous or ['any name'])})."))
    if len(found_anom) > int(lay.get("max_anomalous_dirs", 1)):
        b.issues.append(error("extra_folder", pre or "./",
                              f"several anomalous folders ({', '.join(found_anom)}); the evaluated set has one. "
                              "Move the others out of the dataset."))


def convert_labels_csv(root: Path, m: Manifest, b: _Builder) -> None:
    """HeadCT as downloaded from Kaggle: ``head_ct/[head_ct/]NNN.png`` + ``labels.csv`` (id, flag; 1 = anomalous)."""
    lay = b.layout
    cat = m.categories[0]
    csv = root / lay["labels_csv"]
    folder = next((d for d in lay["image_dirs"] if (root / d).is_dir() and b.has_files(root / d)), None)
    if folder is None:
        b.issues.append(error("missing_folder", lay["image_dirs"][0] + "/",
                              f"image folder missing; expected one of {', '.join(lay['image_dirs'])}."))
        return
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if df.shape[1] < 2:
        b.issues.append(error("bad_csv", lay["labels_csv"], "expected two columns (id, label); use the original file."))
        return
    names = {_stem(n): n for n in b.images(root / folder, _exts(lay, "image_exts"))}
    used = set()
    for raw_id, raw_flag in zip(df.iloc[:, 0], df.iloc[:, 1]):  # by position: the header may hold spaces
        stem = raw_id.strip().zfill(int(lay.get("id_digits", 3)))
        flag = raw_flag.strip()
        if stem not in names or flag not in ("0", "1"):
            b.issues.append(error("missing_image" if stem not in names else "bad_label", lay["labels_csv"],
                                  f"row id {raw_id!r} flag {raw_flag!r}: no image {folder}/{stem}.* or flag not 0/1."))
            continue
        used.add(stem)
        b.add(f"{folder}/{names[stem]}", "", cat, int(flag), "good" if flag == "0" else lay["anomalous_type"])
    for stem in sorted(set(names) - used):
        b.issues.append(warning("unlabelled_image", f"{folder}/{names[stem]}",
                                f"not listed in {lay['labels_csv']}; it is not indexed."))


def convert_isic(root: Path, m: Manifest, b: _Builder) -> None:
    """ISIC: ``skin/test/<X>/ISIC_id.jpg`` with masks ``ISIC_id_Segmentation.png`` in one mask folder."""
    lay = b.layout
    parent, cat = root / lay["image_parent"], m.categories[0]
    if not parent.is_dir():
        b.issues.append(error("missing_folder", lay["image_parent"] + "/", "image folder parent is missing."))
        return
    mask_dir = next((root / d for d in lay["mask_dirs"] if (root / d).is_dir()), None)
    if mask_dir is None:
        b.issues.append(error("missing_folder", lay["mask_dirs"][0] + "/",
                              f"mask folder missing; expected one of {', '.join(lay['mask_dirs'])}."))
        return
    table, used = b.mask_table(mask_dir, _exts(lay, "mask_exts")), set()
    for d in lay.get("image_dirs") or b.scan(parent)[0]:
        rel = f"{lay['image_parent']}/{d}".removeprefix("./")
        for n in b.images(parent / d, _exts(lay, "image_exts")):
            if d in lay["normal_dirs"]:
                b.add(f"{rel}/{n}", "", cat, 0, "good")
            else:
                b.add(f"{rel}/{n}", b.pair(f"{rel}/{n}", table, lay["mask_suffixes"], used, mask_dir), cat, 1, d)
    b.unpaired(table, used, mask_dir, f"no ISIC image with this id under {lay['image_parent']}/")


def convert_images_masks(root: Path, m: Manifest, b: _Builder) -> None:
    """``<images>/<stem>.*`` + ``<masks>/<stem>.*`` (ColonDB, ClinicDB, Kvasir, TN3K; Endo: any one image folder)."""
    lay = b.layout
    cat, mask_dir = m.categories[0], root / lay["mask_dir"]
    if lay.get("any_image_dir"):
        dirs, files = b.scan(root)
        for name in files:
            if name not in INDEX_FILES and not _hidden(name):
                b.issues.append(warning("stray_file", name, "file at the dataset root: the released endoTect.py "
                                        "treats every root entry as an image folder and crashes on it. Move it out."))
        image_dirs = [d for d in dirs if d != lay["mask_dir"] and not _hidden(d)]
        if len(image_dirs) > 1:
            b.issues.append(error("extra_folder", "./", f"several image folders ({', '.join(image_dirs)}); "
                                  f"keep exactly one beside {lay['mask_dir']}/."))
    else:
        image_dirs = [lay["image_dir"]] if (root / lay["image_dir"]).is_dir() else []
    if not image_dirs:
        b.issues.append(error("missing_folder", (lay.get("image_dir") or "images") + "/", "image folder missing."))
        return
    if not mask_dir.is_dir():
        b.issues.append(error("missing_folder", lay["mask_dir"] + "/", "mask folder missing."))
        return
    table, used = b.mask_table(mask_dir, _exts(lay, "mask_exts")), set()
    normal = set(lay.get("normal_dirs") or [])
    for d in image_dirs:
        for n in b.images(root / d, _exts(lay, "image_exts")):
            if d in normal:
                b.add(f"{d}/{n}", "", cat, 0, "good")
            else:
                defect = d if lay.get("any_image_dir") else "anomaly"
                b.add(f"{d}/{n}", b.pair(f"{d}/{n}", table, lay["mask_suffixes"], used, mask_dir), cat, 1, defect)
    b.unpaired(table, used, mask_dir, f"no image with this stem in {', '.join(image_dirs)}/")


def convert_dagm(root: Path, m: Manifest, b: _Builder) -> None:
    """DAGM: ``ClassK/Test/NNNN.PNG``; anomalous iff ``ClassK/Test/Label/NNNN_label.PNG`` exists."""
    lay = b.layout
    split, label_dir, suffix = lay["split_dir"], lay["label_dir"], lay["label_suffix"]
    _unknown_dirs(b, root, m.categories)
    for cat in b.categories:
        tdir = root / cat / split
        if not tdir.is_dir():
            b.issues.append(error("missing_folder", f"{cat}/{split}/", "folder missing (expected DAGM_KaggleUpload layout)."))
            continue
        dirs, files = b.scan(tdir)
        for d in dirs:
            if d != label_dir:
                b.issues.append(warning("stray_folder", f"{cat}/{split}/{d}/", "unexpected folder; not indexed."))
        ldir = tdir / label_dir
        table, used = b.mask_table(ldir, _exts(lay, "mask_exts"), suffix_end=suffix), set()
        for n in files:
            if _hidden(n) or _ext(n) not in _exts(lay, "image_exts"):
                b.issues.append(warning("stray_file", f"{cat}/{split}/{n}", "not an image; not indexed. Move it out."))
                continue
            key = _stem(n) + suffix
            if key in table:
                used.add(key)
                b.add(f"{cat}/{split}/{n}", b.rel(ldir / table[key]), cat, 1, "anomaly")
            else:
                b.add(f"{cat}/{split}/{n}", "", cat, 0, "good")
        b.unpaired(table, used, ldir, f"no image {cat}/{split}/<NNNN>.PNG for this label")


def convert_bmad(root: Path, m: Manifest, b: _Builder) -> None:
    """BMAD as MVFA-AD reorganised it (LiverCT, RESC, BrainMRI with masks): ``test/<normal>/img/*``
    (label 0) and ``test/<anomalous>/img/*`` with masks ``test/<anomalous>/<mask_dir>/<same stem>``.
    Other splits beside ``test/`` (train/, valid/) are not indexed; a mask folder of the normal images
    (all-zero masks) is ignored."""
    lay = b.layout
    cat, split = m.categories[0], lay.get("split_dir", "test")
    base, img_sub, mask_sub = root / split, lay["image_subdir"], lay["mask_dir"]
    if not base.is_dir():
        b.issues.append(error("missing_folder", f"{split}/", f"folder missing; expected {split}/"
                              f"{lay['normal_dirs'][0]}/{img_sub}/ and {split}/{lay['anomalous_dirs'][0]}/{img_sub}/."))
        return
    exts, mask_exts = _exts(lay, "image_exts"), _exts(lay, "mask_exts")
    known = list(lay["normal_dirs"]) + list(lay["anomalous_dirs"])
    dirs, files = b.scan(base)
    for name in files:
        b.issues.append(warning("stray_file", f"{split}/{name}", "file is not indexed; move it out."))
    for d in dirs:
        if d not in known and not _hidden(d):
            b.issues.append(error("unknown_folder", f"{split}/{d}/",
                                  f"neither a normal ({', '.join(lay['normal_dirs'])}) nor an anomalous "
                                  f"({', '.join(lay['anomalous_dirs'])}) folder; its images are not indexed."))
    for d in known:
        label = int(d in lay["anomalous_dirs"])
        folder = base / d / img_sub
        if not folder.is_dir():
            b.issues.append(error("missing_folder", f"{split}/{d}/{img_sub}/",
                                  f"{'anomalous' if label else 'normal'}-image folder is missing."))
            continue
        names = b.images(folder, exts)
        if not label:
            for n in names:
                b.add(f"{split}/{d}/{img_sub}/{n}", "", cat, 0, "good")
            continue
        mdir = base / d / mask_sub
        table, used = b.mask_table(mdir, mask_exts), set()
        for n in names:
            img = f"{split}/{d}/{img_sub}/{n}"
            b.add(img, b.pair(img, table, list(lay["mask_suffixes"]), used, mdir), cat, 1, d)
        b.unpaired(table, used, mdir, f"no image with this stem in {split}/{d}/{img_sub}/")


CONVERTERS: dict[str, Callable[[Path, Manifest, _Builder], None]] = {
    "mvtec_style": convert_mvtec_style,
    "visa_csv": convert_visa_csv,
    "image_folders": convert_image_folders,
    "labels_csv": convert_labels_csv,
    "isic": convert_isic,
    "images_masks": convert_images_masks,
    "dagm": convert_dagm,
    "bmad": convert_bmad,
}


def convert(m: Manifest, root: str | os.PathLike[str], categories: list[str] | None = None
            ) -> tuple[pd.DataFrame, list[Issue]]:
    """Index a dataset in its native layout: (index DataFrame, problems found while listing).

    ``categories`` restricts the index to some categories (the others are neither indexed nor
    reported missing).
    """
    root = Path(root)
    cats = list(m.categories) if categories is None else [str(c) for c in categories]
    unknown = [c for c in cats if c not in m.categories]
    if unknown:
        raise DataError(f"categories {unknown} are not {m.name} categories; choose from {m.categories}.")
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}\n{m.how_to_get()}")
    for lay in [m.layout, *(m.layout.get("variants") or [])]:
        if lay.get("converter", m.converter) not in CONVERTERS:
            raise DataError(f"manifest {m.path}: unknown converter {lay.get('converter')!r} "
                            f"(known: {', '.join(CONVERTERS)}).")
    layout = pick_layout(m, root)
    b = _Builder(root, [c for c in m.categories if c in cats], layout)
    CONVERTERS[layout["converter"]](root, m, b)
    df = b.frame(m.categories)
    issues = list(dict.fromkeys(b.issues + category_issues(m, df, b.categories, b.issues)))
    return df, issues


def category_issues(m: Manifest, df: pd.DataFrame, categories: list[str], found: list[Issue]) -> list[Issue]:
    """An indexed category with no image is an error; one with a single label, a warning saying which
    metrics it leaves undefined (they would otherwise show up only as NaN in a JSON file)."""
    issues: list[Issue] = []
    reported = {i.file.split("/", 1)[0] for i in found if i.kind == "missing_folder"}
    labels = df.groupby("category")["label"].agg(["min", "max"]) if len(df) else None
    for cat in categories:
        if labels is None or cat not in labels.index:
            if cat not in reported and len(df):  # an empty dataset is reported as a whole by build_index
                issues.append(error(
                    "empty_category", f"{cat}/",
                    f"category {cat!r} has no test images (its folders are empty or hold no "
                    f"{'/'.join(sorted(_exts(m.layout, 'image_exts')))} files); restore it from the archive, "
                    f"or leave it out explicitly (categories=[...]). Its metrics would be missing from the mean."))
            continue
        lo, hi = int(labels.at[cat, "min"]), int(labels.at[cat, "max"])
        if lo == hi and m.eval_level in ("image", "both"):
            only = "normal" if lo == 0 else "anomalous"
            issues.append(warning(
                "single_label", f"{cat}/",
                f"only {only} images in category {cat!r}: its image-level metrics (AUROC, AP, F1-max) are "
                "undefined and it is left out of the dataset mean. Add the missing "
                f"{'anomalous' if lo == 0 else 'normal'} images (check the archive)."))
    return issues


def suggest_root(m: Manifest, root: Path, limit: int = 64) -> Path | None:
    """A sub-folder of ``root`` that holds dataset ``m`` when ``root`` itself does not (one level too high,
    e.g. /data instead of /data/mvtec, or mvtec_anomaly_detection/ holding mvtec/): the child whose
    listing indexes the most images. None if there is none. Listing only, so cheap."""
    try:
        children = sorted(d for d in _scan(root, [])[0] if not _hidden(d))
    except OSError:
        return None
    preferred = [c for c in children if c.lower() in {m.key, m.released_key.lower()}]
    best, best_n = None, 0
    for child in (preferred + [c for c in children if c not in preferred])[:limit]:
        try:
            b = _Builder(root / child, list(m.categories), pick_layout(m, root / child))
            CONVERTERS[b.layout["converter"]](root / child, m, b)
        except (OSError, KeyError, ValueError, DataError, pd.errors.ParserError):
            continue
        if len(b.rows) > best_n:
            best, best_n = root / child, len(b.rows)
    return best


def pick_layout(m: Manifest, root: Path) -> dict:
    """The manifest layout, or the first ``variants`` entry whose ``detect`` path exists under ``root``.

    Variants cover other common shapes of the same data (e.g. ClinicDB's official ``Original/`` and
    ``Ground Truth/`` folders, Kvasir-SEG's archive, HeadCT's Kaggle CSV). The primary layout wins
    whenever its own ``detect`` path (if any) exists.
    """
    base = {k: v for k, v in m.layout.items() if k != "variants"}
    if base.get("detect") and (root / base["detect"]).exists():
        return base
    for variant in m.layout.get("variants") or []:
        if (root / variant["detect"]).exists():
            return {**base, **variant}
    return base
