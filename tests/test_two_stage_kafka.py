"""Two-stage aggregation on the real broker: one judgement per model, whatever the partitioning.

The oracle is the one-process replay of the same events (both stages in process). The subject is a
consumer group of 3 ``stream-monitor run`` members on 6 partitions, the events keyed by ``event_id``:
shards summarise, the model stage (on the partials topic) merges and judges. They must judge the same
windows, with the same statistics, and emit the same trigger ids, each once. A member killed with
SIGKILL mid-stream (it holds shards and model-stage partitions) loses no window and judges none twice.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from service_fixtures import ServiceProcess, free_port, read_topic

from stream_monitor.app import build_engine
from stream_monitor.config import load_config
from stream_monitor.core.engine import EngineOutput, InProcessTwoStage
from stream_monitor.core.events import decode_predictions
from stream_monitor.core.reference import build_reference
from stream_monitor.core.schema import ModelSchema
from stream_monitor.offline.demo_data import SyntheticStream
from stream_monitor.offline.replay import label_heap, replay

PARTITIONS = 6
MEMBERS = 3
RATE = 10.0
WINDOW = 400.0
EVENTS = 24_000
KEY = ("x0", "x1", "c0")
# Recent event time, so the broker's retention keeps the records; aligned to the window grid.
START = math.floor((time.time() - 86400.0) / WINDOW) * WINDOW
STREAM = SyntheticStream(
    n=EVENTS,
    rate=RATE,
    drift_at=14_000,
    mean_shift={"x0": 1.5},
    label_fraction=0.5,
    label_delay=30.0,
    n_numeric=4,
    start_ts=START,
    seed=5,
)
MODEL = STREAM.model_id
# After the last window, one event per partition moves every shard's watermark past it.
CLOSER_TS = START + (math.ceil(EVENTS / RATE / WINDOW) + 2) * WINDOW


def _closer(p: int) -> bytes:
    features = {f"x{i}": 0.0 for i in range(STREAM.n_numeric)} | {"c0": "a", "c1": "u"}
    event = {"event_id": f"closer-{p}", "model_id": MODEL, "ts": CLOSER_TS, "features": features,
             "prediction": {"score": 0.5}}  # fmt: skip
    return orjson.dumps(event)


def _config(
    path: Path, bootstrap: str, topics: dict[str, str], group: str, reference: Path, port: int
) -> Path:
    features = {
        f.name: {"type": f.kind, "key": True} if f.key else f.kind for f in STREAM.schema_features(KEY)
    }
    config = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": group,
            "topics": topics,
            "batch_size": 500,
            "sync_chunk_offsets": 500,
            "batch_timeout_seconds": 0.2,
            "checkpoint_interval_seconds": 1.0,
            # Inputs are merged by record timestamp; a busy machine must not force a release.
            "sync_max_idle_seconds": 120.0,
            "consumer": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"},
        },
        "metrics": {"host": "127.0.0.1", "port": port, "ready_max_lag": 10_000_000},
        "aggregation": {"mode": "two_stage", "shard_idle_timeout_seconds": 600},
        "models": [
            {
                "id": MODEL,
                "task": "binary",
                "features": features,
                "reference": str(reference),
                "window": {"kind": "time", "width": WINDOW, "allowed_lateness": 0},
                "performance_window": 2000,
                "policy": {"cooldown_seconds": 0},
            }
        ],
    }
    path.write_bytes(orjson.dumps(config))
    return path


def _reference(path: Path) -> Path:
    schema = ModelSchema(MODEL, "binary", STREAM.schema_features(KEY))
    train = SyntheticStream(n=20_000, rate=RATE, n_numeric=STREAM.n_numeric, model_id=MODEL, seed=1005)
    raws, _ = train.raw()
    decoded, _ = decode_predictions(raws, {MODEL: schema})
    path.write_bytes(build_reference(schema, decoded[MODEL], train.columns()["y"].astype(float)).to_json())
    return path


def _oracle(config: Path, predictions: list[bytes], labels: list[bytes]) -> tuple[list[Any], list[Any]]:
    """Evaluations and triggers of the one-process replay, without the closers' window."""
    engine = build_engine(load_config(config))
    assert isinstance(engine, InProcessTwoStage)
    outputs: list[EngineOutput] = []
    closers = [_closer(p) for p in range(PARTITIONS)]
    chunks = [predictions[i : i + 5000] for i in range(0, len(predictions), 5000)] + [closers]
    replay(engine, chunks, label_heap(labels), on_output=lambda o, _s: outputs.append(o))
    evaluations = [
        e for o in outputs for m in o.per_model.values() for e in m.evaluations if e.start < CLOSER_TS
    ]
    triggers = [t for o in outputs for t in o.triggers if t.event_time < CLOSER_TS]
    return evaluations, triggers


