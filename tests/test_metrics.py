"""Prometheus metrics fed from engine outputs: values, and label cardinality bounded by configuration."""

from __future__ import annotations

import random

import orjson
import pytest
from prometheus_client import CollectorRegistry

from stream_monitor.core.engine import EngineOutput, MonitoringEngine
from stream_monitor.core.schema import FeatureSpec, ModelSchema
from stream_monitor.core.settings import ModelSettings, PolicySettings, WindowSettings
from stream_monitor.offline.demo_data import SyntheticStream
from stream_monitor.offline.replay import label_heap, replay
from stream_monitor.web.metrics import ServiceMetrics, bounded_reason

STREAM = SyntheticStream(
    n=12_000, drift_at=6000, mean_shift={"x0": 1.5}, label_fraction=0.5, label_delay=5.0, seed=41
)
SCHEMA = ModelSchema("synth", "binary", STREAM.schema_features())
SETTINGS = ModelSettings(
    window=WindowSettings(size=1000), warmup_events=2000, policy=PolicySettings(cooldown_seconds=0.0)
)


def series(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (s.name, tuple(sorted(s.labels.items()))) for metric in registry.collect() for s in metric.samples
    }


@pytest.fixture
def observed() -> tuple[CollectorRegistry, list[EngineOutput], MonitoringEngine]:
    registry = CollectorRegistry()
    metrics = ServiceMetrics({"synth": SCHEMA}, registry)
    engine = MonitoringEngine({"synth": SCHEMA}, {"synth": SETTINGS})
    preds, labels = STREAM.raw()
    bad = [b"{not json", b'{"event_id": "z", "model_id": "nope", "ts": 1, "features": {}}']
    preds = [*preds[:100], *bad, *preds[100:]]
    outputs: list[EngineOutput] = []

    def observe(out: EngineOutput, stream: str) -> None:
        metrics.observe(out, stream)
        metrics.set_label_buffers(engine.label_buffers())
        outputs.append(out)

    replay(
        engine,
        [preds[i : i + 1000] for i in range(0, len(preds), 1000)],
        label_heap(labels),
        on_output=observe,
    )
    return registry, outputs, engine


def test_values_after_observing_engine_outputs(
    observed: tuple[CollectorRegistry, list[EngineOutput], MonitoringEngine],
) -> None:
    registry, outputs, engine = observed
    get = registry.get_sample_value
    assert get("stream_monitor_events_processed_total", {"model": "synth", "stream": "predictions"}) == 12_000
    # Labels are events too: every accepted label is counted, joined or not.
    assert get("stream_monitor_events_processed_total", {"model": "synth", "stream": "labels"}) == len(
        STREAM.raw()[1]
    )
    assert get("stream_monitor_events_rejected_total", {"reason": "malformed_json"}) == 1
    assert get("stream_monitor_events_rejected_total", {"reason": "unknown_model"}) == 1
    joined = engine.monitors["synth"].labels.joined
    assert joined > 5000
    assert get("stream_monitor_labels_joined_total", {"model": "synth"}) == joined
    evaluations = [ev for o in outputs for m in o.per_model.values() for ev in m.evaluations]
    assert (
        get("stream_monitor_windows_closed_total", {"model": "synth", "version": "1"})
        == len(evaluations)
        == 10
    )
    last = evaluations[-1]
    psi = {r.feature: r.value for r in last.results if r.detector == "psi"}
    assert get("stream_monitor_feature_psi", {"model": "synth", "version": "1", "feature": "x0"}) == psi["x0"]
    assert get("stream_monitor_prediction_psi", {"model": "synth", "version": "1"}) == psi["__prediction__"]
    assert (
        get("stream_monitor_feature_drift_detected", {"model": "synth", "version": "1", "feature": "x0"})
        == 1.0
    )
    assert (
        get("stream_monitor_feature_drift_detected", {"model": "synth", "version": "1", "feature": "x5"})
        == 0.0
    )
    ks = next(r for r in last.results if r.detector == "ks" and r.feature == "x0")
    assert (
        get("stream_monitor_feature_ks_pvalue", {"model": "synth", "version": "1", "feature": "x0"})
        == ks.p_value
    )
    assert (
        get("stream_monitor_performance", {"model": "synth", "version": "1", "metric": "auc"})
        == last.performance["auc"]
    )
    triggers = [t for o in outputs for t in o.triggers]
    assert triggers
    for kind in {t.kind for t in triggers}:
        for severity in ("warning", "critical"):
            expected = sum(1 for t in triggers if (t.kind, t.severity) == (kind, severity))
            labels = {"model": "synth", "kind": kind, "severity": severity}
            assert get("stream_monitor_triggers_emitted_total", labels) == expected
    assert (
        get("stream_monitor_last_trigger_timestamp_seconds", {"model": "synth", "version": "1"})
        == triggers[-1].event_time
    )
    # The label-join gauges come from the engine's buffers (set after every batch), not from windows.
    buffers = engine.label_buffers()["synth"]
    assert get("stream_monitor_labels_pending", {"model": "synth"}) == buffers["pending"] > 0
    assert get("stream_monitor_labels_orphan", {"model": "synth"}) == buffers["orphan"]
    assert get("stream_monitor_labels_expired", {"model": "synth"}) == buffers["expired"]


