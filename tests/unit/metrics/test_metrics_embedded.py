"""The collector on a real embedded Raft cluster: real statuses, the executor's real counters and latencies,
the memory network's real counters, and a rejection caused by real bad bytes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from dscore.metrics import NetworkCollector, NodeCollector
from dscore.runtime.client import KvClient
from dscore.runtime.cluster import EmbeddedCluster, raft_factory

TIMEOUT_S = 10.0


async def test_a_live_cluster_through_the_collector() -> None:
    registry = CollectorRegistry()
    collector = NodeCollector(registry)
    async with EmbeddedCluster(raft_factory(), 3, seed=11, metrics=collector) as cluster:
        NetworkCollector(registry, cluster.network)
        leader = await cluster.wait_for_leader(TIMEOUT_S)

        def sample(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, labels)

        client = KvClient(await cluster.client_endpoint("c"), "c")
        for i in range(5):
            assert (await client.put("k", str(i))).ok
        on_leader = {"protocol": "raft", "node": leader}
        assert (sample("dscore_proposals_committed_total", **on_leader) or 0) >= 6  # a registration, 5 puts
        assert (sample("dscore_commit_duration_seconds_count", **on_leader) or 0) >= 6
        assert (sample("dscore_persist_duration_seconds_count", **on_leader) or 0) > 0
        assert (sample("dscore_elections_won_total", **on_leader) or 0) >= 1
        assert (sample("dscore_leader_changes_total", **on_leader) or 0) >= 1
        assert (sample("dscore_messages_sent_total", kind="raft.append", **on_leader) or 0) > 0
        assert (sample("dscore_node_requests_total", outcome="ok", **on_leader) or 0) >= 6

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
