"""Security on a real authenticated broker (``kafka.sh start --secure``: SASL_SSL with SCRAM-SHA-512, a
throw-away CA, the standard authoriser with ``allow.everyone.if.no.acl.found=false``; see
``secure_kafka.py``).

- the service runs end to end as a non-super user holding exactly the ACLs ``stream-monitor acls``
  prints (and ``--apply`` created): inputs consumed, triggers, dead letters, state records and
  committed offsets, at-least-once and exactly-once;
- each ACL of that set taken away (one at a time) gives one error naming the principal, the resource
  and the operation, ``/readyz`` 503 with that reason, no traceback; granting it lets the service
  start; the start-up timeout ends the wait with exit 1;
- a wrong password, a CA that is not given, an expired certificate and a certificate for another host
  each stop start-up at once (well within ``kafka.startup_timeout_seconds``) naming the cause;
- no secret (SASL password, key-store password, the state records' HMAC key) appears in any output.

Services of one test run side by side (each waits on its own conditions): the module takes about a
minute and a half on two cores, most of it the broker and the service processes starting.
"""

from __future__ import annotations

import inspect
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import secure_kafka
from confluent_kafka import Producer
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
)
from confluent_kafka.admin import ResourceType as KafkaResourceType
from kafka_fixtures import unique_name
from secure_kafka import SecureBroker, make_client_keystore, tail
from service_fixtures import (
    ROOT,
    ServiceProcess,
    ServiceTopics,
    committed,
    dead_letters,
    end_offsets,
    free_port,
    produce,
    read_topic,
    synthetic,
    triggers,
    write_config,
)

from stream_monitor.config import load_config
from stream_monitor.kafka import state
from stream_monitor.kafka.acls import STATE_READER_GROUP, acl_bindings, required_permissions

pytestmark = pytest.mark.kafka
secure_broker = secure_kafka.secure_broker  # the session fixture, found by name

PASSWORD_ENV = "SM_TEST_KAFKA_PASSWORD"
KEYSTORE_PASSWORD_ENV = "SM_TEST_KEYSTORE_PASSWORD"
STATE_KEY_ENV = "SM_TEST_STATE_KEY"
#: Deadline of a condition (bounds a failure on a busy machine; never paces a passing test).
WAIT = 90.0


def service_config(
    path: Path,
    broker: SecureBroker,
    topics: ServiceTopics,
    group: str,
    port: int,
    user: str,
    *,
    bootstrap: str | None = None,
    with_ca: bool = True,
    exactly_once: bool = False,
    startup_timeout: float = 120.0,
    common: dict[str, str] | None = None,
    top_extra: dict[str, Any] | None = None,
) -> Path:
    """The test service's configuration for ``user`` on the secure broker; the password comes from
    ``$SM_TEST_KAFKA_PASSWORD`` (a secret is never written in the file)."""
    settings = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": "${" + PASSWORD_ENV + "}",
        **({"ssl.ca.location": broker.ca_location} if with_ca else {}),
        **(common or {}),
    }
    return write_config(
        path,
        bootstrap or broker.bootstrap,
        topics,
        group,
        port,
        exactly_once=exactly_once,
        kafka_extra={"common": settings, "startup_timeout_seconds": startup_timeout},
        top_extra=top_extra,
    )


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_MONITOR_")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "stream_monitor.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(ROOT),
        env=environ,
        check=False,
    )


def errors_of(log: str) -> list[str]:
    return [line for line in log.splitlines() if " ERROR " in line or " CRITICAL " in line]


def readyz(svc: ServiceProcess) -> tuple[int, dict[str, Any]]:
    code, body = svc._get("/readyz")
    return code, orjson.loads(body)


def wait_exit(svc: ServiceProcess, timeout: float = WAIT) -> int:
    assert svc.proc is not None
    try:
        return svc.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running after {timeout}s:\n{tail(svc.log())}") from None


