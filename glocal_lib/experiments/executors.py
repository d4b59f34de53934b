"""Executors: who makes the train and eval runs of a reproduction plan before the notebooks draw.

`local` (the default) is today's behaviour: notebooks 01_train / 02_evaluate make every run in the
kernel, one after the other. `ray` makes the plan's runs first as Ray tasks, on the GPUs of one
machine or of a cluster, then the notebooks run as usual and find every run finished (the engine
returns a finished run at once), so they only draw. Ray places the tasks (fractional GPU requests
pack small evaluations), retries a task whose worker or node died (`max_retries`; the run resumes
from its last epoch or category) and reports progress through `ray.wait`; nothing here schedules.

The unit of work is one run, identified by the run hash the engine computes: a finished run is
skipped, an evaluation waits for its training (the training task's result is its argument), a
failing task is reported with its log while independent tasks go on, and rerunning resumes.

Shared storage: every worker reads and writes the one results folder (runs, ledger, feature cache,
smoke stand-ins), so it must be a path every node sees, on a POSIX filesystem with atomic
`rename` within a folder, `O_EXCL` file creation (tempfile.mkstemp in glocal_lib.io) and flock
locks that hold across machines (NFSv4; Lustre mounted with `-o flock`); see engine/locks.py for
how a crashed worker's lock is released. Workers import this package: install it on every node,
or keep the checkout on the shared filesystem at the same path (PYTHONPATH is passed to the tasks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glocal_lib.errors import ConfigError, GlocalError, RunError
from glocal_lib.io import atomic_write_json

EXECUTORS = ("local", "ray")
LOGS_DIR = ".logs"  # <results>/runs/.logs/<kind>-<run id>.log: one log per run, every attempt appended
PACKAGE_PARENT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RayOptions:
    """How the plan's runs become Ray tasks (the `glocal reproduce --executor ray` flags)."""

    address: str | None = None  # None: the Ray instance ray.init() finds or starts; "auto" | "HOST:PORT"
    gpus_per_train: float | None = None  # None: 1 on a CUDA profile, 0 on a CPU profile
    gpus_per_eval: float | None = None  # None: 0.5 on a CUDA profile (two evaluations share a GPU), 0 on CPU
    cpus_per_task: float = 1.0
    max_retries: int = 3  # re-runs of a task whose worker process or node died (not of a raised error)
    poll_s: float = 15.0  # seconds between progress lines when nothing finishes

    def gpus(self, kind: str, profile: Any) -> float:
        chosen = self.gpus_per_train if kind == "train" else self.gpus_per_eval
        if chosen is None:
            cuda = str(profile.device).startswith("cuda")
            chosen = (1.0 if kind == "train" else 0.5) if cuda else 0.0
        if chosen < 0:
            raise ConfigError(f"--gpus-per-{kind} must be >= 0, got {chosen}")
        return float(chosen)


@dataclass
class Outcome:
    """What became of one planned run."""

    kind: str
    name: str
    state: str  # finished (this call) | skipped (already finished) | failed | blocked (its training failed)
    run_id: str | None = None
    log: str | None = None
    host: str | None = None  # 'host/node' of the last attempt
    gpus: list[str] = field(default_factory=list)
    seconds: float = 0.0
    attempts: int = 0
    error: str | None = None


# ------------------------------------------------------------------------------------ the task
def run_log(profile: Any, kind: str, run_name: str) -> Path:
    """`<results>/runs/.logs/<kind>-<run id>.log`, next to the run folders (and kept when a failed
    attempt removes its folder)."""
    return Path(profile.results_root) / "runs" / LOGS_DIR / f"{kind}-{run_name}.log"


def _run_dir(kind: str, job: Any, profile: Any) -> Path:
    from glocal_lib.engine import eval_run_dir, train_run_dir

    if kind == "train":
        return Path(train_run_dir(job.spec(), profile))
    return Path(eval_run_dir(job.spec(profile), profile))


@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr to `log` (appended) for the block: Python's sys.stdout /
    sys.stderr (whatever object they are) and file descriptors 1 and 2 (C-level writes)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(log, "a", encoding="utf-8", buffering=1) as fh:
            os.dup2(fh.fileno(), 1)
            os.dup2(fh.fileno(), 2)
            try:
                with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
                    yield
            finally:
                fh.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)


