"""The one place that wires the application: configuration -> references -> engine -> observability.

Every front end (the Kafka service, ``replay``, ``demo``, ``calibrate``) builds its engine and its HTTP
side here, so a setting read from the configuration reaches the same object whichever command runs.
Arrows point one way: ``cli`` -> {``kafka``, ``offline``} -> ``app`` -> {``web``, ``core``}; nothing
imports ``cli``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from stream_monitor.config import AppConfig
from stream_monitor.core.engine import InProcessTwoStage, MonitoringEngine
from stream_monitor.core.monitor import ModelMonitor
from stream_monitor.core.reference import ReferenceProfile
from stream_monitor.errors import ConfigError, StateError
from stream_monitor.web.insights_exporter import InsightsCollector
from stream_monitor.web.metrics import ServiceMetrics
from stream_monitor.web.server import BoundedHTTPServer, HealthState, serve_http
from stream_monitor.web.status import StatusPage
from stream_monitor.web.webconfig import parse_web_config

References = dict[str, ReferenceProfile | None]

log = logging.getLogger("stream_monitor.app")


def load_references(app: AppConfig, base: Path | None = None) -> References:
    """Read each model's reference profile file, if it has one (else it warms up from live events).

    A file that cannot be read or is not a profile is a :class:`ConfigError` naming the model's key
    (``load_config`` has already checked that each file exists). What :func:`baseline_warnings` finds
    is logged as a warning, once per start.
    """
    refs: References = {}
    for i, m in enumerate(app.models):
        if m.reference_path:
            path = Path(m.reference_path)
            if not path.is_absolute() and base is not None and not path.exists():
                path = base / path
            try:
                refs[m.schema.model_id] = ReferenceProfile.from_json(path.read_bytes())
            except OSError as exc:
                raise ConfigError(
                    f"models[{i}].reference", f"cannot read {path}: {exc.strerror or exc}"
                ) from None
            except StateError as exc:
                raise ConfigError(f"models[{i}].reference", f"{path}: {exc}") from None
        else:
            refs[m.schema.model_id] = None
    for warning in baseline_warnings(app, refs):
        log.warning("%s", warning)
    return refs


def baseline_warnings(app: AppConfig, references: Mapping[str, ReferenceProfile | None]) -> list[str]:
    """Binary models whose reference accuracy/F1 baseline may not be comparable with the live metrics.

    Both decide an event by its predicted class when it has one, else by its score at 0.5
    (:func:`~stream_monitor.core.quality.binary_decisions`). A reference built from scores alone (no
    predicted-class column; or written before the decision was recorded) decided every row by the
    score; if the model's events carry ``prediction.label``, the live metrics follow that label — the
    model's own decision, at whatever threshold it uses — and a performance trigger would compare two
    different decisions. The service cannot see the events yet at start-up, so it says what to check.

    >>> from stream_monitor.config import parse_config
    >>> model = {"id": "churn", "task": "binary", "features": {"x": "numeric"}}
    >>> app = parse_config({"models": [model]}, env={})
    >>> reference = ReferenceProfile(1, "churn", baseline={"accuracy": 0.9}, baseline_decision="score")
    >>> baseline_warnings(app, {"churn": reference})[0][:72]
    "model 'churn': its reference's accuracy/F1 baseline decided by the score"
    >>> baseline_warnings(app, {"churn": None})
    []
    """
    warnings = []
    for m in app.models:
        reference = references.get(m.schema.model_id)
        if m.schema.task != "binary" or reference is None or "accuracy" not in reference.baseline:
            continue
        if reference.baseline_decision == "predicted_class":
            continue
        warnings.append(
            f"model {m.schema.model_id!r}: its reference's accuracy/F1 baseline decided by the score at 0.5 "
            "(the training file had no predicted-class column); if its events carry a predicted class "
            "(prediction.label), live accuracy/F1 are decided by that class and cannot match this baseline: "
            "rebuild the reference with --prediction-label-column (or training.prediction_label_column)"
        )
    return warnings


def build_engine(
    app: AppConfig,
    references: References | None = None,
    *,
    shard: int | None = None,
    shards: int = 1,
    registry: Mapping[str, Mapping[str, ReferenceProfile]] | None = None,
) -> MonitoringEngine:
    """The engine for a configuration (references default to the configured files).

    With ``aggregation.mode: two_stage``: the engine of input partition ``shard`` of ``shards`` (its
    reports go to the model stage through Kafka), or, without a shard, both stages in this process
    (``replay``).
    """
    kind = InProcessTwoStage if app.aggregation.mode == "two_stage" and shard is None else MonitoringEngine
    return kind(
        app.schemas(),
        {m.schema.model_id: m.settings for m in app.models},
        references if references is not None else load_references(app),
        {m.schema.model_id: m.version for m in app.models},
        app.max_message_bytes,
        app.event_time,
        max_event_id_length=app.max_event_id_length,
        aggregation=app.aggregation,
        shard=shard or 0,
        shards=shards,
        registry=registry,
    )


@dataclass
class Observability:
    """The HTTP side of a running engine: metric families, health, the status page and the server."""

    metrics: ServiceMetrics
    health: HealthState
    status_page: StatusPage
    server: BoundedHTTPServer

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


def start_observability(
    app: AppConfig,
    monitors: Callable[[], Mapping[str, ModelMonitor]],
    host: str | None = None,
    port: int | None = None,
    metrics: ServiceMetrics | None = None,
    health: HealthState | None = None,
    extra_routes: Mapping[str, Callable[[], tuple[int, str, bytes]]] | None = None,
    *,
    published: bool = False,
) -> Observability:
    """Metric families for ``app``'s models (or the given ones), the insight gauges and status page
    over ``monitors()``, and the HTTP server on ``host:port`` (default: ``metrics.host``/``metrics.port``)
    serving them, with ``health`` behind ``/healthz`` and ``/readyz``.

    ``published``: the caller runs the engine on its own thread and calls ``status_page.publish()``
    after each batch; the page and the insight gauges then serve that immutable copy and a request
    never calls ``monitors()`` (:class:`~stream_monitor.web.status.StatusPage`). Otherwise each request
    reads ``monitors()``.

    ``app.http`` decides the rest: TLS and basic auth (its web config file, read here: a
    :class:`ConfigError` naming ``http.web_config_file`` when it is wrong), and whether the status page
    ``/`` and ``/state`` (an extra route of the service) are served at all (else 404)."""
    web_config_file = app.http.web_config_file
    web = parse_web_config(web_config_file) if web_config_file is not None else None
    metrics = metrics if metrics is not None else ServiceMetrics(app.schemas())
    health = health if health is not None else HealthState()
    status_page = StatusPage(monitors, rejections=metrics.rejections_by_reason, published_only=published)
    InsightsCollector(
        (lambda: status_page.published.monitors()) if published else monitors, registry=metrics.registry
    )
    routes: dict[str, Any] = {"/": status_page} if app.http.status_page else {}
    routes.update(extra_routes or {})
    if not app.http.expose_state:
        routes.pop("/state", None)
    server = serve_http(
        metrics.registry,
        health,
        app.metrics.host if host is None else host,
        app.metrics.port if port is None else port,
        extra_routes=routes,
        web=web,
    )
    return Observability(metrics, health, status_page, server)


def rss_bytes() -> int | None:
    """This process's resident set size from ``/proc/self/statm`` (None where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


