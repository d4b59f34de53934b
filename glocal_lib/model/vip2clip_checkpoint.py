"""ViP2-CLIP's released checkpoint format both ways (spec 11): ``{"prompt_learner": ICA state dict,
"Zero_try": FGP state dict}`` as kim0806/ViP2-CLIP train.py saves it.

ICA keys: ``ctx_pos``, ``ctx_neg`` (n, Wt), ``cls_ctx`` (r, Wt), ``cls_prompter.bias`` (1, D),
``cls_prompter.fc.{i}.0.{weight,bias}`` (hidden, D), ``cls_prompter.fc.{i}.2.{weight,bias}`` (Wt,
hidden), and the persistent buffers ``token_{prefix,middle,suffix}_{pos,neg}`` (fixed token
embeddings) and ``tokenized_prompts_{pos,neg}`` (int32 ids). FGP keys: ``q_proj_pre``,
``k_proj_pre_1``, ``v_proj_pre_1``, ``proj_post_t`` as Conv1d (``.weight`` (D, D, 1), ``.bias``) and
the unused ``prompt_temp_l1``. Import copies the parameters (kernels squeezed) and ignores the buffers,
which are recomputed from our backbone, except that the normal prompt's state word is checked against
``normal_state_word_bug``; export writes everything, so the released strict ``load_state_dict`` accepts it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError, WeightsError
from ..vip2clip_config import Vip2ClipConfig
from .prompts import tokenize

if TYPE_CHECKING:
    from .vip2clip import Vip2ClipDetector

# (released FGP name, our AffineMap name)
FGP_NAMES = (("q_proj_pre", "q_proj"), ("k_proj_pre_1", "k_proj"), ("v_proj_pre_1", "v_proj"),
             ("proj_post_t", "out_proj"))
BUFFER_PREFIXES = ("token_prefix_", "token_middle_", "token_suffix_", "tokenized_prompts_")


def check_official(cfg: Vip2ClipConfig) -> None:
    """ConfigError unless the released ICA/FGP modules can hold this config's tensors."""
    bad = {k: getattr(cfg, k) for k, ok in (("use_ica", True), ("ica_bias", True), ("use_fgp", True),
                                             ("fgp_shared", True), ("fgp_bias", True)) if getattr(cfg, k) != ok}
    if bad:
        raise ConfigError(f"the released ViP2-CLIP checkpoint format has ICA with bias and one shared FGP with "
                          f"biases; this config has {bad}")


