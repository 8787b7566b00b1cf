#!/usr/bin/env bash
# The development cluster's key Secret (the chart's auth.existingSecret in k8s/tilt-values.yaml), made once:
# a Tiltfile reload renders the chart again, and a key drawn at every render would split the cluster. It
# holds the cluster key (auth-key) and the nodes' /admin bearer token (admin-token).
#
#   k8s/tilt-secret.sh NAMESPACE
set -euo pipefail
namespace="${1:?usage: tilt-secret.sh NAMESPACE}"
kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
if ! kubectl -n "$namespace" get secret dscore-dev-key >/dev/null 2>&1; then
    # 48 random bytes, base64: 64 characters (the nodes need at least 32 bytes); never printed.
    kubectl -n "$namespace" create secret generic dscore-dev-key \
        --from-literal=auth-key="$(openssl rand -base64 48)" \
        --from-literal=admin-token="$(openssl rand -hex 32)" >/dev/null
    echo "tilt-secret: made secret dscore-dev-key in $namespace" >&2
elif [[ -z "$(kubectl -n "$namespace" get secret dscore-dev-key -o jsonpath='{.data.admin-token}')" ]]; then
    # a Secret made before the nodes' /admin needed a token: add one, keep the key
    kubectl -n "$namespace" patch secret dscore-dev-key --type merge \
        -p "{\"stringData\": {\"admin-token\": \"$(openssl rand -hex 32)\"}}" >/dev/null
    echo "tilt-secret: added admin-token to dscore-dev-key in $namespace" >&2
fi
