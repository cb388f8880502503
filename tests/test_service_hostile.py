"""Hostile input and faults against the real broker (issue 10): deterministic decisions whatever the
batching, event time that one message cannot hijack, label metrics that agree with ``/state``.

Every test runs ``stream-monitor run`` as a subprocess on fresh topics and a fresh group (see
service_fixtures). Deadlines are generous (they bound a failure, they do not pace the test).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from service_fixtures import (
    MODEL,
    ServiceProcess,
    ServiceTopics,
    dead_letters,
    free_port,
    produce,
    synthetic,
    triggers,
    write_config,
)

from stream_monitor.kafka.clients import header_dict

pytestmark = pytest.mark.kafka

# On a busy machine a first fetch can take seconds; the tests must never depend on the bounded wait.
PATIENT = {"sync_max_idle_seconds": 120}


def _outputs(topics: ServiceTopics, run: str) -> ServiceTopics:
    """The same input topics, with this run's own output topics."""
    return dataclasses.replace(
        topics,
        triggers=f"{topics.triggers}-{run}",
        dlq=f"{topics.dlq}-{run}",
        state=f"{topics.state}-{run}",
    )


def _done(svc: ServiceProcess, predictions: int, labels: int) -> bool:
    done = svc.processed()
    return done["predictions"] + done["rejected"] >= predictions and done["labels"] >= labels


def _comparable(trigger: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in trigger.items() if k != "emitted_at"}, option=orjson.OPT_SORT_KEYS)


def test_same_input_same_triggers_whatever_the_batching(
    kafka_bootstrap: str,
    topic_factory: Any,
    group_id: str,
    producer_factory: Any,
    services: Any,
    tmp_path: Path,
) -> None:
    """Three runs over one input with very different consume batches and poll timings emit equal
    triggers, field by field except ``emitted_at`` (point 3)."""
    topics = ServiceTopics.create(topic_factory, partitions=2)
    items = synthetic(6000, drift_after=3000)
    n_predictions = sum(1 for role, _ in items if role == "predictions")
    n_labels = len(items) - n_predictions
    produce(producer_factory(), topics, items)
    results = {}
    for run, (batch, timeout) in {"small": (37, 0.05), "medium": (500, 0.2), "large": (5000, 1.0)}.items():
        port = free_port()
        run_topics = _outputs(topics, run)
        cfg = write_config(
            tmp_path / f"{run}.yaml",
            kafka_bootstrap,
            run_topics,
            f"{group_id}-{run}",
            port,
            kafka_extra={"batch_size": batch, "batch_timeout_seconds": timeout, **PATIENT},
        )
        svc = services(cfg, port, tmp_path / f"{run}.log")
        svc.wait_for(lambda s=svc: _done(s, n_predictions, n_labels), 180, f"{run}: everything processed")
        state = svc.state()
        assert all(t["forced_releases"] == 0 for t in state["tasks"].values()), state
        assert svc.terminate() == 0, svc.log()[-3000:]
        results[run] = sorted(_comparable(t) for t in triggers(kafka_bootstrap, run_topics.triggers))
    assert results["small"], "the drift at event 3000 must trigger"
    # Evidence (labels joined / pending) depends on the interleaving: it must be equal too.
    assert any(b'"labels_joined"' in t for t in results["small"])
    assert results["small"] == results["medium"] == results["large"]


def _event(i: int, ts: Any, prefix: str = "e") -> dict[str, Any]:
    return {
        "event_id": f"{prefix}{i}",
        "model_id": MODEL,
        "ts": ts,
        "features": {"x": (i % 17) / 17.0, "y": (i % 5) / 5.0, "c": "abc"[i % 3]},
        "prediction": 10.0 + (i % 7) / 7.0,
    }


def _label(i: int, ts: float, prefix: str = "e") -> dict[str, Any]:
    return {"event_id": f"{prefix}{i}", "model_id": MODEL, "ts": ts, "label": 10.0}


def _stream(prefix: str, start: int, n: int, poison: bool) -> list[tuple[str, dict[str, Any]]]:
    """``n`` valid predictions one second apart, each followed by its label 5 s later; with
    ``poison``, a far-future and a far-past prediction in the middle (no labels for them)."""
    base = 1_735_689_600.0 + start
    items: list[tuple[str, dict[str, Any]]] = []
    for i in range(n):
        items.append(("predictions", _event(i, base + i, prefix)))
        if poison and i == n // 2:
            items.append(("predictions", _event(10**6, "9999-12-31T23:59:59Z", prefix)))
            items.append(("predictions", _event(10**6 + 1, "1990-01-01T00:00:00Z", prefix)))
        if i >= 5:
            items.append(("labels", _label(i - 5, base + i, prefix)))
    items += [("labels", _label(i, base + n + 5, prefix)) for i in range(max(0, n - 5), n)]
    return items


