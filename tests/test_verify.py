"""`glocal verify` / artifact RC: blob ids, missing files, and the whole check on smoke stand-ins."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from helpers_engine import SMALL, profile_at, shared_root

from glocal_lib.cli import main as glocal_main
from glocal_lib.experiments import verify
from glocal_lib.experiments.paper_values import load_paper_table
from glocal_lib.experiments.registry import load_registry
from glocal_lib.experiments.tables import read_table_csv
from glocal_lib.io import git_blob_id
from glocal_lib.model import build_model, export_official

RELEASED = {"9_12_4_multiscale/epoch_15.pth": "c90f1d9d92d158b436a8fc193f984d4cec8b1fc8",
            "9_12_4_multiscale_visa/epoch_15.pth": "72adc786e031b49ea288ba5f815f0d38cf158708"}


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
@pytest.mark.parametrize("content", [b"", b"hello\n", bytes(range(256)) * 5000])
def test_blob_id_equals_git_hash_object(tmp_path, content):
    path = tmp_path / "f.bin"
    path.write_bytes(content)
    expected = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True,
                              check=True).stdout.strip()
    assert git_blob_id(path) == expected


def test_registry_names_the_released_files():
    reg = load_registry(profile="paper")
    cks = reg.released_checkpoints("RC")
    assert {c["file"]: c["blob"] for c in cks} == RELEASED
    assert {(c["train"], c["eval"]) for c in cks} == {("visa", "mvtec"), ("mvtec", "visa")}
    assert reg.standin_train_jobs("RC") == [] and reg.plan(["RC"]).train_jobs == []
    smoke = load_registry(profile="smoke")
    jobs = smoke.standin_train_jobs("RC")
    assert [j.preset for _, j in jobs] == ["anomalyclip", "anomalyclip"]
    assert {j.train_dataset for _, j in jobs} == {"visa", "mvtec"}
    t1 = smoke.plan(["T1"]).train_jobs  # the stand-ins are T1's AnomalyCLIP runs, not extra ones
    assert all(j in t1 for _, j in jobs)


def test_missing_checkpoints_are_named_with_where_to_get_them(tmp_path, capsys):
    (tmp_path / "9_12_4_multiscale").mkdir()
    (tmp_path / "9_12_4_multiscale" / "epoch_15.pth").write_bytes(b"x")
    with pytest.raises(verify.VerifyError) as err:
        verify.find_checkpoints(load_registry(profile="paper"), tmp_path)
    msg = str(err.value)
    assert "9_12_4_multiscale_visa/epoch_15.pth" in msg and "github.com/zqhang/AnomalyCLIP" in msg
    assert RELEASED["9_12_4_multiscale_visa/epoch_15.pth"] in msg
    assert "9_12_4_multiscale/epoch_15.pth " not in msg  # the present one is not reported
    assert glocal_main(["verify", "--checkpoints", str(tmp_path / "nowhere")]) == 1
    out = capsys.readouterr().err
    assert "glocal verify: error" in out and "nowhere/9_12_4_multiscale/epoch_15.pth" in out
    assert "Traceback" not in out


def test_missing_weights_and_data_are_named(tmp_path):
    profile = profile_at(tmp_path).replace(synthetic=False, weights=str(tmp_path / "ViT-L-14-336px.pt"),
                                           dataset_roots={"mvtec": str(tmp_path / "no-mvtec")})
    ck = verify.Checked("a.pth", "0" * 40, "visa", "mvtec", "log", tmp_path / "a.pth", "1" * 40)
    with pytest.raises(verify.VerifyError, match=r"(?s)ViT-L-14-336px\.pt.*openaipublic.*no-mvtec.*--mvtec"):
        verify.check_inputs(profile, [ck])


def _verdict_frame(diffs: list[float], paper: float = 90.0) -> pd.DataFrame:
    rows = [{"dataset": "VisA", "category": f"c{i}", "metric": "image_auroc", "reproduced": paper + d,
             "paper": paper, "diff": d} for i, d in enumerate(diffs)]
    return pd.DataFrame(rows)


def test_verdict_lines():
    assert verify.verdict(_verdict_frame([0.05, -0.1, 0.0]), 0.1, stand_in=False).startswith("VERDICT: all 3 values")
    bad = verify.verdict(_verdict_frame([0.05, 0.3, -0.2]), 0.1, stand_in=False)
    assert "NOT" in bad and "2 of 3" in bad and "VisA/c1 image_auroc (+0.30)" in bad and "c0" not in bad
    nan = _verdict_frame([0.0, 0.0])
    nan.loc[1, ["reproduced", "diff"]] = np.nan
    assert "1 values not computed: VisA/c1 image_auroc" in verify.verdict(nan, 0.1, stand_in=False)
    assert "NOT meaningful" in verify.verdict(_verdict_frame([5.0]), 0.1, stand_in=True)


def test_verify_end_to_end_on_standins(tmp_path_factory, monkeypatch, capsys):
    """Official-format files in the released layout -> `glocal verify --profile smoke` -> RC table whose
    cells are the eval runs' metrics and the released log's values."""
    base = shared_root(tmp_path_factory)
    ckdir = tmp_path_factory.mktemp("anomalyclip") / "checkpoints"
    for i, name in enumerate(RELEASED):
        model = build_model(verify_cfg(), backbone="glocal-tiny-8", image_size=112, seed=i, backbone_seed=0)
        export_official(model, ckdir / name)
    monkeypatch.setenv("GLOCAL_SMOKE_DATA", str(base / "data"))
    results = tmp_path_factory.mktemp("verify-results")
    rc = glocal_main(["verify", "--profile", "smoke", "--checkpoints", str(ckdir), "--results", str(results),
                      "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "VERDICT (smoke, stand-ins)" in out and "NOT the released" in out
    md = (results / "tables" / "RC.md").read_text()
    assert "STAND-INS" in md and "SYNTHETIC DATA" in md.upper()
    df = read_table_csv(results / "tables" / "RC.csv")
    log = load_paper_table("anomalyclip_released_checkpoint_logs.csv")
    from glocal_lib.engine import find_runs

    runs = {r.config["dataset"]: r for r in find_runs(results, "eval") if r.config["name"].startswith("anomalyclip-released")}
    assert set(runs) == {"mvtec", "visa"}
    for key, name in (("mvtec", "MVTec AD"), ("visa", "VisA")):
        m = runs[key].metrics()
        sub = df[df["dataset"] == name]
        assert set(sub["metric"]) == {"image_auroc", "image_ap", "pixel_auroc", "aupro_cflow"}
        for r in sub.itertuples():
            cat = r.category
            ours = m[(m["category"] == cat) & (m["metric"] == r.metric)]["value"]
            assert abs(r.reproduced - 100 * float(ours.iloc[0])) < 1e-3
            level, metric = {v: k for k, v in verify.LOG_METRICS.items()}[r.metric]
            want = log[(log["dataset"] == name) & (log["level"] == level) & (log["metric"] == metric)
                       & (log["category"] == ("" if cat == "mean" else cat))]["value"]
            assert abs(r.paper - float(want.iloc[0])) < 1e-9 and abs(r.diff - (r.reproduced - r.paper)) < 1e-3
    # the eval ran the released test.sh configuration on the file's own prompt shapes
    cfg = runs["visa"].config
    assert cfg["model"]["feature_layers"] == [-1] and cfg["model"]["local_loss_weight"] == 4.0
    assert cfg["model"]["normal_length"] == SMALL["normal_length"] and cfg["identity"]["checkpoint_id"] == \
        git_blob_id(ckdir / "9_12_4_multiscale_visa/epoch_15.pth")
    # RC redraws from the results folder alone (the record + its runs), without the checkpoint files
    shutil.rmtree(ckdir)
    from glocal_lib.engine import load_profile
    from glocal_lib.experiments import kinds
    from glocal_lib.experiments.results import ResultStore

    store = ResultStore(load_profile("smoke", results_root=str(results)))
    again = kinds.build_table(load_registry(profile="smoke"), store, "RC")
    made = json.loads((results / "tables" / "RC.provenance.json").read_text(encoding="utf-8"))
    assert again is not None and again.provenance["published_values"] == made["published_values"]
    extra = again.notes[len(made["notes"]):]  # what every smoke drawing adds: the profile's shortcuts
    assert again.notes[:len(made["notes"])] == made["notes"] and all(n.startswith("smoke shortcut") for n in extra)
    pd.testing.assert_frame_equal(again.data.reset_index(drop=True), df, check_dtype=False, atol=1e-4)
    assert again.run_ids == sorted(r.path.name for r in runs.values())


def verify_cfg():
    from glocal_lib.config import load_preset

    return load_preset("anomalyclip", normal_length=SMALL["normal_length"], anomaly_length=SMALL["normal_length"],
                       deep_depth=SMALL["deep_depth"], deep_length=SMALL["deep_length"])
