"""Run profiles (smoke | paper): how big and where a reproduction runs, read from presets/profiles.yaml.

A profile says which backbone and weights, image size, epochs, precision, device, data and result
folders to use. It never says anything about the method: that is the model preset's job.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from glocal_lib.config import PRECISIONS
from glocal_lib.errors import ConfigError
from glocal_lib.io import read_yaml

PROFILES_FILE = Path(__file__).resolve().parent.parent / "presets" / "profiles.yaml"
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^{}]|\{results_root\})*))?\}")
RESULTS_ROOT = "{results_root}"  # in data_root / cache_dir: the profile's (possibly overridden) results root
FIGURE_FORMATS = ("png", "pdf", "svg")
_INT_FIELDS = {"image_size": 1, "epochs": 1, "batch_size": 1, "eval_batch_size": 1, "samples_per_category": 0,
               "synthetic_image_size": 8, "num_workers": 0,
               "umap_min_points": 0}  # field -> smallest accepted value


@dataclass(frozen=True)
class Profile:
    """Everything about the size and place of a run; frozen so a run config can't drift mid-run."""

    name: str
    banner: str
    backbone: str
    weights: str | None
    image_size: int
    epochs: int
    batch_size: int
    eval_batch_size: int
    precision: str
    device: str
    sigma: float | None
    results_root: Path
    data_root: Path
    dataset_roots: dict[str, Path] = field(default_factory=dict)
    cache_dir: Path = Path("results/cache")
    cache_dtype: str = "fp16"
    synthetic: bool = False
    synthetic_scale: str | None = None
    synthetic_seed: int = 0
    synthetic_image_size: int = 128
    samples_per_category: int = 2
    num_workers: int = 0
    backbone_seed: int | None = None  # random backbone (weights None): fixed 'pretrained' tower; None = seed
    encode_batch_size: int | None = None  # images per vision forward filling the cache (None: by device, image size)
    torch_threads: int | None = None  # None: torch's default; 1 avoids oversubscription on shared small CPUs
    figure_formats: str = "png,pdf"  # comma list of png/pdf/svg (PDF on request: env GLOCAL_FIGURE_FORMATS)
    umap_min_points: int = 0  # prompt-embedding figures with fewer points use PCA (UMAP's JIT start-up dominates)
    registry_profile: str | None = None  # experiments.yaml plan to run (None: smoke if synthetic, else paper)
    fused_attention: bool = False  # vision attention by scaled_dot_product_attention (see model/vision.py)
    allow_tf32: bool = False  # TF32 matmuls/convolutions on Ampere+ GPUs: faster, ~1e-3 from fp32 (opt-in)

    def apply_threads(self) -> None:
        """Process-wide runtime settings the runners apply: torch's thread count when the profile asks,
        TF32 when it opts in, and the CPU allocator tuning (glocal_lib.engine.speed)."""
        from glocal_lib.engine.speed import apply_runtime

        apply_runtime(self)

    def predict_batch(self) -> int:
        """Images per prediction batch in evaluation: eval_batch_size, fewer on a CPU at large image
        sizes (glocal_lib.engine.speed.auto_predict_batch), where big batches only add memory."""
        from glocal_lib.engine.speed import auto_predict_batch

        return auto_predict_batch(self.device, self.image_size, self.eval_batch_size)

    def encode_batch(self, fallback: int) -> int:
        """Images per vision forward when filling the feature cache: the explicit encode_batch_size,
        else chosen by device and image size (glocal_lib.engine.speed.auto_encode_batch)."""
        from glocal_lib.engine.speed import auto_encode_batch

        return int(self.encode_batch_size or auto_encode_batch(self.device, self.image_size, fallback))

    @property
    def formats(self) -> tuple[str, ...]:
        """The figure file formats to write, e.g. ('png',) or ('png', 'pdf')."""
        return tuple(self.figure_formats.split(","))

    @property
    def is_synthetic(self) -> bool:
        return self.synthetic

    @property
    def plan_profile(self) -> str:
        """Which experiments.yaml profile decides the runs (rehearsal: the paper's, on stand-ins)."""
        return self.registry_profile or ("smoke" if self.synthetic else "paper")

    def runs_dir(self, kind: str) -> Path:
        if kind not in ("train", "eval"):
            raise ConfigError(f"run kind must be 'train' or 'eval', got {kind!r}")
        return self.results_root / "runs" / kind

    def dataset_root(self, key: str) -> Path:
        """Root of one dataset: explicit per-dataset root, env GLOCAL_DATA_ROOT_<KEY>, else data_root/key."""
        if key in self.dataset_roots:
            return Path(self.dataset_roots[key])
        env = os.environ.get(f"GLOCAL_DATA_ROOT_{key.upper()}")
        if env:
            return Path(env)
        return self.data_root / key

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, Path):
                d[k] = str(v)
        d["dataset_roots"] = {k: str(v) for k, v in self.dataset_roots.items()}
        return d

    def replace(self, **overrides: Any) -> Profile:
        return _build(self.name, {**self.to_dict(), **overrides})


