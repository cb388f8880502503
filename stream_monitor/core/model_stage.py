"""The model stage of two-stage aggregation: merge the shards' partials, judge once per model and window.

Shards (:mod:`stream_monitor.core.partials`) send :class:`~stream_monitor.core.partials.ShardReport`\\ s
through a Kafka topic keyed by model id, so all of a model's reports reach one partition of that
topic, owned by one member of the consumer group. There a :class:`ModelJudge` per model

* keeps the open windows, each as the partials received so far by shard (a partial that a shard sends
  again — it replayed its input after a crash — is recognised by ``(window, shard)`` and counted as a
  duplicate, never added twice; one for a window already judged is counted as late);
* knows its *carriers* (the shards that have reported on the model) and each one's progress;
* closes a window once every carrier's progress has passed its end — or, for a carrier that has been
  silent for ``shard_idle_timeout_seconds`` of wall clock (it went quiet or its member is down), without
  waiting for it any longer (counted: ``idle_closes``); windows close in order;
* merges the partials (exact: see the partials module), evaluates the merged window with the same
  detectors, policy and insights as the one-process path
  (:meth:`~stream_monitor.core.monitor.ModelMonitor.judge`), with the performance of the newest
  windows' joined labels (whole windows, until they hold ``performance_window`` labels), and the
  ADWIN detectors fed one value per window (the mean score, the mean error).

Pure: wall clock and event time are parameters.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from stream_monitor.core import state_format
from stream_monitor.core.detectors import StreamDriftDetector, make_stream_detector
from stream_monitor.core.labels import LabelJoinBuffer
from stream_monitor.core.monitor import ModelMonitor, MonitorOutput
from stream_monitor.core.partials import PerformanceStats, ShardReport, WindowPartial, new_stats
from stream_monitor.core.reference import ReferenceProfile
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import AggregationSettings, ModelSettings
from stream_monitor.core.sketches import merge_sketches
from stream_monitor.core.state_format import StateReader
from stream_monitor.core.windows import ClosedWindow
from stream_monitor.errors import StateError

_JUDGE_FORMAT = 1
_LABEL_NAMES = LabelJoinBuffer.STAT_NAMES
_STAGE_FORMAT = 1
#: Outcomes of a received partial, counted per model (``stream_monitor_partials_received_total``).
PARTIAL_OUTCOMES = ("merged", "duplicate", "late")


class ModelJudge:
    """One model's model stage (see the module docstring)."""

    def __init__(
        self,
        schema: ModelSchema,
        settings: ModelSettings,
        reference: ReferenceProfile,
        version: str | None,
        aggregation: AggregationSettings,
    ) -> None:
        self.schema = schema
        self.settings = settings
        self.reference = reference
        self.aggregation = aggregation
        self.timed = settings.window.kind == "time"
        # The one-process monitor's evaluation, policy and insights (its windows stay unused).
        self.monitor = ModelMonitor(schema, settings, reference, version)
        self.open: dict[int, dict[int, WindowPartial]] = {}
        self.closed_through: int | None = None  # key of the newest window judged
        self.progress: dict[int, float] = {}  # carrier shard → progress
        self.last_heard: dict[int, float] = {}  # carrier shard → wall clock of its last report
        # Per shard, its label join's counters as each report since the last judged window gave them,
        # with the report's progress: a window is judged with each shard's counters as of the report
        # in which the shard passed it (in a backlog a shard may report many windows ahead).
        self.label_log: dict[int, list[tuple[float, np.ndarray]]] = {}
        self.shards = 1  # the input topic's partition count, as the newest report says
        self.opened_at: dict[int, float] = {}  # open window → wall clock of its first partial
        self.history: deque[PerformanceStats] = deque()
        self.error_drift: StreamDriftDetector = make_stream_detector(
            "adwin", delta=settings.detectors.adwin_delta
        )
        self.error_drifts = 0
        self.counts: dict[str, int] = dict.fromkeys((*PARTIAL_OUTCOMES, "idle_closes", "late_labels"), 0)
        self.windows_judged = 0

    # -- receiving -------------------------------------------------------------------------------
    def receive(self, report: ShardReport, wall_now: float | None) -> None:
        shard = report.shard
        self.shards = report.shards
        # The latest, not the largest: a shard that held none of the model (inf) and then gets its
        # first event is waited for from then on; a shard replaying after a crash is waited for again.
        self.progress[shard] = report.progress
        if wall_now is not None:
            self.last_heard[shard] = wall_now
        if report.labels:
            values = np.array([report.labels.get(n, math.nan) for n in _LABEL_NAMES], dtype=np.float64)
            self.label_log.setdefault(shard, []).append((report.progress, values))
        for partial in report.partials:
            self.counts["late_labels"] += partial.late_labels
            if self.closed_through is not None and partial.key <= self.closed_through:
                self.counts["late"] += 1
                continue
            parts = self.open.setdefault(partial.key, {})
            if wall_now is not None:
                self.opened_at.setdefault(partial.key, wall_now)
            if shard in parts:
                self.counts["duplicate"] += 1
                continue
            parts[shard] = partial
            self.counts["merged"] += 1

    def _passed(self, shard: int, key: int, end: float) -> bool:
        progress = self.progress.get(shard, -math.inf)
        return (progress >= end) if self.timed else (progress > key)

    def _quiet(self, shard: int, key: int, wall_now: float | None) -> bool:
        """Whether ``shard`` has held window ``key`` up for the idle timeout (never in one process)."""
        if wall_now is None:
            return False
        since = max(self.last_heard.get(shard, -math.inf), self.opened_at.get(key, wall_now))
        return wall_now - since >= self.aggregation.shard_idle_timeout_seconds

    def close_ready(self, wall_now: float | None, out: MonitorOutput) -> None:
        """Judge, oldest first, every open window that every shard has passed (or stopped holding up)."""
        for key in sorted(self.open):
            end = max(p.end for p in self.open[key].values())
            waiting = [s for s in range(self.shards) if not self._passed(s, key, end)]
            if not all(self._quiet(s, key, wall_now) for s in waiting):
                return
            if waiting:
                self.counts["idle_closes"] += 1
            self._judge(key, out)

    def _judge(self, key: int, out: MonitorOutput) -> None:
        parts = [p for _, p in sorted(self.open.pop(key).items())]
        self.opened_at.pop(key, None)
        self.closed_through = key
        sketch = parts[0].sketch if len(parts) == 1 else merge_sketches([p.sketch for p in parts])
        window = ClosedWindow(
            min(p.start for p in parts),
            max(p.end for p in parts),
            self.windows_judged,
            sketch,
            min(p.closed_by_ts for p in parts),
        )
        self.windows_judged += 1
        self.monitor.events_total += sketch.n_events  # the status page counts what was judged
        stats = PerformanceStats.merged((p.performance for p in parts), new_stats(self.schema))
        if stats.n:
            self.history.append(stats)
        rolling = self._rolling()
        perf = rolling.metrics()
        if stats.error_n:
            drift = bool(self.error_drift.update(np.array([stats.mean_error])))
            self.error_drifts += drift
            out.error_drift |= drift
        perf["error_drifts_total"] = float(self.error_drifts)
        if sketch.score_n:
            out.score_drift |= self.monitor.score_drift.update(np.array([sketch.score_sum / sketch.score_n]))
        flushed = all(math.isinf(p.closed_by_ts) for p in parts)
        self.monitor.judge(window, perf, self.label_stats(key, window.end), out, flushed=flushed)
        out.late_events += sum(p.late_events for p in parts)

    def _rolling(self) -> PerformanceStats:
        """The newest whole windows' labels, at least ``performance_window`` of them when there are."""
        want = self.settings.performance_window
        total, keep = 0, 0
        for stats in reversed(self.history):
            total += stats.n
            keep += 1
            if total >= want:
                break
        while len(self.history) > keep:
            self.history.popleft()
        return PerformanceStats.merged(self.history, new_stats(self.schema))

    def label_stats(self, key: int, end: float) -> dict[str, float]:
        """The label join's counters for window ``key``: summed over the shards, each as of the report
        in which it passed the window (its newest, for a shard that has not: an idle close); counts
        are exact, the median delay is the shards' median. Older entries are no longer needed."""
        rows = []
        for shard, log in self.label_log.items():
            at = next(
                (i for i, (p, _) in enumerate(log) if (p >= end if self.timed else p > key)), len(log) - 1
            )
            rows.append(log[at][1])
            self.label_log[shard] = log[at:]
        if not rows:
            return {}
        table = np.stack(rows)
        out = dict(zip(_LABEL_NAMES, table.sum(axis=0).tolist(), strict=True))
        delays = table[:, _LABEL_NAMES.index("delay_p50")]
        delays = delays[~np.isnan(delays)]
        out["delay_p50"] = float(np.median(delays)) if delays.size else math.nan
        return out

    # -- state -----------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        shards = sorted(self.progress)
        opened = [(key, shard, p) for key in sorted(self.open) for shard, p in sorted(self.open[key].items())]
        return state_format.tagged(
            "model_judge",
            _JUDGE_FORMAT,
            model_id=self.schema.model_id,
            closed_through=self.closed_through,
            shards_total=self.shards,
            opened_keys=np.array(sorted(self.opened_at), dtype=np.int64),
            opened_at=np.array([self.opened_at[k] for k in sorted(self.opened_at)], dtype=np.float64),
            windows_judged=self.windows_judged,
            error_drifts=self.error_drifts,
            count_names=list(self.counts),
            count_values=np.array(list(self.counts.values()), dtype=np.int64),
            shards=np.array(shards, dtype=np.int64),
            progress=np.array([self.progress[s] for s in shards], dtype=np.float64),
            heard=np.array([self.last_heard.get(s, math.nan) for s in shards], dtype=np.float64),
            label_names=list(_LABEL_NAMES),
            label_shards=np.array(
                [s for s, log in sorted(self.label_log.items()) for _ in log], dtype=np.int64
            ),
            label_progress=np.array(
                [p for _, log in sorted(self.label_log.items()) for p, _ in log], dtype=np.float64
            ),
            label_values=np.array(
                [v for _, log in sorted(self.label_log.items()) for _, v in log], dtype=np.float64
            ).reshape(-1, len(_LABEL_NAMES)),
            open_keys=np.array([k for k, _, _ in opened], dtype=np.int64),
            open_shards=np.array([s for _, s, _ in opened], dtype=np.int64),
            open_partials=state_format.indexed([p.to_state() for _, _, p in opened]),
            history=state_format.indexed([h.to_state() for h in self.history]),
            error_drift=self.error_drift.to_state(),
            monitor=self.monitor.to_state(),
        )

    def load_state(self, r: StateReader) -> None:
        r.expect("model_judge", _JUDGE_FORMAT)
        if r.text("model_id") != self.schema.model_id:
            raise StateError(f"{r.what}: state of model {r.text('model_id')!r}")
        like = new_stats(self.schema)
        closed = r.json("closed_through")
        if closed is not None and not isinstance(closed, int):
            raise StateError(f"{r.what}: closed_through must be an integer")
        shards = r.array("shards", np.int64, ndim=1).tolist()
        progress = r.array("progress", np.float64, shape=(len(shards),)).tolist()
        heard = r.array("heard", np.float64, shape=(len(shards),)).tolist()
        label_shards = r.array("label_shards", np.int64, ndim=1).tolist()
        if tuple(str(n) for n in r.strings("label_names")) != _LABEL_NAMES:
            raise StateError(f"{r.what}: label counters of another layout")
        label_progress = r.array("label_progress", np.float64, shape=(len(label_shards),))
        values = r.array("label_values", np.float64, shape=(len(label_shards), len(_LABEL_NAMES)))
        keys = r.array("open_keys", np.int64, ndim=1).tolist()
        owners = r.array("open_shards", np.int64, shape=(len(keys),)).tolist()
        partials = r.children("open_partials")
        if len(partials) != len(keys):
            raise StateError(f"{r.what}: {len(keys)} open partials named, {len(partials)} stored")
        count_names = [str(n) for n in r.strings("count_names")]
        count_values = r.array("count_values", np.int64, shape=(len(count_names),))
        if set(count_names) != set(self.counts) or (count_values < 0).any():
            raise StateError(f"{r.what}: counts {count_names!r}")
        monitor = ModelMonitor.from_state(
            r.child("monitor"), self.schema, self.settings, self.monitor.model_version, self.reference
        )
        self.open = {}
        for key, shard, part in zip(keys, owners, partials, strict=True):
            self.open.setdefault(key, {})[shard] = WindowPartial.from_state(
                part, self.schema, self.reference, like
            )
        self.closed_through = closed
        self.shards = r.integer("shards_total", min_value=1)
        opened = r.array("opened_keys", np.int64, ndim=1).tolist()
        self.opened_at = dict(
            zip(opened, r.array("opened_at", np.float64, shape=(len(opened),)).tolist(), strict=True)
        )
        self.windows_judged = r.integer("windows_judged", min_value=0)
        self.error_drifts = r.integer("error_drifts", min_value=0)
        self.counts = dict(zip(count_names, count_values.tolist(), strict=True))
        self.progress = dict(zip(shards, progress, strict=True))
        self.last_heard = {s: h for s, h in zip(shards, heard, strict=True) if not math.isnan(h)}
        self.label_log = {}
        for shard, progress_at, row in zip(label_shards, label_progress.tolist(), values, strict=True):
            self.label_log.setdefault(shard, []).append((progress_at, row.copy()))
        self.history = deque(PerformanceStats.from_state(h, like) for h in r.children("history"))
        self.error_drift = StreamDriftDetector.from_state(r.child("error_drift"))
        self.monitor = monitor


