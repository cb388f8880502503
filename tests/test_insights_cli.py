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


def test_the_regime_strip_spans_exactly_the_matrix_and_the_caption_says_what_a_bucket_is(
    tmp_path: Path,
) -> None:
    import matplotlib.image as mpimg

    _saved_tracker(tmp_path)
    assert main(["insights", "dna", "--model", "shop", "--dir", str(tmp_path), "--out", str(tmp_path)]) == 0
    # In the PNG: the matrix's frame is the first two long vertical black lines (the colour bar's come
    # after); the strip is the first row band filled with regime colours across most of the width.
    img = mpimg.imread(tmp_path / "shop_dna.png")[:, :, :3]
    dark = img.sum(axis=2) < 0.4
    frame = np.flatnonzero(dark.sum(axis=0) > 0.4 * img.shape[0])[:2]
    coloured = (img.sum(axis=2) < 2.7) & ~dark
    band = np.flatnonzero(coloured.sum(axis=1) > 0.5 * img.shape[1])[0] + 3
    strip = np.flatnonzero(coloured[band])
    # The colour bar once narrowed only the matrix, and the strip ran on above it (88–975 px, 89–797).
    assert abs(strip.min() - frame[0]) <= 2 and abs(strip.max() - frame[1]) <= 2, (strip, frame)

    from stream_monitor.offline.charts import dna_caption, dna_heatmap_figure, pyplot

    tracker = load_insights(tmp_path, "shop")
    buckets = tracker.buckets.with_data()
    dna = tracker.dna(buckets)
    fig = dna_heatmap_figure(dna, "shop", buckets=buckets)
    fig.canvas.draw()
    extent = {a.get_label(): a.get_window_extent() for a in fig.axes}
    matrix, regimes, bar = extent["matrix"], extent["regimes"], extent["colour bar"]
    assert regimes.x0 == pytest.approx(matrix.x0, abs=0.5) and regimes.x1 == pytest.approx(matrix.x1, abs=0.5)
    assert bar.x0 > matrix.x1 and bar.y0 == pytest.approx(matrix.y0, abs=0.5)
    pyplot().close(fig)
    caption = dna_caption(dna, buckets)
    assert "one bucket: 1 day of event time (UTC)" in caption and "from 1970-01-01 to 1970-01-26" in caption
    assert f"cut at PSI {dna.cut:.3g}, from the buckets' own noise" in caption


def test_insights_dna_includes_the_bucket_still_open_when_the_stream_ended(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from stream_monitor.core.windows import take_batch
    from tests.test_insights_core import planted_day

    _saved_tracker(tmp_path)
    tracker = load_insights(tmp_path, "shop")
    # The stream ends six hours into day 25: its last window closed, its bucket did not.
    batch = planted_day(np.random.default_rng(4), 25, 2000)
    batch = take_batch(batch, np.flatnonzero(batch.ts < 25.25 * DAY))
    sketch = WindowSketch(tracker.schema, tracker.reference)
    sketch.update(batch)
    tracker.observe_window(ClosedWindow(25 * DAY, 25.25 * DAY, 100, sketch))
    save_insights(tmp_path, tracker)
    assert [b.index for b in load_insights(tmp_path, "shop").buckets.open()] == [25]
    out = tmp_path / "o"
    assert main(["insights", "dna", "--model", "shop", "--dir", str(tmp_path), "--out", str(out)]) == 0
    doc = orjson.loads((out / "shop_dna.json").read_bytes())
    assert doc["buckets"][-1] == 25 and len(doc["matrix"]) == 26 and doc["bucket_events"][-1] == len(batch.ts)
    # It covers a quarter of its day: partial, so it joins a regime without shaping them.
    assert doc["open"] == [25] and doc["partial"] == [25] and doc["groups"][-1] >= 0
    assert "bucket 1970-01-26 is still open" in capsys.readouterr().out


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
