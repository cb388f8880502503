"""The retraining insight computed again without stream-monitor: decay horizon and changepoints.

Nothing here imports stream-monitor. Two computations, each from its definition:

**Decay horizon** (what ``stream-monitor plan`` calls its decay experiment). The history is cut into
periods of a given length; for *every* start period ``t`` with a full training window behind it, the
case's scikit-learn model is trained on the periods up to ``t`` (the last ``window`` of them, or all of
them) and scored on every later period ``t + k``; the *fresh* model of period ``t + k`` is the one
trained up to ``t + k − 1``. The relative degradation at lag ``k`` is the median, over the starts, of
how much worse the old model scores than the fresh one on the same period (AUC for a binary task;
WAPE = mean |error| / mean |label| for non-negative labels, else MAE). A lag counts when at least
:data:`MIN_STARTS` starts measured it; a period counts when it holds :data:`MIN_TEST_ROWS` rows (and
both classes, for AUC). The horizon is the number of lags before the first lag whose median
degradation exceeds the tolerance — the first such lag is ``horizon + 1``; lag 1 is the fresh model
itself.

**Changepoints** of the per-bucket feature distributions. Each bucket is summarised by the 10/25/50/
75/90 % quantiles of every numeric feature and the shares of every category; each dimension is put in
units of its own noise: the robust bucket-to-bucket scatter (1.4826 · MAD of first differences / √2, a
step or a steady trend moves the differences' median, not their MAD), never below the sampling noise
of the bucket summary (a bootstrap of each bucket's rows). The segmentation is the exact optimum
(optimal partitioning, the dynamic program that PELT prunes) of piecewise segments, each either
constant or linear in time, under the Bayesian information criterion: a segment costs its squared
residuals plus ``ln n`` per parameter (one level per dimension, or a level and a slope), plus ``ln n``
for the changepoint. A segment whose linear fit wins is a *trend*; the others are *levels*.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

DAY = 86400.0
WEEK = 7 * DAY
MIN_TEST_ROWS = 20
MIN_STARTS = 5
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
BOOTSTRAP = 200
_SEED = 20240915


# -- decay ----------------------------------------------------------------------------------------
def period_index(ts: pd.Series, seconds: float) -> tuple[np.ndarray, pd.Timestamp]:
    """Period number of each time and where period 0 starts: on the Monday on or before the first time
    when the length is a whole number of weeks, else at midnight (UTC) of the first time's day."""
    first = ts.min().normalize()
    if seconds % WEEK == 0:
        first = first - pd.Timedelta(days=first.dayofweek)
    index = ((ts - first) / pd.Timedelta(seconds=seconds)).to_numpy(dtype=np.float64)
    return np.floor(index).astype(np.int64), first


def choose_metric(task: str, y: np.ndarray) -> str:
    if task == "binary":
        return "auc"
    return "wape" if float(np.min(y)) >= 0 and float(np.mean(y)) > 0 else "mae"


def score(metric: str, y: np.ndarray, predicted: np.ndarray) -> float:
    if metric == "auc":
        return float(roc_auc_score(y, predicted)) if len(np.unique(y)) == 2 else math.nan
    error = float(np.mean(np.abs(predicted - y)))
    return error / float(np.mean(np.abs(y))) if metric == "wape" else error


def degradation(metric: str, old: float, fresh: float) -> float:
    """How much worse ``old`` is than ``fresh``, relative (AUC: higher is better)."""
    if not (math.isfinite(old) and math.isfinite(fresh)) or fresh == 0:
        return math.nan
    return (fresh - old) / abs(fresh) if metric == "auc" else (old - fresh) / abs(fresh)


@dataclass
class DecayCurve:
    lags: list[int]  # 1 = the period right after training (the fresh model itself)
    median: list[float]
    q25: list[float]
    q75: list[float]
    starts: list[int]  # starts that measured each lag
    horizon: int  # lags before the first whose median exceeds the tolerance
    bounded: bool  # False: no lag measured on enough starts exceeded it


@dataclass
class DecayResult:
    metric: str
    periods: int
    origin: pd.Timestamp
    window: int | None  # training periods (None: all periods up to the start)
    first_start: int
    curve: DecayCurve
    recent: DecayCurve  # from the latest half of the starts
    fits: int
    skipped_fits: list[str] = field(default_factory=list)


