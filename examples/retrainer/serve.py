"""The example serving producer: scores a stream of feature rows with whatever model is deployed.

It follows the deployments topic (every partition assigned, read from the beginning, then polled
between rows), so the newest deployment record of its model is the model it scores with — it
switches version the moment a record arrives, with no restart. Each row becomes a prediction event
(``model_version`` = the deployed version) on the predictions topic and, once the stream has reached
the label's event time, a label event on the labels topic: what stream-monitor watches. With
``--labelled-topic`` it also writes each labelled event (features, label, prediction, version) there:
the labelled data the retrainer trains on.

Rows come from ``--source bikes`` (the bike-sharing story of seed 003,
:class:`~stream_monitor.offline.demo_data.BikeStory`: warming weather from day 20) or a JSONL file of
``{event_id, ts, features[, label][, label_ts][, prediction][, model_version][, segment]}``. Before
the first deployment a row is served with its own ``prediction`` when it has one (the story's model,
version 2025.01: the model in production before the loop existed); a row without one waits for a
deployment.
"""

from __future__ import annotations

import argparse
import heapq
import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

# The retrainer beside this file holds what both sides of a deployment must agree on.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrainer import (
    DEFAULT_DEPLOYMENTS_TOPIC,
    Deployment,
    client_config,
    ensure_topic,
    parse_deployment,
    print_json,
    read_jsonl,
)

from stream_monitor.config import load_config
from stream_monitor.kafka.produce import TokenBucket
from stream_monitor.offline.demo_data import BikeStory

log = logging.getLogger("serve")


def bike_rows(stations: int, days: int) -> Iterator[dict[str, Any]]:
    """The story's production events in event-time order, each with its label and the label's time."""
    events, labels = BikeStory(stations=stations, days=days).production()
    for event, label in zip(events, labels, strict=True):
        yield {**event, "label": label["label"], "label_ts": label["ts"]}


