"""``replay --report DIR``: why a replay decided what it did, window by window.

For every closed window of every model the report writes what the detectors and the policy saw, in
tidy CSV (one row per window, per detector result, per performance metric) and in JSONL (one object
per window, everything nested), the triggers in CSV and as the JSON events the replay emitted, and one
self-contained HTML page (inline SVG drawn here: no script, no image file, nothing fetched) with, per
model, the PSI of each feature over the windows as a heatmap, each watched performance metric against
its rule (rolling value, baseline, limit) and the triggers marked on the windows' time axis.

========================  =====================================================================
file                      one row / line per
========================  =====================================================================
``windows.csv``           window: bounds, events, drifting features, largest PSI, prediction PSI,
                          labels joined / pending / expired / orphan, label delay, triggers
``detectors.csv``         window × detector result: statistic, value, threshold, drift, p-value
``performance.csv``       window × rolling metric: value, baseline, and for the metrics the policy
                          watches the limit of its rule and whether the window is past it
``triggers.csv``          trigger: id, kind, severity, window, action, reasons
``windows.jsonl``         window, with everything above nested
``triggers.jsonl``        trigger, the event as the replay emitted it
``report.html``           the charts
========================  =====================================================================

Rows are written as windows close, so a long replay holds only what the charts need (a float per
feature and window). Charts of more than :data:`MAX_COLUMNS` windows merge neighbouring windows into
one column (the PSI nearest to, or furthest past, its alarm; the performance of its last window).
"""

from __future__ import annotations

import csv
import html
import math
import time
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from stream_monitor.core.detectors.table import PREDICTION, PSI, spec_of
from stream_monitor.core.engine import EngineOutput, MonitoringEngine
from stream_monitor.core.policy import PerformanceRule, WindowEvaluation
from stream_monitor.core.triggers import Trigger, WindowEvidence

__all__ = ["MAX_COLUMNS", "REPORT_FILES", "ReplayReport"]

#: The files a report directory holds.
REPORT_FILES = (
    "windows.csv",
    "detectors.csv",
    "performance.csv",
    "triggers.csv",
    "windows.jsonl",
    "triggers.jsonl",
    "report.html",
)
#: Charts draw at most this many columns; more windows are merged into neighbouring columns.
MAX_COLUMNS = 600

_WINDOW_COLUMNS = (
    "model_id", "window", "start", "end", "start_utc", "end_utc", "events", "drifting_features",
    "max_psi", "max_psi_feature", "prediction_psi", "prediction_psi_alarm", "labels_joined",
    "labels_pending", "labels_expired", "labels_orphan", "label_delay_p50_seconds",
    "labels_in_rolling_window", "performance_drop", "triggers",
)  # fmt: skip
_DETECTOR_COLUMNS = (
    "model_id", "window", "start", "end", "detector", "feature", "statistic", "value", "threshold",
    "drift", "warning", "p_value", "effect_size",
)  # fmt: skip
_PERFORMANCE_COLUMNS = ("model_id", "window", "end", "metric", "value", "baseline", "limit", "worse")
_TRIGGER_COLUMNS = (
    "model_id", "trigger_id", "kind", "severity", "event_time", "event_time_utc", "window",
    "window_start", "window_end", "action", "reasons", "supersedes",
)  # fmt: skip
# Rolling-performance entries that are counts, not metrics.
_NOT_METRICS = frozenset({"n", "error_drifts_total", "positives"})


