"""The label join: a bounded, TTL'd buffer of pending predictions that delayed labels join on.

Pure: no clock reads (time is ``now``), no I/O. Everything is numpy per batch; there is no Python object
per pending prediction.

Layout. A pending prediction is four numbers: a 64-bit hash of its ``event_id`` (:func:`hash_event_ids`),
its event time (float64 epoch seconds), its score (float32) and a predicted-class code (int16 into a small
class table, -1 = none) — 22 bytes. They live in two "levels", each a set of parallel arrays sorted by key:

* ``main`` — large, rebuilt only when ``recent`` is merged into it;
* ``recent`` — small (at most ``max(4096, len(main) // 8)`` slots), where each added batch is inserted.

A join is then two vectorised ``np.searchsorted`` calls per label batch. A joined, expired or evicted
entry becomes a tombstone (its ts is set to +inf) and is physically dropped at the next merge, or
when tombstones fill half of ``main``; so the arrays hold between 22 and 44 bytes per pending
prediction (22 when nothing is dead).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from stream_monitor.core import state_format
from stream_monitor.core.settings import ModelSettings
from stream_monitor.core.state_format import StateReader
from stream_monitor.errors import StateError

__all__ = ["JoinedLabels", "LabelJoinBuffer", "hash_event_ids"]

_KIND = "label_buffer"
_FORMAT = 2  # 1 was its own binary layout ("SMLJ")
_DEAD = np.inf
_MAX_CLASSES = 32_767  # int16 codes; beyond this every new class shares the "__other__" code
_OTHER = "__other__"

_SEED = np.uint64(0x9E3779B97F4A7C15)
_MUL = np.uint64(0xBF58476D1CE4E5B9)
_F1 = np.uint64(0xFF51AFD7ED558CCD)
_F2 = np.uint64(0xC4CEB9FE1A85EC53)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_S33 = np.uint64(33)


def hash_event_ids(event_ids: Sequence[str]) -> np.ndarray:
    """Stable 64-bit keys of event ids, computed column-wise over the batch (no per-id Python work).

    The id's Unicode code points are packed two per 64-bit word (``c0 | c1 << 32``, independent of the
    machine's byte order); the state starts from the id's length and absorbs each word with
    ``h = xorshift31((h ^ w) * M)``, then a murmur3 ``fmix64`` finaliser. The result depends only on the id,
    never on the batch, the process or the platform, so keys in a snapshot stay valid after a restore.

    Every step is a bijection of the state, so two ids of the same length that differ in a single word
    never collide. Otherwise treat the key as a random 64-bit value: the chance of any collision among
    ``n`` pending ids is about ``n² / 2⁶⁵`` (≈ 2.7e-8 at one million). It is not a cryptographic hash:
    ids chosen by an adversary could collide on purpose (a collision joins a label to the wrong
    prediction); event ids come from the model's own producer.

    >>> keys = hash_event_ids(["a", "b", "a"])
    >>> keys.dtype, bool(keys[0] == keys[2]), bool(keys[0] == keys[1])
    (dtype('uint64'), True, False)
    >>> int(hash_event_ids(["evt-1"])[0]) == int(hash_event_ids(["evt-1", "a much longer event id"])[0])
    True
    """
    n = len(event_ids)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    arr = np.asarray(event_ids, dtype=np.str_)
    width = arr.dtype.itemsize // 4
    lens = np.strings.str_len(arr).astype(np.uint64)
    h = (lens + _SEED) * _MUL
    h ^= h >> _S31
    if width:
        cps = arr.view(np.uint32).reshape(n, width).astype(np.uint64)
        if width % 2:
            cps = np.concatenate([cps, np.zeros((n, 1), dtype=np.uint64)], axis=1)
        words = cps[:, 0::2] | (cps[:, 1::2] << _S32)
        n_words = (lens + np.uint64(1)) >> np.uint64(1)
        always = int(n_words.min())
        for j in range(words.shape[1]):
            hj = (h ^ words[:, j]) * _MUL
            hj ^= hj >> _S31
            # Words past an id's end are padding from a longer id in the batch: skip them.
            h = hj if j < always else np.where(n_words > j, hj, h)
    h ^= h >> _S33
    h *= _F1
    h ^= h >> _S33
    h *= _F2
    h ^= h >> _S33
    return h


@dataclass
class JoinedLabels:
    """Labels that found their prediction, aligned row by row (all arrays have the same length).

    >>> j = JoinedLabels.empty()
    >>> len(j), j.delay.dtype
    (0, dtype('float64'))
    """

    index: np.ndarray  # int64 position of each joined label in the label batch
    event_id: list[str]
    score: np.ndarray  # float64 (stored as float32)
    pred_class: list[str | None]
    label: np.ndarray  # float64
    label_class: list[str] | None
    pred_ts: np.ndarray  # float64 event time of the prediction
    label_ts: np.ndarray  # float64 event time of the label
    delay: np.ndarray  # float64 label_ts - pred_ts, seconds

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def empty(cls) -> JoinedLabels:
        """No joined labels."""
        f = np.empty(0, dtype=np.float64)
        return cls(np.empty(0, dtype=np.int64), [], f, [], f.copy(), [], f.copy(), f.copy(), f.copy())


def _read_only(values: np.ndarray) -> np.ndarray:
    view = values.view()
    view.flags.writeable = False
    return view


class _Level:
    """Parallel arrays sorted by key; ts = +inf marks a dead (tombstoned) entry."""

    __slots__ = ("code", "dead", "keys", "score", "ts")

    def __init__(
        self,
        keys: np.ndarray | None = None,
        ts: np.ndarray | None = None,
        score: np.ndarray | None = None,
        code: np.ndarray | None = None,
        dead: int = 0,
    ) -> None:
        self.keys = np.empty(0, np.uint64) if keys is None else keys
        self.ts = np.empty(0, np.float64) if ts is None else ts
        self.score = np.empty(0, np.float32) if score is None else score
        self.code = np.empty(0, np.int16) if code is None else code
        self.dead = dead

    def sealed(self) -> _Level:
        """This level with its keys, scores and class codes as read-only views, for the main level.

        They never change in place (only ts does, when an entry dies), and the main level is rebuilt
        only every ``len(main) // 8`` additions: read-only, a checkpoint taken in the background
        shares them instead of copying them, and an incremental checkpoint writes them once per
        rebuild as blobs (``state_format.frozen``, ``kafka/state.py``). The recent level changes with
        every batch: it stays writeable (copied when taken, written inside every record)."""
        self.keys, self.score, self.code = (
            _read_only(self.keys),
            _read_only(self.score),
            _read_only(self.code),
        )
        return self

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.ts.nbytes + self.score.nbytes + self.code.nbytes

    def find(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(hit mask, positions) of live entries with keys ``q``."""
        if len(self.keys) == 0:
            return np.zeros(len(q), dtype=bool), np.zeros(len(q), dtype=np.intp)
        pos = np.searchsorted(self.keys, q)
        np.minimum(pos, len(self.keys) - 1, out=pos)
        hit = (self.keys[pos] == q) & (self.ts[pos] != _DEAD)
        return hit, pos

    def kill(self, pos: np.ndarray) -> None:
        self.ts[pos] = _DEAD
        self.dead += len(pos)

    def compacted(self) -> _Level:
        if self.dead == 0:
            return self
        live = self.ts != _DEAD
        return _Level(self.keys[live], self.ts[live], self.score[live], self.code[live])

    def merged(self, other: _Level) -> _Level:
        """Both levels' live entries in one sorted level (live keys are unique across levels)."""
        a, b = self.compacted(), other.compacted()
        n_a, n_b = len(a), len(b)
        # b's slots in the output; a fills the rest in order (np.insert is several times slower).
        b_slot = np.searchsorted(a.keys, b.keys) + np.arange(n_b)
        a_slot = np.ones(n_a + n_b, dtype=bool)
        a_slot[b_slot] = False
        parts = []
        for x, y in ((a.keys, b.keys), (a.ts, b.ts), (a.score, b.score), (a.code, b.code)):
            out = np.empty(n_a + n_b, dtype=x.dtype)
            out[b_slot] = y
            out[a_slot] = x
            parts.append(out)
        return _Level(parts[0], parts[1], parts[2], parts[3])


