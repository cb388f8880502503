"""Known-answer tests for reference profiles (numpy / brute-force oracles) and training-file reading."""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from stream_monitor.core.events import PredictionBatch
from stream_monitor.core.reference import (
    OTHER,
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    ReferenceWarmup,
    build_reference,
)
from stream_monitor.core.schema import FeatureSpec, ModelSchema
from stream_monitor.errors import StateError
from stream_monitor.offline.reference_io import (
    TrainingDataError,
    build_reference_file,
    read_reference,
    read_training_rows,
)


def make_batch(
    schema: ModelSchema,
    numeric: np.ndarray,
    categorical: list[list[str | None]],
    score: np.ndarray,
    pred_label: list[str | None] | None = None,
    ts: np.ndarray | None = None,
) -> PredictionBatch:
    n = len(score)
    return PredictionBatch(
        model_id=schema.model_id,
        index=np.arange(n, dtype=np.int64),
        event_id=[str(i) for i in range(n)],
        ts=np.arange(n, dtype=np.float64) if ts is None else ts,
        model_version=[None] * n,
        numeric=np.asarray(numeric, dtype=np.float64).reshape(len(schema.numeric_names), n),
        categorical=categorical,
        score=np.asarray(score, dtype=np.float64),
        pred_label=[None] * n if pred_label is None else pred_label,
        segments={},
        unknown_features=0,
    )


BINARY = ModelSchema(
    "churn",
    "binary",
    (
        FeatureSpec("age", "numeric", key=True),
        FeatureSpec("spend", "numeric"),
        FeatureSpec("plan", "categorical"),
    ),
)


def random_binary_batch(n: int, seed: int) -> tuple[PredictionBatch, np.ndarray]:
    rng = np.random.default_rng(seed)
    numeric = np.vstack([rng.normal(40, 10, n), rng.exponential(50, n)])
    numeric[1, rng.uniform(size=n) < 0.1] = np.nan
    plans = rng.choice(["basic", "plus", "pro", "team"], size=n, p=[0.5, 0.3, 0.15, 0.05]).tolist()
    # Scores rounded to 0.05 so that many tie: the AUC must average their ranks.
    score = np.round(rng.uniform(size=n) * 20) / 20
    labels = (rng.uniform(size=n) < score).astype(np.float64)
    return make_batch(BINARY, numeric, [plans], score), labels


# --- numeric profiles -----------------------------------------------------------------------------


def test_numeric_profile_matches_numpy_on_a_hand_example() -> None:
    values = np.array([7.0, 1.0, np.nan, 3.0, 9.0, 4.0, 2.0, np.nan, 8.0, 6.0, 5.0, 10.0])
    present = values[~np.isnan(values)]
    profile = NumericProfile.from_values(values, bins=4)

    np.testing.assert_array_equal(profile.edges, np.quantile(present, [0.25, 0.5, 0.75]))
    assert profile.edges.tolist() == [3.25, 5.5, 7.75]
    # 1,2,3 | 4,5 | 6,7 | 8,9,10
    assert profile.counts.tolist() == [3, 2, 2, 3]
    assert profile.min == 1.0 and profile.max == 10.0
    assert profile.mean == pytest.approx(5.5)
    assert profile.std == pytest.approx(np.std(present))
    assert profile.missing_rate == pytest.approx(2 / 12)
    assert profile.sample.tolist() == sorted(present.tolist())


def test_numeric_counts_follow_searchsorted_right_with_open_outer_bins() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=1000)
    profile = NumericProfile.from_values(values, bins=10)
    expected = [0] * (profile.edges.size + 1)
    for v in values:
        expected[sum(1 for e in profile.edges if e <= v)] += 1
    assert profile.counts.tolist() == expected
    assert profile.counts.size == 10
    assert profile.counts.sum() == 1000


