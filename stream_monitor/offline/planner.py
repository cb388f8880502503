"""``stream-monitor plan``: the offline retraining planner of seed 000 ("Part one").

Given historical labelled data with a time column and a model factory, it answers before production:

1. **Learning curve** — how much data does the model need? Fixed test set (the last
   ``test_periods`` periods), random training subsets of growing size from the periods before it;
   the suggested minimum is the smallest size within ``tolerance / 4`` of the full-size quality.
2. **Decay speed** — train on one period, score every later period; repeated from ``starts`` start
   periods and averaged by lag. The reference quality is 5-fold cross-validation within the
   training period ("fresh": a model scored on unseen rows of its own time). The **decay horizon**
   is the last lag before the quality falls more than ``tolerance`` (relative) below fresh.
3. **Retraining cadence** — replay the history retraining every ``k`` periods (on the last
   ``window`` periods) and score every period with the model of the day; the gain of each cadence
   over never retraining. Suggested: the longest cadence within ``tolerance / 2`` of retraining every
   period — retraining is not free.
4. **Dropping old data** — fixed test set, train on the last ``m`` periods for growing ``m``;
   suggested window: the shortest within ``tolerance / 4`` of the best.

The report (Markdown + PNG charts) ends with a suggested schedule and training window.

Models: ``--model-factory module:function`` returns an object with ``fit(X, y)`` and ``predict(X)``
or ``predict_proba(X)`` (scikit-learn style; scikit-learn itself works). Built in:
:func:`additive_bins` (regression; tree-like, it cannot extrapolate beyond its training range) and
:func:`logistic` (binary). Quality is MAE for regression (lower is better) and AUC for binary.

>>> data = synthetic_decay(periods=16, rows=1500, horizon=3, seed=1)
>>> plan = RetrainingPlanner(data, ridge, task="regression", starts=4).run()
>>> plan.decay.horizon
3
"""

from __future__ import annotations

import argparse
import csv
import importlib
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stream_monitor.core.quality import binary_auc, mae
from stream_monitor.errors import StreamMonitorError
from stream_monitor.progress import Progress

DAY = 86400.0


class Model(Protocol):
    def fit(self, X: np.ndarray, y: np.ndarray) -> Any: ...


# -- data -----------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """Labelled rows in time order: features ``X`` (n, d), target ``y``, period index per row."""

    X: np.ndarray
    y: np.ndarray
    period: np.ndarray  # int, 0 = first period
    feature_names: list[str]
    period_seconds: float = DAY
    start: float = 0.0

    @property
    def n_periods(self) -> int:
        return int(self.period.max()) + 1 if self.period.size else 0

    def rows(self, periods: Sequence[int] | range) -> np.ndarray:
        return np.flatnonzero(np.isin(self.period, np.asarray(list(periods))))


def synthetic_decay(
    periods: int = 30, rows: int = 3000, horizon: int = 4, tolerance: float = 0.1, seed: int = 0
) -> Dataset:
    """A regression whose concept rotates a little every period, planted to decay after ``horizon``.

    ``y = cos(θ_p) x1 + sin(θ_p) x2 + 0.5 x3 + ε`` with ``θ_p = ω p`` and unit noise. A model trained on
    period ``p`` has, at lag ``L``, an extra error variance ``4 sin²(ωL/2)``, so its MAE grows by
    ``sqrt(1 + 4 sin²(ωL/2)) - 1``; ``ω`` is chosen so that this crosses ``tolerance`` half-way
    between ``horizon`` and ``horizon + 1``.

    >>> d = synthetic_decay(periods=3, rows=10)
    >>> d.X.shape, d.n_periods
    ((30, 3), 3)
    """
    rng = np.random.default_rng(seed)
    growth = (1 + tolerance) ** 2 - 1  # extra variance at which MAE is `tolerance` worse
    omega = 2 * math.asin(math.sqrt(growth / 4)) / (horizon + 0.5)
    X = rng.normal(size=(periods * rows, 3))
    period = np.repeat(np.arange(periods), rows)
    theta = omega * period
    y = np.cos(theta) * X[:, 0] + np.sin(theta) * X[:, 1] + 0.5 * X[:, 2] + rng.normal(size=len(period))
    return Dataset(X, y, period, ["x1", "x2", "x3"])


