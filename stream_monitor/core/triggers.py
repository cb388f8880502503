"""The retrain-trigger event: one typed contract, built in one place, serialised in one place.

A :class:`Trigger` is what the policy (:mod:`stream_monitor.core.policy`) and the insight tracker
(:mod:`stream_monitor.core.insights.tracker`) decide, what :class:`~stream_monitor.core.monitor.MonitorOutput`
carries, and what every front end emits: the Kafka service to the ``retrain-triggers`` topic (key =
``model_id``), ``replay`` and ``demo`` as JSON lines. They all build it with :func:`build_trigger` and
write it with :meth:`Trigger.to_json_bytes`; consumers and tests read it back with
:meth:`Trigger.from_dict`.

The JSON object (README, "The contract"), field by field:

- ``trigger_id`` — deterministic (:func:`trigger_id`): the same decision re-made after a restart has
  the same id, so consumers deduplicate on it;
- ``model_id``, ``model_version`` (``null`` when the configuration names none);
- ``emitted_at`` — wall clock (epoch seconds) when a front end emitted it (:meth:`Trigger.with_emitted_at`);
  ``null`` on a trigger not emitted yet: the pure core has no wall clock;
- ``event_time`` — the event time of the decision (the end of the deciding window);
- ``severity`` (``warning``/``critical``) and ``kind`` (``data_drift``, ``prediction_drift``,
  ``performance``, ``integrity``, ``combined``);
- ``reasons`` — one :class:`Reason` per detector verdict behind the decision: ``detector``, ``feature``
  (``null`` for a model-level metric, ``__prediction__`` for the prediction), ``statistic``, ``value``,
  ``threshold``, ``p_value`` (the Holm-adjusted p-value of a test, else ``null``) and ``window``
  (``start``, ``end``, ``events``);
- ``evidence`` — for a window decision (:class:`WindowEvidence`): ``events_in_window``,
  ``window_index``, ``labels_joined``, ``labels_pending``, ``label_delay_seconds`` (median; ``null``
  before any label joined), ``performance`` and ``baseline`` (metric → value, ``null`` when unknown);
  for a segment surge (:class:`SegmentSurgeEvidence`): ``events_in_window``, ``segment_share``,
  ``segment_baseline_share`` and ``segment_drift`` (the segment's drift summary);
- ``supersedes`` and ``escalation`` — only on a trigger that escalates a latched condition (see
  :mod:`stream_monitor.core.policy`): the ``trigger_id`` it supersedes and why, a list of
  ``new:<feature or metric>``, ``stronger:<statistic>[:<feature>]``, ``severity`` or ``reminder``;
- ``recommendation`` (:class:`Recommendation`) — ``action`` (``retrain``/``investigate``/
  ``wait_for_labels``), ``drift_started_at``, ``train_on`` periods, ``exclude`` periods with their
  ``reason`` (and ``detail``), ``segments_needing_attention``, ``new_labels_since_last_trigger``,
  ``enough_new_labels``, and the insight: ``segments``, ``labels`` (:class:`LabelOutlook`), ``regimes``,
  ``train_on_buckets``, ``basis`` (``windows`` or ``buckets``). A segment-surge trigger (``action:
  investigate``) carries only ``action``, ``segments_needing_attention`` and
  ``new_labels_since_last_trigger``: fields that do not apply are left out of the JSON, not ``null``.

JSON has no NaN: an unknown number is ``None`` here and ``null`` there, so a trigger read back with
:meth:`Trigger.from_dict` equals the one written.

>>> w = Window(start=0.0, end=3600.0, events=5000)
>>> t = build_trigger(
...     model_id="bikes", model_version=None, kind="data_drift", severity="warning",
...     decision="data_drift", index=0, at=3600.0, event_time=3600.0, window=w,
...     results=[DetectorResult("psi", "temp", "psi", 0.21, 0.15, drift=True)],
...     evidence=WindowEvidence(events_in_window=5000, window_index=0, labels_joined=0.0,
...                             labels_pending=0.0, label_delay_seconds=float("nan")),
...     recommendation=Recommendation(action="wait_for_labels"))
>>> t.emitted_at is None, t.evidence.label_delay_seconds
(True, None)
>>> emitted = t.with_emitted_at(1.7e9)
>>> d = emitted.to_dict()
>>> d["emitted_at"], d["reasons"][0]["window"]
(1700000000.0, {'start': 0.0, 'end': 3600.0, 'events': 5000})
>>> d["recommendation"]  # fields that do not apply are left out
{'action': 'wait_for_labels', 'segments_needing_attention': [], 'new_labels_since_last_trigger': 0.0}
>>> Trigger.from_dict(emitted.to_dict()) == emitted
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args

import orjson

from stream_monitor.core.detectors.base import DetectorResult

__all__ = [
    "ACTIONS",
    "SEVERITIES",
    "TRIGGER_KINDS",
    "Action",
    "ExcludedPeriod",
    "LabelOutlook",
    "Period",
    "Reason",
    "Recommendation",
    "RegimeSummary",
    "SegmentSurgeEvidence",
    "Severity",
    "Trigger",
    "TriggerKind",
    "Window",
    "WindowEvidence",
    "build_trigger",
    "trigger_id",
]

TriggerKind = Literal["data_drift", "prediction_drift", "performance", "integrity", "combined"]
Severity = Literal["warning", "critical"]
Action = Literal["retrain", "investigate", "wait_for_labels"]
Basis = Literal["windows", "buckets"]
TRIGGER_KINDS: tuple[TriggerKind, ...] = get_args(TriggerKind)
SEVERITIES: tuple[Severity, ...] = get_args(Severity)
ACTIONS: tuple[Action, ...] = get_args(Action)
_BASES: tuple[Basis, ...] = get_args(Basis)

# A field that does not apply to every trigger: None means "not part of this trigger", and the
# field is left out of the JSON (rather than written as null).
_OPTIONAL = {"omit_if_none": True}
_L = TypeVar("_L", bound=str)


def _known(value: Any) -> float | None:
    """A number as a plain Python one, or None when it is unknown (None or NaN): JSON's ``null``."""
    number = value.item() if hasattr(value, "item") else value  # numpy scalars
    if number is None or (isinstance(number, float) and math.isnan(number)):
        return None
    return number


