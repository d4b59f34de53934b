"""Synthetic stand-ins for every dataset with a manifest, each written in that dataset's own on-disk layout.

None of the real datasets can be downloaded where this package is built and tested, yet most bugs in
this family of code live in dataset preparation (sort-order pairing, stray files, odd extensions, mask
encodings). So every converter, validator and the smoke profile run on stand-ins that copy each real
layout's quirks: folder and file names, extensions, grayscale or palette images, mask encodings
(0/255, 0/1, VisA's small integers, JPEG noise), missing `train/` or missing masks.

Images are drawn procedurally (textures and simple objects, numpy only) and anomalies get defects
(scratches, stains, holes, colour patches, cut-and-paste) whose mask is *exactly* the set of changed
pixels, so a model can learn them and pixel metrics on stand-ins mean something. Everything is
deterministic per (key, category, split, index, seed): the same call writes the same bytes.

Dataset facts (categories, counts, defect folders, folder names and extensions) are read from the
manifests (`data_manifests/*.yaml`); the per-layout quirks follow /work/shared/spec/datasets.md and the
released `generate_dataset_json/*.py`. A dataset added with a manifest of an existing converter
(`mvtec_style`, `images_masks`, `image_folders`) gets a stand-in from its manifest alone; a new
layout needs its own planner here (see `_plan_category`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from glocal_lib.data.registry import DATASETS, Manifest
from glocal_lib.errors import ConfigError, DataError
from glocal_lib.io import atomic_save_with, atomic_write_bytes, atomic_write_text

# --------------------------------------------------------------------------------------------------
# Dataset facts come from the manifests (categories, test counts, defect folders, layout parameters);
# this module adds only what a stand-in needs to look like the real files.
# --------------------------------------------------------------------------------------------------


def _even_split(total: int, n: int) -> list[int]:
    """Per-category counts where only a dataset total is known (DTD, DAGM): spread the remainder first."""
    base, rem = divmod(total, n)
    return [base + (1 if i < rem else 0) for i in range(n)]


def real_counts(key: str) -> dict[str, tuple[int, int]]:
    """Real test counts (normal, anomalous) per category from the dataset's manifest; where the manifest
    knows only the totals (DTD, DAGM: spec §6.1, §7.2) they are spread evenly over the categories."""
    m = _manifest(key)
    df = m.expected_counts()
    total_n, total_a = m.expected_totals()
    normal = _even_split(total_n, len(df)) if df["test_normal"].isna().any() else df["test_normal"].tolist()
    anomalous = _even_split(total_a, len(df)) if df["test_anomalous"].isna().any() else df["test_anomalous"].tolist()
    return {str(c): (int(n), int(a)) for c, n, a in zip(df["category"], normal, anomalous)}


def categories_of(key: str) -> tuple[str, ...]:
    """The dataset's categories (the released code's names), in manifest order."""
    return tuple(_manifest(key).categories)


def _manifest(key: str) -> Manifest:
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset key {key!r}; use one of {', '.join(DATASETS)}")
    return DATASETS[key]


def _defect_types(key: str, category: str) -> tuple[str, ...]:
    """The manifest's test/<defect>/ folder names of a category (``defect_types``), or one generic one."""
    table = _manifest(key).data.get("defect_types") or {}
    return tuple(table.get(category) or ("anomaly",))


# Empty `ko` masks in the real BTAD (spec §4.4, single third-party source): reproduced at float scales.
_BTAD_EMPTY_MASKS = {"01": 0, "02": 1, "03": 10}

_TRAIN_PER_CATEGORY = 2  # small `train/` splits: no converter or metric depends on their size
_DAGM_ROOT = "DAGM_KaggleUpload"

# --------------------------------------------------------------------------------------------------
# Public result types
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StandinFile:
    """One image written by the generator, with the truth a converter must reproduce."""

    image_path: str  # POSIX, relative to the dataset root
    mask_path: str  # "" when the layout has no mask for it
    category: str
    label: int  # 0 normal, 1 anomalous
    split: str  # "test" or "train"
    defect_type: str  # folder/defect name, "good" for normals
    empty_mask: bool = False  # BTAD quirk: anomalous, defect drawn, but the mask file is all zero


@dataclass(frozen=True)
class Sample:
    """A rendered image before encoding: `image` = `base` + defects, `mask` = where they differ."""

    image: np.ndarray  # uint8 (H, W, 3) or (H, W)
    base: np.ndarray  # the same image without defects
    mask: np.ndarray  # uint8 (H, W): 0 = unchanged, k >= 1 = changed by the k-th defect


@dataclass
class StandinResult:
    """What `generate_standin` wrote: counts per category, every file, and the dataset root."""

    key: str
    root: Path
    counts: pd.DataFrame
    files: list[StandinFile]
    seed: int
    image_size: int
    _plans: dict[str, _Plan] = field(default_factory=dict, repr=False)

    def render(self, file: StandinFile) -> Sample:
        """Re-render a written file in memory (exact arrays before JPEG/palette encoding)."""
        return _render(self._plans[file.image_path], self.seed, self.image_size)


# --------------------------------------------------------------------------------------------------
# Deterministic randomness
# --------------------------------------------------------------------------------------------------


