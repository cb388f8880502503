"""Events beyond the allowed lateness of event-time windows are counted, not added, and exported."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry

from stream_monitor.core.engine import EngineOutput
from stream_monitor.core.events import PredictionBatch
from stream_monitor.core.monitor import ModelMonitor
from stream_monitor.core.schema import FeatureSpec, ModelSchema
from stream_monitor.core.settings import ModelSettings, WindowSettings
from stream_monitor.web.metrics import ServiceMetrics

SCHEMA = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))


def _batch(ts: np.ndarray, prefix: str) -> PredictionBatch:
    n = len(ts)
    x = np.ones(n)
    return PredictionBatch("m", np.arange(n), [f"{prefix}{i}" for i in range(n)], ts, [None] * n, x[None, :],
                           [], x.copy(), [None] * n, {}, 0)  # fmt: skip


def test_late_events_are_counted_and_exported() -> None:
    settings = ModelSettings(
        window=WindowSettings(kind="time", width=100.0, allowed_lateness=10.0), warmup_events=10
    )
    monitor = ModelMonitor(SCHEMA, settings)
    registry = CollectorRegistry()
    metrics = ServiceMetrics({"m": SCHEMA}, registry)
    assert registry.get_sample_value("stream_monitor_late_events_total", {"model": "m"}) == 0.0
    monitor.process_predictions(_batch(np.arange(10, dtype=float), "w"), now=0.0)  # the warm-up
    on_time = monitor.process_predictions(_batch(np.arange(100.0, 400.0), "a"), now=0.0)
    assert on_time.late_events == 0 and len(on_time.evaluations) >= 1
    # The watermark is at 399 - 10: events of the first window (100..200) are now beyond lateness.
    late = monitor.process_predictions(_batch(np.array([150.0, 160.0, 395.0]), "b"), now=0.0)
    assert late.late_events == 2
    metrics.observe(EngineOutput(per_model={"m": on_time}), "predictions")
    metrics.observe(EngineOutput(per_model={"m": late}), "predictions")
    assert registry.get_sample_value("stream_monitor_late_events_total", {"model": "m"}) == 2.0
