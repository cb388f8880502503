"""Known answers for every accepted event form and every rejection reason, plus property tests."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, Literal
from unittest import mock

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_monitor.core import events
from stream_monitor.core.events import (
    MAX_DEPTH,
    REASON_PATTERN,
    decode_labels,
    decode_predictions,
    parse_ts,
    possible_reasons,
)
from stream_monitor.core.schema import FeatureSpec, ModelSchema
from stream_monitor.kafka import state as state_mod

BINARY = ModelSchema(
    "churn",
    "binary",
    (
        FeatureSpec("age", "numeric"),
        FeatureSpec("temp", "numeric"),
        FeatureSpec("plan", "categorical"),
        FeatureSpec("channel", "categorical"),
    ),
    positive_class="yes",
    segment_keys=("country", "channel"),
    classes=("no", "yes"),
)
REGRESSION = ModelSchema("bikes", "regression", (FeatureSpec("temp", "numeric"),))
MULTICLASS = ModelSchema("topic", "multiclass", (FeatureSpec("len", "numeric"),))
SCHEMAS = {s.model_id: s for s in (BINARY, REGRESSION, MULTICLASS)}

TS = 1717200000.0


def prediction_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "e1",
        "model_id": "churn",
        "ts": TS,
        "features": {"age": 30, "temp": 21.5, "plan": "pro", "channel": "web"},
        "prediction": {"score": 0.75, "label": "yes"},
    }
    for key, value in overrides.items():
        if value is _ABSENT:
            event.pop(key, None)
        else:
            event[key] = value
    return event


_ABSENT = object()


def decode_one(event: Any, schemas: dict[str, ModelSchema] = SCHEMAS) -> Any:
    """The batch of the single accepted event, or its rejection reason."""
    raw = event if isinstance(event, bytes) else json.dumps(event).encode()
    batches, rejections = decode_predictions([raw], schemas)
    if rejections:
        assert not batches
        assert len(rejections) == 1 and rejections[0].index == 0 and rejections[0].raw == raw
        return rejections[0].reason
    (batch,) = batches.values()
    assert batch.index.tolist() == [0]
    return batch


# --- accepted prediction forms ----------------------------------------------------------------------


def test_columnar_layout_of_a_two_model_batch() -> None:
    raws = [
        orjson.dumps(prediction_event(event_id="a")),
        orjson.dumps(
            {"event_id": "b", "model_id": "bikes", "ts": 5, "features": {"temp": 3}, "prediction": 7}
        ),
        b"garbage",
        orjson.dumps(prediction_event(event_id="c", features={"age": 40, "temp": None, "plan": "free"})),
    ]
    batches, rejections = decode_predictions(raws, SCHEMAS)
    churn, bikes = batches["churn"], batches["bikes"]
    assert churn.index.dtype == np.int64 and churn.index.tolist() == [0, 3]
    assert churn.event_id == ["a", "c"]
    assert churn.numeric.shape == (2, 2) and churn.numeric.dtype == np.float64
    assert churn.numeric.flags.c_contiguous
    np.testing.assert_array_equal(churn.numeric, [[30.0, 40.0], [21.5, np.nan]])
    assert churn.categorical == [["pro", "free"], ["web", None]]
    assert churn.segments == {"country": [None, None], "channel": ["web", None]}
    assert len(churn) == 2 and len(bikes) == 1
    assert bikes.score.tolist() == [7.0] and bikes.pred_label == [None] and bikes.segments == {}
    assert [(r.index, r.reason, r.raw) for r in rejections] == [(2, "malformed_json", b"garbage")]


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (TS, TS),
        (1717200000, TS),
        (1717200000.125, TS + 0.125),
        ("2024-06-01T00:00:00Z", TS),
        ("2024-06-01t00:00:00z", TS),
        ("2024-06-01 00:00:00Z", TS),
        ("2024-06-01T00:00:00.5Z", TS + 0.5),
        ("2024-06-01T00:00:00.123456789Z", TS + 0.123456789),
        ("2024-06-01T05:30:00+05:30", TS),
        ("2024-05-31T20:00:00-04:00", TS),
        ("2016-12-31T23:59:60Z", 1483228800.0),
        ("1969-12-31T23:59:59Z", -1.0),
        ("0001-01-01T00:00:00Z", events.MIN_TS),
    ],
)
def test_parse_ts_known_answers(ts: Any, expected: float) -> None:
    assert parse_ts(ts) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "ts",
    [
        True,
        None,
        [],
        {},
        "",
        "yesterday",
        "2024-06-01",
        "2024-06-01T00:00:00",  # no offset: would depend on the local zone
        "2024-13-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2024-06-01T24:00:00Z",
        "2024-06-01T00:60:00Z",
        "2024-06-01T00:00:61Z",
        "2024-06-01T00:00:00+24:00",
        "2024-06-01T00:00:00.Z",
        "２０２４-06-01T00:00:00Z",  # non-ASCII digits
        "2024-06-01T00:00:00Z ",
        "0000-12-31T23:00:00Z",
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        1717200000000,  # milliseconds by mistake: year ~56000
        -1e12,
        10**400,
        math.inf,
        -math.inf,
        math.nan,
    ],
)
def test_parse_ts_rejects(ts: Any) -> None:
    assert parse_ts(ts) is None


@pytest.mark.parametrize(
    ("features", "numeric", "categorical", "unknown"),
    [
        ({"age": 30, "temp": 21.5, "plan": "pro", "channel": "web"}, [30.0, 21.5], ["pro", "web"], 0),
        ({"age": True, "temp": False, "plan": 3, "channel": True}, [1.0, 0.0], ["3", "true"], 0),
        ({"age": None, "temp": None, "plan": None, "channel": None}, [math.nan, math.nan], [None, None], 0),
        ({}, [math.nan, math.nan], [None, None], 0),
        ({"age": 1, "extra": {"deep": [1]}, "other": "x"}, [1.0, math.nan], [None, None], 2),
        ({"age": 2**70, "temp": -1e308}, [2.0**70, -1e308], [None, None], 0),
    ],
)
def test_feature_value_forms(
    features: dict[str, Any], numeric: list[float], categorical: list[Any], unknown: int
) -> None:
    batch = decode_one(prediction_event(features=features))
    np.testing.assert_array_equal(batch.numeric[:, 0], numeric)
    assert [column[0] for column in batch.categorical] == categorical
    assert batch.unknown_features == unknown


@pytest.mark.parametrize(
    ("model_id", "prediction", "score", "pred_label"),
    [
        ("churn", 0.25, 0.25, None),
        ("churn", 1, 1.0, None),
        ("churn", True, 1.0, None),
        ("churn", "yes", math.nan, "yes"),
        ("churn", {"score": 0.75}, 0.75, None),
        ("churn", {"label": "no"}, math.nan, "no"),
        ("churn", {"label": 1}, math.nan, "yes"),  # 1/true: the positive class, as for labels
        ("churn", {"label": False}, math.nan, "no"),
        ("churn", {"scores": {"no": 0.4, "yes": 0.6}}, 0.6, "yes"),
        ("churn", {"scores": {"no": 0.9}}, math.nan, "no"),
        ("churn", {"score": 0.1, "label": "no", "scores": {"yes": 0.9}}, 0.1, "no"),
        ("churn", {"score": 0.1, "label": None}, 0.1, None),
        ("bikes", 12.5, 12.5, None),
        ("bikes", {"score": 3, "label": "ignored"}, 3.0, None),
        ("topic", "sports", math.nan, "sports"),
        ("topic", {"scores": {"a": 0.2, "b": 0.5, "c": 0.3}}, math.nan, "b"),
    ],
)
def test_prediction_forms(model_id: str, prediction: Any, score: float, pred_label: str | None) -> None:
    features = {"temp": 1, "len": 1}
    batch = decode_one(prediction_event(model_id=model_id, prediction=prediction, features=features))
    np.testing.assert_array_equal(batch.score, [score])
    assert batch.pred_label == [pred_label]


@pytest.mark.parametrize(
    ("extra", "version", "country", "channel"),
    [
        ({}, None, None, "web"),
        ({"model_version": "v3", "segment": {"country": "de"}}, "v3", "de", "web"),
        ({"model_version": 3, "segment": {"country": "de", "channel": "app"}}, "3", "de", "app"),
        ({"model_version": None, "segment": {"channel": None, "junk": [1]}}, None, None, None),
        ({"segment": None, "features": {"country": 7, "channel": "web"}}, None, "7", "web"),
        ({"features": {"country": 1.5}}, None, "1.5", None),
        ({"features": {"country": 2.0}, "segment": {"channel": " App "}}, None, "2", "App"),
        ({"features": {"country": [1]}}, None, None, None),
    ],
)
def test_version_and_segments(extra: dict[str, Any], version: str | None, country: Any, channel: Any) -> None:
    batch = decode_one(prediction_event(**extra))
    assert batch.model_version == [version]
    assert batch.segments == {"country": [country], "channel": [channel]}


@pytest.mark.parametrize(
    "raw",
    [
        bytearray(orjson.dumps(prediction_event())),
        memoryview(orjson.dumps(prediction_event())),
        orjson.dumps(prediction_event()).decode(),
    ],
)
def test_other_buffer_types_are_accepted(raw: Any) -> None:
    batches, rejections = decode_predictions([raw], SCHEMAS)
    assert rejections == [] and batches["churn"].event_id == ["e1"]


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    text = '[{"\\"' * MAX_DEPTH
    batch = decode_one(prediction_event(features={"plan": text, "pad": "x" * 2000}))
    assert batch.categorical[0] == [text]


def nested_event(depth: int) -> bytes:
    """A valid event whose deepest value sits at nesting ``depth`` (the event object is level 1)."""
    head = b'{"event_id": "e1", "model_id": "churn", "ts": 1, "prediction": 0.5, "features": {"junk": '
    return head + b"[" * (depth - 2) + b"1" + b"]" * (depth - 2) + b"}}"


def test_nesting_at_the_limit_is_parsed_and_one_more_level_is_too_deep() -> None:
    assert decode_one(nested_event(MAX_DEPTH)).unknown_features == 1
    assert decode_one(nested_event(MAX_DEPTH + 1)) == "too_deep"


# --- rejections -------------------------------------------------------------------------------------

DEEP = b'{"features": ' + b"[" * (MAX_DEPTH + 5) + b"]" * (MAX_DEPTH + 5) + b"}"
UNCLOSED_DEEP = b"[" * 500_000


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"x" * 1_000_001, "too_large"),
        (DEEP, "too_deep"),
        (UNCLOSED_DEEP, "too_deep"),
        (b"{", "malformed_json"),
        (b" ", "malformed_json"),
        # Non-finite literals are valid enough to validate: the event is judged on its fields.
        (b'{"a": NaN}', "missing_field:event_id"),
        (b'{"a": Infinity}', "missing_field:event_id"),
        (b'{"a": NaN', "malformed_json"),
        (b'{"a": "\xff"}', "malformed_json"),
        (b'{"a": "\xed\xa0\x80"}', "malformed_json"),
        (b"{} {}", "malformed_json"),
        (b"[]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b"null", "not_an_object"),
        (b"3", "not_an_object"),
        (12, "malformed_json"),
    ],
)
def test_byte_level_rejections(raw: Any, reason: str) -> None:
    batches, rejections = decode_predictions([raw], SCHEMAS)
    assert batches == {}
    assert [(r.index, r.reason) for r in rejections] == [(0, reason)]
    expected_raw = raw if isinstance(raw, bytes) else b""
    assert rejections[0].raw == expected_raw


def test_size_is_checked_before_parsing() -> None:
    valid = orjson.dumps(prediction_event())
    batches, rejections = decode_predictions([valid, b"{" * len(valid)], SCHEMAS, max_bytes=len(valid) - 1)
    assert batches == {} and [r.reason for r in rejections] == ["too_large", "too_large"]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"event_id": _ABSENT}, "missing_field:event_id"),
        ({"event_id": None}, "missing_field:event_id"),
        ({"event_id": 7}, "bad_type:event_id"),
        ({"event_id": ""}, "bad_type:event_id"),
        ({"model_id": _ABSENT}, "missing_field:model_id"),
        ({"model_id": ["churn"]}, "bad_type:model_id"),
        ({"model_id": "nobody"}, "unknown_model"),
        ({"ts": _ABSENT}, "missing_field:ts"),
        ({"ts": "soon"}, "bad_type:ts"),
        ({"ts": True}, "bad_type:ts"),
        ({"ts": 1717200000000}, "bad_type:ts"),
        ({"features": _ABSENT}, "missing_field:features"),
        ({"features": [1, 2]}, "bad_type:features"),
        ({"features": {"age": "30"}}, "bad_type:features.age"),
        ({"features": {"age": 1, "temp": [1]}}, "bad_type:features.temp"),
        ({"features": {"temp": {}, "age": "x"}}, "bad_type:features.age"),  # schema order decides
        ({"features": {"plan": [1.5]}}, "bad_type:features.plan"),
        ({"features": {"channel": {"a": 1}}}, "bad_type:features.channel"),
        ({"prediction": _ABSENT}, "missing_field:prediction"),
        ({"prediction": None}, "missing_field:prediction"),
        ({"prediction": [0.5]}, "bad_type:prediction"),
        ({"prediction": {}}, "missing_field:prediction.score"),
        ({"prediction": {"score": "0.5"}}, "bad_type:prediction.score"),
        ({"prediction": {"label": 0.5}}, "bad_type:prediction.label"),
        ({"prediction": {"scores": [0.5]}}, "bad_type:prediction.scores"),
        ({"prediction": {"scores": {"yes": "0.5"}}}, "bad_type:prediction.scores"),
        ({"model_id": "bikes", "prediction": "high"}, "bad_type:prediction"),
        ({"model_id": "bikes", "prediction": {"label": "high"}}, "missing_field:prediction.score"),
        ({"model_version": 1.5}, "bad_type:model_version"),
        ({"segment": "de"}, "bad_type:segment"),
        ({"segment": {"country": [1.5]}}, "bad_type:segment.country"),
        # a bad value under a name the schema does not know is never a reason
        ({"features": {"age": 1, "surprise": "x", "nested": {"a": [1]}}}, None),
        ({"segment": {"unknown_key": [1]}}, None),
    ],
)
def test_field_level_rejections(overrides: dict[str, Any], reason: str | None) -> None:
    result = decode_one(prediction_event(**overrides))
    if reason is None:
        assert len(result) == 1
    else:
        assert result == reason
        assert reason in possible_reasons(BINARY, "predictions")


@pytest.mark.parametrize(
    ("literal", "where", "reason"),
    [
        ("NaN", "age", "non_finite:features.age"),
        ("Infinity", "age", "non_finite:features.age"),
        ("-Infinity", "age", "non_finite:features.age"),
        ("1e400", "age", "non_finite:features.age"),
        ("1" + "0" * 400, "age", "non_finite:features.age"),
        ("NaN", "ts", "non_finite:ts"),
        ("1e400", "score", "non_finite:prediction.score"),
    ],
)
def test_non_finite_literals_name_their_field_with_the_real_orjson(
    literal: str, where: str, reason: str
) -> None:
    event = prediction_event()
    if where == "ts":
        event["ts"] = "@@"
    elif where == "score":
        event["prediction"] = {"score": "@@"}
    else:
        event["features"][where] = "@@"
    raw = json.dumps(event).replace('"@@"', literal).encode()
    batches, rejections = decode_predictions([raw], SCHEMAS)
    assert batches == {} and [(r.reason, r.raw) for r in rejections] == [(reason, raw)]


@pytest.fixture
def loader_returning_infinities(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand in stdlib json for orjson: it turns 1e400 and Infinity into inf, as some orjson versions
    do for 1e400, and keeps huge integers exact, so the non-finite paths can be reached from bytes."""
    monkeypatch.setattr(events, "_loads", json.loads)


