"""Runs the window detectors of one model over one closed window, against its reference profile.

The detectors are those of the table (:mod:`stream_monitor.core.detectors.table`); this module turns the
window's sketch and the reference into each input's counts and samples, runs every detector on the
inputs it applies to, and corrects the p-value tests together. PSI and Jensen–Shannon compare each
feature's window histogram with the reference on the reference's own bins. KS (numeric features and the
prediction score) and chi-square (categorical features) give p-values that are corrected together with
Holm's method (:func:`~stream_monitor.core.detectors.correct_family`), so the whole model in one window
is one family of tests with family-wise error ``alpha``. A p-value test only counts as drift when its
effect size also clears a minimum (KS statistic; Cohen's w for chi-square): on a million-row window
every p-value is tiny, but an identical distribution never has a large effect. JS is reported, PSI
decides. The integrity checks are those of :mod:`stream_monitor.core.detectors.integrity`.

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

from stream_monitor.core.detectors import DetectorResult, correct_family
from stream_monitor.core.detectors import table as detector_table
from stream_monitor.core.detectors.table import PREDICTION, InputWindow, WindowContext
from stream_monitor.core.reference import CategoricalProfile, NumericProfile, ReferenceProfile
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import DetectorSettings, PolicySettings
from stream_monitor.core.sketches import WindowSketch
from stream_monitor.core.windows import ClosedWindow

__all__ = ["evaluate_window", "window_inputs"]


def window_inputs(schema: ModelSchema, reference: ReferenceProfile, sk: WindowSketch) -> list[InputWindow]:
    """Each input of the window as the detectors see it: numeric features, categorical features, and
    the prediction (when the reference profiles it and the window has scores)."""
    inputs: list[InputWindow] = []
    for i, f in enumerate(schema.numeric_names):
        prof = reference.numeric[f]
        inputs.append(
            InputWindow(
                f,
                "numeric",
                prof.counts.astype(float),
                # Discrete features have fewer bins (equal quantile edges merged): compare row by row.
                np.asarray(sk.feature_counts(i), dtype=float),
                missing=int(sk.numeric_missing[i]),
                reference_missing_rate=prof.missing_rate,
                reference_sample=prof.sample,
                window_sample=np.asarray(sk.numeric_sample[i]),
                below=int(sk.numeric_below[i]),
                above=int(sk.numeric_above[i]),
            )
        )
    for i, f in enumerate(schema.categorical_names):
        cprof = reference.categorical[f]
        inputs.append(
            InputWindow(
                f,
                "categorical",
                cprof.counts.astype(float),
                np.asarray(sk.categorical_counts[i], dtype=float),
                missing=int(sk.categorical_missing[i]),
                reference_missing_rate=cprof.missing_rate,
                # "New" = never seen in the reference (values beyond its top-K are in __other__, not new).
                new_categories=sum(sk.new_categories[i].values()) + int(sk.new_category_overflow[i]),
            )
        )
    pred = reference.prediction
    score_counts = np.asarray(sk.score_counts, dtype=float)
    if isinstance(pred, NumericProfile | CategoricalProfile) and score_counts.sum() > 0:
        inputs.append(
            InputWindow(
                PREDICTION,
                "prediction",
                pred.counts.astype(float),
                score_counts,
                reference_sample=pred.sample if isinstance(pred, NumericProfile) else None,
                window_sample=np.asarray(sk.score_sample),
            )
        )
    return inputs


def evaluate_window(
    schema: ModelSchema,
    reference: ReferenceProfile,
    window: ClosedWindow,
    settings: DetectorSettings,
    psi_warning: float = PolicySettings.psi_warning,
    psi_alarm: float = PolicySettings.psi_alarm,
) -> list[DetectorResult]:
    """All window detector results for one window: drift, prediction drift and integrity.

    In table order per input (inputs in schema order, the prediction last), then the family tests
    after Holm's correction, then the model-level detectors.
    """
    sk = window.sketch
    inputs = window_inputs(schema, reference, sk)
    # Event-time windows have a duration; count windows span their first to last event.
    seconds = float(window.end - window.start) or float(sk.ts_max - sk.ts_min)
    ctx = WindowContext(sk.n_events, seconds, reference.event_rate, settings, psi_warning, psi_alarm)
    position = {inp.name: k for k, inp in enumerate(inputs)}
    per_input: list[tuple[int, int, DetectorResult]] = []
    tests: list[DetectorResult] = []
    model: list[DetectorResult] = []
    for order, spec in enumerate(detector_table.window_detectors()):
        if "model" in spec.applies_to:
            model += spec.evaluate((), ctx)
            continue
        results = spec.evaluate([inp for inp in inputs if inp.target in spec.applies_to], ctx)
        if spec.family_test:
            tests += results
        else:
            per_input += [(position[str(r.feature)], order, r) for r in results]
    per_input.sort(key=lambda item: item[:2])
    return [r for _, _, r in per_input] + correct_family(tests, alpha=settings.alpha) + model
