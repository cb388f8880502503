"""Multiple-testing corrections and the drift decision rule for p-value tests.

A window of one model runs many p-value tests at once (KS per numeric feature, chi-square per
categorical feature, KS on the prediction). The correction *family* is all p-value tests of one
model in one window. With 20 features tested every window at ``alpha = 0.01`` uncorrected, a
stationary stream would flag some feature in ~18% of windows; Holm's step-down keeps the
probability of *any* false flag in a window at most ``alpha`` (family-wise error control), without
Bonferroni's loss of power.

A p-value alone is not a drift decision either: with 1M-row windows every test rejects for
differences far too small to matter to a model. :func:`significant_drift` therefore asks for both
``adjusted p < alpha`` *and* ``effect size >= min_effect`` (for KS the statistic itself, the largest
CDF gap; for chi-square Cohen's w).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from stream_monitor.core.detectors.base import DetectorResult
from stream_monitor.core.settings import DetectorSettings

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_EFFECT",
    "benjamini_hochberg",
    "correct_family",
    "holm",
    "significant_drift",
]

#: Family-wise error rate per model and window.
DEFAULT_ALPHA = DetectorSettings.alpha
#: Smallest effect worth a drift flag: a KS statistic of 0.1 is a 10-point gap between the CDFs.
DEFAULT_MIN_EFFECT = DetectorSettings.ks_min_effect


def _finite_order(p: np.ndarray) -> tuple[np.ndarray, int]:
    """Indices of the non-NaN p-values in ascending order, and how many there are."""
    finite = np.flatnonzero(~np.isnan(p))
    return finite[np.argsort(p[finite], kind="stable")], finite.size


def holm(p_values: npt.ArrayLike) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control).

    With the m p-values sorted ascending, ``adj_(i) = max_{j <= i} min(1, (m - j + 1) * p_(j))``;
    reject where ``adj < alpha``. NaN p-values (tests that could not run) are not part of the
    family and stay NaN.

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03, 0.005])
    array([0.03, 0.06, 0.06, 0.02])
    >>> holm([0.2, float("nan"), 0.01])
    array([0.2 ,  nan, 0.02])

    """
    p = np.asarray(p_values, dtype=np.float64)
    order, m = _finite_order(p)
    adjusted = np.full(p.shape, np.nan)
    if m:
        scaled = p[order] * (m - np.arange(m))
        adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def benjamini_hochberg(p_values: npt.ArrayLike) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (false-discovery-rate control).

    With the m p-values sorted ascending, ``adj_(i) = min_{j >= i} min(1, m * p_(j) / j)`` — the same
    numbers as ``scipy.stats.false_discovery_control(p, method="bh")``. NaNs stay NaN and are not
    counted in m. Use it where many flags are acceptable if few are false (segment scans); the
    default drift decision uses :func:`holm`.

    Examples
    --------
    >>> benjamini_hochberg([0.01, 0.04, 0.03, 0.005])
    array([0.02, 0.04, 0.04, 0.02])

    """
    p = np.asarray(p_values, dtype=np.float64)
    order, m = _finite_order(p)
    adjusted = np.full(p.shape, np.nan)
    if m:
        scaled = p[order] * m / np.arange(1, m + 1)
        adjusted[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return adjusted


def significant_drift(
    p_values: npt.ArrayLike,
    effect_sizes: npt.ArrayLike,
    *,
    alpha: float = DEFAULT_ALPHA,
    min_effect: float | npt.ArrayLike = DEFAULT_MIN_EFFECT,
    method: Literal["holm", "bh"] = "holm",
) -> tuple[np.ndarray, np.ndarray]:
    """Decide drift for a family of tests: ``adjusted p < alpha`` and ``effect >= min_effect``.

    Pass *all* raw p-values of one model in one window (KS of every numeric feature, chi-square of
    every categorical feature, the prediction's test) with their effect sizes; ``min_effect`` may be
    one number or one per test. Returns ``(adjusted_p_values, drift)``. A NaN p-value or effect never
    flags.

    Examples
    --------
    Two 1M-row samples from the same distribution except a 0.005 shift: the test "rejects",
    the effect is negligible, so no drift; a 0.5 shift is both significant and large.

    >>> from stream_monitor.core.detectors.ks import ks_2samp_sorted
    >>> rng = np.random.default_rng(1)
    >>> ref = np.sort(rng.normal(0, 1, 1_000_000))
    >>> tiny = ks_2samp_sorted(ref, rng.normal(0.005, 1, 1_000_000))
    >>> large = ks_2samp_sorted(ref, rng.normal(0.5, 1, 1_000_000))
    >>> adjusted, drift = significant_drift([tiny[1], large[1]], [tiny[0], large[0]])
    >>> bool(adjusted[0] < 0.01), drift.tolist()
    (True, [False, True])

    """
    p = np.asarray(p_values, dtype=np.float64)
    effect = np.asarray(effect_sizes, dtype=np.float64)
    if p.shape != effect.shape:
        raise ValueError(f"p_values {p.shape} and effect_sizes {effect.shape} differ in shape")
    if method == "holm":
        adjusted = holm(p)
    elif method == "bh":
        adjusted = benjamini_hochberg(p)
    else:
        raise ValueError(f"unknown correction method {method!r}; use 'holm' or 'bh'")
    with np.errstate(invalid="ignore"):
        drift = (adjusted < alpha) & (effect >= np.asarray(min_effect, dtype=np.float64))
    return adjusted, drift


def correct_family(
    results: Sequence[DetectorResult],
    alpha: float = DEFAULT_ALPHA,
    method: Literal["holm", "bh"] = "holm",
) -> list[DetectorResult]:
    """Correct all p-value results of one model and window together and decide their drift.

    Results with a ``p_value`` must carry the *raw* p-value, the effect size in ``effect_size`` and
    the minimum effect in ``threshold``; they come back with the adjusted p-value and
    ``drift = adjusted < alpha and effect >= threshold`` (see
    :func:`~stream_monitor.core.detectors.multiple_testing.significant_drift`) and
    ``warning = adjusted < alpha and effect >= threshold / 2``. Other results pass unchanged.
    Apply it exactly once per family.

    Examples
    --------
    >>> raw = [DetectorResult("ks", "a", "ks_statistic", 0.3, 0.1, False, p_value=0.004, effect_size=0.3),
    ...        DetectorResult("ks", "b", "ks_statistic", 0.2, 0.1, False, p_value=0.006, effect_size=0.2)]
    >>> [(r.p_value, r.drift) for r in correct_family(raw)]
    [(0.008, True), (0.008, True)]
    >>> [(r.p_value, r.drift) for r in correct_family(raw, alpha=0.005)]
    [(0.008, False), (0.008, False)]

    """
    tested = [i for i, r in enumerate(results) if r.p_value is not None]
    corrected = list(results)
    if not tested:
        return corrected
    p_values = np.array([results[i].p_value for i in tested], dtype=np.float64)
    effects = np.array([np.nan if (e := results[i].effect_size) is None else e for i in tested])
    minimum = np.array([results[i].threshold for i in tested], dtype=np.float64)
    adjusted, drift = significant_drift(p_values, effects, alpha=alpha, min_effect=minimum, method=method)
    with np.errstate(invalid="ignore"):
        warning = (adjusted < alpha) & (effects >= minimum / 2)
    for k, i in enumerate(tested):
        corrected[i] = dataclasses.replace(
            results[i], p_value=float(adjusted[k]), drift=bool(drift[k]), warning=bool(warning[k])
        )
    return corrected
