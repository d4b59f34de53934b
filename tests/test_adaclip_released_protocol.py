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


# ------------------------------------------------------------------------------------------- AX
AX_FIELDS = {"ada_quick_gelu": {"activation": "quick_gelu"}, "ada_fp32": {"precision": "fp32"},
             "ada_hsf_reported": {"hsf": "reported"}, "ada_dice_image": {"dice_reduction": "per_image"},
             "ada_best_epoch": {"select": "best_epoch"}}


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_ax_rows_switch_one_released_choice_each(profile: str) -> None:
    reg = load_registry(profile=profile)
    art = reg.artifact("AX")
    assert {s["b"] for s in art["sections"]} == set(AX_FIELDS) and {s["a"] for s in art["sections"]} == {"ada_released"}
    by_variant = {}
    for c in reg.artifact_cells("AX"):
        by_variant.setdefault(c.row, []).append(c.candidates[0].job.train)
    base = {j.train_dataset: dict(j.overrides) for j in by_variant["ada_released"]}
    for v, fields in AX_FIELDS.items():
        for job in by_variant[v]:
            diff = {k: x for k, x in dict(job.overrides).items() if base[job.train_dataset].get(k) != x}
            assert diff == fields, (v, diff)
            # only the best-epoch row ranks epochs, on the protocol pair's validation set
            want = {"smoke": {"btad": "mpdd"}, "paper": {"mvtec": "visa", "visa": "mvtec"}}[profile][job.train_dataset]
            assert job.validation == (want if v == "ada_best_epoch" else None)
    if profile == "smoke":  # one training set, one evaluation set, 2 epochs (so the pick has a choice)
        assert {c.dataset for c in reg.artifact_cells("AX")} == {"mpdd"}
        assert all(j.overrides_dict["epochs"] == 2 for js in by_variant.values() for j in js)


def test_jobs_sharing_one_run_are_both_recorded(tmp_path: Path) -> None:
    """Two job names whose settings coincide (AdaCLIP's fp16 and fp32 rows on a CPU, names cut to 80
    characters in run ids) share one run; the second is recorded in the ledger too, so both draw."""
    from helpers_engine import profile_at, small_data

    from glocal_lib.engine import TrainSpec, run_train
    from glocal_lib.engine.runs import read_ledger

    prof = profile_at(tmp_path, epochs=1)
    data = small_data(prof, "mvtec", ["bottle"])
    stem = "x" * 80
    first = run_train(TrainSpec(f"{stem}-a", preset="adaclip-glocal-protocol", overrides={"ensemble": "minimal"}),
                      prof, progress=False, data=data)
    second = run_train(TrainSpec(f"{stem}-precisionfp32", preset="adaclip-glocal-protocol",
                                 overrides={"ensemble": "minimal", "precision": "fp32"}), prof, progress=False, data=data)
    assert first == second  # fp32 on a CPU either way: one run
    ledger = read_ledger(prof.results_root)
    assert ledger[("train", f"{stem}-a")]["run_id"] == ledger[("train", f"{stem}-precisionfp32")]["run_id"] == first.name
