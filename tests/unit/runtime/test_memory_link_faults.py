"""MemoryNetwork link faults: seeded drops, duplicates and delays (reordering), off by default, and an
embedded Raft cluster that still commits, deduplicates and converges over such links."""

from __future__ import annotations

import asyncio
import random

import pytest

from dscore.core.errors import ConfigError
from dscore.runtime.client import ClientConfig, KvClient
from dscore.runtime.cluster import EmbeddedCluster, raft_factory
from dscore.transport.base import OutboundFrame
from dscore.transport.memory import LinkFaults, MemoryNetwork


def drain(network: MemoryNetwork, node: str) -> list[bytes]:
    return [d.data for d in network.retained(node)]


async def receive_all(network: MemoryNetwork, node: str, count: int) -> list[bytes]:
    """Read `node`'s inbox until `count` frames arrived (waits on deliveries, bounded)."""
    reader = network.endpoint(node)
    out: list[bytes] = []
    async with asyncio.timeout(5.0):
        while len(out) < count:
            out.extend(d.data for d in await reader.receive(count - len(out)))
    return out


def frames(count: int) -> list[bytes]:
    return [i.to_bytes(2, "big") for i in range(count)]


async def test_off_by_default_and_an_inactive_setting_is_off() -> None:
    network = MemoryNetwork(("a", "b"))
    assert network.link_faults is None
    rng = random.Random(1)
    state = rng.getstate()
    network.set_link_faults(LinkFaults(), rng)  # nothing active: stays off
    assert network.link_faults is None
    for data in frames(50):
        assert network.deliver("a", "b", data)
    assert drain(network, "b") == frames(50)
    assert rng.getstate() == state  # nothing drawn
    assert (network.duplicated, network.delayed, network.dropped, network.delivered) == (0, 0, {}, 50)


async def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="drop_probability"):
        LinkFaults(drop_probability=1.5)
    with pytest.raises(ConfigError, match="duplicate_probability"):
        LinkFaults(duplicate_probability=-0.1)
    with pytest.raises(ConfigError, match="max_delay_s"):
        LinkFaults(delay_probability=0.5)
    with pytest.raises(ConfigError, match="max_delay_s"):
        LinkFaults(max_delay_s=float("inf"))
    with pytest.raises(ConfigError, match="rng"):
        MemoryNetwork(("a", "b"), link_faults=LinkFaults(drop_probability=0.1))


async def test_drops_are_seeded_and_counted() -> None:
    def run(seed: int) -> list[bytes]:
        network = MemoryNetwork(
            ("a", "b"), link_faults=LinkFaults(drop_probability=0.3), rng=random.Random(seed)
        )
        accepted = [network.deliver("a", "b", data) for data in frames(1000)]
        received = drain(network, "b")
        assert accepted.count(False) == network.dropped["link_drop"] == 1000 - len(received)
        assert network.delivered == len(received)
        return received

    first = run(7)
    assert 200 < 1000 - len(first) < 400
    assert first == sorted(first)  # drops alone never reorder
    assert run(7) == first  # the same seed loses the same frames
    assert run(8) != first


async def test_duplicates_arrive_twice_with_their_own_offsets() -> None:
    network = MemoryNetwork(
        ("a", "b"), link_faults=LinkFaults(duplicate_probability=1.0), rng=random.Random(1)
    )
    await network.endpoint("a").send([OutboundFrame("b", data) for data in frames(3)])
    deliveries = network.retained("b")
    assert [d.data for d in deliveries] == [f for f in frames(3) for _ in range(2)]
    assert [d.offset for d in deliveries] == list(range(6))
    assert network.duplicated == 3 and network.delivered == 6


