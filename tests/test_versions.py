"""Model versions in the stream (core/versions.py): each active version judged as a monitor of its own.

The oracle of every test here is a one-version engine fed only that version's events and labels:
the versioned engine must make exactly its decisions for each version, side by side.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_monitor.core import state_format
from stream_monitor.core.engine import EngineOutput, MonitoringEngine
from stream_monitor.core.events import MODEL_VERSION, decode_predictions
from stream_monitor.core.reference import ReferenceProfile, build_reference
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import ModelSettings, PolicySettings, VersionSettings, WindowSettings
from stream_monitor.core.triggers import ModelVersionChanged, Trigger
from stream_monitor.offline.demo_data import SyntheticStream

RATE = 20.0
V1 = SyntheticStream(n=12_000, rate=RATE, seed=11, label_fraction=0.5, label_delay=30.0)
# The new version serves a shifted population (the retrain's reason): x0 moved by one sd.
V2 = SyntheticStream(
    n=12_000,
    rate=RATE,
    seed=12,
    label_fraction=0.5,
    label_delay=30.0,
    drift_at=0,
    mean_shift={"x0": 1.0},
    start_ts=V1.ts_of(6000),
)
SCHEMA = ModelSchema("synth", "binary", V1.schema_features(("x0", "x1", "c0")))
SETTINGS = ModelSettings(
    window=WindowSettings(kind="count", size=1000),
    warmup_events=1000,
    performance_window=1000,
    policy=PolicySettings(consecutive_windows=1, cooldown_seconds=0.0, min_labels_for_performance=100),
    versions=VersionSettings(max_active=2, retire_after_seconds=120.0),
)


def versioned(raws: list[bytes], version: str) -> list[bytes]:
    return [raw.replace(b'"model_version":"1"', b'"model_version":"%s"' % version.encode()) for raw in raws]


@cache
def stream() -> tuple[list[bytes], list[bytes], list[bytes], list[bytes]]:
    p1, l1 = V1.raw()
    p2, l2 = V2.raw()
    return versioned(p1, "1"), l1, versioned(p2, "2"), l2


@cache
def references() -> tuple[ReferenceProfile, ReferenceProfile]:
    """v1's reference from its own training data; v2's from data of the shifted population."""
    out = []
    for seed, shift in ((101, {}), (102, {"x0": 1.0})):
        train = SyntheticStream(
            n=10_000, rate=RATE, seed=seed, label_fraction=1.0, drift_at=0, mean_shift=shift
        )
        batches, _ = decode_predictions(train.raw()[0], {"synth": SCHEMA})
        out.append(build_reference(SCHEMA, batches["synth"], train.columns()["y"].astype(float)))
    return out[0], out[1]


def steps() -> list[tuple[str, list[bytes], float]]:
    """Batches in event-time order: v1 alone, then a canary where both serve, then v2 alone; labels
    interleaved as they become due."""
    p1, l1, p2, l2 = stream()
    events = [(orjson.loads(r)["ts"], "predictions", r) for r in p1 + p2]
    labels = [(orjson.loads(r)["ts"], "labels", r) for r in l1 + l2]
    merged = sorted(events + labels, key=lambda x: (x[0], x[1]))
    out: list[tuple[str, list[bytes], float]] = []
    for i in range(0, len(merged), 700):
        chunk = merged[i : i + 700]
        for role in ("predictions", "labels"):
            raws = [r for _, kind, r in chunk if kind == role]
            if raws:
                out.append((role, raws, max(ts for ts, kind, _ in chunk if kind == role)))
    return out


def run(engine: MonitoringEngine, items: list[tuple[str, list[bytes], float]]) -> list[EngineOutput]:
    outs = []
    for role, raws, now in items:
        if role == "predictions":
            outs.append(engine.process_predictions(raws, now=now))
        else:
            outs.append(engine.process_labels(raws, now=now))
    return outs


def only(items: list[tuple[str, list[bytes], float]], version: str) -> list[tuple[str, list[bytes], float]]:
    """The steps as a one-version engine sees them: that version's events and labels only."""
    p1, l1, p2, l2 = stream()
    mine = set(p1 + l1) if version == "1" else set(p2 + l2)
    kept = [(role, [r for r in raws if r in mine], now) for role, raws, now in items]
    return [(role, raws, now) for role, raws, now in kept if raws]


def both_engine(**kw: Any) -> MonitoringEngine:
    ref1, _ref2 = references()
    return MonitoringEngine({"synth": SCHEMA}, {"synth": SETTINGS}, {"synth": ref1}, **kw)


