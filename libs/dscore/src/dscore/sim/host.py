"""`SimNode`: hosts one replica in the simulator, driving the same `Executor` the runtime drives.

The host owns what a real process owns around a replica: its durable image (the only thing a crash keeps:
the `DurableState` built by `apply_persist`, the incarnation number, the dedup marks and input positions,
exactly what a `Storage` keeps) and its volatile state (the executor, its core and state machine). For
every input (a message, a tick) it feeds the executor and carries out each `Work` the way the runtime
does, with the simulated network instead of a transport and the durable image instead of a storage:
replies, then the write, then the messages, then `done`.

The state machine it hands the executor checks the `Ready` contract from outside: an entry applied out of
order, twice, or before it is durable on this node is an `InvariantViolation` (so an executor that applied
before it persisted is caught by the first seed where it matters), and every applied entry is reported to
the invariants.

With the `power_loss` fault on, a write may be lost in flight (the power fails during its fsync): the
node goes down before the write is durable and before its messages leave, while what it handed the network
before the write (its replies, and anything an executor wrongly put ahead of the write) has left.

With `replay_on_restart`, the host keeps what a node received after its stored input position (a transport's
retained inbox, outside the process) and hands it to the next incarnation before anything new, telling its
executor where the replay ends (`Executor.replay_ends`), as the runtime does with what `Transport.start`
returns.

A `Work` with `send_during_write` (a Raft leader's appends, which the runtime sends while it saves) is
carried out in the order that is worst for it: replies, messages, then the write. A kill at "messages" or a
power loss then lands after the appends left and before the leader's own copy is durable.

With the `flaky_leader` fault on, the host tells the simulator about leader events (this node took the
lead, or committed while leading) after persisting a `Work`'s write and before sending its messages, so
that the nemesis can cut the node off before they leave.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from typing import Protocol

from dscore.core.client_messages import ClientRequest
from dscore.core.envelope import Envelope
from dscore.core.ids import NodeId
from dscore.protocols.contract import DurableState, LogEntry, ProtocolCore, Ready, apply_persist
from dscore.replica.executor import Executor, ExecutorConfig, Work
from dscore.sim.adapter import CoreFactory
from dscore.sim.view import AppliedEntry, InvariantViolation
from dscore.statemachine.kv import KvResult, KvStateMachine
from dscore.storage.base import DedupMark, StoredState

#: bound on `Work` rounds for one input: a replica that never quiesces is livelocked
MAX_WORK_ROUNDS = 1000
#: the channel name of every node's simulated inbox (replayed after a restart only with `replay_on_restart`)
SIM_CHANNEL = "sim"
#: where a kill -9 can land inside one `Work`: after its replies left, after its write is durable, after
#: its messages left (before `done` applies anything; with `Work.send_during_write` they leave before the
#: write, so this lands before the write is durable)
CRASH_POINTS = ("replies", "write", "messages")
#: where a power loss lands: during the write's fsync (after the replies left, and the messages of a
#: `send_during_write` work; the write is lost)
POWER_LOSS_POINT = "fsync"


class CrashedMidWork(Exception):
    """Internal: the node was killed in the middle of carrying out a `Work`."""


class HostContext(Protocol):
    """What a host needs from the simulation around it."""

    @property
    def now_us(self) -> int: ...

    @property
    def watch_leaders(self) -> bool:
        """Whether to report leader events (the flaky-leader nemesis is on)."""
        ...

    def transmit(self, source: str, destination: str, data: bytes, envelope: Envelope | None) -> None: ...

    def leader_event(self, node_id: NodeId, *, took_lead: bool) -> None: ...

    @property
    def power_loss_on(self) -> bool:
        """Whether writes may be lost to a power loss (the `power_loss` fault is on, faults are active)."""
        ...

    def power_fails(self, node: SimNode) -> bool:
        """Whether the power fails while `node`'s write is in flight (drawn per write)."""
        ...

    def applied(self, entry: AppliedEntry) -> None: ...

    def crashed_mid_work(self, node: SimNode, point: str) -> None:
        """The node was killed at `point` of a `Work` (see `SimNode.crash_point`)."""
        ...


#: builds the executor of one incarnation (the simulator's planted bugs swap it)
ExecutorFactory = Callable[..., Executor]


class CheckedStateMachine:
    """The kv state machine, checking the `Ready` contract from outside the executor (see the module
    docstring)."""

    __slots__ = ("_host", "inner")

    def __init__(self, inner: KvStateMachine, host: SimNode) -> None:
        self.inner = inner
        self._host = host

    @property
    def applied_index(self) -> int:
        return self.inner.applied_index

    def command_for(self, request: ClientRequest) -> tuple[object, ...]:
        return self.inner.command_for(request)

    def encode_entry(self, commands: Sequence[tuple[object, ...]]) -> bytes:
        return self.inner.encode_entry(commands)

    def apply_entry(self, entry: LogEntry) -> Sequence[KvResult]:
        host = self._host
        if entry.index != self.inner.applied_index + 1:
            raise InvariantViolation(
                f"{host.node_id} was handed entry {entry.index} to apply with its state machine at "
                f"{self.inner.applied_index} (out of order, skipped or applied twice)"
            )
        if not host.is_durable(entry):
            raise InvariantViolation(f"{host.node_id} applied entry {entry.index} before persisting it")
        host.ctx.applied(AppliedEntry(host.node_id, host.incarnation, entry))
        return self.inner.apply_entry(entry)

    def read(self, key: str) -> str | None:
        return self.inner.read(key)

    def snapshot(self) -> bytes:
        return self.inner.snapshot()

    def restore(self, data: bytes) -> None:
        self.inner.restore(data)


