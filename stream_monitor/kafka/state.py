"""Changelog records of partition-task state: snapshot + the input offsets it reflects.

Each partition-task (partition ``p`` of the predictions and labels topics) is checkpointed as ONE
record on a compacted state topic, keyed ``<group>/<p>``. The record carries the engine snapshot and
the next offsets of both input partitions at the moment of the snapshot, so state and input meet
exactly: a restored task resumes consuming at those offsets (which are never behind the committed
ones, because a checkpoint writes state before it commits). Replaying from there rebuilds the same
state, so the state itself is exactly-once even though outputs are at-least-once.

Record layout: the one state format (:mod:`stream_monitor.core.state_format`), a ``state_record``
container of the group, partition, offsets, counts, digest and creation time, and the engine snapshot
(itself in that format) zlib-compressed as a bytes part, or stored as it is when a ``codec`` part says
``"stored"`` (a record without that part is zlib, as every record written before it existed).

**Incremental.** A large array part (:data:`BLOB_MIN_BYTES` or more: the label buffer's pending
predictions, the windows' samples) is not written inside every record. It goes into a *blob*
record of its own, keyed ``<state key>/blob/<digest of its dtype, shape and bytes>``, and the state
record names it by that digest (a ``blobs`` part, and a reference container where the array was). A
checkpoint writes only the blobs the topic does not have yet (an array unchanged since the last
checkpoint is not written again: the label buffer's main level between two rebuilds, the windows of
a model that had no traffic), and before the state record that needs them; once that record is
delivered, blobs no record needs any more get a tombstone, so compaction keeps exactly what the
latest record of each task needs. A restore reads the record and
its blobs (:func:`read_latest` with the task's blob prefix; :func:`blob_reader`) and checks the
digest of the whole state, which is that of the state as the uninterrupted run held it. A record
without a ``blobs`` part is read as before.

Format 1 (a JSON header line and the compressed snapshot, whose parts were JSON, base64 and pickle)
is refused with a :class:`StateError`; :func:`record_offsets` still reads its offsets, so the service
can start such a task afresh there.

>>> rec = StateRecord("g", 3, {"predictions": 120, "labels": None}, {"predictions": 118}, b"snap")
>>> back = StateRecord.decode(rec.encode())
>>> back.partition, back.offsets, back.counts, back.snapshot, back.digest == rec.digest
(3, {'predictions': 120, 'labels': None}, {'predictions': 118}, b'snap', True)
>>> state_key("g", 3)
b'g/3'
"""

from __future__ import annotations

import hashlib
import logging
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stream_monitor.core import state_format
from stream_monitor.core.state_format import StateReader
from stream_monitor.errors import StateError

log = logging.getLogger("stream_monitor.kafka.state")

#: Layout version of a state record; 1 was a JSON header line and a zlib-compressed JSON snapshot.
FORMAT = 2
#: A snapshot decompresses to at most this many bytes (a hostile record cannot exhaust memory).
MAX_SNAPSHOT_BYTES = 1 << 31
#: How a record holds its snapshot: zlib level 1 (no ``codec`` part, as every record before the
#: part existed), or ``stored`` as it is (a ``codec`` part says so).
ZLIB, STORED = "zlib", "stored"
CODECS = (ZLIB, STORED)
#: The codec records are written with (see BENCHMARKS.md, section 10.1).
CODEC = ZLIB
#: The snapshot goes through zlib in slices of this many bytes.
_SLICE = 1 << 20


#: A read-only array part of at least this many bytes is written as a blob record of its own.
BLOB_MIN_BYTES = 1 << 16
_BLOB, _BLOB_REF = "state_blob", "state_blob_ref"


def state_key(group: str, partition: int) -> bytes:
    """The changelog key of a partition-task."""
    return f"{group}/{partition}".encode()


def blob_prefix(key: bytes) -> bytes:
    """Where the blobs of the task whose state record has ``key`` are keyed.

    >>> blob_key(state_key("g", 3), "ab12")
    b'g/3/blob/ab12'
    """
    return key + b"/blob/"


