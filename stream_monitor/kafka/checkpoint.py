"""The commit steps: outputs durable → state durable → offsets committed.

A checkpoint (every ``checkpoint_interval_seconds``, on revoke, on shutdown) runs numbered steps, and
a step that fails stops the ones after it:

1. flush the producer and check that every trigger and dead-letter record produced so far was
   delivered (a lost trigger must never sit behind a state record that skips its input);
2. produce each dirty task's state record (snapshot + the next input offsets it reflects; with a
   state key, tagged with its HMAC: :mod:`stream_monitor.kafka.signing`) to the compacted state
   topic, flush, check delivery;
3. commit the tasks' offsets synchronously.

A crash between 2 and 3 is harmless: the restored task seeks to the snapshot's offsets, which are
ahead of the committed ones. A crash before 2 replays from the previous snapshot and re-makes the same
decisions (same ``trigger_id``). With ``exactly_once`` steps 2–3 are one Kafka transaction that also
holds the batch's triggers and dead letters (``send_offsets_to_transaction``).

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
from dataclasses import dataclass, field
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stream_monitor.kafka.clients import FatalKafkaError, KafkaIOError, OutputProducer
from stream_monitor.kafka.signing import StateSigner
from stream_monitor.kafka.state import StateRecord

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

    def changelog_key(self, group: str) -> bytes: ...

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
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.group = group
        self.state_topic = state_topic
        self.flush_timeout = flush_timeout
        self.signer = signer if signer is not None else StateSigner()
        self.last_success = time.time()

    def _flush_and_check(self, step: str, timeout: float) -> None:
        remaining = self.producer.flush(timeout)
        self.producer.deliveries.raise_failures()
        if remaining:
            raise CheckpointDeferred(f"checkpoint step {step}: {remaining} record(s) not acknowledged yet")

    def run(
        self, tasks: Sequence[Checkpointable], reason: str, timeout: float | None = None
    ) -> CheckpointResult:
        """Checkpoint the dirty ``tasks``; raise :class:`CheckpointDeferred` or :class:`FatalKafkaError`."""
        started = time.perf_counter()
        flush_timeout = self.flush_timeout if timeout is None else timeout
        dirty = [t for t in tasks if t.dirty]
        if not dirty:
            self.last_success = time.time()
            return CheckpointResult(0, 0, 0.0, 0)
        transactional = self.producer.transactional
        if not transactional:
            # 1. triggers and dead letters are durable before any state or offset moves past them.
            self._flush_and_check("1 (outputs)", flush_timeout)
            crash_point("after_outputs")
        # 2. state records, tagged with the offsets they reflect.
        now = time.time()
        size = 0
        offsets: list[TopicPartition] = []
        unstorable: list[tuple[Checkpointable, BaseException]] = []
        for task in dirty:
            key = task.changelog_key(self.group)
            try:
                # No full-size copy that is not needed: the record's pieces (the snapshot compressed
                # in slices) are joined once, behind the tag, after the snapshot itself is dropped.
                chunks = task.state_record(self.group, now).encode_chunks()
                value = self.signer.seal(key, chunks)
                del chunks
            except Exception as exc:  # one task's unstorable state must not stop the others
                unstorable.append((task, exc))
                continue
            size += len(value)
            self.producer.record(self.state_topic, key, value)  # librdkafka copies the value
            del value
            offsets.extend(task.commit_offsets())
        if transactional:
            self._commit_transaction(offsets)
        else:
            self._flush_and_check("2 (state)", flush_timeout)
            crash_point("after_state")
            # 3. offsets.
            crash_point("before_commit")
            self._commit(offsets)
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
        return CheckpointResult(len(dirty), len(offsets), seconds, size, unstorable)

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
