"""Replay: the service's pipeline over JSONL files, predictions and labels merged by event time.

Predictions are read in batches (as Kafka would hand them over); after each batch, every label whose
event time is at or before the batch's latest prediction time is joined — labels always follow their
prediction, so this is the order a live stream would have. Event time also drives the label TTL, so a
replay of months of data expires labels as the service would have: labels are joined in time-ordered
chunks spanning at most ``label_span`` seconds and 1/64 of the shortest label TTL, each with the clock
at its last label's event time.
Likewise a prediction batch is cut into slices of at most ``label_span`` seconds of event time, with the
labels due in between: a large batch may span days, and windows closing in it must see the labels a
live stream would have joined by then (the service's batches span well under a second). The default
span, 6 h, is finer than daily windows and coarse enough that small files are not cut into tiny batches.
Consecutive slices in which no window may close (``ModelMonitor.may_close_window``) go to the engine
in one call, and the labels due meanwhile are joined after it: only a window close reads what the
labels changed, so each window still closes in the first slice of a call, after the labels due before
it and with that slice's clock. On a sparse stream (a row a day) a 6-h slice holds one event, and a
call per event (about 0.3 ms of fixed work) kept such a replay near 2,000 events/s. A model with
segment keys is fed slice by slice: its segment-surge checks run once per call.
"""

from __future__ import annotations

import gzip
import heapq
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from stream_monitor.core.engine import EngineOutput, MonitoringEngine
from stream_monitor.core.events import PredictionBatch, decode_predictions, parse_ts
from stream_monitor.core.labels import hash_event_ids
from stream_monitor.core.triggers import Trigger
from stream_monitor.core.windows import take_batch


def open_lines(path: str | Path) -> IO[bytes]:
    """Open a JSONL file, gzip-compressed when it ends in ``.gz``."""
    p = Path(path)
    if p.suffix == ".gz":
        return gzip.open(p, "rb")  # type: ignore[return-value]
    return p.open("rb")


def read_batches(lines: Iterable[bytes], batch_size: int) -> Iterator[list[bytes]]:
    """Group non-empty lines into lists of ``batch_size`` raw messages."""
    batch: list[bytes] = []
    for line in lines:
        line = line.rstrip(b"\r\n")
        if not line:
            continue
        batch.append(line)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_triggers(out: IO[bytes], triggers: Iterable[Trigger]) -> None:
    """Write emitted triggers as JSON lines (``replay --out``, ``demo --out``): the service's bytes."""
    for t in triggers:
        out.write(t.to_json_bytes() + b"\n")


def label_heap(lines: Iterable[bytes]) -> list[tuple[float, int, bytes]]:
    """Labels ordered by event time; a line whose ts cannot be read sorts first (the decoder rejects it)."""
    heap: list[tuple[float, int, bytes]] = []
    for i, line in enumerate(lines):
        line = line.rstrip(b"\r\n")
        if not line:
            continue
        ts = parse_ts(_json_object(line).get("ts"))
        heapq.heappush(heap, (-float("inf") if ts is None else ts, i, line))
    return heap


def _json_object(line: bytes) -> dict[str, Any]:
    """The line's JSON object, or an empty one (the decoder rejects what is not an object)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return {}
    return obj if isinstance(obj, dict) else {}


def slice_positions(batches: Mapping[str, PredictionBatch], span: float) -> Iterator[dict[str, np.ndarray]]:
    """Positions of each model's events in consecutive event-time slices ``[k·span, (k+1)·span)``, in
    order (models without events in a slice are left out of it)."""
    if len(batches) == 1:
        ((model, batch),) = batches.items()
        if len(batch) == 0 or float(batch.ts.max()) // span == float(batch.ts.min()) // span:
            yield {model: np.arange(len(batch))}
            return
    # Per model, the positions grouped by slice (a stable sort keeps each slice's events in batch
    # order): one pass, where comparing every event with every slice cost (events × slices).
    groups: dict[str, dict[float, np.ndarray]] = {}
    for m, b in batches.items():
        bucket = np.floor(b.ts / span)
        order = np.argsort(bucket, kind="stable")
        keys, starts = np.unique(bucket[order], return_index=True)
        groups[m] = dict(zip(keys.tolist(), np.split(order, starts[1:]), strict=True))
    for key in sorted({k for g in groups.values() for k in g}):
        yield {m: g[key] for m, g in groups.items() if key in g}


def _part(
    batches: Mapping[str, PredictionBatch], positions: Mapping[str, np.ndarray]
) -> dict[str, PredictionBatch]:
    """The events at ``positions`` (increasing, no repeats) of each model's batch."""
    return {
        m: batches[m] if len(p) == len(batches[m]) else take_batch(batches[m], p)
        for m, p in positions.items()
    }


