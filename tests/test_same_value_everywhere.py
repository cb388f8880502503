"""The same value means the same thing from every source: live JSON, CSV, JSONL and Parquet.

One normalisation (``stream_monitor.core.categories.normalize_category``) is used by the live decoder,
the training-file reader and the profile loader. The property test writes the same rows the way real
data gets written (pandas ``to_csv`` / ``to_parquet``, pyarrow, JSON lines) and sends them as live
events: every source must give the same batch columns, the same reference profile and the same window
sketch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_monitor.core.categories import NotACategory, normalize_category
from stream_monitor.core.events import PredictionBatch, decode_predictions
from stream_monitor.core.reference import CategoricalProfile, ReferenceProfile, build_reference
from stream_monitor.core.schema import FeatureSpec, ModelSchema
from stream_monitor.core.sketches import WindowSketch
from stream_monitor.offline.reference_io import read_reference, read_training_rows

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SCHEMA = ModelSchema(
    "m",
    "binary",
    (
        FeatureSpec("x", "numeric"),
        FeatureSpec("flag", "categorical"),
        FeatureSpec("code", "categorical"),
        FeatureSpec("ratio", "categorical"),
        FeatureSpec("city", "categorical"),
    ),
)
CATEGORICAL = SCHEMA.categorical_names


# --- the rule ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "spelled"),
    [
        (True, "true"),
        (False, "false"),
        ("True", "true"),
        ("FALSE", "false"),
        (" true\n", "true"),
        (1, "1"),
        (1.0, "1"),
        ("1", "1"),
        ("1.0", "1"),
        (" 1.00 ", "1"),
        ("1e0", "1"),
        (-0.0, "0"),
        ("-0", "0"),
        (2.5, "2.5"),
        ("2.50", "2.5"),
        (1e20, "100000000000000000000"),
        ("1e20", "100000000000000000000"),
        (10**20, "100000000000000000000"),
        (np.int64(3), "3"),
        (np.float64(3.0), "3"),
        (np.bool_(True), "true"),
        ("Oslo", "Oslo"),
        ("  Oslo ", "Oslo"),
        ("01", "01"),  # not a JSON number: a postcode keeps its spelling
        ("+1", "+1"),
        ("1e400", "1e400"),  # not a finite number: text
        ("nan", "nan"),
        ("yes", "yes"),
        ("", None),
        ("   ", None),
        (None, None),
        (math.nan, None),  # pandas' missing value
    ],
)
def test_one_spelling(value: Any, spelled: str | None) -> None:
    assert normalize_category(value) == spelled


@pytest.mark.parametrize("value", [[1], {"a": 1}, math.inf, -math.inf, b"x"])
def test_what_is_not_a_category(value: Any) -> None:
    with pytest.raises(NotACategory):
        normalize_category(value)


@given(st.one_of(st.text(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans()))
def test_the_spelling_is_a_fixed_point(value: Any) -> None:
    spelled = normalize_category(value)
    assert spelled is None or normalize_category(spelled) == spelled


def test_live_events_are_spelled_like_training_files() -> None:
    events = [
        {"flag": True, "code": 1, "ratio": 0.5, "city": " Oslo "},
        {"flag": "True", "code": 1.0, "ratio": "0.50", "city": "Oslo"},
        {"flag": "true", "code": "1.0", "ratio": 0.5, "city": ""},
    ]
    raws = [
        orjson.dumps(
            {"event_id": str(i), "model_id": "m", "ts": i, "features": {"x": 1, **f}, "prediction": 0.5}
        )
        for i, f in enumerate(events)
    ]
    batches, rejections = decode_predictions(raws, {"m": SCHEMA})
    assert rejections == []
    assert batches["m"].categorical == [["true"] * 3, ["1"] * 3, ["0.5"] * 3, ["Oslo", "Oslo", None]]


def test_a_profile_written_before_normalisation_still_matches_live_events(tmp_path: Path) -> None:
    """Old profiles held "True" (from CSV) while live events say true: read back, they agree."""
    old = ReferenceProfile(
        1,
        "m",
        n_events=20,
        categorical={
            "flag": CategoricalProfile(["True", "False", "true"], np.array([8, 6, 2, 0]), 0.2),
            "code": CategoricalProfile(["1.0", "2.0"], np.array([10, 10, 0]), 0.0),
            "ratio": CategoricalProfile([], np.array([20]), 0.0),
            "city": CategoricalProfile(["Oslo", " "], np.array([15, 1, 0]), 0.0),
        },
    )
    path = tmp_path / "old.reference.json"
    path.write_bytes(orjson.dumps(old.to_dict()))  # the JSON as an older build wrote it
    loaded = read_reference(path)
    flag = loaded.categorical["flag"]
    assert (flag.categories, flag.counts.tolist(), flag.missing_rate) == (["true", "false"], [10, 6, 0], 0.2)
    assert loaded.categorical["code"].categories == ["1", "2"]
    city = loaded.categorical["city"]  # " " is now missing: 1 of the 16 events
    assert city.categories == ["Oslo"] and city.missing_rate == pytest.approx(1 / 16)

    raw = orjson.dumps(
        {
            "event_id": "e",
            "model_id": "m",
            "ts": 1,
            "prediction": 0.5,
            "features": {"x": 1, "flag": True, "code": 1, "ratio": 1, "city": "Oslo"},
        }
    )
    sketch = WindowSketch(SCHEMA, loaded)
    sketch.update(decode_predictions([raw], {"m": SCHEMA})[0]["m"])
    assert [c.tolist() for c in sketch.categorical_counts[:2]] == [[1, 0, 0], [1, 0, 0]]
    assert sketch.new_categories[:2] == [{}, {}]  # not "__other__": no spurious new category


# --- the property: every source, the same sketch ------------------------------------------------------

_TEXTS = st.sampled_from(
    [
        "pro",
        " pro",
        "pro ",
        "Oslo",
        "True",
        "false",
        "FALSE",
        "1",
        "1.0",
        " 2.50 ",
        "01",
        "1e3",
        "",
        " ",
        "nan",
    ]
)


@st.composite
def rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Rows of one type per column, as a DataFrame or Parquet file can hold them."""
    n = draw(st.integers(1, 12))
    # |int| < 2**53: pandas turns an integer column with a gap into float64, which holds these exactly.
    ints = st.integers(-(2**53) + 1, 2**53 - 1)
    floats = st.one_of(
        st.sampled_from([1.0, 2.0, 0.5, -0.0, 1e20, 2.5]), st.floats(allow_nan=False, allow_infinity=False)
    )
    texts = st.one_of(_TEXTS, st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=6))
    # One type per column, as in a file: x (numeric for the model) is all integers or all floats.
    numbers = st.integers(-1000, 1000) if draw(st.booleans()) else st.floats(-1e6, 1e6, allow_nan=False)
    column = {
        "x": st.one_of(st.none(), numbers),
        "flag": st.one_of(st.none(), st.booleans()),
        "code": st.one_of(st.none(), ints),
        "ratio": st.one_of(st.none(), floats),
        "city": st.one_of(st.none(), texts),
    }
    return [
        {name: draw(strategy) for name, strategy in column.items()}
        | {"ts": 1_700_000_000 + i, "prediction": 0.5}
        for i in range(n)
    ]


