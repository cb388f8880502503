"""Two-stage aggregation, in process: the merge of shards' partials is exact.

The oracle is the same events through one shard (``InProcessTwoStage``, what ``replay`` runs); the
subject is the events split over k shards by any assignment of event ids, each shard replayed on its
own, and all their reports handed to one model stage in any interleaving that keeps each shard's
order (as a Kafka partition does). Both must judge the same windows with the same statistics and
emit the same triggers, once.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_monitor.core.engine import EngineOutput, InProcessTwoStage, MonitoringEngine
from stream_monitor.core.events import decode_predictions
from stream_monitor.core.model_stage import ModelStage
from stream_monitor.core.partials import AUC_BINS, PerformanceStats, ShardReport
from stream_monitor.core.performance import RollingPerformance
from stream_monitor.core.policy import WindowEvaluation
from stream_monitor.core.quality import binary_auc
from stream_monitor.core.reference import ReferenceProfile, build_reference
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import AggregationSettings, ModelSettings, PolicySettings, WindowSettings
from stream_monitor.core.triggers import Trigger
from stream_monitor.errors import StateError
from stream_monitor.offline.demo_data import SyntheticStream
from stream_monitor.offline.replay import label_heap, replay

TWO = AggregationSettings(mode="two_stage")
RATE = 10.0  # events per second of event time
WINDOW = 400.0  # seconds: 4,000 events a window


def _setup(n: int = 40_000, drift_at: int = 24_000) -> tuple[SyntheticStream, ModelSchema, ReferenceProfile]:
    stream = SyntheticStream(
        n=n,
        rate=RATE,
        drift_at=drift_at,
        mean_shift={"x0": 1.5},
        label_fraction=0.5,
        label_delay=30.0,
        seed=3,
    )
    schema = ModelSchema(stream.model_id, "binary", stream.schema_features(("x0", "x1", "c0")))
    train = SyntheticStream(n=20_000, rate=RATE, model_id=stream.model_id, seed=1003)
    raws, _ = train.raw()
    decoded, _ = decode_predictions(raws, {schema.model_id: schema})
    reference = build_reference(schema, decoded[schema.model_id], train.columns()["y"].astype(float))
    return stream, schema, reference


STREAM, SCHEMA, REFERENCE = _setup()
MODEL = SCHEMA.model_id
SETTINGS = ModelSettings(
    window=WindowSettings(kind="time", width=WINDOW, allowed_lateness=0.0),
    performance_window=2000,
    policy=PolicySettings(cooldown_seconds=0.0),
)
PREDICTIONS, LABELS = STREAM.raw()


def _engine(kind: type[MonitoringEngine], **kwargs: Any) -> MonitoringEngine:
    return kind({MODEL: SCHEMA}, {MODEL: SETTINGS}, {MODEL: REFERENCE}, aggregation=TWO, **kwargs)


def _chunks(raws: list[bytes], size: int = 3000) -> list[list[bytes]]:
    return [raws[i : i + size] for i in range(0, len(raws), size)]


def one_process() -> tuple[list[WindowEvaluation], list[Trigger]]:
    engine = _engine(InProcessTwoStage)
    outputs: list[EngineOutput] = []
    replay(engine, _chunks(PREDICTIONS), label_heap(LABELS), on_output=lambda o, _s: outputs.append(o))
    return [e for o in outputs for m in o.per_model.values() for e in m.evaluations], [
        t for o in outputs for t in o.triggers
    ]


def _reports_of(engine: MonitoringEngine, predictions: list[bytes], labels: list[bytes]) -> list[ShardReport]:
    outputs: list[EngineOutput] = []
    replay(engine, _chunks(predictions), label_heap(labels), on_output=lambda o, _s: outputs.append(o))
    return [r for out in outputs for r in out.reports]


def shard_reports(shards: int, shard_of: list[int]) -> list[list[ShardReport]]:
    """Each shard's reports, in the order it sent them, when event ``i`` goes to ``shard_of[i]``."""
    by_id = {orjson.loads(raw)["event_id"]: shard_of[i] for i, raw in enumerate(PREDICTIONS)}
    sent: list[list[ShardReport]] = []
    for s in range(shards):
        engine = _engine(MonitoringEngine, shard=s, shards=shards)
        mine = [raw for raw in PREDICTIONS if by_id[orjson.loads(raw)["event_id"]] == s]
        labels = [raw for raw in LABELS if by_id[orjson.loads(raw)["event_id"]] == s]
        sent.append(_reports_of(engine, mine, labels))
    return sent


