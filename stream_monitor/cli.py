"""Command line: run / replay / demo / reference build / produce."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream_monitor.app import build_engine, load_references
from stream_monitor.config import load_config
from stream_monitor.core.engine import EngineOutput
from stream_monitor.errors import StreamMonitorError

log = logging.getLogger("stream_monitor")


def _cmd_replay(args: argparse.Namespace) -> int:
    from stream_monitor.offline.replay import (
        label_heap,
        open_lines,
        read_batches,
        replay,
        summary_lines,
        write_triggers,
    )

    app = load_config(args.config)
    engine = build_engine(app, load_references(app, Path(args.config).parent))
    report = None
    if args.report:
        from stream_monitor.offline.report import ReplayReport

        report = ReplayReport(args.report, engine)
    out_file = open(args.out, "wb") if args.out else sys.stdout.buffer  # noqa: SIM115 - closed below

    def write(out: EngineOutput, stream: str) -> None:
        emitted_at = time.time()
        write_triggers(out_file, (t.with_emitted_at(emitted_at) for t in out.triggers))
        if report is not None:
            report.add(out, emitted_at)

    labels = None
    if args.labels:
        with open_lines(args.labels) as f:
            labels = label_heap(f)
    with open_lines(args.events) as f:
        summary = replay(
            engine, read_batches(f, args.batch_size), labels, on_output=write, wall_now=time.time()
        )
    if args.out:
        out_file.close()
    else:
        out_file.flush()
    if args.insights_dir:
        from stream_monitor.offline.insights_store import save_all_insights

        save_all_insights(engine, args.insights_dir)
    for line in summary_lines(summary, engine):
        print(line, file=sys.stderr)
    if report is not None:
        page = report.close(title=f"stream-monitor replay of {Path(args.events).name}")
        print(
            f"report: {page} (and the windows, detectors, performance and triggers as CSV and JSONL)",
            file=sys.stderr,
        )
    return 0


def _cmd_reference_build(args: argparse.Namespace) -> int:
    from stream_monitor.offline.reference_io import build_reference_file, training_data_settings

    app = load_config(args.config, check_references=False)  # this command writes the reference file
    model = next((m for m in app.models if m.schema.model_id == args.model), None)
    if model is None:
        raise StreamMonitorError(f"model {args.model!r} is not in {args.config}")
    out = args.out or f"{args.model}.reference.json"
    d = model.settings.detectors
    profile = build_reference_file(
        args.data,
        model.schema,
        out,
        training=training_data_settings(args, model.training),
        bins=d.bins,
        top_k=d.top_k,
        sample_size=d.reference_sample,
        created_at=time.time(),
    )
    decided = f" (accuracy/F1 decided by {profile.baseline_decision})" if profile.baseline_decision else ""
    print(
        f"wrote {out}: {profile.n_events} events, {len(profile.numeric)} numeric and "
        f"{len(profile.categorical)} categorical features, baseline {profile.baseline}{decided}"
    )
    return 0


def _cmd_reference_publish(args: argparse.Namespace) -> int:
    from stream_monitor.kafka.registry import publish_reference
    from stream_monitor.offline.reference_io import read_reference

    app = load_config(args.config, check_references=False)
    profile = read_reference(args.reference)
    _, size = publish_reference(app, args.model, args.version, profile)
    k = app.require_kafka()
    print(
        f"published {args.reference} as the reference of {args.model} version {args.version} to "
        f"{k.topics.references} ({size} bytes, digest {profile.digest()}); every member uses it from now on"
    )
    return 0


def _cmd_reference_list(args: argparse.Namespace) -> int:
    import orjson

    from stream_monitor.kafka.registry import list_references

    app = load_config(args.config, check_references=False)
    table: dict[tuple[str, str], dict[str, object]] = {}
    refused: list[dict[str, object]] = []
    for read in list_references(app, timeout=args.timeout):
        entry = read.entry
        if entry is None:
            refused.append({"outcome": read.outcome, "detail": read.detail})
        elif entry.profile is None:
            table.pop((entry.model_id, entry.model_version), None)
        else:
            table[(entry.model_id, entry.model_version)] = {
                "model_id": entry.model_id,
                "model_version": entry.model_version,
                "digest": entry.digest,
                "published_at": entry.published_at,
                "events": entry.profile.n_events,
                "baseline": entry.profile.baseline,
            }
    for row in sorted(table.values(), key=lambda r: (str(r["model_id"]), str(r["model_version"]))):
        sys.stdout.write(orjson.dumps(row).decode() + "\n")
    for row in refused:
        sys.stdout.write(orjson.dumps({"refused": row}).decode() + "\n")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from stream_monitor.offline.calibrate_config import calibrate_command

    return calibrate_command(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from stream_monitor.offline.demo import run_demo

    return run_demo(
        port=args.port,
        host=args.host,
        stations=args.stations,
        days=args.days,
        out=args.out,
        linger=args.linger,
        insights_dir=args.insights_dir,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from stream_monitor.kafka.service import run_service

    return run_service(load_config(args.config))


def _cmd_topics_create(args: argparse.Namespace) -> int:
    from stream_monitor.kafka.topics import create_topics

    app = load_config(args.config, check_references=False)
    done = create_topics(app, args.partitions, args.replication_factor)
    k = app.kafka
    internal = k.topics.partials if app.aggregation.mode == "two_stage" else k.topics.references
    for name in (
        k.topics.predictions,
        k.topics.labels,
        k.topics.triggers,
        k.topics.dlq,
        k.topics.state,
        internal,
    ):
        if name in done.created:
            print(f"created {name}")
        else:
            print(f"exists  {name} ({done.existing.get(name)} partitions)")
    return 0


def _cmd_triggers_tail(args: argparse.Namespace) -> int:
    from stream_monitor.kafka.topics import tail_triggers

    app = load_config(args.config, check_references=False)

    def show(value: bytes) -> None:
        sys.stdout.write(value.decode("utf-8", "replace") + "\n")
        sys.stdout.flush()

    seen = tail_triggers(
        app, show, args.max, args.timeout, from_beginning=not args.latest, lifecycle=args.lifecycle
    )
    if args.max and seen < args.max:
        print(f"stream-monitor: {seen} of {args.max} trigger(s) within {args.timeout:g}s", file=sys.stderr)
        return 1
    return 0


def _cmd_produce(args: argparse.Namespace) -> int:
    from stream_monitor.kafka.produce import produce_main

    return produce_main(args)


def _cmd_acls(args: argparse.Namespace) -> int:
    from stream_monitor.kafka.acls import acls_command

    return acls_command(
        load_config(args.config, check_references=False),
        principal=args.principal,
        create_topics=args.create_topics,
        action="apply" if args.apply else "delete" if args.delete else "print",
        command_config=args.command_config,
        fmt=args.format,
    )


#: Commands whose arguments are defined by the offline modules (importing them loads the planner):
#: a parser for another command leaves them out (:func:`build_parser`).
OFFLINE_PARSERS = ("reference", "calibrate", "insights", "plan")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; for ``command`` (the one about to run, see :func:`command_of`) other
    than one of :data:`OFFLINE_PARSERS`, those are left as names without arguments, so ``run`` never
    imports the offline modules (``reference_io``, ``insights_commands``, the planner) it does not use."""
    offline = command is None or command in OFFLINE_PARSERS
    p = argparse.ArgumentParser(prog="stream-monitor", description=__doc__)
    p.add_argument("--log-level", default="INFO")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="the service: consume, detect, export metrics, produce triggers")
    run.add_argument("--config", required=True)
    run.set_defaults(func=_cmd_run)

    rp = sub.add_parser("replay", help="the same pipeline on JSONL files (optionally .gz), no broker")
    rp.add_argument("--config", required=True)
    rp.add_argument("--out", help="write triggers as JSONL here (default: stdout)")
    rp.add_argument("--batch-size", type=int, default=10_000)
    rp.add_argument("events")
    rp.add_argument("labels", nargs="?")
    rp.add_argument("--insights-dir", help="save the time-bucket profiles here (for `insights dna`)")
    rp.add_argument(
        "--report",
        metavar="DIR",
        help="write every window's statistics (CSV, JSONL) and an HTML report with charts here",
    )
    rp.set_defaults(func=_cmd_replay)

    demo = sub.add_parser("demo", help="self-contained drifting stream (seed 003's bike sharing)")
    demo.add_argument("--port", type=int, default=9108, help="metrics port (0: any free port)")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--stations", type=int, default=200)
    demo.add_argument("--days", type=int, default=40)
    demo.add_argument("--out", help="also write the triggers as JSONL here")
    demo.add_argument("--linger", type=float, default=0.0, help="keep serving /metrics this many seconds")
    demo.add_argument("--insights-dir", default="stream-monitor-insights", help="save bucket profiles here")
    demo.set_defaults(func=_cmd_demo)

    ref = sub.add_parser("reference", help="reference profiles")
    ref_sub = ref.add_subparsers(dest="reference_command", required=True)
    rb = ref_sub.add_parser("build", help="build a reference profile from training data")
    rb.add_argument("--config", required=True)
    rb.add_argument("--model", required=True)
    rb.add_argument("--out")
    rb.add_argument("data")
    if offline:
        from stream_monitor.offline.reference_io import add_training_data_arguments

        add_training_data_arguments(rb)
    rb.set_defaults(func=_cmd_reference_build)
    rpub = ref_sub.add_parser(
        "publish", help="publish a reference for a model version to the registry topic (no restart needed)"
    )
    rpub.add_argument("--config", required=True)
    rpub.add_argument("--model", required=True)
    rpub.add_argument("--version", required=True, help="the model_version its events carry")
    rpub.add_argument("reference", help="a profile written by `reference build`")
    rpub.set_defaults(func=_cmd_reference_publish)
    rlist = ref_sub.add_parser("list", help="the references in the registry topic, one JSON line each")
    rlist.add_argument("--config", required=True)
    rlist.add_argument("--timeout", type=float, default=30.0)
    rlist.set_defaults(func=_cmd_reference_list)

    cal = sub.add_parser(
        "calibrate",
        help="thresholds from time-ordered training data for a whole-model false-alarm budget: the "
        "model's block of the configuration, or an updated copy of it (--write)",
    )
    cal.add_argument("--config", required=True)
    cal.add_argument("--model", required=True)
    cal.add_argument("--budget", type=float, default=1.0, help="false alarms per million stationary events")
    cal.add_argument(
        "--windows", type=int, default=200, help="null windows of consecutive events, over 5 time blocks"
    )
    cal.add_argument(
        "--window-events",
        type=int,
        default=None,
        help="events per window (default: the count-window size; time windows: the training data's "
        "events per window width)",
    )
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--out", help="also write what is printed to this file")
    cal.add_argument(
        "--write",
        metavar="NEW_CONFIG",
        help="write a copy of --config with the model's thresholds updated in place (comments kept)",
    )
    cal.add_argument("data")
    if offline:
        add_training_data_arguments(cal)
    cal.set_defaults(func=_cmd_calibrate)

    topics = sub.add_parser("topics", help="the deployment's Kafka topics")
    topics_sub = topics.add_subparsers(dest="topics_command", required=True)
    tc = topics_sub.add_parser(
        "create", help="create the input topics (same partition count) and the output topics"
    )
    tc.add_argument("--config", required=True)
    tc.add_argument("--partitions", type=int, default=1, help="partitions of predictions and of labels")
    tc.add_argument("--replication-factor", type=int, default=-1, help="-1: the broker's default")
    tc.set_defaults(func=_cmd_topics_create)

    trig = sub.add_parser("triggers", help="read the retrain-trigger events")
    trig_sub = trig.add_subparsers(dest="triggers_command", required=True)
    tt = trig_sub.add_parser("tail", help="print trigger events as JSON lines")
    tt.add_argument("--config", required=True)
    tt.add_argument("--max", type=int, default=0, help="stop after this many (0: never)")
    tt.add_argument("--timeout", type=float, default=0.0, help="stop after this many seconds (0: never)")
    tt.add_argument("--latest", action="store_true", help="only triggers emitted from now on")
    tt.add_argument(
        "--lifecycle", action="store_true", help="also print the topic's model_version_changed records"
    )
    tt.set_defaults(func=_cmd_triggers_tail)

    acls = sub.add_parser(
        "acls", help="the service's least-privilege Kafka ACLs: print them, or --apply / --delete them"
    )
    acls.add_argument("--config", required=True)
    acls.add_argument("--principal", help="User:<name> (default: the configuration's sasl.username)")
    acls.add_argument(
        "--create-topics",
        action="store_true",
        help="also CREATE on the output topics (the service makes them)",
    )
    acls_action = acls.add_mutually_exclusive_group()
    acls_action.add_argument("--apply", action="store_true", help="create the ACLs with the AdminClient")
    acls_action.add_argument("--delete", action="store_true", help="remove exactly these ACLs")
    acls.add_argument(
        "--command-config", help="file of the admin's librdkafka settings (key=value) for --apply/--delete"
    )
    acls.add_argument("--format", choices=("table", "kafka-acls"), default="table")
    acls.set_defaults(func=_cmd_acls)

    prod = sub.add_parser("produce", help="send demo, file or synthetic events to Kafka at a target rate")
    prod.add_argument("--config")
    prod.add_argument("--bootstrap-servers")
    prod.add_argument("--source", default="demo", help="demo | synthetic | PATH.jsonl")
    prod.add_argument("--labels-file")
    prod.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
    prod.add_argument("--count", type=int, default=0, help="stop after this many events (0: all)")
    prod.add_argument("--topic")
    prod.add_argument("--labels-topic")
    prod.add_argument(
        "--key",
        choices=("model_id", "event_id"),
        default="model_id",
        help="message key of a prediction and its label (same key: same partition)",
    )
    prod.add_argument(
        "--timestamp",
        choices=("created", "event"),
        default="created",
        help="record timestamp: the creation time, or the event's ts (files of past data: predictions "
        "and labels are then merged in event-time order; mind the topics' retention.ms)",
    )
    prod.add_argument("--model", help="synthetic: the configured model to generate events for")
    prod.add_argument("--drift-after", type=int, default=None, help="synthetic: shift features from here on")
    prod.add_argument("--seed", type=int, default=0)
    prod.add_argument("--quiet", action="store_true", help="no progress bar")
    prod.set_defaults(func=_cmd_produce)

    if offline:
        from stream_monitor.offline.insights_commands import add_insights_parser  # insights dna, plan

        add_insights_parser(sub)
    else:
        sub.add_parser("insights", help="retraining insight from saved bucket profiles (data DNA)")
        sub.add_parser("plan", help="offline retraining planner")
    return p


def command_of(argv: Sequence[str]) -> str | None:
    """The command an argument list runs (its first positional argument), None when it cannot tell
    or when top-level help is asked for (which lists every command).

    >>> command_of(["--log", "DEBUG", "run", "--config", "reference"]), command_of(["-h", "run"])
    ('run', None)
    """
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help"):
            return None
        if len(arg) > 2 and "--log-level".startswith(arg):  # argparse takes abbreviations: --log
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(command_of(argv)).parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        code: Any = args.func(args)
    except StreamMonitorError as e:
        print(f"stream-monitor: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
