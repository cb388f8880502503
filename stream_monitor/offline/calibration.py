"""Threshold calibration: drift thresholds from the training data for a whole-model false-alarm budget.

The defaults (PSI 0.15, KS effect 0.1, …) are generic; how much a statistic moves between windows of
*unchanged* data depends on the window size, the bins, the number of features and their shapes — and on
how much the data moves of itself over time. So ``calibrate`` measures it **in time order**: it sorts
the training data by event time, cuts it into ``splits`` consecutive time blocks (default 5), and for
each block builds a reference profile from the *other* blocks and draws windows of consecutive events of
the configured size from this block, evaluated with the real detectors against that reference. Every
null window is thus a stretch of real time compared with data from other times, as production windows
are compared with the training data: the normal non-stationarity of the training period (a season, a
campaign, a slow trend) is inside the budget rather than being called drift the day the model ships.
(Random halves of the data, as before, mix all times in both halves and only measure sampling noise:
on real streams they gave thresholds several times lower than the defaults that changed no outcome.)

For each detector family it takes, per null window, the *largest* statistic over all key features — so
the correlation between features is accounted for exactly — and sets the family's threshold at the
quantile of these maxima that leaves ``budget / families`` alarms per window (Bonferroni across the
families: data PSI, KS effect, chi-square effect, prediction PSI). Beyond the reach of the empirical
quantile (a budget smaller than 1 / windows), the maxima are extrapolated with a Gumbel fit (method of
moments), the law of maxima.

**Floors.** A threshold is never set below :data:`FLOORS`, the smallest drift worth a retrain alarm
whatever the data's noise — each statistic's conventional bound of a "small" change:

- PSI (features and prediction) 0.1: the population-stability convention calls a PSI below 0.1 no
  significant change (and seed 002 makes 0.1 the warning level); for a normal feature it is a mean shift
  of about a third of a standard deviation (PSI ≈ δ²);
- KS effect 0.08: the KS distance between two normal laws a fifth of a standard deviation apart, Cohen's
  "small" effect (d = 0.2: D = 2Φ(d/2) − 1 ≈ 0.08);
- chi-square effect (Cohen's w) 0.1: Cohen's "small" effect for frequencies.

Below these, an alarm would page for changes no model is retrained for, however clearly they stand out
of a very quiet stream; the floored families are reported.

**Out of time.** The thresholds are also checked on held-out time: for each block, thresholds are made
from the *other* blocks' windows alone and applied to this block's windows (each against its reference of
the other blocks); the share of held-out windows that would raise any alarm is the false-alarm rate to
expect on new time, printed beside the budget it should meet (:class:`HeldOutCheck`).

The budget is stated as false triggers per million events for the whole model, and converted to a
per-window alarm probability without credit for the policy's ``consecutive_windows`` requirement, so the
trigger rate on stationary data is lower still (the harness in ``bench/quality.py`` measures it).

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
>>> cal.settings.policy.psi_alarm, cal.floored["psi_alarm"]   # quiet data: held at the floor
(0.1, True)
>>> sorted(cal.thresholds), cal.held_out.windows
(['chi2_min_effect', 'ks_min_effect', 'prediction_psi_alarm', 'psi_alarm'], 40)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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

__all__ = [
    "FLOORS",
    "Calibration",
    "HeldOutCheck",
    "calibrate",
    "calibration_hooks",
    "gumbel_quantile",
    "window_events_for",
]
_EULER_GAMMA = 0.5772156649015329
#: Time blocks the training data is cut into when ``splits`` is not given.
DEFAULT_SPLITS = 5

#: Lowest threshold per calibrated family (see the module docstring for each one's reason).
FLOORS: dict[str, float] = {
    "psi_alarm": 0.1,
    "prediction_psi_alarm": 0.1,
    "ks_min_effect": 0.08,
    "chi2_min_effect": 0.1,
}


@dataclass(frozen=True)
class HeldOutCheck:
    """The thresholds' false alarms on held-out time: each block's windows against thresholds made
    from the other blocks' windows (``alarms`` windows with any alarm out of ``windows``, per family in
    ``by_family``), and the per-window budget they should meet."""

    blocks: int
    windows: int
    alarms: int
    by_family: dict[str, int]
    budget: float

    @property
    def rate(self) -> float:
        """Share of held-out windows that would raise an alarm (NaN without windows)."""
        return self.alarms / self.windows if self.windows else math.nan

    def summary(self) -> str:
        """One sentence: how many held-out windows would alarm, against the budget.

        >>> print(HeldOutCheck(5, 40, 0, {}, 0.001).summary())
        0 of 40 held-out windows would alarm (40 resolve rates down to 2.5 %); the budget is 0.1 %
        >>> print(HeldOutCheck(5, 200, 2, {"psi_alarm": 2, "ks_min_effect": 0}, 0.001).summary()[:64])
        2 of 200 held-out windows (1 %) would alarm (psi_alarm 2): above
        """
        if self.alarms == 0:
            text = (
                f"0 of {self.windows} held-out windows would alarm ({self.windows} resolve rates down to "
                f"{100 / max(self.windows, 1):.3g} %)"
            )
        else:
            families = ", ".join(f"{name} {n}" for name, n in self.by_family.items() if n)
            text = (
                f"{self.alarms} of {self.windows} held-out windows ({100 * self.rate:.3g} %) would alarm "
                f"({families})"
            )
        budget = f"{100 * self.budget:.3g} %"
        if self.alarms >= 2 and self.rate > self.budget:
            return (
                f"{text}: above the budget of {budget} per window — new time moves the statistics more "
                "than the other blocks did (raise --budget, or expect these alarms)"
            )
        return f"{text}; the budget is {budget}"


@dataclass(frozen=True)
class Calibration:
    """Calibrated thresholds, the settings that carry them, and the null distributions behind them.

    ``raw_thresholds`` are the quantiles before the floors; ``floored`` says which family was raised to
    its floor; ``held_out`` is the out-of-time check (see the module docstring)."""

    settings: ModelSettings
    thresholds: dict[str, float]
    per_window_budget: float
    windows: int
    window_events: int
    null_maxima: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    raw_thresholds: dict[str, float] = field(default_factory=dict)
    floored: dict[str, bool] = field(default_factory=dict)
    blocks: int = 0
    held_out: HeldOutCheck | None = None


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


def window_events_for(settings: ModelSettings, ts: np.ndarray) -> int:
    """Events per window: the count-window size, or for event-time windows the events the training
    data holds per window width (its event rate × the width).

    >>> from stream_monitor.core.settings import WindowSettings
    >>> s = ModelSettings(window=WindowSettings(kind="time", width=3600.0))
    >>> window_events_for(s, np.arange(0.0, 86400.0, 10.0))     # one event every 10 s
    360
    """
    w = settings.window
    if w.kind != "time":
        return int(w.size)
    ts = np.asarray(ts, dtype=np.float64)
    ts = ts[np.isfinite(ts)]
    span = float(ts.max() - ts.min()) if ts.size > 1 else 0.0
    if span <= 0:
        return int(w.size)
    # n events span n - 1 mean gaps.
    return max(2, round((ts.size - 1) * w.width / span))


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
    floors: Mapping[str, float] = FLOORS,
) -> Calibration:
    """Thresholds for ``schema`` from training ``data`` so the whole model raises at most
    ``budget_per_million`` false alarms per million stationary events; see the module docstring.

    ``window_events`` defaults to :func:`window_events_for` the model's windows. ``windows`` null
    windows of consecutive events are drawn, evenly spread over ``splits`` time blocks (default 5, at
    most one per window of data; windows overlap when there are more than fit side by side).
    ``margin`` multiplies every threshold (≥ 1 is safer); ``floors`` bounds them from below. Raises
    ``ValueError`` if the data holds fewer than two windows.
    """
    settings = settings or ModelSettings()
    n = len(data.ts)
    size = int(window_events or window_events_for(settings, np.asarray(data.ts)))
    if n < 4 or size < 2 or windows < 2 or n < 2 * size:
        raise ValueError(
            f"model {schema.model_id}: need at least two windows of {size} events to calibrate in time "
            f"order (got {n} events)"
        )
    budget_per_window = min(0.5, budget_per_million * size / 1e6)
    hooks = calibration_hooks()
    tail = budget_per_window / len(hooks)
    blocks = max(2, min(splits or DEFAULT_SPLITS, n // size))
    rng = np.random.default_rng(seed)
    d = settings.detectors
    key = set(schema.key_features) or set(f.name for f in schema.features)
    order = np.argsort(np.asarray(data.ts, dtype=np.float64), kind="stable")
    bounds = [round(k * n / blocks) for k in range(blocks + 1)]
    per_block = [windows // blocks + (1 if k < windows % blocks else 0) for k in range(blocks)]
    maxima: dict[str, list[float]] = {hook.name: [] for hook in hooks}
    block_of: list[int] = []
    for k, count in enumerate(per_block):
        lo, hi = bounds[k], bounds[k + 1]
        rest = np.concatenate([order[:lo], order[hi:]])
        reference = build_reference(
            schema,
            take_batch(data, rest),
            None,
            bins=d.bins,
            top_k=d.top_k,
            sample_size=d.reference_sample,
            seed=int(rng.integers(1 << 31)),
        )
        # Windows of consecutive events, spread evenly over the block (the last one ends at its end).
        starts = np.unique(np.round(np.linspace(lo, hi - size, max(count, 1))).astype(np.int64))[:count]
        for w, start in enumerate(starts):
            window = take_batch(data, order[start : start + size])
            sketch = WindowSketch(schema, reference, sample_size=d.window_sample, seed=int(start))
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
            block_of.append(k)

    arrays = {name: np.asarray(v, dtype=float) for name, v in maxima.items()}
    where = np.asarray(block_of)

    def thresholds_from(keep: np.ndarray) -> dict[str, tuple[float, float]]:
        """Per family: (quantile × margin, that raised to its floor; 0 without a statistic)."""
        out = {}
        for hook in hooks:
            raw = _threshold(arrays[hook.name][keep], tail) * margin
            raw = raw if raw > 0 else 0.0
            out[hook.name] = (raw, max(raw, floors.get(hook.name, 0.0)) if raw > 0 else 0.0)
        return out

    final = thresholds_from(np.ones(where.size, dtype=bool))
    held_alarms, by_family = 0, dict.fromkeys(arrays, 0)
    for k in range(blocks):
        inside = where == k
        if not inside.any() or inside.all():
            continue
        others = thresholds_from(~inside)
        hit = np.zeros(int(inside.sum()), dtype=bool)
        for name, (_, value) in others.items():
            if value > 0:
                over = arrays[name][inside] >= value
                by_family[name] += int(over.sum())
                hit |= over
        held_alarms += int(hit.sum())

    thresholds: dict[str, float] = {}
    changes: dict[str, dict[str, float]] = {}  # settings section -> field -> calibrated threshold
    for hook in hooks:
        section, name = hook.setting.split(".")
        # A family with no statistic (no categorical key feature, no score) keeps its configured threshold.
        value = final[name][1]
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
        windows=int(where.size),
        window_events=size,
        null_maxima=arrays,
        raw_thresholds={name: raw for name, (raw, _) in final.items()},
        floored={name: 0 < raw < value for name, (raw, value) in final.items()},
        blocks=blocks,
        held_out=HeldOutCheck(blocks, int(where.size), held_alarms, by_family, budget_per_window),
    )
