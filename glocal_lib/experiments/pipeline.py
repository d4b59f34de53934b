"""What a notebook calls: one object tying the registry, the engine profile and the run outputs together.

Every notebook opens a `Reproduction` with its parameters. Notebooks 01/02 make the runs of every
artifact (the engine returns finished runs at once); 03-06 only draw, from the run ledger and the run
files, and refuse with the missing runs' names when one is not finished (`require_runs`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from glocal_lib.errors import RunError
from glocal_lib.experiments import kinds, run_views, screenshot
from glocal_lib.experiments import report as report_mod
from glocal_lib.experiments import tables as tables_mod
from glocal_lib.experiments.parameters import name_list
from glocal_lib.experiments.provenance import banner_for
from glocal_lib.experiments.registry import DEFAULT_GLOCAL_PRESET, Plan, Registry, load_registry
from glocal_lib.experiments.results import DATA_INDEX_DIR, ResultStore
from glocal_lib.io import atomic_write_text

ABLATION_NOTEBOOK = "03_ablations"


@dataclass
class Reproduction:
    """Registry + engine profile + result store for one profile (and optional filters)."""

    registry: Registry
    profile: Any
    store: ResultStore
    progress: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    # --- paths
    @property
    def root(self) -> Path:
        return Path(self.profile.results_root)

    @property
    def tables_dir(self) -> Path:
        return self.root / report_mod.TABLES_DIR

    @property
    def figures_dir(self) -> Path:
        return self.root / report_mod.FIGURES_DIR

    @property
    def banner(self) -> str:
        return banner_for(self.profile)

    def __repr__(self) -> str:
        return (f"Reproduction(profile={self.profile.name!r}, preset={self.registry.glocal_preset!r}, "
                f"results={str(self.root)!r}, datasets={sorted(self.registry.dataset_filter or []) or 'all'}, "
                f"banner={self.banner!r})")

    # --- selection
    def artifact_ids(self, notebook: str | None = None, only: Sequence[str] | None = None,
                     exclude_notebooks: Sequence[str] = ()) -> list[str]:
        """Artifacts of one notebook (or all), restricted to `only` and minus other notebooks' ones."""
        ids = self.registry.expand_ids(as_name_list(only))
        arts = self.registry.artifacts
        if notebook is not None:
            ids = [a for a in ids if arts[a].get("notebook") == notebook]
        return [a for a in ids if arts[a].get("notebook") not in exclude_notebooks]

    def plan(self, ids: Sequence[str]) -> Plan:
        return self.registry.plan(ids)

    def price(self, ids: Sequence[str], costs_file: str | Path | None = None) -> pd.DataFrame:
        """Runs, images, estimated GPU-hours and feature-cache GB per artifact (and a TOTAL row)."""
        from glocal_lib.experiments.costs import load_costs, price_plan

        return price_plan(self.registry, ids, self.profile, load_costs(costs_file))

    # --- work (delegated to the engine)
    def prepare_data(self, only: Sequence[str] | None = None, keys: Sequence[str] | None = None) -> dict[str, Any]:
        """Stand-ins (smoke) or validated real folders (paper) for the datasets the artifacts use."""
        from glocal_lib.engine import prepare_data

        if keys is None:
            keys = self.datasets_for(only)
        keys = list(keys)
        t = time.perf_counter()
        out = prepare_data(self.profile, keys)
        self.timings["prepare_data"] = time.perf_counter() - t
        return out

    def datasets_for(self, only: Sequence[str] | None = None) -> list[str]:
        """Training and evaluation sets of the artifacts' runs, plus T5's datasets when T5 is asked for."""
        ids = self.registry.expand_ids(only)
        plan = self.plan(ids)
        used = [k for j in plan.train_jobs for k in j.train_datasets] + [j.dataset for j in plan.eval_jobs]
        used += [j.validation for j in plan.train_jobs if j.validation]  # best-epoch runs' validation sets
        if "T5" in ids:
            used += [d for d in self.registry.artifact("T5")["datasets"] if self.registry.keep(d)]
        return list(dict.fromkeys(used))

    def train(self, ids: Sequence[str]) -> list[Path]:
        """Train every run the artifacts need (finished runs are returned at once)."""
        from glocal_lib.engine import run_train

        plan = self.plan(ids)
        t = time.perf_counter()
        out = [run_train(job.spec(), self.profile, progress=self.progress) for job in plan.train_jobs]
        self.store.refresh()
        self.timings["train"] = self.timings.get("train", 0.0) + time.perf_counter() - t
        return out

    def evaluate(self, ids: Sequence[str]) -> list[Path]:
        """Evaluate every run the artifacts need (training first where a run is missing)."""
        from glocal_lib.engine import run_eval

        plan = self.plan(ids)
        self.train(ids)
        t = time.perf_counter()
        out = [run_eval(job.spec(self.profile), self.profile, progress=self.progress) for job in plan.eval_jobs]
        for aid in plan.artifacts:  # evaluations outside the plan's jobs (RC: the released checkpoints)
            out += kinds.kind_of(self.registry, aid).evaluate(self, aid, self.registry.artifact(aid))
        self.store.refresh()
        self.timings["evaluate"] = self.timings.get("evaluate", 0.0) + time.perf_counter() - t
        return out

    def status(self, ids: Sequence[str]) -> pd.DataFrame:
        """One row per planned run: finished or not, and its state (done / failed / unfinished / missing)."""
        plan = self.plan(ids)
        rows = [{"kind": "train", "name": j.name, "done": self.store.train_run(j) is not None,
                 "state": self.store.state(j)} for j in plan.train_jobs]
        rows += [{"kind": "eval", "name": j.name, "done": self.store.eval_run(j) is not None,
                  "state": self.store.state(j)} for j in plan.eval_jobs]
        return pd.DataFrame(rows, columns=["kind", "name", "done", "state"])

    def require_runs(self, ids: Sequence[str]) -> None:
        """Refuse to draw when a run the artifacts need (under this invocation's filters) is not finished:
        drawing never computes; the error names the runs and what makes them."""
        plan = self.plan(ids)
        missing = [f"{kind} {job.name} ({self.store.state(job)})"
                   for kind, jobs in (("train", plan.train_jobs), ("eval", plan.eval_jobs))
                   for job in jobs if self.store.state(job) != "done"]
        if missing:
            shown = "; ".join(missing[:6]) + (f"; ... (+{len(missing) - 6} more)" if len(missing) > 6 else "")
            raise RunError(f"{len(missing)} run(s) that {', '.join(ids)} draw from are not finished in "
                           f"{self.root}: {shown}. Notebooks 01_train and 02_evaluate make them "
                           f"(glocal reproduce --profile {self.profile.name} --only {','.join(ids)})")

    # --- drawing (from the results folder only: the run ledger, run files and recorded data indexes)
    def record_data_indexes(self, data: dict[str, Any]) -> list[Path]:
        """Save each prepared dataset's test-set index (`<results>/datasets/<key>.csv`: category, label, has_mask)
        so that T5 and the sample sizes are drawn later without the data."""
        out = []
        for key, info in data.items():
            idx = info.index
            if "split" in idx.columns:
                idx = idx[idx["split"] == "test"]
            cols = [c for c in ("category", "label") if c in idx.columns]
            rec = idx[cols].assign(has_mask=idx["mask_path"].fillna("").astype(str).str.strip() != "") \
                if "mask_path" in idx.columns else idx[cols]
            out.append(atomic_write_text(self.root / DATA_INDEX_DIR / f"{key}.csv", rec.to_csv(index=False)))
        return out

    def build_tables(self, ids: Sequence[str], data: dict[str, Any] | None = None) -> dict[str, tables_mod.Table]:
        """Tables over every dataset and method they cover (not only this invocation's --datasets/--methods):
        finished runs from earlier subsets stay in, runs never made show as missing. `data` (notebook
        00_data) is recorded first; T5 is drawn from the recorded indexes."""
        if data is not None:
            self.record_data_indexes(data)
        return kinds.build_tables(self.registry.unfiltered(), self.store, ids, self.tables_dir)

    def build_figures(self, ids: Sequence[str]) -> dict[str, list[Path]]:
        return kinds.build_figures(self.registry, self.store, ids, self.figures_dir)

    def draw_artifact(self, artifact_id: str) -> Any:
        """Draw one artifact from the saved runs, write its files and return it for inline display
        (a table shows as Markdown, a figure as its PNG; None for RC when 02 did not evaluate it)."""
        from IPython.display import Image

        reg = self.registry.unfiltered() if kinds.kind_of(self.registry, artifact_id).output == "table" \
            else self.registry
        drawn = kinds.draw(artifact_id, reg, self.store, tables_dir=self.tables_dir, figures_dir=self.figures_dir)
        if isinstance(drawn, list):
            return Image(filename=str(self.figures_dir / f"{artifact_id}.png"))
        return drawn

    def build_index(self) -> Path:
        return report_mod.build_index(self.registry, self.root, self.profile)

    def draw(self, ids: Sequence[str] | None = None) -> dict[str, list[Path]]:
        """Redraw every table and figure (and the index) from the results folder alone: what
        `glocal reproduce --draw` runs on a copied results/ folder (no data, cache or GPU needed)."""
        ids = self.registry.expand_ids(ids)
        tables = self.build_tables(ids)
        out = {aid: [self.tables_dir / f"{aid}.{ext}" for ext in ("csv", "md", "html")] for aid in tables}
        out.update(self.build_figures(ids))
        out["index"] = [self.build_index()]
        return out

    # --- display helpers for notebooks
    def show(self, artifact_id: str, ids: Sequence[str] | None = None) -> Any:
        """A notebook section's one call: draw the artifact (from the saved runs) and return what shows it
        inline; an artifact outside `ids` (the execution's `only`) is not drawn, and the section says so."""
        from IPython.display import Markdown

        if ids is not None and artifact_id not in ids:
            return Markdown(f"*{artifact_id} is not drawn in this execution (not among the artifacts `only` selects).*")
        return self.draw_artifact(artifact_id)

    def loss_curves(self, ids: Sequence[str]) -> Any:
        """Notebook 01: the loss curves of every finished training run the artifacts use (from losses.csv)."""
        from IPython.display import Image, Markdown

        logs = [(job.name, run.losses()) for job in self.plan(ids).train_jobs
                if (run := self.store.train_run(job)) is not None]
        if not logs:
            return Markdown("*No training run is planned for these artifacts.*")
        return Image(data=run_views.figure_png(run_views.plot_loss_curves(logs)))

    def eval_metrics(self, ids: Sequence[str]) -> Any:
        """Notebook 02: the dataset-level metrics of every finished evaluation run (from the run files)."""
        metrics = list(self.registry.data["table_metrics"])
        runs = [(job.name, run) for job in self.plan(ids).eval_jobs if (run := self.store.eval_run(job)) is not None]
        return run_views.styled_metrics(run_views.metrics_table(runs, metrics), metrics)

    def screenshot_index(self, readme: bool = False) -> Any:
        """Notebook 06: `<results>/index.png`, a picture of index.html, shown inline; `readme`: a full
        reproduction, which refreshes the README's screenshot (smoke profile, default results folder)."""
        from IPython.display import Image

        return Image(filename=str(screenshot.index_screenshot(self.root, self.profile.name, readme=readme)))


