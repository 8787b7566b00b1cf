# shellcheck shell=bash disable=SC2034
# Shared helpers for scripts/*.sh (sourced, never run). Bash only. (SC2034: the variables are for the
# scripts that source this file.)
#
# Everything a script starts lives under DSCORE_RUN_DIR (default: <repo>/.run, ignored by git):
#   <name>.pid        the pid of the process called <name> (kafka, redis-n1, ...), for `kill -9 $(cat ...)`
#   <name>/           its data
#   logs/<name>.log   its log
# Downloads are cached under DSCORE_CACHE_DIR (default: <repo>/.cache, ignored by git).

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_DIR=${DSCORE_RUN_DIR:-$REPO_ROOT/.run}
CACHE_DIR=${DSCORE_CACHE_DIR:-$REPO_ROOT/.cache}
LOG_DIR=$RUN_DIR/logs

# Progress goes to stderr: stdout carries only what a caller parses (an address).
say() { printf '%s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# is_alive PID: the process exists and is not a zombie. For a process this script just started with `cmd &`:
# until the forked shell has exec'd, its command line is still the script's, so is_running would call a
# process that is starting "exited" (seen: `make up` failed at once with "gateway exited").
is_alive() {
  local pid=$1 state
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  state=$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $state != Z && $state != X ]]
}

# is_running PID PATTERN: the process exists, is not a zombie, and its command line contains PATTERN (so a
# recycled pid is never mistaken for ours). Processes whose parent died are re-parented to pid 1, which on
# some machines never reaps them: an exited one stays a zombie, hence the state check.
is_running() {
  local pid=$1 pattern=$2 cmdline
  is_alive "$pid" || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$pattern"* ]]
}

# pid_from FILE: the pid recorded in FILE, or nothing.
pid_from() { if [[ -f $1 ]]; then tr -dc '0-9' <"$1"; fi; }

# stop_pid PID PATTERN TIMEOUT_S NAME: SIGTERM, wait (bounded) for the process to exit, then SIGKILL.
stop_pid() {
  local pid=$1 pattern=$2 timeout_s=$3 name=$4 waited=0
  is_running "$pid" "$pattern" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  while is_running "$pid" "$pattern"; do
    if ((waited >= timeout_s * 10)); then
      say "$name (pid $pid) still running ${timeout_s}s after SIGTERM: sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      waited=0
      while is_running "$pid" "$pattern" && ((waited < 50)); do
        sleep 0.1
        waited=$((waited + 1))
      done
      is_running "$pid" "$pattern" && die "$name (pid $pid) survived SIGKILL"
      return 0
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
}

# port_in_use PORT: something listens on 127.0.0.1:PORT (or on every address).
port_in_use() {
  local port=$1
  if command -v ss >/dev/null 2>&1; then
    [[ -n $(ss -Hltn "sport = :$port" 2>/dev/null) ]]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
  fi
}

# need COMMAND DEBIAN_PACKAGE WHAT: make sure COMMAND exists. When it does not, install DEBIAN_PACKAGE with
# apt-get if we may (root, or passwordless sudo; DSCORE_NO_INSTALL=1 forbids it), otherwise stop with a
# message that names the package and how to get it.
need() {
  local cmd=$1 pkg=$2 what=$3 sudo=()
  command -v "$cmd" >/dev/null 2>&1 && return 0
  local hint="install it with 'sudo apt-get install $pkg' (Debian/Ubuntu), or put another '$cmd' on PATH"
  [[ ${DSCORE_NO_INSTALL:-0} == 1 ]] && die "$what is needed but '$cmd' is not on PATH; $hint"
  command -v apt-get >/dev/null 2>&1 || die "$what is needed but '$cmd' is not on PATH; $hint"
  if ((EUID != 0)); then
    sudo -n true 2>/dev/null || die "$what is needed but '$cmd' is not on PATH; $hint"
    sudo=(sudo -n)
  fi
  say "$what is missing ('$cmd'): installing Debian package $pkg"
  local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=300)
  if ! "${apt[@]}" install --no-install-recommends "$pkg" >&2; then
    "${apt[@]}" update >&2 || true
    "${apt[@]}" install --no-install-recommends "$pkg" >&2 || die "could not install $pkg; $hint"
  fi
  command -v "$cmd" >/dev/null 2>&1 || die "installed $pkg but '$cmd' is still not on PATH; $hint"
}

# log_tail FILE: the last lines of a log, for an error message.
log_tail() {
  local file=$1
  if [[ -s $file ]]; then
    say "---- last lines of $file ----"
    tail -n "${2:-40}" "$file" >&2
    say "----"
  else
    say "(the log $file is empty)"
  fi
}
