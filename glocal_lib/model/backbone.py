"""Load the frozen CLIP backbone through open_clip, offline, from whatever weight file the user has.

Three file kinds are accepted: the OpenAI TorchScript archive (``ViT-L-14-336px.pt``, checksum
verified), an OpenAI-format state dict (``.pt``/``.pth``) and an open_clip ``.bin``/``.safetensors``.
OpenAI-format and open_clip state dicts share the same key names, so one loader serves both; the
architecture comes from the named open_clip config or, without a name, is inferred from the tensor
shapes exactly as OpenAI's ``build_model`` (and the released GlocalCLIP code) infers it, including
``heads = width // 64``. The model is built in float32 directly: open_clip's own OpenAI builder
rounds the weights through float16, which would change fp32 state dicts.

Two small random architectures (``glocal-tiny-24``, ``glocal-tiny-8``) are registered from
``model_configs/*.json`` for tests and the smoke profile.
"""

from __future__ import annotations

import logging
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.transformer import QuickGELU

from glocal_lib.errors import ConfigError, WeightsError, describe_load_failure
from glocal_lib.io import atomic_save_torch, sha256_file
from glocal_lib.locate import env_dir, find_file

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
TINY_BACKBONES = ("glocal-tiny-24", "glocal-tiny-8")
WEIGHTS_DIR_ENV = "GLOCAL_WEIGHTS_DIR"
# Keys OpenAI state dicts carry besides the parameters (the released build_model drops them too).
OPENAI_META_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass(frozen=True)
class WeightSource:
    """A published weight file: where to get it and how to recognise a good copy."""

    filename: str
    url: str
    sha256: str  # the full digest, or the prefix the publisher states (open_clip checks a prefix)
    backbone: str  # the open_clip config the file belongs to
    also: str = ""  # other published copies (a different serialisation: no checksum known)


OPENAI_VIT_L_14_336 = WeightSource(
    filename="ViT-L-14-336px.pt",
    url=(
        "https://openaipublic.azureedge.net/clip/models/"
        "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt"
    ),
    sha256="3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
    backbone="ViT-L-14-336-quickgelu",
)
# WinCLIP's tower: open_clip's pretrained tag laion400m_e31 for ViT-B-16-plus-240 (open_clip
# pretrained.py). The URL's last field is the SHA256 prefix open_clip verifies after downloading.
LAION400M_E31_VIT_B_16_PLUS_240 = WeightSource(
    filename="vit_b_16_plus_240-laion400m_e31-8fb26589.pt",
    url="https://github.com/mlfoundations/open_clip/releases/download/v0.2-weights/"
        "vit_b_16_plus_240-laion400m_e31-8fb26589.pt",
    sha256="8fb26589",
    backbone="ViT-B-16-plus-240",
    also="or open_clip_pytorch_model.bin / open_clip_model.safetensors from the Hugging Face repo "
         "timm/vit_base_patch16_plus_clip_240.laion400m_e31 (what open_clip.create_model("
         "'ViT-B-16-plus-240', pretrained='laion400m_e31') fetches); the winclip preset reads "
         "GLOCAL_WINCLIP_WEIGHTS",
)
KNOWN_WEIGHTS = {w.filename: w for w in (OPENAI_VIT_L_14_336, LAION400M_E31_VIT_B_16_PLUS_240)}


def register_model_configs() -> None:
    """Add this package's architecture JSONs to open_clip's registry (idempotent)."""
    if not all(name in open_clip.list_models() for name in TINY_BACKBONES):
        open_clip.add_model_config(MODEL_CONFIG_DIR)


register_model_configs()


