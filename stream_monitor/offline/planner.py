"""``stream-monitor plan``: the offline retraining planner of seed 000 ("Part one").

Given labelled history with a time and a model factory, it answers before production "retrain every
N periods on the last M periods", and says why. Every experiment is **out of time**: a model is
trained on periods up to ``t`` and scored on a later period it never saw — never on shuffled rows of its
own period, which would make every later period look decayed at once.

0. **Period** — chosen from the data rate: the shortest of a day, a week or four weeks whose median
   period holds :data:`MIN_ROWS_PER_PERIOD` rows (below that one period's error moves by about the
   tolerance from sampling alone). Shorter than a day is never chosen: it would compare the hours of a
   daily cycle with each other. ``--period-seconds`` overrides it (a warning below the minimum).
1. **Learning curve** — how many rows does the model need? Random subsets of growing size from the
   periods before the last ``test_periods`` (the last that hold rows, when the latest are empty), scored
   on those; enough = the smallest size within ``tolerance / 4`` of the full pool.
2. **Training window** — train on the last ``m`` periods before each of the last few periods, score on
   that period; suggested: the shortest window within ``tolerance / 4`` of the best, reconciled with the
   learning curve (:func:`choose_window` says which constraint wins and why).
3. **Decay** — with that window, one model per start period ``t`` (all of them, or the latest
   ``starts``), scored on every later period ``t + L``. "Fresh" is the model trained up to ``t + L - 1``
   scored on the *same* period, so each comparison is paired: a level that moves over the history (demand
   tripling) moves both and cancels. Per lag: the median and interquartile range of the relative loss
   across starts (lags measured on fewer than :data:`MIN_STARTS_PER_LAG` starts are not used). The
   **decay horizon** is the last lag before the median loss exceeds ``tolerance``.
4. **Cadence** — the same models replay the history retraining every ``k`` periods (every phase of the
   schedule); the loss against retraining every period, mean and range over phases. Suggested: the
   longest cadence whose loss stays within ``tolerance / 2`` — never longer than the decay horizon
   (:func:`choose_cadence`).

The advice is one sentence per decision, each with the figure behind it (:class:`Advice`).

**Gaps and classes.** No model is trained on nothing: a training set without rows — or, for a binary
task, of one class — is not fitted (:meth:`RetrainingPlanner._fit` returns None). Periods without rows
(a survey that skips years) are listed in a warning and never scored; lags and cadences still count them
as time. The window experiment leaves out a window length with nothing to train on before some test
period; a decay start without a model is reported, and the cadence replay keeps the model before it. A
binary task warns when a period holds fewer than :data:`MIN_CLASS_ROWS_PER_PERIOD` of the rarer class.

Models: ``--model-factory module:function`` returns an object with ``fit(X, y)`` and ``predict(X)``
or ``predict_proba(X)`` (scikit-learn style; scikit-learn itself works). Built in:
:func:`additive_bins` (regression; tree-like, it cannot extrapolate beyond its training range),
:func:`ridge` (regression) and :func:`logistic` (binary). Quality (:mod:`stream_monitor.core.quality`):
AUC for binary; for regression WAPE (MAE / mean |label|) when the labels are non-negative — counts,
amounts, prices: their level moves and the absolute error with it — else MAE (``--metric`` chooses).

>>> data = synthetic_decay(periods=16, rows=1500, horizon=3, seed=1)
>>> plan = RetrainingPlanner(data, ridge, task="regression").run()
>>> plan.decay.horizon, plan.advice.cadence, plan.advice.window
(3, 3, 1)
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from warnings import catch_warnings, simplefilter

import numpy as np

from stream_monitor.core.quality import binary_auc, mae, wape
from stream_monitor.errors import StreamMonitorError

HOUR = 3600.0
DAY = 86400.0
WEEK = 7 * DAY
#: Period lengths the planner chooses from, shortest first (a shorter one is only set by the user).
PERIOD_CHOICES = (DAY, WEEK, 4 * WEEK)
#: Rows a period should hold: the MAE of 200 rows has a relative standard error of about 5 %, so a
#: paired ratio of two periods moves by about 7 % from sampling alone — within a 10 % tolerance.
MIN_ROWS_PER_PERIOD = 200
#: Below this many periods the experiments have too few test periods and starts to say anything.
MIN_PERIODS = 8
#: A period with fewer rows is not scored (its error would be noise); it can still be trained on.
MIN_TEST_ROWS = 20
#: A lag of the decay experiment counts only when this many start periods measured it.
MIN_STARTS_PER_LAG = 5
#: Rows of the rarer class a period should hold for its AUC (binary task): with 50 of them the AUC of a
#: period has a standard error of about 0.04 (Hanley & McNeil, AUC 0.75) — 5 % of the AUC, like the MAE
#: of :data:`MIN_ROWS_PER_PERIOD` rows; with fewer, one period's AUC moves by the tolerance from sampling.
MIN_CLASS_ROWS_PER_PERIOD = 50
#: The longest cadence the replay tries, in periods.
MAX_CADENCE = 28


class Model(Protocol):
    def fit(self, X: np.ndarray, y: np.ndarray) -> Any: ...


# -- periods --------------------------------------------------------------------------------------
def unit_name(seconds: float) -> str:
    """The period's name in sentences: ``day``, ``week``, ``4-week period``, ``hour``, …"""
    names = {HOUR: "hour", DAY: "day", WEEK: "week", 4 * WEEK: "4-week period"}
    if seconds in names:
        return names[seconds]
    if seconds % DAY == 0:
        return f"{seconds / DAY:g}-day period"
    return f"{seconds / HOUR:g}-hour period" if seconds % HOUR == 0 else f"{seconds:g}-second period"


def count(n: float, unit: str) -> str:
    """``count(1, "day") == "1 day"``, ``count(3, "day") == "3 days"``."""
    return f"{n:,.0f} {unit}" + ("" if round(n) == 1 else "s")


def period_origin(first_ts: float, seconds: float) -> float:
    """Where period 0 starts: weeks (and multiples) on a Monday — ISO weeks; the Unix epoch was a
    Thursday — longer periods at midnight UTC, shorter ones on a multiple of their length.

    >>> dt.datetime.fromtimestamp(period_origin(1736899490.0, WEEK), dt.UTC).strftime("%a %Y-%m-%d %H:%M")
    'Mon 2025-01-13 00:00'
    """
    if seconds % WEEK == 0:
        monday = 4 * DAY
        return math.floor((first_ts - monday) / WEEK) * WEEK + monday
    base = DAY if seconds >= DAY else seconds
    return math.floor(first_ts / base) * base


