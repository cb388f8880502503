"""The per-model insight state the monitor feeds: bucket profiles, segments, DNA, incidents, advice.

:class:`InsightTracker` is what :class:`stream_monitor.core.monitor.ModelMonitor` holds next to its windows:

- ``observe_batch(batch, now)``: segment counts; a segment surge with drift returns a trigger at once
  (kind ``data_drift``, first reason ``segment_surge``), at most one per segment per ``cooldown``;
- ``observe_window(window)``: the window's sketch goes into its time bucket; when buckets close, the
  incidents and the data DNA are recomputed (once per bucket, not per window);
- ``enrich(trigger, labels)``: the trigger's ``recommendation`` gets the bucket-based advice of
  :mod:`stream_monitor.core.insights.recommend`.

Everything snapshots to bytes with the monitor. Pure: event time from the events, ``now`` passed in.

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
...     return SimpleNamespace(event_id=ids, ts=np.full(n, day * DAY + 60),
...         numeric=x[None, :], categorical=[], score=x, pred_label=[None] * n, segments={"ch": [ch] * n})
>>> tracker = InsightTracker(schema, ref)
>>> tracker.observe_batch(batch(0, 3000, "web", 0.0), now=0.0)
[]
>>> [t["reasons"][0]["feature"] for t in tracker.observe_batch(batch(1, 2000, "partner", 2.0), now=0.0)]
['segment:ch=partner']
>>> tracker.observe_batch(batch(1, 2000, "partner", 2.0), now=0.0)  # cooldown: once per segment
[]
"""

from __future__ import annotations

import base64
import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

import orjson

from stream_monitor.core.insights.buckets import DAY, Bucket, TimeBucketProfiles
from stream_monitor.core.insights.dna import DataDNA, Metric, dna_from_buckets
from stream_monitor.core.insights.incidents import Incident, IncidentSettings, find_incidents
from stream_monitor.core.insights.recommend import RecommendSettings, plain, recommend
from stream_monitor.core.insights.segments import SegmentSettings, SegmentTracker, SurgeCheck
from stream_monitor.core.policy import trigger_id
from stream_monitor.core.reference import ReferenceProfile
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.windows import ClosedWindow
from stream_monitor.errors import StateError

if TYPE_CHECKING:
    from stream_monitor.core.events import PredictionBatch

_FORMAT = 1
REGIME_KINDS = ("normal", "recurring", "one_off", "emerging", "incident", "unknown")


@dataclass(frozen=True)
class InsightSettings:
    """All insight settings of one model."""

    bucket_seconds: float = DAY
    retention: int = 90
    stride: int = 1
    dna_metric: Metric = "psi"
    dna_cut: float | None = None
    key_weight: float = 2.0
    surge_cooldown_seconds: float = 6 * 3600.0
    incidents: IncidentSettings = field(default_factory=IncidentSettings)
    segments: SegmentSettings = field(default_factory=SegmentSettings)
    recommend: RecommendSettings = field(default_factory=RecommendSettings)