def stripped(triggers: list[Trigger]) -> list[Trigger]:
    return [dataclasses.replace(t, reference=None) for t in triggers]


@cache
def side_by_side() -> tuple[list[EngineOutput], MonitoringEngine]:
    _ref1, ref2 = references()
    engine = both_engine(registry={"synth": {"2": ref2}})
    return run(engine, steps()), engine


def test_each_version_is_judged_exactly_as_a_monitor_of_its_own() -> None:
    outs, _ = side_by_side()
    ref1, ref2 = references()
    for version, ref in (("1", ref1), ("2", ref2)):
        alone = MonitoringEngine({"synth": SCHEMA}, {"synth": SETTINGS}, {"synth": ref}, {"synth": version})
        expected = run(alone, only(steps(), version))
        got_ev = [ev for o in outs for ev in o.per_model.get("synth", EngineOutput()).evaluations]
        got_ev = [ev for ev in got_ev if ev.model_version == version]
        want_ev = [ev for o in expected for ev in o.per_model["synth"].evaluations] if expected else []
        assert len(got_ev) == len(want_ev) > 3
        assert got_ev == want_ev  # every detector result, performance, baseline and label statistic
        got = [t for o in outs for t in o.triggers if t.model_version == version]
        want = [t for o in expected for t in o.triggers]
        assert stripped(got) == want
        assert {t.reference.source for t in got if t.reference} <= {"configured", "registry"}


def test_the_shift_is_no_drift_for_a_version_published_with_a_reference_of_it() -> None:
    """v2 serves a shifted population. Published with a reference of that population, it is quiet;
    judged against v1's reference it would flag x0 (the next test)."""
    outs, _ = side_by_side()
    v2 = [t for o in outs for t in o.triggers if t.model_version == "2"]
    assert not [t for t in v2 if t.kind in ("data_drift", "combined")]
    assert all(t.reference is not None and t.reference.source == "registry" for t in v2)
    v1 = [t for o in outs for t in o.triggers if t.model_version == "1"]
    assert not [t for t in v1 if t.kind in ("data_drift", "combined")]  # v1's population never moved


def test_a_new_version_starts_with_one_lifecycle_record_and_the_old_one_retires() -> None:
    outs, engine = side_by_side()
    changes = [c for o in outs for c in o.changes]
    assert [(c.model_version, c.previous_version, c.reference.source) for c in changes] == [
        ("1", None, "configured"),
        ("2", "1", "registry"),
    ]
    assert changes[1].event_time == min(orjson.loads(r)["ts"] for r in stream()[2])
    retired = [r for o in outs for r in o.retired]
    assert retired == [("synth", "1")]  # idle for retire_after_seconds of event time
    assert engine.models["synth"].active_versions == ("2",)
    # Its label counts stay in the model's totals: none lost.
    counts = engine.label_buffers()["synth"]
    p1, _l1, p2, _l2 = stream()
    assert counts["joined"] + counts["pending"] + counts["expired"] == len(p1) + len(p2)
    record = orjson.loads(changes[1].with_emitted_at(1.0).to_json_bytes())
    assert ModelVersionChanged.from_dict(record) == changes[1].with_emitted_at(1.0)


def test_labels_join_the_version_that_holds_their_prediction() -> None:
    outs, engine = side_by_side()
    per_version: dict[str, int] = {}
    for o in outs:
        for ev in o.per_model.get("synth", EngineOutput()).evaluations:
            per_version[ev.model_version or ""] = int(ev.performance.get("n", 0))
    assert per_version["1"] > 0 and per_version["2"] > 0
    assert engine.label_buffers()["synth"]["orphan"] == 0


def test_without_a_reference_of_its_own_a_version_is_judged_against_the_previous_one_and_says_so() -> None:
    engine = both_engine()
    outs = run(engine, steps())
    changes = [c for o in outs for c in o.changes]
    assert changes[1].reference.source == "previous" and changes[1].reference.version == "1"  # v1's
    v2 = [t for o in outs for t in o.triggers if t.model_version == "2"]
    # Against v1's reference the shifted population is drift, and each trigger says what it was judged on.
    assert v2 and all(t.reference is not None and t.reference.source == "previous" for t in v2)
    assert any(r.feature == "x0" for t in v2 for r in t.reasons)


def test_warmup_policy_warms_a_reference_from_the_versions_own_events() -> None:
    warm = dataclasses.replace(SETTINGS, versions=VersionSettings(unknown_reference="warmup"))
    ref1, _ = references()
    engine = MonitoringEngine({"synth": SCHEMA}, {"synth": warm}, {"synth": ref1}, {"synth": "1"})
    outs = run(engine, steps())
    changes = [c for o in outs for c in o.changes]
    assert changes[1].reference.source == "warmup"
    v2 = [t for o in outs for t in o.triggers if t.model_version == "2"]
    assert not [t for t in v2 if t.kind in ("data_drift", "combined")]  # its own data is its reference


