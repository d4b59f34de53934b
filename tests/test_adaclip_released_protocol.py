"""AdaCLIP as released in ViP2-CLIP's Tables 1-2 (V1/V2): a method-level protocol (models A/B on
concatenated training sets, test.sh's evaluation lists), the preset's validation sets, and the table
flag on the cells whose test set chose the epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_fakes import FakeProfile, FakeStore, populate

from glocal_lib.engine.modeling import model_config
from glocal_lib.engine.train import validation_set
from glocal_lib.experiments import kinds
from glocal_lib.experiments.registry import load_registry

A, B = ("mvtec", "colondb"), ("visa", "clinicdb")
# caoyunkang/AdaCLIP e27ee32b test.sh (spec adaclip.md 7.3), read independently of experiments.yaml
TEST_SH = {A: {"visa", "mpdd", "btad", "sdd", "dagm", "dtd", "isic", "clinicdb", "tn3k", "headct", "brainmri", "br35h"},
           B: {"mvtec", "colondb"}}


def _released_cells(reg: object) -> dict[tuple, set[str]]:
    out: dict[tuple, set[str]] = {}
    for aid in ("V1", "V2"):
        for c in reg.artifact_cells(aid):
            if c.row == "AdaCLIP-released":
                out.setdefault(c.train_dataset, set()).add(c.dataset)
    return out


def test_paper_profile_plans_models_a_and_b_on_test_sh() -> None:
    reg = load_registry(profile="paper")
    cells = _released_cells(reg)
    assert set(cells) == {A, B}
    v_sets = {d for aid in ("V1", "V2") for d in reg.artifact(aid)["datasets"]}
    for model, evals in cells.items():
        assert evals == TEST_SH[model] & v_sets  # the tables' datasets that test.sh evaluates with this model
    jobs = {j.train.train_dataset: j.train for j in reg.plan(["V1", "V2"]).eval_jobs
            if j.train is not None and j.train.preset == "adaclip-released"}
    assert set(jobs) == {A, B} and jobs[A].name == "adaclip-released-mvtec+colondb"
    for model, val in ((A, "visa"), (B, "mvtec")):  # the released selection sets, from the preset
        spec = jobs[model].spec()
        assert validation_set(spec, model_config(spec.preset, spec.overrides)) == val
    # other methods in the same tables keep the table's protocol (ViP2-CLIP's MVTec-trained runs)
    assert {c.train_dataset for c in reg.artifact_cells("V1") if c.row == "ViP2-CLIP"} == {"mvtec", "visa"}


def test_smoke_profile_runs_the_quick_version() -> None:
    reg = load_registry(profile="smoke")
    cells = _released_cells(reg)
    assert set(cells) == {A, B} and cells[B] == {"mvtec", "colondb"} and "visa" in cells[A]
    assert cells[A] < TEST_SH[A]
    plan = reg.plan(["V1", "V2"])
    ours = [j for j in plan.train_jobs if j.preset == "adaclip-released"]
    assert len(ours) == 2 and all(j.overrides_dict["epochs"] >= 2 for j in ours)  # >= 2: the pick is visible


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    root = tmp_path_factory.mktemp("results") / "smoke"
    reg = load_registry(profile="smoke")
    store = FakeStore(FakeProfile("smoke", root))
    populate(reg, store, ["V1", "V2"])
    for job in reg.plan(["V1"]).train_jobs:  # model A chose epoch 2 on VisA, model B epoch 1 on MVTec AD
        if job.preset == "adaclip-released":
            val, epoch = ("visa", 2) if job.train_dataset == A else ("mvtec", 1)
            (store.locate_train(job) / "selection.json").write_text(json.dumps(
                {"rule": "best_epoch", "validation": val, "best_epoch": epoch, "history": []}))
    store.refresh()
    return reg, store


def test_cells_of_the_selection_set_are_flagged(fake: tuple) -> None:
    reg, store = fake
    table = kinds.build_table(reg, store, "V1")
    df = table.data
    rows = df[(df["row"] == "AdaCLIP-released") & (df["metric"] == "image_auroc")].set_index("dataset")
    flagged = {d for d, r in rows.iterrows() if bool(r["lambda_selected_on_test"])}
    assert flagged == {reg.dataset_name("visa"), reg.dataset_name("mvtec")}  # A's VisA, B's MVTec AD
    assert rows.loc[reg.dataset_name("mpdd"), "note"] == "not evaluated by adaclip_released_quick"
    note = next(n for n in table.notes if n.startswith("AdaCLIP-released: the training epoch was picked"))
    assert "epoch 2 on VisA" in note and "epoch 1 on MVTec AD" in note
    assert any(n.startswith("AdaCLIP-released: run under its own protocol adaclip_released_quick") for n in table.notes)
    # ViP2-CLIP's own runs: no epoch selection, nothing flagged
    vip = df[(df["row"] == "ViP2-CLIP") & (df["dataset"] != "Mean")]
    assert not vip["lambda_selected_on_test"].astype(bool).any()


def test_datasets_are_the_protocol_members(tmp_path: Path) -> None:
    from glocal_lib.experiments.pipeline import open_reproduction

    r = open_reproduction("smoke", methods=["AdaCLIP-released"], results_root=str(tmp_path / "r"),
                          data_root=str(tmp_path / "d"))
    assert {"mvtec", "colondb", "visa", "clinicdb"} <= set(r.datasets_for(["V1", "V2"]))
