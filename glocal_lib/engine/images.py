"""The image-based path: batches of images (+ cached static features) for methods that declare
``feature_source = "images"`` (their trainable parts change the vision tower, e.g. AdaCLIP).

What can be cached is: the method's ``static_features(images)`` (tensors no trainable parameter
changes: AdaCLIP's un-prompted embedding f0), stored per image as memory-mapped .npy files in a folder
keyed like the frozen-feature cache (backbone, weights, image size, the model's vision signature, a
probe of its static output on the dataset's first image, precision, dtype, dataset content), built
under a lock in a temporary folder and renamed into place. Images are decoded by DataLoader workers
in every epoch; augmented items (mosaics) are new images, so their static features are computed live.

Augmentation is deterministic: whether item i of epoch e is a mosaic and which tiles it uses come
from a generator seeded by (seed, e, i), so a run resumed after kill -9 sees the same images.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from glocal_lib.engine.data_prep import DataInfo
from glocal_lib.engine.locks import clear_write_errors, exclusive
from glocal_lib.io import atomic_write_json, stable_hash
from glocal_lib.model.images import ImageBatch

STATIC_FORMAT = 1
_DTYPES = {"fp16": np.float16, "fp32": np.float32}


def is_image_based(model: Any) -> bool:
    """True when the model declares it needs images (its trainable parts change the vision tower)."""
    return getattr(model, "feature_source", "frozen") == "images"


# ------------------------------------------------------------------------------------------ mosaic
@dataclass(frozen=True)
class Mosaic:
    """2x2 mosaic augmentation (released AdaCLIP base_dataset.combine_img, from April-GAN).

    rate: probability per item; label: "released" = the indexed item's label, "any_tile" = anomalous
    when any tile is. Categories with fewer than 4 images are never mosaicked (the released
    ``random.sample(..., 4)`` would fail on them).
    """

    rate: float
    seed: int
    label: str = "released"


def mosaic_tiles(rows_of_category: np.ndarray, item: int, aug: Mosaic, epoch: int) -> list[int] | None:
    """The 4 rows (drawn without replacement from the item's category) of item's mosaic, or None."""
    rng = np.random.default_rng([int(aug.seed), int(epoch), int(item)])
    if rng.random() >= aug.rate or len(rows_of_category) < 4:
        return None
    return [int(r) for r in rng.choice(rows_of_category, size=4, replace=False)]


def mosaic_images(images: Sequence[Image.Image], masks: Sequence[np.ndarray]) -> tuple[Image.Image, np.ndarray]:
    """Paste 4 images (and their boolean masks) as a 2x2 tiling at the first image's size."""
    w, h = images[0].size
    canvas = Image.new("RGB", (2 * w, 2 * h))
    mask = Image.new("L", (2 * w, 2 * h))
    for i, (img, m) in enumerate(zip(images, masks)):
        x, y = (i % 2) * w, (i // 2) * h
        canvas.paste(img, (x, y))
        mask.paste(Image.fromarray(m.astype(np.uint8) * 255, mode="L"), (x, y))
    return canvas, np.asarray(mask) > 0


class ImageItems(torch.utils.data.Dataset):
    """AnomalyDataset items plus ``augmented`` (bool); with a Mosaic, items may be 2x2 mosaics."""

    def __init__(self, data: DataInfo, image_size: int, mosaic: Mosaic | None = None, epoch: int = 0) -> None:
        from glocal_lib.data import AnomalyDataset

        self.base = AnomalyDataset(data.root, data.index, image_size=image_size)
        self.mosaic, self.epoch = mosaic, epoch
        cats = data.index["category"].to_numpy()
        self.rows_of = {c: np.flatnonzero(cats == c) for c in dict.fromkeys(cats)}

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        tiles = None
        if self.mosaic is not None:
            tiles = mosaic_tiles(self.rows_of[self.base.categories[i]], i, self.mosaic, self.epoch)
        if tiles is None:
            return {**self.base[i], "augmented": False}
        from glocal_lib.data.dataset import image_tensor, load_rgb, mask_tensor, read_binary_mask

        root = Path(self.base.root)
        imgs = [load_rgb(root / self.base.image_paths[t]) for t in tiles]
        masks = [read_binary_mask(root / self.base.mask_paths[t])
                 if self.base.labels[t] == 1 and self.base.mask_paths[t]
                 else np.zeros((im.size[1], im.size[0]), dtype=bool) for t, im in zip(tiles, imgs)]
        img, mask = mosaic_images(imgs, masks)
        label = self.base.labels[i] if self.mosaic.label == "released" else max(self.base.labels[t] for t in tiles)
        size = self.base.image_size
        return {"image": image_tensor(img, size), "mask": mask_tensor(mask, size), "label": int(label),
                "category": self.base.categories[i], "image_path": self.base.image_paths[i], "index": i,
                "augmented": True}


def _loader(items: torch.utils.data.Dataset, order: Sequence[int], batch_size: int, num_workers: int,
            pin_memory: bool) -> torch.utils.data.DataLoader:
    ids = list(order)
    return _batch_loader(items, [ids[i:i + batch_size] for i in range(0, len(ids), batch_size)], num_workers,
                         pin_memory)


def _batch_loader(items: torch.utils.data.Dataset, batches: list[list[int]], num_workers: int,
                  pin_memory: bool) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(items, batch_sampler=batches, num_workers=num_workers, pin_memory=pin_memory,
                                       persistent_workers=False, prefetch_factor=2 if num_workers else None)


# ------------------------------------------------------------------------------------ static cache
@torch.no_grad()
def _static(model: Any, images: torch.Tensor, device: str) -> dict[str, torch.Tensor]:
    return {k: v.float().cpu() for k, v in model.static_features(images.to(device, non_blocking=True)).items()}


def _probe(model: Any, data: DataInfo, device: str) -> tuple[str, dict[str, torch.Tensor] | None]:
    """Hash of the static features of the dataset's first image (rounded like the frozen cache's probe)."""
    if len(data.index) == 0:
        return "empty", None
    from glocal_lib.data import AnomalyDataset

    item = AnomalyDataset(data.root, data.index, image_size=int(model.image_size))[0]
    out = _static(model, item["image"][None], device)
    h = hashlib.sha256()
    for k in sorted(out):
        h.update(k.encode())
        h.update(np.round(out[k].numpy(), 3).astype(np.float32).tobytes())
    return h.hexdigest()[:16], out


@dataclass
class StaticFeatures:
    """A finished static-feature folder opened read-only: name -> memmap (N, ...)."""

    path: Path
    arrays: dict[str, np.ndarray]

    @classmethod
    def open(cls, path: Path) -> StaticFeatures:
        meta = json.loads((path / "meta.json").read_text())
        return cls(path, {k: np.load(path / f"static_{k}.npy", mmap_mode="r") for k in meta["names"]})

    def rows(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(idx, dtype=np.int64)
        return {k: torch.from_numpy(np.ascontiguousarray(a[idx])).float() for k, a in self.arrays.items()}


def static_cache(model: Any, data: DataInfo, *, root: Path, dtype: str, backbone: str, weights_id: dict[str, Any],
                 device: str, batch_size: int, num_workers: int, progress: bool = False) -> StaticFeatures:
    """The static features of every image of ``data`` (built once, then reused by every run)."""
    from tqdm.auto import tqdm

    from glocal_lib.engine.features import _allocate, vision_options

    fingerprint, first = _probe(model, data, device)
    ident = {"format": STATIC_FORMAT, "kind": "static", "backbone": backbone, "weights": weights_id,
             "image_size": int(model.image_size), "vision_options": vision_options(model), "probe": fingerprint,
             "dtype": dtype, "dataset": data.key, "index_hash": data.index_hash, "files_hash": data.files_hash()}
    name = f"{data.key}-static-{stable_hash(ident, 16)}"
    root = Path(root)
    final = root / name
    if (final / "meta.json").is_file():
        return StaticFeatures.open(final)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root / f".{name}.lock", f"static feature cache {name}"), clear_write_errors(root):
        if (final / "meta.json").is_file():
            return StaticFeatures.open(final)
        for stale in root.glob(f".{name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():
            shutil.rmtree(final)
        tmp = root / f".{name}.tmp-{os.getpid()}"
        tmp.mkdir()
        try:
            n = len(data.index)
            arrays: dict[str, np.ndarray] = {}
            pos = 0
            rest = _loader(ImageItems(data, int(model.image_size)), range(0 if first is None else 1, n), batch_size,
                           num_workers, str(device).startswith("cuda"))
            stream = _iter_static(model, first, rest, device)
            for out in tqdm(stream, desc=f"static {data.key}", disable=not progress, leave=False):
                if not arrays:
                    arrays = _allocate(tmp, {f"static_{k}": (_DTYPES[dtype], (n, *v.shape[1:])) for k, v in out.items()})
                b = next(iter(out.values())).shape[0]
                for k, v in out.items():
                    arrays[f"static_{k}"][pos:pos + b] = v.numpy().astype(_DTYPES[dtype])
                pos += b
            if pos != n:
                raise RuntimeError(f"static feature cache for {data.key}: computed {pos} of {n} images")
            for arr in arrays.values():
                arr.flush()
            atomic_write_json(tmp / "meta.json", {**ident, "names": sorted(k[len("static_"):] for k in arrays), "n": n})
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return StaticFeatures.open(final)


def _iter_static(model: Any, first: dict[str, torch.Tensor] | None, rest: Any, device: str
                 ) -> Iterator[dict[str, torch.Tensor]]:
    """Static features in index order: the probe's image first (not computed twice), then the loader's."""
    if first is not None:
        yield first
    for item in rest:
        yield _static(model, item["image"], device)


# ------------------------------------------------------------------------------------------ source
class ImageSource:
    """Batches (rows, ImageBatch, labels, masks) for an image-based model, in the order asked.

    Same interface as the frozen sources (``iter_batches``); ``set_epoch`` selects the epoch whose
    augmentation is drawn (training only).
    """

    def __init__(self, model: Any, data: DataInfo, *, device: str, num_workers: int = 0,
                 static: StaticFeatures | None = None, mosaic: Mosaic | None = None) -> None:
        self.model, self.data, self.device = model, data, device
        self.num_workers, self.static, self.mosaic = num_workers, static, mosaic
        self.items = ImageItems(data, int(model.image_size), mosaic)

    def __len__(self) -> int:
        return len(self.data.index)

    def set_epoch(self, epoch: int) -> None:
        self.items.epoch = int(epoch)

    def iter_batches(self, indices: Sequence[int] | np.ndarray, batch_size: int, device: str = "cpu"
                     ) -> Iterator[tuple[np.ndarray, ImageBatch, torch.Tensor, torch.Tensor]]:
        indices = np.asarray(indices, dtype=np.int64)
        yield from self.iter_batch_list([indices[i:i + batch_size] for i in range(0, len(indices), batch_size)],
                                        device)

    def iter_batch_list(self, batches: Sequence[np.ndarray], device: str = "cpu"
                        ) -> Iterator[tuple[np.ndarray, ImageBatch, torch.Tensor, torch.Tensor]]:
        """One batch per entry of `batches` (row arrays of any sizes; ConcatSource's members)."""
        batches = [np.asarray(b, dtype=np.int64) for b in batches]
        loader = _batch_loader(self.items, [b.tolist() for b in batches], self.num_workers,
                               str(device).startswith("cuda"))
        for rows, item in zip(batches, loader):
            images = item["image"].to(device, non_blocking=True)
            augmented = item["augmented"].numpy().astype(bool)
            if self.static is not None and not augmented.any():
                static = {k: v.to(device) for k, v in self.static.rows(rows).items()}
            else:  # no cache, or mosaics among the rows: their static features are new
                static = {k: v.to(device) for k, v in _static(self.model, images, device).items()}
                if self.static is not None:
                    cached = self.static.rows(rows)
                    keep = torch.from_numpy(~augmented).to(device)
                    static = {k: torch.where(keep.view(-1, *[1] * (v.ndim - 1)), cached[k].to(device), v)
                              for k, v in static.items()}
            masks = (item["mask"] > 0.5).float().to(device)
            yield rows, ImageBatch(images, static), item["label"].long().to(device), masks
