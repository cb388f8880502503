"""Time-bucketed profiles: one mergeable, counts-only sketch per bucket of event time (default: the
model's window width, at least a day — ``ModelSettings.resolved_insights``).

Every closed window's sketch is merged into the bucket that holds the window's midpoint, with its
sampled values dropped (merging with an empty ``sample_size=0`` sketch keeps the counts exact and the
profile small: a bucket is a few kilobytes, so 90 of them fit in a changelog record). A bucket is
*closed* once a window ends at or after the bucket's end; only closed buckets are compared by the
data DNA and judged for incidents. Sliding windows overlap, so only every ``stride``-th window (with
``stride = size / slide``) is merged: those tile the stream exactly, and nothing is counted twice.

Pure: no files, no clock (``insights.store`` reads and writes folders).

>>> from types import SimpleNamespace
>>> from stream_monitor.core.reference import NumericProfile, ReferenceProfile
>>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
>>> from stream_monitor.core.sketches import WindowSketch
>>> from stream_monitor.core.windows import ClosedWindow, week_origin
>>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))
>>> reference = ReferenceProfile(1, "m", numeric={"x": NumericProfile.from_values(np.arange(8.0), bins=2)})
>>> def window(i, start, end):
...     sketch = WindowSketch(schema, reference)
...     ts = np.linspace(start, end - 1, 4)
...     sketch.update(SimpleNamespace(event_id=[f"{i}-{k}" for k in range(4)], ts=ts,
...         numeric=np.array([[1.0, 2.0, 6.0, np.nan]]), categorical=[], score=np.full(4, np.nan),
...         pred_label=[None] * 4, segments={}))
...     return ClosedWindow(start, end, i, sketch)
>>> buckets = TimeBucketProfiles(schema, reference, bucket_seconds=100.0)
>>> [buckets.add_window(window(i, 50.0 * i, 50.0 * (i + 1))) for i in range(5)]
[[], [0], [], [1], []]
>>> [(b.index, b.sketch.n_events, b.windows) for b in buckets.closed()]
[(0, 8, 2), (1, 8, 2)]
>>> buckets.closed()[0].sketch.numeric_counts.tolist(), len(buckets.closed()[0].sketch.numeric_sample[0])
([[4, 2]], 0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from stream_monitor.core import state_format
from stream_monitor.core.reference import ReferenceProfile
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import DAY_SECONDS, IncidentSettings, InsightSettings
from stream_monitor.core.sketches import WindowSketch, merge_sketches
from stream_monitor.core.state_format import StateReader
from stream_monitor.core.windows import ClosedWindow, week_origin
from stream_monitor.errors import StateError

#: Version of the layout written by :meth:`TimeBucketProfiles.to_state`.
BUCKETS_FORMAT = 2  # 1 was JSON

DAY = DAY_SECONDS


@dataclass
class Bucket:
    """One bucket of event time ``[start, end)`` and the merged, counts-only sketch of its windows."""

    index: int
    start: float
    end: float
    sketch: WindowSketch
    windows: int = 0

    @property
    def label(self) -> str:
        """A short name: the UTC date (day buckets) or date and time of the bucket's start.

        >>> from stream_monitor.core.reference import ReferenceProfile
        >>> from stream_monitor.core.schema import ModelSchema
        >>> sketch = WindowSketch(ModelSchema("m", "regression", ()), ReferenceProfile(1, "m"))
        >>> Bucket(20089, 20089 * DAY, 20090 * DAY, sketch).label
        '2025-01-01'
        """
        import time

        fmt = "%Y-%m-%d" if (self.end - self.start) % DAY == 0 else "%Y-%m-%d %H:%M"
        return time.strftime(fmt, time.gmtime(self.start))


class TimeBucketProfiles:
    """Per model: each bucket of event time keeps the merge of the window sketches that fall in it.

    Settings are public: ``bucket_seconds`` (width, default one day), ``retention`` (closed buckets
    kept, default 90; older ones are dropped), ``stride`` (merge every ``stride``-th window; set it to
    ``size / slide`` for sliding windows), ``origin`` (bucket boundaries are ``origin + k × width``;
    0 aligns day buckets on UTC midnight; :func:`bucket_origin` starts weeks on a weekday). See the
    module docstring for an example.
    """

    def __init__(
        self,
        schema: ModelSchema,
        reference: ReferenceProfile,
        bucket_seconds: float = DAY,
        retention: int = InsightSettings.retention,
        stride: int = 1,
        origin: float = 0.0,
    ) -> None:
        if not bucket_seconds > 0:
            raise ValueError(f"bucket_seconds must be > 0, got {bucket_seconds}")
        if retention < 1 or stride < 1:
            raise ValueError(f"retention and stride must be >= 1, got {retention}, {stride}")
        self.schema = schema
        self.reference = reference
        self.bucket_seconds = float(bucket_seconds)
        self.retention = retention
        self.stride = stride
        self.origin = float(origin)
        self._buckets: dict[int, Bucket] = {}
        self._watermark = -math.inf

    # -- adding -------------------------------------------------------------------------------
    def bucket_of(self, ts: float) -> int:
        """Index of the bucket that holds event time ``ts``.

        >>> from stream_monitor.core.reference import ReferenceProfile
        >>> from stream_monitor.core.schema import ModelSchema
        >>> profiles = TimeBucketProfiles(ModelSchema("m", "regression", ()), ReferenceProfile(1, "m"))
        >>> profiles.bucket_of(DAY + 5)
        1
        """
        return math.floor((ts - self.origin) / self.bucket_seconds)

    def add_window(self, window: ClosedWindow) -> list[int]:
        """Merge a closed window into its bucket; return the indices of buckets this closes."""
        if window.index % self.stride == 0 and window.sketch.n_events > 0:
            self.add_sketch(window.sketch, window.start, window.end)
        return self.advance(window.end)

    def add_sketch(self, sketch: WindowSketch, start: float, end: float) -> None:
        """Merge ``sketch`` (events in ``[start, end]``) into the bucket of its midpoint, counts only."""
        index = self.bucket_of((start + end) / 2)
        bucket = self._buckets.get(index)
        if bucket is None:
            if self._buckets and index < min(self._buckets) and len(self.closed()) >= self.retention:
                return  # older than everything retained: it would be dropped at once
            lo = self.origin + index * self.bucket_seconds
            # An empty sample_size=0 sketch in the merge drops the samples: a bucket keeps counts only.
            empty = WindowSketch(self.schema, self.reference, sample_size=0, seed=sketch.seed)
            bucket = self._buckets[index] = Bucket(index, lo, lo + self.bucket_seconds, empty)
        # The merged sample size is the smallest one: the bucket's 0, so no samples are kept.
        bucket.sketch = merge_sketches([bucket.sketch, sketch])
        bucket.windows += 1

    def advance(self, watermark: float) -> list[int]:
        """Event time has reached ``watermark``: close the buckets that end by then, apply retention."""
        before = {b.index for b in self.closed()}
        self._watermark = max(self._watermark, watermark)
        closed = self.closed()
        for bucket in closed[: max(0, len(closed) - self.retention)]:
            del self._buckets[bucket.index]
        return sorted(b.index for b in self.closed() if b.index not in before)

    # -- reading ------------------------------------------------------------------------------
    @property
    def watermark(self) -> float:
        """The latest window end seen (event time)."""
        return self._watermark

    def closed(self) -> list[Bucket]:
        """Closed buckets, oldest first."""
        return [self._buckets[i] for i in sorted(self._buckets) if self._buckets[i].end <= self._watermark]

    def open(self) -> list[Bucket]:
        """Buckets still receiving windows, oldest first."""
        return [self._buckets[i] for i in sorted(self._buckets) if self._buckets[i].end > self._watermark]

    def with_data(self) -> list[Bucket]:
        """Closed buckets and the open ones that already hold events, oldest first: what the stream has
        seen so far. After a replay the last bucket is usually open — the stream ended before the
        bucket did — and still the latest data (:func:`partial_buckets` tells whether it covers enough of
        its time to count as a full bucket)."""
        return [b for b in (self._buckets[i] for i in sorted(self._buckets)) if b.sketch.n_events > 0]

    def __len__(self) -> int:
        return len(self._buckets)

    # -- state --------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Settings, watermark and every bucket's counts-only sketch, as a container of
        :mod:`stream_monitor.core.state_format`."""
        return state_format.tagged(
            "time_buckets",
            BUCKETS_FORMAT,
            model_id=self.schema.model_id,
            bucket_seconds=self.bucket_seconds,
            retention=self.retention,
            stride=self.stride,
            origin=self.origin,
            # -inf before the first window: an array keeps it exactly.
            watermark=np.array([self._watermark], dtype=np.float64),
            buckets=state_format.indexed(
                [
                    {"index": b.index, "windows": b.windows, "sketch": b.sketch.to_state()}
                    for b in (self._buckets[i] for i in sorted(self._buckets))
                ]
            ),
        )

    @classmethod
    @state_format.restoring
    def from_state(
        cls,
        state: StateReader | dict[str, Any],
        schema: ModelSchema,
        reference: ReferenceProfile,
        what: str = "bucket profiles",
    ) -> Self:
        """Inverse of :meth:`to_state`; :class:`StateError` on a foreign or broken state.

        >>> from stream_monitor.core.reference import ReferenceProfile
        >>> from stream_monitor.core.schema import ModelSchema
        >>> schema, reference = ModelSchema("m", "regression", ()), ReferenceProfile(1, "m")
        >>> state = TimeBucketProfiles(schema, reference, retention=7).to_state()
        >>> TimeBucketProfiles.from_state(state, schema, reference).retention
        7
        >>> TimeBucketProfiles.from_state({"kind": "time_buckets", "format": 1}, schema, reference)
        Traceback (most recent call last):
        ...
        stream_monitor.errors.StateError: bucket profiles: 'time_buckets' state of layout 1, expected 2
        """
        r = state if isinstance(state, StateReader) else StateReader(state, what)
        r.expect("time_buckets", BUCKETS_FORMAT)
        model_id = r.text("model_id")
        if model_id != schema.model_id:
            raise StateError(f"{r.what}: of model {model_id!r}, restored as {schema.model_id!r}")
        try:
            profiles = cls(
                schema,
                reference,
                bucket_seconds=r.number("bucket_seconds"),
                retention=r.integer("retention"),
                stride=r.integer("stride"),
                origin=r.number("origin"),
            )
        except ValueError as exc:
            raise StateError(f"{r.what}: {exc}") from exc
        (profiles._watermark,) = r.array("watermark", np.float64, shape=(1,)).tolist()
        for b in r.children("buckets"):
            index = b.integer("index")
            lo = profiles.origin + index * profiles.bucket_seconds
            sketch = WindowSketch.from_state(b.child("sketch"), schema, reference)
            if index in profiles._buckets:
                raise StateError(f"{b.what}: bucket {index} appears twice")
            profiles._buckets[index] = Bucket(
                index, lo, lo + profiles.bucket_seconds, sketch, b.integer("windows", min_value=0)
            )
        return profiles

    def snapshot(self) -> bytes:
        """:meth:`to_state` as bytes (the one state format)."""
        return state_format.encode(self.to_state())

    @classmethod
    def restore(cls, data: bytes, schema: ModelSchema, reference: ReferenceProfile) -> Self:
        """Rebuild from :meth:`snapshot` bytes (same schema and reference).

        >>> from stream_monitor.core.reference import ReferenceProfile
        >>> from stream_monitor.core.schema import ModelSchema
        >>> schema, reference = ModelSchema("m", "regression", ()), ReferenceProfile(1, "m")
        >>> p = TimeBucketProfiles(schema, reference, bucket_seconds=60.0)
        >>> TimeBucketProfiles.restore(p.snapshot(), schema, reference).bucket_seconds
        60.0
        """
        return cls.from_state(state_format.decode(data), schema, reference)


