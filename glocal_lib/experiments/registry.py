"""The experiment registry: artifact id -> the train/eval runs it needs, as data read from experiments.yaml.

One loader for every table and figure, so an artifact is defined once and runs shared by several
artifacts (the full GlocalCLIP model appears in T1, T3, T4, T7, TA, F3...) are planned, run and
looked up as one run. Jobs are named and keyed by their *effective* model config (preset + only the
fields that differ from it), never by the artifact that asked first, so `--only T8` and a full
reproduction name the shared runs identically.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glocal_lib.data.registry import DATASETS, load_manifest, train_keys, train_label, train_value
from glocal_lib.errors import ConfigError
from glocal_lib.experiments.parameters import name_list
from glocal_lib.io import read_yaml

REGISTRY_FILE = Path(__file__).with_name("experiments.yaml")
GLOCAL_PRESETS = ("glocalclip-released", "glocalclip-paper")
DEFAULT_GLOCAL_PRESET = "glocalclip-released"
GLOCAL_ALIAS = "@glocal"

# short tags for run names (readable ids: "glocalclip-released-mvtec-l0.1-attnqq-<hash>")
_ABBREV = {
    "normal_length": "n", "anomaly_length": "a", "deep_depth": "d", "deep_length": "t",
    "gcl_lambda": "l", "glocal": "glocal", "semantic": "sem", "anomaly_position": "pos",
    "attention": "attn", "gcl_anchor": "anchor", "alias_final_layer": "alias", "dual_path": "vv",
    "map_reduction": "map", "sigma": "s", "feature_layers": "layers", "vv_start_layer": "vvfrom",
    "window_scales": "win", "use_class_names": "cls",
}

Overrides = tuple[tuple[str, Any], ...]


def _freeze(value: Any) -> Any:
    """JSON-normalised, hashable copy (lists -> tuples) so jobs can be dict keys."""
    value = json.loads(json.dumps(value))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def _thaw(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return "_".join(_fmt(v) for v in value)
    return str(value)


def _short_preset(preset: str) -> str:
    return preset.replace("glocalclip-", "glocal-")


def _tag(overrides: Overrides) -> str:
    return "".join(f"-{_ABBREV.get(k, k)}{_fmt(v)}" for k, v in overrides)


# ----------------------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class TrainJob:
    """One training run: preset + minimal overrides on one training set (the dedupe key). The set is
    one dataset key or a tuple of keys trained on as one concatenated set (named "a+b" in run names)."""

    preset: str
    train_dataset: str | tuple[str, ...]
    overrides: Overrides = ()
    # best-epoch runs only (select: best_epoch): the set that ranks the epochs, when the protocol names one
    # (else the preset's own); None for every other run, whose name and id it leaves unchanged
    validation: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "train_dataset", train_value(self.train_dataset))  # ["mvtec"] -> "mvtec"

    @property
    def name(self) -> str:
        val = f"-val{self.validation}" if self.validation else ""
        return f"{_short_preset(self.preset)}-{train_label(self.train_dataset)}{_tag(self.overrides)}{val}"

    @property
    def train_datasets(self) -> tuple[str, ...]:
        return train_keys(self.train_dataset)

    @property
    def overrides_dict(self) -> dict[str, Any]:
        return {k: _thaw(v) for k, v in self.overrides}

    def spec(self) -> Any:
        """The engine's TrainSpec (imported lazily: the registry itself needs no torch)."""
        from glocal_lib.engine import TrainSpec

        return TrainSpec(name=self.name, train_dataset=self.train_dataset, preset=self.preset,
                         overrides=self.overrides_dict, validation=self.validation)


@dataclass(frozen=True)
class EvalJob:
    """One evaluation run: a trained job (or a zero-shot preset) on one dataset."""

    dataset: str
    train: TrainJob | None = None
    preset: str | None = None  # zero-shot only
    overrides: Overrides = ()  # zero-shot only

    @property
    def name(self) -> str:
        if self.train is not None:
            return f"{self.train.name}@{self.dataset}"
        return f"{_short_preset(str(self.preset))}{_tag(self.overrides)}@{self.dataset}"

    @property
    def method_preset(self) -> str:
        return self.train.preset if self.train is not None else str(self.preset)

    def spec(self, profile: Any, train_dir: Path | None = None) -> Any:
        """The engine's EvalSpec; a trained job points at its train run's folder (`train_dir` if known)."""
        from glocal_lib.engine import EvalSpec, train_run_dir

        if self.train is None:
            return EvalSpec(name=self.name, dataset=self.dataset, train_run=None, preset=self.preset,
                            overrides={k: _thaw(v) for k, v in self.overrides})
        return EvalSpec(name=self.name, dataset=self.dataset,
                        train_run=train_dir or train_run_dir(self.train.spec(), profile))


