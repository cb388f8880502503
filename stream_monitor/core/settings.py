"""Per-model settings of the pure core: windows, detector thresholds, the trigger policy and insights.

This module is the one home of every default: defaults follow seed 002 (PSI ≥ 0.15 red, 0.1 warning;
AUC down ≥ 0.015 for 3 consecutive windows; F1 of a key class down > 5 %). ``config.py`` fills these
from YAML and the environment (each field under its own name, see ``examples/config.yaml``); the core
only ever sees these frozen dataclasses. A function elsewhere that needs one of these numbers as a
default names it here (``bins: int = DetectorSettings.bins``) instead of writing it again.

>>> s = ModelSettings()
>>> s.window.kind, s.window.size, s.policy.psi_alarm, s.policy.consecutive_windows
('count', 5000, 0.15, 2)

A model's segment checks follow its policy, and its buckets its windows, unless the insight settings
say otherwise; the regime cut is left to the data (``None``) with its floor in the DNA's metric:

>>> week = WindowSettings(kind="time", width=7 * 86400.0)
>>> r = ModelSettings(window=week, policy=PolicySettings(psi_alarm=0.2)).resolved_insights()
>>> r.segments.psi_alarm, r.bucket_seconds / 86400, r.dna_cut, r.dna_min_cut
(0.2, 7.0, None, 0.01)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal


@dataclass(frozen=True)
class WindowSettings:
    """How events are grouped for window detectors.

    ``kind="count"``: windows of ``size`` events (sliding every ``slide`` events if set).
    ``kind="time"``: windows of ``width`` seconds of event time, ``allowed_lateness`` seconds of grace.
    """

    kind: Literal["count", "time"] = "count"
    size: int = 5000
    slide: int | None = None
    width: float = 3600.0
    time_slide: float | None = None
    allowed_lateness: float = 60.0


@dataclass(frozen=True)
class DetectorSettings:
    """Statistical settings of the window detectors."""

    bins: int = 10
    top_k: int = 20
    reference_sample: int = 5000
    window_sample: int = 2000
    # Family-wise error rate for all p-value tests of one model in one window (Holm).
    alpha: float = 0.01
    # KS must also move at least this far: p-values alone flag everything on huge windows.
    ks_min_effect: float = 0.1
    chi2_min_effect: float = 0.1
    psi_epsilon: float = 1e-4
    missing_rate_delta: float = 0.1
    out_of_range_rate: float = 0.05
    new_category_rate: float = 0.05
    volume_ratio_low: float = 0.5
    volume_ratio_high: float = 2.0
    adwin_delta: float = 0.002


@dataclass(frozen=True)
class PolicySettings:
    """When signals become retrain triggers (seed 002's defaults)."""

    psi_warning: float = 0.1
    psi_alarm: float = 0.15
    # PSI beyond this on a key feature is critical rather than a warning-level trigger.
    psi_critical: float = 0.3
    consecutive_windows: int = 2
    # Hysteresis: a condition stays "on" until its statistic falls below this fraction of the threshold.
    hysteresis: float = 0.8
    auc_drop: float = 0.015
    # A performance drop (AUC, F1, MAE) must also exceed this many standard errors of the rolling
    # metric: with a few thousand labels a 0.015 AUC drop or a 5 % F1 drop is within noise (both
    # fired on stationary streams).
    performance_standard_errors: float = 3.0
    performance_windows: int = 3
    f1_drop_relative: float = 0.05
    mae_rise_relative: float = 0.2
    prediction_psi_alarm: float = 0.2
    cooldown_seconds: float = 6 * 3600.0
    min_labels_for_performance: int = 200
    integrity_triggers: bool = True
    # An integrity incident (missing-rate jump, new categories, volume collapse) pages at once.
    integrity_windows: int = 1
    key_class: str | None = None
    # Dataset-level drift: the importance-weighted share of all input features that drift (Evidently's
    # default share, 0.5). A warning-level data_drift trigger unless a key feature also drifts.
    dataset_drift_share: float = 0.5
    # While a condition is latched, a statistic that reaches this multiple of the value that fired
    # (for performance: of the drop or rise from the baseline) is escalation: a new trigger.
    escalation_factor: float = 2.0
    # A reminder (a new trigger superseding the last) after this much event time while a latched
    # condition still holds; 0: never. A week: long enough for a retrain to be trained, validated
    # and deployed, so a reminder says the retrain did not happen or did not help.
    renotify_after_seconds: float = 7 * 86400.0


@dataclass(frozen=True)
class EventTimeSettings:
    """Bounds that keep one hostile timestamp from moving a partition's event-time clock.

    The engine's clock (window closes, label TTLs) is the highest event time seen on the predictions
    stream. An event stamped in year 9999 would move it there for good: every pending prediction
    would expire at once and no later label would join. So an event whose ``ts`` lies more than
    ``max_future_seconds`` past the wall clock is dead-lettered (``ts_out_of_bounds``) and never moves
    the clock. The default, one day, is far above producer clock skew and a time zone written as
    ``Z`` by mistake (at most 14 h), and far below any value that could hurt (label TTL is 7 days).

    ``max_ahead_seconds`` (off by default) also rejects events more than that far past the partition's
    watermark: useful when replaying historic data, where a stray present-day timestamp is not in the
    future; left off in production because a partition that was idle longer than the bound would
    then reject everything after the gap. Events in the past never move the clock (they are late).
    """

    max_future_seconds: float = 86400.0
    max_ahead_seconds: float | None = None


@dataclass(frozen=True)
class AggregationSettings:
    """How a model's events spread over input partitions are judged (README: "Running it on Kafka").

    ``per_partition`` (the default): each partition-task monitors and judges its own events — right
    when events are keyed by ``model_id`` (one partition per model). ``two_stage``: for events keyed
    by ``event_id`` and spread over partitions, each partition-task summarises its share of every
    window into partials (core/partials.py) that a model stage merges and judges once per model and
    window (core/model_stage.py), through the ``topics.partials`` topic. A shard that sends nothing
    for ``shard_idle_timeout_seconds`` of wall clock no longer holds the model's windows open.
    """

    mode: Literal["per_partition", "two_stage"] = "per_partition"
    shard_idle_timeout_seconds: float = 300.0


@dataclass(frozen=True)
class TrainingDataSettings:
    """How a model's training file is read by ``reference build`` and ``calibrate`` (offline only).

    Configured per model under ``training:`` (``config.py``), where the command-line flags of the same
    names (``--ts-column`` ...) override them. Column names: event time, the prediction (a score, a
    value, a class or the contract's object), the predicted class of a binary model when the file
    holds it apart from the score (``None``: no such column; the live metrics then decide by the
    score too, or by ``prediction.label`` when events carry it), and the true outcome.
    ``time_zone`` (an IANA name) is the zone of zone-less times such as pandas' ``2011-01-01 00:00:00``.
    """

    ts_column: str = "ts"
    prediction_column: str = "prediction"
    prediction_label_column: str | None = None
    label_column: str = "label"
    time_zone: str = "UTC"


@dataclass(frozen=True)
class IncidentSettings:
    """Thresholds of the bucket integrity-incident checks (:mod:`stream_monitor.core.insights.incidents`).

    A closed bucket is compared with the last clean bucket before it, so these are jumps between two
    buckets, not the window detectors' drift against the reference.
    """

    missing_delta: float = 0.1
    out_of_range_delta: float = 0.25
    new_category_delta: float = 0.1
    volume_low: float = 0.5
    volume_high: float = 2.0
    volume_history: int = 7
    volume_min_history: int = 3
    # The first or last closed bucket whose events cover less than this share of a typical bucket's
    # covered time is *partial* (the stream started or stopped inside it): never an incident, and
    # left out of the regimes' shape. Half: a day bucket that started at noon is partial, one that
    # lost its first hours is not.
    partial_coverage: float = 0.5


@dataclass(frozen=True)
class SegmentSettings:
    """Thresholds of segment drift and surge checks (:mod:`stream_monitor.core.insights.segments`).

    ``psi_alarm`` is the key-feature PSI at which a segment drifts; ``None`` (the default) means the
    model's ``policy.psi_alarm`` (see :meth:`ModelSettings.resolved_insights`).
    """

    min_events: int = 200
    psi_alarm: float | None = None
    surge_min_share: float = 0.05
    surge_ratio: float = 3.0
    surge_min_events: int = 200
    baseline_buckets: int = 7


@dataclass(frozen=True)
class RecommendSettings:
    """How a retraining recommendation is made (:mod:`stream_monitor.core.insights.recommend`)."""

    recent_buckets: int = 7
    min_new_labels: int = 2000
    min_buckets: int = 3


DnaMetric = Literal["psi", "js"]
#: For small shifts the Jensen–Shannon divergence (bits) is about PSI / (8 ln 2).
PSI_PER_JS = 8.0 * math.log(2.0)
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
DAY_SECONDS = 86400.0
#: Smallest regime cut derived from the noise (PSI): a mean shift of a tenth of a standard deviation
#: (PSI ≈ δ² for a normal feature). With very large buckets the noise is tiny and a statistically
#: clear but practically meaningless difference would otherwise split regimes.
DNA_MIN_CUT_PSI = 0.01


@dataclass(frozen=True)
class InsightSettings:
    """Time-bucketed profiles of one model and what is made of them: data DNA, incidents, segments,
    recommendations (:mod:`stream_monitor.core.insights`).

    ``bucket_seconds`` is configured as ``insights.bucket``; ``None`` (the default) follows the model's
    windows (:func:`default_bucket_seconds`). Buckets of whole days start on ``week_start`` (weekly
    buckets are ISO weeks by default, not the Thursdays of the Unix epoch). ``dna_cut`` ``None`` (the
    default) derives the regime cut from the buckets' own noise (:mod:`~stream_monitor.core.insights.dna`),
    never below ``dna_min_cut`` (``None``: PSI 0.01, for ``dna_metric: js`` its JS equivalent); a
    number fixes the cut instead.
    """

    bucket_seconds: float | None = None
    week_start: Weekday = "monday"
    retention: int = 90
    dna_metric: DnaMetric = "psi"
    dna_cut: float | None = None
    dna_min_cut: float | None = None
    # Drift in a key feature weighs this many times its importance (data DNA and segment drift).
    key_weight: float = 2.0
    surge_cooldown_seconds: float = PolicySettings.cooldown_seconds
    incidents: IncidentSettings = field(default_factory=IncidentSettings)
    segments: SegmentSettings = field(default_factory=SegmentSettings)
    recommend: RecommendSettings = field(default_factory=RecommendSettings)


@dataclass(frozen=True)
class VersionSettings:
    """Model versions in the stream (``model_version`` of prediction events): each active version is
    watched on its own, against its own reference and baseline (core/versions.py).

    ``max_active`` versions are kept side by side (a rollout or a canary serves two at once); a new
    version beyond that retires the one seen least recently, and a version with no event for
    ``retire_after_seconds`` of event time (behind the model's newest event) retires on its own.
    ``displace_after_seconds`` protects the versions that serve: a newcomer may only take the place
    of one idle that long (else its events go to the dead-letter topic as ``too_many_versions``).
    ``unknown_reference`` says what a version with no reference of its own (none published to the
    registry, none configured for it) is judged against: ``previous`` — the reference of the newest
    other active version (or the configured one), said so in its metrics and triggers; ``warmup`` — a
    reference warmed up from its own first ``warmup_events`` events.
    """

    max_active: int = 2
    unknown_reference: Literal["previous", "warmup"] = "previous"
    retire_after_seconds: float = 86400.0
    # A new version takes the place of the least recently seen one only when that one has had no
    # event for this long (event time); until then the newcomer's events are dead-lettered as
    # ``too_many_versions``: one message naming a made-up version cannot end a version that serves.
    displace_after_seconds: float = 3600.0


@dataclass(frozen=True)
class ModelSettings:
    """All settings of one model besides its schema."""

    window: WindowSettings = field(default_factory=WindowSettings)
    detectors: DetectorSettings = field(default_factory=DetectorSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    insights: InsightSettings = field(default_factory=InsightSettings)
    warmup_events: int = 5000
    performance_window: int = 5000
    label_buffer_entries: int = 1_000_000
    label_ttl_seconds: float = 7 * 86400.0
    versions: VersionSettings = field(default_factory=VersionSettings)

    def resolved_insights(self) -> InsightSettings:
        """:attr:`insights` with the values it leaves to the model filled in: a segment drifts at
        ``policy.psi_alarm``, buckets follow the windows (:func:`default_bucket_seconds`) and the
        noise-derived regime cut has its floor in the DNA's metric, unless set. ``dna_cut`` stays
        ``None`` (derived from the data) unless configured."""
        s, p = self.insights, self.policy
        segments = s.segments
        if segments.psi_alarm is None:
            segments = replace(segments, psi_alarm=p.psi_alarm)
        bucket = s.bucket_seconds
        if bucket is None:
            bucket = default_bucket_seconds(self.window)
        min_cut = s.dna_min_cut
        if min_cut is None:
            min_cut = DNA_MIN_CUT_PSI if s.dna_metric == "psi" else DNA_MIN_CUT_PSI / PSI_PER_JS
        return replace(s, bucket_seconds=bucket, dna_min_cut=min_cut, segments=segments)


def default_bucket_seconds(window: WindowSettings) -> float:
    """Bucket width when ``insights.bucket`` is not set: the window width of event-time windows,
    so that one bucket holds whole windows (a week of windows is a week of buckets, not one day
    holding each window by its midpoint); at least a day, since hourly buckets would picture the
    daily cycle and 90 of them hold under four days; a width that does not divide a day is rounded
    up to the next multiple that covers one. Count windows have no width: a day.

    >>> hours = (1, 7, 7 * 24)
    >>> [default_bucket_seconds(WindowSettings(kind="time", width=h * 3600.0)) / 3600 for h in hours]
    [24.0, 28.0, 168.0]
    >>> default_bucket_seconds(WindowSettings())
    86400.0
    """
    if window.kind != "time" or not window.width > 0:
        return DAY_SECONDS
    width = float(window.width)
    if width >= DAY_SECONDS:
        return width
    return width * math.ceil(DAY_SECONDS / width - 1e-9)
