"""One contract over every stateful class (as river's check suite runs over every estimator).

Each case supplies a fresh object, a seeded stream cut into parts, ``feed(obj, part) -> outputs``, and
its ``snapshot`` / ``restore``. For every case:

- snapshot → restore → snapshot is byte-identical, mid-stream;
- continuing after the restore gives the same outputs as continuing without, and the same final state;
- an old-format blob (JSON, the old label buffer layout, a pickle, an older layout version) and a
  pickle in place of any part are refused with :class:`StateError`, and restoring never runs code;
- damaged snapshots (truncated, bit-flipped, patched) give a StateError or an object that snapshots
  again, never another exception.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_monitor.core import state_format
from stream_monitor.core.detectors import (
    ADWINDetector,
    DetectorResult,
    PageHinkleyDetector,
    StreamDriftDetector,
)
from stream_monitor.core.detectors.adwin import Adwin
from stream_monitor.core.detectors.page_hinkley import PageHinkley
from stream_monitor.core.engine import MonitoringEngine
from stream_monitor.core.events import LabelBatch, PredictionBatch, decode_labels, decode_predictions
from stream_monitor.core.insights.buckets import TimeBucketProfiles
from stream_monitor.core.insights.segments import SegmentTracker
from stream_monitor.core.insights.tracker import InsightTracker
from stream_monitor.core.labels import LabelJoinBuffer
from stream_monitor.core.monitor import ModelMonitor
from stream_monitor.core.performance import RollingPerformance
from stream_monitor.core.policy import TriggerPolicy, WindowEvaluation
from stream_monitor.core.reference import ReferenceProfile, ReferenceWarmup, build_reference
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import InsightSettings, ModelSettings, WindowSettings
from stream_monitor.core.sketches import WindowSketch
from stream_monitor.core.windows import ClosedWindow, CountWindows, EventTimeWindows
from stream_monitor.errors import StateError
from stream_monitor.offline.demo_data import SyntheticStream

STREAM = SyntheticStream(
    n=12_000,
    n_numeric=4,
    rate=20.0,
    label_fraction=0.5,
    label_delay=120.0,
    drift_at=6_000,
    mean_shift={"x0": 1.2},
    concept_drift=0.9,
    seed=11,
)
SCHEMA = ModelSchema("synth", "binary", STREAM.schema_features(), segment_keys=("c1",))
PARTS = 4  # the stream in 4 parts: two before the snapshot, two after
BATCH = 750  # not a divisor of the windows or the warm-up


@cache
def reference() -> ReferenceProfile:
    train = SyntheticStream(n=6_000, n_numeric=4, rate=20.0, label_fraction=1.0, seed=50)
    raws, _ = train.raw()
    batches, _ = decode_predictions(raws, {"synth": SCHEMA})
    return build_reference(SCHEMA, batches["synth"], train.columns()["y"].astype(float), sample_size=500)


@cache
def raw_parts() -> list[tuple[list[bytes], list[bytes]]]:
    """Per part: its prediction messages, and the labels due by its end (event time)."""
    preds, labels = STREAM.raw()
    size = len(preds) // PARTS
    label_ts = [float(orjson.loads(raw)["ts"]) for raw in labels]
    out = []
    taken = 0
    for p in range(PARTS):
        part = preds[p * size : (p + 1) * size]
        end = float(orjson.loads(part[-1])["ts"])
        due = [raw for raw, ts in zip(labels, label_ts, strict=True) if ts <= end][taken:]
        taken += len(due)
        out.append((part, due))
    return out


@cache
def batch_parts() -> list[tuple[list[PredictionBatch], LabelBatch | None]]:
    out = []
    for preds, labels in raw_parts():
        batches = [
            decode_predictions(preds[i : i + BATCH], {"synth": SCHEMA})[0]["synth"]
            for i in range(0, len(preds), BATCH)
        ]
        decoded = decode_labels(labels, {"synth": SCHEMA})[0].get("synth")
        out.append((batches, decoded))
    return out


def make_sketch(sample_size: int = 300) -> WindowSketch:
    return WindowSketch(SCHEMA, reference(), sample_size=sample_size, seed=3)


@cache
def closed_windows() -> list[list[ClosedWindow]]:
    """The windows a count window closes in each part (inputs for buckets and insights)."""
    windows = CountWindows(1000, make_sketch=make_sketch)
    return [[w for b in batches for w in windows.add(b)] for batches, _ in batch_parts()]


def evaluations(part: int) -> list[WindowEvaluation]:
    """Windows a policy sees: stationary, then PSI drift on a key feature, with labels joining."""
    out = []
    for k in range(6):
        i = part * 6 + k
        psi = 0.02 if i < 9 or i > 20 else 0.3
        r = DetectorResult("psi", "x0", "psi", psi, 0.25, drift=psi >= 0.25, warning=psi >= 0.1)
        labels = {"joined_total": 100.0 * i, "pending": 50.0, "delay_p50": 60.0}
        perf = {"n": 500.0, "auc": 0.8 - 0.01 * max(0, i - 9)}
        out.append(
            WindowEvaluation("synth", i, i * 60.0, (i + 1) * 60.0, 1000, (r,), perf, {"auc": 0.8}, labels)
        )
    return out


def performance_arrays(part: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100 + part)
    score = rng.random(1500)
    noise = 0.0 if part < 2 else 0.6
    label = (rng.random(1500) < (1 - noise) * score + noise * 0.5).astype(float)
    return score, label


def drift_values(part: int) -> np.ndarray:
    rng = np.random.default_rng(200 + part)
    values = rng.normal(0.0 if part % 2 == 0 else 1.5, 1.0, 3000)
    values[::97] = np.nan
    return values


@dataclass
class Case:
    make: Callable[[], Any]
    feed: Callable[[Any, int], Any]
    snapshot: Callable[[Any], bytes]
    restore: Callable[[bytes], Any]


def _windows_out(closed: list[ClosedWindow]) -> list[Any]:
    return [(w.index, w.start, w.end, w.sketch.snapshot()) for w in closed]


def _feed_sketch(sketch: WindowSketch, part: int) -> Any:
    for b in batch_parts()[part][0]:
        sketch.update(b)
    return sketch.n_events


def _feed_windows(windows: CountWindows | EventTimeWindows, part: int) -> Any:
    return [_windows_out(windows.add(b)) for b in batch_parts()[part][0]] + [windows.late_events]


def _feed_labels(buf: LabelJoinBuffer, part: int) -> Any:
    batches, labels = batch_parts()[part]
    for b in batches:
        buf.add_predictions(b.event_id, b.ts, b.score, b.pred_label)
    now = float(batches[-1].ts[-1])
    if labels is None:
        return buf.expire(now)
    j = buf.join(labels.event_id, labels.ts, labels.label, labels.label_class, now=now)
    return (j.event_id, j.score.tolist(), j.delay.tolist(), buf.expire(now), buf.arrival_rate(now), len(buf))


def _feed_performance(perf: RollingPerformance, part: int) -> Any:
    score, label = performance_arrays(part)
    out = []
    for i in range(0, 1500, 300):
        perf.update_arrays(score[i : i + 300], label[i : i + 300])
        out.append((repr(perf.metrics()), perf.error_drift_detected))
    return out


def _feed_detector(detector: StreamDriftDetector, part: int) -> Any:
    values = drift_values(part)
    return [
        (detector.update(values[i : i + 700]), detector.last_update_detections) for i in range(0, 3000, 700)
    ]


def _feed_test(test: Adwin | PageHinkley, part: int) -> Any:
    values = drift_values(part)
    return test.update_many(values[np.isfinite(values)].tolist())


def _feed_policy(policy: TriggerPolicy, part: int) -> Any:
    return [repr(policy.decide(ev)) for ev in evaluations(part)]


def _restore_policy(blob: bytes) -> TriggerPolicy:
    policy = TriggerPolicy("synth", SCHEMA.key_features)
    policy.restore_state(blob)
    return policy


def _feed_buckets(buckets: TimeBucketProfiles, part: int) -> Any:
    out = [buckets.add_window(w) for w in closed_windows()[part]]
    return (
        out,
        buckets.advance(closed_windows()[part][-1].end),
        [b.sketch.snapshot() for b in buckets.closed()],
    )


def _feed_segments(segments: SegmentTracker, part: int) -> Any:
    return [repr(segments.update(b)) for b in batch_parts()[part][0]]


def _feed_insights(tracker: InsightTracker, part: int) -> Any:
    out: list[Any] = [repr(tracker.observe_batch(b)) for b in batch_parts()[part][0]]
    out += [tracker.observe_window(w) for w in closed_windows()[part]]
    return out


def _feed_warmup(warmup: ReferenceWarmup, part: int) -> Any:
    return [None if (p := warmup.add(b)) is None else p.digest() for b in batch_parts()[part][0]]


def _feed_monitor(monitor: ModelMonitor, part: int) -> Any:
    batches, labels = batch_parts()[part]
    out = []
    for b in batches:
        result = monitor.process_predictions(b, now=float(b.ts[-1]))
        out.append((repr(result.triggers), repr(result.evaluations), result.score_drift))
    if labels is not None:
        result = monitor.process_labels(labels, now=float(batches[-1].ts[-1]))
        out.append((result.labels_joined, result.error_drift))
    return out


MONITOR_SETTINGS = ModelSettings(
    window=WindowSettings(size=1000, slide=500),
    performance_window=400,
    insights=InsightSettings(bucket_seconds=120.0),
)


def _monitor_case(reference_of: Callable[[], ReferenceProfile | None], warmup_events: int) -> Case:
    s = ModelSettings(**{**MONITOR_SETTINGS.__dict__, "warmup_events": warmup_events})
    return Case(
        lambda: ModelMonitor(SCHEMA, s, reference_of(), "v1"),
        _feed_monitor,
        lambda m: m.snapshot(),
        lambda b: ModelMonitor.restore(b, SCHEMA, s, "v1", reference=reference_of()),
    )


def _engine() -> MonitoringEngine:
    settings = ModelSettings(window=WindowSettings(kind="time", width=120.0, allowed_lateness=5.0))
    return MonitoringEngine({"synth": SCHEMA}, {"synth": settings}, {"synth": reference()})


def _feed_engine(engine: MonitoringEngine, part: int) -> Any:
    preds, labels = raw_parts()[part]
    out = []
    for i in range(0, len(preds), BATCH):
        result = engine.process_predictions(
            [*preds[i : i + BATCH], b"{broken"], now=max(engine.watermark, 0.0)
        )
        out.append((repr(result.triggers), len(result.rejections)))
    result = engine.process_labels(labels, now=max(engine.watermark, 0.0))
    return [*out, result.events]


def _engine_restore(blob: bytes) -> MonitoringEngine:
    engine = _engine()
    engine.restore(blob)
    return engine


def _state_case(cls: Any, make: Callable[[], Any], feed: Callable[[Any, int], Any]) -> Case:
    """A class whose state is only a container (to_state / from_state)."""
    return Case(
        make,
        feed,
        lambda obj: state_format.encode(obj.to_state()),
        lambda blob: cls.from_state(state_format.decode(blob)),
    )


CASES: dict[str, Callable[[], Case]] = {
    "window_sketch": lambda: Case(
        make_sketch,
        _feed_sketch,
        lambda s: s.snapshot(),
        lambda b: WindowSketch.restore(b, SCHEMA, reference()),
    ),
    "count_windows": lambda: Case(
        lambda: CountWindows(1000, 250, make_sketch=make_sketch),
        _feed_windows,
        lambda w: w.snapshot(),
        lambda b: CountWindows.restore(b, make_sketch),
    ),
    "event_time_windows": lambda: Case(
        lambda: EventTimeWindows(60.0, 20.0, 3.0, make_sketch=make_sketch),
        _feed_windows,
        lambda w: w.snapshot(),
        lambda b: EventTimeWindows.restore(b, make_sketch),
    ),
    "label_buffer": lambda: Case(
        lambda: LabelJoinBuffer(5000, 400.0, joined_memory=400, rate_horizon_seconds=60.0),
        _feed_labels,
        lambda buf: buf.snapshot(),
        LabelJoinBuffer.restore,
    ),
    "performance": lambda: Case(
        lambda: RollingPerformance("binary", window=700),
        _feed_performance,
        lambda p: p.snapshot(),
        RollingPerformance.restore,
    ),
    "adwin_detector": lambda: Case(
        lambda: ADWINDetector(delta=0.01, clock=8),
        _feed_detector,
        lambda d: d.snapshot(),
        StreamDriftDetector.restore,
    ),
    "page_hinkley_detector": lambda: Case(
        lambda: PageHinkleyDetector(threshold=10.0, warmup=400),
        _feed_detector,
        lambda d: d.snapshot(),
        PageHinkleyDetector.restore,
    ),
    "adwin": lambda: _state_case(Adwin, lambda: Adwin(clock=4), _feed_test),
    "page_hinkley": lambda: _state_case(PageHinkley, lambda: PageHinkley(threshold=15.0), _feed_test),
    "trigger_policy": lambda: Case(
        lambda: TriggerPolicy("synth", SCHEMA.key_features),
        _feed_policy,
        lambda p: p.snapshot(),
        _restore_policy,
    ),
    "time_buckets": lambda: Case(
        lambda: TimeBucketProfiles(SCHEMA, reference(), bucket_seconds=90.0, retention=3),
        _feed_buckets,
        lambda b: b.snapshot(),
        lambda blob: TimeBucketProfiles.restore(blob, SCHEMA, reference()),
    ),
    "segment_tracker": lambda: Case(
        lambda: SegmentTracker(SCHEMA, reference(), bucket_seconds=90.0, retention=3),
        _feed_segments,
        lambda s: s.snapshot(),
        lambda blob: SegmentTracker.restore(blob, SCHEMA, reference(), bucket_seconds=90.0, retention=3),
    ),
    "insight_tracker": lambda: Case(
        lambda: InsightTracker(SCHEMA, reference(), InsightSettings(bucket_seconds=90.0, retention=4), "v1"),
        _feed_insights,
        lambda t: t.snapshot(),
        lambda b: InsightTracker.restore(
            b, SCHEMA, reference(), InsightSettings(bucket_seconds=90.0, retention=4), "v1"
        ),
    ),
    "reference_warmup": lambda: Case(
        lambda: ReferenceWarmup(SCHEMA, 7_000, bins=6, sample_size=400),
        _feed_warmup,
        lambda w: w.snapshot(),
        ReferenceWarmup.restore,
    ),
    "reference_profile": lambda: _state_case(ReferenceProfile, reference, lambda r, part: r.digest()),
    "monitor_configured_reference": lambda: _monitor_case(reference, 5_000),
    "monitor_warming_up": lambda: _monitor_case(lambda: None, 7_000),
    "monitor_warmed_up": lambda: _monitor_case(lambda: None, 2_000),
    "engine": lambda: Case(_engine, _feed_engine, lambda e: e.snapshot(), _engine_restore),
}


@cache
def mid_stream(name: str) -> tuple[bytes, list[Any]]:
    """The snapshot after the first two parts, and the outputs of the last two (uninterrupted)."""
    case = CASES[name]()
    obj = case.make()
    for part in range(2):
        case.feed(obj, part)
    blob = case.snapshot(obj)
    later = [case.feed(obj, part) for part in range(2, PARTS)]
    return blob, [*later, case.snapshot(obj)]


@pytest.mark.parametrize("name", CASES)
def test_snapshot_restore_snapshot_is_byte_identical_and_the_run_continues_the_same(name: str) -> None:
    case = CASES[name]()
    blob, expected = mid_stream(name)
    assert state_format.is_state(blob)
    restored = case.restore(blob)
    assert case.snapshot(restored) == blob
    got = [case.feed(restored, part) for part in range(2, PARTS)]
    assert got == expected[:-1]
    assert case.snapshot(restored) == expected[-1]


CALLS: list[str] = []


def _record(what: str) -> None:  # what a malicious pickle would run: it must never be called
    CALLS.append(what)


class _Exploit:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_record, ("restoring ran code from the state topic",))


@pytest.mark.parametrize("name", CASES)
def test_old_formats_and_pickles_are_refused_without_running_code(name: str) -> None:
    case = CASES[name]()
    blob, _ = mid_stream(name)
    state = state_format.decode(blob)
    older = state_format.encode({**state, "format": state["format"] - 1})
    old_blobs = [
        b'{"format": 1, "model_id": "synth"}',
        b"SMLJ" + b"\x00" * 12,
        pickle.dumps({"format_version": 1, "state": _Exploit()}),
        pickle.dumps(_Exploit(), protocol=0),
        older,
    ]
    for old in old_blobs:
        with pytest.raises(StateError):
            case.restore(old)
    # A pickle where any part was: refused (type confusion is not an opening either).
    for part in state:
        with pytest.raises(StateError):
            case.restore(state_format.encode({**state, part: pickle.dumps(_Exploit())}))
    assert CALLS == []


def _damaged(blob: bytes, data: st.DataObject) -> bytes:
    out = bytearray(blob)
    kind = data.draw(st.sampled_from(["truncate", "flip", "byte", "json_digit"]))
    if kind == "truncate":
        return bytes(out[: data.draw(st.integers(0, len(out) - 1))])
    if kind == "json_digit":  # a plausible number somewhere in the metadata: decodes, then must fit
        digits = [i for i, c in enumerate(out) if 48 <= c <= 57]
        if digits:
            out[data.draw(st.sampled_from(digits))] = data.draw(st.sampled_from(b"0123456789-"))
        return bytes(out)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(out) - 1))
        if kind == "flip":
            out[i] ^= 1 << data.draw(st.integers(0, 7))
        else:
            out[i] = data.draw(st.integers(0, 255))
    return bytes(out)


@pytest.mark.parametrize("name", CASES)
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_damaged_snapshots_give_a_state_error_or_a_usable_object(name: str, data: st.DataObject) -> None:
    case = CASES[name]()
    blob, _ = mid_stream(name)
    try:
        restored = case.restore(_damaged(blob, data))
    except StateError:
        return
    case.snapshot(restored)
