"""Text prompt learners: which token sequence each prompt is, and where learnable vectors go in it.

A learner turns the frozen CLIP token embedding into prompt embeddings (P, L, Wt) plus the token
ids (P, L) whose argmax marks each prompt's EOS. The token ids are those of a placeholder text
("G G ... G damaged object ."), as in the released code; only the placeholder positions are
replaced by learnable vectors (spec 3.1). One class covers GlocalCLIP (4 prompts, semantic
design, abnormal-token position), AnomalyCLIP (2 object-agnostic prompts) and CoOp (one shared
context + class name); ``FixedPrompts`` is zero-shot CLIP's hand-written templates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from .winclip import ensemble_sentences

_TOKENIZER: SimpleTokenizer | None = None


def tokenizer() -> SimpleTokenizer:
    """open_clip's BPE tokenizer (ships its vocabulary, works offline); built once."""
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = SimpleTokenizer()
    return _TOKENIZER


def tokenize(text: str, context_length: int = 77) -> torch.Tensor:
    """[SOS] bpe(text) [EOS] padded with 0 to ``context_length`` (LongTensor (L,)).

    Raises ConfigError instead of silently truncating: a truncated prompt would lose its EOS.
    """
    tok = tokenizer()
    ids = [tok.sot_token_id, *tok.encode(text), tok.eot_token_id]
    if len(ids) > context_length:
        raise ConfigError(
            f"prompt {text!r} needs {len(ids)} tokens but the text tower holds {context_length}; "
            "shorten the prompt lengths (normal_length/anomaly_length)"
        )
    out = torch.zeros(context_length, dtype=torch.long)
    out[: len(ids)] = torch.tensor(ids)
    return out


@dataclass(frozen=True)
class PromptLayout:
    """One prompt: its name, the state template, and its learnable slots in order.

    ``slots`` are (parameter name, start, stop) rows; together they fill token positions
    1..n_learnable right after SOS, in the listed order.
    """

    name: str
    state: str  # e.g. "{}" or "damaged {}"
    placeholder: str  # one-token word standing in for each learnable vector
    slots: tuple[tuple[str, int, int], ...]
    reserved: int = 0  # extra placeholder positions right after SOS kept for the deep prompts

    @property
    def n_learnable(self) -> int:
        return sum(stop - start for _, start, stop in self.slots)

    @property
    def first(self) -> int:
        """Position of the first learnable vector (1 = right after SOS, released)."""
        return 1 + self.reserved

    def text(self, class_name: str) -> str:
        words = [self.placeholder] * (self.reserved + self.n_learnable) + [self.state.format(class_name) + "."]
        return " ".join(words)


def glocal_layouts(cfg: ModelConfig) -> list[PromptLayout]:
    """Prompt layouts for the learnable methods, in the order of ``text_embeddings``.

    GlocalCLIP (glocal): global normal, global anomaly, local normal, local anomaly.
    Otherwise two prompts (normal, anomaly). With ``semantic`` the anomaly prompt re-uses its
    branch's normal context; ``anomaly_position`` puts the anomaly vectors after (back, released),
    before (front) or inside (middle: after the first n//2 normal vectors) the normal ones.
    """
    n, a = cfg.normal_length, cfg.anomaly_length
    reserved = 0 if (cfg.deep_overwrites_context or not cfg.has_deep_prompts) else cfg.deep_length
    if cfg.method == "glocalclip" and cfg.glocal:
        branches = [("global_", "G"), ("local_", "L")]
    elif cfg.method == "glocalclip":
        branches = [("", "G")]
    else:
        branches = [("", "X")]  # AnomalyCLIP / CoOp placeholder word
    layouts = []
    for prefix, word in branches:
        normal, anomaly = f"{prefix}normal", f"{prefix}anomaly"
        layouts.append(PromptLayout(normal, cfg.normal_state, word, ((normal, 0, n),), reserved))
        if not cfg.semantic:
            slots: tuple[tuple[str, int, int], ...] = ((anomaly, 0, a),)
        elif a == 0:
            slots = ((normal, 0, n),)
        elif cfg.anomaly_position == "back":
            slots = ((normal, 0, n), (anomaly, 0, a))
        elif cfg.anomaly_position == "front":
            slots = ((anomaly, 0, a), (normal, 0, n))
        else:
            h = n // 2
            slots = tuple(s for s in ((normal, 0, h), (anomaly, 0, a), (normal, h, n)) if s[2] > s[1])
        layouts.append(PromptLayout(anomaly, cfg.anomaly_state, word, slots, reserved))
    return layouts


