"""Transport faults over the real broker: the chaos service publishes commands on the cluster's control
topic, two nodes' `FaultyTransport`s (around real Kafka transports) obey them, a partition between them
takes effect both ways and ends at its expiry even without a stop; a stop ends a fault early; garbage and
forged records on the topic are counted and dropped; a node that starts later replays the topic."""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import random
from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry

from dscore.core.client_messages import ClientRequests
from dscore.core.codec import decode_envelope, encode_envelope
from dscore.core.envelope import EnvelopeFactory
from dscore.transport.base import OutboundFrame
from dscore.transport.faults import FaultAction, FaultCommand, FaultyTransport, encode_command
from dscore.transport.faults_kafka import KafkaControlPublisher, KafkaControlSource, control_topic
from dscore.transport.kafka import open_kafka_transport
from dscore.transport.kafka_config import KafkaTransportConfig
from dscore.transport.kafka_layout import delete_topics
from dscore.transport.memory import MemoryNetwork
from dscore_chaos.backends.transport import TransportBackend
from dscore_chaos.metrics import ServiceMetrics
from dscore_chaos.model import FaultRequest, FaultState
from dscore_chaos.service import ChaosService

KEY = b"i" * 32
T0 = 1_700_000_000.0
TIMEOUT_S = 60.0


class Clock:
    """Unix seconds moved by hand; `sleep_until` waits for a move (the service's scheduler)."""

    def __init__(self) -> None:
        self.t = T0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.t

    async def sleep_until(self, at: float) -> None:
        if at <= self.t:
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (at, id(future), future))
        await future

    def move_to(self, t: float) -> None:
        self.t = t
        while self._sleepers and self._sleepers[0][0] <= t:
            future = heapq.heappop(self._sleepers)[2]
            if not future.done():
                future.set_result(None)


def frame(source: str, destination: str, seq: int) -> OutboundFrame:
    envelope = EnvelopeFactory(source, 1).wrap(destination, ClientRequests(()))
    envelope = dataclasses.replace(envelope, msg_id=dataclasses.replace(envelope.msg_id, seq=seq))
    return OutboundFrame(destination, encode_envelope(envelope, key=KEY))


async def receive_one(transport: FaultyTransport | object) -> tuple[str, int]:
    async with asyncio.timeout(TIMEOUT_S):
        (delivery,) = await transport.receive(1)  # type: ignore[attr-defined]
    envelope = decode_envelope(delivery.data, key=KEY)
    return envelope.source, envelope.msg_id.seq


