"""`ClientEndpoint(max_envelopes_in_flight=N)`: a node never has more than N envelopes of requests
unanswered; what is sent meanwhile waits and leaves together in the next envelope once one is answered (or
timed out). On the memory transport, with the node's side played by hand."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from endpoint_doubles import BOUND_S, HandNode, settle

from dscore.core.client_messages import Op, Outcome
from dscore.core.errors import ConfigError, LocalError
from dscore.runtime.client import ClientEndpoint
from dscore.transport.memory import MemoryNetwork


@contextlib.asynccontextmanager
async def one_in_flight() -> AsyncIterator[tuple[HandNode, ClientEndpoint]]:
    """A node played by hand and an endpoint allowed one envelope in flight to it."""
    network = MemoryNetwork(["n1"])
    node = HandNode(network)
    await node.start()
    endpoint = ClientEndpoint(network.add_client("c"), lambda: ("n1",), max_envelopes_in_flight=1)
    await endpoint.start()
    try:
        yield node, endpoint
    finally:
        await endpoint.close()


async def test_requests_wait_for_the_envelope_in_flight_and_leave_together() -> None:
    async with one_in_flight() as (node, endpoint):
        first = endpoint.call("n1", Op.GET, "a", timeout_s=BOUND_S)
        assert await node.envelope() == (1,)  # nothing in flight: it leaves at once
        later = [endpoint.call("n1", Op.GET, k, timeout_s=BOUND_S) for k in "bcd"]
        await settle()
        assert node.unread() == 0  # held while envelope 1 is unanswered
        await node.answer(1)
        assert (await asyncio.wait_for(first, BOUND_S)).outcome is Outcome.OK  # type: ignore[union-attr]
        assert await node.envelope() == (2, 3, 4)  # the held requests, in one envelope, in order
        await node.answer(3, 2)  # answers of part of an envelope keep it in flight
        more = endpoint.call("n1", Op.GET, "e", timeout_s=BOUND_S)
        await settle()
        assert node.unread() == 0
        await node.answer(4)
        assert await node.envelope() == (5,)
        await node.answer(5)
        for future in (*later, more):
            assert (await asyncio.wait_for(future, BOUND_S)).outcome is Outcome.OK  # type: ignore[union-attr]


async def test_a_timed_out_request_releases_its_envelope() -> None:
    async with one_in_flight() as (node, endpoint):
        lost = endpoint.call("n1", Op.GET, "a", timeout_s=0.01)  # the node never answers it
        assert await node.envelope() == (1,)
        held = endpoint.call("n1", Op.GET, "b", timeout_s=BOUND_S)
        assert await asyncio.wait_for(lost, BOUND_S) is None
        assert await node.envelope() == (2,)  # sent once the first envelope's only request timed out
        await node.answer(2)
        assert (await asyncio.wait_for(held, BOUND_S)).outcome is Outcome.OK  # type: ignore[union-attr]


async def test_a_request_that_timed_out_while_held_is_not_sent() -> None:
    """Sent, it would be in flight for good (it was answered None already, so nothing lands it) and hold
    the node's next envelope forever."""
    async with one_in_flight() as (node, endpoint):
        first = endpoint.call("n1", Op.GET, "a", timeout_s=BOUND_S)
        assert await node.envelope() == (1,)
        expired = endpoint.call("n1", Op.GET, "b", timeout_s=0.01)  # held, then its deadline passes
        assert await asyncio.wait_for(expired, BOUND_S) is None
        await node.answer(1)
        assert (await asyncio.wait_for(first, BOUND_S)).outcome is Outcome.OK  # type: ignore[union-attr]
        after = endpoint.call("n1", Op.GET, "c", timeout_s=BOUND_S)
        assert await node.envelope() == (3,)  # not (2,): the expired request never left
        await node.answer(3)
        assert (await asyncio.wait_for(after, BOUND_S)).outcome is Outcome.OK  # type: ignore[union-attr]


def test_a_limit_is_refused_where_it_cannot_hold() -> None:
    transport = MemoryNetwork(["n1"]).add_client("c")
    with pytest.raises(ConfigError, match="max_envelopes_in_flight"):
        ClientEndpoint(transport, lambda: ("n1",), max_envelopes_in_flight=-1)
    with pytest.raises(ConfigError, match="reply_quorum"):
        ClientEndpoint(transport, lambda: ("n1",), reply_quorum=2, max_envelopes_in_flight=1)


async def test_a_multicast_is_refused_under_a_limit() -> None:
    network = MemoryNetwork(["n1", "n2"])
    endpoint = ClientEndpoint(network.add_client("c"), lambda: ("n1", "n2"), max_envelopes_in_flight=1)
    with pytest.raises(LocalError, match="multicast"):
        endpoint.call("n1", Op.GET, "a", timeout_s=1.0, to_all=True)


async def test_expire_ends_every_request_waiting_on_one_node_at_once() -> None:
    """`expire(node)`: the requests sent to the node and those held for its next envelope are answered
    None now (as timeouts) and its envelope leaves the flight; another node's requests are untouched,
    and a late answer is counted `late`."""
    network = MemoryNetwork(["n1", "n2"])
    node = HandNode(network)
    await node.start()
    other_inbox = network.endpoint("n2")
    await other_inbox.start({})
    endpoint = ClientEndpoint(network.add_client("c"), lambda: ("n1", "n2"), max_envelopes_in_flight=1)
    await endpoint.start()
    try:
        sent = endpoint.call("n1", Op.GET, "a", timeout_s=BOUND_S)
        assert await node.envelope() == (1,)
        held = endpoint.call("n1", Op.GET, "b", timeout_s=BOUND_S)
        elsewhere = endpoint.call("n2", Op.GET, "c", timeout_s=BOUND_S)
        await settle()
        assert endpoint.expire("n1") == 2
        assert await asyncio.wait_for(sent, BOUND_S) is None
        assert await asyncio.wait_for(held, BOUND_S) is None
        assert not elsewhere.done()
        assert endpoint.expire("n1") == 0
        after = endpoint.call("n1", Op.GET, "d", timeout_s=BOUND_S)
        assert await node.envelope() == (4,)  # the flight is free; the expired held request never left
        await node.answer(1, 4)
        assert (await asyncio.wait_for(after, BOUND_S)).outcome is Outcome.OK  # type: ignore[union-attr]
        assert endpoint.rejected == {"late": 1}
        assert not elsewhere.done()
    finally:
        await endpoint.close()
