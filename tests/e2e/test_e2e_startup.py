"""A node process refuses what it cannot run safely, with a clear error, and a node whose Redis state was
wiped must not come back as if nothing happened."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from jepsen import Workload, e2e_cluster

from dscore.stack import node_executable

pytestmark = [pytest.mark.timeout(300)]


async def run_node(env: dict[str, str], timeout_s: float = 60.0) -> tuple[int, str]:
    """Run one `dscore-node` to its exit; (status, its log)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DSCORE_")}
    process = await asyncio.create_subprocess_exec(
        node_executable(),
        env={**base, **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout_s):
        _, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_a_bad_or_missing_setting_stops_the_node_at_start_naming_it() -> None:
    status, log = await run_node({"DSCORE_NODE_ID": "n1", "DSCORE_RAFT__ELECTION_TIMEOUT_TICKS": "one"})
    assert status == 2 and "DSCORE_RAFT__ELECTION_TIMEOUT_TICKS" in log and "'one'" in log
    assert log.count("\n") == 1, "one event, one line"
    status, log = await run_node({"DSCORE_NODE_ID": "n1"})
    assert status == 2
    for named in ("DSCORE_KAFKA__BOOTSTRAP_SERVERS", "DSCORE_REDIS__URL", "DSCORE_AUTH_KEY"):
        assert named in log
    key = secrets.token_urlsafe(48)
    status, log = await run_node(
        {"DSCORE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1", "DSCORE_REDIS__URL": "redis://127.0.0.1:1/0"}
    )
    assert status == 2 and "DSCORE_AUTH_KEY: required" in log
    status, log = await run_node(
        {"DSCORE_AUTH_KEY": key[:10], "DSCORE_REDIS__URL": "redis://:pw-xyz@127.0.0.1:1/0"}
    )
    assert status == 2 and "DSCORE_AUTH_KEY" in log
    assert key[:10] not in log and "pw-xyz" not in log


async def test_a_redis_without_fsync_on_every_write_is_refused_unless_allowed(
    namespace: str, kafka_bootstrap: str, redis_server_factory: Callable[..., Any]
) -> None:
    server = redis_server_factory("--appendfsync", "everysec", name=f"{namespace[:20]}-everysec")
    env = {
        "DSCORE_NODE_ID": "n1",
        "DSCORE_CLUSTER_ID": namespace,
        "DSCORE_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DSCORE_REDIS__URL": server.url,
        "DSCORE_AUTH_KEY": secrets.token_urlsafe(48),
        "DSCORE_HTTP__PORT": "0",
    }
    try:
        status, log = await run_node(env)
        assert status == 1
        assert "UnsafeDurabilityError" in log and "appendfsync everysec" in log
    finally:
        server.stop()


async def test_a_node_whose_redis_was_wiped_refuses_to_run_and_never_votes(
    namespace: str, kafka_bootstrap: str, redis_server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """A follower loses its Redis state (FLUSHALL while it is down) and restarts with an empty log, no
    vote and incarnation 1, while the leader is down too: the one node left with its state campaigns
    and asks it for votes. The wiped node would grant them (it remembers no vote and no log); a vote of
    its new life counting would elect that node with a quorum of one real member and a forgetful one.

    Safe outcome, required: the wiped node's messages are refused by its peer (counted as
    `stale_storage`), so the campaigning node wins no election; the wiped node is told and exits with
    status 3 naming `StorageWentBackError`, and is not restarted by the supervisor (a restart cannot
    help). Once the old leader is back, the two nodes with their state serve writes again."""
    async with e2e_cluster(
        ("n1", "n2", "n3"),
        namespace=namespace,
        kafka_bootstrap=kafka_bootstrap,
        redis_server_factory=redis_server_factory,
        log_dir=tmp_path,
    ) as (cluster, redis):
        workload = Workload(cluster, seed=8)
        await cluster.wait_ready()
        await workload.start()
        try:
            await workload.wait_ok(20)
            leader = await cluster.leader()
            victim, witness = (n for n in cluster.node_ids if n != leader)
            cluster.kill(victim)
            await cluster.restart(victim)  # a second incarnation, so the wiped one is visibly behind
            await cluster.wait_ready()
            await workload.wait_ok(10, writes_only=True)
        finally:
            await workload.stop()
        await cluster.wait_converged()
        leader = await cluster.leader()
        victim, witness = (n for n in cluster.node_ids if n != leader)
        cluster.kill(victim)
        await cluster.wait_exit(victim)
        client = aioredis.Redis.from_url(redis[victim].url)
        await client.flushall()
        await client.aclose()
        cluster.kill(leader)
        await cluster.wait_exit(leader)
        before = await cluster.metrics(witness)
        won = f'dscore_elections_won_total{{node="{witness}",protocol="raft"}}'
        stale = f'dscore_messages_rejected_total{{node="{witness}",protocol="raft",reason="stale_storage"}}'
        assert before[stale] == 0.0
        exits_before = len(cluster.exits)
        await cluster.start_node(victim, wait=False)

        async def victim_exited() -> bool:
            return any(e.node_id == victim for e in cluster.exits[exits_before:])

        await cluster.wait_for(victim_exited, 60.0, f"{victim} (wiped) exits")
        refusal = next(e for e in cluster.exits[exits_before:] if e.node_id == victim)
        assert refusal.returncode == 3, refusal
        errors = [line for line in refusal.last_lines if '"level": "error"' in line]
        assert any("StorageWentBackError" in line and "refuses to run" in line for line in errors), errors
        assert not any("so that it is restarted" in line for line in errors), errors  # restarting cannot help
        after = await cluster.metrics(witness)
        assert after[stale] > 0, "the witness never refused the wiped node's messages"
        assert after[won] == before[won], "an election was won with the wiped node's vote"
        state = (await cluster.states([witness]))[witness]
        assert state["role"] != "leader", state
        # the supervisor leaves a refusal alone; the two nodes with their state elect and serve again
        await cluster.restart(leader)
        await cluster.wait_ready([leader, witness])
        workload = Workload(cluster, seed=9)
        await workload.start()
        try:
            await workload.wait_ok(10, writes_only=True)
        finally:
            await workload.stop()
        assert not cluster.nodes[victim].alive
        assert [e.node_id for e in cluster.exits[exits_before:] if not e.expected] == [victim]


async def test_a_node_whose_redis_is_wiped_while_it_runs_stops_at_its_next_save(
    namespace: str, kafka_bootstrap: str, redis_server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """A follower's Redis loses everything (FLUSHALL) while the follower runs. Its next save (the next
    appends it is sent) finds no stored incarnation and is refused, rather than quietly writing a partial
    state that fences nothing: the node exits with status 3 naming `StorageWipedError`, is not
    restarted, and the other two serve on."""
    async with e2e_cluster(
        ("n1", "n2", "n3"),
        namespace=namespace,
        kafka_bootstrap=kafka_bootstrap,
        redis_server_factory=redis_server_factory,
        log_dir=tmp_path,
    ) as (cluster, redis):
        workload = Workload(cluster, seed=11)
        await cluster.wait_ready()
        await workload.start()
        try:
            await workload.wait_ok(20)
            leader = await cluster.leader()
            victim = next(n for n in cluster.node_ids if n != leader)
            exits_before = len(cluster.exits)
            client = aioredis.Redis.from_url(redis[victim].url)
            await client.flushall()
            await client.aclose()

            async def victim_exited() -> bool:
                return any(e.node_id == victim for e in cluster.exits[exits_before:])

            await cluster.wait_for(victim_exited, 60.0, f"{victim} (wiped while running) exits")
            stopped = next(e for e in cluster.exits[exits_before:] if e.node_id == victim)
            assert stopped.returncode == 3, stopped
            errors = [line for line in stopped.last_lines if '"level": "error"' in line]
            assert any("StorageWipedError" in line and "refuses to run" in line for line in errors), errors
            assert not any("so that it is restarted" in line for line in errors), (
                errors
            )  # restarting cannot help
            await workload.wait_ok(10, writes_only=True)  # the leader and the other follower go on
        finally:
            await workload.stop()
        assert not cluster.nodes[victim].alive
