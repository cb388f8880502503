"""`stream-monitor insights dna` and `stream-monitor plan` write their charts and reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from stream_monitor.cli import main
from stream_monitor.core.insights.buckets import DAY
from stream_monitor.core.insights.tracker import InsightTracker
from stream_monitor.core.reference import build_reference
from stream_monitor.core.sketches import WindowSketch
from stream_monitor.core.windows import ClosedWindow
from stream_monitor.offline.insights_store import load_insights, save_insights

pytest.importorskip("matplotlib")  # the `insights` extra; .ci/run installs it

PNG = b"\x89PNG\r\n\x1a\n"


def _saved_tracker(folder: Path) -> None:
    from tests.test_insights_core import SCHEMA, make_batch, planted_day

    rng = np.random.default_rng(3)
    reference = build_reference(SCHEMA, make_batch(rng, -30, 20000), bins=10)
    tracker = InsightTracker(SCHEMA, reference)
    for d in range(25):
        batch = planted_day(rng, d, 2000)
        tracker.observe_batch(batch)
        sketch = WindowSketch(SCHEMA, reference)
        sketch.update(batch)
        tracker.observe_window(ClosedWindow(d * DAY, (d + 1) * DAY, d, sketch))
    save_insights(folder, tracker)


def test_insights_dna_writes_heatmap_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _saved_tracker(tmp_path)
    assert load_insights(tmp_path, "shop").buckets.closed()[-1].index == 24
    assert (
        main(["insights", "dna", "--model", "shop", "--dir", str(tmp_path), "--out", str(tmp_path / "o")])
        == 0
    )
    assert (tmp_path / "o" / "shop_dna.png").read_bytes().startswith(PNG)
    assert (tmp_path / "o" / "shop_segments.png").read_bytes().startswith(PNG)
    doc = orjson.loads((tmp_path / "o" / "shop_dna.json").read_bytes())
    assert len(doc["matrix"]) == 25 and len(doc["groups"]) == 25
    assert {r["kind"] for r in doc["regimes"]} == {"normal", "recurring", "one_off"}
    out = capsys.readouterr().out
    assert "recurring" in out and "every 7 buckets" in out


def test_insights_dna_names_the_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["insights", "dna", "--model", "nope", "--dir", str(tmp_path)]) == 2
    assert "no saved insights for model 'nope'" in capsys.readouterr().err


def test_plan_writes_report_with_charts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for day in range(10):
        for _ in range(300):
            x = rng.normal()
            ts = 1735689600 + day * DAY + rng.uniform(0, DAY)
            rows.append(f"{ts:.0f},{x:.4f},{x * (1 + 0.3 * day) + rng.normal():.4f}")
    data = tmp_path / "history.csv"
    data.write_text("ts,x,y\n" + "\n".join(rows) + "\n")
    out = tmp_path / "plan"
    code = main(
        [
            "plan",
            str(data),
            "--time-column",
            "ts",
            "--target",
            "y",
            "--model-factory",
            "ridge",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    report = (out / "retraining_plan.md").read_text()
    assert "## Suggested schedule" in report and "Retrain every" in report
    for name in ("learning_curve.png", "decay.png", "cadence.png", "training_window.png"):
        assert (out / name).read_bytes().startswith(PNG)
        assert f"]({name})" in report
