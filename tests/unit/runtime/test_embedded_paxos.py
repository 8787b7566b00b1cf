"""An embedded Multi-Paxos cluster on the real runtime (asyncio, in-memory transport, real codec and
storage semantics): phase 1, commits, linearizable reads by read rounds, the leader killed and restarted
without losing an acknowledged write, a minority partition healed, snapshots, and membership changes
refused with a clear error."""

from __future__ import annotations

import asyncio

import pytest
from rt_doubles import appender

from dscore.check import HistoryRecorder, Verdict, check_history
from dscore.core.errors import ConfigError
from dscore.protocols.paxos import PaxosNode
from dscore.replica.executor import ExecutorConfig
from dscore.runtime.client import ClientConfig, KvClient
from dscore.runtime.cluster import EmbeddedCluster
from dscore.runtime.errors import MembershipChangeRejectedError
from dscore.runtime.node import RuntimeConfig

TIMEOUT_S = 10.0
CLIENT = ClientConfig(op_timeout_s=5.0, attempt_timeout_s=0.3, retry_backoff_s=0.005)


def paxos_cluster(size: int, seed: int, **options: object) -> EmbeddedCluster:
    return EmbeddedCluster(PaxosNode.factory(), size, seed=seed, protocol="paxos", **options)  # type: ignore[arg-type]


def core(cluster: EmbeddedCluster, node: str) -> PaxosNode:
    runtime = cluster.runtime(node)
    assert runtime is not None and isinstance(runtime.core, PaxosNode)
    return runtime.core


async def converged(cluster: EmbeddedCluster) -> None:
    def same() -> bool:
        runtimes = [cluster.runtime(n) for n in cluster.node_ids]
        images = {rt.state_machine.snapshot() for rt in runtimes if rt is not None}
        return None not in runtimes and len(images) == 1

    await cluster.wait_for(same, TIMEOUT_S)


async def test_paxos_elects_commits_reads_and_survives_the_leader_crash() -> None:
    history = HistoryRecorder()
    async with paxos_cluster(3, seed=4) as cluster:
        first = await cluster.wait_for_leader(TIMEOUT_S)
        endpoint = await cluster.client_endpoint("appenders")
        clients = [
            KvClient(endpoint, f"c{i}", config=CLIENT, history=history, process=i, process_stride=4)
            for i in range(4)
        ]
        assert (await clients[0].put("k", "v")).ok
        read = await clients[1].get("k")  # a linearizable read: a read round on the leader
        assert read.ok and read.value == "v" and read.node_id == first
        assert core(cluster, first).counters.get("phase1_won", 0) == 1

        stop = asyncio.Event()
        acked: list[str] = []
        workers = [asyncio.ensure_future(appender(c, "log", stop, acked)) for c in clients]
        await cluster.wait_for(lambda: len(acked) >= 50, TIMEOUT_S)
        cluster.kill(first)
        second = await cluster.wait_for_leader(TIMEOUT_S, exclude=(first,))
        before = len(acked)
        await cluster.wait_for(lambda: len(acked) >= before + 50, TIMEOUT_S)
        assert (await cluster.restart(first)).incarnation == 2
        await cluster.wait_for(lambda: len(acked) >= before + 100, TIMEOUT_S)
        stop.set()
        await asyncio.gather(*workers)
        await converged(cluster)
        final = {rt.state_machine.read("log") for n in cluster.node_ids if (rt := cluster.runtime(n))}
        assert len(final) == 1
        value = final.pop() or ""
        for token in acked:  # every acknowledged append is there, exactly once
            assert value.count(token) == 1, token
        assert second != first
    assert check_history(history.history(), model="kv").verdict is Verdict.LINEARIZABLE


async def test_paxos_minority_partition_then_heal_and_snapshots() -> None:
    config = RuntimeConfig(executor=ExecutorConfig(snapshot_every_entries=20))
    async with paxos_cluster(5, seed=5, config=config) as cluster:
        old = await cluster.wait_for_leader(TIMEOUT_S)
        endpoint = await cluster.client_endpoint("c")
        client = KvClient(endpoint, "c", config=CLIENT)
        others = [n for n in cluster.node_ids if n != old]
        cluster.partition([[old, others[0]], others[1:]])
        new = await cluster.wait_for_leader(TIMEOUT_S, among=others[1:])
        for i in range(60):
            assert (await client.put("k", f"during{i}")).ok
        cluster.heal()
        await converged(cluster)
        # The minority caught up past the majority's snapshots (or by chosen values), and nobody
        # deposed the majority's leader on the way back.
        assert core(cluster, old).commit_index >= 60 and cluster.leader() == new
        assert any(core(cluster, n).snapshot_index > 0 for n in cluster.node_ids)


async def test_paxos_has_no_membership_changes_and_says_so() -> None:
    async with paxos_cluster(3, seed=6) as cluster:
        leader = await cluster.wait_for_leader(TIMEOUT_S)
        runtime = cluster.runtime(leader)
        assert runtime is not None
        with pytest.raises(MembershipChangeRejectedError, match="no membership changes"):
            await runtime.add_member("n9", timeout_s=1.0)
        with pytest.raises(ConfigError, match="cannot grow"):
            await cluster.add_node("n9")
