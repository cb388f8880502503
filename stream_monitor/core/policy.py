"""Trigger policy: turns per-window detector results into retrain-trigger events.

Only sustained conditions trigger (seed 002): data drift on a key feature for ``consecutive_windows``
windows (or the importance-weighted share ``dataset_drift_share`` of all features drifting), a
performance drop for ``performance_windows`` windows, prediction drift while labels are delayed, or an
integrity incident. New data arriving never triggers by itself. A fired condition stays latched until
its statistic falls below ``hysteresis × threshold`` (no flapping), and a kind does not fire again
within ``cooldown_seconds`` of event time (no alert storms).

A latched condition does not go silent: it fires again, with ``supersedes`` naming its previous
trigger and ``escalation`` saying why, when the evidence escalates — a feature or metric that was not
among the previous trigger's reasons holds for the condition's windows (``new:<feature or metric>``),
a statistic reaches ``escalation_factor`` × the value that fired (``stronger:<statistic>:<feature>``;
for performance, the drop or rise from the baseline), the severity rises (``severity``) — or as a
``reminder`` after ``renotify_after_seconds`` of event time while it still holds. Time is event time
from the windows, never the wall clock, so a replay or a restored monitor makes the same decisions
and the same deterministic ``trigger_id``.

>>> from stream_monitor.core.detectors.base import DetectorResult
>>> policy = TriggerPolicy("bikes", key_features=("temp",), settings=PolicySettings(consecutive_windows=2))
>>> def window(i, psi):
...     r = DetectorResult("psi", "temp", "psi", psi, 0.15, drift=psi >= 0.15)
...     return WindowEvaluation("bikes", i, i * 100.0, (i + 1) * 100.0, 1000, (r,), {})
>>> [len(policy.decide(window(i, p))) for i, p in enumerate([0.01, 0.2, 0.25, 0.3, 0.02])]
[0, 0, 1, 0, 0]
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stream_monitor.core import state_format
from stream_monitor.core.detectors.base import DetectorResult
from stream_monitor.core.detectors.table import PREDICTION, PSI, spec_of
from stream_monitor.core.settings import PolicySettings, RecommendSettings
from stream_monitor.core.state_format import StateReader
from stream_monitor.core.triggers import (
    SEVERITIES,
    Action,
    ExcludedPeriod,
    Period,
    Recommendation,
    Severity,
    Trigger,
    TriggerKind,
    Window,
    WindowEvidence,
    build_trigger,
)
from stream_monitor.errors import StateError

_FORMAT = 3  # 1 was JSON; 2 had no escalation state (read with its defaults)
_HISTORY = 500
# A condition's verdict on one window: the reasons it holds (none: it does not), and whether it cleared.
_Verdict = tuple[list[DetectorResult], bool]


@dataclass(frozen=True)
class WindowEvaluation:
    """Everything the detectors said about one closed window of one model."""

    model_id: str
    index: int
    start: float
    end: float
    events: int
    results: tuple[DetectorResult, ...]
    performance: dict[str, float]
    baseline: dict[str, float] = field(default_factory=dict)
    labels: dict[str, float] = field(default_factory=dict)
    segments: dict[str, dict[str, int]] = field(default_factory=dict)
    # The event time the window covered (its width unless partial): what its volume check measured.
    covered_seconds: float | None = None
    # The model version judged (``None`` when the events and the configuration name none).
    model_version: str | None = None

    @property
    def integrity_incident(self) -> bool:
        """Whether an integrity detector fired (the window is then excluded from retraining)."""
        return any(r.drift and _is_integrity(r) for r in self.results)


def _is_integrity(r: DetectorResult) -> bool:
    spec = spec_of(r.detector)
    return spec is not None and spec.kind == "integrity"


def _flags_drift(r: DetectorResult) -> tuple[bool, bool]:
    """Whether the result's detector flags drift, and whether it is a p-value test."""
    spec = spec_of(r.detector)
    return (False, False) if spec is None else (spec.flags_drift, spec.family_test)


