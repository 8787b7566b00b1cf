"""Jepsen on real processes: clients write while a nemesis kills -9 the leader and a follower, pauses a
node (SIGSTOP), cuts one off (it stops reading its inbox), kills Redis under a node, stops the leader
with SIGTERM and kills every node at once; afterwards no acknowledged write is lost, every node converged and the history is
linearizable (see jepsen.py). Each step waits for the event that ends it (a new leader, successful
operations, readiness), never for a fixed time.

The short versions run in `make test`; the `slow` ones repeat the faults for longer (`make test-slow`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jepsen import Workload, check_outcome, e2e_cluster

from dscore.stack import ProcessCluster

pytestmark = [pytest.mark.timeout(300)]


async def kill_leader(cluster: ProcessCluster, workload: Workload) -> None:
    leader = await cluster.leader()
    workload.nemesis(f"kill -9 leader {leader}")
    cluster.kill(leader)
    assert await cluster.wait_exit(leader) == -9
    await cluster.leader(other_than=leader)
    await workload.wait_ok(3, not_node=leader, writes_only=True)  # a write committed by the new leader
    await cluster.restart(leader)
    workload.nemesis(f"restart {leader}")
    await cluster.wait_ready()


async def kill_follower(cluster: ProcessCluster, workload: Workload, rng: random.Random) -> None:
    leader = await cluster.leader()
    victim = rng.choice([n for n in cluster.node_ids if n != leader])
    workload.nemesis(f"kill -9 follower {victim}")
    cluster.kill(victim)
    await cluster.wait_exit(victim)
    await workload.wait_ok(5, writes_only=True)
    await cluster.restart(victim)
    workload.nemesis(f"restart {victim}")
    await cluster.wait_ready()


async def pause_leader(cluster: ProcessCluster, workload: Workload) -> None:
    leader = await cluster.leader()
    workload.nemesis(f"SIGSTOP leader {leader}")
    cluster.pause(leader)
    await cluster.leader(other_than=leader)
    await workload.wait_ok(3, not_node=leader, writes_only=True)
    cluster.resume(leader)
    workload.nemesis(f"SIGCONT {leader}")
    await cluster.wait_ready()


async def cut_off_leader(cluster: ProcessCluster, workload: Workload) -> None:
    """The leader stops reading its inbox: it hears no acknowledgement, steps down (check-quorum), and the
    others elect a leader among themselves."""
    leader = await cluster.leader()
    workload.nemesis(f"cut off {leader} (stops consuming)")
    await cluster.cut_off(leader)
    await cluster.leader(other_than=leader)
    await workload.wait_ok(3, not_node=leader, writes_only=True)
    await cluster.reconnect(leader)
    workload.nemesis(f"reconnect {leader}")
    await cluster.wait_ready()


async def kill_redis_under_follower(
    cluster: ProcessCluster, workload: Workload, redis: dict[str, Any], rng: random.Random
) -> None:
    """Redis dies under a node: its next save fails, the node exits 1 with the error logged, and its
    supervisor restarts it (failing again while Redis is down) until Redis is back."""
    leader = await cluster.leader()
    victim = rng.choice([n for n in cluster.node_ids if n != leader])
    workload.nemesis(f"kill -9 redis of {victim}")
    redis[victim].kill()
    returncode = await cluster.wait_exit(victim)
    assert returncode == 1, list(cluster.nodes[victim].lines)[-5:]
    assert any("StorageUnavailableError" in line for line in cluster.nodes[victim].lines)
    await workload.wait_ok(5, writes_only=True)  # the other two still commit
    redis[victim].restart()
    workload.nemesis(f"restart redis of {victim}")
    await cluster.wait_ready()  # the supervisor restarted the node once its Redis answered


async def kill_all(cluster: ProcessCluster, workload: Workload) -> None:
    """A power cut: every node killed -9 at once, then restarted. Only what Redis held survives, so an
    acknowledged write that was not durable on a majority would be lost here."""
    workload.nemesis("kill -9 every node")
    for node_id in cluster.node_ids:
        cluster.kill(node_id)
    for node_id in cluster.node_ids:
        await cluster.wait_exit(node_id)
    for node_id in cluster.node_ids:
        await cluster.start_node(node_id, wait=False)
    workload.nemesis("restart every node")
    for node_id in cluster.node_ids:
        await cluster.wait_listening(node_id)
    await cluster.wait_ready()
    await workload.wait_ok(5, writes_only=True)


async def sigterm_leader(cluster: ProcessCluster, workload: Workload) -> None:
    """A clean stop: the leader hands over first, so a new one is there at once; exit status 0."""
    leader = await cluster.leader()
    workload.nemesis(f"SIGTERM leader {leader}")
    assert await cluster.terminate(leader) == 0
    assert any("stopped" in line for line in cluster.nodes[leader].lines)
    await cluster.leader(other_than=leader)
    await workload.wait_ok(3, not_node=leader, writes_only=True)
    await cluster.restart(leader)
    await cluster.wait_ready()


async def run_nemesis(
    cluster: ProcessCluster, redis: dict[str, Any], rounds: int, seed: int, steps: list[str]
) -> None:
    rng = random.Random(seed)
    workload = Workload(cluster, seed=seed)
    await cluster.wait_ready()
    await workload.start()
    try:
        await workload.wait_ok(20)
        actions: dict[str, Callable[[], Any]] = {
            "kill_leader": lambda: kill_leader(cluster, workload),
            "kill_follower": lambda: kill_follower(cluster, workload, rng),
            "pause_leader": lambda: pause_leader(cluster, workload),
            "cut_off_leader": lambda: cut_off_leader(cluster, workload),
            "kill_redis": lambda: kill_redis_under_follower(cluster, workload, redis, rng),
            "sigterm_leader": lambda: sigterm_leader(cluster, workload),
            "kill_all": lambda: kill_all(cluster, workload),
        }
        for round_ in range(rounds):
            order = steps if round_ == 0 else rng.sample(steps, len(steps))
            for step in order:
                await actions[step]()
                await workload.wait_ok(5)
        await workload.wait_checked()
    finally:
        await workload.stop()
    await check_outcome(cluster, workload)


ALL_STEPS = [
    "kill_leader",
    "kill_follower",
    "pause_leader",
    "cut_off_leader",
    "kill_redis",
    "sigterm_leader",
    "kill_all",
]


async def test_three_nodes_survive_the_nemesis(
    namespace: str, kafka_bootstrap: str, redis_server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    async with e2e_cluster(
        ("n1", "n2", "n3"),
        namespace=namespace,
        kafka_bootstrap=kafka_bootstrap,
        redis_server_factory=redis_server_factory,
        log_dir=tmp_path,
    ) as (cluster, redis):
        await run_nemesis(cluster, redis, rounds=1, seed=1, steps=ALL_STEPS)
        # Where a node that will not stop waits: its asyncio tasks and threads, logged on request, and
        # the node goes on serving.
        node_id = await cluster.leader()
        cluster.dump_stacks(node_id)
        lines = cluster._process(node_id).lines

        async def dumped() -> bool:
            text = "\n".join(lines)
            return "asyncio tasks" in text and f"dscore-node-{node_id}" in text and "Thread 0x" in text

        await cluster.wait_for(dumped, 30.0, f"{node_id} logs its stacks")
        await cluster.wait_ready()


async def test_five_nodes_survive_two_faults_at_once(
    namespace: str, kafka_bootstrap: str, redis_server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """Five nodes lose the leader and a follower at once (two of five: a quorum of three remains), then a
    third node pauses while the two are restarting."""
    nodes = ("n1", "n2", "n3", "n4", "n5")
    async with e2e_cluster(
        nodes,
        namespace=namespace,
        kafka_bootstrap=kafka_bootstrap,
        redis_server_factory=redis_server_factory,
        log_dir=tmp_path,
    ) as (cluster, _):
        workload = Workload(cluster, seed=5)
        await cluster.wait_ready()
        await workload.start()
        try:
            await workload.wait_ok(20)
            leader = await cluster.leader()
            follower = next(n for n in nodes if n != leader)
            workload.nemesis(f"kill -9 leader {leader} and follower {follower}")
            cluster.kill(leader)
            cluster.kill(follower)
            new_leader = await cluster.leader(other_than=leader)
            await workload.wait_ok(5, not_node=leader, writes_only=True)
            paused = next(n for n in nodes if n not in (leader, follower, new_leader))
            workload.nemesis(f"SIGSTOP {paused}; restart {leader}, {follower}")
            cluster.pause(paused)
            await cluster.restart(leader)
            await cluster.restart(follower)
            await workload.wait_ok(5, writes_only=True)
            cluster.resume(paused)
            workload.nemesis(f"SIGCONT {paused}")
            await cluster.wait_ready()
            await workload.wait_ok(10)
            await workload.wait_checked()  # the faults can pass before the history proves anything
        finally:
            await workload.stop()
        await check_outcome(cluster, workload)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("seed", [11, 12])
async def test_three_nodes_survive_a_long_nemesis(
    namespace: str,
    kafka_bootstrap: str,
    redis_server_factory: Callable[..., Any],
    tmp_path: Path,
    seed: int,
) -> None:
    async with e2e_cluster(
        ("n1", "n2", "n3"),
        namespace=namespace,
        kafka_bootstrap=kafka_bootstrap,
        redis_server_factory=redis_server_factory,
        log_dir=tmp_path,
    ) as (cluster, redis):
        await run_nemesis(cluster, redis, rounds=4, seed=seed, steps=ALL_STEPS)


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_five_nodes_survive_a_long_nemesis(
    namespace: str, kafka_bootstrap: str, redis_server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    async with e2e_cluster(
        ("n1", "n2", "n3", "n4", "n5"),
        namespace=namespace,
        kafka_bootstrap=kafka_bootstrap,
        redis_server_factory=redis_server_factory,
        log_dir=tmp_path,
    ) as (cluster, redis):
        await run_nemesis(cluster, redis, rounds=3, seed=21, steps=ALL_STEPS)