def bucket_origin(bucket_seconds: float, week_start: str = InsightSettings.week_start) -> float:
    """Where bucket boundaries start (``origin`` of :class:`TimeBucketProfiles`): where the model's
    event-time windows start (:func:`~stream_monitor.core.windows.week_origin`) — weekly buckets are
    ISO weeks by default, not the Thursdays of the Unix epoch; other widths keep the epoch.

    >>> bucket_origin(7 * DAY) / DAY, bucket_origin(7 * DAY, "sunday") / DAY  # 1970-01-05 and -04
    (4.0, 3.0)
    >>> bucket_origin(DAY), bucket_origin(600.0)
    (0.0, 0.0)
    """
    return week_origin(bucket_seconds, week_start)


def covered_seconds(bucket: Bucket) -> float:
    """Event time the bucket's events cover: first to last event inside the bucket, plus one mean gap
    between events (``n`` evenly spaced events cover ``n`` gaps, so 24 hourly rows cover a day), at
    most the bucket's width. Less than one event per gap cannot be judged: 0 for fewer than 2 events.

    >>> from stream_monitor.core.reference import ReferenceProfile
    >>> from stream_monitor.core.schema import ModelSchema
    >>> sketch = WindowSketch(ModelSchema("m", "regression", ()), ReferenceProfile(1, "m"))
    >>> sketch.n_events, sketch.ts_min, sketch.ts_max = 12, 0.0, 11 * 3600.0
    >>> covered_seconds(Bucket(0, 0.0, DAY, sketch)) / 3600
    12.0
    """
    sk = bucket.sketch
    n = sk.n_events
    if n < 2 or not (math.isfinite(sk.ts_min) and math.isfinite(sk.ts_max)):
        return 0.0
    span = max(min(sk.ts_max, bucket.end) - max(sk.ts_min, bucket.start), 0.0)
    return min(span * n / (n - 1), bucket.end - bucket.start)


