"""A progress line for the command-line tools (``produce``, ``plan``) on a text stream, usually stderr.

On a terminal the line is redrawn in place (a carriage return, at most every ``redraw_seconds``). When
the stream is not a terminal — a log file, a pipe, a container's log collector — carriage returns would
pile up into one endless line, so a plain line is written every ``log_seconds`` instead, and one at the
end.

>>> import io
>>> clock = iter([0.0, 1.0, 12.0, 13.0, 14.0]).__next__
>>> out = io.StringIO()
>>> progress = Progress(4, out, what="event", width=4, clock=clock)
>>> for done in (1, 2, 3):
...     progress.update(done)
>>> progress.update(4, final=True)
>>> print(out.getvalue(), end="")
[##  ] 2/4 events  0/s  12.0s
[####] 4/4 events  0/s  14.0s
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Progress of ``done`` out of ``total`` (or an open count) units of ``what``, with the rate."""

    def __init__(
        self,
        total: int | None = None,
        out: TextIO | None = sys.stderr,
        *,
        what: str = "event",
        width: int = 30,
        redraw_seconds: float = 0.2,
        log_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.out = out
        self.what = what
        self.width = width
        self.clock = clock
        self.started = clock()
        self.last = self.started
        self.tty = _is_terminal(out)
        self.every = redraw_seconds if self.tty else log_seconds

    def line(self, done: int, now: float) -> str:
        """The text shown for ``done`` units at ``now`` (no line ending)."""
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        unit = f"{self.what}s"
        if self.total:
            filled = int(self.width * min(1.0, done / self.total))
            count = f"[{'#' * filled}{' ' * (self.width - filled)}] {done}/{self.total} {unit}"
        else:
            count = f"{done} {unit}"
        return f"{count}  {rate:,.0f}/s  {elapsed:.1f}s"

    def update(self, done: int, final: bool = False) -> None:
        """Show ``done`` when the last line is ``redraw_seconds`` (terminal) or ``log_seconds`` old,
        and always when ``final``."""
        if self.out is None:
            return
        now = self.clock()
        if not final and now - self.last < self.every:
            return
        self.last = now
        text = self.line(done, now)
        if self.tty:
            self.out.write(f"\r{text}" + ("\n" if final else ""))
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def __call__(self, done: int, total: int, what: str) -> None:
        """The planner's callback form: ``total`` and ``what`` may change from call to call."""
        self.total, self.what = total, what
        self.update(done, final=done >= total)


def _is_terminal(out: TextIO | None) -> bool:
    try:
        return out is not None and out.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