def blob_key(key: bytes, blob: str) -> bytes:
    """The key of one blob of the task whose state record has ``key``."""
    return blob_prefix(key) + blob.encode()


def array_digest(values: np.ndarray) -> str:
    """The content address of an array: its dtype, shape and bytes (128 bits of SHA-256)."""
    h = hashlib.sha256(f"{values.dtype.str}{values.shape}".encode())
    h.update(np.ascontiguousarray(values).data.cast("B"))
    return h.hexdigest()[:32]


def blob_chunks(values: np.ndarray, blob: str) -> list[Any]:
    """A blob record's bytes (as pieces, not joined): the array in the state format, zlib level 1
    (in slices, as a snapshot), behind the blob's digest."""
    body = _compressed(state_format.encode_chunks({"values": values}))
    return state_format.encode_chunks(state_format.tagged(_BLOB, 1, digest=blob, body=body))


@state_format.restoring
def decode_blob(data: bytes, blob: str) -> np.ndarray:
    """The array of a blob record; :class:`StateError` unless it is blob ``blob``, byte for byte."""
    r = StateReader.of(state_format.decode(data), f"state blob {blob}", _BLOB, 1)
    found = state_format.decode(_inflated(r.raw("body"), f"state blob {blob}")).get("values")
    if r.text("digest") != blob or not isinstance(found, np.ndarray) or array_digest(found) != blob:
        raise StateError(f"state blob {blob}: its content is not that blob")
    return found


def blob_reader(
    records: Mapping[bytes, bytes], key: bytes, open_record: Callable[[bytes, bytes], bytes]
) -> Callable[[str], np.ndarray]:
    """The blobs of the task whose state record has ``key``, from what :func:`read_latest` read
    (``open_record``: the signer's check of a record under its key)."""

    def blob(digest: str) -> np.ndarray:
        name = blob_key(key, digest)
        raw = records.get(name)
        if raw is None:
            what = key.decode(errors="replace")
            raise StateError(f"state record {what} needs blob {digest}, which is not on the topic")
        try:
            return decode_blob(open_record(name, raw), digest)
        except StateError:
            raise
        except Exception as exc:  # a blob whose tag does not verify: the state is not restored
            raise StateError(f"state blob {digest}: {exc}") from exc

    return blob


def _moved_out(state: Mapping[str, Any], blobs: dict[str, np.ndarray]) -> dict[str, Any]:
    """``state`` with each large array replaced by a reference (and put into ``blobs``)."""
    out: dict[str, Any] = {}
    for name, value in state.items():
        if isinstance(value, np.ndarray) and value.nbytes >= BLOB_MIN_BYTES:
            digest = array_digest(value)
            blobs[digest] = value
            value = state_format.tagged(
                _BLOB_REF, 1, digest=digest, dtype=value.dtype.str, shape=list(value.shape)
            )
        elif isinstance(value, Mapping):
            value = _moved_out(value, blobs)
        out[name] = value
    return out


def _moved_in(
    state: Mapping[str, Any], blob: Callable[[str], np.ndarray], allowed: set[str]
) -> dict[str, Any]:
    """The references of :func:`_moved_out` replaced by their blobs' arrays."""
    out: dict[str, Any] = {}
    for name, value in state.items():
        if isinstance(value, Mapping):
            if value.get("kind") == _BLOB_REF:
                r = StateReader.of(value, f"blob reference {name!r}", _BLOB_REF, 1)
                digest = r.text("digest")
                if digest not in allowed:
                    raise StateError(f"blob reference {name!r}: blob {digest} is not among the record's")
                found = blob(digest)
                if found.dtype.str != r.text("dtype") or list(found.shape) != r.json_list("shape", int):
                    raise StateError(f"blob {digest} is not the array {name!r} refers to")
                value = found
            else:
                value = _moved_in(value, blob, allowed)
        out[name] = value
    return out


def digest(snapshot: bytes) -> str:
    """Short content digest of an engine snapshot (equal state ⇔ equal digest, for logs and tests)."""
    return hashlib.sha256(snapshot).hexdigest()[:16]


