"""The status page served at ``/`` on the metrics port: one small, self-contained HTML page.

Per model: readiness and volume, current drift per feature (PSI, KS, JS, drift flag) of the last
closed window, performance against the training baseline, the recent triggers with their reasons and
recommendations, the data-DNA heatmap (inline SVG: no image files, no JavaScript, no external
assets), the regimes, integrity incidents and segments needing attention.

:func:`render_status` is pure (data in, bytes out); :class:`StatusPage` is the ``extra_routes``
callable of :func:`stream_monitor.web.server.serve_http`. In the Kafka service the page never reads the
engine: the consume loop calls :meth:`StatusPage.publish` after each batch, which copies what the page
and the insight gauges show into an immutable :class:`PublishedStatus`, swapped in with one assignment;
the HTTP threads render that copy (``published_only``). Without a publisher (``demo``, tests) the page
reads the monitors when it is requested.

>>> html = render_status([ModelView("bikes", ready=True, events=10)], generated_at=0.0).decode()
>>> "<h2" in html and "bikes" in html and "1970-01-01" in html
True
"""

from __future__ import annotations

import html
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from stream_monitor.core.detectors.table import spec_of, window_detectors

if TYPE_CHECKING:  # types only: the page needs neither scipy (dna) nor the trigger builder at import
    from stream_monitor.core.insights.dna import DataDNA
    from stream_monitor.core.triggers import ModelVersionChanged, Trigger

REGIME_COLOURS = {
    "normal": "#4c78a8",
    "recurring": "#f58518",
    "trend": "#b279a2",
    "one_off": "#54a24b",
    "emerging": "#e45756",
    "incident": "#222222",
}


@dataclass
class ModelView:
    """What the page shows about one model (plain data, so rendering is pure)."""

    model_id: str
    version: str | None = None
    ready: bool = False
    events: int = 0
    window: dict[str, Any] | None = None  # start, end, events
    # feature, drift, and the value of each detector with a status column (psi, ks, js…)
    features: list[dict[str, Any]] = field(default_factory=list)
    performance: list[dict[str, Any]] = field(default_factory=list)  # metric, value, baseline
    triggers: list[Trigger] = field(default_factory=list)
    # Versions that started (lifecycle records), oldest first: the page's version timeline.
    version_changes: list[ModelVersionChanged] = field(default_factory=list)
    dna: DataDNA | None = None
    current_regime: str | None = None
    incidents: list[dict[str, Any]] = field(default_factory=list)
    segments: list[dict[str, Any]] = field(default_factory=list)
    surges: list[dict[str, Any]] = field(default_factory=list)


def _iso(ts: float | None) -> str:
    if ts is None or not math.isfinite(ts):
        return "–"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else html.escape(str(v))


