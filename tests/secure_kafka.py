"""A real broker with authentication and authorisation for the security tests (``kafka.sh start --secure``).

The session fixture ``secure_broker`` makes the broker's throw-away CA (``kafka.sh tls``), adds two more
listeners whose certificates this module signs with that CA — one expired, one for another host name —
then starts a KRaft broker with a SASL_SSL (SCRAM-SHA-512) listener, the standard authoriser and
``allow.everyone.if.no.acl.found=false``. It is separate from the plain session broker (the other tests
keep using that one) and always started by this session, also under ``deploy/local/test.sh``. When it
cannot start, the tests fail under ``CI`` or ``STREAM_MONITOR_REQUIRE_KAFKA=1`` and are skipped otherwise.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AdminClient,
    NewTopic,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from kafka_fixtures import FETCH_TIMEOUT_S, KAFKA_SH, START_TIMEOUT_S, kafka_required, unique_name
from service_fixtures import ServiceTopics

from stream_monitor.kafka.acls import output_topic_configs

#: keytool's JVM starts in half the time with C1 only and the serial GC.
KEYTOOL = ["keytool", "-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC"]
#: The extra listeners the fixture asks kafka.sh for: name -> (keytool -gencert options, SAN).
BAD_CERTIFICATES = {
    # Valid for a day, a month ago: signed by the trusted CA, for the right host, and expired.
    "expired": (["-startdate", "-30d", "-validity", "1"], "dns:localhost,ip:127.0.0.1"),
    # Signed by the trusted CA, valid, for another host name only.
    "wronghost": (["-validity", "30"], "dns:wrong-host.example.invalid"),
}


def read_properties(path: Path) -> dict[str, str]:
    settings = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            settings[key.strip()] = value.strip()
    return settings


@dataclass
class SecureBroker:
    """The running secure broker: addresses, the CA, the admin's settings; users and ACLs."""

    directory: Path
    bootstrap: str
    ca_location: str
    admin_properties: Path
    listeners: dict[str, str] = field(default_factory=dict)
    _admin: AdminClient | None = field(default=None, repr=False)

    @property
    def admin_config(self) -> dict[str, str]:
        """librdkafka settings of the super user ``admin``."""
        return {**read_properties(self.admin_properties), "bootstrap.servers": self.bootstrap}

    def admin(self) -> AdminClient:
        """The admin's client (one, kept: a client destroyed under a pending request fails it)."""
        if self._admin is None:
            self._admin = AdminClient(self.admin_config)
        return self._admin

    def producer(self) -> Producer:
        return Producer(self.admin_config)

    def client_config(self, user: str, password: str, bootstrap: str | None = None) -> dict[str, str]:
        """What a client of ``user`` sets (as the service's ``kafka.common`` would)."""
        return {
            "bootstrap.servers": bootstrap or self.bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": user,
            "sasl.password": password,
            "ssl.ca.location": self.ca_location,
        }

    def add_user(self, prefix: str, password: str | None = None) -> tuple[str, str]:
        """A new SCRAM-SHA-512 user (``User:<name>``, no ACLs); returns (name, password) once the
        broker accepts the credential."""
        name = unique_name(prefix)
        password = password or secrets.token_urlsafe(18)
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
        futures = self.admin().alter_user_scram_credentials(
            [UserScramCredentialUpsertion(name, info, password.encode())]
        )
        for future in futures.values():
            future.result(timeout=30)
        # The credential reaches the broker through the metadata log: wait until it authenticates.
        client = AdminClient({**self.client_config(name, password), "log_level": 0})
        deadline = time.monotonic() + 30
        while True:
            try:
                client.list_topics(timeout=2)
                return name, password
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def grant(self, bindings: Iterable[AclBinding]) -> None:
        wanted = list(bindings)
        if wanted:
            for future in self.admin().create_acls(wanted, request_timeout=30).values():
                future.result(timeout=30)

    def revoke(self, bindings: Iterable[AclBinding]) -> None:
        filters = [
            AclBindingFilter(
                b.restype,
                b.name,
                b.resource_pattern_type,
                b.principal,
                b.host,
                b.operation,
                b.permission_type,
            )
            for b in bindings
        ]
        if filters:
            for future in self.admin().delete_acls(filters, request_timeout=30).values():
                future.result(timeout=30)

    def create_topics(self, partitions: int = 2, *, outputs: bool = True) -> ServiceTopics:
        """Fresh inputs with ``partitions`` each and (``outputs``) the three output topics, made by the
        admin as ``stream-monitor topics create`` would (a least-privilege service creates nothing)."""
        base = unique_name("predictions")
        topics = ServiceTopics(
            predictions=base,
            labels=base.replace("predictions", "labels"),
            triggers=base.replace("predictions", "triggers"),
            dlq=base.replace("predictions", "dlq"),
            state=base.replace("predictions", "state"),
        )
        configs = output_topic_configs()
        new = [NewTopic(topics.predictions, partitions, 1), NewTopic(topics.labels, partitions, 1)]
        if outputs:
            new += [
                NewTopic(topics.triggers, 1, 1, config=configs["triggers"]),
                NewTopic(topics.dlq, 1, 1, config=configs["dlq"]),
                NewTopic(topics.state, 1, 1, config=configs["state"]),
                NewTopic(topics.references, 1, 1, config=configs["references"]),
            ]
        admin = self.admin()
        for future in admin.create_topics(new, operation_timeout=30).values():
            future.result(timeout=60)
        deadline = time.monotonic() + 30
        names = {t.topic for t in new}
        while True:
            metadata = admin.list_topics(timeout=10).topics
            if all(
                n in metadata and all(p.leader >= 0 for p in metadata[n].partitions.values()) for n in names
            ):
                return topics
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {sorted(names)} have no leaders yet")
            time.sleep(0.05)


