"""Replay: the service's pipeline over JSONL files, predictions and labels merged by event time.

Predictions are read in batches (as Kafka would hand them over); after each batch, every label whose
event time is at or before the batch's latest prediction time is joined — labels always follow their
prediction, so this is the order a live stream would have. Event time also drives the label TTL, so a
replay of months of data expires labels as the service would have: labels are joined in time-ordered
chunks spanning at most ``label_span`` seconds and 1/64 of the shortest label TTL, each with the clock
at its last label's event time.
Likewise a prediction batch is fed in slices of at most ``label_span`` seconds of event time, with the
labels due in between: a large batch may span days, and windows closing in it must see the labels a
live stream would have joined by then (the service's batches span well under a second). The default
span, 6 h, is finer than daily windows and coarse enough that small files are not cut into tiny batches.
"""

from __future__ import annotations

import gzip
import heapq
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import orjson

from stream_monitor.core.engine import EngineOutput, MonitoringEngine
from stream_monitor.core.events import PredictionBatch, decode_predictions, parse_ts
from stream_monitor.core.triggers import Trigger
from stream_monitor.core.windows import take_batch


def open_lines(path: str | Path) -> IO[bytes]:
    """Open a JSONL file, gzip-compressed when it ends in ``.gz``."""
    p = Path(path)
    if p.suffix == ".gz":
        return gzip.open(p, "rb")  # type: ignore[return-value]
    return p.open("rb")


def read_batches(lines: Iterable[bytes], batch_size: int) -> Iterator[list[bytes]]:
    """Group non-empty lines into lists of ``batch_size`` raw messages."""
    batch: list[bytes] = []
    for line in lines:
        line = line.rstrip(b"\r\n")
        if not line:
            continue
        batch.append(line)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_triggers(out: IO[bytes], triggers: Iterable[Trigger]) -> None:
    """Write emitted triggers as JSON lines (``replay --out``, ``demo --out``): the service's bytes."""
    for t in triggers:
        out.write(t.to_json_bytes() + b"\n")


def label_heap(lines: Iterable[bytes]) -> list[tuple[float, int, bytes]]:
    """Labels ordered by event time; a line whose ts cannot be read sorts first (the decoder rejects it)."""
    heap: list[tuple[float, int, bytes]] = []
    for i, line in enumerate(lines):
        line = line.rstrip(b"\r\n")
        if not line:
            continue
        try:
            obj = orjson.loads(line)
            ts = parse_ts(obj.get("ts")) if isinstance(obj, dict) else None
        except orjson.JSONDecodeError:
            ts = None
        heapq.heappush(heap, (-float("inf") if ts is None else ts, i, line))
    return heap


def time_slices(batches: Mapping[str, PredictionBatch], span: float) -> Iterator[dict[str, PredictionBatch]]:
    """Cut per-model batches into consecutive event-time slices ``[k·span, (k+1)·span)``, in order.

    >>> from stream_monitor.core.events import decode_predictions
    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> schema = {"m": ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))}
    >>> raws = [b'{"event_id": "%d", "model_id": "m", "ts": %d, "features": {}, "prediction": 1}' % (t, t)
    ...         for t in (5, 1, 12, 3, 25)]
    >>> batches, _ = decode_predictions(raws, schema)
    >>> [p["m"].ts.tolist() for p in time_slices(batches, 10.0)]
    [[5.0, 1.0, 3.0], [12.0], [25.0]]
    """
    if len(batches) == 1:
        ((_, batch),) = batches.items()
        if len(batch) == 0 or float(batch.ts.max()) // span == float(batch.ts.min()) // span:
            yield dict(batches)
            return
    buckets = {m: np.floor(b.ts / span) for m, b in batches.items()}
    keys = np.unique(np.concatenate(list(buckets.values()))) if buckets else np.empty(0)
    for key in keys.tolist():
        part: dict[str, PredictionBatch] = {}
        for m, b in batches.items():
            positions = np.flatnonzero(buckets[m] == key)
            if len(positions):
                part[m] = b if len(positions) == len(b) else take_batch(b, positions)
        yield part


@dataclass
class ReplaySummary:
    """Totals of a replay, for the printed summary."""

    events: int = 0
    labels: int = 0
    rejected: int = 0
    windows: int = 0
    triggers: list[Trigger] = field(default_factory=list)  # as decided (not stamped ``emitted_at``)
    seconds: float = 0.0
    rejections_by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, out: EngineOutput, stream: str) -> None:
        if stream == "predictions":
            self.events += out.events
        else:
            self.labels += sum(o.labels_joined for o in out.per_model.values())
        self.rejected += len(out.rejections)
        for r in out.rejections:
            self.rejections_by_reason[r.reason] = self.rejections_by_reason.get(r.reason, 0) + 1
        self.windows += sum(len(o.evaluations) for o in out.per_model.values())
        self.triggers += out.triggers


def replay(
    engine: MonitoringEngine,
    predictions: Iterable[list[bytes]],
    labels: list[tuple[float, int, bytes]] | None = None,
    on_output: Callable[[EngineOutput, str], None] | None = None,
    label_batch: int = 5000,
    label_span: float = 6 * 3600.0,
    wall_now: float | None = None,
) -> ReplaySummary:
    """Run prediction batches and time-ordered labels through ``engine``; returns the totals.

    ``wall_now`` (the wall clock when the replay started) bounds event time as in the service.
    """
    summary = ReplaySummary()
    heap = labels or []
    started = time.perf_counter()

    def emit(out: EngineOutput, stream: str) -> None:
        summary.add(out, stream)
        if on_output is not None:
            on_output(out, stream)

    # A chunk of labels shares one clock (its last label's time): keep its span a small part of the
    # shortest label TTL, so a label is not expired by the time of later labels in its chunk.
    ttl = min((m.label_ttl_seconds for m in engine.settings.values()), default=math.inf)
    chunk_span = min(label_span, ttl / 64)

    def drain(until: float) -> None:
        """Join the labels with event time <= ``until`` in chunks, the clock at each chunk's last label."""
        due: list[bytes] = []
        first = last = 0.0
        while heap and heap[0][0] <= until:
            ts = heap[0][0]
            if due and (len(due) >= label_batch or ts - first > chunk_span):
                emit(engine.process_labels(due, now=max(last, 0.0), wall_now=wall_now), "labels")
                due = []
            if not due:
                first = ts
            last = ts
            due.append(heapq.heappop(heap)[2])
        if due:
            emit(engine.process_labels(due, now=max(last, 0.0), wall_now=wall_now), "labels")

    # A restored engine continues from its own event-time clock.
    watermark = engine.watermark
    for raws in predictions:
        batches, rejections = decode_predictions(
            raws, engine.schemas, engine.max_message_bytes, max_event_id_length=engine.max_event_id_length
        )
        batches, out_of_bounds = engine.bound_predictions(batches, raws, wall_now)
        if out_of_bounds:
            rejections = sorted(rejections + out_of_bounds, key=lambda rejection: rejection.index)
        if rejections:
            emit(EngineOutput(rejections=rejections), "predictions")
        for part in time_slices(batches, label_span):
            out = engine.process_decoded(part, now=max(watermark, 0.0))
            watermark = max(watermark, engine.watermark)
            emit(out, "predictions")
            drain(watermark)
    drain(float("inf"))
    emit(engine.flush(now=max(watermark, 0.0)), "predictions")
    summary.seconds = time.perf_counter() - started
    return summary
