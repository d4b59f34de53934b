"""A comparison table's Mean row sets our mean beside the published one with a difference only where both
average the same datasets: with a dataset's run missing, the difference is withheld and the note says why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from report_fakes import FakeProfile, FakeStore, populate

from glocal_lib.experiments import kinds
from glocal_lib.experiments.kinds.comparison import MEAN_SUBSET
from glocal_lib.experiments.registry import load_registry


def _t1(root: Path, skip: set[str]) -> tuple:
    profile = FakeProfile("smoke", root)
    reg = load_registry(profile="smoke")
    store = FakeStore(profile)
    populate(reg, store, ["T1"], skip=skip)
    return reg, kinds.build_table(reg, store, "T1")


def _mean(df, method: str, metric: str):
    return df[(df["row"] == method) & (df["dataset"] == "Mean") & (df["metric"] == metric)].iloc[0]


def test_mean_difference_only_over_the_same_datasets(tmp_path: Path) -> None:
    reg, full = _t1(tmp_path / "full", set())
    clip_visa = next(j.name for j in reg.plan(["T1"]).eval_jobs
                     if j.train is None and j.preset == "clip" and j.dataset == "visa")
    _, part = _t1(tmp_path / "part", {clip_visa})
    m = "image_auroc"
    whole, cut = _mean(full.data, "CLIP", m), _mean(part.data, "CLIP", m)
    assert whole["diff"] == pytest.approx(whole["reproduced"] - whole["paper"]) and MEAN_SUBSET not in whole["note"]
    rows = full.data[(full.data["row"] == "CLIP") & (full.data["metric"] == m) & (full.data["dataset"] != "Mean")]
    assert whole["reproduced"] == pytest.approx(np.mean(rows["reproduced"]))  # the mean our diff stands on
    assert cut["paper"] == whole["paper"] and np.isnan(cut["diff"]) and MEAN_SUBSET in cut["note"]
    n = int(rows["paper"].notna().sum())
    assert f"({n - 1} of the {n} published)" in cut["note"]
    assert any(note.startswith("CLIP: Mean without a difference") for note in part.notes)
    other = _mean(part.data, "GlocalCLIP", m)  # a column with every run keeps its difference
    assert not np.isnan(other["diff"])
