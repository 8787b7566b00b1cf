"""The contract every protocol core honours (after etcd's raft), and the data it exchanges with drivers.

A core is a plain, deterministic object. Three inputs drive it:

- `step(envelope)`: a message arrived from a peer;
- `tick()`: one unit of logical time passed (every timeout is counted in ticks; a driver maps ticks to
  seconds, the simulator to virtual time);
- `propose(data)` / `read_index(request_id)`: a client asked for something.

One output drains it: `ready()` returns a `Ready` (frozen data) of everything the core needs done, and
`advance(ready)` tells the core it was done. A core never does I/O, never reads a clock and draws
randomness only from the `random.Random` it was given, so one seed replays a whole run.

The order in which a driver must carry out a `Ready` is part of the contract; see `Ready`.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from dscore.core.envelope import Envelope
from dscore.core.ids import NodeId
from dscore.core.registry import message


class EntryKind(enum.IntEnum):
    #: a client command: `data` is an encoded state-machine command, applied by the driver
    NORMAL = 0
    #: an empty entry a new leader appends to commit its term; nothing to apply
    NOOP = 1
    #: a membership change; the core interprets it, the driver has nothing to apply
    CONFIG = 2


@message("log.entry")
@dataclass(frozen=True, slots=True)
class LogEntry:
    """One slot of a replicated log. `term` is the protocol's epoch (Raft term, Paxos ballot, PBFT view)."""

    index: int
    term: int
    kind: EntryKind
    data: bytes


