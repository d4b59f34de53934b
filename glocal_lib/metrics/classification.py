"""AUROC, average precision and F1-max from one sort per class, exact with ties.

Why not scikit-learn: the pixel-level metrics see ~50 million pixels per category, and sklearn's
curve functions argsort everything, several times. Here positives and negatives are sorted
separately (a plain value sort is several times faster than an argsort) and every metric is read
off the two sorted arrays with ``searchsorted``:

- AUROC is the Mann-Whitney statistic with ties counted 1/2, summed in integers and divided once,
  so it is exact (sklearn's trapezoid gives the same number up to ~1e-15).
- AP follows sklearn's ``average_precision_score`` (step sum of precision over recall increments at
  every distinct score).
- F1-max follows the released code: F1 = 2PR/(P+R) over sklearn's ``precision_recall_curve``, NaN
  entries dropped, max; only thresholds at positive scores can be the max, so only those are scored.

Argument order is (scores, labels) everywhere in this package, the reverse of sklearn.
A single class present makes all three undefined: NaN with an UndefinedMetricWarning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from glocal_lib.metrics.inputs import check_scores_labels, undefined


@dataclass(frozen=True)
class RankedScores:
    """Scores split by class and sorted: the shared input of AUROC, AP and F1-max."""

    positives: np.ndarray  # sorted ascending
    negatives: np.ndarray  # sorted ascending

    @classmethod
    def from_arrays(cls, scores: np.ndarray, labels: np.ndarray) -> RankedScores:
        """Build from already validated 1-D float scores and bool labels."""
        positives, negatives = scores[labels], scores[~labels]  # copies, sorted in place
        positives.sort()
        negatives.sort()
        return cls(positives, negatives)

    @property
    def n_pos(self) -> int:
        return int(self.positives.size)

    @property
    def n_neg(self) -> int:
        return int(self.negatives.size)

    def single_class_reason(self) -> str | None:
        if self.n_pos == 0:
            return "no positive (anomalous) sample"
        if self.n_neg == 0:
            return "no negative (normal) sample"
        return None

    def _at_positive_values(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Unique positive values u (ascending) with counts, #pos >= u and #neg >= u, #neg <= u."""
        pos = self.positives
        starts = np.flatnonzero(np.concatenate(([True], pos[1:] != pos[:-1])))
        values = pos[starts]
        tp = self.n_pos - starts  # positives >= u
        counts = np.diff(np.append(starts, self.n_pos))
        neg_lt = np.searchsorted(self.negatives, values, side="left")
        neg_le = np.searchsorted(self.negatives, values, side="right")
        return counts, tp, neg_lt, neg_le

    def auroc(self) -> float:
        if (reason := self.single_class_reason()) is not None:
            return undefined("AUROC", reason)
        counts, _, neg_lt, neg_le = self._at_positive_values()
        twice_u = int(np.dot(counts.astype(np.int64), (neg_lt + neg_le).astype(np.int64)))
        return twice_u / (2 * self.n_pos * self.n_neg)

    def average_precision(self) -> float:
        if (reason := self.single_class_reason()) is not None:
            return undefined("average precision", reason)
        counts, tp, neg_lt, _ = self._at_positive_values()
        fp = self.n_neg - neg_lt
        precision = tp / (tp + fp)
        return float(np.sum(counts / self.n_pos * precision))

    def f1_max(self) -> float:
        if (reason := self.single_class_reason()) is not None:
            return undefined("F1-max", reason)
        _, tp, neg_lt, _ = self._at_positive_values()
        fp = self.n_neg - neg_lt
        precision = tp / (tp + fp)
        recall = tp / self.n_pos
        return float(np.max(2 * precision * recall / (precision + recall)))


def ranked(scores: Any, labels: Any) -> RankedScores:
    """Validate and sort once; reuse the result for several metrics."""
    s, y = check_scores_labels(scores, labels)
    return RankedScores.from_arrays(s, y)


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve (= sklearn ``roc_auc_score(labels, scores)``), ties count 1/2."""
    return ranked(scores, labels).auroc()


def average_precision(scores: Any, labels: Any) -> float:
    """Average precision (= sklearn ``average_precision_score(labels, scores)``)."""
    return ranked(scores, labels).average_precision()


def f1_max(scores: Any, labels: Any) -> float:
    """Max F1 over all thresholds, as the released code computes it from precision_recall_curve."""
    return ranked(scores, labels).f1_max()
