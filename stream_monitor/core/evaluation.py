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


#: A partial window that covered less than this share of its width gives no volume verdict: a rate
#: measured over a few minutes of a day-long window says more about chance than about the stream.
MIN_VOLUME_COVERAGE = 0.25


def window_covered_seconds(
    window: ClosedWindow, *, partial_start: bool, partial_end: bool, usual_gap: float = 0.0
) -> float:
    """The event time a window actually covered: what its event rate (the volume check) is measured over.

    An event-time window covers its width, except where the stream did not run through it: the first
    window after a start or a restore, or the first after a gap (a whole window width without any
    event), begins at its first event (``partial_start``); the window before a gap, or the one flushed
    at the end of a replay, ends at its last event (``partial_end``) — unless the empty stretch there is
    no longer than ``usual_gap``, the longest stretch without events in the reference: yearly surveys
    or market hours leave such stretches in every window, and the reference's rate counts them too.
    Each partial side adds half the
    window's mean gap between events, so evenly spaced events give the same rate as in a full
    window. A count window (bounds = its first and last event, as the reference's rate) is never
    partial. 0 (no volume verdict) when the window covered less than :data:`MIN_VOLUME_COVERAGE` of
    its width or its events leave the rate unknown.

    >>> from types import SimpleNamespace as NS
    >>> w = NS(start=0.0, end=100.0, sketch=NS(n_events=11, ts_min=50.0, ts_max=90.0))
    >>> window_covered_seconds(w, partial_start=False, partial_end=False)
    100.0
    >>> window_covered_seconds(w, partial_start=True, partial_end=False)  # 50 s + half a 4 s gap
    52.0
    >>> window_covered_seconds(w, partial_start=True, partial_end=True)
    44.0
    >>> window_covered_seconds(w, partial_start=True, partial_end=True, usual_gap=60.0)  # the usual
    100.0
    >>> window_covered_seconds(NS(start=0.0, end=100.0, sketch=NS(n_events=3, ts_min=1.0, ts_max=9.0)),
    ...                        partial_start=True, partial_end=True)
    0.0
    """
    sk = window.sketch
    width = float(window.end - window.start)
    span = float(sk.ts_max - sk.ts_min) if sk.n_events >= 2 else 0.0
    if width <= 0:  # a count window whose events share one time
        return span
    if not (partial_start or partial_end):
        return width
    if span <= 0:
        return 0.0
    half_gap = span / (sk.n_events - 1) / 2
    start, end = float(window.start), float(window.end)
    begin = sk.ts_min - half_gap if partial_start and sk.ts_min - start > usual_gap else start
    finish = sk.ts_max + half_gap if partial_end and end - sk.ts_max > usual_gap else end
    covered = min(finish, end) - max(begin, start)
    return covered if covered >= MIN_VOLUME_COVERAGE * width else 0.0


def evaluate_window(
    schema: ModelSchema,
    reference: ReferenceProfile,
    window: ClosedWindow,
    settings: DetectorSettings,
    psi_warning: float = PolicySettings.psi_warning,
    psi_alarm: float = PolicySettings.psi_alarm,
    *,
    covered_seconds: float | None = None,
) -> list[DetectorResult]:
    """All window detector results for one window: drift, prediction drift and integrity.

    In table order per input (inputs in schema order, the prediction last), then the family tests
    after Holm's correction, then the model-level detectors. ``covered_seconds`` is the event time the
    window actually covered (:func:`window_covered_seconds`); by default its whole width.
    """
    sk = window.sketch
    inputs = window_inputs(schema, reference, sk)
    if covered_seconds is None:
        covered_seconds = window_covered_seconds(window, partial_start=False, partial_end=False)
    ctx = WindowContext(sk.n_events, covered_seconds, reference.event_rate, settings, psi_warning, psi_alarm)
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
