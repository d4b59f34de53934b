"""Run directories: one folder per train or eval run, named by a hash of everything that decides its numbers.

`<results_root>/runs/<kind>/<name>-<hash12>/` holds config.json, env.json, the outputs and a DONE
marker written last. A finished run is returned as is; an unfinished one is resumed by its owner
(train.py / evaluate.py). A per-run lock file (under `runs/.locks/`) stops two processes from
working on one run at once. A run that fails leaves no folder that looks like a run:
without resumable progress its folder is removed, with some it gets a FAILED marker (the error),
which find_runs skips and the next attempt clears.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glocal_lib.engine.locks import clear_write_errors, exclusive
from glocal_lib.errors import ConfigError, RunError
from glocal_lib.io import atomic_write_json, atomic_write_text, remove_temporaries, sha256_file, stable_hash

REPO_ROOT = Path(__file__).resolve().parents[2]
DONE = "DONE"
FAILED = "FAILED"


def slug(name: str) -> str:
    """A file-name-safe short name (letters, digits, . _ -) for run ids."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-")
    if not s:
        raise ConfigError(f"run name {name!r} has no usable characters (use letters, digits, - or _)")
    return s[:80]


def run_id(name: str, identity: dict[str, Any]) -> str:
    """'<name>-<12 hex>' where the hash covers only what changes the run's numbers."""
    return f"{slug(name)}-{stable_hash(identity, 12)}"


def git_commit() -> dict[str, Any]:
    """Commit and dirty flag of the package's repository, or 'unknown' outside a git checkout.

    Asked once per process (two git subprocesses; a reproduction starts ~180 runs): the code a
    process imported does not change under it.
    """
    if _GIT_MEMO:
        return dict(_GIT_MEMO)
    _GIT_MEMO.update(_git_commit_uncached())
    return dict(_GIT_MEMO)


_GIT_MEMO: dict[str, Any] = {}


def _git_commit_uncached() -> dict[str, Any]:
    def _git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit or "unknown", "dirty": bool(status) if status is not None else None}