def _rng(*parts: object) -> np.random.Generator:
    """A generator seeded by a stable hash of `parts` (never Python's salted `hash`)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


# --------------------------------------------------------------------------------------------------
# Procedural drawing (all vectorised numpy on small arrays)
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _interp_matrix(n: int, c: int, shift16: int) -> np.ndarray:
    """(n, c+1) smoothstep-bilinear weights sampling a lattice of c cells at n points, shifted by
    shift16/16 of a cell (quantised so the few distinct matrices are computed once)."""
    pos = np.linspace(0, c - 1, n, dtype=np.float32) + np.float32(shift16 / 16)
    i0 = np.minimum(pos.astype(int), c - 1)
    t = pos - i0
    t = t * t * (3 - 2 * t)
    m = np.zeros((n, c + 1), np.float32)
    rows = np.arange(n)
    m[rows, i0] = 1 - t
    m[rows, i0 + 1] += t
    m.flags.writeable = False
    return m


def _value_noise(rng: np.random.Generator, h: int, w: int, cells: int, octaves: int = 3) -> np.ndarray:
    """Smooth noise in [0, 1]: random lattices upsampled by two small matrix products, finer octaves weaker."""
    out = np.zeros((h, w), np.float32)
    total = 0.0
    for o in range(octaves):
        c = cells * 2**o
        grid = rng.random((c + 1, c + 1), dtype=np.float32)
        wy, wx = _interp_matrix(h, c, int(rng.integers(16))), _interp_matrix(w, c, int(rng.integers(16)))
        amp = 0.5**o
        out += amp * (wy @ grid @ wx.T)
        total += amp
    return out / total


@functools.lru_cache(maxsize=64)
def _coords_cached(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y.flags.writeable = False
    x.flags.writeable = False
    return y, x


def _coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return _coords_cached(h, w)


def _texture(kind: str, rng: np.random.Generator, h: int, w: int, p: dict[str, float]) -> np.ndarray:
    """A scalar field in [0, 1] for one texture family; `p` holds per-category parameters."""
    y, x = _coords(h, w)
    s = min(h, w)
    period = p["period"] * s
    ang = p["angle"] + rng.normal(0, 0.03)
    u = x * np.cos(ang) + y * np.sin(ang)
    v = -x * np.sin(ang) + y * np.cos(ang)
    phase = rng.random() * 2 * np.pi
    noise = _value_noise(rng, h, w, 4)
    if kind == "stripes":
        t = 0.5 + 0.5 * np.sin(2 * np.pi * u / period + phase)
        t = np.clip((t - 0.5) * p["sharp"] + 0.5, 0, 1)
        return 0.85 * t + 0.15 * noise
    if kind == "weave":
        cell = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(bool)
        fu = np.sin(np.pi * (u % period) / period)
        fv = np.sin(np.pi * (v % period) / period)
        return np.clip(np.where(cell, fu, fv) * 0.8 + 0.2 * noise, 0, 1)
    if kind == "grid":
        off = rng.random(2) * period
        t_line = p["sharp"] * 0.15 * period
        on = ((u + off[0]) % period < t_line) | ((v + off[1]) % period < t_line)
        return np.where(on, 0.9, 0.15) + 0.1 * noise
    if kind == "gradient":
        ramp = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
        r2 = ((x - w / 2) ** 2 + (y - h / 2) ** 2) / (0.5 * s) ** 2
        return np.clip(0.6 * ramp + 0.4 * noise - 0.25 * r2, 0, 1)
    if kind == "marble":
        return 0.5 + 0.5 * np.sin(2 * np.pi * u / period + phase + 6 * noise)
    if kind == "perforated":
        off = rng.random(2) * period
        du = (u + off[0]) % period - period / 2
        dv = (v + off[1]) % period - period / 2
        hole = du**2 + dv**2 < (0.28 * period) ** 2
        return np.where(hole, 0.1, 0.8 + 0.15 * noise)
    if kind == "fibrous":
        wob = _value_noise(rng, h, w, 2, octaves=1)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * u / period + 8 * wob + phase)
        return 0.6 * t + 0.4 * _value_noise(rng, h, w, 8, octaves=2)
    if kind == "blotchy":
        b = _value_noise(rng, h, w, 3, octaves=2)
        return np.clip((b - 0.5) * 3 + 0.5, 0, 1) * 0.85 + 0.15 * noise
    if kind == "mucosa":  # endoscopy: smooth shading, a faint network of vessels, a mild vignette
        r2 = ((x - w / 2) ** 2 + (y - h / 2) ** 2) / (0.5 * s) ** 2
        vessels = np.abs(_value_noise(rng, h, w, 6, octaves=2) - 0.5) < 0.02
        return np.clip(0.55 + 0.5 * (noise - 0.5) - 0.1 * r2 - 0.12 * vessels, 0, 1)
    if kind == "speckle":
        return np.clip(0.5 * noise + 0.5 * rng.random((h, w)).astype(np.float32) ** 2, 0, 1)
    # "noise" (leather, matted, generic)
    return _value_noise(rng, h, w, int(p["cells"]), octaves=3)


@dataclass(frozen=True)
class _Style:
    """How one category looks: a background texture and optionally objects on it."""

    texture: str
    params: tuple[tuple[str, float], ...]
    c0: tuple[float, ...]
    c1: tuple[float, ...]
    gray: bool
    obj: str = ""  # "", "disc", "ring", "rect", "ellipse"
    obj_count: int = 1
    obj_size: float = 0.3  # radius (fraction of the short side)
    obj_aspect: float = 1.0
    obj_color: tuple[float, ...] = (0.0, 0.0, 0.0)


# (key, category) -> (texture, object, object count, object size, aspect, gray); colours are random.
# fmt: off
_TEXTURE_FOR = {
    "Woven": "weave", "Stratified": "stripes", "Blotchy": "blotchy", "Marbled": "marble",
    "Perforated": "perforated", "Mesh": "grid", "Fibrous": "fibrous", "Matted": "noise",
}
_MVTEC_LOOK = {
    "bottle": ("noise", "ring", 1, 0.36, 1.0), "cable": ("noise", "disc", 3, 0.16, 1.0),
    "capsule": ("gradient", "ellipse", 1, 0.38, 0.35), "carpet": ("weave", "", 1, 0, 1),
    "grid": ("grid", "", 1, 0, 1), "hazelnut": ("noise", "disc", 1, 0.32, 1.0),
    "leather": ("noise", "", 1, 0, 1), "metal_nut": ("noise", "ring", 1, 0.3, 1.0),
    "pill": ("gradient", "ellipse", 1, 0.38, 0.5), "screw": ("noise", "rect", 1, 0.36, 0.18),
    "tile": ("blotchy", "", 1, 0, 1), "toothbrush": ("gradient", "rect", 1, 0.4, 0.3),
    "transistor": ("noise", "rect", 1, 0.25, 0.8), "wood": ("marble", "", 1, 0, 1),
    "zipper": ("stripes", "rect", 1, 0.42, 0.25),
}
_VISA_LOOK = {
    "candle": ("disc", 4, 0.16, 1.0), "capsules": ("ellipse", 5, 0.12, 0.5),
    "cashew": ("ellipse", 1, 0.32, 0.6), "chewinggum": ("rect", 1, 0.3, 0.7),
    "fryum": ("ring", 1, 0.32, 1.0), "macaroni1": ("ring", 4, 0.14, 1.0), "macaroni2": ("ring", 4, 0.14, 1.0),
    "pcb1": ("rect", 1, 0.36, 0.7), "pcb2": ("rect", 1, 0.36, 0.7), "pcb3": ("rect", 1, 0.36, 0.7),
    "pcb4": ("rect", 1, 0.36, 0.7), "pipe_fryum": ("rect", 1, 0.32, 0.4),
}
_MPDD_LOOK = {
    "bracket_black": ("rect", 2, 0.22, 0.35), "bracket_brown": ("rect", 2, 0.22, 0.35),
    "bracket_white": ("rect", 2, 0.22, 0.35), "connector": ("rect", 1, 0.3, 0.6),
    "metal_plate": ("rect", 1, 0.42, 0.8), "tubes": ("rect", 3, 0.3, 0.15),
}
_MPDD_BRACKET_COLOUR = {
    "bracket_black": (38.0, 38.0, 42.0), "bracket_brown": (125.0, 80.0, 45.0), "bracket_white": (228.0, 228.0, 222.0),
}
_GRAY_MVTEC = {"grid", "screw", "zipper"}
# fmt: on


def _look(key: str, category: str) -> tuple[str, str, int, float, float, bool]:
    """(texture, object, count, size, aspect, gray) of a category, chosen to resemble the real one."""
    if key == "mvtec":
        t, o, n, sz, a = _MVTEC_LOOK[category]
        return t, o, n, sz, a, category in _GRAY_MVTEC
    if key == "visa":
        return ("noise", *_VISA_LOOK[category], False)
    if key == "mpdd":
        return ("noise", *_MPDD_LOOK[category], False)
    if key == "btad":
        return {
            "01": ("noise", "disc", 1, 0.36, 1.0, False),
            "02": ("fibrous", "", 1, 0, 1, False),
            "03": ("stripes", "", 1, 0, 1, False),
        }[category]
    if key == "sdd":
        return "stripes", "", 1, 0, 1, True
    if key == "dtd":
        return _TEXTURE_FOR[category.split("_")[0]], "", 1, 0, 1, False
    if key in {"headct", "brainmri", "br35h"}:
        return "noise", "ring", 1, 0.4, 0.85, key == "headct"
    if key == "covid19":
        return "gradient", "ellipse", 2, 0.24, 0.55, True
    if key == "isic":
        return "noise", "", 1, 0, 1, False
    if key in {"colondb", "clinicdb", "kvasir", "endo"}:
        return "mucosa", "", 1, 0, 1, False
    if key == "tn3k":
        return "speckle", "", 1, 0, 1, True
    if key == "dagm":
        kinds = (
            "noise",
            "stripes",
            "fibrous",
            "blotchy",
            "grid",
            "marble",
            "speckle",
            "weave",
            "noise",
            "perforated",
        )
        return kinds[int(category[5:]) - 1], "", 1, 0, 1, True
    if _manifest(key).domain == "medical":  # a dataset added by its manifest alone: a generic look
        return "gradient", "ellipse", 1, 0.3, 0.8, False
    return "noise", "disc", 1, 0.32, 1.0, False


# fmt: off
_MEDICAL_COLOURS = {
    "isic": ((200, 150, 125), (225, 180, 155)),
    "colondb": ((150, 60, 50), (230, 140, 120)), "clinicdb": ((150, 60, 50), (230, 140, 120)),
    "kvasir": ((150, 60, 50), (230, 140, 120)), "endo": ((150, 60, 50), (230, 140, 120)),
    "brainmri": ((10, 10, 10), (60, 60, 60)), "br35h": ((10, 10, 10), (60, 60, 60)),
}
# fmt: on


@functools.lru_cache(maxsize=256)
def _style(key: str, category: str, seed: int) -> _Style:
    texture, obj, count, size, aspect, gray = _look(key, category)
    rng = _rng("style", key, category, seed)
    params = {
        "period": float(rng.uniform(0.08, 0.16)),
        "angle": float(rng.choice([0.0, np.pi / 2, rng.uniform(0, np.pi)])),
        "sharp": float(rng.uniform(1.0, 3.0)),
        "cells": float(rng.integers(3, 7)),
    }
    if key == "sdd":
        params["angle"] = 0.0  # vertical commutator bars
    if key in _MEDICAL_COLOURS:
        c0, c1 = (tuple(float(v) for v in c) for c in _MEDICAL_COLOURS[key])
    else:
        hue = rng.random(3) * 255
        c0 = tuple(float(v) for v in np.clip(hue * 0.45 + rng.uniform(10, 50), 0, 255))
        c1 = tuple(float(v) for v in np.clip(hue * 0.4 + rng.uniform(120, 160), 0, 255))
    if key in {"headct", "brainmri", "br35h", "covid19"}:
        c0, c1 = (8.0, 8.0, 8.0), (50.0, 50.0, 50.0)
        if key == "covid19":
            c0, c1 = (120.0, 120.0, 120.0), (200.0, 200.0, 200.0)
    obj_color = tuple(float(v) for v in rng.uniform(60, 230, 3))
    if key in {"headct", "brainmri", "br35h"}:
        obj_color = (150.0, 150.0, 150.0)
    if key == "covid19":
        obj_color = (40.0, 40.0, 40.0)
    if key == "mpdd" and category in _MPDD_BRACKET_COLOUR:  # the name says the colour (a random one
        obj_color = _MPDD_BRACKET_COLOUR[category]         # made "white" pink, and defects hid on it)
    return _Style(texture, tuple(sorted(params.items())), c0, c1, gray, obj, count, size, aspect, obj_color)


def _object_mask(
    kind: str, h: int, w: int, cx: float, cy: float, r: float, aspect: float, ang: float
) -> np.ndarray:
    y, x = _coords(h, w)
    u = (x - cx) * np.cos(ang) + (y - cy) * np.sin(ang)
    v = -(x - cx) * np.sin(ang) + (y - cy) * np.cos(ang)
    if kind == "rect":
        return (np.abs(u) < r) & (np.abs(v) < r * aspect)
    if kind == "ellipse":
        return (u / r) ** 2 + (v / (r * aspect)) ** 2 < 1
    rr = u**2 + (v / aspect) ** 2
    if kind == "ring":
        return (rr < r**2) & (rr > (0.55 * r) ** 2)
    return rr < r**2  # disc


def _draw_normal(style: _Style, rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A defect-free image and its foreground mask (where defects should preferably land)."""
    params = dict(style.params)
    t = _texture(style.texture, rng, h, w, params)
    c0, c1 = np.array(style.c0, np.float32), np.array(style.c1, np.float32)
    img = c0 + (c1 - c0) * t[..., None]
    fg = np.zeros((h, w), bool)
    s = min(h, w)
    if style.obj:
        n = style.obj_count
        cols = int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / cols))
        shade = 0.8 + 0.3 * _value_noise(rng, h, w, 3, octaves=2)
        colour = np.array(style.obj_color, np.float32) * rng.uniform(0.93, 1.07)
        for i in range(n):
            gy, gx = divmod(i, cols)
            cy = (gy + 0.5) / rows * h + rng.normal(0, 0.02 * s)
            cx = (gx + 0.5) / cols * w + rng.normal(0, 0.02 * s)
            if n == 2:  # side by side (lungs, bracket arms)
                cy, cx = h / 2 + rng.normal(0, 0.02 * s), (0.3 + 0.4 * i) * w
            r = style.obj_size * s * rng.uniform(0.95, 1.05)
            ang = (np.pi / 2 if n == 3 else 0.0) + rng.normal(0, 0.08)
            m = _object_mask(style.obj, h, w, cx, cy, r, style.obj_aspect, ang)
            fg |= m
        img = np.where(fg[..., None], colour * shade[..., None], img)
    else:
        fg[:] = True
    img = img * rng.uniform(0.96, 1.04) + rng.normal(0, 2.0, (h, w, 1)).astype(np.float32)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if style.gray:
        img = np.rint(img @ np.array([0.299, 0.587, 0.114], np.float32)).clip(0, 255).astype(np.uint8)
    return img, fg


