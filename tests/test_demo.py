"""`stream-monitor demo`: the bike model fires after the warming starts; the control stays quiet."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from contract_schemas import check_one_truth, validate

from stream_monitor.offline.demo import run_demo
from stream_monitor.offline.demo_data import DAY, BikeStory


def test_demo_detects_the_warming_after_it_starts_and_the_control_stays_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "triggers.jsonl"
    assert run_demo(port=0, out=str(out), insights_dir=str(tmp_path / "insights")) == 0
    printed = capsys.readouterr().out
    triggers = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    for trigger in triggers:
        validate("trigger", trigger)
        check_one_truth(trigger)
    drift_ts = BikeStory().drift_ts
    bikes = [t for t in triggers if t["model_id"] == "bikes"]
    assert [t for t in triggers if t["model_id"] == "churn"] == []
    assert bikes and all(t["event_time"] > drift_ts for t in bikes)
    assert bikes[0]["kind"] == "data_drift"
    assert {r["feature"] for r in bikes[0]["reasons"]} >= {"temp"}
    # the error follows the drift: a performance trigger, the model under-estimating (seed 003)
    perf = next(t for t in bikes if t["kind"] in ("performance", "combined"))
    assert perf["event_time"] - drift_ts < 14 * DAY
    assert perf["evidence"]["performance"]["mean_error"] < 0
    assert "before the drift" not in printed
    assert (tmp_path / "insights" / "bikes" / "insights.state").exists()