def run_job(kind: str, job: Any, profile: Any, board: Any = None, *after: Any) -> dict[str, Any]:
    """Make one run (what a Ray task executes); its output goes to the run's log file.

    `after`: results of the tasks it depends on (Ray starts it once they finished). Returns where
    and how it ran; an error propagates (Ray reports it to the driver)."""
    from glocal_lib.engine import run_eval, run_train
    from glocal_lib.engine.runs import git_commit, slug

    start = time.time()
    info: dict[str, Any] = {"host": os.uname().nodename, "pid": os.getpid(), "gpus": _gpu_ids(),
                            "node": _node_id(), "git": git_commit().get("commit")}
    if str(profile.device).startswith("cuda") and info["gpus"]:
        profile = profile.replace(device="cuda")  # Ray's CUDA_VISIBLE_DEVICES: the assigned GPU(s) only
    try:
        run_name = _run_dir(kind, job, profile).name
    except Exception:  # a bad spec: the run fails below with the same error, logged under the job name
        run_name = slug(job.name)
    log = run_log(profile, kind, run_name)
    info.update(run_id=run_name, log=str(log))
    if board is not None:  # waited for: the driver's next snapshot, taken after this task ends, must see it
        import ray

        ray.get(board.start.remote(f"{kind} {job.name}", info))
    with _output_to(log):
        print(f"=== {kind} {job.name} on {info['host']} pid {info['pid']} gpus {info['gpus'] or '-'} at "
              f"{time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
        try:
            out = (run_train(job.spec(), profile, progress=False) if kind == "train"
                   else run_eval(job.spec(profile), profile, progress=False))
        except BaseException:
            traceback.print_exc()
            raise
        print(f"=== finished: {out} in {time.time() - start:.1f} s", flush=True)
    return {**info, "run_id": Path(out).name, "seconds": time.time() - start}


def _gpu_ids() -> list[str]:
    try:
        import ray

        return [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else []
    except Exception:  # noqa: BLE001 - outside a Ray worker
        return []


def _node_id() -> str | None:
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else None
    except Exception:  # noqa: BLE001
        return None


# ---------------------------------------------------------------------------------- the driver
def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install -e '.[ray]' (or pip install ray) on this "
                          "machine and on every node of the cluster") from None
    return ray


def absolute_profile(profile: Any) -> Any:
    """The profile with absolute folders: Ray workers do not start in this process's directory."""
    roots = {k: str(Path(v).resolve()) for k, v in profile.dataset_roots.items()}
    return profile.replace(results_root=str(Path(profile.results_root).resolve()),
                           data_root=str(Path(profile.data_root).resolve()),
                           cache_dir=str(Path(profile.cache_dir).resolve()), dataset_roots=roots)


def runtime_env() -> dict[str, Any]:
    """What every task's process gets: this checkout on PYTHONPATH and the GLOCAL_* variables."""
    env = {k: v for k, v in os.environ.items() if k.startswith("GLOCAL_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")) if p)
    return {"env_vars": env}


def _finished(kind: str, job: Any, profile: Any) -> str | None:
    """The run id when the job's run (by its hash) is finished, else None (also when it cannot be told).
    A run another job made (same settings) gets this job's ledger entry too, as the local executor gives
    it, so drawing finds the run under either name."""
    from glocal_lib.engine.runs import reuse_finished

    try:
        run_dir = _run_dir(kind, job, profile)
    except (GlocalError, OSError, ValueError):
        return None
    return run_dir.name if reuse_finished(run_dir, job.name) else None


def _error_text(err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err
    text = f"{type(cause).__name__}: {cause}".strip().splitlines()
    return (text[0] if text else type(cause).__name__)[:400]


def _make_board(ray: Any) -> Any:
    @ray.remote(num_cpus=0)
    class Board:
        """Which task started where (host, GPUs, log): what the progress display shows as running."""

        def __init__(self) -> None:
            self.started: dict[str, list[dict[str, Any]]] = {}

        def start(self, key: str, info: dict[str, Any]) -> None:
            self.started.setdefault(key, []).append(info)

        def snapshot(self) -> dict[str, list[dict[str, Any]]]:
            return self.started

    return Board.remote()


def node_label(info: dict[str, Any]) -> str:
    """'host/node' (several Ray nodes may share a host): where the progress display counts runs."""
    return f"{info.get('host')}/{str(info.get('node') or '-')[:6]}"


def _where(info: dict[str, Any]) -> str:
    gpus = info.get("gpus") or []
    return f"{node_label(info)} gpu {','.join(gpus)}" if gpus else f"{node_label(info)} cpu"


def progress_line(outcomes: Sequence[Outcome], submitted: int, started: dict[str, list[dict[str, Any]]],
                  done_keys: set[str]) -> str:
    """One line: runs finished / running / failed / waiting, then the running ones per node and GPU."""
    states = Counter(o.state for o in outcomes)
    running = {k: v[-1] for k, v in started.items() if k not in done_keys}
    total = submitted + states["skipped"]
    waiting = submitted - len(done_keys) - len(running)
    per = Counter(_where(info) for info in running.values())
    where = "; ".join(f"{w}: {n}" for w, n in sorted(per.items()))
    return (f"[ray] {states['finished'] + states['skipped']}/{total} runs done ({states['skipped']} were "
            f"already), {len(running)} running, {states['failed'] + states['blocked']} failed, {waiting} waiting"
            + (f" | running on {where}" if where else ""))


def run_on_ray(repro: Any, ids: Sequence[str], options: RayOptions | None = None,
               echo: Callable[[str], None] | None = print) -> list[Outcome]:
    """Make every train and eval run the artifacts `ids` need as Ray tasks; returns one Outcome per run.

    Raises RunError naming every failed run and its log once all independent runs have finished."""
    ray = _import_ray()
    options = options or RayOptions()
    say = echo or (lambda _line: None)
    profile = absolute_profile(repro.profile)
    plan = repro.plan(ids)
    repro.prepare_data(ids)  # stand-ins / folder checks once, before any worker reads them
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=options.address, runtime_env=runtime_env(), log_to_driver=False,
                 logging_level="WARNING")
    try:
        return _execute(ray, plan, profile, options, say)
    finally:
        if started_here:
            ray.shutdown()


