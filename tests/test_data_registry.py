"""Manifests: complete, consistent with the published totals, tagged, and shipped with the package."""

from __future__ import annotations

import filecmp

import pytest

from glocal_lib.data import DATASET_KEYS, DATASETS, load_manifest, manifest_table, registry, resolve_key
from glocal_lib.errors import DataError

# AnomalyCLIP Table 6 (test normal, anomalous) and the released cls_name lists (dataset.py), typed in
# independently of the manifests so a wrong manifest fails here.
TABLE6 = {
    "mvtec": (467, 1258), "visa": (962, 1200), "mpdd": (176, 282), "btad": (451, 290), "sdd": (181, 74),
    "dagm": (6996, 1054), "dtd": (357, 947), "isic": (0, 379), "clinicdb": (0, 612), "colondb": (0, 380),
    "kvasir": (0, 1000), "endo": (0, 200), "tn3k": (0, 614), "headct": (100, 100), "brainmri": (98, 155),
    "br35h": (1500, 1500), "covid19": (1341, 219),
}
# BMAD as MVFA-AD reorganised it (KAnoCLIP Table 2): test counts as recalled from the BMAD paper
# (tagged U in the manifests); released_key = MVFA-AD's --obj name
BMAD = {"liverct": (660, 1258), "resc": (1041, 764), "bmad_brain": (640, 3075)}
EXPECTED = {**TABLE6, **BMAD}
RELEASED = {
    "mvtec": ("mvtec", ["carpet", "bottle", "hazelnut", "leather", "cable", "capsule", "grid", "pill",
                        "transistor", "metal_nut", "screw", "toothbrush", "zipper", "tile", "wood"]),
    "visa": ("visa", ["candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1",
                      "pcb2", "pcb3", "pcb4", "pipe_fryum"]),
    "mpdd": ("mpdd", ["bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes"]),
    "btad": ("btad", ["01", "02", "03"]),
    "dagm": ("DAGM_KaggleUpload", [f"Class{i}" for i in range(1, 11)]),
    "sdd": ("SDD", ["electrical commutators"]),
    "dtd": ("DTD", ["Woven_001", "Woven_127", "Woven_104", "Stratified_154", "Blotchy_099", "Woven_068",
                    "Woven_125", "Marbled_078", "Perforated_037", "Mesh_114", "Fibrous_183", "Matted_069"]),
    "headct": ("headct", ["brain"]), "brainmri": ("brain_mri", ["brain"]), "br35h": ("br35h", ["brain"]),
    "covid19": ("covid19", ["chest"]), "isic": ("ISIC", ["skin"]), "clinicdb": ("clinicdb", ["colon"]),
    "colondb": ("colondb", ["colon"]), "kvasir": ("kvasir", ["colon"]), "endo": ("endo", ["colon"]),
    "tn3k": ("tn3k", ["thyroid"]),
    "liverct": ("Liver", ["liver"]), "resc": ("Retina_RESC", ["retina"]), "bmad_brain": ("Brain", ["brain"]),
}
IMAGE_ONLY = {"headct", "brainmri", "br35h", "covid19"}
PIXEL_ONLY = {"isic", "colondb", "clinicdb", "kvasir", "endo", "tn3k"}


def _tags(obj, path=""):
    """Yield (path, tag) for every 'tag' key in a nested manifest."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "tag":
                yield path, v
            else:
                yield from _tags(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _tags(v, f"{path}[{i}]")


def test_all_20_manifests_load_with_the_contract_keys():
    assert tuple(DATASETS) == DATASET_KEYS and len(DATASET_KEYS) == 20
    for key in DATASET_KEYS:
        assert DATASETS[key].key == key


@pytest.mark.parametrize("key", DATASET_KEYS)
def test_manifest_facts(key):
    m = load_manifest(key)
    released_key, cats = RELEASED[key]
    assert m.released_key == released_key
    assert sorted(m.categories) == sorted(cats)
    assert m.expected_totals() == EXPECTED[key]
    counts = m.expected_counts()
    if counts[["test_normal", "test_anomalous"]].notna().all().all():
        assert (int(counts["test_normal"].sum()), int(counts["test_anomalous"].sum())) == EXPECTED[key]
    else:
        assert key in {"dtd", "dagm"}  # the only datasets without per-category counts (datasets.md §7)
    assert m.eval_level == ("image" if key in IMAGE_ONLY else "pixel" if key in PIXEL_ONLY else "both")
    assert m.has_masks == (key not in IMAGE_ONLY)
    assert m.urls and all(u.startswith("http") for u in m.urls)
    tags = dict(_tags(m.data))
    assert {".source", ".license", ".masks", ".totals"} <= set(tags)
    assert set(tags.values()) <= {"V", "C", "U"}
    assert all("tag" in c for c in m.data["categories"])
    assert m.layout["tree"].strip() and m.converter


def test_known_checksums_recorded():
    assert load_manifest("mvtec").data["archives"][0]["sha256"].startswith("cf4313b1")
    assert load_manifest("visa").data["archives"][0]["sha256"].startswith("2eb8690c")
    assert load_manifest("btad").data["archives"][0]["sha256"].startswith("461c9387")


def test_released_keys_resolve():
    assert resolve_key("SDD") == "sdd" and resolve_key("brain_mri") == "brainmri"
    assert resolve_key("DAGM_KaggleUpload") == "dagm" and resolve_key("ISIC") == "isic"
    with pytest.raises(DataError, match="unknown dataset"):
        resolve_key("imagenet")


def test_packaged_copy_matches_canonical_manifests():
    """The wheel ships glocal_lib/data/manifests/; it must equal data_manifests/ (run --sync after edits)."""
    if not (registry.REPO_DIR / "mvtec.yaml").is_file():
        pytest.skip("not a source checkout")
    assert registry.manifest_keys(registry.PACKAGED_DIR) == registry.manifest_keys(registry.REPO_DIR), (
        "the packaged manifests are not the canonical set: run `python -m glocal_lib.data.sync_manifests`")
    for key in DATASET_KEYS:
        assert filecmp.cmp(registry.REPO_DIR / f"{key}.yaml", registry.PACKAGED_DIR / f"{key}.yaml", shallow=False), (
            f"{key}.yaml differs: run `python -m glocal_lib.data.sync_manifests`")


def test_packaged_copy_is_used_without_a_checkout(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "REPO_DIR", tmp_path / "nowhere")
    assert registry.manifest_dir() == registry.PACKAGED_DIR
    monkeypatch.setenv(registry.ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(DataError, match="GLOCAL_MANIFESTS"):
        registry.manifest_dir()


def test_manifest_table_for_notebooks():
    t = manifest_table()
    assert t["key"].tolist() == list(DATASET_KEYS)
    assert dict(zip(t["key"], zip(t["test_normal"], t["test_anomalous"]))) == EXPECTED


def test_indexing_does_not_import_torch():
    """`glocal data check` must not pay torch's import time; AnomalyDataset is imported lazily."""
    import subprocess
    import sys

    code = "import sys, glocal_lib.data; assert 'torch' not in sys.modules; glocal_lib.data.AnomalyDataset"
    subprocess.run([sys.executable, "-c", code], check=True)
