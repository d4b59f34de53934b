"""The rehearsal profile: the paper's plan, presets, backbone and image size, random weights, stand-ins.

The end-to-end test is the CI-sized rehearsal (CPU, one dataset, one category, two images, one
epoch): the full-size ViT-L/14@336 at 518 px, the released MVTec AD preset, the fp16 feature
cache, training and evaluation with metrics, every output marked "rehearsal" (~1-3 min on 2 cores).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from glocal_lib.config import load_preset
from glocal_lib.engine import EvalSpec, TrainSpec, load_profile, prepare_data, run_eval, run_train
from glocal_lib.engine.data_prep import DataInfo, index_hash
from glocal_lib.experiments.provenance import SMOKE_LABEL, banner_for
from glocal_lib.experiments.registry import load_registry


def test_rehearsal_is_the_paper_profile_at_full_size_on_stand_ins() -> None:
    reh, paper = load_profile("rehearsal"), load_profile("paper")
    for field in ("backbone", "image_size", "epochs", "batch_size", "precision", "cache_dtype"):
        assert getattr(reh, field) == getattr(paper, field), field
    assert reh.weights is None and reh.synthetic and reh.plan_profile == "paper"
    assert load_profile("smoke").plan_profile == "smoke" and paper.plan_profile == "paper"
    banner = banner_for(reh)
    assert SMOKE_LABEL in banner and "rehearsal" in banner  # never presented as paper results


def test_rehearsal_plans_exactly_the_paper_runs() -> None:
    reh = load_registry(profile=load_profile("rehearsal").plan_profile)
    paper = load_registry(profile="paper")
    ids = ["T1", "T3", "F5"]
    assert [j.name for j in reh.plan(ids).train_jobs] == [j.name for j in paper.plan(ids).train_jobs]
    assert [j.name for j in reh.plan(ids).eval_jobs] == [j.name for j in paper.plan(ids).eval_jobs]


def _two_images(data: DataInfo) -> DataInfo:
    """One category, one normal and one anomalous image (the CPU budget of a full-size forward)."""
    cat = data.categories[0]
    rows = data.index[data.index["category"] == cat]
    index = rows.sort_values("label", kind="stable").groupby("label").head(1).reset_index(drop=True)
    assert sorted(index["label"].tolist()) == [0, 1]
    return DataInfo(key=data.key, root=data.root, index=index, eval_level=data.eval_level,
                    index_hash=index_hash(index))


@pytest.mark.slow
def test_rehearsal_trains_and_evaluates_the_paper_model_on_cpu(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    profile = load_profile("rehearsal", device="cpu", epochs=1, torch_threads=1, num_workers=0, encode_batch_size=2,
                           results_root=str(tmp_path / "results"), data_root=str(tmp_path / "data"),
                           cache_dir=str(tmp_path / "cache"))
    data = _two_images(prepare_data(profile, ["mvtec"])["mvtec"])
    train_dir = run_train(TrainSpec(name="rehearsal-glocal-mvtec", train_dataset="mvtec"), profile,
                          progress=False, data=data)
    eval_dir = run_eval(EvalSpec(name="rehearsal-glocal-mvtec@mvtec", dataset="mvtec", train_run=train_dir),
                        profile, progress=False, data=data)

    config = json.loads((train_dir / "config.json").read_text())
    assert config["profile"] == "rehearsal" and "rehearsal" in config["banner"]
    assert config["identity"]["backbone"] == "ViT-L-14-336-quickgelu" and config["identity"]["image_size"] == 518
    assert config["model"] == load_preset("glocalclip-released", "mvtec").to_dict()  # the paper preset, exactly
    assert (train_dir / "checkpoints" / "epoch_01.pt").is_file()
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["profile"] == "rehearsal" and "not paper results" in metrics["banner"]
    assert all(np.isfinite(v) for v in metrics["mean"].values() if v is not None)
    assert {"image_auroc", "pixel_auroc", "aupro_cflow"} <= set(metrics["mean"])
    sample = next((eval_dir / "samples").glob("*.npz"))
    with np.load(sample) as z:
        assert z["map"].shape == (518, 518)
    caches = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("*/meta.json")]
    assert len(caches) == 1  # training and evaluation read one fp16 cache fill
