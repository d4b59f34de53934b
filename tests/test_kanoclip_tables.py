"""KAnoCLIP's tables in the harness: its own protocol (MVTec AD -> everything), the smoke shortcut of
Table 3, published values looked up under the CSV's names, and the plan naming the knowledge file."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from report_fakes import FakeProfile, FakeStore, populate

from glocal_lib.errors import ConfigError
from glocal_lib.experiments import kinds
from glocal_lib.experiments.registry import REGISTRY_FILE, load_registry

PAPER = Path(__file__).resolve().parents[1] / "glocal_lib" / "experiments" / "paper"


def _published(file: str, dataset: str, method: str, level: str) -> float:
    with open(PAPER / file, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if (r["dataset"], r["method"], r["level"]) == (dataset, method, level)]
    assert len(rows) == 1
    return float(rows[0]["value"])


def test_cells_follow_kanoclips_protocol():
    for profile, t3 in (("paper", {("mvtec", "visa"), ("visa", "mvtec")}), ("smoke", {("mvtec", "visa")})):
        reg = load_registry(profile=profile)
        kt1 = {(c.train_dataset, c.dataset) for c in reg.artifact_cells("KT1") if c.row == "KAnoCLIP"}
        assert kt1 == {("mvtec", d) for d in ("visa", "mpdd", "btad", "sdd", "dagm")} | {("visa", "mvtec")}
        kt2 = [c for c in reg.artifact_cells("KT2") if c.row == "KAnoCLIP"]
        assert {c.train_dataset for c in kt2} == {"mvtec"} and len(kt2) == 7  # medical too: MVTec-trained
        kt3 = reg.artifact_cells("KT3")
        assert {c.row for c in kt3} == {"KAnoCLIP-R1", "KAnoCLIP-R2", "KAnoCLIP-R3", "KAnoCLIP-R4", "KAnoCLIP"}
        assert {(c.train_dataset, c.dataset) for c in kt3} == t3
    # the T1 column trains like the other methods (and shares KT1's runs)
    reg = load_registry(profile="smoke")
    t1 = {c.candidates for c in reg.artifact_cells("T1") if c.row == "KAnoCLIP" and c.dataset == "visa"}
    kt = {c.candidates for c in reg.artifact_cells("KT1") if c.row == "KAnoCLIP" and c.dataset == "visa"}
    assert t1 == kt


def test_t2_and_te_columns_follow_glocalclips_protocol():
    """T2's KAnoCLIP column trains on ClinicDB (ColonDB for ClinicDB) like every other T2 column, not on
    MVTec AD as its own Table 2 (KT2) does; TE shows the same runs as T1 and T2, per category."""
    medical = ("headct", "brainmri", "br35h", "isic", "colondb", "kvasir", "endo", "tn3k")
    for profile in ("paper", "smoke"):
        reg = load_registry(profile=profile)
        t2 = {(c.train_dataset, c.dataset): c.candidates for c in reg.artifact_cells("T2") if c.row == "KAnoCLIP"}
        assert set(t2) == {("clinicdb", d) for d in medical} | {("colondb", "clinicdb")}
        glocal = {(c.train_dataset, c.dataset) for c in reg.artifact_cells("T2") if c.row == "AnomalyCLIP"}
        assert set(t2) == glocal
        kt2 = {c.candidates for c in reg.artifact_cells("KT2") if c.row == "KAnoCLIP"}
        assert not kt2 & set(t2.values())  # other training runs than KAnoCLIP's own protocol
        te = {(c.train_dataset, c.dataset): c.candidates for c in reg.artifact_cells("TE") if c.row == "KAnoCLIP"}
        t1 = {(c.train_dataset, c.dataset): c.candidates for c in reg.artifact_cells("T1") if c.row == "KAnoCLIP"}
        assert te == {**t1, **t2}


def test_smoke_standin_knowledge_covers_the_medical_training_sets(tmp_path_factory):
    """The smoke stand-in written for ClinicDB and ColonDB training names every category and image of
    their index, so the medical KAnoCLIP runs train with KD on (no missing-class error)."""
    from helpers_engine import profile_at, shared_root, small_data

    from glocal_lib.engine.train import training_inputs
    from glocal_lib.kanoclip_config import KAnoCLIPConfig
    from glocal_lib.model.kanoclip import check_coverage, read_knowledge

    prof = profile_at(shared_root(tmp_path_factory), "res-kanoclip-medical")
    for key in ("clinicdb", "colondb"):
        data = small_data(prof, key)
        entry = training_inputs(KAnoCLIPConfig(), prof, data)["knowledge"]
        kn = read_knowledge(entry["path"])
        assert entry["sha256"] == kn.sha256
        cats = data.index["category"].astype(str).tolist()
        paths = data.index["image_path"].astype(str).tolist()
        assert {f"{key}/{c}" for c in cats} <= set(kn.classes)
        assert {f"{key}/{p}" for p in paths} <= set(kn.images)
        check_coverage(kn, key, cats, paths, "error")  # raises on a missing class


def test_unknown_named_protocol_is_a_clear_error(tmp_path):
    data = yaml.safe_load(REGISTRY_FILE.read_text(encoding="utf-8"))
    data["artifacts"]["KT1"]["protocol"] = "nope"
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match="protocol 'nope' is not defined"):
        load_registry(path, profile="smoke").artifact_cells("KT1")


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, FakeStore, Path]:
    root = tmp_path_factory.mktemp("results") / "smoke"
    reg = load_registry(profile="smoke")
    store = FakeStore(FakeProfile("smoke", root))
    populate(reg, store, ["KT1", "KT2", "KT3"])
    return reg, store, root


def _cell(table, dataset, row, metric, category=None):
    d = table.data
    hit = d[(d["dataset"] == dataset) & (d["row"] == row) & (d["metric"] == metric)
            & ((d["category"] == category) if category is not None else True)]
    assert len(hit) == 1, (dataset, row, metric)
    return hit.iloc[0]


def test_published_values_under_the_papers_names(fake):
    reg, store, root = fake
    kw = {"tables_dir": root / "tables", "figures_dir": root / "figures"}
    t1 = kinds.draw("KT1", reg, store, **kw)
    row = _cell(t1, "MVTec AD", "KAnoCLIP", "image_auroc")
    assert row["paper"] == _published("kanoclip_table1.csv", "MVTec-AD", "KAnoCLIP", "image")
    assert row["reproduced"] == row["reproduced"]  # a value (fake run), not NaN
    assert _cell(t1, "DAGM", "AnomalyCLIP", "pixel_auroc")["paper"] == _published(
        "kanoclip_table1.csv", "DAGM", "AnomalyCLIP", "pixel")
    t2 = kinds.draw("KT2", reg, store, **kw)
    assert _cell(t2, "BrainMRI (BMAD)", "KAnoCLIP", "pixel_auroc")["paper"] == _published(
        "kanoclip_table2.csv", "BrainMRI", "KAnoCLIP", "pixel")
    kaggle = _cell(t2, "BrainMRI", "KAnoCLIP", "image_auroc")
    assert kaggle["paper"] != kaggle["paper"]  # NaN: a different BrainMRI than the paper's
    assert any("different dataset" in n for n in t2.notes)
    assert any("reconstruction" in n and "4 learnable tokens" in n for n in t2.notes)  # smoke shortcuts printed
    t3 = kinds.draw("KT3", reg, store, **kw)
    assert set(t3.data["dataset"]) == {"VisA", "Mean"}  # smoke: one training run per row
    assert any("kanoclip_ablation_quick): MVTec AD" in n for n in t3.notes)
    for i in range(1, 5):
        assert _cell(t3, "VisA", f"KAnoCLIP-R{i}", "image_auroc")["paper"] == _published(
            "kanoclip_table3.csv", "VisA", f"Ablation row {i}", "image")
    assert _cell(t3, "VisA", "KAnoCLIP", "pixel_auroc")["paper"] == _published(
        "kanoclip_table3.csv", "VisA", "Ablation row 5", "pixel")


def test_kanoclip_column_in_t1_t2_te_takes_its_own_papers_values(tmp_path_factory):
    """T1/T2/TE's KAnoCLIP column sits beside KAnoCLIP's own published AUROCs (its Tables 1-2), each value
    naming its CSV; only where its paper has the dataset and metric (no AP/PRO, no average row, not DTD,
    not TN3K, and not our BrainMRI: its BrainMRI is BMAD's)."""
    root = tmp_path_factory.mktemp("results") / "smoke"
    reg = load_registry(profile="smoke")
    store = FakeStore(FakeProfile("smoke", root))
    populate(reg, store, ["T1", "T2", "TE"])
    t1, t2, te = (kinds.build_table(reg, store, a) for a in ("T1", "T2", "TE"))
    k1, k2 = "kanoclip_table1.csv", "kanoclip_table2.csv"
    row = _cell(t1, "MVTec AD", "KAnoCLIP", "image_auroc")
    assert row["paper"] == _published(k1, "MVTec-AD", "KAnoCLIP", "image") and row["paper_source"] == f"{k1} (Table 1)"
    assert _cell(t1, "SDD", "KAnoCLIP", "pixel_auroc")["paper"] == _published(k1, "SDD", "KAnoCLIP", "pixel")
    for ds, metric in (("VisA", "image_ap"), ("VisA", "aupro_cflow"), ("DTD-Synthetic", "image_auroc"),
                       ("Mean", "image_auroc")):
        assert math.isnan(_cell(t1, ds, "KAnoCLIP", metric)["paper"]), (ds, metric)
    glocal = _cell(t1, "MVTec AD", "GlocalCLIP", "image_auroc")  # the other columns keep T1's own paper
    assert glocal["paper_source"] == "glocalclip_table1.csv (Table 1)"
    assert any(n.startswith("KAnoCLIP: published values from KAnoCLIP paper (arXiv 2501.03786), Table 1 "
                            f"(paper/{k1})") for n in t1.notes)
    for ds in ("HeadCT", "Br35H"):
        cell = _cell(t2, ds, "KAnoCLIP", "image_auroc")
        assert cell["paper"] == _published(k2, ds, "KAnoCLIP", "image") and cell["paper_source"] == f"{k2} (Table 2)"
        assert cell["reproduced"] == cell["reproduced"]  # our ClinicDB-trained value beside it
    assert math.isnan(_cell(t2, "BrainMRI", "KAnoCLIP", "image_auroc")["paper"])  # BMAD's BrainMRI, not ours
    assert math.isnan(_cell(t2, "TN3K", "KAnoCLIP", "pixel_auroc")["paper"])
    assert any(n.startswith("KAnoCLIP: not published under this protocol") and "BMAD" in n for n in t2.notes)
    mean = _cell(te, "MVTec AD", "KAnoCLIP", "pixel_auroc", category="mean")
    assert mean["paper"] == _published(k1, "MVTec-AD", "KAnoCLIP", "pixel")
    assert _cell(te, "HeadCT", "KAnoCLIP", "image_auroc", category="mean")["paper"] == _published(
        k2, "HeadCT", "KAnoCLIP", "image")
    assert math.isnan(_cell(te, "BrainMRI", "KAnoCLIP", "image_auroc", category="mean")["paper"])
    per_cat = te.data[(te.data["row"] == "KAnoCLIP") & (te.data["category"] != "mean")]
    assert len(per_cat) and per_cat["paper"].isna().all()
    for table in (t1, t2, te):
        assert any("kanoclip_table" in s for s in table.provenance["published_values"]), table.artifact


def test_paper_plan_names_the_knowledge_file(capsys, monkeypatch, tmp_path):
    from glocal_lib.experiments.reproduce import reproduce_cli as main

    monkeypatch.delenv("GLOCAL_KANOCLIP_KNOWLEDGE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["--profile", "paper", "--list", "--only", "KT1", "--results-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "needs knowledge file knowledge/mvtec.json (MISSING)" in out and "kanoclip-noknowledge" in out
    (tmp_path / "knowledge").mkdir()
    (tmp_path / "knowledge" / "visa.json").write_text("{}")
    assert main(["--profile", "paper", "--list", "--only", "KT1", "--results-root", str(tmp_path)]) == 0
    assert "knowledge/visa.json (present)" in capsys.readouterr().out
