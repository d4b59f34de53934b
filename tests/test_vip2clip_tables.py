"""ViP2-CLIP's Tables 1-2 (V1, V2) and its column in T1/T2/TE: its own protocol (MVTec AD -> everything,
VisA -> MVTec AD), image and pixel F1 drawn from metrics.csv, and every published value looked up in the
right paper's CSV under that paper's names. Expected values are read here from the CSVs with the csv
module and recomputed from the fake runs (tests/report_fakes.py), not taken from the table code."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from report_fakes import FakeProfile, FakeStore, categories, fake_value, populate

from glocal_lib.errors import ConfigError
from glocal_lib.experiments import kinds, tables
from glocal_lib.experiments.registry import REGISTRY_FILE, load_registry

PAPER = Path(__file__).resolve().parents[1] / "glocal_lib" / "experiments" / "paper"
INDUSTRIAL = ("visa", "mpdd", "sdd", "btad", "dagm", "dtd")
MEDICAL = ("headct", "brainmri", "br35h", "isic", "colondb", "clinicdb", "endo", "kvasir")


def _published(file: str, dataset: str, method: str, level: str, metric: str) -> float:
    with open(PAPER / file, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh)
                if (r["dataset"], r["method"], r["level"], r["metric"]) == (dataset, method, level, metric)]
    assert len(rows) == 1, (file, dataset, method, level, metric)
    return float(rows[0]["value"])


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_v1_v2_plan_vip2clips_protocol(profile: str) -> None:
    reg = load_registry(profile=profile)
    v1 = {(c.train_dataset, c.dataset) for c in reg.artifact_cells("V1") if c.row == "ViP2-CLIP"}
    assert v1 == {("mvtec", d) for d in INDUSTRIAL} | {("visa", "mvtec")}
    v2 = {(c.train_dataset, c.dataset) for c in reg.artifact_cells("V2") if c.row == "ViP2-CLIP"}
    assert v2 == {("mvtec", d) for d in MEDICAL}  # medical too: the MVTec AD-trained prompts
    for aid in ("V1", "V2"):
        cells = reg.artifact_cells(aid)
        assert {c.row for c in cells if not c.candidates} == {"APRIL-GAN"}  # published only
        plan = reg.plan([aid])
        # ViP2-CLIP's protocol trains on MVTec AD and VisA only; AdaCLIP-released on its models A and B
        assert {j.train_dataset for j in plan.train_jobs if j.preset != "adaclip-released"} <= {"mvtec", "visa"}
        assert {j.train_dataset for j in plan.train_jobs if j.preset == "adaclip-released"} == {
            ("mvtec", "colondb"), ("visa", "clinicdb")}
        names = {j.name for j in plan.eval_jobs}
        assert {f"vip2clip-released-mvtec@{d}" for d in (INDUSTRIAL if aid == "V1" else MEDICAL)} <= names
        assert all(j.train.preset == "vip2clip-released" for j in plan.eval_jobs
                   if j.train is not None and j.name.startswith("vip2clip"))
    # T2's ViP2-CLIP column follows GlocalCLIP's protocol (ClinicDB-trained; ColonDB for ClinicDB)
    t2 = {(c.train_dataset, c.dataset) for c in reg.artifact_cells("T2") if c.row == "ViP2-CLIP"}
    assert t2 == {("clinicdb", d) for d in ("headct", "brainmri", "br35h", "isic", "colondb", "kvasir", "endo",
                                            "tn3k")} | {("colondb", "clinicdb")}
    # the industrial protocol is the same in both papers: T1's and V1's ViP2-CLIP cells share their runs
    t1 = {c.dataset: c.candidates for c in reg.artifact_cells("T1") if c.row == "ViP2-CLIP"}
    v1c = {c.dataset: c.candidates for c in reg.artifact_cells("V1") if c.row == "ViP2-CLIP"}
    assert all(t1[d] == v1c[d] for d in t1)


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    root = tmp_path_factory.mktemp("results") / "smoke"
    reg = load_registry(profile="smoke")
    store = FakeStore(FakeProfile("smoke", root))
    ids = ["V1", "V2", "T1", "T2", "TE"]
    populate(reg, store, ids)
    return reg, {aid: kinds.build_table(reg, store, aid) for aid in ids}


def _cell(table: Any, dataset: str, row: str, metric: str, category: str | None = None) -> Any:
    d = table.data
    hit = d[(d["dataset"] == dataset) & (d["row"] == row) & (d["metric"] == metric)
            & ((d["category"] == category) if category is not None else True)]
    assert len(hit) == 1, (dataset, row, metric, category)
    return hit.iloc[0]


def _fake_mean(name: str, dataset: str, metric: str) -> float:
    return 100 * float(np.mean([fake_value(name, c, metric) for c in categories(dataset)]))


def test_f1_columns_come_from_the_runs_metrics(fake: tuple) -> None:
    reg, built = fake
    v1, v2 = built["V1"], built["V2"]
    assert list(dict.fromkeys(v1.data["metric"])) == ["image_auroc", "image_ap", "image_f1max", "pixel_auroc",
                                                      "aupro_cflow", "pixel_f1max"]
    for table, ds, metric in ((v1, "dagm", "image_f1max"), (v1, "sdd", "pixel_f1max"), (v2, "headct", "image_f1max"),
                              (v2, "kvasir", "pixel_f1max")):
        (cell,) = [c for c in reg.artifact_cells(table.artifact) if c.row == "ViP2-CLIP" and c.dataset == ds]
        row = _cell(table, reg.dataset_name(ds), "ViP2-CLIP", metric)
        assert row["reproduced"] == pytest.approx(_fake_mean(cell.candidates[0].job.name, ds, metric))
    # our Mean: over the datasets that define the metric (pixel F1 of V2: the 5 pixel-level sets)
    cells = [c for c in reg.artifact_cells("V2") if c.row == "ViP2-CLIP" and c.dataset in
             ("isic", "colondb", "clinicdb", "endo", "kvasir")]
    expected = np.mean([_fake_mean(c.candidates[0].job.name, c.dataset, "pixel_f1max") for c in cells])
    assert _cell(v2, "Mean", "ViP2-CLIP", "pixel_f1max")["reproduced"] == pytest.approx(expected)
    md = tables.to_markdown(v1)
    assert "## image F1-max" in md and "## pixel F1-max" in md


def test_v1_v2_published_values_under_vip2clips_names(fake: tuple) -> None:
    _, built = fake
    v1, v2 = built["V1"], built["V2"]
    t1, t2 = "vip2clip_table1.csv", "vip2clip_table2.csv"
    assert _cell(v1, "SDD", "ViP2-CLIP", "image_f1max")["paper"] == _published(t1, "KSDD", "ViP2-CLIP", "image", "F1")
    assert _cell(v1, "DAGM", "AnomalyCLIP", "aupro_cflow")["paper"] == _published(t1, "DAGM", "AnomalyCLIP", "pixel",
                                                                                 "PRO")
    row = _cell(v1, "Mean", "AdaCLIP-released", "pixel_f1max")  # the CSV prints AdaCLIP, its average AVERAGE
    assert row["paper"] == _published(t1, "AVERAGE", "AdaCLIP", "pixel", "F1")
    apr = _cell(v1, "VisA", "APRIL-GAN", "image_auroc")
    assert apr["paper"] == _published(t1, "VisA", "APRIL-GAN", "image", "AUROC") and math.isnan(apr["reproduced"])
    assert _cell(v2, "Br35H", "ViP2-CLIP", "image_ap")["paper"] == _published(t2, "Brain35H", "ViP2-CLIP", "image", "AP")
    assert _cell(v2, "Mean", "CLIP", "aupro_cflow")["paper"] == _published(t2, "AVERAGE", "CLIP", "pixel", "PRO")
    assert set(v1.data["paper_source"].replace("", np.nan).dropna()) == {"vip2clip_table1.csv (Table 1)"}
    notes = " ".join(v1.notes)
    assert "APRIL-GAN: published values only" in notes and "AdaCLIP-released: published values only" not in notes
    # WinCLIP's printed AVERAGE disagrees with its rows in the paper: flagged as in T1
    assert tables.INCONSISTENT_MEAN in _cell(v1, "Mean", "WinCLIP", "image_auroc")["note"]


def test_vip2clip_column_in_t1_t2_te_takes_its_own_papers_values(fake: tuple) -> None:
    _, built = fake
    t1, t2, te = built["T1"], built["T2"], built["TE"]
    assert list(dict.fromkeys(t1.data["row"]))[0] == "GlocalCLIP"  # the proposed method stays first
    vip = _cell(t1, "VisA", "ViP2-CLIP", "aupro_cflow")
    assert vip["paper"] == _published("vip2clip_table1.csv", "VisA", "ViP2-CLIP", "pixel", "PRO")
    assert vip["paper_source"] == "vip2clip_table1.csv (Table 1)"
    assert _cell(t1, "SDD", "ViP2-CLIP", "image_auroc")["paper"] == _published("vip2clip_table1.csv", "KSDD",
                                                                               "ViP2-CLIP", "image", "AUROC")
    glocal = _cell(t1, "VisA", "GlocalCLIP", "aupro_cflow")  # the other columns keep T1's own paper
    assert glocal["paper"] == _published("glocalclip_table1.csv", "VisA", "GlocalCLIP", "pixel", "PRO")
    assert glocal["paper_source"] == "glocalclip_table1.csv (Table 1)"
    # ViP2-CLIP's AVERAGE covers DAGM, T1's Mean does not: no published value beside it, and the note says why
    assert math.isnan(_cell(t1, "Mean", "ViP2-CLIP", "image_auroc")["paper"])
    (gap,) = [n for n in t1.notes if n.startswith("ViP2-CLIP: no published value beside our Mean")]
    assert "its AVERAGE also averages DAGM" in gap and "our Mean also" not in gap
    (gap,) = [n for n in t2.notes if n.startswith("ViP2-CLIP: no published value beside our Mean")]
    assert "pixel AUROC, PRO (cflow): our Mean also averages TN3K" in gap and "image" not in gap
    assert any(n.startswith("ViP2-CLIP: published values from ViP2-CLIP paper (arXiv 2505.17692), Table 1")
               for n in t1.notes)
    # T2: another protocol in its paper (MVTec AD-trained), said; image AVERAGE = the same 3 sets, pixel not (TN3K)
    assert any(n.startswith("ViP2-CLIP: not published under this protocol") for n in t2.notes)
    assert _cell(t2, "Br35H", "ViP2-CLIP", "image_auroc")["paper"] == _published(
        "vip2clip_table2.csv", "Brain35H", "ViP2-CLIP", "image", "AUROC")
    assert _cell(t2, "Mean", "ViP2-CLIP", "image_auroc")["paper"] == _published(
        "vip2clip_table2.csv", "AVERAGE", "ViP2-CLIP", "image", "AUROC")
    assert math.isnan(_cell(t2, "Mean", "ViP2-CLIP", "pixel_auroc")["paper"])
    assert math.isnan(_cell(t2, "TN3K", "ViP2-CLIP", "pixel_auroc")["paper"])  # not in its paper
    # TE: its dataset means from Table 1 / Table 2, no per-category published value
    mean = _cell(te, "Kvasir", "ViP2-CLIP", "aupro_cflow", category="mean")
    assert mean["paper"] == _published("vip2clip_table2.csv", "Kvasir", "ViP2-CLIP", "pixel", "PRO")
    assert _cell(te, "MPDD", "ViP2-CLIP", "image_ap", category="mean")["paper"] == _published(
        "vip2clip_table1.csv", "MPDD", "ViP2-CLIP", "image", "AP")
    per_cat = te.data[(te.data["row"] == "ViP2-CLIP") & (te.data["category"] != "mean")]
    assert len(per_cat) and per_cat["paper"].isna().all()
    for table in (t1, t2, te):
        assert any("vip2clip_table" in s for s in table.provenance["published_values"]), table.artifact


def test_paper_source_survives_the_csv(fake: tuple, tmp_path: Path) -> None:
    _, built = fake
    tables.write_table(built["T1"], tmp_path)
    back = tables.read_table_csv(tmp_path / "T1.csv")
    assert list(back["paper_source"]) == list(built["T1"].data["paper_source"])  # '' stays '', not NaN


def test_a_source_without_file_is_a_clear_error(tmp_path: Path) -> None:
    data = yaml.safe_load(REGISTRY_FILE.read_text(encoding="utf-8"))
    data["artifacts"]["T1"]["paper"]["sources"] = {"ViP2-CLIP": {"table": "Table 1"}}
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    reg = load_registry(path, profile="smoke")
    store = FakeStore(FakeProfile("smoke", tmp_path / "smoke"))
    with pytest.raises(ConfigError, match=r"paper.sources.ViP2-CLIP lacks \['file'\]"):
        kinds.build_table(reg, store, "T1")