# --------------------------------------------------------------------------------------------------
# Defects: each returns a modified copy; the mask is computed afterwards as "pixels that differ".
# --------------------------------------------------------------------------------------------------

_DEFECT_KINDS = ("scratch", "stain", "hole", "colour", "cutpaste")
# fmt: off
_KEYWORDS = (
    ("scratch", ("scratch", "thread", "cut", "crack", "bent", "broken", "split", "wire", "lead")),
    ("hole", ("hole", "poke", "missing")),
    ("colour", ("color", "colour", "print", "imprint", "stroke", "painting")),
    ("stain", ("contamination", "glue", "oil", "liquid", "rust", "stain")),
    ("cutpaste", ("swap", "misplaced", "flip", "mismatch", "combined", "type", "fabric", "squeeze",
                  "fold", "rough", "teeth", "manipulated", "damaged")),
)
# fmt: on


def _defect_kind(key: str, defect_type: str, rng: np.random.Generator) -> str:
    """Pick a defect that matches the real defect name where the name says what it is."""
    name = defect_type.lower()
    for kind, words in _KEYWORDS:
        if any(w in name for w in words):
            return kind
    if key in {"colondb", "clinicdb", "kvasir", "endo"}:
        return "polyp"
    if key == "isic":
        return "stain"
    if key == "tn3k":
        return "nodule"
    if key in {"headct", "brainmri", "br35h", "covid19"}:
        return str(rng.choice(["stain", "hole"]))
    return str(rng.choice(_DEFECT_KINDS))


