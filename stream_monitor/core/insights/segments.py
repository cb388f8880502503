"""Segment drift (seeds 000–002): drift per segment with its traffic share, and segment surges.

Per configured segment key (``channel``, ``country``…, from the event's ``segment`` object or its
features), every segment value gets a counts-only :class:`WindowSketch` per bucket of event time. At
most ``schema.max_segments`` values per key and bucket get their own sketch; later new values share
the ``__other__`` one (label cardinality stays bounded).

- **Drift per segment**: the importance-weighted PSI of the segment's counts against the reference
  (the same weights as the data DNA), with the segment's share of the bucket's traffic. Weigh the two
  together (seed 001): a drifting 0.5 % segment rarely matters, a drifting 30 % one does.
- **Surge** (seed 002: "a sudden surge from a new channel is a reason to check drift at once"): after
  every batch, a segment whose share of the open bucket reaches ``surge_min_share`` and at least
  ``surge_ratio`` × its mean share over the last ``baseline_buckets`` closed buckets (0 for a new
  value) is checked at once, without waiting for the window to close: its counts are compared with
  the reference, and the check *drifts* when a key feature's PSI reaches ``psi_alarm`` (the model's
  ``policy.psi_alarm`` unless ``insights.segments.psi_alarm`` sets one for segments). A surge needs
  a baseline (one closed bucket) and ``surge_min_events`` events of the segment, so start-up is quiet.

Pure: batches in, results out; time is the events' time.

>>> from stream_monitor.core.reference import NumericProfile, ReferenceProfile
>>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
>>> from types import SimpleNamespace
>>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric", key=True),), segment_keys=("ch",))
>>> rng = np.random.default_rng(0)
>>> ref = ReferenceProfile(1, "m", numeric={"x": NumericProfile.from_values(rng.normal(size=5000), bins=10)})
>>> def batch(day, n, ch, loc):
...     x = rng.normal(loc, 1.0, n)
...     ids = [f"{day}-{ch}-{i}" for i in range(n)]
...     return SimpleNamespace(event_id=ids, ts=np.full(n, day * 86400.0 + 1),
...         numeric=x[None, :], categorical=[], score=x, pred_label=[None] * n, segments={"ch": [ch] * n})
>>> tracker = SegmentTracker(schema, ref)
>>> tracker.update(batch(0, 3000, "web", 0.0)), tracker.update(batch(1, 3000, "web", 0.0))
([], [])
>>> [(c.segment, round(c.share, 2), c.drift) for c in tracker.update(batch(1, 1500, "partner", 1.5))]
[('ch=partner', 0.33, True)]
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from stream_monitor.core import state_format
from stream_monitor.core.detectors.psi import psi_matrix
from stream_monitor.core.insights.dna import feature_weights
from stream_monitor.core.reference import OTHER, ReferenceProfile
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import DAY_SECONDS, InsightSettings, PolicySettings, SegmentSettings
from stream_monitor.core.sketches import MISSING_SEGMENT, WindowSketch
from stream_monitor.core.state_format import StateReader
from stream_monitor.core.windows import take_batch
from stream_monitor.errors import StateError

if TYPE_CHECKING:
    from stream_monitor.core.events import PredictionBatch

SEGMENTS_FORMAT = 2  # 1 was JSON


def _rounded(value: float | None) -> float | None:
    """JSON-safe: NaN (a segment without data) and a value restored from JSON ``null`` become None."""
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value), 6)


@dataclass(frozen=True)
class SegmentDrift:
    """Drift of one segment in one bucket against the reference, and its share of the traffic."""

    key: str
    value: str
    bucket: int
    events: int
    share: float
    drift: float  # importance-weighted PSI over the features
    top_feature: str | None
    top_psi: float
    key_psi: float  # largest PSI on a key feature (all features when none is key)

    @property
    def segment(self) -> str:
        return f"{self.key}={self.value}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "key": self.key,
            "value": self.value,
            "bucket": self.bucket,
            "events": self.events,
            "share": _rounded(self.share),
            "drift": _rounded(self.drift),
            "top_feature": self.top_feature,
            "top_psi": _rounded(self.top_psi),
            "key_psi": _rounded(self.key_psi),
        }


@dataclass(frozen=True)
class SurgeCheck:
    """An immediate drift check started by a segment's surge."""

    key: str
    value: str
    bucket: int
    share: float
    baseline_share: float
    events: int
    drift: bool
    result: SegmentDrift
    event_time: float

    @property
    def segment(self) -> str:
        return f"{self.key}={self.value}"


