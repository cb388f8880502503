"""Memory of ``stream-monitor run`` (issue 14, point 3): 10 models × 50 features, 1M pending labels.

Each figure comes from a fresh process, so nothing a previous step imported or allocated counts:

- ``imports``: what ``stream-monitor run`` imports before it reads its configuration (``cli`` with its
  parser, then ``kafka.service``): RSS, wall time (median of ``--repeat``) and which heavy packages
  are loaded (matplotlib, pandas, sklearn, pyarrow, scipy.stats, the planner, the charts);
- ``service``: the service's own objects, no broker: the configuration parsed, references read from
  files, a :class:`~stream_monitor.kafka.service.Service` with its HTTP side (port 0), one
  partition-task fed raw JSON messages in batches of 4,000 until every model has full windows,
  the summary published after each batch as the loop does, then ``--pending`` predictions added to
  one model's label buffer (as ``bench/hotpath.py`` does). Reported: RSS then (``steady``, no trim),
  the peak while feeding, the peak during a checkpoint (state record + signing: the bytes the
  producer gets), RSS after the checkpoint and ``malloc_trim(0)`` (what the service does), the state
  record's size and the cost of one publication;
- ``--tracemalloc``: where the live Python memory of that state is, by file (slow, a separate run).

``python bench/memory.py [--models 10] [--features 50] [--pending 1000000] [--before DIR] [--json OUT]``
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The stream_monitor the children measure: this tree's (whatever is installed), or the tree in
# BENCH_TREE (``--before DIR`` sets it: e.g. ``git archive <commit> | tar -x -C DIR``).
TREE = Path(os.environ.get("BENCH_TREE") or ROOT).resolve()
if str(TREE) not in sys.path:
    sys.path.insert(0, str(TREE))
HEAVY = (
    "matplotlib",
    "pandas",
    "sklearn",
    "pyarrow",
    "scipy.special",  # what the detectors keep of scipy (26 MB); the rest is imported lazily
    "scipy.stats",
    "scipy.optimize",
    "scipy.cluster",
    "stream_monitor.offline.planner",
    "stream_monitor.offline.charts",
)
BATCH = 4000
PER_MODEL = 12_000  # events per model: more than two windows of the default 5,000


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    """VmHWM: the peak RSS since the process started or since :func:`reset_peak`."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5": reset the peak RSS (Linux >= 4.0)
        f.write("5")


def trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _where(filename: str) -> str:
    path = Path(filename)
    return str(path.relative_to(TREE)) if TREE in path.parents else path.name


# ------------------------------------------------------------------ children (fresh processes)
def child_imports() -> dict[str, Any]:
    base = rss_mb()
    t0 = time.perf_counter()
    import stream_monitor.cli as cli

    argv = ["run", "--config", "c.yaml"]
    command_of = getattr(cli, "command_of", None)  # the parser for `run` only (absent before issue 14)
    cli.build_parser(command_of(argv)).parse_args(argv) if command_of else cli.build_parser().parse_args(argv)
    import stream_monitor.kafka.service  # noqa: F401  (what _cmd_run imports)

    seconds = time.perf_counter() - t0
    return {
        "rss_mb": rss_mb(),
        "python_rss_mb": base,
        "seconds": seconds,
        "loaded": sorted(m for m in HEAVY if m in sys.modules),
        "modules": len(sys.modules),
    }


def _config(refdir: Path, models: int, features: int) -> dict[str, Any]:
    names = [f"f{i}" for i in range(features)]
    return {
        "kafka": {"bootstrap_servers": "127.0.0.1:9", "group_id": "bench-memory"},
        "metrics": {"host": "127.0.0.1", "port": 9108},  # served on port 0 below
        "models": [
            {
                "id": f"m{i}",
                "task": "binary",
                "reference": str(refdir / f"m{i}.json"),
                "features": {n: {"type": "numeric", "key": n == "f0"} for n in names},
            }
            for i in range(models)
        ],
    }


