"""What a checkpoint costs the stream, on the real broker (issue 14, point 1): the loop's pause, the
time until the offsets are committed, the bytes written to the state topic and the memory peak.

The state is ``bench/memory.py``'s: 10 models × 50 features with full windows and 1,000,000 pending
predictions in one model's label buffer, in one partition-task of a
:class:`~stream_monitor.kafka.service.Service` (no consumer loop: the checkpoints are called as the
loop calls them). Then ``--checkpoints`` checkpoints, with between two of them what a few seconds of
traffic do: 4,000 events for one model (its windows change), 20,000 new pending predictions and
10,000 labels joining old ones.

- ``this tree``: as the service does it now: ``Checkpointer.start`` (outputs flushed, the state taken,
  the rest on the worker thread with its own producer), then ``collect`` on later turns of the loop;
  pause = the time ``start`` and the final ``collect`` held the calling thread; incremental records.
- a ``--before DIR`` tree: ``Checkpointer.run`` as the service called it there (everything on the
  loop: pause = the whole checkpoint).

Each arm runs in a fresh process; the arms alternate over ``--rounds``. Figures: median over rounds of
the median over the checkpoints after the first (the first writes everything once and sets the
producer up), and the first one's on its own.

``python bench/checkpoint.py [--rounds 3] [--checkpoints 5] [--pending 1000000] [--before DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TREE = Path(os.environ.get("BENCH_TREE") or ROOT).resolve()
if str(TREE) not in sys.path:
    sys.path.insert(0, str(TREE))
sys.path.insert(1, str(Path(__file__).resolve().parent))


def child(
    models: int, features: int, pending: int, refdir: str, bootstrap: str, checkpoints: int
) -> dict[str, Any]:
    import numpy as np
    from confluent_kafka import Consumer

    # stream_monitor first: bench/common.py puts this tree on the path, and the modules imported
    # before it are the ones measured.
    from stream_monitor.app import load_references
    from stream_monitor.config import parse_config
    from stream_monitor.kafka import checkpoint as checkpoint_module
    from stream_monitor.kafka.clients import OutputProducer
    from stream_monitor.kafka.service import PartitionTask, Service

    from common import gen_columns, to_json_events  # isort: skip
    from memory import PER_MODEL, _config, peak_mb, reset_peak, rss_mb  # isort: skip

    assert Path(checkpoint_module.__file__).resolve().is_relative_to(TREE), checkpoint_module.__file__

    tag = uuid.uuid4().hex[:8]
    cfg = _config(Path(refdir), models, features)
    cfg["kafka"] = {"bootstrap_servers": bootstrap, "group_id": f"bench-ckpt-{tag}"}
    app = parse_config(cfg, env={})
    service = Service(app, load_references(app))
    task = PartitionTask(0, service._new_engine(), service.topics)
    wall = time.time()
    for i in range(models):
        for j in range(0, PER_MODEL, 4000):
            c = gen_columns(
                4000, seed=i * 100 + j, start=j, n_numeric=features, n_categorical=0, prefix=f"m{i}-"
            )
            task.process("predictions", list(to_json_events(f"m{i}", c, n_numeric=features)), wall_now=wall)
    labels = task.engine.monitors["m0"].labels
    for j in range(0, pending, 100_000):
        k = min(100_000, pending - j)
        labels.add_predictions(
            [f"p-{j + x}" for x in range(k)], np.arange(j, j + k, dtype=float), np.full(k, 0.5), None
        )
    # Offsets to commit on a real input topic (state topic made by the producer on first write).
    from confluent_kafka.admin import AdminClient, NewTopic

    inputs = f"bench-ckpt-in-{tag}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    state_topic = f"bench-ckpt-state-{tag}"
    # The state topic as the service creates it (compacted, records up to 64 MiB).
    state_config = {"cleanup.policy": "compact", "max.message.bytes": str(64 << 20)}
    for made in admin.create_topics(
        [NewTopic(inputs, 1, 1), NewTopic(state_topic, 1, 1, config=state_config)]
    ).values():
        made.result(60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(
        admin.list_topics(t, timeout=10).topics[t].partitions for t in (inputs, state_topic)
    ):
        time.sleep(0.2)
    task.topics = {"predictions": inputs, "labels": inputs}
    task.offsets = {"predictions": 0, "labels": None}

    producer = OutputProducer({"bootstrap.servers": bootstrap}, triggers_topic="t", dlq_topic="d")
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-ckpt-{tag}", "enable.auto.commit": "false"}
    )
    background = None
    kwargs: dict[str, Any] = {"signer": service.signer}
    in_background = "background_producer" in checkpoint_module.Checkpointer.__init__.__code__.co_varnames
    if in_background:
        background = OutputProducer({"bootstrap.servers": bootstrap}, triggers_topic="t", dlq_topic="d")
        kwargs["background_producer"] = background
    cp = checkpoint_module.Checkpointer(consumer, producer, service.group, state_topic, **kwargs)
    records: list[tuple[bytes, int]] = []  # (key, bytes) of every state-topic record, blobs included
    for p in (producer, background):
        if p is not None:
            p.record = lambda topic, key, value, _record=p.record: (  # type: ignore[method-assign]
                records.append((key, len(value or b""))),
                _record(topic, key, value),
            )[-1]
    out: list[dict[str, Any]] = []
    made = pending
    for n in range(checkpoints):
        if n:  # a few seconds of traffic
            c = gen_columns(
                4000,
                seed=900 + n,
                start=PER_MODEL + n * 4000,
                n_numeric=features,
                n_categorical=0,
                prefix="m1-",
            )
            task.process("predictions", list(to_json_events("m1", c, n_numeric=features)), wall_now=wall)
            ids = [f"p-{made + x}" for x in range(20_000)]
            labels.add_predictions(
                ids, np.arange(made, made + 20_000, dtype=float), np.full(20_000, 0.5), None
            )
            made += 20_000
            joined = [f"p-{x}" for x in range(n * 10_000, (n + 1) * 10_000)]
            labels.join(joined, np.full(10_000, float(made)), np.ones(10_000), None, now=float(made))
            task.offsets = {"predictions": 0, "labels": None}
            task.dirty = True
        del records[:]
        reset_peak()
        before = rss_mb()
        t0 = time.perf_counter()
        if in_background:
            assert cp.start([task], "interval")
            pause = time.perf_counter() - t0
            result = None
            while result is None:  # the loop's later turns
                time.sleep(0.005)
                t1 = time.perf_counter()
                result = cp.collect()
                if result is not None:
                    pause += time.perf_counter() - t1
        else:
            result = cp.run([task], "interval")
            pause = time.perf_counter() - t0
        out.append(
            {
                "pause_s": pause,
                "seconds": time.perf_counter() - t0,
                "state_bytes": result.state_bytes,
                "peak_extra_mb": peak_mb() - before,
                "peak_mb": peak_mb(),
                "records": len(records),
                "blob_bytes": sum(size for key, size in records if b"/blob/" in key),
            }
        )
    if in_background:
        cp.close()
    consumer.close()
    return {"checkpoints": out, "rss_mb": rss_mb()}


def _child(tree: Path | None, spec: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_MONITOR_")}
    env["BENCH_TREE"] = str(tree or ROOT)
    run = subprocess.run(
        [sys.executable, __file__, "--child", spec], capture_output=True, text=True, cwd=ROOT, env=env
    )
    if run.returncode:
        raise SystemExit(f"child failed:\n{run.stderr[-3000:]}")
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=10)
    ap.add_argument("--features", type=int, default=50)
    ap.add_argument("--pending", type=int, default=1_000_000)
    ap.add_argument("--checkpoints", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", type=Path, action="append", default=[])
    ap.add_argument("--json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        models, features, pending, refdir, bootstrap, checkpoints = a.child.split(",")
        print(
            json.dumps(child(int(models), int(features), int(pending), refdir, bootstrap, int(checkpoints)))
        )
        return 0
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        raise SystemExit("needs a broker: KAFKA_BOOTSTRAP_SERVERS (deploy/local/kafka.sh start DIR)")
    from common import make_reference, make_schema

    arms: list[tuple[str, Path | None]] = [("this tree", None), *((str(p), p.resolve()) for p in a.before)]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in arms}
    with tempfile.TemporaryDirectory() as refdir:
        for i in range(a.models):
            schema = make_schema(f"m{i}", n_numeric=a.features, n_categorical=0)
            (Path(refdir) / f"m{i}.json").write_bytes(make_reference(schema, n=20_000, seed=7).to_json())
        spec = f"{a.models},{a.features},{a.pending},{refdir},{bootstrap},{a.checkpoints}"
        for r in range(a.rounds):
            for name, tree in arms[r % len(arms) :] + arms[: r % len(arms)]:
                res = _child(tree, spec)
                print(f"round {r + 1} {name}: {json.dumps(res)}", flush=True)
                results[name].append(res)
    lines = [
        f"{a.models} models × {a.features} features, {a.pending:,} pending predictions; "
        f"{a.checkpoints} checkpoints per process, {a.rounds} rounds (arms alternated). "
        f"Later = checkpoints 2..{a.checkpoints} (median), then the median over rounds.",
        "",
        "| arm | pause, first | pause, later | to committed, later | bytes written, first "
        "| bytes written, later | peak above RSS, later | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():

        def later(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return statistics.median(statistics.median(c[key] for c in r["checkpoints"][1:]) for r in runs)

        def first(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return statistics.median(r["checkpoints"][0][key] for r in runs)

        peak = statistics.median(max(c["peak_mb"] for c in r["checkpoints"]) for r in runs)
        lines.append(
            f"| {name} | {first('pause_s') * 1e3:.0f} ms | {later('pause_s') * 1e3:.0f} ms | "
            f"{later('seconds') * 1e3:.0f} ms | {first('state_bytes') / 1e6:.1f} MB | "
            f"{later('state_bytes') / 1e6:.1f} MB | {later('peak_extra_mb'):.0f} MB | {peak:.0f} MB |"
        )
    print("\n".join(lines))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
