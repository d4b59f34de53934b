"""Prompt training (spec §5–6): a resumable run that only ever updates the model's prompt parameters.

Every epoch ends with a checkpoint (prompts, optimizer, RNG states, step), the prompt embeddings so
far and the loss log, all written atomically; `latest.pt` is written last and is what a resumed
run starts from, so a run killed at any moment (kill -9) continues from its last complete epoch
and reaches the same final prompts. The loop is method-agnostic: it calls model.compute_losses.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from glocal_lib.checks import check_range, check_types
from glocal_lib.data.registry import train_keys, train_label, train_value
from glocal_lib.engine.data_prep import DataInfo, prepare_data
from glocal_lib.engine.features import ConcatSource, cache_build, class_names, feature_source
from glocal_lib.engine.locks import clear_write_errors
from glocal_lib.engine.modeling import (
    AUTO,
    backbone_seed,
    build_detector,
    model_config,
    prompt_names,
    resolve_variant,
)
from glocal_lib.engine.profiles import Profile
from glocal_lib.engine.runs import (
    clear_failure,
    mark_done,
    record_failure,
    require_device,
    reuse_finished,
    run_id,
    run_lock,
    start_run,
    weights_identity,
)
from glocal_lib.engine.usage import PeakMemory
from glocal_lib.errors import ConfigError, RunError, describe_load_failure
from glocal_lib.io import atomic_save_with, atomic_write_json, atomic_write_text

# the loss terms logged for a method that does not declare its own (``loss_names``: the AnomalyCLIP family)
LOSS_KEYS = ("global", "local", "focal", "dice", "gcl", "total")
DEFAULT_LR = 1e-3  # Adam of the released GlocalCLIP / AnomalyCLIP train.py
DEFAULT_BETAS = (0.5, 0.999)


@dataclass(frozen=True)
class TrainSpec:
    """What to train; None fields take the profile's value. Only result-changing fields enter the hash."""

    name: str
    # one dataset key, or several trained on as one concatenated set (rows of the first, then the next...)
    train_dataset: str | tuple[str, ...] = "mvtec"
    preset: str = "glocalclip-released"
    variant: str | None = AUTO  # "auto": the preset's variant for train_dataset; None: base values
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 111
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None  # None: the method config's lr (AdaCLIP 0.01), else DEFAULT_LR
    betas: tuple[float, float] | None = None  # None: the method config's adam_betas, else DEFAULT_BETAS
    use_cache: bool = True
    # dataset whose test set ranks the epochs when the method config says select: best_epoch (released
    # AdaCLIP); None: the preset's own (its training_sets/validation), refused for other selections
    validation: str | None = None

    def __post_init__(self) -> None:
        """Refuse what would train nothing or something else than asked (epochs 0, a text lambda...)."""
        if isinstance(self.train_dataset, list) or (isinstance(self.train_dataset, tuple) and len(self.train_dataset) == 1):
            object.__setattr__(self, "train_dataset", train_value(self.train_dataset))  # ("mvtec",) = "mvtec"
        check_types(self, f"train spec {self.name!r}")
        train_keys(self.train_dataset)  # refuses an empty or repeated list
        check_range("epochs", self.epochs, minimum=1, hint="omit it for the profile's value")
        check_range("batch_size", self.batch_size, minimum=1)
        check_range("lr", self.lr, above=0)
        for i, b in enumerate(self.betas or ()):
            check_range(f"betas[{i}]", b, minimum=0, below=1)

    @property
    def train_datasets(self) -> tuple[str, ...]:
        """The training set's dataset keys (one for a single set)."""
        return train_keys(self.train_dataset)

    def resolved(self, profile: Profile, cfg: Any = None) -> TrainSpec:
        """None fields filled: explicit > the method's own recipe (a config with lr/epochs/batch_size, e.g.
        AdaCLIP's) > the profile. A method's epochs are capped by the profile's (its training budget:
        smoke 2)."""
        epochs = self.epochs
        if epochs is None:
            epochs = min(int(cfg.epochs), profile.epochs) if hasattr(cfg, "epochs") else profile.epochs
        batch = self.batch_size if self.batch_size is not None else int(getattr(cfg, "batch_size", profile.batch_size))
        lr = self.lr if self.lr is not None else float(getattr(cfg, "lr", DEFAULT_LR))
        betas = self.betas if self.betas is not None else getattr(cfg, "adam_betas", DEFAULT_BETAS)
        return dataclasses.replace(self, epochs=epochs, batch_size=batch, lr=lr, betas=tuple(float(b) for b in betas),
                                   validation=validation_set(self, cfg) if cfg is not None else self.validation)


