"""Efficiency tables (`efficiency_table`: ViP2-CLIP's Table 3, V3): what training and inference cost.

Rows = quantities, columns = methods. Times and peak memory come from the saved run records only
(``timing.json`` of one training run and one evaluation run per method, written by the engine);
trainable parameters are counted at the full-size architecture (``glocal_lib.model.counting``),
never on a smoke run's tiny tower. Keys: `methods`, `train` (the training set whose training run
is timed; the run is the one the protocol makes on it), `eval` (the dataset whose evaluation run is
timed, by the model the protocol trains for it), optional `protocol` (default the main one) and
`paper: {file, table, dataset, metrics: {our quantity: the CSV's metric}, methods: {ours: CSV's}}`.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any

import numpy as np

from glocal_lib.data.registry import DOMAINS
from glocal_lib.experiments.kinds.base import Drawing, Kind, TableBody, register_kind
from glocal_lib.experiments.paper_values import load_paper_table, lookup
from glocal_lib.experiments.registry import Cell, Registry, TrainJob
from glocal_lib.experiments.tables import METRIC_DIGITS, METRIC_LABELS, NOT_RECORDED_NOTE, long_row

GB = 1e9
# quantity key -> (label, digits); the labels say the unit, as the paper's headers do
QUANTITIES: dict[str, tuple[str, int]] = {
    "train_time_h": ("training time (h)", 4),
    "train_time_s": ("training time (s)", 1),
    "train_epochs": ("training epochs run", 0),
    "infer_ms": ("inference time (ms / image)", 2),
    "train_peak_gb": ("peak memory, training (GB)", 2),
    "eval_peak_gb": ("peak memory, inference (GB)", 2),
    "params_m": ("trainable parameters (M), paper's count", 3),
    "params_optimised_m": ("parameters the optimiser updates (M)", 3),
}
METRIC_LABELS.update({k: label for k, (label, _) in QUANTITIES.items()})
METRIC_DIGITS.update({k: digits for k, (_, digits) in QUANTITIES.items()})
NOT_RECORDED = "not recorded by this run (made before the engine recorded it): rerun it to fill the cell"


def _timing(run: Any) -> dict[str, Any]:
    try:
        return dict(json.loads((run.path / "timing.json").read_text()))
    except (OSError, ValueError):
        return {}


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _pair(reg: Registry, art: dict[str, Any], train: str | None, dataset: str | None) -> tuple[str, str, str] | None:
    """(domain, training set, evaluated set) of the protocol pair that trains on `train` (its first
    evaluation set) or evaluates `dataset`; None when the profile's protocol (or filter) has none."""
    which = art.get("protocol", "main")
    for domain in DOMAINS:
        for tr, evals in reg.protocol(which, domain):
            if train is not None and tr == train:
                return domain, tr, evals[0]
            if dataset is not None and dataset in evals:
                return domain, tr, dataset
    return None


def eval_cells(reg: Registry, art: dict[str, Any]) -> list[Cell]:
    """One cell per method: its evaluation on `eval` (the run whose inference is timed)."""
    pair = _pair(reg, art, None, art["eval"])
    if pair is None:
        return []
    dom, train, ds = pair
    return [c for m in reg.methods_of(art) for c in reg.cells_for(reg.method(m), m, dom, art.get("protocol", "main"), [ds])
            if c.train_dataset == train]


def timed_train_jobs(reg: Registry, art: dict[str, Any]) -> list[tuple[str, TrainJob]]:
    """(method, its training run on `train`) for every method (the first candidate of a lambda grid)."""
    pair = _pair(reg, art, art["train"], None)
    if pair is None:
        return []
    _, train, ds = pair
    out = []
    for m in reg.methods_of(art):
        cands, _ = reg.candidates(reg.method(m), train, ds)
        if cands and cands[0].job.train is not None:
            out.append((m, cands[0].job.train))
    return out


def full_size_counts(reg: Registry, method: str, train: str) -> Any:
    """The method's trainable parameters at ViT-L/14@336, 518 px, from its preset and its paper-setting
    overrides (never a profile's shortcuts, which may shrink prompts)."""
    from glocal_lib.config import variant_for

    entry = reg.method(method)
    preset = reg.resolve_preset(str(entry["preset"]))
    return _count(preset, variant_for(preset, train, None), json.dumps(entry.get("overrides") or {}, sort_keys=True))


@lru_cache(maxsize=64)
def _count(preset: str, variant: str | None, overrides: str) -> Any:
    from glocal_lib.config import load_preset
    from glocal_lib.model.counting import full_size_count

    return full_size_count(load_preset(preset, variant, **json.loads(overrides)))


