"""Every setting flows from the configuration file to the code that uses it, and each default is written once.

The settings dataclasses are walked with ``dataclasses.fields``, so a field added to them is covered
without touching this file:

- the parser reads it: set to a value other than its default in a configuration dict, it arrives in the
  engine that ``build_engine(parse_config(...))`` builds (a field the parser ignores keeps its default;
  one it does not know is an ``unknown key`` error);
- the core reads it: one run of a small eventful stream (warm-up, windows, labels, drift triggers, a
  segment surge, closed buckets) through an engine whose every model setting differs from its default
  records each read of a settings field by code of the package; every field must be read, and every
  read must see the configured value (a reader that builds its own default settings would see the
  default);
- no default is written twice: no function argument or class field of the package outside
  ``core/settings.py`` repeats a model setting's default as a literal under the same name.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import math
import operator
import sys
import types
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import numpy as np
import orjson
import pytest

from stream_monitor.app import build_engine
from stream_monitor.config import AppConfig, consumer_config, parse_config, producer_config
from stream_monitor.core.engine import MonitoringEngine
from stream_monitor.core.settings import (
    InsightSettings,
    ModelSettings,
    PolicySettings,
    SegmentSettings,
)
from stream_monitor.errors import ConfigError
from stream_monitor.offline.insights_store import load_insights, save_insights

PACKAGE = Path(__file__).resolve().parents[1] / "stream_monitor"
Path_ = tuple[str, ...]

# Settings fields whose configuration key is not their own name (all others: the field's name, nested
# settings under the name of the field that holds them).
YAML_KEY: dict[Path_, Path_] = {
    ("label_buffer_entries",): ("label_buffer", "max_entries"),
    ("label_ttl_seconds",): ("label_buffer", "ttl_seconds"),
    ("window", "time_slide"): ("window", "slide_seconds"),
    ("insights", "bucket_seconds"): ("insights", "bucket"),
}


# --------------------------------------------------------------------------- walking the dataclasses


def _without_none(tp: Any) -> Any:
    if isinstance(tp, types.UnionType) or get_origin(tp) is Union:
        rest = [a for a in get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None  # a required field (kafka.bootstrap_servers)


@dataclasses.dataclass(frozen=True)
class Leaf:
    path: Path_
    owner: type  # the dataclass that has the field
    type: Any  # its annotation, without ``| None``
    default: Any


def leaves(cls: type, prefix: Path_ = ()) -> Iterator[Leaf]:
    """Every non-dataclass field under ``cls``, depth first."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = _without_none(hints[f.name])
        if dataclasses.is_dataclass(tp):
            yield from leaves(tp, (*prefix, f.name))  # type: ignore[arg-type]
        else:
            yield Leaf((*prefix, f.name), cls, tp, _default(f))


def settings_classes(cls: type) -> set[type]:
    found = {cls}
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = _without_none(hints[f.name])
        if dataclasses.is_dataclass(tp):
            found |= settings_classes(tp)  # type: ignore[arg-type]
    return found


def get_path(obj: Any, path: Path_) -> Any:
    for name in path:
        obj = getattr(obj, name)
    return obj


def set_path(tree: dict[str, Any], path: Path_, value: Any) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def yaml_path(path: Path_) -> Path_:
    return YAML_KEY.get(path, path)


