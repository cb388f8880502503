"""The offline retraining planner finds what was planted in synthetic histories."""

from __future__ import annotations

import io

import numpy as np
import pytest

from stream_monitor.offline.planner import (
    Dataset,
    RetrainingPlanner,
    load_dataset,
    logistic,
    ridge,
    synthetic_decay,
)
from stream_monitor.progress import Progress


@pytest.mark.parametrize("horizon", [2, 5])
def test_planner_finds_the_planted_decay_horizon(horizon: int) -> None:
    data = synthetic_decay(periods=24, rows=5000, horizon=horizon, tolerance=0.1, seed=horizon)
    plan = RetrainingPlanner(data, ridge, task="regression", tolerance=0.1, starts=6).run()
    assert plan.decay.horizon == horizon
    # Degradation grows with the lag, and crosses the tolerance right after the horizon.
    assert plan.decay.degradation[horizon - 1] <= 0.1 < plan.decay.degradation[horizon]
    # Retraining every period beats never retraining on a drifting concept.
    assert plan.cadence.gain[plan.cadence.every.index(1)] > 0.1
    # Old data hurts: the shortest windows are the best ones.
    assert plan.window.suggested <= 2


def test_stationary_history_never_decays() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12 * 1000, 3))
    y = X @ np.array([1.0, -0.5, 0.2]) + rng.normal(size=len(X))
    data = Dataset(X, y, np.repeat(np.arange(12), 1000), ["a", "b", "c"])
    plan = RetrainingPlanner(data, ridge, starts=4).run()
    assert plan.decay.horizon == len(plan.decay.lags)
    assert plan.cadence.suggested >= 6  # retraining buys nothing: the longest cadence is fine
    # The learning curve levels off: far fewer rows than the whole pool suffice.
    assert plan.learning_curve.suggested_size < plan.learning_curve.sizes[-1] / 2


def test_binary_task_with_logistic_and_progress() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(8 * 800, 2))
    y = (X[:, 0] + rng.normal(size=len(X)) > 0).astype(float)
    data = Dataset(X, y, np.repeat(np.arange(8), 800), ["a", "b"])
    stream = io.StringIO()
    plan = RetrainingPlanner(data, logistic, task="binary", starts=3, progress=Progress(out=stream)).run()
    assert plan.metric == "auc" and 0.7 < plan.decay.fresh < 0.9
    assert stream.getvalue().rstrip().endswith("s") and "#" * 30 in stream.getvalue()


def test_load_dataset_csv_with_categoricals(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "h.csv"
    path.write_text(
        "ts,x,colour,y\n"
        + "".join(f"{1735689600 + i * 3600},{i},{'red' if i % 2 else 'blue'},{i * 2}\n" for i in range(72))
    )
    data = load_dataset(path, "ts", "y")
    assert data.n_periods == 3 and data.feature_names == ["x", "colour=blue", "colour=red"]
    assert data.X.shape == (72, 3) and data.y[-1] == 142.0
