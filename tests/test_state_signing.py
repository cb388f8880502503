"""HMAC-SHA256 tags on state records (``stream_monitor/kafka/signing.py``, ``state.hmac_key_env``).

Unit tests of sign and verify (every tampered byte, a wrong key, another partition's key, rotation,
records without a tag), of the configuration (keys only from the environment, never echoed), and a
real-broker test: a state record forged with the wrong key and one without a tag are refused and
counted, nothing they say is believed, the service processes on, re-signs them at its next checkpoint,
and a key rotation re-signs every record.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import pytest

from stream_monitor.config import parse_config, redacted
from stream_monitor.errors import ConfigError, StateError
from stream_monitor.kafka.signing import (
    BAD_SIGNATURE,
    HEADER_BYTES,
    UNSIGNED,
    RecordRejected,
    StateSigner,
    key_id,
    signer_from_settings,
)
from stream_monitor.kafka.state import StateRecord, read_latest, state_key

KEY = b"k" * 32
OTHER = b"o" * 32
RECORD = StateRecord("g", 0, {"predictions": 10, "labels": 4}, {"predictions": 9}, b"snapshot").encode()


def reason(signer: StateSigner, kafka_key: bytes, value: bytes) -> str:
    with pytest.raises(RecordRejected) as info:
        signer.open(kafka_key, value)
    assert isinstance(info.value, StateError)  # the service's "cannot be restored" path
    return info.value.reason


def test_a_signed_record_opens_to_the_same_bytes() -> None:
    signer = StateSigner([KEY])
    value = signer.seal(b"g/0", RECORD)
    assert value[:4] == b"SMSG" and value[HEADER_BYTES:] == RECORD
    assert signer.open(b"g/0", value) == RECORD
    assert StateRecord.decode(signer.open(b"g/0", value)).offsets == {"predictions": 10, "labels": 4}
    assert signer.signing and signer.key_id == key_id(KEY).hex() and KEY not in value


def test_every_tampered_byte_is_refused() -> None:
    signer = StateSigner([KEY])
    value = signer.seal(b"g/0", RECORD)
    for i in range(len(value)):
        forged = bytearray(value)
        forged[i] ^= 0x01
        # A changed magic makes it a record without a tag: refused as well.
        assert reason(signer, b"g/0", bytes(forged)) == (UNSIGNED if i < 4 else BAD_SIGNATURE), i
    assert reason(signer, b"g/0", value[:-1]) == BAD_SIGNATURE  # truncated
    assert reason(signer, b"g/0", value + b"\x00") == BAD_SIGNATURE  # extended
    assert reason(signer, b"g/0", value[:20]) == BAD_SIGNATURE  # shorter than the framing


def test_a_wrong_key_or_another_partitions_key_is_refused() -> None:
    signer = StateSigner([KEY])
    assert reason(signer, b"g/0", StateSigner([OTHER]).seal(b"g/0", RECORD)) == BAD_SIGNATURE
    # A genuine record copied under another partition's (or group's) key does not verify.
    assert reason(signer, b"g/1", signer.seal(b"g/0", RECORD)) == BAD_SIGNATURE
    assert reason(signer, b"h/0", signer.seal(b"g/0", RECORD)) == BAD_SIGNATURE
    # A forger who copies our key id next to a tag made with another key gains nothing.
    forged = bytearray(StateSigner([OTHER]).seal(b"g/0", RECORD))
    forged[5:13] = key_id(KEY)
    assert reason(signer, b"g/0", bytes(forged)) == BAD_SIGNATURE


def test_records_without_a_tag() -> None:
    assert reason(StateSigner([KEY]), b"g/0", RECORD) == UNSIGNED
    assert StateSigner([KEY], accept_unsigned=True).open(b"g/0", RECORD) == RECORD  # a migration
    # Without a key nothing is checked: unsigned records as before, a signed one read unchecked.
    unkeyed = StateSigner()
    assert not unkeyed.signing and unkeyed.key_id is None
    assert unkeyed.seal(b"g/0", RECORD) == RECORD
    assert unkeyed.open(b"g/0", RECORD) == RECORD
    assert unkeyed.open(b"g/0", StateSigner([KEY]).seal(b"g/0", RECORD)) == RECORD


def test_rotation_the_first_key_signs_every_key_verifies() -> None:
    old, new = StateSigner([KEY]), StateSigner([OTHER, KEY])
    by_old, by_new = old.seal(b"g/0", RECORD), new.seal(b"g/0", RECORD)
    assert by_new[5:13] == key_id(OTHER)
    assert new.open(b"g/0", by_old) == new.open(b"g/0", by_new) == RECORD
    assert reason(old, b"g/0", by_new) == BAD_SIGNATURE  # hence: add the new key everywhere first
    # A record signed by a key that is not the first is re-signed at the next checkpoint.
    assert new.current(by_new) and not new.current(by_old) and not new.current(RECORD)
    assert old.current(by_old) and StateSigner().current(RECORD)
    assert not StateSigner([KEY], accept_unsigned=True).current(RECORD)
    with pytest.raises(ValueError, match="differ"):
        StateSigner([KEY, KEY])


# ------------------------------------------------------------------------------ configuration

MODEL = {"id": "m", "task": "regression", "features": {"x": "numeric"}}
GOOD = secrets.token_hex(32)


def keys_of(data: dict[str, Any], env: dict[str, str]) -> StateSigner:
    """The signer the service would build: the configuration parsed, then the keys read."""
    return signer_from_settings(parse_config({"models": [MODEL], **data}, env=env).state, env)


def test_keys_come_from_the_environment_variables_the_config_names() -> None:
    env = {"STREAM_MONITOR_STATE_KEY": GOOD, "STREAM_MONITOR_STATE_KEY_OLD": "p" * 40}
    one = {"STREAM_MONITOR_STATE_KEY": GOOD}
    signer = keys_of({"state": {"hmac_key_env": "STREAM_MONITOR_STATE_KEY"}}, one)
    assert signer.key_id == key_id(GOOD.encode()).hex() and not signer.accept_unsigned
    # A list is a rotation: the first signs. Named STREAM_MONITOR_*, they are not configuration keys.
    names = ["STREAM_MONITOR_STATE_KEY", "STREAM_MONITOR_STATE_KEY_OLD"]
    app = parse_config(
        {"models": [MODEL], "state": {"hmac_key_env": names, "accept_unsigned": True}}, env=env
    )
    assert app.state.hmac_key_env == tuple(names) and app.state.accept_unsigned
    signer = signer_from_settings(app.state, env)
    assert signer.key_id == key_id(GOOD.encode()).hex() and signer.accept_unsigned
    by_old = StateSigner([b"p" * 40]).seal(b"g/0", RECORD)
    assert signer.open(b"g/0", by_old) == RECORD  # the second key verifies
    # The setting itself can come from the environment, like every other.
    override = {
        "STREAM_MONITOR_STATE_KEY_OLD": "p" * 40,
        "STREAM_MONITOR_STATE__HMAC_KEY_ENV": "STREAM_MONITOR_STATE_KEY_OLD",
    }
    assert keys_of({}, override).key_id == key_id(b"p" * 40).hex()
    # The configuration holds names only: no key in repr() or the redacted configuration (for logs).
    assert GOOD not in repr(app) and GOOD not in str(redacted(app))
    # Without the setting, a STREAM_MONITOR_STATE_KEY variable is an unknown configuration key.
    with pytest.raises(ConfigError, match="STREAM_MONITOR_STATE_KEY: unknown key"):
        parse_config({"models": [MODEL]}, env=one)
    assert not keys_of({}, {}).signing


@pytest.mark.parametrize(
    ("setting", "env", "problem"),
    [
        ("MISSING_KEY", {}, r"state\.hmac_key_env\[0\]: environment variable MISSING_KEY is not set"),
        ("SHORT", {"SHORT": "x" * 31}, r"the key in environment variable SHORT is too short: at least 32"),
        (["A", "B"], {"A": GOOD, "B": GOOD}, r"hmac_key_env\[1\]: environment variable B holds the same key"),
        # A key pasted in place of a name: "0" + a hex key is never a variable name (a bare token_hex
        # is one whenever its first digit is a letter, which is the next case).
        ("0" + GOOD, {}, r"must name an environment variable that holds the key \(never the key itself\)"),
        ("a" + GOOD, {}, r"hmac_key_env\[0\]: the environment variable it names is not set or empty"),
    ],
)
def test_a_bad_key_setting_stops_start_up_without_echoing_a_key(
    setting: Any, env: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        keys_of({"state": {"hmac_key_env": setting}}, env)
    assert GOOD not in str(info.value)


# ------------------------------------------------------------------------------ the real broker


def test_a_forged_state_record_is_refused_counted_and_the_service_processes_on(
    kafka_bootstrap: str,
    topic_factory: Any,
    group_id: str,
    producer_factory: Any,
    services: Any,
    tmp_path: Path,
) -> None:
    from service_fixtures import ServiceTopics, end_offsets, free_port, produce, synthetic, write_config

    topics = ServiceTopics.create(topic_factory, partitions=3)
    key, new_key = secrets.token_hex(32), secrets.token_hex(32)
    signer = StateSigner([key.encode()])
    connection = {"bootstrap.servers": kafka_bootstrap}
    keys = [state_key(group_id, p) for p in range(3)]
    first_items = synthetic(3000, drift_after=None, seed=21)
    produce(producer_factory(), topics, first_items)
    n_first = sum(1 for role, _ in first_items if role == "predictions")

    def config(name: str, names: list[str]) -> Path:
        state = {"state": {"hmac_key_env": names}}
        return write_config(
            tmp_path / f"{name}.yaml", kafka_bootstrap, topics, group_id, port, top_extra=state
        )

    def processed(svc: Any, predictions: int, labels: int) -> bool:
        done = svc.processed()
        return done["predictions"] + done["rejected"] >= predictions and done["labels"] >= labels

    port = free_port()
    env = {"STREAM_MONITOR_STATE_KEY": key}
    first = services(config("first", ["STREAM_MONITOR_STATE_KEY"]), port, tmp_path / "first.log", env)
    first.wait_for(lambda: processed(first, n_first, n_first), 120, "first run done")
    assert first.state()["state_records"] == {
        "signed": True,
        "key_id": signer.key_id,
        "rejected": {"bad_signature": 0, "unsigned": 0, "unrestorable": 0},
    }
    assert "are not signed" not in first.log()
    assert first.terminate() == 0  # checkpoints and commits all three partition-tasks
    genuine = read_latest(connection, topics.state, keys)
    assert sorted(genuine) == sorted(keys)
    records = {k: StateRecord.decode(signer.open(k, v)) for k, v in genuine.items()}  # all signed

    # Partition 0: the genuine record, its offsets moved back 200 (a replay) and counts faked, signed
    # with a key the service does not have. Partition 1: the genuine record without its tag.
    p0 = records[keys[0]]
    forged = StateRecord(
        group_id,
        0,
        {r: (o or 0) - 200 for r, o in p0.offsets.items()},
        {**p0.counts, "predictions": 999_999},
        p0.snapshot,
        created_at=p0.created_at,
    )
    producer = producer_factory()
    producer.produce(
        topics.state, key=keys[0], value=StateSigner([new_key.encode()]).seal(keys[0], forged.encode())
    )
    producer.produce(topics.state, key=keys[1], value=signer.open(keys[1], genuine[keys[1]]))
    assert producer.flush(30) == 0

    before = {role: end_offsets(kafka_bootstrap, t, 3) for role, t in topics.inputs().items()}
    more = synthetic(900, drift_after=None, seed=22, prefix="more")
    produce(producer_factory(), topics, more)
    after = {role: end_offsets(kafka_bootstrap, t, 3) for role, t in topics.inputs().items()}
    new = {p: {role: after[role][p] - before[role][p] for role in after} for p in range(3)}

    second = services(config("second", ["STREAM_MONITOR_STATE_KEY"]), port, tmp_path / "second.log", env)
    second.wait_for(lambda: second.ready() is True, 120, "ready after the forged records")

    def caught_up() -> bool:
        tasks = second.state()["tasks"]
        return all(tasks[str(p)]["offsets"] == {r: after[r][p] for r in after} for p in range(3))

    second.wait_for(caught_up, 120, "every partition processed to the end")
    state = second.state()
    assert state["state_records"]["rejected"] == {"bad_signature": 1, "unsigned": 1, "unrestorable": 0}
    metrics = second.metrics()
    for why, count in (("bad_signature", 1), ("unsigned", 1), ("unrestorable", 0)):
        assert metrics[("stream_monitor_state_records_rejected_total", (("reason", why),))] == count
    tasks = state["tasks"]
    # Nothing of the refused records was believed (not their counts, not their offsets): partitions
    # 0 and 1 started fresh at the committed offsets and saw exactly the new events.
    for p in (0, 1):
        counts = tasks[str(p)]["counts"]
        assert tasks[str(p)]["restored_digest"] is None
        assert (counts["predictions"] + counts["rejected"], counts["labels"]) == (
            new[p]["predictions"],
            new[p]["labels"],
        ), (p, counts, new[p])
    assert tasks["2"]["restored_digest"] == records[keys[2]].digest
    assert tasks["2"]["counts"]["labels"] == records[keys[2]].counts["labels"] + new[2]["labels"]
    log = second.log()
    refused = [line for line in log.splitlines() if "cannot be restored" in line]
    assert len(refused) == 2, refused
    assert "partition-task 0" in refused[0] + refused[1] and "bad_signature" in log and "unsigned" in log
    assert all("the committed offsets" in line for line in refused)
    assert "Traceback" not in log
    assert second.terminate() == 0
    # Its checkpoints replaced both with records signed by the service's key.
    latest = read_latest(connection, topics.state, keys)
    assert all(StateRecord.decode(signer.open(k, latest[k])).group == group_id for k in keys)

    # Rotation: the new key first, the old one still accepted. Every record is restored (none
    # refused) and re-signed with the new key at the next checkpoint, even without new input.
    env = {"STREAM_MONITOR_STATE_KEY": new_key, "STREAM_MONITOR_STATE_KEY_OLD": key}
    third = services(
        config("third", ["STREAM_MONITOR_STATE_KEY", "STREAM_MONITOR_STATE_KEY_OLD"]),
        port,
        tmp_path / "3.log",
        env,
    )
    third.wait_for(lambda: third.ready() is True, 120, "ready after the rotation")
    assert third.state()["state_records"]["rejected"] == {
        "bad_signature": 0,
        "unsigned": 0,
        "unrestorable": 0,
    }
    rotated = StateSigner([new_key.encode()])

    def resigned() -> bool:
        values = read_latest(connection, topics.state, keys)
        return all(rotated.current(values[k]) for k in keys)

    third.wait_for(resigned, 60, "every record re-signed with the new key")
    assert all(third.state()["tasks"][str(p)]["restored_digest"] is not None for p in range(3))
    assert third.terminate() == 0
    assert re.search(r"cannot be restored", third.log()) is None