def test_a_reference_published_while_the_version_runs_takes_over() -> None:
    engine = both_engine()
    items = steps()
    half = len(items) * 3 // 4
    outs = run(engine, items[:half])
    _, ref2 = references()
    assert engine.publish_reference("synth", "2", ref2)
    entry = engine.models["synth"].active["2"]
    assert entry.reference.source == "registry" and entry.monitor.reference is ref2
    assert entry.monitor.labels.pending > 0  # pending labels kept: they still join
    outs += run(engine, items[half:])
    after = [t for o in outs[len(outs) - (len(items) - half) :] for t in o.triggers if t.model_version == "2"]
    assert not [t for t in after if t.kind in ("data_drift", "combined")]
    assert not engine.publish_reference("synth", "2", ref2)  # the same reference again: nothing to do
    assert not engine.publish_reference("unknown-model", "2", ref2)


def test_made_up_versions_cannot_end_the_versions_that_serve() -> None:
    """Fifty made-up versions, one message each, between the real v1 traffic: the first takes the free
    place, the others find every place serving and are dead-lettered; v1 is never retired."""
    engine = both_engine()
    p1, _, _, _ = stream()
    outs = []
    for i in range(50):
        outs.append(engine.process_predictions(p1[i * 20 : i * 20 + 19], now=0.0))
        odd = orjson.loads(p1[i * 20 + 19])
        odd["model_version"] = f"evil-{i}"
        outs.append(engine.process_predictions([orjson.dumps(odd)], now=0.0))
        assert len(engine.models["synth"].active) <= SETTINGS.versions.max_active
    assert engine.models["synth"].active_versions == ("1", "evil-0")
    assert [c.model_version for o in outs for c in o.changes] == ["1", "evil-0"]
    rejected = [r for o in outs for r in o.rejections]
    assert [r.reason for r in rejected] == ["too_many_versions"] * 49
    assert all(orjson.loads(r.raw)["model_version"].startswith("evil-") for r in rejected)
    assert sum(o.events for o in outs) == 50 * 19 + 1  # dead-lettered events are not counted as processed


def test_a_version_idle_long_enough_gives_way_to_a_new_one() -> None:
    p1, _, _, _ = stream()
    ref1, _ = references()
    slow = dataclasses.replace(SETTINGS, versions=VersionSettings(max_active=2, retire_after_seconds=86400.0))
    engine = MonitoringEngine({"synth": SCHEMA}, {"synth": slow}, {"synth": ref1})
    engine.process_predictions(p1[:100], now=0.0)
    hour = SETTINGS.versions.displace_after_seconds
    t1 = orjson.loads(p1[99])["ts"]

    def events(version: str, rows: list[bytes], shift: float) -> list[bytes]:
        return [
            orjson.dumps({**orjson.loads(r), "model_version": version, "ts": orjson.loads(r)["ts"] + shift})
            for r in rows
        ]

    engine.process_predictions(events("2", p1[100:200], 0.0), now=0.0)
    # v2 serves on for an hour of event time (displace_after_seconds) after v1's last event.
    engine.process_predictions(events("2", p1[200:300], hour), now=0.0)
    assert engine.models["synth"].newest_ts >= t1 + hour
    out = engine.process_predictions(events("3", p1[300:310], hour), now=0.0)
    assert not out.rejections
    # v1, whose last event is the oldest, made room; v2, the model's clock, goes on.
    assert [(c.model_version, c.retired_versions) for c in out.changes] == [("3", ("1",))]
    assert out.retired == [("synth", "1")]
    assert engine.models["synth"].active_versions == ("2", "3")


def test_one_message_stamped_ahead_neither_ages_nor_displaces_the_versions_that_serve() -> None:
    """A made-up version stamped 23 h ahead takes a free place, but the clock that retires versions
    only moves with versions that have served: v1 stays, and the canary v2 still finds its place."""
    engine = both_engine(registry={"synth": {}})
    p1, _, _, _ = stream()
    engine.process_predictions(p1[:200], now=0.0)
    evil = {**orjson.loads(p1[200]), "model_version": "evil", "ts": orjson.loads(p1[199])["ts"] + 23 * 3600}
    out = engine.process_predictions([orjson.dumps(evil)], now=0.0)
    assert not out.retired and engine.models["synth"].active_versions == ("1", "evil")
    out = engine.process_predictions(p1[201:400], now=0.0)
    assert not out.retired and "1" in engine.models["synth"].active_versions


