"""Notebook sources (notebooks/*.py, jupytext percent format): sections = experiments.yaml's artifacts,
round trip, the parameters cell, and what 01/02/06 show (loss curves, metrics per run, the index picture)."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from report_fakes import IMAGE_ONLY, FakeProfile, FakeStore, categories, fake_value, metric_names, populate

from glocal_lib.engine.runs import load_run
from glocal_lib.experiments import notebooks, report, run_views, screenshot
from glocal_lib.experiments.notebooks import NOTEBOOK_ORDER, read_source, sections, source_path
from glocal_lib.experiments.parameters import PARAMETERS, parameter_defaults
from glocal_lib.experiments.pipeline import Reproduction
from glocal_lib.experiments.registry import load_registry

REG = load_registry(profile="smoke")
SOURCES = {name: read_source(source_path(name)) for name in NOTEBOOK_ORDER}


# ------------------------------------------------------------------ sources
@pytest.mark.parametrize("name", NOTEBOOK_ORDER)
def test_one_section_per_artifact_of_the_notebook_in_registry_order(name: str) -> None:
    expected = [(aid, REG.artifact(aid)["title"]) for aid in REG.notebook_artifacts(name)]
    assert sections(SOURCES[name]) == expected, (
        f"notebooks/{name}.py: its '## <id> — <title>' headings must be the artifacts whose experiments.yaml "
        f"entry says `notebook: {name}`, in registry order, with their titles")


def test_every_artifact_has_a_section_and_no_section_is_unknown() -> None:
    found = [aid for nb in SOURCES.values() for aid, _ in sections(nb)]
    assert sorted(found) == sorted(REG.artifacts)  # each exactly once, none unknown
    assert {art["notebook"] for art in REG.artifacts.values()} <= set(NOTEBOOK_ORDER)


@pytest.mark.parametrize("name", NOTEBOOK_ORDER)
def test_each_section_is_followed_by_the_cell_that_draws_it(name: str) -> None:
    cells = SOURCES[name].cells
    for i, cell in enumerate(cells):
        heading = notebooks.SECTION.match(cell.source) if cell.cell_type == "markdown" else None
        if heading is None:
            continue
        aid, nxt = heading.group(1), cells[i + 1]
        assert nxt.cell_type == "code", (name, aid)
        drawn = f'repro.show("{aid}", ids)' in nxt.source or (aid == "RC" and "reproduce_rc(repro, ids" in nxt.source)
        assert drawn, f"{name}: section {aid} is not followed by the cell drawing it: {nxt.source!r}"


def test_sections_regex_ignores_other_headings() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("## Loss curves\n\ntext"), nbformat.v4.new_markdown_cell("# 03 — intro"),
                nbformat.v4.new_markdown_cell("## T9 — Position of tokens\n\nnote")]
    assert sections(nb) == [("T9", "Position of tokens")]


@pytest.mark.parametrize("name", NOTEBOOK_ORDER)
def test_sources_round_trip_through_jupytext(name: str) -> None:
    path = source_path(name)
    text = path.read_text(encoding="utf-8")
    again = jupytext.writes(SOURCES[name], fmt="py:percent")

    def body(s: str) -> list[str]:  # the header's jupytext_version is whichever version wrote it last
        return [line for line in s.splitlines() if "jupytext_version:" not in line]

    assert body(again) == body(text), f"{path} is not in jupytext's canonical percent format"
    reread = jupytext.reads(again, fmt="py:percent")
    assert [(c.cell_type, c.source, dict(c.metadata)) for c in reread.cells] == \
        [(c.cell_type, c.source, dict(c.metadata)) for c in SOURCES[name].cells]


@pytest.mark.parametrize("name", NOTEBOOK_ORDER)
def test_parameters_cell_is_tagged_and_is_the_single_definition(name: str, tmp_path: Path) -> None:
    import papermill.parameterize as pmp
    from papermill.execute import prepare_notebook_metadata
    from papermill.iorw import load_notebook_node

    built = nbformat.read(notebooks.to_ipynb(source_path(name), tmp_path / f"{name}.ipynb"), as_version=4)
    nbformat.validate(built)
    tagged = [i for i, c in enumerate(built.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and built.cells[tagged[0]].source == PARAMETERS, name
    assert built.metadata["kernelspec"]["language"] == "python" and "jupytext" not in built.metadata
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in built.cells if c.cell_type == "code")
    # papermill -p: the injected cell comes right after the tagged one and overrides its defaults
    prepared = prepare_notebook_metadata(load_notebook_node(str(tmp_path / f"{name}.ipynb")), str(tmp_path / f"{name}.ipynb"), str(tmp_path / "out.ipynb"))
    injected = pmp.parameterize_notebook(prepared, {"profile": "paper", "datasets": ["visa"]})
    cell = injected.cells[tagged[0] + 1]
    assert "injected-parameters" in cell.metadata["tags"]
    assert "profile = \"paper\"" in cell.source and "datasets = [\"visa\"]" in cell.source
    assert set(parameter_defaults()) >= {"profile", "preset", "datasets", "methods", "only", "results_root"}


def test_rebuilding_a_notebook_gives_the_same_file(tmp_path: Path) -> None:
    a = notebooks.to_ipynb(source_path("03_ablations"), tmp_path / "a.ipynb").read_bytes()
    b = notebooks.to_ipynb(source_path("03_ablations"), tmp_path / "b.ipynb").read_bytes()
    assert a == b


def test_missing_source_is_one_clear_error(tmp_path: Path) -> None:
    from glocal_lib.errors import ConfigError

    with pytest.raises(ConfigError, match=r"notebook source .*07_nothing\.py not found"):
        notebooks.build_notebooks(["07_nothing"], tmp_path / "out")


# ------------------------------------------------------------------ 01: loss curves
def _losses_csv(path: Path) -> None:
    """Three epochs of two steps; gcl never computed (NaN throughout), focal NaN at one step."""
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"kind": "train", "name": "x"}')
    rng = np.random.default_rng(3)
    rows = [{"epoch": e, "step": s, "global": rng.uniform(), "local": rng.uniform(), "focal": rng.uniform(),
             "dice": rng.uniform(), "gcl": float("nan"), "total": rng.uniform(1, 3)}
            for e, s in [(1, 1), (1, 2), (2, 3), (2, 4), (3, 5), (3, 6)]]
    rows[2]["focal"] = float("nan")
    pd.DataFrame(rows).to_csv(path / "losses.csv", index=False)


def test_loss_curves_plot_exactly_the_saved_log_values(tmp_path: Path) -> None:
    for name in ("run-a", "run-b"):
        _losses_csv(tmp_path / name)
    logs = [(name, load_run(tmp_path / name).losses()) for name in ("run-a", "run-b")]
    fig = run_views.plot_loss_curves(logs)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["run-a", "run-b"]
    with open(tmp_path / "run-a" / "losses.csv", newline="") as fh:  # read independently of pandas
        saved = list(csv.DictReader(fh))
    lines = {ln.get_label(): ln for ln in panels[0].get_lines() if not ln.get_label().startswith("_")}
    assert set(lines) == {"global", "local", "focal", "dice", "total"}  # gcl: NaN at every step, not drawn
    for term, line in lines.items():
        assert list(line.get_xdata()) == [int(r["step"]) for r in saved]
        want = [float(r[term]) if r[term] else math.nan for r in saved]
        np.testing.assert_array_equal(np.asarray(line.get_ydata(), float), np.asarray(want))
    boundaries = sorted(ln.get_xdata()[0] for ln in panels[0].get_lines() if ln.get_label().startswith("_"))
    assert boundaries == [2.5, 4.5]  # between epochs 1|2 and 2|3
    png = run_views.figure_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_curves_refuse_no_runs() -> None:
    with pytest.raises(ValueError, match="no training runs"):
        run_views.plot_loss_curves([])


# ------------------------------------------------------------------ 02: metrics per evaluation run
def _repro(root: Path, ids: list[str]) -> Reproduction:
    """A Reproduction over fake finished runs of the given artifacts (report_fakes)."""
    profile = FakeProfile("smoke", root)
    store = FakeStore(profile)
    populate(REG, store, ids)
    return Reproduction(registry=REG, profile=profile, store=store)


def test_metrics_table_is_each_eval_runs_dataset_mean_from_its_files(tmp_path: Path) -> None:
    repro = _repro(tmp_path, ["T2"])
    plan = repro.plan(["T2"])
    metrics = list(REG.data["table_metrics"])
    runs = [(job.name, repro.store.eval_run(job)) for job in plan.eval_jobs]
    table = run_views.metrics_table(runs, metrics)
    assert list(table.index) == [job.name for job in plan.eval_jobs]
    for job in plan.eval_jobs:
        row, cats = table.loc[job.name], categories(job.dataset)
        assert row["dataset"] == job.dataset and row["categories"] == len(cats)
        assert row["images"] == 8 * len(cats) and row["anomalous"] == 4 * len(cats)  # report_fakes.write_eval
        for m in metrics:
            if m in metric_names(job.dataset):
                assert row[m] == pytest.approx(100 * np.mean([fake_value(job.name, c, m) for c in cats]))
            else:
                assert row[m] == run_views.NOT_MEASURED
    assert any(job.dataset in IMAGE_ONLY for job in plan.eval_jobs)


def test_styled_metrics_say_undefined_and_not_measured() -> None:
    table = pd.DataFrame({"image_auroc": [71.234, math.nan], "pixel_auroc": [run_views.NOT_MEASURED, 50.0]},
                         index=pd.Index(["a", "b"], name="run"))
    html = run_views.styled_metrics(table, ["image_auroc", "pixel_auroc"]).to_html()
    assert "71.2" in html and "undefined" in html and "n/a" in html and "50.0" in html and "nan" not in html.lower()


# ------------------------------------------------------------------ sections: Reproduction.show
def test_show_draws_a_table_or_figure_and_says_when_not_selected(tmp_path: Path) -> None:
    from IPython.display import Image as IPyImage
    from IPython.display import Markdown

    repro = _repro(tmp_path, ["T3", "F9"])
    skipped = repro.show("T3", ["T1"])
    assert isinstance(skipped, Markdown) and "T3 is not drawn" in skipped.data
    assert not (repro.tables_dir / "T3.md").exists()
    table = repro.show("T3", ["T3"])
    assert "T3" in table._repr_markdown_() and (repro.tables_dir / "T3.md").is_file()  # shown inline as Markdown
    figure = repro.show("F9")
    assert isinstance(figure, IPyImage) and (repro.figures_dir / "F9.png").is_file()
    assert repro.eval_metrics(["T3"]).data.shape[0] == len(repro.plan(["T3"]).eval_jobs)
    assert isinstance(repro.loss_curves(["T3"]), IPyImage)


# ------------------------------------------------------------------ 06: the index picture
@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index with one table and one figure drawn; each test copies it."""
    root = tmp_path_factory.mktemp("site")
    repro = _repro(root, ["T3", "F9"])
    repro.show("T3")
    repro.show("F9")
    report.build_index(REG, root, repro.profile)
    return root


