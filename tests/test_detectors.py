"""Known-answer tests of the pure drift statistics against scipy, numpy and hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from stream_monitor.core.detectors import (
    benjamini_hochberg,
    chi_square,
    cohens_w,
    holm,
    js_divergence,
    js_divergence_matrix,
    kl_divergence,
    ks_2samp_sorted,
    ks_2samp_sorted_many,
    psi,
    psi_matrix,
    significant_drift,
    smoothed_proportions,
)

# --- PSI ------------------------------------------------------------------------------------------


def _psi_oracle(expected: np.ndarray, actual: np.ndarray, eps: float) -> float:
    """PSI is the symmetric KL divergence: KL(a || e) + KL(e || a), here via scipy.stats.entropy."""
    e = (expected + eps) / (expected.sum() + eps * expected.size)
    a = (actual + eps) / (actual.sum() + eps * actual.size)
    return float(stats.entropy(a, e) + stats.entropy(e, a))


def test_psi_by_hand() -> None:
    # (0.2 - 0.5) ln(0.2 / 0.5) + 0 + (0.5 - 0.2) ln(0.5 / 0.2) = 0.6 ln 2.5
    assert psi([50, 30, 20], [20, 30, 50], eps=0) == pytest.approx(0.6 * math.log(2.5), rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_psi_matches_symmetric_kl_oracle_with_empty_bins(seed: int) -> None:
    rng = np.random.default_rng(seed)
    expected = rng.integers(0, 50, 12).astype(float)
    actual = rng.integers(0, 50, 12).astype(float)
    expected[seed] = 0  # an empty reference bin must stay finite thanks to the smoothing
    value = psi(expected, actual)
    assert math.isfinite(value)
    assert value == pytest.approx(_psi_oracle(expected, actual, 1e-4), rel=1e-10)


def test_smoothing_formula() -> None:
    counts = np.array([3.0, 1.0, 0.0])
    assert smoothed_proportions(counts, eps=0.5) == pytest.approx((counts + 0.5) / (4 + 0.5 * 3))
    assert smoothed_proportions(counts, eps=0.5).sum() == pytest.approx(1.0)


def test_psi_matrix_equals_rowwise_psi_and_nan_for_empty_rows() -> None:
    rng = np.random.default_rng(3)
    expected = rng.integers(0, 100, (6, 10))
    actual = rng.integers(0, 100, (6, 10))
    actual[4] = 0
    values = psi_matrix(expected, actual)
    assert values.shape == (6,)
    assert np.isnan(values[4])
    for row in (0, 1, 2, 3, 5):
        assert values[row] == pytest.approx(psi(expected[row], actual[row]), rel=1e-12)
    assert math.isnan(psi([0, 0], [1, 2]))


def test_psi_is_zero_for_identical_proportions_and_symmetric() -> None:
    assert psi([10, 20, 30], [100, 200, 300]) == pytest.approx(0.0, abs=1e-6)
    assert psi([10, 20, 30], [30, 20, 10]) == pytest.approx(psi([30, 20, 10], [10, 20, 30]), rel=1e-12)


def test_psi_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        psi_matrix(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError):
        psi(np.ones((2, 3)), np.ones((2, 3)))


def test_psi_of_two_huge_identical_samples_is_far_below_the_warning() -> None:
    rng = np.random.default_rng(11)
    edges = np.quantile(rng.normal(size=10_000), np.linspace(0.1, 0.9, 9))
    reference = np.bincount(np.searchsorted(edges, rng.normal(size=1_000_000)), minlength=10)
    window = np.bincount(np.searchsorted(edges, rng.normal(size=1_000_000)), minlength=10)
    assert psi(reference, window) < 0.01


def test_psi_sampling_noise_matches_the_documented_rate() -> None:
    # Under no drift, E[PSI] ≈ (B - 1) (1/n1 + 1/n2): the chi-square approximation in the docstring.
    rng = np.random.default_rng(12)
    n_bins, n_ref, n_win, repeats = 10, 20_000, 5_000, 400
    proportions = np.full(n_bins, 1 / n_bins)
    reference = rng.multinomial(n_ref, proportions, size=repeats)
    window = rng.multinomial(n_win, proportions, size=repeats)
    mean_psi = psi_matrix(reference, window).mean()
    assert mean_psi == pytest.approx((n_bins - 1) * (1 / n_ref + 1 / n_win), rel=0.1)


# --- KS -------------------------------------------------------------------------------------------

KS_CASES = {
    "same_normal": lambda rng: (rng.normal(size=3000), rng.normal(size=1200)),
    "shifted": lambda rng: (rng.normal(size=5000), rng.normal(0.2, 1, size=5000)),
    "ties_integers": lambda rng: (rng.integers(0, 5, 4000) * 1.0, rng.integers(0, 6, 900) * 1.0),
    "ties_shared_values": lambda rng: (np.repeat([1.0, 2.0, 3.0], [10, 20, 30]), np.array([1.0, 3, 3, 3])),
    "tiny": lambda rng: (rng.normal(size=7), rng.normal(size=3)),
    "window_larger": lambda rng: (rng.exponential(size=800), rng.exponential(1.3, size=20_000)),
}


@pytest.mark.parametrize("case", KS_CASES)
def test_ks_matches_scipy_asymp(case: str) -> None:
    reference, sample = KS_CASES[case](np.random.default_rng(len(case)))
    statistic, p_value = ks_2samp_sorted(np.sort(reference), sample)
    expected = stats.ks_2samp(reference, sample, method="asymp")
    assert statistic == float(expected.statistic)  # bit-for-bit, as documented
    assert p_value == pytest.approx(float(expected.pvalue), rel=1e-9, abs=1e-300)


def test_ks_matches_scipy_auto_for_large_samples() -> None:
    rng = np.random.default_rng(4)
    reference, sample = rng.normal(size=20_000), rng.normal(0.02, 1, size=12_000)
    statistic, p_value = ks_2samp_sorted(np.sort(reference), sample)
    expected = stats.ks_2samp(reference, sample)  # method="auto" is asymptotic above 10 000
    assert statistic == float(expected.statistic)  # bit-for-bit, as documented
    assert p_value == pytest.approx(float(expected.pvalue), rel=1e-9)


def test_ks_p_value_is_close_to_exact_for_moderate_samples() -> None:
    rng = np.random.default_rng(5)
    reference, sample = rng.normal(size=600), rng.normal(0.1, 1, size=400)
    _, p_value = ks_2samp_sorted(np.sort(reference), sample)
    assert p_value == pytest.approx(float(stats.ks_2samp(reference, sample, method="exact").pvalue), abs=0.02)


def test_ks_drops_nan_and_reports_nan_for_empty_side() -> None:
    rng = np.random.default_rng(6)
    reference, sample = np.sort(rng.normal(size=500)), rng.normal(size=200)
    with_nan = np.concatenate([sample, [np.nan, np.nan]])
    assert ks_2samp_sorted(reference, with_nan) == ks_2samp_sorted(reference, sample)
    assert all(math.isnan(v) for v in ks_2samp_sorted(reference, [np.nan]))
    assert all(math.isnan(v) for v in ks_2samp_sorted([], sample))


def test_ks_many_matches_scipy_per_feature_and_marks_empty_samples() -> None:
    rng = np.random.default_rng(13)
    references = [rng.normal(size=2000), rng.integers(0, 4, 1500) * 1.0, rng.normal(size=300)]
    samples = [rng.normal(0.1, 1, size=700), rng.integers(0, 4, 400) * 1.0, np.array([np.nan])]
    statistics, p_values = ks_2samp_sorted_many([np.sort(r) for r in references], samples)
    for i in range(2):
        expected = stats.ks_2samp(references[i], samples[i], method="asymp")
        assert statistics[i] == float(expected.statistic)
        assert p_values[i] == pytest.approx(float(expected.pvalue), rel=1e-9)
    assert np.isnan(statistics[2]) and np.isnan(p_values[2])
    with pytest.raises(ValueError):
        ks_2samp_sorted_many(references, samples[:2])


# --- multiple testing -----------------------------------------------------------------------------


def _holm_oracle(p_values: list[float]) -> list[float]:
    """Holm straight from the definition, with explicit loops."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def test_holm_by_hand() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.04*1, 0.06) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


