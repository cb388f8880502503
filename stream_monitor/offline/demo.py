"""``stream-monitor demo``: seed 003's bike-sharing story through the real pipeline, metrics served.

The bikes model gets its reference from its training fortnight (with labels, so it has a baseline
MAE); the churn control model warms its reference up from its first live events. Predictions and
delayed labels are merged by event time and fed in batches to the same engine the Kafka service uses.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

from stream_monitor.config import demo_config_path, load_config
from stream_monitor.core.engine import EngineOutput
from stream_monitor.core.events import decode_predictions
from stream_monitor.core.reference import build_reference
from stream_monitor.core.triggers import Trigger
from stream_monitor.offline.demo_data import DAY, BikeStory, churn_events
from stream_monitor.offline.replay import label_heap, replay, write_triggers


def _batches(lines: list[tuple[float, bytes]], size: int) -> Iterator[list[bytes]]:
    for i in range(0, len(lines), size):
        yield [raw for _, raw in lines[i : i + size]]


class DetectionLog:
    """First time (event time) each detector fired, per model, for the closing table."""

    def __init__(self) -> None:
        self.first: dict[tuple[str, str], float] = {}
        self.triggers: list[Trigger] = []  # as emitted

    def _mark(self, model: str, what: str, ts: float) -> None:
        self.first.setdefault((model, what), ts)

    def observe(self, out: EngineOutput, stream: str) -> None:
        for model, o in out.per_model.items():
            for ev in o.evaluations:
                for r in ev.results:
                    if r.drift and r.feature is not None:
                        self._mark(model, f"{r.detector} on {r.feature}", ev.end)
                    elif r.drift:
                        self._mark(model, r.detector, ev.end)
                if o.score_drift:
                    self._mark(model, "adwin on prediction score", ev.end)


def run_demo(
    port: int = 9108,
    host: str = "127.0.0.1",
    stations: int = 200,
    days: int = 40,
    out: str | None = None,
    linger: float = 0.0,
    insights_dir: str | None = None,
) -> int:
    from stream_monitor.app import build_engine, start_observability

    app = load_config(demo_config_path(), env={})
    schemas = app.schemas()
    story = BikeStory(stations=stations, days=days)
    print(
        f"stream-monitor demo: bike-sharing demand model, {stations} stations × 24 h × {days} days; "
        f"warming starts on day {story.drift_day} ({time.strftime('%Y-%m-%d', time.gmtime(story.drift_ts))})"
    )

    train, train_labels = story.training()
    batches, _ = decode_predictions([orjson.dumps(e) for e in train], schemas)
    bikes_cfg = next(m for m in app.models if m.schema.model_id == "bikes")
    d = bikes_cfg.settings.detectors
    reference = build_reference(
        schemas["bikes"],
        batches["bikes"],
        np.array([lab["label"] for lab in train_labels]),
        bins=d.bins,
        top_k=d.top_k,
        sample_size=d.reference_sample,
    )
    print(
        f"reference for bikes from {reference.n_events} training events; baseline "
        + ", ".join(f"{k}={v:.2f}" for k, v in sorted(reference.baseline.items()))
    )
    refs: dict[str, Any] = {m.schema.model_id: None for m in app.models}
    refs["bikes"] = reference
    engine = build_engine(app, refs)

    observability = start_observability(app, lambda: engine.judging_monitors, host=host, port=port)
    metrics, status, server = observability.metrics, observability.status_page, observability.server
    observability.health.ready = True
    print(f"metrics: http://{host}:{observability.port}/metrics, status page: /")

    events, labels = story.production()
    start = min(e["ts"] for e in events)
    churn_n = len(events) // 4
    churn = list(churn_events(churn_n, start_ts=start, span=(days - story.training_days) * DAY))
    predictions = sorted(
        [(e["ts"], orjson.dumps(e)) for e in events] + [(c["ts"], orjson.dumps(c)) for c, _ in churn],
        key=lambda x: x[0],
    )
    label_lines = [orjson.dumps(lab) for lab in labels] + [orjson.dumps(lab) for _, lab in churn]

    log = DetectionLog()
    last_day = [-1]

    def on_output(o: EngineOutput, stream: str) -> None:
        metrics.observe(o, stream)
        metrics.set_label_buffers(engine.label_buffers())
        log.observe(o, stream)
        emitted_at = time.time()
        for decided in o.triggers:
            t = decided.with_emitted_at(emitted_at)
            log.triggers.append(t)
            status.record(t)
            day = (t.event_time - story.drift_ts) / DAY
            print(
                f"  TRIGGER {t.model_id:<6} {t.kind:<16} {t.severity:<8} "
                f"day {day:+.1f} from drift start -> {t.recommendation.action}"
            )
        day_now = int((engine.watermark - start) // DAY)
        if day_now > last_day[0]:
            last_day[0] = day_now
            print(
                f"  day {day_now + story.training_days:>3}: {engine.monitors['bikes'].events_total:>8} "
                f"bikes events",
                flush=True,
            )

    summary = replay(
        engine,
        _batches(predictions, 2000),
        label_heap(label_lines),
        on_output=on_output,
        wall_now=time.time(),
    )
    print(
        f"\nprocessed {summary.events} events and {summary.labels} labels in {summary.seconds:.1f}s "
        f"({summary.events / max(summary.seconds, 1e-9):,.0f} events/s), {summary.windows} windows"
    )
    print(
        f"\nwhen each detector first fired, relative to the true drift start "
        f"(day {story.drift_day}; the churn model is a stationary control and should stay quiet):"
    )
    for (model, what), ts in sorted(log.first.items(), key=lambda kv: kv[1]):
        rel = (ts - story.drift_ts) / DAY
        verdict = "" if model != "bikes" or rel >= 0 else "  <- before the drift"
        print(f"  {model:<6} {what:<40} day {rel:+6.1f}{verdict}")
    bikes_triggers = [t for t in log.triggers if t.model_id == "bikes"]
    churn_triggers = [t for t in log.triggers if t.model_id == "churn"]
    print(f"\ntriggers: bikes {len(bikes_triggers)}, churn (control) {len(churn_triggers)}")
    if bikes_triggers:
        first = bikes_triggers[0]
        print("first bikes trigger:\n" + orjson.dumps(first.to_dict(), option=orjson.OPT_INDENT_2).decode())
    if out:
        with open(out, "wb") as f:
            write_triggers(f, log.triggers)
    if insights_dir:
        from stream_monitor.offline.insights_store import save_all_insights

        save_all_insights(engine, insights_dir)
    if linger > 0:
        print(f"serving metrics for {linger:.0f}s more…", file=sys.stderr)
        time.sleep(linger)
    server.shutdown()
    return 0
