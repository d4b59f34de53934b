"""Training on a concatenated set (AdaCLIP's released models: MVTec AD + ColonDB, VisA + ClinicDB):
the source is the concatenation (every row of both sets, with its own label, mask and features), a
run trains on both, and a single-key training set keeps the run identity it always had."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_engine import SMALL, profile_at, shared_root, small_data

from glocal_lib.data.registry import train_keys, train_label, train_value
from glocal_lib.engine import EvalSpec, TrainSpec, load_run, run_eval, run_train
from glocal_lib.engine.features import ConcatSource, cache_build, feature_source
from glocal_lib.engine.modeling import build_detector, model_config
from glocal_lib.engine.runs import read_ledger, run_id
from glocal_lib.engine.train import _config, train_identity
from glocal_lib.errors import ConfigError, DataError

ADA = {"ensemble": "minimal"}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_root(tmp_path_factory)


def _two(prof: object) -> tuple:
    return small_data(prof, "mvtec", ["bottle"]), small_data(prof, "colondb")


def test_training_set_names() -> None:
    assert train_keys("mvtec") == ("mvtec",) and train_keys(["mvtec", "colondb"]) == ("mvtec", "colondb")
    assert train_keys("mvtec+colondb") == ("mvtec", "colondb") and train_label(("visa", "clinicdb")) == "visa+clinicdb"
    assert train_value(["mvtec"]) == "mvtec" and train_value(["visa", "clinicdb"]) == ("visa", "clinicdb")
    with pytest.raises(DataError, match="twice"):
        train_keys(["mvtec", "mvtec"])
    assert TrainSpec("x", train_dataset=["mvtec"]).train_dataset == "mvtec"  # a one-key list is the key
    assert TrainSpec("x", train_dataset=["visa", "clinicdb"]).train_dataset == ("visa", "clinicdb")
    with pytest.raises(DataError):
        TrainSpec("x", train_dataset=())


def test_single_key_identity_is_the_one_it_always_was(base: Path) -> None:
    """The identity of a one-set run keeps its pre-concatenation layout (same keys, a key string and a
    hash string), so existing run ids do not change; one-key lists and tuples hash the same."""
    prof = profile_at(base, "res-sets")
    data = small_data(prof, "mvtec", ["bottle"])
    spec = TrainSpec("g", train_dataset="mvtec", overrides=SMALL)
    ident = train_identity(spec, prof, _config(spec, prof), data)
    assert set(ident) == {"kind", "profile", "preset", "variant", "model", "backbone", "backbone_seed", "weights",
                          "image_size", "train_dataset", "index_hash", "epochs", "batch_size", "lr", "betas", "seed",
                          "precision", "features", "attention_kernel"}
    assert ident["train_dataset"] == "mvtec" and ident["index_hash"] == data.index_hash
    assert ident["variant"] == "mvtec"  # glocalclip-released's variant of the training set, as before
    for same in (["mvtec"], ("mvtec",)):
        other = TrainSpec("g", train_dataset=same, overrides=SMALL)
        assert run_id("g", train_identity(other, prof, _config(other, prof), data)) == run_id("g", ident)


def test_concat_source_is_the_concatenation(base: Path) -> None:
    """Mixed batches hold each member's own rows: features, labels and masks equal the member's."""
    prof = profile_at(base, "res-sets")
    a, b = _two(prof)
    model = build_detector(model_config("glocalclip-released", SMALL, precision="fp32"), prof, seed=1)
    src_a, src_b = (feature_source(model, d, prof, use_cache=True, batch_size=4) for d in (a, b))
    cat = ConcatSource([src_a, src_b])
    n_a, n_b = len(a.index), len(b.index)
    assert len(cat) == n_a + n_b
    order = np.random.default_rng(0).permutation(n_a + n_b)
    seen = []
    for rows, feats, labels, masks in cat.iter_batches(order, 4):
        assert sorted(rows.tolist()) == sorted(order[len(seen):len(seen) + len(rows)].tolist())
        seen += rows.tolist()
        for j, r in enumerate(rows.tolist()):
            src, local, data = (src_a, r, a) if r < n_a else (src_b, r - n_a, b)
            f, y, m = src.batch(np.array([local]), "cpu")
            assert torch.equal(feats.global_emb[j], f.global_emb[0]) and torch.equal(feats.patch[j], f.patch[0])
            assert int(labels[j]) == int(data.index["label"].iloc[local]) == int(y[0])
            assert torch.equal(masks[j], m[0])
    assert sorted(seen) == list(range(n_a + n_b))  # every row of both sets, once


def test_concat_source_reports_the_sum_of_its_cache_builds(base: Path) -> None:
    """A concatenated set's cache build is its members' build times and images summed (each read from
    the member's own meta.json); a member without a recorded build leaves the set without one."""
    prof = profile_at(base, "res-sets")
    a, b = _two(prof)
    model = build_detector(model_config("glocalclip-released", SMALL, precision="fp32"), prof, seed=1)
    src_a, src_b = (feature_source(model, d, prof, use_cache=True, batch_size=4) for d in (a, b))
    metas = [json.loads((s.path / "meta.json").read_text()) for s in (src_a, src_b)]
    assert cache_build(src_a) == (float(metas[0]["build_s"]), len(a.index))
    total = cache_build(ConcatSource([src_a, src_b]))
    assert total is not None
    assert total[0] == pytest.approx(metas[0]["build_s"] + metas[1]["build_s"]) and total[0] > 0
    assert total[1] == metas[0]["n"] + metas[1]["n"] == len(a.index) + len(b.index)
    live = feature_source(model, b, prof, use_cache=False, batch_size=4)
    assert cache_build(live) is None and cache_build(ConcatSource([src_a, live])) is None


def test_run_on_concatenated_sets(base: Path) -> None:
    """An image-based run (AdaCLIP) on MVTec AD bottle + ColonDB: one step per image of both sets,
    recorded as a list of keys in the identity, config and ledger; its model evaluates as usual."""
    prof = profile_at(base, "res-sets", epochs=1)
    a, b = _two(prof)
    spec = TrainSpec("ada-cat", train_dataset=("mvtec", "colondb"), preset="adaclip-glocal-protocol",
                     overrides={**ADA, "batch_size": 4})
    with pytest.raises(ConfigError, match="order"):
        run_train(spec, prof, progress=False, data=(b, a))
    run_dir = run_train(spec, prof, progress=False, data={"colondb": b, "mvtec": a})
    run = load_run(run_dir)
    assert run.done and len(run.losses()) == -(-(len(a.index) + len(b.index)) // 4)
    ident = run.config["identity"]
    assert ident["train_dataset"] == ["mvtec", "colondb"] and ident["index_hash"] == [a.index_hash, b.index_hash]
    assert run.config["train_dataset"] == ["mvtec", "colondb"]
    entry = read_ledger(prof.results_root)[("train", "ada-cat")]
    assert entry["dataset"] == ["mvtec", "colondb"] and entry["run_id"] == run_dir.name
    one = run_train(TrainSpec("ada-cat", train_dataset="mvtec", preset="adaclip-glocal-protocol",
                              overrides={**ADA, "batch_size": 4}), prof, progress=False, data=a)
    assert one != run_dir and len(load_run(one).losses()) == -(-len(a.index) // 4)
    ev = run_eval(EvalSpec("ada-cat@colondb", "colondb", train_run=run_dir), prof, progress=False, data=b)
    assert json.loads((ev / "metrics.json").read_text())["dataset"] == "colondb"


def test_protocol_with_a_concatenated_training_set_plans_one_job() -> None:
    """`train: [mvtec, colondb]` in a protocol is one train job on the concatenation ("mvtec+colondb" in its
    name, the tuple in its spec), shared by every evaluation set of the pair; the datasets it needs are
    both members."""
    import copy

    from glocal_lib.experiments.registry import REGISTRY_FILE, Registry, TrainJob
    from glocal_lib.io import read_yaml

    data = copy.deepcopy(read_yaml(REGISTRY_FILE))
    data["protocols"]["full"]["industrial"] = [{"train": ["mvtec", "colondb"], "eval": ["visa", "mpdd"]}]
    reg = Registry(data, profile="smoke")
    cells = reg.cells_for(reg.method("CoOp"), "CoOp", "industrial", "main")
    jobs = {c.candidates[0].job.train for c in cells}
    assert [c.dataset for c in cells] == ["visa", "mpdd"] and len(jobs) == 1
    job = jobs.pop()
    assert isinstance(job, TrainJob) and job.train_dataset == ("mvtec", "colondb")
    assert job.name == "coop-mvtec+colondb" and job.spec().train_datasets == ("mvtec", "colondb")
    assert TrainJob("coop", ["mvtec"]) == TrainJob("coop", "mvtec")  # a one-key list is the old job
    assert reg.dataset_name(job.train_dataset) == f"{reg.dataset_name('mvtec')} + {reg.dataset_name('colondb')}"
