"""End-to-end throughput, scaling and latency of ``stream-monitor run`` against a real broker (issue 5,
points 1 and 4).

1. Pre-produce N prediction events (20 numeric + 3 categorical features, binary score; key = event_id,
   so they spread over the partitions) and labels for 10 % of them into fresh topics.
2. Run the service (``stream-monitor run``, all default detectors, count windows of 5,000) as a child
   process with a fresh consumer group; poll its ``/metrics`` until every prediction is processed.
   events/s = N / (time from the first processed event to the last); also p50/p99 per-batch processing
   latency (the service's histogram), peak RSS (VmHWM) and CPU seconds per million events. Median of
   ``--runs`` runs.
3. Two processes in one group on 4 partitions: scaling ratio against one process.
4. Latency: one partition, events produced live at half the measured single-process rate with event
   time = wall clock at produce; the key feature alternates between shifted and not every window, with
   ``consecutive_windows: 1`` and no cooldown, so every shifted window fires a trigger; event-to-trigger
   latency = trigger ``emitted_at`` − ``event_time`` (the event time of the window's last event).
5. The bare-consumer floor (issue 14, point 2): on one partition, ``--floor-events`` events (10 %
   labelled), a confluent-kafka consumer with the service's settings that only decodes every message
   with ``orjson.loads`` and pulls each prediction's features into numpy arrays, against ``stream-monitor
   run`` on the same topics; the two alternate (floor, service, floor, service, ...), each a child
   process with a fresh group, and the ratio service/floor is printed. Each ``--compare-with DIR``
   adds an arm: the service run from another source tree (e.g. an unpacked older commit), in the same
   alternation. ``--floor-only`` runs this part alone.

Needs the broker: ``KAFKA_BOOTSTRAP_SERVERS`` set, or the script starts one with ``deploy/local/kafka.sh``.
``python bench/throughput.py [--events N] [--runs 3] [--floor-events 300000] [--floor-runs 3] [--floor-only]``

``--latency-only RATE [--latency-rounds 3] [--latency-seconds 20] [--checkpoint-interval S]
[--compare-with DIR ...]`` runs part 4 alone at RATE events/s, this tree and each other tree
alternated (the arms' order rotating each round).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

from common import (
    ROOT,
    gen_columns,
    make_reference,
    make_schema,
    target_line,
    to_json_events,
    to_json_labels,
)

KAFKA_SH = ROOT / "deploy" / "local" / "kafka.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker(workdir: Path) -> tuple[str, bool]:
    """Bootstrap servers, and whether this script started the broker (and must stop it)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"], False
    subprocess.run(["bash", str(KAFKA_SH), "fetch"], check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run(
        ["bash", str(KAFKA_SH), "start", str(workdir / "kafka")], check=True, capture_output=True, text=True
    ).stdout
    m = re.search(r"KAFKA_BOOTSTRAP_SERVERS=(\S+)", out)
    if not m:
        raise RuntimeError(f"kafka.sh start printed no bootstrap address: {out!r}")
    return m.group(1), True


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    for f in futures.values():
        f.result(30)


def produce(bootstrap: str, topic: str, raws: list[bytes], keys: list[bytes] | None) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                  "compression.type": "lz4", "queue.buffering.max.messages": 2_000_000})  # fmt: skip
    for i, raw in enumerate(raws):
        while True:
            try:
                p.produce(topic, raw, None if keys is None else keys[i])
                break
            except BufferError:
                p.poll(0.05)
        if i % 10_000 == 0:
            p.poll(0)
    p.flush(120)


def write_config(path: Path, bootstrap: str, topics: dict[str, str], group: str, port: int,
                 reference: Path, policy: dict[str, Any] | None = None, batch_size: int = 10_000,
                 batch_timeout: float = 0.2) -> None:  # fmt: skip
    feats = {f"f{i}": ({"type": "numeric", "key": True} if i == 0 else "numeric") for i in range(20)}
    feats.update({f"c{j}": "categorical" for j in range(3)})
    model: dict[str, Any] = {
        "id": "m0",
        "task": "binary",
        "features": feats,
        "reference": str(reference),
        "window": {"kind": "count", "size": 5000},
    }
    if policy:
        model["policy"] = policy
    cfg = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": group,
            "topics": topics,
            "batch_size": batch_size,
            "batch_timeout_seconds": batch_timeout,
        },
        "metrics": {"host": "127.0.0.1", "port": port},
        "models": [model],
    }
    path.write_text(json.dumps(cfg))  # JSON is YAML


