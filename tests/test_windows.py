"""Count and event-time windows: which events land in which window, lateness, snapshot round trips."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_monitor.core.events import PredictionBatch
from stream_monitor.core.reference import NumericProfile, ReferenceProfile
from stream_monitor.core.schema import FeatureSpec, ModelSchema
from stream_monitor.core.sketches import WindowSketch
from stream_monitor.core.windows import ClosedWindow, CountWindows, EventTimeWindows, slice_batch, take_batch
from stream_monitor.errors import StateError

SCHEMA = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"), FeatureSpec("c", "categorical")))
REFERENCE = ReferenceProfile(
    1, "m", numeric={"x": NumericProfile.from_values(np.arange(100.0), bins=4, sample_size=10)}
)


def make_sketch() -> WindowSketch:
    return WindowSketch(SCHEMA, REFERENCE, sample_size=8)


def make_batch(ts: np.ndarray, first_id: int = 0) -> PredictionBatch:
    """Events whose feature x equals their position in the stream, so a window's x values name its events."""
    n = len(ts)
    ids = np.arange(first_id, first_id + n)
    return PredictionBatch(
        model_id="m",
        index=np.arange(n),
        event_id=[f"e{i}" for i in ids],
        ts=np.asarray(ts, dtype=np.float64),
        model_version=[None] * n,
        numeric=ids[None, :].astype(np.float64),
        categorical=[["a"] * n],
        score=np.full(n, np.nan),
        pred_label=[None] * n,
        segments={},
        unknown_features=0,
    )


def feed(
    windows: CountWindows | EventTimeWindows, batch: PredictionBatch, cuts: list[int]
) -> list[ClosedWindow]:
    closed = []
    bounds = sorted({0, len(batch), *(min(c, len(batch)) for c in cuts)})
    for start, stop in itertools.pairwise(bounds):
        closed.extend(windows.add(slice_batch(batch, start, stop)))
    return closed


def summary(windows: list[ClosedWindow]) -> list[tuple[int, float, float, int, float]]:
    return [(w.index, w.start, w.end, w.sketch.n_events, float(w.sketch.numeric_sum[0])) for w in windows]


def test_slice_and_take_keep_columns_aligned() -> None:
    batch = make_batch(np.arange(5.0))
    batch.unknown_features = 3
    part = slice_batch(batch, 1, 4)
    assert part.event_id == ["e1", "e2", "e3"] and part.ts.tolist() == [1.0, 2.0, 3.0]
    assert part.numeric.tolist() == [[1.0, 2.0, 3.0]] and part.unknown_features == 0
    assert slice_batch(batch, 0, 2).unknown_features == 3
    picked = take_batch(batch, np.array([4, 0]))
    assert picked.event_id == ["e4", "e0"] and picked.numeric.tolist() == [[4.0, 0.0]]
    assert take_batch(batch, np.array([2])).categorical == [["a"]]
    assert len(take_batch(batch, np.array([], dtype=np.int64))) == 0


def test_tumbling_count_windows_close_every_size_events() -> None:
    windows = CountWindows(4, make_sketch=make_sketch)
    closed = windows.add(make_batch(np.arange(10.0)))
    # Window i holds events 4i .. 4i+3: x sums 0+1+2+3 = 6 and 4+5+6+7 = 22.
    assert summary(closed) == [(0, 0.0, 3.0, 4, 6.0), (1, 4.0, 7.0, 4, 22.0)]
    assert summary(windows.flush()) == [(2, 8.0, 9.0, 2, 17.0)]
    assert windows.flush() == []


def test_sliding_count_windows_close_every_slide_after_the_first_full_window() -> None:
    windows = CountWindows(6, slide=2, make_sketch=make_sketch)
    assert windows.add(make_batch(np.arange(5.0))) == []
    closed = windows.add(make_batch(np.arange(5.0, 11.0), first_id=5))
    # Window i holds events 2i .. 2i+5.
    assert summary(closed) == [
        (0, 0.0, 5.0, 6, 15.0),
        (1, 2.0, 7.0, 6, 27.0),
        (2, 4.0, 9.0, 6, 39.0),
    ]
    # The open pane holds event 10; the flushed window is the last full panes plus it.
    assert summary(windows.flush()) == [(3, 6.0, 10.0, 5, 6.0 + 7 + 8 + 9 + 10)]


