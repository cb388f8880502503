"""The HTTP edge: ``/metrics``, ``/healthz``, ``/readyz`` and extra routes on one small threaded server.

Bounded on purpose (see :class:`BoundedHTTPServer`): a few scrapers and probes are its whole audience,
so it holds at most :data:`HTTP_MAX_CONNECTIONS` connections, each with a timeout, and logs client
disconnects at debug level.

Optionally TLS and basic auth, from a web configuration file in the format of Prometheus' exporters
(:mod:`stream_monitor.web.webconfig`). With basic auth every route needs credentials (``401`` with
``WWW-Authenticate`` otherwise) except the probes in :data:`OPEN_PATHS`: the kubelet and Docker's
``HEALTHCHECK`` send none, so ``/healthz`` and ``/readyz`` answer their status code to anyone, and
``/readyz`` shows its detail (assigned partitions, lag, the reason) only to an authenticated client.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import sys
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from stream_monitor.web.webconfig import WWW_AUTHENTICATE, BasicAuth, TLSContextSource, WebConfig


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
# Routes that answer without credentials when basic auth is on: liveness and readiness probes (the
# kubelet, Docker's HEALTHCHECK) carry none. They reveal a status code; /readyz's detail needs auth.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})

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
        tls: TLSContextSource | None = None,
        handshake_timeout: float = HTTP_TIMEOUT_SECONDS,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        super().__init__(address, handler)
        self.max_connections = max_connections
        # TLS: the handshake runs on the connection's own thread (never on the accepting one), under
        # the same per-operation timeout as the rest of the exchange.
        self.tls = tls
        self.handshake_timeout = handshake_timeout
        self.auth: BasicAuth | None = None  # set by serve_http when basic auth is configured
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
            if self.tls is not None:
                request = self._handshake(request, client_address)
                if request is None:
                    return
            self.process_request_thread(request, client_address)  # handle_error, then close
        finally:
            self._slots.release()

    def _handshake(self, request: Any, client_address: Any) -> ssl.SSLSocket | None:
        """The TLS side of a new connection; None (connection closed, one debug line) when it fails."""
        assert self.tls is not None
        try:
            request.settimeout(self.handshake_timeout)
            tls = self.tls.context().wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        except OSError as exc:
            http_log.debug("http: TLS setup for %s failed: %s", _peer(client_address), exc)
            self.shutdown_request(request)
            return None
        try:
            tls.do_handshake()
        except (OSError, ValueError) as exc:  # ssl.SSLError, timeouts and resets are OSErrors
            http_log.debug("http: TLS handshake with %s failed: %s", _peer(client_address), exc)
            with contextlib.suppress(OSError):
                tls.close()
            return None
        return tls

    def _reject(self, request: Any, client_address: Any) -> None:
        http_log.debug("http: %d connections busy, 503 to %s", self.max_connections, _peer(client_address))
        try:
            request.setblocking(False)  # the accepting thread must never wait on this client
            with contextlib.suppress(BlockingIOError):
                request.recv(65536)  # what already arrived: closing over unread bytes would reset
            if self.tls is None:  # a TLS client cannot read a plain answer: it is just closed
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
    web: WebConfig | None = None,
) -> BoundedHTTPServer:
    """Serve /metrics, /healthz, /readyz (and extra routes) on a daemon thread; returns the server.

    At most ``max_connections`` are served at once (the rest get a 503); each socket operation of a
    connection times out after ``timeout`` seconds (see :data:`HTTP_TIMEOUT_SECONDS`). ``web`` (a
    parsed ``http.web_config_file``) turns on TLS and/or basic auth.
    """
    routes = dict(extra_routes or {})
    socket_timeout = timeout
    auth = BasicAuth(web.users) if web is not None and web.users else None
    tls = TLSContextSource(web.tls) if web is not None and web.tls is not None else None

    def respond(path: str, authenticated: bool) -> tuple[int, str, bytes]:
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(registry)
        if path == "/healthz":
            ok = health.alive
            return (200 if ok else 503), "text/plain", b"ok\n" if ok else b"dead\n"
        if path == "/readyz":
            ready, detail = health.snapshot()
            shown = detail if authenticated else {}
            return (200 if ready else 503), "application/json", orjson.dumps({"ready": ready, **shown})
        if path in routes:
            return routes[path]()
        return 404, "text/plain", b"not found\n"

    class Handler(BaseHTTPRequestHandler):
        # StreamRequestHandler.setup() puts it on the socket: it bounds every read and write.
        timeout = socket_timeout

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            # /healthz answers everyone alike: no bcrypt round for a probe's (absent) credentials.
            authenticated = auth is None or (
                path != "/healthz" and auth.check(self.headers.get("Authorization"))
            )
            headers: list[tuple[str, str]] = []
            if not authenticated and path not in OPEN_PATHS:
                code, ctype, body = 401, "text/plain", b"unauthorized\n"
                headers.append(("WWW-Authenticate", WWW_AUTHENTICATE))
            else:
                try:
                    code, ctype, body = respond(path, authenticated)
                except Exception:  # a failing collector or page: a 500 and one traceback, the server lives on
                    http_log.exception("http: GET %s failed", path)
                    code, ctype, body = 500, "text/plain", b"internal error\n"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Requests, timeouts, malformed requests: at debug, scrapes every few seconds would flood the log.
            http_log.debug("http: %s %s", self.address_string(), format % args)

    server = BoundedHTTPServer((host, port), Handler, max_connections, tls, timeout)
    server.auth = auth
    threading.Thread(target=server.serve_forever, name=server.thread_name, daemon=True).start()
    return server
