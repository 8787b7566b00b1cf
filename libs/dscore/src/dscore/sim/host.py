"""`SimNode`: hosts one protocol core in the simulator, the way `dscore.runtime` hosts it for real.

The host owns what a real process owns around a core: its durable image (the only thing a crash
keeps: the `DurableState` built by `apply_persist`, the incarnation number and the dedup marks), and its
volatile state (the core itself, the kv state machine, the requests it is serving).

For every input (a message, a tick, a client request) the host drains the core's `Ready`s in the
contract's order: persist, send (each message wrapped in an `Envelope` and encoded with the codec, so the
receiver really decodes bytes), restore a snapshot and apply committed entries, release reads, advance.
It refuses, as an `InvariantViolation`, to apply an entry out of order or before it is durable, because
either would break the contract for every protocol.

With the `flaky_leader` fault on, the host also tells the simulator about leader events (this node took
the lead, or committed while leading: `leader_id` is itself) after persisting a `Ready` and before sending
its messages, so that the nemesis can cut the node off before they leave.
"""

from __future__ import annotations

import random
from itertools import pairwise
from typing import TYPE_CHECKING, TypeVar

from dscore.core.codec import decode_envelope, encode_envelope
from dscore.core.dedup import DedupFilter
from dscore.core.envelope import Envelope, EnvelopeFactory
from dscore.core.errors import DecodeError, NotLeaderError
from dscore.core.ids import NodeId
from dscore.protocols.contract import DurableState, LogEntry, ProtocolCore, Ready, apply_persist
from dscore.sim.client import ClientReply, ClientRequest, ReplyStatus
from dscore.sim.invariants import AppliedEntry, InvariantViolation
from dscore.sim.protocols import ProtocolAdapter
from dscore.statemachine.kv import KvResult, KvStateMachine

if TYPE_CHECKING:
    from dscore.sim.simulator import Simulation

#: bound on client requests one node tracks at once; beyond it the oldest is forgotten (the client
#: retries), as a real server sheds load
MAX_PENDING_REQUESTS = 1024
#: bound on `Ready` rounds for one input: a core that never quiesces is livelocked
MAX_READY_ROUNDS = 1000

K = TypeVar("K")
V = TypeVar("V")