def judged(
    sent: list[list[ShardReport]], order: list[int], encode: bool = True
) -> tuple[list[WindowEvaluation], list[Trigger], ModelStage]:
    """Hand the reports to one model stage, taking the next report of shard ``order[k]`` at step k
    (through their wire format), then whatever is left shard by shard."""
    stage = ModelStage({MODEL: SCHEMA}, {MODEL: SETTINGS}, {MODEL: REFERENCE}, {}, TWO)
    queues = [list(reports) for reports in sent]
    sequence = [queues[s].pop(0) for s in order if queues[s]] + [r for q in queues for r in q]
    evaluations: list[WindowEvaluation] = []
    triggers: list[Trigger] = []
    stats = {MODEL: PerformanceStats("binary")}
    for report in sequence:
        if encode:
            report = ShardReport.decode(report.encode(), {MODEL: SCHEMA}, {MODEL: REFERENCE}, stats)
        for out in stage.process([report], wall_now=None).values():
            evaluations += out.evaluations
            triggers += out.triggers
    return evaluations, triggers, stage


def _rounded(value: float | None) -> float | None:
    return None if value is None or value != value else round(value, 9)


def statistics(ev: WindowEvaluation) -> tuple[Any, ...]:
    results = tuple(
        (r.detector, r.feature, _rounded(r.value), _rounded(r.p_value), r.drift) for r in ev.results
    )
    perf = {k: round(v, 9) for k, v in ev.performance.items() if v == v and k != "auc_error_bound"}
    # The label join's counts as of the window (the policy's "labels are fresh" and the evidence).
    # Not compared: the median delay and the arrival rate (per-shard estimates), and the pending
    # count (it includes the predictions of the batch that passed the window, which depends on
    # where batches end, in one process as on a shard).
    counts = ("joined_total", "expired", "evicted", "orphan", "duplicate")
    labels = {k: ev.labels[k] for k in counts}
    return (ev.index, ev.start, ev.end, ev.events, results, perf, labels)


ORACLE = one_process()


def test_the_one_process_oracle_judges_every_window_and_sees_the_drift() -> None:
    evaluations, triggers = ORACLE
    assert len(evaluations) == math.ceil(STREAM.n / RATE / WINDOW)
    assert sum(e.events for e in evaluations) == STREAM.n
    drift = STREAM.ts_of(24_000)
    assert triggers and all(t.event_time >= drift for t in triggers)
    assert {t.kind for t in triggers} >= {"data_drift"}
    assert all(e.performance["n"] > 0 for e in evaluations[1:])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shards=st.integers(min_value=2, max_value=5),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    order_seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_any_split_over_shards_judges_as_one_process(shards: int, seed: int, order_seed: int) -> None:
    shard_of = np.random.default_rng(seed).integers(0, shards, STREAM.n).tolist()
    sent = shard_reports(shards, shard_of)
    order = np.random.default_rng(order_seed).integers(0, shards, sum(map(len, sent))).tolist()
    evaluations, triggers, stage = judged(sent, order)
    expected_evaluations, expected_triggers = ORACLE
    assert [statistics(e) for e in evaluations] == [statistics(e) for e in expected_evaluations]
    assert [t.trigger_id for t in triggers] == [t.trigger_id for t in expected_triggers]
    assert len({t.trigger_id for t in triggers}) == len(triggers)  # each emitted once
    judge = stage.judges[MODEL]
    assert judge.counts["duplicate"] == judge.counts["late"] == judge.counts["idle_closes"] == 0


