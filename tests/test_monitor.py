"""The whole per-model monitor (and the engine) survive a snapshot/restore anywhere in a stream.

A drifting stream with delayed labels is cut at several points — during warm-up, with labels pending,
in the middle of a sustained condition — restored into a fresh object, and continued. The triggers
(ids, kinds, event times, every field), the counters and the final state must be exactly those of an
uninterrupted run.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import numpy as np
import orjson
import pytest

from stream_monitor.core import state_format
from stream_monitor.core.engine import MonitoringEngine
from stream_monitor.core.events import (
    LabelBatch,
    PredictionBatch,
    decode_labels,
    decode_predictions,
    parse_ts,
)
from stream_monitor.core.monitor import ModelMonitor
from stream_monitor.core.reference import ReferenceProfile, build_reference
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import ModelSettings, PolicySettings, WindowSettings
from stream_monitor.core.triggers import Trigger
from stream_monitor.errors import StateError
from stream_monitor.offline.demo_data import SyntheticStream

STREAM = SyntheticStream(
    n=40_000,
    rate=10.0,
    label_fraction=0.5,
    label_delay=300.0,
    drift_at=20_000,
    mean_shift={"x0": 0.6},
    concept_drift=0.9,
    seed=5,
)
SCHEMA = ModelSchema("synth", "binary", STREAM.schema_features())
SETTINGS = ModelSettings(
    window=WindowSettings(size=2000),
    warmup_events=3000,
    performance_window=1000,
    policy=PolicySettings(cooldown_seconds=1800.0),
)
# Not a divisor of the window, warm-up or ADWIN chunk size: windows close and chunks carry mid-batch.
BATCH = 730


@dataclass
class Step:
    stream: str  # "predictions" | "labels"
    raws: list[bytes]
    now: float


@cache
def steps() -> list[Step]:
    """The replay order: a prediction batch, then the labels whose event time has passed."""
    preds, labels = STREAM.raw()
    heap = [(parse_ts(orjson.loads(raw)["ts"]) or 0.0, i, raw) for i, raw in enumerate(labels)]
    heapq.heapify(heap)
    out: list[Step] = []
    for i in range(0, len(preds), BATCH):
        batch = preds[i : i + BATCH]
        watermark = float(orjson.loads(batch[-1])["ts"])
        out.append(Step("predictions", batch, watermark))
        due = []
        while heap and heap[0][0] <= watermark:
            due.append(heapq.heappop(heap)[2])
        if due:
            out.append(Step("labels", due, watermark))
    return out


@cache
def decoded() -> list[tuple[str, PredictionBatch | LabelBatch, float]]:
    out: list[tuple[str, PredictionBatch | LabelBatch, float]] = []
    for step in steps():
        if step.stream == "predictions":
            pbatches, rejected = decode_predictions(step.raws, {"synth": SCHEMA})
            assert not rejected
            out.append((step.stream, pbatches["synth"], step.now))
        else:
            lbatches, rejected = decode_labels(step.raws, {"synth": SCHEMA})
            assert not rejected
            out.append((step.stream, lbatches["synth"], step.now))
    return out


def feed(mon: ModelMonitor, items: list[tuple[str, Any, float]]) -> list[Trigger]:
    triggers: list[Trigger] = []
    for stream, batch, now in items:
        out = (
            mon.process_predictions(batch, now) if stream == "predictions" else mon.process_labels(batch, now)
        )
        triggers += out.triggers
    return triggers


def counters(mon: ModelMonitor) -> dict[str, Any]:
    lb = mon.labels
    windows = mon.windows
    return {
        "events_total": mon.events_total,
        "labels": (lb.added, lb.joined, len(lb), lb.expired, lb.evicted, lb.orphan_labels),
        "performance": mon.performance.metrics(),
        "score_drift": (mon.score_drift.n_seen, mon.score_drift.n_detections),
        "windows": None if windows is None else (type(windows).__name__, windows.snapshot()),
        "ready": mon.ready,
    }


@cache
def reference() -> ReferenceProfile:
    """A profile with a baseline AUC, from a labelled training sample of the same (pre-drift) process."""
    train = SyntheticStream(n=20_000, rate=STREAM.rate, seed=50, label_fraction=1.0)
    raws, _ = train.raw()
    batches, _ = decode_predictions(raws, {"synth": SCHEMA})
    return build_reference(SCHEMA, batches["synth"], train.columns()["y"].astype(float))


def new_monitor(with_reference: bool) -> ModelMonitor:
    return ModelMonitor(SCHEMA, SETTINGS, reference() if with_reference else None)


@cache
def uninterrupted(with_reference: bool) -> tuple[list[Trigger], dict[str, Any], bytes]:
    mon = new_monitor(with_reference)
    triggers = feed(mon, decoded())
    triggers += mon.flush(now=0.0).triggers
    return triggers, counters(mon), mon.snapshot()


@pytest.mark.parametrize("with_reference", [False, True])
def test_the_stream_exercises_every_stateful_piece(with_reference: bool) -> None:
    triggers, c, _ = uninterrupted(with_reference)
    kinds = {t.kind for t in triggers}
    assert "data_drift" in kinds or "combined" in kinds
    if with_reference:  # a warmed-up reference has no baseline performance to compare with
        assert "performance" in kinds or "combined" in kinds
    drift_ts = STREAM.ts_of(STREAM.drift_at or 0)
    assert all(t.event_time > drift_ts for t in triggers)
    assert c["labels"][2] > 0  # labels pending at the end
    assert c["score_drift"][0] > 0


def cut_points() -> list[int]:
    items = decoded()
    # Index of the step after which the monitor has seen k events.
    seen, by_events = 0, {}
    for i, (stream, batch, _) in enumerate(items):
        if stream == "predictions":
            seen += len(batch)
            by_events.setdefault(seen // 1000, i + 1)
    return [
        1,  # in warm-up, nothing labelled yet
        by_events[2],  # still in warm-up, labels pending for warm-up events
        by_events[3] + 1,  # just after the reference was built (and the first labels joined)
        by_events[12],  # stationary, windows half full, labels pending
        by_events[21],  # right after the drift starts: a condition is building up
        by_events[24] + 1,  # after a trigger, during cooldown / latched
        len(items) - 1,
    ]


@pytest.mark.parametrize(
    ("which", "with_reference"), [(i, False) for i in (0, 1, 2, 4, 6)] + [(i, True) for i in (3, 5)]
)
def test_restore_mid_stream_continues_exactly(which: int, with_reference: bool) -> None:
    cut = cut_points()[which]
    items = decoded()
    expected, expected_counters, expected_state = uninterrupted(with_reference)

    first = new_monitor(with_reference)
    got = feed(first, items[:cut])
    data = first.snapshot()
    restored = ModelMonitor.restore(data, SCHEMA, SETTINGS, reference=reference() if with_reference else None)
    assert restored.snapshot() == data  # every piece restores to the same state, byte for byte
    assert counters(restored) == counters(first)
    del first
    got += feed(restored, items[cut:])
    got += restored.flush(now=0.0).triggers

    assert [(t.trigger_id, t.kind, t.event_time) for t in got] == [
        (t.trigger_id, t.kind, t.event_time) for t in expected
    ]
    assert got == expected  # every field, reasons and evidence included
    assert counters(restored) == expected_counters
    assert restored.snapshot() == expected_state


def test_restore_checks_the_model_and_the_bytes() -> None:
    mon = ModelMonitor(SCHEMA, SETTINGS)
    other = ModelSchema("other", "binary", SCHEMA.features)
    with pytest.raises(StateError):
        ModelMonitor.restore(mon.snapshot(), other, SETTINGS)
    with pytest.raises(StateError):
        ModelMonitor.restore(b"{not json", SCHEMA, SETTINGS)


def test_a_configured_reference_is_stored_as_its_digest_and_must_match() -> None:
    configured = ModelMonitor(SCHEMA, SETTINGS, reference())
    warming = ModelMonitor(SCHEMA, SETTINGS)
    feed(configured, decoded()[:10])
    feed(warming, decoded()[:10])
    assert warming.ready  # warmed up: its reference is state
    configured_state = state_format.decode(configured.snapshot())
    assert configured_state["reference"] == {"source": "configured", "digest": reference().digest()}
    warmed_state = state_format.decode(warming.snapshot())
    assert warmed_state["reference"]["source"] == "warmed_up"
    assert ReferenceProfile.from_state(warmed_state["reference"]["profile"]) == warming.reference
    assert warming.warmup is None  # stored once: the warm-up's copy is gone

    other = replace(reference(), version=reference().version + 1)
    with pytest.raises(StateError, match=r"digest .* the one there now .* has digest"):
        ModelMonitor.restore(configured.snapshot(), SCHEMA, SETTINGS, reference=other)
    with pytest.raises(StateError, match="none is there now"):
        ModelMonitor.restore(configured.snapshot(), SCHEMA, SETTINGS)
    with pytest.raises(StateError, match="warmed up from live events, but a reference is configured"):
        ModelMonitor.restore(warming.snapshot(), SCHEMA, SETTINGS, reference=reference())
    again = ModelMonitor.restore(configured.snapshot(), SCHEMA, SETTINGS, reference=reference())
    assert again.reference is reference() and again.snapshot() == configured.snapshot()


def test_score_drift_chunks_do_not_depend_on_batch_boundaries() -> None:
    items = [(s, b, n) for s, b, n in decoded() if s == "predictions"][:20]
    a = ModelMonitor(SCHEMA, SETTINGS)
    feed(a, items)
    # the same events in one batch each of sizes 1000 and 333
    b = ModelMonitor(SCHEMA, SETTINGS)
    raws = [raw for step in steps() if step.stream == "predictions" for raw in step.raws][: 20 * BATCH]
    for size in (1000, 333):
        b = ModelMonitor(SCHEMA, SETTINGS)
        for i in range(0, len(raws), size):
            batches, _ = decode_predictions(raws[i : i + size], {"synth": SCHEMA})
            b.process_predictions(batches["synth"], now=0.0)
        assert b.score_drift.n_seen == a.score_drift.n_seen > 0
        assert b.score_drift.estimation == a.score_drift.estimation  # type: ignore[attr-defined]


def test_labels_of_warm_up_predictions_join() -> None:
    mon = ModelMonitor(SCHEMA, replace(SETTINGS, warmup_events=10_000))
    feed(mon, decoded()[:20])
    assert mon.warmup is not None  # still warming up
    assert mon.labels.joined > 0 and mon.labels.orphan_labels == 0


# -- the engine -----------------------------------------------------------------------------------
CONTROL = SyntheticStream(n=20_000, rate=5.0, model_id="control", seed=8, label_delay=50.0)


def engine() -> MonitoringEngine:
    schemas = {
        "synth": SCHEMA,
        "control": ModelSchema("control", "binary", CONTROL.schema_features()),
    }
    settings = {
        "synth": SETTINGS,
        "control": ModelSettings(window=WindowSettings(size=1000), warmup_events=2000),
    }
    return MonitoringEngine(schemas, settings, versions={"synth": "v5"})


@cache
def engine_steps() -> list[Step]:
    """Both models' messages interleaved by event time, labels due after each batch (replay order)."""
    preds_a, labels_a = STREAM.raw()
    preds_b, labels_b = CONTROL.raw()

    def ts(raw: bytes) -> float:
        return float(orjson.loads(raw)["ts"])

    preds = sorted(preds_a + preds_b, key=ts)
    heap = [(ts(raw), i, raw) for i, raw in enumerate(labels_a + labels_b)]
    heapq.heapify(heap)
    out: list[Step] = []
    for i in range(0, len(preds), 1500):
        batch = preds[i : i + 1500] + ([b"{broken"] if i % 9000 == 0 else [])
        out.append(Step("predictions", batch, 0.0))
        watermark = ts(preds[min(i + 1500, len(preds)) - 1])
        due = []
        while heap and heap[0][0] <= watermark:
            due.append(heapq.heappop(heap)[2])
        if due:
            out.append(Step("labels", due, 0.0))
    return out


