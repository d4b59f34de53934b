"""Stand-in generator: determinism, counts vs files on disk, exact masks, each layout's quirks, speed.

Counts are re-derived from the files on disk with globs written here independently of the generator
(what a converter would do), so a planner that writes a file to the wrong place fails.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from glocal_lib.data.registry import DATASET_KEYS
from glocal_lib.data.synthetic import (
    categories_of,
    generate_standin,
    make_standin,
    real_counts,
    save_standin_grid,
    standin_root,
)
from glocal_lib.errors import GlocalError

REPO = Path(__file__).resolve().parents[1]
SPEC_CSV = REPO.parent / "shared" / "spec" / "datasets.csv"
LOSSLESS = {".png", ".bmp", ".tif", ".tiff"}
IMAGE_LEVEL = {"headct", "brainmri", "br35h", "covid19"}
PIXEL_ONLY = {"isic", "colondb", "clinicdb", "kvasir", "endo", "tn3k"}


@pytest.fixture(scope="module")
def all_tiny(tmp_path_factory):
    """Every stand-in at the tiny default, generated once; also times the whole batch."""
    base = tmp_path_factory.mktemp("standins")
    t0 = time.process_time()  # CPU time: the bound must not depend on other jobs sharing the machine
    results = {k: generate_standin(k, base / k) for k in DATASET_KEYS}
    return results, time.process_time() - t0


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in _files(root)}


def _n(root: Path, pattern: str) -> int:
    return sum(1 for p in root.glob(pattern) if p.is_file())


def _disk_counts(key: str, root: Path, cat: str) -> tuple[int, int, int]:
    """(normal, anomalous, masks) of one category's test split, from the files alone."""
    if key in {"mvtec", "mpdd", "dtd", "sdd"}:
        n = _n(root, f"{cat}/test/good/*.png")
        a = sum(_n(d, "*.png") for d in (root / cat / "test").iterdir() if d.name != "good")
        return n, a, _n(root, f"{cat}/ground_truth/*/*_mask.png")
    if key == "btad":
        return (
            _n(root, f"{cat}/test/ok/*"),
            _n(root, f"{cat}/test/ko/*"),
            _n(root, f"{cat}/ground_truth/ko/*"),
        )
    if key == "visa":
        with open(root / "split_csv" / "1cls.csv", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["object"] == cat and r["split"] == "test"]
        assert all((root / r["image"]).is_file() for r in rows)
        masks = [r["mask"] for r in rows if r["label"] == "anomaly"]
        assert all((root / m).is_file() for m in masks)
        return sum(r["label"] == "normal" for r in rows), len(masks), len(masks)
    if key == "headct":
        return _n(root, "brain/test/good/*"), _n(root, "brain/test/defect/*"), 0
    if key == "brainmri":
        return _n(root, "brain_tumor_dataset/no/*"), _n(root, "brain_tumor_dataset/yes/*"), 0
    if key == "br35h":
        return _n(root, "br35/no/*.jpg"), _n(root, "br35/yes/*.jpg"), 0
    if key == "covid19":
        return _n(root, "covid/NORMAL/*.png"), _n(root, "covid/COVID-19/*.png"), 0
    if key == "isic":
        return (
            0,
            _n(root, "skin/test/defect/ISIC_*.jpg"),
            _n(root, "skin/ground_truth/defect/*_Segmentation.png"),
        )
    if key in {"colondb", "clinicdb", "kvasir", "endo"}:
        return 0, _n(root, "images/*"), _n(root, "masks/*")
    if key == "tn3k":
        return 0, _n(root, "test-image/*.jpg"), _n(root, "test-mask/*.jpg")
    if key == "dagm":
        images = [p.stem for p in (root / cat / "Test").glob("*.PNG")]
        labelled = {
            p.name.removesuffix("_label.PNG") for p in (root / cat / "Test" / "Label").glob("*_label.PNG")
        }
        assert labelled <= set(images)
        return len(images) - len(labelled), len(labelled), len(labelled)
    if key in {"liverct", "resc", "bmad_brain"}:  # BMAD as MVFA-AD reorganised it
        return _n(root, "test/good/img/*"), _n(root, "test/Ungood/img/*"), _n(root, "test/Ungood/anomaly_mask/*")
    raise AssertionError(key)


