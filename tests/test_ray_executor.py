"""`--executor ray` on a local Ray cluster (a head and a worker node, CPU only): a smoke subset's runs
and tables are the local executor's (apart from timestamps and the results folder's own path), also
when a worker is killed mid-run; a failing run is reported with its log while the others finish."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]'; CI installs it)")

from ray.cluster_utils import Cluster  # noqa: E402

from glocal_lib.engine.runs import is_done  # noqa: E402
from glocal_lib.errors import RunError  # noqa: E402
from glocal_lib.experiments.executors import (  # noqa: E402
    RayOptions,
    _execute,
    absolute_profile,
    run_on_ray,
    runtime_env,
)
from glocal_lib.experiments.pipeline import open_reproduction  # noqa: E402
from glocal_lib.experiments.registry import EvalJob, Plan, TrainJob  # noqa: E402

pytestmark = pytest.mark.slow  # a local baseline, a two-node cluster start and a Ray run: minutes

IDS = ["T1"]
DATASETS = ["visa", "mvtec"]
METHODS = ["CLIP", "CoOp"]  # 2 train + 4 eval runs; both CoOp trainings can be caught mid-run
VOLATILE = {"env.json", "DONE", "timing.json"}  # when and where an attempt ran, seconds per phase
TIMESTAMP = re.compile(rb"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:\d{2}|Z)?")  # tables' 'created'
NODE = {"num_cpus": 1, "object_store_memory": 80 * 2**20}


def _open(root: Path) -> Any:
    return open_reproduction("smoke", datasets=DATASETS, methods=METHODS, results_root=str(root))


@pytest.fixture(scope="module")
def local_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local executor's outputs: what notebooks 01/02 (repro.evaluate) and 06 (tables) make."""
    root = tmp_path_factory.mktemp("local") / "smoke"
    repro = _open(root)
    repro.prepare_data(IDS)
    repro.evaluate(IDS)
    repro.build_tables(IDS)
    return root


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Head + one worker node on this machine. Ray's own processes import jsonschema, whose optional
    rfc3987_syntax compiles an Earley grammar at import (~4 s CPU): on a loaded 2-core machine the
    dashboard agent then misses the raylet's fixed 15 s start-up deadline. The cluster's processes
    get a PYTHONPATH entry hiding that optional module (only jsonschema's 'iri' format check uses it)."""
    stub = tmp_path_factory.mktemp("ray-stub")
    (stub / "rfc3987_syntax.py").write_text("raise ImportError('hidden from the test cluster')\n")
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(stub), old) if p)
    try:
        c = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
        c.add_node(**NODE)
        c.wait_for_nodes()
        yield c
        c.shutdown()
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


