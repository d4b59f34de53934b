"""Model configuration: every switch of the method, as one frozen dataclass, plus the preset loader.

Defaults are the behaviour of the authors' released GlocalCLIP code (spec section 9: where the paper
text and the released code differ, the released code produced the published numbers). Presets in
``presets/methods.yaml`` are data: a preset is a base set of field values plus named variants (one per
training set for the released script, one per evaluation set for the paper text), so that adding a
setting never needs code.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .checks import check_types, coerce_numbers
from .errors import ConfigError
from .io import read_yaml

METHODS = ("glocalclip", "anomalyclip", "coop", "clip", "winclip")
ATTENTIONS = ("vv", "qq", "kk", "qk")
POSITIONS = ("back", "front", "middle")
ANCHORS = ("global", "local")
REDUCTIONS = ("sum", "mean")
PRECISIONS = ("fp32", "bf16", "fp16")
ENSEMBLES = ("released", "paper")  # glocal_lib.model.winclip.ENSEMBLES
ENSEMBLE_MEANS = ("raw", "normalized")
SCALE_FUSIONS = ("harmonic", "mean")

PRESETS_FILE = Path(__file__).parent / "presets" / "methods.yaml"

# ---- the method registry -------------------------------------------------------------------------
# One config class per method family, found by the ``method`` field of a preset, a run or a checkpoint.
# The class names its detector (``"module:Class"``, imported only when a model is built, so reading
# configs never imports torch code); glocal_lib.model.build_model builds it.
METHOD_CONFIGS: dict[str, type[MethodConfig]] = {}

C = TypeVar("C", bound=type)


def register_config(*methods: str) -> Callable[[C], C]:
    """Class decorator: this frozen dataclass is the config of ``methods`` (its ``method`` values)."""

    def deco(cls: C) -> C:
        for m in methods:
            if m in METHOD_CONFIGS and METHOD_CONFIGS[m] is not cls:
                raise ValueError(f"method {m!r} is already registered to {METHOD_CONFIGS[m].__name__}")
            METHOD_CONFIGS[m] = cls
        return cls

    return deco


def method_names() -> tuple[str, ...]:
    return tuple(METHOD_CONFIGS)


def config_class(method: str) -> type[MethodConfig]:
    if method not in METHOD_CONFIGS:
        raise ConfigError(f"unknown method {method!r}; known methods: {sorted(METHOD_CONFIGS)}")
    return METHOD_CONFIGS[method]


def config_from_dict(d: dict[str, Any]) -> Any:
    """The config a saved mapping describes, as its method's class (``method`` absent: glocalclip)."""
    if not isinstance(d, dict):
        raise ConfigError(f"a model config must be a mapping, got {type(d).__name__}")
    return config_class(str(d.get("method", "glocalclip"))).from_dict(d)


def detector_class(cfg: Any) -> type:
    """The detector class a config's method names (imported on first use)."""
    module, _, name = type(cfg).detector.partition(":")
    return getattr(importlib.import_module(module), name)


class MethodConfig:
    """Base of every method's config: a frozen dataclass, JSON-able through ``to_dict`` (run hashes,
    checkpoints) and rebuilt by ``from_dict`` with types checked (values come from YAML and the CLI).

    A subclass is a ``@dataclass(frozen=True)`` with at least ``method``, ``precision`` and ``sigma``
    (what the engine reads), decorated with ``@register_config(<method names>)``, and sets
    ``detector = "module:Class"``.
    """

    detector: ClassVar[str]

    def __post_init__(self) -> None:
        check_types(self, f"{self.method} config")
        _check_choice("precision", self.precision, PRECISIONS)

    def replace(self, **changes: Any) -> Any:
        return type(self).from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} option(s) {unknown}; known options: {sorted(known)}")
        kw = coerce_numbers(cls, d)
        hints = typing.get_type_hints(cls)
        for k, v in kw.items():
            if isinstance(v, list) and _is_tuple_type(hints.get(k)):
                kw[k] = tuple(v)
        return cls(**kw)  # __post_init__ checks every field's type


