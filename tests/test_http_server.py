"""The metrics/health HTTP server under hostile or careless clients (loopback only).

Half-open connections time out and free their threads, at most ``HTTP_MAX_CONNECTIONS`` are served at
once (the rest get an immediate 503), and a client that hangs up mid-response is one debug line, never
a traceback. Every wait is on a condition with a generous deadline, so a busy machine only makes the
tests slower.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stream_monitor.web.server import (
    HTTP_MAX_CONNECTIONS,
    HTTP_TIMEOUT_SECONDS,
    BoundedHTTPServer,
    HealthState,
    serve_http,
)

DEADLINE = 60.0  # seconds: only ever reached when something is wrong


def wait_for(what: Callable[[], bool], message: str, timeout: float = DEADLINE) -> float:
    started = time.monotonic()
    while not what():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        time.sleep(0.02)
    return time.monotonic() - started


def get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=DEADLINE) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def connection_threads(server: BoundedHTTPServer) -> int:
    return sum(1 for t in threading.enumerate() if t.name == f"{server.thread_name}-conn")


def no_tracebacks(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING] == []


@contextlib.contextmanager
def serving(registry: CollectorRegistry | None = None, **kwargs: Any) -> Iterator[BoundedHTTPServer]:
    srv = serve_http(registry or CollectorRegistry(), HealthState(), "127.0.0.1", 0, **kwargs)
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def test_half_open_connections_time_out_and_the_excess_gets_a_fast_503(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="stream_monitor.http")
    with serving() as srv:  # the documented defaults: 32 connections, 5 s
        flood(srv, HTTP_TIMEOUT_SECONDS)
    assert any("timed out" in r.getMessage() for r in caplog.records)  # logged, at debug
    no_tracebacks(capfd, caplog)


def flood(srv: BoundedHTTPServer, timeout: float) -> None:
    port = srv.server_address[1]
    assert (srv.max_connections, HTTP_MAX_CONNECTIONS, timeout) == (32, 32, 5.0)
    extra = 8

    peak = [0]
    flooding = threading.Event()
    flooding.set()

    def sample() -> None:
        while flooding.is_set():
            peak[0] = max(peak[0], connection_threads(srv))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    socks: list[socket.socket] = []
    started = time.monotonic()
    try:
        for i in range(HTTP_MAX_CONNECTIONS + extra):
            s = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
            if i < HTTP_MAX_CONNECTIONS and i % 2:
                s.sendall(b"GET /metr")  # a request line that never ends; the others send nothing
            socks.append(s)
        opened_in = time.monotonic() - started

        # Every connection ends without the client doing anything more: the excess ones at once with
        # a 503, the held ones when their timeout closes them.
        answers: dict[socket.socket, bytes] = {}
        first_byte: dict[socket.socket, float] = {}
        pending = set(socks)
        while pending:
            assert time.monotonic() - started < timeout + DEADLINE, f"{len(pending)} connections still open"
            readable, _, _ = select.select(list(pending), [], [], 0.5)
            for s in readable:
                try:
                    chunk = s.recv(4096)
                except ConnectionResetError:
                    chunk = b""
                answers[s] = answers.get(s, b"") + chunk
                first_byte.setdefault(s, time.monotonic() - started)
                if not chunk:
                    pending.discard(s)
        ended_in = time.monotonic() - started
        busy = [s for s, a in answers.items() if a.startswith(b"HTTP/1.0 503")]
        if opened_in < timeout / 2:  # no held connection timed out before the last one came
            assert len(busy) == extra
            assert max(first_byte[s] for s in busy) < timeout  # refused at once, not after a wait
        assert all(b"Retry-After: 1" in answers[s] for s in busy)
        assert ended_in >= timeout * 0.9  # the held ones were held until their timeout...
        wait_for(lambda: connection_threads(srv) == 0, "connection threads to end")  # ...and freed
        flooding.clear()
        sampler.join()
        assert 0 < peak[0] <= HTTP_MAX_CONNECTIONS

        # The server answers again, long before any generous deadline.
        wait_for(lambda: get(port, "/healthz") == 200, "/healthz to answer 200")
        assert time.monotonic() - started < timeout + DEADLINE
    finally:
        flooding.clear()
        for s in socks:
            s.close()


class ManySeries(Collector):
    """A /metrics body of ``size`` bytes or more, cheap to render."""

    def __init__(self, size: int) -> None:
        self.count = size // 100 + 1

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("padding", "A large exposition", labels=["name"])
        pad = "x" * 64
        for i in range(self.count):
            family.add_metric([f"{pad}{i:010d}"], float(i))
        yield family


def kernel_max_send_buffer() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 << 20


def test_a_client_hanging_up_mid_response_is_one_debug_line(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="stream_monitor.http")
    registry = CollectorRegistry()
    # Larger than the server's largest send buffer: the server is still writing when the client resets.
    registry.register(ManySeries(2 * kernel_max_send_buffer() + (1 << 20)))
    with serving(registry) as srv:
        port = srv.server_address[1]
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(DEADLINE)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert s.recv(1024).startswith(b"HTTP/1.0 200")  # the server is writing the body now
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # hang up with a reset, the body unread

        def went_away() -> bool:
            return any("went away" in r.getMessage() for r in caplog.records)

        wait_for(went_away, "the disconnect to be logged")
        (line,) = [r for r in caplog.records if "went away" in r.getMessage()]
        assert line.levelno == logging.DEBUG and line.exc_info is None
        assert line.getMessage().split(": ")[-1] in ("BrokenPipeError", "ConnectionResetError")
        assert get(port, "/healthz") == 200
    no_tracebacks(capfd, caplog)


def test_a_failing_route_is_a_500_and_the_server_lives_on(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> tuple[int, str, bytes]:
        raise RuntimeError("page bug")

    with serving(extra_routes={"/": broken}) as srv:
        assert get(srv.server_address[1], "/") == 500
        assert get(srv.server_address[1], "/healthz") == 200
    (record,) = [r for r in caplog.records if r.name == "stream_monitor.http"]
    assert record.levelno == logging.ERROR and record.exc_info is not None  # a bug: its traceback, once
    assert "Traceback" not in capfd.readouterr().err  # in the log, not printed by socketserver
