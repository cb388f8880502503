"""Regimes cut by the data's own noise, trends, partial buckets, buckets that follow the windows, and
integrity incidents that are not drift (issue 15, points 3 and 4)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from stream_monitor.core.insights.buckets import (
    DAY,
    Bucket,
    TimeBucketProfiles,
    bucket_origin,
    partial_buckets,
)
from stream_monitor.core.insights.dna import DataDNA, dna_from_buckets
from stream_monitor.core.insights.incidents import find_incidents
from stream_monitor.core.insights.recommend import recommend
from stream_monitor.core.insights.tracker import InsightTracker
from stream_monitor.core.reference import ReferenceProfile, build_reference
from stream_monitor.core.settings import InsightSettings, ModelSettings, WindowSettings
from stream_monitor.core.sketches import WindowSketch
from stream_monitor.core.triggers import Recommendation
from stream_monitor.core.windows import ClosedWindow
from tests.test_insights_core import SCHEMA, make_batch

N = 3000  # events per daily bucket


def _reference(seed: int = 0) -> ReferenceProfile:
    return build_reference(SCHEMA, make_batch(np.random.default_rng(seed), -30, 20000), bins=10)


def _profiles(
    basket_locs: list[float],
    *,
    seed: int = 0,
    jitter: float = 0.0,
    n: int = N,
    last_hours: float = 24.0,
    days: list[int] | None = None,
) -> TimeBucketProfiles:
    """Daily buckets whose ``basket`` mean is ``basket_locs[k]`` plus day-to-day ``jitter`` (a real
    stream's background: weather, news), the other features unchanged; the last day may stop early.
    ``days``: the days that hold data (default: one after the other); the others have no bucket."""
    rng = np.random.default_rng(seed)
    reference = _reference(seed)
    profiles = TimeBucketProfiles(SCHEMA, reference)
    for k, loc in enumerate(basket_locs):
        d = k if days is None else days[k]
        batch = make_batch(
            rng, d, n, basket_loc=loc + rng.normal(0, jitter), hour_loc=13 + rng.normal(0, jitter)
        )
        if k == len(basket_locs) - 1 and last_hours < 24:
            keep = np.flatnonzero(batch.ts < d * DAY + last_hours * 3600)
            from stream_monitor.core.windows import take_batch

            batch = take_batch(batch, keep)
        sketch = WindowSketch(SCHEMA, reference)
        sketch.update(batch)
        profiles.add_window(ClosedWindow(d * DAY, (d + 1) * DAY, d, sketch))
    return profiles


def _dna(profiles: TimeBucketProfiles, cut: float | None = None) -> DataDNA:
    return dna_from_buckets(SCHEMA, profiles.closed(), cut=cut)


def _runs(dna: DataDNA) -> list[tuple[str, list[int]]]:
    return [(r.kind, list(r.buckets)) for r in dna.regimes]


# --------------------------------------------------------------------------- regimes from the noise


def test_a_jump_far_above_the_day_to_day_background_is_two_regimes() -> None:
    # The car-price story: day-to-day drift ~0.005-0.01, the covariate shift ~14 times that. The fixed
    # cut at the PSI warning level (0.1) saw one regime; the noise-derived cut sees two.
    days = [0.0] * 15 + [0.35] * 15
    profiles = _profiles(days, seed=1, jitter=0.04)
    dna = _dna(profiles)
    jump = float(dna.matrix[14, 15])
    assert jump > 0.04 and jump / dna.background > 5  # ~14× here: well above the background
    assert dna.cut_source == "noise" and dna.background < dna.cut < jump
    assert _runs(dna) == [("one_off", list(range(15))), ("normal", list(range(15, 30)))]
    assert [r.kind for r in _dna(profiles, cut=0.1).regimes] == ["normal"]  # the fixed cut's answer


def test_a_steady_trend_is_one_trend_regime_and_the_latest_bucket_says_so() -> None:
    # The bike story: a steady warming. A fixed cut shattered it into one-offs, with the latest
    # bucket labelled normal; the trend is one regime, and the latest bucket is in it.
    profiles = _profiles(list(np.linspace(0.0, 2.0, 30)), seed=1, jitter=0.03)
    dna = _dna(profiles)
    assert _runs(dna) == [("trend", list(range(30)))]
    assert dna.kind_of(29) == "trend"
    fixed = _dna(profiles, cut=0.1)  # a configured cut is used as it is; the trend is still one regime
    assert fixed.cut_source == "configured" and fixed.cut == 0.1 and _runs(fixed) == _runs(dna)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_alone_is_one_regime(seed: int) -> None:
    dna = _dna(_profiles([0.0] * 30, seed=seed))
    assert _runs(dna) == [("normal", list(range(30)))]
    # The cut sits above what unchanged neighbours show, and at the floor for these large buckets.
    assert dna.background < dna.cut and dna.overdispersion == pytest.approx(1.0, abs=0.2)


def test_a_trend_after_a_plateau_is_a_trend_and_the_plateau_stays_normal() -> None:
    dna = _dna(_profiles([0.0] * 20 + list(np.linspace(0.0, 2.0, 15)), seed=3))
    kinds = {r.kind: r.buckets for r in dna.regimes}
    assert set(kinds) == {"normal", "trend"}
    assert set(range(20)) <= set(kinds["normal"]) and set(range(22, 35)) <= set(kinds["trend"])
    assert dna.kind_of(34) == "trend"


def test_a_staircase_of_long_plateaus_is_shifts_not_a_trend() -> None:
    dna = _dna(_profiles([0.0] * 10 + [0.5] * 10 + [1.0] * 10, seed=4))
    assert [(k, b[0], b[-1]) for k, b in _runs(dna)] == [
        ("one_off", 0, 9),
        ("one_off", 10, 19),
        ("normal", 20, 29),
    ]


#: A survey's schedule: the days that hold data, with gaps of one to three days without any.
SURVEY = [0, 4, 6, 9, 10, 11, 12, 13, 15, 16, 18, 20, 22]


def test_days_without_data_do_not_split_a_regime_into_recurring_runs() -> None:
    # The planted shift on a survey's schedule: each regime is one run over the days that hold data.
    days = [d + (d // 3) + (d // 7) for d in range(30)]  # gaps of one and two days
    dna = _dna(_profiles([0.0] * 15 + [0.35] * 15, seed=1, jitter=0.04, days=days))
    assert [(r.kind, list(r.buckets), r.runs, r.period) for r in dna.regimes] == [
        ("one_off", days[:15], 1, None),
        ("normal", days[15:], 1, None),
    ]


@pytest.mark.parametrize("seed", [8, 10])
def test_a_steady_rise_on_a_survey_schedule_is_one_trend(seed: int) -> None:
    # The rise is linear in time; clustering cuts it into a short group or two and one long group (the
    # long one counted as a plateau before), and the gaps split runs (`recurring` before).
    t = np.asarray(SURVEY, dtype=float)
    dna = _dna(_profiles(list(0.6 * t / t[-1]), seed=seed, n=1500, days=SURVEY))
    assert _runs(dna) == [("trend", SURVEY)]


def test_a_long_end_group_that_keeps_moving_is_part_of_the_trend_a_flat_one_is_a_plateau() -> None:
    from stream_monitor.core.insights.dna import _trend_of

    rng = np.random.default_rng(0)
    # Buckets on a straight line in time (divergence = squared distance), clustered in groups of 2, 3, 8.
    x = 0.1 * np.arange(13) + rng.normal(0, 0.01, 13)
    groups = {0: [0, 1], 1: [2, 3, 4], 2: list(range(5, 13))}
    assert _trend_of([0, 1, 2], groups, list(range(13)), (x[:, None] - x[None, :]) ** 2, 0.02, 0.005) == [
        0,
        1,
        2,
    ]
    # Sixteen buckets standing still, then a rise in groups of two: the flat group is a plateau.
    x = np.r_[np.zeros(16), 0.1 * np.arange(1, 7)] + rng.normal(0, 0.01, 22)
    groups = {0: list(range(16)), 1: [16, 17], 2: [18, 19], 3: [20, 21]}
    matrix = (x[:, None] - x[None, :]) ** 2
    assert _trend_of([0, 1, 2, 3], groups, list(range(22)), matrix, 0.02, 0.005) == [1, 2, 3]


def test_small_buckets_get_a_wider_cut_from_their_own_noise() -> None:
    big = _dna(_profiles([0.0] * 12, n=3000))
    small = _dna(_profiles([0.0] * 12, n=150))
    assert small.cut > 5 * big.cut
    assert [r.kind for r in small.regimes] == ["normal"]


def test_the_dna_is_the_same_when_recomputed() -> None:
    profiles = _profiles([0.0] * 10 + [0.4] * 5, seed=5)
    a, b = _dna(profiles), _dna(profiles)
    assert a.cut == b.cut and np.array_equal(a.groups, b.groups)
    assert set(a.to_dict()) >= {"cut_source", "background", "overdispersion", "noise", "partial"}


# --------------------------------------------------------------------------- partial buckets


def test_a_partial_last_bucket_is_no_incident_and_joins_its_regime() -> None:
    profiles = _profiles([0.0] * 12, seed=6, last_hours=5.0)
    closed = profiles.closed()
    assert closed[-1].sketch.n_events < N / 3
    assert partial_buckets(closed) == {11}
    assert find_incidents(closed) == []  # before: a volume incident, excluded from training
    dna = _dna(profiles)
    assert dna.partial == (11,) and dna.kind_of(11) == "normal"
    rec = recommend(Recommendation(action="retrain"), closed, dna, [])
    assert rec.train_on is not None and rec.train_on[0].end == 12 * DAY and not rec.exclude


def test_a_volume_drop_inside_the_history_is_still_an_incident() -> None:
    rng = np.random.default_rng(7)
    reference = _reference(7)
    profiles = TimeBucketProfiles(SCHEMA, reference)
    for d in range(10):
        sketch = WindowSketch(SCHEMA, reference)
        sketch.update(make_batch(rng, d, 300 if d == 6 else N))
        profiles.add_window(ClosedWindow(d * DAY, (d + 1) * DAY, d, sketch))
    assert [(i.bucket, i.reason) for i in find_incidents(profiles.closed())] == [(6, "volume")]


# --------------------------------------------------------------------------- integrity is not drift


def _warming_buckets(kind: str) -> list[Bucket]:
    """Ten days of `basket`, then a day where 27 % of the values lie above the training maximum:
    a real warming (everything moved up) or a broken source (27 % replaced by a sentinel)."""
    rng = np.random.default_rng(8)
    reference = _reference(8)
    profiles = TimeBucketProfiles(SCHEMA, reference)
    top = reference.numeric["basket"].max
    for d in range(11):
        batch = make_batch(rng, d, N)
        if d == 10:
            x = batch.numeric[0]
            if kind == "warming":
                x += top - float(np.quantile(x, 0.73))  # the whole distribution moves up
            else:
                x[rng.uniform(size=x.size) < 0.27] = 999.0
        sketch = WindowSketch(SCHEMA, reference)
        sketch.update(batch)
        profiles.add_window(ClosedWindow(d * DAY, (d + 1) * DAY, d, sketch))
    closed = profiles.closed()
    rate = (closed[-1].sketch.numeric_above[0]) / closed[-1].sketch.numeric_n[0]
    assert 0.25 < rate < 0.3
    return closed


def test_values_beyond_the_range_that_move_with_the_distribution_are_drift_not_an_incident() -> None:
    closed = _warming_buckets("warming")
    assert find_incidents(closed) == []
    dna = dna_from_buckets(SCHEMA, closed)
    assert dna.kind_of(10) == "emerging"  # drift evidence: a new regime, trained on, not excluded
    rec = recommend(Recommendation(action="retrain"), closed, dna, [])
    assert rec.train_on is not None and rec.train_on[0].end == 11 * DAY


def test_values_beyond_the_range_beside_an_unchanged_distribution_are_an_incident() -> None:
    incidents = find_incidents(_warming_buckets("broken"))
    assert [(i.bucket, i.reason) for i in incidents] == [(10, "out_of_range_rate:basket")]


# --------------------------------------------------------------------------- buckets follow windows


def test_buckets_default_to_the_window_width_and_weeks_start_on_monday() -> None:
    week = ModelSettings(window=WindowSettings(kind="time", width=7 * DAY)).resolved_insights()
    assert week.bucket_seconds == 7 * DAY and week.week_start == "monday"
    tracker = InsightTracker(SCHEMA, _reference(), week)
    rng = np.random.default_rng(9)
    # Event-time windows of a week (aligned to the epoch's Thursdays): one window per bucket.
    for w in range(2900, 2906):
        start, end = w * 7 * DAY, (w + 1) * 7 * DAY
        batch = make_batch(rng, 0, 500)
        batch.ts = np.linspace(start, end - 1, 500)
        sketch = WindowSketch(SCHEMA, tracker.reference)
        sketch.update(batch)
        tracker.observe_window(ClosedWindow(start, end, w, sketch))
    closed = tracker.buckets.closed()
    assert [b.windows for b in closed] == [1] * len(closed) and len(closed) >= 5
    assert {time.gmtime(b.start).tm_wday for b in closed} == {0}  # Mondays
    assert all(b.label.count("-") == 2 for b in closed)
    sunday = InsightTracker(
        SCHEMA, _reference(), InsightSettings(bucket_seconds=7 * DAY, week_start="sunday")
    )
    assert time.gmtime(sunday.buckets.origin).tm_wday == 6
    assert bucket_origin(DAY, "sunday") == 0.0  # day buckets start at midnight whatever the week


def test_weekly_buckets_round_trip_and_an_old_state_keeps_its_alignment() -> None:
    settings = InsightSettings(bucket_seconds=7 * DAY)
    tracker = InsightTracker(SCHEMA, _reference(), settings)
    restored = InsightTracker.restore(tracker.snapshot(), SCHEMA, tracker.reference, settings)
    assert restored.buckets.origin == tracker.buckets.origin == 4 * DAY
    assert restored.segments.origin == 4 * DAY
    # A state written before weeks were aligned numbers its buckets from the epoch: kept as it is.
    tracker.buckets = TimeBucketProfiles(SCHEMA, tracker.reference, 7 * DAY, origin=0.0)
    old = InsightTracker.restore(tracker.snapshot(), SCHEMA, tracker.reference, settings)
    assert old.buckets.origin == old.segments.origin == 0.0


# --------------------------------------------------------------------------- the trend's advice


def test_a_trend_in_recent_production_trains_on_its_near_end() -> None:
    profiles = _profiles(list(np.linspace(0.0, 2.0, 30)), seed=1, jitter=0.03)
    closed = profiles.closed()
    dna = _dna(profiles)
    rec = recommend(Recommendation(action="retrain"), closed, dna, [])
    assert rec.train_on is not None and rec.exclude is not None
    trained = {int(d) for p in rec.train_on for d in np.arange(p.start, p.end, DAY) // DAY}
    assert set(range(23, 30)) <= trained and 0 not in trained
    assert {p.reason for p in rec.exclude} == {"trend_superseded"}
    assert [r.kind for r in rec.regimes or ()] == ["trend"]
