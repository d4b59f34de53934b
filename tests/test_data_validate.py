"""Validation: one injected fault per kind -> the intended record and message; fast on MVTec-size trees."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from glocal_lib.data import build_index, validate_dataset
from glocal_lib.data.synthetic import generate_standin
from glocal_lib.errors import DataError


@pytest.fixture(scope="module")
def mvtec_standin(tmp_path_factory):
    return generate_standin("mvtec", tmp_path_factory.mktemp("mv") / "mvtec", seed=1, image_size=32)


@pytest.fixture
def tree(mvtec_standin, tmp_path):
    """A fresh copy of the MVTec stand-in to damage, and its expected counts."""
    root = tmp_path / "mvtec"
    shutil.copytree(mvtec_standin.root, root)
    return root, mvtec_standin.counts[["category", "test_normal", "test_anomalous"]]


def _first(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[0]


def _kinds(report) -> dict[str, list]:
    out: dict[str, list] = {}
    for i in report.issues:
        out.setdefault(i.kind, []).append(i)
    return out


def test_clean_standin_passes_and_summary_is_a_table(tree):
    root, expected = tree
    report = validate_dataset("mvtec", root, expected=expected)
    assert report.ok and not report.issues
    s = report.summary()
    assert list(s.columns) == ["category", "expected_normal", "found_normal", "expected_anomalous",
                               "found_anomalous", "status"]
    assert (s["status"] == "ok").all() and len(s) == 15
    assert list(report.table().columns) == ["severity", "kind", "file", "message"]


def test_against_real_manifest_counts_reports_mismatch(tree):
    root, _ = tree
    with pytest.raises(DataError, match=r"bottle/: found \d+ normal / \d+ anomalous test images, the manifest "
                                        r"\(\[C\]\) expects 20 / 63"):
        validate_dataset("mvtec", root)


def test_missing_mask(tree):
    root, expected = tree
    mask = _first(root, "bottle/ground_truth/*/*_mask.png")
    mask.unlink()
    image = f"bottle/test/{mask.parent.name}/{mask.name.replace('_mask', '')}"
    report = validate_dataset("mvtec", root, expected=expected, raise_on_error=False)
    (issue,) = _kinds(report)["missing_mask"]
    assert issue.severity == "error" and issue.file == image
    assert "no mask named" in issue.message and "add the mask" in issue.message
    with pytest.raises(DataError, match="missing_mask"):
        build_index("mvtec", root)


def test_extra_stray_image_in_mask_folder_is_an_unpaired_mask(tree):
    root, expected = tree
    mask = _first(root, "bottle/ground_truth/*/*_mask.png")
    shutil.copy(mask, mask.parent / "999_mask.png")
    report = validate_dataset("mvtec", root, expected=expected, raise_on_error=False)
    (issue,) = _kinds(report)["unpaired_mask"]
    assert issue.file.endswith("999_mask.png") and "mask without an image" in issue.message
    assert "shift every later image/mask pair" in issue.message


def test_extra_stray_image_in_test_folder_changes_the_count(tree):
    root, expected = tree
    img = _first(root, "cable/test/good/*.png")
    shutil.copy(img, img.parent / "extra_copy.png")
    report = validate_dataset("mvtec", root, expected=expected, raise_on_error=False)
    (issue,) = _kinds(report)["wrong_count"]
    n = int(expected.set_index("category").loc["cable", "test_normal"])
    assert issue.file == "cable/" and f"found {n + 1} normal" in issue.message


def test_non_image_stray_file_is_a_warning(tree):
    root, expected = tree
    (root / "bottle/test/good/Thumbs.db").write_bytes(b"junk")
    report = validate_dataset("mvtec", root, expected=expected)  # warnings do not raise
    (issue,) = _kinds(report)["stray_file"]
    assert issue.severity == "warning" and issue.file == "bottle/test/good/Thumbs.db"


def test_corrupt_image(tree):
    root, expected = tree
    img = _first(root, "hazelnut/test/good/*.png")
    img.write_bytes(b"this is not a png")
    with pytest.raises(DataError) as err:
        validate_dataset("mvtec", root, expected=expected)
    assert "corrupt_image" in str(err.value) and img.relative_to(root).as_posix() in str(err.value)
    assert "re-extract it from the archive" in str(err.value)


def test_truncated_image_needs_the_deep_check(tree):
    root, expected = tree
    img = _first(root, "wood/test/good/*.png")
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])
    assert validate_dataset("mvtec", root, expected=expected).ok  # header still readable
    deep = validate_dataset("mvtec", root, expected=expected, deep=True, raise_on_error=False)
    assert [i.file for i in _kinds(deep)["corrupt_image"]] == [img.relative_to(root).as_posix()]


def test_mask_size_mismatch(tree):
    root, expected = tree
    mask = _first(root, "tile/ground_truth/*/*_mask.png")
    with Image.open(mask) as im:
        im.resize((im.width + 3, im.height)).save(mask)
    report = validate_dataset("mvtec", root, expected=expected, raise_on_error=False)
    (issue,) = _kinds(report)["size_mismatch"]
    assert issue.file == mask.relative_to(root).as_posix() and "mask is 35x32 but its image" in issue.message


def test_wrong_count(tree):
    root, expected = tree
    _first(root, "zipper/test/good/*.png").unlink()
    with pytest.raises(DataError, match="zipper/: found .* the expected counts expects"):
        validate_dataset("mvtec", root, expected=expected)


def test_unknown_category_folder_and_index_row(tree):
    root, expected = tree
    shutil.copytree(root / "bottle", root / "bottle_old")
    report = validate_dataset("mvtec", root, expected=expected)
    (issue,) = _kinds(report)["unknown_category"]
    assert issue.severity == "warning" and issue.file == "bottle_old/" and "not a category" in issue.message
    with pytest.warns(UserWarning, match="bottle_old"):
        idx = build_index("mvtec", root)
    idx.loc[0, "category"] = "bottel"
    with pytest.raises(DataError, match="category 'bottel' is not one of"):
        validate_dataset("mvtec", root, index=idx, check_counts=False)


def test_absolute_path_in_index(tree):
    root, expected = tree
    idx = build_index("mvtec", root)
    idx.loc[0, "image_path"] = str(root / idx.loc[0, "image_path"])
    with pytest.raises(DataError, match="absolute paths"):
        validate_dataset("mvtec", root, index=idx)


def test_non_binary_and_empty_masks_reported_by_deep_check(tree):
    root, expected = tree
    m1, m2 = sorted(root.glob("screw/ground_truth/*/*_mask.png"))[:2]
    arr = np.asarray(Image.open(m1).convert("L")).copy()
    arr[arr > 0] = 3
    arr[0, 0] = 200
    Image.fromarray(arr).save(m1)
    Image.fromarray(np.zeros_like(arr)).save(m2)
    kinds = _kinds(validate_dataset("mvtec", root, expected=expected, deep=True))
    (nb,) = kinds["non_binary_mask"]
    assert nb.file.endswith(m1.name) and "binarised with > 0" in nb.message and "3, 200" in nb.message
    (em,) = kinds["empty_mask"]
    assert em.file.endswith(m2.name)


def _mvtec_sized_tree(root: Path) -> pd.DataFrame:
    """~1.7k test images + masks in MVTec's layout with the real per-category counts (tiny files)."""
    from glocal_lib.data import load_manifest

    img, mask = root / "_img.png", root / "_mask.png"
    root.mkdir(parents=True)
    Image.fromarray(np.full((24, 24, 3), 128, np.uint8)).save(img)
    Image.fromarray(np.full((24, 24), 255, np.uint8)).save(mask)
    counts = load_manifest("mvtec").expected_counts()
    for r in counts.itertuples():
        base = root / r.category
        (base / "train/good").mkdir(parents=True)
        (base / "test/good").mkdir(parents=True)
        (base / "test/crack").mkdir()
        (base / "ground_truth/crack").mkdir(parents=True)
        for i in range(int(r.test_normal)):
            shutil.copyfile(img, base / f"test/good/{i:03d}.png")
        for i in range(int(r.test_anomalous)):
            shutil.copyfile(img, base / f"test/crack/{i:03d}.png")
            shutil.copyfile(mask, base / f"ground_truth/crack/{i:03d}_mask.png")
    img.unlink()
    mask.unlink()
    return counts


def test_indexing_and_size_checking_an_mvtec_sized_tree_takes_seconds(tmp_path):
    root = tmp_path / "mvtec"
    _mvtec_sized_tree(root)
    t0 = time.perf_counter()
    idx = build_index("mvtec", root)
    t1 = time.perf_counter()
    report = validate_dataset("mvtec", root)  # real manifest counts, header-only size checks
    t2 = time.perf_counter()
    assert len(idx) == 1725 and report.ok
    assert t1 - t0 < 5, f"indexing took {t1 - t0:.1f}s"
    assert t2 - t1 < 20, f"checking took {t2 - t1:.1f}s"