def environment(device: str) -> dict[str, Any]:
    """Versions, machine and device: what someone needs to tell why two runs' numbers differ."""
    import torch

    versions: dict[str, str] = {"python": sys.version.split()[0], "torch": torch.__version__,
                                "numpy": np.__version__, "pandas": pd.__version__}
    for dist in ("open_clip_torch", "scipy", "scikit-learn", "scikit-image"):
        try:  # metadata only: importing sklearn/skimage just for a version costs seconds
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "missing"
    dev = {"requested": device, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "platform": platform.platform(), "processor": platform.processor() or platform.machine()}
    if device.startswith("cuda") and torch.cuda.is_available():
        dev["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return {"git": git_commit(), "versions": versions, "device": dev,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "argv": sys.argv}


def weights_identity(weights: str | os.PathLike[str] | None, cache_dir: Path | None = None) -> dict[str, Any]:
    """Identity of a weight file by content (sha256), memoised by path/size/mtime so it is hashed once."""
    if weights is None:
        return {"weights": "random"}
    path = Path(weights)
    if not path.is_file():
        return {"weights": path.name, "sha256": "missing"}
    st = path.stat()
    memo_key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    memo_file = (cache_dir / "weights_sha256.json") if cache_dir else None
    memo: dict[str, str] = {}
    if memo_file and memo_file.is_file():
        with contextlib.suppress(ValueError, OSError):
            memo = json.loads(memo_file.read_text())
    if memo_key not in memo:
        memo[memo_key] = sha256_file(path)
        if memo_file:
            atomic_write_json(memo_file, memo)
    return {"weights": path.name, "sha256": memo[memo_key]}


def lock_file(run_dir: Path) -> Path:
    """`<results>/runs/.locks/<kind>-<run id>.lock`: outside the run folder (which a failed attempt may
    remove while others wait on the lock) and outside `runs/<kind>/` (which lists only runs)."""
    return run_dir.parent.parent / ".locks" / f"{run_dir.parent.name}-{run_dir.name}.lock"


@contextlib.contextmanager
def run_lock(run_dir: Path, timeout: float | None = None) -> Iterator[None]:
    """Exclusive lock on a run (released by the OS if the process dies, so kill -9 is safe); says who
    holds it while waiting. Creates the run folder, with a clear error if the results are read-only."""
    with exclusive(lock_file(run_dir), f"{run_dir.parent.name} run {run_dir.name}", timeout=timeout):
        with clear_write_errors(run_dir):
            run_dir.mkdir(parents=True, exist_ok=True)
        yield


def is_done(run_dir: Path) -> bool:
    return (run_dir / DONE).is_file()


def require_device(device: str) -> None:
    """Refuse a device torch cannot use, up front (not after data preparation, deep inside a forward)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is not a torch device; use cpu, cuda, cuda:1, mps ...") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RunError(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA GPU "
                           f"(torch.cuda.is_available() is False; built for CUDA {torch.version.cuda}): "
                           f"pass --device cpu, or run on a machine with a GPU and a CUDA build of torch")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RunError(f"device {device!r} asked for, but only {torch.cuda.device_count()} CUDA GPU(s) "
                           f"are visible (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise RunError(f"device {device!r} asked for, but torch sees no Apple MPS device: pass --device cpu")


def clear_failure(run_dir: Path) -> None:
    (run_dir / FAILED).unlink(missing_ok=True)


def record_failure(run_dir: Path, exc: BaseException, has_progress: bool) -> None:
    """After a failed attempt: remove a folder with nothing to resume, else mark it FAILED (with the error).

    Called with the run's lock held (the lock file lives outside the folder, so removing it is safe)."""
    with contextlib.suppress(OSError):
        if not has_progress:
            shutil.rmtree(run_dir)
        elif isinstance(exc, Exception):  # Ctrl-C: an interruption to resume, not a failure
            atomic_write_json(run_dir / FAILED, {"time": time.time(), "error": type(exc).__name__,
                                                 "message": str(exc)[:2000]})


def start_run(run_dir: Path, config: dict[str, Any], device: str) -> None:
    """Write config.json (checked against an existing one) and env.json for this attempt, after removing
    what an earlier attempt killed mid-write left behind (its atomic writes' temporary files)."""
    remove_temporaries(run_dir)
    cfg_file = run_dir / "config.json"
    if cfg_file.is_file():
        old = json.loads(cfg_file.read_text())
        if stable_hash(old.get("identity")) != stable_hash(json.loads(json.dumps(config["identity"], default=str))):
            raise ConfigError(f"{cfg_file} belongs to a different run config; delete {run_dir} to start over")
    atomic_write_json(cfg_file, config)
    env_file = run_dir / "env.json"
    env = environment(device)
    if env_file.is_file():  # resumed: keep the first attempt's record too
        with contextlib.suppress(ValueError, OSError):
            first = json.loads(env_file.read_text())
            env["first_attempt"] = first.get("first_attempt", first)
    atomic_write_json(env_file, env)


LEDGER_DIR = "ledger"


def ledger_dir(results_root: str | os.PathLike[str]) -> Path:
    """`<results>/ledger/`: one small JSON file per finished run, `<kind>-<run id>.json`. One file per
    entry (written atomically, named by the unique run id) so concurrent writers never share a file."""
    return Path(results_root) / LEDGER_DIR


def mark_done(run_dir: Path, info: dict[str, Any] | None = None) -> None:
    """Write DONE, then the run's ledger entry (job name -> run id), which is how drawing finds it."""
    finished = time.time()
    atomic_write_text(run_dir / DONE, json.dumps({"finished": finished, **(info or {})}) + "\n")
    _record(run_dir, finished)


def _record(run_dir: Path, finished: float) -> Path:
    """Write the ledger entry of a finished run folder `<results>/runs/<kind>/<run id>`."""
    config = json.loads((run_dir / "config.json").read_text())
    kind = run_dir.parent.name
    entry = {"name": config.get("name"), "kind": kind, "run_id": run_dir.name, "status": "done",
             "dataset": config.get("dataset", config.get("train_dataset")), "finished": finished}
    return atomic_write_json(ledger_dir(run_dir.parent.parent.parent) / f"{kind}-{run_dir.name}.json", entry)


def reuse_finished(run_dir: Path, name: str) -> bool:
    """Whether the run is finished (then job `name` reuses it and gets its own ledger entry): asked by
    run_train / run_eval before and again under the run's lock, and by the Ray executor's skip."""
    if not is_done(run_dir):
        return False
    record_name(run_dir, name)
    return True


def record_name(run_dir: Path, name: str) -> None:
    """Give a finished run a ledger entry under another job name too. Two jobs whose settings coincide
    share one run (same identity; names are cut to 80 characters in run ids), e.g. AdaCLIP's fp16 and
    fp32 rows on a CPU, where autocast is off: the second job finds the run done and is recorded here
    (`<kind>-<run id>--<name hash>.json`), so drawing finds the run under either name."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
        finished = float(json.loads((run_dir / DONE).read_text() or "{}")["finished"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    if config.get("name") == name:
        return
    kind = run_dir.parent.name
    path = ledger_dir(run_dir.parent.parent.parent) / f"{kind}-{run_dir.name}--{stable_hash(name, 8)}.json"
    if not path.is_file():
        atomic_write_json(path, {"name": name, "kind": kind, "run_id": run_dir.name, "status": "done",
                                 "dataset": config.get("dataset", config.get("train_dataset")), "finished": finished,
                                 "alias_of": config.get("name")})


def rebuild_ledger(results_root: str | os.PathLike[str]) -> int:
    """Record every finished run that has no ledger entry (a results folder made before the ledger
    existed, or a deleted ledger); returns how many entries it wrote. The finish time is DONE's, else
    the file's modification time, so "latest run of a job" keeps its meaning."""
    root = Path(results_root)
    have = {p.stem for p in ledger_dir(root).glob("*.json")}
    written = 0
    for kind in ("train", "eval"):
        for run_dir in sorted(p for p in (root / "runs" / kind).glob("*") if is_done(p)):
            if f"{kind}-{run_dir.name}" in have or not (run_dir / "config.json").is_file():
                continue
            try:
                finished = float(json.loads((run_dir / DONE).read_text() or "{}")["finished"])
            except (ValueError, KeyError, TypeError):  # an older DONE without its time: the file's
                finished = (run_dir / DONE).stat().st_mtime
            _record(run_dir, finished)
            written += 1
    return written


def read_ledger(results_root: str | os.PathLike[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, job name) -> the ledger entry of its latest finished run, whose folder still has DONE."""
    root = Path(results_root)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(ledger_dir(root).glob("*.json")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise RunError(f"ledger entry {path} is unreadable ({err}); delete it and rerun the run's "
                           f"notebook (01_train / 02_evaluate) to record it again") from None
        key = (str(entry["kind"]), str(entry["name"]))
        if not is_done(root / "runs" / key[0] / str(entry["run_id"])):
            continue
        if key not in out or float(entry["finished"]) >= float(out[key]["finished"]):
            out[key] = entry
    return out


@dataclass
class Run:
    """Read-only view of a run folder: what REPORT uses instead of touching files itself."""

    path: Path
    kind: str
    config: dict[str, Any]
    env: dict[str, Any]

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def done(self) -> bool:
        return is_done(self.path)

    @property
    def failed(self) -> bool:
        """The last attempt ended in an error (FAILED holds it); the next attempt resumes and clears it."""
        return not self.done and (self.path / FAILED).is_file()

    def failure(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.path / FAILED).read_text()))
        except (OSError, ValueError):
            return {}

    @property
    def banner(self) -> str:
        return str(self.config.get("banner", ""))

    # --- train runs
    def losses(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "losses.csv")

    def prompt_embeddings(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        with np.load(self.path / "prompt_embeddings.npz") as z:
            return z["emb"].astype(np.float32), [str(n) for n in z["names"]], z["epochs"].astype(int)

    def selection(self) -> dict[str, Any] | None:
        """A best-epoch run's selection record (selection.json: rule, validation set, per-epoch values,
        the chosen epoch); None for a run whose model is its last epoch."""
        path = self.path / "selection.json"
        return json.loads(path.read_text()) if path.is_file() else None

    @property
    def selected_epoch(self) -> int | None:
        """The epoch an evaluation loads by default: the best-epoch run's choice, else None (the last)."""
        sel = self.selection()
        return None if sel is None or sel.get("best_epoch") is None else int(sel["best_epoch"])

    def checkpoint(self, epoch: int | None = None) -> Path:
        ckpts = sorted((self.path / "checkpoints").glob("epoch_*.pt"))
        if not ckpts:
            raise ConfigError(f"train run {self.path} has no checkpoints yet; run it first (glocal train)")
        if epoch is None:
            return ckpts[-1]
        path = self.path / "checkpoints" / f"epoch_{epoch:02d}.pt"
        if not path.is_file():
            raise ConfigError(f"{path} does not exist; available: {[p.name for p in ckpts]}")
        return path

    # --- eval runs
    def metrics(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "metrics.csv")

    def metrics_json(self) -> dict[str, Any]:
        return json.loads((self.path / "metrics.json").read_text())

    def scores(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "scores.csv", keep_default_na=False)

    def samples(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "samples" / "index.csv", keep_default_na=False)

    def score_hist(self) -> dict[str, np.ndarray]:
        with np.load(self.path / "score_hist.npz") as z:
            return {k: z[k] for k in z.files}


def load_run(path: str | os.PathLike[str]) -> Run:
    """Open a run folder (train or eval) written by run_train / run_eval."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ConfigError(f"{path} is not a run folder (no config.json); runs live in <results>/runs/<kind>/")
    config = json.loads(cfg_file.read_text())
    env_file = path / "env.json"
    env = json.loads(env_file.read_text()) if env_file.is_file() else {}
    return Run(path=path, kind=str(config.get("kind", "")), config=config, env=env)


def find_runs(results_root: Path, kind: str, done_only: bool = True, include_failed: bool = False) -> list[Run]:
    """Runs of one kind under a results root (sorted by id): finished ones, or with done_only=False also
    unfinished ones (interrupted, resumable); runs whose last attempt failed only with include_failed."""
    base = Path(results_root) / "runs" / kind
    runs = [load_run(p) for p in sorted(base.glob("*")) if (p / "config.json").is_file()]
    return [r for r in runs if r.done or (not done_only and (include_failed or not r.failed))]
