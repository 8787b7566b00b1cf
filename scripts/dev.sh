#!/usr/bin/env bash
# A local dscore deployment in the background: `make up`, `make status`, `make down`.
#
#   scripts/dev.sh up       Kafka, one Redis per node, the nodes (dscore-node) and (next) the gateway;
#                           waits until every node is ready; prints where everything is. Idempotent:
#                           what already runs is kept.
#   scripts/dev.sh status   what runs, with pids
#   scripts/dev.sh down     stop it all (gateway, nodes, Redis, Kafka: the reverse order)
#
# Every process writes its pid to .run/<name>.pid (kafka, redis-n1, redis-n2, ..., node-n1, ..., and
# later gateway), so a person or a script can fault one by hand: kill -9 "$(cat .run/redis-n2.pid)". Logs are
# in .run/logs/<name>.log. After `up`, .run/dev.env holds the addresses as environment variables.
#
# Settings (environment):
#   DSCORE_NODES            node ids (default "n1 n2 n3")
#   DSCORE_REDIS_PORT       first Redis port (default 23380): node i of DSCORE_NODES gets PORT+i
#   DSCORE_REDIS_SHARED=1   one Redis (redis-shared, on DSCORE_REDIS_PORT) for all nodes, each under its
#                           own key prefix: fewer processes for a small setup, but one Redis is then a
#                           single point of failure for the whole quorum (by default each node's
#                           durable state is its own failure domain, as each node's disk would be)
#   DSCORE_KAFKA_PORT       Kafka's port (scripts/kafka.sh)
#   DSCORE_NODE_HTTP_PORT   node i of DSCORE_NODES serves HTTP on PORT+i (default 23180)
#   DSCORE_CLUSTER_ID       the cluster id (default "dev"); the cluster key is made once in .run/auth.key
#   DSCORE_GATEWAY_PORT     the gateway's HTTP port, once it exists (default 23080)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

read -ra NODES <<<"${DSCORE_NODES:-n1 n2 n3}"
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

# The cluster key: made once (48 random bytes, base64), kept in .run/auth.key (mode 600, ignored by git).
auth_key() {
  local file=$RUN_DIR/auth.key
  if [[ ! -s $file ]]; then
    (umask 077 && head -c 48 /dev/urandom | base64 -w0 >"$file")
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
    peers=$(printf '%s\n' "${NODES[@]}" | grep -vx "$node" | paste -sd, -)
    read -r _ port <<<"$(redis_of "$node")"
    url="redis://127.0.0.1:$port/0"
    # A shared Redis keeps every node under its own key prefix (dscore:<cluster>:<node>).
    DSCORE_NODE_ID=$node DSCORE_PEERS=$peers DSCORE_CLUSTER_ID=$CLUSTER_ID \
      DSCORE_KAFKA__BOOTSTRAP_SERVERS=$bootstrap DSCORE_REDIS__URL=$url DSCORE_AUTH_KEY=$key \
      DSCORE_HTTP__PORT=$(node_port "$node") DSCORE_HTTP__ADMIN=true \
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
      is_running "$(pid_from "$RUN_DIR/node-$node.pid")" dscore-node ||
        die "node-$node exited; see $LOG_DIR/node-$node.log: $(tail -n 3 "$LOG_DIR/node-$node.log")"
      curl -fsS -o /dev/null "http://127.0.0.1:$(node_port "$node")/readyz" 2>/dev/null || pending+=("$node")
    done
    ((${#pending[@]} == 0)) && return 0
    ((waited >= limit * 10)) && die "nodes not ready after ${limit}s: ${pending[*]} (logs in $LOG_DIR)"
    sleep 0.1
    waited=$((waited + 1))
  done
}

# The gateway's slot (services/gateway): started after the nodes, stopped before them.
start_gateway() {
  say "gateway: not built yet (services/gateway); it will listen on http://127.0.0.1:$GATEWAY_PORT"
}

stop_services() {
  local name pid
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
  bootstrap=$("$KAFKA" ensure)
  {
    echo "# written by scripts/dev.sh up"
    echo "DSCORE_KAFKA_BOOTSTRAP=$bootstrap"
  } >"$env_file"
  local started=()
  for node in "${NODES[@]}"; do
    read -r name port <<<"$(redis_of "$node")"
    if [[ ! " ${started[*]} " == *" $name "* ]]; then
      "$REDIS" start "$name" "$port" >/dev/null
      started+=("$name")
    fi
    url="redis://127.0.0.1:$port/0"
    echo "DSCORE_REDIS_URL_${node^^}=$url" >>"$env_file"
    echo "DSCORE_NODE_URL_${node^^}=http://127.0.0.1:$(node_port "$node")" >>"$env_file"
  done
  echo "DSCORE_CLUSTER_ID=$CLUSTER_ID" >>"$env_file"
  start_nodes "$bootstrap"
  start_gateway
  echo "Kafka:   $bootstrap  (pid $(cat "$RUN_DIR/kafka.pid"))"
  for node in "${NODES[@]}"; do
    read -r name port <<<"$(redis_of "$node")"
    echo "Redis:   redis://127.0.0.1:$port/0 for $node  (pid $(cat "$RUN_DIR/$name.pid"), $name)"
  done
  for node in "${NODES[@]}"; do
    echo "Node:    $node http://127.0.0.1:$(node_port "$node")/metrics /readyz  (pid $(cat "$RUN_DIR/node-$node.pid"))"
  done
  echo "Gateway: not built yet (it will listen on http://127.0.0.1:$GATEWAY_PORT)"
  echo "Pids:    $RUN_DIR/<name>.pid   Logs: $LOG_DIR/   Addresses: $env_file"
  echo "Stop:    make down"
}

status() {
  local name
  "$KAFKA" status || true
  for name in $(redis_names); do "$REDIS" status "$name" >/dev/null || true; done
  for name in gateway "${NODES[@]/#/node-}"; do
    [[ -f $RUN_DIR/$name.pid ]] || continue
    if is_running "$(pid_from "$RUN_DIR/$name.pid")" dscore; then say "$name: running"; else say "$name: not running"; fi
  done
}

down() {
  local name
  stop_services
  # every Redis of this run folder, whatever DSCORE_NODES / DSCORE_REDIS_SHARED were at `up`
  for name in $( (cd "$RUN_DIR" 2>/dev/null && ls redis-*.pid 2>/dev/null) | sed 's/\.pid$//'); do
    "$REDIS" stop "$name"
  done
  "$KAFKA" stop
  rm -f "$RUN_DIR/dev.env"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: scripts/dev.sh up|status|down" ;;
esac
