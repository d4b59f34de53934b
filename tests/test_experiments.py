"""REPORT: experiment registry, published values, tables, figures, index, notebooks and the reproduce CLI.

Tables and figures are built from fake run folders in the contract's format (tests/report_fakes.py),
whose metric values are a known function of the run name, so every expected cell is recomputed here
independently of the table code.
"""

from __future__ import annotations

import filecmp
import json
import math
import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from report_fakes import FakeProfile, FakeStore, categories, fake_value, populate

from glocal_lib.errors import ConfigError
from glocal_lib.experiments import figures, kinds, paper_values, report, tables
from glocal_lib.experiments.kinds.comparison import MEAN_SUBSET
from glocal_lib.experiments.provenance import SMOKE_LABEL
from glocal_lib.experiments.registry import load_registry

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS_MD = Path("/work/shared/spec/experiments.md")
TABLE_IDS = ["T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "TA", "TE", "TX", "KT1", "KT2", "KT3"]
TABLE_IDS += ["V1", "V2", "V3", "V4", "V5", "V6", "VX"]  # ViP2-CLIP's Tables 1-6 and paper vs code
TABLE_IDS += ["AX"]  # AdaCLIP: released code vs alternatives (issue 13)
FIGURE_IDS = [f"F{i}" for i in range(3, 37)]
ALL_IDS = TABLE_IDS + ["RC"] + FIGURE_IDS  # RC: drawn by experiments.verify (tests/test_verify.py)


# ------------------------------------------------------------------------------------ registry
def test_registry_lists_every_experiments_md_artifact() -> None:
    reg = load_registry(profile="smoke")
    assert sorted(reg.artifacts) == sorted(ALL_IDS)
    if EXPERIMENTS_MD.is_file():  # the spec's own ids (ranges F6–F8, F12–F36 expanded)
        text = EXPERIMENTS_MD.read_text()
        ids = set(re.findall(r"^\| (T\d+|TA|TE|TX|F\d+)\b", text, re.M))
        for lo, hi in re.findall(r"^\| F(\d+)[–-]F(\d+)", text, re.M):
            ids |= {f"F{i}" for i in range(int(lo), int(hi) + 1)}
        ids |= {"T9", "T10"}  # "T9, T10" share one row
        assert ids <= set(reg.artifacts), sorted(ids - set(reg.artifacts))


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_every_artifact_resolves_to_runs_for_both_presets(profile: str) -> None:
    for preset in ("glocalclip-released", "glocalclip-paper"):
        reg = load_registry(profile=profile, glocal_preset=preset)
        for aid in reg.artifacts:
            art = reg.artifact(aid)
            plan = reg.plan([aid])
            if art["kind"] == "dataset_stats":
                assert not plan.train_jobs and not plan.eval_jobs
            elif art["kind"] == "umap":
                assert plan.train_jobs, aid
            elif art["kind"] == "released_checkpoint":  # smoke: stand-in training runs; paper: user's files
                assert bool(plan.train_jobs) == (profile == "smoke") and not plan.eval_jobs, aid
            else:
                assert plan.eval_jobs, aid


def test_overrides_are_real_model_config_fields_and_build() -> None:
    from glocal_lib.config import load_preset

    reg = load_registry(profile="paper")
    plan = reg.plan()
    for job in plan.train_jobs:
        fields = set(type(load_preset(job.preset)).__dataclass_fields__)  # the preset's method config class
        assert set(job.overrides_dict) <= fields, job.name
        load_preset(job.preset, **job.overrides_dict)  # raises on an invalid combination
    for ej in plan.eval_jobs:
        if ej.train is None:
            load_preset(str(ej.preset), **dict(ej.overrides))


def test_shared_runs_are_deduplicated_and_named_by_config() -> None:
    reg = load_registry(profile="smoke")
    full = reg.plan()
    assert len({j.name for j in full.train_jobs}) == len(full.train_jobs)
    assert len({j.name for j in full.eval_jobs}) == len(full.eval_jobs)
    # the full model is the same run in T3, T4, T7, T8 (lambda 1) and TA, whichever asks first
    names = [{j.name for j in reg.plan([a]).train_jobs} for a in ("T3", "T4", "T7", "T8", "TA")]
    assert set.intersection(*names)
    # --only subsets name runs exactly as the full plan does
    assert {j.name for j in reg.plan(["T8"]).train_jobs} <= {j.name for j in full.train_jobs}
    # T3 +F3 (glocal split, no GCL) and T8 lambda 0 are one configuration
    t3 = {j.name for j in reg.plan(["T3"]).train_jobs}
    t8 = {j.name for j in reg.plan(["T8"]).train_jobs}
    assert any(n.endswith("-l0") for n in t3 & t8)


def test_released_preset_uses_train_set_variant_and_lambda_grid() -> None:
    from glocal_lib.config import load_preset, preset_info

    reg = load_registry(profile="paper")
    cells = reg.cells_for(reg.method("GlocalCLIP"), "GlocalCLIP", "industrial", "main", ["visa"])
    (cell,) = cells
    grid = preset_info("glocalclip-released")["lambda_grid"]["mvtec"]
    assert cell.select_on_test and sorted(c.lam for c in cell.candidates) == sorted(grid)
    for cand in cell.candidates:
        cfg = load_preset("glocalclip-released", **cand.job.train.overrides_dict)
        assert (cfg.normal_length, cfg.anomaly_length, cfg.deep_depth, cfg.deep_length) == (12, 13, 10, 2)
        assert cfg.gcl_lambda == cand.lam
    smoke = load_registry(profile="smoke")
    (scell,) = smoke.cells_for(smoke.method("GlocalCLIP"), "GlocalCLIP", "industrial", "main", ["visa"])
    assert sorted(c.lam for c in scell.candidates) == [0.0, 1.0]


def test_paper_text_preset_varies_by_evaluation_set() -> None:
    from glocal_lib.config import load_preset

    reg = load_registry(profile="paper", glocal_preset="glocalclip-paper")
    entry = reg.method("GlocalCLIP")
    lam = {}
    for ds in ("visa", "mpdd", "btad"):
        (cell,) = reg.cells_for(entry, "GlocalCLIP", "industrial", "main", [ds])
        assert not cell.select_on_test and len(cell.candidates) == 1
        lam[ds] = load_preset("glocalclip-paper", **cell.candidates[0].job.train.overrides_dict).gcl_lambda
    assert lam == {"visa": 0.0, "mpdd": 1.0, "btad": 0.0}
    # visa and btad share one training run (same config on the same training set)
    plan = reg.plan(["T1"])
    assert len([j for j in plan.train_jobs if j.preset == "glocalclip-paper" and j.train_dataset == "mvtec"]) == 2


def test_only_and_datasets_filters() -> None:
    reg = load_registry(profile="smoke", datasets=["visa"])
    assert reg.expand_ids(["F12-F14", "T1"]) == ["T1", "F12", "F13", "F14"]
    plan = reg.plan(["T1"])
    assert {j.dataset for j in plan.eval_jobs} == {"visa"}
    assert {j.train_dataset for j in plan.train_jobs} == {"mvtec"}  # VisA is evaluated with MVTec-trained prompts
    with pytest.raises(ConfigError, match="unknown artifact"):
        reg.expand_ids(["T99"])
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_registry(profile="smoke", datasets=["nope"])
    methods = load_registry(profile="smoke", methods=["GlocalCLIP"])
    assert {j.method_preset for j in methods.plan(["T1"]).eval_jobs} == {"glocalclip-released"}


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_zero_shot_and_published_only_methods(profile: str) -> None:
    """CLIP and WinCLIP are zero-shot eval runs (no training) in T1, T2, TE and F3; AdaCLIP is trained
    (preset adaclip-glocal-protocol, smoke shortcuts under the smoke profile only)."""
    from glocal_lib.config import load_preset

    reg = load_registry(profile=profile)
    assert reg.method("WinCLIP")["preset"] == "winclip" and reg.method("WinCLIP")["trained"] is False
    assert reg.method("AdaCLIP")["preset"] == "adaclip-glocal-protocol"
    win = [j for j in reg.plan(["T1", "T2"]).eval_jobs if j.method_preset == "winclip"]
    for j in win:
        cfg = load_preset("winclip", **{k: list(v) if isinstance(v, tuple) else v for k, v in j.overrides})
        if profile == "paper":  # the released/paper WinCLIP, unchanged
            assert j.overrides == () and j.name == f"winclip@{j.dataset}" and cfg.window_scales == (2, 3)
        else:  # scaled to the 8x8 smoke grid, and fast
            assert cfg.window_scales == (2,) and not cfg.use_class_names and max(cfg.window_scales) <= 8
    for aid in ("T1", "T2", "TE", "F3"):
        assert "WinCLIP" in reg.methods_of(reg.artifact(aid)), aid
        jobs = reg.plan([aid]).eval_jobs
        presets = {j.method_preset for j in jobs}
        assert {"clip", "winclip", "adaclip-glocal-protocol"} <= presets, aid
        for j in jobs:
            if j.method_preset in ("clip", "winclip"):
                assert j.train is None and j.spec(None).train_run is None and j.spec(None).preset == j.preset
        cells = [c for c in reg.artifact_cells(aid) if c.row == "AdaCLIP"]
        assert cells and all(c.candidates for c in cells), aid
        ada = {j.train.name for j in jobs if j.method_preset == "adaclip-glocal-protocol"}
        shortcut = "-batch_size8-class_namesobject-ensembleminimal-epochs1-hsf_skip_empty1-kmeanstorch"
        assert ada and all(n.endswith(shortcut) == (profile == "smoke") for n in ada), (aid, ada)
    # zero-shot runs never add training runs: WinCLIP adds exactly one eval run per dataset of T1+T2
    no_win = load_registry(profile=profile, methods=[m for m in reg.data["methods"] if m != "WinCLIP"])
    full, base = reg.plan(["T1", "T2", "TE", "F3"]), no_win.plan(["T1", "T2", "TE", "F3"])
    assert [j.name for j in full.train_jobs] == [j.name for j in base.train_jobs]
    n_datasets = len(reg.artifact("T1")["datasets"]) + len(reg.artifact("T2")["datasets"])
    assert len(full.eval_jobs) - len(base.eval_jobs) == n_datasets


def test_smoke_plan_stays_modest() -> None:
    plan = load_registry(profile="smoke").plan()
    # 140 + the 15 zero-shot WinCLIP runs of T1/T2 (~2 s each on the smoke profile) + 27 of KAnoCLIP's
    # tables (KT1-KT3: its protocol evaluates MVTec-trained models on DAGM and 7 medical sets) + AdaCLIP's
    # 15 eval and 4 train runs of T1/T2 + KAnoCLIP's T2 column (2 train runs: ClinicDB, ColonDB; 9 eval runs)
    # + ViP2-CLIP's 4 train and 24 eval runs (V1/V2 under its protocol, its T1/T2/TE column) and 4
    # MVTec-trained AnomalyCLIP medical evals of V2 (~10 s CPU in all)
    # + V3's (efficiency on VisA) ViP2-CLIP runs: all shared with V1 (MVTec AD- and VisA-trained, VisA eval)
    # + AdaCLIP-released in V1/V2 under its own protocol (smoke: 2 train runs on concatenated sets with
    # per-epoch validation, 6 eval runs; ~21 s CPU)
    # + ViP2-CLIP's Tables 5-6 (V5, V6): 6 train and 6 eval runs, and its paper vs code (VX): 4 and 4 (VisA only)
    # + AX (AdaCLIP released vs alternatives): 6 train runs on BTAD (2 epochs), 6 eval runs on MPDD; ~11 s CPU
    # + ViP2-CLIP's module ablation (V4): the 5 combinations not run by V1/V5 (5 train, 5 eval)
    assert len(plan.train_jobs) <= 73 and len(plan.eval_jobs) <= 261, plan.summary()


# ------------------------------------------------------------------------------ paper values
def test_packaged_paper_csvs_match_the_shared_transcriptions() -> None:
    shared = paper_values.SIBLING_DIR
    if not shared.is_dir():
        pytest.skip(f"{shared} not present (clean install): the packaged copy is the only one")
    for csv in sorted(paper_values.PACKAGED_DIR.glob("*.csv")):
        assert filecmp.cmp(csv, shared / csv.name, shallow=False), csv.name


def test_paper_values_lookup_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    df = paper_values.load_paper_table("glocalclip_table1.csv")
    v = paper_values.lookup(df, table="Table 1", domain="industrial", dataset="MVTec AD", method="CLIP",
                            level="image", metric="AUROC")
    assert v == 83.3
    assert paper_values.category_key("Metal nut") == "metal_nut"
    (tmp_path / "glocalclip_table1.csv").write_text(
        "paper,table,domain,dataset,category,method,level,metric,value,note\n"
        "glocalclip,Table 1,industrial,MVTec AD,,CLIP,image,AUROC,-,printed dash\n")
    monkeypatch.setenv("GLOCAL_PAPER_DIR", str(tmp_path))
    df = paper_values.load_paper_table("glocalclip_table1.csv")
    assert math.isnan(df["value"].iloc[0])


def test_published_value_is_lookup_without_a_copy_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The indexed lookup (comparison tables) gives what lookup on the whole table gives, for every key of
    every transcription (NaN where printed "-", the same error where a key is ambiguous), reads no table
    copy per call, and its index cannot be changed by a caller."""
    files = sorted(p.name for p in paper_values.paper_dir().glob("*.csv"))
    checked = 0
    for name in files:
        df = paper_values.load_paper_table(name)
        if not set(paper_values.VALUE_KEY) <= set(df.columns):
            continue
        for key in dict.fromkeys(df[list(paper_values.VALUE_KEY)].itertuples(index=False, name=None)):
            filters = dict(zip(paper_values.VALUE_KEY, key, strict=True))
            try:
                want: object = paper_values.lookup(df, **filters)
            except ConfigError as exc:
                want = str(exc)
            try:
                got: object = paper_values.published_value(name, **filters)
            except ConfigError as exc:
                got = str(exc)
            assert got == want or (isinstance(got, float) and math.isnan(got) and math.isnan(want)), (name, key)
            checked += 1
    assert checked > 1000
    key = dict(table="Table 1", domain="industrial", dataset="MVTec AD", method="CLIP", level="image", metric="AUROC")
    monkeypatch.setattr(paper_values, "load_paper_table", lambda name: pytest.fail("table copied per lookup"))
    assert paper_values.published_value("glocalclip_table1.csv", **key) == 83.3
    assert math.isnan(paper_values.published_value("glocalclip_table1.csv", **{**key, "method": "nobody"}))
    path = paper_values.paper_file("glocalclip_table1.csv")
    index = paper_values._value_index(str(path), path.stat().st_mtime)
    with pytest.raises(TypeError):
        index[tuple(key.values())] = (0.0,)  # type: ignore[index]


# ---------------------------------------------------------------------------------- fake runs
@pytest.fixture(scope="module")
def fake_results(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    root = tmp_path_factory.mktemp("results") / "smoke"
    profile = FakeProfile("smoke", root)
    reg = load_registry(profile="smoke")
    store = FakeStore(profile)
    populate(reg, store)
    return reg, store, root


def _cell(df: pd.DataFrame, **kw: str) -> pd.Series:
    sel = df
    for k, v in kw.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, kw
    return sel.iloc[0]


def test_comparison_table_puts_paper_beside_reproduced(fake_results: tuple) -> None:
    reg, store, root = fake_results
    table = kinds.build_table(reg, store, "T1")
    df = table.data
    # zero-shot CLIP on VisA: exactly one run, value from its metrics.csv mean row
    clip_visa = next(j for j in reg.plan(["T1"]).eval_jobs
                     if j.train is None and j.preset == "clip" and j.dataset == "visa")
    expected = 100 * np.mean([fake_value(clip_visa.name, c, "image_auroc") for c in ("candle", "pcb1")])
    row = _cell(df, row="CLIP", dataset="VisA", metric="image_auroc")
    assert row["reproduced"] == pytest.approx(expected)
    assert row["paper"] == 71.7  # glocalclip_table1.csv, industrial VisA CLIP image AUROC
    assert row["diff"] == pytest.approx(expected - 71.7)
    # the Mean row: mean of our per-dataset values vs the printed mean
    mean = _cell(df, row="CLIP", dataset="Mean", metric="image_auroc")
    per_ds = df[(df["row"] == "CLIP") & (df["metric"] == "image_auroc") & (df["dataset"] != "Mean")]
    assert mean["reproduced"] == pytest.approx(per_ds["reproduced"].mean())
    assert mean["paper"] == 76.1
    # AdaCLIP: reproduced (its own trained run) beside the published value, its source and smoke shortcuts noted
    ada_job = next(j for j in reg.plan(["T1"]).eval_jobs if j.method_preset == "adaclip-glocal-protocol"
                   and j.dataset == "mvtec")
    ada = _cell(df, row="AdaCLIP", dataset="MVTec AD", metric="image_auroc")
    want = 100 * np.mean([fake_value(ada_job.name, c, "image_auroc") for c in categories("mvtec")])
    assert ada["reproduced"] == pytest.approx(want) and ada["paper"] == 91.2
    assert any(n.startswith("AdaCLIP: preset adaclip-glocal-protocol") for n in table.notes)
    assert any(n.startswith("AdaCLIP (smoke profile): shortcuts") for n in table.notes)
    win_notes = [n for n in table.notes if n.startswith("WinCLIP:")]  # its source, no "not reproduced" reason
    assert len(win_notes) == 1 and win_notes[0].startswith("WinCLIP: preset winclip = zqhang/Accurate-WinCLIP-pytorch")
    # where the AnomalyCLIP column's setting comes from (methods.yaml `source`)
    assert any(n.startswith("AnomalyCLIP: preset anomalyclip = zqhang/AnomalyCLIP") and "2a7c886" in n
               for n in table.notes)


def test_winclip_is_reproduced_zero_shot_in_t1(fake_results: tuple) -> None:
    """WinCLIP: a zero-shot eval run (preset winclip, no training) per dataset, its value beside the published one."""
    reg, store, root = fake_results
    table = kinds.build_table(reg, store, "T1")
    df = table.data
    assert any(n.startswith("WinCLIP (smoke profile): shortcuts") for n in table.notes)  # printed under T1
    jobs = [j for j in reg.plan(["T1"]).eval_jobs if j.method_preset == "winclip"]
    assert {j.dataset for j in jobs} == {"mvtec", "visa", "mpdd", "btad", "sdd", "dtd"}
    assert all(j.train is None and dict(j.overrides) == {"use_class_names": False, "window_scales": (2,)}
               for j in jobs)  # the smoke profile's scaled WinCLIP (experiments.yaml profile_overrides)
    mvtec = next(j for j in jobs if j.dataset == "mvtec")
    expected = 100 * np.mean([fake_value(mvtec.name, c, "image_auroc") for c in ("bottle", "metal_nut")])
    row = _cell(df, row="WinCLIP", dataset="MVTec AD", metric="image_auroc")
    assert row["reproduced"] == pytest.approx(expected) and row["paper"] == 90.4
    assert row["diff"] == pytest.approx(expected - 90.4) and row["run_ids"]
    win = df[(df["row"] == "WinCLIP") & (df["dataset"] != "Mean")]
    assert win["reproduced"].notna().any() and (win["note"] != "not run yet").all()


def test_lambda_selected_on_test_is_the_best_and_marked(fake_results: tuple) -> None:
    reg, store, root = fake_results
    table = kinds.build_table(reg, store, "T1")
    (cell,) = reg.cells_for(reg.method("GlocalCLIP"), "GlocalCLIP", "industrial", "main", ["visa"])
    metrics = ["image_auroc", "image_ap", "pixel_auroc", "aupro_cflow"]

    def score(name: str) -> float:
        return np.mean([np.mean([fake_value(name, c, m) for c in ("candle", "pcb1")]) for m in metrics])

    best = max(cell.candidates, key=lambda c: score(c.job.name))
    row = _cell(table.data, row="GlocalCLIP", dataset="VisA", metric="pixel_auroc")
    assert row["selected_lambda"] == best.lam and bool(row["lambda_selected_on_test"])
    assert row["reproduced"] == pytest.approx(100 * np.mean([fake_value(best.job.name, c, "pixel_auroc")
                                                             for c in ("candle", "pcb1")]))
    md = tables.to_markdown(table)
    assert f"†λ={best.lam:g}" in md and "TEST set" in md


def test_ablation_table_domain_means_and_paper_rows(fake_results: tuple) -> None:
    reg, store, root = fake_results
    table = kinds.build_table(reg, store, "T7")
    cells = reg.cells_for(reg.variant("anchor_local"), "anchor_local", "industrial", "ablation")
    expected = np.mean([100 * np.mean([fake_value(c.candidates[0].job.name, cat, "image_ap")
                                       for cat in ("candle", "pcb1")]) for c in cells])
    row = _cell(table.data, row="LSP anchor", domain="industrial", metric="image_ap")
    assert row["reproduced"] == pytest.approx(expected)
    assert row["paper"] == 89.0 and row["diff"] == pytest.approx(expected - 89.0)
    med = _cell(table.data, row="GSP anchor (+GCL (full GlocalCLIP))", domain="medical", metric="aupro_cflow")
    assert med["paper"] == 75.0


@pytest.fixture(scope="module")
def built_tables(fake_results: tuple) -> dict[str, object]:
    """Every table drawn once into <root>/tables (with the SDD index notebook 00_data records), for the
    tests that read the drawn files, whichever of them runs first or alone."""
    reg, store, root = fake_results
    (root / "datasets").mkdir(parents=True, exist_ok=True)  # what notebook 00_data records
    pd.DataFrame({"image_path": ["a", "b", "c"], "category": ["x", "x", "x"], "label": [0, 1, 1],
                  "split": ["test"] * 3}).to_csv(root / "datasets" / "sdd.csv", index=False)
    store.refresh()  # the store caches what it read (earlier tables' sample-size notes read "no index")
    return kinds.build_tables(reg, store, None, root / "tables")


def test_every_table_writes_csv_md_html_with_provenance_and_smoke_label(fake_results: tuple,
                                                                        built_tables: dict[str, object]) -> None:
    reg, store, root = fake_results
    assert sorted(built_tables) == sorted(TABLE_IDS)
    for aid in TABLE_IDS:
        for ext in ("csv", "md", "html"):
            text = (root / "tables" / f"{aid}.{ext}").read_text(encoding="utf-8")
            assert SMOKE_LABEL.upper() in text.upper(), (aid, ext)
            assert "profile" in text and "glocalclip-released" in text, (aid, ext)
            assert "AUPRO" in text, (aid, ext)
        prov = json.loads((root / "tables" / f"{aid}.provenance.json").read_text())
        assert prov["profile"] == "smoke" and prov["banner"] == SMOKE_LABEL and "git_commit" in prov
        if aid != "T5":
            assert prov["run_ids"], aid
        back = tables.read_table_csv(root / "tables" / f"{aid}.csv")
        assert list(back.columns) == tables.LONG_COLUMNS
        finite = back.dropna(subset=["reproduced", "paper"])
        withheld = finite["note"].fillna("").str.contains(MEAN_SUBSET, regex=False)  # means over other datasets
        assert (finite.loc[withheld, "dataset"] == "Mean").all() and finite.loc[withheld, "diff"].isna().all()
        finite = finite[~withheld]
        assert np.allclose(finite["diff"], finite["reproduced"] - finite["paper"], atol=1e-3)
    t5 = tables.read_table_csv(root / "tables" / "T5.csv")
    sdd = t5[t5["dataset"] == "SDD"].set_index("metric")
    assert sdd.loc["test_normal", "reproduced"] == 1 and sdd.loc["test_anomalous", "reproduced"] == 2
    assert sdd.loc["test_normal", "paper"] == 181 and sdd.loc["test_anomalous", "paper"] == 74


def test_te_per_category_uses_anomalyclip_appendix(fake_results: tuple) -> None:
    reg, store, root = fake_results
    df = kinds.build_table(reg, store, "TE").data
    row = _cell(df, row="AnomalyCLIP", dataset="MVTec AD", category="metal_nut", metric="pixel_auroc")
    paper = paper_values.load_paper_table("anomalyclip_appendix_mvtec_per_category.csv")
    pub = paper[(paper["method"] == "AnomalyCLIP") & (paper["category"] == "Metal nut")
                & (paper["level"] == "pixel") & (paper["metric"] == "AUROC")]["value"].iloc[0]
    assert row["paper"] == pub and not math.isnan(row["reproduced"])
    glocal = df[(df["row"] == "GlocalCLIP") & (df["dataset"] == "MVTec AD")]
    assert glocal["paper"].isna().all()  # GlocalCLIP's appendix E is not in any source


def test_tx_compares_released_and_paper_text(fake_results: tuple) -> None:
    reg, store, root = fake_results
    df = kinds.build_table(reg, store, "TX").data
    sections = list(dict.fromkeys(df["section"]))
    assert len(sections) == 4 and any("cflow" in s for s in sections)
    sub = df[(df["section"] == sections[0]) & (df["dataset"] == "VisA") & (df["metric"] == "image_auroc")]
    a, b, d = (sub[sub["row"].str.startswith(p)]["reproduced"].iloc[0] for p in ("A:", "B:", "B −"))
    assert d == pytest.approx(b - a)
    assert bool(sub[sub["row"].str.startswith("A:")]["lambda_selected_on_test"].iloc[0])


def test_missing_runs_are_reported_not_invented(tmp_path: Path) -> None:
    reg = load_registry(profile="smoke")
    store = FakeStore(FakeProfile("smoke", tmp_path))
    populate(reg, store, ["T7"], skip={j.name for j in reg.plan(["T7"]).eval_jobs if "anchorlocal" in j.name})
    df = kinds.build_table(reg, store, "T7").data
    assert df[df["row"] == "LSP anchor"]["reproduced"].isna().all()
    assert df[df["row"] != "LSP anchor"]["reproduced"].notna().all()


# ------------------------------------------------------------------------------------ figures
def test_figures_png_pdf_with_provenance(fake_results: tuple) -> None:
    reg, store, root = fake_results
    ids = ["F3", "F4", "F5", "F9", "F11", "F12", "F36"]  # UMAP (F6-F8): test_umap_figure (slow: numba JIT)
    kinds.build_figures(reg, store, ids, root / "figures")
    for aid in ids:
        png, pdf = root / "figures" / f"{aid}.png", root / "figures" / f"{aid}.pdf"
        assert png.stat().st_size > 5000 and pdf.stat().st_size > 2000
        assert pdf.read_bytes()[:4] == b"%PDF"
        prov = json.loads((root / "figures" / f"{aid}.provenance.json").read_text())
        assert prov["banner"] == SMOKE_LABEL and prov["run_ids"], aid


@pytest.mark.slow
def test_umap_figure_draws_every_epoch(fake_results: tuple) -> None:
    reg, store, root = fake_results
    kinds.build_figures(reg, store, ["F8"], root / "figures")
    prov = json.loads((root / "figures" / "F8.provenance.json").read_text())
    assert len(prov["run_ids"]) == len(reg.umap_train_jobs("F8")) == 4  # ClinicDB + ColonDB x lambda {1, 0}
    assert (root / "figures" / "F8.png").stat().st_size > 5000


@pytest.mark.slow
def test_umap_handles_a_two_epoch_run() -> None:
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(12, 8)).astype(np.float32)  # 3 epochs (E0..E2) x 4 prompts
    xy = figures.umap_2d(pts)
    assert xy.shape == (12, 2) and np.isfinite(xy).all()
    assert figures.umap_2d(pts[:3]).shape == (3, 2)


# --------------------------------------------------------------------------------- index page
def test_index_lists_every_artifact_with_relative_links(fake_results: tuple, built_tables: dict[str, object]) -> None:
    reg, store, root = fake_results
    assert "T1" in built_tables  # the index links the tables drawn so far
    path = report.build_index(reg, root, store.profile)
    text = path.read_text(encoding="utf-8")
    assert "smoke-banner" in text and SMOKE_LABEL in text
    for aid in ALL_IDS:
        assert f"data-artifact='{aid}'" in text
    assert "href='tables/T1.html'" in text and "/tmp" not in text.split("<main>")[1].split("runs:")[0]


# ---------------------------------------------------------------------------------- notebooks (sources: test_notebooks.py)
def test_reproduce_cli_list_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from glocal_lib.experiments.reproduce import reproduce_cli, select_notebooks

    assert reproduce_cli(["--profile", "smoke", "--only", "T7", "--list"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "anchorlocal" in out and "03_ablations" in out
    reg = load_registry(profile="smoke")
    assert select_notebooks(["F6"], reg) == ["00_data", "01_train", "02_evaluate", "04_prompt_umap",
                                             "06_tables_report"]
    assert select_notebooks(["T3"], reg) == ["00_data", "01_train", "02_evaluate", "03_ablations", "06_tables_report"]
    with pytest.raises(ConfigError):
        reproduce_cli(["--only", "T42", "--list"])


def test_failed_notebook_message_names_notebook_cell_and_log(tmp_path: Path) -> None:
    from glocal_lib.experiments.reproduce import NotebookFailed, run_notebooks

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("y = x + 1"), nbformat.v4.new_code_cell("raise ValueError('boom')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(nb, src / "99_broken.ipynb")
    with pytest.raises(NotebookFailed) as err:
        run_notebooks(["99_broken"], {"x": 2}, tmp_path / "out", source_dir=src, echo=False)
    msg = str(err.value)
    assert "99_broken.ipynb" in msg and "cell" in msg and "boom" in msg
    assert str(tmp_path / "out" / "logs" / "99_broken.log") in msg
    assert (tmp_path / "out" / "notebooks" / "99_broken.FAILED.ipynb").is_file()  # never under the finished name
    assert not (tmp_path / "out" / "notebooks" / "99_broken.ipynb").exists()


def test_empty_selection_plans_nothing() -> None:
    reg = load_registry(profile="smoke")
    assert reg.expand_ids([]) == [] and not reg.plan([]).eval_jobs and not reg.plan([]).train_jobs


@pytest.mark.slow
def test_one_notebook_runs_alone_with_other_parameters(tmp_path: Path) -> None:
    """02_evaluate for one dataset and one zero-shot method, through papermill, into a fresh results root."""
    from glocal_lib.experiments.reproduce import run_notebooks

    root = tmp_path / "smoke"
    params = {"profile": "smoke", "datasets": ["sdd"], "methods": ["CLIP"], "only": ["T1"],
              "results_root": str(root), "data_root": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache")}
    run_notebooks(["02_evaluate"], params, root, echo=False)
    runs = sorted(p.name for p in (root / "runs" / "eval").iterdir())
    assert len(runs) == 1 and runs[0].startswith("clip-sdd-"), runs
    assert (root / "runs" / "eval" / runs[0] / "DONE").is_file()
    nb = nbformat.read(root / "notebooks" / "02_evaluate.ipynb", as_version=4)
    assert nb.metadata["papermill"]["parameters"]["datasets"] == ["sdd"]


def test_papermill_string_parameters_become_lists():
    from glocal_lib.experiments.pipeline import as_name_list

    assert as_name_list('["visa", "mvtec"]') == ["visa", "mvtec"]
    assert as_name_list("visa, mvtec") == ["visa", "mvtec"]
    assert as_name_list("visa") == ["visa"]
    assert as_name_list(("visa",)) == ["visa"]
    assert as_name_list(None) is None