@dataclass
class StateRecord:
    """One partition-task's checkpoint."""

    group: str
    partition: int
    offsets: dict[str, int | None]
    counts: dict[str, int]
    snapshot: bytes
    created_at: float = 0.0
    digest: str = field(default="")
    #: The blobs the snapshot refers to (an incremental record); empty: the snapshot is whole.
    blobs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.digest:
            self.digest = digest(self.snapshot)

    def encode(self, codec: str | None = None) -> bytes:
        """The record in the one state format, the snapshot compressed (``codec``: :data:`CODECS`)."""
        return b"".join(self.encode_chunks(codec))

    def encode_chunks(self, codec: str | None = None) -> list[Any]:
        """:meth:`encode`'s bytes as pieces, not joined: the snapshot is compressed in slices and
        its compressed pieces are never joined on their own, so the only full-size copy is the one
        the caller makes (:meth:`StateSigner.seal <stream_monitor.kafka.signing.StateSigner.seal>`
        joins them once, behind the tag). With zlib the pieces hold no reference to :attr:`snapshot`,
        so a caller that drops the record frees it before that join."""
        codec = CODEC if codec is None else codec
        if codec not in CODECS:
            raise ValueError(f"unknown snapshot codec {codec!r} (one of {', '.join(CODECS)})")
        body = state_format.Pieces([self.snapshot]) if codec == STORED else _compressed([self.snapshot])
        return _record_chunks(self, body, codec)

    @classmethod
    @state_format.restoring
    def decode(cls, data: bytes, blob: Callable[[str], np.ndarray] | None = None) -> StateRecord:
        """Parse a record; :class:`StateError` names what is wrong (an older format included).

        An incremental record's blobs come from ``blob`` (:func:`blob_reader`); its
        :attr:`snapshot` is then the whole state again, checked against the record's digest.

        >>> StateRecord.decode(b'{"format": 1, "group": "g"}\\n...')  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        stream_monitor.errors.StateError: state record of format 1 (JSON header): written by an older ...
        """
        if _old_header(data) is not None:
            raise StateError(
                "state record of format 1 (JSON header): written by an older stream-monitor, its state "
                "cannot be restored by this one"
            )
        r = StateReader.of(state_format.decode(data), "state record", "state_record", FORMAT)
        group, partition = r.text("group"), r.integer("partition", min_value=0)
        name = f"state record of {group}/{partition}"
        offsets, counts = _offsets(r.child("offsets").parts), dict(r.child("counts").parts)
        if offsets is None or not all(type(v) is int for v in counts.values()):
            raise StateError(f"{name}: offsets or counts are not integers")
        codec = r.text("codec") if r.has("codec") else ZLIB  # no part: a zlib record
        if codec == STORED:
            snapshot = r.raw("snapshot")
        elif codec == ZLIB:
            snapshot = _inflated(r.raw("snapshot"), f"{name}: snapshot")
        else:
            raise StateError(f"{name}: snapshot stored with unknown codec {codec!r}")
        blobs = r.strings("blobs") if r.has("blobs") else []
        if blobs:
            if blob is None:
                raise StateError(f"{name} refers to {len(blobs)} blob(s) and none were read")
            whole = _moved_in(state_format.decode(snapshot), blob, set(blobs))
            snapshot = state_format.encode(whole)
        rec = cls(group, partition, offsets, counts, snapshot, created_at=r.number("created_at"), blobs=blobs)
        if rec.digest != r.text("digest"):
            raise StateError(f"{name} fails its digest check")
        return rec


@dataclass
class StateBlobs:
    """A task's blobs on the state topic: those known delivered (a checkpoint writes only the
    others) and those written and not yet given a tombstone."""

    on_topic: set[str] = field(default_factory=set)
    written: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, record: StateRecord) -> StateBlobs:
        """The blobs a restored record needed: on the topic (it was restored from them)."""
        return cls(set(record.blobs), set(record.blobs))