def scrape(port: int) -> dict[str, float]:
    """Sum of each metric family sample name (labels dropped)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        key = name
        if "stream=" in name_labels or "role=" in name_labels:
            m = re.search(r'(?:stream|role)="(\w+)"', name_labels)
            key = f"{name}[{m.group(1) if m else ''}]"
        if 'le="' in name_labels:
            m = re.search(r'le="([^"]+)"', name_labels)
            key += f"@{m.group(1) if m else ''}"
        with contextlib.suppress(ValueError):
            out[key] = out.get(key, 0.0) + float(value)
    return out


def proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MB) of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                hwm = int(line.split()[1]) / 1024
    return cpu, hwm


def start_service(config: Path, log: Path, source: Path | None = None) -> subprocess.Popen[bytes]:
    """``stream-monitor run`` as a child process; ``source``: run the package from that source tree."""
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    return subprocess.Popen(
        [sys.executable, "-m", "stream_monitor.cli", "run", "--config", str(config)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=source or ROOT,  # `-m` puts the working directory first on sys.path
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


PROCESSED = "stream_monitor_events_processed_total[predictions]"


def consume_run(
    config_paths: list[Path],
    ports: list[int],
    n: int,
    workdir: Path,
    timeout: float,
    source: Path | None = None,
) -> dict[str, Any]:
    procs = [start_service(c, workdir / f"service-{i}.log", source) for i, c in enumerate(config_paths)]
    try:
        t_first = None
        deadline = time.monotonic() + timeout
        done = 0.0
        cpu0 = 0.0
        samples: list[dict[str, float]] = []
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"service exited early; see {workdir}/service-*.log")
            samples = [scrape(port) for port in ports]
            done = sum(s.get(PROCESSED, 0.0) for s in samples)
            now = time.monotonic()
            if t_first is None and done > 0:
                t_first = now
                cpu0 = sum(proc_stats(p.pid)[0] for p in procs)
                first_done = done
            if done >= n:
                break
            time.sleep(0.05)
        t_end = time.monotonic()
        stats = [proc_stats(p.pid) for p in procs]
        if t_first is None or done < n:
            raise RuntimeError(f"processed {done:.0f} of {n} events in {timeout:.0f} s")
        counted = done - first_done
        seconds = t_end - t_first
        lat = _latency_quantiles(samples)
        return {
            "events_per_s": counted / seconds,
            "seconds": seconds,
            "cpu_s_per_million": (sum(s[0] for s in stats) - cpu0) / counted * 1e6,
            "peak_rss_mb": max(s[1] for s in stats),
            **lat,
        }
    finally:
        stop(procs)


def _latency_quantiles(samples: list[dict[str, float]]) -> dict[str, float]:
    """p50/p99 of the per-batch processing latency histogram (upper bucket bounds)."""
    buckets: dict[float, float] = {}
    for s in samples:
        for k, v in s.items():
            if k.startswith("stream_monitor_processing_latency_seconds_bucket[predictions]@"):
                le = k.rsplit("@", 1)[1]
                buckets[float("inf") if le == "+Inf" else float(le)] = (
                    buckets.get(float("inf") if le == "+Inf" else float(le), 0.0) + v
                )
    if not buckets:
        return {}
    total = max(buckets.values())
    out = {}
    for q in (0.5, 0.99):
        out[f"batch_latency_p{int(q * 100)}_s"] = next(
            le for le in sorted(buckets) if buckets[le] >= q * total
        )
    return out


def latency_run(
    bootstrap: str,
    workdir: Path,
    reference: Path,
    rate: float,
    seconds: float,
    source: Path | None = None,
    checkpoint_interval: float | None = None,
) -> dict[str, Any]:
    from confluent_kafka import Consumer, Producer

    tag = uuid.uuid4().hex[:8]
    topics = {"predictions": f"lp-{tag}", "labels": f"ll-{tag}", "triggers": f"lt-{tag}",
              "dlq": f"ld-{tag}", "state": f"ls-{tag}"}  # fmt: skip
    create_topics(bootstrap, [topics["predictions"], topics["labels"]], 1)
    port = free_port()
    cfg = workdir / "latency.yaml"
    write_config(cfg, bootstrap, topics, f"g-{tag}", port, reference,
                 {"consecutive_windows": 1, "cooldown_seconds": 0, "prediction_psi_alarm": 100.0,
                  "integrity_triggers": False}, batch_size=1000, batch_timeout=0.02)  # fmt: skip
    if checkpoint_interval is not None:
        settings = json.loads(cfg.read_text())
        settings["kafka"]["checkpoint_interval_seconds"] = checkpoint_interval
        cfg.write_text(json.dumps(settings))
    total = int(rate * seconds)
    floor = source == FLOOR
    if floor:  # the bare consumer in place of the service (latency_floor_child)
        proc = subprocess.Popen(
            [sys.executable, __file__, "--latency-floor-child", f"{cfg},{total},{seconds * 3 + 60}"],
            stdout=subprocess.PIPE,
            stderr=(workdir / "latency-floor.log").open("wb"),
        )
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the bare consumer did not start")
    else:
        proc = start_service(cfg, workdir / "latency.log", source)
    try:
        for _ in range(200):
            if floor or scrape(port).get("stream_monitor_ready", 0) >= 1 or scrape(port):
                break
            time.sleep(0.1)
        time.sleep(3)
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        block = 2000
        cols = [gen_columns(block, seed=k, start=k * block) for k in range(8)]
        t0 = time.time()
        sent = 0
        while sent < total:
            target = t0 + sent / rate
            delay = target - time.time()
            if delay > 0:
                time.sleep(delay)
            c = cols[(sent // block) % 8]
            shifted = (sent // 5000) % 2 == 1
            x0 = c.numeric[0] + (2.0 if shifted else 0.0)
            now = time.time()
            for i in range(block):
                feats: dict[str, Any] = {f"f{j}": float(c.numeric[j, i]) for j in range(1, 20)}
                feats["f0"] = float(x0[i])
                feats.update({f"c{j}": c.categorical[j][i] for j in range(3)})
                ev = {"event_id": f"l{sent + i}", "model_id": "m0", "ts": now, "features": feats,
                      "prediction": {"score": float(c.score[i])}}  # fmt: skip
                p.produce(topics["predictions"], orjson.dumps(ev), b"m0")
            p.poll(0)
            sent += block
        p.flush(30)
        if floor:
            out, _ = proc.communicate(timeout=seconds * 3 + 90)
            lat = orjson.loads(out.splitlines()[-1])
            return _latency_summary(lat, rate)
        time.sleep(3)
        cons = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"read-{tag}", "auto.offset.reset": "earliest"}
        )
        cons.subscribe([topics["triggers"]])
        lat = []
        idle = time.monotonic()
        while time.monotonic() - idle < 5:
            m = cons.poll(0.5)
            if m is None or m.error():
                continue
            idle = time.monotonic()
            t = orjson.loads(m.value() or b"{}")
            lat.append(float(t["emitted_at"]) - float(t["event_time"]))
        cons.close()
    finally:
        stop([proc])
    return _latency_summary(lat, rate)


def _latency_summary(lat: list[float], rate: float) -> dict[str, Any]:
    if not lat:
        return {"triggers": 0}
    arr = np.array(lat)
    return {
        "triggers": len(lat),
        "rate": rate,
        "p50_ms": float(np.percentile(arr, 50) * 1e3),
        "p99_ms": float(np.percentile(arr, 99) * 1e3),
        "max_ms": float(arr.max() * 1e3),
    }


#: ``latency_run``'s arm that runs the bare consumer instead of the service.
FLOOR = Path("floor")


def latency_floor_child(config: Path, n: int, timeout: float) -> list[float]:
    """The latency floor: a consumer with the service's settings that decodes every message and, for
    the last event of each count window of 5,000 (offsets 4999, 9999, ...: where the service closes a
    window and may trigger), records now − its event time once its batch is decoded. What is left of
    the service's event-to-trigger latency above this is the service's own (processing, judging,
    checkpoints)."""
    from confluent_kafka import Consumer, KafkaError

    from stream_monitor.config import consumer_config, load_config

    app = load_config(str(config), env={}, check_references=False)
    k = app.require_kafka()
    consumer = Consumer(consumer_config(app))
    consumer.subscribe([k.topics.predictions])
    deadline = time.monotonic() + timeout
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(0.1)
    print("ready", flush=True)
    lat: list[float] = []
    done = 0
    try:
        while done < n and time.monotonic() < deadline:
            ends: list[float] = []
            for msg in consumer.consume(num_messages=k.batch_size, timeout=k.batch_timeout_seconds):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(err.str())
                    continue
                obj = orjson.loads(msg.value())
                done += 1
                if (msg.offset() or 0) % 5000 == 4999:
                    ends.append(float(obj["ts"]))
            now = time.time()
            lat.extend(now - t for t in ends)
    finally:
        consumer.close()
    return lat


def latency_comparison(
    bootstrap: str,
    workdir: Path,
    reference: Path,
    rate: float,
    seconds: float,
    rounds: int,
    compare_with: list[Path],
    checkpoint_interval: float | None,
) -> dict[str, list[dict[str, Any]]]:
    """``latency_run`` for this tree and each ``compare_with`` tree, alternated over ``rounds``
    (the arms' order rotates each round, so no arm always runs first on a noisy machine)."""
    arms: list[tuple[str, Path | None]] = [
        ("bare consumer (floor)", FLOOR),
        ("this tree", None),
        *((str(p), p) for p in compare_with),
    ]
    out: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in arms}
    for r in range(rounds):
        for name, source in arms[r % len(arms) :] + arms[: r % len(arms)]:
            res = latency_run(bootstrap, workdir, reference, rate, seconds, source, checkpoint_interval)
            print(f"round {r + 1} {name}: {res}", flush=True)
            out[name].append(res)
    return out


