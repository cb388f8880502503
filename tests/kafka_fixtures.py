"""Pytest fixtures for a real Kafka broker (see ``deploy/local/kafka.sh``).

The broker is session-scoped and lazy: only tests that use one of these fixtures (and so are marked
``kafka``, which ``conftest.py`` adds automatically) start it. ``KAFKA_BOOTSTRAP_SERVERS`` selects an
existing broker; ``STREAM_MONITOR_KAFKA_DIR`` (set by ``deploy/local/test.sh``) names the directory of
a broker started by ``kafka.sh``, which lets tests stop and restart it. When the broker cannot be had,
the tests fail under ``CI`` or ``STREAM_MONITOR_REQUIRE_KAFKA=1`` and are skipped otherwise.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

KAFKA_SH = Path(__file__).resolve().parent.parent / "deploy" / "local" / "kafka.sh"
# The first run downloads the broker jars from Maven Central.
FETCH_TIMEOUT_S = 600.0
START_TIMEOUT_S = 120.0


def kafka_required() -> bool:
    """Whether a missing broker is an error (CI) rather than a reason to skip (a laptop)."""
    return bool(os.environ.get("CI")) or os.environ.get("STREAM_MONITOR_REQUIRE_KAFKA") == "1"


def unique_name(prefix: str) -> str:
    """A topic or group name no other test (or earlier run against the same broker) has used."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", prefix).strip("-.")[:80] or "t"
    return f"{safe}-{uuid.uuid4().hex[:10]}"