SELECTION_FILE = "selection.json"
SELECTION_METRIC = "pixel_f1max"  # released AdaCLIP trainer: mean over categories of pixel F1-max
INITIAL_BEST = -10.0  # the released trainer's starting best; an epoch is kept on a strict improvement


def selection_rule(cfg: Any) -> str:
    """How a run's model epoch is chosen: "last_epoch" (every method but released AdaCLIP) or
    "best_epoch" (ranked on a validation set after every epoch), from the method config's ``select``."""
    return str(getattr(cfg, "select", "last_epoch"))


def validation_set(spec: TrainSpec, cfg: Any) -> str | None:
    """The dataset that ranks the epochs of a best-epoch run: the spec's, else the preset's entry for this
    training set (presets/methods.yaml ``training_sets`` + ``validation``: AdaCLIP A -> VisA, B -> MVTec AD)."""
    from glocal_lib.config import preset_info

    if selection_rule(cfg) != "best_epoch":
        if spec.validation is not None:
            raise ConfigError(f"train spec {spec.name!r}: a validation set ({spec.validation!r}) is only used with "
                              f"select: best_epoch; preset {spec.preset!r} selects {selection_rule(cfg)!r} "
                              f"(--override select=best_epoch, or drop the validation set)")
        return None
    if spec.validation is not None:
        return spec.validation
    info = preset_info(spec.preset)
    for model, keys in (info.get("training_sets") or {}).items():
        if train_keys(keys) == spec.train_datasets and (info.get("validation") or {}).get(model):
            return str(info["validation"][model])
    raise ConfigError(f"train spec {spec.name!r}: preset {spec.preset!r} selects the best epoch on a validation "
                      f"set, and none is known for training set {train_label(spec.train_dataset)!r}: pass one "
                      f"(TrainSpec(validation=KEY), glocal train --validation KEY) or --override select=last_epoch")


def _config(spec: TrainSpec, profile: Profile) -> Any:
    variant = resolve_variant(spec.preset, spec.variant, train_dataset=train_label(spec.train_dataset))
    return model_config(spec.preset, spec.overrides, variant, precision=profile.precision, device=profile.device)


TrainData = DataInfo | tuple[DataInfo, ...]  # one training set, or the members of a concatenated one


def _members(data: TrainData) -> tuple[DataInfo, ...]:
    return (data,) if isinstance(data, DataInfo) else tuple(data)


def train_data(spec: TrainSpec, profile: Profile, data: Any = None) -> TrainData:
    """The training set of `spec` ready to use: a DataInfo for one key, a tuple (in the spec's order)
    for a concatenated set. `data` may already hold them: a DataInfo, a sequence, or {key: DataInfo}."""
    keys = spec.train_datasets
    if data is None:
        data = prepare_data(profile, list(keys))
    if isinstance(data, dict):
        missing = [k for k in keys if k not in data]
        if missing:
            raise ConfigError(f"train spec {spec.name!r}: no prepared data for {missing} (prepare_data(profile, {list(keys)}))")
        data = tuple(data[k] for k in keys)
    members = _members(data)
    if tuple(d.key for d in members) != keys:
        raise ConfigError(f"train spec {spec.name!r} trains on {list(keys)}, but the data given is "
                          f"{[d.key for d in members]}; pass the datasets in the spec's order")
    return members[0] if len(members) == 1 else members


