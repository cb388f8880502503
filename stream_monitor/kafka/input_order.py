"""One deterministic order for a partition-task's two inputs, whatever the consumer's batching.

A partition-task reads partition ``p`` of the predictions topic and partition ``p`` of the labels
topic. Which of the two a ``consume()`` call happens to return first depends on fetch timing; if the
engine saw them in that order, the same input could join different labels to different windows and
make different decisions after a restart. So, as Kafka Streams does for co-partitioned inputs, each
task buffers both inputs and releases them in the order of the record timestamps:

- the merge key of a record is ``(timestamp // tick, role, offset)`` with predictions before labels:
  within one tick (default 1 s) the predictions are processed before the labels, so a label stamped
  in the same second as its prediction still finds it, and runs of one input stay long (the engine
  works per batch);
- a run of one input is handed to the engine only when its end is known: the other input's next
  record sorts before the run's next one, or the run reaches a chunk boundary (offsets
  ``k*chunk .. (k+1)*chunk-1`` form at most one run), so runs are cut at the same places in every
  execution, and a decision re-made after a crash is the same decision;
- when one input has nothing buffered, the task waits for it while it is known to have more (its
  position is behind its high watermark) or unknown, but at most ``max_idle_seconds`` (the bounded
  wait that keeps a task live when one input's partition is unavailable); an input that is caught
  up does not hold the other back. Only at the live edge (caught up, or after the bounded wait) can
  a run be cut at a point that depends on timing, as in Kafka Streams.

Pure: the caller passes in the clock (``now``, monotonic seconds) and whether an input is caught up.

>>> from types import SimpleNamespace as M
>>> def msg(ts, off): return M(ts_ms=ts, offset=off)
>>> order = InputOrder(tick_ms=1000, chunk=100, max_idle_seconds=5.0, key=lambda m: (m.ts_ms, m.offset))
>>> order.add("predictions", [msg(1000, 0), msg(1500, 1), msg(3000, 2)])
>>> order.add("labels", [msg(2000, 0)])
>>> [(role, [m.offset for m in run]) for role, run in order.release(now=0.0, caught_up=lambda r: False)]
[('predictions', [0, 1])]
>>> [(role, [m.offset for m in run]) for role, run in order.release(now=0.0, caught_up=lambda r: True)]
[('labels', [0]), ('predictions', [2])]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

ROLES = ("predictions", "labels")
_RANK = {"predictions": 0, "labels": 1}

_M = TypeVar("_M")


class InputOrder(Generic[_M]):
    """The two input buffers of one partition-task and the rule that releases them (module docstring).

    ``key(message)`` returns ``(timestamp_ms, offset)`` of a buffered message.
    """

    def __init__(
        self,
        tick_ms: int,
        chunk: int,
        max_idle_seconds: float,
        key: Callable[[_M], tuple[int, int]],
    ) -> None:
        self.tick_ms = max(1, int(tick_ms))
        self.chunk = max(1, int(chunk))
        self.max_idle_seconds = max_idle_seconds
        self._key = key
        # Each entry: (timestamp tick, offset, record), the key computed once when the record arrives.
        self.buffers: dict[str, deque[tuple[int, int, _M]]] = {role: deque() for role in ROLES}
        # Monotonic time since which a buffered input has been held back (the bounded wait).
        self.blocked_since: float | None = None
        self.forced_releases = 0

    def add(self, role: str, messages: Iterable[_M]) -> None:
        key, tick = self._key, self.tick_ms
        self.buffers[role].extend((ts_ms // tick, offset, m) for m in messages for ts_ms, offset in (key(m),))

    def buffered(self, role: str) -> int:
        return len(self.buffers[role])

    def clear(self) -> None:
        for buffer in self.buffers.values():
            buffer.clear()
        self.blocked_since = None

    def release(self, now: float, caught_up: Callable[[str], bool]) -> list[tuple[str, list[_M]]]:
        """The runs whose order and extent are settled, in processing order; the rest stays buffered."""
        forced = self.blocked_since is not None and now - self.blocked_since >= self.max_idle_seconds
        runs: list[tuple[str, list[_M]]] = []
        while True:
            run = self._next_run(caught_up, forced)
            if run is None:
                break
            runs.append(run)
        if forced and runs:
            self.forced_releases += 1
        if any(self.buffers.values()):
            if runs or self.blocked_since is None or forced:
                self.blocked_since = now
        else:
            self.blocked_since = None
        return runs

    def _next_run(self, caught_up: Callable[[str], bool], forced: bool) -> tuple[str, list[_M]] | None:
        predictions, labels = self.buffers["predictions"], self.buffers["labels"]
        # Merge key: (tick, rank, offset), predictions (rank 0) before labels (rank 1) within a tick.
        limit: tuple[int, int, int] | None = None
        if predictions and labels:
            head_p = (predictions[0][0], 0, predictions[0][1])
            head_l = (labels[0][0], 1, labels[0][1])
            role, limit = ("predictions", head_l) if head_p < head_l else ("labels", head_p)
        elif predictions or labels:
            role = "predictions" if predictions else "labels"
            other = "labels" if predictions else "predictions"
            # The other input may still hold records that sort before ours: wait unless it is caught up.
            if not forced and not caught_up(other):
                return None
        else:
            return None
        buffer, chunk, rank = self.buffers[role], self.chunk, _RANK[role]
        first_chunk = buffer[0][1] // chunk
        size = 0
        complete = False
        for tick, offset, _ in buffer:
            if offset // chunk != first_chunk or (limit is not None and (tick, rank, offset) > limit):
                complete = True
                break
            size += 1
        else:
            complete = (buffer[-1][1] + 1) % chunk == 0 or forced or caught_up(role)
        if not complete or size == 0:
            return None
        return role, [buffer.popleft()[2] for _ in range(size)]
