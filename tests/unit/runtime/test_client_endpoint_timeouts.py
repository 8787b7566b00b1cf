"""`ClientEndpoint`'s timeouts: a request nobody answers resolves to None once its own deadline passed,
whatever the deadlines of the requests around it (the sweep is a timer armed for the earliest one)."""

from __future__ import annotations

import asyncio

from dscore.core.client_messages import Op
from dscore.runtime.client import ClientEndpoint
from dscore.transport.memory import MemoryNetwork


async def test_each_request_times_out_at_its_own_deadline() -> None:
    network = MemoryNetwork(["silent"])  # a node that never answers: nothing reads its inbox
    endpoint = ClientEndpoint(network.add_client("c"), lambda: ("silent",))
    await endpoint.start()
    try:
        long = endpoint.call("silent", Op.GET, "k", timeout_s=60.0)
        await asyncio.sleep(0)  # the long request's deadline armed the sweep first
        short = endpoint.call("silent", Op.GET, "k", timeout_s=0.05)
        done, _ = await asyncio.wait({long, short}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert done == {short} and short.result() is None
        assert not long.done()
        # the second's deadline is later than the armed one: the sweep that answers the first arms the
        # timer again for it
        first = endpoint.call("silent", Op.GET, "k", timeout_s=0.05)
        second = endpoint.call("silent", Op.GET, "k", timeout_s=0.1)
        assert await asyncio.wait_for(first, 30) is None and not second.done()
        assert await asyncio.wait_for(second, 30) is None and not long.done()
    finally:
        await endpoint.close()
    assert long.done() and long.result() is None  # closing answers what is still waiting
