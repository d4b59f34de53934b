"""What an image-based method receives per batch (``feature_source = "images"``).

Methods whose trainable parts change the vision tower (AdaCLIP's visual prompts) cannot use the
frozen-feature cache; they get the images themselves plus ``static``: per-image tensors that no
trainable parameter changes (``model.static_features(images)``, e.g. AdaCLIP's un-prompted image
embedding), which the engine caches like frozen features and recomputes for augmented images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class ImageBatch:
    """images (B, 3, S, S) normalised; static: name -> (B, ...) tensors."""

    images: torch.Tensor
    static: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> ImageBatch:
        return ImageBatch(self.images.to(device=device, dtype=dtype, non_blocking=True),
                          {k: v.to(device=device, non_blocking=True) for k, v in self.static.items()})

    def __getitem__(self, idx: int | slice | torch.Tensor) -> ImageBatch:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return ImageBatch(self.images[idx], {k: v[idx] for k, v in self.static.items()})

    @staticmethod
    def cat(parts: Sequence[ImageBatch]) -> ImageBatch:
        """Batches joined in order (a concatenated training set's mixed batch)."""
        return ImageBatch(torch.cat([p.images for p in parts]),
                          {k: torch.cat([p.static[k] for p in parts]) for k in parts[0].static})
