"""A replicated log behind one fixed sequencer: the smallest log protocol the simulator can exercise.

The node with the smallest id is the *sequencer*. It alone orders commands: `propose(data)` appends the
command at the next index, and once that entry is durable the sequencer broadcasts
`Sequenced(index, data)` to every replica. An entry is committed as soon as the sequencer has persisted
it: the sequencer's durable log is the single source of truth and no one else ever writes an index.

Replicas persist and apply entries strictly in index order. An entry that arrives early is buffered (a
bounded window); a gap is repaired by asking the sequencer to retransmit (`Fetch(from_index)`, answered
with a bounded batch of `Entries`). The sequencer also broadcasts `Status(last_index)` every few ticks,
so a replica that lost every copy of the latest entries still learns it is behind.

Fault tolerance, and its limit:

- crash-restart: everything announced was persisted first (the `Ready` ordering), so a restarted node
  reloads its durable log, commits it again and catches up; the sequencer never re-uses an index it
  announced, because it announces only durable entries;
- omission, duplication, reordering: duplicates and stale entries are ignored (and counted), gaps are
  fetched again, early entries wait in the window;
- there is **no failover**. While the sequencer is down, or cut off, nothing new is ordered and replicas
  answer `NotLeaderError` pointing at it. Choosing a new sequencer safely needs agreement on who it is
  and on what the old one had ordered; that is consensus, which is exactly why Raft exists.

Reads: only the sequencer serves `read_index`, at its current last index. Every write a client has seen
acknowledged (by any node) was sequenced at or below that index, so serving the read once the state
machine has applied it is linearizable.

Followers do not forward proposals; they raise `NotLeaderError` with the sequencer as the hint, so
`propose` always returns the index it assigned, as the contract says.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass

from dscore.core.envelope import Envelope
from dscore.core.errors import ConfigError, LocalError, NotLeaderError
from dscore.core.ids import NodeId
from dscore.core.registry import message
from dscore.protocols.contract import (
    Counters,
    DurableState,
    EntryKind,
    LogEntry,
    Outgoing,
    ReadState,
    Ready,
)

#: the sequencer never changes, so the whole log lives in one epoch
EPOCH = 1


class SequencerRole(enum.Enum):
    SEQUENCER = "sequencer"
    REPLICA = "replica"


@message("seq.sequenced")
@dataclass(frozen=True, slots=True)
class Sequenced:
    """The sequencer's announcement that `data` is the durable entry at `index`."""

    index: int
    data: bytes


@message("seq.status")
@dataclass(frozen=True, slots=True)
class Status:
    """Heartbeat from the sequencer: its last durable index, so replicas can spot lost tails."""

    last_index: int


@message("seq.fetch")
@dataclass(frozen=True, slots=True)
class Fetch:
    """A replica asks for entries from `from_index` on (it has everything below)."""

    from_index: int


