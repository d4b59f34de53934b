"""V3 (`efficiency_table`, ViP2-CLIP's Table 3): trainable parameters at the full-size architecture equal
the specs' formulas, and times and peak memory are read back exactly from the runs' timing.json."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from report_fakes import FakeProfile, FakeStore, populate

from glocal_lib.config import load_preset
from glocal_lib.engine.usage import PeakMemory
from glocal_lib.experiments import kinds
from glocal_lib.experiments.kinds.efficiency import eval_cells, timed_train_jobs
from glocal_lib.experiments.paper_values import load_paper_table, lookup
from glocal_lib.experiments.registry import load_registry
from glocal_lib.experiments.tables import NOT_RECORDED_NOTE, to_markdown
from glocal_lib.model.counting import full_size_count

D, W, WT = 768, 1024, 768  # ViT-L/14@336: joint embedding, vision width, text width


def vip2_formula(n: int, r: int, hidden: int = 384) -> int:
    """spec vip2clip.md section 7: ICA 2n*Wt + r*Wt + D + r*(D*h + h + h*Wt + Wt); FGP 4*(D*D + D) + 1."""
    return 2 * n * WT + r * WT + D + r * (D * hidden + hidden + hidden * WT + WT) + 4 * (D * D + D) + 1


def test_vip2clip_count_is_the_spec_formula_and_the_papers_4_15_m() -> None:
    count = full_size_count(load_preset("vip2clip-released"))
    assert count.modules == count.optimised == vip2_formula(7, 3) == 4_149_121
    # built from the modules, not a formula: other prompt lengths follow the formula too
    other = full_size_count(load_preset("vip2clip-released", n_ctx=5, n_cls=2, ica_hidden=128))
    assert other.modules == vip2_formula(5, 2, 128)


def test_anomalyclip_count_includes_its_unused_projections_as_the_paper_does() -> None:
    count = full_size_count(load_preset("anomalyclip"))
    used = 2 * 12 * WT + 8 * 4 * WT  # two 12-token contexts, 8 deep prompts of 4 tokens (depth 9)
    assert count.optimised == used == 43_008
    assert count.modules == used + 8 * (WT * 896 + 896) == 5_555_200  # spec vip2clip.md section 10


def test_adaclip_count_is_the_spec_formula() -> None:
    j, lp, n_layers = 4, 5, 4  # spec adaclip.md section 10
    formula = (j * lp * (WT + W) + n_layers * (W * D + D) + (D * D + D) + lp * (D * W + W) + lp * (D * WT + WT))
    count = full_size_count(load_preset("adaclip-glocal-protocol"))
    assert count.modules == count.optimised == formula == 10_665_472


@pytest.mark.parametrize(("method", "preset"), [("ViP2-CLIP", "vip2clip-released"), ("AnomalyCLIP", "anomalyclip"),
                                                ("AdaCLIP", "adaclip-glocal-protocol")])
def test_published_parameter_counts_are_the_rounded_full_counts(method: str, preset: str) -> None:
    paper = load_paper_table("vip2clip_table3.csv")
    published = lookup(paper, table="Table 3", dataset="VisA", method=method, metric="Trainable Parameters (M)")
    assert round(full_size_count(load_preset(preset)).modules / 1e6, 2) == published


def test_peak_memory_record_names_its_kind_and_hardware() -> None:
    rec = PeakMemory("cpu").start().record()
    assert rec["peak_memory_bytes"] is None or rec["peak_memory_bytes"] > 0
    assert "cpu" in rec["peak_memory_kind"] and "CPU" in rec["hardware"]


# ---------------------------------------------------------------------------------- drawing
TRAIN = {"epochs_s": {"1": 1.25, "2": 2.5}, "cache_build_s": 3.0, "features_s": 0.01, "model_build_s": 0.1,
         "peak_memory_bytes": 2_500_000_000, "peak_memory_kind": "cuda max_memory_allocated", "hardware": "GPU X"}
EVAL = {"images": 8.0, "load_s": 0.08, "predict_s": 0.4, "cache_build_s_per_image": 0.005,
        "peak_memory_bytes": 1_250_000_000, "peak_memory_kind": "cuda max_memory_allocated", "hardware": "GPU X"}


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    root = tmp_path_factory.mktemp("results") / "smoke"
    reg = load_registry(profile="smoke")
    store = FakeStore(FakeProfile("smoke", root))
    populate(reg, store, ["V3"])
    art = reg.artifact("V3")
    for i, (_, job) in enumerate(timed_train_jobs(reg, art)):
        timing = {**TRAIN, "epochs_s": {k: v * (i + 1) for k, v in TRAIN["epochs_s"].items()}}
        (store.locate_train(job) / "timing.json").write_text(json.dumps(timing))
    for i, cell in enumerate(eval_cells(reg, art)):
        path = store.locate_eval(cell.candidates[0].job)
        cfg = json.loads((path / "config.json").read_text())
        cached = i != 1  # the second method (AdaCLIP) is image-based: no cache build time is added
        cfg["identity"] = {"features": "cache-fp16" if cached else "images"}
        (path / "config.json").write_text(json.dumps(cfg))
        (path / "timing.json").write_text(json.dumps({**EVAL, "predict_s": EVAL["predict_s"] * (i + 1)}))
    return reg, kinds.build_table(reg, store, "V3")


def _cell(table: Any, method: str, quantity: str) -> tuple[float, float]:
    df = table.data
    hit = df[(df["row"] == method) & (df["metric"] == quantity)]
    assert len(hit) == 1, (method, quantity)
    return float(hit["reproduced"].iloc[0]), float(hit["paper"].iloc[0])


def test_efficiency_table_reads_the_run_records_back_exactly(drawn: tuple[Any, Any]) -> None:
    reg, table = drawn
    methods = reg.artifact("V3")["methods"]
    assert methods == ["AnomalyCLIP", "AdaCLIP", "ViP2-CLIP"]
    for i, m in enumerate(methods):
        train_s = 3.0 + (1.25 + 2.5) * (i + 1)
        assert _cell(table, m, "train_time_s")[0] == pytest.approx(train_s, abs=1e-12)
        assert _cell(table, m, "train_time_h")[0] == pytest.approx(train_s / 3600, abs=1e-15)
        assert _cell(table, m, "train_epochs")[0] == 2
        per_image = (0.08 + 0.4 * (i + 1)) / 8 + (0.005 if i != 1 else 0.0)
        assert _cell(table, m, "infer_ms")[0] == pytest.approx(1000 * per_image, abs=1e-9)
        assert _cell(table, m, "train_peak_gb")[0] == pytest.approx(2.5)
        assert _cell(table, m, "eval_peak_gb")[0] == pytest.approx(1.25)
    paper = load_paper_table("vip2clip_table3.csv")
    for quantity, metric in reg.artifact("V3")["paper"]["metrics"].items():
        for m in methods:
            expect = lookup(paper, table="Table 3", dataset="VisA", method=m, metric=metric)
            assert not math.isnan(expect) and _cell(table, m, quantity)[1] == expect
    assert _cell(table, "ViP2-CLIP", "params_m")[0] == pytest.approx(4.149121)
    assert _cell(table, "AnomalyCLIP", "params_optimised_m")[0] == pytest.approx(0.043008)
    notes = " ".join(table.notes)
    assert "GPU X" in notes and "cuda max_memory_allocated" in notes and "4,149,121" in notes


def test_efficiency_table_prints_the_counts_with_their_digits(drawn: tuple[Any, Any]) -> None:
    md = to_markdown(drawn[1])
    assert "4.149 / 4.150 (-0.001)" in md and "5.555 / 5.560 (-0.005)" in md


def test_runs_without_records_leave_the_cells_empty_and_say_so(tmp_path: Path) -> None:
    reg = load_registry(profile="smoke")
    store = FakeStore(FakeProfile("smoke", tmp_path / "smoke"))
    populate(reg, store, ["V3"])  # fake runs without timing.json: made before the engine recorded it
    table = kinds.build_table(reg, store, "V3")
    assert math.isnan(_cell(table, "ViP2-CLIP", "infer_ms")[0])
    assert any("not recorded by this run" in n for n in table.notes)
    hit = table.data[(table.data["row"] == "ViP2-CLIP") & (table.data["metric"] == "infer_ms")]
    assert hit["note"].iloc[0] == NOT_RECORDED_NOTE and "not recorded /" in to_markdown(table)
    assert _cell(table, "ViP2-CLIP", "params_m")[0] == pytest.approx(4.149121)  # counts need no run


def test_engine_runs_record_what_the_efficiency_table_reads(tmp_path_factory: pytest.TempPathFactory) -> None:
    from helpers_engine import SMALL, profile_at, shared_root, small_data

    from glocal_lib.engine import EvalSpec, TrainSpec, run_eval, run_train

    prof = profile_at(shared_root(tmp_path_factory), "res-efficiency")
    train_data, eval_data = small_data(prof, "mvtec", ["bottle"]), small_data(prof, "visa", ["candle"])
    train_dir = run_train(TrainSpec("eff-mvtec", train_dataset="mvtec", overrides=SMALL, epochs=1), prof,
                          progress=False, data=train_data)
    eval_dir = run_eval(EvalSpec("eff@visa", "visa", train_run=train_dir), prof, progress=False, data=eval_data)
    t = json.loads((train_dir / "timing.json").read_text())
    e = json.loads((eval_dir / "timing.json").read_text())
    assert t["cache_build_s"] > 0 and len(t["epochs_s"]) == 1
    assert e["images"] == len(eval_data.index) and e["predict_s"] > 0 and e["load_s"] >= 0
    assert e["cache_build_s_per_image"] > 0  # the VisA cache's own build time over its images
    assert e["predict_batch"] >= 1
    for rec in (t, e):
        assert rec["peak_memory_bytes"] > 0 and "cpu peak RSS" in rec["peak_memory_kind"] and "CPU" in rec["hardware"]
        assert rec["cpu_s"] > 0
