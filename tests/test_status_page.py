"""The status page: dead-letter counts by reason, and no placeholders where a value is unknown."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from stream_monitor.core.events import Rejection
from stream_monitor.core.schema import FeatureSpec, ModelSchema
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