def _far_colour(candidates: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The candidate colour farthest from `ref` (so a defect always contrasts with what it covers)."""
    d = np.abs(candidates - ref).sum(-1)
    return candidates[int(np.argmax(d))]


def _blob(rng: np.random.Generator, h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    """Irregular blob in [0, 1] (alpha), zero outside: an ellipse with a noisy border."""
    y, x = _coords(h, w)
    ang = rng.uniform(0, np.pi)
    a, b = r, r * rng.uniform(0.5, 1.0)
    u = (x - cx) * np.cos(ang) + (y - cy) * np.sin(ang)
    v = -(x - cx) * np.sin(ang) + (y - cy) * np.cos(ang)
    d = (u / a) ** 2 + (v / b) ** 2 + 0.6 * (_value_noise(rng, h, w, 4, octaves=2) - 0.5)
    alpha = np.clip(1.6 * (1 - d), 0, 1)
    return np.where(alpha > 0.2, alpha, 0).astype(np.float32)


def _apply_defect(kind: str, img: np.ndarray, fg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    f = img.astype(np.float32).reshape(h, w, -1)
    gray = img.ndim == 2 or bool((f.max(-1) == f.min(-1)).all())  # grey-looking RGB (MRI): grey defects
    ys, xs = np.nonzero(fg)
    k = int(rng.integers(len(ys)))
    cy = float(np.clip(ys[k], 0.12 * h, 0.88 * h))
    cx = float(np.clip(xs[k], 0.12 * w, 0.88 * w))
    out = f.copy()
    if kind == "scratch":
        length = rng.uniform(0.3, 0.55) * s
        ang = rng.uniform(0, np.pi)
        bend = rng.uniform(-0.15, 0.15) * length
        t = np.linspace(-0.5, 0.5, int(4 * length) + 2, dtype=np.float32)
        py = cy + t * length * np.sin(ang) + np.cos(np.pi * t) * bend * np.cos(ang)
        px = cx + t * length * np.cos(ang) - np.cos(np.pi * t) * bend * np.sin(ang)
        thick = max(1, round(s / 64))
        line = np.zeros((h, w), bool)
        for dy in range(thick):
            for dx in range(thick):
                iy = np.clip(np.rint(py).astype(int) + dy, 0, h - 1)
                ix = np.clip(np.rint(px).astype(int) + dx, 0, w - 1)
                line[iy, ix] = True
        ref = f[line].mean(0)
        colour = _far_colour(np.array([[245.0, 245, 235], [15, 15, 20]])[:, : f.shape[2]], ref)
        out[line] = colour
    elif kind in {"stain", "colour"}:
        alpha = _blob(rng, h, w, cy, cx, rng.uniform(0.08, 0.16) * s)[..., None]
        inside = alpha[..., 0] > 0
        ref = f[inside].mean(0) if inside.any() else f.mean((0, 1))
        if kind == "stain":
            cands = np.array([[90.0, 50, 20], [40, 110, 40], [170, 30, 30], [30, 40, 140], [230, 220, 90]])
        else:
            cands = np.array([[250.0, 60, 200], [40, 220, 240], [250, 160, 20], [20, 20, 200]])
        if gray:
            cands = np.array([[20.0, 20, 20], [235, 235, 235]])
        colour = _far_colour(cands[:, : f.shape[2]], ref)
        if kind == "colour":
            alpha = np.where(alpha > 0, 0.85, 0).astype(np.float32)
        out = (1 - alpha) * f + alpha * colour
    elif kind == "hole":
        r = rng.uniform(0.05, 0.1) * s
        y, x = _coords(h, w)
        d2 = ((y - cy) ** 2 + (x - cx) ** 2) / r**2
        disc = d2 < 1
        ref = f[disc].mean(0) if disc.any() else f.mean((0, 1))
        colour = _far_colour(np.array([[12.0, 10, 10], [240, 240, 240]])[:, : f.shape[2]], ref)
        out[disc] = colour + (0.25 * d2[disc, None] * (ref - colour))
    elif kind == "nodule":  # hypoechoic, as thyroid nodules are: the tissue's own speckle, darker
        alpha = _blob(rng, h, w, cy, cx, rng.uniform(0.1, 0.18) * s)[..., None]
        out = f * (1 - 0.6 * alpha)
    elif kind == "polyp":  # a raised bump of the mucosa's own colour: shaded as a lit dome, grainier, one glint
        r = rng.uniform(0.1, 0.2) * s
        alpha = _blob(rng, h, w, cy, cx, r)[..., None]
        y, x = _coords(h, w)
        ang = rng.uniform(0, 2 * np.pi)
        lit = np.clip(((x - cx) * np.cos(ang) + (y - cy) * np.sin(ang)) / r, -1, 1)
        shade = 0.78 + 0.2 * lit + 0.25 * (_value_noise(rng, h, w, 16, octaves=2) - 0.5)
        gy, gx = cy + 0.45 * r * np.sin(ang), cx + 0.45 * r * np.cos(ang)
        glint = np.exp(-((y - gy) ** 2 + (x - gx) ** 2) / (0.15 * r) ** 2)[..., None]
        bump = f * shade[..., None] + 0.85 * glint * (255 - f)
        out = (1 - alpha) * f + alpha * bump
    else:  # cutpaste: a rotated, flipped and re-lit patch taken from elsewhere in the image
        ph = pw = max(4, int(rng.uniform(0.16, 0.26) * s))
        sy = int(rng.integers(0, h - ph + 1))
        sx = int(rng.integers(0, w - pw + 1))
        patch = np.rot90(f[sy : sy + ph, sx : sx + pw], k=1)[:, ::-1]
        gain = 1.45 if patch.mean() < 128 else 0.55
        patch = np.clip(patch * gain + (20 if gain > 1 else -20), 0, 255)
        ty = int(np.clip(cy - ph / 2, 0, h - ph))
        tx = int(np.clip(cx - pw / 2, 0, w - pw))
        out[ty : ty + ph, tx : tx + pw] = patch
    res = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return res[..., 0] if img.ndim == 2 else res


@dataclass(frozen=True)
class _Plan:
    """Everything needed to render and encode one file (kept to re-render it in tests)."""

    key: str
    file: StandinFile
    uid: str  # identity for the random stream
    hw: tuple[int, int]
    image_mode: str  # "RGB", "L", "P" or "RGBA" on disk
    n_defects: int
    mask_values: str  # "255", "1" or "ids" (VisA: 1..3)
    mask_mode: str  # "L" or "RGB"


def _render(plan: _Plan, seed: int, image_size: int) -> Sample:
    key, f = plan.key, plan.file
    style = _style(key, f.category, seed)
    h, w = plan.hw
    rng = _rng("img", key, f.category, plan.uid, seed, image_size)
    base, fg = _draw_normal(style, rng, h, w)
    img = base
    mask = np.zeros((h, w), np.uint8)
    if f.label == 1:
        for d in range(plan.n_defects):
            for attempt in range(8):  # a defect that changes (almost) nothing is redrawn elsewhere
                kind = _defect_kind(key, f.defect_type if d == 0 else "", rng)
                new = _apply_defect(kind, img, fg, rng)
                changed = new != img if new.ndim == 2 else (new != img).any(-1)
                if changed.sum() >= max(6, (h * w) // 400) or attempt == 7:
                    break
            mask[changed] = d + 1
            img = new
        diff = img != base if img.ndim == 2 else (img != base).any(-1)
        mask = np.where(diff, mask, 0).astype(np.uint8)  # exact: changed-then-restored pixels drop out
    return Sample(image=img, base=base, mask=mask)


# --------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------


def _encode(arr: np.ndarray, path: str, mode: str, quality: int) -> bytes:
    ext = path.rsplit(".", 1)[-1].lower()
    if mode == "L" and arr.ndim == 3:
        arr = np.rint(arr @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    if mode != "L" and arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    im = Image.fromarray(arr)
    if mode == "P":
        im = im.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    elif mode == "RGBA":
        im = im.convert("RGBA")
    buf = io.BytesIO()
    if ext in {"jpg", "jpeg"}:
        im.save(buf, format="JPEG", quality=quality)
    elif ext == "bmp":
        im.save(buf, format="BMP")
    elif ext in {"tif", "tiff"}:
        im.save(buf, format="TIFF")
    else:
        im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _mask_array(sample: Sample, plan: _Plan) -> np.ndarray:
    if plan.file.empty_mask:
        return np.zeros_like(sample.mask)
    if plan.mask_values == "ids":
        return np.where(sample.mask > 0, (sample.mask - 1) % 3 + 1, 0).astype(np.uint8)
    fg = 1 if plan.mask_values == "1" else 255
    return np.where(sample.mask > 0, fg, 0).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Layout planners: each returns the files of one category (in write order) for its dataset.
# --------------------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    key: str
    category: str
    n_normal: int
    n_anom: int
    n_train: int
    n_empty: int
    image_size: int
    seed: int
    style_gray: bool



def _plan_image_level(ctx: _Ctx, normal_fmt: str, normal_first: int, anom_fmt: str, anom_first: int,
                      anom_defect: str) -> list[_Plan]:
    """Image-level medical layouts: one folder of normal and one of anomalous images, no masks."""
    plans = [_plan(ctx, normal_fmt.format(normal_first + i), "", 0, "test", "good", f"good{i}")
             for i in range(ctx.n_normal)]
    plans += [_plan(ctx, anom_fmt.format(anom_first + i), "", 1, "test", anom_defect, f"anom{i}")
              for i in range(ctx.n_anom)]
    return plans

def _size(ctx: _Ctx, uid: str) -> tuple[int, int]:
    """Image (H, W): square by default, real aspect ratios or varying sizes where the real set has them."""
    s = ctx.image_size
    k = ctx.key
    if k == "visa":
        return s, round(s * 1.5)
    if k == "sdd":
        return round(s * 1.25), s
    if k == "clinicdb":
        return round(s * 0.75), s
    if k == "colondb":
        return round(s * 500 / 574), s
    if k in {"isic", "kvasir", "tn3k", "brainmri", "br35h", "headct", "endo"}:
        r = _rng("size", k, ctx.category, uid, ctx.seed)
        step = max(2, s // 8)
        return s + step * int(r.integers(-1, 3)), s + step * int(r.integers(-1, 3))
    return s, s


def _plan(
    ctx: _Ctx,
    image_path: str,
    mask_path: str,
    label: int,
    split: str,
    defect: str,
    uid: str,
    *,
    mode: str | None = None,
    mask_values: str = "255",
    mask_mode: str = "L",
    n_defects: int = 1,
    empty: bool = False,
) -> _Plan:
    f = StandinFile(image_path, mask_path, ctx.category, label, split, defect, empty)
    image_mode = mode or ("L" if ctx.style_gray else "RGB")
    return _Plan(ctx.key, f, uid, _size(ctx, uid), image_mode, n_defects, mask_values, mask_mode)


def _spread(n: int, defects: Sequence[str]) -> list[str]:
    """Defect folder of each anomalous image: round-robin, so tiny sets still see several folders."""
    return [defects[i % len(defects)] for i in range(n)]


def _plan_mvtec_like(
    ctx: _Ctx,
    *,
    good: str,
    defects: Sequence[str],
    img_ext: str,
    mask_ext: str,
    mask_suffix: str,
    mask_values: str = "255",
    digits: int = 3,
    train: bool = True,
    mask_dir: str = "ground_truth",
) -> list[_Plan]:
    c = ctx.category
    plans = []
    if train:
        for i in range(ctx.n_train):
            name = f"{i:0{digits}d}.{img_ext}"
            plans.append(_plan(ctx, f"{c}/train/{good}/{name}", "", 0, "train", "good", f"train{i}"))
    for i in range(ctx.n_normal):
        name = f"{i:0{digits}d}.{img_ext}"
        plans.append(_plan(ctx, f"{c}/test/{good}/{name}", "", 0, "test", "good", f"good{i}"))
    per_defect: dict[str, int] = {}
    assigned = _spread(ctx.n_anom, defects)
    for i, d in enumerate(assigned):
        j = per_defect[d] = per_defect.get(d, -1) + 1
        stem = f"{j:0{digits}d}"
        empty = i >= ctx.n_anom - ctx.n_empty
        plans.append(
            _plan(
                ctx,
                f"{c}/test/{d}/{stem}.{img_ext}",
                f"{c}/{mask_dir}/{d}/{stem}{mask_suffix}.{mask_ext}",
                1,
                "test",
                d,
                f"anom{i}",
                mask_values=mask_values,
                empty=empty,
            )
        )
    return plans


def _plan_category(ctx: _Ctx) -> list[_Plan]:
    k, c = ctx.key, ctx.category
    if k in {"mvtec", "mpdd"}:
        return _plan_mvtec_like(
            ctx, good="good", defects=_defect_types(k, c), img_ext="png", mask_ext="png", mask_suffix="_mask"
        )
    if k == "dtd":
        return _plan_mvtec_like(
            ctx, good="good", defects=("bad",), img_ext="png", mask_ext="png", mask_suffix="_mask"
        )
    if k == "btad":
        img_ext, mask_ext, values = {
            "01": ("bmp", "png", "255"),
            "02": ("png", "png", "1"),
            "03": ("bmp", "bmp", "255"),
        }[c]
        return _plan_mvtec_like(
            ctx,
            good="ok",
            defects=("ko",),
            img_ext=img_ext,
            mask_ext=mask_ext,
            mask_suffix="",
            mask_values=values,
            digits=4,
        )
    if k == "sdd":
        return _plan_sdd(ctx)
    if k == "visa":
        return _plan_visa(ctx)
    if k == "headct":
        return _plan_image_level(ctx, "brain/test/good/{:03d}.png", 100, "brain/test/defect/{:03d}.png", 0,
                                 "defect")
    if k == "brainmri":
        return _plan_brainmri(ctx)
    if k == "br35h":
        return _plan_image_level(ctx, "br35/no/no{}.jpg", 0, "br35/yes/y{}.jpg", 0, "yes")
    if k == "covid19":
        return _plan_image_level(ctx, "covid/NORMAL/NORMAL ({}).png", 1, "covid/COVID-19/COVID-19 ({}).png", 1,
                                 "COVID-19")
    if k == "isic":
        ids = np.sort(_rng("ids", k, ctx.seed).choice(np.arange(1, 12000), ctx.n_anom, replace=False))
        return [
            _plan(
                ctx,
                f"skin/test/defect/ISIC_{n:07d}.jpg",
                f"skin/ground_truth/defect/ISIC_{n:07d}_Segmentation.png",
                1,
                "test",
                "defect",
                f"anom{i}",
            )
            for i, n in enumerate(ids)
        ]
    if k in {"colondb", "clinicdb", "kvasir", "endo", "tn3k"}:
        return _plan_images_masks(ctx)
    if k == "dagm":
        return _plan_dagm(ctx)
    return _plan_from_manifest(ctx)


def _plan_from_manifest(ctx: _Ctx) -> list[_Plan]:
    """A dataset without its own planner: the first folder names and extensions its manifest's layout
    accepts, for the converters that need nothing else (a new layout needs a planner above)."""
    m = _manifest(ctx.key)
    lay = m.layout
    if m.converter == "mvtec_style":
        return _plan_mvtec_like(ctx, good=lay["normal_dirs"][0], defects=_defect_types(ctx.key, ctx.category),
                                img_ext=lay["image_exts"][0], mask_ext=lay["mask_exts"][0],
                                mask_suffix=lay["mask_suffixes"][0], mask_dir=lay["mask_dir"])
    if m.converter == "images_masks":
        return _plan_images_masks(ctx)
    if m.converter == "bmad":
        return _plan_bmad(ctx, lay)
    if m.converter == "image_folders":
        sub, ext = lay["subdir"].strip("/"), lay["image_exts"][0]
        anom = (lay.get("anomalous_dirs") or ["anomalous"])[0]
        return _plan_image_level(ctx, f"{sub}/{lay['normal_dirs'][0]}/{{:03d}}.{ext}", 0,
                                 f"{sub}/{anom}/{{:03d}}.{ext}", 0, anom)
    raise ConfigError(f"no stand-in generator for {ctx.key!r} (manifest {m.path}, converter {m.converter!r}): "
                      "add a planner for its layout to glocal_lib/data/synthetic.py (_plan_category)")


def _plan_bmad(ctx: _Ctx, lay: dict) -> list[_Plan]:
    """BMAD / MVFA-AD: test/good/img/<n>.png and test/Ungood/img/<n>.png + test/Ungood/<mask_dir>/<n>.png;
    numbering continues across the two folders (names never pair across them)."""
    split, img, ext = lay.get("split_dir", "test"), lay["image_subdir"], lay["image_exts"][0]
    good, bad, mask = lay["normal_dirs"][0], lay["anomalous_dirs"][0], lay["mask_dir"]
    plans = [_plan(ctx, f"{split}/{good}/{img}/{i:05d}.{ext}", "", 0, "test", "good", f"good{i}")
             for i in range(ctx.n_normal)]
    plans += [_plan(ctx, f"{split}/{bad}/{img}/{ctx.n_normal + i:05d}.{ext}",
                    f"{split}/{bad}/{mask}/{ctx.n_normal + i:05d}.{lay['mask_exts'][0]}", 1, "test", bad, f"anom{i}")
              for i in range(ctx.n_anom)]
    return plans


def _plan_sdd(ctx: _Ctx) -> list[_Plan]:
    """Half images named kosNN_PartM_H.png: anomalous halves first, then distinct normal halves."""
    c = ctx.category
    halves = [(kos, part, half) for kos in range(1, 51) for part in range(8) for half in range(2)]
    order = _rng("sdd-halves", ctx.seed).permutation(len(halves))
    total = ctx.n_anom + ctx.n_normal
    if total > len(halves):
        raise ConfigError(f"SDD stand-in: {total} halves requested but KolektorSDD has only {len(halves)}")
    names = [f"kos{halves[j][0]:02d}_Part{halves[j][1]}_{halves[j][2]}.png" for j in order[:total]]
    anom, good = sorted(names[: ctx.n_anom]), sorted(names[ctx.n_anom :])
    plans = [_plan(ctx, f"{c}/test/good/{n}", "", 0, "test", "good", f"good{i}") for i, n in enumerate(good)]
    plans += [
        _plan(
            ctx,
            f"{c}/test/defect/{n}",
            f"{c}/ground_truth/defect/{n[:-4]}_mask.png",
            1,
            "test",
            "defect",
            f"anom{i}",
        )
        for i, n in enumerate(anom)
    ]
    return plans


_VISA_FOUR_DIGITS = {"candle", "macaroni1", "macaroni2", "pcb1", "pcb2", "pcb3", "pcb4"}


def _plan_visa(ctx: _Ctx) -> list[_Plan]:
    """Normals share one folder for train and test (the CSV decides); anomalies 000..; masks 1..3."""
    c = ctx.category
    digits = 4 if c in _VISA_FOUR_DIGITS else 3
    n_norm = ctx.n_train + ctx.n_normal
    is_train = np.zeros(n_norm, bool)
    is_train[_rng("visa-split", c, ctx.seed).permutation(n_norm)[: ctx.n_train]] = True
    plans = []
    for split in ("train", "test"):  # CSV order: train normals, test normals, test anomalies
        for i in np.nonzero(is_train == (split == "train"))[0]:
            plans.append(
                _plan(ctx, f"{c}/Data/Images/Normal/{i:0{digits}d}.JPG", "", 0, split, "good", f"normal{i}")
            )
    for i in range(ctx.n_anom):
        plans.append(
            _plan(
                ctx,
                f"{c}/Data/Images/Anomaly/{i:03d}.JPG",
                f"{c}/Data/Masks/Anomaly/{i:03d}.png",
                1,
                "test",
                "anomaly",
                f"anom{i}",
                mask_values="ids",
                n_defects=1 + i % 2,
            )
        )
    return plans


def _plan_brainmri(ctx: _Ctx) -> list[_Plan]:
    """Kaggle's mixed names, extensions and modes (spec §5.2, [U]): jpeg/JPG/jpg/png, spaces, L/P/RGBA."""
    no_pat = (("{n} no.jpeg", "L"), ("N{n}.JPG", "RGB"), ("no {n}.jpg", "RGB"), ("N{n}.png", "P"))
    yes_pat = (("Y{n}.jpg", "RGB"), ("Y{n}.JPG", "L"), ("Y{n}.png", "RGBA"))
    plans = []
    for i in range(ctx.n_normal):
        pat, mode = no_pat[i % len(no_pat)]
        plans.append(
            _plan(
                ctx,
                f"brain_tumor_dataset/no/{pat.format(n=i + 1)}",
                "",
                0,
                "test",
                "good",
                f"good{i}",
                mode=mode,
            )
        )
    for i in range(ctx.n_anom):
        pat, mode = yes_pat[i % len(yes_pat)]
        plans.append(
            _plan(
                ctx,
                f"brain_tumor_dataset/yes/{pat.format(n=i + 1)}",
                "",
                1,
                "test",
                "yes",
                f"anom{i}",
                mode=mode,
            )
        )
    return plans


def _plan_images_masks(ctx: _Ctx) -> list[_Plan]:
    """Pixel-level medical sets: only anomalous images, masks in a sibling folder with the same stem."""
    k = ctx.key
    lay = _manifest(k).layout
    img_dir = lay.get("image_dir") or "images"  # null: any one folder beside the masks (Endo)
    mask_dir, suffix = lay["mask_dir"], lay["mask_suffixes"][0]
    if k == "kvasir":
        r = _rng("kvasir-ids", ctx.seed)
        alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))
        stems = sorted({"cj" + "".join(r.choice(alphabet, 23)) for _ in range(ctx.n_anom)})
    elif k == "tn3k":
        stems = [f"{i:04d}" for i in range(ctx.n_anom)]
    elif k == "endo":
        stems = [f"endotect_{i:04d}" for i in range(ctx.n_anom)]  # [U] real names unknown
    else:
        stems = [str(i + 1) for i in range(ctx.n_anom)]  # CVC: 1..N, unpadded (sorts 1, 10, 11, 2, ...)
    img_ext, mask_ext = {  # the real files' (the manifests list every extension the converter accepts)
        "colondb": ("png", "png"),
        "clinicdb": ("tif", "tif"),
        "kvasir": ("jpg", "jpg"),
        "endo": ("jpg", "png"),
        "tn3k": ("jpg", "jpg"),
    }.get(k, (lay["image_exts"][0], lay["mask_exts"][0]))
    mask_mode = "RGB" if k == "kvasir" else "L"
    defect = "images" if k == "endo" else "anomaly"  # endo: the image folder's name, as released
    plans = [
        _plan(
            ctx,
            f"{img_dir}/{s}.{img_ext}",
            f"{mask_dir}/{s}{suffix}.{mask_ext}",
            1,
            "test",
            defect,
            f"anom{i}",
            mask_mode=mask_mode,
        )
        for i, s in enumerate(stems)
    ]
    if k == "tn3k":
        plans += [
            _plan(
                ctx,
                f"trainval-image/{i:04d}.jpg",
                f"trainval-mask/{i:04d}.jpg",
                1,
                "train",
                "anomaly",
                f"train{i}",
            )
            for i in range(ctx.n_train)
        ]
    return plans