def _curve(loss: np.ndarray, first: int, tolerance: float) -> DecayCurve:
    """Quartiles per lag of ``loss[t, k]`` over starts ``t ≥ first``, and the horizon."""
    P = loss.shape[0]
    lags, med, q25, q75, n = [], [], [], [], []
    for k in range(1, P):
        values = loss[first:, k]
        values = values[np.isfinite(values)]
        if len(values) < MIN_STARTS:
            if k > 1 and not values.size:
                break
            lags.append(k)
            n.append(len(values))
            med.append(math.nan)
            q25.append(math.nan)
            q75.append(math.nan)
            continue
        a, b, c = np.percentile(values, [25, 50, 75])
        lags.append(k)
        n.append(len(values))
        med.append(float(b))
        q25.append(float(a))
        q75.append(float(c))
    horizon, bounded = 0, False
    for k, m in zip(lags, med, strict=True):
        if not math.isfinite(m):
            break
        if m > tolerance:
            bounded = True
            break
        horizon = k
    return DecayCurve(lags, med, q25, q75, n, max(horizon, 1), bounded)


def decay_horizon(
    frame: pd.DataFrame,
    features: Sequence[str],
    task: str,
    make_model: Callable[[], object],
    period_seconds: float,
    window: int | None,
    tolerance: float = 0.1,
) -> DecayResult:
    """The decay experiment of the module docstring on ``frame`` (``ts``, features, ``target``)."""
    frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
    period, origin = period_index(frame["ts"], period_seconds)
    P = int(period.max()) + 1
    by_period = [frame.loc[period == p] for p in range(P)]
    metric = choose_metric(task, frame["target"].to_numpy(dtype=np.float64))
    columns = list(features)
    first = (window or 1) - 1
    models: dict[int, object] = {}
    skipped: list[str] = []
    for t in range(first, P - 1):
        rows = pd.concat(by_period[(0 if window is None else t - window + 1) : t + 1])
        if rows.empty or (task == "binary" and rows["target"].nunique() < 2):
            skipped.append(f"period {t}: {len(rows)} rows, {rows['target'].nunique()} class(es)")
            continue
        model = make_model()
        model.fit(rows[columns], rows["target"])  # type: ignore[attr-defined]
        models[t] = model

    def scored(p: int) -> bool:
        rows = by_period[p]
        return len(rows) >= MIN_TEST_ROWS and (task != "binary" or rows["target"].nunique() == 2)

    S = np.full((P, P), math.nan)
    later = [u for u in range(P) if scored(u)]
    for t, model in models.items():
        targets = [u for u in later if u > t]
        if not targets:
            continue
        rows = pd.concat([by_period[u] for u in targets])  # one prediction call per model
        if task == "binary":
            predicted = model.predict_proba(rows[columns])[:, 1]  # type: ignore[attr-defined]
        else:
            predicted = model.predict(rows[columns])  # type: ignore[attr-defined]
        predicted = np.asarray(predicted, dtype=np.float64)
        offset = 0
        for u in targets:
            size = len(by_period[u])
            y = by_period[u]["target"].to_numpy(dtype=np.float64)
            S[t, u] = score(metric, y, predicted[offset : offset + size])
            offset += size
    loss = np.full((P, P), math.nan)  # loss[t, k]: start t, lag k
    for t in range(first, P - 1):
        for k in range(1, P - t):
            loss[t, k] = degradation(metric, S[t, t + k], S[t + k - 1, t + k])
    recent_from = first + (P - 1 - first) // 2
    return DecayResult(
        metric=metric,
        periods=P,
        origin=origin,
        window=window,
        first_start=first,
        curve=_curve(loss, first, tolerance),
        recent=_curve(loss, recent_from, tolerance),
        fits=len(models),
        skipped_fits=skipped,
    )


# -- changepoints ---------------------------------------------------------------------------------
@dataclass
class Segment:
    first: int  # positions in the bucket sequence, inclusive
    last: int
    kind: str  # "level" or "trend"


@dataclass
class Changepoints:
    segments: list[Segment]
    dimensions: list[str]
    noise: np.ndarray  # (d,) the noise unit of every dimension
    signal: np.ndarray  # (n, d) the bucket summaries in noise units

    @property
    def boundaries(self) -> list[int]:
        """Positions where a new segment starts (the first bucket of every segment but the first)."""
        return [s.first for s in self.segments[1:]]


def _summary(
    numeric: Sequence[np.ndarray], categorical: Sequence[np.ndarray], n_categories: Sequence[int]
) -> np.ndarray:
    """One bucket's summary: quantiles of each numeric column (missing values dropped) and the share of
    every category code; along the last axis, for one row set (1-D columns) or many (2-D: draws × rows)."""
    parts = []
    for values in numeric:
        parts.append(np.moveaxis(np.nanquantile(values, QUANTILES, axis=-1), 0, -1))
    for codes, k in zip(categorical, n_categories, strict=True):
        parts.append(np.stack([(codes == v).mean(axis=-1) for v in range(k)], axis=-1))
    return np.concatenate(parts, axis=-1)


