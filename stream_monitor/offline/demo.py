"""``stream-monitor demo``: seed 003's bike-sharing story through the real pipeline, and the retraining
loop closed in process.

The bikes model (version ``2025.01``) gets its reference from its training fortnight (with labels, so it
has a baseline MAE); the churn control model warms its reference up from its first live events.
Predictions and delayed labels are merged by event time and fed in batches to the same engine the
Kafka service uses.

The story warms by 1 °C a day from day 20 until day :data:`PLATEAU_DAY`, then stays 5 °C warmer than
the training fortnight. The loop, played by :class:`RetrainLoop` as a retrainer beside the monitor
would (``examples/retrainer``, without Kafka and files):

1. the warming is detected: retrain triggers, each recommending ``train_on`` periods minus ``exclude``;
2. the retrainer acts on the first ``retrain`` trigger whose recent production is settled — no recent
   regime of its recommendation is a ``trend`` or ``emerging`` (:func:`settled`): a model and a
   reference built on data that is still moving would be outdated on arrival (acting on every trigger
   instead promotes, on day 26, a model whose reference mixes cold and warming days: the stream leaves
   it at once and the new version fires data_drift on the plateau). Earlier triggers are printed as
   waiting;
3. a candidate (:class:`~stream_monitor.offline.retrain.LinearModel`) is trained on the labelled
   production events of ``train_on`` minus ``exclude`` known at the trigger's time, except the last
   :data:`HOLDOUT_DAYS` days, held out: on those the candidate is validated against the current model
   (the predictions it served) with :func:`~stream_monitor.offline.retrain.validate` (:func:`retrain`);
4. promoted: its reference is built from its training rows with its own predictions and published for
   the new version (``2025.02``) with :meth:`MonitoringEngine.publish_reference`; from the next
   midnight on, the remaining bikes events are scored by the new model and carry its version. Kept: the
   timeline says why, and ``2025.01`` keeps serving;
5. the new version starts against the registry's reference (a ``model_version_changed`` record), the
   old one retires after a day without events, and the new version is quiet: its reference describes
   the plateau the stream stays on.

The timeline of these steps is printed at the end, and the status page shows the versions and the
triggers.
"""

from __future__ import annotations

import bisect
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from stream_monitor.config import demo_config_path, load_config
from stream_monitor.core.engine import EngineOutput, MonitoringEngine
from stream_monitor.core.events import decode_predictions
from stream_monitor.core.insights.tracker import InsightTracker
from stream_monitor.core.reference import ReferenceProfile, build_reference
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import DetectorSettings
from stream_monitor.core.triggers import ModelVersionChanged, Recommendation, Trigger
from stream_monitor.core.versions import VersionOutput
from stream_monitor.offline.demo_data import DAY, START_TS, BikeStory, churn_events
from stream_monitor.offline.replay import label_heap, replay
from stream_monitor.offline.retrain import (
    LinearModel,
    Validation,
    next_version,
    select_training_rows,
    validate,
)

#: The day the demo's warming stops: 5 °C above the training fortnight, enough for the model's error
#: to pass its alarm (MAE 20 % over the baseline), and early enough that the plateau becomes the
#: settled regime of recent production (day 33), with six whole days left to watch the promoted version.
PLATEAU_DAY = 25
#: The most recent days of labelled data held out for validation, never trained on.
HOLDOUT_DAYS = 2
#: The relative MAE reduction a candidate needs to be promoted.
MARGIN = 0.05
#: The candidate's features. The hour is a category: demand's two daily peaks are no line in the hour.
NUMERIC = ("temp", "atemp", "humidity", "windspeed")
CATEGORICAL = ("hour", "season", "weather")
#: Regime kinds of a recommendation that say production is still changing (core/insights/dna.py).
MOVING = ("trend", "emerging")


def _day(ts: float) -> float:
    """Event time as the story's day number (day 0 starts 2025-01-01T00:00Z)."""
    return (ts - START_TS) / DAY


