"""REPORT, end to end: after `glocal reproduce --profile smoke`, every artifact exists, is non-empty and
carries provenance (CI: `GLOCAL_SMOKE_RESULTS=results/smoke python -m pytest tests/test_reproduce_smoke.py`).

Skipped when GLOCAL_SMOKE_RESULTS is unset: the plain test run must not start the 15-minute reproduction.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from glocal_lib.experiments.kinds import kind_of
from glocal_lib.experiments.notebooks import NOTEBOOK_ORDER, SECTION
from glocal_lib.experiments.provenance import SMOKE_LABEL
from glocal_lib.experiments.registry import load_registry
from glocal_lib.experiments.tables import read_table_csv

RESULTS = os.environ.get("GLOCAL_SMOKE_RESULTS")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not RESULTS, reason="set GLOCAL_SMOKE_RESULTS=results/smoke after `glocal reproduce --profile smoke`"),
]


def _root() -> Path:
    root = Path(str(RESULTS))
    assert root.is_dir(), f"{root} does not exist: run `glocal reproduce --profile smoke` first"
    return root


def _artifacts() -> list[tuple[str, bool]]:
    reg = load_registry(profile="smoke")
    return [(aid, kind_of(reg, aid).output == "table") for aid in reg.artifacts]


@pytest.mark.parametrize(("aid", "is_table"), _artifacts(), ids=[a for a, _ in _artifacts()])
def test_artifact_exists_with_provenance(aid: str, is_table: bool) -> None:
    root = _root()
    folder = root / ("tables" if is_table else "figures")
    exts = ("csv", "md", "html") if is_table else ("png",)  # smoke figures: PDF only on request (--pdf)
    for ext in exts:
        path = folder / f"{aid}.{ext}"
        assert path.is_file() and path.stat().st_size > 200, f"{path} missing or empty"
    prov = json.loads((folder / f"{aid}.provenance.json").read_text(encoding="utf-8"))
    for key in ("profile", "glocalclip_preset", "git_commit", "run_ids", "aupro", "banner"):
        assert key in prov, (aid, key)
    assert prov["profile"] == "smoke" and prov["banner"] == SMOKE_LABEL
    if aid != "T5":
        assert prov["run_ids"], f"{aid} was drawn from no runs"
    if is_table:
        for ext in exts:
            assert SMOKE_LABEL.upper() in (folder / f"{aid}.{ext}").read_text(encoding="utf-8").upper(), (aid, ext)
        df = read_table_csv(folder / f"{aid}.csv")
        assert df["reproduced"].notna().any(), f"{aid} has no reproduced value at all"
    elif (folder / f"{aid}.pdf").is_file():
        assert (folder / f"{aid}.pdf").read_bytes()[:4] == b"%PDF"


def test_rc_checks_standin_checkpoints_against_the_released_logs() -> None:
    """RC (the `glocal verify` check): stand-in checkpoints exported from the smoke AnomalyCLIP runs, every
    cell ours beside the released log, a verdict, and the stand-in warning."""
    folder = _root() / "tables"
    md = (folder / "RC.md").read_text(encoding="utf-8")
    assert "STAND-INS" in md and "VERDICT (smoke, stand-ins)" in md and "NOT the released" in md
    df = read_table_csv(folder / "RC.csv")
    assert set(df["dataset"]) == {"MVTec AD", "VisA"}
    assert set(df["metric"]) == {"image_auroc", "image_ap", "pixel_auroc", "aupro_cflow"}
    assert df["paper"].notna().all() and df["reproduced"].notna().all()
    assert (abs(df["diff"] - (df["reproduced"] - df["paper"])) < 1e-3).all()
    for name in ("9_12_4_multiscale", "9_12_4_multiscale_visa"):
        assert (_root() / "verify" / "checkpoints" / name / "epoch_15.pth").is_file()


def test_executed_notebooks_and_index() -> None:
    root = _root()
    for name in NOTEBOOK_ORDER:
        nb = nbformat.read(root / "notebooks" / f"{name}.ipynb", as_version=4)
        assert nb.metadata.get("papermill", {}).get("parameters", {}).get("profile") == "smoke", name
        assert all(c.get("metadata", {}).get("papermill", {}).get("exception") in (None, False)
                   for c in nb.cells), name
    index = (root / "index.html").read_text(encoding="utf-8")
    assert SMOKE_LABEL in index
    for aid, _ in _artifacts():
        assert f"data-artifact='{aid}'" in index
    assert "not generated yet" not in index
    assert (root / "index.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the index's picture (notebook 06)


def _outputs(cell: nbformat.NotebookNode) -> set[str]:
    return {mime for out in cell.get("outputs", []) for mime in out.get("data", {})}


def test_every_section_shows_its_artifact_and_01_02_show_the_runs() -> None:
    """Each `## <id> — <title>` section's cell displays its table (Markdown) or figure (PNG) inline;
    01 shows the loss curves (PNG), 02 the metrics per evaluation run (HTML table)."""
    root = _root()
    for name in NOTEBOOK_ORDER:
        nb = nbformat.read(root / "notebooks" / f"{name}.ipynb", as_version=4)
        assert nb.metadata["papermill"]["input_path"].endswith(f"notebooks/{name}.py"), name
        for i, cell in enumerate(nb.cells):
            heading = SECTION.match(cell.source) if cell.cell_type == "markdown" else None
            if heading:
                shown = _outputs(nb.cells[i + 1])
                assert shown & {"text/markdown", "image/png"}, (name, heading.group(1), shown)
                text = "".join(str(o.get("data", {}).get("text/markdown", "")) for o in nb.cells[i + 1].outputs)
                assert "not drawn" not in text, (name, heading.group(1))
            if cell.cell_type == "markdown" and cell.source.startswith(("## Loss curves", "## Metrics per dataset")):
                want = "image/png" if "Loss" in cell.source else "text/html"
                assert want in _outputs(nb.cells[i + 1]), (name, cell.source.splitlines()[0])
