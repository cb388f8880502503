"""The status page: dead-letter counts by reason, no placeholders where a value is unknown, and the
immutable copy a service publishes after each batch, which is all a request reads (issue 14, point 4)."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from stream_monitor.app import start_observability
from stream_monitor.config import parse_config
from stream_monitor.core.engine import MonitoringEngine
from stream_monitor.core.events import Rejection
from stream_monitor.core.schema import FeatureSpec, ModelSchema
from stream_monitor.core.settings import ModelSettings, WindowSettings
from stream_monitor.offline.demo_data import SyntheticStream
from stream_monitor.web.metrics import ServiceMetrics
from stream_monitor.web.status import ModelView, StatusPage, render_status

SCHEMA = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))


def test_dead_letters_by_reason_come_from_the_rejection_counter() -> None:
    metrics = ServiceMetrics({"m": SCHEMA}, CollectorRegistry())
    page = StatusPage(lambda: {}, rejections=metrics.rejections_by_reason)
    assert b"No message rejected." in page()[2]
    for reason in ("malformed_json", "malformed_json", "ts_out_of_bounds"):
        metrics.observe_rejection(Rejection(0, reason, b""))
    html = page()[2].decode()
    assert "Dead letters (3)" in html
    assert html.index("malformed_json") < html.index("ts_out_of_bounds")  # most frequent first
    assert "<td>2</td>" in html


def test_unknown_values_are_not_shown_as_placeholders() -> None:
    view = ModelView("m", segments=[{"segment": "web", "share": 0.5, "drift": 0.01, "top_feature": None}])
    html = render_status([view], 0.0).decode()
    assert "None" not in html and "(?" not in html


# ------------------------------------------------------------------ the published copy (issue 14, point 4)
def _engine_after(events: int, seed: int = 3) -> tuple[MonitoringEngine, list[bytes]]:
    """A binary model with windows of 1000 and time buckets, fed ``events`` synthetic events."""
    stream = SyntheticStream(n=events + 4000, drift_at=events, mean_shift={"x0": 1.5}, seed=seed, rate=0.02)
    schema = ModelSchema("synth", "binary", stream.schema_features())
    settings = ModelSettings(window=WindowSettings(size=1000), warmup_events=2000)
    engine = MonitoringEngine({"synth": schema}, {"synth": settings})
    preds, _ = stream.raw()
    for i in range(0, events, 1000):
        engine.process_predictions(preds[i : i + 1000], now=0.0)
    return engine, preds[events:]


def test_a_published_page_renders_the_copy_and_never_reads_the_monitors_on_a_request() -> None:
    engine, rest = _engine_after(12_000)
    owner = threading.get_ident()

    def monitors() -> dict[str, Any]:
        assert threading.get_ident() == owner, "monitors() read off the engine's thread"
        return engine.monitors

    page = StatusPage(monitors, clock=lambda: 0.0, published_only=True)
    live = StatusPage(lambda: engine.monitors, clock=lambda: 0.0)
    assert b"No model is judged on this member" in page()[2]  # nothing published yet: no model, no live read
    page.publish()
    served: list[bytes] = []
    thread = threading.Thread(target=lambda: served.append(page()[2]), name="http-test-conn")
    thread.start()
    thread.join()
    assert served == [live()[2]]  # the copy shows what the live page shows
    assert b"Data DNA" in served[0] and b"<td>x0</td>" in served[0]
    # The loop moves on: the copy does not move with it until the next publication.
    for i in range(0, len(rest), 1000):
        engine.process_predictions(rest[i : i + 1000], now=0.0)
    assert page()[2] == served[0] != live()[2]
    page.publish()
    assert page()[2] == live()[2]


def test_publishing_reuses_the_tables_of_a_window_already_published() -> None:
    engine, _ = _engine_after(6000)
    page = StatusPage(lambda: engine.monitors, published_only=True)
    first = page.publish().models[0].view
    second = page.publish().models[0].view
    assert first is not second and first.features and second.features is first.features


def test_the_insight_gauges_of_a_published_member_read_the_copy(tmp_path: Path) -> None:
    engine, rest = _engine_after(12_000)
    app = parse_config({"models": [{"id": "synth", "task": "binary", "features": {"x0": "numeric"}}]}, env={})
    calls: list[str] = []

    def monitors() -> dict[str, Any]:
        calls.append(threading.current_thread().name)
        return engine.monitors

    obs = start_observability(app, monitors, host="127.0.0.1", port=0, published=True)
    try:
        get = obs.registry.get_sample_value
        assert get("stream_monitor_time_buckets", {"model": "synth"}) is None  # nothing published yet
        obs.status_page.publish()
        tracker = engine.monitors["synth"].insights
        assert tracker is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{obs.port}/metrics", timeout=30) as r:
            text = r.read().decode()
        assert f'stream_monitor_time_buckets{{model="synth"}} {float(len(tracker.buckets))}' in text
        rid, kind = tracker.current_regime
        assert get("stream_monitor_regime", {"model": "synth", "kind": kind}) == 1.0
        assert get("stream_monitor_regime_id", {"model": "synth"}) == float(rid)
        for i in range(0, len(rest), 1000):
            engine.process_predictions(rest[i : i + 1000], now=0.0)
        assert len(tracker.buckets) != get("stream_monitor_time_buckets", {"model": "synth"})
        with urllib.request.urlopen(f"http://127.0.0.1:{obs.port}/", timeout=30) as r:
            assert b"synth" in r.read()
        assert calls == [threading.current_thread().name]  # only publish() read the monitors
    finally:
        obs.server.shutdown()
