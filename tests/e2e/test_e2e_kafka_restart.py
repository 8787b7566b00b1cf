"""The Kafka broker restarts under a running cluster (a broker of this module's own, `kafka_broker`):
while it is down nothing is delivered, the nodes keep running (sends fail and are counted, nothing
crashes), and once it is back the cluster serves again; no acknowledged write is lost and the history is
linearizable."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jepsen import Workload, check_outcome, e2e_cluster

pytestmark = [pytest.mark.timeout(300)]


async def test_the_cluster_rides_out_a_broker_restart(
    namespace: str, kafka_broker: Any, redis_server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    async with e2e_cluster(
        ("n1", "n2", "n3"),
        namespace=namespace,
        kafka_bootstrap=kafka_broker.bootstrap,
        redis_server_factory=redis_server_factory,
        log_dir=tmp_path,
    ) as (cluster, _):
        workload = Workload(cluster, seed=3)
        await cluster.wait_ready()
        await workload.start()
        try:
            await workload.wait_ok(20)
            workload.nemesis("stop the Kafka broker")
            await asyncio.to_thread(kafka_broker.stop)  # the clients keep trying meanwhile
            assert all(node.alive for node in cluster.nodes.values())
            await asyncio.to_thread(kafka_broker.start)
            workload.nemesis("start the Kafka broker")
            await cluster.wait_ready(timeout_s=120)
            await workload.wait_ok(20, writes_only=True, timeout_s=120)
            await workload.wait_checked()
        finally:
            await workload.stop()
        assert not cluster.failures(), "a node exited during the broker outage"
        await check_outcome(cluster, workload)
