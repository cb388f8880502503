"""Runs the window detectors of one model over one closed window, against its reference profile.

PSI and Jensen–Shannon compare each feature's window histogram with the reference on the reference's
own bins. KS (numeric features and the prediction score) and chi-square (categorical features) give
p-values that are corrected together with Holm's method
(:func:`~stream_monitor.core.detectors.correct_family`), so the whole model in one window is one family of
tests with family-wise error ``alpha``. A p-value test only counts as drift when its effect size also
clears a minimum (KS statistic; Cohen's w for chi-square): on a million-row window every p-value is
tiny, but an identical distribution never has a large effect. JS is reported, PSI decides. The
integrity checks are those of :mod:`stream_monitor.core.detectors.integrity`.

>>> import numpy as np
>>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
>>> from stream_monitor.core.events import PredictionBatch
>>> from stream_monitor.core.reference import build_reference
>>> from stream_monitor.core.sketches import WindowSketch
>>> from stream_monitor.core.windows import ClosedWindow
>>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric", key=True),))
>>> rng = np.random.default_rng(0)
>>> def batch(x):
...     n = len(x)
...     return PredictionBatch("m", np.arange(n), [str(i) for i in range(n)], np.arange(n, dtype=float),
...         [None] * n, x[None, :], [], x.copy(), [None] * n, {}, 0)
>>> ref = build_reference(schema, batch(rng.normal(size=20000)))
>>> sk = WindowSketch(schema, ref)
>>> sk.update(batch(rng.normal(loc=1.0, size=5000)))
>>> results = evaluate_window(schema, ref, ClosedWindow(0.0, 1.0, 0, sk), DetectorSettings())
>>> sorted((r.detector, r.drift) for r in results if r.feature == "x" and r.detector in ("psi", "ks", "js"))
[('js', False), ('ks', True), ('psi', True)]
"""

from __future__ import annotations

import numpy as np

from stream_monitor.core.detectors import (
    DetectorResult,
    chi_square,
    cohens_w,
    correct_family,
    js_divergence,
    ks_2samp_sorted_many,
    missing_rate_check,
    new_category_check,
    out_of_range_check,
    psi,
    volume_check,
)
from stream_monitor.core.reference import CategoricalProfile, NumericProfile, ReferenceProfile
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import DetectorSettings
from stream_monitor.core.windows import ClosedWindow

PREDICTION = "__prediction__"
# A KS test on fewer values than this says nothing useful.
_MIN_KS_SAMPLE = 20
# For small shifts JS (bits) ≈ PSI / (8 ln 2): the JS level that says what the PSI alarm says.
_PSI_TO_JS = 1.0 / (8.0 * np.log(2.0))


def _distribution(
    feature: str,
    ref_counts: np.ndarray,
    win_counts: np.ndarray,
    psi_warning: float,
    psi_alarm: float,
    eps: float,
) -> list[DetectorResult]:
    """PSI (decides) and JS (reported) of one window histogram against the reference's."""
    value = psi(ref_counts, win_counts, eps=eps)
    return [
        DetectorResult(
            "psi", feature, "psi", value, psi_alarm, drift=value >= psi_alarm, warning=value >= psi_warning
        ),
        DetectorResult(
            "js",
            feature,
            "js_divergence",
            js_divergence(ref_counts, win_counts),
            psi_alarm * _PSI_TO_JS,
            drift=False,
        ),
    ]


def _ks_tests(
    features: list[str], refs: list[np.ndarray], samples: list[np.ndarray], min_effect: float
) -> list[DetectorResult]:
    """Raw (uncorrected) KS results; :func:`correct_family` decides them with the rest of the family."""
    if not features:
        return []
    stats, p_values = ks_2samp_sorted_many(refs, samples)
    return [
        DetectorResult(
            "ks", f, "ks_statistic", float(d), min_effect, drift=False, p_value=float(p), effect_size=float(d)
        )
        for f, d, p in zip(features, stats, p_values, strict=True)
    ]


