"""`glocal reproduce`: execute the notebooks with papermill, in dependency order, into results/<profile>/.

The notebooks' sources are notebooks/NN_name.py (jupytext percent format); each is built into the
.ipynb papermill executes (notebooks.build_notebooks, in a temporary folder). Each executed notebook
is kept under results/<profile>/notebooks/ with its log under
results/<profile>/logs/, and the seconds per notebook in results/<profile>/timings.md. Runs that
already finished are reused by the engine, so a second reproduction only redraws. The kernel is the
interpreter running this command (a kernelspec is written to a temporary folder of this
reproduction), so a fresh virtual environment needs no `ipykernel install`; one kernel serves every
notebook, its namespace reset between them (kernels.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from glocal_lib.config import PRECISIONS
from glocal_lib.errors import ConfigError, GlocalError
from glocal_lib.experiments import executors
from glocal_lib.experiments.kernels import KERNEL_NAME, notebook_kernels, private_kernelspec
from glocal_lib.experiments.notebooks import NOTEBOOK_ORDER, build_notebooks, record_source, source_path
from glocal_lib.experiments.parameters import check_parameters, name_list
from glocal_lib.experiments.registry import DEFAULT_GLOCAL_PRESET, GLOCAL_PRESETS, load_registry
from glocal_lib.io import atomic_write_json, atomic_write_text

PACKAGE_PARENT = Path(__file__).resolve().parents[2]


class NotebookFailed(GlocalError):
    """A notebook raised: the message names the notebook, the cell and the log."""


def select_notebooks(only: Sequence[str] | None, registry: Any) -> list[str]:
    """Notebooks needed for the requested artifacts (00 and 06 always: data and the index)."""
    if not only:
        return list(NOTEBOOK_ORDER)
    ids = registry.expand_ids(only)
    owners = {registry.artifact(a).get("notebook") for a in ids}
    needs_runs = any(registry.artifact(a).get("notebook") != "00_data" for a in ids)  # 01/02 make every run
    wanted = {"00_data", "06_tables_report"} | owners
    if needs_runs:
        wanted |= {"01_train", "02_evaluate"}
    return [n for n in NOTEBOOK_ORDER if n in wanted]


def _failure(nb: str, out_path: Path, log_path: Path, err: Exception) -> NotebookFailed:
    cell = getattr(err, "cell_index", None)
    exec_count = getattr(err, "exec_count", None)
    source = str(getattr(err, "source", "") or "").strip().splitlines()
    first = source[0] if source else ""
    what = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}"
    where = f"cell {cell}" if cell is not None else "a cell"
    if exec_count is not None:
        where += f" (execution count {exec_count})"
    return NotebookFailed(
        f"notebook {nb}.ipynb failed in {where}{f' starting {first!r}' if first else ''}: {what}\n"
        + (f"  executed notebook (with the traceback): {out_path}\n" if out_path.exists() else
           "  (no executed notebook was written)\n") + f"  log: {log_path}")


INCOMPLETE, FAILED, INTERRUPTED = "INCOMPLETE", "FAILED", "INTERRUPTED"


def outcome_path(out_path: Path, outcome: str | None) -> Path:
    """``nb.ipynb`` for a notebook that ran to the end, ``nb.<OUTCOME>.ipynb`` otherwise."""
    return out_path if outcome is None else out_path.with_suffix(f".{outcome}.ipynb")


def settle(running: Path, out_path: Path, outcome: str | None) -> Path:
    """Give the executed notebook its final name: finished (``outcome`` None), FAILED or INTERRUPTED.

    Only one of ``nb.ipynb`` / ``nb.FAILED.ipynb`` / ``nb.INTERRUPTED.ipynb`` is left, the one of this
    execution, so a notebook from an earlier run can never pass for the outcome of this one.
    """
    final = outcome_path(out_path, outcome)
    for other in (None, FAILED, INTERRUPTED):
        if other != outcome:
            outcome_path(out_path, other).unlink(missing_ok=True)
    if running.exists():
        os.replace(running, final)
    return final


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """``kill PID`` behaves like Ctrl-C: the notebook being executed is kept as nb.INTERRUPTED.ipynb."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_notebooks(names: Sequence[str], parameters: dict[str, Any], out_dir: Path, *,
                  source_dir: Path | None = None, timeout: int | None = None, echo: bool = True,
                  shared_kernel: bool = True) -> dict[str, float]:
    """Execute notebooks in order with papermill; returns seconds per notebook.

    source_dir: where the `<name>.py` sources are (default notebooks/; a folder holding `<name>.ipynb`
    only is executed as is). shared_kernel: one kernel for all of them, its namespace reset before each
    (kernels.py); False: a fresh kernel per notebook.
    """
    build_dir = Path(tempfile.mkdtemp(prefix="glocal-notebooks-"))
    try:
        sources = build_notebooks(names, build_dir, source_dir)  # a missing source fails before any work
        origins = {nb: source_path(nb, source_dir) for nb, path in sources.items() if path.parent == build_dir}
        return _execute(names, sources, origins, parameters, out_dir, timeout=timeout, echo=echo,
                        shared_kernel=shared_kernel)
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)


