"""The topics of a deployment: create them, check that the inputs are co-partitioned, read triggers.

``stream-monitor topics create`` makes the two input topics with the same partition count (and the
output topics the service would otherwise create itself); the service checks co-partitioning at
start-up and on every rebalance (:func:`co_partitioning_problem`); ``stream-monitor triggers tail``
prints the trigger events as JSON lines, for a first look without Kafka's own tools.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from stream_monitor.config import AppConfig
from stream_monitor.core.triggers import MODEL_VERSION_CHANGED
from stream_monitor.kafka.clients import (
    STATE_MAX_MESSAGE_BYTES,
    KafkaIOError,
    admin_client,
    connection_config,
)

#: Partition-task assignment needs partition p of both inputs on one member: only range does it.
CO_PARTITIONING_ASSIGNORS = frozenset({"range"})


def partition_counts(admin: AdminClient, topics: list[str], timeout: float = 30.0) -> dict[str, int | None]:
    """Partitions of each topic, ``None`` for a topic that does not exist."""
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaIOError(f"cannot list topics: {exc}") from exc
    counts: dict[str, int | None] = {}
    for name in topics:
        t = metadata.topics.get(name)
        counts[name] = None if t is None or t.error is not None else len(t.partitions)
    return counts


def co_partitioning_problem(
    predictions: str, labels: str, counts: Mapping[str, int | None], assignor: str
) -> str | None:
    """Why the label join cannot work with these topics and this assignor, or ``None`` when it can.

    >>> co_partitioning_problem("p", "l", {"p": 3, "l": 1}, "range")
    'predictions topic p has 3 partitions but labels topic l has 1: a label would be looked for in \
another partition-task than its prediction; give both topics the same partition count'
    >>> co_partitioning_problem("p", "l", {"p": 2, "l": 2}, "range") is None
    True
    """
    n_p, n_l = counts.get(predictions), counts.get(labels)
    if n_p is not None and n_l is not None and n_p != n_l:
        return (
            f"predictions topic {predictions} has {n_p} partitions but labels topic {labels} has {n_l}: "
            "a label would be looked for in another partition-task than its prediction; give both "
            "topics the same partition count"
        )
    if assignor not in CO_PARTITIONING_ASSIGNORS:
        return (
            f"kafka.assignment_strategy {assignor} does not keep partition p of {predictions} and "
            f"{labels} on one member; use range"
        )
    return None


def partials_topic_config() -> dict[str, str]:
    """The partials topic of two-stage aggregation: large records (a window's sketch), kept a week."""
    return {"max.message.bytes": str(STATE_MAX_MESSAGE_BYTES), "retention.ms": str(7 * 86400 * 1000)}


@dataclass
class TopicsCreated:
    created: list[str]
    existing: dict[str, int]


def create_topics(app: AppConfig, partitions: int, replication_factor: int = -1) -> TopicsCreated:
    """Create the input topics with ``partitions`` each, and the output topics as the service would.

    Raises :class:`KafkaIOError` when an input topic exists with another partition count than its
    partner (the label join would silently fail).
    """
    k = app.require_kafka()
    admin = admin_client(connection_config(k.bootstrap_servers, k.common))
    big = {"max.message.bytes": str(STATE_MAX_MESSAGE_BYTES)}
    wanted: dict[str, tuple[int, dict[str, str]]] = {
        k.topics.predictions: (partitions, {}),
        k.topics.labels: (partitions, {}),
        k.topics.triggers: (1, {}),
        k.topics.dlq: (1, big),
        k.topics.state: (1, {"cleanup.policy": "compact", **big}),
    }
    if app.aggregation.mode == "two_stage":  # the model stage's input, spread as the shards are
        wanted[k.topics.partials] = (partitions, partials_topic_config())
    else:  # the reference registry every member reads whole
        wanted[k.topics.references] = (1, {"cleanup.policy": "compact", **big})
    counts = partition_counts(admin, list(wanted))
    existing = {name: n for name, n in counts.items() if n is not None}
    missing = [
        NewTopic(name, num_partitions=n, replication_factor=replication_factor, config=cfg)
        for name, (n, cfg) in wanted.items()
        if name not in existing
    ]
    created: list[str] = []
    if missing:
        for name, future in admin.create_topics(missing, operation_timeout=30).items():
            try:
                future.result(timeout=60)
                created.append(name)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                    raise KafkaIOError(f"cannot create topic {name}: {exc}") from exc
    counts = partition_counts(admin, [k.topics.predictions, k.topics.labels])
    problem = co_partitioning_problem(k.topics.predictions, k.topics.labels, counts, k.assignment_strategy)
    if problem is not None:
        raise KafkaIOError(problem)
    return TopicsCreated(created, existing)


def tail_triggers(
    app: AppConfig,
    on_value: Callable[[bytes], None],
    max_records: int = 0,
    timeout: float = 0.0,
    from_beginning: bool = True,
    lifecycle: bool = False,
) -> int:
    """Read the triggers topic (committed records only) and hand each trigger's value to ``on_value``;
    the topic's lifecycle records (``model_version_changed``) too when ``lifecycle``.

    Stops after ``max_records`` (0: never) or when ``timeout`` seconds (0: never) pass; returns how
    many it handed on. Uses no consumer group offsets (a throw-away group, nothing committed).
    """
    k = app.require_kafka()
    consumer = Consumer(
        {
            **connection_config(k.bootstrap_servers, k.common),
            "group.id": f"stream-monitor-tail-{time.time_ns()}",
            "enable.auto.commit": "false",
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "isolation.level": "read_committed",
        }
    )
    seen = 0
    started = time.monotonic()
    try:
        consumer.subscribe([k.topics.triggers])
        while (not max_records or seen < max_records) and (
            not timeout or time.monotonic() - started < timeout
        ):
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                    continue
                raise KafkaIOError(f"reading {k.topics.triggers}: {err.str()}")
            value = msg.value()
            if value is not None and (lifecycle or not _is_lifecycle(value)):
                on_value(value)
                seen += 1
    finally:
        consumer.close()
    return seen


def _is_lifecycle(value: bytes) -> bool:
    """Whether a triggers-topic record is a lifecycle record (core/triggers.py ModelVersionChanged)."""
    if MODEL_VERSION_CHANGED.encode() not in value:
        return False
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return isinstance(record, dict) and record.get("kind") == MODEL_VERSION_CHANGED


__all__ = [
    "CO_PARTITIONING_ASSIGNORS",
    "co_partitioning_problem",
    "create_topics",
    "partition_counts",
    "tail_triggers",
]
