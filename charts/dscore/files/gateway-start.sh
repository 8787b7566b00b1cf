#!/bin/sh
# Starts dscore-gateway with DSCORE_NODES = the node ids of the StatefulSet's ordinals (pod names, or the
# ids the membership Job gave them), read from the mounted topology like node-start.sh. Run as
# `tini -- sh gateway-start.sh`; it ends in `exec dscore-gateway`.
set -eu
topology=${DSCORE_CHART_TOPOLOGY_DIR:-/etc/dscore/topology}
ids=${DSCORE_CHART_NODE_IDS_DIR:-/etc/dscore/node-ids}

die() {
    echo "gateway-start: $*" >&2
    exit 2
}
read_setting() {
    [ -s "$topology/$1" ] || die "missing $topology/$1 (the chart's topology ConfigMap)"
    cat "$topology/$1"
}
id_of() {
    if [ -s "$ids/$1" ]; then cat "$ids/$1"; else printf '%s' "$1"; fi
}

sts=$(read_setting statefulset)
replicas=$(read_setting replicas)
nodes=
i=0
while [ "$i" -lt "$replicas" ]; do
    nodes="$nodes${nodes:+,}$(id_of "$sts-$i")"
    i=$((i + 1))
done
DSCORE_NODES=$nodes
export DSCORE_NODES
echo "gateway-start: nodes $DSCORE_NODES" >&2
exec dscore-gateway "$@"