def _kafka_sh(*args: str, timeout: float) -> str:
    # Without this, kafka.sh start would only check an external broker instead of starting one.
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    result = subprocess.run(
        ["bash", str(KAFKA_SH), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"kafka.sh {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}"
        )
    return result.stdout


def _keytool(*args: str, password_file: Path) -> None:
    command = [*KEYTOOL, *args, "-storetype", "PKCS12", "-storepass:file", str(password_file), "-noprompt"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")


def make_listener_certificate(tls: Path, name: str, gencert_options: list[str], san: str) -> Path:
    """``tls/listener-<name>.p12``: a key and a certificate signed by kafka.sh's CA (``tls/ca.p12``),
    with ``gencert_options`` (validity) and ``san``; what kafka.sh turns into listener ``<NAME>``."""
    password = tls / "store.password"
    store = tls / f"listener-{name}.p12"
    csr, pem = tls / f"{name}.csr", tls / f"{name}.pem"
    _keytool("-genkeypair", "-alias", name, "-keyalg", "EC", "-groupname", "secp256r1", "-dname",
             f"CN={name}", "-keystore", str(store), password_file=password)  # fmt: skip
    _keytool("-certreq", "-alias", name, "-keystore", str(store), "-file", str(csr), password_file=password)
    _keytool("-gencert", "-alias", "ca", "-keystore", str(tls / "ca.p12"), "-infile", str(csr), "-outfile",
             str(pem), "-rfc", *gencert_options, "-ext", f"SAN={san}", password_file=password)  # fmt: skip
    _keytool("-importcert", "-alias", "ca", "-file", str(tls / "ca.pem"), "-keystore", str(store),
             password_file=password)  # fmt: skip
    _keytool(
        "-importcert", "-alias", name, "-file", str(pem), "-keystore", str(store), password_file=password
    )
    return store


def make_client_keystore(path: Path, password: str) -> Path:
    """A PKCS12 store with a client key and self-signed certificate, protected by ``password`` (the
    broker asks for no client certificate: the store only puts a key password into the settings)."""
    secret = path.with_suffix(".password")
    secret.write_text(password)
    _keytool("-genkeypair", "-alias", "client", "-keyalg", "EC", "-groupname", "secp256r1", "-dname",
             "CN=client", "-keystore", str(path), password_file=secret)  # fmt: skip
    secret.unlink()
    return path


def start_secure_broker(directory: Path) -> SecureBroker:
    if shutil.which("keytool") is None:
        raise RuntimeError("keytool not found (it comes with Java 17+)")
    _kafka_sh("fetch", timeout=FETCH_TIMEOUT_S)
    _kafka_sh("tls", str(directory), timeout=START_TIMEOUT_S)
    tls = directory / "tls"
    with ThreadPoolExecutor(len(BAD_CERTIFICATES)) as pool:
        made = [
            pool.submit(make_listener_certificate, tls, name, options, san)
            for name, (options, san) in BAD_CERTIFICATES.items()
        ]
        for future in made:
            future.result()
    out = _kafka_sh("start", str(directory), "--secure", timeout=START_TIMEOUT_S)
    values = dict(line.partition("=")[::2] for line in shlex.split(out, posix=True) if "=" in line)
    return SecureBroker(
        directory=directory,
        bootstrap=values["KAFKA_BOOTSTRAP_SERVERS"],
        ca_location=values["KAFKA_SSL_CA_LOCATION"],
        admin_properties=Path(values["KAFKA_ADMIN_CONFIG"]),
        listeners={
            k.removeprefix("KAFKA_LISTENER_").lower(): v
            for k, v in values.items()
            if k.startswith("KAFKA_LISTENER_")
        },
    )


@pytest.fixture(scope="session")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """The session's secure broker, started on first use and stopped at the end of the session."""
    directory = tmp_path_factory.mktemp("kafka-secure")
    try:
        broker = start_secure_broker(directory)
    except (RuntimeError, OSError, subprocess.TimeoutExpired, KeyError) as exc:
        with contextlib.suppress(Exception):
            _kafka_sh("stop", str(directory), timeout=START_TIMEOUT_S)
        message = f"no secure Kafka broker: {exc}"
        if kafka_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message + "\n(set CI or STREAM_MONITOR_REQUIRE_KAFKA=1 to make this an error)")
    try:
        yield broker
    finally:
        broker._admin = None  # no client left to log reconnect attempts to a stopped broker
        _kafka_sh("stop", str(directory), timeout=START_TIMEOUT_S)


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)
