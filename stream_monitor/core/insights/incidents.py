"""Integrity incidents (seed 001): buckets whose data broke, to be excluded from every retraining.

A closed bucket is an incident when, against the last *clean* bucket before it (so a two-day outage
is flagged on both days, and a slow trend is compared day with day and never flagged):

- a feature's **missing rate** rises by more than ``missing_delta`` (first bucket: against the
  reference's missing rate);
- a numeric feature's **out-of-range rate** (outside the reference ``[min, max]``) rises by more than
  ``out_of_range_delta`` in one bucket. Values drifting beyond the training range are drift evidence
  (seed 003's warming) and rise a little every day; a broken sensor sending ``-999`` jumps at once.
  The threshold is deliberately larger than the detectors' out-of-range rate for that reason;
- a categorical feature's **new-category rate** (values never seen in the reference) rises by more
  than ``new_category_delta`` — a renamed enum, an upstream encoding change;
- the share of events **without a prediction** rises by more than ``missing_delta``;
- the **volume** (events in the bucket) is below ``volume_low`` or above ``volume_high`` times the
  median of up to the last 7 clean buckets (needs 3 of them: a partial first day is no baseline).

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

from stream_monitor.core.insights.buckets import Bucket, BucketRates, bucket_rates
from stream_monitor.core.reference import ReferenceProfile
from stream_monitor.core.settings import IncidentSettings


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
    incidents: list[Incident] = []
    clean: list[BucketRates] = []
    for bucket in buckets:
        rates = bucket_rates(bucket)
        if rates.events == 0:
            continue
        schema = bucket.sketch.schema
        reasons: list[dict[str, Any]] = []
        prev = clean[-1] if clean else None

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
            for f, value, b in zip(schema.numeric_names, rates.out_of_range, prev.out_of_range, strict=True):
                if value - b > s.out_of_range_delta:
                    reasons.append(_reason("out_of_range_rate", f, value, b, b + s.out_of_range_delta))
            for f, value, b in zip(
                schema.categorical_names, rates.new_category, prev.new_category, strict=True
            ):
                if value - b > s.new_category_delta:
                    reasons.append(_reason("new_category_rate", f, value, b, b + s.new_category_delta))
            pm, pb = rates.prediction_missing, prev.prediction_missing
            if pm - pb > s.missing_delta:
                reasons.append(_reason("prediction_missing_rate", None, pm, pb, pb + s.missing_delta))
        history = [c.events for c in clean[-s.volume_history :]]
        if len(history) >= s.volume_min_history:
            median = float(np.median(history))
            ratio = rates.events / median if median > 0 else float("inf")
            if ratio < s.volume_low or ratio > s.volume_high:
                threshold = s.volume_low if ratio < 1 else s.volume_high
                reasons.append(_reason("volume", None, ratio, 1.0, threshold))
        if reasons:
            incidents.append(Incident(bucket.index, bucket.start, bucket.end, reasons))
        else:
            clean.append(rates)
    return incidents
