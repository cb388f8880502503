"""Checkpoints in the background and incremental state, on the real broker: ``stream-monitor run``
writes its label buffer's bulk once as blob records, tombstones those no record needs, and a restart
restores the record plus its blobs to the very state (digest) the stopped member checkpointed.

The unit tests of the same code paths (with in-memory fakes) are ``test_checkpoint_background.py``;
the kill -9 tests of ``test_service_kafka.py`` restore incremental records too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from service_fixtures import ServiceTopics, free_port, produce, synthetic, write_config

from stream_monitor.kafka.signing import StateSigner
from stream_monitor.kafka.state import StateRecord, blob_prefix, blob_reader, read_latest, state_key

pytestmark = pytest.mark.kafka


def _predictions_only(count: int, seed: int, prefix: str) -> list[Any]:
    """Predictions whose labels never come: every one stays pending (the label buffer's bulk)."""
    return [item for item in synthetic(count, None, seed=seed, prefix=prefix) if item[0] == "predictions"]


def test_the_state_topic_holds_a_record_and_exactly_the_blobs_it_needs_and_a_restart_restores_them(
    kafka_bootstrap: str,
    topic_factory: Any,
    group_id: str,
    producer_factory: Any,
    services: Any,
    tmp_path: Path,
) -> None:
    topics = ServiceTopics.create(topic_factory, partitions=1)
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topics, group_id, port, checkpoint_interval=0.5)
    connection = {"bootstrap.servers": kafka_bootstrap}
    key = state_key(group_id, 0)
    signer = StateSigner()

    def latest() -> tuple[StateRecord, dict[bytes, bytes]]:
        topic = read_latest(connection, topics.state, [key], prefixes=[blob_prefix(key)])
        return StateRecord.decode(signer.open(key, topic[key]), blob_reader(topic, key, signer.open)), topic

    svc = services(cfg, port, tmp_path / "first.log")
    svc.wait_for(lambda: svc.ready() is True, 120, "ready")
    producer = producer_factory()
    sent = 0
    # Several rounds: each one grows the buffer, so its main level is rebuilt and checkpointed more
    # than once (new blobs, and tombstones for the blobs of the level it replaced).
    for round_ in range(4):
        batch = _predictions_only(12_000, seed=round_, prefix=f"r{round_}-")
        produce(producer, topics, batch)
        sent += len(batch)
        svc.wait_for(lambda n=sent: svc.processed()["predictions"] >= n, 120, f"round {round_} processed")

        # Checkpointed at least once after the round (in the background, every 0.5 s).
        def checkpointed(n: int = sent) -> bool:
            topic = read_latest(connection, topics.state, [key])  # no record yet on a busy machine
            return key in topic and (latest()[0].offsets.get("predictions") or 0) >= n

        svc.wait_for(checkpointed, 120, f"round {round_} checkpointed")
    pending = svc.state()["tasks"]["0"]["labels"]["m"]["pending"]
    assert pending > 30_000

    # A record is on the topic a moment before the loop collects its checkpoint (and counts it).
    def counted() -> bool:
        return svc.metrics()[("stream_monitor_checkpoint_pause_seconds_count", ())] >= 4

    svc.wait_for(counted, 60, "four checkpoints counted")
    assert svc.terminate() == 0
    record, topic = latest()
    blobs = {k for k in topic if k.startswith(blob_prefix(key))}
    assert record.blobs, "the label buffer's keys and scores are blobs"
    # The latest view of the topic (what compaction leaves) holds exactly what recovery needs.
    assert blobs == {blob_prefix(key) + b.encode() for b in record.blobs}
    tombstoned = read_latest(connection, topics.state, [], prefixes=[blob_prefix(key)])
    assert set(tombstoned) == blobs
    # A record is far smaller than the state it restores: the bulk is in blobs.
    assert len(topic[key]) < len(record.snapshot) / 3, (len(topic[key]), len(record.snapshot))

    # A new member restores the record and its blobs: the state the first one checkpointed last.
    second = services(cfg, port, tmp_path / "second.log")
    second.wait_for(lambda: second.ready() is True, 120, "restarted")
    task = second.state()["tasks"]["0"]
    assert task["restored_digest"] == record.digest
    assert task["labels"]["m"]["pending"] == pending
    assert second.terminate() == 0