@dataclass(frozen=True)
class Candidate:
    """One run that may supply a table cell; several when lambda is selected on the test set."""

    lam: float | None
    job: EvalJob


@dataclass(frozen=True)
class Cell:
    """The runs behind one (row, dataset) of an artifact, and how to pick among them."""

    row: str
    domain: str
    train_dataset: str | tuple[str, ...] | None
    dataset: str
    candidates: tuple[Candidate, ...]
    select_on_test: bool  # True: best lambda picked on this dataset's test set (released script)


@dataclass
class Plan:
    """Deduplicated, ordered jobs for a set of artifacts (what `reproduce` executes)."""

    artifacts: list[str]
    train_jobs: list[TrainJob] = field(default_factory=list)
    eval_jobs: list[EvalJob] = field(default_factory=list)
    _train_set: set[TrainJob] = field(default_factory=set, repr=False)
    _eval_set: set[EvalJob] = field(default_factory=set, repr=False)

    def add_train(self, job: TrainJob) -> None:
        if job not in self._train_set:
            self._train_set.add(job)
            self.train_jobs.append(job)

    def add_eval(self, job: EvalJob) -> None:
        if job.train is not None:
            self.add_train(job.train)
        if job not in self._eval_set:
            self._eval_set.add(job)
            self.eval_jobs.append(job)

    def summary(self) -> str:
        return (f"{len(self.artifacts)} artifacts -> {len(self.train_jobs)} train runs, "
                f"{len(self.eval_jobs)} eval runs")


