"""Prometheus families of the contract, fed from engine outputs; plus the HTTP endpoint.

Every family takes an injected ``registry`` so tests use a fresh ``CollectorRegistry``. Label values
come only from the configuration (models, features, fixed metric names) and the fixed reason codes:
an event naming a model or feature we do not know adds no series. Gauges are set once per closed
window, from cached children, never per event.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from stream_monitor.events import Rejection
from stream_monitor.pipeline import EngineOutput
from stream_monitor.policy import WindowEvaluation
from stream_monitor.schema import ModelSchema

PERFORMANCE_METRICS = (
    "auc",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "macro_f1",
    "mae",
    "rmse",
    "mean_error",
)
TRIGGER_KINDS = ("data_drift", "prediction_drift", "performance", "integrity", "combined")
SEVERITIES = ("warning", "critical")
PREDICTION = "__prediction__"


def bounded_reason(reason: str, schemas: Mapping[str, ModelSchema]) -> str:
    """Map a rejection reason to a label value from a bounded set (features come from the config).

    >>> from stream_monitor.schema import FeatureSpec, ModelSchema
    >>> s = {"m": ModelSchema("m", "binary", (FeatureSpec("age", "numeric"),))}
    >>> bounded_reason("bad_type:features.age", s), bounded_reason("bad_type:features.zzz", s)
    ('bad_type:features.age', 'bad_type:features.other')
    """
    head, _, field = reason.partition(":")
    if not field.startswith("features."):
        return reason
    name = field.removeprefix("features.")
    known = any(s.feature(name) is not None for s in schemas.values())
    return reason if known else f"{head}:features.other"


class ServiceMetrics:
    """All stream-monitor metric families, registered on ``registry``."""

    def __init__(self, schemas: Mapping[str, ModelSchema], registry: CollectorRegistry | None = None) -> None:
        self.schemas = dict(schemas)
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        p = "stream_monitor_"
        self.events = Counter(
            p + "events_processed", "Valid events processed", ["model", "stream"], registry=r
        )
        self.rejected = Counter(
            p + "events_rejected", "Messages rejected to the dead-letter topic", ["reason"], registry=r
        )
        self.unknown_features = Counter(
            p + "unknown_features", "Event features not in the model's schema", ["model"], registry=r
        )
        self.windows = Counter(p + "windows_closed", "Windows evaluated", ["model"], registry=r)
        self.late = Counter(
            p + "late_events",
            "Events beyond the allowed lateness of event-time windows",
            ["model"],
            registry=r,
        )
        self.psi = Gauge(
            p + "feature_psi",
            "Population stability index of the last window",
            ["model", "feature"],
            registry=r,
        )
        self.ks = Gauge(
            p + "feature_ks_statistic",
            "KS statistic vs the reference sample",
            ["model", "feature"],
            registry=r,
        )
        self.ks_p = Gauge(
            p + "feature_ks_pvalue",
            "KS p-value (Holm-adjusted across the model's tests)",
            ["model", "feature"],
            registry=r,
        )
        self.js = Gauge(
            p + "feature_js_divergence",
            "Jensen-Shannon divergence (base 2)",
            ["model", "feature"],
            registry=r,
        )
        self.drift = Gauge(
            p + "feature_drift_detected",
            "1 when a drift detector fired on the feature",
            ["model", "feature"],
            registry=r,
        )
        self.missing = Gauge(
            p + "feature_missing_rate",
            "Fraction of missing values in the window",
            ["model", "feature"],
            registry=r,
        )
        self.out_of_range = Gauge(
            p + "feature_out_of_range_rate",
            "Fraction outside the reference range",
            ["model", "feature"],
            registry=r,
        )
        self.pred_psi = Gauge(
            p + "prediction_psi", "PSI of the prediction distribution", ["model"], registry=r
        )
        self.pred_drift = Gauge(
            p + "prediction_drift_detected", "1 when prediction drift is detected", ["model"], registry=r
        )
        self.stream_drift = Counter(
            p + "stream_drift_detections",
            "Streaming detector detections",
            ["model", "detector", "signal"],
            registry=r,
        )
        self.volume = Gauge(
            p + "volume_ratio", "Window event rate over the reference rate", ["model"], registry=r
        )
        self.incident = Gauge(
            p + "integrity_incident", "1 when the last window is an integrity incident", ["model"], registry=r
        )
        self.performance = Gauge(
            p + "performance",
            "Rolling performance over the last joined labels",
            ["model", "metric"],
            registry=r,
        )
        self.baseline = Gauge(
            p + "performance_baseline", "Reference (training) performance", ["model", "metric"], registry=r
        )
        self.labels_joined = Counter(
            p + "labels_joined", "Labels joined to predictions", ["model"], registry=r
        )
        self.labels_pending = Gauge(
            p + "labels_pending", "Predictions waiting for a label", ["model"], registry=r
        )
        self.labels_expired = Gauge(
            p + "labels_expired", "Predictions expired before their label (total)", ["model"], registry=r
        )
        self.labels_orphan = Gauge(
            p + "labels_orphan", "Labels without a pending prediction (total)", ["model"], registry=r
        )
        self.label_delay = Gauge(
            p + "label_delay_seconds", "Median label delay of recent joins", ["model"], registry=r
        )
        self.label_rate = Gauge(
            p + "label_arrival_rate", "Labels joined per second (recent)", ["model"], registry=r
        )
        self.triggers = Counter(
            p + "triggers_emitted", "Retrain triggers emitted", ["model", "kind", "severity"], registry=r
        )
        self.last_trigger = Gauge(
            p + "last_trigger_timestamp_seconds", "Event time of the last trigger", ["model"], registry=r
        )
        self.ready = Gauge(
            p + "model_ready", "1 when the model has a reference and is detecting", ["model"], registry=r
        )
        self.latency = Histogram(
            p + "processing_latency_seconds",
            "Time to process one consumed batch",
            ["stream"],
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.lag = Gauge(
            p + "consumer_lag",
            "Messages behind the partition's high watermark",
            ["topic", "partition"],
            registry=r,
        )
        self.checkpoint_age = Gauge(
            p + "checkpoint_age_seconds", "Seconds since the last state checkpoint", registry=r
        )
        self.recovery = Gauge(p + "state_recovery_seconds", "Time the last state restore took", registry=r)
        self.kafka_errors = Counter(p + "kafka_errors", "Kafka client errors", ["kind"], registry=r)
        self.service_ready = Gauge(
            p + "ready", "1 when assigned, restored and lag below the bound", registry=r
        )
        # Static: lets alert rules and dashboards select key features by a join, not a hand-kept list.
        self.feature_info = Gauge(
            p + "feature_info",
            "1 for each configured feature; labels give its kind and whether it is a key feature",
            ["model", "feature", "kind", "key"],
            registry=r,
        )
        for m, s in self.schemas.items():
            for stream in ("predictions", "labels"):
                self.events.labels(m, stream)
            self.triggers_init(m)
            for f in s.numeric_names + s.categorical_names:
                self.drift.labels(m, f).set(0)
            self.pred_drift.labels(m).set(0)
            self.incident.labels(m).set(0)
            self.labels_joined.labels(m)
            self.late.labels(m)
            for spec in s.features:
                self.feature_info.labels(m, spec.name, spec.kind, "true" if spec.key else "false").set(1)

    def triggers_init(self, model: str) -> None:
        for kind in TRIGGER_KINDS:
            for sev in SEVERITIES:
                self.triggers.labels(model, kind, sev)

    def observe(self, out: EngineOutput, stream: str) -> None:
        """Count a batch's events, rejections and triggers; set gauges from its closed windows."""
        for r in out.rejections:
            self.observe_rejection(r)
        for m, n in out.unknown_features.items():
            self.unknown_features.labels(m).inc(n)
        for m, o in out.per_model.items():
            if o.events:
                self.events.labels(m, stream).inc(o.events)
            if o.labels_joined:
                self.labels_joined.labels(m).inc(o.labels_joined)
            if o.late_events:
                self.late.labels(m).inc(o.late_events)
            if o.score_drift:
                self.stream_drift.labels(m, "adwin", "prediction_score").inc()
            if o.error_drift:
                self.stream_drift.labels(m, "adwin", "error").inc()
            for ev in o.evaluations:
                self.observe_window(ev)
            for t in o.triggers:
                self.triggers.labels(m, t["kind"], t["severity"]).inc()
                self.last_trigger.labels(m).set(t["event_time"])

    def set_label_buffers(self, totals: Mapping[str, Mapping[str, int]]) -> None:
        """Set the label-join gauges: per model, the counts summed over every engine of this process.

        Called after every batch (not only when a window closes), with the sums over all of the
        member's partition-tasks, so the gauges equal the sums of the ``labels`` counts in ``/state``.
        """
        for m, counts in totals.items():
            self.labels_pending.labels(m).set(counts.get("pending", 0))
            self.labels_expired.labels(m).set(counts.get("expired", 0))
            self.labels_orphan.labels(m).set(counts.get("orphan", 0))

    def observe_rejection(self, r: Rejection) -> None:
        self.rejected.labels(bounded_reason(r.reason, self.schemas)).inc()

    def observe_window(self, ev: WindowEvaluation) -> None:
        m = ev.model_id
        self.windows.labels(m).inc()
        flags: dict[str, bool] = {}
        for r in ev.results:
            f = r.feature
            if f == PREDICTION:
                if r.detector == "psi":
                    self.pred_psi.labels(m).set(r.value)
                    self.pred_drift.labels(m).set(float(r.drift))
                continue
            if r.detector == "integrity:volume":
                self.volume.labels(m).set(r.value)
                continue
            if f is None:
                continue
            gauge = {
                "psi": self.psi,
                "ks": self.ks,
                "js": self.js,
                "integrity:missing_rate": self.missing,
                "out_of_range": self.out_of_range,
            }.get(r.detector)
            if gauge is not None:
                gauge.labels(m, f).set(r.value)
            if r.detector == "ks" and r.p_value is not None:
                self.ks_p.labels(m, f).set(r.p_value)
            if r.detector in ("psi", "ks", "chi2"):
                flags[f] = flags.get(f, False) or r.drift
        for f, flag in flags.items():
            self.drift.labels(m, f).set(float(flag))
        self.incident.labels(m).set(float(ev.integrity_incident))
        for name, value in ev.performance.items():
            if name in PERFORMANCE_METRICS and not math.isnan(value):
                self.performance.labels(m, name).set(value)
        for name, value in ev.baseline.items():
            if name in PERFORMANCE_METRICS and not math.isnan(value):
                self.baseline.labels(m, name).set(value)
        lab = ev.labels
        if lab:
            self.label_rate.labels(m).set(lab.get("arrival_rate", 0.0))
            if not math.isnan(lab.get("delay_p50", math.nan)):
                self.label_delay.labels(m).set(lab["delay_p50"])


