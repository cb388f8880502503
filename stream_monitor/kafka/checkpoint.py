"""The commit steps: outputs durable → state durable → offsets committed.

A checkpoint (every ``checkpoint_interval_seconds``, on revoke, on shutdown) runs numbered steps, and
a step that fails stops the ones after it:

1. flush the producer and check that every trigger and dead-letter record produced so far was
   delivered (a lost trigger must never sit behind a state record that skips its input);
2. produce each dirty task's new blobs (the large arrays its state never changes in place, written
   once: :mod:`stream_monitor.kafka.state`), flush, check delivery; then its state record (snapshot,
   the blobs it needs and the next input offsets it reflects; with a state key, tagged with its
   HMAC: :mod:`stream_monitor.kafka.signing`) to the compacted state topic, flush, check delivery;
   then tombstones for the blobs no record needs any more;
3. commit the tasks' offsets synchronously.

A crash between 2 and 3 is harmless: the restored task seeks to the snapshot's offsets, which are
ahead of the committed ones. A crash before 2 replays from the previous snapshot and re-makes the same
decisions (same ``trigger_id``). With ``exactly_once`` steps 2–3 are one Kafka transaction that also
holds the batch's triggers and dead letters (``send_offsets_to_transaction``).

**In the background** (at-least-once, the default; ``exactly_once`` keeps every step on the loop, as
its state records belong to the loop's transaction): only step 1 and taking each task's state
(:class:`~stream_monitor.kafka.state.StateCapture`, frozen: writeable arrays copied, read-only ones
shared) run on the consume loop. Encoding, compressing, signing, producing and waiting for the
delivery of step 2 run on one worker thread with a producer of its own, while the loop goes on with
the next batches; :meth:`Checkpointer.collect` then commits the offsets the state reflects (step 3)
on the loop thread, once the worker has seen every state record delivered. One background
checkpoint is in flight at a time. A checkpoint on revoke or shutdown first waits for the one in
flight (and commits it), then runs every step on the loop, so state records of a task land in the
order they were taken. Before this, a checkpoint stopped the loop for as long as the whole snapshot
took to encode, compress and deliver (BENCHMARKS.md, section 10.1).

``SM_FAULT_CRASH_AT=<point>[:<n>]`` (test-only fault injection) SIGKILLs the process the
``n``-th time it reaches ``<point>`` (``after_outputs``, ``after_state``, ``before_commit``,
``after_trigger``), so the tests can kill it at exact places.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stream_monitor.kafka.clients import FatalKafkaError, KafkaIOError, OutputProducer
from stream_monitor.kafka.signing import StateSigner
from stream_monitor.kafka.state import StateBlobs, StateCapture, StateRecord, blob_chunks, blob_key

log = logging.getLogger("stream_monitor.kafka.checkpoint")

CRASH_ENV = "SM_FAULT_CRASH_AT"
_crash_counts: dict[str, int] = {}

# Commit errors that mean "this member no longer owns these partitions": not fatal, the new owner
# restores from the state record (whose offsets are at least as far as ours).
_LOST_OWNERSHIP = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError._ASSIGNMENT_LOST,
        KafkaError.FENCED_INSTANCE_ID,
    }
)


def crash_point(name: str) -> None:
    """Test-only fault injection: SIGKILL ourselves here if ``SM_FAULT_CRASH_AT`` says so."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] >= int(nth or 1):
        log.warning("fault injection: SIGKILL at %s (#%d)", name, _crash_counts[name])
        os.kill(os.getpid(), signal.SIGKILL)


class CheckpointDeferred(KafkaIOError):
    """Outputs are not yet acknowledged (broker away): nothing is committed; try again later."""


class Checkpointable(Protocol):
    """What the checkpointer needs from a partition-task."""

    partition: int
    dirty: bool
    checkpointed_digest: str | None
    state_blobs: StateBlobs

    def changelog_key(self, group: str) -> bytes: ...

    def state_capture(self, group: str, now: float, *, freeze: bool) -> StateCapture: ...

    def state_record(self, group: str, now: float) -> StateRecord: ...

    def commit_offsets(self) -> list[TopicPartition]: ...


@dataclass
class CheckpointResult:
    """What one checkpoint did (for logs and metrics)."""

    tasks: int
    committed: int
    seconds: float
    state_bytes: int
    # Tasks whose state could not be serialised, with the error: their state and offsets were
    # left out of this checkpoint (the service rewinds them; see Service._rewind_unstorable).
    unstorable: list[tuple[Checkpointable, BaseException]] = field(default_factory=list)
    #: How long the consume loop stood still for it (all of ``seconds`` unless in the background).
    loop_seconds: float = 0.0


