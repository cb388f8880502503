"""Population Stability Index over binned or categorical counts."""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt
from scipy import special

from stream_monitor.core.settings import DetectorSettings, PolicySettings

__all__ = [
    "MIN_EVENTS_PER_BIN",
    "PSI_ALARM",
    "PSI_WARNING",
    "psi",
    "psi_matrix",
    "psi_noise_level",
    "smoothed_proportions",
]

#: PSI above this is a warning ("some shift").
PSI_WARNING = PolicySettings.psi_warning
#: PSI above this is an alarm ("red", seed 002).
PSI_ALARM = PolicySettings.psi_alarm


def smoothed_proportions(counts: npt.ArrayLike, eps: float = DetectorSettings.psi_epsilon) -> np.ndarray:
    """Proportions along the last axis with additive smoothing: ``p = (c + eps) / (n + eps * B)``.

    ``n`` is the row total and ``B`` the number of bins. Rows whose total is 0 give NaN: an empty
    window carries no distribution, and a silent "uniform" would be a made-up one.

    Examples
    --------
    >>> smoothed_proportions([3, 1, 0], eps=0.5)
    array([0.63636364, 0.27272727, 0.09090909])
    >>> smoothed_proportions([[0, 0], [1, 1]])
    array([[nan, nan],
           [0.5, 0.5]])

    """
    c = np.asarray(counts, dtype=np.float64)
    n = c.sum(axis=-1, keepdims=True)
    n_bins = c.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        p = (c + eps) / (n + eps * n_bins)
    return np.where(n > 0, p, np.nan)


def psi_matrix(
    expected_counts: npt.ArrayLike, actual_counts: npt.ArrayLike, eps: float = DetectorSettings.psi_epsilon
) -> np.ndarray:
    """PSI of every row (feature) at once: ``sum((a - e) * ln(a / e))`` over the bins of each row.

    ``expected_counts`` and ``actual_counts`` have shape ``(F, B)``: F features, B bins (numeric
    histogram bins on the reference edges, or category counts with an "other" bin). Both are
    turned into proportions by :func:`smoothed_proportions` with the same ``eps``, so empty bins
    stay finite. A row whose expected or actual total is 0 gives NaN.

    Examples
    --------
    >>> ref = np.array([[50, 30, 20], [10, 10, 10]])
    >>> win = np.array([[20, 30, 50], [0, 0, 0]])
    >>> psi_matrix(ref, win).round(4)
    array([0.5498,    nan])

    """
    e = smoothed_proportions(expected_counts, eps)
    a = smoothed_proportions(actual_counts, eps)
    if e.shape != a.shape or e.ndim != 2:
        raise ValueError(f"expected two (F, B) arrays of the same shape, got {e.shape} and {a.shape}")
    return np.sum((a - e) * np.log(a / e), axis=1)


def psi(
    expected_counts: npt.ArrayLike, actual_counts: npt.ArrayLike, eps: float = DetectorSettings.psi_epsilon
) -> float:
    """Population Stability Index between reference (expected) and window (actual) counts.

    ``PSI = sum_b (a_b - e_b) * ln(a_b / e_b)`` with smoothed proportions
    ``p_b = (c_b + eps) / (n + eps * B)`` (see :func:`smoothed_proportions`); NaN if either total is 0.
    Works the same for numeric histogram bins and categorical counts. Read it against
    :data:`PSI_WARNING` (0.1) and :data:`PSI_ALARM` (0.15).

    PSI is an *effect size*, not a test: it estimates the symmetric KL divergence between the
    two distributions, and it does not grow with the sample size. Under no drift its sampling
    noise is about ``(B - 1) * (1/n_expected + 1/n_actual)`` (the chi-square approximation of the
    J-divergence), so with 10 bins and 1M rows on each side it is ~2e-5 — two huge identical samples
    never cross 0.1. (A KS or chi-square p-value, by contrast, goes to 0 for any tiny difference as n
    grows; see :mod:`stream_monitor.core.detectors.multiple_testing` for how that is tamed.)

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> edges = np.linspace(-2, 2, 9)
    >>> ref = np.bincount(np.searchsorted(edges, rng.normal(0, 1, 10_000)), minlength=10)
    >>> same = np.bincount(np.searchsorted(edges, rng.normal(0, 1, 10_000)), minlength=10)
    >>> shifted = np.bincount(np.searchsorted(edges, rng.normal(0.5, 1, 10_000)), minlength=10)
    >>> round(psi(ref, same), 4), round(psi(ref, shifted), 4)
    (0.0005, 0.2459)

    """
    e = np.asarray(expected_counts, dtype=np.float64)
    a = np.asarray(actual_counts, dtype=np.float64)
    if e.ndim != 1:
        raise ValueError(f"expected 1-D counts, got shape {e.shape}; use psi_matrix for many features")
    return float(psi_matrix(e[None, :], a[None, :], eps)[0])


@functools.lru_cache(maxsize=64)
def _chi2_quantile(q: float, df: int) -> float:
    # scipy.stats.chi2.ppf(q, df), bit for bit (its own formula), without importing scipy.stats.
    # Cached: every PSI result of every window asks for the same few.
    return float(2 * special.gammaincinv(df / 2, q))


#: Below this many events per bin, chance empties whole bins of a window; each costs about 1 of PSI at
#: the default smoothing (``eps`` is added to counts), far beyond the chi-square approximation.
MIN_EVENTS_PER_BIN = 8


def psi_noise_level(
    n_window: float,
    n_reference: float,
    bins: int,
    alpha: float,
    eps: float = DetectorSettings.psi_epsilon,
) -> float:
    """The PSI that sampling alone exceeds with probability about ``alpha`` when nothing drifted.

    Under no drift ``PSI / (1/n + 1/m)`` is about chi-square with ``bins - 1`` degrees of freedom (the
    J-divergence approximation), so the level is ``chi2.ppf(1 - alpha, bins - 1) * (1/n + 1/m)``: for
    10 bins and α = 0.01, 0.064 at 365 events and 0.11 at 200. Below :data:`MIN_EVENTS_PER_BIN` events
    per bin the approximation fails because chance empties bins: the level then adds what one empty
    bin of share ``1/bins`` is worth. Simulated on uniform bins, chance crosses it 1–3 % of the time
    from 40 events up (and PSI 0.15 half the time at 60). The PSI alarm of a window is never below it.

    >>> round(psi_noise_level(365, 5000, 10, 0.01), 3), round(psi_noise_level(120, 5000, 10, 0.01), 2)
    (0.064, 0.18)
    >>> round(psi_noise_level(52, 5000, 10, 0.01), 2)  # fewer than 8 events a bin: an empty bin added
    1.51
    """
    if n_window <= 0 or n_reference <= 0 or bins < 2:
        return math.inf
    level = _chi2_quantile(1.0 - alpha, bins - 1) * (1.0 / n_window + 1.0 / n_reference)
    if n_window < MIN_EVENTS_PER_BIN * bins:
        share = 1.0 / bins
        level += share * math.log(share * (n_window + eps * bins) / eps)
    return level