def partial_buckets(
    buckets: Sequence[Bucket], min_coverage: float = IncidentSettings.partial_coverage
) -> set[int]:
    """Indices of *partial* buckets among ``buckets`` (closed, oldest first): the first or the last one
    when its events cover less than ``min_coverage`` of the median covered time (:func:`covered_seconds`)
    — the stream started or stopped inside it (a replay's last day, a deployment at noon). Only the edges:
    time missing inside the history is an outage, which the volume check judges. Relative to the median,
    so a stream that only runs office hours has no partial buckets.

    >>> from stream_monitor.core.reference import ReferenceProfile
    >>> from stream_monitor.core.schema import ModelSchema
    >>> def bucket(i, hours):
    ...     sk = WindowSketch(ModelSchema("m", "regression", ()), ReferenceProfile(1, "m"))
    ...     sk.n_events, sk.ts_min, sk.ts_max = hours, i * DAY, i * DAY + (hours - 1) * 3600.0
    ...     return Bucket(i, i * DAY, (i + 1) * DAY, sk)
    >>> sorted(partial_buckets([bucket(0, 24), bucket(1, 24), bucket(2, 23), bucket(3, 9)]))
    [3]
    """
    if len(buckets) < 2:
        return set()
    covered = [covered_seconds(b) for b in buckets]
    typical = float(np.median(covered))
    return {
        b.index
        for b, c in ((buckets[0], covered[0]), (buckets[-1], covered[-1]))
        if c < min_coverage * typical
    }


