"""Compare what fired with what is true, and decide a case's verdict.

What is expected comes from :mod:`evaluation.truth` alone, with the product's own sustain rules
(drift must hold for 2 windows, a performance drop for 3):

* **sustained drift** (two material windows in a row) must give a ``data_drift`` (or ``combined``)
  trigger at most ``DRIFT_SLACK`` windows after the second of them;
* **sustained decay** (a decayed window followed by two decayed or gray ones) must give a
  ``performance`` (or ``combined``) trigger within the rule's 3 windows plus the windows that the
  rolling label window and the label delay lag behind, plus one;
* **grown drift**: once the monitor has reported drift, a later pair of windows whose key-feature
  PSI is at least twice the PSI of the window it first reported (and at least 0.3, the critical
  level) must be reported again — a latched condition must not hide a drift that grew. The point of
  reference is the monitor's first report, because "grew" means "grew since the user was told";
  the growth itself is measured independently;
* **no false alarm**: a trigger is false when the truth of its window contradicts it — ``data_drift``
  in a window where no feature moved, ``performance`` while the model held in every window its
  rolling labels cover, ``prediction_drift`` where the predictions did not move, an ``integrity``
  reason that the window's own counts do not bear out (volume, missing values, new categories);
* **labels**: at least 99 % of the labels sent must join their predictions (a label that is lost
  hides any decay).

A window that the truth calls gray accepts either outcome. The verdict passes when every check does.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from evaluation.cases import Case
from evaluation.runner import RunResult
from evaluation.truth import Truth, WindowTruth

DRIFT_SLACK = 1  # windows after the earliest possible trigger
SUSTAIN_DRIFT = 2  # the product's consecutive_windows
SUSTAIN_PERFORMANCE = 3  # the product's performance_windows
GROWTH_FACTOR = 2.0
CRITICAL_PSI = 0.3
LABELS_JOINED_SHARE = 0.99
DAY = 86400.0


@dataclass(frozen=True)
class Fired:
    """One trigger as the report shows it."""

    kind: str
    severity: str
    start: float  # its deciding window
    end: float
    position: int | None  # index into the truth's windows (None: a window the truth does not know)
    reasons: tuple[str, ...]  # "detector:feature=value"
    features: tuple[str, ...]
    detectors: tuple[str, ...]


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Verdict:
    case: Case
    truth: Truth
    run: RunResult
    fired: list[Fired]
    checks: list[Check]
    false_alarms: list[str]
    delays: dict[str, str] = field(default_factory=dict)  # expectation → detection delay
    tags: list[str] = field(default_factory=list)  # what the truth shows

    @property
    def passed(self) -> bool:
        return self.run.failed is None and all(c.passed for c in self.checks)


def _fired(trigger: dict[str, Any], truth: Truth, width: float) -> Fired:
    windows = [r["window"] for r in trigger.get("reasons", []) if r.get("window")]
    if windows:
        start = min(float(w["start"]) for w in windows)
        end = max(float(w["end"]) for w in windows)
    else:
        end = float(trigger["event_time"])
        start = end - width
    index = math.floor(start / width + 1e-9)
    positions = {w.index: i for i, w in enumerate(truth.windows)}
    reasons = tuple(
        f"{r['detector']}:{r.get('feature') or r.get('statistic')}={float(r['value']):.3g}"
        for r in trigger.get("reasons", [])
        if r.get("value") is not None
    )
    return Fired(
        kind=trigger["kind"],
        severity=trigger["severity"],
        start=start,
        end=end,
        position=positions.get(index),
        reasons=reasons,
        features=tuple(sorted({r["feature"] for r in trigger.get("reasons", []) if r.get("feature")})),
        detectors=tuple(sorted({r["detector"] for r in trigger.get("reasons", [])})),
    )


def _reason_features(fired: Fired) -> list[str]:
    """The feature each reason names, in the order of ``fired.reasons`` ("detector:feature=value")."""
    return [reason.split(":", 1)[1].rsplit("=", 1)[0] for reason in fired.reasons[:3]]


def _key_psi(window: WindowTruth, case: Case) -> float:
    keys = set(case.key_features or case.features)
    return max((f.psi for f in window.features if f.feature in keys and math.isfinite(f.psi)), default=0.0)


def sustained_drift_onset(truth: Truth) -> int | None:
    windows = truth.windows
    for i in range(len(windows) - SUSTAIN_DRIFT + 1):
        if all(w.drift == "material" for w in windows[i : i + SUSTAIN_DRIFT]):
            return i
    return None


def sustained_decay_onset(truth: Truth) -> int | None:
    windows = truth.windows
    for i, w in enumerate(windows):
        following = windows[i + 1 : i + SUSTAIN_PERFORMANCE]
        if w.performance == "decayed" and all(f.performance in ("decayed", "gray") for f in following):
            return i
    return None


def label_lag_windows(case: Case, truth: Truth) -> int:
    """Windows by which the rolling performance metric trails the windows' own rows."""
    per_window = sorted(w.events for w in truth.windows)
    typical = max(per_window[len(per_window) // 2], 1)
    delay = math.ceil(case.label_delay.total_seconds() / case.window_seconds)
    return math.ceil(case.performance_window / typical) + delay


def _date(seconds: float) -> str:
    """A date from epoch seconds, before 1970 too (``datetime.utcfromtimestamp`` refuses some)."""
    return (dt.datetime(1970, 1, 1) + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%d")


def _delay(first: Fired, onset_position: int, onset: WindowTruth) -> str:
    """Windows (and days of window end) from the onset window to the trigger's; negative: before it."""
    assert first.position is not None
    days = (first.end - onset.end) / DAY
    return f"{first.position - onset_position:+d} window(s) ({days:+.0f} d)"


def judge(case: Case, truth: Truth, run: RunResult) -> Verdict:
    width = case.window_seconds
    fired = sorted((_fired(t, truth, width) for t in run.triggers), key=lambda f: (f.end, f.kind))
    windows = truth.windows
    checks: list[Check] = []
    delays: dict[str, str] = {}
    tags: list[str] = []
    drift_kinds, performance_kinds = {"data_drift", "combined"}, {"performance", "combined"}

    # Expected drift.
    onset = sustained_drift_onset(truth)
    drift_fired = [f for f in fired if f.kind in drift_kinds and f.position is not None]
    if onset is None:
        tags.append("no sustained drift")
    else:
        tags.append(f"sustained drift from {_date(windows[onset].start)}")
        latest = onset + SUSTAIN_DRIFT - 1 + DRIFT_SLACK
        hits = [f for f in drift_fired if f.position is not None and f.position <= latest]
        checks.append(
            Check(
                "drift detected",
                bool(hits),
                f"data_drift by the window of {_date(windows[min(latest, len(windows) - 1)].start)}: "
                + (f"yes, {hits[0].severity} in the window of {_date(hits[0].start)}" if hits else "no"),
            )
        )
        if hits:
            delays["drift"] = _delay(hits[0], onset, windows[onset])

    # Expected decay.
    decay = sustained_decay_onset(truth)
    lag = label_lag_windows(case, truth)
    if decay is None:
        tags.append("model holds" if all(w.performance != "decayed" for w in windows) else "brief decay")
    else:
        tags.append(f"decay from {_date(windows[decay].start)}")
        latest = decay + SUSTAIN_PERFORMANCE - 1 + lag + 1
        hits = [
            f
            for f in fired
            if f.kind in performance_kinds and f.position is not None and f.position <= latest
        ]
        hits = [f for f in hits if f.position is not None and f.position >= decay - lag]
        checks.append(
            Check(
                "decay detected",
                bool(hits),
                f"performance by the window of {_date(windows[min(latest, len(windows) - 1)].start)}: "
                + (f"yes, in the window of {_date(hits[0].start)}" if hits else "no"),
            )
        )
        if hits:
            delays["decay"] = _delay(hits[0], decay, windows[decay])

    # Grown drift, measured from the monitor's first drift report.
    if drift_fired:
        first = drift_fired[0]
        assert first.position is not None
        reported_psi = _key_psi(windows[first.position], case)
        needed = max(GROWTH_FACTOR * reported_psi, CRITICAL_PSI)
        grown = next(
            (
                i
                for i in range(first.position + 1, len(windows) - 1)
                if _key_psi(windows[i], case) >= needed and _key_psi(windows[i + 1], case) >= needed
            ),
            None,
        )
        if grown is not None:
            growth = _key_psi(windows[grown], case) / max(reported_psi, 1e-9)
            tags.append(f"drift grew ×{growth:.1f} by {_date(windows[grown].start)}")
            latest = grown + SUSTAIN_DRIFT - 1 + DRIFT_SLACK
            again = [
                f
                for f in drift_fired
                if f is not first and f.position is not None and grown <= f.position <= latest
            ]
            checks.append(
                Check(
                    "grown drift reported again",
                    bool(again),
                    f"key-feature PSI {reported_psi:.2f} when first reported, ≥ {needed:.2f} from the "
                    f"window of {_date(windows[grown].start)}: "
                    + (
                        f"reported again in the window of {_date(again[0].start)}"
                        if again
                        else "not reported again"
                    ),
                )
            )
            if again:
                delays["growth"] = _delay(again[0], grown, windows[grown])

    # False alarms.
    false_alarms: list[str] = []
    for f in fired:
        if f.position is None:
            false_alarms.append(
                f"{f.kind} in {_date(f.start)}–{_date(f.end)}: a window with no replayed event"
            )
            continue
        w = windows[f.position]
        where = f"{f.kind} ({f.severity}) in the window of {_date(w.start)}"
        if f.kind in drift_kinds and w.drift == "none":
            measured = {d.feature: d for d in w.features}
            evidence = ", ".join(
                f"{f.reasons[i]} where KS/V {measured[name].statistic:.2f}, PSI {measured[name].psi:.2f}"
                for i, name in enumerate(_reason_features(f))
                if name in measured
            )
            false_alarms.append(f"{where}: no feature moved ({evidence or ', '.join(f.reasons[:3])})")
        if f.kind in performance_kinds:
            covered = windows[max(0, f.position - lag) : f.position + 1]
            if all(c.performance in ("holds", "unknown") for c in covered):
                false_alarms.append(f"{where}: the model held in every window its labels cover")
        if f.kind == "prediction_drift" and w.prediction is not None and w.prediction.status == "none":
            false_alarms.append(f"{where}: the predictions did not move")
        if f.kind == "integrity":
            for detector in f.detectors:
                truth_says = {
                    "integrity:volume": not 0.5 <= w.volume_ratio <= 2.0,
                    "integrity:missing_rate": w.missing_rise > 0.1,
                    "integrity:new_category": w.new_category_share > 0.05,
                }.get(detector, True)
                if not truth_says:
                    detail = {
                        "integrity:volume": f"event rate {w.volume_ratio:.2f}× the training rate "
                        "over the time covered",
                        "integrity:missing_rate": f"missing share up {w.missing_rise:.2f}",
                        "integrity:new_category": f"unseen categories {w.new_category_share:.2f}",
                    }[detector]
                    false_alarms.append(f"{where}: {detector} but {detail} ({w.events} events)")
    checks.append(
        Check(
            "no false alarm",
            not false_alarms,
            f"{len(false_alarms)} false alarm(s)" if false_alarms else "none",
        )
    )

    # Labels.
    if run.labels_joined is not None:
        share = run.labels_joined / max(run.labels_sent, 1)
        checks.append(
            Check(
                "labels joined",
                share >= LABELS_JOINED_SHARE,
                f"{run.labels_joined} of {run.labels_sent} ({share:.0%})",
            )
        )
    if run.failed is not None:
        checks.append(Check("run completed", False, run.failed))
    return Verdict(
        case=case,
        truth=truth,
        run=run,
        fired=fired,
        checks=checks,
        false_alarms=false_alarms,
        delays=delays,
        tags=tags,
    )


#: The problems the issue lists as known and being fixed, in the words the report uses.
KNOWN_PROBLEMS = {
    "latch": "a latched condition hides a later larger drift",
    "partial_window": "partial windows (first/last, or the first after a gap) raise volume `integrity` "
    "triggers",
    "booleans": "booleans `True`/`False` in the CSV vs JSON `true`/`false` look like new categories",
    "timestamps": "`reference build` refuses pandas timestamps (worked around with ISO 8601)",
    "pre_1970": "events before 1970 lose their labels",
}


def attribute(verdict: Verdict) -> dict[str, list[str]]:
    """Which failed check (or workaround) traces to which known problem, from the evidence alone.

    Returns known-problem key → what shows it; a failed check that none explains is listed under
    ``"unexplained"``.
    """
    found: dict[str, list[str]] = {}
    windows = verdict.truth.windows
    explained_alarms: set[str] = set()
    labels_lost = any(c.name == "labels joined" and not c.passed for c in verdict.checks)
    for note in verdict.run.notes:
        if "refused pandas' default timestamps" in note:
            found.setdefault("timestamps", []).append("training file rewritten with ISO timestamps")
    boolean_features = set(verdict.run.boolean_features)
    # Windows the monitor measures as partial: the first, the last, and the first after a gap of a
    # whole window or more (it covers only from its first event).
    partial = [windows[0], windows[-1]] + [
        w for previous, w in itertools.pairwise(windows) if w.index > previous.index + 1
    ]
    for alarm in verdict.false_alarms:
        in_partial = any(f"window of {_date(w.start)}" in alarm for w in partial)
        if "integrity:volume" in alarm and in_partial:
            found.setdefault("partial_window", []).append(alarm)
            explained_alarms.add(alarm)
        elif "integrity:new_category" in alarm and boolean_features:
            found.setdefault("booleans", []).append(alarm)
            explained_alarms.add(alarm)
    for check in verdict.checks:
        if check.passed:
            continue
        if check.name == "grown drift reported again":
            found.setdefault("latch", []).append(check.detail)
        elif check.name == "labels joined" and windows and windows[0].start < 0:
            found.setdefault("pre_1970", []).append(f"labels joined: {check.detail}")
        elif check.name == "decay detected" and labels_lost and windows[0].start < 0:
            found.setdefault("pre_1970", []).append(f"decay not detected: {check.detail}")
        elif check.name == "no false alarm":
            rest = [a for a in verdict.false_alarms if a not in explained_alarms]
            if rest:
                found.setdefault("unexplained", []).extend(rest)
        else:
            found.setdefault("unexplained", []).append(f"{check.name}: {check.detail}")
    return found
