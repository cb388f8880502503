"""The KS test's fast paths give scipy's numbers exactly: statistics from binary searches instead of a
merged sort, p-values computed here instead of one ``kstwo.sf`` value at a time."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from stream_monitor.core.detectors.ks import kolmogorov_sf, ks_2samp_sorted_many


def _merged_sort_statistic(ref_sorted: np.ndarray, sample: np.ndarray) -> float:
    """The statistic by merging both samples (the previous implementation, the slow oracle)."""
    win = np.sort(sample[~np.isnan(sample)])
    n_ref, n_win = ref_sorted.size, win.size
    merged = np.concatenate([ref_sorted, win])
    order = np.argsort(merged, kind="stable")
    from_ref = order < n_ref
    gap = np.cumsum(from_ref) / n_ref - np.cumsum(~from_ref) / n_win
    values = merged[order]
    end_of_tie = np.append(values[1:] != values[:-1], True)
    return float(np.max(np.abs(gap[end_of_tie])))


@pytest.mark.parametrize("seed", range(4))
def test_statistics_equal_the_merged_sort_with_ties_missing_values_and_mixed_sizes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    refs, samples = [], []
    for _ in range(40):
        n_ref, n_win = int(rng.choice([1, 30, 400])), int(rng.choice([1, 25, 60]))
        kind = rng.integers(0, 3)
        if kind == 0:
            ref, win = rng.normal(size=n_ref), rng.normal(rng.normal() * 0.3, 1, n_win)
        elif kind == 1:  # discrete: ties on both sides
            ref, win = rng.integers(0, 5, n_ref).astype(float), rng.integers(0, 6, n_win).astype(float)
        else:
            ref, win = np.round(rng.normal(size=n_ref), 1), np.round(rng.normal(0.2, 1, n_win), 1)
        if rng.random() < 0.3:
            win[: min(3, n_win - 1)] = np.nan
        refs.append(np.sort(ref))
        samples.append(win)
    statistics, p_values = ks_2samp_sorted_many(refs, samples)
    for i, (ref, win) in enumerate(zip(refs, samples, strict=True)):
        assert statistics[i] == _merged_sort_statistic(ref, win)
        assert statistics[i] == pytest.approx(stats.ks_2samp(ref, win[~np.isnan(win)]).statistic, rel=1e-12)
    # NaN where Smirnov's effective n is 0 (one value on each side), as scipy's kstwo gives.
    assert np.all(np.isnan(p_values) | ((p_values >= 0) & (p_values <= 1)))


def test_p_values_equal_scipy_bit_for_bit() -> None:
    """Every regime of scipy's ``_kolmogn`` survival function: Pelz–Good (no drift), Smirnov (drift),
    0 (far beyond), and what is handed to scipy (small n, Durbin's matrix, d near 0 or 1)."""
    rng = np.random.default_rng(11)
    n = np.round(
        rng.choice([10, 100, 141, 150, 340, 1000, 1818, 4000], size=3000) * rng.uniform(0.5, 1.5, 3000)
    )
    d = rng.uniform(0.0, 3.5, n.size) / np.sqrt(n)
    d[::40] = rng.uniform(0.0, 1.0, n.size)[::40]
    d[::97] = rng.uniform(0.0, 0.05, n.size)[::97] / np.sqrt(n[::97])
    d = np.clip(d, 0.0, 1.0)
    assert np.array_equal(kolmogorov_sf(d, n), stats.kstwo.sf(d, n), equal_nan=True)


def test_a_strong_drift_needs_no_scipy_stats_and_equals_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Distances of 0.5 and more (a shifted feature) are computed here, bit for bit as scipy does,
    so the first strong drift after a start does not import scipy.stats in the stream."""
    rng = np.random.default_rng(5)
    n = np.round(rng.choice([3, 10, 100, 141, 340, 5000], size=2000) * rng.uniform(0.5, 1.5, 2000))
    d = np.concatenate([rng.uniform(0.5, 1.0, 1000), np.ones(500), rng.uniform(0.5, 0.7, 500)])
    d[::50] = 0.5
    expected = stats.kstwo.sf(d, n)
    assert np.array_equal(kolmogorov_sf(d, n), expected, equal_nan=True)

    class _Refused:
        def __getattr__(self, name: str) -> None:
            raise AssertionError(f"scipy.stats.kstwo.{name} used")

    monkeypatch.setattr(stats, "kstwo", _Refused())
    ours = ((n * d > 1.0) & (n * d < n - 1)) | (d >= 1.0)
    assert ours.sum() > 1500
    assert np.array_equal(kolmogorov_sf(d[ours], n[ours]), expected[ours], equal_nan=True)


def test_no_drift_at_all_needs_no_scipy_stats_and_equals_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A distance so small that scipy uses Durbin's matrix (``n·d^1.5 <= 1.4``): computed here,
    bit for bit, so a window with no drift at all does not import scipy.stats in the stream."""
    rng = np.random.default_rng(1)
    n = np.round(
        rng.choice([141, 150, 340, 1000, 2500, 5000, 20000], size=1500) * rng.uniform(0.9, 1.1, 1500)
    )
    low, high = 1.0 / n, (1.4 / n) ** (2 / 3)
    d = low + (high - low) * rng.uniform(0.0, 1.0, n.size)
    ours = (n > 140) & (n * d**1.5 <= 1.4) & (n * d > 1.0)
    expected = stats.kstwo.sf(d[ours], n[ours])

    class _Refused:
        def __getattr__(self, name: str) -> None:
            raise AssertionError(f"scipy.stats.kstwo.{name} used")

    monkeypatch.setattr(stats, "kstwo", _Refused())
    assert ours.sum() > 1000
    assert np.array_equal(kolmogorov_sf(d[ours], n[ours]), expected)
