"""`FaultyTransport` around memory transports: drops, delays and partitions are visible to the receiver,
commands on a control channel are obeyed (bad records counted and dropped), and a running Raft cluster on
wrapped transports elects a new leader when its leader is cut off, and heals when the fault expires."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Sequence

import pytest

from dscore.core.client_messages import ClientRequests
from dscore.core.codec import encode_envelope
from dscore.core.envelope import EnvelopeFactory
from dscore.core.errors import ConfigError, LocalError
from dscore.runtime.cluster import EmbeddedCluster, raft_factory
from dscore.transport.base import Delivery, OutboundFrame
from dscore.transport.faults import (
    CommandOutcome,
    Direction,
    FaultAction,
    FaultCommand,
    FaultKind,
    FaultRules,
    FaultyTransport,
    MemoryControlChannel,
    encode_command,
)
from dscore.transport.memory import MemoryNetwork, MemoryTransport

KEY = b"k" * 32
T0 = 1_700_000_000.0
TIMEOUT_S = 10.0


class Clock:
    """Unix seconds the test moves by hand (rule expiries)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def frame_from(source: str, destination: str, seq: int = 1) -> OutboundFrame:
    envelope = EnvelopeFactory(source, 1).wrap(destination, ClientRequests(()))
    envelope = dataclasses.replace(envelope, msg_id=dataclasses.replace(envelope.msg_id, seq=seq))
    return OutboundFrame(destination, encode_envelope(envelope, key=KEY), envelope)


def seqs(deliveries: Sequence[Delivery]) -> list[tuple[str, int]]:
    """(source, seq) of each delivery, by decoding it as the runtime would."""
    from dscore.core.codec import decode_envelope

    out = []
    for delivery in deliveries:
        envelope = decode_envelope(delivery.data, key=KEY)
        out.append((envelope.source, envelope.msg_id.seq))
    return out


async def receive_n(transport: FaultyTransport | MemoryTransport, count: int) -> list[Delivery]:
    got: list[Delivery] = []
    async with asyncio.timeout(TIMEOUT_S):
        while len(got) < count:
            got.extend(await transport.receive(count - len(got)))
    return got


def command(fault_id: str, kind: FaultKind = FaultKind.OMISSION, **fields: object) -> FaultCommand:
    base = FaultCommand(fault_id, FaultAction.START, kind, expires_at_ms=int((T0 + 60) * 1000))
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


class Net:
    def __init__(self, *, control: MemoryControlChannel | None = None) -> None:
        self.network = MemoryNetwork(["a", "b", "c"])
        self.clock = Clock()
        self.control = control
        self.wrapped: dict[str, FaultyTransport] = {}
        for node in ("a", "b"):
            self.wrapped[node] = FaultyTransport(
                self.network.endpoint(node),
                node,
                rng=random.Random(f"test:{node}"),
                clock=self.clock,
                control=control.source() if control is not None else None,
                auth_key=KEY,
            )
        #: c is not wrapped: a bystander whose frames show what the wrapped ones did
        self.c = self.network.endpoint("c")

    async def __aenter__(self) -> Net:
        for transport in (*self.wrapped.values(), self.c):
            await transport.start({})
        return self

    async def __aexit__(self, *exc: object) -> None:
        for transport in (*self.wrapped.values(), self.c):
            await transport.close()


async def test_a_partition_drops_both_ways_and_counts_each_side() -> None:
    async with Net() as net:
        a, b = net.wrapped["a"], net.wrapped["b"]
        partition = command("p", FaultKind.PARTITION, direction=Direction.BOTH, groups=(("a",), ("b", "c")))
        assert a.apply(partition) is CommandOutcome.STARTED
        assert b.apply(partition) is CommandOutcome.STARTED
        await a.send([frame_from("a", "b", 1), frame_from("a", "c", 2)])
        assert a.fault_stats.dropped_sends == 2  # c is on the other side too
        # A frame of a's that reached b's inbox anyway (sent before b's peer heard of the partition)
        net.network.inject("b", frame_from("a", "b", 3).data)
        await net.c.send([frame_from("c", "b", 4)])
        assert seqs(await receive_n(b, 1)) == [("c", 4)]
        assert b.fault_stats.dropped_receives == 1
        await b.send([frame_from("b", "c", 5)])  # same side
        assert seqs(await receive_n(net.c, 1)) == [("b", 5)]


