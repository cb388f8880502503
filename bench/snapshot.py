"""Size and time of one partition-task's state: the monitor snapshot and the changelog record.

The model of issue 5 (20 numeric + 3 categorical features, binary score), default settings, a
configured reference (or, with ``--warmup``, one learned from the first live events), after
``--events`` predictions of which ``--pending`` still wait for their label (the rest are labelled).
Reported: snapshot bytes, ``snapshot()`` and ``restore()`` time (median of ``--repeat``), and the
state record on the changelog topic (``StateRecord.encode``: bytes and time, zlib included).

``python bench/snapshot.py [--events 110000] [--pending 100000] [--warmup] [--json OUT]``
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Columns, gen_columns, make_reference, make_schema, timed, to_batch

from stream_monitor.core.events import LabelBatch
from stream_monitor.core.monitor import ModelMonitor
from stream_monitor.core.settings import ModelSettings
from stream_monitor.kafka.state import StateRecord

BATCH = 10_000


def build(events: int, pending: int, warmup: bool) -> tuple[ModelMonitor, Any, Any]:
    schema = make_schema()
    reference = None if warmup else make_reference(schema)
    settings = ModelSettings()
    monitor = ModelMonitor(schema, settings, reference)
    c = gen_columns(events, seed=1)
    for start in range(0, events, BATCH):
        stop = min(events, start + BATCH)
        batch = to_batch(schema.model_id, _slice(c, start, stop))
        monitor.process_predictions(batch, now=float(c.ts[stop - 1]))
    labelled = range(0, events - pending)  # the oldest predictions get their label, the rest wait
    ids = [c.event_id[i] for i in labelled]
    labels = LabelBatch(
        schema.model_id,
        np.arange(len(ids)),
        ids,
        c.ts[: len(ids)] + 30.0,
        c.label[: len(ids)],
        [str(int(v)) for v in c.label[: len(ids)]],
    )
    monitor.process_labels(labels, now=float(c.ts[-1]))
    return monitor, schema, (settings, reference)


def _slice(c: Columns, a: int, b: int) -> Columns:
    return Columns(
        c.event_id[a:b],
        c.ts[a:b],
        c.numeric[:, a:b],
        [col[a:b] for col in c.categorical],
        c.score[a:b],
        c.label[a:b],
    )


def measure(events: int, pending: int, warmup: bool, repeat: int) -> dict[str, Any]:
    monitor, schema, (settings, reference) = build(events, pending, warmup)
    snapshot_s, blob = timed(monitor.snapshot, repeat)
    kwargs = {}
    if "reference" in inspect.signature(ModelMonitor.restore).parameters:
        kwargs["reference"] = reference
    restore_s, _ = timed(lambda: ModelMonitor.restore(blob, schema, settings, **kwargs), repeat)
    record_s, record = timed(lambda: StateRecord("g", 0, {"predictions": events}, {}, blob).encode(), repeat)
    return {
        "events": events,
        "pending": len(monitor.labels),
        "reference": "warmed up" if warmup else "configured",
        "snapshot_bytes": len(blob),
        "snapshot_ms": snapshot_s * 1e3,
        "restore_ms": restore_s * 1e3,
        "record_bytes": len(record),
        "record_encode_ms": record_s * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=110_000)
    p.add_argument("--pending", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--warmup", action="store_true", help="no configured reference: learn it from live events")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    started = time.perf_counter()
    res = measure(a.events, a.pending, a.warmup, a.repeat)
    res["bench_seconds"] = time.perf_counter() - started
    print(
        f"| {res['reference']} reference, {res['events']:,} events, {res['pending']:,} pending | "
        f"{res['snapshot_bytes'] / 1e6:.2f} MB | {res['snapshot_ms']:.1f} ms | {res['restore_ms']:.1f} ms | "
        f"{res['record_bytes'] / 1e6:.2f} MB | {res['record_encode_ms']:.1f} ms |"
    )
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