class LearnedPrompts(nn.Module):
    """Learnable context vectors spliced into placeholder prompts (GlocalCLIP, AnomalyCLIP, CoOp).

    Parameters live in ``self.ctx`` (a ParameterDict of (length, Wt) tensors, init N(0, std)):
    ``global_normal, global_anomaly, local_normal, local_anomaly`` for GlocalCLIP, else
    ``normal, anomaly`` (CoOp: ``normal`` only, shared by both prompts).
    """

    def __init__(self, cfg: ModelConfig, width: int, context_length: int = 77,
                 generator: torch.Generator | None = None, layouts: Sequence[PromptLayout] | None = None) -> None:
        """``layouts`` None: ``glocal_layouts(cfg)``; another method passes its own (``cfg`` then only
        needs ``ctx_init_std`` and ``class_name``)."""
        super().__init__()
        self.cfg = cfg
        self.context_length = context_length
        self.layouts = list(layouts) if layouts is not None else glocal_layouts(cfg)
        lengths: dict[str, int] = {}
        for lay in self.layouts:
            for pname, _, stop in lay.slots:
                lengths[pname] = max(lengths.get(pname, 0), stop)
        self.ctx = nn.ParameterDict()
        for pname, length in lengths.items():  # insertion order = gn, ga, ln, la (released order)
            t = torch.empty(length, width)
            t.normal_(0.0, cfg.ctx_init_std, generator=generator)
            self.ctx[pname] = nn.Parameter(t)
        self._ids_cache: dict[str, torch.Tensor] = {}
        self.token_ids(cfg.class_name)  # fail at build time, not at the first forward

    @property
    def prompt_names(self) -> tuple[str, ...]:
        return tuple(lay.name for lay in self.layouts)

    def prompt_texts(self, class_name: str | None = None) -> list[str]:
        name = class_name or self.cfg.class_name
        return [lay.text(name) for lay in self.layouts]

    def token_ids(self, class_name: str | None = None) -> torch.Tensor:
        """(P, L) token ids of the placeholder prompts (cached per class name, on CPU)."""
        name = class_name or self.cfg.class_name
        if name not in self._ids_cache:
            rows = []
            word_ids = {}
            for lay in self.layouts:
                ids = tokenize(lay.text(name), self.context_length)
                if lay.placeholder not in word_ids:
                    word_ids[lay.placeholder] = tokenizer().encode(lay.placeholder)
                    if len(word_ids[lay.placeholder]) != 1:
                        raise ConfigError(f"placeholder {lay.placeholder!r} is not a single BPE token")
                k = lay.reserved + lay.n_learnable
                if not bool((ids[1 : 1 + k] == word_ids[lay.placeholder][0]).all()):
                    raise ConfigError(f"placeholder tokens of prompt {lay.name!r} merged with the text")
                rows.append(ids)
            self._ids_cache[name] = torch.stack(rows)
        return self._ids_cache[name]

    def forward(self, token_embedding: nn.Module, class_name: str | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings (P, L, Wt) and token ids (P, L) for one class name."""
        device = token_embedding.weight.device
        ids = self.token_ids(class_name).to(device)
        tok = token_embedding(ids)
        rows = []
        for i, lay in enumerate(self.layouts):
            pieces = [tok[i, : lay.first]]
            pieces += [self.ctx[pname][start:stop].to(tok.dtype) for pname, start, stop in lay.slots]
            pieces.append(tok[i, lay.first + lay.n_learnable :])
            rows.append(torch.cat(pieces, dim=0))
        return torch.stack(rows), ids


class FixedPrompts(nn.Module):
    """Zero-shot CLIP: hand-written templates, nothing learnable."""

    def __init__(self, templates: Sequence[str], class_name: str = "object",
                 context_length: int = 77) -> None:
        super().__init__()
        self.templates = tuple(templates)
        self.class_name = class_name
        self.context_length = context_length
        self._ids_cache: dict[str, torch.Tensor] = {}

    @property
    def prompt_names(self) -> tuple[str, ...]:
        return ("normal", "anomaly")

    def prompt_texts(self, class_name: str | None = None) -> list[str]:
        return [t.format(class_name or self.class_name) for t in self.templates]

    def token_ids(self, class_name: str | None = None) -> torch.Tensor:
        name = class_name or self.class_name
        if name not in self._ids_cache:
            self._ids_cache[name] = torch.stack(
                [tokenize(t, self.context_length) for t in self.prompt_texts(name)]
            )
        return self._ids_cache[name]

    def forward(self, token_embedding: nn.Module, class_name: str | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.token_ids(class_name).to(token_embedding.weight.device)
        return token_embedding(ids), ids


class PromptEnsemble(nn.Module):
    """WinCLIP's compositional prompt ensemble: many sentences per state, averaged after encoding.

    ``forward`` returns every sentence (normal states first); ``group_sizes`` says how many
    sentences belong to (normal, anomaly), for the caller to average their embeddings.
    ``ensemble`` names the state/template lists (``glocal_lib.model.winclip.ENSEMBLES``).
    """

    def __init__(self, class_name: str = "object", context_length: int = 77, ensemble: str = "released") -> None:
        super().__init__()
        self.class_name = class_name
        self.context_length = context_length
        self.ensemble = ensemble
        self._ids_cache: dict[str, torch.Tensor] = {}

    @property
    def prompt_names(self) -> tuple[str, ...]:
        return ("normal", "anomaly")

    @property
    def group_sizes(self) -> tuple[int, int]:
        normal, anomalous = ensemble_sentences("x", self.ensemble)
        return len(normal), len(anomalous)

    def prompt_texts(self, class_name: str | None = None) -> list[str]:
        normal, anomalous = ensemble_sentences(class_name or self.class_name, self.ensemble)
        return normal + anomalous

    def token_ids(self, class_name: str | None = None) -> torch.Tensor:
        name = class_name or self.class_name
        if name not in self._ids_cache:
            self._ids_cache[name] = torch.stack([tokenize(t, self.context_length) for t in self.prompt_texts(name)])
        return self._ids_cache[name]

    def forward(self, token_embedding: nn.Module, class_name: str | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.token_ids(class_name).to(token_embedding.weight.device)
        return token_embedding(ids), ids


def build_prompt_learner(cfg: ModelConfig, width: int, context_length: int = 77,
                         generator: torch.Generator | None = None
                         ) -> LearnedPrompts | FixedPrompts | PromptEnsemble:
    if cfg.method == "clip":
        return FixedPrompts(cfg.fixed_templates, cfg.class_name, context_length)
    if cfg.method == "winclip":
        return PromptEnsemble(cfg.class_name, context_length, cfg.ensemble)
    return LearnedPrompts(cfg, width, context_length, generator)
