"""Prompt checkpoints: our self-describing format, and the released codes' format both ways.

Ours: ``{"format", "config", "backbone", "weights", "weights_sha256", "image_size", "seed", "prompts",
"deep", "extra"}`` -- the full ModelConfig, backbone name and weight file identity travel with the
prompt tensors, so a checkpoint alone rebuilds the model (``build_model(checkpoint=path)``) and
loading it onto another backbone can be refused (``check_backbone``).

Official: ``{"prompt_learner": state_dict}`` as the released train.py saves it. GlocalCLIP keys:
``ctx_{global,local}_{pos,neg}`` (1, 1, len, Wt); AnomalyCLIP keys: ``ctx_pos``, ``ctx_neg``; both:
``compound_prompts_text.{i}`` (t, Wt), the unused ``compound_prompt_projections.{i}.{weight,bias}``
(896, Wt)/(896,), and the persistent buffers ``token_prefix_*`` / ``token_suffix_*`` (token
embeddings of the placeholder prompt around the context) and ``tokenized_prompts_*`` (int32 ids).
Import reads the parameters and ignores the buffers (they are recomputed from the backbone);
export writes everything, so the released code's strict ``load_state_dict`` accepts our file.
Everything is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import ConfigError, WeightsError, describe_load_failure
from ..io import atomic_save_torch, sha256_file
from .detector import GlocalDetector
from .prompts import LearnedPrompts

FORMAT = "glocal_lib.prompt_checkpoint/v1"

# (official name, our ctx name) per released code
GLOCAL_CTX = (("ctx_global_pos", "global_normal"), ("ctx_global_neg", "global_anomaly"),
              ("ctx_local_pos", "local_normal"), ("ctx_local_neg", "local_anomaly"))
ANOMALY_CTX = (("ctx_pos", "normal"), ("ctx_neg", "anomaly"))
# (buffer suffix, index of our prompt) per released code
GLOCAL_BUFFERS = (("global_pos", 0), ("global_neg", 1), ("local_pos", 2), ("local_neg", 3))
ANOMALY_BUFFERS = (("pos", 0), ("neg", 1))


def load_torch_file(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist; pass the path of a .pt/.pth file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-tensor payloads
        raise WeightsError(f"{path} is not a readable checkpoint ({describe_load_failure(exc)}); expected a .pt "
                           "written by `glocal train` or the released prompt checkpoint format.") from None


def checkpoint_kind(obj: Any) -> str:
    """'ours', 'official' or 'unknown' for a loaded checkpoint object."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return "ours"
    if isinstance(obj, dict) and isinstance(obj.get("prompt_learner"), dict):
        return "official"
    if isinstance(obj, dict) and any(h.recognises_official(obj) for h in _registered_hooks()):
        return "official"  # a method whose released code saves a flat state dict (AdaCLIP)
    return "unknown"


