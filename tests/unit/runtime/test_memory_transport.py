"""MemoryNetwork / MemoryTransport: retained inboxes with offsets, seeking, retention, partitions,
isolation, client endpoints."""

from __future__ import annotations

import asyncio

import pytest

from dscore.core.errors import ConfigError, LocalError
from dscore.transport.base import OutboundFrame
from dscore.transport.memory import MemoryNetwork


def retained(network: MemoryNetwork, node: str) -> list[bytes]:
    return [d.data for d in network.retained(node)]


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


async def test_retention_keeps_the_newest_frames_and_a_slow_reader_skips_what_is_gone() -> None:
    network = MemoryNetwork(("a", "b"), inbox_max_messages=2)
    reader = network.endpoint("b")
    await network.endpoint("a").send([OutboundFrame("b", bytes([i])) for i in range(5)])
    # Dropped in bulk once twice the bound is reached: the newest `inbox_max_messages` at least stay.
    assert retained(network, "b") == [b"\x02", b"\x03", b"\x04"]
    assert network.dropped == {"retention": 2}
    batch = await reader.receive(10)
    assert [d.offset for d in batch] == [2, 3, 4]
    assert reader.lost_to_retention == 2


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


async def test_a_restarted_reader_seeks_past_its_stored_position_and_gets_what_came_while_down() -> None:
    network = MemoryNetwork(("a", "b"))
    first = network.endpoint("b")
    network.deliver("a", "b", b"0")
    network.deliver("a", "b", b"1")
    assert [d.data for d in await first.receive(10)] == [b"0", b"1"]
    await first.close()  # crashed; only position 0 was stored
    network.deliver("a", "b", b"2")  # sent while it was down: kept, as a Kafka partition keeps it
    again = network.endpoint("b")
    await again.start({"inbox/b": 0})
    assert [(d.data, d.offset) for d in await again.receive(10)] == [(b"1", 1), (b"2", 2)]
    fresh = network.endpoint("b")
    await fresh.start({})  # no stored position: from the oldest retained frame
    assert [d.offset for d in await fresh.receive(10)] == [0, 1, 2]


async def test_clients_reach_every_node_and_read_from_the_end_of_their_inbox() -> None:
    network = MemoryNetwork(("a", "b"))
    network.deliver("a", "c", b"before")  # no such endpoint yet
    client = network.add_client("c")
    network.partition([["a"], ["b"]])
    network.isolate("a")
    assert network.deliver("a", "c", b"reply") and network.deliver("c", "b", b"request")
    assert [d.data for d in await client.receive(5)] == [b"reply"]
    assert network.dropped == {"unknown_node": 1}
    with pytest.raises(LocalError, match="unknown node"):
        network.isolate("c")


async def test_inject_bypasses_partitions() -> None:
    network = MemoryNetwork(("a", "b"))
    network.isolate("b")
    assert network.inject("b", b"forged")
    assert not network.inject("z", b"nowhere")
    assert retained(network, "b") == [b"forged"]


async def test_misuse_is_a_clear_local_error() -> None:
    with pytest.raises(ConfigError):
        MemoryNetwork(("a", "a"))
    network = MemoryNetwork(("a",))
    with pytest.raises(LocalError, match="not attached"):
        network.endpoint("z")
    with pytest.raises(LocalError, match="two partition groups"):
        network.partition([["a"], ["a"]])
    endpoint = network.endpoint("a")
    await endpoint.close()
    with pytest.raises(LocalError, match="closed"):
        await endpoint.send([])
    with pytest.raises(LocalError, match="closed"):
        await endpoint.receive(1)
    with pytest.raises(LocalError, match="already attached"):
        network.add_client("a")
