"""Converters: every native layout -> the exact rows of its stand-in; pairing by name, strict folders."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from glocal_lib.data import DATASET_KEYS, build_index
from glocal_lib.data.converters import INDEX_COLUMNS
from glocal_lib.data.synthetic import generate_standin
from glocal_lib.errors import DataError

COLS = ["image_path", "mask_path", "category", "label", "defect_type"]


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    """Tiny stand-ins of all 17 datasets, generated once for this module."""
    base = tmp_path_factory.mktemp("standins")
    return {key: generate_standin(key, base / key, seed=3, image_size=32) for key in DATASET_KEYS}


@pytest.mark.parametrize("key", DATASET_KEYS)
def test_converter_reproduces_standin_rows_and_counts(standins, key):
    res = standins[key]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean stand-in must index without any warning
        df = build_index(key, res.root)
    assert list(df.columns) == INDEX_COLUMNS
    assert set(df["split"]) == {"test"}
    truth = pd.DataFrame([(f.image_path, f.mask_path, f.category, f.label, f.defect_type)
                          for f in res.files if f.split == "test"], columns=COLS)
    key_cols = ["category", "image_path"]
    got = df[COLS].sort_values(key_cols).reset_index(drop=True)
    want = truth.sort_values(key_cols).reset_index(drop=True).astype({"label": "int64"})
    pd.testing.assert_frame_equal(got, want)
    counts = df.groupby("category")["label"].agg(n=lambda s: int((s == 0).sum()), a="sum")
    for r in res.counts.itertuples():
        assert (counts.loc[r.category, "n"], counts.loc[r.category, "a"]) == (r.test_normal, r.test_anomalous)
    assert not any(p.startswith("/") for p in df["image_path"])


def _png(path: Path, size=(8, 6), value=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, np.uint8)).save(path)


def test_masks_are_paired_by_name_not_sort_position(tmp_path):
    """Sorted images 1,10,2 vs sorted masks 10_mask,1_mask,2_mask: zipping would mis-pair them."""
    root = tmp_path / "mvtec"
    for cat in ["bottle"]:
        _png(root / cat / "test/good/000.png")
        (root / cat / "train/good").mkdir(parents=True)
        for n in ["1", "2", "10"]:
            _png(root / cat / f"test/broken/{n}.png")
            _png(root / cat / f"ground_truth/broken/{n}_mask.png", value=255)
    df = build_index("mvtec", root, categories=["bottle"])
    pairs = dict(zip(df["image_path"], df["mask_path"]))
    for n in ["1", "2", "10"]:
        assert pairs[f"bottle/test/broken/{n}.png"] == f"bottle/ground_truth/broken/{n}_mask.png"
    assert pairs["bottle/test/good/000.png"] == ""


def test_missing_root_names_folder_layout_and_download(tmp_path):
    with pytest.raises(DataError) as err:
        build_index("mvtec", tmp_path / "no_such_dir")
    msg = str(err.value)
    assert "no_such_dir" in msg and "ground_truth/<defect_type>/NNN_mask.png" in msg and "mvtec.com" in msg


def test_root_pointing_at_wrong_folder_is_explained(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match="(?s)no test images found.*Expected layout"):
        build_index("visa", tmp_path / "data")


def test_br35h_pred_folder_is_excluded_with_a_warning(standins, tmp_path):
    import shutil

    root = tmp_path / "br35h"
    shutil.copytree(standins["br35h"].root, root)
    _png(root / "br35" / "pred" / "pred1.jpg")
    with pytest.warns(UserWarning, match="pred/ holds 60 unlabelled images"):
        df = build_index("br35h", root)
    assert not df["image_path"].str.contains("pred").any()
    assert int(df["label"].sum()) == int(standins["br35h"].counts["test_anomalous"].sum())


def _tree(root: Path, files: dict[str, int]) -> None:
    for rel, value in files.items():
        _png(root / rel, value=value)


# Other common shapes of the same data (manifest `layout.variants`): tree -> expected (image, mask, label)
VARIANTS = {
    "clinicdb": ({"Original/1.tif": 9, "Original/2.tif": 9, "Ground Truth/1.tif": 255, "Ground Truth/2.tif": 255},
                 [("Original/1.tif", "Ground Truth/1.tif", 1), ("Original/2.tif", "Ground Truth/2.tif", 1)]),
    "kvasir": ({"Kvasir-SEG/images/a1.jpg": 9, "Kvasir-SEG/masks/a1.jpg": 255},
               [("Kvasir-SEG/images/a1.jpg", "Kvasir-SEG/masks/a1.jpg", 1)]),
    "isic": ({"ISBI2016_ISIC_Part1_Test_Data/ISIC_0000001.jpg": 9,
              "ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_0000001_Segmentation.png": 255},
             [("ISBI2016_ISIC_Part1_Test_Data/ISIC_0000001.jpg",
               "ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_0000001_Segmentation.png", 1)]),
    "br35h": ({"no/no1.jpg": 9, "yes/y1.jpg": 9}, [("no/no1.jpg", "", 0), ("yes/y1.jpg", "", 1)]),
    "brainmri": ({"no/1 no.jpeg": 9, "yes/Y1.JPG": 9}, [("no/1 no.jpeg", "", 0), ("yes/Y1.JPG", "", 1)]),
    "covid19": ({"COVID-19 Radiography Database/NORMAL/N1.png": 9, "COVID-19 Radiography Database/COVID-19/C1.png": 9},
                [("COVID-19 Radiography Database/COVID-19/C1.png", "", 1),
                 ("COVID-19 Radiography Database/NORMAL/N1.png", "", 0)]),
}


@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_layout_variants(key, tmp_path):
    files, want = VARIANTS[key]
    _tree(tmp_path / key, files)
    df = build_index(key, tmp_path / key)
    got = sorted(zip(df["image_path"], df["mask_path"], df["label"]))
    assert got == sorted(want)


def test_headct_kaggle_csv_variant(tmp_path):
    root = tmp_path / "headct"
    for i in range(4):
        _png(root / f"head_ct/head_ct/{i:03d}.png")
    (root / "labels.csv").write_text("id, hemorrhage\n0,1\n1,1\n2,0\n3,0\n")
    df = build_index("headct", root)
    assert df["image_path"].tolist() == [f"head_ct/head_ct/{i:03d}.png" for i in range(4)]
    assert df["label"].tolist() == [1, 1, 0, 0]
    assert df["defect_type"].tolist() == ["hemorrhage", "hemorrhage", "good", "good"]


def test_covid_wrong_case_normal_folder(standins, tmp_path):
    import shutil

    root = tmp_path / "covid19"
    shutil.copytree(standins["covid19"].root, root)
    (root / "covid" / "NORMAL").rename(root / "covid" / "Normal")
    with pytest.raises(DataError, match="spelled NORMAL"):
        build_index("covid19", root)


def test_endo_stray_root_file_warns_and_extra_image_folder_errors(standins, tmp_path):
    import shutil

    root = tmp_path / "endo"
    shutil.copytree(standins["endo"].root, root)
    (root / ".standin.json").write_text("{}")  # hidden files (engine markers, .DS_Store) are ignored
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_index("endo", root)
    (root / "README.txt").write_text("x")
    with pytest.warns(UserWarning, match="endoTect.py"):
        df = build_index("endo", root)
    assert len(df) == standins["endo"].counts["test_anomalous"].sum()
    (root / "images_copy").mkdir()
    with pytest.raises(DataError, match="several image folders"):
        build_index("endo", root)


def test_isic_anomalyclip_mask_folder_variant(tmp_path):
    root = tmp_path / "ISIC"
    for i in ["0000001", "0000002"]:
        _png(root / f"skin/test/defect/ISIC_{i}.jpg".replace(".jpg", ".png"))
        _png(root / f"skin/ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_{i}_Segmentation.png", value=255)
    df = build_index("isic", root, strict=False)
    assert df["mask_path"].tolist() == [f"skin/ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_{i}_Segmentation.png"
                                        for i in ["0000001", "0000002"]]
    assert set(df["label"]) == {1}


def test_category_subset_and_unknown_category(standins):
    df = build_index("btad", standins["btad"].root, categories=["02"])
    assert set(df["category"]) == {"02"}
    with pytest.raises(DataError, match="not BTAD"):
        build_index("btad", standins["btad"].root, categories=["04"])
