#!/usr/bin/env bash
# A real, local Kubernetes control plane without a kubelet or container runtime, for dev and tests:
# Debian's etcd, kube-apiserver, kube-controller-manager and kube-scheduler (built by scripts/k8s-build.sh),
# and kwok, a fake kubelet that marks fake nodes Ready and scheduled pods Running (no container runs).
# Everything listens on loopback only; certificates and keys are made with openssl at first start, under
# the state folder (default var/k8s/, ignored by git), and never leave it.
#
#   scripts/k8s.sh up       start (building the binaries first if missing); print the kubeconfig path.
#                           Already up: print the path and change nothing.
#   scripts/k8s.sh down     stop our processes and drop the cluster's data (certificates and logs stay)
#   scripts/k8s.sh status   exit 0 and print the kubeconfig path when up, exit 1 otherwise
#   scripts/k8s.sh env      print `export KUBECONFIG=...` and a PATH holding helm and kubectl
#
# Each `up` from down starts an empty cluster: `down` wipes etcd's data, so no state (and no stale
# node lease that would make kwok wait ~30 s for it to expire) carries over between runs.
#
# Fake nodes are labelled `type=kwok` and tainted `kwok.x-k8s.io/node=fake:NoSchedule`: a pod lands on one
# only with nodeSelector {type: kwok} and a toleration for that taint.
#
# Settings (environment):
#   DSCORE_K8S_STATE             state folder (<repo>/var/k8s)
#   DSCORE_K8S_API_PORT          kube-apiserver's HTTPS port (default: 20000-32690, from the state folder)
#   DSCORE_K8S_ETCD_PORT         etcd's client port (default: the API port + 1)
#   DSCORE_K8S_ETCD_PEER_PORT    etcd's peer port (default: the API port + 2)
#   DSCORE_K8S_NODES             number of fake nodes (3)
#   DSCORE_K8S_READY_TIMEOUT_S   bound on each readiness wait (90)
#   and the version / cache settings of scripts/k8s-build.sh.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/.." && pwd)"
# `need` (install a missing Debian package, or say how); `die` and `log` are redefined below
# shellcheck source=scripts/lib.sh
source "$script_dir/lib.sh"
build="$script_dir/k8s-build.sh"

state="${DSCORE_K8S_STATE:-$repo_root/var/k8s}"
# Default ports follow from the state folder, so planes of different worktrees (tests running at once on a
# shared machine) do not clash, and one worktree's ports stay the same from run to run. Below Linux's
# ephemeral range (32768+), so no outgoing connection holds them by chance.
port_base=$((20000 + $(printf '%s' "$state" | cksum | cut -d' ' -f1) % 1270 * 10))
api_port="${DSCORE_K8S_API_PORT:-$port_base}"
etcd_port="${DSCORE_K8S_ETCD_PORT:-$((port_base + 1))}"
etcd_peer_port="${DSCORE_K8S_ETCD_PEER_PORT:-$((port_base + 2))}"
node_count="${DSCORE_K8S_NODES:-3}"
ready_timeout_s="${DSCORE_K8S_READY_TIMEOUT_S:-90}"

pki="$state/pki"
logs="$state/logs"
pids="$state/pids"
etcd_data="$state/etcd-data"
kubeconfig="$state/kubeconfig"
api_url="https://127.0.0.1:$api_port"
# Stopped first to last on `down`; started in the reverse order.
components=(kwok kube-scheduler kube-controller-manager kube-apiserver etcd)

die() {
    echo "k8s: $*" >&2
    exit 1
}
log() { echo "k8s: $*" >&2; }

check_setting() {
    local name="$1" value="$2"
    [[ "$value" =~ ^[0-9]+$ ]] || die "$name must be a number, got '$value'"
}

