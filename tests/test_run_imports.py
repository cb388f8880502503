"""``stream-monitor run`` imports only what the service uses (issue 14, point 3).

Plotting (matplotlib), pandas, scikit-learn, pyarrow, the retraining planner and the report's charts
belong to offline commands; each would cost the service memory for nothing. A fresh interpreter runs
the real command line up to the moment the service would connect (``Service.run`` is replaced by a
probe), then lists what is loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
NOT_FOR_THE_SERVICE = (
    "matplotlib",
    "pandas",
    "sklearn",
    "pyarrow",
    "stream_monitor.offline.planner",
    "stream_monitor.offline.charts",
    "stream_monitor.offline.reference_io",
    "stream_monitor.offline.insights_commands",
)

_PROBE = """
import json, sys
from stream_monitor.kafka.service import Service

def probe(self):
    print(json.dumps(sorted(sys.modules)))
    return 0

Service.run = probe
from stream_monitor.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_run_does_not_import_plotting_pandas_sklearn_or_the_planner(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    model = {"id": "m", "task": "regression", "features": {"x": "numeric"}}
    config.write_bytes(orjson.dumps({"kafka": {"bootstrap_servers": "127.0.0.1:9"}, "models": [model]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_MONITOR_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(ROOT),
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = set(json.loads(run.stdout.strip().splitlines()[-1]))
    assert "stream_monitor.kafka.service" in loaded  # the probe ran where the service would start
    heavy = sorted(m for m in loaded if m.split(".")[0] in NOT_FOR_THE_SERVICE or m in NOT_FOR_THE_SERVICE)
    assert heavy == [], heavy