def _sources(tmp: Path, table: list[dict[str, Any]]) -> dict[str, PredictionBatch]:
    frame = pd.DataFrame(table)
    frame.to_csv(tmp / "pandas.csv", index=False)
    frame.to_parquet(tmp / "pandas.parquet", index=False)
    pq.write_table(pa.Table.from_pylist(table), tmp / "pyarrow.parquet")
    (tmp / "rows.jsonl").write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in table))
    batches = {
        name: read_training_rows(tmp / name, SCHEMA)[0]
        for name in ("pandas.csv", "pandas.parquet", "pyarrow.parquet", "rows.jsonl")
    }
    events = [
        orjson.dumps(
            {
                "event_id": f"e{i}",
                "model_id": "m",
                "ts": row["ts"],
                "prediction": row["prediction"],
                "features": {name: row[name] for name in ("x", *CATEGORICAL)},
            }
        )
        for i, row in enumerate(table)
    ]
    decoded, rejections = decode_predictions(events, {"m": SCHEMA})
    assert rejections == []
    batches["live"] = decoded["m"]
    return batches


def _sketch(batch: PredictionBatch, reference: ReferenceProfile) -> dict[str, Any]:
    sketch = WindowSketch(SCHEMA, reference)
    sketch.update(batch)
    return {
        "categorical_counts": [c.tolist() for c in sketch.categorical_counts],
        "categorical_missing": sketch.categorical_missing.tolist(),
        "new_categories": sketch.new_categories,
        "numeric_counts": sketch.numeric_counts.tolist(),
        "numeric_missing": sketch.numeric_missing.tolist(),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows())
def test_the_same_rows_give_the_same_sketch_from_every_source(
    tmp_path: Path, table: list[dict[str, Any]]
) -> None:
    batches = _sources(tmp_path, table)
    live = batches["live"]
    reference = build_reference(SCHEMA, live, bins=4)
    expected = _sketch(live, reference)
    for name, batch in batches.items():
        assert batch.categorical == live.categorical, name
        np.testing.assert_array_equal(batch.numeric, live.numeric, err_msg=name)
        assert build_reference(SCHEMA, batch, bins=4) == reference, name
        assert _sketch(batch, reference) == expected, name
    # And a reference built from a file counts live events in its own categories, none as new.
    from_csv = build_reference(SCHEMA, batches["pandas.csv"], bins=4)
    assert all(not new for new in _sketch(live, from_csv)["new_categories"])