@dataclass(frozen=True)
class BucketRates:
    """Integrity rates of one bucket: per numeric / categorical feature, and for the prediction."""

    events: float
    numeric_missing: np.ndarray
    out_of_range: np.ndarray
    categorical_missing: np.ndarray
    new_category: np.ndarray
    prediction_missing: float


def bucket_rates(bucket: Bucket) -> BucketRates:
    """Missing, out-of-range and new-category rates per feature, prediction-missing rate, volume.

    >>> from stream_monitor.core.reference import ReferenceProfile
    >>> from stream_monitor.core.schema import ModelSchema
    >>> sketch = WindowSketch(ModelSchema("m", "regression", ()), ReferenceProfile(1, "m"))
    >>> bucket_rates(Bucket(0, 0.0, 1.0, sketch)).events
    0.0
    """
    sk = bucket.sketch
    n = float(sk.n_events)
    total = max(n, 1.0)
    present = sk.numeric_n.astype(float)
    oor = np.where(present > 0, (sk.numeric_below + sk.numeric_above) / np.maximum(present, 1.0), 0.0)
    new = np.array([sum(d.values()) for d in sk.new_categories], dtype=float)
    new = new + sk.new_category_overflow.astype(float)
    valid = np.array([c.sum() for c in sk.categorical_counts], dtype=float)
    return BucketRates(
        events=n,
        numeric_missing=sk.numeric_missing / total,
        out_of_range=oor,
        categorical_missing=sk.categorical_missing / total,
        new_category=np.where(valid > 0, new / np.maximum(valid, 1.0), 0.0),
        prediction_missing=sk.score_missing / total,
    )
