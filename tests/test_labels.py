"""Label join: oracle = a plain-Python dict model of the same semantics; hash = a pure-Python reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_monitor.core.labels import LabelJoinBuffer, hash_event_ids
from stream_monitor.errors import StateError

M64 = (1 << 64) - 1


def reference_hash(s: str) -> int:
    """The documented algorithm, one id at a time in plain Python integers."""
    mul, seed = 0xBF58476D1CE4E5B9, 0x9E3779B97F4A7C15
    cps = [ord(c) for c in s]
    if len(cps) % 2:
        cps.append(0)
    h = ((len(s) + seed) * mul) & M64
    h ^= h >> 31
    for j in range(0, len(cps), 2):
        w = cps[j] | (cps[j + 1] << 32)
        h = ((h ^ w) * mul) & M64
        h ^= h >> 31
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & M64
    h ^= h >> 33
    return h


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(exclude_characters="\x00"), max_size=40), max_size=20))
def test_hash_matches_reference_and_ignores_batch(ids: list[str]) -> None:
    keys = hash_event_ids(ids).tolist()
    assert keys == [reference_hash(s) for s in ids]
    for s, k in zip(ids, keys, strict=True):
        assert int(hash_event_ids([s])[0]) == k


def test_hash_known_values_are_stable() -> None:
    # Pinned: a change here breaks every stored snapshot.
    assert hash_event_ids(["", "a", "evt-000001"]).tolist() == [
        reference_hash(s) for s in ["", "a", "evt-000001"]
    ]
    assert int(hash_event_ids(["a"])[0]) == reference_hash("a")


def test_hash_no_collisions_on_sequential_ids() -> None:
    ids = [f"evt-{i}" for i in range(300_000)] + [f"{i:08x}-{i % 7}" for i in range(100_000)]
    assert len(np.unique(hash_event_ids(ids))) == len(ids)


def _add(
    buf: LabelJoinBuffer, ids: list[str], ts: list[float], classes: list[str | None] | None = None
) -> None:
    buf.add_predictions(ids, np.array(ts, dtype=float), np.arange(len(ids), dtype=float) / 10, classes)


def test_join_in_random_order_returns_matching_rows_and_delays() -> None:
    rng = np.random.default_rng(1)
    n = 5000
    ids = [f"p{i}" for i in range(n)]
    ts = rng.uniform(0, 1000, n)
    score = rng.random(n)
    classes = [str(i % 3) for i in range(n)]
    buf = LabelJoinBuffer(max_entries=10_000, ttl_seconds=1e6)
    for lo in range(0, n, 700):  # several batches, so both levels are used
        buf.add_predictions(
            ids[lo : lo + 700], ts[lo : lo + 700], score[lo : lo + 700], classes[lo : lo + 700]
        )
    order = rng.permutation(n)
    total = 0
    for chunk in np.array_split(order, 7):
        lab_ids = [ids[i] for i in chunk]
        lab_ts = ts[chunk] + rng.uniform(0, 50, len(chunk))
        lab = (chunk % 2).astype(float)
        j = buf.join(lab_ids, lab_ts, lab, [str(x) for x in chunk % 2], now=2000.0)
        assert j.event_id == lab_ids
        assert j.index.tolist() == list(range(len(chunk)))
        np.testing.assert_array_equal(j.score, score[chunk].astype(np.float32))
        np.testing.assert_array_equal(j.pred_ts, ts[chunk])
        np.testing.assert_array_equal(j.delay, lab_ts - ts[chunk])
        np.testing.assert_array_equal(j.label, lab)
        assert j.pred_class == [classes[i] for i in chunk]
        assert j.label_class == [str(x) for x in chunk % 2]
        total += len(j)
    assert total == n == buf.joined == buf.added
    assert len(buf) == 0 and buf.orphan_labels == 0 and buf.duplicate_labels == 0


def test_duplicates_and_orphans() -> None:
    buf = LabelJoinBuffer(100, 100)
    _add(buf, ["a", "b", "a"], [1, 2, 3])
    _add(buf, ["b", "c"], [4, 5])
    assert (buf.duplicate_predictions, len(buf), buf.added) == (2, 3, 3)
    j = buf.join(["a", "x", "a"], np.array([10.0, 10, 10]), np.ones(3), None, now=10)
    assert j.event_id == ["a"] and j.pred_ts.tolist() == [1.0]  # the first "a" was kept
    assert (buf.duplicate_labels, buf.orphan_labels) == (1, 1)
    j = buf.join(["a", "b"], np.array([11.0, 11]), np.ones(2), None, now=11)
    assert j.event_id == ["b"]
    assert (buf.duplicate_labels, buf.orphan_labels, buf.joined, len(buf)) == (2, 1, 2, 1)


def test_duplicate_memory_is_bounded() -> None:
    buf = LabelJoinBuffer(10_000, 1e9, joined_memory=100)
    ids = [f"e{i}" for i in range(1000)]
    for i in range(0, 1000, 10):
        _add(buf, ids[i : i + 10], [float(i)] * 10)
        buf.join(ids[i : i + 10], np.full(10, float(i)), np.ones(10), None, now=float(i))
    buf.join(ids[-50:], np.zeros(50), np.zeros(50), None, now=1000.0)  # the last 50 are remembered
    assert buf.duplicate_labels == 50
    buf.join(ids[:10], np.zeros(10), np.zeros(10), None, now=1000.0)  # long forgotten
    assert buf.orphan_labels == 10
    assert len(buf._joined_cur) + len(buf._joined_old) <= 100


def test_ttl_expiry_with_now() -> None:
    buf = LabelJoinBuffer(100, ttl_seconds=60)
    _add(buf, ["a", "b", "c"], [0, 30, 59])
    assert buf.expire(now=60.0) == 0  # ts == now - ttl is not older than the ttl
    assert buf.expire(now=60.5) == 1 and len(buf) == 2
    # "b" is past its ttl at now=95 but not yet swept: the join expires it, the label is an orphan.
    j = buf.join(["b", "c", "a"], np.full(3, 95.0), np.ones(3), None, now=95.0)
    assert j.event_id == ["c"]
    assert (buf.expired, buf.orphan_labels, buf.joined, len(buf)) == (2, 2, 1, 0)
    assert buf.expire(now=1e9) == 0


def test_eviction_oldest_first() -> None:
    buf = LabelJoinBuffer(max_entries=5, ttl_seconds=1e9, evict_headroom=0.0)
    _add(buf, ["a", "b", "c", "d"], [10, 1, 7, 3])
    _add(buf, ["e", "f", "g"], [2, 8, 9])
    assert (len(buf), buf.evicted) == (5, 2)
    j = buf.join(list("abcdefg"), np.full(7, 20.0), np.ones(7), None, now=20.0)
    assert j.event_id == ["a", "c", "d", "f", "g"]  # b (1) and e (2) were the oldest


def test_eviction_headroom_at_scale_matches_reference() -> None:
    rng = np.random.default_rng(3)
    buf = LabelJoinBuffer(max_entries=20_000, ttl_seconds=1e9)  # headroom 1/16: evicts down to 18_750
    model = Model(20_000, 1e9, headroom=1 / 16)
    ts = rng.permutation(50_000).astype(float)
    ids = [f"k{i}" for i in range(50_000)]
    for lo in range(0, 50_000, 5000):
        buf.add_predictions(ids[lo : lo + 5000], ts[lo : lo + 5000], np.zeros(5000))
        model.add(ids[lo : lo + 5000], ts[lo : lo + 5000].tolist())
        assert len(buf) == len(model.pending) <= 20_000
    assert buf.evicted == model.c["evicted"] and buf.added == 50_000 == len(buf) + buf.evicted
    j = buf.join(ids, ts, np.zeros(50_000), None, now=0.0)
    assert sorted(j.event_id) == sorted(model.pending)


def test_bytes_per_pending_prediction() -> None:
    buf = LabelJoinBuffer(max_entries=200_000, ttl_seconds=1e9)
    ids = [f"id-{i}" for i in range(200_000)]
    for lo in range(0, 200_000, 10_000):
        buf.add_predictions(ids[lo : lo + 10_000], np.arange(lo, lo + 10_000, dtype=float), np.zeros(10_000))
    assert len(buf) == 200_000
    assert buf.nbytes / len(buf) == 22.0
    buf.join(ids[::3], np.zeros(len(ids[::3])), np.zeros(len(ids[::3])), None, now=0.0)
    assert buf.nbytes / len(buf) <= 44.0


def _drive(buf: LabelJoinBuffer, rng: np.random.Generator, steps: int, t0: float) -> list[tuple]:
    out: list[tuple] = []
    for step in range(steps):
        t = t0 + step * 10.0
        ids = [f"e{int(x)}" for x in rng.integers(0, 3000, 200)]
        buf.add_predictions(
            ids, t + rng.uniform(-5, 0, 200), rng.random(200), [str(x % 4) for x in range(200)]
        )
        lab = [f"e{int(x)}" for x in rng.integers(0, 3000, 150)]
        j = buf.join(lab, np.full(150, t), rng.integers(0, 2, 150).astype(float), ["0"] * 150, now=t)
        out.append((j.event_id, j.score.tolist(), j.delay.tolist(), j.pred_class, buf.expire(t + 1)))
    return out


def test_snapshot_round_trip_mid_stream() -> None:
    buf = LabelJoinBuffer(max_entries=1500, ttl_seconds=400.0, joined_memory=500)
    _drive(buf, np.random.default_rng(5), 40, 0.0)
    data = buf.snapshot()
    copy = LabelJoinBuffer.restore(data)
    assert copy.snapshot() == data
    a = _drive(buf, np.random.default_rng(6), 40, 400.0)
    b = _drive(copy, np.random.default_rng(6), 40, 400.0)
    assert a == b
    assert copy.snapshot() == buf.snapshot()
    assert copy.arrival_rate(900.0) == buf.arrival_rate(900.0) > 0
    assert copy.delay_p50 == buf.delay_p50


def test_restore_rejects_garbage() -> None:
    with pytest.raises(StateError):
        LabelJoinBuffer.restore(b"")
    with pytest.raises(StateError):
        LabelJoinBuffer.restore(LabelJoinBuffer().snapshot()[:-1] + b"\x00\x00")


def test_arrival_rate_and_labels_since() -> None:
    buf = LabelJoinBuffer(1000, 1e9, rate_horizon_seconds=60.0)
    assert buf.arrival_rate(0.0) == 0.0
    _add(buf, [str(i) for i in range(30)], [0.0] * 30)
    buf.join([str(i) for i in range(30)], np.zeros(30), np.zeros(30), None, now=100.0)
    assert buf.arrival_rate(100.0) == pytest.approx(30 / 60)
    assert buf.arrival_rate(160.0) == pytest.approx(30 / 60 / math.e)
    assert buf.labels_since(10) == 20 and buf.joined_total == 30


class Model:
    """Brute-force reference: dicts and sets, one event at a time."""

    def __init__(self, max_entries: int, ttl: float, headroom: float = 0.0) -> None:
        self.max_entries, self.ttl, self.headroom = max_entries, ttl, headroom
        self.pending: dict[str, float] = {}
        self.joined_ids: set[str] = set()
        self.c = dict(added=0, joined=0, expired=0, evicted=0, dup_pred=0, dup_lab=0, orphan=0)

    def add(self, ids: list[str], ts: list[float]) -> None:
        for i, t in zip(ids, ts, strict=True):
            if i in self.pending:
                self.c["dup_pred"] += 1
            else:
                self.pending[i] = t
                self.c["added"] += 1
        excess = len(self.pending) - self.max_entries
        if excess > 0:
            k = min(len(self.pending), excess + int(self.headroom * self.max_entries))
            for i in sorted(self.pending, key=self.pending.__getitem__)[:k]:
                del self.pending[i]
            self.c["evicted"] += k

    def join(self, ids: list[str], now: float) -> list[tuple[str, float]]:
        out = []
        for i in ids:
            t = self.pending.pop(i, None)
            if t is not None and t < now - self.ttl:
                self.c["expired"] += 1
                t = None
            if t is not None:
                self.c["joined"] += 1
                self.joined_ids.add(i)
                out.append((i, t))
            elif i in self.joined_ids:
                self.c["dup_lab"] += 1
            else:
                self.c["orphan"] += 1
        return out

    def expire(self, now: float) -> int:
        old = [i for i, t in self.pending.items() if t < now - self.ttl]
        for i in old:
            del self.pending[i]
        self.c["expired"] += len(old)
        return len(old)


ID = st.sampled_from([f"id{i}" for i in range(25)])
OP = st.one_of(
    st.tuples(st.just("add"), st.lists(ID, max_size=12)),
    st.tuples(st.just("join"), st.lists(ID, max_size=12)),
    st.tuples(st.just("expire"), st.just([])),
)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(OP, max_size=30),
    max_entries=st.integers(1, 15),
    ttl=st.sampled_from([5.0, 40.0, 1e9]),
    headroom=st.sampled_from([0.0, 0.25]),
)
def test_any_interleaving_matches_the_reference_model(
    ops: list, max_entries: int, ttl: float, headroom: float
) -> None:
    buf = LabelJoinBuffer(max_entries, ttl, evict_headroom=headroom, joined_memory=10_000)
    model = Model(max_entries, ttl, headroom)
    counter = 0
    for step, (kind, ids) in enumerate(ops):
        now = float(step * 3)
        if kind == "add":
            # distinct, non-monotonic event times so "oldest" is unambiguous
            ts = [now - ((counter + k) * 7919 % 101) / 10 for k in range(len(ids))]
            counter += len(ids)
            buf.add_predictions(ids, np.array(ts), np.zeros(len(ids)))
            model.add(ids, ts)
        elif kind == "join":
            j = buf.join(ids, np.full(len(ids), now), np.ones(len(ids)), None, now=now)
            expected = model.join(ids, now)
            assert list(zip(j.event_id, j.pred_ts.tolist(), strict=True)) == expected
            assert [ids[i] for i in j.index.tolist()] == j.event_id  # every pair has matching ids
            np.testing.assert_array_equal(j.delay, now - j.pred_ts)
        else:
            assert buf.expire(now) == model.expire(now)
        c = model.c
        got = (buf.added, buf.joined, buf.expired, buf.evicted)
        assert got == (c["added"], c["joined"], c["expired"], c["evicted"])
        assert (buf.duplicate_predictions, buf.duplicate_labels, buf.orphan_labels) == (
            c["dup_pred"],
            c["dup_lab"],
            c["orphan"],
        )
        assert len(buf) == len(model.pending)
        assert buf.joined + len(buf) + buf.expired + buf.evicted == buf.added