def test_count_flush_emits_a_short_stream_once() -> None:
    windows = CountWindows(6, slide=2, make_sketch=make_sketch)
    windows.add(make_batch(np.arange(4.0)))  # two full panes, no window yet
    assert summary(windows.flush()) == [(0, 0.0, 3.0, 4, 6.0)]


@settings(max_examples=50, deadline=None)
@given(
    st.sampled_from([(5, None), (6, 2), (6, 3), (1, None), (4, 1)]),
    st.integers(min_value=0, max_value=60),
    st.lists(st.integers(min_value=0, max_value=60), max_size=8),
)
def test_count_windows_do_not_depend_on_batching(
    shape: tuple[int, int | None], n: int, cuts: list[int]
) -> None:
    size, slide = shape
    step = size if slide is None else slide
    batch = make_batch(np.arange(float(n)))
    windows = CountWindows(size, slide, make_sketch=make_sketch)
    closed = feed(windows, batch, cuts)
    expected = [
        (i, float(i * step), float(i * step + size - 1), size, float(sum(range(i * step, i * step + size))))
        for i in range(max(0, (n - size) // step + 1))
    ]
    assert summary(closed) == expected


def test_count_windows_snapshot_restore_mid_stream() -> None:
    batch = make_batch(np.arange(23.0))
    reference_run = CountWindows(6, 2, make_sketch=make_sketch)
    expected = reference_run.add(batch) + reference_run.flush()

    interrupted = CountWindows(6, 2, make_sketch=make_sketch)
    first = interrupted.add(slice_batch(batch, 0, 9))
    restored = CountWindows.restore(interrupted.snapshot(), make_sketch)
    rest = restored.add(slice_batch(batch, 9, 23)) + restored.flush()
    assert summary(first + rest) == summary(expected)
    assert [w.sketch.numeric_sample[0].tolist() for w in first + rest] == [
        w.sketch.numeric_sample[0].tolist() for w in expected
    ]


def test_tumbling_event_time_windows_with_lateness() -> None:
    windows = EventTimeWindows(10.0, allowed_lateness=2.0, make_sketch=make_sketch)
    # Positions: 0:t1 1:t5 2:t11 3:t9 (late by 2, allowed) 4:t13 5:t8 (watermark 11: window [0,10) closed)
    closed = windows.add(make_batch(np.array([1.0, 5.0, 11.0, 9.0, 13.0, 8.0])))
    assert summary(closed) == [(0, 0.0, 10.0, 3, 0.0 + 1 + 3)]
    assert windows.late_events == 1
    closed = windows.add(make_batch(np.array([35.0, 19.0, 21.0]), first_id=6))
    # t35 moves the watermark to 33: [10,20) and [20,30) close; t19 and t21 are then late.
    # [20, 30) has no events and is not emitted.
    assert summary(closed) == [(1, 10.0, 20.0, 2, 2.0 + 4)]
    assert windows.late_events == 3
    assert summary(windows.flush()) == [(2, 30.0, 40.0, 1, 6.0)]


def test_sliding_event_time_windows_and_a_batch_spanning_many_windows() -> None:
    windows = EventTimeWindows(4.0, slide=2.0, make_sketch=make_sketch)
    ts = np.arange(0.5, 20.0, 1.0)  # one event per second: 0.5, 1.5, ..., 19.5
    closed = windows.add(make_batch(ts))
    # Window [2j, 2j + 4) holds events 2j .. 2j+3; the watermark 19.5 closes those ending by 18.
    expected = [(j, 2.0 * j, 2.0 * j + 4, 4, float(sum(range(2 * j, 2 * j + 4)))) for j in range(8)]
    assert summary(closed) == expected
    assert windows.late_events == 0
    # Flush closes [16, 20) (and nothing that would start after the data ends).
    assert summary(windows.flush()) == [(8, 16.0, 20.0, 4, float(16 + 17 + 18 + 19))]


def test_event_time_gaps_emit_no_empty_windows() -> None:
    windows = EventTimeWindows(10.0, make_sketch=make_sketch)
    closed = windows.add(make_batch(np.array([1.0, 2.0, 1_000_005.0, 1_000_006.0])))
    assert summary(closed) == [(0, 0.0, 10.0, 2, 1.0)]
    assert summary(windows.flush()) == [(1, 1_000_000.0, 1_000_010.0, 2, 5.0)]


def test_first_window_starts_at_the_first_event_minus_lateness() -> None:
    windows = EventTimeWindows(10.0, allowed_lateness=5.0, make_sketch=make_sketch)
    closed = windows.add(make_batch(np.array([23.0, 16.0, 14.0, 40.0])))
    # The first window is [10, 20) (it holds 23 - 5 = 18), so 16 and 14 count; nothing before 10 would.
    assert summary(closed) == [(0, 10.0, 20.0, 2, 3.0), (1, 20.0, 30.0, 1, 0.0)]
    assert windows.late_events == 0
    windows.add(make_batch(np.array([9.0, np.nan]), first_id=4))
    assert windows.late_events == 2


Oracle = list[tuple[float, float, list[int]]]


def reference_event_time(
    ts: np.ndarray, width: float, slide: float, lateness: float
) -> tuple[Oracle, Oracle, int]:
    """Brute force, event by event: closed windows (with their events), flushed windows, late count."""
    m = round(width / slide)
    events: list[tuple[int, int]] = []  # (pane, position) of accepted events
    closed: Oracle = []
    late = 0
    next_last: int | None = None
    max_ts = -math.inf

    def close_until(last: int) -> None:
        nonlocal next_last
        assert next_last is not None
        for end in range(next_last, last):
            members = [pos for pane, pos in events if end - m + 1 <= pane <= end]
            if members:
                closed.append(((end - m + 1) * slide, (end + 1) * slide, members))
        next_last = max(next_last, last)

    for position, t in enumerate(ts):
        if next_last is None:
            next_last = math.floor((t - lateness) / slide) + m - 1
        pane = math.floor(t / slide)
        if pane < next_last - m + 1:
            late += 1
        else:
            events.append((pane, position))
        max_ts = max(max_ts, t)
        close_until(max(next_last, math.floor((max_ts - lateness) / slide)))
    before_flush = list(closed)
    assert next_last is not None
    pending = [pane for pane, _ in events if pane >= next_last - m + 1]
    if pending:
        close_until(max(max(pending), next_last) + 1)
    return before_flush, closed[len(before_flush) :], late


def members(windows: list[ClosedWindow]) -> Oracle:
    return [(w.start, w.end, sorted(int(x) for x in w.sketch.numeric_sample[0])) for w in windows]


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([(10.0, 10.0), (10.0, 5.0), (6.0, 2.0), (3.0, 3.0), (9.0, 3.0)]),
    st.sampled_from([0.0, 2.5, 7.0]),
    st.lists(st.floats(min_value=-20.0, max_value=80.0, allow_nan=False), min_size=1, max_size=60),
    st.lists(st.integers(min_value=0, max_value=60), max_size=6),
)
def test_event_time_windows_match_event_by_event_oracle(
    shape: tuple[float, float], lateness: float, times: list[float], cuts: list[int]
) -> None:
    width, slide = shape
    ts = np.array(times)
    # A sample as large as the stream holds every event, so each window's exact members can be compared.
    windows = EventTimeWindows(width, slide, lateness, make_sketch=lambda: WindowSketch(SCHEMA, REFERENCE))
    closed = feed(windows, make_batch(ts), cuts)
    flushed = windows.flush()
    expected_closed, expected_flushed, late = reference_event_time(ts, width, slide, lateness)
    assert members(closed) == expected_closed
    assert members(flushed) == expected_flushed
    assert [w.index for w in closed + flushed] == list(range(len(closed) + len(flushed)))
    assert windows.late_events == late
    accepted = {pos for _, _, events in expected_closed + expected_flushed for pos in events}
    assert len(accepted) == len(ts) - late  # every timely event is in some window


def test_event_time_snapshot_restore_mid_stream() -> None:
    rng = np.random.default_rng(4)
    ts = np.sort(rng.uniform(0, 100, 200)) + rng.normal(0, 3, 200)
    batch = make_batch(ts)
    straight = EventTimeWindows(10.0, 5.0, 4.0, make_sketch=make_sketch)
    expected = straight.add(batch) + straight.flush()

    interrupted = EventTimeWindows(10.0, 5.0, 4.0, make_sketch=make_sketch)
    first = interrupted.add(slice_batch(batch, 0, 77))
    restored = EventTimeWindows.restore(
        interrupted.snapshot(), make_sketch, schema=SCHEMA, reference=REFERENCE
    )
    assert restored.watermark == interrupted.watermark
    rest = restored.add(slice_batch(batch, 77, 200)) + restored.flush()
    assert summary(first + rest) == summary(expected)
    assert restored.late_events == straight.late_events > 0


def test_window_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="multiple"):
        CountWindows(10, 3, make_sketch=make_sketch)
    with pytest.raises(ValueError, match="multiple"):
        EventTimeWindows(10.0, 4.0, make_sketch=make_sketch)
    with pytest.raises(ValueError, match="positive"):
        EventTimeWindows(0.0, make_sketch=make_sketch)
    with pytest.raises(ValueError, match="allowed_lateness"):
        EventTimeWindows(10.0, allowed_lateness=-1.0, make_sketch=make_sketch)


