"""The asyncio driver: feeds one protocol core from a `Transport` and persists to a `Storage`.

`NodeRuntime` is generic over `ProtocolCore` (Raft, Multi-Paxos, PBFT cores plug in through a
`CoreFactory`) and replicates a `KvStateMachine`. One loop task owns the core; nothing else calls it:

1. wait until an input arrives, a client asks for something, or the next tick is due;
2. feed the core in bulk: step every buffered inbound message (decoded here, so corrupt bytes are counted
   and dropped, never applied and never a crash), propose every buffered client command, register every
   buffered read, fire the ticks that are due;
3. drain `ready()` and carry each `Ready` out in the contract's order: persist (one atomic
   `Storage.save` that also carries the dedup marks and input positions) -> send -> restore a newer
   snapshot and apply committed entries -> resolve client futures and release reads -> `advance`;
   then commit the transport positions of the inputs consumed.

Batching is where the throughput comes from: many messages and proposals go into one `ready()`, one save
and one send, and clients wait on plain futures (no task per operation).

Ticks follow the event loop's clock. Missed ticks are caught up only `max_catchup_ticks` at a time: a
loop stall (GC, a slow save, CPU starvation on a shared machine) delays every node of a process alike,
and replaying all of its ticks at once would make followers time out on a leader that did nothing wrong.

`crash()` simulates kill -9: the tasks are cancelled where they stand and nothing is flushed; whatever
`Storage` holds is all that survives. `stop()` is the graceful variant.

Membership. The runtime accepts a message only from a node it knows: for a core that has a configuration
(`HasMembership`: Raft's voters and learners), the members of the core's *current* configuration plus the
nodes it was introduced to (`known_peers`, `introduce()`); for any other core, the static `members`.
Anything else is dropped as `unknown_sender`. The set is recomputed when the core's configuration changes
(checked once per loop turn), so `_accept` stays one set lookup. A node the configuration drops is
forgotten, so a removed server's messages are rejected once the removal reaches this node's log. On a
leader whose core is `Reconfigurable`, `add_member`, `remove_member` and `promote` propose one
single-server change and resolve once its log entry is committed (applied here); `EmbeddedCluster`
builds `add_node` / `remove_node` on them. See `NodeRuntime` for how a joining node is started.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import logging
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from dscore.core.codec import DEFAULT_MAX_ENVELOPE_BYTES, decode_envelope, encode_envelope
from dscore.core.dedup import DedupFilter
from dscore.core.envelope import EnvelopeFactory
from dscore.core.errors import ConfigError, DecodeError, LocalError, NotLeaderError
from dscore.core.ids import NodeId
from dscore.protocols.contract import DurableState, LogEntry, ProtocolCore, Ready
from dscore.runtime.errors import (
    LeadershipLostError,
    MembershipChangeRejectedError,
    OverloadedError,
    ReadFailedError,
    RuntimeStoppedError,
)
from dscore.statemachine.kv import Get, KvOp, KvResult, KvStateMachine, encode_command
from dscore.storage.base import DedupMark, Storage, WriteBatch
from dscore.transport.base import Delivery, OutboundFrame, Transport

log = logging.getLogger(__name__)

#: seconds per tick by default; see `dscore.settings` for why
DEFAULT_TICK_INTERVAL_S = 0.01

#: builds a core: (this node, the other members, injected randomness, what storage kept)
CoreFactory = Callable[[NodeId, tuple[NodeId, ...], random.Random, DurableState], ProtocolCore]


@runtime_checkable
class Compactable(Protocol):
    """A core that can drop its log prefix once the state machine image at `index` is kept instead."""

    def compact(self, index: int, data: bytes) -> None: ...


@runtime_checkable
class HasMembership(Protocol):
    """A core with a configuration that can change at run time (e.g. `RaftNode`): its current voters and
    learners, as of the latest configuration entry in its log. The runtime takes its list of acceptable
    senders from it."""

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


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """The runtime's knobs; `dscore.settings.NodeSettings` builds one from the environment."""

    #: seconds per core tick (every protocol timeout is counted in ticks)
    tick_interval_s: float = DEFAULT_TICK_INTERVAL_S
    #: at most this many overdue ticks fire at once after a stall; the rest are skipped
    max_catchup_ticks: int = 2
    #: hand the core a state-machine snapshot after this many applied entries (bounds the log)
    snapshot_every_entries: int = 10_000
    #: client commands proposed and not yet answered, per node
    max_pending_proposals: int = 10_000
    #: linearizable reads registered and not yet answered, per node
    max_pending_reads: int = 10_000
    #: inbound messages stepped per loop iteration before the core is drained
    max_inbound_batch: int = 4_096
    #: inbound messages received and not yet stepped; the reader stops receiving when full
    max_inbound_buffer: int = 16_384
    #: envelopes larger than this are rejected on receive (and not sent)
    max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES
    #: client sessions the state machine keeps (least recently used evicted)
    max_sessions: int = KvStateMachine.DEFAULT_MAX_SESSIONS

    def __post_init__(self) -> None:
        if not 0 < self.tick_interval_s <= 10:
            raise ConfigError(f"tick_interval_s must be in (0, 10], got {self.tick_interval_s}")
        for name in (
            "max_catchup_ticks",
            "snapshot_every_entries",
            "max_pending_proposals",
            "max_pending_reads",
            "max_inbound_batch",
            "max_inbound_buffer",
            "max_envelope_bytes",
            "max_sessions",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """A point-in-time view of one node, for displays and metrics."""

    node_id: NodeId
    running: bool
    role: str
    leader_id: NodeId | None
    term: int | None
    commit_index: int | None
    applied_index: int
    incarnation: int
    #: the configuration as this node sees it (the static members for cores without one)
    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"
    CRASHED = "crashed"
    FAILED = "failed"


class _Waker:
    """Lets the loop task sleep until a deadline or until someone has work for it (one waiter).

    The deadline timer is kept across waits while the deadline does not change (it is the next tick),
    so a busy loop does not arm and cancel a timer on every iteration.
    """

    __slots__ = ("_kicked", "_loop", "_timer", "_timer_at", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None
        self._kicked = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def kick(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        else:
            self._kicked = True

    def _fire(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_until(self, deadline: float) -> None:
        if self._kicked:
            self._kicked = False
            return
        if self._timer is None or self._timer_at != deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._fire)
            self._timer_at = deadline
        waiter = self._loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None
            self._kicked = False

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


_ClientKey = tuple[str, int]


class _PendingChange:
    """A membership change asked of this runtime: proposed by the loop task, settled when committed."""

    __slots__ = ("future", "index", "propose", "term", "what")

    def __init__(self, what: str, propose: Callable[[], int], future: asyncio.Future[int]) -> None:
        self.what = what
        self.propose = propose
        self.future = future
        #: the change's log index once proposed (0 before)
        self.index = 0
        #: the leader's term when it proposed (None if the core has no `term`)
        self.term: int | None = None


class NodeRuntime:
    """Drives one protocol core and one `KvStateMachine` replica. See the module docstring.

    `members` is the configuration the core is built from (the factory gets `members` without this node
    as its peers); for a Raft core, that is the cluster's bootstrap configuration, used only while the
    node's storage holds none. `known_peers` are further nodes to accept messages from before this node's
    configuration lists them (`introduce()` adds more later).

    Joining a running cluster (decided after etcd, where a new member is started with the current member
    list and `--initial-cluster-state=existing`): start the runtime with a *joining* core factory (for
    Raft, `RaftNode(join=True)`, e.g. `RaftCoreFactory.joining()`), `members` = the bootstrap
    configuration plus this node, and `known_peers` = the cluster's current members. Its core then has the
    bootstrap configuration without itself: it never campaigns, and it learns its real configuration from
    the leader's log or snapshot. Its runtime accepts the leader's AppendEntries and InstallSnapshot before
    that, because the leader is in `known_peers` (or in the bootstrap configuration). Starting a new node
    with itself in the configuration instead would let an empty-logged node count itself as a voter of a
    configuration that no one else has. The other running nodes must be told about the new one too
    (`introduce()`): a follower whose log lags behind the change would otherwise drop messages from a
    leader added after its log ends, and never catch up. Node ids are not reused after a removal (the
    removed id is forgotten by every node that applies the removal; as in etcd).
    """

    def __init__(
        self,
        node_id: NodeId,
        members: tuple[NodeId, ...],
        make_core: CoreFactory,
        transport: Transport,
        storage: Storage,
        *,
        config: RuntimeConfig | None = None,
        seed: int = 0,
        on_change: Callable[[NodeRuntime], None] | None = None,
        known_peers: Iterable[NodeId] = (),
    ) -> None:
        if node_id not in members:
            raise ConfigError(f"node {node_id!r} is not one of the members {members}")
        if len(set(members)) != len(members):
            raise ConfigError(f"duplicate member ids in {members}")
        self.node_id = node_id
        self.members = members
        self.peers = tuple(m for m in members if m != node_id)
        # Who may send to us (see the class docstring). `_senders` is what `_accept` looks up; it is
        # recomputed by `_refresh_senders` when the core's configuration changes or a node is introduced.
        self._introduced: set[NodeId] = {n for n in known_peers if n != node_id}
        self._senders: frozenset[NodeId] = frozenset(self.peers) | self._introduced
        self._membership_core: HasMembership | None = None
        self._config: frozenset[NodeId] = frozenset()
        self._seen_voters: tuple[NodeId, ...] = ()
        self._seen_learners: tuple[NodeId, ...] = ()
        self._change: _PendingChange | None = None
        self.config = config or RuntimeConfig()
        self._make_core = make_core
        self._transport = transport
        self._storage = storage
        self._seed = seed
        self._on_change = on_change
        self._state = _State.NEW
        # Set up in start(): they depend on what storage kept.
        self._core: ProtocolCore | None = None
        self._sm = KvStateMachine(self.config.max_sessions)
        self._factory: EnvelopeFactory | None = None
        self._dedup = DedupFilter()
        self.incarnation = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        self._waker: _Waker | None = None
        self._next_tick_at = 0.0
        # Inputs waiting for the loop task (all bounded).
        self._inbound: deque[Delivery] = deque()
        self._inbound_space = asyncio.Event()
        self._proposals: deque[tuple[bytes, asyncio.Future[KvResult]]] = deque()
        self._read_requests: deque[int] = deque()
        # Outstanding client requests.
        self._pending: dict[_ClientKey, asyncio.Future[KvResult]] = {}
        self._reads: dict[int, tuple[str, asyncio.Future[str | None]]] = {}
        self._reads_waiting_apply: list[tuple[int, int]] = []  # heap of (index, request_id)
        self._deadlines: list[tuple[float, int, asyncio.Future[Any]]] = []  # heap of request deadlines
        self._deadline_seq = 0
        self._next_read_id = 0
        self._fallback_reader: tuple[str, int] = ("", 0)  # (client id, last seq) for reads via the log
        self._read_index_supported = True
        # What the next save must carry besides the Ready's persist step.
        self._dirty_marks: dict[NodeId, DedupMark] = {}
        self._dirty_positions: dict[str, int] = {}
        self._positions: dict[str, int] = {}
        self._uncommitted_positions = False
        self._snapshot_index = 0
        self._last_seen: tuple[object, NodeId | None] = (None, None)
        #: inbound messages dropped before reaching the core, by reason (a `DecodeError.reason`,
        #: `misaddressed`, `unknown_sender`, `duplicate`); later `dscore_messages_rejected_total{reason}`
        self.rejected: dict[str, int] = {}
        #: outgoing messages not sent, by reason (`too_large`)
        self.send_dropped: dict[str, int] = {}
        self.messages_stepped = 0
        self.messages_sent = 0
        self.entries_applied = 0
        self.readies = 0
        self.saves = 0
        self.snapshots_taken = 0
        self.failure: BaseException | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load stored state, bump the incarnation (before any send), rebuild the core, start the loop."""
        if self._state is not _State.NEW:
            raise LocalError(f"runtime of {self.node_id} was already started (state {self._state.value})")
        loop = asyncio.get_running_loop()
        self._loop = loop
        stored = await self._storage.load()
        self.incarnation = await self._storage.bump_incarnation()
        self._factory = EnvelopeFactory(self.node_id, self.incarnation)
        self._dedup = DedupFilter(dict(stored.dedup_marks))
        self._positions = dict(stored.input_positions)
        durable = stored.durable
        if durable.snapshot is not None:
            self._sm.restore(durable.snapshot.data)
            self._snapshot_index = durable.snapshot.index
        rng = random.Random(f"{self._seed}/{self.node_id}/{self.incarnation}")
        core = self._make_core(self.node_id, self.peers, rng, durable)
        self._core = core
        self._read_index_supported = callable(getattr(core, "read_index", None))
        self._membership_core = core if isinstance(core, HasMembership) else None
        self._refresh_senders()
        self._fallback_reader = (f"_reads/{self.node_id}/{self.incarnation}/0", 0)
        await self._transport.start(MappingProxyType(dict(stored.input_positions)))
        self._waker = _Waker(loop)
        self._next_tick_at = loop.time() + self.config.tick_interval_s
        self._last_seen = (self._core.role, self._core.leader_id)
        self._state = _State.RUNNING
        self._loop_task = loop.create_task(self._run(), name=f"dscore-node-{self.node_id}")
        self._loop_task.add_done_callback(self._task_done)
        self._reader_task = loop.create_task(self._read_inbox(), name=f"dscore-reader-{self.node_id}")
        self._reader_task.add_done_callback(self._task_done)
        self._expiry_task = loop.create_task(self._expire_requests(), name=f"dscore-expiry-{self.node_id}")
        self._expiry_task.add_done_callback(self._task_done)

    async def stop(self) -> None:
        """Graceful stop: cancel the loop, wait for it, fail what is pending, close the transport."""
        if self._state is not _State.RUNNING:
            return
        self._state = _State.STOPPED
        tasks = [t for t in (self._loop_task, self._reader_task, self._expiry_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_everything(f"node {self.node_id} stopped")
        if self._waker is not None:
            self._waker.close()
        await self._transport.close()

    def crash(self) -> None:
        """kill -9: stop where we stand and flush nothing. Only what `Storage` holds survives."""
        if self._state is not _State.RUNNING:
            return
        self._state = _State.CRASHED
        for task in (self._loop_task, self._reader_task, self._expiry_task):
            if task is not None:
                task.cancel()
        self._fail_everything(f"node {self.node_id} crashed")
        if self._waker is not None:
            self._waker.close()
        self._inbound.clear()
        self._proposals.clear()
        self._read_requests.clear()

    @property
    def running(self) -> bool:
        return self._state is _State.RUNNING

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None or self._state is not _State.RUNNING:
            return
        log.error("node %s failed: %r", self.node_id, error, exc_info=error)
        self.failure = error
        self.crash()
        self._state = _State.FAILED

    # -- client API ---------------------------------------------------------------------------------

    @property
    def core(self) -> ProtocolCore:
        if self._core is None:
            raise LocalError(f"runtime of {self.node_id} is not started")
        return self._core

    @property
    def state_machine(self) -> KvStateMachine:
        return self._sm

    @property
    def leader_id(self) -> NodeId | None:
        return self._core.leader_id if self._core is not None and self.running else None

    @property
    def role(self) -> enum.Enum | None:
        return self._core.role if self._core is not None and self.running else None

    @property
    def is_leader(self) -> bool:
        return self.running and self._core is not None and self._core.leader_id == self.node_id

    @property
    def voters(self) -> tuple[NodeId, ...]:
        """The voters of this node's current configuration (the static `members` for a core without one)."""
        core = self._membership_core
        return core.voters if core is not None else self.members

    @property
    def learners(self) -> tuple[NodeId, ...]:
        core = self._membership_core
        return core.learners if core is not None else ()

    @property
    def accepted_senders(self) -> frozenset[NodeId]:
        """The nodes whose messages this runtime steps into its core now (others are `unknown_sender`)."""
        return self._senders

    def status(self) -> NodeStatus:
        core = self._core
        term = getattr(core, "term", None)
        commit = getattr(core, "commit_index", None)
        return NodeStatus(
            node_id=self.node_id,
            running=self.running,
            role=core.role.name.lower() if core is not None and self.running else "down",
            leader_id=self.leader_id,
            term=term if isinstance(term, int) else None,
            commit_index=commit if isinstance(commit, int) else None,
            applied_index=self._sm.applied_index,
            incarnation=self.incarnation,
            voters=self.voters,
            learners=self.learners,
        )

    async def submit(self, client_id: str, seq: int, op: KvOp, timeout_s: float) -> KvResult:
        """Propose `(client_id, seq, op)` and wait until it is applied here; return its result.

        Raises `NotLeaderError` (with `leader_hint`) or `OverloadedError` when nothing was proposed,
        `OutcomeUnknownError` or `TimeoutError` when the command may still take effect.
        """
        core = self._core
        if self._state is not _State.RUNNING or core is None:
            raise RuntimeStoppedError(f"node {self.node_id} is {self._state.value}")
        if core.leader_id != self.node_id:
            raise NotLeaderError(f"{self.node_id} is not the leader", core.leader_id)
        key = (client_id, seq)
        pending = self._pending
        if key in pending:
            raise LocalError(f"command {client_id}/{seq} is already pending on {self.node_id}")
        if len(pending) >= self.config.max_pending_proposals:
            raise OverloadedError(
                f"{self.node_id} has {len(pending)} proposals pending "
                f"(max_pending_proposals={self.config.max_pending_proposals})"
            )
        future = self._register_proposal(key, encode_command(client_id, seq, op), timeout_s)
        try:
            return await future
        finally:
            if pending.get(key) is future:
                del pending[key]

    def _register_proposal(self, key: _ClientKey, data: bytes, timeout_s: float) -> asyncio.Future[KvResult]:
        """Queue a command for the loop task (which proposes it with the rest of its batch)."""
        assert self._loop is not None and self._waker is not None
        future: asyncio.Future[KvResult] = self._loop.create_future()
        self._pending[key] = future
        self._proposals.append((data, future))
        self._deadline_seq += 1
        heapq.heappush(self._deadlines, (self._loop.time() + timeout_s, self._deadline_seq, future))
        self._waker.kick()
        return future

    # -- membership -------------------------------------------------------------------------------------

    async def add_member(self, node_id: NodeId, *, as_learner: bool = False, timeout_s: float) -> int:
        """Add `node_id` to the configuration as a voter (or a learner); return the change's log index once
        it is committed. Start the new node first (see the class docstring), and prefer adding a learner and
        promoting it once caught up: a voter with an empty log counts for the quorum at once.

        Raises `NotLeaderError` (with `leader_hint`) on a follower and `MembershipChangeRejectedError` when
        the core refuses the change or another change asked of this node is in progress: nothing was
        proposed. `LeadershipLostError`, `RuntimeStoppedError` or `TimeoutError`: the change may still take
        effect (check `voters` / `learners` on the next leader).
        """
        core = self._reconfigurable()
        if as_learner:
            return await self._change_membership(
                f"add learner {node_id}", lambda: core.add_learner(node_id), timeout_s
            )
        return await self._change_membership(
            f"add voter {node_id}", lambda: core.add_voter(node_id), timeout_s
        )

    async def remove_member(self, node_id: NodeId, *, timeout_s: float) -> int:
        """Remove voter or learner `node_id` (it may be this leader: the core then keeps leading until the
        removal is committed, and steps down right after). Resolves and raises like `add_member`."""
        core = self._reconfigurable()

        def propose() -> int:
            if node_id in core.learners:
                return core.remove_learner(node_id)
            return core.remove_voter(node_id)

        return await self._change_membership(f"remove {node_id}", propose, timeout_s)

    async def promote(self, node_id: NodeId, *, timeout_s: float) -> int:
        """Make learner `node_id` a voter. Resolves and raises like `add_member`."""
        core = self._reconfigurable()
        return await self._change_membership(
            f"promote {node_id}", lambda: core.promote_learner(node_id), timeout_s
        )

    def introduce(self, node_id: NodeId) -> None:
        """Accept messages from `node_id` from now on, even while this node's configuration does not list
        it (a node being added; see the class docstring). Forgotten again if a configuration drops it."""
        if node_id == self.node_id or node_id in self._introduced:
            return
        self._introduced.add(node_id)
        self._senders = self._senders | {node_id}

    async def barrier(self, timeout_s: float) -> None:
        """On the leader: wait until every entry its log holds now is committed and applied here (an
        internal no-op command goes through the log behind them). Raises like `read`."""
        self._check_running()
        if not self.is_leader:
            raise NotLeaderError(f"{self.node_id} is not the leader", self.leader_id)
        await self._read_through_log("", timeout_s)

    def _reconfigurable(self) -> Reconfigurable:
        self._check_running()
        core = self.core
        if not isinstance(core, Reconfigurable):
            raise MembershipChangeRejectedError(
                f"the protocol core of {self.node_id} ({type(core).__name__}) has no membership changes"
            )
        return core

    async def _change_membership(self, what: str, propose: Callable[[], int], timeout_s: float) -> int:
        core = self.core
        if core.leader_id != self.node_id:
            raise NotLeaderError(f"{self.node_id} is not the leader", core.leader_id)
        if self._change is not None:
            raise MembershipChangeRejectedError(
                f"cannot {what}: a membership change is already in progress on {self.node_id} "
                f"({self._change.what})"
            )
        assert self._loop is not None
        future: asyncio.Future[int] = self._loop.create_future()
        change = _PendingChange(what, propose, future)
        self._change = change  # the loop task proposes it with its next batch
        self._expire_after(future, timeout_s)
        self._kick()
        try:
            return await future
        finally:
            if self._change is change:
                self._change = None

    def _propose_change(self, core: ProtocolCore, change: _PendingChange) -> None:
        try:
            index = change.propose()
        except NotLeaderError as error:
            change.future.set_exception(error)
        except LocalError as error:
            rejected = MembershipChangeRejectedError(f"{self.node_id} refused to {change.what}: {error}")
            rejected.__cause__ = error
            change.future.set_exception(rejected)
        else:
            change.index = index
            term = getattr(core, "term", None)
            change.term = term if isinstance(term, int) else None

    def _settle_change(self, committed: tuple[LogEntry, ...]) -> None:
        """The pending change's entry is among (or before) `committed`: answer its caller."""
        change = self._change
        assert change is not None
        index = change.index
        if not index or change.future.done() or index > committed[-1].index:
            return
        if committed[0].index <= index:
            for entry in committed:
                if entry.index == index:
                    if change.term is None or entry.term == change.term:
                        change.future.set_result(index)
                        return
                    break
        # Another leader's entry took its place (or a snapshot covered it): whether the change happened is
        # for the current configuration to tell.
        change.future.set_exception(
            LeadershipLostError(
                f"{self.node_id}: the entry that was to {change.what} was replaced", self.leader_id
            )
        )

    def _refresh_senders(self) -> None:
        core = self._membership_core
        if core is None:
            base = frozenset(self.peers)
        else:
            voters = core.voters
            learners = core.learners
            self._seen_voters = voters
            self._seen_learners = learners
            base = frozenset(voters).union(learners)
            dropped = self._config - base
            if dropped:
                self._introduced -= dropped  # removed: only the configuration can bring it back
            self._config = base
        self._senders = (base | self._introduced) - {self.node_id}

    # -- reads --------------------------------------------------------------------------------------

    async def read(self, key: str, timeout_s: float) -> str | None:
        """A linearizable read of `key`: served locally once a read index confirmed leadership and the
        state machine caught up to it; through the log (a `Get` command) if the core has no read index.

        Raises `NotLeaderError`, `ReadFailedError`, `OverloadedError` or `TimeoutError`; a read has no
        effect, so every failure is safe to retry anywhere.
        """
        self._check_running()
        if not self.is_leader:
            raise NotLeaderError(f"{self.node_id} is not the leader", self.leader_id)
        if not self._read_index_supported:
            return await self._read_through_log(key, timeout_s)
        if len(self._reads) >= self.config.max_pending_reads:
            raise OverloadedError(
                f"{self.node_id} has {len(self._reads)} reads pending "
                f"(max_pending_reads={self.config.max_pending_reads})"
            )
        self._next_read_id += 1
        request_id = self._next_read_id
        assert self._loop is not None
        future: asyncio.Future[str | None] = self._loop.create_future()
        self._reads[request_id] = (key, future)
        self._read_requests.append(request_id)
        self._expire_after(future, timeout_s)
        self._kick()
        try:
            return await future
        finally:
            self._reads.pop(request_id, None)

    async def _read_through_log(self, key: str, timeout_s: float) -> str | None:
        # One internal session per incarnation, renewed if the log ever rejects its numbering (a lost
        # proposal leaves a gap that a later one cannot fill).
        client_id, seq = self._fallback_reader
        seq += 1
        self._fallback_reader = (client_id, seq)
        if len(self._pending) >= self.config.max_pending_proposals:
            raise OverloadedError(f"{self.node_id} has too many proposals pending to read through the log")
        pending_key = (client_id, seq)
        future = self._register_proposal(pending_key, encode_command(client_id, seq, Get(key)), timeout_s)
        try:
            result = await future
        finally:
            if self._pending.get(pending_key) is future:
                del self._pending[pending_key]
        if not result.ok:
            if self._fallback_reader[0] == client_id:
                generation = int(client_id.rsplit("/", 1)[1]) + 1
                self._fallback_reader = (f"_reads/{self.node_id}/{self.incarnation}/{generation}", 0)
            raise ReadFailedError(f"read through the log failed: {result.error}", self.leader_id)
        return result.value

    def _expire_after(self, future: asyncio.Future[Any], timeout_s: float) -> None:
        # One heap for every request instead of a timer each: a push now, a pop at expiry (or never, if
        # answered first; `_expire` compacts answered ones away).
        assert self._loop is not None
        self._deadline_seq += 1
        heapq.heappush(self._deadlines, (self._loop.time() + timeout_s, self._deadline_seq, future))

    def _expire(self) -> None:
        assert self._loop is not None
        deadlines = self._deadlines
        now = self._loop.time()
        while deadlines and deadlines[0][0] <= now:
            future = heapq.heappop(deadlines)[2]
            if not future.done():
                future.set_exception(TimeoutError(f"no answer from {self.node_id} in time"))
        if len(deadlines) > 2 * (len(self._pending) + len(self._reads)) + 4096:
            self._deadlines = [d for d in deadlines if not d[2].done()]
            heapq.heapify(self._deadlines)

    async def _expire_requests(self) -> None:
        """Times requests out even while the loop task waits on a slow save or send."""
        interval = self.config.tick_interval_s
        while True:
            await asyncio.sleep(interval)
            self._expire()

    def _check_running(self) -> None:
        if self._state is not _State.RUNNING:
            raise RuntimeStoppedError(f"node {self.node_id} is {self._state.value}")

    def _kick(self) -> None:
        if self._waker is not None:
            self._waker.kick()

    # -- the loop -----------------------------------------------------------------------------------

    async def _read_inbox(self) -> None:
        receive = self._transport.receive
        inbound = self._inbound
        bound = self.config.max_inbound_buffer
        batch_max = self.config.max_inbound_batch
        space = self._inbound_space
        while True:
            while len(inbound) >= bound:
                space.clear()
                await space.wait()
            batch = await receive(min(batch_max, bound - len(inbound)))
            inbound.extend(batch)
            self._kick()

    async def _run(self) -> None:
        core = self.core
        waker = self._waker
        members = self._membership_core
        assert waker is not None
        while True:
            await waker.wait_until(self._next_tick_at)
            # One identity check per turn (not per message): a new configuration comes with new tuples.
            if members is not None and (
                members.voters is not self._seen_voters or members.learners is not self._seen_learners
            ):
                self._refresh_senders()
            self._feed(core)
            while core.has_ready():
                ready = core.ready()
                await self._carry_out(ready)
                core.advance(ready)
                self._maybe_compact(core)
            self._notice_changes(core)
            if self._uncommitted_positions:
                self._uncommitted_positions = False
                await self._transport.commit(MappingProxyType(dict(self._positions)))

    def _feed(self, core: ProtocolCore) -> None:
        """Step inbound messages, propose commands, register reads, fire due ticks: all before one drain."""
        inbound = self._inbound
        count = min(len(inbound), self.config.max_inbound_batch)
        if count:
            accept = self._accept
            for _ in range(count):
                accept(core, inbound.popleft())
            if not self._inbound_space.is_set():
                self._inbound_space.set()
            if inbound:
                self._kick()  # more than one batch waiting: come back without sleeping
        proposals = self._proposals
        while proposals:
            data, future = proposals.popleft()
            if future.done():  # its caller timed out before we got to it
                continue
            try:
                core.propose(data)
            except NotLeaderError as error:
                future.set_exception(error)
        change = self._change
        if change is not None and not change.index and not change.future.done():
            self._propose_change(core, change)
        requests = self._read_requests
        while requests:
            request_id = requests.popleft()
            entry = self._reads.get(request_id)
            if entry is None or entry[1].done():
                continue
            try:
                core.read_index(request_id)
            except NotLeaderError as error:
                entry[1].set_exception(error)
            except NotImplementedError:
                self._read_index_supported = False
                entry[1].set_exception(ReadFailedError("this protocol has no read index; retry", None))
        assert self._loop is not None
        now = self._loop.time()
        if now >= self._next_tick_at:
            interval = self.config.tick_interval_s
            due = min(int((now - self._next_tick_at) / interval) + 1, self.config.max_catchup_ticks)
            for _ in range(due):
                core.tick()
            self._next_tick_at += due * interval
            if self._next_tick_at <= now:  # skip what catch-up may not replay
                self._next_tick_at = now + interval

    def _accept(self, core: ProtocolCore, delivery: Delivery) -> None:
        self._positions[delivery.channel] = delivery.offset
        self._dirty_positions[delivery.channel] = delivery.offset
        self._uncommitted_positions = True
        try:
            envelope = decode_envelope(delivery.data, self.config.max_envelope_bytes)
        except DecodeError as error:
            self._reject(error.reason)
            return
        if envelope.destination != self.node_id:
            self._reject("misaddressed")
            return
        sender = envelope.msg_id.sender
        if sender != envelope.source or sender not in self._senders:
            self._reject("unknown_sender")
            return
        if not self._dedup.accept(envelope.msg_id):
            self._reject("duplicate")
            return
        self._dirty_marks[sender] = self._dedup.marks[sender]
        assert self._factory is not None
        self._factory.observe(envelope)
        self.messages_stepped += 1
        core.step(envelope)

    def _reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    async def _carry_out(self, ready: Ready) -> None:
        """One `Ready`, in the contract's order (the caller advances the core afterwards)."""
        self.readies += 1
        # 1. persist: the protocol's state, the dedup marks and positions of what produced it, atomically
        if ready.must_persist:
            batch = WriteBatch.from_ready(ready, self._dirty_marks, self._dirty_positions)
            self._dirty_marks = {}
            self._dirty_positions = {}
            await self._storage.save(batch)
            self.saves += 1
        # 2. send, only once what the messages promise is durable
        if ready.messages:
            await self._send(ready)
        # 3. restore a newer snapshot, then apply committed entries
        sm = self._sm
        snapshot = ready.snapshot
        if snapshot is not None and snapshot.index > sm.applied_index:
            sm.restore(snapshot.data)
            self._snapshot_index = snapshot.index
        if ready.committed:
            self._apply(ready.committed)
        # 4. release reads whose index is applied; fail the ones the core gave up on
        if ready.read_states:
            waiting = self._reads_waiting_apply
            for state in ready.read_states:
                heapq.heappush(waiting, (state.index, state.request_id))
        if self._reads_waiting_apply:
            self._release_reads()
        for request_id in ready.failed_reads:
            entry = self._reads.get(request_id)
            if entry is not None and not entry[1].done():
                entry[1].set_exception(ReadFailedError("read index not confirmed", self.core.leader_id))

    async def _send(self, ready: Ready) -> None:
        factory = self._factory
        assert factory is not None
        limit = self.config.max_envelope_bytes
        frames = []
        for outgoing in ready.messages:
            data = encode_envelope(factory.wrap(outgoing.to, outgoing.content))
            if len(data) > limit:
                # The receiver would reject it; the protocol sees a lost message and retries smaller.
                self.send_dropped["too_large"] = self.send_dropped.get("too_large", 0) + 1
                continue
            frames.append(OutboundFrame(outgoing.to, data))
        self.messages_sent += len(frames)
        await self._transport.send(frames)

    def _apply(self, committed: tuple[LogEntry, ...]) -> None:
        sm = self._sm
        pending = self._pending
        applied = 0
        for entry in committed:
            if entry.index <= sm.applied_index:  # already in the restored snapshot
                continue
            result = sm.apply_entry(entry)
            applied += 1
            if result is not None and pending:
                future = pending.get((result.client_id, result.seq))
                if future is not None and not future.done():
                    future.set_result(result)
        self.entries_applied += applied
        if self._change is not None:
            self._settle_change(committed)

    def _release_reads(self) -> None:
        waiting = self._reads_waiting_apply
        applied = self._sm.applied_index
        reads = self._reads
        while waiting and waiting[0][0] <= applied:
            _, request_id = heapq.heappop(waiting)
            entry = reads.get(request_id)
            if entry is not None and not entry[1].done():
                entry[1].set_result(self._sm.read(entry[0]))

    def _maybe_compact(self, core: ProtocolCore) -> None:
        applied = self._sm.applied_index
        if applied - self._snapshot_index < self.config.snapshot_every_entries:
            return
        if not isinstance(core, Compactable):
            self._snapshot_index = applied  # nothing to compact into; do not retry every iteration
            return
        core.compact(applied, self._sm.snapshot())
        self._snapshot_index = applied
        self.snapshots_taken += 1

    def _notice_changes(self, core: ProtocolCore) -> None:
        seen = (core.role, core.leader_id)
        if seen == self._last_seen:
            return
        was_leader = self._last_seen[1] == self.node_id
        self._last_seen = seen
        if was_leader and seen[1] != self.node_id:
            # Pending commands may still commit under the next leader: their outcome is unknown here.
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(LeadershipLostError(f"{self.node_id} lost leadership", seen[1]))
            for _, future_read in self._reads.values():
                if not future_read.done():
                    future_read.set_exception(ReadFailedError(f"{self.node_id} lost leadership", seen[1]))
            self._reads_waiting_apply.clear()
            change = self._change
            if change is not None and not change.future.done():
                if change.index:
                    lost = LeadershipLostError(
                        f"{self.node_id} lost leadership during '{change.what}'", seen[1]
                    )
                    change.future.set_exception(lost)
                else:
                    change.future.set_exception(NotLeaderError(f"{self.node_id} is not the leader", seen[1]))
        if self._on_change is not None:
            self._on_change(self)

    def _fail_everything(self, reason: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RuntimeStoppedError(reason))
        for _, future_read in self._reads.values():
            if not future_read.done():
                future_read.set_exception(RuntimeStoppedError(reason))
        change = self._change
        if change is not None and not change.future.done():
            change.future.set_exception(RuntimeStoppedError(reason))
        self._reads_waiting_apply.clear()
        self._deadlines.clear()
        if self._on_change is not None:
            self._on_change(self)
