"""``stream-monitor insights …`` and ``stream-monitor plan``: argument wiring and the printed summary.

Edge module: reads saved insight folders and data files, writes JSON, PNG and Markdown.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

from stream_monitor.errors import StreamMonitorError

DEFAULT_INSIGHTS_DIR = "stream-monitor-insights"


def _day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def cmd_dna(args: argparse.Namespace) -> int:
    """Data DNA of a model's saved bucket profiles: a heatmap PNG, a segments PNG and a JSON."""
    from stream_monitor.offline.charts import dna_heatmap_png, segments_png
    from stream_monitor.offline.insights_store import load_insights

    tracker = load_insights(args.dir, args.model)
    # The open buckets too: after a replay the last one is open (the stream ended before it did) and
    # holds the latest data. The DNA judges from its coverage whether it is partial.
    buckets = tracker.buckets.with_data()
    still_open = [b.index for b in buckets if b.end > tracker.buckets.watermark]
    if len(buckets) < 2:
        print(
            f"stream-monitor: only {len(buckets)} bucket(s) with data for {args.model}; need 2",
            file=sys.stderr,
        )
        return 2
    dna = tracker.dna(buckets)
    out = Path(args.out or args.dir)
    out.mkdir(parents=True, exist_ok=True)
    png = dna_heatmap_png(
        dna,
        out / f"{args.model}_dna.png",
        f"data DNA of {args.model}: {len(buckets)} buckets × {len(buckets)}",
        buckets=buckets,
        still_open=still_open,
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
        "bucket_seconds": tracker.buckets.bucket_seconds,
        "open": still_open,
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
    for b in buckets:
        if b.index in still_open:
            print(
                f"  bucket {_day(b.start)} is still open (the stream ended inside it): {b.sketch.n_events:,} "
                "events, included"
                + (
                    ", partial: it does not shape the regimes (it joins the nearest within its own cut)"
                    if b.index in dna.partial
                    else ""
                )
            )
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

    add_plan_parser(sub)


def cmd_plan(args: argparse.Namespace) -> int:
    """The retraining planner on a flat table, on replay inputs, or on the demo's story."""
    from stream_monitor.offline import planner
    from stream_monitor.progress import Progress

    unit = args.unit
    if args.demo:
        table = planner.demo_table()
        task = "regression"
        unit = unit or "rentals/hour"
    elif args.data and (args.labels or not (args.time_column or args.target)):
        table = planner.read_replay(args.data, args.labels, args.model_id, positive_class=args.positive_class)
        task = args.task
    elif args.data and args.time_column and args.target:
        table = planner.read_table(
            args.data, args.time_column, args.target, args.features, positive_class=args.positive_class
        )
        task = args.task
    else:
        raise StreamMonitorError(
            "plan needs PREDICTIONS.jsonl [--labels LABELS.jsonl], or a flat table with --time-column "
            "and --target, or --demo"
        )
    data = planner.make_dataset(table, args.period_seconds, args.min_rows)
    factory_spec = args.model_factory or ("additive_bins" if task == "regression" else "logistic")
    print(
        f"planning on {len(data.y):,} rows of {table.source} over {data.n_periods} "
        f"{planner.unit_name(data.period_seconds)}s with {factory_spec} ({task})",
        file=sys.stderr,
    )
    if data.period_choice is not None and data.period_choice.warning:
        print(f"stream-monitor: warning: {data.period_choice.warning}", file=sys.stderr)
    plan = planner.RetrainingPlanner(
        data,
        planner.load_factory(factory_spec),
        task=task,
        tolerance=args.tolerance,
        metric=args.metric,
        starts=args.starts,
        train_periods=args.train_periods,
        progress=None if args.quiet else Progress(what="fit"),
        model_name=factory_spec,
        label_unit=unit,
    ).run()
    for warning in plan.warnings:
        if data.period_choice is None or warning != data.period_choice.warning:  # said above
            print(f"stream-monitor: warning: {warning}", file=sys.stderr)
    report = planner.write_report(plan, args.out)
    print(plan.schedule())
    print(f"wrote {report} and " + ", ".join(plan.charts.values()))
    return 0


def add_plan_parser(sub: argparse._SubParsersAction) -> None:
    """``stream-monitor plan``: its arguments."""
    from stream_monitor.offline.planner import MIN_ROWS_PER_PERIOD

    p = sub.add_parser(
        "plan",
        help="offline retraining planner: learning curve, training window, decay, cadence (out of time)",
    )
    p.add_argument(
        "data",
        nargs="?",
        help="prediction events JSONL (as `replay` reads them; with --labels), or a flat table of "
        "features + label + time (CSV, JSONL or Parquet; with --time-column and --target)",
    )
    p.add_argument("--labels", help="label events JSONL (as `replay` reads them), joined on event_id")
    p.add_argument("--model-id", help="the model whose events to use, when the file holds several")
    p.add_argument("--demo", action="store_true", help="use the demo's bike-sharing story as the data")
    p.add_argument("--time-column", help="flat table: event time column (epoch seconds or RFC 3339)")
    p.add_argument("--target", help="flat table: label column")
    p.add_argument("--features", nargs="*", help="flat table: feature columns (default: all others)")
    p.add_argument("--task", choices=("regression", "binary"), default="regression")
    p.add_argument("--positive-class", help="binary: the label value of the positive class")
    p.add_argument(
        "--model-factory",
        help="module:function returning fit/predict(_proba); built in: additive_bins, ridge, logistic",
    )
    p.add_argument(
        "--metric",
        choices=("auto", "mae", "wape", "auc"),
        default="auto",
        help="quality: auto = WAPE (MAE / mean label) for non-negative labels, else MAE; AUC for binary",
    )
    p.add_argument("--unit", help="the label's unit for the charts, e.g. 'rentals/hour'")
    p.add_argument(
        "--period-seconds",
        type=float,
        default=None,
        help="length of one period (default: from the data rate, a day, a week or four weeks)",
    )
    p.add_argument(
        "--min-rows",
        type=int,
        default=MIN_ROWS_PER_PERIOD,
        help=f"rows a period should hold (default {MIN_ROWS_PER_PERIOD}; a warning below it)",
    )
    p.add_argument("--tolerance", type=float, default=0.1, help="acceptable relative quality loss")
    p.add_argument(
        "--starts", type=int, default=None, help="decay: use only the latest N start periods (default: all)"
    )
    p.add_argument(
        "--train-periods", type=int, default=None, help="train on this many periods (default: suggested)"
    )
    p.add_argument("--out", default="retraining-plan", help="folder for the report and charts")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_plan)
