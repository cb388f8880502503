"""The shard stage of two-stage aggregation: one input partition's share of a model, as *partials*.

When a busy model's events are keyed by ``event_id`` and spread over partitions, each partition-task
(a *shard*) sees a slice of every window. In ``aggregation.mode: two_stage`` a shard does not judge:
it decodes, validates, dead-letters and joins labels as before (the join stays local, because
predictions and labels are co-partitioned by ``event_id``), and summarises each window into a
:class:`WindowPartial` — the window's :class:`~stream_monitor.core.sketches.WindowSketch` (histogram
counts on the reference bins, categorical counts, the bottom-k KS sample, integrity counts) plus the
:class:`PerformanceStats` of the labels whose event time falls in the window (confusion counts,
score histograms per class for AUC, error sums). A :class:`ShardReport` carries a shard's closed
windows of one model and its *progress* (how far its event time has moved) to the model stage
(:mod:`stream_monitor.core.model_stage`) through a Kafka topic keyed by model id.

Everything here merges exactly: sketch counts and samples are exactly mergeable (the samples are
bottom-k by a hash of ``event_id``, the same whichever shard drew them), confusion counts and
histograms add, and float sums add up to rounding. So the model stage's merged window equals the
window one process would have summarised from all the events.

What a shard attributes to a window:

* time windows: the events whose ``ts`` lies in the window; the labels whose own ``ts`` lies in it
  (a label older than the oldest window still open on its shard counts in that oldest open window,
  and is counted as ``late_labels``); windows are named by their last pane, the same on every shard;
* count windows: each shard closes a window every ``size`` of *its own* events, and windows are named
  by their position in the shard's sequence: model window ``k`` merges the ``k``-th window of every
  shard, so it holds ``size × shards`` events. Labels count in the window open when they join.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream_monitor.core import state_format
from stream_monitor.core.events import LabelBatch, PredictionBatch
from stream_monitor.core.labels import JoinedLabels, LabelJoinBuffer
from stream_monitor.core.quality import binary_decisions, f1_from_counts
from stream_monitor.core.reference import ReferenceProfile
from stream_monitor.core.schema import ModelSchema, Task
from stream_monitor.core.settings import ModelSettings
from stream_monitor.core.sketches import WindowSketch
from stream_monitor.core.state_format import StateReader
from stream_monitor.core.windows import ClosedWindow, CountWindows, EventTimeWindows, week_origin
from stream_monitor.errors import StateError

#: Uniform score bins on [0, 1] of the per-class histograms that give a merged window's AUC. Scores
#: outside [0, 1] count in the edge bins. Pairs of a positive and a negative in one bin count as ties
#: (½), so the AUC is exact up to ``auc_error_bound`` = ½ · Σ_b pos_b · neg_b / (P · N) — reported with
#: every AUC; 0.0005 for two classes spread evenly over [0, 1].
AUC_BINS = 1000
_PERF_FORMAT = 1
_PARTIAL_FORMAT = 1
_REPORT_FORMAT = 1
_SHARD_FORMAT = 1
OTHER_CLASS = "__other__"
#: Window partials per shard report (a partial of 50 features is ~1.6 MB at most: a report stays far
#: below the 64 MB of a record).
PARTIALS_PER_REPORT = 8
NO_CLASS = "__none__"


class PerformanceStats:
    """Mergeable sufficient statistics of joined labels: every metric of
    :class:`~stream_monitor.core.performance.RollingPerformance` over any union of windows.

    >>> stats = PerformanceStats("binary")
    >>> stats.add(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1.0, 0.0, 1.0, 0.0]))
    >>> m = stats.metrics()
    >>> m["auc"], m["precision"], m["f1"], m["n"]
    (0.75, 0.5, 0.5, 4.0)
    """

    def __init__(
        self,
        task: Task,
        positive_class: str = "1",
        decision_threshold: float = 0.5,
        max_classes: int = 64,
    ) -> None:
        self.task: Task = task
        self.positive_class = str(positive_class)
        self.decision_threshold = float(decision_threshold)
        self.max_classes = int(max_classes)
        self.n = 0
        # |error| per label (the error the ADWIN on the model stage follows, as RollingPerformance's).
        self.error_n = 0
        self.error_sum = 0.0
        # regression: sums of (prediction − label), its absolute value and its square
        self.diff_n = 0
        self.diff_sum = 0.0
        self.abs_sum = 0.0
        self.sq_sum = 0.0
        # binary: confusion counts [truth][decision] and score histograms per class
        self.confusion = np.zeros((2, 2), dtype=np.int64)
        self.hist = np.zeros((2, AUC_BINS), dtype=np.int64)
        # multiclass: confusion counts over class names (truth → prediction → count)
        self.classes: dict[str, dict[str, int]] = {}
        self._known: set[str] = set()  # every class name in ``classes`` (keys and rows), NO_CLASS aside

    def __len__(self) -> int:
        return self.n

    # -- adding ------------------------------------------------------------------------------
    def add_joined(self, joined: JoinedLabels, rows: np.ndarray | None = None) -> None:
        """Add joined labels (the ``rows`` of them, all when None)."""
        if rows is None:
            self.add(joined.score, joined.label, joined.pred_class, joined.label_class)
            return
        picks = rows.tolist()
        self.add(
            joined.score[rows],
            joined.label[rows],
            [joined.pred_class[i] for i in picks],
            None if joined.label_class is None else [joined.label_class[i] for i in picks],
        )

    def add(
        self,
        score: np.ndarray,
        label: np.ndarray,
        pred_class: Sequence[str | None] | None = None,
        label_class: Sequence[str] | None = None,
    ) -> None:
        score = np.asarray(score, dtype=np.float64)
        label = np.asarray(label, dtype=np.float64)
        k = len(score)
        if k == 0:
            return
        self.n += k
        if self.task == "regression":
            ok = np.isfinite(score) & np.isfinite(label)
            diff = score[ok] - label[ok]
            self.diff_n += int(diff.size)
            self.diff_sum += float(np.sum(diff))
            self.abs_sum += float(np.sum(np.abs(diff)))
            self.sq_sum += float(np.sum(diff * diff))
            self._add_error(np.abs(diff))
            return
        if self.task == "binary":
            truth = (label > 0.5).astype(np.int64)
            positive, _ = binary_decisions(score, pred_class, self.positive_class, self.decision_threshold)
            np.add.at(self.confusion, (truth, positive.astype(np.int64)), 1)
            ok = np.isfinite(score)
            bins = np.clip(np.floor(score[ok] * AUC_BINS), 0, AUC_BINS - 1).astype(np.int64)
            np.add.at(self.hist, (truth[ok], bins), 1)
            error = np.abs(label - score)
            self._add_error(error[np.isfinite(error)])
            return
        if pred_class is None or label_class is None:
            raise ValueError("multiclass needs pred_class and label_class")
        wrong = 0
        for truth_name, pred_name in zip(label_class, pred_class, strict=True):
            wrong += pred_name != truth_name
            row = self.classes.setdefault(self._class(truth_name), {})
            pred_key = NO_CLASS if pred_name is None else self._class(pred_name)
            row[pred_key] = row.get(pred_key, 0) + 1
        self.error_n += k
        self.error_sum += float(wrong)

    def _class(self, name: str) -> str:
        """The name a class is counted under (the caller counts it): at most ``max_classes`` names,
        later ones share ``__other__``, as RollingPerformance does."""
        if name not in self._known and len(self._known) >= self.max_classes - 1:
            name = OTHER_CLASS
        self._known.add(name)
        return name

    def _names(self) -> set[str]:
        return set(self._known)

    def _add_error(self, error: np.ndarray) -> None:
        self.error_n += int(error.size)
        self.error_sum += float(np.sum(error))

    # -- merging -----------------------------------------------------------------------------
    def merge_from(self, other: PerformanceStats) -> None:
        """Add ``other``'s labels to these (same task)."""
        if other.task != self.task:
            raise ValueError(f"cannot merge {other.task} statistics into {self.task}")
        self.n += other.n
        self.error_n += other.error_n
        self.error_sum += other.error_sum
        self.diff_n += other.diff_n
        self.diff_sum += other.diff_sum
        self.abs_sum += other.abs_sum
        self.sq_sum += other.sq_sum
        self.confusion += other.confusion
        self.hist += other.hist
        for truth_name, row in sorted(other.classes.items()):
            into = self.classes.setdefault(self._class(truth_name), {})
            for pred_name, count in sorted(row.items()):
                key = pred_name if pred_name == NO_CLASS else self._class(pred_name)
                into[key] = into.get(key, 0) + count

    @classmethod
    def merged(cls, parts: Iterable[PerformanceStats], like: PerformanceStats) -> PerformanceStats:
        """One new object holding every part's labels (settings of ``like``)."""
        out = cls(like.task, like.positive_class, like.decision_threshold, like.max_classes)
        for part in parts:
            out.merge_from(part)
        return out

    # -- metrics ---------------------------------------------------------------------------------
    def auc(self) -> tuple[float, float]:
        """``(auc, error_bound)`` from the per-class histograms (NaN, NaN without both classes)."""
        neg, pos = self.hist[0].astype(np.float64), self.hist[1].astype(np.float64)
        p, n = pos.sum(), neg.sum()
        if p == 0 or n == 0:
            return math.nan, math.nan
        below = np.concatenate(([0.0], np.cumsum(neg)[:-1]))
        ties = float(np.dot(pos, neg))
        return float((np.dot(pos, below) + 0.5 * ties) / (p * n)), 0.5 * ties / (p * n)

    def metrics(self) -> dict[str, float]:
        """The metrics :class:`~stream_monitor.core.performance.RollingPerformance` reports, from counts."""
        out: dict[str, float] = {"n": float(self.n)}
        if self.n == 0:
            return out
        if self.task == "regression":
            if self.diff_n:
                out["mae"] = self.abs_sum / self.diff_n
                out["rmse"] = math.sqrt(max(self.sq_sum, 0.0) / self.diff_n)
                out["mean_error"] = self.diff_sum / self.diff_n
            else:
                out.update(mae=math.nan, rmse=math.nan, mean_error=math.nan)
            return out
        if self.task == "binary":
            tn, fp, fn, tp = (float(v) for v in self.confusion.ravel())
            out["accuracy"] = (tp + tn) / self.n
            out["auc"], out["auc_error_bound"] = self.auc()
            out["precision"] = tp / (tp + fp) if tp + fp else math.nan
            out["recall"] = tp / (tp + fn) if tp + fn else math.nan
            out["f1"] = f1_from_counts(tp, fp, fn)
            out["positives"] = float(self.confusion[1].sum())
            return out
        names = sorted(self._names())
        correct = sum(row.get(name, 0) for name, row in self.classes.items())
        out["accuracy"] = correct / self.n
        f1s: list[float] = []
        for name in names:
            tp = float(self.classes.get(name, {}).get(name, 0))
            actual = float(sum(self.classes.get(name, {}).values()))
            predicted = float(sum(row.get(name, 0) for row in self.classes.values()))
            if actual + predicted == 0:
                continue
            f1 = f1_from_counts(tp, predicted - tp, actual - tp)
            out[f"f1:{name}"] = f1
            f1s.append(f1)
        out["macro_f1"] = float(np.mean(f1s)) if f1s else math.nan
        return {k: out[k] for k in sorted(out, key=lambda k: (k.startswith("f1:"), k))}

    @property
    def mean_error(self) -> float:
        return self.error_sum / self.error_n if self.error_n else math.nan

    # -- state -----------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        truths = sorted(self.classes)
        cells = [(t, p, c) for t in truths for p, c in sorted(self.classes[t].items())]
        return state_format.tagged(
            "performance_stats",
            _PERF_FORMAT,
            task=self.task,
            n=self.n,
            error_n=self.error_n,
            diff_n=self.diff_n,
            sums=np.array([self.error_sum, self.diff_sum, self.abs_sum, self.sq_sum], dtype=np.float64),
            confusion=self.confusion,
            hist=self.hist,
            class_truth=[t for t, _, _ in cells],
            class_pred=[p for _, p, _ in cells],
            class_count=np.array([c for _, _, c in cells], dtype=np.int64),
        )

    @classmethod
    @state_format.restoring
    def from_state(cls, r: StateReader, like: PerformanceStats) -> PerformanceStats:
        r.expect("performance_stats", _PERF_FORMAT)
        if r.text("task") != like.task:
            raise StateError(f"{r.what}: statistics of a {r.text('task')} model, not {like.task}")
        out = cls(like.task, like.positive_class, like.decision_threshold, like.max_classes)
        out.n = r.integer("n", min_value=0)
        out.error_n = r.integer("error_n", min_value=0)
        out.diff_n = r.integer("diff_n", min_value=0)
        out.error_sum, out.diff_sum, out.abs_sum, out.sq_sum = r.array(
            "sums", np.float64, shape=(4,)
        ).tolist()
        out.confusion = r.array("confusion", np.int64, shape=(2, 2)).copy()
        out.hist = r.array("hist", np.int64, shape=(2, AUC_BINS)).copy()
        truth, pred = r.strings("class_truth"), r.strings("class_pred")
        counts = r.array("class_count", np.int64, shape=(len(truth),))
        if len(pred) != len(truth) or (counts < 0).any() or (out.confusion < 0).any() or (out.hist < 0).any():
            raise StateError(f"{r.what}: inconsistent class counts")
        for t, p, c in zip(truth, pred, counts.tolist(), strict=True):
            out.classes.setdefault(str(t), {})[str(p)] = int(c)
            out._known.update(n for n in (str(t), str(p)) if n != NO_CLASS)
        return out


