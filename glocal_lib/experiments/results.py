"""Finding and reading the saved run outputs behind an artifact's cells (never recomputing a metric).

The store finds a job's run folder in the run ledger the engine writes when a run finishes
(`<results>/ledger/`: job name -> run id), so drawing needs the results folder only (no data, no
weights, no cache); it opens finished runs with the engine's read-only `load_run`, and turns a cell's candidate runs into one value per
metric — picking the best lambda on the test set where the released script did, and saying so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from glocal_lib.experiments.registry import REGISTRY_FILE, Candidate, Cell, EvalJob, TrainJob
from glocal_lib.io import read_yaml
from glocal_lib.metrics.summary import MEAN_ROW, category_mean

DATA_INDEX_DIR = "datasets"


@dataclass
class CellResult:
    """Metric values (fractions) of one cell plus where they came from."""

    values: dict[str, float] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)
    selected_lambda: float | None = None
    select_on_test: bool = False  # picked on this cell's own test set (a lambda, or a best-epoch run's epoch)
    epoch_selected_on: str | None = None  # a best-epoch train run: the dataset whose test set chose its epoch
    selected_epoch: int | None = None
    missing: bool = False
    per_category: pd.DataFrame | None = None


class ResultStore:
    """Run folders of one profile. Subclass and override `locate_*` to read runs from elsewhere."""

    def __init__(self, profile: Any, selection_metrics: list[str] | None = None) -> None:
        self.profile = profile
        # default: experiments.yaml's lambda_selection_metrics (the one place that list is written)
        self.selection_metrics = list(selection_metrics or read_yaml(REGISTRY_FILE)["lambda_selection_metrics"])
        self._cache: dict[Any, Any] = {}

    def refresh(self) -> None:
        """Forget what was read (after runs were made in this process: the ledger has grown)."""
        self._cache.clear()

    # --- where runs live (the run ledger: no data, no weights, no hashing)
    @property
    def root(self) -> Path:
        return Path(self.profile.results_root)

    def ledger(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(kind, job name) -> latest finished run, read once per store from `<results>/ledger/`."""
        from glocal_lib.engine.runs import ledger_dir, read_ledger, rebuild_ledger

        if "ledger" not in self._cache:
            if not ledger_dir(self.root).is_dir() and (self.root / "runs").is_dir():
                n = rebuild_ledger(self.root)  # a results folder made before the ledger existed
                print(f"[ledger] {self.root} had no run ledger: recorded its {n} finished runs in {ledger_dir(self.root)}")
            self._cache["ledger"] = read_ledger(self.root)
        return self._cache["ledger"]

    def _located(self, kind: str, name: str) -> Path | None:
        entry = self.ledger().get((kind, name))
        return None if entry is None else self.root / "runs" / kind / str(entry["run_id"])

    def locate_train(self, job: TrainJob) -> Path | None:
        return self._located("train", job.name)

    def locate_eval(self, job: EvalJob) -> Path | None:
        return self._located("eval", job.name)

    def data_index(self, key: str) -> pd.DataFrame | None:
        """The test-set index recorded by notebook 00_data (`<results>/datasets/<key>.csv`), if any."""
        path = self.root / DATA_INDEX_DIR / f"{key}.csv"
        if ("index", key) not in self._cache:
            self._cache[("index", key)] = pd.read_csv(path) if path.is_file() else None
        return self._cache[("index", key)]

    # --- opening runs
    def _open(self, path: Path | None) -> Any:
        from glocal_lib.engine import load_run

        if path is None or not (path / "DONE").is_file():
            return None
        return load_run(path)

    def train_run(self, job: TrainJob) -> Any:
        key = ("train", job)
        if key not in self._cache:
            self._cache[key] = self._open(self.locate_train(job))
        return self._cache[key]

    def eval_run(self, job: EvalJob) -> Any:
        key = ("eval", job)
        if key not in self._cache:
            self._cache[key] = self._open(self.locate_eval(job))
        return self._cache[key]

    def _unfinished(self, kind: str) -> dict[str, Path]:
        """Job name -> folder of a run not in the ledger (interrupted or failed), from its config.json."""
        if ("unfinished", kind) not in self._cache:
            found: dict[str, Path] = {}
            for cfg in sorted((self.root / "runs" / kind).glob("*/config.json")):
                if not (cfg.parent / "DONE").is_file():
                    found[str(json.loads(cfg.read_text()).get("name"))] = cfg.parent
            self._cache[("unfinished", kind)] = found
        return self._cache[("unfinished", kind)]

    def state(self, job: TrainJob | EvalJob) -> str:
        """'done', 'failed' (its last attempt ended in an error: FAILED says which), 'unfinished' or 'missing'."""
        kind = "train" if isinstance(job, TrainJob) else "eval"
        path = self.locate_train(job) if isinstance(job, TrainJob) else self.locate_eval(job)
        if path is not None and (path / "DONE").is_file():
            return "done"
        path = self._unfinished(kind).get(job.name)
        if path is None:
            return "missing"
        return "failed" if (path / "FAILED").is_file() else "unfinished"

    def metrics(self, job: EvalJob) -> pd.DataFrame | None:
        run = self.eval_run(job)
        if run is None:
            return None
        key = ("metrics", job)
        if key not in self._cache:
            self._cache[key] = run.metrics()
        return self._cache[key]

    # --- cells
    def dataset_values(self, job: EvalJob) -> dict[str, float] | None:
        """The dataset-level ("mean" over categories) value of every metric of one eval run."""
        df = self.metrics(job)
        if df is None:
            return None
        rows = df[(df["dataset"] == job.dataset) & (df["category"].astype(str) == MEAN_ROW)]
        if rows.empty:  # a run without a "mean" row: average its categories as the engine does
            cats = df[df["dataset"] == job.dataset]
            return {str(m): category_mean(dict(zip(g["category"], g["value"])))[0] for m, g in cats.groupby("metric")}
        return {str(m): float(v) for m, v in zip(rows["metric"], rows["value"])}

    def selection_score(self, values: dict[str, float]) -> float:
        """Mean of the selection metrics that are defined (NaN ones are skipped, not counted as 0)."""
        vals = [values[m] for m in self.selection_metrics if m in values and not math.isnan(values[m])]
        return sum(vals) / len(vals) if vals else float("-inf")

    def _finished(self, cell: Cell) -> list[tuple[Candidate, dict[str, float]]]:
        found = [(c, self.dataset_values(c.job)) for c in cell.candidates]
        return [(c, v) for c, v in found if v is not None]

    def select(self, cell: Cell, found: list[tuple[Candidate, dict[str, float]]]) -> tuple[Candidate, dict[str, float]]:
        """The one place a lambda is picked on the test set (as the released script did): the finished
        candidate with the best mean selection metric; without selection, the cell's only run."""
        if cell.select_on_test:
            return max(found, key=lambda cv: self.selection_score(cv[1]))
        return found[0]

    def cell(self, cell: Cell, per_category: bool = False) -> CellResult:
        """Values of one cell; with several candidates, the best lambda on this dataset's test set."""
        found = self._finished(cell)
        if not cell.candidates:
            return CellResult(missing=True)
        if not found or len(found) < len(cell.candidates):
            return CellResult(missing=True, run_ids=[self.eval_run(c.job).run_id for c, _ in found])
        best, vals = self.select(cell, found)
        result = CellResult(values=vals, selected_lambda=best.lam, select_on_test=cell.select_on_test)
        run = self.eval_run(best.job)
        result.run_ids = [run.run_id]
        if best.job.train is not None:
            tr = self.train_run(best.job.train)
            if tr is not None:
                result.run_ids.append(tr.run_id)
                sel = tr.selection()
                if sel is not None:  # released AdaCLIP: the epoch was chosen on an evaluation set's test data
                    result.epoch_selected_on, result.selected_epoch = sel.get("validation"), sel.get("best_epoch")
                    result.select_on_test = result.select_on_test or sel.get("validation") == cell.dataset
        if per_category:
            df = self.metrics(best.job)
            result.per_category = df[(df["dataset"] == cell.dataset) & (df["category"].astype(str) != MEAN_ROW)]
        return result

    def best_job(self, cell: Cell) -> EvalJob | None:
        """The eval job a figure should draw for a cell (the selected lambda's run), if finished."""
        found = self._finished(cell)
        return self.select(cell, found)[0].job if found else None

    def commit_of(self, run_ids: list[str]) -> str:
        """The git commit recorded by the runs (env.json), for provenance."""
        commits = set()
        for job_run in self._cache.values():
            if job_run is not None and hasattr(job_run, "env") and getattr(job_run, "run_id", None) in run_ids:
                git = job_run.env.get("git", {})
                commits.add(f"{git.get('commit', 'unknown')}{'+dirty' if git.get('dirty') else ''}")
        return ", ".join(sorted(commits)) or "unknown"
