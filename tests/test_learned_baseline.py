"""A model without a reference file warms up from live events and learns its performance baseline."""

from __future__ import annotations

import numpy as np

from stream_monitor.core.events import LabelBatch, PredictionBatch
from stream_monitor.core.monitor import ModelMonitor
from stream_monitor.core.schema import FeatureSpec, ModelSchema
from stream_monitor.core.settings import InsightSettings, ModelSettings, WindowSettings

SCHEMA = ModelSchema("churn", "binary", (FeatureSpec("x", "numeric", key=True),))


def _stream(monitor: ModelMonitor, batches: int, decay_from: int, seed: int = 5) -> list[tuple[int, str]]:
    """Stationary features and scores; from batch ``decay_from`` on, labels stop following the score."""
    rng = np.random.default_rng(seed)
    fired = []
    for k in range(batches):
        n = 2000
        x = rng.normal(size=n)
        score = 1 / (1 + np.exp(-2 * x))
        truth = rng.uniform(size=n) < (score if k < decay_from else 0.5)
        ids = [f"e{k}-{i}" for i in range(n)]
        ts = k * n + np.arange(n, dtype=float)
        preds = PredictionBatch(
            "churn", np.arange(n), ids, ts, [None] * n, x[None, :], [], score, [None] * n, {}, 0
        )
        out = monitor.process_predictions(preds, now=float(ts[-1]))
        labels = LabelBatch(
            "churn", np.arange(n), ids, ts + 1.0, truth.astype(float), ["1" if t else "0" for t in truth]
        )
        monitor.process_labels(labels, now=float(ts[-1]) + 1.0)
        fired += [(k, t.kind) for t in out.triggers]
    return fired


def test_warmed_up_model_learns_a_baseline_and_detects_decay_after_it() -> None:
    settings = ModelSettings(window=WindowSettings(size=2000), warmup_events=4000, performance_window=4000)
    monitor = ModelMonitor(SCHEMA, settings)
    fired = _stream(monitor, batches=30, decay_from=15)
    assert monitor.reference is not None and not monitor.reference.baseline
    assert monitor.learned_baseline is not None and monitor.learned_baseline["auc"] > 0.7
    kinds = [kind for _, kind in fired]
    assert "performance" in kinds, fired
    assert all(k >= 15 for k, _ in fired), fired  # nothing before the decay


def test_without_decay_the_learned_baseline_never_triggers() -> None:
    settings = ModelSettings(window=WindowSettings(size=2000), warmup_events=4000, performance_window=4000)
    monitor = ModelMonitor(SCHEMA, settings)
    assert _stream(monitor, batches=30, decay_from=10**6) == []
    restored = ModelMonitor.restore(monitor.snapshot(), SCHEMA, settings)
    assert restored.learned_baseline == monitor.learned_baseline


def test_bucket_settings_reach_the_insight_tracker() -> None:
    settings = ModelSettings(
        window=WindowSettings(size=2000),
        warmup_events=4000,
        insights=InsightSettings(bucket_seconds=3600.0, retention=12),
    )
    monitor = ModelMonitor(SCHEMA, settings)
    _stream(monitor, batches=3, decay_from=10**6)
    assert monitor.insights is not None
    assert (monitor.insights.settings.bucket_seconds, monitor.insights.settings.retention) == (3600.0, 12)
