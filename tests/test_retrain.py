"""The retrainer's pure logic against oracles, and the example retrainer's record handling without a broker.

- :func:`select_training_rows`, :func:`exclusion_counts`, :func:`recent_rows` against brute force over
  generated periods (half-open ``[start, end)``, exclusion wins);
- :class:`LinearModel` against scikit-learn's ``LinearRegression`` on a full one-hot encoding (the same
  predictions: both span the same columns), collinear features included, and its JSON round trip;
- :func:`validate`: promote, the margin not met, worse, better but not confidently, too few rows, its
  bootstrap against an independent one, and the promise that it never promotes below the margin;
- ``examples/retrainer/retrainer.py``: garbage and lifecycle records skipped, other models and actions
  skipped, a trigger acted on once (a restart included), train_on minus exclude minus the held-out rows
  trained on, the reference built by the real ``reference build`` before ``reference publish`` and the
  deployment, a candidate no better than the deployed model kept, a failure retried.
"""

from __future__ import annotations

import doctest
import gzip
import importlib.util
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_monitor.cli import main as cli_main
from stream_monitor.config import load_config
from stream_monitor.core.detectors.base import DetectorResult
from stream_monitor.core.triggers import (
    ExcludedPeriod,
    Period,
    Recommendation,
    Trigger,
    Window,
    WindowEvidence,
    build_trigger,
)
from stream_monitor.offline.demo_data import DAY, START_TS, BikeStory
from stream_monitor.offline.reference_io import read_reference
from stream_monitor.offline.retrain import (
    LinearModel,
    exclusion_counts,
    next_version,
    recent_rows,
    select_training_rows,
    validate,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "retrainer"
CONFIG = ROOT / "examples" / "config.yaml"


def _load(name: str) -> ModuleType:
    """An example script as a module (examples/ is not a package; serve.py imports ``retrainer``)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


retrainer = _load("retrainer")


@pytest.fixture(autouse=True)
def _no_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example configuration is read as written (an override would change the model's columns)."""
    for name in list(os.environ):
        if name.upper().startswith("STREAM_MONITOR_"):
            monkeypatch.delenv(name)


# -- which rows --------------------------------------------------------------------------------------

_times = st.floats(min_value=-50.0, max_value=150.0, allow_nan=False)
_period = st.tuples(_times, _times).map(lambda p: {"start": min(p), "end": max(p)})


def _brute_in(t: float, periods: Sequence[dict[str, float]]) -> bool:
    return any(p["start"] <= t < p["end"] for p in periods)


@settings(max_examples=200, deadline=None)
@given(
    ts=st.lists(st.one_of(_times, st.just(math.nan), st.integers(-50, 150).map(float)), max_size=40),
    train_on=st.lists(_period, max_size=4),
    exclude=st.lists(_period, max_size=4),
)
def test_training_rows_are_in_a_train_on_period_and_in_no_excluded_one(
    ts: list[float], train_on: list[dict[str, float]], exclude: list[dict[str, float]]
) -> None:
    excluded = [{**p, "reason": "integrity_incident"} for p in exclude]
    got = select_training_rows(np.array(ts), train_on, excluded)
    expected = [_brute_in(t, train_on) and not _brute_in(t, exclude) for t in ts]
    assert got.tolist() == expected
    counts = exclusion_counts(np.array(ts), excluded)
    assert sum(counts.values()) == sum(_brute_in(t, exclude) for t in ts)


def test_periods_are_half_open_and_take_the_trigger_dataclasses() -> None:
    ts = np.array([10.0, 20.0, 30.0])
    train_on = (Period(start=10.0, end=30.0, buckets=2),)
    exclude = (ExcludedPeriod(start=20.0, end=21.0, reason="one_off_regime"),)
    assert select_training_rows(ts, train_on, exclude).tolist() == [True, False, False]
    assert exclusion_counts(ts, exclude) == {"one_off_regime": 1}


@settings(max_examples=100, deadline=None)
@given(
    ts=st.lists(st.one_of(st.integers(0, 20).map(float), st.just(math.nan)), max_size=30),
    rows=st.integers(0, 35),
    days=st.floats(0.0, 25.0),
)
def test_recent_rows_against_a_sort(ts: list[float], rows: int, days: float) -> None:
    array = np.array(ts, dtype=np.float64)
    known = [i for i, t in enumerate(ts) if not math.isnan(t)]
    newest_first = sorted(known, key=lambda i: (ts[i], i), reverse=True)
    assert set(np.flatnonzero(recent_rows(array, rows=rows)).tolist()) == set(newest_first[:rows])
    newest = max((ts[i] for i in known), default=math.nan)
    expected = [not math.isnan(t) and t > newest - days for t in ts]
    assert recent_rows(array / 1.0 * DAY, days=days).tolist() == expected


def test_recent_rows_wants_one_measure() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        recent_rows(np.zeros(3))
    with pytest.raises(ValueError, match="exactly one"):
        recent_rows(np.zeros(3), days=1.0, rows=1)


# -- the model ---------------------------------------------------------------------------------------


def _table(n: int, seed: int) -> tuple[list[dict[str, Any]], np.ndarray]:
    rng = np.random.default_rng(seed)
    temp = rng.normal(10, 5, n)
    humidity = rng.uniform(0, 1, n)
    weather = rng.choice(["clear", "mist", "rain"], n, p=[0.6, 0.3, 0.1])
    hour = rng.integers(0, 24, n)
    y = (
        20
        + 8 * temp
        - 20 * humidity
        + np.select([weather == "mist", weather == "rain"], [-15.0, -30.0], 0.0)
        + 40 * np.isin(hour, [8, 17])
        + rng.normal(0, 5, n)
    )
    rows = [
        {"temp": float(t), "humidity": float(h), "weather": str(w), "hour": int(hr), "ignored": "x"}
        for t, h, w, hr in zip(temp, humidity, weather, hour, strict=True)
    ]
    return rows, y


def _sklearn_predictions(
    train: list[dict[str, Any]],
    y: np.ndarray,
    test: list[dict[str, Any]],
    numeric: list[str],
    categorical: list[str],
) -> np.ndarray:
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import OneHotEncoder

    def numbers(rows: list[dict[str, Any]]) -> np.ndarray:
        return np.array([[float(r[f]) for f in numeric] for r in rows]).reshape(len(rows), len(numeric))

    encoder = OneHotEncoder(handle_unknown="ignore").fit([[str(r[f]) for f in categorical] for r in train])

    def design(rows: list[dict[str, Any]]) -> np.ndarray:
        onehot = encoder.transform([[str(r[f]) for f in categorical] for r in rows]).toarray()
        return np.hstack([numbers(rows), onehot])

    return LinearRegression().fit(design(train), y).predict(design(test))


def test_least_squares_matches_sklearn_linear_regression() -> None:
    rows, y = _table(600, seed=1)
    test_rows, _ = _table(200, seed=2)
    numeric, categorical = ["temp", "humidity"], ["weather", "hour"]
    model = LinearModel.fit(rows[:400], y[:400], numeric=numeric, categorical=categorical)
    oracle = _sklearn_predictions(rows[:400], y[:400], test_rows, numeric, categorical)
    np.testing.assert_allclose(model.predict(test_rows), oracle, rtol=1e-9, atol=1e-8)


def test_collinear_and_constant_features_give_sklearns_fitted_values() -> None:
    """``atemp`` = ``temp`` exactly and a constant column: the coefficients are not unique, the fitted
    values are (the projection of the target on the columns' span)."""
    rows, y = _table(300, seed=3)
    for row in rows:
        row["atemp"], row["constant"] = row["temp"], 4.0
    numeric, categorical = ["temp", "atemp", "constant", "humidity"], ["weather"]
    model = LinearModel.fit(rows, y, numeric=numeric, categorical=categorical)
    oracle = _sklearn_predictions(rows, y, rows, numeric, categorical)
    np.testing.assert_allclose(model.predict(rows), oracle, rtol=1e-9, atol=1e-7)
    assert model.scale["constant"] == 1.0 and model.numeric["constant"] == pytest.approx(0.0, abs=1e-9)


def test_missing_and_unknown_values_read_as_the_training_mean_and_the_baseline() -> None:
    rows, y = _table(300, seed=4)
    model = LinearModel.fit(rows, y, numeric=["temp", "humidity"], categorical=["weather"])
    baseline = max(model.categorical["weather"], key=lambda level: sum(r["weather"] == level for r in rows))
    assert model.categorical["weather"][baseline] == 0.0  # the most frequent level
    mean_temp = float(np.mean([r["temp"] for r in rows]))
    filled = {"temp": mean_temp, "humidity": 0.5, "weather": baseline}
    for odd in (
        {"temp": None, "humidity": 0.5, "weather": "snow"},
        {"humidity": 0.5},
        {"temp": "n/a", "humidity": 0.5, "weather": None},
        {"temp": float("inf"), "humidity": 0.5, "weather": ""},
    ):
        assert model.predict([odd])[0] == pytest.approx(model.predict([filled])[0])


def test_categorical_values_have_one_spelling() -> None:
    rows = [{"flag": v} for v in (True, "true", False, "false", 1, "1.0")]
    model = LinearModel.fit(rows, [2.0, 2.0, 0.0, 0.0, 5.0, 5.0], numeric=[], categorical=["flag"])
    assert sorted(model.categorical["flag"]) == ["1", "false", "true"]
    np.testing.assert_allclose(
        model.predict([{"flag": "True"}, {"flag": 1.0}, {"flag": "FALSE"}]), [2, 5, 0], atol=1e-9
    )


def test_the_model_is_plain_json_and_reads_back_equal() -> None:
    rows, y = _table(200, seed=5)
    model = LinearModel.fit(rows, y, numeric=["temp", "humidity"], categorical=["weather", "hour"])
    data = model.to_json()
    assert data.startswith(b'{"format":"stream-monitor/linear-model"')
    again = LinearModel.from_json(data)
    assert again == model
    np.testing.assert_array_equal(again.predict(rows), model.predict(rows))
    assert again.features == (["temp", "humidity"], ["weather", "hour"])


@pytest.mark.parametrize(
    "bad",
    [
        b"[]",
        b'{"format": "pickle"}',
        b'{"format": "stream-monitor/linear-model", "format_version": 2}',
        b'{"format": "stream-monitor/linear-model", "format_version": 1, "intercept": 1}',
        b'{"format": "stream-monitor/linear-model", "format_version": 1, "intercept": "1", "numeric": {},'
        b' "categorical": {}, "n_train": 1}',
        b'{"format": "stream-monitor/linear-model", "format_version": 1, "intercept": 1, "numeric": '
        b'{"x": {"coef": 1, "center": 0, "scale": 0}}, "categorical": {}, "n_train": 1}',
    ],
)
def test_a_bad_model_record_is_a_value_error(bad: bytes) -> None:
    with pytest.raises(ValueError):
        LinearModel.from_json(bad)


def test_fit_refuses_what_it_cannot_fit() -> None:
    with pytest.raises(ValueError, match="no rows"):
        LinearModel.fit([], [], numeric=["x"])
    with pytest.raises(ValueError, match="not finite"):
        LinearModel.fit([{"x": 1}, {"x": 2}], [1.0, math.nan], numeric=["x"])
    with pytest.raises(ValueError, match="targets of shape"):
        LinearModel.fit([{"x": 1}], [1.0, 2.0], numeric=["x"])
    with pytest.raises(ValueError, match="both numeric and categorical"):
        LinearModel.fit([{"x": 1}], [1.0], numeric=["x"], categorical=["x"])


# -- promote or keep ---------------------------------------------------------------------------------


def _errors(n: int, scale: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, scale, n)


def test_a_clearly_better_candidate_is_promoted() -> None:
    current = _errors(4800, 14.0, 1)
    candidate = _errors(4800, 10.0, 2)
    v = validate(
        candidate,
        current,
        rng=np.random.default_rng(0),
        current_version="2025.01",
        candidate_version="2025.02",
    )
    assert v.promote and v.n == 4800 and v.confidence == 1.0
    assert v.candidate_mae == pytest.approx(np.abs(candidate).mean())
    assert v.current_mae == pytest.approx(np.abs(current).mean())
    assert v.reason.startswith("promoted 2025.02: candidate MAE 8.0")
    assert v.to_dict()["improvement"] == pytest.approx(1 - v.candidate_mae / v.current_mae)


def test_a_candidate_better_by_less_than_the_margin_is_kept() -> None:
    """3 % lower on 4,800 rows is real (the bootstrap would agree) but below the 5 % a retrain must pay."""
    current = np.abs(_errors(4800, 14.0, 3))
    v = validate(current * 0.97, current, 0.05, rng=np.random.default_rng(0), current_version="2025.01")
    assert not v.promote
    assert v.reason == (
        f"kept 2025.01: candidate MAE {v.candidate_mae:.1f} vs current {v.current_mae:.1f} on 4,800 held-out "
        "rows; needs 5 % lower"
    )
    assert validate(current * 0.97, current, 0.02, rng=np.random.default_rng(0)).promote


def test_a_worse_candidate_is_kept() -> None:
    current = _errors(1000, 10.0, 4)
    assert not validate(current * 1.5, current, rng=np.random.default_rng(0)).promote


def test_better_by_the_margin_on_few_noisy_rows_is_not_enough() -> None:
    rng = np.random.default_rng(5)
    current = np.abs(rng.normal(0, 10, 40))
    candidate = np.abs(current * 0.75 + rng.normal(0, 6, 40))  # 7 % lower on average, noisy per row
    v = validate(candidate, current, rng=np.random.default_rng(0))
    assert v.improvement >= 0.05
    assert not v.promote and 0 < v.confidence < 0.95
    assert "but better in only" in v.reason and "needs 95 %" in v.reason


def test_too_few_rows_and_non_finite_pairs() -> None:
    v = validate([1.0] * 10, [5.0] * 10, rng=np.random.default_rng(0), min_rows=30)
    assert not v.promote and v.reason == "kept the current model: only 10 held-out rows; needs at least 30"
    candidate = np.r_[np.full(50, 1.0), np.nan, 3.0]
    current = np.r_[np.full(50, 2.0), 4.0, np.inf]
    v = validate(candidate, current, rng=np.random.default_rng(0))
    assert v.n == 50 and v.promote
    with pytest.raises(ValueError, match="paired"):
        validate([1.0, 2.0], [1.0], rng=np.random.default_rng(0))


def test_the_bootstrap_agrees_with_an_independent_one_and_is_seeded() -> None:
    rng = np.random.default_rng(6)
    current = np.abs(rng.normal(0, 10, 120))
    candidate = np.abs(current * 0.85 + rng.normal(0, 3, 120))
    v = validate(candidate, current, 0.0, rng=np.random.default_rng(0), confidence=0.5)
    # An independent paired bootstrap, one resample at a time.
    other = np.random.default_rng(99)
    gain = current - candidate
    share = np.mean([gain[other.integers(0, 120, 120)].mean() > 0 for _ in range(2000)])
    assert v.confidence == pytest.approx(share, abs=0.04)
    again = validate(candidate, current, 0.0, rng=np.random.default_rng(0), confidence=0.5)
    assert again == v


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 80),
    seed=st.integers(0, 2**16),
    factor=st.floats(0.5, 1.2),
    margin=st.sampled_from([0.0, 0.05, 0.2]),
)
def test_never_promoted_below_the_margin(n: int, seed: int, factor: float, margin: float) -> None:
    rng = np.random.default_rng(seed)
    current = np.abs(rng.normal(0, 10, n))
    candidate = np.abs(current * factor + rng.normal(0, 1, n))
    v = validate(candidate, current, margin, rng=np.random.default_rng(seed), min_rows=10, resamples=200)
    if v.promote:
        assert v.n >= 10 and v.candidate_mae <= (1 - margin) * v.current_mae and v.confidence >= 0.95
        assert v.reason.startswith("promoted")
    else:
        assert v.reason.startswith("kept")
    assert orjson.loads(orjson.dumps(v.to_dict()))["n"] == v.n  # always JSON-ready (no NaN)