def test_a_shard_that_sends_its_reports_again_counts_nothing_twice() -> None:
    sent = shard_reports(3, [i % 3 for i in range(STREAM.n)])
    again = [reports + reports[: len(reports) // 2] for reports in sent]  # a replay after a crash
    evaluations, triggers, stage = judged(again, [0, 1, 2] * 200)
    assert [statistics(e) for e in evaluations] == [statistics(e) for e in ORACLE[0]]
    assert [t.trigger_id for t in triggers] == [t.trigger_id for t in ORACLE[1]]
    counts = stage.judges[MODEL].counts
    assert counts["duplicate"] + counts["late"] == sum(
        len(p.partials) for r in sent for p in r[: len(r) // 2]
    )


def test_a_silent_shard_holds_windows_until_the_idle_timeout() -> None:
    sent = shard_reports(2, [i % 2 for i in range(STREAM.n)])
    aggregation = AggregationSettings(mode="two_stage", shard_idle_timeout_seconds=60.0)
    stage = ModelStage({MODEL: SCHEMA}, {MODEL: SETTINGS}, {MODEL: REFERENCE}, {}, aggregation)
    first = [r for r in sent[0] if math.isfinite(r.progress)][:5]  # shard 1 says nothing
    outputs = stage.process(first, wall_now=1000.0)
    assert not outputs  # every window waits for shard 1
    assert not stage.tick(wall_now=1059.0)
    judged_late = stage.tick(wall_now=1060.0)[MODEL].evaluations
    assert len(judged_late) == 4 and stage.judges[MODEL].counts["idle_closes"] == 4
    # A partial of shard 1 for a window already judged is counted as late, not merged.
    late = [r for r in sent[1] if r.partials][:1]
    stage.process(late, wall_now=1061.0)
    assert stage.judges[MODEL].counts["late"] == 1


def test_the_model_stage_state_round_trips_mid_stream() -> None:
    sent = shard_reports(2, [i % 2 for i in range(STREAM.n)])
    whole, _, _ = judged(sent, [0, 1] * 1000)
    stage = ModelStage({MODEL: SCHEMA}, {MODEL: SETTINGS}, {MODEL: REFERENCE}, {}, TWO)
    sequence = [r for pair in zip(sent[0], sent[1], strict=False) for r in pair]
    sequence += sent[0][len(sent[1]) :] + sent[1][len(sent[0]) :]
    evaluations: list[WindowEvaluation] = []
    for k, report in enumerate(sequence):
        if k % 7 == 3:  # a restart: the stage comes back from its snapshot
            restored = ModelStage({MODEL: SCHEMA}, {MODEL: SETTINGS}, {MODEL: REFERENCE}, {}, TWO)
            restored.restore(stage.snapshot())
            assert restored.snapshot() == stage.snapshot()
            stage = restored
        for out in stage.process([report], wall_now=None).values():
            evaluations += out.evaluations
    assert [statistics(e) for e in evaluations] == [statistics(e) for e in whole]


def test_shard_engine_state_round_trips_and_refuses_another_reference() -> None:
    engine = _engine(MonitoringEngine, shard=1, shards=2)
    replay(engine, _chunks(PREDICTIONS[:9000]), label_heap(LABELS[:3000]))
    blob = engine.snapshot()
    copy = _engine(MonitoringEngine, shard=1, shards=2)
    copy.restore(blob)
    assert copy.snapshot() == blob
    other = build_reference(SCHEMA, decode_predictions(PREDICTIONS[:5000], {MODEL: SCHEMA})[0][MODEL])
    stranger = MonitoringEngine({MODEL: SCHEMA}, {MODEL: SETTINGS}, {MODEL: other}, aggregation=TWO, shard=1)
    with pytest.raises(StateError, match="another reference"):
        stranger.restore(blob)


def test_a_report_is_hostile_input_until_decoded() -> None:
    stats = {MODEL: PerformanceStats("binary")}
    report = shard_reports(1, [0] * STREAM.n)[0][1]
    blob = report.encode()
    for bad in (b"", b"{}", blob[:-5], blob.replace(MODEL.encode(), b"x" * len(MODEL))):
        with pytest.raises(StateError):
            ShardReport.decode(bad, {MODEL: SCHEMA}, {MODEL: REFERENCE}, stats)


# ------------------------------------------------------------------ performance from counts


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=400),
    cut=st.integers(min_value=0, max_value=400),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    threshold=st.sampled_from([0.5, 0.3]),
)
def test_binary_statistics_merge_exactly_and_match_the_rolling_metrics(
    n: int, cut: int, seed: int, threshold: float
) -> None:
    rng = np.random.default_rng(seed)
    score = np.round(rng.uniform(-0.1, 1.1, n), int(rng.integers(1, 6)))  # ties, and outside [0, 1]
    score[rng.random(n) < 0.05] = np.nan
    label = (rng.random(n) < 0.4).astype(float)
    whole = PerformanceStats("binary", decision_threshold=threshold)
    whole.add(score, label)
    left, right = (
        PerformanceStats("binary", decision_threshold=threshold),
        PerformanceStats("binary", decision_threshold=threshold),
    )
    k = min(cut, n)
    left.add(score[:k], label[:k])
    right.add(score[k:], label[k:])
    merged = PerformanceStats.merged([right, left], whole)
    assert merged.n == whole.n and merged.error_n == whole.error_n
    assert (merged.confusion == whole.confusion).all() and (merged.hist == whole.hist).all()
    assert merged.metrics() == pytest.approx(whole.metrics(), nan_ok=True)
    rolling = RollingPerformance("binary", window=n, decision_threshold=threshold)
    rolling.update_arrays(score, label)
    expected, got = rolling.metrics(), whole.metrics()
    for name in ("accuracy", "precision", "recall", "f1"):
        assert got[name] == pytest.approx(expected[name], nan_ok=True), name
    ok = np.isfinite(score)
    exact = binary_auc(score[ok], label[ok] == 1)
    if math.isnan(exact):
        assert math.isnan(got["auc"])
    else:
        assert abs(got["auc"] - exact) <= got["auc_error_bound"] + 1e-12
        assert got["auc_error_bound"] <= 0.5


def test_the_auc_bound_is_small_for_spread_scores() -> None:
    rng = np.random.default_rng(0)
    score = rng.uniform(0, 1, 20_000)
    label = (rng.random(20_000) < score).astype(float)
    stats = PerformanceStats("binary")
    stats.add(score, label)
    m = stats.metrics()
    assert m["auc_error_bound"] < 2 / AUC_BINS
    assert abs(m["auc"] - binary_auc(score, label == 1)) <= m["auc_error_bound"]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), n=st.integers(min_value=1, max_value=300))
