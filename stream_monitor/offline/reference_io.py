"""Reading training data and reference profiles from files (an edge module: it touches the disk).

Training data comes as CSV, JSONL (flat rows, or prediction events in the contract's form with a
``features`` object) or Parquet (when pyarrow is installed). Rows become the same columnar
:class:`~stream_monitor.core.events.PredictionBatch` that live events decode to, so
:func:`~stream_monitor.core.reference.build_reference` profiles training and live data alike: every
categorical value goes through the decoder's own
:func:`~stream_monitor.core.categories.normalize_category` (a CSV's ``True`` and ``1.0`` are a live
event's ``true`` and ``1``).

Event time (:func:`training_ts`) may be what pandas writes: a zone-less ``2011-01-01 00:00:00`` (read in
the configured time zone, UTC by default), RFC 3339 with an offset, a Parquet timestamp, or an epoch
number — seconds, or milliseconds when its magnitude is at least :data:`EPOCH_MS_FROM` (``1e11``:
as seconds that is the year 5138, as milliseconds 1973-03-03; pandas' ``to_json`` writes milliseconds).

>>> import tempfile, pathlib
>>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
>>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "train.csv").write_text("x,prediction,label\\n1,2.0,1.5\\n,3.0,3.0\\n")
>>> batch, labels = read_training_rows(folder / "train.csv", schema)
>>> batch.numeric.tolist(), batch.score.tolist(), labels.tolist()
([[1.0, nan]], [2.0, 3.0], [1.5, 3.0])
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream_monitor.config import time_zone as zone_named
from stream_monitor.core.categories import NotACategory, normalize_category
from stream_monitor.core.events import PredictionBatch, parse_ts
from stream_monitor.core.reference import ReferenceProfile, build_reference
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import DetectorSettings, TrainingDataSettings
from stream_monitor.errors import StreamMonitorError

log = logging.getLogger("stream_monitor.reference")

#: An epoch number of at least this magnitude is milliseconds, below it seconds (module docstring).
EPOCH_MS_FROM = 1e11
_DEFAULTS = TrainingDataSettings()

#: Top-level fields of a contract-form prediction event that are not features.
_EVENT_FIELDS = frozenset(
    {"event_id", "model_id", "model_version", "ts", "features", "prediction", "segment"}
)

_TRUE_STRINGS = frozenset({"true", "True", "TRUE"})
_FALSE_STRINGS = frozenset({"false", "False", "FALSE"})


class TrainingDataError(StreamMonitorError):
    """A training file that cannot be read; the message names the file, and the line and column if any."""


def _number(value: Any, where: str) -> float:
    """A numeric cell as float; missing (None, "", "nan") is NaN, anything unparseable is an error."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text == "":
            return math.nan
        if text in _TRUE_STRINGS or text in _FALSE_STRINGS:
            return 1.0 if text in _TRUE_STRINGS else 0.0
        try:
            number = float(text)
        except ValueError:
            raise TrainingDataError(f"{where}: {value!r} is not a number") from None
    else:
        raise TrainingDataError(f"{where}: {type(value).__name__} is not a number")
    if math.isinf(number):
        raise TrainingDataError(f"{where}: {value!r} is not finite")
    return number


def _category(value: Any, where: str) -> str | None:
    try:
        return normalize_category(value)
    except NotACategory:
        raise TrainingDataError(
            f"{where}: {value!r} is not a category (text, a boolean or a number)"
        ) from None


def _segment(value: Any) -> str | None:
    """A segment value: as a live event's segment taken from a feature, anything else is missing."""
    try:
        return normalize_category(value)
    except NotACategory:
        return None


def _class_name(value: Any, where: str) -> str | None:
    """A class label in its one spelling: 1, 1.0 and "1" agree; a boolean is the class "1" or "0"."""
    if isinstance(value, bool | np.bool_):
        return "1" if value else "0"
    return _category(value, where)


def _binary_class(value: Any, schema: ModelSchema, where: str) -> str | None:
    """A binary model's class: one of its two, or true/1 (the positive class), false/0 (the negative
    one), as the decoder reads a live label; anything else is an error rather than a silent negative."""
    name = _class_name(value, where)
    if name is None or name in schema.label_classes:
        return name
    if name in ("1", "true"):
        return schema.positive_class
    if name in ("0", "false"):
        return schema.negative_class
    classes = ", ".join(repr(c) for c in schema.label_classes)
    raise TrainingDataError(f"{where}: {value!r} is not a class of the model ({classes}, or true/false, 1/0)")


