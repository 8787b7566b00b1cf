#!/usr/bin/env bash
# A local dscore deployment in the background: `make up`, `make status`, `make down`.
#
#   scripts/dev.sh up       Kafka, one Redis per node, the nodes (dscore-node), the gateway
#                           (dscore-gateway, the HTTP API), the chaos service (dscore-chaos: local
#                           processes by pid file, transport faults on the control topic) and a Prometheus
#                           scraping them all with dscore's rules; waits until each is ready; prints the
#                           URLs and where the logs are. Idempotent: what already runs is kept.
#   scripts/dev.sh status   what runs, with pids
#   scripts/dev.sh down     stop it all (Prometheus, chaos, gateway, nodes, Redis, Kafka: the reverse order)
#
# Every process writes its pid to .run/<name>.pid (kafka, redis-n1, redis-n2, ..., node-n1, ..., gateway,
# chaos, prometheus),
# so a person or a script can fault one by hand: kill -9 "$(cat .run/redis-n2.pid)". Logs are in
# .run/logs/<name>.log. After `up`, .run/dev.env holds the addresses as environment variables.
#
# Settings (environment):
#   DSCORE_PROTOCOL         raft (default), paxos or pbft: what the nodes run and the gateway expects
#   DSCORE_NODES            node ids (default "n1 n2 n3"; "n1 n2 n3 n4" for pbft, which needs n >= 3f + 1)
#   DSCORE_REDIS_PORT       first Redis port (default 23380): node i of DSCORE_NODES gets PORT+i
#   DSCORE_REDIS_SHARED=1   one Redis (redis-shared, on DSCORE_REDIS_PORT) for all nodes, each under its
#                           own key prefix: fewer processes for a small setup, but one Redis is then a
#                           single point of failure for the whole quorum (by default each node's
#                           durable state is its own failure domain, as each node's disk would be)
#   DSCORE_KAFKA_PORT       Kafka's port (scripts/kafka.sh)
#   DSCORE_NODE_HTTP_PORT   node i of DSCORE_NODES serves HTTP on PORT+i (default 23180)
#   DSCORE_CLUSTER_ID       the cluster id (default "dev"); the cluster key is made once in .run/auth.key
#   DSCORE_GATEWAY_PORT     the gateway's HTTP port (default 23080)
#   DSCORE_DEV_KAFKA_BOOTSTRAP  use this running broker (host:port) instead of starting one; `down` leaves
#                           it alone (tests use it to share their session's broker)
#   DSCORE_CHAOS_PORT       the chaos service's HTTP port (default 23085)
#   DSCORE_PROMETHEUS_PORT  Prometheus' port (default 23090); its config and TSDB are in .run/prometheus/
#   DSCORE_PROMETHEUS_SCRAPE_INTERVAL  how often it scrapes and evaluates the rules (default 5s)
#   DSCORE_DEV_PROMETHEUS=0 start no Prometheus (one is already pointed at the stack, say)
# A port already taken (another checkout's `make up`, say) stops `up` with the variable that moves it.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The protocol of the nodes and the gateway: raft (default), paxos or pbft; pbft needs n >= 3f + 1 nodes,
# so its default is four.
PROTOCOL=${DSCORE_PROTOCOL:-raft}
if [[ $PROTOCOL == pbft ]]; then
  read -ra NODES <<<"${DSCORE_NODES:-n1 n2 n3 n4}"
else
  read -ra NODES <<<"${DSCORE_NODES:-n1 n2 n3}"
fi
REDIS_PORT=${DSCORE_REDIS_PORT:-23380}
GATEWAY_PORT=${DSCORE_GATEWAY_PORT:-23080}
SHARED=${DSCORE_REDIS_SHARED:-0}
KAFKA=$REPO_ROOT/scripts/kafka.sh
REDIS=$REPO_ROOT/scripts/redis.sh

