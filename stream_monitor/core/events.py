"""Decode and validate a batch of raw Kafka message values into columnar, per-model arrays.

This is the hot path. An event of the usual shape is decoded and type-checked by msgspec straight
into a Struct made for its model (a C loop over the batch); any other input goes through
``orjson.loads`` and the checks below, which give every rejection reason. The schema's feature values
become feature-major numpy arrays once per batch. Every input either lands in exactly
one model's batch (its position in ``index``) or in exactly one :class:`Rejection` whose ``reason``
comes from a fixed vocabulary, so it can be a bounded Prometheus label and a dead-letter header.

Reasons (see :data:`REASON_KINDS` and :func:`possible_reasons`):

======================  =====================================================================
``empty``               ``None`` or zero-length value
``too_large``           more than ``max_bytes`` bytes (checked before parsing)
``too_deep``            JSON nesting deeper than :data:`MAX_DEPTH` (checked before parsing:
                        some orjson versions have no depth limit and overflow the C stack)
``malformed_json``      not JSON: syntax errors, truncation, invalid UTF-8, a string holding a
                        lone UTF-16 surrogate (``"\\udc80"``: not Unicode, it could not be stored)
``duplicate_key``       an object repeats a key (compared unescaped): parsers disagree on which
                        value counts, so the event has no single meaning
``not_an_object``       valid JSON whose top level is not an object
``missing_field:<f>``   a required field is absent or ``null``
``bad_type:<f>``        a field has the wrong type or an unusable value (e.g. ts out of range)
``non_finite:<f>``      ``NaN``/``Infinity`` literals, numbers beyond a float64 (``1e400``), or an
                        integer too big for a float64
``too_long:event_id``   an ``event_id`` longer than ``max_event_id_length`` characters
``out_of_range:<f>``    a probability outside [0, 1]: a binary model's score (``prediction`` as a
                        number, ``prediction.score``) or a classifier's ``prediction.scores`` value
``unknown_class:<f>``   a class that is not one of the schema's ``label_classes`` (``label``,
                        ``prediction`` as a string, ``prediction.label``, a ``prediction.scores``
                        key): a binary model has two; a multiclass one is checked when it lists them
``unknown_model``       ``model_id`` is not configured
======================  =====================================================================

``<f>`` only ever names a fixed field (``ts``, ``prediction.score``, ...) or a name from the schema
(``features.<feature>``, ``segment.<key>``), never a key taken from the input. A bad value under a
feature name the schema does not know is not a rejection; such names are only counted in
``PredictionBatch.unknown_features``.

When an event has several problems it is rejected for the first one found, in this order: size,
depth, JSON, duplicate keys, object, ``event_id``, ``model_id``, model known, ``ts``, ``features``,
numeric feature types (schema order), categorical features, ``prediction`` (its ``score``, then
``label``, then ``scores`` entry by entry: type, finite, range, class), ``model_version``,
``segment``; infinite numeric feature values are found per batch with numpy, so they come last.

Inputs may be ``bytes``, ``bytearray``, ``memoryview`` or ``None`` (and ``str``, taken as UTF-8); any
other object is rejected as ``malformed_json`` with ``raw=b""``. An unexpected internal error on one event
rejects that event as ``malformed_json`` rather than raising: the consumer must keep going.

Conversions: a required field that is ``null`` counts as missing. Numeric features take int, float
or bool (1/0); ``null`` or absent is missing (NaN). Categorical features and segment values take str,
bool or a finite number, each in its one spelling (:func:`~stream_monitor.core.categories.normalize_category`,
shared with training files: ``true``, ``"True"`` → ``"true"``; ``1``, ``1.0``, ``"1.0"`` → ``"1"``;
whitespace stripped); ``null``, absent or empty is missing (``None``). A binary model's labels and
``prediction.label`` may also be ``true``/``false``/``1``/``0``: the positive and the negative class.

Every string of an accepted event is valid Unicode, so whatever is accepted can be serialised into
the state and restored.

>>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
>>> features = (FeatureSpec("age", "numeric"), FeatureSpec("plan", "categorical"))
>>> schema = ModelSchema("churn", "binary", features)
>>> raws = [
...     b'{"event_id": "a", "model_id": "churn", "ts": 10, "features": {"age": 31, "plan": "pro"},'
...     b' "prediction": {"score": 0.8, "label": "1"}}',
...     b'{"event_id": "b", "model_id": "churn", "ts": 11, "features": {"age": "old"}, "prediction": 0.1}',
...     b"{oops",
... ]
>>> batches, rejections = decode_predictions(raws, {"churn": schema})
>>> batch = batches["churn"]
>>> batch.index.tolist(), batch.numeric.tolist(), batch.categorical, batch.score.tolist()
([0], [[31.0]], [['pro']], [0.8])
>>> [(r.index, r.reason) for r in rejections]
[(1, 'bad_type:features.age'), (2, 'malformed_json')]
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import attrgetter, is_not, itemgetter
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import orjson

from stream_monitor.core.categories import NotACategory, normalize_category
from stream_monitor.core.schema import ModelSchema

__all__ = [
    "MAX_DEPTH",
    "MAX_EVENT_ID_LENGTH",
    "REASON_KINDS",
    "REASON_PATTERN",
    "LabelBatch",
    "PredictionBatch",
    "RawValue",
    "Rejection",
    "decode_labels",
    "decode_predictions",
    "parse_ts",
    "possible_reasons",
]

RawValue = bytes | bytearray | memoryview | None

#: Every reason starts with one of these; those from ``missing_field`` on take ``:<field>``.
REASON_KINDS: tuple[str, ...] = (
    "empty",
    "too_large",
    "too_deep",
    "malformed_json",
    "duplicate_key",
    "not_an_object",
    "unknown_model",
    "missing_field",
    "bad_type",
    "non_finite",
    "too_long",
    "out_of_range",
    "unknown_class",
)

#: A pattern every ``Rejection.reason`` matches (the field part is checked by :func:`possible_reasons`).
REASON_PATTERN = re.compile(
    r"empty|too_large|too_deep|malformed_json|duplicate_key|not_an_object|unknown_model"
    r"|(?:missing_field|bad_type|non_finite):(?:event_id|model_id|ts|features|prediction|prediction\.score"
    r"|prediction\.label|prediction\.scores|model_version|segment|label|features\..+|segment\..+)"
    r"|too_long:event_id"
    r"|out_of_range:prediction(?:\.score|\.scores)?"
    r"|unknown_class:(?:label|prediction|prediction\.label|prediction\.scores)"
)

#: Deeper JSON is rejected unparsed; orjson's own limit (where it has one) is the same.
MAX_DEPTH = 1024

#: Default bound on ``event_id`` (characters; configured as ``max_event_id_length``). Every pending
#: prediction keeps its id in the label buffer (millions of entries), so an unbounded id would be
#: unbounded memory; 256 holds any UUID or ULID (36/26), a ``<topic>-<partition>-<offset>`` id or a
#: hex digest of a composite key with room to spare.
MAX_EVENT_ID_LENGTH = 256
#: What a ``model_version`` may be: it becomes a monitor, a Prometheus label value and a registry key,
#: so it is a short name, not free text (anything else is ``bad_type:model_version``).
MODEL_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+:@/-]{0,63}")
_version_ok = MODEL_VERSION.fullmatch
#: Default bound on one message's size in bytes (configured as ``max_message_bytes``): larger ones are
#: dead-lettered as ``too_large`` before they are parsed.
MAX_MESSAGE_BYTES = 1_000_000

# Epoch seconds of 0001-01-01T00:00:00Z and 10000-01-01T00:00:00Z: what RFC 3339 can express.
# A millisecond or microsecond epoch sent by mistake falls outside and is rejected, not misread.
MIN_TS = -62135596800.0
MAX_TS = 253402300800.0

_PREDICTION_FIELDS = ("event_id", "model_id", "ts", "features", "prediction")
_LABEL_FIELDS = ("event_id", "model_id", "ts", "label")

_NoneType = type(None)
_NUMERIC_TYPES = frozenset((float, int, bool, _NoneType))
_STR_OR_NONE = frozenset((str, _NoneType))
# Any finite float lies within these: one chained comparison checks "finite" (NaN fails it too).
_FLOAT_MAX = sys.float_info.max


@dataclass
class Rejection:
    """An input the decoder refused, with a reason from the fixed vocabulary and its original bytes.

    >>> Rejection(3, "missing_field:ts", b"{}")
    Rejection(index=3, reason='missing_field:ts', raw=b'{}')
    """

    index: int
    reason: str
    raw: bytes


@dataclass
class PredictionBatch:
    """The accepted prediction events of one model in one input batch, column by column.

    ``numeric`` is feature-major, shape ``(len(schema.numeric_names), n)``, NaN where missing.
    ``score`` is the numeric output (binary: P(positive class); regression: the value), NaN if absent;
    ``pred_label`` the class label as sent (classification), ``None`` if absent or regression.

    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))
    >>> raw = b'{"event_id": "e", "model_id": "m", "ts": 1, "features": {"x": 2, "y": 0}, "prediction": 5}'
    >>> batch = decode_predictions([raw], {"m": schema})[0]["m"]
    >>> len(batch), batch.numeric.shape, batch.score.tolist(), batch.unknown_features
    (1, (1, 1), [5.0], 1)
    """

    model_id: str
    index: np.ndarray
    event_id: list[str]
    ts: np.ndarray
    model_version: list[str | None]
    numeric: np.ndarray
    categorical: list[list[str | None]]
    score: np.ndarray
    pred_label: list[str | None]
    segments: dict[str, list[str | None]]
    unknown_features: int

    def __len__(self) -> int:
        return len(self.event_id)


@dataclass
class LabelBatch:
    """The accepted label events of one model in one input batch.

    ``label`` is the regression value, 1.0/0.0 for binary (1.0 means the schema's positive class),
    NaN for multiclass. ``label_class`` is the label as a string for classification (numeric binary
    labels become ``"1"``/``"0"``), ``""`` for regression.

    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> schema = ModelSchema("m", "binary", (), positive_class="yes", classes=("no", "yes"))
    >>> raws = [b'{"event_id": "e1", "model_id": "m", "ts": 1, "label": "yes"}',
    ...         b'{"event_id": "e2", "model_id": "m", "ts": 2, "label": "no"}',
    ...         b'{"event_id": "e3", "model_id": "m", "ts": 3, "label": "banana"}']
    >>> batches, rejections = decode_labels(raws, {"m": schema})
    >>> batch = batches["m"]
    >>> batch.label.tolist(), batch.label_class, len(batch)
    ([1.0, 0.0], ['yes', 'no'], 2)
    >>> [(r.index, r.reason) for r in rejections]
    [(2, 'unknown_class:label')]
    """

    model_id: str
    index: np.ndarray
    event_id: list[str]
    ts: np.ndarray
    label: np.ndarray
    label_class: list[str]

    def __len__(self) -> int:
        return len(self.event_id)


def possible_reasons(schema: ModelSchema, stream: Literal["predictions", "labels"]) -> tuple[str, ...]:
    """Every reason the decoder can give for this schema's events, so metrics can pre-create labels.

    ``unknown_model`` and the reasons found before the model is known are included too.

    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))
    >>> reasons = possible_reasons(schema, "predictions")
    >>> "bad_type:features.x" in reasons, "non_finite:prediction.score" in reasons
    (True, True)
    >>> possible_reasons(schema, "labels")[-3:]
    ('missing_field:label', 'bad_type:label', 'non_finite:label')
    >>> possible_reasons(ModelSchema("b", "binary", ()), "labels")[-1]
    'unknown_class:label'
    """
    reasons = [
        "empty",
        "too_large",
        "too_deep",
        "malformed_json",
        "duplicate_key",
        "not_an_object",
        "unknown_model",
        "missing_field:event_id",
        "bad_type:event_id",
        "too_long:event_id",
        "missing_field:model_id",
        "bad_type:model_id",
        "missing_field:ts",
        "bad_type:ts",
        "non_finite:ts",
    ]
    has_classes = bool(schema.label_classes)
    if stream == "labels":
        reasons += ["missing_field:label", "bad_type:label", "non_finite:label"]
        if has_classes:
            reasons.append("unknown_class:label")
        return tuple(reasons)
    reasons += ["missing_field:features", "bad_type:features"]
    for name in schema.numeric_names:
        reasons += [f"bad_type:features.{name}", f"non_finite:features.{name}"]
    reasons += [f"bad_type:features.{name}" for name in schema.categorical_names]
    reasons += [
        "missing_field:prediction",
        "bad_type:prediction",
        "non_finite:prediction",
        "missing_field:prediction.score",
        "bad_type:prediction.score",
        "non_finite:prediction.score",
        "bad_type:prediction.label",
        "bad_type:prediction.scores",
        "non_finite:prediction.scores",
        "bad_type:model_version",
    ]
    if schema.task == "binary":
        reasons += ["out_of_range:prediction", "out_of_range:prediction.score"]
    if schema.task != "regression":
        reasons.append("out_of_range:prediction.scores")
    if has_classes:
        reasons += [
            "unknown_class:prediction",
            "unknown_class:prediction.label",
            "unknown_class:prediction.scores",
        ]
    if schema.segment_keys:
        reasons.append("bad_type:segment")
        reasons += [f"bad_type:segment.{key}" for key in schema.segment_keys]
    return tuple(reasons)


# --- timestamps -----------------------------------------------------------------------------------

# [0-9], not \d: \d also matches non-ASCII digits, which int() would happily accept.
# RFC 3339, with the time and the zone optional: parse_ts decides which forms a caller accepts.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?)?"
    r"([Zz]|([+-])([0-9]{2}):([0-9]{2}))?"
)
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()


def parse_ts(value: Any, naive_tz: _dt.tzinfo | None = None) -> float | None:
    """Event time as epoch seconds, from an epoch number or an RFC 3339 string; ``None`` if invalid.

    Numbers (not bools) must be finite and within years 1–9999; strings need a ``Z`` or ``±hh:mm``
    offset (a zone-less time would have to be read in the local zone, which pure code must not know).
    A leap second (``:60``) counts as the first second of the next minute.

    Training files (``naive_tz`` given: the zone their times are written in) may also hold what pandas
    writes: a zone-less ``2011-01-01 00:00:00`` (fractions too) or a bare date (midnight), read as
    wall-clock time in ``naive_tz`` (an ambiguous time in a DST change is read as the earlier one).
    The contract's events never do: their ``ts`` must say its offset.

    >>> parse_ts(1717200000.5)
    1717200000.5
    >>> parse_ts("2024-06-01T00:00:00.25Z"), parse_ts("2024-06-01T02:00:00+02:00")
    (1717200000.25, 1717200000.0)
    >>> parse_ts(float("inf")), parse_ts(1717200000000), parse_ts("2024-06-01T00:00:00"), parse_ts(True)
    (None, None, None, None)
    >>> utc = _dt.timezone.utc
    >>> parse_ts("2024-06-01 00:00:00.000", utc), parse_ts("2024-06-01", utc), parse_ts("2024-06-01Z", utc)
    (1717200000.0, 1717200000.0, None)
    >>> parse_ts("2024-06-01 02:00:00", _dt.timezone(_dt.timedelta(hours=2)))
    1717200000.0
    """
    kind = type(value)
    if kind is float or kind is int:
        number: float = value
        # Comparing before converting: float() of a huge int would raise OverflowError.
        return float(number) if MIN_TS <= number < MAX_TS else None
    if kind is not str:
        return None
    match = _RFC3339.fullmatch(value)
    if match is None:
        return None
    groups = match.groups()
    zone, sign, offset_hours, offset_minutes = groups[7:]
    if groups[3] is None:  # a bare date
        if zone is not None or naive_tz is None:
            return None
        hour = minute = second = 0
    else:
        hour, minute, second = int(groups[3]), int(groups[4]), int(groups[5])
    if zone is None and naive_tz is None:
        return None
    year, month, day = int(groups[0]), int(groups[1]), int(groups[2])
    if hour > 23 or minute > 59 or second > 60:
        return None
    try:
        days = _dt.date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None
    seconds = days * 86400 + hour * 3600 + minute * 60 + second
    if sign is not None:
        if int(offset_hours) > 23 or int(offset_minutes) > 59:
            return None
        offset = int(offset_hours) * 3600 + int(offset_minutes) * 60
        seconds += -offset if sign == "+" else offset
    elif zone is None and naive_tz is not None:
        wall = _dt.datetime(year, month, day, hour, minute, min(second, 59))
        utc_offset = naive_tz.utcoffset(wall)
        seconds -= int(utc_offset.total_seconds()) if utc_offset is not None else 0
    fraction = groups[6]
    epoch = seconds + (float(fraction) if fraction else 0.0)
    return epoch if MIN_TS <= epoch < MAX_TS else None


def _ts_or_reason(value: Any) -> float | str:
    if value is None:
        return "missing_field:ts"
    parsed = parse_ts(value)
    if parsed is not None:
        return parsed
    if type(value) is float and not math.isfinite(value):
        return "non_finite:ts"
    return "bad_type:ts"


# --- parsing ---------------------------------------------------------------------------------------


def _nesting_depth(raw: bytes) -> int:
    """Deepest ``[``/``{`` nesting outside strings, computed with numpy (no recursion, no parse)."""
    data = np.frombuffer(raw, dtype=np.uint8)
    positions = np.arange(data.size)
    # A quote is escaped when an odd run of backslashes precedes it.
    last_non_backslash = np.maximum.accumulate(np.where(data == 92, -1, positions))
    before = np.concatenate(([-1], last_non_backslash[:-1]))
    quotes = np.flatnonzero(data == 34)
    real_quotes = quotes[((quotes - 1) - before[quotes]) % 2 == 0]
    toggles = np.zeros(data.size, dtype=np.int64)
    toggles[real_quotes] = 1
    in_string = np.cumsum(toggles) % 2 == 1
    step = (
        (data == 91).astype(np.int64)
        + (data == 123)
        - (data == 93).astype(np.int64)
        - (data == 125).astype(np.int64)
    )
    step[in_string] = 0
    return int(np.cumsum(step).max(initial=0))


# Bound late so tests can stand in a loader that, like some orjson versions, returns inf for 1e400.
_loads: Callable[[bytes], Any] = orjson.loads


def _non_finite_constant(name: str) -> float:
    return math.inf


def _lenient_loads(raw: bytes) -> Any:
    """Second chance for what orjson refused: JSON whose only fault is a non-finite number.

    ``NaN``/``Infinity`` literals and overflowing numbers (``1e400``) parse here to ±inf, so validation
    names the field (``non_finite:features.x``) instead of calling the whole message malformed. Runs only
    on messages orjson rejected, so it costs nothing on the hot path. ``None`` when still not JSON, or
    when a string holds a lone surrogate: orjson refuses those (tested), json.loads does not.

    >>> _lenient_loads(rb'{"a": NaN, "b": "\\ud83d\\ude00"}')
    {'a': inf, 'b': '😀'}
    >>> _lenient_loads(rb'{"a": NaN, "b": "\\udc80red"}') is None
    True
    """
    try:
        # Strict UTF-8 first: json.loads(bytes) would let lone surrogates through ("surrogatepass").
        obj = json.loads(raw.decode("utf-8"), parse_constant=_non_finite_constant)
    except (ValueError, RecursionError, UnicodeDecodeError, TypeError):
        return None
    # A lone surrogate can only come from a \uD800-\uDFFF escape; valid pairs json.loads joins.
    if _SURROGATE_ESCAPE.search(raw) is not None and _holds_surrogate(obj):
        return None
    return obj


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _holds_surrogate(obj: Any) -> bool:
    """Whether a string (key or value) anywhere in ``obj`` holds a surrogate code point."""
    search = _SURROGATE.search
    stack = [obj]
    while stack:
        node = stack.pop()
        kind = type(node)
        if kind is str:
            if search(node) is not None:
                return True
        elif kind is dict:
            stack.extend(node)
            stack.extend(node.values())
        elif kind is list:
            stack.extend(node)
    return False


def _has_duplicate_keys(raw: bytes, obj: Any) -> bool:
    """Whether an object in the JSON text ``raw`` repeats a key; ``obj`` is what a parser made of it.

    Cheap for the usual event: every key is a string token followed (after optional whitespace) by a
    colon, so ``raw``'s colons are at least as many as its key tokens, and those at least as many as
    the keys of the parsed objects (one per distinct key of each object). Finding as many colons as
    the keys of ``obj`` and its child objects (a lower bound of all its keys) proves the three equal:
    no key is repeated. Otherwise :func:`_repeats_a_key` decides.

    >>> _has_duplicate_keys(b'{"a": 1, "b": {"c": "12:00"}}', {"a": 1, "b": {"c": "12:00"}})
    False
    >>> _has_duplicate_keys(rb'{"a": 1, "\\u0061" : 2}', {"a": 2})
    True
    """
    keys = 0
    if type(obj) is dict:
        keys = len(obj)
        for value in obj.values():
            if type(value) is dict:
                keys += len(value)
    return keys != raw.count(b":") and _repeats_a_key(raw, obj, keys)


def _repeats_a_key(raw: bytes, obj: Any, keys: int) -> bool:
    """:func:`_has_duplicate_keys` once the colons did not settle it; ``keys`` is a lower bound of the
    keys of ``obj``'s objects (colons inside strings, deeper objects and repeats make them differ).

    A tighter bound of the key tokens counts only the colons right after a quote or whitespace (a
    time such as ``"12:00"`` no longer counts); then all keys are counted; only if the two still
    differ does :func:`_duplicate_key_scan` read the text token by token, so the answer is exact.
    """
    bound = raw.count(b'":')
    for space in b" \n\r\t":
        if space in raw:  # a one-byte search is fast (memchr); counting two bytes is not
            bound += raw.count(bytes((space, 58)))
    if keys == bound:
        return False
    return _key_count(obj) != bound and _duplicate_key_scan(raw)


def _key_count(obj: Any) -> int:
    """The number of keys of all objects in ``obj`` (iterative: nesting may be :data:`MAX_DEPTH` deep)."""
    count = 0
    stack = [obj]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            count += len(node)
            children: Any = node.values()
        elif type(node) is list:
            children = node
        else:
            continue
        stack.extend(child for child in children if type(child) is dict or type(child) is list)
    return count


# A JSON string token, or one structural character (numbers and literals do not matter here).
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\]:]', re.DOTALL)


def _duplicate_key_scan(raw: bytes) -> bool:
    """Exact duplicate-key check of the valid JSON text ``raw``, without recursion."""
    scopes: list[set[str] | None] = []
    key: bytes | None = None
    for match in _TOKEN.finditer(raw):
        token = match.group()
        first = token[:1]
        if first == b'"':
            key = token
            continue
        if first == b":" and key is not None and scopes:
            scope = scopes[-1]
            if scope is not None:
                name = json.loads(key) if b"\\" in key else key[1:-1].decode("utf-8")
                if name in scope:
                    return True
                scope.add(name)
        elif first == b"{":
            scopes.append(set())
        elif first == b"[":
            scopes.append(None)
        elif scopes:  # } or ]
            scopes.pop()
        key = None
    return False


def _parsed_objects(
    raws: Sequence[RawValue], max_bytes: int, rejections: list[Rejection], start: int = 0
) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
    """Yield ``(index, raw, object)`` for every input that is a JSON object; reject the rest.

    Indexes count from ``start``.
    """
    loads = _loads
    reject = rejections.append
    for index, value in enumerate(raws, start):
        raw: Any = value
        if type(raw) is not bytes:
            if raw is None:
                reject(Rejection(index, "empty", b""))
                continue
            try:
                raw = bytes(raw) if isinstance(raw, bytes | bytearray | memoryview) else raw.encode()
            except Exception:
                reject(Rejection(index, "malformed_json", b""))
                continue
        size = len(raw)
        if size == 0:
            reject(Rejection(index, "empty", raw))
            continue
        if size > max_bytes:
            reject(Rejection(index, "too_large", raw))
            continue
        # Only a value with more than MAX_DEPTH brackets can be too deep; normal events skip the scan.
        if (
            size > MAX_DEPTH
            and raw.count(b"[") + raw.count(b"{") > MAX_DEPTH
            and _nesting_depth(raw) > MAX_DEPTH
        ):
            reject(Rejection(index, "too_deep", raw))
            continue
        try:
            obj = loads(raw)
        except Exception as exc:
            # Newer orjson versions enforce the depth limit themselves.
            if "recursion" in str(exc).lower():
                reject(Rejection(index, "too_deep", raw))
                continue
            obj = _lenient_loads(raw)
            if obj is None:
                reject(Rejection(index, "malformed_json", raw))
                continue
        if _has_duplicate_keys(raw, obj):
            reject(Rejection(index, "duplicate_key", raw))
            continue
        if type(obj) is not dict:
            reject(Rejection(index, "not_an_object", raw))
            continue
        yield index, raw, obj


def _identity(obj: dict[str, Any], max_event_id_length: int) -> tuple[str, str] | str:
    """``(event_id, model_id)`` or the reason they are unusable."""
    event_id = obj.get("event_id")
    if type(event_id) is not str or not event_id:
        return "missing_field:event_id" if event_id is None else "bad_type:event_id"
    if len(event_id) > max_event_id_length:
        return "too_long:event_id"
    model_id = obj.get("model_id")
    if type(model_id) is not str:
        return "missing_field:model_id" if model_id is None else "bad_type:model_id"
    return event_id, model_id


def _class_text(value: Any) -> str | None:
    """A predicted class as sent: a string as is, an integer or boolean as text; raises TypeError.

    Not :func:`normalize_category`: a class is matched against the model's configured class names
    exactly, as labels are (``decode_labels``).
    """
    kind = type(value)
    if kind is str:
        return value
    if value is None:
        return None
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    raise TypeError


def _spelled(flat: list[str | None]) -> list[str | None]:
    """``flat`` with every string in its one spelling (:func:`normalize_category`).

    The fast paths append strings as they came (the typed one booleans too, which become
    ``"true"``/``"false"``: no number is there to equal them); they are normalised here once per
    distinct value of the batch (categories repeat), and the list is rebuilt only when one changes.
    """
    spelling: dict[str | None, str | None] = {}
    for value in set(flat):
        if value is not None:
            normal = normalize_category(value)
            if normal != value:
                spelling[value] = normal
    if not spelling:
        return flat
    get = spelling.get
    return [get(value, value) for value in flat]


def _finite_number(value: Any) -> float | None:
    """The value as a finite float, ``None`` if it is a number that is not finite; raises TypeError."""
    kind = type(value)
    if kind is not float and kind is not int and kind is not bool:
        raise TypeError
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


# --- the typed fast path ----------------------------------------------------------------------------

# An event of the usual shape is parsed and type-checked by msgspec in C, into a Struct made for its
# model, instead of orjson.loads into dicts and per-event Python checks; a batch of them is decoded by
# one C loop (_PredictionDecoding.run). The typed path only ever accepts: whatever its types do not
# describe (a missing or unknown field, a bool or string where a number goes, a string ``ts``, a
# ``prediction`` that is not a number or ``{"score": <number>}``, a number beyond a float64, invalid
# JSON or UTF-8, a lone surrogate, nesting msgspec will not follow...) fails to decode and takes the
# orjson path, whose checks give every reason, in the documented order. What it accepts it holds with
# the values the orjson path would (numeric features keep integers as integers and booleans as
# booleans, as orjson does; a boolean category is spelled "true"/"false" by _spelled, as the checks
# would); the one check it leaves, repeated keys, is made per block (_take_fast). The tests
# decode hostile and mutated events both ways and compare (tests/test_events.py).

_UnsetType = type(msgspec.UNSET)


class _Score(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    score: float


@dataclass(frozen=True)
class _FastModel:
    """What turns one model's decoded Structs into :class:`_PredictionColumns` rows."""

    model_id: str  # the key of ``schemas`` (the tag the Struct is chosen by)
    schema: ModelSchema
    keys: int  # object keys of an event without model_version, segment and a prediction object
    numeric: Callable[[Any], Sequence[Any]]
    categorical: Callable[[Any], Sequence[Any]]
    feature_fields: dict[str, str]  # feature name -> Struct field name


@dataclass(frozen=True)
class _FastDecoder:
    decode: Callable[[bytes], Any]
    models: dict[type, _FastModel]


def _attr_getter(names: Sequence[str]) -> Callable[[Any], Sequence[Any]]:
    """A function returning the attributes ``names`` of an object as a sequence."""
    if not names:
        return lambda _: ()
    if len(names) == 1:
        only = names[0]
        return lambda obj: (getattr(obj, only),)
    return attrgetter(*names)


_NO_FAST_DECODER = _FastDecoder(lambda raw: None, {})


@functools.lru_cache(maxsize=16)
def _fast_decoder(models: tuple[tuple[str, ModelSchema], ...], max_event_id_length: int) -> _FastDecoder:
    """One msgspec decoder for the events of all ``models``, a tagged union chosen by ``model_id``.

    Feature names become Struct fields ``f0``, ``f1``... renamed to the names the events use, so any
    name works. ``ts``, ``event_id`` and a binary score carry their bounds as constraints.
    """
    event_id_type = Annotated[str, msgspec.Meta(min_length=1, max_length=max_event_id_length)]
    ts_type = Annotated[float, msgspec.Meta(ge=MIN_TS, lt=MAX_TS)]
    structs: dict[type, _FastModel] = {}
    for n, (model_id, schema) in enumerate(models):
        try:
            event, model = _fast_model(n, model_id, schema, event_id_type, ts_type)
        except Exception:  # pragma: no cover - a schema msgspec cannot describe keeps the orjson path
            continue
        structs[event] = model
    if not structs:
        return _NO_FAST_DECODER
    union: Any = next(iter(structs))
    for struct in list(structs)[1:]:
        union = union | struct
    return _FastDecoder(msgspec.json.Decoder(union).decode, structs)


def _fast_decoder_of(schemas: Mapping[str, ModelSchema], max_event_id_length: int) -> _FastDecoder:
    """:func:`_fast_decoder` of ``schemas`` (cached); none (the orjson path only) if it cannot be made."""
    try:
        return _fast_decoder(tuple(schemas.items()), max_event_id_length)
    except Exception:  # pragma: no cover - e.g. an unhashable stand-in for a schema
        return _NO_FAST_DECODER


def _fast_model(
    n: int, model_id: str, schema: ModelSchema, event_id_type: Any, ts_type: Any
) -> tuple[type, _FastModel]:
    """The Struct of one model's events (tag ``model_id``) and what reads its rows."""
    probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    fields: list[tuple[str, Any]] = []
    rename: dict[str, str] = {}
    for i, name in enumerate(schema.numeric_names):
        fields.append((f"f{i}", bool | int | float | None))
        rename[f"f{i}"] = name
    offset = len(fields)
    for i, name in enumerate(schema.categorical_names, offset):
        fields.append((f"f{i}", str | bool | None))
        rename[f"f{i}"] = name
    features = msgspec.defstruct(f"_Features{n}", fields, rename=rename, forbid_unknown_fields=True, gc=False)
    if schema.task == "binary":
        score = msgspec.defstruct(
            f"_Probability{n}", [("score", probability)], forbid_unknown_fields=True, gc=False
        )
        prediction: Any = probability | score
    else:
        prediction = float | _Score
    event = msgspec.defstruct(
        f"_Event{n}",
        [
            ("event_id", event_id_type),
            ("ts", ts_type),
            ("features", features),
            ("prediction", prediction),
            ("model_version", str | None | _UnsetType, msgspec.UNSET),
            ("segment", dict[str, str | bool | None] | None | _UnsetType, msgspec.UNSET),
        ],
        tag_field="model_id",
        tag=model_id,
        forbid_unknown_fields=True,
        gc=False,
    )
    fields_of = {name: field for field, name in rename.items()}
    return event, _FastModel(
        model_id,
        schema,
        5 + len(fields),
        _attr_getter([f"f{i}" for i in range(offset)]),
        _attr_getter([f"f{i}" for i in range(offset, len(fields))]),
        fields_of,
    )


def _no_redo(index: int) -> None:  # pragma: no cover - _PredictionDecoding sets the real one
    raise AssertionError("typed rows outside decode_predictions")


def _colons(raws: list[bytes]) -> int:
    """The colons in all of ``raws``: numpy over joined blocks that stay in the CPU cache (about five
    times faster than ``bytes.count`` per input)."""
    total = 0
    for start in range(0, len(raws), 512):
        block = np.frombuffer(b"".join(raws[start : start + 512]), dtype=np.uint8)
        total += int(np.count_nonzero(block == 58))
    return total


def _segment_keys(segment: Any) -> int:
    """Keys a decoded ``segment`` adds to its event: its own and its object's."""
    if segment is msgspec.UNSET:
        return 0
    return 1 if segment is None else 1 + len(segment)


_get_event_id = attrgetter("event_id")
_get_ts = attrgetter("ts")
_get_features = attrgetter("features")
_get_prediction = attrgetter("prediction")
_get_model_version = attrgetter("model_version")
_get_segment = attrgetter("segment")


# --- predictions -----------------------------------------------------------------------------------


class _PredictionColumns:
    """Growing column lists of one model's accepted prediction events.

    Feature values go into flat lists (row after row) rather than one tuple per event: far fewer
    long-lived container objects, so the garbage collector has far less to scan on a large batch.
    """

    def __init__(self, schema: ModelSchema) -> None:
        self.schema = schema
        self.numeric_names = schema.numeric_names
        self.categorical_names = schema.categorical_names
        self.known_features = frozenset(f.name for f in schema.features)
        self.n_known = len(self.known_features)
        self.segment_keys = schema.segment_keys
        self.is_regression = schema.task == "regression"
        self.is_binary = schema.task == "binary"
        self.positive_class = schema.positive_class
        self.negative_class = schema.negative_class
        self.classes = frozenset(schema.label_classes) if schema.label_classes else None
        # A number as the prediction must lie within these: a binary score is a probability; any
        # other number just finite (NaN fails both comparisons).
        self.score_low, self.score_high = (0.0, 1.0) if self.is_binary else (-_FLOAT_MAX, _FLOAT_MAX)
        # itemgetter fetches all schema features in one C call; absent features fall back to dict.get.
        self.get_numeric = _row_getter(self.numeric_names)
        self.get_categorical = _row_getter(self.categorical_names)
        self.index: list[int] = []
        self.raw: list[bytes] = []
        self.event_id: list[str] = []
        self.ts: list[float] = []
        self.model_version: list[str | None] = []
        self.numeric_flat: list[Any] = []
        # Whether numeric_flat may hold a value that is not int/float/bool/None (rows of add's fast
        # path, whose types finish checks for the batch).
        self.numeric_unchecked = False
        self.categorical_flat: list[str | None] = []
        self.score: list[float] = []
        self.pred_label: list[str | None] = []
        self.segment_flat: list[str | None] = []
        self.unknown_features = 0
        # Rows the typed fast path decoded (their input positions and Structs), not yet in the lists
        # above. They go in (_take_fast) before any other row of this model and at finish, so the
        # rows stay in input order. ``fast_source`` is the batch's input, ``fast_redo`` what takes an
        # input that fails the batch checks of _take_fast through every check instead.
        self.fast_model: _FastModel | None = None
        self.fast_blocks: list[tuple[Sequence[int], list[Any]]] = []
        self.fast_source: Sequence[RawValue] = ()
        self.fast_redo: Callable[[int], None] = _no_redo

    def _take_fast(self) -> None:
        """Append the rows of the typed fast path to the column lists, with a C loop per column.

        One check is left for here, over the block: no object repeats a key. Each row's objects have
        as many keys as its Struct holds (unknown keys fail the decode), and a row whose text has as
        many colons has no other key token, so none repeats; a row with more colons (a repeated key,
        or a colon inside a string) goes through every check (``fast_redo``), in its place.
        """
        model = self.fast_model
        assert model is not None
        blocks, self.fast_blocks = self.fast_blocks, []
        indexes: Sequence[int]
        if len(blocks) == 1:
            indexes, events = blocks[0]
        else:
            indexes = list(chain.from_iterable(block[0] for block in blocks))
            events = list(chain.from_iterable(block[1] for block in blocks))
        n = len(indexes)
        source = self.fast_source
        raws: list[bytes]
        if type(indexes) is range:
            raws = list(source[indexes.start : indexes.stop])  # type: ignore[arg-type]
        else:
            raws = list(map(source.__getitem__, indexes))  # type: ignore[arg-type]
        versions = list(map(_get_model_version, events))
        predictions = list(map(_get_prediction, events))
        keys = (
            np.fromiter(map(is_not, map(type, predictions), repeat(float)), np.int64, n)
            + np.fromiter(map(is_not, versions, repeat(msgspec.UNSET)), np.int64, n)
            + model.keys
        )
        segments = list(map(_get_segment, events))
        if segments.count(msgspec.UNSET) != n:
            keys += np.array([_segment_keys(segment) for segment in segments], dtype=np.int64)
        # A version that is not a name goes through every check (and is rejected there).
        named = set(versions)
        named.discard(msgspec.UNSET)
        named.discard(None)
        bad_versions = [v for v in named if not _version_ok(v)]
        # Each row has at least as many colons as keys: equal totals mean equal rows.
        if not bad_versions and _colons(raws) == keys.sum():
            self._append_fast(events, indexes, raws, versions, predictions, segments, 0, n)
            return
        colons = np.fromiter(map(bytes.count, raws, repeat(b":")), np.int64, n)
        redo = keys != colons
        if bad_versions:
            bad = set(bad_versions)
            redo |= np.fromiter((v in bad for v in versions), bool, n)
        start = 0
        for row in np.flatnonzero(redo).tolist():
            self._append_fast(events, indexes, raws, versions, predictions, segments, start, row)
            self.fast_redo(indexes[row])
            start = row + 1
        self._append_fast(events, indexes, raws, versions, predictions, segments, start, n)

    def _append_fast(
        self,
        events: list[Any],
        indexes: Sequence[int],
        raws: list[bytes],
        versions: list[Any],
        predictions: list[Any],
        segments: list[Any],
        start: int,
        stop: int,
    ) -> None:
        """Rows ``start:stop`` of a :meth:`_take_fast` block into the column lists."""
        if start >= stop:
            return
        model = self.fast_model
        assert model is not None
        if start > 0 or stop < len(events):
            events, indexes, raws = events[start:stop], indexes[start:stop], raws[start:stop]
            versions, predictions, segments = (
                versions[start:stop],
                predictions[start:stop],
                segments[start:stop],
            )
        self.index.extend(indexes)
        self.raw.extend(raws)
        self.event_id.extend(map(_get_event_id, events))
        self.ts.extend(map(_get_ts, events))
        unset = msgspec.UNSET
        self.model_version.extend([None if v is unset else v for v in versions])
        features = list(map(_get_features, events))
        self.numeric_flat.extend(chain.from_iterable(map(model.numeric, features)))
        self.categorical_flat.extend(chain.from_iterable(map(model.categorical, features)))
        self.score.extend([p if type(p) is float else p.score for p in predictions])
        self.pred_label.extend(repeat(None, len(events)))
        if self.segment_keys:
            for segment, event_features in zip(segments, features, strict=True):
                self.segment_flat.extend(self._fast_segments(segment, event_features, model))

    def _fast_segments(self, segment: Any, features: Any, model: _FastModel) -> list[str | None]:
        """:meth:`_segments` of a decoded Struct (its segment values are str, bool or None: never bad)."""
        if segment is None or segment is msgspec.UNSET:
            segment = {}
        values: list[str | None] = []
        for key in self.segment_keys:
            if key in segment:
                values.append(normalize_category(segment[key]))
            else:
                field = model.feature_fields.get(key)
                values.append(None if field is None else _segment_from_feature(getattr(features, field)))
        return values

    def add(self, index: int, raw: bytes, event_id: str, obj: dict[str, Any]) -> str | None:
        """Validate one event and append it; return the rejection reason instead if it is invalid.

        Fast path for the common well-formed event: every schema feature present and nothing else,
        categorical values str/None, an in-range number as ``ts``, ``prediction`` a float or
        ``{"score": <float>}`` within the score bounds, ``model_version`` str/None, valid segments.
        Such an event is appended without checking its numeric feature types: :meth:`finish` checks
        them for the whole batch at once and rejects a row with a bad one for its first bad feature,
        the reason :meth:`add_checked` would give (every check before the numeric types passed).
        Anything else goes to :meth:`add_checked`, which checks in the documented order; the fast path
        never rejects, so reasons are unchanged.
        """
        if self.fast_blocks:
            self._take_fast()
        ts: Any = obj.get("ts")
        features: Any = obj.get("features")
        kind = type(ts)
        if (
            (kind is float or kind is int)
            and MIN_TS <= ts < MAX_TS
            and type(features) is dict
            and len(features) == self.n_known
        ):
            prediction: Any = obj.get("prediction")
            if type(prediction) is dict:
                prediction = prediction.get("score") if len(prediction) == 1 else None
            version: Any = obj.get("model_version")
            if (
                type(prediction) is float
                and self.score_low <= prediction <= self.score_high
                and (version is None or (type(version) is str and _version_ok(version)))
            ):
                try:
                    numeric = self.get_numeric(features)
                    categorical = self.get_categorical(features)
                except KeyError:
                    return self.add_checked(index, raw, event_id, obj)
                if _STR_OR_NONE.issuperset(map(type, categorical)):
                    if self.segment_keys:
                        segments = self._segments(obj.get("segment"), features)
                        if isinstance(segments, str):
                            return self.add_checked(index, raw, event_id, obj)
                        self.segment_flat.extend(segments)
                    # Inlined rather than shared with add_checked: a call per event costs ~0.1 µs here.
                    self.index.append(index)
                    self.raw.append(raw)
                    self.event_id.append(event_id)
                    self.ts.append(ts)
                    self.model_version.append(version)
                    self.numeric_flat.extend(numeric)
                    self.numeric_unchecked = True
                    self.categorical_flat.extend(categorical)
                    self.score.append(prediction)
                    self.pred_label.append(None)
                    return None
        return self.add_checked(index, raw, event_id, obj)

    def add_checked(self, index: int, raw: bytes, event_id: str, obj: dict[str, Any]) -> str | None:
        """:meth:`add` without the fast path: every check, in the documented order."""
        ts: Any = obj.get("ts")
        kind = type(ts)
        if not ((kind is float or kind is int) and MIN_TS <= ts < MAX_TS):
            checked = _ts_or_reason(ts)
            if isinstance(checked, str):
                return checked
            ts = checked

        features = obj.get("features")
        if type(features) is not dict:
            return "missing_field:features" if features is None else "bad_type:features"
        try:
            numeric = self.get_numeric(features)
        except KeyError:
            numeric = [features.get(name) for name in self.numeric_names]
        if not _NUMERIC_TYPES.issuperset(map(type, numeric)):
            for name, value in zip(self.numeric_names, numeric, strict=True):
                if type(value) not in _NUMERIC_TYPES:
                    return f"bad_type:features.{name}"
        try:
            categorical = self.get_categorical(features)
        except KeyError:
            categorical = [features.get(name) for name in self.categorical_names]
        if not _STR_OR_NONE.issuperset(map(type, categorical)):
            converted: list[str | None] = []
            for name, value in zip(self.categorical_names, categorical, strict=True):
                try:
                    converted.append(normalize_category(value))
                except NotACategory:
                    return f"bad_type:features.{name}"
            categorical = converted

        prediction: Any = obj.get("prediction")
        if type(prediction) is float and self.score_low <= prediction <= self.score_high:
            score: float = prediction
            pred_label: str | None = None
        elif (
            # The most common shape, {"score": <float>}: what _prediction_object returns for it.
            type(prediction) is dict
            and len(prediction) == 1
            and type(only_score := prediction.get("score")) is float
            and self.score_low <= only_score <= self.score_high
        ):
            score, pred_label = only_score, None
        else:
            checked_prediction = (
                self._prediction_object(prediction)
                if type(prediction) is dict
                else self._prediction(prediction)
            )
            if isinstance(checked_prediction, str):
                return checked_prediction
            score, pred_label = checked_prediction

        version = obj.get("model_version")
        if version is not None:
            if type(version) is int:
                version = str(version)
            if type(version) is not str or not _version_ok(version):
                return "bad_type:model_version"

        if self.segment_keys:
            segments = self._segments(obj.get("segment"), features)
            if isinstance(segments, str):
                return segments
            self.segment_flat.extend(segments)

        if not self.known_features.issuperset(features):
            self.unknown_features += len(features.keys() - self.known_features)
        self.index.append(index)
        self.raw.append(raw)
        self.event_id.append(event_id)
        self.ts.append(ts)
        self.model_version.append(version)
        self.numeric_flat.extend(numeric)
        self.categorical_flat.extend(categorical)
        self.score.append(score)
        self.pred_label.append(pred_label)
        return None

    def _prediction(self, prediction: Any) -> tuple[float, str | None] | str:
        """``(score, pred_label)`` or the rejection reason."""
        kind = type(prediction)
        if kind is float or kind is int or kind is bool:
            number = _finite_number(prediction)
            if number is None:
                return "non_finite:prediction"
            if self.is_binary and not 0.0 <= number <= 1.0:
                return "out_of_range:prediction"
            return number, None
        if prediction is None:
            return "missing_field:prediction"
        if kind is str:
            if self.is_regression:
                return "bad_type:prediction"
            if self.classes is not None and prediction not in self.classes:
                return "unknown_class:prediction"
            return math.nan, prediction
        if kind is not dict:
            return "bad_type:prediction"
        return self._prediction_object(prediction)

    def _prediction_object(self, prediction: dict[str, Any]) -> tuple[float, str | None] | str:
        score = math.nan
        raw_score = prediction.get("score")
        if raw_score is not None:
            try:
                checked = _finite_number(raw_score)
            except TypeError:
                return "bad_type:prediction.score"
            if checked is None:
                return "non_finite:prediction.score"
            if self.is_binary and not 0.0 <= checked <= 1.0:
                return "out_of_range:prediction.score"
            score = checked

        raw_label = prediction.get("label")
        if self.is_binary and (type(raw_label) is bool or (type(raw_label) is int and raw_label in (0, 1))):
            # As for labels: true/1 is the positive class, false/0 the negative one.
            pred_label = self.positive_class if raw_label else self.negative_class
        else:
            try:
                pred_label = _class_text(raw_label)
            except TypeError:
                return "bad_type:prediction.label"
            if pred_label is not None and self.classes is not None and pred_label not in self.classes:
                return "unknown_class:prediction.label"

        scores = prediction.get("scores")
        if scores is not None:
            if type(scores) is not dict:
                return "bad_type:prediction.scores"
            probabilities: dict[str, float] = {}
            for name, value in scores.items():
                try:
                    probability = _finite_number(value)
                except TypeError:
                    return "bad_type:prediction.scores"
                if probability is None:
                    return "non_finite:prediction.scores"
                if not self.is_regression:
                    if not 0.0 <= probability <= 1.0:
                        return "out_of_range:prediction.scores"
                    if self.classes is not None and name not in self.classes:
                        return "unknown_class:prediction.scores"
                probabilities[name] = probability
            if raw_score is None and self.schema.task == "binary":
                score = probabilities.get(self.positive_class, math.nan)
            if pred_label is None and probabilities and not self.is_regression:
                pred_label = max(probabilities, key=probabilities.__getitem__)

        if self.is_regression:
            return "missing_field:prediction.score" if raw_score is None else (score, None)
        if raw_score is None and pred_label is None and scores is None:
            return "missing_field:prediction.score"
        return score, pred_label

    def _segments(self, segment: Any, features: dict[str, Any]) -> list[str | None] | str:
        if segment is None:
            segment = {}
        elif type(segment) is not dict:
            return "bad_type:segment"
        values: list[str | None] = []
        for key in self.segment_keys:
            if key in segment:
                try:
                    values.append(normalize_category(segment[key]))
                except NotACategory:
                    return f"bad_type:segment.{key}"
            else:
                values.append(_segment_from_feature(features.get(key)))
        return values

    def finish(self, rejections: list[Rejection]) -> PredictionBatch | None:
        """The columns as a batch, after moving events with infinite feature values to rejections."""
        if self.fast_blocks:
            self._take_fast()
        n = len(self.index)
        if self.numeric_unchecked:
            numeric, bad = _numeric_matrix(self.numeric_flat, n, self.numeric_names)
        else:
            numeric, bad = _float_matrix(self.numeric_flat, n, len(self.numeric_names)), {}
        infinite = np.isinf(numeric)
        infinite_rows = np.flatnonzero(infinite.any(axis=1))
        if infinite_rows.size:
            first_infinite = np.argmax(infinite[infinite_rows], axis=1)
            for row, feature in zip(infinite_rows.tolist(), first_infinite.tolist(), strict=True):
                # A bad type is found before an infinite value, as add_checked would.
                bad.setdefault(row, f"non_finite:features.{self.numeric_names[feature]}")
        if bad:
            bad_rows = np.fromiter(bad, dtype=np.int64, count=len(bad))
            for row, reason in bad.items():
                rejections.append(Rejection(self.index[row], reason, self.raw[row]))
            keep = np.ones(n, dtype=bool)
            keep[bad_rows] = False
            numeric = numeric[keep]
            kept = np.flatnonzero(keep).tolist()
            for name in ("index", "event_id", "ts", "model_version", "score", "pred_label"):
                column = getattr(self, name)
                setattr(self, name, [column[row] for row in kept])
            n = len(kept)
        else:
            kept = None
        if n == 0:
            return None
        categorical_flat = _spelled(self.categorical_flat)
        segment_flat = _spelled(self.segment_flat)
        return PredictionBatch(
            model_id=self.schema.model_id,
            index=np.array(self.index, dtype=np.int64),
            event_id=self.event_id,
            ts=np.array(self.ts, dtype=np.float64),
            model_version=self.model_version,
            numeric=np.ascontiguousarray(numeric.T),
            categorical=_columns(categorical_flat, len(self.categorical_names), kept),
            score=np.array(self.score, dtype=np.float64),
            pred_label=self.pred_label,
            segments=dict(
                zip(self.segment_keys, _columns(segment_flat, len(self.segment_keys), kept), strict=True)
            ),
            unknown_features=self.unknown_features,
        )


def _row_getter(names: tuple[str, ...]) -> Callable[[dict[str, Any]], Sequence[Any]]:
    """A function returning the values of ``names`` from a dict; raises KeyError if one is absent."""
    if not names:
        return lambda features: ()
    if len(names) == 1:
        only = names[0]
        return lambda features: (features[only],)
    return itemgetter(*names)


def _columns(flat: list[str | None], width: int, kept: list[int] | None) -> list[list[str | None]]:
    """Split a row-after-row flat list into ``width`` columns, keeping only rows ``kept`` if given."""
    columns = [flat[column::width] for column in range(width)]
    if kept is None:
        return columns
    return [[column[row] for row in kept] for column in columns]


def _segment_from_feature(value: Any) -> str | None:
    """A feature value used as a segment: any scalar in its one spelling; anything else is missing."""
    try:
        return normalize_category(value)
    except NotACategory:
        return None


def _float_or_inf(value: Any) -> float:
    try:
        return math.nan if value is None else float(value)
    except OverflowError:
        return math.inf


def _float_matrix(flat: list[Any], n: int, width: int) -> np.ndarray:
    """Row-after-row int/float/bool/None values as a float64 ``(n, width)`` matrix, None as NaN.

    Integers too big for a float64 become inf, so they are rejected with the infinite values.
    """
    try:
        values = np.array(flat, dtype=np.float64)
    except OverflowError:
        values = np.array([_float_or_inf(value) for value in flat], dtype=np.float64)
    return values.reshape(n, width)


def _numeric_matrix(flat: list[Any], n: int, names: tuple[str, ...]) -> tuple[np.ndarray, dict[int, str]]:
    """:func:`_float_matrix` of the numeric feature values, after checking their types for the batch.

    Returns the ``(n, len(names))`` matrix and ``{row: "bad_type:features.<first bad name>"}`` for the
    rows holding a value that is not int/float/bool/None (those values become NaN in the matrix).
    numpy's type discovery does the check for the usual all-number batch in one C pass; a batch it
    does not turn into a 1-D number array (None, a string, a list...) is checked value by value.
    """
    width = len(names)
    try:
        values = np.array(flat)
    except Exception:
        values = None
    if values is not None and values.ndim == 1 and values.dtype.kind in "fbiu" and values.size == n * width:
        return values.astype(np.float64, copy=False).reshape(n, width), {}
    if _NUMERIC_TYPES.issuperset(map(type, flat)):
        return _float_matrix(flat, n, width), {}
    bad: dict[int, str] = {}
    clean = list(flat)
    for position, value in enumerate(flat):
        if type(value) not in _NUMERIC_TYPES:
            row, feature = divmod(position, width)
            bad.setdefault(row, f"bad_type:features.{names[feature]}")
            clean[position] = None
    return _float_matrix(clean, n, width), bad


def decode_predictions(
    raws: Sequence[RawValue],
    schemas: Mapping[str, ModelSchema],
    max_bytes: int = MAX_MESSAGE_BYTES,
    *,
    max_event_id_length: int = MAX_EVENT_ID_LENGTH,
) -> tuple[dict[str, PredictionBatch], list[Rejection]]:
    """Decode a batch of prediction events into one :class:`PredictionBatch` per model; never raises.

    Models without accepted events have no entry. Rejections are in input order. Inputs longer than
    ``max_bytes`` are ``too_large``; event ids longer than ``max_event_id_length`` ``too_long:event_id``.

    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> schema = ModelSchema("m", "binary", (FeatureSpec("x", "numeric"),), segment_keys=("country",))
    >>> raws = [
    ...     b'{"event_id": "e1", "model_id": "m", "ts": "2024-06-01T00:00:00Z", "features": {"x": null},'
    ...     b' "prediction": {"scores": {"0": 0.3, "1": 0.7}}, "segment": {"country": "de"}}',
    ...     b'{"event_id": "e2", "model_id": "other", "ts": 1, "features": {}, "prediction": 1}',
    ...     None,
    ... ]
    >>> batches, rejections = decode_predictions(raws, {"m": schema})
    >>> b = batches["m"]
    >>> b.ts.tolist(), b.numeric.tolist(), b.score.tolist(), b.pred_label, b.segments
    ([1717200000.0], [[nan]], [0.7], ['1'], {'country': ['de']})
    >>> [(r.index, r.reason) for r in rejections]
    [(1, 'unknown_model'), (2, 'empty')]
    """
    rejections: list[Rejection] = []
    columns: dict[str, _PredictionColumns] = {}
    try:
        batch = _PredictionDecoding(raws, schemas, max_bytes, max_event_id_length, columns, rejections)
        batch.run()
        batches = {}
        for model_id, model_columns in columns.items():
            result = model_columns.finish(rejections)
            if result is not None:
                batches[model_id] = result
    except Exception:  # pragma: no cover - a bug here must not stop the consumer; see _give_up
        return {}, _give_up(raws)
    finally:
        # The columns point back at the decoding (fast_redo): without this, the whole batch would
        # be a reference cycle, freed only by the cyclic garbage collector (slowly, and late).
        for model_columns in columns.values():
            model_columns.fast_redo = _no_redo
            model_columns.fast_source = ()
    rejections.sort(key=lambda rejection: rejection.index)
    return batches, rejections


class _PredictionDecoding:
    """One call of :func:`decode_predictions`: its inputs, settings and growing outputs."""

    #: The typed path is left for the rest of a batch when more than one input in this many fails it
    #: (after a few): a stream of other shapes (string ``ts``, class labels...) then costs what the
    #: orjson path costs, not a failed typed decode more per event.
    GIVE_UP_RATIO = 8

    def __init__(
        self,
        raws: Sequence[RawValue],
        schemas: Mapping[str, ModelSchema],
        max_bytes: int,
        max_event_id_length: int,
        columns: dict[str, _PredictionColumns],
        rejections: list[Rejection],
    ) -> None:
        self.raws = raws
        self.schemas = schemas
        self.max_bytes = max_bytes
        self.max_event_id_length = max_event_id_length
        self.columns = columns
        self.rejections = rejections
        self.fast = _fast_decoder_of(schemas, max_event_id_length)
        self.fast_columns: dict[type, _PredictionColumns] = {}

    def run(self) -> None:
        raws = self.raws
        n = len(raws)
        if not n:
            return
        # The typed path takes a batch of plain inputs: bytes of an allowed size (empty ones fail
        # to decode and get their reason from the checks).
        plain = set(map(type, raws)) == {bytes} and max(map(len, raws)) <= self.max_bytes  # type: ignore[arg-type]
        if not (plain and self.fast.models):
            self.decode_each(0, n)
            return
        decode = self.fast.decode
        remaining = iter(raws)
        base = failures = 0
        while True:
            events: list[Any] = []
            try:
                events.extend(map(decode, remaining))  # type: ignore[arg-type]
            except Exception:
                # ``events`` holds what decoded before the input that failed: that one takes the
                # checks, in its place; the typed decode goes on after it.
                failed = base + len(events)
                self.hand_over(events, base)
                self.decode_each(failed, failed + 1)
                base = failed + 1
                failures += 1
                if failures > 4 and failures * self.GIVE_UP_RATIO > base:
                    self.decode_each(base, n)
                    return
                continue
            self.hand_over(events, base)
            return

    def hand_over(self, events: list[Any], base: int) -> None:
        """Give the typed rows ``events`` (inputs ``base``, ``base + 1``...) to their models' columns."""
        if not events:
            return
        kinds = set(map(type, events))
        if len(kinds) == 1:
            self.columns_of(type(events[0])).fast_blocks.append((range(base, base + len(events)), events))
            return
        per_kind: dict[type, tuple[list[int], list[Any]]] = {kind: ([], []) for kind in kinds}
        for index, event in enumerate(events, base):
            indexes, kind_events = per_kind[type(event)]
            indexes.append(index)
            kind_events.append(event)
        for kind, block in per_kind.items():
            self.columns_of(kind).fast_blocks.append(block)

    def columns_of(self, kind: type) -> _PredictionColumns:
        model_columns = self.fast_columns.get(kind)
        if model_columns is None:
            model = self.fast.models[kind]
            model_columns = self.columns.get(model.model_id)
            if model_columns is None:
                model_columns = self.columns[model.model_id] = _PredictionColumns(model.schema)
            model_columns.fast_model = model
            model_columns.fast_source = self.raws
            model_columns.fast_redo = self.redo
            self.fast_columns[kind] = model_columns
        return model_columns

    def redo(self, index: int) -> None:
        """Every check for input ``index`` (a typed row whose text has more colons than keys)."""
        _add_slowly(
            index,
            self.raws[index],
            self.schemas,
            self.max_bytes,
            self.max_event_id_length,
            self.columns,
            self.rejections,
        )

    def decode_each(self, start: int, stop: int) -> None:
        """Inputs ``start:stop`` one by one: orjson, then every check of :func:`decode_predictions`."""
        raws, schemas, columns, rejections = self.raws, self.schemas, self.columns, self.rejections
        max_bytes, max_event_id_length = self.max_bytes, self.max_event_id_length
        loads = _loads
        for index in range(start, stop):
            value = raws[index]
            # Fast path: bytes of a plain size, an object without repeated keys, with string ids of
            # a model seen in this batch.
            if (
                type(value) is bytes
                and 0 < (size := len(value)) <= max_bytes
                and (size <= MAX_DEPTH or value.count(b"[") + value.count(b"{") <= MAX_DEPTH)
            ):
                try:
                    obj = loads(value)
                except Exception:
                    obj = None
                if type(obj) is dict:
                    # _has_duplicate_keys, inlined for the usual event: the keys of its objects are as
                    # many as the colons in its text, so no key repeats (a call costs ~0.1 µs here).
                    features = obj.get("features")
                    prediction = obj.get("prediction")
                    segment = obj.get("segment")
                    keys = len(obj) + (len(features) if type(features) is dict else 0)
                    if type(prediction) is dict:
                        scores = prediction.get("scores")
                        keys += len(prediction) + (len(scores) if type(scores) is dict else 0)
                    keys += len(segment) if type(segment) is dict else 0
                    colons = value.count(b":")
                    if keys != colons:
                        # An RFC 3339 ts holds colons: without a backslash (92; an int is searched
                        # with memchr) the text has no escapes, so all of them are literal.
                        ts = obj.get("ts")
                        if (
                            type(ts) is not str or 92 in value or keys + ts.count(":") != colons
                        ) and _repeats_a_key(value, obj, keys):
                            obj = None
                if type(obj) is dict:
                    event_id = obj.get("event_id")
                    model_id = obj.get("model_id")
                    if (
                        type(event_id) is str
                        and 0 < len(event_id) <= max_event_id_length
                        and type(model_id) is str
                    ):
                        model_columns = columns.get(model_id)
                        if model_columns is not None:
                            try:
                                reason = model_columns.add(index, value, event_id, obj)
                            except Exception:  # pragma: no cover - see _add_slowly
                                reason = "malformed_json"
                            if reason is not None:
                                rejections.append(Rejection(index, reason, value))
                            continue
            _add_slowly(index, value, schemas, max_bytes, max_event_id_length, columns, rejections)


def _add_slowly(
    position: int,
    value: RawValue,
    schemas: Mapping[str, ModelSchema],
    max_bytes: int,
    max_event_id_length: int,
    columns: dict[str, _PredictionColumns],
    rejections: list[Rejection],
) -> None:
    """Every check of :func:`decode_predictions` on one input, for what its fast path did not take."""
    for index, raw, obj in _parsed_objects((value,), max_bytes, rejections, position):
        identity = _identity(obj, max_event_id_length)
        if isinstance(identity, str):
            rejections.append(Rejection(index, identity, raw))
            continue
        event_id, model_id = identity
        model_columns = columns.get(model_id)
        if model_columns is None:
            schema = schemas.get(model_id)
            if schema is None:
                rejections.append(Rejection(index, "unknown_model", raw))
                continue
            model_columns = columns[model_id] = _PredictionColumns(schema)
        try:
            reason = model_columns.add(index, raw, event_id, obj)
        except Exception:  # pragma: no cover - a decoder bug must cost one event, not the consumer
            reason = "malformed_json"
        if reason is not None:
            rejections.append(Rejection(index, reason, raw))


def _give_up(raws: Sequence[RawValue]) -> list[Rejection]:
    """Last resort after an unexpected internal error: reject every input, none is lost."""
    rejections = []
    for index, value in enumerate(raws):
        try:
            raw = b"" if value is None else bytes(value)
        except Exception:
            raw = b""
        rejections.append(Rejection(index, "malformed_json", raw))
    return rejections


# --- labels ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Classes:
    """What label validation needs of a schema, computed once per batch and model."""

    task: str
    positive: str
    negative: str | None
    known: frozenset[str] | None  # None: any class goes

    @classmethod
    def of(cls, schema: ModelSchema) -> _Classes:
        known = frozenset(schema.label_classes) if schema.label_classes else None
        return cls(schema.task, schema.positive_class, schema.negative_class, known)


def _label_value(label: Any, classes: _Classes) -> tuple[float, str] | str:
    """``(label, label_class)`` or the rejection reason."""
    if label is None:
        return "missing_field:label"
    kind = type(label)
    task = classes.task
    if task == "regression":
        if kind is not float and kind is not int:
            return "bad_type:label"
        number = _finite_number(label)
        return "non_finite:label" if number is None else (number, "")
    if kind is str:
        if task == "binary":
            if label == classes.positive:
                return 1.0, label
            return (0.0, label) if label == classes.negative else "unknown_class:label"
        if classes.known is not None and label not in classes.known:
            return "unknown_class:label"
        return math.nan, label
    if kind is float and not math.isfinite(label):
        return "non_finite:label"
    if task == "binary":
        if kind is bool or label in (0, 1):
            return (1.0, "1") if label else (0.0, "0")
        return "bad_type:label"
    if kind is int or (kind is float and label.is_integer()):
        name = str(int(label))
        if classes.known is not None and name not in classes.known:
            return "unknown_class:label"
        return math.nan, name
    return "bad_type:label"


def decode_labels(
    raws: Sequence[RawValue],
    schemas: Mapping[str, ModelSchema],
    max_bytes: int = MAX_MESSAGE_BYTES,
    *,
    max_event_id_length: int = MAX_EVENT_ID_LENGTH,
) -> tuple[dict[str, LabelBatch], list[Rejection]]:
    """Decode a batch of label events into one :class:`LabelBatch` per model; never raises.

    ``max_bytes`` and ``max_event_id_length`` bound inputs as in :func:`decode_predictions`. A
    classifier's label must be one of the schema's ``label_classes`` when it has them.

    >>> from stream_monitor.core.schema import ModelSchema
    >>> schemas = {"reg": ModelSchema("reg", "regression", ()), "bin": ModelSchema("bin", "binary", ())}
    >>> raws = [
    ...     b'{"event_id": "a", "model_id": "reg", "ts": 5, "label": 12.5}',
    ...     b'{"event_id": "b", "model_id": "bin", "ts": 5, "label": true}',
    ...     b'{"event_id": "c", "model_id": "reg", "ts": 5, "label": "12"}',
    ... ]
    >>> batches, rejections = decode_labels(raws, schemas)
    >>> batches["reg"].label.tolist(), batches["bin"].label.tolist(), batches["bin"].label_class
    ([12.5], [1.0], ['1'])
    >>> [(r.index, r.reason) for r in rejections]
    [(2, 'bad_type:label')]
    """
    rejections: list[Rejection] = []
    columns: dict[str, tuple[list[int], list[str], list[float], list[float], list[str]]] = {}
    classes_of: dict[str, _Classes] = {}
    try:
        for index, raw, obj in _parsed_objects(raws, max_bytes, rejections):
            identity = _identity(obj, max_event_id_length)
            if isinstance(identity, str):
                rejections.append(Rejection(index, identity, raw))
                continue
            event_id, model_id = identity
            schema = schemas.get(model_id)
            if schema is None:
                rejections.append(Rejection(index, "unknown_model", raw))
                continue
            ts = _ts_or_reason(obj.get("ts"))
            if isinstance(ts, str):
                rejections.append(Rejection(index, ts, raw))
                continue
            model_classes = classes_of.get(model_id)
            if model_classes is None:
                model_classes = classes_of[model_id] = _Classes.of(schema)
            label = _label_value(obj.get("label"), model_classes)
            if isinstance(label, str):
                rejections.append(Rejection(index, label, raw))
                continue
            model_columns = columns.get(model_id)
            if model_columns is None:
                model_columns = columns[model_id] = ([], [], [], [], [])
            indexes, event_ids, times, values, classes = model_columns
            indexes.append(index)
            event_ids.append(event_id)
            times.append(ts)
            values.append(label[0])
            classes.append(label[1])
    except Exception:  # pragma: no cover - a bug here must not stop the consumer
        return {}, _give_up(raws)
    batches = {
        model_id: LabelBatch(
            model_id=model_id,
            index=np.array(indexes, dtype=np.int64),
            event_id=event_ids,
            ts=np.array(times, dtype=np.float64),
            label=np.array(values, dtype=np.float64),
            label_class=classes,
        )
        for model_id, (indexes, event_ids, times, values, classes) in columns.items()
    }
    return batches, rejections
