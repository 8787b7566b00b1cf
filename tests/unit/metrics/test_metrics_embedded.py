"""The collector on a real embedded Raft cluster: real statuses, the executor's real counters, the memory
network's real counters, and a rejection caused by real bad bytes.

The runtime does not implement `NodeSource` yet (the lead wires it): `ClusterNodeSource` below is the
adapter it stands for, and `_Counters` lacks three counters the metrics need (`leader_changes`,
`proposals_committed`, `proposals_failed`), read here as absent (zero) until the executor counts them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from dscore.metrics import NetworkCollector, NodeCollector
from dscore.runtime.cluster import EmbeddedCluster, raft_factory
from dscore.runtime.node import NodeStatus

TIMEOUT_S = 10.0


class _CountersWithDefaults:
    """The executor's counters, with the ones it does not keep yet read as zero."""

    _MISSING: Mapping[str, Any] = {"leader_changes": 0, "proposals_committed": 0, "proposals_failed": {}}

    def __init__(self, counters: object) -> None:
        self._counters = counters

    def __getattr__(self, name: str) -> Any:
        if hasattr(self._counters, name):
            return getattr(self._counters, name)
        return self._MISSING[name]


class ClusterNodeSource:
    """One node of an EmbeddedCluster, followed across restarts (each restart is a new NodeRuntime)."""

    def __init__(self, cluster: EmbeddedCluster, node_id: str) -> None:
        self._cluster = cluster
        self._node_id = node_id

    def status(self) -> NodeStatus:
        return next(s for s in self._cluster.statuses() if s.node_id == self._node_id)

    def executor_counters(self) -> _CountersWithDefaults | None:
        runtime = self._cluster.runtime(self._node_id)
        return _CountersWithDefaults(runtime.executor.counters) if runtime is not None else None

    def protocol_counters(self) -> Mapping[str, int]:
        runtime = self._cluster.runtime(self._node_id)
        counters = getattr(runtime.core, "counters", None) if runtime is not None else None
        return counters if isinstance(counters, dict) else {}

    def transport_stats(self) -> None:
        return None


async def test_a_live_cluster_through_the_collector() -> None:
    registry = CollectorRegistry()
    async with EmbeddedCluster(raft_factory(), 3, seed=11) as cluster:
        collector = NodeCollector(registry)
        for node_id in cluster.node_ids:
            collector.add_node(node_id, ClusterNodeSource(cluster, node_id), protocol="raft")
        NetworkCollector(registry, cluster.network)
        leader = await cluster.wait_for_leader(TIMEOUT_S)

        def sample(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, labels)

        leading = {n: sample("dscore_node_is_leader", protocol="raft", node=n) for n in cluster.node_ids}
        assert leading == {n: (1 if n == leader else 0) for n in cluster.node_ids}
        assert sample("dscore_node_role", protocol="raft", node=leader, role="leader") == 1
        leader_runtime = cluster.runtime(leader)
        assert leader_runtime is not None
        assert sample("dscore_node_term", protocol="raft", node=leader) == leader_runtime.status().term

        # bad bytes in a follower's inbox: dropped by the executor and counted, then visible in a scrape
        follower = next(n for n in cluster.node_ids if n != leader)
        follower_runtime = cluster.runtime(follower)
        assert follower_runtime is not None
        assert cluster.network.inject(follower, b"\x93 not a frame at all")
        rejected = follower_runtime.rejected

        def bad_frame_counted() -> bool:
            return sum(n for reason, n in rejected.items() if reason != "duplicate") > 0

        await cluster.wait_for(bad_frame_counted, TIMEOUT_S)
        bad = {reason: n for reason, n in rejected.items() if reason != "duplicate"}
        assert sum(bad.values()) == 1, bad
        for reason, count in bad.items():
            assert (
                sample("dscore_messages_rejected_total", protocol="raft", node=follower, reason=reason)
                == count
            )
        assert (sample("dscore_network_frames_delivered_total") or 0) > 0

        # a crashed node is down (and followed again once restarted)
        cluster.kill(follower)
        assert sample("dscore_node_up", protocol="raft", node=follower) == 0
        assert sample("dscore_node_role", protocol="raft", node=follower, role="down") == 1
        assert sample("dscore_storage_writes_total", protocol="raft", node=follower) is None
        await cluster.restart(follower)
        assert sample("dscore_node_up", protocol="raft", node=follower) == 1
