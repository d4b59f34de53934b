"""Metric dictionaries per category and the dataset mean row, as the paper's tables report them.

The paper reports, per dataset, the mean over categories of each per-category metric. Medical
datasets are image-only (no masks: HeadCT, BrainMRI, Br35H) or pixel-only (every test image is
anomalous: ISIC, ColonDB, ...); a category then simply has no scores or no maps, and only the
metrics its inputs define are reported. A metric that is undefined for one category (a single
label) is NaN for that category, with a warning naming it, and the mean is taken over the
categories where it is defined (the warning names the ones left out).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from glocal_lib.errors import MetricInputError
from glocal_lib.metrics.aupro import aupro_cflow, aupro_mvtec
from glocal_lib.metrics.classification import RankedScores
from glocal_lib.metrics.inputs import UndefinedMetricWarning, check_maps_masks, check_scores_labels

IMAGE_METRICS = ("image_auroc", "image_ap", "image_f1max")
PIXEL_METRICS = ("pixel_auroc", "pixel_ap", "pixel_f1max", "aupro_cflow", "aupro_mvtec")
MEAN_ROW = "mean"


def image_metrics(scores: Any, labels: Any) -> dict[str, float]:
    """Image AUROC, AP and F1-max from per-image scores and 0/1 labels (one sort shared)."""
    s, y = check_scores_labels(scores, labels)
    r = RankedScores.from_arrays(s, y)
    return {"image_auroc": r.auroc(), "image_ap": r.average_precision(), "image_f1max": r.f1_max()}


def pixel_metrics(
    maps: Any,
    masks: Any,
    *,
    aupro_methods: Sequence[str] = ("cflow", "mvtec"),
    fpr_limit: float = 0.3,
    device: str | None = None,
) -> dict[str, float]:
    """Pixel AUROC, AP, F1-max and the AUPRO variants named in ``aupro_methods`` (keys aupro_<m>).

    device (e.g. "cuda"): AUROC/AP/F1-max are computed in torch there (metrics.device; maps given
    as tensors stay where they are) and AUPRO cflow bins its pixels there; same values.
    """
    if device is not None:
        from glocal_lib.metrics.device import pixel_classification_torch

        out = pixel_classification_torch(maps, masks, device)
        m, g = check_maps_masks(maps, masks)
    else:
        m, g = check_maps_masks(maps, masks)
        r = RankedScores.from_arrays(m.ravel(), g.ravel())
        out = {"pixel_auroc": r.auroc(), "pixel_ap": r.average_precision(), "pixel_f1max": r.f1_max()}
        del r
    for method in aupro_methods:
        if method == "cflow":
            out["aupro_cflow"] = aupro_cflow(m, g, fpr_limit=fpr_limit, device=device, _checked=True)
        elif method == "mvtec":
            out["aupro_mvtec"] = aupro_mvtec(m, g, fpr_limit=fpr_limit, _checked=True)
        else:
            raise MetricInputError(f"unknown AUPRO method {method!r}; use 'cflow' and/or 'mvtec'")
    return out


def group_by_category(
    categories: Sequence[str],
    scores: Any = None,
    labels: Any = None,
    maps: Any = None,
    masks: Any = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Split per-sample arrays by category (first-appearance order) into ``category_metrics`` input."""
    cats = np.asarray(categories)
    arrays = {"scores": scores, "labels": labels, "maps": maps, "masks": masks}
    out: dict[str, dict[str, np.ndarray]] = {}
    for name in dict.fromkeys(cats.tolist()):
        sel = cats == name
        out[str(name)] = {}
        for key, arr in arrays.items():
            if arr is None:
                continue
            a = np.asarray(arr)
            if len(a) != len(cats):
                raise MetricInputError(f"{key} has {len(a)} entries but categories has {len(cats)}")
            out[str(name)][key] = a[sel]
    return out


def _one_category(name: str, data: Mapping[str, Any], **pixel_kw: Any) -> dict[str, float]:
    has_image = data.get("scores") is not None and data.get("labels") is not None
    has_pixel = data.get("maps") is not None and data.get("masks") is not None
    if not (has_image or has_pixel):
        raise MetricInputError(
            f"category {name!r} has neither scores+labels nor maps+masks; give at least one pair"
        )
    row: dict[str, float] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndefinedMetricWarning)
        try:
            if has_image:
                row.update(image_metrics(data["scores"], data["labels"]))
            if has_pixel:
                row.update(pixel_metrics(data["maps"], data["masks"], **pixel_kw))
        except MetricInputError as e:
            raise MetricInputError(f"category {name!r}: {e}") from e
    for w in caught:
        if issubclass(w.category, UndefinedMetricWarning):
            warnings.warn(f"category {name!r}: {w.message}", UndefinedMetricWarning, stacklevel=3)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return row


