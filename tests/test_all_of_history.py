"""Event time over all of history: years 1 to 9999 are windowed, joined and expired like any other.

The engine's clock is the event-time watermark. It used to be held at 0 (1970) until event time passed
it, so before 1970 every label saw a clock decades after its prediction: a 1950s stream lost all of its
labels to the TTL. These streams go through ``replay`` and through the service's partition-task (the
Kafka service's clock, without a broker).
"""

from __future__ import annotations

import math

import orjson
import pytest

from stream_monitor.core.engine import EngineOutput, MonitoringEngine
from stream_monitor.core.events import MAX_TS, MIN_TS
from stream_monitor.core.schema import FeatureSpec, ModelSchema
from stream_monitor.core.settings import ModelSettings, WindowSettings
from stream_monitor.offline.replay import label_heap, read_batches, replay

DAY = 86400.0
SCHEMA = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))
WARMUP = 100
EVERY = 600.0  # a prediction every 10 minutes
N = 720  # five days
LATE_EVERY = 10  # every 10th label comes two days late: past the one-day TTL


def engine() -> MonitoringEngine:
    settings = ModelSettings(
        warmup_events=WARMUP,
        window=WindowSettings(kind="time", width=DAY, allowed_lateness=0.0),
        label_ttl_seconds=DAY,
    )
    return MonitoringEngine({"m": SCHEMA}, {"m": settings})


def stream(start: float, *, late: bool = True) -> tuple[list[bytes], list[bytes]]:
    predictions, labels = [], []
    for i in range(N):
        ts = start + i * EVERY
        event = {
            "event_id": f"e{i}",
            "model_id": "m",
            "ts": ts,
            "features": {"x": float(i % 7)},
            "prediction": 1.0,
        }
        predictions.append(orjson.dumps(event))
        delay = 2 * DAY if late and i % LATE_EVERY == 0 else 3600.0
        labels.append(orjson.dumps({"event_id": f"e{i}", "model_id": "m", "ts": ts + delay, "label": 1.0}))
    return predictions, labels


def run(start: float, *, late: bool = True) -> tuple[MonitoringEngine, list[tuple[float, float, int]]]:
    predictions, labels = stream(start, late=late)
    eng = engine()
    windows: list[tuple[float, float, int]] = []

    def collect(out: EngineOutput, _: str) -> None:
        windows.extend((e.start, e.end, e.events) for o in out.per_model.values() for e in o.evaluations)

    summary = replay(eng, read_batches(predictions, 100), label_heap(labels), on_output=collect)
    assert summary.rejected == 0
    return eng, windows


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(-631152000.0, id="1950"),
        pytest.param(MIN_TS, id="year-1"),
        pytest.param(MAX_TS - 8 * DAY, id="year-9999"),
        pytest.param(1_700_000_000.0, id="2023"),
    ],
)
def test_windows_joins_and_expiry_are_the_same_in_every_era(start: float) -> None:
    eng, windows = run(start)
    counts = eng.label_buffers()["m"]
    late = N // LATE_EVERY
    # Every timely label joins; every late one finds its prediction expired, never a clock at 1970.
    assert counts["joined"] == N - late
    assert counts["expired"] == late
    assert counts["pending"] == 0
    # Daily windows on day boundaries of that era, covering every event after the warm-up.
    assert sum(events for *_, events in windows) == N - WARMUP
    for window_start, window_end, _ in windows:
        assert window_end - window_start == DAY
        assert math.remainder(window_start, DAY) == 0.0
    first_window = math.floor((start + WARMUP * EVERY) / DAY) * DAY
    assert windows[0][0] == first_window


def test_a_1950s_stream_joins_all_of_its_labels() -> None:
    eng, _ = run(-631152000.0, late=False)  # 1950-01-01
    assert eng.label_buffers()["m"] == {"pending": 0, "expired": 0, "orphan": 0, "joined": N}


def test_the_services_clock_is_the_watermark_before_1970_too() -> None:
    """The Kafka service's partition-task feeds the engine its watermark as ``now``, unclamped."""
    from stream_monitor.kafka.service import PartitionTask

    task = PartitionTask(0, engine(), {"predictions": "p", "labels": "l"})
    assert task.now == -math.inf
    predictions, labels = stream(-631152000.0, late=False)
    for i in range(0, N, 100):
        task.process("predictions", list(predictions[i : i + 100]), wall_now=1_700_000_000.0)
        task.process("labels", list(labels[i : i + 100]), wall_now=1_700_000_000.0)
    assert task.now == -631152000.0 + (N - 1) * EVERY
    assert task.engine.label_buffers()["m"]["joined"] == N