@pytest.mark.parametrize(
    ("current", "following"),
    [
        ("2025.01", "2025.02"),
        ("2025.09", "2025.10"),
        ("7", "8"),
        ("v1.9", "v1.10"),
        ("2.0-rc1", "2.0-rc2"),
        ("model-003-eu", "model-004-eu"),
        ("abc", "abc.1"),
        ("", "1"),
        ("x²", "x².1"),
    ],
)
def test_next_version(current: str, following: str) -> None:
    assert next_version(current) == following


@given(st.text(max_size=12))
def test_next_version_is_always_a_new_name(current: str) -> None:
    assert next_version(current) != current


# -- the example retrainer, without a broker ---------------------------------------------------------

MODEL = "bikes"
SETTINGS = retrainer.RetrainSettings(
    model_id=MODEL,
    numeric=("temp", "atemp", "humidity", "windspeed"),
    categorical=("season", "weather", "hour"),
    holdout_days=1.0,
    min_train_rows=200,
    min_holdout_rows=100,
)


def _day(d: float) -> float:
    return START_TS + d * DAY


@pytest.fixture(scope="module")
def labelled_records() -> list[dict[str, Any]]:
    """Production days 14-30 of the bike story, 10 stations: the model (version 2025.01) under-estimates
    more each day from day 20 as the weather warms past what it saw in training."""
    events, labels = BikeStory(stations=10, days=30).production()
    return [{**e, "label": lab["label"]} for e, lab in zip(events, labels, strict=True)]