def _execute(names: Sequence[str], sources: dict[str, Path], origins: dict[str, Path], parameters: dict[str, Any],
             out_dir: Path, *, timeout: int | None, echo: bool, shared_kernel: bool) -> dict[str, float]:
    import papermill as pm

    nb_dir, log_dir = out_dir / "notebooks", out_dir / "logs"
    nb_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    with private_kernelspec(PACKAGE_PARENT), notebook_kernels(shared_kernel, os.getcwd()) as kernel:
        for nb in names:
            src, out_path, log_path = sources[nb], nb_dir / f"{nb}.ipynb", log_dir / f"{nb}.log"
            if echo:
                print(f"[reproduce] {nb} ...", flush=True)
            t = time.perf_counter()
            running = outcome_path(out_path, INCOMPLETE)  # renamed to out_path only once every cell ran
            with open(log_path, "w", encoding="utf-8") as log:
                try:
                    extra = {} if kernel is None else {"km": kernel.km}
                    if kernel is not None:
                        kernel.prepare()
                    pm.execute_notebook(str(src), str(running), parameters=parameters, kernel_name=KERNEL_NAME,
                                        cwd=os.getcwd(), log_output=True, stdout_file=log, stderr_file=log,
                                        progress_bar=False, execution_timeout=timeout, **extra)
                except pm.PapermillExecutionError as err:
                    raise _failure(nb, settle(running, out_path, FAILED), log_path, err) from None
                except Exception as err:  # kernel died, timeout, missing kernel...
                    raise _failure(nb, settle(running, out_path, FAILED), log_path, err) from err
                except BaseException:  # Ctrl-C / SystemExit: the partial notebook must not look finished
                    partial = settle(running, out_path, INTERRUPTED)
                    print(f"[reproduce] {nb} interrupted; partial notebook: {partial}", file=sys.stderr, flush=True)
                    raise
            record_source(settle(running, out_path, None), origins.get(nb, src))
            timings[nb] = time.perf_counter() - t
            if echo:
                print(f"[reproduce] {nb} done in {timings[nb]:.1f} s -> {out_path}", flush=True)
    return timings


def priced_plan(registry: Any, ids: Sequence[str], profile: Any, costs_file: str | None = None) -> str:
    """The plan's price (costs.py); synthetic profiles say where to look instead (their data are stand-ins)."""
    from glocal_lib.experiments.costs import format_price, load_costs, price_plan

    if profile.is_synthetic:
        return (f"price: profile {profile.name} runs on synthetic stand-ins; "
                "`glocal reproduce --profile paper --list` prices the real datasets")
    costs = load_costs(costs_file)
    return "estimated cost (per artifact, then totals):\n" + format_price(
        price_plan(registry, ids, profile, costs), costs, profile)


def timing_table(timings: dict[str, float], total: float, *, shared_kernel: bool,
                 load: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> str:
    """Markdown table of seconds per notebook, with the CPU and its load (timings on a shared machine drift)."""
    kernel = "one shared kernel (imports paid by the first notebook)" if shared_kernel else "one kernel per notebook"
    lines = ["| notebook | seconds | share |", "|---|---:|---:|"]
    lines += [f"| {nb} | {sec:.1f} | {100 * sec / total if total else 0:.0f}% |" for nb, sec in timings.items()]
    lines.append(f"| **total** | **{total:.1f}** | |")
    machine = f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); {kernel}"
    if load is not None:
        machine += (f"; load average (1/5/15 min) {' '.join(f'{x:.2f}' for x in load[0])} at the start, "
                    f"{' '.join(f'{x:.2f}' for x in load[1])} at the end")
    return "\n".join(lines) + f"\n\n{machine}\n"


