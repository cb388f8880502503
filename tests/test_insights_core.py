"""Retraining insight on planted streams: regimes, incidents, segment surges, recommendations."""

from __future__ import annotations

import numpy as np
import pytest

from stream_monitor.core.events import PredictionBatch
from stream_monitor.core.insights.buckets import DAY, TimeBucketProfiles
from stream_monitor.core.insights.dna import data_dna, pairwise_divergence
from stream_monitor.core.insights.incidents import find_incidents
from stream_monitor.core.insights.tracker import InsightTracker
from stream_monitor.core.reference import build_reference
from stream_monitor.core.schema import FeatureSpec, ModelSchema
from stream_monitor.core.sketches import WindowSketch
from stream_monitor.core.triggers import Recommendation, Trigger
from stream_monitor.core.windows import ClosedWindow
from stream_monitor.errors import StateError

SCHEMA = ModelSchema(
    "shop",
    "regression",
    (
        FeatureSpec("basket", "numeric", key=True),
        FeatureSpec("hour", "numeric"),
        FeatureSpec("device", "categorical", importance=0.5),
    ),
    segment_keys=("channel",),
)
DEVICES = np.array(["mobile", "desktop", "tablet"])
CAMPAIGN = range(17, 21)  # Thursday..Sunday of week 3 — a one-off campaign
INCIDENT = 24  # a pipeline bug: 40 % of `basket` missing
DAYS = 35


def make_batch(
    rng: np.random.Generator,
    day: int,
    n: int,
    *,
    basket_loc: float = 0.0,
    hour_loc: float = 13.0,
    mobile: float = 0.5,
    missing: float = 0.0,
    channel: str | list[str] = "web",
    tag: str = "",
) -> PredictionBatch:
    basket = rng.normal(basket_loc, 1.0, n)
    basket[rng.uniform(size=n) < missing] = np.nan
    hour = np.clip(rng.normal(hour_loc, 3.0, n), 0, 23.99)
    p = [mobile, (1 - mobile) * 0.8, (1 - mobile) * 0.2]
    device = list(DEVICES[rng.choice(3, size=n, p=p)])
    channels = [channel] * n if isinstance(channel, str) else channel
    ts = day * DAY + np.sort(rng.uniform(0, DAY - 1, n))
    return PredictionBatch(
        "shop",
        np.arange(n),
        [f"{tag}{day}-{i}" for i in range(n)],
        ts,
        [None] * n,
        np.vstack([basket, hour]),
        [device],
        np.nan_to_num(basket),
        [None] * n,
        {"channel": channels},
        0,
    )


def day_kind(day: int) -> str:
    if day in CAMPAIGN:
        return "campaign"
    return "weekend" if day % 7 >= 5 else "weekday"


def planted_day(rng: np.random.Generator, day: int, n: int = 4000) -> PredictionBatch:
    kind = day_kind(day)
    if kind == "campaign":
        return make_batch(rng, day, n, basket_loc=-1.5, mobile=0.9, missing=0.0)
    if kind == "weekend":
        return make_batch(rng, day, n, basket_loc=0.7, hour_loc=16.0, mobile=0.7)
    return make_batch(rng, day, n, missing=0.4 if day == INCIDENT else 0.0)


@pytest.fixture(scope="module")
def planted() -> tuple[InsightTracker, list[PredictionBatch]]:
    rng = np.random.default_rng(11)
    reference = build_reference(SCHEMA, make_batch(rng, -30, 20000), bins=10)
    tracker = InsightTracker(SCHEMA, reference)
    days = [planted_day(rng, d) for d in range(DAYS)]
    for d, batch in enumerate(days):
        sketch = WindowSketch(SCHEMA, reference)
        sketch.update(batch)
        tracker.observe_window(ClosedWindow(d * DAY, (d + 1) * DAY, d, sketch))
    return tracker, days


def test_dna_recovers_planted_regimes(planted: tuple[InsightTracker, list[PredictionBatch]]) -> None:
    tracker, _ = planted
    dna = tracker.latest_dna
    assert dna is not None
    assert list(dna.bucket_ids) == list(range(DAYS))
    by_kind: dict[str, set[str]] = {}
    for day in range(DAYS):
        by_kind.setdefault(day_kind(day) if day != INCIDENT else "incident", set()).add(dna.kind_of(day))
    # Each planted kind of day maps to exactly one regime kind, and to the right one.
    assert by_kind == {
        "weekday": {"normal"},
        "weekend": {"recurring"},
        "campaign": {"one_off"},
        "incident": {"incident"},
    }
    weekday_groups = {int(dna.groups[d]) for d in range(DAYS) if day_kind(d) == "weekday" and d != INCIDENT}
    weekend_groups = {int(dna.groups[d]) for d in range(DAYS) if day_kind(d) == "weekend"}
    assert len(weekday_groups) == len(weekend_groups) == 1
    weekend = dna.regime_of(5)
    assert weekend is not None and weekend.period == 7.0
    # The matrix is symmetric, zero on the diagonal, small within and large across regimes.
    assert np.allclose(dna.matrix, dna.matrix.T) and np.all(np.diag(dna.matrix) == 0)
    assert dna.matrix[0, 1] < 0.05 < 0.15 < dna.matrix[0, 5] < dna.matrix[0, 17]