@pytest.mark.parametrize("seed", range(5))
def test_holm_matches_definition(seed: int) -> None:
    p_values = np.random.default_rng(seed).uniform(0, 0.2, 15).tolist()
    assert holm(p_values) == pytest.approx(_holm_oracle(p_values), rel=1e-12)


def test_holm_excludes_nan_from_the_family() -> None:
    adjusted = holm([0.01, np.nan, 0.02])
    assert np.isnan(adjusted[1])
    assert adjusted[[0, 2]] == pytest.approx(holm([0.01, 0.02]))


@pytest.mark.parametrize("seed", range(5))
def test_benjamini_hochberg_matches_scipy(seed: int) -> None:
    p_values = np.random.default_rng(seed).uniform(0, 0.1, 25)
    assert benjamini_hochberg(p_values) == pytest.approx(
        stats.false_discovery_control(p_values, method="bh"), rel=1e-12
    )


def test_two_million_row_identical_samples_never_flag() -> None:
    rng = np.random.default_rng(8)
    reference = np.sort(rng.normal(size=1_000_000))
    p_values, effects = [], []
    for _ in range(3):
        statistic, p_value = ks_2samp_sorted(reference, rng.normal(size=1_000_000))
        p_values.append(p_value)
        effects.append(statistic)
    _, drift = significant_drift(p_values, effects)
    assert not drift.any()