def test_restore_rejects_other_kinds_and_seeds() -> None:
    count_snapshot = CountWindows(4, make_sketch=make_sketch).snapshot()
    with pytest.raises(StateError, match="event_time"):
        EventTimeWindows.restore(count_snapshot, make_sketch)
    with pytest.raises(StateError, match="seed"):
        CountWindows.restore(count_snapshot, lambda: WindowSketch(SCHEMA, REFERENCE, seed=1))


def test_weekly_event_time_windows_are_iso_weeks_and_keep_their_origin_across_a_restore() -> None:
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from stream_monitor.core.reference import ReferenceProfile
    from stream_monitor.core.schema import ModelSchema
    from stream_monitor.core.windows import EventTimeWindows, WindowSketch, week_origin

    schema, reference = ModelSchema("m", "regression", ()), ReferenceProfile(1, "m")
    week = 7 * 86400.0
    windows = EventTimeWindows(
        week, make_sketch=lambda: WindowSketch(schema, reference), origin=week_origin(week)
    )
    ts = np.arange(
        datetime(2024, 1, 3, tzinfo=UTC).timestamp(), datetime(2024, 2, 1, tzinfo=UTC).timestamp(), 3600.0
    )

    def batch(t: np.ndarray) -> SimpleNamespace:
        n = t.size
        return SimpleNamespace(
            model_id="m",
            index=np.arange(n),
            event_id=[str(x) for x in t],
            ts=t,
            model_version=[None] * n,
            numeric=np.empty((0, n)),
            categorical=[],
            score=np.full(n, np.nan),
            pred_label=[None] * n,
            segments={},
            unknown_features=0,
        )

    half = ts.size // 2
    closed = windows.add(batch(ts[:half]))
    restored = EventTimeWindows.restore(windows.snapshot(), windows.make_sketch)
    closed += restored.add(batch(ts[half:])) + restored.flush()
    starts = [datetime.fromtimestamp(w.start, UTC) for w in closed]
    assert {d.weekday() for d in starts} == {0} and {d.hour for d in starts} == {0}  # Mondays, 00:00
    assert starts[0] == datetime(2024, 1, 1, tzinfo=UTC)
    assert sum(w.sketch.n_events for w in closed) == ts.size