# ------------------------------------------------------------------------------------------ counts


def test_tiny_all_17_fast_and_complete(all_tiny):
    results, seconds = all_tiny
    assert seconds < 8, f"tiny stand-ins for all 17 datasets took {seconds:.1f}s of CPU"
    for key, res in results.items():
        df = res.counts
        assert list(df["category"]) == list(categories_of(key)), key  # every real category by default
        if len(df) == 1:  # the whole dataset in one category: enough images that every smoke metric is defined
            assert df["test_anomalous"].iloc[0] >= 8, key
            assert df["test_normal"].iloc[0] == (0 if key in PIXEL_ONLY else 6), key
            continue
        assert df["test_anomalous"].between(2, 4).all(), key
        if key in PIXEL_ONLY:
            assert (df["test_normal"] == 0).all(), key
        else:
            assert df["test_normal"].between(2, 4).all(), key


@pytest.mark.parametrize("key", DATASET_KEYS)
def test_counts_equal_files_on_disk(all_tiny, key):
    res = all_tiny[0][key]
    for row in res.counts.itertuples():
        n, a, masks = _disk_counts(key, res.root, row.category)
        assert (n, a) == (row.test_normal, row.test_anomalous), (key, row.category)
        expected_masks = 0 if key in IMAGE_LEVEL else row.test_anomalous
        assert masks == expected_masks, (key, row.category)
    test = [f for f in res.files if f.split == "test"]
    assert len(test) == res.counts[["test_normal", "test_anomalous"]].to_numpy().sum()
    for f in res.files:  # every listed file exists, and nothing listed twice
        assert (res.root / f.image_path).is_file()
        assert not f.mask_path or (res.root / f.mask_path).is_file()
    assert len({f.image_path for f in res.files}) == len(res.files)


def test_scale_one_gives_real_mvtec_counts_fast(tmp_path):
    t0 = time.process_time()
    df = make_standin("mvtec", tmp_path / "mvtec", scale=1.0, image_size=32)
    seconds = time.process_time() - t0
    real = pd.DataFrame(
        [(c, n, a) for c, (n, a) in real_counts("mvtec").items()],
        columns=["category", "test_normal", "test_anomalous"],
    )
    pd.testing.assert_frame_equal(df[real.columns], real)
    assert (df["test_normal"].sum(), df["test_anomalous"].sum()) == (467, 1258)
    n_png = _n(tmp_path / "mvtec", "*/test/*/*.png")
    assert n_png == 1725
    assert seconds < 20, f"MVTec-sized stand-in took {seconds:.1f}s of CPU"


def test_float_scale_rounds_per_category_and_btad_empty_masks(tmp_path):
    df = make_standin("btad", tmp_path / "btad", scale=0.5)
    assert df.set_index("category")[["test_normal", "test_anomalous"]].to_dict("index") == {
        "01": {"test_normal": 10, "test_anomalous": 24},  # round(10.5) = 10 (banker's), round(24.5) = 24
        "02": {"test_normal": 15, "test_anomalous": 100},
        "03": {"test_normal": 200, "test_anomalous": 20},
    }
    assert df.set_index("category")["empty_masks"].to_dict() == {"01": 0, "02": 0, "03": 5}
    empties = [
        p
        for p in (tmp_path / "btad" / "03" / "ground_truth" / "ko").iterdir()
        if not np.asarray(Image.open(p)).any()
    ]
    assert len(empties) == 5
    tiny = make_standin("dagm", tmp_path / "d", scale=0.01)
    assert (tiny["test_normal"] == 7).all() and (tiny["test_anomalous"] == 1).all()  # 699.6*0.01 -> 7


