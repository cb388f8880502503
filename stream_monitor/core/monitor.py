"""One model's monitor: reference, windows, detectors, label join, performance and trigger policy.

Pure: given a decoded batch and ``now`` (the clock of label TTLs and arrival rates), it returns what
happened — closed-window evaluations for the metrics and :class:`~stream_monitor.core.triggers.Trigger`
events for Kafka (not emitted yet: the front end stamps ``emitted_at``). The
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
...     fired += [(k, t.kind) for t in out.triggers]
>>> fired
[(13, 'data_drift')]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_monitor.core import state_format
from stream_monitor.core.detectors import StreamDriftDetector, make_stream_detector
from stream_monitor.core.evaluation import evaluate_window, window_covered_seconds
from stream_monitor.core.events import LabelBatch, PredictionBatch
from stream_monitor.core.insights.tracker import InsightTracker, stride_for
from stream_monitor.core.labels import LabelJoinBuffer
from stream_monitor.core.partials import ShardReport
from stream_monitor.core.performance import RollingPerformance
from stream_monitor.core.policy import TriggerPolicy, WindowEvaluation
from stream_monitor.core.reference import ReferenceProfile, ReferenceWarmup
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import ModelSettings
from stream_monitor.core.sketches import WindowSketch
from stream_monitor.core.state_format import StateReader
from stream_monitor.core.triggers import Trigger
from stream_monitor.core.windows import ClosedWindow, CountWindows, EventTimeWindows, slice_batch, week_origin
from stream_monitor.errors import StateError

_FORMAT = 2  # 1 was JSON with base64 parts and the whole reference in every snapshot
# ADWIN on the prediction score is fed chunk means: per-event updates would cost 0.2 µs × every event.
_SCORE_CHUNK = 100


@dataclass
class MonitorOutput:
    """What one batch caused: evaluations of windows that closed, triggers, and counters."""

    evaluations: list[WindowEvaluation] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)
    events: int = 0
    labels_joined: int = 0
    score_drift: bool = False
    error_drift: bool = False
    # Events older than the open event-time windows allow (beyond allowed lateness): counted, not added.
    late_events: int = 0
    # Two-stage aggregation: what a shard monitor (core/partials.py) has for the model stage.
    reports: list[ShardReport] = field(default_factory=list)

    def extend(self, other: MonitorOutput) -> None:
        self.evaluations += other.evaluations
        self.triggers += other.triggers
        self.events += other.events
        self.labels_joined += other.labels_joined
        self.score_drift |= other.score_drift
        self.error_drift |= other.error_drift
        self.late_events += other.late_events
        self.reports += other.reports


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
        # The reference from the configuration (static: snapshots store its digest only), if any.
        self.configured_reference = reference
        self._configured_digest: str | None = None
        self.warmup: ReferenceWarmup | None = None
        self.windows: CountWindows | EventTimeWindows | None = None
        self.labels = LabelJoinBuffer(self.settings.label_buffer_entries, self.settings.label_ttl_seconds)
        self.performance = RollingPerformance(
            schema.task,
            self.settings.performance_window,
            schema.positive_class,
            adwin_delta=d.adwin_delta,
            decision_threshold=schema.decision_threshold,
        )
        self.score_drift: StreamDriftDetector = make_stream_detector("adwin", delta=d.adwin_delta)
        self.policy = TriggerPolicy(
            schema.model_id,
            schema.key_features,
            self.settings.policy,
            model_version,
            feature_weights={f.name: f.importance for f in schema.features},
            positive_class=schema.positive_class,
            min_new_labels=self.settings.insights.recommend.min_new_labels,
        )
        # Scores not yet fed to ADWIN (fewer than one chunk): chunks do not depend on batch boundaries.
        self._score_carry = np.empty(0, dtype=np.float64)
        self.events_total = 0
        self.learned_baseline: dict[str, float] | None = None
        self.last_evaluation: WindowEvaluation | None = None
        # Latest event time of the windows this process closed: a window whose first event comes a
        # whole width after it (or the first after a start or restore) covered only part of its width.
        self._previous_window_ts: float | None = None
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
        # Weekly windows are ISO weeks (or start on insights.week_start), as the insight buckets are.
        origin = week_origin(w.time_slide or w.width, self.settings.insights.week_start)
        return EventTimeWindows(
            w.width, w.time_slide, w.allowed_lateness, make_sketch=self._make_sketch, origin=origin
        )

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
        return InsightTracker(
            self.schema, reference, self.settings.resolved_insights(), self.model_version, stride=stride
        )

    @property
    def ready(self) -> bool:
        """True once the model has a reference (loaded or warmed up) and detects drift."""
        return self.reference is not None

    def may_close_window(self, events: int, max_ts: float) -> bool:
        """Whether ``events`` more predictions, the latest at event time ``max_ts``, may close a window
        (or end the warm-up, after which windows start). Never False when one would close: replay
        feeds the predictions between two window closes in one call."""
        return self.windows is None or self.windows.may_close(events, max_ts)

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
        out.triggers += self.insights.observe_batch(batch)  # a segment surge checks at once
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
                self._close(window, now, out, flushed=True)
        return out

    def _close(self, window: Any, now: float, out: MonitorOutput, *, flushed: bool = False) -> None:
        perf = self.performance.metrics()
        if self.schema.task == "binary" and len(self.performance):
            # Positives in the rolling window: the policy needs them for the AUC's standard error.
            codes = self.performance._label_code[: len(self.performance)]
            perf["positives"] = float(np.count_nonzero(codes == 1))
        self.judge(window, perf, self.label_stats(now), out, flushed=flushed)

    def judge(
        self,
        window: ClosedWindow,
        perf: dict[str, float],
        labels: dict[str, float],
        out: MonitorOutput,
        *,
        flushed: bool = False,
    ) -> WindowEvaluation:
        """Evaluate a closed window with the given performance and label statistics, decide, and
        add the evaluation and triggers to ``out`` (the model stage of two-stage aggregation calls
        this with a window merged from its shards' partials)."""
        assert self.reference is not None
        p = self.settings.policy
        # The stream ran through the whole window unless it started, or resumed after a gap, inside
        # it, or stopped inside it (a gap follows, or the replay ended): see window_covered_seconds.
        sk, width = window.sketch, float(window.end - window.start)
        previous_ts, self._previous_window_ts = (
            self._previous_window_ts,
            max(sk.ts_max, self._previous_window_ts if self._previous_window_ts is not None else -math.inf),
        )
        timed = self.settings.window.kind == "time"  # a count window is never partial
        covered = window_covered_seconds(
            window,
            partial_start=timed and (previous_ts is None or sk.ts_min - previous_ts >= width),
            partial_end=timed and (flushed or window.closed_by_ts - sk.ts_max >= width),
            usual_gap=self.reference.longest_gap_seconds or 0.0,
        )
        results = evaluate_window(
            self.schema,
            self.reference,
            window,
            self.settings.detectors,
            p.psi_warning,
            p.psi_alarm,
            covered_seconds=covered,
        )
        ev = WindowEvaluation(
            model_id=self.schema.model_id,
            index=window.index,
            start=float(window.start),
            end=float(window.end),
            events=int(window.sketch.n_events),
            results=tuple(results),
            performance=perf,
            baseline=self._baseline(),
            labels=labels,
            segments={k: dict(v) for k, v in window.sketch.segment_counts.items()},
            covered_seconds=covered,
            model_version=self.model_version,
        )
        self.last_evaluation = ev
        out.evaluations.append(ev)
        assert self.insights is not None
        self.insights.observe_window(window)
        out.triggers += [self.insights.enrich(t, ev.labels) for t in self.policy.decide(ev)]
        return ev

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
        return self.labels.stats(now)

    # -- state --------------------------------------------------------------------------------
    def _reference_state(self) -> dict[str, Any] | None:
        if self.reference is None:
            return None
        if self.reference is self.configured_reference:
            # Static (the configuration's): only its digest, to refuse state of another reference.
            if self._configured_digest is None:
                self._configured_digest = self.reference.digest()
            return {"source": "configured", "digest": self._configured_digest}
        return {"source": "warmed_up", "profile": self.reference.to_state()}

    def to_state(self) -> dict[str, Any]:
        """The whole monitor as a container of :mod:`stream_monitor.core.state_format`.

        A reference passed to the constructor (from the configuration) is stored as its digest
        only; a reference warmed up from live events is state, stored whole (once).
        """
        baseline = self.learned_baseline
        return state_format.tagged(
            "model_monitor",
            _FORMAT,
            model_id=self.schema.model_id,
            events_total=self.events_total,
            learned_baseline=None
            if baseline is None
            else {"names": list(baseline), "values": np.array(list(baseline.values()), dtype=np.float64)},
            reference=self._reference_state(),
            warmup=None if self.warmup is None else self.warmup.to_state(),
            windows=None if self.windows is None else self.windows.to_state(),
            labels=self.labels.to_state(),
            performance=self.performance.to_state(),
            score_drift=self.score_drift.to_state(),
            score_carry=self._score_carry,
            policy=self.policy.to_state(),
            insights=None if self.insights is None else self.insights.to_state(),
        )

    def snapshot(self) -> bytes:
        """The whole monitor as bytes (:meth:`to_state` in the one state format); :meth:`restore`
        with the same schema, settings and configured reference continues exactly."""
        return state_format.encode(self.to_state())

    @classmethod
    @state_format.restoring
    def from_state(
        cls,
        state: StateReader | dict[str, Any],
        schema: ModelSchema,
        settings: ModelSettings | None = None,
        model_version: str | None = None,
        reference: ReferenceProfile | None = None,
    ) -> ModelMonitor:
        """Rebuild a monitor from :meth:`to_state` (see :meth:`restore`)."""
        m = schema.model_id
        r = state if isinstance(state, StateReader) else StateReader(state, f"model {m!r}")
        r.expect("model_monitor", _FORMAT)
        if r.text("model_id") != m:
            raise StateError(f"{r.what}: state of model {r.text('model_id')!r}")
        ref = r.optional_child("reference")
        source = None if ref is None else ref.text("source")
        if reference is not None and source != "configured":
            how = "while warming up a reference" if ref is None else "against a reference warmed up"
            raise StateError(
                f"{r.what}: the state was built {how} from live events, but a reference is configured "
                f"now (digest {reference.digest()}); state of another reference is not restored"
            )
        if ref is None:
            mon = cls(schema, settings, None, model_version)
        elif source == "configured":
            digest = ref.text("digest")
            if reference is None:
                raise StateError(
                    f"{r.what}: the state was built against a reference given to it (configured or "
                    f"published; digest {digest}), and none is there now; state of another reference is "
                    "not restored"
                )
            if reference.digest() != digest:
                raise StateError(
                    f"{r.what}: the state was built against the reference with digest {digest}, the "
                    f"one there now (profile version {reference.version}) has digest {reference.digest()}; "
                    "state of another reference is not restored"
                )
            mon = cls(schema, settings, reference, model_version)
            mon._configured_digest = digest
        elif source == "warmed_up":
            mon = cls(schema, settings, None, model_version)
            mon._use_reference(ReferenceProfile.from_state(ref.child("profile")))
        else:
            raise StateError(f"{r.what}: unknown reference source {source!r}")
        warmup = r.optional_child("warmup")
        if (warmup is None) != (mon.warmup is None):
            raise StateError(f"{r.what}: warm-up state present without warm-up, or missing")
        if warmup is not None:
            mon.warmup = ReferenceWarmup.from_state(warmup, schema)
        windows = r.optional_child("windows")
        insights = r.optional_child("insights")
        if (windows is None) != (mon.reference is None) or (insights is None) != (mon.insights is None):
            raise StateError(f"{r.what}: windows or insights state do not fit the reference")
        if windows is not None and mon.reference is not None:
            kind = CountWindows if mon.settings.window.kind == "count" else EventTimeWindows
            mon.windows = kind.from_state(
                windows, make_sketch=mon._make_sketch, schema=schema, reference=mon.reference
            )
        if insights is not None and mon.reference is not None and mon.insights is not None:
            mon.insights = InsightTracker.from_state(
                insights, schema, mon.reference, mon.insights.settings, model_version
            )
        mon.labels = LabelJoinBuffer.from_state(r.child("labels"))
        mon.performance = RollingPerformance.from_state(r.child("performance"))
        mon.performance.decision_threshold = schema.decision_threshold  # configuration, not state
        mon.score_drift = StreamDriftDetector.from_state(r.child("score_drift"))
        mon.policy.load_state(r.child("policy"))
        mon._score_carry = r.array("score_carry", np.float64, ndim=1)
        mon.events_total = r.integer("events_total", min_value=0)
        baseline = r.optional_child("learned_baseline")
        if baseline is not None:
            names = baseline.strings("names")
            values = baseline.array("values", np.float64, shape=(len(names),))
            mon.learned_baseline = dict(zip(names, values.tolist(), strict=True))
        return mon

    @classmethod
    def restore(
        cls,
        data: bytes,
        schema: ModelSchema,
        settings: ModelSettings | None = None,
        model_version: str | None = None,
        reference: ReferenceProfile | None = None,
    ) -> ModelMonitor:
        """Rebuild a monitor from :meth:`snapshot` bytes, given the configured ``reference`` (if any).

        :class:`StateError` when the bytes are not a monitor's state, or when the state was built
        against another reference than the configured one (its digest differs, or one of the two
        was warmed up from live events).
        """
        return cls.from_state(state_format.decode(data), schema, settings, model_version, reference)
