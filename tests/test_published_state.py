"""``/state``, the status page and the insight gauges serve a copy the consume loop publishes after
each batch; a request never reads live engine state (issue 14, point 4).

The service runs as a subprocess under a guard: every attribute read of an engine, a monitor, a label
buffer, an insight tracker or a partition-task from any thread but the main one (the consume loop's;
librdkafka's callbacks are served there too) prints ``LIVE STATE READ`` and raises, so the request
that did it would answer 500. While the service processes a drifting stream, several threads fetch
``/state``, ``/`` and ``/metrics`` as fast as they can: every answer must be 200, the log must not
name a single read, and at rest the metrics and ``/state`` agree.
"""

from __future__ import annotations

import re
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from service_fixtures import MODEL, ServiceProcess, ServiceTopics, free_port, produce, synthetic, write_config

pytestmark = pytest.mark.kafka

_GUARDED = """
import sys
import threading

from stream_monitor.core.engine import MonitoringEngine
from stream_monitor.core.insights.tracker import InsightTracker
from stream_monitor.core.labels import LabelJoinBuffer
from stream_monitor.core.monitor import ModelMonitor
from stream_monitor.kafka.service import PartitionTask

LOOP = threading.main_thread().ident


def guard(cls):
    read = cls.__getattribute__

    def __getattribute__(self, name):
        if threading.get_ident() != LOOP:
            where = f"{cls.__name__}.{name} on thread {threading.current_thread().name}"
            print(f"LIVE STATE READ: {where}", file=sys.stderr, flush=True)
            raise AssertionError(f"live state read: {where}")
        return read(self, name)

    cls.__getattribute__ = __getattribute__


for cls in (MonitoringEngine, ModelMonitor, LabelJoinBuffer, InsightTracker, PartitionTask):
    guard(cls)
from stream_monitor.cli import main

sys.exit(main(sys.argv[1:]))
"""


def _fetch(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_requests_read_only_the_published_copy_while_the_loop_runs(
    kafka_bootstrap: str,
    topic_factory: Any,
    group_id: str,
    producer_factory: Any,
    tmp_path: Path,
) -> None:
    topics = ServiceTopics.create(topic_factory, partitions=2)
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topics, group_id, port, checkpoint_interval=0.5)
    n = 6000
    produce(producer_factory(), topics, synthetic(n, drift_after=3000))
    svc = ServiceProcess(cfg, port, tmp_path / "run.log")
    svc.command = [sys.executable, "-c", _GUARDED, "run", "--config", str(cfg)]
    svc.start()
    answers: Counter[tuple[str, int]] = Counter()
    stop = threading.Event()

    def hammer(path: str) -> None:
        while not stop.is_set():
            try:
                answers[(path, _fetch(port, path))] += 1
            except OSError:  # not listening yet
                stop.wait(0.05)

    readers = [threading.Thread(target=hammer, args=(p,), daemon=True) for p in ("/state", "/", "/metrics")]
    try:
        for t in readers:
            t.start()
        svc.wait_for(lambda: _processed(svc) >= (n, n), 120, "everything processed")
        svc.wait_for(lambda: _checkpointed(svc), 30, "a checkpoint digest in /state")
        stop.set()
        for t in readers:
            t.join(60)
        assert "LIVE STATE READ" not in svc.log(), re.findall(r"LIVE STATE READ: .*", svc.log())[:5]
        assert {code for _, code in answers} == {200}, answers
        assert all(answers[(p, 200)] >= 3 for p in ("/state", "/", "/metrics")), answers

        # At rest, what /state shows is what the metrics say (both set by the same batch).
        state = svc.state()["tasks"]
        metrics = svc.metrics()
        model = (("model", MODEL),)
        for p, task in state.items():
            for stream in ("predictions", "labels", "rejected"):
                sample = ("stream_monitor_partition_events", (("partition", p), ("stream", stream)))
                assert metrics[sample] == task["counts"][stream]
            assert re.fullmatch(r"[0-9a-f]{16}", task["digest"]) and task["restored_digest"] is None
        pending = sum(t["labels"][MODEL]["pending"] for t in state.values())
        assert metrics[("stream_monitor_labels_pending", model)] == pending
        # The page shows the drifted model and its triggers from the copy.
        code, page = svc._get("/")
        assert code == 200 and b"Recent triggers" in page and MODEL.encode() in page
        assert svc.terminate() == 0, svc.log()[-3000:]
    finally:
        stop.set()
        svc.stop()


def _processed(svc: ServiceProcess) -> tuple[int, int]:
    tasks = svc.state().get("tasks", {}).values()
    return (
        sum(t["counts"]["predictions"] + t["counts"]["rejected"] for t in tasks),
        sum(t["counts"]["labels"] for t in tasks),
    )


def _checkpointed(svc: ServiceProcess) -> bool:
    tasks = svc.state().get("tasks", {}).values()
    return bool(tasks) and all(t["digest"] is not None for t in tasks)
