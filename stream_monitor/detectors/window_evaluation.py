"""Per-window evaluation of many features at once: PSI, KS, chi-square and JS, corrected together.

The window sketches (counts on reference bins, bounded samples) are wired in by the integrator;
these functions take plain arrays. The multiple-testing family is *all p-value tests of one model
in one window*. :func:`evaluate_numeric` and :func:`evaluate_categorical` correct within their own
tests by default; to correct over the whole model, call them with ``correct=False`` (p-value results
then carry raw p-values and ``drift=False``, undecided) and pass the concatenation to
:func:`correct_family` once:

>>> rng = np.random.default_rng(0)
>>> edges = np.array([-1.0, 0.0, 1.0])
>>> ref = rng.normal(0, 1, (2, 5000))
>>> win = np.stack([rng.normal(0, 1, 1000), rng.normal(0.6, 1, 1000)])
>>> def hist(x):
...     return np.stack([np.bincount(np.searchsorted(edges, r), minlength=4) for r in x])
>>> numeric = evaluate_numeric(hist(ref), hist(win), [np.sort(r) for r in ref], list(win), ["a", "b"],
...                            correct=False)
>>> categorical = evaluate_categorical([np.array([700, 300])], [np.array([690, 310])], ["channel"],
...                                    correct=False)
>>> [(r.detector, r.feature) for r in correct_family(numeric + categorical) if r.drift]
[('psi', 'b'), ('ks', 'b'), ('js', 'b')]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from stream_monitor.detectors.base import DetectorResult
from stream_monitor.detectors.chi_square import chi_square, cohens_w
from stream_monitor.detectors.divergence import js_divergence_matrix
from stream_monitor.detectors.ks import ks_2samp_sorted_many
from stream_monitor.detectors.multiple_testing import DEFAULT_ALPHA, DEFAULT_MIN_EFFECT, significant_drift
from stream_monitor.detectors.psi import PSI_ALARM, PSI_WARNING, psi_matrix

__all__ = ["correct_family", "evaluate_categorical", "evaluate_numeric"]

# For small shifts JS (bits) ≈ PSI / (8 ln 2): the JS thresholds that say what the PSI ones say.
_PSI_TO_JS = 1.0 / (8.0 * math.log(2.0))


def correct_family(
    results: Sequence[DetectorResult],
    alpha: float = DEFAULT_ALPHA,
    method: Literal["holm", "bh"] = "holm",
) -> list[DetectorResult]:
    """Correct all p-value results of one model and window together and decide their drift.

    Results with a ``p_value`` must carry the *raw* p-value, the effect size in ``effect_size`` and
    the minimum effect in ``threshold``; they come back with the adjusted p-value and
    ``drift = adjusted < alpha and effect >= threshold`` (see
    :func:`~stream_monitor.detectors.multiple_testing.significant_drift`) and
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


def _threshold_results(
    detector: str, statistic: str, names: Sequence[str], values: np.ndarray, warn: float, alarm: float
) -> list[DetectorResult]:
    return [
        DetectorResult(
            detector, name, statistic, float(v), alarm, drift=bool(v > alarm), warning=bool(v > warn)
        )
        for name, v in zip(names, values, strict=True)
    ]