def _produce(producer: Any, topics: dict[str, str], predictions: list[bytes], labels: list[bytes]) -> None:
    """Keyed by event id, each record stamped with its event time (the service merges by it)."""
    merged = sorted(
        [(orjson.loads(v)["ts"], 0, "predictions", v) for v in predictions]
        + [(orjson.loads(v)["ts"], 1, "labels", v) for v in labels]
    )
    for ts, _, role, value in merged:
        key = orjson.loads(value)["event_id"].encode()
        producer.produce(topics[role], value=value, key=key, timestamp=round(ts * 1000))
        producer.poll(0)
    for p in range(PARTITIONS):
        producer.produce(
            topics["predictions"], value=_closer(p), key=f"closer-{p}".encode(), partition=p,
            timestamp=round(CLOSER_TS * 1000),
        )  # fmt: skip
    assert producer.flush(60) == 0


def _sum(members: list[ServiceProcess], name: str, **labels: str) -> float:
    total = 0.0
    for member in members:
        if not member.alive():
            continue
        for (sample, found), value in member.metrics().items():
            if sample == name and all(dict(found).get(k) == v for k, v in labels.items()):
                total += value
    return total


def _gauge(members: list[ServiceProcess], name: str, **labels: str) -> list[float]:
    """Every live member's value of one series (a per-model series must exist once in the group)."""
    values = []
    for member in members:
        if not member.alive():
            continue
        for (sample, found), value in member.metrics().items():
            if sample == name and dict(found) == labels:
                values.append(value)
    return values


@pytest.mark.parametrize("kill_one", [False, True], ids=["steady", "member_killed"])
def test_a_group_on_six_partitions_judges_once_as_one_process(
    kill_one: bool,
    kafka_bootstrap: str,
    topic_factory: Any,
    group_id: str,
    producer_factory: Any,
    tmp_path: Path,
) -> None:
    predictions, labels = STREAM.raw()
    topics = _topics(topic_factory, PARTITIONS)
    reference = _reference(tmp_path / "reference.json")
    configs = [
        _config(tmp_path / f"c{i}.json", kafka_bootstrap, topics, group_id, reference, free_port())
        for i in range(MEMBERS)
    ]
    expected_evaluations, expected_triggers = _oracle(configs[0], predictions, labels)
    assert expected_triggers, "the oracle must see the drift"
    windows = len(expected_evaluations)

    # Every record is on the broker before the group starts: each shard then sees its predictions and
    # labels merged by timestamp as the replay does (live, a label fetched after the prediction that
    # closes its window counts in the next window: see core/partials.py). The members join one by
    # one, so partitions move between them (revoke, checkpoint, restore) while they work.
    _produce(producer_factory({"linger.ms": 20}), topics, predictions, labels)
    members = []
    for i, config in enumerate(configs):
        port = orjson.loads(config.read_bytes())["metrics"]["port"]
        members.append(ServiceProcess(config, port, tmp_path / f"m{i}.log").start())
    try:
        for member in members:
            member.wait_for(lambda m=member: m.ready() is not None, 120, "HTTP up")
        live = members
        if kill_one:
            members[0].wait_for(
                lambda: _windows_judged(members) != [] and _windows_judged(members)[0] >= 1,
                240,
                "a window judged",
            )
            # The victim holds the model's stage (the partials partition its key maps to) and shards.
            victim = next(
                m for m in members if any(MODEL in t["models"] for t in m.state()["model_stage"].values())
            )
            victim.kill9()
            live = [m for m in members if m is not victim]
        try:
            live[0].wait_for(
                lambda: (
                    {t["trigger_id"] for t in _triggers(kafka_bootstrap, topics["triggers"], idle=0.5)}
                    >= {t.trigger_id for t in expected_triggers}
                ),
                90,
                "the oracle's triggers",
            )
        except AssertionError as exc:
            stages = [
                (
                    m.state()["model_stage"],
                    {p: (t["counts"], t["buffered"], t["offsets"]) for p, t in m.state()["tasks"].items()},
                )
                for m in live
            ]
            raise AssertionError(f"{exc}\nmodel stages: {stages}") from None
        if not kill_one:
            live[0].wait_for(
                lambda: _sum(live, "stream_monitor_windows_closed_total", model=MODEL) >= windows,
                120,
                f"{windows} windows judged",
            )
        found = _triggers(kafka_bootstrap, topics["triggers"], idle=2.0)
        ids = [t["trigger_id"] for t in found]
        if sorted(set(ids)) != sorted(t.trigger_id for t in expected_triggers):
            import sys

            for t in found:
                print(
                    t["trigger_id"][:8],
                    t["kind"],
                    t["severity"],
                    t["event_time"],
                    t["reasons"],
                    file=sys.stderr,
                )
            for t in expected_triggers:
                print("exp", t.trigger_id[:8], t.kind, t.severity, t.event_time, t.reasons, file=sys.stderr)
            for m in live:
                print(orjson.dumps(m.state()["model_stage"]).decode()[:3000], file=sys.stderr)
        assert sorted(set(ids)) == sorted(t.trigger_id for t in expected_triggers)
        by_id = {t.trigger_id: t for t in expected_triggers}
        for t in found:
            mine = by_id[t["trigger_id"]]
            assert (t["kind"], t["severity"]) == (mine.kind, mine.severity)
            assert t["event_time"] == pytest.approx(mine.event_time)
            # The same statistics and advice, and the label counts as of the window, not as of a later
            # report (within 0.1 %: a shard counts the labels it joined before the batch that passed
            # the window; the replay cuts its batches at the window's edge).
            expected = orjson.loads(mine.with_emitted_at(0.0).to_json_bytes())
            assert t["reasons"] == expected["reasons"]
            assert t["recommendation"]["action"] == expected["recommendation"]["action"]
            joined = expected["evidence"]["labels_joined"]
            assert t["evidence"]["labels_joined"] == pytest.approx(joined, rel=1e-3)
        if not kill_one:
            assert len(ids) == len(set(ids)), "each trigger emitted once"
            assert _sum(live, "stream_monitor_windows_closed_total", model=MODEL) == windows
            # The per-model series exist once in the group: on the member that owns the model stage.
            last = expected_evaluations[-1]
            # The judged series carry the version ("": the configuration and events name none).
            auc = _gauge(live, "stream_monitor_performance", model=MODEL, version="", metric="auc")
            assert len(auc) == 1
            assert abs(auc[0] - last.performance["auc"]) <= last.performance["auc_error_bound"] + 1e-9
            psi = _gauge(live, "stream_monitor_feature_psi", model=MODEL, version="", feature="x0")
            expected_psi = next(r.value for r in last.results if r.detector == "psi" and r.feature == "x0")
            assert len(psi) == 1 and psi[0] == pytest.approx(expected_psi, rel=1e-9)
            # The status page of the stage owner shows the model's judgement.
            owner = next(m for m in live if _windows_judged([m]))
            code, page = owner._get("/")
            assert code == 200 and MODEL.encode() in page and b"Traceback" not in page
        # Every window judged once, by one member; across a SIGKILL a window judged again after the
        # restore gives the same trigger id (at least once, deduplicable by id), none is lost.
        live[0].wait_for(
            lambda: _windows_judged(live) == [windows], 120, f"the stage state says {windows} windows"
        )
        # Nothing was dead-lettered, the internal topic included.
        assert read_topic(kafka_bootstrap, topics["dlq"], idle=0.5) == []
    finally:
        for member in members:
            member.stop()


