"""``promtool`` on the project's Prometheus files, and ``amtool`` on the Alertmanager config.

``promtool check config`` (the scrape config and the rule files it loads), ``promtool check rules`` and
``promtool test rules`` (deploy/prometheus/tests: every alert fires when it should and stays quiet when
it should not). The binaries come from Debian's ``prometheus`` and ``prometheus-alertmanager`` packages;
without them these tests fail under ``CI`` (which installs them) and skip elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "deploy" / "prometheus"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found (Debian: apt-get install -y {package})"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it (.ci/run)", pytrace=False)
        pytest.skip(message)
    return path


def run(*args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output}"
    return output


def alert_names() -> set[str]:
    names: set[str] = set()
    for path in (PROM / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.update(r["alert"] for r in group["rules"] if "alert" in r)
    return names


def test_promtool_check_config_and_rules() -> None:
    promtool = tool("promtool", "prometheus")
    out = run(promtool, "check", "config", "prometheus.yml", cwd=PROM)
    assert "2 rule files found" in out
    run(promtool, "check", "rules", *sorted(str(p) for p in (PROM / "rules").glob("*.yml")))


def test_promtool_unit_tests_pass_and_cover_every_alert() -> None:
    promtool = tool("promtool", "prometheus")
    tests = sorted((PROM / "tests").glob("*_test.yml"))
    assert tests
    tested: set[str] = set()
    for path in tests:
        doc = yaml.safe_load(path.read_text())
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    tested.add(check["alertname"])
    assert alert_names() - tested == set(), "alerts without a firing unit test"
    out = run(promtool, "test", "rules", *map(str, tests))
    assert "SUCCESS" in out


def test_every_alert_has_severity_summary_and_action() -> None:
    for path in (PROM / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                assert set(rule["annotations"]) == {"summary", "action"}, rule["alert"]
                # The trigger alert takes its severity from the trigger (a series label).
                if rule["alert"] != "StreamMonitorRetrainTriggerEmitted":
                    assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
    docs = (ROOT / "README.md").read_text().split("## Deploy", 1)[1]
    for name in alert_names():
        assert name in docs, f"the README's Deploy section does not explain {name}"


def test_amtool_check_config() -> None:
    amtool = tool("amtool", "prometheus-alertmanager")
    run(amtool, "check-config", str(ALERTMANAGER))
