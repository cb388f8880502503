"""In-process hot-path microbenchmarks (issue 5, point 2) and the in-process targets of point 4.

Same event shape as the end-to-end bench (20 numeric + 3 categorical features, binary score, 10 % of
events labelled). Each step is timed on its own, per event and per million events, so a regression
shows where it happens:

- ``orjson.loads`` alone (the floor) and ``decode_predictions`` (decode + validate + columns);
- window sketch update (``CountWindows.add``: searchsorted/bincount histograms, bottom-k samples);
- window evaluation (PSI, JS, KS, chi-square, integrity; per window and per event at 5k windows);
- label join (``add_predictions`` + ``join`` of 10 %) and bytes per pending prediction;
- the whole engine in-process: raw messages in, triggers out, labels joined (no broker);
- memory: RSS of a process holding 10 models × 50 features, with windows and a full label buffer;
- the decoder's two paths side by side (issue 14): ``orjson.loads`` alone, msgspec's typed decode
  alone, and ``decode_predictions`` with its typed path and with the orjson path only, run in turn in
  one process (CPU time of this thread, so other work on the machine moves them less).

``python bench/hotpath.py [--events N] [--json OUT]`` prints a Markdown report.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    current_rss_mb,
    gen_columns,
    make_reference,
    make_schema,
    target_line,
    timed,
    to_batch,
    to_json_events,
    to_json_labels,
)

from stream_monitor.core import events
from stream_monitor.core.engine import MonitoringEngine
from stream_monitor.core.evaluation import evaluate_window
from stream_monitor.core.events import decode_labels, decode_predictions
from stream_monitor.core.labels import LabelJoinBuffer
from stream_monitor.core.settings import DetectorSettings, ModelSettings
from stream_monitor.core.sketches import WindowSketch
from stream_monitor.core.windows import CountWindows

BATCH = 10_000


def bench_steps(n: int, repeat: int) -> dict[str, Any]:
    schema = make_schema()
    ref = make_reference(schema)
    c = gen_columns(n, seed=1)
    raws = to_json_events("m0", c)
    labels = to_json_labels("m0", c)
    schemas = {"m0": schema}
    res: dict[str, Any] = {"events": n, "event_bytes": sum(map(len, raws)) / n}

    def loads() -> None:
        for r in raws:
            orjson.loads(r)

    def decode() -> None:
        for i in range(0, n, BATCH):
            decode_predictions(raws[i : i + BATCH], schemas)

    batches = [to_batch("m0", _slice(c, i, i + BATCH)) for i in range(0, n, BATCH)]

    def sketch() -> None:
        w = CountWindows(5000, make_sketch=lambda: WindowSketch(schema, ref, sample_size=2000))
        for b in batches:
            w.add(b)

    w = CountWindows(5000, make_sketch=lambda: WindowSketch(schema, ref, sample_size=2000))
    windows = [cw for b in batches for cw in w.add(b)]
    ds = DetectorSettings()

    def evaluate() -> None:
        for cw in windows:
            evaluate_window(schema, ref, cw, ds)

    label_batches = decode_labels(labels, schemas)[0]["m0"]

    def label_join() -> None:
        buf = LabelJoinBuffer()
        for b in batches:
            buf.add_predictions(b.event_id, b.ts, b.score, b.pred_label)
        lb = label_batches
        buf.join(lb.event_id, lb.ts, lb.label, lb.label_class, now=0.0)

    def engine() -> None:
        eng = MonitoringEngine(schemas, {"m0": ModelSettings()}, {"m0": ref})
        for i in range(0, n, BATCH):
            eng.process_predictions(raws[i : i + BATCH], now=0.0)
            eng.process_labels(labels[i // 10 : (i + BATCH) // 10], now=0.0)

    steps = {
        "orjson.loads only (floor)": loads,
        "decode + validate (decode_predictions)": decode,
        "window sketch update (CountWindows.add)": sketch,
        "window evaluation (all detectors)": evaluate,
        "label join (add 100 %, join 10 %)": label_join,
        "whole engine in-process (JSON in, triggers out, labels joined)": engine,
    }
    res["steps"] = {}
    for name, fn in steps.items():
        gc.collect()
        t, _ = timed(fn, repeat)
        res["steps"][name] = {"seconds": t, "us_per_event": t / n * 1e6, "s_per_million": t / n * 1e6}
    res["windows"] = len(windows)
    res["evaluate_ms_per_window"] = (
        res["steps"]["window evaluation (all detectors)"]["seconds"] / max(1, len(windows)) * 1e3
    )
    return res


def decoder_ab(n: int, rounds: int) -> dict[str, Any]:
    """The decoder's paths in turn, ``rounds`` times, on ``n`` bench events in batches of 10,000:
    median CPU µs per event of each (``time.thread_time``)."""
    schema = make_schema()
    schemas = {"m0": schema}
    raws = to_json_events("m0", gen_columns(n, seed=3))
    batches = [raws[i : i + BATCH] for i in range(0, n, BATCH)]
    typed = events._fast_decoder(tuple(schemas.items()), events.MAX_EVENT_ID_LENGTH)
    no_typed_path = events._FastDecoder(lambda raw: None, {})

    def orjson_only() -> None:
        for raw in raws:
            orjson.loads(raw)

    def msgspec_only() -> None:
        for raw in raws:
            typed.decode(raw)

    def decode() -> None:
        for batch in batches:
            decode_predictions(batch, schemas)

    def decode_orjson_path() -> None:
        original = events._fast_decoder
        events._fast_decoder = lambda *args: no_typed_path  # type: ignore[assignment]
        try:
            decode()
        finally:
            events._fast_decoder = original  # type: ignore[assignment]

    variants = {
        "orjson.loads only": orjson_only,
        "msgspec typed decode only (the decoder's Struct)": msgspec_only,
        "decode_predictions, orjson path only (typed path off)": decode_orjson_path,
        "decode_predictions (typed path)": decode,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            gc.collect()
            t0 = time.thread_time()
            fn()
            times[name].append((time.thread_time() - t0) / n * 1e6)
    return {
        "events": n,
        "rounds": rounds,
        "us_per_event": {name: sorted(ts)[len(ts) // 2] for name, ts in times.items()},
        "runs": times,
    }


def decoder_lines(ab: dict[str, Any]) -> list[str]:
    us = ab["us_per_event"]
    lines = [
        f"Decoder paths in turn, {ab['rounds']} rounds in one process, {ab['events']:,} events in batches of "
        f"{BATCH:,}; median CPU time of the thread.",
        "",
        "| decoder path | µs/event | events/s (one core) |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {value:.2f} | {1e6 / value:,.0f} |" for name, value in us.items()]
    return lines


def _slice(c: Any, a: int, b: int) -> Any:
    from common import Columns

    return Columns(
        c.event_id[a:b],
        c.ts[a:b],
        c.numeric[:, a:b],
        [x[a:b] for x in c.categorical],
        c.score[a:b],
        c.label[a:b],
    )


def bytes_per_pending(n: int = 1_000_000) -> float:
    """Bytes per pending prediction in a full label-join buffer (arrays only; ids are hashed)."""
    buf = LabelJoinBuffer(max_entries=n)
    ids = [f"evt-{i:012d}" for i in range(n)]
    ts = np.arange(n, dtype=float)
    buf.add_predictions(ids, ts, np.full(n, 0.5), None)
    return buf.nbytes / len(buf)


def memory_child(models: int, features: int, pending: int, refdir: str) -> None:
    """Run in a fresh process, as the service would be: ``models`` monitors of ``features`` numeric
    features with references loaded from files, fed batch by batch (4,000 JSON events at a time) until
    windows and samples hold data, plus ``pending`` predictions waiting in one label buffer. Prints JSON."""
    from stream_monitor.core.reference import ReferenceProfile

    base = current_rss_mb()
    schemas = {f"m{i}": make_schema(f"m{i}", n_numeric=features, n_categorical=0) for i in range(models)}
    refs = {m: ReferenceProfile.from_json((Path(refdir) / f"{m}.json").read_bytes()) for m in schemas}
    eng = MonitoringEngine(schemas, {m: ModelSettings() for m in schemas}, refs)
    per_model, step = 12_000, 4000
    for i, m in enumerate(schemas):
        for j in range(0, per_model, step):
            c = gen_columns(
                step, seed=i * 100 + j, start=j, n_numeric=features, n_categorical=0, prefix=f"{m}-"
            )
            eng.process_predictions(to_json_events(m, c, n_numeric=features), now=0.0)
    mon = eng.monitors["m0"]
    for j in range(0, pending, 100_000):
        k = min(100_000, pending - j)
        ids = [f"p-{j + x}" for x in range(k)]
        mon.labels.add_predictions(ids, np.arange(j, j + k, dtype=float), np.full(k, 0.5), None)
    gc.collect()
    rss = current_rss_mb()
    try:  # how much of the RSS is freed heap that glibc keeps (diagnosis only; the target uses rss_mb)
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        trimmed = current_rss_mb()
    except OSError:
        trimmed = float("nan")
    print(
        json.dumps(
            {
                "rss_mb": rss,
                "rss_after_malloc_trim_mb": trimmed,
                "baseline_rss_mb": base,
                "models": models,
                "features": features,
                "pending": pending,
            }
        )
    )


def memory(models: int, features: int, pending: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as refdir:
        for i in range(models):
            schema = make_schema(f"m{i}", n_numeric=features, n_categorical=0)
            (Path(refdir) / f"m{i}.json").write_bytes(make_reference(schema, n=20_000, seed=7).to_json())
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", f"{models},{features},{pending},{refdir}"],
            capture_output=True,
            text=True,
            check=True,
        )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def report(res: dict[str, Any], mem: dict[str, Any], bpp: float) -> str:
    lines = [
        f"Events: {res['events']:,} of {res['event_bytes']:.0f} bytes (20 numeric + 3 categorical, "
        f"binary score); batches of {BATCH:,}; median of the runs.",
        "",
        "| step | µs/event | s per million events | events/s |",
        "|---|---:|---:|---:|",
    ]
    for name, s in res["steps"].items():
        lines.append(
            f"| {name} | {s['us_per_event']:.2f} | {s['s_per_million']:.2f} "
            f"| {1e6 / s['us_per_event']:,.0f} |"
        )
    lines += [
        "",
        f"Window evaluation: {res['evaluate_ms_per_window']:.1f} ms per 5,000-event window "
        f"({res['windows']} windows).",
        "",
        "| in-process target | measured | target | ratio | |",
        "|---|---:|---:|---:|---|",
        target_line(
            "engine in-process, one core (upper bound of end to end)",
            1e6
            / res["steps"]["whole engine in-process (JSON in, triggers out, labels joined)"]["us_per_event"],
            150_000,
            "events/s",
            True,
        ),
        target_line(
            f"RSS, {mem['models']} models × {mem['features']} features, {mem['pending']:,} pending",
            mem["rss_mb"],
            200,
            "MB",
            False,
        ),
        target_line("bytes per pending prediction (label join)", bpp, 64, "B", False),
        "",
        f"RSS right after imports (numpy, scipy, river, orjson, the core): {mem['baseline_rss_mb']:.0f} MB; "
        f"after `malloc_trim(0)` (freed heap handed back): {mem.get('rss_after_malloc_trim_mb', 0):.0f} MB; "
        "references are loaded from files and events arrive in batches of 4,000, as in the service.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--pending", type=int, default=1_000_000)
    p.add_argument("--decoder-rounds", type=int, default=7, help="rounds of the decoder A/B (0: skip)")
    p.add_argument("--json", help="also write the raw figures here")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.memory_child:
        models, features, pending, refdir = a.memory_child.split(",", 3)
        memory_child(int(models), int(features), int(pending), refdir)
        return 0
    t0 = time.perf_counter()
    res = bench_steps(a.events, a.repeat)
    mem = memory(10, 50, a.pending)
    bpp = bytes_per_pending(a.pending)
    ab = decoder_ab(min(a.events, 100_000), a.decoder_rounds) if a.decoder_rounds > 0 else None
    print(report(res, mem, bpp))
    if ab is not None:
        print("\n" + "\n".join(decoder_lines(ab)))
    print(f"\n(hotpath bench took {time.perf_counter() - t0:.0f} s)")
    if a.json:
        Path(a.json).write_text(
            json.dumps({"steps": res, "memory": mem, "bytes_per_pending": bpp, "decoder": ab}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
