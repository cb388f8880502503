"""The window detectors, declared once: what each computes, on what, what it means and where it shows.

Every window detector is one :class:`WindowDetectorSpec` in :data:`WINDOW_DETECTORS`. The rest of the
code reads this table instead of naming detectors:

- :func:`stream_monitor.core.evaluation.evaluate_window` runs each spec's ``evaluate`` on the inputs it
  ``applies_to`` (numeric and categorical features, the prediction, or the model as a whole) and
  corrects the ``family_test`` p-values together (Holm);
- the policy (:mod:`stream_monitor.core.policy`) counts a key feature's firing ``flags_drift``
  detector as data drift and a firing ``integrity`` detector as an integrity incident;
- the exporter (:mod:`stream_monitor.web.metrics`) creates one gauge family per :class:`MetricSpec`
  and sets the per-feature drift flag from the ``flags_drift`` detectors;
- ``calibrate`` (:mod:`stream_monitor.offline.calibration`) sets each :class:`CalibrationHook`'s
  threshold from null windows;
- the status page (:mod:`stream_monitor.web.status`) shows one column per :class:`StatusColumn`.

Adding a window detector is one spec here (its statistic may live in its own module of
``detectors/``) and its test. The order of the table is the order of the results: per input, the
input's detectors in table order; then the family tests, corrected together; then the model-level
detectors — so the reasons of a trigger keep a stable order.

>>> [spec.name for spec in WINDOW_DETECTORS if spec.flags_drift]
['psi', 'chi2', 'ks']
>>> spec_of("integrity:volume").kind, spec_of("integrity:volume").applies_to
('integrity', frozenset({'model'}))
>>> spec_of("segment_surge") is None  # not a window detector
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np

from stream_monitor.core.detectors.base import DetectorResult
from stream_monitor.core.detectors.chi_square import chi_square, cohens_w
from stream_monitor.core.detectors.divergence import js_divergence_matrix
from stream_monitor.core.detectors.integrity import (
    missing_rate_check,
    new_category_check,
    out_of_range_check,
    volume_check,
)
from stream_monitor.core.detectors.ks import ks_2samp_sorted_many
from stream_monitor.core.detectors.psi import psi_matrix, psi_noise_level
from stream_monitor.core.settings import PSI_PER_JS, DetectorSettings

__all__ = [
    "PREDICTION",
    "PSI",
    "WINDOW_DETECTORS",
    "CalibrationHook",
    "InputWindow",
    "MetricSpec",
    "StatusColumn",
    "WindowContext",
    "WindowDetectorSpec",
    "spec_of",
    "window_detectors",
]

#: The "feature" name of results about the model's prediction (score or class).
PREDICTION = "__prediction__"

Target = Literal["numeric", "categorical", "prediction", "model"]
DetectorKind = Literal["drift", "integrity", "effect"]

# A KS test on fewer values than this says nothing useful.
_MIN_KS_SAMPLE = 20
# The JS level that says what the PSI alarm says (for small shifts JS ≈ PSI / PSI_PER_JS).
_JS_PER_PSI = 1.0 / PSI_PER_JS


@dataclass(frozen=True, eq=False)
class InputWindow:
    """What a window detector sees of one input — a feature or the prediction — in one window.

    Counts are on the reference's own bins (or categories); samples are the KS reservoirs (the
    reference's sorted), None where the input has none (categorical inputs).
    """

    name: str
    target: Target
    reference_counts: np.ndarray
    window_counts: np.ndarray
    missing: int = 0
    reference_missing_rate: float = 0.0
    reference_sample: np.ndarray | None = None
    window_sample: np.ndarray | None = None
    below: int = 0  # numeric: values below the reference minimum
    above: int = 0  # numeric: values above the reference maximum
    new_categories: int = 0  # categorical: values never seen in the reference

    @cached_property
    def observed(self) -> float:
        """Non-missing values of the input in the window (summed once: every detector asks)."""
        return float(self.window_counts.sum())


@dataclass(frozen=True)
class WindowContext:
    """What every detector of one window shares: the window's size and duration, the settings."""

    events: int
    seconds: float
    reference_event_rate: float | None
    settings: DetectorSettings
    psi_warning: float
    psi_alarm: float


#: A detector's evaluation: its results on the inputs it applies to (none for a model-level detector).
Evaluate = Callable[[Sequence[InputWindow], WindowContext], list[DetectorResult]]


