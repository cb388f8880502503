"""Two-stage aggregation measured (issue 12, points 6 and 7): the extra hop, scale, latency, bytes.

Parts (``--parts``, default all):

``merge``  In process, no broker. Real shard reports of the bench model (20 numeric + 3 categorical
           features, binary score, time windows, 10 % labelled) with ``n`` events per partial: the
           report's bytes, ``ShardReport.decode`` per report, ``merge_sketches`` + ``PerformanceStats``
           merge per partial (8 and 128 partials), and one window's judgement (``ModelStage.process``
           of 8 decoded reports minus their merge). Medians of ``--repeat``.
``hop``    Point 6, the extra hop when it is not needed: events keyed by ``model_id`` (1 model on
           1 partition, and 4 models on 4 partitions, model ``i`` on partition ``i``), one
           ``stream-monitor run`` member; ``aggregation.mode: per_partition`` against ``two_stage`` on
           the same pre-produced topics, alternated ``--hop-rounds`` times (A, B, A, B, ...).
``scale``  Point 7: one model keyed by ``event_id`` on ``--partitions`` partitions, ``two_stage``
           with 1, 2 and 4 members (and ``per_partition`` with the same member counts for comparison),
           alternated by round. After each run the partials and triggers topics are read back: the
           internal topic's bytes per window per model, and the model stage's added latency per window.
``live``   Latency at a steady live rate: 2 members, 4 partitions, key = ``event_id``, events produced
           live (event time = wall clock) at ``--live-rate``; ``per_partition`` and ``two_stage``
           alternated; event-to-trigger latency (trigger record time − window end) and, for
           ``two_stage``, the model stage's part of it.

Timing (``hop``, ``scale``): every member is a child process with a fresh consumer group and fresh
output, state and partials topics. The bench polls each member's ``/state`` every ``--poll`` s (the
partition-tasks' event counts, and for ``two_stage`` the model stage's ``windows_judged``) and, for
``per_partition``, ``stream_monitor_windows_closed_total`` from ``/metrics``. A run ends when every
prediction and label is reflected and every window is judged. events/s = predictions processed after
the first poll that saw any / seconds from that poll to the end (the start-up and group join are left
out; ``wall_s`` includes them).

Events: the bench shape (bench/common.py), event time at ``--rate`` events/s per model from one day
ago (aligned to the window grid), each record stamped with its event time, labels for every 10th
prediction 30 s later; the key feature ``f0`` is shifted by 2σ in every other window and the policy
fires on one window (``consecutive_windows: 1``, no cooldown), so every shifted window gives a trigger
(the latency samples). One closer event per partition, two windows after the last, moves every
shard's watermark past the last window.

Model-stage latency per window = the record time of the first trigger of the window (CreateTime on the
triggers topic, stamped by the member when it produced it) − the record time of the window's last
partial (the latest, over shards, of the first report that carried the shard's partial of the window;
the report also carries the shard's progress past the window). Both stamps come from the members'
clocks on this one machine. A second estimate covers every window, triggering or not: the first
``/state`` poll at which ``windows_judged`` reached the window (up to one poll interval late).

Needs the broker: ``KAFKA_BOOTSTRAP_SERVERS`` set, or the script starts one with ``deploy/local/kafka.sh``
(``--kafka-dir``: the broker's directory, for the on-disk size of the partials topic).

``python bench/two_stage.py [--parts merge,hop,scale,live] [--quick] [--json bench/results/two_stage.json]``
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ROOT,
    gen_columns,
    machine_info,
    make_reference,
    make_schema,
    to_json_events,
    to_json_labels,
)

from stream_monitor.app import build_engine, load_references
from stream_monitor.config import load_config
from stream_monitor.core.model_stage import ModelStage
from stream_monitor.core.partials import PerformanceStats, ShardReport, new_stats
from stream_monitor.core.sketches import merge_sketches

KAFKA_SH = ROOT / "deploy" / "local" / "kafka.sh"
POLICY = {
    "consecutive_windows": 1,
    "cooldown_seconds": 0,
    "integrity_triggers": False,
    "prediction_psi_alarm": 100.0,
}
SHIFT = 2.0
#: librdkafka consumer settings for every member (``--consumer KEY=VALUE``).
CONSUMER: dict[str, str] = {}


# -- broker and members ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker(workdir: Path, kafka_dir: Path | None) -> tuple[str, Path | None, bool]:
    """Bootstrap servers, the broker's directory (when known) and whether this script started it."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"], kafka_dir, False
    kafka_dir = workdir / "kafka"
    subprocess.run(["bash", str(KAFKA_SH), "fetch"], check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run(
        ["bash", str(KAFKA_SH), "start", str(kafka_dir)], check=True, capture_output=True, text=True
    ).stdout
    m = re.search(r"KAFKA_BOOTSTRAP_SERVERS=(\S+)", out)
    if not m:
        raise RuntimeError(f"kafka.sh start printed no bootstrap address: {out!r}")
    return m.group(1), kafka_dir, True


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        f.result(30)


def new_producer(bootstrap: str, linger_ms: int = 20) -> Any:
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": linger_ms,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 2_000_000,
        }
    )


def send(
    producer: Any, topic: str, value: bytes, key: bytes, ts_ms: int, partition: int | None = None
) -> None:
    kwargs: dict[str, Any] = {"key": key, "timestamp": ts_ms}
    if partition is not None:
        kwargs["partition"] = partition
    while True:
        try:
            producer.produce(topic, value, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)


