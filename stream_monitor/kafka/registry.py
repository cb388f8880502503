"""The reference registry on Kafka: publish, list, and follow as a global table.

``stream-monitor reference publish --config C --model M --version V REFERENCE`` writes the profile to
``kafka.topics.references`` (default ``stream-monitor-references``; compacted, one partition; key =
``[model id, version]``, the record format in :mod:`stream_monitor.core.registry`), signed like the
state records when ``state.hmac_key_env`` is set. ``reference list`` reads the topic and prints what
is there.

Every member of the group reads the whole topic — a global table, as Kafka Streams' GlobalKTable:
the partitions are assigned, never group-managed, read from the beginning, nothing committed. The
service reads to the end before it subscribes to its inputs (so a restored version finds its
reference and a member is not ready before), then keeps following it between batches: a newly
published reference takes effect with no restart (:meth:`MonitoringEngine.publish_reference`). A
record it cannot use (not a record, bad or missing signature, another schema) is counted in
``stream_monitor_reference_records_total{outcome}`` and logged, and the previous reference stays.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from stream_monitor.config import AppConfig, producer_config
from stream_monitor.core.reference import ReferenceProfile
from stream_monitor.core.registry import (
    RegistryEntry,
    RegistryRecordError,
    decode_record,
    encode_record,
    reference_problem,
    registry_key,
)
from stream_monitor.core.schema import ModelSchema
from stream_monitor.errors import StateError
from stream_monitor.kafka.acls import REGISTRY_READER_GROUP, output_topic_configs
from stream_monitor.kafka.clients import (
    LIBRDKAFKA_LOG,
    STATE_MAX_MESSAGE_BYTES,
    KafkaIOError,
    admin_client,
    connection_config,
    ensure_topics,
)
from stream_monitor.kafka.signing import StateSigner, signer_from_settings

log = logging.getLogger(__name__)


def references_topic_config() -> dict[str, str]:
    """Compacted (the newest record per model version is the table), large records allowed."""
    return output_topic_configs()["references"]


def ensure_references_topic(admin: AdminClient, topic: str) -> list[str]:
    """Create the registry topic (one partition) if it does not exist; the names created."""
    return ensure_topics(admin, {topic: references_topic_config()}, partitions=1)


@dataclass
class RegistryRead:
    """One record read: an entry, or why it was refused (``outcome`` is the metric's label)."""

    outcome: str
    entry: RegistryEntry | None = None
    detail: str = ""


class RegistryFollower:
    """Reads the registry topic as a global table (see the module docstring)."""

    def __init__(
        self,
        app: AppConfig,
        schemas: Mapping[str, ModelSchema],
        signer: StateSigner,
        *,
        error_cb: Callable[[KafkaError], None] | None = None,
    ) -> None:
        k = app.require_kafka()
        self.topic = k.topics.references
        self.schemas = dict(schemas)
        self.detectors = {m.schema.model_id: m.settings.detectors for m in app.models}
        self.signer = signer
        settings: dict[str, object] = {
            **connection_config(k.bootstrap_servers, k.common),
            **{key: v for key, v in k.consumer.items() if key.startswith(("ssl.", "sasl.", "security."))},
            # Never used for offsets (nothing is committed, the partitions are assigned); librdkafka
            # still looks up its coordinator (DESCRIBE on it: stream-monitor acls).
            "group.id": REGISTRY_READER_GROUP,
            "enable.auto.commit": "false",
            "enable.auto.offset.store": "false",
            "auto.offset.reset": "earliest",
            "fetch.message.max.bytes": str(STATE_MAX_MESSAGE_BYTES + 65536),
            "enable.partition.eof": "true",
            "logger": LIBRDKAFKA_LOG,
        }
        if error_cb is not None:
            settings["error_cb"] = error_cb
        try:
            self.consumer = Consumer(settings)
        except KafkaException as exc:
            raise KafkaIOError(f"registry consumer: {exc}") from None
        self._eof: set[int] = set()
        self.partitions: list[int] = []
        self.caught_up = False

    def start(self, timeout: float = 30.0, stop: Callable[[], bool] = lambda: False) -> None:
        """Assign every partition of the topic from the beginning, once they have leaders (a topic
        created a moment ago may not have them yet: waited for, up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        problem = "no metadata"
        while not stop():
            try:
                metadata = self.consumer.list_topics(
                    self.topic, timeout=max(1.0, deadline - time.monotonic())
                )
            except KafkaException as exc:
                problem = f"cannot read its metadata: {exc}"
            else:
                topic = metadata.topics.get(self.topic)
                if topic is None or topic.error is not None or not topic.partitions:
                    problem = "it is not there" if topic is None or topic.error is None else str(topic.error)
                elif all(p.leader >= 0 for p in topic.partitions.values()):
                    self.partitions = sorted(topic.partitions)
                    self.consumer.assign(
                        [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in self.partitions]
                    )
                    return
                else:
                    problem = "a partition has no leader"
            if time.monotonic() > deadline:
                raise KafkaIOError(
                    f"the reference registry topic {self.topic}: {problem} (after {timeout:g}s)"
                )
            time.sleep(0.2)

    def read(self, timeout: float = 0.0, max_records: int = 500) -> list[RegistryRead]:
        """Records available now (waiting up to ``timeout`` for the first)."""
        try:
            messages = self.consumer.consume(num_messages=max_records, timeout=timeout)
        except KafkaException as exc:
            raise KafkaIOError(f"reading {self.topic}: {exc}") from None
        reads: list[RegistryRead] = []
        for message in messages:
            err = message.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self._eof.add(message.partition() or 0)
                    if self._eof.issuperset(self.partitions):
                        self.caught_up = True
                    continue
                raise KafkaIOError(f"reading {self.topic}: {err.str()}")
            self._eof.discard(message.partition() or 0)
            reads.append(self._one(message.key(), message.value()))
        return reads

    def catch_up(
        self, deadline_seconds: float, stop: Callable[[], bool] = lambda: False
    ) -> list[RegistryRead]:
        """Everything up to the end of the topic (its end at the time of reading)."""
        reads: list[RegistryRead] = []
        ends = time.monotonic() + deadline_seconds
        while not self.caught_up and not stop():
            if time.monotonic() > ends:
                raise KafkaIOError(
                    f"the reference registry {self.topic} was not read to its end "
                    f"within {deadline_seconds:g}s"
                )
            reads += self.read(timeout=0.5)
        return reads

    def _one(self, key: bytes | None, value: bytes | None) -> RegistryRead:
        try:
            record = value
            if value is not None:
                record = self.signer.open(key or b"", value)
            entry = decode_record(key, record, self.schemas, self.detectors)
        except RegistryRecordError as exc:
            return RegistryRead(exc.reason, detail=str(exc))
        except StateError as exc:  # RecordRejected: bad_signature / unsigned
            return RegistryRead(getattr(exc, "reason", "bad_record"), detail=str(exc))
        return RegistryRead("tombstone" if entry.profile is None else "loaded", entry)

    def close(self) -> None:
        self.consumer.close()


def publish_reference(
    app: AppConfig,
    model_id: str,
    version: str,
    profile: ReferenceProfile,
    *,
    timeout: float = 60.0,
) -> tuple[bytes, int]:
    """Write ``profile`` as the reference of ``model_id`` version ``version``; (key, bytes written).

    Checked before it is sent, as every member will check it: a profile that does not fit the
    model's schema is refused here with the reason.
    """
    schemas = app.schemas()
    schema = schemas.get(model_id)
    if schema is None:
        raise KafkaIOError(f"model {model_id!r} is not in the configuration")
    detectors = next(m.settings.detectors for m in app.models if m.schema.model_id == model_id)
    problem = reference_problem(schema, profile, detectors)
    if problem is not None:
        raise KafkaIOError(f"the reference does not fit model {model_id!r}: {problem}")
    k = app.require_kafka()
    signer = signer_from_settings(app.state)
    key = registry_key(model_id, version)
    value = signer.seal(key, encode_record(profile, model_id, version, published_at=time.time()))
    if len(value) > STATE_MAX_MESSAGE_BYTES:
        raise KafkaIOError(f"the compressed reference is {len(value)} bytes, above {STATE_MAX_MESSAGE_BYTES}")
    admin = admin_client(connection_config(k.bootstrap_servers, k.common))
    ensure_references_topic(admin, k.topics.references)
    settings: dict[str, object] = {
        **producer_config(app),
        "message.max.bytes": str(STATE_MAX_MESSAGE_BYTES + 65536),
        "logger": LIBRDKAFKA_LOG,
    }
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(err.str())

    producer = Producer(settings)
    producer.produce(k.topics.references, value=value, key=key, on_delivery=delivered)
    if producer.flush(timeout) != 0:
        raise KafkaIOError(f"the reference was not acknowledged within {timeout:g}s")
    if failures:
        raise KafkaIOError(f"publishing to {k.topics.references} failed: {failures[0]}")
    return key, len(value)


def list_references(app: AppConfig, timeout: float = 30.0) -> list[RegistryRead]:
    """Every record of the registry topic, oldest first, each decoded and checked as a member would."""
    follower = RegistryFollower(app, app.schemas(), signer_from_settings(app.state))
    try:
        follower.start(timeout)
        return follower.catch_up(timeout)
    finally:
        follower.close()


__all__ = [
    "RegistryFollower",
    "RegistryRead",
    "ensure_references_topic",
    "list_references",
    "publish_reference",
    "references_topic_config",
]