@dataclass(frozen=True)
class MetricSpec:
    """A Prometheus gauge family fed by a detector's results.

    ``scope`` says which results and labels: ``feature`` (labels model, feature), ``prediction`` or
    ``model`` (label model). ``field`` is what is exported: the result's ``value``, its ``p_value``
    (when it has one) or its ``drift`` flag as 0/1.
    """

    name: str
    help: str
    scope: Literal["feature", "prediction", "model"] = "feature"
    field: Literal["value", "p_value", "drift"] = "value"

    @property
    def labels(self) -> tuple[str, ...]:
        return ("model", "feature") if self.scope == "feature" else ("model",)


@dataclass(frozen=True)
class CalibrationHook:
    """A threshold ``calibrate`` sets from null windows: ``setting`` (``section.field`` of the model's
    settings) at the quantile of the largest ``statistic`` per window over the key features
    (``scope="feature"``) or of the prediction's (``scope="prediction"``)."""

    setting: str
    scope: Literal["feature", "prediction"]
    statistic: Literal["value", "effect_size"] = "value"

    @property
    def name(self) -> str:
        """The setting's field name (``psi_alarm``): the calibration's key for this threshold."""
        return self.setting.rpartition(".")[2]


@dataclass(frozen=True)
class StatusColumn:
    """A column of the status page's per-feature drift table."""

    title: str
    digits: int = 3


@dataclass(frozen=True)
class WindowDetectorSpec:
    """One window detector, declared once (see the module docstring).

    ``name`` and ``statistic`` are the ``detector`` and ``statistic`` of its results. ``kind``:
    ``drift`` (compares a distribution with the reference), ``effect`` (sizes a shift, never an
    incident) or ``integrity`` (a firing result makes the window an integrity incident: an
    ``integrity`` trigger, excluded from every retraining recommendation). ``flags_drift``: a firing
    result on a key feature is data drift (policy) and sets the feature's drift flag (metrics,
    status page). ``family_test``: its results carry raw p-values, decided together with the model's
    other tests (Holm). ``settings``: the ``section.field`` settings its evaluation reads.
    """

    name: str
    statistic: str
    applies_to: frozenset[Target]
    kind: DetectorKind
    evaluate: Evaluate = field(repr=False, compare=False)
    settings: tuple[str, ...] = ()
    metrics: tuple[MetricSpec, ...] = ()
    calibration: tuple[CalibrationHook, ...] = ()
    flags_drift: bool = False
    family_test: bool = False
    status: StatusColumn | None = None


# -- the evaluations ---------------------------------------------------------------------------
def _missing_rate(inputs: Sequence[InputWindow], ctx: WindowContext) -> list[DetectorResult]:
    s = ctx.settings
    return [
        missing_rate_check(
            i.missing, ctx.events, i.reference_missing_rate, feature=i.name, max_increase=s.missing_rate_delta
        )
        for i in inputs
    ]