def _days(first: float, last: float) -> str:
    """Whole days ``first``..``last`` (inclusive) as "day 25" or "days 25-30"."""
    a, b = math.floor(first), math.floor(last)
    return f"day {a}" if a == b else f"days {a}-{b}"


def _period_days(start: float, end: float) -> str:
    """A half-open period ``[start, end)`` of event time as the days it covers."""
    return _days(_day(start), _day(end) - 1e-9)


@dataclass(frozen=True)
class Labelled:
    """The bikes production events and their labels, in event-time order: what a retrainer reads (the
    prediction each event was served with, and when its label arrived).

    >>> events = [{"event_id": "a", "ts": 2.0, "features": {"temp": 1.0}, "prediction": 3.0},
    ...           {"event_id": "b", "ts": 1.0, "features": {"temp": 2.0}, "prediction": 4.0}]
    >>> data = Labelled.of(events, [{"event_id": "a", "ts": 5.0, "label": 3.5},
    ...                             {"event_id": "b", "ts": 9.0, "label": 4.5}])
    >>> data.ts.tolist(), data.label.tolist(), data.known_at(6.0).tolist()
    ([1.0, 2.0], [4.5, 3.5], [False, True])
    """

    events: list[dict[str, Any]]
    ts: np.ndarray
    label: np.ndarray
    label_ts: np.ndarray
    #: The prediction each event was served with (updated as the demo re-scores events).
    served: np.ndarray

    @classmethod
    def of(cls, events: Sequence[dict[str, Any]], labels: Sequence[dict[str, Any]]) -> Labelled:
        by_id = {lab["event_id"]: lab for lab in labels}
        ordered = sorted(events, key=lambda e: e["ts"])
        got = [by_id.get(e["event_id"]) for e in ordered]
        return cls(
            events=ordered,
            ts=np.array([e["ts"] for e in ordered], dtype=np.float64),
            label=np.array([math.nan if g is None else g["label"] for g in got], dtype=np.float64),
            label_ts=np.array([math.inf if g is None else g["ts"] for g in got], dtype=np.float64),
            served=np.array([e["prediction"] for e in ordered], dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.events)

    def known_at(self, now: float) -> np.ndarray:
        """Events whose label had arrived by ``now`` (event time)."""
        return self.label_ts <= now

    def rows(self, mask: np.ndarray) -> list[dict[str, Any]]:
        """The ``features`` of the events of ``mask``."""
        return [self.events[i]["features"] for i in np.flatnonzero(mask)]


@dataclass(frozen=True)
class Retrain:
    """One retrain on a trigger: which rows, the candidate (None: too few rows) and the verdict."""

    trigger: Trigger
    at: float  # event time of the decision
    current_version: str
    candidate_version: str
    train: np.ndarray  # mask over the Labelled events
    holdout: np.ndarray
    candidate: LinearModel | None
    validation: Validation

    @property
    def promoted(self) -> bool:
        return self.validation.promote and self.candidate is not None


def settled(rec: Recommendation) -> str | None:
    """None when a ``retrain`` recommendation can be acted on, else why the retrainer waits: its recent
    production is still changing (a ``trend`` or ``emerging`` regime among its recent regimes), or it
    has no bucket-based regimes yet.

    >>> from stream_monitor.core.triggers import Period, RegimeSummary
    >>> def rec(*kinds):
    ...     return Recommendation(action="retrain", train_on=(Period(start=0.0, end=1.0),), regimes=tuple(
    ...         RegimeSummary(id=i, kind=k, buckets=3, recent=True, period_buckets=None)
    ...         for i, k in enumerate(kinds)))
    >>> settled(rec("normal")), settled(rec("normal", "trend"))
    (None, 'recent production is still changing (normal, trend)')
    """
    if rec.action != "retrain":
        return f"action is {rec.action}"
    if not rec.train_on:
        return "no period to train on"
    recent = [r.kind for r in rec.regimes or () if r.recent]
    if not recent:
        return "no regimes yet"
    if any(kind in MOVING for kind in recent):
        return f"recent production is still changing ({', '.join(recent)})"
    return None


def retrain(
    trigger: Trigger,
    data: Labelled,
    *,
    now: float,
    current_version: str,
    current_model: LinearModel | None = None,
    holdout_days: float = HOLDOUT_DAYS,
    margin: float = MARGIN,
    min_train_rows: int = 1000,
    min_holdout_rows: int = 200,
) -> Retrain:
    """Train a candidate on the trigger's ``train_on`` minus ``exclude`` and judge it (pure).

    Only events labelled by ``now`` are used. The held-out rows are the clean (outside ``exclude``)
    labelled events of the last ``holdout_days`` days before ``now``; the training rows are the rest of
    ``train_on`` minus ``exclude``. The current model's errors are ``current_model``'s on the held-out
    rows or, without one, the predictions the events were served with.
    """
    rec = trigger.recommendation
    exclude = rec.exclude or ()
    known = data.known_at(now) & np.isfinite(data.label)
    recent = data.ts >= now - holdout_days * DAY
    holdout = known & recent & select_training_rows(data.ts, [{"start": -math.inf, "end": now}], exclude)
    train = known & ~recent & select_training_rows(data.ts, rec.train_on or (), exclude)
    candidate_version = next_version(current_version)

    def outcome(candidate: LinearModel | None, validation: Validation) -> Retrain:
        return Retrain(
            trigger, now, current_version, candidate_version, train, holdout, candidate, validation
        )

    n_train = int(train.sum())
    if n_train < min_train_rows:
        reason = (
            f"kept {current_version}: only {n_train:,} labelled rows to train on; needs {min_train_rows:,}"
        )
        too_few = Validation(
            promote=False,
            candidate_mae=math.nan,
            current_mae=math.nan,
            margin=margin,
            n=0,
            confidence=math.nan,
            required_confidence=math.nan,
            resamples=0,
            reason=reason,
        )
        return outcome(None, too_few)
    candidate = LinearModel.fit(data.rows(train), data.label[train], numeric=NUMERIC, categorical=CATEGORICAL)
    held, truth = data.rows(holdout), data.label[holdout]
    current = current_model.predict(held) if current_model is not None else data.served[holdout]
    verdict = validate(
        candidate.predict(held) - truth,
        current - truth,
        margin,
        rng=np.random.default_rng(0),
        min_rows=min_holdout_rows,
        current_version=current_version,
        candidate_version=candidate_version,
    )
    return outcome(candidate, verdict)


def candidate_reference(
    schema: ModelSchema,
    data: Labelled,
    mask: np.ndarray,
    model: LinearModel,
    version: str,
    d: DetectorSettings,
) -> ReferenceProfile:
    """The reference of a promoted candidate: its training rows, with its own predictions and the labels."""
    picks = np.flatnonzero(mask)
    predicted = model.predict(data.rows(mask))
    raws = [
        orjson.dumps({**data.events[i], "prediction": round(float(p), 2), "model_version": version})
        for i, p in zip(picks.tolist(), predicted.tolist(), strict=True)
    ]
    batches, _ = decode_predictions(raws, {schema.model_id: schema})
    return build_reference(
        schema,
        batches[schema.model_id],
        data.label[picks],
        bins=d.bins,
        top_k=d.top_k,
        sample_size=d.reference_sample,
    )


@dataclass
class RetrainLoop:
    """The retrainer and the serving side of the bikes model, in process: acts on triggers, serves the
    events with the deployed version's predictions, and keeps the timeline."""

    engine: MonitoringEngine
    schema: ModelSchema
    detectors: DetectorSettings
    data: Labelled
    version: str  # the newest version: the one deployed or about to be
    margin: float = MARGIN
    #: (from event time, version, model), oldest first; before the first, the story's own predictions.
    deployments: list[tuple[float, str, LinearModel]] = field(default_factory=list)
    timeline: list[tuple[float, str]] = field(default_factory=list)
    retrains: list[Retrain] = field(default_factory=list)
    retired: list[tuple[float, str | None]] = field(default_factory=list)
    started: list[ModelVersionChanged] = field(default_factory=list)
    handed: float = -math.inf  # event time of the last event handed to the engine
    # The insight tracker of the version the drift happened to, and that version (set at promotion).
    drifted_insights: InsightTracker | None = None
    drifted_from: str | None = None

    @property
    def model(self) -> LinearModel | None:
        """The newest version's model (None: the story's original model)."""
        return self.deployments[-1][2] if self.deployments else None

    @property
    def promoted_at(self) -> float | None:
        """Event time of the first promotion."""
        return next((r.at for r in self.retrains if r.promoted), None)

    def step(self, ts: float, text: str) -> None:
        self.timeline.append((ts, text))

    def on_trigger(self, t: Trigger) -> None:
        """A bikes trigger: on the timeline, and a retrain when it asks for one and may."""
        rec = t.recommendation
        line = f"trigger {t.kind} {t.severity} on {t.model_version} -> {rec.action}"
        if rec.train_on:
            line += ", train on " + ", ".join(_period_days(p.start, p.end) for p in rec.train_on)
        if rec.exclude:
            line += ", exclude " + ", ".join(
                f"{_period_days(p.start, p.end)} ({p.reason})" for p in rec.exclude
            )
        if t.model_version != self.version:
            # About a version a deployment has replaced: nothing to retrain.
            self.step(t.event_time, f"{line}; not acted on: {self.version} replaces {t.model_version}")
            return
        waiting = settled(rec)
        if waiting is not None:
            self.step(t.event_time, f"{line}; the retrainer waits: {waiting}")
            return
        self.step(t.event_time, line)
        self.retrain(t)

    def retrain(self, t: Trigger) -> Retrain:
        """Retrain on ``t`` (:func:`retrain`), put it on the timeline, and promote when it passed."""
        r = retrain(
            t,
            self.data,
            now=t.event_time,
            current_version=self.version,
            current_model=self.model,
            margin=self.margin,
        )
        self.retrains.append(r)
        n_train, n_held = int(r.train.sum()), int(r.holdout.sum())
        if n_train:
            trained = self.data.ts[r.train]
            rows = f"{n_train:,} labelled rows of {_days(_day(trained.min()), _day(trained.max()))}"
        else:
            rows = "no labelled rows"
        self.step(r.at, f"retrain {r.candidate_version} on {rows} (labels known by day {_day(r.at):.1f})")
        v = r.validation
        verdict = f"PROMOTED {r.candidate_version}" if r.promoted else f"KEPT {r.current_version}"
        if r.candidate is None:
            self.step(r.at, f"no candidate to validate: {verdict} ({v.reason})")
        else:
            held = self.data.ts[r.holdout]
            on = f"{_days(_day(held.min()), _day(held.max()))}, " if n_held else ""
            self.step(
                r.at,
                f"validation on {on}{n_held:,} held-out rows: candidate MAE {v.candidate_mae:.2f} vs "
                f"current {v.current_mae:.2f}, margin {v.margin:.0%}: {verdict} ({v.reason})",
            )
        if r.promoted:
            self.promote(r)
        return r

    def promote(self, r: Retrain) -> None:
        """Build and publish the candidate's reference, then deploy it from the next midnight."""
        assert r.candidate is not None
        version = r.candidate_version
        reference = candidate_reference(self.schema, self.data, r.train, r.candidate, version, self.detectors)
        self.engine.publish_reference(self.schema.model_id, version, reference)
        # The version the drift happened to: its time buckets tell the drift's story (data DNA), the
        # new version's start at its promotion; --insights-dir saves these.
        old = self.engine.models[self.schema.model_id].active.get(self.version)
        if old is not None and old.monitor.insights is not None:
            self.drifted_insights, self.drifted_from = old.monitor.insights, self.version
        baseline = ", ".join(f"{k}={v:.2f}" for k, v in sorted(reference.baseline.items()))
        self.step(
            r.at,
            f"reference for {version} from its {reference.n_events:,} training rows with its predictions "
            f"({baseline}), published to the registry",
        )
        # From the next midnight: a day for the rollout, its daily windows start whole, and never
        # before an event already handed to the engine.
        since = START_TS + (math.floor(_day(max(r.at, self.handed))) + 1) * DAY
        self.deployments.append((since, version, r.candidate))
        self.version = version
        self.step(
            r.at, f"{version} deployed from day {_day(since):.1f}: it scores the bikes events from then on"
        )

    def serve(self, chunk: Sequence[tuple[float, bytes, int]]) -> list[bytes]:
        """A batch of the merged stream as served: each bikes event by the version deployed at its time
        (the story's own prediction before the first deployment)."""
        raws = [raw for _, raw, _ in chunk]
        if not self.deployments:
            return raws
        starts = [since for since, _, _ in self.deployments]
        by_deployment: dict[int, list[int]] = {}
        for k, (ts, _, i) in enumerate(chunk):
            d = bisect.bisect_right(starts, ts) - 1
            if i >= 0 and d >= 0:
                by_deployment.setdefault(d, []).append(k)
        for d, picks in by_deployment.items():
            _, version, model = self.deployments[d]
            index = [chunk[k][2] for k in picks]
            predicted = np.round(model.predict([self.data.events[i]["features"] for i in index]), 2)
            self.data.served[index] = predicted
            for k, i, p in zip(picks, index, predicted.tolist(), strict=True):
                raws[k] = orjson.dumps({**self.data.events[i], "prediction": p, "model_version": version})
        return raws

    def stream(self, merged: Sequence[tuple[float, bytes, int]], size: int) -> Iterator[list[bytes]]:
        """The prediction batches, served lazily: a deployment decided while a batch is processed
        applies to the batches after it."""
        for start in range(0, len(merged), size):
            chunk = merged[start : start + size]
            served = self.serve(chunk)
            self.handed = max(self.handed, max(ts for ts, _, _ in chunk))
            yield served

    def on_change(self, change: ModelVersionChanged) -> None:
        self.started.append(change)
        ref = change.reference
        against = f"the {ref.source} reference" + (f" of {ref.version}" if ref.version is not None else "")
        after = f" after {change.previous_version}" if change.previous_version is not None else ""
        self.step(
            change.event_time, f"version {change.model_version} started{after}, judged against {against}"
        )

    def on_retired(self, ts: float, version: str | None, why: str) -> None:
        self.retired.append((ts, version))
        self.step(ts, f"version {version} retired ({why})")


class DetectionLog:
    """First time (event time) each detector fired, per model, for the closing table."""

    def __init__(self) -> None:
        self.first: dict[tuple[str, str], float] = {}
        self.triggers: list[Trigger] = []  # as emitted
        self.changes: list[ModelVersionChanged] = []  # as emitted
        # Both, in the order emitted: what the service writes to the triggers topic.
        self.records: list[Trigger | ModelVersionChanged] = []

    def _mark(self, model: str, what: str, ts: float) -> None:
        self.first.setdefault((model, what), ts)

    def observe(self, out: EngineOutput, stream: str) -> None:
        for model, o in out.per_model.items():
            for ev in o.evaluations:
                for r in ev.results:
                    if r.drift and r.feature is not None:
                        self._mark(model, f"{r.detector} on {r.feature}", ev.end)
                    elif r.drift:
                        self._mark(model, r.detector, ev.end)
                if o.score_drift:
                    self._mark(model, "adwin on prediction score", ev.end)


def _merged_stream(
    data: Labelled, churn: Sequence[tuple[dict[str, Any], dict[str, Any]]]
) -> list[tuple[float, bytes, int]]:
    """Prediction messages of both models by event time: (ts, raw, index in ``data`` or -1 for churn)."""
    bikes = [(float(e["ts"]), orjson.dumps(e), i) for i, e in enumerate(data.events)]
    others = [(float(c["ts"]), orjson.dumps(c), -1) for c, _ in churn]
    return sorted(bikes + others, key=lambda x: x[0])


def timeline_lines(loop: RetrainLoop, triggers: Sequence[Trigger]) -> list[str]:
    """The retraining loop as printed: one line per step, by event time, then the triggers after the
    promotion per version."""
    lines = [
        f"\nthe retraining loop (event time; day 0 is {time.strftime('%Y-%m-%d', time.gmtime(START_TS))}):"
    ]
    for ts, text in sorted(loop.timeline, key=lambda x: x[0]):
        lines.append(f"  day {_day(ts):5.1f}  {text}")
    promoted_at = loop.promoted_at
    if promoted_at is None:
        lines.append("  no version promoted: the original version serves to the end")
        return lines
    after = [t for t in triggers if t.model_id == "bikes" and t.event_time > promoted_at]
    versions = [r.current_version for r in loop.retrains if r.promoted] + [loop.version]
    counts = ", ".join(f"{v} {sum(t.model_version == v for t in after)}" for v in versions)
    lines.append(f"  triggers after the promotion (day {_day(promoted_at):.1f}): {counts}")
    return lines


def run_demo(
    port: int = 9108,
    host: str = "127.0.0.1",
    stations: int = 200,
    days: int = 40,
    out: str | None = None,
    linger: float = 0.0,
    insights_dir: str | None = None,
    plateau_day: int | None = PLATEAU_DAY,
    margin: float = MARGIN,
) -> int:
    from stream_monitor.app import build_engine, start_observability

    app = load_config(demo_config_path(), env={})
    schemas = app.schemas()
    story = BikeStory(stations=stations, days=days, plateau_day=plateau_day)
    warming = f"the weather warms {story.warming_per_day:g} °C a day"
    if plateau_day is not None:
        warmer = max(0, plateau_day - story.drift_day) * story.warming_per_day
        warming += f" until day {plateau_day}, then stays {warmer:g} °C warmer than in training"
    drift_date = time.strftime("%Y-%m-%d", time.gmtime(story.drift_ts))
    print(
        f"stream-monitor demo: bike-sharing demand model, {stations} stations × 24 h × {days} days; "
        f"warming starts on day {story.drift_day} ({drift_date}): {warming}"
    )

    train, train_labels = story.training()
    batches, _ = decode_predictions([orjson.dumps(e) for e in train], schemas)
    bikes_cfg = next(m for m in app.models if m.schema.model_id == "bikes")
    d = bikes_cfg.settings.detectors
    reference = build_reference(
        schemas["bikes"],
        batches["bikes"],
        np.array([lab["label"] for lab in train_labels]),
        bins=d.bins,
        top_k=d.top_k,
        sample_size=d.reference_sample,
    )
    print(
        f"reference for bikes from {reference.n_events} training events; baseline "
        + ", ".join(f"{k}={v:.2f}" for k, v in sorted(reference.baseline.items()))
    )
    refs: dict[str, Any] = {m.schema.model_id: None for m in app.models}
    refs["bikes"] = reference
    engine = build_engine(app, refs)

    observability = start_observability(app, lambda: engine.judging_monitors, host=host, port=port)
    metrics, status, server = observability.metrics, observability.status_page, observability.server
    observability.health.ready = True
    print(f"metrics: http://{host}:{observability.port}/metrics, status page: /")

    events, labels = story.production()
    data = Labelled.of(events, labels)
    start = float(data.ts[0])
    churn_n = len(events) // 4
    churn = list(churn_events(churn_n, start_ts=start, span=(days - story.training_days) * DAY))
    merged = _merged_stream(data, churn)
    label_lines = [orjson.dumps(lab) for lab in labels] + [orjson.dumps(lab) for _, lab in churn]
    first_version = str(events[0]["model_version"]) if events else str(bikes_cfg.version)
    loop = RetrainLoop(engine, schemas["bikes"], d, data, first_version, margin=margin)
    loop.step(story.drift_ts, f"drift starts: {warming}")

    log = DetectionLog()
    last_day = [-1]
    bikes_events = [0]

    def on_output(o: EngineOutput, stream: str) -> None:
        metrics.observe(o, stream)
        metrics.set_label_buffers(engine.label_buffers())
        log.observe(o, stream)
        emitted_at = time.time()
        for change in o.changes:
            record = change.with_emitted_at(emitted_at)
            log.changes.append(record)
            log.records.append(record)
            status.record_change(record)
            if record.model_id == "bikes":
                loop.on_change(record)
            ref = record.reference
            print(
                f"  VERSION {record.model_id:<6} {record.model_version} started on day "
                f"{_day(record.event_time):.1f}, judged against the {ref.source} reference of {ref.version}"
            )
        for model_id, mo in o.per_model.items():
            if isinstance(mo, VersionOutput):
                for version, why in mo.retired:
                    if model_id == "bikes":
                        loop.on_retired(engine.watermark, version, why)
                    print(f"  RETIRED {model_id:<6} {version} on day {_day(engine.watermark):.1f}: {why}")
        for decided in o.triggers:
            t = decided.with_emitted_at(emitted_at)
            log.triggers.append(t)
            log.records.append(t)
            status.record(t)
            day = (t.event_time - story.drift_ts) / DAY
            print(
                f"  TRIGGER {t.model_id:<6} {t.kind:<16} {t.severity:<8} "
                f"day {day:+.1f} from drift start -> {t.recommendation.action} ({t.model_version})"
            )
            if t.model_id == "bikes":
                loop.on_trigger(t)
        if stream == "predictions" and "bikes" in o.per_model:
            bikes_events[0] += o.per_model["bikes"].events
        day_now = int((engine.watermark - start) // DAY)
        if day_now > last_day[0]:
            last_day[0] = day_now
            print(
                f"  day {day_now + story.training_days:>3}: {bikes_events[0]:>8} bikes events",
                flush=True,
            )

    summary = replay(
        engine,
        loop.stream(merged, 2000),
        label_heap(label_lines),
        on_output=on_output,
        wall_now=time.time(),
    )
    print(
        f"\nprocessed {summary.events} events and {summary.labels} labels in {summary.seconds:.1f}s "
        f"({summary.events / max(summary.seconds, 1e-9):,.0f} events/s), {summary.windows} windows"
    )
    print(
        f"\nwhen each detector first fired, relative to the true drift start "
        f"(day {story.drift_day}; the churn model is a stationary control and should stay quiet):"
    )
    for (model, what), ts in sorted(log.first.items(), key=lambda kv: kv[1]):
        rel = (ts - story.drift_ts) / DAY
        verdict = "" if model != "bikes" or rel >= 0 else "  <- before the drift"
        print(f"  {model:<6} {what:<40} day {rel:+6.1f}{verdict}")
    bikes_triggers = [t for t in log.triggers if t.model_id == "bikes"]
    churn_triggers = [t for t in log.triggers if t.model_id == "churn"]
    print(f"\ntriggers: bikes {len(bikes_triggers)}, churn (control) {len(churn_triggers)}")
    if bikes_triggers:
        first = bikes_triggers[0]
        print("first bikes trigger:\n" + orjson.dumps(first.to_dict(), option=orjson.OPT_INDENT_2).decode())
    print("\n".join(timeline_lines(loop, log.triggers)))
    if out:
        # Triggers and the lifecycle records between them, as the service writes the triggers topic.
        with open(out, "wb") as f:
            for record in log.records:
                f.write(record.to_json_bytes() + b"\n")
    if insights_dir:
        from stream_monitor.offline.insights_store import save_insights

        for model_id, mon in sorted(engine.judging_monitors.items()):
            tracker = mon.insights
            why = ""
            if model_id == "bikes" and loop.drifted_insights is not None:
                # The version the drift happened to: its buckets tell the drift's story (data DNA).
                tracker, why = loop.drifted_insights, f" (version {loop.drifted_from}, the one that drifted)"
            if tracker is not None:
                print(f"saved bucket profiles{why}: {save_insights(insights_dir, tracker)}", file=sys.stderr)
    if linger > 0:
        print(f"serving metrics for {linger:.0f}s more…", file=sys.stderr)
        time.sleep(linger)
    server.shutdown()
    return 0


__all__ = [
    "Labelled",
    "Retrain",
    "RetrainLoop",
    "candidate_reference",
    "retrain",
    "run_demo",
    "settled",
    "timeline_lines",
]
