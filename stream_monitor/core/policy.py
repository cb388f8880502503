"""Trigger policy: turns per-window detector results into retrain-trigger events.

Only sustained conditions trigger (seed 002): data drift on a key feature for ``consecutive_windows``
windows, a performance drop for ``performance_windows`` windows, prediction drift while labels are
delayed, or an integrity incident. New data arriving never triggers by itself. A fired condition stays
latched until its statistic falls below ``hysteresis × threshold`` (no flapping), and a kind does not
fire again within ``cooldown_seconds`` of event time (no alert storms). Time is event time from the
windows, never the wall clock, so a replay or a restored monitor makes the same decisions and the
same deterministic ``trigger_id``.

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

_FORMAT = 2  # 1 was JSON
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


@dataclass
class _Condition:
    streak: int = 0
    latched: bool = False
    last_fired_end: float = -math.inf
    started_at: float | None = None


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
        positive_class: str = "1",
        min_new_labels: int = RecommendSettings.min_new_labels,
    ) -> None:
        self.model_id = model_id
        # Labels a retrain needs (joined since the previous trigger): the one threshold behind both
        # recommendation.enough_new_labels and recommendation.labels.enough.
        self.min_new_labels = min_new_labels
        self.key_features = key_features
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
        """Reasons for data drift on key features, and whether it has cleared.

        The detectors that flag drift (the table's ``flags_drift``) count. A statistic clears below
        ``hysteresis`` × its threshold; a p-value test clears when it no longer fires.
        """
        reasons: list[DetectorResult] = []
        clear = True
        for r in ev.results:
            flags, test = _flags_drift(r)
            if not flags or not self._is_key(r.feature):
                continue
            if r.drift:
                reasons.append(r)
            # A p-value test holds while it fires; a statistic until it is below hysteresis × threshold.
            holds = r.drift if test else not r.value < self.settings.hysteresis * r.threshold
            clear = clear and not holds
        return reasons, clear

    def _performance(self, ev: WindowEvaluation) -> tuple[list[DetectorResult], bool]:
        s = self.settings
        perf, base = ev.performance, ev.baseline
        if perf.get("n", 0.0) < s.min_labels_for_performance:
            return [], False
        reasons: list[DetectorResult] = []
        clear = True

        def check(name: str, value: float, threshold: float, worse: bool, near: bool) -> None:
            nonlocal clear
            if worse:
                reasons.append(DetectorResult("performance", None, name, value, threshold, drift=True))
            if near:
                clear = False

        if "auc" in perf and "auc" in base and not math.isnan(perf["auc"]):
            # The drop must be large (auc_drop) and beyond the noise of the rolling window's AUC.
            drop = max(s.auc_drop, s.performance_standard_errors * auc_standard_error(base["auc"], perf))
            limit = base["auc"] - drop
            check(
                "auc",
                perf["auc"],
                limit,
                perf["auc"] <= limit,
                perf["auc"] <= base["auc"] - s.hysteresis * drop,
            )
        f1 = self._f1_pair(perf, base)
        if f1 is not None:
            name, value, reference = f1
            drop = max(
                reference * s.f1_drop_relative, s.performance_standard_errors * f1_standard_error(perf)
            )
            limit = reference - drop
            check(name, value, limit, value < limit, value < reference - s.hysteresis * drop)
        if "mae" in perf and "mae" in base and base["mae"] > 0:
            rise = max(
                base["mae"] * s.mae_rise_relative, s.performance_standard_errors * mae_standard_error(perf)
            )
            limit = base["mae"] + rise
            check(
                "mae",
                perf["mae"],
                limit,
                perf["mae"] > limit,
                perf["mae"] > base["mae"] + s.hysteresis * rise,
            )
        return reasons, clear and not reasons

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
        for kind, (check, needed) in checks.items():
            if kind == "prediction_drift" and fresh:
                # Labels are flowing: performance itself speaks, prediction drift is only a proxy.
                reasons: list[DetectorResult] = []
                clear = True
            else:
                reasons, clear = check(ev)
            cond = self._conditions[kind]
            if reasons:
                cond.streak += 1
                if cond.started_at is None:
                    cond.started_at = ev.start
            else:
                cond.streak = 0
                if clear:
                    cond.latched = False
                    cond.started_at = None
            if (
                cond.streak >= needed
                and not cond.latched
                and ev.end - cond.last_fired_end >= s.cooldown_seconds
            ):
                fired[kind] = reasons
        if not fired:
            return []
        for kind in fired:
            c = self._conditions[kind]
            c.latched = True
            c.last_fired_end = ev.end
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
        return [
            self._trigger(kind, reasons, ev, causes.get(kind, (kind,))) for kind, reasons in fired.items()
        ]

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
        self, kind: TriggerKind, ev: WindowEvaluation, causes: tuple[TriggerKind, ...]
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
    ) -> Trigger:
        recommendation = self._recommendation(kind, ev, causes)
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
        )

    # -- state --------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """The sustained-condition state (streaks, latches, cooldowns, history) as a container of
        :mod:`stream_monitor.core.state_format`; the settings come from the configuration."""
        return state_format.tagged(
            "trigger_policy",
            _FORMAT,
            conditions={
                k: [
                    c.streak,
                    c.latched,
                    None if math.isinf(c.last_fired_end) else c.last_fired_end,
                    c.started_at,
                ]
                for k, c in self._conditions.items()
            },
            history=list(self._history),
            labels_at_last_trigger=self._labels_at_last_trigger,
            labels_at_last_window=self._labels_at_last_window,
            triggers_emitted=self._triggers_emitted,
        )

    @state_format.restoring
    def load_state(self, state: StateReader | dict[str, Any]) -> None:
        """Load state written by :meth:`to_state` into this policy; :class:`StateError` if it does not fit."""
        r = state if isinstance(state, StateReader) else StateReader(state, f"model {self.model_id}: policy")
        r.expect("trigger_policy", _FORMAT)
        conditions = r.child("conditions")
        loaded = {}
        for k in conditions.parts:
            c = conditions.json_list(k)
            if k not in self._conditions or len(c) != 4:
                raise StateError(f"{conditions.what}: unknown condition {k!r} or not 4 fields")
            streak, latched, last, started = c
            if (
                type(streak) is not int
                or not isinstance(latched, bool)
                or not isinstance(last, int | float | None)
                or not isinstance(started, int | float | None)
            ):
                raise StateError(f"{conditions.what}: condition {k!r} has fields of the wrong types")
            loaded[k] = _Condition(streak, latched, -math.inf if last is None else float(last), started)
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
