#!/usr/bin/env bash
# The project's test command: start a real Kafka broker (deploy/local/kafka.sh) in a temporary
# directory, run the whole pytest suite against it, stop the broker. Extra arguments go to pytest:
#   bash deploy/local/test.sh                       # everything
#   bash deploy/local/test.sh tests/test_broker.py -x
# With KAFKA_BOOTSTRAP_SERVERS already set, that broker is used and nothing is started.
# A broker that cannot start, and a run that collects no test, are failures.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
KAFKA_SH="$ROOT/deploy/local/kafka.sh"
cd "$ROOT"

if [[ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
    KAFKA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/stream-monitor-kafka.XXXXXX")"
    cleanup() {
        bash "$KAFKA_SH" stop "$KAFKA_DIR" || true
        rm -rf "$KAFKA_DIR"
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    bash "$KAFKA_SH" fetch
    bootstrap_line="$(bash "$KAFKA_SH" start "$KAFKA_DIR")"
    [[ "$bootstrap_line" =~ ^KAFKA_BOOTSTRAP_SERVERS=([^[:space:]]+)$ ]] || {
        echo "test.sh: kafka.sh start printed '$bootstrap_line'" >&2
        exit 1
    }
    export KAFKA_BOOTSTRAP_SERVERS="${BASH_REMATCH[1]}"
    # Lets the fixtures stop and restart this broker (tests/kafka_fixtures.py).
    export STREAM_MONITOR_KAFKA_DIR="$KAFKA_DIR"
fi
export STREAM_MONITOR_REQUIRE_KAFKA=1
echo "test.sh: KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS" >&2

status=0
"${PYTHON:-python3}" -m pytest -q "$@" || status=$?
if [[ $status -eq 5 ]]; then
    echo "test.sh: pytest collected no tests: failing" >&2
    exit 1
fi
exit "$status"