def _plan_dagm(ctx: _Ctx) -> list[_Plan]:
    """ClassN/{Train,Test}/NNNN.PNG with Label/NNNN_label.PNG for the defective ones (interleaved)."""
    c = ctx.category
    plans = []
    for split, n_norm, n_anom in (("train", ctx.n_train, 1), ("test", ctx.n_normal, ctx.n_anom)):
        phase = split.capitalize()
        n = n_norm + n_anom
        defective = np.zeros(n, bool)
        defective[_rng("dagm", c, split, ctx.seed).permutation(n)[:n_anom]] = True
        for i in range(n):
            name = f"{i + 1:04d}"
            if defective[i]:
                plans.append(
                    _plan(
                        ctx,
                        f"{c}/{phase}/{name}.PNG",
                        f"{c}/{phase}/Label/{name}_label.PNG",
                        1,
                        split,
                        "anomaly",
                        f"{split}{i}",
                    )
                )
            else:
                plans.append(_plan(ctx, f"{c}/{phase}/{name}.PNG", "", 0, split, "good", f"{split}{i}"))
    return plans


# --------------------------------------------------------------------------------------------------
# Side files of some layouts (CSV index, label lists, readmes, empty folders)
# --------------------------------------------------------------------------------------------------


def _side_files(key: str, plans: list[_Plan]) -> tuple[dict[str, str], list[str]]:
    """Text files {relpath: content} and empty folders that the real layout has."""
    texts: dict[str, str] = {}
    dirs: list[str] = []
    cats = list(dict.fromkeys(p.file.category for p in plans))
    if key == "mvtec":
        texts["readme.txt"] = "Synthetic stand-in for MVTec AD (glocal_lib.data.synthetic). Not real data.\n"
        texts["license.txt"] = "Synthetic stand-in: no real MVTec AD content.\n"
    if key == "visa":
        rows = ["object,split,label,image,mask"]
        for p in plans:
            f = p.file
            rows.append(
                f"{f.category},{f.split},{'anomaly' if f.label else 'normal'},{f.image_path},{f.mask_path}"
            )
        texts["split_csv/1cls.csv"] = "\r\n".join(rows) + "\r\n"
        for c in cats:
            anno = ["image,label,mask"]
            for p in plans:
                if p.file.category == c:
                    f = p.file
                    anno.append(f"{f.image_path},{'anomaly' if f.label else 'normal'},{f.mask_path}")
            texts[f"{c}/image_anno.csv"] = "\n".join(anno) + "\n"
    if key == "sdd":
        dirs += [f"{c}/train/good" for c in cats]
    if key == "dagm":
        for c in cats:
            for phase in ("Train", "Test"):
                lines = ["1"]
                mine = [p.file for p in plans if p.file.category == c and p.file.split == phase.lower()]
                for i, f in enumerate(mine):
                    name = f.image_path.rsplit("/", 1)[-1]
                    label = f.mask_path.rsplit("/", 1)[-1] if f.label else "0"
                    lines.append(f"{i + 1}\t{f.label}\t{name}\t0\t{label}")
                texts[f"{c}/{phase}/Label/Labels.txt"] = "\n".join(lines) + "\n"
                dirs.append(f"{c}/{phase}/Label")
    return texts, dirs


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def standin_root(key: str, out_root: str | Path) -> Path:
    """Where `make_standin(key, out_root)` puts the dataset root (the path to index).

    `out_root` itself for every key except DAGM, whose root must be named `DAGM_KaggleUpload`
    (the released loader switches to its `Test` split on that name): it goes to
    `out_root/DAGM_KaggleUpload` unless `out_root` already has that name.
    """
    out_root = Path(out_root)
    if key == "dagm" and out_root.name != _DAGM_ROOT:
        return out_root / _DAGM_ROOT
    return out_root