def random_messages(seed: int, n: int = 10_000) -> tuple[list[bytes], set[str]]:
    """Predictions with random model ids, random feature names and bad values; and the random words."""
    rng = random.Random(seed)
    words: set[str] = set()

    def word() -> str:
        w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz_0123456789") for _ in range(rng.randint(4, 12)))
        words.add(w)
        return w

    raws = []
    for i in range(n):
        model = rng.choice(["synth", word()])
        features: dict[str, object] = {word(): rng.random() for _ in range(3)}
        features["x0"] = rng.choice([1.0, "bad", None])
        if rng.random() < 0.5:
            features[word()] = {"nested": 1}
        event = {"event_id": f"r{seed}-{i}", "model_id": model, "ts": 1.8e9 + i, "features": features}
        raws.append(orjson.dumps({**event, "prediction": rng.choice([0.5, "x", None])}))
    return raws, words


def test_random_model_ids_and_feature_names_add_no_series() -> None:
    registry = CollectorRegistry()
    metrics = ServiceMetrics({"synth": SCHEMA}, registry)
    engine = MonitoringEngine({"synth": SCHEMA}, {"synth": SETTINGS})
    preds, _ = SyntheticStream(n=3000, seed=42).raw()
    metrics.observe(engine.process_predictions(preds, now=0.0), "predictions")  # warm-up done, windows open

    def feed(raws: list[bytes]) -> None:
        for i in range(0, len(raws), 1000):
            metrics.observe(engine.process_predictions(raws[i : i + 1000], now=0.0), "predictions")
            metrics.observe(engine.process_labels(raws[i : i + 1000], now=0.0), "labels")

    first, words_a = random_messages(1)
    feed(first)
    before = series(registry)
    second, words_b = random_messages(2)
    feed(second)
    after = series(registry)
    assert after == before  # 10k more random messages: not one new series
    values = {v for _, labels in after for _, v in labels}
    assert not values & (words_a | words_b)  # no label value comes from event data
    assert {"synth"} == {dict(labels)["model"] for _, labels in after if "model" in dict(labels)}
    reasons = {dict(labels).get("reason") for name, labels in after if "events_rejected" in name}
    assert "bad_type:features.x0" in reasons and "unknown_model" in reasons


def test_bounded_reason() -> None:
    schemas = {
        "m": ModelSchema("m", "binary", (FeatureSpec("age", "numeric"), FeatureSpec("city", "categorical")))
    }
    assert bounded_reason("bad_type:features.age", schemas) == "bad_type:features.age"
    assert bounded_reason("non_finite:features.city", schemas) == "non_finite:features.city"
    assert bounded_reason("bad_type:features.zz_9", schemas) == "bad_type:features.other"
    assert bounded_reason("non_finite:features.", schemas) == "non_finite:features.other"
    for fixed in ("malformed_json", "unknown_model", "missing_field:ts", "non_finite:prediction.score"):
        assert bounded_reason(fixed, schemas) == fixed