def _windows_judged(members: list[ServiceProcess]) -> list[int]:
    """``windows_judged`` of the model, from every live member's model-stage tasks that hold it."""
    return [
        t["models"][MODEL]["windows_judged"]
        for m in members
        for t in m.state()["model_stage"].values()
        if MODEL in t["models"]
    ]


def _topics(topic_factory: Any, partitions: int) -> dict[str, str]:
    """Fresh input topics; the service creates the outputs and the partials topic."""
    preds = topic_factory(partitions, prefix="predictions")
    return {
        "predictions": preds,
        "labels": topic_factory(partitions, prefix="labels"),
        "triggers": preds.replace("predictions", "triggers"),
        "dlq": preds.replace("predictions", "dlq"),
        "state": preds.replace("predictions", "state"),
        "partials": preds.replace("predictions", "partials"),
    }


def _triggers(bootstrap: str, topic: str, idle: float) -> list[dict[str, Any]]:
    return [orjson.loads(m.value()) for m in read_topic(bootstrap, topic, idle=idle)]


def test_a_forged_or_garbled_shard_report_is_dead_lettered_and_never_merged(
    kafka_bootstrap: str,
    topic_factory: Any,
    group_id: str,
    producer_factory: Any,
    tmp_path: Path,
) -> None:
    """The partials topic is input too: whoever can write to it must not be able to move a judgement."""
    from service_fixtures import dead_letters

    from stream_monitor.core.partials import ShardReport

    topics = _topics(topic_factory, 2)
    topics["partials"] = topic_factory(2, prefix="partials")  # made before the service, to write to it
    reference = _reference(tmp_path / "reference.json")
    port = free_port()
    config = _config(tmp_path / "c.json", kafka_bootstrap, topics, group_id, reference, port)
    # A report of a window far ahead, claiming to be shard 0 of 2: merged, it would move the judgement.
    forged = ShardReport(MODEL, 0, CLOSER_TS, [], {}, shards=2).encode()
    producer = producer_factory()
    for value, key in ((b"junk", MODEL.encode()), (forged, b"another-model"), (forged[:-3], MODEL.encode())):
        producer.produce(topics["partials"], value=value, key=key, partition=0)
    assert producer.flush(30) == 0
    member = ServiceProcess(config, port, tmp_path / "m.log").start()
    try:
        member.wait_for(
            lambda: _sum([member], "stream_monitor_events_rejected_total", reason="bad_partial") == 3,
            180,
            "3 bad partials counted",
        )
        dead = dead_letters(kafka_bootstrap, topics["dlq"])
        reasons = [dict((k, v.decode()) for k, v in (m.headers() or [])).get("reason") for m in dead]
        assert reasons == ["bad_partial"] * 3
        assert all(not t["models"] for t in member.state()["model_stage"].values())
        assert member.alive() and member.ready() is not None
    finally:
        member.stop()
