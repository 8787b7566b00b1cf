"""NodeRuntime, the asyncio driver, on the memory transport and storage with a test-double core: the Ready
order on real I/O objects, the input-positions rule, crash safety and resuming after a restart, rejection of
bad input, ticks, stopping, and failing loudly. (The executor's logic is tested by hand in
test_executor.py; these tests are about the driver.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

import pytest
from rt_doubles import (
    MiniLogCore,
    MiniNote,
    RecordingStorage,
    RecordingTransport,
    early_mini_core,
    follower_mini_core,
    mini_core,
)

from dscore.core.client_messages import ClientRequest, Op, Outcome
from dscore.core.codec import decode_envelope, encode_envelope, frame
from dscore.core.envelope import Envelope, EnvelopeFactory
from dscore.core.ids import NodeId
from dscore.protocols.contract import DurableState
from dscore.replica.executor import ExecutorConfig
from dscore.runtime.client import ClientEndpoint, KvClient
from dscore.runtime.errors import RuntimeStoppedError
from dscore.runtime.node import CoreFactory, NodeRuntime, RuntimeConfig
from dscore.storage.base import WriteBatch
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

    async def client(self, name: str = "c") -> KvClient:
        endpoint = ClientEndpoint(self.network.add_client(name), lambda: (self.runtime.node_id,))
        await endpoint.start()
        self._endpoint = endpoint
        return KvClient(endpoint, name)


async def wait_until(predicate: object, timeout_s: float = TIMEOUT_S) -> None:
    """Poll a condition on every loop turn (never a fixed sleep), failing after `timeout_s`."""
    assert callable(predicate)
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.001)


def peer_marks(storage: MemoryStorage) -> dict[str, tuple[int, int]]:
    """The stored dedup marks of peers (without the storage epochs kept beside them)."""
    marks = storage.stored_state().dedup_marks
    return {k: v for k, v in marks.items() if not k.startswith("epoch/")}


def peer_note(factory: EnvelopeFactory, destination: str, last_index: int) -> bytes:
    return encode_envelope(factory.wrap(destination, MiniNote(last_index)))


async def test_a_client_writes_and_reads_over_the_transport() -> None:
    async with Node() as node:
        client = await node.client()
        assert (await client.put("k", "v")).ok
        mismatch = await client.cas("k", "x", "y")
        assert (mismatch.ok, mismatch.error, mismatch.value) == (False, "CAS_MISMATCH", "v")
        assert (await client.get("k")).value == "v"
        assert client.client_id == 1  # the registration's log index
        # the bump fences off an earlier process before the state is read (a save of its in between is
        # refused, not missed: tests/integration/test_redis_storage.py)
        assert node.events[:2] == ["bump", "load"] and node.runtime.incarnation == 1
        await client.endpoint.close()


async def test_protocol_messages_leave_only_after_the_save_they_announce() -> None:
    async with Node(members=("n1", "n2")) as node:
        rt = node.runtime
        seen_at_send: list[tuple[int, int, int]] = []
        original_send = node.transport.send

        async def checking_send(frames: Sequence[OutboundFrame]) -> None:
            for sent in frames:
                note = decode_envelope(sent.data).content
                if isinstance(note, MiniNote):  # what was durable and applied when it left
                    durable = node.storage.inner.stored_state().durable.entries
                    seen_at_send.append((note.last_index, durable[-1].index, rt.state_machine.applied_index))
            await original_send(frames)

        node.transport.send = checking_send  # type: ignore[method-assign]
        client = await node.client()
        for i in range(5):
            assert (await client.append("k", str(i))).ok
        assert seen_at_send
        for announced, durable_last, applied in seen_at_send:
            assert durable_last >= announced  # persisted before it was announced
            assert applied < announced  # applied only after the send


class CommitChecker(RecordingTransport):
    """Checks the positions rule at every commit: it names only positions already saved."""

    def __init__(self, events: list[str], inner: object, storage: RecordingStorage) -> None:
        super().__init__(events, inner)  # type: ignore[arg-type]
        self.storage = storage
        self.violations: list[str] = []

    async def commit(self, positions: Mapping[str, int]) -> None:
        stored = self.storage.inner.stored_state().input_positions
        for channel, position in positions.items():
            if stored.get(channel, -1) < position:
                self.violations.append(f"committed {channel}@{position} with {dict(stored)} saved")
        await super().commit(positions)


async def test_transport_positions_committed_after_the_save_they_belong_to() -> None:
    config = RuntimeConfig(
        tick_interval_s=0.005,
        executor=ExecutorConfig(
            positions_every_deliveries=2, positions_every_ticks=10_000, commit_every_ticks=1
        ),
    )
    node = Node(members=("n1", "n2"), config=config)
    checker = CommitChecker(node.events, node.transport.inner, node.storage)
    node.runtime._transport = checker  # the runtime's transport is the checking one
    async with node:
        peer = EnvelopeFactory("n2", 1)
        node.network.inject("n1", peer_note(peer, "n1", 1))  # persists nothing by itself
        await wait_until(lambda: node.core.received)
        for _ in range(3):  # give a premature commit every chance to happen
            ticks = node.core.ticks
            await wait_until(lambda ticks=ticks: node.core.ticks > ticks)  # type: ignore[misc]
        assert "commit" not in node.events
        node.network.inject("n1", peer_note(peer, "n1", 2))  # the second delivery makes a save due
        await wait_until(lambda: "commit" in node.events)
        assert checker.violations == []
        assert node.storage.inner.stored_state().input_positions == {"inbox/n1": 1}
        assert peer_marks(node.storage.inner) == {"n2": (1, 2)}


async def test_crash_after_persist_before_send_loses_nothing_and_the_restart_resumes() -> None:
    disk = MemoryStorage()
    network = MemoryNetwork(("n1", "n2"))
    node = Node(members=("n1", "n2"), storage=disk, network=network)
    await node.runtime.start()
    client = await node.client()
    assert (await client.put("warm", "up")).ok
    node.storage.hold_after_save = asyncio.Event()  # every save now stalls after it is durable
    node.storage.saved.clear()
    sent_before = len(node.transport.sent)
    pending = asyncio.ensure_future(client.append("k", "x"))
    await asyncio.wait_for(node.storage.saved.wait(), TIMEOUT_S)
    node.runtime.crash()  # kill -9 between step 1 (persist) and step 2 (send)
    assert len(node.transport.sent) == sent_before  # nothing was announced
    stored = disk.stored_state()
    assert stored.durable.entries[-1].index == 3  # register, put, and the append: durable
    # The restart resumes its inbox after the stored positions: the client's retry (same seq) and
    # everything sent while it was down reach it; the append is applied once.
    async with Node(members=("n1", "n2"), storage=disk, network=network) as again:
        assert again.runtime.incarnation == 2
        client.endpoint.nodes = lambda: ("n1",)
        result = await pending  # the client retried on its own after the attempt timed out
        assert result.ok
        await wait_until(lambda: again.runtime.state_machine.read("k") == "x")
        assert again.runtime.state_machine.read("k") == "x"
    await client.endpoint.close()


async def test_a_restart_seeks_past_the_stored_positions() -> None:
    disk = MemoryStorage()
    network = MemoryNetwork(("n1", "n2"))
    peer = EnvelopeFactory("n2", 1)
    config = RuntimeConfig(
        tick_interval_s=0.005, executor=ExecutorConfig(positions_every_deliveries=1, positions_every_ticks=1)
    )
    async with Node(members=("n1", "n2"), storage=disk, network=network, config=config):
        network.inject("n1", peer_note(peer, "n1", 1))
        await wait_until(lambda: disk.stored_state().input_positions.get("inbox/n1") == 0)
    network.inject("n1", peer_note(peer, "n1", 2))  # sent while n1 is down: kept in its inbox
    async with Node(members=("n1", "n2"), storage=disk, network=network, config=config) as again:
        await wait_until(lambda: len(again.core.received) == 1)
        assert [e.content for e in again.core.received] == [MiniNote(2)]  # not the one before the position
        assert again.runtime.rejected == {}


async def test_a_redelivery_after_a_restart_is_dropped_by_the_saved_marks() -> None:
    disk = MemoryStorage()
    network = MemoryNetwork(("n1", "n2"))
    peer = EnvelopeFactory("n2", 1)
    old = peer_note(peer, "n1", 1)
    config = RuntimeConfig(
        tick_interval_s=0.005, executor=ExecutorConfig(positions_every_deliveries=1, positions_every_ticks=1)
    )
    async with Node(members=("n1", "n2"), storage=disk, network=network, config=config):
        network.inject("n1", old)
        await wait_until(lambda: peer_marks(disk) == {"n2": (1, 1)})
    network.inject("n1", old)  # an at-least-once redelivery after the stored position
    async with Node(members=("n1", "n2"), storage=disk, network=network, config=config) as again:
        await wait_until(lambda: again.runtime.rejected.get("duplicate") == 1)
        assert again.core.received == []


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "malformed"),
        (b"\x01\x00\x00\x00\x00garbage", "checksum"),
        (frame(b"\xc1"), "malformed"),
        (b"\x01" + b"\x00" * 5_000, "too_large"),
    ],
)
async def test_bad_bytes_are_counted_and_dropped_and_the_node_keeps_serving(data: bytes, reason: str) -> None:
    config = RuntimeConfig(tick_interval_s=0.005, executor=ExecutorConfig(max_envelope_bytes=4_096))
    async with Node(members=("n1", "n2"), config=config) as node:
        assert node.network.inject("n1", data)
        await wait_until(lambda: node.runtime.rejected.get(reason) == 1)
        assert node.core.received == []
        client = await node.client()
        assert (await client.put("k", "v")).ok
        await client.endpoint.close()


async def test_ticks_follow_the_clock_and_catch_up_boundedly() -> None:
    config = RuntimeConfig(tick_interval_s=0.01, max_catchup_ticks=2)
    async with Node(config=config) as node:
        await wait_until(lambda: node.core.ticks >= 5)
        before = node.core.ticks
        time.sleep(0.3)  # a 300 ms stall of the whole event loop (30 ticks' worth), not a wait
        await asyncio.sleep(0)
        await wait_until(lambda: node.core.ticks > before)
        assert node.core.ticks - before <= 3  # not 30: a stall is not replayed as a burst


async def test_a_stall_is_counted_on_the_cores_clock_before_what_arrived_during_it_is_stepped() -> None:
    """The lease's clock: ticks a stall made the loop miss are reported as skipped (not replayed), and
    before the core steps a message that arrived during the stall (else a stalled Raft leader would serve
    lease reads with a clock 28 ticks slow)."""
    config = RuntimeConfig(tick_interval_s=0.01, max_catchup_ticks=2)
    async with Node(members=("n1", "n2"), config=config) as node:
        await wait_until(lambda: node.core.ticks >= 5)
        before = node.core.ticks + node.core.skipped
        peer = EnvelopeFactory("n2", 1)
        # Queued on the network now, read by the runtime only once the loop runs again.
        assert node.network.inject("n1", peer_note(peer, "n1", 1))
        time.sleep(0.3)  # a 300 ms stall of the whole event loop (at least 29 ticks' worth), not a wait
        await wait_until(lambda: len(node.core.received) == 1)
        assert node.core.ticks - before <= 3  # still no burst of replayed ticks
        assert node.runtime.executor.skipped_ticks >= 26
        assert node.core.clock_at_step[0] - before >= 29


async def test_stop_fails_local_requests_and_refuses_new_ones() -> None:
    node = Node(members=("n1", "n2"), node_id="n1")
    await node.runtime.start()
    node.storage.hold_after_save = asyncio.Event()
    pending = asyncio.ensure_future(node.runtime.request(ClientRequest(0, Op.REGISTER), TIMEOUT_S))
    await asyncio.wait_for(node.storage.saved.wait(), TIMEOUT_S)
    await node.runtime.stop()
    with pytest.raises(RuntimeStoppedError):
        await pending
    with pytest.raises(RuntimeStoppedError):
        await node.runtime.request(ClientRequest(0, Op.GET, "k"), TIMEOUT_S)
    assert not node.runtime.running and node.runtime.leader_id is None


class SwallowsOneCancellation(RecordingStorage):
    """A save that returns normally when cancelled, as redis-py's send could on Python 3.11 (its
    `asyncio.wait_for` loses a cancellation that lands as the send completes, CPython gh-86296)."""

    async def save(self, batch: WriteBatch) -> None:
        try:
            await super().save(batch)
        except asyncio.CancelledError:
            self.hold_after_save = None  # swallowed; later saves complete (as Redis would answer them)


async def test_stop_ends_a_loop_task_whose_cancellation_was_swallowed() -> None:
    node = Node(members=("n1", "n2"), node_id="n1")
    node.storage = SwallowsOneCancellation(node.events)
    node.runtime = NodeRuntime(
        "n1", ("n1", "n2"), mini_core, node.transport, node.storage, config=FAST, seed=7
    )
    await node.runtime.start()
    node.storage.hold_after_save = asyncio.Event()  # the save the stop lands in
    pending = asyncio.ensure_future(node.runtime.request(ClientRequest(0, Op.REGISTER), TIMEOUT_S))
    await asyncio.wait_for(node.storage.saved.wait(), TIMEOUT_S)
    await asyncio.wait_for(node.runtime.stop(), TIMEOUT_S)  # a bound on the event, not a pause
    assert not node.runtime.running
    assert pending.done()  # answered by the loop's last round, or failed by the stop
    assert node.storage.hold_after_save is None  # the stop did land in the save and was swallowed there


async def test_local_requests_time_out_when_nothing_commits() -> None:
    node = Node()
    await node.runtime.start()
    node.storage.hold_after_save = asyncio.Event()  # the disk hangs
    with pytest.raises(TimeoutError):
        await node.runtime.request(ClientRequest(0, Op.REGISTER), 0.05)
    node.storage.hold_after_save.set()
    await node.runtime.stop()


class Explodes(MiniLogCore):
    """A bug in a core: it raises on a message (cores never raise on bad input, so this is a bug)."""

    def step(self, envelope: Envelope) -> None:
        raise RuntimeError("boom")


def explodes(node_id: NodeId, peers: Sequence[NodeId], rng: object, durable: DurableState) -> MiniLogCore:
    return Explodes(node_id, peers, rng, durable)  # type: ignore[arg-type]


async def test_an_internal_error_fails_the_runtime_loudly() -> None:
    async with Node(members=("n1", "n2"), make_core=explodes) as node:
        node.network.inject("n1", peer_note(EnvelopeFactory("n2", 1), "n1", 1))
        error = await asyncio.wait_for(node.runtime.wait_failed(), TIMEOUT_S)
        assert isinstance(error, RuntimeError) and str(error) == "boom"
        assert node.runtime.state == "failed" and not node.runtime.running
        response = node.runtime.request(ClientRequest(0, Op.GET, "k"), TIMEOUT_S)
        with pytest.raises(RuntimeStoppedError, match="failed"):
            await response


def notes_sent(node: Node) -> list[int]:
    """The last indexes the node's notes announced, in the order they left."""
    notes = [decode_envelope(f.data).content for f in node.transport.sent]
    return [n.last_index for n in notes if isinstance(n, MiniNote)]


