"""Retraining insight against an independent computation (issue 15, point 7).

For the cases of :data:`INSIGHT_CASES`, the product's retraining insight is run through the real
command line, as a user would, on the files the evaluation already writes:

* ``stream-monitor plan HISTORY.csv --time-column ts --target target --task … --model-factory …
  --period-seconds …`` on the case's whole history (training slice and replayed rows, written with
  ``DataFrame.to_csv``), with the case's own scikit-learn model (:func:`linear`, :func:`logistic`) and
  one period = the case's monitoring window; its decay horizon is read from ``retraining_plan.md``;
* ``stream-monitor insights dna --model …`` on the bucket profiles that the case's ``replay
  --insights-dir`` saved (the monitor's default buckets: one per window width); its regimes are read
  from the JSON it writes.

Both are then computed again without stream-monitor (:mod:`evaluation.insight_truth`): the decay
horizon from every start period with the case's model, the regimes as changepoints of the buckets'
feature quantiles. :func:`render` writes the section of EVALUATION.md that compares them.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from evaluation.cases import Case
from evaluation.insight_truth import (
    Changepoints,
    DecayResult,
    bucket_summaries,
    changepoints,
    decay_horizon,
    segment_fit,
)
from evaluation.prepare import Prepared

REPOSITORY = Path(__file__).resolve().parent.parent
#: The cases compared, and why the others are not: seattle_weather's label coding changed in April 2013
#: (a quarter then holds 0–2 `rain` days, so a per-period AUC is noise, and a training window can hold
#: one class) and its buckets follow the seasons, which a changepoint method cannot describe; the two
#: german_health cases span five survey years: five periods, fewer than the planner's six.
INSIGHT_CASES = ("mauna_loa_co2", "gss_vocabulary", "bundesliga", "trump_approval")
TOLERANCE = 0.1  # the planner's default --tolerance, used on both sides
TREND_MIN_GROUPS = 3  # the product's documented rule (README): a trend is at least three groups
MATCH_BUCKETS = 1  # a regime boundary and a changepoint this many buckets apart agree
PARTIAL_COVERAGE = 0.5  # a first/last bucket covering less of its time is left out of both analyses
KIND_AGREEMENT = 0.8  # share of buckets on which "trend or not" must agree


def linear() -> Pipeline:
    """The regression cases' model for ``plan --model-factory``: scaled features, least squares."""
    return make_pipeline(StandardScaler(), LinearRegression())