@pytest.mark.usefixtures("loader_returning_infinities")
@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"ts": 1e400}, "non_finite:ts"),
        ({"features": {"age": 1e400}}, "non_finite:features.age"),
        ({"features": {"age": 1, "temp": -1e400}}, "non_finite:features.temp"),
        ({"features": {"age": 10**400, "temp": 1e400}}, "non_finite:features.age"),
        ({"features": {"temp": 10**400}}, "non_finite:features.temp"),
        ({"prediction": 1e400}, "non_finite:prediction"),
        ({"prediction": 10**400}, "non_finite:prediction"),
        ({"prediction": {"score": 1e400}}, "non_finite:prediction.score"),
        ({"prediction": {"scores": {"yes": -1e400}}}, "non_finite:prediction.scores"),
        # checks on the event come first; infinite features are found per batch afterwards
        ({"features": {"age": 1e400}, "prediction": None}, "missing_field:prediction"),
    ],
)
def test_non_finite_rejections(overrides: dict[str, Any], reason: str) -> None:
    raw = json.dumps(prediction_event(**overrides)).replace("Infinity", "1e400").encode()
    assert decode_one(raw) == reason


@pytest.mark.usefixtures("loader_returning_infinities")
def test_infinite_features_leave_the_rest_of_the_batch_intact() -> None:
    good = [
        json.dumps(prediction_event(event_id=f"e{i}", features={"age": i, "plan": "pro"})).encode()
        for i in range(4)
    ]
    bad = json.dumps(prediction_event(event_id="bad", features={"temp": 1e400, "plan": "x"})).replace(
        "Infinity", "1e400"
    )
    batches, rejections = decode_predictions([good[0], bad.encode(), *good[1:]], SCHEMAS)
    batch = batches["churn"]
    assert batch.index.tolist() == [0, 2, 3, 4]
    assert batch.event_id == ["e0", "e1", "e2", "e3"]
    np.testing.assert_array_equal(batch.numeric[0], [0, 1, 2, 3])
    assert batch.categorical == [["pro"] * 4, [None] * 4]
    assert len(batch.ts) == len(batch.score) == len(batch.pred_label) == len(batch.model_version) == 4
    assert batch.segments == {"country": [None] * 4, "channel": [None] * 4}
    assert [(r.index, r.reason) for r in rejections] == [(1, "non_finite:features.temp")]


