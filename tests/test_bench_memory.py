"""Smoke run of ``bench/memory.py`` (issue 14, point 3): small sizes, well-formed output, no timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_memory_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    args = ["--models", "2", "--features", "5", "--pending", "20000", "--repeat", "1", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "memory.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "RSS between batches at the end" in proc.stdout
    after = json.loads(out.read_text())["after"]
    assert after["imports"]["loaded"] and "matplotlib" not in after["imports"]["loaded"]
    service = after["service"]
    assert service["pending"] == 20000 and service["record_bytes"] > 0
    assert 0 < service["rss_import_mb"] <= service["peak_checkpoint_mb"]
    assert service["state_body_bytes"] > 0  # the /state copy was published after each batch