def _joined(svc: ServiceProcess) -> int:
    return sum(t["labels"][MODEL]["joined"] for t in svc.state()["tasks"].values())


def test_far_future_and_far_past_timestamps_do_not_move_the_clock(
    kafka_bootstrap: str,
    topic_factory: Any,
    group_id: str,
    producer_factory: Any,
    services: Any,
    tmp_path: Path,
) -> None:
    """A prediction stamped 9999-12-31 is dead-lettered as ts_out_of_bounds and a 1990 one is only
    late; every valid label still joins, before and after a restart (point 2)."""
    topics = ServiceTopics.create(topic_factory, partitions=1)
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topics, group_id, port, kafka_extra=PATIENT)
    n = 1500
    produce(producer_factory(), topics, _stream("a", 0, n, poison=True))
    svc = services(cfg, port, tmp_path / "run1.log")
    svc.wait_for(lambda: _done(svc, n + 2, n), 120, "first part processed")
    svc.wait_for(lambda: _joined(svc) == n, 60, f"all {n} valid labels joined")
    dead = dead_letters(kafka_bootstrap, topics.dlq)
    reasons = [header_dict(m).get("reason") for m in dead]
    assert reasons == ["ts_out_of_bounds"], reasons
    assert orjson.loads(dead[0].value())["ts"] == "9999-12-31T23:59:59Z"
    state = svc.state()["tasks"]["0"]
    assert state["labels"][MODEL]["expired"] <= 1  # at most the 1990 prediction, never the valid ones
    assert svc.terminate() == 0, svc.log()[-3000:]

    # After a restart (state restored from the changelog), the clock is still sane.
    produce(producer_factory(), topics, _stream("b", n + 10, n, poison=True))
    again = services(cfg, port, tmp_path / "run2.log")
    again.wait_for(lambda: _done(again, 2 * (n + 2), 2 * n), 120, "second part processed")
    again.wait_for(lambda: _joined(again) == 2 * n, 60, f"all {2 * n} valid labels joined")
    reasons = [header_dict(m).get("reason") for m in dead_letters(kafka_bootstrap, topics.dlq)]
    assert reasons == ["ts_out_of_bounds", "ts_out_of_bounds"], reasons
    assert (
        again.metrics()[("stream_monitor_events_rejected_total", (("reason", "ts_out_of_bounds"),))] == 1
    ), "the restarted member counts only its own rejection"


def test_label_metrics_agree_with_state(
    kafka_bootstrap: str,
    topic_factory: Any,
    group_id: str,
    producer_factory: Any,
    services: Any,
    tmp_path: Path,
) -> None:
    """Labels are counted as processed events; the label-join gauges are the sums over the member's
    partition-tasks of what ``/state`` reports, updated every batch (point 4)."""
    topics = ServiceTopics.create(topic_factory, partitions=2)
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topics, group_id, port, kafka_extra=PATIENT)
    items = synthetic(3000, drift_after=None)
    # Orphans: labels of predictions that never come.
    items += [("labels", _label(i, 1_735_689_600.0 + 3000 + i, "ghost")) for i in range(400)]
    n_predictions = sum(1 for role, _ in items if role == "predictions")
    n_labels = len(items) - n_predictions
    produce(producer_factory(), topics, items)
    svc = services(cfg, port, tmp_path / "run.log")
    svc.wait_for(lambda: _done(svc, n_predictions, n_labels), 120, "everything processed")

    def agree() -> bool:
        state = svc.state()["tasks"].values()
        metrics = svc.metrics()
        model = (("model", MODEL),)
        sums = {k: sum(t["labels"][MODEL][k] for t in state) for k in ("pending", "orphan", "expired")}
        processed = sum(t["counts"]["labels"] for t in state)
        return (
            sums["orphan"] >= 400
            and metrics[("stream_monitor_labels_orphan", model)] == sums["orphan"]
            and metrics[("stream_monitor_labels_pending", model)] == sums["pending"]
            and metrics[("stream_monitor_labels_expired", model)] == sums["expired"]
            and metrics[("stream_monitor_events_processed_total", (*model, ("stream", "labels")))]
            == processed
            == n_labels
        )

    svc.wait_for(agree, 30, "label gauges equal the sums of /state")


