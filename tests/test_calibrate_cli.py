"""`stream-monitor calibrate`: a YAML snippet of thresholds that the configuration accepts."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from stream_monitor.cli import main
from stream_monitor.config import load_config
from stream_monitor.offline.demo_data import churn_events

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "config.yaml"


def test_calibrate_writes_thresholds_the_config_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [event for event, _ in churn_events(8000, seed=3)]
    names = sorted(rows[0]["features"])
    data = tmp_path / "train.csv"
    with data.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*names, "prediction", "ts"])
        for e in rows:
            writer.writerow([*(e["features"][k] for k in names), e["prediction"]["score"], e["ts"]])
    out = tmp_path / "thresholds.yaml"
    args = ["calibrate", "--config", str(EXAMPLE), "--model", "churn", "--windows", "40"]
    assert main([*args, "--window-events", "1000", "--out", str(out), str(data)]) == 0
    snippet = yaml.safe_load(out.read_text())
    assert out.read_text() == capsys.readouterr().out
    policy, detectors = snippet["policy"], snippet["detectors"]
    assert 0 < policy["psi_warning"] <= policy["psi_alarm"] <= policy["psi_critical"]
    assert 0 < detectors["ks_min_effect"] < 1 and policy["prediction_psi_alarm"] > 0

    config = yaml.safe_load(EXAMPLE.read_text())
    churn = next(m for m in config["models"] if m["id"] == "churn")
    churn.setdefault("policy", {}).update(policy)
    churn.setdefault("detectors", {}).update(detectors)
    calibrated = tmp_path / "config.yaml"
    calibrated.write_text(yaml.safe_dump(config))
    (tmp_path / "data").symlink_to(EXAMPLE.parent / "data")
    settings = load_config(str(calibrated), env={}).model("churn").settings
    assert settings.policy.psi_alarm == policy["psi_alarm"]
    assert settings.detectors.ks_min_effect == detectors["ks_min_effect"]
