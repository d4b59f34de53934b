"""The model: frozen open_clip CLIP + dual-path vision + prompt learners + losses (no loops, no files
except checkpoints). Public API: ``build_model`` and the classes it returns."""

from .api import build_model
from .checkpoint import (
    export_official,
    import_official,
    load_prompt_state,
    load_prompts,
    official_state_dict,
    read_checkpoint,
    save_checkpoint,
)
from .detector import GlocalDetector, Prediction, VisionFeatures

__all__ = [
    "GlocalDetector",
    "Prediction",
    "VisionFeatures",
    "build_model",
    "export_official",
    "import_official",
    "load_prompt_state",
    "load_prompts",
    "official_state_dict",
    "read_checkpoint",
    "save_checkpoint",
]
