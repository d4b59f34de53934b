"""Torch Dataset over a unified index, with the released preprocessing.

Image: converted to RGB (grayscale, palette, RGBA, 16-bit handled), resized to S x S with PIL
bicubic (no aspect-preserving crop), scaled to [0, 1], normalised with the OpenAI CLIP mean/std.
Mask: read as grayscale, ``> 0`` -> 255, resized to S x S with PIL bilinear, then ``/255 > 0.5``:
exactly what the released ``dataset.py`` + ``utils.get_transform`` + ``test.py`` do (torchvision
Resize on a PIL image calls PIL's resize). Normal images and images without a mask get zeros.

One difference, on purpose: the released transform resizes before converting to RGB; we convert
first, which is identical for RGB/L images and avoids PIL's nearest-neighbour resize of palette
images. Items hold no open files, so any number of DataLoader workers is safe.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from glocal_lib.data.index import check_index_frame
from glocal_lib.data.validate import OPEN_ERRORS
from glocal_lib.errors import DataError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def load_rgb(path: Path) -> Image.Image:
    """Decode an image to RGB; a transparent palette goes via RGBA (alpha dropped, as released)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "RGB":
                return im.copy()
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")
            if im.mode in WIDE_MODES:
                im = Image.fromarray(to_uint8(np.asarray(im)), mode="L")
            return im.convert("RGB")
    except OPEN_ERRORS as err:
        raise DataError(f"cannot read image {path} ({type(err).__name__}: {err}); re-extract it from the "
                        "archive or remove it from the index (run `glocal data check --deep`).") from None


WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # 16/32-bit integer and 32-bit float single-band images


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """A 16/32-bit integer or float image as 8-bit grey (PIL's own convert clips these to black/white).

    Values already in 0..255 are kept; a float image in [0, 1] is scaled by 255; anything else
    (12/16-bit CT or MRI, Hounsfield units, float intensities) is stretched linearly from its own
    minimum to its own maximum, the usual default window of medical viewers. NaN/inf become 0.
    """
    a = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(a)
    a = np.where(finite, a, 0.0)
    lo, hi = (float(a[finite].min()), float(a[finite].max())) if finite.any() else (0.0, 0.0)
    if lo >= 0 and hi <= 1 and arr.dtype.kind == "f":
        a = a * 255.0
    elif lo < 0 or hi > 255:
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
    return np.clip(a + 0.5, 0, 255).astype(np.uint8)


def binary_array(im: Image.Image) -> np.ndarray:
    """Mask pixels > 0, on the raw values for 16/32-bit and float masks (an 'L' conversion would round 0.4 to 0)."""
    return (np.asarray(im) if im.mode in WIDE_MODES else np.asarray(im.convert("L"))) > 0


def image_tensor(img: Image.Image, size: int) -> torch.Tensor:
    arr = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    arr = (arr - np.asarray(OPENAI_MEAN, np.float32)) / np.asarray(OPENAI_STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def load_mask(path: Path, size: int) -> torch.Tensor:
    """Binary {0,1} float mask of shape (size, size), binarised like the released loader."""
    return mask_tensor(read_binary_mask(path), size)


def read_binary_mask(path: Path) -> np.ndarray:
    """The mask file as a boolean array (pixels > 0) at its own size."""
    try:
        with Image.open(path) as im:
            return binary_array(im)
    except OPEN_ERRORS as err:
        raise DataError(f"cannot read mask {path} ({type(err).__name__}: {err}); restore it from the archive.") from None


def mask_tensor(binary: np.ndarray, size: int) -> torch.Tensor:
    """A boolean mask resized to (size, size) like the released loader: 0/255, PIL bilinear, > 0.5."""
    resized = Image.fromarray(binary.astype(np.uint8) * 255, mode="L").resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy((np.asarray(resized) > 127).astype(np.float32))  # x/255 > 0.5 <=> x >= 128


class AnomalyDataset(Dataset):
    """Items: image (3,S,S) float, mask (S,S) {0,1} float, label, category, image_path, index."""

    def __init__(self, root: str | os.PathLike[str], index: pd.DataFrame, image_size: int = 518) -> None:
        check_index_frame(index, "the index given to AnomalyDataset")
        self.root = str(root)
        self.image_size = int(image_size)
        # plain lists, not a DataFrame: cheap to pickle into workers, no copy-on-read growth
        self.image_paths = index["image_path"].astype(str).tolist()
        self.mask_paths = index["mask_path"].astype(str).tolist()
        self.labels = index["label"].astype(int).tolist()
        self.categories = index["category"].astype(str).tolist()

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, i: int) -> dict:
        root = Path(self.root)
        image = image_tensor(load_rgb(root / self.image_paths[i]), self.image_size)
        if self.labels[i] == 1 and self.mask_paths[i]:
            mask = load_mask(root / self.mask_paths[i], self.image_size)
        else:
            mask = torch.zeros(self.image_size, self.image_size)
        return {"image": image, "mask": mask, "label": self.labels[i], "category": self.categories[i],
                "image_path": self.image_paths[i], "index": i}
