"""Checkpoints written in the background (kafka/checkpoint.py): the state as it was taken, whatever
the loop does to the live state meanwhile; offsets committed only after the state record is
delivered; one in flight at a time; a checkpoint on the loop waits for it first.

Unit tests with in-memory producer and consumer fakes; the same path on the real broker is
``tests/test_checkpoint_background_kafka.py`` and the kill -9 tests of ``test_service_kafka.py``.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_monitor.core import state_format
from stream_monitor.core.labels import LabelJoinBuffer
from stream_monitor.kafka import state as state_mod
from stream_monitor.kafka.checkpoint import CheckpointDeferred, Checkpointer
from stream_monitor.kafka.clients import FatalKafkaError
from stream_monitor.kafka.signing import StateSigner
from stream_monitor.kafka.state import StateCapture, StateRecord


class _Deliveries:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def raise_failures(self) -> None:
        if self.failures:
            raise FatalKafkaError(f"{len(self.failures)} record(s) were not delivered")


class _Producer:
    """Records what is produced; ``undelivered`` records stay unacknowledged at every flush."""

    transactional = False

    def __init__(self, undelivered: int = 0) -> None:
        self.values: list[tuple[str, bytes, bytes]] = []
        self.deliveries = _Deliveries()
        self.undelivered = undelivered
        self.flushing_threads: set[str] = set()

    def flush(self, timeout: float) -> int:
        self.flushing_threads.add(threading.current_thread().name)
        return self.undelivered

    def record(self, topic: str, key: bytes, value: bytes) -> None:
        self.values.append((topic, key, value))


class _Consumer:
    def __init__(self) -> None:
        self.commits: list[list[tuple[str, int, int]]] = []

    def commit(self, offsets: list[Any], asynchronous: bool) -> list[Any]:
        assert not asynchronous
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])
        return []


class _Task:
    """A partition-task whose state is a real label buffer (the part a checkpoint mostly writes)."""

    partition = 0

    def __init__(self, freeze: bool = True) -> None:
        self.buffer = LabelJoinBuffer(1_000_000, 3600.0)
        self.offset = 0
        self.dirty = True
        self.checkpointed_digest: str | None = None
        self.freeze = freeze
        self.add(5000)

    def add(self, n: int) -> None:
        ids = [f"e{self.offset + i}" for i in range(n)]
        ts = 1000.0 + np.arange(self.offset, self.offset + n, dtype=np.float64)
        self.buffer.add_predictions(ids, ts, np.linspace(0, 1, n), None)
        self.offset += n
        self.dirty = True

    def join(self, first: int, n: int) -> None:
        ids = [f"e{i}" for i in range(first, first + n)]
        self.buffer.join(ids, np.full(n, 2000.0), np.ones(n), None, now=2000.0)
        self.dirty = True

    def changelog_key(self, group: str) -> bytes:
        return state_mod.state_key(group, self.partition)

    def state_capture(self, group: str, now: float, *, freeze: bool) -> StateCapture:
        state = self.buffer.to_state()
        return StateCapture.of(
            group, 0, {"predictions": self.offset}, {}, state, now, freeze=freeze and self.freeze
        )

    def state_record(self, group: str, now: float) -> StateRecord:
        return self.state_capture(group, now, freeze=False).record()

    def commit_offsets(self) -> list[Any]:
        from confluent_kafka import TopicPartition

        return [TopicPartition("predictions", 0, self.offset)]


def _checkpointer(background: _Producer, consumer: _Consumer | None = None) -> Checkpointer:
    signer = StateSigner([b"k" * 32])
    outputs: Any = _Producer()
    cons: Any = consumer or _Consumer()
    return Checkpointer(cons, outputs, "g", "state", signer=signer, background_producer=background)  # type: ignore[arg-type]


def _block_worker(cp: Checkpointer) -> threading.Event:
    """Hold the worker thread until the returned event is set (the loop runs on meanwhile)."""
    gate = threading.Event()
    assert cp._worker is not None
    cp._worker.submit(gate.wait)
    return gate


def _record(cp: Checkpointer, value: bytes, key: bytes = b"g/0") -> StateRecord:
    return StateRecord.decode(cp.signer.open(key, value))


@pytest.mark.parametrize("freeze", [True, False], ids=["frozen", "control-not-frozen"])
def test_the_record_holds_the_state_as_taken_while_the_loop_changes_it(freeze: bool) -> None:
    background, consumer = _Producer(), _Consumer()
    cp = _checkpointer(background, consumer)
    task = _Task(freeze=freeze)
    taken = task.buffer.snapshot()
    gate = _block_worker(cp)
    assert cp.start([task], "interval") and cp.in_flight
    assert not task.dirty  # clean as of the capture
    # The loop goes on while the worker has not written anything yet: joins kill entries in place
    # (ts set to +inf), new predictions rebuild the levels.
    task.join(0, 2000)
    task.add(3000)
    assert task.dirty
    gate.set()
    result = cp.collect(wait=None)
    assert result is not None and not cp.in_flight
    [(topic, key, value)] = background.values
    record = _record(cp, value, key)
    assert topic == "state" and record.offsets == {"predictions": 5000}
    if freeze:
        assert record.snapshot == taken
        assert task.checkpointed_digest == state_mod.digest(taken)
        assert consumer.commits == [[("predictions", 0, 5000)]]  # the offsets as taken
        assert result.loop_seconds <= result.seconds
    else:  # the control: without freezing, the worker encodes what the loop has changed since
        assert record.snapshot != taken
    # The worker alone polls its producer (the loop never serves its delivery reports).
    threads = background.flushing_threads
    assert threads and all(name.startswith("checkpoint") for name in threads)


def test_offsets_are_committed_only_after_the_state_record_is_delivered() -> None:
    background, consumer = _Producer(undelivered=1), _Consumer()
    cp = _checkpointer(background, consumer)
    task = _Task()
    assert cp.start([task], "interval")
    with pytest.raises(CheckpointDeferred, match="not acknowledged"):
        cp.collect(wait=None)
    assert consumer.commits == [] and task.dirty and not cp.in_flight  # written again next time
    background.undelivered = 0
    assert cp.start([task], "interval")
    assert cp.collect(wait=None) is not None
    assert consumer.commits == [[("predictions", 0, 5000)]]


def test_a_failed_delivery_is_fatal_and_commits_nothing() -> None:
    background, consumer = _Producer(), _Consumer()
    background.deliveries.failures.append("state [0]: broker said no")
    cp = _checkpointer(background, consumer)
    task = _Task()
    assert cp.start([task], "interval")
    with pytest.raises(FatalKafkaError):
        cp.collect(wait=None)
    assert consumer.commits == [] and task.dirty


def test_one_in_flight_at_a_time_and_a_checkpoint_on_the_loop_waits_for_it() -> None:
    background, consumer = _Producer(), _Consumer()
    cp = _checkpointer(background, consumer)
    task = _Task()
    gate = _block_worker(cp)
    assert cp.start([task], "interval")
    task.add(100)
    assert cp.start([task], "interval") is False  # still in flight: nothing taken
    assert cp.collect() is None  # not done: the loop does not wait
    gate.set()
    # A revoke: the one in flight lands and is committed first, then the rest on the loop.
    result = cp.run([task], "revoke")
    assert not cp.in_flight and result.tasks == 1 and not task.dirty
    assert consumer.commits == [[("predictions", 0, 5000)], [("predictions", 0, 5100)]]
    assert [_record(cp, v).offsets for _, _, v in background.values] == [{"predictions": 5000}]
    outputs: Any = cp.producer
    assert [_record(cp, v).offsets for _, _, v in outputs.values] == [{"predictions": 5100}]


def test_lost_partitions_leave_the_checkpoint_in_flight_uncommitted() -> None:
    background, consumer = _Producer(), _Consumer()
    cp = _checkpointer(background, consumer)
    task = _Task()
    assert cp.start([task], "interval")
    cp.forget()
    assert cp.collect(wait=None) is None and consumer.commits == []
    cp.close()


def test_a_state_that_cannot_be_taken_is_reported_and_the_others_are_written() -> None:
    class _Broken(_Task):
        partition = 1

        def state_capture(self, group: str, now: float, *, freeze: bool) -> StateCapture:
            raise ValueError("cannot be stored")

    background, consumer = _Producer(), _Consumer()
    cp = _checkpointer(background, consumer)
    good, bad = _Task(), _Broken()
    assert cp.start([good, bad], "interval")
    result = cp.collect(wait=None)
    assert result is not None and [t for t, _ in result.unstorable] == [bad]
    assert [k for _, k, _ in background.values] == [b"g/0"]
    assert consumer.commits == [[("predictions", 0, 5000)]]


_ops = st.lists(
    st.tuples(st.sampled_from(["add", "join", "expire"]), st.integers(1, 3000)), min_size=1, max_size=12
)


@settings(max_examples=40, deadline=None)
@given(before=_ops, after=_ops)
def test_frozen_state_encodes_as_taken_whatever_happens_after(
    before: list[tuple[str, int]], after: list[tuple[str, int]]
) -> None:
    buf = LabelJoinBuffer(20_000, 500.0)
    clock = [0.0]
    made = [0]

    def apply(ops: list[tuple[str, int]]) -> None:
        for op, n in ops:
            clock[0] += n / 10
            if op == "add":
                ids = [f"e{made[0] + i}" for i in range(n)]
                buf.add_predictions(ids, clock[0] + np.zeros(n), np.full(n, 0.5), None)
                made[0] += n
            elif op == "join":
                ids = [f"e{i}" for i in range(max(0, made[0] - 2 * n), made[0], 2)]
                buf.join(ids, np.full(len(ids), clock[0]), np.ones(len(ids)), None, now=clock[0])
            else:
                buf.expire(clock[0])

    apply(before)
    live = buf.to_state()
    taken = state_format.encode(live)
    copy = state_format.frozen(live)
    assert state_format.encode(copy) == taken
    apply(after)
    assert state_format.encode(copy) == taken
    # The large arrays that never change in place are shared, not copied.
    for level in ("main", "recent"):
        for name in ("keys", "score", "code"):
            assert np.shares_memory(copy[level][name], live[level][name]) or live[level][name].size == 0
        assert not np.shares_memory(copy[level]["ts"], live[level]["ts"]) or live[level]["ts"].size == 0
