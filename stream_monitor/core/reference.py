"""Reference profiles: what a model's inputs and outputs looked like when it was trained.

A profile holds, per numeric feature, quantile bin edges with the reference counts on them (for PSI, JS),
a sorted sample (for KS) and moments; per categorical feature, the top-K categories with an ``__other__``
bucket; the prediction distribution; and the baseline performance when labels were given. Window
sketches count live data on exactly these bins, so the drift statistics compare like with like.

Pure: no files, no clock. Reading training files is ``reference_io.py``.

>>> p = NumericProfile.from_values(np.arange(10.0), bins=4, sample_size=3, seed=0)
>>> p.edges.tolist(), p.counts.tolist()
([2.25, 4.5, 6.75], [3, 2, 2, 3])
>>> ReferenceProfile.from_json(ReferenceProfile(1, "m", numeric={"x": p}).to_json()).numeric["x"] == p
True
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import orjson

from stream_monitor.core import state_format
from stream_monitor.core.categories import normalize_category
from stream_monitor.core.quality import binary_auc, binary_decisions, f1_from_counts, mae, per_class_f1, rmse
from stream_monitor.core.schema import FeatureSpec, ModelSchema
from stream_monitor.core.settings import DetectorSettings
from stream_monitor.core.state_format import StateReader
from stream_monitor.errors import StateError

if TYPE_CHECKING:
    from stream_monitor.core.events import PredictionBatch

#: Version of the JSON layout written by :meth:`ReferenceProfile.to_json`; bump on incompatible change.
PROFILE_FORMAT = 1
#: Version of the state layouts (:meth:`ReferenceProfile.to_state`, :meth:`ReferenceWarmup.to_state`).
STATE_FORMAT = 2  # the warm-up's 1 was JSON

#: Name of the implicit last bucket of a categorical profile: every value outside the top-K.
OTHER = "__other__"

#: How a binary reference's accuracy/F1 baseline decided its rows (``ReferenceProfile.baseline_decision``):
#: by the predicted class its data gave, or by the score alone (no predicted class in the data).
BASELINE_DECISIONS = ("predicted_class", "score")


def _float_or_nan(value: Any) -> float:
    # JSON has no NaN: orjson writes NaN as null, so null reads back as NaN.
    return math.nan if value is None else float(value)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@dataclass(eq=False)
class NumericProfile:
    """Reference distribution of one numeric column (a feature or the prediction score).

    ``edges`` are the inner bin edges (quantiles of the reference, equal ones merged so discrete
    features do not get empty bins); the outer bins are open-ended, so a value ``x`` falls in bin
    ``np.searchsorted(edges, x, side="right")`` and ``len(counts) == len(edges) + 1``. ``counts``,
    the moments and ``sample`` cover non-missing values only; ``std`` is the population std (ddof=0).
    ``sample`` is a sorted uniform sample without replacement, for KS tests.

    >>> p = NumericProfile.from_values(np.array([1.0, 1.0, 1.0, 2.0, np.nan]), bins=4)
    >>> p.edges.tolist(), p.counts.tolist(), p.missing_rate
    ([1.0, 1.25], [0, 3, 1], 0.2)
    >>> int(np.searchsorted(p.edges, 1.5, side="right"))
    2
    """

    edges: np.ndarray
    counts: np.ndarray
    min: float
    max: float
    mean: float
    std: float
    missing_rate: float
    sample: np.ndarray

    @classmethod
    def from_values(
        cls,
        values: np.ndarray,
        *,
        bins: int = DetectorSettings.bins,
        sample_size: int = DetectorSettings.reference_sample,
        seed: int = 0,
    ) -> NumericProfile:
        """Profile a float array (NaN = missing) on ``bins`` quantile bins.

        >>> p = NumericProfile.from_values(np.array([3.0, 1.0, 2.0]), bins=2, sample_size=2, seed=1)
        >>> p.edges.tolist(), p.counts.tolist(), p.mean, len(p.sample)
        ([2.0], [1, 2], 2.0, 2)
        """
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        values = np.asarray(values, dtype=np.float64)
        present = values[~np.isnan(values)]
        missing_rate = (values.size - present.size) / values.size if values.size else 0.0
        if present.size == 0:
            return cls(
                edges=np.empty(0),
                counts=np.zeros(1, dtype=np.int64),
                min=math.nan,
                max=math.nan,
                mean=math.nan,
                std=math.nan,
                missing_rate=missing_rate,
                sample=np.empty(0),
            )
        edges = np.unique(np.quantile(present, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=edges.size + 1)
        if present.size > sample_size:
            rng = np.random.default_rng(seed)
            sample = np.sort(present[rng.choice(present.size, size=sample_size, replace=False)])
        else:
            sample = np.sort(present)
        return cls(
            edges=edges,
            counts=counts.astype(np.int64),
            min=float(present.min()),
            max=float(present.max()),
            mean=float(present.mean()),
            std=float(present.std()),
            missing_rate=missing_rate,
            sample=sample,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NumericProfile):
            return NotImplemented
        return (
            np.array_equal(self.edges, other.edges)
            and np.array_equal(self.counts, other.counts)
            and np.array_equal(self.sample, other.sample)
            and all(
                _same_float(getattr(self, name), getattr(other, name))
                for name in ("min", "max", "mean", "std", "missing_rate")
            )
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (arrays as lists, NaN as None).

        >>> NumericProfile.from_values(np.array([1.0, np.nan]), bins=2).to_dict()["max"]
        1.0
        """
        return {
            "kind": "numeric",
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
            "min": _finite_or_none(self.min),
            "max": _finite_or_none(self.max),
            "mean": _finite_or_none(self.mean),
            "std": _finite_or_none(self.std),
            "missing_rate": self.missing_rate,
            "sample": self.sample.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NumericProfile:
        """Inverse of :meth:`to_dict`; raises :class:`StateError` on a malformed dict.

        >>> p = NumericProfile.from_values(np.array([1.0, 5.0]), bins=2)
        >>> NumericProfile.from_dict(p.to_dict()) == p
        True
        """
        try:
            edges = np.asarray(data["edges"], dtype=np.float64)
            counts = np.asarray(data["counts"], dtype=np.int64)
            sample = np.asarray(data["sample"], dtype=np.float64)
            profile = cls(
                edges=edges,
                counts=counts,
                min=_float_or_nan(data["min"]),
                max=_float_or_nan(data["max"]),
                mean=_float_or_nan(data["mean"]),
                std=_float_or_nan(data["std"]),
                missing_rate=float(data["missing_rate"]),
                sample=sample,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"bad numeric profile: {exc!r}") from exc
        if edges.ndim != 1 or counts.ndim != 1 or sample.ndim != 1:
            raise StateError("bad numeric profile: edges, counts and sample must be flat lists")
        if counts.size != edges.size + 1:
            raise StateError(f"bad numeric profile: {counts.size} counts for {edges.size} inner edges")
        if not (np.all(np.diff(edges) > 0) and np.all(np.diff(sample) >= 0)):
            raise StateError("bad numeric profile: edges must be increasing and sample sorted")
        return profile


@dataclass(eq=False)
class CategoricalProfile:
    """Reference distribution of one categorical column: top-K categories plus ``__other__``.

    ``categories`` are the K most frequent non-missing values (ties broken by name); ``counts`` has
    K + 1 entries, the last one counting every other non-missing value. Missing values are only in
    ``missing_rate``.

    >>> p = CategoricalProfile.from_values(["a", "b", "a", None, "c"], top_k=1)
    >>> p.categories, p.counts.tolist(), p.missing_rate
    (['a'], [2, 2], 0.2)
    >>> p.bucket_indices(["a", "z", None]).tolist()
    [0, 1, -1]
    """

    categories: list[str]
    counts: np.ndarray
    missing_rate: float

    @classmethod
    def from_values(
        cls, values: Sequence[str | None], *, top_k: int = DetectorSettings.top_k
    ) -> CategoricalProfile:
        """Profile a column of strings (None = missing), keeping the ``top_k`` most frequent.

        >>> CategoricalProfile.from_values(["x", "y", "y"], top_k=5).categories
        ['y', 'x']
        """
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        frequency = Counter(v for v in values if v is not None)
        n_present = sum(frequency.values())
        ranked = sorted(frequency.items(), key=lambda item: (-item[1], item[0]))[:top_k]
        categories = [name for name, _ in ranked]
        kept = [count for _, count in ranked]
        counts = np.array([*kept, n_present - sum(kept)], dtype=np.int64)
        missing_rate = (len(values) - n_present) / len(values) if len(values) else 0.0
        return cls(categories=categories, counts=counts, missing_rate=missing_rate)

    def respelled(self) -> CategoricalProfile:
        """The profile with its categories in their one spelling (:mod:`stream_monitor.core.categories`).

        Profiles written before values were normalised may hold ``"True"`` or ``"1.0"``, which live
        events now spell ``"true"`` and ``"1"``: categories that now spell alike are merged (re-ranked
        by count), and one that is now empty counts as missing. ``self`` when nothing changes.

        >>> p = CategoricalProfile(["True", "true", " ", "1.0"], np.array([4, 3, 2, 1, 5]), 0.0)
        >>> q = p.respelled()
        >>> q.categories, q.counts.tolist(), round(q.missing_rate, 3)
        (['true', '1'], [7, 1, 5], 0.133)
        """
        counts = self.counts.tolist()
        merged: dict[str, int] = {}
        now_missing = 0
        for name, count in zip(self.categories, counts, strict=False):
            spelled = normalize_category(name)
            if spelled is None:
                now_missing += count
            else:
                merged[spelled] = merged.get(spelled, 0) + count
        if not now_missing and list(merged) == self.categories:
            return self
        ranked = sorted(merged.items(), key=lambda item: (-item[1], item[0]))
        present = sum(counts)
        # The events behind the profile: its present values are the (1 - missing_rate) share of them.
        total = present / (1.0 - self.missing_rate) if self.missing_rate < 1.0 else float(present)
        missing_rate = (self.missing_rate * total + now_missing) / total if total else self.missing_rate
        return CategoricalProfile(
            categories=[name for name, _ in ranked],
            counts=np.array([*(count for _, count in ranked), counts[-1]], dtype=np.int64),
            missing_rate=missing_rate,
        )

    def bucket_indices(self, values: Sequence[str | None]) -> np.ndarray:
        """Bucket of each value: its category's position, K for ``__other__``, -1 for missing.

        >>> CategoricalProfile(["a", "b"], np.array([1, 1, 0]), 0.0).bucket_indices(["b", "q"]).tolist()
        [1, 2]
        """
        position = {name: i for i, name in enumerate(self.categories)}
        other = len(self.categories)
        return np.fromiter(
            (-1 if v is None else position.get(v, other) for v in values), dtype=np.int64, count=len(values)
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CategoricalProfile):
            return NotImplemented
        return (
            self.categories == other.categories
            and np.array_equal(self.counts, other.counts)
            and _same_float(self.missing_rate, other.missing_rate)
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict.

        >>> CategoricalProfile.from_values(["a"]).to_dict()["counts"]
        [1, 0]
        """
        return {
            "kind": "categorical",
            "categories": list(self.categories),
            "counts": self.counts.tolist(),
            "missing_rate": self.missing_rate,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CategoricalProfile:
        """Inverse of :meth:`to_dict`; raises :class:`StateError` on a malformed dict.

        >>> p = CategoricalProfile.from_values(["a", "b", "b"])
        >>> CategoricalProfile.from_dict(p.to_dict()) == p
        True
        """
        try:
            categories = data["categories"]
            counts = np.asarray(data["counts"], dtype=np.int64)
            missing_rate = float(data["missing_rate"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"bad categorical profile: {exc!r}") from exc
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            raise StateError("bad categorical profile: categories must be a list of strings")
        if counts.ndim != 1 or counts.size != len(categories) + 1:
            raise StateError(
                f"bad categorical profile: {counts.size} counts for {len(categories)} categories + other"
            )
        return cls(categories=categories, counts=counts, missing_rate=missing_rate)


def _column_from_dict(data: Any) -> NumericProfile | CategoricalProfile:
    if not isinstance(data, dict):
        raise StateError("bad profile: a column profile must be an object")
    kind = data.get("kind")
    if kind == "numeric":
        return NumericProfile.from_dict(data)
    if kind == "categorical":
        return CategoricalProfile.from_dict(data)
    raise StateError(f"bad profile: unknown column kind {kind!r}")


def _column_state(profile: NumericProfile | CategoricalProfile) -> dict[str, Any]:
    if isinstance(profile, NumericProfile):
        stats = [profile.min, profile.max, profile.mean, profile.std, profile.missing_rate]
        return state_format.tagged(
            "numeric_profile",
            STATE_FORMAT,
            edges=np.asarray(profile.edges, dtype=np.float64),
            counts=np.asarray(profile.counts, dtype=np.int64),
            sample=np.asarray(profile.sample, dtype=np.float64),
            stats=np.array(stats, dtype=np.float64),
        )
    return state_format.tagged(
        "categorical_profile",
        STATE_FORMAT,
        categories=list(profile.categories),
        counts=np.asarray(profile.counts, dtype=np.int64),
        missing_rate=np.array([profile.missing_rate], dtype=np.float64),
    )


def _column_from_state(r: StateReader) -> NumericProfile | CategoricalProfile:
    kind = r.parts.get("kind")
    if kind == "categorical_profile":
        r.expect("categorical_profile", STATE_FORMAT)
        categories = r.strings("categories")
        counts = r.array("counts", np.int64, shape=(len(categories) + 1,))
        (missing_rate,) = r.array("missing_rate", np.float64, shape=(1,)).tolist()
        return CategoricalProfile(categories, counts, missing_rate)
    r.expect("numeric_profile", STATE_FORMAT)
    edges = r.array("edges", np.float64, ndim=1)
    counts = r.array("counts", np.int64, shape=(edges.size + 1,))
    sample = r.array("sample", np.float64, ndim=1)
    if not (np.all(np.diff(edges) > 0) and np.all(np.diff(sample) >= 0)):
        raise StateError(f"{r.what}: edges must be increasing and the sample sorted")
    low, high, mean, std, missing_rate = r.array("stats", np.float64, shape=(5,)).tolist()
    return NumericProfile(edges, counts, low, high, mean, std, missing_rate, sample)


@dataclass(eq=False)
class ReferenceProfile:
    """Everything the detectors compare a live window with, for one model.

    ``version`` numbers successive references of the same model (a rebuilt reference gets a higher
    one); the serialization layout is versioned separately by :data:`PROFILE_FORMAT`.
    ``prediction`` is a :class:`NumericProfile` of the score (binary, regression) or a
    :class:`CategoricalProfile` of predicted classes (multiclass), None when the reference had no
    predictions. ``baseline`` holds the reference performance when labels were given: ``auc``,
    ``accuracy``, ``f1`` (binary); ``accuracy``, ``f1`` (macro, multiclass); ``mae``, ``rmse``,
    ``mean_error`` (regression). ``baseline_decision`` says how a binary baseline's accuracy and F1
    decided (one of :data:`BASELINE_DECISIONS`; None without such a baseline, or in a profile written
    before it was recorded). ``event_rate`` is events per second of event time, None when the
    reference has no time span. ``longest_gap_seconds`` is the longest stretch of event time without
    an event in the reference (nights, weekends, the months between yearly surveys): a live stretch
    no longer than it is how the stream normally runs, not a gap (None when unknown).

    >>> r = ReferenceProfile(1, "m", n_events=2, baseline={"mae": 0.5}, event_rate=None)
    >>> ReferenceProfile.from_json(r.to_json()) == r
    True
    """

    version: int
    model_id: str
    created_at: float = 0.0
    n_events: int = 0
    numeric: dict[str, NumericProfile] = field(default_factory=dict)
    categorical: dict[str, CategoricalProfile] = field(default_factory=dict)
    prediction: NumericProfile | CategoricalProfile | None = None
    baseline: dict[str, float] = field(default_factory=dict)
    event_rate: float | None = None
    baseline_decision: str | None = None
    longest_gap_seconds: float | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReferenceProfile):
            return NotImplemented
        return (
            self.model_id == other.model_id
            and self.version == other.version
            and self.created_at == other.created_at
            and self.n_events == other.n_events
            and self.numeric == other.numeric
            and self.categorical == other.categorical
            and self.prediction == other.prediction
            and self.baseline == other.baseline
            and self.event_rate == other.event_rate
            and self.baseline_decision == other.baseline_decision
            and self.longest_gap_seconds == other.longest_gap_seconds
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the ``format`` field.

        >>> ReferenceProfile(1, "m").to_dict()["format"]
        1
        """
        data = {
            "format": PROFILE_FORMAT,
            "version": self.version,
            "model_id": self.model_id,
            "created_at": self.created_at,
            "n_events": self.n_events,
            "numeric": {name: p.to_dict() for name, p in self.numeric.items()},
            "categorical": {name: p.to_dict() for name, p in self.categorical.items()},
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
            "baseline": dict(self.baseline),
            "event_rate": self.event_rate,
        }
        # Only when known: a profile without it reads and digests exactly as before.
        if self.baseline_decision is not None:
            data["baseline_decision"] = self.baseline_decision
        if self.longest_gap_seconds is not None:
            data["longest_gap_seconds"] = self.longest_gap_seconds
        return data

    def to_json(self) -> bytes:
        """Serialize to UTF-8 JSON bytes (orjson); :meth:`from_json` restores it exactly.

        >>> ReferenceProfile(1, "m").to_json()[:11]
        b'{"format":1'
        """
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """Inverse of :meth:`to_dict`; raises :class:`StateError` on a malformed or newer-format dict.

        Feature categories are read in their one spelling (:meth:`CategoricalProfile.respelled`), so a
        profile built before values were normalised still matches live events.

        >>> ReferenceProfile.from_dict(ReferenceProfile(3, "m").to_dict()).version
        3
        """
        if not isinstance(data, dict):
            raise StateError("bad profile: not a JSON object")
        if data.get("format") != PROFILE_FORMAT:
            raise StateError(f"bad profile: format {data.get('format')!r}, expected {PROFILE_FORMAT}")
        try:
            numeric = {str(k): NumericProfile.from_dict(v) for k, v in data["numeric"].items()}
            categorical = {
                str(k): CategoricalProfile.from_dict(v).respelled() for k, v in data["categorical"].items()
            }
            prediction = None if data["prediction"] is None else _column_from_dict(data["prediction"])
            baseline = {str(k): float(v) for k, v in data["baseline"].items()}
            event_rate = data["event_rate"]
            model_id = data["model_id"]
            if not isinstance(model_id, str):
                raise TypeError("model_id must be a string")
            decision = data.get("baseline_decision")
            gap = data.get("longest_gap_seconds")
            if decision is not None and decision not in BASELINE_DECISIONS:
                raise ValueError(f"baseline_decision {decision!r} is not one of {BASELINE_DECISIONS}")
            return cls(
                model_id=model_id,
                version=int(data["version"]),
                created_at=float(data["created_at"]),
                n_events=int(data["n_events"]),
                numeric=numeric,
                categorical=categorical,
                prediction=prediction,
                baseline=baseline,
                event_rate=None if event_rate is None else float(event_rate),
                baseline_decision=decision,
                longest_gap_seconds=None if gap is None else float(gap),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"bad profile: {exc!r}") from exc

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        """Parse bytes written by :meth:`to_json`; raises :class:`StateError` on bad input.

        >>> ReferenceProfile.from_json(b'{"format": 99}')
        Traceback (most recent call last):
        ...
        stream_monitor.errors.StateError: bad profile: format 99, expected 1
        """
        try:
            decoded = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise StateError(f"bad profile: not JSON ({exc})") from exc
        return cls.from_dict(decoded)

    def digest(self) -> str:
        """Content digest of the profile (SHA-256 of :meth:`to_json`, 32 hex digits).

        A snapshot built against a configured reference stores only this, not the profile.

        >>> one, same, two = ReferenceProfile(1, "m"), ReferenceProfile(1, "m"), ReferenceProfile(2, "m")
        >>> one.digest() == same.digest() != two.digest()
        True
        """
        return hashlib.sha256(self.to_json()).hexdigest()[:32]

    def to_state(self) -> dict[str, Any]:
        """The profile as a container of :mod:`stream_monitor.core.state_format` (arrays as arrays).

        For state (a reference warmed up from live events); files keep :meth:`to_json`.

        >>> r = ReferenceProfile(1, "m", numeric={"x": NumericProfile.from_values(np.arange(5.0), bins=2)})
        >>> ReferenceProfile.from_state(r.to_state()) == r
        True
        """
        # baseline_decision only when known, so the state of a profile without it is as before.
        decision: dict[str, Any] = (
            {} if self.baseline_decision is None else {"baseline_decision": self.baseline_decision}
        )
        if self.longest_gap_seconds is not None:
            decision["longest_gap_seconds"] = self.longest_gap_seconds
        return state_format.tagged(
            "reference_profile",
            STATE_FORMAT,
            version=self.version,
            model_id=self.model_id,
            created_at=self.created_at,
            n_events=self.n_events,
            event_rate=self.event_rate,
            baseline_names=list(self.baseline),
            baseline_values=np.array(list(self.baseline.values()), dtype=np.float64),
            numeric={name: _column_state(p) for name, p in self.numeric.items()},
            categorical={name: _column_state(p) for name, p in self.categorical.items()},
            prediction=None if self.prediction is None else _column_state(self.prediction),
            **decision,
        )

    @classmethod
    @state_format.restoring
    def from_state(cls, state: StateReader | dict[str, Any], what: str = "reference profile") -> Self:
        """Inverse of :meth:`to_state`; :class:`StateError` when it does not fit."""
        r = state if isinstance(state, StateReader) else StateReader(state, what)
        r.expect("reference_profile", STATE_FORMAT)
        names = r.strings("baseline_names")
        values = r.array("baseline_values", np.float64, shape=(len(names),))
        numeric_parts, categorical_parts = r.child("numeric"), r.child("categorical")
        numeric = {name: _column_from_state(numeric_parts.child(name)) for name in numeric_parts.parts}
        categorical = {
            name: _column_from_state(categorical_parts.child(name)) for name in categorical_parts.parts
        }
        prediction_state = r.optional_child("prediction")
        decision = r.text("baseline_decision") if r.has("baseline_decision") else None
        if decision is not None and decision not in BASELINE_DECISIONS:
            raise StateError(f"{r.what}: baseline_decision {decision!r} is not one of {BASELINE_DECISIONS}")
        if not all(isinstance(p, NumericProfile) for p in numeric.values()) or not all(
            isinstance(p, CategoricalProfile) for p in categorical.values()
        ):
            raise StateError(f"{r.what}: a numeric feature with a categorical profile or the reverse")
        return cls(
            version=r.integer("version"),
            model_id=r.text("model_id"),
            created_at=r.number("created_at"),
            n_events=r.integer("n_events", min_value=0),
            numeric=numeric,  # type: ignore[arg-type]
            categorical=categorical,  # type: ignore[arg-type]
            prediction=None if prediction_state is None else _column_from_state(prediction_state),
            baseline=dict(zip(names, values.tolist(), strict=True)),
            event_rate=r.optional_number("event_rate"),
            baseline_decision=decision,
            longest_gap_seconds=r.number("longest_gap_seconds") if r.has("longest_gap_seconds") else None,
        )


def _binary_baseline(
    score: np.ndarray, predicted_positive: np.ndarray, label: np.ndarray
) -> dict[str, float]:
    """AUC from scores (ties get average ranks), accuracy and F1 from the decisions given
    (:func:`~stream_monitor.core.quality.binary_decisions`, as the live metrics decide)."""
    baseline: dict[str, float] = {}
    truth = label == 1.0
    if truth.size:
        tp = int(np.sum(predicted_positive & truth))
        fp = int(np.sum(predicted_positive & ~truth))
        fn = int(np.sum(~predicted_positive & truth))
        baseline["accuracy"] = float(np.mean(predicted_positive == truth))
        # sklearn's zero_division=0 convention: no positives predicted or present means F1 = 0.
        baseline["f1"] = f1_from_counts(tp, fp, fn, zero_division=0.0)
    scored = ~np.isnan(score)
    auc = binary_auc(score[scored], truth[scored])
    if not math.isnan(auc):
        baseline["auc"] = auc
    return baseline


def _multiclass_baseline(predicted: list[str], label: list[str]) -> dict[str, float]:
    """Accuracy and macro F1 over the classes seen in labels or predictions (sklearn's default set)."""
    if not label:
        return {}
    code = {c: i for i, c in enumerate(sorted(set(predicted) | set(label)))}
    pred = np.array([code[c] for c in predicted], dtype=np.int64)
    truth = np.array([code[c] for c in label], dtype=np.int64)
    # Every class here was predicted or present, so none has an undefined F1.
    f1 = per_class_f1(pred, truth, len(code))
    return {"accuracy": float(np.mean(pred == truth)), "f1": float(np.mean(f1))}


def _regression_baseline(prediction: np.ndarray, label: np.ndarray) -> dict[str, float]:
    error = prediction - label
    error = error[~np.isnan(error)]
    if error.size == 0:
        return {}
    return {"mae": mae(error), "rmse": rmse(error), "mean_error": float(np.mean(error))}


def _longest_gap(ts: np.ndarray) -> float | None:
    known = np.sort(ts[np.isfinite(ts)])
    return float(np.max(np.diff(known))) if known.size >= 2 else None


def _event_rate(ts: np.ndarray) -> float | None:
    known = ts[np.isfinite(ts)]
    if known.size < 2:
        return None
    span = float(known.max() - known.min())
    return ts.size / span if span > 0 else None


def _build(
    schema: ModelSchema,
    numeric: np.ndarray,
    categorical: Sequence[Sequence[str | None]],
    score: np.ndarray,
    pred_label: Sequence[str | None],
    ts: np.ndarray,
    labels: np.ndarray | None,
    *,
    bins: int,
    top_k: int,
    sample_size: int,
    seed: int,
    created_at: float,
) -> ReferenceProfile:
    n_events = ts.size
    if numeric.shape != (len(schema.numeric_names), n_events):
        raise ValueError(
            f"numeric block has shape {numeric.shape}, expected {(len(schema.numeric_names), n_events)}"
        )
    if len(categorical) != len(schema.categorical_names):
        raise ValueError(
            f"{len(categorical)} categorical columns, schema has {len(schema.categorical_names)}"
        )
    if labels is not None and len(labels) != n_events:
        raise ValueError(f"{len(labels)} labels for {n_events} events")
    # A different seed per column keeps each sample independent of the others' sizes.
    numeric_profiles = {
        name: NumericProfile.from_values(numeric[i], bins=bins, sample_size=sample_size, seed=seed + i)
        for i, name in enumerate(schema.numeric_names)
    }
    categorical_profiles = {
        name: CategoricalProfile.from_values(categorical[i], top_k=top_k)
        for i, name in enumerate(schema.categorical_names)
    }

    prediction: NumericProfile | CategoricalProfile | None = None
    baseline: dict[str, float] = {}
    baseline_decision: str | None = None
    if schema.task == "multiclass":
        if any(p is not None for p in pred_label):
            prediction = CategoricalProfile.from_values(pred_label, top_k=top_k)
        if labels is not None:
            pairs = [
                (p, str(t))
                for p, t in zip(pred_label, labels, strict=True)
                if p is not None and t is not None and t == t  # t == t drops float NaN labels
            ]
            baseline = _multiclass_baseline([p for p, _ in pairs], [t for _, t in pairs])
    else:
        if not np.all(np.isnan(score)):
            prediction = NumericProfile.from_values(
                score, bins=bins, sample_size=sample_size, seed=seed + len(schema.numeric_names)
            )
        if labels is not None:
            label_values = np.asarray(labels, dtype=np.float64)
            if schema.task == "regression":
                baseline = _regression_baseline(score, label_values)
            else:
                # The live rule, row by row: the predicted class where the data gives one (the model's
                # own decision), else the score at the threshold; rows with neither are not decided.
                predicted_positive, decided = binary_decisions(
                    score, pred_label, schema.positive_class, schema.decision_threshold
                )
                keep = decided & ~np.isnan(label_values)
                baseline = _binary_baseline(score[keep], predicted_positive[keep], label_values[keep])
                if "accuracy" in baseline:
                    by_class = any(p is not None for p, k in zip(pred_label, keep.tolist(), strict=True) if k)
                    baseline_decision = "predicted_class" if by_class else "score"

    return ReferenceProfile(
        version=1,
        model_id=schema.model_id,
        created_at=created_at,
        n_events=n_events,
        numeric=numeric_profiles,
        categorical=categorical_profiles,
        prediction=prediction,
        baseline=baseline,
        event_rate=_event_rate(ts),
        longest_gap_seconds=_longest_gap(ts),
        baseline_decision=baseline_decision,
    )


def build_reference(
    schema: ModelSchema,
    batch: PredictionBatch,
    labels: np.ndarray | None = None,
    *,
    bins: int = DetectorSettings.bins,
    top_k: int = DetectorSettings.top_k,
    sample_size: int = DetectorSettings.reference_sample,
    seed: int = 0,
    created_at: float = 0.0,
) -> ReferenceProfile:
    """Profile a batch of reference events (usually the training or validation set) of one model.

    ``labels`` (aligned with the batch, NaN/None = unknown) add the baseline performance: float 1.0/0.0
    for binary (1.0 = the schema's positive class), class strings for multiclass, values for
    regression. A binary row is decided as live events are
    (:func:`~stream_monitor.core.quality.binary_decisions`): by its predicted class (``pred_label``)
    when it has one, else by its score at 0.5.

    >>> from types import SimpleNamespace
    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))
    >>> batch = SimpleNamespace(  # the PredictionBatch columns that a profile reads
    ...     model_id="m", ts=np.array([0.0, 1.0, 2.0, 4.0]), numeric=np.array([[1.0, 2.0, 3.0, 4.0]]),
    ...     categorical=[], score=np.array([1.0, 2.0, 3.0, 4.0]), pred_label=[None] * 4)
    >>> ref = build_reference(schema, batch, np.array([1.0, 2.0, 5.0, 4.0]), bins=2)
    >>> ref.numeric["x"].edges.tolist(), ref.baseline, ref.event_rate
    ([2.5], {'mae': 0.5, 'rmse': 1.0, 'mean_error': -0.5}, 1.0)
    """
    if batch.model_id != schema.model_id:
        raise ValueError(f"batch of model {batch.model_id!r} given for schema of {schema.model_id!r}")
    return _build(
        schema,
        np.asarray(batch.numeric, dtype=np.float64).reshape(len(schema.numeric_names), len(batch.ts)),
        batch.categorical,
        np.asarray(batch.score, dtype=np.float64),
        batch.pred_label,
        np.asarray(batch.ts, dtype=np.float64),
        labels,
        bins=bins,
        top_k=top_k,
        sample_size=sample_size,
        seed=seed,
        created_at=created_at,
    )


#: Version of the :meth:`ReferenceWarmup.snapshot` layout.
WARMUP_FORMAT = 1


class ReferenceWarmup:
    """Collects the first ``n_events`` live events of a model, then builds its reference from them.

    For models deployed without a training-data reference. Memory is bounded by ``n_events``: only
    the columns a profile needs are kept, events past ``n_events`` are ignored, and the columns are
    dropped once the profile is built. ``add`` returns the profile exactly once, on the batch that
    completes the warm-up; afterwards it is in :attr:`profile`. ``created_at`` of the profile is the
    latest event time seen (replays give the same profile), or the ``created_at`` setting when the
    events carry no time.

    >>> from types import SimpleNamespace
    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> schema = ModelSchema("m", "binary", (FeatureSpec("x", "numeric"),))
    >>> rng = np.random.default_rng(0)
    >>> def batch(n):
    ...     return SimpleNamespace(model_id="m", ts=np.arange(n, dtype=float), categorical=[],
    ...                            numeric=rng.normal(size=(1, n)), score=rng.uniform(size=n),
    ...                            pred_label=[None] * n)
    >>> warmup = ReferenceWarmup(schema, 150, bins=4)
    >>> warmup.add(batch(100)) is None, warmup.collected, warmup.remaining
    (True, 100, 50)
    >>> ref = warmup.add(batch(100))
    >>> ref.n_events, len(ref.numeric["x"].counts), ref.created_at
    (150, 4, 99.0)
    >>> ReferenceWarmup.restore(warmup.snapshot()).profile == ref
    True
    """

    def __init__(
        self,
        schema: ModelSchema,
        n_events: int,
        *,
        bins: int = DetectorSettings.bins,
        top_k: int = DetectorSettings.top_k,
        sample_size: int = DetectorSettings.reference_sample,
        seed: int = 0,
        created_at: float = 0.0,
    ) -> None:
        if n_events < 1:
            raise ValueError(f"n_events must be >= 1, got {n_events}")
        self.schema = schema
        self.n_events = n_events
        self.bins = bins
        self.top_k = top_k
        self.sample_size = sample_size
        self.seed = seed
        self.created_at = created_at
        self.profile: ReferenceProfile | None = None
        self._numeric: list[np.ndarray] = []
        self._categorical: list[list[str | None]] = [[] for _ in schema.categorical_names]
        self._score: list[np.ndarray] = []
        self._pred_label: list[str | None] = []
        self._ts: list[np.ndarray] = []
        self._collected = 0

    @property
    def collected(self) -> int:
        """Events collected so far (``n_events`` once the profile is built)."""
        return self.n_events if self.profile is not None else self._collected

    @property
    def remaining(self) -> int:
        """Events still needed before the profile is built (0 once it is)."""
        return self.n_events - self.collected

    def add(self, batch: PredictionBatch) -> ReferenceProfile | None:
        """Take events from ``batch`` until ``n_events``; return the profile when this batch completes it."""
        if self.profile is not None:
            return None
        if batch.model_id != self.schema.model_id:
            raise ValueError(
                f"batch of model {batch.model_id!r} given to warm-up of {self.schema.model_id!r}"
            )
        take = min(len(batch.ts), self.n_events - self._collected)
        if take <= 0:
            return None
        numeric = np.asarray(batch.numeric, dtype=np.float64).reshape(len(self.schema.numeric_names), -1)
        self._numeric.append(numeric[:, :take].copy())
        for column, values in zip(self._categorical, batch.categorical, strict=True):
            column.extend(values[:take])
        self._score.append(np.asarray(batch.score[:take], dtype=np.float64))
        self._pred_label.extend(batch.pred_label[:take])
        self._ts.append(np.asarray(batch.ts[:take], dtype=np.float64))
        self._collected += take
        if self._collected < self.n_events:
            return None
        return self._finish()

    def _columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_numeric = len(self.schema.numeric_names)
        numeric = np.concatenate(self._numeric, axis=1) if self._numeric else np.empty((n_numeric, 0))
        score = np.concatenate(self._score) if self._score else np.empty(0)
        ts = np.concatenate(self._ts) if self._ts else np.empty(0)
        return numeric, score, ts

    def _finish(self) -> ReferenceProfile:
        numeric, score, ts = self._columns()
        known_ts = ts[np.isfinite(ts)]
        self.profile = _build(
            self.schema,
            numeric,
            self._categorical,
            score,
            self._pred_label,
            ts,
            None,
            bins=self.bins,
            top_k=self.top_k,
            sample_size=self.sample_size,
            seed=self.seed,
            created_at=float(known_ts.max()) if known_ts.size else self.created_at,
        )
        self._numeric, self._score, self._ts, self._pred_label = [], [], [], []
        self._categorical = [[] for _ in self.schema.categorical_names]
        return self.profile

    def to_state(self) -> dict[str, Any]:
        """Settings, the schema, the collected columns (or the finished profile) as a container of
        :mod:`stream_monitor.core.state_format`; numeric columns as arrays (NaN = missing, exactly)."""
        numeric, score, ts = self._columns()
        return state_format.tagged(
            "reference_warmup",
            STATE_FORMAT,
            model_id=self.schema.model_id,
            # The schema travels with the state so restore(data) needs nothing else.
            schema=_schema_to_dict(self.schema),
            settings={
                "n_events": self.n_events,
                "bins": self.bins,
                "top_k": self.top_k,
                "sample_size": self.sample_size,
                "seed": self.seed,
                "created_at": self.created_at,
            },
            categorical=self._categorical,
            pred_label=self._pred_label,
            numeric=numeric,
            score=score,
            ts=ts,
            profile=None if self.profile is None else self.profile.to_state(),
        )

    @classmethod
    @state_format.restoring
    def from_state(
        cls, state: StateReader | dict[str, Any], schema: ModelSchema | None = None, what: str = "warm-up"
    ) -> Self:
        """Inverse of :meth:`to_state` (see :meth:`restore`)."""
        r = state if isinstance(state, StateReader) else StateReader(state, what)
        r.expect("reference_warmup", STATE_FORMAT)
        model_id = r.text("model_id")
        if schema is None:
            schema = _schema_from_dict(dict(r.child("schema").parts))
        elif model_id != schema.model_id:
            raise StateError(f"{r.what}: warm-up state of {model_id!r}, schema is {schema.model_id!r}")
        settings = dict(r.child("settings").parts)
        if set(settings) != {"n_events", "bins", "top_k", "sample_size", "seed", "created_at"} or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in settings.values()
        ):
            raise StateError(f"{r.what}: settings {sorted(settings)} do not fit")
        try:
            warmup = cls(schema, **settings)
        except (TypeError, ValueError) as exc:
            raise StateError(f"{r.what}: {exc}") from exc
        ts = r.array("ts", np.float64, ndim=1)
        numeric = r.array("numeric", np.float64, shape=(len(schema.numeric_names), ts.size))
        score = r.array("score", np.float64, shape=ts.shape)
        pred_label = r.strings("pred_label", optional=True)
        categorical = r.json_list("categorical", list)
        if len(pred_label) != ts.size or len(categorical) != len(schema.categorical_names):
            raise StateError(f"{r.what}: columns of different lengths or not the schema's")
        for column in categorical:
            if len(column) != ts.size or not all(v is None or isinstance(v, str) for v in column):
                raise StateError(f"{r.what}: categorical columns do not match the schema")
        if ts.size > warmup.n_events:
            raise StateError(f"{r.what}: {ts.size} events collected for a warm-up of {warmup.n_events}")
        profile = r.optional_child("profile")
        if profile is not None:
            warmup.profile = ReferenceProfile.from_state(profile)
        if ts.size:
            warmup._numeric, warmup._score, warmup._ts = [numeric], [score], [ts]
        warmup._categorical, warmup._pred_label = categorical, pred_label
        warmup._collected = int(ts.size)
        return warmup

    def snapshot(self) -> bytes:
        """The state as bytes (:meth:`to_state` in the one state format)."""
        return state_format.encode(self.to_state())

    @classmethod
    def restore(cls, data: bytes, schema: ModelSchema | None = None) -> Self:
        """Rebuild a warm-up from :meth:`snapshot` bytes; raises :class:`StateError` on bad input.

        The schema is read from the snapshot; when ``schema`` is given (the configured one), the
        snapshot must have been taken for the same model id.
        """
        return cls.from_state(state_format.decode(data), schema)


def _schema_to_dict(schema: ModelSchema) -> dict[str, Any]:
    data = {
        "model_id": schema.model_id,
        "task": schema.task,
        "features": [[f.name, f.kind, f.key, f.importance] for f in schema.features],
        "positive_class": schema.positive_class,
        "segment_keys": list(schema.segment_keys),
        "max_segments": schema.max_segments,
    }
    if schema.classes:  # only when configured: snapshots of models without stay byte for byte as before
        data["classes"] = list(schema.classes)
    if schema.decision_threshold != ModelSchema.decision_threshold:  # likewise
        data["decision_threshold"] = schema.decision_threshold
    return data


def _schema_from_dict(data: Any) -> ModelSchema:
    try:
        return ModelSchema(
            model_id=str(data["model_id"]),
            task=data["task"],
            features=tuple(
                FeatureSpec(str(name), kind, bool(key), float(importance))
                for name, kind, key, importance in data["features"]
            ),
            positive_class=str(data["positive_class"]),
            segment_keys=tuple(str(k) for k in data["segment_keys"]),
            max_segments=int(data["max_segments"]),
            classes=tuple(str(c) for c in data.get("classes", ())),
            decision_threshold=float(data.get("decision_threshold", ModelSchema.decision_threshold)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"bad warm-up snapshot: schema {exc!r}") from exc
