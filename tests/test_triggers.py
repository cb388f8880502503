"""The typed trigger: one builder, one serialiser, one parser, and the JSON of the contract."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import orjson
import pytest

from stream_monitor.core.detectors.base import DetectorResult
from stream_monitor.core.triggers import (
    ExcludedPeriod,
    LabelOutlook,
    Period,
    Recommendation,
    RegimeSummary,
    SegmentSurgeEvidence,
    Trigger,
    Window,
    WindowEvidence,
    build_trigger,
    trigger_id,
)

WINDOW = Window(start=0.0, end=3600.0, events=5000)


def window_trigger(**recommendation: object) -> Trigger:
    return build_trigger(
        model_id="bikes",
        model_version="v1",
        kind="combined",
        severity="critical",
        decision="combined",
        index=7,
        at=3600.0,
        event_time=3600.0,
        window=WINDOW,
        results=[
            DetectorResult("psi", "temp", "psi", np.float64(0.31), 0.15, drift=True),
            DetectorResult("ks", "temp", "ks_statistic", 0.2, 0.1, drift=True, p_value=1e-9, effect_size=0.2),
            DetectorResult("performance", None, "mae", 12.5, 12.0, drift=True),
        ],
        evidence=WindowEvidence(
            events_in_window=5000,
            window_index=7,
            labels_joined=4000.0,
            labels_pending=12.0,
            label_delay_seconds=math.nan,
            performance={"mae": 12.5, "auc": math.nan},
            baseline={"mae": 10.0},
        ),
        recommendation=Recommendation(action="retrain", **recommendation),  # type: ignore[arg-type]
    )


def test_builder_ids_reasons_and_unknown_numbers() -> None:
    t = window_trigger()
    assert t.trigger_id == trigger_id("bikes", "combined", 7, 3600.0, "v1")
    assert t.emitted_at is None
    assert [(r.detector, r.feature, r.p_value, r.window) for r in t.reasons] == [
        ("psi", "temp", None, WINDOW),
        ("ks", "temp", 1e-9, WINDOW),
        ("performance", None, None, WINDOW),
    ]
    assert type(t.reasons[0].value) is float  # numpy scalars become plain numbers
    assert isinstance(t.evidence, WindowEvidence)
    # JSON has no NaN: unknown numbers are None here and null there.
    assert t.evidence.label_delay_seconds is None and t.evidence.performance["auc"] is None
    d = t.to_dict()
    assert d["evidence"]["label_delay_seconds"] is None and d["evidence"]["performance"]["auc"] is None


def test_emitted_at_is_stamped_on_a_copy() -> None:
    t = window_trigger()
    emitted = t.with_emitted_at(1.7e9)
    assert emitted.emitted_at == 1.7e9 and t.emitted_at is None
    assert dataclasses.replace(emitted, emitted_at=None) == t
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.emitted_at = 1.0  # type: ignore[misc]


def test_json_field_order_and_optional_fields() -> None:
    t = window_trigger(
        drift_started_at=0.0,
        train_on=(Period(start=0.0, end=3600.0),),
        exclude=(ExcludedPeriod(start=0.0, end=60.0, reason="integrity_incident"),),
        enough_new_labels=True,
        labels=LabelOutlook(
            new_labels=10.0,
            needed=2000,
            arrival_rate_per_hour=0.0,
            enough=False,
            ready_at=None,
            hours_to_go=None,
        ),
        basis="windows",
    ).with_emitted_at(1.0)
    d = orjson.loads(t.to_json_bytes())
    assert list(d) == [
        "trigger_id", "model_id", "model_version", "emitted_at", "event_time", "severity", "kind",
        "reasons", "evidence", "recommendation",
    ]  # fmt: skip
    assert list(d["reasons"][0]) == [
        "detector",
        "feature",
        "statistic",
        "value",
        "threshold",
        "p_value",
        "window",
    ]
    rec = d["recommendation"]
    # Fields that do not apply are left out, not null; nulls inside a part stay (ready_at: unknown).
    assert list(rec) == [
        "action", "drift_started_at", "train_on", "exclude", "segments_needing_attention",
        "new_labels_since_last_trigger", "enough_new_labels", "labels", "basis",
    ]  # fmt: skip
    assert rec["train_on"] == [{"start": 0.0, "end": 3600.0}]
    assert rec["exclude"] == [{"start": 0.0, "end": 60.0, "reason": "integrity_incident"}]
    assert rec["labels"]["ready_at"] is None
    assert Trigger.from_dict(d) == t


def test_bucket_recommendation_and_segment_surge_round_trip() -> None:
    buckets = window_trigger(
        drift_started_at=0.0,
        train_on=(Period(start=0.0, end=86400.0, buckets=1),),
        exclude=(
            ExcludedPeriod(
                start=0.0, end=1.0, buckets=1, reason="integrity_incident", detail="missing_rate:x"
            ),
            ExcludedPeriod(start=1.0, end=2.0, buckets=1, reason="one_off_regime"),
        ),
        segments=({"segment": "ch=web", "share": 0.5, "drift": None},),
        regimes=(RegimeSummary(id=0, kind="normal", buckets=9, recent=True, period_buckets=None),),
        train_on_buckets=1,
        basis="buckets",
    ).with_emitted_at(2.0)
    assert Trigger.from_dict(buckets.to_dict()) == buckets
    assert buckets.to_dict()["recommendation"]["exclude"][1] == {
        "start": 1.0, "end": 2.0, "buckets": 1, "reason": "one_off_regime"
    }  # fmt: skip

    surge = build_trigger(
        model_id="shop",
        model_version=None,
        kind="data_drift",
        severity="warning",
        decision="segment_surge:channel=app",
        index=3,
        at=259200.0,
        event_time=260000.0,
        window=Window(start=259200.0, end=260000.0, events=np.int64(500)),
        results=[DetectorResult("segment_surge", "segment:channel=app", "share", 0.3, 0.05, drift=True)],
        evidence=SegmentSurgeEvidence(
            events_in_window=500,
            segment_share=0.3,
            segment_baseline_share=0.0,
            segment_drift={"key_psi": 0.4},
        ),
        recommendation=Recommendation(action="investigate", segments_needing_attention=("channel=app",)),
    ).with_emitted_at(3.0)
    d = surge.to_dict()
    assert d["model_version"] is None  # a contract field: null, never left out
    assert d["recommendation"] == {
        "action": "investigate",
        "segments_needing_attention": ["channel=app"],
        "new_labels_since_last_trigger": 0.0,
    }
    assert set(d["evidence"]) == {
        "events_in_window",
        "segment_share",
        "segment_baseline_share",
        "segment_drift",
    }
    parsed = Trigger.from_dict(d)
    assert isinstance(parsed.evidence, SegmentSurgeEvidence) and parsed == surge


def test_parser_rejects_what_the_contract_does_not_allow() -> None:
    d = window_trigger().to_dict()
    with pytest.raises(ValueError, match="kind"):
        Trigger.from_dict({**d, "kind": "vibes"})
    with pytest.raises(ValueError, match="severity"):
        Trigger.from_dict({**d, "severity": "meh"})
    with pytest.raises(ValueError, match="action"):
        Trigger.from_dict({**d, "recommendation": {"action": "panic"}})
    with pytest.raises(KeyError, match="trigger_id"):
        Trigger.from_dict({k: v for k, v in d.items() if k != "trigger_id"})