# ------------------------------------------------------------------------------------- registry
class Registry:
    """experiments.yaml, resolved for one profile, one GlocalCLIP preset and an optional dataset filter."""

    def __init__(self, data: dict[str, Any], *, profile: str = "smoke",
                 glocal_preset: str = DEFAULT_GLOCAL_PRESET, datasets: Sequence[str] | None = None,
                 methods: Sequence[str] | None = None, source: str = str(REGISTRY_FILE)) -> None:
        self.data = data
        self.source = source
        if profile not in data["profiles"]:
            raise ConfigError(f"{source}: no registry profile {profile!r}; known: {sorted(data['profiles'])}")
        if glocal_preset not in GLOCAL_PRESETS:
            raise ConfigError(f"GlocalCLIP preset {glocal_preset!r} is not one of {list(GLOCAL_PRESETS)}")
        self.profile = profile
        self.glocal_preset = glocal_preset
        known = set(DATASETS)
        if datasets:
            bad = sorted(set(datasets) - known)
            if bad:
                raise ConfigError(f"unknown dataset key(s) {bad} (--datasets); known keys: {sorted(known)}")
        self.dataset_filter: frozenset[str] | None = frozenset(datasets) if datasets else None
        if methods:
            bad = sorted(set(methods) - set(data["methods"]))
            if bad:
                raise ConfigError(f"unknown method(s) {bad} (--methods); known: {sorted(data['methods'])}")
        self.method_filter: frozenset[str] | None = frozenset(methods) if methods else None

    def unfiltered(self) -> Registry:
        """The same registry without --datasets/--methods filters: what a table is drawn from, so that a
        subset reproduction adds its rows to the tables instead of erasing the others."""
        return Registry(self.data, profile=self.profile, glocal_preset=self.glocal_preset, source=self.source)

    # --- basic lookups
    @property
    def artifacts(self) -> dict[str, dict[str, Any]]:
        """Every artifact definition, the F12-F36 category galleries expanded to their own entries."""
        arts = dict(self.data["artifacts"])
        galleries = self.data.get("category_galleries", {})
        for fid, fig in galleries.get("figures", {}).items():
            arts[fid] = {"kind": "category_gallery", "notebook": galleries["notebook"],
                         "method": galleries["method"], "title": _gallery_title(self, fid, fig), **fig}
        return dict(sorted(arts.items(), key=lambda kv: artifact_sort_key(kv[0])))

    def artifact(self, artifact_id: str) -> dict[str, Any]:
        arts = self.artifacts
        if artifact_id not in arts:
            raise ConfigError(f"unknown artifact {artifact_id!r} ({self.source}); known: {', '.join(arts)}")
        return arts[artifact_id]

    def expand_ids(self, only: str | Iterable[str] | None) -> list[str]:
        """`--only T1,F5,F12-F36` -> ids in registry order (ranges like F12-F36 allowed)."""
        arts = self.artifacts
        only = name_list(only)  # papermill's `-p only T1` is the string "T1", never ["T", "1"]
        if only is None:
            return list(arts)
        if not only:  # an explicit empty selection selects nothing (a notebook with no artifacts of its own)
            return []
        wanted: set[str] = set()
        for item in only:
            item = item.strip()
            if not item:
                continue
            m = re.fullmatch(r"([A-Z]+)(\d+)-\1?(\d+)", item)
            if m:
                lo, hi = int(m.group(2)), int(m.group(3))
                wanted |= {f"{m.group(1)}{i}" for i in range(lo, hi + 1)}
                continue
            if item not in arts:
                raise ConfigError(f"unknown artifact {item!r} in --only; known: {', '.join(arts)}")
            wanted.add(item)
        missing = sorted(wanted - set(arts))
        if missing:
            raise ConfigError(f"unknown artifact(s) {missing} in --only; known: {', '.join(arts)}")
        return [a for a in arts if a in wanted]

    def dataset_name(self, key: str | tuple[str, ...]) -> str:
        """The name the tables print (and the published values use): the manifest's ``short_name``; a
        concatenated training set is its members' names joined by " + "."""
        return " + ".join(load_manifest(k).short_name for k in train_keys(key))

    def domain_of(self, key: str) -> str:
        return load_manifest(key).domain

    def keep(self, dataset: str) -> bool:
        return self.dataset_filter is None or dataset in self.dataset_filter

    def keep_method(self, method: str) -> bool:
        return self.method_filter is None or method in self.method_filter

    def methods_of(self, art: dict[str, Any]) -> list[str]:
        """An artifact's method columns after the --methods filter."""
        return [m for m in art.get("methods", []) if self.keep_method(m)]

    def method_notes(self, methods: list[str]) -> list[str]:
        """What these method columns do differently under this profile (experiments.yaml profile_notes)."""
        notes = ((m, (self.method(m).get("profile_notes") or {}).get(self.profile)) for m in methods)
        return [f"{m} ({self.profile} profile): {note}" for m, note in notes if note]

    def protocol_name(self, which: str) -> str:
        """The protocol this profile runs for `which`: "main"/"ablation" (the profile's main_protocol /
        ablation_protocol), or a protocol named by an artifact (e.g. another paper's), which the profile
        may replace (profiles.<p>.protocols: {name: the one to run}, e.g. a quick smoke version)."""
        prof = self.data["profiles"][self.profile]
        if f"{which}_protocol" in prof:
            return str(prof[f"{which}_protocol"])
        name = str((prof.get("protocols") or {}).get(which, which))
        if name not in self.data["protocols"]:
            raise ConfigError(f"{self.source}: protocol {name!r} is not defined under protocols: "
                              f"(known: {', '.join(self.data['protocols'])})")
        return name

    def protocol(self, which: str, domain: str) -> list[tuple[str | tuple[str, ...], list[str]]]:
        """(train set, eval sets) pairs of the profile's main or ablation protocol (or a named one), filtered.
        A train set is a key or, for a concatenated set (``train: [mvtec, colondb]``), a tuple of keys."""
        pairs = self.data["protocols"][self.protocol_name(which)].get(domain, [])
        out = []
        for p in pairs:
            evals = [d for d in p["eval"] if self.keep(d)]
            if evals:
                out.append((train_value(p["train"]), evals))
        return out

    def pair_validation(self, which: str, domain: str, train: str | tuple[str, ...]) -> str | None:
        """The `validation` set a protocol pair names (for best-epoch runs), or None."""
        for p in self.data["protocols"][self.protocol_name(which)].get(domain, []):
            if train_value(p["train"]) == train_value(train) and p.get("validation"):
                return str(p["validation"])
        return None

    def main_pair_for(self, dataset: str) -> tuple[str, str | tuple[str, ...]] | None:
        """(domain, train set) under which the main protocol evaluates `dataset`."""
        domain = self.domain_of(dataset)
        for train, evals in self.protocol("main", domain):
            if dataset in evals:
                return domain, train
        return None

    def method(self, name: str) -> dict[str, Any]:
        methods = self.data["methods"]
        if name not in methods:
            raise ConfigError(f"unknown method {name!r} ({self.source}); known: {sorted(methods)}")
        return methods[name]

    def variant(self, name: str) -> dict[str, Any]:
        variants = self.data["variants"]
        if name not in variants:
            raise ConfigError(f"unknown variant {name!r} ({self.source}); known: {sorted(variants)}")
        return variants[name]

    def variant_label(self, name: str) -> str:
        return str(self.variant(name).get("label", name))

    def resolve_preset(self, preset: str) -> str:
        return self.glocal_preset if preset == GLOCAL_ALIAS else preset

    # --- config -> jobs
    def candidates(self, entry: dict[str, Any], train: str | tuple[str, ...] | None, dataset: str,
                   validation: str | None = None) -> tuple[list[Candidate], bool]:
        """The eval jobs that can supply one cell of `entry` (method or variant) on `dataset`; `validation`
        (the protocol pair's) goes to the train jobs whose config selects the best epoch."""
        from glocal_lib.config import load_preset, preset_info, variant_for

        if entry.get("reproduced", True) is False:
            return [], False
        preset = self.resolve_preset(str(entry["preset"]))
        info = preset_info(preset)
        own = dict(entry.get("overrides") or {})
        own.update((entry.get("profile_overrides") or {}).get(self.profile) or {})  # this profile only
        base = load_preset(preset).to_dict()
        trained = entry.get("trained", True)
        if not trained:
            variant = variant_for(preset, None, dataset)
            eff = load_preset(preset, variant, **own).to_dict()
            return [Candidate(None, EvalJob(dataset=dataset, preset=preset, overrides=_diff(eff, base)))], False
        if train is None:
            raise ConfigError(f"a trained method needs a training set (dataset {dataset})")
        variant = variant_for(preset, train_label(train), dataset)
        lam_spec = entry.get("lambda")
        select = False
        if lam_spec == "select":
            grid = (info.get("lambda_grid") or {}).get(variant or train_label(train))
            keep = self.data["profiles"][self.profile].get("lambda_grid")
            if grid and keep:
                grid = [x for x in grid if float(x) in {float(k) for k in keep}] or grid[:1]
            lams: list[float | None] = [float(x) for x in grid] if grid else [None]
            select = bool(grid) and len(grid) > 1
        elif lam_spec is None:
            lams = [None]
        else:
            lams = [float(lam_spec)]
        out = []
        for lam in lams:
            values = dict(own)
            if lam is not None:
                values["gcl_lambda"] = lam
            eff = load_preset(preset, variant, **values).to_dict()
            val = validation if eff.get("select") == "best_epoch" else None
            tj = TrainJob(preset=preset, train_dataset=train, overrides=_diff(eff, base), validation=val)
            out.append(Candidate(lam, EvalJob(dataset=dataset, train=tj)))
        return out, select

    def cells_for(self, entry: dict[str, Any], row: str, domain: str, which: str,
                  datasets: Sequence[str] | None = None) -> list[Cell]:
        """One cell per evaluated dataset of the protocol (optionally restricted to `datasets`)."""
        cells = []
        for train, evals in self.protocol(which, domain):
            val = self.pair_validation(which, domain, train)
            for ds in evals:
                if datasets is not None and ds not in datasets:
                    continue
                cands, select = self.candidates(entry, train, ds, val)
                cells.append(Cell(row, domain, train if entry.get("trained", True) else None, ds,
                                  tuple(cands), select))
        return cells

    def sweep_entries(self, panel: str, domain: str) -> list[tuple[Any, str, dict[str, Any]]]:
        """(x value, train set, variant entry) for one F5 panel, the preset's own value included."""
        from glocal_lib.config import load_preset, variant_for

        sweep = self.data["sweeps"][panel]
        fld = sweep["field"]
        values = list(sweep["values"][self.data["profiles"][self.profile]["sweep"]])
        preset = self.glocal_preset
        out = []
        for train, evals in self.protocol("ablation", domain):
            own = load_preset(preset, variant_for(preset, train, evals[0])).to_dict()[fld]
            for v in sorted(set(values) | {own}):
                entry = {"preset": preset, "lambda": 1.0, "overrides": {fld: v}}
                out.append((v, train, entry))
        return out

    # --- artifact -> cells / jobs
    def artifact_cells(self, artifact_id: str) -> list[Cell]:
        """Every cell (row x dataset) an artifact draws, as its kind declares (empty for T5, UMAP, RC)."""
        from glocal_lib.experiments.kinds import kind_of

        return kind_of(self, artifact_id).cells(self, artifact_id, self.artifact(artifact_id))

    def umap_train_jobs(self, artifact_id: str) -> list[tuple[str, TrainJob]]:
        """(panel label, train job) for a UMAP figure: every lambda of the selected preset's grid."""
        art = self.artifact(artifact_id)
        out = []
        for panel in art["panels"]:
            train = panel["train"]
            dom = self.domain_of(train)
            pairs = [p for p in self.protocol("main", dom) if p[0] == train]
            if not pairs:
                continue
            cands, _ = self.candidates(self.method(panel["method"]), train, pairs[0][1][0])
            for c in cands:
                assert c.job.train is not None
                lam = "" if c.lam is None else f", lambda {_fmt(c.lam)}"
                out.append((f"{panel['method']} trained on {self.dataset_name(train)}{lam}", c.job.train))
        return out

    def released_checkpoints(self, artifact_id: str = "RC") -> list[dict[str, Any]]:
        """The released checkpoints an RC artifact evaluates (file, blob, train, eval, log), filtered
        by --datasets on their evaluation set."""
        return [c for c in self.artifact(artifact_id)["checkpoints"] if self.keep(c["eval"])]

    def standin_train_jobs(self, artifact_id: str = "RC") -> list[tuple[dict[str, Any], TrainJob]]:
        """Smoke only: (checkpoint, the method's own training run on the same training set) whose
        exported prompts stand in for the released files; none under the paper profile."""
        if self.profile != "smoke":
            return []
        art = self.artifact(artifact_id)
        out = []
        for ck in self.released_checkpoints(artifact_id):
            cands, _ = self.candidates(self.method(art["method"]), ck["train"], ck["eval"])
            assert cands and cands[0].job.train is not None
            out.append((ck, cands[0].job.train))
        return out

    def plan(self, artifact_ids: Iterable[str] | None = None) -> Plan:
        """Deduplicated jobs for the artifacts (all when None, none for []), in registry order."""
        ids = self.expand_ids(artifact_ids)
        plan = Plan(artifacts=ids)
        from glocal_lib.experiments.kinds import kind_of

        for aid in ids:
            kind = kind_of(self, aid)
            for cell in kind.cells(self, aid, self.artifact(aid)):
                for cand in cell.candidates:
                    plan.add_eval(cand.job)
            for tj in kind.train_jobs(self, aid, self.artifact(aid)):
                plan.add_train(tj)
        return plan

    def notebook_artifacts(self, notebook: str) -> list[str]:
        return [a for a, d in self.artifacts.items() if d.get("notebook") == notebook]