def _check_resources(ray: Any, profile: Any, options: RayOptions) -> dict[str, float]:
    gpus = {k: options.gpus(k, profile) for k in ("train", "eval")}
    have = ray.cluster_resources().get("GPU", 0.0)
    if max(gpus.values()) > have:
        raise ConfigError(f"the Ray cluster has {have:g} GPU(s) but the tasks ask for "
                          f"{gpus['train']:g} (train) / {gpus['eval']:g} (eval): start the workers with GPUs "
                          f"or pass --gpus-per-train/--gpus-per-eval 0 for a CPU profile")
    if str(profile.device).startswith("cuda") and min(gpus.values()) == 0:
        raise ConfigError(f"profile {profile.name} runs on {profile.device}: give every task a GPU share "
                          f"(--gpus-per-train/--gpus-per-eval > 0) so Ray assigns it one")
    return gpus


def _execute(ray: Any, plan: Any, profile: Any, options: RayOptions, say: Callable[[str], None]) -> list[Outcome]:
    gpus = _check_resources(ray, profile, options)
    task = ray.remote(run_job)
    board = _make_board(ray)
    outcomes: list[Outcome] = []
    refs: dict[Any, tuple[str, Any]] = {}
    train_refs: dict[Any, Any] = {}

    def submit(kind: str, job: Any, *after: Any) -> Any:
        ref = task.options(num_cpus=options.cpus_per_task, num_gpus=gpus[kind], max_retries=options.max_retries,
                           name=f"{kind} {job.name}").remote(kind, job, profile, board, *after)
        refs[ref] = (kind, job)
        return ref

    for job in plan.train_jobs:
        if (done := _finished("train", job, profile)) is not None:
            outcomes.append(Outcome("train", job.name, "skipped", run_id=done))
        else:
            train_refs[job] = submit("train", job)
    for ejob in plan.eval_jobs:
        dep = train_refs.get(ejob.train) if ejob.train is not None else None
        if dep is None and (done := _finished("eval", ejob, profile)) is not None:
            outcomes.append(Outcome("eval", ejob.name, "skipped", run_id=done))
        else:
            submit("eval", ejob, *([dep] if dep is not None else []))
    res = ray.cluster_resources()
    say(f"[ray] {len(refs)} runs submitted ({len(outcomes)} already finished) to {len(ray.nodes())} node(s) with "
        f"{res.get('CPU', 0):g} CPUs and {res.get('GPU', 0):g} GPUs")
    started = _wait_all(ray, refs, outcomes, board, options, say)
    _mark_blocked(outcomes)
    _record(profile, outcomes, started)
    say(summary(outcomes))
    failed = [o for o in outcomes if o.state in ("failed", "blocked")]
    if failed:
        lines = "\n".join(f"  {o.kind} {o.name}: {o.error}" + (f" (log: {o.log})" if o.log else "")
                          for o in failed)
        raise RunError(f"{len(failed)} of {len(outcomes)} runs failed on Ray (every independent run finished):\n"
                       f"{lines}\nfix the cause and rerun the same command: finished runs are skipped, "
                       f"interrupted ones resume")
    return outcomes


