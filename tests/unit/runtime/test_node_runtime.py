"""NodeRuntime against a test-double core: Ready ordering, crash safety, rejection of bad input, dedup,
exactly-once submits, reads, bounds, compaction and ticks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from rt_doubles import (
    MiniLogCore,
    MiniNote,
    RecordingStorage,
    RecordingTransport,
    mini_core,
    no_read_index_core,
)

from dscore.core.codec import decode_envelope, encode_envelope, frame
from dscore.core.envelope import EnvelopeFactory
from dscore.core.errors import NotLeaderError
from dscore.runtime.errors import OverloadedError, RuntimeStoppedError
from dscore.runtime.node import CoreFactory, NodeRuntime, RuntimeConfig
from dscore.statemachine.kv import Append, Cas, Get, Put
from dscore.storage.memory import MemoryStorage
from dscore.transport.base import OutboundFrame
from dscore.transport.memory import MemoryNetwork

TIMEOUT_S = 5.0
FAST = RuntimeConfig(tick_interval_s=0.005)


class Node:
    """One runtime on a memory network, with recording storage and transport sharing an event log."""

    def __init__(
        self,
        members: tuple[str, ...] = ("n1",),
        node_id: str = "n1",
        make_core: CoreFactory = mini_core,
        config: RuntimeConfig = FAST,
        storage: MemoryStorage | None = None,
        network: MemoryNetwork | None = None,
    ) -> None:
        self.events: list[str] = []
        self.network = network or MemoryNetwork(members)
        self.storage = RecordingStorage(self.events, storage)
        self.transport = RecordingTransport(self.events, self.network.endpoint(node_id))
        self.runtime = NodeRuntime(
            node_id, members, make_core, self.transport, self.storage, config=config, seed=7
        )

    async def __aenter__(self) -> Node:
        await self.runtime.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runtime.stop()

    @property
    def core(self) -> MiniLogCore:
        core = self.runtime.core
        assert isinstance(core, MiniLogCore)
        return core


async def wait_until(predicate: object, timeout_s: float = TIMEOUT_S) -> None:
    """Poll a condition on every loop turn (never a fixed sleep), failing after `timeout_s`."""
    assert callable(predicate)
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.001)


def peer_envelope_bytes(factory: EnvelopeFactory, destination: str, last_index: int) -> bytes:
    return encode_envelope(factory.wrap(destination, MiniNote(last_index)))


async def test_submit_applies_and_answers() -> None:
    async with Node() as node:
        rt = node.runtime
        assert rt.is_leader and rt.leader_id == "n1"
        assert (await rt.submit("c1", 1, Put("k", "v"), TIMEOUT_S)).ok
        result = await rt.submit("c1", 2, Cas("k", "x", "y"), TIMEOUT_S)
        assert not result.ok and result.error == "cas_mismatch" and result.value == "v"
        assert await rt.read("k", TIMEOUT_S) == "v"
        assert node.events[0] == "bump" and rt.incarnation == 1


async def test_ready_order_persist_then_send_then_apply() -> None:
    async with Node(members=("n1", "n2")) as node:
        rt = node.runtime
        seen_at_send: list[tuple[int, int, int]] = []
        original_send = node.transport.send

        async def checking_send(frames: Sequence[OutboundFrame]) -> None:
            # What was durable and what was applied at the moment the message left.
            note = decode_envelope(frames[-1].data).content
            assert isinstance(note, MiniNote)
            durable = node.storage.inner.stored_state().durable.entries
            seen_at_send.append((note.last_index, durable[-1].index, rt.state_machine.applied_index))
            await original_send(frames)

        node.transport.send = checking_send  # type: ignore[method-assign]
        results = await asyncio.gather(
            *(rt.submit(f"c{i}", 1, Put("k", str(i)), TIMEOUT_S) for i in range(50))
        )
        assert all(r.ok for r in results)
        assert seen_at_send
        for announced, durable_last, applied in seen_at_send:
            assert durable_last >= announced  # persisted before it was announced
            assert applied < announced  # applied only after the send
        sends = [i for i, e in enumerate(node.events) if e.startswith("send")]
        assert all(node.events[i - 1].startswith("save") for i in sends)
        # Batching: 50 concurrent proposals went into far fewer saves.
        assert len(node.storage.batches) < 50


async def test_transport_positions_committed_after_the_save_they_belong_to() -> None:
    async with Node(members=("n1", "n2")) as node:
        peer = EnvelopeFactory("n2", 1)
        node.network.inject("n1", peer_envelope_bytes(peer, "n1", 1))
        await wait_until(lambda: "commit" in node.events)
        await node.runtime.submit("c", 1, Put("k", "v"), TIMEOUT_S)
        await wait_until(lambda: node.storage.inner.stored_state().input_positions.get("inbox/n1") == 0)
        assert node.storage.inner.stored_state().dedup_marks == {"n2": (1, 1)}


async def test_crash_after_persist_before_send_loses_nothing() -> None:
    disk = MemoryStorage()
    network = MemoryNetwork(("n1", "n2"))
    node = Node(members=("n1", "n2"), storage=disk, network=network)
    await node.runtime.start()
    node.storage.hold_after_save = asyncio.Event()  # every save now stalls after it is durable
    node.storage.saved.clear()
    pending = asyncio.ensure_future(node.runtime.submit("c", 1, Append("k", "x"), TIMEOUT_S))
    await asyncio.wait_for(node.storage.saved.wait(), TIMEOUT_S)
    node.runtime.crash()  # kill -9 between step 1 (persist) and step 2 (send)
    with pytest.raises(RuntimeStoppedError):
        await pending
    assert node.transport.sent == []  # nothing was announced
    assert [e.index for e in disk.stored_state().durable.entries] == [1]

    network.disconnect("n1")
    network.connect("n1")
    async with Node(members=("n1", "n2"), storage=disk, network=network) as again:
        assert again.runtime.incarnation == 2
        await wait_until(lambda: again.runtime.state_machine.read("k") == "x")
        # The retry of the same command is answered from its session: applied once, not twice.
        retry = await again.runtime.submit("c", 1, Append("k", "x"), TIMEOUT_S)
        assert retry.ok
        assert again.runtime.state_machine.read("k") == "x"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "malformed"),
        (b"\x01\x00\x00\x00\x00garbage", "checksum"),
        (b"\x09" + b"\x00" * 10, "version"),
        (frame(b"\xc1"), "malformed"),
        (b"\x01" + b"\x00" * 5_000, "too_large"),
    ],
)
async def test_malformed_bytes_are_counted_and_dropped(data: bytes, reason: str) -> None:
    config = RuntimeConfig(tick_interval_s=0.005, max_envelope_bytes=4_096)
    async with Node(members=("n1", "n2"), config=config) as node:
        assert node.network.inject("n1", data)
        await wait_until(lambda: node.runtime.rejected.get(reason) == 1)
        assert node.core.received == []
        assert (await node.runtime.submit("c", 1, Put("k", "v"), TIMEOUT_S)).ok  # still serving


async def test_misaddressed_and_forged_envelopes_are_dropped() -> None:
    async with Node(members=("n1", "n2", "n3")) as node:
        inject = node.network.inject
        inject("n1", peer_envelope_bytes(EnvelopeFactory("n2", 1), "n3", 1))  # meant for n3
        inject("n1", peer_envelope_bytes(EnvelopeFactory("mallory", 1), "n1", 1))  # not a member
        inject("n1", peer_envelope_bytes(EnvelopeFactory("n1", 1), "n1", 1))  # claims to be us
        await wait_until(lambda: sum(node.runtime.rejected.values()) == 3)
        assert node.runtime.rejected == {"misaddressed": 1, "unknown_sender": 2}
        assert node.core.received == []


async def test_duplicates_are_dropped_and_marks_persisted() -> None:
    async with Node(members=("n1", "n2")) as node:
        peer = EnvelopeFactory("n2", 3)
        first = peer_envelope_bytes(peer, "n1", 1)
        second = peer_envelope_bytes(peer, "n1", 2)
        for data in (first, first, second, first, second):
            node.network.inject("n1", data)
        await wait_until(lambda: node.runtime.rejected.get("duplicate") == 3)
        assert [e.msg_id.seq for e in node.core.received] == [1, 2]
        # The marks ride along with the next write of protocol state.
        await node.runtime.submit("c", 1, Put("k", "v"), TIMEOUT_S)
        assert node.storage.inner.stored_state().dedup_marks == {"n2": (3, 2)}


async def test_restart_keeps_dedup_marks() -> None:
    disk = MemoryStorage()
    network = MemoryNetwork(("n1", "n2"))
    peer = EnvelopeFactory("n2", 1)
    old = peer_envelope_bytes(peer, "n1", 1)
    async with Node(members=("n1", "n2"), storage=disk, network=network) as node:
        network.inject("n1", old)
        await wait_until(lambda: len(node.core.received) == 1)
        await node.runtime.submit("c", 1, Put("k", "v"), TIMEOUT_S)
    async with Node(members=("n1", "n2"), storage=disk, network=network) as again:
        network.inject("n1", old)  # an at-least-once redelivery after the restart
        await wait_until(lambda: again.runtime.rejected.get("duplicate") == 1)
        assert again.core.received == []


async def test_exactly_once_retry_of_the_same_seq() -> None:
    async with Node() as node:
        rt = node.runtime
        first = await rt.submit("c", 1, Append("k", "a"), TIMEOUT_S)
        again = await rt.submit("c", 1, Append("k", "a"), TIMEOUT_S)
        assert first == again
        assert rt.state_machine.read("k") == "a"
        reused = await rt.submit("c", 1, Append("k", "zzz"), TIMEOUT_S)  # same seq, other op: cached
        assert reused == first and rt.state_machine.read("k") == "a"


async def test_follower_refuses_with_leader_hint() -> None:
    network = MemoryNetwork(("n1", "n2"))
    async with Node(members=("n1", "n2"), node_id="n2", network=network) as node:
        assert not node.runtime.is_leader
        with pytest.raises(NotLeaderError) as refused:
            await node.runtime.submit("c", 1, Put("k", "v"), TIMEOUT_S)
        assert refused.value.leader_hint == "n1"
        with pytest.raises(NotLeaderError):
            await node.runtime.read("k", TIMEOUT_S)


async def test_pending_proposals_are_bounded() -> None:
    config = RuntimeConfig(tick_interval_s=0.005, max_pending_proposals=2)
    async with Node(config=config) as node:
        rt = node.runtime
        first = asyncio.ensure_future(rt.submit("a", 1, Put("k", "1"), TIMEOUT_S))
        second = asyncio.ensure_future(rt.submit("b", 1, Put("k", "2"), TIMEOUT_S))
        await asyncio.sleep(0)  # let both register (no waiting on time)
        with pytest.raises(OverloadedError, match="max_pending_proposals=2"):
            await rt.submit("c", 1, Put("k", "3"), TIMEOUT_S)
        assert (await first).ok and (await second).ok
        assert (await rt.submit("c", 1, Put("k", "3"), TIMEOUT_S)).ok


async def test_read_through_the_log_when_the_core_has_no_read_index() -> None:
    async with Node(make_core=no_read_index_core) as node:
        rt = node.runtime
        await rt.submit("c", 1, Put("k", "v"), TIMEOUT_S)
        values = await asyncio.gather(*(rt.read("k", TIMEOUT_S) for _ in range(5)))
        assert values == ["v"] * 5
        assert rt.state_machine.applied_index == 6  # the reads went through the log


async def test_compaction_snapshots_and_restart_restores() -> None:
    disk = MemoryStorage()
    config = RuntimeConfig(tick_interval_s=0.005, snapshot_every_entries=5)
    async with Node(config=config, storage=disk) as node:
        for seq in range(1, 13):
            assert (await node.runtime.submit("c", seq, Append("k", str(seq % 10)), TIMEOUT_S)).ok
        assert node.core.compactions == [5, 10]
        stored = disk.stored_state().durable
        assert stored.snapshot is not None and stored.snapshot.index == 10
        assert [e.index for e in stored.entries] == [11, 12]
    async with Node(config=config, storage=disk) as again:
        await wait_until(lambda: again.runtime.state_machine.applied_index == 12)
        assert again.runtime.state_machine.read("k") == "123456789012"
        # The session survived in the snapshot: a retry of seq 12 is not applied again.
        assert (await again.runtime.submit("c", 12, Append("k", "2"), TIMEOUT_S)).ok
        assert again.runtime.state_machine.read("k") == "123456789012"


async def test_ticks_follow_the_clock_and_catch_up_boundedly() -> None:
    config = RuntimeConfig(tick_interval_s=0.01, max_catchup_ticks=2)
    async with Node(config=config) as node:
        await wait_until(lambda: node.core.ticks >= 5)
        before = node.core.ticks
        time.sleep(0.3)  # a 300 ms stall of the whole event loop (30 ticks' worth)
        await asyncio.sleep(0)
        await wait_until(lambda: node.core.ticks > before)
        assert node.core.ticks - before <= 3  # not 30: a stall is not replayed as a burst


async def test_stop_fails_pending_and_rejects_new_requests() -> None:
    node = Node(members=("n1", "n2"), node_id="n1")
    await node.runtime.start()
    node.storage.hold_after_save = asyncio.Event()
    pending = asyncio.ensure_future(node.runtime.submit("c", 1, Put("k", "v"), TIMEOUT_S))
    await asyncio.wait_for(node.storage.saved.wait(), TIMEOUT_S)
    await node.runtime.stop()
    with pytest.raises(RuntimeStoppedError):
        await pending
    with pytest.raises(RuntimeStoppedError):
        await node.runtime.submit("c", 2, Get("k"), TIMEOUT_S)
    assert not node.runtime.running and node.runtime.leader_id is None


async def test_submit_times_out_when_nothing_commits() -> None:
    node = Node()
    await node.runtime.start()
    node.storage.hold_after_save = asyncio.Event()  # the disk hangs
    with pytest.raises(TimeoutError):
        await node.runtime.submit("c", 1, Put("k", "v"), 0.05)
    node.storage.hold_after_save.set()
    await node.runtime.stop()