def test_real_counts_match_spec_csv_and_manifests():
    """The manifests (the generator's one source of counts) agree with the spec CSV; DTD/DAGM keep their totals."""
    if SPEC_CSV.is_file():
        spec = pd.read_csv(SPEC_CSV, dtype={"category": str})
        names = {
            "MVTec AD": "mvtec",
            "VisA": "visa",
            "MPDD": "mpdd",
            "BTAD": "btad",
            "SDD": "sdd",
            "HeadCT": "headct",
            "BrainMRI": "brainmri",
            "Br35H": "br35h",
            "ISIC": "isic",
            "CVC-ColonDB": "colondb",
            "CVC-ClinicDB": "clinicdb",
            "Kvasir": "kvasir",
            "Endo": "endo",
            "TN3K": "tn3k",
            "COVID-19": "covid19",
        }
        for row in spec.itertuples():
            key = names.get(row.dataset)
            if key is None or pd.isna(row.test_normal):
                continue
            assert real_counts(key)[row.category] == (int(row.test_normal), int(row.test_anomalous))
    totals = {"dtd": (357, 947), "dagm": (6996, 1054)}
    for key, (n, a) in totals.items():
        vals = np.array(list(real_counts(key).values()))
        assert tuple(vals.sum(0)) == (n, a)


# ------------------------------------------------------------------------------------------ masks


@pytest.mark.parametrize("key", DATASET_KEYS)
def test_masks_exactly_cover_changed_pixels(all_tiny, key):
    res = all_tiny[0][key]
    for f in res.files:
        s = res.render(f)
        changed = s.image != s.base if s.image.ndim == 2 else (s.image != s.base).any(-1)
        np.testing.assert_array_equal(s.mask > 0, changed)
        if f.label == 0:
            assert not changed.any(), f.image_path
            continue
        assert changed.sum() >= 6, f.image_path
        # a defect must be visible: a large mean change inside the mask
        delta = np.abs(s.image.astype(int) - s.base.astype(int)).reshape(*changed.shape, -1).max(-1)
        assert delta[changed].mean() > 25, (f.image_path, delta[changed].mean())
        assert changed.mean() < 0.25, f.image_path
        with Image.open(res.root / f.image_path) as im:
            lossless = Path(f.image_path).suffix.lower() in LOSSLESS and im.mode != "P"
            disk = np.asarray(im.convert("L" if s.image.ndim == 2 else "RGB"))
        if lossless:  # what is on disk is exactly the render
            np.testing.assert_array_equal(disk, s.image)
        if f.mask_path:
            with Image.open(res.root / f.mask_path) as im:
                m = np.asarray(im.convert("L"))
            with Image.open(res.root / f.image_path) as im:
                assert im.size == (m.shape[1], m.shape[0]), f.mask_path  # mask has the image's size
            if f.empty_mask:
                assert not m.any()
            elif Path(f.mask_path).suffix.lower() in LOSSLESS:
                np.testing.assert_array_equal(m > 0, changed)
            else:  # JPEG masks: the object survives thresholding; `> 0` only grows it (noise)
                assert ((m > 127) == changed).mean() > 0.97
                assert not (changed & (m == 0)).any()


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    keys = {
        "mvtec": ["bottle", "grid"],
        "visa": ["candle", "capsules"],
        "btad": None,
        "kvasir": None,
        "brainmri": None,
        "dagm": ["Class1"],
        "clinicdb": None,
    }
    for key, cats in keys.items():
        a = generate_standin(key, tmp_path / "a" / key, seed=3, categories=cats)
        b = generate_standin(key, tmp_path / "b" / key, seed=3, categories=cats)
        c = generate_standin(key, tmp_path / "c" / key, seed=4, categories=cats)
        da, db, dc = _tree_digest(a.root), _tree_digest(b.root), _tree_digest(c.root)
        assert da == db, key
        pd.testing.assert_frame_equal(a.counts, b.counts)
        pics_a = {v for p, v in da.items() if not p.endswith((".csv", ".txt"))}
        pics_c = {v for p, v in dc.items() if not p.endswith((".csv", ".txt"))}
        assert pics_a and not pics_a & pics_c, key  # another seed: no image or mask byte-identical


def test_overwrite_and_nonempty_root(tmp_path):
    make_standin("sdd", tmp_path / "sdd")
    with pytest.raises(GlocalError, match="not empty"):
        make_standin("sdd", tmp_path / "sdd")
    before = _tree_digest(tmp_path / "sdd")
    (tmp_path / "sdd" / "stale.txt").write_text("x")
    make_standin("sdd", tmp_path / "sdd", overwrite=True)
    assert _tree_digest(tmp_path / "sdd") == before


