"""The draw step: a copied results folder (no data, no cache) redraws every artifact byte-identically."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from glocal_lib.engine.runs import read_ledger
from glocal_lib.experiments import provenance
from glocal_lib.experiments.pipeline import open_reproduction
from glocal_lib.experiments.reproduce import reproduce_cli


class _FixedClock(datetime):
    @classmethod
    def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
        return datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _drawn(root: Path) -> dict[str, bytes]:
    """Every drawn file (tables, figures, index), by path relative to the results folder."""
    files = [p for d in ("tables", "figures") for p in sorted((root / d).rglob("*")) if p.is_file()]
    return {str(p.relative_to(root)): p.read_bytes() for p in [*files, root / "index.html"]}


def test_draw_from_a_copied_results_folder_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provenance, "datetime", _FixedClock)  # "created" is the drawing time: fix it
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")  # matplotlib's PDF CreationDate
    root = tmp_path / "made" / "smoke"
    repro = open_reproduction(profile="smoke", datasets=["sdd"], methods=["CLIP"], results_root=str(root),
                              data_root=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"))
    data = repro.prepare_data(["T1", "T5"])
    repro.evaluate(["T1"])
    repro.build_tables(["T5"], data=data)
    # what the notebooks leave: every artifact drawn from these runs (figures, like tables, unfiltered)
    open_reproduction(profile="smoke", results_root=str(root)).draw()
    (eval_run,) = [e["run_id"] for k, e in read_ledger(root).items() if k[0] == "eval"]
    assert eval_run.startswith("clip-sdd-")
    made = _drawn(root)
    assert "tables/T1.csv" in made and "tables/T5.csv" in made and "figures/F9.png" in made
    assert eval_run.encode() in made["tables/T1.csv"]

    copy = tmp_path / "elsewhere" / "smoke"
    shutil.copytree(root, copy)
    shutil.rmtree(tmp_path / "data")
    shutil.rmtree(tmp_path / "cache")
    for d in ("tables", "figures"):
        shutil.rmtree(copy / d)
    (copy / "index.html").unlink()
    monkeypatch.setenv("GLOCAL_DATA_ROOT", str(tmp_path / "no-data"))
    assert reproduce_cli(["--profile", "smoke", "--draw", "--results-root", str(copy)]) == 0
    drawn = _drawn(copy)
    assert sorted(drawn) == sorted(made)
    different = [p for p in made if drawn[p] != made[p]]
    assert not different, different
    assert not (tmp_path / "no-data").exists() and not (tmp_path / "data").exists()


def test_draw_refuses_a_folder_without_runs(tmp_path: Path) -> None:
    from glocal_lib.errors import ConfigError

    with pytest.raises(ConfigError, match="no runs/ folder"):
        reproduce_cli(["--profile", "smoke", "--draw", "--results-root", str(tmp_path / "empty")])


def _fake_run(root: Path, kind: str, run_id: str, name: str) -> Path:
    import json

    path = root / "runs" / kind / run_id
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"kind": kind, "name": name, "dataset": "visa"}))
    return path


def test_ledger_maps_each_job_to_its_latest_finished_run(tmp_path: Path) -> None:
    from glocal_lib.engine.runs import ledger_dir, mark_done

    old = _fake_run(tmp_path, "eval", "clip-visa-aaaaaaaaaaaa", "clip@visa")
    new = _fake_run(tmp_path, "eval", "clip-visa-bbbbbbbbbbbb", "clip@visa")
    gone = _fake_run(tmp_path, "eval", "coop-visa-cccccccccccc", "coop@visa")
    for path in (old, new, gone):
        mark_done(path)
    shutil.rmtree(gone)  # a deleted run is not drawn from
    assert sorted(p.name for p in ledger_dir(tmp_path).iterdir()) == [
        "eval-clip-visa-aaaaaaaaaaaa.json", "eval-clip-visa-bbbbbbbbbbbb.json", "eval-coop-visa-cccccccccccc.json"]
    ledger = read_ledger(tmp_path)
    assert list(ledger) == [("eval", "clip@visa")]
    assert ledger[("eval", "clip@visa")]["run_id"] == new.name
    assert ledger[("eval", "clip@visa")]["dataset"] == "visa"


def test_drawing_notebooks_refuse_missing_runs_naming_them_and_their_maker(tmp_path: Path) -> None:
    from report_fakes import FakeProfile, FakeStore, populate

    from glocal_lib.errors import RunError
    from glocal_lib.experiments.pipeline import Reproduction
    from glocal_lib.experiments.registry import load_registry

    reg = load_registry(profile="smoke", datasets=["visa"])
    store = FakeStore(FakeProfile("smoke", tmp_path))
    skipped = next(j.name for j in reg.plan(["T7"]).eval_jobs)
    populate(reg, store, ["T7"], skip={skipped})
    repro = Reproduction(registry=reg, profile=store.profile, store=store)
    with pytest.raises(RunError, match="01_train and 02_evaluate") as err:
        repro.require_runs(["T7"])
    assert f"eval {skipped} (missing)" in str(err.value) and "--only T7" in str(err.value)
    populate(reg, store, ["T7"])
    store.refresh()
    repro.require_runs(["T7"])  # all there: no error


def test_a_results_folder_made_before_the_ledger_gets_one(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Runs finished before the ledger existed (DONE, no ledger/): recorded automatically when a store
    first reads the folder, and `--rebuild-ledger` adds runs a partial ledger lacks."""
    import json
    import os

    from report_fakes import FakeProfile

    from glocal_lib.engine.runs import ledger_dir, rebuild_ledger
    from glocal_lib.experiments.results import ResultStore

    old = _fake_run(tmp_path, "eval", "clip-visa-aaaaaaaaaaaa", "clip@visa")
    new = _fake_run(tmp_path, "eval", "clip-visa-bbbbbbbbbbbb", "clip@visa")
    train = _fake_run(tmp_path, "train", "coop-mvtec-cccccccccccc", "coop-mvtec")
    unfinished = _fake_run(tmp_path, "eval", "coop-visa-dddddddddddd", "coop@visa")
    (old / "DONE").write_text("{}\n")  # an early DONE without its finish time: its mtime counts
    os.utime(old / "DONE", (1_000, 1_000))
    (new / "DONE").write_text(json.dumps({"finished": 2_000.0}))
    (train / "DONE").write_text(json.dumps({"finished": 1_500.0}))
    assert not ledger_dir(tmp_path).exists() and unfinished.is_dir()
    ledger = ResultStore(FakeProfile("smoke", tmp_path)).ledger()
    assert "no run ledger: recorded its 3 finished runs" in capsys.readouterr().out
    assert {k: e["run_id"] for k, e in ledger.items()} == {("eval", "clip@visa"): new.name,
                                                          ("train", "coop-mvtec"): train.name}
    assert read_ledger(tmp_path) == ledger and rebuild_ledger(tmp_path) == 0  # nothing left to record
    later = _fake_run(tmp_path, "eval", "coop-visa-eeeeeeeeeeee", "coop@visa")
    (later / "DONE").write_text(json.dumps({"finished": 3_000.0}))
    assert ("eval", "coop@visa") not in read_ledger(tmp_path)  # a partial ledger is not rebuilt silently
    assert reproduce_cli(["--profile", "smoke", "--rebuild-ledger", "--list", "--only", "T5",
                          "--results-root", str(tmp_path)]) == 0
    assert "1 finished run(s) recorded" in capsys.readouterr().out
    assert read_ledger(tmp_path)[("eval", "coop@visa")]["run_id"] == later.name
