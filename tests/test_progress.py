"""The progress line of ``produce`` and ``plan``: redrawn in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from stream_monitor.kafka.produce import Progress as ProduceProgress
from stream_monitor.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_gets_a_plain_line_every_interval_and_at_the_end() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(1000, out, log_seconds=10.0, clock=clock)
    for done in range(0, 1001, 10):  # one update every 0.5 s for 50 s
        clock.now += 0.5
        progress.update(done, final=done == 1000)
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 6  # at 10, 20, 30, 40 and 50 s, and the final line (at 50.5 s)
    assert lines[-1].startswith("[" + "#" * 30 + "] 1000/1000 events")
    assert all(line.endswith("s") for line in lines)


def test_a_terminal_gets_the_line_redrawn_in_place() -> None:
    out, clock = Terminal(), Clock()
    progress = Progress(None, out, clock=clock)
    for done in range(1, 11):
        clock.now += 0.125
        progress.update(done)
    progress.update(10, final=True)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.count("\r") == 6  # at most every 0.2 s (5 of the 10 updates), and the final one
    assert "10 events" in text.rsplit("\r", 1)[1]


def test_quiet_writes_nothing_and_a_closed_stream_is_not_a_terminal() -> None:
    Progress(10, None).update(10, final=True)
    closed = io.StringIO()
    closed.close()
    assert Progress(10, closed).tty is False


def test_the_planner_callback_form_and_produce_share_it() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(out=out, what="fit", clock=clock)
    progress(3, 4, "fit")
    clock.now += 1.0
    progress(4, 4, "fit")
    assert out.getvalue() == "[" + "#" * 30 + "] 4/4 fits  4/s  1.0s\n"
    assert ProduceProgress is Progress
