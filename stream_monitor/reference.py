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

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import orjson

from stream_monitor.errors import StateError

#: Version of the JSON layout written by :meth:`ReferenceProfile.to_json`; bump on incompatible change.
PROFILE_FORMAT = 1

#: Name of the implicit last bucket of a categorical profile: every value outside the top-K.
OTHER = "__other__"


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
        cls, values: np.ndarray, *, bins: int = 10, sample_size: int = 5000, seed: int = 0
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
    def from_values(cls, values: Sequence[str | None], *, top_k: int = 20) -> CategoricalProfile:
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


@dataclass(eq=False)
class ReferenceProfile:
    """Everything the detectors compare a live window with, for one model.

    ``version`` numbers successive references of the same model (a rebuilt reference gets a higher
    one); the serialization layout is versioned separately by :data:`PROFILE_FORMAT`.
    ``prediction`` is a :class:`NumericProfile` of the score (binary, regression) or a
    :class:`CategoricalProfile` of predicted classes (multiclass), None when the reference had no
    predictions. ``baseline`` holds the reference performance when labels were given: ``auc``,
    ``accuracy``, ``f1`` (binary); ``accuracy``, ``f1`` (macro, multiclass); ``mae``, ``rmse``,
    ``mean_error`` (regression). ``event_rate`` is events per second of event time, None when the
    reference has no time span.

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
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the ``format`` field.

        >>> ReferenceProfile(1, "m").to_dict()["format"]
        1
        """
        return {
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

    def to_json(self) -> bytes:
        """Serialize to UTF-8 JSON bytes (orjson); :meth:`from_json` restores it exactly.

        >>> ReferenceProfile(1, "m").to_json()[:11]
        b'{"format":1'
        """
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """Inverse of :meth:`to_dict`; raises :class:`StateError` on a malformed or newer-format dict.

        >>> ReferenceProfile.from_dict(ReferenceProfile(3, "m").to_dict()).version
        3
        """
        if not isinstance(data, dict):
            raise StateError("bad profile: not a JSON object")
        if data.get("format") != PROFILE_FORMAT:
            raise StateError(f"bad profile: format {data.get('format')!r}, expected {PROFILE_FORMAT}")
        try:
            numeric = {str(k): NumericProfile.from_dict(v) for k, v in data["numeric"].items()}
            categorical = {str(k): CategoricalProfile.from_dict(v) for k, v in data["categorical"].items()}
            prediction = None if data["prediction"] is None else _column_from_dict(data["prediction"])
            baseline = {str(k): float(v) for k, v in data["baseline"].items()}
            event_rate = data["event_rate"]
            model_id = data["model_id"]
            if not isinstance(model_id, str):
                raise TypeError("model_id must be a string")
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
