"""Fake run folders in the contract's format, for the REPORT tests (tables, figures, index, browser).

Metric values are a deterministic function of (run name, category, metric) so a test can recompute
every expected cell independently of the code under test.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from glocal_lib.experiments.registry import EvalJob, Registry, TrainJob
from glocal_lib.experiments.results import ResultStore

IMAGE = ("image_auroc", "image_ap", "image_f1max")
PIXEL = ("pixel_auroc", "pixel_ap", "pixel_f1max", "aupro_cflow", "aupro_mvtec")
PIXEL_ONLY = {"isic", "colondb", "clinicdb", "kvasir", "endo", "tn3k"}
IMAGE_ONLY = {"headct", "brainmri", "br35h"}
CATEGORIES = {"mvtec": ["bottle", "metal_nut"], "visa": ["candle", "pcb1"], "mpdd": ["bracket_black", "tubes"],
              "dtd": ["Woven_001", "Woven_127"], "btad": ["01", "02"]}


def fake_value(name: str, category: str, metric: str) -> float:
    h = hashlib.sha256(f"{name}|{category}|{metric}".encode()).digest()
    return round(0.5 + (h[0] / 255) * 0.45, 4)


def metric_names(dataset: str) -> tuple[str, ...]:
    if dataset in PIXEL_ONLY:
        return PIXEL
    if dataset in IMAGE_ONLY:
        return IMAGE
    return IMAGE + PIXEL


def categories(dataset: str) -> list[str]:
    return CATEGORIES.get(dataset, {"isic": ["skin"], "tn3k": ["thyroid"], "sdd": ["electrical commutators"]}
                          .get(dataset, ["brain"] if dataset in IMAGE_ONLY else ["colon"]))


@dataclass
class FakeProfile:
    name: str
    results_root: Path
    banner: str = "synthetic data, random model — not paper results"
    is_synthetic: bool = True
    samples_per_category: int = 2


class FakeStore(ResultStore):
    """Run folders named after the job (no engine hashing): runs/<kind>/<job name>-fake."""

    def locate_train(self, job: TrainJob) -> Path:
        return Path(self.profile.results_root) / "runs" / "train" / f"{_safe(job.name)}-fake"

    def locate_eval(self, job: EvalJob) -> Path:
        return Path(self.profile.results_root) / "runs" / "eval" / f"{_safe(job.name)}-fake"


def _safe(name: str) -> str:
    return name.replace("@", "_at_").replace("/", "_")


def _common(path: Path, kind: str, name: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"kind": kind, "name": name, "profile": "smoke",
                                                  "banner": "synthetic data, random model — not paper results"}))
    (path / "env.json").write_text(json.dumps({"git": {"commit": "fakecommit0123", "dirty": False}}))


def write_train(path: Path, name: str, epochs: int = 2, prompts: int = 4, dim: int = 16) -> None:
    _common(path, "train", name)
    rng = np.random.default_rng(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
    emb = np.cumsum(rng.normal(size=(epochs + 1, prompts, dim)), axis=0).astype(np.float32)
    names = ["gn", "ga", "ln", "la"][:prompts]
    np.savez(path / "prompt_embeddings.npz", emb=emb, names=np.array(names), epochs=np.arange(epochs + 1))
    pd.DataFrame({"epoch": [1, 2], "step": [1, 2], "global": [0.7, 0.6], "local": [1.0, 0.9], "focal": [0.1, 0.1],
                  "dice": [0.9, 0.8], "gcl": [0.2, 0.1], "total": [1.9, 1.6]}).to_csv(path / "losses.csv", index=False)
    (path / "DONE").write_text("{}\n")


def write_eval(path: Path, name: str, dataset: str, size: int = 16) -> None:
    _common(path, "eval", name)
    rows, score_rows, sample_rows = [], [], []
    cats = categories(dataset)
    metrics = metric_names(dataset)
    for cat in cats:
        for m in metrics:
            rows.append({"dataset": dataset, "category": cat, "metric": m, "value": fake_value(name, cat, m)})
    for m in metrics:
        rows.append({"dataset": dataset, "category": "mean", "metric": m,
                     "value": float(np.mean([fake_value(name, c, m) for c in cats]))})
    pd.DataFrame(rows).to_csv(path / "metrics.csv", index=False)
    (path / "metrics.json").write_text("{}")
    (path / "samples").mkdir(exist_ok=True)
    i = 0
    rng = np.random.default_rng(0)
    for cat in cats:
        for label in (1, 0):
            for k in range(4):
                score_rows.append({"image_path": f"{cat}/{label}_{k}.png", "category": cat, "label": label,
                                   "score": float(rng.uniform(0.4, 1.0) if label else rng.uniform(0.0, 0.6))})
            img = (rng.uniform(size=(size, size, 3)) * 255).astype(np.uint8)
            mask = np.zeros((size, size), np.uint8)
            if label:
                mask[4:9, 5:11] = 1
            amap = rng.uniform(size=(size, size)).astype(np.float32) + mask
            np.savez(path / "samples" / f"{i}.npz", image=img, mask=mask, map=amap)
            sample_rows.append({"i": i, "category": cat, "image_path": f"{cat}/{label}_0.png", "label": label,
                                "score": 0.5, "file": f"samples/{i}.npz"})
            i += 1
    pd.DataFrame(score_rows).to_csv(path / "scores.csv", index=False)
    pd.DataFrame(sample_rows).to_csv(path / "samples" / "index.csv", index=False)
    (path / "DONE").write_text("{}\n")


def populate(registry: Registry, store: FakeStore, ids: list[str] | None = None, skip: set[str] | None = None) -> None:
    """Write a finished fake run for every job the artifacts plan (minus names in `skip`)."""
    plan = registry.plan(ids)
    skip = skip or set()
    for tj in plan.train_jobs:
        if tj.name not in skip:
            write_train(store.locate_train(tj), tj.name)
    for ej in plan.eval_jobs:
        if ej.name not in skip:
            write_eval(store.locate_eval(ej), ej.name, ej.dataset)
