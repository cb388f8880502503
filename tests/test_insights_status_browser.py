"""The status page in a real headless Chromium during a demo run: what the user should see is there.

Needs Debian's ``chromium`` (see ``tests/browser_fixtures.py``).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_fixtures import chromium, run_chromium


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    chromium()
    port = _free_port()
    work = tmp_path_factory.mktemp("demo")
    cmd = [
        sys.executable,
        "-m",
        "stream_monitor.cli",
        "demo",
        "--port",
        str(port),
        "--linger",
        "60",
        "--stations",
        "40",
        "--insights-dir",
        str(work / "insights"),
    ]
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 300
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "serving metrics for" in line:  # the stream is processed; the page is final
                break
        else:
            pytest.fail("demo did not finish in time:\n" + "".join(lines[-20:]))
        assert proc.poll() is None, "".join(lines[-30:])
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_status_page_shows_models_drift_triggers_and_dna(demo_url: str, tmp_path: Path) -> None:
    """At the end of the demo the retraining loop has run: the page shows the promoted version, judged
    against its published reference and quiet, the version timeline, and the old version's triggers."""
    result = run_chromium(demo_url, tmp_path, "--dump-dom")
    dom = result.stdout
    assert result.returncode == 0 and "</html>" in dom, result.stderr[-2000:]
    assert "Model bikes · version 2025.02" in dom and "Model churn" in dom
    # The version timeline: the model's first version, then the promoted one against its own reference.
    assert '<ul class="versions">' in dom
    assert re.search(
        r"version <b>2025.02</b> started after 2025.01; "
        r"judged against the registry reference of version 2025.02",
        dom,
    ), "the promoted version and its reference should be on the timeline"
    # The promoted version, trained on the warm days, does not see the warm weather as drift, and its
    # MAE is near its own baseline.
    assert "Drift per feature (last window)" in dom
    assert re.search(r'<tr class="ok"><td>temp</td>', dom), "temp should not drift for 2025.02"
    perf = re.search(r"<td>mae</td><td>([0-9.]+)</td><td>([0-9.]+)</td>", dom)
    assert perf is not None and float(perf.group(1)) < 1.2 * float(perf.group(2))
    # The triggers that led to the retrain stay listed, with reasons and the recommendation.
    assert "Recent triggers" in dom and "data_drift" in dom and "performance" in dom
    assert 'class="action">retrain</b>' in dom and "psi on temp" in dom
    # The data-DNA heatmap of the version watched now, drawn in the page.
    assert 'aria-label="data DNA heatmap"' in dom and dom.count("<rect") > 10
    assert "regime 0: normal" in dom
    # The churn control model stays quiet.
    churn = dom[dom.index('id="model-churn"') :]
    assert "No triggers." in churn


def test_status_page_renders_as_an_image(demo_url: str, tmp_path: Path) -> None:
    shot = tmp_path / "status.png"
    result = run_chromium(demo_url, tmp_path, f"--screenshot={shot}", "--window-size=1200,2400")
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 20_000
    keep = os.environ.get("STREAM_MONITOR_STATUS_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
