"""Prometheus gauges of the insight state, computed at scrape time (the ``gc_collector`` pattern).

- ``stream_monitor_regime{model, kind}``: 1 for the kind of the regime the latest bucket belongs to
  (``normal``, ``recurring``, ``trend``, ``one_off``, ``emerging``, ``incident``, ``unknown``), 0 for
  the others;
- ``stream_monitor_regime_id{model}``: that regime's id in the data DNA (-1: incident or unknown);
- ``stream_monitor_time_buckets{model}``, ``stream_monitor_incident_buckets{model}``,
  ``stream_monitor_segments_needing_attention{model}``, ``stream_monitor_segment_surges{model}``.

Label values come only from the configuration (model ids) and the fixed set of regime kinds.

>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> _ = InsightsCollector(lambda: {}, registry=registry)
>>> registry.get_sample_value("stream_monitor_regime", {"model": "m", "kind": "normal"}) is None
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from stream_monitor.core.insights.tracker import REGIME_KINDS


class InsightsCollector(Collector):
    """Reads ``monitors()`` (``{model_id: ModelMonitor}``) at every scrape."""

    def __init__(
        self, monitors: Callable[[], Mapping[str, Any]], registry: CollectorRegistry | None = None
    ) -> None:
        self.monitors = monitors
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        p = "stream_monitor_"
        regime = GaugeMetricFamily(
            p + "regime", "1 for the regime kind of the latest time bucket", labels=["model", "kind"]
        )
        regime_id = GaugeMetricFamily(
            p + "regime_id", "Data-DNA regime id of the latest bucket", labels=["model"]
        )
        buckets = GaugeMetricFamily(p + "time_buckets", "Time buckets with a profile", labels=["model"])
        incidents = GaugeMetricFamily(
            p + "incident_buckets", "Closed buckets that are incidents", labels=["model"]
        )
        attention = GaugeMetricFamily(
            p + "segments_needing_attention", "Segments whose drift reaches the alarm", labels=["model"]
        )
        surges = GaugeMetricFamily(p + "segment_surges", "Segment surges checked (recent)", labels=["model"])
        for model, monitor in sorted(dict(self.monitors()).items()):
            tracker = getattr(monitor, "insights", None)
            if tracker is None:
                continue
            rid, kind = tracker.current_regime
            for k in REGIME_KINDS:
                regime.add_metric([model, k], 1.0 if k == kind else 0.0)
            regime_id.add_metric([model], float(rid))
            buckets.add_metric([model], float(len(tracker.buckets)))
            incidents.add_metric([model], float(len(tracker.incidents)))
            attention.add_metric([model], float(len(tracker.segments.needing_attention())))
            surges.add_metric([model], float(len(tracker.surges)))
        yield from (regime, regime_id, buckets, incidents, attention, surges)