def test_pairwise_psi_matches_the_detector() -> None:
    from stream_monitor.core.detectors.psi import psi

    rng = np.random.default_rng(0)
    counts = rng.integers(0, 100, size=(4, 2, 6)).astype(float)
    per_feature = pairwise_divergence(counts)
    for f in range(2):
        for i in range(4):
            for j in range(4):
                assert per_feature[f, i, j] == pytest.approx(psi(counts[i, f], counts[j, f]), abs=1e-12)


def test_incident_buckets_are_flagged_and_excluded(
    planted: tuple[InsightTracker, list[PredictionBatch]],
) -> None:
    tracker, _ = planted
    assert [(i.bucket, i.reason) for i in tracker.incidents] == [(INCIDENT, "missing_rate:basket")]
    rec = tracker.recommendation(Recommendation(action="retrain"), {}, 35 * DAY)
    assert rec.basis == "buckets" and rec.exclude is not None and rec.train_on is not None
    reasons = {(p.start // DAY, p.reason) for p in rec.exclude}
    assert (INCIDENT, "integrity_incident") in reasons
    assert (17, "one_off_regime") in reasons
    trained = {int(d) for p in rec.train_on for d in np.arange(p.start, p.end, DAY) // DAY}
    assert INCIDENT not in trained and not trained & set(CAMPAIGN)
    # Recent production is weekdays and weekends: both regimes are trained on, every clean day of them.
    assert trained == set(range(DAYS)) - set(CAMPAIGN) - {INCIDENT}
    # Most recent first.
    starts = [p.start for p in rec.train_on]
    assert starts == sorted(starts, reverse=True)


def test_slow_trend_is_not_an_incident() -> None:
    rng = np.random.default_rng(1)
    reference = build_reference(SCHEMA, make_batch(rng, -30, 20000), bins=10)
    profiles = TimeBucketProfiles(SCHEMA, reference)
    for d in range(20):  # basket drifts beyond the reference range a little more every day
        sketch = WindowSketch(SCHEMA, reference)
        sketch.update(make_batch(rng, d, 3000, basket_loc=0.25 * d))
        profiles.add_window(ClosedWindow(d * DAY, (d + 1) * DAY, d, sketch))
    assert find_incidents(profiles.closed(), reference) == []


def test_new_channel_surge_with_drift_triggers_at_once() -> None:
    rng = np.random.default_rng(2)
    reference = build_reference(SCHEMA, make_batch(rng, -30, 20000), bins=10)
    tracker = InsightTracker(SCHEMA, reference)
    fired = []
    for day in range(3):
        for part in range(4):
            fired += tracker.observe_batch(make_batch(rng, day, 1000, tag=f"w{part}-"))
    assert fired == []
    # Day 3: a partner app starts sending a third of the traffic, with much larger baskets.
    for part in range(4):
        n = 1500
        channel = ["web"] * 1000 + ["partner_app"] * 500
        batch = make_batch(rng, 3, n, channel=channel, tag=f"d3p{part}-")
        batch.numeric[0, 1000:] += 2.0
        fired += tracker.observe_batch(batch)
    assert len(fired) == 1, fired
    trigger = fired[0]
    assert trigger.kind == "data_drift" and trigger.event_time < 4 * DAY
    assert trigger.reasons[0].detector == "segment_surge"
    assert trigger.reasons[0].feature == "segment:channel=partner_app"
    assert trigger.reasons[1].value >= 0.15
    assert trigger.recommendation.segments_needing_attention == ("channel=partner_app",)
    assert trigger.recommendation.action == "investigate"
    assert Trigger.from_dict(trigger.to_dict()) == trigger


def test_new_channel_surge_without_drift_does_not_trigger() -> None:
    rng = np.random.default_rng(3)
    reference = build_reference(SCHEMA, make_batch(rng, -30, 20000), bins=10)
    tracker = InsightTracker(SCHEMA, reference)
    fired = []
    for day in range(3):
        fired += tracker.observe_batch(make_batch(rng, day, 4000))
    channel = ["web"] * 2000 + ["partner_app"] * 1000
    fired += tracker.observe_batch(make_batch(rng, 3, 3000, channel=channel, tag="x"))
    assert fired == []
    assert [s["segment"] for s in tracker.surges] == ["channel=partner_app"]
    assert tracker.surges[0]["drift"] is False


def test_segment_drift_reports_share_and_caps_segments() -> None:
    rng = np.random.default_rng(4)
    schema = ModelSchema("shop", "regression", SCHEMA.features, segment_keys=("channel",), max_segments=3)
    reference = build_reference(schema, make_batch(rng, -30, 20000), bins=10)
    tracker = InsightTracker(schema, reference)
    channels = [f"c{i % 6}" for i in range(6000)]
    batch = make_batch(rng, 0, 6000, channel=channels)
    batch.numeric[0, [i for i, c in enumerate(channels) if c == "c1"]] += 3.0
    tracker.observe_batch(batch)
    current = {r.value: r for r in tracker.segments.current()}
    assert set(current) == {"c0", "c1", "c2", "__other__"}
    assert current["__other__"].share == pytest.approx(0.5)
    assert current["c1"].share == pytest.approx(1 / 6)
    assert current["c1"].drift > 0.5 > 0.05 > current["c0"].drift
    assert [r.segment for r in tracker.segments.needing_attention()] == ["channel=c1"]


def test_tracker_snapshot_round_trip(planted: tuple[InsightTracker, list[PredictionBatch]]) -> None:
    tracker, _ = planted
    restored = InsightTracker.restore(tracker.snapshot(), SCHEMA, tracker.reference)
    assert [b.index for b in restored.buckets.closed()] == [b.index for b in tracker.buckets.closed()]
    a, b = restored.latest_dna, tracker.latest_dna
    assert a is not None and b is not None
    assert np.array_equal(a.groups, b.groups) and np.allclose(a.matrix, b.matrix)
    with pytest.raises(StateError):
        InsightTracker.restore(b"{}", SCHEMA, tracker.reference)


def test_retention_keeps_the_newest_buckets() -> None:
    rng = np.random.default_rng(5)
    reference = build_reference(SCHEMA, make_batch(rng, -30, 5000), bins=10)
    profiles = TimeBucketProfiles(SCHEMA, reference, retention=5)
    for d in range(9):
        sketch = WindowSketch(SCHEMA, reference)
        sketch.update(make_batch(rng, d, 200))
        profiles.add_window(ClosedWindow(d * DAY, (d + 1) * DAY, d, sketch))
    assert [b.index for b in profiles.closed()] == [4, 5, 6, 7, 8]
    assert all(b.sketch.n_events == 200 for b in profiles.closed())


def test_dna_single_bucket_and_empty() -> None:
    one = data_dna(np.ones((1, 1, 3)), np.ones(1))
    assert one.groups.tolist() == [0] and [r.kind for r in one.regimes] == ["normal"]
    none = data_dna(np.zeros((0, 1, 3)), np.ones(1))
    assert none.regimes == []


def test_monitor_fires_on_a_new_channel_surge_and_keeps_insights_across_restore() -> None:
    from stream_monitor.core.monitor import ModelMonitor
    from stream_monitor.core.settings import ModelSettings, WindowSettings

    rng = np.random.default_rng(6)
    # The same daily volume as production: the reference's event rate drives the volume check.
    reference = build_reference(SCHEMA, make_batch(rng, -30, 3000), bins=10)
    settings = ModelSettings(window=WindowSettings(kind="time", width=DAY, allowed_lateness=0.0))
    monitor = ModelMonitor(SCHEMA, settings, reference)
    fired = []
    for day in range(4):
        fired += monitor.process_predictions(make_batch(rng, day, 3000), now=0.0).triggers
    assert fired == []
    assert monitor.insights is not None and [b.index for b in monitor.insights.buckets.closed()] == [0, 1, 2]
    restored = ModelMonitor.restore(monitor.snapshot(), SCHEMA, settings, reference=reference)
    assert restored.insights is not None
    assert [b.index for b in restored.insights.buckets.closed()] == [0, 1, 2]
    channel = ["web"] * 2000 + ["partner_app"] * 1000
    batch = make_batch(rng, 4, 3000, channel=channel, tag="surge")
    batch.numeric[0, 2000:] += 2.0
    surge = restored.process_predictions(batch, now=0.0).triggers
    assert [t.reasons[0].detector for t in surge] == ["segment_surge"]
    assert surge[0].reasons[0].feature == "segment:channel=partner_app"
