"""Mergeable window summaries: live data counted on the reference's own bins.

A :class:`WindowSketch` summarises the prediction events of one model in one (sub-)window: numeric
histograms on the reference bin edges, missing and out-of-reference-range counts, moments, a bounded
uniform sample per numeric feature (for KS), categorical counts on the reference categories, the
prediction distribution and segment counts. Two sketches of disjoint event sets merge into the sketch
of their union, so sliding windows are merges of sub-window sketches.

Sampling is bottom-k by a hash of the event id: every event gets a 64-bit priority from a seeded hash
of its ``event_id``, and each numeric feature keeps the (at most) ``sample_size`` present values with
the smallest priorities, ties broken by value. The kept set depends only on the multiset of events, not
on their order, batching or merge tree, so a merged sample is exactly the sample of the union and a
replay after a restart draws the same sample. A seeded generator would not give this: two sub-windows
updated separately would draw correlated priorities, and the result would depend on batch boundaries.
One priority per event (shared by all features) makes the per-feature samples a joint sample of events.

Pure: no files, no clock.

>>> from types import SimpleNamespace
>>> from stream_monitor.core.reference import NumericProfile, ReferenceProfile
>>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
>>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))
>>> reference = ReferenceProfile(1, "m", numeric={"x": NumericProfile.from_values(np.arange(8.0), bins=2)})
>>> batch = SimpleNamespace(  # the PredictionBatch columns a sketch reads
...     event_id=["a", "b", "c"], ts=np.array([5.0, 6.0, 7.0]), numeric=np.array([[1.0, 9.0, np.nan]]),
...     categorical=[], score=np.array([0.5, 0.5, 0.5]), pred_label=[None] * 3, segments={})
>>> sketch = WindowSketch(schema, reference)
>>> sketch.update(batch)
>>> sketch.numeric_counts.tolist(), sketch.numeric_missing.tolist(), sketch.numeric_above.tolist()
([[1, 1]], [1], [1])
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from stream_monitor.core import state_format
from stream_monitor.core.reference import OTHER, CategoricalProfile, NumericProfile, ReferenceProfile
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import DetectorSettings
from stream_monitor.core.state_format import StateReader
from stream_monitor.errors import StateError

if TYPE_CHECKING:
    from stream_monitor.core.events import PredictionBatch

#: Version of the layout written by :meth:`WindowSketch.to_state`; bump on incompatible change.
SKETCH_FORMAT = 2  # 1 was JSON
_KIND = "window_sketch"

#: At most this many unseen category names are tracked per feature; the rest are only counted.
NEW_CATEGORY_CAP = 50

#: Segment value recorded when an event has no value for a segment key.
MISSING_SEGMENT = "__missing__"

_UINT64_MAX = np.iinfo(np.uint64).max
# Above this many inner edges per feature, bins are found by searchsorted instead of comparisons
# (and the uint8 bin counter of the comparison path would overflow above 255).
_MAX_EDGES_BY_COMPARISON = 32
_EMPTY_PRIORITY = np.empty(0, dtype=np.uint64)
_EMPTY_VALUES = np.empty(0, dtype=np.float64)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on a uint64 array: a bijection that spreads every input bit."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def event_priorities(event_ids: Sequence[str], seed: int = 0) -> np.ndarray:
    """Seeded 64-bit hash of each event id: the bottom-k sampling priority of the event.

    The ids are hashed together as one UCS-4 array (a random-weight polynomial over the code points,
    then splitmix64), so there is no per-event Python call. The same id always gets the same priority
    for the same seed, in any process.

    >>> p = event_priorities(["a", "b", "a"], seed=0)
    >>> p.dtype.name, bool(p[0] == p[2]), bool(p[0] == p[1])
    ('uint64', True, False)
    """
    if len(event_ids) == 0:
        return _EMPTY_PRIORITY.copy()
    chars = np.asarray(event_ids, dtype=np.str_)
    width = max(chars.dtype.itemsize // 4, 1)
    codes = chars.view(np.uint32).reshape(len(event_ids), width).astype(np.uint64)
    seed_key = np.uint64(seed % (1 << 64))
    # Odd weights per position, derived from the seed; trailing zero padding adds nothing, so the hash of
    # an id does not depend on the longest id in its batch.
    seed_mix = _splitmix64(np.array([seed_key]))
    weights = _splitmix64(np.arange(width, dtype=np.uint64) ^ seed_mix) | np.uint64(1)
    return _splitmix64(codes @ weights)


def _bottom_k(
    priority_parts: Sequence[np.ndarray], value_parts: Sequence[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest (priority, value) pairs of the concatenated parts, in that order.

    Values may also be rows (shape ``(features, events)``) of features whose samples hold the same
    events, so share the priorities: each row keeps its values at the kept priorities (ties between
    equal priorities broken by each row's own values), as if each row were sampled alone.
    """
    priority = np.concatenate(priority_parts) if len(priority_parts) > 1 else priority_parts[0]
    values = np.concatenate(value_parts, axis=-1) if len(value_parts) > 1 else value_parts[0]
    if priority.size > k:
        if k == 0:
            return _EMPTY_PRIORITY.copy(), values[..., :0].copy()
        # Partition first so the sort touches about k elements; `<=` keeps every tie at the k-th
        # priority so that the value tie-break below decides, not the partition's arbitrary order.
        kth = np.partition(priority, k - 1)[k - 1]
        keep = priority <= kth
        priority, values = priority[keep], values[..., keep]
    # The kept sample is one sorted run plus a few candidates: a stable (tim)sort is near-linear on
    # that, far cheaper than lexsort. Equal priorities (a repeated event id) need the value tie-break.
    order = np.argsort(priority, kind="stable")
    sorted_priority = priority[order]
    if np.any(sorted_priority[1:] == sorted_priority[:-1]):
        if values.ndim == 1:
            order = np.lexsort((values, priority))
            return priority[order][:k], values[order[:k]]
        rows = [row[np.lexsort((row, priority))[:k]] for row in values]
        return sorted_priority[:k], np.stack(rows) if rows else values[:, :0]
    return sorted_priority[:k], values[..., order[:k]]


