"""calibrate: thresholds from time-ordered training windows for a whole-model false-alarm budget, never
below their floors, checked on held-out time."""

from __future__ import annotations

import numpy as np
import pytest

from stream_monitor.core.detectors.table import PREDICTION
from stream_monitor.core.evaluation import evaluate_window
from stream_monitor.core.events import PredictionBatch
from stream_monitor.core.reference import build_reference
from stream_monitor.core.schema import FeatureSpec, ModelSchema
from stream_monitor.core.settings import ModelSettings, WindowSettings
from stream_monitor.core.sketches import WindowSketch
from stream_monitor.core.windows import ClosedWindow, take_batch
from stream_monitor.offline.calibration import (
    FLOORS,
    _threshold,
    calibrate,
    calibration_hooks,
    gumbel_quantile,
    window_events_for,
)

SCHEMA = ModelSchema(
    "m",
    "binary",
    (
        FeatureSpec("x", "numeric", key=True),
        FeatureSpec("y", "numeric", key=True),
        FeatureSpec("c", "categorical", key=True),
    ),
)


def _data(n: int, seed: int, shift: float = 0.0) -> PredictionBatch:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, n))
    x[0] += shift
    cats = rng.choice(["a", "b", "c", "d"], size=n, p=[0.4, 0.3, 0.2, 0.1]).tolist()
    score = 1 / (1 + np.exp(-x[0]))
    return PredictionBatch(
        "m", np.arange(n), [f"{seed}-{i}" for i in range(n)], np.arange(n, dtype=float),
        [None] * n, x, [cats], score, [None] * n, {}, 0,
    )  # fmt: skip


SETTINGS = ModelSettings(window=WindowSettings(size=1000))
FAMILIES = [hook.name for hook in calibration_hooks()]


def test_every_family_gets_a_positive_threshold_and_settings_carry_them() -> None:
    cal = calibrate(SCHEMA, _data(20_000, 0), SETTINGS, budget_per_million=10.0, windows=30, seed=0)
    assert (
        set(cal.thresholds)
        == set(FAMILIES)
        == {"psi_alarm", "prediction_psi_alarm", "ks_min_effect", "chi2_min_effect"}
    )
    assert all(v > 0 for v in cal.thresholds.values())
    s = cal.settings
    assert s.policy.psi_alarm == cal.thresholds["psi_alarm"]
    assert s.policy.prediction_psi_alarm == cal.thresholds["prediction_psi_alarm"]
    assert s.detectors.ks_min_effect == cal.thresholds["ks_min_effect"]
    assert s.detectors.chi2_min_effect == cal.thresholds["chi2_min_effect"]
    assert s.policy.psi_warning < s.policy.psi_alarm <= s.policy.psi_critical
    assert cal.per_window_budget == pytest.approx(10.0 * 1000 / 1e6)
    assert all(len(v) == 30 for v in cal.null_maxima.values())


def test_seeded_and_deterministic() -> None:
    data = _data(10_000, 1)
    a = calibrate(SCHEMA, data, SETTINGS, windows=10, seed=3)
    b = calibrate(SCHEMA, data, SETTINGS, windows=10, seed=3)
    assert a.thresholds == b.thresholds


def test_smaller_budget_gives_higher_thresholds() -> None:
    data = _data(10_000, 2)
    loose = calibrate(SCHEMA, data, SETTINGS, budget_per_million=1e4, windows=40, seed=0)
    strict = calibrate(SCHEMA, data, SETTINGS, budget_per_million=0.01, windows=40, seed=0)
    for name in FAMILIES:
        assert strict.thresholds[name] >= loose.thresholds[name]


def test_budget_holds_on_fresh_stationary_windows_and_shift_is_seen() -> None:
    budget = 20.0  # per million events: 2 % per 1000-event window, 0.5 % per family
    cal = calibrate(SCHEMA, _data(40_000, 3), SETTINGS, budget_per_million=budget, windows=100, seed=0)
    reference = build_reference(SCHEMA, _data(40_000, 3))
    d = cal.settings.detectors
    psi_alarm = cal.settings.policy.psi_alarm

    def alarms(batch: PredictionBatch, w: int) -> bool:
        sk = WindowSketch(SCHEMA, reference, sample_size=d.window_sample, seed=w)
        sk.update(batch)
        res = evaluate_window(SCHEMA, reference, ClosedWindow(0, 1, w, sk), d, psi_alarm=psi_alarm)
        return any(r.drift for r in res if r.detector in ("psi", "ks", "chi2") and r.feature != PREDICTION)

    null = sum(alarms(_data(1000, 100 + w), w) for w in range(100))
    # 2 % per window budget, ≤ 3 families in play: allow sampling slack, but far below "often".
    assert null <= 8
    shifted = sum(alarms(_data(1000, 300 + w, shift=0.5), w) for w in range(20))
    assert shifted >= 18


