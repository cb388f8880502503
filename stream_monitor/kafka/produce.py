"""``stream-monitor produce``: demo, JSONL or synthetic events to Kafka at a target rate.

Predictions go to the predictions topic and labels to the labels topic, interleaved by event time (a
label is sent once the predictions stream has reached its event time). A prediction and its label get
the same key, so with co-partitioned topics they land in the same partition number:

- ``--key model_id`` (default, recommended for small setups): all of a model's events in one partition,
  in order; one member works on a model;
- ``--key event_id``: a model spreads over all partitions (each partition-task monitors its share).

The rate is a token bucket on predictions; progress goes to stderr (:mod:`stream_monitor.progress`).

>>> items = list(synthetic_events("m", ["x"], [], "regression", count=3, drift_after=None, seed=1))
>>> [(role, ev["event_id"]) for role, ev in items][:3]
[('predictions', 'm-0'), ('predictions', 'm-1'), ('predictions', 'm-2')]
>>> sum(role == "labels" for role, _ in items)
3
"""

from __future__ import annotations

import argparse
import heapq
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import KafkaError, Message, Producer

from stream_monitor.errors import StreamMonitorError
from stream_monitor.progress import Progress

Item = tuple[str, dict[str, Any] | bytes]  # (role, event dict or raw JSON line)
START_TS = 1_735_689_600.0


def merge_by_time(predictions: Iterable[dict[str, Any]], labels: Iterable[dict[str, Any]]) -> Iterator[Item]:
    """Predictions in order, each label once the predictions have reached its event time.

    >>> p = [{"ts": 1}, {"ts": 2}, {"ts": 3}]
    >>> [(r, e["ts"]) for r, e in merge_by_time(p, [{"ts": 1.5}, {"ts": 9}])]
    [('predictions', 1), ('labels', 1.5), ('predictions', 2), ('predictions', 3), ('labels', 9)]
    """
    heap: list[tuple[float, int, dict[str, Any]]] = []
    for i, lab in enumerate(labels):
        heapq.heappush(heap, (float(lab["ts"]), i, lab))
    last = float("-inf")
    for event in predictions:
        ts = float(event["ts"])
        while heap and heap[0][0] < ts:
            yield "labels", heapq.heappop(heap)[2]
        last = max(last, ts)
        yield "predictions", event
    while heap:
        yield "labels", heapq.heappop(heap)[2]


def synthetic_events(
    model_id: str,
    numeric: Sequence[str],
    categorical: Sequence[str],
    task: str,
    *,
    count: int,
    drift_after: int | None,
    shift: float = 1.5,
    seed: int = 0,
    start_ts: float = START_TS,
    spacing: float = 1.0,
    label_delay: float = 30.0,
    id_prefix: str | None = None,
) -> Iterator[Item]:
    """A seeded stream for one model: numeric ~ N(0, 1) (shifted by ``shift`` from ``drift_after`` on),
    categorical uniform over a, b, c; predictions follow the features; a label per prediction."""
    rng = np.random.default_rng(seed)
    prefix = id_prefix or model_id
    pending: list[tuple[float, int, dict[str, Any]]] = []
    for i in range(count):
        ts = start_ts + i * spacing
        mu = shift if drift_after is not None and i >= drift_after else 0.0
        feats: dict[str, Any] = {n: round(float(rng.normal(mu, 1.0)), 4) for n in numeric}
        for n in categorical:
            feats[n] = str("abc"[int(rng.integers(3))])
        signal = sum(feats[n] for n in numeric) / max(1, len(numeric))
        eid = f"{prefix}-{i}"
        if task == "regression":
            prediction: Any = round(10.0 + signal, 4)
            label: Any = round(10.0 + signal + float(rng.normal(0, 0.5)), 4)
        else:
            p = 1.0 / (1.0 + np.exp(-signal))
            prediction = {"score": round(float(p), 4), "label": "1" if p >= 0.5 else "0"}
            label = int(rng.uniform() < p)
        while pending and pending[0][0] <= ts:
            yield "labels", heapq.heappop(pending)[2]
        yield (
            "predictions",
            {"event_id": eid, "model_id": model_id, "ts": ts, "features": feats, "prediction": prediction},
        )
        heapq.heappush(
            pending,
            (
                ts + label_delay,
                i,
                {"event_id": eid, "model_id": model_id, "ts": ts + label_delay, "label": label},
            ),
        )
    while pending:
        yield "labels", heapq.heappop(pending)[2]


