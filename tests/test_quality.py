"""The one implementation of each quality metric against an oracle: scikit-learn when it is installed,
else scipy (the AUC is the Mann–Whitney U statistic over n₊·n₋) and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu

from stream_monitor.core.quality import binary_auc, f1_from_counts, mae, per_class_f1, rmse

try:
    from sklearn import metrics as sk
except ImportError:  # the dev extras do not require it
    sk = None

# Scores with many ties (few distinct values) and infinities: the rank code's hard cases.
scores = st.lists(
    st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0, math.inf, -math.inf]), st.floats(-5, 5)),
    min_size=2,
    max_size=60,
)


def oracle_auc(score: np.ndarray, positive: np.ndarray) -> float:
    # scikit-learn refuses infinite scores; the Mann-Whitney U statistic ranks them like any other.
    if sk is not None and np.isfinite(score).all():
        return float(sk.roc_auc_score(positive, score))
    u = mannwhitneyu(score[positive], score[~positive], alternative="two-sided").statistic
    return float(u) / (int(positive.sum()) * int((~positive).sum()))


@settings(max_examples=300, deadline=None)
@given(scores, st.data())
def test_auc_matches_the_oracle(values: list[float], data: st.DataObject) -> None:
    score = np.array(values)
    positive = np.array(data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values))))
    got = binary_auc(score, positive)
    if positive.all() or not positive.any():
        assert math.isnan(got)
    else:
        assert got == pytest.approx(oracle_auc(score, positive), abs=1e-12)


def test_auc_of_a_nan_score_is_nan_and_inputs_may_be_lists() -> None:
    assert math.isnan(binary_auc(np.array([0.1, math.nan, 0.3]), np.array([True, False, True])))
    assert binary_auc([0.9, 0.1, 0.8, 0.3], [True, False, False, True]) == 0.75


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(-1, 3)), min_size=1, max_size=80))
def test_per_class_f1_matches_the_oracle(pairs: list[tuple[int, int]]) -> None:
    truth = np.array([t for t, _ in pairs])
    pred = np.array([p for _, p in pairs])  # -1: the model gave no class
    f1 = per_class_f1(pred, truth, 4)
    for c in range(4):
        tp = int(np.sum((pred == c) & (truth == c)))
        fp = int(np.sum((pred == c) & (truth != c)))
        fn = int(np.sum((pred != c) & (truth == c)))
        want = f1_from_counts(tp, fp, fn)
        assert (math.isnan(f1[c]) and math.isnan(want)) or f1[c] == pytest.approx(want)
    if sk is not None:
        seen = sorted(set(truth.tolist()) | set(pred[pred >= 0].tolist()))
        want_macro = sk.f1_score(truth, pred, labels=seen, average="macro", zero_division=0)
        assert float(np.nanmean(f1)) == pytest.approx(want_macro)


def test_f1_from_counts_follows_its_zero_division() -> None:
    assert f1_from_counts(3, 1, 2) == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))
    assert math.isnan(f1_from_counts(0, 0, 0))
    assert f1_from_counts(0, 0, 0, zero_division=0.0) == 0.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50))
def test_mae_and_rmse_match_the_oracle(values: list[float]) -> None:
    error = np.array(values)
    if sk is not None:
        zeros = np.zeros_like(error)
        assert mae(error) == pytest.approx(sk.mean_absolute_error(zeros, error))
        assert rmse(error) == pytest.approx(math.sqrt(sk.mean_squared_error(zeros, error)))
    assert mae(error) == pytest.approx(sum(abs(e) for e in values) / len(values))
    assert rmse(error) == pytest.approx(math.sqrt(sum(e * e for e in values) / len(values)))
    assert math.isnan(mae(np.array([]))) and math.isnan(rmse(np.array([])))


def test_every_auc_in_the_package_is_this_one() -> None:
    """The rolling performance, the reference baseline and the offline planner share the AUC."""
    from stream_monitor.core import performance, reference
    from stream_monitor.offline import planner

    assert performance.binary_auc is binary_auc
    assert reference.binary_auc is binary_auc
    assert planner.binary_auc is binary_auc
