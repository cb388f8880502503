"""Tests of the configuration loader: examples, validation messages, env overrides, secrets."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_monitor.app import load_references
from stream_monitor.config import (
    CONSUMER_DEFAULTS,
    PRODUCER_DEFAULTS,
    AppConfig,
    KafkaSettings,
    MetricsSettings,
    consumer_config,
    demo_config_path,
    load_config,
    parse_config,
    parse_duration,
    producer_config,
    redacted,
)
from stream_monitor.core.settings import ModelSettings
from stream_monitor.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "config.yaml"


def base() -> dict[str, Any]:
    return {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092"},
        "models": [
            {
                "id": "bikes",
                "task": "regression",
                "features": {"temp": "numeric", "atemp": "numeric", "season": "categorical"},
                "key_features": ["temp"],
            },
            {"id": "churn", "task": "binary", "features": {"tenure": {"type": "numeric", "key": True}}},
        ],
    }


def parse(data: dict[str, Any], env: dict[str, str] | None = None, base_dir: Path | None = None) -> AppConfig:
    return parse_config(data, env={} if env is None else env, base_dir=base_dir)


def error_of(data: dict[str, Any] | None, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={} if env is None else env)
    return info.value


# --------------------------------------------------------------------------- examples


def test_example_config_loads_with_documented_values() -> None:
    app = load_config(str(EXAMPLE), env={})
    assert app.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert (app.metrics.host, app.metrics.port) == ("127.0.0.1", 9108)
    assert [m.schema.model_id for m in app.models] == ["bikes", "churn"]
    bikes = app.model("bikes")
    assert bikes.schema.task == "regression"
    assert bikes.schema.numeric_names == ("temp", "atemp", "humidity", "windspeed", "hour")
    assert bikes.schema.categorical_names == ("season", "weather")
    assert bikes.schema.key_features == ("temp", "atemp")
    assert (bikes.settings.window.kind, bikes.settings.window.width) == ("time", 86400.0)
    assert bikes.settings.window.allowed_lateness == 3600.0
    assert bikes.reference_path == str(EXAMPLE.parent.resolve() / "data" / "bikes.reference.json")
    assert bikes.settings.policy.cooldown_seconds == 6 * 3600
    assert bikes.settings.label_ttl_seconds == 7 * 86400
    assert app.model("churn").schema.task == "binary"
    assert app.model("churn").settings.window.time_slide == 6 * 3600
    assert set(app.schemas()) == {"bikes", "churn"}


def test_packaged_demo_config_has_the_same_models() -> None:
    demo = load_config(demo_config_path(), env={})
    example = load_config(str(EXAMPLE), env={})
    assert set(demo.schemas()) == set(example.schemas())
    # The bike story has a daily cycle: the demo watches it in daily event-time windows.
    bikes = demo.model("bikes")
    assert (bikes.settings.window.kind, bikes.settings.window.width) == ("time", 86400.0)
    assert bikes.schema.segment_keys == ("station_type",)


def test_minimal_config_takes_the_core_defaults() -> None:
    app = parse(base())
    assert app.models[0].settings == ModelSettings()
    assert app.kafka.topics.triggers == "retrain-triggers"
    assert app.kafka.group_id == "stream-monitor"
    assert app.metrics == MetricsSettings()
    assert app.max_message_bytes == 1_000_000
    assert app.models[1].schema.key_features == ("tenure",)


# --------------------------------------------------------------------------- validation


def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    node: Any = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[parts[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "key", "fragment"),
    [
        ("models.0.policy.psi_alarm", "abc", "models[0].policy.psi_alarm", "must be a number > 0, got 'abc'"),
        ("models.0.detectors.alpha", 1.5, "models[0].detectors.alpha", "in (0, 1)"),
        ("models.0.window.size", 0, "models[0].window.size", "integer >= 1"),
        ("models.0.window.size", -5, "models[0].window.size", "got -5"),
        ("models.0.window.slide", 300, "models[0].window.slide", "must divide window.size"),
        ("models.0.window.kind", "tumbling", "models[0].window.kind", "one of count, time"),
        ("models.0.task", "regresion", "models[0].task", "did you mean 'regression'"),
        ("models.1.task", None, "models[1].task", "is required"),
        ("models.0.key_features", ["temp", "tmep"], "models[0].key_features[1]", "did you mean 'temp'"),
        ("models.0.features", {}, "models[0].features", "non-empty mapping"),
        ("models.0.features.temp", "numerical", "models[0].features.temp", "did you mean 'numeric'"),
        ("models.0.policy.cooldown_seconds", "soon", "models[0].policy.cooldown_seconds", "duration"),
        ("models.0.policy.psi_alarm", 0.5, "models[0].policy", "psi_warning <= psi_alarm <= psi_critical"),
        (
            "models.0.policy.integrity_triggers",
            "maybe",
            "models[0].policy.integrity_triggers",
            "true or false",
        ),
        ("models.0.version", 1.10, "models[0].version", "quote it"),
        ("models.0.label_buffer.ttl_seconds", 0, "models[0].label_buffer.ttl_seconds", "> 0"),
        ("models.0.id", "bad id!", "models[0].id", "letters, digits"),
        ("metrics.port", 70000, "metrics.port", "an integer in [1, 65535], got 70000"),
        ("metrics.port", "http", "metrics.port", "got 'http'"),
        ("kafka.batch_size", 0, "kafka.batch_size", ">= 1"),
        ("kafka.topics.labels", "predictions", "kafka.topics.labels", "already used for topics.predictions"),
        ("kafka.topics.dlq", "bad topic", "kafka.topics.dlq", "Kafka topic name"),
        ("kafka.assignment_strategy", "sticky", "kafka.assignment_strategy", "one of range"),
        ("max_message_bytes", 0, "max_message_bytes", ">= 1"),
    ],
)
def test_invalid_values_name_the_key(path: str, value: Any, key: str, fragment: str) -> None:
    err = error_of(_set(base(), path, value))
    assert err.key == key
    assert fragment in err.problem
    assert str(err).startswith(f"config error at {key}: ")


@pytest.mark.parametrize(
    ("section", "key", "field"),
    [
        ("common", "bootstrap.servers", "kafka.bootstrap_servers"),
        ("consumer", "group.id", "kafka.group_id"),
        ("consumer", "partition.assignment.strategy", "kafka.assignment_strategy"),
    ],
)
def test_passthrough_of_field_owned_keys_points_to_the_field(section: str, key: str, field: str) -> None:
    data = base()
    data["kafka"][section] = {key: "x"}
    err = error_of(data)
    assert err.key == f"kafka.{section}.{key}"
    assert err.problem == f"set {field} instead"


def test_range_message_matches_the_documented_form() -> None:
    err = error_of(_set(base(), "models.0.policy.psi_alarm", "abc"))
    assert str(err) == "config error at models[0].policy.psi_alarm: must be a number > 0, got 'abc'"


@pytest.mark.parametrize(
    ("path", "key", "suggestion"),
    [
        ("kafka.bootstrap_server", "kafka.bootstrap_server", "bootstrap_servers"),
        ("metrics.prot", "metrics.prot", "port"),
        ("models.0.polcy", "models[0].polcy", "policy"),
        ("models.0.window.sizee", "models[0].window.sizee", "size"),
        ("models.0.policy.psi_alrm", "models[0].policy.psi_alrm", "psi_alarm"),
        ("modles", "modles", "models"),
    ],
)
def test_unknown_keys_suggest_the_closest(path: str, key: str, suggestion: str) -> None:
    err = error_of(_set(base(), path, 1))
    assert err.key == key
    assert f"did you mean '{suggestion}'" in err.problem


def test_duplicate_model_ids_are_rejected_case_insensitively() -> None:
    data = _set(base(), "models.1.id", "Bikes")
    err = error_of(data)
    assert err.key == "models[1].id"
    assert "duplicate model id" in err.problem and "models[0]" in err.problem


def test_missing_bootstrap_servers_and_models() -> None:
    # Without a kafka section the offline commands work; whatever talks to Kafka names the key.
    offline = parse({"models": base()["models"]})
    with pytest.raises(ConfigError) as info:
        offline.require_kafka()
    assert info.value.key == "kafka.bootstrap_servers"
    assert error_of({"kafka": {"group_id": "g"}, "models": base()["models"]}).key == "kafka.bootstrap_servers"
    assert error_of({"kafka": {"bootstrap_servers": "b:1"}}).key == "models"


def test_duplicate_yaml_keys_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("metrics:\n  port: 1\nmetrics:\n  port: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'metrics'"):
        load_config(str(path), env={})


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.yaml"), env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad), env={})


def test_time_window_slide_must_divide_width() -> None:
    data = _set(base(), "models.0.window", {"kind": "time", "width": "1d", "slide_seconds": "5h"})
    err = error_of(data)
    assert err.key == "models[0].window.slide_seconds"
    ok = parse(_set(base(), "models.0.window", {"kind": "time", "width": "1d", "slide_seconds": "6h"}))
    assert ok.models[0].settings.window.time_slide == 21600.0


def test_reference_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    data = _set(base(), "models.0.reference", "profiles/bikes.json")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "bikes.json").write_text("{}")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    app = load_config(str(path), env={})
    assert app.models[0].reference_path == str(tmp_path.resolve() / "profiles" / "bikes.json")
    assert app.models[1].reference_path is None


def test_missing_reference_file_is_an_error_naming_the_model_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_set(base(), "models.1.reference", "profiles/churn.json")))
    missing = tmp_path.resolve() / "profiles" / "churn.json"
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={})
    assert str(info.value) == f"config error at models[1].reference: file not found: {missing}"
    # a directory is no profile either; an override names its variable
    (tmp_path / "profiles" / "churn.json").mkdir(parents=True)
    env = {"STREAM_MONITOR_MODELS__BIKES__REFERENCE": str(tmp_path / "nope.json")}
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env=env)
    assert info.value.key == "models[0].reference"
    assert (
        "file not found" in info.value.problem
        and "STREAM_MONITOR_MODELS__BIKES__REFERENCE" in info.value.problem
    )
    with pytest.raises(ConfigError, match=r"models\[1\]\.reference: not a file"):
        load_config(str(path), env={})
    # `reference build` writes the file the configuration names: it loads the config without the check
    assert load_config(str(path), env={}, check_references=False).models[1].reference_path == str(missing)


def test_unreadable_reference_profile_names_the_model_key(tmp_path: Path) -> None:
    (tmp_path / "bikes.json").write_text("not json")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_set(base(), "models.0.reference", "bikes.json")))
    with pytest.raises(ConfigError) as info:
        load_references(load_config(str(path), env={}))
    assert info.value.key == "models[0].reference" and "not JSON" in info.value.problem


def test_run_with_a_missing_reference_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_set(base(), "models.0.reference", "gone.json")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_MONITOR_")}
    proc = subprocess.run(
        [sys.executable, "-m", "stream_monitor.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    missing = tmp_path.resolve() / "gone.json"
    assert proc.stderr == f"stream-monitor: config error at models[0].reference: file not found: {missing}\n"


@pytest.mark.parametrize(
    "servers",
    [
        "127.0.0.1:9092",
        "broker-1.kafka.svc:9092, broker-2.kafka.svc:9093",
        "kafka_1:9092",
        "[::1]:9092",
        "[fe80::1%eth0]:9092",
        "PLAINTEXT://b:9092",
        "plaintext://b:9092,c:9092",
        ["b:9092", " [::1]:9093 "],
    ],
)
def test_bootstrap_servers_accepts_what_librdkafka_accepts(servers: Any) -> None:
    app = parse(_set(base(), "kafka.bootstrap_servers", servers))
    expected = ",".join(s.strip() for s in (servers if isinstance(servers, list) else servers.split(",")))
    assert app.kafka.bootstrap_servers == expected
    assert consumer_config(app)["bootstrap.servers"] == expected


@pytest.mark.parametrize(
    ("servers", "fragment"),
    [
        (12345, "host:port (e.g. 'broker-1:9092,broker-2:9092', IPv6 as '[::1]:9092'), got 12345"),
        ("kafka", "'kafka' has no port"),
        ("b:9092,", "empty address"),
        ("b:9092 c:9092", "separate addresses with commas"),
        ("b:99999", "port '99999' is not a number in 1..65535"),
        ("b:0", "1..65535"),
        ("b:http", "port 'http'"),
        (":9092", "has no host"),
        ("::1:9092", "in brackets"),
        ("[::1]", "has no port"),
        ("[kafka]:9092", "is not an IPv6 address"),
        ("10.0.0:9092", "not a host name or IPv4 address"),
        ("bad_host!:9092", "not a host name"),
        ("http://b:9092", "unknown protocol 'http'"),
        ("SSL://b:9093", "differs from security.protocol (plaintext)"),
        (9092.5, "got 9092.5"),
        ([], "or a YAML list"),
    ],
)
def test_bootstrap_servers_errors_name_the_key(servers: Any, fragment: str) -> None:
    err = error_of(_set(base(), "kafka.bootstrap_servers", servers))
    assert err.key == "kafka.bootstrap_servers"
    assert fragment in err.problem, err.problem


def test_bootstrap_protocol_prefix_must_match_every_client() -> None:
    data = _set(base(), "kafka.bootstrap_servers", "SASL_SSL://b:9093")
    data["kafka"]["common"] = {"security.protocol": "SASL_SSL"}
    assert parse(data).kafka.bootstrap_servers == "SASL_SSL://b:9093"
    data["kafka"]["producer"] = {"security.protocol": "ssl"}  # the producer would drop the address
    assert "differs from security.protocol (sasl_ssl, ssl)" in error_of(data).problem


def test_bootstrap_servers_env_override_is_checked_and_names_the_variable() -> None:
    name = "STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVERS"
    err = error_of(base(), {name: "12345"})
    assert err.key == "kafka.bootstrap_servers"
    assert "'12345' has no port" in err.problem and f"(set by {name})" in err.problem
    assert parse(base(), {name: "[::1]:9092,k2:9092"}).kafka.bootstrap_servers == "[::1]:9092,k2:9092"
    data = _set(base(), "kafka.bootstrap_servers", "${KAFKA_BOOTSTRAP_SERVERS}")
    assert error_of(data, {"KAFKA_BOOTSTRAP_SERVERS": "k1"}).key == "kafka.bootstrap_servers"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),
        (0.5, 0.5),
        ("30", 30.0),
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("6h", 21600.0),
        ("7d", 604800.0),
        ("1w", 604800.0),
        ("1.5H", 5400.0),
    ],
)
def test_parse_duration(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "6 hours", "h", "-5s", True, None, [1]])
def test_parse_duration_rejects(text: Any) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


# --------------------------------------------------------------------------- environment overrides


def test_env_overrides_typed_values_and_case_insensitive() -> None:
    env = {
        "STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
        "stream_monitor_metrics__port": "9200",
        "STREAM_MONITOR_KAFKA__EXACTLY_ONCE": "true",
        "STREAM_MONITOR_KAFKA__TOPICS__LABELS": "labels-v2",
        "STREAM_MONITOR_MAX_MESSAGE_BYTES": "2000000",
        "UNRELATED": "x",
    }
    app = parse(base(), env)
    assert app.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert app.metrics.port == 9200
    assert app.kafka.exactly_once is True
    assert app.kafka.topics.labels == "labels-v2"
    assert app.max_message_bytes == 2_000_000


def test_env_model_scoped_override_addresses_model_by_id() -> None:
    env = {
        "STREAM_MONITOR_MODELS__BIKES__POLICY__PSI_ALARM": "0.2",
        "STREAM_MONITOR_MODELS__CHURN__WINDOW__SIZE": "1000",
        "STREAM_MONITOR_MODELS__CHURN__VERSION": "1.10",  # raw text, not the float 1.1
        "STREAM_MONITOR_MODELS__BIKES__KEY_FEATURES": "temp, atemp",
        "STREAM_MONITOR_MODELS__BIKES__FEATURES__SEASON": "numeric",
    }
    app = parse(base(), env)
    bikes, churn = app.models
    assert bikes.settings.policy.psi_alarm == 0.2
    assert churn.settings.policy.psi_alarm == 0.15
    assert churn.settings.window.size == 1000
    assert churn.version == "1.10"
    assert bikes.schema.key_features == ("temp", "atemp")
    assert bikes.schema.feature("season") is not None
    assert bikes.schema.feature("season").kind == "numeric"  # type: ignore[union-attr]


def test_env_passthrough_keys_map_underscores_to_dots_and_keep_raw_text() -> None:
    env = {
        "STREAM_MONITOR_KAFKA__COMMON__SASL_PASSWORD": "0123",
        "STREAM_MONITOR_KAFKA__COMMON__SECURITY_PROTOCOL": "SASL_SSL",
        "STREAM_MONITOR_KAFKA__CONSUMER__FETCH_MAX_BYTES": "1048576",
    }
    app = parse(base(), env)
    assert app.kafka.common == {"sasl.password": "0123", "security.protocol": "SASL_SSL"}
    assert consumer_config(app)["fetch.max.bytes"] == "1048576"
    assert producer_config(app)["sasl.password"] == "0123"


def test_env_invalid_value_names_key_and_variable() -> None:
    err = error_of(base(), {"STREAM_MONITOR_MODELS__BIKES__POLICY__PSI_ALARM": "abc"})
    assert err.key == "models[0].policy.psi_alarm"
    assert "STREAM_MONITOR_MODELS__BIKES__POLICY__PSI_ALARM" in err.problem
    err = error_of(base(), {"STREAM_MONITOR_METRICS__PROT": "1"})
    assert err.key == "metrics.prot" and "did you mean 'port'" in err.problem


def test_env_unknown_model_and_section() -> None:
    err = error_of(base(), {"STREAM_MONITOR_MODELS__FRAUD__POLICY__PSI_ALARM": "0.2"})
    assert err.key == "STREAM_MONITOR_MODELS__FRAUD__POLICY__PSI_ALARM"
    assert "no model with id 'fraud'" in err.problem and "bikes" in err.problem
    err = error_of(base(), {"STREAM_MONITOR_KAFAK__GROUP_ID": "g"})
    assert "did you mean 'kafka'" in err.problem
    # variables the CLI reads are not configuration keys
    assert parse(base(), {"STREAM_MONITOR_CONFIG": "/etc/x.yaml"}).metrics.port == 9108


def test_whole_config_from_env_without_file() -> None:
    env = {
        "STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVERS": "b:9092",
        "STREAM_MONITOR_MODELS": "[{id: m, task: binary, features: {x: numeric}}]",
        "STREAM_MONITOR_MODELS__M__WARMUP_EVENTS": "100",
    }
    app = load_config(None, env=env)
    assert app.models[0].schema.model_id == "m"
    assert app.models[0].settings.warmup_events == 100


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("common", "sasl.password"),
        ("consumer", "ssl.key.password"),
        ("producer", "sasl.oauthbearer.client.secret"),
        ("common", "api_token"),
    ],
)
def test_secret_literal_in_yaml_is_rejected(section: str, key: str) -> None:
    data = base()
    data["kafka"][section] = {key: "hunter2"}
    err = error_of(data)
    assert err.key == f"kafka.{section}.{key}"
    assert "${ENV_VAR}" in err.problem and f"{key}_file" in err.problem
    assert "hunter2" not in str(err)


def test_non_secret_oauth_url_and_username_are_fine() -> None:
    data = base()
    data["kafka"]["common"] = {
        "sasl.username": "svc",
        "sasl.oauthbearer.token.endpoint.url": "https://idp/token",
        "session.timeout.ms": 30000,
        "enable.ssl.certificate.verification": False,
    }
    common = parse(data).kafka.common
    assert common["sasl.oauthbearer.token.endpoint.url"] == "https://idp/token"
    assert common["session.timeout.ms"] == "30000"
    assert common["enable.ssl.certificate.verification"] == "false"


def test_env_var_substitution_in_yaml() -> None:
    data = base()
    data["kafka"]["common"] = {"sasl.password": "${KAFKA_PASSWORD}", "sasl.username": "${USER_NAME}"}
    data["kafka"]["group_id"] = "sm-${STAGE}"
    app = parse(data, {"KAFKA_PASSWORD": "s3cret", "USER_NAME": "svc", "STAGE": "prod"})
    assert app.kafka.common == {"sasl.password": "s3cret", "sasl.username": "svc"}
    assert app.kafka.group_id == "sm-prod"


def test_missing_substitution_variable_names_key_and_variable() -> None:
    data = base()
    data["kafka"]["common"] = {"sasl.password": "${KAFKA_PASSWORD}"}
    err = error_of(data)
    assert err.key == "kafka.common.sasl.password"
    assert "KAFKA_PASSWORD" in err.problem
    data = _set(base(), "models.0.version", "${MODEL_VERSION}")
    assert error_of(data).key == "models[0].version"


def test_secret_from_file_is_read_and_stripped(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("  s3cret\n")
    data = base()
    data["kafka"]["common"] = {"sasl.password_file": "pw"}  # relative to the config file
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    app = load_config(str(path), env={})
    assert app.kafka.common == {"sasl.password": "s3cret"}


def test_secret_file_errors(tmp_path: Path) -> None:
    data = base()
    data["kafka"]["common"] = {"sasl.password_file": str(tmp_path / "nope")}
    err = error_of(data)
    assert err.key == "kafka.common.sasl.password_file" and "cannot read" in err.problem
    (tmp_path / "empty").write_text("\n")
    data["kafka"]["common"] = {"sasl.password_file": str(tmp_path / "empty")}
    assert "is empty" in error_of(data).problem
    data["kafka"]["common"] = {"sasl.password_file": str(tmp_path / "empty"), "sasl.password": "${X}"}
    assert "not both" in error_of(data, {"X": "y"}).problem


def test_env_file_override_replaces_yaml_literal_form(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file")
    data = base()
    data["kafka"]["common"] = {"sasl.password": "${PW}"}
    env = {"PW": "from-env", "STREAM_MONITOR_KAFKA__COMMON__SASL_PASSWORD_FILE": str(tmp_path / "pw")}
    assert parse(data, env).kafka.common == {"sasl.password": "from-file"}


def test_redaction_and_repr_never_show_secrets() -> None:
    data = base()
    data["kafka"]["common"] = {"sasl.username": "svc", "sasl.password": "${PW}"}
    data["kafka"]["producer"] = {"sasl.oauthbearer.client.secret": "${CS}"}
    app = parse(data, {"PW": "hunter2", "CS": "clientsecret"})
    assert app.kafka.common["sasl.password"] == "hunter2"  # the real value is still there for clients
    for text in (repr(app), str(app), repr(app.kafka), repr(redacted(app))):
        assert "hunter2" not in text and "clientsecret" not in text
    plain = redacted(app)
    assert plain["kafka"]["common"] == {"sasl.username": "svc", "sasl.password": "***"}
    assert plain["models"][0]["schema"]["model_id"] == "bikes"
    assert redacted(consumer_config(app))["sasl.password"] == "***"
    assert redacted(consumer_config(app))["group.id"] == "stream-monitor"


# --------------------------------------------------------------------------- client configs


def test_consumer_config_pins_safe_defaults() -> None:
    c = consumer_config(parse(base()))
    assert c["enable.auto.commit"] == "false"
    assert c["enable.auto.offset.store"] == "false"
    assert c["auto.offset.reset"] == "earliest"
    assert c["isolation.level"] == "read_committed"
    assert c["max.poll.interval.ms"] == "600000"
    assert c["partition.assignment.strategy"] == "range"
    assert c["session.timeout.ms"] == "45000"
    assert c["bootstrap.servers"] == "127.0.0.1:9092" and c["group.id"] == "stream-monitor"
    assert set(CONSUMER_DEFAULTS) <= set(c)


def test_merge_order_defaults_then_common_then_client() -> None:
    data = base()
    data["kafka"]["common"] = {"session.timeout.ms": 30000, "linger.ms": 1, "client.id": "sm"}
    data["kafka"]["consumer"] = {"session.timeout.ms": 20000, "auto.offset.reset": "latest"}
    data["kafka"]["producer"] = {"linger.ms": 50, "compression.type": "zstd"}
    data["kafka"]["assignment_strategy"] = "cooperative-sticky"
    app = parse(data)
    c, p = consumer_config(app), producer_config(app)
    assert c["session.timeout.ms"] == "20000" and c["auto.offset.reset"] == "latest"
    assert c["client.id"] == "sm" and p["client.id"] == "sm"
    assert c["partition.assignment.strategy"] == "cooperative-sticky"
    assert p["linger.ms"] == "50" and p["compression.type"] == "zstd"
    assert p["acks"] == PRODUCER_DEFAULTS["acks"] == "all"
    assert p["enable.idempotence"] == "true"
    assert "group.id" not in p


@pytest.mark.parametrize("section", ["common", "consumer"])
@pytest.mark.parametrize("key", ["enable.auto.commit", "enable.auto.offset.store"])
@pytest.mark.parametrize("value", [True, "true", "1"])
def test_turning_on_automatic_offsets_is_an_error(section: str, key: str, value: Any) -> None:
    data = base()
    data["kafka"][section] = {key: value}
    err = error_of(data)
    assert err.key == f"kafka.{section}.{key}"
    assert "at-least-once" in err.problem


def test_automatic_offsets_false_is_allowed_and_env_override_is_checked() -> None:
    data = base()
    data["kafka"]["consumer"] = {"enable.auto.commit": False}
    assert consumer_config(parse(data))["enable.auto.commit"] == "false"
    err = error_of(base(), {"STREAM_MONITOR_KAFKA__CONSUMER__ENABLE_AUTO_OFFSET_STORE": "true"})
    assert err.key == "kafka.consumer.enable.auto.offset.store"
    assert "STREAM_MONITOR_KAFKA__CONSUMER__ENABLE_AUTO_OFFSET_STORE" in err.problem


def test_kafka_settings_built_in_code_are_checked_too() -> None:
    with pytest.raises(ConfigError) as info:
        KafkaSettings("b:9092", consumer={"enable.auto.commit": "true"})
    assert info.value.key == "kafka.consumer.enable.auto.commit"


def test_insight_buckets_are_configurable() -> None:
    app = load_config(str(EXAMPLE), env={"STREAM_MONITOR_MODELS__BIKES__INSIGHTS__RETENTION": "30"})
    bikes = app.model("bikes").settings.insights
    assert (bikes.bucket_seconds, bikes.retention) == (86400.0, 30)
    with pytest.raises(ConfigError, match=r"insights\.retention"):
        load_config(str(EXAMPLE), env={"STREAM_MONITOR_MODELS__BIKES__INSIGHTS__RETENTION": "0"})


# --------------------------------------------------------------------------- classes and event ids


def test_event_id_length_bound_defaults_to_the_decoders_and_can_be_set() -> None:
    from stream_monitor.core.events import MAX_EVENT_ID_LENGTH

    assert parse(base()).max_event_id_length == MAX_EVENT_ID_LENGTH == 256
    assert parse({**base(), "max_event_id_length": 64}).max_event_id_length == 64
    assert parse(base(), {"STREAM_MONITOR_MAX_EVENT_ID_LENGTH": "100"}).max_event_id_length == 100
    err = error_of({**base(), "max_event_id_length": 0})
    assert err.key == "max_event_id_length" and ">= 1" in err.problem


def test_classes_of_a_binary_model() -> None:
    data = _set(base(), "models.1.positive_class", "yes")
    err = error_of(data)
    assert err.key == "models[1].positive_class"
    assert "classes: [<negative>, yes]" in err.problem
    schema = parse(_set(data, "models.1.classes", ["no", "yes"])).model("churn").schema
    assert (schema.classes, schema.negative_class) == (("no", "yes"), "no")
    assert parse(base()).model("churn").schema.label_classes == ("0", "1")


@pytest.mark.parametrize(
    ("path", "value", "key", "fragment"),
    [
        ("models.1.classes", ["a", "b", "c"], "models[1].classes", "exactly two classes"),
        ("models.1.classes", ["a", "b"], "models[1].classes", "positive_class '1' is not one of"),
        ("models.1.classes", ["1", "1"], "models[1].classes[1]", "duplicate name"),
        ("models.1.classes", [False, True], "models[1].classes[0]", "YAML reads yes/no"),
        ("models.0.classes", ["a", "b"], "models[0].classes", "a regression model has no classes"),
    ],
)
def test_invalid_classes_name_the_key(path: str, value: Any, key: str, fragment: str) -> None:
    err = error_of(_set(base(), path, value))
    assert err.key == key and fragment in err.problem, err


def test_two_stage_needs_a_reference_except_while_the_reference_is_being_built(tmp_path: Path) -> None:
    """``reference build`` reads the configuration before the reference exists: it must not be
    refused for the reference it is about to write; every other command is."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "aggregation: {mode: two_stage}\nmodels: [{id: m, task: binary, features: {x: numeric}}]\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"models\[0\]\.reference: is required with aggregation.mode"):
        load_config(config)
    assert load_config(config, check_references=False).aggregation.mode == "two_stage"
