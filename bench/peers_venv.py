"""Runs inside bench/.venv (Evidently, alibi-detect): prints one JSON line of rates for bench/peers.py.

Same data shape as the other benches (20 standard-normal numeric features, 3 categorical with 8
values), generated here with numpy so this script imports nothing from stream_monitor.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np

CATS = [f"v{i}" for i in range(8)]
P = [0.3, 0.2, 0.15, 0.1, 0.1, 0.07, 0.05, 0.03]


def frame(n: int, seed: int) -> Any:
    import pandas as pd

    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.standard_normal((n, 20)), columns=[f"f{i}" for i in range(20)])
    for j in range(3):
        df[f"c{j}"] = rng.choice(CATS, size=n, p=P)
    return df


def evidently(out: dict[str, Any], windows: int = 3) -> None:
    try:
        import evidently as ev
        from evidently import Report
        from evidently.presets import DataDriftPreset
    except Exception as e:
        out["evidently_error"] = f"import failed: {e}"
        return
    out.setdefault("versions", {})["evidently"] = ev.__version__
    ref = frame(50_000, 1)
    rows = 0
    t0 = time.perf_counter()
    for w in range(windows):
        cur = frame(5000, 10 + w)
        Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
        rows += len(cur)
    out["evidently_rows_per_s"] = rows / (time.perf_counter() - t0)


def alibi(out: dict[str, Any], events: int = 2000) -> None:
    try:
        import alibi_detect
        from alibi_detect.cd import CVMDriftOnline
    except Exception as e:
        out["alibi_error"] = f"import failed: {e}"
        return
    out.setdefault("versions", {})["alibi-detect"] = alibi_detect.__version__
    rng = np.random.default_rng(0)
    # Small settings: its bootstrap configuration grows with reference × bootstraps × ERT and took over
    # 8 minutes at ert=1000 / 3000 bootstraps / 5k reference rows on this machine.
    setup = "reference 500 rows, ert=100, window 20, 2,500 bootstraps"
    t0 = time.perf_counter()
    cd = CVMDriftOnline(rng.standard_normal((500, 20)), ert=100, window_sizes=[20], n_bootstraps=2500)
    out["alibi_cvm_setup_s"] = time.perf_counter() - t0
    out["alibi_cvm_setup"] = setup
    x = rng.standard_normal((events, 20))
    t0 = time.perf_counter()
    for i in range(events):
        cd.predict(x[i])
    out["alibi_cvm_events_per_s"] = events / (time.perf_counter() - t0)


def main() -> int:
    out: dict[str, Any] = {}
    which = sys.argv[1:] or ["evidently", "alibi"]
    if "evidently" in which:
        evidently(out)
    if "alibi" in which:
        try:
            alibi(out)
        except Exception as e:
            out["alibi_error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
