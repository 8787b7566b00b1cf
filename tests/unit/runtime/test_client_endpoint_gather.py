"""`ClientEndpoint(max_gather_s=...)`: after a node answers an envelope of several requests, its next
envelope waits until it holds as many requests as were answered plus those held, or until its wait runs
out: `min(max_gather_s, GATHER_SHARE_OF_ROUND_TRIP * the answered envelope's round trip)`. On the memory
transport, the node played by hand, on virtual time: the waits these tests read are exact."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from endpoint_doubles import BOUND_S, HandNode, settle
from virtual_loop import run_virtual

from dscore.core.client_messages import ClientResponse, Op, Outcome
from dscore.core.errors import ConfigError
from dscore.runtime.client import GATHER_SHARE_OF_ROUND_TRIP, ClientEndpoint
from dscore.transport.memory import MemoryNetwork

#: how long the node takes to answer an envelope, in virtual seconds (the envelope's round trip)
ROUND_TRIP_S = 0.2


def run(test: Callable[[HandNode, ClientEndpoint], Awaitable[None]], max_gather_s: float) -> None:
    """`test` with a node played by hand and an endpoint (one envelope in flight, `max_gather_s`), on a
    virtual-time loop."""

    async def main() -> None:
        network = MemoryNetwork(["n1"])
        node = HandNode(network)
        await node.start()
        endpoint = ClientEndpoint(
            network.add_client("c"),
            lambda: ("n1",),
            max_envelopes_in_flight=1,
            max_gather_s=max_gather_s,
        )
        await endpoint.start()
        try:
            await test(node, endpoint)
        finally:
            await endpoint.close()

    run_virtual(main())


def put(endpoint: ClientEndpoint, key: str) -> asyncio.Future[ClientResponse | None]:
    return endpoint.call("n1", Op.PUT, key, value="v", timeout_s=BOUND_S)


async def answered_after_round_trip(node: HandNode, ids: tuple[int, ...]) -> float:
    """The node answers `ids` ROUND_TRIP_S after their envelope left; returns when (loop time)."""
    await asyncio.sleep(ROUND_TRIP_S)
    await node.answer(*ids)
    await settle()
    return asyncio.get_running_loop().time()


def test_the_answered_clients_next_requests_leave_together_once_all_are_in() -> None:
    async def test(node: HandNode, endpoint: ClientEndpoint) -> None:
        first = [put(endpoint, k) for k in "abc"]
        assert await node.envelope() == (1, 2, 3)
        held = put(endpoint, "d")  # arrives while 1-3 are in flight
        answered_at = await answered_after_round_trip(node, (1, 2, 3))
        for future in first:
            assert (await future).outcome is Outcome.OK  # type: ignore[union-attr]
        second = [put(endpoint, "a"), put(endpoint, "b")]
        await settle()
        assert node.unread() == 0  # 3 of 4 (held 1 + answered 3): still gathering
        second.append(put(endpoint, "c"))
        assert await node.envelope() == (4, 5, 6, 7)  # all in: it leaves with the held one, in order
        assert asyncio.get_running_loop().time() == answered_at  # at once, not at the end of the wait
        assert (endpoint.gathers_filled, endpoint.gathers_expired) == (1, 0)
        await node.answer(4, 5, 6, 7)
        for future in (held, *second):
            assert (await future).outcome is Outcome.OK  # type: ignore[union-attr]

    run(test, max_gather_s=3600.0)


@pytest.mark.parametrize(
    ("max_gather_s", "wait_s"),
    [(3600.0, GATHER_SHARE_OF_ROUND_TRIP * ROUND_TRIP_S), (0.03, 0.03)],
    ids=["share-of-round-trip", "max-gather"],
)
def test_a_gather_that_does_not_fill_leaves_when_its_wait_runs_out(
    max_gather_s: float, wait_s: float
) -> None:
    async def test(node: HandNode, endpoint: ClientEndpoint) -> None:
        first = [put(endpoint, k) for k in "ab"]
        assert await node.envelope() == (1, 2)
        answered_at = await answered_after_round_trip(node, (1, 2))
        await asyncio.gather(*first)
        alone = put(endpoint, "a")  # the other answered client never comes back
        assert await node.envelope() == (3,)
        assert asyncio.get_running_loop().time() - answered_at == pytest.approx(wait_s)
        assert (endpoint.gathers_filled, endpoint.gathers_expired) == (0, 1)
        await node.answer(3)
        assert (await alone).outcome is Outcome.OK  # type: ignore[union-attr]

    run(test, max_gather_s)


def test_a_lone_clients_next_request_never_waits() -> None:
    async def test(node: HandNode, endpoint: ClientEndpoint) -> None:
        for number in (1, 3, 5):
            future = put(endpoint, "a")
            assert await node.envelope() == (number,)
            answered_at = await answered_after_round_trip(node, (number,))
            await future
            nxt = put(endpoint, "a")
            assert await node.envelope() == (number + 1,)
            assert asyncio.get_running_loop().time() == answered_at
            await node.answer(number + 1)
            await nxt
        assert (endpoint.gathers_filled, endpoint.gathers_expired) == (0, 0)

    run(test, max_gather_s=3600.0)


def test_an_envelope_that_timed_out_starts_no_gather() -> None:
    """Its requests' clients retry on their own schedule: gathering for them would only delay others."""

    async def test(node: HandNode, endpoint: ClientEndpoint) -> None:
        lost = [endpoint.call("n1", Op.PUT, k, value="v", timeout_s=0.5) for k in "ab"]
        assert await node.envelope() == (1, 2)
        assert await asyncio.gather(*lost) == [None, None]  # the node never answered
        timed_out_at = asyncio.get_running_loop().time()
        after = put(endpoint, "c")
        assert await node.envelope() == (3,)
        assert asyncio.get_running_loop().time() == timed_out_at
        await node.answer(3)
        await after

    run(test, max_gather_s=3600.0)


def test_off_by_default_and_refused_where_it_cannot_work() -> None:
    transport = MemoryNetwork(["n1"]).add_client("c")
    assert ClientEndpoint(transport, lambda: ("n1",), max_envelopes_in_flight=1).max_gather_s == 0.0
    with pytest.raises(ConfigError, match="needs max_envelopes_in_flight"):
        ClientEndpoint(transport, lambda: ("n1",), max_gather_s=0.01)
    for bad in (-0.01, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="max_gather_s must be"):
            ClientEndpoint(transport, lambda: ("n1",), max_envelopes_in_flight=1, max_gather_s=bad)
