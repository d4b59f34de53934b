"""The engine's image-based path (feature_source = "images"): chosen by what the model declares, same
run/resume/checkpoint/output formats, cached static features equal to live ones, deterministic mosaics,
and a run killed with SIGKILL resumes to exactly the uninterrupted result."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_engine import SMALL, kill_after_first_epoch, profile_at, shared_root, small_data
from PIL import Image

from glocal_lib.engine import EvalSpec, TrainSpec, load_run, run_eval, run_train, train_run_dir
from glocal_lib.engine.features import FeatureCache, LiveFeatures, feature_source
from glocal_lib.engine.images import ImageItems, ImageSource, Mosaic, mosaic_images, mosaic_tiles
from glocal_lib.engine.modeling import build_detector, model_config
from glocal_lib.model import read_checkpoint

CATS = ["bottle"]  # 5 images of the MVTec AD stand-in (enough for mosaics of 4)
ADA = {"ensemble": "minimal"}  # one sentence per state: the text tower dominates a step on the tiny tower
PRESET = "adaclip-glocal-protocol"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_root(tmp_path_factory)


def _spec(**kw: object) -> TrainSpec:
    return TrainSpec("ada", preset=PRESET, overrides=ADA, **kw)


def _prompts(run_dir: Path) -> list[torch.Tensor]:
    state = read_checkpoint(load_run(run_dir).checkpoint(None))["prompts"]
    return [state[k] for k in sorted(state)]


def test_source_is_chosen_by_what_the_model_declares(base: Path) -> None:
    prof = profile_at(base, "res-img", epochs=1)
    data = small_data(prof, "mvtec", CATS)
    ada = build_detector(model_config(PRESET, ADA, precision="fp32"), prof, seed=1)
    glocal = build_detector(model_config("glocalclip-released", SMALL, precision="fp32"), prof, seed=1)
    assert isinstance(feature_source(ada, data, prof, use_cache=True, batch_size=4), ImageSource)
    assert isinstance(feature_source(ada, data, prof, use_cache=False, batch_size=4), ImageSource)
    frozen = feature_source(glocal, data, prof, use_cache=True, batch_size=4)
    assert not isinstance(frozen, ImageSource) and type(frozen).__name__ == "CachedFeatures"
    assert isinstance(feature_source(glocal, data, prof, use_cache=False, batch_size=4), LiveFeatures)
    assert FeatureCache  # the frozen cache type stays the engine's public name
    # cached static features equal the live ones (same images, same batch composition)
    cached = feature_source(ada, data, prof, use_cache=True, batch_size=4)
    live = feature_source(ada, data, prof, use_cache=False, batch_size=4)
    order = np.arange(len(data.index))[::-1]
    for (r1, b1, y1, m1), (r2, b2, y2, m2) in zip(cached.iter_batches(order, 2), live.iter_batches(order, 2)):
        assert np.array_equal(r1, r2) and torch.equal(b1.images, b2.images) and torch.equal(y1, y2)
        assert torch.equal(m1, m2) and torch.allclose(b1.static["f0"], b2.static["f0"], atol=1e-5)


def test_mosaic_tiling_label_and_determinism(base: Path, tmp_path: Path) -> None:
    a = Image.new("RGB", (4, 2), (255, 0, 0))
    tiles = [a, Image.new("RGB", (4, 2), (0, 255, 0)), Image.new("RGB", (4, 2), (0, 0, 255)),
             Image.new("RGB", (4, 2), (9, 9, 9))]
    masks = [np.zeros((2, 4), bool), np.ones((2, 4), bool), np.zeros((2, 4), bool), np.eye(2, 4, dtype=bool)]
    img, mask = mosaic_images(tiles, masks)
    arr = np.asarray(img)
    assert img.size == (8, 4)
    assert (arr[:2, :4] == (255, 0, 0)).all() and (arr[:2, 4:] == (0, 255, 0)).all()
    assert (arr[2:, :4] == (0, 0, 255)).all() and (arr[2:, 4:] == (9, 9, 9)).all()
    assert np.array_equal(mask[:2, 4:], masks[1]) and np.array_equal(mask[2:, 4:], masks[3]) and not mask[:2, :4].any()
    rows = np.arange(5)
    aug = Mosaic(rate=0.5, seed=3)
    draws = [mosaic_tiles(rows, i, aug, e) for e in range(4) for i in range(5)]
    assert draws == [mosaic_tiles(rows, i, aug, e) for e in range(4) for i in range(5)]  # deterministic
    assert any(d is None for d in draws) and any(d is not None for d in draws)
    assert all(len(set(d)) == 4 for d in draws if d is not None)
    assert mosaic_tiles(rows[:3], 0, Mosaic(rate=1.0, seed=0), 0) is None  # fewer than 4: never a mosaic
    prof = profile_at(base, "res-img", epochs=1)
    data = small_data(prof, "mvtec", CATS)
    normal = int(np.flatnonzero(data.index["label"].to_numpy() == 0)[0])
    released = ImageItems(data, 56, Mosaic(rate=1.0, seed=0))[normal]
    any_tile = ImageItems(data, 56, Mosaic(rate=1.0, seed=0, label="any_tile"))[normal]
    assert released["augmented"] and released["label"] == 0  # the indexed item's label (released quirk)
    assert torch.equal(released["image"], any_tile["image"])
    assert any_tile["label"] == int(released["mask"].any())  # stand-in anomalies all have masks


def test_image_run_trains_evaluates_and_keeps_the_formats(base: Path) -> None:
    prof = profile_at(base, "res-img", epochs=2)
    data = small_data(prof, "mvtec", CATS)
    run_dir = run_train(_spec(), prof, progress=False, data=data)
    run = load_run(run_dir)
    assert run.done and run.config["identity"]["features"] == f"images+static-cache-{prof.cache_dtype}"
    spec = run.config["spec"]
    assert spec["epochs"] == 2 and spec["batch_size"] == 1 and spec["lr"] == 0.01  # the method's recipe, capped
    losses = run.losses()
    assert len(losses) == 2 * len(data.index) and np.isfinite(losses["total"]).all()
    assert (run_dir / "prompt_embeddings.npz").is_file() and (run_dir / "checkpoints" / "epoch_02.pt").is_file()
    ev = run_eval(EvalSpec("ada@mvtec", "mvtec", train_run=run_dir, samples_per_category=1), prof,
                  progress=False, data=data)
    assert load_run(ev).done and (ev / "metrics.json").is_file() and (ev / "scores.csv").is_file()
    # without the static cache: the same losses (f0 recomputed live for every batch)
    live = run_train(_spec(use_cache=False), prof, progress=False, data=data)
    assert live != run_dir
    assert np.allclose(load_run(live).losses()["total"], losses["total"], atol=1e-4)


@pytest.mark.parametrize("select", ["last_epoch", "best_epoch"])
def test_image_run_kill_minus_9_then_resume(base: Path, select: str) -> None:
    """SIGKILL after the first epoch; the resumed run ends with bit-identical trained tensors and losses
    (mosaics and k-means are seeded per item and call, so the resumed epochs see the same inputs); a
    best-epoch run (validated on ColonDB after every epoch) also ends with the same selection record."""
    epochs = 3
    full = profile_at(base, f"res-img-full-{select}", epochs=epochs)
    killed = profile_at(base, f"res-img-kill-{select}", epochs=epochs)
    data = small_data(full, "mvtec", CATS)
    kw = {"validation": "colondb", "preset": "adaclip-released"} if select == "best_epoch" else {}
    spec = dataclasses.replace(_spec(), **kw)
    ref = run_train(spec, full, progress=False, data=data)
    run_dir = train_run_dir(spec, killed, data)
    kill_after_first_epoch(
        run_dir, base, f"res-img-kill-{select}", epochs,
        f"run_train(TrainSpec('ada', preset={spec.preset!r}, overrides={ADA!r}, validation={spec.validation!r}), p,"
        f" progress=False, data=small_data(p, 'mvtec', {CATS!r}))", timeout=300)
    resumed = run_train(spec, killed, progress=False, data=data)
    assert resumed == run_dir and load_run(resumed).done
    for p, q in zip(_prompts(ref), _prompts(resumed), strict=True):
        assert torch.equal(p, q)
    assert np.array_equal(load_run(resumed).losses()["total"].to_numpy(), load_run(ref).losses()["total"].to_numpy())
    assert load_run(resumed).selection() == load_run(ref).selection()  # None for last-epoch runs
