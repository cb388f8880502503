"""Training files as real tools write them: pandas' timestamps, epoch seconds and milliseconds, named
columns (flags and the model's ``training:`` keys), a clear warning when a baseline cannot exist, and a
baseline decided the way the live metrics decide."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from stream_monitor.app import baseline_warnings, load_references
from stream_monitor.cli import main
from stream_monitor.config import load_config, parse_config
from stream_monitor.core.events import decode_labels, decode_predictions
from stream_monitor.core.performance import RollingPerformance
from stream_monitor.core.reference import ReferenceProfile
from stream_monitor.core.schema import FeatureSpec, ModelSchema
from stream_monitor.core.settings import TrainingDataSettings
from stream_monitor.errors import ConfigError
from stream_monitor.offline.reference_io import (
    TrainingDataError,
    build_reference_file,
    read_reference,
    read_training_data,
    read_training_rows,
)

pd = pytest.importorskip("pandas")

SCHEMA = ModelSchema("churn", "binary", (FeatureSpec("age", "numeric"), FeatureSpec("plan", "categorical")))
MODEL = {"id": "churn", "task": "binary", "features": {"age": "numeric", "plan": "categorical"}}
JAN_1_2011 = 1293840000.0  # 2011-01-01T00:00:00Z


@pytest.fixture(autouse=True)
def _no_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads STREAM_MONITOR_* overrides: none here (a test harness may set some)."""
    for name in list(os.environ):
        if name.upper().startswith("STREAM_MONITOR_"):
            monkeypatch.delenv(name)


def write_config(tmp_path: Path, **model: Any) -> Path:
    path = tmp_path / "config.yaml"  # no kafka section: reference build needs no broker
    path.write_text(yaml.safe_dump({"models": [{**MODEL, **model}]}))
    return path


# --- timestamps --------------------------------------------------------------------------------------


def test_pandas_timestamps_in_csv_are_read_in_the_configured_zone(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "age": [30, 40, 50],
            "plan": ["a", "b", "a"],
            # what to_csv writes for naive datetimes: "2011-01-01 00:00:00.500", no zone
            "ts": pd.to_datetime(
                ["2011-01-01 00:00:00.5", "2011-01-01 01:00:00", "2011-07-01 00:00:00"], format="ISO8601"
            ),
        }
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    assert "2011-01-01 00:00:00.500" in (tmp_path / "t.csv").read_text()
    batch, _ = read_training_rows(tmp_path / "t.csv", SCHEMA)
    july = JAN_1_2011 + 181 * 86400
    np.testing.assert_array_equal(batch.ts, [JAN_1_2011 + 0.5, JAN_1_2011 + 3600, july])
    berlin, _ = read_training_rows(
        tmp_path / "t.csv", SCHEMA, TrainingDataSettings(time_zone="Europe/Berlin")
    )
    # Winter is UTC+1, summer UTC+2: the zone, not a fixed offset.
    np.testing.assert_array_equal(berlin.ts, [JAN_1_2011 - 3600 + 0.5, JAN_1_2011, july - 7200])


def test_dates_offsets_epoch_seconds_and_milliseconds(tmp_path: Path) -> None:
    cells = [
        "2011-01-01",  # pandas writes a date column of midnights as bare dates
        "2011-01-01T00:00:00Z",
        "2011-01-01 01:00:00+01:00",  # a zone-aware column
        "1293840000",  # epoch seconds
        "1293840000000",  # epoch milliseconds (|x| >= 1e11)
        "-631152000000",  # 1950-01-01 in milliseconds
        "-62135596800",  # 0001-01-01 in seconds
        "9999-12-31 23:59:59",
    ]
    (tmp_path / "t.csv").write_text("age,plan,ts\n" + "".join(f"1,a,{c}\n" for c in cells))
    batch, _ = read_training_rows(tmp_path / "t.csv", SCHEMA)
    assert batch.ts.tolist() == [*[JAN_1_2011] * 5, -631152000.0, -62135596800.0, 253402300799.0]


def test_pandas_to_json_writes_milliseconds(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"age": [1, 2], "plan": ["a", "b"], "ts": pd.to_datetime(["2011-01-01", "1950-01-01"])}
    )
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True, date_format="epoch")
    batch, _ = read_training_rows(tmp_path / "t.jsonl", SCHEMA)
    assert batch.ts.tolist() == [JAN_1_2011, -631152000.0]


def test_parquet_timestamps_naive_in_the_zone_and_aware_as_they_say(tmp_path: Path) -> None:
    naive = pd.to_datetime(["2011-01-01 00:00:00", "2011-01-01 00:00:01"])
    frame = pd.DataFrame(
        {"age": [1, 2], "plan": ["a", "b"], "ts": naive, "aware": naive.tz_localize("Asia/Tokyo")}
    )
    frame.to_parquet(tmp_path / "t.parquet")
    batch, _ = read_training_rows(
        tmp_path / "t.parquet", SCHEMA, TrainingDataSettings(time_zone="Asia/Tokyo")
    )
    assert batch.ts.tolist() == [JAN_1_2011 - 9 * 3600, JAN_1_2011 - 9 * 3600 + 1]
    aware, _ = read_training_rows(tmp_path / "t.parquet", SCHEMA, TrainingDataSettings(ts_column="aware"))
    assert aware.ts.tolist() == batch.ts.tolist()


