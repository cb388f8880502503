"""``stream-monitor run`` against the real broker, as a subprocess (issue 3, point 9).

Each test uses fresh topics and a fresh consumer group; the model warms up on 1000 events and
evaluates count windows of 500, so a whole test runs on a few thousand events.
"""

from __future__ import annotations

import ast
import itertools
import re
import threading
import time
import zlib
from collections import defaultdict
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_fixtures import KafkaBroker
from service_fixtures import (
    MODEL,
    ServiceProcess,
    ServiceTopics,
    committed,
    dead_letters,
    end_offsets,
    free_port,
    produce,
    read_topic,
    synthetic,
    triggers,
    write_config,
)

from stream_monitor.core.events import decode_labels, decode_predictions
from stream_monitor.core.schema import FeatureSpec, ModelSchema
from stream_monitor.core.triggers import Trigger
from stream_monitor.kafka.clients import header_dict
from stream_monitor.kafka.produce import produce_items

pytestmark = pytest.mark.kafka
# Every trigger has these; an escalation also has supersedes and escalation (left out otherwise).
TRIGGER_FIELDS = {f.name for f in fields(Trigger) if not f.metadata.get("omit_if_none")}
# Optional fields: an escalation's; what a versioned model's version was judged against.
ESCALATION_FIELDS = {"supersedes", "escalation", "reference"}


def _processed_all(svc: ServiceProcess, n: int) -> bool:
    done = svc.processed()
    return done["predictions"] + done["rejected"] >= n and done["labels"] >= n


def test_drift_triggers_stationary_does_not_and_sigterm_commits(
    kafka_bootstrap: str,
    topic_factory: Any,
    group_id: str,
    producer_factory: Any,
    services: Any,
    tmp_path: Path,
) -> None:
    drift, calm = ServiceTopics.create(topic_factory), ServiceTopics.create(topic_factory)
    n = 4000
    produce(producer_factory(), drift, synthetic(n, drift_after=2000))
    produce(producer_factory(), calm, synthetic(n, drift_after=None, seed=2))
    runs = {}
    for name, topics in (("drift", drift), ("calm", calm)):
        port = free_port()
        cfg = write_config(tmp_path / f"{name}.yaml", kafka_bootstrap, topics, f"{group_id}-{name}", port)
        runs[name] = services(cfg, port, tmp_path / f"{name}.log")
    for svc in runs.values():
        svc.wait_for(lambda s=svc: _processed_all(s, n), 60, "all events processed")
        svc.wait_for(lambda s=svc: s.ready() is True, 15, "ready")
    # The status page at / shows the model the service watches.
    code, page = runs["drift"]._get("/")
    assert code == 200 and b"<html" in page.lower() and MODEL.encode() in page

    # SIGTERM: finish, checkpoint, commit, leave, exit 0; committed offsets are the end offsets.
    for name, topics in (("drift", drift), ("calm", calm)):
        assert runs[name].terminate() == 0, runs[name].log()[-3000:]
        assert "stopped cleanly" in runs[name].log()
        for topic in (topics.predictions, topics.labels):
            assert committed(kafka_bootstrap, f"{group_id}-{name}", topic, 2) == end_offsets(
                kafka_bootstrap, topic, 2
            )

    fired = triggers(kafka_bootstrap, drift.triggers)
    assert fired, "drift injected at event 2000 must trigger"
    for t in fired:
        assert set(t) - ESCALATION_FIELDS == TRIGGER_FIELDS, set(t) ^ TRIGGER_FIELDS
        assert Trigger.from_dict(t).to_dict() == t  # the one parser reads what the service emits
        assert isinstance(t["emitted_at"], float)  # wall clock, stamped at emission
        assert t["model_id"] == MODEL and t["severity"] in ("warning", "critical")
        assert t["event_time"] >= 1_735_689_600.0 + 2000 * 0.5  # after the drift point (either partition)
        assert t["reasons"] and t["recommendation"]["action"] in ("retrain", "investigate", "wait_for_labels")
    assert {t["kind"] for t in fired} & {"data_drift", "combined"}
    assert any(r["feature"] == "x" for t in fired for r in t["reasons"])
    keys = {m.key() for m in read_topic(kafka_bootstrap, drift.triggers)}
    assert keys == {MODEL.encode()}
    assert triggers(kafka_bootstrap, calm.triggers) == []


