"""The artifact kinds registry: every artifact has a kind, unknown kinds fail clearly, and what a kind
plans is exactly what it draws (no table reads a run its plan did not make, none is planned in vain)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest
import yaml
from report_fakes import FakeProfile, FakeStore, populate

from glocal_lib.errors import ConfigError
from glocal_lib.experiments import kinds
from glocal_lib.experiments.kinds.base import KINDS, Drawing, Kind, TableBody, register_kind
from glocal_lib.experiments.registry import REGISTRY_FILE, load_registry
from glocal_lib.experiments.tables import Table


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, FakeStore, Path]:
    root = tmp_path_factory.mktemp("results") / "smoke"
    profile = FakeProfile("smoke", root)
    profile.umap_min_points = 10**6  # type: ignore[attr-defined]  # PCA: no numba start-up in this test
    reg = load_registry(profile="smoke")
    store = FakeStore(profile)
    populate(reg, store)
    return reg, store, root


def _registry_file(tmp_path: Path, edit: Any) -> Path:
    data = yaml.safe_load(REGISTRY_FILE.read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_every_artifact_has_a_registered_kind() -> None:
    for profile in ("smoke", "paper"):
        reg = load_registry(profile=profile)
        for aid in reg.artifacts:
            kind = kinds.kind_of(reg, aid)
            assert kind is KINDS[reg.artifact(aid)["kind"]] and kind.output in ("table", "figure"), aid
    assert {"comparison_table", "ablation_table", "umap", "category_gallery"} <= set(KINDS)


def test_unknown_kind_names_the_yaml_entry(tmp_path: Path) -> None:
    path = _registry_file(tmp_path, lambda d: d["artifacts"]["T7"].update(kind="ablation_tabel"))
    with pytest.raises(ConfigError) as err:
        load_registry(path)
    msg = str(err.value)
    assert str(path) in msg and "artifact T7" in msg and "'ablation_tabel'" in msg
    assert "ablation_table" in msg and "@register_kind" in msg  # the known kinds and how to add one


def test_a_kind_refuses_an_entry_without_the_keys_it_reads(tmp_path: Path) -> None:
    path = _registry_file(tmp_path, lambda d: d["artifacts"]["T3"].pop("rows"))
    with pytest.raises(ConfigError, match=r"artifact T3 \(kind ablation_table\) lacks key\(s\) \['rows'\]"):
        load_registry(path)


def test_a_registered_kind_is_planned_and_drawn_from_yaml_alone(tmp_path: Path, fake: tuple,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _, store, _ = fake

    class OneVariant(Kind):
        required = ("title", "variant")

        def cells(self, reg: Any, aid: str, art: dict[str, Any]) -> list[Any]:
            return reg.cells_for(reg.variant(art["variant"]), art["variant"], "industrial", "ablation")

        def draw(self, ctx: Drawing, aid: str, art: dict[str, Any]) -> TableBody:
            from glocal_lib.experiments.tables import long_row, pct

            rows = [long_row(aid, row=art["variant"], dataset=c.dataset, metric="image_auroc",
                             reproduced=pct(ctx.cell(c).values, "image_auroc")) for c in self.cells(ctx.reg, aid, art)]
            return TableBody(rows, ["dataset"], ["row", "metric"])

    monkeypatch.setitem(KINDS, "one_variant", None)  # restored (removed) after the test
    del KINDS["one_variant"]
    register_kind("one_variant")(OneVariant)
    path = _registry_file(tmp_path, lambda d: d["artifacts"].update(
        TZ={"kind": "one_variant", "title": "one variant", "notebook": "03_ablations", "variant": "attn_qq"}))
    reg = load_registry(path, profile="smoke")
    plan = reg.plan(["TZ"])
    assert [j.name for j in plan.eval_jobs] == [c.candidates[0].job.name for c in reg.artifact_cells("TZ")]
    table = kinds.build_table(reg, store, "TZ")
    assert isinstance(table, Table) and table.data["reproduced"].notna().all()
    assert table.run_ids and table.provenance["artifact"] == "TZ"


@pytest.mark.parametrize("aid", load_registry(profile="smoke").artifacts)
def test_planning_cells_are_drawing_cells(aid: str, fake: tuple) -> None:
    """For every artifact: the cells (and directly read training runs) the drawing reads equal the ones
    its plan makes."""
    reg, store, _ = fake
    kind, art = kinds.kind_of(reg, aid), reg.artifact(aid)
    ctx = Drawing(reg, store)
    drawn = kind.draw(ctx, aid, art)
    if kind.output == "figure":
        plt.close(drawn)
    if drawn is None:  # RC: drawn with its check (experiments.verify)
        return
    assert set(ctx.used) == set(kind.cells(reg, aid, art)), aid
    assert set(ctx.trained) == set(kind.train_jobs(reg, aid, art)), aid
    planned = reg.plan([aid])
    drawn_jobs = {c.job for cell in ctx.used for c in cell.candidates}
    assert drawn_jobs == set(planned.eval_jobs), aid
    if kind.output == "table" and aid != "T5":
        assert ctx.run_ids, f"{aid} read no run"


def test_draw_returns_a_table_or_the_figure_files(fake: tuple) -> None:
    reg, store, root = fake
    t1 = kinds.draw("T1", reg, store, tables_dir=root / "tables", figures_dir=root / "figures")
    assert isinstance(t1, Table) and (root / "tables" / "T1.md").read_text(encoding="utf-8") in t1._repr_markdown_() + "\n"
    paths = kinds.draw("F4", reg, store, tables_dir=root / "tables", figures_dir=root / "figures")
    assert isinstance(paths, list) and (root / "figures" / "F4.png") in paths
    assert kinds.ids_of(reg, "table", ["T1", "F4", "RC"]) == ["T1", "RC"]


def test_method_gallery_columns_follow_the_tables_order(fake: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """F3's map columns: the proposed method first, then the others in T1's column order."""
    from glocal_lib.experiments.kinds import galleries

    reg, store, root = fake
    drawn: list[list[str]] = []

    def record(title: str, rows: list) -> plt.Figure:
        drawn.extend([label for label, _ in cols] for _, cols in rows)
        return plt.figure()

    monkeypatch.setattr(galleries, "gallery", record)
    kinds.draw("F3", reg, store, tables_dir=root / "tables", figures_dir=root / "figures")
    f3 = set(reg.methods_of(reg.artifact("F3")))
    expected = ["input", "ground truth", *[m for m in reg.methods_of(reg.artifact("T1")) if m in f3]]
    assert drawn and expected[2] == "GlocalCLIP" and all(labels == expected for labels in drawn)


def test_evaluations_outside_the_plan_happen_in_02_not_when_drawing(tmp_path: Path, fake: tuple,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A kind's `evaluate` (RC: the released checkpoints) runs from Reproduction.evaluate (notebook 02);
    drawing the same artifact never calls it."""
    from glocal_lib.experiments.pipeline import Reproduction

    _, store, _ = fake
    calls: list[str] = []

    class Evaluated(Kind):
        required = ("title",)

        def evaluate(self, repro: Any, aid: str, art: dict[str, Any]) -> list[Path]:
            calls.append(aid)
            return [tmp_path / "made"]

        def draw(self, ctx: Drawing, aid: str, art: dict[str, Any]) -> None:
            return None

    monkeypatch.setitem(KINDS, "evaluated", None)
    del KINDS["evaluated"]
    register_kind("evaluated")(Evaluated)
    path = _registry_file(tmp_path, lambda d: d["artifacts"].update(
        TZ={"kind": "evaluated", "title": "made in 02", "notebook": "06_tables_report"}))
    repro = Reproduction(registry=load_registry(path, profile="smoke"), profile=store.profile, store=store)
    assert repro.draw_artifact("TZ") is None and calls == []
    assert repro.evaluate(["TZ"]) == [tmp_path / "made"] and calls == ["TZ"]
