"""Model versions and the reference registry: what they cost on the hot path, in memory and at start-up.

The event shape of the other benches (20 numeric + 3 categorical features, binary score, 10 % of
events labelled), in process, no broker:

- **Routing.** The whole engine (JSON in, triggers out, labels joined) on the same events three ways,
  alternated in one process: without ``model_version``; every event naming one version (the usual
  batch: one C-level count routes it); and a canary, two versions interleaved event by event in
  every batch (each batch split in two with ``take_batch``, labels routed to the version holding
  their prediction). CPU time of the thread, median of the rounds.
- **Memory per active version.** RSS after a model has seen one version, then two side by side, each
  with its windows open and 200,000 predictions waiting for a label (fresh process per arm).
- **The registry record.** Bytes of a reference profile as a registry record (zlib) against its JSON,
  and the time a member takes to decode and check one (``decode_record``: inflate, parse, digest,
  schema fit) — what reading the registry at start-up costs per published model version.

``python bench/versions.py [--events N] [--rounds R] [--json OUT]`` prints a Markdown report.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    current_rss_mb,
    gen_columns,
    machine_info,
    make_reference,
    make_schema,
    to_json_events,
    to_json_labels,
)

from stream_monitor.core.engine import MonitoringEngine
from stream_monitor.core.registry import decode_record, encode_record, registry_key
from stream_monitor.core.settings import ModelSettings, WindowSettings

SETTINGS = ModelSettings(window=WindowSettings(kind="count", size=5000), warmup_events=5000)
BATCH = 10_000


def _with_version(
    raws: list[bytes], version: str | None, every: int = 1, other: str | None = None
) -> list[bytes]:
    """Events naming ``version`` (``None``: none); with ``other``, every ``every``-th names ``other``."""
    out = []
    for i, raw in enumerate(raws):
        name = other if other is not None and i % every == 1 else version
        new = b"" if name is None else b'"model_version":"' + name.encode() + b'",'
        out.append(raw.replace(b'"model_version":"v1",', new, 1))
    return out


def _engine(registry: dict[str, Any] | None = None) -> MonitoringEngine:
    schema = make_schema()
    return MonitoringEngine(
        {"m0": schema}, {"m0": SETTINGS}, {"m0": make_reference(schema)}, registry=registry
    )


def routing(n: int, rounds: int) -> dict[str, float]:
    """µs of thread CPU per event for each arm, median over ``rounds`` alternated rounds."""
    cols = gen_columns(n, seed=7)
    raws = to_json_events("m0", cols)
    labels = to_json_labels("m0", cols)
    schema = make_schema()
    second = make_reference(schema, seed=99)
    arms = {
        "no model_version": (_with_version(raws, None), None),
        "one version named": (_with_version(raws, "1"), None),
        "two versions, interleaved (canary)": (_with_version(raws, "1", 2, "2"), {"m0": {"2": second}}),
    }
    times: dict[str, list[float]] = {name: [] for name in arms}
    label_batches = [labels[i : i + BATCH // 10] for i in range(0, len(labels), BATCH // 10)]
    for _ in range(rounds):
        for name, (events, registry) in arms.items():
            engine = _engine(registry)
            started = time.thread_time()
            for k, i in enumerate(range(0, len(events), BATCH)):
                engine.process_predictions(events[i : i + BATCH], now=0.0)
                if k < len(label_batches):
                    engine.process_labels(label_batches[k], now=0.0)
            times[name].append((time.thread_time() - started) / n * 1e6)
    return {name: statistics.median(v) for name, v in times.items()}


def memory_child(versions: int) -> float:
    """RSS (MB) of a process whose model watched ``versions`` versions side by side, 200,000 events each
    (events generated batch by batch and dropped, so only the engine's state stays)."""
    names = [str(v + 1) for v in range(versions)]
    engine = _engine(
        {"m0": {name: make_reference(make_schema(), seed=50 + k) for k, name in enumerate(names)}}
    )
    for start in range(0, 200_000 * versions, BATCH):
        cols = gen_columns(BATCH, seed=3 + start, start=start)
        raws = _with_version(to_json_events("m0", cols), names[0], 2, names[1] if versions > 1 else None)
        engine.process_predictions(raws, now=0.0)
    assert len(engine.models["m0"].active) == versions
    del cols, raws
    import gc

    gc.collect()
    return current_rss_mb()


def memory() -> dict[int, float]:
    out = {}
    for versions in (1, 2):
        done = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(versions)],
            capture_output=True,
            text=True,
            check=True,
        )
        out[versions] = float(done.stdout.strip().splitlines()[-1])
    return out


def registry_record(rounds: int) -> dict[str, float]:
    schema = make_schema()
    profile = make_reference(schema)
    value = encode_record(profile, "m0", "2", published_at=0.0)
    key = registry_key("m0", "2")
    seconds = []
    for _ in range(rounds * 5):
        started = time.perf_counter()
        decode_record(key, value, {"m0": schema})
        seconds.append(time.perf_counter() - started)
    return {
        "json_bytes": len(profile.to_json()),
        "record_bytes": len(value),
        "decode_ms": statistics.median(seconds) * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json")
    ap.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.memory_child:
        print(memory_child(a.memory_child))
        return 0
    started = time.perf_counter()
    route = routing(a.events, a.rounds)
    mem = memory()
    record = registry_record(a.rounds)
    base = route["no model_version"]
    lines = [
        f"Events: {a.events:,} (20 numeric + 3 categorical, binary score, 10 % labelled), "
        f"batches of {BATCH:,}; {a.rounds} rounds alternated, median thread CPU.",
        "",
        "| arm | µs/event | vs no model_version |",
        "|---|---:|---:|",
        *[f"| {name} | {v:.2f} | {v / base:.2f}× |" for name, v in route.items()],
        "",
        "| active versions (200,000 pending labels and open windows each) | RSS |",
        "|---|---:|",
        *[f"| {k} | {v:.0f} MB |" for k, v in mem.items()],
        "",
        "Registry record of one reference profile (5,000-row sample per feature): "
        f"{record['record_bytes']:,} bytes (its JSON: {record['json_bytes']:,}); "
        f"decode and check {record['decode_ms']:.1f} ms.",
        "",
        f"(versions bench took {time.perf_counter() - started:.0f} s; {machine_info().get('cpu', '')})",
    ]
    print("\n".join(lines))
    if a.json:
        Path(a.json).write_text(json.dumps({"routing": route, "memory": mem, "registry": record}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
