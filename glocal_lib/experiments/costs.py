"""A plan with a price: runs, images, estimated GPU-hours and feature-cache disk per artifact.

The price is arithmetic on stored per-image costs (glocal_lib/bench/costs.yaml: estimates from
FLOP counts until a benchmark replaces them; a user's own file overrides any key) and the test
image counts of data_manifests/*.yaml. Work shared by several artifacts (a run, a cache fill) is
counted in each artifact's row and once in the totals.

- train run: epochs (the run's, e.g. AdaCLIP's 5) x training-set images x `train_step` (features from the cache);
- eval run: evaluation-set images x `eval`;
- image-based methods (``feature_source = "images"``, AdaCLIP): the vision tower runs in every step, priced
  as `encode` per evaluated image and 3 x `encode` (forward + backward) per training image and epoch;
- cache fill: images x `encode`, once per (dataset, vision configuration), and its disk size:
  ((stored layers x patch tokens + 1) x embedding width x bytes per value + mask pixels) per image
  (WinCLIP's window embeddings are sized like patch tokens: an estimate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from glocal_lib.errors import ConfigError
from glocal_lib.io import read_yaml

COSTS_FILE = Path(__file__).resolve().parents[1] / "bench" / "costs.yaml"
PHASES = ("encode", "train_step", "eval")


def load_costs(override: str | Path | None = None) -> dict[str, Any]:
    """The stored costs, with the keys of `override` (a user's benchmark output) replacing them."""
    costs = read_yaml(COSTS_FILE)
    if override is None:
        return costs
    path = Path(override)
    if not path.is_file():
        raise ConfigError(f"costs file {path} not found (--costs); copy {COSTS_FILE} and edit its numbers")
    user = read_yaml(path) or {}
    if not isinstance(user, dict):
        raise ConfigError(f"costs file {path} must be a YAML mapping like {COSTS_FILE}")
    merged = {**costs, **{k: v for k, v in user.items() if k != "seconds_per_image"}}
    merged["seconds_per_image"] = {p: {**costs["seconds_per_image"].get(p, {}),
                                       **((user.get("seconds_per_image") or {}).get(p) or {})} for p in PHASES}
    if "source" not in user:
        merged["source"] = f"{path} (keys it lacks: {costs['source']})"
    return merged


def _seconds(costs: dict[str, Any], phase: str, precision: str) -> float:
    table = costs["seconds_per_image"].get(phase) or {}
    if precision not in table:
        raise ConfigError(f"costs ({costs.get('source')}): no seconds_per_image.{phase}.{precision}")
    return float(table[precision])


def dataset_images(key: str) -> int:
    """Test images of a dataset (normal + anomalous) from its manifest: what a run reads."""
    from glocal_lib.data.registry import load_manifest

    return sum(load_manifest(key).expected_totals())


@dataclass(frozen=True)
class Tower:
    """What the cache-size arithmetic needs from the backbone: depth, patch grid, embedding width."""

    depth: int
    tokens: int  # patch tokens per image at the profile's image size
    width: int  # embedding width of the stored features
    image_size: int

    def cache_bytes(self, stored_layers: int, value_bytes: int) -> int:
        """Bytes one image takes in the feature cache: its stored patch layers and global embedding
        (value_bytes each) and its mask (one byte per pixel)."""
        return (stored_layers * self.tokens + 1) * self.width * value_bytes + self.image_size ** 2

    @classmethod
    def of(cls, backbone: str, image_size: int) -> Tower:
        import open_clip

        from glocal_lib.model import backbone as _registers_tiny_configs  # noqa: F401

        cfg = open_clip.get_model_config(backbone)
        if cfg is None:
            raise ConfigError(f"unknown backbone {backbone!r}: cannot size its feature cache")
        grid = image_size // int(cfg["vision_cfg"]["patch_size"])
        return cls(depth=int(cfg["vision_cfg"]["layers"]), tokens=grid * grid, width=int(cfg["embed_dim"]),
                   image_size=image_size)


def _vision_key(cfg: Any, tower: Tower) -> tuple[tuple[Any, ...], int]:
    """(what makes two runs' cached features the same, layers the cache stores per image)."""
    from glocal_lib.config import detector_class
    from glocal_lib.model.backbone import feature_layers_for, vv_start_layer_for
    from glocal_lib.model.detector import layer_aliases

    if getattr(detector_class(cfg), "feature_source", "frozen") == "images":  # AdaCLIP: one static vector per image
        d0 = cfg.to_dict()
        return ("images", d0["method"], d0.get("activation"), d0.get("pos_resize"), d0["precision"]), 0
    # fields other methods' configs may lack take the value their detectors use (KAnoCLIP: true layers, V-V)
    d = {"dual_path": True, "attention": "vv", "global_ln_post": False, "alias_final_layer": False,
         "window_scales": (), "global_source": "original", **cfg.to_dict()}
    layers = feature_layers_for(tuple(d["feature_layers"]) if d.get("feature_layers") else None, tower.depth)
    vv = vv_start_layer_for(d.get("vv_start_layer"), tower.depth) if d["dual_path"] else None
    winclip = d["method"] == "winclip"
    stored = len(d["window_scales"]) if winclip else len(set(layer_aliases(layers, vv, d["alias_final_layer"])))
    key = (winclip, tuple(d["window_scales"]) if winclip else None, vv, layers, d["attention"],
           d["global_ln_post"], d["alias_final_layer"], d["precision"], d["global_source"])
    return key, stored


def price_plan(registry: Any, ids: Sequence[str], profile: Any, costs: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per artifact (and a TOTAL row, shared work counted once): runs, images, GPU-hours, cache GB."""
    from glocal_lib.engine.evaluate import _model_setup
    from glocal_lib.engine.train import _config

    costs = costs or load_costs()
    tower = Tower.of(profile.backbone, profile.image_size)
    value_bytes = int(costs["cache_bytes_per_value"][profile.cache_dtype])
    images: dict[str, int] = {}

    def n_images(key: str) -> int:
        if key not in images:
            images[key] = dataset_images(key)
        return images[key]

    train_cfg: dict[Any, Any] = {}

    def cfg_of_train(job: Any) -> Any:
        if job not in train_cfg:
            train_cfg[job] = _config(job.spec(), profile)
        return train_cfg[job]

    def eval_cfg(job: Any) -> Any:
        if job.train is not None:
            return cfg_of_train(job.train)
        return _model_setup(job.spec(profile), profile)[0]

    def price(plan: Any) -> dict[str, Any]:
        fills: dict[tuple[str, Any], int] = {}
        train_img = eval_img = live = 0
        for tj in plan.train_jobs:
            cfg = cfg_of_train(tj)
            key, stored = _vision_key(cfg, tower)
            for k in tj.train_datasets:  # a concatenated set fills each member's cache
                fills[(k, key)] = stored
            spec = tj.spec().resolved(profile, cfg)
            n = spec.epochs * sum(n_images(k) for k in tj.train_datasets)
            train_img += n
            live += 3 * n if key[0] == "images" else 0  # prompted tower forward + backward ~ 3 forwards
            if spec.validation is not None:  # best-epoch runs evaluate their validation set after every epoch
                fills[(spec.validation, key)] = stored
                eval_img += spec.epochs * n_images(spec.validation)
                live += spec.epochs * n_images(spec.validation) if key[0] == "images" else 0
        for ej in plan.eval_jobs:
            key, stored = _vision_key(eval_cfg(ej), tower)
            fills[(ej.dataset, key)] = stored
            eval_img += n_images(ej.dataset)
            live += n_images(ej.dataset) if key[0] == "images" else 0  # its own prompted forward
        enc_img = sum(n_images(ds) for ds, _ in fills) + live
        disk = sum(n_images(ds) * tower.cache_bytes(stored, value_bytes) for (ds, _), stored in fills.items())
        prec = profile.precision
        hours = {p: n * _seconds(costs, p, prec) / 3600 for p, n in
                 (("encode", enc_img), ("train_step", train_img), ("eval", eval_img))}
        return {"train_runs": len(plan.train_jobs), "eval_runs": len(plan.eval_jobs),
                "train_images": train_img, "eval_images": eval_img, "encoded_images": enc_img,
                "gpu_h_encode": hours["encode"], "gpu_h_train": hours["train_step"], "gpu_h_eval": hours["eval"],
                "gpu_h": sum(hours.values()), "cache_gb": disk / 1e9}

    rows = [{"artifact": aid, **price(registry.plan([aid]))} for aid in ids]
    rows.append({"artifact": "TOTAL", **price(registry.plan(list(ids)))})
    return pd.DataFrame(rows)


def format_price(df: pd.DataFrame, costs: dict[str, Any], profile: Any) -> str:
    """The priced plan as text: a line per artifact, the totals, and where the numbers come from."""
    head = (f"{'artifact':<9}{'train':>6}{'eval':>6}{'train img':>11}{'eval img':>10}{'encoded':>9}"
            f"{'GPU-h':>8}{'(enc/train/eval)':>20}{'cache GB':>10}")
    lines = [head, "-" * len(head)]
    for r in df.to_dict("records"):
        if r["artifact"] == "TOTAL":
            lines.append("-" * len(head))
        split = f"{r['gpu_h_encode']:.2f}/{r['gpu_h_train']:.2f}/{r['gpu_h_eval']:.2f}"
        lines.append(f"{r['artifact']:<9}{r['train_runs']:>6}{r['eval_runs']:>6}{r['train_images']:>11,}"
                     f"{r['eval_images']:>10,}{r['encoded_images']:>9,}{r['gpu_h']:>8.2f}{split:>20}"
                     f"{r['cache_gb']:>10.1f}")
    lines += [
        f"costs: {costs.get('source')}; machine: {costs.get('machine')}",
        f"profile {profile.name}: {profile.backbone} at {profile.image_size} px, {profile.precision}, "
        f"{profile.epochs} epochs, {profile.cache_dtype} feature cache; images = test splits from data_manifests/",
        "rows count shared runs and cache fills in every artifact that needs them; TOTAL counts them once",
    ]
    return "\n".join(lines)
