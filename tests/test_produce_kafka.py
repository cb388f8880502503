"""`stream-monitor produce` against the real broker: counts, keys and co-partitioning of labels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from stream_monitor.cli import main

pytestmark = pytest.mark.kafka


def _read_all(consumer_factory: Callable[..., Consumer], topic: str, partitions: int) -> list[Any]:
    consumer = consumer_factory()
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[Any] = []
    idle = 0
    while idle < 5:
        msgs = consumer.consume(1000, timeout=1.0)
        if not msgs:
            idle += 1
            continue
        for m in msgs:
            assert m.error() is None, m.error()
            out.append(m)
    return out


def test_produce_demo_stream_keys_labels_with_their_prediction(
    kafka_bootstrap: str, topic_factory: Callable[..., str], consumer_factory: Callable[..., Consumer]
) -> None:
    predictions = topic_factory(3)
    labels = topic_factory(3)
    code = main(
        [
            "produce", "--bootstrap-servers", kafka_bootstrap, "--source", "demo", "--count", "600",
            "--topic", predictions, "--labels-topic", labels, "--key", "event_id", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    preds = _read_all(consumer_factory, predictions, 3)
    labs = _read_all(consumer_factory, labels, 3)
    assert len(preds) == 600
    partition_of = {}
    for m in preds:
        event = orjson.loads(m.value())
        assert m.key() == event["event_id"].encode()
        assert event["model_id"] == "bikes"
        partition_of[event["event_id"]] = m.partition()
    assert 0 < len(labs) <= 600
    for m in labs:
        label = orjson.loads(m.value())
        # Same key as its prediction, so the label lands in the same partition-task.
        assert partition_of[label["event_id"]] == m.partition()
    assert len({m.partition() for m in preds}) == 3


@pytest.mark.parametrize("stamp", ["created", "event"])
def test_produce_stamps_records_with_their_event_time_when_asked(
    stamp: str,
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    consumer_factory: Callable[..., Consumer],
) -> None:
    """``--timestamp event``: a file of past data keeps its event-time order across the two topics (the
    service merges them by record timestamp); the default stamps the creation time."""
    import time

    from stream_monitor.core.events import parse_ts

    predictions, labels = topic_factory(1), topic_factory(1)
    before = time.time() * 1000
    code = main(
        [
            "produce", "--bootstrap-servers", kafka_bootstrap, "--source", "demo", "--count", "200",
            "--topic", predictions, "--labels-topic", labels, "--timestamp", stamp, "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    records = _read_all(consumer_factory, predictions, 1) + _read_all(consumer_factory, labels, 1)
    assert len(records) > 200
    for m in records:
        ts = parse_ts(orjson.loads(m.value())["ts"])
        assert ts is not None
        if stamp == "event":
            assert m.timestamp()[1] == round(ts * 1000)
        else:
            assert m.timestamp()[1] >= before - 60_000
