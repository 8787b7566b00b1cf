#!/usr/bin/env bash
# A failover drill (the Tiltfile's `failover-drill` button): find the leader, delete its pod, and report how
# long the cluster took to accept a write again and the StatefulSet to replace the pod.
#
#   k8s/failover-drill.sh NAMESPACE STATEFULSET GATEWAY_URL
set -euo pipefail
namespace="${1:?usage: failover-drill.sh NAMESPACE STATEFULSET GATEWAY_URL}"
statefulset="${2:?}"
gateway="${3:?}"
timeout_s="${DSCORE_DRILL_TIMEOUT_S:-60}"

state_of() { # the node's /debug/state, read from inside its pod (the node image's Python)
    kubectl -n "$namespace" exec "$1" -c node -- python -c \
        'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:8080/debug/state", timeout=2).read().decode())'
}
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1]) or "")' "$1"; }
write() {
    curl -fsS -o /dev/null -m 2 -X PUT "$gateway/v1/kv/drill" -H 'Content-Type: application/json' \
        -d "{\"value\": \"$(date +%s%N)\"}"
}

leader=""
for pod in $(kubectl -n "$namespace" get pods -l app.kubernetes.io/component=node -o name); do
    leader="$(state_of "${pod#pod/}" | json_field leader_id)" && [[ -n "$leader" ]] && break
done
[[ -n "$leader" ]] || { echo "drill: no node knows a leader" >&2; exit 1; }
leader_pod="${leader%%.g*}"   # ids are pod names (or <pod>.g<k> after a rename)
write || { echo "drill: the gateway does not accept writes before the fault; not starting" >&2; exit 1; }
old_uid="$(kubectl -n "$namespace" get pod "$leader_pod" -o jsonpath='{.metadata.uid}')"

echo "drill: deleting the leader's pod $leader_pod (node $leader)"
start_ns="$(date +%s%N)"
kubectl -n "$namespace" delete pod "$leader_pod" --wait=false >/dev/null
until write; do
    (( ($(date +%s%N) - start_ns) / 1000000000 < timeout_s )) || { echo "drill: no write within ${timeout_s} s" >&2; exit 1; }
    sleep 0.05
done
echo "drill: writes accepted again after $(( ($(date +%s%N) - start_ns) / 1000000 )) ms"
kubectl -n "$namespace" wait --for=condition=Ready "pod/$leader_pod" --timeout="${timeout_s}s" >/dev/null
new_uid="$(kubectl -n "$namespace" get pod "$leader_pod" -o jsonpath='{.metadata.uid}')"
[[ "$new_uid" != "$old_uid" ]] || { echo "drill: $leader_pod was not replaced" >&2; exit 1; }
echo "drill: $leader_pod replaced and ready after $(( ($(date +%s%N) - start_ns) / 1000000 )) ms"
echo "drill: new leader $(state_of "${statefulset}-0" | json_field leader_id)"