def category_metrics(
    data: Mapping[str, Mapping[str, Any]] | Iterable[tuple[str, Mapping[str, Any]]],
    dataset: str = "",
    *,
    aupro_methods: Sequence[str] = ("cflow", "mvtec"),
    fpr_limit: float = 0.3,
    device: str | None = None,
) -> pd.DataFrame:
    """Long table (dataset, category, metric, value): one row per category and metric, then "mean".

    data: {category: {"scores", "labels", "maps", "masks"}} (any complete pair), or an iterable of
    (category, dict) pairs so a caller can produce one category's maps at a time.
    """
    items = data.items() if isinstance(data, Mapping) else data
    rows: list[dict[str, Any]] = []
    per_metric: dict[str, dict[str, float]] = {}
    for name, cat_data in items:
        values = _one_category(
            str(name), cat_data, aupro_methods=aupro_methods, fpr_limit=fpr_limit, device=device
        )
        for metric, value in values.items():
            rows.append({"dataset": dataset, "category": str(name), "metric": metric, "value": value})
            per_metric.setdefault(metric, {})[str(name)] = value
    if not rows:
        raise MetricInputError(f"no categories given for dataset {dataset!r}")
    for metric, by_cat in per_metric.items():
        rows.append(
            {"dataset": dataset, "category": MEAN_ROW, "metric": metric, "value": _mean(metric, by_cat)}
        )
    return pd.DataFrame(rows, columns=["dataset", "category", "metric", "value"])


def category_mean(by_category: Mapping[str, float | None]) -> tuple[float, list[str]]:
    """The dataset value of one metric as the paper reports it: the mean over the categories where it
    is defined (NaN when none is), and the categories left out (undefined: NaN or None)."""
    defined = {c: float(v) for c, v in by_category.items() if v is not None and np.isfinite(v)}
    left_out = sorted(set(by_category) - set(defined))
    return (float(np.mean(list(defined.values()))) if defined else float("nan")), left_out


def _mean(metric: str, by_category: Mapping[str, float]) -> float:
    mean, left_out = category_mean(by_category)
    if left_out:
        warnings.warn(
            f"mean {metric} is over {len(by_category) - len(left_out)} of {len(by_category)} categories; "
            f"undefined for {', '.join(left_out)}",
            UndefinedMetricWarning,
            stacklevel=3,
        )
    return mean


def explain_undefined(per_category: Mapping[str, Mapping[str, float | None]],
                      labels: Mapping[str, Sequence[int]]) -> list[str]:
    """One line per category with undefined (NaN/None) metrics, saying which and why.

    ``per_category``: metric values by category (metrics.json of an eval run); ``labels``: the 0/1
    image labels of each category. Printed by ``glocal eval`` so a category that cannot be scored is
    visible where the numbers are read, not only as a null in a JSON file.
    """
    lines = []
    for cat, values in per_category.items():
        missing = [m for m, v in values.items() if v is None or not np.isfinite(v)]
        if not missing:
            continue
        y = np.asarray(labels.get(cat, []), dtype=int)
        pixel_auroc = values.get("pixel_auroc")
        if missing == ["aupro_cflow"] and pixel_auroc is not None and np.isfinite(pixel_auroc):
            # masks with defect and normal pixels (pixel AUROC defined): the released curve's own guard
            why = "anomaly maps constant or too peaked for the released AUPRO's 200 thresholds (fewer than two below the FPR limit)"
        elif len(y) and (y == 0).all():
            why = "only normal images"
        elif len(y) and (y == 1).all():
            why = "only anomalous images" if any(m in IMAGE_METRICS for m in missing) else "no defect pixels"
        else:
            why = "no defect pixels in its masks" if all(m in PIXEL_METRICS for m in missing) else "a single label"
        lines.append(f"undefined: {why} in category {cat!r} ({', '.join(missing)}); left out of the dataset mean")
    return lines
