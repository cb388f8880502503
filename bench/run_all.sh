#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: every benchmark of issue 5, one command.
#   bash bench/run_all.sh            # full run (10 M-event control: ~15 min of the quality harness)
#   QUICK=1 bash bench/run_all.sh    # small sizes, a couple of minutes
# Uses the broker in KAFKA_BOOTSTRAP_SERVERS, or starts one with deploy/local/kafka.sh.
# Evidently and alibi-detect go into bench/.venv only, never into the project's dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
# OpenBLAS core-type overrides slow a current numpy (see the machine notes): unset for the benches only.
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
PY=${PYTHON:-python}
if [[ ! -x bench/.venv/bin/python ]]; then
    "$PY" -m venv bench/.venv
    bench/.venv/bin/pip install -q evidently alibi-detect || echo "peer install failed; peers bench says so" >&2
fi
if [[ -n "${QUICK:-}" ]]; then
    HOT=(--events 50000 --repeat 1 --pending 200000)
    TP=(--events 200000 --runs 1 --latency-seconds 10)
    PEERS=(--events 50000 --adwin-events 5000)
    QUAL=(--control-events 500000 --seeds 1 --calibration-windows 40)
    REPLAY=(--events 50000 --sizes 365,2000)
else
    HOT=(--events 500000 --repeat 3)
    TP=(--events 1000000 --runs 3 --latency-seconds 20)
    PEERS=(--events 200000 --adwin-events 20000)
    QUAL=(--control-events 10000000 --seeds 3)
    REPLAY=(--events 200000 --sizes 365,2000,5000)
fi
"$PY" bench/hotpath.py "${HOT[@]}" --json "$OUT/hotpath.json" | tee "$OUT/hotpath.md"
"$PY" bench/replay_small_windows.py "${REPLAY[@]}" --json "$OUT/replay_small_windows.json" | tee "$OUT/replay_small_windows.md"
"$PY" bench/peers.py "${PEERS[@]}" --json "$OUT/peers.json" | tee "$OUT/peers.md"
"$PY" bench/throughput.py "${TP[@]}" --json "$OUT/throughput.json" | tee "$OUT/throughput.md"
"$PY" bench/quality.py "${QUAL[@]}" --json "$OUT/quality.json" | tee "$OUT/quality.md"
"$PY" bench/report.py "$OUT" > "${BENCHMARKS:-BENCHMARKS.md}"
echo "BENCHMARKS.md regenerated" >&2
