#!/usr/bin/env bash
# The development cluster's key Secret (the chart's auth.existingSecret in k8s/tilt-values.yaml), made once:
# a Tiltfile reload renders the chart again, and a key drawn at every render would split the cluster.
#
#   k8s/tilt-secret.sh NAMESPACE
set -euo pipefail
namespace="${1:?usage: tilt-secret.sh NAMESPACE}"
kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
if ! kubectl -n "$namespace" get secret dscore-dev-key >/dev/null 2>&1; then
    # 48 random bytes, base64: 64 characters (the nodes need at least 32 bytes); never printed.
    kubectl -n "$namespace" create secret generic dscore-dev-key \
        --from-literal=auth-key="$(openssl rand -base64 48)" >/dev/null
    echo "tilt-secret: made secret dscore-dev-key in $namespace" >&2
fi
