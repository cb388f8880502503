"""Thin typed wrappers over confluent-kafka: clients, topics, and the records the service writes.

Only the modules of :mod:`stream_monitor.kafka` import ``confluent_kafka``. Settings come from
:func:`stream_monitor.config.consumer_config` / :func:`~stream_monitor.config.producer_config`
(pinned defaults plus the user's librdkafka passthrough); nothing here invents a setting silently.

Dead-letter records keep the original bytes and say why and where from in their headers; the original
message's own headers follow, renamed with the prefix ``original.`` so none can pass for ours:

>>> [name for name, _ in dlq_headers("missing_field:ts", "predictions", 3, 42)]
['reason', 'source_topic', 'source_partition', 'source_offset']
>>> dict(dlq_headers("too_large", "predictions", 3, 42))["source_offset"]
b'42'
>>> dlq_headers("empty", "labels", 0, 7, [("reason", b"spoofed"), ("trace-id", b"ab12")])[-2:]
[('original.reason', b'spoofed'), ('original.trace-id', b'ab12')]
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from stream_monitor.core.triggers import Trigger
from stream_monitor.errors import StreamMonitorError

log = logging.getLogger("stream_monitor.kafka")

# librdkafka errors after which a client cannot continue (besides those flagged ``fatal()``).
_FATAL_CODES = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
        KafkaError._INVALID_ARG,
    }
)
# Errors that mean "no broker reachable right now" (readiness goes false until one answers again).
BROKER_DOWN_CODES = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT})


class KafkaIOError(StreamMonitorError):
    """A Kafka operation failed; the message names the topic/partition/offset involved."""


class FatalKafkaError(KafkaIOError):
    """The service cannot continue (fatal client error, lost delivery, failed commit): exit non-zero."""


def is_fatal(error: KafkaError) -> bool:
    """Whether a client error ends the service (everything else is retried and counted).

    >>> is_fatal(KafkaError(KafkaError._TRANSPORT)), is_fatal(KafkaError(KafkaError._FENCED))
    (False, True)
    """
    return bool(error.fatal()) or error.code() in _FATAL_CODES


#: Prefix of the original message's headers on its dead-letter record.
ORIGINAL_HEADER_PREFIX = "original."


def dlq_headers(
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    original_headers: Sequence[tuple[str, bytes | None]] | None = None,
) -> list[tuple[str, bytes | None]]:
    """The dead-letter record's headers (contract: reason, source topic, partition, offset).

    Then each of ``original_headers`` (the source message's, in their order, repeats and ``None``
    values kept) as ``original.<name>``: a producer's own ``reason`` header arrives as
    ``original.reason``, so ``reason`` and ``source_*`` are only ever ours.
    """
    headers: list[tuple[str, bytes | None]] = [
        ("reason", reason.encode()),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
    ]
    for name, value in original_headers or ():
        headers.append((ORIGINAL_HEADER_PREFIX + name, value))
    return headers


def headers_of(message: Message) -> list[tuple[str, bytes | None]]:
    """A consumed message's headers as ``(name, bytes or None)`` pairs, in order (for the DLQ)."""
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(name, value.encode() if isinstance(value, str) else value) for name, value in pairs]