def logistic() -> Pipeline:
    """The binary cases' model for ``plan --model-factory``: scaled features, logistic regression."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


#: Per task: the case's model as a factory the planner imports, and the built-in model to fall back on.
FACTORIES = {
    "regression": ("evaluation.insight:linear", "ridge"),
    "binary": ("evaluation.insight:logistic", "logistic"),
}


# -- the product, through the command line --------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPOSITORY), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "stream_monitor.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=REPOSITORY,
    )


def _last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1][:240] if lines else "(no output)"


@dataclass
class PlannerRun:
    command: str
    factory: str
    horizon: int
    bounded: bool
    recent: int | None  # the latest half of the starts' horizon, when the plan counts it
    window: int
    cadence: int
    starts: int
    lag1_starts: int | None  # the starts that measured lag 1 (a later period may hold too few rows)
    origin: pd.Timestamp | None  # where period 0 starts, from the dates in the report
    lag_loss: dict[int, float]  # lag → median loss, the rows of the report's decay table
    warnings: list[str]
    failures: list[str] = field(default_factory=list)  # runs that failed before this one


def _parse_plan(report: str, period_seconds: float) -> dict[str, object]:
    decay = report[report.index("## 3. Decay") : report.index("## 4.")]
    horizon = re.search(r"Decay horizon: \*\*([\d,]+) ", decay)
    recent = re.search(r"From the latest half of the starts \(.*?\): \*\*([\d,]+) ", decay)
    window = re.search(r"trained on the\s+([\d,]+) .*? up to it", decay, re.S)
    starts = re.search(r"(\d+) starts(?:;[^)]*)?\), trained on", decay)
    first = re.search(r"periods? (\d+)–\d+ \((\d{4}-\d\d-\d\d) to", decay) or re.search(
        r" (\d+) \((\d{4}-\d\d-\d\d) to", decay
    )
    cadence = re.search(r"\*\*Retrain every ([\d,]+) ", report)
    lag1 = re.search(r"the `starts` column: (\d+) at lag 1", decay)
    if not (horizon and window and starts and cadence):
        raise ValueError("retraining_plan.md: decay horizon, window or cadence not found")
    origin = None
    if first:
        origin = pd.Timestamp(first.group(2)) - int(first.group(1)) * pd.Timedelta(seconds=period_seconds)
    lags = {
        int(m.group(1)): float(m.group(2)) / 100
        for m in re.finditer(r"^\| (\d+) \| \d+ \| ([+-][\d.]+)% \|", decay, re.M)
    }
    return {
        "horizon": int(horizon.group(1).replace(",", "")),
        "bounded": "no lag measured crossed the tolerance" not in decay,
        "recent": int(recent.group(1).replace(",", "")) if recent else None,
        "window": int(window.group(1).replace(",", "")),
        "cadence": int(cadence.group(1).replace(",", "")),
        "starts": int(starts.group(1)),
        "lag1_starts": int(lag1.group(1)) if lag1 else None,
        "origin": origin,
        "lag_loss": lags,
        "warnings": re.findall(r"^> \*\*Warning:\*\* (.*)$", report, re.M),
    }


def run_planner(case: Case, history: Path, out: Path) -> PlannerRun:
    """``stream-monitor plan`` on the case's history with its own model; should that fail, again with
    the built-in model of its kind (the failure is kept for the report)."""
    failures: list[str] = []
    for factory in FACTORIES[case.task]:
        args = [
            "plan",
            str(history),
            "--time-column",
            "ts",
            "--target",
            "target",
            "--task",
            case.task,
            "--model-factory",
            factory,
            "--period-seconds",
            f"{case.window_seconds:.0f}",
            "--tolerance",
            f"{TOLERANCE:g}",
            "--out",
            str(out),
            "--quiet",
        ]
        command = "stream-monitor " + " ".join(
            a if not a.startswith("/") else Path(a).name for a in args if a != "--quiet"
        )
        done = _cli(*args)
        if done.returncode != 0:
            failures.append(f"`{command}` exited {done.returncode}: `{_last_line(done.stderr)}`")
            continue
        parsed = _parse_plan((out / "retraining_plan.md").read_text(), case.window_seconds)
        return PlannerRun(command=command, factory=factory, failures=failures, **parsed)  # type: ignore[arg-type]
    raise RuntimeError("; ".join(failures))


@dataclass
class DnaRun:
    command: str
    ids: np.ndarray  # bucket numbers, in time
    starts: np.ndarray  # epoch seconds
    events: np.ndarray
    groups: np.ndarray  # regime id per bucket, -1 = integrity incident
    kinds: dict[int, str]  # regime id → kind
    partial: set[int]
    incidents: list[str]
    cut: float
    background: float
    overdispersion: float
    neighbours: np.ndarray  # the matrix between consecutive buckets


def run_dna(case: Case, insights: Path, out: Path) -> DnaRun:
    args = ["insights", "dna", "--model", case.name, "--dir", str(insights), "--out", str(out)]
    done = _cli(*args)
    if done.returncode != 0:
        raise RuntimeError(f"insights dna exited {done.returncode}: {_last_line(done.stderr)}")
    doc = json.loads((out / f"{case.name}_dna.json").read_text())
    matrix = np.asarray(doc["matrix"], dtype=np.float64)
    return DnaRun(
        command=f"stream-monitor insights dna --model {case.name} --dir {insights.name}",
        ids=np.asarray(doc["buckets"], dtype=np.int64),
        starts=np.asarray(doc["bucket_start"], dtype=np.float64),
        events=np.asarray(doc["bucket_events"], dtype=np.int64),
        groups=np.asarray(doc["groups"], dtype=np.int64),
        kinds={int(r["id"]): str(r["kind"]) for r in doc["regimes"]},
        partial={int(b) for b in doc["partial"]},
        incidents=[
            f"{_date(i['start'])}: "
            + ", ".join(f"{r['check']} of {r.get('feature') or 'all'} {r['value']:.2f}" for r in i["reasons"])
            for i in doc["incidents"]
        ],
        cut=float(doc["cut"]),
        background=float(doc["background"]),
        overdispersion=float(doc["overdispersion"]),
        neighbours=np.diag(matrix, 1) if len(matrix) > 1 else np.zeros(0),
    )


# -- the comparison -------------------------------------------------------------------------------
def _date(seconds: float) -> str:
    return (pd.Timestamp("1970-01-01") + pd.Timedelta(seconds=float(seconds))).strftime("%Y-%m-%d")


def _epoch(ts: pd.Series) -> np.ndarray:
    return ((ts - pd.Timestamp("1970-01-01")) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)


@dataclass
class Stretch:
    first: int  # positions in the compared bucket sequence, inclusive
    last: int
    kind: str
    note: str = ""


@dataclass
class Comparison:
    case: Case
    plan: PlannerRun | None
    decay: DecayResult | None
    decay_all: DecayResult | None  # trained on all periods up to the start
    dna: DnaRun | None
    cp: Changepoints | None
    labels: list[str]  # of the compared buckets
    dna_stretches: list[Stretch]
    cp_stretches: list[Stretch]
    left_out: list[str]  # partial buckets left out, with why
    facts: list[str]  # what the data show where the two sides disagree
    moves: list[str]  # per changepoint: the dimensions that moved most
    failures: list[str]
    seconds: float
    history_missing: float = 0.0  # share of missing feature cells in the history

    # horizon
    @property
    def horizon_agrees(self) -> bool | None:
        if self.plan is None or self.decay is None:
            return None
        p, i = self.plan, self.decay.curve
        if not p.bounded and not i.bounded:
            return True
        return p.bounded == i.bounded and abs(p.horizon - i.horizon) <= 1

    # regimes
    @property
    def boundaries(self) -> tuple[list[int], list[int]]:
        return [s.first for s in self.dna_stretches[1:]], [s.first for s in self.cp_stretches[1:]]

    @property
    def matched(self) -> tuple[int, int]:
        """DNA boundaries with a changepoint within :data:`MATCH_BUCKETS`, and changepoints with a DNA
        boundary within it."""
        dna, cp = self.boundaries
        near = lambda a, bs: any(abs(a - b) <= MATCH_BUCKETS for b in bs)  # noqa: E731
        return sum(near(a, cp) for a in dna), sum(near(b, dna) for b in cp)

    @property
    def kind_share(self) -> float:
        """Share of the compared buckets on which both say the same: in a trend, or not."""
        n = len(self.labels)
        if not n:
            return math.nan
        dna = np.zeros(n, bool)
        cp = np.zeros(n, bool)
        for s in self.dna_stretches:
            dna[s.first : s.last + 1] = s.kind == "trend"
        for s in self.cp_stretches:
            cp[s.first : s.last + 1] = s.kind == "trend"
        return float(np.mean(dna == cp))

    @property
    def regimes_agree(self) -> str:
        if self.dna is None or self.cp is None:
            return "–"
        dna, cp = self.boundaries
        m_dna, m_cp = self.matched
        kinds = self.kind_share >= KIND_AGREEMENT
        if m_dna == len(dna) and m_cp == len(cp) and kinds:
            return "yes"
        if m_dna or m_cp or (not dna and not cp and kinds):
            return "partly"
        return "no"


def _span(labels: list[str], s: Stretch) -> str:
    return labels[s.first] if s.first == s.last else f"{labels[s.first]}–{labels[s.last]}"


def _describe(labels: list[str], stretches: list[Stretch]) -> str:
    return " · ".join(f"{_span(labels, s)} {s.kind}{s.note}" for s in stretches)


def _bucket_label(start: float, width: float) -> str:
    """A bucket by the year (yearly buckets: the year of its middle) or the month it starts in."""
    if width >= 360 * 86400:
        return _date(start + width / 2)[:4]
    return _date(start)[:7]


def _dna_stretches(dna: DnaRun, positions: list[int]) -> list[Stretch]:
    """Runs of one regime over the compared buckets (an incident bucket continues the run before it)."""
    stretches: list[Stretch] = []
    current = None
    for k, p in enumerate(positions):
        g = int(dna.groups[p])
        if g < 0 and stretches:
            stretches[-1].last = k
            stretches[-1].note = " (incl. an incident)"
            continue
        if current is not None and g == current and stretches:
            stretches[-1].last = k
            continue
        current = g
        stretches.append(Stretch(k, k, dna.kinds.get(g, "incident")))
    return stretches


def _cp_stretches(cp: Changepoints, times: np.ndarray, labels: list[str]) -> list[Stretch]:
    """The changepoint segments, consecutive trends merged into one trending stretch (its slope changes
    noted): the DNA's ``trend`` is one regime however its speed varies."""
    stretches: list[Stretch] = []
    for segment in cp.segments:
        if stretches and segment.kind == "trend" and stretches[-1].kind == "trend":
            kink = labels[segment.first]
            stretches[-1].last = segment.last
            stretches[-1].note = (
                f" (slope changes {kink})"
                if not stretches[-1].note
                else stretches[-1].note.replace(")", f", {kink})")
            )
            continue
        stretches.append(Stretch(segment.first, segment.last, segment.kind))
    return stretches


