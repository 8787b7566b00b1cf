#!/usr/bin/env bash
# A local dscore deployment in the background: `make up`, `make status`, `make down`.
#
#   scripts/dev.sh up       Kafka, one Redis per node, (next) the nodes and the gateway; prints where
#                           everything is. Idempotent: what already runs is kept.
#   scripts/dev.sh status   what runs, with pids
#   scripts/dev.sh down     stop it all (gateway, nodes, Redis, Kafka: the reverse order)
#
# Every process writes its pid to .run/<name>.pid (kafka, redis-n1, redis-n2, ..., later node-n1, ...,
# gateway), so a person or a script can fault one by hand: kill -9 "$(cat .run/redis-n2.pid)". Logs are
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

# Where the services slot in (the node and gateway mains are the next step, services/node and
# services/gateway). Each will be started like Redis and Kafka: in the background, in its own session,
# its pid in .run/<name>.pid and its output in .run/logs/<name>.log, then waited on for readiness
# (the gateway's health endpoint), e.g.
#   setsid .venv/bin/dscore-node --node-id n1 ... </dev/null >>.run/logs/node-n1.log 2>&1 &
#   echo $! >.run/node-n1.pid
SERVICES_BUILT=0

start_services() {
  if [[ $SERVICES_BUILT == 0 ]]; then
    say "nodes and gateway: not built yet (services/node, services/gateway); Kafka and Redis are up for them"
  fi
}

stop_services() {
  local name pid
  for name in gateway "${NODES[@]/#/node-}"; do
    pid=$(pid_from "$RUN_DIR/$name.pid")
    [[ -n $pid ]] || continue
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
  done
  start_services
  echo "Kafka:   $bootstrap  (pid $(cat "$RUN_DIR/kafka.pid"))"
  for node in "${NODES[@]}"; do
    read -r name port <<<"$(redis_of "$node")"
    echo "Redis:   redis://127.0.0.1:$port/0 for $node  (pid $(cat "$RUN_DIR/$name.pid"), $name)"
  done
  if [[ $SERVICES_BUILT == 1 ]]; then
    echo "Gateway: http://127.0.0.1:$GATEWAY_PORT"
  else
    echo "Gateway: not built yet (it will listen on http://127.0.0.1:$GATEWAY_PORT)"
  fi
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