def _numbers(values: Mapping[str, Any]) -> dict[str, float | None]:
    return {str(k): _known(v) for k, v in values.items()}


def _one_of(value: Any, allowed: tuple[_L, ...], name: str) -> _L:
    if value not in allowed:
        raise ValueError(f"trigger field {name}: {value!r} is not one of {', '.join(allowed)}")
    return value


def trigger_id(model_id: str, decision: str, index: int, at: float, model_version: str | None = None) -> str:
    """A deterministic id: the same decision on the same window always gets the same id.

    ``decision`` is what was decided (the kind, or ``segment_surge:<segment>``), ``index`` and ``at``
    the window (or bucket) that decided it and one of its bounds. Two versions of a model judged
    side by side decide on the same windows: a named version is part of the id.

    >>> trigger_id("bikes", "data_drift", 7, 1700000000.0) == trigger_id("bikes", "data_drift", 7, 1.7e9)
    True
    >>> trigger_id("bikes", "data_drift", 7, 1.7e9, "2") == trigger_id("bikes", "data_drift", 7, 1.7e9, "3")
    False
    """
    model = model_id if model_version is None else f"{model_id}@{model_version}"
    key = f"{model}|{decision}|{index}|{at!r}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


@dataclass(frozen=True, kw_only=True)
class Window:
    """The stretch of event time a reason was measured on."""

    start: float
    end: float
    events: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Window:
        return cls(start=d["start"], end=d["end"], events=d["events"])


