#!/usr/bin/env bash
# A real single-node Apache Kafka (KRaft, broker + controller) for development and tests, without Docker.
#
#   deploy/local/kafka.sh fetch           copy the pinned broker jars from Maven Central into the cache
#   deploy/local/kafka.sh start DIR       format (first time only) and start a broker whose files live in DIR;
#                                         prints KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<port> on stdout
#   deploy/local/kafka.sh stop DIR        SIGTERM, wait, SIGKILL; idempotent
#   deploy/local/kafka.sh restart DIR     stop, then start on the same ports and the same storage
#   deploy/local/kafka.sh status DIR      exit 0 and print the bootstrap address when the broker answers
#
# Only the bootstrap line goes to stdout, so `eval "$(deploy/local/kafka.sh start DIR)"` works; the rest
# goes to stderr. When KAFKA_BOOTSTRAP_SERVERS is already set, `start` only checks that it answers.
#
# Environment:
#   KAFKA_VERSION          broker version on Maven Central (default 4.1.1)
#   STREAM_MONITOR_CACHE   cache root (default ~/.cache/stream-monitor); jars go to kafka-<version>/libs
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to answer (default 60)
#   KAFKA_STOP_TIMEOUT     seconds between SIGTERM and SIGKILL (default 30)
#   KAFKA_HEAP_OPTS        JVM heap (default -Xms256m -Xmx512m)
#   KAFKA_JVM_OPTS         extra JVM options
#   KAFKA_MVN_ARGS         extra Maven arguments for fetch (e.g. -Dmaven.repo.local=/path)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
CACHE_ROOT="${STREAM_MONITOR_CACHE:-$HOME/.cache/stream-monitor}"
KAFKA_HOME="$CACHE_ROOT/kafka-$KAFKA_VERSION"
LIBS="$KAFKA_HOME/libs"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"

log() { echo "kafka.sh: $*" >&2; }
die() {
    log "$*"
    exit 1
}

