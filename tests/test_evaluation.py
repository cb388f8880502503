"""evaluate_window: every statistic against its oracle, one correction family, no false flags at scale."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from stream_monitor.core.detectors import chi_square, holm, psi
from stream_monitor.core.detectors.table import PREDICTION
from stream_monitor.core.evaluation import evaluate_window
from stream_monitor.core.events import PredictionBatch
from stream_monitor.core.reference import build_reference
from stream_monitor.core.schema import FeatureSpec, ModelSchema
from stream_monitor.core.settings import DetectorSettings
from stream_monitor.core.sketches import WindowSketch
from stream_monitor.core.windows import ClosedWindow


def _schema(n_numeric: int, categorical: bool = False) -> ModelSchema:
    features = [FeatureSpec(f"f{i}", "numeric") for i in range(n_numeric)]
    if categorical:
        features.append(FeatureSpec("channel", "categorical"))
    return ModelSchema("m", "regression", tuple(features))


def _batch(
    numeric: np.ndarray, channel: list[str | None] | None = None, prefix: str = "e"
) -> PredictionBatch:
    n = numeric.shape[1]
    return PredictionBatch(
        "m",
        np.arange(n),
        [f"{prefix}{i}" for i in range(n)],
        np.arange(n, dtype=float),
        [None] * n,
        numeric,
        [channel] if channel is not None else [],
        numeric[0].copy(),
        [None] * n,
        {},
        0,
    )


def _evaluate(schema: ModelSchema, reference_batch: PredictionBatch, window_batch: PredictionBatch) -> list:
    ref = build_reference(schema, reference_batch, sample_size=5000)
    sketch = WindowSketch(schema, ref, sample_size=2000)
    sketch.update(window_batch)
    window = ClosedWindow(0.0, float(len(window_batch)), 0, sketch)
    return evaluate_window(schema, ref, window, DetectorSettings()), ref, sketch


def test_statistics_match_their_oracles_and_are_corrected_together() -> None:
    rng = np.random.default_rng(1)
    schema = _schema(3, categorical=True)
    ref_x = rng.normal(0, 1, (3, 20_000))
    win_x = rng.normal([[0.0], [0.5], [0.05]], 1, (3, 2000))
    ref_c = list(rng.choice(["web", "app", "shop"], 20_000, p=[0.6, 0.3, 0.1]))
    win_c = list(rng.choice(["web", "app", "shop"], 2000, p=[0.3, 0.3, 0.4]))
    results, ref, sketch = _evaluate(schema, _batch(ref_x, ref_c, "r"), _batch(win_x, win_c, "w"))
    by = {(r.detector, r.feature): r for r in results}

    raw_p = []
    for i in range(3):
        f = f"f{i}"
        expected = psi(ref.numeric[f].counts, sketch.feature_counts(i))
        assert by[("psi", f)].value == pytest.approx(expected, rel=1e-12)
        oracle = stats.ks_2samp(ref.numeric[f].sample, sketch.numeric_sample[i], method="asymp")
        assert by[("ks", f)].value == pytest.approx(oracle.statistic, abs=1e-12)
        raw_p.append(oracle.pvalue)
    # chi_square itself is checked against scipy.stats.chisquare in test_detectors (it smooths the
    # empty __other__ bucket, which scipy cannot take); here it is one member of the family.
    _, chi_p = chi_square(ref.categorical["channel"].counts, sketch.categorical_counts[0])
    raw_p.append(chi_p)
    oracle_pred = stats.ks_2samp(ref.prediction.sample, sketch.score_sample, method="asymp")
    raw_p.append(oracle_pred.pvalue)
    # One Holm family over every p-value test of the model in the window (KS, chi-square, prediction KS).
    adjusted = holm(np.array(raw_p))
    got = [by[("ks", f"f{i}")].p_value for i in range(3)] + [
        by[("chi2", "channel")].p_value,
        by[("ks", PREDICTION)].p_value,
    ]
    assert got == pytest.approx(adjusted, rel=1e-6, abs=1e-300)
    assert {f for (d, f), r in by.items() if r.drift and d in ("psi", "ks", "chi2")} == {"f1", "channel"}


def test_twenty_null_features_never_flag_and_one_shifted_feature_does() -> None:
    schema = _schema(20)
    flagged: set[str | None] = set()
    for seed in range(5):
        rng = np.random.default_rng(seed)
        shifts = np.zeros((20, 1))
        shifts[7] = 0.4
        results, _, _ = _evaluate(
            schema,
            _batch(rng.normal(0, 1, (20, 10_000)), prefix="r"),
            _batch(rng.normal(shifts, 1, (20, 2000))),
        )
        flagged |= {r.feature for r in results if r.drift and r.detector in ("psi", "ks")}
    assert flagged == {"f7"}


def test_huge_identical_windows_never_flag() -> None:
    # KS alone rejects everything at this size; PSI and the KS effect-size floor do not.
    rng = np.random.default_rng(3)
    schema = _schema(2)
    results, _, _ = _evaluate(
        schema, _batch(rng.normal(0, 1, (2, 1_000_000)), prefix="r"), _batch(rng.normal(0, 1, (2, 1_000_000)))
    )
    assert not any(r.drift for r in results), [r for r in results if r.drift]


def test_values_beyond_the_training_range_are_drift_evidence_not_an_incident() -> None:
    rng = np.random.default_rng(4)
    schema = _schema(1)
    results, _, _ = _evaluate(
        schema, _batch(rng.normal(0, 1, (1, 20_000)), prefix="r"), _batch(rng.normal(5, 1, (1, 2000)))
    )
    oor = next(r for r in results if r.statistic == "out_of_range_rate")
    assert oor.detector == "out_of_range" and oor.drift and oor.value > 0.5
    assert not any(r.drift and r.detector.startswith("integrity") for r in results)