class SimNode:
    def __init__(
        self,
        ctx: HostContext,
        index: int,
        node_id: NodeId,
        members: tuple[NodeId, ...],
        *,
        make_core: CoreFactory,
        make_rng: Callable[[str], random.Random],
        config: ExecutorConfig,
        max_sessions: int = KvStateMachine.DEFAULT_MAX_SESSIONS,
        replay_on_restart: bool = False,
        make_executor: ExecutorFactory = Executor,
        auth_key: bytes | None = None,
        cluster_settings: Mapping[str, str] | None = None,
    ) -> None:
        self.ctx = ctx
        self.index = index
        self.node_id = node_id
        self.members = members
        self.peers = tuple(m for m in members if m != node_id)
        self._make_core = make_core
        self._make_rng = make_rng
        self._config = config
        self._max_sessions = max_sessions
        self._make_executor = make_executor
        self._auth_key = auth_key
        self._cluster_settings = cluster_settings
        # Durable: survives crashes (what a Storage keeps).
        self.durable = DurableState()
        self.incarnation = 0
        self.dedup_marks: dict[NodeId, DedupMark] = {}
        self.positions: dict[str, int] = {}
        # Volatile: lost on a crash.
        self.executor: Executor | None = None
        self.state_machine = KvStateMachine(max_sessions)
        self.paused_until_us = 0
        #: ticks that fell due while paused (replayed or skipped when it resumes)
        self.missed_ticks = 0
        #: deliveries (source, bytes) that arrived while paused, in arrival order (read when it resumes)
        self.held: list[tuple[str, bytes]] = []
        self._next_offset = 0
        #: with `replay_on_restart`: (offset, bytes) of the inputs after the stored position, kept like a
        #: transport's inbox (outside the process) and handed to the next incarnation first; bounded by the
        #: executor's positions rule (`positions_every_deliveries`)
        self._retained: deque[tuple[int, bytes]] | None = deque() if replay_on_restart else None
        #: inputs handed again to a restarted incarnation, over every incarnation
        self.replayed = 0
        #: whether the core believed it led after the previous input (leader events, `flaky_leader`)
        self.was_leading = False
        #: inputs rejected by earlier incarnations' executors, by reason
        self._rejected_before: dict[str, int] = {}
        #: when set (one of `CRASH_POINTS`), the next `Work` this node carries out is cut there by a kill -9
        self.crash_point: str | None = None
        #: whether the node believed it led when it last crashed (failover figures, `dscore compare`)
        self.led_when_crashed = False

    @property
    def core(self) -> ProtocolCore | None:
        executor = self.executor
        return executor.core if executor is not None else None

    @property
    def up(self) -> bool:
        return self.executor is not None

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start a new incarnation from the durable image (first start or restart)."""
        self.incarnation += 1
        rng = self._make_rng(f"node:{self.node_id}:{self.incarnation}")
        # None on a first start, as the factory contract says; afterwards the image, even if empty.
        durable = self.durable if self.incarnation > 1 else None
        core = self._make_core(self.node_id, self.peers, rng, durable)
        self.state_machine = KvStateMachine(self._max_sessions)
        stored = StoredState(self.durable, self.incarnation, dict(self.dedup_marks), dict(self.positions))
        self.executor = self._make_executor(
            self.node_id,
            core,
            CheckedStateMachine(self.state_machine, self),
            members=self.members,
            stored=stored,
            incarnation=self.incarnation,
            config=self._config,
            auth_key=self._auth_key,
            cluster_settings=self._cluster_settings,
            storage_epoch=self._make_rng(f"storage-epoch:{self.node_id}").randrange(1, 1 << 63),
        )
        self.paused_until_us = 0
        self.missed_ticks = 0
        self.held = []
        self.was_leading = False
        self.drain()
        self._replay_retained()

    def _replay_retained(self) -> None:
        """What a transport hands a restarted node first: everything after its stored position."""
        retained = self._retained
        executor = self.executor
        if not retained or executor is None:  # nothing kept, or killed by its first work
            return
        executor.replay_ends = {SIM_CHANNEL: self._next_offset + 1}
        # every kept input is after the stored position: each write's positions trim what they cover
        for offset, data in list(retained):
            if self.executor is not executor:
                return  # killed while it caught up
            self.replayed += 1
            executor.receive(data, SIM_CHANNEL, offset)
            self.drain()

    def crash(self) -> None:
        """Lose everything volatile; the durable image, incarnation, marks and positions stay."""
        self._rejected_before = self.rejected()
        core = self.core
        self.led_when_crashed = core is not None and core.leader_id == self.node_id
        self.executor = None
        self.held = []  # what a stalled process had not read yet dies with it
        self.state_machine = KvStateMachine(self._max_sessions)

    def rejected(self) -> dict[str, int]:
        """Inputs this node's executors dropped before the core, by reason, over every incarnation."""
        total = dict(self._rejected_before)
        if self.executor is not None:
            for reason, count in self.executor.counters.rejected.items():
                total[reason] = total.get(reason, 0) + count
        return total

    # -- inputs -------------------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        executor = self.executor
        assert executor is not None
        self._next_offset += 1
        if self._retained is not None:
            self._retained.append((self._next_offset, data))
        executor.receive(data, SIM_CHANNEL, self._next_offset)
        self.drain()

    def tick(self) -> None:
        executor = self.executor
        assert executor is not None
        executor.tick()
        self.drain()

    def resume(self, replayed: int, skipped: int) -> None:
        """The end of a pause, as a runtime whose event loop stalled handles it: the ticks it will not
        replay are skipped and the core told (`skip_ticks`, for cores that keep time, such as Raft's
        lease), then `replayed` ticks, all before the deliveries that waited."""
        executor = self.executor
        assert executor is not None
        self.missed_ticks = 0
        executor.skip_ticks(skipped)
        for _ in range(replayed):
            executor.tick()
        self.drain()

    # -- carrying out work --------------------------------------------------------------------------

    def drain(self) -> None:
        executor = self.executor
        assert executor is not None
        ctx = self.ctx
        for _ in range(MAX_WORK_ROUNDS):
            work = executor.poll()
            if work is None:
                if ctx.watch_leaders:
                    self.was_leading = executor.is_leader
                return
            try:
                self._carry_out(executor, work)
            except CrashedMidWork:
                point = self.crash_point
                assert point is not None
                self.crash_point = None
                self.crash()
                ctx.crashed_mid_work(self, point)
                return
            executor.done(work)
        raise InvariantViolation(f"{self.node_id} produced {MAX_WORK_ROUNDS} works for one input (livelock)")

    def _carry_out(self, executor: Executor, work: Work) -> None:
        ctx = self.ctx
        node_id = self.node_id
        crash_point = self.crash_point
        for frame in work.replies:
            ctx.transmit(node_id, frame.destination, frame.data, frame.envelope)
        if crash_point == "replies":
            raise CrashedMidWork
        early = work.send_during_write
        if early:
            # The runtime sends these while it saves: here they leave first, so that a kill at
            # "messages" or a power loss lands after they left and before the write is durable.
            self._send_messages(executor, work)
        write = work.write
        if write is not None:
            if ctx.power_loss_on and ctx.power_fails(self):
                self.crash_point = POWER_LOSS_POINT  # the write never became durable
                raise CrashedMidWork
            entries = write.entries
            if any(b.index != a.index + 1 for a, b in pairwise(entries)):
                raise InvariantViolation(f"{node_id}'s write holds entries that are not consecutive")
            self.durable = apply_persist(self.durable, write.as_ready())
            marks = self.dedup_marks
            for sender, mark in write.dedup_marks.items():
                if mark > marks.get(sender, (0, 0)):
                    marks[sender] = mark
            self.positions.update(write.input_positions)
            retained = self._retained
            if retained:
                stored = self.positions.get(SIM_CHANNEL, 0)
                while retained and retained[0][0] <= stored:
                    retained.popleft()
        if crash_point == "write":
            raise CrashedMidWork
        if not early:
            self._send_messages(executor, work)

    def _send_messages(self, executor: Executor, work: Work) -> None:
        """A `Work`'s protocol messages leave (after the leader event, so a nemesis can cut them off)."""
        ctx = self.ctx
        if ctx.watch_leaders and work.ready is not None:
            self._watch_leader(executor, work.ready)
        node_id = self.node_id
        for frame in work.messages:
            ctx.transmit(node_id, frame.destination, frame.data, frame.envelope)
        if self.crash_point == "messages":
            raise CrashedMidWork

    def _watch_leader(self, executor: Executor, ready: Ready) -> None:
        """Report a leader event: the core took the lead, or committed entries while leading."""
        leading = executor.is_leader
        if leading and (not self.was_leading or ready.committed):
            self.ctx.leader_event(self.node_id, took_lead=not self.was_leading)
        self.was_leading = leading

    def is_durable(self, entry: LogEntry) -> bool:
        durable = self.durable
        entries = durable.entries
        if entries:
            position = entry.index - entries[0].index
            if 0 <= position < len(entries) and entries[position].index == entry.index:
                return entries[position] == entry
            for stored in entries:  # not contiguous: look it up the slow way
                if stored.index == entry.index:
                    return stored == entry
        return durable.snapshot is not None and durable.snapshot.index >= entry.index