def test_fast_path_rows_get_the_same_reasons_as_the_full_checks() -> None:
    """Well-formed events take the decoder's fast path, whose numeric types are checked per batch."""
    features = {"age": 30, "temp": 21.5, "plan": "pro", "channel": "web"}

    def event(i: int, **changed: Any) -> bytes:
        fast = prediction_event(event_id=f"e{i}", prediction={"score": 0.5}, segment={"country": "de"})
        fast["features"] = {**features, **changed}
        return json.dumps(fast).encode().replace(b"Infinity", b"1e400")

    raws = [
        event(0),
        event(1, temp="21.5"),  # bad type found per batch
        event(2, age=[1], temp="x"),  # the first bad feature in schema order
        event(3, age=math.inf, temp={}),  # a bad type comes before an infinite value
        event(4, temp=math.inf),
        event(5, age=None, plan=None),
        event(6, channel=[1.5]),  # not a fast-path event: the full checks reject it
        event(7, age=True),
    ]
    batches, rejections = decode_predictions(raws, SCHEMAS)
    assert [(r.index, r.reason) for r in rejections] == [
        (1, "bad_type:features.temp"),
        (2, "bad_type:features.age"),
        (3, "bad_type:features.temp"),
        (4, "non_finite:features.temp"),
        (6, "bad_type:features.channel"),
    ]
    assert [r.raw for r in rejections] == [raws[i] for i in (1, 2, 3, 4, 6)]
    batch = batches["churn"]
    assert batch.index.tolist() == [0, 5, 7]
    np.testing.assert_array_equal(batch.numeric, [[30, np.nan, 1], [21.5, 21.5, 21.5]])
    assert batch.categorical == [["pro", None, "pro"], ["web"] * 3]
    assert batch.segments == {"country": ["de"] * 3, "channel": ["web"] * 3}
    assert batch.score.tolist() == [0.5] * 3 and batch.pred_label == [None] * 3


# --- labels -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "label", "value", "label_class"),
    [
        ("churn", "yes", 1.0, "yes"),
        ("churn", "no", 0.0, "no"),
        ("churn", 1, 1.0, "1"),
        ("churn", 0.0, 0.0, "0"),
        ("churn", True, 1.0, "1"),
        ("churn", False, 0.0, "0"),
        ("bikes", 12, 12.0, ""),
        ("bikes", -0.5, -0.5, ""),
        ("topic", "sports", math.nan, "sports"),
        ("topic", 3, math.nan, "3"),
        ("topic", 2.0, math.nan, "2"),
    ],
)
def test_label_forms(model_id: str, label: Any, value: float, label_class: str) -> None:
    raw = orjson.dumps({"event_id": "e", "model_id": model_id, "ts": "2024-06-01T00:00:00Z", "label": label})
    batches, rejections = decode_labels([raw], SCHEMAS)
    assert rejections == []
    batch = batches[model_id]
    assert batch.index.tolist() == [0] and batch.event_id == ["e"] and batch.ts.tolist() == [TS]
    np.testing.assert_array_equal(batch.label, [value])
    assert batch.label_class == [label_class]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"model_id": "churn", "ts": 1, "label": "yes"}, "missing_field:event_id"),
        ({"event_id": "e", "ts": 1, "label": "yes"}, "missing_field:model_id"),
        ({"event_id": "e", "model_id": "zzz", "ts": 1, "label": "yes"}, "unknown_model"),
        ({"event_id": "e", "model_id": "churn", "label": "yes"}, "missing_field:ts"),
        ({"event_id": "e", "model_id": "churn", "ts": "x", "label": "yes"}, "bad_type:ts"),
        ({"event_id": "e", "model_id": "churn", "ts": 1}, "missing_field:label"),
        ({"event_id": "e", "model_id": "churn", "ts": 1, "label": None}, "missing_field:label"),
        ({"event_id": "e", "model_id": "churn", "ts": 1, "label": 2}, "bad_type:label"),
        ({"event_id": "e", "model_id": "churn", "ts": 1, "label": 0.5}, "bad_type:label"),
        ({"event_id": "e", "model_id": "churn", "ts": 1, "label": [1]}, "bad_type:label"),
        ({"event_id": "e", "model_id": "bikes", "ts": 1, "label": "12"}, "bad_type:label"),
        ({"event_id": "e", "model_id": "bikes", "ts": 1, "label": True}, "bad_type:label"),
        ({"event_id": "e", "model_id": "topic", "ts": 1, "label": 2.5}, "bad_type:label"),
        ({"event_id": "e", "model_id": "topic", "ts": 1, "label": True}, "bad_type:label"),
        ({"event_id": "e", "model_id": "topic", "ts": 1, "label": {}}, "bad_type:label"),
        # a binary model's string labels are its two classes; "banana" is not the negative one
        ({"event_id": "e", "model_id": "churn", "ts": 1, "label": "banana"}, "unknown_class:label"),
        ({"event_id": "e", "model_id": "churn", "ts": 1, "label": "1"}, "unknown_class:label"),
        ({"event_id": "e", "model_id": "churn", "ts": 1, "label": "Yes"}, "unknown_class:label"),
        ({"event_id": "e" * 257, "model_id": "churn", "ts": 1, "label": "yes"}, "too_long:event_id"),
    ],
)
def test_label_rejections(event: dict[str, Any], reason: str) -> None:
    raw = orjson.dumps(event)
    batches, rejections = decode_labels([raw, b"[]"], SCHEMAS)
    assert batches == {}
    assert [(r.index, r.reason, r.raw) for r in rejections] == [(0, reason, raw), (1, "not_an_object", b"[]")]
    assert reason in possible_reasons(SCHEMAS.get(event.get("model_id", ""), BINARY), "labels")