def sketch_psi(sketch: WindowSketch, reference: ReferenceProfile) -> dict[str, float]:
    """PSI per feature of a sketch's counts against the reference (NaN-free: empty features omitted).

    >>> from stream_monitor.core.reference import NumericProfile
    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))
    >>> ref = ReferenceProfile(1, "m", numeric={"x": NumericProfile.from_values(np.arange(100.0), bins=2)})
    >>> sketch_psi(WindowSketch(schema, ref), ref)
    {}
    """
    out: dict[str, float] = {}
    for i, f in enumerate(sketch.schema.numeric_names):
        prof = reference.numeric.get(f)
        counts = np.asarray(sketch.feature_counts(i), dtype=float)
        if prof is None or counts.sum() == 0 or prof.counts.sum() == 0:
            continue
        out[f] = float(psi_matrix(prof.counts[None, :].astype(float), counts[None, :])[0])
    for i, f in enumerate(sketch.schema.categorical_names):
        cprof = reference.categorical.get(f)
        counts = np.asarray(sketch.categorical_counts[i], dtype=float)
        if cprof is None or counts.sum() == 0 or cprof.counts.sum() == 0:
            continue
        out[f] = float(psi_matrix(cprof.counts[None, :].astype(float), counts[None, :])[0])
    return out