class Killer(threading.Thread):
    """SIGKILLs the worker training a run once that run has its first epoch checkpoint (the PID comes
    from the run's lock file, `PID HOST`)."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.killed, self.stop = root, None, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.killed is None:
            for ckpt in (self.root / "runs" / "train").glob("*/checkpoints/epoch_01.pt"):
                run_dir = ckpt.parent.parent
                lock = self.root / "runs" / ".locks" / f"train-{run_dir.name}.lock"
                if is_done(run_dir) or not lock.is_file():
                    continue
                pid = int(lock.read_text().split()[0])
                if pid != os.getpid():
                    os.kill(pid, signal.SIGKILL)
                    self.killed = run_dir.name
                    return
            time.sleep(0.05)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _file_equal(fa: Path, fb: Path, ra: Path, rb: Path) -> bool:
    if fa.suffix == ".pt":  # torch.save names its zip records after the (temporary) file: compare contents
        return _same(torch.load(fa, weights_only=True), torch.load(fb, weights_only=True))
    if fa.suffix == ".npz":
        with np.load(fa) as za, np.load(fb) as zb:
            return za.files == zb.files and all(np.array_equal(za[k], zb[k]) for k in za.files)
    da, db = fa.read_bytes(), fb.read_bytes()
    if fa.suffix in (".json", ".csv", ".md", ".html", ".txt"):  # the results folder's own path differs
        da, db = da.replace(str(ra).encode(), b"<root>"), db.replace(str(rb).encode(), b"<root>")
        da, db = TIMESTAMP.sub(b"<time>", da), TIMESTAMP.sub(b"<time>", db)
    return da == db


def assert_same_outputs(ra: Path, rb: Path) -> None:
    """Every run folder, ledger entry and table of `ra` equals `rb`'s (timestamps and timings apart)."""
    for kind in ("train", "eval"):
        names_a = sorted(p.name for p in (ra / "runs" / kind).iterdir())
        assert names_a == sorted(p.name for p in (rb / "runs" / kind).iterdir()), kind
        for name in names_a:
            files_a = sorted(p.relative_to(ra / "runs" / kind / name) for p in (ra / "runs" / kind / name).rglob("*")
                             if p.is_file() and p.name not in VOLATILE)
            files_b = sorted(p.relative_to(rb / "runs" / kind / name) for p in (rb / "runs" / kind / name).rglob("*")
                             if p.is_file() and p.name not in VOLATILE)
            assert files_a == files_b, f"{kind}/{name}"
            for rel in files_a:
                assert _file_equal(ra / "runs" / kind / name / rel, rb / "runs" / kind / name / rel, ra, rb), \
                    f"{kind}/{name}/{rel} differs"
    ledger = {}
    for root in (ra, rb):
        entries = [json.loads(p.read_text()) for p in sorted((root / "ledger").glob("*.json"))]
        ledger[root] = [{k: v for k, v in e.items() if k != "finished"} for e in entries]
    assert ledger[ra] == ledger[rb] and ledger[ra]
    tables = sorted(p.name for p in (ra / "tables").glob("*"))
    assert tables == sorted(p.name for p in (rb / "tables").glob("*")) and "T1.csv" in tables
    for name in tables:
        assert _file_equal(ra / "tables" / name, rb / "tables" / name, ra, rb), f"table {name} differs"


def test_ray_runs_equal_local_runs_even_when_a_worker_is_killed(local_root: Path, cluster: Any,
                                                                  tmp_path: Path) -> None:
    root = tmp_path / "smoke"
    repro = _open(root)
    killer = Killer(root)
    killer.start()
    lines: list[str] = []
    try:
        outcomes = run_on_ray(repro, IDS, RayOptions(address=cluster.address, poll_s=2), echo=lines.append)
    finally:
        killer.stop.set()
        killer.join()
    assert killer.killed is not None, "no training was caught between its first and last epoch"
    by_run = {o.run_id: o for o in outcomes}
    assert by_run[killer.killed].state == "finished" and by_run[killer.killed].attempts == 2
    log = Path(by_run[killer.killed].log).read_text()
    assert log.count("=== train") == 2 and "=== finished" in log  # both attempts, the second resumed
    assert {o.state for o in outcomes} == {"finished"} and len(outcomes) == 6
    assert any("running on" in line for line in lines) and "retried after a lost worker" in lines[-1]
    repro.store.refresh()
    repro.build_tables(IDS)
    assert_same_outputs(local_root, root)
    # rerun: every run is found finished by its hash, nothing is submitted
    again = run_on_ray(_open(root), IDS, RayOptions(address=cluster.address), echo=None)
    assert [o.state for o in again] == ["skipped"] * 6


def test_a_failing_run_is_reported_with_its_log_while_independent_runs_finish(cluster: Any, tmp_path: Path) -> None:
    repro = _open(tmp_path / "smoke")
    repro.prepare_data(keys=["visa"])
    profile = absolute_profile(repro.profile)
    bad = TrainJob("coop", "visa", overrides=(("no_such_field", 1),))
    good = EvalJob(dataset="visa", preset="clip")
    plan = Plan(artifacts=[])
    plan.add_eval(EvalJob(dataset="visa", train=bad))
    plan.add_eval(good)
    ray.init(address=cluster.address, runtime_env=runtime_env())
    try:
        with pytest.raises(RunError) as err:
            _execute(ray, plan, profile, RayOptions(poll_s=2), lambda _line: None)
    finally:
        ray.shutdown()
    text = str(err.value)
    assert "2 of 3 runs failed" in text and f"train {bad.name}: ConfigError" in text
    assert f"not run: its training {bad.name} failed" in text
    log = Path(text.split("(log: ", 1)[1].split(")", 1)[0])
    assert log.is_file() and "no_such_field" in log.read_text()
    assert len(list(profile.runs_dir("eval").glob("clip-visa-*/DONE"))) == 1  # the independent run finished
