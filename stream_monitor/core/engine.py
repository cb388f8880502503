"""The engine every front end shares: raw message batches in, per-model monitors, decisions out.

``replay``, ``demo`` and the Kafka service all feed this same object, so what is tested on files is
what runs on the broker. Pure: no I/O, time is a parameter.

>>> import orjson
>>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
>>> from stream_monitor.core.settings import ModelSettings
>>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))
>>> engine = MonitoringEngine({"m": schema}, {"m": ModelSettings(warmup_events=10)})
>>> raws = [orjson.dumps({"event_id": str(i), "model_id": "m", "ts": i, "features": {"x": i},
...                      "prediction": 1.0}) for i in range(3)] + [b"{oops", b'{"model_id": "zz"}']
>>> out = engine.process_predictions(raws, now=0.0)
>>> out.events, sorted(r.reason for r in out.rejections)
(3, ['malformed_json', 'missing_field:event_id'])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_monitor.core import state_format
from stream_monitor.core.events import (
    MAX_EVENT_ID_LENGTH,
    MAX_MESSAGE_BYTES,
    PredictionBatch,
    RawValue,
    Rejection,
    decode_labels,
    decode_predictions,
)
from stream_monitor.core.model_stage import ModelStage
from stream_monitor.core.monitor import ModelMonitor, MonitorOutput
from stream_monitor.core.partials import ShardMonitor, ShardReport
from stream_monitor.core.reference import ReferenceProfile
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import AggregationSettings, EventTimeSettings, ModelSettings
from stream_monitor.core.state_format import StateReader
from stream_monitor.core.triggers import ModelVersionChanged, Trigger
from stream_monitor.core.versions import VersionedModel, VersionOutput
from stream_monitor.core.windows import EventTimeWindows, take_batch, take_labels

_FORMAT = 2  # 1 was JSON with every monitor's snapshot in base64
#: Dead-letter reason of an event whose ``ts`` lies beyond the bounds of :class:`EventTimeSettings`.
TS_OUT_OF_BOUNDS = "ts_out_of_bounds"
#: Dead-letter reason of an event of a new model version while every active version still serves
#: (``versions.max_active``, ``versions.displace_after_seconds``: core/versions.py).
TOO_MANY_VERSIONS = "too_many_versions"


@dataclass
class EngineOutput:
    """Per-model monitor outputs of one batch, plus the batch's rejections (for the dead-letter topic)."""

    per_model: dict[str, MonitorOutput] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    unknown_features: dict[str, int] = field(default_factory=dict)

    @property
    def changes(self) -> list[ModelVersionChanged]:
        """Lifecycle records of this batch: versions that started (core/versions.py)."""
        return [c for o in self.per_model.values() if isinstance(o, VersionOutput) for c in o.changes]

    @property
    def retired(self) -> list[tuple[str, str | None]]:
        """(model, version) of the versions this batch retired."""
        return [
            (m, v) for m, o in self.per_model.items() if isinstance(o, VersionOutput) for v, _ in o.retired
        ]

    @property
    def events(self) -> int:
        return sum(o.events for o in self.per_model.values())

    @property
    def triggers(self) -> list[Trigger]:
        return [t for o in self.per_model.values() for t in o.triggers]

    @property
    def reports(self) -> list[ShardReport]:
        """Two-stage aggregation: the shard reports of this batch, for the model stage."""
        return [r for o in self.per_model.values() for r in o.reports]