def training_ts(cell: Any, zone: dt.tzinfo, where: str) -> float:
    """Event time of a training cell as epoch seconds (NaN when empty); see the module docstring.

    >>> utc = dt.UTC
    >>> [training_ts(c, utc, "t") for c in ("2011-01-01 00:00:00", "1293840000", 1293840000000, None)]
    [1293840000.0, 1293840000.0, 1293840000.0, nan]
    >>> training_ts(dt.datetime(2011, 1, 1, 1), dt.timezone(dt.timedelta(hours=1)), "t")
    1293840000.0
    """
    if cell is None or (isinstance(cell, str) and not cell.strip()):
        return math.nan
    parsed: float | None
    if isinstance(cell, dt.datetime):  # Parquet timestamps (pandas' Timestamp is one too)
        moment = cell if cell.tzinfo is not None else cell.replace(tzinfo=zone)
        parsed = moment.timestamp()
    elif isinstance(cell, dt.date):  # a Parquet date: its midnight
        parsed = dt.datetime(cell.year, cell.month, cell.day, tzinfo=zone).timestamp()
    elif _looks_numeric(cell):
        number = _number(cell, where)
        parsed = parse_ts(number / 1000.0 if abs(number) >= EPOCH_MS_FROM else number)
    else:
        parsed = parse_ts(cell.strip(), zone) if isinstance(cell, str) else None
    if parsed is None or math.isnan(parsed):
        raise TrainingDataError(
            f"{where}: {cell!r} is not a timestamp (RFC 3339, '2011-01-01 00:00:00' in the configured time "
            f"zone, or epoch seconds — milliseconds from {EPOCH_MS_FROM:g} — within years 1-9999)"
        )
    return parsed


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            yield reader.line_num, row


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise TrainingDataError(f"{path}:{line_number}: malformed JSON ({exc})") from None
            if not isinstance(row, dict):
                raise TrainingDataError(f"{path}:{line_number}: a row must be a JSON object")
            yield line_number, row


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise TrainingDataError(
            f"{path}: reading Parquet needs pyarrow; install it with pip install 'stream-monitor[parquet]'"
        ) from None
    yield from enumerate(pq.read_table(path).to_pylist(), start=1)


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_rows(path)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _jsonl_rows(path)
    if suffix in (".parquet", ".pq"):
        return _parquet_rows(path)
    raise TrainingDataError(
        f"{path}: unknown training file type {suffix!r} (expected .csv, .jsonl, .parquet)"
    )


def _predicted_class(value: Any, schema: ModelSchema, where: str) -> str | None:
    if schema.task == "binary":
        return _binary_class(value, schema, where)
    return _class_name(value, where)


def _prediction(value: Any, schema: ModelSchema, where: str) -> tuple[float, str | None]:
    """(score, predicted class) from a prediction cell: number, string, or contract object."""
    if isinstance(value, Mapping):
        score = _number(value.get("score"), f"{where}.score")
        label = None if schema.task == "regression" else _predicted_class(value.get("label"), schema, where)
        scores = value.get("scores")
        if isinstance(scores, Mapping) and scores:
            if schema.task == "binary" and math.isnan(score) and schema.positive_class in scores:
                score = _number(scores[schema.positive_class], f"{where}.scores")
            if schema.task == "multiclass" and label is None:
                label = str(max(scores, key=lambda k: _number(scores[k], f"{where}.scores")))
        return score, label
    if schema.task == "multiclass":
        return math.nan, _class_name(value, where)
    if schema.task == "binary" and isinstance(value, str):
        # A binary prediction written as a class ("yes", "1") is a decision without a score.
        try:
            return _number(value, where), None
        except TrainingDataError:
            return math.nan, _binary_class(value, schema, where)
    return _number(value, where), None


@dataclass
class TrainingData:
    """A training file read for one model: the batch and labels, and which optional columns it had.

    ``labels`` is None without a label column; ``ignored`` lists the columns nothing read (sorted).
    """

    batch: PredictionBatch
    labels: np.ndarray | None
    has_predictions: bool
    has_prediction_labels: bool
    ignored: list[str]