def test_an_unversioned_stream_has_no_lifecycle_records_and_no_reference_on_triggers() -> None:
    engine = both_engine()
    p1, _l1, _, _ = stream()
    raws = [r.replace(b'"model_version":"1",', b"") for r in p1]
    outs = [engine.process_predictions(raws[i : i + 1000], now=0.0) for i in range(0, len(raws), 1000)]
    assert not [c for o in outs for c in o.changes]
    assert engine.models["synth"].active_versions == (None,)


@cache
def snapshot_cases() -> list[tuple[str, list[bytes], float]]:
    return steps()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(min_value=1, max_value=len(steps()) - 1))
def test_restore_mid_stream_continues_exactly(cut: int) -> None:
    """Snapshot anywhere (one version, canary, after a retirement), restore, go on: the same outputs
    and the same state, byte for byte, as the uninterrupted run."""
    _, ref2 = references()
    items = snapshot_cases()
    whole, whole_engine = side_by_side()
    first = both_engine(registry={"synth": {"2": ref2}})
    got = run(first, items[:cut])
    data = first.snapshot()
    second = both_engine(registry={"synth": {"2": ref2}})
    second.restore(data)
    assert second.snapshot() == data
    got += run(second, items[cut:])
    assert [t for o in got for t in o.triggers] == [t for o in whole for t in o.triggers]
    assert [c for o in got for c in o.changes] == [c for o in whole for c in o.changes]
    assert second.snapshot() == whole_engine.snapshot()


def test_state_of_a_version_whose_reference_left_the_registry_restarts_that_version_only() -> None:
    """Withdrawn (or published again) while no one ran the state: as at run time, the version starts
    again on what it resolves to now, its pending labels, rolling performance and events kept."""
    _, ref2 = references()
    engine = both_engine(registry={"synth": {"2": ref2}})
    run(engine, steps()[: len(steps()) // 2 + 20])
    entry = engine.models["synth"].active["2"]
    pending, events = len(entry.monitor.labels), entry.monitor.events_total
    assert pending > 0 and entry.reference.source == "registry"
    fresh = both_engine()  # the registry no longer has v2's reference
    fresh.restore(engine.snapshot())
    again = fresh.models["synth"].active["2"]
    assert (
        again.reference.source == "previous" and again.reference.version is None
    ) or again.reference.version == "1"
    assert len(again.monitor.labels) == pending and again.monitor.events_total == events
    assert (
        fresh.models["synth"].active["1"].monitor.snapshot()
        == engine.models["synth"].active["1"].monitor.snapshot()
    )


def test_a_withdrawn_reference_switches_the_versions_judged_against_it() -> None:
    _, ref2 = references()
    engine = both_engine(registry={"synth": {"2": ref2}})
    run(engine, steps()[: len(steps()) // 2 + 20])
    assert engine.withdraw_reference("synth", "2") == ["2"]
    entry = engine.models["synth"].active["2"]
    assert entry.reference.source == "previous" and entry.monitor.reference is not ref2
    again = both_engine()
    again.restore(engine.snapshot())  # the state no longer names the withdrawn reference
    assert again.snapshot() == engine.snapshot()


def test_state_of_a_release_before_versions_is_read_as_the_configured_version() -> None:
    from stream_monitor.core.monitor import ModelMonitor

    ref1, _ = references()
    mon = ModelMonitor(SCHEMA, SETTINGS, ref1, None)
    batches, _ = decode_predictions(stream()[0][:1500], {"synth": SCHEMA})
    mon.process_predictions(batches["synth"], now=0.0)
    old = state_format.encode(
        state_format.tagged("engine", 2, watermark=np.array([0.0]), monitors={"synth": mon.to_state()})
    )
    engine = both_engine()
    engine.restore(old)
    assert engine.models["synth"].active_versions == (None,)
    assert engine.models["synth"].current is not None and engine.models["synth"].current.events_total == 1500


@given(st.from_regex(MODEL_VERSION, fullmatch=True))
@settings(max_examples=60, deadline=None)
def test_any_version_the_decoder_accepts_is_stored_and_restored(version: str) -> None:
    p1, _, _, _ = stream()
    raws = versioned(p1[:30], "1")
    raws = [orjson.dumps({**orjson.loads(r), "model_version": version}) for r in raws]
    engine = both_engine()
    out = engine.process_predictions(raws, now=0.0)
    assert not out.rejections
    again = both_engine()
    again.restore(engine.snapshot())
    assert again.models["synth"].active_versions == (version,)
    assert again.snapshot() == engine.snapshot()
