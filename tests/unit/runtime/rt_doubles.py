"""Test doubles for the runtime tests: a tiny but honest `ProtocolCore`, and recording wrappers.

`MiniLogCore` is a fixed-leader log (the smallest member leads, forever): `propose` appends, an entry is
committed as soon as the leader persisted it, and every Ready that persists entries also tells each peer
the new last index (`MiniNote`), so the Ready ordering has something to send. It honours the contract
(persist -> send -> apply -> reads; idempotent to duplicates; rebuilt from `DurableState`) and supports
`compact`. It is not a mock: the runtime cannot tell it from a real core.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from dscore.core.envelope import Envelope
from dscore.core.errors import NotLeaderError
from dscore.core.ids import NodeId
from dscore.core.registry import message
from dscore.protocols.contract import (
    DurableState,
    EntryKind,
    LogEntry,
    Outgoing,
    ReadState,
    Ready,
    Snapshot,
)
from dscore.runtime.client import KvClient
from dscore.storage.base import StoredState, WriteBatch
from dscore.storage.memory import MemoryStorage
from dscore.transport.base import Delivery, OutboundFrame, Transport


@message("test.runtime.note")
@dataclass(frozen=True, slots=True)
class MiniNote:
    last_index: int


class MiniRole(enum.Enum):
    LEADER = "leader"
    FOLLOWER = "follower"


class MiniLogCore:
    def __init__(
        self, node_id: NodeId, peers: Sequence[NodeId], rng: random.Random, durable: DurableState | None
    ) -> None:
        self._node_id = node_id
        self._peers = tuple(peers)
        #: who leads (the smallest member, unless a test deposes it)
        self.leader: NodeId = min((node_id, *peers))
        #: while True, nothing more commits (entries are persisted but not applied)
        self.commit_delay = False
        self.commit_index = 0
        self.rng = rng
        self.log: list[LogEntry] = []
        self.snapshot: Snapshot | None = None
        self.pending_snapshot: Snapshot | None = None
        self.stable_index = 0
        self.applied_index = 0
        self.reads: list[ReadState] = []
        self.ticks = 0
        #: ticks a stalled driver reported as skipped (`KeepsTime`)
        self.skipped = 0
        #: the core's clock (ticks + skipped) when each envelope was stepped
        self.clock_at_step: list[int] = []
        self.received: list[Envelope] = []
        self.compactions: list[int] = []
        if durable is not None:
            self.snapshot = durable.snapshot
            base = durable.snapshot.index if durable.snapshot else 0
            self.log = [e for e in durable.entries if e.index > base]
            self.stable_index = self.last_index
            self.applied_index = base
            self.commit_index = base

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    @property
    def leader_id(self) -> NodeId | None:
        return self.leader

    @property
    def role(self) -> MiniRole:
        return MiniRole.LEADER if self.leader == self._node_id else MiniRole.FOLLOWER

    @property
    def last_index(self) -> int:
        if self.log:
            return self.log[-1].index
        return self.snapshot.index if self.snapshot else 0

    def step(self, envelope: Envelope) -> None:
        self.received.append(envelope)
        self.clock_at_step.append(self.ticks + self.skipped)

    def tick(self) -> None:
        self.ticks += 1

    def skip_ticks(self, count: int) -> None:
        self.skipped += count

    def propose(self, data: bytes) -> int:
        if self.leader != self._node_id:
            raise NotLeaderError(f"{self._node_id} follows", leader_hint=self.leader)
        index = self.last_index + 1
        self.log.append(LogEntry(index, 1, EntryKind.NORMAL, data))
        return index

    def read_index(self, request_id: int) -> None:
        if self.leader != self._node_id:
            raise NotLeaderError(f"{self._node_id} follows", leader_hint=self.leader)
        self.reads.append(ReadState(request_id, self.last_index))

    def compact(self, index: int, data: bytes) -> None:
        self.compactions.append(index)
        self.pending_snapshot = Snapshot(index, 1, data)

    def replace_uncommitted(self, data: bytes) -> None:
        """Another leader's entries take the place of the uncommitted ones (persisted again)."""
        self.log = [
            e if e.index <= self.commit_index else LogEntry(e.index, 2, e.kind, data) for e in self.log
        ]
        self.stable_index = min(self.stable_index, self.commit_index)

    def _unstable(self) -> tuple[LogEntry, ...]:
        return tuple(e for e in self.log if e.index > self.stable_index)

    def _commit_to(self) -> int:
        # Committed once persisted, unless a test holds commits back.
        return self.commit_index if self.commit_delay else self.stable_index

    def has_ready(self) -> bool:
        return bool(
            self._unstable()
            or self.applied_index < min(self._commit_to(), self.last_index)
            or self.reads
            or self.pending_snapshot
        )

    def ready(self) -> Ready:
        entries = self._unstable()
        messages = tuple(Outgoing(p, MiniNote(entries[-1].index)) for p in self._peers) if entries else ()
        commit_to = self._commit_to()
        return Ready(
            hard_state=("last", self.last_index) if entries else None,
            snapshot=self.pending_snapshot,
            entries=entries,
            messages=messages,
            committed=tuple(e for e in self.log if self.applied_index < e.index <= commit_to),
            read_states=tuple(self.reads),
        )

    def advance(self, ready: Ready) -> None:
        if ready.entries:
            self.stable_index = max(self.stable_index, ready.entries[-1].index)
            if not self.commit_delay:
                self.commit_index = self.stable_index
        if ready.committed:
            self.applied_index = max(self.applied_index, ready.committed[-1].index)
        if ready.snapshot is not None and ready.snapshot is self.pending_snapshot:
            self.snapshot = ready.snapshot
            self.log = [e for e in self.log if e.index > ready.snapshot.index]
            self.pending_snapshot = None
        del self.reads[: len(ready.read_states)]