def header_dict(message: Message) -> dict[str, str]:
    """A consumed message's headers as ``{name: utf-8 text}`` (for tests and tools)."""
    out: dict[str, str] = {}
    for header in message.headers() or []:
        name, value = header[0], header[1]
        out[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")
    return out


class DeliveryTracker:
    """Counts outstanding deliveries and remembers every failed one.

    Checkpoints flush the producer and then ask :meth:`raise_failures`: offsets are committed only
    when every record produced before them (trigger, dead letter, state) is acknowledged.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures: list[str] = []
        self.delivered = 0

    def callback(self, error: KafkaError | None, message: Message) -> None:
        """``on_delivery`` for every record we produce."""
        with self._lock:
            if error is None:
                self.delivered += 1
            else:
                denied = (
                    " (not authorised to WRITE this topic)"
                    if error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
                    else ""
                )
                self.failures.append(
                    f"{message.topic()}[{message.partition()}] key={message.key()!r}: {error.str()}{denied}"
                )

    def raise_failures(self) -> None:
        """Raise :class:`FatalKafkaError` if any delivery failed since the start."""
        with self._lock:
            if self.failures:
                raise FatalKafkaError(
                    f"{len(self.failures)} record(s) were not delivered; offsets are not committed: "
                    + "; ".join(self.failures[:5])
                )


class OutputProducer:
    """The service's one producer: triggers, dead letters and state changelog records.

    Idempotent and ``acks=all`` (pinned in the configuration); with ``transactional_id`` every output
    of a checkpoint interval is one Kafka transaction together with the consumed offsets.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        triggers_topic: str,
        dlq_topic: str,
        error_cb: Callable[[KafkaError], None] | None = None,
        transactional_id: str | None = None,
    ) -> None:
        settings: dict[str, Any] = dict(config)
        # State snapshots can exceed the 1 MB default (the label-join buffer); the state topic is
        # created with a matching max.message.bytes (see stream_monitor.kafka.state).
        settings.setdefault("message.max.bytes", str(STATE_MAX_MESSAGE_BYTES + 65536))
        settings.setdefault("logger", LIBRDKAFKA_LOG)
        if error_cb is not None:
            settings["error_cb"] = error_cb
        if transactional_id is not None:
            settings["transactional.id"] = transactional_id
        try:
            self.producer = Producer(settings)
        except KafkaException as exc:
            raise _client_error("producer", exc) from None
        self.triggers_topic = triggers_topic
        self.dlq_topic = dlq_topic
        self.deliveries = DeliveryTracker()
        self.transactional = transactional_id is not None

    def trigger(self, trigger: Trigger) -> None:
        """A retrain trigger (emitted: ``emitted_at`` stamped), keyed by model id (contract)."""
        self._produce(self.triggers_topic, trigger.model_id.encode(), trigger.to_json_bytes())

    def dead_letter(
        self,
        raw: bytes | None,
        reason: str,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None = None,
        original_headers: Sequence[tuple[str, bytes | None]] | None = None,
    ) -> None:
        """The original message, unchanged, with the reason and its origin in the headers.

        ``original_headers`` (the source message's ``headers()``) follow ours as ``original.<name>``
        (see :func:`dlq_headers`).
        """
        headers = dlq_headers(reason, topic, partition, offset, original_headers)
        self._produce(self.dlq_topic, key, raw, headers)

    def record(self, topic: str, key: bytes, value: bytes | None) -> None:
        """Any other record (state changelog entries)."""
        self._produce(topic, key, value)

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
    ) -> None:
        while True:
            try:
                self.producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=list(headers or []),
                    on_delivery=self.deliveries.callback,
                )
                break
            except BufferError:
                # Local queue full (broker slow or away): serve delivery reports and try again.
                self.producer.poll(0.1)
            except KafkaException as exc:
                raise FatalKafkaError(f"cannot produce to {topic}: {exc}") from exc
        self.producer.poll(0)

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every outstanding delivery; returns how many remain."""
        return int(self.producer.flush(timeout))

    def poll(self) -> None:
        """Serve delivery reports and error callbacks without blocking."""
        self.producer.poll(0)


def make_consumer(
    config: Mapping[str, Any],
    *,
    error_cb: Callable[[KafkaError], None] | None = None,
    stats_cb: Callable[[str], None] | None = None,
    statistics_interval_ms: int = 1000,
) -> Consumer:
    """The group consumer; statistics feed readiness (broker states) when ``stats_cb`` is given."""
    settings: dict[str, Any] = dict(config)
    settings.setdefault("logger", LIBRDKAFKA_LOG)
    if error_cb is not None:
        settings["error_cb"] = error_cb
    if stats_cb is not None:
        settings["stats_cb"] = stats_cb
        settings.setdefault("statistics.interval.ms", statistics_interval_ms)
    try:
        return Consumer(settings)
    except KafkaException as exc:
        raise _client_error("consumer", exc) from None


class RepeatFilter(logging.Filter):
    """Lets a librdkafka message through once per ``interval`` seconds per kind of message.

    An unreachable broker makes librdkafka log every reconnect attempt ("Connect to ipv4#… failed:
    Connection refused", hundreds a minute); one line per kind and interval says the same. Numbers
    are blanked out to decide what counts as the same kind; suppressed repeats are counted in the
    next line that gets through.
    """

    def __init__(self, interval: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self._last: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = re.sub(r"\d+", "#", record.getMessage())[:200]
        now = self.clock()
        last, suppressed = self._last.get(kind, (-float("inf"), 0))
        if now - last < self.interval:
            self._last[kind] = (last, suppressed + 1)
            return False
        if len(self._last) > 1000:  # bounded: message kinds are few, but never trust that
            self._last.clear()
        self._last[kind] = (now, 0)
        if suppressed:
            record.msg = f"{record.getMessage()} ({suppressed} similar message(s) suppressed)"
            record.args = ()
        return True


def connection_failures_are_warnings(record: logging.LogRecord) -> bool:
    """librdkafka logs each failed connection attempt (``FAIL``: refused, a TLS handshake, a SASL
    exchange) at error level, and then retries it. They are warnings: the service decides what is
    fatal (a rejected password or certificate, an outage past the start-up timeout) and says so in
    one error of its own."""
    if record.levelno > logging.WARNING and record.getMessage().startswith("FAIL "):
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


#: librdkafka's own log lines (connection failures, ...) go here, rate-limited.
LIBRDKAFKA_LOG = logging.getLogger("stream_monitor.librdkafka")
LIBRDKAFKA_LOG.addFilter(connection_failures_are_warnings)
LIBRDKAFKA_LOG.addFilter(RepeatFilter())


def connection_config(bootstrap_servers: str, common: Mapping[str, str]) -> dict[str, Any]:
    """Settings every client needs to reach the cluster: the bootstrap list and ``kafka.common``,
    and librdkafka's log routed to :data:`LIBRDKAFKA_LOG` (rate-limited) instead of stderr."""
    return {**dict(common), "bootstrap.servers": bootstrap_servers, "logger": LIBRDKAFKA_LOG}


def _client_error(kind: str, exc: KafkaException) -> KafkaIOError:
    """A client librdkafka refused to create (an unreadable keystore, a wrong key password, an unknown
    setting): one line, no traceback. librdkafka's text names the setting, never a secret's value."""
    return KafkaIOError(f"cannot create the Kafka {kind}: {exc.args[0] if exc.args else exc}")


def admin_client(
    connection: Mapping[str, Any], error_cb: Callable[[KafkaError], None] | None = None
) -> AdminClient:
    """An AdminClient on the connection settings (security included); ``error_cb`` sees its errors
    (served by ``poll()`` and its blocking calls)."""
    settings = dict(connection)
    if error_cb is not None:
        settings["error_cb"] = error_cb
    try:
        return AdminClient(settings)
    except KafkaException as exc:
        raise _client_error("admin client", exc) from None


# Largest state snapshot record we write (and the max.message.bytes of the state topic we create).
STATE_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def ensure_topics(
    admin: AdminClient, topics: Mapping[str, Mapping[str, str]], partitions: int = 1, timeout: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet (``name -> topic configs``); returns those created.

    An existing topic is left as it is (its owner may have tuned it); a topic another member created
    at the same moment is fine.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            existing = set(admin.list_topics(timeout=max(1.0, deadline - time.monotonic())).topics)
            break
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise KafkaIOError(f"cannot list topics: {exc}") from exc
            time.sleep(1.0)
    missing = [
        NewTopic(name, num_partitions=partitions, replication_factor=-1, config=dict(cfg))
        for name, cfg in topics.items()
        if name not in existing
    ]
    created: list[str] = []
    if not missing:
        return created
    for name, future in admin.create_topics(missing, operation_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise KafkaIOError(f"cannot create topic {name}: {exc}") from exc
    return created