def child_service(
    models: int, features: int, pending: int, refdir: str, use_tracemalloc: bool
) -> dict[str, Any]:
    from stream_monitor.app import load_references, start_observability
    from stream_monitor.config import parse_config
    from stream_monitor.kafka.service import PartitionTask, Service
    from stream_monitor.kafka.state import state_key

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import numpy as np
    from common import gen_columns, to_json_events

    out: dict[str, Any] = {"models": models, "features": features, "pending": pending}
    out["rss_import_mb"] = rss_mb()
    app = parse_config(_config(Path(refdir), models, features), env={})
    service = Service(app, load_references(app))
    # The same script measures the tree before issue 14 (no published copy, no heap check) for the
    # before/after table: what is missing there is skipped.
    publish = getattr(service, "_publish", None)
    extra: dict[str, Any] = {"published": True} if publish is not None else {}
    obs = start_observability(
        app,
        service._busiest_monitors,
        metrics=service.metrics,
        health=service.health,
        extra_routes={"/state": service._state_route},
        port=0,
        **extra,
    )
    service.status_page = obs.status_page
    task = PartitionTask(0, service._new_engine(), service.topics)
    service.tasks[0] = task
    out["rss_built_mb"] = rss_mb()
    if use_tracemalloc:
        import tracemalloc

        tracemalloc.start(1)
    publish_s: list[float] = []
    between: list[float] = []  # RSS after each batch, once the loop's after-batch work is done

    def after_batch() -> None:
        t0 = time.perf_counter()
        if publish is not None:
            publish()
        publish_s.append(time.perf_counter() - t0)
        heap = getattr(service, "_heap", None)  # the loop's heap check (absent before issue 14)
        if heap is not None:
            heap.check()
        between.append(rss_mb())

    wall = time.time()
    for i in range(models):
        for j in range(0, PER_MODEL, BATCH):
            c = gen_columns(
                BATCH, seed=i * 100 + j, start=j, n_numeric=features, n_categorical=0, prefix=f"m{i}-"
            )
            raws: list[bytes | None] = list(to_json_events(f"m{i}", c, n_numeric=features))
            del c
            task.process("predictions", raws, wall_now=wall)
            del raws
            after_batch()
    labels = task.engine.monitors["m0"].labels
    for j in range(0, pending, 100_000):
        k = min(100_000, pending - j)
        ids = [f"p-{j + x}" for x in range(k)]
        labels.add_predictions(ids, np.arange(j, j + k, dtype=float), np.full(k, 0.5), None)
        del ids
        after_batch()
    gc.collect()
    out["rss_steady_mb"] = rss_mb()
    out["rss_between_batches_max_mb"] = max(between)
    out["peak_feeding_mb"] = peak_mb()
    out["publish_ms_median"] = statistics.median(publish_s) * 1e3
    out["publish_ms_max"] = max(publish_s) * 1e3
    out["state_body_bytes"] = len(getattr(service, "_published_state", b""))
    out["heap_trims"] = getattr(getattr(service, "_heap", None), "trims", 0)
    out["trim_seconds"] = getattr(getattr(service, "_heap", None), "seconds", 0.0)
    if use_tracemalloc:
        import tracemalloc

        snap = tracemalloc.take_snapshot()
        tracemalloc.stop()
        by_file = snap.statistics("filename")
        total = sum(s.size for s in by_file)
        out["tracemalloc_total_mb"] = total / 2**20
        out["tracemalloc_top"] = [[_where(st.traceback[0].filename), st.size / 2**20] for st in by_file[:12]]
        return out
    # A checkpoint as the Checkpointer makes it, sealed for the producer (the first one of a task:
    # every blob is new). Since issue 14's incremental state: the state taken (frozen), the record
    # and each blob sealed one at a time; before: the whole record.
    reset_peak()
    before = rss_mb()
    t0 = time.perf_counter()
    key = state_key(service.group, 0)
    if hasattr(task, "state_capture"):
        from stream_monitor.kafka.state import blob_chunks, blob_key

        capture = task.state_capture(service.group, time.time(), freeze=True)
        record, blobs = capture.incremental()
        value = service.signer.seal(key, record.encode_chunks())
        blob_bytes = 0
        for digest, values in blobs.items():
            blob_bytes += len(service.signer.seal(blob_key(key, digest), blob_chunks(values, digest)))
        out["snapshot_bytes"] = sum(len(p) for p in _chunks_of(capture.state))
        del capture, blobs
    else:
        record = task.state_record(service.group, time.time())
        value = service.signer.seal(key, record.encode())
        out["snapshot_bytes"] = len(record.snapshot)
        blob_bytes = 0
    out["checkpoint_s"] = time.perf_counter() - t0
    out["record_bytes"] = len(value) + blob_bytes
    out["peak_checkpoint_mb"] = peak_mb()
    out["checkpoint_extra_mb"] = out["peak_checkpoint_mb"] - before
    del record, value
    gc.collect()
    out["rss_after_checkpoint_mb"] = rss_mb()
    trim()
    out["rss_after_trim_mb"] = rss_mb()
    obs.server.shutdown()
    return out


def _chunks_of(state: Any) -> list[Any]:
    from stream_monitor.core import state_format

    return [memoryview(p) for p in state_format.encode_chunks(state)]


# ------------------------------------------------------------------ parent
def _child(args: list[str], tree: str | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_MONITOR_")}
    env["BENCH_TREE"] = tree or str(ROOT)
    run = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT, env=env)
    if run.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{run.stderr[-3000:]}")
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


