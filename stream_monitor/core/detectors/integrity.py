"""Data-integrity checks: missing values, out-of-range values, new categories, event volume.

Each check takes plain numbers (what a window sketch counts) and returns one
:class:`~stream_monitor.core.detectors.base.DetectorResult` named ``integrity:<check>`` (except
``out_of_range``, which is drift evidence rather than an incident). A check that
cannot be computed (empty window, no reference rate) reports NaN and never alarms. Warnings
fire at half the alarm margin.
"""

from __future__ import annotations

import math

from stream_monitor.core.detectors.base import DetectorResult
from stream_monitor.core.settings import DetectorSettings

__all__ = ["missing_rate_check", "new_category_check", "out_of_range_check", "volume_check"]


def _rate(part: float, total: float) -> float:
    return part / total if total > 0 else float("nan")


def missing_rate_check(
    n_missing: int,
    n_events: int,
    reference_missing_rate: float,
    *,
    feature: str | None = None,
    max_increase: float = DetectorSettings.missing_rate_delta,
) -> DetectorResult:
    """Alarm when the window's missing rate exceeds the reference's by more than ``max_increase``.

    ``value`` is ``n_missing / n_events``; ``threshold`` is ``reference_missing_rate +
    max_increase`` (default: 10 points above what training data had). The margin is absolute, so a
    feature that was never missing alarms above 10% missing. Warning at half the margin.

    Examples
    --------
    >>> r = missing_rate_check(130, 1000, 0.02, feature="temp")
    >>> r.value, round(r.threshold, 4), r.drift, r.warning
    (0.13, 0.12, True, True)

    """
    rate = _rate(n_missing, n_events)
    threshold = reference_missing_rate + max_increase
    return DetectorResult(
        detector="integrity:missing_rate",
        feature=feature,
        statistic="missing_rate",
        value=rate,
        threshold=threshold,
        drift=rate > threshold,
        warning=rate > reference_missing_rate + max_increase / 2,
    )


def out_of_range_check(
    n_below: int,
    n_above: int,
    n_observed: int,
    *,
    feature: str | None = None,
    max_rate: float = DetectorSettings.out_of_range_rate,
) -> DetectorResult:
    """Alarm when more than ``max_rate`` of the window's non-missing values lie outside the reference range.

    ``value = (n_below + n_above) / n_observed``, where below/above mean below the reference
    minimum or above its maximum and ``n_observed`` counts non-missing values. By construction the
    reference itself has 0 out of range, and a fresh sample of the same continuous distribution
    falls outside ``[min, max]`` of an N-row reference with probability 2 / (N + 1) (0.2% for
    N = 1000), so the default 5% alarm means a genuine shift or a unit/encoding error.

    Examples
    --------
    >>> r = out_of_range_check(40, 30, 1000, feature="temp")
    >>> r.value, r.drift, r.warning
    (0.07, True, True)

    """
    rate = _rate(n_below + n_above, n_observed)
    # Named without the "integrity:" prefix on purpose: values beyond the training range are drift
    # evidence (seed 003's warming temperatures), not a broken pipeline, so such windows must stay
    # eligible for retraining rather than be excluded as integrity incidents.
    return DetectorResult(
        detector="out_of_range",
        feature=feature,
        statistic="out_of_range_rate",
        value=rate,
        threshold=max_rate,
        drift=rate > max_rate,
        warning=rate > max_rate / 2,
    )


def new_category_check(
    n_new: int,
    n_observed: int,
    *,
    feature: str | None = None,
    max_rate: float = DetectorSettings.new_category_rate,
) -> DetectorResult:
    """Alarm when more than ``max_rate`` of the window's non-missing values are unseen categories.

    Unseen means absent from the reference's categories (top-K and the values folded into "other"
    alike, as the sketch counts them).

    Examples
    --------
    >>> r = new_category_check(3, 1000, feature="channel")
    >>> r.value, r.drift
    (0.003, False)

    """
    rate = _rate(n_new, n_observed)
    return DetectorResult(
        detector="integrity:new_category",
        feature=feature,
        statistic="new_category_rate",
        value=rate,
        threshold=max_rate,
        drift=rate > max_rate,
        warning=rate > max_rate / 2,
    )


def volume_check(
    n_events: int,
    window_seconds: float,
    reference_event_rate: float | None,
    *,
    low_ratio: float = DetectorSettings.volume_ratio_low,
    high_ratio: float = DetectorSettings.volume_ratio_high,
) -> DetectorResult:
    """Alarm when the window's event rate is below ``low_ratio`` or above ``high_ratio`` × the reference's.

    ``value = (n_events / window_seconds) / reference_event_rate``; ``threshold`` is the bound on the
    side ``value`` lies (``low_ratio`` when below 1, ``high_ratio`` otherwise). A sudden surge (a new
    channel, seed 002) or a collapse (a broken upstream) is a reason to look at drift at once.
    Warnings use the square root of the bounds (by default below 0.71 or above 1.41). NaN — never an
    alarm — when the window has no duration or the reference has no rate.

    Examples
    --------
    >>> r = volume_check(25_000, 60.0, reference_event_rate=100.0)
    >>> round(r.value, 2), r.threshold, r.drift
    (4.17, 2.0, True)

    """
    if window_seconds > 0 and reference_event_rate is not None and reference_event_rate > 0:
        ratio = n_events / window_seconds / reference_event_rate
    else:
        ratio = float("nan")
    below = ratio < 1.0
    return DetectorResult(
        detector="integrity:volume",
        feature=None,
        statistic="event_rate_ratio",
        value=ratio,
        threshold=low_ratio if below else high_ratio,
        drift=ratio < low_ratio or ratio > high_ratio,
        warning=ratio < math.sqrt(low_ratio) or ratio > math.sqrt(high_ratio),
    )
