"""The provisioned Grafana dashboard's structure (issue 4, point 4).

What each query names is checked against a live service's /metrics and parsed by a real Prometheus in
``tests/test_prometheus_live.py``; here: the panels the issue asks for exist with the right kinds, every
panel uses the datasource variable, every variable a query uses is defined, the layout does not overlap,
and triggers are annotations. Model versions (issue 13, point 7): a ``version`` variable that every
panel of judged per-model series filters by (and only those: the others have no version label), the
active versions with their reference, and version changes as annotations.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from stream_monitor.core.detectors.table import WINDOW_DETECTORS

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "stream-monitor-model.json"
BUILTIN_VARS = {"__rate_interval", "__interval", "__range", "__all"}
# The per-model series judged per model version (a ``version`` label after ``model``; absent where the
# events name no version): every detector family, the flags, performance and its baseline, label timing,
# and the recording rules that keep the version (deploy/prometheus/rules/stream-monitor-recording.yml).
JUDGED = {m.name for spec in WINDOW_DETECTORS for m in spec.metrics} | {
    "stream_monitor_feature_drift_detected",
    "stream_monitor_integrity_incident",
    "stream_monitor_performance",
    "stream_monitor_performance_baseline",
    "stream_monitor_label_delay_seconds",
    "stream_monitor_label_arrival_rate",
    "stream_monitor_last_trigger_timestamp_seconds",
    "stream_monitor_windows_closed_total",
    "stream_monitor:performance_vs_baseline:delta",
    "stream_monitor:key_feature_drift:max",
}
VERSIONED = JUDGED | {"stream_monitor_model_version_info"}
SELECTOR = re.compile(r"(?<![\w:])([A-Za-z_:][\w:]*)\s*(\{[^{}]*\})?")


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def by_title(fragment: str) -> dict[str, Any]:
    (panel,) = [p for p in panels() if fragment.lower() in p["title"].lower()]
    return panel


def test_the_panels_the_issue_asks_for() -> None:
    assert by_title("PSI per feature")["type"] == "heatmap"
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels()}
    wanted = {
        "KS statistic": "stream_monitor_feature_ks_statistic",
        "Prediction distribution drift": "stream_monitor_prediction_psi",
        "AUC / F1": "stream_monitor_performance_baseline",
        "MAE / RMSE": "stream_monitor_performance_baseline",
        "Label delay": "stream_monitor_label_delay_seconds",
        "Label join coverage": "label_join_coverage",
        "Events/s": "stream_monitor_events_processed_total",
        "Rejected to the DLQ by reason": "by (reason)",
        "Consumer lag": "stream_monitor_consumer_lag",
        "Checkpoint age": "stream_monitor_checkpoint_age_seconds",
    }
    for title, needle in wanted.items():
        (expr,) = [e for t, e in exprs.items() if t.startswith(title)]
        assert needle in expr, title
    annotations = dashboard()["annotations"]["list"]
    assert any("stream_monitor_triggers_emitted_total" in a["expr"] for a in annotations)


def test_datasource_and_variables() -> None:
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert "model" in variables and variables["model"]["includeAll"] is False  # one model per view
    used: set[str] = set()
    for p in panels():
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]
            used.update(re.findall(r"\$\{?(\w+)", t["expr"]))
    for a in d["annotations"]["list"]:
        used.update(re.findall(r"\$\{?(\w+)", a["expr"]))
    assert used - BUILTIN_VARS <= set(variables), used - set(variables)


def test_layout_has_no_overlaps_and_fits_the_grid() -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in dashboard()["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard()["uid"] == "stream-monitor-model"


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric, label matchers) of every series selector in ``expr`` (matchers "" when it has none)."""
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", expr)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    return [
        (m.group(1), m.group(2) or "")
        for m in SELECTOR.finditer(text)
        if m.group(1).startswith("stream_monitor")
    ]


def test_version_variable_follows_model_and_shows_unversioned_series_under_all() -> None:
    names = [v["name"] for v in dashboard()["templating"]["list"]]
    assert names.index("model") < names.index("version")  # its query uses $model
    (version,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "version"]
    query = 'label_values(stream_monitor_model_version_info{model="$model"}, version)'
    assert version["type"] == "query" and version["query"]["query"] == query == version["definition"]
    assert version["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert version["multi"] is True and version["includeAll"] is True
    # =~".*" also matches a series without the label: unversioned deployments see their series.
    assert version["allValue"] == ".*"
    assert version["current"]["value"] == "$__all"


def test_every_judged_panel_filters_and_splits_by_version() -> None:
    judged: set[str] = set()
    for p in panels():
        for t in p["targets"]:
            for metric, matchers in selectors(t["expr"]):
                if metric in JUDGED:
                    judged.add(p["title"])
                    assert 'model="$model"' in matchers, (p["title"], t["expr"])
                    assert 'version=~"$version"' in matchers, (p["title"], t["expr"])
                    # two versions side by side are two series, not one max over both
                    assert not re.search(r"\b(sum|min|max|avg|count|group|stddev|stdvar)\s*\(", t["expr"])
                    for clause in re.findall(r"\bby\s*\(([^()]*)\)", t["expr"]):
                        assert "version" in re.split(r"\s*,\s*", clause.strip()), (p["title"], t["expr"])
                    assert "{{version}}" in t["legendFormat"], (p["title"], t["expr"])
                elif metric not in VERSIONED:
                    # a series without the label would vanish as soon as one version is picked
                    assert "version" not in matchers, (p["title"], t["expr"])
    for title in (
        "PSI per feature",
        "KS statistic",
        "KS p-value",
        "Jensen-Shannon",
        "Drift detected",
        "Prediction distribution drift",
        "Missing rate",
        "Out-of-reference-range",
        "Volume ratio and integrity",
        "AUC / F1",
        "MAE / RMSE",
        "Performance minus baseline",
        "Label delay",
    ):
        assert by_title(title)["title"] in judged, title


def test_active_versions_panel_and_version_change_annotations() -> None:
    table = by_title("Active versions")
    assert table["type"] == "table"
    (target,) = table["targets"]
    assert target["instant"] is True and target["format"] == "table"
    assert 'stream_monitor_model_version_info{model="$model"}' in target["expr"]
    (clause,) = re.findall(r"\bby\s*\(([^()]*)\)", target["expr"])
    assert set(re.split(r"\s*,\s*", clause.strip())) == {"version", "reference_source", "reference_version"}
    annotations = {a["name"]: a for a in dashboard()["annotations"]["list"]}
    changes = annotations["Version changes"]
    assert changes["enable"] is True
    assert changes["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert re.fullmatch(
        r"sum by \(model\) \((increase|changes)\(stream_monitor_model_version_changes_total"
        r'\{model="\$model"\}\[\w+\]\)\) > 0',
        changes["expr"],
    ), changes["expr"]
    assert "{{model}}" in changes["titleFormat"]