try:
    _PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):  # not POSIX
    _PAGE_SIZE = 4096


class HeapTrimmer:
    """Hands freed heap back to the OS between batches, once the RSS has grown by ``budget_bytes``.

    glibc keeps the pages of a batch's freed objects (its decoded JSON, the message bytes, the
    columns) and fragmentation keeps most of them: a 10 models × 50 features member sat about 80 MB
    above what a trim leaves (BENCHMARKS.md section 10). :meth:`check`, after each batch, reads the RSS
    (one small read of ``/proc/self/statm``) and calls ``trim`` (glibc's ``malloc_trim``) when it is
    ``budget_bytes`` above the RSS the last trim left. A trim costs about 2 ms on such a heap, so
    trims are spaced to take at most ``max_share`` of the wall time (2 %: one 2-ms trim per 100 ms).
    Small events in small batches stay under the budget and are never trimmed for. Without ``trim``
    or ``/proc`` (musl, macOS) it does nothing.

    >>> sizes, trims = iter([100, 120, 150, 110]), []
    >>> t = HeapTrimmer(trims.append, budget_bytes=32, max_share=1.0, rss=lambda: next(sizes))
    >>> [t.check() for _ in range(3)], trims  # 120 is within 32 of 100, 150 is not: trimmed (to 110)
    ([False, False, True], [0])
    """

    def __init__(
        self,
        trim: Callable[[int], Any] | None,
        budget_bytes: int = 32 << 20,
        max_share: float = 0.02,
        rss: Callable[[], int | None] = rss_bytes,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.trim = trim
        self.budget_bytes = budget_bytes
        self.max_share = max_share
        self.rss = rss
        self.clock = clock
        self.trims = 0
        self.seconds = 0.0  # spent trimming
        self._floor: int | None = None
        self._next = -float("inf")

    def check(self) -> bool:
        """Trim if the heap has grown enough since the last trim; True when it did."""
        if self.trim is None or self.clock() < self._next:
            return False
        rss = self.rss()
        if rss is None:
            self.trim = None  # no /proc: never again
            return False
        if self._floor is None or rss < self._floor:  # the first call, or trimmed elsewhere (checkpoint)
            self._floor = rss
        if rss - self._floor < self.budget_bytes:
            return False
        started = self.clock()
        self.trim(0)
        ended = self.clock()
        self.trims += 1
        self.seconds += ended - started
        self._next = ended + (ended - started) / self.max_share
        self._floor = self.rss() or rss
        return True