# ------------------------------------------------------------------------------------------ layout quirks


def test_visa_csv_crlf_and_small_mask_values(all_tiny):
    res = all_tiny[0]["visa"]
    raw = (res.root / "split_csv" / "1cls.csv").read_bytes()
    assert raw.startswith(b"object,split,label,image,mask\r\n")
    assert raw.count(b"\n") == raw.count(b"\r\n") > 1  # CRLF everywhere, no bare LF
    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    assert {r["split"] for r in rows} == {"train", "test"}
    assert all(r["mask"] == "" for r in rows if r["label"] == "normal")
    values = set()
    for r in rows:
        if r["mask"]:
            values |= set(np.unique(np.asarray(Image.open(res.root / r["mask"]))).tolist())
    assert 0 in values and values - {0} and max(values) <= 3  # small non-zero values, not 255
    assert re.fullmatch(
        r"candle/Data/Images/Normal/\d{4}\.JPG",
        next(r["image"] for r in rows if r["object"] == "candle" and r["label"] == "normal"),
    )
    assert re.fullmatch(
        r"cashew/Data/Images/Normal/\d{3}\.JPG",
        next(r["image"] for r in rows if r["object"] == "cashew" and r["label"] == "normal"),
    )
    assert (res.root / "candle" / "image_anno.csv").is_file()
    with Image.open(res.root / rows[0]["image"]) as im:
        assert im.format == "JPEG"


def test_btad_extensions_and_mask_encodings(all_tiny):
    root = all_tiny[0]["btad"].root
    expect = {"01": (".bmp", ".png", 255), "02": (".png", ".png", 1), "03": (".bmp", ".bmp", 255)}
    for cat, (img_ext, mask_ext, fg) in expect.items():
        imgs = list((root / cat / "test").rglob("*.*")) + list((root / cat / "train").rglob("*.*"))
        assert {p.suffix for p in imgs} == {img_ext}, cat
        masks = list((root / cat / "ground_truth" / "ko").iterdir())
        assert {p.suffix for p in masks} == {mask_ext}, cat
        assert {p.stem for p in masks} == {p.stem for p in (root / cat / "test" / "ko").iterdir()}
        assert {int(np.asarray(Image.open(p)).max()) for p in masks} == {fg}, cat
        assert (root / cat / "train" / "ok").is_dir()


def test_mvtec_like_layouts(all_tiny):
    res = all_tiny[0]["mvtec"]
    root = res.root
    for cat in categories_of("mvtec"):
        with Image.open(next((root / cat / "test" / "good").iterdir())) as im:
            assert im.mode == ("L" if cat in {"grid", "screw", "zipper"} else "RGB"), cat
        assert _n(root, f"{cat}/train/good/*.png") == 2
        for img in (root / cat / "test").glob("[!g]*/*.png"):
            mask = root / cat / "ground_truth" / img.parent.name / f"{img.stem}_mask.png"
            assert set(np.unique(np.asarray(Image.open(mask))).tolist()) <= {0, 255}
    folders = {p.name for p in (root / "bottle" / "test").iterdir()}  # real defect names, spread round-robin
    assert folders == {"good", "broken_large", "broken_small", "contamination"}
    assert re.fullmatch(r"\d{3}", next((root / "bottle" / "test" / "good").iterdir()).stem)
    dtd = all_tiny[0]["dtd"].root
    assert _n(dtd, "Woven_001/test/bad/*.png") == _n(dtd, "Woven_001/ground_truth/bad/*_mask.png") > 0
    mpdd = all_tiny[0]["mpdd"].root
    assert {p.name for p in (mpdd / "metal_plate" / "test").iterdir()} <= {
        "good",
        "major_rust",
        "scratches",
        "total_rust",
    }