def principal_acls(broker: SecureBroker, principal: str) -> set[tuple[Any, ...]]:
    """The ACL bindings of ``principal`` on the broker, as comparable tuples."""
    flt = AclBindingFilter(
        KafkaResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        principal,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    found = broker.admin().describe_acls(flt, request_timeout=30).result(timeout=30)
    return {_key(b) for b in found}


def _key(b: Any) -> tuple[Any, ...]:
    return (b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type)


def processed_all(svc: ServiceProcess, predictions: int, labels: int) -> bool:
    done = svc.processed()
    return done["predictions"] + done["rejected"] >= predictions and done["labels"] >= labels


# ---------------------------------------------------------------------------------------------- 1, 2


def test_the_service_runs_end_to_end_with_exactly_the_documented_acls(
    secure_broker: SecureBroker, services: Any, tmp_path: Path
) -> None:
    broker = secure_broker
    admin = broker.admin_config
    n = 4000
    runs: dict[str, tuple[ServiceProcess, ServiceTopics, str, str]] = {}
    for mode in ("at-least-once", "exactly-once"):
        user, password = broker.add_user(f"monitor-{mode}")
        topics = broker.create_topics()
        group = unique_name(f"group-{mode}")
        port = free_port()
        env = {PASSWORD_ENV: password}
        cfg = service_config(
            tmp_path / f"{mode}.yaml", broker, topics, group, port, user, exactly_once=mode == "exactly-once"
        )
        # The documented way: `stream-monitor acls --apply` run by the admin (--command-config).
        admin_file = str(broker.admin_properties)
        applied = cli("acls", "--config", str(cfg), "--apply", "--command-config", admin_file, env=env)
        assert applied.returncode == 0, applied.stderr
        expected = acl_bindings(required_permissions(load_config(str(cfg), env=env)), f"User:{user}")
        assert f"created {len(expected)} ACL binding(s) for User:{user}" in applied.stdout
        # Exactly that set, nothing more: the principal is no super user and has no other ACL.
        assert principal_acls(broker, f"User:{user}") == {_key(b) for b in expected}
        producer = broker.producer()
        produce(producer, topics, synthetic(n, drift_after=n // 2, seed=21))
        producer.produce(topics.predictions, b"{not json", key=b"poison", headers=[("trace", b"t-1")])
        producer.flush(30)
        runs[mode] = (services(cfg, port, tmp_path / f"{mode}.log", env), topics, group, user)

    for svc, _, _, _ in runs.values():
        svc.wait_for(lambda s=svc: processed_all(s, n + 1, n), WAIT, "every event processed")
        svc.wait_for(lambda s=svc: s.ready() is True, WAIT, "ready")
    for mode, (svc, topics, group, _) in runs.items():
        assert svc.terminate() == 0, tail(svc.log())
        log = svc.log()
        assert "stopped cleanly" in log
        # A clean run: no error, no denied request, no retried state read, no traceback.
        assert errors_of(log) == [], log
        for bad in ("Traceback", "authoriz", "not authorised", "reading state topic"):
            assert bad not in log, (mode, bad, tail(log))
        for topic in (topics.predictions, topics.labels):
            assert committed(broker.bootstrap, group, topic, 2, admin) == end_offsets(
                broker.bootstrap, topic, 2, admin
            ), (mode, topic)
        fired = triggers(broker.bootstrap, topics.triggers, admin)
        assert fired and {t["kind"] for t in fired} & {"data_drift", "combined"}, mode
        assert len({t["trigger_id"] for t in fired}) == len(fired) or mode == "at-least-once"
        [letter] = dead_letters(broker.bootstrap, topics.dlq, admin)
        headers = dict(letter.headers() or [])
        assert letter.value() == b"{not json" and headers["reason"] == b"malformed_json", headers
        assert headers["original.trace"] == b"t-1"
        records = read_topic(broker.bootstrap, topics.state, config=admin)
        assert {m.key() for m in records} == {f"{group}/{p}".encode() for p in (0, 1)}, mode

    # Restarted, each member restores both partition-tasks from the state topic (READ on it, and the
    # state reader's group), cleanly.
    for svc, _, _, _ in runs.values():
        svc.start()
    for mode, (svc, _, _, _) in runs.items():
        svc.wait_for(lambda s=svc: s.ready() is True, WAIT, "ready again")
        assert svc.terminate() == 0, tail(svc.log())
        log = svc.log()
        assert log.count("restored 2 of 2 task(s)") == 1 and errors_of(log) == [], (mode, tail(log))
        assert "reading state topic" not in log and "Traceback" not in log, (mode, tail(log))


def test_the_state_readers_group_is_the_one_the_acls_name() -> None:
    # kafka/state.py's reader needs DESCRIBE on its group: the ACL set names the same group id.
    assert f'"group.id": "{STATE_READER_GROUP}"' in inspect.getsource(state.read_latest)


# ---------------------------------------------------------------------------------------------- 2

#: Each case drops one permission of the set: (case, resource, role or "group", operation).
MISSING = [
    ("input-read", "topic", "predictions", "READ"),
    ("triggers-write", "topic", "triggers", "WRITE"),
    ("state-read", "topic", "state", "READ"),
    ("state-write", "topic", "state", "WRITE"),
    ("group-read", "group", "group", "READ"),
]


def test_each_missing_acl_is_one_error_naming_principal_resource_and_operation(
    secure_broker: SecureBroker, services: Any, tmp_path: Path
) -> None:
    broker = secure_broker
    topics = broker.create_topics()
    cases: dict[str, dict[str, Any]] = {}
    for case, resource, role, operation in MISSING:
        user, password = broker.add_user(f"m-{case}")
        group = unique_name(f"group-{case}")
        name = group if role == "group" else getattr(topics, role)
        port = free_port()
        env = {PASSWORD_ENV: password}
        # state-write: a short start-up timeout shows the give-up; the others wait (and one is granted).
        timeout = 6.0 if case == "state-write" else 300.0
        cfg = service_config(tmp_path / f"{case}.yaml", broker, topics, group, port, user,
                             startup_timeout=timeout)  # fmt: skip
        perms = required_permissions(load_config(str(cfg), env=env))
        dropped = [p for p in perms if (p.resource, p.name, p.operation) == (resource, name, operation)]
        assert len(dropped) == 1, (case, perms)
        principal = f"User:{user}"
        broker.grant(acl_bindings([p for p in perms if p not in dropped], principal))
        svc = services(cfg, port, tmp_path / f"{case}.log", env)
        cases[case] = {"svc": svc, "principal": principal, "dropped": dropped[0], "name": name}
    # The transactional id of exactly-once mode: only init_transactions can tell (a prefixed ACL).
    user, password = broker.add_user("m-transactional-id")
    group = unique_name("group-transactional-id")
    port = free_port()
    env = {PASSWORD_ENV: password}
    cfg = service_config(tmp_path / "txn.yaml", broker, topics, group, port, user, exactly_once=True)
    perms = required_permissions(load_config(str(cfg), env=env))
    txn = next(p for p in perms if p.resource == "transactional_id")
    broker.grant(acl_bindings([p for p in perms if p is not txn], f"User:{user}"))
    txn_svc = services(cfg, port, tmp_path / "txn.log", env)

    for case, c in cases.items():
        svc, dropped = c["svc"], c["dropped"]
        expected = (
            f"not authorised: principal {c['principal']} lacks {dropped.operation} on "
            f"{dropped.resource} {c['name']} ({dropped.why})"
        )
        if case == "state-write":
            assert wait_exit(svc) == 1, tail(svc.log())
            log = svc.log()
            assert errors_of(log)[0].endswith(
                f"{expected}; grant them (`stream-monitor acls --config FILE` prints the whole set, "
                'README "Security"); waiting up to 6s (kafka.startup_timeout_seconds)'
            ), log
            assert errors_of(log)[1].endswith(
                "giving up: still not authorised after 6s (kafka.startup_timeout_seconds)"
            )
            assert len(errors_of(log)) == 2 and "Traceback" not in log, log
            continue

        def reported(s: ServiceProcess = svc, want: str = expected) -> bool:
            code, body = readyz(s)
            return code == 503 and body.get("reason") == want

        svc.wait_for(reported, WAIT, f"{case}: /readyz 503 naming the missing permission")
        log = svc.log()
        assert [e.split(" ERROR ", 1)[1] for e in errors_of(log)] == [
            f"stream_monitor.kafka.service: {expected}; grant them (`stream-monitor acls --config FILE` "
            'prints the whole set, README "Security"); waiting up to 300s (kafka.startup_timeout_seconds)'
        ], log
        assert "Traceback" not in log

    # Granted while it waits: the service starts, without a restart.
    granted = cases["group-read"]
    broker.grant(acl_bindings([granted["dropped"]], granted["principal"]))
    svc = granted["svc"]
    svc.wait_for(lambda: svc.ready() is True, WAIT, "ready once the group ACL is granted")
    assert "the missing permissions were granted: starting" in svc.log()

    assert wait_exit(txn_svc) == 1
    log = txn_svc.log()
    assert errors_of(log) == [
        next(line for line in log.splitlines() if "ERROR stream_monitor.kafka.service: stopping:" in line)
    ], log
    assert (
        f"stopping: not authorised: principal User:{user} lacks WRITE on transactional id prefix "
        f"{txn.name} (kafka.exactly_once)" in errors_of(log)[0]
    ), log
    assert "Traceback" not in log

    for case, c in cases.items():
        if c["svc"].alive():
            assert c["svc"].terminate() == 0, (case, tail(c["svc"].log()))


# ---------------------------------------------------------------------------------------------- 3


def test_wrong_credentials_and_certificates_fail_fast_naming_the_cause(
    secure_broker: SecureBroker, services: Any, tmp_path: Path
) -> None:
    broker = secure_broker
    user, password = broker.add_user("m-credentials")
    topics = broker.create_topics()
    startup_timeout = 30.0
    expired, wronghost = broker.listeners["expired"], broker.listeners["wronghost"]
    cases = {
        "bad-password": (
            {"password": "Wrong-" + password},
            f"authentication failed at {broker.bootstrap}: the broker rejected the SASL SCRAM-SHA-512 "
            f"credentials of user '{user}' (Authentication failed during authentication due to invalid "
            "credentials with SASL mechanism SCRAM-SHA-512): check kafka.common.sasl.username and "
            "sasl.password",
        ),
        "ca-not-given": (
            {"with_ca": False},
            f"TLS handshake with {broker.bootstrap} failed: the broker's certificate is not signed by any CA "
            "this host trusts (kafka.common.ssl.ca.location is not set) (self-signed certificate in "
            "certificate chain): set kafka.common.ssl.ca.location to the CA certificate that signed it",
        ),
        "expired": (
            {"bootstrap": expired},
            f"TLS handshake with {expired} failed: the broker's certificate has expired: renew it (or check "
            "this host's clock)",
        ),
        "wrong-host": (
            {"bootstrap": wronghost},
            f"TLS handshake with {wronghost} failed: the broker's certificate does not match the host name "
            f"127.0.0.1 (IP address mismatch, certificate is not valid for '127.0.0.1'.): connect with a "
            "name the certificate lists, or give the broker a certificate for this name",
        ),
    }
    started: dict[str, tuple[ServiceProcess, float, str]] = {}
    for case, (options, cause) in cases.items():
        port = free_port()
        cfg = service_config(
            tmp_path / f"{case}.yaml",
            broker,
            topics,
            unique_name(case),
            port,
            user,
            bootstrap=options.get("bootstrap"),
            with_ca=options.get("with_ca", True),
            startup_timeout=startup_timeout,
        )
        env = {PASSWORD_ENV: options.get("password", password)}
        started[case] = (services(cfg, port, tmp_path / f"{case}.log", env), time.monotonic(), cause)
    for case, (svc, since, cause) in started.items():
        assert wait_exit(svc) == 1, (case, tail(svc.log()))
        took = time.monotonic() - since
        log = svc.log()
        address = cases[case][0].get("bootstrap", broker.bootstrap)
        # One error, naming the cause (librdkafka's lines about the attempt are warnings), and a short log.
        [error] = errors_of(log)
        assert error.endswith(f"giving up: cannot connect to the Kafka cluster at {address}: {cause}"), (
            case,
            error,
        )
        assert len(log.splitlines()) < 10, (case, log)
        # Failed fast: not by waiting for kafka.startup_timeout_seconds (the process start included).
        assert took < startup_timeout and "startup_timeout_seconds" not in log, (case, took, log)
        assert "Traceback" not in log, log


# ---------------------------------------------------------------------------------------------- 6


def test_no_secret_appears_in_logs_pages_metrics_or_dead_letters(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    broker = secure_broker
    # Distinctive values: a match anywhere is a leak, never a coincidence.
    secret = "Sasl-Secret-" + os.urandom(8).hex()
    keystore_secret = "Keystore-Secret-" + os.urandom(8).hex()
    wrong_secret = "Wrong-Secret-" + os.urandom(8).hex()
    wrong_keystore_secret = "Wrong-Keystore-" + os.urandom(8).hex()
    state_key = "State-Key-" + os.urandom(16).hex()  # the HMAC key of the state records
    secrets = (secret, keystore_secret, wrong_secret, wrong_keystore_secret, state_key)
    user, _ = broker.add_user("m-secrets", password=secret)
    topics = broker.create_topics()
    keystore = make_client_keystore(tmp_path / "client.p12", keystore_secret)
    key_settings = {
        "ssl.keystore.location": str(keystore),
        "ssl.keystore.password": "${" + KEYSTORE_PASSWORD_ENV + "}",
    }
    group = unique_name("group-secrets")
    port = free_port()
    signed = {"state": {"hmac_key_env": [STATE_KEY_ENV]}}
    cfg = service_config(tmp_path / "ok.yaml", broker, topics, group, port, user, common=key_settings,
                         top_extra=signed)  # fmt: skip
    env = {PASSWORD_ENV: secret, KEYSTORE_PASSWORD_ENV: keystore_secret, STATE_KEY_ENV: state_key}
    broker.grant(acl_bindings(required_permissions(load_config(str(cfg), env=env)), f"User:{user}"))

    n = 2000
    producer: Producer = broker.producer()
    produce(producer, topics, synthetic(n, drift_after=None, seed=5))
    for i, raw in enumerate((b"{not json", b"[1, 2]", b'{"event_id": "x"}')):
        producer.produce(topics.predictions, raw, key=f"poison-{i}".encode(), headers=[("h", b"v")])
    producer.flush(30)

    outputs: dict[str, str] = {}
    runs = [
        # A healthy run, then failures whose messages must not quote a secret either: a wrong
        # password (at debug level: everything librdkafka and the service say), a wrong key-store
        # password (the client cannot even be created).
        ("ok", env, []),
        ("wrong-password", {**env, PASSWORD_ENV: wrong_secret}, ["--log-level", "DEBUG"]),
        ("wrong-keystore", {**env, KEYSTORE_PASSWORD_ENV: wrong_keystore_secret}, []),
    ]
    procs: dict[str, ServiceProcess] = {}
    try:
        for name, run_env, flags in runs:
            run_port = port if name == "ok" else free_port()
            config = cfg
            if name != "ok":  # the failing runs stop by themselves, well before this timeout
                config = service_config(tmp_path / f"{name}.yaml", broker, topics, unique_name(name),
                                        run_port, user, common=key_settings, startup_timeout=30,
                                        top_extra=signed)  # fmt: skip
            svc = ServiceProcess(config, run_port, tmp_path / f"{name}.log", run_env)
            svc.command = [sys.executable, "-m", "stream_monitor.cli", *flags, "run", "--config", str(config)]
            procs[name] = svc.start()

        ok = procs["ok"]
        ok.wait_for(lambda: processed_all(ok, n + 3, n), WAIT, "every event processed")
        ok.wait_for(lambda: ok.ready() is True, WAIT, "ready")
        for path in ("/", "/state", "/metrics", "/readyz", "/healthz"):
            code, body = ok._get(path)
            assert code == 200, (path, code)
            outputs[f"GET {path}"] = body.decode("utf-8", "replace")
        assert ok.terminate() == 0, tail(ok.log())
        for name in ("wrong-password", "wrong-keystore"):
            assert wait_exit(procs[name]) == 1, tail(procs[name].log())
        assert "rejected the SASL SCRAM-SHA-512 credentials" in procs["wrong-password"].log()
        assert "cannot create the Kafka admin client" in procs["wrong-keystore"].log()
        assert "mac verify failure" in procs["wrong-keystore"].log()
    finally:
        for svc in procs.values():
            svc.stop()

    for name, svc in procs.items():
        outputs[f"log of {name}"] = svc.log()
    admin = broker.admin_config
    letters = dead_letters(broker.bootstrap, topics.dlq, admin)
    assert len(letters) == 3
    state_records = read_topic(broker.bootstrap, topics.state, config=admin)
    assert state_records and all((m.value() or b"").startswith(b"SMSG") for m in state_records)  # signed
    for topic, records in (
        ("dlq", letters),
        ("triggers", read_topic(broker.bootstrap, topics.triggers, config=admin)),
        ("state", state_records),
    ):
        for i, m in enumerate(records):
            parts = [m.key() or b"", m.value() or b""]
            parts += [name.encode() + b"=" + (value or b"") for name, value in m.headers() or []]
            outputs[f"{topic} record {i}"] = b"\n".join(parts).decode("latin-1")
    assert len(outputs) > 10
    for where, text in outputs.items():
        for value in secrets:
            assert value not in text, f"a secret appears in {where}"
    # The same holds for their first characters (a truncated or wrapped print of a secret).
    pattern = re.compile("|".join(re.escape(s[:-4]) for s in secrets))
    leaks = {where for where, text in outputs.items() if pattern.search(text)}
    assert not leaks, leaks
    # Sanity: the user and the settings' names are there, so the greps read real outputs.
    assert user in outputs["log of wrong-password"] and "sasl" in outputs["log of wrong-password"].lower()


def test_kafka_sh_secure_broker_refuses_what_no_acl_allows(secure_broker: SecureBroker) -> None:
    """The broker really enforces ACLs: a fresh user sees no topic and cannot read one."""
    broker = secure_broker
    topics = broker.create_topics(outputs=False)
    user, password = broker.add_user("m-nothing")
    client = AdminClient(broker.client_config(user, password))
    visible = set(client.list_topics(timeout=30).topics)
    assert topics.predictions not in visible and topics.labels not in visible
    # ...while the admin (the super user) sees them.
    assert topics.predictions in broker.admin().list_topics(timeout=30).topics


def test_stopping_during_the_permission_wait_is_prompt_and_clean(
    secure_broker: SecureBroker, services: Any, tmp_path: Path
) -> None:
    broker = secure_broker
    user, password = broker.add_user("m-sigterm")
    topics = broker.create_topics()
    port = free_port()
    cfg = service_config(tmp_path / "c.yaml", broker, topics, unique_name("g"), port, user)
    svc = services(cfg, port, tmp_path / "svc.log", {PASSWORD_ENV: password})  # no ACL at all
    svc.wait_for(
        lambda: "not authorised" in (readyz(svc)[1].get("reason") or ""), WAIT, "waiting for permissions"
    )
    assert svc.proc is not None
    svc.proc.send_signal(signal.SIGTERM)
    stopping = time.monotonic()
    assert wait_exit(svc) == 0
    assert time.monotonic() - stopping < 10
    [error] = errors_of(svc.log())
    # Every permission of the set is named, in one line.
    for p in required_permissions(load_config(str(cfg), env={PASSWORD_ENV: password})):
        assert f"{p.operation} on {p.resource.replace('_', ' ')} {p.name} ({p.why})" in error
