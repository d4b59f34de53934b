"""The results index shows, on a comparison table's card, the Mean row of the table's proposed method: GlocalCLIP
in our tables, the entry's `headline` in another paper's (V1/V2: ViP2-CLIP; KT1-KT3: KAnoCLIP)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pandas as pd
import pytest
from report_fakes import FakeProfile

from glocal_lib.errors import ConfigError
from glocal_lib.experiments import kinds, report
from glocal_lib.experiments.registry import load_registry
from glocal_lib.experiments.tables import LONG_COLUMNS


def _table(path: Path, rows: list[tuple[str, str, str, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame([{**dict.fromkeys(LONG_COLUMNS), "row": r, "dataset": d, "metric": m, "reproduced": v}
                       for r, d, m, v in rows], columns=LONG_COLUMNS)
    df.to_csv(path, index=False)


def _card(text: str, aid: str) -> str:
    return re.search(rf"<div class='card' id='{aid}'.*?</div></div>", text, re.S).group(0)


def test_each_comparison_card_shows_its_proposed_methods_mean(tmp_path: Path) -> None:
    reg = load_registry(profile="smoke")
    rows = [("GlocalCLIP", "Mean", "image_auroc", 91.25), ("ViP2-CLIP", "Mean", "image_auroc", 72.5),
            ("KAnoCLIP", "Mean", "image_auroc", 64.5), ("ViP2-CLIP", "MVTec AD", "image_auroc", 10.0)]
    for aid in ("T1", "V1", "KT1"):
        _table(tmp_path / "tables" / f"{aid}.csv", rows)
    text = report.build_index(reg, tmp_path, FakeProfile("smoke", tmp_path)).read_text(encoding="utf-8")
    for aid, method, value in (("T1", "GlocalCLIP", "91.2"), ("V1", "ViP2-CLIP", "72.5"), ("KT1", "KAnoCLIP", "64.5")):
        card = _card(text, aid)
        assert f"<caption>{method}, Mean</caption>" in card and value in card, aid
        assert card.count("<caption>") == 1


def test_a_headline_that_is_not_a_column_is_refused() -> None:
    reg = load_registry(profile="smoke")
    art = copy.deepcopy(reg.artifact("V1"))
    art["headline"] = "GlocalCLIP"  # not a column of ViP2-CLIP's Table 1
    with pytest.raises(ConfigError, match="headline 'GlocalCLIP'"):
        kinds.KINDS["comparison_table"].cells(reg, "V1", art)
