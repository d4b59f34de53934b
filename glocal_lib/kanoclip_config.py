"""KAnoCLIPConfig: every switch of the KAnoCLIP reconstruction, defaults = spec/kanoclip.md.

Registered as method "kanoclip" (glocal_lib.config imports this module; no torch here, so reading
configs stays light); its detector is glocal_lib.model.kanoclip.detector.KAnoCLIPDetector.

The paper fixes: the frozen ViT-L/14@336 CLIP, K = 12 learnable tokens, separate learnable normal and
abnormal prompts with adjectives and the class name (examples normal/perfect, abnormal/defective),
the KD hinge of Eq. 2 on Eq. 3's mean knowledge feature, the loss weights 1/1/1, four BiCA stages
summed and normalised, the Conv-Adapter on the global feature, S_global = softmax + max(M).
Every other value is [ours] (spec section 9) and a field here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .checks import check_range
from .config import MethodConfig, register_config
from .errors import ConfigError

_CHOICES = {
    "global_source": ("vv", "original"),
    "visual_self_attention": ("deformable", "global"),
    "map_norm": ("softmax", "minmax"),
    "global_score": ("mean", "literal_sum"),
    "train_map": ("unsmoothed", "smoothed"),
    "knowledge_source": ("file", "template"),
    "knowledge_scope": ("image", "class"),
    "knowledge_missing": ("error", "skip"),
}
KNOWLEDGE_ENV = "GLOCAL_KANOCLIP_KNOWLEDGE"  # a knowledge file, or a folder of <dataset>.json files
KNOWLEDGE_DIR = Path("knowledge")  # default folder (relative to the working directory), like weights/


@register_config("kanoclip")
@dataclass(frozen=True)
class KAnoCLIPConfig(MethodConfig):
    """KAnoCLIP switches; JSON-able through ``to_dict`` (run hashes, checkpoints)."""

    detector: ClassVar[str] = "glocal_lib.model.kanoclip.detector:KAnoCLIPDetector"

    method: str = "kanoclip"

    # --- KnPL prompts (paper §2.2.2, Eq. 1; spec 3) ---
    prompt_length: int = 12  # K (paper §3.1)
    normal_adjectives: tuple[str, ...] = ("normal", "perfect")  # paper's examples; full list not given
    abnormal_adjectives: tuple[str, ...] = ("abnormal", "defective")
    class_name: str = "object"  # the word used when no category is given (e.g. the embedding log)
    class_name_spaces: bool = True  # "metal_nut" -> "metal nut" [ours: CoOp convention]
    ctx_init_std: float = 0.02  # [ours: CoOp/AnomalyCLIP]

    # --- CLIP-VV vision (spec 2) ---
    dual_path: bool = True  # False: plain CLIP features (Table 3 base row)
    vv_start_layer: int | None = None  # None: backbone default (6 of 24) [ours: AnomalyCLIP]
    feature_layers: tuple[int, ...] | None = None  # None: (6, 12, 18, 24) scaled [ours: AnomalyCLIP]
    global_source: str = "vv"  # vv: final V-V CLS, ln_post @ proj (paper literal); original: AnomalyCLIP's

    # --- Bi-CMCI (spec 5) ---
    use_bica: bool = True  # False: plain cosine maps per stage (Table 3 rows before +Bi-CMCI)
    bica_heads: int = 8  # [ours]
    bica_dim: int | None = None  # inner attention width; None = the joint dim D [ours]; smaller = faster
    visual_self_attention: str = "deformable"  # deformable (DAT, spec 5.1) | global MHA
    dsa_groups: int = 4
    dsa_stride: int = 2
    dsa_kernel: int = 5
    dsa_offset_range: float = 2.0  # in reference-point steps
    temperature: float = 0.07  # tau [ours]
    map_norm: str = "softmax"  # "Norm" of Eq. 9: 2-way softmax | per-image min-max [ours]

    # --- Conv-Adapter and the global score (spec 6) ---
    use_adapter: bool = True  # False: I_G used as is (Table 3 rows before +Conv-Adapter)
    adapter_dim: int | None = None  # d_b; None = D/4 [ours]
    adapter_residual: bool = False  # Eq. 11 literal: no residual
    global_score: str = "mean"  # (p_a + max M)/2 [ours] | literal_sum (Eq. 12; BCE on p_a alone)
    train_map: str = "unsmoothed"  # M in training (max M and the local loss) [ours]
    sigma: float = 4.0  # Gaussian of Eq. 10 at inference [ours: AnomalyCLIP test default]

    # --- knowledge and losses (spec 4, 7) ---
    knowledge_source: str = "file"  # file (LLM + VQA descriptions) | template (fixed CLIP prompt)
    knowledge_file: str | None = None  # None: GLOCAL_KANOCLIP_KNOWLEDGE / the profile's default
    knowledge_template: str = "a photo of an abnormal {}."
    knowledge_scope: str = "image"  # image: class LLM + the image's VQA | class: all VQA of the class pooled
    knowledge_missing: str = "error"  # error | skip (L_KD = 0 for categories without descriptions)
    kd_weight: float = 1.0  # alpha (paper)
    global_loss_weight: float = 1.0  # beta (paper)
    local_loss_weight: float = 1.0  # gamma (paper)
    focal_gamma: float = 2.0

    # --- numerics ---
    precision: str = "fp32"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method != "kanoclip":
            raise ConfigError(f"KAnoCLIPConfig.method must be 'kanoclip', got {self.method!r}")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of {list(choices)}")
        check_range("prompt_length", self.prompt_length, minimum=1)
        for name in ("bica_heads", "dsa_groups", "dsa_stride", "dsa_kernel"):
            check_range(name, getattr(self, name), minimum=1)
        for name in ("bica_dim", "adapter_dim"):
            check_range(name, getattr(self, name), minimum=1)
        check_range("temperature", self.temperature, above=0)
        check_range("sigma", self.sigma, minimum=0)
        for name in ("kd_weight", "global_loss_weight", "local_loss_weight"):
            check_range(name, getattr(self, name), minimum=0)
        if not self.normal_adjectives or not self.abnormal_adjectives:
            raise ConfigError("normal_adjectives and abnormal_adjectives need at least one word each")
        if "{}" not in self.knowledge_template:
            raise ConfigError(f"knowledge_template {self.knowledge_template!r} needs a '{{}}' for the class name")
        if self.feature_layers is not None and (not self.feature_layers or 0 in self.feature_layers):
            raise ConfigError(f"feature_layers must name block numbers (or -1, -2 from the top), got {self.feature_layers}")

    @property
    def uses_knowledge(self) -> bool:
        """Whether training needs the knowledge (alpha > 0); evaluation never does."""
        return self.kd_weight > 0

    def knowledge_path(self, dataset: str, profile: Any = None) -> Path:
        """The knowledge file for training on ``dataset``: ``knowledge_file`` ("{dataset}" expanded) >
        $GLOCAL_KANOCLIP_KNOWLEDGE (a file, or a folder holding <dataset>.json) > a synthetic
        profile's stand-in (<results_root>/knowledge/<dataset>.json) > knowledge/<dataset>.json."""
        if self.knowledge_file:
            return Path(self.knowledge_file.replace("{dataset}", dataset))
        env = os.environ.get(KNOWLEDGE_ENV)
        if env:
            return Path(env) / f"{dataset}.json" if Path(env).is_dir() else Path(env)
        if profile is not None and getattr(profile, "synthetic", False):
            return Path(profile.results_root) / "knowledge" / f"{dataset}.json"
        return KNOWLEDGE_DIR / f"{dataset}.json"

    def required_inputs(self, dataset: str, profile: Any = None) -> list[str]:
        """What training on ``dataset`` needs besides images and weights, in words (the plan prints it)."""
        if not self.uses_knowledge or self.knowledge_source != "file":
            return []
        path = self.knowledge_path(dataset, profile)
        if getattr(profile, "synthetic", False) and not (self.knowledge_file or os.environ.get(KNOWLEDGE_ENV)):
            return [f"knowledge file {path}: a templated stand-in, written when the run starts"]
        state = "present" if path.is_file() else "MISSING"
        return [f"knowledge file {path} ({state}): LLM descriptions per category and VQA descriptions per "
                f"training image (README: 'KAnoCLIP (a reconstruction) and its knowledge file' says how to "
                f"make it; or {KNOWLEDGE_ENV}); without it use preset kanoclip-noknowledge"]

    def training_inputs(self, profile: Any, data: Any) -> dict[str, Any]:
        """Files besides the images that training reads, with their SHA-256 (part of the run identity).

        With knowledge from a file: {"knowledge": {"path", "sha256"}} (sha256 None while the file is
        missing: the plan still lists the run, training stops with how to make the file). A synthetic
        profile (smoke, rehearsal) writes its deterministic stand-in first unless a file was named.
        """
        if not self.uses_knowledge or self.knowledge_source != "file":
            return {}
        from .io import sha256_file

        path = self.knowledge_path(data.key, profile)
        named = bool(self.knowledge_file or os.environ.get(KNOWLEDGE_ENV))
        if getattr(profile, "synthetic", False) and not named:
            from .model.kanoclip.knowledge import write_standin

            rows = zip(data.index["image_path"].astype(str), data.index["category"].astype(str),
                       data.index["label"].astype(int))
            write_standin(path, data.key, rows)
        return {"knowledge": {"path": str(path), "sha256": sha256_file(path) if path.is_file() else None}}
