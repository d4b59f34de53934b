"""Smoke that shows something: after `glocal reproduce --profile smoke`, every metric of T1-T10, TA and TX
is defined wherever its dataset's evaluation level defines it, and no eval run has an undefined
category (a category with one label, or a pixel-level set without a defect pixel).

CI: `GLOCAL_SMOKE_RESULTS=results/smoke python -m pytest tests/test_smoke_defined.py` after the
reproduction; skipped when GLOCAL_SMOKE_RESULTS is unset. What "defined here" means comes from the
manifests (`eval_level`), not from this file: image-level sets (no masks) have no pixel metrics and
pixel-level sets (anomalous images only) no image metrics, as in the papers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from glocal_lib.data.registry import DATASETS
from glocal_lib.experiments.tables import NOT_RECORDED_NOTE, read_table_csv
from glocal_lib.metrics import IMAGE_METRICS

RESULTS = os.environ.get("GLOCAL_SMOKE_RESULTS")
needs_smoke = pytest.mark.skipif(not RESULTS, reason="set GLOCAL_SMOKE_RESULTS=results/smoke after "
                                 "`glocal reproduce --profile smoke`")
TABLES = ("T1", "T2", "T3", "T4", "T6", "T7", "T8", "T9", "T10", "TA", "TX", "V1", "V2", "V3", "V4", "V5", "V6", "VX",
          "AX")  # T5 counts images, no metric; V3: times, memory and parameter counts
MEAN = "Mean"


def _level_defines(dataset_name: str, metric: str) -> bool:
    """Whether the dataset printed as `dataset_name` defines `metric` (its manifest's eval_level)."""
    by_name = {m.short_name: m for m in DATASETS.values()}
    level = by_name[dataset_name].eval_level
    return level == "both" or level == ("image" if metric in IMAGE_METRICS else "pixel")


def undefined_cells(df: pd.DataFrame) -> list[str]:
    """Cells whose run exists and whose metric the dataset defines, but that hold no value. A "Mean"
    cell counts when any dataset it averages has a run (it is undefined only if all of them are)."""
    bad = []
    has_run = df["run_ids"].astype(object).fillna("").astype(str).str.strip() != ""
    # V3's timings of a reused run made before the engine recorded them: printed "not recorded", not undefined
    notes = df["note"].astype(object).fillna("").astype(str) if "note" in df.columns else pd.Series("", index=df.index)
    empty = df["reproduced"].isna() & (notes != NOT_RECORDED_NOTE)
    for key, group in df.groupby(["section", "domain", "row"], dropna=False, sort=False):
        runs_in_group = bool(has_run[group.index].any())
        for i, r in group.iterrows():
            if not empty[i]:
                continue
            if r["dataset"] == MEAN:
                if runs_in_group:
                    bad.append(f"{' / '.join(map(str, key))} / Mean / {r['metric']}")
            elif has_run[i] and _level_defines(r["dataset"], r["metric"]):
                bad.append(f"{' / '.join(map(str, key))} / {r['dataset']} / {r['metric']} (runs {r['run_ids']})")
    return bad


def _root() -> Path:
    root = Path(str(RESULTS))
    assert root.is_dir(), f"{root} does not exist: run `glocal reproduce --profile smoke` first"
    return root


def test_undefined_cells_counts_only_cells_the_dataset_and_its_runs_define() -> None:
    rows = [  # (row, dataset, metric, reproduced, run_ids)
        ("CLIP", "HeadCT", "pixel_auroc", None, "r1"),       # image-level set: no pixel metric, fine
        ("CLIP", "HeadCT", "image_auroc", None, "r1"),       # undefined
        ("CLIP", "Kvasir", "image_ap", None, "r2"),          # pixel-level set: no image metric, fine
        ("CLIP", "Kvasir", "pixel_auroc", 0.5, "r2"),
        ("CLIP", MEAN, "image_auroc", None, ""),             # averages a dataset with a run: undefined
        ("AdaCLIP", "HeadCT", "image_auroc", None, ""),      # no run (published values only): fine
        ("AdaCLIP", MEAN, "image_auroc", None, ""),
    ]
    df = pd.DataFrame([{"section": None, "domain": "medical", "row": r, "dataset": d, "metric": m,
                        "reproduced": v, "run_ids": ids} for r, d, m, v, ids in rows])
    bad = undefined_cells(df)
    assert len(bad) == 2 and "HeadCT / image_auroc" in bad[0] and "Mean / image_auroc" in bad[1]


def test_a_reused_runs_missing_record_is_not_an_undefined_metric() -> None:
    df = pd.DataFrame([{"section": None, "domain": "", "row": "ViP2-CLIP", "dataset": "VisA", "metric": m,
                        "reproduced": None, "run_ids": "r1", "note": note}
                       for m, note in (("infer_ms", NOT_RECORDED_NOTE), ("train_time_h", ""))])
    bad = undefined_cells(df)
    assert len(bad) == 1 and "train_time_h" in bad[0]


@needs_smoke
@pytest.mark.parametrize("aid", TABLES)
def test_every_metric_of_the_table_is_defined(aid: str) -> None:
    path = _root() / "tables" / f"{aid}.csv"
    assert path.is_file(), f"{path} missing: run `glocal reproduce --profile smoke --only {aid}`"
    df = read_table_csv(path)
    bad = undefined_cells(df)
    assert not bad, f"{aid}: {len(bad)} undefined cell(s), e.g. " + "; ".join(bad[:6])


@needs_smoke
def test_no_eval_run_has_an_undefined_category() -> None:
    runs = sorted((_root() / "runs" / "eval").glob("*/metrics.json"))
    assert runs, "no finished eval run under runs/eval"
    bad = []
    for path in runs:
        data = json.loads(path.read_text(encoding="utf-8"))
        for cat, values in data["per_category"].items():
            missing = sorted(m for m, v in values.items() if v is None)
            if missing:
                bad.append(f"{path.parent.name}: {data['dataset']}/{cat} {', '.join(missing)}")
    assert not bad, f"{len(bad)} undefined category metric(s): " + "; ".join(bad[:8])
