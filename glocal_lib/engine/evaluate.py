"""Evaluation runs: batched prediction, smoothing on the device, metrics from glocal_lib.metrics.

One category at a time: its maps are the only large arrays held (never a whole dataset's), its
results are written to `categories/` as soon as they exist (so a killed evaluation resumes at the
next category), and the dataset files (scores.csv, metrics.csv/json, samples, score_hist.npz) are
assembled at the end. Image metrics are computed only where the dataset's evaluation level has
them (both labels present), pixel metrics only where it has masks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from glocal_lib.checks import check_range, check_types
from glocal_lib.config import detector_class
from glocal_lib.data.dataset import OPENAI_MEAN, OPENAI_STD
from glocal_lib.engine.data_prep import DataInfo, prepare_data
from glocal_lib.engine.features import cache_build, class_names, feature_source, features_label
from glocal_lib.engine.locks import clear_write_errors
from glocal_lib.engine.modeling import (
    AUTO,
    backbone_seed,
    build_detector,
    config_from_dict,
    effective_sigma,
    method_profile,
    model_config,
    resolve_variant,
)
from glocal_lib.engine.profiles import Profile
from glocal_lib.engine.runs import (
    Run,
    clear_failure,
    load_run,
    mark_done,
    record_failure,
    require_device,
    reuse_finished,
    run_id,
    run_lock,
    start_run,
    weights_identity,
)
from glocal_lib.engine.usage import PeakMemory, synchronize
from glocal_lib.errors import ConfigError
from glocal_lib.io import atomic_save_with, atomic_write_json, git_blob_id, stable_hash
from glocal_lib.metrics.summary import IMAGE_METRICS, MEAN_ROW, PIXEL_METRICS, category_mean
from glocal_lib.model.detector import autocast


@dataclass(frozen=True)
class EvalSpec:
    """What to evaluate; None fields take the profile's value (or the train run's)."""

    name: str
    dataset: str
    train_run: str | Path | None = None  # run folder or run id; None = untrained / zero-shot model
    epoch: int | None = None  # None = last epoch of the train run
    preset: str | None = None  # only without train_run (default "glocalclip-released")
    variant: str | None = AUTO  # only without train_run: "auto" = the preset's variant for `dataset`
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 111
    sigma: float | None = None
    precision: str | None = None
    batch_size: int | None = None
    samples_per_category: int | None = None
    categories: tuple[str, ...] | None = None
    use_cache: bool = True
    # only without train_run: a prompt file (official {"prompt_learner": ...}, e.g. the released
    # AnomalyCLIP checkpoints, or ours) loaded into the preset's model; keyed by its git blob id
    checkpoint: str | Path | None = None
    # evaluate a train run's prompts on another backbone / weights / image size than it was trained
    # with (normally refused): a deliberate transfer experiment, recorded in the run identity
    allow_other_backbone: bool = False

    def __post_init__(self) -> None:
        check_types(self, f"eval spec {self.name!r}")
        check_range("sigma", self.sigma, minimum=0, hint="0 = no smoothing; omit it for the preset's value")
        check_range("batch_size", self.batch_size, minimum=1)
        check_range("epoch", self.epoch, minimum=0)
        check_range("samples_per_category", self.samples_per_category, minimum=0)


def _resolve_train_run(train_run: str | Path, profile: Profile) -> Run:
    path = Path(train_run)
    if not (path / "config.json").is_file():
        path = profile.runs_dir("train") / str(train_run)
    if not (path / "config.json").is_file():
        raise ConfigError(f"train run {train_run!r} not found (looked for {path}/config.json); "
                          f"pass a run folder or a run id under {profile.runs_dir('train')}")
    return load_run(path)


def _model_setup(spec: EvalSpec, profile: Profile) -> tuple[Any, Path | None, dict[str, Any], int]:
    """(model config, checkpoint, identity part, seed) for the model this evaluation scores with."""
    if spec.train_run is None:
        preset = spec.preset or "glocalclip-released"
        variant = resolve_variant(preset, spec.variant, eval_dataset=spec.dataset)
        overrides = {**spec.overrides, **({"precision": spec.precision} if spec.precision else {})}
        cfg = model_config(preset, overrides, variant, precision=profile.precision, device=profile.device)
        part: dict[str, Any] = {"preset": preset, "variant": variant, "train_run": None, "epoch": None}
        if spec.checkpoint is None:
            return cfg, None, part, spec.seed
        path = Path(spec.checkpoint)
        if not path.is_file():
            raise ConfigError(f"checkpoint {path} does not exist (EvalSpec.checkpoint: a prompt file to evaluate)")
        return cfg, path, {**part, "checkpoint_id": git_blob_id(path)}, spec.seed
    if spec.checkpoint is not None:
        raise ConfigError("EvalSpec: give train_run or checkpoint, not both")
    tr = _resolve_train_run(spec.train_run, profile)
    _check_same_backbone(tr, profile, spec)
    if spec.epoch is None and not tr.done:
        raise ConfigError(f"train run {tr.path} is not finished; finish it (glocal train) or pick --epoch")
    ckpt = tr.checkpoint(spec.epoch if spec.epoch is not None else tr.selected_epoch)  # best-epoch runs: their pick
    epoch = int(ckpt.stem.split("_")[1])
    cfg = config_from_dict(tr.config["model"])
    changes = dict(spec.overrides)
    if spec.precision:
        changes["precision"] = spec.precision
    if changes:
        cfg = cfg.replace(**changes)
    seed = int(tr.config.get("spec", {}).get("seed", spec.seed))
    return cfg, ckpt, {"preset": tr.config.get("preset"), "variant": tr.config.get("identity", {}).get("variant"),
                      "train_run": tr.run_id, "epoch": epoch}, seed


def _show(key: str, value: Any) -> str:
    if key == "weights" and isinstance(value, dict):
        return f"{value.get('weights')} (sha256 {str(value.get('sha256', '-'))[:12]})"
    return repr(value)


def _same(key: str, a: Any, b: Any) -> bool:
    """Equal settings; a weight file is the same by content (sha256) under any name or folder."""
    if key == "weights" and isinstance(a, dict) and isinstance(b, dict) and a.get("sha256") not in (None, "missing"):
        return a.get("sha256") == b.get("sha256")
    return a == b


def _check_same_backbone(tr: Run, profile: Profile, spec: EvalSpec) -> None:
    """A trained run is scored with the backbone, weights and image size it was trained with, or refused."""
    ident = tr.config.get("identity", {})
    seed = int(tr.config.get("spec", {}).get("seed", spec.seed))
    now = {"backbone": profile.backbone, "weights": weights_identity(profile.weights, profile.cache_dir),
           "image_size": profile.image_size, "backbone_seed": backbone_seed(profile, seed)}
    diff = {k: (ident[k], v) for k, v in now.items() if k in ident and not _same(k, ident[k], v)}
    if not diff or spec.allow_other_backbone:
        return
    found = "; ".join(f"{k}: trained with {_show(k, a)}, this evaluation uses {_show(k, b)}"
                      for k, (a, b) in diff.items())
    raise ConfigError(f"train run {tr.run_id} does not match this evaluation's backbone ({found}). Evaluate it "
                      f"with the settings it was trained with (drop --backbone/--weights/--image-size, or pass "
                      f"the run's), or pass --allow-other-backbone (EvalSpec(allow_other_backbone=True)) to "
                      f"score its prompts on another backbone on purpose (recorded in the run)")


def eval_identity(spec: EvalSpec, profile: Profile, data: DataInfo) -> tuple[dict[str, Any], Any, Path | None, int]:
    cfg, ckpt, part, seed = _model_setup(spec, profile)
    identity = {
        "kind": "eval", "profile": profile.name, **part, "model": cfg.to_dict(), "seed": seed,
        "backbone": profile.backbone,
        "backbone_seed": backbone_seed(profile, seed), "weights": weights_identity(profile.weights, profile.cache_dir),
        "image_size": profile.image_size, "dataset": spec.dataset, "index_hash": data.index_hash,
        "categories": list(spec.categories) if spec.categories else None,
        "sigma": effective_sigma(cfg, profile, spec.sigma),
        "precision": cfg.precision,
        "features": features_label(detector_class(cfg), profile, spec.use_cache),
        "attention_kernel": "fused" if profile.fused_attention else "exact",
        "samples_per_category": spec.samples_per_category if spec.samples_per_category is not None
        else profile.samples_per_category,
    }
    if spec.allow_other_backbone and spec.train_run is not None:
        identity["allow_other_backbone"] = True
    return identity, cfg, ckpt, seed


def spec_profile(spec: EvalSpec, profile: Profile) -> Profile:
    """The profile a zero-shot preset runs under (its own tower, e.g. WinCLIP; see method_profile)."""
    return method_profile(profile, spec.preset or "glocalclip-released") if spec.train_run is None else profile


def eval_run_dir(spec: EvalSpec, profile: Profile, data: DataInfo | None = None) -> Path:
    profile = spec_profile(spec, profile)
    data = data or prepare_data(profile, [spec.dataset])[spec.dataset]
    identity = eval_identity(spec, profile, data)[0]
    return profile.runs_dir("eval") / run_id(spec.name, identity)


def sample_rows(index: pd.DataFrame, k: int) -> list[int]:
    """k figure samples per category, the same for every method: anomalous images first, ordered by a
    hash of their path (deterministic, spread over defect types), normal images if too few."""
    out: list[int] = []
    if k <= 0:
        return out
    for _, grp in index.groupby("category", sort=False):
        keyed = sorted(grp.index, key=lambda i: (-int(grp.at[i, "label"]),
                                                  hashlib.sha256(str(grp.at[i, "image_path"]).encode()).hexdigest()))
        out.extend(int(i) for i in keyed[:k])
    return out


def _image_uint8(item: dict[str, Any]) -> np.ndarray:
    img = item["image"].float().numpy().transpose(1, 2, 0) * np.asarray(OPENAI_STD, np.float32) + np.asarray(OPENAI_MEAN, np.float32)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def _metrics_for(level_image: bool, level_pixel: bool, scores: np.ndarray, labels: np.ndarray,
                 maps: Any, masks: Any, device: str | None = None) -> dict[str, float]:
    from glocal_lib.metrics import image_metrics, pixel_metrics

    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined metrics come back as NaN, documented in metrics.json
        if level_image:
            out.update({k: float(v) for k, v in image_metrics(scores, labels).items()})
        if level_pixel and maps is not None:
            out.update({k: float(v) for k, v in pixel_metrics(maps, masks, device=device).items()})
    return out


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) + "-" + stable_hash(name, 6)


def run_eval(spec: EvalSpec, profile: Profile, *, progress: bool = True, data: DataInfo | None = None) -> Path:
    """Evaluate (or resume, or just return) the run for `spec`; returns its folder."""
    profile = spec_profile(spec, profile)
    require_device(profile.device)
    _model_setup(spec, profile)  # wrong overrides, an unfinished or mismatched train run: refused before data
    data = data or prepare_data(profile, [spec.dataset])[spec.dataset]
    identity, cfg, ckpt, seed = eval_identity(spec, profile, data)
    run_dir = profile.runs_dir("eval") / run_id(spec.name, identity)
    if reuse_finished(run_dir, spec.name):  # finished, perhaps by another job with the same settings
        return run_dir
    profile.apply_threads()
    with run_lock(run_dir):
        if reuse_finished(run_dir, spec.name):
            return run_dir
        config = {"kind": "eval", "name": spec.name, "profile": profile.name, "preset": identity["preset"],
                  "banner": profile.banner, "dataset": spec.dataset, "eval_level": data.eval_level,
                  "train_run": identity["train_run"], "epoch": identity["epoch"], "model": cfg.to_dict(),
                  "identity": identity,
                  "spec": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(spec).items()},
                  "runtime": {"device": profile.device, "data_root": str(data.root),
                              "batch_size": spec.batch_size or profile.eval_batch_size,
                              "checkpoint": str(ckpt) if ckpt else None}}
        clear_failure(run_dir)
        try:
            with clear_write_errors(run_dir):
                start_run(run_dir, config, profile.device)
                _evaluate(spec, profile, cfg, ckpt, seed, data, run_dir, identity, progress=progress)
                mark_done(run_dir)
        except BaseException as exc:
            record_failure(run_dir, exc, has_progress=any((run_dir / "categories").glob("*.npz")))
            raise
    return run_dir


@torch.no_grad()
def _evaluate(spec: EvalSpec, profile: Profile, cfg: Any, ckpt: Path | None, seed: int, data: DataInfo,
              run_dir: Path, identity: dict[str, Any], *, progress: bool) -> None:
    from tqdm.auto import tqdm

    from glocal_lib.data import AnomalyDataset

    memory = PeakMemory(profile.device).start()  # peak memory and hardware, in timing.json
    t0 = time.perf_counter()
    timing: dict[str, Any] = {}
    model = build_detector(cfg, profile, seed=seed, checkpoint=ckpt)
    timing["model_build_s"] = time.perf_counter() - t0
    device, precision = profile.device, identity["precision"]
    sigma, bs = identity["sigma"], spec.batch_size or profile.predict_batch()
    index = data.index
    cats = list(spec.categories) if spec.categories else data.categories
    unknown = sorted(set(cats) - set(data.categories))
    if unknown:
        raise ConfigError(f"categories {unknown} are not in dataset {data.key!r} ({data.root}); "
                          f"it has {data.categories}")
    predictor = _predictor(model, data, profile, use_cache=spec.use_cache, sigma=sigma, precision=precision,
                           batch_size=bs, progress=progress)  # the settings the run identity records
    timing["features_s"] = time.perf_counter() - t0 - timing["model_build_s"]
    t1 = time.perf_counter()
    samples = set(sample_rows(index[index["category"].isin(cats)], identity["samples_per_category"]))
    sample_ds = AnomalyDataset(data.root, index, image_size=profile.image_size) if samples else None
    size = int(model.image_size)
    categories = index["category"].to_numpy()
    cat_dir, sample_dir = run_dir / "categories", run_dir / "samples"
    todo = [c for c in cats if not (cat_dir / f"{_safe(c)}.npz").is_file()]  # others finished before a kill
    rows_of = {c: np.flatnonzero(categories == c) for c in todo}
    order = np.concatenate([rows_of[c] for c in todo]) if todo else np.empty(0, dtype=np.int64)
    # Batches run across category boundaries (few model calls), but only the categories in progress
    # hold their maps: a category is finalised (metrics, part file) and freed as soon as it is complete.
    open_parts: dict[str, _CategoryAccumulator] = {}
    on_device = not str(device).startswith("cpu")
    bar = tqdm(total=len(order), desc=f"eval {data.key}", disable=not progress, unit="img")
    # inference cost per image (efficiency tables): reading a batch (cached features, or images for an
    # image-based method) and the model's prediction, each timed to its end on the device
    clock = {"load_s": 0.0, "predict_s": 0.0}
    for chunk, pred, lab, msk in predictor.batches(order, clock):
        s = pred.image_scores.float().cpu().numpy()
        y = lab.cpu().numpy()
        m, mk = _maps_masks(pred, msk, on_device)
        for j, row in enumerate(chunk.tolist()):
            cat = str(categories[row])
            if cat not in open_parts:
                open_parts[cat] = _CategoryAccumulator(rows_of[cat], size, data.has_pixel_metrics,
                                                       device if on_device else None)
            acc = open_parts[cat]
            acc.add(row, s[j], y[j], m[j], mk[j])
            if row in samples:
                img, mk_j, m_j = _image_uint8(sample_ds[row]), _host(mk[j]), _host(m[j])
                atomic_save_with(sample_dir / f"{row}.npz", lambda p, img=img, a=mk_j, b=m_j:
                                 np.savez_compressed(p, image=img, mask=a, map=b))
            if acc.complete:
                acc.finish(cat_dir / f"{_safe(cat)}.npz", data)
                del open_parts[cat]
        bar.update(len(chunk))
    bar.close()
    timing["predict_and_metrics_s"] = time.perf_counter() - t1
    timing["images"] = float(len(order))
    timing["load_s"], timing["predict_s"], timing["predict_batch"] = clock["load_s"], clock["predict_s"], int(bs)
    build = cache_build(predictor.source)  # a feature cache records what building it cost
    if build is not None and build[1]:
        timing["cache_build_s_per_image"] = build[0] / float(build[1])
    timing = {k: round(v, 4) if isinstance(v, float) else v for k, v in timing.items()}
    atomic_write_json(run_dir / "timing.json", {**timing, **memory.record()})
    _assemble(run_dir, data, cats, samples, identity, profile.banner)


@dataclass(frozen=True)
class _Predictor:
    """The one prediction path of run_eval and category_mean_metric (so they cannot drift): a model,
    its feature source and prompt class names, with the smoothing, precision and batch size it runs at."""

    model: Any
    source: Any
    names: np.ndarray  # per index row, the class name in the prompts
    device: str
    precision: str
    sigma: float
    batch_size: int

    def batches(self, rows: np.ndarray, clock: dict[str, float] | None = None
                ) -> Iterator[tuple[np.ndarray, Any, torch.Tensor, torch.Tensor]]:
        """(rows, prediction, labels, masks) per batch of `rows`, in order. With `clock`, adds the time
        spent reading each batch ("load_s") and predicting it, to its end on the device ("predict_s")."""
        batches = iter(self.source.iter_batches(rows, self.batch_size, self.device))
        while True:
            t_load = time.perf_counter()
            try:
                chunk, feats, lab, msk = next(batches)
            except StopIteration:
                return
            t_pred = time.perf_counter()
            with autocast(self.device, self.precision):
                pred = self.model.predict(feats, sigma=self.sigma, class_names=list(self.names[chunk]))
            if clock is not None:
                synchronize(self.device)
                clock["load_s"] += t_pred - t_load
                clock["predict_s"] += time.perf_counter() - t_pred
            yield chunk, pred, lab, msk


def _predictor(model: Any, data: DataInfo, profile: Profile, *, use_cache: bool, sigma: float, precision: str,
               batch_size: int, progress: bool) -> _Predictor:
    """`model`'s predictor on `data` at resolved settings, opening (or building) its feature source."""
    source = feature_source(model, data, profile, use_cache=use_cache, batch_size=profile.encode_batch(batch_size),
                            progress=progress)
    return _Predictor(model, source, class_names(model, data), profile.device, precision, sigma, batch_size)


