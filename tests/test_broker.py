"""The development broker itself: ordered, idempotent produce/consume, and a restart that keeps data."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from kafka_fixtures import ConsumerFactory, KafkaBroker, ProducerFactory, TopicFactory

pytestmark = pytest.mark.kafka

IDEMPOTENT = {"enable.idempotence": True, "acks": "all", "linger.ms": 5}


def placed(message: Message) -> tuple[int, int, int]:
    """(partition, value, offset) of a delivered or consumed message."""
    partition, value, offset = message.partition(), message.value(), message.offset()
    assert partition is not None and value is not None and offset is not None
    return partition, int(value), offset


def produce_all(producer: Producer, topic: str, values: range) -> dict[int, list[tuple[int, int]]]:
    """Produce ``values`` (keyed so they spread over partitions); (value, offset) per partition."""
    delivered: dict[int, list[tuple[int, int]]] = defaultdict(list)
    errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            errors.append(error)
        else:
            partition, value, offset = placed(message)
            delivered[partition].append((value, offset))

    for value in values:
        producer.produce(topic, key=f"key-{value % 17}", value=str(value).encode(), on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0, "messages still in the producer queue after 30 s"
    assert errors == []
    return dict(delivered)


def consume_exactly(consumer: Consumer, topic: str, count: int, timeout_s: float = 30.0) -> list[Message]:
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(messages) < count and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=500, timeout=0.5):
            assert message.error() is None, message.error()
            messages.append(message)
    # Anything beyond `count` would be a duplicate; give it a moment to show up.
    messages.extend(m for m in consumer.consume(num_messages=500, timeout=0.5) if m.error() is None)
    return messages


def by_partition(messages: list[Message]) -> dict[int, list[tuple[int, int]]]:
    result: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for message in messages:
        partition, value, offset = placed(message)
        result[partition].append((value, offset))
    return dict(result)


def test_idempotent_produce_then_consume_keeps_count_and_partition_order(
    topic_factory: TopicFactory, producer_factory: ProducerFactory, consumer_factory: ConsumerFactory
) -> None:
    topic = topic_factory(partitions=3)
    delivered = produce_all(producer_factory(IDEMPOTENT), topic, range(1000))
    assert sorted(delivered) == [0, 1, 2], "keys should spread over all three partitions"
    for pairs in delivered.values():
        values = [value for value, _ in pairs]
        assert values == sorted(values), "idempotent producer reordered a partition"

    consumed = consume_exactly(consumer_factory(), topic, 1000)

    assert len(consumed) == 1000
    # Same values, same offsets, same order, partition by partition: nothing lost, duplicated or moved.
    assert by_partition(consumed) == delivered


def test_broker_restart_keeps_data_and_serves_again(
    kafka_broker: KafkaBroker,
    topic_factory: TopicFactory,
    producer_factory: ProducerFactory,
    consumer_factory: ConsumerFactory,
) -> None:
    if not kafka_broker.controllable:
        pytest.skip("external broker (KAFKA_BOOTSTRAP_SERVERS without STREAM_MONITOR_KAFKA_DIR): no restart")
    topic = topic_factory(partitions=2)
    before = produce_all(producer_factory(IDEMPOTENT), topic, range(100))

    kafka_broker.stop()
    time.sleep(2)
    kafka_broker.start()

    after = produce_all(producer_factory(IDEMPOTENT), topic, range(100, 200))
    consumed = consume_exactly(consumer_factory(), topic, 200)

    expected = {p: before.get(p, []) + after.get(p, []) for p in {*before, *after}}
    assert len(consumed) == 200
    assert by_partition(consumed) == expected
