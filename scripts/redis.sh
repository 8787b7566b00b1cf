#!/usr/bin/env bash
# One Redis server for dscore, on loopback, durable by default.
#
#   scripts/redis.sh start  NAME PORT [-- REDIS-ARGS...]   start it (idempotent); prints redis://127.0.0.1:PORT/0
#   scripts/redis.sh stop   NAME                           SIGTERM (Redis fsyncs and exits), bounded, then SIGKILL
#   scripts/redis.sh status NAME                           exit 0 and print the URL if running, 3 if not
#
# NAME is the process name: pid in $DSCORE_RUN_DIR/NAME.pid, data (the append-only file) in
# $DSCORE_RUN_DIR/NAME/, log in $DSCORE_RUN_DIR/logs/NAME.log. `make up` runs one per node (redis-n1, ...):
# each node's durable state is its own failure domain.
#
# Durability: AOF on, `appendfsync always` (DSCORE_REDIS_APPENDFSYNC overrides: everysec / no), so an
# acknowledged write survives kill -9 of Redis and a crash of the machine; RDB snapshots are off (the AOF
# is the record). Redis-server is Debian's package, installed with apt-get when missing.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

START_TIMEOUT_S=${DSCORE_REDIS_START_TIMEOUT_S:-30}
STOP_TIMEOUT_S=${DSCORE_REDIS_STOP_TIMEOUT_S:-15}

usage() { die "usage: scripts/redis.sh start NAME PORT [-- REDIS-ARGS...] | stop NAME | status NAME"; }

[[ $# -ge 2 ]] || usage
cmd=$1 name=$2
shift 2
[[ $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "bad server name '$name' (letters, digits, . _ -)"
pid_file=$RUN_DIR/$name.pid
data_dir=$RUN_DIR/$name
log_file=$LOG_DIR/$name.log
port_file=$data_dir/port

running_pid() {
  local pid
  pid=$(pid_from "$pid_file")
  if [[ -n $pid ]] && is_running "$pid" redis-server; then echo "$pid"; fi
}

url_of() { echo "redis://127.0.0.1:$1/0"; }

ping() { redis-cli -h 127.0.0.1 -p "$1" --no-auth-warning ping 2>/dev/null || true; }

start() {
  [[ $# -ge 1 ]] || usage
  local port=$1 pid waited=0
  shift
  [[ $port =~ ^[0-9]+$ ]] || die "bad port '$port'"
  [[ ${1:-} == -- ]] && shift
  need redis-server redis-server "Redis"
  need redis-cli redis-tools "Redis's client"
  mkdir -p "$data_dir" "$LOG_DIR"
  pid=$(running_pid)
  if [[ -n $pid ]]; then
    local was
    was=$(cat "$port_file" 2>/dev/null || true)
    [[ $was == "$port" ]] || die "$name already runs (pid $pid) on port $was, not $port: stop it first"
    say "$name already running (pid $pid)"
    url_of "$port"
    return 0
  fi
  port_in_use "$port" && die "port $port is in use by another process; pick another port for $name"
  local fsync=${DSCORE_REDIS_APPENDFSYNC:-always}
  # The server runs in its own session with no terminal and no inherited pipes, so a caller that
  # captures this script's output (pytest) is not kept waiting for the server to exit. Its stdout goes
  # to the log too: errors in the arguments are printed before --logfile takes effect.
  # shellcheck disable=SC2094
  setsid redis-server \
    --bind 127.0.0.1 --port "$port" --protected-mode yes \
    --dir "$data_dir" --appendonly yes --appendfsync "$fsync" --save "" \
    --daemonize no --logfile "$log_file" \
    "$@" </dev/null >>"$log_file" 2>&1 &
  pid=$!
  echo "$pid" >"$pid_file"
  echo "$port" >"$port_file"
  # Ready when it answers PING (it answers LOADING while it replays the AOF).
  until [[ $(ping "$port") == PONG ]]; do
    if ! is_alive "$pid"; then
      log_tail "$log_file"
      rm -f "$pid_file"
      die "$name (redis-server on port $port) exited during start-up"
    fi
    if ((waited >= START_TIMEOUT_S * 20)); then
      log_tail "$log_file"
      stop_pid "$pid" redis-server 5 "$name"
      rm -f "$pid_file"
      die "$name did not answer PING within ${START_TIMEOUT_S}s (DSCORE_REDIS_START_TIMEOUT_S)"
    fi
    sleep 0.05
    waited=$((waited + 1))
  done
  say "$name: redis-server pid $pid, port $port, appendfsync $fsync, data $data_dir, log $log_file"
  url_of "$port"
}

stop() {
  local pid
  pid=$(running_pid)
  if [[ -z $pid ]]; then
    rm -f "$pid_file"
    say "$name: not running"
    return 0
  fi
  stop_pid "$pid" redis-server "$STOP_TIMEOUT_S" "$name"
  rm -f "$pid_file"
  say "$name: stopped (pid $pid)"
}

status() {
  local pid
  pid=$(running_pid)
  if [[ -z $pid ]]; then
    say "$name: not running"
    exit 3
  fi
  say "$name: running (pid $pid)"
  url_of "$(cat "$port_file")"
}

case $cmd in
  start) start "$@" ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
