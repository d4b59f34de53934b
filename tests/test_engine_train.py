"""Training runs: cached == uncached, interrupted + resumed == uninterrupted, finished runs not redone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers_engine import SMALL, kill_after_first_epoch, profile_at, shared_root, small_data

from glocal_lib.engine import TrainSpec, load_run, run_train, train_run_dir
from glocal_lib.engine import train as train_mod

CATS = ["bottle", "cable", "capsule"]  # about 18 images: 3 steps per epoch at batch 8


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_root(tmp_path_factory)


def _prompts(run_dir: Path, epoch: int | None = None) -> list[torch.Tensor]:
    ckpt = load_run(run_dir).checkpoint(epoch)
    return torch.load(ckpt, map_location="cpu", weights_only=True)["extra"]["engine"]["prompts"]


def test_cached_and_uncached_training_give_the_same_losses(base: Path) -> None:
    prof = profile_at(base, "res-cache", epochs=2)
    data = small_data(prof, "mvtec", CATS)
    cached = run_train(TrainSpec("t", overrides=SMALL), prof, progress=False, data=data)
    live = run_train(TrainSpec("t", overrides=SMALL, use_cache=False), prof, progress=False, data=data)
    assert cached != live  # the feature source is part of the run identity
    a, b = load_run(cached).losses(), load_run(live).losses()
    steps = 2 * -(-len(data.index) // 8)  # 2 epochs, last batch kept (drop_last False, as released)
    assert list(a["step"]) == list(range(1, steps + 1)) and list(a["epoch"]).count(2) == steps // 2
    # fp32 cache: the same features up to float noise of batch composition (~1e-7), which Adam's
    # normalised steps carry into the losses at ~1e-6 relative (1.9e-6 .. 6.8e-5 absolute measured
    # over 15 epochs in results/benchmarks/engine.md)
    np.testing.assert_allclose(a[list(train_mod.LOSS_KEYS)].to_numpy(), b[list(train_mod.LOSS_KEYS)].to_numpy(),
                               rtol=1e-4, atol=1e-5)
    for p, q in zip(_prompts(cached), _prompts(live), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5)
    # and training moved the prompts and lowered nothing to NaN
    assert np.isfinite(a[list(train_mod.LOSS_KEYS)].to_numpy()).all()


def test_run_outputs_follow_the_contract(base: Path) -> None:
    prof = profile_at(base, "res-cache", epochs=2)
    run = load_run(run_train(TrainSpec("t", overrides=SMALL), prof, progress=False,
                             data=small_data(prof, "mvtec", CATS)))
    assert run.done and run.kind == "train" and run.run_id.startswith("t-") and len(run.run_id) == 2 + 12
    for f in ("config.json", "env.json", "losses.csv", "prompt_embeddings.npz", "checkpoints/epoch_01.pt",
              "checkpoints/epoch_02.pt", "checkpoints/latest.pt"):
        assert (run.path / f).is_file(), f
    emb, names, epochs = run.prompt_embeddings()
    assert emb.shape[:2] == (3, 4) and list(epochs) == [0, 1, 2]
    assert names == ["global_normal", "global_anomaly", "local_normal", "local_anomaly"]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)
    assert not np.allclose(emb[0], emb[2])  # prompts moved
    assert run.config["banner"].startswith("synthetic data, random model")
    assert "commit" in run.env["git"] and run.env["versions"]["torch"] == torch.__version__
    # epoch checkpoints are the model package's format: build_model(checkpoint=...) can load them
    from glocal_lib.model import build_model

    model = build_model(checkpoint=run.checkpoint(), backbone=prof.backbone)
    torch.testing.assert_close(model.text_embeddings().detach(), torch.from_numpy(emb[-1]), rtol=1e-5, atol=1e-5)


def test_finished_run_is_not_recomputed(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prof = profile_at(base, "res-cache", epochs=2)
    data = small_data(prof, "mvtec", CATS)
    run_dir = run_train(TrainSpec("t", overrides=SMALL), prof, progress=False, data=data)
    stamps = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_mod, "_train", boom)
    assert run_train(TrainSpec("t", overrides=SMALL), prof, progress=False, data=data) == run_dir
    assert train_run_dir(TrainSpec("t", overrides=SMALL), prof, data) == run_dir
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == stamps
    # a different config is a different run
    assert train_run_dir(TrainSpec("t", overrides={**SMALL, "gcl_lambda": 0.1}), prof, data) != run_dir
    assert train_run_dir(TrainSpec("t", overrides=SMALL, seed=1), prof, data) != run_dir


def test_interrupted_run_resumes_to_identical_prompts(base: Path) -> None:
    full = profile_at(base, "res-full", epochs=3)
    cut = profile_at(base, "res-cut", epochs=3)
    data = small_data(full, "mvtec", CATS)
    spec = TrainSpec("r", overrides=SMALL)
    ref = run_train(spec, full, progress=False, data=data)
    part = run_train(spec, cut, progress=False, data=data, stop_after_epoch=1)
    assert not load_run(part).done and (part / "checkpoints" / "epoch_01.pt").is_file()
    assert not (part / "checkpoints" / "epoch_02.pt").exists()
    resumed = run_train(spec, cut, progress=False, data=data)
    assert load_run(resumed).done and resumed.name == ref.name
    for p, q in zip(_prompts(ref), _prompts(resumed), strict=True):
        assert torch.equal(p, q)
    pd.testing.assert_frame_equal(load_run(ref).losses(), load_run(resumed).losses())
    np.testing.assert_array_equal(load_run(ref).prompt_embeddings()[0], load_run(resumed).prompt_embeddings()[0])


@pytest.mark.slow
def test_kill_minus_9_then_resume(base: Path) -> None:
    """A real SIGKILL in the middle of training; the resumed run ends with the uninterrupted prompts."""
    epochs = 6
    full = profile_at(base, "res-full9", epochs=epochs)
    killed = profile_at(base, "res-kill9", epochs=epochs)
    data = small_data(full, "mvtec", CATS)
    spec = TrainSpec("k", overrides=SMALL)
    ref = run_train(spec, full, progress=False, data=data)
    run_dir = train_run_dir(spec, killed, data)
    kill_after_first_epoch(
        run_dir, base, "res-kill9", epochs,
        f"run_train(TrainSpec('k', overrides=SMALL), p, progress=False, data=small_data(p, 'mvtec', {CATS!r}))",
        timeout=120)
    resumed = run_train(spec, killed, progress=False, data=data)
    assert resumed == run_dir and load_run(resumed).done
    for p, q in zip(_prompts(ref), _prompts(resumed), strict=True):
        assert torch.equal(p, q)
    assert len(load_run(resumed).losses()) == len(load_run(ref).losses())