def _wait_all(ray: Any, refs: dict[Any, tuple[str, Any]], outcomes: list[Outcome], board: Any,
              options: RayOptions, say: Callable[[str], None]) -> dict[str, list[dict[str, Any]]]:
    pending, done_keys = list(refs), set()
    started: dict[str, list[dict[str, Any]]] = {}
    last = ""
    while pending:
        try:
            ready, pending = ray.wait(pending, num_returns=1, timeout=options.poll_s)
        except BaseException:  # Ctrl-C: stop the tasks (an interrupted run keeps its progress and resumes)
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            raise
        started = ray.get(board.snapshot.remote())
        for ref in ready:
            kind, job = refs[ref]
            key = f"{kind} {job.name}"
            done_keys.add(key)
            tries = started.get(key, [])
            seen = tries[-1] if tries else {}
            try:
                res = ray.get(ref)
                outcomes.append(Outcome(kind, job.name, "finished", run_id=res["run_id"], log=res["log"],
                                        host=node_label(res), gpus=res["gpus"], seconds=res["seconds"],
                                        attempts=len(tries)))
            except Exception as err:  # noqa: BLE001 - a task's error (or a dead worker): reported, others go on
                outcomes.append(Outcome(kind, job.name, "failed", run_id=seen.get("run_id"), log=seen.get("log"),
                                        host=node_label(seen) if seen else None, gpus=seen.get("gpus", []), attempts=len(tries),
                                        error=_error_text(err)))
                say(f"[ray] FAILED {key}: {outcomes[-1].error}" + (f" (log: {seen['log']})" if seen else ""))
        line = progress_line(outcomes, len(refs), started, done_keys)
        if ready or line != last:
            say(line)
            last = line
    return started


def _mark_blocked(outcomes: list[Outcome]) -> None:
    """An evaluation that failed because its training did is 'blocked', not a failure of its own."""
    failed_trains = {o.name for o in outcomes if o.kind == "train" and o.state == "failed"}
    for o in outcomes:
        if o.kind == "eval" and o.state == "failed" and o.attempts == 0 and \
                o.name.rsplit("@", 1)[0] in failed_trains:
            o.state, o.error = "blocked", f"not run: its training {o.name.rsplit('@', 1)[0]} failed"


def summary(outcomes: Sequence[Outcome]) -> str:
    """Runs and task-seconds per host and state, and the runs that needed a retry."""
    rows = Counter((o.host or "-", o.state) for o in outcomes if o.state != "skipped")
    secs = Counter()
    for o in outcomes:
        secs[o.host or "-"] += o.seconds
    lines = [f"[ray] {sum(o.state == 'skipped' for o in outcomes)} runs were already finished"]
    for host in sorted({h for h, _ in rows}):
        states = ", ".join(f"{n} {s}" for (h, s), n in sorted(rows.items()) if h == host)
        lines.append(f"[ray]   {host}: {states}; {secs[host]:.0f} task-seconds")
    retried = [f"{o.kind} {o.name} ({o.attempts} attempts)" for o in outcomes if o.attempts > 1]
    if retried:
        lines.append(f"[ray] retried after a lost worker: {', '.join(retried)}")
    return "\n".join(lines)


def _record(profile: Any, outcomes: Sequence[Outcome], started: dict[str, list[dict[str, Any]]]) -> Path:
    """`<results>/logs/executor-ray.json`: every run's outcome and every attempt's host, GPUs and log."""
    data = {"time": time.time(), "outcomes": [dataclasses.asdict(o) for o in outcomes], "attempts": started}
    return atomic_write_json(Path(profile.results_root) / "logs" / "executor-ray.json",
                             json.loads(json.dumps(data, default=str)))


# ------------------------------------------------------------------------------ the CLI's hook
def add_arguments(parser: Any) -> None:
    """`glocal reproduce` flags choosing and configuring the executor."""
    parser.add_argument("--executor", choices=EXECUTORS, default="local", help=(
        "local (default): the notebooks make every run in this process; ray: make the plan's runs as Ray "
        "tasks on this machine's GPUs or a cluster first, then the notebooks draw"))
    parser.add_argument("--address", help="with --executor ray: 'auto' or HOST:PORT of a running Ray cluster "
                        "(default: the one `ray start` started on this machine, else a new local one)")
    parser.add_argument("--gpus-per-train", type=float, help="with --executor ray: GPUs per training task "
                        "(default 1 on a CUDA profile, 0 on CPU)")
    parser.add_argument("--gpus-per-eval", type=float, help="with --executor ray: GPUs per evaluation task, "
                        "fractions share a GPU (default 0.5 on a CUDA profile, 0 on CPU)")
    parser.add_argument("--max-retries", type=int, default=RayOptions.max_retries,
                        help="with --executor ray: retries of a task whose worker or node died")


def make_runs(args: Any, parameters: dict[str, Any], ids: Sequence[str]) -> list[Outcome]:
    """Before the notebooks: make the plan's runs with the chosen executor (local: nothing, the
    notebooks make them). `parameters` are the notebooks' own, so the runs get the same hashes."""
    if args.executor == "local":
        return []
    from glocal_lib.experiments.pipeline import open_reproduction

    keys = ("profile", "preset", "datasets", "methods", "results_root", "data_root", "cache_dir", "device",
            "precision")
    repro = open_reproduction(**{k: parameters.get(k) for k in keys})
    options = RayOptions(address=args.address, gpus_per_train=args.gpus_per_train,
                         gpus_per_eval=args.gpus_per_eval, max_retries=args.max_retries)
    return run_on_ray(repro, ids, options)
