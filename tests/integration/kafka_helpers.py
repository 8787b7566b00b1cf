"""Shared helpers of the Kafka transport tests (a real broker; see conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from dscore.transport.base import Delivery, OutboundFrame
from dscore.transport.kafka import open_kafka_transport
from dscore.transport.kafka_config import KafkaClient, KafkaTransportConfig
from dscore.transport.kafka_layout import delete_topics

#: a node's tick: how often the tests' "node" loop sends while it waits for something
TICK_S = 0.01

CLIENTS = [KafkaClient.AIOKAFKA, KafkaClient.CONFLUENT]


class Endpoints:
    """Opens transports of one test's cluster and closes them (and deletes their topics) at the end."""

    def __init__(self, config: KafkaTransportConfig) -> None:
        self.config = config
        self.opened: list[Any] = []
        self.ids: set[str] = set()
        #: what each endpoint's last `start` returned: where its inbox ended (deliveries below are replays)
        self.replay_ends: dict[str, Mapping[str, int]] = {}

    async def open(
        self, endpoint: str, resume_after: Mapping[str, int] | None = None, **overrides: Any
    ) -> Any:
        config = self.config
        if overrides:
            config = KafkaTransportConfig(**{**config_fields(config), **overrides})
        transport = open_kafka_transport(config, endpoint)
        self.opened.append(transport)
        self.ids.add(endpoint)
        self.replay_ends[endpoint] = await transport.start(resume_after or {})
        return transport

    async def close_all(self) -> None:
        for transport in self.opened:
            await transport.close()
        if self.ids:
            await delete_topics(self.config, self.ids)


def config_fields(config: KafkaTransportConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


async def receive_n(transport: Any, count: int, timeout_s: float = 30.0) -> list[Delivery]:
    """Exactly `count` deliveries (fails if more are in one batch than asked for)."""
    got: list[Delivery] = []
    async with asyncio.timeout(timeout_s):
        while len(got) < count:
            batch = await transport.receive(count - len(got))
            assert 1 <= len(batch) <= count - len(got)
            got.extend(batch)
    return got


async def receive_until(transport: Any, marker: bytes, timeout_s: float = 30.0) -> list[Delivery]:
    """Every delivery up to and including the first whose data is `marker` (send one after what you
    expect, so "nothing more, nothing missing" is checked on an event, not on a quiet period)."""
    got: list[Delivery] = []
    async with asyncio.timeout(timeout_s):
        while not got or got[-1].data != marker:
            for delivery in await transport.receive(1000):
                got.append(delivery)
                if delivery.data == marker:
                    break
    return got


def frames(destination: str, payloads: Sequence[bytes]) -> list[OutboundFrame]:
    return [OutboundFrame(destination, p) for p in payloads]


async def tick_until(sender: Any, destination: str, done: Any, label: bytes, limit_s: float = 60.0) -> int:
    """Send `label + tick` to `destination` every tick until `done()`; every send is bounded."""
    bound_s = sender.config.send_timeout_s + 1.0
    tick = 0
    async with asyncio.timeout(limit_s):
        while not done():
            async with asyncio.timeout(bound_s):  # a send that hangs fails the test here
                await sender.send(frames(destination, [label + str(tick).encode()]))
            tick += 1
            await asyncio.sleep(TICK_S)
    return tick


async def ticks_until(done: Any, limit_s: float = 60.0) -> None:
    """Let the loop run tick after tick (a node with nothing to send) until `done()`."""
    async with asyncio.timeout(limit_s):
        while not done():
            await asyncio.sleep(TICK_S)


async def get_through(sender: Any, receiver: Any, destination: str, label: bytes) -> None:
    """Resend a marker every tick until the receiver gets one (some may be lost while a producer
    reconnects); the receiver must deliver it."""
    received = asyncio.ensure_future(_receive_until_prefix(receiver, label))
    try:
        await tick_until(sender, destination, received.done, label)
        received.result()
    finally:
        received.cancel()


async def _receive_until_prefix(receiver: Any, prefix: bytes) -> None:
    while True:
        for delivery in await receiver.receive(1000):
            if delivery.data.startswith(prefix):
                return
