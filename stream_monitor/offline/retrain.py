"""The pure logic of a retrainer that closes the loop: which rows to train on, a model to train, whether
to promote it, and what to call it.

A retrain trigger (:class:`~stream_monitor.core.triggers.Trigger`) recommends ``train_on`` periods and
``exclude`` periods (with a reason); a retrainer such as ``examples/retrainer/retrainer.py`` turns
them into a candidate model and promotes it only when it is better than the current one on recent
data it never trained on. This module holds the four decisions, and nothing else: no Kafka, no
files, no wall clock — arrays, prediction-event ``features`` dicts and seeded generators in, values
out.

- :func:`select_training_rows` — the rows inside a ``train_on`` period and outside every ``exclude``
  period (periods are half-open ``[start, end)``, as the monitor's windows and buckets are);
  :func:`recent_rows` — the most recent rows, held out for validation;
- :class:`LinearModel` — ordinary least squares on numeric features and one-hot categoricals, saved
  as plain JSON (never pickle: a model read from a topic must not be able to run code);
- :func:`validate` — promote only when the candidate's MAE is lower by a stated relative margin *and*
  a paired bootstrap says the improvement is not sampling noise;
- :func:`next_version` — the version a promoted candidate gets.

>>> import numpy as np
>>> from stream_monitor.core.triggers import ExcludedPeriod, Period
>>> ts = np.arange(0.0, 10.0)
>>> mask = select_training_rows(ts, [Period(start=2.0, end=8.0)],
...                             [ExcludedPeriod(start=4.0, end=5.0, reason="integrity_incident")])
>>> ts[mask].tolist()
[2.0, 3.0, 5.0, 6.0, 7.0]
>>> rows = [{"temp": t, "weather": "rain" if t % 2 else "clear"} for t in range(8)]
>>> y = [2.0 * t + (3.0 if t % 2 else 0.0) for t in range(8)]
>>> model = LinearModel.fit(rows, y, numeric=["temp"], categorical=["weather"])
>>> model.predict([{"temp": 10, "weather": "rain"}]).round(6).tolist()
[23.0]
>>> check = validate([1.0] * 50, [2.0] * 50, rng=np.random.default_rng(0))
>>> check.promote, check.reason
(True, 'promoted: candidate MAE 1.00 vs current 2.00 on 50 held-out rows (50 % lower, needs 5 %; \
better in 100 % of 1,000 paired bootstrap resamples, needs 95 %)')
>>> next_version("2025.01")
'2025.02'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from stream_monitor.core.categories import NotACategory, normalize_category
from stream_monitor.core.triggers import ExcludedPeriod, Period

__all__ = [
    "DAY",
    "LinearModel",
    "PeriodLike",
    "Validation",
    "exclusion_counts",
    "next_version",
    "recent_rows",
    "select_training_rows",
    "validate",
]

DAY = 86400.0

#: A recommendation period as the trigger's dataclasses hold it, or as its JSON has it
#: (``{"start": …, "end": …, "reason": …}``): only ``start`` and ``end`` (epoch seconds) are read here.
PeriodLike = Period | ExcludedPeriod | Mapping[str, Any]


# -- which rows --------------------------------------------------------------------------------------


def _bounds(period: PeriodLike) -> tuple[float, float]:
    if isinstance(period, Mapping):
        return float(period["start"]), float(period["end"])
    return float(period.start), float(period.end)


def _inside(ts: np.ndarray, periods: Sequence[PeriodLike]) -> np.ndarray:
    """Rows whose time lies in any of ``periods``: ``start <= ts < end`` (NaN is in none)."""
    mask = np.zeros(ts.shape, dtype=bool)
    for period in periods:
        start, end = _bounds(period)
        mask |= (ts >= start) & (ts < end)
    return mask


def select_training_rows(
    ts: np.ndarray, train_on: Sequence[PeriodLike], exclude: Sequence[PeriodLike]
) -> np.ndarray:
    """A boolean mask of the rows to train on: inside some ``train_on`` period, inside no ``exclude``.

    ``ts`` is event time in epoch seconds; periods are the trigger's ``recommendation.train_on`` and
    ``recommendation.exclude`` (:class:`~stream_monitor.core.triggers.Period` /
    :class:`~stream_monitor.core.triggers.ExcludedPeriod`, or their JSON dicts). Every period is
    half-open, ``[start, end)``: the monitor's windows and buckets are, so a row on the boundary of two
    buckets belongs to the later one only. Exclusion wins over inclusion whatever the reason (an
    integrity incident, a one-off regime, the superseded part of a trend), and an empty ``train_on``
    selects nothing — a recommendation that names no period is not a licence to train on everything.
    A row without a time (NaN) is never selected.

    >>> ts = np.array([0.0, 1.0, 2.0, 3.0, np.nan])
    >>> select_training_rows(ts, [{"start": 1.0, "end": 3.0}], []).tolist()
    [False, True, True, False, False]
    >>> select_training_rows(ts, [{"start": 0.0, "end": 9.0}],
    ...                      [{"start": 1.0, "end": 2.0, "reason": "one_off_regime"}]).tolist()
    [True, False, True, True, False]
    >>> bool(select_training_rows(ts, [], []).any())
    False
    """
    ts = np.asarray(ts, dtype=np.float64)
    return _inside(ts, train_on) & ~_inside(ts, exclude)


def exclusion_counts(ts: np.ndarray, exclude: Sequence[ExcludedPeriod | Mapping[str, Any]]) -> dict[str, int]:
    """How many rows each exclusion reason keeps out of training (for the decision record: which
    exclusions mattered, and how much data they cost). A row in two excluded periods counts once, for
    the first that holds it; rows without a time count for none.

    >>> ts = np.arange(10.0)
    >>> exclusion_counts(ts, [{"start": 1.0, "end": 3.0, "reason": "integrity_incident"},
    ...                       {"start": 2.0, "end": 4.0, "reason": "one_off_regime"},
    ...                       {"start": 8.0, "end": 20.0, "reason": "one_off_regime"}])
    {'integrity_incident': 2, 'one_off_regime': 3}
    """
    ts = np.asarray(ts, dtype=np.float64)
    left = np.isfinite(ts)
    counts: dict[str, int] = {}
    for period in exclude:
        reason = str(period["reason"] if isinstance(period, Mapping) else period.reason)
        hit = left & _inside(ts, [period])
        counts[reason] = counts.get(reason, 0) + int(hit.sum())
        left &= ~hit
    return counts


def recent_rows(ts: np.ndarray, *, days: float | None = None, rows: int | None = None) -> np.ndarray:
    """A mask of the most recent rows: the last ``rows`` rows by time, or those within ``days`` of the
    newest row (``ts > newest - days``). Exactly one of the two is given.

    This is what a retrainer holds out: the data closest to what the model will see next, never used
    for training, on which a candidate and the current model are compared. Ties in time are broken by
    position (the later row is the more recent). Rows without a time (NaN) are never recent.

    >>> ts = np.array([5.0, 1.0, 3.0, np.nan, 4.0])
    >>> recent_rows(ts, rows=2).tolist(), recent_rows(ts, days=2.0 / DAY).tolist()
    ([True, False, False, False, True], [True, False, False, False, True])
    """
    if (days is None) == (rows is None):
        raise ValueError("give exactly one of days and rows")
    ts = np.asarray(ts, dtype=np.float64)
    known = np.isfinite(ts)
    mask = np.zeros(ts.shape, dtype=bool)
    if not known.any():
        return mask
    if rows is not None:
        if rows < 0:
            raise ValueError(f"rows must be >= 0, got {rows}")
        order = np.flatnonzero(known)[np.argsort(ts[known], kind="stable")]
        mask[order[max(0, len(order) - rows) :]] = True
        return mask
    assert days is not None
    if days < 0:
        raise ValueError(f"days must be >= 0, got {days}")
    newest = float(ts[known].max())
    mask[known] = ts[known] > newest - days * DAY
    return mask


# -- the model ---------------------------------------------------------------------------------------

_FORMAT = "stream-monitor/linear-model"
_FORMAT_VERSION = 1


def _number(value: Any) -> float:
    """A numeric feature value as the contract has it (booleans 1/0); anything else is missing (NaN)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        number = float(value)
        return number if math.isfinite(number) else math.nan
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return math.nan
        return number if math.isfinite(number) else math.nan
    return math.nan


