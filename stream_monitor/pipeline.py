"""The engine every front end shares: raw message batches in, per-model monitors, decisions out.

``replay``, ``demo`` and the Kafka service all feed this same object, so what is tested on files is
what runs on the broker. Pure: no I/O, time is a parameter.

>>> import orjson
>>> from stream_monitor.schema import FeatureSpec, ModelSchema
>>> from stream_monitor.settings import ModelSettings
>>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))
>>> engine = MonitoringEngine({"m": schema}, {"m": ModelSettings(warmup_events=10)})
>>> raws = [orjson.dumps({"event_id": str(i), "model_id": "m", "ts": i, "features": {"x": i},
...                      "prediction": 1.0}) for i in range(3)] + [b"{oops", b'{"model_id": "zz"}']
>>> out = engine.process_predictions(raws, now=0.0)
>>> out.events, sorted(r.reason for r in out.rejections)
(3, ['malformed_json', 'missing_field:event_id'])
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream_monitor.errors import StateError
from stream_monitor.events import PredictionBatch, Rejection, decode_labels, decode_predictions
from stream_monitor.monitor import ModelMonitor, MonitorOutput
from stream_monitor.reference import ReferenceProfile
from stream_monitor.schema import ModelSchema
from stream_monitor.settings import ModelSettings

_FORMAT = 1


@dataclass
class EngineOutput:
    """Per-model monitor outputs of one batch, plus the batch's rejections (for the dead-letter topic)."""

    per_model: dict[str, MonitorOutput] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    unknown_features: dict[str, int] = field(default_factory=dict)

    @property
    def events(self) -> int:
        return sum(o.events for o in self.per_model.values())

    @property
    def triggers(self) -> list[dict[str, Any]]:
        return [t for o in self.per_model.values() for t in o.triggers]


class MonitoringEngine:
    """Routes decoded batches to one :class:`ModelMonitor` per configured model."""

    def __init__(
        self,
        schemas: Mapping[str, ModelSchema],
        settings: Mapping[str, ModelSettings] | None = None,
        references: Mapping[str, ReferenceProfile | None] | None = None,
        versions: Mapping[str, str | None] | None = None,
        max_message_bytes: int = 1_000_000,
    ) -> None:
        self.schemas = dict(schemas)
        self.settings = {m: (settings or {}).get(m) or ModelSettings() for m in schemas}
        self.versions = dict(versions or {})
        self.max_message_bytes = max_message_bytes
        # Latest event time seen on the predictions stream (replay drives label TTL with it).
        self.watermark = float("-inf")
        refs = references or {}
        self.monitors = {
            m: ModelMonitor(s, self.settings[m], refs.get(m), self.versions.get(m))
            for m, s in schemas.items()
        }

    def process_predictions(self, raws: Sequence[bytes | None], now: float) -> EngineOutput:
        """Decode a batch of prediction messages and feed each model's monitor."""
        batches, rejections = decode_predictions(raws, self.schemas, self.max_message_bytes)
        out = self.process_decoded(batches, now)
        out.rejections = rejections
        return out

    def process_decoded(self, batches: Mapping[str, PredictionBatch], now: float) -> EngineOutput:
        """Feed already decoded per-model prediction batches (``replay`` cuts batches by event time)."""
        out = EngineOutput()
        for model_id, batch in batches.items():
            if len(batch):
                self.watermark = max(self.watermark, float(batch.ts.max()))
            out.per_model[model_id] = self.monitors[model_id].process_predictions(batch, now)
            if batch.unknown_features:
                out.unknown_features[model_id] = batch.unknown_features
        return out

    def process_labels(self, raws: Sequence[bytes | None], now: float) -> EngineOutput:
        """Decode a batch of label messages and join them to pending predictions."""
        batches, rejections = decode_labels(raws, self.schemas, self.max_message_bytes)
        out = EngineOutput(rejections=rejections)
        for model_id, batch in batches.items():
            out.per_model[model_id] = self.monitors[model_id].process_labels(batch, now)
        return out

    def flush(self, now: float) -> EngineOutput:
        """Close all open windows (end of a finite replay)."""
        return EngineOutput(per_model={m: mon.flush(now) for m, mon in self.monitors.items()})

    def snapshot(self) -> bytes:
        """All monitors' state as one blob."""
        return orjson.dumps(
            {
                "format": _FORMAT,
                # The clock of label TTLs after a restore: without it, labels joined before the first
                # new prediction batch would see an earlier "now" than the uninterrupted run.
                "watermark": None if self.watermark == float("-inf") else self.watermark,
                "monitors": {
                    m: base64.b64encode(mon.snapshot()).decode() for m, mon in self.monitors.items()
                },
            }
        )

    def restore(self, data: bytes) -> None:
        """Replace the monitors' state with a snapshot; models not in it keep a fresh state."""
        try:
            d = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise StateError(f"engine snapshot is not valid JSON: {e}") from e
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            got = d.get("format") if isinstance(d, dict) else None
            raise StateError(f"engine snapshot format {got!r} is not {_FORMAT}")
        wm = d.get("watermark")
        self.watermark = float("-inf") if wm is None else float(wm)
        for m, blob in d["monitors"].items():
            if m in self.schemas:
                self.monitors[m] = ModelMonitor.restore(
                    base64.b64decode(blob), self.schemas[m], self.settings[m], self.versions.get(m)
                )
