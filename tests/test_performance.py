"""Rolling performance against brute force: pairwise AUC, hand-counted F1, hand-computed MAE/RMSE/bias."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_monitor.core.labels import LabelJoinBuffer
from stream_monitor.core.performance import RollingPerformance, binary_auc
from stream_monitor.errors import StateError


def brute_auc(score: list[float], pos: list[bool]) -> float:
    p = [s for s, y in zip(score, pos, strict=True) if y]
    n = [s for s, y in zip(score, pos, strict=True) if not y]
    if not p or not n:
        return math.nan
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in p for b in n)
    return wins / (len(p) * len(n))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=1, max_size=60))
def test_auc_matches_pairwise_count_with_ties(rows: list[tuple[int, bool]]) -> None:
    score = [s / 6 for s, _ in rows]  # few distinct values: many ties
    pos = [y for _, y in rows]
    got, want = binary_auc(np.array(score), np.array(pos)), brute_auc(score, pos)
    assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-12)


def hand_binary(score: list[float], label: list[float]) -> dict[str, float]:
    tp = fp = fn = tn = 0
    for s, y in zip(score, label, strict=True):
        p = s >= 0.5
        if p and y == 1:
            tp += 1
        elif p:
            fp += 1
        elif y == 1:
            fn += 1
        else:
            tn += 1
    prec = tp / (tp + fp) if tp + fp else math.nan
    rec = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * prec * rec / (prec + rec) if tp else (0.0 if fp + fn else math.nan)
    return {"accuracy": (tp + tn) / len(score), "precision": prec, "recall": rec, "f1": f1}


def test_binary_window_matches_hand_counts_on_last_n() -> None:
    rng = np.random.default_rng(0)
    perf = RollingPerformance("binary", window=700)
    score = np.round(rng.random(3000), 2)  # rounded: ties
    label = (rng.random(3000) < score).astype(float)
    for lo in range(0, 3000, 450):
        perf.update_arrays(score[lo : lo + 450], label[lo : lo + 450])
    m = perf.metrics()
    s, y = score[-700:].tolist(), label[-700:].tolist()
    want = hand_binary(s, y)
    assert m["n"] == 700
    for k, v in want.items():
        assert m[k] == pytest.approx(v), k
    assert m["auc"] == pytest.approx(brute_auc(s, [v == 1 for v in y]))
    assert 0.7 < m["auc"] < 0.9


def test_binary_pred_class_overrides_score_and_nan_when_one_class() -> None:
    perf = RollingPerformance("binary", positive_class="yes")
    # scores say positive, classes say otherwise (None falls back to the score)
    perf.update_arrays(np.array([0.9, 0.9, 0.1]), np.array([1.0, 1.0, 1.0]), ["no", None, "yes"], None)
    m = perf.metrics()
    assert m["recall"] == pytest.approx(2 / 3) and m["precision"] == 1.0
    assert math.isnan(m["auc"])  # no negatives


def test_multiclass_f1_by_hand() -> None:
    pred = ["a", "a", "b", "c", "c", "b", None]
    true = ["a", "b", "b", "c", "a", "b", "c"]
    perf = RollingPerformance("multiclass")
    perf.update_arrays(np.zeros(7), np.zeros(7), pred, true)
    m = perf.metrics()
    # a: tp 1, fp 1, fn 1 -> 0.5 ; b: tp 2, fp 0, fn 1 -> 0.8 ; c: tp 1, fp 1, fn 1 -> 0.5
    assert m["f1:a"] == pytest.approx(0.5)
    assert m["f1:b"] == pytest.approx(0.8)
    assert m["f1:c"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx(0.6)
    assert m["accuracy"] == pytest.approx(4 / 7)


def test_multiclass_class_table_is_bounded() -> None:
    perf = RollingPerformance("multiclass", max_classes=4)
    cls = [f"c{i}" for i in range(10)]
    perf.update_arrays(np.zeros(10), np.zeros(10), cls, cls)
    names = [k for k in perf.metrics() if k.startswith("f1:")]
    assert len(names) == 4 and "f1:__other__" in names


def test_regression_by_hand_and_ring_window() -> None:
    perf = RollingPerformance("regression", window=4)
    perf.update_arrays(np.array([100.0, 5.0]), np.array([0.0, 0.0]))  # pushed out by the next batch
    perf.update_arrays(np.array([1.0, 2.0, 3.0, 10.0]), np.array([2.0, 2.0, 5.0, 6.0]))
    m = perf.metrics()
    err = [-1.0, 0.0, -2.0, 4.0]
    assert m["n"] == 4
    assert m["mae"] == pytest.approx(sum(abs(e) for e in err) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(sum(e * e for e in err) / 4))
    assert m["mean_error"] == pytest.approx(sum(err) / 4)


def test_update_batch_larger_than_window_keeps_the_last() -> None:
    perf = RollingPerformance("regression", window=3)
    perf.update_arrays(np.arange(10.0), np.zeros(10))
    assert perf.metrics()["mean_error"] == pytest.approx(8.0)


def test_adwin_flags_error_growth_not_stationary_noise() -> None:
    rng = np.random.default_rng(3)
    perf = RollingPerformance("regression", window=1000)
    flags = []
    for step in range(40):
        label = rng.normal(100, 5, 250)
        bias = 0.0 if step < 20 else -15.0  # seed 003: under-estimation appears
        perf.update_arrays(label + bias + rng.normal(0, 2, 250), label)
        flags.append(perf.error_drift_detected)
    assert not any(flags[:20])
    assert any(flags[20:])
    assert perf.metrics()["mean_error"] < -10


def test_update_from_joined_labels() -> None:
    buf = LabelJoinBuffer(100, 1e9)
    buf.add_predictions(["a", "b", "c"], np.zeros(3), np.array([0.8, 0.3, 0.6]), ["1", "0", "1"])
    j = buf.join(["a", "b", "c"], np.ones(3), np.array([1.0, 0.0, 0.0]), ["1", "0", "0"], now=1.0)
    perf = RollingPerformance("binary")
    perf.update(j)
    m = perf.metrics()
    assert m["accuracy"] == pytest.approx(2 / 3) and m["precision"] == 0.5 and m["auc"] == 1.0


def test_snapshot_round_trip_mid_stream() -> None:
    rng = np.random.default_rng(9)
    a = RollingPerformance("binary", window=500)
    for _ in range(5):
        s = rng.random(200)
        a.update_arrays(s, (rng.random(200) < s).astype(float))
    b = RollingPerformance.restore(a.snapshot())
    assert b.metrics() == a.metrics()
    for step in range(10):
        s = rng.random(200) if step < 5 else rng.random(200) * 0.2
        y = (rng.random(200) < 0.8).astype(float)
        a.update_arrays(s, y)
        b.update_arrays(s, y)
        assert a.error_drift_detected == b.error_drift_detected
        ma, mb = a.metrics(), b.metrics()
        assert ma.keys() == mb.keys()
        assert all(ma[k] == mb[k] or (math.isnan(ma[k]) and math.isnan(mb[k])) for k in ma)


def test_restore_rejects_garbage() -> None:
    with pytest.raises(StateError):
        RollingPerformance.restore(b"not a pickle")
