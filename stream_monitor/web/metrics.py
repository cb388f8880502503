"""Prometheus families of the contract, fed from engine outputs (served by :mod:`.server`).

Every family takes an injected ``registry`` so tests use a fresh ``CollectorRegistry``. Label values
come only from the configuration (models, features, fixed metric names) and the fixed reason codes:
an event naming a model or feature we do not know adds no series. Gauges are set once per closed
window, from cached children, never per event.

A model's judged series carry its ``version`` (right after ``model``): the model version a window was
judged for, ``""`` when events and configuration name none — which Prometheus stores as no label at
all, so an unversioned deployment has the series it always had. Active versions are listed by
``stream_monitor_model_version_info``; a version's judged series go when it retires.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream_monitor.core.detectors.base import DetectorResult
from stream_monitor.core.detectors.table import PREDICTION, MetricSpec, spec_of, window_detectors
from stream_monitor.core.engine import EngineOutput
from stream_monitor.core.events import Rejection
from stream_monitor.core.policy import WindowEvaluation
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.triggers import SEVERITIES, TRIGGER_KINDS, ReferenceUsed

#: Outcomes of a record read from the reference registry (kafka/registry.py): used, withdrawn, or refused.
REFERENCE_OUTCOMES = (
    "loaded",
    "tombstone",
    "bad_record",
    "bad_signature",
    "unsigned",
    "schema_mismatch",
    "unknown_model",
)

PERFORMANCE_METRICS = (
    "auc",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "macro_f1",
    "mae",
    "rmse",
    "mean_error",
)


def bounded_reason(reason: str, schemas: Mapping[str, ModelSchema]) -> str:
    """Map a rejection reason to a label value from a bounded set (features come from the config).

    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> s = {"m": ModelSchema("m", "binary", (FeatureSpec("age", "numeric"),))}
    >>> bounded_reason("bad_type:features.age", s), bounded_reason("bad_type:features.zzz", s)
    ('bad_type:features.age', 'bad_type:features.other')
    """
    head, _, field = reason.partition(":")
    if not field.startswith("features."):
        return reason
    name = field.removeprefix("features.")
    known = any(s.feature(name) is not None for s in schemas.values())
    return reason if known else f"{head}:features.other"


def _versioned(labels: tuple[str, ...]) -> list[str]:
    """A judged family's labels with ``version`` right after ``model``."""
    return [labels[0], "version", *labels[1:]] if labels and labels[0] == "model" else list(labels)


def _exported(r: DetectorResult, metric: MetricSpec) -> float | None:
    """What ``metric`` exports of a result: its value, its p-value (None: not a test) or its flag."""
    if metric.field == "p_value":
        return r.p_value
    if metric.field == "drift":
        return float(r.drift)
    return r.value