def _maps_masks(pred: Any, msk: torch.Tensor, on_device: bool) -> tuple[Any, Any]:
    """A batch's maps (float32) and masks (uint8 {0,1}): kept on the GPU when evaluating there (pixel
    metrics run there, glocal_lib.metrics.device), else numpy on the host."""
    if on_device:
        return pred.maps.float(), (msk > 0.5).to(torch.uint8)
    return pred.maps.float().cpu().numpy(), (msk.cpu().numpy() > 0.5).astype(np.uint8)


def _host(x: Any) -> np.ndarray:
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else x


class _CategoryAccumulator:
    """Scores, labels and (for pixel-level datasets) maps/masks of one category while it is evaluated;
    maps and masks live on `device` when one is given (GPU runs: pixel metrics computed there)."""

    def __init__(self, rows: np.ndarray, size: int, keep_maps: bool, device: str | None = None) -> None:
        self.rows = rows
        self.pos = {int(r): i for i, r in enumerate(rows)}
        self.device = device
        n = len(rows)
        self.scores = np.empty(n, dtype=np.float32)
        self.labels = np.empty(n, dtype=np.int64)
        self.maps: Any = None
        self.masks: Any = None
        if keep_maps and device is not None:
            self.maps = torch.empty((n, size, size), dtype=torch.float32, device=device)
            self.masks = torch.empty((n, size, size), dtype=torch.uint8, device=device)
        elif keep_maps:
            self.maps = np.empty((n, size, size), dtype=np.float32)
            self.masks = np.empty((n, size, size), dtype=np.uint8)
        self.filled = 0

    @property
    def complete(self) -> bool:
        return self.filled == len(self.rows)

    def add(self, row: int, score: float, label: int, amap: np.ndarray, mask: np.ndarray) -> None:
        i = self.pos[row]
        self.scores[i], self.labels[i] = score, label
        if self.maps is not None:
            self.maps[i], self.masks[i] = amap, mask
        self.filled += 1

    def finish(self, part: Path, data: DataInfo) -> None:
        metrics = _metrics_for(data.has_image_metrics, data.has_pixel_metrics, self.scores, self.labels,
                               self.maps, self.masks, self.device)
        atomic_save_with(part, lambda p: np.savez(p, scores=self.scores, labels=self.labels, rows=self.rows,
                                                  metrics=json.dumps(metrics)))
        self.maps = self.masks = None