def test_mpdd_brackets_have_the_colour_their_name_says(all_tiny):
    """A "white" bracket drawn in a random colour (pink on brown) left the smoke's trained models no white
    object to learn; each bracket's good images must show a sizeable near-white / near-black patch."""
    root = all_tiny[0]["mpdd"].root

    def share(cat: str, test) -> float:
        imgs = [np.asarray(Image.open(p).convert("RGB")).astype(int) for p in (root / cat / "test" / "good").iterdir()]
        return float(np.mean([test(im).all(-1).mean() for im in imgs]))

    assert share("bracket_white", lambda im: im > 190) > 0.05
    assert share("bracket_black", lambda im: im < 70) > 0.05
    assert share("bracket_white", lambda im: im < 70) < 0.01 and share("bracket_black", lambda im: im > 190) < 0.01


def test_polyps_and_nodules_look_like_tissue_not_stains(all_tiny):
    """The smoke's trained models ranked a flat blue polyp on a smooth ramp (MVTec's normal capsule/pill
    look) and a flat disc on per-pixel speckle below their backgrounds, leaving AUPROs undefined. Polyps
    must keep the mucosa's red hue and nodules be hypoechoic tissue: darker, but still speckled."""
    def regions(key: str, images: str, masks: str, mode: str):
        root = all_tiny[0][key].root
        for p in sorted((root / images).iterdir()):
            img = np.asarray(Image.open(p).convert(mode)).astype(float)
            m = np.asarray(Image.open(next((root / masks).glob(p.stem + "*"))).convert("L")) > 127
            yield img[m], img[~m]

    for key in ("clinicdb", "kvasir"):
        for inside, outside in regions(key, "images", "masks", "RGB"):
            assert inside.mean(0)[0] > inside.mean(0)[2] + 40  # red, not the blue stain it was
            assert abs(inside.mean() - outside.mean()) > 5  # but visibly different from the mucosa
    for inside, outside in regions("tn3k", "test-image", "test-mask", "L"):
        assert inside.mean() < 0.85 * outside.mean()  # hypoechoic
        assert inside.std() > 0.25 * outside.std()  # its own speckle, not a flat disc


def test_sdd_empty_train_and_half_names(all_tiny):
    root = all_tiny[0]["sdd"].root
    cat = root / "electrical commutators"
    assert cat.is_dir() and (cat / "train" / "good").is_dir()
    assert not any((cat / "train" / "good").iterdir())
    names = [p.name for p in (cat / "test").rglob("*.png")]
    assert names and all(re.fullmatch(r"kos\d{2}_Part\d_[01]\.png", n) for n in names)
    assert len(set(names)) == len(names)
    with Image.open(next((cat / "test" / "good").iterdir())) as im:
        assert im.mode == "L" and im.size[1] > im.size[0]  # grayscale halves, taller than wide


def test_medical_layouts(all_tiny):
    r = {k: v.root for k, v in all_tiny[0].items()}
    isic_imgs = sorted((r["isic"] / "skin" / "test" / "defect").iterdir())
    for p in isic_imgs:
        assert re.fullmatch(r"ISIC_\d{7}\.jpg", p.name)
        assert (r["isic"] / "skin" / "ground_truth" / "defect" / f"{p.stem}_Segmentation.png").is_file()
    assert not (r["isic"] / "skin" / "test" / "good").exists()
    for key in ("colondb", "clinicdb", "kvasir", "endo"):
        assert {p.stem for p in (r[key] / "images").iterdir()} == {
            p.stem for p in (r[key] / "masks").iterdir()
        }
    assert {p.suffix for p in (r["clinicdb"] / "images").iterdir()} == {".tif"}
    n_clinic = int(all_tiny[0]["clinicdb"].counts["test_anomalous"].sum())
    assert {p.stem for p in (r["clinicdb"] / "images").iterdir()} == {str(i + 1) for i in range(n_clinic)}
    kv = next((r["kvasir"] / "masks").iterdir())
    with Image.open(kv) as im:
        assert im.format == "JPEG" and im.mode == "RGB"
    noisy = set()
    for p in (r["kvasir"] / "masks").iterdir():
        noisy |= set(np.unique(np.asarray(Image.open(p).convert("L"))).tolist())
    assert noisy - {0, 255}, "JPEG masks should carry compression noise"
    with Image.open(next((r["tn3k"] / "test-mask").iterdir())) as im:
        assert im.format == "JPEG" and im.mode == "L"
    assert _n(r["tn3k"], "trainval-image/*.jpg") == _n(r["tn3k"], "trainval-mask/*.jpg") == 2
    assert sorted(p.name for p in r["endo"].iterdir()) == ["images", "masks"]
    # image-level sets: no mask anywhere
    for key in IMAGE_LEVEL:
        assert not any(f.mask_path for f in all_tiny[0][key].files)
    assert sorted(p.name for p in (r["headct"] / "brain" / "test").iterdir()) == ["defect", "good"]
    assert sorted(p.name for p in (r["covid19"] / "covid").iterdir()) == ["COVID-19", "NORMAL"]
    assert sorted(p.name for p in (r["br35h"] / "br35").iterdir()) == ["no", "yes"]


