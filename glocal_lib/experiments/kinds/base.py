"""The registry of artifact kinds: `@register_kind("comparison_table")` on a `Kind` subclass.

An experiments.yaml artifact names its kind (`kind: comparison_table`); the kind's class says which
cells (runs) the artifact needs (`cells`, plus `train_jobs` for runs outside any cell) and draws it
from them (`draw`). Planning (`Registry.plan`, `--list`, prices) and drawing ask the same methods, so a
table never reads a run its plan did not make. Nothing else interprets kind names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from glocal_lib.errors import ConfigError
from glocal_lib.experiments.registry import Cell, Registry, TrainJob
from glocal_lib.experiments.results import CellResult, ResultStore

KINDS: dict[str, Kind] = {}
OUTPUTS = ("table", "figure")
K = TypeVar("K", bound="type[Kind]")


@dataclass
class TableBody:
    """What a table kind draws: long rows (tables.LONG_COLUMNS) and how to pivot them."""

    rows: list[dict[str, Any]]
    index: list[str]
    columns: list[str]
    group_by: str | None = None


class Kind:
    """One family of artifacts. Subclass, set `output` (and `required` yaml keys), register."""

    name: ClassVar[str] = ""
    output: ClassVar[str] = "table"  # "table" (tables/<ID>.csv|md|html) or "figure" (figures/<ID>.png)
    required: ClassVar[tuple[str, ...]] = ()  # keys the experiments.yaml entry must have
    headline: ClassVar[bool] = False  # the results index shows the Mean row of the entry's `headline` method

    def cells(self, reg: Registry, aid: str, art: dict[str, Any]) -> list[Cell]:
        """Every cell (row x dataset) the artifact draws; what its plan evaluates."""
        return []

    def train_jobs(self, reg: Registry, aid: str, art: dict[str, Any]) -> list[TrainJob]:
        """Training runs the artifact reads directly (not through a cell's eval run)."""
        return []

    def evaluate(self, repro: Any, aid: str, art: dict[str, Any]) -> list[Path]:
        """Evaluation runs notebook 02 makes besides the planned eval jobs (RC: the released checkpoints)."""
        return []

    def draw(self, ctx: Drawing, aid: str, art: dict[str, Any]) -> Any:
        """A TableBody (table kinds) or a matplotlib Figure (figure kinds), from `ctx` only (None: not
        drawn, e.g. RC before 02_evaluate evaluated it)."""
        raise NotImplementedError


def register_kind(name: str) -> Any:
    """Class decorator: make `name` a kind experiments.yaml entries can use."""

    def add(cls: K) -> K:
        if name in KINDS:
            raise ConfigError(f"artifact kind {name!r} is registered twice ({type(KINDS[name]).__name__}, {cls.__name__})")
        if cls.output not in OUTPUTS:
            raise ConfigError(f"artifact kind {name!r}: output must be one of {OUTPUTS}, not {cls.output!r}")
        cls.name = name
        KINDS[name] = cls()
        return cls

    return add


def kind_of(reg: Registry, aid: str) -> Kind:
    """The registered kind of artifact `aid`, or an error naming its yaml entry and the known kinds."""
    art = reg.artifact(aid)
    name = art.get("kind")
    if name not in KINDS:
        raise ConfigError(f"{reg.source}: artifact {aid} has kind {name!r}, which is not registered; known kinds: "
                          f"{', '.join(sorted(KINDS))} (a new kind is a Kind subclass decorated with "
                          "@register_kind in glocal_lib/experiments/kinds/)")
    return KINDS[str(name)]


def check_artifacts(reg: Registry) -> None:
    """Every artifact names a registered kind and has the keys that kind reads (one error listing all)."""
    problems = []
    for aid, art in reg.artifacts.items():
        try:
            kind = kind_of(reg, aid)
        except ConfigError as err:
            problems.append(str(err))
            continue
        lacking = [k for k in kind.required if k not in art]
        if lacking:
            problems.append(f"{reg.source}: artifact {aid} (kind {kind.name}) lacks key(s) {lacking}")
    if problems:
        raise ConfigError("\n".join(problems))


class Drawing:
    """What a kind draws from: the registry, the saved runs, and what it used (for the provenance)."""

    def __init__(self, reg: Registry, store: ResultStore) -> None:
        self.reg = reg
        self.store = store
        self.run_ids: list[str] = []
        self.presets: set[str] = set()
        self.notes: list[str] = []
        self.used: list[Cell] = []  # every cell read: equals the kind's planned cells (tests/test_kinds.py)
        self.trained: list[TrainJob] = []  # every training run read directly: equals the kind's train_jobs

    def _record(self, cell: Cell) -> None:
        self.used.append(cell)
        self.presets |= {c.job.method_preset for c in cell.candidates}

    def cell(self, cell: Cell, per_category: bool = False) -> CellResult:
        """One cell's values (the lambda picked on test where the cell selects one)."""
        self._record(cell)
        res = self.store.cell(cell, per_category=per_category)
        self.run_ids += res.run_ids
        return res

    def run(self, cell: Cell) -> Any:
        """The eval run a figure shows for a cell (the selected lambda's), or None when not finished."""
        self._record(cell)
        job = self.store.best_job(cell)
        run = None if job is None else self.store.eval_run(job)
        if run is not None:
            self.run_ids.append(run.run_id)
            train = self.store.train_run(job.train) if job is not None and job.train is not None else None
            if train is not None:
                self.run_ids.append(train.run_id)
        return run

    def train_run(self, job: TrainJob) -> Any:
        """A training run read directly (UMAP: its prompt embeddings), or None when not finished."""
        self.trained.append(job)
        run = self.store.train_run(job)
        if run is not None:
            self.run_ids.append(run.run_id)
            self.presets.add(job.preset)
        return run