def test_discrete_feature_gets_deduplicated_edges() -> None:
    values = np.array([0.0] * 60 + [1.0] * 25 + [2.0] * 10 + [3.0] * 5)
    profile = NumericProfile.from_values(values, bins=10)
    assert profile.edges.tolist() == np.unique(np.quantile(values, np.linspace(0, 1, 11)[1:-1])).tolist()
    assert np.all(np.diff(profile.edges) > 0)
    # Nine quantiles collapse to four edges; the 0.6 quantile interpolates between the 0s and 1s.
    assert profile.edges.tolist() == pytest.approx([0.0, 0.4, 1.0, 2.0])
    assert profile.counts.tolist() == [0, 60, 0, 25, 15]


def test_sample_is_a_seeded_sorted_subset_of_bounded_size() -> None:
    values = np.random.default_rng(1).normal(size=500)
    a = NumericProfile.from_values(values, sample_size=100, seed=7)
    b = NumericProfile.from_values(values, sample_size=100, seed=7)
    c = NumericProfile.from_values(values, sample_size=100, seed=8)
    assert a.sample.size == 100
    assert np.all(np.diff(a.sample) >= 0)
    assert set(a.sample.tolist()) <= set(values.tolist())
    np.testing.assert_array_equal(a.sample, b.sample)
    assert not np.array_equal(a.sample, c.sample)


def test_all_missing_column_has_one_empty_bin_and_nan_moments() -> None:
    profile = NumericProfile.from_values(np.full(4, np.nan))
    assert profile.edges.size == 0 and profile.counts.tolist() == [0]
    assert math.isnan(profile.mean) and profile.missing_rate == 1.0


# --- categorical profiles -------------------------------------------------------------------------


def test_categorical_top_k_with_other_bucket() -> None:
    values = ["b", "a", "c", "a", None, "b", "d", "a", None, "c"]
    profile = CategoricalProfile.from_values(values, top_k=2)
    # a:3, then b:2 and c:2 tie and the name breaks the tie; c:2 + d:1 go to __other__.
    assert profile.categories == ["a", "b"]
    assert profile.counts.tolist() == [3, 2, 3]
    assert profile.missing_rate == pytest.approx(0.2)
    assert OTHER not in profile.categories
    assert profile.bucket_indices(["b", "d", None, "a"]).tolist() == [1, 2, -1, 0]


def test_categorical_with_fewer_values_than_k_has_empty_other() -> None:
    profile = CategoricalProfile.from_values(["x", "y", "x"], top_k=20)
    assert profile.categories == ["x", "y"]
    assert profile.counts.tolist() == [2, 1, 0]


# --- baselines ------------------------------------------------------------------------------------


def brute_force_auc(score: np.ndarray, labels: np.ndarray) -> float:
    positives = score[labels == 1.0]
    negatives = score[labels == 0.0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives))
    return wins / (len(positives) * len(negatives))