@pytest.mark.parametrize("cell", ["yesterday", "2011-13-01 00:00:00", "1e30", "10000-01-01 00:00:00"])
def test_a_cell_that_is_no_timestamp_names_the_line_and_column(tmp_path: Path, cell: str) -> None:
    (tmp_path / "t.csv").write_text(f"age,plan,when\n1,a,2011-01-01\n1,a,{cell}\n")
    with pytest.raises(TrainingDataError, match=r"t\.csv:3: column 'when': .* is not a timestamp"):
        read_training_rows(tmp_path / "t.csv", SCHEMA, TrainingDataSettings(ts_column="when"))


def test_an_unknown_time_zone_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"models": [{**MODEL, "training": {"time_zone": "Mars/Olympus"}}]}, env={})
    assert info.value.key == "models[0].training.time_zone"


# --- columns, warnings, the baseline --------------------------------------------------------------


def y_pred_file(tmp_path: Path) -> Path:
    """Columns named as scikit-learn users name them; the model predicts "1" from a score of 0.3."""
    rows = [
        ("30", "a", "0.9", "1", "1"),
        ("40", "b", "0.3", "1", "0"),
        ("50", "a", "0.35", "1", "1"),
        ("60", "b", "0.1", "0", "0"),
        ("70", "a", "0.2", "0", "1"),
    ]
    path = tmp_path / "scored.csv"
    path.write_text("age,plan,y_score,y_pred,y_true\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def test_reference_build_without_label_columns_warns_on_stderr(tmp_path: Path) -> None:
    """A y_pred/y_true file used to give "baseline {}" silently; now the profile comes with a warning."""
    config = write_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STREAM_MONITOR_")}
    out = tmp_path / "ref.json"
    args = ["reference", "build", "--config", str(config), "--model", "churn", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "stream_monitor.cli", *args, str(y_pred_file(tmp_path))],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "WARNING" in done.stderr and "no prediction column 'prediction'" in done.stderr
    assert (
        "no performance baseline" in done.stderr
        and "columns not read: y_pred, y_score, y_true" in done.stderr
    )
    assert read_reference(out).baseline == {}


def test_column_flags_give_the_baseline_the_live_metrics_compare_with(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path)
    out = tmp_path / "ref.json"
    args = ["reference", "build", "--config", str(config), "--model", "churn", "--out", str(out)]
    columns = [
        "--prediction-column",
        "y_score",
        "--prediction-label-column",
        "y_pred",
        "--label-column",
        "y_true",
    ]
    with caplog.at_level(logging.WARNING):
        assert main([*args, *columns, str(y_pred_file(tmp_path))]) == 0
    assert not [r for r in caplog.records if r.name == "stream_monitor.reference"]
    reference = read_reference(out)
    assert reference.baseline_decision == "predicted_class"

    # The same rows as live events carrying the model's decision (prediction.label) and their labels.
    rows = [line.split(",") for line in y_pred_file(tmp_path).read_text().splitlines()[1:]]
    events = [
        orjson.dumps(
            {
                "event_id": str(i),
                "model_id": "churn",
                "ts": i,
                "features": {"age": float(age), "plan": plan},
                "prediction": {"score": float(score), "label": pred},
            }
        )
        for i, (age, plan, score, pred, _) in enumerate(rows)
    ]
    labels = [
        orjson.dumps({"event_id": str(i), "model_id": "churn", "ts": i, "label": truth})
        for i, (*_, truth) in enumerate(rows)
    ]
    batch = decode_predictions(events, {"churn": SCHEMA})[0]["churn"]
    label_batch = decode_labels(labels, {"churn": SCHEMA})[0]["churn"]
    live = RollingPerformance("binary")
    live.update_arrays(batch.score, label_batch.label, batch.pred_label, label_batch.label_class)
    metrics = live.metrics()
    for name in ("f1", "accuracy", "auc"):
        assert reference.baseline[name] == pytest.approx(metrics[name]), name
    # The model's decisions (1,1,1,0,0) against the truth (1,0,1,0,1): F1 = 2·2 / (2·2 + 1 + 1). The
    # score at 0.5 alone would find 1 of 3 positives: F1 0.5, a baseline the live F1 never matches.
    assert reference.baseline["f1"] == pytest.approx(2 / 3)


def test_training_keys_in_the_configuration_and_flags_that_override_them(tmp_path: Path) -> None:
    training = {"prediction_column": "y_score", "prediction_label_column": "y_pred", "label_column": "nope"}
    config = write_config(tmp_path, training=training)
    out = tmp_path / "ref.json"
    args = ["reference", "build", "--config", str(config), "--model", "churn", "--out", str(out)]
    assert main([*args, "--label-column", "y_true", str(y_pred_file(tmp_path))]) == 0
    assert read_reference(out).baseline["f1"] == pytest.approx(2 / 3)
    assert load_config(str(config), env={}).model("churn").training == TrainingDataSettings(
        prediction_column="y_score", prediction_label_column="y_pred", label_column="nope"
    )


def test_without_a_predicted_class_both_sides_decide_by_the_score(tmp_path: Path) -> None:
    data = read_training_data(
        y_pred_file(tmp_path),
        SCHEMA,
        TrainingDataSettings(prediction_column="y_score", label_column="y_true"),
    )
    assert data.has_predictions and not data.has_prediction_labels and data.ignored == ["y_pred"]
    reference = build_reference_file(
        y_pred_file(tmp_path),
        SCHEMA,
        tmp_path / "ref.json",
        training=TrainingDataSettings(prediction_column="y_score", label_column="y_true"),
    )
    assert reference.baseline_decision == "score"
    live = RollingPerformance("binary")
    live.update_arrays(data.batch.score, data.labels if data.labels is not None else np.empty(0), [None] * 5)
    assert reference.baseline["f1"] == pytest.approx(live.metrics()["f1"]) == pytest.approx(0.5)


def test_a_binary_label_that_is_no_class_is_an_error_not_a_silent_negative(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("age,plan,prediction,label\n1,a,0.5,True\n1,a,0.5,maybe\n")
    with pytest.raises(TrainingDataError, match=r"t\.csv:3: column 'label': 'maybe' is not a class"):
        read_training_rows(tmp_path / "t.csv", SCHEMA)
    yes_no = ModelSchema("churn", "binary", SCHEMA.features, positive_class="yes", classes=("no", "yes"))
    (tmp_path / "t.csv").write_text("age,plan,prediction,label\n1,a,0.5,True\n1,a,0.5,0\n1,a,0.5,no\n")
    assert read_training_rows(tmp_path / "t.csv", yes_no)[1].tolist() == [1.0, 0.0, 0.0]


def test_a_named_predicted_class_column_must_exist(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="predicted-class column 'y_hat' not found"):
        read_training_rows(
            y_pred_file(tmp_path), SCHEMA, TrainingDataSettings(prediction_label_column="y_hat")
        )


# --- start-up: where the two cannot match, the service says so --------------------------------------


def test_start_up_warns_about_a_score_decided_baseline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    by_score = ReferenceProfile(1, "churn", baseline={"accuracy": 0.8, "f1": 0.7}, baseline_decision="score")
    (tmp_path / "ref.json").write_bytes(by_score.to_json())
    app = parse_config({"models": [{**MODEL, "reference": "ref.json"}]}, env={}, base_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="stream_monitor.app"):
        load_references(app)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "model 'churn'" in caplog.text and "--prediction-label-column" in caplog.text

    # A profile written before the decision was recorded is treated alike; one decided by the class,
    # a regression model or a baseline without accuracy are not warned about.
    old = ReferenceProfile(1, "churn", baseline={"accuracy": 0.8})
    assert len(baseline_warnings(app, {"churn": old})) == 1
    by_class = ReferenceProfile(1, "churn", baseline={"accuracy": 0.8}, baseline_decision="predicted_class")
    assert baseline_warnings(app, {"churn": by_class}) == []
    assert baseline_warnings(app, {"churn": ReferenceProfile(1, "churn", baseline={"auc": 0.8})}) == []


def test_the_baseline_decision_survives_json_and_state() -> None:
    profile = ReferenceProfile(1, "m", baseline={"accuracy": 0.5}, baseline_decision="predicted_class")
    assert ReferenceProfile.from_json(profile.to_json()) == profile
    assert ReferenceProfile.from_state(profile.to_state()) == profile
    # Profiles without it are written exactly as before (their digests do not change).
    assert b"baseline_decision" not in ReferenceProfile(1, "m").to_json()


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_the_configured_decision_threshold_decides_baseline_and_live_alike(
    tmp_path: Path, threshold: float
) -> None:
    from dataclasses import replace

    schema = replace(SCHEMA, decision_threshold=threshold)
    training = TrainingDataSettings(prediction_column="y_score", label_column="y_true")
    data = read_training_data(y_pred_file(tmp_path), schema, training)
    reference = build_reference_file(y_pred_file(tmp_path), schema, tmp_path / "ref.json", training=training)
    live = RollingPerformance("binary", decision_threshold=threshold)
    live.update_arrays(data.batch.score, data.labels if data.labels is not None else np.empty(0), [None] * 5)
    positive = data.batch.score >= threshold
    truth = data.labels == 1.0
    tp = float(np.sum(positive & truth))
    expected_f1 = 2 * tp / (2 * tp + np.sum(positive & ~truth) + np.sum(~positive & truth))
    assert reference.baseline["f1"] == pytest.approx(live.metrics()["f1"]) == pytest.approx(expected_f1)
