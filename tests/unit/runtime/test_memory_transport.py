"""MemoryNetwork / MemoryTransport: bounded inboxes, offsets, partitions, isolation and crashes."""

from __future__ import annotations

import asyncio

import pytest

from dscore.core.errors import ConfigError, LocalError
from dscore.transport.base import OutboundFrame
from dscore.transport.memory import MemoryNetwork


async def drain(network: MemoryNetwork, node: str) -> list[bytes]:
    inbox = network.inbox(node)
    out = []
    while not inbox.empty():
        out.append(inbox.get_nowait().data)
    return out


async def test_send_receive_in_order_with_offsets() -> None:
    network = MemoryNetwork(("a", "b"))
    a, b = network.endpoint("a"), network.endpoint("b")
    await a.send([OutboundFrame("b", b"1"), OutboundFrame("b", b"2"), OutboundFrame("b", b"3")])
    first = await b.receive(2)
    rest = await b.receive(10)
    assert [d.data for d in first + rest] == [b"1", b"2", b"3"]
    assert [d.offset for d in first + rest] == [0, 1, 2]
    assert {d.channel for d in first} == {"inbox/b"}
    await b.commit({"inbox/b": 2})
    assert b.committed == {"inbox/b": 2}


async def test_receive_waits_for_a_delivery() -> None:
    network = MemoryNetwork(("a", "b"))
    waiting = asyncio.ensure_future(network.endpoint("b").receive(5))
    await asyncio.sleep(0)
    assert not waiting.done()
    network.deliver("a", "b", b"x")
    assert [d.data for d in await asyncio.wait_for(waiting, 1)] == [b"x"]


async def test_full_inbox_drops_the_newest_and_counts() -> None:
    network = MemoryNetwork(("a", "b"), inbox_max_messages=2)
    await network.endpoint("a").send([OutboundFrame("b", bytes([i])) for i in range(5)])
    assert await drain(network, "b") == [b"\x00", b"\x01"]
    assert network.dropped == {"overflow": 3}


async def test_partition_and_heal() -> None:
    network = MemoryNetwork(("a", "b", "c"))
    network.partition([["a", "b"], ["c"]])
    assert network.deliver("a", "b", b"ok")
    assert not network.deliver("a", "c", b"lost")
    assert not network.deliver("c", "b", b"lost")
    network.heal()
    assert network.deliver("c", "a", b"ok")
    assert network.dropped == {"partitioned": 2}


async def test_node_left_out_of_every_group_is_cut_off() -> None:
    network = MemoryNetwork(("a", "b", "c"))
    network.partition([["a", "b"]])
    assert not network.can_reach("c", "a") and not network.can_reach("a", "c")
    assert network.can_reach("a", "b")


async def test_isolate() -> None:
    network = MemoryNetwork(("a", "b", "c"))
    network.isolate("c")
    assert not network.can_reach("a", "c") and not network.can_reach("c", "b")
    assert network.can_reach("a", "b")
    network.heal()
    assert network.can_reach("a", "c")


async def test_crashed_node_loses_its_inbox_and_what_is_sent_to_it() -> None:
    network = MemoryNetwork(("a", "b"))
    network.deliver("a", "b", b"queued")
    network.disconnect("b")
    assert not network.deliver("a", "b", b"while down")
    assert not network.deliver("b", "a", b"from the dead")
    network.connect("b")
    assert await drain(network, "b") == []
    assert network.deliver("a", "b", b"after")
    assert network.inbox("b").get_nowait().offset == 1  # offsets keep growing, like Kafka's
    assert network.dropped == {"node_down": 3}


async def test_inject_bypasses_partitions_but_not_bounds() -> None:
    network = MemoryNetwork(("a", "b"), inbox_max_messages=1)
    network.isolate("b")
    assert network.inject("b", b"forged")
    assert not network.inject("b", b"no room")


async def test_misuse_is_a_clear_local_error() -> None:
    with pytest.raises(ConfigError):
        MemoryNetwork(("a", "a"))
    network = MemoryNetwork(("a",))
    with pytest.raises(LocalError, match="not a member"):
        network.endpoint("z")
    with pytest.raises(LocalError, match="two partition groups"):
        network.partition([["a"], ["a"]])
    endpoint = network.endpoint("a")
    await endpoint.close()
    with pytest.raises(LocalError, match="closed"):
        await endpoint.send([])
