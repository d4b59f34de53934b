"""Runs never return a stale, untrained or mismatched result, and faults end in a clear message.

Each test fails for the bug it names (issue 10): a changed image under the same name, a NaN loss,
epochs 0 or a text lambda, a train run scored on another backbone, a subset reproduction erasing
tables, a full disk, a read-only folder, a stopped lock holder, a corrupt resume checkpoint, a GPU
that is not there, failed runs that look like runs, and `--results` writing outside itself.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_engine import SMALL, profile_at, shared_root, small_data
from report_fakes import FakeProfile, FakeStore, populate

from glocal_lib.cli import main as glocal_main
from glocal_lib.engine import (
    EvalSpec,
    FeatureCache,
    TrainSpec,
    data_prep,
    find_runs,
    load_profile,
    load_run,
    locks,
    run_eval,
    run_train,
    train_run_dir,
)
from glocal_lib.engine import train as train_mod
from glocal_lib.engine.data_prep import load_data, select_categories
from glocal_lib.engine.modeling import build_detector, model_config
from glocal_lib.errors import ConfigError, DiskFullError, RunError, WeightsError
from glocal_lib.experiments.pipeline import Reproduction
from glocal_lib.experiments.registry import load_registry
from glocal_lib.model import build_model

CAT = ["bottle"]  # 6 images of the MVTec AD stand-in: one step per epoch at batch 8


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_root(tmp_path_factory)


@pytest.fixture(scope="module")
def trained(base: Path) -> tuple:
    """One finished 1-epoch train run on one category (shared by the backbone-mismatch tests)."""
    prof = profile_at(base, "res-rel", epochs=1)
    data = small_data(prof, "mvtec", CAT)
    return prof, data, run_train(TrainSpec("rel", overrides=SMALL), prof, progress=False, data=data)


# ---------------------------------------------------------------- 1. runs depend on the data's bytes
def test_changing_one_image_under_the_same_name_gives_a_new_run(base: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    prof = profile_at(base, "res-rel", epochs=1)
    src = small_data(prof, "mvtec", CAT)
    root = tmp_path / "mvtec"
    shutil.copytree(src.root, root)
    memo = tmp_path / "memo"
    data = select_categories(load_data("mvtec", root, memo_dir=memo), CAT)
    spec = EvalSpec("clip@mvtec", "mvtec", preset="clip", samples_per_category=0)
    first = run_eval(spec, prof, progress=False, data=data)
    assert load_run(first).done
    # same file name and size, other bytes (a re-extracted or fixed dataset); new mtime as any write gives
    target = root / data.index["image_path"].iloc[0]
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 0xFF
    target.write_bytes(bytes(raw))
    changed = select_categories(load_data("mvtec", root, memo_dir=memo), CAT)
    assert changed.index_hash != data.index_hash
    second = run_eval(spec, prof, progress=False, data=changed)
    assert second != first and load_run(second).done  # recomputed, not the old run returned
    # digests are memoised per path/size/mtime: an unchanged tree is not read again
    calls = []
    monkeypatch.setattr(data_prep, "sha256_file", lambda p: calls.append(p) or "x")
    again = select_categories(load_data("mvtec", root, memo_dir=memo), CAT)
    assert calls == [] and again.index_hash == changed.index_hash


# ---------------------------------------------------------------- 2. a run that did not train is never DONE
def test_bad_spec_values_are_refused_with_the_accepted_range() -> None:
    for kw, msg in (({"epochs": 0}, "epochs must be >= 1"), ({"epochs": -3}, "epochs must be >= 1"),
                    ({"batch_size": -4}, "batch_size must be >= 1"), ({"lr": 0.0}, "lr must be > 0"),
                    ({"epochs": 2.5}, "epochs must be an integer"), ({"seed": "1"}, "seed must be an integer")):
        with pytest.raises(ConfigError, match=msg):
            TrainSpec("x", **kw)
    with pytest.raises(ConfigError, match="sigma must be >= 0"):
        EvalSpec("x", "visa", sigma=-2)
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        EvalSpec("x", "visa", batch_size=0)
    with pytest.raises(ConfigError, match="gcl_lambda must be a number, got 'abc'"):
        model_config("glocalclip-released", {"gcl_lambda": "abc"}, "mvtec")
    with pytest.raises(ConfigError, match="glocal must be true or false"):
        model_config("glocalclip-released", {"glocal": "yes"}, "mvtec")
    assert model_config("glocalclip-released", {"gcl_lambda": 1}, "mvtec").gcl_lambda == 1.0  # ints are numbers


def test_cli_refuses_bad_values_up_front(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--profile", "smoke", "--data-root", str(base / "data"), "--results", str(base / "res-cli-bad"),
              "--profile-set", f"cache_dir={base / 'cache'}", "--quiet"]
    for args, msg in ((["--epochs", "0"], "epochs must be >= 1, got 0"),
                      (["--epochs", "-3"], "epochs must be >= 1, got -3"),
                      (["--batch-size", "-4"], "batch_size must be >= 1, got -4"),
                      (["--override", "gcl_lambda=abc"], "gcl_lambda must be a number")):
        assert glocal_main(["train", "--train-dataset", "btad", *common, *args]) == 1
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
    assert glocal_main(["eval", "--dataset", "btad", "--sigma", "-2", *common]) == 1
    assert "sigma must be >= 0" in capsys.readouterr().err
    assert not (base / "res-cli-bad" / "runs").exists()  # nothing started


def _nan_after(monkeypatch: pytest.MonkeyPatch, good_steps: int) -> None:
    """Make model.compute_losses return a NaN total after `good_steps` steps."""
    real = train_mod.build_detector
    count = {"n": 0}

    def build(*a, **k):
        model = real(*a, **k)
        inner = model.compute_losses

        def losses(*la, **lk):
            out = inner(*la, **lk)
            count["n"] += 1
            if count["n"] > good_steps:
                out = {**out, "total": out["total"] * float("nan")}
            return out

        model.compute_losses = losses
        return model

    monkeypatch.setattr(train_mod, "build_detector", build)


def test_nan_loss_stops_with_a_clear_error_and_no_done(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prof = profile_at(base, "res-nan", epochs=2)
    data = small_data(prof, "mvtec", CAT)
    spec = TrainSpec("nan", overrides=SMALL)
    _nan_after(monkeypatch, 0)
    with pytest.raises(RunError, match=r"nan-\w+: the loss is not finite at epoch 1, step 1 .*learning rate"):
        run_train(spec, prof, progress=False, data=data)
    run_dir = train_run_dir(spec, prof, data)
    assert not run_dir.exists()  # nothing to resume: no folder that looks like a run
    assert find_runs(prof.results_root, "train", done_only=False) == []
    # NaN in epoch 2: epoch 1 is kept, the folder says FAILED, find_runs skips it; a fixed rerun resumes
    monkeypatch.undo()
    _nan_after(monkeypatch, 1)
    with pytest.raises(RunError, match="epoch 2, step 2 .*Epochs 1..1 are kept"):
        run_train(spec, prof, progress=False, data=data)
    run = load_run(run_dir)
    assert not run.done and run.failed and "not finite" in run.failure()["message"]
    assert find_runs(prof.results_root, "train", done_only=False) == []
    assert [r.run_id for r in find_runs(prof.results_root, "train", done_only=False, include_failed=True)] \
        == [run.run_id]
    monkeypatch.undo()
    assert run_train(spec, prof, progress=False, data=data) == run_dir
    assert load_run(run_dir).done and not (run_dir / "FAILED").exists()
    assert np.isfinite(load_run(run_dir).losses()["total"]).all()


# ---------------------------------------------------------------- 3. own backbone, weights, image size
def test_eval_of_a_train_run_on_another_backbone_is_refused(trained: tuple, tmp_path: Path) -> None:
    prof, data, train_dir = trained
    other_weights = tmp_path / "other.pt"
    other_weights.write_bytes(b"not the weights the run was trained with")
    for other, what in ((prof.replace(backbone="glocal-tiny-24"), "backbone"),
                        (prof.replace(image_size=56), "image_size"),
                        (prof.replace(weights=str(other_weights)), "weights")):
        with pytest.raises(ConfigError, match=f"does not match this evaluation's backbone.*{what}.*"
                                              "--allow-other-backbone"):
            run_eval(EvalSpec("x", "mvtec", train_run=train_dir), other, progress=False, data=data)
    # on purpose: allowed, and recorded in the run identity
    from glocal_lib.engine.evaluate import eval_identity

    ok = eval_identity(EvalSpec("x", "mvtec", train_run=train_dir, allow_other_backbone=True),
                       prof.replace(image_size=56), data)[0]
    assert ok["allow_other_backbone"] is True and ok["image_size"] == 56
    same = eval_identity(EvalSpec("x", "mvtec", train_run=train_dir), prof, data)[0]
    assert "allow_other_backbone" not in same


def test_build_model_refuses_a_checkpoint_on_other_weights(trained: tuple, tmp_path: Path) -> None:
    prof, _, train_dir = trained
    ckpt = load_run(train_dir).checkpoint()
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["weights"] is None and saved["weights_sha256"] is None  # random smoke backbone
    other = tmp_path / "other.pt"
    other.write_bytes(b"x" * 100)
    with pytest.raises(WeightsError, match="trained on another backbone.*weights .*other.pt.*random backbone"):
        build_model(checkpoint=ckpt, weights=other)
    with pytest.raises(WeightsError, match="backbone 'glocal-tiny-24'.*allow_other_backbone=True"):
        build_model(checkpoint=ckpt, backbone="glocal-tiny-24")
    with pytest.raises(WeightsError, match="image size 56"):
        build_model(checkpoint=ckpt, image_size=56)
    model = build_model(checkpoint=ckpt, backbone=prof.backbone, image_size=prof.image_size)  # its own: fine
    assert model.image_size == prof.image_size


# ---------------------------------------------------------------- 4. subset reproductions add to tables
def test_subset_reproduction_keeps_earlier_rows_of_a_table(tmp_path: Path) -> None:
    full = load_registry(profile="smoke")
    store = FakeStore(FakeProfile("smoke", tmp_path))
    populate(load_registry(profile="smoke", datasets=["visa"]), store, ["T1"])   # glocal reproduce --datasets visa
    populate(load_registry(profile="smoke", datasets=["sdd"]), store, ["T1"])    # then --only T1 --datasets sdd
    repro = Reproduction(registry=load_registry(profile="smoke", datasets=["sdd"]), profile=store.profile,
                         store=store)
    t1 = repro.build_tables(["T1"])["T1"].data
    glocal = t1[(t1["row"] == "GlocalCLIP") & (t1["metric"] == "image_auroc")]
    values = dict(zip(glocal["dataset"], glocal["reproduced"]))
    assert np.isfinite(values[full.dataset_name("visa")]) and np.isfinite(values[full.dataset_name("sdd")])
    mvtec = glocal[glocal["dataset"] == full.dataset_name("mvtec")]
    assert mvtec["reproduced"].isna().all() and (mvtec["note"] == "not run yet").all()  # never run: missing


# ---------------------------------------------------------------- 6. disk full
def test_feature_cache_checks_free_space_before_the_memmap(trained: tuple, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    prof, data, _ = trained
    model = build_detector(model_config("glocalclip-released", SMALL, "mvtec"), prof, seed=111)
    real = shutil.disk_usage
    monkeypatch.setattr(locks.shutil, "disk_usage", lambda p: real(p)._replace(free=4096))
    with pytest.raises(DiskFullError, match=r"no space left on device at .*needs about [\d.,]+ MB"):
        FeatureCache(tmp_path / "cache", dtype="fp32").get(model, data, backbone=prof.backbone,
                                                           weights_id={"weights": "random"})
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_torch_save_on_a_full_disk_is_named_and_leaves_no_partial_files(base: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    prof = profile_at(base, "res-full-disk", epochs=1)
    data = small_data(prof, "mvtec", CAT)

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 320 vs 190\n"
                           "PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    real = shutil.disk_usage
    monkeypatch.setattr(locks.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(DiskFullError, match=r"no space left on device at .*checkpoints.*needs about"):
        run_train(TrainSpec("disk", overrides=SMALL), prof, progress=False, data=data)
    run_dir = train_run_dir(TrainSpec("disk", overrides=SMALL), prof, data)
    assert not run_dir.exists()  # no checkpoint was complete: nothing half-written is kept
    with pytest.raises(DiskFullError, match="no space left on device at /x"), locks.clear_write_errors(Path("/x")):
        raise OSError(errno.ENOSPC, "No space left on device", "/x/scores.csv")


# ---------------------------------------------------------------- 7/8. run-level faults
def test_read_only_results_folder_is_a_clear_error(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prof = profile_at(base, "res-ro", epochs=1)
    data = small_data(prof, "mvtec", CAT)
    real_open = open

    def read_only(path, *a, **k):  # tests run as root: chmod would not stop the writes
        if str(prof.results_root) in str(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", read_only)
    with pytest.raises(RunError, match=r"cannot write to .*res-ro.*Read-only file system.*--results DIR"):
        run_train(TrainSpec("ro", overrides=SMALL), prof, progress=False, data=data)


def test_a_lock_held_by_a_stopped_process_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = tmp_path / ".run.lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from glocal_lib.engine.locks import exclusive
        with exclusive({str(lock)!r}, "x"):
            print("locked", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        time.sleep(0.3)
        stopped = f"run R is locked by PID {holder.pid}, which is stopped.*kill -CONT"
        with pytest.raises(RunError, match=stopped), locks.exclusive(lock, "run R", timeout=1.0):
            pass
        assert f"run R is locked by PID {holder.pid}" in capsys.readouterr().err and "waiting" in \
            locks.holder_message(lock, "run R")
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    # the holder is dead: its PID is still in the file, but the lock is free at once (no stale-lock wait)
    t = time.monotonic()
    with locks.exclusive(lock, "run R", timeout=5):
        assert time.monotonic() - t < 1 and lock.read_text().split()[0] == str(os.getpid())


def test_corrupt_resume_checkpoint_names_the_file_and_the_fix(base: Path) -> None:
    prof = profile_at(base, "res-corrupt", epochs=2)
    data = small_data(prof, "mvtec", CAT)
    spec = TrainSpec("corrupt", overrides=SMALL)
    run_dir = run_train(spec, prof, progress=False, data=data, stop_after_epoch=1)
    latest = run_dir / "checkpoints" / "latest.pt"
    latest.write_bytes(os.urandom(300))
    with pytest.raises(RunError, match=f"resume checkpoint {latest} is corrupt.*delete it.*--restart"):
        run_train(spec, prof, progress=False, data=data)
    assert load_run(run_dir).failed
    assert load_run(run_train(spec, prof, progress=False, data=data, restart=True)).done
    assert list(load_run(run_dir).losses()["epoch"].unique()) == [1, 2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_refused_up_front(base: Path) -> None:
    prof = profile_at(base, "res-cuda", device="cuda")
    with pytest.raises(RunError, match="sees no CUDA GPU.*--device cpu"):
        run_train(TrainSpec("cuda", overrides=SMALL), prof, progress=False)
    with pytest.raises(ConfigError, match="not a torch device"):
        run_eval(EvalSpec("x", "visa", preset="clip"), profile_at(base, "res-cuda", device="gpu0"))
    assert not (base / "res-cuda").exists()


# ---------------------------------------------------------------- 9. --results is self-contained
def test_results_folder_holds_the_smoke_data_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GLOCAL_RESULTS", "GLOCAL_SMOKE_DATA", "GLOCAL_CACHE"):
        monkeypatch.delenv(var, raising=False)
    prof = load_profile("smoke", results_root=str(tmp_path / "r"))
    assert (prof.data_root, prof.cache_dir) == (tmp_path / "r" / "data", tmp_path / "r" / "cache")
    assert load_profile("paper", results_root=str(tmp_path / "p")).cache_dir == tmp_path / "p" / "cache"
    monkeypatch.setenv("GLOCAL_CACHE", str(tmp_path / "elsewhere"))
    assert load_profile("smoke", results_root=str(tmp_path / "r")).cache_dir == tmp_path / "elsewhere"


def test_status_reports_a_failed_run_as_failed(tmp_path: Path) -> None:
    reg = load_registry(profile="smoke", datasets=["visa"])
    store = FakeStore(FakeProfile("smoke", tmp_path))
    populate(reg, store, ["T1"])
    job = reg.plan(["T1"]).eval_jobs[0]
    path = store.locate_eval(job)
    (path / "DONE").unlink()
    (path / "FAILED").write_text('{"message": "no space left on device"}')
    status = Reproduction(registry=reg, profile=store.profile, store=store).status(["T1"]).set_index("name")
    assert status.at[job.name, "state"] == "failed" and not status.at[job.name, "done"]
    assert set(status["state"]) == {"done", "failed"}