@register_kind("efficiency_table")
class EfficiencyTable(Kind):
    """Rows = QUANTITIES, columns = `methods`: training/inference time, peak memory, parameters."""

    required = ("title", "notebook", "methods", "train", "eval", "paper")

    def cells(self, reg: Registry, aid: str, art: dict[str, Any]) -> list[Cell]:
        return eval_cells(reg, art)

    def train_jobs(self, reg: Registry, aid: str, art: dict[str, Any]) -> list[TrainJob]:
        return [job for _, job in timed_train_jobs(reg, art)]

    def draw(self, ctx: Drawing, aid: str, art: dict[str, Any]) -> TableBody:
        reg = ctx.reg
        pcfg = art["paper"]
        paper = load_paper_table(pcfg["file"])
        names = dict(pcfg.get("methods") or {})
        paper_metrics = dict(pcfg.get("metrics") or {})
        cells = {c.row: c for c in eval_cells(reg, art)}
        trains = dict(timed_train_jobs(reg, art))
        train_set = reg.dataset_name(art["train"])
        eval_set = reg.dataset_name(art["eval"])
        out, hardware, kinds, unrecorded, exact, batches = [], set(), set(), [], [], []

        def usage(t: dict[str, Any], run: Any, what: str) -> float:
            """A run's peak memory (GB) from its timing record; notes its hardware and memory counter."""
            if "peak_memory_bytes" not in t:
                unrecorded.append(f"{method} {what} run {run.run_id}: peak memory")
            hardware.add(t.get("hardware") or run.env.get("device", {}).get("processor", "unknown"))
            kinds.add(t.get("peak_memory_kind"))
            return _num(t.get("peak_memory_bytes")) / GB

        for method in reg.methods_of(art):
            values: dict[str, float] = dict.fromkeys(QUANTITIES, math.nan)
            run_ids: list[str] = []
            job = trains.get(method)
            train_run = ctx.train_run(job) if job is not None else None
            if train_run is not None:
                run_ids.append(train_run.run_id)
                t = _timing(train_run)
                epochs = [_num(v) for v in (t.get("epochs_s") or {}).values()]
                vision = _num(t.get("cache_build_s", t.get("features_s")))
                if epochs and not math.isnan(vision):
                    values["train_time_s"] = vision + float(np.sum(epochs))
                    values["train_time_h"] = values["train_time_s"] / 3600.0
                    values["train_epochs"] = float(len(epochs))
                values["train_peak_gb"] = usage(t, train_run, "training")
            cell = cells.get(method)
            eval_run = ctx.run(cell) if cell is not None else None
            if eval_run is not None:
                run_ids.append(eval_run.run_id)
                t = _timing(eval_run)
                images = _num(t.get("images"))
                per_image = (_num(t.get("load_s")) + _num(t.get("predict_s"))) / images if images else math.nan
                cached = str(eval_run.config.get("identity", {}).get("features", "")).startswith("cache")
                if cached:
                    per_image += _num(t.get("cache_build_s_per_image"))
                if math.isnan(per_image):
                    unrecorded.append(f"{method} evaluation run {eval_run.run_id}: inference time")
                values["infer_ms"] = 1000.0 * per_image
                values["eval_peak_gb"] = usage(t, eval_run, "evaluation")
                batches.append(f"{method} {t.get('predict_batch', 'not recorded')}")
            counts = full_size_counts(reg, method, art["train"])
            values["params_m"], values["params_optimised_m"] = counts.modules / 1e6, counts.optimised / 1e6
            exact.append(f"{method} {counts.modules:,} ({counts.optimised:,} optimised)")
            for q, v in values.items():
                pm = paper_metrics.get(q)
                pv = (lookup(paper, table=pcfg["table"], dataset=pcfg.get("dataset"), method=names.get(method, method),
                             metric=pm) if pm else math.nan)
                # a finished run without the record (made before the engine wrote it) says so, not "undefined"
                made = train_run if q.startswith("train") else eval_run if q in ("infer_ms", "eval_peak_gb") else None
                note = NOT_RECORDED_NOTE if made is not None and math.isnan(v) else ""
                out.append(long_row(aid, domain="", row=method, dataset=eval_set, metric=q, reproduced=v, paper=pv,
                                    run_ids=" ".join(run_ids), note=note))
        ctx.notes.append(f"training time = the training run on {train_set} (its epochs plus the one-off "
                         "encoding of the training set into the frozen-feature cache, for cached methods); our "
                         "engine encodes the frozen tower once, where the released scripts re-run it every epoch")
        ctx.notes.append(f"inference time per image = evaluation on {eval_set}: reading the batch and the model's "
                         "prediction (image-based methods run the tower there), plus, for cached methods, the cache's "
                         "recorded build time per image (reading, preprocessing and the frozen tower); pixel "
                         "metrics are not included; per image at the prediction's batch size ("
                         + (", ".join(batches) or "no run") + "; the released scripts evaluate one image at a time)")
        ctx.notes.append("peak memory: " + "; ".join(sorted(str(k) for k in kinds if k)) if any(kinds) else
                         "peak memory: not recorded by these runs")
        ctx.notes.append("the published GPU cost is set beside the training peak; the paper does not say whether it "
                         "measured training or inference [unsure]")
        ctx.notes.append("timed on: " + "; ".join(sorted(str(h) for h in hardware)) if hardware else
                         "timed on: no run finished yet")
        ctx.notes.append("trainable parameters counted at the full-size architecture (ViT-L/14@336, 518 px; the "
                         "detectors built on the meta device), whatever profile made the runs; paper's count = every "
                         "parameter of the trained modules, including AnomalyCLIP's unused projection layers "
                         "(what the ViP2-CLIP paper counts); exact: " + "; ".join(exact))
        if unrecorded:
            ctx.notes.append(f"{NOT_RECORDED}: " + "; ".join(unrecorded))
        ctx.notes += reg.method_notes(reg.methods_of(art))
        if "smoke" in str(reg.profile):
            ctx.notes.append("smoke profile: times and memory are of the tiny random tower on a CPU with a few "
                             "synthetic images and one or two epochs, not comparable with the paper's GPU figures")
        ctx.notes.append("published values: ViP2-CLIP paper (arXiv 2505.17692) Table 3, measured by its authors")
        return TableBody(out, ["metric"], ["row"])
