"""The input order of a partition-task (stream_monitor.kafka.input_order): the runs handed to the engine
depend only on the two input logs, never on how the consumer happened to batch them."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_monitor.kafka.input_order import ROLES, InputOrder


@dataclass(frozen=True)
class Record:
    ts_ms: int
    offset: int


def _order(chunk: int = 8, idle: float = 5.0) -> InputOrder[Record]:
    return InputOrder(tick_ms=1000, chunk=chunk, max_idle_seconds=idle, key=lambda r: (r.ts_ms, r.offset))


def _log(timestamps: list[int], first_offset: int) -> list[Record]:
    return [Record(ts, first_offset + i) for i, ts in enumerate(timestamps)]


def _runs(runs: list[tuple[str, list[Record]]]) -> list[tuple[str, list[int]]]:
    return [(role, [r.offset for r in run]) for role, run in runs]


def _feed(
    logs: dict[str, list[Record]], pieces: list[tuple[str, int]], chunk: int
) -> list[tuple[str, list[int]]]:
    """Feed the logs in the given arrival pieces (role, how many), then mark both inputs caught up."""
    order = _order(chunk)
    position = dict.fromkeys(ROLES, 0)
    out: list[tuple[str, list[int]]] = []
    for role, size in pieces:
        start = position[role]
        position[role] = min(len(logs[role]), start + size)
        order.add(role, logs[role][start : position[role]])
        out += _runs(order.release(now=0.0, caught_up=lambda r: False))
    for role in ROLES:
        order.add(role, logs[role][position[role] :])
    out += _runs(order.release(now=0.0, caught_up=lambda r: True))
    assert not order.buffered("predictions") and not order.buffered("labels")
    return out


timestamps = st.lists(st.integers(0, 20_000), max_size=60).map(sorted)


@settings(max_examples=200, deadline=None)
@given(
    predictions=timestamps,
    labels=timestamps,
    first_offsets=st.tuples(st.integers(0, 30), st.integers(0, 30)),
    pieces=st.lists(st.tuples(st.sampled_from(ROLES), st.integers(1, 12)), max_size=30),
    chunk=st.integers(1, 16),
)
def test_runs_do_not_depend_on_arrival(
    predictions: list[int],
    labels: list[int],
    first_offsets: tuple[int, int],
    pieces: list[tuple[str, int]],
    chunk: int,
) -> None:
    logs = {
        "predictions": _log(predictions, first_offsets[0]),
        "labels": _log(labels, first_offsets[1]),
    }
    everything_at_once = _feed(logs, [], chunk)
    assert _feed(logs, pieces, chunk) == everything_at_once
    # Every record is released exactly once, each input in its own offset order.
    for role in ROLES:
        released = [o for r, run in everything_at_once if r == role for o in run]
        assert released == [r.offset for r in logs[role]]
    # Runs never straddle a chunk of offsets.
    for _, run in everything_at_once:
        assert len({o // chunk for o in run}) == 1


def test_predictions_of_a_tick_come_before_its_labels() -> None:
    order = _order(chunk=100)
    order.add("labels", [Record(1200, 0), Record(2500, 1)])
    order.add("predictions", [Record(1900, 0), Record(1000, 1), Record(2100, 2)])
    assert _runs(order.release(0.0, caught_up=lambda r: True)) == [
        ("predictions", [0, 1]),
        ("labels", [0]),
        ("predictions", [2]),
        ("labels", [1]),
    ]


def test_an_input_that_is_behind_holds_the_other_back_for_the_bounded_wait_only() -> None:
    order = _order(chunk=100, idle=5.0)
    order.add("predictions", [Record(1000, 0), Record(2000, 1)])
    assert order.release(now=0.0, caught_up=lambda r: False) == []
    assert order.release(now=4.9, caught_up=lambda r: False) == []
    # The labels never came: after max_idle_seconds the predictions go on alone, and it is counted.
    assert _runs(order.release(now=5.0, caught_up=lambda r: False)) == [("predictions", [0, 1])]
    assert order.forced_releases == 1


def test_a_caught_up_input_does_not_hold_the_other_back() -> None:
    order = _order(chunk=100)
    order.add("predictions", [Record(1000, 0), Record(2000, 1)])
    caught_up = {"labels": True, "predictions": False}
    # Labels have nothing more; the prediction run cannot end yet (more predictions may follow in
    # the same chunk) ...
    assert order.release(0.0, caught_up=caught_up.__getitem__) == []
    # ... until the predictions are caught up too.
    caught_up["predictions"] = True
    assert _runs(order.release(0.0, caught_up=caught_up.__getitem__)) == [("predictions", [0, 1])]
    assert order.forced_releases == 0


def test_a_full_chunk_is_released_without_waiting_for_its_input() -> None:
    order = _order(chunk=4)
    order.add("labels", [Record(9000, 0)])
    order.add("predictions", [Record(1000 + i, i) for i in range(6)])
    # offsets 0-3 form a complete chunk that sorts before the label; 4-5 wait for more predictions.
    assert _runs(order.release(0.0, caught_up=lambda r: False)) == [("predictions", [0, 1, 2, 3])]
    assert order.buffered("predictions") == 2