def read_training_rows(
    path: str | os.PathLike[str], schema: ModelSchema, training: TrainingDataSettings = _DEFAULTS
) -> tuple[PredictionBatch, np.ndarray | None]:
    """Read a training file into a :class:`PredictionBatch` of ``schema``'s model, and its labels.

    The file type comes from the suffix: ``.csv`` (empty cell = missing), ``.jsonl``/``.ndjson``
    (flat rows or contract-form prediction events; events of other models are skipped), ``.parquet``
    (needs pyarrow). Labels are returned when ``label_column`` occurs in the file: float 1.0/0.0 for
    binary (1.0 = ``positive_class``), class strings (object array) for multiclass, values for
    regression; missing labels are NaN / None. The column names and the zone of zone-less times come
    from ``training`` (:class:`~stream_monitor.core.settings.TrainingDataSettings`); its
    ``prediction_label_column`` holds the predicted class apart from the score (binary: one of the
    model's classes, true/false or 1/0). A schema feature (or the named predicted-class column)
    absent from the whole file, a cell that does not parse, or a binary label that is not a class
    raises :class:`TrainingDataError` naming file, line and column.

    >>> import tempfile, pathlib
    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> schema = ModelSchema("m", "binary", (FeatureSpec("city", "categorical"),))
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "train.jsonl"
    >>> _ = path.write_bytes(b'{"city": "Oslo", "prediction": 0.9, "label": 1}\\n'
    ...                      b'{"city": null, "label": 0}\\n')
    >>> batch, labels = read_training_rows(path, schema)
    >>> batch.categorical, batch.score.tolist(), labels.tolist()
    ([['Oslo', None]], [0.9, nan], [1.0, 0.0])
    """
    data = read_training_data(path, schema, training)
    return data.batch, data.labels