def file_rows(path: str, label_delay: float) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file; a row without ``features`` or a numeric ``ts`` is logged and skipped."""
    for number, row in enumerate(read_jsonl(path), start=1):
        if not isinstance(row, dict) or not isinstance(row.get("features"), dict):
            log.warning("%s:%d: not a row with a features object; skipped", path, number)
            continue
        ts = row.get("ts")
        if isinstance(ts, bool) or not isinstance(ts, int | float):
            log.warning("%s:%d: ts must be epoch seconds; skipped", path, number)
            continue
        row.setdefault("event_id", f"{Path(path).stem}-{number}")
        row.setdefault("label_ts", ts + label_delay)
        yield row


class DeploymentFollower:
    """The newest deployment of one model on the deployments topic, kept current by :meth:`poll`."""

    def __init__(self, config: Mapping[str, str], topic: str, model_id: str) -> None:
        self.topic = topic
        self.model_id = model_id
        self.current: Deployment | None = None
        self._consumer = Consumer({**config, "group.id": f"serve-{model_id}", "enable.auto.commit": "false"})
        self._partitions: list[TopicPartition] = []

    def catch_up(self, timeout: float = 60.0) -> None:
        """Assign every partition from the beginning (no group: every server sees every deployment)
        and read up to the end offsets they have now, so the first row is scored by the model
        deployed when serving starts — not by the one before it, for the few seconds a fetch takes."""
        metadata = self._consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
        if metadata is None or metadata.error is not None:
            raise RuntimeError(f"{self.topic}: {metadata.error if metadata else 'no such topic'}")
        self._partitions = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        ends = {
            tp.partition: self._consumer.get_watermark_offsets(tp, timeout=timeout)[1]
            for tp in self._partitions
        }
        self._consumer.assign(self._partitions)
        deadline = time.monotonic() + timeout
        while any(ends.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.topic}: not read to its end within {timeout:.0f} s")
            self.poll(timeout=0.5)
            for tp in self._consumer.position([TopicPartition(self.topic, p) for p in ends]):
                if tp.offset >= ends[tp.partition]:
                    ends[tp.partition] = 0

    def poll(self, timeout: float = 0.0) -> bool:
        """Read what has arrived; True when the deployed version changed."""
        changed = False
        for message in self._consumer.consume(500, timeout=timeout):
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: %s", self.topic, error)
                continue
            deployment = parse_deployment(message.value(), self.model_id)
            if deployment is not None and (
                self.current is None or deployment.version != self.current.version
            ):
                self.current, changed = deployment, True
        return changed

    def close(self) -> None:
        self._consumer.close()


def served(row: Mapping[str, Any], deployment: Deployment | None, model_id: str) -> dict[str, Any]:
    """The prediction event of ``row``: scored by ``deployment``, else with the row's own prediction.

    >>> event = served({"event_id": "e", "ts": 1.0, "features": {"x": 2}, "prediction": 5.0,
    ...                 "model_version": "1"}, None, "m")
    >>> event["model_version"], event["prediction"]
    ('1', 5.0)
    """
    if deployment is not None:
        prediction = round(float(deployment.model.predict([row["features"]])[0]), 3)
        version: Any = deployment.version
    else:
        prediction, version = row["prediction"], row.get("model_version")
    event = {
        "event_id": row["event_id"],
        "model_id": model_id,
        "model_version": version,
        "ts": row["ts"],
        "features": row["features"],
        "prediction": prediction,
    }
    if row.get("segment"):
        event["segment"] = row["segment"]
    return event


class Sender:
    """Produces records keyed by model id (a prediction and its label in the same partition number),
    remembering delivery errors for the end."""

    def __init__(self, producer: Producer, key: str) -> None:
        self.producer = producer
        self.key = key.encode()
        self.errors: list[str] = []

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err.str()}")

    def send(self, topic: str, record: Mapping[str, Any]) -> None:
        value = orjson.dumps(record)
        while True:
            try:
                self.producer.produce(topic, key=self.key, value=value, on_delivery=self._delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.05)
        self.producer.poll(0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="serve.py",
        description="Score feature rows with the deployed model; produce predictions and labels.",
    )
    p.add_argument("--config", help="a stream-monitor configuration: Kafka connection and topic names")
    p.add_argument("--bootstrap-servers", help="default: kafka.bootstrap_servers of --config")
    p.add_argument("--model", default="bikes", help="model id (default bikes)")
    p.add_argument("--source", default="bikes", help="bikes (the seed-003 story) or PATH.jsonl[.gz]")
    p.add_argument("--stations", type=int, default=200, help="bikes: stations (rows per hour)")
    p.add_argument("--days", type=int, default=40, help="bikes: days of the story (production starts on 14)")
    p.add_argument("--label-delay", type=float, default=3600.0, help="file rows without label_ts: seconds")
    p.add_argument("--deployments-topic", default=DEFAULT_DEPLOYMENTS_TOPIC)
    p.add_argument(
        "--predictions-topic", help="default: kafka.topics.predictions of --config, or predictions"
    )
    p.add_argument("--labels-topic", help="default: kafka.topics.labels of --config, or labels")
    p.add_argument("--labelled-topic", help="also write labelled events here (the retrainer's training data)")
    p.add_argument("--rate", type=float, default=0.0, help="rows per second (0: as fast as possible)")
    p.add_argument("--count", type=int, default=0, help="stop after this many rows (0: all)")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    common: dict[str, str] = {}
    bootstrap, predictions_topic, labels_topic = args.bootstrap_servers, "predictions", "labels"
    if args.config:
        kafka = load_config(args.config, check_references=False).require_kafka()
        common, bootstrap = dict(kafka.common), bootstrap or kafka.bootstrap_servers
        predictions_topic, labels_topic = kafka.topics.predictions, kafka.topics.labels
    if not bootstrap:
        print("serve: give --bootstrap-servers or --config", file=sys.stderr)
        return 2
    predictions_topic = args.predictions_topic or predictions_topic
    labels_topic = args.labels_topic or labels_topic
    connection = client_config(common, bootstrap)
    rows = (
        bike_rows(args.stations, args.days)
        if args.source == "bikes"
        else file_rows(args.source, args.label_delay)
    )

    ensure_topic(connection, args.deployments_topic, compacted=True)
    if args.labelled_topic:
        ensure_topic(connection, args.labelled_topic, compacted=False)
    follower = DeploymentFollower(connection, args.deployments_topic, args.model)
    sender = Sender(
        Producer({**connection, "enable.idempotence": "true", "acks": "all", "linger.ms": "20"}), args.model
    )
    bucket = TokenBucket(args.rate)
    # Labels wait until the stream reaches their event time: (label ts, order, label event, labelled record).
    pending: list[tuple[float, int, dict[str, Any], dict[str, Any]]] = []
    by_version: dict[str, int] = {}
    sent = labels = 0
    last_poll = 0.0
    announced: str | None = None

    def release(before: float) -> None:
        nonlocal labels
        while pending and pending[0][0] < before:
            _, _, label, labelled = heapq.heappop(pending)
            sender.send(labels_topic, label)
            if args.labelled_topic:
                sender.send(args.labelled_topic, labelled)
            labels += 1

    try:
        follower.catch_up()
        for row in rows:
            if args.count and sent >= args.count:
                break
            now = time.monotonic()
            if now - last_poll > 0.2:
                last_poll = now
                follower.poll()
            while follower.current is None and "prediction" not in row:
                log.info("no deployment of %s on %s yet: waiting", args.model, args.deployments_topic)
                follower.poll(timeout=5.0)
            if follower.current is not None and follower.current.version != announced:
                announced = follower.current.version
                print_json(
                    {
                        "event": "serving",
                        "model_id": args.model,
                        "model_version": announced,
                        "from_ts": row["ts"],
                    }
                )
            bucket.take()
            event = served(row, follower.current, args.model)
            release(float(event["ts"]))
            sender.send(predictions_topic, event)
            version = str(event["model_version"])
            by_version[version] = by_version.get(version, 0) + 1
            sent += 1
            if isinstance(row.get("label"), int | float) and not isinstance(row.get("label"), bool):
                label = {
                    "event_id": row["event_id"],
                    "model_id": args.model,
                    "ts": row["label_ts"],
                    "label": row["label"],
                }
                labelled = {**event, "label": row["label"]}
                heapq.heappush(pending, (float(row["label_ts"]), sent, label, labelled))
        release(float("inf"))
    finally:
        remaining = sender.producer.flush(60)
        follower.close()
    print_json(
        {
            "event": "done",
            "model_id": args.model,
            "predictions": sent,
            "labels": labels,
            "by_version": by_version,
        }
    )
    if sender.errors or remaining:
        log.error(
            "%d delivery error(s), %d undelivered: %s", len(sender.errors), remaining, sender.errors[:3]
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
