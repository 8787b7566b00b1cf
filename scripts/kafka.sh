#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft, broker + controller in one JVM) on loopback, for dscore's
# development and tests.
#
#   scripts/kafka.sh ensure   start it unless it runs already (idempotent); prints the bootstrap address
#   scripts/kafka.sh start    the same, but an error if it already runs
#   scripts/kafka.sh stop     SIGTERM, wait for the JVM to exit (bounded), then SIGKILL
#   scripts/kafka.sh status   exit 0 and print the bootstrap address if it runs, 3 if not
#   scripts/kafka.sh fetch    only download the jars (Maven Central, with mvn) into .cache/kafka/<version>/
#   scripts/kafka.sh reset    stop it and delete its data (every topic)
#
# Only the bootstrap address ("127.0.0.1:PORT") goes to stdout; progress and errors go to stderr.
#
# Files: pid in .run/kafka.pid, data in .run/kafka/data, log in .run/logs/kafka.log, jars in
# .cache/kafka/<version>/ (both folders are ignored by git and kept between runs).
#
# Ports: DSCORE_KAFKA_PORT (and DSCORE_KAFKA_CONTROLLER_PORT, default PORT+1) fix them. Unset, the broker
# takes the first free pair of 23092/23093, 23102/23103, ... 23162/23163 (the last one used is tried
# first), so worktrees and machines where the default is taken still work.
#
# Needs Java 17+ and Maven (installed with apt-get when missing and allowed; see scripts/lib.sh).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_DIR=$REPO_ROOT/scripts/kafka
VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_DIR/pom.xml")
JARS=$CACHE_DIR/kafka/$VERSION
DATA=$RUN_DIR/kafka/data
CONF=$RUN_DIR/kafka/server.properties
PORT_FILE=$RUN_DIR/kafka/port
PID_FILE=$RUN_DIR/kafka.pid
LOG_FILE=$LOG_DIR/kafka.log
START_TIMEOUT_S=${DSCORE_KAFKA_START_TIMEOUT_S:-120}
STOP_TIMEOUT_S=${DSCORE_KAFKA_STOP_TIMEOUT_S:-30}
# Small heap and the serial collector: a 2-core machine shared with tests. The broker needs little.
read -ra JAVA_OPTS <<<"${DSCORE_KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"
JAVA_OPTS+=(-XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$KAFKA_DIR/log4j2.properties")
# Identifies our JVM among all processes (the config path is unique to this run folder).
PATTERN="kafka.Kafka $CONF"

mkdir -p "$RUN_DIR/kafka" "$LOG_DIR"
# One script at a time per run folder: `make up` and a test session may both ask for the broker.
exec 9>"$RUN_DIR/kafka.lock"
if command -v flock >/dev/null 2>&1; then
  flock -w 900 9 || die "another scripts/kafka.sh held $RUN_DIR/kafka.lock for 15 minutes"
fi

check_java() {
  need java openjdk-17-jre-headless "Java 17+ (for Kafka)"
  local line major
  line=$(java -version 2>&1 | head -n 1)
  major=$(sed -E 's/.*version "([0-9]+)(\.[0-9]+)*.*/\1/' <<<"$line")
  if ! [[ $major =~ ^[0-9]+$ ]] || ((major < 17)); then
    die "Kafka $VERSION needs Java 17 or newer; 'java -version' says: $line (sudo apt-get install openjdk-17-jre-headless)"
  fi
}

fetch() {
  [[ -f $JARS/.complete ]] && return 0
  need mvn maven "Maven (to fetch Kafka's jars from Maven Central)"
  local tmp=$JARS.partial.$$ started=$SECONDS
  rm -rf "$tmp"
  mkdir -p "$tmp"
  say "fetching Apache Kafka $VERSION jars from Maven Central into $JARS"
  if ! nice mvn -q -B -Dstyle.color=never -f "$KAFKA_DIR/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
    -Dmdep.useRepositoryLayout=false "-DoutputDirectory=$tmp" >&2; then
    rm -rf "$tmp"
    die "mvn could not fetch Kafka $VERSION (is Maven Central reachable? see the output above)"
  fi
  ls "$tmp"/kafka_2.13-"$VERSION".jar >/dev/null 2>&1 || die "mvn ran but kafka_2.13-$VERSION.jar is missing"
  rm -rf "$JARS"
  mv "$tmp" "$JARS"
  touch "$JARS/.complete"
  say "fetched $(find "$JARS" -name '*.jar' | wc -l) jars ($(du -sh "$JARS" | cut -f1)) in $((SECONDS - started))s"
}

running_pid() {
  local pid
  pid=$(pid_from "$PID_FILE")
  if [[ -n $pid ]] && is_running "$pid" "$PATTERN"; then echo "$pid"; fi
}

bootstrap() { echo "127.0.0.1:$(cat "$PORT_FILE")"; }

# Candidate broker ports, the last one used first.
candidates() {
  if [[ -n ${DSCORE_KAFKA_PORT:-} ]]; then
    echo "$DSCORE_KAFKA_PORT"
    return
  fi
  [[ -f $PORT_FILE ]] && cat "$PORT_FILE"
  local k
  for k in 0 1 2 3 4 5 6 7; do echo $((23092 + 10 * k)); done
}

write_config() {
  local port=$1 cport=$2
  cat >"$CONF" <<EOF
# Written by scripts/kafka.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA

# dscore creates its topics itself (a typo must not create a topic silently), one partition each.
auto.create.topics.enable=false
num.partitions=1
delete.topic.enable=true
# One broker: replication factor 1 everywhere, and small internal topics (created faster).
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
# One broker that is its own controller: a stall of the whole JVM longer than the session timeout (default
# 9 s; a paused process, a suspended laptop, compare.py pausing the idle stack) made the controller fence
# its own broker as it resumed, and every partition went leaderless until it registered again (nodes then
# held elections). Fencing helps only where another broker can take over; here it only adds an outage.
broker.session.timeout.ms=60000
# dscore's codec accepts envelopes up to 4 MiB (DEFAULT_MAX_ENVELOPE_BYTES); leave room for the batch.
message.max.bytes=5242880

# A small footprint on a 2-core machine. One network thread and one request handler: every dscore record
# is its own small request (librdkafka sends one partition per ProduceRequest, and each consumer fetches
# again after every answer), so the broker's cost is per request, and with 2+2 threads each request
# hopped between four threads on two cores. Same-run A/B on the process stack at 64 clients (3 alternating
# runs, warmed broker): 2,644 against 2,182 writes/s (median), 589 against 710 stack CPU us/op.
num.network.threads=1
num.io.threads=1
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
# The default (128 MiB) is allocated on the heap at start; it must stay above 1 MiB per cleaner thread.
log.cleaner.dedupe.buffer.size=2097152
EOF
}

# A KRaft cluster id: 16 random bytes, url-safe base64 without padding (what StorageTool random-uuid
# prints, without starting a JVM for it); like Kafka's, never starting with '-'.
cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ $id != -* ]] && echo "$id" && return
  done
}