def training_inputs(cfg: Any, profile: Profile, data: TrainData) -> dict[str, Any]:
    """Files besides the data that a method's training reads ({name: {"path", "sha256"}}, e.g.
    KAnoCLIP's knowledge file), from the config's optional ``training_inputs`` hook (per member of a
    concatenated set, named "<key>/<name>")."""
    hook = getattr(cfg, "training_inputs", None)
    if not callable(hook):
        return {}
    if isinstance(data, DataInfo):
        return hook(profile, data)
    return {f"{d.key}/{k}": v for d in data for k, v in hook(profile, d).items()}


def train_identity(spec: TrainSpec, profile: Profile, cfg: Any, data: TrainData,
                   validation: DataInfo | None = None) -> dict[str, Any]:
    """Everything that changes the trained prompts (not device, paths or worker counts). A single
    training set is recorded as its key and index hash (the identity of every run made before
    concatenated sets existed), a concatenated one as the lists of both, in order."""
    spec = spec.resolved(profile, cfg)
    inputs = training_inputs(cfg, profile, data)
    extra: dict[str, Any] = {"inputs": {k: v["sha256"] for k, v in inputs.items()}} if inputs else {}
    if spec.validation is not None:  # only best-epoch runs carry it: every other run id stays as it was
        val = validation or prepare_data(profile, [spec.validation])[spec.validation]
        extra["selection"] = {"rule": "best_epoch", "validation": spec.validation, "index_hash": val.index_hash,
                              "metric": SELECTION_METRIC, "initial_best": INITIAL_BEST}
    members = _members(data)
    return {
        "kind": "train",
        "profile": profile.name,
        "preset": spec.preset,
        "variant": resolve_variant(spec.preset, spec.variant, train_dataset=train_label(spec.train_dataset)),
        "model": cfg.to_dict(),
        "backbone": profile.backbone,
        "backbone_seed": backbone_seed(profile, spec.seed),
        "weights": weights_identity(profile.weights, profile.cache_dir),
        "image_size": profile.image_size,
        "train_dataset": spec.train_dataset if len(members) == 1 else [d.key for d in members],
        "index_hash": members[0].index_hash if len(members) == 1 else [d.index_hash for d in members],
        "epochs": spec.epochs,
        "batch_size": spec.batch_size,
        "lr": spec.lr,
        "betas": list(spec.betas),
        "seed": spec.seed,
        "precision": profile.precision,
        "features": _features_label(cfg, profile, spec.use_cache),
        "attention_kernel": "fused" if profile.fused_attention else "exact",
        **extra,
    }


def _features_label(cfg: Any, profile: Profile, use_cache: bool) -> str:
    from glocal_lib.config import detector_class
    from glocal_lib.engine.features import features_label

    return features_label(detector_class(cfg), profile, use_cache)


def train_run_dir(spec: TrainSpec, profile: Profile, data: Any = None) -> Path:
    """Where run_train(spec, profile) puts (or has put) its outputs, without training."""
    data = train_data(spec, profile, data)
    cfg = _config(spec, profile)
    return profile.runs_dir("train") / run_id(spec.name, train_identity(spec, profile, cfg, data))