def default_feature_layers(depth: int) -> tuple[int, ...]:
    """The published layers 6/12/18/24 scaled to a tower of `depth` blocks (8 -> 2/4/6/8)."""
    return tuple(depth * q // 4 for q in (1, 2, 3, 4))


def resolve_feature_layers(layers: tuple[int, ...], depth: int) -> tuple[int, ...]:
    """Block numbers 1..depth; negative ones count from the top (-1 = the last block), so a preset can
    say "top layer only" (AnomalyCLIP's `--features_list 24` on ViT-L) for towers of any depth."""
    return tuple(depth + 1 + int(k) if int(k) < 0 else int(k) for k in layers)


def default_vv_start_layer(depth: int) -> int:
    """The published V-V start (block 6 of 24) scaled to `depth` blocks (8 -> 2)."""
    return max(1, depth // 4)


def feature_layers_for(layers: tuple[int, ...] | None, depth: int) -> tuple[int, ...]:
    """A config's `feature_layers` (None: the published ones scaled) as block numbers 1..depth."""
    return resolve_feature_layers(default_feature_layers(depth) if layers is None else layers, depth)


def vv_start_layer_for(start: int | None, depth: int) -> int:
    """A config's `vv_start_layer` (None: the published one scaled to `depth` blocks)."""
    return default_vv_start_layer(depth) if start is None else start


def _digest_text(src: WeightSource) -> str:
    return f"SHA256 {src.sha256}" if len(src.sha256) == 64 else f"SHA256 starting {src.sha256}"


def _where_to_get(filename: str) -> str:
    src = KNOWN_WEIGHTS.get(filename)
    if src is None:
        return ""
    also = f", {src.also}" if src.also else ""
    return f" Download it from {src.url} ({_digest_text(src)}){also}."


def resolve_weights_path(
    weights: str | os.PathLike[str], weights_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Find a weight file: an existing path, else a name inside `weights_dir` or $GLOCAL_WEIGHTS_DIR."""
    path = Path(weights).expanduser()
    if path.is_file():  # before $GLOCAL_WEIGHTS_DIR is read: a path needs no folder
        return path
    found, searched = find_file(path, (weights_dir, env_dir(WEIGHTS_DIR_ENV, error=WeightsError)), as_path=True)
    if found is not None:
        return found
    where = ", ".join(str(p) for p in searched)
    raise WeightsError(
        f"Backbone weight file '{weights}' not found (looked at: {where}). Pass an existing path or put the "
        f"file in the folder named by `weights_dir` or ${WEIGHTS_DIR_ENV}.{_where_to_get(path.name)}"
    )


def verify_checksum(path: Path) -> None:
    """Check a file with a published name against its published SHA256 (catches truncated downloads)."""
    src = KNOWN_WEIGHTS.get(path.name)
    if src is None:
        return
    digest = sha256_file(path)
    if not digest.startswith(src.sha256):
        raise WeightsError(
            f"Weight file {path} has SHA256 {digest}, expected {_digest_text(src)} for {src.filename}: the "
            f"file is corrupt or a different model. Download it again from {src.url}."
        )


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], bool]:
    """Read parameters from a weight file without unpickling arbitrary objects.

    Returns (state dict, is_openai_format): TorchScript archives and state dicts with OpenAI's meta
    keys are OpenAI models, which were trained with QuickGELU.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path), device="cpu")
            openai = False
        elif _is_torchscript_archive(path):
            # TorchScript archives are read by the TorchScript deserialiser, not by pickle.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, still works
                sd = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
            openai = True
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
            openai = False
    except WeightsError:
        raise
    except Exception as exc:  # any parse failure means the file is not usable weights
        raise WeightsError(
            f"{path} is not a CLIP weight file ({describe_load_failure(exc)}). Expected an OpenAI TorchScript "
            f"archive, an OpenAI-format state dict (.pt/.pth) or an open_clip .bin/.safetensors.{_where_to_get(path.name)}"
        ) from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(
            f"Weight file {path} does not hold a state dict of tensors.{_where_to_get(path.name)}"
        )
    sd = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in sd.items()}
    openai = openai or any(k in sd for k in OPENAI_META_KEYS)
    for key in OPENAI_META_KEYS:
        sd.pop(key, None)
    if "visual.proj" not in sd or "text_projection" not in sd:
        raise WeightsError(
            f"Weight file {path} is not a CLIP ViT state dict (no 'visual.proj' / 'text_projection' keys)."
            f"{_where_to_get(path.name)}"
        )
    return sd, openai


