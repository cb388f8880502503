"""Replay speed with small count windows, and whether a window's cost grows with the history.

A 20-numeric + 3-categorical stream (the shape of ``common.py``, binary score) of ``--events``
prediction events spread over ``--days`` of event time (so the daily insight buckets fill and close as
they would on real data), 10 % of them labelled ``--label-delay`` seconds later, the key feature
``f0`` shifted by 1σ between 40 % and 60 % of the stream (so conditions latch and triggers fire in
the middle, and the first and last tenths compare like with like). Each run
feeds the JSONL bytes through :func:`stream_monitor.offline.replay.replay`, the function behind
``stream-monitor replay`` (decode, time slices, label join, windows, detectors, policy, insights),
once per window size in ``--sizes``.

Reported per size: events/s of the whole replay, and the cost per closed window (the prediction side:
sketch updates, window closes, evaluation, policy, insights; labels are timed apart) over the first
and the last tenth of the stream — a ratio well above 1 is a per-window cost that grows with history.

``--tree DIR`` imports ``stream_monitor`` from ``DIR`` instead (e.g. ``git archive <commit> | tar -x
-C DIR``). ``--compare DIR`` runs that tree ("before") and this one ("after") ``--repeat`` times each,
alternately in fresh processes so both see the same machine, and prints them side by side (medians).
``--profile OUT`` writes a cProfile of the first size's replay (``python -m pstats OUT``).

``python bench/replay_small_windows.py [--events N] [--sizes 365,2000,5000] [--json OUT]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--sizes", default="365,2000,5000", help="count-window sizes, comma-separated")
    p.add_argument("--days", type=float, default=200.0, help="event time the stream spans")
    p.add_argument("--label-delay", type=float, default=7200.0, help="seconds from prediction to label")
    p.add_argument("--batch-size", type=int, default=10_000, help="as `replay --batch-size`")
    p.add_argument("--segments", action="store_true", help="segment the model by c1 (8 values)")
    p.add_argument("--tree", help="import stream_monitor from this source tree (before/after runs)")
    p.add_argument("--compare", metavar="DIR", help="side by side with the stream_monitor tree in DIR")
    p.add_argument("--repeat", type=int, default=3, help="runs of each tree with --compare")
    p.add_argument("--profile", help="write a cProfile of the first size's replay here")
    p.add_argument("--json", help="also write the raw figures here")
    return p.parse_args(argv)


ARGS = _parse(None if __name__ == "__main__" else [])
if ARGS.tree:
    # Ahead of the editable install's path hook; ROOT is listed (at the end) so common.py does not
    # put the current tree in front again.
    sys.path.insert(0, str(Path(ARGS.tree).resolve()))
    sys.path.append(str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from common import (  # noqa: E402
    gen_columns,
    make_schema,
    target_line,
    to_batch,
    to_json_events,
    to_json_labels,
)

import stream_monitor  # noqa: E402
from stream_monitor.core.engine import MonitoringEngine  # noqa: E402
from stream_monitor.core.reference import ReferenceProfile, build_reference  # noqa: E402
from stream_monitor.core.schema import ModelSchema  # noqa: E402
from stream_monitor.core.settings import ModelSettings, WindowSettings  # noqa: E402
from stream_monitor.offline.replay import label_heap, read_batches, replay  # noqa: E402

DAY = 86400.0


def make_reference(n_events: int, days: float) -> ReferenceProfile:
    """The reference: 50,000 events of the unshifted stream, at the stream's event rate (the volume
    check compares the two rates)."""
    c = gen_columns(50_000, seed=12345, rate=n_events / (days * DAY), prefix="r")
    schema = bench_schema()
    return build_reference(schema, to_batch(schema.model_id, c), c.label)


def make_stream(n: int, days: float, label_delay: float) -> tuple[list[bytes], list[bytes]]:
    """Prediction and label JSONL lines: ``n`` events over ``days``, f0 shifted 1σ from 40 % to 60 %."""
    rate = n / (days * DAY)
    c = gen_columns(n, seed=3, rate=rate)
    c.numeric[0, int(0.4 * n) : int(0.6 * n)] += 1.0
    return to_json_events("m0", c), to_json_labels("m0", c, every=10, delay=label_delay)


def bench_schema() -> ModelSchema:
    schema = make_schema()
    return dataclasses.replace(schema, segment_keys=("c1",)) if ARGS.segments else schema


def run_once(size: int, raws: list[bytes], labels: list[bytes], batch_size: int) -> dict[str, Any]:
    schema = bench_schema()
    engine = MonitoringEngine(
        {"m0": schema},
        {"m0": ModelSettings(window=WindowSettings(kind="count", size=size))},
        {"m0": REFERENCE},
    )
    n = len(raws)
    calls: list[tuple[int, float, int]] = []  # (events before the call, seconds, windows closed)
    label_seconds = 0.0
    seen = 0
    process_decoded, process_labels = engine.process_decoded, engine.process_labels

    def timed_decoded(batches: Any, now: float) -> Any:
        nonlocal seen
        t0 = time.perf_counter()
        out = process_decoded(batches, now)
        windows = sum(len(o.evaluations) for o in out.per_model.values())
        calls.append((seen, time.perf_counter() - t0, windows))
        seen += out.events
        return out

    def timed_labels(raw: Any, now: float, wall_now: float | None = None) -> Any:
        nonlocal label_seconds
        t0 = time.perf_counter()
        out = process_labels(raw, now, wall_now)
        label_seconds += time.perf_counter() - t0
        return out

    engine.process_decoded = timed_decoded  # type: ignore[method-assign]
    engine.process_labels = timed_labels  # type: ignore[method-assign]
    heap = label_heap(labels)
    summary = replay(engine, read_batches(raws, batch_size), heap)

    def per_window_ms(lo: float, hi: float) -> float:
        part = [(s, w) for start, s, w in calls if lo * n <= start < hi * n]
        windows = sum(w for _, w in part)
        return 1e3 * sum(s for s, _ in part) / windows if windows else float("nan")

    first, last = per_window_ms(0.0, 0.1), per_window_ms(0.9, 1.0)
    return {
        "size": size,
        "events": summary.events,
        "windows": summary.windows,
        "triggers": len(summary.triggers),
        "seconds": summary.seconds,
        "events_per_s": summary.events / summary.seconds,
        "predictions_seconds": sum(s for _, s, _ in calls),
        "label_seconds": label_seconds,
        "ms_per_window_first_tenth": first,
        "ms_per_window_last_tenth": last,
        "growth": last / first if first > 0 else float("nan"),
        "ms_per_window_by_tenth": [per_window_ms(k / 10, (k + 1) / 10) for k in range(10)],
        "trigger_ids": sorted(t.trigger_id for t in summary.triggers),
    }


def report(results: list[dict[str, Any]], a: argparse.Namespace, tree: str) -> str:
    segments = ", segments by c1" if a.segments else ""
    lines = [
        f"stream_monitor from {tree}; {a.events:,} events over {a.days:g} days (20 numeric + 3 "
        f"categorical, binary score, f0 +1σ from 40 % to 60 %{segments}), 10 % labelled "
        f"{a.label_delay:g} s later, batches of {a.batch_size:,}.",
        "",
        "| window size | windows | triggers | events/s | s: windows + detectors / labels / decode + rest "
        "| ms/window, first tenth | ms/window, last tenth | last/first |",
        "|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['size']:,} | {r['windows']:,} | {r['triggers']} | {r['events_per_s']:,.0f} | "
            f"{r['predictions_seconds']:.2f} / {r['label_seconds']:.2f} / "
            f"{r['seconds'] - r['predictions_seconds'] - r['label_seconds']:.2f} | "
            f"{r['ms_per_window_first_tenth']:.2f} | {r['ms_per_window_last_tenth']:.2f} | "
            f"{r['growth']:.2f}× |"
        )
    return "\n".join(lines)


#: Issue "decisions that hold on real data", point 9: replay with 365-event windows.
TARGET_EVENTS_PER_S = 30_000


def compare(a: argparse.Namespace) -> int:
    """Run the ``--compare`` tree and this one alternately; print medians side by side."""
    t0 = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    trees: list[tuple[str, str | None]] = [("before", a.compare), ("after", None)]
    for r in range(a.repeat):
        for label, tree in trees if r % 2 == 0 else trees[::-1]:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "run.json"
                cmd = [sys.executable, __file__, "--events", str(a.events), "--sizes", a.sizes]
                cmd += ["--days", str(a.days), "--label-delay", str(a.label_delay)]
                cmd += ["--batch-size", str(a.batch_size), "--json", str(out)]
                cmd += (["--segments"] if a.segments else []) + (["--tree", tree] if tree else [])
                subprocess.run(cmd, check=True, capture_output=True, text=True)
                runs[label].append(json.loads(out.read_text()))
    sizes = [int(s) for s in a.sizes.split(",") if s]

    def median(label: str, size: int, key: str) -> float:
        return statistics.median(r[key] for run in runs[label] for r in run["results"] if r["size"] == size)

    segments = ", segments by c1" if a.segments else ""
    lines = [
        f"{a.events:,} events over {a.days:g} days (20 numeric + 3 categorical, binary score, f0 +1σ from "
        f"40 % to 60 %{segments}), 10 % labelled {a.label_delay:g} s later, batches of {a.batch_size:,}; "
        f"before: {runs['before'][0]['tree']}, after: {runs['after'][0]['tree']}; medians of {a.repeat} "
        "runs of each, alternated.",
        "",
        "| window size | events/s before | events/s after | speed-up | ms/window before, first → last tenth "
        "| ms/window after, first → last tenth |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        before, after = median("before", size, "events_per_s"), median("after", size, "events_per_s")
        lines.append(
            f"| {size:,} | {before:,.0f} | {after:,.0f} | {after / before:.1f}× | "
            f"{median('before', size, 'ms_per_window_first_tenth'):.1f} → "
            f"{median('before', size, 'ms_per_window_last_tenth'):.1f} | "
            f"{median('after', size, 'ms_per_window_first_tenth'):.1f} → "
            f"{median('after', size, 'ms_per_window_last_tenth'):.1f} |"
        )
    if 365 in sizes:
        lines += [
            "",
            "| target | measured | goal | ratio | |",
            "|---|---:|---:|---:|---|",
            target_line("replay, 365-event windows", median("after", 365, "events_per_s"),
                        TARGET_EVENTS_PER_S, "events/s", True),
        ]  # fmt: skip
    lines.append("")
    lines.append(
        "Runs (events/s per size): "
        + "; ".join(
            f"{label} {[round(r['events_per_s']) for r in run['results']]}"
            for label in ("before", "after")
            for run in runs[label]
        )
    )
    print("\n".join(lines))
    print(f"\n(replay comparison took {time.perf_counter() - t0:.0f} s)")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "runs": runs}, indent=1))
    return 0


def main() -> int:
    a = ARGS
    if a.compare:
        return compare(a)
    global REFERENCE
    t0 = time.perf_counter()
    REFERENCE = make_reference(a.events, a.days)
    raws, labels = make_stream(a.events, a.days, a.label_delay)
    sizes = [int(s) for s in a.sizes.split(",") if s]
    results = []
    for i, size in enumerate(sizes):
        if a.profile and i == 0:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
            results.append(run_once(size, raws, labels, a.batch_size))
            prof.disable()
            prof.dump_stats(a.profile)
        else:
            results.append(run_once(size, raws, labels, a.batch_size))
    tree = str(Path(stream_monitor.__file__).resolve().parent.parent)
    print(report(results, a, tree))
    print(f"\n(replay bench took {time.perf_counter() - t0:.0f} s)")
    if a.json:
        Path(a.json).write_text(json.dumps({"tree": tree, "args": vars(a), "results": results}, indent=1))
    return 0


REFERENCE: Any = None

if __name__ == "__main__":
    raise SystemExit(main())