@dataclass
class StateCapture:
    """A partition-task's state as taken at a checkpoint, before it is encoded into a
    :class:`StateRecord`.

    Taking it is the only part of a checkpoint that has to run on the consume loop: with
    ``freeze=True`` (:meth:`of`) the container is :func:`~stream_monitor.core.state_format.frozen`,
    so :meth:`record` (encoding, digest) and the compression after it can run on another thread while
    the loop goes on changing the live state. A frozen capture encodes to the same bytes as the
    state had when it was taken.

    >>> live = {"n": np.zeros(1)}
    >>> cap = StateCapture.of("g", 0, {"predictions": 5}, {}, live, 0.0, freeze=True)
    >>> live["n"][0] = 1.0
    >>> cap.record().snapshot == state_format.encode({"n": np.zeros(1)})
    True
    """

    group: str
    partition: int
    offsets: dict[str, int | None]
    counts: dict[str, int]
    state: dict[str, Any]
    created_at: float

    @classmethod
    def of(
        cls,
        group: str,
        partition: int,
        offsets: Mapping[str, int | None],
        counts: Mapping[str, int],
        state: Mapping[str, Any],
        created_at: float,
        *,
        freeze: bool,
    ) -> StateCapture:
        """Take a task's state; ``freeze`` when it will be encoded off the loop thread."""
        container = state_format.frozen(state) if freeze else dict(state)
        return cls(group, partition, dict(offsets), dict(counts), container, created_at)

    def record(self) -> StateRecord:
        """The state record (encodes the snapshot: the costly part, safe off the loop once frozen)."""
        return StateRecord(
            self.group,
            self.partition,
            self.offsets,
            self.counts,
            state_format.encode(self.state),
            created_at=self.created_at,
        )

    def incremental(self) -> tuple[StateRecord, dict[str, np.ndarray]]:
        """The incremental record and the blobs it refers to (see the module docstring). Its digest
        is that of the whole state, hashed piece by piece (the whole snapshot is never joined)."""
        blobs: dict[str, np.ndarray] = {}
        body = _moved_out(self.state, blobs)
        h = hashlib.sha256()
        for piece in state_format.encode_chunks(self.state):
            h.update(piece)
        record = StateRecord(
            self.group,
            self.partition,
            self.offsets,
            self.counts,
            state_format.encode(body),
            created_at=self.created_at,
            digest=h.hexdigest()[:16],
            blobs=sorted(blobs),
        )
        return record, blobs


def _inflated(data: bytes, what: str) -> bytes:
    """zlib ``data`` inflated to at most :data:`MAX_SNAPSHOT_BYTES` (a hostile record cannot
    exhaust memory); :class:`StateError` naming ``what`` when it is corrupt, cut short or larger."""
    decompressor = zlib.decompressobj()
    try:
        inflated = decompressor.decompress(data, MAX_SNAPSHOT_BYTES)
    except zlib.error as exc:
        raise StateError(f"{what} corrupt: {exc}") from exc
    if decompressor.unconsumed_tail or not decompressor.eof:
        raise StateError(f"{what} truncated or larger than {MAX_SNAPSHOT_BYTES} bytes")
    return inflated


def _compressed(pieces: Iterable[Any]) -> state_format.Pieces:
    """zlib level 1 of the concatenation of ``pieces``, as the compressor's output pieces.

    Large pieces go in slices of :data:`_SLICE` bytes: the compressor's output of one call is built
    in blocks and then copied into one ``bytes``, so a 20 MB array in one call would briefly hold
    its compressed size twice."""
    compressor = zlib.compressobj(1)
    out: list[bytes] = []
    for piece in pieces:
        view = memoryview(piece)
        if not view.nbytes:
            continue
        view = view.cast("B")
        for i in range(0, len(view), _SLICE):
            out.append(compressor.compress(view[i : i + _SLICE]))
    out.append(compressor.flush())
    return state_format.Pieces(out)


def _record_chunks(rec: StateRecord, body: state_format.Pieces, codec: str) -> list[Any]:
    # A zlib record carries no ``codec`` part: its bytes are those of the records written before
    # the part existed, so an older reader still restores it (and no ``blobs`` part when whole).
    extra: dict[str, Any] = {} if codec == ZLIB else {"codec": codec}
    if rec.blobs:
        extra["blobs"] = rec.blobs
    return state_format.encode_chunks(
        state_format.tagged(
            "state_record",
            FORMAT,
            group=rec.group,
            partition=rec.partition,
            offsets=rec.offsets,
            counts=rec.counts,
            digest=rec.digest,
            created_at=rec.created_at,
            **extra,
            snapshot=body,
        )
    )


