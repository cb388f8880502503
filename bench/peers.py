"""Side by side with the tools users would otherwise pick (issue 5, point 3), on the same event shape.

(a) a per-event loop with river's ``ADWIN`` on every numeric feature (what a user would hand-roll);
(b) Evidently's data-drift report (``DataDriftPreset``) on the same 5,000-event windows against a
    50,000-event reference (rows/s of current data);
(c) alibi-detect's ``CVMDriftOnline`` (numpy backend) on the 20 numeric features, events/s of
    ``predict`` (its threshold configuration by bootstrap is timed separately).

stream-monitor's figure is its in-process engine (JSON in, triggers out), from ``bench/hotpath.py``'s
code. Evidently and alibi-detect are never project dependencies: they run in ``bench/.venv``
(``bench/run_all.sh`` creates it) through ``bench/peers_venv.py``; if that venv is missing or a package
did not install, the row says so.

``python bench/peers.py [--events N]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import gen_columns, make_reference, make_schema, to_json_events, to_json_labels

from stream_monitor.core.engine import MonitoringEngine
from stream_monitor.core.settings import ModelSettings

HERE = Path(__file__).resolve().parent
VENV_PY = HERE / ".venv" / "bin" / "python"


def ours(n: int) -> float:
    schema = make_schema()
    ref = make_reference(schema)
    c = gen_columns(n, seed=1)
    raws, labels = to_json_events("m0", c), to_json_labels("m0", c)
    eng = MonitoringEngine({"m0": schema}, {"m0": ModelSettings()}, {"m0": ref})
    t0 = time.perf_counter()
    for i in range(0, n, 10_000):
        eng.process_predictions(raws[i : i + 10_000], now=0.0)
        eng.process_labels(labels[i // 10 : (i + 10_000) // 10], now=0.0)
    return n / (time.perf_counter() - t0)


def river_adwin_loop(n: int) -> float:
    """The hand-rolled loop: decode each JSON event, update one ADWIN per numeric feature."""
    import orjson
    from river import drift

    c = gen_columns(n, seed=1)
    raws = to_json_events("m0", c)
    names = [f"f{i}" for i in range(c.numeric.shape[0])]
    detectors = [drift.ADWIN() for _ in names]
    pairs = list(zip(names, detectors, strict=True))
    t0 = time.perf_counter()
    for raw in raws:
        features = orjson.loads(raw)["features"]
        for name, det in pairs:
            det.update(features[name])
    return n / (time.perf_counter() - t0)


def venv_peers(timeout: float) -> dict[str, Any]:
    if not VENV_PY.exists():
        return {"error": "bench/.venv missing (bench/run_all.sh creates it)"}
    try:
        out = subprocess.run(
            [str(VENV_PY), str(HERE / "peers_venv.py")],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"peers_venv.py took more than {timeout:.0f} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--adwin-events", type=int, default=20_000)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--skip-venv", action="store_true")
    p.add_argument("--json")
    a = p.parse_args(argv)
    t_all = time.perf_counter()
    res: dict[str, Any] = {
        "stream-monitor engine": ours(a.events),
        "river ADWIN per event × 20 features": river_adwin_loop(a.adwin_events),
    }
    venv = {} if a.skip_venv else venv_peers(a.timeout)
    our = res["stream-monitor engine"]
    lines = [
        "| tool (same 20-numeric + 3-categorical stream) | events/s | stream-monitor / tool |",
        "|---|---:|---:|",
        f"| stream-monitor engine in-process (JSON decode, all window detectors, label join) | "
        f"{our:,.0f} | 1× |",
        f"| river ADWIN per event on each of 20 features (hand-rolled loop, orjson decode included) | "
        f"{res['river ADWIN per event × 20 features']:,.0f} | "
        f"{our / res['river ADWIN per event × 20 features']:.2f}× |",
    ]
    for key, label in (
        ("evidently_rows_per_s", "Evidently DataDriftPreset, 5k-row windows vs 50k reference"),
        ("alibi_cvm_events_per_s", "alibi-detect CVMDriftOnline, 20 features, `predict` per event"),
    ):
        if key in venv:
            res[label] = venv[key]
            lines.append(f"| {label} | {venv[key]:,.0f} | {our / venv[key]:,.0f}× |")
        else:
            err = venv.get(key.split("_")[0] + "_error") or venv.get("error") or "skipped"
            lines.append(f"| {label} | not measured: {err} | |")
    if "alibi_cvm_setup_s" in venv:
        lines.append(
            f"\nalibi-detect CVMDriftOnline setup ({venv.get('alibi_cvm_setup', '')}): "
            f"{venv['alibi_cvm_setup_s']:.0f} s of bootstrap before the first event."
        )
    if "versions" in venv:
        lines.append(
            "Peer versions (bench/.venv): " + ", ".join(f"{k} {v}" for k, v in venv["versions"].items())
        )
    lines.append(f"\n(peers bench took {time.perf_counter() - t_all:.0f} s)")
    print("\n".join(lines))
    if a.json:
        Path(a.json).write_text(json.dumps({"ours": res, "venv": venv}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