def candidates(leaf: Leaf) -> list[Any]:
    """Values other than the default to try, most natural first (the parser decides which are valid)."""
    tp, d = leaf.type, leaf.default
    out: list[Any]
    if tp is bool:
        out = [not d]
    elif get_origin(tp) is Literal:
        out = list(get_args(tp))
    elif tp is int:
        base = d if d is not None else 0
        out = [base * 2, base + 1, base // 2, 1000, 3, 2, 1]
    elif tp is float:
        out = [0.2, 0.5, 2.0, 1800.0] if d is None else [d * 1.5, d * 0.5, d * 1.1, d * 0.9, 0.5]
    elif tp is str:
        # (kafka.assignment_strategy is a string of a fixed set: roundrobin)
        out = [f"{d}-walk", "127.0.0.1:9093", "0.0.0.0", "roundrobin", "1"] if d else ["127.0.0.1:9093", "x"]
    elif get_origin(tp) is dict or tp is dict:
        out = [{"client.id": "walk"}, {"linger.ms": "7"}]
    elif get_origin(tp) is tuple and get_args(tp) == (str, ...):
        out = [["WALK_A", "WALK_B"]]  # a list of names (state.hmac_key_env: environment variables)
    else:
        raise AssertionError(f"{leaf.path}: no candidate values for a field of type {tp!r}")
    return [v for v in out if v != d]


def arrived(value: Any, expected: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(value, dict) and all(value.get(k) == v for k, v in expected.items())
    if isinstance(expected, list) and isinstance(value, tuple):
        return list(value) == expected
    if isinstance(expected, float) and isinstance(value, float):
        return math.isclose(value, expected, rel_tol=1e-12)
    return bool(value == expected)


def base_config() -> dict[str, Any]:
    return {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092"},
        "models": [{"id": "m", "task": "binary", "features": {"x": "numeric"}}],
    }


def first_valid(leaf: Leaf, make: Callable[[Any], dict[str, Any]]) -> tuple[Any, AppConfig]:
    """The first candidate the parser accepts, and the configuration it gives."""
    problems = []
    for value in candidates(leaf):
        try:
            return value, parse_config(make(value), env={})
        except ConfigError as exc:
            problems.append(f"{value!r}: {exc}")
    raise AssertionError(f"{'.'.join(leaf.path)}: no candidate value is valid: {problems}")


MODEL_LEAVES = list(leaves(ModelSettings))
APP_LEAVES = [leaf for leaf in leaves(AppConfig) if leaf.path[0] != "models"]


def test_the_walk_sees_every_settings_class() -> None:
    """The walk goes through nested settings (and would fail loudly on a type it cannot vary)."""
    assert {c.__name__ for c in settings_classes(ModelSettings)} >= {
        "WindowSettings",
        "DetectorSettings",
        "PolicySettings",
        "InsightSettings",
        "IncidentSettings",
        "SegmentSettings",
        "RecommendSettings",
    }
    assert ("insights", "segments", "surge_ratio") in {leaf.path for leaf in MODEL_LEAVES}
    for leaf in MODEL_LEAVES + APP_LEAVES:
        assert candidates(leaf), leaf.path


# --------------------------------------------------------------------------- the parser reads every field


@pytest.mark.parametrize("leaf", MODEL_LEAVES, ids=lambda leaf: ".".join(leaf.path))
def test_every_model_setting_is_read_from_the_configuration_into_the_engine(leaf: Leaf) -> None:
    def make(value: Any) -> dict[str, Any]:
        data = base_config()
        set_path(data["models"][0], yaml_path(leaf.path), value)
        return data

    value, app = first_valid(leaf, make)
    engine = build_engine(app)
    assert arrived(get_path(engine.settings["m"], leaf.path), value), (
        f"models[0].{'.'.join(yaml_path(leaf.path))}: {value!r} was accepted but the engine has "
        f"{get_path(engine.settings['m'], leaf.path)!r}: the parser does not read it"
    )
    assert engine.monitors["m"].settings is engine.settings["m"]


# Where the app-level settings are used. The engine's are checked on the engine; the Kafka and HTTP
# ones on the librdkafka configuration where it has them, else they must be read (as an attribute)
# by code outside config.py: the service reads batch sizes, intervals and topics at run time.
ENGINE_READERS: dict[Path_, Callable[[MonitoringEngine], Any]] = {
    ("max_message_bytes",): lambda e: e.max_message_bytes,
    ("max_event_id_length",): lambda e: e.max_event_id_length,
    ("event_time", "max_future_seconds"): lambda e: e.event_time.max_future_seconds,
    ("event_time", "max_ahead_seconds"): lambda e: e.event_time.max_ahead_seconds,
    ("aggregation", "mode"): lambda e: e.aggregation.mode,
    ("aggregation", "shard_idle_timeout_seconds"): lambda e: e.aggregation.shard_idle_timeout_seconds,
}
LIBRDKAFKA_KEY: dict[Path_, str] = {  # in the consumer's configuration
    ("kafka", "bootstrap_servers"): "bootstrap.servers",
    ("kafka", "group_id"): "group.id",
    ("kafka", "assignment_strategy"): "partition.assignment.strategy",
}


@functools.cache
def _attribute_reads_outside_config() -> set[str]:
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if path.name == "config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                names.add(node.attr)
    return names


@functools.cache
def _reference_file() -> str:
    """A reference of the base configuration's model (two-stage aggregation needs one)."""
    import tempfile

    from stream_monitor.core.events import decode_predictions
    from stream_monitor.core.reference import build_reference

    schema = parse_config(base_config(), env={}).models[0].schema
    raws = [
        b'{"event_id":"%d","model_id":"m","ts":%d,"features":{"x":%d},"prediction":0.5}' % (i, i, i % 7)
        for i in range(50)
    ]
    batch = decode_predictions(raws, {"m": schema})[0]["m"]
    path = Path(tempfile.mkdtemp()) / "m.json"
    path.write_bytes(build_reference(schema, batch).to_json())
    return str(path)


@pytest.mark.parametrize("leaf", APP_LEAVES, ids=lambda leaf: ".".join(leaf.path))
def test_every_app_setting_is_read_from_the_configuration_and_used(leaf: Leaf) -> None:
    def make(value: Any) -> dict[str, Any]:
        data = base_config()
        set_path(data, leaf.path, value)
        if leaf.path[0] == "aggregation":
            data["models"][0]["reference"] = _reference_file()
        return data

    value, app = first_valid(leaf, make)
    assert arrived(get_path(app, leaf.path), value), f"{'.'.join(leaf.path)}: the parser does not read it"
    engine = build_engine(app)
    if leaf.path in ENGINE_READERS:
        assert arrived(ENGINE_READERS[leaf.path](engine), value)
    elif leaf.path in LIBRDKAFKA_KEY:
        assert consumer_config(app)[LIBRDKAFKA_KEY[leaf.path]] == value
    elif leaf.path[:2] in (("kafka", "common"), ("kafka", "consumer"), ("kafka", "producer")):
        section = leaf.path[1]
        merged = producer_config(app) if section == "producer" else consumer_config(app)
        assert arrived(merged, value)
    else:
        assert leaf.path[-1] in _attribute_reads_outside_config(), (
            f"{'.'.join(leaf.path)} is parsed but no code outside config.py reads it"
        )


# --------------------------------------------------------------------------- the core reads every field

# Every model setting, none at its default, chosen so that a short stream reaches every reader: small
# windows and buckets, few labels needed, an early segment surge and a later drift. A field added to
# the settings without an entry here gets the first non-default value the parser accepts.
SCENARIO: dict[Path_, Any] = {
    ("window", "size"): 300,
    ("window", "slide"): 100,
    ("window", "width"): 120,
    ("window", "time_slide"): 60,
    ("window", "allowed_lateness"): 30,
    ("detectors", "bins"): 8,
    ("detectors", "top_k"): 10,
    ("detectors", "reference_sample"): 500,
    ("detectors", "window_sample"): 250,
    ("detectors", "alpha"): 0.02,
    ("detectors", "ks_min_effect"): 0.12,
    ("detectors", "chi2_min_effect"): 0.12,
    ("detectors", "psi_epsilon"): 2e-4,
    ("detectors", "missing_rate_delta"): 0.15,
    ("detectors", "out_of_range_rate"): 0.07,
    ("detectors", "new_category_rate"): 0.07,
    ("detectors", "volume_ratio_low"): 0.3,
    ("detectors", "volume_ratio_high"): 3.0,
    ("detectors", "adwin_delta"): 0.004,
    ("policy", "psi_warning"): 0.12,
    ("policy", "psi_alarm"): 0.18,
    ("policy", "psi_critical"): 0.35,
    ("policy", "consecutive_windows"): 3,
    ("policy", "hysteresis"): 0.7,
    ("policy", "auc_drop"): 0.02,
    ("policy", "performance_standard_errors"): 2.5,
    ("policy", "performance_windows"): 4,
    ("policy", "f1_drop_relative"): 0.08,
    ("policy", "mae_rise_relative"): 0.25,
    ("policy", "prediction_psi_alarm"): 0.22,
    ("policy", "cooldown_seconds"): 3000,
    ("policy", "min_labels_for_performance"): 150,
    ("policy", "integrity_triggers"): False,
    ("policy", "integrity_windows"): 2,
    ("policy", "key_class"): "b",
    ("policy", "dataset_drift_share"): 0.6,
    ("policy", "escalation_factor"): 1.8,
    ("policy", "renotify_after_seconds"): 7200,
    ("insights", "bucket_seconds"): 600,
    ("insights", "retention"): 40,
    ("insights", "dna_metric"): "js",
    ("insights", "dna_cut"): 0.05,
    ("insights", "key_weight"): 3.0,
    ("insights", "surge_cooldown_seconds"): 1800,
    ("insights", "incidents", "missing_delta"): 0.2,
    ("insights", "incidents", "out_of_range_delta"): 0.3,
    ("insights", "incidents", "new_category_delta"): 0.15,
    ("insights", "incidents", "volume_low"): 0.4,
    ("insights", "incidents", "volume_high"): 2.5,
    ("insights", "incidents", "volume_history"): 5,
    ("insights", "incidents", "volume_min_history"): 2,
    ("insights", "segments", "min_events"): 100,
    ("insights", "segments", "psi_alarm"): 0.2,
    ("insights", "segments", "surge_min_share"): 0.08,
    ("insights", "segments", "surge_ratio"): 2.5,
    ("insights", "segments", "surge_min_events"): 120,
    ("insights", "segments", "baseline_buckets"): 5,
    ("insights", "recommend", "recent_buckets"): 5,
    ("insights", "recommend", "min_new_labels"): 1500,
    ("insights", "recommend", "min_buckets"): 2,
    ("warmup_events",): 600,
    ("performance_window",): 400,
    ("label_buffer_entries",): 200_000,
    ("label_ttl_seconds",): 2 * 86400,
}
T0 = 1_735_689_600.0  # a bucket boundary
SPACING = 0.5  # seconds between predictions
BUCKETS = 12
LABEL_DELAY = 20.0


def scenario_config() -> dict[str, Any]:
    """Three models with the SCENARIO settings: binary and multiclass on count windows, regression on
    event-time windows (the other window kind's fields are read by that kind only)."""
    settings: dict[str, Any] = {}
    for leaf in MODEL_LEAVES:
        if leaf.path == ("window", "kind"):
            continue
        if leaf.path in SCENARIO:
            value = SCENARIO[leaf.path]
        else:
            data = base_config()
            value, _ = first_valid(leaf, lambda v, d=data, p=leaf.path: _with(d, yaml_path(p), v))
        set_path(settings, yaml_path(leaf.path), value)
    features = {"x": {"type": "numeric", "key": True}, "y": "numeric", "color": "categorical"}
    models = []
    for model_id, task, kind in (
        ("bin", "binary", "count"),
        ("reg", "regression", "time"),
        ("multi", "multiclass", "count"),
    ):
        model = orjson.loads(orjson.dumps(settings))  # a deep copy
        model["window"]["kind"] = kind
        model.update(id=model_id, task=task, features=features, segment_keys=["ch"])
        if task == "multiclass":
            model["classes"] = ["a", "b", "c"]
        models.append(model)
    return {"kafka": {"bootstrap_servers": "127.0.0.1:9092"}, "models": models}


def _with(data: dict[str, Any], path: Path_, value: Any) -> dict[str, Any]:
    copy = orjson.loads(orjson.dumps(data))
    set_path(copy["models"][0], path, value)
    return copy


def scenario_events(
    model_id: str, task: str, rng: np.random.Generator
) -> tuple[list[bytes], list[tuple[float, bytes]]]:
    """Predictions, and their labels with their event times: a new channel surges with shifted inputs
    in bucket 4, the key feature drifts from bucket 7 on and a new colour appears."""
    n = int(BUCKETS * 600 / SPACING)
    ts = T0 + np.arange(n) * SPACING
    bucket = ((ts - T0) // 600).astype(int)
    partner = (bucket == 4) & (rng.uniform(size=n) < 0.4)
    x = rng.normal(0.0, 1.0, n) + np.where(partner, 2.5, 0.0) + np.where(bucket >= 7, 1.5, 0.0)
    y = rng.normal(0.0, 1.0, n)
    colour = rng.choice(["a", "b", "c"], size=n)
    colour = np.where((bucket >= 7) & (rng.uniform(size=n) < 0.2), "z", colour)
    luck = rng.uniform(size=n)
    noise = rng.normal(0.0, 0.5, n)
    other = rng.choice(["a", "b", "c"], size=n)
    predictions, labels = [], []
    for i in range(n):
        xi = float(x[i])
        if task == "binary":
            p = 1 / (1 + math.exp(-xi))
            prediction: Any = {"score": round(p, 4), "label": "1" if p >= 0.5 else "0"}
            label: Any = "1" if luck[i] < p else "0"
        elif task == "regression":
            prediction = round(2 * xi + 1, 4)
            label = round(2 * xi + 1 + float(noise[i]), 4)
        else:
            prediction = "a" if xi < -0.5 else "b" if xi < 0.5 else "c"
            label = prediction if luck[i] < 0.8 else str(other[i])
        event = {
            "event_id": f"{model_id}-{i}",
            "model_id": model_id,
            "ts": float(ts[i]),
            "features": {"x": round(xi, 4), "y": round(float(y[i]), 4), "color": str(colour[i])},
            "prediction": prediction,
            "segment": {"ch": "partner" if partner[i] else "web"},
        }
        predictions.append(orjson.dumps(event))
        # Labels from the second bucket on: the first windows have none (prediction drift speaks).
        if bucket[i] >= 1:
            at = float(ts[i]) + LABEL_DELAY
            labels.append(
                (
                    at,
                    orjson.dumps(
                        {"event_id": event["event_id"], "model_id": model_id, "ts": at, "label": label}
                    ),
                )
            )
    return predictions, labels


def run_scenario(engine: MonitoringEngine) -> dict[str, int]:
    """Feed the scenario in batches, each label once event time has passed it; triggers by model."""
    rng = np.random.default_rng(11)
    triggers: dict[str, int] = {}
    for model_id, monitor in engine.monitors.items():
        predictions, labels = scenario_events(model_id, monitor.schema.task, rng)
        fired, next_label, batch = 0, 0, 400
        for start in range(0, len(predictions), batch):
            now = T0 + (start + batch - 1) * SPACING
            fired += len(engine.process_predictions(predictions[start : start + batch], now=now).triggers)
            due = next_label
            while due < len(labels) and labels[due][0] <= now:
                due += 1
            engine.process_labels([raw for _, raw in labels[next_label:due]], now=now)
            next_label = due
        fired += len(engine.flush(now=T0 + BUCKETS * 600).triggers)
        triggers[model_id] = fired
    return triggers


def trace_reads(monkeypatch: pytest.MonkeyPatch, classes: set[type]) -> dict[tuple[type, str], list[Any]]:
    """Record every read of a settings field by code of the package (not config.py, which fills the
    settings, nor settings.py, which only passes values on), with the value read."""
    reads: dict[tuple[type, str], list[Any]] = defaultdict(list)
    package = str(PACKAGE)
    skip = (str(PACKAGE / "config.py"), str(PACKAGE / "core" / "settings.py"))
    for cls in classes:
        names = frozenset(f.name for f in dataclasses.fields(cls))

        def getattribute(self: Any, name: str, _cls: type = cls, _names: frozenset[str] = names) -> Any:
            value = object.__getattribute__(self, name)
            if name in _names:
                caller = sys._getframe(1).f_code.co_filename
                if caller.startswith(package) and caller not in skip:
                    reads[(_cls, name)].append(value)
            return value

        monkeypatch.setattr(cls, "__getattribute__", getattribute)
    return reads


def test_every_model_setting_reaches_a_reader_with_its_configured_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = parse_config(scenario_config(), env={})
    configured: dict[tuple[type, str], set[Any]] = defaultdict(set)
    for model in app.models:
        for leaf in MODEL_LEAVES:
            value = get_path(model.settings, leaf.path)
            assert leaf.path == ("window", "kind") or value != leaf.default, leaf.path
            configured[(leaf.owner, leaf.path[-1])].add(value)
    reads = trace_reads(monkeypatch, settings_classes(ModelSettings))
    engine = build_engine(app)
    triggers = run_scenario(engine)
    monkeypatch.undo()

    # The stream went everywhere a setting is read: triggers, closed buckets, a surge, labels joined.
    assert all(triggers.values()), triggers
    for monitor in engine.monitors.values():
        assert monitor.insights is not None and len(monitor.insights.buckets.closed()) >= 8
        assert monitor.labels.joined > 1000
    assert engine.monitors["bin"].insights is not None and engine.monitors["bin"].insights.surges

    held = held_settings(engine, configured)
    assert not held["wrong"], (
        f"objects holding a setting with a value other than the configured one: {held['wrong']}"
    )
    assert {"adwin_delta", "delta", "window", "psi_alarm", "bucket_seconds", "max_entries", "cut"} <= held[
        "seen"
    ]

    unread = [".".join(leaf.path) for leaf in MODEL_LEAVES if not reads.get((leaf.owner, leaf.path[-1]))]
    assert not unread, f"settings no code reads during the run: {unread}"
    wrong = {
        ".".join(leaf.path): sorted(
            {repr(v) for v in reads[(leaf.owner, leaf.path[-1])]}
            - {repr(v) for v in configured[(leaf.owner, leaf.path[-1])]}
        )
        for leaf in MODEL_LEAVES
    }
    wrong = {k: v for k, v in wrong.items() if v}
    assert not wrong, f"settings read with a value other than the configured one (a default?): {wrong}"


# Attributes of the monitor's parts that hold a model setting under another name.
HELD_AS: dict[str, list[Path_]] = {
    "delta": [("detectors", "adwin_delta")],  # the ADWIN detectors
    "window": [("performance_window",)],  # RollingPerformance
    "slide": [("window", "slide"), ("window", "time_slide")],  # count or event-time windows
    "max_entries": [("label_buffer_entries",)],
    "ttl_seconds": [("label_ttl_seconds",)],
    "cut": [("insights", "dna_cut")],  # the data DNA
}


def held_settings(engine: MonitoringEngine, configured: dict[tuple[type, str], set[Any]]) -> dict[str, Any]:
    """Every object of the package that the monitors hold (windows, detectors, label buffer, policy,
    insight tracker, DNA …): a number it keeps under a setting's name must be that setting's configured
    value, so a part built with its own default is found even when nothing reads the settings field."""
    allowed: dict[str, set[Any]] = defaultdict(set)
    for leaf in MODEL_LEAVES:
        allowed[leaf.path[-1]] |= configured[(leaf.owner, leaf.path[-1])]
    for name, paths in HELD_AS.items():
        for path in paths:
            leaf = next(leaf for leaf in MODEL_LEAVES if leaf.path == path)
            allowed[name] |= configured[(leaf.owner, path[-1])]
    classes = settings_classes(ModelSettings)
    seen: set[str] = set()
    wrong: dict[str, list[Any]] = defaultdict(list)
    stack: list[Any] = list(engine.monitors.values())
    visited: set[int] = set()
    while stack:
        obj = stack.pop()
        if id(obj) in visited:
            continue
        visited.add(id(obj))
        if isinstance(obj, dict):
            stack.extend(obj.values())
            continue
        if isinstance(obj, list | tuple | set | frozenset) or type(obj).__name__ == "deque":
            stack.extend(obj)
            continue
        if type(obj) in classes or not type(obj).__module__.startswith("stream_monitor"):
            continue
        for name, value in vars(obj).items() if hasattr(obj, "__dict__") else ():
            if name in allowed and isinstance(value, int | float) and not isinstance(value, bool):
                seen.add(name)
                if not any(math.isclose(value, v) for v in allowed[name] if isinstance(v, int | float)):
                    wrong[f"{type(obj).__name__}.{name}"].append(value)
            stack.append(value)
    return {"seen": seen, "wrong": dict(wrong)}


# --------------------------------------------------------------------------- values left to the policy


def test_segments_and_the_data_dna_follow_the_policy_unless_set() -> None:
    data = base_config()
    data["models"][0]["policy"] = {"psi_warning": 0.12, "psi_alarm": 0.22, "psi_critical": 0.4}
    data["models"][0]["segment_keys"] = ["ch"]
    engine = build_engine(parse_config(data, env={}), references={"m": None})
    monitor = engine.monitors["m"]
    resolved = monitor.settings.resolved_insights()
    # The regime cut is no longer the policy's warning level: it comes from the buckets' own noise
    # (None) above a floor in the DNA's metric; buckets follow the windows (count windows: a day).
    assert (resolved.segments.psi_alarm, resolved.dna_cut, resolved.dna_min_cut) == (0.22, None, 0.01)
    assert resolved.bucket_seconds == 86400.0
    data["models"][0]["insights"] = {"dna_metric": "js", "segments": {"psi_alarm": 0.3}}
    data["models"][0]["window"] = {"kind": "time", "width": "7d"}
    resolved = parse_config(data, env={}).models[0].settings.resolved_insights()
    assert resolved.segments.psi_alarm == 0.3
    assert resolved.dna_min_cut == pytest.approx(0.01 / (8 * math.log(2)))
    assert resolved.bucket_seconds == 7 * 86400.0


def test_the_insight_tracker_and_segments_use_the_resolved_settings() -> None:
    from stream_monitor.core.insights.tracker import InsightTracker
    from stream_monitor.core.reference import NumericProfile, ReferenceProfile
    from stream_monitor.core.schema import FeatureSpec, ModelSchema

    schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric", key=True),), segment_keys=("ch",))
    ref = ReferenceProfile(1, "m", numeric={"x": NumericProfile.from_values(np.arange(100.0))})
    settings = ModelSettings(policy=PolicySettings(psi_alarm=0.25), insights=InsightSettings(key_weight=4.0))
    tracker = InsightTracker(schema, ref, settings.resolved_insights())
    assert tracker.segments.psi_alarm == 0.25
    assert tracker.settings.segments.psi_alarm == 0.25
    # Alone (a saved folder without settings, a doctest), the default policy fills the gaps.
    alone = InsightTracker(schema, ref)
    assert alone.segments.psi_alarm == PolicySettings.psi_alarm
    assert alone.settings.dna_cut is None and alone.settings.bucket_seconds == 86400.0
    assert SegmentSettings().psi_alarm is None


def test_saved_insights_keep_the_model_settings(tmp_path: Path) -> None:
    from stream_monitor.core.insights.tracker import InsightTracker
    from stream_monitor.core.reference import NumericProfile, ReferenceProfile
    from stream_monitor.core.schema import FeatureSpec, ModelSchema

    schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric", key=True),))
    ref = ReferenceProfile(1, "m", numeric={"x": NumericProfile.from_values(np.arange(100.0))})
    settings = ModelSettings(insights=InsightSettings(dna_metric="js", retention=7)).resolved_insights()
    save_insights(tmp_path, InsightTracker(schema, ref, settings))
    assert load_insights(tmp_path, "m").settings == settings


def test_insight_settings_errors_name_the_key_and_the_variable() -> None:
    env = {"STREAM_MONITOR_MODELS__M__INSIGHTS__SEGMENTS__SURGE_RATIO": "lots"}
    with pytest.raises(ConfigError) as info:
        parse_config(base_config(), env=env)
    assert info.value.key == "models[0].insights.segments.surge_ratio"
    assert "STREAM_MONITOR_MODELS__M__INSIGHTS__SEGMENTS__SURGE_RATIO" in info.value.problem
    data = base_config()
    data["models"][0]["insights"] = {"incidents": {"volume_history": 3, "volume_min_history": 4}}
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert info.value.key == "models[0].insights.incidents.volume_min_history"
    data["models"][0]["insights"] = {"dna_metric": "kl"}
    with pytest.raises(ConfigError, match=r"insights\.dna_metric: must be one of psi, js"):
        parse_config(data, env={})
    data["models"][0]["insights"] = {"segments": {"surge_ratios": 2}}
    with pytest.raises(ConfigError, match=r"insights\.segments\.surge_ratios: unknown key, did you mean"):
        parse_config(data, env={})


# --------------------------------------------------------------------------- each default written once

# Function arguments that take a model setting under another name.
ARGUMENT_OF: dict[str, Path_] = {
    "max_increase": ("detectors", "missing_rate_delta"),
    "low_ratio": ("detectors", "volume_ratio_low"),
    "high_ratio": ("detectors", "volume_ratio_high"),
    "min_effect": ("detectors", "ks_min_effect"),
    "eps": ("detectors", "psi_epsilon"),
    "delta": ("detectors", "adwin_delta"),
    "cut": ("insights", "dna_cut"),
}


_ARITHMETIC: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _literal(node: ast.expr | None) -> float | None:
    """The number a default is written as (``7 * 86400`` and ``-1`` included), else None."""
    if isinstance(node, ast.Constant):
        value = node.value
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _literal(node.operand)
        return None if inner is None else -inner
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _literal(node.left), _literal(node.right)
        if left is not None and right is not None:
            return _ARITHMETIC[type(node.op)](left, right)
    return None


def _defaults_written_in(tree: ast.AST) -> Iterator[tuple[int, str, float]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            positional = a.posonlyargs + a.args
            pairs = list(zip(positional[len(positional) - len(a.defaults) :], a.defaults, strict=True))
            pairs += [(arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None]
            for arg, default in pairs:
                value = _literal(default)
                if value is not None:
                    yield node.lineno, arg.arg, value
        elif isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    value = _literal(stmt.value)
                    if value is not None:
                        yield stmt.lineno, stmt.target.id, value


def test_no_model_setting_default_is_written_twice() -> None:
    """A threshold's default lives in core/settings.py; elsewhere a default names it
    (``max_rate: float = DetectorSettings.out_of_range_rate``) rather than repeating ``0.05``."""
    by_name: dict[str, tuple[Path_, float]] = {}
    for leaf in leaves(ModelSettings):
        if isinstance(leaf.default, int | float) and not isinstance(leaf.default, bool):
            by_name[leaf.path[-1]] = (leaf.path, leaf.default)
    for name, path in ARGUMENT_OF.items():
        default = get_path(ModelSettings(), path)
        if default is not None:
            by_name[name] = (path, default)
    assert {"psi_alarm", "psi_warning", "alpha", "bins", "retention"} <= set(by_name)
    repeated = []
    for source in sorted(PACKAGE.rglob("*.py")):
        if source == PACKAGE / "core" / "settings.py":
            continue
        for line, name, value in _defaults_written_in(ast.parse(source.read_text(encoding="utf-8"))):
            if name in by_name and value == by_name[name][1]:
                where = f"{source.relative_to(PACKAGE.parent)}:{line}"
                repeated.append(f"{where} {name}={value} (the default of {'.'.join(by_name[name][0])})")
    assert not repeated, "defaults written again instead of named:\n" + "\n".join(repeated)


def test_the_default_scan_can_fail() -> None:
    tree = ast.parse(
        "def evaluate(psi_alarm: float = 0.15, eps=DetectorSettings.psi_epsilon, ttl=7 * 86400): ...\n"
        "class S:\n    psi_warning: float = 0.1\n"
    )
    assert sorted((name, value) for _, name, value in _defaults_written_in(tree)) == [
        ("psi_alarm", 0.15),
        ("psi_warning", 0.1),
        ("ttl", 604800),
    ]
