"""One model's monitor: reference, windows, detectors, label join, performance and trigger policy.

Pure: given a decoded batch and ``now`` (wall clock, only used for label TTL and ``emitted_at``), it
returns what happened — closed-window evaluations for the metrics and trigger events for Kafka. The
whole monitor snapshots to bytes and restores exactly, so a partition-task's state can move between
consumer-group members through the changelog topic.

>>> import numpy as np
>>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
>>> from stream_monitor.core.settings import ModelSettings, WindowSettings
>>> from stream_monitor.core.events import PredictionBatch
>>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric", key=True),))
>>> settings = ModelSettings(window=WindowSettings(size=1000), warmup_events=5000)
>>> mon = ModelMonitor(schema, settings)
>>> rng = np.random.default_rng(1)
>>> def batch(start, x):
...     n = len(x)
...     return PredictionBatch("m", np.arange(n), [f"e{start + i}" for i in range(n)],
...         np.arange(start, start + n, dtype=float), [None] * n, x[None, :], [], x.copy(), [None] * n, {}, 0)
>>> fired = []
>>> for k in range(20):
...     x = rng.normal(loc=0.0 if k < 12 else 1.0, size=1000)
...     out = mon.process_predictions(batch(k * 1000, x), now=0.0)
...     fired += [(k, t["kind"]) for t in out.triggers]
>>> fired
[(13, 'data_drift')]
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from stream_monitor.core.detectors import StreamDriftDetector, make_stream_detector
from stream_monitor.core.evaluation import evaluate_window
from stream_monitor.core.events import LabelBatch, PredictionBatch
from stream_monitor.core.insights.tracker import InsightSettings, InsightTracker, stride_for
from stream_monitor.core.labels import LabelJoinBuffer
from stream_monitor.core.performance import RollingPerformance
from stream_monitor.core.policy import TriggerPolicy, WindowEvaluation
from stream_monitor.core.reference import ReferenceProfile, ReferenceWarmup
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import ModelSettings
from stream_monitor.core.sketches import WindowSketch
from stream_monitor.core.windows import CountWindows, EventTimeWindows, slice_batch
from stream_monitor.errors import StateError

_FORMAT = 1
# ADWIN on the prediction score is fed chunk means: per-event updates would cost 0.2 µs × every event.
_SCORE_CHUNK = 100


@dataclass
class MonitorOutput:
    """What one batch caused: evaluations of windows that closed, triggers, and counters."""

    evaluations: list[WindowEvaluation] = field(default_factory=list)
    triggers: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0
    labels_joined: int = 0
    score_drift: bool = False
    error_drift: bool = False
    # Events older than the open event-time windows allow (beyond allowed lateness): counted, not added.
    late_events: int = 0

    def extend(self, other: MonitorOutput) -> None:
        self.evaluations += other.evaluations
        self.triggers += other.triggers
        self.events += other.events
        self.labels_joined += other.labels_joined
        self.score_drift |= other.score_drift
        self.error_drift |= other.error_drift
        self.late_events += other.late_events


class ModelMonitor:
    """Everything stream-monitor knows about one model. See the module docstring."""

    def __init__(
        self,
        schema: ModelSchema,
        settings: ModelSettings | None = None,
        reference: ReferenceProfile | None = None,
        model_version: str | None = None,
    ) -> None:
        self.schema = schema
        self.settings = settings or ModelSettings()
        self.model_version = model_version
        d = self.settings.detectors
        self.reference: ReferenceProfile | None = None
        self.warmup: ReferenceWarmup | None = None
        self.windows: CountWindows | EventTimeWindows | None = None
        self.labels = LabelJoinBuffer(self.settings.label_buffer_entries, self.settings.label_ttl_seconds)
        self.performance = RollingPerformance(
            schema.task, self.settings.performance_window, schema.positive_class
        )
        self.score_drift: StreamDriftDetector = make_stream_detector("adwin", delta=d.adwin_delta)
        self.policy = TriggerPolicy(
            schema.model_id,
            schema.key_features,
            self.settings.policy,
            model_version,
            positive_class=schema.positive_class,
        )
        # Scores not yet fed to ADWIN (fewer than one chunk): chunks do not depend on batch boundaries.
        self._score_carry = np.empty(0, dtype=np.float64)
        self.events_total = 0
        self.learned_baseline: dict[str, float] | None = None
        self.last_evaluation: WindowEvaluation | None = None
        # Retraining insight (time buckets, data DNA, segments): see stream_monitor.insights.
        self.insights: InsightTracker | None = None
        if reference is not None:
            self._use_reference(reference)
        else:
            self.warmup = ReferenceWarmup(
                schema,
                self.settings.warmup_events,
                bins=d.bins,
                top_k=d.top_k,
                sample_size=d.reference_sample,
            )

    # -- wiring -------------------------------------------------------------------------------
    def _make_sketch(self) -> WindowSketch:
        assert self.reference is not None
        return WindowSketch(self.schema, self.reference, sample_size=self.settings.detectors.window_sample)

    def _new_windows(self) -> CountWindows | EventTimeWindows:
        w = self.settings.window
        if w.kind == "count":
            return CountWindows(w.size, w.slide, make_sketch=self._make_sketch)
        return EventTimeWindows(w.width, w.time_slide, w.allowed_lateness, make_sketch=self._make_sketch)

    def _use_reference(self, reference: ReferenceProfile) -> None:
        self.reference = reference
        self.warmup = None
        self.windows = self._new_windows()
        self.insights = self._new_insights(reference)

    def _new_insights(self, reference: ReferenceProfile) -> InsightTracker:
        w = self.settings.window
        stride = stride_for(
            w.kind, w.size if w.kind == "count" else w.width, w.slide if w.kind == "count" else w.time_slide
        )
        insight_settings = InsightSettings(
            bucket_seconds=self.settings.bucket_seconds,
            retention=self.settings.bucket_retention,
            stride=stride,
        )
        return InsightTracker(self.schema, reference, insight_settings, self.model_version)

    @property
    def ready(self) -> bool:
        """True once the model has a reference (loaded or warmed up) and detects drift."""
        return self.reference is not None

    # -- processing ---------------------------------------------------------------------------
    def process_predictions(self, batch: PredictionBatch, now: float) -> MonitorOutput:
        """Feed one model's decoded predictions; returns evaluations and triggers they caused."""
        out = MonitorOutput(events=len(batch))
        if len(batch) == 0:
            return out
        self.events_total += len(batch)
        # Every prediction waits for its label, warm-up events too (their labels are not orphans).
        self.labels.add_predictions(batch.event_id, batch.ts, batch.score, batch.pred_label)
        if self.warmup is not None:
            needed = self.warmup.remaining
            profile = self.warmup.add(slice_batch(batch, 0, min(needed, len(batch))))
            if profile is None:
                return out
            self._use_reference(profile)
            if needed >= len(batch):
                return out
            batch = slice_batch(batch, needed, len(batch))
        out.score_drift = self._update_score_drift(batch.score)
        assert self.windows is not None and self.insights is not None
        out.triggers += self.insights.observe_batch(batch, now)  # a segment surge checks at once
        late_before = self.windows.late_events
        for window in self.windows.add(batch):
            self._close(window, now, out)
        out.late_events = self.windows.late_events - late_before
        return out

    def _update_score_drift(self, score: np.ndarray) -> bool:
        finite = np.concatenate([self._score_carry, score[np.isfinite(score)]])
        full = len(finite) // _SCORE_CHUNK * _SCORE_CHUNK
        self._score_carry = finite[full:].copy()
        if full == 0:
            return False
        means = finite[:full].reshape(-1, _SCORE_CHUNK).mean(axis=1)
        return self.score_drift.update(means)

    def process_labels(self, batch: LabelBatch, now: float) -> MonitorOutput:
        """Join delayed labels to pending predictions and update rolling performance.

        ``events`` of the output counts the labels processed (joined or not).
        """
        out = MonitorOutput(events=len(batch))
        joined = self.labels.join(batch.event_id, batch.ts, batch.label, batch.label_class, now)
        self.labels.expire(now)
        if len(joined.label):
            self.performance.update(joined)
            out.error_drift = self.performance.error_drift_detected
        out.labels_joined = len(joined.label)
        return out

    def flush(self, now: float) -> MonitorOutput:
        """Close every open window (end of a replay)."""
        out = MonitorOutput()
        if self.windows is not None:
            for window in self.windows.flush():
                self._close(window, now, out)
        return out

    def _close(self, window: Any, now: float, out: MonitorOutput) -> None:
        assert self.reference is not None
        p = self.settings.policy
        results = evaluate_window(
            self.schema, self.reference, window, self.settings.detectors, p.psi_warning, p.psi_alarm
        )
        perf = self.performance.metrics()
        if self.schema.task == "binary" and len(self.performance):
            # Positives in the rolling window: the policy needs them for the AUC's standard error.
            codes = self.performance._label_code[: len(self.performance)]
            perf["positives"] = float(np.count_nonzero(codes == 1))
        ev = WindowEvaluation(
            model_id=self.schema.model_id,
            index=window.index,
            start=float(window.start),
            end=float(window.end),
            events=int(window.sketch.n_events),
            results=tuple(results),
            performance=perf,
            baseline=self._baseline(),
            labels=self.label_stats(now),
            segments={k: dict(v) for k, v in window.sketch.segment_counts.items()},
        )
        self.last_evaluation = ev
        out.evaluations.append(ev)
        assert self.insights is not None
        self.insights.observe_window(window)
        out.triggers += [self.insights.enrich(t, ev.labels) for t in self.policy.decide(ev, now)]

    def _baseline(self) -> dict[str, float]:
        assert self.reference is not None
        base = dict(self.reference.baseline)
        if not base:
            base = self._learned_baseline()
        # A multiclass reference's "f1" is macro F1: name it as the rolling metrics do.
        if self.schema.task == "multiclass" and "f1" in base:
            base["macro_f1"] = base.pop("f1")
        return base

    def _learned_baseline(self) -> dict[str, float]:
        """A reference warmed up from live events has no labels: learn the baseline from the first full
        rolling window of joined labels instead, so performance triggers work without a training file."""
        if self.learned_baseline is None:
            perf = self.performance.metrics()
            if perf.get("n", 0.0) >= self.settings.performance_window:
                self.learned_baseline = {
                    k: v for k, v in perf.items() if k not in ("n", "error_drifts_total") and v == v
                }
        return dict(self.learned_baseline or {})

    def label_stats(self, now: float) -> dict[str, float]:
        lb = self.labels
        return {
            "joined_total": float(lb.joined),
            "pending": float(len(lb)),
            "expired": float(lb.expired),
            "evicted": float(lb.evicted),
            "orphan": float(lb.orphan_labels),
            "duplicate": float(lb.duplicate_labels),
            "delay_p50": float(lb.delay_p50) if hasattr(lb, "delay_p50") else math.nan,
            "arrival_rate": float(lb.arrival_rate(now)),
        }

    # -- state --------------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """The whole monitor as bytes; :meth:`restore` with the same schema/settings continues exactly."""

        def b64(data: bytes | None) -> str | None:
            return None if data is None else base64.b64encode(data).decode()

        return orjson.dumps(
            {
                "format": _FORMAT,
                "model_id": self.schema.model_id,
                "reference": b64(self.reference.to_json() if self.reference else None),
                "warmup": b64(self.warmup.snapshot() if self.warmup else None),
                "windows": b64(self.windows.snapshot() if self.windows else None),
                "labels": b64(self.labels.snapshot()),
                "performance": b64(self.performance.snapshot()),
                "score_drift": b64(self.score_drift.snapshot()),
                "policy": b64(self.policy.snapshot()),
                "score_carry": self._score_carry.tolist(),
                "events_total": self.events_total,
                "learned_baseline": self.learned_baseline,
                "insights": b64(self.insights.snapshot() if self.insights else None),
            }
        )

    @classmethod
    def restore(
        cls,
        data: bytes,
        schema: ModelSchema,
        settings: ModelSettings | None = None,
        model_version: str | None = None,
    ) -> ModelMonitor:
        """Rebuild a monitor from :meth:`snapshot` bytes."""
        try:
            d = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise StateError(f"model {schema.model_id}: snapshot is not valid JSON: {e}") from e
        if d.get("format") != _FORMAT or d.get("model_id") != schema.model_id:
            raise StateError(f"model {schema.model_id}: snapshot format/model mismatch")

        def raw(key: str) -> bytes | None:
            v = d.get(key)
            return None if v is None else base64.b64decode(v)

        ref_bytes = raw("reference")
        reference = ReferenceProfile.from_json(ref_bytes) if ref_bytes else None
        mon = cls(schema, settings, reference, model_version)
        warm = raw("warmup")
        if warm is not None:
            mon.warmup = ReferenceWarmup.restore(warm)
        win = raw("windows")
        if win is not None:
            kind = CountWindows if mon.settings.window.kind == "count" else EventTimeWindows
            mon.windows = kind.restore(win, make_sketch=mon._make_sketch, schema=schema, reference=reference)
        insights = raw("insights")
        if insights is not None and reference is not None and mon.insights is not None:
            mon.insights = InsightTracker.restore(
                insights, schema, reference, mon.insights.settings, model_version
            )
        mon.labels = LabelJoinBuffer.restore(raw("labels") or b"")
        mon.performance = RollingPerformance.restore(raw("performance") or b"")
        mon.score_drift = StreamDriftDetector.restore(raw("score_drift") or b"")
        mon.policy.restore_state(raw("policy") or b"")
        mon._score_carry = np.asarray(d.get("score_carry", []), dtype=np.float64)
        mon.events_total = int(d["events_total"])
        mon.learned_baseline = d.get("learned_baseline")
        return mon