def broker_answers(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request within ``timeout_s``."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        return bool(admin.list_topics(timeout=timeout_s).brokers)
    except KafkaException:
        return False


class KafkaBroker:
    """A running broker: its bootstrap address and, when this session controls it, stop/start.

    ``directory`` is the ``kafka.sh`` broker directory, or ``None`` for an external broker that tests
    may use but not stop.
    """

    def __init__(self, bootstrap: str, directory: Path | None, owned: bool) -> None:
        self.bootstrap = bootstrap
        self.directory = directory
        self.owned = owned

    @property
    def controllable(self) -> bool:
        """Whether ``stop()`` and ``start()`` can act on this broker."""
        return self.directory is not None

    def _run(self, command: str, timeout_s: float) -> str:
        if self.directory is None:
            raise RuntimeError(f"the broker at {self.bootstrap} is external: it cannot be stopped or started")
        # Without this, kafka.sh start would only check the external address instead of starting.
        env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
        result = subprocess.run(
            ["bash", str(KAFKA_SH), command, str(self.directory)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kafka.sh {command} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return result.stdout

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after a grace period); its storage is kept."""
        self._run("stop", START_TIMEOUT_S)

    def start(self) -> None:
        """Start the broker again on the same ports and storage; returns once it answers."""
        stdout = self._run("start", START_TIMEOUT_S)
        if f"KAFKA_BOOTSTRAP_SERVERS={self.bootstrap}" not in stdout:
            raise RuntimeError(f"broker came back on another address: {stdout!r}, expected {self.bootstrap}")


def _start_own_broker(directory: Path) -> KafkaBroker:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    for command, timeout_s in (("fetch", FETCH_TIMEOUT_S), ("start", START_TIMEOUT_S)):
        args = ["bash", str(KAFKA_SH), command] + ([str(directory)] if command == "start" else [])
        result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"kafka.sh {command} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    match = re.search(r"^KAFKA_BOOTSTRAP_SERVERS=(\S+)$", result.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"kafka.sh start printed no bootstrap address: {result.stdout!r}")
    return KafkaBroker(match.group(1), directory, owned=True)


def _acquire_broker(tmp_path_factory: pytest.TempPathFactory) -> KafkaBroker:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap:
        if not broker_answers(bootstrap, timeout_s=15.0):
            raise RuntimeError(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap} does not answer a metadata request")
        directory = os.environ.get("STREAM_MONITOR_KAFKA_DIR")
        return KafkaBroker(bootstrap, Path(directory) if directory else None, owned=False)
    return _start_own_broker(tmp_path_factory.mktemp("kafka"))


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The session's broker, started on first use and stopped at the end of the session."""
    try:
        broker = _acquire_broker(tmp_path_factory)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        message = f"no Kafka broker: {exc}"
        if kafka_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message + "\n(set CI or STREAM_MONITOR_REQUIRE_KAFKA=1 to make this an error)")
    try:
        yield broker
    finally:
        if broker.owned:
            broker.stop()


@pytest.fixture
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """``host:port`` of the session's broker."""
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def kafka_admin(kafka_broker: KafkaBroker) -> AdminClient:
    """An AdminClient on the session's broker."""
    return AdminClient({"bootstrap.servers": kafka_broker.bootstrap})


def _wait_for_topic(admin: AdminClient, topic: str, partitions: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(topic=topic, timeout=max(0.5, deadline - time.monotonic()))
        found = metadata.topics.get(topic)
        if (
            found is not None
            and found.error is None
            and len(found.partitions) == partitions
            and all(p.leader >= 0 for p in found.partitions.values())
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} has no leaders for its {partitions} partitions yet")
        time.sleep(0.05)


TopicFactory = Callable[..., str]


@pytest.fixture
def topic_factory(kafka_admin: AdminClient, request: pytest.FixtureRequest) -> TopicFactory:
    """Create a fresh, uniquely named topic and wait until all its partitions have a leader.

    ``topic_factory(partitions=1, *, prefix=None, config=None) -> name``. ``config`` holds topic
    configs such as ``{"cleanup.policy": "compact"}``. Topics are left on the broker (it is temporary).
    """

    def create(
        partitions: int = 1, *, prefix: str | None = None, config: Mapping[str, str] | None = None
    ) -> str:
        name = unique_name(prefix or request.node.name)
        new_topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict(config or {}))
        kafka_admin.create_topics([new_topic], operation_timeout=30)[name].result(timeout=30)
        _wait_for_topic(kafka_admin, name, partitions, timeout_s=30.0)
        return name

    return create


@pytest.fixture
def group_id(request: pytest.FixtureRequest) -> str:
    """A consumer group id no other test uses."""
    return unique_name(f"group-{request.node.name}")


ProducerFactory = Callable[..., Producer]


@pytest.fixture
def producer_factory(kafka_bootstrap: str) -> Iterator[ProducerFactory]:
    """``producer_factory(config=None) -> Producer`` on the session's broker; flushed at teardown."""
    producers: list[Producer] = []

    def create(config: Mapping[str, Any] | None = None) -> Producer:
        producer = Producer({"bootstrap.servers": kafka_bootstrap, **(config or {})})
        producers.append(producer)
        return producer

    yield create
    for producer in producers:
        producer.flush(10)


ConsumerFactory = Callable[..., Consumer]


@pytest.fixture
def consumer_factory(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[ConsumerFactory]:
    """``consumer_factory(config=None, *, group_id=None) -> Consumer``; closed at teardown.

    Defaults: a fresh group id, ``auto.offset.reset=earliest``; ``config`` overrides them.
    """
    consumers: list[Consumer] = []

    def create(config: Mapping[str, Any] | None = None, *, group_id: str | None = None) -> Consumer:
        settings: dict[str, Any] = {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group_id or unique_name(f"group-{request.node.name}"),
            "auto.offset.reset": "earliest",
        }
        settings.update(config or {})
        consumer = Consumer(settings)
        consumers.append(consumer)
        return consumer

    yield create
    for consumer in consumers:
        with contextlib.suppress(RuntimeError):  # already closed by the test
            consumer.close()


KAFKA_FIXTURES = frozenset(
    {
        "kafka_broker",
        "kafka_bootstrap",
        "kafka_admin",
        "topic_factory",
        "producer_factory",
        "consumer_factory",
    }
)


def mark_kafka_tests(items: list[pytest.Item]) -> None:
    """Mark every test that uses a broker fixture ``kafka``, so ``-m "not kafka"`` never starts one."""
    for item in items:
        uses_broker = KAFKA_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if uses_broker and not item.get_closest_marker("kafka"):
            item.add_marker(pytest.mark.kafka)