def read_training_data(
    path: str | os.PathLike[str], schema: ModelSchema, training: TrainingDataSettings = _DEFAULTS
) -> TrainingData:
    """:func:`read_training_rows`, and which of the optional columns the file had.

    >>> import tempfile, pathlib
    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> schema = ModelSchema("m", "binary", (FeatureSpec("x", "numeric"),))
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = path.write_text("x,y_score,y_pred,y_true,note\\n1,0.4,1,True,a\\n")
    >>> columns = TrainingDataSettings(
    ...     prediction_column="y_score", prediction_label_column="y_pred", label_column="y_true")
    >>> data = read_training_data(path, schema, columns)
    >>> data.batch.score.tolist(), data.batch.pred_label, data.labels.tolist(), data.ignored
    ([0.4], ['1'], [1.0], ['note'])
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"{path}: no such file")
    label_column, ts_column, prediction_column = (
        training.label_column,
        training.ts_column,
        training.prediction_column,
    )
    prediction_label_column = training.prediction_label_column
    try:
        zone = zone_named(training.time_zone)
    except ValueError as exc:
        raise TrainingDataError(f"time zone: {exc}") from None
    columns: dict[str, list[Any]] = {name: [] for name in (*schema.numeric_names, *schema.categorical_names)}
    seen_features: set[str] = set()
    unknown: set[str] = set()
    segments: dict[str, list[str | None]] = {key: [] for key in schema.segment_keys}
    line_numbers: list[int] = []
    event_ids: list[str] = []
    versions: list[str | None] = []
    ts_cells: list[Any] = []
    prediction_cells: list[Any] = []
    pred_label_cells: list[Any] = []
    label_cells: list[Any] = []
    has_labels = has_predictions = has_pred_labels = False
    reserved = {label_column, ts_column, prediction_column, *_EVENT_FIELDS}
    if prediction_label_column is not None:
        reserved.add(prediction_label_column)

    for line_number, row in _rows(path):
        features = row.get("features")
        if isinstance(features, dict):
            model_id = row.get("model_id")
            if model_id is not None and model_id != schema.model_id:
                continue
            segment = row.get("segment")
            segment_source: Mapping[str, Any] = segment if isinstance(segment, dict) else features
        else:
            features = row
            segment_source = row
        for name, values in columns.items():
            values.append(features.get(name))
        seen_features.update(name for name in columns if name in features)
        unknown.update(name for name in features if name not in columns and name not in reserved)
        for key, values in segments.items():
            values.append(_segment(segment_source.get(key, features.get(key))))
        line_numbers.append(line_number)
        event_ids.append(str(row.get("event_id", f"{path.name}:{line_number}")))
        version = row.get("model_version")
        # A version is a name, not a category: "1.10" must not become "1.1".
        versions.append(None if version is None or version == "" else str(version))
        ts_cells.append(row.get(ts_column))
        prediction_cells.append(row.get(prediction_column))
        label_cells.append(row.get(label_column))
        has_labels = has_labels or label_column in row
        has_predictions = has_predictions or prediction_column in row
        if prediction_label_column is not None:
            pred_label_cells.append(row.get(prediction_label_column))
            has_pred_labels = has_pred_labels or prediction_label_column in row

    absent = [name for name in columns if name not in seen_features]
    if absent and line_numbers:
        raise TrainingDataError(f"{path}: feature column(s) {', '.join(absent)} not found in any row")
    if prediction_label_column is not None and line_numbers and not has_pred_labels:
        raise TrainingDataError(
            f"{path}: predicted-class column {prediction_label_column!r} not found in any row"
        )

    def where(i: int, column: str) -> str:
        return f"{path}:{line_numbers[i]}: column {column!r}"

    numeric = np.array(
        [[_number(v, where(i, name)) for i, v in enumerate(columns[name])] for name in schema.numeric_names],
        dtype=np.float64,
    ).reshape(len(schema.numeric_names), len(line_numbers))
    categorical = [
        [_category(v, where(i, name)) for i, v in enumerate(columns[name])]
        for name in schema.categorical_names
    ]
    ts = np.array([training_ts(cell, zone, where(i, ts_column)) for i, cell in enumerate(ts_cells)])

    predictions = [
        _prediction(cell, schema, where(i, prediction_column)) for i, cell in enumerate(prediction_cells)
    ]
    score = np.array([s for s, _ in predictions], dtype=np.float64)
    pred_label = [label for _, label in predictions]
    if prediction_label_column is not None and schema.task != "regression":
        for i, cell in enumerate(pred_label_cells):
            # The column is the model's own decision: it wins over a class the prediction cell implied.
            predicted = _predicted_class(cell, schema, where(i, prediction_label_column))
            if predicted is not None:
                pred_label[i] = predicted

    labels: np.ndarray | None = None
    if has_labels:
        if schema.task == "regression":
            labels = np.array([_number(v, where(i, label_column)) for i, v in enumerate(label_cells)])
        elif schema.task == "binary":
            names = [_binary_class(v, schema, where(i, label_column)) for i, v in enumerate(label_cells)]
            labels = np.array([math.nan if n is None else float(n == schema.positive_class) for n in names])
        else:
            labels = np.array(
                [_class_name(v, where(i, label_column)) for i, v in enumerate(label_cells)], dtype=object
            )

    batch = PredictionBatch(
        model_id=schema.model_id,
        index=np.arange(len(line_numbers), dtype=np.int64),
        event_id=event_ids,
        ts=ts,
        model_version=versions,
        numeric=numeric,
        categorical=categorical,
        score=score,
        pred_label=pred_label,
        segments=segments,
        unknown_features=len(unknown),
    )
    return TrainingData(batch, labels, has_predictions, has_pred_labels, sorted(unknown))


def _looks_numeric(cell: Any) -> bool:
    """CSV writes epoch seconds as text; a string that parses as a float is one, not RFC 3339."""
    if isinstance(cell, bool):
        return False
    if isinstance(cell, int | float | np.integer | np.floating):
        return True
    if isinstance(cell, str):
        try:
            float(cell)
        except ValueError:
            return False
        return True
    return False


def write_reference(profile: ReferenceProfile, path: str | os.PathLike[str]) -> None:
    """Write a profile as JSON, atomically (a reader never sees half a file).

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ref.json"
    >>> write_reference(ReferenceProfile(1, "m"), path)
    >>> read_reference(path) == ReferenceProfile(1, "m")
    True
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(profile.to_json())
    os.replace(partial, path)


def read_reference(path: str | os.PathLike[str]) -> ReferenceProfile:
    """Read a profile written by :func:`write_reference`; a bad file raises StateError naming it.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ref.json"
    >>> _ = path.write_bytes(b"{}")
    >>> read_reference(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream_monitor.errors.StateError: .../ref.json: bad profile: format None, expected 1
    """
    path = Path(path)
    try:
        return ReferenceProfile.from_json(path.read_bytes())
    except StreamMonitorError as exc:
        raise type(exc)(f"{path}: {exc}") from exc