def measure(
    models: int, features: int, pending: int, repeat: int, use_tracemalloc: bool, tree: str | None = None
) -> dict[str, Any]:
    """Every figure, each from fresh processes running the stream_monitor of ``tree`` (default: this one)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import make_reference, make_schema

    runs = [_child(["--child", "imports"], tree) for _ in range(repeat)]
    imports = dict(runs[-1])
    imports["seconds"] = statistics.median(r["seconds"] for r in runs)
    imports["rss_mb"] = statistics.median(r["rss_mb"] for r in runs)
    imports["runs"] = repeat
    res: dict[str, Any] = {"imports": imports}
    with tempfile.TemporaryDirectory() as refdir:
        for i in range(models):
            schema = make_schema(f"m{i}", n_numeric=features, n_categorical=0)
            (Path(refdir) / f"m{i}.json").write_bytes(make_reference(schema, n=20_000, seed=7).to_json())
        spec = f"{models},{features},{pending},{refdir}"
        res["service"] = _child(["--child", "service", "--spec", spec], tree)
        if use_tracemalloc:
            res["tracemalloc"] = _child(["--child", "service", "--spec", spec, "--with-tracemalloc"], tree)
    return res


def report(res: dict[str, Any], before: dict[str, Any] | None = None) -> str:
    """Markdown: the import line and the memory table (with a ``before`` column when given)."""

    def imports(r: dict[str, Any]) -> str:
        return (
            f"{r['rss_mb']:.0f} MB RSS, {r['seconds'] * 1e3:.0f} ms (median of {r['runs']}); heavy modules "
            f"loaded: {', '.join(r['loaded']) or 'none'}"
        )

    s = res["service"]
    rows = [
        ("RSS after imports", "rss_import_mb"),
        ("RSS after reading the configuration and references", "rss_built_mb"),
        ("RSS between batches at the end: full windows, 1M pending (the target's figure)", "rss_steady_mb"),
        ("RSS between batches, highest seen", "rss_between_batches_max_mb"),
        ("peak RSS while feeding (the bench's own event generation included)", "peak_feeding_mb"),
        ("peak RSS during a checkpoint (state record built and sealed)", "peak_checkpoint_mb"),
        ("RSS after the checkpoint and `malloc_trim(0)`", "rss_after_trim_mb"),
    ]
    head = f"{s['models']} models × {s['features']} features, {s['pending']:,} pending labels"
    lines = []
    if before is not None:
        b = before["service"]
        lines += [f"Before: `stream-monitor run`'s imports: {imports(before['imports'])}.", ""]
    lines += [f"`stream-monitor run`'s imports: {imports(res['imports'])}.", ""]
    if before is not None:
        lines += [f"| {head} | before (MB) | after (MB) |", "|---|---:|---:|"]
        lines += [f"| {name} | {b.get(key, float('nan')):.0f} | {s[key]:.0f} |" for name, key in rows]
    else:
        lines += [f"| {head} | MB |", "|---|---:|"]
        lines += [f"| {name} | {s[key]:.0f} |" for name, key in rows]
    lines += [
        "",
        f"State record {s['record_bytes'] / 2**20:.1f} MB (snapshot {s['snapshot_bytes'] / 2**20:.1f} MB), "
        f"built and sealed in {s['checkpoint_s'] * 1e3:.0f} ms; the checkpoint's peak is "
        f"{s['checkpoint_extra_mb']:.0f} MB above the RSS before it. After each batch: publishing "
        f"`/state` ({s['state_body_bytes']:,} bytes) and the status copy {s['publish_ms_median']:.2f} ms "
        f"median ({s['publish_ms_max']:.1f} ms max); {s['heap_trims']} heap trims, "
        f"{s['trim_seconds'] * 1e3:.0f} ms in all.",
    ]
    t = res.get("tracemalloc")
    if t:
        lines += [
            "",
            f"tracemalloc, live Python memory after feeding: {t['tracemalloc_total_mb']:.1f} MB:",
            "",
        ]
        lines += [f"- `{name}`: {mb:.1f} MB" for name, mb in t["tracemalloc_top"] if mb >= 0.1]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=int, default=10)
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--pending", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3, help="runs of the import measurement")
    p.add_argument("--tracemalloc", action="store_true", help="also where the live Python memory is")
    p.add_argument("--json", help="also write the raw figures here")
    p.add_argument(
        "--before",
        metavar="DIR",
        help="also measure the stream_monitor in DIR (`git archive <commit> | tar -x -C DIR`), side by side",
    )
    p.add_argument("--child", choices=("imports", "service"), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--with-tracemalloc", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child == "imports":
        print(json.dumps(child_imports()))
        return 0
    if a.child == "service":
        models, features, pending, refdir = a.spec.split(",", 3)
        print(json.dumps(child_service(int(models), int(features), int(pending), refdir, a.with_tracemalloc)))
        return 0
    before = None if a.before is None else measure(a.models, a.features, a.pending, a.repeat, False, a.before)
    res = measure(a.models, a.features, a.pending, a.repeat, a.tracemalloc)
    print(report(res, before))
    if a.json:
        Path(a.json).write_text(json.dumps({"after": res, "before": before}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
