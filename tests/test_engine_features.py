"""Feature cache: exact features, a key that changes with every input, safe concurrent builds."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_engine import profile_at, shared_root, small_data

from glocal_lib.config import load_preset
from glocal_lib.data import AnomalyDataset
from glocal_lib.engine import DataInfo, FeatureCache, select_categories
from glocal_lib.engine.features import cache_key
from glocal_lib.engine.modeling import build_detector

CATS = ["bottle", "cable"]
WEIGHTS = {"weights": "random"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    base = shared_root(tmp_path_factory)
    prof = profile_at(base, "res-features")
    data = small_data(prof, "mvtec", CATS)
    model = build_detector(load_preset("glocalclip-released"), prof, seed=111)
    return base, prof, data, model


def _key(model, data, **kw) -> str:
    args = {"backbone": "glocal-tiny-8", "weights_id": WEIGHTS, "image_size": int(model.image_size),
            "precision": "fp32", "dtype": "fp32", "device": "cpu", **kw}
    return cache_key(model, data, **args)[0]


def test_cached_features_equal_a_direct_encoding(setup, tmp_path: Path) -> None:
    _, prof, data, model = setup
    cache = FeatureCache(tmp_path / "c32", dtype="fp32")
    feats = cache.get(model, data, backbone=prof.backbone, weights_id=WEIGHTS, batch_size=5)
    ds = AnomalyDataset(data.root, data.index, image_size=prof.image_size)
    rows = [3, 0, len(ds) - 1]  # out of order on purpose
    images = torch.stack([ds[i]["image"] for i in rows])
    direct = model.encode_image(images)
    got, labels, masks = feats.batch(rows)
    torch.testing.assert_close(got.global_emb, direct.global_emb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.patch, direct.patch, rtol=1e-5, atol=1e-5)
    assert labels.tolist() == [int(data.index.at[i, "label"]) for i in rows]
    torch.testing.assert_close(masks, torch.stack([ds[i]["mask"] for i in rows]))
    # released aliasing: the four local layers are one tensor on disk (deduplicated), four in memory
    assert feats.slots == [0, 0, 0, 0] and feats.patch.shape[1] == 1
    # fp16 storage: half the bytes, values within fp16 rounding
    half = FeatureCache(tmp_path / "c16", dtype="fp16").get(model, data, backbone=prof.backbone,
                                                             weights_id=WEIGHTS)
    g16 = half.batch(rows)[0]
    torch.testing.assert_close(g16.patch, direct.patch, rtol=2e-3, atol=2e-3)
    assert half.patch.dtype == np.float16


def test_true_multi_layer_features_are_stored_separately(setup, tmp_path: Path) -> None:
    _, prof, data, _ = setup
    model = build_detector(load_preset("glocalclip-released", alias_final_layer=False), prof, seed=111)
    feats = FeatureCache(tmp_path, dtype="fp32").get(model, select_categories(data, ["bottle"]),
                                                     backbone=prof.backbone, weights_id=WEIGHTS)
    assert feats.slots == [0, 1, 2, 3]
    g = feats.batch([0])[0]
    assert not torch.equal(g.patch[:, 0], g.patch[:, 3])


def test_cache_key_changes_when_a_file_is_replaced(setup, tmp_path: Path) -> None:
    _, _, data, model = setup
    copy = DataInfo(data.key, tmp_path / "copy", data.index, data.eval_level, data.index_hash)
    shutil.copytree(data.root, copy.root)
    before = _key(model, copy)
    target = copy.root / data.index["image_path"].iloc[0]
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    assert _key(model, copy) != before


def test_cache_key_changes_with_every_input(setup) -> None:
    _, prof, data, model = setup
    ref = _key(model, data)
    assert _key(model, data) == ref  # stable
    others = {
        "image size": _key(build_detector(load_preset("glocalclip-released"), prof.replace(image_size=84),
                                          seed=111), data),
        "aliasing": _key(build_detector(load_preset("glocalclip-released", alias_final_layer=False), prof,
                                        seed=111), data),
        "vv start": _key(build_detector(load_preset("glocalclip-released", vv_start_layer=4), prof, seed=111),
                         data),
        "attention": _key(build_detector(load_preset("glocalclip-released", attention="kk"), prof, seed=111),
                          data),
        "global ln_post": _key(build_detector(load_preset("glocalclip-released", global_ln_post=True), prof,
                                              seed=111), data),
        "random backbone seed": _key(build_detector(load_preset("glocalclip-released"), prof.replace(backbone_seed=5),
                                                    seed=111), data),
        "index": _key(model, select_categories(data, ["bottle"])),
        "weights": _key(model, data, weights_id={"weights": "x.pt", "sha256": "ab"}),
        "precision": _key(model, data, precision="bf16"),
        "dtype": _key(model, data, dtype="fp16"),
    }
    assert ref not in others.values()
    assert len(set(others.values())) == len(others)
    # text-side options do not change the vision features: the cache is shared across them
    text_only = build_detector(load_preset("glocalclip-released", gcl_lambda=0.1, normal_length=5), prof, seed=111)
    assert _key(text_only, data) == ref


def test_concurrent_builders_build_once_and_stale_temporaries_are_ignored(setup, tmp_path: Path) -> None:
    _, prof, data, model = setup
    data = select_categories(data, ["bottle"])
    name = _key(model, data)
    # leftovers of a builder killed with kill -9: a temporary folder and a half-written final folder
    (tmp_path / f".{name}.tmp-99999").mkdir(parents=True)
    (tmp_path / f".{name}.tmp-99999" / "global.npy").write_bytes(b"garbage")
    (tmp_path / name).mkdir()
    caches = [FeatureCache(tmp_path, dtype="fp32") for _ in range(3)]
    results: list = [None] * 3
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = caches[i].get(model, data, backbone=prof.backbone, weights_id=WEIGHTS)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(c.builds for c in caches) == 1
    assert not list(tmp_path.glob(f".{name}.tmp-*"))
    for r in results:
        np.testing.assert_array_equal(np.asarray(r.global_emb), np.asarray(results[0].global_emb))
    assert len(results[0]) == len(data.index)