def auc_standard_error(auc: float, perf: dict[str, float]) -> float:
    """Hanley–McNeil standard error of an AUC measured on ``perf["positives"]`` of ``perf["n"]`` labels.

    0 when the counts are unknown (then only the fixed ``auc_drop`` applies).

    >>> round(auc_standard_error(0.8, {"n": 5000.0, "positives": 2000.0}), 4)
    0.0067
    """
    n, pos = perf.get("n", 0.0), perf.get("positives", math.nan)
    neg = n - pos
    if math.isnan(pos) or pos < 1 or neg < 1 or not 0.0 < auc < 1.0:
        return 0.0
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (pos - 1) * (q1 - auc * auc) + (neg - 1) * (q2 - auc * auc)) / (pos * neg)
    return math.sqrt(max(var, 0.0))


def f1_standard_error(perf: dict[str, float]) -> float:
    """Approximate standard error of the positive-class F1 of a rolling window.

    F1 = 2·TP / (2·TP + FP + FN) behaves like a proportion over about half of the ``positives +
    predicted positives`` events it counts; 0 when the counts are unknown (then only the relative
    drop applies).

    >>> round(f1_standard_error({"f1": 0.3, "positives": 500.0, "recall": 0.2, "precision": 0.5}), 4)
    0.0245
    """
    f1, positives = perf.get("f1"), perf.get("positives", 0.0)
    recall, precision = perf.get("recall", 0.0), perf.get("precision", 0.0)
    if f1 is None or math.isnan(f1) or not positives or not precision or math.isnan(precision):
        return 0.0
    counted = positives + recall * positives / precision
    return math.sqrt(max(f1 * (1.0 - f1), 0.0) / max(counted / 2.0, 1.0))


def mae_standard_error(perf: dict[str, float]) -> float:
    """Standard error of the rolling MAE: ``sqrt(RMSE² − MAE²) / sqrt(n)`` (the std of |error|).

    >>> round(mae_standard_error({"mae": 8.0, "rmse": 10.0, "n": 3600.0}), 3)
    0.1
    """
    mae, rmse, n = perf.get("mae"), perf.get("rmse"), perf.get("n", 0.0)
    if mae is None or rmse is None or n < 2 or math.isnan(mae) or math.isnan(rmse):
        return 0.0
    return math.sqrt(max(rmse * rmse - mae * mae, 0.0) / n)


@dataclass(frozen=True)
class PerformanceRule:
    """One performance metric against its rule in one window (:meth:`TriggerPolicy.performance_rules`).

    ``worse``: past ``limit``, a drop; ``near``: not yet back within hysteresis of the baseline.
    """

    metric: str
    value: float
    baseline: float
    limit: float
    worse: bool
    near: bool


@dataclass
class _Condition:
    streak: int = 0
    latched: bool = False
    # End of the window of the last trigger (first or escalation): cooldown and reminders count from it.
    last_fired_end: float = -math.inf
    started_at: float | None = None
    # What the condition's triggers so far said, to tell escalation from more of the same: the last
    # trigger's id and severity, and the magnitude each statistic (:func:`_magnitude`) fired with.
    fired_id: str | None = None
    fired_severity: Severity | None = None
    fired_magnitudes: dict[str, float] = field(default_factory=dict)
    fired_evidence: list[str] = field(default_factory=list)
    # Each piece of evidence (:func:`_evidence`) now present: [consecutive windows, start of the first].
    evidence: dict[str, list[float]] = field(default_factory=dict)

    def fields(self) -> list[Any]:
        """The condition as JSON values (the state format's ``conditions`` part)."""
        return [
            self.streak,
            self.latched,
            None if math.isinf(self.last_fired_end) else self.last_fired_end,
            self.started_at,
            self.fired_id,
            self.fired_severity,
            self.fired_magnitudes,
            self.fired_evidence,
            self.evidence,
        ]


def _load_condition(conditions: StateReader, kind: str, fields: int) -> _Condition:
    """One condition from its :meth:`_Condition.fields` (the first 4 in layout 2); StateError if malformed."""
    c = conditions.json_list(kind)
    if len(c) != fields:
        raise StateError(f"{conditions.what}: condition {kind!r} has {len(c)} fields, not {fields}")
    streak, latched, last, started = c[:4]
    fired_id, severity, magnitudes, fired_evidence, evidence = (
        c[4:] if len(c) == 9 else (None, None, {}, [], {})
    )
    if (
        type(streak) is not int
        or not isinstance(latched, bool)
        or not isinstance(last, int | float | None)
        or not isinstance(started, int | float | None)
        or not isinstance(fired_id, str | None)
        or severity not in (None, *SEVERITIES)
        or not isinstance(magnitudes, dict)
        or not all(isinstance(v, int | float) for v in magnitudes.values())
        or not isinstance(fired_evidence, list)
        or not all(isinstance(e, str) for e in fired_evidence)
        or not isinstance(evidence, dict)
        or not all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(x, int | float) for x in v)
            for v in evidence.values()
        )
    ):
        raise StateError(f"{conditions.what}: condition {kind!r} has fields of the wrong types")
    return _Condition(
        streak,
        latched,
        -math.inf if last is None else float(last),
        started,
        fired_id,
        severity,
        {str(k): float(v) for k, v in magnitudes.items()},
        list(fired_evidence),
        {str(k): [int(v[0]), float(v[1])] for k, v in evidence.items()},
    )