# wait_ready PID: until the broker logs "Kafka Server started" (its own signal that it serves), bounded.
wait_ready() {
  local pid=$1 deadline=$((SECONDS + START_TIMEOUT_S))
  until grep -q "Kafka Server started" "$LOG_FILE" 2>/dev/null; do
    if ! is_alive "$pid"; then
      log_tail "$LOG_FILE"
      rm -f "$PID_FILE"
      die "the Kafka broker exited during start-up (log: $LOG_FILE)"
    fi
    if ((SECONDS >= deadline)); then
      log_tail "$LOG_FILE"
      stop_pid "$pid" "$PATTERN" "$STOP_TIMEOUT_S" kafka
      rm -f "$PID_FILE"
      die "the Kafka broker was not ready within ${START_TIMEOUT_S}s (DSCORE_KAFKA_START_TIMEOUT_S; log: $LOG_FILE)"
    fi
    sleep 0.1
  done
}

start() {
  local pid
  pid=$(running_pid)
  if [[ -n $pid ]]; then
    [[ $1 == ensure ]] || die "Kafka already runs (pid $pid) at $(bootstrap); 'scripts/kafka.sh stop' first"
    wait_ready "$pid"
    bootstrap
    return 0
  fi
  check_java
  fetch
  local port="" cport candidate
  for candidate in $(candidates); do
    cport=${DSCORE_KAFKA_CONTROLLER_PORT:-$((candidate + 1))}
    if ! port_in_use "$candidate" && ! port_in_use "$cport"; then
      port=$candidate
      break
    fi
    say "port $candidate or $cport is taken"
  done
  [[ -n $port ]] || die "no free port for Kafka (tried: $(candidates | tr '\n' ' ')); set DSCORE_KAFKA_PORT"
  write_config "$port" "$cport"
  mkdir -p "$DATA"
  if [[ ! -f $DATA/meta.properties ]]; then
    # Format once: a second format with another cluster id would be refused.
    java "${JAVA_OPTS[@]}" -cp "$JARS/*" kafka.tools.StorageTool format -t "$(cluster_id)" -c "$CONF" \
      >>"$LOG_FILE" 2>&1 9>&- || {
      log_tail "$LOG_FILE"
      die "formatting Kafka's data folder $DATA failed"
    }
  fi
  [[ -f $LOG_FILE ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
  local started=$SECONDS
  # Own session, no terminal, no inherited pipes (callers that capture our output are not held open), and
  # not the lock's descriptor (the broker would hold the lock for its whole life).
  setsid java "${JAVA_OPTS[@]}" -cp "$JARS/*" kafka.Kafka "$CONF" </dev/null >>"$LOG_FILE" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$PID_FILE"
  echo "$port" >"$PORT_FILE"
  wait_ready "$pid"
  say "kafka: broker pid $pid ready at 127.0.0.1:$port in $((SECONDS - started))s (log $LOG_FILE)"
  bootstrap
}

stop() {
  local pid
  pid=$(running_pid)
  rm -f "$PID_FILE"
  if [[ -z $pid ]]; then
    say "kafka: not running"
    return 0
  fi
  stop_pid "$pid" "$PATTERN" "$STOP_TIMEOUT_S" kafka
  say "kafka: stopped (pid $pid)"
}

status() {
  local pid
  pid=$(running_pid)
  if [[ -z $pid ]]; then
    say "kafka: not running"
    exit 3
  fi
  say "kafka: running (pid $pid, log $LOG_FILE)"
  bootstrap
}

case ${1:-} in
  ensure) start ensure ;;
  start) start start ;;
  stop) stop ;;
  status) status ;;
  fetch) fetch ;;
  reset)
    stop
    rm -rf "$DATA"
    say "kafka: data deleted"
    ;;
  *) die "usage: scripts/kafka.sh ensure|start|stop|status|fetch|reset" ;;
esac
