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
from stream_monitor.errors import StateError
from stream_monitor.kafka import state as state_mod
from stream_monitor.kafka.checkpoint import CheckpointDeferred, Checkpointer
from stream_monitor.kafka.clients import FatalKafkaError
from stream_monitor.kafka.signing import StateSigner
from stream_monitor.kafka.state import StateBlobs, StateCapture, StateRecord, blob_reader


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
        self.events: list[str] = []  # "record", "tombstone", "flush", in order

    def flush(self, timeout: float) -> int:
        self.flushing_threads.add(threading.current_thread().name)
        self.events.append("flush")
        return self.undelivered

    def record(self, topic: str, key: bytes, value: bytes | None) -> None:
        self.values.append((topic, key, value))  # type: ignore[arg-type]
        self.events.append("tombstone" if value is None else "record")

    def compacted(self) -> dict[bytes, bytes]:
        """The topic as compaction leaves it: the latest value of each key, tombstoned keys gone."""
        latest: dict[bytes, bytes | None] = {}
        for _, key, value in self.values:
            latest[key] = value
        return {k: v for k, v in latest.items() if v is not None}


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
        self.state_blobs = StateBlobs()
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
    # The main level's arrays that never change in place are shared, not copied; the rest is copied.
    for name in ("keys", "score", "code"):
        assert np.shares_memory(copy["main"][name], live["main"][name]) or live["main"][name].size == 0
    for level, name in [("main", "ts"), *(("recent", n) for n in ("keys", "ts", "score", "code"))]:
        assert not np.shares_memory(copy[level][name], live[level][name]) or live[level][name].size == 0


# -- incremental: blobs written once, tombstoned when no record needs them ----------------------------


def _restore(cp: Checkpointer, topic: dict[bytes, bytes], key: bytes = b"g/0") -> StateRecord:
    return StateRecord.decode(cp.signer.open(key, topic[key]), blob_reader(topic, key, cp.signer.open))


def test_only_what_changed_is_written_and_the_topic_keeps_what_recovery_needs() -> None:
    background, consumer = _Producer(), _Consumer()
    cp = _checkpointer(background, consumer)
    task = _Task()
    task.add(45_000)  # 50,000 pending: the main level's keys and scores are blobs (400 and 200 kB)

    def checkpoint() -> tuple[StateRecord, list[tuple[bytes, int]]]:
        taken = task.buffer.snapshot()
        before = len(background.values)
        assert cp.start([task], "interval")
        assert cp.collect(wait=None) is not None
        written = [(k, len(v) if v is not None else -1) for _, k, v in background.values[before:]]
        record = _restore(cp, background.compacted())
        assert record.snapshot == taken and record.digest == state_mod.digest(taken)
        assert task.checkpointed_digest == record.digest
        return record, written

    first, written = checkpoint()
    blobs = [k for k, _ in written if b"/blob/" in k]
    assert len(first.blobs) >= 2 and len(blobs) == len(first.blobs)
    assert written[-1][0] == b"g/0"  # the record after its blobs
    whole = len(state_mod.StateRecord("g", 0, {}, {}, task.buffer.snapshot()).encode())

    # Labels join: entries die (their ts changes in place); keys, scores and codes do not change,
    # so only the ts blob is new (and the old one tombstoned).
    task.join(10_000, 5_000)
    second, written = checkpoint()
    new = [k for k, size in written if b"/blob/" in k and size >= 0]
    assert len(new) == 1 and len(set(second.blobs) & set(first.blobs)) == len(first.blobs) - 1
    assert sum(size for _, size in written if size > 0) < whole / 2, (written, whole)

    # Enough new predictions to rebuild the main level: new blobs, the old ones tombstoned.
    task.add(30_000)
    third, written = checkpoint()
    tombstones = {k for k, size in written if size < 0}
    assert tombstones and all(k.startswith(b"g/0/blob/") for k in tombstones)
    # Delivered before the checkpoint ends: a later one (maybe on the loop's producer) could write
    # the same blob again, and a tombstone still queued must not land after it.
    assert background.events[-1] == "flush" and "tombstone" in background.events[-3:]
    topic = background.compacted()
    on_topic = {k.rsplit(b"/", 1)[1].decode() for k in topic if b"/blob/" in k}
    assert on_topic == set(third.blobs)  # nothing more, nothing less than recovery needs
    assert consumer.commits[-1] == [("predictions", 0, task.offset)]