def _poison(valid: bytes) -> list[tuple[bytes | None, str]]:
    """(payload, reason it must be dead-lettered with) for each poison class of issue 3."""
    deep = valid[:-1] + b',"extra":' + b"[" * 5000 + b"]" * 5000 + b"}"
    huge = valid.replace(b'"c":"a"', b'"c":"' + b"a" * 1_000_100 + b'"')
    return [
        (valid[: len(valid) // 2], "malformed_json"),  # truncated
        (b"\x00\xffnot json", "malformed_json"),
        (valid.replace(b'"x":1.5', b'"x":"abc"'), "bad_type:features.x"),
        (valid.replace(b'"x":1.5', b'"x":NaN'), "non_finite:features.x"),
        (valid.replace(b'"x":1.5', b'"x":Infinity'), "non_finite:features.x"),
        (valid.replace(b'"x":1.5', b'"x":1e400'), "non_finite:features.x"),
        (valid.replace(b'"x":1.5', b'"x":1' + b"0" * 400), "non_finite:features.x"),
        (valid.replace(b"2.5}", b'{"score": "high"}}'), "bad_type:prediction.score"),
        (deep, "too_deep"),
        (huge, "too_large"),
        (None, "empty"),
        (valid.replace(b'"model_id":"m"', b'"model_id":"nobody"'), "unknown_model"),
        (b"[1, 2, 3]", "not_an_object"),
        (valid.replace(b'"ts":5,', b""), "missing_field:ts"),
    ]


def test_poison_messages_go_to_the_dlq_once_each(
    kafka_bootstrap: str,
    topic_factory: Any,
    group_id: str,
    producer_factory: Any,
    services: Any,
    tmp_path: Path,
) -> None:
    topics = ServiceTopics.create(topic_factory, partitions=1)
    valid = b'{"event_id":"v","model_id":"m","ts":5,"features":{"x":1.5,"y":0.1,"c":"a"},"prediction":2.5}'
    poison = _poison(valid)
    schemas = {
        MODEL: ModelSchema(
            MODEL,
            "regression",
            (FeatureSpec("x", "numeric"), FeatureSpec("y", "numeric"), FeatureSpec("c", "categorical")),
        )
    }
    # The service reports exactly what the pure decoder says (and that is the reason we expect).
    for payload, reason in poison:
        assert [r.reason for r in decode_predictions([payload], schemas)[1]] == [reason]
    producer = producer_factory({"message.max.bytes": 3_000_000})
    good = synthetic(1500, drift_after=None, seed=3)
    produce_items(producer, good[:800], topics.inputs())
    for payload, _ in poison:
        producer.produce(topics.predictions, value=payload)
    orphan = b'{"event_id":"never-predicted","model_id":"m","ts":9,"label":1.0}'
    assert decode_labels([orphan], schemas)[1] == []
    producer.produce(topics.labels, value=orphan)
    producer.produce(topics.labels, value=b"{broken label")
    produce_items(producer, good[800:], topics.inputs())
    assert producer.flush(30) == 0

    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topics, group_id, port)
    svc = services(cfg, port, tmp_path / "svc.log")
    n_pred = sum(r == "predictions" for r, _ in good)
    n_lab = sum(r == "labels" for r, _ in good)
    expect_rejected = len(poison) + 1

    def done() -> bool:
        c = svc.processed()
        return c["predictions"] == n_pred and c["labels"] == n_lab + 1 and c["rejected"] == expect_rejected

    svc.wait_for(done, 60, "valid events processed, poison rejected")
    svc.wait_for(lambda: svc.ready() is True, 15, "ready")
    before = svc.metrics()

    # Exactly one dead letter per poison message: original bytes, reason, source topic/partition/offset.
    dlq = dead_letters(kafka_bootstrap, topics.dlq)
    assert len(dlq) == expect_rejected
    by_reason: dict[str, int] = defaultdict(int)
    for m in dlq:
        h = header_dict(m)
        by_reason[h["reason"]] += 1
        assert h["source_topic"] in (topics.predictions, topics.labels) and h["source_partition"] == "0"
        src = read_topic_at(kafka_bootstrap, h["source_topic"], int(h["source_offset"]))
        assert src == m.value()  # unchanged bytes
    expected: dict[str, int] = defaultdict(int)
    for _, reason in poison:
        expected[reason] += 1
    expected["malformed_json"] += 1  # the broken label
    assert dict(by_reason) == dict(expected)
    for reason, count in expected.items():
        assert before[("stream_monitor_events_rejected_total", (("reason", reason),))] == count

    # 10k messages naming random models: counted, dead-lettered, and not one new metric series.
    for i in range(10_000):
        producer.produce(
            topics.predictions,
            value=valid.replace(b'"model_id":"m"', f'"model_id":"rnd-{i}-{time.time_ns()}"'.encode()),
        )
    assert producer.flush(30) == 0
    svc.wait_for(
        lambda: svc.processed()["rejected"] == expect_rejected + 10_000, 60, "random models rejected"
    )
    # /state counts a batch before its rejections reach the counters (same batch, a moment later).
    unknown = ("stream_monitor_events_rejected_total", (("reason", "unknown_model"),))
    svc.wait_for(lambda: svc.metrics().get(unknown) == 10_001, 60, "unknown_model counted")
    after = svc.metrics()
    assert set(after) == set(before)
    assert after[unknown] == 10_001
    assert svc.alive()
    # Offsets advance past every poison message: the committed offsets reach the end.
    svc.wait_for(
        lambda: (
            committed(kafka_bootstrap, group_id, topics.predictions, 1)
            == end_offsets(kafka_bootstrap, topics.predictions, 1)
        ),
        20,
        "committed offsets at the end",
    )
    assert svc.terminate() == 0


def read_topic_at(bootstrap: str, topic: str, offset: int) -> bytes | None:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "peek", "enable.auto.commit": "false"})
    try:
        c.assign([TopicPartition(topic, 0, offset)])
        for _ in range(50):
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                return m.value()
        raise AssertionError(f"no message at {topic}@{offset}")
    finally:
        c.close()


