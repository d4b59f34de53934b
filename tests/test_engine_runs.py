"""Profiles, run ids and folders, and the `glocal train` / `glocal eval` command lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_engine import SMALL, shared_root

from glocal_lib.cli import main as glocal_main
from glocal_lib.engine import find_runs, load_profile, load_run
from glocal_lib.engine.profiles import parse_override
from glocal_lib.engine.runs import run_id, slug
from glocal_lib.errors import ConfigError


def test_profiles_are_data_with_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    smoke = load_profile("smoke")
    assert smoke.synthetic and smoke.weights is None and "not paper results" in smoke.banner
    assert smoke.backbone.startswith("glocal-tiny") and smoke.epochs <= 2 and smoke.batch_size == 8
    monkeypatch.setenv("GLOCAL_DATA_ROOT", "/data/x")
    monkeypatch.setenv("GLOCAL_DATA_ROOT_VISA", "/elsewhere/visa")
    paper = load_profile("paper")
    assert (paper.backbone, paper.image_size, paper.epochs, paper.banner) == ("ViT-L-14-336-quickgelu", 518, 15, "")
    from glocal_lib.config import load_preset
    from glocal_lib.engine import TrainSpec

    vip2 = load_preset("vip2clip-released")  # a method's own recipe, capped by the profile's budget
    assert [TrainSpec("x", preset="vip2clip-released").resolved(p, vip2).epochs for p in (paper, smoke)] == [10, 2]
    assert paper.dataset_root("mvtec") == Path("/data/x/mvtec")
    assert paper.dataset_root("visa") == Path("/elsewhere/visa")
    assert load_profile("paper", image_size=336).image_size == 336
    assert smoke.replace(epochs=1).epochs == 1 and smoke.epochs != 1
    with pytest.raises(ConfigError, match="unknown profile field"):
        load_profile("smoke", epoch=3)
    with pytest.raises(ConfigError, match="unknown profile"):
        load_profile("huge")
    with pytest.raises(ConfigError, match="precision"):
        load_profile("smoke", precision="fp8")
    assert parse_override("gcl_lambda=0.1") == ("gcl_lambda", 0.1)
    assert parse_override("alias_final_layer=false") == ("alias_final_layer", False)
    assert parse_override("weights=null") == ("weights", None)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("gcl_lambda")


def test_run_ids_are_stable_hashes_of_the_identity() -> None:
    ident = {"a": 1, "b": [1, 2], "c": {"x": None}}
    assert run_id("glocal mvtec/λ", ident) == run_id("glocal mvtec/λ", dict(reversed(ident.items())))
    rid = run_id("n", ident)
    assert rid.startswith("n-") and len(rid.split("-")[-1]) == 12
    assert run_id("n", {**ident, "a": 2}) != rid
    assert slug("a b/c@d") == "a-b-c-d"
    with pytest.raises(ConfigError):
        slug("///")


def test_load_run_rejects_non_run_folders(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a run folder"):
        load_run(tmp_path)


def test_cli_help_and_a_tiny_train_and_eval(tmp_path_factory: pytest.TempPathFactory, capsys) -> None:
    for cmd in ("train", "eval"):
        with pytest.raises(SystemExit) as exc:
            glocal_main([cmd, "--help"])
        assert exc.value.code == 0
        assert "--profile" in capsys.readouterr().out
    base = shared_root(tmp_path_factory)
    common = ["--profile", "smoke", "--data-root", str(base / "data"), "--results", str(base / "res-cli"),
              "--profile-set", f"cache_dir={base / 'cache'}", "--quiet"]
    overrides = [a for k, v in SMALL.items() for a in ("--override", f"{k}={v}")]
    assert glocal_main(["train", "--train-dataset", "btad", "--epochs", "1", *common, *overrides]) == 0
    out = capsys.readouterr().out
    train_dir = Path(out.strip().splitlines()[-1])
    run = load_run(train_dir)
    assert run.done and run.config["identity"]["epochs"] == 1 and run.config["model"]["deep_depth"] == 3
    assert glocal_main(["eval", "--dataset", "btad", "--train-run", str(train_dir), *common]) == 0
    out = capsys.readouterr().out
    assert "synthetic data, random model" in out and "pixel_auroc" in out
    evals = find_runs(base / "res-cli", "eval")
    assert len(evals) == 1 and evals[0].config["train_run"] == run.run_id
    assert json.loads((evals[0].path / "metrics.json").read_text())["dataset"] == "btad"
    # a bad option value is a clear error, not a traceback
    assert glocal_main(["eval", "--dataset", "btad", "--train-run", "nope", *common]) == 1
    assert "not found" in capsys.readouterr().err