def _rows_per_period(ts: np.ndarray, seconds: float) -> tuple[float, int]:
    """Median rows per period (empty periods count) and the number of periods over the span."""
    index = ((ts - period_origin(float(ts.min()), seconds)) // seconds).astype(np.int64)
    counts = np.bincount(index)
    return float(np.median(counts)), len(counts)


@dataclass(frozen=True)
class PeriodChoice:
    """The period length and why: ``by`` is ``"data rate"`` or ``"--period-seconds"``."""

    seconds: float
    rows: float  # median rows per period
    periods: int
    by: str
    warning: str | None = None

    def sentence(self, min_rows: int = MIN_ROWS_PER_PERIOD) -> str:
        unit = unit_name(self.seconds)
        why = (
            f"set by --period-seconds: {self.rows:,.0f} rows per {unit} (median)"
            if self.by != "data rate"
            else f"chosen from the data rate: {self.rows:,.0f} rows per {unit} (median), the shortest period "
            f"of a day, a week or four weeks holding at least {min_rows}"
        )
        return f"One period = one {unit}, {why}; {count(self.periods, unit)} of history."


def choose_period(
    ts: np.ndarray, override: float | None = None, min_rows: int = MIN_ROWS_PER_PERIOD
) -> PeriodChoice:
    """The period length for rows at times ``ts`` (see the module docstring).

    >>> ts = np.arange(0, 60 * DAY, 600.0)  # 144 rows a day for 60 days
    >>> choice = choose_period(ts)
    >>> choice.seconds == WEEK, choice.rows, choice.periods
    (True, 1008.0, 9)
    >>> choose_period(ts, override=DAY).warning[:45]
    'a day holds 144 rows (median), fewer than the'
    """
    if override is not None:
        rows, n = _rows_per_period(ts, override)
        return PeriodChoice(override, rows, n, "--period-seconds", _few_rows(override, rows, min_rows))
    candidates = [(s, *_rows_per_period(ts, s)) for s in PERIOD_CHOICES]
    for seconds, rows, n in candidates:
        if rows >= min_rows and n >= MIN_PERIODS:
            return PeriodChoice(seconds, rows, n, "data rate")
    # No length has both: keep enough periods for the experiments and say the figures are noisy.
    viable = [c for c in candidates if c[2] >= MIN_PERIODS] or candidates[:1]
    seconds, rows, n = viable[-1]
    warning = _few_rows(seconds, rows, min_rows) or (
        f"only {count(n, unit_name(seconds))} of history: fewer than {MIN_PERIODS}, too few start periods "
        "for a reliable decay horizon"
    )
    return PeriodChoice(seconds, rows, n, "data rate", warning)


def _few_rows(seconds: float, rows: float, min_rows: int) -> str | None:
    if rows >= min_rows:
        return None
    unit = unit_name(seconds)
    article = "an" if unit.startswith("hour") else "a"
    return (
        f"{article} {unit} holds {rows:,.0f} rows (median), fewer than the {min_rows} the planner needs "
        "for a stable per-period error: its figures are noisy; choose a longer --period-seconds"
    )


# -- data -----------------------------------------------------------------------------------------
@dataclass
class Table:
    """Labelled rows in any order: features ``X`` (n, d), target ``y``, event time ``ts`` (epoch s)."""

    X: np.ndarray
    y: np.ndarray
    ts: np.ndarray
    feature_names: list[str]
    source: str = ""


@dataclass
class Dataset:
    """Labelled rows in time order: features ``X`` (n, d), target ``y``, period index per row."""

    X: np.ndarray
    y: np.ndarray
    period: np.ndarray  # int, 0 = first period
    feature_names: list[str]
    period_seconds: float = DAY
    start: float = 0.0  # epoch seconds where period 0 starts (before 1970: negative)
    period_choice: PeriodChoice | None = None
    dated: bool = False  # the periods have dates (real data); synthetic periods are numbers only

    @property
    def n_periods(self) -> int:
        return int(self.period.max()) + 1 if self.period.size else 0

    @property
    def rows_per_period(self) -> float:
        return float(np.median(np.bincount(self.period))) if self.period.size else 0.0

    def rows(self, periods: Sequence[int] | range) -> np.ndarray:
        return np.flatnonzero(np.isin(self.period, np.asarray(list(periods))))

    def describe(self, first: int, last: int) -> str:
        """``days 3–9 (2025-01-04 to 2025-01-10)``: periods by index, with dates for real data (any year:
        1958 too).

        >>> empty = np.zeros((0, 1)), np.zeros(0), np.zeros(0, int), ["x"]
        >>> Dataset(*empty, 365 * DAY, -376704000.0, dated=True).describe(0, 1)
        '365-day periods 0–1 (1958-01-24 to 1960-01-23)'
        """
        unit = unit_name(self.period_seconds)
        what = f"{unit} {first}" if first == last else f"{unit}s {first}–{last}"
        if not self.dated:
            return what

        def day(p: int, end: bool = False) -> str:
            ts = self.start + (p + end) * self.period_seconds - end
            return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=ts)).strftime("%Y-%m-%d")

        return f"{what} ({day(first)} to {day(last, end=True)})"