async def test_an_omission_is_seeded_and_a_bystander_is_untouched() -> None:
    async def run() -> list[int]:
        async with Net() as net:
            a = net.wrapped["a"]
            a.apply(command("o", drop_probability=0.5, peers=("b",)))
            await a.send([frame_from("a", "b", i) for i in range(1, 101)])
            await a.send([frame_from("a", "c", 1000)])
            dropped = a.fault_stats.dropped_sends
            received = await receive_n(net.wrapped["b"], 100 - dropped)
            assert seqs(await receive_n(net.c, 1)) == [("a", 1000)]
            assert 30 <= dropped <= 70
            return [seq for _, seq in seqs(received)]

    first = await run()
    assert await run() == first  # the same seed loses the same frames
    assert first == sorted(first)


async def test_a_delay_holds_frames_back_in_order() -> None:
    async with Net() as net:
        a, b = net.wrapped["a"], net.wrapped["b"]
        a.apply(command("d", FaultKind.DELAY, delay_ms=200, peers=("b",)))
        await a.send([frame_from("a", "b", 1), frame_from("a", "b", 2)])
        await a.send([frame_from("a", "c", 3)])  # another destination: not held
        assert a.held_frames == 2 and a.fault_stats.delayed == 2
        assert seqs(await receive_n(net.c, 1)) == [("a", 3)]
        await net.c.send([frame_from("c", "b", 9)])  # sent after a's: lands first
        a.rules.remove("d")
        await a.send([frame_from("a", "b", 4)])  # no rule now, but queued behind the held ones
        assert seqs(await receive_n(b, 4)) == [("c", 9), ("a", 1), ("a", 2), ("a", 4)]
        assert a.held_frames == 0


async def test_held_frames_are_bounded_and_discarded_at_close() -> None:
    network = MemoryNetwork(["a", "b"])
    a = FaultyTransport(network.endpoint("a"), "a", rng=random.Random(1), clock=Clock(), max_held_frames=3)
    await a.start({})
    a.apply(command("d", FaultKind.DELAY, delay_ms=60_000))
    await a.send([frame_from("a", "b", i) for i in range(5)])
    assert a.held_frames == 3 and a.fault_stats.delay_overflow == 2
    await a.close()
    assert a.fault_stats.held_discarded == 3 and a.held_frames == 0
    with pytest.raises(LocalError):
        await a.send([frame_from("a", "b", 9)])


async def test_rules_expire_with_the_clock() -> None:
    async with Net() as net:
        a = net.wrapped["a"]
        a.apply(command("o", drop_probability=1.0, expires_at_ms=int((T0 + 5) * 1000)))
        await a.send([frame_from("a", "c", 1)])
        assert a.fault_stats.dropped_sends == 1
        net.clock.now = T0 + 5
        await a.send([frame_from("a", "c", 2)])
        assert seqs(await receive_n(net.c, 1)) == [("a", 2)]
        assert a.rules.active == () and a.rules.expired == 1


async def test_commands_on_the_control_channel_are_obeyed_and_bad_records_counted() -> None:
    control = MemoryControlChannel()
    async with Net(control=control) as net:
        a, b = net.wrapped["a"], net.wrapped["b"]
        changed = asyncio.gather(a.wait_rules_changed(a.rules.version), b.wait_rules_changed(b.rules.version))
        control.publish(b"\x02not a frame")
        control.publish(encode_command(command("x", drop_probability=1.0), key=b"z" * 32))  # forged
        control.publish(encode_command(command("x", drop_probability=1.0), key=None))  # no MAC
        partition = command("p", FaultKind.PARTITION, direction=Direction.BOTH, groups=(("a",), ("b",)))
        control.publish(encode_command(partition, key=KEY))
        async with asyncio.timeout(TIMEOUT_S):
            await changed
        for node in (a, b):
            assert [r.fault_id for r in node.rules.active] == ["p"]
            assert node.fault_stats.control_rejected == {"malformed": 1, "unauthenticated": 2}
            assert node.fault_stats.commands == {"started": 1}
        await a.send([frame_from("a", "b", 1)])
        assert a.fault_stats.dropped_sends == 1
        stopped = asyncio.gather(a.wait_rules_changed(a.rules.version), b.wait_rules_changed(b.rules.version))
        control.publish(encode_command(FaultCommand("p", FaultAction.STOP), key=KEY))
        async with asyncio.timeout(TIMEOUT_S):
            await stopped
        await a.send([frame_from("a", "b", 2)])
        assert seqs(await receive_n(b, 1)) == [("a", 2)]