def evaluate_numeric(
    ref_counts: npt.ArrayLike,
    win_counts: npt.ArrayLike,
    ref_samples: Sequence[npt.ArrayLike],
    win_samples: Sequence[npt.ArrayLike],
    names: Sequence[str],
    *,
    alpha: float = DEFAULT_ALPHA,
    min_effect: float = DEFAULT_MIN_EFFECT,
    psi_warn: float = PSI_WARNING,
    psi_alarm: float = PSI_ALARM,
    js_warn: float | None = None,
    js_alarm: float | None = None,
    correct: bool = True,
) -> list[DetectorResult]:
    """PSI, KS and JS for every numeric feature of a window; per feature, in that order.

    ``ref_counts`` / ``win_counts`` are ``(F, B)`` histograms on the reference bins, ``ref_samples``
    the presorted reference samples and ``win_samples`` the window samples, one per feature in
    ``names`` order. PSI alarms above ``psi_alarm`` (warns above ``psi_warn``); JS alarms above
    ``js_alarm``, by default ``psi_alarm / (8 ln 2)`` (the JS that a small shift with that PSI has).
    KS drifts when its Holm-adjusted p-value is below ``alpha`` and its statistic is at least
    ``min_effect``; with ``correct=False`` the KS results keep raw p-values, undecided, for
    :func:`correct_family`.

    Examples
    --------
    >>> rng = np.random.default_rng(5)
    >>> ref, win = rng.normal(0, 1, 4000), rng.normal(1, 1, 1000)
    >>> edges = np.array([-1.0, 0.0, 1.0])
    >>> ref_counts = np.bincount(np.searchsorted(edges, ref), minlength=4)[None, :]
    >>> win_counts = np.bincount(np.searchsorted(edges, win), minlength=4)[None, :]
    >>> for r in evaluate_numeric(ref_counts, win_counts, [np.sort(ref)], [win], ["temp"]):
    ...     print(r.detector, round(r.value, 3), r.drift)
    psi 0.803 True
    ks 0.385 True
    js 0.136 True

    """
    ref_c = np.asarray(ref_counts, dtype=np.float64)
    win_c = np.asarray(win_counts, dtype=np.float64)
    n_features = len(names)
    if ref_c.shape[0] != n_features or len(ref_samples) != n_features or len(win_samples) != n_features:
        raise ValueError(
            f"{n_features} names but {ref_c.shape[0]} count rows, {len(ref_samples)} reference samples "
            f"and {len(win_samples)} window samples"
        )
    js_warn = psi_warn * _PSI_TO_JS if js_warn is None else js_warn
    js_alarm = psi_alarm * _PSI_TO_JS if js_alarm is None else js_alarm
    psi_results = _threshold_results("psi", "psi", names, psi_matrix(ref_c, win_c), psi_warn, psi_alarm)
    js_results = _threshold_results(
        "js", "js_divergence", names, js_divergence_matrix(ref_c, win_c), js_warn, js_alarm
    )
    ks_statistics, ks_p_values = ks_2samp_sorted_many(ref_samples, win_samples)
    ks_results = [
        DetectorResult(
            "ks", name, "ks_statistic", float(d), min_effect, False, p_value=float(p), effect_size=float(d)
        )
        for name, d, p in zip(names, ks_statistics, ks_p_values, strict=True)
    ]
    if correct:
        ks_results = correct_family(ks_results, alpha)
    return [r for triple in zip(psi_results, ks_results, js_results, strict=True) for r in triple]


def evaluate_categorical(
    ref_counts: Sequence[npt.ArrayLike],
    win_counts: Sequence[npt.ArrayLike],
    names: Sequence[str],
    *,
    alpha: float = DEFAULT_ALPHA,
    min_effect: float = DEFAULT_MIN_EFFECT,
    psi_warn: float = PSI_WARNING,
    psi_alarm: float = PSI_ALARM,
    correct: bool = True,
) -> list[DetectorResult]:
    """PSI and chi-square for every categorical feature of a window; per feature, in that order.

    ``ref_counts[i]`` / ``win_counts[i]`` count feature ``names[i]`` over the reference categories
    plus the trailing "other" bin (features may have different numbers of categories). The chi-square
    result's ``value`` and ``effect_size`` are Cohen's w (``sqrt(stat / n)``, see
    :func:`~stream_monitor.detectors.chi_square.cohens_w`); it drifts when its Holm-adjusted p-value is
    below ``alpha`` and ``w >= min_effect``. With ``correct=False`` the p-values stay raw for
    :func:`correct_family`.

    Examples
    --------
    >>> for r in evaluate_categorical([[600, 300, 100]], [[150, 150, 200]], ["channel"]):
    ...     print(r.detector, round(r.value, 3), r.drift)
    psi 0.624 True
    chi2 1.022 True

    """
    n_features = len(names)
    if len(ref_counts) != n_features or len(win_counts) != n_features:
        raise ValueError(f"{n_features} names but {len(ref_counts)} and {len(win_counts)} count arrays")
    results = []
    for name, ref, win in zip(names, ref_counts, win_counts, strict=True):
        ref_a = np.asarray(ref, dtype=np.float64)
        win_a = np.asarray(win, dtype=np.float64)
        value = float(psi_matrix(ref_a[None, :], win_a[None, :])[0])
        results.append(
            DetectorResult(
                "psi", name, "psi", value, psi_alarm, drift=value > psi_alarm, warning=value > psi_warn
            )
        )
        statistic, p_value = chi_square(ref_a, win_a)
        w = cohens_w(statistic, float(win_a.sum()))
        results.append(
            DetectorResult("chi2", name, "cohens_w", w, min_effect, False, p_value=p_value, effect_size=w)
        )
    if correct:
        results = correct_family(results, alpha)
    return results