def _produce_in_background(
    producer: Any, topics: ServiceTopics, items: list[Any], rate: float
) -> threading.Thread:
    t = threading.Thread(
        target=produce_items,
        args=(producer, items, topics.inputs()),
        kwargs={"key_field": "event_id", "rate": rate},
        daemon=True,
    )
    t.start()
    return t


def _trigger_index(found: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in found:
        out[t["trigger_id"]].append(t)
    return out


def _assigned_at(log: str) -> list[float]:
    return [float(m) for m in re.findall(r"restored \d+ of \d+ task\(s\) from \S+ in ([0-9.]+)s", log)]


class _Feeder(threading.Thread):
    """Produces items at ``rate`` predictions/s until they run out or :meth:`finish` is called, so a
    test that needs traffic while something happens (a crash point to fire) gets it however slow
    the machine is; :attr:`sent` says how many of each role went out."""

    def __init__(self, producer: Any, topics: ServiceTopics, items: list[Any], rate: float) -> None:
        super().__init__(daemon=True)
        self.producer, self.topics, self.items, self.rate = producer, topics.inputs(), items, rate
        self.sent = {"predictions": 0, "labels": 0}
        self._done = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        for role, event in self.items:
            if self._done.is_set():
                break
            if role == "predictions":
                ahead = self.sent["predictions"] / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    self._done.wait(ahead)  # pacing the producer, not waiting for a result
            self.producer.produce(
                self.topics[role], value=orjson.dumps(event), key=event["event_id"].encode()
            )
            self.producer.poll(0)
            self.sent[role] += 1
        self.producer.flush(30)

    def finish(self) -> dict[str, int]:
        self._done.set()
        self.join(60)
        assert not self.is_alive()
        return dict(self.sent)


def test_kill9_at_several_points_then_restart_matches_uninterrupted_run(
    kafka_bootstrap: str,
    topic_factory: Any,
    group_id: str,
    producer_factory: Any,
    services: Any,
    tmp_path: Path,
) -> None:
    inputs = ServiceTopics.create(topic_factory)
    # Far more input than the test needs: the feeder runs until every crash point has fired (on a busy
    # machine each restart takes longer, and a crash point needs traffic to fire), then stops.
    feeder = _Feeder(producer_factory(), inputs, synthetic(60_000, drift_after=2200, seed=5), rate=400)
    feeder.start()

    interrupted = ServiceTopics(
        inputs.predictions, inputs.labels, inputs.triggers + "-i", inputs.dlq + "-i", inputs.state + "-i"
    )
    port = free_port()
    # Static membership: a restarted member takes its partitions back at once instead of waiting for
    # the killed one's session to expire.
    cfg = write_config(
        tmp_path / "i.yaml",
        kafka_bootstrap,
        interrupted,
        group_id + "-i",
        port,
        consumer={"group.instance.id": "member-1"},
    )
    log = tmp_path / "i.log"
    recoveries: list[float] = []
    # Killed by fault injection at exact places, then by an external SIGKILL at an arbitrary moment.
    for crash in ("after_trigger:1", "after_state:2", "before_commit:2", "external", None):
        env = {} if crash in (None, "external") else {"SM_FAULT_CRASH_AT": crash}
        started = time.monotonic()
        svc = services(cfg, port, log, env)
        svc.wait_for(lambda s=svc: s.ready() is True or not s.alive(), 120, f"ready (run before {crash})")
        recoveries.append(time.monotonic() - started)
        if crash == "external":
            # Somewhere in the middle of processing: once this run has moved its counts on.
            before = sum(svc.processed().values())
            svc.wait_for(lambda s=svc, b=before: sum(s.processed().values()) > b, 120, "progress")
            svc.kill9()
        elif crash is not None:
            assert svc.proc is not None
            # Generous: the feeder keeps traffic coming until the crash point fires.
            assert svc.proc.wait(240) == -9, f"fault injection at {crash} did not fire"
    sent = feeder.finish()
    n_predictions, n_labels = sent["predictions"], sent["labels"]

    def all_done(s: ServiceProcess) -> bool:
        done = s.processed()
        return done["predictions"] >= n_predictions and done["labels"] >= n_labels

    svc.wait_for(lambda: all_done(svc), 180, "all events after the restarts")
    final_counts = svc.processed()
    assert svc.terminate() == 0

    # The uninterrupted run on the same input.
    clean = ServiceTopics(
        inputs.predictions, inputs.labels, inputs.triggers + "-u", inputs.dlq + "-u", inputs.state + "-u"
    )
    port_u = free_port()
    cfg_u = write_config(tmp_path / "u.yaml", kafka_bootstrap, clean, group_id + "-u", port_u)
    svc_u = services(cfg_u, port_u, tmp_path / "u.log")
    svc_u.wait_for(lambda: all_done(svc_u), 180, "uninterrupted run done")
    expected = {"predictions": n_predictions, "labels": n_labels, "rejected": 0}
    assert svc_u.processed() == final_counts == expected
    assert svc_u.terminate() == 0

    ref = _trigger_index(triggers(kafka_bootstrap, clean.triggers))
    got = _trigger_index(triggers(kafka_bootstrap, interrupted.triggers))
    assert ref, "the drifting stream must trigger"
    assert set(ref) <= set(got), f"missing trigger ids after kill -9: {set(ref) - set(got)}"
    assert all(len(v) == 1 for v in ref.values())
    for tid, copies in got.items():  # at-least-once duplicates are the same decision, same id
        same = [{k: v for k, v in t.items() if k != "emitted_at"} for t in copies]
        assert all(s == same[0] for s in same), tid
        if tid in ref:
            # The decision is the same; its label evidence may differ, because how far the labels
            # topic had been read when the window closed depends on fetch timing, not on offsets.
            decision = ("model_id", "kind", "severity", "event_time", "model_version")
            assert {k: same[0][k] for k in decision} == {k: ref[tid][0][k] for k in decision}
    restores = _assigned_at(svc.log())
    print(
        f"\nkill -9 recovery: process start -> ready {[round(r, 2) for r in recoveries]} s; "
        f"state restore {[round(r, 3) for r in restores]} s; duplicates "
        f"{sum(len(v) - 1 for v in got.values())}"
    )


def test_second_member_joins_then_leaves_state_moves_without_duplicates(
    kafka_bootstrap: str,
    topic_factory: Any,
    group_id: str,
    producer_factory: Any,
    services: Any,
    tmp_path: Path,
) -> None:
    topics = ServiceTopics.create(topic_factory)
    n = 8000
    feeder = _produce_in_background(
        producer_factory(), topics, synthetic(n, drift_after=3000, seed=7), rate=1200
    )
    port_a, port_b = free_port(), free_port()
    a = services(
        write_config(tmp_path / "a.yaml", kafka_bootstrap, topics, group_id, port_a),
        port_a,
        tmp_path / "a.log",
    )
    a.wait_for(lambda: a.processed()["predictions"] >= 1000, 60, "A processing")
    b = services(
        write_config(tmp_path / "b.yaml", kafka_bootstrap, topics, group_id, port_b),
        port_b,
        tmp_path / "b.log",
    )
    b.wait_for(lambda: len(b.state()["tasks"]) == 1 and len(a.state()["tasks"]) == 1, 60, "split 1/1")
    b.wait_for(lambda: b.processed()["predictions"] > 0, 30, "B processing")
    (moved,) = (int(p) for p in b.state()["tasks"])
    # B took over exactly the state A checkpointed when it gave the partition up.
    revoked = re.findall(r"revoked partitions \[.*?\].*?state digests (\{.*?\})", a.log())
    a_digests = ast.literal_eval(revoked[0])
    assert b.state()["tasks"][str(moved)]["restored_digest"] == a_digests[moved]
    assert b.terminate() == 0  # leaves: A gets the partition back
    feeder.join(60)
    a.wait_for(lambda: len(a.state()["tasks"]) == 2, 60, "A owns both again")
    b_final = re.findall(r"revoked partitions \[.*?\].*?state digests (\{.*?\})", b.log())
    assert a.state()["tasks"][str(moved)]["restored_digest"] == ast.literal_eval(b_final[-1])[moved]
    a.wait_for(lambda: _processed_all(a, n), 60, "A processed everything")
    assert a.processed() == {"predictions": n, "labels": n, "rejected": 0}
    assert a.terminate() == 0
    found = triggers(kafka_bootstrap, topics.triggers)
    assert found
    ids = [t["trigger_id"] for t in found]
    assert len(ids) == len(set(ids)), "a rebalance with checkpoint-on-revoke must not duplicate triggers"
    pause = _rebalance_pause(a.log())
    print(f"\nrebalance pause (A: revoke -> assigned again): {pause}")


def _rebalance_pause(log: str) -> list[float]:
    """Seconds between each 'revoked' log line and the next 'assigned' line."""
    stamps = []
    for line in log.splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*?(revoked|assigned) partitions", line)
        if m:
            t = time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%d %H:%M:%S")) + int(m.group(1)[20:]) / 1000
            stamps.append((m.group(2), t))
    return [
        round(t2 - t1, 3)
        for (k1, t1), (k2, t2) in itertools.pairwise(stamps)
        if k1 == "revoked" and k2 == "assigned"
    ]


def test_broker_down_30s_service_survives_and_readiness_flips(
    kafka_broker: KafkaBroker,
    kafka_bootstrap: str,
    topic_factory: Any,
    group_id: str,
    producer_factory: Any,
    services: Any,
    tmp_path: Path,
) -> None:
    if not kafka_broker.controllable:
        pytest.skip("the broker is external (KAFKA_BOOTSTRAP_SERVERS without STREAM_MONITOR_KAFKA_DIR)")
    topics = ServiceTopics.create(topic_factory)
    first = synthetic(2000, drift_after=None, seed=11)
    produce(producer_factory(), topics, first)
    port = free_port()
    svc = services(
        write_config(tmp_path / "c.yaml", kafka_bootstrap, topics, group_id, port), port, tmp_path / "svc.log"
    )
    svc.wait_for(lambda: _processed_all(svc, 2000), 60, "first part processed")
    svc.wait_for(lambda: svc.ready() is True, 15, "ready")
    stopped = time.monotonic()
    kafka_broker.stop()
    try:
        svc.wait_for(lambda: svc.ready() is False, 30, "readiness false while the broker is down")
        time.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
        assert svc.alive()
    finally:
        kafka_broker.start()
    svc.wait_for(lambda: svc.ready() is True, 90, "ready again after the broker is back")
    more = synthetic(2000, drift_after=None, seed=12, prefix="late")
    produce(producer_factory(), topics, more)
    svc.wait_for(lambda: _processed_all(svc, 4000), 60, "resumed after the outage")
    processed = ("stream_monitor_events_processed_total", (("model", MODEL), ("stream", "predictions")))
    # The counter follows /state within the same batch: wait for it, then it must be exact.
    svc.wait_for(lambda: svc.metrics().get(processed, 0) >= 4000, 60, "counter caught up")
    assert svc.metrics()[processed] == 4000
    assert svc.terminate() == 0


def test_state_record_roundtrip_and_dlq_headers() -> None:
    from stream_monitor.errors import StateError
    from stream_monitor.kafka.clients import dlq_headers
    from stream_monitor.kafka.state import StateRecord, record_offsets

    rec = StateRecord("g", 1, {"predictions": 10, "labels": 4}, {"predictions": 9}, orjson.dumps({"a": 1}))
    data = bytearray(rec.encode())
    assert StateRecord.decode(bytes(data)).offsets == {"predictions": 10, "labels": 4}
    data[-1] ^= 0xFF
    with pytest.raises(StateError, match=r"corrupt|digest"):
        StateRecord.decode(bytes(data))
    # A record of format 1 (JSON header line, then the compressed JSON/base64/pickle snapshot).
    old = _old_format_record("g", 1, {"predictions": 10, "labels": 4})
    with pytest.raises(StateError, match=r"format 1 .* older stream-monitor"):
        StateRecord.decode(old)
    assert record_offsets(old) == record_offsets(rec.encode()) == {"predictions": 10, "labels": 4}
    assert record_offsets(b"garbage") is None
    assert dict(dlq_headers("unknown_model", "t", 2, 7)) == {
        "reason": b"unknown_model",
        "source_topic": b"t",
        "source_partition": b"2",
        "source_offset": b"7",
    }


def _old_format_record(group: str, partition: int, offsets: dict[str, int]) -> bytes:
    """What stream-monitor wrote before the one state format: a JSON header line and the compressed
    JSON snapshot whose detector and performance parts were base64'd pickles."""
    header = {"format": 1, "group": group, "partition": partition, "offsets": offsets, "counts": {}}
    snapshot = orjson.dumps({"format": 1, "monitors": {MODEL: "gASVAAAAAAAAAAB9lC4="}})
    return orjson.dumps({**header, "digest": "0" * 16, "created_at": 0.0}) + b"\n" + zlib.compress(snapshot)


def test_a_state_record_of_the_old_format_starts_its_task_fresh_at_its_offsets(
    kafka_bootstrap: str,
    topic_factory: Any,
    group_id: str,
    producer_factory: Any,
    services: Any,
    tmp_path: Path,
) -> None:
    """After an upgrade, a record this version cannot restore is not fatal: one error naming the
    partition, the task starts with fresh state where the record's state ended, no crash loop, and
    its next checkpoint is of the new format."""
    from stream_monitor.kafka.state import StateRecord, read_latest, state_key

    topics = ServiceTopics.create(topic_factory)
    items = synthetic(3000, drift_after=None, seed=9)
    produce(producer_factory(), topics, items)
    n_predictions = sum(1 for role, _ in items if role == "predictions")
    n_labels = len(items) - n_predictions
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topics, group_id, port)
    first = services(cfg, port, tmp_path / "first.log")
    first.wait_for(
        lambda: first.processed()["predictions"] >= n_predictions and first.processed()["labels"] >= n_labels,
        120,
        "first run done",
    )
    assert first.terminate() == 0  # checkpoints both partition-tasks on the way out

    ends = {role: end_offsets(kafka_bootstrap, t, 2)[0] for role, t in topics.inputs().items()}
    assert ends["predictions"] > 200 and ends["labels"] > 20
    resume = {"predictions": ends["predictions"] - 200, "labels": ends["labels"] - 20}
    producer = producer_factory()
    producer.produce(topics.state, key=state_key(group_id, 0), value=_old_format_record(group_id, 0, resume))
    assert producer.flush(30) == 0

    second = services(cfg, port, tmp_path / "second.log")
    second.wait_for(lambda: second.ready() is True, 120, "ready after the old record")
    second.wait_for(
        lambda: second.state()["tasks"]["0"]["offsets"] == {r: ends[r] for r in ("predictions", "labels")},
        60,
        "partition 0 replayed from the old record's offsets",
    )
    tasks = second.state()["tasks"]
    # Fresh state that saw exactly the inputs after the old record's offsets; partition 1 restored.
    counts = tasks["0"]["counts"]
    assert (counts["predictions"], counts["labels"]) == (200, 20)
    assert tasks["0"]["restored_digest"] is None and tasks["1"]["restored_digest"] is not None
    errors = [line for line in second.log().splitlines() if "cannot be restored" in line]
    assert len(errors) == 1 and "partition-task 0" in errors[0] and "format 1" in errors[0], errors
    assert str(resume) in errors[0]
    assert second.terminate() == 0

    key = state_key(group_id, 0)
    record = StateRecord.decode(read_latest({"bootstrap.servers": kafka_bootstrap}, topics.state, [key])[key])
    assert record.offsets == {r: ends[r] for r in ("predictions", "labels")}


def test_exactly_once_mode_commits_offsets_in_the_transaction(
    kafka_bootstrap: str,
    topic_factory: Any,
    group_id: str,
    producer_factory: Any,
    services: Any,
    tmp_path: Path,
) -> None:
    topics = ServiceTopics.create(topic_factory)
    n = 4000
    produce(producer_factory(), topics, synthetic(n, drift_after=2000, seed=13))
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topics, group_id, port, exactly_once=True)
    svc = services(cfg, port, tmp_path / "svc.log")
    svc.wait_for(lambda: _processed_all(svc, n), 60, "all events processed")
    for topic in (topics.predictions, topics.labels):
        svc.wait_for(
            lambda t=topic: committed(kafka_bootstrap, group_id, t, 2) == end_offsets(kafka_bootstrap, t, 2),
            20,
            "offsets committed through the transaction",
        )
    assert svc.terminate() == 0
    fired = triggers(kafka_bootstrap, topics.triggers)  # read_committed: only committed transactions
    ids = [t["trigger_id"] for t in fired]
    assert ids and len(ids) == len(set(ids))