def _utc(ts: float) -> str:
    if not math.isfinite(ts):
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _cell(value: Any) -> Any:
    """A CSV cell: NaN and None empty, floats in full precision."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else value


@dataclass
class _Series:
    """What the charts need of one model: per window its bounds, the PSI per input, the rules."""

    ends: array = field(default_factory=lambda: array("d"))
    indices: array = field(default_factory=lambda: array("q"))
    # input -> per window (PSI, its alarm threshold); the alarm may differ between windows and inputs
    psi: dict[str, tuple[array, array]] = field(default_factory=dict)
    # metric -> per window (value, baseline, limit); NaN where the rule did not apply
    rules: dict[str, tuple[array, array, array]] = field(default_factory=dict)
    triggers: list[Trigger] = field(default_factory=list)
    labels: dict[str, float] = field(default_factory=dict)

    def add(self, ev: WindowEvaluation, rules: Sequence[PerformanceRule]) -> None:
        w = len(self.ends)
        self.ends.append(ev.end)
        self.indices.append(ev.index)
        for r in ev.results:
            if r.detector == PSI.name and r.feature is not None:
                if r.feature not in self.psi:
                    self.psi[r.feature] = (array("d", [math.nan] * w), array("d", [math.nan] * w))
                values, alarms = self.psi[r.feature]
                values.append(r.value)
                alarms.append(r.threshold)
        for values, alarms in self.psi.values():
            if len(values) == w:  # the input had no values in this window
                values.append(math.nan)
                alarms.append(math.nan)
        for rule in rules:
            if rule.metric not in self.rules:
                self.rules[rule.metric] = (
                    array("d", [math.nan] * w),
                    array("d", [math.nan] * w),
                    array("d", [math.nan] * w),
                )
            for column, value in zip(
                self.rules[rule.metric], (rule.value, rule.baseline, rule.limit), strict=True
            ):
                column.append(value)
        for series in self.rules.values():
            for column in series:
                if len(column) == w:
                    column.append(math.nan)
        self.labels = ev.labels


class ReplayReport:
    """Collects a replay's windows and triggers into ``directory`` (see the module docstring).

    Pass :meth:`add` every engine output of the replay (its ``on_output``), then :meth:`close`.
    ``engine`` gives each model's policy (the performance rules) and settings.
    """

    def __init__(self, directory: str | Path, engine: MonitoringEngine) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.engine = engine
        self._files: list[IO[Any]] = []
        self._windows = self._csv("windows.csv", _WINDOW_COLUMNS)
        self._detectors = self._csv("detectors.csv", _DETECTOR_COLUMNS)
        self._performance = self._csv("performance.csv", _PERFORMANCE_COLUMNS)
        self._triggers = self._csv("triggers.csv", _TRIGGER_COLUMNS)
        self._windows_jsonl = self._open("windows.jsonl", binary=True)
        self._triggers_jsonl = self._open("triggers.jsonl", binary=True)
        self._series: dict[str, _Series] = {m: _Series() for m in engine.monitors}

    def _open(self, name: str, binary: bool) -> IO[Any]:
        path = self.directory / name
        f: IO[Any] = path.open("wb") if binary else path.open("w", newline="", encoding="utf-8")
        self._files.append(f)
        return f

    def _csv(self, name: str, columns: Sequence[str]) -> Any:
        writer = csv.writer(self._open(name, binary=False))
        writer.writerow(columns)
        return writer

    # -- collecting ---------------------------------------------------------------------------
    def add(self, out: EngineOutput, emitted_at: float | None = None) -> None:
        """Record one engine output: its closed windows and its triggers (stamped ``emitted_at``)."""
        for mo in out.per_model.values():
            by_window: dict[int, list[str]] = {}
            for t in mo.triggers:
                if isinstance(t.evidence, WindowEvidence):
                    by_window.setdefault(t.evidence.window_index, []).append(t.trigger_id)
            for ev in mo.evaluations:
                self._window(ev, by_window.get(ev.index, []))
            for t in mo.triggers:
                self._trigger(t if emitted_at is None else t.with_emitted_at(emitted_at))

    def _window(self, ev: WindowEvaluation, trigger_ids: list[str]) -> None:
        model = ev.model_id
        rules = self.engine.judging_monitors[model].policy.performance_rules(ev.performance, ev.baseline)
        self._series[model].add(ev, rules)
        psis = [r for r in ev.results if r.detector == PSI.name and r.feature not in (None, PREDICTION)]
        top = max(psis, key=lambda r: -math.inf if math.isnan(r.value) else r.value, default=None)
        prediction = next((r for r in ev.results if r.detector == PSI.name and r.feature == PREDICTION), None)
        drifting = sorted(
            {
                str(r.feature)
                for r in ev.results
                if r.drift
                and r.feature not in (None, PREDICTION)
                and (spec := spec_of(r.detector))
                and spec.flags_drift
            }
        )
        labels = ev.labels
        self._windows.writerow(
            _cell(v)
            for v in (
                model, ev.index, ev.start, ev.end, _utc(ev.start), _utc(ev.end), ev.events, len(drifting),
                None if top is None else top.value, None if top is None else top.feature,
                None if prediction is None else prediction.value,
                self.engine.settings[model].policy.prediction_psi_alarm,
                labels.get("joined_total"), labels.get("pending"), labels.get("expired"),
                labels.get("orphan"), labels.get("delay_p50"), ev.performance.get("n"),
                any(r.worse for r in rules), " ".join(trigger_ids),
            )
        )  # fmt: skip
        for r in ev.results:
            self._detectors.writerow(
                _cell(v)
                for v in (
                    model, ev.index, ev.start, ev.end, r.detector, r.feature, r.statistic, r.value,
                    r.threshold, r.drift, r.warning, r.p_value, r.effect_size,
                )
            )  # fmt: skip
        ruled = {r.metric: r for r in rules}
        for metric, value in ev.performance.items():
            if metric in _NOT_METRICS:
                continue
            rule = ruled.get(metric)
            self._performance.writerow(
                _cell(v)
                for v in (
                    model, ev.index, ev.end, metric, value, ev.baseline.get(metric),
                    None if rule is None else rule.limit, None if rule is None else rule.worse,
                )
            )  # fmt: skip
        record = {
            "model_id": model,
            "window": ev.index,
            "start": ev.start,
            "end": ev.end,
            "events": ev.events,
            "covered_seconds": ev.covered_seconds,
            "drifting_features": drifting,
            "detectors": [
                {
                    "detector": r.detector,
                    "feature": r.feature,
                    "statistic": r.statistic,
                    "value": r.value,
                    "threshold": r.threshold,
                    "drift": r.drift,
                    "warning": r.warning,
                    "p_value": r.p_value,
                    "effect_size": r.effect_size,
                }
                for r in ev.results
            ],
            "performance": ev.performance,
            "baseline": ev.baseline,
            "performance_rules": [
                {
                    "metric": r.metric,
                    "value": r.value,
                    "baseline": r.baseline,
                    "limit": r.limit,
                    "worse": r.worse,
                }
                for r in rules
            ],
            "labels": ev.labels,
            "segments": ev.segments,
            "triggers": trigger_ids,
        }
        # orjson writes NaN (an unknown value) as null.
        self._windows_jsonl.write(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")

    def _trigger(self, t: Trigger) -> None:
        self._series[t.model_id].triggers.append(t)
        window = t.reasons[0].window if t.reasons else None
        index = t.evidence.window_index if isinstance(t.evidence, WindowEvidence) else None
        reasons = "; ".join(
            f"{r.detector} on {r.feature or r.statistic}: {r.value:.4g} (threshold {r.threshold:.4g})"
            for r in t.reasons
        )
        self._triggers.writerow(
            _cell(v)
            for v in (
                t.model_id, t.trigger_id, t.kind, t.severity, t.event_time, _utc(t.event_time), index,
                None if window is None else window.start, None if window is None else window.end,
                t.recommendation.action, reasons, t.supersedes,
            )
        )  # fmt: skip
        self._triggers_jsonl.write(t.to_json_bytes() + b"\n")

    # -- finishing ----------------------------------------------------------------------------
    def close(self, title: str = "stream-monitor replay") -> Path:
        """Close the data files and write ``report.html``; returns its path."""
        for f in self._files:
            f.close()
        path = self.directory / "report.html"
        path.write_text(render_report(self._series, title, generated_at=time.time()), encoding="utf-8")
        return path


# -- the page ---------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h2{margin-top:1.6em;border-bottom:1px solid #ccc}
svg text{font-size:10px;fill:#333}
table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}
.legend span{display:inline-block;width:14px;height:10px;margin:0 3px 0 10px}
.note{color:#666;font-size:13px}
"""
_LEFT = 120  # room for the feature names
_TOP = 16  # room for the trigger flags
_ROW = 14
_PLOT = 900  # width of the window axis
_PERF_HEIGHT = 130
_TRIGGER_COLOURS = {"critical": "#c0392b", "warning": "#e67e22"}


