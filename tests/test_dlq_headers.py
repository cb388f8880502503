"""Dead-letter records keep the source message's headers, renamed so none can pass for ours."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Message

from stream_monitor.kafka.clients import ORIGINAL_HEADER_PREFIX, OutputProducer, dlq_headers, header_dict


def test_original_headers_follow_ours_under_a_prefix() -> None:
    original = [("reason", b"spoofed"), ("source_offset", b"0"), ("trace", None), ("trace", b"2")]
    headers = dlq_headers("bad_type:ts", "predictions", 1, 9, original)
    assert headers == [
        ("reason", b"bad_type:ts"),
        ("source_topic", b"predictions"),
        ("source_partition", b"1"),
        ("source_offset", b"9"),
        ("original.reason", b"spoofed"),
        ("original.source_offset", b"0"),
        ("original.trace", None),
        ("original.trace", b"2"),
    ]
    assert ORIGINAL_HEADER_PREFIX == "original."
    without = dlq_headers("bad_type:ts", "predictions", 1, 9)
    assert without == dlq_headers("bad_type:ts", "predictions", 1, 9, []) == headers[:4]


def _poll_one(consumer: Any, deadline_s: float = 30.0) -> Message:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            return message
    raise AssertionError("no message within the deadline")


def test_dead_letter_keeps_the_original_headers_through_the_broker(
    kafka_bootstrap: str, topic_factory: Any, producer_factory: Any, consumer_factory: Any
) -> None:
    source, dlq = topic_factory(prefix="dlq-source"), topic_factory(prefix="dlq")
    producer = producer_factory()
    spoof = [
        ("reason", b"not ours"),
        ("source_topic", b"elsewhere"),
        ("trace-id", b"\x00\xffab"),
        ("empty", None),
    ]
    producer.produce(source, value=b"{oops", key=b"k1", headers=spoof)
    producer.flush(30)
    consumer = consumer_factory()
    consumer.subscribe([source])
    message = _poll_one(consumer)

    out = OutputProducer({"bootstrap.servers": kafka_bootstrap}, triggers_topic="unused", dlq_topic=dlq)
    out.dead_letter(
        message.value(),
        "malformed_json",
        message.topic() or "",
        message.partition() or 0,
        message.offset() or 0,
        message.key(),
        original_headers=message.headers(),
    )
    assert out.producer.flush(30) == 0
    assert out.deliveries.failures == []

    reader = consumer_factory()
    reader.subscribe([dlq])
    dead = _poll_one(reader)
    assert dead.value() == b"{oops" and dead.key() == b"k1"
    assert dead.headers() == [
        ("reason", b"malformed_json"),
        ("source_topic", source.encode()),
        ("source_partition", b"0"),
        ("source_offset", str(message.offset()).encode()),
        ("original.reason", b"not ours"),
        ("original.source_topic", b"elsewhere"),
        ("original.trace-id", b"\x00\xffab"),
        ("original.empty", None),
    ]
    readable = header_dict(dead)
    assert readable["reason"] == "malformed_json" and readable["source_topic"] == source
