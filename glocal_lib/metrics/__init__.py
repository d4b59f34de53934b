"""Evaluation metrics: image/pixel AUROC, AP, F1-max and AUPRO ("cflow" = released, "mvtec" = official).

All values are fractions in [0, 1]; undefined values are NaN with an UndefinedMetricWarning that
says why; unusable inputs raise ``glocal_lib.errors.MetricInputError``.
"""

from glocal_lib.metrics.aupro import aupro, aupro_cflow, aupro_mvtec, cflow_curve, mvtec_curve
from glocal_lib.metrics.classification import RankedScores, auroc, average_precision, f1_max
from glocal_lib.metrics.inputs import UndefinedMetricWarning
from glocal_lib.metrics.summary import (
    IMAGE_METRICS,
    MEAN_ROW,
    PIXEL_METRICS,
    category_mean,
    category_metrics,
    group_by_category,
    image_metrics,
    pixel_metrics,
)

__all__ = [
    "IMAGE_METRICS",
    "MEAN_ROW",
    "PIXEL_METRICS",
    "RankedScores",
    "UndefinedMetricWarning",
    "aupro",
    "aupro_cflow",
    "aupro_mvtec",
    "auroc",
    "category_mean",
    "average_precision",
    "category_metrics",
    "cflow_curve",
    "f1_max",
    "group_by_category",
    "image_metrics",
    "mvtec_curve",
    "pixel_metrics",
]
