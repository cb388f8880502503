"""Model versions in the stream: one monitor per active version of a model, each against its own reference.

Prediction events name the version that made them (``model_version``; events without one belong to the
version the configuration names, or to the unnamed version ``None``). A :class:`VersionedModel` keeps
one :class:`~stream_monitor.core.monitor.ModelMonitor` per active version — at most
``versions.max_active`` (default 2: a rollout or a canary serves two at once) — so each version has its
own windows, baseline, latched conditions and cooldowns: none carries over from the old version.

Which reference a new version is judged against (:meth:`VersionedModel.resolve`), in this order:

1. one published for that version in the reference registry (``registry``);
2. the configuration's reference, when the configuration names that version or none (``configured``);
3. ``versions.unknown_reference: previous`` — the newest other active version's reference, else the
   configured one (``previous``, naming the version it belongs to); ``warmup`` — a reference warmed
   up from the version's own first ``warmup_events`` events (``warmup``).

Every trigger of a version names it (``model_version``) and says what it was judged against
(``reference``); the first events of a new version produce a
:class:`~stream_monitor.core.triggers.ModelVersionChanged` record. A version retires when a newer one
needs its place (the one seen least recently goes), or when it has had no event for
``versions.retire_after_seconds`` of event time behind the model's newest event; its series go with it.

A label carries no version: it joins the version whose label buffer holds its event id (a label
nobody holds counts as an orphan of the newest version). A reference published while a version runs
replaces what that version was judged against: the version starts again on it (windows, policy and
insights anew; pending labels and rolling performance kept, since they describe the model, not the
reference).

>>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
>>> from stream_monitor.core.settings import ModelSettings
>>> from stream_monitor.core.events import decode_predictions
>>> import orjson
>>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))
>>> model = VersionedModel(schema, ModelSettings(warmup_events=2), None, None, {})
>>> def batch(version, start):
...     raws = [orjson.dumps({"event_id": f"{version}-{i}", "model_id": "m", "model_version": version,
...                           "ts": i, "features": {"x": i}, "prediction": 1.0})
...             for i in range(start, start + 3)]
...     return decode_predictions(raws, {"m": schema})[0]["m"]
>>> out = model.process_predictions(batch("1", 0), now=0.0)
>>> [(c.model_version, c.previous_version, c.reference.source) for c in out.changes]
[('1', None, 'warmup')]
>>> out = model.process_predictions(batch("2", 3), now=0.0)
>>> [(c.model_version, c.previous_version, c.reference.source, c.reference.version) for c in out.changes]
[('2', '1', 'previous', '1')]
>>> model.active_versions
('1', '2')
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_monitor.core import state_format
from stream_monitor.core.events import LabelBatch, PredictionBatch
from stream_monitor.core.labels import LabelJoinBuffer
from stream_monitor.core.monitor import ModelMonitor, MonitorOutput
from stream_monitor.core.performance import RollingPerformance
from stream_monitor.core.reference import ReferenceProfile
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import ModelSettings
from stream_monitor.core.state_format import StateReader
from stream_monitor.core.triggers import REFERENCE_SOURCES, ModelVersionChanged, ReferenceUsed
from stream_monitor.core.windows import take_batch, take_labels
from stream_monitor.errors import StateError

_FORMAT = 1

#: The published references of one model, by version (the registry's view the engine holds).
Registry = Mapping[str, ReferenceProfile]


@dataclass
class VersionOutput(MonitorOutput):
    """A :class:`MonitorOutput` of all versions of a model, plus what changed among them."""

    changes: list[ModelVersionChanged] = field(default_factory=list)
    # Versions that stopped being watched (their metric series go): (version, why).
    retired: list[tuple[str | None, str]] = field(default_factory=list)
    # Input positions (``PredictionBatch.index``) of events of a version that found no place: every
    # active version still serves (``versions.displace_after_seconds``); dead-lettered by the engine.
    overflow: list[int] = field(default_factory=list)


@dataclass
class ActiveVersion:
    """One watched version: its monitor, what it is judged against, and when it was seen."""

    version: str | None
    monitor: ModelMonitor
    reference: ReferenceUsed
    first_ts: float
    last_ts: float
    # Processing order of its last event (least recently seen retires first; ties by start order).
    last_seen: int


def _label(version: str | None) -> str:
    return "(unnamed)" if version is None else version


#: Events a version must have served before it counts: it moves the clock that retires and displaces
#: versions, and it can be another version's "previous" (one hostile message is neither).
ESTABLISHED_EVENTS = 100


def _built_for(entry: ActiveVersion) -> str | None:
    """The model version ``entry``'s reference was built for (a warmed-up one: its own)."""
    return entry.version if entry.reference.source == "warmup" else entry.reference.version