def _is_tuple_type(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple or any(typing.get_origin(a) is tuple for a in typing.get_args(tp))


@register_config(*METHODS)
@dataclass(frozen=True)
class ModelConfig(MethodConfig):
    """All switches of GlocalCLIP and the baselines it shares a detector with. JSON-able through
    ``to_dict`` (used in run hashes and checkpoints)."""

    detector: ClassVar[str] = "glocal_lib.model.detector:GlocalDetector"

    method: str = "glocalclip"  # glocalclip | anomalyclip | coop | clip (fixed templates) | winclip

    # --- text prompts (spec 3.1, 3.3) ---
    normal_length: int = 12  # learnable normal context length n (released train.py default)
    anomaly_length: int = 12  # learnable anomaly context length a (0 allowed with semantic: CoOp)
    glocal: bool = True  # separate global and local prompts (False: one pair used for both)
    semantic: bool = True  # anomaly prompt re-uses the normal context as its prefix
    anomaly_position: str = "back"  # where the anomaly tokens sit relative to the shared normal ones
    class_name: str = "object"  # the word after the context ("object" = object-agnostic)
    use_class_names: bool = False  # CoOp / CLIP: put each image's category name in the prompt
    class_name_spaces: bool = True  # "metal_nut" -> "metal nut" in prompts (False: as the index names it)
    normal_state: str = "{}"
    anomaly_state: str = "damaged {}"
    fixed_templates: tuple[str, str] = ("A photo of a normal {}.", "A photo of a damaged {}.")
    ctx_init_std: float = 0.02

    # --- deep text prompts (spec 3.2) ---
    deep_depth: int = 9  # d: tensors injected before text blocks 2..d (d <= 1: none)
    deep_length: int = 4  # t: token positions 1..t replaced
    deep_fp16_rounding: bool = True  # released code casts the injected tensors to fp16
    # released: deep prompts overwrite positions 1..t, i.e. the first t learnable context vectors
    # from block 2 on (spec 9.5); False reserves t extra placeholder positions after SOS for them
    deep_overwrites_context: bool = True
    unused_projection_dim: int = 896  # the released learner's d-1 unused Linear(Wt, 896) layers

    # --- vision (spec 2) ---
    dual_path: bool = True  # V-V dual path (False: plain CLIP features, e.g. CoOp / CLIP)
    vv_start_layer: int | None = None  # None: backbone default (6 for 24 layers)
    # None: backbone default (6, 12, 18, 24); negative = from the top (-1: last block, AnomalyCLIP's test.sh)
    feature_layers: tuple[int, ...] | None = None
    attention: str = "vv"  # vv | qq | kk | qk (attention ablation)
    global_ln_post: bool = False  # released code skips ln_post on the global embedding
    alias_final_layer: bool = True  # released GlocalCLIP: all local layers are the final V-V tokens
    window_scales: tuple[int, ...] = (2, 3)  # WinCLIP window sizes in patches (stride 1)
    # WinCLIP switches; defaults = zqhang/Accurate-WinCLIP-pytorch (see glocal_lib/model/winclip.py)
    ensemble: str = "released"  # prompt ensemble: released (7+4 states x 21 templates) | paper (7+5 x 35)
    ensemble_mean: str = "raw"  # state feature: mean of raw sentence embeddings | "normalized" first
    scale_fusion: str = "harmonic"  # harmonic mean of image score and scale maps | "mean" of scale maps

    # --- scores (spec 4) ---
    temperature: float = 0.07
    map_reduction: str = "sum"  # released: sum over layers (range 0..n_layers); "mean" = paper wording
    sigma: float = 4.0  # released test.py default; the published runs use 8 (presets)

    # --- losses (spec 5) ---
    global_loss_weight: float = 1.0
    local_loss_weight: float = 1.0  # AnomalyCLIP: 4
    gcl_lambda: float = 1.0  # weight of the glocal contrastive loss ("alpha" in the released code)
    gcl_margin: float = 0.0  # published margin 0 makes the push-away term identically zero
    gcl_anchor: str = "global"  # global (GSP, released) | local (LSP)
    focal_gamma: float = 2.0

    # --- numerics ---
    precision: str = "fp32"  # autocast: fp32 (released) | bf16 | fp16

    def __post_init__(self) -> None:
        check_types(self, "model config")
        _check_choice("method", self.method, METHODS)
        _check_choice("attention", self.attention, ATTENTIONS)
        _check_choice("anomaly_position", self.anomaly_position, POSITIONS)
        _check_choice("gcl_anchor", self.gcl_anchor, ANCHORS)
        _check_choice("map_reduction", self.map_reduction, REDUCTIONS)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("ensemble", self.ensemble, ENSEMBLES)
        _check_choice("ensemble_mean", self.ensemble_mean, ENSEMBLE_MEANS)
        _check_choice("scale_fusion", self.scale_fusion, SCALE_FUSIONS)
        if self.method not in ("clip", "winclip"):
            if self.normal_length < 1:
                raise ConfigError(f"normal_length must be >= 1, got {self.normal_length}")
            if self.anomaly_length < 0 or (self.anomaly_length == 0 and not self.semantic):
                raise ConfigError(
                    f"anomaly_length={self.anomaly_length}: must be >= 1, or 0 with semantic=True "
                    "(shared context, CoOp style)"
                )
        if self.deep_depth > 1 and self.deep_length < 1:
            raise ConfigError(f"deep_length must be >= 1 when deep_depth > 1, got {self.deep_length}")
        if self.feature_layers is not None and (len(self.feature_layers) == 0 or 0 in self.feature_layers):
            raise ConfigError("feature_layers must name at least one layer, as block numbers 1..depth or "
                              f"-1 (top), -2, ... (or be null for the default); got {self.feature_layers}")
        if not self.window_scales or any(int(k) < 1 for k in self.window_scales):
            raise ConfigError(f"window_scales must be positive window sizes, got {self.window_scales}")
        if len(self.fixed_templates) != 2:
            raise ConfigError("fixed_templates must be two templates: (normal, anomaly)")

    @property
    def has_deep_prompts(self) -> bool:
        return self.method not in ("clip", "winclip") and self.deep_depth > 1

    @property
    def num_prompts(self) -> int:
        return 4 if (self.method == "glocalclip" and self.glocal) else 2


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {list(choices)}")


@lru_cache(maxsize=4)
def _read_presets(path: str) -> dict[str, Any]:
    data = read_yaml(path)
    if not isinstance(data, dict) or "presets" not in data:
        raise ConfigError(f"{path}: expected a top-level 'presets:' mapping")
    return data["presets"]


def preset_names(path: str | Path = PRESETS_FILE) -> list[str]:
    return sorted(_read_presets(str(path)))


def preset_info(name: str, path: str | Path = PRESETS_FILE) -> dict[str, Any]:
    """The raw preset entry (description, variant_key, variants, lambda_grid, train...)."""
    presets = _read_presets(str(path))
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r} in {path}; known presets: {sorted(presets)}")
    return presets[name]