def build_from_state_dict(sd: dict[str, torch.Tensor], quick_gelu: bool = True) -> CLIP:
    """Build a float32 open_clip CLIP whose shape is read off an OpenAI-format ViT state dict."""
    vision_width = sd["visual.conv1.weight"].shape[0]
    vision_layers = sum(1 for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight"))
    patch = sd["visual.conv1.weight"].shape[-1]
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    mlp_ratio = sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / vision_width
    text_width = sd["ln_final.weight"].shape[0]
    text_layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks")})
    vision_cfg = CLIPVisionCfg(
        layers=vision_layers,
        width=vision_width,
        patch_size=patch,
        image_size=patch * grid,
        mlp_ratio=mlp_ratio,
    )
    text_cfg = CLIPTextCfg(
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        width=text_width,
        heads=text_width // 64,
        layers=text_layers,
    )
    return CLIP(
        sd["text_projection"].shape[1], vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=quick_gelu
    )


def _randomise_affine_parameters(model: torch.nn.Module) -> None:
    """Give biases and norm gains random values: open_clip initialises them to 0/1, which would let a
    test pass with a bias or LayerNorm affine silently dropped."""
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.data.normal_(0.0, 0.02)
        elif p.ndim == 1 and ("ln_" in name or ".ln" in name) and name.endswith("weight"):
            p.data.normal_(1.0, 0.1)


def _create_random(backbone: str) -> CLIP:
    # open_clip warns on the root logger that no pretrained weights were loaded: intended here.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        return open_clip.create_model(backbone, pretrained=None)
    finally:
        logging.disable(previous)


def _freeze(model: CLIP, device: str | torch.device) -> CLIP:
    model = model.float().to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_clip(
    backbone: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    weights_dir: str | os.PathLike[str] | None = None,
    allow_download: bool = False,
    verify: bool = True,
    activation: str | None = None,
) -> CLIP:
    """Return a frozen float32 open_clip CLIP in eval mode.

    backbone: open_clip config name (``ViT-L-14-336-quickgelu``, ``glocal-tiny-24``...) or None to infer
        the architecture from an OpenAI-format state dict.
    weights: None = random init seeded with `seed` (every bias/norm randomised too); a file path or a
        file name looked up in `weights_dir` / $GLOCAL_WEIGHTS_DIR; ``"openai"`` = the local OpenAI
        file for the backbone, downloaded through open_clip only if `allow_download`.
    activation: None = the backbone's own MLP activation (OpenAI weights in a GELU config are
        refused); ``"gelu"`` / ``"quick_gelu"`` = every MLP of both towers uses that activation after
        loading, whatever the weights were trained with. An explicit method choice: AdaCLIP's
        released code runs OpenAI weights with exact GELU (spec adaclip.md section 1).
    """
    if activation is not None and activation != _AS_LOADED:
        if activation not in MLP_ACTIVATIONS:
            raise ConfigError(f"activation must be one of {sorted(MLP_ACTIVATIONS)}, got {activation!r}")
        model = load_clip(backbone, weights, device, seed, weights_dir, allow_download, verify, _AS_LOADED)
        set_activation(model, activation)
        return model
    if weights is None:
        if backbone is None:
            raise ConfigError("load_clip needs a backbone name or a weight file (got neither).")
        _check_known_backbone(backbone)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _create_random(backbone)
            _randomise_affine_parameters(model)
        return _freeze(model, device)

    if str(weights) == "openai":
        return _load_openai_tag(backbone, device, weights_dir, allow_download, verify)

    path = resolve_weights_path(weights, weights_dir)
    if verify:
        verify_checksum(path)
    sd, is_openai = read_state_dict(path)
    if backbone is None:
        model = build_from_state_dict(sd, quick_gelu=True)
    else:
        _check_known_backbone(backbone)
        cfg = open_clip.get_model_config(backbone)
        if is_openai and not cfg.get("quick_gelu", False) and activation != _AS_LOADED:
            raise WeightsError(
                f"{path} holds OpenAI CLIP weights, which were trained with QuickGELU, but backbone '{backbone}' "
                f"uses GELU and would silently give wrong features. Use backbone '{backbone}-quickgelu'."
            )
        model = _create_random(backbone)
    _load_strict(model, sd, path, backbone)
    return _freeze(model, device)


_AS_LOADED = "as_loaded"  # internal: load into the config's modules, the caller sets the activation
MLP_ACTIVATIONS = {"gelu": lambda: torch.nn.GELU(approximate="none"), "quick_gelu": QuickGELU}


def set_activation(model: CLIP, activation: str) -> int:
    """Use ``activation`` in every MLP of both towers (returns how many were set); recorded on the
    model as ``glocal_activation`` so signatures and shared-tower keys can name it."""
    if activation not in MLP_ACTIVATIONS:
        raise ConfigError(f"activation must be one of {sorted(MLP_ACTIVATIONS)}, got {activation!r}")
    count = 0
    for tower in (model.visual.transformer, model.transformer):
        for block in tower.resblocks:
            block.mlp.gelu = MLP_ACTIVATIONS[activation]()
            count += 1
    model.glocal_activation = activation
    return count


def _check_known_backbone(backbone: str) -> None:
    if open_clip.get_model_config(backbone) is None:
        raise ConfigError(
            f"Unknown backbone '{backbone}'. Use an open_clip config name (e.g. 'ViT-L-14-336-quickgelu') "
            f"or one of {', '.join(TINY_BACKBONES)}."
        )


def _load_strict(model: CLIP, sd: dict[str, torch.Tensor], path: Path, backbone: str | None) -> None:
    expected = model.state_dict()
    # TorchScript archives also list non-persistent buffers (the causal mask): not weights.
    transient = {name for name, _ in model.named_buffers()} - set(expected)
    sd = {k: v for k, v in sd.items() if k not in transient}
    if "logit_scale" in expected and "logit_scale" not in sd:  # unused here; some exports drop it
        sd["logit_scale"] = expected["logit_scale"].clone()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = sorted(k for k in set(sd) & set(expected) if sd[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise WeightsError(
            f"Weight file {path} does not fit backbone '{backbone or 'inferred'}' ({detail}). Pick the backbone "
            f"the file was trained with, or pass backbone=None for OpenAI-format state dicts."
        )
    model.load_state_dict(sd, strict=True)


def _load_openai_tag(
    backbone: str | None,
    device: str | torch.device,
    weights_dir: str | os.PathLike[str] | None,
    allow_download: bool,
    verify: bool,
) -> CLIP:
    name = backbone or OPENAI_VIT_L_14_336.backbone
    if name not in ("ViT-L-14-336", OPENAI_VIT_L_14_336.backbone):
        if not allow_download:
            raise WeightsError(
                f"weights='openai' for '{name}' needs a download; pass allow_download=True or a local file."
            )
    else:
        try:
            return load_clip(
                None, OPENAI_VIT_L_14_336.filename, device, weights_dir=weights_dir, verify=verify
            )
        except WeightsError:
            if not allow_download:
                raise
        name = OPENAI_VIT_L_14_336.backbone
    if not name.endswith("-quickgelu"):
        name = f"{name}-quickgelu"
    model = open_clip.create_model(name, pretrained="openai")
    return _freeze(model, device)


def openai_state_dict(model: CLIP) -> dict[str, torch.Tensor]:
    """The model's weights in OpenAI's layout (the released code's `build_model` loads this)."""
    sd = {k: v.detach().to("cpu", torch.float32).clone() for k, v in model.state_dict().items()}
    visual = model.visual
    sd["input_resolution"] = torch.tensor(int(visual.image_size[0]))
    sd["context_length"] = torch.tensor(int(model.context_length))
    sd["vocab_size"] = torch.tensor(int(model.vocab_size))
    return sd


def save_openai_state_dict(model: CLIP, path: str | os.PathLike[str]) -> Path:
    """Write `openai_state_dict(model)` atomically (a plain tensor dict: loadable with weights_only)."""
    return atomic_save_torch(path, openai_state_dict(model))


def resize_positional_embedding(pos: torch.Tensor, grid: int, mode: str = "bilinear") -> torch.Tensor:
    """Resize a ViT positional table (1 + g*g, W) to (1 + grid*grid, W), CLS row kept.

    align_corners=False, no antialias. Bilinear: the released GlocalCLIP/AnomalyCLIP choice;
    bicubic: AdaCLIP's (open_clip's own helper is bicubic WITH antialias: other numbers again).
    """
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"positional resize mode must be 'bilinear' or 'bicubic', got {mode!r}")
    old = round((pos.shape[0] - 1) ** 0.5)
    if old * old + 1 != pos.shape[0]:
        raise ValueError(f"positional embedding with {pos.shape[0]} rows is not 1 + a square grid")
    if old == grid:
        return pos
    width = pos.shape[1]
    patch_pos = pos[1:].reshape(1, old, old, width).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, size=(grid, grid), mode=mode, align_corners=False)
    patch_pos = patch_pos.reshape(width, grid * grid).transpose(0, 1)
    return torch.cat([pos[:1], patch_pos], dim=0)


# ------------------------------------------------------------------------------ shared backbones
# A reproduction builds ~180 detectors over the same frozen tower: building it once per process
# (per backbone, weights, seed and device) saves the rebuild (seconds for ViT-L, ~0.2 s tiny) each run.
_SHARED: dict[tuple[Any, ...], tuple[CLIP, int]] = {}
SHARED_MAX = 2  # at most this many towers stay alive (a ViT-L in fp32 holds ~1.7 GB)
SHARED_FLAG = "_glocal_shared"  # set on shared towers: detectors may share their zero-shot text cache


def _weights_key(weights: str | os.PathLike[str] | None, weights_dir: str | os.PathLike[str] | None) -> Any:
    """What identifies a weight file for reuse: its resolved path, size and mtime (a rewritten file reloads)."""
    if weights is None or str(weights) == "openai":
        return None if weights is None else "openai"
    path = resolve_weights_path(weights, weights_dir).resolve()
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


def _versions(model: CLIP) -> int:
    """Sum of the parameters' in-place version counters: it changes when a tensor is written in place."""
    return sum(p._version for p in model.parameters())


def load_clip_shared(
    backbone: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    weights_dir: str | os.PathLike[str] | None = None,
    allow_download: bool = False,
    activation: str | None = None,
) -> CLIP:
    """`load_clip`, memoised in this process by (backbone, weights file, seed, device).

    The tower is frozen, so detectors can share it; one whose parameters were written in place
    since it was cached (version counters moved) is rebuilt rather than handed out again.
    """
    key = (backbone, _weights_key(weights, weights_dir), int(seed) if weights is None else None,
           str(torch.device(device)), activation)
    hit = _SHARED.get(key)
    if hit is not None and _versions(hit[0]) == hit[1]:
        _SHARED[key] = _SHARED.pop(key)  # most recently used last
        return hit[0]
    _SHARED.pop(key, None)
    model = load_clip(backbone, weights, device=device, seed=seed, weights_dir=weights_dir,
                      allow_download=allow_download, activation=activation)
    while len(_SHARED) >= SHARED_MAX:
        _SHARED.pop(next(iter(_SHARED)))
    setattr(model, SHARED_FLAG, True)
    _SHARED[key] = (model, _versions(model))
    return model


def clear_shared_backbones() -> None:
    """Drop every memoised tower (frees their memory)."""
    _SHARED.clear()