@dataclass(frozen=True, kw_only=True)
class Reason:
    """One detector verdict behind a trigger."""

    detector: str
    feature: str | None
    statistic: str
    value: float
    threshold: float
    p_value: float | None
    window: Window

    @classmethod
    def from_result(cls, r: DetectorResult, window: Window) -> Reason:
        return cls(
            detector=r.detector,
            feature=r.feature,
            statistic=r.statistic,
            value=float(r.value),
            threshold=float(r.threshold),
            p_value=None if r.p_value is None else float(r.p_value),
            window=window,
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reason:
        return cls(
            detector=d["detector"],
            feature=d["feature"],
            statistic=d["statistic"],
            value=d["value"],
            threshold=d["threshold"],
            p_value=d["p_value"],
            window=Window.from_dict(d["window"]),
        )


@dataclass(frozen=True, kw_only=True)
class WindowEvidence:
    """What the policy saw in the deciding window: volume, labels, performance against the baseline."""

    events_in_window: int
    window_index: int
    labels_joined: float
    labels_pending: float
    label_delay_seconds: float | None
    performance: Mapping[str, float | None] = field(default_factory=dict)
    baseline: Mapping[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # NaN (unknown) is None: JSON has no NaN, and a trigger read back must equal the one written.
        object.__setattr__(self, "label_delay_seconds", _known(self.label_delay_seconds))
        object.__setattr__(self, "performance", _numbers(self.performance))
        object.__setattr__(self, "baseline", _numbers(self.baseline))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WindowEvidence:
        return cls(
            events_in_window=d["events_in_window"],
            window_index=d["window_index"],
            labels_joined=d["labels_joined"],
            labels_pending=d["labels_pending"],
            label_delay_seconds=d["label_delay_seconds"],
            performance=dict(d["performance"]),
            baseline=dict(d["baseline"]),
        )


@dataclass(frozen=True, kw_only=True)
class SegmentSurgeEvidence:
    """What a segment surge showed: its share of traffic then and before, and its drift."""

    events_in_window: int
    segment_share: float
    segment_baseline_share: float
    # The segment's drift summary: ``SegmentDrift.to_dict()`` (stream_monitor.core.insights.segments).
    segment_drift: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SegmentSurgeEvidence:
        return cls(
            events_in_window=d["events_in_window"],
            segment_share=d["segment_share"],
            segment_baseline_share=d["segment_baseline_share"],
            segment_drift=dict(d["segment_drift"]),
        )


@dataclass(frozen=True, kw_only=True)
class Period:
    """A period to train on: its event-time bounds (and bucket count when it is made of buckets)."""

    start: float
    end: float
    buckets: int | None = field(default=None, metadata=_OPTIONAL)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Period:
        return cls(start=d["start"], end=d["end"], buckets=d.get("buckets"))


@dataclass(frozen=True, kw_only=True)
class ExcludedPeriod:
    """A period to leave out of retraining, and why (``integrity_incident``, ``one_off_regime``, …)."""

    start: float
    end: float
    buckets: int | None = field(default=None, metadata=_OPTIONAL)
    reason: str
    detail: str | None = field(default=None, metadata=_OPTIONAL)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExcludedPeriod:
        return cls(
            start=d["start"],
            end=d["end"],
            buckets=d.get("buckets"),
            reason=d["reason"],
            detail=d.get("detail"),
        )


@dataclass(frozen=True, kw_only=True)
class LabelOutlook:
    """New labels since the last trigger and when enough will have joined for a retrain to pay off."""

    new_labels: float
    needed: int
    arrival_rate_per_hour: float
    enough: bool
    ready_at: float | None
    hours_to_go: float | None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LabelOutlook:
        return cls(
            new_labels=d["new_labels"],
            needed=d["needed"],
            arrival_rate_per_hour=d["arrival_rate_per_hour"],
            enough=d["enough"],
            ready_at=d["ready_at"],
            hours_to_go=d["hours_to_go"],
        )


@dataclass(frozen=True, kw_only=True)
class RegimeSummary:
    """One regime of the data DNA as the recommendation reports it."""

    id: int
    kind: str
    buckets: int
    recent: bool
    period_buckets: float | None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RegimeSummary:
        return cls(
            id=d["id"],
            kind=d["kind"],
            buckets=d["buckets"],
            recent=d["recent"],
            period_buckets=d["period_buckets"],
        )


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    """What to do about a trigger and on which data (see the module docstring for each field)."""

    action: Action
    drift_started_at: float | None = field(default=None, metadata=_OPTIONAL)
    train_on: tuple[Period, ...] | None = field(default=None, metadata=_OPTIONAL)
    exclude: tuple[ExcludedPeriod, ...] | None = field(default=None, metadata=_OPTIONAL)
    segments_needing_attention: tuple[str, ...] = ()
    new_labels_since_last_trigger: float = 0.0
    enough_new_labels: bool | None = field(default=None, metadata=_OPTIONAL)
    # Segment drift summaries (``SegmentDrift.to_dict()``), largest drift × share first.
    segments: tuple[dict[str, Any], ...] | None = field(default=None, metadata=_OPTIONAL)
    labels: LabelOutlook | None = field(default=None, metadata=_OPTIONAL)
    regimes: tuple[RegimeSummary, ...] | None = field(default=None, metadata=_OPTIONAL)
    train_on_buckets: int | None = field(default=None, metadata=_OPTIONAL)
    basis: Basis | None = field(default=None, metadata=_OPTIONAL)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recommendation:
        def each(key: str, parse: Any) -> Any:
            return None if d.get(key) is None else tuple(parse(x) for x in d[key])

        return cls(
            action=_one_of(d["action"], ACTIONS, "recommendation.action"),
            drift_started_at=d.get("drift_started_at"),
            train_on=each("train_on", Period.from_dict),
            exclude=each("exclude", ExcludedPeriod.from_dict),
            segments_needing_attention=tuple(d.get("segments_needing_attention", ())),
            new_labels_since_last_trigger=d.get("new_labels_since_last_trigger", 0.0),
            enough_new_labels=d.get("enough_new_labels"),
            segments=each("segments", dict),
            labels=None if d.get("labels") is None else LabelOutlook.from_dict(d["labels"]),
            regimes=each("regimes", RegimeSummary.from_dict),
            train_on_buckets=d.get("train_on_buckets"),
            basis=None if d.get("basis") is None else _one_of(d["basis"], _BASES, "recommendation.basis"),
        )


#: Where the reference a model version is judged against came from (see core/versions.py):
#: ``configured`` the configuration's file, ``registry`` published for that version
#: (``stream-monitor reference publish``), ``previous`` none of its own: another version's reference,
#: ``warmup`` none of its own: warmed up from the version's first live events.
ReferenceSource = Literal["configured", "registry", "previous", "warmup"]
REFERENCE_SOURCES: tuple[ReferenceSource, ...] = ("configured", "registry", "previous", "warmup")


@dataclass(frozen=True, kw_only=True)
class ReferenceUsed:
    """The reference a model version was judged against: its ``source`` and the model version it
    was built for (``None``: unnamed — the configuration names no version, or warmed up)."""

    source: ReferenceSource
    version: str | None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceUsed:
        return cls(source=_one_of(d["source"], REFERENCE_SOURCES, "reference.source"), version=d["version"])


#: ``kind`` of the lifecycle record the triggers topic also carries (:class:`ModelVersionChanged`).
MODEL_VERSION_CHANGED: Literal["model_version_changed"] = "model_version_changed"


@dataclass(frozen=True, kw_only=True)
class ModelVersionChanged:
    """A lifecycle record on the triggers topic: a new version of a model started in the stream.

    ``record_id`` is deterministic (model, version, previous version), so the partition-tasks that
    each see the new version, and a replay after a crash, emit the same id: consumers deduplicate on
    it as they do on ``trigger_id``. ``previous_version`` is the newest version active before it
    (``null`` for a model's first version); ``active_versions`` are the versions watched after the
    change (newest last), ``retired_versions`` the ones this change retired; ``reference`` what the
    new version is judged against. It has no ``recommendation``: a consumer of retrain triggers
    filters on ``kind`` first.

    >>> r = ModelVersionChanged.build("bikes", "2", "1", 1.7e9, ("1", "2"), (),
    ...                               ReferenceUsed(source="previous", version="1"))
    >>> d = orjson.loads(r.with_emitted_at(1.7e9).to_json_bytes())
    >>> d["kind"], d["model_version"], d["previous_version"], d["reference"]
    ('model_version_changed', '2', '1', {'source': 'previous', 'version': '1'})
    >>> ModelVersionChanged.from_dict(d) == r.with_emitted_at(1.7e9)
    True
    """

    record_id: str
    kind: Literal["model_version_changed"]
    model_id: str
    model_version: str | None
    previous_version: str | None
    emitted_at: float | None
    event_time: float
    active_versions: tuple[str | None, ...]
    retired_versions: tuple[str | None, ...]
    reference: ReferenceUsed

    @classmethod
    def build(
        cls,
        model_id: str,
        version: str | None,
        previous: str | None,
        event_time: float,
        active: tuple[str | None, ...],
        retired: tuple[str | None, ...],
        reference: ReferenceUsed,
    ) -> ModelVersionChanged:
        key = orjson.dumps([model_id, MODEL_VERSION_CHANGED, version, previous])
        return cls(
            record_id=hashlib.sha256(key).hexdigest()[:32],
            kind=MODEL_VERSION_CHANGED,
            model_id=model_id,
            model_version=version,
            previous_version=previous,
            emitted_at=None,
            event_time=float(event_time),
            active_versions=active,
            retired_versions=retired,
            reference=reference,
        )

    def with_emitted_at(self, emitted_at: float) -> ModelVersionChanged:
        return dataclasses.replace(self, emitted_at=emitted_at)

    def to_json_bytes(self) -> bytes:
        return orjson.dumps(self, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATACLASS)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelVersionChanged:
        if d["kind"] != MODEL_VERSION_CHANGED:
            raise ValueError(f"kind must be {MODEL_VERSION_CHANGED}, got {d['kind']!r}")
        return cls(
            record_id=d["record_id"],
            kind=MODEL_VERSION_CHANGED,
            model_id=d["model_id"],
            model_version=d["model_version"],
            previous_version=d["previous_version"],
            emitted_at=d["emitted_at"],
            event_time=d["event_time"],
            active_versions=tuple(d["active_versions"]),
            retired_versions=tuple(d["retired_versions"]),
            reference=ReferenceUsed.from_dict(d["reference"]),
        )


@dataclass(frozen=True, kw_only=True)
class Trigger:
    """A retrain-trigger event (the contract: see the module docstring); made by :func:`build_trigger`."""

    trigger_id: str
    model_id: str
    model_version: str | None
    emitted_at: float | None
    event_time: float
    severity: Severity
    kind: TriggerKind
    reasons: tuple[Reason, ...]
    evidence: WindowEvidence | SegmentSurgeEvidence
    recommendation: Recommendation
    # An escalation of a latched condition: the trigger it supersedes and why (see core/policy.py).
    supersedes: str | None = field(default=None, metadata=_OPTIONAL)
    escalation: tuple[str, ...] | None = field(default=None, metadata=_OPTIONAL)
    # What the version was judged against, on a model whose events name a version (core/versions.py).
    reference: ReferenceUsed | None = field(default=None, metadata=_OPTIONAL)

    def with_emitted_at(self, emitted_at: float) -> Trigger:
        """This trigger as emitted at ``emitted_at`` (wall clock): the front end's last step."""
        return dataclasses.replace(self, emitted_at=emitted_at)

    def to_json_bytes(self) -> bytes:
        """The trigger event as JSON (UTF-8): what goes to Kafka and into JSONL files."""
        return orjson.dumps(self, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATACLASS)

    def to_dict(self) -> dict[str, Any]:
        """The trigger event as plain JSON data (what :meth:`to_json_bytes` writes, read back)."""
        return orjson.loads(self.to_json_bytes())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Trigger:
        """Parse a trigger event (``orjson.loads`` of a message value). Raises ``KeyError`` for a
        missing field, ``ValueError`` for an unknown kind, severity, action or basis."""
        evidence = d["evidence"]
        surge = "segment_share" in evidence
        return cls(
            trigger_id=d["trigger_id"],
            model_id=d["model_id"],
            model_version=d["model_version"],
            emitted_at=d["emitted_at"],
            event_time=d["event_time"],
            severity=_one_of(d["severity"], SEVERITIES, "severity"),
            kind=_one_of(d["kind"], TRIGGER_KINDS, "kind"),
            reasons=tuple(Reason.from_dict(r) for r in d["reasons"]),
            evidence=SegmentSurgeEvidence.from_dict(evidence)
            if surge
            else WindowEvidence.from_dict(evidence),
            recommendation=Recommendation.from_dict(d["recommendation"]),
            supersedes=d.get("supersedes"),
            escalation=None if d.get("escalation") is None else tuple(d["escalation"]),
            reference=None if d.get("reference") is None else ReferenceUsed.from_dict(d["reference"]),
        )


def _json_default(value: Any) -> Any:
    """orjson's hook: our dataclasses field by field (optional fields left out when None), numpy
    scalars and arrays as plain values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: v
            for f in dataclasses.fields(value)
            if not ((v := getattr(value, f.name)) is None and f.metadata.get("omit_if_none"))
        }
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def build_trigger(
    *,
    model_id: str,
    model_version: str | None,
    kind: TriggerKind,
    severity: Severity,
    decision: str,
    index: int,
    at: float,
    event_time: float,
    window: Window,
    results: Iterable[DetectorResult],
    evidence: WindowEvidence | SegmentSurgeEvidence,
    recommendation: Recommendation,
    supersedes: str | None = None,
    escalation: tuple[str, ...] | None = None,
) -> Trigger:
    """The one way a trigger is made: id from the decision, one :class:`Reason` per detector result.

    ``decision``, ``index`` and ``at`` identify the decision for :func:`trigger_id` (the policy: the
    kind, the window index and end; a segment surge: ``segment_surge:<segment>``, the bucket index and
    start). ``emitted_at`` stays None until a front end emits the trigger.
    """
    return Trigger(
        trigger_id=trigger_id(model_id, decision, index, at, model_version),
        model_id=model_id,
        model_version=model_version,
        emitted_at=None,
        event_time=float(event_time),
        severity=severity,
        kind=kind,
        reasons=tuple(Reason.from_result(r, window) for r in results),
        evidence=evidence,
        recommendation=recommendation,
        supersedes=supersedes,
        escalation=escalation,
    )
