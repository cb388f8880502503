"""HMAC-SHA256 tags on state records: state that nobody without the key can forge.

The state topic may be writable by others than the service (a shared cluster, a broad ACL). Restoring
never runs code (the state format has no pickle), but a forged record could still plant state: hide a
drift, fake a performance baseline, or make a member skip its inputs by the offsets it carries. With
``state.hmac_key_env`` configured, every state record carries an HMAC-SHA256 tag and a record whose tag
does not verify is never restored.

The tag is in the record's framing (not in a Kafka header), so it travels with the value through
anything that copies values (MirrorMaker, a backup) and is checked before the state decoder sees a byte::

    signed = b"SMSG" version:u8 key_id:8 tag:32 record          # 45 bytes before the record
    tag    = HMAC-SHA256(key, b"stream-monitor state record\\x00" || u32be(len(kafka_key)) || kafka_key
                              || record)
    key_id = HMAC-SHA256(key, b"stream-monitor state key id")[:8]

``record`` is the unsigned record (format 2, :mod:`stream_monitor.kafka.state`, starting ``SMST``).
The tag covers the Kafka key (``<group>/<partition>``), so a genuine record copied to another
partition's key does not verify either. ``key_id`` names the key that signed (for rotation: several
keys are accepted, the first one signs), and is no help to a forger: it is a MAC of a constant.

Without a key, records are written unsigned and read as before (a signed one is read without being
checked), and the service logs a warning at start-up. With a key, an unsigned record is refused
(``unsigned``) unless ``state.accept_unsigned`` is set for a migration, and a tag that does not verify
under any accepted key is refused (``bad_signature``).

>>> signer = StateSigner([b"k" * 32])
>>> value = signer.seal(b"g/0", b"SMST-record")
>>> value[:4], len(value) - len(b"SMST-record"), signer.open(b"g/0", value)
(b'SMSG', 45, b'SMST-record')
>>> signer.open(b"g/1", value)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
stream_monitor.kafka.signing.RecordRejected: bad_signature: state record g/1: its tag does not verify...
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from stream_monitor.config import StateSettings
from stream_monitor.errors import ConfigError, StateError

log = logging.getLogger("stream_monitor.kafka.state")

MAGIC = b"SMSG"
VERSION = 1
KEY_ID_BYTES = 8
TAG_BYTES = 32
HEADER_BYTES = len(MAGIC) + 1 + KEY_ID_BYTES + TAG_BYTES
_DOMAIN = b"stream-monitor state record\x00"
_KEY_ID_DOMAIN = b"stream-monitor state key id"
_U32 = struct.Struct(">I")
#: A key shorter than this is refused at start-up (32 bytes: the size of the hash itself).
MIN_KEY_BYTES = 32
_UPPER_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")

#: Why a state record was refused (the ``reason`` label of ``stream_monitor_state_records_rejected``).
BAD_SIGNATURE = "bad_signature"
UNSIGNED = "unsigned"
UNRESTORABLE = "unrestorable"
REJECT_REASONS = (BAD_SIGNATURE, UNSIGNED, UNRESTORABLE)


class RecordRejected(StateError):
    """A state record that must not be restored: its tag is wrong or missing (``reason``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def key_id(key: bytes) -> bytes:
    """The 8-byte id of a key, written next to the tag (which key signed; no secret)."""
    return hmac.new(key, _KEY_ID_DOMAIN, hashlib.sha256).digest()[:KEY_ID_BYTES]


def _mac(key: bytes, kafka_key: bytes) -> hmac.HMAC:
    mac = hmac.new(key, _DOMAIN, hashlib.sha256)
    mac.update(_U32.pack(len(kafka_key)))
    mac.update(kafka_key)
    return mac


def _tag(key: bytes, kafka_key: bytes, record: bytes | memoryview) -> bytes:
    mac = _mac(key, kafka_key)
    mac.update(record)
    return mac.digest()


def is_signed(value: bytes) -> bool:
    """Whether a state record value has the signed framing (not whether its tag verifies)."""
    return value[: len(MAGIC)] == MAGIC


class StateSigner:
    """Signs state records with the first key and verifies them against all (see the module doc).

    ``keys`` empty: records are neither signed nor checked. ``accept_unsigned`` (migration to signed
    records only): with keys, an unsigned record is still restored.
    """

    def __init__(self, keys: Sequence[bytes] = (), accept_unsigned: bool = False) -> None:
        self._keys = [bytes(k) for k in keys]
        self._by_id = {key_id(k): k for k in self._keys}
        if len(self._by_id) != len(self._keys):
            raise ValueError("the state keys must differ from each other")
        self.accept_unsigned = accept_unsigned

    @property
    def signing(self) -> bool:
        """Whether records are signed and checked (a key is configured)."""
        return bool(self._keys)

    @property
    def key_id(self) -> str | None:
        """Hex id of the signing key (shown in ``/state``), None without a key."""
        return key_id(self._keys[0]).hex() if self._keys else None

    def seal(self, kafka_key: bytes, record: bytes | Sequence[Any]) -> bytes:
        """The value to produce: ``record`` with its tag in front (unchanged without a key).

        ``record`` may also be the record's pieces (``StateRecord.encode_chunks``): the tag is
        computed over them and they are joined once, behind it.

        >>> signer = StateSigner([b"k" * 32])
        >>> signer.seal(b"g/0", [b"SMST-", memoryview(b"record")]) == signer.seal(b"g/0", b"SMST-record")
        True
        """
        pieces: Sequence[Any] = [record] if isinstance(record, bytes) else record
        if not self._keys:
            return record if isinstance(record, bytes) else b"".join(pieces)
        key = self._keys[0]
        mac = _mac(key, kafka_key)
        for piece in pieces:
            mac.update(piece)
        header = MAGIC + bytes([VERSION]) + key_id(key) + mac.digest()
        return b"".join([header, *pieces])

    def open(self, kafka_key: bytes, value: bytes) -> bytes:
        """The record inside ``value``, checked; :class:`RecordRejected` when it must not be restored."""
        name = f"state record {kafka_key.decode(errors='replace')}"
        if not is_signed(value):
            if self._keys and not self.accept_unsigned:
                raise RecordRejected(UNSIGNED, f"{name} carries no tag and a state key is configured")
            return value
        if len(value) < HEADER_BYTES or value[len(MAGIC)] != VERSION:
            raise RecordRejected(BAD_SIGNATURE, f"{name}: tag framing of an unknown version or truncated")
        view = memoryview(value)
        kid = bytes(view[len(MAGIC) + 1 : len(MAGIC) + 1 + KEY_ID_BYTES])
        tag = bytes(view[HEADER_BYTES - TAG_BYTES : HEADER_BYTES])
        record = view[HEADER_BYTES:]
        if not self._keys:
            return bytes(record)  # no key to check with: read as an unsigned record
        key = self._by_id.get(kid)
        # Compute a tag even for an unknown key id, so the answer takes as long either way.
        expected = _tag(key if key is not None else self._keys[0], kafka_key, record)
        if key is None or not hmac.compare_digest(expected, tag):
            raise RecordRejected(BAD_SIGNATURE, f"{name}: its tag does not verify under the accepted key(s)")
        return bytes(record)

    def current(self, value: bytes) -> bool:
        """Whether ``value`` is as this signer writes it now: signed by the first key (or, without a
        key, anything). A restored record that is not gets re-signed at the next checkpoint, which
        completes a key rotation (and a migration from unsigned records)."""
        if not self._keys:
            return True
        start = len(MAGIC) + 1
        return is_signed(value) and value[start : start + KEY_ID_BYTES] == key_id(self._keys[0])

    def warn_if_unsigned(self, topic: str) -> None:
        """The start-up warning of a service that writes unsigned records."""
        if not self._keys:
            log.warning(
                "state records on %s are not signed (no state.hmac_key_env): whoever can write to that "
                "topic can plant the state this service restores; see the README's Security section",
                topic,
            )
        elif self.accept_unsigned:
            log.warning(
                "state.accept_unsigned is on: unsigned state records on %s are still restored (meant for "
                "the migration to signed records only; turn it off once every record is signed)",
                topic,
            )


def signer_from_settings(state: StateSettings, env: Mapping[str, str] | None = None) -> StateSigner:
    """The signer of ``state.hmac_key_env``: each named environment variable holds a key (its UTF-8
    bytes, at least :data:`MIN_KEY_BYTES`); the first signs. A :class:`ConfigError` naming the entry
    when a variable is unset, too short or repeats a key, never showing a key: a name is repeated in
    the message only when it looks like one (upper case), in case a key was pasted there."""
    environ: Mapping[str, str] = os.environ if env is None else env
    keys: list[bytes] = []
    for i, name in enumerate(state.hmac_key_env):
        where = f"state.hmac_key_env[{i}]"
        shown = (
            f"environment variable {name}" if _UPPER_NAME.match(name) else "the environment variable it names"
        )
        key = environ.get(name, "").strip().encode("utf-8")
        if not key:
            raise ConfigError(where, f"{shown} is not set or empty")
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(
                where,
                f"the key in {shown} is too short: at least {MIN_KEY_BYTES} bytes (`openssl rand -hex 32`)",
            )
        if key in keys:
            raise ConfigError(where, f"{shown} holds the same key as an earlier entry")
        keys.append(key)
    return StateSigner(keys, state.accept_unsigned)