def run_train(spec: TrainSpec, profile: Profile, *, progress: bool = True, data: Any = None,
              stop_after_epoch: int | None = None, restart: bool = False) -> Path:
    """Train (or resume, or just return) the run for `spec`; returns its folder.

    stop_after_epoch: end the process's work after that epoch without DONE (simulates an
    interruption for tests and lets users split long runs). restart: discard an unfinished run's
    progress (e.g. a corrupt checkpoint) and train it from the first epoch.
    """
    require_device(profile.device)
    cfg = _config(spec, profile)  # a wrong override is refused before any data is prepared
    val_key = spec.resolved(profile, cfg).validation  # a best-epoch run without a validation set: refused here
    data = train_data(spec, profile, data)
    val = prepare_data(profile, [val_key])[val_key] if val_key is not None else None
    identity = train_identity(spec, profile, cfg, data, val)
    run_dir = profile.runs_dir("train") / run_id(spec.name, identity)
    if reuse_finished(run_dir, spec.name):  # finished, perhaps by another job with the same settings
        return run_dir
    profile.apply_threads()
    with run_lock(run_dir):
        if reuse_finished(run_dir, spec.name):
            return run_dir
        if restart:
            shutil.rmtree(run_dir)
            run_dir.mkdir()
        clear_failure(run_dir)
        spec = spec.resolved(profile, cfg)
        config = {
            "kind": "train", "name": spec.name, "profile": profile.name, "preset": spec.preset,
            "banner": profile.banner, "train_dataset": identity["train_dataset"], "model": cfg.to_dict(),
            "identity": identity, "spec": dataclasses.asdict(spec),
            "runtime": {"device": profile.device,
                        "data_root": str(data.root) if isinstance(data, DataInfo) else [str(d.root) for d in data],
                        "cache_dir": str(profile.cache_dir), "num_workers": profile.num_workers},
        }
        try:
            with clear_write_errors(run_dir):
                start_run(run_dir, config, profile.device)
                finished = _train(spec, profile, cfg, data, run_dir, progress=progress,
                                  stop_after_epoch=stop_after_epoch, validation=val)
                if finished:
                    mark_done(run_dir)
        except BaseException as exc:
            record_failure(run_dir, exc, has_progress=(run_dir / "checkpoints" / "latest.pt").is_file())
            raise
    return run_dir


def _augmentation(model: Any, data: DataInfo, seed: int) -> Any:
    """The training augmentation a method asks for on this dataset (AdaCLIP: mosaics on MVTec AD), or None."""
    cfg = model.cfg
    if getattr(cfg, "mosaic_rate", 0) and data.key in getattr(cfg, "mosaic_datasets", ()):
        from glocal_lib.engine.images import Mosaic

        return Mosaic(rate=float(cfg.mosaic_rate), seed=seed, label=str(cfg.mosaic_label))
    return None


def _make_optimizer(model: Any, params: list[torch.nn.Parameter], spec: TrainSpec) -> torch.optim.Optimizer:
    """The method's optimiser when it defines one (AdaCLIP: AdamW with weight decay), else Adam (with the
    method's parameter groups when it declares some)."""
    make = getattr(model, "make_optimizer", None)
    if callable(make):
        return make(lr=spec.lr)
    # a method with several learning rates declares its groups (e.g. ViP2-CLIP: FGP at lr / 100)
    groups = model.param_groups(spec.lr) if hasattr(model, "param_groups") else params
    return torch.optim.Adam(groups, lr=spec.lr, betas=tuple(spec.betas))


def loss_keys(model: Any) -> tuple[str, ...]:
    """The loss terms the method logs to losses.csv: its ``loss_names`` (e.g. KAnoCLIP's "kd"), else
    LOSS_KEYS; "total" (what is optimised) is always among them."""
    names = tuple(str(k) for k in getattr(model, "loss_names", LOSS_KEYS))
    if "total" not in names or len(set(names)) != len(names) or {"epoch", "step"} & set(names):
        raise ConfigError(f"{type(model).__name__}.loss_names = {names!r}: needs 'total', unique names, and "
                          f"neither 'epoch' nor 'step' (the columns losses.csv adds)")
    return names


def _nbytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def _save_epoch_checkpoint(model: Any, path: Path, state: dict[str, Any]) -> None:
    """The model package's checkpoint (loadable by build_model(checkpoint=...)) + the resume state.

    Atomic (tmp file + rename); a full disk is reported as such, not as torch's C++ stream error."""
    from glocal_lib.model.checkpoint import save_checkpoint

    needs = 2 * _nbytes(state) + 2**16  # prompts + Adam moments; the model's prompt copy and a margin
    with clear_write_errors(path.parent, needs):
        save_checkpoint(model, path, extra={"engine": state})