check_prerequisites() {
    # What Debian packages give is installed when missing, as for Kafka's Java and Redis (a fresh machine
    # has no etcd-server: `make test` must get it by itself); DSCORE_NO_INSTALL=1 only names them.
    need etcd etcd-server "the control plane's etcd"
    need openssl openssl "openssl (for the control plane's certificates)"
    need curl curl "curl (for the readiness checks)"
    need flock util-linux "flock"
    local missing=()
    command -v python3 >/dev/null 2>&1 || missing+=("python3 (Debian: apt-get install -y python3)")
    if [[ ${#missing[@]} -gt 0 ]]; then
        printf 'k8s: missing prerequisite: %s\n' "${missing[@]}" >&2
        exit 1
    fi
    check_setting DSCORE_K8S_API_PORT "$api_port"
    check_setting DSCORE_K8S_ETCD_PORT "$etcd_port"
    check_setting DSCORE_K8S_ETCD_PEER_PORT "$etcd_peer_port"
    check_setting DSCORE_K8S_NODES "$node_count"
    check_setting DSCORE_K8S_READY_TIMEOUT_S "$ready_timeout_s"
    [[ "$node_count" -ge 1 ]] || die "DSCORE_K8S_NODES must be at least 1"
}

bin() { "$build" path "$1"; }

# --- processes -------------------------------------------------------------------------------------------

# The pid of a component we started, if it still runs. A pid is ours only if its command line names our
# state folder: a recycled pid (or another engineer's etcd) is never mistaken for ours.
running_pid() {
    local pid_file="$pids/$1.pid" pid
    [[ -s "$pid_file" ]] || return 1
    pid="$(<"$pid_file")"
    [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$state/" || return 1
    echo "$pid"
}

log_tail() {
    local name="$1"
    echo "---- last lines of $logs/$name.log ----" >&2
    tail -n 25 "$logs/$name.log" >&2 2>/dev/null || echo "(no log)" >&2
}

fail_with_logs() {
    local message="$1" name
    shift
    echo "k8s: $message" >&2
    for name in "$@"; do log_tail "$name"; done
    echo "k8s: stopping what started; logs stay in $logs" >&2
    stop_all
    exit 1
}

start_component() {
    local name="$1"
    shift
    # setsid: the plane outlives the shell or test run that started it and ignores its Ctrl-C.
    # 9>&-: the component must not inherit (and so hold forever) the lock of `up` / `down`.
    setsid "$@" >"$logs/$name.log" 2>&1 </dev/null 9>&- &
    local pid=$! deadline=$((SECONDS + 10))
    echo "$pid" >"$pids/$name.pid"
    # Until the child has exec'd, its command line is this shell's, which `running_pid` would take for a
    # stranger (on a loaded machine that window lasted long enough to report a live apiserver as exited).
    while [[ -r "/proc/$pid/cmdline" ]] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$state/"; do
        ((SECONDS < deadline)) || break
        sleep 0.05
    done
}

# Wait up to $2 seconds for process $1 to exit (a zombie has exited).
wait_exit() {
    local pid="$1" deadline=$((SECONDS + $2)) stat
    while stat="$(cat "/proc/$pid/stat" 2>/dev/null)"; do
        stat="${stat##*) }"
        [[ "${stat:0:1}" == Z ]] && return 0
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}

stop_component() {
    local name="$1" pid
    if pid="$(running_pid "$name")"; then
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_exit "$pid" 15; then
            log "$name (pid $pid) ignored SIGTERM for 15 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            wait_exit "$pid" 5 || log "$name (pid $pid) still there after SIGKILL"
        fi
    fi
    rm -f "$pids/$name.pid"
}

stop_all() {
    local name
    for name in "${components[@]}"; do stop_component "$name"; done
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# --- certificates and kubeconfig -------------------------------------------------------------------------

make_pki() {
    [[ -s "$pki/ca.crt" && -s "$pki/apiserver.crt" && -s "$pki/admin.crt" && -s "$pki/sa.pub" ]] && return 0
    log "generating a local CA, serving and client certificates and a service-account key in $pki"
    rm -rf "$pki"
    mkdir -p "$pki"
    chmod 700 "$pki"
    openssl genrsa -out "$pki/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=dscore-local-k8s-ca" -days 3650 \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$pki/ca.crt"
    # name, subject, extensions
    issue() {
        openssl genrsa -out "$pki/$1.key" 2048 2>/dev/null
        openssl req -new -key "$pki/$1.key" -subj "$2" -out "$pki/$1.csr"
        openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
            -CAcreateserial -CAserial "$pki/ca.srl" -days 825 -extfile <(printf '%b' "$3") \
            -out "$pki/$1.crt" 2>/dev/null
        rm -f "$pki/$1.csr"
    }
    issue apiserver "/CN=kube-apiserver" \
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.0.0.1\n"
    issue admin "/O=system:masters/CN=dscore-admin" \
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
    chmod 600 "$pki"/*.key
}

write_kubeconfig() {
    local tmp="$kubeconfig.tmp"
    (
        umask 077
        cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: dscore-local
  cluster:
    server: $api_url
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: dscore-admin
  user:
    client-certificate-data: $(base64 -w0 "$pki/admin.crt")
    client-key-data: $(base64 -w0 "$pki/admin.key")
contexts:
- name: dscore-local
  context:
    cluster: dscore-local
    user: dscore-admin
    namespace: default
current-context: dscore-local
EOF
    )
    mv "$tmp" "$kubeconfig"
}

# --- readiness -------------------------------------------------------------------------------------------

# Poll `probe` until it succeeds, failing early if any watched component has exited, and failing after
# DSCORE_K8S_READY_TIMEOUT_S with the watched components' log tails.
wait_until() {
    local what="$1" probe="$2"
    shift 2
    local deadline=$((SECONDS + ready_timeout_s)) name
    until "$probe"; do
        for name in "$@"; do
            running_pid "$name" >/dev/null || fail_with_logs "$name exited while waiting for $what" "$@"
        done
        if ((SECONDS >= deadline)); then
            # The apiserver says which of its checks fail; the rest is in the logs.
            [[ "$probe" == api_ready ]] && api_request "$api_url/readyz?verbose" 2>&1 | grep -v ' ok$' >&2
            fail_with_logs "$what not reached within ${ready_timeout_s} s" "$@"
        fi
        sleep 0.2
    done
    log "$what after $(elapsed) s"
}

# Seconds since `up` began, to a tenth.
elapsed() {
    local now="${EPOCHREALTIME/./}"
    printf '%d.%d' $(((now - up_started_us) / 1000000)) $(((now - up_started_us) / 100000 % 10))
}

etcd_healthy() {
    curl -sf --max-time 2 "http://127.0.0.1:$etcd_port/health" 2>/dev/null |
        python3 -c 'import json,sys; sys.exit(json.load(sys.stdin).get("health") != "true")' 2>/dev/null
}

api_request() {
    curl -s --max-time 5 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$@"
}

api_ready() {
    [[ "$(api_request "$api_url/readyz" 2>/dev/null)" == "ok" ]]
}

kubectl_() { "$(bin kubectl)" --kubeconfig "$kubeconfig" "$@"; }

create_nodes() {
    local i name
    for ((i = 0; i < node_count; i++)); do
        name="kwok-node-$i"
        kubectl_ create -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: $name
    kubernetes.io/os: linux
    node-role.kubernetes.io/agent: ""
spec:
  taints:
  - key: kwok.x-k8s.io/node
    value: fake
    effect: NoSchedule
status:
  allocatable: {cpu: "16", memory: 64Gi, pods: "110"}
  capacity: {cpu: "16", memory: 64Gi, pods: "110"}
  nodeInfo:
    architecture: amd64
    kubeletVersion: fake
    kubeProxyVersion: fake
    operatingSystem: linux
EOF
    done
}

nodes_ready() {
    kubectl_ get nodes -l type=kwok -o json 2>/dev/null | python3 -c '
import json, sys
nodes = json.load(sys.stdin)["items"]
ready = [n for n in nodes
         if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))]
sys.exit(len(ready) != int(sys.argv[1]))' "$node_count"
}

default_service_account() {
    kubectl_ get serviceaccount default -n default -o name >/dev/null 2>&1
}

# --- commands --------------------------------------------------------------------------------------------

is_up() {
    local name
    for name in "${components[@]}"; do running_pid "$name" >/dev/null || return 1; done
    [[ -s "$kubeconfig" && -s "$pki/ca.crt" ]] && api_ready
}

cmd_up() {
    check_prerequisites
    mkdir -p "$state"
    exec 9>"$state/.lock"
    flock 9
    if is_up; then
        log "already up"
        echo "$kubeconfig"
        return 0
    fi
    "$build"
    local name
    up_started_us="${EPOCHREALTIME/./}"
    # Whatever is left of an earlier run (a crash, a half start) goes, with its data: start clean.
    stop_all
    rm -rf "$etcd_data"
    for name in "$api_port:DSCORE_K8S_API_PORT" "$etcd_port:DSCORE_K8S_ETCD_PORT" \
        "$etcd_peer_port:DSCORE_K8S_ETCD_PEER_PORT"; do
        if port_in_use "${name%%:*}"; then
            die "port ${name%%:*} on 127.0.0.1 is in use by another process: set ${name#*:} to a free port"
        fi
    done
    mkdir -p "$logs" "$pids" "$etcd_data"
    chmod 700 "$etcd_data"
    make_pki
    write_kubeconfig

    start_component etcd etcd --name dscore-k8s --data-dir "$etcd_data" --logger zap \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
        --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
        --initial-cluster "dscore-k8s=http://127.0.0.1:$etcd_peer_port" --initial-cluster-state new
    wait_until "etcd health" etcd_healthy etcd

    # WatchList=false: with etcd 3.4, 1.35's watch-list makes kwok's watches fail and pods take 10-80 s to run.
    # --endpoint-reconciler-type=none: no error every 10 s about a loopback address for `kubernetes` endpoints.
    start_component kube-apiserver "$(bin kube-apiserver)" \
        --etcd-servers "http://127.0.0.1:$etcd_port" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
        --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
        --client-ca-file "$pki/ca.crt" \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
        --service-cluster-ip-range 10.0.0.0/24 --authorization-mode RBAC --allow-privileged=true \
        --feature-gates WatchList=false --endpoint-reconciler-type none --profiling=false
    wait_until "kube-apiserver /readyz" api_ready kube-apiserver etcd

    # No listeners of their own (--secure-port=0) and no leader election: nothing to clash with.
    start_component kube-controller-manager "$(bin kube-controller-manager)" \
        --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" \
        --authorization-kubeconfig "$kubeconfig" \
        --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
        --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
        --use-service-account-credentials=true --leader-elect=false --secure-port 0 --profiling=false
    start_component kube-scheduler "$(bin kube-scheduler)" \
        --kubeconfig "$kubeconfig" --leader-elect=false --secure-port 0 --profiling=false

    create_nodes
    # kwok's default pod range would overlap the 10.0.0.0/24 service range.
    start_component kwok "$(bin kwok)" --kubeconfig "$kubeconfig" --config "$(bin kwok-stages.yaml)" \
        --manage-all-nodes=true --cidr 10.244.0.0/16 --node-ip 10.1.0.1
    wait_until "$node_count kwok node(s) Ready" nodes_ready kwok kube-apiserver
    # The controller manager creates each namespace's `default` ServiceAccount, which pods need.
    wait_until "the default ServiceAccount" default_service_account kube-controller-manager kube-apiserver
    for name in "${components[@]}"; do
        running_pid "$name" >/dev/null || fail_with_logs "$name exited during start" "$name"
    done
    log "up in $(elapsed) s: API $api_url, $node_count fake node(s), logs in $logs"
    echo "$kubeconfig"
}

cmd_down() {
    mkdir -p "$state"
    exec 9>"$state/.lock"
    flock 9
    stop_all
    rm -rf "$etcd_data" "$kubeconfig"
    log "down"
}

cmd_status() {
    if is_up; then
        echo "$kubeconfig"
    else
        log "down"
        return 1
    fi
}

cmd_env() {
    echo "export KUBECONFIG=$kubeconfig"
    echo "export PATH=$(dirname "$(bin helm)"):$(dirname "$(bin kubectl)"):\$PATH"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) die "usage: $0 up | down | status | env" ;;
esac