def bucket_summaries(
    buckets: Sequence[pd.DataFrame], numeric: Sequence[str], categorical: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(n, d)`` summaries of the buckets, ``(d,)`` their sampling noise (median over buckets of a
    bootstrap standard error), and the dimensions' names."""
    pooled = pd.concat(list(buckets))
    categories = {name: sorted(pooled[name].astype(str).unique()) for name in categorical}
    names = [f"{f} q{int(q * 100)}" for f in numeric for q in QUANTILES] + [
        f"{f}={v}" for f, values in categories.items() for v in values
    ]
    sizes = [len(values) for values in categories.values()]
    rng = np.random.default_rng(_SEED)
    x, errors = [], []
    for b in buckets:
        num = [b[name].to_numpy(dtype=np.float64) for name in numeric]
        cat = [
            pd.Categorical(b[name].astype(str), categories=values).codes.astype(np.int64)
            for name, values in categories.items()
        ]
        x.append(_summary(num, cat, sizes))
        draw = rng.integers(0, len(b), size=(BOOTSTRAP, len(b)))
        errors.append(np.nanstd(_summary([v[draw] for v in num], [c[draw] for c in cat], sizes), axis=0))
    return np.array(x), np.nanmedian(np.array(errors), axis=0), names


def _fit_cost(y: np.ndarray, t: np.ndarray, linear: bool) -> float:
    """Squared residuals of a level (or a line in ``t``) per column of ``y``, summed."""
    if linear:
        A = np.column_stack([np.ones_like(t), t - t.mean()])
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        return float(np.sum((y - A @ coef) ** 2))
    return float(np.sum((y - y.mean(axis=0)) ** 2))


def changepoints(
    x: np.ndarray, times: np.ndarray, sampling_noise: np.ndarray, names: Sequence[str]
) -> Changepoints:
    """The segmentation of the module docstring of the ``(n, d)`` bucket summaries ``x`` at ``times``
    (bucket numbers: a gap between two numbers is time without a bucket)."""
    n = len(x)
    keep = np.isfinite(x).all(axis=0) & (np.nanstd(x, axis=0) > 0)
    x = x[:, keep]
    names = [name for name, k in zip(names, keep, strict=True) if k]
    d = x.shape[1]
    if n == 0 or d == 0:
        return Changepoints([Segment(0, max(n - 1, 0), "level")], names, np.zeros(d), x)
    diffs = np.diff(x, axis=0)
    mad = np.median(np.abs(diffs - np.median(diffs, axis=0)), axis=0) if n > 2 else np.zeros(d)
    noise = np.maximum(1.4826 * mad / math.sqrt(2), sampling_noise[keep])
    noise = np.where(noise > 0, noise, np.nanstd(x, axis=0) + 1e-12)
    z = x / noise
    t = np.asarray(times, dtype=np.float64)
    log_n = math.log(max(n, 2))
    # best[j]: the optimal cost of buckets 0 … j−1; a segment i … j−1 costs its fit plus its parameters.
    best = np.full(n + 1, np.inf)
    best[0] = -log_n  # the first segment has no changepoint to pay for
    choice: list[tuple[int, str]] = [(0, "level")] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            y, tt = z[i:j], t[i:j]
            options = [("level", _fit_cost(y, tt, False) + d * log_n)]
            if j - i >= 3:
                options.append(("trend", _fit_cost(y, tt, True) + 2 * d * log_n))
            kind, cost = min(options, key=lambda o: o[1])
            total = best[i] + log_n + cost
            if total < best[j]:
                best[j] = total
                choice[j] = (i, kind)
    segments: list[Segment] = []
    j = n
    while j > 0:
        i, kind = choice[j]
        segments.append(Segment(i, j - 1, kind))
        j = i
    return Changepoints(segments[::-1], list(names), noise, z)


def segment_fit(cp: Changepoints, segment: Segment, times: np.ndarray) -> Callable[[float], np.ndarray]:
    """The fitted level or line of ``segment`` (in noise units), as a function of time."""
    span = slice(segment.first, segment.last + 1)
    y, t = cp.signal[span], np.asarray(times, dtype=np.float64)[span]
    if segment.kind == "trend":
        centre = t.mean()
        A = np.column_stack([np.ones_like(t), t - centre])
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        return lambda at: coef[0] + coef[1] * (at - centre)
    level = y.mean(axis=0)
    return lambda at: level
