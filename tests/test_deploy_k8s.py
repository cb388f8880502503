"""The Kubernetes manifests of ``deploy/k8s`` (issue 4, point 5).

Built-in kinds are validated against the Kubernetes OpenAPI schemas shipped in the
``kubernetes-validate`` package (strict: unknown fields are errors; no network). The Prometheus
Operator kinds (PodMonitor, PrometheusRule) have no schema there: their fields are checked here, and
the PrometheusRule must equal the rule files that ``promtool`` tests. Then the references: every file
in the kustomization exists, selectors match the pod labels, probes and the PodMonitor use a declared
port, the mounted ConfigMap holds a configuration that ``stream-monitor`` accepts, and each Secret key
the Deployment reads exists in the example Secret.

Regenerate ``prometheusrule.yaml`` after changing the rules: ``python tests/test_deploy_k8s.py
--write-prometheusrule``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_monitor.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
RULES = ROOT / "deploy" / "prometheus" / "rules"
RULE_FILES = ("stream-monitor-recording.yml", "stream-monitor-alerts.yml")
KUBERNETES_VERSION = "1.30"
APP = {"app.kubernetes.io/name": "stream-monitor"}
PROMETHEUSRULE_HEADER = (
    "# GENERATED from deploy/prometheus/rules/*.yml for the Prometheus Operator; do not edit by hand.\n"
    "# tests/test_deploy_k8s.py fails when it differs from the rule files. Regenerate:\n"
    "#   python tests/test_deploy_k8s.py --write-prometheusrule\n"
)


def load(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def kustomization() -> dict[str, Any]:
    (doc,) = load("kustomization.yaml")
    return doc


def applied() -> dict[str, dict[str, Any]]:
    """Every object the kustomization applies, by kind."""
    out: dict[str, dict[str, Any]] = {}
    for name in kustomization()["resources"]:
        for doc in load(name):
            assert doc["kind"] not in out, f"two {doc['kind']} objects"
            out[doc["kind"]] = doc
    return out


def prometheusrule_document() -> dict[str, Any]:
    groups: list[Any] = []
    for name in RULE_FILES:
        groups += yaml.safe_load((RULES / name).read_text())["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "stream-monitor",
            "labels": {**APP, "release": "kube-prometheus-stack"},
        },
        "spec": {"groups": groups},
    }


def write_prometheusrule() -> None:
    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, text)
    body = yaml.dump(prometheusrule_document(), Dumper=Dumper, sort_keys=False, width=200)
    (K8S / "prometheusrule.yaml").write_text(PROMETHEUSRULE_HEADER + body)


def test_kustomization_lists_existing_files_and_every_manifest() -> None:
    k = kustomization()
    assert k["kind"] == "Kustomization" and k["namespace"] == "stream-monitor"
    listed = set(k["resources"])
    for name in listed:
        assert (K8S / name).is_file(), name
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == on_disk, "every manifest is applied (the example Secret on purpose is not)"


def test_builtin_kinds_validate_against_the_kubernetes_schemas() -> None:
    try:
        import kubernetes_validate
    except ImportError:
        message = "kubernetes-validate is not installed (pip install kubernetes-validate)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it (.ci/run)", pytrace=False)
        pytest.skip(message)
    docs = [d for d in applied().values() if "monitoring.coreos.com" not in d["apiVersion"]]
    docs += load("secret.example.yaml")
    assert {d["kind"] for d in docs} == {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Secret",
    }
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_deployment_is_a_consumer_group_with_probes_resources_and_a_locked_down_pod() -> None:
    objs = applied()
    dep = objs["Deployment"]
    spec = dep["spec"]
    assert spec["replicas"] >= 2
    assert spec["selector"]["matchLabels"] == APP
    pod = spec["template"]
    assert APP.items() <= pod["metadata"]["labels"].items()
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    podspec = pod["spec"]
    assert podspec["securityContext"]["runAsNonRoot"] is True
    assert podspec["securityContext"]["runAsUser"] == 10001  # the image's user (Dockerfile)
    assert podspec["serviceAccountName"] == objs["ServiceAccount"]["metadata"]["name"]
    (c,) = podspec["containers"]
    assert c["args"][:2] == ["run", "--config"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 9108}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), kind
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    # The grace period covers the shutdown checkpoint (the service waits up to 30 s for acks).
    assert podspec["terminationGracePeriodSeconds"] > 30

    # The config volume is the ConfigMap, mounted where --config points.
    volumes = {v["name"]: v for v in podspec["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    config_path = Path(c["args"][2])
    (config_volume,) = [n for n, v in volumes.items() if "configMap" in v]
    assert volumes[config_volume]["configMap"]["name"] == objs["ConfigMap"]["metadata"]["name"]
    assert Path(mounts[config_volume]) == config_path.parent
    assert config_path.name in objs["ConfigMap"]["data"]
    assert set(mounts) <= set(volumes)


def test_configmap_holds_a_valid_config_with_secrets_only_from_the_secret() -> None:
    objs = applied()
    dep = objs["Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    # Every secret the pod reads comes from the (example) Secret, with a key that exists there.
    (secret,) = load("secret.example.yaml")
    for e in env.values():
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["stringData"]
    assert "secretKeyRef" in env["KAFKA_PASSWORD"]["valueFrom"]

    raw = yaml.safe_load(objs["ConfigMap"]["data"]["config.yaml"])
    fake_env = {name: f"value-of-{name}" for name in env}
    fake_env["KAFKA_BOOTSTRAP_SERVERS"] = env["KAFKA_BOOTSTRAP_SERVERS"]["value"]
    app = parse_config(raw, env=fake_env)
    assert app.kafka.common["sasl.password"] == "value-of-KAFKA_PASSWORD"
    assert app.metrics.host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert app.metrics.port == ports["metrics"]
    assert app.kafka.assignment_strategy == "range"
    # A variable the config uses but the pod does not set would stop start-up.
    text = objs["ConfigMap"]["data"]["config.yaml"]
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_USERNAME", "KAFKA_PASSWORD"):
        assert "${" + name + "}" in text and name in env


def test_pdb_and_podmonitor_select_the_pods() -> None:
    objs = applied()
    pod_labels = objs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    pdb = objs["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["maxUnavailable"] == 1

    pm = objs["PodMonitor"]
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(pm["spec"]) <= {"jobLabel", "selector", "podMetricsEndpoints", "namespaceSelector"}
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # The alert rules select up{job="stream-monitor"}: the job label is taken from this pod label.
    assert pod_labels[pm["spec"]["jobLabel"]] == "stream-monitor"
    (c,) = objs["Deployment"]["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in c["ports"]}
    for endpoint in pm["spec"]["podMetricsEndpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings"}
        assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"


def test_prometheusrule_equals_the_tested_rule_files() -> None:
    text = (K8S / "prometheusrule.yaml").read_text()
    assert text.startswith(PROMETHEUSRULE_HEADER)
    assert yaml.safe_load(text) == prometheusrule_document(), (
        "deploy/k8s/prometheusrule.yaml is out of date: "
        "python tests/test_deploy_k8s.py --write-prometheusrule"
    )
    for group in yaml.safe_load(text)["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations"}


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-prometheusrule"]:
        write_prometheusrule()
    else:
        sys.exit("usage: python tests/test_deploy_k8s.py --write-prometheusrule")