def _shared_samples(priorities: Sequence[Sequence[np.ndarray]], features: Sequence[int]) -> list[list[int]]:
    """``features`` grouped by the priority arrays of their samples (one array per sketch): features
    whose samples are the same array objects in every sketch hold the same events."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for f in features:
        groups.setdefault(tuple(id(p[f]) for p in priorities), []).append(f)
    return list(groups.values())


def _cap_counts(counts: dict[str, int], cap: int) -> tuple[dict[str, int], int]:
    """Keep the ``cap`` largest counts (ties by name); return them and the sum of the rest."""
    if len(counts) <= cap:
        return counts, 0
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return dict(ranked[:cap]), sum(count for _, count in ranked[cap:])


def _add_counts(into: dict[str, int], other: Mapping[str, int]) -> None:
    for name, count in other.items():
        into[name] = into.get(name, 0) + count


def _cap_segments(counts: dict[str, int], cap: int) -> dict[str, int]:
    """Segment values beyond the ``cap`` largest are folded into ``__other__``."""
    other = counts.pop(OTHER, 0)
    kept, dropped = _cap_counts(counts, cap)
    if other + dropped:
        kept[OTHER] = other + dropped
    return kept


class WindowSketch:
    """Mergeable summary of one model's prediction events in one window, against its reference.

    Settings (``schema``, ``reference``, ``sample_size``, ``seed``) are public; the count fields below
    are read by detectors and must not be modified:

    - ``numeric_counts`` (n_numeric, bins): histogram on the reference's edges; ``bins`` is the largest
      bin count among the numeric features, features with fewer reference bins have trailing zeros
      (:meth:`feature_counts` gives the row cut to the reference's length);
    - ``numeric_missing``, ``numeric_below``, ``numeric_above`` (values outside the reference
      ``[min, max]``), ``numeric_sum``, ``numeric_sumsq``, ``numeric_n`` (present values), each (n_numeric,);
    - ``numeric_sample``: per feature, a uniform sample of at most ``sample_size`` present values;
    - ``categorical_counts``: per feature, counts over the reference categories then ``__other__``;
      ``categorical_missing``; ``new_categories``: per feature, values outside the reference categories
      by name (the ``NEW_CATEGORY_CAP`` most frequent) and ``new_category_overflow``, the count of the rest;
    - ``score_counts``: the score histogram on the reference prediction edges (binary, regression) or
      the predicted-class counts over the reference classes then ``__other__`` (multiclass), empty when
      the reference has no prediction profile; ``score_missing``; ``score_sum``, ``score_n`` and
      ``score_sample`` over present scores;
    - ``segment_counts``: per segment key, counts by value, at most ``schema.max_segments`` values, the
      rest under ``__other__``; a missing value counts as ``__missing__``;
    - ``n_events``, ``ts_min``, ``ts_max`` (``inf``/``-inf`` while empty).

    Counts are exact and merge associatively and commutatively; samples are exactly mergeable (see the
    module docstring). Float sums merge up to rounding. Above their caps, ``new_categories`` and
    ``segment_counts`` keep the largest counts seen, so their per-name counts are then lower bounds
    that may depend on merge order; their totals stay exact.

    >>> from stream_monitor.core.reference import CategoricalProfile, ReferenceProfile
    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> from types import SimpleNamespace
    >>> schema = ModelSchema("m", "binary", (FeatureSpec("c", "categorical"),))
    >>> profile = CategoricalProfile(["a"], np.array([3, 1]), 0.0)
    >>> reference = ReferenceProfile(1, "m", categorical={"c": profile})
    >>> def batch(ids, values):
    ...     n = len(ids)
    ...     return SimpleNamespace(event_id=ids, ts=np.arange(float(n)), numeric=np.empty((0, n)),
    ...         categorical=[values], score=np.full(n, np.nan), pred_label=[None] * n, segments={})
    >>> left, right = WindowSketch(schema, reference, seed=7), WindowSketch(schema, reference, seed=7)
    >>> left.update(batch(["1", "2"], ["a", "z"]))
    >>> right.update(batch(["3", "4"], [None, "z"]))
    >>> both = left.merge(right)
    >>> both.n_events, both.categorical_counts[0].tolist(), both.categorical_missing.tolist()
    (4, [1, 2], [1])
    >>> both.new_categories
    [{'z': 2}]
    """

    def __init__(
        self,
        schema: ModelSchema,
        reference: ReferenceProfile,
        sample_size: int = DetectorSettings.window_sample,
        seed: int = 0,
    ) -> None:
        if sample_size < 0:
            raise ValueError(f"sample_size must be >= 0, got {sample_size}")
        self.schema = schema
        self.reference = reference
        self.sample_size = sample_size
        self.seed = seed

        numeric_names = schema.numeric_names
        empty = NumericProfile(
            np.empty(0), np.zeros(1, dtype=np.int64), math.nan, math.nan, math.nan, math.nan, 0.0, np.empty(0)
        )
        profiles = [reference.numeric.get(name, empty) for name in numeric_names]
        self._edges = [np.asarray(p.edges, dtype=np.float64) for p in profiles]
        self._feature_bins = np.array([e.size + 1 for e in self._edges], dtype=np.int64)
        self._bins = int(self._feature_bins.max()) if numeric_names else 1
        self._padded_edges = np.full((len(numeric_names), self._bins - 1), np.inf)
        for f, edges in enumerate(self._edges):
            self._padded_edges[f, : edges.size] = edges
        # NaN bounds (a feature without reference values) make both range checks false, as they should.
        self._ref_min = np.array([p.min for p in profiles], dtype=np.float64)[:, None]
        self._ref_max = np.array([p.max for p in profiles], dtype=np.float64)[:, None]
        self._categories: list[dict[str, int]] = []
        for name in schema.categorical_names:
            profile = reference.categorical.get(name)
            names = profile.categories if profile is not None else []
            self._categories.append({category: i for i, category in enumerate(names)})
        prediction = reference.prediction
        self._score_edges = prediction.edges if isinstance(prediction, NumericProfile) else None
        self._classes: dict[str, int] | None = None
        if isinstance(prediction, CategoricalProfile):
            self._classes = {name: i for i, name in enumerate(prediction.categories)}

        n_numeric = len(numeric_names)
        n_categorical = len(schema.categorical_names)
        self.n_events = 0
        self.ts_min = math.inf
        self.ts_max = -math.inf
        self.numeric_counts = np.zeros((n_numeric, self._bins), dtype=np.int64)
        self.numeric_missing = np.zeros(n_numeric, dtype=np.int64)
        self.numeric_below = np.zeros(n_numeric, dtype=np.int64)
        self.numeric_above = np.zeros(n_numeric, dtype=np.int64)
        self.numeric_n = np.zeros(n_numeric, dtype=np.int64)
        self.numeric_sum = np.zeros(n_numeric, dtype=np.float64)
        self.numeric_sumsq = np.zeros(n_numeric, dtype=np.float64)
        self._numeric_priority = [_EMPTY_PRIORITY] * n_numeric
        self._numeric_values = [_EMPTY_VALUES] * n_numeric
        self.categorical_counts = [np.zeros(len(c) + 1, dtype=np.int64) for c in self._categories]
        self.categorical_missing = np.zeros(n_categorical, dtype=np.int64)
        self.new_categories: list[dict[str, int]] = [{} for _ in range(n_categorical)]
        self.new_category_overflow = np.zeros(n_categorical, dtype=np.int64)
        if self._score_edges is not None:
            n_score_buckets = self._score_edges.size + 1
        elif self._classes is not None:
            n_score_buckets = len(self._classes) + 1
        else:
            n_score_buckets = 0
        self.score_counts = np.zeros(n_score_buckets, dtype=np.int64)
        self.score_missing = 0
        self.score_n = 0
        self.score_sum = 0.0
        self._score_priority = _EMPTY_PRIORITY
        self._score_values = _EMPTY_VALUES
        self.segment_counts: dict[str, dict[str, int]] = {key: {} for key in schema.segment_keys}

    @property
    def numeric_sample(self) -> list[np.ndarray]:
        """Per numeric feature, the sampled values (in priority order, not sorted by value)."""
        return list(self._numeric_values)

    @property
    def score_sample(self) -> np.ndarray:
        """The sampled present scores (in priority order, not sorted by value)."""
        return self._score_values

    def feature_counts(self, i: int) -> np.ndarray:
        """Histogram row of numeric feature ``i`` with exactly as many bins as its reference profile.

        >>> from stream_monitor.core.reference import ReferenceProfile
        >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
        >>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))
        >>> WindowSketch(schema, ReferenceProfile(1, "m")).feature_counts(0).tolist()
        [0]
        """
        return self.numeric_counts[i, : self._feature_bins[i]]

    def update(self, batch: PredictionBatch) -> None:
        """Add a batch of this model's events: one vectorised pass per column kind.

        >>> from types import SimpleNamespace
        >>> from stream_monitor.core.reference import NumericProfile, ReferenceProfile
        >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
        >>> schema = ModelSchema("m", "binary", (), segment_keys=("country",))
        >>> score_profile = NumericProfile.from_values(np.arange(4.0), bins=2)
        >>> reference = ReferenceProfile(1, "m", prediction=score_profile)
        >>> sketch = WindowSketch(schema, reference, sample_size=2)
        >>> sketch.update(SimpleNamespace(event_id=["a", "b", "c"], ts=np.array([3.0, 1.0, 2.0]),
        ...     numeric=np.empty((0, 3)), categorical=[], score=np.array([0.0, 3.0, np.nan]),
        ...     pred_label=[None] * 3, segments={"country": ["fr", "fr", None]}))
        >>> sketch.score_counts.tolist(), sketch.score_missing, len(sketch.score_sample), sketch.ts_min
        ([1, 1], 1, 2, 1.0)
        >>> sketch.segment_counts
        {'country': {'fr': 2, '__missing__': 1}}
        """
        n = len(batch.ts)
        if n == 0:
            return
        ts = np.asarray(batch.ts, dtype=np.float64)
        self.n_events += n
        self.ts_min = min(self.ts_min, float(np.min(ts)))
        self.ts_max = max(self.ts_max, float(np.max(ts)))
        # Counts-only sketches (time buckets, segments: sample_size 0) keep no sample: hashing their
        # event ids was a third of their update.
        priority = event_priorities(batch.event_id, self.seed) if self.sample_size else _EMPTY_PRIORITY
        self._update_numeric(np.asarray(batch.numeric, dtype=np.float64), priority)
        for i, values in enumerate(batch.categorical):
            self._update_categorical(i, values)
        self._update_score(np.asarray(batch.score, dtype=np.float64), batch.pred_label, priority)
        for key in self.schema.segment_keys:
            segment_values = batch.segments.get(key)
            if segment_values is None:
                continue
            counts = self.segment_counts[key]
            for value, count in Counter(segment_values).items():
                name = MISSING_SEGMENT if value is None else value
                counts[name] = counts.get(name, 0) + count
            self.segment_counts[key] = _cap_segments(counts, self.schema.max_segments)

    def _update_numeric(self, values: np.ndarray, priority: np.ndarray) -> None:
        n_features, n = values.shape
        if n_features == 0:
            return
        missing = np.isnan(values)
        bin_index = self._bin_index(values)
        # One bincount over all features: feature f's bins live at [f * bins, (f + 1) * bins), and
        # missing values go to one extra slot past the end that is dropped.
        bin_index += (np.arange(n_features, dtype=np.int64) * self._bins)[:, None]
        bin_index[missing] = n_features * self._bins
        flat = np.bincount(bin_index.ravel(), minlength=n_features * self._bins + 1)
        self.numeric_counts += flat[:-1].reshape(n_features, self._bins)
        n_missing = np.count_nonzero(missing, axis=1)
        self.numeric_missing += n_missing
        self.numeric_n += n - n_missing
        self.numeric_below += np.count_nonzero(values < self._ref_min, axis=1)
        self.numeric_above += np.count_nonzero(values > self._ref_max, axis=1)
        present_values = np.where(missing, 0.0, values)
        self.numeric_sum += present_values.sum(axis=1)
        self.numeric_sumsq += np.einsum("ij,ij->i", present_values, present_values)

        k = self.sample_size
        if k == 0:
            return
        # Once a sample is full only priorities up to its largest can enter; this filter skips most of
        # the batch in a window that has run for a while.
        threshold = np.array(
            [p[-1] if p.size >= k and k > 0 else _UINT64_MAX for p in self._numeric_priority], dtype=np.uint64
        )
        candidates = ~missing & (priority[None, :] <= threshold[:, None])
        # Features without a missing value in the batch whose samples hold the same events (one shared
        # priority array: the usual case) get the same candidates: their samples are updated together
        # as rows, one sort for all instead of one per feature (most of a small batch's update).
        complete = ~missing.any(axis=1)
        groups = _shared_samples([self._numeric_priority], np.flatnonzero(complete).tolist())
        groups += [[f] for f in np.flatnonzero(~complete).tolist()]
        for group in groups:
            f = group[0]
            chosen = np.flatnonzero(candidates[f])
            if chosen.size == 0:
                continue
            kept = [
                np.stack([self._numeric_values[g] for g in group]),
                values[np.ix_(np.asarray(group), chosen)],
            ]
            shared, rows = _bottom_k([self._numeric_priority[f], priority[chosen]], kept, k)
            for g, row in zip(group, rows, strict=True):
                self._numeric_priority[g], self._numeric_values[g] = shared, row

    def _bin_index(self, values: np.ndarray) -> np.ndarray:
        """``searchsorted(edges, x, side="right")`` for every feature row at once."""
        n_edges = self._bins - 1
        if n_edges > _MAX_EDGES_BY_COMPARISON:
            bin_index = np.empty(values.shape, dtype=np.int64)
            for f, edges in enumerate(self._edges):
                bin_index[f] = np.searchsorted(edges, values[f], side="right")
            return bin_index
        # With few edges, counting the edges at or below each value (one comparison pass per edge over
        # the whole feature-major block) is ~9x faster than searchsorted on unsorted keys, whose binary
        # search mispredicts every branch. Padding edges are +inf, so they never count.
        small = np.zeros(values.shape, dtype=np.uint8)
        for j in range(n_edges):
            small += values >= self._padded_edges[:, j : j + 1]
        return small.astype(np.int64)

    def _update_categorical(self, i: int, values: Sequence[str | None]) -> None:
        positions = self._categories[i]
        counts = self.categorical_counts[i]
        other = len(positions)
        new = self.new_categories[i]
        # Counter runs in C; the Python loop below is over distinct values, not events.
        for value, count in Counter(values).items():
            if value is None:
                self.categorical_missing[i] += count
                continue
            position = positions.get(value)
            if position is not None:
                counts[position] += count
            else:
                counts[other] += count
                new[value] = new.get(value, 0) + count
        self.new_categories[i], dropped = _cap_counts(new, NEW_CATEGORY_CAP)
        self.new_category_overflow[i] += dropped

    def _update_score(
        self, score: np.ndarray, pred_label: Sequence[str | None], priority: np.ndarray
    ) -> None:
        present = ~np.isnan(score)
        present_scores = score[present]
        if self._classes is not None:
            other = len(self._classes)
            for label, count in Counter(pred_label).items():
                if label is None:
                    self.score_missing += count
                else:
                    self.score_counts[self._classes.get(label, other)] += count
        else:
            self.score_missing += int(score.size - present_scores.size)
            if self._score_edges is not None:
                self.score_counts += np.bincount(
                    np.searchsorted(self._score_edges, present_scores, side="right"),
                    minlength=self.score_counts.size,
                )
        self.score_n += int(present_scores.size)
        self.score_sum += float(present_scores.sum())
        if present_scores.size and self.sample_size:
            self._score_priority, self._score_values = _bottom_k(
                [self._score_priority, priority[present]],
                [self._score_values, present_scores],
                self.sample_size,
            )

    def merge(self, other: WindowSketch) -> WindowSketch:
        """A new sketch of both windows' events; neither input changes.

        >>> from stream_monitor.core.reference import ReferenceProfile
        >>> from stream_monitor.core.schema import ModelSchema
        >>> schema = ModelSchema("m", "regression", ())
        >>> reference = ReferenceProfile(1, "m")
        >>> a, b = WindowSketch(schema, reference), WindowSketch(schema, reference)
        >>> a.n_events, a.ts_min = 2, 5.0
        >>> b.n_events, b.ts_min = 3, 4.0
        >>> merged = a.merge(b)
        >>> merged.n_events, merged.ts_min, a.n_events
        (5, 4.0, 2)
        """
        return merge_sketches([self, other])

    def to_state(self) -> dict[str, Any]:
        """The sketch as a container of :mod:`stream_monitor.core.state_format` (counts as arrays).

        The per-feature samples and categorical counts are concatenated, with their sizes.

        >>> from stream_monitor.core.reference import ReferenceProfile
        >>> from stream_monitor.core.schema import ModelSchema
        >>> WindowSketch(ModelSchema("m", "regression", ()), ReferenceProfile(1, "m")).to_state()["kind"]
        'window_sketch'
        """

        def concat(parts: Sequence[np.ndarray], dtype: Any) -> np.ndarray:
            return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype=dtype)

        return state_format.tagged(
            _KIND,
            SKETCH_FORMAT,
            model_id=self.schema.model_id,
            reference_version=self.reference.version,
            sample_size=self.sample_size,
            seed=self.seed,
            n_events=self.n_events,
            score_missing=self.score_missing,
            score_n=self.score_n,
            new_categories=self.new_categories,
            segment_counts=[[key, counts] for key, counts in self.segment_counts.items()],
            # ts_min/ts_max are infinite while the sketch is empty: an array keeps them exactly.
            floats=np.array([self.ts_min, self.ts_max, self.score_sum], dtype=np.float64),
            numeric_counts=self.numeric_counts,
            numeric_missing=self.numeric_missing,
            numeric_below=self.numeric_below,
            numeric_above=self.numeric_above,
            numeric_n=self.numeric_n,
            numeric_sum=self.numeric_sum,
            numeric_sumsq=self.numeric_sumsq,
            numeric_sample_sizes=np.array([p.size for p in self._numeric_priority], dtype=np.int64),
            numeric_sample_priority=concat(self._numeric_priority, np.uint64),
            numeric_sample_values=concat(self._numeric_values, np.float64),
            categorical_counts=concat(self.categorical_counts, np.int64),
            categorical_missing=self.categorical_missing,
            new_category_overflow=self.new_category_overflow,
            score_counts=self.score_counts,
            score_sample_priority=self._score_priority,
            score_sample_values=self._score_values,
        )

    @classmethod
    @state_format.restoring
    def from_state(
        cls,
        state: StateReader | dict[str, Any],
        schema: ModelSchema,
        reference: ReferenceProfile,
        what: str = "sketch",
    ) -> Self:
        """Inverse of :meth:`to_state` for the same schema and reference; :class:`StateError` otherwise.

        >>> from stream_monitor.core.reference import ReferenceProfile
        >>> from stream_monitor.core.schema import ModelSchema
        >>> schema, reference = ModelSchema("m", "regression", ()), ReferenceProfile(1, "m")
        >>> state = WindowSketch(schema, reference).to_state()
        >>> WindowSketch.from_state(state, schema, ReferenceProfile(2, "m"))
        Traceback (most recent call last):
        ...
        stream_monitor.errors.StateError: sketch: model 'm' reference version 1 restored with 'm' version 2
        """
        r = state if isinstance(state, StateReader) else StateReader(state, what)
        r.expect(_KIND, SKETCH_FORMAT)
        model_id, version = r.text("model_id"), r.integer("reference_version")
        if model_id != schema.model_id or version != reference.version:
            raise StateError(
                f"{r.what}: model {model_id!r} reference version {version} "
                f"restored with {schema.model_id!r} version {reference.version}"
            )
        try:
            sketch = cls(schema, reference, sample_size=r.integer("sample_size"), seed=r.integer("seed"))
        except ValueError as exc:
            raise StateError(f"{r.what}: {exc}") from exc
        sketch._load(r)
        return sketch

    def _load(self, r: StateReader) -> None:
        def ints(name: str, like: np.ndarray) -> np.ndarray:
            return r.array(name, np.int64, shape=like.shape)

        def floats(name: str, like: np.ndarray) -> np.ndarray:
            return r.array(name, np.float64, shape=like.shape)

        def split(array: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
            return np.split(array, np.cumsum(sizes)[:-1].tolist()) if len(sizes) else []

        self.n_events = r.integer("n_events", min_value=0)
        self.score_missing = r.integer("score_missing", min_value=0)
        self.score_n = r.integer("score_n", min_value=0)
        self.ts_min, self.ts_max, self.score_sum = r.array("floats", np.float64, shape=(3,)).tolist()
        self.numeric_counts = ints("numeric_counts", self.numeric_counts)
        self.numeric_missing = ints("numeric_missing", self.numeric_missing)
        self.numeric_below = ints("numeric_below", self.numeric_below)
        self.numeric_above = ints("numeric_above", self.numeric_above)
        self.numeric_n = ints("numeric_n", self.numeric_n)
        self.numeric_sum = floats("numeric_sum", self.numeric_sum)
        self.numeric_sumsq = floats("numeric_sumsq", self.numeric_sumsq)
        sizes = r.array("numeric_sample_sizes", np.int64, shape=(len(self._numeric_priority),))
        if sizes.size and (sizes.min() < 0 or sizes.max() > self.sample_size):
            raise StateError(f"{r.what}: sample sizes {sizes.tolist()} above sample_size {self.sample_size}")
        total = int(sizes.sum())
        priorities = split(r.array("numeric_sample_priority", np.uint64, shape=(total,)), sizes.tolist())
        self._numeric_priority = priorities
        values = r.array("numeric_sample_values", np.float64, shape=(total,))
        self._numeric_values = split(values, sizes.tolist())
        widths = [c.size for c in self.categorical_counts]
        counts = r.array("categorical_counts", np.int64, shape=(sum(widths),))
        self.categorical_counts = split(counts, widths)
        self.categorical_missing = ints("categorical_missing", self.categorical_missing)
        new = r.json_list("new_categories", dict)
        if len(new) != len(self.new_categories) or not all(
            isinstance(k, str) and type(v) is int for d in new for k, v in d.items()
        ):
            raise StateError(f"{r.what}: new category counts do not fit the schema's categorical features")
        self.new_categories = new
        self.new_category_overflow = ints("new_category_overflow", self.new_category_overflow)
        self.score_counts = ints("score_counts", self.score_counts)
        score_priority = r.array("score_sample_priority", np.uint64, ndim=1)
        self._score_priority = score_priority
        self._score_values = r.array("score_sample_values", np.float64, shape=score_priority.shape)
        if score_priority.size > self.sample_size or any(
            np.any(p[1:] < p[:-1]) for p in [*priorities, score_priority]
        ):
            raise StateError(f"{r.what}: a sample is larger than sample_size or not in priority order")
        segments = r.json_list("segment_counts", list)
        if [pair[0] if len(pair) == 2 else None for pair in segments] != list(self.segment_counts) or not all(
            isinstance(d, dict) and all(isinstance(k, str) and type(v) is int for k, v in d.items())
            for _, d in segments
        ):
            raise StateError(f"{r.what}: segment counts do not fit the schema's segment keys")
        self.segment_counts = {key: counts for key, counts in segments}

    def snapshot(self) -> bytes:
        """The state as bytes (:meth:`to_state` in the one state format); :meth:`restore` with the
        same schema and reference rebuilds it.

        >>> from stream_monitor.core.reference import ReferenceProfile
        >>> from stream_monitor.core.schema import ModelSchema
        >>> schema, reference = ModelSchema("m", "regression", ()), ReferenceProfile(1, "m")
        >>> sketch = WindowSketch(schema, reference)
        >>> sketch.n_events = 4
        >>> WindowSketch.restore(sketch.snapshot(), schema, reference).n_events
        4
        """
        return state_format.encode(self.to_state())

    @classmethod
    def restore(cls, data: bytes, schema: ModelSchema, reference: ReferenceProfile) -> Self:
        """Rebuild a sketch from :meth:`snapshot` bytes; :class:`StateError` on bad or foreign bytes.

        >>> from stream_monitor.core.reference import ReferenceProfile
        >>> from stream_monitor.core.schema import ModelSchema
        >>> WindowSketch.restore(b"[]", ModelSchema("m", "regression", ()), ReferenceProfile(1, "m"))
        Traceback (most recent call last):
        ...
        stream_monitor.errors.StateError: not stream-monitor state: JSON (from an older stream-monitor?)
        """
        return cls.from_state(state_format.decode(data), schema, reference)


def merge_sketches(sketches: Sequence[WindowSketch]) -> WindowSketch:
    """One new sketch of all the given sketches' events, in one pass (cheaper than pairwise merges).

    All sketches must share schema, reference and seed; the merged sample size is the smallest one
    (a bottom-k sample is also a valid bottom-k' sample for every k' < k).

    >>> from stream_monitor.core.reference import ReferenceProfile
    >>> from stream_monitor.core.schema import ModelSchema
    >>> schema, reference = ModelSchema("m", "regression", ()), ReferenceProfile(1, "m")
    >>> parts = [WindowSketch(schema, reference) for _ in range(3)]
    >>> for i, part in enumerate(parts):
    ...     part.n_events = i + 1
    >>> merge_sketches(parts).n_events
    6
    """
    if not sketches:
        raise ValueError("merge_sketches needs at least one sketch")
    first = sketches[0]
    for sketch in sketches[1:]:
        if sketch.schema != first.schema:
            raise ValueError(
                f"cannot merge sketches of models {first.schema.model_id!r} and {sketch.schema.model_id!r}"
            )
        if sketch.reference is not first.reference and sketch.reference != first.reference:
            raise ValueError(
                f"cannot merge sketches of model {first.schema.model_id!r} on different references"
            )
        if sketch.seed != first.seed:
            raise ValueError(f"cannot merge samples drawn with seeds {first.seed} and {sketch.seed}")
    k = min(s.sample_size for s in sketches)
    merged = WindowSketch(first.schema, first.reference, sample_size=k, seed=first.seed)
    merged.n_events = sum(s.n_events for s in sketches)
    merged.ts_min = min(s.ts_min for s in sketches)
    merged.ts_max = max(s.ts_max for s in sketches)
    for name in (
        "numeric_counts",
        "numeric_missing",
        "numeric_below",
        "numeric_above",
        "numeric_n",
        "numeric_sum",
        "numeric_sumsq",
        "categorical_missing",
        "new_category_overflow",
        "score_counts",
    ):
        setattr(merged, name, np.sum([getattr(s, name) for s in sketches], axis=0))
    # Features whose samples are shared in every part stay shared (see _update_numeric).
    parts = [s._numeric_priority for s in sketches]
    for group in _shared_samples(parts, range(len(merged._numeric_priority))) if k else []:
        f = group[0]
        rows = [np.stack([s._numeric_values[g] for g in group]) for s in sketches]
        shared, merged_rows = _bottom_k([s._numeric_priority[f] for s in sketches], rows, k)
        for g, row in zip(group, merged_rows, strict=True):
            merged._numeric_priority[g], merged._numeric_values[g] = shared, row
    merged._score_priority, merged._score_values = _bottom_k(
        [s._score_priority for s in sketches], [s._score_values for s in sketches], k
    )
    merged.categorical_counts = [
        np.sum([s.categorical_counts[i] for s in sketches], axis=0)
        for i in range(len(merged.categorical_counts))
    ]
    for i in range(len(merged.new_categories)):
        new: dict[str, int] = {}
        for sketch in sketches:
            _add_counts(new, sketch.new_categories[i])
        merged.new_categories[i], dropped = _cap_counts(new, NEW_CATEGORY_CAP)
        merged.new_category_overflow[i] += dropped
    merged.score_missing = sum(s.score_missing for s in sketches)
    merged.score_n = sum(s.score_n for s in sketches)
    merged.score_sum = math.fsum(s.score_sum for s in sketches)
    for key in merged.segment_counts:
        segment: dict[str, int] = {}
        for sketch in sketches:
            _add_counts(segment, sketch.segment_counts[key])
        merged.segment_counts[key] = _cap_segments(segment, first.schema.max_segments)
    return merged