def _loadavg() -> tuple[float, ...]:
    try:
        return tuple(os.getloadavg())
    except OSError:  # not on every platform
        return ()


def _split(values: Sequence[str] | None) -> list[str] | None:
    """argparse ``nargs='*'``: a flag given with no values selects everything, like no flag."""
    return name_list(values) or None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glocal reproduce", description=(
        "Run the notebooks (00_data ... 06_tables_report) with papermill and regenerate every table and "
        "figure under results/<profile>/ (index.html lists them). Finished runs are reused."))
    p.add_argument("--profile", default="smoke", help="smoke (default; synthetic data, CPU, minutes) | paper (GPU) | "
                   "rehearsal (the paper's runs, model and image size with random weights on stand-ins)")
    p.add_argument("--only", nargs="*", help="artifact ids, comma or space separated (T1,F5,F12-F36); default all")
    p.add_argument("--datasets", nargs="*", help="evaluation dataset keys to keep (e.g. visa mvtec); default all")
    p.add_argument("--methods", nargs="*", help="method columns to keep (CLIP WinCLIP CoOp AnomalyCLIP GlocalCLIP)")
    p.add_argument("--preset", default=DEFAULT_GLOCAL_PRESET, choices=GLOCAL_PRESETS,
                   help="GlocalCLIP preset: released script (default) or paper text")
    p.add_argument("--results-root", help="where results/<profile> goes (default: the profile's)")
    p.add_argument("--data-root", help="dataset folder (paper) / stand-in folder (smoke)")
    p.add_argument("--device", help="cpu | cuda | cuda:1 (default: the profile's)")
    p.add_argument("--precision", choices=PRECISIONS, help="default: the profile's")
    p.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds (default none)")
    p.add_argument("--pdf", action="store_true",
                   help="write every figure as PDF too (the paper profile does by default; same as "
                        "GLOCAL_FIGURE_FORMATS=png,pdf)")
    p.add_argument("--kernel-per-notebook", action="store_true",
                   help="start a fresh kernel for every notebook (default: one kernel, reset between notebooks)")
    p.add_argument("--list", action="store_true",
                   help="print the artifacts, notebooks and planned runs with their estimated GPU-hours and "
                        "feature-cache size; run nothing")
    p.add_argument("--costs", help="with --list: your own per-image costs (YAML like glocal_lib/bench/costs.yaml)")
    p.add_argument("--draw", action="store_true", help=(
        "redraw every table, figure and the index from the results folder alone (its run ledger and run "
        "files): no notebooks, no data, no cache, no GPU; runs nothing"))
    p.add_argument("--rebuild-ledger", action="store_true", help=(
        "first record every finished run of the results folder that has no ledger entry (a folder made "
        "before the ledger existed; a folder without any ledger is recorded automatically)"))
    executors.add_arguments(p)
    return p