class LabelJoinBuffer:
    """Pending predictions, joined by ``event_id`` to labels that arrive minutes to weeks later.

    Memory: 22 bytes per pending prediction (uint64 key + float64 ts + float32 score + int16 class) in
    numpy arrays, up to 44 while tombstones wait for compaction (measured: 22.0 bytes per pending with
    one million pending, see ``nbytes``), plus a fixed ``8 * joined_memory`` bytes for duplicate
    detection and 8 KiB of recent delays.

    * ``add_predictions`` — a prediction whose ``event_id`` is already pending is counted in
      ``duplicate_predictions`` and dropped (the first one is kept, also within a batch).
    * ``join`` — each label whose prediction is pending is joined and removes it; a label whose
      prediction is older than ``ttl_seconds`` at ``now`` expires it instead. A label for an event joined
      recently (the last ``joined_memory // 2`` to ``joined_memory`` joined keys are remembered, in two
      generations) counts in ``duplicate_labels``; any other unmatched label in ``orphan_labels``.
    * ``expire(now)`` drops predictions with ``ts < now - ttl_seconds`` (O(pending) when something
      is due, O(1) otherwise).
    * Above ``max_entries``, the oldest predictions (by event time) are evicted down to
      ``max_entries - evict_headroom * max_entries`` so that a full buffer pays for the O(pending)
      selection once per ``evict_headroom * max_entries`` additions, not on every batch.

    Invariant: ``added == joined + pending + expired + evicted``.

    >>> buf = LabelJoinBuffer(max_entries=100, ttl_seconds=3600)
    >>> ts, score = np.array([0.0, 1.0, 2.0]), np.array([0.9, 0.2, 0.7])
    >>> buf.add_predictions(["a", "b", "c"], ts, score, ["1", "0", "1"])
    >>> label_ts, label = np.array([60.0, 61.0, 62.0]), np.array([1.0, 0.0, 0.0])
    >>> j = buf.join(["c", "x", "a"], label_ts, label, ["1", "0", "0"], now=100.0)
    >>> j.event_id, j.delay.tolist(), j.pred_class, [round(s, 2) for s in j.score.tolist()]
    (['c', 'a'], [58.0, 62.0], ['1', '1'], [0.7, 0.9])
    >>> len(buf), buf.joined, buf.orphan_labels, buf.expire(now=3601.5), buf.expired
    (1, 2, 1, 1, 1)
    """

    def __init__(
        self,
        max_entries: int = ModelSettings.label_buffer_entries,
        ttl_seconds: float = ModelSettings.label_ttl_seconds,
        *,
        joined_memory: int = 100_000,
        evict_headroom: float = 1 / 16,
        rate_horizon_seconds: float = 300.0,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        if not ttl_seconds > 0:
            raise ValueError("ttl_seconds must be > 0")
        if not 0.0 <= evict_headroom < 1.0:
            raise ValueError("evict_headroom must be in [0, 1)")
        if not rate_horizon_seconds > 0:
            raise ValueError("rate_horizon_seconds must be > 0")
        self.max_entries = int(max_entries)
        self.ttl_seconds = float(ttl_seconds)
        self.joined_memory = max(2, int(joined_memory))
        self.evict_headroom = float(evict_headroom)
        self.rate_horizon_seconds = float(rate_horizon_seconds)
        # counters
        self.added = 0
        self.joined = 0
        self.expired = 0
        self.evicted = 0
        self.duplicate_predictions = 0
        self.duplicate_labels = 0
        self.orphan_labels = 0
        # learned state
        self._main = _Level()
        self._recent = _Level()
        self._pending = 0
        self._min_ts = math.inf  # lower bound of live prediction ts
        self._classes: list[str] = []
        self._class_index: dict[str, int] = {}
        self._joined_cur = np.empty(0, np.uint64)  # sorted
        self._joined_old = np.empty(0, np.uint64)  # sorted
        self._rate = 0.0
        self._rate_t = -math.inf
        self._delays = np.full(1024, np.nan)
        self._delay_pos = 0

    # -- size ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._pending

    @property
    def pending(self) -> int:
        """Predictions waiting for their label."""
        return self._pending

    @property
    def joined_total(self) -> int:
        """Monotonic count of joined labels (survives snapshots); see :meth:`labels_since`."""
        return self.joined

    def labels_since(self, mark: int) -> int:
        """Labels joined since ``mark``, an earlier value of :attr:`joined_total`.

        >>> buf = LabelJoinBuffer(10, 60)
        >>> mark = buf.joined_total
        >>> buf.add_predictions(["a"], np.array([0.0]), np.array([0.5]))
        >>> _ = buf.join(["a"], np.array([1.0]), np.array([1.0]), None, now=1.0)
        >>> buf.labels_since(mark)
        1
        """
        return self.joined - int(mark)

    @property
    def nbytes(self) -> int:
        """Bytes held by the pending-prediction arrays (tombstones included)."""
        return self._main.nbytes + self._recent.nbytes

    @property
    def delay_p50(self) -> float:
        """Median label delay (seconds) over the last 1024 joined labels; NaN before any join."""
        d = self._delays[np.isfinite(self._delays)]
        return float(np.median(d)) if len(d) else math.nan

    #: The names of :meth:`stats`, in its order.
    STAT_NAMES = (
        "joined_total",
        "pending",
        "expired",
        "evicted",
        "orphan",
        "duplicate",
        "delay_p50",
        "arrival_rate",
    )

    def stats(self, now: float) -> dict[str, float]:
        """The join's counters and rates as the window evaluations report them (``labels``)."""
        return {
            "joined_total": float(self.joined),
            "pending": float(self._pending),
            "expired": float(self.expired),
            "evicted": float(self.evicted),
            "orphan": float(self.orphan_labels),
            "duplicate": float(self.duplicate_labels),
            "delay_p50": float(self.delay_p50),
            "arrival_rate": float(self.arrival_rate(now)),
        }

    def arrival_rate(self, now: float) -> float:
        """Labels joined per second, exponentially decayed with time constant ``rate_horizon_seconds``.

        For a steady rate r the estimate tends to r; with no joins it decays by ``e`` per horizon.

        >>> buf = LabelJoinBuffer(10_000, 1e9, rate_horizon_seconds=100.0)
        >>> for t in range(1000):  # 2 labels per second for 1000 s
        ...     ids = [f"{t}a", f"{t}b"]
        ...     buf.add_predictions(ids, np.full(2, float(t)), np.zeros(2))
        ...     _ = buf.join(ids, np.full(2, float(t)), np.zeros(2), None, now=float(t))
        >>> round(buf.arrival_rate(999.0), 2), round(buf.arrival_rate(1099.0), 2)
        (2.01, 0.74)
        """
        if self._rate_t == -math.inf:
            return 0.0
        dt = max(0.0, float(now) - self._rate_t)
        return self._rate * math.exp(-dt / self.rate_horizon_seconds)

    # -- classes ------------------------------------------------------------------------------
    def _encode_classes(self, classes: Sequence[str | None] | None, n: int) -> np.ndarray:
        if classes is None:
            return np.full(n, -1, dtype=np.int16)
        if len(classes) != n:
            raise ValueError(f"pred_class has {len(classes)} values for {n} events")
        index = self._class_index
        codes = [index.get(c, -2) if c is not None else -1 for c in classes]
        out = np.array(codes, dtype=np.int16)
        if (out == -2).any():
            for i in np.flatnonzero(out == -2).tolist():
                c = classes[i]
                assert c is not None
                code = index.get(c)
                if code is None:
                    if len(self._classes) < _MAX_CLASSES - 1:
                        code = len(self._classes)
                        self._classes.append(c)
                        index[c] = code
                    else:
                        code = self._other_code()
                out[i] = code
        return out

    def _other_code(self) -> int:
        code = self._class_index.get(_OTHER)
        if code is None:
            code = len(self._classes)
            self._classes.append(_OTHER)
            self._class_index[_OTHER] = code
        return code

    # -- add ----------------------------------------------------------------------------------
    def add_predictions(
        self,
        event_id: Sequence[str],
        ts: np.ndarray,
        score: np.ndarray,
        pred_class: Sequence[str | None] | None = None,
    ) -> None:
        """Remember a batch of predictions until their labels arrive.

        ``ts`` is event time (float epoch seconds), ``score`` the model output (stored as float32; NaN
        allowed), ``pred_class`` the predicted class or None per event.

        >>> buf = LabelJoinBuffer(max_entries=2, ttl_seconds=60, evict_headroom=0.0)
        >>> buf.add_predictions(["a", "b", "a", "c"], np.array([3.0, 1.0, 9.0, 2.0]), np.zeros(4))
        >>> len(buf), buf.duplicate_predictions, buf.evicted  # "b" (oldest) evicted
        (2, 1, 1)
        """
        n = len(event_id)
        ts = np.asarray(ts, dtype=np.float64)
        score = np.asarray(score)
        if ts.shape != (n,) or score.shape != (n,):
            raise ValueError(f"ts and score must have shape ({n},), got {ts.shape} and {score.shape}")
        if n == 0:
            return
        if not np.isfinite(ts).all():
            raise ValueError("prediction ts must be finite")
        codes = self._encode_classes(pred_class, n)
        keys = hash_event_ids(event_id)
        ukeys, first = np.unique(keys, return_index=True)  # sorted keys, first occurrence kept
        dup = n - len(ukeys)
        hit_m, _ = self._main.find(ukeys)
        hit_r, _ = self._recent.find(ukeys)
        new = ~(hit_m | hit_r)
        dup += int(len(ukeys) - np.count_nonzero(new))
        self.duplicate_predictions += dup
        rows = first[new]
        if len(rows) == 0:
            return
        batch = _Level(ukeys[new], ts[rows], score[rows].astype(np.float32), codes[rows])
        self._recent = self._recent.merged(batch)
        self._pending += len(rows)
        self.added += len(rows)
        self._min_ts = min(self._min_ts, float(batch.ts.min()))
        if len(self._recent) > max(4096, len(self._main) // 8):
            self._main = self._main.merged(self._recent).sealed()
            self._recent = _Level()
        if self._pending > self.max_entries:
            self._evict()

    def _evict(self) -> None:
        excess = self._pending - self.max_entries
        k = min(self._pending, excess + int(self.evict_headroom * self.max_entries))
        nm = len(self._main)
        all_ts = np.concatenate([self._main.ts, self._recent.ts])
        oldest = np.argpartition(all_ts, k - 1)[:k] if k < len(all_ts) else np.arange(len(all_ts))
        self._main.kill(oldest[oldest < nm])
        self._recent.kill(oldest[oldest >= nm] - nm)
        self._pending -= k
        self.evicted += k
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        if self._main.dead * 2 > len(self._main):
            self._main = self._main.compacted().sealed()
        if self._recent.dead * 2 > len(self._recent):
            self._recent = self._recent.compacted()

    # -- join ---------------------------------------------------------------------------------
    def holds(self, event_id: Sequence[str]) -> np.ndarray:
        """Which of ``event_id`` wait here for their label (routes a label among a model's versions).

        >>> buf = LabelJoinBuffer(100, ttl_seconds=10)
        >>> buf.add_predictions(["a"], np.array([0.0]), np.array([0.3]))
        >>> buf.holds(["a", "b"]).tolist()
        [True, False]
        """
        if len(event_id) == 0:
            return np.zeros(0, dtype=bool)
        keys = hash_event_ids(event_id)
        return self._main.find(keys)[0] | self._recent.find(keys)[0]

    def join(
        self,
        event_id: Sequence[str],
        label_ts: np.ndarray,
        label: np.ndarray,
        label_class: Sequence[str] | None,
        now: float,
    ) -> JoinedLabels:
        """Join a batch of labels to their pending predictions; joined predictions leave the buffer.

        Rows of the result follow the order of the labels in the batch.

        >>> buf = LabelJoinBuffer(100, ttl_seconds=10)
        >>> buf.add_predictions(["a", "b"], np.array([0.0, 50.0]), np.array([0.3, 0.6]))
        >>> j = buf.join(["b", "b", "a"], np.array([55.0, 56.0, 57.0]), np.ones(3), None, now=57.0)
        >>> j.event_id, j.delay.tolist(), buf.duplicate_labels, buf.expired, buf.orphan_labels
        (['b'], [5.0], 1, 1, 1)
        """
        m = len(event_id)
        label_ts = np.asarray(label_ts, dtype=np.float64)
        label = np.asarray(label, dtype=np.float64)
        if label_ts.shape != (m,) or label.shape != (m,):
            raise ValueError(f"label_ts and label must have shape ({m},)")
        if label_class is not None and len(label_class) != m:
            raise ValueError(f"label_class has {len(label_class)} values for {m} labels")
        if m == 0:
            return JoinedLabels.empty()
        keys = hash_event_ids(event_id)
        ukeys, first = np.unique(keys, return_index=True)
        cutoff = float(now) - self.ttl_seconds

        hit_m, pos_m = self._main.find(ukeys)
        hit_r, pos_r = self._recent.find(ukeys)
        found = hit_m | hit_r
        p_ts = np.where(hit_m, self._main.ts[pos_m] if len(self._main) else 0.0, 0.0)
        if len(self._recent):
            p_ts = np.where(hit_r, self._recent.ts[pos_r], p_ts)
        stale = found & (p_ts < cutoff)  # past the TTL but not yet swept by expire()
        ok = found & ~stale
        ok_m, ok_r = ok & hit_m, ok & hit_r

        rows = np.concatenate([first[ok_m], first[ok_r]])
        j_ts = np.concatenate([self._main.ts[pos_m[ok_m]], self._recent.ts[pos_r[ok_r]]])
        j_score = np.concatenate([self._main.score[pos_m[ok_m]], self._recent.score[pos_r[ok_r]]])
        j_code = np.concatenate([self._main.code[pos_m[ok_m]], self._recent.code[pos_r[ok_r]]])
        joined_keys = ukeys[ok]

        n_stale = int(np.count_nonzero(stale))
        self._main.kill(pos_m[hit_m & found])
        self._recent.kill(pos_r[hit_r & found])
        n_joined = len(rows)
        self._pending -= n_joined + n_stale
        self.expired += n_stale
        self.joined += n_joined
        self._remember_joined(joined_keys)

        # Unmatched labels, in sequential semantics: a repeat of a key joined earlier (in this batch
        # or within the joined memory) is a duplicate; anything else is an orphan.
        unmatched = np.ones(m, dtype=bool)
        unmatched[rows] = False
        n_un = int(np.count_nonzero(unmatched))
        if n_un:
            dup = self._recently_joined(keys[unmatched])
            n_dup = int(np.count_nonzero(dup))
            self.duplicate_labels += n_dup
            self.orphan_labels += n_un - n_dup
        self._maybe_compact()

        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        j_ts = j_ts[order]
        delay = label_ts[rows] - j_ts
        self._record(n_joined, delay, float(now))
        classes = self._classes
        return JoinedLabels(
            index=rows.astype(np.int64),
            event_id=[event_id[i] for i in rows.tolist()],
            score=j_score[order].astype(np.float64),
            pred_class=[classes[c] if c >= 0 else None for c in j_code[order].tolist()],
            label=label[rows],
            label_class=None if label_class is None else [label_class[i] for i in rows.tolist()],
            pred_ts=j_ts,
            label_ts=label_ts[rows],
            delay=delay,
        )

    def _remember_joined(self, keys: np.ndarray) -> None:
        if len(keys) == 0:
            return
        cur = self._joined_cur
        self._joined_cur = np.insert(cur, np.searchsorted(cur, keys), keys)  # keys are sorted, unique
        if len(self._joined_cur) >= self.joined_memory // 2:
            self._joined_old, self._joined_cur = self._joined_cur, np.empty(0, np.uint64)

    def _recently_joined(self, keys: np.ndarray) -> np.ndarray:
        out = np.zeros(len(keys), dtype=bool)
        for gen in (self._joined_cur, self._joined_old):
            if len(gen):
                pos = np.minimum(np.searchsorted(gen, keys), len(gen) - 1)
                out |= gen[pos] == keys
        return out

    def _record(self, n_joined: int, delay: np.ndarray, now: float) -> None:
        if n_joined:
            self._rate = self.arrival_rate(now) + n_joined / self.rate_horizon_seconds
            self._rate_t = max(now, self._rate_t)
            d = delay[-len(self._delays) :]
            idx = (self._delay_pos + np.arange(len(d))) % len(self._delays)
            self._delays[idx] = d
            self._delay_pos = int((self._delay_pos + len(d)) % len(self._delays))

    # -- expire -------------------------------------------------------------------------------
    def expire(self, now: float) -> int:
        """Drop predictions whose event time is older than ``now - ttl_seconds``; returns how many.

        >>> buf = LabelJoinBuffer(100, ttl_seconds=10)
        >>> buf.add_predictions(["a", "b"], np.array([0.0, 5.0]), np.zeros(2))
        >>> buf.expire(now=10.0), buf.expire(now=12.0), len(buf)
        (0, 1, 1)
        """
        cutoff = float(now) - self.ttl_seconds
        if self._min_ts >= cutoff:
            return 0
        n = 0
        for level in (self._main, self._recent):
            old = np.flatnonzero(level.ts < cutoff)  # tombstones are +inf, never < cutoff
            level.kill(old)
            n += len(old)
        self._pending -= n
        self.expired += n
        lows = [float(lv.ts.min()) for lv in (self._main, self._recent) if len(lv)]
        self._min_ts = min(lows) if lows else math.inf
        self._maybe_compact()
        return n

    # -- state --------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """The whole state as a container of :mod:`stream_monitor.core.state_format`: settings,
        counters and the class table as metadata, the pending predictions as their raw arrays."""
        main, recent = self._main, self._recent
        return state_format.tagged(
            _KIND,
            _FORMAT,
            settings=[
                self.max_entries,
                self.ttl_seconds,
                self.joined_memory,
                self.evict_headroom,
                self.rate_horizon_seconds,
            ],
            counters=[
                self.added,
                self.joined,
                self.expired,
                self.evicted,
                self.duplicate_predictions,
                self.duplicate_labels,
                self.orphan_labels,
            ],
            pending=self._pending,
            dead=[main.dead, recent.dead],
            classes=list(self._classes),
            delay_pos=self._delay_pos,
            # min_ts, rate and rate_t may be infinite: an array keeps them exactly.
            clock=np.array([self._min_ts, self._rate, self._rate_t], dtype=np.float64),
            main={"keys": main.keys, "ts": main.ts, "score": main.score, "code": main.code},
            recent={"keys": recent.keys, "ts": recent.ts, "score": recent.score, "code": recent.code},
            joined_cur=self._joined_cur,
            joined_old=self._joined_old,
            delays=self._delays,
        )

    @classmethod
    @state_format.restoring
    def from_state(cls, state: StateReader | dict[str, Any], what: str = "label buffer") -> Self:
        """Rebuild from :meth:`to_state`; :class:`StateError` when it does not fit."""
        r = state if isinstance(state, StateReader) else StateReader(state, what)
        r.expect(_KIND, _FORMAT)
        settings = r.json_list("settings", (int, float))
        counters = r.json_list("counters", int)
        if len(settings) != 5 or len(counters) != 7 or min(counters, default=0) < 0:
            raise StateError(f"{r.what}: settings or counters do not fit")
        me, ttl, jm, headroom, horizon = settings
        try:
            buf = cls(
                int(me), ttl, joined_memory=int(jm), evict_headroom=headroom, rate_horizon_seconds=horizon
            )
        except ValueError as exc:
            raise StateError(f"{r.what}: {exc}") from exc
        (
            buf.added,
            buf.joined,
            buf.expired,
            buf.evicted,
            buf.duplicate_predictions,
            buf.duplicate_labels,
            buf.orphan_labels,
        ) = counters
        dead = r.json_list("dead", int)
        if len(dead) != 2:
            raise StateError(f"{r.what}: dead counts do not fit")
        buf._classes = r.strings("classes")
        buf._class_index = {c: i for i, c in enumerate(buf._classes)}
        levels = []
        for name, n_dead in zip(("main", "recent"), dead, strict=True):
            level = r.child(name)
            keys = level.array("keys", np.uint64, ndim=1)
            n = keys.size
            code = level.array("code", np.int16, shape=(n,))
            levels.append(
                _Level(
                    keys,
                    level.array("ts", np.float64, shape=(n,)),
                    level.array("score", np.float32, shape=(n,)),
                    code,
                    dead=n_dead,
                )
            )
            if not 0 <= n_dead <= n or (n and (code.min() < -1 or code.max() >= len(buf._classes))):
                raise StateError(f"{r.what}: {name} level's tombstones or class codes do not fit")
        buf._main, buf._recent = levels[0].sealed(), levels[1]
        buf._pending = r.integer("pending", min_value=0)
        if buf._pending != sum(len(lv) - lv.dead for lv in levels):
            raise StateError(f"{r.what}: {buf._pending} pending, the arrays hold another number")
        buf._joined_cur = r.array("joined_cur", np.uint64, ndim=1)
        buf._joined_old = r.array("joined_old", np.uint64, ndim=1)
        buf._delays = r.array("delays", np.float64, ndim=1)
        buf._delay_pos = r.integer("delay_pos", min_value=0)
        if buf._delays.size == 0 or buf._delay_pos >= buf._delays.size:
            raise StateError(f"{r.what}: delay ring does not fit")
        buf._min_ts, buf._rate, buf._rate_t = r.array("clock", np.float64, shape=(3,)).tolist()
        return buf

    def snapshot(self) -> bytes:
        """Exact state as bytes (:meth:`to_state` in the one state format).

        >>> buf = LabelJoinBuffer(100, 60)
        >>> buf.add_predictions(["a"], np.array([1.0]), np.array([0.5]), ["yes"])
        >>> again = LabelJoinBuffer.restore(buf.snapshot())
        >>> same = again.snapshot() == buf.snapshot()
        >>> same, again.join(["a"], np.array([2.0]), np.ones(1), None, now=2.0).pred_class
        (True, ['yes'])
        """
        return state_format.encode(self.to_state())

    @classmethod
    def restore(cls, data: bytes) -> Self:
        """Rebuild a buffer from :meth:`snapshot` bytes; raises :class:`StateError` on bad input."""
        return cls.from_state(state_format.decode(data))
