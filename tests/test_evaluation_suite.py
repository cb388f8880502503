"""The fast subset of the real-data evaluation (evaluation/, EVALUATION.md): a verdict that regresses fails.

Three cases run end to end through the real command line (``reference build`` then ``replay``), each on
a data set that ships inside a pip package: a control that must stay quiet, a label-coding change that
must be caught as a performance decay, and CO2 since 1958, whose drift grows for decades (reported
again as it grows) until the model decays. The other cases (``python -m evaluation``) take longer.
Every expectation comes from the evaluation's independent analysis of the same windows
(evaluation/truth.py: scipy tests and scikit-learn metrics, no stream-monitor code), never from a
recorded output: each test first asserts that the data still show what the case is about, then that
the monitor's triggers agree with it.
"""

from __future__ import annotations

import ast
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

# The evaluation package lives at the top of the repository, beside stream_monitor/; pytest puts only
# tests/ on the path when run as plain `pytest`.
REPOSITORY = Path(__file__).resolve().parent.parent
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

from evaluation.cases import case_named  # noqa: E402
from evaluation.report import render  # noqa: E402
from evaluation.suite import Outcome, evaluate  # noqa: E402
from evaluation.verdict import Check, sustained_decay_onset, sustained_drift_onset  # noqa: E402

CI_CASES = ("german_health", "seattle_weather", "mauna_loa_co2")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    folder = tmp_path_factory.mktemp("evaluation")
    # Two at a time: each case spends most of its time in its own stream-monitor subprocesses.
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(evaluate, case_named(name), folder / name) for name in CI_CASES}
        return {name: future.result() for name, future in futures.items()}


def _check(outcome: Outcome, name: str) -> Check:
    checks = [c for c in outcome.verdict.checks if c.name == name]
    assert checks, f"{outcome.verdict.case.name}: no {name!r} check; checks: {outcome.verdict.checks}"
    return checks[0]


def _explain(outcome: Outcome) -> str:
    v = outcome.verdict
    fired = "\n".join(f"  {f.kind} {f.severity} {f.reasons[:3]} window start {f.start}" for f in v.fired)
    return f"{v.case.name}: checks {v.checks}\nfalse alarms {v.false_alarms}\ntriggers:\n{fired}"


def test_the_cases_ran_through_the_command_line(outcomes: dict[str, Outcome]) -> None:
    for outcome in outcomes.values():
        run = outcome.verdict.run
        assert run.failed is None, f"{outcome.verdict.case.name}: {run.failed}"
        assert run.events_replayed == run.events_sent, _explain(outcome)
        assert run.rejected == 0, _explain(outcome)


def test_control_stays_quiet(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["german_health"]
    truth = outcome.verdict.truth
    # The case is a control only while the data say so.
    assert sustained_drift_onset(truth) is None
    assert all(w.performance != "decayed" for w in truth.windows)
    kinds = {f.kind for f in outcome.verdict.fired}
    assert not kinds & {"performance", "combined"}, _explain(outcome)
    assert _check(outcome, "no false alarm").passed, _explain(outcome)
    assert _check(outcome, "labels joined").passed, _explain(outcome)


def test_label_coding_change_is_caught_as_performance_decay(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["seattle_weather"]
    truth = outcome.verdict.truth
    # From April 2013 the source stops coding wet days as `rain`: the model's F1 collapses.
    assert sustained_decay_onset(truth) is not None
    assert _check(outcome, "decay detected").passed, _explain(outcome)
    assert _check(outcome, "labels joined").passed, _explain(outcome)


def test_seasonal_feature_drift_is_reported_without_false_alarms(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["seattle_weather"]
    assert sustained_drift_onset(outcome.verdict.truth) is not None
    assert _check(outcome, "drift detected").passed, _explain(outcome)
    assert _check(outcome, "no false alarm").passed, _explain(outcome)


def test_co2_rising_since_1958_is_reported_as_it_grows_and_as_the_model_decays(
    outcomes: dict[str, Outcome],
) -> None:
    outcome = outcomes["mauna_loa_co2"]
    truth = outcome.verdict.truth
    # Events from 1961 on, nine years of them before 1970: their labels must join like any others.
    assert truth.windows[0].start < 0
    assert sustained_drift_onset(truth) is not None
    assert sustained_decay_onset(truth) is not None
    assert _check(outcome, "labels joined").passed, _explain(outcome)
    assert _check(outcome, "drift detected").passed, _explain(outcome)
    # CO2 leaves the training range within a few years: the grown drift must be reported again.
    assert _check(outcome, "grown drift reported again").passed, _explain(outcome)
    assert _check(outcome, "decay detected").passed, _explain(outcome)
    assert _check(outcome, "no false alarm").passed, _explain(outcome)


def test_pandas_training_files_need_no_workaround(outcomes: dict[str, Outcome]) -> None:
    # `DataFrame.to_csv` writes "2012-01-02" or "1984-01-01 01:08:01" and booleans as True/False;
    # `reference build` must read them as they are (the runner rewrites timestamps only if refused).
    for outcome in outcomes.values():
        assert not [note for note in outcome.verdict.run.notes if "refused" in note], _explain(outcome)


def test_report_has_a_row_and_a_section_per_case(outcomes: dict[str, Outcome]) -> None:
    report = render(list(outcomes.values()))
    for name in CI_CASES:
        assert f"| [{name}](#" in report
        assert f"\n## {name}\n" in report


def test_truth_does_not_use_stream_monitor() -> None:
    # The expected verdicts must not come from the code under test.
    for module in ("truth", "verdict", "datasets", "prepare", "cases"):
        tree = ast.parse((REPOSITORY / "evaluation" / f"{module}.py").read_text())
        imported = {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not any(name.startswith("stream_monitor") for name in imported), (module, imported)
