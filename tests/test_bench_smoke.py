"""Smoke runs of the benchmarks: a few seconds each, asserting well-formed output, never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def _run(script: str, *args: str, tmp_path: Path) -> tuple[str, dict]:
    out_json = tmp_path / f"{script}.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{script}.py"), *args, "--json", str(out_json)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, json.loads(out_json.read_text())


def test_hotpath_smoke(tmp_path: Path) -> None:
    out, data = _run("hotpath", "--events", "20000", "--repeat", "1", "--pending", "20000", tmp_path=tmp_path)
    assert "| step | µs/event |" in out
    assert out.count("×") >= 3  # every target prints its ratio
    steps = data["steps"]["steps"]
    assert len(steps) == 6 and all(s["us_per_event"] > 0 for s in steps.values())
    assert 0 < data["bytes_per_pending"] <= 64
    assert data["memory"]["rss_mb"] > 0


def test_quality_smoke(tmp_path: Path) -> None:
    out, data = _run(
        "quality",
        "--control-events", "20000", "--seeds", "1", "--pre", "20000", "--post", "20000",
        "--concept-train", "2000", "--calibration-windows", "8", "--kswin-every", "200",
        tmp_path=tmp_path,
    )  # fmt: skip
    assert "### Stationary control" in out and "| quality goal (default config) |" in out
    assert data["control"]["events"] == 20000
    assert set(data["calibration"]) == {
        "psi_alarm",
        "ks_min_effect",
        "chi2_min_effect",
        "prediction_psi_alarm",
    }
    for per in data["scenarios"].values():
        assert {"ADWIN", "PageHinkley", "KSWIN", "stream-monitor (default)"} <= set(per)
    # A 1σ shift on the key feature is found even in a tiny run.
    assert data["scenarios"]["mean shift 1σ (f0)"]["stream-monitor (default)"]["missed"] == 0


def test_peers_smoke(tmp_path: Path) -> None:
    pytest.importorskip("river")
    out, data = _run("peers", "--events", "20000", "--adwin-events", "2000", "--skip-venv", tmp_path=tmp_path)
    assert "| tool (same 20-numeric + 3-categorical stream) |" in out
    assert data["ours"]["stream-monitor engine"] > 0


def test_replay_small_windows_smoke(tmp_path: Path) -> None:
    out, data = _run("replay_small_windows", "--events", "6000", "--sizes", "365,2000", tmp_path=tmp_path)
    assert "| window size | windows | triggers | events/s |" in out
    sizes = {r["size"]: r for r in data["results"]}
    assert set(sizes) == {365, 2000}
    assert sizes[365]["windows"] == 6000 // 365 + 1 and sizes[365]["events_per_s"] > 0
    assert len(sizes[365]["ms_per_window_by_tenth"]) == 10