def _moves(cp: Changepoints, times: np.ndarray, labels: list[str]) -> list[str]:
    """Per changepoint, the dimensions whose fitted value jumps most there (in noise units)."""
    out = []
    for a, b in zip(cp.segments, cp.segments[1:], strict=False):
        at = (times[a.last] + times[b.first]) / 2
        jump = segment_fit(cp, b, times)(at) - segment_fit(cp, a, times)(at)
        top = np.argsort(-np.abs(jump))[:3]
        shown = ", ".join(f"{cp.dimensions[i]} {jump[i]:+.1f}" for i in top)
        out.append(f"{labels[b.first]} ({a.kind} → {b.kind}): {shown}")
    return out


def _facts(
    cp_stretches: list[Stretch],
    case: Case,
    prepared: Prepared,
    buckets: list[pd.DataFrame],
    dna: DnaRun,
    positions: list[int],
    labels: list[str],
) -> list[str]:
    """What the data show that bears on a disagreement, each computed, none asserted."""
    facts = []
    # Values beyond the training range: the DNA's histograms use the reference's bins.
    for name in case.numeric:
        lo, hi = prepared.train[name].min(), prepared.train[name].max()
        shares = [float(((b[name] < lo) | (b[name] > hi)).mean()) for b in buckets]
        mostly = [labels[k] for k, s in enumerate(shares) if s > 0.5]
        some = [k for k, s in enumerate(shares) if s > 0.05]
        if mostly:
            inside = dna.neighbours[[p for k, p in enumerate(positions[:-1]) if labels[k] in mostly]]
            typical = float(np.median(inside)) if inside.size else 0.0
            facts.append(
                f"`{name}`: more than half the values lie beyond the training range [{lo:g}, {hi:g}] in "
                f"{len(mostly)} of {len(buckets)} buckets ({mostly[0]} on); the DNA histograms every bucket "
                "on the reference's bins, where all of them share the edge bin, so those buckets look alike "
                f"(DNA divergence between neighbours there: median {typical:.3f}, cut {dna.cut:.3g})"
            )
        elif some:
            facts.append(
                f"`{name}`: beyond the training range [{lo:g}, {hi:g}] in "
                + ", ".join(f"{labels[k]} ({shares[k]:.0%})" for k in some[:4])
            )
    # Buckets without data between buckets with data.
    ids = dna.ids[positions]
    gaps = [f"{labels[k]}–{labels[k + 1]}" for k in range(len(ids) - 1) if ids[k + 1] - ids[k] > 1]
    if gaps:
        # A `recurring` regime whose buckets follow one another among the buckets with data: only gaps
        # separate its runs.
        seq = [int(dna.groups[p]) for p in positions]
        split = [
            g
            for g, kind in dna.kinds.items()
            if kind == "recurring"
            and (at := [k for k, x in enumerate(seq) if x == g])
            and at[-1] - at[0] + 1 == len(at)
        ]
        facts.append(
            f"{len(gaps)} gap(s) of buckets without data between {', '.join(gaps[:6])}"
            + (" …" if len(gaps) > 6 else "")
            + (
                ": the DNA counts a run of a regime only over adjacent buckets, so surveys on either side "
                f"of a gap are separate runs and {len(split)} regime(s) with no other regime between their "
                "buckets are named `recurring`"
                if split
                else ""
            )
        )
    # A trend of the changepoints that the DNA does not call one: its groups there.
    for stretch in cp_stretches:
        if stretch.kind != "trend" or stretch.last - stretch.first < 2:
            continue
        inside = [int(dna.groups[p]) for p in positions[stretch.first : stretch.last + 1]]
        if any(dna.kinds.get(g) == "trend" for g in inside):
            continue
        order = list(dict.fromkeys(g for g in inside if g >= 0))
        sizes = [inside.count(g) for g in order]
        plateau = len(sizes) >= TREND_MIN_GROUPS and (
            sizes[0] > 2 * float(np.median(sizes[1:])) or sizes[-1] > 2 * float(np.median(sizes[:-1]))
        )
        if len(sizes) < TREND_MIN_GROUPS:
            why = f"fewer than the {TREND_MIN_GROUPS} groups a DNA trend needs"
        elif plateau:
            why = (
                "an end group more than twice as long as the others counts as a plateau when it stands "
                "still, not part of a trend (README), and what is left is fewer than three groups"
            )
        else:
            why = "the DNA's other trend conditions (steady, without a jump) do not hold"
        kinds = ", ".join(dna.kinds.get(g, "?") for g in order)
        facts.append(
            f"over the changepoints' trend {_span(labels, stretch)} the DNA has {len(sizes)} group(s) of "
            f"{', '.join(map(str, sizes))} bucket(s) ({kinds}): {why}"
        )
    # The cut against the neighbouring divergences.
    nb = dna.neighbours[[p for p in positions[:-1]]] if len(positions) > 1 else np.zeros(0)
    if nb.size:
        facts.append(
            f"DNA cut {dna.cut:.3g} (PSI) = {dna.overdispersion:.1f} × sampling noise × the neighbours' "
            "tail; "
            f"divergence between neighbouring buckets: median {np.median(nb):.3g}, max {nb.max():.3g}, "
            f"{int((nb > dna.cut).sum())} of {nb.size} above the cut"
        )
    # Few distinct values per bucket: PSI on fixed bins then moves by whole values.
    for name in case.numeric:
        distinct = np.median([b[name].nunique() for b in buckets])
        rows = np.median([len(b) for b in buckets])
        if dna.overdispersion > 2 and distinct < 30 and rows > 5 * distinct:
            facts.append(
                f"`{name}` takes {distinct:.0f} distinct values per bucket (median) in {rows:.0f} rows: its "
                "histogram on fixed bins changes by whole values from bucket to bucket"
            )
    return facts