def write_config(
    path: Path,
    bootstrap: str,
    topics: dict[str, str],
    group: str,
    port: int,
    references: dict[str, Path],
    mode: str,
    window: float,
    batch_size: int = 10_000,
    batch_timeout: float = 0.2,
) -> Path:
    feats: dict[str, Any] = {
        f"f{i}": ({"type": "numeric", "key": True} if i == 0 else "numeric") for i in range(20)
    }
    feats.update({f"c{j}": "categorical" for j in range(3)})
    models = [
        {
            "id": model_id,
            "task": "binary",
            "features": feats,
            "reference": str(reference),
            "window": {"kind": "time", "width": window, "allowed_lateness": 0},
            "policy": POLICY,
        }
        for model_id, reference in references.items()
    ]
    cfg = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": group,
            "topics": topics,
            "batch_size": batch_size,
            "batch_timeout_seconds": batch_timeout,
            **({"consumer": dict(CONSUMER)} if CONSUMER else {}),
        },
        "metrics": {"host": "127.0.0.1", "port": port, "ready_max_lag": 1_000_000_000},
        "aggregation": {"mode": mode},
        "models": models,
    }
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def get(port: int, route: str) -> bytes | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=2) as r:
            return bytes(r.read())
    except urllib.error.HTTPError as e:
        return bytes(e.read())
    except OSError:
        return None


def windows_metric(port: int) -> float:
    """``stream_monitor_windows_closed_total``, summed over models."""
    text = get(port, "/metrics")
    if text is None:
        return 0.0
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith("stream_monitor_windows_closed_total"):
            total += float(line.rpartition(" ")[2])
    return total


def proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_member(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_MONITOR_")}
    return subprocess.Popen(
        [sys.executable, "-m", "stream_monitor.cli", "run", "--config", str(config)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` up to its current end (all partitions)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-read-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": "false",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            return []
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions}
        c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
        out: list[Any] = []
        seen = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + 60
        while any(seen[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error() is None:
                    out.append(m)
                    seen[m.partition()] = (m.offset() or 0) + 1
        return out
    finally:
        c.close()


def disk_bytes(kafka_dir: Path | None, topic: str) -> int | None:
    """The size of ``topic``'s log segments on the broker's disk (lz4 batches as the producer sent them)."""
    if kafka_dir is None:
        return None
    total = 0
    found = False
    for d in (kafka_dir / "data").glob(f"{topic}-*"):
        if re.fullmatch(re.escape(topic) + r"-\d+", d.name):
            found = True
            total += sum(f.stat().st_size for f in d.glob("*.log"))
    return total if found else None


class Spy(threading.Thread):
    """A consumer of its own on ``topic`` (from the start, once the service created it): when each record
    became readable elsewhere, against its record time (how long the broker hop takes)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.delays_ms: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"bench-spy-{uuid.uuid4().hex[:8]}",
                      "enable.auto.commit": "false", "fetch.wait.max.ms": 10})  # fmt: skip
        try:
            while not self.done.is_set():
                md = c.list_topics(self.topic, timeout=5).topics.get(self.topic)
                if md is not None and md.error is None and md.partitions:
                    c.assign([TopicPartition(self.topic, p, 0) for p in md.partitions])
                    break
                time.sleep(0.2)
            while not self.done.is_set():
                for m in c.consume(100, 0.05):
                    if m.error() is None:
                        self.delays_ms.append((time.time() - m.timestamp()[1] / 1000.0) * 1e3)
        finally:
            c.close()


# -- events ------------------------------------------------------------------------------------------
@dataclass
class Inputs:
    """Pre-produced input topics and what a run must see to be complete."""

    predictions: str
    labels: str
    partitions: int
    models: list[str]
    events: int  # predictions, closers included
    labels_n: int
    windows_per_model: int  # windows with events before the closers (per model, whole topic)
    window: float
    start: float
    references: dict[str, Path]
    produce_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


def window_start(window: float) -> float:
    return math.floor((time.time() - 86400.0) / window) * window


def shifted(c: Any, start: float, window: float) -> None:
    """Shift the key feature in every other window (by event time)."""
    odd = (np.floor((c.ts - start) / window) % 2) == 1
    c.numeric[0] = c.numeric[0] + SHIFT * odd


def produce_inputs(
    bootstrap: str,
    workdir: Path,
    tag: str,
    *,
    models: int,
    partitions: int,
    events_per_model: int,
    rate: float,
    window: float,
    key: str,
) -> Inputs:
    """Pre-produce: ``key`` = ``model_id`` (model ``i`` on partition ``i % partitions``) or ``event_id``."""
    preds, labels = f"tsp-{tag}", f"tsl-{tag}"
    create_topics(bootstrap, [preds, labels], partitions)
    start = window_start(window)
    model_ids = [f"m{i}" for i in range(models)]
    references = {}
    for m in model_ids:
        references[m] = workdir / f"{m}.reference.json"
        if not references[m].exists():
            references[m].write_bytes(make_reference(make_schema(m)).to_json())
    t0 = time.perf_counter()
    producer = new_producer(bootstrap)
    chunk = 100_000
    n_labels = 0
    for mi, m in enumerate(model_ids):
        part = (mi % partitions) if key == "model_id" else None
        for k in range(0, events_per_model, chunk):
            n = min(chunk, events_per_model - k)
            c = gen_columns(n, seed=1000 * mi + k, start=k, prefix=f"{m}-e")
            c.ts = start + np.arange(k, k + n, dtype=float) / rate
            shifted(c, start, window)
            ts_ms = np.round(c.ts * 1000).astype(np.int64).tolist()
            for raw, eid, ts in zip(to_json_events(m, c), c.event_id, ts_ms, strict=True):
                send(producer, preds, raw, m.encode() if key == "model_id" else eid.encode(), ts, part)
            lab = to_json_labels(m, c)
            for j, raw in enumerate(lab):
                i = 10 * j
                send(
                    producer,
                    labels,
                    raw,
                    m.encode() if key == "model_id" else c.event_id[i].encode(),
                    ts_ms[i] + 30_000,
                    part,
                )
            n_labels += len(lab)
            producer.poll(0)
    windows = math.ceil(events_per_model / rate / window)
    closer_ts = start + (windows + 2) * window
    closers = 0
    for mi, m in enumerate(model_ids):
        targets = [mi % partitions] if key == "model_id" else list(range(partitions))
        c = gen_columns(1, seed=99, prefix=f"closer-{m}-")
        c.ts = np.array([closer_ts])
        raw = to_json_events(m, c)[0]
        for p in targets:
            value = raw.replace(f"closer-{m}-0".encode(), f"closer-{m}-{p}".encode())
            send(producer, preds, value, f"closer-{m}-{p}".encode(), round(closer_ts * 1000), p)
            closers += 1
    if producer.flush(300) != 0:
        raise RuntimeError("produce did not finish")
    return Inputs(
        preds,
        labels,
        partitions,
        model_ids,
        models * events_per_model + closers,
        n_labels,
        windows,
        window,
        start,
        references,
        time.perf_counter() - t0,
        {"key": key, "rate_per_model": rate, "events_per_model": events_per_model},
    )


# -- one timed run -----------------------------------------------------------------------------------
def run_group(
    bootstrap: str,
    workdir: Path,
    inputs: Inputs,
    mode: str,
    members: int,
    name: str,
    timeout: float,
    poll: float,
    kafka_dir: Path | None,
) -> dict[str, Any]:
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    topics = {
        "predictions": inputs.predictions,
        "labels": inputs.labels,
        "triggers": f"tst-{tag}",
        "dlq": f"tsd-{tag}",
        "state": f"tss-{tag}",
        "partials": f"tsq-{tag}",
    }
    ports = [free_port() for _ in range(members)]
    configs = [
        write_config(
            workdir / f"{tag}-{i}.yaml",
            bootstrap,
            topics,
            f"g-{tag}",
            port,
            inputs.references,
            mode,
            inputs.window,
        )
        for i, port in enumerate(ports)
    ]
    two_stage = mode == "two_stage"
    shards_per_model = 1 if (two_stage or inputs.meta["key"] == "model_id") else inputs.partitions
    expected_windows = inputs.windows_per_model * len(inputs.models) * shards_per_model
    spy = Spy(bootstrap, topics["partials"]) if two_stage else None
    if spy is not None:
        spy.start()
    procs = [start_member(c, workdir / f"{tag}-{i}.log") for i, c in enumerate(configs)]
    t_start = time.time()
    timeline: list[tuple[float, int]] = []
    t_first = None
    t_events = None  # when every prediction and label was reflected (windows may still be open)
    first_done = 0
    cpu0 = 0.0
    preds = labels = judged = 0
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a member exited; see {workdir}/{tag}-*.log")
            now = time.time()
            preds = labels = judged = 0
            for port in ports:
                raw = get(port, "/state")
                if not raw:
                    continue
                state = orjson.loads(raw)
                for task in state.get("tasks", {}).values():
                    preds += int(task["counts"]["predictions"])
                    labels += int(task["counts"]["labels"])
                for task in state.get("model_stage", {}).values():
                    judged += sum(int(m["windows_judged"]) for m in task["models"].values())
            if not two_stage:
                judged = int(sum(windows_metric(port) for port in ports))
            timeline.append((now, judged))
            if t_first is None and preds > 0:
                t_first, first_done = now, preds
                cpu0 = sum(proc_cpu(p.pid) for p in procs)
            if t_events is None and preds >= inputs.events and labels >= inputs.labels_n:
                t_events = now
            if preds >= inputs.events and labels >= inputs.labels_n and judged >= expected_windows:
                break
            time.sleep(poll)
        t_end = time.time()
        cpu = sum(proc_cpu(p.pid) for p in procs) - cpu0
        if t_first is None or preds < inputs.events or labels < inputs.labels_n or judged < expected_windows:
            raise RuntimeError(
                f"{name}: {preds}/{inputs.events} predictions, {labels}/{inputs.labels_n} labels, "
                f"{judged}/{expected_windows} windows after {timeout:.0f} s; see {workdir}/{tag}-*.log"
            )
        extra = {"windows_metric": sum(windows_metric(port) for port in ports)}
    finally:
        stop(procs)
        if spy is not None:
            spy.done.set()
            spy.join(10)
    counted = inputs.events - first_done
    seconds = t_end - t_first
    result: dict[str, Any] = {
        "mode": mode,
        "members": members,
        "events_per_s": counted / seconds if seconds > 0 else float("nan"),
        # to the last event reflected, without the wait for the last windows' judgement
        "events_only_per_s": counted / (t_events - t_first) if t_events and t_events > t_first else None,
        "tail_s": t_end - t_events if t_events else None,
        "seconds": seconds,
        "wall_s": t_end - t_start,
        "cpu_us_per_event": cpu / counted * 1e6 if counted else float("nan"),
        "windows": expected_windows,
        **extra,
    }
    if spy is not None:
        result["partials_broker_ms"] = spy.delays_ms
    result.update(topic_figures(bootstrap, topics, inputs, configs[0], timeline, two_stage, kafka_dir))
    return result


def topic_figures(
    bootstrap: str,
    topics: dict[str, str],
    inputs: Inputs,
    config: Path,
    timeline: list[tuple[float, int]],
    two_stage: bool,
    kafka_dir: Path | None,
) -> dict[str, Any]:
    """Bytes on the partials topic, and the model stage's latency per window (see the docstring)."""
    triggers = read_all(bootstrap, topics["triggers"])
    first_trigger: dict[tuple[str, float], float] = {}
    ids: set[str] = set()
    duplicates = 0
    for m in triggers:
        t = orjson.loads(m.value())
        if t["trigger_id"] in ids:
            duplicates += 1
            continue
        ids.add(t["trigger_id"])
        k = (t["model_id"], round(float(t["event_time"]), 3))
        ts = m.timestamp()[1] / 1000.0
        first_trigger[k] = min(first_trigger.get(k, ts), ts)
    out: dict[str, Any] = {"triggers": len(triggers), "trigger_duplicates": duplicates}
    if not two_stage:
        return out
    app = load_config(str(config))
    schemas = app.schemas()
    refs = {k: v for k, v in load_references(app).items() if v is not None}
    stats = {m: new_stats(s) for m, s in schemas.items()}
    records = read_all(bootstrap, topics["partials"])
    sent: dict[tuple[str, int, int], float] = {}  # (model, window, shard) → first send
    ends: dict[tuple[str, int], float] = {}
    value_bytes = key_bytes = 0
    partials = 0
    for m in records:
        value, key = m.value() or b"", m.key() or b""
        value_bytes += len(value)
        key_bytes += len(key)
        report = ShardReport.decode(value, schemas, refs, stats)
        ts = m.timestamp()[1] / 1000.0
        for p in report.partials:
            partials += 1
            k = (report.model_id, p.key, report.shard)
            sent[k] = min(sent.get(k, ts), ts)
            ends[(report.model_id, p.key)] = p.end
    last: dict[tuple[str, int], float] = {}
    for (model, key, _shard), ts in sent.items():
        last[(model, key)] = max(last.get((model, key), ts), ts)
    windows = len(last)
    stage = sorted(
        (ends[(model, key)], (first_trigger[(model, round(ends[(model, key)], 3))] - ts) * 1e3)
        for (model, key), ts in last.items()
        if (model, round(ends[(model, key)], 3)) in first_trigger
    )
    stage_ms = [ms for _, ms in stage]
    poll_ms = []
    for model in inputs.models:
        keys = sorted(k for m, k in last if m == model)
        for i, key in enumerate(keys):
            # the first poll at which the model's windows_judged (summed over models) reached this one
            seen = next((t for t, judged in timeline if judged >= i + 1), None)
            if seen is not None and len(inputs.models) == 1:
                poll_ms.append((seen - last[(model, key)]) * 1e3)
    disk = disk_bytes(kafka_dir, topics["partials"])
    models = len(inputs.models)
    out.update(
        {
            "partials_records": len(records),
            "partials": partials,
            "partials_value_bytes": value_bytes,
            "partials_key_bytes": key_bytes,
            "partials_disk_bytes": disk,
            "windows_on_topic": windows,
            "bytes_per_window_per_model": (value_bytes + key_bytes) / windows if windows else None,
            "disk_bytes_per_window_per_model": disk / windows if disk and windows else None,
            "records_per_window_per_model": len(records) / windows * 1.0 if windows else None,
            "models": models,
            "stage_latency_ms": stage_ms,
            "stage_latency_window_ends": [end for end, _ in stage],
            "stage_latency_poll_ms": poll_ms,
        }
    )
    return out


# -- live ------------------------------------------------------------------------------------------
def live_run(
    bootstrap: str,
    workdir: Path,
    mode: str,
    members: int,
    partitions: int,
    rate: float,
    seconds: float,
    window: float,
    timeout: float,
) -> dict[str, Any]:
    """Produce live (event time = wall clock) to fresh topics; latency of every trigger."""
    tag = f"live-{mode}-{uuid.uuid4().hex[:6]}"
    topics = {
        "predictions": f"tsp-{tag}",
        "labels": f"tsl-{tag}",
        "triggers": f"tst-{tag}",
        "dlq": f"tsd-{tag}",
        "state": f"tss-{tag}",
        "partials": f"tsq-{tag}",
    }
    create_topics(bootstrap, [topics["predictions"], topics["labels"]], partitions)
    reference = workdir / "m0.reference.json"
    if not reference.exists():
        reference.write_bytes(make_reference(make_schema("m0")).to_json())
    ports = [free_port() for _ in range(members)]
    configs = [
        write_config(
            workdir / f"{tag}-{i}.yaml",
            bootstrap,
            topics,
            f"g-{tag}",
            port,
            {"m0": reference},
            mode,
            window,
            batch_size=1000,
            batch_timeout=0.02,
        )
        for i, port in enumerate(ports)
    ]
    procs = [start_member(c, workdir / f"{tag}-{i}.log") for i, c in enumerate(configs)]
    timeline: list[tuple[float, int]] = []
    try:
        deadline = time.monotonic() + timeout

        def settled() -> bool:
            assigned = stages = 0
            for port in ports:
                raw = get(port, "/state")
                if not raw:
                    return False
                state = orjson.loads(raw)
                assigned += len(state.get("tasks", {}))
                stages += len(state.get("model_stage", {}))
            return assigned == partitions and (mode != "two_stage" or stages == partitions)

        while not settled():
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"live {mode}: the group did not settle; see {workdir}/{tag}-*.log")
            time.sleep(0.2)
        time.sleep(2.0)
        producer = new_producer(bootstrap, linger_ms=5)
        block = max(1, int(rate * 0.05))
        pool = gen_columns(20 * block, seed=7, prefix="x")
        t0 = time.time()
        sent = 0
        pending: list[tuple[str, int]] = []
        next_poll = t0
        while time.time() - t0 < seconds:
            target = t0 + sent / rate
            delay = target - time.time()
            if delay > 0:
                time.sleep(delay)
            now = time.time()
            i0 = sent % (19 * block)
            odd = math.floor(now / window) % 2 == 1
            now_ms = round(now * 1000)
            for i in range(i0, i0 + block):
                features: dict[str, Any] = {f"f{j}": float(pool.numeric[j, i]) for j in range(20)}
                features["f0"] += SHIFT if odd else 0.0
                features.update({f"c{j}": pool.categorical[j][i] for j in range(3)})
                eid = f"e{sent + i - i0}"
                value = orjson.dumps(
                    {
                        "event_id": eid,
                        "model_id": "m0",
                        "ts": now,
                        "features": features,
                        "prediction": {"score": float(pool.score[i])},
                    }
                )
                send(producer, topics["predictions"], value, eid.encode(), now_ms)
                if (sent + i - i0) % 10 == 0:
                    pending.append((eid, int(pool.label[i])))
            for eid, label in pending[: -max(1, block // 10)]:
                value = orjson.dumps({"event_id": eid, "model_id": "m0", "ts": now, "label": label})
                send(producer, topics["labels"], value, eid.encode(), now_ms)
            pending = pending[-max(1, block // 10) :]
            producer.poll(0)
            sent += block
            if now >= next_poll and mode == "two_stage":
                timeline.append((now, _judged(ports)))
                next_poll = now + 0.1
        producer.flush(30)
        end = time.time() + 3.0
        while time.time() < end:
            if mode == "two_stage":
                timeline.append((time.time(), _judged(ports)))
            time.sleep(0.1)
    finally:
        stop(procs)
    inputs = Inputs(
        topics["predictions"],
        topics["labels"],
        partitions,
        ["m0"],
        sent,
        0,
        0,
        window,
        0.0,
        {"m0": reference},
        meta={"key": "event_id"},
    )
    figures = topic_figures(bootstrap, topics, inputs, configs[0], timeline, mode == "two_stage", None)
    e2e = []
    for m in read_all(bootstrap, topics["triggers"]):
        t = orjson.loads(m.value())
        e2e.append((float(t["event_time"]), (m.timestamp()[1] / 1000.0 - float(t["event_time"])) * 1e3))
    e2e.sort()
    # Warm: without the windows within two widths of the first trigger (a member's first judgement
    # imports scipy.stats, about a second on this machine).
    warm_from = e2e[0][0] + 2 * window if e2e else 0.0
    ends = figures.get("stage_latency_window_ends", [])
    stage_ms = figures.get("stage_latency_ms", [])
    return {
        "mode": mode,
        "members": members,
        "rate": rate,
        "seconds": seconds,
        "events": sent,
        "event_to_trigger_ms": [ms for _, ms in e2e],
        "event_to_trigger_warm_ms": [ms for end, ms in e2e if end > warm_from],
        "stage_latency_warm_ms": [ms for end, ms in zip(ends, stage_ms, strict=True) if end > warm_from],
        **figures,
    }


def _judged(ports: list[int]) -> int:
    judged = 0
    for port in ports:
        raw = get(port, "/state")
        if raw:
            for task in orjson.loads(raw).get("model_stage", {}).values():
                judged += sum(int(m["windows_judged"]) for m in task["models"].values())
    return judged


# -- in process: report size, decode, merge, judge ----------------------------------------------------
def median_time(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def shard_reports(config: Path, n: int, shards: int, window: float) -> list[bytes]:
    """One window of ``n`` events (10 % labelled) on each of ``shards`` shards, closed by one later event."""
    app = load_config(str(config))
    refs = load_references(app)
    start = window_start(window)
    out = []
    for s in range(shards):
        engine = build_engine(app, refs, shard=s, shards=shards)
        c = gen_columns(n, seed=s, start=s * n, prefix="e")
        c.ts = start + (np.arange(n) + 0.5) * (window / n)
        engine.process_predictions(to_json_events("m0", c), now=float(c.ts[-1]))
        engine.process_labels(to_json_labels("m0", c, delay=0.0), now=float(c.ts[-1]))
        closer = gen_columns(1, seed=99, prefix="closer")
        closer.ts = np.array([start + window * 1.5])
        reports = engine.process_predictions(to_json_events("m0", closer), now=float(closer.ts[0])).reports
        assert len(reports) == 1 and len(reports[0].partials) == 1, reports
        out.append(reports[0].encode())
    return out


def merge_bench(workdir: Path, sizes: list[int], repeat: int, window: float) -> dict[str, Any]:
    reference = workdir / "m0.reference.json"
    if not reference.exists():
        reference.write_bytes(make_reference(make_schema("m0")).to_json())
    config = write_config(
        workdir / "merge.yaml", "127.0.0.1:9", {}, "g", 9, {"m0": reference}, "two_stage", window
    )
    app = load_config(str(config))
    schemas = app.schemas()
    refs = {k: v for k, v in load_references(app).items() if v is not None}
    settings = {m.schema.model_id: m.settings for m in app.models}
    rows = []
    for n in sizes:
        raws = shard_reports(config, n, 8, window)
        stats = {m: new_stats(s) for m, s in schemas.items()}
        decode_s = median_time(
            lambda raws=raws, stats=stats: [ShardReport.decode(r, schemas, refs, stats) for r in raws], repeat
        ) / len(raws)
        reports = [ShardReport.decode(r, schemas, refs, stats) for r in raws]
        parts = [r.partials[0] for r in reports]

        def merge(parts: list[Any]) -> None:
            merge_sketches([p.sketch for p in parts])
            PerformanceStats.merged((p.performance for p in parts), new_stats(schemas["m0"]))

        merge8 = median_time(lambda parts=parts: merge(parts), repeat) / len(parts)
        many = parts * 16
        merge128 = median_time(lambda many=many: merge(many), max(3, repeat // 3)) / len(many)

        held: list[tuple[int, int]] = []

        def stage_once(reports: list[ShardReport] = reports, held: list[tuple[int, int]] = held) -> float:
            stage = ModelStage(schemas, settings, refs, {"m0": None}, app.aggregation)
            for r in reports[:-1]:
                stage.process([r], wall_now=None)
            if not held:  # the stage's state while it holds 7 open partials (what a checkpoint writes)
                snapshot = stage.snapshot()
                held.append((len(snapshot), len(zlib.compress(snapshot, 1))))
            t0 = time.perf_counter()
            out = stage.process([reports[-1]], wall_now=None)
            elapsed = time.perf_counter() - t0
            assert out["m0"].evaluations, "the window must be judged"
            return elapsed

        judge_s = statistics.median(stage_once() for _ in range(repeat))
        row = {
            "events_per_partial": n,
            "report_bytes": statistics.median(len(r) for r in raws),
            "decode_ms": decode_s * 1e3,
            "merge_ms_per_partial_8": merge8 * 1e3,
            "merge_ms_per_partial_128": merge128 * 1e3,
            "judge_ms": judge_s * 1e3,
            # per open partial: the model stage's snapshot with 7 open partials, raw and as the state
            # record compresses it (zlib level 1), divided by 7
            "stage_state_bytes_per_open_partial": held[0][0] / (len(reports) - 1),
            "stage_state_zlib_bytes_per_open_partial": held[0][1] / (len(reports) - 1),
        }
        row["decode_merge_ms"] = row["decode_ms"] + row["merge_ms_per_partial_8"]
        rows.append(row)
        print(
            f"merge: n={n:>6} {row['report_bytes']:>9,.0f} B  decode {row['decode_ms']:.3f} ms  merge "
            f"{merge8 * 1e3:.3f}/{merge128 * 1e3:.3f} ms  judge {row['judge_ms']:.1f} ms",
            file=sys.stderr,
        )
    return {"rows": rows, "repeat": repeat}


# -- tables --------------------------------------------------------------------------------------------
def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def fmt_runs(runs: list[dict[str, Any]]) -> str:
    return ", ".join(format(r["events_per_s"], ",.0f") for r in runs)


def merge_lines(res: dict[str, Any]) -> list[str]:
    lines = [
        "| events per partial | report bytes | decode ms / report | merge ms / partial (8; 128) | "
        "decode + merge ms / partial | merge of 8 + judge ms / window | stage state / open partial "
        "(zlib) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['events_per_partial']:,} | {r['report_bytes']:,.0f} | {r['decode_ms']:.3f} | "
            f"{r['merge_ms_per_partial_8']:.3f}; {r['merge_ms_per_partial_128']:.3f} | "
            f"{r['decode_merge_ms']:.3f} | {r['judge_ms']:.1f} | "
            f"{r['stage_state_bytes_per_open_partial']:,.0f} "
            f"({r['stage_state_zlib_bytes_per_open_partial']:,.0f}) |"
        )
    return lines


def hop_lines(res: dict[str, Any]) -> list[str]:
    lines = [
        "| setup | mode | events/s (median) | runs (in order) | to the last event: events/s (median) | "
        "last event → last window judged, s (median) | CPU µs / event (median) | two_stage / per_partition |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for setup in res["setups"]:
        runs = setup["runs"]
        base = med([r["events_per_s"] for r in runs["per_partition"]])
        for mode in ("per_partition", "two_stage"):
            rr = runs[mode]
            rate = med([r["events_per_s"] for r in rr])
            ratio = "" if mode == "per_partition" else f"{rate / base:.2f}"
            only = med([r["events_only_per_s"] for r in rr if r.get("events_only_per_s")])
            tail = med([r["tail_s"] for r in rr if r.get("tail_s") is not None])
            lines.append(
                f"| {setup['name']} | {mode} | {rate:,.0f} | {fmt_runs(rr)} | {only:,.0f} | {tail:.2f} | "
                f"{med([r['cpu_us_per_event'] for r in rr]):.1f} | {ratio} |"
            )
        per_round = [
            b["events_per_s"] / a["events_per_s"]
            for a, b in zip(runs["per_partition"], runs["two_stage"], strict=True)
        ]
        setup["ratio_median"] = med(per_round)
        lines.append(
            f"| {setup['name']} | ratio per round | | {', '.join(f'{x:.2f}' for x in per_round)} | | | | |"
        )
    return lines


def scale_lines(res: dict[str, Any]) -> list[str]:
    lines = [
        "| mode | members | events/s (median) | runs (in order) | wall s (median) | CPU µs / event | "
        "vs 1 member |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for mode, by_members in res["runs"].items():
        base = None
        for members, rr in sorted(by_members.items(), key=lambda kv: int(kv[0])):
            rate = med([r["events_per_s"] for r in rr])
            base = base or rate
            lines.append(
                f"| {mode} | {members} | {rate:,.0f} | {fmt_runs(rr)} | "
                f"{med([r['wall_s'] for r in rr]):.1f} | "
                f"{med([r['cpu_us_per_event'] for r in rr]):.1f} | {rate / base:.2f}× |"
            )
    return lines


def latency_lines(res: dict[str, Any]) -> list[str]:
    lines = [
        "| members | windows | stage latency p50 / p99 / max ms (triggers, n) | "
        "p50 / p99 ms (/state polls, n) | partial readable by another consumer p50 / p99 ms | "
        "bytes / window / model (on disk, lz4) | reports / window |",
        "|---:|---:|---|---|---|---|---:|",
    ]
    for members, rr in sorted(res["runs"]["two_stage"].items(), key=lambda kv: int(kv[0])):
        lat = [x for r in rr for x in r["stage_latency_ms"]]
        poll = [x for r in rr for x in r["stage_latency_poll_ms"]]
        spied = [x for r in rr for x in r.get("partials_broker_ms", [])]
        b = med([r["bytes_per_window_per_model"] for r in rr])
        disk = [r["disk_bytes_per_window_per_model"] for r in rr if r.get("disk_bytes_per_window_per_model")]
        lines.append(
            f"| {members} | {rr[0]['windows']} | {pct(lat, 50):.0f} / {pct(lat, 99):.0f} / "
            f"{max(lat, default=float('nan')):.0f} ({len(lat)}) | {pct(poll, 50):.0f} / {pct(poll, 99):.0f} "
            f"({len(poll)}) | {pct(spied, 50):.0f} / {pct(spied, 99):.0f} | {b:,.0f} ({med(disk):,.0f}) | "
            f"{med([r['records_per_window_per_model'] for r in rr]):.2f} |"
        )
    return lines


def live_lines(res: dict[str, Any]) -> list[str]:
    lines = [
        "| mode | runs | triggers | event-to-trigger p50 / p99 / max ms | model stage p50 / p99 ms (n) | "
        "warm: event-to-trigger p50 / p99 ms (n) | warm: model stage p50 / p99 ms (n) |",
        "|---|---:|---:|---|---|---|---|",
    ]
    for mode in ("per_partition", "two_stage"):
        rr = res["runs"][mode]
        e2e = [x for r in rr for x in r["event_to_trigger_ms"]]
        stage = [x for r in rr for x in r.get("stage_latency_ms", [])]
        st = f"{pct(stage, 50):.0f} / {pct(stage, 99):.0f} ({len(stage)})" if stage else ""
        warm = [x for r in rr for x in r["event_to_trigger_warm_ms"]]
        stage_warm = [x for r in rr for x in r.get("stage_latency_warm_ms", [])]
        sw = f"{pct(stage_warm, 50):.0f} / {pct(stage_warm, 99):.0f} ({len(stage_warm)})" if stage else ""
        lines.append(
            f"| {mode} | {len(rr)} | {len(e2e)} | {pct(e2e, 50):.0f} / {pct(e2e, 99):.0f} / "
            f"{max(e2e, default=float('nan')):.0f} | {st} | {pct(warm, 50):.0f} / {pct(warm, 99):.0f} "
            f"({len(warm)}) | {sw} |"
        )
    return lines


# -- main ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="merge,hop,scale,live")
    ap.add_argument("--quick", action="store_true", help="small sizes, one round (a smoke test)")
    ap.add_argument("--window", type=float, default=10.0, help="window width, seconds of event time")
    ap.add_argument("--rate", type=float, default=1000.0, help="event-time rate per model, events/s")
    ap.add_argument("--hop-events", type=int, default=300_000, help="predictions per hop setup")
    ap.add_argument("--hop-rounds", type=int, default=3)
    ap.add_argument("--hop-setups", default="1,4", help="models = partitions for each hop setup")
    ap.add_argument("--scale-events", type=int, default=400_000)
    ap.add_argument("--scale-rounds", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--members", default="1,2,4")
    ap.add_argument("--baseline-members", default="1,2,4", help="per_partition member counts ('' for none)")
    ap.add_argument("--live-rate", type=float, default=5000.0)
    ap.add_argument("--live-seconds", type=float, default=40.0)
    ap.add_argument("--live-window", type=float, default=2.0)
    ap.add_argument("--live-rounds", type=int, default=2)
    ap.add_argument("--merge-sizes", default="10,100,1000,2500,10000")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--poll", type=float, default=0.1, help="seconds between /state polls")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--kafka-dir", type=Path, help="the broker's directory (on-disk size of the partials)")
    ap.add_argument(
        "--consumer",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a librdkafka consumer setting for every member (kafka.consumer), e.g. queued.min.messages=1000",
    )
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "two_stage.json"))
    a = ap.parse_args(argv)
    CONSUMER.update(kv.split("=", 1) for kv in a.consumer)
    logging.getLogger("stream_monitor").setLevel(logging.ERROR)  # the reference's baseline note, per load
    parts = set(a.parts.split(","))
    if a.quick:
        a.hop_events, a.scale_events, a.hop_rounds, a.scale_rounds, a.live_rounds = 30_000, 40_000, 1, 1, 1
        a.live_seconds, a.repeat, a.merge_sizes = 12.0, 3, "100,2500"
    t_all = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="sm-two-stage-"))
    results: dict[str, Any] = {"machine": machine_info(), "args": vars(a) | {"kafka_dir": str(a.kafka_dir)}}
    lines: list[str] = []
    if "merge" in parts:
        results["merge"] = merge_bench(
            workdir, [int(x) for x in a.merge_sizes.split(",")], a.repeat, a.window
        )
        lines += ["In process: shard reports, decode, merge, judge", "", *merge_lines(results["merge"]), ""]
    started = False
    kafka_dir = a.kafka_dir
    if parts & {"hop", "scale", "live"}:
        bootstrap, kafka_dir, started = broker(workdir, a.kafka_dir)
    try:
        if "hop" in parts:
            setups = []
            for k in [int(x) for x in a.hop_setups.split(",")]:
                inputs = produce_inputs(
                    bootstrap,
                    workdir,
                    f"hop{k}-{uuid.uuid4().hex[:6]}",
                    models=k,
                    partitions=k,
                    events_per_model=a.hop_events // k,
                    rate=a.rate,
                    window=a.window,
                    key="model_id",
                )
                name = f"{k} model{'s' if k > 1 else ''}, {k} partition{'s' if k > 1 else ''}, key model_id"
                runs: dict[str, list[dict[str, Any]]] = {"per_partition": [], "two_stage": []}
                for r in range(a.hop_rounds):
                    for mode in ("per_partition", "two_stage"):
                        res = run_group(
                            bootstrap,
                            workdir,
                            inputs,
                            mode,
                            1,
                            f"hop{k}-{mode[:3]}-{r}",
                            a.timeout,
                            a.poll,
                            kafka_dir,
                        )
                        runs[mode].append(res)
                        print(
                            f"hop {name} round {r + 1}: {mode} {res['events_per_s']:,.0f} events/s",
                            file=sys.stderr,
                        )
                setups.append({"name": name, "inputs": vars(inputs) | {"references": None}, "runs": runs})
            results["hop"] = {"setups": setups}
            table = hop_lines(results["hop"])
            lines += [f"Point 6: the extra hop ({a.hop_events:,} predictions, 1 member)", "", *table, ""]
        if "scale" in parts:
            inputs = produce_inputs(
                bootstrap,
                workdir,
                f"scale-{uuid.uuid4().hex[:6]}",
                models=1,
                partitions=a.partitions,
                events_per_model=a.scale_events,
                rate=a.rate,
                window=a.window,
                key="event_id",
            )
            members = [int(x) for x in a.members.split(",")]
            baseline = [int(x) for x in a.baseline_members.split(",") if x]
            scale_runs: dict[str, dict[str, list[dict[str, Any]]]] = {
                "two_stage": {str(m): [] for m in members},
                "per_partition": {str(m): [] for m in baseline},
            }
            for r in range(a.scale_rounds):
                for mode, counts in (("two_stage", members), ("per_partition", baseline)):
                    for m in counts:
                        res = run_group(
                            bootstrap,
                            workdir,
                            inputs,
                            mode,
                            m,
                            f"sc-{mode[:3]}{m}-{r}",
                            a.timeout,
                            a.poll,
                            kafka_dir,
                        )
                        scale_runs[mode][str(m)].append(res)
                        print(
                            f"scale round {r + 1}: {mode} {m} members {res['events_per_s']:,.0f} events/s",
                            file=sys.stderr,
                        )
            results["scale"] = {"inputs": vars(inputs) | {"references": None}, "runs": scale_runs}
            lines += [
                f"Point 7: {a.scale_events:,} predictions + {inputs.labels_n:,} labels on {a.partitions} "
                f"partitions, key event_id, windows of {a.window:g} s ({inputs.windows_per_model} windows), "
                f"produced in {inputs.produce_s:.0f} s",
                "",
                *scale_lines(results["scale"]),
                "",
                *latency_lines(results["scale"]),
                "",
            ]
        if "live" in parts:
            live: dict[str, list[dict[str, Any]]] = {"per_partition": [], "two_stage": []}
            for r in range(a.live_rounds):
                for mode in ("per_partition", "two_stage"):
                    res = live_run(
                        bootstrap,
                        workdir,
                        mode,
                        2,
                        a.partitions,
                        a.live_rate,
                        a.live_seconds,
                        a.live_window,
                        a.timeout,
                    )
                    live[mode].append(res)
                    print(
                        f"live round {r + 1}: {mode} {len(res['event_to_trigger_ms'])} triggers",
                        file=sys.stderr,
                    )
            results["live"] = {"runs": live}
            lines += [
                f"Live: 2 members, {a.partitions} partitions, key event_id, {a.live_rate:,.0f} events/s for "
                f"{a.live_seconds:.0f} s, windows of {a.live_window:g} s, batches of 1,000 / 20 ms",
                "",
                *live_lines(results["live"]),
                "",
            ]
    finally:
        if started:
            subprocess.run(
                ["bash", str(KAFKA_SH), "stop", str(kafka_dir)],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
    lines.append(f"(two-stage bench took {time.perf_counter() - t_all:.0f} s)")
    print("\n".join(lines))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