def _expand(value: Any) -> Any:
    """Expand ${VAR} / ${VAR:-default} in strings so users point profiles at their folders by env."""
    if isinstance(value, str):
        return _ENV.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    return value


def parse_override(text: str) -> tuple[str, Any]:
    """'key=value' from the command line -> (key, typed value) using YAML scalars (1, 0.5, true, null);
    numbers YAML 1.1 leaves as strings (1e-3) are numbers too. Types are checked where the value is used."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value (example: --override image_size=112)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    return key.strip(), value


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _int_field(name: str, value: Any, minimum: int) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d+", value.strip()):
        value, ok = int(value), True
    if isinstance(value, float) and value.is_integer():
        value, ok = int(value), True
    if not ok:
        raise ConfigError(f"profile field {name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"profile field {name} must be >= {minimum}, got {value}")
    return int(value)


def _build(name: str, raw: dict[str, Any]) -> Profile:
    names = {f.name for f in dataclasses.fields(Profile)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(
            f"unknown profile field(s) {unknown} for profile {name!r} (in {PROFILES_FILE} or overrides); "
            f"known fields: {sorted(names)}"
        )
    values = _expand(dict(raw))
    values["name"] = name
    for key in ("data_root", "cache_dir"):  # smoke data and caches follow --results (self-contained)
        if isinstance(values.get(key), str):
            values[key] = values[key].replace(RESULTS_ROOT, str(values["results_root"]))
    for key in ("results_root", "data_root", "cache_dir"):
        values[key] = Path(values[key])
    values["dataset_roots"] = {k: Path(v) for k, v in (values.get("dataset_roots") or {}).items()}
    if values.get("weights") in ("", "null", "none", "None"):
        values["weights"] = None
    if values["precision"] not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {values['precision']!r}")
    if values.get("cache_dtype") not in ("fp16", "fp32"):
        raise ConfigError(f"cache_dtype must be 'fp16' or 'fp32', got {values.get('cache_dtype')!r}")
    formats = [f.strip().lower() for f in str(values.get("figure_formats") or "png").split(",") if f.strip()]
    bad = sorted(set(formats) - set(FIGURE_FORMATS))
    if bad or not formats:
        raise ConfigError(f"figure_formats {values.get('figure_formats')!r} (profile {name!r}, or "
                          f"$GLOCAL_FIGURE_FORMATS): use a comma list of {FIGURE_FORMATS}, e.g. 'png,pdf'")
    values["figure_formats"] = ",".join(dict.fromkeys(formats))
    for key, minimum in _INT_FIELDS.items():
        if key in values:
            values[key] = _int_field(key, values[key], minimum)
    values["sigma"] = None if values.get("sigma") in (None, "", "null") else _sigma(values["sigma"])
    required = {
        f.name
        for f in dataclasses.fields(Profile)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(values))
    if missing:
        raise ConfigError(f"profile {name!r} in {PROFILES_FILE} lacks field(s) {missing}")
    return Profile(**values)


def _sigma(value: Any) -> float:
    try:
        sigma = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"profile field sigma must be a number >= 0 or null, got {value!r}") from None
    if not sigma >= 0:  # also NaN
        raise ConfigError(f"profile field sigma must be >= 0 (0 = no smoothing) or null, got {value!r}")
    return sigma


def available_profiles() -> list[str]:
    return list(read_yaml(PROFILES_FILE))


def load_profile(name: str = "smoke", **overrides: Any) -> Profile:
    """Profile `name` from presets/profiles.yaml with field overrides (e.g. image_size=112, device='cuda')."""
    table = read_yaml(PROFILES_FILE)
    if name not in table:
        raise ConfigError(f"unknown profile {name!r}; {PROFILES_FILE} defines {sorted(table)}")
    return _build(name, {**table[name], **{k: v for k, v in overrides.items() if v is not None}})