def _evidence(r: DetectorResult) -> str:
    """What a reason is evidence of: its feature, or for a model-level reason its statistic
    (``auc``, ``drift_share``): a new one while latched is escalation."""
    return r.feature if r.feature is not None else r.statistic


def _statistic(r: DetectorResult) -> str:
    return f"{r.statistic}:{r.feature}" if r.feature is not None else r.statistic


def _magnitude(r: DetectorResult, baseline: dict[str, float]) -> float:
    """How strong a reason is: a drift statistic itself; a performance metric's distance from its
    baseline (an AUC drop, an MAE rise)."""
    if r.detector == "performance":
        return abs(r.value - baseline.get(r.statistic, r.threshold))
    return r.value


class TriggerPolicy:
    """Decides, window by window, whether a model needs a retrain trigger. See the module docstring."""

    KINDS = ("data_drift", "performance", "prediction_drift", "integrity")

    def __init__(
        self,
        model_id: str,
        key_features: tuple[str, ...] = (),
        settings: PolicySettings | None = None,
        model_version: str | None = None,
        *,
        feature_weights: dict[str, float] | None = None,
        positive_class: str = "1",
        min_new_labels: int = RecommendSettings.min_new_labels,
    ) -> None:
        self.model_id = model_id
        # Labels a retrain needs (joined since the previous trigger): the one threshold behind both
        # recommendation.enough_new_labels and recommendation.labels.enough.
        self.min_new_labels = min_new_labels
        self.key_features = key_features
        # Importance of each input feature in the dataset-level share (1 when not given).
        self.feature_weights = dict(feature_weights or {})
        self.settings = settings or PolicySettings()
        self.model_version = model_version
        self.positive_class = positive_class
        self._conditions = {k: _Condition() for k in self.KINDS}
        self._history: deque[dict[str, Any]] = deque(maxlen=_HISTORY)
        self._labels_at_last_trigger = 0.0
        self._labels_at_last_window = 0.0
        self._triggers_emitted = 0

    # -- conditions ---------------------------------------------------------------------------
    def _is_key(self, feature: str | None) -> bool:
        if feature is None or feature.startswith("__"):
            return False
        return not self.key_features or feature in self.key_features

    def _data_drift(self, ev: WindowEvaluation) -> tuple[list[DetectorResult], bool]:
        """Reasons for data drift, and whether it has cleared.

        Two rules, on the detectors that flag drift (the table's ``flags_drift``): any key feature
        drifting, and the dataset rule — the importance-weighted share of all input features (not the
        prediction, not segments) with a drifting detector reaching ``dataset_drift_share``; its reasons
        are a ``dataset_drift`` result (statistic ``drift_share``) and the drifting non-key features
        (none when every drifting feature is a key feature: the key-feature rule already says it all). A
        statistic clears below ``hysteresis`` × its threshold; a p-value test clears when it no
        longer fires; the share below ``hysteresis`` × its threshold.
        """
        s = self.settings
        reasons: list[DetectorResult] = []
        others: list[DetectorResult] = []
        clear = True
        evaluated: set[str] = set()
        drifting: set[str] = set()
        for r in ev.results:
            flags, test = _flags_drift(r)
            feature = r.feature
            if not flags or feature is None or feature.startswith(("__", "segment:")):
                continue
            evaluated.add(feature)
            if r.drift:
                drifting.add(feature)
            if not self._is_key(feature):
                if r.drift:
                    others.append(r)
                continue
            if r.drift:
                reasons.append(r)
            # A p-value test holds while it fires; a statistic until it is below hysteresis × threshold.
            holds = r.drift if test else not r.value < s.hysteresis * r.threshold
            clear = clear and not holds
        total = sum(self.feature_weights.get(f, 1.0) for f in evaluated)
        share = sum(self.feature_weights.get(f, 1.0) for f in drifting) / total if total > 0 else 0.0
        # The rule speaks when it adds something: drifting features the key-feature rule does not count.
        if share >= s.dataset_drift_share and (others or not reasons):
            rule = DetectorResult("dataset_drift", None, "drift_share", share, s.dataset_drift_share, True)
            reasons += [rule, *others]
        return reasons, clear and share < s.hysteresis * s.dataset_drift_share

    def performance_rules(self, perf: dict[str, float], base: dict[str, float]) -> list[PerformanceRule]:
        """Each watched metric (AUC, the F1 of :meth:`_f1_pair`, MAE) against its rule: the rolling
        value, the baseline and the limit past which it is a drop; none below
        ``min_labels_for_performance`` labels. The performance condition and ``replay --report``
        both read it."""
        s = self.settings
        if perf.get("n", 0.0) < s.min_labels_for_performance:
            return []
        rules: list[PerformanceRule] = []
        if "auc" in perf and "auc" in base and not math.isnan(perf["auc"]):
            # The drop must be large (auc_drop) and beyond the noise of the rolling window's AUC.
            drop = max(s.auc_drop, s.performance_standard_errors * auc_standard_error(base["auc"], perf))
            limit = base["auc"] - drop
            value = perf["auc"]
            rules.append(
                PerformanceRule(
                    "auc",
                    value,
                    base["auc"],
                    limit,
                    value <= limit,
                    value <= base["auc"] - s.hysteresis * drop,
                )
            )
        f1 = self._f1_pair(perf, base)
        if f1 is not None:
            name, value, reference = f1
            drop = max(
                reference * s.f1_drop_relative, s.performance_standard_errors * f1_standard_error(perf)
            )
            limit = reference - drop
            rules.append(
                PerformanceRule(
                    name, value, reference, limit, value < limit, value < reference - s.hysteresis * drop
                )
            )
        if "mae" in perf and "mae" in base and base["mae"] > 0:
            rise = max(
                base["mae"] * s.mae_rise_relative, s.performance_standard_errors * mae_standard_error(perf)
            )
            limit = base["mae"] + rise
            value = perf["mae"]
            rules.append(
                PerformanceRule(
                    "mae", value, base["mae"], limit, value > limit, value > base["mae"] + s.hysteresis * rise
                )
            )
        return rules

    def _performance(self, ev: WindowEvaluation) -> tuple[list[DetectorResult], bool]:
        if ev.performance.get("n", 0.0) < self.settings.min_labels_for_performance:
            return [], False
        rules = self.performance_rules(ev.performance, ev.baseline)
        reasons = [
            DetectorResult("performance", None, r.metric, r.value, r.limit, drift=True)
            for r in rules
            if r.worse
        ]
        return reasons, not reasons and not any(r.near for r in rules)

    def _f1_pair(self, perf: dict[str, float], base: dict[str, float]) -> tuple[str, float, float] | None:
        """The F1 to watch: ``(name, rolling value, baseline)``, or None when either side is unknown.

        ``f1:<key_class>`` when both the rolling metrics and the baseline carry it; for a binary model
        whose key class is its positive class (or no key class), the positive-class ``f1``; for a
        multiclass model without a key class, ``macro_f1``.
        """
        k = self.settings.key_class
        candidates = [f"f1:{k}"] if k is not None else []
        if k is None or k == self.positive_class:
            candidates.append("f1")
        if k is None:
            candidates.append("macro_f1")  # multiclass without a key class
        for name in candidates:
            value, reference = perf.get(name, math.nan), base.get(name, math.nan)
            if not math.isnan(value) and not math.isnan(reference) and reference > 0:
                return name, value, reference
        return None

    def labels_fresh(self, ev: WindowEvaluation) -> bool:
        """Whether joined labels describe this window well enough for performance to speak for itself.

        They do not when the rolling window holds fewer than ``min_labels_for_performance`` labels, when
        fewer than that many joined since the previous window (labels stopped or are scarce), or when the
        median label delay is longer than the window (the labels are about older predictions).
        """
        s = self.settings
        need = s.min_labels_for_performance
        if ev.performance.get("n", 0.0) < need:
            return False
        if ev.labels.get("joined_total", 0.0) - self._labels_at_last_window < need:
            return False
        delay = ev.labels.get("delay_p50", math.nan)
        return not (not math.isnan(delay) and delay > ev.end - ev.start)

    def _prediction_drift(self, ev: WindowEvaluation) -> tuple[list[DetectorResult], bool]:
        """Prediction-distribution drift; only consulted while labels are not fresh (see decide)."""
        s = self.settings
        preds = [r for r in ev.results if r.feature == PREDICTION and r.detector == PSI.name]
        reasons = [
            DetectorResult(r.detector, r.feature, r.statistic, r.value, s.prediction_psi_alarm, drift=True)
            for r in preds
            if r.value >= s.prediction_psi_alarm
        ]
        clear = all(r.value < s.hysteresis * s.prediction_psi_alarm for r in preds)
        return reasons, clear

    def _integrity(self, ev: WindowEvaluation) -> tuple[list[DetectorResult], bool]:
        if not self.settings.integrity_triggers:
            return [], True
        reasons = [r for r in ev.results if r.drift and _is_integrity(r)]
        return reasons, not reasons

    # -- decisions ----------------------------------------------------------------------------
    def decide(self, ev: WindowEvaluation) -> list[Trigger]:
        """Update the sustained-condition state with one window; return the triggers it fires.

        The triggers are not emitted yet (``emitted_at`` is None): the front end stamps its wall clock.
        """
        s = self.settings
        self._history.append(
            {"index": ev.index, "start": ev.start, "end": ev.end, "incident": ev.integrity_incident}
        )
        fired: dict[TriggerKind, list[DetectorResult]] = {}
        fresh = self.labels_fresh(ev)
        self._labels_at_last_window = ev.labels.get("joined_total", self._labels_at_last_window)
        checks: dict[TriggerKind, tuple[Callable[[WindowEvaluation], _Verdict], int]] = {
            "data_drift": (self._data_drift, s.consecutive_windows),
            "performance": (self._performance, s.performance_windows),
            "prediction_drift": (self._prediction_drift, s.consecutive_windows),
            "integrity": (self._integrity, s.integrity_windows),
        }
        escalations: dict[TriggerKind, list[str]] = {}
        escalate = (s.escalation_factor, s.renotify_after_seconds)
        for kind, (check, needed) in checks.items():
            if kind == "prediction_drift" and fresh:
                # Labels are flowing: performance itself speaks, prediction drift is only a proxy.
                reasons: list[DetectorResult] = []
                clear = True
            else:
                reasons, clear = check(ev)
            cond = self._conditions[kind]
            present = {_evidence(r) for r in reasons}
            cond.evidence = {
                e: [cond.evidence[e][0] + 1, cond.evidence[e][1]] if e in cond.evidence else [1, ev.start]
                for e in sorted(present)
            }
            if reasons:
                cond.streak += 1
                if cond.started_at is None:
                    cond.started_at = ev.start
            else:
                cond.streak = 0
                if clear:
                    cond.latched = False
                    cond.started_at = None
                    cond.fired_id, cond.fired_severity = None, None
                    cond.fired_magnitudes, cond.fired_evidence = {}, []
            if cond.streak < needed or ev.end - cond.last_fired_end < s.cooldown_seconds:
                continue
            if not cond.latched:
                fired[kind] = reasons
            elif why := self._escalation(kind, cond, reasons, ev, needed, escalate):
                fired[kind] = reasons
                escalations[kind] = why
        if not fired:
            return []
        for kind, reasons in fired.items():
            c = self._conditions[kind]
            c.latched = True
            c.last_fired_end = ev.end
            magnitudes = {_statistic(r): _magnitude(r, ev.baseline) for r in reasons}
            c.fired_magnitudes.update({k: v for k, v in magnitudes.items() if math.isfinite(v)})
            c.fired_evidence = sorted(set(c.fired_evidence) | {_evidence(r) for r in reasons})
            c.fired_severity = max(
                (c.fired_severity, self._severity(kind, reasons)), key=lambda v: v == "critical"
            )
        # The previous trigger of each fired kind: what an escalation supersedes.
        previous = {kind: self._conditions[kind].fired_id for kind in fired}
        # Performance + data drift in the same window is one decision, not two pages.
        if "data_drift" in fired and "performance" in fired:
            fired = {"combined": fired.pop("performance") + fired.pop("data_drift"), **fired}
        # Prediction drift alongside feature drift is the same story: one trigger carries both.
        main = next((k for k in ("combined", "data_drift") if k in fired), None)
        if main is not None and "prediction_drift" in fired:
            fired[main] = fired[main] + fired.pop("prediction_drift")
        causes: dict[TriggerKind, tuple[TriggerKind, ...]] = {
            "combined": ("data_drift", "performance", "prediction_drift"),
            "data_drift": ("data_drift", "prediction_drift"),
        }
        triggers = []
        for kind, reasons in fired.items():
            kinds = [k for k in causes.get(kind, (kind,)) if k in previous]
            why = [w for k in kinds for w in escalations.get(k, [])]
            # A trigger escalates when one of its conditions escalated; a condition firing afresh
            # alongside it does not make it new.
            escalated = [k for k in kinds if k in escalations]
            supersedes = previous[escalated[0]] if escalated else None
            # Evidence that is new tells a new story: it started when that evidence started.
            new_since = [
                self._conditions[k].evidence[w[4:]][1]
                for k in escalated
                for w in escalations[k]
                if w.startswith("new:") and w[4:] in self._conditions[k].evidence
            ]
            trigger = self._trigger(
                kind,
                reasons,
                ev,
                causes.get(kind, (kind,)),
                supersedes=supersedes,
                escalation=tuple(why) or None,
                started_at=min(new_since, default=None),
            )
            for k in kinds:
                self._conditions[k].fired_id = trigger.trigger_id
            triggers.append(trigger)
        return triggers

    def _escalation(
        self,
        kind: TriggerKind,
        cond: _Condition,
        reasons: list[DetectorResult],
        ev: WindowEvaluation,
        needed: int,
        escalate: tuple[float, float],
    ) -> list[str]:
        """Why a latched condition fires again (empty: it does not). See the module docstring.

        Only evidence that has held for the condition's ``needed`` windows escalates, as it would fire.
        ``escalate`` is ``(escalation_factor, renotify_after_seconds)``.
        """
        factor, renotify_after = escalate
        sustained = [r for r in reasons if cond.evidence[_evidence(r)][0] >= needed]
        why: list[str] = []
        if self._severity(kind, sustained) == "critical" and cond.fired_severity != "critical":
            why.append("severity")
        why += [f"new:{e}" for e in sorted({_evidence(r) for r in sustained} - set(cond.fired_evidence))]
        for r in sustained:
            fired_with = cond.fired_magnitudes.get(_statistic(r))
            if fired_with and _magnitude(r, ev.baseline) >= factor * fired_with:
                why.append(f"stronger:{_statistic(r)}")
        if not why and renotify_after > 0 and ev.end - cond.last_fired_end >= renotify_after:
            why.append("reminder")
        return why

    def _severity(self, kind: TriggerKind, reasons: list[DetectorResult]) -> Severity:
        if kind in ("performance", "combined"):
            return "critical"
        if kind == "data_drift":
            # Severity speaks of input features: folded-in prediction drift does not raise it.
            features = [r for r in reasons if self._is_key(r.feature)]
            psis = [r.value for r in features if r.detector == PSI.name]
            # The strongest evidence decides, not how many features moved: correlated key features
            # (temperature and felt temperature) drift together and are one piece of evidence.
            if psis and max(psis) >= self.settings.psi_critical:
                return "critical"
        return "warning"

    def _recommendation(
        self,
        kind: TriggerKind,
        ev: WindowEvaluation,
        causes: tuple[TriggerKind, ...],
        started_at: float | None = None,
    ) -> Recommendation:
        new_labels = ev.labels.get("joined_total", 0.0) - self._labels_at_last_trigger
        enough_labels = new_labels >= self.min_new_labels
        action: Action
        if kind == "integrity":
            action = "investigate"
        elif kind == "prediction_drift" or not enough_labels:
            # A retrain learns the new regime from the labels joined since the last decision: until
            # enough have joined, the advice is to wait (recommendation.labels says until when).
            action = "wait_for_labels"
        else:
            action = "retrain"
        # The drift started when the earliest of the conditions behind this trigger started to hold.
        starts = [self._conditions[c].started_at for c in causes]
        started = min((t for t in starts if t is not None), default=ev.start)
        if started_at is not None:  # an escalation on new evidence: the new drift's start
            started = started_at
        exclude = tuple(
            ExcludedPeriod(start=h["start"], end=h["end"], reason="integrity_incident")
            for h in self._history
            if h["incident"]
        )
        train_on = tuple(
            Period(start=h["start"], end=h["end"])
            for h in reversed(self._history)
            if h["start"] >= started and not h["incident"]
        )
        segments = sorted(
            {r.feature for r in ev.results if r.drift and r.feature and r.feature.startswith("segment:")}
        )
        return Recommendation(
            action=action,
            drift_started_at=started,
            train_on=train_on,
            exclude=exclude,
            segments_needing_attention=tuple(segments),
            new_labels_since_last_trigger=new_labels,
            enough_new_labels=enough_labels,
        )

    def _trigger(
        self,
        kind: TriggerKind,
        reasons: list[DetectorResult],
        ev: WindowEvaluation,
        causes: tuple[TriggerKind, ...],
        *,
        supersedes: str | None = None,
        escalation: tuple[str, ...] | None = None,
        started_at: float | None = None,
    ) -> Trigger:
        recommendation = self._recommendation(kind, ev, causes, started_at)
        self._labels_at_last_trigger = ev.labels.get("joined_total", 0.0)
        self._triggers_emitted += 1
        return build_trigger(
            model_id=self.model_id,
            model_version=self.model_version,
            kind=kind,
            severity=self._severity(kind, reasons),
            decision=kind,
            index=ev.index,
            at=ev.end,
            event_time=ev.end,
            window=Window(start=ev.start, end=ev.end, events=ev.events),
            results=reasons,
            evidence=WindowEvidence(
                events_in_window=ev.events,
                window_index=ev.index,
                labels_joined=ev.labels.get("joined_total", 0.0),
                labels_pending=ev.labels.get("pending", 0.0),
                label_delay_seconds=ev.labels.get("delay_p50", math.nan),
                performance=ev.performance,
                baseline=ev.baseline,
            ),
            recommendation=recommendation,
            supersedes=supersedes,
            escalation=escalation,
        )

    # -- state --------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """The sustained-condition state (streaks, latches, cooldowns, history) as a container of
        :mod:`stream_monitor.core.state_format`; the settings come from the configuration."""
        return state_format.tagged(
            "trigger_policy",
            _FORMAT,
            conditions={k: c.fields() for k, c in self._conditions.items()},
            history=list(self._history),
            labels_at_last_trigger=self._labels_at_last_trigger,
            labels_at_last_window=self._labels_at_last_window,
            triggers_emitted=self._triggers_emitted,
        )

    @state_format.restoring
    def load_state(self, state: StateReader | dict[str, Any]) -> None:
        """Load state written by :meth:`to_state` into this policy; :class:`StateError` if it does not fit."""
        r = state if isinstance(state, StateReader) else StateReader(state, f"model {self.model_id}: policy")
        # Layout 2 (no escalation state) restores with none: the next escalation compares with nothing.
        layout = r.parts.get("format")
        r.expect("trigger_policy", 2 if layout == 2 else _FORMAT)
        conditions = r.child("conditions")
        fields = 4 if layout == 2 else 9
        loaded = {k: _load_condition(conditions, k, fields) for k in conditions.parts}
        unknown = set(loaded) - set(self._conditions)
        if unknown:
            raise StateError(f"{conditions.what}: unknown conditions {sorted(unknown)}")
        history = r.json_list("history", dict)
        if not all({"index", "start", "end", "incident"} <= set(h) for h in history):
            raise StateError(f"{r.what}: history entries lack index, start, end or incident")
        self._conditions.update(loaded)
        self._history = deque(history, maxlen=_HISTORY)
        self._labels_at_last_trigger = r.number("labels_at_last_trigger")
        self._labels_at_last_window = r.number("labels_at_last_window")
        self._triggers_emitted = r.integer("triggers_emitted", min_value=0)

    def snapshot(self) -> bytes:
        """The sustained-condition state as bytes (:meth:`to_state` in the one state format)."""
        return state_format.encode(self.to_state())

    def restore_state(self, data: bytes) -> None:
        """Load state written by :meth:`snapshot` into this policy (settings come from config)."""
        self.load_state(state_format.decode(data))
