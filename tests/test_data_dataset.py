"""AnomalyDataset: the released preprocessing, checked against torchvision (what the authors' code runs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision import transforms

from glocal_lib.data import build_index
from glocal_lib.data.dataset import OPENAI_MEAN, OPENAI_STD, AnomalyDataset
from glocal_lib.errors import DataError

S = 24


def _released_image(path, size=S):
    """The released pipeline: bicubic Resize on the PIL image, convert to RGB, ToTensor, Normalize."""
    t = transforms.Compose([
        transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.Lambda(lambda im: im.convert("RGB")),
        transforms.ToTensor(),
        transforms.Normalize(OPENAI_MEAN, OPENAI_STD),
    ])
    with Image.open(path) as im:
        return t(im)


def _released_mask(path, size=S):
    """The released mask: L, >0 -> 255, Resize (bilinear default) + ToTensor, then >0.5."""
    with Image.open(path) as im:
        m = Image.fromarray((np.asarray(im.convert("L")) > 0).astype(np.uint8) * 255, mode="L")
    t = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])(m)[0]
    return (t > 0.5).float()


@pytest.fixture
def small(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "kvasir"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(root / "images/rgb.png")
    Image.fromarray(rng.integers(0, 256, (30, 20), dtype=np.uint8)).save(root / "images/gray.png")
    pal = Image.fromarray(rng.integers(0, 256, (19, 23, 3), dtype=np.uint8)).convert("P", palette=Image.ADAPTIVE)
    pal.save(root / "images/pal.png")
    rgba = rng.integers(0, 256, (21, 21, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(root / "images/rgba.png")
    for name, (h, w) in {"rgb": (37, 53), "gray": (30, 20), "pal": (19, 23), "rgba": (21, 21)}.items():
        m = np.zeros((h, w), np.uint8)
        m[h // 4: h // 2, w // 3: w // 2 + 3] = 7  # small non-zero values, as in VisA
        m[-2:, -2:] = 255
        Image.fromarray(m).save(root / f"masks/{name}.png")
    return root


def test_items_match_the_released_torchvision_pipeline(small):
    idx = build_index("kvasir", small)
    ds = AnomalyDataset(small, idx, image_size=S)
    assert len(ds) == 4
    for i in range(len(ds)):
        item = ds[i]
        img_path, mask_path = small / idx.loc[i, "image_path"], small / idx.loc[i, "mask_path"]
        assert item["image"].shape == (3, S, S) and item["image"].dtype == torch.float32
        assert item["mask"].shape == (S, S) and set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        assert item["mask"].sum() > 0 and item["label"] == 1 and item["category"] == "colon"
        assert item["image_path"] == idx.loc[i, "image_path"] and item["index"] == i
        torch.testing.assert_close(item["mask"], _released_mask(mask_path), rtol=0, atol=0)
        if "pal" not in img_path.name and "rgba" not in img_path.name:  # resize-then-convert differs only there
            torch.testing.assert_close(item["image"], _released_image(img_path), rtol=0, atol=1e-5)


def test_palette_and_rgba_match_convert_first(small):
    idx = build_index("kvasir", small)
    ds = AnomalyDataset(small, idx, image_size=S)
    for i, name in enumerate(idx["image_path"]):
        with Image.open(small / name) as im:
            ref = np.asarray(im.convert("RGB").resize((S, S), Image.Resampling.BICUBIC), np.float32) / 255.0
        ref = (ref - np.array(OPENAI_MEAN, np.float32)) / np.array(OPENAI_STD, np.float32)
        np.testing.assert_allclose(ds[i]["image"].numpy(), ref.transpose(2, 0, 1), atol=1e-5)


def test_grayscale_gives_three_equal_channels(small):
    idx = build_index("kvasir", small)
    item = AnomalyDataset(small, idx, image_size=S)[int(np.flatnonzero(idx["image_path"] == "images/gray.png")[0])]
    raw = item["image"] * torch.tensor(OPENAI_STD)[:, None, None] + torch.tensor(OPENAI_MEAN)[:, None, None]
    torch.testing.assert_close(raw[0], raw[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(raw[1], raw[2], atol=1e-6, rtol=0)


def test_normal_and_maskless_items_get_zero_masks(small):
    idx = pd.DataFrame({"image_path": ["images/rgb.png", "images/gray.png"], "mask_path": ["masks/rgb.png", ""],
                        "category": ["colon", "colon"], "label": [0, 1], "defect_type": ["good", "x"],
                        "split": ["test", "test"]})
    ds = AnomalyDataset(small, idx, image_size=S)
    assert ds[0]["mask"].sum() == 0 and ds[1]["mask"].sum() == 0


def test_corrupt_image_raises_data_error_naming_the_file(small):
    (small / "images/rgb.png").write_bytes(b"garbage")
    ds = AnomalyDataset(small, build_index("kvasir", small), image_size=S)
    with pytest.raises(DataError, match="images/rgb.png"):
        [ds[i] for i in range(len(ds))]


def test_dataloader_with_workers(small):
    ds = AnomalyDataset(small, build_index("kvasir", small), image_size=S)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    batches = list(loader)
    assert sum(b["image"].shape[0] for b in batches) == 4
    assert batches[0]["mask"].shape == (2, S, S)