def evaluate_window(
    schema: ModelSchema,
    reference: ReferenceProfile,
    window: ClosedWindow,
    settings: DetectorSettings,
    psi_warning: float = 0.1,
    psi_alarm: float = 0.15,
) -> list[DetectorResult]:
    """All window detector results for one window: drift, prediction drift and integrity."""
    sk = window.sketch
    s = settings
    results: list[DetectorResult] = []
    tests: list[DetectorResult] = []
    ks_features: list[str] = []
    ks_refs: list[np.ndarray] = []
    ks_samples: list[np.ndarray] = []

    for i, f in enumerate(schema.numeric_names):
        prof = reference.numeric[f]
        # Discrete features have fewer bins (equal quantile edges merged): compare row by row.
        win_counts = np.asarray(sk.feature_counts(i), dtype=float)
        observed = float(win_counts.sum())
        results.append(
            missing_rate_check(
                int(sk.numeric_missing[i]),
                sk.n_events,
                prof.missing_rate,
                feature=f,
                max_increase=s.missing_rate_delta,
            )
        )
        if observed == 0:
            continue
        results += _distribution(
            f, prof.counts.astype(float), win_counts, psi_warning, psi_alarm, s.psi_epsilon
        )
        results.append(
            out_of_range_check(
                int(sk.numeric_below[i]),
                int(sk.numeric_above[i]),
                int(observed),
                feature=f,
                max_rate=s.out_of_range_rate,
            )
        )
        sample = sk.numeric_sample[i]
        if len(sample) >= _MIN_KS_SAMPLE and len(prof.sample) >= _MIN_KS_SAMPLE:
            ks_features.append(f)
            ks_refs.append(prof.sample)
            ks_samples.append(sample)

    for i, f in enumerate(schema.categorical_names):
        cprof = reference.categorical[f]
        counts = np.asarray(sk.categorical_counts[i], dtype=float)
        observed = float(counts.sum())
        results.append(
            missing_rate_check(
                int(sk.categorical_missing[i]),
                sk.n_events,
                cprof.missing_rate,
                feature=f,
                max_increase=s.missing_rate_delta,
            )
        )
        if observed == 0:
            continue
        results += _distribution(f, cprof.counts.astype(float), counts, psi_warning, psi_alarm, s.psi_epsilon)
        stat, p = chi_square(cprof.counts.astype(float), counts)
        effect = cohens_w(stat, observed)
        tests.append(
            DetectorResult(
                "chi2", f, "chi2", stat, s.chi2_min_effect, drift=False, p_value=p, effect_size=effect
            )
        )
        # "New" = never seen in the reference (values beyond its top-K are in __other__, not new).
        new = sum(sk.new_categories[i].values()) + int(sk.new_category_overflow[i])
        results.append(new_category_check(new, int(observed), feature=f, max_rate=s.new_category_rate))

    pred = reference.prediction
    score_counts = np.asarray(sk.score_counts, dtype=float)
    if isinstance(pred, NumericProfile | CategoricalProfile) and score_counts.sum() > 0:
        results += _distribution(
            PREDICTION, pred.counts.astype(float), score_counts, psi_warning, psi_alarm, s.psi_epsilon
        )
        if (
            isinstance(pred, NumericProfile)
            and len(sk.score_sample) >= _MIN_KS_SAMPLE
            and len(pred.sample) >= _MIN_KS_SAMPLE
        ):
            ks_features.append(PREDICTION)
            ks_refs.append(pred.sample)
            ks_samples.append(np.asarray(sk.score_sample))

    tests += _ks_tests(ks_features, ks_refs, ks_samples, s.ks_min_effect)
    results += correct_family(tests, alpha=s.alpha)
    # Event-time windows have a duration; count windows span their first to last event.
    seconds = float(window.end - window.start) or float(sk.ts_max - sk.ts_min)
    results.append(
        volume_check(
            sk.n_events,
            seconds,
            reference.event_rate,
            low_ratio=s.volume_ratio_low,
            high_ratio=s.volume_ratio_high,
        )
    )
    return results