# The Redis server (name and port) that holds node $1's state.
redis_of() {
  local node=$1 i
  if [[ $SHARED == 1 ]]; then
    echo "redis-shared $REDIS_PORT"
    return
  fi
  for i in "${!NODES[@]}"; do
    [[ ${NODES[$i]} == "$node" ]] && echo "redis-$node $((REDIS_PORT + i + 1))" && return
  done
  die "unknown node $node"
}

redis_names() {
  if [[ $SHARED == 1 ]]; then
    echo redis-shared
  else
    printf 'redis-%s\n' "${NODES[@]}"
  fi
}

# The services: one dscore-node per node (services/node), then the gateway (services/gateway). Each is
# started like Redis and Kafka: in the background, in its own session, its pid in .run/<name>.pid and
# its output (JSON lines) in .run/logs/<name>.log, then waited on for readiness (its /readyz).
NODE_HTTP_PORT=${DSCORE_NODE_HTTP_PORT:-23180}
CLUSTER_ID=${DSCORE_CLUSTER_ID:-dev}
NODE_BIN=$REPO_ROOT/.venv/bin/dscore-node
GATEWAY_BIN=$REPO_ROOT/.venv/bin/dscore-gateway
EXTERNAL_KAFKA=${DSCORE_DEV_KAFKA_BOOTSTRAP:-}

# check_port PORT VARIABLE WHAT: stop when PORT is taken by something that is not ours.
check_port() {
  local port=$1 variable=$2 what=$3
  port_in_use "$port" && die "port $port ($what) is in use: set $variable to another port (this checkout's
processes, if they are the ones listening, are stopped by 'make down')"
  return 0
}

# The cluster key: made once (48 random bytes, base64), kept in .run/auth.key (mode 600, ignored by git).
auth_key() {
  local file=$RUN_DIR/auth.key
  if [[ ! -s $file ]]; then
    (umask 077 && head -c 48 /dev/urandom | base64 -w0 >"$file")
  fi
  cat "$file"
}

