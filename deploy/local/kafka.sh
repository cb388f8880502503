#!/usr/bin/env bash
# A real single-node Apache Kafka (KRaft, broker + controller) for development and tests, without Docker.
#
#   deploy/local/kafka.sh fetch               copy the pinned broker jars from Maven Central into the cache
#   deploy/local/kafka.sh start DIR           format (first time only) and start a broker whose files live in DIR;
#                                             prints KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<port> on stdout
#   deploy/local/kafka.sh start DIR --secure  the same with authentication and authorisation (see "Secure" below);
#                                             prints the client settings as KAFKA_*=... lines
#   deploy/local/kafka.sh tls DIR             only make the throw-away CA and broker certificate in DIR/tls
#   deploy/local/kafka.sh stop DIR            SIGTERM, wait, SIGKILL; idempotent
#   deploy/local/kafka.sh restart DIR         stop, then start on the same ports, storage and security
#   deploy/local/kafka.sh status DIR          exit 0 and print the bootstrap address when the broker answers
#
# Only KEY=value lines go to stdout, so `eval "$(deploy/local/kafka.sh start DIR)"` works; the rest goes to
# stderr. When KAFKA_BOOTSTRAP_SERVERS is already set, `start` (without --secure) only checks that it answers.
#
# Secure (`start DIR --secure`; DIR remembers it, `restart` and `start` keep it):
#   - one client listener SASL_SSL://127.0.0.1:<port>: SCRAM-SHA-512 over TLS. The TLS certificate
#     (SAN localhost and 127.0.0.1) is signed by a throw-away CA made with the JDK's keytool in DIR/tls
#     (ca.pem: give it to clients as ssl.ca.location; ca.p12 and broker.p12 are PKCS12 stores whose
#     password is in DIR/tls/store.password);
#   - the super user `admin`, whose SCRAM credential is written into the metadata log when the storage
#     is formatted (password in DIR/admin.password, never on a command line). It is the inter-broker
#     principal, and the controller listener (SASL_PLAINTEXT, PLAIN, 127.0.0.1 only) knows only it;
#   - org.apache.kafka.metadata.authorizer.StandardAuthorizer with allow.everyone.if.no.acl.found=false:
#     every other principal can do exactly what ACLs allow (create users and ACLs as `admin`);
#   - DIR/admin.properties: librdkafka settings of `admin` (e.g. `stream-monitor acls --command-config`);
#   - stdout: KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SSL_CA_LOCATION,
#     KAFKA_ADMIN_CONFIG (= DIR/admin.properties) and one KAFKA_LISTENER_<NAME>=127.0.0.1:<port> per extra listener;
#   - extra listeners (for tests of bad certificates): each DIR/tls/listener-<name>.p12 present when DIR is
#     first configured (run `tls DIR`, add the stores, then `start DIR --secure`) becomes one more SASL_SSL
#     listener <NAME> that presents that store's key and certificate (store password: DIR/tls/store.password).
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
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
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
# socket server binds before the broker has joined the quorum). CONFIG, when given, is a file of
# librdkafka key=value settings (the secure broker's DIR/admin.properties).
probe() {
    local bootstrap="$1" timeout="${2:-5}" config="${3:-}"
    if python3 -c 'import confluent_kafka' 2>/dev/null; then
        python3 - "$bootstrap" "$timeout" "$config" <<'EOF' 2>/dev/null
import sys
from confluent_kafka.admin import AdminClient
bootstrap, timeout, path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
settings = {"bootstrap.servers": bootstrap, "log_level": 0}
if path:
    for line in open(path, encoding="utf-8"):
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            settings[key.strip()] = value.strip()
admin = AdminClient(settings)
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

# Settings both kinds of broker share (storage, single-node replication, fast first group).
common_props() {
    local dir="$1"
    cat <<EOF
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
}

write_log4j() {
    local dir="$1"
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

two_ports() {
    local a b
    a="$(free_port)"
    b="$(free_port)"
    while [[ "$b" == "$a" ]]; do b="$(free_port)"; done
    echo "$a $b"
}

write_config() {
    local dir="$1" broker_port controller_port
    read -r broker_port controller_port <<<"$(two_ports)"
    mkdir -p "$dir/data"
    {
        cat <<EOF
# Written by deploy/local/kafka.sh: a single-node KRaft broker + controller for development and tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$broker_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$broker_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
EOF
        common_props "$dir"
    } >"$dir/server.properties"
    write_log4j "$dir"
}

random_secret() {
    python3 -c 'import secrets; print(secrets.token_urlsafe(24))'
}

# DIR/tls: a throw-away CA and the broker's key and certificate (SAN localhost, 127.0.0.1), all made
# with the JDK's keytool (no openssl needed). Idempotent: an existing complete DIR/tls is kept.
make_tls() {
    local dir="$1" tls="$1/tls"
    [[ -f "$tls/.complete" ]] && return 0
    command -v keytool >/dev/null || die "keytool not found: it comes with Java 17+ (the JDK or JRE)"
    rm -rf "$tls"
    mkdir -p "$tls"
    chmod 700 "$tls"
    (umask 077 && random_secret >"$tls/store.password")
    local pw="$tls/store.password" out="$tls/keytool.log"
    # C1 only and the serial GC: a short-lived JVM starts in half the time.
    kt() { keytool -J-XX:TieredStopAtLevel=1 -J-XX:+UseSerialGC "$@" -storetype PKCS12 -storepass:file "$pw" \
        -noprompt >>"$out" 2>&1 || {
        cat "$out" >&2
        die "keytool $1 failed"
    }; }
    log "making a throw-away CA and broker certificate in $tls"
    kt -genkeypair -alias ca -keyalg EC -groupname secp256r1 -dname "CN=stream-monitor throw-away test CA" \
        -ext bc:c -ext ku:c=keyCertSign,cRLSign -validity 3650 -keystore "$tls/ca.p12"
    kt -exportcert -rfc -alias ca -keystore "$tls/ca.p12" -file "$tls/ca.pem"
    kt -genkeypair -alias broker -keyalg EC -groupname secp256r1 -dname "CN=localhost" -validity 3650 \
        -keystore "$tls/broker.p12"
    kt -certreq -alias broker -keystore "$tls/broker.p12" -file "$tls/broker.csr"
    kt -gencert -alias ca -keystore "$tls/ca.p12" -infile "$tls/broker.csr" -outfile "$tls/broker.pem" -rfc \
        -validity 3650 -ext SAN=dns:localhost,ip:127.0.0.1 -ext eku=serverAuth,clientAuth \
        -ext ku:c=digitalSignature,keyAgreement
    kt -importcert -alias ca -file "$tls/ca.pem" -keystore "$tls/broker.p12"
    kt -importcert -alias broker -file "$tls/broker.pem" -keystore "$tls/broker.p12"
    chmod 644 "$tls/ca.pem"
    touch "$tls/.complete"
}

# --add-scram argument of the storage format: the admin's SCRAM-SHA-512 credential as salt and salted
# password (PBKDF2-HMAC-SHA-512), so the password itself never appears on a command line.
scram_credential() {
    python3 - "$1" <<'EOF'
import base64, hashlib, os, sys
password = open(sys.argv[1], encoding="utf-8").read().strip().encode()
salt, iterations = os.urandom(32), 8192
salted = hashlib.pbkdf2_hmac("sha512", password, salt, iterations)
b64 = lambda raw: base64.b64encode(raw).decode()
print(f'SCRAM-SHA-512=[name=admin,iterations={iterations},salt="{b64(salt)}",saltedpassword="{b64(salted)}"]')
EOF
}

write_secure_config() {
    local dir="$1" tls="$1/tls" broker_port controller_port admin_pw store_pw
    make_tls "$dir"
    read -r broker_port controller_port <<<"$(two_ports)"
    mkdir -p "$dir/data"
    [[ -f "$dir/admin.password" ]] || (umask 077 && random_secret >"$dir/admin.password")
    admin_pw="$(cat "$dir/admin.password")"
    store_pw="$(cat "$tls/store.password")"
    local listeners="SASL_SSL://127.0.0.1:$broker_port" advertised="SASL_SSL://127.0.0.1:$broker_port"
    local protocols="CONTROLLER:SASL_PLAINTEXT,SASL_SSL:SASL_SSL" extra="" store name lower port
    local used=" $broker_port $controller_port "
    for store in "$tls"/listener-*.p12; do
        [[ -e "$store" ]] || continue
        lower="$(basename "$store" .p12)"
        lower="${lower#listener-}"
        [[ "$lower" =~ ^[a-z][a-z0-9_]*$ && "$lower" != controller && "$lower" != sasl_ssl ]] ||
            die "$store: an extra listener's name must be lower-case letters, digits and '_' (not controller or sasl_ssl)"
        name="${lower^^}"
        port="$(free_port)"
        while [[ "$used" == *" $port "* ]]; do port="$(free_port)"; done
        used+="$port "
        listeners+=",$name://127.0.0.1:$port"
        advertised+=",$name://127.0.0.1:$port"
        protocols+=",$name:SASL_SSL"
        extra+="listener.name.$lower.ssl.keystore.type=PKCS12
listener.name.$lower.ssl.keystore.location=$store
listener.name.$lower.ssl.keystore.password=$store_pw
listener.name.$lower.ssl.key.password=$store_pw
listener.name.$lower.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
"
    done
    (
        umask 077 # the file holds the admin's password and the store password
        {
            cat <<EOF
# Written by deploy/local/kafka.sh start --secure: a single-node KRaft broker + controller with SASL_SSL
# (SCRAM-SHA-512), a throw-away CA, and ACLs enforced by the standard authoriser.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=$listeners,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=$protocols
# Clients: SCRAM-SHA-512 over TLS. Credentials live in the metadata log (the admin's from format time).
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_pw";
# The controller listener (127.0.0.1 only) knows one user, the admin, with PLAIN: SCRAM credentials
# are metadata, which the controller cannot need before it can be reached.
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin_pw" user_admin="$admin_pw";
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls/broker.p12
ssl.keystore.password=$store_pw
ssl.key.password=$store_pw
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.pem
ssl.endpoint.identification.algorithm=https
ssl.client.auth=none
# Nothing without an ACL, except for the admin.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin
EOF
            printf '%s' "$extra"
            common_props "$dir"
        } >"$dir/server.properties"
        cat >"$dir/admin.properties" <<EOF
# librdkafka settings of the broker's super user (written by deploy/local/kafka.sh start --secure)
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.username=admin
sasl.password=$admin_pw
ssl.ca.location=$tls/ca.pem
EOF
    )
    write_log4j "$dir"
}

is_secure() {
    [[ -f "$1/admin.properties" ]]
}

# host:port of the first advertised listener (the client listener).
bootstrap_of() {
    local advertised first
    advertised="$(read_prop advertised.listeners "$1/server.properties")"
    first="${advertised%%,*}"
    echo "${first#*://}"
}

# What clients need, as KEY=value lines on stdout (values shell-quoted for eval).
print_settings() {
    local dir="$1" entry name
    printf 'KAFKA_BOOTSTRAP_SERVERS=%q\n' "$(bootstrap_of "$dir")"
    is_secure "$dir" || return 0
    printf 'KAFKA_SECURITY_PROTOCOL=SASL_SSL\nKAFKA_SASL_MECHANISM=SCRAM-SHA-512\n'
    printf 'KAFKA_SSL_CA_LOCATION=%q\n' "$dir/tls/ca.pem"
    printf 'KAFKA_ADMIN_CONFIG=%q\n' "$dir/admin.properties"
    local advertised
    advertised="$(read_prop advertised.listeners "$dir/server.properties")"
    IFS=',' read -r -a entries <<<"$advertised"
    for entry in "${entries[@]:1}"; do
        name="${entry%%://*}"
        printf 'KAFKA_LISTENER_%s=%q\n' "$name" "${entry#*://}"
    done
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
    local dir="" secure=0 arg
    for arg in "$@"; do
        case "$arg" in
        --secure) secure=1 ;;
        -*) die "start: unknown option $arg" ;;
        *) dir="$arg" ;;
        esac
    done
    if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" && $secure -eq 0 ]]; then
        # Generous: a busy broker can take seconds to answer its first metadata request.
        probe "$KAFKA_BOOTSTRAP_SERVERS" "$START_TIMEOUT" ||
            die "KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS does not answer within $START_TIMEOUT s"
        echo "KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS"
        return 0
    fi
    [[ -n "$dir" ]] || die "usage: kafka.sh start DIR [--secure]"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    command -v java >/dev/null || die "java not found: Java 17+ is needed to run the broker"
    cmd_fetch

    if [[ -f "$dir/server.properties" ]]; then
        if [[ $secure -eq 1 ]] && ! is_secure "$dir"; then
            die "$dir holds a broker without security: use another DIR for --secure"
        fi
    elif [[ $secure -eq 1 ]]; then
        write_secure_config "$dir"
    else
        write_config "$dir"
    fi
    local bootstrap probe_config=""
    bootstrap="$(bootstrap_of "$dir")"
    if is_secure "$dir"; then probe_config="$dir/admin.properties"; fi

    if broker_pid "$dir" >/dev/null; then
        probe "$bootstrap" 10 "$probe_config" ||
            die "broker in $dir is running (pid $(cat "$dir/kafka.pid")) but does not answer"
        log "already running in $dir"
        print_settings "$dir"
        return 0
    fi

    local classpath="$LIBS/*"
    if [[ ! -f "$dir/data/meta.properties" ]]; then
        local cluster_id format_args
        # What `kafka-storage random-uuid` prints (Kafka's Uuid: 16 random bytes, URL-safe base64 without
        # padding, never starting with '-'), without starting a JVM for it.
        cluster_id="$(python3 -c 'import base64, os