@pytest.mark.usefixtures("loader_returning_infinities")
@pytest.mark.parametrize(
    ("model_id", "label", "reason"),
    [
        ("bikes", "1e400", "non_finite:label"),
        ("bikes", "10" * 200, "non_finite:label"),
        ("churn", "1e400", "non_finite:label"),
    ],
)
def test_non_finite_labels(model_id: str, label: str, reason: str) -> None:
    raw = f'{{"event_id": "e", "model_id": "{model_id}", "ts": 1, "label": {label}}}'.encode()
    assert [r.reason for r in decode_labels([raw], SCHEMAS)[1]] == [reason]


# --- properties ---------------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)
plausible_features = st.dictionaries(
    st.sampled_from(["age", "temp", "plan", "channel", "country", "len", "extra"]),
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-1e3, 1e3) | st.sampled_from(["web", "de"]),
    max_size=7,
)
plausible_predictions = (
    st.floats(0, 1)
    | st.sampled_from(["yes", "no", "a"])
    | st.fixed_dictionaries(
        {},
        optional={
            "score": st.floats(0, 1),
            "label": st.sampled_from(["yes", "no", "a"]),
            "scores": st.dictionaries(st.sampled_from(["yes", "no", "a"]), st.floats(0, 1)),
        },
    )
)


@st.composite
def event_like(draw: st.DrawFn) -> Any:
    """A plausible prediction-and-label event with a few fields dropped or replaced by any JSON value."""
    event: dict[str, Any] = {
        "event_id": draw(st.sampled_from(["e1", "e2"])),
        "model_id": draw(st.sampled_from(["churn", "bikes", "topic", "nobody"])),
        "ts": draw(
            st.floats(0, 2e9) | st.sampled_from(["2024-06-01T00:00:00Z", "2024-06-01T00:00:00.5+02:00"])
        ),
        "features": draw(plausible_features),
        "prediction": draw(plausible_predictions),
        "label": draw(st.sampled_from(["yes", "no", "a", 0, 1, 2.5, True])),
        "model_version": draw(st.sampled_from(["v1", 2])),
        "segment": draw(
            st.dictionaries(st.sampled_from(["country", "channel", "x"]), st.sampled_from(["de", 1]))
        ),
    }
    for key in draw(st.lists(st.sampled_from(sorted(event)), max_size=2)):
        if draw(st.booleans()):
            event.pop(key, None)
        else:
            event[key] = draw(json_values)
    features = event.get("features")
    if isinstance(features, dict) and draw(st.booleans()):
        features[draw(st.sampled_from(["age", "plan", "country", "extra"]))] = draw(json_values)
    return event if draw(st.integers(0, 9)) else draw(json_values)


DECODERS: tuple[tuple[Callable[..., Any], Literal["predictions", "labels"]], ...] = (
    (decode_predictions, "predictions"),
    (decode_labels, "labels"),
)


def assert_accounted_for(
    raws: list[Any], batches: dict[str, Any], rejections: list[Any], stream: Literal["predictions", "labels"]
) -> None:
    positions = [r.index for r in rejections]
    for model_id, batch in batches.items():
        assert batch.model_id == model_id and len(batch) > 0
        assert len(batch.index) == len(batch.event_id) == len(batch.ts) == len(batch)
        positions += batch.index.tolist()
        if stream == "predictions":
            n_numeric = len(SCHEMAS[model_id].numeric_names)
            assert batch.numeric.shape == (n_numeric, len(batch))
            assert not np.isinf(batch.numeric).any() and np.isfinite(batch.ts).all()
            assert all(len(column) == len(batch) for column in batch.categorical)
    assert sorted(positions) == list(range(len(raws)))
    for rejection in rejections:
        assert REASON_PATTERN.fullmatch(rejection.reason), rejection.reason
        raw = raws[rejection.index]
        assert rejection.raw == (raw if isinstance(raw, bytes) else b"")
        if ":" in rejection.reason:  # the field part names only fixed fields or schema names
            assert any(rejection.reason in possible_reasons(s, stream) for s in SCHEMAS.values())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64) | st.none(), max_size=8))
def test_arbitrary_bytes_never_raise_and_are_all_accounted_for(raws: list[bytes | None]) -> None:
    for decode, stream in DECODERS:
        batches, rejections = decode(raws, SCHEMAS, max_bytes=48)
        assert_accounted_for(raws, batches, rejections, stream)


@settings(max_examples=300, deadline=None)
@given(st.lists(event_like(), max_size=8))
def test_arbitrary_objects_never_raise_and_are_all_accounted_for(objects: list[Any]) -> None:
    raws = [json.dumps(obj).encode() for obj in objects]
    for decode, stream in DECODERS:
        batches, rejections = decode(raws, SCHEMAS)
        assert_accounted_for(raws, batches, rejections, stream)


@settings(max_examples=200, deadline=None)
@given(st.lists(event_like(), max_size=6))
def test_objects_with_infinities_and_huge_ints_are_all_accounted_for(objects: list[Any]) -> None:
    def swap_numbers(value: Any) -> Any:
        if isinstance(value, float) and abs(value) > 1e300:
            return math.copysign(math.inf, value)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**69:
            return value * 10**400
        if isinstance(value, list):
            return [swap_numbers(v) for v in value]
        if isinstance(value, dict):
            return {k: swap_numbers(v) for k, v in value.items()}
        return value

    raws = [json.dumps(swap_numbers(obj)).encode() for obj in objects]
    original = events._loads
    events._loads = json.loads
    try:
        for decode, stream in DECODERS:
            batches, rejections = decode(raws, SCHEMAS)
            assert_accounted_for(raws, batches, rejections, stream)
    finally:
        events._loads = original


def test_possible_reasons_are_unique_and_match_the_pattern() -> None:
    for schema in SCHEMAS.values():
        for stream in ("predictions", "labels"):
            reasons = possible_reasons(schema, stream)
            assert len(set(reasons)) == len(reasons)
            assert all(REASON_PATTERN.fullmatch(reason) for reason in reasons)
    assert not REASON_PATTERN.fullmatch("bad_type:whatever")


def test_every_reason_kind_is_in_the_documented_table() -> None:
    assert events.__doc__ is not None
    for kind in events.REASON_KINDS:
        assert f"``{kind}" in events.__doc__, kind
    reasons = {
        r
        for s in SCHEMAS.values()
        for stream in ("predictions", "labels")
        for r in possible_reasons(s, stream)
    }
    assert {r.partition(":")[0] for r in reasons} == set(events.REASON_KINDS)


# --- valid Unicode only -----------------------------------------------------------------------------

LONE_SURROGATES = [r"\udc80red", r"\ud83d", r"x\uDBFF", r"\ude00\ud83d", r"\ud83d\u0041"]


@pytest.mark.parametrize("text", LONE_SURROGATES)
def test_orjson_refuses_lone_surrogates_so_only_the_lenient_path_checks(text: str) -> None:
    """The premise of the check living on the lenient path only: orjson itself refuses them."""
    for raw in (f'{{"a": "{text}"}}', f'{{"{text}": 1}}'):
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(raw.encode())
    assert orjson.loads(rb'{"a": "\ud83d\ude00"}') == {"a": "\U0001f600"}


def _with_string(where: str, text: str) -> bytes:
    """A valid event whose string at ``where`` is the JSON string body ``text`` (escapes kept raw)."""
    event = prediction_event(model_version="v1", segment={"country": "de"})
    if where == "features.key":
        event["features"]["@@"] = 1
    elif where == "features.plan":
        event["features"]["plan"] = "@@"
    elif where == "prediction.label":
        event["prediction"] = {"score": 0.5, "label": "@@"}
    elif where == "segment.country":
        event["segment"]["country"] = "@@"
    else:
        event[where] = "@@"
    return json.dumps(event).replace('"@@"', f'"{text}"').encode()


STRING_POSITIONS = ["event_id", "model_version", "features.plan", "features.key", "prediction.label"]
STRING_POSITIONS += ["segment.country", "unrelated"]


