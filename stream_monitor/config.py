"""The configuration: one YAML file plus ``STREAM_MONITOR_…`` environment overrides, validated once.

Everything the service needs is read here and nowhere else: the Kafka connection, topics and librdkafka
passthrough settings, the metrics address, and per model its schema (:class:`ModelSchema`) and core
settings (:class:`ModelSettings`). Every invalid value stops start-up with a :class:`ConfigError` that
names the full key path, e.g. ``models[0].policy.psi_alarm: must be a number > 0, got 'abc'``.

Order of resolution:

1. the YAML file (duplicate keys are an error; a secret written there as a literal is an error);
2. ``${VAR}`` substitution in every string value of the file;
3. environment overrides ``STREAM_MONITOR_<PATH>`` (``__`` separates levels, case-insensitive; models
   are addressed by id: ``STREAM_MONITOR_MODELS__BIKES__POLICY__PSI_ALARM=0.2``; in ``kafka.common``,
   ``kafka.consumer`` and ``kafka.producer`` underscores become dots:
   ``STREAM_MONITOR_KAFKA__COMMON__SASL_PASSWORD`` sets ``sasl.password``);
4. ``<key>_file: /path`` entries of the passthrough sections are read (content stripped);
5. validation into frozen dataclasses.

>>> app = parse_config(
...     {
...         "kafka": {"bootstrap_servers": "127.0.0.1:9092"},
...         "models": [{"id": "bikes", "task": "regression", "features": {"temp": "numeric"}}],
...     },
...     env={"STREAM_MONITOR_MODELS__BIKES__POLICY__PSI_ALARM": "0.2"},
... )
>>> app.models[0].settings.policy.psi_alarm, app.kafka.topics.predictions
(0.2, 'predictions')
>>> consumer_config(app)["enable.auto.offset.store"]
'false'
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import math
import os
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from stream_monitor.core.events import MAX_EVENT_ID_LENGTH, MAX_MESSAGE_BYTES
from stream_monitor.core.schema import FeatureKind, FeatureSpec, ModelSchema
from stream_monitor.core.settings import (
    AggregationSettings,
    DetectorSettings,
    EventTimeSettings,
    InsightSettings,
    ModelSettings,
    PolicySettings,
    TrainingDataSettings,
    VersionSettings,
    WindowSettings,
)
from stream_monitor.errors import ConfigError

__all__ = [
    "CONSUMER_DEFAULTS",
    "ENV_PREFIX",
    "PRODUCER_DEFAULTS",
    "AppConfig",
    "HttpSettings",
    "KafkaSettings",
    "MetricsSettings",
    "ModelConfig",
    "StateSettings",
    "TopicSettings",
    "consumer_config",
    "demo_config_path",
    "is_secret_key",
    "load_config",
    "parse_config",
    "parse_duration",
    "producer_config",
    "redacted",
    "time_zone",
]

ENV_PREFIX = "STREAM_MONITOR_"
# Environment variables with this prefix that are not configuration values (read by the CLI).
# Variables of the CLI and of the test harness (deploy/local/test.sh), not configuration keys.
NON_CONFIG_ENV = frozenset({"config", "log_level", "kafka_dir", "require_kafka"})
REDACTED = "***"

# Pinned consumer defaults; user passthrough wins (except the two offset-store keys, see below).
CONSUMER_DEFAULTS: dict[str, str] = {
    # At-least-once: offsets are stored and committed by us only after a batch's effects (state
    # changelog, triggers, DLQ records) are durable. Auto-commit or auto-store could commit offsets of
    # events whose effects were lost in a crash. Overriding these two to true is a ConfigError.
    "enable.auto.commit": "false",
    "enable.auto.offset.store": "false",
    # A new consumer group starts at the oldest retained events, so the first windows and the label
    # join see the whole retained history instead of silently skipping it.
    "auto.offset.reset": "earliest",
    # Never read aborted transactional writes (ours under exactly_once, or an upstream producer's).
    "isolation.level": "read_committed",
    # Well above the worst batch (batch_size events, window evaluation and a checkpoint), so a slow
    # window never gets this member evicted from the group and its partitions rebalanced away.
    "max.poll.interval.ms": "600000",
    # Range assigns partition p of every subscribed topic to the same member when the topics have the
    # same partition count: the predictions and labels of one key meet in one partition-task, so the
    # label join stays local. Set from kafka.assignment_strategy.
    "partition.assignment.strategy": "range",
    # Heartbeats run in librdkafka's background thread; 45 s (Kafka's own default since 3.0) rides out
    # GC pauses and broker hiccups without needless rebalances, and still detects a dead member.
    "session.timeout.ms": "45000",
}

PRODUCER_DEFAULTS: dict[str, str] = {
    # Retries never duplicate or reorder triggers, DLQ records or changelog entries.
    "enable.idempotence": "true",
    # A trigger or changelog record counts as written only when all in-sync replicas have it;
    # idempotence requires it too.
    "acks": "all",
    # Small batching delay: triggers are rare, DLQ and changelog records come in bursts per batch.
    "linger.ms": "5",
    # Cheap on CPU (we are CPU-bound on decoding), good on JSON.
    "compression.type": "lz4",
}

# Consumer keys that must stay false: true breaks at-least-once (see CONSUMER_DEFAULTS).
_FORBIDDEN_TRUE = ("enable.auto.commit", "enable.auto.offset.store")
# librdkafka keys owned by a typed field: one source of truth for each.
_FIELD_OWNED = {
    "bootstrap.servers": "kafka.bootstrap_servers",
    "group.id": "kafka.group_id",
    "partition.assignment.strategy": "kafka.assignment_strategy",
}
_SECRET_WORDS = ("password", "secret", "token", "credential")
_PASSTHROUGH = ("common", "consumer", "producer")
_TASKS = ("binary", "multiclass", "regression")
_FEATURE_KINDS = ("numeric", "categorical")
_ASSIGNMENT_STRATEGIES = ("range", "roundrobin", "cooperative-sticky")
_REF_FULL = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
_REF = re.compile(r"\$\{([^}]*)\}")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h|d|w)?\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
# A DNS name or IPv4 address: dot-separated labels of letters, digits, '-' and '_' (container names).
_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOST = re.compile(rf"^{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?$")
_PORT = re.compile(r"^[0-9]{1,5}$")
# The "<protocol>://" prefixes librdkafka accepts on a bootstrap address (case-insensitive).
_SECURITY_PROTOCOLS = ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")
_BOOTSTRAP_FORM = (
    "a comma-separated list of host:port (e.g. 'broker-1:9092,broker-2:9092', IPv6 as '[::1]:9092')"
)


def is_secret_key(name: str) -> bool:
    """Whether a (librdkafka) key holds a secret: its name says password, secret, token or credential.

    URLs (``sasl.oauthbearer.token.endpoint.url``) and ``<key>_file`` paths are not secrets.

    >>> is_secret_key("sasl.password"), is_secret_key("sasl.oauthbearer.client.secret")
    (True, True)
    >>> is_secret_key("sasl.oauthbearer.token.endpoint.url"), is_secret_key("sasl.password_file")
    (False, False)
    """
    lowered = name.lower()
    if lowered.endswith((".url", "_file")):
        return False
    return any(word in lowered for word in _SECRET_WORDS)


def _mask(values: Mapping[str, str]) -> dict[str, str]:
    return {k: (REDACTED if is_secret_key(k) else v) for k, v in values.items()}


def _forbidden_override(common: Mapping[str, str], consumer: Mapping[str, str]) -> tuple[str, str] | None:
    """The first passthrough that turns on auto offset commit/store, as (key path, problem)."""
    for section, values in (("consumer", consumer), ("common", common)):
        for key in _FORBIDDEN_TRUE:
            if key in values and str(values[key]).strip().lower() != "false":
                return (
                    f"kafka.{section}.{key}",
                    f"must stay false (got {values[key]!r}): stream-monitor stores and commits offsets "
                    "itself after a batch's effects are durable; automatic offsets break at-least-once",
                )
    return None


@dataclass(frozen=True)
class TopicSettings:
    """Kafka topic names (the contract's defaults)."""

    predictions: str = "predictions"
    labels: str = "labels"
    triggers: str = "retrain-triggers"
    dlq: str = "stream-monitor-dlq"
    state: str = "stream-monitor-state"
    # Two-stage aggregation (aggregation.mode: two_stage): shard reports, keyed by model id.
    partials: str = "stream-monitor-partials"
    # The reference registry (compacted; key = model id and version): every member reads all of it.
    references: str = "stream-monitor-references"


@dataclass(frozen=True, repr=False)
class KafkaSettings:
    """Kafka connection, topics, librdkafka passthrough and the consume loop's batching.

    ``common`` applies to every client (security settings), ``consumer``/``producer`` to one kind;
    secret values never appear in ``repr()``.

    >>> k = KafkaSettings("b:9092", common={"sasl.username": "u", "sasl.password": "hunter2"})
    >>> "hunter2" in repr(k), k.topics.labels
    (False, 'labels')
    """

    bootstrap_servers: str
    group_id: str = "stream-monitor"
    topics: TopicSettings = field(default_factory=TopicSettings)
    common: dict[str, str] = field(default_factory=dict)
    consumer: dict[str, str] = field(default_factory=dict)
    producer: dict[str, str] = field(default_factory=dict)
    exactly_once: bool = False
    batch_size: int = 5000
    batch_timeout_seconds: float = 0.5
    checkpoint_interval_seconds: float = 5.0
    assignment_strategy: str = "range"
    # Input synchronisation of a partition-task (see stream_monitor.kafka.input_order): records are merged
    # by timestamp ticks of this width, handed to the engine in runs cut at offset chunks of this
    # size (independent of batch_size, so results do not depend on it), and an input that is
    # behind or unknown holds the other back at most this long.
    sync_tick_seconds: float = 1.0
    sync_chunk_offsets: int = 5000
    sync_max_idle_seconds: float = 5.0
    # How long `run` keeps trying to reach the cluster at start-up before it exits 1 (a wrong
    # bootstrap address fails within this, naming the address; a broker still starting is waited for),
    # and then waits for missing ACLs to be granted (kafka/acls.py). A rejected password or
    # certificate does not wait: it exits at once (kafka/security.py).
    startup_timeout_seconds: float = 300.0

    def __post_init__(self) -> None:
        bad = _forbidden_override(self.common, self.consumer)
        if bad is not None:
            raise ConfigError(*bad)

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _PASSTHROUGH:
                value = _mask(value)
            parts.append(f"{f.name}={value!r}")
        return f"KafkaSettings({', '.join(parts)})"


@dataclass(frozen=True)
class MetricsSettings:
    """Where ``/metrics`` is served; readiness fails while consumer lag exceeds ``ready_max_lag``."""

    host: str = "127.0.0.1"
    port: int = 9108
    ready_max_lag: int = 100_000


@dataclass(frozen=True)
class StateSettings:
    """State records' HMAC (``stream_monitor.kafka.signing``): the environment variables that hold the
    keys (the first signs, every one verifies: key rotation), never a key in the file; and whether an
    unsigned record is still restored while keys are configured (a migration only)."""

    hmac_key_env: tuple[str, ...] = ()
    accept_unsigned: bool = False


@dataclass(frozen=True)
class HttpSettings:
    """The HTTP endpoint: TLS and basic auth from a web config file in the format of Prometheus'
    exporters (``stream_monitor.web.webconfig``), and whether ``/state`` and the status page ``/`` are
    served (off: 404)."""

    web_config_file: str | None = None
    expose_state: bool = True
    status_page: bool = True


@dataclass(frozen=True)
class ModelConfig:
    """One monitored model: its schema, core settings, reported version and reference profile path,
    and how its training file is read (``reference build``, ``calibrate``)."""

    schema: ModelSchema
    settings: ModelSettings
    version: str | None = None
    reference_path: str | None = None
    training: TrainingDataSettings = field(default_factory=TrainingDataSettings)


#: Why a command needs ``kafka.bootstrap_servers`` (the offline commands read files only).
_KAFKA_REQUIRED = (
    "is required: this command talks to a Kafka broker (only replay, reference build, calibrate, "
    "insights and plan work without a kafka section)"
)


@dataclass(frozen=True)
class AppConfig:
    """The whole validated configuration.

    The offline commands need no broker, so a configuration may leave out the ``kafka`` section; then
    ``kafka`` holds the defaults with no bootstrap servers (``""``), and whatever talks to Kafka asks
    for it through :meth:`require_kafka`, which names the missing key.
    """

    kafka: KafkaSettings
    metrics: MetricsSettings
    models: tuple[ModelConfig, ...]
    max_message_bytes: int = MAX_MESSAGE_BYTES
    # Longer event ids go to the DLQ as too_long:event_id. Each pending prediction keeps its id in the
    # label buffer (millions of entries): an unbounded id would be unbounded memory. The default, 256
    # characters, holds any UUID/ULID, "<topic>-<partition>-<offset>" id or hex digest (events.py).
    max_event_id_length: int = MAX_EVENT_ID_LENGTH
    event_time: EventTimeSettings = field(default_factory=EventTimeSettings)
    state: StateSettings = field(default_factory=StateSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    aggregation: AggregationSettings = field(default_factory=AggregationSettings)

    def schemas(self) -> dict[str, ModelSchema]:
        """Schemas by model id, as the event decoder wants them."""
        return {m.schema.model_id: m.schema for m in self.models}

    def model(self, model_id: str) -> ModelConfig:
        """The model with this id (``KeyError`` if none)."""
        for m in self.models:
            if m.schema.model_id == model_id:
                return m
        raise KeyError(model_id)

    def require_kafka(self) -> KafkaSettings:
        """The Kafka settings; a :class:`ConfigError` naming ``kafka.bootstrap_servers`` without them.

        >>> AppConfig(KafkaSettings(""), MetricsSettings(), ()).require_kafka()
        Traceback (most recent call last):
        ...
        stream_monitor.errors.ConfigError: config error at kafka.bootstrap_servers: is required: this \
command talks to a Kafka broker (only replay, reference build, calibrate, insights and plan work without \
a kafka section)
        """
        if not self.kafka.bootstrap_servers:
            raise ConfigError("kafka.bootstrap_servers", _KAFKA_REQUIRED)
        return self.kafka


def consumer_config(app: AppConfig) -> dict[str, str]:
    """librdkafka consumer settings: pinned defaults < ``kafka.common`` < ``kafka.consumer``.

    >>> app = AppConfig(KafkaSettings("b:9092", consumer={"session.timeout.ms": "30000"}),
    ...                 MetricsSettings(), ())
    >>> c = consumer_config(app)
    >>> c["bootstrap.servers"], c["group.id"], c["session.timeout.ms"], c["enable.auto.commit"]
    ('b:9092', 'stream-monitor', '30000', 'false')
    """
    k = app.require_kafka()
    bad = _forbidden_override(k.common, k.consumer)
    if bad is not None:
        raise ConfigError(*bad)
    config = dict(CONSUMER_DEFAULTS)
    config["partition.assignment.strategy"] = k.assignment_strategy
    config.update(k.common)
    config.update(k.consumer)
    config["bootstrap.servers"] = k.bootstrap_servers
    config["group.id"] = k.group_id
    return config


def producer_config(app: AppConfig) -> dict[str, str]:
    """librdkafka producer settings: pinned defaults < ``kafka.common`` < ``kafka.producer``.

    >>> app = AppConfig(KafkaSettings("b:9092", producer={"linger.ms": "20"}), MetricsSettings(), ())
    >>> p = producer_config(app)
    >>> p["linger.ms"], p["acks"], p["enable.idempotence"]
    ('20', 'all', 'true')
    """
    k = app.require_kafka()
    config = dict(PRODUCER_DEFAULTS)
    config.update(k.common)
    config.update(k.producer)
    config["bootstrap.servers"] = k.bootstrap_servers
    return config


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value) if not f.name.startswith("_")}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) and v is not None else _redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def redacted(app_or_dict: AppConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict of the configuration (or of any mapping) with every secret value masked, for logs.

    >>> redacted({"sasl.username": "svc", "sasl.password": "hunter2", "nested": {"api_token": "t"}})
    {'sasl.username': 'svc', 'sasl.password': '***', 'nested': {'api_token': '***'}}
    """
    result = _redact(_plain(app_or_dict))
    assert isinstance(result, dict)
    return result


def parse_duration(value: Any, key: str = "duration") -> float:
    """Seconds from a number of seconds or a string like ``"500ms"``, ``"30s"``, ``"5m"``, ``"6h"``, ``"7d"``.

    >>> parse_duration("6h"), parse_duration(90), parse_duration("1.5m"), parse_duration("500ms")
    (21600.0, 90.0, 90.0, 0.5)
    >>> parse_duration("soon", "policy.cooldown_seconds")
    Traceback (most recent call last):
    ...
    stream_monitor.errors.ConfigError: config error at policy.cooldown_seconds: must be a duration \
(seconds, or a string like '30s', '5m', '6h', '7d'), got 'soon'
    """
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            seconds = float(m.group(1)) * _UNITS[(m.group(2) or "s").lower()]
    if seconds is None or not math.isfinite(seconds):
        raise ConfigError(
            key, f"must be a duration (seconds, or a string like '30s', '5m', '6h', '7d'), got {value!r}"
        )
    return seconds


# --------------------------------------------------------------------------- reading and resolution


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # unhashable key: let the normal constructor report it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass
class _Context:
    env: Mapping[str, str]
    base_dir: Path | None
    env_source: dict[str, str] = field(default_factory=dict)  # key path -> env var that set it
    env_text: dict[str, str] = field(default_factory=dict)  # key path -> the env var's raw text
    check_references: bool = True  # a model's reference file must exist (off: `reference build`)

    def error(self, key: str, problem: str) -> ConfigError:
        source = self.env_source.get(key)
        if source is not None:
            problem = f"{problem} (set by {source})"
        return ConfigError(key, problem)

    def resolve_path(self, value: str) -> str:
        path = Path(value).expanduser()
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        return str(path)


def _join(prefix: str, name: str) -> str:
    return name if not prefix else f"{prefix}.{name}"


def _suggest(name: str, options: Iterable[str]) -> str:
    options = list(options)
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if close:
        return f"unknown key, did you mean '{close[0]}'?"
    return f"unknown key (expected one of: {', '.join(sorted(options))})"


def _reject_secret_literals(raw: Mapping[str, Any]) -> None:
    kafka = raw.get("kafka")
    if not isinstance(kafka, Mapping):
        return
    for section in _PASSTHROUGH:
        values = kafka.get(section)
        if not isinstance(values, Mapping):
            continue
        for key, value in values.items():
            if not isinstance(key, str) or not is_secret_key(key) or value is None:
                continue
            if isinstance(value, str) and _REF_FULL.match(value.strip()):
                continue
            raise ConfigError(
                f"kafka.{section}.{key}",
                "a secret must not be written in the configuration file; use "
                f"'{key}: ${{ENV_VAR}}' or '{key}_file: /path/to/secret'",
            )


def _substitute(value: Any, path: str, env: Mapping[str, str]) -> Any:
    """``${VAR}`` replaced from the environment in every string of the YAML tree."""
    if isinstance(value, str):

        def replace(m: re.Match[str]) -> str:
            name = m.group(1)
            if not _VAR_NAME.match(name):
                problem = f"'${{{name}}}' is not a valid environment variable reference"
                raise ConfigError(path or "<root>", problem)
            if name not in env:
                raise ConfigError(path or "<root>", f"environment variable {name} is not set")
            return env[name]

        return _REF.sub(replace, value)
    if isinstance(value, Mapping):
        return {k: _substitute(v, _join(path, str(k)), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    return value


def _env_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _match_key(node: Mapping[str, Any], segment: str) -> str:
    for key in node:
        if isinstance(key, str) and key.lower() == segment:
            return key
    return segment


def _apply_env(raw: dict[str, Any], ctx: _Context) -> None:
    items: list[tuple[int, str, list[str], str]] = []
    key_vars = _state_key_vars(raw, ctx.env)
    for name, text in ctx.env.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if (len(parts) == 1 and parts[0] in NON_CONFIG_ENV) or name in key_vars:
            continue
        if any(not p for p in parts):
            raise ConfigError(name, "empty path segment (use '__' between levels, e.g. KAFKA__GROUP_ID)")
        items.append((len(parts), name, parts, text))
    for _, name, parts, text in sorted(items):  # whole sections before the keys inside them
        _apply_env_one(raw, name, parts, text, ctx)


def _apply_env_one(raw: dict[str, Any], name: str, parts: list[str], text: str, ctx: _Context) -> None:
    top = parts[0]
    if top not in _TOP_KEYS:
        raise ConfigError(name, _suggest(top, _TOP_KEYS))
    node: dict[str, Any] = raw
    path = ""
    rest = parts
    if top == "models" and len(parts) > 1:
        models = raw.get("models")
        ids = [str(m.get("id")) for m in models if isinstance(m, Mapping)] if isinstance(models, list) else []
        index = next(
            (
                i
                for i, m in enumerate(models or [])
                if isinstance(m, Mapping) and str(m.get("id")).lower() == parts[1]
            ),
            None,
        )
        if index is None or models is None:
            raise ConfigError(name, f"no model with id '{parts[1]}' (configured: {', '.join(ids) or 'none'})")
        if len(parts) == 2:
            raise ConfigError(name, "name a setting of the model, e.g. MODELS__<ID>__POLICY__PSI_ALARM")
        node, path, rest = models[index], f"models[{index}]", parts[2:]
    elif top == "kafka" and len(parts) > 2 and parts[1] in _PASSTHROUGH:
        dotted = ".".join(parts[2:])
        if dotted.endswith("_file"):  # SASL_PASSWORD_FILE -> sasl.password_file
            key = dotted[: -len("_file")].replace("_", ".") + "_file"
        else:
            key = dotted.replace("_", ".")
        kafka = raw.setdefault("kafka", {})
        if not isinstance(kafka, dict):
            raise ConfigError(name, "kafka is not a mapping")
        section = kafka.get(parts[1])
        if section is None:
            section = kafka[parts[1]] = {}
        if not isinstance(section, dict):
            raise ConfigError(name, f"kafka.{parts[1]} is not a mapping")
        # The environment replaces the file's value whichever form (literal or _file) it had.
        twin = key[: -len("_file")] if key.endswith("_file") else key + "_file"
        section.pop(twin, None)
        section[key] = text  # passthrough values stay raw text: a password "0123" is not a number
        key_path = f"kafka.{parts[1]}.{key}"
        ctx.env_source[key_path] = name
        ctx.env_text[key_path] = text
        return
    for segment in rest[:-1]:
        key = _match_key(node, segment)
        path = _join(path, key)
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(name, f"{path} is not a mapping, cannot set a key inside it")
        node = child
    key = _match_key(node, rest[-1])
    path = _join(path, key)
    node[key] = _env_value(text)
    ctx.env_source[path] = name
    ctx.env_text[path] = text


# --------------------------------------------------------------------------- validation

_T = TypeVar("_T")
_REQUIRED: Any = object()


@dataclass(frozen=True)
class _Bounds:
    lo: float | None = None
    lo_open: bool = False
    hi: float | None = None
    hi_open: bool = False

    def ok(self, x: float) -> bool:
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return not (self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi))

    def describe(self, kind: str) -> str:
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            return f"{kind} in {'(' if self.lo_open else '['}{lo:g}, {hi:g}{')' if self.hi_open else ']'}"
        if lo is not None:
            return f"{kind} {'>' if self.lo_open else '>='} {lo:g}"
        if hi is not None:
            return f"{kind} {'<' if self.hi_open else '<='} {hi:g}"
        return kind


_POSITIVE = _Bounds(0, lo_open=True)
_NON_NEGATIVE = _Bounds(0)
_AT_LEAST_1 = _Bounds(1)
_FRACTION = _Bounds(0, lo_open=True, hi=1)  # (0, 1]
_OPEN_UNIT = _Bounds(0, lo_open=True, hi=1, hi_open=True)  # (0, 1)

# Bounds of settings fields read by _build_settings; numbers default to > 0, integers to >= 1.
_FIELD_BOUNDS: dict[str, _Bounds] = {
    "port": _Bounds(1, hi=65535),
    "ready_max_lag": _Bounds(0),
    "allowed_lateness": _NON_NEGATIVE,
    "bins": _Bounds(2),
    "alpha": _OPEN_UNIT,
    "ks_min_effect": _Bounds(0, hi=1),
    "chi2_min_effect": _Bounds(0, hi=1),
    "missing_rate_delta": _FRACTION,
    "out_of_range_rate": _FRACTION,
    "new_category_rate": _FRACTION,
    "volume_ratio_low": _OPEN_UNIT,
    "volume_ratio_high": _Bounds(1, lo_open=True),
    "adwin_delta": _OPEN_UNIT,
    "hysteresis": _FRACTION,
    "f1_drop_relative": _FRACTION,
    "cooldown_seconds": _NON_NEGATIVE,
    "renotify_after_seconds": _NON_NEGATIVE,
    "dataset_drift_share": _FRACTION,
    "escalation_factor": _Bounds(1, lo_open=True),
    "min_labels_for_performance": _Bounds(0),
    "surge_cooldown_seconds": _NON_NEGATIVE,
    "missing_delta": _FRACTION,
    "out_of_range_delta": _FRACTION,
    "new_category_delta": _FRACTION,
    "volume_low": _OPEN_UNIT,
    "volume_high": _Bounds(1, lo_open=True),
    "surge_min_share": _FRACTION,
    "min_new_labels": _Bounds(0),
    "partial_coverage": _FRACTION,
}
# Numbers read as durations ("30s", "6h", "1d") besides the fields named *_seconds.
_DURATION_FIELDS = frozenset({"width", "time_slide", "allowed_lateness"})
# Configuration keys that differ from the name of the field they set.
_KEY_OF_FIELD = {"time_slide": "slide_seconds", "bucket_seconds": "bucket"}


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""))
        except ValueError:
            pass
    number = _as_float(value)
    if number is not None and number.is_integer():
        return int(number)
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    number: float
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip().replace("_", ""))
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


class _Section:
    """A mapping of the YAML tree with a known key set; readers convert and validate one key each."""

    def __init__(self, data: Any, path: str, ctx: _Context, allowed: Iterable[str]) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ctx.error(path, f"must be a mapping, got {data!r}")
        self.data: dict[str, Any] = {str(k): v for k, v in data.items()}
        self.path = path
        self.ctx = ctx
        allowed = tuple(allowed)
        for key in self.data:
            if key not in allowed:
                raise ctx.error(self.key(key), _suggest(key, allowed))

    def key(self, name: str) -> str:
        return _join(self.path, name)

    def get(self, name: str, default: Any = _REQUIRED) -> Any:
        value = self.data.get(name)
        if value is None:
            if default is _REQUIRED:
                raise self.ctx.error(self.key(name), "is required")
            return default
        return value

    def fail(self, name: str, problem: str) -> ConfigError:
        return self.ctx.error(self.key(name), problem)

    def integer(self, name: str, default: _T, bounds: _Bounds = _AT_LEAST_1) -> int | _T:
        value = self.get(name, default)
        if value is default:
            return default
        number = _as_int(value)
        if number is None or not bounds.ok(number):
            raise self.fail(name, f"must be {bounds.describe('an integer')}, got {value!r}")
        return number

    def number(self, name: str, default: _T, bounds: _Bounds = _POSITIVE) -> float | _T:
        value = self.get(name, default)
        if value is default:
            return default
        number = _as_float(value)
        if number is None or not bounds.ok(number):
            raise self.fail(name, f"must be {bounds.describe('a number')}, got {value!r}")
        return number

    def duration(self, name: str, default: _T, bounds: _Bounds = _POSITIVE) -> float | _T:
        value = self.get(name, default)
        if value is default:
            return default
        seconds = parse_duration(value, self.key(name)) if _as_float(value) is None else _as_float(value)
        assert seconds is not None
        if not bounds.ok(seconds):
            raise self.fail(
                name, f"must be {bounds.describe('a duration')} seconds (or e.g. '30s', '6h'), got {value!r}"
            )
        return seconds

    def boolean(self, name: str, default: _T) -> bool | _T:
        value = self.get(name, default)
        if value is default or isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise self.fail(name, f"must be true or false, got {value!r}")

    def text(self, name: str, default: _T) -> str | _T:
        value = self.get(name, default)
        if value is default:
            return default
        env_text = self.ctx.env_text.get(self.key(name))
        if env_text is not None:
            value = env_text.strip()
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            hint = " (quote it, YAML reads 1.10 as the number 1.1 and yes/no as booleans)"
            raise self.fail(name, f"must be a string, got {value!r}{hint}")
        if not value.strip():
            raise self.fail(name, "must not be empty")
        return value

    def choice(self, name: str, default: _T, options: tuple[str, ...]) -> str | _T:
        value = self.text(name, default)
        if value is default:
            return default
        if value not in options:
            close = difflib.get_close_matches(str(value), options, n=1)
            hint = f", did you mean '{close[0]}'?" if close else ""
            raise self.fail(name, f"must be one of {', '.join(options)}, got {value!r}{hint}")
        return value

    def str_list(self, name: str) -> tuple[str, ...]:
        value = self.get(name, [])
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise self.fail(name, f"must be a list of names, got {value!r}")
        result: list[str] = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, str | int) or not str(item).strip():
                hint = ""
                if isinstance(item, bool):
                    hint = " (quote it: YAML reads yes/no/true/false as booleans)"
                raise self.ctx.error(f"{self.key(name)}[{i}]", f"must be a name, got {item!r}{hint}")
            if str(item) in result:
                raise self.ctx.error(f"{self.key(name)}[{i}]", f"duplicate name {item!r}")
            result.append(str(item))
        return tuple(result)

    def section(self, name: str, allowed: Iterable[str]) -> _Section:
        return _Section(self.data.get(name), self.key(name), self.ctx, allowed)


_TOP_KEYS = (
    "kafka",
    "metrics",
    "models",
    "event_time",
    "max_message_bytes",
    "max_event_id_length",
    "state",
    "http",
    "aggregation",
)
_KAFKA_KEYS = tuple(f.name for f in fields(KafkaSettings))
_TOPIC_KEYS = tuple(f.name for f in fields(TopicSettings))
_MODEL_KEYS = (
    "id",
    "task",
    "version",
    "positive_class",
    "decision_threshold",
    "classes",
    "features",
    "key_features",
    "segment_keys",
    "max_segments",
    "reference",
    "warmup_events",
    "window",
    "detectors",
    "policy",
    "performance_window",
    "label_buffer",
    "insights",
    "training",
    "versions",
)


def _passthrough(s: _Section, name: str) -> dict[str, str]:
    section = s.get(name, {})
    path = s.key(name)
    if not isinstance(section, Mapping):
        raise s.fail(name, f"must be a mapping of librdkafka settings, got {section!r}")
    ctx = s.ctx
    result: dict[str, str] = {}
    for raw_key, value in section.items():
        key = str(raw_key)
        key_path = _join(path, key)
        if key in _FIELD_OWNED:
            raise ctx.error(key_path, f"set {_FIELD_OWNED[key]} instead")
        if value is None:
            raise ctx.error(key_path, "has no value")
        if key.endswith("_file"):
            target = key[: -len("_file")]
            if target in section:
                raise ctx.error(key_path, f"give either {target} or {key}, not both")
            if not isinstance(value, str):
                raise ctx.error(key_path, f"must be a file path, got {value!r}")
            file_path = ctx.resolve_path(value)
            try:
                content = Path(file_path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ctx.error(key_path, f"cannot read {file_path}: {exc.strerror or exc}") from None
            if not content:
                raise ctx.error(key_path, f"{file_path} is empty")
            result[target] = content
            continue
        env_text = ctx.env_text.get(key_path)
        if env_text is not None:
            result[key] = env_text
        elif isinstance(value, bool):
            result[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            result[key] = str(value)
        else:
            raise ctx.error(key_path, f"must be a string, number or boolean, got {value!r}")
    return result


def _broker_address_problem(entry: str) -> str | None:
    """Why one bootstrap address is not ``[PROTOCOL://]host:port`` as librdkafka reads it; None if it is.

    librdkafka would take ``12345`` as host ``12345`` on port 9092, wrap port 99999 to 34463 and drop an
    unknown protocol: each fails only later, as a connection timeout, so all are errors here.

    >>> [_broker_address_problem(a) for a in ("b-1.kafka:9092", "[::1]:9092", "SASL_SSL://b:9093")]
    [None, None, None]
    >>> _broker_address_problem("12345")
    "'12345' has no port"
    """
    if any(c.isspace() for c in entry):
        return f"{entry!r} contains whitespace (separate addresses with commas)"
    rest = entry
    protocol, sep, after = entry.partition("://")
    if sep:
        if protocol.lower() not in _SECURITY_PROTOCOLS:
            known = ", ".join(p.upper() for p in _SECURITY_PROTOCOLS)
            return f"{entry!r}: unknown protocol {protocol!r} (librdkafka knows {known})"
        rest = after
    if rest.startswith("["):
        host, bracket, port = rest[1:].partition("]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{entry!r}: {host!r} in brackets is not an IPv6 address"
        if not bracket or not port.startswith(":"):
            return f"{entry!r} has no port (IPv6 as '[::1]:9092')"
        port = port[1:]
    else:
        host, colon, port = rest.rpartition(":")
        if not colon:
            return f"{entry!r} has no port"
        if ":" in host:
            return f"{entry!r}: write an IPv6 address in brackets, e.g. '[::1]:9092'"
        if not host:
            return f"{entry!r} has no host"
        digits_and_dots = all(c.isdigit() or c == "." for c in host)
        if not _HOST.match(host) or (digits_and_dots and not _is_ipv4(host)):
            return f"{entry!r}: {host!r} is not a host name or IPv4 address"
    if not _PORT.match(port) or not 1 <= int(port) <= 65535:
        return f"{entry!r}: port {port!r} is not a number in 1..65535"
    return None


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _bootstrap_servers(s: _Section) -> str:
    """``kafka.bootstrap_servers`` (a string or a list) as librdkafka's comma-separated text, checked."""
    value = s.get("bootstrap_servers")
    if isinstance(value, list):
        if not value or not all(isinstance(x, str) for x in value):
            raise s.fail(
                "bootstrap_servers", f"must be {_BOOTSTRAP_FORM} or a YAML list of them, got {value!r}"
            )
        entries = [x.strip() for x in value]
    else:
        # An environment override is text even when it looks like a number; a YAML int is a port or a
        # typo, never an address (s.text would turn it into one).
        value = s.ctx.env_text.get(s.key("bootstrap_servers"), value)
        if not isinstance(value, str):
            raise s.fail("bootstrap_servers", f"must be {_BOOTSTRAP_FORM}, got {value!r}")
        entries = [x.strip() for x in value.strip().split(",")]
    for entry in entries:
        problem = "empty address (a stray comma?)" if not entry else _broker_address_problem(entry)
        if problem is not None:
            raise s.fail("bootstrap_servers", f"must be {_BOOTSTRAP_FORM}, got {value!r}: {problem}")
    return ",".join(entries)


def _bootstrap_protocol_problem(
    servers: str, common: Mapping[str, str], consumer: Mapping[str, str], producer: Mapping[str, str]
) -> str | None:
    """A ``PROTOCOL://`` prefix must equal every client's ``security.protocol``: librdkafka drops the
    address otherwise ("No brokers configured"). The admin client uses ``kafka.common`` alone."""
    key = "security.protocol"
    default = common.get(key, "plaintext")
    protocols = {str(section.get(key, default)).lower() for section in (common, consumer, producer)}
    for entry in servers.split(","):
        protocol, sep, _ = entry.partition("://")
        if sep and {protocol.lower()} != protocols:
            return (
                f"{entry!r}: its protocol {protocol!r} differs from security.protocol "
                f"({', '.join(sorted(protocols))}); librdkafka ignores such an address"
            )
    return None


def _file_problem(path: str) -> str | None:
    """Why ``path`` is not a readable file, or None."""
    p = Path(path)
    if not p.exists():
        return f"file not found: {path}"
    if not p.is_file():
        return f"not a file: {path}"
    if not os.access(p, os.R_OK):
        return f"cannot read {path}: permission denied"
    return None


def _build_kafka(data: Any, ctx: _Context) -> KafkaSettings:
    defaults = KafkaSettings("")
    if data is None:
        # No kafka section: fine for the offline commands; AppConfig.require_kafka() refuses the rest.
        return defaults
    s = _Section(data, "kafka", ctx, _KAFKA_KEYS)
    servers = _bootstrap_servers(s)
    t = s.section("topics", _TOPIC_KEYS)
    topic_names: dict[str, str] = {}
    for name in _TOPIC_KEYS:
        topic = t.text(name, getattr(defaults.topics, name))
        if not _TOPIC.match(topic):
            raise t.fail(name, f"must be a Kafka topic name (letters, digits, '.', '_', '-'), got {topic!r}")
        if topic in topic_names.values():
            other = next(k for k, v in topic_names.items() if v == topic)
            raise t.fail(name, f"topic {topic!r} is already used for topics.{other}")
        topic_names[name] = topic
    common, consumer, producer = (_passthrough(s, name) for name in _PASSTHROUGH)
    bad = _forbidden_override(common, consumer)
    if bad is not None:
        raise ctx.error(*bad)
    problem = _bootstrap_protocol_problem(servers, common, consumer, producer)
    if problem is not None:
        raise s.fail("bootstrap_servers", problem)
    return KafkaSettings(
        bootstrap_servers=servers,
        group_id=s.text("group_id", defaults.group_id),
        topics=TopicSettings(**topic_names),
        common=common,
        consumer=consumer,
        producer=producer,
        exactly_once=s.boolean("exactly_once", defaults.exactly_once),
        batch_size=s.integer("batch_size", defaults.batch_size),
        batch_timeout_seconds=s.duration("batch_timeout_seconds", defaults.batch_timeout_seconds),
        checkpoint_interval_seconds=s.duration(
            "checkpoint_interval_seconds", defaults.checkpoint_interval_seconds
        ),
        assignment_strategy=s.choice(
            "assignment_strategy", defaults.assignment_strategy, _ASSIGNMENT_STRATEGIES
        ),
        sync_tick_seconds=s.duration("sync_tick_seconds", defaults.sync_tick_seconds),
        sync_chunk_offsets=s.integer("sync_chunk_offsets", defaults.sync_chunk_offsets),
        sync_max_idle_seconds=s.duration("sync_max_idle_seconds", defaults.sync_max_idle_seconds),
        startup_timeout_seconds=s.duration("startup_timeout_seconds", defaults.startup_timeout_seconds),
    )


def _keys(cls: Any) -> tuple[str, ...]:
    """The configuration keys of a settings dataclass (its field names, a few renamed)."""
    return tuple(_KEY_OF_FIELD.get(f.name, f.name) for f in fields(cls))


def _without_none(tp: Any) -> Any:
    """``X`` of an optional ``X | None`` annotation, else the annotation itself."""
    if isinstance(tp, types.UnionType) or get_origin(tp) is Union:
        rest = [a for a in get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def _build_settings(cls: type[_T], s: _Section) -> _T:
    """A settings dataclass from a section: each field read under its key (:func:`_keys`) and
    converted by its annotated type, nested settings from the sub-section of the same name. A key that
    is absent keeps the dataclass's default (defaults live in the dataclasses, nowhere else)."""
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        tp = _without_none(hints[f.name])
        key = _KEY_OF_FIELD.get(f.name, f.name)
        if is_dataclass(tp):
            kwargs[f.name] = _build_settings(cast(type, tp), s.section(key, _keys(tp)))
            continue
        if s.data.get(key) is None:
            continue
        bounds = _FIELD_BOUNDS.get(f.name)
        if tp is bool:
            kwargs[f.name] = s.boolean(key, _REQUIRED)
        elif tp is int:
            kwargs[f.name] = s.integer(key, _REQUIRED, bounds or _AT_LEAST_1)
        elif tp is float and (f.name.endswith("_seconds") or f.name in _DURATION_FIELDS):
            kwargs[f.name] = s.duration(key, _REQUIRED, bounds or _POSITIVE)
        elif tp is float:
            kwargs[f.name] = s.number(key, _REQUIRED, bounds or _POSITIVE)
        elif tp is str:
            kwargs[f.name] = s.text(key, _REQUIRED)
        elif get_origin(tp) is Literal:
            kwargs[f.name] = s.choice(key, _REQUIRED, tuple(get_args(tp)))
        else:  # a new field type in settings.py that this loader does not know yet
            raise TypeError(f"config.py cannot read {cls.__name__}.{f.name} of type {tp!r}")
    return cls(**kwargs)


def _build_metrics(data: Any, ctx: _Context) -> MetricsSettings:
    return _build_settings(MetricsSettings, _Section(data, "metrics", ctx, _keys(MetricsSettings)))


def _build_window(s: _Section) -> WindowSettings:
    w = _build_settings(WindowSettings, s)
    size, slide, width, time_slide = w.size, w.slide, w.width, w.time_slide
    # Sliding windows are built from sub-windows of one slide each, so the size must be a multiple.
    if w.kind == "count" and slide is not None and (slide > size or size % slide):
        raise s.fail("slide", f"must divide window.size ({size}) and be at most it, got {slide}")
    if w.kind == "time" and time_slide is not None:
        ratio = width / time_slide
        if time_slide > width or abs(ratio - round(ratio)) > 1e-9:
            problem = f"must divide window.width ({width:g} s) and be at most it, got {time_slide:g}"
            raise s.fail("slide_seconds", problem)
    return w


def time_zone(name: str) -> dt.tzinfo:
    """The zone an IANA name (``training.time_zone``, ``--time-zone``) stands for; ValueError if none.

    ``UTC`` needs no time-zone database (a slim container may have none).

    >>> time_zone("UTC"), time_zone("Europe/Berlin").key
    (datetime.timezone.utc, 'Europe/Berlin')
    """
    if name.upper() == "UTC":
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"must be an IANA time zone such as 'UTC' or 'Europe/Berlin', got {name!r}"
        ) from None


def _build_training(s: _Section) -> TrainingDataSettings:
    training = _build_settings(TrainingDataSettings, s)
    # Checked here, not when a file is read: a zone name that does not exist is a configuration error.
    try:
        time_zone(training.time_zone)
    except ValueError as exc:
        raise s.fail("time_zone", str(exc)) from None
    return training


def _build_insights(s: _Section) -> InsightSettings:
    insights = _build_settings(InsightSettings, s)
    i = insights.incidents
    if i.volume_min_history > i.volume_history:
        raise s.ctx.error(
            s.key("incidents.volume_min_history"),
            f"must be at most incidents.volume_history ({i.volume_history}), got {i.volume_min_history}",
        )
    return insights


def _build_features(s: _Section, key_features: tuple[str, ...]) -> tuple[FeatureSpec, ...]:
    raw = s.get("features")
    path = s.key("features")
    ctx = s.ctx
    if not isinstance(raw, Mapping) or not raw:
        raise s.fail("features", f"must be a non-empty mapping of name -> numeric | categorical, got {raw!r}")
    names = [str(k) for k in raw]
    for i, name in enumerate(key_features):
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f", did you mean '{close[0]}'?" if close else ""
            raise ctx.error(f"{s.key('key_features')}[{i}]", f"{name!r} is not a feature of this model{hint}")
    specs: list[FeatureSpec] = []
    for raw_name, spec in raw.items():
        name = str(raw_name)
        if not name.strip():
            raise ctx.error(path, "a feature name must not be empty")
        if isinstance(spec, str):  # the short form `name: numeric`
            f = _Section({name: spec}, path, ctx, (name,))
            kind = cast(FeatureKind, f.choice(name, _REQUIRED, _FEATURE_KINDS))
            f = _Section({}, _join(path, name), ctx, ())
        else:
            f = _Section(spec, _join(path, name), ctx, ("type", "key", "importance"))
            kind = cast(FeatureKind, f.choice("type", _REQUIRED, _FEATURE_KINDS))
        key = bool(f.boolean("key", False)) or name in key_features
        importance = f.number("importance", 1.0, _NON_NEGATIVE)
        specs.append(FeatureSpec(name, kind, key=key, importance=importance))
    return tuple(specs)


def _build_model(data: Any, path: str, ctx: _Context) -> ModelConfig:
    s = _Section(data, path, ctx, _MODEL_KEYS)
    model_id = s.text("id", _REQUIRED)
    if not _MODEL_ID.match(model_id) or "__" in model_id:
        raise s.fail(
            "id",
            "must be letters, digits, '.', '_' or '-' (no '__': it separates levels of environment "
            f"overrides), got {model_id!r}",
        )
    task = s.choice("task", _REQUIRED, _TASKS)
    key_features = s.str_list("key_features")
    features = _build_features(s, key_features)
    d = ModelSettings()
    label_buffer = s.section("label_buffer", ("max_entries", "ttl_seconds"))
    settings = ModelSettings(
        window=_build_window(s.section("window", _keys(WindowSettings))),
        detectors=_build_settings(DetectorSettings, s.section("detectors", _keys(DetectorSettings))),
        policy=_build_settings(PolicySettings, s.section("policy", _keys(PolicySettings))),
        insights=_build_insights(s.section("insights", _keys(InsightSettings))),
        warmup_events=s.integer("warmup_events", d.warmup_events),
        performance_window=s.integer("performance_window", d.performance_window),
        label_buffer_entries=label_buffer.integer("max_entries", d.label_buffer_entries),
        label_ttl_seconds=label_buffer.duration("ttl_seconds", d.label_ttl_seconds),
        versions=_build_settings(VersionSettings, s.section("versions", _keys(VersionSettings))),
    )
    p = settings.policy
    if not p.psi_warning <= p.psi_alarm <= p.psi_critical:
        raise ctx.error(
            _join(path, "policy"),
            f"needs psi_warning <= psi_alarm <= psi_critical, got {p.psi_warning:g}, {p.psi_alarm:g}, "
            f"{p.psi_critical:g}",
        )
    reference = s.text("reference", None)
    reference_path = None if reference is None else ctx.resolve_path(reference)
    if reference_path is not None and ctx.check_references:
        problem = _file_problem(reference_path)
        if problem is not None:
            raise s.fail("reference", problem)
    positive_class = s.text("positive_class", ModelSchema.positive_class)
    classes = s.str_list("classes")
    try:
        schema = ModelSchema(
            model_id=model_id,
            task=task,  # type: ignore[arg-type]
            features=features,
            positive_class=positive_class,
            segment_keys=s.str_list("segment_keys"),
            max_segments=s.integer("max_segments", ModelSchema.max_segments),
            classes=classes,
            decision_threshold=s.number("decision_threshold", ModelSchema.decision_threshold, _OPEN_UNIT),
        )
    except ValueError as exc:
        if task == "binary" and not classes:
            raise s.fail(
                "positive_class",
                f"{positive_class!r} is not '0' or '1': name both classes, classes: [<negative>, "
                f"{positive_class}] (labels that are neither are rejected)",
            ) from exc
        raise s.fail("classes", str(exc).partition(": ")[2]) from exc
    return ModelConfig(
        schema=schema,
        settings=settings,
        version=s.text("version", None),
        reference_path=reference_path,
        training=_build_training(s.section("training", _keys(TrainingDataSettings))),
    )


def _build_app(raw: Mapping[str, Any], ctx: _Context) -> AppConfig:
    s = _Section(raw, "", ctx, _TOP_KEYS)
    kafka = _build_kafka(s.data.get("kafka"), ctx)
    metrics = _build_metrics(s.data.get("metrics"), ctx)
    models_raw = s.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise s.fail("models", f"must be a non-empty list of models, got {models_raw!r}")
    models: list[ModelConfig] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(models_raw):
        model = _build_model(item, f"models[{i}]", ctx)
        lowered = model.schema.model_id.lower()
        if lowered in seen:
            raise ctx.error(
                f"models[{i}].id",
                f"duplicate model id {model.schema.model_id!r} (also models[{seen[lowered]}]; ids are "
                "compared case-insensitively because environment overrides address models by id)",
            )
        seen[lowered] = i
        models.append(model)
    return AppConfig(
        kafka=kafka,
        metrics=metrics,
        models=tuple(models),
        max_message_bytes=s.integer("max_message_bytes", AppConfig.max_message_bytes),
        max_event_id_length=s.integer("max_event_id_length", AppConfig.max_event_id_length),
        event_time=_build_event_time(s.data.get("event_time"), ctx),
        state=_build_state(s.data.get("state"), ctx),
        http=_build_http(s.data.get("http"), ctx),
        aggregation=_build_aggregation(s.data.get("aggregation"), models, ctx),
    )


def _build_aggregation(data: Any, models: list[ModelConfig], ctx: _Context) -> AggregationSettings:
    s = _Section(data, "aggregation", ctx, _keys(AggregationSettings))
    settings = _build_settings(AggregationSettings, s)
    # `reference build` reads the configuration before the references exist (check_references off).
    if settings.mode == "two_stage" and ctx.check_references:
        for i, model in enumerate(models):
            # Every shard must bin against the same reference for the partials to merge; a reference
            # warmed up from live events would differ from shard to shard.
            if model.reference_path is None:
                raise ctx.error(
                    f"models[{i}].reference",
                    "is required with aggregation.mode: two_stage (every shard summarises against the same "
                    "reference file; a reference warmed up from each shard's own events would not merge): "
                    "build one from the training data with `stream-monitor reference build`",
                )
    return settings


def _build_event_time(data: Any, ctx: _Context) -> EventTimeSettings:
    return _build_settings(EventTimeSettings, _Section(data, "event_time", ctx, _keys(EventTimeSettings)))


def _state_key_vars(raw: Mapping[str, Any], env: Mapping[str, str]) -> set[str]:
    """The environment variables ``state.hmac_key_env`` names (in the file or by its override): they
    hold keys, not configuration overrides, even when named ``STREAM_MONITOR_…``."""
    state = raw.get("state")
    names: Any = state.get("hmac_key_env") if isinstance(state, Mapping) else None
    for var, text in env.items():
        if var.upper() == f"{ENV_PREFIX}STATE__HMAC_KEY_ENV":
            names = _env_value(text)
    if isinstance(names, str):
        names = names.split(",")
    return {n.strip() for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def _build_state(data: Any, ctx: _Context) -> StateSettings:
    s = _Section(data, "state", ctx, ("hmac_key_env", "accept_unsigned"))
    names = s.str_list("hmac_key_env")
    for i, name in enumerate(names):
        if not _VAR_NAME.match(name):
            problem = "must name an environment variable that holds the key (never the key itself)"
            raise ctx.error(f"{s.key('hmac_key_env')}[{i}]", problem)
    # The keys themselves are read where they are used (kafka/signing.py), at start-up.
    return StateSettings(names, bool(s.boolean("accept_unsigned", False)))


def _build_http(data: Any, ctx: _Context) -> HttpSettings:
    s = _Section(data, "http", ctx, ("web_config_file", "expose_state", "status_page"))
    path = s.text("web_config_file", None)
    # The file is read and checked when the server starts (web/webconfig.py): a ConfigError naming
    # http.web_config_file, before anything else runs.
    return HttpSettings(
        None if path is None else ctx.resolve_path(path),
        bool(s.boolean("expose_state", True)),
        bool(s.boolean("status_page", True)),
    )


# --------------------------------------------------------------------------- entry points


def parse_config(
    data: Mapping[str, Any] | None,
    env: Mapping[str, str] | None = None,
    base_dir: str | Path | None = None,
    *,
    check_references: bool = True,
) -> AppConfig:
    """Validate an already-parsed YAML tree (see the module docstring for the resolution order).

    ``env`` defaults to ``os.environ``; relative paths (``reference``, ``*_file``) resolve against
    ``base_dir`` (the configuration file's directory), else the working directory. A model's
    ``reference`` file must exist, unless ``check_references`` is false (``reference build`` writes it).

    >>> kafka = {"bootstrap_servers": "b:9092", "common": {"sasl.password": "hunter2"}}
    >>> parse_config({"kafka": kafka}, env={})
    Traceback (most recent call last):
    ...
    stream_monitor.errors.ConfigError: config error at kafka.common.sasl.password: a secret must not be \
written in the configuration file; use 'sasl.password: ${ENV_VAR}' or 'sasl.password_file: /path/to/secret'
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    raw = data if data is not None else {}
    if not isinstance(raw, Mapping):
        raise ConfigError("<root>", f"the configuration must be a mapping, got {type(raw).__name__}")
    _reject_secret_literals(raw)
    tree = _substitute(raw, "", environ)
    ctx = _Context(
        env=environ,
        base_dir=None if base_dir is None else Path(base_dir),
        check_references=check_references,
    )
    _apply_env(tree, ctx)
    return _build_app(tree, ctx)


def load_config(
    path: str | None, env: Mapping[str, str] | None = None, *, check_references: bool = True
) -> AppConfig:
    """Read, override from the environment and validate the configuration file at ``path``.

    ``path=None`` reads no file: everything comes from the environment (a whole section may be given
    as YAML, e.g. ``STREAM_MONITOR_MODELS='[{id: m, task: binary, features: {x: numeric}}]'``).
    ``check_references``: see :func:`parse_config`.

    >>> app = load_config(demo_config_path(), env={})
    >>> [m.schema.model_id for m in app.models]
    ['bikes', 'churn']
    """
    if path is None:
        return parse_config(None, env, check_references=check_references)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, f"cannot read the configuration file: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"not valid YAML: {exc}") from None
    return parse_config(data, env, base_dir=Path(path).resolve().parent, check_references=check_references)


def demo_config_path() -> str:
    """Path of the packaged demo configuration (used by ``stream-monitor demo``)."""
    return str(resources.files("stream_monitor").joinpath("examples", "demo.yaml"))
