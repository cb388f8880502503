"""Start-up checks that fail loudly (a platform engineer's first hour), against the real broker:
inputs that are not co-partitioned, an unreachable bootstrap address, and the topics / triggers
commands of the quickstart."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from service_fixtures import (
    ROOT,
    ServiceProcess,
    ServiceTopics,
    free_port,
    produce,
    synthetic,
    write_config,
)

from stream_monitor.kafka.clients import RepeatFilter

pytestmark = pytest.mark.kafka


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_monitor.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ROOT),
    )


def test_inputs_with_different_partition_counts_are_reported_and_not_ready(
    kafka_bootstrap: str, topic_factory: Any, group_id: str, tmp_path: Path
) -> None:
    predictions = topic_factory(3, prefix="predictions")
    labels = topic_factory(1, prefix="labels")
    topics = ServiceTopics(
        predictions,
        labels,
        predictions.replace("predictions", "triggers"),
        predictions.replace("predictions", "dlq"),
        predictions.replace("predictions", "state"),
    )
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topics, group_id, port)
    svc = ServiceProcess(cfg, port, tmp_path / "run.log").start()
    try:

        def reported() -> bool:
            code, body = svc._get("/readyz")
            reason = orjson.loads(body).get("reason") or ""
            return code == 503 and f"{predictions} has 3 partitions" in reason and f"{labels} has 1" in reason

        svc.wait_for(reported, 60, "/readyz names both topics and their partition counts")
        metrics = svc.metrics()
        assert metrics[("stream_monitor_inputs_co_partitioned", ())] == 0.0
        assert metrics[("stream_monitor_ready", ())] == 0.0
        # Assigned and running (it would be ready otherwise): the mismatch is what keeps it out.
        svc.wait_for(lambda: svc.state()["tasks"] != {}, 60, "partitions assigned")
        assert svc.ready() is False
        errors = [line for line in svc.log().splitlines() if "not co-partitioned" in line]
        assert len(errors) == 1 and "ERROR" in errors[0], errors
    finally:
        svc.stop()


def test_an_unreachable_bootstrap_is_healthy_not_ready_quiet_and_stops_at_once(
    topic_factory: Any, group_id: str, tmp_path: Path
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    topics = ServiceTopics.create(topic_factory)
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", nobody, topics, group_id, port)
    svc = ServiceProcess(cfg, port, tmp_path / "run.log").start()
    try:
        svc.wait_for(lambda: svc._get("/healthz")[0] == 200, 60, "/healthz answers while unreachable")

        def not_ready_with_address() -> bool:
            code, body = svc._get("/readyz")
            return code == 503 and nobody in (orjson.loads(body).get("reason") or "")

        svc.wait_for(not_ready_with_address, 60, "/readyz 503 naming the address")
        started = time.monotonic()
        # Let it retry for a while: the log must not grow with every librdkafka attempt.
        svc.wait_for(lambda: time.monotonic() - started > 12, 60, "a few retry intervals")
        assert svc.proc is not None
        svc.proc.send_signal(signal.SIGTERM)
        stop_started = time.monotonic()
        assert svc.proc.wait(30) == 0
        stopped_in = time.monotonic() - stop_started
        log = svc.log()
        assert stopped_in < 10, f"SIGTERM took {stopped_in:.1f}s"
        retries = [line for line in log.splitlines() if "cannot reach the Kafka cluster" in line]
        assert 1 <= len(retries) <= 4 and nobody in retries[0], retries
        assert len(log.splitlines()) < 40, log[-3000:]
    finally:
        svc.stop()


def test_an_unreachable_bootstrap_gives_up_after_the_startup_timeout(
    topic_factory: Any, group_id: str, tmp_path: Path
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    port = free_port()
    cfg = write_config(
        tmp_path / "c.yaml",
        nobody,
        ServiceTopics.create(topic_factory),
        group_id,
        port,
        kafka_extra={"startup_timeout_seconds": 3},
    )
    svc = ServiceProcess(cfg, port, tmp_path / "run.log").start()
    assert svc.proc is not None
    assert svc.proc.wait(120) == 1
    assert f"giving up: no Kafka broker answered at {nobody} within 3s" in svc.log()


def test_topics_create_then_triggers_tail(
    kafka_bootstrap: str, group_id: str, producer_factory: Any, tmp_path: Path
) -> None:
    suffix = str(time.time_ns())
    topics = ServiceTopics(
        *(f"{name}-{suffix}" for name in ("predictions", "labels", "triggers", "dlq", "state"))
    )
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topics, group_id, port)
    created = _cli("topics", "create", "--config", str(cfg), "--partitions", "3")
    assert created.returncode == 0, created.stderr
    assert f"created {topics.predictions}" in created.stdout and f"created {topics.labels}" in created.stdout
    again = _cli("topics", "create", "--config", str(cfg), "--partitions", "3")
    assert again.returncode == 0 and f"exists  {topics.labels} (3 partitions)" in again.stdout
    # A labels topic with another count than predictions is refused, naming both.
    other = ServiceTopics(topics.predictions, f"labels1-{suffix}", topics.triggers, topics.dlq, topics.state)
    cfg1 = write_config(tmp_path / "c1.yaml", kafka_bootstrap, other, group_id, port)
    _cli("topics", "create", "--config", str(cfg1), "--partitions", "1")  # creates labels1 with 1
    mismatch = _cli("topics", "create", "--config", str(cfg1), "--partitions", "1")
    assert mismatch.returncode == 2
    assert f"{topics.predictions} has 3 partitions but labels topic labels1-{suffix} has 1" in mismatch.stderr

    # triggers tail: nothing yet -> exit 1 after the timeout; then the service's first trigger.
    empty = _cli("triggers", "tail", "--config", str(cfg), "--max", "1", "--timeout", "3")
    assert empty.returncode == 1 and empty.stdout == ""
    # Key = event_id over 3 partitions: each partition-task warms up on 1000 events, then drifts.
    produce(producer_factory(), topics, synthetic(9000, drift_after=4500))
    svc = ServiceProcess(cfg, port, tmp_path / "run.log").start()
    try:
        tail = _cli("triggers", "tail", "--config", str(cfg), "--max", "1", "--timeout", "120", timeout=180)
        assert tail.returncode == 0, tail.stderr
        trigger = orjson.loads(tail.stdout.splitlines()[0])
        assert trigger["kind"] in ("data_drift", "combined") and trigger["model_id"] == "m"
    finally:
        svc.stop()


def test_repeat_filter_lets_one_line_per_kind_and_interval_through() -> None:
    import logging

    now = [0.0]
    kept: list[str] = []
    f = RepeatFilter(interval=30.0, clock=lambda: now[0])

    def emit(msg: str) -> None:
        record = logging.LogRecord("x", logging.WARNING, __file__, 1, msg, (), None)
        if f.filter(record):
            kept.append(record.getMessage())

    for attempt in range(100):
        now[0] = attempt * 0.5
        emit(
            f"127.0.0.1:{9000 + attempt % 2}/bootstrap: Connect to ipv4#127.0.0.1:9999 failed "
            f"(after {attempt}ms)"
        )
    emit("another kind of message")
    assert kept[0].startswith("127.0.0.1:9000/bootstrap") and len(kept) == 3, kept
    assert "similar message(s) suppressed" in kept[1]
