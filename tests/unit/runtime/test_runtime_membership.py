"""Membership changes on the embedded runtime: growing a running Raft cluster under load (a learner, its
promotion, a voter) until a new node leads, a learner that replicates but never counts, shrinking by
removing the leader itself, a removed node's messages rejected, and clear errors for refused changes."""

from __future__ import annotations

import asyncio
import random

import pytest
from rt_doubles import appender, mini_core

from dscore.check import HistoryRecorder, Verdict, check_history
from dscore.core.client_messages import ClientRequest, Op, Outcome
from dscore.core.codec import encode_envelope
from dscore.core.envelope import EnvelopeFactory
from dscore.core.errors import ConfigError, LocalError, NotLeaderError
from dscore.core.ids import NodeId
from dscore.protocols.contract import DurableState
from dscore.protocols.raft import RaftNode, Role, VoteRequest
from dscore.replica.executor import ExecutorConfig
from dscore.runtime.client import ClientConfig, KvClient
from dscore.runtime.cluster import EmbeddedCluster, raft_factory
from dscore.runtime.errors import MembershipChangeRejectedError
from dscore.runtime.node import NodeRuntime, RuntimeConfig
from dscore.storage.memory import MemoryStorage
from dscore.transport.memory import MemoryNetwork

TIMEOUT_S = 10.0
CLIENT = ClientConfig(op_timeout_s=5.0, attempt_timeout_s=0.3, retry_backoff_s=0.005)


async def kv_client(cluster: EmbeddedCluster, name: str, **options: object) -> KvClient:
    endpoint = await cluster.client_endpoint(f"endpoint-{name}")
    return KvClient(endpoint, name, config=CLIENT, **options)  # type: ignore[arg-type]


def live(cluster: EmbeddedCluster, node: NodeId) -> NodeRuntime:
    runtime = cluster.runtime(node)
    assert runtime is not None, f"{node} is down"
    return runtime


def raft_core(cluster: EmbeddedCluster, node: NodeId) -> RaftNode:
    core = live(cluster, node).core
    assert isinstance(core, RaftNode)
    return core


async def converged(cluster: EmbeddedCluster, nodes: tuple[NodeId, ...] | None = None) -> None:
    """Every listed node runs and has applied the same entries to the same state."""

    def same() -> bool:
        runtimes = [cluster.runtime(n) for n in (nodes or cluster.node_ids)]
        if any(rt is None for rt in runtimes):
            return False
        states = {(rt.state_machine.applied_index, rt.state_machine.snapshot()) for rt in runtimes if rt}
        return len(states) == 1

    await cluster.wait_for(same, TIMEOUT_S)


def unknown_senders(cluster: EmbeddedCluster, nodes: list[NodeId]) -> int:
    return sum(live(cluster, n).rejected.get("unknown_sender", 0) for n in nodes)


async def test_grow_three_to_five_under_load_and_a_new_node_takes_over() -> None:
    history = HistoryRecorder()
    originals = ("n1", "n2", "n3")
    everyone = (*originals, "n4", "n5")
    async with EmbeddedCluster(raft_factory(), 3, seed=11) as cluster:
        first = await cluster.wait_for_leader(TIMEOUT_S)
        # One original is cut off for the whole growth: its log (and configuration) will lag behind.
        stale = next(n for n in originals if n != first)
        connected = [n for n in originals if n != stale]
        cluster.isolate(stale)
        endpoint = await cluster.client_endpoint("appenders")
        clients = [
            KvClient(endpoint, f"c{i}", config=CLIENT, history=history, process=i, process_stride=3)
            for i in range(3)
        ]
        stop = asyncio.Event()
        acked: list[str] = []
        workers = [asyncio.ensure_future(appender(c, "log", stop, acked)) for c in clients]
        await cluster.wait_for(lambda: len(acked) >= 30, TIMEOUT_S)

        # n4 joins as a learner, catches up from an empty log under load, and is promoted.
        await cluster.add_node("n4", as_learner=True)
        assert cluster.node_ids == (*originals, "n4")
        # Committed on the leader; the learner itself learns it from the log it is catching up on.
        await cluster.wait_for(lambda: live(cluster, "n4").learners == ("n4",), TIMEOUT_S)
        assert raft_core(cluster, "n4").role is Role.LEARNER
        leader = await cluster.wait_for_leader(TIMEOUT_S, among=connected)
        target = live(cluster, leader).state_machine.applied_index
        await cluster.wait_for(lambda: live(cluster, "n4").state_machine.applied_index >= target, TIMEOUT_S)
        await cluster.promote_node("n4")
        # n5 joins straight as a voter.
        await cluster.add_node("n5")
        grown = len(acked)
        await cluster.wait_for(lambda: len(acked) >= grown + 30, TIMEOUT_S)
        stop.set()
        await asyncio.gather(*workers)
        await converged(cluster, (*connected, "n4", "n5"))
        for node in (*connected, "n4", "n5"):
            assert live(cluster, node).voters == everyone and live(cluster, node).learners == ()
        assert {s.node_id for s in cluster.statuses()} == set(everyone)
        assert live(cluster, stale).voters == originals  # it missed both changes

        # A new node takes over. Stop both connected originals (the leader among them): the 3-of-5 quorum
        # left is the stale original and the two new nodes, and the election restriction makes one of the
        # new nodes win. The stale node accepts their messages although its configuration does not list
        # them (the cluster introduced them), votes, and catches up from the new leader.
        for node in connected:
            cluster.kill(node)
        cluster.heal()
        new_leader = await cluster.wait_for_leader(TIMEOUT_S)
        assert new_leader in ("n4", "n5")
        writer = await kv_client(cluster, "after", history=history, process=1000)
        assert (await writer.put("k", "under a new node")).ok
        await converged(cluster, (stale, "n4", "n5"))
        assert live(cluster, stale).voters == everyone
        value = live(cluster, stale).state_machine.read("log") or ""
        for token in acked:  # every acknowledged append survived, exactly once
            assert value.count(token) == 1, token
    assert check_history(history.history(), model="kv").verdict is Verdict.LINEARIZABLE


