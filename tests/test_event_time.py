"""Event time cannot be hijacked (issue 10, point 2): the engine's bounds on ``ts``, pure."""

from __future__ import annotations

import math
from typing import Any

import orjson

from stream_monitor.core.engine import TS_OUT_OF_BOUNDS, MonitoringEngine
from stream_monitor.core.schema import FeatureSpec, ModelSchema
from stream_monitor.core.settings import EventTimeSettings, ModelSettings
from stream_monitor.offline.replay import label_heap, replay

SCHEMA = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))
WALL = 1_800_000_000.0  # "now" for these tests (2027-01-15)
START = 1_735_689_600.0


def _prediction(i: int, ts: Any) -> bytes:
    return orjson.dumps(
        {"event_id": f"e{i}", "model_id": "m", "ts": ts, "features": {"x": i}, "prediction": 1.0}
    )


def _label(i: int, ts: float) -> bytes:
    return orjson.dumps({"event_id": f"e{i}", "model_id": "m", "ts": ts, "label": 1.0})


def _engine(event_time: EventTimeSettings | None = None) -> MonitoringEngine:
    return MonitoringEngine({"m": SCHEMA}, {"m": ModelSettings(warmup_events=50)}, event_time=event_time)


def test_a_far_future_prediction_is_rejected_and_does_not_move_the_clock() -> None:
    engine = _engine()
    raws = [_prediction(i, START + i) for i in range(10)]
    raws.insert(5, _prediction(99, "9999-12-31T23:59:59Z"))
    raws.insert(7, _prediction(98, WALL + 86400 + 1))  # one second past the bound
    raws.insert(8, _prediction(97, WALL + 86400 - 1))  # within it: clock skew is allowed
    out = engine.process_predictions(raws, now=0.0, wall_now=WALL)
    assert [(r.index, r.reason) for r in out.rejections] == [(5, TS_OUT_OF_BOUNDS), (7, TS_OUT_OF_BOUNDS)]
    assert out.rejections[0].raw == raws[5]
    assert out.events == 11
    assert engine.watermark == WALL + 86400 - 1
    assert len(engine.monitors["m"].labels) == 11


def test_without_a_wall_clock_only_the_rfc3339_range_applies() -> None:
    engine = _engine()
    out = engine.process_predictions([_prediction(0, "9999-12-31T23:59:59Z")], now=0.0)
    assert out.rejections == [] and math.isfinite(engine.watermark)


def test_max_ahead_bounds_the_jump_from_the_watermark() -> None:
    engine = _engine(EventTimeSettings(max_ahead_seconds=7 * 86400))
    engine.process_predictions([_prediction(0, START)], now=0.0, wall_now=WALL)
    out = engine.process_predictions(
        [_prediction(1, START + 6 * 86400), _prediction(2, START + 30 * 86400)], now=START, wall_now=WALL
    )
    assert [(r.index, r.reason) for r in out.rejections] == [(1, TS_OUT_OF_BOUNDS)]
    assert engine.watermark == START + 6 * 86400


def test_a_far_future_label_is_rejected() -> None:
    engine = _engine()
    engine.process_predictions([_prediction(i, START + i) for i in range(3)], now=0.0, wall_now=WALL)
    out = engine.process_labels(
        [_label(0, START + 5), _label(1, 253402300799.0), _label(2, START + 6)], now=START + 2, wall_now=WALL
    )
    assert [(r.index, r.reason) for r in out.rejections] == [(1, TS_OUT_OF_BOUNDS)]
    assert out.per_model["m"].labels_joined == 2
    assert out.per_model["m"].events == 2  # labels are counted as processed events


def test_every_valid_label_joins_around_poisoned_timestamps_in_a_replay() -> None:
    n = 400
    predictions = [_prediction(i, START + i) for i in range(n)]
    predictions.insert(100, _prediction(10_000, "9999-12-31T23:59:59Z"))
    predictions.insert(200, _prediction(10_001, "1990-01-01T00:00:00Z"))
    labels = [_label(i, START + i + 30) for i in range(n)]
    engine = _engine()
    summary = replay(
        engine,
        [predictions[i : i + 50] for i in range(0, len(predictions), 50)],
        label_heap(labels),
        wall_now=WALL,
    )
    assert summary.rejections_by_reason == {TS_OUT_OF_BOUNDS: 1}
    assert engine.monitors["m"].labels.joined == n
    # The engine state, clock included, round-trips: a restored engine continues the same way.
    again = _engine()
    again.restore(engine.snapshot())
    assert again.watermark == engine.watermark < WALL