def record_offsets(data: bytes) -> dict[str, int | None] | None:
    """The input offsets a state record of any format reflects, None when they cannot be read.

    For a record whose state cannot be restored: the task starts afresh where that state ended.

    >>> record_offsets(b'{"format": 1, "offsets": {"predictions": 7, "labels": null}}\\n...')
    {'predictions': 7, 'labels': None}
    >>> record_offsets(b"garbage") is None
    True
    """
    header = _old_header(data)
    if header is not None:
        return _offsets(header.get("offsets"))
    try:
        return _offsets(state_format.decode(data).get("offsets"))
    except StateError:
        return None


def _old_header(data: bytes) -> dict[str, Any] | None:
    """The JSON header of a format-1 record, None for anything else."""
    if not data.startswith(b"{"):
        return None
    head, sep, _ = data.partition(b"\n")
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError:
        return None
    return header if sep and isinstance(header, dict) and header.get("format") == 1 else None


def _offsets(value: Any) -> dict[str, int | None] | None:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and (v is None or type(v) is int) for k, v in value.items()
    ):
        return None
    return dict(value)


def read_latest(
    connection: Mapping[str, Any],
    topic: str,
    keys: Iterable[bytes],
    timeout: float = 60.0,
    prefixes: Iterable[bytes] = (),
) -> dict[bytes, bytes]:
    """The latest value of each wanted key (and of every key that starts with one of ``prefixes``:
    the tasks' blobs) on ``topic``, reading every partition to its end.

    A plain consumer with ``assign()`` (not the group consumer, so the group is not disturbed), reading
    committed data only. A key whose latest record is a tombstone is absent from the result. Raises
    :class:`StateError` when the end cannot be reached within ``timeout`` seconds.
    """
    wanted = set(keys)
    starts = tuple(prefixes)
    consumer = Consumer(
        {
            **dict(connection),
            "group.id": "stream-monitor-state-reader",
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
            # Reach the end quickly: an empty fetch at the end should not wait 500 ms for more data.
            "fetch.wait.max.ms": "10",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        deadline = time.monotonic() + timeout
        metadata = consumer.list_topics(topic, timeout=timeout)
        t = metadata.topics.get(topic)
        if t is None or t.error is not None:
            raise StateError(f"state topic {topic} is not available: {None if t is None else t.error}")
        pending: set[int] = set()
        assignment: list[TopicPartition] = []
        for p in t.partitions:
            low, high = _watermarks(consumer, TopicPartition(topic, p), deadline)
            if high > low:
                pending.add(p)
                assignment.append(TopicPartition(topic, p, low))
        latest: dict[bytes, bytes | None] = {}
        if assignment:
            consumer.assign(assignment)
        while pending:
            if time.monotonic() > deadline:
                raise StateError(f"could not read state topic {topic} to its end within {timeout:.0f}s")
            for msg in consumer.consume(num_messages=500, timeout=0.05):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition() or 0)
                        continue
                    if err.fatal():
                        raise StateError(f"reading state topic {topic}: {err.str()}")
                    log.warning("reading state topic %s: %s (retrying)", topic, err.str())
                    continue
                key = msg.key()
                if key in wanted or (starts and key is not None and key.startswith(starts)):
                    latest[key] = msg.value()
        return {k: v for k, v in latest.items() if v is not None}
    except KafkaException as exc:
        raise StateError(f"reading state topic {topic}: {exc}") from exc
    finally:
        consumer.close()


def _watermarks(consumer: Consumer, tp: TopicPartition, deadline: float) -> tuple[int, int]:
    """Low/high watermarks, retrying while the partition has no leader yet (a topic just created)."""
    delay = 0.1
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=max(1.0, deadline - time.monotonic()))
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            retriable = isinstance(err, KafkaError) and not err.fatal()
            if not retriable or time.monotonic() > deadline:
                raise
            log.info("state topic %s[%d] not ready (%s), retrying", tp.topic, tp.partition, err)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
