"""Count and event-time windows over prediction batches, built from mergeable sub-window sketches.

Both kinds cut the stream into sub-windows ("panes") of one ``slide``; a tumbling window is one pane,
a sliding window the merge of the last ``size / slide`` panes. ``add(batch)`` returns the windows the
batch closed, in order; ``flush()`` closes what is open at the end of a replay. Neither emits a window
that would only cover time before the stream started or after it ended: the first sliding window is
the first full one, and a flush closes only the window that ends with the current pane.

Pure: no files, no clock; event time comes from the events.

>>> from types import SimpleNamespace
>>> from stream_monitor.core.reference import ReferenceProfile
>>> from stream_monitor.core.schema import ModelSchema
>>> from stream_monitor.core.sketches import WindowSketch
>>> schema, reference = ModelSchema("m", "regression", ()), ReferenceProfile(1, "m")
>>> windows = CountWindows(4, make_sketch=lambda: WindowSketch(schema, reference))
>>> batch = SimpleNamespace(model_id="m", index=np.arange(10), event_id=[str(i) for i in range(10)],
...     ts=np.arange(10.0), model_version=[None] * 10, numeric=np.empty((0, 10)), categorical=[],
...     score=np.full(10, np.nan), pred_label=[None] * 10, segments={}, unknown_features=0)
>>> [(w.index, w.start, w.end, w.sketch.n_events) for w in windows.add(batch)]
[(0, 0.0, 3.0, 4), (1, 4.0, 7.0, 4)]
>>> [(w.index, w.start, w.end) for w in windows.flush()]
[(2, 8.0, 9.0)]
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Self, TypeVar

import numpy as np

from stream_monitor.core import state_format
from stream_monitor.core.reference import ReferenceProfile
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.sketches import WindowSketch, merge_sketches
from stream_monitor.core.state_format import StateReader
from stream_monitor.errors import StateError

if TYPE_CHECKING:
    from stream_monitor.core.events import LabelBatch, PredictionBatch

#: Version of the layout written by the windows' ``snapshot()``; bump on incompatible change.
WINDOWS_FORMAT = 2  # 1 was JSON

_T = TypeVar("_T")


@dataclass
class ClosedWindow:
    """A finished window: its event-time bounds, its position in the emitted sequence, its sketch.

    For event-time windows ``[start, end)`` are the aligned window bounds; for count windows they are
    the smallest and largest event time in the window (both inclusive).

    >>> from stream_monitor.core.reference import ReferenceProfile
    >>> from stream_monitor.core.schema import ModelSchema
    >>> sketch = WindowSketch(ModelSchema("m", "regression", ()), ReferenceProfile(1, "m"))
    >>> ClosedWindow(0.0, 60.0, 0, sketch).end
    60.0
    """

    start: float
    end: float
    index: int
    sketch: WindowSketch
    # The event time that closed an event-time window (the watermark, lateness included, that passed
    # its end); infinite when nothing did (flushed at the end of a replay). With the sketch's last
    # event it tells whether the stream stopped after the window (a gap): see core/evaluation.py.
    closed_by_ts: float = math.inf


_DAY = 86400.0
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def week_origin(slide: float, week_start: str = "monday") -> float:
    """Where boundaries of panes ``slide`` seconds wide start: panes of whole weeks begin on
    ``week_start`` at UTC midnight (a weekly window is an ISO week by default, not the
    Thursday-to-Thursday of the Unix epoch); other widths keep the epoch (0), so days start at
    midnight. Event-time windows and insight buckets both align with it.

    >>> week_origin(7 * _DAY) / _DAY, week_origin(14 * _DAY, "sunday") / _DAY  # 1970-01-05 and -04
    (4.0, 3.0)
    >>> week_origin(_DAY), week_origin(30 * _DAY), week_origin(3600.0)
    (0.0, 0.0, 0.0)
    """
    if slide <= 0 or slide % (7 * _DAY):
        return 0.0
    return ((_WEEKDAYS.index(week_start) - 3) % 7) * _DAY  # 1970-01-01 was a Thursday (3)


def _replace(batch: PredictionBatch, **changes: Any) -> PredictionBatch:
    # Works for the PredictionBatch dataclass and for duck-typed stand-ins (SimpleNamespace) alike.
    if dataclasses.is_dataclass(batch):
        return dataclasses.replace(batch, **changes)
    return type(batch)(**{**vars(batch), **changes})


def slice_batch(batch: PredictionBatch, start: int, stop: int) -> PredictionBatch:
    """Events ``start:stop`` of a batch as a batch (numpy columns are views, lists are copied).

    ``unknown_features`` counts a whole input batch, so it stays with the slice that starts at 0.

    >>> from types import SimpleNamespace
    >>> batch = SimpleNamespace(model_id="m", index=np.arange(3), event_id=["a", "b", "c"],
    ...     ts=np.array([1.0, 2.0, 3.0]), model_version=[None] * 3, numeric=np.zeros((2, 3)),
    ...     categorical=[["x", "y", None]], score=np.zeros(3), pred_label=[None] * 3,
    ...     segments={"country": ["fr", "de", "it"]}, unknown_features=2)
    >>> part = slice_batch(batch, 1, 3)
    >>> part.event_id, part.numeric.shape, part.categorical, part.segments, part.unknown_features
    (['b', 'c'], (2, 2), [['y', None]], {'country': ['de', 'it']}, 0)
    """
    return _replace(
        batch,
        index=batch.index[start:stop],
        event_id=batch.event_id[start:stop],
        ts=batch.ts[start:stop],
        model_version=batch.model_version[start:stop],
        numeric=batch.numeric[:, start:stop],
        categorical=[column[start:stop] for column in batch.categorical],
        score=batch.score[start:stop],
        pred_label=batch.pred_label[start:stop],
        segments={key: column[start:stop] for key, column in batch.segments.items()},
        unknown_features=batch.unknown_features if start == 0 else 0,
    )


def take_batch(batch: PredictionBatch, positions: np.ndarray) -> PredictionBatch:
    """The events at ``positions`` (int array, any order) of a batch, as a batch.

    ``unknown_features`` cannot be attributed to single events and is set to 0.

    >>> from types import SimpleNamespace
    >>> batch = SimpleNamespace(model_id="m", index=np.arange(3), event_id=["a", "b", "c"],
    ...     ts=np.array([1.0, 2.0, 3.0]), model_version=[None] * 3, numeric=np.arange(6.0).reshape(2, 3),
    ...     categorical=[], score=np.zeros(3), pred_label=[None] * 3, segments={}, unknown_features=1)
    >>> part = take_batch(batch, np.array([2, 0]))
    >>> part.event_id, part.numeric.tolist()
    (['c', 'a'], [[2.0, 0.0], [5.0, 3.0]])
    """
    picks = [int(p) for p in positions]

    def pick(column: Sequence[_T]) -> list[_T]:
        if not picks:
            return []
        # itemgetter picks in C; with one position it returns the item itself, not a tuple.
        return [column[picks[0]]] if len(picks) == 1 else list(itemgetter(*picks)(column))

    return _replace(
        batch,
        index=batch.index[positions],
        event_id=pick(batch.event_id),
        ts=batch.ts[positions],
        model_version=pick(batch.model_version),
        numeric=batch.numeric[:, positions],
        categorical=[pick(column) for column in batch.categorical],
        score=batch.score[positions],
        pred_label=pick(batch.pred_label),
        segments={key: pick(column) for key, column in batch.segments.items()},
        unknown_features=0,
    )


def take_labels(batch: LabelBatch, positions: np.ndarray) -> LabelBatch:
    """The labels at ``positions`` (int array) of a batch, as a batch."""
    picks = positions.tolist()
    return dataclasses.replace(
        batch,
        index=batch.index[positions],
        event_id=[batch.event_id[i] for i in picks],
        ts=batch.ts[positions],
        label=batch.label[positions],
        label_class=[batch.label_class[i] for i in picks],
    )


def _pane_number(name: str) -> int | None:
    try:
        number = int(name)
    except ValueError:
        return None
    return number if str(number) == name else None


def _sketch_from(
    state: StateReader, template: WindowSketch, schema: ModelSchema | None, reference: ReferenceProfile | None
) -> WindowSketch:
    seed = state.parts.get("seed")
    if seed != template.seed:
        raise StateError(f"{state.what}: sketch sampled with seed {seed}, sketches now use {template.seed}")
    return WindowSketch.from_state(state, schema or template.schema, reference or template.reference)


class CountWindows:
    """Windows of ``size`` events; tumbling, or sliding by ``slide`` events (``size`` a multiple of it).

    A sliding window closes every ``slide`` events once ``size`` events have been seen: window ``i``
    holds events ``[i * slide, i * slide + size)`` of the stream. A batch that crosses window bounds is
    split, so windows never depend on how the stream was batched.

    >>> from types import SimpleNamespace
    >>> from stream_monitor.core.reference import ReferenceProfile
    >>> from stream_monitor.core.schema import ModelSchema
    >>> schema, reference = ModelSchema("m", "regression", ()), ReferenceProfile(1, "m")
    >>> windows = CountWindows(6, slide=2, make_sketch=lambda: WindowSketch(schema, reference))
    >>> batch = SimpleNamespace(model_id="m", index=np.arange(10), event_id=[str(i) for i in range(10)],
    ...     ts=np.arange(10.0), model_version=[None] * 10, numeric=np.empty((0, 10)), categorical=[],
    ...     score=np.full(10, np.nan), pred_label=[None] * 10, segments={}, unknown_features=0)
    >>> [(w.index, w.start, w.end) for w in windows.add(batch)]
    [(0, 0.0, 5.0), (1, 2.0, 7.0), (2, 4.0, 9.0)]
    """

    def __init__(
        self, size: int, slide: int | None = None, *, make_sketch: Callable[[], WindowSketch]
    ) -> None:
        slide = size if slide is None else slide
        if size < 1 or slide < 1 or size % slide:
            raise ValueError(f"count window size {size} must be a positive multiple of slide {slide}")
        self.size = size
        self.slide = slide
        self.make_sketch = make_sketch
        self._panes_per_window = size // slide
        self._open = make_sketch()
        self._open_count = 0
        # The last full panes before the open one, oldest first; a window is these plus one more.
        self._full: deque[WindowSketch] = deque(maxlen=self._panes_per_window - 1)
        self._next_index = 0
        self._emitted_since_reset = False
        self.late_events = 0  # the event count decides membership, so no event is ever late

    @property
    def emitted(self) -> int:
        """Windows closed so far (the index of the next one)."""
        return self._next_index

    def may_close(self, events: int, max_ts: float) -> bool:
        """Whether adding ``events`` more events (the latest at ``max_ts``) may close a window: they
        fill the open pane. Never False when a window would close.

        >>> from stream_monitor.core.reference import ReferenceProfile
        >>> from stream_monitor.core.schema import ModelSchema
        >>> schema, reference = ModelSchema("m", "regression", ()), ReferenceProfile(1, "m")
        >>> windows = CountWindows(4, make_sketch=lambda: WindowSketch(schema, reference))
        >>> windows.may_close(3, 0.0), windows.may_close(4, 0.0)
        (False, True)
        """
        return events >= self.slide - self._open_count

    def add(self, batch: PredictionBatch) -> list[ClosedWindow]:
        """Count the batch into the open pane(s); return the windows it closed, oldest first.

        >>> from types import SimpleNamespace
        >>> from stream_monitor.core.reference import ReferenceProfile
        >>> from stream_monitor.core.schema import ModelSchema
        >>> schema, reference = ModelSchema("m", "regression", ()), ReferenceProfile(1, "m")
        >>> windows = CountWindows(3, make_sketch=lambda: WindowSketch(schema, reference))
        >>> batch = SimpleNamespace(model_id="m", index=np.arange(2), event_id=["a", "b"],
        ...     ts=np.array([1.0, 2.0]), model_version=[None] * 2, numeric=np.empty((0, 2)),
        ...     categorical=[], score=np.full(2, np.nan), pred_label=[None] * 2, segments={},
        ...     unknown_features=0)
        >>> len(windows.add(batch)), [w.sketch.n_events for w in windows.add(batch)]
        (0, [3])
        """
        closed: list[ClosedWindow] = []
        n = len(batch.ts)
        position = 0
        while position < n:
            take = min(self.slide - self._open_count, n - position)
            part = batch if take == n else slice_batch(batch, position, position + take)
            self._open.update(part)
            self._open_count += take
            position += take
            if self._open_count == self.slide:
                if len(self._full) == self._panes_per_window - 1:
                    closed.append(self._close([*self._full, self._open]))
                self._full.append(self._open)
                self._open = self.make_sketch()
                self._open_count = 0
        return closed

    def _close(self, panes: list[WindowSketch]) -> ClosedWindow:
        # A tumbling window's single pane is never touched again, so it needs no copy.
        sketch = panes[0] if len(panes) == 1 and self._panes_per_window == 1 else merge_sketches(panes)
        window = ClosedWindow(sketch.ts_min, sketch.ts_max, self._next_index, sketch)
        self._next_index += 1
        self._emitted_since_reset = True
        return window

    def flush(self) -> list[ClosedWindow]:
        """Close the window that ends with the open pane (if it holds events no window has had) and reset.

        >>> from stream_monitor.core.reference import ReferenceProfile
        >>> from stream_monitor.core.schema import ModelSchema
        >>> schema, reference = ModelSchema("m", "regression", ()), ReferenceProfile(1, "m")
        >>> CountWindows(3, make_sketch=lambda: WindowSketch(schema, reference)).flush()
        []
        """
        panes = list(self._full)
        if self._open_count:
            panes.append(self._open)
        pending = self._open_count > 0 or (panes and not self._emitted_since_reset)
        closed = [self._close(panes)] if pending else []
        self._open = self.make_sketch()
        self._open_count = 0
        self._full.clear()
        self._emitted_since_reset = False
        return closed

    def to_state(self) -> dict[str, Any]:
        """The state (settings, counters and pane sketches) as a container of
        :mod:`stream_monitor.core.state_format`."""
        return state_format.tagged(
            "count_windows",
            WINDOWS_FORMAT,
            size=self.size,
            slide=self.slide,
            open_count=self._open_count,
            next_index=self._next_index,
            emitted_since_reset=self._emitted_since_reset,
            open=self._open.to_state(),
            full=state_format.indexed([pane.to_state() for pane in self._full]),
        )

    @classmethod
    @state_format.restoring
    def from_state(
        cls,
        state: StateReader | dict[str, Any],
        make_sketch: Callable[[], WindowSketch],
        *,
        schema: ModelSchema | None = None,
        reference: ReferenceProfile | None = None,
        what: str = "count windows",
    ) -> Self:
        """Inverse of :meth:`to_state` (see :meth:`restore`)."""
        r = state if isinstance(state, StateReader) else StateReader(state, what)
        r.expect("count_windows", WINDOWS_FORMAT)
        try:
            windows = cls(r.integer("size"), r.integer("slide"), make_sketch=make_sketch)
        except ValueError as exc:
            raise StateError(f"{r.what}: {exc}") from exc
        template = windows._open
        windows._open = _sketch_from(r.child("open"), template, schema, reference)
        windows._open_count = r.integer("open_count")
        full = r.children("full")
        if len(full) > windows._panes_per_window - 1 or not 0 <= windows._open_count < windows.slide:
            raise StateError(f"{r.what}: pane counts do not fit the window size")
        windows._full.extend(_sketch_from(pane, template, schema, reference) for pane in full)
        windows._next_index = r.integer("next_index", min_value=0)
        windows._emitted_since_reset = r.flag("emitted_since_reset")
        return windows

    def snapshot(self) -> bytes:
        """The state as bytes (:meth:`to_state` in the one state format).

        >>> from stream_monitor.core.reference import ReferenceProfile
        >>> from stream_monitor.core.schema import ModelSchema
        >>> schema, reference = ModelSchema("m", "regression", ()), ReferenceProfile(1, "m")
        >>> windows = CountWindows(4, 2, make_sketch=lambda: WindowSketch(schema, reference))
        >>> CountWindows.restore(windows.snapshot(), windows.make_sketch).slide
        2
        """
        return state_format.encode(self.to_state())

    @classmethod
    def restore(
        cls,
        data: bytes,
        make_sketch: Callable[[], WindowSketch],
        *,
        schema: ModelSchema | None = None,
        reference: ReferenceProfile | None = None,
    ) -> Self:
        """Rebuild from :meth:`snapshot` bytes; the settings come from the snapshot.

        Pane sketches are restored against ``schema`` and ``reference`` when given, else against those
        of a ``make_sketch()`` sketch.

        >>> from stream_monitor.core import state_format
        >>> CountWindows.restore(state_format.encode({"kind": "x"}), make_sketch=lambda: None)
        Traceback (most recent call last):
        ...
        stream_monitor.errors.StateError: count windows: expected 'count_windows' state, found 'x'
        """
        return cls.from_state(state_format.decode(data), make_sketch, schema=schema, reference=reference)


class EventTimeWindows:
    """Windows of ``width`` seconds of event time, aligned to multiples of ``slide`` (tumbling if None).

    Panes are ``[p * slide, (p + 1) * slide)``; a window is the ``width / slide`` panes ending at its
    ``end``. The watermark is the largest event time seen minus ``allowed_lateness``; a window closes
    when the watermark reaches its end. An event older than the start of the oldest open window is late:
    it is counted in ``late_events`` and not added (events with a non-finite ``ts`` count as late too).
    The first window is the one that starts in the pane of the first event time minus the lateness.
    Windows without events are not emitted, so a bogus far-away timestamp costs no work per skipped
    window. The batch is processed as if event by event: lateness and window contents do not depend
    on how the stream was batched.

    >>> from types import SimpleNamespace
    >>> from stream_monitor.core.reference import ReferenceProfile
    >>> from stream_monitor.core.schema import ModelSchema
    >>> schema, reference = ModelSchema("m", "regression", ()), ReferenceProfile(1, "m")
    >>> make_sketch = lambda: WindowSketch(schema, reference)
    >>> windows = EventTimeWindows(10.0, allowed_lateness=2.0, make_sketch=make_sketch)
    >>> ts = np.array([1.0, 5.0, 11.0, 9.0, 13.0, 8.0, 25.0])  # 9 is within the lateness, 8 is not
    >>> batch = SimpleNamespace(model_id="m", index=np.arange(7), event_id=[str(t) for t in ts], ts=ts,
    ...     model_version=[None] * 7, numeric=np.empty((0, 7)), categorical=[], score=np.full(7, np.nan),
    ...     pred_label=[None] * 7, segments={}, unknown_features=0)
    >>> [(w.start, w.end, w.sketch.n_events) for w in windows.add(batch)], windows.late_events
    ([(0.0, 10.0, 3), (10.0, 20.0, 2)], 1)
    """

    def __init__(
        self,
        width: float,
        slide: float | None = None,
        allowed_lateness: float = 0.0,
        *,
        make_sketch: Callable[[], WindowSketch],
        origin: float = 0.0,
    ) -> None:
        slide = width if slide is None else slide
        panes_per_window = round(width / slide) if slide > 0 else 0
        if not (width > 0 and slide > 0 and panes_per_window >= 1):
            raise ValueError(f"event-time window width {width} and slide {slide} must be positive")
        if not math.isclose(panes_per_window * slide, width, rel_tol=1e-9):
            raise ValueError(f"event-time window width {width} must be a multiple of slide {slide}")
        if not allowed_lateness >= 0:
            raise ValueError(f"allowed_lateness must be >= 0, got {allowed_lateness}")
        self.width = width
        self.slide = slide
        self.allowed_lateness = allowed_lateness
        # Where pane boundaries start (mod the slide): 0 is the Unix epoch, a Thursday; weekly windows
        # start on the configured week day instead (see week_origin).
        self.origin = origin % slide
        self.make_sketch = make_sketch
        self._panes_per_window = panes_per_window
        self._panes: dict[int, WindowSketch] = {}
        # Windows are named by their last pane; every window before this one is closed.
        self._next_last_pane: int | None = None
        self._max_ts = -math.inf
        self._next_index = 0
        self.late_events = 0

    @property
    def watermark(self) -> float:
        """Largest event time seen minus the allowed lateness (``-inf`` before any event)."""
        return self._max_ts - self.allowed_lateness

    @property
    def panes_per_window(self) -> int:
        return self._panes_per_window

    @property
    def oldest_open_pane(self) -> int | None:
        """First pane of the oldest window still open (None before the first event)."""
        return None if self._next_last_pane is None else self._next_last_pane - self._panes_per_window + 1

    @property
    def closed_through(self) -> float:
        """Every window that ends at or before this event time is closed (``-inf`` before the first
        event): what a shard tells the model stage (core/partials.py)."""
        return -math.inf if self._next_last_pane is None else self.origin + self._next_last_pane * self.slide

    def pane_of(self, t: float) -> int:
        """The pane that starts at the pane boundary ``t`` (a window's ``start`` or ``end``)."""
        return round((t - self.origin) / self.slide)

    def may_close(self, events: int, max_ts: float) -> bool:
        """Whether events up to event time ``max_ts`` may close a window: the watermark they make
        passes the oldest open window (always True before the first event). Never False when a
        window would close.

        >>> from types import SimpleNamespace
        >>> from stream_monitor.core.reference import ReferenceProfile
        >>> from stream_monitor.core.schema import ModelSchema
        >>> schema, reference = ModelSchema("m", "regression", ()), ReferenceProfile(1, "m")
        >>> make_sketch = lambda: WindowSketch(schema, reference)
        >>> windows = EventTimeWindows(10.0, allowed_lateness=2.0, make_sketch=make_sketch)
        >>> _ = windows.add(SimpleNamespace(model_id="m", index=np.arange(1), event_id=["a"],
        ...     ts=np.array([3.0]), model_version=[None], numeric=np.empty((0, 1)), categorical=[],
        ...     score=np.full(1, np.nan), pred_label=[None], segments={}, unknown_features=0))
        >>> windows.may_close(5, 11.9), windows.may_close(5, 12.0)
        (False, True)
        """
        if self._next_last_pane is None:
            return True
        watermark = max(self._max_ts, max_ts) - self.allowed_lateness
        if not math.isfinite(watermark):
            return False
        # The arithmetic of _pane_after, so the answer is exact.
        return bool(self._pane_after(np.array([watermark]), self._next_last_pane)[0] > self._next_last_pane)

    def _pane_after(self, watermark: np.ndarray, floor: int) -> np.ndarray:
        """Last pane of the oldest window still open at each watermark (at least ``floor``)."""
        return np.maximum(np.floor((watermark - self.origin) / self.slide), floor).astype(np.int64)

    def add(self, batch: PredictionBatch) -> list[ClosedWindow]:
        """Add the batch's timely events to their panes; return the windows that closed, oldest first.

        >>> from types import SimpleNamespace
        >>> from stream_monitor.core.reference import ReferenceProfile
        >>> from stream_monitor.core.schema import ModelSchema
        >>> schema, reference = ModelSchema("m", "regression", ()), ReferenceProfile(1, "m")
        >>> windows = EventTimeWindows(4.0, slide=2.0, make_sketch=lambda: WindowSketch(schema, reference))
        >>> ts = np.array([0.5, 1.5, 2.5, 3.5, 4.5, 6.5])
        >>> batch = SimpleNamespace(model_id="m", index=np.arange(6), event_id=[str(t) for t in ts], ts=ts,
        ...     model_version=[None] * 6, numeric=np.empty((0, 6)), categorical=[], score=np.full(6, np.nan),
        ...     pred_label=[None] * 6, segments={}, unknown_features=0)
        >>> [(w.start, w.end, w.sketch.n_events) for w in windows.add(batch)]
        [(0.0, 4.0, 4), (2.0, 6.0, 3)]
        """
        n = len(batch.ts)
        if n == 0:
            return []
        ts = np.asarray(batch.ts, dtype=np.float64)
        timed = np.isfinite(ts)
        if self._next_last_pane is None:
            if not timed.any():
                self.late_events += n
                return []
            first_ts = float(ts[np.argmax(timed)])
            first_pane = math.floor((first_ts - self.allowed_lateness - self.origin) / self.slide)
            self._next_last_pane = first_pane + self._panes_per_window - 1
        # Watermark just before each event, as if the batch were processed one event at a time.
        running_max = np.maximum.accumulate(np.where(timed, ts, -math.inf))
        max_before = np.empty(n)
        max_before[0] = self._max_ts
        np.maximum(running_max[:-1], self._max_ts, out=max_before[1:])
        last_pane_before = self._pane_after(max_before - self.allowed_lateness, self._next_last_pane)
        pane = np.zeros(n, dtype=np.int64)
        pane[timed] = np.floor((ts[timed] - self.origin) / self.slide).astype(np.int64)
        late = ~timed | (pane < last_pane_before - (self._panes_per_window - 1))
        self.late_events += int(late.sum())
        self._max_ts = max(self._max_ts, float(running_max[-1]))
        final_last_pane = int(self._pane_after(np.array([self.watermark]), self._next_last_pane)[0])

        # Between two watermark steps the set of open windows is fixed: add that run of events to its
        # panes, then close the windows the next step passes.
        closed: list[ClosedWindow] = []
        run_starts = np.flatnonzero(np.diff(last_pane_before)) + 1
        bounds = [0, *run_starts.tolist(), n]
        for start, stop in pairwise(bounds):
            self._add_run(batch, pane, late, start, stop)
            after = int(last_pane_before[stop]) if stop < n else final_last_pane
            closed_by = float(max_before[stop]) if stop < n else self._max_ts
            closed.extend(self._close_until(after, closed_by))
        return closed

    def _add_run(
        self, batch: PredictionBatch, pane: np.ndarray, late: np.ndarray, start: int, stop: int
    ) -> None:
        timely = start + np.flatnonzero(~late[start:stop])
        if timely.size == 0:
            return
        run_panes = pane[timely]
        first_pane, last_pane = int(run_panes.min()), int(run_panes.max())
        if first_pane == last_pane:
            # The common case: one pane, no late event; slicing keeps numpy columns as views.
            whole = timely.size == stop - start
            part = slice_batch(batch, start, stop) if whole else take_batch(batch, timely)
            if whole and start == 0 and stop == len(batch.ts):
                part = batch
            self._pane(first_pane).update(part)
            return
        order = np.argsort(run_panes, kind="stable")
        sorted_panes = run_panes[order]
        names, firsts = np.unique(sorted_panes, return_index=True)
        ends = [*firsts[1:].tolist(), sorted_panes.size]
        for name, first, end in zip(names.tolist(), firsts.tolist(), ends, strict=True):
            self._pane(name).update(take_batch(batch, timely[order[first:end]]))

    def _pane(self, name: int) -> WindowSketch:
        sketch = self._panes.get(name)
        if sketch is None:
            sketch = self._panes[name] = self.make_sketch()
        return sketch

    def _close_until(self, last_pane: int, closed_by_ts: float = math.inf) -> list[ClosedWindow]:
        """Close every window whose last pane is before ``last_pane``; drop panes no open window needs."""
        assert self._next_last_pane is not None
        m = self._panes_per_window
        begin = self._next_last_pane
        if last_pane <= begin:
            return []
        # Only windows that contain a pane with events are emitted, so enumerate from the panes.
        window_ends = sorted(
            {
                end
                for name in self._panes
                for end in range(max(name, begin), min(name + m - 1, last_pane - 1) + 1)
            }
        )
        closed = []
        for end in window_ends:
            parts = [self._panes[p] for p in range(end - m + 1, end + 1) if p in self._panes]
            sketch = parts[0] if m == 1 else merge_sketches(parts)
            start = self.origin + (end - m + 1) * self.slide
            closed.append(
                ClosedWindow(
                    start, self.origin + (end + 1) * self.slide, self._next_index, sketch, closed_by_ts
                )
            )
            self._next_index += 1
        self._next_last_pane = last_pane
        oldest_needed = last_pane - m + 1
        for name in [p for p in self._panes if p < oldest_needed]:
            del self._panes[name]
        return closed

    def flush(self) -> list[ClosedWindow]:
        """Close the windows that end by the newest pane with events (at least one); later events start anew.

        >>> from stream_monitor.core.reference import ReferenceProfile
        >>> from stream_monitor.core.schema import ModelSchema
        >>> schema, reference = ModelSchema("m", "regression", ()), ReferenceProfile(1, "m")
        >>> EventTimeWindows(60.0, make_sketch=lambda: WindowSketch(schema, reference)).flush()
        []
        """
        if not self._panes:
            return []
        assert self._next_last_pane is not None
        # At least the oldest open window closes: in a stream shorter than one sliding window it is
        # the only window that holds the events.
        last = max(max(self._panes), self._next_last_pane)
        closed = self._close_until(last + 1)
        self._panes.clear()
        # The next window starts after the flushed ones, so nothing it holds was already emitted.
        self._next_last_pane = last + self._panes_per_window
        return closed

    def to_state(self) -> dict[str, Any]:
        """The state (settings, watermark, counters and pane sketches) as a container of
        :mod:`stream_monitor.core.state_format`; panes by name, oldest first."""
        return state_format.tagged(
            "event_time_windows",
            WINDOWS_FORMAT,
            next_last_pane=self._next_last_pane,
            next_index=self._next_index,
            late_events=self.late_events,
            # max_ts is -inf before the first event: an array keeps it (and the settings) exactly.
            floats=np.array([self.width, self.slide, self.allowed_lateness, self._max_ts], dtype=np.float64),
            origin=self.origin,
            panes={str(name): sketch.to_state() for name, sketch in sorted(self._panes.items())},
        )

    @classmethod
    @state_format.restoring
    def from_state(
        cls,
        state: StateReader | dict[str, Any],
        make_sketch: Callable[[], WindowSketch],
        *,
        schema: ModelSchema | None = None,
        reference: ReferenceProfile | None = None,
        what: str = "event-time windows",
    ) -> Self:
        """Inverse of :meth:`to_state` (see :meth:`restore`)."""
        r = state if isinstance(state, StateReader) else StateReader(state, what)
        r.expect("event_time_windows", WINDOWS_FORMAT)
        width, slide, allowed_lateness, max_ts = r.array("floats", np.float64, shape=(4,)).tolist()
        # Pane numbers count from the origin they were written with (the epoch before it was stored).
        origin = r.number("origin") if r.has("origin") else 0.0
        try:
            windows = cls(width, slide, allowed_lateness, make_sketch=make_sketch, origin=origin)
        except ValueError as exc:
            raise StateError(f"{r.what}: {exc}") from exc
        template = make_sketch()
        panes = r.child("panes")
        names = list(panes.parts)
        numbers = [_pane_number(n) for n in names]
        if None in numbers or names != [str(n) for n in sorted(n for n in numbers if n is not None)]:
            raise StateError(f"{r.what}: pane names {names[:5]} are not integers in order")
        windows._panes = {int(n): _sketch_from(panes.child(n), template, schema, reference) for n in names}
        next_last_pane = r.parts.get("next_last_pane")
        windows._next_last_pane = None if next_last_pane is None else r.integer("next_last_pane")
        windows._max_ts = max_ts
        windows._next_index = r.integer("next_index", min_value=0)
        windows.late_events = r.integer("late_events", min_value=0)
        return windows

    def snapshot(self) -> bytes:
        """The state as bytes (:meth:`to_state` in the one state format).

        >>> from stream_monitor.core.reference import ReferenceProfile
        >>> from stream_monitor.core.schema import ModelSchema
        >>> schema, reference = ModelSchema("m", "regression", ()), ReferenceProfile(1, "m")
        >>> windows = EventTimeWindows(60.0, 30.0, 5.0, make_sketch=lambda: WindowSketch(schema, reference))
        >>> EventTimeWindows.restore(windows.snapshot(), windows.make_sketch).allowed_lateness
        5.0
        """
        return state_format.encode(self.to_state())

    @classmethod
    def restore(
        cls,
        data: bytes,
        make_sketch: Callable[[], WindowSketch],
        *,
        schema: ModelSchema | None = None,
        reference: ReferenceProfile | None = None,
    ) -> Self:
        """Rebuild from :meth:`snapshot` bytes; the settings come from the snapshot.

        Pane sketches are restored against ``schema`` and ``reference`` when given, else against those
        of a ``make_sketch()`` sketch.

        >>> EventTimeWindows.restore(b'{"format": 1, "kind": "count"}', make_sketch=lambda: None)
        Traceback (most recent call last):
        ...
        stream_monitor.errors.StateError: not stream-monitor state: JSON (from an older stream-monitor?)
        """
        return cls.from_state(state_format.decode(data), make_sketch, schema=schema, reference=reference)