@dataclass
class WindowPartial:
    """One shard's summary of one window of one model (see the module docstring)."""

    key: int  # the window's name: last pane (time windows) or position in the shard's sequence (count)
    start: float
    end: float
    closed_by_ts: float
    sketch: WindowSketch
    performance: PerformanceStats
    late_events: int = 0
    late_labels: int = 0

    def to_state(self) -> dict[str, Any]:
        return state_format.tagged(
            "window_partial",
            _PARTIAL_FORMAT,
            key=self.key,
            late_events=self.late_events,
            late_labels=self.late_labels,
            floats=np.array([self.start, self.end, self.closed_by_ts], dtype=np.float64),
            sketch=self.sketch.to_state(),
            performance=self.performance.to_state(),
        )

    @classmethod
    def from_state(
        cls, r: StateReader, schema: ModelSchema, reference: ReferenceProfile, like: PerformanceStats
    ) -> WindowPartial:
        r.expect("window_partial", _PARTIAL_FORMAT)
        start, end, closed_by = r.array("floats", np.float64, shape=(3,)).tolist()
        if not (start <= end):
            raise StateError(f"{r.what}: window bounds {start}..{end}")
        return cls(
            key=r.integer("key"),
            start=start,
            end=end,
            closed_by_ts=closed_by,
            sketch=WindowSketch.from_state(r.child("sketch"), schema, reference),
            performance=PerformanceStats.from_state(r.child("performance"), like),
            late_events=r.integer("late_events", min_value=0),
            late_labels=r.integer("late_labels", min_value=0),
        )