class ModelStage:
    """The judges of the models whose reports reach one partition of the partials topic (or, in one
    process, of every model): reports in, per-model outputs (evaluations, triggers) out."""

    def __init__(
        self,
        schemas: Mapping[str, ModelSchema],
        settings: Mapping[str, ModelSettings],
        references: Mapping[str, ReferenceProfile],
        versions: Mapping[str, str | None],
        aggregation: AggregationSettings,
    ) -> None:
        self.schemas = dict(schemas)
        self.settings = dict(settings)
        self.references = dict(references)
        self.versions = dict(versions)
        self.aggregation = aggregation
        self.judges: dict[str, ModelJudge] = {}

    def judge_of(self, model_id: str) -> ModelJudge:
        judge = self.judges.get(model_id)
        if judge is None:
            judge = self.judges[model_id] = ModelJudge(
                self.schemas[model_id],
                self.settings[model_id],
                self.references[model_id],
                self.versions.get(model_id),
                self.aggregation,
            )
        return judge

    @property
    def monitors(self) -> dict[str, ModelMonitor]:
        """The judging monitors by model (the status page and the metrics read these)."""
        return {m: j.monitor for m, j in self.judges.items()}

    def process(self, reports: list[ShardReport], wall_now: float | None) -> dict[str, MonitorOutput]:
        """Take reports (in the order they arrived) and judge every window that is ready."""
        for report in reports:
            self.judge_of(report.model_id).receive(report, wall_now)
        return self.tick(wall_now, {r.model_id for r in reports})

    def tick(self, wall_now: float | None, models: set[str] | None = None) -> dict[str, MonitorOutput]:
        """Judge what is ready (``models``: only these; the idle timeout needs a tick without reports)."""
        outputs: dict[str, MonitorOutput] = {}
        for model_id in sorted(self.judges if models is None else models):
            out = MonitorOutput()
            self.judges[model_id].close_ready(wall_now, out)
            if out.evaluations or out.triggers:
                outputs[model_id] = out
        return outputs

    def to_state(self) -> dict[str, Any]:
        return state_format.tagged(
            "model_stage", _STAGE_FORMAT, judges={m: j.to_state() for m, j in sorted(self.judges.items())}
        )

    def snapshot(self) -> bytes:
        return state_format.encode(self.to_state())

    @state_format.restoring
    def restore(self, data: bytes) -> None:
        """Replace the judges with a snapshot's (all or nothing); models not configured are dropped."""
        r = StateReader.of(state_format.decode(data), "model stage", "model_stage", _STAGE_FORMAT)
        judges = r.child("judges")
        restored: dict[str, ModelJudge] = {}
        for model_id in judges.parts:
            if model_id not in self.schemas or model_id not in self.references:
                continue
            judge = ModelJudge(
                self.schemas[model_id],
                self.settings[model_id],
                self.references[model_id],
                self.versions.get(model_id),
                self.aggregation,
            )
            judge.load_state(StateReader(judges.child(model_id).parts, f"model stage of {model_id!r}"))
            restored[model_id] = judge
        self.judges = restored
