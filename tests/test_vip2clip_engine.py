"""ViP2-CLIP through the engine: the released optimiser (two learning rates, Adam's default betas),
resume to identical tensors, and evaluation of the trained run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_engine import profile_at, shared_root, small_data

from glocal_lib.engine import EvalSpec, TrainSpec, load_run, run_eval, run_train

CATS = ["bottle", "cable"]
SHORT = {"n_ctx": 3, "n_cls": 2}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_root(tmp_path_factory)


def _engine_state(run_dir: Path, epoch: int | None = None) -> dict:
    ckpt = load_run(run_dir).checkpoint(epoch)
    return torch.load(ckpt, map_location="cpu", weights_only=True)["extra"]["engine"]


def test_vip2clip_trains_with_its_optimiser_resumes_and_evaluates(base: Path) -> None:
    full = profile_at(base, "res-vip2", epochs=2)
    cut = profile_at(base, "res-vip2-cut", epochs=2)
    data = small_data(full, "mvtec", CATS)
    spec = TrainSpec("v", preset="vip2clip-released", overrides=SHORT)
    run_dir = run_train(spec, full, progress=False, data=data)
    run = load_run(run_dir)
    assert run.done and run.config["identity"]["betas"] == [0.9, 0.999]
    groups = _engine_state(run_dir)["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-5)]
    assert all(g["betas"] == (0.9, 0.999) or list(g["betas"]) == [0.9, 0.999] for g in groups)
    losses = run.losses()
    assert np.isfinite(losses[["global", "local", "total"]].to_numpy()).all()
    # explicit betas still win (and make another run)
    other = TrainSpec("v", preset="vip2clip-released", overrides=SHORT, betas=(0.5, 0.999))
    from glocal_lib.engine import train_run_dir

    assert train_run_dir(other, full, data) != run_dir
    # interrupted after epoch 1 and resumed: identical tensors and Adam state
    part = run_train(spec, cut, progress=False, data=data, stop_after_epoch=1)
    assert not load_run(part).done
    resumed = run_train(spec, cut, progress=False, data=data)
    assert resumed.name == run_dir.name
    for p, q in zip(_engine_state(run_dir)["prompts"], _engine_state(resumed)["prompts"], strict=True):
        assert torch.equal(p, q)
    ev = load_run(run_eval(EvalSpec("e", dataset="mvtec", train_run=run_dir, categories=tuple(CATS)), full,
                           progress=False))
    assert ev.done
    metrics = ev.metrics()
    assert len(metrics) > 0
