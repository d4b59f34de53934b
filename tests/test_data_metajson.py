"""The released meta.json format: read (absolute paths tolerated), write, and round trips."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from glocal_lib.data import build_index, read_meta_json, to_meta_dict, write_meta_json
from glocal_lib.data.synthetic import generate_standin
from glocal_lib.errors import DataError

KEYS = ["mvtec", "btad", "visa", "dagm", "headct", "brainmri", "covid19", "isic", "kvasir", "endo", "tn3k"]


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    base = tmp_path_factory.mktemp("meta")
    return {k: generate_standin(k, base / k, seed=5, image_size=16) for k in KEYS}


@pytest.mark.parametrize("key", KEYS)
def test_index_to_meta_to_index_round_trip(standins, key, tmp_path):
    root = standins[key].root
    idx = build_index(key, root)
    path = write_meta_json(idx, tmp_path / "meta.json", key) if key != "dagm" else None
    if key == "dagm":
        with pytest.warns(UserWarning, match="DAGM_KaggleUpload"):
            path = write_meta_json(idx, tmp_path / "meta.json", key)
    back = read_meta_json(path, key, root=root)
    pd.testing.assert_frame_equal(back, idx)


def _released_style_meta(root, key, absolute_prefix=None):
    """What the released generate_dataset_json scripts would write, rebuilt from the files on disk.

    Written independently of metajson.py: lists folders the way the released scripts do
    (sorted names; normal folder by name), but pairs masks by stem so the reference is correct.
    """
    def p(rel):
        return f"{absolute_prefix}/{rel}" if absolute_prefix else rel

    info = {"train": {}, "test": {}}
    if key == "kvasir":
        recs = [dict(img_path=p(f"images/{n}"), mask_path=p(f"masks/{n}"), cls_name="colon", specie_name="",
                     anomaly=1) for n in sorted(os.listdir(root / "images"))]
        info["test"]["colon"] = recs
    elif key == "btad":
        for cat in ["01", "02", "03"]:
            recs = []
            for sp in sorted(os.listdir(root / cat / "test")):
                masks = {m.rsplit(".", 1)[0]: m for m in os.listdir(root / cat / "ground_truth" / sp)} \
                    if sp != "ok" else {}
                for n in sorted(os.listdir(root / cat / "test" / sp)):
                    mp = f"{cat}/ground_truth/{sp}/{masks[n.rsplit('.', 1)[0]]}" if sp != "ok" else ""
                    recs.append(dict(img_path=f"{cat}/test/{sp}/{n}", mask_path=mp, cls_name=cat, specie_name=sp,
                                     anomaly=int(sp != "ok")))
            info["test"][cat] = recs
    elif key == "dagm":
        info = {"Train": {}, "Test": {}}
        for cat in [f"Class{i}" for i in range(1, 11)]:
            labels = [f for f in os.listdir(root / cat / "Test" / "Label") if f.endswith(".PNG")]
            anom = {f.split("_")[0] + ".PNG": f for f in labels}
            imgs = sorted(f for f in os.listdir(root / cat / "Test") if f.endswith(".PNG"))
            info["Test"][cat] = [dict(img_path=f"{cat}/Test/{n}",
                                      mask_path=f"{cat}/Test/Label/{anom[n]}" if n in anom else "",
                                      cls_name=cat, specie_name="", anomaly=int(n in anom)) for n in imgs]
    return info


@pytest.mark.parametrize("key", ["kvasir", "btad", "dagm"])
def test_released_meta_reads_like_our_index(standins, key, tmp_path):
    root = standins[key].root
    meta = _released_style_meta(root, key)
    (tmp_path / "meta.json").write_text(json.dumps(meta, indent=4))
    got = read_meta_json(tmp_path / "meta.json", key, root=root)
    idx = build_index(key, root)
    cols = ["image_path", "mask_path", "category", "label", "defect_type", "split"]
    pd.testing.assert_frame_equal(got.sort_values(cols[:1]).reset_index(drop=True),
                                  idx.sort_values(cols[:1]).reset_index(drop=True))
    # and back: our writer reproduces the released test section record for record
    section = "Test" if key == "dagm" else "test"
    ours = to_meta_dict(got, key)[section]
    for cat, recs in meta[section].items():
        by_path = {r["img_path"]: r for r in ours[cat]}
        assert all(by_path[r["img_path"]] == r for r in recs) and len(recs) == len(ours[cat])


def test_absolute_paths_from_another_machine_become_relative(standins, tmp_path):
    root = standins["kvasir"].root
    meta = _released_style_meta(root, "kvasir", absolute_prefix="/home/jiyul/SPS_JY/GlocalCLIP/data/kvasir")
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    got = read_meta_json(tmp_path / "meta.json", "kvasir", root=root)
    assert got["image_path"].tolist() == build_index("kvasir", root)["image_path"].tolist()
    assert all(p.startswith("masks/") for p in got["mask_path"])


def test_absolute_paths_resolved_by_root_name_when_files_are_absent(tmp_path):
    root = tmp_path / "kvasir"
    root.mkdir()
    meta = {"train": {}, "test": {"colon": [dict(img_path="/x/data/kvasir/images/a.jpg",
                                                 mask_path="/x/data/kvasir/masks/a.jpg", cls_name="colon",
                                                 specie_name="", anomaly=1)]}}
    (root / "meta.json").write_text(json.dumps(meta))
    got = read_meta_json(root, "kvasir")
    assert got.loc[0, "image_path"] == "images/a.jpg" and got.loc[0, "mask_path"] == "masks/a.jpg"


def test_bad_meta_json_errors(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"train": {}, "test": {"wood_x": [
        dict(img_path="a.png", mask_path="", cls_name="wood_x", specie_name="good", anomaly=0)]}}))
    with pytest.raises(DataError, match="unknown categories"):
        read_meta_json(tmp_path, "mvtec")
    with pytest.raises(DataError, match="no 'Test' section|no 'test' section"):
        (tmp_path / "meta.json").write_text(json.dumps({"train": {}}))
        read_meta_json(tmp_path, "mvtec")
    with pytest.raises(DataError, match="not under the dataset root"):
        (tmp_path / "meta.json").write_text(json.dumps({"test": {"wood": [
            dict(img_path="/a/b/c.png", mask_path="", cls_name="wood", specie_name="good", anomaly=0)]}}))
        read_meta_json(tmp_path, "mvtec")