def compare(case: Case, prepared: Prepared, folder: Path) -> Comparison:
    """The planner and the DNA of ``case`` (through the CLI) against the independent computation; the
    case's replay must have saved its bucket profiles in ``folder / "insights"``."""
    started = time.perf_counter()
    failures: list[str] = []
    history = pd.concat([prepared.train, prepared.replay])[["ts", *case.features, "target"]]
    history_path = folder / f"{case.name}_history.csv"
    history.to_csv(history_path, index=False)

    plan = decay = decay_all = None
    try:
        plan = run_planner(case, history_path, folder / "plan")
        failures += plan.failures
        decay = decay_horizon(
            history, case.features, case.task, case.make_model, case.window_seconds, plan.window, TOLERANCE
        )
        decay_all = decay_horizon(
            history, case.features, case.task, case.make_model, case.window_seconds, None, TOLERANCE
        )
        if plan.origin is not None and plan.origin != decay.origin:
            failures.append(
                f"the plan's periods start {plan.origin.date()}, the independent ones {decay.origin.date()}"
            )
    except (RuntimeError, ValueError) as exc:
        failures.append(str(exc))

    dna = cp = None
    labels: list[str] = []
    dna_stretches: list[Stretch] = []
    cp_stretches: list[Stretch] = []
    left_out: list[str] = []
    facts: list[str] = []
    moves: list[str] = []
    try:
        dna = run_dna(case, folder / "insights", folder / "dna")
    except RuntimeError as exc:
        failures.append(str(exc))
    if dna is not None and len(dna.ids) >= 2:
        width = float((dna.starts[-1] - dna.starts[0]) / (dna.ids[-1] - dna.ids[0]))
        ts = _epoch(prepared.replay["ts"])
        first, last = ts.min(), ts.max()
        positions, buckets = [], []
        for p, start in enumerate(dna.starts):
            coverage = (min(start + width, last) - max(start, first)) / width
            if coverage < PARTIAL_COVERAGE:
                left_out.append(f"{_bucket_label(start, width)} (covers {coverage:.0%} of its time)")
                continue
            positions.append(p)
            buckets.append(prepared.replay[(ts >= start) & (ts < start + width)])
        if set(int(dna.ids[p]) for p in range(len(dna.ids)) if p not in positions) != dna.partial:
            failures.append(
                f"partial buckets: the DNA's {sorted(dna.partial)}, by coverage "
                f"{sorted(int(dna.ids[p]) for p in range(len(dna.ids)) if p not in positions)}"
            )
        after = int((ts >= dna.starts[-1] + width).sum())
        if after:
            failures.append(
                f"`insights dna` leaves out the {after} replayed rows after {_date(dna.starts[-1] + width)} "
                "(the last bucket: the stream ended before the bucket did, so it is still open), so the "
                "DNA's latest bucket is not the stream's latest data"
            )
        labels = [_bucket_label(dna.starts[p], width) for p in positions]
        times = dna.ids[positions].astype(np.float64)
        x, noise, names = bucket_summaries(buckets, case.numeric, case.categorical)
        cp = changepoints(x, times, noise, names)
        dna_stretches = _dna_stretches(dna, positions)
        cp_stretches = _cp_stretches(cp, times, labels)
        moves = _moves(cp, times, labels)
        facts = _facts(cp_stretches, case, prepared, buckets, dna, positions, labels)
    return Comparison(
        case=case,
        plan=plan,
        decay=decay,
        decay_all=decay_all,
        dna=dna,
        cp=cp,
        labels=labels,
        dna_stretches=dna_stretches,
        cp_stretches=cp_stretches,
        left_out=left_out,
        facts=facts,
        moves=moves,
        failures=failures,
        seconds=time.perf_counter() - started,
        history_missing=float(history[list(case.features)].isna().to_numpy().mean()),
    )