# Tiny counts (normal, anomalous) of a one-category dataset (medical sets, SDD). With 2-3 images, as a
# multi-category split gives each category, the released AUPRO approximation is often undefined (fewer
# than two FPR steps below 0.3) and a dataset's image AUROC rests on 6 pairs; 6 + 8 define every metric.
_TINY_SINGLE = (6, 8)


def _has_train_split(key: str) -> bool:
    """Whether the stand-in writes a small `train/` split (the real layout has one we reproduce)."""
    if key in {"sdd", "headct", "brainmri", "br35h", "covid19", "isic", "colondb", "clinicdb", "kvasir", "endo"}:
        return False
    return key in {"mvtec", "visa", "mpdd", "btad", "dtd", "tn3k", "dagm"} or _manifest(key).converter == "mvtec_style"


def _category_counts(key: str, scale: str | float, categories: Sequence[str]) -> dict[str, tuple[int, int]]:
    real = real_counts(key)
    names = list(real)
    out = {}
    for c in categories:
        n_real, a_real = real[c]
        ci = names.index(c)
        if scale == "tiny" and len(real) == 1:  # one category = the whole dataset: enough for every metric
            n = 0 if n_real == 0 else _TINY_SINGLE[0]
            a = 0 if a_real == 0 else _TINY_SINGLE[1]
        elif scale == "tiny":
            n = 0 if n_real == 0 else 2 + ci % 3
            a = 0 if a_real == 0 else 2 + (ci + 1) % 3
        else:
            n = 0 if n_real == 0 else max(1, round(n_real * float(scale)))
            a = 0 if a_real == 0 else max(1, round(a_real * float(scale)))
        out[c] = (n, a)
    return out


