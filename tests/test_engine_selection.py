"""Best-epoch selection (released AdaCLIP, spec adaclip.md 7.6): after every epoch the model is ranked
by the mean over categories of pixel F1-max on a validation set; the run's model is the first epoch of
the best strict improvement. Checked against a brute-force evaluation of every epoch's checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_engine import SMALL, profile_at, shared_root, small_data

from glocal_lib.engine import EvalSpec, TrainSpec, load_run, run_eval, run_train
from glocal_lib.engine.evaluate import category_mean_metric
from glocal_lib.engine.modeling import build_detector, config_from_dict
from glocal_lib.engine.train import INITIAL_BEST, best_epoch
from glocal_lib.errors import ConfigError
from glocal_lib.model import read_checkpoint

ADA = {"ensemble": "minimal"}
EPOCHS = 3


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_root(tmp_path_factory)


def _spec(preset: str = "adaclip-released", **kw: object) -> TrainSpec:
    return TrainSpec("ada-sel", train_dataset="mvtec", preset=preset, overrides=ADA, **kw)


def _prompts(path: Path) -> list[torch.Tensor]:
    state = read_checkpoint(path)["prompts"]
    return [state[k] for k in sorted(state)]


def test_released_rule() -> None:
    h = [{"epoch": e, "value": v} for e, v in enumerate([0.2, 0.5, 0.5, 0.4], start=1)]
    assert best_epoch(h) == 2  # strict improvement: the tie keeps the earlier epoch
    assert best_epoch([{"epoch": 1, "value": float("nan")}, {"epoch": 2, "value": 0.1}]) == 2
    assert best_epoch([{"epoch": 1, "value": INITIAL_BEST}]) is None and best_epoch([]) is None


def test_validation_set_is_required_and_only_for_best_epoch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="validation"):
        run_train(_spec(), profile_at(tmp_path), progress=False)  # mvtec alone: no preset default
    with pytest.raises(ConfigError, match="best_epoch"):
        run_train(_spec("adaclip-glocal-protocol", validation="colondb"), profile_at(tmp_path),
                  progress=False)
    assert not any(tmp_path.iterdir())  # refused before any data was prepared


def test_best_epoch_equals_brute_force_over_every_checkpoint(base: Path) -> None:
    prof = profile_at(base, "res-sel", epochs=EPOCHS)
    data = small_data(prof, "mvtec", ["bottle"])
    # validated on VisA's stand-in: on the endoscopy and ISIC stand-ins this bottle-trained tiny model gives
    # every epoch the same F1-max, and the pick would mean nothing (the assertion on distinct values below)
    run_dir = run_train(_spec(validation="visa"), prof, progress=False, data=data)
    run = load_run(run_dir)
    sel = run.selection()
    assert sel is not None and sel["validation"] == "visa" and sel["selected_on_evaluation_data"]
    assert run.config["identity"]["selection"]["validation"] == "visa"
    # brute force: every epoch's checkpoint evaluated by run_eval, the mean of its per-category F1-max
    values = []
    for e in range(1, EPOCHS + 1):
        ev = run_eval(EvalSpec(f"ada-sel-e{e}@visa", "visa", train_run=run_dir, epoch=e), prof, progress=False)
        per_cat = json.loads((ev / "metrics.json").read_text())["per_category"]
        values.append(float(np.mean([d["pixel_f1max"] for d in per_cat.values()])))
    assert [h["value"] for h in sel["history"]] == pytest.approx(values, abs=1e-6)
    assert len(set(np.round(values, 6))) > 1  # the epochs differ, so the pick means something
    best, expect = -math.inf, None
    for e, v in enumerate(values, start=1):
        if v > best + 1e-9:
            best, expect = v, e
    assert sel["best_epoch"] == expect == run.selected_epoch
    # an evaluation without --epoch loads the selected epoch
    ev = run_eval(EvalSpec("ada-sel@visa", "visa", train_run=run_dir), prof, progress=False)
    assert load_run(ev).config["epoch"] == expect
    # selecting does not change training: the last-epoch twin has the same prompts after every epoch
    twin = run_train(_spec("adaclip-glocal-protocol"), prof, progress=False, data=data)
    assert twin != run_dir and load_run(twin).selection() is None
    for e in range(1, EPOCHS + 1):
        name = f"epoch_{e:02d}.pt"
        for p, q in zip(_prompts(run_dir / "checkpoints" / name), _prompts(twin / "checkpoints" / name), strict=True):
            assert torch.equal(p, q)


def test_validation_metric_is_run_evals_per_category_f1max(base: Path) -> None:
    """category_mean_metric (the per-epoch validation) and run_eval share one prediction path: on the
    same model, its per-category pixel F1-max are the ones run_eval writes, its mean is theirs."""
    prof = profile_at(base, "res-sel-metric")
    data = small_data(prof, "mvtec", ["bottle", "cable"])
    ev = run_eval(EvalSpec("zs-metric@mvtec", "mvtec", preset="glocalclip-released", overrides=SMALL, seed=3),
                  prof, progress=False, data=data)
    run = load_run(ev)
    model = build_detector(config_from_dict(run.config["model"]), prof, seed=run.config["identity"]["seed"])
    mean, per_cat = category_mean_metric(model, data, prof)
    written = json.loads((ev / "metrics.json").read_text())
    assert set(per_cat) == set(written["per_category"]) == {"bottle", "cable"}
    for cat, d in written["per_category"].items():
        assert per_cat[cat] == pytest.approx(d["pixel_f1max"], rel=1e-6, abs=1e-9)
    assert mean == pytest.approx(written["mean"]["pixel_f1max"], rel=1e-6, abs=1e-9)
    assert len(set(np.round(list(per_cat.values()), 6))) > 1  # the categories differ: a mix-up would show