# A stand-in for a decoder bug: the real decoder refuses lone surrogates, so to prove that an input
# which slips through and makes the state unstorable cannot stop the service, this run's decoder
# turns the categorical value "poison" into one (a str that orjson cannot serialise).
_LEAKY_DECODER = """
import sys
import stream_monitor.core.engine as pipeline
real = pipeline.decode_predictions
def leaky(*args, **kwargs):
    batches, rejections = real(*args, **kwargs)
    for batch in batches.values():
        for column in batch.categorical:
            column[:] = ["\\udc80poison" if v == "poison" else v for v in column]
    return batches, rejections
pipeline.decode_predictions = leaky
from stream_monitor.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_input_that_makes_state_unstorable_is_dead_lettered_and_the_service_goes_on(
    kafka_bootstrap: str,
    topic_factory: Any,
    group_id: str,
    producer_factory: Any,
    tmp_path: Path,
) -> None:
    """Point 1: a checkpoint that cannot serialise a task's state does not kill the process (which
    would re-read the input and crash again, for ever): the task rewinds to its last checkpoint,
    replays carefully, dead-letters the one input at fault as unstorable_state and goes on."""
    topics = ServiceTopics.create(topic_factory, partitions=1)
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topics, group_id, port, kafka_extra=PATIENT)
    n = 3000
    items = _stream("u", 0, n, poison=False)
    poisoned = 0
    for role, event in items:
        if role == "predictions" and event["event_id"] == "u2000":
            event["features"]["c"] = "poison"
            poisoned += 1
    assert poisoned == 1
    produce(producer_factory(), topics, items)
    svc = ServiceProcess(cfg, port, tmp_path / "run.log")
    svc.command = [sys.executable, "-c", _LEAKY_DECODER, "run", "--config", str(cfg)]
    svc.start()
    try:
        # Predictions processed + rejected reach n only once the careful replay is past the poison.
        svc.wait_for(lambda: _done(svc, n, n), 120, "everything processed despite the unstorable input")
        dead = dead_letters(kafka_bootstrap, topics.dlq)
        assert [header_dict(m).get("reason") for m in dead] == ["unstorable_state"]
        assert orjson.loads(dead[0].value())["event_id"] == "u2000"
        state = svc.state()["tasks"]["0"]
        assert state["counts"]["predictions"] == n - 1 and state["counts"]["rejected"] == 1
        # Every other label still joined: the rewind lost nothing.
        svc.wait_for(lambda: _joined(svc) == n - 1, 60, "all other labels joined")
        assert svc.metrics()[("stream_monitor_checkpoints_total", (("outcome", "unstorable"),))] >= 1
        assert svc.terminate() == 0, svc.log()[-3000:]
        assert "dead-lettered as unstorable_state" in svc.log()
    finally:
        svc.stop()


def test_dead_letters_keep_the_original_headers_under_a_prefix(
    kafka_bootstrap: str,
    topic_factory: Any,
    group_id: str,
    producer_factory: Any,
    services: Any,
    tmp_path: Path,
) -> None:
    """Point 5: the DLQ keeps the input's headers, renamed ``original.<name>``, so a producer's own
    ``reason`` header cannot pass for ours; schema-true rejections arrive with their own reasons."""
    topics = ServiceTopics.create(topic_factory, partitions=1)
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topics, group_id, port, kafka_extra=PATIENT)
    valid = orjson.dumps(_event(1, 1_735_689_600.0))
    hostile = [
        (b"{oops", [("reason", b"all good"), ("trace-id", b"t-1")], "malformed_json"),
        (valid.replace(b'"model_id"', b'"ts":1,"model_id"'), [], "duplicate_key"),
        (valid.replace(b'"e1"', b'"' + b"e" * 10_000 + b'"'), [("trace-id", b"t-3")], "too_long:event_id"),
    ]
    producer = producer_factory()
    for value, headers, _ in hostile:
        producer.produce(topics.predictions, value=value, headers=headers)
    producer.produce(topics.predictions, value=valid)
    producer.flush(30)
    svc = services(cfg, port, tmp_path / "run.log")
    svc.wait_for(lambda: _done(svc, len(hostile) + 1, 0), 120, "all processed")
    dead = dead_letters(kafka_bootstrap, topics.dlq)
    assert [header_dict(m)["reason"] for m in dead] == [reason for _, _, reason in hostile]
    for m, (value, headers, _) in zip(dead, hostile, strict=True):
        got = m.headers() or []
        assert [name for name, _ in got[:4]] == [
            "reason",
            "source_topic",
            "source_partition",
            "source_offset",
        ]
        assert got[4:] == [(f"original.{name}", v) for name, v in headers]
        assert m.value() == value