async def wait_until(transports: list[FaultyTransport], condition: Callable[[], bool], what: str) -> None:
    """Wait until the nodes applied what the topic brought: `condition` is checked after every change of
    their rules."""
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                versions = [t.rules.version for t in transports]
                if condition():
                    return
                changes = [
                    asyncio.ensure_future(t.wait_rules_changed(v))
                    for t, v in zip(transports, versions, strict=True)
                ]
                try:
                    await asyncio.wait(changes, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for change in changes:
                        change.cancel()
    except TimeoutError:
        raise AssertionError(f"not within {TIMEOUT_S} s: {what}") from None


@pytest.fixture
async def config(kafka_bootstrap: str, namespace: str) -> AsyncIterator[KafkaTransportConfig]:
    cfg = KafkaTransportConfig(bootstrap_servers=kafka_bootstrap, cluster_id=namespace)
    yield cfg
    await delete_topics(cfg, ["a", "b", "c"])
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([control_topic(namespace)])
    finally:
        await admin.close()


async def test_commands_from_the_chaos_service_reach_two_nodes_over_kafka(
    config: KafkaTransportConfig,
) -> None:
    node_clock = Clock()
    nodes = {
        n: FaultyTransport(
            open_kafka_transport(config, n),
            n,
            rng=random.Random(n),
            clock=node_clock.now,
            control=KafkaControlSource(config, n),
            auth_key=KEY,
        )
        for n in ("a", "b")
    }
    bystander = open_kafka_transport(config, "c")
    service_clock = Clock()
    publisher = KafkaControlPublisher(config, key=KEY)
    service = ChaosService(
        [TransportBackend(publisher, nodes=("a", "b"), rng=random.Random(0), clock=service_clock)],
        clock=service_clock,
        metrics=ServiceMetrics(CollectorRegistry(), active=lambda: 0),
    )
    a, b = nodes["a"], nodes["b"]
    try:
        await service.start()
        for transport in (a, b, bystander):
            await transport.start({})
        # Before any fault: a reaches b.
        await a.send([frame("a", "b", 1)])
        assert await receive_one(b) == ("a", 1)

        # Garbage and a forged command on the topic: counted and dropped by every node.
        producer = AIOKafkaProducer(bootstrap_servers=config.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(control_topic(config.cluster_id), b"\x02garbage", partition=0)
            forged = FaultCommand(
                "x", FaultAction.START, drop_probability=1.0, expires_at_ms=int((T0 + 60) * 1000)
            )
            await producer.send_and_wait(
                control_topic(config.cluster_id), encode_command(forged, key=b"z" * 32), partition=0
            )
        finally:
            await producer.stop()

        # A partition between a and b, for 30 s.
        partition = service.start_fault(
            FaultRequest.model_validate(
                {"kind": "partition", "params": {"groups": [["a"], ["b"]], "duration_s": 30}}
            )
        )
        command_id = f"{partition.id}.0"
        await wait_until(
            [a, b],
            lambda: all([r.fault_id for r in n.rules.active] == [command_id] for n in nodes.values()),
            "the partition in force on a and b",
        )
        for node in nodes.values():
            assert node.fault_stats.control_rejected == {"malformed": 1, "unauthenticated": 1}
        assert partition.state is FaultState.ACTIVE

        await a.send([frame("a", "b", 2)])  # dropped by a
        assert a.fault_stats.dropped_sends == 1
        # A frame of a's already in b's inbox (read from b's side): dropped by b; c's passes
        await bystander.send([frame("a", "b", 3), frame("c", "b", 4)])
        assert await receive_one(b) == ("c", 4)
        assert b.fault_stats.dropped_receives == 1

        # The stop never comes (the service's clock stands still): the nodes end it at its expiry.
        node_clock.move_to(T0 + 30)
        await a.send([frame("a", "b", 5)])
        assert await receive_one(b) == ("a", 5)
        assert a.rules.active == () and a.rules.expired == 1

        # An omission of everything a sends to b, stopped early by the service.
        omission = service.start_fault(
            FaultRequest.model_validate(
                {
                    "kind": "omission",
                    "target": "a",
                    "params": {"drop_probability": 1, "peers": ["b"], "duration_s": 60},
                }
            )
        )
        await wait_until([a], lambda: len(a.rules.active) == 1, "the omission in force on a")
        await a.send([frame("a", "b", 6)])
        assert a.fault_stats.dropped_sends == 2

        # A node that starts now replays the topic: the live omission, not the partition that ended.
        late = FaultyTransport(
            MemoryNetwork(["a"]).endpoint("a"),
            "a",
            rng=random.Random(1),
            clock=node_clock.now,
            control=KafkaControlSource(config, "a-late"),
            auth_key=KEY,
        )
        await late.start({})
        try:
            await wait_until(
                [late], lambda: late.fault_stats.commands.get("started", 0) == 1, "the late node's replay"
            )
            assert [r.fault_id for r in late.rules.active] == [f"{omission.id}.0"]
            assert late.fault_stats.commands == {"expired": 1, "started": 1}
        finally:
            await late.close()

        await service.stop_fault(omission.id)
        assert omission.state is FaultState.STOPPED
        await wait_until([a], lambda: a.rules.active == (), "the omission stopped on a")
        await a.send([frame("a", "b", 7)])
        assert await receive_one(b) == ("a", 7)
        assert a.fault_stats.commands == {"started": 2, "stopped": 1}
        registry = service.metrics.registry
        for kind, count in (("partition", 1), ("link_drop", 1), ("heal", 0)):
            assert registry.get_sample_value("dscore_chaos_faults_injected_total", {"kind": kind}) == count
    finally:
        await service.close()
        for transport in (a, b, bystander):
            await transport.close()
