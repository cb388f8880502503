"""``stream-monitor insights …`` and ``stream-monitor plan``: argument wiring and the printed summary.

Edge module: reads saved insight folders and data files, writes JSON, PNG and Markdown.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

DEFAULT_INSIGHTS_DIR = "stream-monitor-insights"


def _day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def cmd_dna(args: argparse.Namespace) -> int:
    """Data DNA of a model's saved bucket profiles: a heatmap PNG, a segments PNG and a JSON."""
    from stream_monitor.offline.charts import dna_heatmap_png, segments_png
    from stream_monitor.offline.insights_store import load_insights

    tracker = load_insights(args.dir, args.model)
    buckets = tracker.buckets.closed()
    if len(buckets) < 2:
        print(
            f"stream-monitor: only {len(buckets)} closed bucket(s) for {args.model}; need 2", file=sys.stderr
        )
        return 2
    dna = tracker.dna(buckets)
    out = Path(args.out or args.dir)
    out.mkdir(parents=True, exist_ok=True)
    png = dna_heatmap_png(
        dna,
        out / f"{args.model}_dna.png",
        f"data DNA of {args.model}: {len(buckets)} buckets × {len(buckets)}",
    )
    segments = [r.to_dict() for r in tracker.segments.latest()]
    seg_png = None
    if segments:
        seg_png = segments_png(
            segments,
            out / f"{args.model}_segments.png",
            f"segment drift vs size: {args.model}",
            psi_alarm=tracker.segments.psi_alarm,
        )
    doc = {
        "model_id": args.model,
        **dna.to_dict(),
        "bucket_start": [b.start for b in buckets],
        "bucket_events": [b.sketch.n_events for b in buckets],
        "incidents": [i.to_dict() for i in tracker.incidents],
        "segments": segments,
        "surges": list(tracker.surges),
    }
    json_path = out / f"{args.model}_dna.json"
    json_path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    print(f"{args.model}: {len(buckets)} buckets {_day(buckets[0].start)} .. {_day(buckets[-1].start)}")
    for r in dna.regimes:
        members = [b for b in buckets if b.index in set(r.buckets)]
        days = ", ".join(_day(b.start)[5:] for b in members[:12]) + (" …" if len(members) > 12 else "")
        period = f", every {r.period:g} buckets" if r.period else ""
        print(f"  regime {r.id} {r.kind:<10} {len(members):>3} buckets in {r.runs} run(s){period}: {days}")
    for i in tracker.incidents:
        print(f"  incident   {_day(i.start)}: {i.reason}")
    print(f"wrote {png}, {json_path}" + (f", {seg_png}" if seg_png else ""))
    return 0


def add_insights_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``insights dna`` and ``plan`` to the top-level subcommands."""
    ins = sub.add_parser("insights", help="retraining insight from saved bucket profiles (data DNA)")
    ins_sub = ins.add_subparsers(dest="insights_command", required=True)
    dna = ins_sub.add_parser("dna", help="bucket × bucket drift matrix and regimes: heatmap PNG + JSON")
    dna.add_argument("--model", required=True)
    dna.add_argument(
        "--dir", default=DEFAULT_INSIGHTS_DIR, help="folder written by demo / replay --insights-dir"
    )
    dna.add_argument("--out", help="where to write the PNG and JSON (default: --dir)")
    dna.set_defaults(func=cmd_dna)

    from stream_monitor.offline.planner import add_plan_parser

    add_plan_parser(sub)