@pytest.mark.parametrize("where", STRING_POSITIONS)
@pytest.mark.parametrize("text", LONE_SURROGATES)
@pytest.mark.parametrize("nan", [False, True])
def test_lone_surrogates_are_malformed_wherever_they_are(where: str, text: str, nan: bool) -> None:
    raw = _with_string(where, text)
    if nan:  # orjson refuses NaN too: the lenient parser reads it, and must still refuse the string
        raw = raw.replace(b'"age": 30', b'"age": NaN')
    assert decode_one(raw) == "malformed_json"
    label = f'{{"event_id": "e", "model_id": "topic", "ts": 1, "label": "{text}"}}'.encode()
    assert [r.reason for r in decode_labels([label], SCHEMAS)[1]] == ["malformed_json"]


@pytest.mark.parametrize(
    "version",
    ["", " 1", "1 ", "a" * 65, r"v\u0000", r"\ud83d\ude00", "-1", r"v1\n", "../x", "é"],
)
@pytest.mark.parametrize("fast", [True, False])
def test_a_model_version_must_be_a_short_name(version: str, fast: bool) -> None:
    """A version becomes a monitor, a Prometheus label and a registry key: free text is refused, on
    the typed fast path (a batch of usual events) and on the checked path (a lone odd event) alike."""
    good = _with_string("model_version", "2025.01-rc1+b7")
    raw = _with_string("model_version", version)
    batch = [good] * 5 + [raw] + [good] * 5 if fast else [raw]
    batches, rejections = decode_predictions(batch, SCHEMAS)
    assert [(r.index, r.reason) for r in rejections] == [(5 if fast else 0, "bad_type:model_version")]
    if fast:
        assert batches["churn"].model_version == ["2025.01-rc1+b7"] * 10


@pytest.mark.parametrize(
    "version", ["7", "2025.01", "v1.2.3+build.5", "git:ab12cd", "a" * 64, "team/model@3"]
)
def test_usual_versions_are_accepted(version: str) -> None:
    batches, rejections = decode_predictions([_with_string("model_version", version)], SCHEMAS)
    assert not rejections and batches["churn"].model_version == [version]


@pytest.mark.parametrize("where", ["event_id", "features.plan", "segment.country"])
def test_surrogate_pairs_and_other_escapes_are_accepted(where: str) -> None:
    text = r"\ud83d\ude00 \u00e9\"\\\/\b\f\n\r\t中"
    for raw in (_with_string(where, text), _with_string(where, text).replace(b'"age": 30', b'"age": 1e400')):
        batches, rejections = decode_predictions([raw], SCHEMAS)
        expected = '\U0001f600 é"\\/\b\f\n\r\t中'
        if rejections:  # the 1e400 variant: parsed leniently, judged on its fields
            assert [r.reason for r in rejections] == ["non_finite:features.age"]
            continue
        batch = batches["churn"]
        found = {
            "event_id": batch.event_id[0],
            "model_version": batch.model_version[0],
            "features.plan": batch.categorical[0][0],
            "segment.country": batch.segments["country"][0],
        }
        assert found[where] == expected


# --- schema-true values -----------------------------------------------------------------------------

NEWS = ModelSchema(
    "news", "multiclass", (FeatureSpec("len", "numeric"),), classes=("sports", "politics", "3")
)
WITH_NEWS = {**SCHEMAS, "news": NEWS}


@pytest.mark.parametrize(
    ("model_id", "prediction", "reason"),
    [
        ("churn", 1.5, "out_of_range:prediction"),
        ("churn", -0.01, "out_of_range:prediction"),
        ("churn", 2, "out_of_range:prediction"),
        ("churn", {"score": 1.0000001}, "out_of_range:prediction.score"),
        ("churn", {"score": -3}, "out_of_range:prediction.score"),
        ("churn", {"score": 0.5, "label": "no"}, None),
        ("churn", {"scores": {"no": -0.2, "yes": 1.2}}, "out_of_range:prediction.scores"),
        ("churn", {"scores": {"yes": 1.2}}, "out_of_range:prediction.scores"),
        ("churn", 0.0, None),
        ("churn", 1.0, None),
        ("churn", 1, None),
        ("churn", False, None),
        ("topic", {"scores": {"a": 0.5, "b": 1.5}}, "out_of_range:prediction.scores"),
        ("topic", {"scores": {"a": 0.5, "b": 0.5}}, None),
        ("topic", 7.5, None),  # a multiclass number is no probability
        ("bikes", 1e9, None),
        ("bikes", -5, None),
        ("bikes", {"score": 3, "scores": {"x": 7}}, None),
    ],
)
def test_probabilities_must_lie_in_the_unit_interval(
    model_id: str, prediction: Any, reason: str | None
) -> None:
    schema = SCHEMAS[model_id]
    for extra in ({}, {"model_version": 7}):  # the fast and the full checks
        result = decode_one(prediction_event(model_id=model_id, prediction=prediction, **extra))
        if reason is None:
            assert len(result) == 1
        else:
            assert result == reason
            assert reason in possible_reasons(schema, "predictions")


@pytest.mark.parametrize(
    ("model_id", "prediction", "reason", "pred_label"),
    [
        ("churn", "yes", None, "yes"),
        ("churn", "maybe", "unknown_class:prediction", None),
        ("churn", {"label": "banana"}, "unknown_class:prediction.label", None),
        ("churn", {"label": "1"}, "unknown_class:prediction.label", None),
        ("churn", {"label": 2}, "unknown_class:prediction.label", None),
        ("churn", {"label": True}, None, "yes"),
        ("churn", {"label": 0}, None, "no"),
        ("churn", {"scores": {"yes": 0.6, "maybe": 0.4}}, "unknown_class:prediction.scores", None),
        ("news", "sports", None, "sports"),
        ("news", "weather", "unknown_class:prediction", None),
        ("news", {"label": 3}, None, "3"),
        ("news", {"label": 4}, "unknown_class:prediction.label", None),
        ("news", {"scores": {"sports": 0.1, "politics": 0.9}}, None, "politics"),
        ("news", {"scores": {"sports": 0.1, "weather": 0.9}}, "unknown_class:prediction.scores", None),
        ("topic", {"label": "anything"}, None, "anything"),  # no classes configured: not checked
        ("bikes", {"score": 1, "label": "ignored"}, None, None),
    ],
)
def test_predicted_classes_must_be_the_models(
    model_id: str, prediction: Any, reason: str | None, pred_label: str | None
) -> None:
    event = prediction_event(model_id=model_id, prediction=prediction, features={"temp": 1, "len": 1})
    result = decode_one(event, WITH_NEWS)
    if reason is None:
        assert result.pred_label == [pred_label]
    else:
        assert result == reason
        assert reason in possible_reasons(WITH_NEWS[model_id], "predictions")


@pytest.mark.parametrize(
    ("model_id", "label", "reason"),
    [
        ("churn", "banana", "unknown_class:label"),
        ("churn", "no", None),
        ("churn", 0, None),
        ("churn", True, None),
        ("news", "politics", None),
        ("news", 3, None),
        ("news", 3.0, None),
        ("news", "weather", "unknown_class:label"),
        ("news", 4, "unknown_class:label"),
        ("topic", "weather", None),
    ],
)
def test_labels_must_be_the_models_classes(model_id: str, label: Any, reason: str | None) -> None:
    raw = orjson.dumps({"event_id": "e", "model_id": model_id, "ts": 1, "label": label})
    batches, rejections = decode_labels([raw], WITH_NEWS)
    if reason is None:
        assert rejections == [] and len(batches[model_id]) == 1
    else:
        assert [r.reason for r in rejections] == [reason]
        assert reason in possible_reasons(WITH_NEWS[model_id], "labels")
    assert ("unknown_class:label" in possible_reasons(WITH_NEWS[model_id], "labels")) == (model_id != "topic")


