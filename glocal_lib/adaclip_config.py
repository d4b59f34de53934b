"""AdaCLIP's method config (spec adaclip.md): defaults = the released code (caoyunkang/AdaCLIP e27ee32b).

Torch-free so that ``glocal_lib.config`` registers it when presets, runs and checkpoints are read; the
detector it names lives in ``glocal_lib.model.adaclip``. Every paper-side or convenience deviation is a
named field whose default is the released behaviour; the training recipe (AdamW, lr, batch, epochs,
mosaic) lives here too because it is part of the method, not of the run profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .config import MethodConfig, register_config
from .errors import ConfigError

ACTIVATIONS = ("gelu", "quick_gelu")  # released: exact GELU although the weights are OpenAI's (spec 1)
POS_RESIZES = ("bicubic", "bilinear")
PROMPT_TYPES = ("SD", "S", "D")  # static + dynamic | static | dynamic (spec 2)
BRANCHES = ("VL", "V", "L")  # both towers | vision only | text only
HSF_VARIANTS = ("released", "reported")  # spec 5.1 / 11 #2
DICE_REDUCTIONS = ("rows", "per_image")  # spec 6: the released B = 1 dice is per image row
MOSAIC_LABELS = ("released", "any_tile")  # label of a mosaic: the indexed item's (released) | any tile anomalous
CLASS_NAMES = ("adaclip", "project", "object")  # prompt class names: AdaCLIP's CLS_NAMES (spec 7.5) | the
# index's | the word "object" for every category (a smoke shortcut: names a random tower never trained on)
SELECTIONS = ("last_epoch", "best_epoch")  # spec 7.6
KMEANS = ("sklearn", "torch")
SMOKE_ENSEMBLES = ("released", "minimal")  # sentences: 7+5 states x 4 templates | 1 + 1 (a smoke shortcut)


@register_config("adaclip")
@dataclass(frozen=True)
class AdaCLIPConfig(MethodConfig):
    """All AdaCLIP switches; JSON-able through ``to_dict`` (run hashes, checkpoints)."""

    detector: ClassVar[str] = "glocal_lib.model.adaclip:AdaCLIPDetector"

    method: str = "adaclip"
    # --- backbone as AdaCLIP runs it (spec 1) ---
    activation: str = "gelu"
    pos_resize: str = "bicubic"
    feature_layers: tuple[int, ...] | None = None  # None: depth/4 multiples (6, 12, 18, 24)
    # --- hybrid prompts (spec 2-4) ---
    prompt_depth: int = 4  # J
    prompt_length: int = 5  # Lp
    prompt_type: str = "SD"
    prompt_branch: str = "VL"
    prompt_init_std: float = 0.02
    prompt_fp16_rounding: bool = True  # prompts are cast to fp16 when spliced in (released .half())
    class_names: str = "adaclip"
    # "minimal" = one normal and one anomalous sentence (first state, first template): 24x less text
    # work; only for the smoke profile's time budget, printed as a smoke shortcut
    ensemble: str = "released"
    # --- scores (spec 5) ---
    temperature: float = 0.01
    use_hsf: bool = True
    hsf: str = "released"
    k_clusters: int = 20
    hsf_top_factor: int = 5  # top k' = min(N, factor * K) patches (100)
    hsf_alpha: float = 0.2
    hsf_skip_empty: bool = False  # released: an empty cluster gives NaN
    kmeans_seed: int = 111  # released: numpy's global RNG stream seeded 111; here a fixed state per call
    kmeans: str = "sklearn"  # released scikit-learn KMeans | "torch": the same algorithm in torch (faster, not bit-equal)
    sigma: float = 4.0
    # --- losses (spec 6) ---
    dice_reduction: str = "rows"
    focal_gamma: float = 2.0
    # --- training recipe (spec 7) ---
    lr: float = 0.01
    adam_betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.01
    epochs: int = 5
    batch_size: int = 1
    mosaic_rate: float = 0.2  # 0 = off
    mosaic_datasets: tuple[str, ...] = ("mvtec",)  # released: only MVTec AD is loaded with aug_rate 0.2
    mosaic_label: str = "released"
    select: str = "last_epoch"  # best_epoch = released selection on the evaluation set (spec 7.6)
    # --- numerics ---
    precision: str = "fp16"  # released: CUDA fp16 autocast, no GradScaler; on CPU always fp32

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, choices in (("activation", ACTIVATIONS), ("pos_resize", POS_RESIZES),
                              ("prompt_type", PROMPT_TYPES), ("prompt_branch", BRANCHES), ("hsf", HSF_VARIANTS),
                              ("dice_reduction", DICE_REDUCTIONS), ("mosaic_label", MOSAIC_LABELS),
                              ("class_names", CLASS_NAMES), ("select", SELECTIONS), ("ensemble", SMOKE_ENSEMBLES),
                              ("kmeans", KMEANS)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"adaclip {name}={getattr(self, name)!r} is not one of {list(choices)}")
        if self.method != "adaclip":
            raise ConfigError(f"AdaCLIPConfig is method 'adaclip', got {self.method!r}")
        for name in ("prompt_depth", "prompt_length", "k_clusters", "hsf_top_factor", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"adaclip {name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.mosaic_rate <= 1:
            raise ConfigError(f"adaclip mosaic_rate must be in [0, 1], got {self.mosaic_rate}")
        if self.feature_layers is not None and (not self.feature_layers or 0 in self.feature_layers):
            raise ConfigError(f"adaclip feature_layers must be block numbers (or null), got {self.feature_layers}")

    @property
    def visual_prompts(self) -> bool:
        return "V" in self.prompt_branch

    @property
    def text_prompts(self) -> bool:
        return "L" in self.prompt_branch

    @property
    def static(self) -> bool:
        return "S" in self.prompt_type

    @property
    def dynamic(self) -> bool:
        return "D" in self.prompt_type
