"""Artifact kinds: how each experiments.yaml artifact is planned and drawn.

Three hops from a notebook section to the code: section "T1" -> experiments.yaml `T1: {kind:
comparison_table, ...}` -> the class registered with `@register_kind("comparison_table")` here
(comparison.py). One module per family: comparison tables, ablation tables, data artifacts,
galleries, plots. A kind declares its cells (`cells`, `train_jobs`) and draws from them (`draw`);
`Registry.plan` and the drawing ask the same kind, nothing else reads kind names.
"""

from glocal_lib.experiments.kinds import (  # noqa: F401 (registers)
    ablation,
    comparison,
    data,
    efficiency,
    galleries,
    plots,
)
from glocal_lib.experiments.kinds.base import (
           KINDS,
           Drawing,
           Kind,
           TableBody,
           check_artifacts,
           kind_of,
           register_kind,
)
from glocal_lib.experiments.kinds.draw import (
           build_figure,
           build_figures,
           build_table,
           build_tables,
           draw,
           ids_of,
)

__all__ = ["KINDS", "Drawing", "Kind", "TableBody", "build_figure", "build_figures", "build_table", "build_tables",
           "check_artifacts", "draw", "ids_of", "kind_of", "register_kind"]