class HealthState:
    """What /healthz and /readyz report; the service updates it, the HTTP threads read it.

    ``ready`` and ``detail`` live in one tuple that :meth:`set` replaces in a single assignment, so a
    request thread never answers with the status of one update and the reason of another.
    """

    def __init__(self) -> None:
        self.alive = True
        self._ready: tuple[bool, dict[str, Any]] = (False, {})

    def set(self, ready: bool, detail: Mapping[str, Any]) -> None:
        """Replace readiness and its detail together (the ``/readyz`` JSON body)."""
        self._ready = (ready, dict(detail))

    def snapshot(self) -> tuple[bool, dict[str, Any]]:
        """Readiness and its detail from the same update."""
        return self._ready

    @property
    def ready(self) -> bool:
        return self._ready[0]

    @ready.setter
    def ready(self, value: bool) -> None:
        self._ready = (value, self._ready[1])

    @property
    def detail(self) -> dict[str, Any]:
        return self._ready[1]


# A client must send each part of its request, and take each part of the response, within this many
# seconds, else its connection is closed and its thread freed: a half-open or stalled client holds a
# slot for at most this long. It bounds each socket operation, not the whole exchange, so a large
# /metrics read at any real speed is unaffected. Prometheus and the kubelet send the request at once
# and read at loopback/LAN speed; 5 s is far beyond what they need and below Prometheus's default
# 10 s scrape timeout, so a slot held by a dead client is back before the next scrape gives up.
HTTP_TIMEOUT_SECONDS = 5.0
# Connections served at once, one thread each; the next ones get an immediate 503 and are closed.
# The legitimate clients of one member are a Prometheus pair, the kubelet's three probes and a few
# people on the status page: about 10 at the same moment. 32 leaves three times that, while a flood
# of connections costs at most 32 threads and sockets, and their CPU is shared with the consume loop.
HTTP_MAX_CONNECTIONS = 32
# A client that goes away mid-exchange: one debug line, not a traceback in the service log.
CLIENT_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)

