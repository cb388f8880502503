"""Threshold calibration: drift thresholds from the reference data for a whole-model false-alarm budget.

The defaults (PSI 0.15, KS effect 0.1, …) are generic; how much a statistic moves between two windows
of *unchanged* data depends on the window size, the bins, the number of features and their shapes. So
``calibrate`` measures it: it repeatedly splits the reference data in two at random (permutation), builds
a profile from one half and draws windows of the configured size from the other half with replacement
(bootstrap), and evaluates every such null window with the real detectors. For each detector family it
takes, per null window, the *largest* statistic over all key features — so the correlation between
features is accounted for exactly — and sets the family's threshold at the quantile of these maxima that
leaves ``budget / families`` alarms per window (Bonferroni across the families: data PSI, KS effect,
chi-square effect, prediction PSI). Beyond the reach of the empirical quantile (a budget smaller than
1 / windows), the maxima are extrapolated with a Gumbel fit (method of moments), the law of maxima.

The budget is stated as false triggers per million events for the whole model, and converted to a
per-window alarm probability without credit for the policy's ``consecutive_windows`` requirement, so the
trigger rate on stationary data is lower still (the harness in ``bench/quality.py`` measures it). The
profile half is noisier than a profile of the whole reference, which also errs on the safe side.

Pure: no files, no clock; seeded.

>>> import numpy as np
>>> from stream_monitor.core.events import PredictionBatch
>>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
>>> from stream_monitor.core.settings import ModelSettings, WindowSettings
>>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric", key=True),))
>>> rng = np.random.default_rng(0)
>>> n = 20_000
>>> x = rng.normal(size=n)
>>> data = PredictionBatch("m", np.arange(n), [f"r{i}" for i in range(n)], np.arange(n, dtype=float),
...     [None] * n, x[None, :], [], x.copy(), [None] * n, {}, 0)
>>> settings = ModelSettings(window=WindowSettings(size=1000))
>>> cal = calibrate(schema, data, settings, budget_per_million=10.0, windows=40, seed=1)
>>> 0.0 < cal.settings.policy.psi_alarm < settings.policy.psi_alarm
True
>>> sorted(cal.thresholds)
['chi2_min_effect', 'ks_min_effect', 'prediction_psi_alarm', 'psi_alarm']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from stream_monitor.core.detectors.table import PREDICTION, CalibrationHook, spec_of, window_detectors
from stream_monitor.core.evaluation import evaluate_window
from stream_monitor.core.events import PredictionBatch
from stream_monitor.core.reference import build_reference
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import ModelSettings
from stream_monitor.core.sketches import WindowSketch
from stream_monitor.core.windows import ClosedWindow, take_batch

__all__ = ["Calibration", "calibrate", "calibration_hooks", "gumbel_quantile"]
_EULER_GAMMA = 0.5772156649015329


@dataclass(frozen=True)
class Calibration:
    """Calibrated thresholds, the settings that carry them, and the null distributions behind them."""

    settings: ModelSettings
    thresholds: dict[str, float]
    per_window_budget: float
    windows: int
    window_events: int
    null_maxima: dict[str, np.ndarray] = field(repr=False, default_factory=dict)


def calibration_hooks() -> tuple[CalibrationHook, ...]:
    """The thresholds to calibrate, each given an equal share of the budget: the calibration hooks of
    the window detectors (:mod:`stream_monitor.core.detectors.table`), in table order.

    >>> [hook.name for hook in calibration_hooks()]
    ['psi_alarm', 'prediction_psi_alarm', 'chi2_min_effect', 'ks_min_effect']
    """
    return tuple(hook for spec in window_detectors() for hook in spec.calibration)


def gumbel_quantile(maxima: np.ndarray, q: float) -> float:
    """The ``q`` quantile of a Gumbel law fitted to ``maxima`` by the method of moments.

    >>> rng = np.random.default_rng(0)
    >>> m = rng.gumbel(loc=1.0, scale=0.5, size=20_000)
    >>> round(gumbel_quantile(m, 0.99), 1), round(float(np.quantile(m, 0.99)), 1)
    (3.3, 3.3)
    """
    maxima = np.asarray(maxima, dtype=float)
    scale = float(np.std(maxima)) * math.sqrt(6.0) / math.pi
    loc = float(np.mean(maxima)) - _EULER_GAMMA * scale
    return loc - scale * math.log(-math.log(q))


def _threshold(maxima: np.ndarray, tail: float) -> float:
    """Smallest threshold with at most ``tail`` of the null maxima at or above it."""
    if maxima.size == 0:
        return math.nan
    q = 1.0 - tail
    empirical = float(np.max(maxima)) if tail * maxima.size < 1.0 else float(np.quantile(maxima, q))
    if tail * maxima.size >= 1.0:
        return empirical
    # Too few windows to see this far into the tail: extrapolate, never below what was seen.
    return max(empirical, gumbel_quantile(maxima, q))


def calibrate(
    schema: ModelSchema,
    data: PredictionBatch,
    settings: ModelSettings | None = None,
    *,
    budget_per_million: float = 1.0,
    windows: int = 200,
    window_events: int | None = None,
    splits: int | None = None,
    seed: int = 0,
    margin: float = 1.0,
) -> Calibration:
    """Thresholds for ``schema`` from reference ``data`` so the whole model raises at most
    ``budget_per_million`` false alarms per million stationary events.

    ``window_events`` defaults to the count-window size (set it for event-time windows: the expected
    events per window). ``windows`` null windows are drawn over ``splits`` random halvings of the data
    (default: one halving per 25 windows). ``margin`` multiplies every threshold (≥ 1 is safer).
    Raises ``ValueError`` if the data is too small to draw windows from.
    """
    settings = settings or ModelSettings()
    n = len(data.ts)
    size = int(window_events or settings.window.size)
    if n < 4 or size < 2 or windows < 2:
        raise ValueError(f"model {schema.model_id}: need data and windows to calibrate (got {n} events)")
    budget_per_window = min(0.5, budget_per_million * size / 1e6)
    hooks = calibration_hooks()
    tail = budget_per_window / len(hooks)
    splits = splits or max(1, windows // 25)
    rng = np.random.default_rng(seed)
    d = settings.detectors
    key = set(schema.key_features) or set(f.name for f in schema.features)
    maxima: dict[str, list[float]] = {hook.name: [] for hook in hooks}
    per_split = [windows // splits + (1 if i < windows % splits else 0) for i in range(splits)]
    for count in per_split:
        order = rng.permutation(n)
        half = n // 2
        profile_part, window_part = order[:half], order[half:]
        labels = None
        reference = build_reference(
            schema,
            take_batch(data, profile_part),
            labels,
            bins=d.bins,
            top_k=d.top_k,
            sample_size=d.reference_sample,
            seed=int(rng.integers(1 << 31)),
        )
        for w in range(count):
            picks = window_part[rng.integers(0, len(window_part), size=size)]
            window = take_batch(data, picks)
            # Bootstrap repeats events: give the copies distinct ids so the sampler sees distinct events.
            window.event_id = [f"{i}:{e}" for i, e in enumerate(window.event_id)]
            sketch = WindowSketch(schema, reference, sample_size=d.window_sample, seed=w)
            sketch.update(window)
            results = evaluate_window(schema, reference, ClosedWindow(0.0, 1.0, w, sketch), d)
            best = dict.fromkeys(maxima, 0.0)
            for r in results:
                spec = spec_of(r.detector)
                scope = "prediction" if r.feature == PREDICTION else "feature" if r.feature in key else None
                for hook in spec.calibration if spec is not None else ():
                    value = r.value if hook.statistic == "value" else r.effect_size
                    if hook.scope == scope and value is not None:
                        best[hook.name] = max(best[hook.name], value)
            for name, value in best.items():
                maxima[name].append(value)

    arrays = {name: np.asarray(v, dtype=float) for name, v in maxima.items()}
    thresholds: dict[str, float] = {}
    changes: dict[str, dict[str, float]] = {}  # settings section -> field -> calibrated threshold
    for hook in hooks:
        section, name = hook.setting.split(".")
        value = _threshold(arrays[name], tail) * margin
        # A family with no statistic (no categorical key feature, no score) keeps its configured threshold.
        thresholds[name] = value if value > 0 else getattr(getattr(settings, section), name)
        changes.setdefault(section, {})[name] = thresholds[name]
    sections = {section: replace(getattr(settings, section), **values) for section, values in changes.items()}
    p = settings.policy
    if "psi_alarm" in changes.get("policy", {}):
        # The PSI warning and critical levels keep their proportions to the alarm level.
        psi_alarm = thresholds["psi_alarm"]
        ratio = psi_alarm / p.psi_alarm
        sections["policy"] = replace(
            sections["policy"],
            psi_warning=p.psi_warning * ratio,
            psi_critical=max(p.psi_critical * ratio, psi_alarm),
        )
    return Calibration(
        settings=replace(settings, **sections),
        thresholds=thresholds,
        per_window_budget=budget_per_window,
        windows=windows,
        window_events=size,
        null_maxima=arrays,
    )
