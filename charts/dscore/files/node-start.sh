#!/bin/sh
# Starts dscore-node with its id, its peers and its initial cluster state, worked out from the pod's name
# and the mounted topology, so the pod template does not change with the replica count (a scale-up does not
# restart the running members). Run as `tini -- sh node-start.sh`; it ends in `exec dscore-node`, so tini
# signals the node itself (SIGTERM: a leader hands leadership over, then it exits 0).
#
#   POD_NAME                              <statefulset>-<ordinal> (downward API)
#   $TOPOLOGY/statefulset, replicas       the StatefulSet and its replica count (chart's topology ConfigMap)
#   $TOPOLOGY/founding-members            ordinals below this founded the cluster (state `new`); later
#                                         ones join it (`existing`: never campaign, the leader adds them)
#   $NODE_IDS/<pod name>                  the node id the membership Job gave this pod, when it differs from
#                                         the pod name (ids are never reused: a pod whose id was removed
#                                         comes back under a new one); such a pod always joins
set -eu
topology=${DSCORE_CHART_TOPOLOGY_DIR:-/etc/dscore/topology}
ids=${DSCORE_CHART_NODE_IDS_DIR:-/etc/dscore/node-ids}

die() {
    echo "node-start: $*" >&2
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
founding=$(read_setting founding-members)
[ -n "${POD_NAME:-}" ] || die "POD_NAME is not set"
ordinal=${POD_NAME##*-}
case $ordinal in
'' | *[!0-9]*) die "pod name $POD_NAME does not end in an ordinal" ;;
esac
[ "$POD_NAME" = "$sts-$ordinal" ] || die "pod $POD_NAME is not a pod of StatefulSet $sts"

# The members are the ordinals below the replica count; a pod above it (a scale-down under way) still
# counts itself and those below it.
count=$replicas
[ "$ordinal" -lt "$count" ] || count=$((ordinal + 1))
peers=
i=0
while [ "$i" -lt "$count" ]; do
    if [ "$i" -ne "$ordinal" ]; then
        peers="$peers${peers:+,}$(id_of "$sts-$i")"
    fi
    i=$((i + 1))
done

if [ "$ordinal" -ge "$founding" ] || [ -s "$ids/$POD_NAME" ]; then
    state=existing
else
    state=new
fi

DSCORE_NODE_ID=$(id_of "$POD_NAME")
DSCORE_PEERS=$peers
DSCORE_INITIAL_CLUSTER_STATE=$state
export DSCORE_NODE_ID DSCORE_PEERS DSCORE_INITIAL_CLUSTER_STATE
echo "node-start: node $DSCORE_NODE_ID ($state), peers ${DSCORE_PEERS:--}" >&2
exec dscore-node "$@"