@dataclass
class _Slot:
    """One task's part of a checkpoint. Taken on the loop (:meth:`take`) with everything the writer
    needs, so that the writer never reads the task: in the background it runs on the worker thread,
    and live objects are read on the loop's thread only. Applied back on the loop (:meth:`apply`)."""

    task: Checkpointable  # carried along, never read off the loop
    key: bytes
    capture: StateCapture
    offsets: list[TopicPartition]
    on_topic: set[str]  # the task's blob ledger (StateBlobs), as the writer leaves it
    written: set[str]
    digest: str = ""
    needed: list[str] = field(default_factory=list)  # the blobs the produced record refers to
    new: list[str] = field(default_factory=list)  # of those, the ones this checkpoint wrote
    produced: bool = False
    settled: bool = False  # the record is delivered (or its transaction committed)
    error: BaseException | None = None  # the state could not be stored

    @classmethod
    def take(cls, task: Checkpointable, group: str, now: float, *, freeze: bool) -> _Slot:
        ledger = task.state_blobs
        return cls(
            task,
            task.changelog_key(group),
            task.state_capture(group, now, freeze=freeze),
            task.commit_offsets(),
            set(ledger.on_topic),
            set(ledger.written),
        )

    def apply(self) -> None:
        """On the loop: the task's blob ledger and, once its record is delivered, its digest."""
        self.task.state_blobs = StateBlobs(self.on_topic, self.written)
        if self.settled:
            self.task.checkpointed_digest = self.digest


@dataclass
class _Job:
    """A background checkpoint in flight."""

    future: Future[int]  # the state bytes written
    slots: list[_Slot]
    unstorable: list[tuple[Checkpointable, BaseException]]
    reason: str
    started: float
    loop_seconds: float