def _diff(eff: dict[str, Any], base: dict[str, Any]) -> Overrides:
    """Fields of `eff` that differ from `base`, sorted: the minimal, canonical overrides."""
    keys = sorted(k for k in eff if k != "extra" and _freeze(eff[k]) != _freeze(base.get(k)))
    return tuple((k, _freeze(eff[k])) for k in keys)


def _gallery_title(reg: Registry, fid: str, fig: dict[str, Any]) -> str:
    cats = ", ".join(fig["categories"])
    return f"Per-category anomaly maps, {reg.dataset_name(fig['dataset'])}: {cats}"


def artifact_sort_key(artifact_id: str) -> tuple[int, int, str]:
    """Tables first (T1..T10, then TA, TE, TX), then figures by number."""
    m = re.fullmatch(r"([A-Z])(\d*)([A-Z]*)", artifact_id)
    if not m:
        return (9, 0, artifact_id)
    letter, num, suffix = m.groups()
    group = {"T": 0, "F": 1}.get(letter, 2)
    return (group, int(num) if num else 100, suffix)


def load_registry(path: str | Path | None = None, **kwargs: Any) -> Registry:
    """Read experiments.yaml (or another registry file) and resolve it for a profile."""
    path = Path(path) if path else REGISTRY_FILE
    data = read_yaml(path)
    for key in ("protocols", "profiles", "methods", "variants", "artifacts"):
        if key not in data:
            raise ConfigError(f"{path}: missing top-level key {key!r}")
    unknown = sorted(_protocol_datasets(data) - set(DATASETS))
    if unknown:
        raise ConfigError(f"{path}: dataset key(s) {unknown} in protocols have no manifest; add "
                          f"data_manifests/<key>.yaml (README: Adding a dataset) or use one of {', '.join(DATASETS)}")
    from glocal_lib.experiments.kinds import check_artifacts

    registry = Registry(data, source=str(path), **kwargs)
    check_artifacts(registry)  # every artifact names a registered kind and has the keys it reads
    return registry


def _protocol_datasets(data: dict[str, Any]) -> set[str]:
    """Every training and evaluation set the protocols name."""
    pairs = [p for proto in data["protocols"].values() for domain in proto.values() for p in domain]
    return ({k for p in pairs for k in train_keys(p["train"])} | {d for p in pairs for d in p["eval"]}
            | {p["validation"] for p in pairs if p.get("validation")})
