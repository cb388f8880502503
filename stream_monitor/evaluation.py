"""Runs the window detectors of one model over one closed window, against its reference profile.

PSI and Jensen–Shannon are computed for every feature at once on the reference bins; KS (numeric) and
chi-square (categorical) give p-values that are corrected together with Holm's method, so the whole
model in one window is one family of tests with family-wise error ``alpha``. A p-value test only counts
as drift when its effect size also clears a minimum (KS statistic, Cramér's V): on a million-row window
every p-value is tiny, but an identical distribution never has a large effect (KS statistic;
Cohen's w for chi-square).

>>> import numpy as np
>>> from stream_monitor.schema import FeatureSpec, ModelSchema
>>> from stream_monitor.events import PredictionBatch
>>> from stream_monitor.reference import build_reference
>>> from stream_monitor.sketches import WindowSketch
>>> from stream_monitor.windows import ClosedWindow
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

import math

import numpy as np

from stream_monitor.detectors import (
    DetectorResult,
    chi_square,
    cohens_w,
    holm,
    js_divergence,
    ks_2samp_sorted,
    psi,
)
from stream_monitor.reference import CategoricalProfile, NumericProfile, ReferenceProfile
from stream_monitor.schema import ModelSchema
from stream_monitor.settings import DetectorSettings
from stream_monitor.windows import ClosedWindow

PREDICTION = "__prediction__"


def _rate(part: float, total: float) -> float:
    return part / total if total > 0 else 0.0


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
    pending: list[tuple[str, str, float, float, float]] = []  # detector, feature, stat, p, effect

    for i, f in enumerate(schema.numeric_names):
        prof = reference.numeric[f]
        # Discrete features have fewer bins (equal quantile edges merged): compare row by row.
        ref_counts = prof.counts.astype(float)
        win_counts = np.asarray(sk.feature_counts(i), dtype=float)
        if win_counts.sum() == 0:
            continue
        value = psi(ref_counts, win_counts, eps=s.psi_epsilon)
        results.append(
            DetectorResult(
                "psi", f, "psi", value, psi_alarm, drift=value >= psi_alarm, warning=value >= psi_warning
            )
        )
        results.append(
            DetectorResult("js", f, "js_divergence", js_divergence(ref_counts, win_counts), 0.1, drift=False)
        )
        sample = sk.numeric_sample[i]
        if len(sample) >= 20 and len(prof.sample) >= 20:
            stat, p = ks_2samp_sorted(prof.sample, sample)
            pending.append(("ks", f, stat, p, stat))
        results.extend(
            _numeric_integrity(
                f, prof, sk.numeric_missing[i], sk.numeric_below[i], sk.numeric_above[i], sk.n_events, s
            )
        )

    for i, f in enumerate(schema.categorical_names):
        cprof = reference.categorical[f]
        counts = np.asarray(sk.categorical_counts[i], dtype=float)
        n_valid = float(counts.sum())
        if n_valid == 0:
            continue
        value = psi(cprof.counts.astype(float), counts, eps=s.psi_epsilon)
        results.append(
            DetectorResult(
                "psi", f, "psi", value, psi_alarm, drift=value >= psi_alarm, warning=value >= psi_warning
            )
        )
        results.append(
            DetectorResult("js", f, "js_divergence", js_divergence(cprof.counts, counts), 0.1, drift=False)
        )
        stat, p = chi_square(cprof.counts.astype(float), counts)
        pending.append(("chi2", f, stat, p, cohens_w(stat, n_valid)))
        missing_rate = _rate(float(sk.categorical_missing[i]), sk.n_events)
        results.append(
            DetectorResult(
                "integrity:missing",
                f,
                "missing_rate",
                missing_rate,
                cprof.missing_rate + s.missing_rate_delta,
                drift=missing_rate > cprof.missing_rate + s.missing_rate_delta,
            )
        )
        new = sum(sk.new_categories[i].values()) + int(sk.new_category_overflow[i])
        # Values outside the reference top-K land in __other__; "new" are those never seen in the reference.
        new_rate = _rate(float(new), n_valid)
        results.append(
            DetectorResult(
                "integrity:new_category",
                f,
                "new_category_rate",
                new_rate,
                s.new_category_rate,
                drift=new_rate > s.new_category_rate,
            )
        )

    pred = reference.prediction
    if isinstance(pred, NumericProfile) and len(sk.score_sample) > 0:
        value = psi(pred.counts.astype(float), np.asarray(sk.score_counts, dtype=float), eps=s.psi_epsilon)
        results.append(
            DetectorResult(
                "psi",
                PREDICTION,
                "psi",
                value,
                psi_alarm,
                drift=value >= psi_alarm,
                warning=value >= psi_warning,
            )
        )
        if len(sk.score_sample) >= 20 and len(pred.sample) >= 20:
            stat, p = ks_2samp_sorted(pred.sample, sk.score_sample)
            results.append(
                DetectorResult(
                    "ks",
                    PREDICTION,
                    "ks_statistic",
                    stat,
                    s.ks_min_effect,
                    drift=False,
                    p_value=p,
                    effect_size=stat,
                )
            )
    elif isinstance(pred, CategoricalProfile) and np.asarray(sk.score_counts).sum() > 0:
        value = psi(pred.counts.astype(float), np.asarray(sk.score_counts, dtype=float), eps=s.psi_epsilon)
        results.append(
            DetectorResult(
                "psi",
                PREDICTION,
                "psi",
                value,
                psi_alarm,
                drift=value >= psi_alarm,
                warning=value >= psi_warning,
            )
        )

    if pending:
        adjusted = holm(np.array([p for _, _, _, p, _ in pending]))
        for (det, f, stat, _p, effect), p_adj in zip(pending, adjusted, strict=True):
            min_effect = s.ks_min_effect if det == "ks" else s.chi2_min_effect
            results.append(
                DetectorResult(
                    det,
                    f,
                    "ks_statistic" if det == "ks" else "chi2",
                    float(stat),
                    min_effect,
                    drift=bool(p_adj < s.alpha and effect >= min_effect),
                    p_value=float(p_adj),
                    effect_size=float(effect),
                )
            )

    results.append(_volume(reference, window, s))
    return results


def _numeric_integrity(
    feature: str,
    prof: NumericProfile,
    missing: float,
    below: float,
    above: float,
    n_events: int,
    s: DetectorSettings,
) -> list[DetectorResult]:
    missing_rate = _rate(float(missing), n_events)
    oor = _rate(float(below + above), n_events - float(missing))
    return [
        DetectorResult(
            "integrity:missing",
            feature,
            "missing_rate",
            missing_rate,
            prof.missing_rate + s.missing_rate_delta,
            drift=missing_rate > prof.missing_rate + s.missing_rate_delta,
        ),
        # Values beyond the training range are drift evidence (seed 003's temperature), not an
        # integrity incident: windows with them must stay eligible for retraining.
        DetectorResult(
            "out_of_range",
            feature,
            "out_of_range_rate",
            oor,
            s.out_of_range_rate,
            drift=oor > s.out_of_range_rate,
        ),
    ]


def _volume(reference: ReferenceProfile, window: ClosedWindow, s: DetectorSettings) -> DetectorResult:
    """Event rate of the window against the reference rate (event time); NaN when either is unknown."""
    sk = window.sketch
    span = float(sk.ts_max - sk.ts_min) if sk.n_events > 1 else 0.0
    if not reference.event_rate or span <= 0:
        return DetectorResult(
            "integrity:volume", None, "volume_ratio", math.nan, s.volume_ratio_high, drift=False
        )
    ratio = (sk.n_events / span) / reference.event_rate
    drift = ratio < s.volume_ratio_low or ratio > s.volume_ratio_high
    threshold = s.volume_ratio_low if ratio < 1 else s.volume_ratio_high
    return DetectorResult("integrity:volume", None, "volume_ratio", ratio, threshold, drift=drift)
