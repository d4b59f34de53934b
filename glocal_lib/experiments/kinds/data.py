"""Artifacts that are not drawn from method runs: dataset counts (`dataset_stats`: T5) and the released
checkpoint check (`released_checkpoint`: RC)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from glocal_lib.experiments import verify
from glocal_lib.experiments.kinds.base import Drawing, Kind, TableBody, register_kind
from glocal_lib.experiments.paper_values import load_paper_table
from glocal_lib.experiments.registry import Registry, TrainJob
from glocal_lib.experiments.tables import long_row

COUNTS = (("categories", "num_subsets"), ("test_normal", "test_normal"), ("test_anomalous", "test_anomalous"))


@register_kind("dataset_stats")
class DatasetStats(Kind):
    """Per dataset: categories, normal and anomalous test images of the recorded data index vs published."""

    required = ("title", "notebook", "datasets", "paper")

    def draw(self, ctx: Drawing, aid: str, art: dict[str, Any]) -> TableBody:
        reg = ctx.reg
        paper = load_paper_table(art["paper"]["file"])
        out = []
        for ds in [d for d in art["datasets"] if reg.keep(d)]:
            name = reg.dataset_name(ds)
            pub = paper[paper["dataset"] == name]
            idx = ctx.store.data_index(ds)
            if idx is not None and "split" in idx.columns:
                idx = idx[idx["split"] == "test"]
            repro = ({} if idx is None else
                     {"categories": float(idx["category"].nunique()),
                      "test_normal": float((idx["label"].astype(int) == 0).sum()),
                      "test_anomalous": float((idx["label"].astype(int) == 1).sum())})
            for m, col in COUNTS:
                pv = float(pub[col].iloc[0]) if len(pub) and str(pub[col].iloc[0]).strip() else np.nan
                out.append(long_row(aid, domain=reg.domain_of(ds), row="count", dataset=name, metric=m,
                               reproduced=repro.get(m, np.nan), paper=pv,
                               note="" if idx is not None else "missing: no data index; run notebook 00_data "
                               "(glocal reproduce --only T5)"))
        return TableBody(out, ["dataset"], ["metric"])


@register_kind("released_checkpoint")
class ReleasedCheckpoint(Kind):
    """RC: the released AnomalyCLIP checkpoints evaluated as its test.sh does, beside its logs.
    Smoke: stand-in checkpoints exported from the method's own training runs (`train_jobs`). Notebook
    02 evaluates them (`evaluate`, recorded in <results>/verify/RC.json); drawing reads that record."""

    required = ("title", "notebook", "method", "checkpoints", "paper")

    def train_jobs(self, reg: Registry, aid: str, art: dict[str, Any]) -> list[TrainJob]:
        return [job for _, job in reg.standin_train_jobs(aid)]

    def evaluate(self, repro: Any, aid: str, art: dict[str, Any]) -> list[Path]:
        return verify.evaluate_rc(repro)

    def draw(self, ctx: Drawing, aid: str, art: dict[str, Any]) -> TableBody | None:
        drawn = verify.draw_rc(ctx.reg, ctx.store)
        if drawn is None:  # not evaluated (paper profile without the released files): not drawn
            return None
        df, notes, run_ids = drawn
        ctx.notes += notes
        ctx.run_ids += run_ids
        ctx.presets.add(verify.PRESET)
        return TableBody(df.to_dict("records"), ["category"], ["metric"], "section")