class VersionedModel:
    """The active versions of one model (see the module docstring)."""

    def __init__(
        self,
        schema: ModelSchema,
        settings: ModelSettings,
        configured_reference: ReferenceProfile | None,
        configured_version: str | None,
        registry: Registry,
    ) -> None:
        self.schema = schema
        self.settings = settings
        self.configured_reference = configured_reference
        self.configured_version = configured_version
        self.registry = registry
        self.active: dict[str | None, ActiveVersion] = {}
        self._seen = 0
        # Whose the configured reference is: the configured version's; when the configuration names
        # none, the first version that comes (and unversioned events) — a later new version without
        # a reference of its own is then judged against "previous", and says so.
        self.configured_owner: str | None = configured_version
        self.owner_known = configured_version is not None
        # Until the first event, the configured version waits with its reference (status page,
        # readiness); a placeholder that has seen no event gives way to whichever version comes.
        reference, used = self.resolve(configured_version)
        self.active[configured_version] = ActiveVersion(
            configured_version, self._monitor(configured_version, reference), used, -math.inf, -math.inf, 0
        )
        # Label counts of retired versions: the model's totals never go down.
        self.retired_counts = {"expired": 0, "orphan": 0, "joined": 0}
        self.newest_ts = -math.inf

    # -- what a version is judged against ------------------------------------------------------
    def resolve(self, version: str | None) -> tuple[ReferenceProfile | None, ReferenceUsed]:
        """The reference a version starting now is judged against (module docstring, 1-3)."""
        published = None if version is None else self.registry.get(version)
        if published is not None:
            return published, ReferenceUsed(source="registry", version=version)
        cfg = self.configured_reference
        if cfg is not None and (version is None or not self.owner_known or version == self.configured_owner):
            # Built for the configured version; when the configuration names none, for its owner.
            built_for = self.configured_version if self.configured_version is not None else version
            return cfg, ReferenceUsed(source="configured", version=built_for)
        if self.settings.versions.unknown_reference == "previous":
            others = [
                e for e in self.active.values() if e.version != version and e.monitor.reference is not None
            ]
            # The newest version that has served (a made-up version with one event is no "previous").
            established = [e for e in others if e.monitor.events_total >= ESTABLISHED_EVENTS] or others
            if established:
                other = established[-1]
                return other.monitor.reference, ReferenceUsed(source="previous", version=_built_for(other))
            if cfg is not None:
                return cfg, ReferenceUsed(source="previous", version=self.configured_version)
        return None, ReferenceUsed(source="warmup", version=version)

    def _is_static(self, reference: ReferenceProfile | None) -> bool:
        """Whether ``reference`` can be found again on restore (configured, or in the registry):
        then a version's state stores its digest only; else (another version's warmed-up reference)
        the state stores it whole."""
        return reference is not None and (
            reference is self.configured_reference or any(reference is r for r in self.registry.values())
        )

    def _monitor(self, version: str | None, reference: ReferenceProfile | None) -> ModelMonitor:
        if reference is None or self._is_static(reference):
            return ModelMonitor(self.schema, self.settings, reference, version)
        monitor = ModelMonitor(self.schema, self.settings, None, version)
        monitor._use_reference(reference)
        return monitor

    # -- versions come and go ------------------------------------------------------------------
    @property
    def active_versions(self) -> tuple[str | None, ...]:
        """The watched versions, oldest start first."""
        return tuple(self.active)

    @property
    def current(self) -> ModelMonitor | None:
        """The monitor of the newest active version (``None`` before the first event)."""
        return next(reversed(self.active.values())).monitor if self.active else None

    def _start(self, version: str | None, first_ts: float, out: VersionOutput) -> ActiveVersion:
        limit = max(self.settings.versions.max_active, 1)
        waiting = {v: e for v, e in self.active.items() if e.monitor.events_total == 0}
        for v in waiting:  # placeholders (no event yet) give way silently
            del self.active[v]
        previous = next(reversed(self.active)) if self.active else None
        retired: list[str | None] = []
        entry = waiting.get(version)
        if entry is not None:
            entry.first_ts = entry.last_ts = first_ts
        else:
            reference, used = self.resolve(version)  # before a retirement: "previous" may be the one going
            while len(self.active) >= limit:
                oldest = min(self.active.values(), key=lambda a: a.last_ts)
                retired.append(oldest.version)
                self._retire(oldest.version, f"version {_label(version)} needs its place", out)
            entry = ActiveVersion(
                version, self._monitor(version, reference), used, first_ts, first_ts, self._seen
            )
        self.active[version] = entry
        if not self.owner_known and version is not None:
            self.configured_owner, self.owner_known = version, True
        if version is None and previous is None:
            return entry  # an unversioned model's one version: nothing changed
        out.changes.append(
            ModelVersionChanged.build(
                self.schema.model_id,
                version,
                previous,
                first_ts,
                self.active_versions,
                tuple(retired),
                entry.reference,
            )
        )
        return entry

    def _retire(self, version: str | None, why: str, out: VersionOutput) -> None:
        entry = self.active.pop(version)
        labels = entry.monitor.labels
        # Predictions still waiting for a label are given up: they count as expired.
        self.retired_counts["expired"] += int(labels.expired) + len(labels)
        self.retired_counts["orphan"] += int(labels.orphan_labels)
        self.retired_counts["joined"] += int(labels.joined)
        out.retired.append((version, why))

    def _retire_idle(self, out: VersionOutput) -> None:
        horizon = self.settings.versions.retire_after_seconds
        newest = max(self.active.values(), key=lambda a: a.first_ts).version if self.active else None
        for entry in list(self.active.values()):
            idle = self.newest_ts - entry.last_ts
            if entry.version != newest and entry.monitor.events_total > 0 and idle > horizon:
                self._retire(entry.version, f"no event for {idle:.0f} s of event time", out)

    def _switch(self, entry: ActiveVersion, reference: ReferenceProfile | None, used: ReferenceUsed) -> None:
        """Judge ``entry`` against another reference from now on: windows, policy and insights start
        again; pending labels, rolling performance and the event count stay (they describe the model)."""
        old = entry.monitor
        fresh = self._monitor(entry.version, reference)
        fresh.labels, fresh.performance, fresh.events_total = old.labels, old.performance, old.events_total
        entry.monitor = fresh
        entry.reference = used

    def use_published(self, version: str, reference: ReferenceProfile) -> bool:
        """A reference was published for ``version``: an active version judged against anything else
        starts again on it (pending labels and rolling performance kept). True when one did."""
        entry = self.active.get(version)
        if entry is None:
            return False
        if entry.reference.source == "registry" and entry.monitor.reference is reference:
            return False
        self._switch(entry, reference, ReferenceUsed(source="registry", version=version))
        return True

    def withdrawn(self, version: str) -> list[str | None]:
        """The registry no longer has ``version``'s reference (it is already gone from ``registry``):
        every active version judged against it starts again on what it resolves to now (its own
        version's first: a "previous" that named it follows). The versions that switched."""
        switched: list[str | None] = []
        for entry in sorted(self.active.values(), key=lambda e: e.version != version):
            if entry.reference.source in ("registry", "previous") and entry.reference.version == version:
                reference, used = self.resolve(entry.version)
                self._switch(entry, reference, used)
                switched.append(entry.version)
        return switched

    # -- processing ----------------------------------------------------------------------------
    def process_predictions(self, batch: PredictionBatch, now: float) -> VersionOutput:
        out = VersionOutput(events=len(batch))
        if len(batch) == 0:
            return out
        default = self.configured_version
        named = batch.model_version
        first = named[0]
        if named.count(first) == len(named):  # the usual batch: one version, no per-event Python
            parts: list[tuple[str | None, PredictionBatch]] = [(default if first is None else first, batch)]
        else:
            versions = [default if v is None else v for v in named]
            positions: dict[str | None, list[int]] = {}
            for i, v in enumerate(versions):
                positions.setdefault(v, []).append(i)
            parts = [(v, take_batch(batch, np.array(p, dtype=np.intp))) for v, p in positions.items()]
        for version, part in parts:
            entry = self.active.get(version)
            if entry is None or entry.monitor.events_total == 0:
                if not self._has_room() and entry is None:
                    out.overflow += part.index.tolist()
                    out.events -= len(part)
                    continue
                entry = self._start(version, float(part.ts.min()), out)
            self._seen += 1
            entry.last_seen = self._seen
            entry.last_ts = max(entry.last_ts, float(part.ts.max()))
            done = entry.monitor.process_predictions(part, now)
            if entry.monitor.events_total >= ESTABLISHED_EVENTS:
                # The clock that retires and displaces versions: only versions that have served move
                # it, so one message stamped a day ahead cannot age every real version at once.
                self.newest_ts = max(self.newest_ts, entry.last_ts)
            done.events = 0  # counted once above
            self._collect(entry, done, out)
        self._retire_idle(out)
        return out

    def _has_room(self) -> bool:
        """Whether a new version may start now: a place is free (or held by a placeholder), or the
        version with the oldest last event has had none for ``displace_after_seconds`` of the model's
        event time (the newest event of a version that has served; never the newcomer's own ``ts``)."""
        limits = self.settings.versions
        displace_after = limits.displace_after_seconds
        serving = [e for e in self.active.values() if e.monitor.events_total > 0]
        if len(serving) < max(limits.max_active, 1):
            return True
        oldest = min(serving, key=lambda e: e.last_ts)
        return self.newest_ts - oldest.last_ts >= displace_after

    def _collect(self, entry: ActiveVersion, done: MonitorOutput, out: VersionOutput) -> None:
        if entry.version is not None or entry.reference.source != "configured":
            done.triggers = [dataclasses.replace(t, reference=entry.reference) for t in done.triggers]
        out.extend(done)

    def process_labels(self, batch: LabelBatch, now: float) -> VersionOutput:
        """Join labels to the version that holds each one's prediction (module docstring)."""
        out = VersionOutput(events=len(batch))
        if not self.active or len(batch) == 0:
            return out
        entries = list(reversed(self.active.values()))  # newest first
        if len(entries) == 1:
            routed = [(entries[0], batch)]
        else:
            left = np.ones(len(batch), dtype=bool)
            owner = np.full(len(batch), 0, dtype=np.intp)  # nobody's: the newest version's orphans
            for k, entry in enumerate(entries):
                held = entry.monitor.labels.holds(batch.event_id) & left
                owner[held] = k
                left &= ~held
            routed = []
            for k, entry in enumerate(entries):
                picks = np.flatnonzero(owner == k)
                if picks.size:
                    routed.append((entry, take_labels(batch, picks)))
        # A version that gets no label in this batch ages at its next one, as a model without
        # versions does: each version's label statistics are those of a monitor of its own.
        for entry, part in routed:
            done = entry.monitor.process_labels(part, now)
            done.events = 0
            self._collect(entry, done, out)
        return out

    def flush(self, now: float) -> VersionOutput:
        out = VersionOutput()
        for entry in self.active.values():
            self._collect(entry, entry.monitor.flush(now), out)
        return out

    def may_close_window(self, events: int, max_ts: float) -> bool:
        """Whether more events could close a window of any version, or start or retire one (replay
        then cuts its input there)."""
        if len(self.active) != 1:
            return True
        return next(iter(self.active.values())).monitor.may_close_window(events, max_ts)

    def label_counts(self) -> dict[str, int]:
        """Pending, expired, orphan and joined over every version (retired ones included)."""
        counts = {"pending": 0, **self.retired_counts}
        for entry in self.active.values():
            labels = entry.monitor.labels
            counts["pending"] += len(labels)
            counts["expired"] += int(labels.expired)
            counts["orphan"] += int(labels.orphan_labels)
            counts["joined"] += int(labels.joined)
        return counts

    @property
    def events_total(self) -> int:
        return sum(entry.monitor.events_total for entry in self.active.values())

    # -- state ---------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return state_format.tagged(
            "versioned_model",
            _FORMAT,
            seen=self._seen,
            owner_known=self.owner_known,
            configured_owner=self.configured_owner or "",
            newest_ts=np.array([self.newest_ts], dtype=np.float64),
            retired=np.array([self.retired_counts[k] for k in _RETIRED], dtype=np.int64),
            versions=state_format.indexed(
                [
                    {
                        "named": entry.version is not None,
                        "version": entry.version or "",
                        "source": entry.reference.source,
                        "reference_named": entry.reference.version is not None,
                        "reference_version": entry.reference.version or "",
                        "times": np.array([entry.first_ts, entry.last_ts], dtype=np.float64),
                        "last_seen": entry.last_seen,
                        "monitor": entry.monitor.to_state(),
                    }
                    for entry in self.active.values()
                ]
            ),
        )

    def _restarted(self, r: StateReader, version: str | None) -> tuple[ModelMonitor, ReferenceUsed]:
        """A version's monitor on the reference it resolves to now, with the parts of its stored
        state that describe the model rather than the reference (see :meth:`_switch`)."""
        reference, used = self.resolve(version)
        monitor = self._monitor(version, reference)
        monitor.labels = LabelJoinBuffer.from_state(r.child("labels"))
        monitor.performance = RollingPerformance.from_state(r.child("performance"))
        monitor.performance.decision_threshold = self.schema.decision_threshold
        monitor.events_total = r.integer("events_total", min_value=0)
        return monitor, used

    def _reference_of(self, used: ReferenceUsed) -> ReferenceProfile | None:
        """The reference a restored version was built against, from where it came."""
        if used.source == "warmup":
            return None
        if used.source == "configured":
            return self.configured_reference
        published = None if used.version is None else self.registry.get(used.version)
        if published is not None:
            return published
        if used.source == "previous" and used.version == self.configured_version:
            return self.configured_reference
        # Another version's warmed-up reference is stored whole in the state; anything else that
        # is gone from the registry makes ModelMonitor.from_state refuse the state with the reason.
        return None

    @classmethod
    @state_format.restoring
    def from_state(
        cls,
        state: StateReader,
        schema: ModelSchema,
        settings: ModelSettings,
        configured_reference: ReferenceProfile | None,
        configured_version: str | None,
        registry: Registry,
    ) -> VersionedModel:
        model = cls(schema, settings, configured_reference, configured_version, registry)
        model.active.clear()
        if state.parts.get("kind") == "model_monitor":
            # State of a release before versions: one monitor, of the configured version.
            used = ReferenceUsed(source="configured", version=configured_version)
            mon = ModelMonitor.from_state(state, schema, settings, configured_version, configured_reference)
            if mon.reference is not None and mon.reference is not configured_reference:
                used = ReferenceUsed(source="warmup", version=configured_version)
            model.active[configured_version] = ActiveVersion(
                configured_version, mon, used, -math.inf, -math.inf, 0
            )
            return model
        state.expect("versioned_model", _FORMAT)
        model._seen = state.integer("seen", min_value=0)
        model.owner_known = state.flag("owner_known")
        owner = state.text("configured_owner")
        model.configured_owner = owner if model.owner_known and owner else configured_version
        (model.newest_ts,) = state.array("newest_ts", np.float64, shape=(1,)).tolist()
        retired = state.array("retired", np.int64, shape=(len(_RETIRED),)).tolist()
        model.retired_counts = dict(zip(_RETIRED, (int(v) for v in retired), strict=True))
        for r in state.children("versions"):
            version = r.text("version") if r.flag("named") else None
            source = r.text("source")
            if source not in REFERENCE_SOURCES:
                raise StateError(f"{r.what}: unknown reference source {source!r}")
            used = ReferenceUsed(
                source=source,  # checked just above
                version=r.text("reference_version") if r.flag("reference_named") else None,
            )
            first_ts, last_ts = r.array("times", np.float64, shape=(2,)).tolist()
            try:
                mon = ModelMonitor.from_state(
                    r.child("monitor"), schema, settings, version, model._reference_of(used)
                )
            except StateError:
                if used.source not in ("registry", "previous"):
                    raise
                # Its reference was published again or withdrawn while no one ran this state: as at
                # run time, the version starts again on what it resolves to now, keeping its pending
                # labels, rolling performance and event count.
                mon, used = model._restarted(r.child("monitor"), version)
            if version in model.active:
                raise StateError(f"{r.what}: version {_label(version)} twice")
            model.active[version] = ActiveVersion(
                version, mon, used, first_ts, last_ts, r.integer("last_seen", min_value=0)
            )
        if len(model.active) > max(settings.versions.max_active, 1):
            raise StateError(
                f"model {schema.model_id!r}: {len(model.active)} active versions in the state, "
                f"versions.max_active is {settings.versions.max_active}"
            )
        return model


_RETIRED = ("expired", "orphan", "joined")

__all__ = ["ActiveVersion", "Registry", "VersionOutput", "VersionedModel"]