class SegmentTracker:
    """Per-segment counts by bucket, segment drift and surge checks. See the module docstring."""

    def __init__(
        self,
        schema: ModelSchema,
        reference: ReferenceProfile,
        settings: SegmentSettings | None = None,
        bucket_seconds: float = DAY_SECONDS,
        retention: int = InsightSettings.retention,
        origin: float = 0.0,
        key_weight: float = InsightSettings.key_weight,
    ) -> None:
        self.schema = schema
        self.reference = reference
        self.settings = settings or SegmentSettings()
        # A segment drifts where the model does, unless its settings say otherwise.
        self.psi_alarm = (
            PolicySettings.psi_alarm if self.settings.psi_alarm is None else self.settings.psi_alarm
        )
        self.bucket_seconds = float(bucket_seconds)
        self.retention = retention
        self.origin = float(origin)
        names, weights = feature_weights(schema, key_weight)
        self._weights = dict(zip(names, weights, strict=True))
        self._key_features = set(schema.key_features) or set(names)
        # bucket -> key -> value -> counts-only sketch (open buckets: at most the two newest)
        self._open: dict[int, dict[str, dict[str, WindowSketch]]] = {}
        self._open_events: dict[int, int] = {}
        # bucket -> closed summary: list of SegmentDrift dicts, plus total events
        self.history: dict[int, dict[str, Any]] = {}

    def _bucket_of(self, ts: np.ndarray) -> np.ndarray:
        return np.floor((ts - self.origin) / self.bucket_seconds).astype(np.int64)

    def _sketch(self) -> WindowSketch:
        return WindowSketch(self.schema, self.reference, sample_size=0)

    # -- feeding ------------------------------------------------------------------------------
    def update(self, batch: PredictionBatch) -> list[SurgeCheck]:
        """Add a batch; close buckets two behind the newest; return surge checks of the newest bucket."""
        n = len(batch.ts)
        if n == 0 or not self.schema.segment_keys:
            return []
        ts = np.asarray(batch.ts, dtype=np.float64)
        ids = self._bucket_of(ts)
        newest_open = max(self._open, default=None)
        for b in np.unique(ids):
            b = int(b)
            if newest_open is not None and b < newest_open - 1:
                continue  # later than the lateness of one bucket: counted in no segment bucket
            positions = np.flatnonzero(ids == b)
            part = batch if positions.size == n else take_batch(batch, positions)
            self._add(b, part)
        newest = max(self._open)
        for b in sorted(self._open):
            if b < newest - 1:
                self._close(b)
        return self._surges(newest)

    def _add(self, b: int, batch: PredictionBatch) -> None:
        per_key = self._open.setdefault(b, {k: {} for k in self.schema.segment_keys})
        self._open_events[b] = self._open_events.get(b, 0) + len(batch.ts)
        for key in self.schema.segment_keys:
            values = batch.segments.get(key)
            if values is None:
                continue
            sketches = per_key[key]
            groups: dict[str, list[int]] = defaultdict(list)
            for i, v in enumerate(values):
                name = MISSING_SEGMENT if v is None else v
                if name not in sketches and len(sketches) >= self.schema.max_segments:
                    name = OTHER
                groups[name].append(i)
                if name not in sketches:
                    sketches[name] = self._sketch()
            for name, idx in groups.items():
                sub = batch if len(idx) == len(values) else take_batch(batch, np.asarray(idx, dtype=np.int64))
                sketches[name].update(sub)

    def _close(self, b: int) -> None:
        results = self._drift(b)
        self.history[b] = {
            "events": self._open_events.get(b, 0),
            "segments": [r.to_dict() for r in results],
        }
        del self._open[b]
        self._open_events.pop(b, None)
        for old in sorted(self.history)[: max(0, len(self.history) - self.retention)]:
            del self.history[old]

    def close_through(self, watermark: float) -> None:
        """Close every open bucket that ends at or before ``watermark`` (event time)."""
        for b in sorted(self._open):
            if self.origin + (b + 1) * self.bucket_seconds <= watermark:
                self._close(b)

    # -- reading ------------------------------------------------------------------------------
    def _drift(self, b: int) -> list[SegmentDrift]:
        total = self._open_events.get(b, 0)
        out = []
        for key, sketches in self._open.get(b, {}).items():
            for value, sk in sketches.items():
                out.append(self._segment_drift(key, value, b, sk, total))
        return sorted(out, key=lambda r: (-r.drift * r.share, r.segment))

    def _segment_drift(self, key: str, value: str, b: int, sk: WindowSketch, total: int) -> SegmentDrift:
        psis = sketch_psi(sk, self.reference) if sk.n_events >= self.settings.min_events else {}
        wsum = sum(self._weights[f] for f in psis)
        drift = sum(self._weights[f] * v for f, v in psis.items()) / wsum if wsum > 0 else math.nan
        top = max(psis, key=lambda f: psis[f], default=None)
        key_psi = max((v for f, v in psis.items() if f in self._key_features), default=math.nan)
        return SegmentDrift(
            key,
            value,
            b,
            sk.n_events,
            sk.n_events / total if total else 0.0,
            drift,
            top,
            psis[top] if top is not None else math.nan,
            key_psi,
        )

    def current(self) -> list[SegmentDrift]:
        """Segment drift in the newest open bucket so far (largest drift × share first)."""
        if not self._open:
            return []
        return self._drift(max(self._open))

    def latest(self) -> list[SegmentDrift]:
        """Segment drift of the newest closed bucket; before the first closes, the open one so far.

        A closed (whole) bucket is preferred: a bucket in progress has only part of the day, and a
        feature with a daily cycle (the hour) would look drifted in every segment.
        """
        if not self.history:
            return self.current()
        b = max(self.history)
        return [
            SegmentDrift(
                d["key"],
                d["value"],
                b,
                d["events"],
                d["share"],
                d["drift"],
                d["top_feature"],
                d["top_psi"],
                d["key_psi"],
            )
            for d in self.history[b]["segments"]
        ]

    def needing_attention(self) -> list[SegmentDrift]:
        """Segments of :meth:`latest` whose drift reaches :attr:`psi_alarm`, by drift × share."""
        return [
            r
            for r in self.latest()
            if r.events >= self.settings.min_events and not math.isnan(r.drift) and r.drift >= self.psi_alarm
        ]

    def baseline_share(self, key: str, value: str, before: int) -> float | None:
        """Mean share of a segment over the last buckets before ``before`` (None: no history).

        Closed buckets and the still-open previous bucket both count (a bucket stays open one bucket
        longer for late events).
        """
        shares: dict[int, float] = {}
        for b, h in self.history.items():
            if b < before:
                match = [d["share"] for d in h["segments"] if d["key"] == key and d["value"] == value]
                shares[b] = match[0] if match else 0.0
        for b, per_key in self._open.items():
            total = self._open_events.get(b, 0)
            if b < before and total:
                sk = per_key.get(key, {}).get(value)
                shares[b] = sk.n_events / total if sk is not None else 0.0
        past = sorted(shares)[-self.settings.baseline_buckets :]
        return float(np.mean([shares[b] for b in past])) if past else None

    def _surges(self, b: int) -> list[SurgeCheck]:
        s = self.settings
        total = self._open_events.get(b, 0)
        checks = []
        for key, sketches in self._open.get(b, {}).items():
            for value, sk in sketches.items():
                if sk.n_events < s.surge_min_events or total == 0:
                    continue
                share = sk.n_events / total
                base = self.baseline_share(key, value, b)
                if base is None or share < s.surge_min_share or share < s.surge_ratio * base:
                    continue
                if share - base < s.surge_min_share:
                    continue
                result = self._segment_drift(key, value, b, sk, total)
                drift = not math.isnan(result.key_psi) and result.key_psi >= self.psi_alarm
                checks.append(SurgeCheck(key, value, b, share, base, sk.n_events, drift, result, sk.ts_max))
        return checks

    # -- state --------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Open buckets' sketches, their event counts and the closed buckets' summaries, as a
        container of :mod:`stream_monitor.core.state_format` (settings come from the constructor)."""
        return state_format.tagged(
            "segment_tracker",
            SEGMENTS_FORMAT,
            model_id=self.schema.model_id,
            open_events=[[b, n] for b, n in self._open_events.items()],
            history=[[b, h] for b, h in self.history.items()],
            # Segment values are data (any length): they go in the items' JSON, not in part names.
            # Per bucket and key, an item without value (the key, even without segments yet), then
            # one item per segment value with its sketch.
            open=state_format.indexed(self._open_items()),
        )

    def _open_items(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for b, per_key in self._open.items():
            for k, vals in per_key.items():
                items.append({"bucket": b, "key": k, "value": None})
                items += [
                    {"bucket": b, "key": k, "value": v, "sketch": sk.to_state()} for v, sk in vals.items()
                ]
        return items

    @state_format.restoring
    def load_state(self, state: StateReader | dict[str, Any]) -> None:
        """Load :meth:`to_state` state into this tracker; :class:`StateError` if it does not fit."""
        r = state if isinstance(state, StateReader) else StateReader(state, "segment tracker")
        r.expect("segment_tracker", SEGMENTS_FORMAT)
        model_id = r.text("model_id")
        if model_id != self.schema.model_id:
            raise StateError(f"{r.what}: of model {model_id!r}, restored as {self.schema.model_id!r}")
        open_: dict[int, dict[str, dict[str, WindowSketch]]] = {}
        for item in r.children("open"):
            b, key, value = item.integer("bucket"), item.text("key"), item.optional_text("value")
            if key not in self.schema.segment_keys:
                raise StateError(f"{item.what}: {key!r} is not a segment key of the schema")
            per_key = open_.setdefault(b, {})
            sketches = per_key.setdefault(key, {})
            if value is not None:
                sketches[value] = WindowSketch.from_state(item.child("sketch"), self.schema, self.reference)
        pairs = r.json_list("open_events", list) + r.json_list("history", list)
        if not all(len(p) == 2 and type(p[0]) is int for p in pairs):
            raise StateError(f"{r.what}: bucket numbers are not integers")
        open_events = {b: n for b, n in r.json_list("open_events", list)}
        history = {b: h for b, h in r.json_list("history", list)}
        if not all(type(n) is int for n in open_events.values()) or not all(
            isinstance(h, dict) and isinstance(h.get("segments"), list) for h in history.values()
        ):
            raise StateError(f"{r.what}: open event counts or closed bucket summaries do not fit")
        self._open, self._open_events, self.history = open_, open_events, history

    def snapshot(self) -> bytes:
        """:meth:`to_state` as bytes (the one state format)."""
        return state_format.encode(self.to_state())

    @classmethod
    def restore(cls, data: bytes, schema: ModelSchema, reference: ReferenceProfile, **kwargs: Any) -> Self:
        """Rebuild from :meth:`snapshot` bytes; settings as keyword arguments of the constructor."""
        tracker = cls(schema, reference, **kwargs)
        tracker.load_state(state_format.decode(data))
        return tracker


def attention_summary(results: Sequence[SegmentDrift]) -> list[str]:
    """``key=value`` names, for the trigger's ``segments_needing_attention``.

    >>> attention_summary([SegmentDrift("ch", "app", 0, 500, 0.3, 0.4, "x", 0.5, 0.5)])
    ['ch=app']
    """
    return [r.segment for r in results]