def test_binary_baseline_matches_brute_force() -> None:
    batch, labels = random_binary_batch(400, seed=11)
    profile = build_reference(BINARY, batch, labels)

    assert profile.baseline["auc"] == pytest.approx(brute_force_auc(batch.score, labels), abs=1e-12)
    decision = batch.score >= 0.5
    truth = labels == 1.0
    tp = int(np.sum(decision & truth))
    fp = int(np.sum(decision & ~truth))
    fn = int(np.sum(~decision & truth))
    assert profile.baseline["accuracy"] == pytest.approx(np.mean(decision == truth))
    assert profile.baseline["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert set(profile.baseline) == {"auc", "accuracy", "f1"}


def test_binary_baseline_by_hand() -> None:
    schema = ModelSchema("m", "binary", ())
    score = np.array([0.9, 0.8, 0.8, 0.3, 0.2, np.nan])
    labels = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    profile = build_reference(schema, make_batch(schema, np.empty((0, 6)), [], score), labels)
    # Scored pairs (pos, neg): (.9,.8) win, (.9,.2) win, (.8,.8) tie, (.8,.2) win, (.3,.8) loss, (.3,.2) win.
    assert profile.baseline["auc"] == pytest.approx(4.5 / 6)
    # Decisions at 0.5 on the five scored rows: 1,1,1,0,0 vs truth 1,0,1,1,0.
    assert profile.baseline["accuracy"] == pytest.approx(3 / 5)
    assert profile.baseline["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert isinstance(profile.prediction, NumericProfile)
    assert profile.prediction.missing_rate == pytest.approx(1 / 6)


def test_binary_with_a_single_label_class_has_no_auc() -> None:
    schema = ModelSchema("m", "binary", ())
    batch = make_batch(schema, np.empty((0, 3)), [], np.array([0.2, 0.7, 0.9]))
    profile = build_reference(schema, batch, np.ones(3))
    assert "auc" not in profile.baseline
    assert profile.baseline["accuracy"] == pytest.approx(2 / 3)


def test_multiclass_baseline_by_hand() -> None:
    schema = ModelSchema("m", "multiclass", ())
    predicted = ["a", "a", "b", "c", "b", None]
    truth = np.array(["a", "b", "b", "c", "a", "c"], dtype=object)
    batch = make_batch(schema, np.empty((0, 6)), [], np.full(6, np.nan), predicted)
    profile = build_reference(schema, batch, truth)
    # Five rows with a prediction. a: tp1 fp1 fn1 → 0.5; b: tp1 fp1 fn1 → 0.5; c: tp1 → 1.0.
    assert profile.baseline["accuracy"] == pytest.approx(3 / 5)
    assert profile.baseline["f1"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert isinstance(profile.prediction, CategoricalProfile)
    assert profile.prediction.categories == ["a", "b", "c"]
    assert profile.prediction.counts.tolist() == [2, 2, 1, 0]


def test_regression_baseline_by_hand() -> None:
    schema = ModelSchema("bikes", "regression", (FeatureSpec("temp", "numeric"),))
    prediction = np.array([10.0, 20.0, 30.0, 40.0])
    labels = np.array([12.0, 20.0, 35.0, np.nan])
    batch = make_batch(schema, np.array([[1.0, 2.0, 3.0, 4.0]]), [], prediction)
    profile = build_reference(schema, batch, labels)
    # errors (pred - label): -2, 0, -5 → under-estimation gives a negative mean error.
    assert profile.baseline["mae"] == pytest.approx(7 / 3)
    assert profile.baseline["rmse"] == pytest.approx(math.sqrt(29 / 3))
    assert profile.baseline["mean_error"] == pytest.approx(-7 / 3)


def test_no_labels_no_baseline_and_event_rate_from_time_span() -> None:
    batch, _ = random_binary_batch(101, seed=2)
    batch.ts = np.linspace(1000.0, 1050.0, 101)
    profile = build_reference(BINARY, batch)
    assert profile.baseline == {}
    assert profile.event_rate == pytest.approx(101 / 50)
    assert profile.n_events == 101
    batch.ts = np.full(101, np.nan)
    assert build_reference(BINARY, batch).event_rate is None


def test_build_reference_profiles_every_schema_column() -> None:
    batch, labels = random_binary_batch(300, seed=5)
    profile = build_reference(BINARY, batch, labels, bins=5, top_k=2, sample_size=50, created_at=12.5)
    assert list(profile.numeric) == ["age", "spend"]
    assert profile.numeric["spend"] == NumericProfile.from_values(
        batch.numeric[1], bins=5, sample_size=50, seed=1
    )
    assert profile.categorical["plan"] == CategoricalProfile.from_values(batch.categorical[0], top_k=2)
    assert profile.numeric["spend"].missing_rate == pytest.approx(np.mean(np.isnan(batch.numeric[1])))
    assert profile.created_at == 12.5 and profile.model_id == "churn"


def test_build_reference_rejects_mismatched_labels() -> None:
    batch, labels = random_binary_batch(10, seed=0)
    with pytest.raises(ValueError, match="labels"):
        build_reference(BINARY, batch, labels[:5])


# --- JSON -----------------------------------------------------------------------------------------


def test_json_round_trip_is_exact() -> None:
    batch, labels = random_binary_batch(2000, seed=9)
    batch.numeric[0, :] = np.nan  # an all-missing feature: NaN moments must survive JSON's null
    profile = build_reference(BINARY, batch, labels, sample_size=300)
    data = profile.to_json()
    restored = ReferenceProfile.from_json(data)
    assert restored == profile
    assert restored.to_json() == data
    np.testing.assert_array_equal(restored.numeric["spend"].sample, profile.numeric["spend"].sample)
    assert restored.numeric["spend"].counts.dtype == np.int64
    assert orjson.loads(data)["format"] == 1


def test_equality_sees_a_changed_count() -> None:
    batch, labels = random_binary_batch(200, seed=9)
    profile = build_reference(BINARY, batch, labels)
    other = ReferenceProfile.from_json(profile.to_json())
    other.categorical["plan"].counts[0] += 1
    assert other != profile


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"format": 2}', "format 2"),
        (b'{"format": 1, "model_id": "m"}', "bad profile"),
    ],
)
def test_from_json_rejects_bad_input(data: bytes, message: str) -> None:
    with pytest.raises(StateError, match=message):
        ReferenceProfile.from_json(data)