def _read_rows(path: Path) -> list[dict[str, Any]]:
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json")):
        import gzip

        import orjson

        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as f:
            return [orjson.loads(line) for line in f if line.strip()]
    if name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise StreamMonitorError(
                "reading Parquet needs pyarrow: pip install 'stream-monitor[parquet]'"
            ) from exc
        return list(pq.read_table(path).to_pylist())
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _time(value: Any) -> float:
    from stream_monitor.core.events import parse_ts

    ts = parse_ts(value)
    if ts is None:
        try:
            ts = float(value)
        except (TypeError, ValueError):
            raise StreamMonitorError(f"cannot read time value {value!r}") from None
    return float(ts)


def load_dataset(
    path: str | Path,
    time_column: str,
    target: str,
    features: Sequence[str] | None = None,
    period_seconds: float = DAY,
    max_categories: int = 20,
) -> Dataset:
    """Read CSV / JSONL / Parquet rows into a :class:`Dataset` (categoricals one-hot, top categories)."""
    rows = _read_rows(Path(path))
    if not rows:
        raise StreamMonitorError(f"{path}: no rows")
    for col in (time_column, target):
        if col not in rows[0]:
            raise StreamMonitorError(f"{path}: no column {col!r} (columns: {', '.join(rows[0])})")
    names = list(features) if features else [c for c in rows[0] if c not in (time_column, target)]
    ts = np.array([_time(r[time_column]) for r in rows])
    y = np.array([float(r[target]) for r in rows])
    columns: list[np.ndarray] = []
    out_names: list[str] = []
    for name in names:
        raw = [r.get(name) for r in rows]
        try:
            columns.append(np.array([math.nan if v in (None, "") else float(v) for v in raw]))
            out_names.append(name)
        except (TypeError, ValueError):
            values, counts = np.unique([str(v) for v in raw], return_counts=True)
            for cat in values[np.argsort(-counts)][:max_categories]:
                columns.append(np.array([1.0 if str(v) == cat else 0.0 for v in raw]))
                out_names.append(f"{name}={cat}")
    X = np.column_stack(columns) if columns else np.zeros((len(rows), 0))
    X = np.where(np.isnan(X), np.nanmean(X, axis=0, keepdims=True), X)
    order = np.argsort(ts, kind="stable")
    start = math.floor(ts.min() / period_seconds) * period_seconds
    period = ((ts[order] - start) // period_seconds).astype(np.int64)
    return Dataset(X[order], y[order], period, out_names, period_seconds, start)


# -- models ---------------------------------------------------------------------------------------
class _Ridge:
    def __init__(self, alpha: float = 1e-3) -> None:
        self.alpha = alpha

    def fit(self, X: np.ndarray, y: np.ndarray) -> _Ridge:
        A = np.column_stack([X, np.ones(len(X))])
        self.coef_ = np.linalg.solve(A.T @ A + self.alpha * np.eye(A.shape[1]), A.T @ y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([X, np.ones(len(X))]) @ self.coef_


def ridge() -> _Ridge:
    """Linear least squares with a tiny ridge (regression)."""
    return _Ridge()


class _AdditiveBins:
    """Additive model on per-feature quantile bins, fitted by backfitting: constant beyond its range."""

    def __init__(self, bins: int = 16, rounds: int = 6) -> None:
        self.bins, self.rounds = bins, rounds

    def fit(self, X: np.ndarray, y: np.ndarray) -> _AdditiveBins:
        self.mean_ = float(np.mean(y))
        qs = np.linspace(0, 1, self.bins + 1)[1:-1]
        self.edges_ = [np.unique(np.quantile(X[:, j], qs)) for j in range(X.shape[1])]
        idx = [np.searchsorted(e, X[:, j], side="right") for j, e in enumerate(self.edges_)]
        self.tables_ = [np.zeros(len(e) + 1) for e in self.edges_]
        fitted = np.full(len(y), self.mean_)
        for _ in range(self.rounds):
            for j in range(X.shape[1]):
                fitted -= self.tables_[j][idx[j]]
                resid = y - fitted
                sums = np.bincount(idx[j], weights=resid, minlength=len(self.tables_[j]))
                counts = np.bincount(idx[j], minlength=len(self.tables_[j]))
                self.tables_[j] = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
                fitted += self.tables_[j][idx[j]]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = np.full(len(X), self.mean_)
        for j, e in enumerate(self.edges_):
            out += self.tables_[j][np.searchsorted(e, X[:, j], side="right")]
        return out


def additive_bins() -> _AdditiveBins:
    """Tree-like additive regression (binned backfitting): no extrapolation beyond the training range."""
    return _AdditiveBins()


class _Logistic:
    def fit(self, X: np.ndarray, y: np.ndarray) -> _Logistic:
        from scipy.optimize import minimize

        A = np.column_stack([X, np.ones(len(X))])
        self.mu_, self.sd_ = A.mean(axis=0), A.std(axis=0) + 1e-12
        self.mu_[-1], self.sd_[-1] = 0.0, 1.0
        Z = (A - self.mu_) / self.sd_

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            z = Z @ w
            p = 1 / (1 + np.exp(-z))
            nll = np.sum(np.logaddexp(0, z) - y * z) + 1e-3 * w @ w
            return float(nll), Z.T @ (p - y) + 2e-3 * w

        self.w_ = minimize(loss, np.zeros(Z.shape[1]), jac=True, method="L-BFGS-B").x
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        z = ((np.column_stack([X, np.ones(len(X))]) - self.mu_) / self.sd_) @ self.w_
        p = 1 / (1 + np.exp(-z))
        return np.column_stack([1 - p, p])


def logistic() -> _Logistic:
    """L2-regularised logistic regression (binary)."""
    return _Logistic()


def load_factory(spec: str) -> Callable[[], Any]:
    """``module:function`` → the factory (a short name resolves to this module's built-ins).

    >>> load_factory("ridge") is ridge, load_factory("stream_monitor.offline.planner:logistic") is logistic
    (True, True)
    """
    module, _, name = spec.rpartition(":")
    if not module:
        module, name = __name__, spec
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise StreamMonitorError(f"model factory {spec!r}: {exc}") from exc
    if not callable(factory):
        raise StreamMonitorError(f"model factory {spec!r} is not callable")
    return factory


# -- experiments ----------------------------------------------------------------------------------
@dataclass
class LearningCurve:
    sizes: list[int]
    scores: list[float]
    suggested_size: int


@dataclass
class Decay:
    lags: list[int]
    scores: list[float]  # mean over starts
    per_start: list[list[float]]
    fresh: float
    degradation: list[float]  # relative, > 0 = worse
    horizon: int  # periods


@dataclass
class Cadence:
    every: list[int]  # periods between retrains; 0 = never retrain
    scores: list[float]
    gain: list[float]  # relative improvement over never retraining
    suggested: int


@dataclass
class Window:
    periods: list[int]
    scores: list[float]
    suggested: int


@dataclass
class Plan:
    task: str
    metric: str
    higher_is_better: bool
    tolerance: float
    n_rows: int
    n_periods: int
    period_seconds: float
    learning_curve: LearningCurve
    decay: Decay
    cadence: Cadence
    window: Window
    charts: dict[str, str] = field(default_factory=dict)

    def schedule(self) -> str:
        unit = _unit(self.period_seconds)
        rows_per_period = self.n_rows / max(self.n_periods, 1)
        return (
            f"Retrain every {self.cadence.suggested} {unit}(s) on the last "
            f"{self.window.suggested} {unit}(s) of labelled data (about "
            f"{rows_per_period * self.window.suggested:,.0f} rows; the learning curve needs at least "
            f"{self.learning_curve.suggested_size:,}). Without retraining, quality stays within "
            f"{self.tolerance:.0%} of a fresh model for {self.decay.horizon} {unit}(s): do not wait "
            f"longer than that, and retrain at once when the monitor's triggers fire."
        )


def _unit(seconds: float) -> str:
    return {DAY: "day", 7 * DAY: "week", 3600.0: "hour"}.get(seconds, f"{seconds:g}s period")


class RetrainingPlanner:
    """Runs the four experiments of the module docstring on a :class:`Dataset`."""

    def __init__(
        self,
        data: Dataset,
        factory: Callable[[], Any],
        task: str = "regression",
        tolerance: float = 0.1,
        starts: int = 5,
        train_periods: int = 1,
        test_periods: int = 2,
        max_lag: int | None = None,
        seed: int = 0,
        progress: Callable[[int, int, str], None] | None = None,
    ) -> None:
        if data.n_periods < 4:
            raise StreamMonitorError(f"the planner needs at least 4 periods of data, got {data.n_periods}")
        self.data = data
        self.factory = factory
        self.task = task
        self.tolerance = tolerance
        self.starts = starts
        self.train_periods = train_periods
        self.test_periods = min(test_periods, max(1, data.n_periods // 4))
        self.max_lag = max_lag
        self.rng = np.random.default_rng(seed)
        self.progress = progress
        self.higher_is_better = task != "regression"
        self.metric = "mae" if task == "regression" else "auc"
        self._done = 0
        self._total = 0

    # quality of a model on rows
    def _fit(self, rows: np.ndarray) -> Any:
        model = self.factory()
        model.fit(self.data.X[rows], self.data.y[rows])
        self._tick()
        return model

    def _score(self, model: Any, rows: np.ndarray) -> float:
        X, y = self.data.X[rows], self.data.y[rows]
        if self.task == "regression":
            return mae(np.asarray(model.predict(X), dtype=np.float64) - y)
        if hasattr(model, "predict_proba"):
            proba = np.asarray(model.predict_proba(X))
            return binary_auc(proba[:, -1] if proba.ndim == 2 else proba, y > 0.5)
        return float(np.mean(np.asarray(model.predict(X)) == y))

    def _worse(self, score: float, ref: float) -> float:
        """Relative degradation of ``score`` against ``ref`` (positive = worse)."""
        if ref == 0 or math.isnan(ref) or math.isnan(score):
            return math.nan
        return (ref - score) / abs(ref) if self.higher_is_better else (score - ref) / abs(ref)

    def _tick(self, what: str = "fit") -> None:
        self._done += 1
        if self.progress is not None:
            self.progress(self._done, self._total, what)

    def run(self) -> Plan:
        P = self.data.n_periods
        lc_sizes = 7
        max_lag = self.max_lag or max(1, P - self.train_periods - 1)
        start_positions = self._starts(P, max_lag)
        cadences = [k for k in (1, 2, 3, 4, 6, 8, 12, 16) if k < P - 1] + [0]
        windows = [m for m in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32) if m <= P - self.test_periods]
        self._total = (
            lc_sizes * 3
            + len(start_positions)
            + sum(self._cadence_fits(k, P) for k in cadences)
            + len(windows)
        )
        return Plan(
            self.task,
            self.metric,
            self.higher_is_better,
            self.tolerance,
            len(self.data.y),
            P,
            self.data.period_seconds,
            self.learning_curve(lc_sizes),
            self.decay(start_positions, max_lag),
            self.cadence(cadences),
            self.window(windows),
        )

    def _starts(self, P: int, max_lag: int) -> list[int]:
        last = P - 2  # at least one later period to score
        first = self.train_periods - 1
        n = min(self.starts, last - first + 1)
        return sorted({round(x) for x in np.linspace(first, max(first, last - max_lag // 2), n)})

    def learning_curve(self, n_sizes: int = 7, repeats: int = 3) -> LearningCurve:
        P = self.data.n_periods
        test = self.data.rows(range(P - self.test_periods, P))
        pool = self.data.rows(range(P - self.test_periods))
        sizes = sorted({max(20, int(len(pool) * f)) for f in np.geomspace(0.02, 1.0, n_sizes)})
        scores = []
        for size in sizes:
            runs = []
            for _ in range(repeats):
                rows = np.sort(self.rng.choice(pool, size=min(size, len(pool)), replace=False))
                runs.append(self._score(self._fit(rows), test))
            scores.append(float(np.mean(runs)))
        self._done += (n_sizes - len(sizes)) * repeats
        full = scores[-1]
        ok = [s for s, v in zip(sizes, scores, strict=True) if self._worse(v, full) <= self.tolerance / 4]
        return LearningCurve(sizes, scores, ok[0] if ok else sizes[-1])

    def decay(self, starts: Sequence[int], max_lag: int) -> Decay:
        P = self.data.n_periods
        per_start: list[list[float]] = []
        fresh_scores = []
        for s in starts:
            rows = self.data.rows(range(s - self.train_periods + 1, s + 1))
            fresh_scores.append(self._fresh(rows))
            model = self._fit(rows)
            per_start.append(
                [
                    self._score(model, self.data.rows([s + lag])) if s + lag < P else math.nan
                    for lag in range(1, max_lag + 1)
                ]
            )
        arr = np.array(per_start, dtype=float)
        with np.errstate(all="ignore"):
            lag_scores = [
                float(np.nanmean(arr[:, j])) if np.any(~np.isnan(arr[:, j])) else math.nan
                for j in range(arr.shape[1])
            ]
        fresh = float(np.mean(fresh_scores))
        degradation = [self._worse(v, fresh) for v in lag_scores]
        horizon = 0
        for lag, d in enumerate(degradation, start=1):
            if math.isnan(d) or d > self.tolerance:
                break
            horizon = lag
        return Decay(list(range(1, max_lag + 1)), lag_scores, per_start, fresh, degradation, horizon)

    def _fresh(self, rows: np.ndarray, folds: int = 5) -> float:
        """Quality of a model on its own period, unseen rows: ``folds``-fold cross-validation."""
        fold = self.rng.permutation(len(rows)) % folds
        scores = []
        for k in range(folds):
            model = self.factory().fit(self.data.X[rows[fold != k]], self.data.y[rows[fold != k]])
            scores.append(self._score(model, rows[fold == k]))
        return float(np.mean(scores))

    def _cadence_fits(self, k: int, P: int) -> int:
        first = self.train_periods
        return 1 if k == 0 else len(range(first, P, k))

    def cadence(self, cadences: Sequence[int]) -> Cadence:
        P = self.data.n_periods
        first = self.train_periods  # first scored period
        results = []
        for k in cadences:
            model = None
            scores = []
            for p in range(first, P):
                if model is None or (k > 0 and (p - first) % k == 0):
                    model = self._fit(self.data.rows(range(max(0, p - self.train_periods), p)))
                scores.append(self._score(model, self.data.rows([p])))
            results.append(float(np.nanmean(scores)))
        never = results[cadences.index(0)] if 0 in cadences else math.nan
        gain = [-self._worse(v, never) for v in results]
        best = results[0]
        ok = [
            k
            for k, v in zip(cadences, results, strict=True)
            if k > 0 and self._worse(v, best) <= self.tolerance / 2
        ]
        return Cadence(list(cadences), results, gain, max(ok) if ok else 1)

    def window(self, windows: Sequence[int]) -> Window:
        P = self.data.n_periods
        test = self.data.rows(range(P - self.test_periods, P))
        end = P - self.test_periods
        scores = [self._score(self._fit(self.data.rows(range(end - m, end))), test) for m in windows]
        best = max(scores) if self.higher_is_better else min(scores)
        ok = [m for m, v in zip(windows, scores, strict=True) if self._worse(v, best) <= self.tolerance / 4]
        return Window(list(windows), scores, ok[0] if ok else windows[-1])


# -- report ---------------------------------------------------------------------------------------
def write_report(plan: Plan, out_dir: str | Path, title: str = "Retraining plan") -> Path:
    """Markdown report with four PNG charts in ``out_dir``; returns the report's path."""
    from stream_monitor.offline.charts import pyplot

    plt = pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    unit = _unit(plan.period_seconds)
    better = "higher is better" if plan.higher_is_better else "lower is better"

    def chart(name: str, draw: Callable[[Any], None]) -> str:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        draw(ax)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        plan.charts[name] = str(out / name)
        return name

    lc, dc, cd, wd = plan.learning_curve, plan.decay, plan.cadence, plan.window

    def draw_lc(ax: Any) -> None:
        ax.plot(lc.sizes, lc.scores, marker="o")
        ax.axvline(
            lc.suggested_size, color="#e45756", linestyle="--", label=f"enough: {lc.suggested_size:,} rows"
        )
        ax.set_xscale("log")
        ax.set(xlabel="training rows", ylabel=f"{plan.metric} ({better})", title="Learning curve")
        ax.legend()

    def draw_decay(ax: Any) -> None:
        for row in dc.per_start:
            ax.plot(dc.lags, row, color="#9ecae9", linewidth=1)
        ax.plot(dc.lags, dc.scores, marker="o", color="#4c78a8", label="mean over starts")
        limit = dc.fresh * (1 - plan.tolerance if plan.higher_is_better else 1 + plan.tolerance)
        ax.axhline(dc.fresh, color="#54a24b", label="fresh model")
        ax.axhline(limit, color="#e45756", linestyle="--", label=f"{plan.tolerance:.0%} worse")
        ax.axvline(
            dc.horizon + 0.5, color="#f58518", linestyle=":", label=f"decay horizon: {dc.horizon} {unit}(s)"
        )
        ax.set(xlabel=f"{unit}s since training", ylabel=f"{plan.metric} ({better})", title="Decay speed")
        ax.legend(fontsize=8)

    def draw_cadence(ax: Any) -> None:
        labels = [str(k) if k else "never" for k in cd.every]
        colours = ["#e45756" if k == cd.suggested else "#4c78a8" for k in cd.every]
        ax.bar(labels, cd.scores, color=colours)
        lo, hi = min(cd.scores), max(cd.scores)
        ax.set_ylim(lo - (hi - lo) * 0.5 - 1e-9, hi + (hi - lo) * 0.2 + 1e-9)
        ax.set(
            xlabel=f"retrain every … {unit}s",
            ylabel=f"mean {plan.metric} ({better})",
            title="Retraining cadence",
        )

    def draw_window(ax: Any) -> None:
        ax.plot(wd.periods, wd.scores, marker="o")
        ax.axvline(
            wd.suggested, color="#e45756", linestyle="--", label=f"suggested: last {wd.suggested} {unit}(s)"
        )
        ax.set(
            xlabel=f"train on the last … {unit}s",
            ylabel=f"{plan.metric} ({better})",
            title="Dropping old data",
        )
        ax.legend()

    names = [
        chart("learning_curve.png", draw_lc),
        chart("decay.png", draw_decay),
        chart("cadence.png", draw_cadence),
        chart("training_window.png", draw_window),
    ]

    def row(values: Sequence[float]) -> str:
        return " | ".join(f"{v:.4g}" for v in values)

    text = f"""# {title}

{plan.n_rows:,} labelled rows over {plan.n_periods} {unit}s; task {plan.task};
quality = {plan.metric} ({better}); tolerance {plan.tolerance:.0%}.

## Suggested schedule

**{plan.schedule()}**

## 1. Learning curve — how much data does the model need?

![learning curve]({names[0]})

| rows | {" | ".join(f"{s:,}" for s in lc.sizes)} |
|---|{"---|" * len(lc.sizes)}
| {plan.metric} | {row(lc.scores)} |

Within {plan.tolerance / 4:.1%} of the full training set from **{lc.suggested_size:,} rows**.

## 2. Decay speed — how fast does a model age?

![decay]({names[1]})

Trained on one {unit}, scored on every later {unit}, from {len(dc.per_start)} starts. Fresh quality
{dc.fresh:.4g}; the mean quality stays within {plan.tolerance:.0%} for **{dc.horizon} {unit}(s)**.

| lag | {" | ".join(str(lag) for lag in dc.lags)} |
|---|{"---|" * len(dc.lags)}
| {plan.metric} | {row(dc.scores)} |
| worse by | {" | ".join(f"{d:+.1%}" for d in dc.degradation)} |

## 3. Retraining cadence — what does each retrain buy?

![cadence]({names[2]})

| retrain every | {" | ".join(str(k) if k else "never" for k in cd.every)} |
|---|{"---|" * len(cd.every)}
| mean {plan.metric} | {row(cd.scores)} |
| gain over never | {" | ".join(f"{g:+.1%}" for g in cd.gain)} |

## 4. Dropping old data — does older data help?

![training window]({names[3]})

| last … {unit}s | {" | ".join(str(m) for m in wd.periods)} |
|---|{"---|" * len(wd.periods)}
| {plan.metric} | {row(wd.scores)} |
"""
    path = out / "retraining_plan.md"
    path.write_text(text)
    return path


# -- CLI ------------------------------------------------------------------------------------------
def demo_dataset(stations: int = 60, days: int = 40) -> Dataset:
    """The demo's bike-sharing story as a labelled table (features, demand, time)."""
    from stream_monitor.offline.demo_data import WEATHER, BikeStory

    story = BikeStory(stations=stations, days=days)
    rows_x, rows_y, rows_t = [], [], []
    for events, labels in (story.training(), story.production()):
        truth = {lab["event_id"]: lab["label"] for lab in labels}
        for e in events:
            f = e["features"]
            rows_x.append(
                [
                    f["temp"],
                    f["atemp"],
                    f["humidity"],
                    f["windspeed"],
                    f["hour"],
                    float(WEATHER.index(f["weather"])),
                ]
            )
            rows_y.append(truth[e["event_id"]])
            rows_t.append(e["ts"])
    t = np.array(rows_t)
    order = np.argsort(t, kind="stable")
    start = math.floor(t.min() / DAY) * DAY
    return Dataset(
        np.array(rows_x)[order],
        np.array(rows_y)[order],
        ((t[order] - start) // DAY).astype(np.int64),
        ["temp", "atemp", "humidity", "windspeed", "hour", "weather"],
        DAY,
        start,
    )


def cmd_plan(args: argparse.Namespace) -> int:
    if args.demo:
        data = demo_dataset()
        task = "regression"
        factory_spec = args.model_factory or "additive_bins"
    else:
        if not (args.data and args.time_column and args.target):
            raise StreamMonitorError("plan needs DATA, --time-column and --target (or --demo)")
        data = load_dataset(args.data, args.time_column, args.target, args.features, args.period_seconds)
        task = args.task
        factory_spec = args.model_factory or ("additive_bins" if task == "regression" else "logistic")
    factory = load_factory(factory_spec)
    print(
        f"planning on {len(data.y):,} rows over {data.n_periods} periods with {factory_spec} ({task})",
        file=sys.stderr,
    )
    planner = RetrainingPlanner(
        data,
        factory,
        task=task,
        tolerance=args.tolerance,
        starts=args.starts,
        train_periods=args.train_periods,
        progress=None if args.quiet else Progress(what="fit"),
    )
    plan = planner.run()
    report = write_report(plan, args.out)
    print(plan.schedule())
    print(f"wrote {report} and " + ", ".join(plan.charts.values()))
    return 0


def add_plan_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="offline retraining planner: learning curve, decay, cadence, window")
    p.add_argument("data", nargs="?", help="historical labelled data: CSV, JSONL or Parquet")
    p.add_argument("--demo", action="store_true", help="use the demo's bike-sharing story as the data")
    p.add_argument("--time-column", help="event time column (epoch seconds or RFC 3339)")
    p.add_argument("--target", help="label column")
    p.add_argument("--features", nargs="*", help="feature columns (default: all others)")
    p.add_argument("--task", choices=("regression", "binary"), default="regression")
    p.add_argument(
        "--model-factory",
        help="module:function returning fit/predict(_proba); built in: additive_bins, ridge, logistic",
    )
    p.add_argument("--period-seconds", type=float, default=DAY, help="length of one period (default: a day)")
    p.add_argument("--tolerance", type=float, default=0.1, help="acceptable relative quality loss")
    p.add_argument("--starts", type=int, default=5, help="decay experiment: number of start periods")
    p.add_argument("--train-periods", type=int, default=1, help="periods per training set in decay/cadence")
    p.add_argument("--out", default="retraining-plan", help="folder for the report and charts")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_plan)