# The nodes' /admin bearer token (DSCORE_HTTP__ADMIN_TOKEN): made once like the key, in .run/admin.token;
# `curl -H "Authorization: Bearer $(cat .run/admin.token)" ...` calls /admin/*.
admin_token() {
  local file=$RUN_DIR/admin.token
  if [[ ! -s $file ]]; then
    (umask 077 && head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' >"$file")
  fi
  cat "$file"
}

# node_port NODE: the HTTP port of node NODE (/metrics, /healthz, /readyz).
node_port() {
  local node=$1 i
  for i in "${!NODES[@]}"; do
    [[ ${NODES[$i]} == "$node" ]] && echo $((NODE_HTTP_PORT + i + 1)) && return
  done
  die "unknown node $node"
}

start_nodes() {
  local bootstrap=$1 key node peers name port url pid
  [[ -x $NODE_BIN ]] || die "$NODE_BIN is missing: run 'make sync' first"
  key=$(auth_key)
  for node in "${NODES[@]}"; do
    name=node-$node
    pid=$(pid_from "$RUN_DIR/$name.pid")
    if is_running "$pid" dscore-node; then
      say "$name: already running (pid $pid)"
      continue
    fi
    check_port "$(node_port "$node")" DSCORE_NODE_HTTP_PORT "$name's HTTP"
    peers=$(printf '%s\n' "${NODES[@]}" | grep -vx "$node" | paste -sd, -)
    read -r _ port <<<"$(redis_of "$node")"
    url="redis://127.0.0.1:$port/0"
    # A shared Redis keeps every node under its own key prefix (dscore:<cluster>:<node>).
    DSCORE_NODE_ID=$node DSCORE_PEERS=$peers DSCORE_CLUSTER_ID=$CLUSTER_ID DSCORE_PROTOCOL=$PROTOCOL \
      DSCORE_KAFKA__BOOTSTRAP_SERVERS=$bootstrap DSCORE_REDIS__URL=$url DSCORE_AUTH_KEY=$key \
      DSCORE_HTTP__PORT=$(node_port "$node") DSCORE_HTTP__ADMIN=true DSCORE_HTTP__ADMIN_TOKEN=$(admin_token) \
      setsid "$NODE_BIN" </dev/null >>"$LOG_DIR/$name.log" 2>&1 &
    echo $! >"$RUN_DIR/$name.pid"
    say "$name: started (pid $!, http 127.0.0.1:$(node_port "$node"))"
  done
  wait_nodes_ready
}

# Wait (bounded) until every node answers /readyz with 200: it knows a leader and has caught up.
wait_nodes_ready() {
  local node waited=0 limit=${DSCORE_NODE_START_TIMEOUT_S:-90} pending
  while :; do
    pending=()
    for node in "${NODES[@]}"; do
      is_alive "$(pid_from "$RUN_DIR/node-$node.pid")" ||
        die "node-$node exited; see $LOG_DIR/node-$node.log: $(tail -n 3 "$LOG_DIR/node-$node.log")"
      curl -fsS -o /dev/null "http://127.0.0.1:$(node_port "$node")/readyz" 2>/dev/null || pending+=("$node")
    done
    ((${#pending[@]} == 0)) && return 0
    ((waited >= limit * 10)) && die "nodes not ready after ${limit}s: ${pending[*]} (logs in $LOG_DIR)"
    sleep 0.1
    waited=$((waited + 1))
  done
}

# The gateway (services/gateway): started after the nodes, stopped before them. Its endpoint id (its reply
# inbox on Kafka) is gw-dev; it learns the leader from the nodes' replies.
start_gateway() {
  local bootstrap=$1 name=gateway pid waited=0 limit=${DSCORE_NODE_START_TIMEOUT_S:-90}
  [[ -x $GATEWAY_BIN ]] || die "$GATEWAY_BIN is missing: run 'make sync' first"
  pid=$(pid_from "$RUN_DIR/$name.pid")
  if is_running "$pid" dscore-gateway; then
    say "$name: already running (pid $pid)"
  else
    check_port "$GATEWAY_PORT" DSCORE_GATEWAY_PORT "the gateway's HTTP"
    DSCORE_NODES=$(IFS=,; echo "${NODES[*]}") DSCORE_CLUSTER_ID=$CLUSTER_ID DSCORE_PROTOCOL=$PROTOCOL \
      DSCORE_KAFKA__BOOTSTRAP_SERVERS=$bootstrap DSCORE_AUTH_KEY=$(auth_key) \
      DSCORE_GATEWAY__HOST=127.0.0.1 DSCORE_GATEWAY__PORT=$GATEWAY_PORT DSCORE_GATEWAY__ENDPOINT_ID=gw-dev \
      setsid "$GATEWAY_BIN" </dev/null >>"$LOG_DIR/$name.log" 2>&1 &
    pid=$!
    echo "$pid" >"$RUN_DIR/$name.pid"
    say "$name: started (pid $pid, http://127.0.0.1:$GATEWAY_PORT)"
  fi
  # ready: it knows a leader (from a reply) and a request succeeded
  until curl -fsS -o /dev/null "http://127.0.0.1:$GATEWAY_PORT/readyz" 2>/dev/null; do
    is_alive "$pid" || die "$name exited; see $LOG_DIR/$name.log: $(tail -n 3 "$LOG_DIR/$name.log")"
    ((waited >= limit * 10)) && die "$name not ready after ${limit}s (log: $LOG_DIR/$name.log)"
    sleep 0.1
    waited=$((waited + 1))
  done
}

# The chaos service (services/chaos): SIGKILL / SIGSTOP of the nodes by their pid files here (the leader
# found through each node's /debug/state, from the DSCORE_NODE_URL_* lines of dev.env) and transport faults
# (omission, delay, partition) on the cluster's Kafka control topic, under the cluster key.
CHAOS_PORT=${DSCORE_CHAOS_PORT:-23085}
CHAOS_BIN=$REPO_ROOT/.venv/bin/dscore-chaos
CHAOS_TOKEN_FILE=$RUN_DIR/chaos.token

# The chaos service's API bearer token (DSCORE_CHAOS__API_TOKEN): made once like the key, in
# .run/chaos.token (mode 600); `curl -H "Authorization: Bearer $(cat .run/chaos.token)" ...` calls
# /v1/faults. Never printed nor logged.
chaos_token() {
  if [[ ! -s $CHAOS_TOKEN_FILE ]]; then
    (umask 077 && head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' >"$CHAOS_TOKEN_FILE")
  fi
  cat "$CHAOS_TOKEN_FILE"
}

start_chaos() {
  local bootstrap=$1 name=chaos pid waited=0
  [[ -x $CHAOS_BIN ]] || die "$CHAOS_BIN is missing: run 'make sync' first"
  pid=$(pid_from "$RUN_DIR/$name.pid")
  if is_running "$pid" dscore-chaos; then
    say "$name: already running (pid $pid)"
    return 0
  fi
  check_port "$CHAOS_PORT" DSCORE_CHAOS_PORT "the chaos service's HTTP"
  DSCORE_NODES=$(IFS=,; echo "${NODES[*]}") DSCORE_CLUSTER_ID=$CLUSTER_ID \
    DSCORE_KAFKA__BOOTSTRAP_SERVERS=$bootstrap DSCORE_AUTH_KEY=$(auth_key) \
    DSCORE_CHAOS__HOST=127.0.0.1 DSCORE_CHAOS__PORT=$CHAOS_PORT DSCORE_CHAOS__API_TOKEN=$(chaos_token) \
    DSCORE_CHAOS__PROCESSES__ENABLED=true DSCORE_CHAOS__PROCESSES__RUN_DIR=$RUN_DIR \
    setsid "$CHAOS_BIN" </dev/null >>"$LOG_DIR/$name.log" 2>&1 &
  pid=$!
  echo "$pid" >"$RUN_DIR/$name.pid"
  say "$name: started (pid $pid, http://127.0.0.1:$CHAOS_PORT)"
  until curl -fsS -o /dev/null "http://127.0.0.1:$CHAOS_PORT/healthz" 2>/dev/null; do
    is_alive "$pid" || die "$name exited; see $LOG_DIR/$name.log: $(tail -n 3 "$LOG_DIR/$name.log")"
    ((waited >= 600)) && die "$name not ready after 60s (log: $LOG_DIR/$name.log)"
    sleep 0.1
    waited=$((waited + 1))
  done
}

# Prometheus (Debian's package; deploy/prometheus/ensure-tools.sh installs it): scrapes the nodes
# (job dscore-node), the gateway (dscore-gateway) and the chaos service (dscore-chaos), and evaluates
# deploy/prometheus/dscore-rules.yaml, which selects job=~".*dscore.*". Its config is written at each
# `up` into .run/prometheus/prometheus.yml; its TSDB stays in .run/prometheus/data across runs.
PROMETHEUS_PORT=${DSCORE_PROMETHEUS_PORT:-23090}
SCRAPE_INTERVAL=${DSCORE_PROMETHEUS_SCRAPE_INTERVAL:-5s}
start_prometheus() {
  local name=prometheus pid waited=0 dir=$RUN_DIR/prometheus prometheus node targets=()
  [[ ${DSCORE_DEV_PROMETHEUS:-1} == 0 ]] && return 0
  pid=$(pid_from "$RUN_DIR/$name.pid")
  if is_running "$pid" prometheus; then
    say "$name: already running (pid $pid)"
    return 0
  fi
  prometheus=$(bash "$REPO_ROOT/deploy/prometheus/ensure-tools.sh" | tail -n 1)
  check_port "$PROMETHEUS_PORT" DSCORE_PROMETHEUS_PORT "Prometheus"
  mkdir -p "$dir/data"
  for node in "${NODES[@]}"; do targets+=("'127.0.0.1:$(node_port "$node")'"); done
  cat >"$dir/prometheus.yml" <<YAML
# written by scripts/dev.sh up
global:
  scrape_interval: $SCRAPE_INTERVAL
  evaluation_interval: $SCRAPE_INTERVAL
rule_files:
  - $REPO_ROOT/deploy/prometheus/dscore-rules.yaml
scrape_configs:
  - job_name: dscore-node
    static_configs:
      - targets: [$(IFS=,; echo "${targets[*]}")]
  - job_name: dscore-gateway
    static_configs:
      - targets: ['127.0.0.1:$GATEWAY_PORT']
  - job_name: dscore-chaos
    static_configs:
      - targets: ['127.0.0.1:$CHAOS_PORT']
YAML
  setsid "$prometheus" --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --storage.tsdb.retention.time=2d --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
    </dev/null >>"$LOG_DIR/$name.log" 2>&1 &
  pid=$!
  echo "$pid" >"$RUN_DIR/$name.pid"
  say "$name: started (pid $pid, http://127.0.0.1:$PROMETHEUS_PORT)"
  until curl -fsS -o /dev/null "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" 2>/dev/null; do
    is_alive "$pid" || die "$name exited; see $LOG_DIR/$name.log: $(tail -n 3 "$LOG_DIR/$name.log")"
    ((waited >= 600)) && die "$name not ready after 60s (log: $LOG_DIR/$name.log)"
    sleep 0.1
    waited=$((waited + 1))
  done
}

stop_services() {
  local name pid
  for name in prometheus chaos; do
    pid=$(pid_from "$RUN_DIR/$name.pid")
    [[ -n $pid ]] || continue
    # chaos: SIGTERM stops its faults first (a paused node is resumed)
    stop_pid "$pid" "$name" 15 "$name"
    rm -f "$RUN_DIR/$name.pid"
    say "$name: stopped (pid $pid)"
  done
  for name in gateway "${NODES[@]/#/node-}"; do
    pid=$(pid_from "$RUN_DIR/$name.pid")
    [[ -n $pid ]] || continue
    # SIGTERM: a leader hands leadership over before it exits
    stop_pid "$pid" dscore 15 "$name"
    rm -f "$RUN_DIR/$name.pid"
    say "$name: stopped (pid $pid)"
  done
}

up() {
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  local bootstrap node name port url env_file=$RUN_DIR/dev.env
  if [[ -n $EXTERNAL_KAFKA ]]; then
    bootstrap=$EXTERNAL_KAFKA
  else
    bootstrap=$("$KAFKA" ensure)
  fi
  {
    echo "# written by scripts/dev.sh up"
    echo "DSCORE_KAFKA_BOOTSTRAP=$bootstrap"
  } >"$env_file"
  local started=()
  for node in "${NODES[@]}"; do
    read -r name port <<<"$(redis_of "$node")"
    if [[ ! " ${started[*]} " == *" $name "* ]]; then
      if ! is_running "$(pid_from "$RUN_DIR/$name.pid")" redis-server; then
        check_port "$port" DSCORE_REDIS_PORT "$name"
      fi
      "$REDIS" start "$name" "$port" >/dev/null
      started+=("$name")
    fi
    url="redis://127.0.0.1:$port/0"
    echo "DSCORE_REDIS_URL_${node^^}=$url" >>"$env_file"
    echo "DSCORE_NODE_URL_${node^^}=http://127.0.0.1:$(node_port "$node")" >>"$env_file"
  done
  {
    echo "DSCORE_CLUSTER_ID=$CLUSTER_ID"
    echo "DSCORE_GATEWAY_URL=http://127.0.0.1:$GATEWAY_PORT"
    echo "DSCORE_CHAOS_URL=http://127.0.0.1:$CHAOS_PORT"
    echo "DSCORE_CHAOS_TOKEN_FILE=$CHAOS_TOKEN_FILE"
    [[ ${DSCORE_DEV_PROMETHEUS:-1} == 0 ]] || echo "DSCORE_PROMETHEUS_URL=http://127.0.0.1:$PROMETHEUS_PORT"
  } >>"$env_file"
  start_nodes "$bootstrap"
  start_gateway "$bootstrap"
  start_chaos "$bootstrap"
  start_prometheus
  if [[ -n $EXTERNAL_KAFKA ]]; then
    echo "Kafka:   $bootstrap  (not ours: DSCORE_DEV_KAFKA_BOOTSTRAP)"
  else
    echo "Kafka:   $bootstrap  (pid $(cat "$RUN_DIR/kafka.pid"))"
  fi
  for node in "${NODES[@]}"; do
    read -r name port <<<"$(redis_of "$node")"
    echo "Redis:   redis://127.0.0.1:$port/0 for $node  (pid $(cat "$RUN_DIR/$name.pid"), $name)"
  done
  for node in "${NODES[@]}"; do
    echo "Node:    $node http://127.0.0.1:$(node_port "$node")/metrics /readyz  (pid $(cat "$RUN_DIR/node-$node.pid"))"
  done
  echo "Gateway: http://127.0.0.1:$GATEWAY_PORT  (pid $(cat "$RUN_DIR/gateway.pid")); try:"
  echo "         curl -X PUT http://127.0.0.1:$GATEWAY_PORT/v1/kv/greeting -H 'Content-Type: application/json' -d '{\"value\": \"hello\"}'"
  echo "         curl http://127.0.0.1:$GATEWAY_PORT/v1/kv/greeting"
  echo "Chaos:   http://127.0.0.1:$CHAOS_PORT/v1/faults  (pid $(cat "$RUN_DIR/chaos.pid"); bearer token in $CHAOS_TOKEN_FILE); a failover drill:"
  echo "         curl -X POST http://127.0.0.1:$CHAOS_PORT/v1/faults -H \"Authorization: Bearer \$(cat '$CHAOS_TOKEN_FILE')\" -H 'Content-Type: application/json' -d '{\"kind\": \"process_kill\", \"target\": \"leader\"}'"
  if [[ -f $RUN_DIR/prometheus.pid ]]; then
    echo "Prometheus: http://127.0.0.1:$PROMETHEUS_PORT  (pid $(cat "$RUN_DIR/prometheus.pid"); scrapes every $SCRAPE_INTERVAL, dscore's rules loaded); try:"
    echo "         curl -s http://127.0.0.1:$PROMETHEUS_PORT/api/v1/query --data-urlencode 'query=job_protocol:dscore_has_leader:max'"
  fi
  echo "Grafana: point a Prometheus data source at it, load deploy/grafana/dashboards (README: Watch it)"
  echo "Pids:    $RUN_DIR/<name>.pid   Logs: $LOG_DIR/   Addresses: $env_file"
  echo "Stop:    make down"
}

status() {
  local name pattern
  "$KAFKA" status || true
  for name in $(redis_names); do "$REDIS" status "$name" >/dev/null || true; done
  for name in gateway "${NODES[@]/#/node-}" chaos prometheus; do
    [[ -f $RUN_DIR/$name.pid ]] || continue
    pattern=$name
    [[ $name == node-* ]] && pattern=dscore-node
    if is_running "$(pid_from "$RUN_DIR/$name.pid")" "$pattern"; then say "$name: running"; else say "$name: not running"; fi
  done
}

down() {
  local name
  stop_services
  # every Redis of this run folder, whatever DSCORE_NODES / DSCORE_REDIS_SHARED were at `up`
  for name in $( (cd "$RUN_DIR" 2>/dev/null && ls redis-*.pid 2>/dev/null) | sed 's/\.pid$//'); do
    "$REDIS" stop "$name"
  done
  [[ -n $EXTERNAL_KAFKA ]] || "$KAFKA" stop
  rm -f "$RUN_DIR/dev.env"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: scripts/dev.sh up|status|down" ;;
esac
