"""An embedded Raft cluster on the real runtime: election, commits, leader crash and restart without losing
an acknowledged write, partition and heal, exactly-once retries, and checked histories."""

from __future__ import annotations

import asyncio
import random

from rt_doubles import appender

from dscore.check import HistoryRecorder, Verdict, check_history
from dscore.core.client_messages import ClientRequest, Op, Outcome
from dscore.core.ids import NodeId
from dscore.protocols.raft import RaftNode
from dscore.replica.executor import ExecutorConfig
from dscore.runtime.client import ClientConfig, KvClient, OpOutcome
from dscore.runtime.cluster import EmbeddedCluster, raft_factory
from dscore.runtime.errors import StorageWentBackError
from dscore.runtime.node import RuntimeConfig
from dscore.storage.base import StoredState, WriteBatch
from dscore.storage.memory import MemoryStorage

TIMEOUT_S = 10.0
CLIENT = ClientConfig(op_timeout_s=5.0, attempt_timeout_s=0.3, retry_backoff_s=0.005)


async def kv_client(cluster: EmbeddedCluster, name: str, **options: object) -> KvClient:
    """A client on its own endpoint of the cluster's network, speaking the wire protocol."""
    endpoint = await cluster.client_endpoint(f"endpoint-{name}")
    return KvClient(endpoint, name, config=CLIENT, **options)  # type: ignore[arg-type]


def raft_core(cluster: EmbeddedCluster, node: NodeId) -> RaftNode:
    runtime = cluster.runtime(node)
    assert runtime is not None
    core = runtime.core
    assert isinstance(core, RaftNode)
    return core


def values(cluster: EmbeddedCluster, key: str) -> set[str | None]:
    return {rt.state_machine.read(key) for n in cluster.node_ids if (rt := cluster.runtime(n)) is not None}


async def converged(cluster: EmbeddedCluster) -> None:
    def same() -> bool:
        runtimes = [cluster.runtime(n) for n in cluster.node_ids]
        images = {rt.state_machine.snapshot() for rt in runtimes if rt is not None}
        return None not in runtimes and len(images) == 1

    await cluster.wait_for(same, TIMEOUT_S)


async def test_elects_commits_and_replicates() -> None:
    async with EmbeddedCluster(raft_factory(), 3, seed=1) as cluster:
        leader = await cluster.wait_for_leader(TIMEOUT_S)
        client = await kv_client(cluster, "c1")
        assert (await client.put("k", "v1")).ok
        assert (await client.append("k", "+")).ok
        read = await client.get("k")
        assert read.ok and read.value == "v1+"
        # The client found the leader from the replies alone.
        assert read.node_id == cluster.leader() == cluster.elections[-1].node_id
        await converged(cluster)
        assert values(cluster, "k") == {"v1+"}
        assert leader in cluster.node_ids


async def test_leader_crash_and_restart_lose_no_acknowledged_write() -> None:
    history = HistoryRecorder()
    async with EmbeddedCluster(raft_factory(), 3, seed=2) as cluster:
        first = await cluster.wait_for_leader(TIMEOUT_S)
        endpoint = await cluster.client_endpoint("appenders")
        clients = [
            KvClient(endpoint, f"c{i}", config=CLIENT, history=history, process=i, process_stride=4)
            for i in range(4)
        ]
        stop = asyncio.Event()
        acked: list[str] = []
        workers = [asyncio.ensure_future(appender(c, "log", stop, acked)) for c in clients]
        await cluster.wait_for(lambda: len(acked) >= 50, TIMEOUT_S)

        cluster.kill(first)  # kill -9: runtime gone, storage kept
        second = await cluster.wait_for_leader(TIMEOUT_S, exclude=(first,))
        before_restart = len(acked)
        await cluster.wait_for(lambda: len(acked) >= before_restart + 50, TIMEOUT_S)

        restarted = await cluster.restart(first)
        assert restarted.incarnation == 2
        await cluster.wait_for(lambda: len(acked) >= before_restart + 100, TIMEOUT_S)
        stop.set()
        await asyncio.gather(*workers)
        await converged(cluster)

        final = values(cluster, "log")
        assert len(final) == 1
        value = final.pop() or ""
        for token in acked:  # every acknowledged append is there, exactly once
            assert value.count(token) == 1, token
        assert cluster.leader() == second or cluster.leader() is not None
    assert check_history(history.history(), model="kv").verdict is Verdict.LINEARIZABLE


