"""One case end to end: prepare, replay through the CLI, establish the truth, judge."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from evaluation.cases import Case
from evaluation.datasets import Stream
from evaluation.prepare import prepare
from evaluation.runner import run_case
from evaluation.truth import analyse
from evaluation.verdict import Verdict, judge


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    source: Stream
    train_rows: int
    seconds: float


def evaluate(case: Case, folder: Path) -> Outcome:
    """Run ``case`` with its files in ``folder``; the truth is computed from the same prepared rows."""
    started = time.perf_counter()
    prepared = prepare(case)
    run = run_case(prepared, folder)
    truth = analyse(
        task=case.task,
        numeric=case.numeric,
        categorical=case.categorical,
        train=prepared.train,
        stream=prepared.replay,
        width_seconds=case.window_seconds,
    )
    return Outcome(
        verdict=judge(case, truth, run),
        source=prepared.stream_info,
        train_rows=len(prepared.train),
        seconds=time.perf_counter() - started,
    )
