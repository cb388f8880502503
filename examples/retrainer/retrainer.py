"""The reference retrainer: the downstream service that closes stream-monitor's loop.

It subscribes to the retrain-trigger topic and, for each new ``retrain`` recommendation about its
model, trains a candidate on the recommended periods, validates it against the current model on
recent labelled data it never trained on, and only if the candidate is clearly better: builds the
candidate's reference profile, publishes it to stream-monitor's reference registry, and then deploys
the candidate (a record on a compacted deployments topic that the serving producer, ``serve.py``,
follows). See README.md beside this file for the commands.

One trigger, step by step (:meth:`Retrainer.handle`):

1. parse the record; skip — log and go on, never crash — anything that is not a trigger (garbage,
   and the ``model_version_changed`` lifecycle records that share the topic), triggers of other
   models, actions other than ``retrain``, ids already handled (``handled-triggers.json`` in the work
   dir survives restarts) and triggers about a version a deployment has since replaced;
2. load the labelled events (JSONL files and/or a topic read from its beginning to its end);
3. hold out the most recent ``--holdout-days`` (or ``--holdout-rows``), never trained on;
4. train a candidate :class:`~stream_monitor.offline.retrain.LinearModel` on ``train_on`` minus
   ``exclude`` minus the held-out rows;
5. validate (:func:`~stream_monitor.offline.retrain.validate`): the candidate's MAE must be
   ``--margin`` lower than the current model's on the held-out rows, and a paired bootstrap must agree;
   the current model is the deployed one or, before any deployment, the predictions recorded in the
   labelled events (what the model outside the loop actually said);
6. promoted: write the training rows with the candidate's predictions as a CSV, ``stream-monitor
   reference build`` it, ``stream-monitor reference publish`` it under the new version, and only then
   produce the deployment record — the new version's reference is in the registry before any event
   of that version exists (a monitor member that meets the version's first events a moment before it
   has read the registry record starts the version again on its own reference when it does);
7. print the decision (promoted, kept or failed) as one JSON line to stdout; a rejected candidate is
   only that line (and a log line): it is not written to the deployments topic, whose compaction keeps
   the newest record of a key, where it would erase the deployment it kept.

Offsets are stored only after a trigger is handled (``enable.auto.offset.store=false``), so a crash
re-delivers it; the handled-ids file makes the re-delivery a no-op once the decision was made.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from stream_monitor.config import load_config
from stream_monitor.core.events import parse_ts
from stream_monitor.core.settings import TrainingDataSettings
from stream_monitor.core.triggers import Trigger
from stream_monitor.offline.retrain import (
    LinearModel,
    Validation,
    exclusion_counts,
    next_version,
    recent_rows,
    select_training_rows,
    validate,
)

log = logging.getLogger("retrainer")

DEFAULT_DEPLOYMENTS_TOPIC = "model-deployments"
HANDLED_FILE = "handled-triggers.json"
#: ``kind`` of the lifecycle records stream-monitor also writes to the triggers topic.
LIFECYCLE_KINDS = frozenset({"model_version_changed"})


# -- records in ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skip:
    """A record not acted on, and why (logged; the consumer moves on)."""

    reason: str


def parse_trigger(value: bytes | None) -> Trigger | Skip:
    """A trigger from a record value, or why the record is not one to act on.

    >>> parse_trigger(b"{oops").reason, parse_trigger(b'{"kind": "model_version_changed"}').reason
    ('malformed_json', 'lifecycle_record:model_version_changed')
    >>> parse_trigger(b'{"kind": "data_drift"}').reason
    "not_a_trigger: KeyError('evidence')"
    """
    if not value:
        return Skip("empty")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return Skip("malformed_json")
    if not isinstance(obj, dict):
        return Skip("not_an_object")
    # Lifecycle records share the topic and have no recommendation: filter on kind before parsing.
    if obj.get("kind") in LIFECYCLE_KINDS:
        return Skip(f"lifecycle_record:{obj['kind']}")
    try:
        return Trigger.from_dict(obj)
    except Exception as exc:  # any shape of garbage: a retrainer that crashes on one record retrains nothing
        return Skip(f"not_a_trigger: {exc!r}")


class HandledTriggers:
    """The ids of the triggers this retrainer made a decision on, in ``path`` (JSON, newest last).

    The monitor's trigger ids are deterministic, and the same trigger can arrive twice (a re-delivery
    after a crash, a replay, two members emitting the same decision): a retrain is costly and a
    deployment visible, so each id is acted on once. The newest ``keep`` ids are kept.
    """

    def __init__(self, path: Path, keep: int = 10_000) -> None:
        self.path = path
        self.keep = keep
        self._ids: list[str] = []
        if path.exists():
            try:
                loaded = orjson.loads(path.read_bytes())
                if not isinstance(loaded, list) or not all(isinstance(i, str) for i in loaded):
                    raise ValueError("not a list of trigger ids")
                self._ids = loaded[-keep:]
            except (orjson.JSONDecodeError, ValueError) as exc:
                # Keep the bad file for a person to look at; starting empty risks one repeat retrain,
                # which validation then judges, rather than no retrainer at all.
                aside = path.with_name(path.name + ".unreadable")
                os.replace(path, aside)
                log.error("%s: %s; moved to %s, starting with no handled triggers", path, exc, aside)
        self._set = set(self._ids)

    def __contains__(self, trigger_id: object) -> bool:
        return trigger_id in self._set

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, trigger_id: str) -> None:
        """Remember ``trigger_id`` (written through at once, atomically: a crash never leaves half a file)."""
        if trigger_id in self._set:
            return
        self._ids.append(trigger_id)
        self._ids = self._ids[-self.keep :]
        self._set = set(self._ids)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_bytes(orjson.dumps(self._ids))
        os.replace(partial, self.path)


# -- labelled events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Labelled:
    """Labelled events of one model, sorted by event time: ``{event_id, ts, features, label}`` records
    (optionally ``prediction``, ``model_version`` and ``segment`` too: what was served, and its slice)."""

    event_id: list[str]
    ts: np.ndarray
    features: list[dict[str, Any]]
    label: np.ndarray
    #: The prediction recorded with the event (NaN when it has none).
    prediction: np.ndarray
    model_version: list[str | None]
    segment: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.event_id)

    def rows(self, mask: np.ndarray) -> list[dict[str, Any]]:
        return [self.features[i] for i in np.flatnonzero(mask)]


def _prediction_value(value: Any) -> float:
    if isinstance(value, Mapping):
        value = value.get("score")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def labelled_from_records(records: Iterable[Any], model_id: str) -> tuple[Labelled, dict[str, int]]:
    """The usable labelled events of ``model_id``, and how many records were left out, by reason.

    A record needs an ``event_id``, a ``ts`` (epoch seconds or RFC 3339), a ``features`` object and a
    finite numeric ``label``; one naming another ``model_id`` belongs to another model. A repeated
    ``event_id`` is one event: the record read last wins (a corrected label).

    >>> data, dropped = labelled_from_records(
    ...     [{"event_id": "a", "ts": 2, "features": {"x": 1}, "label": 3.0},
    ...      {"event_id": "b", "ts": 1, "features": {"x": 2}, "label": 5, "prediction": 4.5},
    ...      {"event_id": "c", "ts": 1, "features": {}, "label": None}, "junk"], "m")
    >>> data.event_id, data.prediction.tolist(), dropped
    (['b', 'a'], [4.5, nan], {'bad_label': 1, 'not_an_object': 1})
    """
    dropped: dict[str, int] = {}
    by_id: dict[str, tuple[float, dict[str, Any], float, float, str | None, dict[str, Any]]] = {}

    def drop(reason: str) -> None:
        dropped[reason] = dropped.get(reason, 0) + 1

    for record in records:
        if not isinstance(record, dict):
            drop("not_an_object")
            continue
        if record.get("model_id") not in (None, model_id):
            drop("other_model")
            continue
        event_id, features, label = record.get("event_id"), record.get("features"), record.get("label")
        ts = parse_ts(record.get("ts"))
        if not isinstance(event_id, str) or not event_id:
            drop("bad_event_id")
        elif ts is None:
            drop("bad_ts")
        elif not isinstance(features, dict):
            drop("bad_features")
        elif isinstance(label, bool) or not isinstance(label, int | float) or not math.isfinite(label):
            drop("bad_label")
        else:
            version = record.get("model_version")
            segment = record.get("segment")
            by_id[event_id] = (
                ts,
                features,
                float(label),
                _prediction_value(record.get("prediction")),
                None if version is None else str(version),
                segment if isinstance(segment, dict) else {},
            )
    ids = sorted(by_id, key=lambda i: (by_id[i][0], i))
    data = Labelled(
        event_id=ids,
        ts=np.array([by_id[i][0] for i in ids], dtype=np.float64),
        features=[by_id[i][1] for i in ids],
        label=np.array([by_id[i][2] for i in ids], dtype=np.float64),
        prediction=np.array([by_id[i][3] for i in ids], dtype=np.float64),
        model_version=[by_id[i][4] for i in ids],
        segment=[by_id[i][5] for i in ids],
    )
    return data, dict(sorted(dropped.items()))


def _json_or_none(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None  # counted as not_an_object by labelled_from_records


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[Any]:
    """The JSON values of a JSONL file (``.gz`` too); a line that is not JSON yields ``None``."""
    opener: Callable[..., Any] = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield _json_or_none(line)


# -- deployments ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deployment:
    """The deployed version of a model, from the newest deployment record of the deployments topic."""

    model_id: str
    version: str
    model: LinearModel
    #: Versions this deployment replaced, oldest first (carried from record to record: compaction
    #: keeps only the newest record of a model, so the history travels inside it).
    lineage: tuple[str, ...] = ()
    trigger_id: str | None = None


def parse_deployment(value: bytes | None, model_id: str) -> Deployment | None:
    """A deployment of ``model_id`` from a deployments-topic value; None for anything else.

    >>> model = LinearModel.fit([{"x": 1}, {"x": 2}], [1.0, 2.0], numeric=["x"])
    >>> record = {"model_id": "m", "model_version": "2", "model": model.to_dict(), "lineage": ["1"]}
    >>> parse_deployment(orjson.dumps(record), "m").lineage, parse_deployment(b"[]", "m")
    (('1',), None)
    """
    if not value:
        return None
    try:
        obj = orjson.loads(value)
        if not isinstance(obj, dict) or obj.get("model_id") != model_id or obj.get("promoted") is False:
            return None
        return Deployment(
            model_id=model_id,
            version=str(obj["model_version"]),
            model=LinearModel.from_dict(obj["model"]),
            lineage=tuple(str(v) for v in obj.get("lineage") or ()),
            trigger_id=obj.get("trigger_id"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.warning("ignored a deployment record of %s that does not parse: %r", model_id, exc)
        return None


def latest_deployment(values: Iterable[bytes | None], model_id: str) -> Deployment | None:
    """The newest deployment of ``model_id`` among records in log order (key = model id: one
    partition, so log order is the order they were made in)."""
    latest = None
    for value in values:
        deployment = parse_deployment(value, model_id)
        if deployment is not None:
            latest = deployment
    return latest


# -- the decision --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrainSettings:
    """What the retrainer trains and how it decides (the command line's options)."""

    model_id: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    #: Held out for validation, never trained on: the newest ``holdout_days`` of labelled data, or
    #: the newest ``holdout_rows`` rows when given.
    holdout_days: float = 1.0
    holdout_rows: int | None = None
    margin: float = 0.05
    min_train_rows: int = 500
    min_holdout_rows: int = 200
    seed: int = 0


@dataclass(frozen=True)
class Outcome:
    """What one retrain found: the split, the candidate (None when there was too little data) and
    the verdict."""

    trigger: Trigger
    current_version: str
    candidate_version: str
    #: ``deployed_model`` or ``recorded_predictions``: what the current model's errors came from.
    current_source: str
    train: np.ndarray
    holdout: np.ndarray
    excluded: dict[str, int]
    candidate: LinearModel | None
    validation: Validation

    def record(self) -> dict[str, Any]:
        """The decision as one JSON object (printed as a line to stdout)."""
        rec = self.trigger.recommendation
        return {
            "decision": "promoted" if self.validation.promote else "kept",
            "model_id": self.trigger.model_id,
            "trigger_id": self.trigger.trigger_id,
            "trigger_kind": self.trigger.kind,
            "current_version": self.current_version,
            "candidate_version": self.candidate_version,
            "current_model": self.current_source,
            "training": {
                "rows": int(self.train.sum()),
                "held_out_rows": int(self.holdout.sum()),
                "train_on": [[p.start, p.end] for p in rec.train_on or ()],
                "excluded_rows": self.excluded,
            },
            "validation": self.validation.to_dict(),
            "reason": self.validation.reason,
        }


def _too_little(n: int, needed: int, current_version: str, what: str) -> Validation:
    return Validation(
        promote=False,
        candidate_mae=math.nan,
        current_mae=math.nan,
        margin=math.nan,
        n=n,
        confidence=math.nan,
        required_confidence=math.nan,
        resamples=0,
        reason=f"kept {current_version}: only {n:,} {what}; needs at least {needed:,}",
    )


def retrain(
    trigger: Trigger, data: Labelled, deployment: Deployment | None, settings: RetrainSettings
) -> Outcome:
    """Train a candidate on the trigger's recommended periods and judge it (no Kafka, no files).

    The held-out rows are the newest labelled ones outside every excluded period (a broken day is
    not a fair test either); the training rows are ``train_on`` minus ``exclude`` minus the held-out
    rows. The current model is the deployed :class:`LinearModel` or, before the loop's first
    deployment, the predictions recorded with the labelled events.
    """
    rec = trigger.recommendation
    train_on, exclude = rec.train_on or (), rec.exclude or ()
    everything = [{"start": -math.inf, "end": math.inf}]
    clean = select_training_rows(data.ts, everything, exclude)
    if settings.holdout_rows is not None:
        holdout = recent_rows(np.where(clean, data.ts, np.nan), rows=settings.holdout_rows)
    else:
        holdout = recent_rows(data.ts, days=settings.holdout_days) & clean
    train = select_training_rows(data.ts, train_on, exclude) & ~holdout
    if deployment is not None:
        current_version = deployment.version
    else:
        # Before the first deployment the current model is whatever served the held-out rows: the
        # version they name (the newest), else the one the trigger names.
        served = [v for i in np.flatnonzero(holdout) if (v := data.model_version[i]) is not None]
        current_version = served[-1] if served else trigger.model_version or "0"
    candidate_version = next_version(current_version)
    excluded = exclusion_counts(data.ts, exclude)
    source = "deployed_model" if deployment is not None else "recorded_predictions"

    def outcome(candidate: LinearModel | None, validation: Validation) -> Outcome:
        return Outcome(
            trigger=trigger,
            current_version=current_version,
            candidate_version=candidate_version,
            current_source=source,
            train=train,
            holdout=holdout,
            excluded=excluded,
            candidate=candidate,
            validation=validation,
        )

    n_train = int(train.sum())
    if n_train < settings.min_train_rows:
        what = "labelled rows to train on (train_on minus exclude minus the held-out rows)"
        return outcome(None, _too_little(n_train, settings.min_train_rows, current_version, what))
    candidate = LinearModel.fit(
        data.rows(train), data.label[train], numeric=settings.numeric, categorical=settings.categorical
    )
    held_rows, truth = data.rows(holdout), data.label[holdout]
    current = deployment.model.predict(held_rows) if deployment is not None else data.prediction[holdout]
    validation = validate(
        candidate.predict(held_rows) - truth,
        current - truth,
        settings.margin,
        rng=np.random.default_rng(settings.seed),
        min_rows=settings.min_holdout_rows,
        current_version=current_version,
        candidate_version=candidate_version,
    )
    return outcome(candidate, validation)


# -- promotion: the reference, then the deployment -----------------------------------------------------


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return value


def write_training_csv(
    path: Path,
    data: Labelled,
    mask: np.ndarray,
    predictions: np.ndarray,
    features: Sequence[str],
    segment_keys: Sequence[str],
    training: TrainingDataSettings,
) -> int:
    """The rows of ``mask`` as a training file of ``stream-monitor reference build``: event time
    (epoch seconds), every configured feature, the segment keys, the candidate's prediction and the
    label, under the column names of the model's ``training:`` settings. Returns the rows written."""
    rows = np.flatnonzero(mask)
    if len(predictions) != len(rows):
        raise ValueError(f"{len(predictions)} predictions for {len(rows)} rows")
    header = [training.ts_column, *features, *segment_keys, training.prediction_column, training.label_column]
    if len(set(header)) != len(header):
        raise ValueError(f"training columns collide: {header}")
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i, predicted in zip(rows.tolist(), predictions.tolist(), strict=True):
            feats, segment = data.features[i], data.segment[i]
            writer.writerow(
                [
                    repr(float(data.ts[i])),
                    *(_cell(feats.get(name)) for name in features),
                    # A segment key may come from the event's segment object or from a feature.
                    *(_cell(segment.get(key, feats.get(key))) for key in segment_keys),
                    repr(float(predicted)),
                    repr(float(data.label[i])),
                ]
            )
    os.replace(partial, path)
    return len(rows)


class CommandFailed(RuntimeError):
    """A ``stream-monitor`` command exited non-zero (the message has its command line and stderr)."""


def run_stream_monitor(args: Sequence[str]) -> str:
    """Run ``python -m stream_monitor.cli ARGS`` in this interpreter; its stdout, or CommandFailed."""
    command = [sys.executable, "-m", "stream_monitor.cli", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise CommandFailed(f"{' '.join(command[2:])} exited {done.returncode}: {' | '.join(tail)}")
    return done.stdout


# -- the service ---------------------------------------------------------------------------------------


class Retrainer:
    """Handles trigger records one at a time (:meth:`handle`); every side effect is injected, so
    the same object runs on Kafka (:func:`main`) and in tests without a broker.

    ``load_labelled`` returns the labelled events, ``current_deployment`` the deployed model (None
    before the first deployment), ``deploy`` writes a deployment record (and raises if it could not),
    ``run_cli`` runs a ``stream-monitor`` command, ``emit`` publishes a decision (default: one JSON
    line to stdout).
    """

    def __init__(
        self,
        *,
        settings: RetrainSettings,
        config_path: str,
        workdir: Path,
        features: Sequence[str],
        segment_keys: Sequence[str],
        training: TrainingDataSettings,
        load_labelled: Callable[[], Labelled],
        current_deployment: Callable[[], Deployment | None],
        deploy: Callable[[str, dict[str, Any]], None],
        run_cli: Callable[[Sequence[str]], str] = run_stream_monitor,
        emit: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.workdir = workdir
        self.features = tuple(features)
        self.segment_keys = tuple(segment_keys)
        self.training = training
        self.load_labelled = load_labelled
        self.current_deployment = current_deployment
        self.deploy = deploy
        self.run_cli = run_cli
        self.emit = emit or print_json
        self.clock = clock
        workdir.mkdir(parents=True, exist_ok=True)
        self.handled = HandledTriggers(workdir / HANDLED_FILE)

    def handle(self, value: bytes | None) -> dict[str, Any]:
        """Act on one record of the triggers topic; returns the decision (``promoted``, ``kept``,
        ``failed``) or ``{"decision": "skipped", "reason": …}``. Never raises."""
        parsed = parse_trigger(value)
        if isinstance(parsed, Skip):
            return self._skip(parsed.reason, None)
        trigger = parsed
        if trigger.model_id != self.settings.model_id:
            return self._skip(f"model {trigger.model_id!r} is not {self.settings.model_id!r}", trigger)
        if trigger.recommendation.action != "retrain":
            return self._skip(f"action {trigger.recommendation.action}", trigger)
        if trigger.trigger_id in self.handled:
            return self._skip("already handled", trigger)
        try:
            deployment = self.current_deployment()
            if deployment is not None and trigger.model_version in deployment.lineage:
                # Windows of the version served before the switch still close after it: their
                # triggers describe a model that is no longer in production.
                return self._skip(
                    f"about version {trigger.model_version}, replaced by {deployment.version}", trigger
                )
            data = self.load_labelled()
            outcome = retrain(trigger, data, deployment, self.settings)
            decision = outcome.record()
            if outcome.validation.promote:
                decision["deployment"] = self._promote(outcome, deployment, data)
        except Exception as exc:  # one trigger must never stop the service; the next may succeed
            log.exception("trigger %s of %s failed", trigger.trigger_id, trigger.model_id)
            # Not remembered as handled: a re-delivery (or the monitor's reminder) tries again.
            decision = {
                "decision": "failed",
                "model_id": trigger.model_id,
                "trigger_id": trigger.trigger_id,
                "reason": f"{type(exc).__name__}: {exc}",
            }
            self.emit(decision)
            return decision
        self.handled.add(trigger.trigger_id)
        log.info("%s", decision["reason"])
        self.emit(decision)
        return decision

    def _skip(self, reason: str, trigger: Trigger | None) -> dict[str, Any]:
        if trigger is None:
            log.info("skipped a record: %s", reason)
        else:
            log.info("skipped trigger %s (%s): %s", trigger.trigger_id, trigger.kind, reason)
        return {
            "decision": "skipped",
            "trigger_id": None if trigger is None else trigger.trigger_id,
            "reason": reason,
        }

    def _promote(self, outcome: Outcome, deployment: Deployment | None, data: Labelled) -> dict[str, Any]:
        """Reference first, deployment last: no event of the new version exists before its reference
        is in the registry, so the monitor judges it against its own training data, not the old model's."""
        assert outcome.candidate is not None
        model_id, version = self.settings.model_id, outcome.candidate_version
        run_dir = self.workdir / f"{model_id}-{version}"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "model.json").write_bytes(outcome.candidate.to_json())
        training_csv, reference = run_dir / "training.csv", run_dir / "reference.json"
        predictions = outcome.candidate.predict(data.rows(outcome.train))
        write_training_csv(
            training_csv, data, outcome.train, predictions, self.features, self.segment_keys, self.training
        )
        config, model = ["--config", self.config_path], ["--model", model_id]
        self.run_cli(["reference", "build", *config, *model, "--out", str(reference), str(training_csv)])
        self.run_cli(["reference", "publish", *config, *model, "--version", version, str(reference)])
        lineage = [*deployment.lineage, deployment.version] if deployment else [outcome.current_version]
        record = {
            "model_id": model_id,
            "model_version": version,
            "promoted": True,
            "previous_version": outcome.current_version,
            "lineage": lineage,
            "model": outcome.candidate.to_dict(),
            "trigger_id": outcome.trigger.trigger_id,
            "validation": outcome.validation.to_dict(),
            "deployed_at": self.clock(),
        }
        self.deploy(model_id, record)
        return {"model_version": version, "reference": str(reference), "training_file": str(training_csv)}


def print_json(record: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
    sys.stdout.flush()


# -- Kafka ---------------------------------------------------------------------------------------------


def read_topic_to_end(config: Mapping[str, str], topic: str, timeout: float = 60.0) -> list[bytes | None]:
    """Every value of ``topic`` from its beginning to the end offsets it had when called, in log
    order per partition (a missing topic has none). Assigned, not subscribed: no group, no commits."""
    consumer = Consumer(
        {
            **config,
            "group.id": "retrainer-reader",  # required by the client; assign() never joins it
            "enable.auto.commit": "false",
            "isolation.level": "read_committed",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            if metadata is not None and metadata.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise KafkaException(metadata.error)
            return []
        ends: dict[int, int] = {}
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        values: list[bytes | None] = []
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end within {timeout:.0f} s")
            for message in consumer.consume(1000, timeout=1.0):
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(error)
                    continue
                offset, partition = message.offset(), message.partition()
                # Records written after the call began are the next reader's.
                if offset is not None and partition is not None and offset < ends.get(partition, -1):
                    values.append(message.value())
            # Positions, not the last offset seen: the last offsets may be transaction markers.
            for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                if tp.offset >= ends[tp.partition]:
                    del ends[tp.partition]
        return values
    finally:
        consumer.close()


def ensure_topic(config: Mapping[str, str], topic: str, *, compacted: bool, timeout: float = 30.0) -> None:
    """Create ``topic`` with one partition if it does not exist: compacted for deployments (the newest
    record of each model is what counts), deleting old records for labelled events. One partition:
    every record in one order; key = model id keeps a model's records in order anyway."""
    admin = AdminClient(dict(config))
    if topic in admin.list_topics(timeout=timeout).topics:
        return
    policy = {"cleanup.policy": "compact" if compacted else "delete"}
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=-1, config=policy)])
    try:
        futures[topic].result(timeout)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def produce_and_wait(producer: Producer, topic: str, key: str, value: bytes, timeout: float = 30.0) -> None:
    """Produce one record and wait until the broker has it; raise if it does not."""
    errors: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err.str())

    producer.produce(topic, key=key.encode(), value=value, on_delivery=delivered)
    if producer.flush(timeout) or errors:
        raise KafkaException(f"{topic}: record not delivered: {errors or 'timed out'}")


def client_config(common: Mapping[str, str], bootstrap_servers: str) -> dict[str, str]:
    """The connection settings every client shares: the stream-monitor configuration's
    ``kafka.common`` (security: SASL, TLS) and the bootstrap servers."""
    return {**common, "bootstrap.servers": bootstrap_servers}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="retrainer.py",
        description="Retrain on stream-monitor's retrain triggers; validate; publish the reference; deploy.",
    )
    p.add_argument("--config", required=True, help="the stream-monitor configuration (model, Kafka, topics)")
    p.add_argument("--model", required=True, help="the model id this retrainer owns")
    p.add_argument("--workdir", required=True, help="handled trigger ids, training files, references")
    p.add_argument("--bootstrap-servers", help="default: kafka.bootstrap_servers of --config")
    p.add_argument("--triggers-topic", help="default: kafka.topics.triggers of --config")
    p.add_argument("--deployments-topic", default=DEFAULT_DEPLOYMENTS_TOPIC, help="compacted; key = model id")
    p.add_argument("--group-id", help="consumer group (default: retrainer-MODEL)")
    p.add_argument(
        "--labelled", action="append", default=[], metavar="JSONL", help="labelled events file (repeatable)"
    )
    p.add_argument("--labelled-topic", help="a topic of labelled events, read from its beginning to its end")
    p.add_argument(
        "--categorical",
        action="append",
        default=[],
        metavar="FEATURE",
        help="one-hot encode this configured feature in the model even if it is monitored as numeric",
    )
    p.add_argument("--holdout-days", type=float, default=1.0, help="newest days held out (default 1)")
    p.add_argument("--holdout-rows", type=int, help="newest rows held out (instead of --holdout-days)")
    p.add_argument(
        "--margin", type=float, default=0.05, help="relative MAE reduction required (default 0.05)"
    )
    p.add_argument("--min-train-rows", type=int, default=500, help="fewer to train on: keep (default 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation's bootstrap")
    p.add_argument("--max-decisions", type=int, default=0, help="exit after this many decisions (0: never)")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    app = load_config(args.config, check_references=False)
    try:
        model = app.model(args.model)
    except KeyError:
        print(f"retrainer: model {args.model!r} is not in {args.config}", file=sys.stderr)
        return 2
    if not args.labelled and not args.labelled_topic:
        print("retrainer: give --labelled FILE and/or --labelled-topic TOPIC", file=sys.stderr)
        return 2
    kafka = app.require_kafka()
    connection = client_config(kafka.common, args.bootstrap_servers or kafka.bootstrap_servers)
    schema = model.schema
    unknown = sorted(set(args.categorical) - set(schema.numeric_names) - set(schema.categorical_names))
    if unknown:
        print(
            f"retrainer: --categorical {', '.join(unknown)}: not a feature of {args.model}", file=sys.stderr
        )
        return 2
    settings = RetrainSettings(
        model_id=args.model,
        numeric=tuple(n for n in schema.numeric_names if n not in args.categorical),
        categorical=tuple(schema.categorical_names)
        + tuple(n for n in schema.numeric_names if n in args.categorical),
        holdout_days=args.holdout_days,
        holdout_rows=args.holdout_rows,
        margin=args.margin,
        min_train_rows=args.min_train_rows,
        seed=args.seed,
    )

    def load_labelled() -> Labelled:
        records: list[Any] = []
        for path in args.labelled:
            records.extend(read_jsonl(path))
        if args.labelled_topic:
            records.extend(
                _json_or_none(v) if v else None for v in read_topic_to_end(connection, args.labelled_topic)
            )
        data, dropped = labelled_from_records(records, args.model)
        log.info("labelled events of %s: %d usable, left out %s", args.model, len(data), dropped or "none")
        return data

    def current_deployment() -> Deployment | None:
        return latest_deployment(read_topic_to_end(connection, args.deployments_topic), args.model)

    producer = Producer({**connection, "enable.idempotence": "true", "acks": "all"})

    def deploy(model_id: str, record: dict[str, Any]) -> None:
        produce_and_wait(producer, args.deployments_topic, model_id, orjson.dumps(record))

    retrainer = Retrainer(
        settings=settings,
        config_path=args.config,
        workdir=Path(args.workdir),
        features=(*schema.numeric_names, *schema.categorical_names),
        segment_keys=schema.segment_keys,
        training=model.training,
        load_labelled=load_labelled,
        current_deployment=current_deployment,
        deploy=deploy,
    )
    ensure_topic(connection, args.deployments_topic, compacted=True)
    consumer = Consumer(
        {
            **connection,
            "group.id": args.group_id or f"retrainer-{args.model}",
            # Offsets are stored after a trigger is handled, and committed (automatically) from the
            # store: a crash mid-retrain re-delivers the trigger instead of losing it.
            "enable.auto.offset.store": "false",
            "enable.auto.commit": "true",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            # A retrain (reading the labelled data, fitting, building the reference) may take minutes.
            "max.poll.interval.ms": "1800000",
        }
    )
    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    decisions = 0
    topic = args.triggers_topic or kafka.topics.triggers
    try:
        consumer.subscribe([topic])
        log.info("retrainer of %s: following %s, deploying to %s", args.model, topic, args.deployments_topic)
        while not stopping:
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error() is not None:
                log.warning("%s: %s", topic, message.error())
                continue
            decision = retrainer.handle(message.value())
            consumer.store_offsets(message=message)
            if decision["decision"] != "skipped":
                decisions += 1
                if args.max_decisions and decisions >= args.max_decisions:
                    break
    finally:
        consumer.close()  # commits the stored offsets and leaves the group at once
        producer.flush(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