def latency_lines(results: dict[str, list[dict[str, Any]]], rate: float, seconds: float) -> list[str]:
    lines = [
        f"Event-to-trigger latency, {rate:,.0f} events/s produced live to one partition for {seconds:.0f} s "
        "(medians over rounds, arms alternated):",
        "",
        "| arm | triggers (median) | p50 (ms) | p99 (ms) | max (ms) | p99 per round |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, runs in results.items():
        ok = [x for x in runs if x.get("triggers")]
        if not ok:
            lines.append(f"| {name} | 0 | | | | |")
            continue

        def med(key: str, ok: list[dict[str, Any]] = ok) -> float:
            return statistics.median(x[key] for x in ok)

        lines.append(
            f"| {name} | {med('triggers'):.0f} | {med('p50_ms'):.0f} | {med('p99_ms'):.0f} | "
            f"{med('max_ms'):.0f} | {', '.join(format(x['p99_ms'], '.0f') for x in ok)} |"
        )
    return lines


# --- the bare-consumer floor (issue 14, point 2) ---------------------------------------------------


def floor_child(config: Path, n: int, timeout: float) -> dict[str, Any]:
    """The bare consumer: the service's consumer settings, topics and batch size, and nothing but
    ``orjson.loads`` of every message and the prediction features pulled into numpy, per batch.

    Timed as :func:`consume_run` times the service: from the end of the first batch that held
    predictions to the last prediction, counting the predictions after that first batch.
    """
    from operator import itemgetter

    from confluent_kafka import Consumer, KafkaError

    from stream_monitor.config import consumer_config, load_config

    app = load_config(str(config), env={}, check_references=False)
    k = app.require_kafka()
    schema = app.models[0].schema
    numeric = itemgetter(*schema.numeric_names)
    categorical = itemgetter(*schema.categorical_names)
    predictions_topic = k.topics.predictions
    consumer = Consumer(consumer_config(app))
    consumer.subscribe([predictions_topic, k.topics.labels])
    loads = orjson.loads
    done = first_done = 0
    t_first = None
    cpu_first = 0.0
    deadline = time.monotonic() + timeout
    try:
        while done < n and time.monotonic() < deadline:
            rows: list[Any] = []
            cats: list[Any] = []
            for msg in consumer.consume(num_messages=k.batch_size, timeout=k.batch_timeout_seconds):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(err.str())
                    continue
                obj = loads(msg.value())
                if msg.topic() == predictions_topic:
                    features = obj["features"]
                    rows.append(numeric(features))
                    cats.append(categorical(features))
            if rows:
                matrix = np.array(rows, dtype=np.float64).T  # feature-major, as the decoder's
                columns = [list(column) for column in zip(*cats, strict=True)]
                assert matrix.shape[1] == len(columns[0])
                done += len(rows)
                if t_first is None:
                    t_first, first_done, cpu_first = time.monotonic(), done, time.process_time()
        t_end, cpu_end = time.monotonic(), time.process_time()
    finally:
        consumer.close()
    if t_first is None or done < n:
        raise RuntimeError(f"floor consumer read {done} of {n} predictions in {timeout:.0f} s")
    return {
        "events_per_s": (done - first_done) / (t_end - t_first),
        "seconds": t_end - t_first,
        "cpu_s_per_million": (cpu_end - cpu_first) / (done - first_done) * 1e6,
        "peak_rss_mb": proc_stats(os.getpid())[1],
    }


def floor_run(config: Path, n: int, workdir: Path, timeout: float) -> dict[str, Any]:
    """:func:`floor_child` in a child process of its own, as the service runs."""
    out = subprocess.run(
        [sys.executable, __file__, "--floor-child", f"{config},{n},{timeout}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"floor consumer failed: {out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def floor_comparison(
    bootstrap: str,
    workdir: Path,
    reference: Path,
    n: int,
    pairs: int,
    timeout: float,
    compare_with: list[Path] | None = None,
) -> dict[str, Any]:
    """The floor and the service on the same one-partition topics of ``n`` events (10 % labelled),
    alternating floor, service, service from each of ``compare_with``, ``pairs`` times."""
    tag = uuid.uuid4().hex[:8]
    topics = {"predictions": f"fp-{tag}", "labels": f"fl-{tag}", "triggers": f"ft-{tag}",
              "dlq": f"fd-{tag}", "state": f"fs-{tag}"}  # fmt: skip
    create_topics(bootstrap, [topics["predictions"], topics["labels"]], 1)
    t0 = time.perf_counter()
    for k in range(0, n, 200_000):
        c = gen_columns(min(200_000, n - k), seed=k, start=k)
        produce(bootstrap, topics["predictions"], to_json_events("m0", c), [e.encode() for e in c.event_id])
        produce(bootstrap, topics["labels"], to_json_labels("m0", c), [e.encode() for e in c.event_id[::10]])
    produce_s = time.perf_counter() - t0
    arms: dict[str, list[dict[str, Any]]] = {"floor": [], "service": []}
    sources: dict[str, Path | None] = {"service": None}
    for path in compare_with or []:
        sources[str(path)] = path
        arms[str(path)] = []
    for r in range(pairs):
        for k, arm in enumerate(arms):
            port = free_port()
            cfg = workdir / f"floor-{k}-{r}.yaml"
            write_config(cfg, bootstrap, topics, f"gf-{tag}-{k}-{r}", port, reference)
            if arm == "floor":
                result = floor_run(cfg, n, workdir, timeout)
            else:
                result = consume_run([cfg], [port], n, workdir, timeout, sources[arm])
            arms[arm].append(result)
            print(f"floor comparison, round {r + 1}: {arm} {result['events_per_s']:,.0f} events/s",
                  file=sys.stderr)  # fmt: skip
    floor_rates = [x["events_per_s"] for x in arms["floor"]]
    out: dict[str, Any] = {"events": n, "pairs": pairs, "produce_s": produce_s, "arms": arms, "ratios": {}}
    for arm in arms:
        rates = [x["events_per_s"] for x in arms[arm]]
        out["ratios"][arm] = {
            "median": statistics.median(rates) / statistics.median(floor_rates),
            "per_round": [s / f for s, f in zip(rates, floor_rates, strict=True)],
        }
    return out


def floor_lines(res: dict[str, Any]) -> list[str]:
    """The floor comparison as Markdown: one row per arm, every run, the ratio to the floor."""
    arms = res["arms"]

    def name(arm: str) -> str:
        if arm == "floor":
            return "bare consumer (orjson.loads + features into numpy)"
        return (
            "`stream-monitor run` (this tree)" if arm == "service" else f"`stream-monitor run` from `{arm}`"
        )

    lines = [
        f"{res['events']:,} prediction events + {res['events'] // 10:,} labels pre-produced to 1 partition "
        f"({res['produce_s']:.0f} s); each consumer a child process with a fresh group, run in turn "
        f"({', '.join(arms)}) in each of {res['pairs']} rounds; batches of 10,000. CPU: the process's CPU "
        "time over the timed part (all threads: librdkafka's too).",
        "",
        "| consumer | events/s (median) | runs (in order) | CPU µs per event (median) | ratio to the floor "
        "(median) | ratio per round |",
        "|---|---:|---|---:|---:|---|",
    ]
    for arm, runs in arms.items():
        ratio = res["ratios"][arm]
        lines.append(
            f"| {name(arm)} | {statistics.median(x['events_per_s'] for x in runs):,.0f} | "
            f"{', '.join(format(x['events_per_s'], ',.0f') for x in runs)} | "
            f"{statistics.median(x['cpu_s_per_million'] for x in runs):.1f} | {ratio['median']:.2f} | "
            f"{'' if arm == 'floor' else ', '.join(format(r, '.2f') for r in ratio['per_round'])} |"
        )
    lines += [
        "",
        "| hot-path target (issue 14) | measured | target | ratio | |",
        "|---|---:|---:|---:|---|",
        target_line(
            "service / bare-consumer floor, same run", res["ratios"]["service"]["median"], 0.8, "×", True
        ),
        target_line(
            "events/s, one process, 1 partition",
            statistics.median(x["events_per_s"] for x in arms["service"]),
            100_000,
            "events/s",
            True,
        ),
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--floor-events", type=int, default=300_000)
    ap.add_argument("--floor-runs", type=int, default=3, help="rounds of floor, service (alternating)")
    ap.add_argument("--floor-only", action="store_true", help="only the bare-consumer floor comparison")
    ap.add_argument(
        "--compare-with", type=Path, action="append", help="also run the service from this source tree"
    )
    ap.add_argument(
        "--latency-only",
        type=float,
        metavar="RATE",
        help="only the latency run at RATE events/s, this tree and each --compare-with tree alternated",
    )
    ap.add_argument("--latency-rounds", type=int, default=3)
    ap.add_argument("--checkpoint-interval", type=float, help="the services' checkpoint_interval_seconds")
    ap.add_argument("--json")
    ap.add_argument("--floor-child", help=argparse.SUPPRESS)
    ap.add_argument("--latency-floor-child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.latency_floor_child:
        config, n, timeout = a.latency_floor_child.split(",")
        print(json.dumps(latency_floor_child(Path(config), int(n), float(timeout))))
        return 0
    if a.floor_child:
        config, n, timeout = a.floor_child.split(",")
        print(json.dumps(floor_child(Path(config), int(n), float(timeout))))
        return 0
    t_all = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="sm-bench-"))
    bootstrap, started = broker(workdir)
    compare_with = [path.resolve() for path in a.compare_with or []]
    try:
        schema = make_schema()
        reference = workdir / "m0.reference.json"
        reference.write_bytes(make_reference(schema).to_json())
        if a.latency_only:
            results = latency_comparison(
                bootstrap, workdir, reference, a.latency_only, a.latency_seconds, a.latency_rounds,
                compare_with, a.checkpoint_interval,
            )  # fmt: skip
            print("\n".join(latency_lines(results, a.latency_only, a.latency_seconds)))
            if a.json:
                Path(a.json).write_text(json.dumps({"latency": results}, indent=1, default=str))
            return 0
        floor = floor_comparison(
            bootstrap, workdir, reference, a.floor_events, a.floor_runs, a.timeout, compare_with
        )
        if a.floor_only:
            print("\n".join([*floor_lines(floor), "",
                             f"(floor comparison took {time.perf_counter() - t_all:.0f} s)"]))  # fmt: skip
            if a.json:
                Path(a.json).write_text(json.dumps({"floor": floor}, indent=1, default=str))
            return 0
        tag = uuid.uuid4().hex[:8]
        topics = {"predictions": f"p-{tag}", "labels": f"l-{tag}", "triggers": f"t-{tag}",
                  "dlq": f"d-{tag}", "state": f"s-{tag}"}  # fmt: skip
        create_topics(bootstrap, [topics["predictions"], topics["labels"]], 4)
        t0 = time.perf_counter()
        for k in range(0, a.events, 200_000):
            c = gen_columns(min(200_000, a.events - k), seed=k, start=k)
            produce(
                bootstrap, topics["predictions"], to_json_events("m0", c), [e.encode() for e in c.event_id]
            )
            labs = to_json_labels("m0", c)
            produce(bootstrap, topics["labels"], labs, [e.encode() for e in c.event_id[::10]])
        produce_s = time.perf_counter() - t0

        single = []
        for r in range(a.runs):
            port = free_port()
            cfg = workdir / f"single-{r}.yaml"
            write_config(cfg, bootstrap, topics, f"g1-{tag}-{r}", port, reference)
            single.append(consume_run([cfg], [port], a.events, workdir, a.timeout))
        double = []
        for r in range(a.runs):
            ports = [free_port(), free_port()]
            cfgs = [workdir / f"double-{r}-{i}.yaml" for i in range(2)]
            for cfg, port in zip(cfgs, ports, strict=True):
                write_config(cfg, bootstrap, topics, f"g2-{tag}-{r}", port, reference)
            double.append(consume_run(cfgs, ports, a.events, workdir, a.timeout))
        med = statistics.median(s["events_per_s"] for s in single)
        med2 = statistics.median(s["events_per_s"] for s in double)
        latency = latency_run(bootstrap, workdir, reference, med / 2, a.latency_seconds)
    finally:
        if started:
            subprocess.run(["bash", str(KAFKA_SH), "stop", str(workdir / "kafka")], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def row(name: str, runs: list[dict[str, Any]]) -> str:
        r = sorted(runs, key=lambda x: x["events_per_s"])[len(runs) // 2]
        return (
            f"| {name} | {statistics.median(x['events_per_s'] for x in runs):,.0f} | "
            f"{', '.join(format(x['events_per_s'], ',.0f') for x in runs)} | "
            f"{r.get('batch_latency_p50_s', float('nan')) * 1e3:.0f} / "
            f"{r.get('batch_latency_p99_s', float('nan')) * 1e3:.0f} | "
            f"{r['peak_rss_mb']:.0f} | {r['cpu_s_per_million']:.1f} |"
        )

    lines = [
        f"{a.events:,} prediction events + {a.events // 10:,} labels pre-produced to 4 partitions "
        f"({produce_s:.0f} s); `stream-monitor run`, default detectors, count windows of 5,000, batches of "
        "10,000.",
        "",
        "| consumers | events/s (median) | runs | batch latency p50 / p99 (ms) | peak RSS (MB) | "
        "CPU s per million events |",
        "|---|---:|---|---:|---:|---:|",
        row("1 process", single),
        row("2 processes, 4 partitions", double),
        "",
        f"Latency run (batches of 1,000, 20 ms batch timeout): {latency.get('rate', 0):,.0f} events/s "
        f"produced live to one partition for "
        f"{a.latency_seconds:.0f} s; {latency.get('triggers', 0)} triggers; event-to-trigger p50 "
        f"{latency.get('p50_ms', float('nan')):.0f} ms, p99 {latency.get('p99_ms', float('nan')):.0f} ms, "
        f"max {latency.get('max_ms', float('nan')):.0f} ms.",
        "",
        "| end-to-end target | measured | target | ratio | |",
        "|---|---:|---:|---:|---|",
        target_line("events/s, one consumer process", med, 150_000, "events/s", True),
        target_line("scaling, 2 processes on 4 partitions", med2 / med, 1.8, "×", True),
        target_line(
            "p99 event-to-trigger latency at half max rate",
            latency.get("p99_ms", float("inf")),
            250,
            "ms",
            False,
        ),
        target_line(
            "peak RSS, one process (1 model × 23 features)",
            statistics.median(s["peak_rss_mb"] for s in single),
            200,
            "MB",
            False,
        ),
        "",
        "Bare-consumer floor (issue 14): the service against a consumer that only decodes, same run.",
        "",
        *floor_lines(floor),
        "",
        f"(throughput bench took {time.perf_counter() - t_all:.0f} s)",
    ]
    print("\n".join(lines))
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {"single": single, "double": double, "latency": latency, "floor": floor},
                indent=1,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
