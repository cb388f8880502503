"""Per-model settings of the pure core: windows, detector thresholds, the trigger policy and insights.

This module is the one home of every default: defaults follow seed 002 (PSI ≥ 0.15 red, 0.1 warning;
AUC down ≥ 0.015 for 3 consecutive windows; F1 of a key class down > 5 %). ``config.py`` fills these
from YAML and the environment (each field under its own name, see ``examples/config.yaml``); the core
only ever sees these frozen dataclasses. A function elsewhere that needs one of these numbers as a
default names it here (``bins: int = DetectorSettings.bins``) instead of writing it again.

>>> s = ModelSettings()
>>> s.window.kind, s.window.size, s.policy.psi_alarm, s.policy.consecutive_windows
('count', 5000, 0.15, 2)

A model's segment checks and data DNA follow its policy unless the insight settings say otherwise:

>>> r = ModelSettings(policy=PolicySettings(psi_warning=0.12, psi_alarm=0.2)).resolved_insights()
>>> r.segments.psi_alarm, r.dna_cut
(0.2, 0.12)
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


@dataclass(frozen=True)
class InsightSettings:
    """Time-bucketed profiles of one model and what is made of them: data DNA, incidents, segments,
    recommendations (:mod:`stream_monitor.core.insights`).

    ``bucket_seconds`` is configured as ``insights.bucket``. ``dna_cut`` ``None`` (the default) cuts the
    regimes at the model's ``policy.psi_warning`` (for ``dna_metric: js``, its JS equivalent).
    """

    bucket_seconds: float = 86400.0
    retention: int = 90
    dna_metric: DnaMetric = "psi"
    dna_cut: float | None = None
    # Drift in a key feature weighs this many times its importance (data DNA and segment drift).
    key_weight: float = 2.0
    surge_cooldown_seconds: float = PolicySettings.cooldown_seconds
    incidents: IncidentSettings = field(default_factory=IncidentSettings)
    segments: SegmentSettings = field(default_factory=SegmentSettings)
    recommend: RecommendSettings = field(default_factory=RecommendSettings)


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

    def resolved_insights(self) -> InsightSettings:
        """:attr:`insights` with the values it leaves to the policy filled in: a segment drifts at
        ``policy.psi_alarm`` and the data DNA cuts regimes at ``policy.psi_warning`` unless set."""
        s, p = self.insights, self.policy
        segments = s.segments
        if segments.psi_alarm is None:
            segments = replace(segments, psi_alarm=p.psi_alarm)
        cut = s.dna_cut
        if cut is None:
            cut = p.psi_warning if s.dna_metric == "psi" else p.psi_warning / PSI_PER_JS
        return replace(s, dna_cut=cut, segments=segments)