async def test_delays_hold_frames_back_on_the_loop_clock_and_reorder_them() -> None:
    faults = LinkFaults(delay_probability=1.0, max_delay_s=0.03)
    network = MemoryNetwork(("a", "b"), link_faults=faults, rng=random.Random(3))
    sender = network.endpoint("a")
    await sender.send([OutboundFrame("b", data) for data in frames(20)])
    # The send returned with every frame still held back: the sender never waits for a delay.
    assert network.in_flight == 20 and network.delayed == 20 and drain(network, "b") == []
    received = await receive_all(network, "b", 20)
    assert network.in_flight == 0 and network.delivered == 20
    assert sorted(received) == frames(20) and received != frames(20)  # all landed, out of order


async def test_a_held_back_frame_meets_the_network_as_it_is_when_it_lands() -> None:
    faults = LinkFaults(delay_probability=1.0, max_delay_s=0.01)
    network = MemoryNetwork(("a", "b", "c"), link_faults=faults, rng=random.Random(1))
    assert network.deliver("a", "b", b"to be cut off")
    assert network.deliver("a", "c", b"lands")
    network.partition([["a", "c"], ["b"]])
    assert await receive_all(network, "c", 1) == [b"lands"]
    async with asyncio.timeout(5.0):
        while network.in_flight:
            await asyncio.sleep(0.001)
    assert network.delivered == 1 and drain(network, "b") == []
    assert network.dropped == {"partitioned": 1}


async def test_a_frame_refused_at_send_time_draws_nothing() -> None:
    rng = random.Random(5)
    network = MemoryNetwork(("a", "b"), link_faults=LinkFaults(drop_probability=0.5), rng=rng)
    network.isolate("b")
    state = rng.getstate()
    assert not network.deliver("a", "b", b"x")
    assert not network.deliver("a", "zz", b"x")
    assert rng.getstate() == state
    assert network.dropped == {"partitioned": 1, "unknown_node": 1}


async def test_switching_off_keeps_the_stream_and_lets_held_back_frames_land() -> None:
    network = MemoryNetwork(("a", "b"))
    network.set_link_faults(LinkFaults(delay_probability=1.0, max_delay_s=0.01), random.Random(2))
    assert network.deliver("a", "b", b"late")
    network.set_link_faults(None)
    assert network.link_faults is None
    assert network.deliver("a", "b", b"on time")
    assert await receive_all(network, "b", 2) == [b"on time", b"late"]
    network.set_link_faults(LinkFaults(drop_probability=1.0))  # the earlier rng is kept
    assert not network.deliver("a", "b", b"lost")
    assert network.dropped == {"link_drop": 1}


async def test_raft_commits_over_lossy_duplicating_reordering_links() -> None:
    """The runtime's dedup marks throw duplicates away; Raft retries what is lost or arrives late."""
    async with EmbeddedCluster(raft_factory(), 3, seed=9) as cluster:
        await cluster.wait_for_leader(10.0)
        faults = LinkFaults(
            drop_probability=0.1, duplicate_probability=0.3, delay_probability=0.3, max_delay_s=0.02
        )
        cluster.network.set_link_faults(faults, random.Random(9))
        endpoint = await cluster.client_endpoint("c")
        client = KvClient(endpoint, "c", config=ClientConfig(op_timeout_s=5.0, attempt_timeout_s=0.3))
        for i in range(30):
            assert (await client.append("k", f"{i};")).ok
        cluster.network.set_link_faults(None)
        expected = "".join(f"{i};" for i in range(30))
        read = await client.get("k")
        assert read.ok and read.value == expected

        def converged() -> bool:
            runtimes = [cluster.runtime(n) for n in cluster.node_ids]
            return all(rt is not None and rt.state_machine.read("k") == expected for rt in runtimes)

        await cluster.wait_for(converged, 10.0)
        network = cluster.network
        assert network.duplicated and network.delayed and network.dropped.get("link_drop")
        runtimes = [rt for n in cluster.node_ids if (rt := cluster.runtime(n)) is not None]
        assert sum(rt.rejected.get("duplicate", 0) for rt in runtimes) > 0