class Checkpointer:
    """Runs the commit steps for a set of partition-tasks."""

    def __init__(
        self,
        consumer: Consumer,
        producer: OutputProducer,
        group: str,
        state_topic: str,
        flush_timeout: float = 10.0,
        signer: StateSigner | None = None,
        background_producer: OutputProducer | None = None,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.group = group
        self.state_topic = state_topic
        self.flush_timeout = flush_timeout
        self.signer = signer if signer is not None else StateSigner()
        self.last_success = time.time()
        # The worker's own producer (it alone polls it, so its delivery reports are served on the
        # worker's thread only); None: every checkpoint runs on the loop (:meth:`run`).
        self.background_producer = background_producer
        self._worker: ThreadPoolExecutor | None = None
        if background_producer is not None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
        self._job: _Job | None = None

    @property
    def in_background(self) -> bool:
        """Whether :meth:`start` can write checkpoints off the loop thread."""
        return self._worker is not None

    @property
    def in_flight(self) -> bool:
        """Whether a background checkpoint has been started and not yet collected."""
        return self._job is not None

    def _flush_and_check(self, step: str, timeout: float, producer: OutputProducer | None = None) -> None:
        producer = self.producer if producer is None else producer
        remaining = producer.flush(timeout)
        producer.deliveries.raise_failures()
        if remaining:
            raise CheckpointDeferred(f"checkpoint step {step}: {remaining} record(s) not acknowledged yet")

    def _take(
        self, tasks: Sequence[Checkpointable], *, freeze: bool
    ) -> tuple[list[_Slot], list[tuple[Checkpointable, BaseException]]]:
        """On the loop: each task's part of this checkpoint, and the tasks whose state cannot be taken."""
        now = time.time()
        slots: list[_Slot] = []
        unstorable: list[tuple[Checkpointable, BaseException]] = []
        for task in tasks:
            try:
                slots.append(_Slot.take(task, self.group, now, freeze=freeze))
            except Exception as exc:  # one task's unstorable state must not stop the others
                unstorable.append((task, exc))
        return slots, unstorable

    def _produce_states(self, producer: OutputProducer, slots: Sequence[_Slot], timeout: float) -> int:
        """Step 2 up to the last produce: each task's new blobs, then (once those are delivered:
        a record must never land before a blob it needs) the state records; the bytes produced.
        A task whose state cannot be stored gets its ``error``. The caller flushes, commits and then
        calls :meth:`_settle`."""
        ready: list[tuple[bytes, _Slot]] = []
        size = 0
        for slot in slots:
            try:
                record, blobs = slot.capture.incremental()
                new = [d for d in blobs if d not in slot.on_topic]
                # No full-size copy that is not needed: the record's pieces (the snapshot compressed
                # in slices) are joined once, behind the tag.
                chunks = record.encode_chunks()
                value = self.signer.seal(slot.key, chunks)
                del chunks
                for d in new:  # one sealed blob at a time (librdkafka copies each value)
                    name = blob_key(slot.key, d)
                    blob = self.signer.seal(name, blob_chunks(blobs[d], d))
                    slot.written.add(d)  # on the topic, maybe: a tombstone later if unneeded
                    producer.record(self.state_topic, name, blob)
                    size += len(blob)
                    del blob
            except KafkaIOError:
                raise  # the broker's failure, not the state's
            except Exception as exc:  # one task's unstorable state must not stop the others
                slot.error = exc
                continue
            slot.digest, slot.needed, slot.new = record.digest, record.blobs, new
            ready.append((value, slot))
            del record, blobs
        if not producer.transactional and any(slot.new for _, slot in ready):
            self._flush_and_check("2 (state blobs)", timeout, producer)
            for _, slot in ready:
                slot.on_topic.update(slot.new)
        for value, slot in ready:
            size += len(value)
            producer.record(self.state_topic, slot.key, value)
            slot.produced = True
        return size

    def _settle(self, producer: OutputProducer, slots: Sequence[_Slot], timeout: float) -> None:
        """After the state records are delivered (or their transaction committed): a tombstone for
        each blob no latest record needs, so compaction drops it.

        Outside a transaction the tombstones are waited for: the next checkpoint may go out on the
        other producer (the worker's or the loop's) and write the same blob again, if its content
        came back; a tombstone still queued here must not land after it."""
        tombstones = 0
        for slot in slots:
            if not slot.produced:
                continue
            needed = set(slot.needed)
            for gone in sorted(slot.written - needed):
                producer.record(self.state_topic, blob_key(slot.key, gone), None)
                tombstones += 1
            slot.on_topic, slot.written, slot.settled = set(needed), set(needed), True
        if tombstones and not producer.transactional:
            self._flush_and_check("2 (tombstones)", timeout, producer)

    def run(
        self, tasks: Sequence[Checkpointable], reason: str, timeout: float | None = None
    ) -> CheckpointResult:
        """Checkpoint the dirty ``tasks``; raise :class:`CheckpointDeferred` or :class:`FatalKafkaError`."""
        started = time.perf_counter()
        flush_timeout = self.flush_timeout if timeout is None else timeout
        # The background checkpoint in flight lands (and is committed) before this one is taken, so
        # a task's state records reach the topic in the order they were taken.
        drained = self._drain()
        dirty = [t for t in tasks if t.dirty]
        if not dirty:
            self.last_success = time.time()
            return CheckpointResult(0, 0, 0.0, 0, drained)
        transactional = self.producer.transactional
        if not transactional:
            # 1. triggers and dead letters are durable before any state or offset moves past them.
            self._flush_and_check("1 (outputs)", flush_timeout)
            crash_point("after_outputs")
        # 2. state records, tagged with the offsets they reflect (and the blobs they need).
        slots, unstorable = self._take(dirty, freeze=False)
        try:
            size = self._produce_states(self.producer, slots, flush_timeout)
            unstorable += [(slot.task, slot.error) for slot in slots if slot.error is not None]
            offsets = [tp for slot in slots if slot.produced for tp in slot.offsets]
            if transactional:
                self._commit_transaction(offsets)
                self._settle(self.producer, slots, flush_timeout)  # tombstones: in the next transaction
            else:
                self._flush_and_check("2 (state)", flush_timeout)
                crash_point("after_state")
                self._settle(self.producer, slots, flush_timeout)
                # 3. offsets.
                crash_point("before_commit")
                self._commit(offsets)
        finally:
            for slot in slots:
                slot.apply()
        failed = {id(task) for task, _ in unstorable}
        for task in dirty:
            if id(task) not in failed:
                task.dirty = False
        self.last_success = time.time()
        seconds = time.perf_counter() - started
        log.debug(
            "checkpoint (%s): %d task(s), %d offsets, %d state bytes in %.3fs",
            reason,
            len(dirty),
            len(offsets),
            size,
            seconds,
        )
        return CheckpointResult(len(dirty), len(offsets), seconds, size, drained + unstorable, seconds)

    # -- in the background ----------------------------------------------------------------------
    def start(self, tasks: Sequence[Checkpointable], reason: str) -> bool:
        """Begin a background checkpoint of the dirty ``tasks``: step 1 and taking their state here,
        the rest on the worker. False (and nothing done) while the previous one is still in flight.

        Raises :class:`CheckpointDeferred` (outputs not acknowledged: nothing taken) or
        :class:`FatalKafkaError`. Call :meth:`collect` on later turns of the loop."""
        if self._worker is None:
            raise RuntimeError("this checkpointer has no background producer")
        if self._job is not None:
            return False
        started = time.perf_counter()
        dirty = [t for t in tasks if t.dirty]
        if not dirty:
            self.last_success = time.time()
            return True
        # 1. outputs first, as on the loop: usually already delivered (they go out as they are made).
        self._flush_and_check("1 (outputs)", self.flush_timeout)
        crash_point("after_outputs")
        slots, unstorable = self._take(dirty, freeze=True)
        for slot in slots:
            # Clean as of this capture: a batch processed while the worker writes makes it dirty
            # again, and a write that fails makes it dirty in collect().
            slot.task.dirty = False
        future = self._worker.submit(self._write, slots)
        loop_seconds = time.perf_counter() - started
        self._job = _Job(future, slots, unstorable, reason, started, loop_seconds)
        return True

    def _write(self, slots: list[_Slot]) -> int:
        """Step 2 on the worker thread (it reads the slots, never a task): encode, compress, sign
        and produce; wait for delivery; the bytes written."""
        producer = self.background_producer
        assert producer is not None
        size = self._produce_states(producer, slots, self.flush_timeout)
        self._flush_and_check("2 (state)", self.flush_timeout, producer)
        crash_point("after_state")
        self._settle(producer, slots, self.flush_timeout)
        for slot in slots:
            slot.capture.state = {}  # the frozen copy is not needed any more
        return size

    def collect(self, wait: float | None = 0.0) -> CheckpointResult | None:
        """On the loop thread: once the background checkpoint's state records are delivered, commit
        the offsets they reflect (step 3). None while none is in flight or (after ``wait`` seconds;
        ``None``: as long as it takes) it is not done yet.

        Raises :class:`CheckpointDeferred` when step 2 did not complete (its tasks are dirty again)
        or :class:`FatalKafkaError`."""
        job = self._job
        if job is None:
            return None
        if wait is not None and not job.future.done():
            if wait <= 0:
                return None
            try:
                job.future.exception(timeout=wait)
            except TimeoutError:
                return None
        self._job = None
        try:
            size = job.future.result()
        except BaseException:
            for slot in job.slots:
                slot.apply()
                slot.task.dirty = True
            raise
        for slot in job.slots:
            slot.apply()
        unstorable = [(slot.task, slot.error) for slot in job.slots if slot.error is not None]
        offsets = [tp for slot in job.slots if slot.produced for tp in slot.offsets]
        crash_point("before_commit")
        self._commit(offsets)
        for task, _ in unstorable:
            task.dirty = True
        self.last_success = time.time()
        seconds = time.perf_counter() - job.started
        log.debug(
            "checkpoint (%s, background): %d task(s), %d offsets, %d state bytes in %.3fs (loop: %.3fs)",
            job.reason,
            len(job.slots),
            len(offsets),
            size,
            seconds,
            job.loop_seconds,
        )
        return CheckpointResult(
            len(job.slots) + len(job.unstorable),
            len(offsets),
            seconds,
            size,
            job.unstorable + unstorable,
            job.loop_seconds,
        )

    def forget(self) -> None:
        """Partitions were lost: the checkpoint in flight is not committed (its records may land;
        they are consistent snapshots, and the next owner's own records follow them)."""
        if self._job is not None:
            log.warning("a background checkpoint in flight is not committed: partitions were lost")
        self._job = None

    def _drain(self) -> list[tuple[Checkpointable, BaseException]]:
        """Wait for the background checkpoint in flight (its worker gives up after ``flush_timeout``)
        and commit it; its unstorable tasks."""
        if self._job is None:
            return []
        try:
            result = self.collect(wait=None)
        except CheckpointDeferred as exc:
            log.warning("background checkpoint not completed (%s): its tasks are written now", exc)
            return []
        return [] if result is None else result.unstorable

    def close(self) -> None:
        """Stop the worker (after the checkpoint in flight, whose result is then dropped)."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)

    def _commit(self, offsets: list[TopicPartition]) -> None:
        if not offsets:
            return
        delay = 0.2
        for attempt in range(1, 6):
            try:
                result = self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if not isinstance(err, KafkaError):
                    raise FatalKafkaError(f"commit failed: {exc}") from exc
                if err.code() in _LOST_OWNERSHIP:
                    log.warning(
                        "commit skipped (%s): partitions are being reassigned; the state "
                        "record carries the offsets",
                        err.name(),
                    )
                    return
                if err.fatal() or not err.retriable() or attempt == 5:
                    raise FatalKafkaError(f"commit of {_describe(offsets)} failed: {err.str()}") from exc
                log.warning("commit attempt %d failed (%s), retrying in %.1fs", attempt, err.str(), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            failed = [tp for tp in result or [] if tp.error is not None]
            if not failed:
                return
            raise FatalKafkaError(f"commit failed for {_describe(failed)}: {failed[0].error}")

    def _commit_transaction(self, offsets: list[TopicPartition]) -> None:
        p = self.producer.producer
        try:
            if offsets:
                p.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), 30)
            crash_point("before_commit")
            p.commit_transaction(60)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            with contextlib.suppress(KafkaException):
                p.abort_transaction(30)
            raise FatalKafkaError(
                f"transaction commit failed ({err}); restart replays from the last committed transaction"
            ) from exc
        self.producer.deliveries.raise_failures()
        p.begin_transaction()


def _describe(tps: Sequence[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in tps[:6])