class InsightTracker:
    """Bucket profiles, segment tracker, cached DNA and incidents of one model. See the module doc."""

    def __init__(
        self,
        schema: ModelSchema,
        reference: ReferenceProfile,
        settings: InsightSettings | None = None,
        model_version: str | None = None,
    ) -> None:
        self.schema = schema
        self.reference = reference
        self.settings = s = settings or InsightSettings()
        self.model_version = model_version
        self.buckets = TimeBucketProfiles(schema, reference, s.bucket_seconds, s.retention, s.stride)
        self.segments = SegmentTracker(schema, reference, s.segments, s.bucket_seconds, s.retention)
        self._surge_fired: dict[str, float] = {}
        self.surges: deque[dict[str, Any]] = deque(maxlen=50)
        self._dna: DataDNA | None = None
        self._incidents: list[Incident] = []
        self.current_regime: tuple[int, str] = (-1, "unknown")

    # -- feeding ------------------------------------------------------------------------------
    def observe_batch(self, batch: PredictionBatch, now: float) -> list[dict[str, Any]]:
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
                triggers.append(self._surge_trigger(check, now))
        return triggers

    def observe_window(self, window: ClosedWindow) -> list[int]:
        """Merge a closed window into its bucket; recompute DNA/incidents when buckets close."""
        closed = self.buckets.add_window(window)
        self.segments.close_through(window.end)
        if closed or self._dna is None:
            self._refresh()
        return closed

    def _refresh(self) -> None:
        closed = self.buckets.closed()
        self._incidents = find_incidents(closed, self.reference, self.settings.incidents)
        if closed:
            self._dna = self.dna(closed)
        current = closed[-1] if closed else None
        if current is not None and self._dna is not None:
            regime = self._dna.regime_of(current.index)
            self.current_regime = (-1, "incident") if regime is None else (regime.id, regime.kind)

    def dna(self, buckets: list[Bucket] | None = None) -> DataDNA:
        """The data DNA of the given (default: closed) buckets, incidents left out of the regimes."""
        chosen = self.buckets.closed() if buckets is None else buckets
        return dna_from_buckets(
            self.schema,
            chosen,
            metric=self.settings.dna_metric,
            cut=self.settings.dna_cut,
            key_weight=self.settings.key_weight,
            incidents=[i.bucket for i in self._incidents],
        )

    @property
    def incidents(self) -> list[Incident]:
        """Incident buckets among the closed buckets (as of the last bucket close)."""
        return list(self._incidents)

    @property
    def latest_dna(self) -> DataDNA | None:
        """The DNA computed at the last bucket close (None before the first)."""
        return self._dna

    # -- recommendation -----------------------------------------------------------------------
    def recommendation(self, base: dict[str, Any], labels: dict[str, float], now: float) -> dict[str, Any]:
        """``base`` (the policy's recommendation) with the bucket-based advice added."""
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

    def enrich(self, trigger: dict[str, Any], labels: dict[str, float]) -> dict[str, Any]:
        """Replace a trigger's ``recommendation`` by :meth:`recommendation` (event time: the trigger's)."""
        trigger["recommendation"] = self.recommendation(
            trigger.get("recommendation", {}), labels, float(trigger["event_time"])
        )
        return trigger

    def _surge_trigger(self, check: SurgeCheck, now: float) -> dict[str, Any]:
        r = check.result
        lo = self.segments.origin + check.bucket * self.settings.bucket_seconds
        window = {"start": lo, "end": check.event_time, "events": check.events}
        reasons = [
            {
                "detector": "segment_surge",
                "feature": f"segment:{check.segment}",
                "statistic": "share",
                "value": round(check.share, 6),
                "threshold": round(
                    max(
                        self.settings.segments.surge_min_share,
                        self.settings.segments.surge_ratio * check.baseline_share,
                    ),
                    6,
                ),
                "p_value": None,
                "window": window,
            },
            {
                "detector": "psi",
                "feature": f"segment:{check.segment}/{r.top_feature}",
                "statistic": "psi",
                "value": round(r.key_psi, 6),
                "threshold": self.settings.segments.psi_alarm,
                "p_value": None,
                "window": window,
            },
        ]
        return plain(
            {
                "trigger_id": trigger_id(
                    self.schema.model_id, f"segment_surge:{check.segment}", check.bucket, lo
                ),
                "model_id": self.schema.model_id,
                "model_version": self.model_version,
                "emitted_at": now,
                "event_time": check.event_time,
                "severity": "critical" if check.share >= 0.2 else "warning",
                "kind": "data_drift",
                "reasons": reasons,
                "evidence": {
                    "events_in_window": check.events,
                    "segment_share": round(check.share, 6),
                    "segment_baseline_share": round(check.baseline_share, 6),
                    "segment_drift": r.to_dict(),
                },
                "recommendation": {
                    "action": "investigate",
                    "segments_needing_attention": [check.segment],
                    "new_labels_since_last_trigger": 0.0,
                },
            }
        )

    # -- state --------------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """Bucket profiles, segment state and surge cooldowns as bytes (DNA is recomputed on restore)."""
        return orjson.dumps(
            {
                "format": _FORMAT,
                "model_id": self.schema.model_id,
                "buckets": base64.b64encode(self.buckets.snapshot()).decode(),
                "segments": self.segments.to_dict(),
                "surge_fired": self._surge_fired,
                "surges": list(self.surges),
            }
        )

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
        try:
            d = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise StateError(f"bad insight state: not JSON ({exc})") from exc
        if not isinstance(d, dict) or d.get("format") != _FORMAT or d.get("model_id") != schema.model_id:
            raise StateError(f"bad insight state for model {schema.model_id!r}")
        tracker = cls(schema, reference, settings, model_version)
        tracker.buckets = TimeBucketProfiles.restore(base64.b64decode(d["buckets"]), schema, reference)
        tracker.segments.load_dict(d["segments"])
        tracker._surge_fired = {str(k): float(v) for k, v in d["surge_fired"].items()}
        tracker.surges.extend(d["surges"])
        if tracker.buckets.closed():
            tracker._refresh()
        return tracker


def stride_for(kind: str, size: float, slide: float | None) -> int:
    """How many windows to skip so that merged windows tile the stream (1 for tumbling windows).

    >>> stride_for("count", 5000, None), stride_for("time", 86400.0, 21600.0)
    (1, 4)
    """
    if not slide:
        return 1
    return max(1, round(size / slide))