usage() {
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

cmd_fetch() {
    # The marker is written last, so an interrupted fetch is redone instead of leaving half a classpath.
    if [[ -f "$LIBS/.complete" ]]; then
        log "Kafka $KAFKA_VERSION already in $LIBS"
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found: Maven 3.8+ is needed to fetch the broker jars"
    command -v java >/dev/null || die "java not found: Java 17+ is needed to run the broker"
    mkdir -p "$KAFKA_HOME"
    rm -rf "$LIBS" # an incomplete copy from an older layout or a crash
    local staging
    staging="$(mktemp -d "$KAFKA_HOME/libs.partial.XXXXXX")"
    log "fetching org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its runtime dependencies ..."
    # shellcheck disable=SC2086  # KAFKA_MVN_ARGS is a list of words on purpose
    # Maven 3.8 prints colour resets even with -B; they are stripped from what goes to the log.
    if ! mvn -q -B -f "$HERE/pom.xml" -Dkafka.version="$KAFKA_VERSION" ${KAFKA_MVN_ARGS:-} \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$staging" 2>&1 |
        sed -u $'s/\e\\[[0-9;]*m//g' >&2; then
        rm -rf "$staging"
        die "Maven could not fetch Kafka $KAFKA_VERSION (is Maven Central reachable?)"
    fi
    [[ -f "$staging/kafka_2.13-$KAFKA_VERSION.jar" ]] || {
        rm -rf "$staging"
        die "fetch produced no kafka_2.13-$KAFKA_VERSION.jar"
    }
    touch "$staging/.complete"
    # Another process may have finished the same fetch meanwhile; either copy is good.
    if ! mv -T "$staging" "$LIBS" 2>/dev/null; then
        rm -rf "$staging"
        [[ -f "$LIBS/.complete" ]] || die "could not move the jars into $LIBS"
    fi
    log "Kafka $KAFKA_VERSION: $(find "$LIBS" -name '*.jar' | wc -l) jars in $LIBS"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A metadata request answered by a broker is the readiness test (an open port is not: the
# socket server binds before the broker has joined the quorum).
probe() {
    local bootstrap="$1" timeout="${2:-5}"
    if python3 -c 'import confluent_kafka' 2>/dev/null; then
        python3 - "$bootstrap" "$timeout" <<'EOF' 2>/dev/null
import sys
from confluent_kafka.admin import AdminClient
bootstrap, timeout = sys.argv[1], float(sys.argv[2])
admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
metadata = admin.list_topics(timeout=timeout)
sys.exit(0 if metadata.brokers else 1)
EOF
    else
        local host="${bootstrap%%,*}"
        (exec 3<>"/dev/tcp/${host%:*}/${host##*:}") 2>/dev/null
    fi
}

read_prop() {
    sed -n "s/^$1=//p" "$2" | tail -n 1
}

broker_pid() {
    local dir="$1" pid
    [[ -f "$dir/kafka.pid" ]] || return 1
    pid="$(cat "$dir/kafka.pid")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

write_config() {
    local dir="$1" broker_port controller_port
    broker_port="$(free_port)"
    controller_port="$(free_port)"
    while [[ "$controller_port" == "$broker_port" ]]; do controller_port="$(free_port)"; done
    mkdir -p "$dir/data"
    cat >"$dir/server.properties" <<EOF
# Written by deploy/local/kafka.sh: a single-node KRaft broker + controller for development and tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$broker_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$broker_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
# fewer internal partitions: the first consumer group and transaction come up faster
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# tests create a group per test; the 3 s default would make every one of them wait
group.initial.rebalance.delay.ms=0
EOF
    cat >"$dir/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $dir/broker.log
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
}

log_tail() {
    local dir="$1"
    {
        echo "---- last lines of $dir/broker.log ----"
        tail -n 40 "$dir/broker.log" 2>/dev/null || true
        if [[ -s "$dir/stdout.log" ]]; then
            echo "---- $dir/stdout.log ----"
            tail -n 40 "$dir/stdout.log"
        fi
    } >&2
}

cmd_start() {
    if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
        # Generous: a busy broker can take seconds to answer its first metadata request.
        probe "$KAFKA_BOOTSTRAP_SERVERS" "$START_TIMEOUT" ||
            die "KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS does not answer within $START_TIMEOUT s"
        echo "KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS"
        return 0
    fi
    local dir="${1:?usage: kafka.sh start DIR}"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    command -v java >/dev/null || die "java not found: Java 17+ is needed to run the broker"
    cmd_fetch

    [[ -f "$dir/server.properties" ]] || write_config "$dir"
    local listeners port bootstrap
    listeners="$(read_prop listeners "$dir/server.properties")"
    port="$(sed -n 's/.*PLAINTEXT:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' <<<"$listeners")"
    bootstrap="127.0.0.1:$port"

    if broker_pid "$dir" >/dev/null; then
        probe "$bootstrap" 10 || die "broker in $dir is running (pid $(cat "$dir/kafka.pid")) but does not answer"
        log "already running in $dir"
        echo "KAFKA_BOOTSTRAP_SERVERS=$bootstrap"
        return 0
    fi

    local classpath="$LIBS/*"
    if [[ ! -f "$dir/data/meta.properties" ]]; then
        local cluster_id
        cluster_id="$(java -cp "$classpath" kafka.tools.StorageTool random-uuid 2>>"$dir/stdout.log")"
        java -cp "$classpath" kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" \
            >>"$dir/stdout.log" 2>&1 || {
            log_tail "$dir"
            die "formatting the storage in $dir failed"
        }
    fi

    local started=$SECONDS
    # shellcheck disable=SC2086  # the option variables are lists of words on purpose
    nohup java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true ${KAFKA_JVM_OPTS:-} \
        -Dlog4j2.configurationFile="$dir/log4j2.properties" \
        -cp "$classpath" kafka.Kafka "$dir/server.properties" \
        >>"$dir/stdout.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/kafka.pid"

    while ((SECONDS - started < START_TIMEOUT)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$dir/kafka.pid"
            log_tail "$dir"
            die "the broker exited during start-up"
        fi
        if probe "$bootstrap" 2; then
            log "broker up in $((SECONDS - started)) s (pid $pid, dir $dir)"
            echo "KAFKA_BOOTSTRAP_SERVERS=$bootstrap"
            return 0
        fi
        sleep 0.5
    done
    log_tail "$dir"
    cmd_stop "$dir"
    die "the broker did not answer within $START_TIMEOUT s"
}

cmd_stop() {
    local dir="${1:?usage: kafka.sh stop DIR}" pid
    if ! pid="$(broker_pid "$dir")"; then
        rm -f "$dir/kafka.pid"
        log "no broker running in $dir"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        log "broker $pid ignored SIGTERM for $STOP_TIMEOUT s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "$dir/kafka.pid"
    log "broker $pid stopped"
}

cmd_status() {
    local dir="${1:?usage: kafka.sh status DIR}" port
    [[ -f "$dir/server.properties" ]] || die "no broker configured in $dir"
    port="$(sed -n 's/.*PLAINTEXT:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' <<<"$(read_prop listeners "$dir/server.properties")")"
    broker_pid "$dir" >/dev/null || die "no broker running in $dir"
    probe "127.0.0.1:$port" 5 || die "broker in $dir does not answer"
    echo "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$port"
}

case "${1:-}" in
fetch) cmd_fetch ;;
start) cmd_start "${2:-}" ;;
stop) cmd_stop "${2:-}" ;;
restart)
    cmd_stop "${2:?usage: kafka.sh restart DIR}"
    cmd_start "$2"
    ;;
status) cmd_status "${2:-}" ;;
*) usage ;;
esac