def test_regression_and_multiclass_statistics_match_the_rolling_metrics(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    score, label = rng.normal(10, 3, n), rng.normal(10, 3, n)
    parts = [PerformanceStats("regression") for _ in range(3)]
    for i, part in enumerate(parts):
        part.add(score[i::3], label[i::3])
    merged = PerformanceStats.merged(parts, parts[0])
    rolling = RollingPerformance("regression", window=n)
    rolling.update_arrays(score, label)
    for name in ("mae", "rmse", "mean_error"):
        assert merged.metrics()[name] == pytest.approx(rolling.metrics()[name], rel=1e-9, abs=1e-12)
    classes = ["a", "b", "c", "d"]
    truth = [classes[i] for i in rng.integers(0, 4, n)]
    pred = [classes[i] for i in rng.integers(0, 3, n)]
    multi = [PerformanceStats("multiclass") for _ in range(2)]
    multi[0].add(np.zeros(n // 2), np.zeros(n // 2), pred[: n // 2], truth[: n // 2])
    multi[1].add(np.zeros(n - n // 2), np.zeros(n - n // 2), pred[n // 2 :], truth[n // 2 :])
    both = PerformanceStats.merged(multi, multi[0]).metrics()
    rolling = RollingPerformance("multiclass", window=n)
    rolling.update_arrays(np.zeros(n), np.zeros(n), pred, truth)
    expected = rolling.metrics()
    for name, value in expected.items():
        if name.startswith("f1:") or name in ("accuracy", "macro_f1"):
            assert both[name] == pytest.approx(value), name


def test_a_batch_that_closes_many_windows_sends_them_in_bounded_reports() -> None:
    """A backlog (or sparse windows) can close thousands of windows in one batch: a report carries at
    most PARTIALS_PER_REPORT of them, each with the progress of its own windows, and the model stage
    judges them all, in order, exactly as one report would have."""
    from stream_monitor.core.partials import PARTIALS_PER_REPORT

    engine = _engine(MonitoringEngine, shard=0, shards=1)
    out = engine.process_predictions(PREDICTIONS, now=0.0)
    reports = out.reports + engine.flush(now=0.0).reports
    windows = math.ceil(STREAM.n / RATE / WINDOW)
    assert windows - 1 > PARTIALS_PER_REPORT  # one batch closed more windows than one report holds
    assert all(len(r.partials) <= PARTIALS_PER_REPORT for r in reports)
    assert sum(len(r.partials) for r in reports) == windows
    progress = [r.progress for r in reports]
    assert progress == sorted(progress)
    stage = ModelStage({MODEL: SCHEMA}, {MODEL: SETTINGS}, {MODEL: REFERENCE}, {}, TWO)
    judged = [e for r in reports for o in stage.process([r], wall_now=None).values() for e in o.evaluations]
    assert [e.events for e in judged] == [round(WINDOW * RATE)] * windows
    assert [e.start for e in judged] == sorted(e.start for e in judged)
