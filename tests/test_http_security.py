"""The HTTP endpoint's TLS and basic auth (``http.web_config_file``, the exporter-toolkit format), and
``http.expose_state`` / ``http.status_page``.

Certificates are made here with ``cryptography`` (a test dependency): a CA, a server certificate for
127.0.0.1 and a client certificate. Passwords are bcrypt-hashed at cost 4 (fast), except where the
cache is measured. The last test runs the real service on the session's broker and a real
Prometheus (Debian's binary) that scrapes it over TLS with basic auth, using the project's example
scrape config ``deploy/prometheus/prometheus-tls.yml``. Every wait is on a condition with a generous
deadline.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.client
import ipaddress
import json
import logging
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import CollectorRegistry, Gauge

from stream_monitor.app import start_observability
from stream_monitor.config import parse_config
from stream_monitor.errors import ConfigError
from stream_monitor.web.server import BoundedHTTPServer, HealthState, serve_http
from stream_monitor.web.webconfig import WWW_AUTHENTICATE, BasicAuth, parse_web_config

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "deploy" / "prometheus"
DEADLINE = 60.0
USER, PASSWORD = "prometheus", "correct horse battery staple"
MODEL = {"id": "m", "task": "regression", "features": {"x": "numeric"}}


def wait_for(what: Callable[[], bool], message: str, timeout: float = DEADLINE) -> None:
    started = time.monotonic()
    while True:
        try:
            if what():
                return
        except (OSError, AssertionError, ValueError, KeyError):
            pass
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        time.sleep(0.1)


# ------------------------------------------------------------------------------ certificates


@dataclass
class PKI:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_context(self, with_client_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if with_client_cert:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    client: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer is not None else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    elif client:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
    else:
        sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def make_pki(directory: Path) -> PKI:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert("stream-monitor test CA", ca_key, None, ca_key, ca=True)
    server_key, client_key = _key(), _key()
    return PKI(
        ca=_write_cert(ca, directory / "ca.crt"),
        server_cert=_write_cert(_cert("127.0.0.1", server_key, ca, ca_key), directory / "server.crt"),
        server_key=_write_key(server_key, directory / "server.key"),
        client_cert=_write_cert(
            _cert("scraper", client_key, ca, ca_key, client=True), directory / "client.crt"
        ),
        client_key=_write_key(client_key, directory / "client.key"),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def bcrypt_hash(password: str, rounds: int = 4) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def write_web_config(
    path: Path, tls: dict[str, Any] | None = None, users: dict[str, str] | None = None
) -> Path:
    doc: dict[str, Any] = {}
    if tls is not None:
        doc["tls_server_config"] = tls
    if users is not None:
        doc["basic_auth_users"] = users
    path.write_text(yaml.safe_dump(doc))
    return path


# ------------------------------------------------------------------------------ clients


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request(
    port: int,
    path: str,
    authorization: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    scheme = "https" if tls is not None else "http"
    req = urllib.request.Request(f"{scheme}://127.0.0.1:{port}{path}")
    if authorization is not None:
        req.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(req, timeout=DEADLINE, context=tls) as r:
            return int(r.status), dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), dict(e.headers), e.read()


@contextlib.contextmanager
def serving(web_config: Path | None, **kwargs: Any) -> Iterator[BoundedHTTPServer]:
    registry = CollectorRegistry()
    Gauge("stream_monitor_test_gauge", "A gauge", registry=registry).set(7)
    health = HealthState()
    health.set(False, {"assigned": [], "reason": "broker unreachable at secret-broker:9092"})
    web = parse_web_config(str(web_config)) if web_config is not None else None
    routes = {"/": lambda: (200, "text/html", b"<html>status</html>"), "/state": lambda: (200, "a/j", b"{}")}
    srv = serve_http(registry, health, "127.0.0.1", 0, extra_routes=routes, web=web, **kwargs)
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


# ------------------------------------------------------------------------------ the web config file


def test_the_exporter_toolkit_format_is_read_with_paths_relative_to_the_file(
    pki: PKI, tmp_path: Path
) -> None:
    hashed = bcrypt_hash(PASSWORD)
    path = write_web_config(
        pki.ca.parent / "web.yml",
        tls={"cert_file": "server.crt", "key_file": "server.key", "min_version": "TLS13"},
        users={USER: hashed},
    )
    web = parse_web_config(str(path))
    assert web.tls is not None and web.tls.cert_file == str(pki.server_cert)
    assert (web.tls.min_version, web.tls.client_auth_type) == ("TLS13", "NoClientCert")
    assert web.users == {USER: hashed.encode()}
    assert hashed not in repr(web)  # kept out of logs
    # An empty file is valid (neither TLS nor auth), as for the exporters.
    assert parse_web_config(str(write_web_config(tmp_path / "empty.yml"))).tls is None


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"basic_auth_users": {"u": "plain-password"}}, "basic_auth_users.u: must be a bcrypt hash"),
        ({"basic_auth_user": {}}, "basic_auth_user: unknown key"),
        ({"http_server_config": {"http2": False}}, "http_server_config: not supported by stream-monitor"),
        ({"tls_server_config": {"cert_file": "x"}}, "tls_server_config.cert_file: cannot read"),
        ({"tls_server_config": {"cert_file": "{crt}"}}, "needs both cert_file and key_file"),
        (
            {"tls_server_config": {"cert_file": "{crt}", "key_file": "{key}", "cipher_suites": ["X"]}},
            "cipher_suites: not supported",
        ),
        (
            {"tls_server_config": {"cert_file": "{crt}", "key_file": "{key}", "client_ca_file": "{ca}"}},
            "client_ca_file is set but client_auth_type is NoClientCert",
        ),
        (
            {"tls_server_config": {"cert_file": "{crt}", "key_file": "{ca}"}},
            "cannot load the certificate, key or CA",
        ),
        (
            {"tls_server_config": {"cert_file": "{crt}", "key_file": "{key}", "min_version": "SSL3"}},
            "min_version: must be one of TLS10, TLS11, TLS12, TLS13",
        ),
    ],
)
def test_a_bad_web_config_stops_start_up_naming_the_key(
    pki: PKI, tmp_path: Path, doc: dict[str, Any], problem: str
) -> None:
    text = yaml.safe_dump(doc)
    for name, value in {"{crt}": pki.server_cert, "{key}": pki.server_key, "{ca}": pki.ca}.items():
        text = text.replace(f"'{name}'", str(value))
    path = tmp_path / "web.yml"
    path.write_text(text)
    app = parse_config({"models": [MODEL], "http": {"web_config_file": str(path)}}, env={})
    with pytest.raises(ConfigError, match=r"http\.web_config_file") as info:
        start_observability(app, dict, host="127.0.0.1", port=0)  # reads it before serving anything
    assert problem in str(info.value) and str(path) in str(info.value)
    assert "plain-password" not in str(info.value)


# ------------------------------------------------------------------------------ basic auth


def test_every_route_but_the_probes_needs_the_right_credentials(tmp_path: Path) -> None:
    web = write_web_config(
        tmp_path / "web.yml", users={USER: bcrypt_hash(PASSWORD), "other": bcrypt_hash("x")}
    )
    with serving(web) as srv:
        port = srv.server_address[1]
        for path in ("/metrics", "/", "/state", "/no-such-page"):
            code, headers, _ = request(port, path)
            assert code == 401 and headers["WWW-Authenticate"] == WWW_AUTHENTICATE, path
            assert request(port, path, basic(USER, "wrong"))[0] == 401
            assert request(port, path, basic("nobody", PASSWORD))[0] == 401
            assert request(port, path, basic("other", PASSWORD))[0] == 401  # another user's password
            assert request(port, path, "Bearer " + PASSWORD)[0] == 401
        code, _, body = request(port, "/metrics", basic(USER, PASSWORD))
        assert code == 200 and b"stream_monitor_test_gauge 7.0" in body
        assert request(port, "/", basic(USER, PASSWORD))[0] == 200
        assert request(port, "/no-such-page", basic(USER, PASSWORD))[0] == 404
        # The probes answer without credentials; /readyz's detail is for authenticated clients only.
        assert request(port, "/healthz")[:3:2] == (200, b"ok\n")
        code, _, body = request(port, "/readyz")
        assert code == 503 and json.loads(body) == {"ready": False}
        code, _, body = request(port, "/readyz", basic(USER, PASSWORD))
        assert code == 503 and "secret-broker" in json.loads(body)["reason"]


def test_a_verified_credential_costs_bcrypt_once_and_a_wrong_one_every_time(tmp_path: Path) -> None:
    web = write_web_config(tmp_path / "web.yml", users={USER: bcrypt_hash(PASSWORD, rounds=10)})
    with serving(web) as srv:
        port = srv.server_address[1]
        auth = srv.auth
        assert auth is not None
        started = time.perf_counter()
        assert request(port, "/metrics", basic(USER, PASSWORD))[0] == 200
        first = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(20):
            assert request(port, "/metrics", basic(USER, PASSWORD))[0] == 200
        cached = (time.perf_counter() - started) / 20
        assert auth.bcrypt_rounds == 1  # the 20 scrapes after the first hit the cache
        for _ in range(3):
            assert request(port, "/metrics", basic(USER, PASSWORD + "!"))[0] == 401
        assert auth.bcrypt_rounds == 4  # a failure is never remembered
        assert request(port, "/healthz", basic(USER, "wrong"))[0] == 200
        assert auth.bcrypt_rounds == 4  # a probe never runs bcrypt
    print(f"first scrape {first * 1000:.1f} ms (bcrypt cost 10), cached {cached * 1000:.2f} ms")


def test_basic_auth_credentials_parsing_and_limits() -> None:
    auth = BasicAuth({USER: bcrypt_hash(PASSWORD).encode()}, cache_size=2)
    assert auth.check(basic(USER, PASSWORD))
    assert (
        not auth.check(None)
        and not auth.check("")
        and not auth.check("Basic")
        and not auth.check("Basic ===")
    )
    assert not auth.check("Basic " + base64.b64encode(b"no-colon").decode())
    assert not auth.check("Basic " + base64.b64encode(b"\xff\xfe:x").decode())  # not UTF-8
    assert not auth.check(basic(USER, "x" * 100))  # longer than bcrypt reads: never a match
    rounds = auth.bcrypt_rounds
    assert auth.check(basic(USER, PASSWORD)) and auth.bcrypt_rounds == rounds  # cached
    assert auth.check("basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())  # scheme case


# ------------------------------------------------------------------------------ TLS


def test_tls_serves_https_to_a_client_that_trusts_the_ca(
    pki: PKI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="stream_monitor.http")
    web = write_web_config(
        tmp_path / "web.yml",
        tls={"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)},
        users={USER: bcrypt_hash(PASSWORD)},
    )
    with serving(web, timeout=1.0) as srv:
        port = srv.server_address[1]
        ctx = pki.client_context()
        code, _, body = request(port, "/metrics", basic(USER, PASSWORD), tls=ctx)
        assert code == 200 and b"stream_monitor_test_gauge" in body
        assert request(port, "/metrics", tls=ctx)[0] == 401
        assert request(port, "/healthz", tls=ctx)[0] == 200
        # A client that does not trust the CA refuses the server; a plain-HTTP client gets no answer.
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            request(port, "/healthz", tls=ssl.create_default_context())
        with pytest.raises((OSError, http.client.HTTPException)):  # reset, or a TLS alert as bytes
            request(port, "/healthz")
        # A client that connects and never sends a ClientHello is dropped after the socket timeout.
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as s:
            started = time.monotonic()
            assert s.recv(1) == b""
            assert time.monotonic() - started < DEADLINE
        wait_for(lambda: any("TLS handshake" in r.getMessage() for r in caplog.records), "handshake logged")
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert request(port, "/healthz", tls=ctx)[0] == 200  # and the server answers on


def test_a_renewed_certificate_is_served_without_a_restart(pki: PKI, tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    first = make_pki(directory)
    web = write_web_config(
        tmp_path / "web.yml", tls={"cert_file": str(first.server_cert), "key_file": str(first.server_key)}
    )

    def served_serial(ca: Path) -> int:
        ctx = ssl.create_default_context(cafile=str(ca))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
        ):
            der = s.getpeercert(binary_form=True)
        assert der is not None
        return int(x509.load_der_x509_certificate(der).serial_number)

    with serving(web) as srv:
        port = srv.server_address[1]
        before = served_serial(first.ca)
        renewed = make_pki(tmp_path / "renewed")  # a new CA too: the old one cannot verify the new cert
        for name in ("server.crt", "server.key"):
            tmp = directory / f"{name}.new"
            tmp.write_bytes((renewed.ca.parent / name).read_bytes())
            os.replace(tmp, directory / name)  # as cert-manager and certbot do: an atomic rename
        after = served_serial(renewed.ca)
        assert after != before
        # A renewal that cannot be loaded keeps the last good certificate.
        (directory / "server.key").write_text("not a key")
        assert served_serial(renewed.ca) == after


def test_mutual_tls_requires_a_client_certificate_from_the_ca(pki: PKI, tmp_path: Path) -> None:
    tls = {
        "cert_file": str(pki.server_cert),
        "key_file": str(pki.server_key),
        "client_ca_file": str(pki.ca),
        "client_auth_type": "RequireAndVerifyClientCert",
    }
    with serving(write_web_config(tmp_path / "web.yml", tls=tls)) as srv:
        port = srv.server_address[1]
        assert request(port, "/metrics", tls=pki.client_context(with_client_cert=True))[0] == 200
        with pytest.raises((OSError, http.client.HTTPException)):  # the handshake fails
            request(port, "/metrics", tls=pki.client_context())


# ------------------------------------------------------------------------------ /state and the page


def test_state_and_the_status_page_can_be_turned_off(tmp_path: Path) -> None:
    model = MODEL

    def codes(http: dict[str, Any]) -> dict[str, int]:
        app = parse_config({"models": [model], "http": http}, env={})
        state = {"/state": lambda: (200, "application/json", b"{}")}
        obs = start_observability(app, dict, host="127.0.0.1", port=0, extra_routes=state)
        try:
            return {p: request(obs.port, p)[0] for p in ("/", "/state", "/metrics", "/healthz")}
        finally:
            obs.server.shutdown()
            obs.server.server_close()

    assert codes({}) == {"/": 200, "/state": 200, "/metrics": 200, "/healthz": 200}
    off = codes({"expose_state": False, "status_page": False})
    assert off == {"/": 404, "/state": 404, "/metrics": 200, "/healthz": 200}
    with pytest.raises(ConfigError, match=r"http\.expose_state: must be true or false"):
        parse_config({"models": [model], "http": {"expose_state": "nope"}}, env={})
    with pytest.raises(ConfigError, match=r"http\.status_pages: unknown key, did you mean 'status_page'"):
        parse_config({"models": [model], "http": {"status_pages": False}}, env={})


# ------------------------------------------------------------------------------ a real Prometheus


def promtool_check(config: Path) -> str:
    from test_prometheus_live import require_binary

    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def secure_prometheus_config(directory: Path, port: int, pki: PKI, password_file: Path) -> Path:
    """``deploy/prometheus/prometheus-tls.yml`` for a loopback test: the stream-monitor job's target,
    CA and password files rewritten, 1 s scrapes, no rules or Alertmanager; plus a job with a wrong
    password, which must be refused."""
    config = yaml.safe_load((PROM_DIR / "prometheus-tls.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["stream-monitor"]
    assert job["scheme"] == "https" and job["basic_auth"]["username"] == USER
    job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    job["tls_config"]["ca_file"] = str(pki.ca)
    job["basic_auth"]["password_file"] = str(password_file)
    job["scrape_interval"] = "1s"
    wrong_password = directory / "wrong.password"
    wrong_password.write_text("not the password\n")
    wrong = json.loads(json.dumps(job))
    wrong["job_name"] = "stream-monitor-wrong-password"
    wrong["basic_auth"]["password_file"] = str(wrong_password)
    config["scrape_configs"] = [job, wrong]
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config.pop("alerting", None)
    config.pop("rule_files", None)
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_the_tls_example_is_valid_and_differs_from_the_plain_config_only_in_the_scrape_security() -> None:
    assert "SUCCESS" in promtool_check(PROM_DIR / "prometheus-tls.yml")
    plain = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    secure = yaml.safe_load((PROM_DIR / "prometheus-tls.yml").read_text())
    for config in (plain, secure):
        for job in config["scrape_configs"]:
            if job["job_name"] == "stream-monitor":
                for key in ("scheme", "tls_config", "basic_auth"):
                    job.pop(key, None)
    assert plain == secure


def test_prometheus_scrapes_the_service_over_tls_with_basic_auth(
    kafka_bootstrap: str,
    topic_factory: Any,
    group_id: str,
    services: Any,
    pki: PKI,
    tmp_path: Path,
) -> None:
    from service_fixtures import ServiceTopics, free_port, write_config
    from test_prometheus_live import require_binary

    prometheus_bin = require_binary("prometheus")
    web = write_web_config(
        tmp_path / "web.yml",
        tls={"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)},
        users={USER: bcrypt_hash(PASSWORD, rounds=10)},
    )
    topics = ServiceTopics.create(topic_factory, partitions=1)
    port, prom_port = free_port(), free_port()
    cfg = write_config(
        tmp_path / "service.yaml",
        kafka_bootstrap,
        topics,
        group_id,
        port,
        top_extra={"http": {"web_config_file": str(web)}},
    )
    svc = services(cfg, port, tmp_path / "service.log")
    ctx = pki.client_context()

    def ready() -> bool:
        return request(port, "/readyz", basic(USER, PASSWORD), tls=ctx)[0] == 200

    svc.wait_for(ready, 120, "the service is ready (over TLS, authenticated)")
    assert request(port, "/metrics", tls=ctx)[0] == 401
    password_file = tmp_path / "stream-monitor.password"
    password_file.write_text(PASSWORD + "\n")
    prom_cfg = secure_prometheus_config(tmp_path, port, pki, password_file)
    promtool_check(prom_cfg)
    prom_log = tmp_path / "prometheus.log"
    with prom_log.open("wb") as out:
        prometheus = subprocess.Popen(
            [
                prometheus_bin,
                f"--config.file={prom_cfg}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(tmp_path),
        )
    try:

        def targets() -> dict[str, dict[str, Any]]:
            url = f"http://127.0.0.1:{prom_port}/api/v1/targets"
            with urllib.request.urlopen(url, timeout=5) as r:
                active = json.loads(r.read())["data"]["activeTargets"]
            return {t["labels"]["job"]: t for t in active}

        def query(expr: str) -> list[dict[str, Any]]:
            url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            with urllib.request.urlopen(url, timeout=5) as r:
                return list(json.loads(r.read())["data"]["result"])

        def scraped() -> bool:
            assert prometheus.poll() is None, prom_log.read_text()
            up = {r["metric"]["job"]: r["value"][1] for r in query("up")}
            return up == {"stream-monitor": "1", "stream-monitor-wrong-password": "0"}

        try:
            wait_for(
                scraped, "Prometheus scrapes with the right password and is refused with the wrong one", 120
            )
            assert query('stream_monitor_ready{job="stream-monitor"} == 1')
            assert query(
                'stream_monitor_state_records_rejected_total{job="stream-monitor",reason="bad_signature"}'
            )
            refused = targets()["stream-monitor-wrong-password"]
            assert "401" in refused["lastError"], refused
            assert targets()["stream-monitor"]["scrapeUrl"].startswith("https://")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n--- prometheus log ---\n{prom_log.read_text()[-3000:]}\n"
                f"--- service log ---\n{svc.log()[-3000:]}"
            ) from None
    finally:
        prometheus.terminate()
        try:
            prometheus.wait(30)
        except subprocess.TimeoutExpired:
            prometheus.kill()
            prometheus.wait(10)
    assert svc.terminate() == 0
