"""Window evaluation (many features, one correction family) and the integrity checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_monitor.core.detectors import (
    DetectorResult,
    correct_family,
    missing_rate_check,
    new_category_check,
    out_of_range_check,
    volume_check,
)

EDGES = np.linspace(-2, 2, 9)


def _histograms(samples: list[np.ndarray]) -> np.ndarray:
    return np.stack([np.bincount(np.searchsorted(EDGES, s), minlength=EDGES.size + 1) for s in samples])


NumericWindow = tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray], list[str]]


def _numeric_window(seed: int, shifts: list[float], n_ref: int = 5000, n_win: int = 2000) -> NumericWindow:
    rng = np.random.default_rng(seed)
    reference = [rng.normal(0, 1, n_ref) for _ in shifts]
    window = [rng.normal(shift, 1, n_win) for shift in shifts]
    names = [f"f{i}" for i in range(len(shifts))]
    return _histograms(reference), _histograms(window), [np.sort(r) for r in reference], window, names


def test_correct_family_needs_both_significance_and_effect() -> None:
    def ks(p_value: float, effect: float) -> DetectorResult:
        return DetectorResult(
            "ks", "x", "ks_statistic", effect, 0.1, False, p_value=p_value, effect_size=effect
        )

    decided = correct_family([ks(1e-9, 0.05), ks(1e-9, 0.2), ks(0.2, 0.5), ks(math.nan, 0.5)])
    assert [r.drift for r in decided] == [False, True, False, False]
    assert [r.warning for r in decided] == [True, True, False, False]  # warning: significant, effect >= 0.05


def test_missing_rate_check_thresholds() -> None:
    assert missing_rate_check(121, 1000, 0.02).drift is True
    below = missing_rate_check(119, 1000, 0.02)
    assert (below.drift, below.warning) == (False, True)
    assert missing_rate_check(60, 1000, 0.02).warning is False
    empty = missing_rate_check(0, 0, 0.02)
    assert math.isnan(empty.value) and not empty.drift


def test_out_of_range_and_new_category_checks() -> None:
    result = out_of_range_check(30, 21, 1000, feature="temp")
    assert (result.detector, result.value, result.drift) == ("out_of_range", 0.051, True)
    assert out_of_range_check(20, 20, 1000).drift is False
    assert out_of_range_check(20, 20, 1000).warning is True
    assert new_category_check(51, 1000).drift is True
    assert new_category_check(50, 1000).drift is False
    assert math.isnan(new_category_check(0, 0).value)


@pytest.mark.parametrize(
    ("n_events", "expected_ratio", "drift", "threshold"),
    [
        (2_500, 0.25, True, 0.5),
        (5_500, 0.55, False, 0.5),
        (21_000, 2.1, True, 2.0),
        (10_000, 1.0, False, 2.0),
    ],
)
def test_volume_check(n_events: int, expected_ratio: float, drift: bool, threshold: float) -> None:
    result = volume_check(n_events, 100.0, reference_event_rate=100.0)
    assert result.value == pytest.approx(expected_ratio)
    assert (result.drift, result.threshold) == (drift, threshold)


def test_volume_check_without_a_reference_rate_or_duration_never_alarms() -> None:
    for result in (volume_check(100, 10.0, None), volume_check(100, 0.0, 5.0), volume_check(100, 10.0, 0.0)):
        assert math.isnan(result.value)
        assert not result.drift and not result.warning