def _by_bins(
    inputs: Sequence[InputWindow], matrix: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> list[tuple[InputWindow, float]]:
    """``matrix(reference rows, window rows)`` of every observed input, in input order.

    Inputs with as many bins are stacked and computed in one call (a row gives the same number alone
    or stacked): one call per input was most of a small window's PSI and JS time.
    """
    observed = [i for i in inputs if i.observed > 0]
    groups: dict[int, list[InputWindow]] = {}
    for i in observed:
        groups.setdefault(i.window_counts.size, []).append(i)
    values: dict[int, float] = {}
    for group in groups.values():
        rows = matrix(
            np.stack([i.reference_counts for i in group]), np.stack([i.window_counts for i in group])
        )
        values.update(zip(map(id, group), rows.tolist(), strict=True))
    return [(i, values[id(i)]) for i in observed]


def _psi(inputs: Sequence[InputWindow], ctx: WindowContext) -> list[DetectorResult]:
    """PSI against the alarm, which is never below what sampling alone gives on a window of this
    size (:func:`psi_noise_level` at the family-wise α): on a 50-event window PSI 0.15 is chance."""
    eps, alpha = ctx.settings.psi_epsilon, ctx.settings.alpha
    out = []
    for i, value in _by_bins(inputs, lambda e, a: psi_matrix(e, a, eps=eps)):
        noise = psi_noise_level(i.observed, float(i.reference_counts.sum()), i.window_counts.size, alpha, eps)
        alarm, warning = max(ctx.psi_alarm, noise), max(ctx.psi_warning, noise)
        out.append(
            DetectorResult("psi", i.name, "psi", value, alarm, drift=value >= alarm, warning=value >= warning)
        )
    return out


def _js(inputs: Sequence[InputWindow], ctx: WindowContext) -> list[DetectorResult]:
    """Reported, never deciding: PSI decides; the threshold shown is the JS level of the PSI alarm."""
    return [
        DetectorResult("js", i.name, "js_divergence", value, ctx.psi_alarm * _JS_PER_PSI, drift=False)
        for i, value in _by_bins(inputs, js_divergence_matrix)
    ]


def _chi2(inputs: Sequence[InputWindow], ctx: WindowContext) -> list[DetectorResult]:
    """Raw (uncorrected) chi-square results with Cohen's w as the effect size."""
    out = []
    for i in inputs:
        observed = i.observed
        if observed == 0:
            continue
        stat, p = chi_square(i.reference_counts, i.window_counts)
        out.append(
            DetectorResult(
                "chi2",
                i.name,
                "chi2",
                stat,
                ctx.settings.chi2_min_effect,
                drift=False,
                p_value=p,
                effect_size=cohens_w(stat, observed),
            )
        )
    return out


def _ks(inputs: Sequence[InputWindow], ctx: WindowContext) -> list[DetectorResult]:
    """Raw (uncorrected) KS results on the samples, all inputs in one vectorised p-value call."""
    names: list[str] = []
    refs: list[np.ndarray] = []
    samples: list[np.ndarray] = []
    for i in inputs:
        ref, sample = i.reference_sample, i.window_sample
        if ref is None or sample is None or i.observed == 0:
            continue
        if len(ref) >= _MIN_KS_SAMPLE and len(sample) >= _MIN_KS_SAMPLE:
            names.append(i.name)
            refs.append(ref)
            samples.append(sample)
    if not names:
        return []
    stats, p_values = ks_2samp_sorted_many(refs, samples)
    min_effect = ctx.settings.ks_min_effect
    return [
        DetectorResult(
            "ks", f, "ks_statistic", float(d), min_effect, drift=False, p_value=float(p), effect_size=float(d)
        )
        for f, d, p in zip(names, stats, p_values, strict=True)
    ]


def _out_of_range(inputs: Sequence[InputWindow], ctx: WindowContext) -> list[DetectorResult]:
    return [
        out_of_range_check(
            i.below, i.above, int(i.observed), feature=i.name, max_rate=ctx.settings.out_of_range_rate
        )
        for i in inputs
        if i.observed > 0
    ]


def _new_category(inputs: Sequence[InputWindow], ctx: WindowContext) -> list[DetectorResult]:
    return [
        new_category_check(
            i.new_categories, int(i.observed), feature=i.name, max_rate=ctx.settings.new_category_rate
        )
        for i in inputs
        if i.observed > 0
    ]


def _volume(inputs: Sequence[InputWindow], ctx: WindowContext) -> list[DetectorResult]:
    s = ctx.settings
    return [
        volume_check(
            ctx.events,
            ctx.seconds,
            ctx.reference_event_rate,
            low_ratio=s.volume_ratio_low,
            high_ratio=s.volume_ratio_high,
        )
    ]


# -- the table ---------------------------------------------------------------------------------
_FEATURES: frozenset[Target] = frozenset({"numeric", "categorical"})

MISSING_RATE = WindowDetectorSpec(
    name="integrity:missing_rate",
    statistic="missing_rate",
    applies_to=_FEATURES,
    kind="integrity",
    evaluate=_missing_rate,
    settings=("detectors.missing_rate_delta",),
    metrics=(MetricSpec("stream_monitor_feature_missing_rate", "Fraction of missing values in the window"),),
)
PSI = WindowDetectorSpec(
    name="psi",
    statistic="psi",
    applies_to=frozenset({"numeric", "categorical", "prediction"}),
    kind="drift",
    evaluate=_psi,
    settings=("policy.psi_warning", "policy.psi_alarm", "detectors.psi_epsilon"),
    metrics=(
        MetricSpec("stream_monitor_feature_psi", "Population stability index of the last window"),
        MetricSpec("stream_monitor_prediction_psi", "PSI of the prediction distribution", "prediction"),
        MetricSpec(
            "stream_monitor_prediction_drift_detected",
            "1 when prediction drift is detected",
            "prediction",
            "drift",
        ),
    ),
    calibration=(
        CalibrationHook("policy.psi_alarm", "feature"),
        CalibrationHook("policy.prediction_psi_alarm", "prediction"),
    ),
    flags_drift=True,
    status=StatusColumn("PSI"),
)
CHI2 = WindowDetectorSpec(
    name="chi2",
    statistic="chi2",
    applies_to=frozenset({"categorical"}),
    kind="drift",
    evaluate=_chi2,
    settings=("detectors.alpha", "detectors.chi2_min_effect"),
    calibration=(CalibrationHook("detectors.chi2_min_effect", "feature", "effect_size"),),
    flags_drift=True,
    family_test=True,
)
KS = WindowDetectorSpec(
    name="ks",
    statistic="ks_statistic",
    applies_to=frozenset({"numeric", "prediction"}),
    kind="drift",
    evaluate=_ks,
    settings=("detectors.alpha", "detectors.ks_min_effect"),
    metrics=(
        MetricSpec("stream_monitor_feature_ks_statistic", "KS statistic vs the reference sample"),
        MetricSpec(
            "stream_monitor_feature_ks_pvalue",
            "KS p-value (Holm-adjusted across the model's tests)",
            field="p_value",
        ),
    ),
    calibration=(CalibrationHook("detectors.ks_min_effect", "feature", "effect_size"),),
    flags_drift=True,
    family_test=True,
    status=StatusColumn("KS"),
)
JS = WindowDetectorSpec(
    name="js",
    statistic="js_divergence",
    applies_to=frozenset({"numeric", "categorical", "prediction"}),
    kind="drift",
    evaluate=_js,
    settings=("policy.psi_alarm",),
    metrics=(MetricSpec("stream_monitor_feature_js_divergence", "Jensen-Shannon divergence (base 2)"),),
    status=StatusColumn("JS", digits=4),
)
OUT_OF_RANGE = WindowDetectorSpec(
    # Not "integrity:": values beyond the training range are drift evidence (seed 003's warming
    # temperatures), not a broken pipeline, so such windows stay eligible for retraining.
    name="out_of_range",
    statistic="out_of_range_rate",
    applies_to=frozenset({"numeric"}),
    kind="effect",
    evaluate=_out_of_range,
    settings=("detectors.out_of_range_rate",),
    metrics=(MetricSpec("stream_monitor_feature_out_of_range_rate", "Fraction outside the reference range"),),
)
NEW_CATEGORY = WindowDetectorSpec(
    name="integrity:new_category",
    statistic="new_category_rate",
    applies_to=frozenset({"categorical"}),
    kind="integrity",
    evaluate=_new_category,
    settings=("detectors.new_category_rate",),
)
VOLUME = WindowDetectorSpec(
    name="integrity:volume",
    statistic="volume_ratio",
    applies_to=frozenset({"model"}),
    kind="integrity",
    evaluate=_volume,
    settings=("detectors.volume_ratio_low", "detectors.volume_ratio_high"),
    metrics=(
        MetricSpec("stream_monitor_volume_ratio", "Window event rate over the reference rate", "model"),
    ),
)

#: Every window detector, in result order (see the module docstring).
WINDOW_DETECTORS: tuple[WindowDetectorSpec, ...] = (
    MISSING_RATE,
    PSI,
    CHI2,
    KS,
    JS,
    OUT_OF_RANGE,
    NEW_CATEGORY,
    VOLUME,
)

_index: tuple[tuple[WindowDetectorSpec, ...], dict[str, WindowDetectorSpec]] | None = None


def window_detectors() -> tuple[WindowDetectorSpec, ...]:
    """The table as it is now (read at call time, so a test can register a detector)."""
    return WINDOW_DETECTORS


def spec_of(detector: str) -> WindowDetectorSpec | None:
    """The spec of a result's ``detector`` name; None for anything that is not a window detector
    (``performance``, ``segment_surge``, …)."""
    global _index
    table = WINDOW_DETECTORS
    if _index is None or _index[0] is not table:
        _index = (table, {spec.name: spec for spec in table})
    return _index[1].get(detector)
