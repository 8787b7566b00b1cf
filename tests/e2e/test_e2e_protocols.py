"""Multi-Paxos and PBFT on the real stack: `dscore-node` processes (one replica each, Kafka transport,
Redis storage, the same executor as Raft's), a `dscore-gateway` in front, clients writing through its HTTP
API while the leader (Paxos) or the primary (PBFT) is killed -9 and later restarted from its Redis.

Afterwards (`jepsen.check_outcome`): no acknowledged write lost, every replica converged (same applied
index, same state-machine digest, the restarted one included: it rebuilt its state from Redis and caught
up), and the history linearizable. PBFT's gateway took every answer from f + 1 = 2 matching replicas
(tests/gateway/test_gateway_pbft.py shows a single Byzantine replica cannot fool it). Each test also checks
what `/v1/cluster` and the nodes' metrics say of the protocol (leader or primary; ballot or view as the
term gauge).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jepsen import GATEWAY, Workload, check_outcome, e2e_cluster

from dscore.stack import ProcessCluster

pytestmark = [pytest.mark.timeout(180)]


async def kill_the_leader_while_clients_write(cluster: ProcessCluster, workload: Workload) -> None:
    """kill -9 the node that orders commands, wait for its successor to commit writes, restart it."""
    await workload.wait_ok(10, writes_only=True)
    leader = await cluster.leader()
    workload.nemesis(f"kill -9 {cluster.protocol.leader_role} {leader}")
    cluster.kill(leader)
    assert await cluster.wait_exit(leader) == -9
    successor = await cluster.leader(other_than=leader)
    assert successor != leader
    await workload.wait_ok(5, not_node=leader, writes_only=True)  # committed under the successor
    await cluster.restart(leader)
    workload.nemesis(f"restart {leader}")
    await cluster.wait_ready()
    await workload.wait_ok(10, writes_only=True)


async def check_views(cluster: ProcessCluster, term_name: str) -> None:
    """`/v1/cluster` and `/metrics` name the protocol's leader role and epoch (ballot, view) as the term."""
    answer = await cluster.get_json(GATEWAY, "/v1/cluster")
    assert answer is not None and answer[0] == 200, answer
    view: dict[str, Any] = answer[1]
    role = cluster.protocol.leader_role
    assert (view["protocol"], view["leader_role"], view["term_name"]) == (
        cluster.protocol.name,
        role,
        term_name,
    )
    current = await cluster.leader()
    assert view["leader"] == current
    state = (await cluster.states())[current]
    assert state["role"] == role and state["term"] >= 1  # a new ballot / view after the kill
    samples = await cluster.metrics(current)
    labels = f'node="{current}",protocol="{cluster.protocol.name}"'
    assert samples[f'dscore_node_role{{{labels},role="{role}"}}'] == 1.0
    assert samples[f"dscore_node_term{{{labels}}}"] >= 1


@pytest.mark.parametrize(
    ("protocol", "nodes", "term_name", "reply_quorum", "seed"),
    [
        pytest.param("paxos", ("n1", "n2", "n3"), "ballot", 1, 11, id="three-paxos-nodes-leader-killed"),
        pytest.param("pbft", ("n1", "n2", "n3", "n4"), "view", 2, 12, id="four-pbft-replicas-primary-killed"),
    ],
)
async def test_the_protocol_survives_a_killed_leader(
    namespace: str,
    kafka_bootstrap: str,
    redis_server_factory: Any,
    tmp_path: Path,
    protocol: str,
    nodes: tuple[str, ...],
    term_name: str,
    reply_quorum: int,
    seed: int,
) -> None:
    async with e2e_cluster(
        nodes,
        namespace=namespace,
        kafka_bootstrap=kafka_bootstrap,
        redis_server_factory=redis_server_factory,
        log_dir=tmp_path,
        protocol=protocol,
    ) as (cluster, _redis):
        workload = Workload(cluster, seed=seed)
        await workload.start()
        try:
            await kill_the_leader_while_clients_write(cluster, workload)
            await workload.wait_checked()
        finally:
            await workload.stop()
        await check_outcome(cluster, workload)
        await check_views(cluster, term_name)
        answer = await cluster.get_json(GATEWAY, "/v1/cluster")
        # PBFT's clients wait for f + 1 matching replies; the others take the leader's
        assert answer is not None and answer[1]["reply_quorum"] == reply_quorum
        # The gateway gathers the next envelope for the clients of an answered one only where it keeps one
        # envelope in flight per node (not with PBFT, whose retries go to every replica)
        samples = await cluster.metrics(GATEWAY)
        gathers = sum(v for k, v in samples.items() if k.startswith("dscore_gateway_gathers_total"))
        assert (gathers > 0) is (protocol != "pbft"), samples
