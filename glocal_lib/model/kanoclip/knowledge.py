"""KAnoCLIP's knowledge file: the LLM and VQA descriptions its knowledge-driven prompt loss uses.

The paper (§2.2.1) asks GPT-3.5 for n = 5 descriptions of an abnormal image per category and a
vision-language model ("Llama3") for m = 1 description per training image. Neither can run here,
so the knowledge enters as a UTF-8 JSON file the user supplies (spec/kanoclip.md section 13)::

    {
      "format": "kanoclip-knowledge/v1",
      "llm": {"model": "...", "prompt": "Q: Describe what an abnormal image of {class} looks like?", "n": 5},
      "vqa": {"model": "...", "prompt": "Q: Identify anomalies in ... ({class}) ...", "m": 1},
      "classes": {"<dataset key>/<category>": {"descriptions": ["...", ...], "background": "unused"}},
      "images":  {"<dataset key>/<image_path>": ["..."]}
    }

``<dataset key>`` is the data manifest key (mvtec, visa, ...), ``<category>`` and ``<image_path>``
exactly as in the dataset index (image_path relative to the dataset root). "llm"/"vqa" record
provenance only. ``read_knowledge`` validates the file (format, encoding, types, empty strings),
``check_coverage`` checks it against a training index (every category needs a description; image
keys that match nothing are counted), ``standin_knowledge`` writes the deterministic templated
file of the smoke profile and ``KnowledgeEmbeddings`` holds the raw CLIP text features of Eq. 3,
computed once per (file SHA-256, frozen text tower).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from ...io import atomic_write_text, sha256_file
from ..prompts import tokenizer
from ..text import encode_prompts

FORMAT = "kanoclip-knowledge/v1"
LLM_PROMPT = "Q: Describe what an abnormal image of {class} looks like?"
VQA_PROMPT = ("Q: Identify anomalies in the input image of the specified class ({class}). Describe each "
              "anomaly's location, color, shape, size, and other characteristics.")
PAPER_N, PAPER_M = 5, 1
FIX = ("see the knowledge-file format in glocal_lib/model/kanoclip/knowledge.py (README: KAnoCLIP knowledge "
       "file), or train without a file: preset kanoclip-noknowledge or kanoclip-template-knowledge")
log = logging.getLogger(__name__)


class KnowledgeError(ConfigError):
    """A knowledge file that is missing, unreadable or does not fit the training data."""


@dataclass(frozen=True)
class Knowledge:
    """A validated knowledge file: class descriptions and per-image descriptions, by key."""

    path: str
    sha256: str
    classes: dict[str, tuple[str, ...]]  # "<dataset>/<category>" -> LLM descriptions
    images: dict[str, tuple[str, ...]]  # "<dataset>/<image_path>" -> VQA descriptions
    provenance: dict[str, Any] = field(default_factory=dict)

    def texts(self) -> list[str]:
        """Every distinct sentence, in a fixed order (what gets encoded)."""
        out = [t for d in self.classes.values() for t in d] + [t for d in self.images.values() for t in d]
        return list(dict.fromkeys(out))


def _strings(value: Any, where: str, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise KnowledgeError(f"{path}: {where} must be a non-empty list of description strings; {FIX}")
    for i, t in enumerate(value):
        if not isinstance(t, str):
            raise KnowledgeError(f"{path}: {where}[{i}] is {type(t).__name__}, not a string; {FIX}")
        if not t.strip():
            raise KnowledgeError(f"{path}: {where}[{i}] is an empty description; remove it or write the "
                                 "description the model gave")
    return tuple(value)


def read_knowledge(path: str | os.PathLike[str]) -> Knowledge:
    """Load and validate a knowledge file (structure only; ``check_coverage`` checks it against data)."""
    p = Path(path)
    if not p.is_file():
        raise KnowledgeError(f"knowledge file {p} does not exist; make it as the README's 'KAnoCLIP knowledge "
                             f"file' section says (or point knowledge_file / GLOCAL_KANOCLIP_KNOWLEDGE at it); "
                             f"or train without one: preset kanoclip-noknowledge or kanoclip-template-knowledge")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig" if raw.startswith(b"\xef\xbb\xbf") else "utf-8")
    except UnicodeDecodeError as err:
        raise KnowledgeError(f"{p} is not UTF-8 ({err.reason} at byte {err.start}); re-save it as UTF-8 "
                             "(e.g. iconv -f latin1 -t utf-8)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise KnowledgeError(f"{p} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                             f"fix the syntax there; {FIX}") from None
    if not isinstance(data, dict):
        raise KnowledgeError(f"{p}: expected a JSON object at the top level; {FIX}")
    if data.get("format") != FORMAT:
        raise KnowledgeError(f"{p}: 'format' is {data.get('format')!r}, expected {FORMAT!r}; {FIX}")
    classes_raw = data.get("classes")
    if not isinstance(classes_raw, dict) or not classes_raw:
        raise KnowledgeError(f"{p}: 'classes' must map '<dataset>/<category>' to "
                             f"{{'descriptions': [...]}}; {FIX}")
    classes: dict[str, tuple[str, ...]] = {}
    for key, entry in classes_raw.items():
        _check_key(key, "classes", p)
        if not isinstance(entry, dict) or "descriptions" not in entry:
            raise KnowledgeError(f"{p}: classes[{key!r}] must be an object with a 'descriptions' list; {FIX}")
        classes[key] = _strings(entry["descriptions"], f"classes[{key!r}].descriptions", str(p))
    images_raw = data.get("images", {}) or {}
    if not isinstance(images_raw, dict):
        raise KnowledgeError(f"{p}: 'images' must map '<dataset>/<image_path>' to a list of descriptions; {FIX}")
    images = {}
    for key, value in images_raw.items():
        _check_key(key, "images", p)
        images[key] = _strings(value, f"images[{key!r}]", str(p))
    prov = {k: data[k] for k in ("llm", "vqa") if isinstance(data.get(k), dict)}
    n = {len(v) for v in classes.values()}
    m = {len(v) for v in images.values()}
    if n != {PAPER_N} or (m and m != {PAPER_M}):
        log.info("%s: %s descriptions per class and %s per image (the paper used n = %d, m = %d)", p,
                 sorted(n), sorted(m) or [0], PAPER_N, PAPER_M)
    return Knowledge(str(p), sha256_file(p), classes, images, prov)


def _check_key(key: str, section: str, p: Path) -> None:
    if "/" not in key or not key.split("/", 1)[0] or not key.split("/", 1)[1]:
        raise KnowledgeError(f"{p}: {section} key {key!r} is not '<dataset key>/<name>' (e.g. 'mvtec/bottle'); {FIX}")


def class_key(dataset: str, category: str) -> str:
    return f"{dataset}/{category}"


def check_coverage(knowledge: Knowledge, dataset: str, categories: Iterable[str], image_paths: Iterable[str],
                   missing: str = "error") -> dict[str, int]:
    """Check the file against a training index; returns counts (missing classes, unmatched images...).

    A category without a class description is an error listing the keys to add (``missing="skip"``:
    a warning, and those images get L_KD = 0). Image keys of this dataset that match no index entry
    are counted and warned about (a renamed folder?).
    """
    cats = list(dict.fromkeys(categories))
    absent = [class_key(dataset, c) for c in cats if class_key(dataset, c) not in knowledge.classes]
    if absent and missing != "skip":
        raise KnowledgeError(f"knowledge file {knowledge.path} has no class descriptions for {absent}; add "
                             f"\"classes\": {{\"{absent[0]}\": {{\"descriptions\": [...]}}}} for each (keys are "
                             "'<dataset key>/<category>' as in the dataset index), or set knowledge_missing: skip "
                             "to train those categories without the knowledge loss")
    if absent:
        log.warning("knowledge file %s: no class descriptions for %s; their images get L_KD = 0",
                    knowledge.path, absent)
    wanted = {f"{dataset}/{p}" for p in image_paths}
    mine = [k for k in knowledge.images if k.startswith(f"{dataset}/")]
    unmatched = [k for k in mine if k not in wanted]
    if unmatched:
        log.warning("knowledge file %s: %d of %d %r image keys match no image of the index (e.g. %r)",
                    knowledge.path, len(unmatched), len(mine), dataset, unmatched[0])
    covered = sum(1 for k in wanted if k in knowledge.images)
    return {"missing_classes": len(absent), "unmatched_images": len(unmatched), "images_with_vqa": covered,
            "images": len(wanted)}


def tokenize_truncated(text: str, context_length: int = 77) -> tuple[torch.Tensor, bool]:
    """[SOS] bpe(text) [EOS] padded to ``context_length``; an over-long text keeps its EOS at the last
    position (position context_length - 1). Returns (ids (L,), truncated?)."""
    tok = tokenizer()
    body = tok.encode(text)
    truncated = len(body) > context_length - 2
    ids = [tok.sot_token_id, *body[: context_length - 2], tok.eot_token_id]
    out = torch.zeros(context_length, dtype=torch.long)
    out[: len(ids)] = torch.tensor(ids)
    return out, truncated


@torch.no_grad()
def encode_texts(clip: nn.Module, texts: Sequence[str], batch_size: int = 64) -> tuple[torch.Tensor, int]:
    """Raw (unnormalised) CLIP text features (T, D) of sentences, float32; and how many were truncated."""
    context = int(clip.positional_embedding.shape[0])
    device = clip.token_embedding.weight.device
    rows, n_trunc = [], 0
    for t in texts:
        ids, cut = tokenize_truncated(t, context)
        rows.append(ids)
        n_trunc += int(cut)
    if not rows:
        return torch.zeros(0, int(clip.text_projection.shape[-1])), 0
    ids = torch.stack(rows).to(device)
    out = [encode_prompts(clip, clip.token_embedding(chunk), chunk, None).float()
           for chunk in ids.split(batch_size)]
    return torch.cat(out), n_trunc


class KnowledgeEmbeddings:
    """Eq. 3's ingredients: per class the SUM and count of its LLM features, per image its VQA ones.

    w^k(b) = (sum_LLM(c_b) + sum_VQA(b)) / (N + M) per image (scope "image"), or with the VQA
    sentences of every image of the class pooled (scope "class"). Built once per (file SHA-256,
    tower) and shared: see ``knowledge_embeddings``.
    """

    def __init__(self, knowledge: Knowledge, clip: nn.Module) -> None:
        texts = knowledge.texts()
        feats, self.truncated = encode_texts(clip, texts)
        if self.truncated:
            log.info("knowledge file %s: %d of %d descriptions truncated to the text tower's context",
                     knowledge.path, self.truncated, len(texts))
        row = {t: i for i, t in enumerate(texts)}
        self.knowledge = knowledge
        self.dim = feats.shape[-1]

        def total(sentences: Sequence[str]) -> torch.Tensor:
            return feats[[row[t] for t in sentences]].sum(0)

        self.class_sum = {k: (total(v), len(v)) for k, v in knowledge.classes.items()}
        self.image_sum = {k: (total(v), len(v)) for k, v in knowledge.images.items()}
        pooled: dict[str, list[tuple[torch.Tensor, int]]] = {}
        for k, (s, n) in self.image_sum.items():
            dataset, rest = k.split("/", 1)
            pooled.setdefault(dataset, []).append((s, n))
        self._pooled_by_dataset = pooled
        self._class_pool: dict[str, tuple[torch.Tensor, int]] = {}

    def vector(self, dataset: str, category: str, image_path: str | None, scope: str = "image",
               index_images: Sequence[str] = ()) -> torch.Tensor | None:
        """w^k for one image (raw, (D,)), or None when its class has no description."""
        ck = class_key(dataset, category)
        if ck not in self.class_sum:
            return None
        s, n = self.class_sum[ck]
        if scope == "class":
            extra = self._class_pool.get(ck)
            if extra is None:
                parts = [self.image_sum[f"{dataset}/{p}"] for p in index_images if f"{dataset}/{p}" in self.image_sum]
                extra = (sum((t for t, _ in parts), torch.zeros(self.dim)), sum(c for _, c in parts))
                self._class_pool[ck] = extra
            s, n = s + extra[0], n + extra[1]
        elif image_path is not None and f"{dataset}/{image_path}" in self.image_sum:
            t, m = self.image_sum[f"{dataset}/{image_path}"]
            s, n = s + t, n + m
        return s / n


def knowledge_embeddings(knowledge: Knowledge, clip: nn.Module, tower_id: Any) -> KnowledgeEmbeddings:
    """The embeddings of a file for a frozen text tower, cached on the tower by (SHA-256, tower id)."""
    cache = clip.__dict__.setdefault("_kanoclip_knowledge", {})
    key = (knowledge.sha256, json.dumps(tower_id, sort_keys=True, default=str))
    if key not in cache:
        cache[key] = KnowledgeEmbeddings(knowledge, clip)
    return cache[key]


def template_knowledge(dataset: str, categories: Iterable[str], template: str, spaces: bool = True) -> Knowledge:
    """The ablation of §2.2: w^k = g(template(c)) per class (e.g. "a photo of an abnormal {}.")."""
    classes = {class_key(dataset, c): (template.format(c.replace("_", " ") if spaces else c),)
               for c in dict.fromkeys(categories)}
    return Knowledge(f"<template {template!r}>", "template:" + json.dumps([template, sorted(classes)]), classes, {})


# ---- the smoke profile's stand-in --------------------------------------------------------------
_LOOKS = ("inconsistent colours, such as faded or patchy areas", "a scratch or crack across its surface",
          "a hole, a tear or a missing piece", "contamination: a stain, dust or a foreign particle",
          "a bent, deformed or misaligned part", "rough or uneven texture where it should be smooth")
_WHERE = ("in the centre", "near the top left", "near the bottom right", "along the left edge",
          "along the upper border", "close to the lower edge")
_SIZE = ("small", "medium-sized", "large", "thin", "irregular", "round")


def standin_document(dataset: str, index_rows: Iterable[tuple[str, str, int]]) -> dict[str, Any]:
    """A deterministic, templated knowledge document for (image_path, category, label) rows.

    Stands in for the LLM/VQA answers so every KnPL code path runs offline (smoke profile); its
    sentences carry no knowledge. Five class sentences per category, one per image (anomalous
    images get a defect sentence, normal ones a plain one); the choice depends only on the names.
    """
    import zlib

    rows = sorted(index_rows)
    classes, images = {}, {}
    for cat in sorted({c for _, c, _ in rows}):
        name = cat.replace("_", " ")
        h = zlib.crc32(cat.encode())
        classes[class_key(dataset, cat)] = {"descriptions": [
            f"An abnormal image of {name} may show {_LOOKS[(h + i) % len(_LOOKS)]}." for i in range(PAPER_N)]}
    for path, cat, label in rows:
        name = cat.replace("_", " ")
        h = zlib.crc32(path.encode())
        if int(label):
            text = (f"The {name} has a {_SIZE[h % len(_SIZE)]} defect {_WHERE[(h >> 4) % len(_WHERE)]}: "
                    f"{_LOOKS[(h >> 8) % len(_LOOKS)]}.")
        else:
            text = f"The {name} shows no visible anomaly; its surface and shape look as expected."
        images[f"{dataset}/{path}"] = [text]
    return {"format": FORMAT,
            "llm": {"model": "stand-in (templated, no LLM)", "prompt": LLM_PROMPT, "n": PAPER_N},
            "vqa": {"model": "stand-in (templated, no VQA model)", "prompt": VQA_PROMPT, "m": PAPER_M},
            "classes": classes, "images": images}


def write_standin(path: str | os.PathLike[str], dataset: str, index_rows: Iterable[tuple[str, str, int]]) -> Path:
    """Write ``standin_document`` atomically (UTF-8, sorted keys: same rows give the same bytes)."""
    doc = standin_document(dataset, index_rows)
    return atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