def implied_config(state: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    """Vip2ClipConfig fields an official ``prompt_learner`` state dict implies."""
    try:
        return {"method": "vip2clip", "n_ctx": int(state["ctx_pos"].shape[0]), "n_cls": int(state["cls_ctx"].shape[0]),
                "ica_hidden": int(state["cls_prompter.fc.0.0.weight"].shape[0])}
    except (KeyError, IndexError, AttributeError):
        raise WeightsError(f"{source}: not a ViP2-CLIP prompt learner (needs ctx_pos, cls_ctx, "
                           "cls_prompter.fc.0.0.weight)") from None


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().clone()


def official_checkpoint(model: Vip2ClipDetector) -> dict[str, dict[str, torch.Tensor]]:
    """The dict the released train.py would save with these values."""
    cfg = model.cfg
    check_official(cfg)
    ica, fgp = model.ica, model.fgp[0]
    n, eos = ica.n_ctx, ica.eos
    pl: dict[str, torch.Tensor] = {"cls_ctx": _cpu(ica.cls_ctx), "ctx_pos": _cpu(ica.ctx_pos),
                                   "ctx_neg": _cpu(ica.ctx_neg)}
    for i, side in enumerate(("pos", "neg")):
        fixed = ica.fixed[i : i + 1]
        pl[f"token_prefix_{side}"] = _cpu(fixed[:, :1])
        pl[f"token_middle_{side}"] = _cpu(fixed[:, n + 1 : n + 2])
        pl[f"token_suffix_{side}"] = _cpu(fixed[:, eos:])
    for i, side in enumerate(("pos", "neg")):
        pl[f"tokenized_prompts_{side}"] = _cpu(ica.token_ids[i : i + 1]).to(torch.int32)
    pl["cls_prompter.bias"] = _cpu(ica.bias)
    for i, h in enumerate(ica.meta_nets):
        for j, lin in ((0, h.fc1), (2, h.fc2)):
            pl[f"cls_prompter.fc.{i}.{j}.weight"] = _cpu(lin.weight)
            pl[f"cls_prompter.fc.{i}.{j}.bias"] = _cpu(lin.bias)
    zt: dict[str, torch.Tensor] = {}
    for theirs, ours in FGP_NAMES:
        m = getattr(fgp, ours)
        zt[f"{theirs}.weight"] = _cpu(m.weight).unsqueeze(-1)
        zt[f"{theirs}.bias"] = _cpu(m.bias)
    zt["prompt_temp_l1"] = _cpu(fgp.prompt_temp_l1)
    return {"prompt_learner": pl, "Zero_try": zt}


def _targets(model: Vip2ClipDetector) -> tuple[dict[str, torch.Tensor], dict[str, tuple[torch.Tensor, bool]]]:
    """(prompt_learner name -> our tensor, Zero_try name -> (our tensor, is a Conv1d kernel))."""
    ica, fgp = model.ica, model.fgp[0]
    pl = {"cls_ctx": ica.cls_ctx, "ctx_pos": ica.ctx_pos, "ctx_neg": ica.ctx_neg, "cls_prompter.bias": ica.bias}
    for i, h in enumerate(ica.meta_nets):
        for j, lin in ((0, h.fc1), (2, h.fc2)):
            pl[f"cls_prompter.fc.{i}.{j}.weight"] = lin.weight
            pl[f"cls_prompter.fc.{i}.{j}.bias"] = lin.bias
    zt = {"prompt_temp_l1": (fgp.prompt_temp_l1, False)}
    for theirs, ours in FGP_NAMES:
        zt[f"{theirs}.weight"] = (getattr(fgp, ours).weight, True)
        zt[f"{theirs}.bias"] = (getattr(fgp, ours).bias, False)
    return pl, zt


def _check_state_word(model: Vip2ClipDetector, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse a file whose normal prompt holds the other state word than the config says (when the
    stored embedding is recognisably one of the two words of this backbone)."""
    middle = state.get("token_middle_pos")
    cfg = model.cfg
    if middle is None or cfg.normal_state == cfg.anomaly_state:
        return
    tok = model.clip.token_embedding
    with torch.no_grad():
        emb = {w: tok(tokenize(w)[1:2].to(model.device))[0].cpu() for w in (cfg.normal_state, cfg.anomaly_state)}
    stored = middle.reshape(-1).float().cpu()
    found = [w for w, e in emb.items() if e.shape == stored.shape and torch.allclose(e, stored, atol=1e-6)]
    expected = cfg.anomaly_state if cfg.normal_state_word_bug else cfg.normal_state
    if found and found[0] != expected:
        raise ConfigError(f"{source}: its normal prompt holds the state word {found[0]!r}, but this config "
                          f"(normal_state_word_bug={cfg.normal_state_word_bug}) builds {expected!r}; build it with "
                          f"normal_state_word_bug={not cfg.normal_state_word_bug}")


def load_official(model: Vip2ClipDetector, obj: dict[str, Any], source: str) -> None:
    """Copy a released ``{"prompt_learner", "Zero_try"}`` checkpoint into ``model`` (strict)."""
    check_official(model.cfg)
    state, fgp_state = obj.get("prompt_learner"), obj.get("Zero_try")
    if not isinstance(state, dict) or not isinstance(fgp_state, dict):
        raise WeightsError(f"{source}: a ViP2-CLIP checkpoint holds 'prompt_learner' and 'Zero_try' state dicts "
                           f"(found keys {sorted(obj)})")
    pl, zt = _targets(model)
    for what, given, wanted in (("prompt_learner", state, set(pl)), ("Zero_try", fgp_state, set(zt))):
        extra = {k for k in given if not (what == "prompt_learner" and k.startswith(BUFFER_PREFIXES))}
        missing, unexpected = sorted(wanted - set(given)), sorted(extra - wanted)
        if missing or unexpected:
            raise WeightsError(f"{source}: {what} keys do not match this ViP2-CLIP config (missing {missing}, "
                               f"unexpected {unexpected}); is n_cls / the format right?")
    pairs = [(f"prompt_learner.{k}", state[k], t) for k, t in pl.items()]
    pairs += [(f"Zero_try.{k}", fgp_state[k].squeeze(-1) if conv else fgp_state[k], t) for k, (t, conv) in zt.items()]
    for name, value, target in pairs:
        if tuple(value.shape) != tuple(target.shape):
            raise WeightsError(f"{source}: {name} has shape {tuple(value.shape)}, this model expects "
                               f"{tuple(target.shape)} (another n_ctx / n_cls or backbone width?)")
    _check_state_word(model, state, source)
    with torch.no_grad():
        for _, value, target in pairs:
            target.copy_(value.to(dtype=target.dtype, device=target.device))
