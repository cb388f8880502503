"""Reading training data and reference profiles from files (an edge module: it touches the disk).

Training data comes as CSV, JSONL (flat rows, or prediction events in the contract's form with a
``features`` object) or Parquet (when pyarrow is installed). Rows become the same columnar
:class:`~stream_monitor.core.events.PredictionBatch` that live events decode to, so
:func:`~stream_monitor.core.reference.build_reference` profiles training and live data alike.

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

import csv
import math
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream_monitor.core.events import PredictionBatch, parse_ts
from stream_monitor.core.reference import ReferenceProfile, build_reference
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import DetectorSettings
from stream_monitor.errors import StreamMonitorError

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


def _category(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _class_name(value: Any) -> str | None:
    """A class label as the string the schema's ``positive_class`` is written in: 1, 1.0 and "1" agree."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip()):
        try:
            number = float(value)
        except ValueError:
            return str(value)
        if number.is_integer():
            return str(int(number))
    return str(value)


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


def _prediction(value: Any, schema: ModelSchema, where: str) -> tuple[float, str | None]:
    """(score, predicted class) from a prediction cell: number, string, or contract object."""
    if isinstance(value, Mapping):
        score = _number(value.get("score"), f"{where}.score")
        label = _class_name(value.get("label"))
        scores = value.get("scores")
        if isinstance(scores, Mapping) and scores:
            if schema.task == "binary" and math.isnan(score) and schema.positive_class in scores:
                score = _number(scores[schema.positive_class], f"{where}.scores")
            if schema.task == "multiclass" and label is None:
                label = str(max(scores, key=lambda k: _number(scores[k], f"{where}.scores")))
        return score, label
    if schema.task == "multiclass":
        return math.nan, _class_name(value)
    if schema.task == "binary" and isinstance(value, str):
        # A binary prediction written as a class ("yes", "1") is a decision without a score.
        try:
            return _number(value, where), None
        except TrainingDataError:
            return math.nan, _class_name(value)
    return _number(value, where), None


def read_training_rows(
    path: str | os.PathLike[str],
    schema: ModelSchema,
    *,
    label_column: str = "label",
    ts_column: str = "ts",
    prediction_column: str = "prediction",
) -> tuple[PredictionBatch, np.ndarray | None]:
    """Read a training file into a :class:`PredictionBatch` of ``schema``'s model, and its labels.

    The file type comes from the suffix: ``.csv`` (empty cell = missing), ``.jsonl``/``.ndjson``
    (flat rows or contract-form prediction events; events of other models are skipped), ``.parquet``
    (needs pyarrow). Labels are returned when ``label_column`` occurs in the file: float 1.0/0.0 for
    binary (1.0 = ``positive_class``), class strings (object array) for multiclass, values for
    regression; missing labels are NaN / None. A schema feature absent from the whole file, or a
    numeric cell that does not parse, raises :class:`TrainingDataError` naming file, line and column.

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
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"{path}: no such file")
    columns: dict[str, list[Any]] = {name: [] for name in (*schema.numeric_names, *schema.categorical_names)}
    seen_features: set[str] = set()
    unknown: set[str] = set()
    segments: dict[str, list[str | None]] = {key: [] for key in schema.segment_keys}
    line_numbers: list[int] = []
    event_ids: list[str] = []
    versions: list[str | None] = []
    ts_cells: list[Any] = []
    prediction_cells: list[Any] = []
    label_cells: list[Any] = []
    has_labels = False
    reserved = {label_column, ts_column, prediction_column, *_EVENT_FIELDS}

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
            values.append(_category(segment_source.get(key, features.get(key))))
        line_numbers.append(line_number)
        event_ids.append(str(row.get("event_id", f"{path.name}:{line_number}")))
        versions.append(_category(row.get("model_version")))
        ts_cells.append(row.get(ts_column))
        prediction_cells.append(row.get(prediction_column))
        label_cells.append(row.get(label_column))
        has_labels = has_labels or label_column in row

    absent = [name for name in columns if name not in seen_features]
    if absent and line_numbers:
        raise TrainingDataError(f"{path}: feature column(s) {', '.join(absent)} not found in any row")

    def where(i: int, column: str) -> str:
        return f"{path}:{line_numbers[i]}: column {column!r}"

    numeric = np.array(
        [[_number(v, where(i, name)) for i, v in enumerate(columns[name])] for name in schema.numeric_names],
        dtype=np.float64,
    ).reshape(len(schema.numeric_names), len(line_numbers))
    categorical = [[_category(v) for v in columns[name]] for name in schema.categorical_names]

    ts = np.empty(len(ts_cells))
    for i, cell in enumerate(ts_cells):
        if cell is None or cell == "":
            ts[i] = math.nan
            continue
        parsed = parse_ts(_number(cell, where(i, ts_column)) if _looks_numeric(cell) else cell)
        if parsed is None:
            raise TrainingDataError(f"{where(i, ts_column)}: {cell!r} is not a timestamp")
        ts[i] = parsed

    predictions = [
        _prediction(cell, schema, where(i, prediction_column)) for i, cell in enumerate(prediction_cells)
    ]
    score = np.array([s for s, _ in predictions], dtype=np.float64)
    pred_label = [label for _, label in predictions]

    labels: np.ndarray | None = None
    if has_labels:
        if schema.task == "regression":
            labels = np.array([_number(v, where(i, label_column)) for i, v in enumerate(label_cells)])
        elif schema.task == "binary":
            names = [_class_name(v) for v in label_cells]
            labels = np.array([math.nan if n is None else float(n == schema.positive_class) for n in names])
        else:
            labels = np.array([_class_name(v) for v in label_cells], dtype=object)

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
    return batch, labels


def _looks_numeric(cell: Any) -> bool:
    """CSV writes epoch seconds as text; a string that parses as a float is one, not RFC 3339."""
    if isinstance(cell, int | float) and not isinstance(cell, bool):
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
    label_column: str = "label",
    ts_column: str = "ts",
    prediction_column: str = "prediction",
    version: int = 1,
    bins: int = DetectorSettings.bins,
    top_k: int = DetectorSettings.top_k,
    sample_size: int = DetectorSettings.reference_sample,
    seed: int = 0,
    created_at: float | None = None,
) -> ReferenceProfile:
    """Read a training file, build its reference profile, write it as JSON to ``output_path``.

    ``created_at`` defaults to the wall clock (this is an edge module); ``version`` numbers
    successive references of the model.

    >>> import tempfile, pathlib
    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "t.csv").write_text("x,prediction,label\\n1,2,1\\n2,2,4\\n")
    >>> ref = build_reference_file(folder / "t.csv", schema, folder / "ref.json", bins=2, created_at=0.0)
    >>> ref.baseline, read_reference(folder / "ref.json") == ref
    ({'mae': 1.5, 'rmse': 1.5811388300841898, 'mean_error': -0.5}, True)
    """
    batch, labels = read_training_rows(
        data_path, schema, label_column=label_column, ts_column=ts_column, prediction_column=prediction_column
    )
    if len(batch.ts) == 0:
        raise TrainingDataError(f"{data_path}: no rows for model {schema.model_id!r}")
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