def demo_events(stations: int = 20, days: int = 30) -> Iterator[Item]:
    """The bike-sharing story (seed 003): production predictions and their labels, by event time."""
    from stream_monitor.offline.demo_data import BikeStory

    events, labels = BikeStory(stations=stations, days=days).production()
    return merge_by_time(events, labels)


def jsonl_events(path: str, labels_path: str | None = None) -> Iterator[Item]:
    """Lines of a JSONL file (``.gz`` too) as raw predictions, sent unchanged, merged with the labels
    file's lines in event-time order (a label after the predictions of its instant), as they would
    arrive in production: labels produced after every prediction would find their predictions long
    expired. Each file is read in its own order; a line without a usable ``ts`` keeps its place."""
    streams = [_timed_lines(path, 0, "predictions")]
    if labels_path:
        streams.append(_timed_lines(labels_path, 1, "labels"))
    for _, _, _, role, line in heapq.merge(*streams):
        yield role, line


def _timed_lines(path: str, rank: int, role: str) -> Iterator[tuple[float, int, int, str, bytes]]:
    from stream_monitor.core.events import parse_ts
    from stream_monitor.offline.replay import open_lines

    clock = -float("inf")  # running maximum: heapq.merge needs each stream in key order
    with open_lines(path) as f:
        for number, raw in enumerate(f):
            line = raw.rstrip(b"\r\n")
            if not line:
                continue
            try:
                ts = parse_ts(orjson.loads(line).get("ts"))
            except (orjson.JSONDecodeError, AttributeError):
                ts = None
            if ts is not None:
                clock = max(clock, ts)
            yield clock, rank, number, role, line


def event_timestamp_ms(event: dict[str, Any] | bytes) -> int | None:
    """The event's ``ts`` in epoch milliseconds (the record timestamp of ``--timestamp event``), or None
    when it has no readable ``ts`` (the record then gets its creation time; the service rejects it).

    >>> event_timestamp_ms({"ts": "2011-01-01T00:00:00Z"}), event_timestamp_ms(b'{"ts": 1.5}')
    (1293840000000, 1500)
    >>> event_timestamp_ms(b"{") is None
    True
    """
    from stream_monitor.core.events import parse_ts

    obj: Any = event
    if isinstance(event, bytes):
        try:
            obj = orjson.loads(event)
        except orjson.JSONDecodeError:
            return None
    ts = parse_ts(obj.get("ts")) if isinstance(obj, dict) else None
    return None if ts is None or not 0 <= ts < 253402300800 else round(ts * 1000)


def message_key(event: dict[str, Any] | bytes, key_field: str) -> bytes | None:
    """The Kafka key: ``model_id`` or ``event_id`` of the event (raw lines are parsed for it).

    >>> message_key({"model_id": "m", "event_id": "e1"}, "model_id"), message_key(b"{oops", "event_id")
    (b'm', None)
    """
    obj: Any = event
    if isinstance(event, bytes):
        try:
            obj = orjson.loads(event)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(obj, dict) or obj.get(key_field) is None:
        return None
    return str(obj[key_field]).encode()


