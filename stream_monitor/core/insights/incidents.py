"""Integrity incidents (seed 001): buckets whose data broke, to be excluded from every retraining.

A closed bucket is an incident when, against the last *clean* bucket before it (so a two-day outage
is flagged on both days, and a slow trend is compared day with day and never flagged):

- a feature's **missing rate** rises by more than ``missing_delta`` (first bucket: against the
  reference's missing rate);
- a numeric feature's **out-of-range rate** (outside the reference ``[min, max]``) rises by more than
  ``out_of_range_delta`` in one bucket *while the rest of its distribution stays where it was* — a
  broken sensor sending ``-999``, a unit sent wrong for some rows. Values beyond the training range that
  move with the rest of the distribution are drift (seed 003's warming: the in-range values crowd toward
  the same edge), the evidence the drift detectors already count, never an incident: the in-range part
  must not have moved toward that side (its mean position on the reference bins, by more than three
  standard errors and a tenth of a bin) — or, when too few values are left in range to tell, the
  spread of all values must have changed more than twofold (a constant or a unit change, not a shift);
- a categorical feature's **new-category rate** (values never seen in the reference) rises by more
  than ``new_category_delta`` — a renamed enum, an upstream encoding change;
- the share of events **without a prediction** rises by more than ``missing_delta``;
- the **volume** (events per second of the bucket) is below ``volume_low`` or above ``volume_high``
  times the median of up to the last 7 clean buckets (needs 3 of them). The first and the last closed
  bucket are judged over the time their events cover (the stream may start or stop inside them), and a
  *partial* one (:func:`~stream_monitor.core.insights.buckets.partial_buckets`) not at all: partial
  coverage is never an incident.

Pure.

>>> from stream_monitor.core.insights.buckets import Bucket
>>> from stream_monitor.core.reference import ReferenceProfile
>>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
>>> from stream_monitor.core.sketches import WindowSketch
>>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))
>>> ref = ReferenceProfile(1, "m")
>>> def bucket(i, n, missing):
...     sk = WindowSketch(schema, ref, sample_size=0)
...     sk.n_events, sk.numeric_missing[0], sk.numeric_n[0] = n, missing, n - missing
...     return Bucket(i, i * 10.0, i * 10.0 + 10, sk)
>>> found = find_incidents([bucket(0, 1000, 0), bucket(1, 1000, 10), bucket(2, 1000, 400), bucket(3, 990, 5)])
>>> [(i.bucket, [r["check"] for r in i.reasons]) for i in found]
[(2, ['missing_rate'])]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_monitor.core.insights.buckets import (
    Bucket,
    BucketRates,
    bucket_rates,
    covered_seconds,
    partial_buckets,
)
from stream_monitor.core.reference import ReferenceProfile
from stream_monitor.core.settings import IncidentSettings
from stream_monitor.core.sketches import WindowSketch

#: The in-range values moved with the out-of-range ones when their mean position on the reference bins
#: moved toward that side by this many standard errors and at least ``_MIN_BIN_SHIFT`` bins.
_SHIFT_STANDARD_ERRORS = 3.0
_MIN_BIN_SHIFT = 0.1
#: Fewer values left in range than this cannot show whether they moved: the spread decides.
_MIN_IN_RANGE = 30
_SPREAD_RATIO = 2.0


@dataclass
class Incident:
    """A bucket excluded from retraining, with why."""

    bucket: int
    start: float
    end: float
    reasons: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reason(self) -> str:
        """One line: ``missing_rate:temp, volume`` …"""
        parts = [r["check"] + (f":{r['feature']}" if r.get("feature") else "") for r in self.reasons]
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "start": self.start, "end": self.end, "reasons": self.reasons}


def _reason(
    check: str, feature: str | None, value: float, baseline: float, threshold: float
) -> dict[str, Any]:
    return {
        "check": check,
        "feature": feature,
        "value": round(float(value), 6),
        "baseline": round(float(baseline), 6),
        "threshold": round(float(threshold), 6),
    }


def find_incidents(
    buckets: Sequence[Bucket],
    reference: ReferenceProfile | None = None,
    settings: IncidentSettings | None = None,
) -> list[Incident]:
    """The incident buckets among ``buckets`` (closed, oldest first), with their reasons."""
    s = settings or IncidentSettings()
    partial = partial_buckets(buckets, s.partial_coverage)
    edges = {buckets[0].index, buckets[-1].index} if buckets else set()
    # A typical bucket's covered time: an edge bucket's volume is judged over its share of that (a stream
    # that only runs office hours covers eight hours of every day, the last day included).
    typical = float(np.median([covered_seconds(b) for b in buckets])) if buckets else 0.0
    incidents: list[Incident] = []
    clean: list[tuple[BucketRates, Bucket, float]] = []  # rates, bucket, events per second
    for bucket in buckets:
        rates = bucket_rates(bucket)
        if rates.events == 0:
            continue
        schema = bucket.sketch.schema
        reasons: list[dict[str, Any]] = []
        prev = clean[-1][0] if clean else None

        if prev is not None:
            base_num = np.asarray(prev.numeric_missing)
            base_cat = np.asarray(prev.categorical_missing)
        else:
            ref = reference or bucket.sketch.reference
            base_num = np.array(
                [ref.numeric[f].missing_rate if f in ref.numeric else 0.0 for f in schema.numeric_names]
            )
            base_cat = np.array(
                [
                    ref.categorical[f].missing_rate if f in ref.categorical else 0.0
                    for f in schema.categorical_names
                ]
            )
        for names, now, base in (
            (schema.numeric_names, np.asarray(rates.numeric_missing), base_num),
            (schema.categorical_names, np.asarray(rates.categorical_missing), base_cat),
        ):
            for f, value, b in zip(names, now, base, strict=True):
                if value - b > s.missing_delta:
                    reasons.append(_reason("missing_rate", f, value, b, b + s.missing_delta))
        if prev is not None:
            before = clean[-1][1].sketch
            for i, (f, value, b) in enumerate(
                zip(schema.numeric_names, rates.out_of_range, prev.out_of_range, strict=True)
            ):
                if value - b > s.out_of_range_delta and not moves_with_distribution(bucket.sketch, before, i):
                    reasons.append(_reason("out_of_range_rate", f, value, b, b + s.out_of_range_delta))
            for f, value, b in zip(
                schema.categorical_names, rates.new_category, prev.new_category, strict=True
            ):
                if value - b > s.new_category_delta:
                    reasons.append(_reason("new_category_rate", f, value, b, b + s.new_category_delta))
            pm, pb = rates.prediction_missing, prev.prediction_missing
            if pm - pb > s.missing_delta:
                reasons.append(_reason("prediction_missing_rate", None, pm, pb, pb + s.missing_delta))
        # Volume as a rate: the stream may start or stop inside the first or last bucket, so those are
        # judged over the time their events cover; a partial one is not judged at all.
        exposure = bucket.end - bucket.start
        if bucket.index in edges and typical > 0:
            exposure *= min(1.0, covered_seconds(bucket) / typical)
        rate = rates.events / exposure if exposure > 0 else float("nan")
        history = [r for _, _, r in clean[-s.volume_history :] if np.isfinite(r)]
        if bucket.index not in partial and np.isfinite(rate) and len(history) >= s.volume_min_history:
            median = float(np.median(history))
            ratio = rate / median if median > 0 else float("inf")
            if ratio < s.volume_low or ratio > s.volume_high:
                threshold = s.volume_low if ratio < 1 else s.volume_high
                reasons.append(_reason("volume", None, ratio, 1.0, threshold))
        if reasons:
            incidents.append(Incident(bucket.index, bucket.start, bucket.end, reasons))
        else:
            clean.append((rates, bucket, rate if bucket.index not in partial else float("nan")))
    return incidents


def moves_with_distribution(now: WindowSketch, before: WindowSketch, feature: int) -> bool:
    """Whether numeric ``feature``'s values beyond the reference range in ``now`` moved there with the
    rest of its distribution since ``before`` (drift), rather than appearing beside an unchanged
    distribution (a broken source). See the module docstring for the rule.

    >>> from stream_monitor.core.reference import NumericProfile, ReferenceProfile
    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> from types import SimpleNamespace
    >>> rng = np.random.default_rng(0)
    >>> schema = ModelSchema("m", "regression", (FeatureSpec("t", "numeric"),))
    >>> ref = ReferenceProfile(1, "m", numeric={"t": NumericProfile.from_values(rng.normal(size=5000))})
    >>> def sketch(values):
    ...     sk = WindowSketch(schema, ref, sample_size=0)
    ...     n = len(values)
    ...     sk.update(SimpleNamespace(event_id=[str(i) for i in range(n)], ts=np.zeros(n),
    ...         numeric=np.asarray(values)[None, :], categorical=[], score=np.full(n, np.nan),
    ...         pred_label=[None] * n, segments={}))
    ...     return sk
    >>> before = sketch(rng.normal(size=4000))
    >>> warmer = sketch(rng.normal(3.2, 1.0, 4000))                  # about 30 % beyond the maximum
    >>> broken = sketch(np.where(rng.uniform(size=4000) < 0.3, 999.0, rng.normal(size=4000)))
    >>> moves_with_distribution(warmer, before, 0), moves_with_distribution(broken, before, 0)
    (True, False)
    """
    n_now, n_before = float(now.numeric_n[feature]), float(before.numeric_n[feature])
    if n_now <= 0 or n_before <= 0:
        return False
    up = now.numeric_above[feature] / n_now - before.numeric_above[feature] / n_before
    down = now.numeric_below[feature] / n_now - before.numeric_below[feature] / n_before
    h_now, h_before = _in_range(now, feature), _in_range(before, feature)
    if h_now.sum() < _MIN_IN_RANGE or h_before.sum() < _MIN_IN_RANGE:
        # Too few values left in range to see them move: a distribution that moved beyond the range as
        # a whole keeps its spread; a constant or a unit change does not.
        sd_now, sd_before = _spread(now, feature), _spread(before, feature)
        return sd_now > 0 and sd_before > 0 and 1 / _SPREAD_RATIO <= sd_now / sd_before <= _SPREAD_RATIO
    centre = (len(h_now) - 1) / 2
    positions = np.arange(len(h_now), dtype=np.float64) - centre
    # Toward the side that gained out-of-range values (both sides: toward the edges, a wider spread).
    if up >= 2 * max(down, 0.0):
        toward = positions
    elif down >= 2 * max(up, 0.0):
        toward = -positions
    else:
        toward = np.abs(positions)
    m_now, v_now = _moments(toward, h_now)
    m_before, v_before = _moments(toward, h_before)
    se = float(np.sqrt(v_now / h_now.sum() + v_before / h_before.sum()))
    return m_now - m_before >= max(_SHIFT_STANDARD_ERRORS * se, _MIN_BIN_SHIFT)


def _in_range(sketch: WindowSketch, feature: int) -> np.ndarray:
    """The feature's counts on the reference bins without its out-of-range values (the edge bins are
    open-ended, so that is where they were counted)."""
    h = np.asarray(sketch.feature_counts(feature), dtype=np.float64).copy()
    h[0] -= sketch.numeric_below[feature]
    h[-1] -= sketch.numeric_above[feature]
    return np.maximum(h, 0.0)


def _moments(x: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    total = float(weights.sum())
    mean = float(np.dot(x, weights) / total)
    return mean, float(np.dot((x - mean) ** 2, weights) / total)


def _spread(sketch: WindowSketch, feature: int) -> float:
    n = float(sketch.numeric_n[feature])
    if n < 2:
        return 0.0
    mean = sketch.numeric_sum[feature] / n
    return float(np.sqrt(max(sketch.numeric_sumsq[feature] / n - mean**2, 0.0)))
