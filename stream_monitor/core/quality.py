"""Model-quality metrics, one implementation each: AUC, F1, MAE and RMSE.

The rolling performance (:mod:`stream_monitor.core.performance`), the reference baseline
(:mod:`stream_monitor.core.reference`) and the offline planner (:mod:`stream_monitor.offline.planner`)
all call these, so a live AUC and its training baseline are the same statistic computed the same way.
Pure numpy; ``tests/test_quality.py`` checks them against scikit-learn when it is installed, else
against scipy (``mannwhitneyu`` for the AUC).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["binary_auc", "f1_from_counts", "mae", "per_class_f1", "rmse"]


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