def test_from_json_rejects_inconsistent_arrays() -> None:
    good = orjson.loads(build_reference(BINARY, *random_binary_batch(50, seed=1)).to_json())
    good["numeric"]["age"]["counts"].append(3)
    with pytest.raises(StateError, match="counts"):
        ReferenceProfile.from_json(orjson.dumps(good))
    good = orjson.loads(build_reference(BINARY, *random_binary_batch(50, seed=1)).to_json())
    good["categorical"]["plan"]["categories"].pop()
    with pytest.raises(StateError, match="categories"):
        ReferenceProfile.from_json(orjson.dumps(good))


# --- warm-up --------------------------------------------------------------------------------------


def slice_batch(batch: PredictionBatch, start: int, stop: int) -> PredictionBatch:
    return make_batch(
        BINARY,
        batch.numeric[:, start:stop],
        [column[start:stop] for column in batch.categorical],
        batch.score[start:stop],
        batch.pred_label[start:stop],
        batch.ts[start:stop],
    )


def test_warmup_equals_build_on_the_first_n_events() -> None:
    batch, _ = random_binary_batch(1000, seed=4)
    expected = build_reference(BINARY, slice_batch(batch, 0, 700), created_at=699.0)
    warmup = ReferenceWarmup(BINARY, 700)
    results = [warmup.add(slice_batch(batch, a, b)) for a, b in [(0, 250), (250, 600), (600, 1000)]]
    assert results[:2] == [None, None]
    assert results[2] == expected
    assert warmup.profile == expected
    assert warmup.collected == 700 and warmup.remaining == 0
    assert warmup.add(slice_batch(batch, 0, 10)) is None


def test_warmup_snapshot_restore_mid_way_gives_the_same_profile() -> None:
    batch, _ = random_binary_batch(500, seed=6)
    batch.numeric[1, 3] = np.nan
    batch.categorical[0][4] = None
    uninterrupted = ReferenceWarmup(BINARY, 400, bins=5)
    uninterrupted.add(slice_batch(batch, 0, 150))
    expected = uninterrupted.add(slice_batch(batch, 150, 500))

    first = ReferenceWarmup(BINARY, 400, bins=5)
    first.add(slice_batch(batch, 0, 150))
    restored = ReferenceWarmup.restore(first.snapshot())
    assert restored.schema == BINARY
    assert restored.collected == 150 and restored.remaining == 250 and restored.bins == 5
    assert restored.add(slice_batch(batch, 150, 500)) == expected
    assert ReferenceWarmup.restore(restored.snapshot(), BINARY).profile == expected