def _assemble(run_dir: Path, data: DataInfo, cats: list[str], samples: set[int], identity: dict[str, Any],
              banner: str) -> None:
    """Dataset-level files from the per-category parts."""
    index = data.index
    score_rows, metric_rows, per_cat = [], [], {}
    all_scores, all_labels, all_cats = [], [], []
    for cat in cats:
        with np.load(run_dir / "categories" / f"{_safe(cat)}.npz") as z:
            scores, labels, rows = z["scores"], z["labels"], z["rows"]
            metrics = json.loads(str(z["metrics"]))
        per_cat[cat] = metrics
        for r, s, y in zip(rows, scores, labels):
            score_rows.append((index.at[int(r), "image_path"], cat, int(y), float(s)))
        all_scores.append(scores)
        all_labels.append(labels)
        all_cats += [cat] * len(scores)
        metric_rows += [(data.key, cat, k, v) for k, v in metrics.items()]
    names = [m for m in (*IMAGE_METRICS, *PIXEL_METRICS) if any(m in d for d in per_cat.values())]
    mean: dict[str, float] = {}
    n_defined: dict[str, int] = {}
    for m in names:
        by_cat = {c: d[m] for c, d in per_cat.items() if m in d}
        mean[m], left_out = category_mean(by_cat)
        n_defined[m] = len(by_cat) - len(left_out)
        metric_rows.append((data.key, MEAN_ROW, m, mean[m]))
    scores_df = pd.DataFrame(score_rows, columns=["image_path", "category", "label", "score"])
    atomic_save_with(run_dir / "scores.csv", lambda p: scores_df.to_csv(p, index=False))
    metrics_df = pd.DataFrame(metric_rows, columns=["dataset", "category", "metric", "value"])
    atomic_save_with(run_dir / "metrics.csv", lambda p: metrics_df.to_csv(p, index=False))

    def _nan_none(d: dict[str, float]) -> dict[str, float | None]:
        return {k: (None if math.isnan(v) else v) for k, v in d.items()}

    atomic_write_json(run_dir / "metrics.json", {
        "dataset": data.key, "eval_level": data.eval_level, "banner": banner, "profile": identity["profile"],
        "mean": _nan_none(mean), "categories_defined": n_defined,
        "per_category": {c: _nan_none(d) for c, d in per_cat.items()},
        "note": "mean = mean over categories where the metric is defined (NaN/null = undefined: one label only)",
    })
    atomic_save_with(run_dir / "score_hist.npz", lambda p: np.savez(
        p, scores=np.concatenate(all_scores), labels=np.concatenate(all_labels), categories=np.array(all_cats)))
    sample_rows_ = [(i, index.at[i, "category"], index.at[i, "image_path"], int(index.at[i, "label"]),
                     f"samples/{i}.npz") for i in sorted(samples)]
    score_of = dict(zip(scores_df["image_path"], scores_df["score"]))
    sdf = pd.DataFrame(sample_rows_, columns=["i", "category", "image_path", "label", "file"])
    sdf.insert(4, "score", [score_of.get(p, float("nan")) for p in sdf["image_path"]])
    atomic_save_with(run_dir / "samples" / "index.csv", lambda p: sdf.to_csv(p, index=False))