def make_dataset(
    table: Table, period_seconds: float | None = None, min_rows: int = MIN_ROWS_PER_PERIOD
) -> Dataset:
    """Order ``table`` in time and cut it into periods (length from :func:`choose_period`)."""
    if not len(table.y):
        raise StreamMonitorError(f"{table.source or 'data'}: no labelled rows")
    timed = np.flatnonzero(~np.isnan(table.ts) & ~np.isnan(table.y))  # a row without either is unusable
    if not len(timed):
        raise StreamMonitorError(f"{table.source or 'data'}: no row has both a time and a label")
    ts = table.ts[timed]
    choice = choose_period(ts, period_seconds, min_rows)
    order = timed[np.argsort(ts, kind="stable")]
    start = period_origin(float(ts.min()), choice.seconds)
    period = ((table.ts[order] - start) // choice.seconds).astype(np.int64)
    return Dataset(
        table.X[order], table.y[order], period, table.feature_names, choice.seconds, start, choice, dated=True
    )


def synthetic_decay(
    periods: int = 30, rows: int = 3000, horizon: int = 4, tolerance: float = 0.1, seed: int = 0
) -> Dataset:
    """A regression whose concept rotates a little every period, planted to decay after ``horizon``.

    ``y = cos(θ_p) x1 + sin(θ_p) x2 + 0.5 x3 + ε`` with ``θ_p = ω p`` and unit noise. A model trained on
    period ``t`` and scored on period ``t + L`` has error variance ``1 + 4 sin²(ωL/2)``; the fresh model
    (``L = 1``) ``1 + 4 sin²(ω/2)``. The MAE ratio ``r(L)`` is the square root of their quotient, and
    ``ω`` is solved for so that ``r`` crosses ``1 + tolerance`` half-way between ``horizon`` and
    ``horizon + 1``: out of time, a one-period model is within the tolerance for exactly ``horizon``
    periods. Old data only hurts here, so the planner's window is one period.

    >>> d = synthetic_decay(periods=3, rows=10)
    >>> d.X.shape, d.n_periods
    ((30, 3), 3)
    """

    def ratio(lag: float, omega: float) -> float:
        return math.sqrt((1 + 4 * math.sin(omega * lag / 2) ** 2) / (1 + 4 * math.sin(omega / 2) ** 2))

    lo, hi = 0.0, math.pi / (horizon + 0.5)  # r(h + 0.5) grows with ω on this interval
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ratio(horizon + 0.5, mid) < 1 + tolerance else (lo, mid)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(periods * rows, 3))
    period = np.repeat(np.arange(periods), rows)
    theta = lo * period
    y = np.cos(theta) * X[:, 0] + np.sin(theta) * X[:, 1] + 0.5 * X[:, 2] + rng.normal(size=len(period))
    return Dataset(X, y, period, ["x1", "x2", "x3"], DAY, 0.0)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".ndjson")):
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
    with path.open(newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def _times(values: Iterable[Any], where: str) -> np.ndarray:
    """Event times as the training-data reader reads them; a zone-less time is UTC."""
    from stream_monitor.offline.reference_io import training_ts

    return np.array([training_ts(v, dt.UTC, f"{where}: row {i + 1}") for i, v in enumerate(values)])


def _features(
    rows: Sequence[dict[str, Any]], names: Sequence[str], max_categories: int
) -> tuple[np.ndarray, list[str]]:
    """Numeric columns as they are (booleans 0/1, missing = column mean); other columns one-hot on
    their ``max_categories`` most frequent values (missing: none of them)."""
    columns: list[np.ndarray] = []
    out_names: list[str] = []
    for name in names:
        raw = [r.get(name) for r in rows]
        try:
            columns.append(np.array([math.nan if v in (None, "") else float(v) for v in raw]))
            out_names.append(name)
        except (TypeError, ValueError):
            values, counts = np.unique([str(v) for v in raw if v not in (None, "")], return_counts=True)
            for cat in values[np.argsort(-counts)][:max_categories]:
                columns.append(np.array([1.0 if str(v) == cat else 0.0 for v in raw]))
                out_names.append(f"{name}={cat}")
    X = np.column_stack(columns) if columns else np.zeros((len(rows), 0))
    with np.errstate(all="ignore"):
        means = np.nan_to_num(np.nanmean(X, axis=0, keepdims=True)) if X.size else X[:1]
    return np.where(np.isnan(X), means, X), out_names


def _label(value: Any, positive_class: str | None, where: str) -> float:
    """A label as a number: a value (regression), or 1/0 for a binary class (``positive_class``, or
    true/false, 1/0)."""
    if isinstance(value, bool):
        return float(value)
    if positive_class is not None and str(value) == positive_class:
        return 1.0
    try:
        return float(value)
    except (TypeError, ValueError):
        if str(value).lower() in ("true", "false"):
            return float(str(value).lower() == "true")
        if positive_class is not None:
            return 0.0
        raise StreamMonitorError(
            f"{where}: label {value!r} is not a number (binary classes: name one with --positive-class)"
        ) from None


def read_table(
    path: str | Path,
    time_column: str,
    target: str,
    features: Sequence[str] | None = None,
    max_categories: int = 20,
    positive_class: str | None = None,
) -> Table:
    """A flat table — CSV / JSONL / Parquet, one row per labelled example: the features, the label
    (``target``) and the event time (``time_column``: epoch seconds, RFC 3339, or a zone-less time read
    as UTC). Categorical columns are one-hot encoded on their most frequent values."""
    rows = _read_rows(Path(path))
    if not rows:
        raise StreamMonitorError(f"{path}: no rows")
    for col in (time_column, target):
        if col not in rows[0]:
            raise StreamMonitorError(f"{path}: no column {col!r} (columns: {', '.join(rows[0])})")
    names = list(features) if features else [c for c in rows[0] if c not in (time_column, target)]
    X, out_names = _features(rows, names, max_categories)
    y = np.array([_label(r[target], positive_class, f"{path}: row {i + 1}") for i, r in enumerate(rows)])
    return Table(X, y, _times((r[time_column] for r in rows), str(path)), out_names, str(path))


def read_replay(
    predictions: str | Path,
    labels: str | Path | None = None,
    model_id: str | None = None,
    max_categories: int = 20,
    positive_class: str | None = None,
) -> Table:
    """The inputs of ``stream-monitor replay``: prediction events in the contract's form (``event_id``,
    ``model_id``, ``ts``, ``features``; ``.gz`` too) joined on ``(model_id, event_id)`` with the label
    events of ``labels`` (the last label of an event wins). Without a labels file, a ``label`` field on
    the prediction events is used. The time is the prediction's ``ts``; the model's own ``prediction``
    is not used (the planner trains its own models). ``model_id`` picks one model of a shared file."""
    import orjson

    from stream_monitor.offline.replay import open_lines

    try:
        with open_lines(predictions) as f:
            events = [orjson.loads(line) for line in f if line.strip()]
    except orjson.JSONDecodeError:
        events = [{}]  # not JSON lines: said below
    if events and not (isinstance(events[0], dict) and isinstance(events[0].get("features"), dict)):
        raise StreamMonitorError(
            f"{predictions}: not prediction events (no 'features' object); a flat table needs "
            "--time-column and --target"
        )
    models = sorted({str(e.get("model_id")) for e in events})
    if model_id is None and len(models) > 1:
        raise StreamMonitorError(f"{predictions}: events of {len(models)} models; choose one with --model-id")
    if model_id is not None:
        events = [e for e in events if str(e.get("model_id")) == model_id]
    if not events:
        raise StreamMonitorError(
            f"{predictions}: no prediction events" + (f" of {model_id}" if model_id else "")
        )
    truth: dict[tuple[str, str], Any] = {}
    if labels is not None:
        with open_lines(labels) as f:
            for line in f:
                if line.strip():
                    lab = orjson.loads(line)
                    truth[(str(lab.get("model_id")), str(lab.get("event_id")))] = lab.get("label")
    else:
        truth = {(str(e.get("model_id")), str(e.get("event_id"))): e.get("label") for e in events}
    joined = [
        (e, truth[key])
        for e in events
        if (key := (str(e.get("model_id")), str(e.get("event_id")))) in truth and truth[key] is not None
    ]
    if not joined:
        raise StreamMonitorError(
            f"{predictions}: no prediction has a label"
            + (f" in {labels}" if labels else " (give the labels file)")
        )
    feature_rows = [e["features"] for e, _ in joined]
    names = list(dict.fromkeys(k for row in feature_rows for k in row))
    X, out_names = _features(feature_rows, names, max_categories)
    y = np.array([_label(v, positive_class, f"{labels or predictions}") for _, v in joined])
    ts = _times((e.get("ts") for e, _ in joined), str(predictions))
    return Table(X, y, ts, out_names, f"{predictions} + {labels}" if labels else str(predictions))


def load_dataset(
    path: str | Path,
    time_column: str,
    target: str,
    features: Sequence[str] | None = None,
    period_seconds: float | None = None,
    max_categories: int = 20,
) -> Dataset:
    """:func:`read_table` cut into periods by :func:`make_dataset`."""
    return make_dataset(read_table(path, time_column, target, features, max_categories), period_seconds)


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


# -- metrics --------------------------------------------------------------------------------------
METRIC_NAMES = {"mae": "MAE", "wape": "WAPE", "auc": "AUC"}


def choose_metric(task: str, y: np.ndarray, requested: str = "auto") -> tuple[str, str]:
    """The quality metric and why (see the module docstring).

    >>> [choose_metric("regression", np.array(y))[0] for y in ([0.0, 3.0, 40.0], [-1.0, 2.0])]
    ['wape', 'mae']
    """
    if task != "regression":
        if requested not in ("auto", "auc"):
            raise StreamMonitorError(f"--metric {requested} is for regression; a binary task uses auc")
        return "auc", "AUC (higher is better), the area under the ROC curve of the predicted probability"
    if requested == "auc":
        raise StreamMonitorError("--metric auc is for --task binary")
    if requested == "mae":
        return "mae", "MAE (lower is better), the absolute error in the label's unit (set by --metric)"
    level = bool(len(y)) and float(np.min(y)) >= 0 and float(np.mean(y)) > 0
    if requested == "wape" or level:
        why = "set by --metric" if requested == "wape" else "the labels are non-negative"
        return "wape", (
            f"WAPE = MAE / mean label (lower is better; {why}): a target whose level moves over the "
            "history inflates the absolute error without the model ageing; --metric mae for the MAE"
        )
    return "mae", (
        "MAE (lower is better): the labels take negative values, so there is no level to normalise by"
    )


def relative_loss(score: float, ref: float, higher_is_better: bool) -> float:
    """How much worse ``score`` is than ``ref``, relative (positive = worse; NaN when undefined).

    >>> round(relative_loss(11.0, 10.0, False), 6), round(relative_loss(0.72, 0.8, True), 6)
    (0.1, 0.1)
    """
    if ref == 0 or math.isnan(ref) or math.isnan(score):
        return math.nan
    return (ref - score) / abs(ref) if higher_is_better else (score - ref) / abs(ref)


# -- experiment results ---------------------------------------------------------------------------
@dataclass
class LearningCurve:
    sizes: list[int]
    scores: list[float]  # mean over draws
    low: list[float]  # min over draws
    high: list[float]  # max over draws
    suggested_size: int
    train_periods: tuple[int, int] = (0, 0)  # drawn from these periods (inclusive)
    test_periods: tuple[int, int] = (0, 0)  # scored on these
    repeats: int = 3
    skipped: int = 0  # draws not fitted: one class only (binary)


@dataclass
class Window:
    periods: list[int]  # candidate windows, in periods
    scores: list[float]  # mean over the test periods
    loss: list[float]  # mean relative loss against the best window
    loss_q25: list[float]  # interquartile range of the per-test-period loss
    loss_q75: list[float]
    test_periods: list[int] = field(default_factory=list)
    suggested: int = 1  # shortest within tolerance / 4 of the best, before the learning curve
    left_out: str = ""  # windows and test periods left out because a window held nothing to train on

    @property
    def best(self) -> int:
        return self.periods[int(np.nanargmin(self.loss))]


@dataclass
class Decay:
    lags: list[int]  # 1 = fresh
    loss: list[float]  # median relative loss against the fresh model on the same period
    loss_q25: list[float]
    loss_q75: list[float]
    n_starts: list[int]  # start periods that measured the lag
    fresh: float  # median quality of a fresh model (lag 1)
    fresh_q25: float
    fresh_q75: float
    horizon: int  # periods
    horizon_q75: int  # the same from the upper quartile: a quarter of the starts decay this soon
    bounded: bool  # False: no lag measured crossed the tolerance (horizon is the longest lag measured)
    starts: list[int] = field(default_factory=list)
    train_periods: int = 1
    horizon_recent: int = 0  # from the latest half of the starts (0: no crossing measured there)
    recent_from: int = 0  # the first of those starts
    loss_recent: list[float] = field(default_factory=list)  # their median loss per lag
    unfit: list[int] = field(default_factory=list)  # starts without a model (nothing to train on)

    @property
    def limit(self) -> int:
        """The horizon the cadence must respect: the latest half of the starts' when it is shorter — a
        concept that drifts faster lately is expected to go on doing so."""
        recent = self.horizon_recent if self.horizon_recent > 0 else self.horizon
        return max(1, min(self.horizon, recent))


@dataclass
class Cadence:
    every: list[int]  # periods between retrains
    loss: list[float]  # mean over phases, relative to retraining every period
    low: list[float]  # best phase
    high: list[float]  # worst phase
    never: float  # the first model kept for the whole history
    scored_periods: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Choice:
    """One decision: its value, which constraint decided it, and the sentence with the figure."""

    value: int
    constraint: str
    sentence: str


@dataclass
class Advice:
    period: str
    window: int
    window_why: Choice
    cadence: int
    cadence_why: Choice
    horizon: str

    def sentences(self) -> list[str]:
        return [self.period, self.window_why.sentence, self.cadence_why.sentence, self.horizon]


# -- decisions (pure: the property tests draw their inputs) ---------------------------------------
def periods_holding(rows: float, rows_per_period: float) -> int:
    """How many periods hold ``rows`` rows (at least one).

    >>> periods_holding(1000, 480.0), periods_holding(10, 480.0)
    (3, 1)
    """
    return max(1, math.ceil(rows / max(rows_per_period, 1.0)))


def decay_horizon(loss: Sequence[float], tolerance: float) -> tuple[int, bool]:
    """The last lag before ``loss`` (index 0 = lag 1) first exceeds ``tolerance`` (a NaN lag stops it
    too: nothing was measured there), and whether it crossed at all. Lag 1 is the fresh model itself.

    >>> decay_horizon([0.0, 0.04, 0.09, 0.12, 0.08], 0.1), decay_horizon([0.0, 0.01], 0.1)
    ((3, True), (2, False))
    """
    for lag, value in enumerate(loss, start=1):
        if math.isnan(value):
            return max(1, lag - 1), False
        if value > tolerance:
            return max(1, lag - 1), True
    return max(1, len(loss)), False


def choose_window(
    lc: LearningCurve,
    window: Window,
    rows_per_period: float,
    tolerance: float,
    unit: str,
    override: int | None = None,
) -> Choice:
    """The training window in periods, reconciling the window experiment (shortest window within
    ``tolerance / 4`` of the best, scored out of time on the latest periods) with the learning curve's
    need. Constraints: ``both`` (the window experiment's choice holds enough rows), ``learning_curve``
    (a longer window that holds them costs nothing measurable), ``recency`` (every window that holds
    them scores measurably worse: recent data wins), ``history`` (no tested window holds them),
    ``override`` (``--train-periods``)."""
    need = lc.suggested_size
    need_periods = periods_holding(need, rows_per_period)
    rows = rows_per_period
    within = [m for m, loss in zip(window.periods, window.loss, strict=True) if loss <= tolerance / 4]
    shortest = within[0] if within else window.best
    need_text = f"the learning curve needs {need:,} rows (about {count(need_periods, unit)})"
    if need == lc.sizes[0]:  # even the smallest size tested was enough: the need is an upper bound
        need_text = f"the learning curve needs at most {need:,} rows, its smallest size tested"
    if override is not None:
        return Choice(
            override,
            "override",
            f"Train on the last {count(override, unit)} (about {rows * override:,.0f} rows), as set by "
            f"--train-periods; {need_text} and the window experiment's choice is "
            f"{count(shortest, unit)}.",
        )
    test = f"scored on the {unit} after training, over the last {count(len(window.test_periods), unit)}"
    if shortest >= need_periods:
        return Choice(
            shortest,
            "both",
            f"Train on the last {count(shortest, unit)} (about {rows * shortest:,.0f} rows): the shortest "
            f"window within {tolerance / 4:.1%} of the best ({test}), and it holds the {need:,} rows "
            "the learning curve needs.",
        )
    enough = [(m, loss) for m, loss in zip(window.periods, window.loss, strict=True) if m >= need_periods]
    if not enough:
        longest = window.periods[-1]
        return Choice(
            shortest,
            "history",
            f"Train on the last {count(shortest, unit)} (about {rows * shortest:,.0f} rows), the shortest "
            f"window within {tolerance / 4:.1%} of the best ({test}); {need_text}, more than the longest "
            f"window the history allowed testing ({count(longest, unit)}), so that need is untested.",
        )
    ok = [(m, loss) for m, loss in enough if loss <= tolerance / 4]
    if ok:
        m, loss = ok[0]
        return Choice(
            m,
            "learning_curve",
            f"Train on the last {count(m, unit)} (about {rows * m:,.0f} rows): {need_text}; "
            f"{count(shortest, unit)} would score as well ({test}) but hold only about "
            f"{rows * shortest:,.0f} rows, and {count(m, unit)} cost nothing measurable ({loss:+.1%} "
            "against the best window) — the learning curve wins.",
        )
    m, loss = min(enough, key=lambda pair: pair[1])
    return Choice(
        shortest,
        "recency",
        f"Train on the last {count(shortest, unit)} (about {rows * shortest:,.0f} rows), although "
        f"{need_text}: the windows that hold them score {loss:+.1%} or worse against the best "
        f"({test}) — older data costs more than its extra rows bring, so recency wins.",
    )


def choose_cadence(decay: Decay, cadence: Cadence, tolerance: float, unit: str) -> Choice:
    """Retrain every ``k`` periods: the longest cadence whose every shorter cadence too costs at most
    ``tolerance / 2`` against retraining every period, and never longer than the decay horizon (the
    latest starts' when shorter: :attr:`Decay.limit`). Constraints: ``horizon`` (the decay horizon caps
    it) or ``cost`` (the next cadence costs too much, or none longer was replayed)."""
    cost_cap = 0
    for k, loss in zip(cadence.every, cadence.loss, strict=True):
        if math.isnan(loss) or loss > tolerance / 2:
            break
        cost_cap = k
    cost_cap = max(1, cost_cap)
    horizon = decay.limit
    which = "the decay horizon" if horizon == decay.horizon else "the latest starts' decay horizon"
    loss_at = dict(zip(cadence.every, cadence.loss, strict=True))
    never = f"never retraining costs {cadence.never:+.0%}" if not math.isnan(cadence.never) else ""
    if cost_cap >= horizon:
        cost = loss_at.get(horizon, math.nan)
        return Choice(
            horizon,
            "horizon",
            f"Retrain every {count(horizon, unit)}: {which}, {count(horizon, unit)}, caps it (a model older "
            f"than that is more than {tolerance:.0%} worse than a fresh one); over the history, retraining "
            f"every {count(horizon, unit)} costs {cost:+.1%} against retraining every {unit}"
            + (f", {never}." if never else "."),
        )
    nxt = cost_cap + 1
    if nxt in loss_at:
        why = (
            f"retraining every {count(nxt, unit)} would cost {loss_at[nxt]:+.1%} against retraining every "
            f"{unit}, more than half the tolerance ({tolerance / 2:.0%})"
        )
    else:
        why = f"no longer cadence was replayed (the history allows {count(cost_cap, unit)} at most)"
    return Choice(
        cost_cap,
        "cost",
        f"Retrain every {count(cost_cap, unit)}, within {which} of {count(horizon, unit)}: it costs "
        f"{loss_at.get(cost_cap, math.nan):+.1%} against retraining every {unit}, and {why}"
        + (f"; {never}." if never else "."),
    )


def horizon_sentence(decay: Decay, tolerance: float, unit: str) -> str:
    spread = (
        f"median over {count(max(decay.n_starts, default=0), f'start {unit}')}; for a quarter of them "
        f"{count(decay.horizon_q75, unit)}"
    )
    recent = ""
    if decay.limit < decay.horizon:
        recent = (
            f"; started from {unit} {decay.recent_from} on, only {count(decay.limit, unit)} — the concept "
            f"drifts faster lately, so the plan counts {count(decay.limit, unit)}"
        )
    if not decay.bounded:
        return (
            f"Without retraining, no model lost more than {tolerance:.0%} against a fresh one within "
            f"{count(decay.horizon, unit)}, the longest lag measured on at least {MIN_STARTS_PER_LAG} "
            f"starts ({spread}){recent}; retrain when the monitor's triggers fire."
        )
    return (
        f"Without retraining, a model stays within {tolerance:.0%} of a fresh one for "
        f"{count(decay.horizon, unit)} ({spread}){recent}. Do not wait longer than "
        f"{count(decay.limit, unit)}, and retrain at once when the monitor's triggers fire."
    )


# -- the plan -------------------------------------------------------------------------------------
@dataclass
class Plan:
    task: str
    metric: str
    metric_why: str
    higher_is_better: bool
    tolerance: float
    n_rows: int
    n_periods: int
    period_seconds: float
    learning_curve: LearningCurve
    window: Window
    decay: Decay
    cadence: Cadence
    advice: Advice
    model_name: str = "model"
    label_unit: str | None = None
    warnings: list[str] = field(default_factory=list)
    data: Dataset | None = None
    charts: dict[str, str] = field(default_factory=dict)

    @property
    def unit(self) -> str:
        return unit_name(self.period_seconds)

    def headline(self) -> str:
        u = self.unit
        return (
            f"Retrain every {count(self.advice.cadence, u)} on the last {count(self.advice.window, u)} "
            "of labelled data."
        )

    def schedule(self) -> str:
        """The headline and one sentence per decision."""
        return "\n".join([self.headline(), *(f"- {s}" for s in self.advice.sentences())])

    def metric_label(self) -> str:
        """Axis label of the metric, with the label's unit where it has one."""
        if self.metric == "mae":
            return f"MAE ({self.label_unit})" if self.label_unit else "MAE (label units)"
        if self.metric == "wape":
            return "WAPE (MAE / mean label)"  # a ratio: the label's unit cancels out
        return "AUC"

    def describe(self, first: int, last: int) -> str:
        if self.data is None:
            return f"{self.unit}s {first}–{last}"
        return self.data.describe(first, last)


class RetrainingPlanner:
    """Runs the experiments of the module docstring on a :class:`Dataset`."""

    def __init__(
        self,
        data: Dataset,
        factory: Callable[[], Any],
        task: str = "regression",
        tolerance: float = 0.1,
        metric: str = "auto",
        starts: int | None = None,
        train_periods: int | None = None,
        test_periods: int = 2,
        test_origins: int = 6,
        seed: int = 0,
        progress: Callable[[int, int, str], None] | None = None,
        model_name: str | None = None,
        label_unit: str | None = None,
    ) -> None:
        if data.n_periods < 6:
            raise StreamMonitorError(
                f"the planner needs at least 6 periods of data, got {data.n_periods}: a shorter "
                "--period-seconds, or more history"
            )
        self.data = data
        self.factory = factory
        self.task = task
        self.tolerance = tolerance
        self.metric, self.metric_why = choose_metric(task, data.y, metric)
        self.higher_is_better = self.metric == "auc"
        self.starts = starts
        self.train_periods = train_periods
        P = data.n_periods
        self.test_periods = max(1, min(test_periods, P // 4))
        self.test_origins = max(1, min(test_origins, P // 3))
        self.rng = np.random.default_rng(seed)
        self.progress = progress
        self.model_name: str = model_name or str(getattr(factory, "__name__", "model"))
        self.label_unit = label_unit
        self.unit = unit_name(data.period_seconds)
        order = np.argsort(data.period, kind="stable")
        bounds = np.searchsorted(data.period[order], np.arange(P + 1))
        self._by_period = [order[bounds[p] : bounds[p + 1]] for p in range(P)]
        if task == "binary" and len(np.unique(data.y > 0.5)) < 2:
            raise StreamMonitorError(
                "a binary task needs labels of both classes; every label is "
                + ("positive" if bool(np.all(data.y > 0.5)) else "negative")
            )
        self._done = 0
        self._total = 0
        self._unfit_starts: dict[int, str] = {}  # decay starts without a model → why

    # -- plumbing --
    def _span(self, first: int, last: int) -> np.ndarray:
        """Rows of periods ``first … last`` (inclusive)."""
        parts = self._by_period[max(0, first) : last + 1]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _cannot_fit(self, rows: np.ndarray) -> str | None:
        """Why ``rows`` cannot be trained on — ``"no rows"``, ``"one class"`` (binary) — or None."""
        if not len(rows):
            return "no rows"
        if self.task == "binary" and len(np.unique(self.data.y[rows] > 0.5)) < 2:
            return "one class"
        return None

    def _fit(self, rows: np.ndarray) -> Any | None:
        """A model trained on ``rows``, or None when they cannot be trained on (:meth:`_cannot_fit`):
        never a fit on nothing."""
        if self._cannot_fit(rows) is not None:
            self._tick()
            return None
        model = self.factory()
        model.fit(self.data.X[rows], self.data.y[rows])
        self._tick()
        return model

    def _score(self, model: Any | None, rows: np.ndarray) -> float:
        if model is None or not len(rows):
            return math.nan
        X, y = self.data.X[rows], self.data.y[rows]
        if self.metric == "auc":
            if hasattr(model, "predict_proba"):
                proba = np.asarray(model.predict_proba(X))
                return binary_auc(proba[:, -1] if proba.ndim == 2 else proba, y > 0.5)
            return binary_auc(np.asarray(model.predict(X), dtype=np.float64), y > 0.5)
        error = np.asarray(model.predict(X), dtype=np.float64) - y
        return wape(error, y) if self.metric == "wape" else mae(error)

    def _scorable(self, p: int) -> bool:
        return 0 <= p < len(self._by_period) and len(self._by_period[p]) >= MIN_TEST_ROWS

    def _fit_span(self, first: int, last: int) -> Any | None:
        """A model trained on periods ``first … last``, or None (see :meth:`_fit`)."""
        return self._fit(self._span(first, last))

    def _loss(self, score: float, ref: float) -> float:
        return relative_loss(score, ref, self.higher_is_better)

    def _tick(self) -> None:
        self._done += 1
        if self.progress is not None:
            self.progress(self._done, max(self._total, self._done), "fit")

    # -- the run --
    def run(self) -> Plan:
        P = self.data.n_periods
        repeats = 3
        pool = self._span(0, P - self.test_periods - 1)
        sizes = self._sizes(len(pool))
        windows_guess = len(self._window_candidates(P - self.test_origins, None)) + 1
        self._total = len(sizes) * repeats + windows_guess * self.test_origins + P
        warnings = []
        if self.data.period_choice is not None and self.data.period_choice.warning:
            warnings.append(self.data.period_choice.warning)
        warnings += self._data_warnings()

        lc = self.learning_curve(sizes, repeats)
        if lc.skipped:
            warnings.append(
                f"Learning curve: {lc.skipped} of the {len(sizes) * repeats} random draws hold one class "
                "only and are not fitted; each size is the mean of the others."
            )
        rows_pp = self.data.rows_per_period
        need_periods = periods_holding(lc.suggested_size, rows_pp)
        window = self.window(need_periods)
        window_choice = choose_window(lc, window, rows_pp, self.tolerance, self.unit, self.train_periods)
        W = window_choice.value
        if window.left_out:
            warnings.append(window.left_out)

        starts = self._starts(W)
        self._total = self._done + len(starts)
        first = starts[0]
        # Lags up to half the history (at least twice the longest cadence): a longer one is measured on
        # few starts and costs a scoring per start for nothing the advice uses.
        max_lag = max(1, min(P - first - MIN_STARTS_PER_LAG, max(P // 2, 2 * MAX_CADENCE)))
        if P - first - 1 < MIN_STARTS_PER_LAG:
            warnings.append(
                f"only {count(P - first - 1, f'start {self.unit}')} for the decay experiment (fewer than "
                f"{MIN_STARTS_PER_LAG}): its horizon rests on very few models"
            )
        scores = self._matrix(starts, W, max_lag)
        if self._unfit_starts:
            warnings.append(self._unfit_note(W))
        decay = self.decay(scores, starts, W, max_lag)
        cadence = self.cadence(scores, starts, min(max_lag, MAX_CADENCE))
        cadence_choice = choose_cadence(decay, cadence, self.tolerance, self.unit)
        period = (
            self.data.period_choice.sentence()
            if self.data.period_choice is not None
            else f"One period = one {self.unit}; {count(P, self.unit)} of history."
        )
        advice = Advice(
            period,
            W,
            window_choice,
            cadence_choice.value,
            cadence_choice,
            horizon_sentence(decay, self.tolerance, self.unit),
        )
        return Plan(
            self.task,
            self.metric,
            self.metric_why,
            self.higher_is_better,
            self.tolerance,
            len(self.data.y),
            P,
            self.data.period_seconds,
            lc,
            window,
            decay,
            cadence,
            advice,
            self.model_name,
            self.label_unit,
            warnings,
            self.data,
        )

    def _sizes(self, pool: int, n_sizes: int = 8) -> list[int]:
        """Geometric sizes from a few rows per feature (a smaller fit is degenerate) to the whole pool."""
        smallest = min(pool, max(30, 5 * self.data.X.shape[1]))
        return sorted({int(v) for v in np.geomspace(smallest, pool, n_sizes)})

    def _lc_test(self) -> int:
        """The first of the learning curve's test periods: the last ``test_periods`` periods, or further
        back when they hold fewer than :data:`MIN_TEST_ROWS` rows (a survey that skipped the last years)."""
        P = self.data.n_periods
        scorable = [p for p in range(P) if self._scorable(p)]
        first = P - self.test_periods
        if sum(p >= first for p in scorable) < self.test_periods and len(scorable) > self.test_periods:
            first = scorable[-self.test_periods]
        return max(1, first)

    def learning_curve(self, sizes: Sequence[int], repeats: int = 3) -> LearningCurve:
        P = self.data.n_periods
        first_test = self._lc_test()
        test = self._span(first_test, P - 1)
        pool = self._span(0, first_test - 1)
        mean, low, high = [], [], []
        skipped = 0
        for size in sizes:
            runs = []
            for _ in range(repeats):
                rows = np.sort(self.rng.choice(pool, size=min(size, len(pool)), replace=False))
                model = self._fit(rows)
                skipped += model is None
                runs.append(self._score(model, test))
            finite = [v for v in runs if not math.isnan(v)]  # a draw of one class is not fitted
            mean.append(float(np.mean(finite)) if finite else math.nan)
            low.append(float(np.min(finite)) if finite else math.nan)
            high.append(float(np.max(finite)) if finite else math.nan)
        full = mean[-1]
        ok = [s for s, v in zip(sizes, mean, strict=True) if self._loss(v, full) <= self.tolerance / 4]
        return LearningCurve(
            list(sizes),
            mean,
            low,
            high,
            ok[0] if ok else sizes[-1],
            (0, first_test - 1),
            (first_test, P - 1),
            repeats,
            skipped,
        )

    @staticmethod
    def _window_candidates(longest: int, need_periods: int | None) -> list[int]:
        base = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128}
        if need_periods is not None:
            base.add(min(need_periods, longest))
        return sorted(m for m in base if 1 <= m <= longest)

    def window(self, need_periods: int) -> Window:
        P = self.data.n_periods
        tests = [e for e in range(P - self.test_origins, P) if self._scorable(e)]
        if not tests:
            raise StreamMonitorError(f"no recent period holds {MIN_TEST_ROWS} rows to test on")
        candidates = self._window_candidates(min(tests), need_periods)
        self._total = self._done + len(candidates) * len(tests) + P - 1  # decay: at most P - 1 starts
        # A window that holds nothing to train on before a test period (no rows, one class) is not
        # fitted: a test period no window can train for is dropped, then a window that cannot train
        # for every remaining one (its mean would be over other periods than the rest's).
        fittable = np.array(
            [[self._cannot_fit(self._span(e - m, e - 1)) is None for e in tests] for m in candidates]
        )
        keep_tests = np.asarray(fittable.any(axis=0), dtype=bool)
        keep = np.asarray(fittable[:, keep_tests].all(axis=1), dtype=bool)
        nothing = "nothing to train on (no rows" + (", or one class only)" if self.task == "binary" else ")")
        if not keep.any():
            raise StreamMonitorError(
                f"every training window tried ({', '.join(map(str, candidates))} {self.unit}s) has "
                f"{nothing} before one of the recent {self.unit}s there is to test on"
            )
        notes = []
        if not keep_tests.all():
            lost = ", ".join(
                self.data.describe(e, e) for e, k in zip(tests, keep_tests, strict=True) if not k
            )
            notes.append(f"every window has {nothing} before {lost}, so it is not a test {self.unit}")
        for m, k, row in zip(candidates, keep, fittable[:, keep_tests], strict=True):
            if not k:
                notes.append(
                    f"training on the last {count(m, self.unit)} is left out: that window has {nothing} "
                    f"before {int((~row).sum())} of the {int(keep_tests.sum())} test {self.unit}s"
                )
        left_out = ("Window experiment: " + "; ".join(notes) + ".") if notes else ""
        tests = [e for e, k in zip(tests, keep_tests, strict=True) if k]
        candidates = [m for m, k in zip(candidates, keep, strict=True) if k]
        table = np.array(
            [
                [self._score(self._fit_span(e - m, e - 1), self._by_period[e]) for e in tests]
                for m in candidates
            ]
        )
        with np.errstate(all="ignore"), catch_warnings():
            simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(table, axis=1)
        if np.isnan(mean).all():
            raise StreamMonitorError(f"no training window could be scored on the recent {self.unit}s")
        best = int(np.nanargmax(mean) if self.higher_is_better else np.nanargmin(mean))
        per_test = np.array(
            [[self._loss(v, b) for v, b in zip(row, table[best], strict=True)] for row in table]
        )
        loss = [self._loss(float(v), float(mean[best])) for v in mean]
        with np.errstate(all="ignore"), catch_warnings():
            simplefilter("ignore", RuntimeWarning)
            q25, q75 = np.nanpercentile(per_test, [25, 75], axis=1)
        within = [m for m, v in zip(candidates, loss, strict=True) if v <= self.tolerance / 4]
        return Window(
            candidates,
            [float(v) for v in mean],
            loss,
            [float(v) for v in q25],
            [float(v) for v in q75],
            tests,
            within[0] if within else candidates[best],
            left_out,
        )

    def _starts(self, W: int) -> list[int]:
        """Start periods: every period with a full window behind it and a later period to score, or the
        latest ``starts`` of them (contiguous, so the fresh model of every scored period is among them).
        The first start is one whose window can be trained on (the "never retrain" model)."""
        P = self.data.n_periods
        first = min(W - 1, P - 3)
        if self.starts is not None:
            first = max(first, P - 1 - self.starts)
        while first < P - 2 and self._cannot_fit(self._span(first - W + 1, first)) is not None:
            first += 1
        return list(range(first, P - 1))

    def _matrix(self, starts: Sequence[int], W: int, max_lag: int) -> np.ndarray:
        """``S[t, u]``: the model trained on the ``W`` periods up to ``t``, scored on period ``u > t``
        (up to ``max_lag`` later; the first start on every later period, for "never retrain"). A start
        whose window holds nothing to train on (no rows, one class) has no model: its row stays NaN."""
        P = self.data.n_periods
        S = np.full((P, P), math.nan)
        self._unfit_starts = {}
        for t in starts:
            model = self._fit_span(t - W + 1, t)
            if model is None:
                self._unfit_starts[t] = self._cannot_fit(self._span(t - W + 1, t)) or ""
                continue
            reach = P - 1 if t == starts[0] else min(P - 1, t + max_lag)
            for u in range(t + 1, reach + 1):
                if self._scorable(u):
                    S[t, u] = self._score(model, self._by_period[u])
        return S

    def _unfit_note(self, W: int) -> str:
        """The start periods without a model, and what the experiments do about them."""
        starts = sorted(self._unfit_starts)
        spans = _spans(starts)
        shown = ", ".join(self.data.describe(a, b) for a, b in spans[:4]) + (" …" if len(spans) > 4 else "")
        reasons = {"no rows" if w == "no rows" else "one class only" for w in self._unfit_starts.values()}
        one = len(starts) == 1
        return (
            f"Decay: {count(len(starts), f'start {self.unit}')} ({shown}) {'has' if one else 'have'} no "
            f"model: the last {count(W, self.unit)} up to {'it hold' if one else 'each hold'} "
            f"{' or '.join(sorted(reasons))}. Nothing is trained there, and the cadence replay keeps the "
            "model of the retrain before."
        )

    def _data_warnings(self) -> list[str]:
        """What the data lack: periods without rows (a survey that skips a year), and for a binary task
        periods with too few of the rarer class for their AUC to mean much."""
        P, unit = self.data.n_periods, self.unit
        sizes = np.array([len(rows) for rows in self._by_period])
        out = []
        empty = np.flatnonzero(sizes == 0)
        if empty.size:
            spans = _spans(empty.tolist())
            shown = ", ".join(self.data.describe(a, b) for a, b in spans[:4]) + (
                " …" if len(spans) > 4 else ""
            )
            out.append(
                f"{empty.size} of the {count(P, unit)} hold no rows ({shown}): they are skipped — no model "
                f"is trained on a window without rows and no empty {unit} is scored; lags and cadences "
                "still count them as time."
            )
        if self.task == "binary":
            scored = [rows for rows in self._by_period if len(rows) >= MIN_TEST_ROWS]
            pos = np.array([int(np.sum(self.data.y[rows] > 0.5)) for rows in scored])
            rarer = np.minimum(pos, np.array([len(rows) for rows in scored]) - pos) if scored else pos
            one = int(np.sum(rarer == 0))
            typical = float(np.median(rarer)) if rarer.size else 0.0
            if typical < MIN_CLASS_ROWS_PER_PERIOD:
                which = "positives" if float(np.median(pos)) <= float(np.median(rarer)) else "negatives"
                out.append(
                    f"a {unit} holds {typical:,.0f} {which} (median over the {unit}s scored), fewer than the "
                    f"{MIN_CLASS_ROWS_PER_PERIOD} of the rarer class a per-{unit} AUC needs (with fewer, one "
                    f"{unit}'s AUC moves by about the tolerance from sampling alone): its figures are noisy; "
                    "choose a longer --period-seconds"
                    + (f"; {one} {unit}(s) hold one class only and are not scored" if one else "")
                )
            elif one:
                out.append(f"{count(one, unit)} hold one class only: no AUC, not scored")
        return out

    def decay(self, S: np.ndarray, starts: Sequence[int], W: int, max_lag: int) -> Decay:
        P = self.data.n_periods
        first = starts[0]
        lags = list(range(1, max_lag + 1))
        q25, med, q75, n = self._lag_quartiles(S, first, lags, min(MIN_STARTS_PER_LAG, P - first - 1))
        horizon, bounded = decay_horizon(med, self.tolerance)
        horizon_q75, _ = decay_horizon(q75, self.tolerance)
        # The same from the latest half of the starts: a concept that drifts faster lately shows here.
        recent_from = first + (P - 1 - first) // 2
        _, recent, _, _ = self._lag_quartiles(S, recent_from, lags, MIN_STARTS_PER_LAG)
        horizon_recent, recent_bounded = decay_horizon(recent, self.tolerance)
        fresh = np.array([S[u - 1, u] for u in range(first + 1, P)])
        fresh = fresh[~np.isnan(fresh)]
        fq = np.percentile(fresh, [25, 50, 75]) if fresh.size else [math.nan] * 3
        return Decay(
            lags,
            med,
            q25,
            q75,
            n,
            float(fq[1]),
            float(fq[0]),
            float(fq[2]),
            horizon,
            min(horizon_q75, horizon),
            bounded,
            list(starts),
            W,
            horizon_recent if recent_bounded else 0,
            recent_from,
            recent,
            sorted(self._unfit_starts),
        )

    def _lag_quartiles(
        self, S: np.ndarray, first: int, lags: Sequence[int], min_starts: int
    ) -> tuple[list[float], list[float], list[float], list[int]]:
        """Per lag, over the starts ``t ≥ first``: quartiles of the loss of the model trained up to ``t``
        against the fresh one (trained up to ``t + lag − 1``) on period ``t + lag``, and how many starts
        measured it (NaN quartiles below ``min_starts``)."""
        P = self.data.n_periods
        q25, med, q75, n = [], [], [], []
        for lag in lags:
            pairs = [self._loss(S[t, t + lag], S[t + lag - 1, t + lag]) for t in range(first, P - lag)]
            values = np.array([v for v in pairs if not math.isnan(v)])
            n.append(len(values))
            a, b, c = (
                np.percentile(values, [25, 50, 75]) if len(values) >= max(1, min_starts) else [math.nan] * 3
            )
            q25.append(float(a))
            med.append(float(b))
            q75.append(float(c))
        return q25, med, q75, n

    def cadence(self, S: np.ndarray, starts: Sequence[int], longest: int) -> Cadence:
        """Replay every cadence ``k`` and phase from ``S``: period ``u`` is scored by the latest model
        retrained before it — the first start's, then every ``k``-th start from the phase on."""
        P = self.data.n_periods
        first = starts[0]
        scored = [u for u in range(first + 1, P) if not math.isnan(S[u - 1, u])]
        if not scored:
            raise StreamMonitorError("no period could be scored by a fresh model")
        fresh = float(np.mean([S[u - 1, u] for u in scored]))
        unfit = set(self._unfit_starts)

        def replay(k: int, phase: int) -> float:
            values = []
            for u in scored:
                # the latest retrain before u: first, or first + phase + j·k (j ≥ 0) when that is > first
                since = u - 1 - first - phase
                t = first if since < 0 else first + phase + (since // k) * k
                t = max(t, first)
                while t > first and t in unfit:  # nothing to train on then: the model before stays
                    t = max(first, t - k)
                values.append(S[t, u])
            finite = [v for v in values if not math.isnan(v)]
            return float(np.mean(finite)) if finite else math.nan

        every, loss, low, high = [], [], [], []
        for k in range(1, longest + 1):
            phases = [self._loss(replay(k, phase), fresh) for phase in range(k)]
            every.append(k)
            loss.append(float(np.mean(phases)))
            low.append(float(np.min(phases)))
            high.append(float(np.max(phases)))
        never = [S[first, u] for u in scored if not math.isnan(S[first, u])]
        never_score = float(np.mean(never)) if never else math.nan
        return Cadence(every, loss, low, high, self._loss(never_score, fresh), (scored[0], scored[-1]))


def _spans(values: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive integers as (first, last) spans.

    >>> _spans([1, 3, 4, 5, 9])
    [(1, 1), (3, 5), (9, 9)]
    """
    out: list[tuple[int, int]] = []
    for v in values:
        if out and v == out[-1][1] + 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


# -- report ---------------------------------------------------------------------------------------
def _picked(n: int, keep: Iterable[int] = (), most: int = 12) -> list[int]:
    """At most ``most`` of the indices ``1 … n`` for a summary table: the first few, ``keep`` (with
    neighbours) and evenly spaced others — never a 90-column table."""
    if n <= most:
        return list(range(1, n + 1))
    chosen = set(range(1, 5)) | {n}
    for k in keep:
        chosen |= {k - 1, k, k + 1}
    chosen |= {round(v) for v in np.linspace(1, n, max(2, most - len(chosen)))}
    return sorted(c for c in chosen if 1 <= c <= n)


def write_report(plan: Plan, out_dir: str | Path, title: str = "Retraining plan") -> Path:
    """Markdown report with four PNG charts in ``out_dir``; returns the report's path."""
    from stream_monitor.offline.charts import plan_charts

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = plan_charts(plan, out)
    plan.charts.update({n: str(out / n) for n in names})
    u = plan.unit
    lc, wd, dc, cd = plan.learning_curve, plan.window, plan.decay, plan.cadence
    metric = plan.metric_label()

    def fmt(v: float) -> str:
        if math.isnan(v):
            return "–"
        return f"{v:.2%}" if plan.metric == "wape" else f"{v:.4g}"

    def pct(v: float) -> str:
        return "–" if math.isnan(v) else f"{v:+.1%}"

    lc_rows = "\n".join(
        f"| {s:,} | {fmt(m)} | {fmt(lo)} – {fmt(hi)} |"
        for s, m, lo, hi in zip(lc.sizes, lc.scores, lc.low, lc.high, strict=True)
    )
    wd_rows = "\n".join(
        f"| {m} | {fmt(s)} | {pct(loss)} | {pct(a)} … {pct(b)} |"
        for m, s, loss, a, b in zip(wd.periods, wd.scores, wd.loss, wd.loss_q25, wd.loss_q75, strict=True)
    )
    picked = _picked(len(dc.lags), [dc.horizon, dc.limit])
    dc_rows = "\n".join(
        f"| {lag} | {dc.n_starts[lag - 1]} | {pct(dc.loss[lag - 1])} | "
        + (
            "–"
            if math.isnan(dc.loss[lag - 1])
            else f"{pct(dc.loss_q25[lag - 1])} … {pct(dc.loss_q75[lag - 1])}"
        )
        + " |"
        for lag in picked
    )
    few = [lag for lag in picked if math.isnan(dc.loss[lag - 1])]
    if few:
        dc_rows += (
            f"\n\n– : measured on fewer than {MIN_STARTS_PER_LAG} starts (lag "
            + ", ".join(map(str, few))
            + "): too few for a median, not used."
        )
    cd_rows = "\n".join(
        f"| {k} | {pct(cd.loss[k - 1])} | {pct(cd.low[k - 1])} … {pct(cd.high[k - 1])} |"
        for k in _picked(len(cd.every), [plan.advice.cadence])
    )
    warnings = "".join(f"\n> **Warning:** {w}\n" for w in plan.warnings)
    sentences = "\n".join(f"- {s}" for s in plan.advice.sentences())
    first, last = dc.starts[0], dc.starts[-1]
    horizon_text = f"Decay horizon: **{count(dc.horizon, u)}**" + (
        "." if dc.bounded else " (no lag measured crossed the tolerance)."
    )
    if dc.limit < dc.horizon:
        horizon_text += (
            f" From the latest half of the starts ({u} {dc.recent_from} on): **{count(dc.limit, u)}** — "
            "the plan counts the shorter one."
        )
    unit_text = f" Labels in {plan.label_unit}." if plan.label_unit else ""
    unfit_text = f"; {len(dc.unfit)} without a model, nothing to train on" if dc.unfit else ""
    text = f"""# {title}

{plan.n_rows:,} labelled rows over {count(plan.n_periods, u)}; task {plan.task}; model `{plan.model_name}`;
quality = {plan.metric_why}; tolerance {plan.tolerance:.0%}. Every experiment trains on the past and
scores on a later {u} the model never saw.{unit_text}
{warnings}
## Suggested schedule

**{plan.headline()}**

{sentences}

## 1. Learning curve — how much data does the model need?

![learning curve]({names[0]})

Random subsets of {plan.describe(*lc.train_periods)}, scored on {plan.describe(*lc.test_periods)};
{lc.repeats} draws per size. Within {plan.tolerance / 4:.1%} of the whole pool from
**{lc.suggested_size:,} rows**.

| training rows | {metric} (mean) | min – max of the draws |
|---|---|---|
{lc_rows}

## 2. Training window — does older data help?

![training window]({names[1]})

Trained on the last *m* {u}s before each of {plan.describe(wd.test_periods[0], wd.test_periods[-1])},
scored on that {u}; the loss is against the best window on the same {u}. Suggested by the window
experiment alone: {count(wd.suggested, u)}; the plan trains on **{count(plan.advice.window, u)}**
(`{plan.advice.window_why.constraint}`).

| last … {u}s | {metric} (mean) | loss vs best | interquartile range |
|---|---|---|---|
{wd_rows}

## 3. Decay — how fast does a model age?

![decay]({names[2]})

One model per start {u} ({plan.describe(first, last)}, {len(dc.starts)} starts{unfit_text}), trained on the
{count(dc.train_periods, u)} up to it and scored on every later {u} that holds at least {MIN_TEST_ROWS} rows;
the loss is against the fresh model — trained up to the {u} before — on the same {u}. A lag is measured
on the starts whose {u} at that lag is scored (the `starts` column: {dc.n_starts[0]} at lag 1). Fresh
{metric}: median {fmt(dc.fresh)} (interquartile range {fmt(dc.fresh_q25)} – {fmt(dc.fresh_q75)}). Lags
measured on fewer than {MIN_STARTS_PER_LAG} starts are not used. {horizon_text}

| {u}s since training | starts | median loss vs fresh | interquartile range |
|---|---|---|---|
{dc_rows}

## 4. Retraining cadence — what does each retrain buy?

![cadence]({names[3]})

The history of {plan.describe(*cd.scored_periods)} replayed with a retrain every *k* {u}s (on the last
{count(dc.train_periods, u)}), each {u} scored with the model of the day, for every phase of the
schedule; the loss is against retraining every {u}. Keeping the first model throughout costs
{cd.never:+.1%}.

| retrain every … {u}s | loss (mean over phases) | best … worst phase |
|---|---|---|
{cd_rows}
"""
    path = out / "retraining_plan.md"
    path.write_text(text)
    return path


# -- the demo's data ------------------------------------------------------------------------------
def demo_table(stations: int = 60, days: int = 40) -> Table:
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
    names = ["temp", "atemp", "humidity", "windspeed", "hour", "weather"]
    return Table(np.array(rows_x), np.array(rows_y), np.array(rows_t), names, "the bike-sharing demo")
