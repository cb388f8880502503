"""The retraining recommendation of a trigger: which buckets to train on, which to exclude and why.

Rules (seed 001's "data-driven retraining"):

1. **Recent production** is the last ``recent_buckets`` closed buckets (default 7: a full weekly cycle,
   so weekends are in it when they are part of normal life).
2. **Train on** every clean bucket whose regime is among the recent buckets' regimes — the data the
   model will see next — listed as periods of consecutive buckets, the most recent first.
3. **Exclude**, with the reason: integrity incidents (``integrity_incident``, with what broke),
   buckets of a past one-off regime (``one_off_regime``: a campaign should not teach the model what
   normal is), buckets of any other regime not seen recently
   (``regime_not_in_recent_production``, e.g. last winter), and, when recent production is in a
   ``trend``, the trend's older buckets (``trend_superseded``): those further from the newest clean
   bucket than the DNA's cut and not among the recent buckets — the data has moved on since. Partial
   buckets are not incidents: they are trained on with their regime.
4. **Segments needing attention**: segments whose drift reaches the alarm, largest drift × share first.
5. **Labels**: from the label arrival rate, when ``min_new_labels`` new labels will have joined since
   the last trigger — the amount the offline planner's learning curve says a retrain needs.

Pure.

>>> periods([3, 4, 5, 9, 10], {b: (b * 10.0, b * 10.0 + 10) for b in range(11)})
(Period(start=90.0, end=110.0, buckets=2), Period(start=30.0, end=60.0, buckets=3))
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from stream_monitor.core.insights.buckets import Bucket
from stream_monitor.core.insights.dna import DataDNA
from stream_monitor.core.insights.incidents import Incident
from stream_monitor.core.insights.segments import SegmentDrift
from stream_monitor.core.settings import RecommendSettings
from stream_monitor.core.triggers import ExcludedPeriod, LabelOutlook, Period, Recommendation, RegimeSummary


def plain(value: Any) -> Any:
    """Numpy scalars and arrays inside dicts/lists as plain Python values (JSON-ready for any encoder).

    >>> import numpy as np
    >>> plain({"a": [np.float64(1.5), np.int64(2)], "b": (np.bool_(True),)})
    {'a': [1.5, 2], 'b': [True]}
    """
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str):
        return plain(value.tolist())
    return value


def periods(bucket_ids: Sequence[int], bounds: Mapping[int, tuple[float, float]]) -> tuple[Period, ...]:
    """Consecutive bucket ids as periods (start, end, buckets), the most recent first."""
    runs: list[list[int]] = []
    for b in sorted(bucket_ids):
        if runs and b == runs[-1][-1] + 1:
            runs[-1].append(b)
        else:
            runs.append([b])
    return tuple(Period(start=bounds[r[0]][0], end=bounds[r[-1]][1], buckets=len(r)) for r in reversed(runs))


def label_outlook(new_labels: float, arrival_rate: float, now: float, needed: int) -> LabelOutlook:
    """When ``needed`` new labels will have joined, at ``arrival_rate`` labels per second.

    >>> outlook = label_outlook(500.0, 0.5, 1000.0, 2000)
    >>> outlook.arrival_rate_per_hour, outlook.enough, outlook.ready_at, outlook.hours_to_go
    (1800.0, False, 4000.0, 0.833)
    """
    enough = new_labels >= needed
    ready_at: float | None
    if enough:
        ready_at = now
    elif arrival_rate > 0 and math.isfinite(arrival_rate):
        ready_at = now + (needed - new_labels) / arrival_rate
    else:
        ready_at = None
    return LabelOutlook(
        new_labels=float(new_labels),
        needed=needed,
        arrival_rate_per_hour=round(arrival_rate * 3600.0, 3) if math.isfinite(arrival_rate) else 0.0,
        enough=bool(enough),
        ready_at=ready_at,
        hours_to_go=None if ready_at is None else round((ready_at - now) / 3600.0, 3),
    )


def recommend(
    base: Recommendation,
    buckets: Sequence[Bucket],
    dna: DataDNA | None,
    incidents: Sequence[Incident],
    segments: Sequence[SegmentDrift] = (),
    labels: Mapping[str, float] | None = None,
    now: float = 0.0,
    settings: RecommendSettings | None = None,
) -> Recommendation:
    """The policy's recommendation ``base`` with bucket-based ``train_on``/``exclude`` and more.

    Until ``min_buckets`` buckets have closed, ``train_on``/``exclude`` stay the policy's window-based
    ones (``basis: "windows"``); the segment and label parts are always added.
    """
    s = settings or RecommendSettings()
    labels = labels or {}
    outlook = label_outlook(
        float(base.new_labels_since_last_trigger),
        float(labels.get("arrival_rate", 0.0)),
        now,
        s.min_new_labels,
    )
    out = dataclasses.replace(
        base,
        segments_needing_attention=tuple(
            sorted(set(base.segments_needing_attention) | {r.segment for r in segments})
        ),
        segments=tuple(plain(r.to_dict()) for r in segments),
        labels=outlook,
        # One truth: the flag is the outlook's verdict (the policy used the same threshold).
        enough_new_labels=outlook.enough if base.enough_new_labels is not None else None,
    )
    if dna is None or len(buckets) < s.min_buckets:
        return dataclasses.replace(out, basis="windows")
    bounds = {b.index: (b.start, b.end) for b in buckets}
    incident_of = {i.bucket: i for i in incidents}
    clean = [b.index for b in buckets if b.index not in incident_of]
    recent = clean[-s.recent_buckets :]
    recent_regimes = {r.id for b in recent if (r := dna.regime_of(b)) is not None}
    position = {int(b): i for i, b in enumerate(dna.bucket_ids)}
    newest = position.get(clean[-1]) if clean else None
    train: list[int] = []
    one_off: list[int] = []
    superseded: list[int] = []
    other: list[int] = []
    for b in clean:
        regime = dna.regime_of(b)
        if regime is not None and regime.id in recent_regimes:
            # A trend keeps moving: its far end is not what the model will see next.
            far = (
                regime.kind == "trend"
                and b not in recent
                and newest is not None
                and b in position
                and float(dna.matrix[position[b], newest]) > dna.cut
            )
            (superseded if far else train).append(b)
        elif regime is not None and regime.kind == "one_off":
            one_off.append(b)
        else:
            other.append(b)
    exclude = [
        ExcludedPeriod(start=i.start, end=i.end, buckets=1, reason="integrity_incident", detail=i.reason)
        for i in sorted(incidents, key=lambda i: -i.bucket)
        if i.bucket in bounds
    ]
    for reason, ids in (
        ("trend_superseded", superseded),
        ("one_off_regime", one_off),
        ("regime_not_in_recent_production", other),
    ):
        exclude += [
            ExcludedPeriod(start=p.start, end=p.end, buckets=p.buckets, reason=reason)
            for p in periods(ids, bounds)
        ]
    return dataclasses.replace(
        out,
        train_on=periods(train, bounds),
        exclude=tuple(exclude),
        regimes=tuple(
            RegimeSummary(
                id=r.id,
                kind=r.kind,
                buckets=len(r.buckets),
                recent=r.id in recent_regimes,
                period_buckets=r.period,
            )
            for r in dna.regimes
        ),
        train_on_buckets=len(train),
        basis="buckets",
    )
