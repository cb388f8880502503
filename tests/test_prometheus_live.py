"""A real Prometheus (Debian's binary) scraping the real service on a real broker (issue 4, point 6).

One module-scoped stack, all on loopback:

- fresh input topics on the session's broker and a ``stream-monitor run`` subprocess (small windows
  and warmup, so drift shows in seconds);
- ``prometheus`` with the project's scrape config (``deploy/prometheus/prometheus.yml``: the
  ``stream-monitor`` job pointed at the service's port, 1 s scrape and evaluation intervals, no
  Alertmanager) and the project's rule files. The only change to the rules is every ``for:`` set to
  2 s: the expressions are the project's, the hold times are covered by ``promtool test rules``.

Once Prometheus has scraped the idle service, a drifting stream (numeric features shifted by 1.5 from
event 2000 on) is produced at a bounded rate, and the test polls Prometheus's HTTP API until the drift
metrics are there and the key-feature drift and retrain-trigger alerts fire. The same live service
answers the dashboard test: every Grafana query names only metrics the service exports and parses.

Without ``prometheus`` on PATH the tests fail under ``CI`` (CI installs Debian's package) and skip
elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from stream_monitor.kafka.produce import produce_items, synthetic_events

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "deploy" / "prometheus"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
MODEL = "m"
EVENTS = 6000
DRIFT_AFTER = 2000
WAIT_S = 90.0


def require_binary(name: str) -> str:
    """Path of ``name``; a missing binary fails under CI and skips elsewhere."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found on PATH (Debian: apt-get install -y prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it (.ci/run)", pytrace=False)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class LiveStack:
    """The running service and Prometheus, with their addresses and logs."""

    service: subprocess.Popen[bytes]
    prometheus: subprocess.Popen[bytes]
    metrics_url: str
    prom_url: str
    service_log: Path
    prom_log: Path

    def logs(self) -> str:
        return (
            "--- service log (tail) ---\n"
            + self.service_log.read_text(errors="replace")[-3000:]
            + "\n--- prometheus log (tail) ---\n"
            + self.prom_log.read_text(errors="replace")[-2000:]
        )

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``; the ``data`` of a successful answer, else an assertion error."""
        url = f"{self.prom_url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        code, body = http_get(url)
        answer = json.loads(body)
        assert code == 200 and answer.get("status") == "success", f"{url}: {code} {body[:500]!r}"
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("alerts")["alerts"])

    def wait_for(self, what: Callable[[], bool], message: str, timeout: float = WAIT_S) -> float:
        """Poll until ``what()``; seconds waited, or fail with both logs."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            for proc, name in ((self.service, "service"), (self.prometheus, "prometheus")):
                if proc.poll() is not None:
                    pytest.fail(f"{name} exited ({proc.returncode}) while waiting: {message}\n{self.logs()}")
            try:
                if what():
                    return time.monotonic() - started
            except (OSError, AssertionError, ValueError):
                pass  # not up yet, or no answer yet
            time.sleep(0.5)
        pytest.fail(f"timed out after {timeout:.0f}s: {message}\n{self.logs()}")