async def test_a_learner_replicates_but_neither_votes_nor_counts_for_quorum() -> None:
    async with EmbeddedCluster(raft_factory(), 3, seed=12) as cluster:
        leader = await cluster.wait_for_leader(TIMEOUT_S)
        client = await kv_client(cluster, "c")
        for i in range(20):
            assert (await client.put(f"k{i % 4}", str(i))).ok
        await cluster.add_node("n4", as_learner=True)
        assert (await client.put("k", "with a learner")).ok
        await converged(cluster)  # the learner has every entry, from an empty log
        assert live(cluster, "n4").state_machine.read("k3") == "19"

        # Its storage holds the configuration: a restart keeps it a learner and it catches up again.
        cluster.kill("n4")
        assert (await client.put("k", "while the learner is down")).ok
        await cluster.restart("n4")
        await converged(cluster)
        learner = raft_core(cluster, "n4")
        assert learner.role is Role.LEARNER and learner.voters == ("n1", "n2", "n3")

        # The leader and the learner alone are no quorum: the leader cannot commit, steps down (check
        # quorum does not count the learner), and neither of them is ever elected (the learner never
        # campaigns, and its vote is not counted).
        others = [n for n in ("n1", "n2", "n3") if n != leader]
        cluster.partition([[leader, "n4"], others])
        stuck = live(cluster, leader).request(
            ClientRequest(0, Op.PUT, "k", "minority", client_id=1, seq=1), 1.0
        )
        outcome = (await asyncio.gather(stuck, return_exceptions=True))[0]
        assert isinstance(outcome, TimeoutError) or outcome.outcome is not Outcome.OK  # type: ignore[union-attr]
        majority_leader = await cluster.wait_for_leader(TIMEOUT_S, among=others)
        assert (await client.put("k", "majority")).ok
        await cluster.wait_for(
            lambda: raft_core(cluster, leader).counters.get("check_quorum_step_down", 0) >= 1, TIMEOUT_S
        )
        # Several election timeouts pass on the minority side (counted in its own ticks), and neither of
        # the two is ever elected.
        ticks = live(cluster, leader).executor.ticks
        timeout_ticks = raft_core(cluster, leader).config.election_timeout_ticks
        while live(cluster, leader).executor.ticks < ticks + 6 * timeout_ticks:
            assert not live(cluster, leader).is_leader and not live(cluster, "n4").is_leader
            await asyncio.sleep(cluster.config.tick_interval_s)
        assert learner.role is Role.LEARNER

        cluster.heal()
        await converged(cluster)
        assert live(cluster, "n4").state_machine.read("k") == "majority"  # "minority" never committed
        assert cluster.leader() == majority_leader