@message("log.snapshot")
@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine image that replaces the log up to and including `index`.

    `config` is the protocol's membership as of `index` (opaque to drivers, encoded by the codec).
    """

    index: int
    term: int
    data: bytes
    config: object = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to send. The driver wraps it in an `Envelope` (ids, Lamport time, checksum)."""

    to: NodeId
    content: object


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read registered with `read_index(request_id)` may be served from the local state machine once
    the driver has applied every entry up to `index`."""

    request_id: int
    index: int


@dataclass(frozen=True, slots=True)
class DurableState:
    """What survives a crash: exactly what earlier `Ready`s asked to persist. Given to a core on restart."""

    hard_state: object | None = None
    snapshot: Snapshot | None = None
    entries: tuple[LogEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class Ready:
    """What a core needs done. Carry it out in this order, and only then call `advance(ready)`:

    1. persist, in one atomic write: `hard_state` (if not None, replaces the stored one); `snapshot` (if
       not None, replaces the stored one and drops stored entries with index <= snapshot.index, or every
       stored entry when `log_replaced`); `entries` (drop stored entries with index >= entries[0].index,
       then append);
    2. send `messages` (only after step 1 is durable: a vote or an acknowledgement must never promise
       what a crash could forget);
    3. if `snapshot` is newer than the state machine, restore the state machine from it; then apply
       `committed` entries in order (NORMAL ones only carry commands);
    4. release `read_states` whose index is applied, and fail `failed_reads`;
    5. commit the transport offsets of the inputs that produced this `Ready`.

    A crash anywhere in between loses nothing: what was not yet persisted was never announced, and
    inputs whose offsets were not committed are delivered again (cores are idempotent to duplicates).

    One exception to step 2's "only after": with `send_while_persisting` the core vouches that its
    messages promise nothing step 1 holds, so a driver may send them before or while it persists (never
    later than it would otherwise). A Raft leader's appends of its own new entries are such messages
    (Raft dissertation 10.2.1): the leader counts its own copy toward a commit only at `advance`, once
    it is durable, so a crash before the write completes loses an entry that nobody counted as stored
    there. A vote, a follower's acknowledgement, or anything sent in the Ready that changes the term or
    the vote is never such a message.
    """

    hard_state: object | None = None
    snapshot: Snapshot | None = None
    #: with `snapshot`: it replaces the whole log, so stored entries after it go too (a snapshot installed
    #: from a leader that the local log did not match, as etcd's storage does on ApplySnapshot); without
    #: it, entries after the snapshot are kept (local compaction, or a log that matched)
    log_replaced: bool = False
    entries: tuple[LogEntry, ...] = ()
    messages: tuple[Outgoing, ...] = ()
    committed: tuple[LogEntry, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    failed_reads: tuple[int, ...] = ()
    #: the core vouches that `messages` may go before or while step 1 is persisted (see above)
    send_while_persisting: bool = False

    @property
    def must_persist(self) -> bool:
        return self.hard_state is not None or self.snapshot is not None or bool(self.entries)

    def __bool__(self) -> bool:
        return bool(
            self.must_persist or self.messages or self.committed or self.read_states or self.failed_reads
        )


EMPTY_READY = Ready()


class ProtocolCore(Protocol):
    """The shape drivers (`dscore.runtime`, `dscore.sim`) rely on. Roles are a per-protocol Enum."""

    @property
    def node_id(self) -> NodeId: ...

    @property
    def leader_id(self) -> NodeId | None:
        """Who this node believes leads now, if anyone (for redirects and metrics)."""
        ...

    @property
    def role(self) -> enum.Enum: ...

    def step(self, envelope: Envelope) -> None:
        """Handle one message. Invalid or stale messages are ignored (and counted), never raised."""
        ...

    def tick(self) -> None: ...

    def propose(self, data: bytes) -> int:
        """Append a command; returns its log index. Raises `NotLeaderError` if this node cannot."""
        ...

    def read_index(self, request_id: int) -> None:
        """Register a linearizable read. Raises `NotLeaderError` if this node cannot serve it, and
        `NotImplementedError` if the protocol has no read index at all (drivers then read through the
        log, proposing a get like any other command)."""
        ...

    def has_ready(self) -> bool: ...

    def ready(self) -> Ready: ...

    def advance(self, ready: Ready) -> None: ...


@runtime_checkable
class Compactable(Protocol):
    """A core that can drop its log prefix once the state machine image at `index` is kept instead."""

    def compact(self, index: int, data: bytes) -> None: ...


@runtime_checkable
class KeepsTime(Protocol):
    """A core that measures real time in ticks for safety, not only for timeouts (Raft's read lease).

    A driver that stalled (GC, CPU starvation) and will not replay every tick it missed must report the
    ones it drops, before it steps anything that arrived meanwhile; the core then moves its clock on
    without firing timeouts. (The runtime replays at most `max_catchup_ticks`; the simulator's `pause`
    fault does the same.)"""

    def skip_ticks(self, count: int) -> None: ...


@runtime_checkable
class HasMembership(Protocol):
    """A core with a configuration that can change at run time (e.g. `RaftNode`): its current voters and
    learners, as of the latest configuration entry in its log. Drivers take the list of acceptable senders
    from it."""

    @property
    def voters(self) -> tuple[NodeId, ...]: ...

    @property
    def learners(self) -> tuple[NodeId, ...]: ...


@runtime_checkable
class Reconfigurable(HasMembership, Protocol):
    """A core that changes its configuration one server at a time through its log (e.g. `RaftNode`).

    Each method appends the change on the leader and returns the index of its log entry; it raises
    `NotLeaderError` on a follower and another `LocalError` when the change is refused (another change not
    committed yet, the node is already a member, ...).
    """

    def add_voter(self, node: NodeId) -> int: ...

    def add_learner(self, node: NodeId) -> int: ...

    def remove_voter(self, node: NodeId) -> int: ...

    def remove_learner(self, node: NodeId) -> int: ...

    def promote_learner(self, node: NodeId) -> int: ...


@runtime_checkable
class Checkpointing(Protocol):
    """A core that needs the state machine's image at exact log indexes (PBFT's checkpoints): it stops
    handing out committed entries at `checkpoint_due` until the driver, having applied everything up to
    it, calls `compact(checkpoint_due, image)`."""

    @property
    def checkpoint_due(self) -> int: ...

    def compact(self, index: int, data: bytes) -> None: ...


@runtime_checkable
class RepliesFromEveryReplica(Protocol):
    """A core whose every replica answers clients (PBFT: a client trusts a result once f + 1 replicas sent
    it). Proposals carry who asked, `(reply address, request id)` per command, agreed with the request;
    after applying an entry, every replica answers those origins."""

    def propose_with_origins(self, data: bytes, origins: Sequence[tuple[str, int]]) -> int: ...

    def origins_of(self, index: int) -> tuple[tuple[str, int], ...]: ...


@dataclass(slots=True)
class Counters:
    """Per-core event counts a driver exports as metrics (labels from a small fixed set)."""

    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def apply_persist(durable: DurableState, ready: Ready) -> DurableState:
    """Step 1 of `Ready` applied to an in-memory image of stable storage (used by the simulator and the
    in-memory storage, and as the reference the Redis storage is tested against)."""
    if not ready.must_persist:
        return durable
    hard_state = ready.hard_state if ready.hard_state is not None else durable.hard_state
    snapshot = durable.snapshot
    entries = durable.entries
    # Stored entries ascend by index, so cut points are found by bisection, not by scanning the log.
    if ready.snapshot is not None and (snapshot is None or ready.snapshot.index > snapshot.index):
        snapshot = ready.snapshot
        if ready.log_replaced:
            entries = ()
        else:
            entries = entries[bisect.bisect_right(entries, snapshot.index, key=_entry_index) :]
    if ready.entries:
        first = ready.entries[0].index
        entries = entries[: bisect.bisect_left(entries, first, key=_entry_index)] + ready.entries
    return DurableState(hard_state=hard_state, snapshot=snapshot, entries=entries)


def _entry_index(entry: LogEntry) -> int:
    return entry.index