def test_significant_but_negligible_difference_does_not_flag_while_real_shift_does() -> None:
    rng = np.random.default_rng(9)
    reference = np.sort(rng.normal(size=1_000_000))
    tiny = ks_2samp_sorted(reference, rng.normal(0.01, 1, size=1_000_000))
    shifted = ks_2samp_sorted(reference, rng.normal(0.5, 1, size=1_000_000))
    adjusted, drift = significant_drift([tiny[1], shifted[1]], [tiny[0], shifted[0]])
    assert adjusted[0] < 0.01  # the test alone would call a 0.01-sigma shift drift
    assert drift.tolist() == [False, True]


def test_holm_family_controls_false_flags_over_many_null_features() -> None:
    # 20 null features per window, 200 windows: uncorrected alpha = 0.01 would flag ~18% of windows.
    rng = np.random.default_rng(10)
    p_values = rng.uniform(size=(200, 20))
    flagged_windows = sum(significant_drift(row, np.ones(20), min_effect=0.0)[1].any() for row in p_values)
    flagged_uncorrected = int((p_values < 0.01).any(axis=1).sum())
    assert flagged_windows <= 6
    assert flagged_uncorrected > 20


def test_significant_drift_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        significant_drift([0.1, 0.2], [0.3])
    with pytest.raises(ValueError):
        significant_drift([0.1], [0.3], method="bonferroni")  # type: ignore[arg-type]


# --- chi-square -----------------------------------------------------------------------------------


def test_chi_square_without_smoothing_matches_scipy() -> None:
    reference = np.array([400.0, 250.0, 200.0, 150.0])
    window = np.array([90.0, 70.0, 25.0, 15.0])
    statistic, p_value = chi_square(reference, window, eps=0)
    expected = stats.chisquare(window, reference / reference.sum() * window.sum())
    assert statistic == pytest.approx(float(expected.statistic), rel=1e-12)
    assert p_value == pytest.approx(float(expected.pvalue), rel=1e-10)


def test_chi_square_smooths_a_category_the_reference_never_saw() -> None:
    reference = np.array([600.0, 400.0, 0.0])
    window = np.array([50.0, 40.0, 10.0])
    statistic, p_value = chi_square(reference, window)
    smoothed_expected = window.sum() * (reference + 0.5) / (reference.sum() + 0.5 * 3)
    expected = stats.chisquare(window, smoothed_expected)
    assert math.isfinite(statistic)
    assert statistic == pytest.approx(float(expected.statistic), rel=1e-12)
    assert p_value == pytest.approx(float(expected.pvalue), rel=1e-10)


def test_chi_square_degenerate_inputs_give_nan() -> None:
    assert all(math.isnan(v) for v in chi_square([1, 2], [0, 0]))
    assert all(math.isnan(v) for v in chi_square([5], [5]))
    with pytest.raises(ValueError):
        chi_square([1, 2], [1, 2, 3])


def test_cohens_w_by_hand() -> None:
    # w^2 = sum (p_win - p_ref)^2 / p_ref = 0.09/0.6 + 0 + 0.09/0.1 = 1.05
    statistic, _ = chi_square([600, 300, 100], [150, 150, 200], eps=0)
    assert cohens_w(statistic, 500) == pytest.approx(math.sqrt(1.05), rel=1e-12)
    assert math.isnan(cohens_w(statistic, 0))


# --- divergences ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_js_divergence_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p, q = rng.integers(0, 30, 8).astype(float), rng.integers(0, 30, 8).astype(float)
    p[0] = 0  # zeros need no smoothing
    expected = distance.jensenshannon(p, q, base=2) ** 2
    assert js_divergence(p, q) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_js_divergence_bounds_and_matrix() -> None:
    assert js_divergence([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0, abs=1e-15)
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    matrix = js_divergence_matrix([[1, 2, 3], [4, 0, 1], [0, 0, 0]], [[3, 2, 1], [1, 1, 1], [1, 1, 1]])
    assert matrix[0] == pytest.approx(js_divergence([1, 2, 3], [3, 2, 1]))
    assert matrix[1] == pytest.approx(js_divergence([4, 0, 1], [1, 1, 1]))
    assert np.isnan(matrix[2])


@pytest.mark.parametrize("seed", range(3))
def test_kl_divergence_matches_scipy_entropy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p, q = rng.integers(1, 30, 8).astype(float), rng.integers(1, 30, 8).astype(float)
    assert kl_divergence(p, q, eps=0) == pytest.approx(stats.entropy(p, q), rel=1e-12)
    q[2] = 0
    smoothed = (p + 1e-4) / (p.sum() + 8e-4), (q + 1e-4) / (q.sum() + 8e-4)
    assert kl_divergence(p, q) == pytest.approx(stats.entropy(*smoothed), rel=1e-12)


def test_psi_is_the_sum_of_both_kl_divergences() -> None:
    p, q = [50, 30, 20, 0], [20, 30, 45, 5]
    assert psi(p, q) == pytest.approx(kl_divergence(p, q) + kl_divergence(q, p), rel=1e-12)