@message("seq.entries")
@dataclass(frozen=True, slots=True)
class Entries:
    """A retransmission: `data[k]` is the entry at `first_index + k`."""

    first_index: int
    data: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SequencerSettings:
    #: ticks between `Status` broadcasts from the sequencer
    heartbeat_ticks: int = 5
    #: ticks a replica waits before asking again for the same gap (plus up to as much jitter)
    fetch_retry_ticks: int = 8
    #: most entries in one `Entries` retransmission
    max_batch: int = 64
    #: how far ahead of its log a replica buffers early entries; later ones are dropped and re-fetched
    window: int = 256

    def __post_init__(self) -> None:
        for name in ("heartbeat_ticks", "fetch_retry_ticks", "max_batch", "window"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SequencerSettings.{name} must be at least 1")


class SequencerCore:
    """One node of the sequencer protocol; see the module docstring. Honours `ProtocolCore`."""

    def __init__(
        self,
        node_id: NodeId,
        peers: Sequence[NodeId],
        rng: random.Random,
        durable: DurableState | None = None,
        settings: SequencerSettings | None = None,
    ) -> None:
        self._node_id = node_id
        self._peers = tuple(sorted(p for p in set(peers) if p != node_id))
        self._peer_set = frozenset(self._peers)
        self._sequencer = min((node_id, *self._peers))
        self._rng = rng
        self.settings = settings or SequencerSettings()
        self.counters = Counters()
        # `_log[k]` is the entry at index k + 1; everything in it is committed once persisted.
        self._log: list[LogEntry] = []
        self._stable_index = 0  # last index handed to the driver to persist (and acknowledged)
        self._applied_index = 0  # last index handed to the driver to apply (and acknowledged)
        self._outbox: list[Outgoing] = []
        self._reads: list[ReadState] = []
        self._early: dict[int, bytes] = {}  # replica: entries above a gap, at most `window` of them
        self._known_last = 0  # replica: highest index it has heard the sequencer has
        self._ticks = 0
        self._fetch_due_tick = 0
        if durable is not None:
            self._load(durable)

    def _load(self, durable: DurableState) -> None:
        if durable.snapshot is not None:
            raise LocalError("the sequencer protocol does not take snapshots")
        for position, entry in enumerate(durable.entries, start=1):
            if entry.index != position:
                raise LocalError(f"durable log has entry {entry.index} at position {position}")
        self._log = list(durable.entries)
        self._stable_index = len(self._log)
        # Everything durable is committed: it is re-applied from the start after a restart.
        self._applied_index = 0
        self._known_last = len(self._log)

    # -- ProtocolCore -------------------------------------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    @property
    def leader_id(self) -> NodeId | None:
        return self._sequencer

    @property
    def role(self) -> SequencerRole:
        return SequencerRole.SEQUENCER if self.is_sequencer else SequencerRole.REPLICA

    @property
    def is_sequencer(self) -> bool:
        return self._node_id == self._sequencer

    @property
    def last_index(self) -> int:
        return len(self._log)

    def entry(self, index: int) -> LogEntry:
        return self._log[index - 1]

    def step(self, envelope: Envelope) -> None:
        source = envelope.source
        content = envelope.content
        if source not in self._peer_set:
            self.counters.drop("unknown_peer")
        elif isinstance(content, Fetch):
            if self.is_sequencer:
                self._on_fetch(source, content)
            else:
                self.counters.drop("misdirected")
        elif source != self._sequencer or self.is_sequencer:
            # Only the sequencer may announce entries; anything else is a bug or an impostor.
            self.counters.drop("not_from_sequencer")
        elif isinstance(content, Sequenced):
            self._on_entry(content.index, content.data)
            self._after_receive()
        elif isinstance(content, Entries):
            for offset, data in enumerate(content.data):
                self._on_entry(content.first_index + offset, data)
            self._after_receive()
        elif isinstance(content, Status):
            self._known_last = max(self._known_last, content.last_index)
            self._after_receive()
        else:
            self.counters.drop("unknown_kind")

    def tick(self) -> None:
        self._ticks += 1
        if self.is_sequencer:
            if self._ticks % self.settings.heartbeat_ticks == 0:
                status = Status(len(self._log))
                self._outbox.extend(Outgoing(peer, status) for peer in self._peers)
        elif self._known_last > len(self._log):
            self._maybe_fetch()

    def propose(self, data: bytes) -> int:
        if not self.is_sequencer:
            raise NotLeaderError(f"{self._node_id} is a replica", leader_hint=self._sequencer)
        index = len(self._log) + 1
        self._log.append(LogEntry(index, EPOCH, EntryKind.NORMAL, data))
        announcement = Sequenced(index, data)
        # Sent in the same Ready that persists the entry, so after it is durable (the Ready ordering).
        self._outbox.extend(Outgoing(peer, announcement) for peer in self._peers)
        return index

    def read_index(self, request_id: int) -> None:
        if not self.is_sequencer:
            raise NotLeaderError(f"{self._node_id} is a replica", leader_hint=self._sequencer)
        self._reads.append(ReadState(request_id, len(self._log)))

    def has_ready(self) -> bool:
        last = len(self._log)
        return bool(self._stable_index < last or self._applied_index < last or self._outbox or self._reads)

    def ready(self) -> Ready:
        return Ready(
            entries=tuple(self._log[self._stable_index :]),
            messages=tuple(self._outbox),
            committed=tuple(self._log[self._applied_index :]),
            read_states=tuple(self._reads),
        )

    def advance(self, ready: Ready) -> None:
        if ready.entries:
            self._stable_index = max(self._stable_index, ready.entries[-1].index)
        if ready.committed:
            self._applied_index = max(self._applied_index, ready.committed[-1].index)
        del self._outbox[: len(ready.messages)]
        del self._reads[: len(ready.read_states)]

    # -- replica side -------------------------------------------------------------------------------

    def _on_entry(self, index: int, data: bytes) -> None:
        last = len(self._log)
        if index < 1:
            self.counters.drop("bad_index")
            return
        self._known_last = max(self._known_last, index)
        if index <= last:
            # A duplicate or a retransmission we no longer need. Different bytes would mean the
            # sequencer re-used an index, which it never does; count it so tests can see it.
            self.counters.drop("duplicate" if self._log[index - 1].data == data else "conflict")
            return
        if index > last + self.settings.window:
            self.counters.drop("beyond_window")
            return
        if index > last + 1:
            self._early.setdefault(index, data)
            return
        self._append(data)
        while (following := self._early.pop(len(self._log) + 1, None)) is not None:
            self._append(following)

    def _append(self, data: bytes) -> None:
        self._log.append(LogEntry(len(self._log) + 1, EPOCH, EntryKind.NORMAL, data))

    def _after_receive(self) -> None:
        last = len(self._log)
        if self._early and min(self._early) <= last:
            self._early = {i: d for i, d in self._early.items() if i > last}
        if self._known_last > last:
            self._maybe_fetch()
        else:
            # Caught up: the next gap may be fetched at once.
            self._fetch_due_tick = self._ticks

    def _maybe_fetch(self) -> None:
        if self._ticks < self._fetch_due_tick:
            return
        self._outbox.append(Outgoing(self._sequencer, Fetch(len(self._log) + 1)))
        retry = self.settings.fetch_retry_ticks
        # Jitter keeps replicas that lost the same entries from asking in lockstep.
        self._fetch_due_tick = self._ticks + retry + self._rng.randrange(retry)

    # -- sequencer side -----------------------------------------------------------------------------

    def _on_fetch(self, source: NodeId, fetch: Fetch) -> None:
        first = fetch.from_index
        if first < 1 or first > len(self._log):
            self.counters.drop("nothing_to_fetch")
            return
        batch = self._log[first - 1 : first - 1 + self.settings.max_batch]
        self._outbox.append(Outgoing(source, Entries(first, tuple(e.data for e in batch))))
