"""The checkpoint without full-size copies: the state's pieces, the record's codecs, sealing pieces.

- ``state_format.encode_chunks`` joined is ``encode``; a :class:`Pieces` part decodes as bytes;
- a zlib record is byte for byte what the one-shot ``zlib.compress`` record was (no ``codec`` part),
  so records written before this change and after it decode the same, by either reader;
- a ``stored`` record says so, decodes, and is checked by its digest like a zlib one; an unknown
  codec is refused with a :class:`StateError`;
- ``StateSigner.seal`` over pieces is ``seal`` over the joined record;
- the Checkpointer produces a value that opens, decodes and carries the snapshot's digest.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Any

import numpy as np
import pytest

from stream_monitor.core import state_format
from stream_monitor.errors import StateError
from stream_monitor.kafka import state as state_mod
from stream_monitor.kafka.checkpoint import Checkpointer
from stream_monitor.kafka.signing import StateSigner
from stream_monitor.kafka.state import CODECS, STORED, ZLIB, StateRecord

OFFSETS: dict[str, int | None] = {"predictions": 120, "labels": None}
COUNTS = {"predictions": 118}


def _state(n: int = 1000, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return state_format.tagged(
        "engine",
        1,
        watermark=np.array([12.5]),
        monitors={
            "m": {
                "ids": rng.integers(0, 1 << 40, n).astype(np.int64),
                "scores": rng.random(n),
                "flags": rng.random(n) > 0.5,
                "blob": bytes(rng.integers(0, 256, 777, dtype=np.uint8)),
                "names": ["a", "b", None],
                "empty": np.zeros((0, 3)),
                "nested": {"deep": {"x": np.arange(5, dtype=np.float32)}},
            }
        },
    )


def _old_encode(rec: StateRecord) -> bytes:
    """A record as every stream-monitor before this change wrote it (one-shot zlib, no codec part)."""
    return state_format.encode(
        state_format.tagged(
            "state_record",
            2,
            group=rec.group,
            partition=rec.partition,
            offsets=rec.offsets,
            counts=rec.counts,
            digest=rec.digest,
            created_at=rec.created_at,
            snapshot=zlib.compress(rec.snapshot, 1),
        )
    )


@pytest.mark.parametrize("n", [0, 1, 1000, 300_000])
def test_chunks_join_to_the_encoding_and_hash_to_its_digest(n: int) -> None:
    state = _state(n)
    blob = state_format.encode(state)
    chunks = state_format.encode_chunks(state)
    assert b"".join(chunks) == blob
    sha = hashlib.sha256()
    for piece in chunks:
        sha.update(piece)
    assert sha.hexdigest()[:16] == state_mod.digest(blob)
    # array parts are views of the arrays, not copies
    ids = state["monitors"]["m"]["ids"]
    assert any(isinstance(p, np.ndarray) and np.shares_memory(p, ids) for p in chunks) or n == 0


def test_pieces_part_decodes_as_bytes() -> None:
    pieces = state_format.Pieces([b"", b"ab", memoryview(b"cd"), np.frombuffer(b"ef", np.uint8)])
    assert pieces.size == 6
    blob = state_format.encode({"b": pieces, "n": 1})
    assert blob == state_format.encode({"b": b"abcdef", "n": 1})
    assert state_format.decode(blob) == {"n": 1, "b": b"abcdef"}
    assert state_format.decode(state_format.encode({"b": state_format.Pieces([])})) == {"b": b""}


@pytest.mark.parametrize("n", [0, 1000, 400_000])  # 400k: the snapshot spans several 1 MB slices
def test_zlib_record_is_byte_identical_to_the_old_one(n: int) -> None:
    rec = StateRecord("g", 3, OFFSETS, COUNTS, state_format.encode(_state(n)), created_at=5.0)
    new = rec.encode()
    assert new == _old_encode(rec)  # an older reader reads it; older records read as before
    assert b"".join(rec.encode_chunks()) == new
    assert "codec" not in state_format.decode(new)
    back = StateRecord.decode(_old_encode(rec))
    assert (back.snapshot, back.digest, back.offsets) == (rec.snapshot, rec.digest, OFFSETS)


@pytest.mark.parametrize("codec", CODECS)
def test_both_codecs_round_trip(codec: str) -> None:
    snapshot = state_format.encode(_state(5000))
    rec = StateRecord("g", 0, OFFSETS, COUNTS, snapshot, created_at=1.5)
    data = rec.encode(codec)
    container = state_format.decode(data)
    assert container.get("codec", ZLIB) == codec
    if codec == STORED:
        assert container["snapshot"] == snapshot
    else:
        assert len(container["snapshot"]) < len(snapshot)
    back = StateRecord.decode(data)
    assert back == rec
    assert back.snapshot == snapshot
    assert state_format.decode(back.snapshot) is not None


def test_default_codec_is_used_and_named_only_when_not_zlib(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = StateRecord("g", 0, OFFSETS, COUNTS, b"snap")
    assert state_mod.CODEC in CODECS
    monkeypatch.setattr(state_mod, "CODEC", STORED)
    assert state_format.decode(rec.encode())["codec"] == STORED
    monkeypatch.setattr(state_mod, "CODEC", ZLIB)
    assert "codec" not in state_format.decode(rec.encode())


def _container(**change: Any) -> dict[str, Any]:
    rec = StateRecord("g", 0, OFFSETS, COUNTS, b"snapshot bytes")
    parts = state_format.decode(rec.encode(STORED))
    parts.update(change)
    return parts


def test_stored_records_are_checked_like_zlib_ones() -> None:
    assert StateRecord.decode(state_format.encode(_container())).snapshot == b"snapshot bytes"
    with pytest.raises(StateError, match="digest"):
        StateRecord.decode(state_format.encode(_container(snapshot=b"snapshot bytez")))
    with pytest.raises(StateError, match="unknown codec 'lz4'"):
        StateRecord.decode(state_format.encode(_container(codec="lz4")))
    with pytest.raises(StateError, match="'codec'"):
        StateRecord.decode(state_format.encode(_container(codec=7)))
    # a stored snapshot labelled zlib (or the reverse) is refused, never misread
    with pytest.raises(StateError, match="snapshot corrupt"):
        StateRecord.decode(state_format.encode(_container(codec="zlib")))
    rec = StateRecord("g", 0, OFFSETS, COUNTS, b"snapshot bytes")
    zparts = state_format.decode(rec.encode(ZLIB))
    with pytest.raises(StateError, match="digest"):
        StateRecord.decode(state_format.encode({**zparts, "codec": STORED}))


def test_unknown_codec_is_refused_when_writing() -> None:
    rec = StateRecord("g", 0, OFFSETS, COUNTS, b"snap")
    with pytest.raises(ValueError, match="codec"):
        rec.encode("lz4")


def test_seal_over_pieces_equals_seal_over_the_record() -> None:
    rec = StateRecord("g", 0, OFFSETS, COUNTS, state_format.encode(_state(20_000)))
    signed = StateSigner([b"k" * 32])
    for signer in (signed, StateSigner()):
        chunks = rec.encode_chunks()
        value = signer.seal(b"g/0", chunks)
        assert value == signer.seal(b"g/0", rec.encode())
        assert StateRecord.decode(signer.open(b"g/0", value)) == rec
    unsigned_record = rec.encode()
    assert StateSigner().seal(b"g/0", unsigned_record) is unsigned_record  # no copy without a key


class _Deliveries:
    def raise_failures(self) -> None:
        return None


class _Producer:
    transactional = False

    def __init__(self) -> None:
        self.values: list[tuple[str, bytes, bytes]] = []
        self.deliveries = _Deliveries()

    def flush(self, timeout: float) -> int:
        return 0

    def record(self, topic: str, key: bytes, value: bytes) -> None:
        assert isinstance(value, bytes)
        self.values.append((topic, key, value))


class _Task:
    partition = 0
    dirty = True

    def __init__(self) -> None:
        self.state = _state(10_000)
        self.checkpointed_digest = ""
        self.state_blobs = state_mod.StateBlobs()

    def changelog_key(self, group: str) -> bytes:
        return state_mod.state_key(group, self.partition)

    def state_capture(self, group: str, now: float, *, freeze: bool) -> state_mod.StateCapture:
        return state_mod.StateCapture.of(group, 0, {"predictions": 5}, {}, self.state, now, freeze=freeze)

    def state_record(self, group: str, now: float) -> StateRecord:
        rec = self.state_capture(group, now, freeze=False).record()
        self.checkpointed_digest = rec.digest
        return rec

    def commit_offsets(self) -> list[Any]:
        return []


@pytest.mark.parametrize("codec", CODECS)
def test_checkpointer_produces_a_sealed_record_that_restores(
    codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_mod, "CODEC", codec)
    monkeypatch.setattr(state_mod, "BLOB_MIN_BYTES", 1 << 62)  # one whole record (blobs: elsewhere)
    producer = _Producer()
    signer = StateSigner([b"k" * 32])
    task = _Task()
    result = Checkpointer(None, producer, "g", "state", signer=signer).run([task], "test")  # type: ignore[arg-type]
    assert (result.tasks, result.unstorable, task.dirty) == (1, [], False)
    [(topic, key, value)] = producer.values
    assert (topic, key, result.state_bytes) == ("state", b"g/0", len(value))
    rec = StateRecord.decode(signer.open(key, value))
    assert rec.digest == task.checkpointed_digest == state_mod.digest(state_format.encode(task.state))
    assert rec.snapshot == state_format.encode(task.state)
    assert state_format.decode(signer.open(key, value)).get("codec", ZLIB) == codec
