"""Helpers for the service integration tests: a ``stream-monitor run`` subprocess and its topics.

Every test gets fresh topics and a fresh group (``ServiceTopics.create``), writes a small config
(count windows of 500 events, warmup 1000), and starts the real CLI as a subprocess, which it can
scrape (``/metrics``, ``/readyz``, ``/state``), SIGTERM or SIGKILL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Message, TopicPartition
from contract_schemas import check_one_truth, validate, validate_dead_letter_headers
from prometheus_client.parser import text_string_to_metric_families

from stream_monitor.kafka.produce import Item, produce_items, synthetic_events

ROOT = Path(__file__).resolve().parent.parent
MODEL = "m"
NUMERIC = ["x", "y"]
CATEGORICAL = ["c"]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceTopics:
    """The topics of one test (inputs created with ``partitions``; outputs by the service)."""

    predictions: str
    labels: str
    triggers: str
    dlq: str
    state: str
    references: str = ""  # the reference registry (empty: named after the predictions topic)

    def __post_init__(self) -> None:
        if not self.references:
            self.references = self.predictions.replace("predictions", "references")

    @classmethod
    def create(cls, topic_factory: Callable[..., str], partitions: int = 2) -> ServiceTopics:
        preds = topic_factory(partitions, prefix="predictions")
        return cls(
            predictions=preds,
            labels=topic_factory(partitions, prefix="labels"),
            triggers=preds.replace("predictions", "triggers"),
            dlq=preds.replace("predictions", "dlq"),
            state=preds.replace("predictions", "state"),
        )

    def inputs(self) -> dict[str, str]:
        return {"predictions": self.predictions, "labels": self.labels}


def kafka_and_metrics(
    bootstrap: str, group: str, topics: Mapping[str, str], port: int, **kafka: Any
) -> dict[str, Any]:
    """The ``kafka`` and ``metrics`` sections of a broker test's configuration: small batches, a 1 s
    checkpoint interval, a 6 s session timeout (a SIGKILLed member leaves quickly), no lag bound on
    readiness; ``kafka`` adds or overrides keys of the kafka section."""
    return {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": group,
            "topics": dict(topics),
            "batch_size": 500,
            "batch_timeout_seconds": 0.2,
            "checkpoint_interval_seconds": 1.0,
            "consumer": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"},
            **kafka,
        },
        "metrics": {"host": "127.0.0.1", "port": port, "ready_max_lag": 10_000_000},
    }


def write_config(
    path: Path,
    bootstrap: str,
    topics: ServiceTopics,
    group: str,
    port: int,
    *,
    exactly_once: bool = False,
    checkpoint_interval: float = 1.0,
    consumer: dict[str, str] | None = None,
    kafka_extra: dict[str, Any] | None = None,
    top_extra: dict[str, Any] | None = None,
) -> Path:
    """A small service configuration: one regression model, count windows of 500, warmup 1000."""
    config = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": group,
            "topics": {
                "predictions": topics.predictions,
                "labels": topics.labels,
                "triggers": topics.triggers,
                "dlq": topics.dlq,
                "state": topics.state,
                "references": topics.references,
            },
            "batch_size": 500,
            "batch_timeout_seconds": 0.2,
            "checkpoint_interval_seconds": checkpoint_interval,
            "exactly_once": exactly_once,
            # Small session timeout: a SIGKILLed member leaves the group in 6 s, not 45 s.
            "consumer": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000", **(consumer or {})},
        },
        "metrics": {"host": "127.0.0.1", "port": port, "ready_max_lag": 100000},
        "models": [
            {
                "id": MODEL,
                "task": "regression",
                "features": {"x": {"type": "numeric", "key": True}, "y": "numeric", "c": "categorical"},
                "warmup_events": 1000,
                "window": {"kind": "count", "size": 500},
                "policy": {"cooldown_seconds": "2h"},
            }
        ],
    }
    config["kafka"].update(kafka_extra or {})  # type: ignore[attr-defined]
    config.update(top_extra or {})
    path.write_bytes(orjson.dumps(config))  # JSON is YAML
    return path


def synthetic(count: int, drift_after: int | None, seed: int = 1, prefix: str | None = None) -> list[Item]:
    """The test model's events (predictions and labels interleaved by event time)."""
    return list(
        synthetic_events(
            MODEL,
            NUMERIC,
            CATEGORICAL,
            "regression",
            count=count,
            drift_after=drift_after,
            seed=seed,
            id_prefix=prefix,
        )
    )


