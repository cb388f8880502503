"""``python -m evaluation``: run every case (or ``--case NAME``…) and write EVALUATION.md."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from evaluation.cases import CASES, case_named
from evaluation.insight import INSIGHT_CASES, Comparison, compare
from evaluation.prepare import prepare
from evaluation.report import render
from evaluation.suite import Outcome, evaluate

REPOSITORY = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__)
    parser.add_argument("--case", action="append", help="run only this case (repeatable)")
    parser.add_argument("--out", default=str(REPOSITORY / "EVALUATION.md"), help="the report to write")
    parser.add_argument("--workdir", help="keep the generated files here (default: a temporary folder)")
    parser.add_argument(
        "--no-insight",
        action="store_true",
        help="leave out 'Retraining insight against an independent computation' (plan and DNA)",
    )
    args = parser.parse_args(argv)
    cases = [case_named(name) for name in args.case] if args.case else list(CASES)
    outcomes: list[Outcome] = []
    comparisons: list[Comparison] = []
    with tempfile.TemporaryDirectory(prefix="stream-monitor-evaluation-") as scratch:
        folder = Path(args.workdir or scratch)
        for case in cases:
            outcome = evaluate(case, folder / case.name)
            outcomes.append(outcome)
            v = outcome.verdict
            failed = ", ".join(c.name for c in v.checks if not c.passed)
            print(
                f"{case.name:<22} {'PASS' if v.passed else 'FAIL'} {len(v.fired):>3} triggers "
                f"{outcome.seconds:5.1f}s {failed}",
                file=sys.stderr,
            )
            if case.name in INSIGHT_CASES and not args.no_insight:
                comparison = compare(case, prepare(case), folder / case.name)
                comparisons.append(comparison)
                print(
                    f"{'':<22} insight: horizon agrees {comparison.horizon_agrees}, regimes "
                    f"{comparison.regimes_agree} {comparison.seconds:5.1f}s",
                    file=sys.stderr,
                )
    Path(args.out).write_text(render(outcomes, comparisons))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
