"""The README's quickstart, run verbatim against the real broker: broker, topics, reference from the
shipped training data, service, producer, and the first retrain trigger read back.

The block is taken from the README as it is (the code fence after ``<!-- quickstart -->``) and run by
bash with ``set -euo pipefail``. Only the environment differs from a user's: the test broker is
already up (``KAFKA_BOOTSTRAP_SERVERS``, which ``kafka.sh start`` then only checks), and topic names,
group and metrics port are made unique through the documented ``STREAM_MONITOR_*`` overrides so the
run cannot see another's data.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from service_fixtures import ROOT, free_port

pytestmark = pytest.mark.kafka


def quickstart_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- quickstart -->\s*```bash\n(.*?)```", readme, re.S)
    assert match, "README.md has no quickstart block"
    return match.group(1)


def test_readme_quickstart_runs_verbatim_and_ends_with_a_trigger(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    block = quickstart_block()
    assert "stream-monitor triggers tail" in block and "topics create" in block
    unique = f"qs{time.time_ns()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_MONITOR_")}
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "TMPDIR": str(tmp_path),
            "STREAM_MONITOR_KAFKA__GROUP_ID": unique,
            "STREAM_MONITOR_METRICS__PORT": str(free_port()),
            **{
                f"STREAM_MONITOR_KAFKA__TOPICS__{role.upper()}": f"{unique}-{role}"
                for role in ("predictions", "labels", "triggers", "dlq", "state")
            },
        }
    )
    script = tmp_path / "quickstart.sh"
    script.write_text("set -euo pipefail\n" + block)
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(script)], cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=900
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    triggers = [orjson.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(triggers) == 1, result.stdout[-3000:]
    first = triggers[0]
    assert first["model_id"] == "bikes" and first["kind"] in ("data_drift", "combined", "performance")
    assert f"created {unique}-predictions" in result.stdout
    print(f"\nquickstart: first trigger ({first['kind']}, {first['severity']}) after {seconds:.1f}s")