while (u := base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")).startswith("-"): pass
print(u)')"
        format_args=(format -t "$cluster_id" -c "$dir/server.properties")
        if is_secure "$dir"; then
            format_args+=(--add-scram "$(scram_credential "$dir/admin.password")")
        fi
        java -cp "$classpath" kafka.tools.StorageTool "${format_args[@]}" >>"$dir/stdout.log" 2>&1 || {
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
        if probe "$bootstrap" 2 "$probe_config"; then
            log "broker up in $((SECONDS - started)) s (pid $pid, dir $dir$(is_secure "$dir" && echo ', secure'))"
            print_settings "$dir"
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
    local dir="${1:?usage: kafka.sh status DIR}" probe_config=""
    [[ -f "$dir/server.properties" ]] || die "no broker configured in $dir"
    if is_secure "$dir"; then probe_config="$dir/admin.properties"; fi
    broker_pid "$dir" >/dev/null || die "no broker running in $dir"
    probe "$(bootstrap_of "$dir")" 5 "$probe_config" || die "broker in $dir does not answer"
    print_settings "$dir"
}

cmd_tls() {
    local dir="${1:?usage: kafka.sh tls DIR}"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    make_tls "$dir"
    printf 'KAFKA_SSL_CA_LOCATION=%q\n' "$dir/tls/ca.pem"
}

case "${1:-}" in
fetch) cmd_fetch ;;
start) cmd_start "${@:2}" ;;
stop) cmd_stop "${2:-}" ;;
restart)
    cmd_stop "${2:?usage: kafka.sh restart DIR}"
    cmd_start "$2"
    ;;
status) cmd_status "${2:-}" ;;
tls) cmd_tls "${2:-}" ;;
*) usage ;;
esac