# ---- our format --------------------------------------------------------------------------------
def checkpoint_dict(model: GlocalDetector, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "config": model.cfg.to_dict(),
        "backbone": model.backbone_name,
        "weights": None if model.weights is None else str(model.weights),
        "weights_sha256": weights_sha256(model.weights),
        "image_size": model.image_size,
        "seed": model.seed,
        "backbone_seed": model.backbone_seed,
        "prompt_names": list(model.prompt_names),
        "prompts": {k: v.detach().cpu().clone() for k, v in model.prompts.state_dict().items()},
        "deep": None if model.deep is None else {k: v.detach().cpu().clone()
                                                  for k, v in model.deep.state_dict().items()},
        "extra": dict(extra or {}),
    }


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def weights_sha256(weights: str | os.PathLike[str] | None) -> str | None:
    """sha256 of a weight file (None: random backbone or not a file), memoised per path, size and mtime."""
    if weights is None or not Path(weights).is_file():
        return None
    st = Path(weights).stat()
    key = (str(Path(weights).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = sha256_file(weights)
    return _SHA_MEMO[key]


def check_backbone(ckpt: dict[str, Any], source: str, backbone: str | None, weights: Any,
                   image_size: int | None) -> None:
    """Refuse to load a checkpoint's prompts onto another backbone, weights or image size than it was
    trained with (shapes may fit, the numbers would not be the run's): only explicitly given values
    are compared; pass allow_other_backbone=True to build_model to do it on purpose."""
    diffs = []
    if backbone is not None and ckpt.get("backbone") not in (None, backbone):
        diffs.append(f"backbone {backbone!r} (trained with {ckpt['backbone']!r})")
    if image_size is not None and ckpt.get("image_size") not in (None, int(image_size)):
        diffs.append(f"image size {image_size} (trained at {ckpt['image_size']})")
    if weights is not None and "weights" in ckpt:
        saved, saved_sha = ckpt.get("weights"), ckpt.get("weights_sha256")
        if saved is None:
            diffs.append(f"weights {weights} (trained on a random backbone, seed {ckpt.get('backbone_seed')})")
        else:
            given_sha = weights_sha256(weights)
            known = saved_sha or weights_sha256(saved)
            same = (given_sha == known) if (given_sha and known) else Path(weights).name == Path(saved).name
            if not same:
                diffs.append(f"weights {weights} (trained with {saved}, sha256 {str(known)[:12]})")
    if diffs:
        raise WeightsError(f"{source} was trained on another backbone than asked for: {'; '.join(diffs)}. Build "
                           "it without these arguments (the checkpoint's own are used), or pass "
                           "allow_other_backbone=True to score its prompts on another backbone on purpose")


def save_checkpoint(model: GlocalDetector, path: str | os.PathLike[str],
                    extra: dict[str, Any] | None = None) -> Path:
    """Write our checkpoint atomically (``extra``: JSON-like metadata, e.g. epoch, run id)."""
    return atomic_save_torch(path, checkpoint_dict(model, extra))


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and validate one of our checkpoints (raises WeightsError naming the file)."""
    return _checked_ours(load_torch_file(path), path)


def load_prompts(model: GlocalDetector, path: str | os.PathLike[str]) -> str:
    """Load the prompts of our checkpoint or of an official ``{"prompt_learner": ...}`` file into
    ``model`` (read once); returns the kind, "ours" or "official"."""
    obj = load_torch_file(path)
    if checkpoint_kind(obj) == "official":
        import_official(model, obj, str(path))
        return "official"
    load_prompt_state(model, _checked_ours(obj, path), str(path))
    return "ours"


def _checked_ours(obj: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    kind = checkpoint_kind(obj)
    if kind != "ours":
        hint = " It is an official {'prompt_learner': ...} file: use import_official." if kind == "official" else ""
        raise WeightsError(f"{path} is not a glocal_lib prompt checkpoint (format {FORMAT}).{hint}")
    for key in ("config", "prompts"):
        if not isinstance(obj.get(key), dict):
            raise WeightsError(f"{path}: checkpoint field {key!r} is missing or not a mapping")
    return obj


def load_prompt_state(model: GlocalDetector, ckpt: dict[str, Any], source: str = "checkpoint") -> None:
    """Copy our checkpoint's prompt tensors into ``model`` (strict: names and shapes must match)."""
    _load_strict(model.prompts, ckpt["prompts"], source, "prompts")
    deep = ckpt.get("deep")
    if (deep is None) != (model.deep is None):
        raise WeightsError(
            f"{source}: deep text prompts {'absent' if deep is None else 'present'} in the checkpoint but "
            f"{'absent' if model.deep is None else 'present'} in the model (deep_depth differs)"
        )
    if deep is not None:
        _load_strict(model.deep, deep, source, "deep")


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str, what: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise WeightsError(f"{source}: {what} keys do not match the model (missing {missing}, unexpected "
                           f"{unexpected}); was it saved with another config?")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise WeightsError(f"{source}: {what}.{k} has shape {tuple(v.shape)}, the model expects "
                               f"{tuple(own[k].shape)}")
    with torch.no_grad():
        for k, v in module.state_dict(keep_vars=True).items():
            v.copy_(state[k].to(dtype=v.dtype, device=v.device))


# ---- official format ---------------------------------------------------------------------------
def _method_hooks(cfg_or_model: Any) -> Any:
    """The detector class of a non-ModelConfig method (its released-format hooks), else None."""
    cfg = getattr(cfg_or_model, "cfg", cfg_or_model)
    if isinstance(cfg, ModelConfig):
        return None
    from ..config import detector_class

    return detector_class(cfg)


def official_flavour(cfg: ModelConfig) -> str:
    """'glocalclip' or 'anomalyclip': which released prompt learner this config corresponds to
    (another method: its own name, after its detector's ``check_official`` hook)."""
    hooks = _method_hooks(cfg)
    if hooks is not None:
        if not hasattr(hooks, "check_official"):
            raise ConfigError(f"method {cfg.method!r} has no official checkpoint format")
        hooks.check_official(cfg)
        return cfg.method
    if not cfg.deep_overwrites_context and cfg.has_deep_prompts:
        raise ConfigError("deep_overwrites_context=False has no official checkpoint format "
                          "(the released learners let deep prompts overwrite the context)")
    if cfg.method == "glocalclip" and cfg.glocal and cfg.semantic and cfg.anomaly_position == "back":
        return "glocalclip"
    if cfg.method == "anomalyclip" and not cfg.glocal and not cfg.semantic \
            and cfg.normal_length == cfg.anomaly_length:
        return "anomalyclip"
    raise ConfigError(
        "only the released GlocalCLIP prompt learner (method glocalclip, glocal, semantic, position back) "
        "and AnomalyCLIP's (method anomalyclip, equal lengths, semantic off) have an official checkpoint "
        f"format; this config is method={cfg.method}, glocal={cfg.glocal}, semantic={cfg.semantic}, "
        f"anomaly_position={cfg.anomaly_position}"
    )


def official_state_dict(model: GlocalDetector) -> dict[str, torch.Tensor]:
    """The state dict the released prompt learner would hold with these prompt values."""
    flavour = official_flavour(model.cfg)
    learner = model.prompts
    assert isinstance(learner, LearnedPrompts)
    ctx_map, buf_map = (GLOCAL_CTX, GLOCAL_BUFFERS) if flavour == "glocalclip" else (ANOMALY_CTX, ANOMALY_BUFFERS)
    sd: dict[str, torch.Tensor] = {}
    for official, ours in ctx_map:
        sd[official] = learner.ctx[ours].detach().cpu().clone().reshape(1, 1, *learner.ctx[ours].shape)
    ids = learner.token_ids(model.cfg.class_name)
    with torch.no_grad():
        tok = model.clip.token_embedding(ids.to(model.device)).detach().cpu()
    for suffix, i in buf_map:
        k = learner.layouts[i].n_learnable  # reserved == 0 here (official_flavour checked it)
        sd[f"token_prefix_{suffix}"] = tok[i, :1].reshape(1, 1, 1, -1).clone()
        sd[f"token_suffix_{suffix}"] = tok[i, 1 + k :].reshape(1, 1, tok.shape[1] - 1 - k, -1).clone()
    for suffix, i in buf_map:
        sd[f"tokenized_prompts_{suffix}"] = ids[i].to(torch.int32).reshape(1, 1, -1).clone()
    if model.deep is not None:
        for j, t in enumerate(model.deep.tensors):
            sd[f"compound_prompts_text.{j}"] = t.detach().cpu().clone()
        for j, lin in enumerate(model.deep.unused_projections):
            sd[f"compound_prompt_projections.{j}.weight"] = lin.weight.detach().cpu().clone()
            sd[f"compound_prompt_projections.{j}.bias"] = lin.bias.detach().cpu().clone()
    return sd


def export_official(model: GlocalDetector, path: str | os.PathLike[str]) -> Path:
    """Write ``{"prompt_learner": state_dict}`` loadable by the released test.py (another method:
    the dict its detector's ``official_checkpoint`` hook gives)."""
    if _method_hooks(model) is not None:
        official_flavour(model.cfg)
        return atomic_save_torch(path, model.official_checkpoint())
    return atomic_save_torch(path, {"prompt_learner": official_state_dict(model)})


def _registered_hooks() -> list[Any]:
    """Detector classes of the registered non-ModelConfig methods that read an official format."""
    from ..config import METHOD_CONFIGS, detector_class

    out = []
    for cls in dict.fromkeys(METHOD_CONFIGS.values()):
        if cls is not ModelConfig:
            det = detector_class(cls())
            if hasattr(det, "recognises_official"):
                out.append(det)
    return out


def infer_official_config(state: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, Any]:
    """ModelConfig fields implied by an official state dict (method, lengths, deep depth/length)."""
    for hooks in _registered_hooks():
        if hooks.recognises_official(state):
            return hooks.official_config(state, source)
    deep = sorted(int(k.split(".")[1]) for k in state if k.startswith("compound_prompts_text."))
    out: dict[str, Any] = {"deep_depth": len(deep) + 1 if deep else 0}
    if deep:
        out["deep_length"] = int(state[f"compound_prompts_text.{deep[0]}"].shape[0])
    if "ctx_global_pos" in state:
        out.update(method="glocalclip", glocal=True, semantic=True, anomaly_position="back",
                   normal_length=int(state["ctx_global_pos"].shape[-2]),
                   anomaly_length=int(state["ctx_global_neg"].shape[-2]))
    elif "ctx_pos" in state:
        out.update(method="anomalyclip", glocal=False, semantic=False,
                   normal_length=int(state["ctx_pos"].shape[-2]),
                   anomaly_length=int(state["ctx_neg"].shape[-2]))
    else:
        raise WeightsError(f"{source}: neither GlocalCLIP (ctx_global_pos...) nor AnomalyCLIP (ctx_pos...) "
                           "prompt keys found")
    return out


def official_state(obj_or_path: Any, source: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """(prompt_learner state dict, source name) from a path or an already loaded object."""
    if isinstance(obj_or_path, (str, os.PathLike)):
        source = str(obj_or_path)
        obj = load_torch_file(obj_or_path)
    else:
        source, obj = source or "official checkpoint", obj_or_path
    if checkpoint_kind(obj) != "official":
        raise WeightsError(f"{source} is not an official checkpoint: expected a dict with a 'prompt_learner' "
                           "state dict, as the released train.py saves it")
    return obj.get("prompt_learner", obj), source


def import_official(model: GlocalDetector, obj_or_path: Any, source: str | None = None) -> None:
    """Load released GlocalCLIP / AnomalyCLIP prompts into ``model``.

    The context vectors, deep prompts and the unused projection layers are copied (the latter so a
    re-export is identical); the token buffers are ignored (recomputed from our backbone). Wrong
    keys or shapes raise WeightsError naming the file and the config to build instead.
    """
    hooks = _method_hooks(model)
    if hooks is not None:  # another method's format: its detector reads the whole file
        official_flavour(model.cfg)
        if isinstance(obj_or_path, (str, os.PathLike)):
            source, obj_or_path = str(obj_or_path), load_torch_file(obj_or_path)
        _, source = official_state(obj_or_path, source)
        model.load_official(obj_or_path, source)
        return
    state, source = official_state(obj_or_path, source)
    flavour = official_flavour(model.cfg)
    ctx_map = GLOCAL_CTX if flavour == "glocalclip" else ANOMALY_CTX
    learner = model.prompts
    assert isinstance(learner, LearnedPrompts)
    try:
        implied = infer_official_config(state, source)
    except WeightsError:
        raise WeightsError(f"{source}: no {flavour} prompt keys ({ctx_map[0][0]}...) found; keys: "
                           f"{sorted(state)[:8]}...") from None
    wanted = {k: getattr(model.cfg, k) for k in implied}
    if not model.cfg.has_deep_prompts:
        wanted["deep_depth"] = 0
    diff = {k: (implied[k], wanted[k]) for k in implied if implied[k] != wanted[k]}
    if diff:
        found = ", ".join(f"{k}: file {a!r} vs model {b!r}" for k, (a, b) in diff.items())
        fix = ", ".join(f"{k}={a!r}" for k, (a, _) in diff.items())
        raise WeightsError(f"{source}: checkpoint does not match the model config ({found}); "
                           f"build the model with {fix}")
    width = model.clip.ln_final.weight.shape[0]
    with torch.no_grad():
        for official, ours in ctx_map:
            t = state[official]
            if t.numel() != learner.ctx[ours].numel() or t.shape[-1] != width:
                raise WeightsError(f"{source}: {official} has shape {tuple(t.shape)}, the model expects "
                                   f"(1, 1, {learner.ctx[ours].shape[0]}, {width}) (text width of the backbone)")
            learner.ctx[ours].copy_(t.reshape(learner.ctx[ours].shape))
        if model.deep is not None:
            for j, p in enumerate(model.deep.tensors):
                _copy_checked(p, state, f"compound_prompts_text.{j}", source)
            for j, lin in enumerate(model.deep.unused_projections):
                for name in ("weight", "bias"):
                    key = f"compound_prompt_projections.{j}.{name}"
                    if key in state:  # optional: accept files saved without them
                        _copy_checked(getattr(lin, name), state, key, source)


def _copy_checked(dst: torch.Tensor, state: dict[str, torch.Tensor], key: str, source: str) -> None:
    if key not in state:
        raise WeightsError(f"{source}: key {key!r} missing from the prompt_learner state dict")
    src = state[key]
    if tuple(src.shape) != tuple(dst.shape):
        raise WeightsError(f"{source}: {key} has shape {tuple(src.shape)}, the model expects {tuple(dst.shape)}")
    dst.copy_(src.to(dst.dtype))