async def test_partition_minority_leader_then_heal() -> None:
    async with EmbeddedCluster(raft_factory(), 5, seed=3) as cluster:
        old = await cluster.wait_for_leader(TIMEOUT_S)
        client = await kv_client(cluster, "c")
        assert (await client.put("k", "before")).ok
        others = [n for n in cluster.node_ids if n != old]
        minority, majority = [old, others[0]], others[1:]
        cluster.partition([minority, majority])

        new = await cluster.wait_for_leader(TIMEOUT_S, among=majority)
        assert new in majority
        stuck = cluster.runtime(old)
        assert stuck is not None
        # The minority cannot commit: its (soon former) leader never answers a write.
        registration = await asyncio.gather(
            stuck.request(ClientRequest(0, Op.REGISTER), 0.3), return_exceptions=True
        )
        assert isinstance(registration[0], TimeoutError) or registration[0].outcome is not Outcome.OK
        assert (await client.put("k", "during")).ok

        cluster.heal()
        await converged(cluster)
        assert values(cluster, "k") == {"during"}
        assert cluster.leader() is not None
        assert (await client.put("k", "after")).ok


class GatedStorage(MemoryStorage):
    """A disk that can be told to hang after letting `allow` more saves through."""

    def __init__(self) -> None:
        super().__init__()
        self.allow: int | None = None
        self.gate = asyncio.Event()

    async def save(self, batch: WriteBatch) -> None:
        if self.allow is not None:
            if self.allow == 0:
                await self.gate.wait()
            self.allow -= 1
        await super().save(batch)

    async def load(self) -> StoredState:
        self.allow = None
        return await super().load()


async def test_retry_of_a_committed_but_unanswered_write_applies_once() -> None:
    """The leader replicates an append, then hangs before answering and is killed. The client's retry
    with the same seq on the new leader is answered from the session: the append happens once."""
    disks: dict[NodeId, GatedStorage] = {}

    def disk(node: NodeId) -> GatedStorage:
        disks[node] = GatedStorage()
        return disks[node]

    history = HistoryRecorder()
    async with EmbeddedCluster(raft_factory(), 3, seed=4, storage_factory=disk) as cluster:
        leader = await cluster.wait_for_leader(TIMEOUT_S)
        client = await kv_client(cluster, "c", history=history, rng=random.Random(0))
        assert (await client.put("k", "a")).ok  # opens the session
        disks[leader].allow = 1  # the entry's own save passes, the commit's save hangs
        attempt = asyncio.ensure_future(client.append("k", "b"))
        followers = [n for n in cluster.node_ids if n != leader]
        target = raft_core(cluster, leader).last_index
        await cluster.wait_for(lambda: all(raft_core(cluster, f).last_index >= target for f in followers), 5)

        cluster.kill(leader)
        result = await attempt
        assert result.outcome is OpOutcome.OK and result.attempts >= 2 and result.node_id != leader
        await cluster.restart(leader)
        await converged(cluster)
        assert values(cluster, "k") == {"ab"}
    assert check_history(history.history(), model="kv").verdict is Verdict.LINEARIZABLE


async def test_compaction_under_load_and_a_follower_catches_up_by_snapshot() -> None:
    config = RuntimeConfig(executor=ExecutorConfig(snapshot_every_entries=50))
    async with EmbeddedCluster(raft_factory(), 3, config=config, seed=5) as cluster:
        leader = await cluster.wait_for_leader(TIMEOUT_S)
        lagging = next(n for n in cluster.node_ids if n != leader)
        cluster.kill(lagging)
        client = await kv_client(cluster, "c")
        for i in range(200):
            assert (await client.put(f"k{i % 7}", str(i))).ok
        runtime = cluster.runtime(leader)
        assert runtime is not None and runtime.executor.counters.snapshots_taken >= 3
        await cluster.restart(lagging)  # its log ends far before the leader's snapshot
        await converged(cluster)
        assert values(cluster, "k6") == {"195"}
        disk = cluster.storages[lagging]
        assert isinstance(disk, MemoryStorage)
        installed = disk.stored_state().durable.snapshot
        assert installed is not None and installed.index >= 150  # caught up by InstallSnapshot


async def test_a_node_whose_storage_was_wiped_stops_instead_of_voting_again() -> None:
    async with EmbeddedCluster(raft_factory(), 3, seed=6) as cluster:
        leader = await cluster.wait_for_leader(TIMEOUT_S)
        client = await kv_client(cluster, "c")
        assert (await client.put("k", "v")).ok
        victim = next(n for n in cluster.node_ids if n != leader)
        await cluster.wait_for(lambda: cluster.runtime(victim).state_machine.read("k") == "v", TIMEOUT_S)  # type: ignore[union-attr]
        for _ in range(2):  # a few incarnations, so the peers' marks are ahead of a fresh start
            cluster.kill(victim)
            await cluster.restart(victim)
        cluster.kill(victim)
        cluster.storages[victim] = MemoryStorage()  # the disk was wiped
        restarted = await cluster.restart(victim)
        assert restarted.incarnation == 1
        error = await asyncio.wait_for(restarted.wait_failed(), TIMEOUT_S)
        assert isinstance(error, StorageWentBackError) and "storage went back in time" in str(error)
        assert not restarted.running
        assert (await client.put("k", "still served")).ok  # the other two go on
