"""Adding a dataset is adding a manifest: keys, names, domains, stand-ins and indexes follow from it.

Each test copies the shipped manifests into a private folder ($GLOCAL_MANIFESTS), adds one manifest
of an existing converter, and checks that every consumer sees it without any code change.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import yaml

from glocal_lib.data import build_index, registry
from glocal_lib.data.registry import DATASETS, load_manifest, manifest_keys, resolve_key
from glocal_lib.data.synthetic import generate_standin
from glocal_lib.errors import DataError
from glocal_lib.experiments.registry import load_registry

SHIPPED = registry.manifest_dir()


def _folder_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, like: str, **fields) -> Path:
    """A manifest folder = the shipped manifests + `<key>.yaml`, a copy of `like` with `fields` changed."""
    folder = tmp_path / "manifests"
    shutil.copytree(SHIPPED, folder)
    data = yaml.safe_load((SHIPPED / f"{like}.yaml").read_text())
    data.update(key=key, **fields)
    (folder / f"{key}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv(registry.ENV_VAR, str(folder))
    return folder


@pytest.mark.parametrize("like", ["mpdd", "colondb", "br35h"])  # mvtec_style, images_masks, image_folders
def test_a_new_manifest_of_a_known_layout_is_generated_indexed_and_named(tmp_path, monkeypatch, like):
    cats = [{"name": "part_a", "test_normal": 5, "test_anomalous": 7, "tag": "U"}] if like == "mpdd" else None
    extra = {"categories": cats, "defect_types": {"part_a": ["dent", "crack"]}} if cats else {}
    _folder_with(tmp_path, monkeypatch, "newset", like, name="New Set (long name)", short_name="NewSet",
                 released_key="New_Set", domain="medical" if like == "mpdd" else "industrial", **extra)
    assert "newset" in DATASETS and resolve_key("New_Set") == "newset"
    res = generate_standin("newset", tmp_path / "data", seed=1, image_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean stand-in indexes without warnings
        df = build_index("newset", res.root)
    want = {(f.image_path, f.mask_path, f.label) for f in res.files if f.split == "test"}
    assert set(zip(df["image_path"], df["mask_path"], df["label"])) == want
    assert len(want) == int(res.counts["test_normal"].sum() + res.counts["test_anomalous"].sum()) > 0
    if cats:  # the defect folders are the manifest's
        assert set(df.loc[df["label"] == 1, "defect_type"]) == {"dent", "crack"}
    reg = load_registry(profile="smoke", datasets=["newset"])  # a known key for --datasets
    assert reg.dataset_name("newset") == "NewSet"
    assert reg.domain_of("newset") == ("medical" if like == "mpdd" else "industrial")


def test_manifest_without_a_domain_is_refused_naming_the_file(tmp_path, monkeypatch):
    folder = _folder_with(tmp_path, monkeypatch, "newset", "colondb", domain="space")
    with pytest.raises(DataError, match=r"newset\.yaml: domain must be one of"):
        load_manifest("newset")
    data = yaml.safe_load((folder / "newset.yaml").read_text())
    del data["short_name"]
    (folder / "newset.yaml").write_text(yaml.safe_dump(data))
    DATASETS.clear_cache()
    with pytest.raises(DataError, match="short_name"):
        load_manifest("newset")


def test_keys_are_the_manifest_files_and_the_packaged_copy_drops_removed_ones(tmp_path):
    assert tuple(DATASETS) == manifest_keys(registry.REPO_DIR) == tuple(sorted(
        p.name.removesuffix(".yaml") for p in registry.REPO_DIR.iterdir() if p.suffix == ".yaml"))
    src, dst = tmp_path / "src", tmp_path / "dst"
    shutil.copytree(SHIPPED, src)
    shutil.copytree(SHIPPED, dst)
    (dst / "gone.yaml").write_text("key: gone\n")
    (src / "sdd.yaml").unlink()
    registry.sync_packaged_copy(src, dst)
    assert manifest_keys(dst) == manifest_keys(src) and "gone" not in manifest_keys(dst)


def test_a_protocol_naming_a_dataset_without_manifest_is_refused(tmp_path):
    from glocal_lib.errors import ConfigError
    from glocal_lib.experiments.registry import REGISTRY_FILE

    data = yaml.safe_load(REGISTRY_FILE.read_text())
    data["protocols"]["quick"]["medical"][0]["eval"].append("liverct_typo")
    bad = tmp_path / "experiments.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"liverct_typo.*have no manifest"):
        load_registry(bad)


def test_short_names_are_unique():
    """Tables key their rows and the published values on the short name: two datasets must not share one."""
    names = [m.short_name for m in DATASETS.values()]
    assert len(set(names)) == len(names), sorted(n for n in names if names.count(n) > 1)