def _load_resume_state(path: Path) -> dict[str, Any]:
    fix = (f"delete it to resume from the start, or rerun with --restart (run_train(..., restart=True)) "
           f"to train run {path.parent.parent.name} from scratch")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, random bytes, pickle refused: all 'corrupt'
        raise RunError(f"the resume checkpoint {path} is corrupt ({describe_load_failure(exc)}); {fix}") from None
    state = obj.get("engine") if isinstance(obj, dict) else None
    if state is None and isinstance(obj, dict):
        state = (obj.get("extra") or {}).get("engine")
    if not isinstance(state, dict) or not {"prompts", "optimizer", "rng", "epoch", "step"} <= set(state):
        raise RunError(f"{path} holds no complete engine resume state; {fix}")
    return state


def _non_finite(run_dir: Path, epoch: int, step: int, losses: dict[str, torch.Tensor], spec: TrainSpec,
                profile: Profile) -> RunError:
    """The error for a NaN/inf loss: which run, where, which terms, and the usual causes."""
    terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items() if torch.is_tensor(v) and v.numel() == 1)
    causes = [f"a learning rate too high (lr={spec.lr:g})", "a gcl_lambda or loss weight too large",
              "broken inputs (NaN/inf in the images or their features)"]
    if profile.precision != "fp32":
        causes.insert(0, f"{profile.precision} overflow (try --precision fp32)")
    kept = f"epochs 1..{epoch - 1} are kept" if epoch > 1 else "nothing is kept"
    return RunError(f"train run {run_dir.name}: the loss is not finite at epoch {epoch}, step {step} ({terms}); "
                    f"the run stops without DONE. Likely causes: {'; '.join(causes)}. {kept.capitalize()}; fix "
                    f"the cause and rerun (or --restart)")


def _write_logs(run_dir: Path, rows: list[dict[str, Any]], embs: list[np.ndarray], names: list[str],
                keys: tuple[str, ...]) -> None:
    df = pd.DataFrame(rows, columns=["epoch", "step", *keys])
    atomic_save_with(run_dir / "losses.csv", lambda p: df.to_csv(p, index=False))
    emb = np.stack(embs).astype(np.float32)
    atomic_save_with(run_dir / "prompt_embeddings.npz",
                     lambda p: np.savez(p, emb=emb, names=np.array(names), epochs=np.arange(len(embs))))


def _read_timing(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "timing.json").read_text())
    except (OSError, ValueError):
        return {}


def _text_embeddings(model: Any) -> np.ndarray:
    with torch.no_grad():
        return model.text_embeddings().detach().float().cpu().numpy()