def _check_args(key: str, scale: str | float, categories: Iterable[str] | None, image_size: int) -> list[str]:
    known = categories_of(key)  # an unknown key is refused here
    if isinstance(scale, str):
        if scale != "tiny":
            raise ConfigError(f"scale={scale!r}: use 'tiny' or a positive number (1.0 = real counts)")
    elif isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise ConfigError(f"scale={scale!r}: use 'tiny' or a positive number (1.0 = real counts)")
    if not isinstance(image_size, int) or image_size < 16:
        raise ConfigError(f"image_size={image_size!r}: use an integer >= 16")
    if categories is None:
        return list(known)
    cats = list(categories)
    unknown = [c for c in cats if c not in known]
    if unknown or not cats:
        raise ConfigError(
            f"categories {unknown or cats!r} are not {key} categories; "
            f"choose from {', '.join(known)}"
        )
    return [c for c in known if c in cats]  # canonical order


def generate_standin(
    key: str,
    out_root: str | Path,
    seed: int = 0,
    image_size: int = 64,
    scale: str | float = "tiny",
    categories: Sequence[str] | None = None,
    overwrite: bool = False,
) -> StandinResult:
    """Write the stand-in of dataset `key` and return every file written with its truth.

    `scale="tiny"`: 2-4 normal and 2-4 anomalous test images per category (0 normal where the real
    set has none); a number multiplies the real per-category test counts (1.0 = real counts, at least
    one image where the real count is non-zero). `train/` splits, where the layout has them, hold
    2 images per category (SDD's stays empty, as in the released copy).
    """
    cats = _check_args(key, scale, categories, image_size)
    root = standin_root(key, out_root)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise DataError(
                f"{root} is not empty; generate the stand-in into a new folder "
                "or pass overwrite=True to replace it"
            )
        shutil.rmtree(root)
    counts = _category_counts(key, scale, cats)
    plans: list[_Plan] = []
    rows = []
    for c in cats:
        n, a = counts[c]
        n_train = _TRAIN_PER_CATEGORY if _has_train_split(key) else 0
        n_empty = 0
        if key == "btad" and scale != "tiny":
            n_empty = min(a, round(_BTAD_EMPTY_MASKS[c] * float(scale)))
        look_gray = _look(key, c)[5]
        ctx = _Ctx(key, c, n, a, n_train, n_empty, image_size, seed, look_gray)
        cat_plans = _plan_category(ctx)
        plans += cat_plans
        test = [p.file for p in cat_plans if p.file.split == "test"]
        train = [p.file for p in cat_plans if p.file.split == "train"]
        rows.append(
            {
                "category": c,
                "test_normal": sum(f.label == 0 for f in test),
                "test_anomalous": sum(f.label == 1 for f in test),
                "train_normal": sum(f.label == 0 for f in train),
                "train_anomalous": sum(f.label == 1 for f in train),
                "empty_masks": sum(f.empty_mask for f in test),
            }
        )
    root.mkdir(parents=True, exist_ok=True)
    for p in plans:
        sample = _render(p, seed, image_size)
        f = p.file
        atomic_write_bytes(root / f.image_path, _encode(sample.image, f.image_path, p.image_mode, quality=95))
        if f.mask_path:
            m = _mask_array(sample, p)
            atomic_write_bytes(root / f.mask_path, _encode(m, f.mask_path, p.mask_mode, quality=75))
    texts, dirs = _side_files(key, plans)
    for rel, text in texts.items():
        path = root / rel
        if path.suffix == ".csv" and "\r\n" in text:  # keep CRLF byte-exact (no newline translation)
            atomic_write_bytes(path, text.encode("utf-8"))
        else:
            atomic_write_text(path, text)
    for rel in dirs:
        (root / rel).mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(
        rows,
        columns=[
            "category",
            "test_normal",
            "test_anomalous",
            "train_normal",
            "train_anomalous",
            "empty_masks",
        ],
    )
    df.attrs.update(key=key, root=str(root), seed=seed, image_size=image_size, scale=scale)
    return StandinResult(
        key, root, df, [p.file for p in plans], seed, image_size, {p.file.image_path: p for p in plans}
    )