@dataclass
class ShardReport:
    """What one shard tells the model stage about one model: windows it closed since its last report
    (oldest first) and its progress — every window ending at or before ``progress`` (time windows:
    its watermark; count windows: the number of windows it has closed) is closed on this shard."""

    model_id: str
    shard: int
    progress: float
    partials: list[WindowPartial] = field(default_factory=list)
    labels: dict[str, float] = field(default_factory=dict)
    # How many shards there are (the input topic's partition count): the model stage waits for each.
    shards: int = 1

    def encode(self) -> bytes:
        """The report in the one state format (the value of a record on the partials topic)."""
        return state_format.encode(
            state_format.tagged(
                "shard_report",
                _REPORT_FORMAT,
                model_id=self.model_id,
                shard=self.shard,
                shards=self.shards,
                label_names=list(self.labels),
                floats=np.array([self.progress], dtype=np.float64),
                label_values=np.array(list(self.labels.values()), dtype=np.float64),
                partials=state_format.indexed([p.to_state() for p in self.partials]),
            )
        )

    @classmethod
    @state_format.restoring
    def decode(
        cls,
        data: bytes,
        schemas: dict[str, ModelSchema],
        references: dict[str, ReferenceProfile],
        stats: dict[str, PerformanceStats],
    ) -> ShardReport:
        """Parse a report; :class:`StateError` on anything else, or a model not configured here."""
        r = StateReader.of(data, "shard report", "shard_report", _REPORT_FORMAT)
        model_id = r.text("model_id")
        if model_id not in schemas or model_id not in references:
            raise StateError(f"shard report of model {model_id!r}, which is not configured here")
        (progress,) = r.array("floats", np.float64, shape=(1,)).tolist()
        if math.isnan(progress):
            raise StateError("shard report: progress is NaN")
        names = r.strings("label_names")
        values = r.array("label_values", np.float64, shape=(len(names),))
        partials = [
            WindowPartial.from_state(p, schemas[model_id], references[model_id], stats[model_id])
            for p in r.children("partials")
        ]
        shards = r.integer("shards", min_value=1)
        shard = r.integer("shard", min_value=0)
        if shard >= shards:
            raise StateError(f"shard report of shard {shard} of {shards}")
        return cls(
            model_id,
            shard,
            progress,
            partials,
            dict(zip(map(str, names), values.tolist(), strict=True)),
            shards,
        )