def dna_svg(dna: DataDNA, cell: int = 12) -> str:
    """The DNA matrix as an SVG heatmap: darker = more different; a regime colour strip on top.

    >>> from stream_monitor.core.insights.dna import data_dna
    >>> svg = dna_svg(data_dna(np.ones((2, 1, 3)), np.ones(1)))
    >>> svg.startswith("<svg") and svg.count("<rect") >= 4
    True
    """
    n = len(dna.bucket_ids)
    if n == 0:
        return "<p>No closed buckets yet.</p>"
    pad_left, pad_top = 80, 24
    size = n * cell
    finite = dna.matrix[np.isfinite(dna.matrix)]
    top = max(float(finite.max()) if finite.size else 0.0, dna.cut * 2, 1e-9)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="data DNA heatmap" '
        f'width="{pad_left + size + 10}" height="{pad_top + size + 10}" class="dna">'
    ]
    for j in range(n):
        kind = dna.kind_of(int(dna.bucket_ids[j]))
        colour = REGIME_COLOURS.get(kind, "#999")
        parts.append(
            f'<rect x="{pad_left + j * cell}" y="4" width="{cell}" height="14" fill="{colour}">'
            f"<title>{html.escape(_label(dna, j))}: {kind}</title></rect>"
        )
    for i in range(n):
        if i % max(1, n // 12) == 0:
            parts.append(
                f'<text x="{pad_left - 4}" y="{pad_top + i * cell + cell - 2}" font-size="9" '
                f'text-anchor="end">{html.escape(_label(dna, i))}</text>'
            )
        for j in range(n):
            v = float(dna.matrix[i, j]) if np.isfinite(dna.matrix[i, j]) else 0.0
            shade = int(255 - 235 * min(v / top, 1.0))
            parts.append(
                f'<rect x="{pad_left + j * cell}" y="{pad_top + i * cell}" width="{cell}" height="{cell}" '
                f'fill="rgb({shade},{shade},255)"><title>{html.escape(_label(dna, i))} vs '
                f"{html.escape(_label(dna, j))}: {dna.metric} {v:.3f}</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _label(dna: DataDNA, i: int) -> str:
    return dna.labels[i] if i < len(dna.labels) else str(int(dna.bucket_ids[i]))


def _trigger_html(t: Trigger) -> str:
    rec = t.recommendation
    reasons = "".join(
        f"<li>{html.escape(r.detector)} on {html.escape(str(r.feature or r.statistic))}: "
        f"{_num(r.value)} (threshold {_num(r.threshold)})</li>"
        for r in t.reasons[:8]
    )
    train = ", ".join(
        f"{_iso(p.start)[:10]} → {_iso(p.end)[:10]}{'' if p.buckets is None else f' ({p.buckets} buckets)'}"
        for p in (rec.train_on or ())[:5]
    )
    exclude = "".join(
        f"<li>{_iso(p.start)[:10]} → {_iso(p.end)[:10]}: {html.escape(p.reason)}"
        f"{(' — ' + html.escape(p.detail)) if p.detail else ''}</li>"
        for p in (rec.exclude or ())[:8]
    )
    segments = ", ".join(html.escape(s) for s in rec.segments_needing_attention) or "none"
    label_line = ""
    if rec.labels is not None:
        outlook = rec.labels
        when = "now" if outlook.enough else (_iso(outlook.ready_at) if outlook.ready_at else "unknown")
        label_line = (
            f"<p>New labels: {_num(outlook.new_labels, 0)} of {outlook.needed} needed; "
            f"enough labels for a retrain: {when}.</p>"
        )
    return (
        f'<div class="trigger {html.escape(t.severity)}"><h4>{html.escape(t.kind)} · '
        f"{html.escape(t.severity)} · event time {_iso(t.event_time)}</h4>"
        f'<p>Recommendation: <b class="action">{html.escape(rec.action)}</b></p>'
        f'<ul class="reasons">{reasons}</ul>'
        f"<p>Train on: {train or 'the windows since the drift started'}</p>"
        + (f"<p>Exclude:</p><ul>{exclude}</ul>" if exclude else "")
        + f"<p>Segments needing attention: {segments}</p>{label_line}</div>"
    )


def _incident_reason(incident: Mapping[str, Any]) -> str:
    return ", ".join(
        r["check"] + (":" + r["feature"] if r.get("feature") else "") for r in incident["reasons"]
    )


def _model_html(m: ModelView) -> str:
    out = [
        f'<section class="model" id="model-{html.escape(m.model_id)}"><h2>Model {html.escape(m.model_id)}'
        f"{(' · version ' + html.escape(m.version)) if m.version else ''}</h2>",
        f"<p>Status: <b>{'detecting' if m.ready else 'warming up its reference'}</b> · "
        f"{m.events:,} events"
        + (
            f" · last window {_iso(m.window['start'])} → {_iso(m.window['end'])} "
            f"({m.window['events']:,} events)"
            if m.window
            else ""
        )
        + (f" · current regime: <b>{html.escape(m.current_regime)}</b>" if m.current_regime else "")
        + "</p>",
    ]
    if m.features:
        columns = [(spec.name, spec.status) for spec in window_detectors() if spec.status is not None]
        rows = "".join(
            f'<tr class="{"drift" if f.get("drift") else "ok"}"><td>{html.escape(f["feature"])}</td>'
            + "".join(f"<td>{_num(f.get(name), column.digits)}</td>" for name, column in columns)
            + f"<td>{'DRIFT' if f.get('drift') else 'ok'}</td></tr>"
            for f in m.features
        )
        heads = "".join(f"<th>{html.escape(column.title)}</th>" for _, column in columns)
        out.append(
            '<h3>Drift per feature (last window)</h3><table class="features"><tr><th>feature</th>'
            f"{heads}<th>status</th></tr>{rows}</table>"
        )
    if m.performance:
        rows = "".join(
            f"<tr><td>{html.escape(p['metric'])}</td><td>{_num(p.get('value'))}</td>"
            f"<td>{_num(p.get('baseline'))}</td></tr>"
            for p in m.performance
        )
        out.append(
            '<h3>Performance vs baseline</h3><table class="performance"><tr><th>metric</th><th>now</th>'
            f"<th>baseline</th></tr>{rows}</table>"
        )
    if m.version_changes:
        items = "".join(
            f"<li>{_iso(c.event_time)}: version <b>{html.escape(str(c.model_version))}</b> started"
            + (f" after {html.escape(str(c.previous_version))}" if c.previous_version is not None else "")
            + f"; judged against the {html.escape(c.reference.source)} reference"
            + (f" of version {html.escape(c.reference.version)}" if c.reference.version is not None else "")
            + (
                f"; retired {html.escape(', '.join(str(v) for v in c.retired_versions))}"
                if c.retired_versions
                else ""
            )
            + "</li>"
            for c in m.version_changes
        )
        out.append(f'<h3>Versions</h3><ul class="versions">{items}</ul>')
    out.append("<h3>Recent triggers</h3>")
    if m.triggers:
        out.extend(_trigger_html(t) for t in list(m.triggers)[-5:][::-1])
    else:
        out.append("<p>No triggers.</p>")
    if m.dna is not None:
        legend = " ".join(
            f'<span style="color:{REGIME_COLOURS.get(r.kind, "#999")}">■</span> regime {r.id}: {r.kind} '
            f"({len(r.buckets)} buckets{', every ' + format(r.period, 'g') + ' buckets' if r.period else ''})"
            for r in m.dna.regimes
        )
        out.append(
            f"<h3>Data DNA ({len(m.dna.bucket_ids)} buckets, {m.dna.metric.upper()}, "
            f"regime cut {m.dna.cut:.3g}{' from the noise' if m.dna.cut_source == 'noise' else ''})</h3>"
            f'<div class="dna-wrap">{dna_svg(m.dna)}</div><p class="regimes">{legend}</p>'
        )
    if m.incidents:
        items = "".join(
            f"<li>{_iso(i['start'])[:10]}: {html.escape(_incident_reason(i))}</li>" for i in m.incidents[-10:]
        )
        out.append(
            f'<h3>Integrity incidents (excluded from retraining)</h3><ul class="incidents">{items}</ul>'
        )
    if m.segments:
        rows = "".join(
            f"<tr><td>{html.escape(s['segment'])}</td><td>{_num(s.get('share'))}</td><td>{_num(s.get('drift'))}</td>"
            f"<td>{html.escape(str(s.get('top_feature') or '—'))}</td></tr>"
            for s in m.segments[:20]
        )
        out.append(
            '<h3>Segments</h3><table class="segments"><tr><th>segment</th><th>share</th><th>drift (PSI)</th>'
            f"<th>top feature</th></tr>{rows}</table>"
        )
    if m.surges:
        items = "".join(
            f"<li>{html.escape(s['segment'])}: share {_num(s['share'])} (was {_num(s['baseline_share'])}), "
            f"{'drift' if s['drift'] else 'no drift'}</li>"
            for s in list(m.surges)[-5:]
        )
        out.append(f"<h3>Segment surges</h3><ul>{items}</ul>")
    out.append("</section>")
    return "".join(out)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}
td:first-child,th:first-child{text-align:left}tr.drift td{background:#fde0dc}
.trigger{border-left:4px solid #f58518;padding:.2rem .8rem;margin:.5rem 0;background:#fafafa}
.trigger.critical{border-color:#e45756}.model{border-top:2px solid #4c78a8;margin-top:1.5rem}
.dna-wrap{overflow-x:auto}
"""


def _dead_letters_html(rejections: Mapping[str, float] | None) -> str:
    if rejections is None:
        return ""
    total = sum(rejections.values())
    if not total:
        return "<h2>Dead letters</h2><p>No message rejected.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(reason)}</td><td>{int(n):,}</td></tr>"
        for reason, n in sorted(rejections.items(), key=lambda kv: (-kv[1], kv[0]))
        if n
    )
    return (
        f"<h2>Dead letters ({int(total):,})</h2>"
        f'<table class="dead-letters"><tr><th>reason</th><th>messages</th></tr>{rows}</table>'
    )


def render_status(
    models: Sequence[ModelView],
    generated_at: float,
    title: str = "stream-monitor",
    rejections: Mapping[str, float] | None = None,
) -> bytes:
    """The whole page for the given models (and the dead-letter counts by reason, when given)."""
    body = _dead_letters_html(rejections) + (
        "".join(_model_html(m) for m in models)
        or "<p>No model is judged on this member (yet): with aggregation.mode two_stage, a model's "
        "judgement is on the member that owns its stage (see <code>/state</code>, "
        "<code>model_stage</code>).</p>"
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} status</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)} status</h1>"
        f'<p class="generated">Generated {_iso(generated_at)} UTC · '
        f'<a href="/metrics">/metrics</a> · <a href="/readyz">/readyz</a></p>{body}</body></html>'
    ).encode()


def _window_view(ev: Any) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The window line, the drift table and the performance table of one window evaluation."""
    window = {"start": ev.start, "end": ev.end, "events": ev.events}
    feats: dict[str, dict[str, Any]] = {}
    for r in ev.results:
        spec = spec_of(r.detector)
        if r.feature is None or spec is None or not (spec.status or spec.flags_drift):
            continue
        row = feats.setdefault(r.feature, {"feature": r.feature, "drift": False})
        row[r.detector] = r.value
        row["drift"] = row["drift"] or (r.drift and spec.flags_drift)
    performance = [
        {"metric": k, "value": v, "baseline": ev.baseline.get(k)}
        for k, v in ev.performance.items()
        if k != "n" and k in ev.baseline
    ]
    return window, list(feats.values()), performance


def model_view(
    monitor: Any,
    triggers: Iterable[Trigger] = (),
    window: tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]] | None = None,
    changes: Iterable[ModelVersionChanged] = (),
) -> ModelView:
    """A :class:`ModelView` of a :class:`stream_monitor.core.monitor.ModelMonitor` (read-only; ``window``:
    :func:`_window_view` of its ``last_evaluation``, when the caller already has it)."""
    view = ModelView(
        monitor.schema.model_id,
        version=monitor.model_version,
        ready=bool(monitor.ready),
        events=int(monitor.events_total),
        triggers=list(triggers),
        version_changes=list(changes),
    )
    ev = monitor.last_evaluation
    if ev is not None:
        view.window, view.features, view.performance = window if window is not None else _window_view(ev)
    insights = getattr(monitor, "insights", None)
    if insights is not None:
        view.dna = insights.latest_dna
        view.current_regime = insights.current_regime[1]
        view.incidents = [i.to_dict() for i in insights.incidents]
        view.segments = [r.to_dict() for r in insights.segments.latest()]
        view.surges = list(insights.surges)
    return view


@dataclass(frozen=True)
class InsightFigures:
    """What the insight gauges read from a model's tracker, copied by the thread that owns the tracker.

    Shaped like the part of :class:`~stream_monitor.core.insights.tracker.InsightTracker` that
    :class:`~stream_monitor.web.insights_exporter.InsightsCollector` reads — ``current_regime``, and the
    ``len()`` of ``buckets``, ``incidents``, ``segments.needing_attention()`` and ``surges`` (kept as
    ``range`` objects: counts without copies) — so the collector serves a published copy unchanged.
    """

    current_regime: tuple[int, str]
    buckets: range
    incidents: range
    surges: range
    attention: range

    @classmethod
    def of(cls, tracker: Any) -> InsightFigures:
        return cls(
            tuple(tracker.current_regime),
            range(len(tracker.buckets)),
            range(len(tracker.incidents)),
            range(len(tracker.surges)),
            range(len(tracker.segments.needing_attention())),
        )

    @property
    def segments(self) -> InsightFigures:
        return self

    def needing_attention(self) -> range:
        return self.attention


@dataclass(frozen=True)
class PublishedModel:
    """One model as the consume loop last published it (``insights``: for the insight gauges)."""

    view: ModelView
    insights: InsightFigures | None = None


@dataclass(frozen=True)
class PublishedStatus:
    """Everything ``/`` and the insight gauges show, as of one moment of the consume loop.

    Built by :meth:`StatusPage.publish` from objects made for it (the views, their lists and dicts are
    never touched again by the loop), and replaced whole: a reader holds either the old or the new.
    """

    models: tuple[PublishedModel, ...] = ()

    def monitors(self) -> dict[str, PublishedModel]:
        """``{model_id: PublishedModel}``: what :class:`InsightsCollector` reads instead of monitors."""
        return {m.view.model_id: m for m in self.models}


class StatusPage:
    """The ``/`` route.

    ``monitors`` returns the current ``{model_id: ModelMonitor}``; call :meth:`record` with each trigger
    (the last ``keep`` per model are shown). ``clock`` is only used for the "generated" line.

    With ``published_only`` the page renders only what :meth:`publish` (called on the thread that runs
    the engine) last published, so a request never reads live engine state; before the first
    publication it shows no model. Without it, each request reads ``monitors()`` (a front end that
    runs its engine on the request's thread, or does not mind the race: ``demo``, tests).
    """

    def __init__(
        self,
        monitors: Callable[[], Mapping[str, Any]],
        keep: int = 20,
        clock: Callable[[], float] = time.time,
        rejections: Callable[[], Mapping[str, float]] | None = None,
        *,
        published_only: bool = False,
    ) -> None:
        self.monitors = monitors
        self.rejections = rejections
        self.clock = clock
        self.published_only = published_only
        self._triggers: dict[str, deque[Trigger]] = {}
        self._changes: dict[str, deque[ModelVersionChanged]] = {}
        self._keep = keep
        self._published = PublishedStatus()
        # Per model: the last window evaluation and its tables, so a publication after a batch that
        # closed no window reuses them instead of walking every detector result again.
        self._windows: dict[str, tuple[Any, Any]] = {}

    def record(self, trigger: Trigger) -> None:
        """Remember an emitted trigger for its model's "Recent triggers"."""
        self._triggers.setdefault(trigger.model_id, deque(maxlen=self._keep)).append(trigger)

    def record_change(self, change: ModelVersionChanged) -> None:
        """Remember a version that started, for its model's version timeline."""
        self._changes.setdefault(change.model_id, deque(maxlen=self._keep)).append(change)

    @property
    def published(self) -> PublishedStatus:
        """The last publication (empty before the first)."""
        return self._published

    def publish(self) -> PublishedStatus:
        """Copy what the page and the insight gauges show out of ``monitors()`` and swap it in.

        Call it on the thread that runs the engine, between batches (never from a request): it reads
        the monitors (and lets an insight tracker compute a DNA that became due), the HTTP threads then
        read only the result. Cost: a few µs per model when no window closed since the last call.
        """
        models = []
        for model_id, monitor in sorted(dict(self.monitors()).items()):
            triggers = tuple(self._triggers.get(model_id, ()))
            try:
                ev = monitor.last_evaluation
                cached = self._windows.get(model_id)
                if ev is None:
                    window = None
                elif cached is not None and cached[0] is ev:
                    window = cached[1]
                else:
                    window = _window_view(ev)
                    self._windows[model_id] = (ev, window)
                view = model_view(monitor, triggers, window, tuple(self._changes.get(model_id, ())))
                tracker = getattr(monitor, "insights", None)
                figures = None if tracker is None else InsightFigures.of(tracker)
            except Exception as exc:  # never stop the loop for the page
                view, figures = ModelView(model_id, version=f"(not published: {type(exc).__name__})"), None
            models.append(PublishedModel(view, figures))
        published = PublishedStatus(tuple(models))
        self._published = published  # one assignment: a request sees the old copy or the new one
        return published

    def __call__(self) -> tuple[int, str, bytes]:
        if self.published_only:
            views = [m.view for m in self._published.models]
        else:
            views = []
            for model_id, monitor in sorted(dict(self.monitors()).items()):
                try:
                    views.append(
                        model_view(
                            monitor, self._triggers.get(model_id, ()), None, self._changes.get(model_id, ())
                        )
                    )
                except Exception as exc:
                    views.append(ModelView(model_id, version=f"(state changing: {type(exc).__name__})"))
        rejections = None if self.rejections is None else self.rejections()
        return 200, "text/html; charset=utf-8", render_status(views, self.clock(), rejections=rejections)
