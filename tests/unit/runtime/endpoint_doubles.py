"""The node's side of a client endpoint's wire, played by hand, for the `ClientEndpoint` tests."""

from __future__ import annotations

import asyncio

from dscore.core.client_messages import ClientRequests, ClientResponse, ClientResponses, Outcome
from dscore.core.codec import decode_envelope, encode_envelope
from dscore.core.envelope import EnvelopeFactory
from dscore.transport.base import OutboundFrame
from dscore.transport.memory import MemoryNetwork, MemoryTransport

BOUND_S = 30.0  # bounds on awaited events, never waited out in a passing run


class HandNode:
    """The node's side of the wire: read request envelopes, answer chosen requests."""

    def __init__(self, network: MemoryNetwork) -> None:
        self.inbox: MemoryTransport = network.endpoint("n1")
        self.factory = EnvelopeFactory("n1", 1)

    async def start(self) -> None:
        await self.inbox.start({})

    async def envelope(self) -> tuple[int, ...]:
        """The request ids of the next envelope that arrives."""
        (delivery,) = await asyncio.wait_for(self.inbox.receive(1), BOUND_S)
        content = decode_envelope(delivery.data).content
        assert isinstance(content, ClientRequests)
        return tuple(r.request_id for r in content.requests)

    def unread(self) -> int:
        """Envelopes in the node's inbox it has not read."""
        return self.inbox._inbox.next_offset - self.inbox._cursor

    async def answer(self, *request_ids: int) -> None:
        responses = ClientResponses(tuple(ClientResponse(r, Outcome.OK) for r in request_ids))
        data = encode_envelope(self.factory.wrap("c", responses))
        await self.inbox.send([OutboundFrame("c", data)])


async def settle() -> None:
    """Let every task that can run, run (loop turns only: no time passes)."""
    for _ in range(20):
        await asyncio.sleep(0)