class ShardMonitor:
    """One model on one shard: label join and windows, summarised into :class:`ShardReport`\\ s.

    It has the interface of :class:`~stream_monitor.core.monitor.ModelMonitor` that the engine and
    ``replay`` use (``process_predictions``, ``process_labels``, ``flush``, ``may_close_window``,
    ``labels``, state); its outputs carry reports instead of evaluations and triggers.
    """

    def __init__(
        self,
        schema: ModelSchema,
        settings: ModelSettings,
        reference: ReferenceProfile,
        shard: int,
        shards: int = 1,
    ) -> None:
        self.schema = schema
        self.settings = settings
        self.reference = reference
        self.shard = shard
        self.shards = shards
        self.labels = LabelJoinBuffer(settings.label_buffer_entries, settings.label_ttl_seconds)
        self.events_total = 0
        self.last_evaluation = None  # the model stage judges; the status page asks every monitor
        w = settings.window
        self.timed = w.kind == "time"
        self.windows: CountWindows | EventTimeWindows
        if self.timed:
            self.windows = EventTimeWindows(
                w.width,
                w.time_slide,
                w.allowed_lateness,
                make_sketch=self._make_sketch,
                origin=week_origin(w.time_slide or w.width, settings.insights.week_start),
            )
        else:
            self.windows = CountWindows(w.size, w.slide, make_sketch=self._make_sketch)
        # Labels by the pane of their own time (time windows) or of the open window (count windows).
        self.label_panes: dict[int, PerformanceStats] = {}
        self.late_labels = 0
        self._reported_progress = -math.inf

    def _make_sketch(self) -> WindowSketch:
        return WindowSketch(self.schema, self.reference, sample_size=self.settings.detectors.window_sample)

    def new_stats(self) -> PerformanceStats:
        return new_stats(self.schema)

    @property
    def ready(self) -> bool:
        return True

    def may_close_window(self, events: int, max_ts: float) -> bool:
        return self.windows.may_close(events, max_ts)

    # -- the stream ------------------------------------------------------------------------------
    def process_predictions(self, batch: PredictionBatch, now: float) -> Any:
        from stream_monitor.core.monitor import MonitorOutput  # the monitor module imports this one

        out = MonitorOutput(events=len(batch))
        if len(batch) == 0:
            return out
        self.events_total += len(batch)
        self.labels.add_predictions(batch.event_id, batch.ts, batch.score, batch.pred_label)
        late_before = self.windows.late_events
        closed = self.windows.add(batch)
        out.late_events = self.windows.late_events - late_before
        out.reports += self._reports(closed, now, flushed=False)
        return out

    def process_labels(self, batch: LabelBatch, now: float) -> Any:
        from stream_monitor.core.monitor import MonitorOutput

        out = MonitorOutput(events=len(batch))
        joined = self.labels.join(batch.event_id, batch.ts, batch.label, batch.label_class, now)
        self.labels.expire(now)
        if len(joined.label):
            for pane, rows in self._label_panes(joined.label_ts).items():
                self.label_panes.setdefault(pane, self.new_stats()).add_joined(joined, rows)
        out.labels_joined = len(joined.label)
        return out

    def _label_panes(self, label_ts: np.ndarray) -> dict[int, np.ndarray]:
        """Rows of joined labels by the pane they count in (see the module docstring)."""
        if not self.timed:
            return {self._open_count_window(): np.arange(label_ts.size)}
        w = self.windows
        assert isinstance(w, EventTimeWindows)
        panes = np.floor((label_ts - w.origin) / w.slide)
        oldest = w.oldest_open_pane
        if oldest is not None:
            late = ~(panes >= oldest)  # NaN-safe: a non-finite time counts as late
            self.late_labels += int(np.count_nonzero(late))
            panes = np.where(late, oldest, panes)
        panes = np.nan_to_num(panes, nan=0.0, posinf=0.0, neginf=0.0).astype(np.int64)
        order = np.argsort(panes, kind="stable")
        names, starts = np.unique(panes[order], return_index=True)
        return dict(zip(names.tolist(), np.split(order, starts[1:]), strict=True))

    def _open_count_window(self) -> int:
        assert isinstance(self.windows, CountWindows)
        return self.windows.emitted

    def flush(self, now: float) -> Any:
        from stream_monitor.core.monitor import MonitorOutput

        out = MonitorOutput()
        out.reports += self._reports(self.windows.flush(), now, flushed=True)
        return out

    def idle_report(self, now: float) -> ShardReport | None:
        """Once, while this shard has seen no event of the model: a report that it holds none of its
        windows (progress ``inf``), so the model stage does not wait for it — with events keyed by
        ``model_id`` most shards never see a given model. Its first event makes its progress finite."""
        if self._reported_progress > -math.inf or self.events_total:
            return None
        reports = self._reports([], now, flushed=True)
        return reports[0] if reports else None

    def _reports(self, closed: list[ClosedWindow], now: float, *, flushed: bool) -> list[ShardReport]:
        """The reports of the windows a batch closed: at most :data:`PARTIALS_PER_REPORT` partials
        each (a batch can close thousands of sparse windows; one record must stay far below the
        topic's message size), each report's progress where its windows end, the last one's the
        shard's progress."""
        if flushed:
            progress = math.inf
        elif self.timed:
            assert isinstance(self.windows, EventTimeWindows)
            progress = self.windows.closed_through
        else:
            assert isinstance(self.windows, CountWindows)
            progress = float(self.windows.emitted)
        if not closed and progress == self._reported_progress:
            return []
        self._reported_progress = progress
        partials = [self._partial(window) for window in closed]
        if self.timed:
            # Label panes no open window needs any more (their labels went out with their windows).
            keep_from = self.windows.oldest_open_pane if not flushed else None  # type: ignore[union-attr]
            for pane in [p for p in self.label_panes if keep_from is None or p < keep_from]:
                del self.label_panes[pane]
        labels = self.label_counters(now)
        chunks = [partials[i : i + PARTIALS_PER_REPORT] for i in range(0, len(partials), PARTIALS_PER_REPORT)]
        reports = [
            ShardReport(
                self.schema.model_id,
                self.shard,
                (chunk[-1].end if self.timed else float(chunk[-1].key + 1)),
                chunk,
                labels,
                self.shards,
            )
            for chunk in chunks[:-1]
        ]
        last = chunks[-1] if chunks else []
        reports.append(ShardReport(self.schema.model_id, self.shard, progress, last, labels, self.shards))
        return reports

    def _partial(self, window: ClosedWindow) -> WindowPartial:
        if self.timed:
            w = self.windows
            assert isinstance(w, EventTimeWindows)
            key = w.pane_of(window.end) - 1
            first = key - w.panes_per_window + 1
            stats = PerformanceStats.merged(
                (s for p, s in sorted(self.label_panes.items()) if first <= p <= key), self.new_stats()
            )
        else:
            key = window.index
            stats = self.label_panes.pop(key) if key in self.label_panes else self.new_stats()
        late, self.late_labels = self.late_labels, 0
        return WindowPartial(
            key, window.start, window.end, window.closed_by_ts, window.sketch, stats, 0, late
        )

    def label_counters(self, now: float) -> dict[str, float]:
        return self.labels.stats(now)

    # -- state -----------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        panes = sorted(self.label_panes.items())
        return state_format.tagged(
            "shard_monitor",
            _SHARD_FORMAT,
            model_id=self.schema.model_id,
            shard=self.shard,
            events_total=self.events_total,
            late_labels=self.late_labels,
            reference_digest=self.reference.digest(),
            floats=np.array([self._reported_progress], dtype=np.float64),
            windows=self.windows.to_state(),
            labels=self.labels.to_state(),
            label_pane_names=np.array([p for p, _ in panes], dtype=np.int64),
            label_panes=state_format.indexed([s.to_state() for _, s in panes]),
        )

    @classmethod
    @state_format.restoring
    def from_state(
        cls,
        r: StateReader,
        schema: ModelSchema,
        settings: ModelSettings,
        reference: ReferenceProfile,
        shard: int,
        shards: int = 1,
    ) -> ShardMonitor:
        r.expect("shard_monitor", _SHARD_FORMAT)
        if r.text("model_id") != schema.model_id:
            raise StateError(f"{r.what}: state of model {r.text('model_id')!r}")
        if r.text("reference_digest") != reference.digest():
            raise StateError(
                f"{r.what}: the state was built against the reference with digest "
                f"{r.text('reference_digest')}, the configured one has digest {reference.digest()}; state of "
                "another reference is not restored"
            )
        mon = cls(schema, settings, reference, shard, shards)
        kind = EventTimeWindows if mon.timed else CountWindows
        mon.windows = kind.from_state(
            r.child("windows"), make_sketch=mon._make_sketch, schema=schema, reference=reference
        )
        mon.labels = LabelJoinBuffer.from_state(r.child("labels"))
        names = r.array("label_pane_names", np.int64, ndim=1).tolist()
        stats = r.children("label_panes")
        if len(stats) != len(names):
            raise StateError(f"{r.what}: {len(names)} label panes, {len(stats)} statistics")
        like = mon.new_stats()
        mon.label_panes = {p: PerformanceStats.from_state(s, like) for p, s in zip(names, stats, strict=True)}
        mon.events_total = r.integer("events_total", min_value=0)
        mon.late_labels = r.integer("late_labels", min_value=0)
        (mon._reported_progress,) = r.array("floats", np.float64, shape=(1,)).tolist()
        return mon


def new_stats(schema: ModelSchema) -> PerformanceStats:
    """Empty statistics that decide as the model's rolling performance does."""
    return PerformanceStats(schema.task, schema.positive_class, schema.decision_threshold)