async def test_shrink_five_to_three_removing_the_leader_itself() -> None:
    async with EmbeddedCluster(raft_factory(), 5, seed=13) as cluster:
        leader = await cluster.wait_for_leader(TIMEOUT_S)
        endpoint = await cluster.client_endpoint("appenders")
        clients = [KvClient(endpoint, f"c{i}", config=CLIENT) for i in range(2)]
        stop = asyncio.Event()
        acked: list[str] = []
        workers = [asyncio.ensure_future(appender(c, "log", stop, acked)) for c in clients]
        await cluster.wait_for(lambda: len(acked) >= 20, TIMEOUT_S)

        old = live(cluster, leader)
        old_core = old.core
        assert isinstance(old_core, RaftNode)
        await cluster.remove_node(leader)
        # Resolved once the removal committed, by which time the leader had stepped down for it.
        assert old_core.counters.get("removed_leader_step_down") == 1 and old_core.role is not Role.LEADER
        assert not old.running and leader not in cluster.node_ids
        second = await cluster.wait_for_leader(TIMEOUT_S)
        assert second != leader

        follower = next(n for n in cluster.node_ids if n != second)
        await cluster.remove_node(follower)
        shrunk = len(acked)
        await cluster.wait_for(lambda: len(acked) >= shrunk + 20, TIMEOUT_S)
        stop.set()
        await asyncio.gather(*workers)
        await converged(cluster)

        remaining = tuple(sorted(cluster.node_ids))
        assert len(remaining) == 3 and {leader, follower}.isdisjoint(remaining)
        assert all(s.voters == remaining and s.running for s in cluster.statuses())
        value = live(cluster, remaining[0]).state_machine.read("log") or ""
        for token in acked:
            assert value.count(token) == 1, token
        # Removed ids are gone for good.
        with pytest.raises(LocalError):
            await cluster.restart(leader)
        with pytest.raises(LocalError):
            await cluster.add_node(follower)
        # The three left keep a quorum of two: one more failure is survivable.
        cluster.kill(second)
        survivors = [n for n in remaining if n != second]
        await cluster.wait_for_leader(TIMEOUT_S, among=survivors)
        assert (await clients[0].put("k", "two of three")).ok


async def test_a_removed_node_is_rejected_and_counted() -> None:
    async with EmbeddedCluster(raft_factory(), 4, seed=14) as cluster:
        leader = await cluster.wait_for_leader(TIMEOUT_S)
        client = await kv_client(cluster, "c")
        assert (await client.put("k", "before")).ok
        victim = next(n for n in cluster.node_ids if n != leader)
        remaining = [n for n in cluster.node_ids if n != victim]
        assert all(victim in live(cluster, n).accepted_senders for n in remaining)

        # Cut off, the victim never learns of its removal, so it keeps campaigning as a voter.
        cluster.isolate(victim)
        await live(cluster, leader).remove_member(victim, timeout_s=TIMEOUT_S)
        await cluster.wait_for(
            lambda: all(victim not in live(cluster, n).accepted_senders for n in remaining), TIMEOUT_S
        )
        assert victim in live(cluster, victim).voters
        term = raft_core(cluster, leader).term
        before = unknown_senders(cluster, remaining)
        cluster.heal()
        await cluster.wait_for(lambda: unknown_senders(cluster, remaining) >= before + 3, TIMEOUT_S)

        # Even a message that would depose the leader if it reached the core (a transfer-style vote
        # request, which bypasses leader stickiness, at a higher term) is dropped before the core.
        # The removed node still holds the cluster key, so its message passes authentication; it is its
        # membership that fails. (Stopped first, so that only this message can count.)
        cluster.kill(victim)
        forged = EnvelopeFactory(victim, 99).wrap(leader, VoteRequest(term + 5, 10**6, term, transfer=True))
        rejected = live(cluster, leader).rejected
        counted = rejected.get("unknown_sender", 0)
        assert cluster.network.inject(leader, encode_envelope(forged, key=cluster.auth_key))
        await cluster.wait_for(lambda: rejected.get("unknown_sender", 0) == counted + 1, TIMEOUT_S)
        # Without the key, the same bytes are not even read.
        assert cluster.network.inject(leader, encode_envelope(forged))
        await cluster.wait_for(lambda: rejected.get("unauthenticated", 0) == 1, TIMEOUT_S)
        # It disrupted nothing: same leader, same term, and the cluster keeps committing without it.
        assert cluster.leader(among=remaining) == leader and raft_core(cluster, leader).term == term
        assert (await client.put("k", "after")).ok
        await converged(cluster, tuple(remaining))


