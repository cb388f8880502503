"""``replay --report DIR``: every window's statistics as CSV and JSONL, and a self-contained HTML page
whose charts (PSI heatmap, performance against its rule, trigger markers) render in a real browser;
and the replay summary's label-delay advice."""

from __future__ import annotations

import contextlib
import csv
import html
import io
import json
import os
import re
from pathlib import Path

import orjson
import pytest
from browser_fixtures import run_chromium

from stream_monitor.cli import main
from stream_monitor.core.engine import MonitoringEngine
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import ModelSettings, WindowSettings
from stream_monitor.offline.demo_data import SyntheticStream
from stream_monitor.offline.replay import label_heap, read_batches, replay, summary_lines
from stream_monitor.offline.report import REPORT_FILES

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DATA = EXAMPLES / "data"
FEATURES = ("temp", "atemp", "humidity", "windspeed", "hour", "season", "weather", "__prediction__")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The bikes example replayed once with ``--report`` (and ``--out`` to compare the triggers)."""
    tmp = tmp_path_factory.mktemp("report")
    report, triggers = tmp / "report", tmp / "triggers.jsonl"
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(stderr):
        for name in list(os.environ):
            if name.upper().startswith("STREAM_MONITOR_"):
                mp.delenv(name)
        argv = ["replay", "--config", str(EXAMPLES / "config.yaml"), "--out", str(triggers)]
        argv += [
            "--report",
            str(report),
            str(DATA / "bikes_predictions.jsonl.gz"),
            str(DATA / "bikes_labels.jsonl.gz"),
        ]
        assert main(argv) == 0
    return {"dir": report, "triggers": triggers, "stderr": stderr.getvalue()}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_every_window_detector_metric_and_trigger_is_written(run: dict[str, object]) -> None:
    d = run["dir"]
    assert isinstance(d, Path)
    assert sorted(p.name for p in d.iterdir()) == sorted(REPORT_FILES)
    windows = [w for w in _rows(d / "windows.csv") if w["model_id"] == "bikes"]
    n = len(windows)
    assert n >= 20 and [int(w["window"]) for w in windows] == list(range(n))
    assert all(int(w["events"]) > 0 and float(w["end"]) > float(w["start"]) for w in windows)
    assert all(w["labels_joined"] and w["labels_pending"] and w["labels_expired"] for w in windows)
    # every detector's statistic, threshold and decision per feature, the prediction's drift too
    detectors = _rows(d / "detectors.csv")
    psi = {(r["window"], r["feature"]) for r in detectors if r["detector"] == "psi"}
    assert psi == {(str(i), f) for i in range(n) for f in FEATURES}
    assert {r["detector"] for r in detectors} >= {"psi", "ks", "chi2", "js", "integrity:volume"}
    assert all(r["threshold"] and r["drift"] in ("True", "False") for r in detectors)
    # performance against the baseline: the watched MAE with the limit of its rule
    mae = [r for r in _rows(d / "performance.csv") if r["metric"] == "mae"]
    assert len(mae) == n
    assert all(float(r["baseline"]) < float(r["limit"]) for r in mae)
    assert mae[-1]["worse"] == "True" and float(mae[-1]["value"]) > float(mae[-1]["limit"])
    # the triggers: the same events as --out, and each one names its window
    emitted = [orjson.loads(line) for line in Path(str(run["triggers"])).read_bytes().splitlines()]
    assert (d / "triggers.jsonl").read_bytes() == Path(str(run["triggers"])).read_bytes()
    rows = _rows(d / "triggers.csv")
    assert [r["trigger_id"] for r in rows] == [t["trigger_id"] for t in emitted] and rows
    assert {r["kind"] for r in rows} == {"data_drift", "performance"}
    for r in rows:
        assert r["trigger_id"] in windows[int(r["window"])]["triggers"].split()
    # JSONL: the same windows, everything nested
    lines = [json.loads(line) for line in (d / "windows.jsonl").read_text().splitlines()]
    assert [(x["model_id"], x["window"]) for x in lines] == [("bikes", i) for i in range(n)]
    assert lines[-1]["performance_rules"][0]["metric"] == "mae" and lines[-1]["labels"]["joined_total"] > 0


def test_the_page_is_self_contained(run: dict[str, object]) -> None:
    page = (Path(str(run["dir"])) / "report.html").read_text()
    assert "<script" not in page and "<link" not in page and "<img" not in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert 'class="psi-heatmap"' in page and 'class="performance"' in page and "trigger-marker" in page


# Appended to a copy of the page: measures in the browser what was laid out and painted.
_CHECK = """<script>
const cells = {}, painted = {}, hit = {};
for (const c of document.querySelectorAll('svg.psi-heatmap[data-model="bikes"] rect.cell')) {
  const f = c.getAttribute('data-feature'), r = c.getBoundingClientRect();
  cells[f] = (cells[f] || 0) + 1;
  painted[f] = (painted[f] || 0) + (r.width > 0 && r.height > 0 ? 1 : 0);
  if (!(f in hit)) {
    c.scrollIntoView({block: 'center'});
    const b = c.getBoundingClientRect();
    hit[f] = document.elementFromPoint(b.left + b.width / 2, b.top + b.height / 2) === c;
  }
}
const markers = [...document.querySelectorAll('svg.psi-heatmap[data-model="bikes"] .trigger-marker')];
const lines = [...document.querySelectorAll('svg.performance[data-model="bikes"] polyline.rolling')];
document.body.setAttribute('data-check', JSON.stringify({
  cells, painted, hit,
  markers: markers.filter(m => m.getBBox().height > 0).length,
  marker_ids: markers.map(m => m.getAttribute('data-trigger-id')),
  line_length: lines.reduce((s, l) => s + l.getTotalLength(), 0),
}));
</script>"""


def test_the_charts_render_in_chromium(run: dict[str, object], tmp_path: Path) -> None:
    d = Path(str(run["dir"]))
    page = tmp_path / "checked.html"
    page.write_text((d / "report.html").read_text().replace("</body>", _CHECK + "</body>"))
    result = run_chromium(page.as_uri(), tmp_path, "--dump-dom", "--window-size=1200,1600")
    found = re.search(r'data-check="([^"]*)"', result.stdout)
    assert result.returncode == 0 and found, result.stderr[-2000:]
    check = json.loads(html.unescape(found.group(1)))
    n = len([w for w in _rows(d / "windows.csv") if w["model_id"] == "bikes"])
    # a heatmap cell for every feature (and the prediction) and window, laid out and hit where drawn
    assert check["cells"] == dict.fromkeys(FEATURES, n) and check["painted"] == check["cells"]
    assert check["hit"] == dict.fromkeys(FEATURES, True)
    # a marker per trigger, drawn; the rolling metric drawn as a line
    triggers = [r["trigger_id"] for r in _rows(d / "triggers.csv") if r["model_id"] == "bikes"]
    assert sorted(check["marker_ids"]) == sorted(triggers) and check["markers"] == len(triggers)
    assert check["line_length"] > 100
    shot = tmp_path / "report.png"
    result = run_chromium(
        (d / "report.html").as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1200,1400"
    )
    assert result.returncode == 0 and shot.stat().st_size > 20_000, result.stderr[-2000:]


def test_summary_prints_the_label_join_and_warns_when_labels_outlive_the_ttl() -> None:
    # Labels 2 h after their prediction, a TTL of 1 h: every label finds its prediction expired.
    stream = SyntheticStream(n=4000, rate=0.5, label_fraction=0.5, label_delay=7200.0, seed=3)
    schema = ModelSchema("synth", "binary", stream.schema_features())
    settings = ModelSettings(window=WindowSettings(size=1000), warmup_events=1000, label_ttl_seconds=3600.0)
    engine = MonitoringEngine({"synth": schema}, {"synth": settings})
    preds, labels = stream.raw()
    summary = replay(engine, read_batches(preds, 1000), label_heap(labels))
    lines = summary_lines(summary, engine)
    label_line = next(line for line in lines if line.startswith("  labels  synth"))
    n = len(labels)
    assert f"0 joined, {n:,} orphan" in label_line and "delay p50 2h, p95 2h" in label_line
    warning = next(line for line in lines if line.startswith("  warning:"))
    assert f"{n:,} of synth's {n:,} labels (100%)" in warning
    assert "models[synth].label_buffer.ttl_seconds to 3h or more" in warning


def test_summary_stays_quiet_when_labels_come_in_time(run: dict[str, object]) -> None:
    stderr = str(run["stderr"])
    assert re.search(r"labels  bikes +12,480 joined, 0 orphan", stderr) and "warning:" not in stderr
    assert "report: " in stderr