def test_warmup_restore_rejects_another_model_and_garbage() -> None:
    snapshot = ReferenceWarmup(BINARY, 10).snapshot()
    with pytest.raises(StateError, match="churn"):
        ReferenceWarmup.restore(snapshot, ModelSchema("other", "binary", ()))
    with pytest.raises(StateError):
        ReferenceWarmup.restore(b"\x00", BINARY)


# --- training files -------------------------------------------------------------------------------


def test_read_csv_with_missing_cells_timestamps_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text(
        "ts,age,spend,plan,prediction,label,extra\n"
        "2024-01-01T00:00:00Z,30,12.5,basic,0.8,1,x\n"
        "2024-01-01T00:00:10Z,,7,,0.1,0,y\n"
        "1704067230,41.5,,pro,,,z\n"
    )
    batch, labels = read_training_rows(path, BINARY)
    assert batch.model_id == "churn" and len(batch.ts) == 3
    np.testing.assert_array_equal(batch.ts, [1704067200.0, 1704067210.0, 1704067230.0])
    np.testing.assert_array_equal(batch.numeric, [[30.0, np.nan, 41.5], [12.5, 7.0, np.nan]])
    assert batch.categorical == [["basic", None, "pro"]]
    np.testing.assert_array_equal(batch.score, [0.8, 0.1, np.nan])
    assert labels is not None
    np.testing.assert_array_equal(labels, [1.0, 0.0, np.nan])
    assert batch.unknown_features == 1


def test_csv_number_that_does_not_parse_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("age,spend,plan\n1,2,a\n3,lots,b\n")
    with pytest.raises(TrainingDataError, match=r"bad\.csv:3: column 'spend': 'lots' is not a number"):
        read_training_rows(path, BINARY)


def test_missing_feature_column_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("age,plan\n1,a\n")
    with pytest.raises(TrainingDataError, match="spend"):
        read_training_rows(path, BINARY)


def test_read_jsonl_flat_rows_and_contract_events(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    rows = [
        {"age": 20, "spend": 1.5, "plan": "basic", "prediction": 0.4, "label": 0, "ts": 100},
        {
            "event_id": "e2",
            "model_id": "churn",
            "ts": "1970-01-01T00:02:00Z",
            "features": {"age": 30, "spend": None, "plan": "pro"},
            "prediction": {"score": 0.9, "label": "1"},
            "label": 1,
        },
        {"event_id": "e3", "model_id": "other", "ts": 0, "features": {"age": 1}, "prediction": 1},
        {"age": None, "spend": 3, "plan": None, "prediction": {"scores": {"0": 0.3, "1": 0.7}}, "ts": 130},
    ]
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n\n")
    batch, labels = read_training_rows(path, BINARY)
    assert len(batch.ts) == 3  # the other model's event is skipped
    assert batch.event_id == ["events.jsonl:1", "e2", "events.jsonl:4"]
    np.testing.assert_array_equal(batch.ts, [100.0, 120.0, 130.0])
    np.testing.assert_array_equal(batch.numeric, [[20.0, 30.0, np.nan], [1.5, np.nan, 3.0]])
    assert batch.categorical == [["basic", "pro", None]]
    np.testing.assert_array_equal(batch.score, [0.4, 0.9, 0.7])
    assert labels is not None
    np.testing.assert_array_equal(labels, [0.0, 1.0, np.nan])


def test_jsonl_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b'{"age": 1, "spend": 2, "plan": "a"}\n{"age": \n')
    with pytest.raises(TrainingDataError, match=r"broken\.jsonl:2: malformed JSON"):
        read_training_rows(path, BINARY)