def _category(value: Any) -> str | None:
    """A categorical value in its one spelling (``True`` and ``"true"``, ``1`` and ``"1.0"`` agree)."""
    try:
        return normalize_category(value)
    except NotACategory:
        return None


@dataclass(frozen=True)
class LinearModel:
    """Ordinary least squares on numeric features and one-hot categoricals, saved as JSON.

    ``prediction = intercept + Σ numeric[f] · (x_f − center_f) / scale_f + Σ categorical[f][level]``.

    Fitting (:meth:`fit`): numeric features are standardised (their mean and standard deviation on
    the training rows, which keeps the least-squares system well conditioned whatever the units); a
    missing numeric value is the training mean. Each categorical feature gets one column per level
    seen in training except its most frequent one, the baseline, whose coefficient is 0 — the same
    predictions as a full one-hot encoding with an intercept, without its exact collinearity. A
    missing categorical value, or a level never seen in training, is read as the baseline. The
    solution is :func:`numpy.linalg.lstsq`'s (the minimum-norm one when features are collinear).

    Rows are prediction events' ``features`` dicts; which features the model uses is the caller's
    choice (``numeric``, ``categorical``), and other keys of a row are ignored.

    >>> rows = [{"x": 1, "c": "a"}, {"x": 2, "c": "a"}, {"x": 3, "c": "b"}, {"x": None, "c": "b"}]
    >>> model = LinearModel.fit(rows, [1.0, 2.0, 13.0, 12.0], numeric=["x"], categorical=["c"])
    >>> {level: round(c, 6) for level, c in model.categorical["c"].items()}  # baseline: "a" (a tie)
    {'a': 0.0, 'b': 10.0}
    >>> model.predict([{"x": 3, "c": "b"}, {"x": 3, "c": "new"}]).round(6).tolist()
    [13.0, 3.0]
    >>> LinearModel.from_json(model.to_json()) == model
    True
    """

    intercept: float
    #: Standardised coefficient of each numeric feature.
    numeric: dict[str, float]
    center: dict[str, float]
    scale: dict[str, float]
    #: Per categorical feature, the coefficient of each level seen in training (the baseline's is 0).
    categorical: dict[str, dict[str, float]]
    #: Rows the model was fitted on.
    n_train: int

    @classmethod
    def fit(
        cls,
        rows: Sequence[Mapping[str, Any]],
        targets: Sequence[float] | np.ndarray,
        *,
        numeric: Sequence[str],
        categorical: Sequence[str] = (),
    ) -> LinearModel:
        """Fit on ``rows`` (``features`` dicts) and their ``targets`` (finite numbers, one per row)."""
        y = np.asarray(targets, dtype=np.float64)
        if y.shape != (len(rows),):
            raise ValueError(f"{len(rows)} rows but targets of shape {y.shape}")
        if len(rows) == 0:
            raise ValueError("no rows to fit on")
        if not np.isfinite(y).all():
            raise ValueError(f"{int((~np.isfinite(y)).sum())} targets are not finite numbers")
        overlap = set(numeric) & set(categorical)
        if overlap:
            raise ValueError(f"features both numeric and categorical: {sorted(overlap)}")
        center: dict[str, float] = {}
        scale: dict[str, float] = {}
        columns: list[np.ndarray] = []
        for name in numeric:
            x = np.array([_number(row.get(name)) for row in rows])
            known = np.isfinite(x)
            mean = float(x[known].mean()) if known.any() else 0.0
            x = np.where(known, x, mean)
            std = float(x.std())
            # A constant column (or one never given) cannot be scaled: it stays 0 after centring and
            # least squares gives it coefficient 0.
            center[name], scale[name] = mean, std if std > 0 else 1.0
            columns.append((x - mean) / scale[name])
        levels: dict[str, list[str]] = {}
        for name in categorical:
            values = [_category(row.get(name)) for row in rows]
            counts: dict[str, int] = {}
            for v in values:
                if v is not None:
                    counts[v] = counts.get(v, 0) + 1
            # The most frequent level is the baseline (ties: the first in sort order, so a refit on
            # the same rows gives the same model).
            ordered = sorted(counts, key=lambda level: (-counts[level], level))
            levels[name] = ordered
            for level in ordered[1:]:
                columns.append(np.array([v == level for v in values], dtype=np.float64))
        design = np.column_stack([np.ones(len(rows)), *columns])
        solution, *_ = np.linalg.lstsq(design, y, rcond=None)
        coef = iter(solution[1:].tolist())
        numeric_coef = {name: next(coef) for name in numeric}
        categorical_coef = {
            name: {level: (0.0 if i == 0 else next(coef)) for i, level in enumerate(ordered)}
            for name, ordered in levels.items()
        }
        return cls(
            intercept=float(solution[0]),
            numeric=numeric_coef,
            center=center,
            scale=scale,
            categorical=categorical_coef,
            n_train=len(rows),
        )

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Predictions for ``rows`` (``features`` dicts), as float64."""
        out = np.full(len(rows), self.intercept, dtype=np.float64)
        for name, coef in self.numeric.items():
            x = np.array([_number(row.get(name)) for row in rows], dtype=np.float64)
            x = np.where(np.isfinite(x), x, self.center[name])
            out += coef * (x - self.center[name]) / self.scale[name]
        for name, by_level in self.categorical.items():
            # Unknown and missing levels add nothing: they read as the baseline.
            out += np.array([by_level.get(_category(row.get(name)) or "", 0.0) for row in rows])
        return out

    @property
    def features(self) -> tuple[list[str], list[str]]:
        """The model's numeric and categorical feature names."""
        return list(self.numeric), list(self.categorical)

    def to_dict(self) -> dict[str, Any]:
        """The model as plain JSON data (what :meth:`to_json` writes)."""
        return {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "intercept": self.intercept,
            "numeric": {
                name: {"coef": coef, "center": self.center[name], "scale": self.scale[name]}
                for name, coef in self.numeric.items()
            },
            "categorical": {name: dict(levels) for name, levels in self.categorical.items()},
            "n_train": self.n_train,
        }

    def to_json(self) -> bytes:
        """The model as JSON (UTF-8); read back with :meth:`from_json`."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LinearModel:
        """Read :meth:`to_dict`'s data; anything else raises ``ValueError`` saying what is wrong."""
        if not isinstance(d, Mapping) or d.get("format") != _FORMAT:
            raise ValueError(f"not a linear model: format must be {_FORMAT!r}")
        if d.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"linear model format_version {d.get('format_version')!r}, expected 1")
        try:
            numeric = {str(k): _finite(v["coef"]) for k, v in d["numeric"].items()}
            center = {str(k): _finite(v["center"]) for k, v in d["numeric"].items()}
            scale = {str(k): _finite(v["scale"]) for k, v in d["numeric"].items()}
            categorical = {
                str(name): {str(level): _finite(c) for level, c in levels.items()}
                for name, levels in d["categorical"].items()
            }
            model = cls(
                intercept=_finite(d["intercept"]),
                numeric=numeric,
                center=center,
                scale=scale,
                categorical=categorical,
                n_train=int(d["n_train"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"bad linear model: {exc!r}") from None
        if any(s <= 0 for s in scale.values()):
            raise ValueError("bad linear model: a numeric scale is not positive")
        return model

    @classmethod
    def from_json(cls, data: bytes | str) -> LinearModel:
        """Read :meth:`to_json`'s bytes."""
        return cls.from_dict(orjson.loads(data))


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"{value!r} is not a finite number")
    return float(value)


# -- promote or keep ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Validation:
    """The verdict on a candidate: promote it or keep the current model, and why.

    ``candidate_mae`` and ``current_mae`` are measured on the same ``n`` held-out rows; ``margin`` is
    the relative MAE reduction required (0.05: 5 % lower); ``confidence`` is the share of paired
    bootstrap resamples in which the candidate's MAE is lower than the current model's, and
    ``required_confidence`` the share needed. ``reason`` says it in one sentence.
    """

    promote: bool
    candidate_mae: float
    current_mae: float
    margin: float
    n: int
    confidence: float
    required_confidence: float
    resamples: int
    reason: str

    @property
    def improvement(self) -> float:
        """Relative MAE reduction of the candidate (0.1: 10 % lower; negative: worse)."""
        if self.current_mae > 0:
            return 1.0 - self.candidate_mae / self.current_mae
        return 0.0 if self.candidate_mae == self.current_mae else -math.inf

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the decision record's ``validation``); unknown numbers are ``None``."""

        def known(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "promote": self.promote,
            "metric": "mae",
            "candidate_mae": known(self.candidate_mae),
            "current_mae": known(self.current_mae),
            "improvement": known(self.improvement),
            "margin": self.margin,
            "n": self.n,
            "confidence": known(self.confidence),
            "required_confidence": self.required_confidence,
            "resamples": self.resamples,
            "reason": self.reason,
        }


def _figure(x: float) -> str:
    """A metric as a person reads it: three significant figures, never in exponent form."""
    if not math.isfinite(x):
        return "n/a"
    magnitude = abs(x)
    if magnitude >= 100:
        return f"{x:,.0f}"
    if magnitude >= 10:
        return f"{x:.1f}"
    if magnitude >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _percent(share: float) -> str:
    """0.05 → "5 %", 0.025 → "2.5 %", 0.1934 → "19.3 %" (one decimal at most, none when it is 0)."""
    text = f"{share * 100:.1f}"
    return f"{text[:-2] if text.endswith('.0') else text} %"


def _bootstrap_confidence(gain: np.ndarray, rng: np.random.Generator, resamples: int) -> float:
    """Share of paired bootstrap resamples whose mean ``gain`` (current − candidate error) is > 0."""
    n = len(gain)
    better = 0
    # Draw in chunks so a large hold-out never needs a resamples × n index matrix at once.
    per_chunk = max(1, 4_000_000 // n)
    done = 0
    while done < resamples:
        k = min(per_chunk, resamples - done)
        idx = rng.integers(0, n, size=(k, n))
        better += int((gain[idx].mean(axis=1) > 0).sum())
        done += k
    return better / resamples


def validate(
    candidate_errors: Sequence[float] | np.ndarray,
    current_errors: Sequence[float] | np.ndarray,
    margin: float = 0.05,
    *,
    rng: np.random.Generator | None = None,
    resamples: int = 1000,
    confidence: float = 0.95,
    min_rows: int = 30,
    current_version: str | None = None,
    candidate_version: str | None = None,
) -> Validation:
    """Promote the candidate only if it is better on the held-out rows, by ``margin`` and for real.

    ``candidate_errors`` and ``current_errors`` are each model's errors on the *same* held-out rows,
    in the same order (signed or absolute: their absolute values are compared, so the metric is MAE).
    Pairs where either error is not a finite number are left out; ``n`` counts the rest. The
    candidate is promoted when all of these hold:

    1. at least ``min_rows`` pairs (below that neither verdict means anything);
    2. its MAE is at least ``margin`` lower, relatively: ``candidate ≤ (1 − margin) · current`` —
       a retrain costs a deployment and a new reference, so a marginal gain is not worth it;
    3. in at least ``confidence`` of ``resamples`` paired bootstrap resamples of the rows (the same
       rows drawn for both models, so what is hard for one is hard for the other), the candidate's
       MAE is lower: the gain is not an accident of which rows were held out.

    ``rng`` draws the resamples (default: ``numpy.random.default_rng(0)``: the verdict on the same
    errors is always the same). The versions only name the models in ``reason``.

    >>> rng = np.random.default_rng(1)
    >>> current = np.abs(rng.normal(0, 14.0, 4800))
    >>> v = validate(current * 1.02, current, rng=np.random.default_rng(0), current_version="2025.01")
    >>> v.promote, v.reason
    (False, 'kept 2025.01: candidate MAE 11.4 vs current 11.1 on 4,800 held-out rows; needs 5 % lower')
    >>> few = np.random.default_rng(3)  # 40 rows: 6 % lower, but that could be the rows drawn
    >>> candidate, current = np.abs(few.normal(0, 9, 40)), np.abs(few.normal(0, 10, 40))
    >>> v = validate(candidate, current, rng=np.random.default_rng(0))
    >>> v.promote, v.reason
    (False, 'kept the current model: candidate MAE 7.70 vs current 8.19 on 40 held-out rows (6 % lower) \
but better in only 62.8 % of 1,000 paired bootstrap resamples; needs 95 %')
    """
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be in [0, 1), got {margin}")
    if not 0 < confidence <= 1:
        raise ValueError(f"confidence must be in (0, 1], got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    cand = np.abs(np.asarray(candidate_errors, dtype=np.float64))
    cur = np.abs(np.asarray(current_errors, dtype=np.float64))
    if cand.shape != cur.shape or cand.ndim != 1:
        raise ValueError(f"paired errors needed: shapes {cand.shape} and {cur.shape}")
    both = np.isfinite(cand) & np.isfinite(cur)
    cand, cur = cand[both], cur[both]
    n = len(cand)
    rng = np.random.default_rng(0) if rng is None else rng
    kept = f"kept {current_version}" if current_version else "kept the current model"
    promoted = f"promoted {candidate_version}" if candidate_version else "promoted"

    def verdict(
        promote: bool, candidate_mae: float, current_mae: float, share: float, reason: str
    ) -> Validation:
        return Validation(
            promote=promote,
            candidate_mae=candidate_mae,
            current_mae=current_mae,
            margin=margin,
            n=n,
            confidence=share,
            required_confidence=confidence,
            resamples=resamples,
            reason=reason,
        )

    if n < max(1, min_rows):
        cand_mae = float(cand.mean()) if n else math.nan
        cur_mae = float(cur.mean()) if n else math.nan
        return verdict(
            False,
            cand_mae,
            cur_mae,
            math.nan,
            f"{kept}: only {n:,} held-out rows; needs at least {min_rows:,}",
        )
    cand_mae, cur_mae = float(cand.mean()), float(cur.mean())
    measured = f"candidate MAE {_figure(cand_mae)} vs current {_figure(cur_mae)} on {n:,} held-out rows"
    needs = f"needs {_percent(margin)} lower"
    # The margin first: if the point estimate is not good enough, no resampling can make it so.
    if not cand_mae <= (1.0 - margin) * cur_mae:
        return verdict(False, cand_mae, cur_mae, math.nan, f"{kept}: {measured}; {needs}")
    share = _bootstrap_confidence(cur - cand, rng, resamples)
    lower = f"{_percent(1.0 - cand_mae / cur_mae)} lower" if cur_mae > 0 else "as good"
    bootstrap = f"{_percent(share)} of {resamples:,} paired bootstrap resamples"
    if share < confidence:
        return verdict(
            False,
            cand_mae,
            cur_mae,
            share,
            f"{kept}: {measured} ({lower}) but better in only {bootstrap}; needs {_percent(confidence)}",
        )
    return verdict(
        True,
        cand_mae,
        cur_mae,
        share,
        f"{promoted}: {measured} ({lower}, needs {_percent(margin)}; better in {bootstrap}, "
        f"needs {_percent(confidence)})",
    )


# -- what to call it ---------------------------------------------------------------------------------


_DIGITS = frozenset("0123456789")  # str.isdigit() also takes "²" and other digits int() refuses


def next_version(current: str) -> str:
    """The version a promoted candidate of the model at ``current`` gets: the last number in
    ``current`` plus one, zero padding kept (``2025.01`` → ``2025.02``, ``7`` → ``8``, ``v1.9`` →
    ``v1.10``, ``2024-05-01`` → ``2024-05-02``); a version without a number gets ``.1`` (``abc`` →
    ``abc.1``), an empty one is ``1``.

    Versions are names, not dates or semantic versions: this only has to give a name the model has
    not had, derived from the current one so that the lineage reads at a glance. It needs no clock
    (a retrain replayed from the same trigger names its candidate the same).

    >>> [next_version(v) for v in ("2025.01", "2025.09", "2025.99", "7", "v1.9", "abc", "")]
    ['2025.02', '2025.10', '2025.100', '8', 'v1.10', 'abc.1', '1']
    """
    if current == "":
        return "1"
    end = len(current)
    while end > 0 and current[end - 1] not in _DIGITS:
        end -= 1
    if end == 0:
        return f"{current}.1"
    start = end
    while start > 0 and current[start - 1] in _DIGITS:
        start -= 1
    digits = current[start:end]
    bumped = str(int(digits) + 1).zfill(len(digits))
    return current[:start] + bumped + current[end:]
