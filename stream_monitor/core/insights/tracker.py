"""The per-model insight state the monitor feeds: bucket profiles, segments, DNA, incidents, advice.

:class:`InsightTracker` is what :class:`stream_monitor.core.monitor.ModelMonitor` holds next to its windows:

- ``observe_batch(batch)``: segment counts; a segment surge with drift returns a trigger at once
  (kind ``data_drift``, first reason ``segment_surge``), at most one per segment per ``cooldown``;
- ``observe_window(window)``: the window's sketch goes into its time bucket; when buckets close, the
  incidents and the data DNA are due again — computed when first read (``latest_dna``, ``incidents``,
  ``current_regime``, a trigger's recommendation), from the closed buckets as they were then;
- ``enrich(trigger, labels)``: the trigger with its ``recommendation`` given the bucket-based advice of
  :mod:`stream_monitor.core.insights.recommend`.

Everything snapshots to bytes with the monitor. Pure: event time from the events; triggers are
built by :func:`stream_monitor.core.triggers.build_trigger`, like the policy's.

>>> from types import SimpleNamespace
>>> import numpy as np
>>> from stream_monitor.core.reference import NumericProfile, ReferenceProfile
>>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
>>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric", key=True),), segment_keys=("ch",))
>>> rng = np.random.default_rng(0)
>>> ref = ReferenceProfile(1, "m", numeric={"x": NumericProfile.from_values(rng.normal(size=5000), bins=10)})
>>> def batch(day, n, ch, loc):
...     x = rng.normal(loc, 1.0, n)
...     ids = [f"{day}-{ch}-{i}" for i in range(n)]
...     return SimpleNamespace(event_id=ids, ts=np.full(n, day * 86400.0 + 60),
...         numeric=x[None, :], categorical=[], score=x, pred_label=[None] * n, segments={"ch": [ch] * n})
>>> tracker = InsightTracker(schema, ref)
>>> tracker.observe_batch(batch(0, 3000, "web", 0.0))
[]
>>> [t.reasons[0].feature for t in tracker.observe_batch(batch(1, 2000, "partner", 2.0))]
['segment:ch=partner']
>>> tracker.observe_batch(batch(1, 2000, "partner", 2.0))  # cooldown: once per segment
[]
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections import deque
from typing import TYPE_CHECKING, Any, Self

from stream_monitor.core import state_format
from stream_monitor.core.detectors.base import DetectorResult
from stream_monitor.core.detectors.table import PSI
from stream_monitor.core.insights.buckets import Bucket, TimeBucketProfiles, bucket_origin
from stream_monitor.core.insights.dna import DataDNA, dna_from_buckets
from stream_monitor.core.insights.incidents import Incident, find_incidents
from stream_monitor.core.insights.recommend import plain, recommend
from stream_monitor.core.insights.segments import SegmentTracker, SurgeCheck
from stream_monitor.core.reference import ReferenceProfile
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import InsightSettings, ModelSettings
from stream_monitor.core.state_format import StateReader
from stream_monitor.core.triggers import (
    Recommendation,
    SegmentSurgeEvidence,
    Trigger,
    Window,
    build_trigger,
)
from stream_monitor.core.windows import ClosedWindow
from stream_monitor.errors import StateError

if TYPE_CHECKING:
    from stream_monitor.core.events import PredictionBatch

_FORMAT = 2  # 1 was JSON with the bucket profiles in base64
REGIME_KINDS = ("normal", "recurring", "trend", "one_off", "emerging", "incident", "unknown")


class InsightTracker:
    """Bucket profiles, segment tracker, cached DNA and incidents of one model. See the module doc.

    ``settings`` are the model's :class:`~stream_monitor.core.settings.InsightSettings` as
    :meth:`~stream_monitor.core.settings.ModelSettings.resolved_insights` gives them (what is left to
    the policy is taken from the default policy otherwise); ``stride`` is :func:`stride_for` the
    model's windows.
    """

    def __init__(
        self,
        schema: ModelSchema,
        reference: ReferenceProfile,
        settings: InsightSettings | None = None,
        model_version: str | None = None,
        *,
        stride: int = 1,
    ) -> None:
        self.schema = schema
        self.reference = reference
        s = settings or InsightSettings()
        if s.bucket_seconds is None or s.dna_min_cut is None or s.segments.psi_alarm is None:
            s = ModelSettings(insights=s).resolved_insights()
        assert s.bucket_seconds is not None
        self.settings = s
        self.model_version = model_version
        origin = bucket_origin(s.bucket_seconds, s.week_start)
        self.buckets = TimeBucketProfiles(schema, reference, s.bucket_seconds, s.retention, stride, origin)
        self.segments = SegmentTracker(
            schema, reference, s.segments, s.bucket_seconds, s.retention, origin, key_weight=s.key_weight
        )
        self._surge_fired: dict[str, float] = {}
        self.surges: deque[dict[str, Any]] = deque(maxlen=50)
        self._dna: DataDNA | None = None
        self._incidents: list[Incident] = []
        self._regime: tuple[int, str] = (-1, "unknown")
        # DNA and incidents cost O(buckets²) and O(buckets): recomputing them at every bucket close
        # was most of a small window's cost, yet only triggers and readers (status page, metrics) use
        # them. So a bucket close only records the closed buckets (shallow copies: a merge replaces a
        # bucket's sketch, never changes it) and the first reader computes from those — the same
        # result as computing at the close. None: nothing due.
        self._due: list[Bucket] | None = None
        self._seen_closed = False  # a refresh has had closed buckets (the eager code's "_dna is not None")

    # -- feeding ------------------------------------------------------------------------------
    def observe_batch(self, batch: PredictionBatch) -> list[Trigger]:
        """Segment counts and surge checks; returns the triggers of surges that drift."""
        checks = self.segments.update(batch)
        triggers = []
        for check in checks:
            last = self._surge_fired.get(check.segment, -math.inf)
            if check.event_time - last < self.settings.surge_cooldown_seconds:
                continue
            self.surges.append(
                {
                    "segment": check.segment,
                    "share": check.share,
                    "baseline_share": check.baseline_share,
                    "events": check.events,
                    "drift": check.drift,
                    "key_psi": float(check.result.key_psi),
                    "event_time": check.event_time,
                }
            )
            # A surge without drift is checked again later (its share may keep growing); one that
            # drifts fires and then waits out the cooldown.
            if check.drift:
                self._surge_fired[check.segment] = check.event_time
                triggers.append(self._surge_trigger(check))
        return triggers

    def observe_window(self, window: ClosedWindow) -> list[int]:
        """Merge a closed window into its bucket; DNA and incidents are due again when buckets close."""
        closed = self.buckets.add_window(window)
        self.segments.close_through(window.end)
        if closed or not self._seen_closed:
            self._mark_due()
        return closed

    def _mark_due(self) -> None:
        self._due = [copy.copy(b) for b in self.buckets.closed()]
        self._seen_closed = self._seen_closed or bool(self._due)

    def _fresh(self) -> None:
        """Compute the DNA and incidents that are due (see ``_due``)."""
        closed, self._due = self._due, None
        if closed is None:
            return
        self._incidents = find_incidents(closed, self.reference, self.settings.incidents)
        if closed:
            self._dna = self._dna_of(closed)
        current = closed[-1] if closed else None
        if current is not None and self._dna is not None:
            regime = self._dna.regime_of(current.index)
            self._regime = (-1, "incident") if regime is None else (regime.id, regime.kind)

    def dna(self, buckets: list[Bucket] | None = None) -> DataDNA:
        """The data DNA of the given (default: closed) buckets, incidents left out of the regimes."""
        self._fresh()
        return self._dna_of(self.buckets.closed() if buckets is None else buckets)

    def _dna_of(self, buckets: list[Bucket]) -> DataDNA:
        return dna_from_buckets(
            self.schema,
            buckets,
            metric=self.settings.dna_metric,
            cut=self.settings.dna_cut,
            min_cut=self.settings.dna_min_cut,
            key_weight=self.settings.key_weight,
            incidents=[i.bucket for i in self._incidents],
            partial_coverage=self.settings.incidents.partial_coverage,
        )

    @property
    def incidents(self) -> list[Incident]:
        """Incident buckets among the closed buckets (as of the last bucket close)."""
        self._fresh()
        return list(self._incidents)

    @property
    def latest_dna(self) -> DataDNA | None:
        """The DNA of the closed buckets as of the last bucket close (None before the first)."""
        self._fresh()
        return self._dna

    @property
    def current_regime(self) -> tuple[int, str]:
        """``(id, kind)`` of the regime of the newest closed bucket (``(-1, "incident")`` for an
        incident, ``(-1, "unknown")`` before the first DNA)."""
        self._fresh()
        return self._regime

    # -- recommendation -----------------------------------------------------------------------
    def recommendation(self, base: Recommendation, labels: dict[str, float], now: float) -> Recommendation:
        """``base`` (the policy's recommendation) with the bucket-based advice added."""
        self._fresh()
        return recommend(
            base,
            self.buckets.closed(),
            self._dna,
            self._incidents,
            self.segments.needing_attention(),
            labels,
            now,
            self.settings.recommend,
        )

    def enrich(self, trigger: Trigger, labels: dict[str, float]) -> Trigger:
        """The trigger with its ``recommendation`` replaced by :meth:`recommendation` (event time: the
        trigger's)."""
        advice = self.recommendation(trigger.recommendation, labels, trigger.event_time)
        return dataclasses.replace(trigger, recommendation=advice)

    def _surge_trigger(self, check: SurgeCheck) -> Trigger:
        r = check.result
        seg = self.settings.segments
        lo = self.segments.origin + check.bucket * self.segments.bucket_seconds
        share_threshold = max(seg.surge_min_share, seg.surge_ratio * check.baseline_share)
        results = [
            DetectorResult(
                "segment_surge",
                f"segment:{check.segment}",
                "share",
                round(check.share, 6),
                round(share_threshold, 6),
                drift=True,
            ),
            DetectorResult(
                PSI.name,
                f"segment:{check.segment}/{r.top_feature}",
                PSI.statistic,
                round(r.key_psi, 6),
                self.segments.psi_alarm,
                drift=True,
            ),
        ]
        return build_trigger(
            model_id=self.schema.model_id,
            model_version=self.model_version,
            kind="data_drift",
            severity="critical" if check.share >= 0.2 else "warning",
            decision=f"segment_surge:{check.segment}",
            index=check.bucket,
            at=lo,
            event_time=check.event_time,
            window=Window(start=lo, end=check.event_time, events=check.events),
            results=results,
            evidence=SegmentSurgeEvidence(
                events_in_window=check.events,
                segment_share=round(check.share, 6),
                segment_baseline_share=round(check.baseline_share, 6),
                segment_drift=plain(r.to_dict()),
            ),
            recommendation=Recommendation(action="investigate", segments_needing_attention=(check.segment,)),
        )

    # -- state --------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Bucket profiles, segment state and surge cooldowns as a container of
        :mod:`stream_monitor.core.state_format` (DNA and incidents are recomputed on restore)."""
        return state_format.tagged(
            "insight_tracker",
            _FORMAT,
            model_id=self.schema.model_id,
            surge_fired=[[segment, t] for segment, t in self._surge_fired.items()],
            surges=list(self.surges),
            buckets=self.buckets.to_state(),
            segments=self.segments.to_state(),
        )

    @classmethod
    @state_format.restoring
    def from_state(
        cls,
        state: StateReader | dict[str, Any],
        schema: ModelSchema,
        reference: ReferenceProfile,
        settings: InsightSettings | None = None,
        model_version: str | None = None,
        what: str = "insights",
    ) -> Self:
        """Inverse of :meth:`to_state` (same schema and reference); :class:`StateError` if it does not fit."""
        r = state if isinstance(state, StateReader) else StateReader(state, what)
        r.expect("insight_tracker", _FORMAT)
        model_id = r.text("model_id")
        if model_id != schema.model_id:
            raise StateError(f"{r.what}: insight state of model {model_id!r}, not {schema.model_id!r}")
        tracker = cls(schema, reference, settings, model_version)
        tracker.buckets = TimeBucketProfiles.from_state(r.child("buckets"), schema, reference)
        # The restored bucket numbers keep the alignment they were made with (a state from before weeks
        # were aligned has the epoch's); segment buckets must be numbered the same way.
        tracker.segments.origin = tracker.buckets.origin
        tracker.segments.load_state(r.child("segments"))
        fired = r.json_list("surge_fired", list)
        if not all(len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], int | float) for p in fired):
            raise StateError(f"{r.what}: surge cooldowns do not fit")
        tracker._surge_fired = {segment: float(t) for segment, t in fired}
        tracker.surges.extend(r.json_list("surges", dict))
        if tracker.buckets.closed():
            tracker._mark_due()
        return tracker

    def snapshot(self) -> bytes:
        """:meth:`to_state` as bytes (the one state format)."""
        return state_format.encode(self.to_state())

    @classmethod
    def restore(
        cls,
        data: bytes,
        schema: ModelSchema,
        reference: ReferenceProfile,
        settings: InsightSettings | None = None,
        model_version: str | None = None,
    ) -> Self:
        """Rebuild from :meth:`snapshot` bytes (same schema and reference)."""
        return cls.from_state(state_format.decode(data), schema, reference, settings, model_version)


def stride_for(kind: str, size: float, slide: float | None) -> int:
    """How many windows to skip so that merged windows tile the stream (1 for tumbling windows).

    >>> stride_for("count", 5000, None), stride_for("time", 86400.0, 21600.0)
    (1, 4)
    """
    if not slide:
        return 1
    return max(1, round(size / slide))
