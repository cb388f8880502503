"""Replay: the service's pipeline over JSONL files, predictions and labels merged by event time.

Predictions are read in batches (as Kafka would hand them over); after each batch, every label whose
event time is at or before the batch's latest prediction time is joined — labels always follow their
prediction, so this is the order a live stream would have. Event time also drives the label TTL, so a
replay of months of data expires labels as the service would have.
"""

from __future__ import annotations

import gzip
import heapq
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from stream_monitor.events import parse_ts
from stream_monitor.pipeline import EngineOutput, MonitoringEngine


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


@dataclass
class ReplaySummary:
    """Totals of a replay, for the printed summary."""

    events: int = 0
    labels: int = 0
    rejected: int = 0
    windows: int = 0
    triggers: list[dict[str, Any]] = field(default_factory=list)
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
) -> ReplaySummary:
    """Run prediction batches and time-ordered labels through ``engine``; returns the totals."""
    summary = ReplaySummary()
    heap = labels or []
    started = time.perf_counter()

    def emit(out: EngineOutput, stream: str) -> None:
        summary.add(out, stream)
        if on_output is not None:
            on_output(out, stream)

    watermark = float("-inf")
    for batch in predictions:
        out = engine.process_predictions(batch, now=max(watermark, 0.0))
        watermark = max(watermark, engine.watermark)
        emit(out, "predictions")
        due: list[bytes] = []
        while heap and heap[0][0] <= watermark:
            due.append(heapq.heappop(heap)[2])
            if len(due) >= label_batch:
                emit(engine.process_labels(due, now=watermark), "labels")
                due = []
        if due:
            emit(engine.process_labels(due, now=watermark), "labels")
    rest = [heapq.heappop(heap)[2] for _ in range(len(heap))]
    if rest:
        emit(engine.process_labels(rest, now=max(watermark, 0.0)), "labels")
    emit(engine.flush(now=max(watermark, 0.0)), "predictions")
    summary.seconds = time.perf_counter() - started
    return summary
