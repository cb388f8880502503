"""The permissions stream-monitor needs on a cluster that enforces ACLs: one list, three uses.

:func:`required_permissions` is the least-privilege set of a configuration. ``stream-monitor acls``
prints it (``--apply`` creates it with the AdminClient, ``--delete`` removes it), the README's
"Security" section documents it, and the service checks it at start-up (:func:`check_access`, with
the authorised operations the broker reports for the principal, KIP-430) before it touches a topic:
a missing permission is one error that names the principal, the resource and the operation, not a
crash in the middle of the consume loop.

>>> from stream_monitor.config import AppConfig, KafkaSettings, MetricsSettings
>>> common = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "monitor"}
>>> app = AppConfig(KafkaSettings("b:9092", common=common), MetricsSettings(), ())
>>> principal_of(app)
'User:monitor'
>>> [p.describe() for p in required_permissions(app)][:3]
['READ on topic predictions', 'READ on topic labels', 'WRITE on topic retrain-triggers']
>>> missing_message([Permission("topic", "labels", "READ", "consume the label events")], "User:monitor")
'not authorised: principal User:monitor lacks READ on topic labels (consume the label events)'
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from stream_monitor.config import AppConfig
from stream_monitor.kafka.clients import (
    STATE_MAX_MESSAGE_BYTES,
    KafkaIOError,
    admin_client,
    connection_config,
)

__all__ = [
    "REGISTRY_READER_GROUP",
    "STATE_READER_GROUP",
    "AccessReport",
    "Permission",
    "acl_bindings",
    "acls_command",
    "apply_acls",
    "check_access",
    "denied_message",
    "format_kafka_acls",
    "format_table",
    "missing_message",
    "output_topic_configs",
    "principal_of",
    "read_properties",
    "required_permissions",
    "transactional_id_prefix",
]

#: The ``group.id`` of the state restore's reader (:func:`stream_monitor.kafka.state.read_latest`): it
#: reads assigned partitions and commits nothing, but librdkafka still looks up the group's coordinator
#: (FindCoordinator needs DESCRIBE on the group). ``tests/test_security_kafka.py`` keeps them equal.
STATE_READER_GROUP = "stream-monitor-state-reader"
#: The ``group.id`` of the reference registry's reader (kafka/registry.py): assigned partitions, nothing
#: committed, a coordinator lookup all the same.
REGISTRY_READER_GROUP = "stream-monitor-registry-reader"

_RESOURCE_TYPES = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactional_id": ResourceType.TRANSACTIONAL_ID,
}
#: The broker's error for each resource kind when an operation on it is denied.
_DENIED = {
    "topic": KafkaError.TOPIC_AUTHORIZATION_FAILED,
    "group": KafkaError.GROUP_AUTHORIZATION_FAILED,
    "transactional_id": KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}
_SASL_USER_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class Permission:
    """One ACL the service needs: ``operation`` on a resource (``prefixed``: every name starting so)."""

    resource: str  # "topic", "group" or "transactional_id"
    name: str
    operation: str  # "READ", "WRITE", "DESCRIBE" or "CREATE"
    why: str
    prefixed: bool = False

    def describe(self) -> str:
        """``READ on topic predictions``; ``WRITE on transactional id prefix stream-monitor-g-``."""
        kind = self.resource.replace("_", " ") + (" prefix" if self.prefixed else "")
        return f"{self.operation} on {kind} {self.name}"


def transactional_id_prefix(group: str) -> str:
    """What every ``transactional.id`` of the group's members starts with (exactly-once mode); the
    rest is random per process, so the ACL is a prefixed one."""
    return f"stream-monitor-{group}-"


def output_topic_configs() -> dict[str, dict[str, str]]:
    """Topic configs the service creates its topics with, by role (triggers, dlq, state, and the
    reference registry: compacted, the newest record per model version is the table)."""
    big = {"max.message.bytes": str(STATE_MAX_MESSAGE_BYTES)}
    compacted = {"cleanup.policy": "compact", **big}
    return {"triggers": {}, "dlq": dict(big), "state": dict(compacted), "references": dict(compacted)}


def required_permissions(app: AppConfig, *, create_topics: bool = False) -> list[Permission]:
    """The least-privilege ACL set of ``app`` (every operation that implies DESCRIBE is enough for
    it: READ and WRITE do).

    No ``IDEMPOTENT_WRITE`` on the cluster: since Kafka 2.8 WRITE on a topic allows an idempotent
    producer. ``create_topics``: also CREATE on the three output topics, for a service that should
    create them itself (otherwise create them with ``stream-monitor topics create`` as an admin).
    """
    k = app.kafka
    t = k.topics
    perms = [
        Permission("topic", t.predictions, "READ", "consume the prediction events"),
        Permission("topic", t.labels, "READ", "consume the label events"),
        Permission("topic", t.triggers, "WRITE", "produce retrain triggers"),
        Permission("topic", t.dlq, "WRITE", "produce dead letters"),
        Permission("topic", t.state, "READ", "restore partition-task state"),
        Permission("topic", t.state, "WRITE", "checkpoint partition-task state"),
        Permission("group", k.group_id, "READ", "join the consumer group and commit its offsets"),
        Permission(
            "group", STATE_READER_GROUP, "DESCRIBE", "the state restore's reader looks up its coordinator"
        ),
    ]
    if app.aggregation.mode == "two_stage":
        perms += [
            Permission("topic", t.partials, "WRITE", "send shard reports to the model stage (two_stage)"),
            Permission("topic", t.partials, "READ", "merge shard reports in the model stage (two_stage)"),
        ]
    else:  # two-stage judges against the configured references only
        perms += [
            Permission("topic", t.references, "READ", "read the reference registry (all of it)"),
            Permission(
                "group", REGISTRY_READER_GROUP, "DESCRIBE", "the registry's reader looks up its coordinator"
            ),
        ]
    if k.exactly_once:
        perms.append(
            Permission(
                "transactional_id",
                transactional_id_prefix(k.group_id),
                "WRITE",
                "one transaction per checkpoint (kafka.exactly_once)",
                prefixed=True,
            )
        )
    if create_topics:
        internal = (t.partials,) if app.aggregation.mode == "two_stage" else (t.references,)
        for name in (t.triggers, t.dlq, t.state, *internal):
            perms.append(Permission("topic", name, "CREATE", "create the output topic when it is missing"))
    return perms


def principal_of(app: AppConfig) -> str:
    """The principal the broker sees for these settings, as ACLs name it (best effort).

    SASL PLAIN/SCRAM: ``User:<sasl.username>``; other mechanisms and TLS client certificates map to
    a principal the broker decides (its principal builder), named in words.
    """
    settings = {**app.kafka.common, **app.kafka.consumer}
    protocol = str(settings.get("security.protocol", "plaintext")).lower()
    mechanism = str(settings.get("sasl.mechanism", settings.get("sasl.mechanisms", "GSSAPI"))).upper()
    user = settings.get("sasl.username")
    if protocol.startswith("sasl_"):
        if mechanism in _SASL_USER_MECHANISMS and user:
            return f"User:{user}"
        return f"the {mechanism} principal of this client"
    if protocol == "ssl":
        return "the principal of this client's TLS certificate"
    return "User:ANONYMOUS"


def missing_message(missing: Sequence[Permission], principal: str, *, one_of: bool = False) -> str:
    """One sentence naming the principal and every missing permission with what it is for
    (``one_of``: the broker did not say which of them)."""
    items = "; ".join(f"{p.describe()} ({p.why})" for p in missing)
    return f"not authorised: principal {principal} lacks {'one of: ' if one_of else ''}{items}"


def denied_message(
    error: KafkaError, app: AppConfig, *, topic: str | None = None, operation: str | None = None
) -> str | None:
    """A running client's authorisation error in the words of :func:`missing_message` (``None`` for
    any other error). ``topic``/``operation``: what the failed request was about, when known (the
    broker's error does not say).

    >>> from stream_monitor.config import AppConfig, KafkaSettings, MetricsSettings
    >>> app = AppConfig(KafkaSettings("b:9092", group_id="g"), MetricsSettings(), ())
    >>> print(denied_message(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED), app))
    not authorised: principal User:ANONYMOUS lacks READ on group g (join the consumer group and commit \
its offsets) (the broker: Broker: Group authorization failed)
    """
    code = error.code()
    perms = required_permissions(app)
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        wanted = [
            p
            for p in perms
            if p.resource == "topic"
            and (topic is None or p.name == topic)
            and (operation is None or p.operation == operation)
        ]
    elif code == KafkaError.GROUP_AUTHORIZATION_FAILED:
        wanted = [p for p in perms if p.resource == "group" and p.name == app.kafka.group_id]
    elif code == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
        prefix = transactional_id_prefix(app.kafka.group_id)
        wanted = [Permission("transactional_id", prefix, "WRITE", "kafka.exactly_once", prefixed=True)]
    elif code == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
        wanted = [
            Permission(
                "cluster", "kafka-cluster", "IDEMPOTENT_WRITE", "idempotent producer, brokers before 2.8"
            )
        ]
    else:
        return None
    message = missing_message(wanted, principal_of(app), one_of=len(wanted) > 1)
    return f"{message} (the broker: {error.str()})"


@dataclass
class AccessReport:
    """What :func:`check_access` found."""

    missing: list[Permission] = field(default_factory=list)
    #: Output topics that do not exist yet (the service creates them; CREATE was checked).
    absent_outputs: list[str] = field(default_factory=list)
    #: Resources whose permissions could not be checked (an old broker, a describe that kept failing).
    unchecked: list[str] = field(default_factory=list)


def _error_of(exc: BaseException) -> KafkaError | None:
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return err if isinstance(err, KafkaError) else None


def _authorised(
    results: Mapping[str, Any], resource: str, timeout: float
) -> tuple[dict[str, set[str] | None], set[str]]:
    """Per name, the operations the principal may perform (``None``: the broker does not say), and the
    names that do not exist. Raises :class:`KafkaIOError` on an error that may pass."""
    ops: dict[str, set[str] | None] = {}
    absent: set[str] = set()
    for name, future in results.items():
        try:
            description = future.result(timeout=timeout)
        except KafkaException as exc:
            err = _error_of(exc)
            code = None if err is None else err.code()
            if code == _DENIED[resource]:
                ops[name] = set()
            elif code == KafkaError.UNKNOWN_TOPIC_OR_PART:
                absent.add(name)
            else:  # a coordinator moving, a timeout: the caller asks again
                raise KafkaIOError(f"describing {resource} {name}: {exc}") from exc
            continue
        authorised = getattr(description, "authorized_operations", None)
        ops[name] = None if authorised is None else {op.name for op in authorised}
    return ops, absent


def check_access(
    admin: AdminClient, app: AppConfig, *, timeout: float = 10.0, create_topics: bool = True
) -> AccessReport:
    """Which of :func:`required_permissions` the connected principal lacks, asked of the broker.

    Topics and groups are described with their authorised operations; an output topic that does not
    exist yet needs CREATE (asked with a validate-only CreateTopics) when ``create_topics``. The
    transactional id cannot be described: ``init_transactions`` finds a missing one. Raises
    :class:`KafkaIOError` when the broker cannot answer now (call again).
    """
    perms = required_permissions(app)
    report = AccessReport()
    topics = sorted({p.name for p in perms if p.resource == "topic"})
    groups = sorted({p.name for p in perms if p.resource == "group"})
    try:
        topic_futures = admin.describe_topics(
            TopicCollection(topics), include_authorized_operations=True, request_timeout=timeout
        )
        group_futures = admin.describe_consumer_groups(
            groups, include_authorized_operations=True, request_timeout=timeout
        )
    except KafkaException as exc:
        raise KafkaIOError(f"cannot describe the topics and groups: {exc}") from exc
    topic_ops, absent = _authorised(topic_futures, "topic", timeout)
    group_ops, _ = _authorised(group_futures, "group", timeout)
    allowed = {"topic": topic_ops, "group": group_ops}
    for p in perms:
        if p.resource not in allowed or p.name in absent:
            continue
        ops = allowed[p.resource].get(p.name)
        if ops is None:
            report.unchecked.append(f"{p.resource} {p.name}")
        elif p.operation not in ops and "ALL" not in ops:
            report.missing.append(p)
    t = app.kafka.topics
    configs = output_topic_configs()
    outputs = {t.triggers: configs["triggers"], t.dlq: configs["dlq"], t.state: configs["state"]}
    report.absent_outputs = [name for name in outputs if name in absent]
    if report.absent_outputs and create_topics:
        report.missing.extend(_check_create(admin, report.absent_outputs, outputs, timeout))
    report.unchecked = sorted(set(report.unchecked))
    return report


def _check_create(
    admin: AdminClient, names: Sequence[str], configs: Mapping[str, Mapping[str, str]], timeout: float
) -> list[Permission]:
    """CREATE permissions missing for ``names`` (a validate-only CreateTopics creates nothing)."""
    wanted = [NewTopic(n, num_partitions=1, replication_factor=-1, config=dict(configs[n])) for n in names]
    missing = []
    try:
        futures = admin.create_topics(wanted, operation_timeout=timeout, validate_only=True)
    except KafkaException as exc:
        raise KafkaIOError(f"cannot validate the creation of {', '.join(names)}: {exc}") from exc
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            err = _error_of(exc)
            if err is not None and err.code() in (
                KafkaError.TOPIC_AUTHORIZATION_FAILED,
                KafkaError.CLUSTER_AUTHORIZATION_FAILED,
            ):
                missing.append(
                    Permission(
                        "topic",
                        name,
                        "CREATE",
                        "the output topic does not exist; or create it as an admin: stream-monitor "
                        "topics create",
                    )
                )
            # Any other problem (an invalid config, a race with another member) shows when the
            # service creates the topic for real.
    return missing


def acl_bindings(perms: Iterable[Permission], principal: str, host: str = "*") -> list[AclBinding]:
    """The ALLOW bindings of ``perms`` for ``principal`` (``User:<name>``)."""
    return [
        AclBinding(
            _RESOURCE_TYPES[p.resource],
            p.name,
            ResourcePatternType.PREFIXED if p.prefixed else ResourcePatternType.LITERAL,
            principal,
            host,
            AclOperation[p.operation],
            AclPermissionType.ALLOW,
        )
        for p in perms
    ]


def _as_filter(binding: AclBinding) -> AclBindingFilter:
    return AclBindingFilter(
        binding.restype,
        binding.name,
        binding.resource_pattern_type,
        binding.principal,
        binding.host,
        binding.operation,
        binding.permission_type,
    )


def apply_acls(admin: AdminClient, bindings: Sequence[AclBinding], *, delete: bool = False) -> int:
    """Create (or with ``delete``, remove) exactly ``bindings``; returns how many.

    Raises :class:`KafkaIOError` naming the first binding the broker refused (e.g. a principal that
    may not alter ACLs: the admin's settings go in ``--command-config``).
    """
    if not bindings:
        return 0
    try:
        if delete:
            futures: dict[Any, Any] = admin.delete_acls([_as_filter(b) for b in bindings], request_timeout=30)
        else:
            futures = admin.create_acls(list(bindings), request_timeout=30)
    except KafkaException as exc:
        raise KafkaIOError(f"cannot {'delete' if delete else 'create'} ACLs: {exc}") from exc
    for binding, future in futures.items():
        try:
            future.result(timeout=60)
        except KafkaException as exc:
            action = "delete" if delete else "create"
            err = _error_of(exc)
            hint = (
                ": the connected principal may not alter ACLs (ALTER on the cluster); give an admin's "
                "settings with --command-config"
                if err is not None and err.code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
                else f": {exc}"
            )
            raise KafkaIOError(f"cannot {action} the ACL {binding}{hint}") from exc
    return len(bindings)


def format_table(perms: Sequence[Permission], principal: str) -> str:
    """The set as a readable table (what ``stream-monitor acls`` prints)."""
    rows = [
        ("ALLOW", principal, p.operation, p.resource, p.name, "prefixed" if p.prefixed else "literal", p.why)
        for p in perms
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:6], widths, strict=True)) + "  " + r[6] for r in rows
    )


_KAFKA_ACLS_RESOURCE = {"topic": "--topic", "group": "--group", "transactional_id": "--transactional-id"}


def format_kafka_acls(perms: Sequence[Permission], principal: str, bootstrap: str) -> str:
    """The same set as ``kafka-acls.sh`` commands (for people who apply ACLs with Kafka's own tools)."""
    lines = []
    for p in perms:
        pattern = " --resource-pattern-type prefixed" if p.prefixed else ""
        lines.append(
            f"kafka-acls.sh --bootstrap-server {bootstrap} --command-config admin.properties --add "
            f"--allow-principal {principal} --operation {p.operation.capitalize()} "
            f"{_KAFKA_ACLS_RESOURCE[p.resource]} {p.name}{pattern}"
        )
    return "\n".join(lines)


def read_properties(path: str) -> dict[str, str]:
    """``key=value`` lines (``#`` comments), as Kafka's ``--command-config`` files: librdkafka settings.

    Raises :class:`KafkaIOError` when the file cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise KafkaIOError(f"cannot read {path}: {exc.strerror or exc}") from None
    settings: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.strip() and not key.startswith(("#", "!")):
            settings[key.strip()] = value.strip()
    return settings


def acls_command(
    app: AppConfig,
    *,
    principal: str | None = None,
    create_topics: bool = False,
    action: str = "print",
    command_config: str | None = None,
    fmt: str = "table",
    out: TextIO | None = None,
) -> int:
    """``stream-monitor acls``: print the ACL set of ``app`` for ``principal`` (default: the
    configuration's SASL user) and, with ``action`` ``apply`` or ``delete``, create or remove it with
    the AdminClient, connected with the configuration's settings overridden by ``command_config`` (a
    file of the admin's librdkafka settings)."""
    stream = out if out is not None else sys.stdout
    k = app.require_kafka()
    who = principal or principal_of(app)
    if not who.startswith("User:"):
        raise KafkaIOError(
            f"--principal is needed: the configuration's principal is {who}, which names no user "
            "(ACLs name principals as User:<name>)"
        )
    perms = required_permissions(app, create_topics=create_topics)
    if fmt == "kafka-acls":
        print(format_kafka_acls(perms, who, k.bootstrap_servers), file=stream)
    else:
        eos, create = "on" if k.exactly_once else "off", "yes" if create_topics else "no"
        print(
            f"# ACLs of {who} for consumer group {k.group_id} (exactly_once: {eos}; output topic "
            f"creation: {create})",
            file=stream,
        )
        print(format_table(perms, who), file=stream)
    if action == "print":
        return 0
    connection = {**k.common, **(read_properties(command_config) if command_config else {})}
    admin = admin_client(connection_config(k.bootstrap_servers, connection))
    done = apply_acls(admin, acl_bindings(perms, who), delete=action == "delete")
    print(f"{'deleted' if action == 'delete' else 'created'} {done} ACL binding(s) for {who}", file=stream)
    return 0
