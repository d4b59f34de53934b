"""Frozen-vision feature cache: encode every image of a dataset once, reuse it across epochs and runs.

The vision tower is frozen, its V-V path has no parameters and training uses no augmentation, so
the features of an image never change during training; recomputing them 15 times (as the released
scripts do) is pure waste. The cache stores `VisionFeatures` per image as memory-mapped .npy files
(fp16 or fp32), plus labels and masks, in a folder named by a hash of everything the numbers depend
on: backbone and weights identity, image size, vision options, the encode precision, the dataset
index content, and a fingerprint of the model's actual output on a fixed probe image (so any vision
change the explicit key misses still gives a new folder). A folder is built in a temporary
directory under a lock and renamed into place, so concurrent builders and kill -9 never leave a
half-written cache behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap

from glocal_lib.engine.data_prep import DataInfo
from glocal_lib.engine.locks import clear_write_errors, disk_full, exclusive, require_space
from glocal_lib.io import atomic_write_json, stable_hash
from glocal_lib.model.detector import autocast

CACHE_FORMAT = 1
_DTYPES = {"fp16": np.float16, "fp32": np.float32}


def _vision_features_cls() -> Any:
    from glocal_lib.model import VisionFeatures

    return VisionFeatures


def make_features(global_emb: torch.Tensor, patch: torch.Tensor) -> Any:
    return _vision_features_cls()(global_emb=global_emb, patch=patch)


def vision_options(model: Any) -> dict[str, Any]:
    """Vision-side options of a model (what changes its features), as a JSON-able dict."""
    sig = getattr(model, "vision_signature", None)
    if callable(sig):
        return dict(sig())
    cfg = getattr(model, "cfg", None) or getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "to_dict"):
        words = ("vv", "feature_layer", "attention", "ln_post", "alias", "dual_path", "vision")
        return {k: v for k, v in cfg.to_dict().items() if any(w in k for w in words)}
    return {}


# model -> {(dataset, index hash, device, precision): fingerprint}
_PROBE_MEMO: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], str]] = weakref.WeakKeyDictionary()
_SHARED_PROBES: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()  # tower -> {settings: fp}


def _encoder_settings(model: Any) -> dict[str, Any]:
    """The vision encoder's plain settings (every flag it holds, including ones no signature lists yet)."""
    encoder = getattr(model, "vision", None)
    return {k: v for k, v in vars(encoder).items() if not k.startswith("_")
            and isinstance(v, bool | int | float | str | tuple | type(None))} if encoder is not None else {}