def _trigger(
    index: int,
    train_on: Sequence[tuple[float, float]],
    exclude: Sequence[tuple[float, float, str]] = (),
    *,
    action: str = "retrain",
    model_id: str = MODEL,
    model_version: str | None = None,
) -> Trigger:
    window = Window(start=_day(28), end=_day(29), events=240)
    return build_trigger(
        model_id=model_id,
        model_version=model_version,
        kind="data_drift",
        severity="critical",
        decision="data_drift",
        index=index,
        at=window.end,
        event_time=window.end,
        window=window,
        results=[DetectorResult("psi", "temp", "psi", 0.4, 0.15, drift=True)],
        evidence=WindowEvidence(
            events_in_window=240,
            window_index=index,
            labels_joined=3000.0,
            labels_pending=10.0,
            label_delay_seconds=3600.0,
        ),
        recommendation=Recommendation(
            action=action,  # type: ignore[arg-type]
            drift_started_at=_day(20),
            train_on=tuple(Period(start=_day(a), end=_day(b)) for a, b in train_on),
            exclude=tuple(ExcludedPeriod(start=_day(a), end=_day(b), reason=r) for a, b, r in exclude),
            new_labels_since_last_trigger=3000.0,
            enough_new_labels=True,
        ),
    ).with_emitted_at(1.7e9)


