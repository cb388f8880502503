"""Import time and peak RSS of config validation: ours, pydantic v2 and msgspec (BENCHMARKS.md section 6).

Each case runs in a fresh interpreter, 15 rounds interleaved; prints the minimum and median wall time
of the imports plus validating ``examples/config.yaml``, and the median peak RSS (``getrusage``).
``proto_pydantic.py`` and ``proto_msgspec.py`` hold the same settings tree in each library; pydantic
and msgspec are not dependencies of stream-monitor, so run this with an interpreter that has them
(``--python``; msgspec cases are skipped where it is missing).

    python bench/config_validation/measure.py [--python /path/to/python] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parents[1] / "examples" / "config.yaml"

CASES = {
    "python -c pass": "pass",
    "import stream_monitor.config": "import stream_monitor.config",
    "config + parse examples/config.yaml": (
        "from stream_monitor.config import load_config\n"
        f"load_config({str(EXAMPLE)!r}, env={{'KAFKA_PASSWORD': 'x'}}, check_references=False)"
    ),
    "numpy, yaml and the core that config imports": (
        "import numpy, yaml, orjson\n"
        "import stream_monitor.core.events, stream_monitor.core.schema, stream_monitor.core.settings"
    ),
    "import pydantic (BaseModel)": "from pydantic import BaseModel",
    "pydantic: the tree defined + example validated": "import proto_pydantic as p\np.validate()",
    "config + the pydantic tree": "import stream_monitor.config\nimport proto_pydantic as p\np.validate()",
    "import msgspec": "import msgspec",
    "msgspec: the tree defined + example validated": "import proto_msgspec as p\np.validate()",
    "config + the msgspec tree": "import stream_monitor.config\nimport proto_msgspec as p\np.validate()",
    "import attrs + cattrs": "import attrs, cattrs",
}
PROBE = "import time, resource\nt = time.perf_counter()\n{code}\nprint((time.perf_counter() - t) * 1000, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    times: dict[str, list[float]] = {k: [] for k in CASES}
    rss: dict[str, list[float]] = {k: [] for k in CASES}
    for _ in range(args.rounds):
        for name, code in CASES.items():
            proc = subprocess.run(
                [args.python, "-c", PROBE.format(code=code)], capture_output=True, text=True, cwd=HERE
            )
            if proc.returncode != 0:  # a library that is not installed
                continue
            ms, mib = proc.stdout.split()[-2:]
            times[name].append(float(ms))
            rss[name].append(float(mib))
    print(f"| what is loaded | min ms | median ms | peak RSS MiB |\n|---|---:|---:|---:|")
    for name in CASES:
        if times[name]:
            t, r = times[name], rss[name]
            print(f"| {name} | {min(t):.0f} | {statistics.median(t):.0f} | {statistics.median(r):.1f} |")
        else:
            print(f"| {name} | not installed | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