class ServiceMetrics:
    """All stream-monitor metric families, registered on ``registry``."""

    def __init__(
        self,
        schemas: Mapping[str, ModelSchema],
        registry: CollectorRegistry | None = None,
        versions: Mapping[str, str | None] | None = None,
    ) -> None:
        self.schemas = dict(schemas)
        # The configured version of each model: its series exist (flags at 0) before any event.
        self.versions = {m: (versions or {}).get(m) for m in schemas}
        # (model, version label) of the versions whose judged series this member exports.
        self.exported_versions: set[tuple[str, str]] = set()
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        p = "stream_monitor_"
        self.events = Counter(
            p + "events_processed", "Valid events processed", ["model", "stream"], registry=r
        )
        self.rejected = Counter(
            p + "events_rejected", "Messages rejected to the dead-letter topic", ["reason"], registry=r
        )
        self.unknown_features = Counter(
            p + "unknown_features", "Event features not in the model's schema", ["model"], registry=r
        )
        self.windows = Counter(p + "windows_closed", "Windows evaluated", ["model", "version"], registry=r)
        self.late = Counter(
            p + "late_events",
            "Events beyond the allowed lateness of event-time windows",
            ["model"],
            registry=r,
        )
        # One family per metric of the window detectors, as the table declares them.
        self.detector_gauges: dict[str, Gauge] = {
            metric.name: Gauge(metric.name, metric.help, _versioned(metric.labels), registry=r)
            for spec in window_detectors()
            for metric in spec.metrics
        }
        self.drift = Gauge(
            p + "feature_drift_detected",
            "1 when a drift detector fired on the feature",
            ["model", "version", "feature"],
            registry=r,
        )
        self.stream_drift = Counter(
            p + "stream_drift_detections",
            "Streaming detector detections",
            ["model", "detector", "signal"],
            registry=r,
        )
        self.incident = Gauge(
            p + "integrity_incident",
            "1 when the last window is an integrity incident",
            ["model", "version"],
            registry=r,
        )
        self.performance = Gauge(
            p + "performance",
            "Rolling performance over the last joined labels",
            ["model", "version", "metric"],
            registry=r,
        )
        self.baseline = Gauge(
            p + "performance_baseline",
            "Reference (training) performance",
            ["model", "version", "metric"],
            registry=r,
        )
        self.labels_joined = Counter(
            p + "labels_joined", "Labels joined to predictions", ["model"], registry=r
        )
        self.labels_pending = Gauge(
            p + "labels_pending", "Predictions waiting for a label", ["model"], registry=r
        )
        self.labels_expired = Gauge(
            p + "labels_expired", "Predictions expired before their label (total)", ["model"], registry=r
        )
        self.labels_orphan = Gauge(
            p + "labels_orphan", "Labels without a pending prediction (total)", ["model"], registry=r
        )
        self.label_delay = Gauge(
            p + "label_delay_seconds", "Median label delay of recent joins", ["model", "version"], registry=r
        )
        self.label_rate = Gauge(
            p + "label_arrival_rate", "Labels joined per second (recent)", ["model", "version"], registry=r
        )
        self.triggers = Counter(
            p + "triggers_emitted", "Retrain triggers emitted", ["model", "kind", "severity"], registry=r
        )
        self.last_trigger = Gauge(
            p + "last_trigger_timestamp_seconds",
            "Event time of the last trigger",
            ["model", "version"],
            registry=r,
        )
        self.ready = Gauge(
            p + "model_ready", "1 when the model has a reference and is detecting", ["model"], registry=r
        )
        self.latency = Histogram(
            p + "processing_latency_seconds",
            "Time to process one consumed batch",
            ["stream"],
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.lag = Gauge(
            p + "consumer_lag",
            "Messages behind the partition's high watermark",
            ["topic", "partition"],
            registry=r,
        )
        self.checkpoint_age = Gauge(
            p + "checkpoint_age_seconds", "Seconds since the last state checkpoint", registry=r
        )
        self.recovery = Gauge(p + "state_recovery_seconds", "Time the last state restore took", registry=r)
        self.kafka_errors = Counter(p + "kafka_errors", "Kafka client errors", ["kind"], registry=r)
        self.service_ready = Gauge(
            p + "ready", "1 when assigned, restored and lag below the bound", registry=r
        )
        # Static: lets alert rules and dashboards select key features by a join, not a hand-kept list.
        self.feature_info = Gauge(
            p + "feature_info",
            "1 for each configured feature; labels give its kind and whether it is a key feature",
            ["model", "feature", "kind", "key"],
            registry=r,
        )
        self.version_info = Gauge(
            p + "model_version_info",
            "1 for each active version of a model; labels say what it is judged against",
            ["model", "version", "reference_source", "reference_version"],
            registry=r,
        )
        self.version_changes = Counter(
            p + "model_version_changes",
            "New model versions started (model_version_changed records emitted)",
            ["model"],
            registry=r,
        )
        self.versions_retired = Counter(
            p + "model_versions_retired",
            "Model versions retired (their series removed)",
            ["model"],
            registry=r,
        )
        self.reference_records = Counter(
            p + "reference_records",
            "Records read from the reference registry topic, by outcome",
            ["outcome"],
            registry=r,
        )
        for outcome in REFERENCE_OUTCOMES:
            self.reference_records.labels(outcome)
        for m, s in self.schemas.items():
            for stream in ("predictions", "labels"):
                self.events.labels(m, stream)
            self.triggers_init(m)
            self.version_changes.labels(m)
            self.versions_retired.labels(m)
            self.adopt_version(m, self.versions[m])
            self.labels_joined.labels(m)
            self.late.labels(m)
            for spec in s.features:
                self.feature_info.labels(m, spec.name, spec.kind, "true" if spec.key else "false").set(1)

    def _flags_init(self, model: str, version: str, schema: ModelSchema) -> None:
        """Detector flags (``field="drift"`` metrics) start at 0, so "no drift" is a value, not a gap."""
        for spec in window_detectors():
            for metric in spec.metrics:
                if metric.field != "drift":
                    continue
                gauge = self.detector_gauges[metric.name]
                if metric.scope != "feature":
                    gauge.labels(model, version).set(0)
                    continue
                for f in schema.features:
                    if f.kind in spec.applies_to:
                        gauge.labels(model, version, f.name).set(0)

    def _model_gauges(self) -> list[Gauge | Counter]:
        """The per-model gauges that say what the model's windows showed (set where it is judged)."""
        return [
            *self.detector_gauges.values(),
            self.drift,
            self.incident,
            self.performance,
            self.baseline,
            self.label_delay,
            self.label_rate,
            self.last_trigger,
            self.windows,
        ]

    def forget_models(self, models: Iterable[str]) -> None:
        """Remove the judged per-model gauges of ``models``: in two-stage aggregation only the member
        that owns a model's stage exports them (a member that loses the stage stops, the new owner
        starts), so each series exists once in the group. Counters stay: they sum over members."""
        gone = set(models)
        self._remove(lambda key: key[0] in gone)
        self.exported_versions = {mv for mv in self.exported_versions if mv[0] not in gone}

    def _remove(self, match: Callable[[Sequence[str]], bool]) -> None:
        for family in self._model_gauges():
            for labels in [key for key in list(family._metrics) if key and match(key)]:
                with contextlib.suppress(KeyError):
                    family.remove(*labels)

    def adopt_model(self, model: str) -> None:
        """Start the judged gauges of a model whose stage this member now owns (flags at 0)."""
        if model in self.schemas:
            self.adopt_version(model, self.versions[model])

    def adopt_version(self, model: str, version: str | None) -> None:
        """Start the judged gauges of a model version (flags at 0)."""
        schema = self.schemas.get(model)
        v = version or ""
        if schema is None or (model, v) in self.exported_versions:
            return
        self.exported_versions.add((model, v))
        for f in schema.numeric_names + schema.categorical_names:
            self.drift.labels(model, v, f).set(0)
        self._flags_init(model, v, schema)
        self.incident.labels(model, v).set(0)
        self.windows.labels(model, v)

    def set_versions(self, active: Mapping[str, Mapping[str | None, ReferenceUsed]]) -> None:
        """The active versions of each model (over all of this member's engines), after a batch:
        their info series, their judged series started; a version no longer active anywhere here
        loses every judged series (it retired)."""
        wanted: set[tuple[str, str, str, str]] = set()
        for model, versions in active.items():
            for version, used in versions.items():
                wanted.add((model, version or "", used.source, used.version or ""))
                self.adopt_version(model, version)
        for key in list(self.version_info._metrics):
            if key not in wanted:
                with contextlib.suppress(KeyError):
                    self.version_info.remove(*key)
        for key in wanted:
            self.version_info.labels(*key).set(1)
        live = {(m, v) for m, v, _, _ in wanted}
        gone = {mv for mv in self.exported_versions if mv[0] in active and mv not in live}
        if gone:
            self._remove(lambda key: len(key) > 1 and (key[0], key[1]) in gone)
            self.exported_versions -= gone

    def triggers_init(self, model: str) -> None:
        for kind in TRIGGER_KINDS:
            for sev in SEVERITIES:
                self.triggers.labels(model, kind, sev)

    def observe(self, out: EngineOutput, stream: str) -> None:
        """Count a batch's events, rejections and triggers; set gauges from its closed windows."""
        for r in out.rejections:
            self.observe_rejection(r)
        for m, n in out.unknown_features.items():
            self.unknown_features.labels(m).inc(n)
        for m, o in out.per_model.items():
            if o.events:
                self.events.labels(m, stream).inc(o.events)
            if o.labels_joined:
                self.labels_joined.labels(m).inc(o.labels_joined)
            if o.late_events:
                self.late.labels(m).inc(o.late_events)
            if o.score_drift:
                self.stream_drift.labels(m, "adwin", "prediction_score").inc()
            if o.error_drift:
                self.stream_drift.labels(m, "adwin", "error").inc()
            for ev in o.evaluations:
                self.observe_window(ev)
            for t in o.triggers:
                self.triggers.labels(m, t.kind, t.severity).inc()
                self.last_trigger.labels(m, t.model_version or "").set(t.event_time)
        for change in out.changes:
            self.version_changes.labels(change.model_id).inc()
        for m, _ in out.retired:
            self.versions_retired.labels(m).inc()

    def set_label_buffers(self, totals: Mapping[str, Mapping[str, int]]) -> None:
        """Set the label-join gauges: per model, the counts summed over every engine of this process.

        Called after every batch (not only when a window closes), with the sums over all of the
        member's partition-tasks, so the gauges equal the sums of the ``labels`` counts in ``/state``.
        """
        for m, counts in totals.items():
            self.labels_pending.labels(m).set(counts.get("pending", 0))
            self.labels_expired.labels(m).set(counts.get("expired", 0))
            self.labels_orphan.labels(m).set(counts.get("orphan", 0))

    def rejections_by_reason(self) -> dict[str, float]:
        """Messages rejected so far, by reason (for the status page; the counter is the truth)."""
        return {
            sample.labels["reason"]: sample.value
            for metric in self.rejected.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        }

    def observe_rejection(self, r: Rejection) -> None:
        self.rejected.labels(bounded_reason(r.reason, self.schemas)).inc()

    def observe_window(self, ev: WindowEvaluation) -> None:
        m, v = ev.model_id, ev.model_version or ""
        self.windows.labels(m, v).inc()
        flags: dict[str, bool] = {}
        for r in ev.results:
            spec = spec_of(r.detector)
            if spec is None:
                continue
            f = r.feature
            scope = "prediction" if f == PREDICTION else "model" if f is None else "feature"
            for metric in spec.metrics:
                if metric.scope != scope:
                    continue
                value = _exported(r, metric)
                if value is None:
                    continue
                gauge = self.detector_gauges[metric.name]
                (gauge.labels(m, v, f) if f is not None and scope == "feature" else gauge.labels(m, v)).set(
                    value
                )
            if f is not None and scope == "feature" and spec.flags_drift:
                flags[f] = flags.get(f, False) or r.drift
        for f, flag in flags.items():
            self.drift.labels(m, v, f).set(float(flag))
        self.incident.labels(m, v).set(float(ev.integrity_incident))
        for name, value in ev.performance.items():
            if name in PERFORMANCE_METRICS and not math.isnan(value):
                self.performance.labels(m, v, name).set(value)
        for name, value in ev.baseline.items():
            if name in PERFORMANCE_METRICS and not math.isnan(value):
                self.baseline.labels(m, v, name).set(value)
        lab = ev.labels
        if lab:
            self.label_rate.labels(m, v).set(lab.get("arrival_rate", 0.0))
            if not math.isnan(lab.get("delay_p50", math.nan)):
                self.label_delay.labels(m, v).set(lab["delay_p50"])