@torch.no_grad()
def category_mean_metric(model: Any, data: DataInfo, profile: Profile, *, metric: str = "pixel_f1max",
                         use_cache: bool = True, sigma: float | None = None, batch_size: int | None = None,
                         progress: bool = False) -> tuple[float, dict[str, float]]:
    """(mean over categories, per-category values) of one pixel metric of an in-memory model on `data`:
    the released AdaCLIP's per-epoch validation (mean pixel F1-max). The same predictions as run_eval
    (one `_Predictor`), one category's maps held at a time; nothing is written. Categories where the
    metric is undefined are left out of the mean, as in the tables."""
    from glocal_lib.metrics import pixel_metrics

    if not data.has_pixel_metrics:
        raise ConfigError(f"dataset {data.key!r} has no pixel masks: it cannot rank epochs by {metric}")
    predictor = _predictor(model, data, profile, use_cache=use_cache, sigma=effective_sigma(model.cfg, profile, sigma),
                           precision=model.cfg.precision, batch_size=batch_size or profile.predict_batch(),
                           progress=progress)
    device = predictor.device
    cats = data.index["category"].to_numpy()
    on_device = None if str(device).startswith("cpu") else device
    values: dict[str, float] = {}
    for cat in data.categories:
        maps, masks = [], []
        for _, pred, _, msk in predictor.batches(np.flatnonzero(cats == cat)):
            m, mk = _maps_masks(pred, msk, on_device is not None)
            maps.append(m)
            masks.append(mk)
        join = torch.cat if on_device else np.concatenate
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a category with one pixel class: NaN, left out of the mean
            values[str(cat)] = float(pixel_metrics(join(maps), join(masks), aupro_methods=(), device=on_device)[metric])
    return category_mean(values)[0], values
