"""`glocal reproduce`: execute the notebooks with papermill, in dependency order, into results/<profile>/.

Each executed notebook is kept under results/<profile>/notebooks/ with its log under
results/<profile>/logs/. Runs that already finished are reused by the engine, so a second
reproduction only redraws. The kernel is the interpreter running this command (a kernelspec is
written to a private folder for it), so a fresh virtual environment needs no `ipykernel install`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from glocal_lib.errors import ConfigError, GlocalError
from glocal_lib.experiments.notebooks import NOTEBOOK_ORDER, write_notebooks
from glocal_lib.experiments.parameters import check_parameters
from glocal_lib.experiments.registry import DEFAULT_GLOCAL_PRESET, GLOCAL_PRESETS, load_registry
from glocal_lib.io import atomic_write_json

PACKAGE_PARENT = Path(__file__).resolve().parents[2]
REPO_NOTEBOOKS = PACKAGE_PARENT / "notebooks"
KERNEL_NAME = "glocal-repro"
# notebooks that run their artifacts' jobs themselves; 01/02 run the jobs of every other notebook
DRAWS_ITS_OWN = {"03_ablations"}


class NotebookFailed(GlocalError):
    """A notebook raised: the message names the notebook, the cell and the log."""


def _kernel_dir() -> Path:
    """A kernelspec for this interpreter in a private JUPYTER_PATH entry (works in any fresh venv)."""
    root = Path(tempfile.gettempdir()) / f"glocal-kernels-{os.getuid() if hasattr(os, 'getuid') else 0}"
    spec_dir = root / "kernels" / KERNEL_NAME
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"glocal ({Path(sys.executable).parent.parent.name})",
        "language": "python",
        "env": {"PYTHONPATH": os.pathsep.join(p for p in (str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")) if p),
                "MPLBACKEND": "Agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1"},
        "metadata": {"debugger": False},
    }
    atomic_write_json(spec_dir / "kernel.json", spec)
    return root


def notebook_sources() -> Path:
    """The notebooks folder of the checkout, or freshly generated ones for an installed package."""
    if all((REPO_NOTEBOOKS / f"{n}.ipynb").is_file() for n in NOTEBOOK_ORDER):
        return REPO_NOTEBOOKS
    folder = Path(tempfile.mkdtemp(prefix="glocal-notebooks-"))
    write_notebooks(folder)
    return folder


def select_notebooks(only: Sequence[str] | None, registry: Any) -> list[str]:
    """Notebooks needed for the requested artifacts (00 and 06 always: data and the index)."""
    if not only:
        return list(NOTEBOOK_ORDER)
    ids = registry.expand_ids(only)
    owners = {registry.artifact(a).get("notebook") for a in ids}
    needs_runs = any(registry.artifact(a).get("notebook") not in DRAWS_ITS_OWN | {"00_data"} for a in ids)
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
                  source_dir: Path | None = None, timeout: int | None = None, echo: bool = True) -> dict[str, float]:
    """Execute notebooks in order with papermill; returns seconds per notebook."""
    import papermill as pm

    source_dir = source_dir or notebook_sources()
    nb_dir, log_dir = out_dir / "notebooks", out_dir / "logs"
    nb_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    kernels = _kernel_dir()
    old_path = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(kernels), old_path) if p)
    timings: dict[str, float] = {}
    try:
        for nb in names:
            src, out_path, log_path = source_dir / f"{nb}.ipynb", nb_dir / f"{nb}.ipynb", log_dir / f"{nb}.log"
            if echo:
                print(f"[reproduce] {nb} ...", flush=True)
            t = time.perf_counter()
            running = outcome_path(out_path, INCOMPLETE)  # renamed to out_path only once every cell ran
            with open(log_path, "w", encoding="utf-8") as log:
                try:
                    pm.execute_notebook(str(src), str(running), parameters=parameters, kernel_name=KERNEL_NAME,
                                        cwd=os.getcwd(), log_output=True, stdout_file=log, stderr_file=log,
                                        progress_bar=False, execution_timeout=timeout)
                except pm.PapermillExecutionError as err:
                    raise _failure(nb, settle(running, out_path, FAILED), log_path, err) from None
                except Exception as err:  # kernel died, timeout, missing kernel...
                    raise _failure(nb, settle(running, out_path, FAILED), log_path, err) from err
                except BaseException:  # Ctrl-C / SystemExit: the partial notebook must not look finished
                    partial = settle(running, out_path, INTERRUPTED)
                    print(f"[reproduce] {nb} interrupted; partial notebook: {partial}", file=sys.stderr, flush=True)
                    raise
            settle(running, out_path, None)
            timings[nb] = time.perf_counter() - t
            if echo:
                print(f"[reproduce] {nb} done in {timings[nb]:.1f} s -> {out_path}", flush=True)
    finally:
        if old_path is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old_path
    return timings


def _split(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="glocal reproduce", description=(
        "Run the notebooks (00_data ... 06_tables_report) with papermill and regenerate every table and "
        "figure under results/<profile>/ (index.html lists them). Finished runs are reused."))
    p.add_argument("--profile", default="smoke", help="smoke (default; synthetic data, CPU, minutes) | paper (GPU)")
    p.add_argument("--only", nargs="*", help="artifact ids, comma or space separated (T1,F5,F12-F36); default all")
    p.add_argument("--datasets", nargs="*", help="evaluation dataset keys to keep (e.g. visa mvtec); default all")
    p.add_argument("--methods", nargs="*", help="method columns to keep (CLIP WinCLIP CoOp AnomalyCLIP GlocalCLIP)")
    p.add_argument("--preset", default=DEFAULT_GLOCAL_PRESET, choices=GLOCAL_PRESETS,
                   help="GlocalCLIP preset: released script (default) or paper text")
    p.add_argument("--results-root", help="where results/<profile> goes (default: the profile's)")
    p.add_argument("--data-root", help="dataset folder (paper) / stand-in folder (smoke)")
    p.add_argument("--device", help="cpu | cuda | cuda:1 (default: the profile's)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="default: the profile's")
    p.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds (default none)")
    p.add_argument("--list", action="store_true", help="print the artifacts, notebooks and planned runs; run nothing")
    return p


def reproduce_cli(argv: Sequence[str]) -> int:
    """Entry point of `glocal reproduce` (argv without the subcommand)."""
    args = build_parser().parse_args(list(argv))
    only, datasets, methods = _split(args.only), _split(args.datasets), _split(args.methods)
    reg_profile = args.profile if args.profile in ("smoke", "paper") else "smoke"
    registry = load_registry(profile=reg_profile, glocal_preset=args.preset, datasets=datasets, methods=methods)
    ids = registry.expand_ids(only)
    names = select_notebooks(only, registry)
    from glocal_lib.engine import load_profile

    overrides = {k: v for k, v in {"results_root": args.results_root, "data_root": args.data_root,
                                   "device": args.device, "precision": args.precision}.items() if v}
    try:
        profile = load_profile(args.profile, **overrides)
    except GlocalError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"profile {args.profile!r}: {err}") from err
    root = Path(profile.results_root).resolve()
    if args.list:
        plan = registry.plan(ids)
        print(f"profile {args.profile} -> {root}\nnotebooks: {', '.join(names)}\nartifacts: {', '.join(ids)}")
        print(plan.summary())
        for job in plan.train_jobs:
            print(f"  train {job.name}")
        for ejob in plan.eval_jobs:
            print(f"  eval  {ejob.name}")
        return 0
    parameters = {"profile": args.profile, "preset": args.preset, "datasets": datasets, "methods": methods,
                  "only": ids if only else None, "results_root": str(root),
                  "data_root": str(Path(profile.data_root).resolve()),
                  "cache_dir": str(Path(profile.cache_dir).resolve()),
                  "device": args.device, "precision": args.precision, "progress": False}
    check_parameters(parameters, source="parameter passed to the notebooks")
    t = time.perf_counter()
    with sigterm_as_interrupt():
        timings = run_notebooks(names, parameters, root, timeout=args.timeout)
    total = time.perf_counter() - t
    atomic_write_json(root / "logs" / "reproduce.json", {"argv": list(argv), "parameters": parameters,
                                                         "seconds": timings, "total_seconds": total})
    print(f"[reproduce] {len(names)} notebooks in {total:.0f} s; results index: {root / 'index.html'}")
    return 0


def main() -> int:  # python -m glocal_lib.experiments.reproduce
    from glocal_lib.cli import run_entry_point

    return run_entry_point("glocal reproduce", reproduce_cli)


if __name__ == "__main__":
    sys.exit(main())
