"""ViP2-CLIP's method config (spec vip2clip.md): every switch, released behaviour as the default.

Torch-free so that ``glocal_lib.config`` can register it when presets, runs and checkpoints are read;
the detector it names lives in ``glocal_lib.model.vip2clip``. Paper-vs-code switches (spec 8):
``normal_state_word_bug`` (row 1), ``fgp_scale`` (3), ``fgp_heads`` / ``fgp_bias`` /
``fgp_output_norm`` (4), ``fgp_shared`` (5), ``ica_bias`` (6), ``image_score`` (7, 8),
``local_loss_weight`` (9); ablations (spec 9): ``use_ica``, ``use_fgp``, ``use_utpa``, ``topk``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .config import MethodConfig, _check_choice, register_config
from .errors import ConfigError

FGP_SCALES = ("none", "sqrt_dim", "sqrt_head")
IMAGE_SCORES = ("released", "paper")
MAP_REDUCTIONS = ("mean", "sum")


@register_config("vip2clip")
@dataclass(frozen=True)
class Vip2ClipConfig(MethodConfig):
    """ViP2-CLIP (Yang et al., arXiv 2505.17692) as kim0806/ViP2-CLIP 4b5884f computes it."""

    detector: ClassVar[str] = "glocal_lib.model.vip2clip:Vip2ClipDetector"

    method: str = "vip2clip"

    # --- static prompt templates (spec 3.1) ---
    n_ctx: int = 7  # learnable context length n (train.sh/test.sh; train.py's default 9 is not used)
    n_cls: int = 3  # image-conditioned tokens r (replace the class name)
    normal_state: str = "good"
    anomaly_state: str = "damaged"
    # released: both prompts take their fixed tokens from the anomaly sentence, so the normal prompt's
    # state word is "damaged" too (ICA.__init__); False puts normal_state there (paper Eq. 2/4)
    normal_state_word_bug: bool = True
    ctx_init_std: float = 0.02

    # --- image-conditioned adapter, ICA (spec 3.2) ---
    use_ica: bool = True  # False: z_i = o_i (static prompts; Table 4 ablation, ViP2-CLIP_re)
    ica_bias: bool = True  # released adds a learnable b to the image embedding (paper: h_i(f))
    ica_hidden: int = 384

    # --- fine-grained perception, FGP (spec 3.4) ---
    use_fgp: bool = True  # False: the layer text is the ICA text itself (Table 4 ablation)
    fgp_heads: int = 8  # released 8 heads; paper Eq. 6 reads as one
    fgp_scale: str = "none"  # attention logit scale: none (released) | sqrt_dim (paper, 1/sqrt(C)) | sqrt_head
    fgp_bias: bool = True  # released 1x1 Conv1d layers carry biases; paper's matrices do not
    fgp_output_norm: bool = True  # released L2-normalises FGP's output; paper does not say so
    fgp_shared: bool = True  # one FGP for the four layers (released); False: one per layer (paper)
    # emulate the TF32 inputs of the released 1x1 Conv1d on Ampere/Ada GPUs (spec 6.9); FGP only
    tf32_convs: bool = False

    # --- vision (spec 2): plain CLIP, no V-V ---
    feature_layers: tuple[int, ...] | None = None  # None: (6, 12, 18, 24) scaled to the tower's depth

    # --- UTPA scores (spec 4) ---
    use_utpa: bool = True  # False: image score from the global embedding (dual-branch baseline, spec 9)
    image_score: str = "released"  # released: one softmax of the mean top-k raw cosine | paper (Eq. 8)
    topk: int = 50
    temperature: float = 0.07
    map_reduction: str = "mean"  # mean over layers (released test.py) | sum
    sigma: float = 8.0

    # --- losses and optimiser (spec 5) ---
    local_loss_weight: float = 1.0  # lambda of Eq. 9 (1 in the code)
    global_loss_weight: float = 1.0
    focal_gamma: float = 2.0
    fgp_lr_scale: float = 0.01  # FGP's learning rate = lr * this (released: learning_rate * 0.01)
    epochs: int = 10  # the released recipe (train.sh); the engine caps it by the profile's epochs (smoke 2)
    adam_betas: tuple[float, float] = (0.9, 0.999)  # torch's defaults, as train.py leaves them

    precision: str = "fp32"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("fgp_scale", self.fgp_scale, FGP_SCALES)
        _check_choice("image_score", self.image_score, IMAGE_SCORES)
        _check_choice("map_reduction", self.map_reduction, MAP_REDUCTIONS)
        for name in ("n_ctx", "n_cls", "ica_hidden", "fgp_heads", "topk", "epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"vip2clip config: {name} must be >= 1, got {getattr(self, name)}")
        if not all(0 <= b < 1 for b in self.adam_betas):
            raise ConfigError(f"vip2clip config: adam_betas must lie in [0, 1), got {list(self.adam_betas)}")
        if self.temperature <= 0:
            raise ConfigError(f"vip2clip config: temperature must be > 0, got {self.temperature}")
        if self.feature_layers is not None and (not self.feature_layers or 0 in self.feature_layers):
            raise ConfigError("vip2clip config: feature_layers must name block numbers 1..depth or -1, -2, ... "
                              f"(or be null for the default); got {self.feature_layers}")
        for word in (self.normal_state, self.anomaly_state):
            if not word or " " in word.strip() or "{" in word:
                raise ConfigError(f"vip2clip config: state words must be single words, got {word!r}")