def _columns(n: int) -> list[tuple[int, int]]:
    """Window ranges ``[a, b)`` of the chart columns: one window each, or merged neighbours."""
    per = max(1, math.ceil(n / MAX_COLUMNS))
    return [(a, min(a + per, n)) for a in range(0, n, per)]


def _psi_colour(ratio: float) -> str:
    """By PSI / its alarm: white at 0, yellow at half the alarm, orange at the alarm, dark red from
    twice the alarm on; grey when unknown."""
    if not math.isfinite(ratio):
        return "#eeeeee"
    x = min(max(ratio, 0.0), 2.0)
    if x <= 1.0:  # white -> yellow -> orange
        return f"rgb(255,{int(255 - 90 * x)},{int(255 - 255 * min(2 * x, 1.0))})"
    return f"rgb({int(255 - 80 * (x - 1))},{int(165 - 165 * (x - 1))},0)"  # orange -> dark red


def _trigger_columns(series: _Series, columns: list[tuple[int, int]]) -> list[tuple[int, Trigger]]:
    """Each trigger's column: the one holding the first window that ends at or after its event time."""
    ends = np.frombuffer(series.ends, dtype=np.float64) if len(series.ends) else np.empty(0)
    starts = [a for a, _ in columns]
    out = []
    for t in series.triggers:
        window = min(int(np.searchsorted(ends, t.event_time, side="left")), max(len(ends) - 1, 0))
        out.append((max(int(np.searchsorted(starts, window, side="right")) - 1, 0), t))
    return out