def test_a_record_whose_blob_is_gone_or_altered_is_not_restored() -> None:
    background = _Producer()
    cp = _checkpointer(background)
    task = _Task()
    task.add(45_000)
    assert cp.start([task], "interval") and cp.collect(wait=None) is not None
    topic = background.compacted()
    blob = next(k for k in topic if b"/blob/" in k)
    with pytest.raises(StateError, match="not on the topic"):
        _restore(cp, {k: v for k, v in topic.items() if k != blob})
    other = next(k for k in topic if b"/blob/" in k and k != blob)
    with pytest.raises(StateError):
        _restore(cp, {**topic, blob: topic[other]})  # another blob's bytes under this one's key
    with pytest.raises(StateError, match="none were read"):
        StateRecord.decode(cp.signer.open(b"g/0", topic[b"g/0"]))


def test_a_blob_delivered_for_a_checkpoint_that_failed_is_not_written_again_nor_left_behind() -> None:
    background = _Producer(undelivered=0)
    cp = _checkpointer(background)
    task = _Task()
    task.add(45_000)
    real_flush = background.flush
    calls = [0]

    def second_flush_fails(timeout: float) -> int:
        calls[0] += 1
        return 1 if calls[0] == 2 else real_flush(timeout)  # the blobs land, the record does not

    background.flush = second_flush_fails  # type: ignore[method-assign]
    assert cp.start([task], "interval")
    with pytest.raises(CheckpointDeferred):
        cp.collect(wait=None)
    blobs_first = {k for _, k, _ in background.values if b"/blob/" in k}
    task.add(20_000)  # rebuilds the main level: the failed checkpoint's blobs are needed no more
    assert cp.start([task], "interval") and cp.collect(wait=None) is not None
    topic = background.compacted()
    assert not blobs_first & set(topic)  # tombstoned, though no delivered record ever needed them
    assert _restore(cp, topic).snapshot == task.buffer.snapshot()


_steps = st.lists(
    st.tuples(st.sampled_from(["add", "join", "checkpoint", "restart"]), st.integers(1, 40_000)),
    min_size=1,
    max_size=10,
)


def _apply(task: _Task, op: str, n: int) -> None:
    if op == "add":
        task.add(n)
    else:
        task.join(max(0, task.offset - n), min(n, 3000))


@settings(max_examples=25, deadline=None)
@given(steps=_steps)
def test_restoring_base_and_changes_ends_in_the_state_of_the_uninterrupted_run(
    steps: list[tuple[str, int]],
) -> None:
    """Any sequence of batches, checkpoints and restarts (a task restored from the compacted topic
    that replays the batches since that checkpoint, as a restored task re-reads its input): it ends
    in the uninterrupted run's state, bit for bit, and the topic holds exactly the blobs the latest
    record needs."""
    background = _Producer()
    cp = _checkpointer(background)
    task, uninterrupted = _Task(), _Task()
    since: list[tuple[str, int]] = []  # the input after the last checkpoint
    for op, n in steps:
        if op in ("add", "join"):
            _apply(task, op, n)
            _apply(uninterrupted, op, n)
            since.append((op, n))
        elif op == "checkpoint":
            dirty = task.dirty
            assert cp.start([task], "interval")
            assert (cp.collect(wait=None) is not None) == dirty  # nothing to write when clean
            topic = background.compacted()
            record = _restore(cp, topic)
            assert record.snapshot == task.buffer.snapshot()
            assert {k.rsplit(b"/", 1)[1].decode() for k in topic if b"/blob/" in k} == set(record.blobs)
            since = []
        elif task.checkpointed_digest is not None:  # kill -9 and restart from the last checkpoint
            record = _restore(cp, background.compacted())
            task = _Task()
            task.buffer = LabelJoinBuffer.restore(record.snapshot)
            task.offset = record.offsets["predictions"] or 0
            task.state_blobs = StateBlobs.of(record)
            task.checkpointed_digest = record.digest
            for replayed in since:
                _apply(task, *replayed)
    assert task.buffer.snapshot() == uninterrupted.buffer.snapshot()
