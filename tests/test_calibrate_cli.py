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


def _training_csv(tmp_path: Path) -> Path:
    rows = [event for event, _ in churn_events(8000, seed=3)]
    names = sorted(rows[0]["features"])
    data = tmp_path / "train.csv"
    with data.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*names, "prediction", "ts"])
        for e in rows:
            writer.writerow([*(e["features"][k] for k in names), e["prediction"]["score"], e["ts"]])
    return data


def test_the_block_is_printed_indented_under_its_model_with_what_it_rests_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _training_csv(tmp_path)
    args = ["calibrate", "--config", str(EXAMPLE), "--model", "churn", "--windows", "20"]
    assert main([*args, "--window-events", "1000", str(data)]) == 0
    out = capsys.readouterr().out
    comments = [line for line in out.splitlines() if line.startswith("#")]
    block = [line for line in out.splitlines() if not line.startswith("#")]
    assert any("5 time blocks" in c for c in comments)
    assert any(c.startswith("# out of time: ") and "held-out windows" in c for c in comments)
    assert any("models[1] (id: churn)" in c for c in comments)
    # Indented as the model's sections sit in the file: keys at 4 spaces, their values at 6.
    assert block[0] == "    detectors:" and all(line.startswith("    ") for line in block)
    assert "    policy:" in block and "      psi_alarm: 0.1" in block  # held at its floor
    # The model's configured policy keys are kept, so the printed sections replace the model's own.
    sections = yaml.safe_load(out)
    assert sections["policy"]["cooldown_seconds"] == "1d" and sections["policy"]["key_class"] == "1"


def test_write_makes_a_copy_with_the_models_block_updated_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _training_csv(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(EXAMPLE.read_text())
    (tmp_path / "data").symlink_to(EXAMPLE.parent / "data")
    new = tmp_path / "calibrated.yaml"
    args = ["calibrate", "--config", str(config), "--model", "churn", "--windows", "20"]
    assert main([*args, "--window-events", "1000", "--write", str(new), str(data)]) == 0
    assert f"# wrote {new}: models[1] (churn) with " in capsys.readouterr().out
    before, after = config.read_text().splitlines(), new.read_text().splitlines()
    # Every line of the configuration is still there, in order, comments included; only keys were added.
    it = iter(after)
    assert all(any(line == other for other in it) for line in before)
    added = [line for line in after if line not in before]
    assert added and all(line.startswith("      ") or line == "    detectors:" for line in added)
    app = load_config(str(new), env={})
    churn, bikes = app.model("churn").settings, app.model("bikes").settings
    assert churn.policy.psi_alarm == 0.1 and churn.policy.cooldown_seconds == 86400.0
    assert churn.detectors.ks_min_effect >= 0.08
    assert bikes == load_config(str(config), env={}).model("bikes").settings  # the other model untouched


def test_write_never_overwrites_the_configuration_in_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _training_csv(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(EXAMPLE.read_text())
    args = ["calibrate", "--config", str(config), "--model", "churn", "--write", str(config), str(data)]
    assert main(args) != 0
    assert "--write makes an updated copy" in capsys.readouterr().err
    assert config.read_text() == EXAMPLE.read_text()