def _axis(series: _Series, columns: list[tuple[int, int]], width: float, y: float) -> str:
    """Date ticks under a chart at about eight columns."""
    parts = []
    step = max(1, len(columns) // 8)
    for c in range(0, len(columns), step):
        end = series.ends[columns[c][1] - 1]
        x = _LEFT + (c + 0.5) * width
        parts.append(
            f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" stroke="#999"/>'
            f'<text x="{x:.1f}" y="{y + 14}" text-anchor="middle">{html.escape(_utc(end)[:10])}</text>'
        )
    return "".join(parts)


def _flags(marks: list[tuple[int, Trigger]], width: float, top: float, bottom: float) -> str:
    """A trigger marker per trigger: a line through the chart and a flag above it, with a tooltip."""
    parts = []
    for column, t in marks:
        x = _LEFT + (column + 0.5) * width
        colour = _TRIGGER_COLOURS.get(t.severity, "#c0392b")
        tip = html.escape(f"{t.kind} ({t.severity}) at {_utc(t.event_time)} — {t.trigger_id}")
        parts.append(
            f'<g class="trigger-marker" data-trigger-id="{html.escape(t.trigger_id)}" '
            f'data-kind="{html.escape(t.kind)}"><title>{tip}</title>'
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="{colour}" '
            'stroke-width="1.5" stroke-dasharray="3,2"/>'
            f'<path d="M{x - 4:.1f},{top - 9} L{x + 4:.1f},{top - 9} L{x:.1f},{top} Z" fill="{colour}"/></g>'
        )
    return "".join(parts)


def psi_heatmap_svg(model: str, series: _Series) -> str:
    """The PSI of every input over the windows: a row per feature (the prediction last), a column per
    window (or merged windows: the one nearest to its alarm), coloured by PSI against its alarm,
    triggers marked."""
    n = len(series.ends)
    features = [f for f in series.psi if f != PREDICTION] + ([PREDICTION] if PREDICTION in series.psi else [])
    if n == 0 or not features:
        return '<p class="note">No window with PSI values.</p>'
    columns = _columns(n)
    width = _PLOT / len(columns)
    height = _TOP + _ROW * len(features)
    parts = [
        '<svg xmlns="http://www.w3.org/2000/svg" role="img" class="psi-heatmap" '
        f'data-model="{html.escape(model)}" '
        f'aria-label="PSI per feature and window, model {html.escape(model)}" '
        f'width="{_LEFT + _PLOT + 50}" height="{height + 26}">'
    ]
    for row, feature in enumerate(features):
        y = _TOP + row * _ROW
        name = "prediction" if feature == PREDICTION else feature
        parts.append(f'<text x="{_LEFT - 6}" y="{y + _ROW - 3}" text-anchor="end">{html.escape(name)}</text>')
        values, alarms = (np.frombuffer(a, dtype=np.float64) for a in series.psi[feature])
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios = values / alarms
        for c, (a, b) in enumerate(columns):
            chunk = ratios[a:b]
            # the window of the column closest to (or furthest past) its alarm
            at = a + int(np.nanargmax(chunk)) if np.isfinite(chunk).any() else a
            first, last = series.indices[a], series.indices[b - 1]
            which = f"window {first}" if a + 1 == b else f"windows {first}–{last}, largest"
            tip = (
                f"{name}, {which}, ending {_utc(series.ends[b - 1])}: "
                f"PSI {values[at]:.4f} (alarm {alarms[at]:.4g})"
            )
            parts.append(
                f'<rect class="cell" data-feature="{html.escape(feature)}" data-window="{first}" '
                f'x="{_LEFT + c * width:.2f}" y="{y}" width="{width:.2f}" height="{_ROW - 1}" '
                f'fill="{_psi_colour(float(ratios[at]))}"><title>{html.escape(tip)}</title></rect>'
            )
    parts.append(_flags(_trigger_columns(series, columns), width, _TOP, height))
    parts.append(_axis(series, columns, width, height + 2))
    parts.append("</svg>")
    return "".join(parts)


def _polyline(
    values: np.ndarray, columns: list[tuple[int, int]], width: float, y_of: Any, **attrs: str
) -> str:
    """A line through the last finite value of each column (a rolling metric moves slowly)."""
    points: list[str] = []
    segments: list[list[str]] = []
    for c, (a, b) in enumerate(columns):
        chunk = values[a:b]
        finite = chunk[np.isfinite(chunk)]
        if finite.size == 0:
            if points:
                segments.append(points)
            points = []
            continue
        points.append(f"{_LEFT + (c + 0.5) * width:.1f},{y_of(float(finite[-1])):.1f}")
    if points:
        segments.append(points)
    # class_ (a keyword) and stroke_width stand for class and stroke-width
    extra = " ".join(f'{k.rstrip("_").replace("_", "-")}="{v}"' for k, v in attrs.items())
    return "".join(f'<polyline fill="none" points="{" ".join(p)}" {extra}/>' for p in segments)


def _last_label(values: np.ndarray, y_of: Any, text: str, colour: str) -> str:
    """The name of a line at the right end of the plot, at its last value."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return ""
    return (
        f'<text x="{_LEFT + _PLOT + 2}" y="{y_of(float(finite[-1])) + 3:.1f}" fill="{colour}" '
        f'style="fill:{colour}">{text}</text>'
    )


def performance_svg(model: str, metric: str, series: _Series) -> str:
    """One watched metric against its rule: the rolling value, the baseline and the limit, triggers marked."""
    value, baseline, limit = (np.frombuffer(c, dtype=np.float64) for c in series.rules[metric])
    columns = _columns(len(series.ends))
    width = _PLOT / len(columns)
    finite = np.concatenate([v[np.isfinite(v)] for v in (value, baseline, limit)])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    pad = (hi - lo) * 0.1 or 0.01
    lo, hi = lo - pad, hi + pad
    top, bottom = _TOP, _TOP + _PERF_HEIGHT

    def y_of(v: float) -> float:
        return bottom - (v - lo) / (hi - lo) * _PERF_HEIGHT

    parts = [
        '<svg xmlns="http://www.w3.org/2000/svg" role="img" class="performance" '
        f'data-model="{html.escape(model)}" '
        f'data-metric="{html.escape(metric)}" aria-label="{html.escape(metric)} against its rule, model '
        f'{html.escape(model)}" width="{_LEFT + _PLOT + 50}" height="{bottom + 26}">',
        f'<rect x="{_LEFT}" y="{top}" width="{_PLOT}" height="{_PERF_HEIGHT}" fill="#fafafa" stroke="#ddd"/>',
        f'<text x="{_LEFT - 6}" y="{top + 10}" text-anchor="end">{hi:.3g}</text>',
        f'<text x="{_LEFT - 6}" y="{bottom}" text-anchor="end">{lo:.3g}</text>',
        f'<text x="{_LEFT - 6}" y="{(top + bottom) / 2:.0f}" text-anchor="end">{html.escape(metric)}</text>',
        _polyline(
            baseline, columns, width, y_of, stroke="#4c78a8", stroke_dasharray="6,3", class_="baseline"
        ),
        _polyline(limit, columns, width, y_of, stroke="#c0392b", stroke_dasharray="2,2", class_="limit"),
        _polyline(value, columns, width, y_of, stroke="#222", stroke_width="1.5", class_="rolling"),
        _last_label(baseline, y_of, "baseline", "#4c78a8"),
        _last_label(limit, y_of, "limit", "#c0392b"),
        _flags(_trigger_columns(series, columns), width, top, bottom),
        _axis(series, columns, width, bottom + 2),
        "</svg>",
    ]
    return "".join(parts)


def _model_section(model: str, series: _Series) -> str:
    n = len(series.ends)
    if n == 0:
        return (
            f'<section id="model-{html.escape(model)}"><h2>Model {html.escape(model)}</h2>'
            '<p class="note">No window closed (no events, or the reference is still warming up).</p>'
            "</section>"
        )
    span = f"{_utc(series.ends[0])} → {_utc(series.ends[-1])}"
    merged = f" (about {math.ceil(n / MAX_COLUMNS)} windows per column)" if n > MAX_COLUMNS else ""
    legend = "".join(
        f'<span style="background:{_psi_colour(ratio)}"></span>{label}'
        for ratio, label in (
            (0.0, "0 (white)"),
            (0.5, "half the alarm"),
            (1.0, "the alarm"),
            (2.0, "≥ twice"),
        )
    )
    perf = "".join(
        f"<h4>{html.escape(metric)}: rolling (black), baseline (blue, dashed), limit (red, dotted)</h4>"
        + performance_svg(model, metric, series)
        for metric in series.rules
    ) or (
        '<p class="note">No performance rule applied: too few joined labels in the rolling window, or no '
        "baseline (a reference without labels learns one from the first full rolling window).</p>"
    )
    rows = "".join(
        f"<tr><td>{html.escape(_utc(t.event_time))}</td><td>{html.escape(t.kind)}</td>"
        f"<td>{html.escape(t.severity)}</td><td>{html.escape(t.recommendation.action)}</td>"
        f"<td>{html.escape(', '.join(sorted({str(r.feature or r.statistic) for r in t.reasons})))}</td>"
        f"<td><code>{html.escape(t.trigger_id)}</code></td>"
        f"<td>{html.escape(', '.join(t.escalation or ()))}"
        + (f" (supersedes <code>{html.escape(t.supersedes[:8])}</code>)" if t.supersedes else "")
        + "</td></tr>"
        for t in series.triggers
    )
    triggers = (
        "<table><tr><th>event time</th><th>kind</th><th>severity</th><th>action</th><th>on</th>"
        f"<th>trigger id</th><th>escalation</th></tr>{rows}</table>"
        if rows
        else '<p class="note">No triggers.</p>'
    )
    lab = series.labels
    labels = (
        f"<p>Labels at the last window: {lab.get('joined_total', 0):,.0f} joined, "
        f"{lab.get('pending', 0):,.0f} pending, {lab.get('expired', 0):,.0f} predictions expired unlabelled, "
        f"{lab.get('orphan', 0):,.0f} orphan labels.</p>"
        if lab
        else ""
    )
    return (
        f'<section id="model-{html.escape(model)}"><h2>Model {html.escape(model)}</h2>'
        f"<p>{n:,} windows, {span}{merged}; {len(series.triggers)} triggers (flags above the charts).</p>"
        f"<h3>PSI per feature and window</h3>{psi_heatmap_svg(model, series)}"
        f'<p class="legend">PSI against its alarm:{legend}</p>'
        f"<h3>Performance against its rule</h3>{perf}"
        f"<h3>Triggers</h3>{triggers}{labels}</section>"
    )


def render_report(series: Mapping[str, _Series], title: str, generated_at: float) -> str:
    """The whole page (pure: the collected series in, HTML out)."""
    sections = "".join(_model_section(m, s) for m, s in series.items())
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f'<p class="note">Generated {html.escape(_utc(generated_at))}. Data: windows.csv, detectors.csv, '
        "performance.csv, triggers.csv, windows.jsonl, triggers.jsonl next to this page.</p>"
        f"{sections}</body></html>"
    )
