"""Table numbers say what they are: missing (run not made) vs undefined (no value), never '-0.0'."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from glocal_lib.experiments import tables


def _row(**kw: object) -> pd.Series:
    base = {"reproduced": np.nan, "paper": np.nan, "diff": np.nan, "note": "", "run_ids": "",
            "lambda_selected_on_test": False, "selected_lambda": np.nan}
    return pd.Series({**base, **kw})


@pytest.mark.parametrize("value", [-0.04, -0.0, -1e-9, 0.049])
def test_values_that_round_to_zero_never_print_a_minus(value: float) -> None:
    assert tables._fmt_num(value) == "0.0"
    assert tables._fmt_num(value, 1, "+") == "+0.0"
    assert tables.cell_text(_row(reproduced=80.0 + value, paper=80.0, diff=value)) == "80.0 / 80.0 (+0.0)"


def test_missing_and_undefined_are_told_apart() -> None:
    assert tables.cell_text(_row(paper=71.7, note=tables.MISSING_NOTE)) == "missing / 71.7"
    assert tables.cell_text(_row(paper=71.7, run_ids="clip-visa-0123456789ab")) == "undefined / 71.7"
    assert tables.cell_text(_row(paper=91.2)) == "— / 91.2"  # not reproduced: published value only
    assert "missing" in tables.LEGEND and "undefined" in tables.LEGEND


def test_csv_has_no_negative_zero() -> None:
    data = pd.DataFrame([dict.fromkeys(tables.LONG_COLUMNS, "")])
    data[["reproduced", "paper", "diff", "selected_lambda"]] = [[50.00001, 50.00002, -0.00001, np.nan]]
    table = tables.Table("T1", "t", data, ["dataset"], ["row"],
                         {"banner": "", "artifact": "T1", "title": "t", "profile": "smoke",
                          "glocalclip_preset": "p", "presets": [], "git_commit": "c", "runs_git_commit": "c",
                          "created": "now", "run_ids": [], "aupro": "a", "published_values": [], "notes": []})
    text = tables.to_csv(table)
    assert "-0.0000" not in text and ",0.0000," in text


def test_lambda_selection_skips_undefined_metrics() -> None:
    """Candidate B has the higher mean over its defined metrics; counting its NaN as 0 would pick A."""
    from glocal_lib.experiments.registry import Candidate, Cell, EvalJob
    from glocal_lib.experiments.results import ResultStore

    a, b = (Candidate(lam, EvalJob(dataset="visa", preset=f"p{lam}")) for lam in (0.1, 1.0))
    values = {a.job: {"image_auroc": 0.80, "pixel_auroc": 0.80},
              b.job: {"image_auroc": 0.90, "pixel_auroc": float("nan")}}

    class Store(ResultStore):
        def dataset_values(self, job: EvalJob) -> dict[str, float] | None:
            return values[job]

    store = Store(profile=None, selection_metrics=["image_auroc", "pixel_auroc"])
    cell = Cell("GlocalCLIP", "industrial", "mvtec", "visa", (a, b), select_on_test=True)
    expected = max((a, b), key=lambda c: np.nanmean(list(values[c.job].values())))
    assert store.select(cell, store._finished(cell))[0] is expected is b
    assert store.best_job(cell) is b.job