def test_brainmri_mixed_names_modes(tmp_path):
    res = generate_standin("brainmri", tmp_path / "b", scale=0.05)  # 5 normal, 8 anomalous
    names = [Path(f.image_path).name for f in res.files]
    assert {Path(n).suffix for n in names} == {".jpeg", ".JPG", ".jpg", ".png"}
    assert any(" " in n for n in names)
    modes = set()
    for f in res.files:
        with Image.open(res.root / f.image_path) as im:
            modes.add(im.mode)
    assert {"L", "RGB", "P", "RGBA"} <= modes


def test_dagm_root_and_labels(all_tiny, tmp_path):
    res = all_tiny[0]["dagm"]
    assert res.root.name == "DAGM_KaggleUpload"
    assert standin_root("dagm", tmp_path / "DAGM_KaggleUpload") == tmp_path / "DAGM_KaggleUpload"
    assert standin_root("mvtec", tmp_path / "x") == tmp_path / "x"
    for cat in ("Class1", "Class10"):
        for phase in ("Train", "Test"):
            label_dir = res.root / cat / phase / "Label"
            assert (label_dir / "Labels.txt").is_file()
            labels = [p.name for p in label_dir.glob("*.PNG")]
            assert labels and all(re.fullmatch(r"\d{4}_label\.PNG", n) for n in labels)
        with Image.open(next((res.root / cat / "Test").glob("*.PNG"))) as im:
            assert im.mode == "L"
    assert res.counts.attrs["root"] == str(res.root)


# ------------------------------------------------------------------------------------------ API errors


def test_bad_arguments_raise_glocal_errors(tmp_path):
    with pytest.raises(GlocalError, match="unknown dataset key"):
        make_standin("mvtecad", tmp_path / "a")
    with pytest.raises(GlocalError, match="not mvtec categories"):
        make_standin("mvtec", tmp_path / "b", categories=["bottel"])
    for bad in ("huge", 0, -1.0, True):
        with pytest.raises(GlocalError, match="scale"):
            make_standin("mvtec", tmp_path / "c", scale=bad)
    df = make_standin("mvtec", tmp_path / "d", categories=["zipper", "bottle"])
    assert list(df["category"]) == ["bottle", "zipper"]
    assert sorted(p.name for p in (tmp_path / "d").iterdir() if p.is_dir()) == ["bottle", "zipper"]


def test_grid_png(tmp_path):
    out = save_standin_grid(tmp_path / "grid.png", keys=["mvtec", "isic", "headct"], image_size=48)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200


def test_bytes_identical_across_processes(tmp_path):
    """No dependence on Python's salted hashing or set order: a fresh process writes the same bytes."""
    import os
    import subprocess
    import sys

    code = (
        "import sys; from glocal_lib.data.synthetic import make_standin\n"
        "make_standin('kvasir', sys.argv[1] + '/kvasir')\n"
        "make_standin('visa', sys.argv[1] + '/visa', categories=['pcb1'])\n"
    )
    digests = []
    for i, hashseed in enumerate(("1", "2")):
        out = tmp_path / str(i)
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env, cwd=REPO)
        digests.append(_tree_digest(out))
    assert digests[0] == digests[1] and len(digests[0]) > 10