async def test_a_restarted_node_replays_the_control_channel() -> None:
    control = MemoryControlChannel()
    control.publish(encode_command(command("gone", drop_probability=1.0), key=KEY))
    control.publish(encode_command(FaultCommand("gone", FaultAction.STOP), key=KEY))
    control.publish(encode_command(command("live", drop_probability=0.5, peers=("b",)), key=KEY))
    network = MemoryNetwork(["a", "b"])
    a = FaultyTransport(
        network.endpoint("a"),
        "a",
        rng=random.Random(1),
        clock=Clock(),
        control=control.source(),
        auth_key=KEY,
    )
    await a.start({})
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            version = a.rules.version
            if a.fault_stats.commands.get("started", 0) == 2:
                break
            await a.wait_rules_changed(version)
    assert [r.fault_id for r in a.rules.active] == ["live"]
    assert a.fault_stats.commands == {"started": 2, "stopped": 1}
    await a.close()


async def test_the_wrapper_names_its_node_and_passes_the_inner_stats() -> None:
    network = MemoryNetwork(["a", "b"])
    with pytest.raises(ConfigError):
        FaultyTransport(network.endpoint("a"), "b", rng=random.Random(1))
    wrapped = FaultyTransport(network.endpoint("a"), "a", rng=random.Random(1))
    assert wrapped.node_id == "a" and wrapped.stats is None  # a memory transport keeps none


# -- a running cluster ------------------------------------------------------------------------------


class _FaultyNetwork(MemoryNetwork):
    """The embedded cluster's network, handing out wrapped endpoints (as the node service will)."""

    def __init__(self, nodes: Sequence[str], clock: Clock, control: MemoryControlChannel) -> None:
        super().__init__(nodes)
        self.clock = clock
        self.control = control
        self.wrapped: dict[str, FaultyTransport] = {}

    def endpoint(self, node_id: str) -> MemoryTransport:
        wrapped = FaultyTransport(
            super().endpoint(node_id),
            node_id,
            rng=random.Random(f"cluster:{node_id}"),
            clock=self.clock,
            control=self.control.source(),
            auth_key=KEY,
        )
        self.wrapped[node_id] = wrapped
        return wrapped  # type: ignore[return-value]


async def test_a_cluster_fails_over_when_its_leader_is_partitioned_and_heals_at_expiry() -> None:
    clock = Clock()
    control = MemoryControlChannel()
    cluster = EmbeddedCluster(raft_factory(), 3, auth_key=KEY)
    network = _FaultyNetwork(cluster.node_ids, clock, control)
    cluster.network = network
    async with cluster:
        old = await cluster.wait_for_leader(TIMEOUT_S)
        others = [n for n in cluster.node_ids if n != old]
        partition = command(
            "iso", FaultKind.PARTITION, direction=Direction.BOTH, groups=((old,), tuple(others)),
            expires_at_ms=int((T0 + 30) * 1000),
        )  # fmt: skip
        control.publish(encode_command(partition, key=KEY))
        new = await cluster.wait_for_leader(TIMEOUT_S, among=others, exclude=[old])
        assert new != old
        assert network.wrapped[old].fault_stats.dropped_sends > 0
        # The stop is lost: the rule ends at its expiry, and the old leader rejoins as a follower.
        clock.now = T0 + 30
        await cluster.wait_for(
            lambda: cluster.leader() is not None and all(r.active == () for r in _rules(network)), TIMEOUT_S
        )
        assert cluster.node_failures() == {}


def _rules(network: _FaultyNetwork) -> list[FaultRules]:
    return [w.rules for w in network.wrapped.values()]