def run_engine(eng: MonitoringEngine, items: list[Step]) -> tuple[list[Trigger], int, int]:
    triggers: list[Trigger] = []
    events = rejected = 0
    for step in items:
        now = max(eng.watermark, 0.0)  # the service's clock: the event-time watermark
        out = eng.process_predictions(step.raws, now) if step.stream == "predictions" else None
        if out is None:
            out = eng.process_labels(step.raws, now)
        triggers += out.triggers
        events += out.events
        rejected += len(out.rejections)
    return triggers, events, rejected


@pytest.mark.parametrize("fraction", [0.03, 0.62])
def test_engine_snapshot_restore(fraction: float) -> None:
    items = engine_steps()
    whole = engine()
    expected = run_engine(whole, items)
    assert any(t.model_id == "synth" for t in expected[0])
    # The configuration names v5, the events name their version ("1"): the event's version is judged.
    assert all(t.model_version == "1" for t in expected[0] if t.model_id == "synth")

    cut = int(len(items) * fraction)
    first = engine()
    a = run_engine(first, items[:cut])
    second = engine()
    second.restore(first.snapshot())
    assert second.watermark == first.watermark
    assert second.snapshot() == first.snapshot()
    b = run_engine(second, items[cut:])
    assert (a[0] + b[0], a[1] + b[1], a[2] + b[2]) == expected
    assert second.snapshot() == whole.snapshot()


