"""Window evaluation (many features, one correction family) and the integrity checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_monitor.detectors import (
    DetectorResult,
    chi_square,
    cohens_w,
    correct_family,
    evaluate_categorical,
    evaluate_numeric,
    holm,
    js_divergence,
    ks_2samp_sorted,
    missing_rate_check,
    new_category_check,
    out_of_range_check,
    psi,
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


def test_evaluate_numeric_reports_each_statistic_against_its_oracle() -> None:
    ref_counts, win_counts, ref_sorted, window, names = _numeric_window(0, [0.0, 0.5, 0.05])
    results = evaluate_numeric(ref_counts, win_counts, ref_sorted, window, names)
    assert [(r.detector, r.feature) for r in results] == [
        (detector, name) for name in names for detector in ("psi", "ks", "js")
    ]
    raw = [ks_2samp_sorted(r, w) for r, w in zip(ref_sorted, window, strict=True)]
    adjusted = holm([p for _, p in raw])
    for i, name in enumerate(names):
        psi_result, ks_result, js_result = results[3 * i : 3 * i + 3]
        assert psi_result.value == pytest.approx(psi(ref_counts[i], win_counts[i]), rel=1e-12)
        assert js_result.value == pytest.approx(js_divergence(ref_counts[i], win_counts[i]), rel=1e-12)
        assert ks_result.value == ks_result.effect_size == raw[i][0]
        assert ks_result.p_value == pytest.approx(adjusted[i], rel=1e-12)
        assert ks_result.feature == name
    assert [r.feature for r in results if r.drift] == ["f1", "f1", "f1"]


def test_twenty_null_features_never_flag_and_one_shifted_feature_does() -> None:
    shifts = [0.0] * 20
    shifts[7] = 0.4
    flagged: set[str | None] = set()
    for seed in range(10):
        results = evaluate_numeric(*_numeric_window(seed, shifts))
        flagged |= {r.feature for r in results if r.drift}
        assert {r.feature for r in results if r.detector == "ks" and r.drift} == {"f7"}
    assert flagged == {"f7"}


def test_huge_identical_windows_never_flag() -> None:
    results = evaluate_numeric(*_numeric_window(3, [0.0, 0.0], n_ref=1_000_000, n_win=1_000_000))
    assert not any(r.drift or r.warning for r in results)


def test_evaluate_categorical_against_oracles() -> None:
    reference = [np.array([600.0, 300.0, 100.0]), np.array([500.0, 500.0])]
    window = [np.array([150.0, 150.0, 200.0]), np.array([251.0, 249.0])]
    results = evaluate_categorical(reference, window, ["channel", "country"])
    assert [(r.detector, r.feature) for r in results] == [
        ("psi", "channel"),
        ("chi2", "channel"),
        ("psi", "country"),
        ("chi2", "country"),
    ]
    raw = [chi_square(r, w) for r, w in zip(reference, window, strict=True)]
    adjusted = holm([p for _, p in raw])
    for i in range(2):
        assert results[2 * i].value == pytest.approx(psi(reference[i], window[i]), rel=1e-12)
        chi2_result = results[2 * i + 1]
        assert chi2_result.value == pytest.approx(cohens_w(raw[i][0], window[i].sum()), rel=1e-12)
        assert chi2_result.p_value == pytest.approx(adjusted[i], rel=1e-12)
    assert [r.drift for r in results] == [True, True, False, False]


def test_one_correction_family_over_numeric_and_categorical_tests() -> None:
    numeric = evaluate_numeric(*_numeric_window(4, [0.0, 0.3, 0.0]), correct=False)
    categorical = evaluate_categorical([[600, 400]], [[260, 240]], ["channel"], correct=False)
    raw = numeric + categorical
    tests = [r for r in raw if r.p_value is not None]
    assert len(tests) == 4
    assert not any(r.drift or r.warning for r in tests)  # undecided until corrected
    corrected = correct_family(raw)
    adjusted = holm([np.nan if r.p_value is None else r.p_value for r in tests])
    assert [r.p_value for r in corrected if r.p_value is not None] == pytest.approx(adjusted, rel=1e-12)
    assert [r for r in corrected if r.p_value is None] == [r for r in raw if r.p_value is None]
    assert [r.feature for r in corrected if r.detector == "ks" and r.drift] == ["f1"]


def test_correct_family_needs_both_significance_and_effect() -> None:
    def ks(p_value: float, effect: float) -> DetectorResult:
        return DetectorResult(
            "ks", "x", "ks_statistic", effect, 0.1, False, p_value=p_value, effect_size=effect
        )

    decided = correct_family([ks(1e-9, 0.05), ks(1e-9, 0.2), ks(0.2, 0.5), ks(math.nan, 0.5)])
    assert [r.drift for r in decided] == [False, True, False, False]
    assert [r.warning for r in decided] == [True, True, False, False]  # warning: significant, effect >= 0.05


def test_evaluate_rejects_misaligned_inputs() -> None:
    ref_counts, win_counts, ref_sorted, window, _ = _numeric_window(5, [0.0, 0.0])
    with pytest.raises(ValueError):
        evaluate_numeric(ref_counts, win_counts, ref_sorted, window, ["only_one"])
    with pytest.raises(ValueError):
        evaluate_categorical([[1, 2]], [[1, 2]], ["a", "b"])


# --- integrity ------------------------------------------------------------------------------------


def test_missing_rate_check_thresholds() -> None:
    assert missing_rate_check(121, 1000, 0.02).drift is True
    below = missing_rate_check(119, 1000, 0.02)
    assert (below.drift, below.warning) == (False, True)
    assert missing_rate_check(60, 1000, 0.02).warning is False
    empty = missing_rate_check(0, 0, 0.02)
    assert math.isnan(empty.value) and not empty.drift


def test_out_of_range_and_new_category_checks() -> None:
    result = out_of_range_check(30, 21, 1000, feature="temp")
    assert (result.detector, result.value, result.drift) == ("integrity:out_of_range", 0.051, True)
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
