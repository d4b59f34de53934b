"""The executor layer without Ray: GPU shares, the progress line, blocked evaluations, the CLI flags,
a run's output captured in its log (Python and C-level writes), and the skip of a finished run (a job
sharing another job's run still gets its own ledger entry, as the local executor gives it)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from glocal_lib.engine import load_profile
from glocal_lib.engine.runs import ledger_dir, mark_done
from glocal_lib.errors import ConfigError
from glocal_lib.experiments import executors
from glocal_lib.experiments.executors import Outcome, RayOptions, progress_line, summary
from glocal_lib.experiments.reproduce import build_parser


def test_gpu_shares_follow_the_profile_device_unless_given() -> None:
    cpu, cuda = load_profile("smoke"), load_profile("paper")
    assert (RayOptions().gpus("train", cpu), RayOptions().gpus("eval", cpu)) == (0.0, 0.0)
    assert (RayOptions().gpus("train", cuda), RayOptions().gpus("eval", cuda)) == (1.0, 0.5)
    assert RayOptions(gpus_per_eval=0.25).gpus("eval", cuda) == 0.25
    with pytest.raises(ConfigError, match="--gpus-per-train must be >= 0"):
        RayOptions(gpus_per_train=-1).gpus("train", cuda)


def test_progress_line_counts_done_running_failed_waiting_per_node_and_gpu() -> None:
    outcomes = [Outcome("train", "a", "skipped"), Outcome("train", "b", "finished"),
                Outcome("eval", "c", "failed")]
    started = {"train b": [{"host": "h1", "node": "abcdef123", "gpus": ["0"]}],
               "eval c": [{"host": "h1", "node": "abcdef123", "gpus": ["0"]}],
               "eval d": [{"host": "h2", "node": "99887766", "gpus": ["1"]}],
               "eval e": [{"host": "h2", "node": "99887766", "gpus": ["1"]}]}
    line = progress_line(outcomes, submitted=6, started=started, done_keys={"train b", "eval c"})
    # 7 planned (6 submitted + 1 skipped); 2 running on h2's GPU 1; 6 - 2 done - 2 running = 2 waiting
    assert line == ("[ray] 2/7 runs done (1 were already), 2 running, 1 failed, 2 waiting | "
                    "running on h2/998877 gpu 1: 2")


def test_an_evaluation_of_a_failed_training_is_blocked_not_failed() -> None:
    outcomes = [Outcome("train", "coop-visa", "failed", error="boom"),
                Outcome("eval", "coop-visa@mvtec", "failed", error="upstream"),
                Outcome("eval", "clip@visa", "failed", attempts=1, error="own")]
    executors._mark_blocked(outcomes)
    assert [o.state for o in outcomes] == ["failed", "blocked", "failed"]
    assert outcomes[1].error == "not run: its training coop-visa failed"
    text = summary(outcomes)
    assert "0 runs were already finished" in text and "1 blocked, 2 failed" in text


def test_reproduce_accepts_the_executor_flags_and_local_makes_nothing() -> None:
    args = build_parser().parse_args(["--executor", "ray", "--address", "auto", "--gpus-per-train", "2",
                                      "--gpus-per-eval", "0.25", "--max-retries", "1"])
    assert (args.executor, args.address, args.gpus_per_train, args.gpus_per_eval, args.max_retries) == \
        ("ray", "auto", 2.0, 0.25, 1)
    local = build_parser().parse_args([])
    assert local.executor == "local" and executors.make_runs(local, {}, ["T1"]) == []


def test_a_runs_output_goes_to_its_log_at_the_file_descriptor_level(tmp_path: Path) -> None:
    log = tmp_path / "runs" / ".logs" / "train-x.log"
    with executors._output_to(log):
        print("from python")
        os.write(2, b"from C level stderr\n")
    with executors._output_to(log):
        print("second attempt")
    assert log.read_text() == "from python\nfrom C level stderr\nsecond attempt\n"


def _finished_run(root: Path, name: str) -> Path:
    run_dir = root / "runs" / "eval" / "adaclip-fp16-visa-0123456789ab"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"name": name, "dataset": "visa"}))
    mark_done(run_dir)
    return run_dir


def test_a_skipped_job_sharing_a_finished_run_gets_its_ledger_entry(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _finished_run(tmp_path, "adaclip fp16 @visa")
    monkeypatch.setattr(executors, "_run_dir", lambda kind, job, profile: run_dir)
    job = SimpleNamespace(name="adaclip fp32 @visa")  # another row with the same settings (fp16 off on CPU)
    assert executors._finished("eval", job, profile=None) == run_dir.name
    names = {json.loads(p.read_text())["name"]: json.loads(p.read_text())["run_id"]
             for p in ledger_dir(tmp_path).glob("*.json")}
    assert names == {"adaclip fp16 @visa": run_dir.name, "adaclip fp32 @visa": run_dir.name}
    executors._finished("eval", job, profile=None)  # asked again (a rerun): no second entry
    assert len(list(ledger_dir(tmp_path).glob("*.json"))) == 2


def test_an_unfinished_run_is_not_skipped_and_not_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "runs" / "eval" / "clip-visa-0123456789ab"
    run_dir.mkdir(parents=True)
    monkeypatch.setattr(executors, "_run_dir", lambda kind, job, profile: run_dir)
    assert executors._finished("eval", SimpleNamespace(name="clip @visa"), profile=None) is None
    assert not ledger_dir(tmp_path).exists() or not any(ledger_dir(tmp_path).iterdir())
