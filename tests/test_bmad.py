"""The BMAD layout (LiverCT, RESC, BrainMRI with masks; KAnoCLIP Table 2): stand-ins index to their
truth, masks pair by name (never by sort position), a wrong tree gives errors naming the folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glocal_lib.data import synthetic
from glocal_lib.data.converters import convert
from glocal_lib.data.registry import load_manifest

KEYS = ["liverct", "resc", "bmad_brain"]


@pytest.mark.parametrize("key", KEYS)
def test_standin_indexes_to_its_truth(tmp_path, key):
    truth = synthetic.make_standin(key, tmp_path, scale="tiny", seed=0)
    m = load_manifest(key)
    df, issues = convert(m, synthetic.standin_root(key, tmp_path))
    assert issues == []
    assert m.converter == "bmad" and m.domain == "medical" and m.eval_level == "both"
    row = truth.iloc[0]
    assert (df["label"] == 0).sum() == row["test_normal"] and (df["label"] == 1).sum() == row["test_anomalous"]
    anom = df[df["label"] == 1]
    assert (anom["mask_path"].str.replace("anomaly_mask", "img") == anom["image_path"]).all()
    assert (df.loc[df["label"] == 0, "mask_path"] == "").all()


def _png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


def test_pairs_by_name_and_reports_a_bad_tree(tmp_path):
    root = tmp_path / "Liver_AD"
    for n in ("a", "c"):
        _png(root / f"test/good/img/{n}.png")
    for n in ("b", "d"):
        _png(root / f"test/Ungood/img/{n}.png")
    _png(root / "test/Ungood/anomaly_mask/d.png", 255)  # b has no mask; sort order would give b -> d
    _png(root / "test/Ungood/anomaly_mask/e.png", 255)  # a mask without an image
    _png(root / "test/other/img/x.png")
    _png(root / "valid/good/img/v.png")  # other splits are not indexed
    df, issues = convert(load_manifest("liverct"), root)
    assert sorted(df["image_path"]) == ["test/Ungood/img/b.png", "test/Ungood/img/d.png", "test/good/img/a.png",
                                        "test/good/img/c.png"]
    masks = dict(zip(df["image_path"], df["mask_path"]))
    assert masks["test/Ungood/img/d.png"] == "test/Ungood/anomaly_mask/d.png"
    assert masks["test/Ungood/img/b.png"] == ""
    kinds = {(i.kind, i.file) for i in issues}
    assert ("missing_mask", "test/Ungood/img/b.png") in kinds
    assert ("unpaired_mask", "test/Ungood/anomaly_mask/e.png") in kinds
    assert ("unknown_folder", "test/other/") in kinds


def test_bmad_download_layout_with_label_folders(tmp_path):
    root = tmp_path / "Retina_RESC_AD"
    _png(root / "test/good/img/1.png")
    _png(root / "test/Ungood/img/2.png")
    _png(root / "test/Ungood/label/2.png", 255)
    df, issues = convert(load_manifest("resc"), root)
    assert issues == [] and list(df["mask_path"]) == ["test/Ungood/label/2.png", ""]
