"""``/readyz`` of the service: ready only while the member owns partition-tasks; the reason is in the body.

A unit test: a real :class:`~stream_monitor.kafka.service.Service` (metrics, health, rebalance callbacks and
the real HTTP server) with a fake consumer and checkpointer, so it needs no broker and runs in well
under a second. The rebalance path is the real one (``_assign``, ``_on_lost``); only the state-topic
read is replaced.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest
from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

import stream_monitor.kafka.service as service_module
from stream_monitor.config import parse_config
from stream_monitor.kafka.service import Service
from stream_monitor.web.server import serve_http

LAG_BOUND = 1000


class FakeConsumer:
    """What ``_assign``, ``_on_lost`` and ``_update_lag`` call on the consumer."""

    def __init__(self) -> None:
        self.high = 0
        self.assigned: list[TopicPartition] = []
        self.paused: set[tuple[str, int]] = set()

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = list(partitions)  # a pause outlives an assignment, as in librdkafka

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, self.high


class FakeCheckpointer:
    last_success = time.time()

    def forget(self) -> None:
        """No checkpoint is in flight here."""


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Service:
    monkeypatch.setattr(service_module, "read_latest", lambda *args, **kwargs: {})  # no saved state
    app = parse_config(
        {
            "kafka": {"bootstrap_servers": "127.0.0.1:9"},  # never contacted
            "metrics": {"ready_max_lag": LAG_BOUND},
            "models": [{"id": "m", "task": "regression", "features": {"x": "numeric"}}],
        },
        env={},
    )
    svc = Service(app, {"m": None}, registry=CollectorRegistry())
    fake: Any = FakeConsumer()
    svc.consumer = fake
    checkpointer: Any = FakeCheckpointer()
    svc.checkpointer = checkpointer
    return svc


def update(svc: Service) -> tuple[bool, dict[str, Any]]:
    svc._last_lag = 0.0  # refresh the lag now, not once a second
    svc._update_health()
    return svc.health.snapshot()


def partitions(svc: Service, p: int) -> list[TopicPartition]:
    return [TopicPartition(svc.topics[role], p) for role in ("predictions", "labels")]


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def test_not_ready_while_no_partition_is_assigned_even_after_an_assignment(service: Service) -> None:
    svc = service
    consumer: Any = svc.consumer
    server = serve_http(svc.metrics.registry, svc.health, "127.0.0.1", 0)
    port = server.server_address[1]
    gauge = "stream_monitor_ready"
    try:
        ready, detail = update(svc)
        assert not ready and detail["reason"] == "no partitions assigned"
        assert get(port, "/readyz") == (503, {"ready": False, **detail})

        svc._assign(consumer, partitions(svc, 0))
        ready, detail = update(svc)
        assert ready and detail["reason"] is None and detail["assigned"] == [0]
        assert get(port, "/readyz")[0] == 200
        assert svc.metrics.registry.get_sample_value(gauge) == 1.0

        # A broker outage: the session expires, the partitions are lost, the broker answers again.
        # The member was assigned once, but owns nothing now: not ready until it is assigned again.
        svc._on_lost(consumer, partitions(svc, 0))
        assert svc.assigned_once and svc.broker_up and not svc.tasks
        ready, detail = update(svc)
        assert not ready
        code, body = get(port, "/readyz")
        assert code == 503
        assert body == {
            "ready": False,
            "assigned": [],
            "broker_up": True,
            "max_lag": 0,
            "assigned_once": True,
            "reason": "no partitions assigned",
        }
        assert svc.metrics.registry.get_sample_value(gauge) == 0.0

        svc._assign(consumer, partitions(svc, 1))
        assert update(svc)[0] and get(port, "/readyz")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_every_unmet_condition_is_in_the_reason(service: Service) -> None:
    svc = service
    consumer: Any = svc.consumer
    svc._assign(consumer, partitions(svc, 0))
    consumer.high = LAG_BOUND + 1
    ready, detail = update(svc)
    assert not ready
    assert detail["reason"] == f"consumer lag {LAG_BOUND + 1} above metrics.ready_max_lag {LAG_BOUND}"
    svc.broker_up = False
    svc._on_lost(consumer, partitions(svc, 0))
    ready, detail = update(svc)
    assert not ready
    assert detail["reason"] == "no partitions assigned; broker unreachable"


def test_a_partition_paused_before_a_rebalance_is_resumed_when_it_comes_back(service: Service) -> None:
    """librdkafka keeps a partition's pause across assignments; the new task never paused it, so the
    member must resume it on assignment, or that input stalls for good (seen on the real broker in
    tests/test_two_stage_kafka.py, where members join one by one while the backlog is read)."""
    svc = service
    consumer: Any = svc.consumer
    svc._assign(consumer, partitions(svc, 0))
    consumer.paused = {(svc.topics["predictions"], 0)}  # the buffer of the other input was full
    svc._on_lost(consumer, partitions(svc, 0))
    svc._assign(consumer, partitions(svc, 0))
    assert consumer.paused == set()