def _copy(site: Path, tmp_path: Path) -> Path:
    shutil.copytree(site, tmp_path / "results" / "smoke")
    return tmp_path / "results" / "smoke"


def test_index_picture_without_a_browser_lists_the_drawn_artifacts(site: Path, tmp_path: Path, monkeypatch) -> None:
    tmp_path = _copy(site, tmp_path)
    monkeypatch.setattr(screenshot, "find_browser", lambda: None)
    before = screenshot.README_SCREENSHOT.read_bytes()
    out = screenshot.index_screenshot(tmp_path, "smoke")
    assert out == tmp_path / "index.png"
    with Image.open(out) as im:
        assert im.size == screenshot.SIZE and np.asarray(im.convert("L")).std() > 5
    assert screenshot.README_SCREENSHOT.read_bytes() == before  # only a full run into results/smoke refreshes it
    monkeypatch.setattr(screenshot, "REPO", tmp_path.parents[1])  # as if tmp_path were the checkout's results/smoke
    readme = tmp_path.parent / "readme" / "index.png"
    readme.parent.mkdir()
    monkeypatch.setattr(screenshot, "README_SCREENSHOT", readme)
    screenshot.index_screenshot(tmp_path, "smoke", readme=False)
    assert not readme.exists()  # a subset (--only) leaves it
    screenshot.index_screenshot(tmp_path, "smoke", readme=True)
    assert readme.read_bytes() == out.read_bytes()
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.skipif(screenshot.find_browser() is None, reason="headless Chromium not installed (CI installs it)")
def test_index_picture_with_chromium_is_the_rendered_page(site: Path, tmp_path: Path) -> None:
    tmp_path = _copy(site, tmp_path)
    out = screenshot.index_screenshot(tmp_path, "smoke")
    with Image.open(out) as im:
        img = np.asarray(im.convert("RGB"))
    assert img.shape[:2] == screenshot.SIZE[::-1]
    banner = img[:30].reshape(-1, 3).mean(0)  # the page's red smoke banner on top
    assert banner[0] > 150 and banner[1] < 80, banner


def test_index_picture_needs_the_index(tmp_path: Path) -> None:
    from glocal_lib.errors import ConfigError

    with pytest.raises(ConfigError, match="index.html does not exist"):
        screenshot.index_screenshot(tmp_path, "smoke")