async def test_messages_the_core_vouches_for_leave_while_their_save_runs() -> None:
    """`Ready.send_while_persisting` (a Raft leader's appends): the runtime sends while it saves, so the
    followers' round trip overlaps the leader's own save; nothing is applied before the save is done."""
    async with Node(members=("n1", "n2"), make_core=early_mini_core) as node:
        rt = node.runtime
        client = await node.client()
        assert (await client.put("warm", "up")).ok
        node.storage.hold_before_save = hold = asyncio.Event()
        node.storage.saving.clear()
        pending = asyncio.ensure_future(client.append("k", "x"))
        await asyncio.wait_for(node.storage.saving.wait(), TIMEOUT_S)
        index = node.core.last_index
        await wait_until(lambda: index in notes_sent(node))  # left while the save is held
        assert node.storage.inner.stored_state().durable.entries[-1].index < index
        assert rt.state_machine.applied_index < index and not pending.done()
        hold.set()
        assert (await pending).ok
        assert node.storage.inner.stored_state().durable.entries[-1].index == index
        assert rt.state_machine.applied_index == index
        await client.endpoint.close()


async def test_a_client_request_replayed_after_a_restart_is_answered_unknown() -> None:
    """The node proposed a request and its note left while the write (with the request's input position)
    was in flight; a crash lost the write. The next incarnation reads the request again: were it to refuse
    it NOT_LEADER ("no effect"), a client could be told a write failed that the other nodes commit."""
    disk = MemoryStorage()
    network = MemoryNetwork(("n1", "n2"))
    node = Node(members=("n1", "n2"), storage=disk, network=network, make_core=early_mini_core)
    await node.runtime.start()
    client = await node.client()
    assert (await client.put("warm", "up")).ok
    node.storage.hold_before_save = asyncio.Event()  # never set: this write is lost
    node.storage.saving.clear()
    answer = client.endpoint.call(
        "n1", Op.APPEND, "k", value="x", client_id=client.client_id, seq=client.seq, timeout_s=TIMEOUT_S
    )
    await asyncio.wait_for(node.storage.saving.wait(), TIMEOUT_S)
    await wait_until(lambda: node.core.last_index in notes_sent(node))
    node.runtime.crash()
    assert disk.stored_state().durable.entries[-1].index < node.core.last_index
    async with Node(
        members=("n1", "n2"), storage=disk, network=network, make_core=follower_mini_core
    ) as again:
        response = await answer
        assert response is not None and response.outcome is Outcome.UNKNOWN, response
        assert "restarted" in (response.error or "")
        assert again.runtime.executor.replayed_requests == 1
        fresh = await client.endpoint.call("n1", Op.GET, "k", timeout_s=TIMEOUT_S)  # read after the start
        assert fresh is not None and fresh.outcome is Outcome.NOT_LEADER
    await client.endpoint.close()
