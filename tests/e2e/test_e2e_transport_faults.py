"""The nodes obey transport faults commanded on the cluster's Kafka control topic (`dscore.<cluster>.
control`, what services/chaos publishes), and only authenticated ones.

On three node processes, a gateway and a real broker, with clients writing through the gateway:

1. a forged command (its HMAC under another key) to cut the leader off is refused by every node, counted
   as `unauthenticated`, and changes nothing: the leader keeps leading;
2. a partition `{leader} | {the others}` published with the cluster key isolates the leader: it drops
   everything to and from the others (both ways), loses its quorum and steps down, the others elect a
   new leader that serves writes, and the isolated node falls behind;
3. stopping the fault heals it: the old leader hears the others again, catches up, and every node
   converges; no acknowledged write is lost and the history is linearizable.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jepsen import Workload, check_outcome, e2e_cluster

from dscore.transport.faults import FaultAction, FaultCommand, FaultKind
from dscore.transport.faults_kafka import KafkaControlPublisher
from dscore.transport.kafka_config import KafkaTransportConfig

pytestmark = [pytest.mark.timeout(300)]


def _partition(fault_id: str, isolated: str, others: tuple[str, ...]) -> FaultCommand:
    now_ms = int(time.time() * 1000)
    return FaultCommand(
        fault_id,
        FaultAction.START,
        kind=FaultKind.PARTITION,
        groups=((isolated,), others),
        issued_at_ms=now_ms,
        expires_at_ms=now_ms + 120_000,  # ends by itself if the stop below were never sent
    )


async def test_a_partition_on_the_control_topic_isolates_the_leader_and_healing_restores_it(
    namespace: str, kafka_bootstrap: str, redis_server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    async with e2e_cluster(
        ("n1", "n2", "n3"),
        namespace=namespace,
        kafka_bootstrap=kafka_bootstrap,
        redis_server_factory=redis_server_factory,
        log_dir=tmp_path,
    ) as (cluster, _):
        config = KafkaTransportConfig(bootstrap_servers=kafka_bootstrap, cluster_id=namespace)
        key = cluster.auth_key.encode("utf-8")
        forger = KafkaControlPublisher(config, key=secrets.token_bytes(32))
        chaos = KafkaControlPublisher(config, key=key)
        await forger.start()
        await chaos.start()
        workload = Workload(cluster, seed=31)
        await cluster.wait_ready()
        await workload.start()
        try:
            await workload.wait_ok(20)
            leader = await cluster.leader()
            others = tuple(n for n in cluster.node_ids if n != leader)

            # 1. forged: refused and counted by every node, nothing changes
            await forger.publish(_partition("forged", leader, others))

            async def forged_refused() -> bool:
                for node_id in cluster.node_ids:
                    samples = await cluster.metrics(node_id)
                    name = (
                        f'dscore_transport_fault_control_rejected_total{{node="{node_id}",'
                        'reason="unauthenticated"}'
                    )
                    if samples.get(name, 0.0) < 1:
                        return False
                return True

            await cluster.wait_for(forged_refused, 30.0, "every node refused the forged command")
            states = await cluster.states()
            assert all(s["transport_faults"] == [] for s in states.values()), states
            assert await cluster.leader() == leader

            # 2. the partition, authenticated: the leader is isolated and loses its leadership
            workload.nemesis(f"partition {{{leader}}} | {{{','.join(others)}}} (control topic)")
            await chaos.publish(_partition("isolate-leader", leader, others))

            async def in_force() -> bool:
                states = await cluster.states()
                return len(states) == 3 and all(
                    s["transport_faults"] == ["isolate-leader"] for s in states.values()
                )

            await cluster.wait_for(in_force, 30.0, "the partition in force at every node")
            new_leader = await cluster.leader(other_than=leader)
            await workload.wait_ok(10, not_node=leader, writes_only=True)

            async def stepped_down() -> dict[str, Any] | None:
                state = (await cluster.states([leader])).get(leader)
                return state if state is not None and state["role"] != "leader" else None

            await cluster.wait_for(stepped_down, 30.0, f"{leader} steps down")
            states = await cluster.states()
            assert states[leader]["applied_index"] < states[new_leader]["applied_index"], states
            # The isolated node's own sends (heartbeats as leader, then pre-votes) are dropped at its end;
            # what the others send it is dropped at theirs (a partition holds at both ends), so its
            # receive-side count depends only on what was in flight when the command arrived.
            samples = await cluster.metrics(leader)
            dropped = f'dscore_transport_fault_frames_dropped_total{{node="{leader}",reason="send"}}'
            assert samples[dropped] > 0, "the isolated node sent everything it wanted to"

            # 3. heal: the fault stops, the old leader catches up
            await chaos.publish(FaultCommand("isolate-leader", FaultAction.STOP))
            workload.nemesis("heal the partition (control topic)")

            async def healed() -> bool:
                states = await cluster.states()
                return len(states) == 3 and all(s["transport_faults"] == [] for s in states.values())

            await cluster.wait_for(healed, 30.0, "the partition stopped at every node")
            await cluster.wait_ready()
            await workload.wait_ok(10, writes_only=True)
            await workload.wait_checked()
        finally:
            await workload.stop()
            await forger.close()
            await chaos.close()
        await check_outcome(cluster, workload)
