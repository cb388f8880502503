"""The offline commands need no broker: a configuration without a ``kafka`` section is enough for
``replay``, ``reference build``, ``calibrate``, ``insights dna`` and ``plan`` (the last two read no
configuration at all). ``run`` and the other Kafka commands refuse it, naming the missing key."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
import yaml

from stream_monitor.cli import main
from stream_monitor.config import consumer_config, load_config, parse_config, producer_config
from stream_monitor.errors import ConfigError
from stream_monitor.offline.reference_io import read_reference

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DATA = EXAMPLES / "data"


@pytest.fixture(autouse=True)
def _no_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """An override such as STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVERS would add the kafka section back."""
    for name in list(os.environ):
        if name.upper().startswith("STREAM_MONITOR_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The example configuration without its kafka section (the model reference under data/)."""
    data = yaml.safe_load((EXAMPLES / "config.yaml").read_text())
    del data["kafka"]
    (tmp_path / "data").symlink_to(DATA)
    path = tmp_path / "offline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_configuration_without_kafka_loads(config: Path) -> None:
    app = load_config(str(config), env={})
    assert [m.schema.model_id for m in app.models] == ["bikes", "churn"]
    for needs_a_broker in (app.require_kafka, lambda: consumer_config(app), lambda: producer_config(app)):
        with pytest.raises(ConfigError) as info:
            needs_a_broker()
        assert info.value.key == "kafka.bootstrap_servers"


def test_replay_reference_build_calibrate_insights_and_plan(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    triggers, insights = tmp_path / "triggers.jsonl", tmp_path / "insights"
    predictions, labels = DATA / "bikes_predictions.jsonl.gz", DATA / "bikes_labels.jsonl.gz"
    replay = ["replay", "--config", str(config), "--out", str(triggers), "--insights-dir", str(insights)]
    assert main([*replay, str(predictions), str(labels)]) == 0
    assert [orjson.loads(line)["model_id"] for line in triggers.read_text().splitlines()][:1] == ["bikes"]

    reference = tmp_path / "bikes.reference.json"
    build = ["reference", "build", "--config", str(config), "--model", "bikes", "--out", str(reference)]
    assert main([*build, str(DATA / "bikes_training.csv")]) == 0
    assert read_reference(reference).baseline["mae"] > 0

    snippet = tmp_path / "thresholds.yaml"
    calibrate = ["calibrate", "--config", str(config), "--model", "bikes", "--windows", "20"]
    assert main([*calibrate, "--out", str(snippet), str(DATA / "bikes_training.csv")]) == 0
    assert yaml.safe_load(snippet.read_text())["policy"]["psi_alarm"] > 0

    assert main(["insights", "dna", "--model", "bikes", "--dir", str(insights)]) == 0
    assert (insights / "bikes_dna.json").is_file()

    plan = ["plan", str(predictions), "--labels", str(labels), "--quiet", "--out", str(tmp_path / "plan")]
    assert main(plan) == 0
    assert (tmp_path / "plan" / "retraining_plan.md").is_file()
    assert "kafka" not in capsys.readouterr().err.lower()


@pytest.mark.parametrize(
    "command",
    [["run"], ["topics", "create"], ["triggers", "tail", "--max", "1", "--timeout", "1"]],
    ids=lambda command: " ".join(command[:2]),
)
def test_the_kafka_commands_refuse_it_naming_the_key(
    config: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "config error at kafka.bootstrap_servers: is required" in err
    assert "replay, reference build, calibrate, insights and plan" in err


def test_a_kafka_section_that_is_there_is_still_checked(config: Path) -> None:
    data = yaml.safe_load(config.read_text())
    data["kafka"] = {"group_id": "g"}  # present, but without its servers
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert info.value.key == "kafka.bootstrap_servers"