def load_preset(
    name: str, variant: str | None = None, *, path: str | Path = PRESETS_FILE, **overrides: Any
) -> Any:
    """Build a method config (ModelConfig for glocalclip/anomalyclip/coop/clip/winclip) from a preset, an optional named variant and field overrides.

    ``variant`` picks one of the preset's ``variants`` (for ``glocalclip-released``: the training
    set, e.g. "mvtec"; for ``glocalclip-paper``: the evaluation set). A preset without the requested
    variant raises ConfigError listing the ones it has; ``variant=None`` uses ``default_variant``
    when the preset names one, else the base values.
    """
    entry = preset_info(name, path)
    values: dict[str, Any] = dict(entry.get("config", {}))
    variants: dict[str, Any] = entry.get("variants") or {}
    variant = variant if variant is not None else entry.get("default_variant")
    if variant is not None:
        if variant not in variants:
            raise ConfigError(
                f"preset {name!r} has no variant {variant!r} ({path}); variants: {sorted(variants)}"
            )
        values.update(variants[variant] or {})
    values.update(overrides)
    return config_from_dict(values)


def variant_for(name: str, train_dataset: str | None = None, eval_dataset: str | None = None,
                path: str | Path = PRESETS_FILE) -> str | None:
    """The variant a preset uses for a (train, eval) pair, according to its ``variant_key``."""
    entry = preset_info(name, path)
    key = entry.get("variant_key")
    variants = entry.get("variants") or {}
    wanted = {"train_dataset": train_dataset, "eval_dataset": eval_dataset}.get(key)
    return wanted if wanted in variants else None


def load_preset_for(name: str, train_dataset: str | None = None, eval_dataset: str | None = None, *,
                    path: str | Path = PRESETS_FILE, **overrides: Any) -> Any:
    """load_preset with the variant the preset defines for this (train, eval) pair, if any.

    For ``glocalclip-released`` the variant follows the training set; for ``glocalclip-paper`` it
    follows the evaluation set (the paper tunes lengths / lambda per evaluation dataset, so its
    training run depends on where it is evaluated).
    """
    return load_preset(name, variant_for(name, train_dataset, eval_dataset, path), path=path, **overrides)

# Method configs defined in their own modules register themselves on import (after the base above).
from . import adaclip_config, kanoclip_config, vip2clip_config  # noqa: E402,F401