# -- the report -----------------------------------------------------------------------------------
def _horizon(h: int, bounded: bool, unit: str) -> str:
    return f"{h} {unit}" if bounded else f"≥ {h} {unit} (never > {TOLERANCE:.0%})"


def _unit(case: Case) -> str:
    days = case.window_seconds / 86400
    return "y" if days >= 360 else f"×{days:g} d"


def _yes(flag: bool | None) -> str:
    return "–" if flag is None else ("yes" if flag else "**no**")


def table(comparisons: list[Comparison]) -> list[str]:
    lines = [
        "| dataset | period · model | planner horizon (`plan`) | independent horizon: same window · all "
        "history | agree? | DNA regimes (`insights dna`) | changepoints (independent) | agree? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        u = _unit(c.case)
        period = f"{c.case.window} · {c.plan.factory.split(':')[-1]}" if c.plan else c.case.window
        planned = (
            f"{_horizon(c.plan.horizon, c.plan.bounded, u)} (window {c.plan.window})" if c.plan else "failed"
        )
        own = (
            f"{_horizon(c.decay.curve.horizon, c.decay.curve.bounded, u)} · "
            f"{_horizon(c.decay_all.curve.horizon, c.decay_all.curve.bounded, u)}"
            if c.decay and c.decay_all
            else "–"
        )
        dna = _describe(c.labels, c.dna_stretches) if c.dna else "failed"
        cp = _describe(c.labels, c.cp_stretches) if c.cp else "–"
        agree = c.regimes_agree if c.regimes_agree in ("yes", "–") else f"**{c.regimes_agree}**"
        lines.append(
            f"| [{c.case.name}](#{c.case.name}-retraining-insight) | {period} | {planned} | {own} "
            f"| {_yes(c.horizon_agrees)} | {dna} | {cp} | {agree} |"
        )
    return lines


def _lag_row(c: Comparison, lags: list[int]) -> list[str]:
    assert c.plan is not None and c.decay is not None
    curve = dict(zip(c.decay.curve.lags, c.decay.curve.median, strict=True))
    starts = dict(zip(c.decay.curve.lags, c.decay.curve.starts, strict=True))
    head = "| lag | " + " | ".join(str(k) for k in lags) + " |"
    rule = "|---|" + "---|" * len(lags)

    def pct(v: float | None) -> str:
        return "–" if v is None or not math.isfinite(v) else f"{v:+.1%}"

    plan = "| `plan` (report) | " + " | ".join(pct(c.plan.lag_loss.get(k)) for k in lags) + " |"
    own = "| independent | " + " | ".join(pct(curve.get(k)) for k in lags) + " |"
    n = "| starts | " + " | ".join(str(starts.get(k, "–")) for k in lags) + " |"
    return [head, rule, plan, own, n]


def details(c: Comparison) -> list[str]:
    u = _unit(c.case)
    lines = [f"### {c.case.name}: retraining insight", ""]
    if c.plan and c.decay and c.decay_all:
        p, d = c.plan, c.decay
        lines += [
            f"- **Planner**: `{p.command}` → retrain every {p.cadence} {u} on the last {p.window}; decay "
            f"horizon {_horizon(p.horizon, p.bounded, u)} over {p.starts} starts"
            + (f" ({p.lag1_starts} at lag 1)" if p.lag1_starts not in (None, p.starts) else "")
            + (f", {p.recent} {u} from the latest half of the starts (the plan counts it)" * bool(p.recent))
            + "."
            + "".join(f" Warning: {w}" for w in p.warnings),
            f"- **Independent** ({d.metric.upper()}, scikit-learn `{type(c.case.make_model()[-1]).__name__}` "
            f"of the case; {d.periods} periods from {d.origin.date()}; {d.fits} models): trained on the last "
            f"{p.window} period(s), horizon {_horizon(d.curve.horizon, d.curve.bounded, u)} (latest half of "
            f"the starts: {_horizon(d.recent.horizon, d.recent.bounded, u)}); trained on all periods up to "
            f"the start: {_horizon(c.decay_all.curve.horizon, c.decay_all.curve.bounded, u)}."
            + (
                f" Not fitted (one class or no rows): {', '.join(d.skipped_fits[:4])}." * bool(d.skipped_fits)
            ),
            *(
                [
                    f"- Features with missing values ({missing:.1%} of the cells): `plan` fills them with "
                    "the column's mean over the whole table, the case's pipeline with the training rows' "
                    "median — the per-lag medians differ a little for that."
                ]
                if (missing := float(c.history_missing)) > 0
                else []
            ),
            "",
            "Median degradation against a fresh model, per lag (lag 1 = the period right after training):",
            "",
        ]
        measured = [k for k, m in zip(d.curve.lags, d.curve.median, strict=True) if math.isfinite(m)]
        around = {p.horizon, p.horizon + 1, d.curve.horizon, d.curve.horizon + 1}
        picked = sorted(set(measured[:6]) | (set(p.lag_loss) | around) & set(measured))
        lines += [*_lag_row(c, picked[:14]), ""]
    if c.dna and c.cp:
        lines += [
            f"- **DNA**: `{c.dna.command}`: {len(c.dna.ids)} buckets; cut {c.dna.cut:.3g}, background "
            f"{c.dna.background:.3g}, overdispersion {c.dna.overdispersion:.2f}"
            + (f"; incidents: {'; '.join(c.dna.incidents)}" if c.dna.incidents else "")
            + ".",
            f"- **Changepoints**: {len(c.labels)} buckets, {len(c.cp.dimensions)} dimensions; segments "
            + ", ".join(
                f"{_span(c.labels, Stretch(g.first, g.last, g.kind))} {g.kind}" for g in c.cp.segments
            )
            + (
                "; at each changepoint, the dimensions that jump most (in noise units): " + "; ".join(c.moves)
                if c.moves
                else "; no changepoint"
            )
            + ".",
        ]
        if c.left_out:
            lines.append(f"- Left out of both (partial): {', '.join(c.left_out)}.")
        m_dna, m_cp = c.matched
        dna_b, cp_b = c.boundaries
        lines.append(
            f"- **Agreement**: {m_dna} of {len(dna_b)} DNA boundaries have a changepoint within "
            f"{MATCH_BUCKETS} bucket, {m_cp} of {len(cp_b)} changepoints a DNA boundary; trend or not agrees "
            f"on {c.kind_share:.0%} of the buckets."
        )
        lines += [f"- {fact}." for fact in c.facts]
    lines += [f"- **Product problem**: {f}." for f in c.failures]
    lines.append("")
    return lines


def render(comparisons: list[Comparison]) -> list[str]:
    if not comparisons:
        return []
    lines = [
        "## Retraining insight against an independent computation",
        "",
        "For "
        + ", ".join(c.case.name for c in comparisons)
        + " (`evaluation/insight.py`), the planner and the data DNA run through the command line as a "
        "user would run them, and are computed again without stream-monitor "
        "(`evaluation/insight_truth.py`, numpy/pandas/scikit-learn). Seattle weather is left out: after "
        "its label recoding a quarter holds 0–2 positive days, so a per-period AUC is noise, and its "
        "buckets follow the seasons, which changepoints cannot describe; german_health spans five years.",
        "",
        "- **Decay horizon.** `stream-monitor plan HISTORY.csv --time-column ts --target target --task … "
        "--model-factory evaluation.insight:linear|logistic --period-seconds WINDOW` on the case's whole "
        "history (training slice and replayed rows, `DataFrame.to_csv`), with the case's own scikit-learn "
        "model and one period = the case's monitoring window (the default period — a day, a week or four "
        "weeks — holds too few rows in these data sets); when `plan` fails with that model it runs again "
        "with the built-in one (`ridge`, `logistic`) and the failure is listed. Independently: for **every** "
        "start period t, the case's model trained on periods ≤ t (the last W of them, W the plan's "
        "window; and, for comparison, all of them) and scored on each later period t + k; the degradation "
        "at lag k is the median over the starts of the relative loss against the fresh model (trained up "
        f"to t + k − 1) on the same period (AUC; WAPE for non-negative labels); lags measured on fewer "
        f"than 5 starts and periods of fewer than 20 rows are not used. The horizon is the number of lags "
        f"before the first whose median exceeds the planner's tolerance ({TOLERANCE:.0%}): a horizon of h "
        "means the first lag beyond the tolerance is h + 1. They agree when they differ by at most one "
        "period, or neither crosses the tolerance.",
        "- **Regimes.** `stream-monitor insights dna --model NAME` on the bucket profiles the case's "
        "`replay --insights-dir` saved (default buckets: one per window width). Independently: each bucket "
        "summarised by the 10/25/50/75/90 % quantiles of every numeric feature and the shares of every "
        "category, each in units of its own noise (1.4826 · MAD of first differences / √2, at least the "
        "bootstrap error of the summary), segmented by exact optimal partitioning (the optimum PELT "
        "finds) into segments each constant or linear in time under BIC (ln n per parameter and per "
        "changepoint); consecutive linear segments form one trend (their slope changes noted). First or "
        f"last buckets covering less than {PARTIAL_COVERAGE:.0%} of their time are left out of both. "
        f"Regimes agree (**yes**) when every DNA boundary has a changepoint within {MATCH_BUCKETS} bucket "
        f'and vice versa and both say "trend" or "not a trend" on at least {KIND_AGREEMENT:.0%} of the '
        "buckets; **partly** when some of this holds. Units: y = years, ×91 d = periods of 91 days.",
        "",
        *table(comparisons),
        "",
        f"Horizons agree on {sum(bool(c.horizon_agrees) for c in comparisons)} of {len(comparisons)} data "
        f"sets; regimes agree on {sum(c.regimes_agree == 'yes' for c in comparisons)}, partly on "
        f"{sum(c.regimes_agree == 'partly' for c in comparisons)}. Where they do not, the facts under each "
        "data set below say what the data show; the product problems met on the way are listed there too.",
        "",
        *(line for c in comparisons for line in details(c)),
    ]
    return lines
