"""The runtime on the Kafka transport: 3-node Raft, a client speaking the wire protocol through its own
inbox topic, commits, a kill -9 and a restart.

The storage is the in-memory one here (the node service runs on Redis); what this shows is that the
runtime's input positions and the transport's channels fit: a node killed mid-stream restarts from what its
storage kept, reads its inbox from right after the stored position, and converges.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kafka_helpers import CLIENTS, TICK_S

from dscore.runtime.client import ClientConfig, ClientEndpoint, KvClient
from dscore.runtime.cluster import raft_factory
from dscore.runtime.node import NodeRuntime
from dscore.storage.memory import MemoryStorage
from dscore.transport.kafka import open_kafka_transport
from dscore.transport.kafka_config import KafkaClient, KafkaTransportConfig, StartWithoutPosition
from dscore.transport.kafka_layout import delete_topics, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MEMBERS = ("n1", "n2", "n3")
OP_TIMEOUT_S = 5.0


@pytest.fixture(params=CLIENTS, ids=lambda c: c.value)
async def config(
    kafka_bootstrap: str, namespace: str, request: pytest.FixtureRequest
) -> AsyncIterator[KafkaTransportConfig]:
    client: KafkaClient = request.param
    config = KafkaTransportConfig(bootstrap_servers=kafka_bootstrap, cluster_id=namespace, client=client)
    await ensure_topics(config, MEMBERS)
    yield config
    await delete_topics(config, MEMBERS)


def node(
    config: KafkaTransportConfig, node_id: str, storage: MemoryStorage, opened: list[Any]
) -> NodeRuntime:
    transport = open_kafka_transport(config, node_id)
    opened.append(transport)
    return NodeRuntime(node_id, MEMBERS, raft_factory(), transport, storage)


async def until(predicate: object, limit_s: float = 30.0) -> None:
    """Check a condition once per tick (the nodes run on real timers), failing after `limit_s`."""
    assert callable(predicate)
    async with asyncio.timeout(limit_s):
        while not predicate():
            await asyncio.sleep(TICK_S)


async def client(config: KafkaTransportConfig, opened: list[Any]) -> KvClient:
    """A client endpoint with its own inbox topic (its replies), read from its end."""
    client_config = dataclasses.replace(config, start_without_position=StartWithoutPosition.LATEST)
    transport = open_kafka_transport(client_config, "client-1")
    opened.append(transport)
    endpoint = ClientEndpoint(transport, lambda: MEMBERS)
    await endpoint.start()
    return KvClient(endpoint, "c1", config=ClientConfig(op_timeout_s=30.0, attempt_timeout_s=OP_TIMEOUT_S))


async def test_raft_commits_and_a_killed_node_resumes_from_its_stored_positions(
    config: KafkaTransportConfig,
) -> None:
    storages = {n: MemoryStorage() for n in MEMBERS}
    transports: list[Any] = []
    runtimes = {n: node(config, n, storages[n], transports) for n in MEMBERS}
    try:
        for runtime in runtimes.values():
            await runtime.start()
        await until(lambda: any(r.is_leader for r in runtimes.values()))
        writer = await client(config, transports)
        for i in range(20):
            assert (await writer.put(f"k{i}", f"v{i}")).ok
        await until(lambda: all(r.state_machine.read("k19") == "v19" for r in runtimes.values()))

        victim = next(n for n, r in runtimes.items() if not r.is_leader)
        runtimes[victim].crash()  # kill -9: nothing flushed
        await transports[MEMBERS.index(victim)].close()  # the dead process's connections go with it
        stored = dict((await storages[victim].load()).input_positions)
        assert list(stored) == [f"dscore.{config.cluster_id}.inbox.{victim}-0"]
        for i in range(20, 40):
            assert (await writer.put(f"k{i}", f"v{i}")).ok

        runtimes[victim] = node(config, victim, storages[victim], transports)
        await runtimes[victim].start()
        await until(lambda: all(r.state_machine.read("k39") == "v39" for r in runtimes.values()))
        after = dict((await storages[victim].load()).input_positions)
        assert after.keys() == stored.keys()
        assert all(after[c] > stored[c] for c in stored)
        for key in ("k0", "k25"):
            assert {r.state_machine.read(key) for r in runtimes.values()} == {f"v{key[1:]}"}
        assert (await writer.get("k39")).value == "v39"
        await writer.endpoint.close()
    finally:
        for runtime in runtimes.values():
            await runtime.stop()
        for transport in transports:
            await transport.close()