def _train(spec: TrainSpec, profile: Profile, cfg: Any, data: TrainData, run_dir: Path, *,
           progress: bool, stop_after_epoch: int | None, validation: DataInfo | None = None) -> bool:
    from tqdm.auto import tqdm

    memory = PeakMemory(profile.device).start()  # peak memory and hardware, in timing.json
    t0 = time.perf_counter()
    model = build_detector(cfg, profile, seed=spec.seed)
    members = _members(data)
    prepare = getattr(model, "prepare_training", None)
    if callable(prepare):  # e.g. KAnoCLIP encodes and checks its knowledge against this index
        if len(members) > 1:
            raise ConfigError(f"preset {spec.preset!r} attaches per-dataset training inputs (prepare_training), "
                              f"which a concatenated training set {list(spec.train_datasets)} cannot have yet: "
                              f"train it on one dataset")
        prepare(members[0].key, members[0].index, training_inputs(cfg, profile, members[0]))
    timing = _read_timing(run_dir)
    timing["model_build_s"] = round(time.perf_counter() - t0, 4)
    params = list(model.prompt_parameters())
    if not params:
        raise ConfigError(f"preset {spec.preset!r} has no trainable prompt parameters: evaluate it zero-shot "
                          f"(glocal eval without --train-run) instead of training it")
    train_ids = {id(p) for p in params}
    for p in model.parameters():  # only prompts learn: freeze anything else the model left trainable
        if id(p) not in train_ids:
            p.requires_grad_(False)
    optimizer = _make_optimizer(model, params, spec)
    shuffle = torch.Generator().manual_seed(spec.seed)
    ckpt_dir = run_dir / "checkpoints"
    init = _text_embeddings(model)
    names = prompt_names(model, init.shape[0])
    logged = loss_keys(model)
    rows: list[dict[str, Any]] = []
    embs: list[np.ndarray] = [init]
    start_epoch, step = 1, 0
    resume_rng = None
    history: list[dict[str, Any]] = []  # best-epoch runs: the validation value of every epoch so far
    latest = ckpt_dir / "latest.pt"
    if latest.is_file():
        state = _load_resume_state(latest)
        with torch.no_grad():
            for p, saved in zip(params, state["prompts"], strict=True):
                p.copy_(saved)
        optimizer.load_state_dict(state["optimizer"])
        shuffle.set_state(state["rng"]["shuffle"])
        resume_rng = state["rng"]["torch"]
        start_epoch, step = int(state["epoch"]) + 1, int(state["step"])
        history = list((state.get("selection") or {}).get("history", []))
        rows = [r for r in pd.read_csv(run_dir / "losses.csv").to_dict("records") if r["epoch"] < start_epoch]
        with np.load(run_dir / "prompt_embeddings.npz") as z:
            embs = list(z["emb"][:start_epoch])
    t0 = time.perf_counter()
    sources = [feature_source(model, d, profile, use_cache=spec.use_cache, progress=progress,
                              batch_size=profile.encode_batch(profile.eval_batch_size),
                              augment=_augmentation(model, d, spec.seed)) for d in members]
    source = sources[0] if len(sources) == 1 else ConcatSource(sources)
    timing["features_s"] = round(time.perf_counter() - t0, 4)  # cache build (or open) time
    build = cache_build(source)  # the cache's own build time (summed over a concatenated set's members)
    if build is not None:
        timing["cache_build_s"] = build[0]
    # the global RNG from here on depends on the run alone, not on the process's history (a cache
    # build's DataLoader draws from it), so a run made in any worker, resumed or not, saves the same state
    if resume_rng is not None:
        torch.set_rng_state(resume_rng)
    else:
        torch.manual_seed(spec.seed)
    n = len(source)
    categories = np.concatenate([class_names(model, d) for d in members])
    keys = (np.concatenate([d.index["image_path"].astype(str).to_numpy() for d in members])
            if getattr(model, "uses_image_keys", False) else None)
    epochs = tqdm(range(start_epoch, spec.epochs + 1), desc=f"train {run_dir.name}", disable=not progress,
                  initial=start_epoch - 1, total=spec.epochs)
    for epoch in epochs:
        t_epoch = time.perf_counter()
        perm = torch.randperm(n, generator=shuffle).numpy()
        if hasattr(source, "set_epoch"):
            source.set_epoch(epoch)  # deterministic per-epoch augmentation (image-based sources)
        batches = tqdm(source.iter_batches(perm, spec.batch_size, profile.device), leave=False,
                       total=-(-n // spec.batch_size), desc=f"epoch {epoch}", disable=not progress)
        for chunk, feats, labels, masks in batches:
            extra = {} if keys is None else {"image_keys": list(keys[chunk])}
            losses = model.compute_losses(feats, labels, masks, class_names=list(categories[chunk]), **extra)
            if not torch.isfinite(losses["total"].detach()).all():
                raise _non_finite(run_dir, epoch, step + 1, losses, spec, profile)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            step += 1
            rows.append({"epoch": epoch, "step": step,
                         **{k: float(losses[k].detach()) if k in losses else float("nan") for k in logged}})
        embs.append(_text_embeddings(model))
        state = {"prompts": [p.detach().cpu().clone() for p in params], "optimizer": optimizer.state_dict(),
                 "rng": {"shuffle": shuffle.get_state(), "torch": torch.get_rng_state()},
                 "epoch": epoch, "step": step}
        if validation is not None:
            t_val = time.perf_counter()
            history.append(_validate(model, validation, profile, spec, epoch, progress))
            state["selection"] = {"history": history}
            timing.setdefault("validation_s", {})[str(epoch)] = round(time.perf_counter() - t_val, 4)
        _save_epoch_checkpoint(model, ckpt_dir / f"epoch_{epoch:02d}.pt", state)
        _write_logs(run_dir, rows, embs, names, logged)
        if validation is not None:
            _write_selection(run_dir, history, validation.key, spec.epochs)
        timing.setdefault("epochs_s", {})[str(epoch)] = round(time.perf_counter() - t_epoch, 4)
        timing.update(memory.record())
        atomic_write_json(run_dir / "timing.json", timing)  # wall seconds, informative only
        _save_epoch_checkpoint(model, latest, state)  # last: the resume point moves only when all is written
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < spec.epochs:
            return False
    if step == 0:  # an empty training set: nothing was trained, so the run must not look finished
        where = ", ".join(f"{d.key!r} at {d.root}" for d in members)
        raise RunError(f"train run {run_dir.name}: no training step ran ({n} training images in {where}); "
                       f"check the dataset (glocal data check {' '.join(d.key for d in members)})")
    if validation is not None and best_epoch(history) is None:
        raise RunError(f"train run {run_dir.name}: no epoch has a finite mean {SELECTION_METRIC} on the validation "
                       f"set {validation.key!r} ({[h['value'] for h in history]}); best-epoch selection has nothing to "
                       f"keep. Check that dataset's masks, or train with --override select=last_epoch")
    atomic_write_text(run_dir / "final_epoch.txt", f"{spec.epochs}\n")
    return True


def best_epoch(history: list[dict[str, Any]]) -> int | None:
    """The released rule: start from INITIAL_BEST and keep an epoch only when its value is strictly
    higher than the best so far (ties keep the earlier epoch; NaN never wins)."""
    best, chosen = INITIAL_BEST, None
    for h in history:
        if float(h["value"]) > best:
            best, chosen = float(h["value"]), int(h["epoch"])
    return chosen


def _validate(model: Any, data: DataInfo, profile: Profile, spec: TrainSpec, epoch: int,
              progress: bool) -> dict[str, Any]:
    """One epoch's validation value. The CPU RNG is restored afterwards, so training draws the same
    numbers with or without the validation (a best-epoch run trains exactly as its last-epoch twin)."""
    from glocal_lib.engine.evaluate import category_mean_metric

    with torch.random.fork_rng(devices=[]):
        value, per_cat = category_mean_metric(model, data, profile, metric=SELECTION_METRIC,
                                              use_cache=spec.use_cache, progress=progress)
    return {"epoch": epoch, "value": value, "per_category": per_cat}


def _write_selection(run_dir: Path, history: list[dict[str, Any]], validation: str, epochs: int) -> None:
    """selection.json: which epoch the run's model is, on which set and why (what evaluations load and
    the tables flag as a selection on evaluation data)."""
    chosen = best_epoch(history)
    atomic_write_json(run_dir / SELECTION_FILE, {
        "rule": "best_epoch", "validation": validation, "metric": SELECTION_METRIC,
        "criterion": f"mean over categories of {SELECTION_METRIC} on {validation}'s test set; an epoch is kept when "
                     f"it strictly improves on the best so far (initial {INITIAL_BEST:g}), as the released trainer",
        "selected_on_evaluation_data": True, "epochs": epochs, "best_epoch": chosen,
        "best_value": next((h["value"] for h in history if h["epoch"] == chosen), None),
        "history": [{k: h[k] for k in ("epoch", "value")} for h in history],
        "per_category": {str(h["epoch"]): h["per_category"] for h in history},
    })