def service_config(path: Path, bootstrap: str, topics: dict[str, str], group: str, port: int) -> Path:
    """A small service configuration: one regression model, warmup 1000, count windows of 500."""
    config = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": group,
            "topics": topics,
            "batch_size": 500,
            "batch_timeout_seconds": 0.2,
            "checkpoint_interval_seconds": 1.0,
            "consumer": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"},
        },
        "metrics": {"host": "127.0.0.1", "port": port},
        "models": [
            {
                "id": MODEL,
                "task": "regression",
                "features": {"x": {"type": "numeric", "key": True}, "y": "numeric", "c": "categorical"},
                "warmup_events": 1000,
                "window": {"kind": "count", "size": 500},
                "policy": {"cooldown_seconds": "2h"},
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def prometheus_config(directory: Path, metrics_port: int) -> Path:
    """The project's Prometheus config and rules, rewritten for a loopback test (see module doc)."""
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["stream-monitor"]  # the name the alert rules select on
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    job["scrape_interval"] = "1s"
    config["scrape_configs"] = [job]
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config.pop("alerting", None)
    rule_files = []
    for name in config["rule_files"]:
        rules = yaml.safe_load((PROM_DIR / name).read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = "2s"
        out = directory / Path(name).name
        out.write_text(yaml.safe_dump(rules, sort_keys=False))
        rule_files.append(str(out))
    config["rule_files"] = rule_files
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def create_topics(admin: AdminClient, names: list[str]) -> None:
    futures = admin.create_topics([NewTopic(n, num_partitions=1, replication_factor=1) for n in names])
    for future in futures.values():
        future.result(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10).topics
        if all(n in md and md[n].partitions and md[n].partitions[0].leader >= 0 for n in names):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topics {names} have no leader")


@pytest.fixture(scope="module")
def live_stack(
    kafka_broker: Any, kafka_admin: AdminClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    prometheus_bin = require_binary("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus-live")
    suffix = f"{os.getpid()}-{time.time_ns()}"
    topics = {
        "predictions": f"prom-predictions-{suffix}",
        "labels": f"prom-labels-{suffix}",
        "triggers": f"prom-triggers-{suffix}",
        "dlq": f"prom-dlq-{suffix}",
        "state": f"prom-state-{suffix}",
    }
    create_topics(kafka_admin, [topics["predictions"], topics["labels"]])
    metrics_port, prom_port = free_port(), free_port()
    cfg = service_config(tmp / "service.yaml", kafka_broker.bootstrap, topics, f"prom-{suffix}", metrics_port)
    prom_cfg = prometheus_config(tmp, metrics_port)
    service_log, prom_log = tmp / "service.log", tmp / "prometheus.log"
    # The test's config file is the whole configuration: no STREAM_MONITOR_* override of the harness
    # (deploy/local/test.sh sets some) reaches the service.
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_MONITOR_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    with service_log.open("wb") as out:
        service = subprocess.Popen(
            [sys.executable, "-m", "stream_monitor.cli", "run", "--config", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(ROOT),
        )
    with prom_log.open("wb") as out:
        prometheus = subprocess.Popen(
            [
                prometheus_bin,
                f"--config.file={prom_cfg}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(tmp),
        )
    stack = LiveStack(
        service,
        prometheus,
        f"http://127.0.0.1:{metrics_port}/metrics",
        f"http://127.0.0.1:{prom_port}",
        service_log,
        prom_log,
    )
    try:
        # Prometheus must have scraped the idle service first: a counter's first scraped value is its
        # baseline, so a trigger counted before the first scrape would never show as an increase.
        stack.wait_for(lambda: http_get(stack.metrics_url)[0] == 200, "service serves /metrics", 60)
        stack.wait_for(
            lambda: [float(r["value"][1]) for r in stack.query('up{job="stream-monitor"}')] == [1.0],
            "Prometheus scrapes the service (up == 1)",
            60,
        )
        items = synthetic_events(
            MODEL, ["x", "y"], ["c"], "regression", count=EVENTS, drift_after=DRIFT_AFTER, seed=3
        )
        producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "enable.idempotence": True})
        # ~5 s of input: the windows close over several scrapes, as in a live stream.
        produce_items(
            producer, items, {"predictions": topics["predictions"], "labels": topics["labels"]}, rate=1200
        )
        yield stack
    finally:
        for proc in (service, prometheus):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def _firing(stack: LiveStack, alertname: str, **labels: str) -> list[dict[str, Any]]:
    return [
        a
        for a in stack.alerts()
        if a["labels"].get("alertname") == alertname
        and a["state"] == "firing"
        and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def test_drift_metrics_reach_prometheus_and_the_drift_alerts_fire(live_stack: LiveStack) -> None:
    stack = live_stack

    def key_psi_above_alarm() -> bool:
        result = stack.query(
            f'stream_monitor_feature_psi{{job="stream-monitor",model="{MODEL}",feature="x"}}'
        )
        return bool(result) and float(result[0]["value"][1]) > 0.15

    stack.wait_for(key_psi_above_alarm, "PSI of key feature x above 0.15 in Prometheus")
    for family in ("stream_monitor_feature_ks_statistic", "stream_monitor_feature_js_divergence"):
        assert stack.query(f'{family}{{model="{MODEL}",feature="x"}}'), family
    assert stack.query(f'stream_monitor_events_processed_total{{model="{MODEL}",stream="predictions"}} > 0')

    stack.wait_for(
        lambda: bool(_firing(stack, "StreamMonitorKeyFeatureDrift", model=MODEL, feature="x")),
        "StreamMonitorKeyFeatureDrift{feature=x} firing",
    )
    stack.wait_for(
        lambda: bool(_firing(stack, "StreamMonitorRetrainTriggerEmitted", model=MODEL)),
        "StreamMonitorRetrainTriggerEmitted firing",
    )
    fired = _firing(stack, "StreamMonitorKeyFeatureDrift", model=MODEL, feature="x")[0]
    assert fired["labels"]["severity"] == "warning"
    assert fired["annotations"]["summary"] == f"Model {MODEL}: key feature x drifted from its reference"

    # y drifts as well (the generator shifts every numeric feature) but is not a key feature.
    assert stack.query(f'stream_monitor_feature_drift_detected{{model="{MODEL}",feature="y"}} == 1')
    assert not _firing(stack, "StreamMonitorKeyFeatureDrift", feature="y")
    # The recording rules evaluate on the real series too.
    assert stack.query(f'stream_monitor:key_feature_drift:max{{model="{MODEL}",feature="x"}} == 1')
    assert stack.query(f'stream_monitor:events_processed:rate5m{{model="{MODEL}",stream="predictions"}} > 0')
    # A healthy service raises no service alert.
    service_alerts = {
        "StreamMonitorDown",
        "StreamMonitorAbsent",
        "StreamMonitorCheckpointStale",
        "StreamMonitorConsumerLagHigh",
        "StreamMonitorDeadLetterRateHigh",
    }
    active = {a["labels"]["alertname"] for a in stack.alerts()}
    assert not active & service_alerts, active


# ------------------------------------------------------------------------------ Grafana queries

# PromQL keywords and functions (and Grafana's label_values): identifiers that are not series.
# fmt: off
PROMQL_WORDS = frozenset((
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
    "unless", "le", "inf", "nan", "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
    "count_values", "bottomk", "topk", "quantile", "abs", "absent", "absent_over_time", "ceil", "changes",
    "clamp", "clamp_max", "clamp_min", "day_of_month", "day_of_week", "day_of_year", "days_in_month",
    "delta", "deriv", "exp", "floor", "histogram_quantile", "holt_winters", "hour", "idelta", "increase",
    "irate", "label_join", "label_replace", "ln", "log2", "log10", "minute", "month", "predict_linear",
    "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp", "vector",
    "year", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
    "quantile_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time", "present_over_time",
    "label_values", "query_result",
))
# fmt: on
BUILTIN_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds"})
GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "${model}": MODEL,
    "$model": MODEL,
    "${feature}": "x",
    "$feature": "x",
    "${version}": ".*",
    "$version": ".*",
}


def exported_names(metrics_text: str) -> set[str]:
    """Family and sample names of a /metrics text (``x_total``, ``x_bucket``, ...)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def recorded_names() -> set[str]:
    names: set[str] = set()
    for path in (PROM_DIR / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.update(r["record"] for r in group["rules"] if "record" in r)
    return names


def substitute(expr: str) -> str:
    for var, value in sorted(GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    return expr


def metric_names_in(expr: str) -> set[str]:
    """Identifiers of a PromQL expression that name series (not functions, keywords or labels)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    idents = re.findall(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text)
    return {i for i in idents if i not in PROMQL_WORDS}


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, expression) of every Prometheus query in the provisioned dashboards."""
    found: list[tuple[str, str]] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "datasource":  # a datasource variable: its query is a plugin id
                return
            title = node.get("title") or node.get("name") or where
            for key in ("expr", "query"):
                value = node.get(key)
                if isinstance(value, str) and value.strip():
                    found.append((f"{where} / {title}", value))
                elif isinstance(value, dict) and isinstance(value.get("query"), str):
                    found.append((f"{where} / {title}", value["query"]))
            for key, value in node.items():
                if key not in ("expr", "query"):
                    walk(value, str(title))
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    for path in sorted(DASHBOARDS.glob("*.json")):
        walk(json.loads(path.read_text()), path.name)
    return found


def test_metric_name_extraction() -> None:
    assert metric_names_in(
        "histogram_quantile(0.99, sum by (le, stream) (rate(stream_monitor_processing_latency_seconds_bucket"
        '{model="$model"}[$__rate_interval])))'
    ) == {"stream_monitor_processing_latency_seconds_bucket"}
    assert metric_names_in(
        'max by (feature) (stream_monitor_feature_psi{model="m"}) * on (model) group_left () up offset 5m'
    ) == {"stream_monitor_feature_psi", "up"}
    assert metric_names_in('stream_monitor_feature_info{key="true", model=~"$model"}') == {
        "stream_monitor_feature_info"
    }


def test_dashboard_queries_name_only_live_metrics_and_parse(live_stack: LiveStack) -> None:
    stack = live_stack
    code, body = http_get(stack.metrics_url)
    assert code == 200
    live = exported_names(body.decode())
    assert "stream_monitor_feature_psi" in live and "stream_monitor_consumer_lag" in live
    allowed = live | recorded_names() | BUILTIN_SERIES
    queries = dashboard_queries()
    assert len(queries) >= 15, queries
    unknown: dict[str, set[str]] = {}
    for where, expr in queries:
        label_values = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", expr)
        promql = substitute(label_values.group(1) if label_values else expr)
        names = metric_names_in(promql)
        assert names, f"{where}: no metric in {expr!r}"
        if names - allowed:
            unknown[where] = names - allowed
        # Prometheus itself parses and evaluates the query (a typo in PromQL fails here).
        stack.api("query", query=promql)
    assert not unknown, f"dashboard queries name metrics the service does not export: {unknown}"


def test_rules_name_only_live_metrics(live_stack: LiveStack) -> None:
    live = exported_names(http_get(live_stack.metrics_url)[1].decode())
    allowed = live | recorded_names() | BUILTIN_SERIES
    unknown = {}
    for path in sorted((PROM_DIR / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                names = metric_names_in(rule["expr"]) - allowed
                if names:
                    unknown[rule.get("alert") or rule.get("record")] = names
    assert not unknown, f"rules name metrics the service does not export: {unknown}"
