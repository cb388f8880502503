"""The detectors and the DNA use scipy.special, not scipy.stats (issue 14, point 3): same doubles.

``scipy.stats`` costs ~0.4 s and ~46 MB at import, so ``stream-monitor run`` must not load it for
``chi2.sf``, ``chi2.ppf`` or ``gamma.ppf``: those are ``special.chdtrc``, ``2 * special.gammaincinv(df / 2,
q)`` and ``special.gammaincinv(a, q)``, scipy's own formulas. These tests hold that to be bit for bit.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import special, stats

from stream_monitor.core.detectors.chi_square import chi_square
from stream_monitor.core.detectors.psi import _chi2_quantile
from stream_monitor.core.insights.dna import NOISE_QUANTILE, _neighbour_tail


@pytest.mark.parametrize("df", [1, 2, 3, 5, 7, 9, 19, 49, 99, 255])
def test_chdtrc_is_chi2_sf(df: int) -> None:
    rng = np.random.default_rng(df)
    x = np.concatenate([rng.chisquare(df, 3000), rng.uniform(0, 20 * df, 3000), [0.0, 1e-300, 1e300, np.inf]])
    for value in x:
        assert float(special.chdtrc(df, float(value))) == float(stats.chi2.sf(float(value), df))


def test_chi_square_p_value_is_scipy_stats() -> None:
    rng = np.random.default_rng(1)
    for k in (2, 3, 8, 30):
        ref = rng.integers(0, 500, k)
        ref[0] += 1
        for _ in range(50):
            win = rng.integers(0, 50, k)
            win[-1] += 1
            for eps in (0.0, 0.5):
                statistic, p = chi_square(ref, win, eps=eps)
                assert p == float(stats.chi2.sf(statistic, k - 1))


@pytest.mark.parametrize("df", [1, 2, 4, 9, 19, 49, 99])
def test_chi2_quantile_is_chi2_ppf(df: int) -> None:
    rng = np.random.default_rng(df)
    for q in [0.5, 0.9, 0.95, 0.99, 0.995, 0.999, 1 - 1e-6, *rng.uniform(0, 1, 100)]:
        assert _chi2_quantile(float(q), df) == float(stats.chi2.ppf(float(q), df))


def test_gammaincinv_is_gamma_ppf() -> None:
    rng = np.random.default_rng(2)
    for shape in [0.05, 1e4, 1.0, *rng.uniform(0.05, 50, 300), *rng.uniform(50, 1e4, 100)]:
        for q in (0.25, 0.5, NOISE_QUANTILE):
            assert float(special.gammaincinv(shape, q)) == float(stats.gamma.ppf(q, shape))


def test_neighbour_tail_is_the_scipy_stats_one() -> None:
    """The DNA's noise tail, recomputed here with scipy.stats and brentq as before: the same double."""
    from scipy import optimize

    def tail_with_stats(ratios: np.ndarray) -> float:
        q25, q50 = np.quantile(ratios, [0.25, 0.5])
        spread = float(q50 / q25)

        def gap(shape: float) -> float:
            return float(stats.gamma.ppf(0.5, shape) / stats.gamma.ppf(0.25, shape)) - spread

        shape = float(optimize.brentq(gap, 0.05, 1e4, xtol=1e-6))
        return float(stats.gamma.ppf(NOISE_QUANTILE, shape) / stats.gamma.ppf(0.5, shape))

    rng = np.random.default_rng(3)
    for df in (1, 2, 5, 30):
        ratios = rng.chisquare(df, 400)
        assert _neighbour_tail(ratios) == tail_with_stats(ratios)


def test_run_path_does_not_import_scipy_stats() -> None:
    code = (
        "import sys, stream_monitor.cli, stream_monitor.kafka.service, stream_monitor.core.insights.dna\n"
        "print(sorted(m for m in ('scipy.stats', 'scipy.optimize', 'scipy.cluster', 'scipy.spatial')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