def test_binary_default_classes_are_zero_and_one() -> None:
    schema = ModelSchema("b", "binary", ())
    raws = [
        orjson.dumps({"event_id": "e", "model_id": "b", "ts": 1, "label": v}) for v in ("1", "0", "2", "yes")
    ]
    batches, rejections = decode_labels(raws, {"b": schema})
    assert batches["b"].label.tolist() == [1.0, 0.0]
    assert [(r.index, r.reason) for r in rejections] == [
        (2, "unknown_class:label"),
        (3, "unknown_class:label"),
    ]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"task": "binary", "positive_class": "yes"}, "positive_class 'yes' is not one of its classes"),
        ({"task": "binary", "classes": ("a", "b", "c")}, "exactly two classes"),
        ({"task": "binary", "classes": ("no", "yes")}, "positive_class '1' is not one of"),
        ({"task": "multiclass", "classes": ("a",)}, "at least two classes"),
        ({"task": "multiclass", "classes": ("a", "a")}, "repeat a class"),
        ({"task": "regression", "classes": ("a", "b")}, "has no classes"),
    ],
)
def test_schema_classes_are_validated(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ModelSchema("m", features=(), **kwargs)


def test_event_ids_are_bounded() -> None:
    def event(event_id: str) -> bytes:
        return orjson.dumps(prediction_event(event_id=event_id, prediction={"score": 0.5}))

    raws = [event("a" * 256), event("a" * 257), event("é" * 256), event("😀" * 257)]
    batches, rejections = decode_predictions(raws, SCHEMAS)
    assert batches["churn"].index.tolist() == [0, 2]  # characters count, not bytes
    assert [(r.index, r.reason) for r in rejections] == [(1, "too_long:event_id"), (3, "too_long:event_id")]
    batches, rejections = decode_predictions(raws[:1], SCHEMAS, max_event_id_length=8)
    assert batches == {} and [r.reason for r in rejections] == ["too_long:event_id"]
    label = orjson.dumps({"event_id": "abcdefghi", "model_id": "churn", "ts": 1, "label": "yes"})
    assert [r.reason for r in decode_labels([label], SCHEMAS, max_event_id_length=8)[1]] == [
        "too_long:event_id"
    ]
    assert decode_labels([label], SCHEMAS, max_event_id_length=9)[1] == []


# --- duplicate keys -----------------------------------------------------------------------------------

GOOD = orjson.dumps(prediction_event())


@pytest.mark.parametrize(
    "raw",
    [
        GOOD.replace(b'"event_id":"e1"', b'"event_id":"e1","event_id":"e2"'),
        GOOD.replace(b'"ts"', b'"model_id":"bikes","ts"'),
        GOOD.replace(b'"age":30', b'"age":30,"age":"x"'),
        GOOD.replace(b'"age":30', b'"\\u0061ge":31,"age":30'),  # the same key, spelled differently
        GOOD.replace(b'"age":30', b'"age" :30,"age":31'),  # whitespace before the colon
        GOOD.replace(b'"age":30', b'"age"\n:\n30,\t"age"\t:31'),
        GOOD.replace(b'"age":30', b'"junk":[1,{"a":1,"b":{"c":[{"d":1,"d":2}]}}],"age":30'),
        GOOD.replace(b'"score":0.75', b'"score":0.75,"score":0.75'),  # even with equal values
        GOOD.replace(b'"age":30', b'"x":"a\\":b","y":"::","age":30,"age":30'),  # colons in strings
        GOOD.replace(b'"age":30', b'"age":NaN,"age":30'),  # on the lenient path too
        GOOD.replace(b'"ts":1717200000.0', b'"ts":"2024-06-01T00:00:00Z","ts":"2024-06-01T00:00:00Z"'),
        # an escaped colon in an RFC 3339 ts, which the cheap count must not take for a literal one
        GOOD.replace(b'"ts":1717200000.0', b'"ts":"2024-06-01T00\\u003a00:00Z","event_id":"x"'),
    ],
)
def test_duplicate_keys_are_rejected(raw: bytes) -> None:
    assert decode_one(raw) == "duplicate_key"
    batches, rejections = decode_predictions([GOOD, raw, GOOD], SCHEMAS)  # around fast-path events
    assert batches["churn"].index.tolist() == [0, 2]
    assert [(r.index, r.reason) for r in rejections] == [(1, "duplicate_key")]
    label = raw.replace(b'"prediction"', b'"label":"yes","prediction"')
    assert [r.reason for r in decode_labels([label], SCHEMAS)[1]] == ["duplicate_key"]


@pytest.mark.parametrize(
    "raw",
    [
        GOOD.replace(b'"age":30', b'"junk":[{"a":1},{"a":2}],"nested":{"age":1},"age":30'),
        GOOD.replace(b'"age":30', b'"x":"a\\":b","y":" : ","z":"\\"age\\":1","age":30'),
        GOOD.replace(b'"age":30', b'"age" : 30 , "Age" : 1, "\\u00e4ge": 2, "a\\u0067e2" :3'),
        GOOD.replace(b'"ts":1717200000.0', b'"ts":"2024-06-01T00:00:00+00:00"'),
    ],
)
def test_repeated_text_that_is_no_repeated_key_is_accepted(raw: bytes) -> None:
    assert len(decode_one(raw)) == 1


def _json_text(draw: st.DrawFn, depth: int) -> str:
    """Valid JSON text, drawn to make the duplicate-key counts lie: few key names, each in several
    spellings, whitespace around colons, colons and quotes inside strings."""
    space = st.sampled_from(["", " ", "\n", "\t", "\r", "  "])
    kind = draw(st.sampled_from(["object", "object", "array", "scalar"] if depth < 4 else ["scalar"]))
    if kind == "scalar":
        return draw(st.sampled_from(["1", '"x"', '":"', '"a\\":"', '" :"', "true", "null", '"\\u0061"']))
    if kind == "array":
        items = [_json_text(draw, depth + 1) for _ in range(draw(st.integers(0, 3)))]
        return "[" + ",".join(items) + "]"
    members = []
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(['"a"', '"\\u0061"', '"b"', '"\\"a"', '"a:"', '"\\\\"', '"\\/"', '"/"']))
        members.append(f"{draw(space)}{key}{draw(space)}:{draw(space)}{_json_text(draw, depth + 1)}")
    return "{" + ",".join(members) + "}"


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_cheap_duplicate_check_agrees_with_an_exact_parse(data: st.DataObject) -> None:
    text = _json_text(data.draw, 0)
    seen_duplicate = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal seen_duplicate
        seen_duplicate |= len({k for k, _ in items}) != len(items)
        return dict(items)

    json.loads(text, object_pairs_hook=pairs)
    raw = text.encode()
    assert events._has_duplicate_keys(raw, orjson.loads(raw)) is seen_duplicate
    assert events._duplicate_key_scan(raw) is seen_duplicate


# --- hostile strings, end to end: whatever is accepted can be stored ----------------------------------