_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\nbusy\n"
)

http_log = logging.getLogger("stream_monitor.http")


class BoundedHTTPServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with at most ``max_connections`` request threads at once.

    A connection beyond the bound is answered ``503 busy`` and closed on the accepting thread, without
    blocking it. Client disconnects and timeouts are logged as one debug line (``handle_error``).
    """

    daemon_threads = True
    # The listen backlog (socketserver's default is 5). Connections beyond it wait in the kernel for a
    # SYN retransmission (1 s, then 3 s, ...): a burst above it would be served or refused seconds late.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        max_connections: int = HTTP_MAX_CONNECTIONS,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        super().__init__(address, handler)
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self.thread_name = f"http-{self.server_address[1]}"

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._reject(request, client_address)
            return
        thread = threading.Thread(
            target=self._serve_one,
            args=(request, client_address),
            name=f"{self.thread_name}-conn",
            daemon=True,
        )
        try:
            thread.start()
        except BaseException:
            self._slots.release()
            raise  # socketserver reports it (handle_error) and closes the connection

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)  # handle_error, then close
        finally:
            self._slots.release()

    def _reject(self, request: Any, client_address: Any) -> None:
        http_log.debug("http: %d connections busy, 503 to %s", self.max_connections, _peer(client_address))
        try:
            request.setblocking(False)  # the accepting thread must never wait on this client
            with contextlib.suppress(BlockingIOError):
                request.recv(65536)  # what already arrived: closing over unread bytes would reset
            request.send(_BUSY)  # fits the empty send buffer of a new connection
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, CLIENT_DISCONNECTS):
            http_log.debug("http: client %s went away: %s", _peer(client_address), type(exc).__name__)
        else:
            http_log.error("http: request from %s failed", _peer(client_address), exc_info=True)


def _peer(client_address: Any) -> str:
    return str(client_address[0]) if isinstance(client_address, tuple) else str(client_address)


def serve_http(
    registry: CollectorRegistry,
    health: HealthState,
    host: str = "127.0.0.1",
    port: int = 9108,
    extra_routes: Mapping[str, Callable[[], tuple[int, str, bytes]]] | None = None,
    *,
    timeout: float = HTTP_TIMEOUT_SECONDS,
    max_connections: int = HTTP_MAX_CONNECTIONS,
) -> BoundedHTTPServer:
    """Serve /metrics, /healthz, /readyz (and extra routes) on a daemon thread; returns the server.

    At most ``max_connections`` are served at once (the rest get a 503); each socket operation of a
    connection times out after ``timeout`` seconds (see :data:`HTTP_TIMEOUT_SECONDS`).
    """
    routes = dict(extra_routes or {})
    socket_timeout = timeout

    def respond(path: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(registry)
        if path == "/healthz":
            ok = health.alive
            return (200 if ok else 503), "text/plain", b"ok\n" if ok else b"dead\n"
        if path == "/readyz":
            ready, detail = health.snapshot()
            return (200 if ready else 503), "application/json", orjson.dumps({"ready": ready, **detail})
        if path in routes:
            return routes[path]()
        return 404, "text/plain", b"not found\n"

    class Handler(BaseHTTPRequestHandler):
        # StreamRequestHandler.setup() puts it on the socket: it bounds every read and write.
        timeout = socket_timeout

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            try:
                code, ctype, body = respond(path)
            except Exception:  # a failing collector or page: a 500 and one traceback, the server lives on
                http_log.exception("http: GET %s failed", path)
                code, ctype, body = 500, "text/plain", b"internal error\n"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Requests, timeouts, malformed requests: at debug, scrapes every few seconds would flood the log.
            http_log.debug("http: %s %s", self.address_string(), format % args)

    server = BoundedHTTPServer((host, port), Handler, max_connections)
    threading.Thread(target=server.serve_forever, name=server.thread_name, daemon=True).start()
    return server