def test_regression_and_multiclass_labels_from_csv(tmp_path: Path) -> None:
    regression = ModelSchema("bikes", "regression", (FeatureSpec("temp", "numeric"),))
    path = tmp_path / "bikes.csv"
    path.write_text("temp,prediction,label\n10,100,90\n20,150,\n")
    batch, labels = read_training_rows(path, regression)
    np.testing.assert_array_equal(batch.score, [100.0, 150.0])
    assert labels is not None
    np.testing.assert_array_equal(labels, [90.0, np.nan])

    multiclass = ModelSchema("species", "multiclass", (FeatureSpec("petal", "numeric"),))
    path = tmp_path / "iris.csv"
    path.write_text("petal,prediction,label\n1.4,setosa,setosa\n4.5,virginica,versicolor\n")
    batch, labels = read_training_rows(path, multiclass)
    assert batch.pred_label == ["setosa", "virginica"]
    assert labels is not None and labels.tolist() == ["setosa", "versicolor"]
    assert build_reference(multiclass, batch, labels).baseline["accuracy"] == 0.5


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Hide pyarrow (the dev extras install it) to show the message users without it get.
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = tmp_path / "train.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(TrainingDataError, match="pyarrow"):
        read_training_rows(path, BINARY)


def test_parquet_matches_csv(tmp_path: Path) -> None:
    import pyarrow as pa  # in the dev extras
    import pyarrow.parquet as pq

    rows = "age,spend,plan,prediction,label,ts\n20,1.5,basic,0.4,0,100\n30,,pro,0.9,1,120\n,3,,0.7,0,130\n"
    (tmp_path / "train.csv").write_text(rows)
    table = pa.table(
        {
            "age": [20, 30, None],
            "spend": [1.5, None, 3.0],
            "plan": ["basic", "pro", None],
            "prediction": [0.4, 0.9, 0.7],
            "label": [0, 1, 0],
            "ts": [100.0, 120.0, 130.0],
        }
    )
    pq.write_table(table, tmp_path / "train.parquet")
    from_csv, csv_labels = read_training_rows(tmp_path / "train.csv", BINARY)
    from_parquet, parquet_labels = read_training_rows(tmp_path / "train.parquet", BINARY)
    np.testing.assert_array_equal(from_parquet.numeric, from_csv.numeric)
    assert from_parquet.categorical == from_csv.categorical
    np.testing.assert_array_equal(from_parquet.score, from_csv.score)
    np.testing.assert_array_equal(from_parquet.ts, from_csv.ts)
    np.testing.assert_array_equal(parquet_labels, csv_labels)


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "train.xlsx").write_bytes(b"")
    with pytest.raises(TrainingDataError, match="xlsx"):
        read_training_rows(tmp_path / "train.xlsx", BINARY)
    with pytest.raises(TrainingDataError, match="no such file"):
        read_training_rows(tmp_path / "absent.csv", BINARY)


def test_build_reference_file_writes_a_profile_equal_to_the_in_memory_build(tmp_path: Path) -> None:
    batch, labels = random_binary_batch(200, seed=8)

    def cell(value: float) -> str:
        return "" if math.isnan(value) else repr(float(value))  # repr round-trips a float exactly

    lines = ["age,spend,plan,prediction,label"]
    for i in range(200):
        age, spend = (cell(v) for v in batch.numeric[:, i])
        lines.append(f"{age},{spend},{batch.categorical[0][i]},{cell(batch.score[i])},{int(labels[i])}")
    data = tmp_path / "train.csv"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ref.json"

    written = build_reference_file(data, BINARY, out, version=3, created_at=5.0, sample_size=100)
    assert read_reference(out) == written
    assert written.version == 3 and written.n_events == 200
    expected = build_reference(BINARY, batch, labels, sample_size=100, created_at=5.0)
    expected.version = 3
    expected.event_rate = written.event_rate  # the file has no ts column
    expected.longest_gap_seconds = written.longest_gap_seconds
    assert written == expected
    assert written.baseline["auc"] == pytest.approx(brute_force_auc(batch.score, labels))