class SimNode:
    def __init__(self, sim: Simulation, index: int, node_id: NodeId, peers: tuple[NodeId, ...]) -> None:
        self.sim = sim
        self.index = index
        self.node_id = node_id
        self.peers = peers
        self.adapter: ProtocolAdapter = sim.adapter
        # Durable: survives crashes.
        self.durable = DurableState()
        self.incarnation = 0
        self.dedup_marks: dict[NodeId, tuple[int, int]] = {}
        # Volatile: lost on a crash.
        self.core: ProtocolCore | None = None
        self.state_machine = KvStateMachine()
        self.factory = EnvelopeFactory(node_id, 0)
        self.dedup: DedupFilter | None = None
        self.pending_commands: dict[tuple[str, int], tuple[str, int]] = {}
        self.pending_reads: dict[int, tuple[str, int, str]] = {}
        self.waiting_reads: list[tuple[int, int]] = []
        self.next_read_id = 0
        self.paused_until_us = 0
        #: the state-machine index of the last snapshot this incarnation handed to `compact`
        self.compacted_index = 0
        #: whether the core believed it led after the previous input (leader events, `flaky_leader`)
        self.was_leading = False

    @property
    def up(self) -> bool:
        return self.core is not None

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start a new incarnation from the durable image (first start or restart)."""
        self.incarnation += 1
        sim = self.sim
        rng = random.Random(f"{sim.seed}:node:{self.node_id}:{self.incarnation}")
        # None on a first start, as the factory contract says; afterwards the image, even if empty.
        durable = self.durable if self.incarnation > 1 else None
        self.core = sim.make_core(self.node_id, self.peers, rng, durable)
        self.state_machine = KvStateMachine()
        self.factory = EnvelopeFactory(self.node_id, self.incarnation)
        self.dedup = DedupFilter(self.dedup_marks) if sim.config.dedup else None
        self.pending_commands = {}
        self.pending_reads = {}
        self.waiting_reads = []
        self.paused_until_us = 0
        self.was_leading = False
        snapshot = self.durable.snapshot
        self.compacted_index = snapshot.index if snapshot is not None else 0
        self.drain()

    def crash(self) -> None:
        """Lose everything volatile; the durable image, incarnation and dedup marks stay."""
        self.core = None
        self.state_machine = KvStateMachine()
        self.pending_commands = {}
        self.pending_reads = {}
        self.waiting_reads = []
        self.dedup = None

    # -- inputs -------------------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        core = self.core
        assert core is not None
        try:
            envelope = decode_envelope(data)
        except DecodeError as error:
            self.sim.count(f"decode_{error.reason}")
            return
        if envelope.destination != self.node_id:
            self.sim.count("misaddressed")
            return
        if self.dedup is not None:
            if not self.dedup.accept(envelope.msg_id):
                self.sim.count("dedup_dropped")
                return
            # The marks are persisted with the protocol state: the simulator's input handling is
            # atomic, so storing them now is the same as storing them with this input's Ready.
            self.dedup_marks = dict(self.dedup.marks)
        self.factory.observe(envelope)
        content = envelope.content
        if isinstance(content, ClientRequest):
            self._on_request(envelope.source, content)
        else:
            core.step(envelope)
        self.drain()

    def tick(self) -> None:
        core = self.core
        assert core is not None
        core.tick()
        self.drain()

    def _on_request(self, client: str, request: ClientRequest) -> None:
        core = self.core
        assert core is not None
        try:
            if request.command is not None:
                core.propose(request.command)
                key = (request.client_id, request.seq)
                self.pending_commands.pop(key, None)
                _make_room(self.pending_commands)
                self.pending_commands[key] = (client, request.op_id)
            elif request.read_key is not None and self.adapter.supports_read_index:
                self.next_read_id += 1
                read_id = self.next_read_id
                _make_room(self.pending_reads)
                self.pending_reads[read_id] = (client, request.op_id, request.read_key)
                try:
                    core.read_index(read_id)
                except NotLeaderError:
                    del self.pending_reads[read_id]
                    raise
            else:
                self._reply(client, ClientReply(request.op_id, ReplyStatus.RETRY, error="unsupported"))
        except NotLeaderError as error:
            self._reply(
                client, ClientReply(request.op_id, ReplyStatus.NOT_LEADER, leader_hint=error.leader_hint)
            )

    # -- Ready --------------------------------------------------------------------------------------

    def drain(self) -> None:
        core = self.core
        assert core is not None
        for _ in range(MAX_READY_ROUNDS):
            if not core.has_ready():
                if self.sim.watch_leaders:
                    self.was_leading = core.leader_id == self.node_id
                return
            ready = core.ready()
            self._carry_out(ready)
            core.advance(ready)
            self._maybe_compact(core)
        raise InvariantViolation(
            f"{self.node_id} produced {MAX_READY_ROUNDS} Readys for one input (livelock)"
        )

    def _carry_out(self, ready: Ready) -> None:
        # 1. persist, atomically
        entries = ready.entries
        if any(b.index != a.index + 1 for a, b in pairwise(entries)):
            raise InvariantViolation(f"{self.node_id}'s Ready holds entries that are not consecutive")
        if ready.must_persist:
            self.durable = apply_persist(self.durable, ready)
        if self.sim.watch_leaders:
            self._watch_leader(ready)
        # 2. send, only now that the state that produced the messages is durable
        for outgoing in ready.messages:
            envelope = self.factory.wrap(outgoing.to, outgoing.content)
            self.sim.transmit(self.node_id, outgoing.to, encode_envelope(envelope), envelope)
        # 3. restore a newer snapshot, then apply committed entries in order
        machine = self.state_machine
        snapshot = ready.snapshot
        if snapshot is not None:
            self.compacted_index = max(self.compacted_index, snapshot.index)
            if snapshot.index > machine.applied_index:
                machine.restore(snapshot.data)
        for entry in ready.committed:
            self._apply(entry)
        # 4. release reads whose index is applied; fail the failed ones
        for state in ready.read_states:
            if state.request_id in self.pending_reads:
                if len(self.waiting_reads) >= MAX_PENDING_REQUESTS:
                    del self.waiting_reads[0]  # its client times out and retries
                self.waiting_reads.append((state.index, state.request_id))
        if self.waiting_reads:
            self._release_reads()
        for read_id in ready.failed_reads:
            waiting = self.pending_reads.pop(read_id, None)
            if waiting is not None:
                self._reply(waiting[0], ClientReply(waiting[1], ReplyStatus.RETRY, error="read_failed"))

    def _watch_leader(self, ready: Ready) -> None:
        """Report a leader event: the core took the lead, or committed entries while leading."""
        core = self.core
        leading = core is not None and core.leader_id == self.node_id
        if leading and (not self.was_leading or ready.committed):
            self.sim.leader_event(self, took_lead=not self.was_leading)
        self.was_leading = leading

    def _maybe_compact(self, core: ProtocolCore) -> None:
        """Snapshot the state machine every `snapshot_every_entries` applied entries, for cores that
        compact their log (called between `advance` and the next `ready`, as the contract requires)."""
        every = self.sim.config.snapshot_every_entries
        compact = getattr(core, "compact", None)
        if not every or compact is None:
            return
        machine = self.state_machine
        if machine.applied_index - self.compacted_index >= every:
            compact(machine.applied_index, machine.snapshot())
            self.compacted_index = machine.applied_index

    def _apply(self, entry: LogEntry) -> None:
        machine = self.state_machine
        if entry.index != machine.applied_index + 1:
            raise InvariantViolation(
                f"{self.node_id} was handed entry {entry.index} to apply with its state machine at "
                f"{machine.applied_index} (out of order, skipped or applied twice)"
            )
        if not self._is_durable(entry):
            raise InvariantViolation(f"{self.node_id} applied entry {entry.index} before persisting it")
        self.sim.new_applies.append(AppliedEntry(self.node_id, self.incarnation, entry))
        result = machine.apply_entry(entry)
        if result is not None:
            waiting = self.pending_commands.pop((result.client_id, result.seq), None)
            if waiting is not None:
                self._reply(waiting[0], _reply_for(waiting[1], result))

    def _is_durable(self, entry: LogEntry) -> bool:
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

    def _release_reads(self) -> None:
        applied = self.state_machine.applied_index
        still_waiting = []
        for index, read_id in self.waiting_reads:
            if index > applied:
                still_waiting.append((index, read_id))
                continue
            waiting = self.pending_reads.pop(read_id, None)
            if waiting is not None:
                client, op_id, key = waiting
                value = self.state_machine.read(key)
                self._reply(client, ClientReply(op_id, ReplyStatus.OK, value=value))
        self.waiting_reads = still_waiting

    def _reply(self, client: str, reply: ClientReply) -> None:
        envelope: Envelope = self.factory.wrap(client, reply)
        self.sim.transmit(self.node_id, client, encode_envelope(envelope), envelope)


def _make_room(table: dict[K, V]) -> None:
    if len(table) >= MAX_PENDING_REQUESTS:
        del table[next(iter(table))]  # the oldest; its client times out and retries


def _reply_for(op_id: int, result: KvResult) -> ClientReply:
    if result.ok:
        return ClientReply(op_id, ReplyStatus.OK, value=result.value)
    if result.error == "session_expired":
        # The session was evicted: an earlier copy may have taken effect, so the outcome is unknown.
        return ClientReply(op_id, ReplyStatus.UNKNOWN, error=result.error)
    # cas_mismatch (a definite answer), stale_seq and malformed: the command had no effect.
    return ClientReply(op_id, ReplyStatus.FAIL, value=result.value, error=result.error)