async def test_refused_membership_changes_are_clear_errors() -> None:
    async with EmbeddedCluster(raft_factory(), 3, seed=15) as cluster:
        leader = await cluster.wait_for_leader(TIMEOUT_S)
        follower = next(n for n in cluster.node_ids if n != leader)
        on_follower = live(cluster, follower)
        for change in (
            on_follower.add_member("n9", timeout_s=1.0),
            on_follower.remove_member(leader, timeout_s=1.0),
            on_follower.promote(follower, timeout_s=1.0),
        ):
            with pytest.raises(NotLeaderError) as refused:
                await change
            assert refused.value.leader_hint == leader

        on_leader = live(cluster, leader)
        with pytest.raises(MembershipChangeRejectedError, match="already a member"):
            await on_leader.add_member(follower, timeout_s=1.0)
        with pytest.raises(MembershipChangeRejectedError, match="not a learner"):
            await on_leader.promote(follower, timeout_s=1.0)
        # One change at a time: a second one asked while the first is in flight is refused at once.
        first = asyncio.ensure_future(on_leader.add_member("n9", as_learner=True, timeout_s=TIMEOUT_S))
        await asyncio.sleep(0)
        with pytest.raises(MembershipChangeRejectedError, match="already in progress"):
            await on_leader.add_member("n8", as_learner=True, timeout_s=1.0)
        index = await first
        assert index > 0 and on_leader.learners == ("n9",)
        with pytest.raises(LocalError):
            await cluster.remove_node("n9")  # not added through the cluster: not one of its nodes
        assert (await on_leader.remove_member("n9", timeout_s=TIMEOUT_S)) > index
        assert on_leader.learners == ()


async def test_a_node_joining_after_compaction_catches_up_by_snapshot() -> None:
    config = RuntimeConfig(executor=ExecutorConfig(snapshot_every_entries=50))
    async with EmbeddedCluster(raft_factory(), 3, config=config, seed=16) as cluster:
        await cluster.wait_for_leader(TIMEOUT_S)
        client = await kv_client(cluster, "c")
        for i in range(200):
            assert (await client.put(f"k{i % 7}", str(i))).ok
        await cluster.add_node("n4")  # the leader's log no longer starts at 1
        assert (await client.put("k", "joined")).ok
        await converged(cluster)
        assert live(cluster, "n4").voters == ("n1", "n2", "n3", "n4")
        assert live(cluster, "n4").state_machine.read("k6") == "195"
        disk = cluster.storages["n4"]
        assert isinstance(disk, MemoryStorage)
        installed = disk.stored_state().durable.snapshot
        assert installed is not None and installed.index >= 150  # by InstallSnapshot, from an empty log


def test_a_joining_raft_core_starts_outside_the_bootstrap_configuration() -> None:
    factory = raft_factory()
    founder = factory("n1", ("n2", "n3"), random.Random(0), DurableState())
    joiner = factory.joining()("n4", ("n1", "n2", "n3"), random.Random(0), DurableState())
    assert founder.voters == ("n1", "n2", "n3") and founder.is_promotable()
    assert joiner.voters == ("n1", "n2", "n3") and not joiner.is_promotable()


async def test_cores_without_membership_keep_their_static_members() -> None:
    network = MemoryNetwork(("n1", "n2"))
    runtime = NodeRuntime("n1", ("n1", "n2"), mini_core, network.endpoint("n1"), MemoryStorage())
    await runtime.start()
    try:
        assert runtime.voters == ("n1", "n2") and runtime.learners == ()
        assert runtime.accepted_senders == frozenset({"n2"})
        with pytest.raises(MembershipChangeRejectedError, match="no membership changes"):
            await runtime.add_member("n3", timeout_s=1.0)
        runtime.introduce("n3")
        assert runtime.accepted_senders == frozenset({"n2", "n3"})
    finally:
        await runtime.stop()


async def test_a_cluster_whose_factory_cannot_join_cannot_grow() -> None:
    cluster = EmbeddedCluster(RaftNode.factory(), 3)
    with pytest.raises(ConfigError):
        await cluster.add_node("n4")
    assert cluster.node_ids == ("n1", "n2", "n3")


async def test_memory_network_takes_a_new_node_while_running() -> None:
    network = MemoryNetwork(("a", "b"))
    network.add_node("c")
    assert network.nodes == ("a", "b", "c")
    assert network.deliver("a", "c", b"x") and network.deliver("c", "b", b"y")
    assert (await network.endpoint("c").receive(10))[0].data == b"x"
    with pytest.raises(LocalError):
        network.add_node("c")
    network.partition([["a", "b"]])
    network.add_node("d")  # joins a partitioned network alone
    assert not network.can_reach("d", "a") and not network.can_reach("d", "c")
    network.heal()
    assert network.can_reach("d", "a")
