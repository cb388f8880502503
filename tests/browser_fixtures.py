"""Headless Chromium for the tests that check a page the way a user sees it.

Needs Debian's ``chromium`` (``.ci/run`` installs it). Locally a test skips without it; under CI
(``CI`` set) a missing browser fails the test instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def chromium() -> str:
    """The browser's path; skips (fails under CI) when it is not installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "chromium not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def run_chromium(url: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Load ``url`` in a headless Chromium with its own profile under ``tmp`` and ``args``
    (``--dump-dom``, ``--screenshot=…``), offline: no background traffic, no updates."""
    return subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp / 'profile'}",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