def build_reference_file(
    data_path: str | os.PathLike[str],
    schema: ModelSchema,
    output_path: str | os.PathLike[str],
    *,
    training: TrainingDataSettings = _DEFAULTS,
    version: int = 1,
    bins: int = DetectorSettings.bins,
    top_k: int = DetectorSettings.top_k,
    sample_size: int = DetectorSettings.reference_sample,
    seed: int = 0,
    created_at: float | None = None,
) -> ReferenceProfile:
    """Read a training file, build its reference profile, write it as JSON to ``output_path``.

    ``training`` names the file's columns (see :func:`read_training_rows`). ``created_at`` defaults
    to the wall clock (this is an edge module); ``version`` numbers successive references of the
    model. A file without a prediction or label column still gives a profile; what it lacks (and the
    columns nothing read, which may be the ones meant) is logged as a warning.

    >>> import tempfile, pathlib
    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "t.csv").write_text("x,prediction,label\\n1,2,1\\n2,2,4\\n")
    >>> ref = build_reference_file(folder / "t.csv", schema, folder / "ref.json", bins=2, created_at=0.0)
    >>> ref.baseline, read_reference(folder / "ref.json") == ref
    ({'mae': 1.5, 'rmse': 1.5811388300841898, 'mean_error': -0.5}, True)
    """
    data = read_training_data(data_path, schema, training)
    batch, labels = data.batch, data.labels
    if len(batch.ts) == 0:
        raise TrainingDataError(f"{data_path}: no rows for model {schema.model_id!r}")
    for warning in missing_column_warnings(data, schema, training, data_path):
        log.warning("%s", warning)
    profile = build_reference(
        schema,
        batch,
        labels,
        bins=bins,
        top_k=top_k,
        sample_size=sample_size,
        seed=seed,
        created_at=time.time() if created_at is None else created_at,
    )
    profile.version = version
    write_reference(profile, output_path)
    return profile


def add_training_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags naming a training file's columns (``reference build``, ``calibrate``); each one
    overrides the model's ``training:`` setting of the same name (:func:`training_data_settings`)."""
    d = _DEFAULTS
    group = parser.add_argument_group(
        "training file", "override the model's training: section of the configuration"
    )
    group.add_argument("--ts-column", help=f"event time column (default {d.ts_column!r})")
    group.add_argument(
        "--prediction-column", help=f"score / value / class column (default {d.prediction_column!r})"
    )
    group.add_argument(
        "--prediction-label-column",
        help="a binary model's predicted-class column, when apart from the score (default: none)",
    )
    group.add_argument("--label-column", help=f"true outcome column (default {d.label_column!r})")
    group.add_argument(
        "--time-zone",
        help=f"IANA zone of zone-less times such as 2011-01-01 00:00:00 (default {d.time_zone!r})",
    )


def training_data_settings(
    args: argparse.Namespace, configured: TrainingDataSettings
) -> TrainingDataSettings:
    """The model's configured training-file settings with the flags given on the command line.

    >>> args = argparse.Namespace(ts_column=None, prediction_column=None, prediction_label_column="y_pred",
    ...                           label_column="y_true", time_zone=None)
    >>> s = training_data_settings(args, TrainingDataSettings(ts_column="when"))
    >>> s.ts_column, s.prediction_label_column, s.label_column
    ('when', 'y_pred', 'y_true')
    """
    names = [f.name for f in dataclasses.fields(TrainingDataSettings)]
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    return dataclasses.replace(configured, **given)


def missing_column_warnings(
    data: TrainingData, schema: ModelSchema, training: TrainingDataSettings, path: str | os.PathLike[str]
) -> list[str]:
    """What a reference built from ``data`` lacks because of a column the file does not have.

    Without these a file whose columns are called ``y_pred`` and ``y_true`` silently gave a profile
    with ``baseline {}``. Each message names the column looked for and how to name another one.

    >>> from types import SimpleNamespace
    >>> data = SimpleNamespace(labels=None, has_predictions=True, ignored=["y_true"])
    >>> missing_column_warnings(data, ModelSchema("m", "regression", ()), TrainingDataSettings(), "t.csv")
    ["t.csv: no label column 'label' (--label-column, or the model's training.label_column): the \
reference has no performance baseline (live metrics are then compared with the first joined labels' \
instead); columns not read: y_true"]
    """
    warnings = []
    unread = f"; columns not read: {', '.join(data.ignored)}" if data.ignored else ""
    if not data.has_predictions:
        warnings.append(
            f"{path}: no prediction column {training.prediction_column!r} (--prediction-column, or the "
            "model's training.prediction_column): the reference has no prediction-drift profile and no "
            f"performance baseline{unread}"
        )
    elif data.labels is None:
        warnings.append(
            f"{path}: no label column {training.label_column!r} (--label-column, or the model's "
            "training.label_column): the reference has no performance baseline (live metrics are then "
            f"compared with the first joined labels' instead){unread}"
        )
    return warnings