def make_standin(
    key: str,
    out_root: str | Path,
    seed: int = 0,
    image_size: int = 64,
    scale: str | float = "tiny",
    categories: list[str] | None = None,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Write the stand-in of `key` (root: `standin_root(key, out_root)`); return exact counts.

    Columns: category, test_normal, test_anomalous (what a converter must find), plus train_normal,
    train_anomalous and empty_masks (anomalous test images whose mask file is all zero: BTAD only).
    `df.attrs["root"]` is the dataset root written.
    """
    return generate_standin(key, out_root, seed, image_size, scale, categories, overwrite).counts


def make_all_standins(
    out_root: str | Path,
    seed: int = 0,
    image_size: int = 64,
    scale: str | float = "tiny",
    keys: Sequence[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """Every stand-in under `out_root/<key>` (DAGM under `out_root/dagm/DAGM_KaggleUpload`)."""
    return {k: make_standin(k, Path(out_root) / k, seed, image_size, scale) for k in (keys or DATASETS)}


# --------------------------------------------------------------------------------------------------
# Visual check
# --------------------------------------------------------------------------------------------------


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 0


def save_standin_grid(
    out_png: str | Path, keys: Sequence[str] | None = None, seed: int = 0, image_size: int = 96
) -> Path:
    """Grid for the README: per dataset one normal and three anomalous images read back from disk,
    masks (binarised `> 0`, as the released loader does) tinted and outlined in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(keys or DATASETS)
    per_key, per_row = 4, 2 if len(keys) > 1 else 1
    nrows = -(-len(keys) // per_row)
    fig, axes = plt.subplots(
        nrows, per_key * per_row, figsize=(1.45 * per_key * per_row, 1.6 * nrows), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    with tempfile.TemporaryDirectory() as tmp:
        for i, key in enumerate(keys):
            res = generate_standin(
                key, Path(tmp) / key, seed=seed, image_size=image_size, categories=categories_of(key)[:3]
            )
            test = [f for f in res.files if f.split == "test"]
            normals = [f for f in test if f.label == 0]
            anoms = [f for f in test if f.label == 1]
            firsts = list({f.category: f for f in reversed(anoms)}.values())[::-1]  # one per category first
            picks = (normals[:1] + firsts + [f for f in anoms if f not in firsts])[:per_key]
            for j, f in enumerate(picks):
                ax = axes[i // per_row, (i % per_row) * per_key + j]
                ax.imshow(_read_rgb(res.root / f.image_path), interpolation="nearest")
                if f.mask_path:
                    m = _read_mask(res.root / f.mask_path)
                    over = np.zeros((*m.shape, 4))
                    over[m] = (1, 0, 0, 0.3)
                    ax.imshow(over, interpolation="nearest")
                    if m.any():
                        ax.contour(m.astype(float), levels=[0.5], colors="red", linewidths=0.5)
                tag = "normal" if f.label == 0 else ("anomalous" if f.mask_path else "anomalous (no mask)")
                ax.set_title(f"{key}: {f.category}\n{tag}", fontsize=6)
    fig.suptitle(
        "Synthetic stand-ins (not real data), one per dataset layout; ground-truth masks in red", fontsize=8
    )
    fig.tight_layout(rect=(0, 0, 1, 0.985), h_pad=0.4, w_pad=0.2)
    out = atomic_save_with(out_png, lambda p: fig.savefig(p, dpi=100))
    plt.close(fig)
    return out