def _fingerprint(feats: Any) -> str:
    h = hashlib.sha256()
    for t in (feats.global_emb, feats.patch):
        arr = t.detach().float().cpu().numpy()
        h.update(np.round(arr, 3).astype(np.float32).tobytes())
        h.update(str(tuple(arr.shape)).encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def probe(model: Any, data: DataInfo | None, device: str, precision: str = "fp32") -> tuple[str, Any | None]:
    """(fingerprint, (item, features) of the probe image or None when memoised).

    The fingerprint hashes the model's vision output on the dataset's first image (a fixed
    pseudo-random image without data or for an empty index): it catches any vision change the explicit
    key misses.
    Values are rounded to 3 significant decimals first so bit-level float noise does not matter
    (a rare rounding flip only costs a cache miss, never a wrong hit). The probe image is encoded
    exactly as a cache build encodes it, so a build reuses it as its first row instead of paying
    one extra forward per cold cache.
    """
    key = (data.key, data.index_hash, str(device), precision) if data is not None else ("", "", str(device), precision)
    memo = _PROBE_MEMO.setdefault(model, {})
    if key in memo:
        return memo[key], None
    tower = getattr(model, "clip", None)
    shared_key = None
    if tower is not None and getattr(tower, "_glocal_shared", False):
        # detectors on one shared frozen tower with the same vision settings see the same features:
        # one probe forward per (tower, settings, data), not one per run (a full ViT-L forward at 518 px)
        shared_key = json.dumps([vision_options(model), _encoder_settings(model), *key], sort_keys=True, default=str)
        known = _SHARED_PROBES.get(tower, {}).get(shared_key)
        if known is not None:
            memo[key] = known
            return known, None
    if data is None or len(data.index) == 0:
        size = int(model.image_size)
        gen = torch.Generator().manual_seed(1234)
        item = None
        image = torch.rand(1, 3, size, size, generator=gen) * 2 - 1
    else:
        from glocal_lib.data import AnomalyDataset

        item = AnomalyDataset(data.root, data.index, image_size=int(model.image_size))[0]
        image = item["image"][None]
    feats = encode_batch(model, image, device, precision)
    memo[key] = _fingerprint(feats)
    if shared_key is not None:
        _SHARED_PROBES.setdefault(tower, {})[shared_key] = memo[key]
    return memo[key], (None if item is None else (item, feats))


def probe_fingerprint(model: Any, device: str, data: DataInfo | None = None, precision: str = "fp32") -> str:
    return probe(model, data, device, precision)[0]


def cache_key(model: Any, data: DataInfo, *, backbone: str, weights_id: dict[str, Any], image_size: int,
              precision: str, dtype: str, device: str, fingerprint: str | None = None
              ) -> tuple[str, dict[str, Any]]:
    """Folder name for (model vision, image size, data) and the dict it hashes (stored in meta.json)."""
    ident = {
        "format": CACHE_FORMAT,
        "backbone": backbone,
        "weights": weights_id,
        "image_size": int(image_size),
        "vision_options": vision_options(model),
        "probe": fingerprint or probe_fingerprint(model, device, data, precision),
        "encode_precision": precision,
        "dtype": dtype,
        "dataset": data.key,
        "index_hash": data.index_hash,
        "files_hash": data.files_hash(),
    }
    return f"{data.key}-{stable_hash(ident, 16)}", ident


@dataclass
class CachedFeatures:
    """A finished cache folder opened read-only (memory-mapped): batches come back as torch tensors."""

    path: Path
    global_emb: np.ndarray  # (N, D)
    patch: np.ndarray  # (N, n_unique, G*G, D)
    slots: list[int]  # feature layer i -> stored slot
    labels: np.ndarray  # (N,) int64
    masks: np.ndarray  # (N, S, S) uint8
    meta: dict[str, Any]

    @classmethod
    def open(cls, path: Path) -> CachedFeatures:
        meta = json.loads((path / "meta.json").read_text())
        return cls(
            path=path,
            global_emb=np.load(path / "global.npy", mmap_mode="r"),
            patch=np.load(path / "patch.npy", mmap_mode="r"),
            slots=list(meta["slots"]),
            labels=np.load(path / "labels.npy"),
            masks=np.load(path / "masks.npy", mmap_mode="r"),
            meta=meta,
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def cache_build(self) -> tuple[float, int] | None:
        """(seconds, images) building this cache cost, whichever run built it (meta.json); None when
        the folder does not record it."""
        build_s = self.meta.get("build_s")
        return None if build_s is None else (float(build_s), int(self.meta.get("n", len(self))))

    def batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor, device: str = "cpu"
              ) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """(VisionFeatures float32, labels (B,), masks (B,S,S) float {0,1}) for rows `indices`, in order."""
        idx = np.asarray(indices.tolist() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")  # read the memmap in file order, then restore the order
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        sidx = idx[order]
        g = torch.from_numpy(np.ascontiguousarray(self.global_emb[sidx])[inv]).float()
        p = torch.from_numpy(np.ascontiguousarray(self.patch[sidx])[inv]).float()
        if len(set(self.slots)) == 1:
            p = p[:, :1].expand(-1, len(self.slots), -1, -1)
        elif self.slots != list(range(p.shape[1])):
            p = p[:, self.slots]
        masks = torch.from_numpy(np.ascontiguousarray(self.masks[sidx])[inv]).float()
        labels = torch.from_numpy(self.labels[idx]).long()
        return make_features(g.to(device), p.to(device)), labels.to(device), masks.to(device)

    def iter_batches(self, indices: Sequence[int] | np.ndarray, batch_size: int, device: str = "cpu"
                     ) -> Iterator[tuple[np.ndarray, Any, torch.Tensor, torch.Tensor]]:
        indices = np.asarray(indices, dtype=np.int64)
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            yield (chunk, *self.batch(chunk, device))

    def iter_batch_list(self, batches: Sequence[np.ndarray], device: str = "cpu"
                        ) -> Iterator[tuple[np.ndarray, Any, torch.Tensor, torch.Tensor]]:
        """One batch per entry of `batches` (row arrays of any sizes): what ConcatSource asks for."""
        for chunk in batches:
            chunk = np.asarray(chunk, dtype=np.int64)
            yield (chunk, *self.batch(chunk, device))


class _AliasBroken(Exception):
    """Layers that looked identical in the first batch differ later: rebuild without dedupe."""


def _layer_slots(patch: torch.Tensor) -> list[int]:
    """Slot of each layer: the first earlier layer bit-identical to it (released aliasing), else its own."""
    slots: list[int] = []
    unique: list[int] = []
    for i in range(patch.shape[1]):
        match = next((u for u in unique if torch.equal(patch[:, i], patch[:, u])), None)
        if match is None:
            unique.append(i)
            slots.append(len(unique) - 1)
        else:
            slots.append(unique.index(match))
    return slots


def _loader(data: DataInfo, image_size: int, batch_size: int, num_workers: int,
            order: Sequence[int] | None = None, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """Batches in `order`; decoding workers overlap the next batch's reads with the model, and pinned
    host memory lets `.to(device, non_blocking=True)` copy asynchronously (GPU runs)."""
    from glocal_lib.data import AnomalyDataset

    ds = AnomalyDataset(data.root, data.index, image_size=image_size)
    ids = list(range(len(ds))) if order is None else list(order)
    batches = [ids[i:i + batch_size] for i in range(0, len(ids), batch_size)]
    return torch.utils.data.DataLoader(ds, batch_sampler=batches, num_workers=num_workers, pin_memory=pin_memory,
                                       persistent_workers=False, prefetch_factor=2 if num_workers else None)


@torch.no_grad()
def encode_batch(model: Any, images: torch.Tensor, device: str, precision: str) -> Any:
    with autocast(device, precision):
        feats = model.encode_image(images.to(device, non_blocking=True))
    return make_features(feats.global_emb.float(), feats.patch.float())


def _batches(model: Any, data: DataInfo, image_size: int, device: str, precision: str, batch_size: int,
             num_workers: int, first: tuple[dict[str, Any], Any] | None) -> Iterator[tuple[dict[str, Any], Any]]:
    """(loader item, features) in index order; the probe's image 0, when given, is not encoded again."""
    start = 0
    if first is not None:
        item, feats = first
        yield {"mask": item["mask"][None], "label": torch.as_tensor([int(item["label"])])}, feats
        start = 1
    if start < len(data.index):
        for item in _loader(data, image_size, batch_size, num_workers, range(start, len(data.index)),
                            pin_memory=str(device).startswith("cuda")):
            yield item, encode_batch(model, item["image"], device, precision)


def _build(model: Any, data: DataInfo, tmp: Path, *, image_size: int, device: str, precision: str,
           dtype: str, batch_size: int, num_workers: int, dedupe: bool, progress: bool,
           first: tuple[dict[str, Any], Any] | None = None) -> list[int]:
    from tqdm.auto import tqdm

    n = len(data.index)
    np_dtype = _DTYPES[dtype]
    arrays: dict[str, np.ndarray] = {}
    slots: list[int] = []
    labels = np.empty(n, dtype=np.int64)
    pos = 0
    batches = _batches(model, data, image_size, device, precision, batch_size, num_workers, first)
    for item, feats in tqdm(batches, desc=f"cache {data.key}", disable=not progress, leave=False):
        g, p = feats.global_emb.cpu(), feats.patch.cpu()
        if not arrays:
            slots = _layer_slots(p) if dedupe else list(range(p.shape[1]))
            n_unique = max(slots) + 1
            shapes = {"global": (np_dtype, (n, g.shape[1])), "patch": (np_dtype, (n, n_unique, *p.shape[2:])),
                      "masks": (np.uint8, (n, image_size, image_size))}
            arrays = _allocate(tmp, shapes)
        elif dedupe:
            seen: dict[int, int] = {}
            for i, s in enumerate(slots):
                if s in seen and not torch.equal(p[:, i], p[:, seen[s]]):
                    raise _AliasBroken
                seen.setdefault(s, i)
        b = g.shape[0]
        unique_layers = [slots.index(s) for s in range(max(slots) + 1)]
        arrays["global"][pos:pos + b] = g.numpy().astype(np_dtype)
        arrays["patch"][pos:pos + b] = p[:, unique_layers].numpy().astype(np_dtype)
        arrays["masks"][pos:pos + b] = (item["mask"] > 0.5).numpy().astype(np.uint8)
        labels[pos:pos + b] = item["label"].numpy()
        pos += b
    if pos != n:
        raise RuntimeError(f"feature cache for {data.key}: encoded {pos} of {n} images")
    for arr in arrays.values():
        arr.flush()
    np.save(tmp / "labels.npy", labels)
    return slots


def _allocate(folder: Path, shapes: dict[str, tuple[Any, tuple[int, ...]]]) -> dict[str, np.ndarray]:
    """Memory-mapped .npy files with their disk blocks reserved up front.

    A memmap over a sparse file on a full disk dies with SIGBUS at some later write, with no message;
    checking the free space first and reserving the blocks (posix_fallocate) turns that into a clear
    "no space left on device" before any work is done.
    """
    sizes = {k: int(np.prod(shape)) * np.dtype(dt).itemsize for k, (dt, shape) in shapes.items()}
    needs = sum(sizes.values()) + 2**20
    require_space(folder, needs)
    arrays = {}
    with clear_write_errors(folder, needs):
        for k, (dt, shape) in shapes.items():
            arr = open_memmap(folder / f"{k}.npy", "w+", dt, shape)
            if hasattr(os, "posix_fallocate") and sizes[k]:
                with open(folder / f"{k}.npy", "r+b") as fh:
                    try:
                        os.posix_fallocate(fh.fileno(), 0, arr.offset + sizes[k])
                    except OSError as exc:
                        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                            raise disk_full(folder, needs) from None
                        # EOPNOTSUPP/EINVAL (some filesystems): the free-space check above has to do
            arrays[k] = arr
    return arrays


class FeatureCache:
    """Folder of cached datasets; `get(model, data, ...)` returns CachedFeatures, building once."""

    def __init__(self, root: str | os.PathLike[str], dtype: str = "fp16") -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"cache dtype must be one of {list(_DTYPES)}, got {dtype!r}")
        self.root = Path(root)
        self.dtype = dtype
        self.builds = 0  # folders this object had to compute (tests and benchmarks read it)

    def get(self, model: Any, data: DataInfo, *, backbone: str, weights_id: dict[str, Any], device: str = "cpu",
            precision: str = "fp32", batch_size: int = 32, num_workers: int = 0, progress: bool = False
            ) -> CachedFeatures:
        fingerprint, first = probe(model, data, device, precision)
        name, ident = cache_key(model, data, backbone=backbone, weights_id=weights_id,
                                image_size=int(model.image_size), precision=precision, dtype=self.dtype,
                                device=device, fingerprint=fingerprint)
        final = self.root / name
        if (final / "meta.json").is_file():
            return CachedFeatures.open(final)
        with exclusive(self.root / f".{name}.lock", f"feature cache {name}"), clear_write_errors(self.root):
            if (final / "meta.json").is_file():  # another process finished it while we waited
                return CachedFeatures.open(final)
            for stale in self.root.glob(f".{name}.tmp-*"):  # left by a killed builder (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            if final.exists():  # no meta.json: an incomplete folder cannot come from rename; drop it
                shutil.rmtree(final)
            tmp = self.root / f".{name}.tmp-{os.uname().nodename}-{os.getpid()}"  # unique across hosts
            tmp.mkdir()
            t_build = time.perf_counter()
            try:
                try:
                    slots = _build(model, data, tmp, image_size=int(model.image_size), device=device,
                                   precision=precision, dtype=self.dtype, batch_size=batch_size,
                                   num_workers=num_workers, dedupe=True, progress=progress, first=first)
                except _AliasBroken:
                    shutil.rmtree(tmp)
                    tmp.mkdir()
                    slots = _build(model, data, tmp, image_size=int(model.image_size), device=device,
                                   precision=precision, dtype=self.dtype, batch_size=batch_size,
                                   num_workers=num_workers, dedupe=False, progress=progress, first=first)
                data.index.to_csv(tmp / "index.csv", index=False)
                # build_s (informative, not part of the key): reading + encoding + writing every image,
                # the vision half of a cached method's inference cost (efficiency tables)
                atomic_write_json(tmp / "meta.json", {**ident, "slots": slots, "n": len(data.index),
                                                      "build_s": round(time.perf_counter() - t_build, 4),
                                                      "build_device": str(device)})
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self.builds += 1
        return CachedFeatures.open(final)


class LiveFeatures:
    """The uncached path: every batch is read from disk and encoded again (what the released code does)."""

    def __init__(self, model: Any, data: DataInfo, *, device: str = "cpu", precision: str = "fp32",
                 num_workers: int = 0) -> None:
        self.model, self.data, self.device = model, data, device
        self.precision, self.num_workers = precision, num_workers
        self.labels = data.index["label"].to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self.data.index)

    def iter_batches(self, indices: Sequence[int] | np.ndarray, batch_size: int, device: str = "cpu"
                     ) -> Iterator[tuple[np.ndarray, Any, torch.Tensor, torch.Tensor]]:
        indices = np.asarray(indices, dtype=np.int64)
        loader = _loader(self.data, int(self.model.image_size), batch_size, self.num_workers, indices.tolist(),
                         pin_memory=str(self.device).startswith("cuda"))
        for start, item in zip(range(0, len(indices), batch_size), loader):
            feats = encode_batch(self.model, item["image"], self.device, self.precision)
            masks = (item["mask"] > 0.5).float().to(device)
            yield indices[start:start + batch_size], feats, item["label"].long().to(device), masks


class ConcatSource:
    """Several sources as one training set (a concatenation, as the released AdaCLIP's ConcatDataset):
    rows 0..n1-1 are the first source's, n1..n1+n2-1 the second's, and so on.

    A batch of mixed rows takes each member's part from that member (one stream per member, so image
    workers are started once per epoch, not per batch) and joins the parts with the feature type's
    ``cat``, the first member's rows first; the rows yielded say which is which.
    """

    def __init__(self, sources: Sequence[Any]) -> None:
        if not sources:
            raise ValueError("ConcatSource needs at least one source")
        self.sources = list(sources)
        self.offsets = np.cumsum([0, *(len(s) for s in self.sources)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        for s in self.sources:
            if hasattr(s, "set_epoch"):
                s.set_epoch(epoch)

    def cache_build(self) -> tuple[float, int] | None:
        """The members' cache builds summed (seconds, images); None unless every member records one
        (a part of the cost is not the cost of the set)."""
        builds = [cache_build(s) for s in self.sources]
        if any(b is None for b in builds):
            return None
        return sum(b[0] for b in builds), sum(b[1] for b in builds)

    def member_of(self, rows: np.ndarray) -> np.ndarray:
        """Index of the source each global row belongs to."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows outside 0..{len(self) - 1} of the concatenated set")
        return np.searchsorted(self.offsets, rows, side="right") - 1

    def iter_batches(self, indices: Sequence[int] | np.ndarray, batch_size: int, device: str = "cpu"
                     ) -> Iterator[tuple[np.ndarray, Any, torch.Tensor, torch.Tensor]]:
        indices = np.asarray(indices, dtype=np.int64)
        chunks = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
        owner = [self.member_of(c) for c in chunks]
        streams = []
        for m, src in enumerate(self.sources):
            parts = [c[o == m] - self.offsets[m] for c, o in zip(chunks, owner) if (o == m).any()]
            streams.append(_batch_list(src, parts, device))
        for o in owner:
            got = [(m, next(streams[m])) for m in dict.fromkeys(sorted(o.tolist()))]
            rows = np.concatenate([part[0] + self.offsets[m] for m, part in got])
            if len(got) == 1:
                yield (rows, *got[0][1][1:])
                continue
            feats = [part[1] for _, part in got]
            yield (rows, type(feats[0]).cat(feats), torch.cat([part[2] for _, part in got]),
                   torch.cat([part[3] for _, part in got]))


def cache_build(source: Any) -> tuple[float, int] | None:
    """(seconds, images) a source's feature cache took to build, or None (live and image sources, or a
    cache that does not record it): the one reader of a cache's build cost, for train and eval timing."""
    method = getattr(source, "cache_build", None)
    return method() if callable(method) else None


def _batch_list(source: Any, batches: list[np.ndarray], device: str) -> Iterator[Any]:
    """A source's batches for given row arrays: its own ``iter_batch_list`` where it has one, else one
    ``iter_batches`` call per batch (the live path: a loader per batch, slower but the same values)."""
    lister = getattr(source, "iter_batch_list", None)
    if callable(lister):
        yield from lister(batches, device)
        return
    for b in batches:
        yield next(iter(source.iter_batches(b, len(b), device)))


def features_label(model: Any, profile: Any, use_cache: bool) -> str:
    """How a run got its inputs (part of run identities): frozen-feature cache, live, or images."""
    from glocal_lib.engine.images import is_image_based

    if is_image_based(model):
        return f"images+static-cache-{profile.cache_dtype}" if use_cache else "images"
    return f"cache-{profile.cache_dtype}" if use_cache else "live"


def feature_source(model: Any, data: DataInfo, profile: Any, *, use_cache: bool, batch_size: int,
                   progress: bool = False, augment: Any = None) -> Any:
    """The one source of batches for training and evaluation, chosen by what the model declares.

    ``model.feature_source`` "frozen" (default): cached frozen features (``FeatureCache``) or, without
    the cache, live encoding; "images": images plus the model's cached static features
    (``glocal_lib.engine.images``), with ``augment`` (a Mosaic, training only). ``batch_size`` = images
    per forward while filling a cache. Every source has ``len`` and ``iter_batches(rows, bs, device)``.
    """
    from glocal_lib.engine.images import ImageSource, is_image_based, static_cache
    from glocal_lib.engine.runs import weights_identity
    from glocal_lib.errors import ConfigError

    kind = getattr(model, "feature_source", "frozen")
    weights_id = weights_identity(profile.weights, profile.cache_dir)
    if is_image_based(model):
        static = None
        if use_cache and hasattr(model, "static_features"):
            static = static_cache(model, data, root=profile.cache_dir, dtype=profile.cache_dtype,
                                  backbone=profile.backbone, weights_id=weights_id, device=profile.device,
                                  batch_size=batch_size, num_workers=profile.num_workers, progress=progress)
        return ImageSource(model, data, device=profile.device, num_workers=profile.num_workers, static=static,
                           mosaic=augment)
    if kind != "frozen":
        raise ConfigError(f"{type(model).__name__}.feature_source = {kind!r}: expected 'frozen' or 'images'")
    precision = model.cfg.precision
    if not use_cache:
        return LiveFeatures(model, data, device=profile.device, precision=precision, num_workers=profile.num_workers)
    return FeatureCache(profile.cache_dir, dtype=profile.cache_dtype).get(
        model, data, backbone=profile.backbone, weights_id=weights_id, device=profile.device, precision=precision,
        batch_size=batch_size, num_workers=profile.num_workers, progress=progress)


def class_names(model: Any, data: DataInfo) -> np.ndarray:
    """Per index row, the class name the model puts in its prompts (``model.class_name(dataset, category)``
    when it maps names, e.g. AdaCLIP's own CLS_NAMES; else the index's category)."""
    cats = data.index["category"].astype(str).to_numpy()
    mapper = getattr(model, "class_name", None)
    if not callable(mapper):
        return cats
    table = {c: mapper(data.key, c) for c in dict.fromkeys(cats)}
    return np.array([table[c] for c in cats], dtype=object)