def produce(producer: Any, topics: ServiceTopics, items: Iterable[Item], key_field: str = "event_id") -> None:
    produce_items(producer, items, topics.inputs(), key_field=key_field)


class ServiceProcess:
    """``python -m stream_monitor.cli run --config C`` as a subprocess."""

    def __init__(self, config: Path, port: int, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.port = port
        self.log_path = log_path
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        # The command line (default: the real CLI); a test may run the CLI under a patch instead.
        self.command: list[str] | None = None

    def start(self) -> ServiceProcess:
        # STREAM_MONITOR_* variables are configuration overrides for the service; the test harness's
        # own (STREAM_MONITOR_KAFKA_DIR, STREAM_MONITOR_REQUIRE_KAFKA) would be rejected as unknown keys.
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_MONITOR_")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env.update(self.env)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command or [sys.executable, "-m", "stream_monitor.cli", "run", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(ROOT),
        )
        log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def ready(self) -> bool | None:
        """``/readyz`` as a bool; ``None`` when the endpoint does not answer."""
        try:
            code, _ = self._get("/readyz")
        except OSError:
            return None
        return code == 200

    def state(self) -> dict[str, Any]:
        return dict(orjson.loads(self._get("/state")[1]))

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of ``/metrics`` by (name, sorted labels)."""
        text = self._get("/metrics")[1].decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for(self, what: Callable[[], bool], timeout: float, message: str) -> float:
        """Poll ``what`` until true; returns seconds waited; fails with the service log otherwise."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                if what():
                    return time.monotonic() - started
            except OSError:
                pass
            if not self.alive():
                raise AssertionError(
                    f"service exited ({self.returncode()}) while waiting: {message}\n" + self.log()[-4000:]
                )
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s: {message}\n" + self.log()[-4000:])

    def processed(self) -> dict[str, int]:
        """Events reflected in this member's tasks, summed over partitions."""
        total = {"predictions": 0, "labels": 0, "rejected": 0}
        for task in self.state().get("tasks", {}).values():
            for k in total:
                total[k] += int(task["counts"][k])
        return total

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        """Teardown: make sure the process is gone."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


def read_topic(
    bootstrap: str,
    topic: str,
    idle: float = 2.0,
    timeout: float = 30.0,
    config: Mapping[str, Any] | None = None,
) -> list[Message]:
    """Every committed message of ``topic`` (all partitions), until nothing new arrives for ``idle`` s.

    ``config``: more client settings (a secure broker's credentials)."""
    consumer = Consumer(
        {
            **(config or {}),
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": "false",
            "isolation.level": "read_committed",
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            return []
        consumer.assign([TopicPartition(topic, p, 0) for p in md.partitions])
        out: list[Message] = []
        started = last = time.monotonic()
        while time.monotonic() - last < idle and time.monotonic() - started < timeout:
            for m in consumer.consume(500, 0.2):
                if m.error() is None:
                    out.append(m)
                    last = time.monotonic()
        return out
    finally:
        consumer.close()


def topic_records(
    bootstrap: str, topic: str, config: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Every record on the triggers ``topic`` (triggers and lifecycle records), each validated
    against its contract schema."""
    found = [orjson.loads(m.value()) for m in read_topic(bootstrap, topic, config=config)]
    for record in found:
        if record.get("kind") == "model_version_changed":
            validate("model_version_changed", record)
        else:
            validate("trigger", record)
            check_one_truth(record)
    return found


def triggers(bootstrap: str, topic: str, config: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The trigger events on ``topic``, each validated against the contract's trigger schema
    (lifecycle records on the same topic are validated against theirs and left out)."""
    return [r for r in topic_records(bootstrap, topic, config) if r.get("kind") != "model_version_changed"]


def dead_letters(bootstrap: str, topic: str, config: Mapping[str, Any] | None = None) -> list[Message]:
    """The dead-letter records on ``topic``, their headers validated against the contract's schema."""
    found = read_topic(bootstrap, topic, config=config)
    for record in found:
        validate_dead_letter_headers(record.headers())
    return found


def end_offsets(
    bootstrap: str, topic: str, partitions: int, config: Mapping[str, Any] | None = None
) -> dict[int, int]:
    c = Consumer({**(config or {}), "bootstrap.servers": bootstrap, "group.id": "end-offsets"})
    try:
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)
        }
    finally:
        c.close()


def committed(
    bootstrap: str, group: str, topic: str, partitions: int, config: Mapping[str, Any] | None = None
) -> dict[int, int]:
    c = Consumer({**(config or {}), "bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()