class TokenBucket:
    """At most ``rate`` tokens per second with a burst of ``rate / 10`` (``rate <= 0``: unlimited)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate / 10.0)
        self.tokens = self.capacity
        self.last = time.monotonic()

    def take(self) -> None:
        """Block until one token is available."""
        if self.rate <= 0:
            return
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return
            time.sleep((1.0 - self.tokens) / self.rate)


def produce_items(
    producer: Producer,
    items: Iterable[Item],
    topics: dict[str, str],
    *,
    key_field: str = "model_id",
    rate: float = 0.0,
    count: int = 0,
    progress: Progress | None = None,
    event_timestamps: bool = False,
) -> dict[str, int]:
    """Send items (predictions limited by ``rate``); returns counts per role. Raises on delivery errors.

    ``event_timestamps``: each record's timestamp is its event's ``ts`` (not its creation time), so a
    partition-task merges predictions and labels of past data in event-time order (README, "Order of
    the two inputs"). Mind the topics' ``retention.ms``: records older than it are deleted soon."""
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(f"{msg.topic()}: {err.str()}")

    bucket = TokenBucket(rate)
    sent = {"predictions": 0, "labels": 0}
    for role, event in items:
        if role == "predictions":
            if count and sent["predictions"] >= count:
                break
            bucket.take()
        value = event if isinstance(event, bytes) else orjson.dumps(event)
        while True:
            try:
                stamp = event_timestamp_ms(event) if event_timestamps else None
                producer.produce(
                    topics[role],
                    value=value,
                    key=message_key(event, key_field),
                    on_delivery=on_delivery,
                    timestamp=0 if stamp is None else stamp,  # 0: the creation time (librdkafka)
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        sent[role] += 1
        if progress is not None:
            progress.update(sent["predictions"])
    remaining = producer.flush(60)
    if progress is not None:
        progress.update(sent["predictions"], final=True)
    if errors or remaining:
        raise StreamMonitorError(f"{len(errors)} delivery error(s), {remaining} undelivered: {errors[:3]}")
    return sent


def produce_main(args: argparse.Namespace) -> int:
    """``stream-monitor produce``."""
    from stream_monitor.config import load_config, producer_config

    bootstrap = args.bootstrap_servers
    topics = {"predictions": "predictions", "labels": "labels"}
    settings: dict[str, Any] = {}
    app = None
    if args.config:
        app = load_config(args.config)
        settings = producer_config(app)
        topics = {"predictions": app.kafka.topics.predictions, "labels": app.kafka.topics.labels}
    if bootstrap:
        settings["bootstrap.servers"] = bootstrap
    if "bootstrap.servers" not in settings:
        raise StreamMonitorError("produce: give --config or --bootstrap-servers")
    settings.setdefault("enable.idempotence", "true")
    if args.topic:
        topics["predictions"] = args.topic
    if args.labels_topic:
        topics["labels"] = args.labels_topic
    items: Iterable[Item]
    total: int | None = args.count or None
    if args.source == "demo":
        items = demo_events()
    elif args.source == "synthetic":
        if app is None or not args.model:
            raise StreamMonitorError("produce --source synthetic needs --config and --model")
        try:
            schema = app.model(args.model).schema
        except KeyError:
            known = ", ".join(m.schema.model_id for m in app.models)
            raise StreamMonitorError(
                f"produce: model {args.model!r} is not in {args.config} (models: {known})"
            ) from None
        n = args.count or 100_000
        total = n
        items = synthetic_events(
            args.model,
            schema.numeric_names,
            schema.categorical_names,
            schema.task,
            count=n,
            drift_after=args.drift_after,
            seed=args.seed,
        )
    else:
        for path in (args.source, args.labels_file):
            if path is not None and not Path(path).is_file():
                raise StreamMonitorError(
                    f"produce: --source is demo, synthetic or a JSONL file; {path!r} is not a file"
                )
        items = jsonl_events(args.source, args.labels_file)
    progress = Progress(total, None if args.quiet else sys.stderr)
    producer = Producer(settings)
    sent = produce_items(
        producer,
        items,
        topics,
        key_field=args.key,
        rate=args.rate,
        count=args.count,
        progress=progress,
        event_timestamps=args.timestamp == "event",
    )
    print(
        f"sent {sent['predictions']} predictions to {topics['predictions']} and {sent['labels']} labels "
        f"to {topics['labels']}",
        file=sys.stderr,
    )
    return 0
