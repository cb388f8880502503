"""Model-quality metrics, one implementation each: AUC, F1, MAE and RMSE, and a binary model's decision.

The rolling performance (:mod:`stream_monitor.core.performance`), the reference baseline
(:mod:`stream_monitor.core.reference`) and the offline planner (:mod:`stream_monitor.offline.planner`)
all call these, so a live AUC and its training baseline are the same statistic computed the same way.
Accuracy and F1 also need the same decision on both sides: :func:`binary_decisions` is the one rule.
Pure numpy; ``tests/test_quality.py`` checks them against scikit-learn when it is installed, else
against scipy (``mannwhitneyu`` for the AUC).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "DECISION_THRESHOLD",
    "binary_auc",
    "binary_decisions",
    "f1_from_counts",
    "mae",
    "per_class_f1",
    "rmse",
    "wape",
]

#: A binary score at or above this is a positive decision, when the prediction names no class. Not a
#: setting: live metrics and the reference baseline must decide alike, and both read it from here.
DECISION_THRESHOLD = 0.5


def binary_decisions(
    score: npt.ArrayLike,
    pred_class: Sequence[str | None] | None,
    positive_class: str,
    threshold: float = DECISION_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """A binary model's decision per event: ``(positive, decided)``, two bool arrays.

    The predicted class decides where the event names one (it is the model's own decision, whatever
    threshold the model used); otherwise the score at ``threshold``. An event with neither is not
    decided (``positive`` is False there). The live F1/accuracy
    (:class:`~stream_monitor.core.performance.RollingPerformance`) and the reference baseline
    (:func:`~stream_monitor.core.reference.build_reference`) both decide with this.

    >>> positive, decided = binary_decisions(
    ...     np.array([0.9, 0.2, 0.7, np.nan, np.nan]), ["0", None, None, "1", None], "1")
    >>> positive.tolist(), decided.tolist()
    ([False, False, True, True, False], [True, True, True, True, False])
    """
    s = np.asarray(score, dtype=np.float64)
    by_score = s >= threshold  # NaN compares False
    decided = ~np.isnan(s)
    if pred_class is None:
        return by_score, decided
    if len(pred_class) != s.size:
        raise ValueError(f"{len(pred_class)} predicted classes for {s.size} scores")
    has_class = np.fromiter((c is not None for c in pred_class), dtype=bool, count=s.size)
    by_class = np.fromiter((c == positive_class for c in pred_class), dtype=bool, count=s.size)
    return np.where(has_class, by_class, by_score), decided | has_class


def binary_auc(score: npt.ArrayLike, positive: npt.ArrayLike) -> float:
    """ROC AUC by the Mann–Whitney rank sum, average ranks for ties; NaN if a class is absent.

    The AUC is the probability that a random positive scores above a random negative (ties count
    half): ``(R₊ − n₊(n₊ + 1)/2) / (n₊ n₋)`` with ``R₊`` the rank sum of the positives. A NaN score
    makes it NaN (as ``scipy.stats.rankdata`` does); callers drop unscored events first.

    >>> binary_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True]))
    0.75
    >>> binary_auc(np.array([0.5, 0.5]), np.array([False, True]))
    0.5
    >>> binary_auc(np.array([0.2, 0.9]), np.array([True, True]))
    nan
    """
    s = np.asarray(score, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    n_pos = int(np.count_nonzero(pos))
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0 or np.isnan(s).any():
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ordered = s[order]
    # Runs of equal scores share the mean of the ranks they span (1-based: start + 1 … end).
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.size]
    ranks = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    rank_sum = float(ranks[pos[order]].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def f1_from_counts(tp: float, fp: float, fn: float, zero_division: float = math.nan) -> float:
    """F1 = 2·TP / (2·TP + FP + FN); ``zero_division`` when nothing was predicted or present.

    >>> f1_from_counts(1, 1, 1), f1_from_counts(0, 0, 0), f1_from_counts(0, 0, 0, zero_division=0.0)
    (0.5, nan, 0.0)
    """
    den = 2 * tp + fp + fn
    return 2 * tp / den if den else zero_division


def per_class_f1(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """F1 of every class code ``0 … n_classes − 1`` (NaN for a class neither predicted nor present).

    Codes below 0 (no class) count for no class. Macro F1 is the mean over the non-NaN entries.

    >>> per_class_f1(np.array([0, 1, 2]), np.array([0, 1, 1]), 4).round(4).tolist()
    [1.0, 0.6667, 0.0, nan]
    """
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    valid_t, valid_p = truth >= 0, pred >= 0
    true_count = np.bincount(truth[valid_t], minlength=n_classes)
    pred_count = np.bincount(pred[valid_p], minlength=n_classes)
    tp_count = np.bincount(truth[(pred == truth) & valid_t], minlength=n_classes)
    den = (true_count + pred_count).astype(np.float64)
    return np.divide(2.0 * tp_count, den, out=np.full(n_classes, math.nan), where=den > 0)


def mae(error: np.ndarray) -> float:
    """Mean absolute error of ``prediction − label`` differences (NaN when empty).

    >>> mae(np.array([1.0, -3.0]))
    2.0
    """
    return float(np.mean(np.abs(error))) if len(error) else math.nan


def rmse(error: np.ndarray) -> float:
    """Root mean squared error of ``prediction − label`` differences (NaN when empty).

    >>> rmse(np.array([1.0, -3.0]))
    2.23606797749979
    """
    return float(np.sqrt(np.mean(error * error))) if len(error) else math.nan


def wape(error: np.ndarray, label: np.ndarray) -> float:
    """MAE relative to the level of the target: ``mean |prediction − label| / mean |label|`` (WAPE).

    A scale-aware error: when the target's level moves (demand tripling over a season), the MAE grows
    with it although the model is no worse; WAPE does not. NaN when empty or every label is 0.

    >>> wape(np.array([1.0, -3.0]), np.array([10.0, 30.0]))
    0.1
    """
    level = float(np.mean(np.abs(label))) if len(label) else 0.0
    return mae(error) / level if level > 0 else math.nan