_ESCAPES = ['\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"]


def _u(code: int, upper: bool = False) -> str:
    """The ``\\uXXXX`` escape of a UTF-16 code unit."""
    return f"\\u{code:04X}" if upper else f"\\u{code:04x}"


def _pair(code: int, upper: bool) -> str:
    """The surrogate-pair escape of a code point beyond the BMP."""
    high, low = divmod(code - 0x10000, 0x400)
    return _u(0xD800 + high, upper) + _u(0xDC00 + low, upper)


_string_pieces = st.one_of(
    st.text(st.characters(codec="utf-8", min_codepoint=0x20, exclude_characters='"\\'), max_size=3),
    st.sampled_from(_ESCAPES),
    st.builds(_u, st.integers(0, 0xFFFF).filter(lambda c: not 0xD800 <= c <= 0xDFFF), st.booleans()),
    st.builds(_pair, st.integers(0x10000, 0x10FFFF), st.booleans()),
    st.builds(_u, st.integers(0xD800, 0xDFFF), st.booleans()),  # a lone high or low surrogate
    st.builds(_pair, st.integers(0x10000, 0x10FFFF), st.booleans()).map(lambda p: p[6:] + p[:6]),  # swapped
    st.sampled_from(["\x01", "\x1f"]),  # raw control characters: not JSON
)
hostile_text = st.lists(_string_pieces, max_size=4).map(lambda pieces: '"' + "".join(pieces) + '"')


@st.composite
def spelled(draw: st.DrawFn, name: str) -> str:
    """``name`` as a JSON string whose characters are randomly written as ``\\uXXXX`` escapes."""
    return '"' + "".join(_u(ord(c), draw(st.booleans())) if draw(st.booleans()) else c for c in name) + '"'


def name_or_hostile(*names: str) -> st.SearchStrategy[str]:
    return st.sampled_from(names).flatmap(spelled) | hostile_text


def json_object(draw: st.DrawFn, members: list[tuple[str, str]]) -> str:
    colon = draw(st.sampled_from([":", " : ", "\n:", ":\t"]))
    return "{" + ",".join(f"{key}{colon}{value}" for key, value in members) + "}"


@st.composite
def hostile_prediction(draw: st.DrawFn) -> bytes:
    model_id = draw(st.sampled_from(["churn", "topic", "bikes"]))
    features = [
        (draw(name_or_hostile("age", "len", "temp")), draw(st.sampled_from(["1", "2.5", "null", "-3"]))),
        (draw(name_or_hostile("plan", "channel", "country")), draw(hostile_text | spelled("pro"))),
        (draw(name_or_hostile("plan", "channel")), draw(hostile_text)),
    ]
    label = draw(name_or_hostile("yes", "no", "a", "b"))
    shape = draw(st.sampled_from(["number", "label", "object", "scores"]))
    if shape == "number":
        prediction = draw(st.sampled_from(["0.25", "12"]))
    elif shape == "label":
        prediction = label
    elif shape == "object":
        prediction = json_object(draw, [('"score"', "0.5"), ('"label"', label)])
    else:
        prediction = json_object(draw, [('"scores"', json_object(draw, [(label, "0.75")]))])
    members = [
        ('"event_id"', draw(name_or_hostile("e1", "e2", "e3"))),
        ('"model_id"', draw(spelled(model_id))),
        ('"ts"', draw(st.sampled_from(["1717200000", '"2024-06-01T00:00:00Z"']))),
        ('"features"', json_object(draw, features)),
        ('"prediction"', prediction),
        ('"model_version"', draw(hostile_text)),
        ('"segment"', json_object(draw, [(draw(name_or_hostile("country", "channel")), draw(hostile_text))])),
    ]
    return json_object(draw, draw(st.permutations(members))).encode()


@st.composite
def hostile_label(draw: st.DrawFn) -> bytes:
    members = [
        ('"event_id"', draw(name_or_hostile("e1", "e2", "e3"))),
        ('"model_id"', draw(st.sampled_from(["churn", "topic", "bikes"]).flatmap(spelled))),
        ('"ts"', "1717200600"),
        ('"label"', draw(name_or_hostile("yes", "no", "a", "b") | st.sampled_from(["1", "0", "2.5"]))),
    ]
    return json_object(draw, members).encode()


def small_engine() -> Any:
    from stream_monitor.core.engine import MonitoringEngine
    from stream_monitor.core.settings import ModelSettings, WindowSettings

    tiny = ModelSettings(window=WindowSettings(size=3), warmup_events=2, performance_window=4)
    return MonitoringEngine(SCHEMAS, {m: tiny for m in SCHEMAS})


@settings(max_examples=60, deadline=None)
@given(st.lists(hostile_prediction(), min_size=1, max_size=8), st.lists(hostile_label(), max_size=6))
def test_whatever_is_accepted_survives_a_snapshot(predictions: list[bytes], labels: list[bytes]) -> None:
    """Hostile strings in every position: each input is accepted or has a reason, and what is accepted
    goes through the engine into a snapshot that restores to the same bytes."""
    for raws, (decode, stream) in ((predictions, DECODERS[0]), (labels, DECODERS[1])):
        batches, rejections = decode(raws, SCHEMAS)
        assert_accounted_for(raws, batches, rejections, stream)
        for batch in batches.values():
            strings = [*batch.event_id, *(getattr(batch, "label_class", None) or [])]
            if stream == "predictions":
                strings += [
                    *batch.model_version,
                    *batch.pred_label,
                    *(v for c in batch.categorical for v in c),
                ]
                strings += [v for column in batch.segments.values() for v in column]
            for text in strings:
                if text is not None:
                    text.encode("utf-8")  # valid Unicode: no lone surrogate

    engine = small_engine()
    engine.process_predictions(predictions, now=0.0)
    engine.process_labels(labels, now=1.0)
    first = engine.snapshot()
    engine.flush(now=2.0)
    flushed = engine.snapshot()
    for snapshot in (first, flushed):
        restored = small_engine()
        restored.restore(snapshot)
        assert restored.snapshot() == snapshot
    # And as a checkpoint writes it: an incremental record whose every array is a blob record.
    with mock.patch.object(state_mod, "BLOB_MIN_BYTES", 1):
        record, blobs = state_mod.StateCapture.of(
            "g", 0, {}, {}, engine.to_state(), 0.0, freeze=True
        ).incremental()
    topic = {
        state_mod.blob_key(b"g/0", d): b"".join(state_mod.blob_chunks(values, d))
        for d, values in blobs.items()
    }
    assert len(topic) == len(record.blobs) > 0
    back = state_mod.StateRecord.decode(record.encode(), state_mod.blob_reader(topic, b"g/0", lambda k, v: v))
    assert back.snapshot == flushed and back.digest == state_mod.digest(flushed)


def _row(batch: Any, i: int) -> tuple[Any, ...]:
    """Everything a prediction batch holds about its event ``i`` (NaN as None, so rows compare)."""

    def plain(value: float) -> float | None:
        return None if math.isnan(value) else value

    return (
        batch.event_id[i],
        batch.ts[i],
        batch.model_version[i],
        [plain(v) for v in batch.numeric[:, i].tolist()],
        [column[i] for column in batch.categorical],
        plain(batch.score[i]),
        batch.pred_label[i],
        {key: column[i] for key, column in batch.segments.items()},
    )


@settings(max_examples=50, deadline=None)
@given(st.lists(hostile_prediction(), min_size=1, max_size=6))
def test_the_fast_path_decides_hostile_events_as_the_full_checks_do(raws: list[bytes]) -> None:
    """An event of a model not yet seen in the batch takes the full checks; after one, the fast path."""
    warm = orjson.dumps(prediction_event(event_id="warm", features={}, prediction=0.5))
    warm_up = [warm.replace(b'"churn"', f'"{model_id}"'.encode()) for model_id in ("churn", "topic", "bikes")]
    for raw in raws:
        alone_batches, alone_rejections = decode_predictions([raw], SCHEMAS)
        batches, rejections = decode_predictions([*warm_up, raw], SCHEMAS)
        assert [r.reason for r in alone_rejections] == [r.reason for r in rejections]
        for model_id, batch in alone_batches.items():
            assert batches[model_id].index.tolist()[-1] == len(warm_up)
            assert _row(batches[model_id], -1) == _row(batch, 0)


# --- the typed fast path (msgspec) decides as the orjson path does ----------------------------------

PLAIN = ModelSchema(
    "plain",
    "binary",
    (FeatureSpec("x", "numeric"), FeatureSpec("y", "numeric"), FeatureSpec("c", "categorical")),
)
TYPED_SCHEMAS = {**SCHEMAS, PLAIN.model_id: PLAIN}

_NUMBERS = [
    "0", "1", "-0", "-0.0", "0.5", "21.5", "1e5", "1E-5", "2.5e-3", "-7", "1e400", "-1e400", "1e-400",
    "1" + "0" * 30, "1" + "0" * 400, "9007199254740993", "18446744073709551615", "18446744073709551617",
    "-9223372036854775809", "0.1000000000000000055511151231257827", "4.9406564584124654e-324",
    "NaN", "Infinity", "true", "false", "null", '"3"', '"x"', "[]", "{}", "01", "1.", ".5", "+1",
]  # fmt: skip
number_text = (
    st.sampled_from(_NUMBERS)
    | st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | st.integers(-(2**70), 2**70).map(str)
)
_STRINGS = [
    '"pro"',
    '"web"',
    '" Pro "',
    '"True"',
    '"1.0"',
    '""',
    '"a:b"',
    '"\\u0061"',
    '"\\n"',
    "null",
    "3",
    "true",
]
string_text = st.sampled_from(_STRINGS) | hostile_text


_EVENT_IDS = ['"e:2"', '""', '"' + "x" * 300 + '"', "7", '"\\u0065"', '"e\\"1"', "null"]
_TIMESTAMPS = ['"2024-06-01T00:00:00Z"', "1e12", "-1e20", "null", "253402300800", "-62135596800", "true"]
_SEGMENTS = ["null", "{}", '{"country": "de"}', '{"country": 1}', "[]", '{"channel": null}']
_SEGMENTS += ['{"channel": "app", "country": " DE "}', '{"country": "de", "country": "fr"}']


@st.composite
def typed_candidate(draw: st.DrawFn) -> bytes:
    """An event close to the typed path's shape, with a few of its parts changed or broken."""
    model_id = draw(st.sampled_from([*TYPED_SCHEMAS, "nope"]))
    schema = TYPED_SCHEMAS.get(model_id, PLAIN)
    often = st.sampled_from([True] * 11 + [False])  # mostly the usual form, sometimes not
    features = []
    for spec in schema.features:
        if draw(often):
            if spec.kind == "numeric":
                value = draw(st.sampled_from(_NUMBERS[:20]) if draw(often) else number_text)
            else:
                value = draw(st.sampled_from(_STRINGS[:8]) if draw(often) else string_text)
            features.append((f'"{spec.name}"', value))
    if not draw(often):
        features.append((draw(st.sampled_from(['"extra"', '"x"', '"c"'])), draw(number_text)))
    score = draw(st.sampled_from(["0.25", "1", "0", "0.5e-3"]) if draw(often) else number_text)
    prediction = draw(st.sampled_from([score, f'{{"score": {score}}}']))
    if not draw(often):
        prediction = draw(st.sampled_from(["{}", '"yes"', "null", f'{{"score": {score}, "label": "yes"}}']))
    members = [
        ('"event_id"', '"e1"' if draw(often) else draw(st.sampled_from(_EVENT_IDS))),
        ('"model_id"', f'"{model_id}"'),
        ('"ts"', draw(st.sampled_from(["1717200000", "1717200000.5"] if draw(often) else _TIMESTAMPS))),
        ('"features"', json_object(draw, features)),
        ('"prediction"', prediction),
    ]
    if not draw(often):
        members[2] = ('"ts"', draw(number_text))
    if draw(st.booleans()):
        members.append(('"model_version"', draw(st.sampled_from(['"v1"', "null", "3", "true", '"a:b"']))))
    if draw(st.booleans()):
        members.append(('"segment"', draw(st.sampled_from(_SEGMENTS))))
    if not draw(often):
        extra = [('"event_id"', '"e9"'), ('"other"', "[[1]]"), ('"model_id"', '"bikes"')]
        members.append(draw(st.sampled_from(extra)))
    text = json_object(draw, draw(st.permutations(members)))
    before = draw(st.sampled_from(["", "", " ", "\n"]))
    after = draw(st.sampled_from(["", "", " ", "\t", "x"]))
    return (before + text + after).encode()


def _decode_without_typed_path(raws: list[Any], schemas: dict[str, ModelSchema]) -> Any:
    original = events._fast_decoder
    events._fast_decoder = lambda *args: events._FastDecoder(lambda raw: None, {})  # type: ignore[assignment]
    try:
        return decode_predictions(raws, schemas)
    finally:
        events._fast_decoder = original  # type: ignore[assignment]


def assert_same_decoding(raws: list[Any], schemas: dict[str, ModelSchema] = TYPED_SCHEMAS) -> None:
    batches, rejections = decode_predictions(raws, schemas)
    expected_batches, expected_rejections = _decode_without_typed_path(raws, schemas)
    assert [(r.index, r.reason, r.raw) for r in rejections] == [
        (r.index, r.reason, r.raw) for r in expected_rejections
    ]
    assert batches.keys() == expected_batches.keys()
    for model_id, batch in batches.items():
        expected = expected_batches[model_id]
        assert batch.model_id == expected.model_id
        assert batch.index.tolist() == expected.index.tolist()
        assert [_row(batch, i) for i in range(len(batch))] == [_row(expected, i) for i in range(len(batch))]
        assert np.array_equal(batch.numeric, expected.numeric, equal_nan=True)
        assert batch.numeric.dtype == expected.numeric.dtype and batch.numeric.flags.c_contiguous
        assert batch.unknown_features == expected.unknown_features


@settings(max_examples=400, deadline=None)
@given(st.lists(typed_candidate(), min_size=1, max_size=10))
def test_the_typed_path_decides_as_the_orjson_path(raws: list[bytes]) -> None:
    assert_same_decoding(raws)


@settings(max_examples=100, deadline=None)
@given(st.lists(typed_candidate() | hostile_prediction() | st.binary(max_size=40) | st.none(), max_size=12))
def test_the_typed_path_decides_mixed_batches_as_the_orjson_path(raws: list[Any]) -> None:
    assert_same_decoding(raws)


def _plain_event(i: int, **overrides: Any) -> bytes:
    event: dict[str, Any] = {
        "event_id": f"e{i}",
        "model_id": "plain",
        "ts": TS + i,
        "features": {"x": i, "y": 0.5 * i, "c": "v"},
        "prediction": {"score": 0.5},
    }
    event.update(overrides)
    return orjson.dumps(event)


def test_the_typed_path_takes_the_usual_event_and_keeps_input_order() -> None:
    raws = [_plain_event(i) for i in range(6)]
    raws[2] = _plain_event(2, event_id="e:2")  # more colons than keys: every check, in its place
    raws[4] = raws[4].replace(b'"c":"v"', b'"c":"v","c":"w"')  # a repeated key
    raws.insert(3, b"{oops")  # fails the typed decode: the orjson path, then the typed one again
    batches, rejections = decode_predictions(raws, TYPED_SCHEMAS)
    assert [(r.index, r.reason) for r in rejections] == [(3, "malformed_json"), (5, "duplicate_key")]
    batch = batches["plain"]
    assert batch.index.tolist() == [0, 1, 2, 4, 6]
    assert batch.event_id == ["e0", "e1", "e:2", "e3", "e5"]
    assert batch.numeric.tolist() == [[0.0, 1.0, 2.0, 3.0, 5.0], [0.0, 0.5, 1.0, 1.5, 2.5]]
    assert_same_decoding(raws)


def test_a_batch_of_other_shapes_leaves_the_typed_path() -> None:
    """String timestamps fail the typed decode: after a few, the batch goes the orjson way only."""
    raws = [_plain_event(i, ts="2024-06-01T00:00:00Z") for i in range(40)] + [_plain_event(40)]
    calls = 0
    original = events._fast_decoder

    def counting(*args: Any) -> Any:
        decoder = original(*args)

        def decode(raw: bytes) -> Any:
            nonlocal calls
            calls += 1
            return decoder.decode(raw)

        return events._FastDecoder(decode, decoder.models)

    events._fast_decoder = counting  # type: ignore[assignment]
    try:
        batches, rejections = decode_predictions(raws, TYPED_SCHEMAS)
    finally:
        events._fast_decoder = original  # type: ignore[assignment]
    assert not rejections and len(batches["plain"]) == 41
    assert calls <= events._PredictionDecoding.GIVE_UP_RATIO
    assert_same_decoding(raws)


def test_the_typed_path_segments_come_from_the_segment_or_the_features() -> None:
    base = prediction_event(prediction={"score": 0.75})
    raws = [
        orjson.dumps({**base, "segment": {"country": " DE "}}),
        orjson.dumps({**base, "event_id": "e2", "segment": None}),
        orjson.dumps({**base, "event_id": "e3"}),
        json.dumps({**base, "event_id": "e4", "features": {**base["features"], "age": 2**70}}).encode(),
        orjson.dumps({**base, "event_id": "e5", "segment": {"channel": None}}),
    ]
    batches, rejections = decode_predictions(raws, TYPED_SCHEMAS)
    assert not rejections
    assert batches["churn"].segments == {
        "country": ["DE", None, None, None, None],
        "channel": ["web", "web", "web", "web", None],
    }
    assert batches["churn"].numeric[0].tolist() == [30.0, 30.0, 30.0, 2.0**70, 30.0]
    assert_same_decoding(raws)