def reproduce_cli(argv: Sequence[str]) -> int:
    """Entry point of `glocal reproduce` (argv without the subcommand)."""
    args = build_parser().parse_args(list(argv))
    only, datasets, methods = _split(args.only), _split(args.datasets), _split(args.methods)
    from glocal_lib.engine import load_profile

    if args.pdf:  # the notebooks' kernels inherit it: the profile's figure_formats reads this variable
        os.environ["GLOCAL_FIGURE_FORMATS"] = "png,pdf"

    overrides = {k: v for k, v in {"results_root": args.results_root, "data_root": args.data_root,
                                   "device": args.device, "precision": args.precision}.items() if v}
    try:
        profile = load_profile(args.profile, **overrides)
    except GlocalError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"profile {args.profile!r}: {err}") from err
    registry = load_registry(profile=profile.plan_profile, glocal_preset=args.preset, datasets=datasets,
                             methods=methods)
    ids = registry.expand_ids(only)
    names = select_notebooks(only, registry)
    root = Path(profile.results_root).resolve()
    if args.rebuild_ledger:
        from glocal_lib.engine.runs import rebuild_ledger

        print(f"[reproduce] run ledger: {rebuild_ledger(root)} finished run(s) recorded under {root / 'ledger'}")
    if args.list:
        plan = registry.plan(ids)
        print(f"profile {args.profile} -> {root}\nnotebooks: {', '.join(names)}\nartifacts: {', '.join(ids)}")
        print(plan.summary())
        for job in plan.train_jobs:
            print(f"  train {job.name}")
            if len(job.train_datasets) > 1:
                print(f"        on {' + '.join(job.train_datasets)} (one concatenated training set)")
            if (val := _validation(job, profile)) is not None:
                print(f"        epochs ranked on {val}'s test set (select: best_epoch, a selection on test data)")
            for need in _required_inputs(job, profile):
                print(f"        needs {need}")
        for ejob in plan.eval_jobs:
            print(f"  eval  {ejob.name}")
        print(priced_plan(registry, ids, profile, args.costs))
        return 0
    if args.draw:
        return draw_cli(args, ids, datasets, methods, root)
    parameters = {"profile": args.profile, "preset": args.preset, "datasets": datasets, "methods": methods,
                  "only": ids if only else None, "results_root": str(root),
                  "data_root": str(Path(profile.data_root).resolve()),
                  "cache_dir": str(Path(profile.cache_dir).resolve()),
                  "device": args.device, "precision": args.precision, "progress": False}
    check_parameters(parameters, source="parameter passed to the notebooks")
    executors.make_runs(args, parameters, ids)  # --executor ray: the plan's runs first, as Ray tasks
    t, load0 = time.perf_counter(), _loadavg()
    shared = not args.kernel_per_notebook
    with sigterm_as_interrupt():
        timings = run_notebooks(names, parameters, root, timeout=args.timeout, shared_kernel=shared)
    total = time.perf_counter() - t
    table = timing_table(timings, total, shared_kernel=shared, load=(load0, _loadavg()))
    atomic_write_json(root / "logs" / "reproduce.json", {"argv": list(argv), "parameters": parameters,
                                                         "seconds": timings, "total_seconds": total,
                                                         "shared_kernel": shared, "load_average": [load0, _loadavg()]})
    atomic_write_text(root / "timings.md", f"# Reproduction time per notebook ({args.profile})\n\n{table}")
    print(f"[reproduce] seconds per notebook (also in {root / 'timings.md'}):\n{table}")
    print(f"[reproduce] {len(names)} notebooks in {total:.0f} s; results index: {root / 'index.html'}")
    return 0


def _validation(job: Any, profile: Any) -> str | None:
    """The validation set of a best-epoch training job (its protocol's or its preset's), else None."""
    from glocal_lib.engine.train import _config, validation_set

    spec = job.spec()
    return validation_set(spec, _config(spec, profile))


def _required_inputs(job: Any, profile: Any) -> list[str]:
    """Files a training job needs besides the data and weights (e.g. KAnoCLIP's knowledge file), from
    its config's optional ``required_inputs`` hook."""
    from glocal_lib.engine.modeling import model_config

    cfg = model_config(job.preset, job.overrides_dict)
    hook = getattr(cfg, "required_inputs", None)
    return [f for key in job.train_datasets for f in hook(key, profile)] if callable(hook) else []


def draw_cli(args: argparse.Namespace, ids: list[str], datasets: list[str] | None, methods: list[str] | None,
             root: Path) -> int:
    """`glocal reproduce --draw`: every artifact redrawn from `root` (a copied results folder is enough)."""
    from glocal_lib.experiments.pipeline import open_reproduction

    if not (root / "runs").is_dir():
        raise ConfigError(f"{root} holds no runs/ folder: nothing to draw from; run `glocal reproduce "
                          f"--profile {args.profile}` first (or pass --results-root <copied results/{args.profile}>)")
    repro = open_reproduction(profile=args.profile, preset=args.preset, datasets=datasets, methods=methods,
                              results_root=str(root))
    t = time.perf_counter()
    out = repro.draw(ids)
    print(f"[reproduce --draw] {len(out) - 1} artifacts and the index redrawn from {root} in "
          f"{time.perf_counter() - t:.0f} s; results index: {root / 'index.html'}")
    return 0


def main() -> int:  # python -m glocal_lib.experiments.reproduce
    from glocal_lib.cli import run_entry_point

    return run_entry_point("glocal reproduce", reproduce_cli)


if __name__ == "__main__":
    sys.exit(main())