class MonitoringEngine:
    """Routes decoded batches to one :class:`ModelMonitor` per configured model."""

    def __init__(
        self,
        schemas: Mapping[str, ModelSchema],
        settings: Mapping[str, ModelSettings] | None = None,
        references: Mapping[str, ReferenceProfile | None] | None = None,
        versions: Mapping[str, str | None] | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        event_time: EventTimeSettings | None = None,
        max_event_id_length: int = MAX_EVENT_ID_LENGTH,
        aggregation: AggregationSettings | None = None,
        shard: int = 0,
        shards: int = 1,
        registry: Mapping[str, Mapping[str, ReferenceProfile]] | None = None,
    ) -> None:
        # Two-stage aggregation: this engine is shard ``shard`` (an input partition) and its monitors
        # summarise windows into partials for the model stage (core/partials.py), judging nothing.
        self.aggregation = aggregation or AggregationSettings()
        self.shard = shard
        self.shards = shards
        self.two_stage = self.aggregation.mode == "two_stage"
        self.schemas = dict(schemas)
        self.event_time = event_time or EventTimeSettings()
        self.settings = {m: (settings or {}).get(m) or ModelSettings() for m in schemas}
        self.versions = dict(versions or {})
        self.max_message_bytes = max_message_bytes
        self.max_event_id_length = max_event_id_length
        # Latest event time seen on the predictions stream (replay drives label TTL with it).
        self.watermark = float("-inf")
        # The configured references (static): a restored monitor must have been built against them.
        self.references = {m: r for m, r in (references or {}).items() if r is not None}
        # The reference registry's view: model -> version -> published reference (kept current by
        # publish_reference; the dicts are shared with every version of the model).
        self.registry: dict[str, dict[str, ReferenceProfile]] = {
            m: dict((registry or {}).get(m, {})) for m in schemas
        }
        # Per model: its active versions (per_partition), or its shard monitor (two_stage, where the
        # model stage judges, and events' versions are not told apart: see the README).
        self.models: dict[str, VersionedModel] = {}
        self.shards_of: dict[str, ShardMonitor] = {}
        for m in schemas:
            self._new_monitor(m)

    @property
    def monitors(self) -> dict[str, Monitor]:
        """Per model, its monitor: a shard's (two-stage), else the newest active version's."""
        if self.two_stage:
            return dict(self.shards_of)
        return {m: model.current for m, model in self.models.items() if model.current is not None}

    @property
    def judging_monitors(self) -> dict[str, ModelMonitor]:
        """The monitors that judge (evaluations, policy, insights) by model, the newest active version
        of each: none on a shard of two-stage aggregation, whose model stage judges elsewhere."""
        return {m: mon for m, mon in self.monitors.items() if isinstance(mon, ModelMonitor)}

    def version_monitors(self) -> dict[tuple[str, str | None], ModelMonitor]:
        """Every active version's monitor, by (model, version)."""
        return {
            (m, entry.version): entry.monitor
            for m, model in self.models.items()
            for entry in model.active.values()
        }

    def version_summary(self) -> dict[str, list[dict[str, Any]]]:
        """Per model, its active versions (oldest start first): events, first and last event time,
        and what each is judged against (``/state``)."""
        return {
            m: [
                {
                    "version": e.version,
                    "reference": {"source": e.reference.source, "version": e.reference.version},
                    "events": e.monitor.events_total,
                    "first_ts": e.first_ts if math.isfinite(e.first_ts) else None,
                    "last_ts": e.last_ts if math.isfinite(e.last_ts) else None,
                }
                for e in model.active.values()
            ]
            for m, model in self.models.items()
        }

    def may_close_window(self, model_id: str, events: int, max_ts: float) -> bool:
        """Whether ``events`` more predictions of a model could close a window (replay cuts there)."""
        if self.two_stage:
            return self.shards_of[model_id].may_close_window(events, max_ts)
        return self.models[model_id].may_close_window(events, max_ts)

    def publish_reference(self, model_id: str, version: str, reference: ReferenceProfile) -> bool:
        """A reference published to the registry for a model version: used by that version from now
        on (if it is active, it starts again on it: core/versions.py). True when an active version
        switched. Ignored for an unknown model or in two-stage mode (judged against its configured
        reference there)."""
        if model_id not in self.registry:
            return False
        self.registry[model_id][version] = reference
        model = self.models.get(model_id)
        return model is not None and model.use_published(version, reference)

    def pane_grids(self) -> list[tuple[float, float]]:
        """``(slide, origin)`` of every model's event-time panes on a two-stage shard (replay cuts
        its input at their boundaries: offline/replay.py)."""
        grids = {
            (mon.windows.slide, mon.windows.origin)
            for mon in self.monitors.values()
            if isinstance(mon, ShardMonitor) and isinstance(mon.windows, EventTimeWindows)
        }
        return sorted(grids)

    def withdraw_reference(self, model_id: str, version: str) -> list[str | None]:
        """The registry withdrew ``version``'s reference: the active versions judged against it start
        again on what they resolve to now (core/versions.py). The versions that switched."""
        if model_id not in self.registry:
            return []
        self.registry[model_id].pop(version, None)
        model = self.models.get(model_id)
        return [] if model is None else model.withdrawn(version)

    def _new_monitor(self, model_id: str) -> None:
        schema, settings = self.schemas[model_id], self.settings[model_id]
        if self.two_stage:
            reference = self.references.get(model_id)
            if reference is None:  # config.py refuses this; a direct caller gets the same reason
                raise ValueError(f"model {model_id!r}: two-stage aggregation needs a configured reference")
            self.shards_of[model_id] = ShardMonitor(schema, settings, reference, self.shard, self.shards)
            return
        self.models[model_id] = VersionedModel(
            schema,
            settings,
            self.references.get(model_id),
            self.versions.get(model_id),
            self.registry[model_id],
        )

    def _monitor_of(self, model_id: str) -> VersionedModel | ShardMonitor:
        return self.shards_of[model_id] if self.two_stage else self.models[model_id]

    def process_predictions(
        self, raws: Sequence[bytes | None], now: float, wall_now: float | None = None
    ) -> EngineOutput:
        """Decode a batch of prediction messages and feed each model's monitor.

        ``wall_now`` (the wall clock, passed in) bounds event time: see :meth:`bound_predictions`.
        """
        batches, rejections = decode_predictions(
            raws, self.schemas, self.max_message_bytes, max_event_id_length=self.max_event_id_length
        )
        batches, out_of_bounds = self.bound_predictions(batches, raws, wall_now)
        out = self.process_decoded(batches, now)
        overflow = [Rejection(r.index, r.reason, _raw_bytes(raws[r.index])) for r in out.rejections]
        out.rejections = _merged(rejections, _merged(out_of_bounds, overflow))
        return out

    def max_event_time(self, wall_now: float | None) -> float:
        """The latest event time accepted now: wall clock + ``max_future_seconds``, and (when set)
        the watermark + ``max_ahead_seconds``; ``inf`` when neither applies."""
        bound = math.inf
        if wall_now is not None:
            bound = wall_now + self.event_time.max_future_seconds
        ahead = self.event_time.max_ahead_seconds
        if ahead is not None and math.isfinite(self.watermark):
            bound = min(bound, self.watermark + ahead)
        return bound

    def bound_predictions(
        self, batches: Mapping[str, PredictionBatch], raws: Sequence[RawValue], wall_now: float | None
    ) -> tuple[dict[str, PredictionBatch], list[Rejection]]:
        """Move events stamped beyond :meth:`max_event_time` out of ``batches`` into rejections.

        Such an event never reaches a monitor, so it never moves the clock (the watermark), the
        windows or the label buffer. ``raws`` are the batch's inputs (``Rejection.index`` points there).
        """
        bound = self.max_event_time(wall_now)
        kept: dict[str, PredictionBatch] = {}
        rejections: list[Rejection] = []
        for model_id, batch in batches.items():
            beyond = batch.ts > bound
            if not beyond.any():
                kept[model_id] = batch
                continue
            for index in batch.index[beyond].tolist():
                rejections.append(Rejection(index, TS_OUT_OF_BOUNDS, _raw_bytes(raws[index])))
            rest = np.flatnonzero(~beyond)
            if rest.size:
                kept[model_id] = take_batch(batch, rest)
        return kept, rejections

    def process_decoded(self, batches: Mapping[str, PredictionBatch], now: float) -> EngineOutput:
        """Feed already decoded per-model prediction batches (``replay`` cuts batches by event time)."""
        out = EngineOutput()
        for model_id, batch in batches.items():
            if len(batch):
                self.watermark = max(self.watermark, float(batch.ts.max()))
            done = out.per_model[model_id] = self._monitor_of(model_id).process_predictions(batch, now)
            if isinstance(done, VersionOutput) and done.overflow:
                out.rejections = _merged(
                    out.rejections, [Rejection(i, TOO_MANY_VERSIONS, b"") for i in sorted(done.overflow)]
                )
            if batch.unknown_features:
                out.unknown_features[model_id] = batch.unknown_features
        if self.two_stage:
            for model_id, monitor in self.shards_of.items():
                idle = monitor.idle_report(now)
                if idle is not None:
                    out.per_model.setdefault(model_id, MonitorOutput()).reports.append(idle)
        return out

    def process_labels(
        self, raws: Sequence[bytes | None], now: float, wall_now: float | None = None
    ) -> EngineOutput:
        """Decode a batch of label messages and join them to pending predictions.

        Labels stamped more than ``max_future_seconds`` past ``wall_now`` are rejected as
        ``ts_out_of_bounds`` (their time feeds the label-delay statistics).
        """
        batches, rejections = decode_labels(
            raws, self.schemas, self.max_message_bytes, max_event_id_length=self.max_event_id_length
        )
        out_of_bounds: list[Rejection] = []
        if wall_now is not None:
            bound = wall_now + self.event_time.max_future_seconds
            for model_id, batch in list(batches.items()):
                beyond = batch.ts > bound
                if beyond.any():
                    for index in batch.index[beyond].tolist():
                        out_of_bounds.append(Rejection(index, TS_OUT_OF_BOUNDS, _raw_bytes(raws[index])))
                    batches[model_id] = take_labels(batch, np.flatnonzero(~beyond))
        out = EngineOutput(rejections=_merged(rejections, out_of_bounds))
        for model_id, batch in batches.items():
            if len(batch):
                out.per_model[model_id] = self._monitor_of(model_id).process_labels(batch, now)
        return out

    def label_buffers(self) -> dict[str, dict[str, int]]:
        """Per model, the label join's counts: pending predictions, expired, orphan labels, joined
        (over all its versions, retired ones included)."""
        counts = {model_id: model.label_counts() for model_id, model in self.models.items()}
        for model_id, mon in self.shards_of.items():
            counts[model_id] = {
                "pending": len(mon.labels),
                "expired": int(mon.labels.expired),
                "orphan": int(mon.labels.orphan_labels),
                "joined": int(mon.labels.joined),
            }
        return counts

    def flush(self, now: float) -> EngineOutput:
        """Close all open windows (end of a finite replay)."""
        return EngineOutput(per_model={m: self._monitor_of(m).flush(now) for m in self.schemas})

    def to_state(self) -> dict[str, Any]:
        """All monitors' state, and the clock, as one container of :mod:`stream_monitor.core.state_format`."""
        return state_format.tagged(
            "engine",
            _FORMAT,
            # The clock of label TTLs after a restore: without it, labels joined before the first
            # new prediction batch would see an earlier "now" than the uninterrupted run.
            watermark=np.array([self.watermark], dtype=np.float64),
            monitors={m: self._monitor_of(m).to_state() for m in self.schemas},
        )

    def snapshot(self) -> bytes:
        """All monitors' state as one blob (:meth:`to_state` in the one state format)."""
        return state_format.encode(self.to_state())

    @state_format.restoring
    def restore(self, data: bytes) -> None:
        """Replace the monitors' state with a snapshot; models not in it keep a fresh state.

        All or nothing: on :class:`StateError` (bytes that are not an engine's state, a monitor built
        against another reference than the configured one) the engine is left as it was.
        """
        r = StateReader.of(state_format.decode(data), "engine", "engine", _FORMAT)
        (watermark,) = r.array("watermark", np.float64, shape=(1,)).tolist()
        monitors = r.child("monitors")
        restored = {
            m: self._restore_monitor(m, StateReader(monitors.child(m).parts, f"model {m!r}"))
            for m in monitors.parts
            if m in self.schemas
        }
        self.watermark = watermark
        for model_id, monitor in restored.items():
            if isinstance(monitor, ShardMonitor):
                self.shards_of[model_id] = monitor
            else:
                self.models[model_id] = monitor

    def _restore_monitor(self, model_id: str, r: StateReader) -> VersionedModel | ShardMonitor:
        schema, settings, reference = (
            self.schemas[model_id],
            self.settings[model_id],
            self.references.get(model_id),
        )
        if self.two_stage:
            assert reference is not None
            return ShardMonitor.from_state(r, schema, settings, reference, self.shard, self.shards)
        return VersionedModel.from_state(
            r, schema, settings, reference, self.versions.get(model_id), self.registry[model_id]
        )


