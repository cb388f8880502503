"""Replay: predictions and labels merged by event time, whatever the batch size."""

from __future__ import annotations

import gzip
import heapq
from pathlib import Path

import pytest

from stream_monitor.core.engine import MonitoringEngine
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import ModelSettings, WindowSettings
from stream_monitor.offline.demo_data import SyntheticStream
from stream_monitor.offline.replay import label_heap, open_lines, read_batches, replay

# One event every 10 s for a day; labels 10 minutes later; a prediction waits at most 1 h for its label.
STREAM = SyntheticStream(n=8640, rate=0.1, label_fraction=1.0, label_delay=600.0, seed=61)
SCHEMA = ModelSchema("synth", "binary", STREAM.schema_features())
SETTINGS = ModelSettings(window=WindowSettings(size=1000), warmup_events=1000, label_ttl_seconds=3600.0)


def engine() -> MonitoringEngine:
    return MonitoringEngine({"synth": SCHEMA}, {"synth": SETTINGS})


@pytest.mark.parametrize(("batch", "label_span"), [(100, 3600.0), (8640, 3600.0), (8640, 30 * 86400.0)])
def test_labels_join_however_large_the_batch(batch: int, label_span: float) -> None:
    preds, labels = STREAM.raw()
    eng = engine()
    summary = replay(eng, read_batches(preds, batch), label_heap(labels), label_span=label_span)
    lb = eng.monitors["synth"].labels
    # A single batch spans the whole day: a clock at the batch's end would expire every prediction
    # older than 1 h before its label (10 min later in event time) could join.
    assert (summary.labels, lb.expired, lb.orphan_labels) == (8640, 0, 0)


def test_windows_see_the_labels_a_live_stream_would_have() -> None:
    preds, labels = STREAM.raw()
    joined_at_close = []
    eng = engine()
    replay(
        eng,
        read_batches(preds, 8640),
        label_heap(labels),
        on_output=lambda o, _s: joined_at_close.extend(
            ev.labels["joined_total"] for m in o.per_model.values() for ev in m.evaluations
        ),
        label_span=1800.0,
    )
    # window k closes after ~1000·(k+2) events (warm-up first); labels trail by 60 events + a slice
    assert len(joined_at_close) >= 7
    for k, joined in enumerate(joined_at_close[:7]):
        assert joined >= 1000 * (k + 2) - 60 - 180 - 1


def test_open_lines_reads_gzip_and_plain(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(b'{"a": 1}\n\n{"b": 2}\r\n')
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(b'{"a": 1}\n\n{"b": 2}\r\n'))
    for name in ("a.jsonl", "a.jsonl.gz"):
        with open_lines(tmp_path / name) as f:
            assert list(read_batches(f, 10)) == [[b'{"a": 1}', b'{"b": 2}']]


def test_unparseable_label_lines_are_rejected_not_fatal() -> None:
    preds, labels = SyntheticStream(n=2000, label_fraction=0.5, seed=62).raw()
    summary = replay(
        MonitoringEngine({"synth": SCHEMA}, {"synth": ModelSettings(warmup_events=500)}),
        read_batches(preds, 500),
        label_heap([b"{oops", b'{"event_id": 1}', *labels]),
    )
    assert summary.rejections_by_reason.get("malformed_json") == 1
    assert summary.events == 2000 and summary.labels == len(labels)


def _slice_by_slice(eng: MonitoringEngine, preds: list[bytes], labels: list[bytes], span: float) -> list:
    """The replay as it was: one engine call per event-time slice, the labels due after each."""
    from stream_monitor.core.events import decode_predictions
    from stream_monitor.offline.replay import time_slices

    heap = label_heap(labels)
    outputs = []
    chunk_span = min(span, eng.settings["synth"].label_ttl_seconds / 64)

    def drain(until: float) -> None:  # replay's label chunks: 5,000 labels, chunk_span seconds at most
        due: list[bytes] = []
        first = last = 0.0
        while heap and heap[0][0] <= until:
            ts = heap[0][0]
            if due and (len(due) >= 5000 or ts - first > chunk_span):
                outputs.append(eng.process_labels(due, now=last))
                due = []
            if not due:
                first = ts
            last = ts
            due.append(heapq.heappop(heap)[2])
        if due:
            outputs.append(eng.process_labels(due, now=last))

    watermark = eng.watermark
    for raws in read_batches(preds, 2000):
        batches, _ = decode_predictions(raws, eng.schemas)
        for part in time_slices(batches, span):
            outputs.append(eng.process_decoded(part, now=watermark))
            watermark = max(watermark, eng.watermark)
            drain(watermark)
    drain(float("inf"))
    outputs.append(eng.flush(now=watermark))
    return outputs


@pytest.mark.parametrize(
    "window", [WindowSettings(size=100), WindowSettings(kind="time", width=30 * 86400.0)]
)
def test_slices_between_window_closes_go_in_one_call_with_the_same_results(window: WindowSettings) -> None:
    # A row a day: every 6-h slice holds one event; labels come 30 h later and are due between most.
    stream = SyntheticStream(n=3000, rate=1 / 86400.0, label_fraction=0.5, label_delay=30 * 3600.0, seed=63,
                             drift_at=1800, mean_shift={"x0": 1.5})  # fmt: skip
    settings = ModelSettings(window=window, warmup_events=300, label_ttl_seconds=7 * 86400.0)
    preds, labels = stream.raw()
    calls: list[int] = []

    def engine_counting_calls() -> MonitoringEngine:
        eng = MonitoringEngine({"synth": SCHEMA}, {"synth": settings})
        process = eng.process_decoded
        eng.process_decoded = lambda part, now: calls.append(1) or process(part, now)  # type: ignore[method-assign]
        return eng

    merged: list = []
    fast = engine_counting_calls()
    replay(fast, read_batches(preds, 2000), label_heap(labels), on_output=lambda o, _s: merged.append(o),
           label_span=6 * 3600.0)  # fmt: skip
    slow = MonitoringEngine({"synth": SCHEMA}, {"synth": settings})
    reference = _slice_by_slice(slow, preds, labels, 6 * 3600.0)

    def evaluations(outputs: list) -> list:
        return [ev for o in outputs for m in o.per_model.values() for ev in m.evaluations]

    def triggers(outputs: list) -> list[bytes]:
        return [t.to_json_bytes() for o in outputs for t in o.triggers]

    assert evaluations(merged) == evaluations(reference) and len(evaluations(merged)) >= 20
    assert triggers(merged) == triggers(reference) and triggers(merged)
    assert fast.monitors["synth"].labels.joined == slow.monitors["synth"].labels.joined > 1000
    # a call per window close (and the warm-up's slices), not one per event
    assert len(calls) < 3000 / 3