def as_name_list(value: str | Sequence[str] | None) -> list[str] | None:
    """Accept a list, or the string papermill's ``-p`` passes (see parameters.name_list, the one parser)."""
    return name_list(value)


def open_reproduction(profile: str = "smoke", preset: str = DEFAULT_GLOCAL_PRESET,
                      datasets: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                      results_root: str | None = None, data_root: str | None = None,
                      device: str | None = None, precision: str | None = None, progress: bool = False,
                      **profile_overrides: Any) -> Reproduction:
    """The notebooks' entry point: engine profile (with overrides) + registry (with filters)."""
    from glocal_lib.engine import load_profile

    datasets, methods = as_name_list(datasets), as_name_list(methods)

    overrides = {k: v for k, v in dict(results_root=results_root, data_root=data_root, device=device,
                                         precision=precision, **profile_overrides).items() if v is not None}
    prof = load_profile(profile, **overrides)
    registry = load_registry(profile=prof.plan_profile, glocal_preset=preset, datasets=datasets, methods=methods)
    store = ResultStore(prof, registry.data.get("lambda_selection_metrics"))
    return Reproduction(registry=registry, profile=prof, store=store, progress=progress)


def open_notebook(namespace: Mapping[str, Any]) -> Reproduction:
    """Every notebook's first call after its parameters cell (pass `globals()`): the parameters checked
    (an unknown name such as `dataset`, or a wrong type, is refused), the reproduction opened with them
    (`only` stays the notebook's own), and the not-paper-results banner shown."""
    from IPython.display import Markdown, display

    from glocal_lib.experiments.parameters import check_notebook_parameters

    params = check_notebook_parameters(namespace)
    repro = open_reproduction(**{k: v for k, v in params.items() if k != "only"})
    if repro.banner:
        display(Markdown(f"**{repro.banner.upper()}**"))
    return repro
