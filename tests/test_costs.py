"""The priced plan: runs, images, GPU-hours and feature-cache size, checked against hand arithmetic
from the manifests and against the bytes a real feature cache writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers_engine import profile_at, shared_root, small_data

from glocal_lib.config import load_preset
from glocal_lib.data.registry import load_manifest
from glocal_lib.engine import FeatureCache, load_profile
from glocal_lib.engine.modeling import build_detector
from glocal_lib.engine.runs import weights_identity
from glocal_lib.errors import ConfigError
from glocal_lib.experiments import costs as costs_mod
from glocal_lib.experiments.registry import load_registry
from glocal_lib.experiments.reproduce import reproduce_cli


@pytest.fixture(scope="module")
def paper() -> tuple:
    return load_registry(profile="paper"), load_profile("paper")


def _images(key: str) -> int:
    normal, anomalous = load_manifest(key).expected_totals()
    return normal + anomalous


def test_umap_figure_price_by_hand(paper: tuple) -> None:
    reg, prof = paper
    costs = costs_mod.load_costs()
    row = costs_mod.price_plan(reg, ["F6"], prof, costs).iloc[0]
    plan = reg.plan(["F6"])
    assert {j.train_dataset for j in plan.train_jobs} == {"mvtec"} and not plan.eval_jobs
    n = _images("mvtec")  # 467 + 1258 test images (the zero-shot protocol trains on the test split)
    assert row["train_runs"] == len(plan.train_jobs) and row["eval_runs"] == 0
    assert row["train_images"] == 15 * n * len(plan.train_jobs)
    assert row["encoded_images"] == n  # every lambda shares one vision configuration: one cache fill
    # released GlocalCLIP aliases layers 6..24 to the final V-V tokens: one stored layer of 37 x 37 tokens
    assert row["cache_gb"] == pytest.approx(n * ((37 * 37 + 1) * 768 * 2 + 518 * 518) / 1e9)
    sec = costs["seconds_per_image"]
    assert row["gpu_h"] == pytest.approx((n * sec["encode"]["fp32"] + 15 * n * len(plan.train_jobs)
                                          * sec["train_step"]["fp32"]) / 3600)


def test_totals_count_shared_work_once(paper: tuple) -> None:
    reg, prof = paper
    # TE repeats T2's runs (and T1's: every method of both is a TE column)
    df = costs_mod.price_plan(reg, ["T2", "TE"], prof).set_index("artifact")
    total = df.loc["TOTAL"]
    assert total["train_runs"] == len(reg.plan(["T2", "TE"]).train_jobs) == df.loc["TE", "train_runs"]
    assert total["encoded_images"] == df.loc["TE", "encoded_images"] < df.loc["T2", "encoded_images"] + \
        df.loc["TE", "encoded_images"]
    assert total["gpu_h"] == pytest.approx(total[["gpu_h_encode", "gpu_h_train", "gpu_h_eval"]].sum())


def test_a_users_benchmark_overrides_the_stored_costs(paper: tuple, tmp_path: Path) -> None:
    reg, prof = paper
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"machine": "my box", "seconds_per_image": {"encode": {"fp32": 1.0}}}))
    costs = costs_mod.load_costs(mine)
    assert costs["machine"] == "my box" and str(mine) in costs["source"]
    assert costs["seconds_per_image"]["eval"] == costs_mod.load_costs()["seconds_per_image"]["eval"]
    row = costs_mod.price_plan(reg, ["F6"], prof, costs).iloc[0]
    assert row["gpu_h_encode"] == pytest.approx(row["encoded_images"] / 3600)
    with pytest.raises(ConfigError, match="not found"):
        costs_mod.load_costs(tmp_path / "missing.yaml")


def test_cache_size_formula_matches_a_real_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    torch.set_num_threads(1)
    base = shared_root(tmp_path_factory)
    profile = profile_at(base, cache_dtype="fp16").replace(cache_dir=str(tmp_path_factory.mktemp("cache16")))
    data = small_data(profile, "mvtec", ["bottle"])
    for preset in ("glocalclip-released", "anomalyclip"):  # aliased layers (1 stored) and 4 distinct ones
        cfg = load_preset(preset, "mvtec" if preset.startswith("glocal") else None)
        model = build_detector(cfg, profile, seed=0)
        cached = FeatureCache(profile.cache_dir, dtype="fp16").get(
            model, data, backbone=profile.backbone, weights_id=weights_identity(None), precision="fp32")
        folder = Path(cached.path)
        on_disk = sum(np.load(folder / f, mmap_mode="r").nbytes for f in ("patch.npy", "global.npy", "masks.npy"))
        tower = costs_mod.Tower.of(profile.backbone, profile.image_size)
        _, stored = costs_mod._vision_key(cfg, tower)
        assert on_disk == len(data.index) * tower.cache_bytes(stored, 2), preset


def test_list_prints_the_price(capsys: pytest.CaptureFixture) -> None:
    assert reproduce_cli(["--profile", "paper", "--list", "--only", "T1", "--datasets", "visa"]) == 0
    out = capsys.readouterr().out
    assert "estimated cost" in out and "GPU-h" in out and "TOTAL" in out and "cache GB" in out
    assert "estimate from FLOP counts" in out  # says where its numbers come from