class EarlyMiniCore(MiniLogCore):
    """Vouches for its notes (`Ready.send_while_persisting`), as a Raft leader does for its appends: they
    may leave while the entries they announce are being saved."""

    def ready(self) -> Ready:
        ready = super().ready()
        return replace(ready, send_while_persisting=True) if ready.messages else ready


class FollowerMiniCore(MiniLogCore):
    """Follows n2 from the start (as if n2 had taken over)."""

    def __init__(
        self, node_id: NodeId, peers: Sequence[NodeId], rng: random.Random, durable: DurableState | None
    ) -> None:
        super().__init__(node_id, peers, rng, durable)
        self.leader = "n2"


class NoReadIndexCore(MiniLogCore):
    """The same log without a read index: the runtime must read through the log."""

    def read_index(self, request_id: int) -> None:
        raise NotImplementedError("no read index")


def mini_core(
    node_id: NodeId, peers: Sequence[NodeId], rng: random.Random, durable: DurableState
) -> MiniLogCore:
    return MiniLogCore(node_id, peers, rng, durable)


def early_mini_core(
    node_id: NodeId, peers: Sequence[NodeId], rng: random.Random, durable: DurableState
) -> MiniLogCore:
    return EarlyMiniCore(node_id, peers, rng, durable)


def follower_mini_core(
    node_id: NodeId, peers: Sequence[NodeId], rng: random.Random, durable: DurableState
) -> MiniLogCore:
    return FollowerMiniCore(node_id, peers, rng, durable)


def no_read_index_core(
    node_id: NodeId, peers: Sequence[NodeId], rng: random.Random, durable: DurableState
) -> MiniLogCore:
    return NoReadIndexCore(node_id, peers, rng, durable)


class RecordingStorage:
    """A MemoryStorage that logs each call into a shared event list, and can hold after a save."""

    def __init__(self, events: list[str], inner: MemoryStorage | None = None) -> None:
        self.inner = inner or MemoryStorage()
        self.events = events
        self.batches: list[WriteBatch] = []
        #: when set, `save` waits on it after the write is durable (to crash "between persist and send")
        self.hold_after_save: asyncio.Event | None = None
        self.saved = asyncio.Event()
        #: when set, `save` waits on it before the write is durable (a slow fsync; a crash loses the write)
        self.hold_before_save: asyncio.Event | None = None
        #: set when a save begins
        self.saving = asyncio.Event()

    async def load(self) -> StoredState:
        self.events.append("load")
        return await self.inner.load()

    async def save(self, batch: WriteBatch) -> None:
        self.saving.set()
        if self.hold_before_save is not None:
            await self.hold_before_save.wait()
        await self.inner.save(batch)
        self.batches.append(batch)
        self.events.append(f"save:{len(batch.entries)}")
        self.saved.set()
        if self.hold_after_save is not None:
            await self.hold_after_save.wait()

    async def bump_incarnation(self) -> int:
        self.events.append("bump")
        return await self.inner.bump_incarnation()


class RecordingTransport:
    """Wraps a transport and logs sends and commits into the shared event list."""

    def __init__(self, events: list[str], inner: Transport) -> None:
        self.inner = inner
        self.events = events
        self.sent: list[OutboundFrame] = []

    @property
    def node_id(self) -> NodeId:
        return self.inner.node_id

    async def start(self, resume_after: Mapping[str, int]) -> Mapping[str, int]:
        return await self.inner.start(resume_after)

    async def send(self, frames: Sequence[OutboundFrame]) -> None:
        self.sent.extend(frames)
        self.events.append(f"send:{len(frames)}")
        await self.inner.send(frames)

    async def receive(self, max_batch: int) -> list[Delivery]:
        return await self.inner.receive(max_batch)

    async def commit(self, positions: Mapping[str, int]) -> None:
        self.events.append("commit")
        await self.inner.commit(positions)

    async def close(self) -> None:
        await self.inner.close()


async def appender(client: KvClient, key: str, stop: asyncio.Event, acked: list[str]) -> None:
    """Append unique tokens to `key` until `stop`; `acked` collects those the cluster acknowledged (each
    must then appear exactly once in the final value)."""
    n = 0
    while not stop.is_set():
        n += 1
        token = f"{client.name}.{n};"
        if (await client.append(key, token)).ok:
            acked.append(token)