def time_slices(batches: Mapping[str, PredictionBatch], span: float) -> Iterator[dict[str, PredictionBatch]]:
    """Cut per-model batches into consecutive event-time slices ``[k·span, (k+1)·span)``, in order.

    >>> from stream_monitor.core.events import decode_predictions
    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> schema = {"m": ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))}
    >>> raws = [b'{"event_id": "%d", "model_id": "m", "ts": %d, "features": {}, "prediction": 1}' % (t, t)
    ...         for t in (5, 1, 12, 3, 25)]
    >>> batches, _ = decode_predictions(raws, schema)
    >>> [p["m"].ts.tolist() for p in time_slices(batches, 10.0)]
    [[5.0, 1.0, 3.0], [12.0], [25.0]]
    """
    for positions in slice_positions(batches, span):
        yield _part(batches, positions)


def pane_pieces(
    batches: Mapping[str, PredictionBatch], grids: list[tuple[float, float]]
) -> Iterator[tuple[dict[str, PredictionBatch], float, float]]:
    """Cut per-model batches at every pane boundary of ``grids`` (``(slide, origin)`` pairs), in
    event-time order; each piece with the times its panes start and end (the boundaries around it).

    >>> from stream_monitor.core.events import decode_predictions
    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> schema = {"m": ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))}
    >>> raws = [b'{"event_id": "%d", "model_id": "m", "ts": %d, "features": {}, "prediction": 1}' % (t, t)
    ...         for t in (5, 1, 12, 3, 25)]
    >>> batches, _ = decode_predictions(raws, schema)
    >>> grids = [(10.0, 0.0), (4.0, 2.0)]
    >>> [(p["m"].ts.tolist(), start, end) for p, start, end in pane_pieces(batches, grids)]
    [([1.0], 0.0, 2.0), ([5.0, 3.0], 2.0, 6.0), ([12.0], 10.0, 14.0), ([25.0], 22.0, 26.0)]
    """
    pieces: dict[tuple[int, ...], dict[str, np.ndarray]] = {}
    for m, b in batches.items():
        ts = np.where(np.isfinite(b.ts), b.ts, -math.inf)
        keys = np.stack([np.floor((ts - origin) / slide) for slide, origin in grids], axis=1)
        keys = np.nan_to_num(keys, neginf=np.iinfo(np.int64).min // 2).astype(np.int64)
        names, inverse = np.unique(keys, axis=0, return_inverse=True)
        order = np.argsort(inverse.reshape(-1), kind="stable")
        starts = np.searchsorted(inverse.reshape(-1)[order], np.arange(len(names)))
        for name, rows in zip(map(tuple, names.tolist()), np.split(order, starts[1:]), strict=True):
            pieces.setdefault(name, {})[m] = rows
    for name in sorted(pieces):
        bounds = list(zip(name, grids, strict=True))
        start = max(origin + k * slide for k, (slide, origin) in bounds)
        end = min(origin + (k + 1) * slide for k, (slide, origin) in bounds)
        yield _part(batches, pieces[name]), start, end


class _Run:
    """Consecutive slices of one prediction batch that go to the engine in one call (see the module
    docstring): per model the slices' positions, their event count and latest event time; and the
    clock after each slice, where the labels are joined (after the call, in the same chunks as slice
    by slice: a chunk's clock moves the label TTL and the arrival rate)."""

    def __init__(self) -> None:
        self.positions: dict[str, list[np.ndarray]] = {}
        self.events: dict[str, int] = {}
        self.latest: dict[str, float] = {}
        self.clocks: list[float] = []

    def __bool__(self) -> bool:
        return bool(self.positions)

    def takes(
        self, engine: MonitoringEngine, batches: Mapping[str, PredictionBatch], part: Mapping[str, np.ndarray]
    ) -> bool:
        """Whether ``part`` (the next slice) joins the run: no window of its models may close by its end."""
        for model, p in part.items():
            if engine.schemas[model].segment_keys:
                return False
            events = self.events.get(model, 0) + len(p)
            latest = max(self.latest.get(model, -math.inf), float(batches[model].ts[p].max()))
            if engine.may_close_window(model, events, latest):
                return False
        return True

    def add(
        self, batches: Mapping[str, PredictionBatch], part: Mapping[str, np.ndarray], clock: float
    ) -> None:
        """Append a slice; ``clock`` is the engine's clock (watermark) before the run."""
        for model, p in part.items():
            self.positions.setdefault(model, []).append(p)
            self.events[model] = self.events.get(model, 0) + len(p)
            self.latest[model] = max(self.latest.get(model, -math.inf), float(batches[model].ts[p].max()))
        # The engine's clock after this slice, as process_decoded moves it.
        self.clocks.append(max([self.clocks[-1] if self.clocks else clock, *self.latest.values()]))

    def take(self, batches: Mapping[str, PredictionBatch]) -> tuple[dict[str, PredictionBatch], list[float]]:
        """The run's events as per-model batches (in slice order) and the clocks after its slices;
        the run is empty again."""
        positions = {m: ps[0] if len(ps) == 1 else np.concatenate(ps) for m, ps in self.positions.items()}
        clocks = self.clocks
        self.positions, self.events, self.latest, self.clocks = {}, {}, {}, []
        return _part(batches, positions), clocks


#: A replay warns when more than this share of the labels came later than the label TTL.
LATE_LABEL_WARNING = 0.10
#: The TTL it suggests: this many times the 95th percentile of the label delay.
TTL_MARGIN = 1.5


class LabelDelays:
    """The delay of every label whose prediction a replay sees (label time − prediction time), per model.

    The label join measures only the labels that came in time: a label later than the TTL finds its
    prediction expired and is counted as an orphan, with no delay. To say how long the TTL should be,
    the replay matches the label file against the predictions itself (a 64-bit hash and a time per
    label, 16 bytes), whatever the TTL.

    >>> heap = label_heap([b'{"event_id": "a", "model_id": "m", "ts": 50, "label": 1}'])
    >>> delays = LabelDelays(heap)
    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> schema = {"m": ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))}
    >>> raws = [b'{"event_id": "%s", "model_id": "m", "ts": 20, "features": {}, "prediction": 1}' % e
    ...         for e in (b"a", b"b")]
    >>> delays.observe(decode_predictions(raws, schema)[0])
    >>> delays.of("m").tolist()
    [30.0]
    """

    def __init__(self, heap: Iterable[tuple[float, int, bytes]]) -> None:
        ids: dict[str, list[str]] = {}
        times: dict[str, list[float]] = {}
        for ts, _, line in heap:
            obj = _json_object(line)
            model, event_id = obj.get("model_id"), obj.get("event_id")
            if isinstance(model, str) and isinstance(event_id, str) and math.isfinite(ts):
                ids.setdefault(model, []).append(event_id)
                times.setdefault(model, []).append(ts)
        self._keys: dict[str, np.ndarray] = {}
        self._times: dict[str, np.ndarray] = {}
        for model, model_ids in ids.items():
            keys = hash_event_ids(model_ids)
            order = np.argsort(keys, kind="stable")
            self._keys[model] = keys[order]
            self._times[model] = np.asarray(times[model], dtype=np.float64)[order]
        self._found: dict[str, list[np.ndarray]] = {}

    def observe(self, batches: Mapping[str, PredictionBatch]) -> None:
        """Record the delay of each label of these predictions (decoded, in bounds)."""
        for model, batch in batches.items():
            keys = self._keys.get(model)
            if keys is None or len(batch) == 0:
                continue
            hashed = hash_event_ids(batch.event_id)
            pos = np.minimum(np.searchsorted(keys, hashed), keys.size - 1)
            hit = keys[pos] == hashed
            if hit.any():
                self._found.setdefault(model, []).append(self._times[model][pos[hit]] - batch.ts[hit])

    def of(self, model: str) -> np.ndarray:
        """The delays (seconds) of the model's labels whose prediction was seen."""
        found = self._found.get(model, [])
        return np.concatenate(found) if found else np.empty(0)


@dataclass(frozen=True)
class LabelTiming:
    """How late a model's labels came against its label TTL (the replay summary's advice).

    >>> t = LabelTiming.of(np.array([3600.0] * 8 + [9 * 86400.0] * 2), ttl=7 * 86400.0)
    >>> t.late, t.warn, round(t.suggested_ttl / 86400, 1)
    (2, True, 13.5)
    """

    labels: int  # labels whose prediction was seen
    late: int  # of them, later than the TTL: their prediction had expired (orphans)
    p50: float
    p95: float
    ttl: float

    @classmethod
    def of(cls, delays: np.ndarray, ttl: float) -> LabelTiming:
        if delays.size == 0:
            return cls(0, 0, math.nan, math.nan, ttl)
        p50, p95 = np.percentile(delays, [50, 95]).tolist()
        return cls(int(delays.size), int(np.count_nonzero(delays > ttl)), p50, p95, ttl)

    @property
    def warn(self) -> bool:
        """More than :data:`LATE_LABEL_WARNING` of the labels came after their prediction expired."""
        return self.labels > 0 and self.late > LATE_LABEL_WARNING * self.labels

    @property
    def suggested_ttl(self) -> float:
        """:data:`TTL_MARGIN` × the 95th percentile of the delay."""
        return TTL_MARGIN * self.p95


@dataclass
class ReplaySummary:
    """Totals of a replay, for the printed summary."""

    events: int = 0
    labels: int = 0
    rejected: int = 0
    windows: int = 0
    triggers: list[Trigger] = field(default_factory=list)  # as decided (not stamped ``emitted_at``)
    seconds: float = 0.0
    rejections_by_reason: dict[str, int] = field(default_factory=dict)
    label_delays: LabelDelays | None = None

    def add(self, out: EngineOutput, stream: str) -> None:
        if stream == "predictions":
            self.events += out.events
        else:
            self.labels += sum(o.labels_joined for o in out.per_model.values())
        self.rejected += len(out.rejections)
        for r in out.rejections:
            self.rejections_by_reason[r.reason] = self.rejections_by_reason.get(r.reason, 0) + 1
        self.windows += sum(len(o.evaluations) for o in out.per_model.values())
        self.triggers += out.triggers


def replay(
    engine: MonitoringEngine,
    predictions: Iterable[list[bytes]],
    labels: list[tuple[float, int, bytes]] | None = None,
    on_output: Callable[[EngineOutput, str], None] | None = None,
    label_batch: int = 5000,
    label_span: float = 6 * 3600.0,
    wall_now: float | None = None,
) -> ReplaySummary:
    """Run prediction batches and time-ordered labels through ``engine``; returns the totals.

    ``wall_now`` (the wall clock when the replay started) bounds event time as in the service.
    """
    heap = labels or []
    summary = ReplaySummary(label_delays=LabelDelays(heap) if heap else None)
    started = time.perf_counter()

    def emit(out: EngineOutput, stream: str) -> None:
        summary.add(out, stream)
        if on_output is not None:
            on_output(out, stream)

    # A chunk of labels shares one clock (its last label's time): keep its span a small part of the
    # shortest label TTL, so a label is not expired by the time of later labels in its chunk.
    ttl = min((m.label_ttl_seconds for m in engine.settings.values()), default=math.inf)
    chunk_span = min(label_span, ttl / 64)

    def drain(until: float) -> None:
        """Join the labels with event time <= ``until`` in chunks, the clock at each chunk's last label."""
        due: list[bytes] = []
        first = last = 0.0
        while heap and heap[0][0] <= until:
            ts = heap[0][0]
            if due and (len(due) >= label_batch or ts - first > chunk_span):
                emit(engine.process_labels(due, now=last, wall_now=wall_now), "labels")
                due = []
            if not due:
                first = ts
            last = ts
            due.append(heapq.heappop(heap)[2])
        if due:
            emit(engine.process_labels(due, now=last, wall_now=wall_now), "labels")

    def feed(run: tuple[dict[str, PredictionBatch], list[float]], watermark: float) -> float:
        """One engine call, then the labels due after each of its slices; returns the new clock."""
        part, clocks = run
        out = engine.process_decoded(part, now=watermark)
        emit(out, "predictions")
        for clock in clocks:
            drain(clock)
        return max(watermark, engine.watermark)

    # A restored engine continues from its own event-time clock.
    watermark = engine.watermark
    # Two-stage aggregation attributes a label to the window of its own time, as the service does
    # when it merges predictions and labels by timestamp: so predictions go in pane by pane, each
    # followed by the labels of that pane, and no label of a window arrives after the window closed.
    grids = engine.pane_grids() if heap and engine.two_stage else []
    for raws in predictions:
        batches, rejections = decode_predictions(
            raws, engine.schemas, engine.max_message_bytes, max_event_id_length=engine.max_event_id_length
        )
        batches, out_of_bounds = engine.bound_predictions(batches, raws, wall_now)
        if out_of_bounds:
            rejections = sorted(rejections + out_of_bounds, key=lambda rejection: rejection.index)
        if rejections:
            emit(EngineOutput(rejections=rejections), "predictions")
        if summary.label_delays is not None:
            summary.label_delays.observe(batches)
        if grids:
            for piece, start, end in pane_pieces(batches, grids):
                # Labels older than the piece first: their predictions are in, and the piece may
                # close the window they belong to.
                drain(math.nextafter(start, -math.inf))
                out = engine.process_decoded(piece, now=watermark)
                emit(out, "predictions")
                watermark = max(watermark, engine.watermark)
                # Only labels whose predictions are in: the batch may end inside the pane.
                drain(min(math.nextafter(end, -math.inf), watermark))
            continue
        run = _Run()
        for part in slice_positions(batches, label_span):
            if run and not run.takes(engine, batches, part):
                watermark = feed(run.take(batches), watermark)
            run.add(batches, part, watermark)
        if run:
            watermark = feed(run.take(batches), watermark)
    drain(float("inf"))
    emit(engine.flush(now=watermark), "predictions")
    summary.seconds = time.perf_counter() - started
    return summary


def summary_lines(summary: ReplaySummary, engine: MonitoringEngine) -> list[str]:
    """The replay's printed summary: totals, rejections, triggers, and per model the label join with
    a warning (and a TTL) when many labels came after their prediction had expired."""
    rate = summary.events / summary.seconds if summary.seconds > 0 else 0.0
    lines = [
        f"replayed {summary.events} events and {summary.labels} joined labels in {summary.seconds:.2f}s "
        f"({rate:,.0f} events/s); {summary.windows} windows; {summary.rejected} rejected; "
        f"{len(summary.triggers)} triggers"
    ]
    lines += [f"  rejected {n:>7}  {reason}" for reason, n in sorted(summary.rejections_by_reason.items())]
    for t in summary.triggers:
        feats = sorted({r.feature or r.statistic for r in t.reasons})
        lines.append(
            f"  trigger {t.model_id:<10} {t.kind:<16} {t.severity:<8} window end "
            f"{_utc(t.event_time)}  on {', '.join(feats)}  -> {t.recommendation.action}"
            # An escalation of a latched condition says why it fired again (and what it supersedes).
            + (f"  (escalation: {', '.join(t.escalation)})" if t.escalation else "")
        )
    for model, counts in engine.label_buffers().items():
        delays = summary.label_delays.of(model) if summary.label_delays is not None else np.empty(0)
        if not (counts["joined"] or counts["orphan"] or delays.size):
            continue  # no labels for this model
        ttl = engine.settings[model].label_ttl_seconds
        timing = LabelTiming.of(delays, ttl)
        line = (
            f"  labels  {model:<10} {counts['joined']:,} joined, {counts['orphan']:,} orphan, "
            f"{counts['expired']:,} predictions expired unlabelled, {counts['pending']:,} pending"
        )
        if timing.labels:
            line += f"; delay p50 {_duration(timing.p50)}, p95 {_duration(timing.p95)}"
        lines.append(line)
        if timing.warn:
            lines.append(
                f"  warning: {timing.late:,} of {model}'s {timing.labels:,} labels "
                f"({timing.late / timing.labels:.0%}) came more than the label TTL ({_duration(ttl)}) after "
                "their prediction, which had expired: they are orphans, not joined. Set "
                f"models[{model}].label_buffer.ttl_seconds to "
                f"{_config_duration(timing.suggested_ttl)} or more "
                f"({TTL_MARGIN:g} × the 95th percentile of the delay)"
            )
    return lines


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if math.isfinite(ts) else str(ts)


def _duration(seconds: float) -> str:
    """Seconds as a short duration: ``45s``, ``12m``, ``9.1h``, ``13.5d``.

    >>> _duration(45), _duration(720), _duration(32760), _duration(1166400)
    ('45s', '12m', '9.1h', '13.5d')
    """
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if abs(seconds) >= size:
            value = seconds / size
            return f"{value:.0f}{unit}" if unit == "m" or value == round(value) else f"{value:.1f}{unit}"
    return f"{seconds:.0f}s"


def _config_duration(seconds: float) -> str:
    """A configuration duration at least ``seconds``: whole days from two days up, else whole hours.

    >>> _config_duration(13.5 * 86400), _config_duration(5000)
    ('14d', '2h')
    """
    if seconds >= 2 * 86400:
        return f"{math.ceil(seconds / 86400)}d"
    return f"{max(1, math.ceil(seconds / 3600))}h"