def test_too_little_data_is_an_error() -> None:
    with pytest.raises(ValueError, match="model m"):
        calibrate(SCHEMA, _data(2, 0), SETTINGS)


def test_gumbel_quantile_matches_a_gumbel_sample_and_threshold_extrapolates() -> None:
    rng = np.random.default_rng(5)
    m = rng.gumbel(loc=0.2, scale=0.05, size=50_000)
    assert gumbel_quantile(m, 0.999) == pytest.approx(np.quantile(m, 0.999), rel=0.02)
    few = m[:50]
    # Empirical quantile where the tail is within reach; extrapolated (never below the max) beyond.
    assert _threshold(few, 0.1) == pytest.approx(np.quantile(few, 0.9))
    assert _threshold(few, 1e-6) >= few.max()


# --------------------------------------------------------------------------- time order (issue 15)


def _drifting(n: int, seed: int, drift: float) -> PredictionBatch:
    """Training data whose first feature's mean moves by ``drift`` over the period (a season)."""
    data = _data(n, seed)
    data.numeric[0] += np.linspace(0.0, drift, n)
    data.score[:] = 1 / (1 + np.exp(-data.numeric[0]))
    return data


def test_normal_non_stationarity_is_inside_the_budget() -> None:
    still = calibrate(SCHEMA, _drifting(20_000, 4, 0.0), SETTINGS, windows=40, seed=0)
    season = calibrate(SCHEMA, _drifting(20_000, 4, 0.8), SETTINGS, windows=40, seed=0)
    # Each time block is compared with the others, so a season's drift raises the PSI and KS levels.
    assert season.raw_thresholds["psi_alarm"] > 2 * still.raw_thresholds["psi_alarm"]
    assert season.raw_thresholds["ks_min_effect"] > 2 * still.raw_thresholds["ks_min_effect"]
    assert season.blocks == still.blocks == 5


def test_windows_follow_event_time_not_file_order() -> None:
    data = _drifting(10_000, 5, 0.5)
    shuffled = take_batch(data, np.random.default_rng(0).permutation(10_000))
    a = calibrate(SCHEMA, data, SETTINGS, windows=20, seed=0)
    b = calibrate(SCHEMA, shuffled, SETTINGS, windows=20, seed=0)
    for name in FAMILIES:
        assert a.raw_thresholds[name] == pytest.approx(b.raw_thresholds[name], rel=1e-9)


def test_thresholds_never_go_below_their_floor() -> None:
    data = _data(20_000, 6)
    cal = calibrate(SCHEMA, data, SETTINGS, budget_per_million=100.0, windows=30, seed=0)
    for name, floor in FLOORS.items():
        assert cal.thresholds[name] >= floor
        assert cal.floored[name] == (cal.raw_thresholds[name] < floor)
    # Stationary data and a loose budget: the quantiles alone sit well below the floors.
    assert cal.floored["psi_alarm"] and cal.settings.policy.psi_alarm == FLOORS["psi_alarm"]
    assert cal.raw_thresholds["psi_alarm"] < FLOORS["psi_alarm"] / 2
    unfloored = calibrate(SCHEMA, data, SETTINGS, budget_per_million=100.0, windows=30, seed=0, floors={})
    assert unfloored.thresholds["psi_alarm"] == pytest.approx(cal.raw_thresholds["psi_alarm"])


def test_the_held_out_check_counts_false_alarms_on_new_time() -> None:
    quiet = calibrate(SCHEMA, _data(20_000, 7), SETTINGS, budget_per_million=10.0, windows=50, seed=0)
    assert quiet.held_out is not None and quiet.held_out.windows == 50
    assert quiet.held_out.alarms <= 2 and quiet.held_out.budget == quiet.per_window_budget
    # The last fifth of the training period shifted: thresholds from the other blocks do not cover it.
    data = _data(20_000, 8)
    data.numeric[0, 16_000:] += 1.0
    shifted = calibrate(SCHEMA, data, SETTINGS, budget_per_million=10.0, windows=50, seed=0)
    assert shifted.held_out is not None
    assert shifted.held_out.alarms >= 10 and shifted.held_out.by_family["psi_alarm"] >= 10
    assert "above the budget" in shifted.held_out.summary()


def test_event_time_windows_get_the_events_of_their_width() -> None:
    settings = ModelSettings(window=WindowSettings(kind="time", width=500.0))
    data = _data(10_000, 9)  # one event per second
    assert window_events_for(settings, data.ts) == 500
    assert calibrate(SCHEMA, data, settings, windows=10, seed=0).window_events == 500