class FakeWorld:
    """What a broker and the publish command would be: the deployments topic as a list, the commands
    run in order. ``reference build`` is the real command, in process."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.log: list[tuple[str, Any]] = []
        self.deployments: list[bytes] = []
        self.decisions: list[dict[str, Any]] = []
        self.fail_publish = False

    def run_cli(self, args: Sequence[str]) -> str:
        self.log.append(("cli", list(args)))
        if list(args[:2]) == ["reference", "build"]:
            assert cli_main(list(args)) == 0
        elif list(args[:2]) == ["reference", "publish"] and self.fail_publish:
            raise retrainer.CommandFailed("reference publish exited 1: broker down")
        return ""

    def deploy(self, key: str, record: dict[str, Any]) -> None:
        self.log.append(("deploy", key))
        self.deployments.append(orjson.dumps(record))

    def make(self, workdir: Path) -> Any:
        app = load_config(str(CONFIG), check_references=False)
        model = app.model(MODEL)
        return retrainer.Retrainer(
            settings=SETTINGS,
            config_path=str(CONFIG),
            workdir=workdir,
            features=(*model.schema.numeric_names, *model.schema.categorical_names),
            segment_keys=model.schema.segment_keys,
            training=model.training,
            load_labelled=lambda: retrainer.labelled_from_records(self.records, MODEL)[0],
            current_deployment=lambda: retrainer.latest_deployment(self.deployments, MODEL),
            deploy=self.deploy,
            run_cli=self.run_cli,
            emit=self.decisions.append,
            clock=lambda: 1.7e9,
        )


def test_garbage_and_lifecycle_records_are_skipped(
    tmp_path: Path, labelled_records: list[dict[str, Any]]
) -> None:
    world = FakeWorld(labelled_records)
    service = world.make(tmp_path)
    lifecycle = {
        "record_id": "r1",
        "kind": "model_version_changed",
        "model_id": MODEL,
        "model_version": "2025.02",
        "previous_version": "2025.01",
        "emitted_at": 1.7e9,
        "event_time": 1.7e9,
        "active_versions": ["2025.01", "2025.02"],
        "retired_versions": [],
        "reference": {"source": "registry", "version": "2025.02"},
    }
    half = _trigger(1, [(20, 29)]).to_json_bytes()[:-40]
    unknown_kind = {**_trigger(1, [(20, 29)]).to_dict(), "kind": "gossip"}
    for value in (
        None,
        b"",
        b"{",
        b"[1]",
        b"\xff\xfe",
        orjson.dumps(lifecycle),
        half,
        orjson.dumps(unknown_kind),
    ):
        decision = service.handle(value)
        assert decision["decision"] == "skipped", value
    reasons = [service.handle(v)["reason"] for v in (b"{", orjson.dumps(lifecycle))]
    assert reasons == ["malformed_json", "lifecycle_record:model_version_changed"]
    assert world.decisions == [] and world.log == [] and len(service.handled) == 0


def test_other_models_and_other_actions_are_skipped(
    tmp_path: Path, labelled_records: list[dict[str, Any]]
) -> None:
    world = FakeWorld(labelled_records)
    service = world.make(tmp_path)
    assert service.handle(_trigger(1, [(20, 29)], model_id="churn").to_json_bytes())["reason"] == (
        "model 'churn' is not 'bikes'"
    )
    for action in ("wait_for_labels", "investigate"):
        decision = service.handle(_trigger(1, [(20, 29)], action=action).to_json_bytes())
        assert decision == {
            "decision": "skipped",
            "trigger_id": decision["trigger_id"],
            "reason": f"action {action}",
        }
    assert world.decisions == [] and world.log == []


def test_a_retrain_trigger_trains_on_its_periods_validates_publishes_then_deploys(
    tmp_path: Path, labelled_records: list[dict[str, Any]]
) -> None:
    world = FakeWorld(labelled_records)
    service = world.make(tmp_path)
    # Day 24 had an integrity incident (inside train_on: left out); the newest labelled day is held out.
    trigger = _trigger(
        1, [(20, 30)], [(24, 25, "integrity_incident"), (14, 20, "regime_not_in_recent_production")]
    )
    decision = service.handle(trigger.to_json_bytes())

    assert decision["decision"] == "promoted", decision["reason"]
    assert world.decisions == [decision]
    assert decision["current_version"] == "2025.01" and decision["candidate_version"] == "2025.02"
    assert decision["current_model"] == "recorded_predictions"
    assert decision["reason"].startswith("promoted 2025.02: candidate MAE ")
    validation = decision["validation"]

    # The split, by brute force over the labelled events: held out is the newest day of them (not in an
    # excluded period), trained on is train_on minus exclude minus that.
    newest = max(r["ts"] for r in labelled_records)
    held_out = {r["event_id"] for r in labelled_records if r["ts"] > newest - DAY}
    expected = {
        r["event_id"]
        for r in labelled_records
        if (_day(20) <= r["ts"] < _day(24) or _day(25) <= r["ts"] < _day(30))
        and r["event_id"] not in held_out
    }
    assert 235 <= len(held_out) <= 245 and 1900 <= len(expected) <= 1920  # about 8 days of 240 events
    assert decision["training"]["rows"] == len(expected)
    assert decision["training"]["held_out_rows"] == len(held_out)
    assert validation["promote"] and validation["n"] == len(held_out)
    assert validation["candidate_mae"] < 0.7 * validation["current_mae"]  # the story's model saturates
    assert decision["training"]["excluded_rows"] == {
        "integrity_incident": 240,
        "regime_not_in_recent_production": 6 * 240,
    }

    # Reference built from those rows (the real command), published under the new version, then deployed.
    run_dir = tmp_path / "bikes-2025.02"
    build, publish = world.log[0][1], world.log[1][1]
    assert build == [
        "reference",
        "build",
        "--config",
        str(CONFIG),
        "--model",
        MODEL,
        "--out",
        str(run_dir / "reference.json"),
        str(run_dir / "training.csv"),
    ]
    assert publish == [
        "reference",
        "publish",
        "--config",
        str(CONFIG),
        "--model",
        MODEL,
        "--version",
        "2025.02",
        str(run_dir / "reference.json"),
    ]
    assert world.log[2] == ("deploy", MODEL) and len(world.log) == 3
    profile = read_reference(run_dir / "reference.json")
    assert profile.n_events == len(expected)
    assert profile.baseline["mae"] == pytest.approx(
        np.mean(np.abs(_training_file_errors(run_dir / "training.csv"))), rel=1e-9
    )
    import csv

    with (run_dir / "training.csv").open() as handle:
        written = list(csv.DictReader(handle))
    stamps = np.array([float(r["ts"]) for r in written])
    assert len(written) == len(expected)
    assert ((stamps >= _day(20)) & (stamps < _day(30))).all() and not (
        (stamps >= _day(24)) & (stamps < _day(25))
    ).any()
    assert (stamps <= newest - DAY).all()
    assert {r["station_type"] for r in written} == {"downtown", "residential"}

    record = orjson.loads(world.deployments[0])
    assert record["model_id"] == MODEL and record["model_version"] == "2025.02" and record["promoted"] is True
    assert record["trigger_id"] == trigger.trigger_id and record["lineage"] == ["2025.01"]
    assert record["validation"] == validation
    deployed = LinearModel.from_dict(record["model"])
    assert deployed == LinearModel.from_json((run_dir / "model.json").read_bytes())
    assert [float(r["prediction"]) for r in written] == pytest.approx(
        deployed.predict([{k: _cell_value(v) for k, v in r.items()} for r in written]).tolist()
    )


def _training_file_errors(path: Path) -> list[float]:
    import csv

    with path.open() as handle:
        return [float(r["prediction"]) - float(r["label"]) for r in csv.DictReader(handle)]


def _cell_value(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def test_a_trigger_is_acted_on_once_even_after_a_restart(
    tmp_path: Path, labelled_records: list[dict[str, Any]]
) -> None:
    world = FakeWorld(labelled_records)
    trigger = _trigger(1, [(20, 30)]).to_json_bytes()
    assert world.make(tmp_path).handle(trigger)["decision"] == "promoted"
    restarted = world.make(tmp_path)
    assert restarted.handle(trigger)["reason"] == "already handled"
    assert len(world.deployments) == 1 and len(world.decisions) == 1
    assert orjson.loads((tmp_path / "handled-triggers.json").read_bytes()) == [
        orjson.loads(trigger)["trigger_id"]
    ]


def test_a_candidate_no_better_than_the_deployed_model_is_kept(
    tmp_path: Path, labelled_records: list[dict[str, Any]]
) -> None:
    world = FakeWorld(labelled_records)
    service = world.make(tmp_path)
    assert service.handle(_trigger(1, [(20, 30)]).to_json_bytes())["decision"] == "promoted"
    # The next trigger recommends the same data: its candidate is the deployed model again.
    again = service.handle(_trigger(2, [(20, 30)], model_version="2024-05-01").to_json_bytes())
    assert again["decision"] == "kept" and again["current_model"] == "deployed_model"
    assert again["reason"].startswith("kept 2025.02: candidate MAE ") and again["reason"].endswith(
        "needs 5 % lower"
    )
    assert again["candidate_version"] == "2025.03" and "deployment" not in again
    assert len(world.deployments) == 1 and [d["decision"] for d in world.decisions] == ["promoted", "kept"]
    # A trigger about the version the deployment replaced describes a model no longer served.
    stale = service.handle(_trigger(3, [(20, 30)], model_version="2025.01").to_json_bytes())
    assert stale["reason"] == "about version 2025.01, replaced by 2025.02"


def test_too_little_data_in_the_recommended_periods_keeps_the_model(
    tmp_path: Path, labelled_records: list[dict[str, Any]]
) -> None:
    world = FakeWorld(labelled_records)
    decision = world.make(tmp_path).handle(_trigger(1, [(29, 30)]).to_json_bytes())  # all of it held out
    assert decision["decision"] == "kept" and world.log == []
    assert decision["reason"] == (
        "kept 2025.01: only 0 labelled rows to train on (train_on minus exclude minus the held-out rows); "
        "needs at least 200"
    )


def test_a_failure_is_reported_and_retried_not_remembered(
    tmp_path: Path, labelled_records: list[dict[str, Any]]
) -> None:
    world = FakeWorld(labelled_records)
    service = world.make(tmp_path)
    world.fail_publish = True
    trigger = _trigger(1, [(20, 30)]).to_json_bytes()
    failed = service.handle(trigger)
    assert failed["decision"] == "failed" and "broker down" in failed["reason"]
    assert world.deployments == [] and trigger not in service.handled
    world.fail_publish = False
    assert service.handle(trigger)["decision"] == "promoted"
    assert len(world.deployments) == 1


def test_labelled_events_from_files(tmp_path: Path) -> None:
    lines = [
        orjson.dumps({"event_id": "a", "ts": "2025-01-02T00:00:00Z", "features": {"temp": 1}, "label": 2}),
        b"not json",
        orjson.dumps({"event_id": "b", "model_id": "churn", "ts": 1, "features": {}, "label": 1}),
        orjson.dumps(
            {"event_id": "a", "ts": 1735776000, "features": {"temp": 3}, "label": 4, "model_version": 7}
        ),
        orjson.dumps({"event_id": "c", "ts": 5, "features": [], "label": 1}),
        b"",
    ]
    path = tmp_path / "labelled.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    data, dropped = retrainer.labelled_from_records(retrainer.read_jsonl(path), MODEL)
    assert data.event_id == ["a"] and data.features == [{"temp": 3}] and data.model_version == ["7"]
    assert data.ts.tolist() == [1735776000.0] and data.label.tolist() == [4.0]
    assert dropped == {"bad_features": 1, "not_an_object": 1, "other_model": 1}


def test_an_unreadable_handled_file_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / "handled-triggers.json").write_text("{half")
    handled = retrainer.HandledTriggers(tmp_path / "handled-triggers.json")
    assert len(handled) == 0 and (tmp_path / "handled-triggers.json.unreadable").read_text() == "{half"
    handled.add("t1")
    assert "t1" in retrainer.HandledTriggers(tmp_path / "handled-triggers.json")


def test_the_commands_are_the_stream_monitor_cli_of_this_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []

    def fake_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        ran.append(command)
        return subprocess.CompletedProcess(command, 2, "", "stream-monitor: config error at x\n")

    monkeypatch.setattr(retrainer.subprocess, "run", fake_run)
    args = ["reference", "publish", "--config", "c.yaml", "--model", "m", "--version", "2", "ref.json"]
    with pytest.raises(retrainer.CommandFailed, match="exited 2: stream-monitor: config error at x"):
        retrainer.run_stream_monitor(args)
    assert ran == [[sys.executable, "-m", "stream_monitor.cli", *args]]


def test_deployment_records() -> None:
    model = LinearModel.fit([{"x": 1}, {"x": 2}], [1.0, 2.0], numeric=["x"])
    record = {
        "model_id": MODEL,
        "model_version": "2",
        "model": model.to_dict(),
        "lineage": ["1"],
        "promoted": True,
    }
    values = [
        orjson.dumps(record),
        b"{",
        orjson.dumps({**record, "model_id": "churn", "model_version": "9"}),
        orjson.dumps({**record, "model_version": "3", "model": {"format": "pickle"}}),
        None,
    ]
    latest = retrainer.latest_deployment(values, MODEL)
    assert latest is not None and latest.version == "2" and latest.model == model and latest.lineage == ("1",)
    assert retrainer.latest_deployment([orjson.dumps({**record, "promoted": False})], MODEL) is None


def test_the_examples_doctests() -> None:
    serve = _load("serve")
    for module in (retrainer, serve):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__