def test_engine_restore_keeps_models_missing_from_the_snapshot_fresh() -> None:
    eng = engine()
    run_engine(eng, engine_steps()[:5])
    blob = state_format.decode(eng.snapshot())
    only_synth = state_format.encode({**blob, "monitors": {"synth": blob["monitors"]["synth"]}})
    fresh = engine()
    fresh.restore(only_synth)
    assert fresh.monitors["synth"].events_total == eng.monitors["synth"].events_total > 0
    assert fresh.models["control"].events_total == 0
    assert state_format.encode(fresh.models["synth"].to_state()) == state_format.encode(
        blob["monitors"]["synth"]
    )
    with pytest.raises(StateError, match="older stream-monitor"):
        fresh.restore(b'{"format": 1, "monitors": {}}')
    with pytest.raises(StateError):
        fresh.restore(b"garbage")


def test_engine_restore_is_all_or_nothing() -> None:
    eng = engine()
    run_engine(eng, engine_steps()[:5])
    blob = state_format.decode(eng.snapshot())
    # The second model's (one version's) monitor does not fit.
    blob["monitors"]["control"]["versions"]["0"]["monitor"]["events_total"] = "many"
    fresh = engine()
    before = fresh.snapshot()
    with pytest.raises(StateError, match=r"model 'control'.*part 'events_total' is str"):
        fresh.restore(state_format.encode(blob))
    assert fresh.snapshot() == before


def test_synthetic_stream_is_deterministic() -> None:
    a, b = SyntheticStream(n=500, seed=3).raw(), SyntheticStream(n=500, seed=3).raw()
    assert a == b
    cols = SyntheticStream(n=500, seed=3).columns()
    assert np.all(np.diff(cols["ts"]) > 0)