#: What an engine holds per model: a monitor that judges, or a shard's share (two-stage aggregation).
Monitor = ModelMonitor | ShardMonitor


class InProcessTwoStage(MonitoringEngine):
    """Both stages of two-stage aggregation in one process (``replay`` and ``demo`` of a two-stage
    configuration): one shard whose reports go straight to a model stage, so a file replay makes the
    decisions a consumer group makes on Kafka — the oracle of the two-stage tests."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stage = ModelStage(self.schemas, self.settings, self.references, self.versions, self.aggregation)

    @property
    def judging_monitors(self) -> dict[str, ModelMonitor]:
        """The model stage's monitors (a model appears once its first shard report arrived)."""
        return self.stage.monitors

    def _judged(self, out: EngineOutput) -> EngineOutput:
        reports = out.reports
        if not reports:
            return out
        for model_id, judged in self.stage.process(reports, wall_now=None).items():
            mine = out.per_model.setdefault(model_id, MonitorOutput())
            mine.evaluations += judged.evaluations
            mine.triggers += judged.triggers
            mine.score_drift |= judged.score_drift
            mine.error_drift |= judged.error_drift
        return out

    def process_decoded(self, batches: Mapping[str, PredictionBatch], now: float) -> EngineOutput:
        return self._judged(super().process_decoded(batches, now))

    def process_labels(
        self, raws: Sequence[bytes | None], now: float, wall_now: float | None = None
    ) -> EngineOutput:
        return self._judged(super().process_labels(raws, now, wall_now))

    def flush(self, now: float) -> EngineOutput:
        return self._judged(super().flush(now))


def _raw_bytes(value: RawValue) -> bytes:
    return b"" if value is None else bytes(value)


def _merged(first: list[Rejection], second: list[Rejection]) -> list[Rejection]:
    """Two rejection lists as one, in input order (the decoder's contract)."""
    if not second:
        return first
    return sorted(first + second, key=lambda rejection: rejection.index)
