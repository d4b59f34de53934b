"""KAnoCLIP through the engine: presets, the smoke stand-in knowledge, train -> checkpoint -> eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_engine import profile_at, shared_root, small_data

from glocal_lib.config import load_preset
from glocal_lib.engine import EvalSpec, TrainSpec, load_run, run_eval, run_train, train_run_dir
from glocal_lib.kanoclip_config import KAnoCLIPConfig
from glocal_lib.model import build_model
from glocal_lib.model.kanoclip import KAnoCLIPDetector, KnowledgeError, read_knowledge

CATS = ["bottle", "cable"]
FAST = {"prompt_length": 3}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_root(tmp_path_factory)


def test_presets_are_kanoclip_configs():
    paper = load_preset("kanoclip-paper")
    assert type(paper) is KAnoCLIPConfig and paper == KAnoCLIPConfig()  # the spec's defaults
    assert load_preset("kanoclip-noknowledge") == paper.replace(kd_weight=0.0)
    assert load_preset("kanoclip-template-knowledge") == paper.replace(knowledge_source="template")
    rows = [load_preset(f"kanoclip-ablation-{r}") for r in ("base", "knpl", "vv", "bicmci")] + [paper]
    switches = [(c.kd_weight > 0, c.dual_path, c.use_bica, c.use_adapter) for c in rows]
    assert switches == [(False, False, False, False), (True, False, False, False), (True, True, False, False),
                        (True, True, True, False), (True, True, True, True)]  # cumulative


def test_smoke_training_with_standin_knowledge_then_eval(base: Path):
    prof = profile_at(base, "res-kanoclip", epochs=2)
    data = small_data(prof, "mvtec", CATS)
    spec = TrainSpec("kano", preset="kanoclip-paper", overrides=FAST)
    run = load_run(run_train(spec, prof, progress=False, data=data))
    assert run.done
    ident = json.loads((run.path / "config.json").read_text())["identity"]
    knowledge = Path(prof.results_root) / "knowledge" / "mvtec.json"
    kn = read_knowledge(knowledge)  # the stand-in the smoke profile wrote: valid, and in the identity
    assert ident["inputs"] == {"knowledge": kn.sha256}
    assert set(kn.classes) >= {f"mvtec/{c}" for c in CATS}
    losses = run.losses()
    assert np.isfinite(losses["total"]).all() and len(losses) == 2 * -(-len(data.index) // 8)
    # the checkpoint alone rebuilds the detector with every trained tensor
    model = build_model(checkpoint=run.checkpoint())
    assert isinstance(model, KAnoCLIPDetector)
    saved = torch.load(run.checkpoint(), map_location="cpu", weights_only=True)["prompts"]
    assert any(k.startswith("bica.") for k in saved) and any(k.startswith("adapter.") for k in saved)
    assert any(torch.count_nonzero(v) for k, v in saved.items() if k.endswith("t2v.out.weight"))  # trained
    ev = load_run(run_eval(EvalSpec("kano-ev", "visa", train_run=run.path), prof, progress=False))
    m = ev.metrics()
    assert ev.done and len(m) > 0 and np.isfinite(m.select_dtypes("number").to_numpy(dtype=float)).any()
    # the same stand-in gives the same run
    assert train_run_dir(spec, prof, data) == run.path


def test_losses_csv_logs_the_kd_term_compute_losses_returned(base: Path, monkeypatch: pytest.MonkeyPatch):
    """losses.csv has the method's own terms (loss_names: kd, no gcl), each step's value the one
    compute_losses returned at that step (recorded by a spy, independently of the engine's log)."""
    from glocal_lib.experiments import run_views
    from glocal_lib.model.kanoclip import detector as kano_detector

    returned: list[dict[str, float]] = []
    original = KAnoCLIPDetector.compute_losses

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        returned.append({k: float(v.detach()) for k, v in out.items()})
        return out

    monkeypatch.setattr(KAnoCLIPDetector, "compute_losses", spy)
    # on the tiny random tower every stand-in w^k lies nearer the anomaly prompt (hinge 0 at each step):
    # the states swapped, the hinge is active, so a logged 0 could not pass for the returned value
    hinge = kano_detector.kd_hinge
    monkeypatch.setattr(kano_detector, "kd_hinge", lambda k, n, a: hinge(k, a, n))
    prof = profile_at(base, "res-kanoclip-kd", epochs=2)
    data = small_data(prof, "mvtec", CATS)
    run = load_run(run_train(TrainSpec("kano-kd", preset="kanoclip-paper", overrides=FAST), prof,
                             progress=False, data=data))
    losses = run.losses()
    assert list(losses.columns) == ["epoch", "step", *KAnoCLIPDetector.loss_names]
    assert "kd" in losses.columns and "gcl" not in losses.columns
    assert len(returned) == len(losses) > 1
    for term in KAnoCLIPDetector.loss_names:
        np.testing.assert_allclose(losses[term].to_numpy(), [r[term] for r in returned], rtol=1e-6, atol=0)
    assert (losses["kd"] > 0).all()
    # total = alpha KD + beta global + gamma local (all weights 1): the logged kd is the optimised one
    np.testing.assert_allclose(losses["total"], losses["kd"] + losses["global"] + losses["local"], rtol=1e-5)
    fig = run_views.plot_loss_curves([("kano-kd", losses)])
    drawn = {ln.get_label(): ln for ln in fig.axes[0].get_lines() if not ln.get_label().startswith("_")}
    assert set(drawn) == set(KAnoCLIPDetector.loss_names)  # notebook 01 draws the KD curve
    np.testing.assert_array_equal(np.asarray(drawn["kd"].get_ydata(), float), losses["kd"].to_numpy())
    run_views.figure_png(fig)


def test_missing_knowledge_file_is_a_clear_error_and_fallback_runs(base: Path, tmp_path: Path):
    prof = profile_at(base, "res-kanoclip", epochs=1)
    data = small_data(prof, "mvtec", CATS)
    missing = TrainSpec("kano-missing", preset="kanoclip-paper",
                        overrides={**FAST, "knowledge_file": str(tmp_path / "none-{dataset}.json")})
    with pytest.raises(KnowledgeError, match=r"none-mvtec\.json does not exist.*kanoclip-noknowledge"):
        run_train(missing, prof, progress=False, data=data)
    for preset in ("kanoclip-noknowledge", "kanoclip-template-knowledge"):
        run = load_run(run_train(TrainSpec(f"kano-{preset}", preset=preset, overrides=FAST), prof, progress=False,
                                 data=data))
        assert run.done and "inputs" not in json.loads((run.path / "config.json").read_text())["identity"]
