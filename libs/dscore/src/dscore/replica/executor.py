"""The executor: everything one replica does around its protocol core, with no I/O.

A replica is a protocol core (Raft, ...), a replicated state machine (kv) and this executor, which carries
out the core's `Ready`s and serves clients. It is synchronous and sans-I/O, after h11: bytes and ticks go
in, `Work` (a write to make durable, frames to send) comes out, and the driver reports back when the work
is done. Two drivers run it, and only their waiting differs:

- the asyncio runtime (`dscore.runtime.node.NodeRuntime`): a `Storage`, a `Transport`, real timers;
- the simulator's host (`dscore.sim.host.SimNode`): an in-memory durable image, a simulated network,
  virtual time.

So every simulator seed drives the code the services run: decoding and rejecting bad input, the sender
allowlist, duplicate suppression and its durable marks, input positions, client requests and sessions,
reads, membership settlement and log compaction.

Driving it::

    executor.receive(data, channel, offset)    # every delivery, in order per channel
    executor.tick()                            # every tick interval
    while (work := executor.poll()) is not None:
        send(work.replies)                     # may go at once: they announce only what is durable
        save(work.write)                       # one atomic write, if any; return once durable
        send(work.messages)                    # only after the write is durable (but see below)
        executor.done(work)                    # apply, answer clients, release reads, advance, compact
        if work.commit: transport.commit(work.commit)   # a hint; stored positions are the resume point

The order within one `Work` is the `Ready` contract (persist -> send -> apply -> release reads), and
`done` is where the apply happens, so a driver cannot apply before it persisted. A crash anywhere loses
nothing: what was not durable was never announced, and inputs after the stored positions are delivered
again (their duplicates are dropped by the durable high-water marks).

With `work.send_during_write` the messages may go before the write is durable: the driver sends them
while it saves (the runtime), or before the write (the simulator, which may then crash before the write).
Only a core's say-so sets it (`Ready.send_while_persisting`: a Raft leader's appends of its own log, whose
own copy the core counts only at `advance`). `done` still comes after both, and one `Work` at a time: the
next `poll` only once this write is durable. A crash between loses the write with the input positions
of the client requests behind the entries that left, so the next incarnation reads them again: it answers
each UNKNOWN, never NOT_LEADER (`replay_ends`, `_on_replayed_requests`), and the client's retry with the
same session and seq takes effect once (`dscore.statemachine.kv`).

Input positions (one rule). The positions stored with the protocol state are the only resume point: a
transport seeks past them on start. Positions go into the write of the next `Ready` that persists (the
effects of every input stepped before it are in that write or were volatile), and, when nothing persists
for a while, into a write of their own every `positions_every_deliveries` inputs or `positions_every_ticks`
ticks. `Work.commit` then hands the saved positions to the transport as a hint (Kafka's committed offsets,
for lag monitoring), at most every `commit_every_ticks`: on Kafka each commit is a round trip.

Authentication and agreement. With a cluster key, every frame in and out carries an HMAC-SHA256
(`dscore.core.codec`): anything unauthenticated is dropped as `unauthenticated`, whoever claims to send
it. With the cluster-wide settings' description, every envelope carries their fingerprint, and a peer
whose envelopes carry another one is refused (`settings_mismatch`) and told ours once
(`dscore.core.cluster.SettingsGate`); its own notice tells us which settings differ (a `PeerRefused`
event, which the driver logs).

Clients speak `dscore.core.client_messages`. Writes are batched: every command that arrives before the
next `poll` goes into one log entry (up to `max_commands_per_entry`), so consensus costs are paid per batch,
not per command. A pending batch is answered when its entry is applied (matched by index and data, so an
entry replaced by another leader's is answered `UNKNOWN`), with `UNKNOWN` when this node loses the lead or
after `request_timeout_ticks`, and `OVERLOADED` at once beyond `max_pending_proposals`.

Replies from every replica (PBFT). A Byzantine-tolerant client cannot trust one replica's answer, so with a
core that is `RepliesFromEveryReplica` the leader path above is not used: a command's batch is proposed
with its origins, `(reply address, request id)` per command, which the core orders together with the
commands (they are part of the request's digest); whichever replica executes the entry answers each
origin, and the client (`dscore.sim.client.SimClient`, `dscore.runtime.client.ClientEndpoint` with
`reply_quorum=f + 1`) accepts an answer once f + 1 replicas sent the same one. Nothing is pending on the
replica, so nothing is answered `UNKNOWN` or `NOT_LEADER`: an unanswered client retries (its session's
`seq` is PBFT's timestamp, so a request ordered twice takes effect once). A backup's core forwards the
request to the primary. With a `Checkpointing` core, the state image is handed to `compact` exactly at the
core's checkpoints instead of every `snapshot_every_entries`.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from dscore.core.client_messages import (
    ClientRequest,
    ClientRequests,
    ClientResponse,
    ClientResponses,
    Op,
    Outcome,
    ReadMode,
)
from dscore.core.cluster import IncarnationNotice, SettingsGate, SettingsNotice, StorageHello
from dscore.core.codec import DEFAULT_MAX_ENVELOPE_BYTES, check_key, decode_envelope, encode_envelope
from dscore.core.dedup import DedupFilter
from dscore.core.envelope import EnvelopeFactory
from dscore.core.errors import (
    ChangeRefusal,
    ConfigError,
    DecodeError,
    LocalError,
    NotLeaderError,
    SettingsMismatchError,
)
from dscore.core.ids import NodeId
from dscore.core.registry import constructor, kind_of_class
from dscore.protocols.contract import (
    Checkpointing,
    Compactable,
    HasMembership,
    KeepsTime,
    LogEntry,
    ProtocolCore,
    Ready,
    Reconfigurable,
    RepliesFromEveryReplica,
)
from dscore.statemachine.kv import BadCommandError, KvResult, StateMachine
from dscore.storage.base import DedupMark, StoredState, WriteBatch
from dscore.transport.base import OutboundFrame

#: the reply address of requests made in-process (`submit_local`): answered through `events`, not sent
LOCAL = ""
#: with a core whose every replica answers (PBFT), in-process requests travel as "@<node id>", so that only
#: the replica they were made on answers them through `events`
_LOCAL_PREFIX = "@"


@dataclass(frozen=True, slots=True)
class ExecutorConfig:
    #: hand the core a state-machine snapshot after this many applied entries (bounds the log)
    snapshot_every_entries: int = 10_000
    #: client commands proposed and not yet answered; beyond it new ones are answered OVERLOADED
    max_pending_proposals: int = 10_000
    #: linearizable reads registered and not yet answered; beyond it OVERLOADED
    max_pending_reads: int = 10_000
    #: client commands grouped into one log entry
    max_commands_per_entry: int = 1_024
    #: a proposed command not applied within this many ticks is answered UNKNOWN (bounds the table)
    request_timeout_ticks: int = 500
    #: envelopes larger than this are rejected on receive (and not sent)
    max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES
    #: save input positions (with the dedup marks) after this many inputs when nothing else persists
    positions_every_deliveries: int = 1_000
    #: ... or after this many ticks
    positions_every_ticks: int = 100
    #: hand saved positions to the transport (a hint) at most this often
    commit_every_ticks: int = 50
    #: drop duplicate envelopes by per-sender high-water marks (the simulator turns it off for some seeds,
    #: to show the cores tolerate duplicates by themselves)
    dedup: bool = True
    #: serve linearizable GETs through the log (a command like any other) even where the core has a read
    #: path (ReadIndex or lease); the simulator draws it per seed
    reads_through_log: bool = False

    def __post_init__(self) -> None:
        for name in (
            "snapshot_every_entries",
            "max_pending_proposals",
            "max_pending_reads",
            "max_commands_per_entry",
            "request_timeout_ticks",
            "max_envelope_bytes",
            "positions_every_deliveries",
            "positions_every_ticks",
            "commit_every_ticks",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass(slots=True)
class Work:
    """What the driver must do now, in this order (see the module docstring)."""

    #: responses to clients: they announce only what is durable and applied, so they may go at once
    replies: list[OutboundFrame]
    #: one atomic write (the Ready's persist step, dedup marks, input positions), or None
    write: WriteBatch | None
    #: protocol messages: send only once `write` is durable
    messages: list[OutboundFrame]
    #: the Ready this work carries out (None for a write of positions alone, or replies alone)
    ready: Ready | None = None
    #: after `done`: positions to hand the transport as a hint (`Transport.commit`), if due
    commit: Mapping[str, int] | None = None
    #: `messages` may go before `write` is durable, while it is saved: the core vouched for them
    #: (`Ready.send_while_persisting`, a Raft leader's appends of its own log)
    send_during_write: bool = False


# -- events: what the driver should know about (log, settle a future, fail) --------------------------


@dataclass(frozen=True, slots=True)
class ChangeSettled:
    """A membership change asked with `request_change` is settled: committed at `index`, or `error`."""

    token: int
    index: int = 0
    error: LocalError | None = None


@dataclass(frozen=True, slots=True)
class LocalResponse:
    """The answer to a `submit_local` request."""

    response: ClientResponse


@dataclass(frozen=True, slots=True)
class LeadershipChanged:
    leader_id: NodeId | None
    was_leader: bool


@dataclass(frozen=True, slots=True)
class PeerRefused:
    """A peer runs with other cluster-wide settings: its messages are refused until it agrees.
    `error` names each setting that differs (once per peer and fingerprint: log it)."""

    peer: NodeId
    error: SettingsMismatchError


@dataclass(frozen=True, slots=True)
class StorageWentBack:
    """A peer has seen this node at an incarnation above the one its storage gave it: the storage lost
    writes or was restored from an old copy. The node must stop (a driver fails it); going on, it could
    vote twice in a term it forgot. Restore the storage, or remove the node and add it under a new id."""

    peer: NodeId
    seen: int
    incarnation: int

    def describe(self) -> str:
        return (
            f"storage went back in time: {self.peer} has seen this node at incarnation {self.seen}, but its "
            f"storage started it at incarnation {self.incarnation}; it stops rather than risk voting twice "
            "in a term (restore its storage, or remove it from the cluster and add it under a new id)"
        )


Event = ChangeSettled | LocalResponse | LeadershipChanged | PeerRefused | StorageWentBack


class ChangeOutcomeUnknownError(LocalError):
    """The change may or may not take effect: its entry was replaced, or this node lost the lead."""

    def __init__(self, message: str, leader_hint: NodeId | None = None) -> None:
        super().__init__(message)
        self.leader_hint = leader_hint


class ChangeRejectedError(LocalError):
    """The change was refused before it was proposed (the message says why, `refusal` too when known);
    nothing happened."""

    def __init__(self, message: str, refusal: ChangeRefusal | None = None) -> None:
        super().__init__(message)
        self.refusal = refusal


# -- internals --------------------------------------------------------------------------------------

#: commit latencies kept until the driver drains them (beyond, they are not recorded)
MAX_COMMIT_LATENCIES = 10_000

#: builds a `ClientResponse` from all its fields, without the frozen dataclass's checks (hot path)
_new_response = constructor(ClientResponse)

#: stored-marks keys that hold storage epochs (ours, and the peers'): no node id contains a '/'
_EPOCH_PREFIX = "epoch/"


def _epoch_key(node: NodeId) -> str:
    return _EPOCH_PREFIX + node


def _epoch_mark(epoch: int) -> DedupMark:
    return (epoch >> 32, epoch & 0xFFFFFFFF)


_Waiter = tuple[str, int]  # (reply address, request id)


@dataclass(slots=True)
class _PendingEntry:
    data: bytes
    waiters: list[_Waiter]
    proposed_tick: int
    #: the driver's clock when it was proposed (`Executor.now_s`)
    proposed_s: float


@dataclass(slots=True)
class _PendingChange:
    token: int
    what: str
    propose: Callable[[Reconfigurable], int]
    index: int = 0
    term: int | None = None


@dataclass(slots=True)
class Counters:
    #: inbound messages dropped before reaching the core, by reason
    rejected: dict[str, int] = field(default_factory=dict)
    #: outgoing messages not sent, by reason
    send_dropped: dict[str, int] = field(default_factory=dict)
    #: client requests answered, by outcome
    by_outcome: dict[Outcome, int] = field(default_factory=dict)
    messages_stepped: int = 0
    messages_sent: int = 0
    entries_applied: int = 0
    commands_applied: int = 0
    readies: int = 0
    writes: int = 0
    snapshots_taken: int = 0
    #: times this node learned of a new leader (another node, or itself; not "none")
    leader_changes: int = 0
    #: log entries of client commands this node proposed as leader that were committed
    proposals_committed: int = 0
    #: ... that were not: `leader_lost`, `replaced` (another leader's entry took the index), `timeout`,
    #: `snapshot` (covered by an installed snapshot before it was seen applied)
    proposals_failed: dict[str, int] = field(default_factory=dict)
    #: messages stepped into the core and sent, by message class (`messages_in` / `messages_out` name them)
    in_by_type: dict[type, int] = field(default_factory=dict)
    out_by_type: dict[type, int] = field(default_factory=dict)

    @property
    def requests(self) -> dict[str, int]:
        """Client requests answered, by outcome name."""
        return {outcome.name: count for outcome, count in self.by_outcome.items()}

    @property
    def messages_in(self) -> dict[str, int]:
        return {kind_of_class(cls): count for cls, count in self.in_by_type.items()}

    @property
    def messages_out(self) -> dict[str, int]:
        return {kind_of_class(cls): count for cls, count in self.out_by_type.items()}

    def fail_proposal(self, reason: str) -> None:
        self.proposals_failed[reason] = self.proposals_failed.get(reason, 0) + 1


class Executor:
    """Carries out one replica's work; see the module docstring.

    `members` is the configuration the core was built from; for a core with a configuration of its own
    (`HasMembership`), the current configuration decides who may send, plus `known_peers` (nodes this
    one was introduced to: a joining node's leader, a node being added). Messages from anyone else are
    dropped as `unknown_sender`; client requests are accepted from any authenticated sender.
    """

    def __init__(
        self,
        node_id: NodeId,
        core: ProtocolCore,
        state_machine: StateMachine,
        *,
        members: Iterable[NodeId],
        stored: StoredState | None = None,
        incarnation: int = 1,
        config: ExecutorConfig | None = None,
        known_peers: Iterable[NodeId] = (),
        auth_key: bytes | None = None,
        cluster_settings: Mapping[str, str] | None = None,
        storage_epoch: int = 1,
    ) -> None:
        self.node_id = node_id
        self.core = core
        self.sm = state_machine
        self.config = config or ExecutorConfig()
        stored = stored or StoredState()
        self.incarnation = incarnation
        # Every frame in and out is authenticated with the cluster key (when there is one), and every
        # envelope carries the fingerprint of the cluster-wide settings: peers that disagree are refused.
        self._key = check_key(auth_key) if auth_key is not None else None
        self._gate = SettingsGate(cluster_settings) if cluster_settings is not None else None
        fingerprint = self._gate.fingerprint if self._gate is not None else 0
        self._factory = EnvelopeFactory(node_id, incarnation, fingerprint=fingerprint)
        #: peers refused for their settings, with the error that names the settings that differ
        self.refused_peers: dict[NodeId, SettingsMismatchError] = {}
        self._notices: list[OutboundFrame] = []
        #: per peer, the stale incarnation it was last told about (`IncarnationNotice`), so it is told once
        self._told_incarnation: dict[NodeId, int] = {}
        self._dedup = DedupFilter(dict(stored.dedup_marks)) if self.config.dedup else None
        self._positions: dict[str, int] = dict(stored.input_positions)
        self._dirty_positions: dict[str, int] = {}
        self._dirty_marks: dict[NodeId, DedupMark] = {}
        self._saved_positions: dict[str, int] = dict(stored.input_positions)
        self._committed_positions: dict[str, int] = dict(stored.input_positions)
        self._deliveries_unsaved = 0
        self._ticks_unsaved = 0
        self._ticks_since_commit = 0
        self.ticks = 0
        #: ticks a stalled driver reported as skipped (`skip_ticks`)
        self.skipped_ticks = 0
        snapshot = stored.durable.snapshot
        if snapshot is not None and snapshot.index > state_machine.applied_index:
            state_machine.restore(snapshot.data)
        self._snapshot_index = state_machine.applied_index
        # Who may send to us: `_senders` is what `receive` looks up; recomputed when the core's
        # configuration changes (checked once per `poll`) or a node is introduced.
        static = tuple(m for m in members if m != node_id)
        self._static_peers = frozenset(static)
        self._introduced: set[NodeId] = {n for n in known_peers if n != node_id}
        self._membership = core if isinstance(core, HasMembership) else None
        self._config_members: frozenset[NodeId] = frozenset()
        self._seen_voters: tuple[NodeId, ...] = ()
        self._seen_learners: tuple[NodeId, ...] = ()
        self._senders: frozenset[NodeId] = frozenset()
        self._refresh_senders()
        self._read_index_supported = not self.config.reads_through_log
        # PBFT: every replica answers what it executes (the client waits for f + 1 matching answers), and
        # the core wants the state image at its checkpoints. See the module docstring.
        self._local_origin = _LOCAL_PREFIX + node_id
        self._every_replica = core if isinstance(core, RepliesFromEveryReplica) else None
        self._checkpointing = core if isinstance(core, Checkpointing) else None
        #: per channel, where the inbox ended when this incarnation's transport started (what
        #: `Transport.start` returns; the driver sets it): deliveries below it are replayed, and an
        #: earlier incarnation may have proposed a client request among them (see `_on_replayed_requests`)
        self.replay_ends: Mapping[str, int] = {}
        #: client requests answered UNKNOWN because they were replayed after a restart
        self.replayed_requests = 0
        # Client work.
        self._batch: list[tuple[object, ...]] = []
        self._batch_waiters: list[_Waiter] = []
        self._registrations: list[_Waiter] = []
        self._pending: dict[int, _PendingEntry] = {}
        self._pending_count = 0
        self._reads: dict[int, tuple[str, int, str]] = {}
        self._reads_waiting: list[tuple[int, int]] = []  # heap of (index, read id)
        self._next_read_id = 0
        self._replies: dict[str, list[ClientResponse]] = {}
        self._change: _PendingChange | None = None
        self._next_change_token = 0
        #: local requests, handed to the core at the next poll (see `submit_local`)
        self._local: deque[Callable[[], None]] = deque()
        self._was_leader = core.leader_id == node_id
        self._last_leader: NodeId | None = core.leader_id
        self._last_known_leader: NodeId | None = core.leader_id  # the last leader seen; never back to None
        #: what the driver should know about; it drains this list
        self.events: list[Event] = []
        #: the driver's clock, in seconds, as of its latest input (time is an input here, like ticks): it
        #: stamps proposals, so that `commit_latencies_s` says how long each took to be applied
        self.now_s = 0.0
        #: proposal -> apply latencies of this node's committed entries, drained by the driver (bounded)
        self.commit_latencies_s: list[float] = []
        self.counters = Counters()
        # Storage epochs (see `StorageHello`): ours and the ones peers said hello with, kept in the stored
        # marks under keys no node id can have; peers that came back on another storage are refused.
        self._marks_extra: dict[str, DedupMark] = {
            k: v for k, v in stored.dedup_marks.items() if k.startswith(_EPOCH_PREFIX)
        }
        self._impostors: set[NodeId] = set()
        own = self._marks_extra.get(_epoch_key(node_id))
        if own is not None:
            self.storage_epoch = (own[0] << 32) | own[1]
        else:
            if not 0 < storage_epoch < 1 << 64:
                raise ConfigError("storage_epoch must be a non-zero unsigned 64-bit integer")
            self.storage_epoch = storage_epoch
            self._dirty_marks[_epoch_key(node_id)] = _epoch_mark(storage_epoch)
        # The hello goes out in the first Work, after the epoch it names is durable (a peer remembers it
        # for good: an epoch it heard but this storage never kept would lock this node out).
        self._hello: list[OutboundFrame] = self._hello_frames()

    # -- views --------------------------------------------------------------------------------------

    @property
    def leader_id(self) -> NodeId | None:
        return self.core.leader_id

    @property
    def is_leader(self) -> bool:
        return self.core.leader_id == self.node_id

    @property
    def voters(self) -> tuple[NodeId, ...]:
        core = self._membership
        return core.voters if core is not None else tuple(sorted((*self._static_peers, self.node_id)))

    @property
    def learners(self) -> tuple[NodeId, ...]:
        core = self._membership
        return core.learners if core is not None else ()

    @property
    def removed(self) -> tuple[NodeId, ...]:
        """The ids ever removed from the configuration (raft's `Membership.removed`; never reusable)."""
        membership = getattr(self._membership, "membership", None)
        removed = getattr(membership, "removed", ())
        return tuple(removed) if isinstance(removed, tuple) else ()

    @property
    def accepted_senders(self) -> frozenset[NodeId]:
        """The nodes whose protocol messages are stepped into the core now."""
        return self._senders

    @property
    def pending_requests(self) -> int:
        """Client commands and reads waiting for an answer."""
        return self._pending_count + len(self._batch_waiters) + len(self._registrations) + len(self._reads)

    # -- inputs -------------------------------------------------------------------------------------

    def receive(self, data: bytes, channel: str, offset: int) -> None:
        """One delivery from the transport (untrusted bytes). Never raises for bad input: it is counted
        in `counters.rejected` by reason and dropped."""
        self._positions[channel] = offset
        self._dirty_positions[channel] = offset
        self._deliveries_unsaved += 1
        try:
            envelope = decode_envelope(data, self.config.max_envelope_bytes, key=self._key)
        except DecodeError as error:
            self._reject(error.reason)
            return
        if envelope.destination != self.node_id:
            self._reject("misaddressed")
            return
        content = envelope.content
        sender = envelope.msg_id.sender
        if sender != envelope.source:
            self._reject("unknown_sender")
            return
        gate = self._gate
        if gate is not None:
            admission = gate.admit(envelope)
            if not admission.accept:
                self._reject("settings_mismatch")
                if admission.notice is not None and sender in self._senders:
                    self._send_notice(sender, admission.notice)
                return
            if type(content) is SettingsNotice:
                self._on_settings_notice(sender, content)
                return
        if type(content) is ClientRequests:
            # Any authenticated sender may be a client; sessions, not dedup marks, make retries safe.
            self._factory.observe(envelope)
            if offset < self.replay_ends.get(channel, 0) and self._every_replica is None:
                self._on_replayed_requests(sender, content.requests)
            else:
                self._on_client_requests(sender, content.requests)
            return
        if sender not in self._senders:
            self._reject("unknown_sender")
            return
        if isinstance(content, StorageHello):
            self._on_hello(sender, content)
            return
        if isinstance(content, IncarnationNotice):
            if content.seen > self.incarnation or content.epoch != self.storage_epoch:
                self.events.append(StorageWentBack(sender, content.seen, self.incarnation))
            return
        if sender in self._impostors:
            self._reject("stale_storage")
            return
        dedup = self._dedup
        if dedup is not None:
            if not dedup.accept(envelope.msg_id):
                self._reject("duplicate")
                mark = dedup.marks[sender]
                claimed = envelope.msg_id.incarnation
                if claimed < mark[0] and self._told_incarnation.get(sender) != claimed:
                    # An older incarnation of the sender: a stale redelivery, or its storage went back.
                    # Tell it (once per claimed incarnation); only the sender can tell which.
                    self._told_incarnation[sender] = claimed
                    self._send_notice(sender, IncarnationNotice(mark[0], self._peer_epoch(sender)))
                return
            self._dirty_marks[sender] = dedup.marks[sender]
        self._factory.observe(envelope)
        counters = self.counters
        counters.messages_stepped += 1
        by_type = counters.in_by_type
        kind = type(content)
        by_type[kind] = by_type.get(kind, 0) + 1
        self.core.step(envelope)

    def _on_hello(self, sender: NodeId, hello: StorageHello) -> None:
        """A peer says which storage it runs on (its first message of every incarnation)."""
        known = self._peer_epoch(sender)
        if known == 0:  # never heard of it: remember, durably, with the next write
            mark = _epoch_mark(hello.epoch)
            self._marks_extra[_epoch_key(sender)] = mark
            self._dirty_marks[_epoch_key(sender)] = mark
            return
        if known == hello.epoch:
            self._impostors.discard(sender)
            return
        # Another storage under a known id: wiped or replaced. Refuse it, and tell it why (once).
        self._reject("stale_storage")
        if sender not in self._impostors:
            self._impostors.add(sender)
            seen = self._dedup.marks.get(sender, (0, 0))[0] if self._dedup is not None else 0
            self._send_notice(sender, IncarnationNotice(seen, known))

    def _peer_epoch(self, peer: NodeId) -> int:
        mark = self._marks_extra.get(_epoch_key(peer))
        return (mark[0] << 32) | mark[1] if mark is not None else 0

    def _hello_frames(self) -> list[OutboundFrame]:
        hello = StorageHello(self.storage_epoch, self.incarnation)
        frames = []
        for peer in sorted(self._senders):
            envelope = self._factory.wrap(peer, hello)
            frames.append(OutboundFrame(peer, encode_envelope(envelope, key=self._key), envelope))
        return frames

    def _send_notice(self, peer: NodeId, notice: SettingsNotice | IncarnationNotice | StorageHello) -> None:
        envelope = self._factory.wrap(peer, notice)
        self._notices.append(OutboundFrame(peer, encode_envelope(envelope, key=self._key), envelope))

    def _on_settings_notice(self, peer: NodeId, notice: SettingsNotice) -> None:
        assert self._gate is not None
        error = self._gate.on_notice(peer, notice)
        if error is None:
            self.refused_peers.pop(peer, None)
        elif peer not in self.refused_peers or self.refused_peers[peer].differences != error.differences:
            self.refused_peers[peer] = error
            self.events.append(PeerRefused(peer, error))

    def tick(self) -> None:
        self.ticks += 1
        self._ticks_unsaved += 1
        self._ticks_since_commit += 1
        self.core.tick()
        if self._pending:
            self._expire_requests()

    def skip_ticks(self, count: int) -> None:
        """`count` ticks passed while the driver stalled, and will not be replayed (see `KeepsTime`). The
        core is told if it keeps time; the executor's own tick counts (request expiry, position and
        commit batching) are not a safety clock and stay as they are. Call it before stepping what
        arrived during the stall."""
        if count < 0:
            raise LocalError(f"skip_ticks needs a count >= 0, got {count}")
        self.skipped_ticks += count
        core = self.core
        if count and isinstance(core, KeepsTime):
            core.skip_ticks(count)

    def introduce(self, node_id: NodeId) -> None:
        """Accept messages from `node_id` from now on, even while the configuration does not list it (a
        node being added). Forgotten again if a configuration drops it."""
        if node_id == self.node_id or node_id in self._introduced:
            return
        self._introduced.add(node_id)
        self._senders = self._senders | {node_id}

    def submit_local(self, request: ClientRequest) -> None:
        """A client request made in-process (no transport): answered by a `LocalResponse` event.

        Like every local request, it is only queued here and handed to the core by the next `poll`: a
        driver may call this while a `Work` is being carried out, between the core's `ready` and
        `advance`, when the core must not be touched."""
        self._local.append(lambda: self._on_client_requests(LOCAL, (request,)))

    def barrier(self, request_id: int) -> None:
        """On the leader: a no-op through the log behind every entry it holds now; the `LocalResponse`
        with `request_id` (OK) says they are all committed and applied here."""
        self._local.append(lambda: self._barrier(request_id))

    def _barrier(self, request_id: int) -> None:
        if self.core.leader_id != self.node_id:
            self._reply(
                LOCAL, ClientResponse(request_id, Outcome.NOT_LEADER, leader_hint=self.core.leader_id)
            )
            return
        self._batch.append(self.sm.command_for(ClientRequest(request_id, Op.GET)))
        self._batch_waiters.append((LOCAL, request_id))

    def hand_over(self) -> NodeId | None:
        """On a leader that is about to stop: ask its core to transfer leadership to the voter whose log
        is the most up to date (Raft's TimeoutNow), at the next `poll`. Returns that voter, or None when
        this node does not lead or its protocol cannot transfer."""
        core = self.core
        transfer = getattr(core, "transfer_leadership", None)
        progress = getattr(core, "progress", None)
        if core.leader_id != self.node_id or transfer is None or progress is None:
            return None
        candidates = [v for v in self.voters if v != self.node_id]
        if not candidates:
            return None

        def match_index(voter: NodeId) -> int:
            state = progress(voter)
            return int(getattr(state, "match", 0)) if state is not None else 0

        target: NodeId = max(candidates, key=lambda v: (match_index(v), v))

        def start() -> None:
            if self.core.leader_id == self.node_id:
                transfer(target)

        self._local.append(start)
        return target

    def request_change(self, what: str, propose: Callable[[Reconfigurable], int]) -> int:
        """Ask the leader's core for one membership change (`propose(core)` returns its log index); the
        answer is a `ChangeSettled` event with the returned token. Raises `NotLeaderError` on a follower
        and `ChangeRejectedError` if the core has no membership changes or a change is in progress."""
        core = self.core
        if not isinstance(core, Reconfigurable):
            raise ChangeRejectedError(
                f"the protocol core ({type(core).__name__}) has no membership changes",
                ChangeRefusal.UNSUPPORTED,
            )
        if core.leader_id != self.node_id:
            raise NotLeaderError(f"{self.node_id} is not the leader", core.leader_id)
        if self._change is not None:
            raise ChangeRejectedError(
                f"cannot {what}: a membership change is already in progress ({self._change.what})",
                ChangeRefusal.CHANGE_IN_PROGRESS,
            )
        self._next_change_token += 1
        self._change = _PendingChange(self._next_change_token, what, propose)
        return self._next_change_token

    # -- output -------------------------------------------------------------------------------------

    def poll(self) -> Work | None:
        """The next work to carry out, or None when there is nothing to do."""
        core = self.core
        membership = self._membership
        # One identity check per poll, not per message: a new configuration comes with new tuples.
        if membership is not None and (
            membership.voters is not self._seen_voters or membership.learners is not self._seen_learners
        ):
            self._refresh_senders()
        self._notice_leadership()
        if self._hello:
            # First of all: make the storage epoch durable (a first start), then say hello. That write
            # holds the epoch alone: inputs already stepped have effects not yet persisted, so their
            # positions and marks wait for the write that carries those effects.
            hello = self._hello
            self._hello = []
            epoch = self._dirty_marks.pop(_epoch_key(self.node_id), None)
            write = (
                WriteBatch(dedup_marks=MappingProxyType({_epoch_key(self.node_id): epoch})) if epoch else None
            )
            return Work([], write, hello)
        while self._local:
            self._local.popleft()()
        self._flush_proposals()
        replies = self._take_replies() if self._replies else []
        if self._notices:
            replies.extend(self._notices)
            self._notices = []
        if core.has_ready():
            ready = core.ready()
            self.counters.readies += 1
            write = None
            if ready.must_persist or self._positions_due():
                write = self._write_for(ready)
            messages = self._frames_for(ready) if ready.messages else []
            return Work(
                replies,
                write,
                messages,
                ready,
                self._commit_due(write),
                ready.send_while_persisting and write is not None and bool(messages),
            )
        if self._dirty_positions and self._positions_due():
            write = self._write_for(None)
            return Work(replies, write, [], None, self._commit_due(write))
        commit = self._commit_due(None)
        if replies or commit is not None:
            return Work(replies, None, [], None, commit)
        return None

    def done(self, work: Work) -> None:
        """`work`'s write is durable and its frames were handed to the transport: finish it."""
        if work.write is not None:
            self.counters.writes += 1
            self._saved_positions.update(work.write.input_positions)
        if work.commit is not None:
            self._committed_positions.update(work.commit)
            self._ticks_since_commit = 0
        ready = work.ready
        if ready is None:
            return
        self._apply_ready(ready)
        self.core.advance(ready)
        self._maybe_compact()

    # -- client requests ----------------------------------------------------------------------------

    def _on_replayed_requests(self, source: str, requests: Iterable[ClientRequest]) -> None:
        """Client requests read again after a restart: each is answered UNKNOWN, never served or refused.

        An earlier incarnation may have proposed one of them and sent its entry out while the write
        that held it, and the request's input position, was still in flight (`Work.send_during_write`);
        the entry can then commit on the other nodes. A NOT_LEADER from this incarnation would tell the
        client "no effect", which may be false; UNKNOWN makes it retry with the same session and seq,
        which the state machine applies once."""
        for request in requests:
            self.replayed_requests += 1
            self._reply(
                source,
                ClientResponse(
                    request.request_id,
                    Outcome.UNKNOWN,
                    leader_hint=self.core.leader_id,
                    error=f"{self.node_id} restarted after it read this request: an earlier incarnation "
                    "may have proposed it; retry with the same session and seq",
                ),
            )

    def _on_client_requests(self, source: str, requests: Iterable[ClientRequest]) -> None:
        # Who may serve a request is the protocol's call: its `propose` and `read_index` raise
        # `NotLeaderError` (with a hint) where it cannot, and that is answered NOT_LEADER.
        command_for = self.sm.command_for
        batch = self._batch
        waiters = self._batch_waiters
        per_entry = self.config.max_commands_per_entry
        room = self.config.max_pending_proposals - self.pending_requests
        for request in requests:
            op = request.op
            if op is Op.GET:
                if request.read_mode is ReadMode.STALE:
                    self._reply(
                        source,
                        _new_response(
                            request.request_id, Outcome.OK, self.sm.read(request.key), None, 0, None
                        ),
                    )
                    continue
                if self._read_index_supported:
                    self._register_read(source, request)
                    continue
            if room <= 0:
                pending = self.pending_requests
                self._reply(
                    source,
                    ClientResponse(
                        request.request_id,
                        Outcome.OVERLOADED,
                        error=f"{self.node_id} has {pending} requests pending "
                        f"(max_pending_proposals={self.config.max_pending_proposals})",
                    ),
                )
                continue
            try:
                command = command_for(request)
            except BadCommandError as error:
                self._reply(source, ClientResponse(request.request_id, Outcome.BAD_REQUEST, error=str(error)))
                continue
            room -= 1
            if op is Op.REGISTER:
                # Alone in its entry: the entry's index becomes the client id.
                self._registrations.append((source, request.request_id))
                continue
            batch.append(command)
            waiters.append((source, request.request_id))
            if len(batch) >= per_entry:
                self._propose_batch()
                batch = self._batch
                waiters = self._batch_waiters

    def _register_read(self, source: str, request: ClientRequest) -> None:
        if len(self._reads) >= self.config.max_pending_reads:
            self._reply(
                source,
                ClientResponse(
                    request.request_id,
                    Outcome.OVERLOADED,
                    error=f"{self.node_id} has {len(self._reads)} reads pending "
                    f"(max_pending_reads={self.config.max_pending_reads})",
                ),
            )
            return
        self._next_read_id += 1
        read_id = self._next_read_id
        try:
            self.core.read_index(read_id)
        except NotLeaderError as error:
            self._reply(
                source,
                ClientResponse(request.request_id, Outcome.NOT_LEADER, leader_hint=error.leader_hint),
            )
            return
        except NotImplementedError:
            # No read path in this protocol: from now on reads go through the log like commands.
            self._read_index_supported = False
            self._on_client_requests(source, (request,))
            return
        self._reads[read_id] = (source, request.request_id, request.key)

    def _flush_proposals(self) -> None:
        if self._batch:
            self._propose_batch()
        if self._registrations:
            registrations = self._registrations
            self._registrations = []
            register = self.sm.encode_entry((self.sm.command_for(ClientRequest(0, Op.REGISTER)),))
            for waiter in registrations:
                self._propose(register, [waiter])
        change = self._change
        if change is not None and not change.index:
            self._propose_change(change)

    def _propose_batch(self) -> None:
        data = self.sm.encode_entry(self._batch)
        waiters = self._batch_waiters
        self._batch = []
        self._batch_waiters = []
        self._propose(data, waiters)

    def _propose(self, data: bytes, waiters: list[_Waiter]) -> None:
        every = self._every_replica
        if every is not None:
            # No pending entry: whichever replicas execute it answer the origins the request carries.
            local = self._local_origin
            every.propose_with_origins(data, [(local if s == LOCAL else s, r) for s, r in waiters])
            return
        try:
            index = self.core.propose(data)
        except NotLeaderError as error:
            for source, request_id in waiters:
                self._reply(
                    source,
                    ClientResponse(
                        request_id, Outcome.NOT_LEADER, leader_hint=error.leader_hint, error=str(error)
                    ),
                )
            return
        self._pending[index] = _PendingEntry(data, waiters, self.ticks, self.now_s)
        self._pending_count += len(waiters)

    def _answer_entry(self, entry: LogEntry, results: Sequence[KvResult]) -> None:
        pending = self._pending.pop(entry.index, None)
        if pending is None:
            return
        self._pending_count -= len(pending.waiters)
        if pending.data != entry.data:
            self.counters.fail_proposal("replaced")
            self._answer_unknown(pending, f"entry {entry.index} was replaced by another leader's")
            return
        self.counters.proposals_committed += 1
        latencies = self.commit_latencies_s
        if len(latencies) < MAX_COMMIT_LATENCIES:
            latencies.append(self.now_s - pending.proposed_s)
        reply = self._reply
        new = _new_response
        for (source, request_id), result in zip(pending.waiters, results, strict=True):
            reply(source, new(request_id, result.outcome, result.value, None, result.client_id, result.error))

    def _answer_origins(self, entry: LogEntry, results: Sequence[KvResult]) -> None:
        assert self._every_replica is not None
        origins = self._every_replica.origins_of(entry.index)
        if len(origins) != len(results):
            return  # executed without knowing who asked (caught up by state transfer): others answer
        local = self._local_origin
        new = _new_response
        # The reply names the primary of this replica's view (Castro and Liskov's REPLY carries the view),
        # so a client can send its next request there; clients never count it in the f + 1 match.
        primary = self.core.leader_id
        for (address, request_id), result in zip(origins, results, strict=True):
            if address.startswith(_LOCAL_PREFIX):
                if address != local:
                    continue  # another replica's in-process request: that replica answers it
                address = LOCAL
            self._reply(
                address,
                new(request_id, result.outcome, result.value, primary, result.client_id, result.error),
            )

    def _answer_unknown(self, pending: _PendingEntry, why: str) -> None:
        leader = self.core.leader_id
        for source, request_id in pending.waiters:
            self._reply(source, ClientResponse(request_id, Outcome.UNKNOWN, leader_hint=leader, error=why))

    def _expire_requests(self) -> None:
        deadline = self.ticks - self.config.request_timeout_ticks
        pending = self._pending
        expired = []
        for index, entry in pending.items():  # in proposal order
            if entry.proposed_tick > deadline:
                break
            expired.append(index)
        for index in expired:
            entry = pending.pop(index)
            self._pending_count -= len(entry.waiters)
            self.counters.fail_proposal("timeout")
            self._answer_unknown(entry, f"not committed within {self.config.request_timeout_ticks} ticks")

    def _reply(self, destination: str, response: ClientResponse) -> None:
        counts = self.counters.by_outcome
        outcome = response.outcome
        counts[outcome] = counts.get(outcome, 0) + 1
        if destination == LOCAL:
            self.events.append(LocalResponse(response))
            return
        queue = self._replies.get(destination)
        if queue is None:
            self._replies[destination] = [response]
        else:
            queue.append(response)

    def _take_replies(self) -> list[OutboundFrame]:
        frames = []
        wrap = self._factory.wrap
        limit = self.config.max_envelope_bytes
        for destination, responses in self._replies.items():
            envelope = wrap(destination, ClientResponses(tuple(responses)))
            data = encode_envelope(envelope, key=self._key)
            if len(data) > limit:
                self._count_send_drop("too_large")
                continue
            frames.append(OutboundFrame(destination, data, envelope))
        self._replies = {}
        return frames

    # -- carrying out a Ready -----------------------------------------------------------------------

    def _positions_due(self) -> bool:
        config = self.config
        return (
            self._deliveries_unsaved >= config.positions_every_deliveries
            or self._ticks_unsaved >= config.positions_every_ticks
        )

    def _write_for(self, ready: Ready | None) -> WriteBatch:
        marks = self._dirty_marks
        positions = self._dirty_positions
        self._dirty_marks = {}
        self._dirty_positions = {}
        self._deliveries_unsaved = 0
        self._ticks_unsaved = 0
        frozen_marks = MappingProxyType(marks)
        frozen_positions = MappingProxyType(positions)
        if ready is None:
            return WriteBatch(dedup_marks=frozen_marks, input_positions=frozen_positions)
        return WriteBatch(
            hard_state=ready.hard_state,
            snapshot=ready.snapshot,
            log_replaced=ready.log_replaced,
            entries=ready.entries,
            dedup_marks=frozen_marks,
            input_positions=frozen_positions,
        )

    def _commit_due(self, write: WriteBatch | None) -> Mapping[str, int] | None:
        if self._ticks_since_commit < self.config.commit_every_ticks:
            return None
        saved = dict(self._saved_positions)
        if write is not None:
            saved.update(write.input_positions)
        if saved == self._committed_positions:
            return None
        return MappingProxyType(saved)

    def _frames_for(self, ready: Ready) -> list[OutboundFrame]:
        wrap = self._factory.wrap
        key = self._key
        limit = self.config.max_envelope_bytes
        frames = []
        by_type = self.counters.out_by_type
        for outgoing in ready.messages:
            kind = type(outgoing.content)
            by_type[kind] = by_type.get(kind, 0) + 1
            envelope = wrap(outgoing.to, outgoing.content)
            data = encode_envelope(envelope, key=key)
            if len(data) > limit:
                # The receiver would reject it; the protocol sees a lost message and retries smaller.
                self._count_send_drop("too_large")
                continue
            frames.append(OutboundFrame(outgoing.to, data, envelope))
        self.counters.messages_sent += len(frames)
        return frames

    def _apply_ready(self, ready: Ready) -> None:
        sm = self.sm
        snapshot = ready.snapshot
        if snapshot is not None and snapshot.index > sm.applied_index:
            sm.restore(snapshot.data)
            self._snapshot_index = snapshot.index
            self._answer_covered_by_snapshot(snapshot.index)
        if ready.committed:
            pending = self._pending
            applied = 0
            commands = 0
            for entry in ready.committed:
                if entry.index <= sm.applied_index:  # already in the restored snapshot
                    continue
                results = sm.apply_entry(entry)
                applied += 1
                commands += len(results)
                if pending:
                    self._answer_entry(entry, results)
                elif self._every_replica is not None and results:
                    self._answer_origins(entry, results)
            self.counters.entries_applied += applied
            self.counters.commands_applied += commands
            if self._change is not None:
                self._settle_change(ready.committed)
        if ready.read_states:
            waiting = self._reads_waiting
            for state in ready.read_states:
                if state.request_id in self._reads:
                    heapq.heappush(waiting, (state.index, state.request_id))
        if self._reads_waiting:
            self._release_reads()
        for read_id in ready.failed_reads:
            read = self._reads.pop(read_id, None)
            if read is not None:
                self._reply(
                    read[0],
                    ClientResponse(
                        read[1],
                        Outcome.NOT_LEADER,
                        leader_hint=self.core.leader_id,
                        error="leadership not confirmed for the read",
                    ),
                )

    def _answer_covered_by_snapshot(self, index: int) -> None:
        covered = [i for i in self._pending if i <= index]
        for i in covered:
            entry = self._pending.pop(i)
            self._pending_count -= len(entry.waiters)
            self.counters.fail_proposal("snapshot")
            self._answer_unknown(entry, "a snapshot replaced the entry")

    def _release_reads(self) -> None:
        waiting = self._reads_waiting
        applied = self.sm.applied_index
        reads = self._reads
        read = self.sm.read
        while waiting and waiting[0][0] <= applied:
            _, read_id = heapq.heappop(waiting)
            entry = reads.pop(read_id, None)
            if entry is not None:
                self._reply(entry[0], ClientResponse(entry[1], Outcome.OK, read(entry[2])))

    def _maybe_compact(self) -> None:
        applied = self.sm.applied_index
        checkpointing = self._checkpointing
        if checkpointing is not None:
            due = checkpointing.checkpoint_due
            if due and due == applied:
                checkpointing.compact(due, self.sm.snapshot())
                self._snapshot_index = applied
                self.counters.snapshots_taken += 1
            return
        if applied - self._snapshot_index < self.config.snapshot_every_entries:
            return
        core = self.core
        if not isinstance(core, Compactable):
            self._snapshot_index = applied  # nothing to compact into; do not retry every poll
            return
        core.compact(applied, self.sm.snapshot())
        self._snapshot_index = applied
        self.counters.snapshots_taken += 1

    # -- leadership and membership ------------------------------------------------------------------

    def _notice_leadership(self) -> None:
        leader = self.core.leader_id
        if leader == self._last_leader:
            return
        was_leader = self._was_leader
        self._last_leader = leader
        self._was_leader = leader == self.node_id
        self.events.append(LeadershipChanged(leader, was_leader))
        # Counted when a leader other than the last one known takes over: losing sight of the leader
        # and finding the same one again (a Raft pre-candidate does that at every missed heartbeat) is
        # no change. The first leader an incarnation learns counts (a restored core knows none).
        if leader is not None and leader != self._last_known_leader:
            self._last_known_leader = leader
            self.counters.leader_changes += 1
        if not was_leader or leader == self.node_id or self._every_replica is not None:
            return
        # Pending commands may still commit under the next leader: their outcome is unknown here.
        for entry in self._pending.values():
            self.counters.fail_proposal("leader_lost")
            self._answer_unknown(entry, f"{self.node_id} lost the lead")
        self._pending = {}
        self._pending_count = 0
        for waiter in (*self._batch_waiters, *self._registrations):
            self._reply(waiter[0], ClientResponse(waiter[1], Outcome.NOT_LEADER, leader_hint=leader))
        self._batch = []
        self._batch_waiters = []
        self._registrations = []
        for source, request_id, _ in self._reads.values():
            self._reply(source, ClientResponse(request_id, Outcome.NOT_LEADER, leader_hint=leader))
        self._reads = {}
        self._reads_waiting = []
        change = self._change
        if change is not None:
            self._change = None
            if change.index:
                error: LocalError = ChangeOutcomeUnknownError(
                    f"{self.node_id} lost the lead during '{change.what}'", leader
                )
            else:
                error = NotLeaderError(f"{self.node_id} is not the leader", leader)
            self.events.append(ChangeSettled(change.token, error=error))

    def _propose_change(self, change: _PendingChange) -> None:
        core = self.core
        assert isinstance(core, Reconfigurable)
        try:
            index = change.propose(core)
        except NotLeaderError as error:
            self._change = None
            self.events.append(ChangeSettled(change.token, error=error))
        except LocalError as error:
            self._change = None
            # the core's reason (raft's `ConfChangeRejectedError.refusal`), if it gives one
            refusal = getattr(error, "refusal", None)
            rejected = ChangeRejectedError(
                f"{self.node_id} refused to {change.what}: {error}",
                refusal if isinstance(refusal, ChangeRefusal) else None,
            )
            rejected.__cause__ = error
            self.events.append(ChangeSettled(change.token, error=rejected))
        else:
            change.index = index
            term = getattr(core, "term", None)
            change.term = term if isinstance(term, int) else None

    def _settle_change(self, committed: tuple[LogEntry, ...]) -> None:
        change = self._change
        assert change is not None
        index = change.index
        if not index or index > committed[-1].index:
            return
        self._change = None
        if committed[0].index <= index:
            for entry in committed:
                if entry.index == index:
                    if change.term is None or entry.term == change.term:
                        self.events.append(ChangeSettled(change.token, index=index))
                        return
                    break
        # Another leader's entry took its place (or a snapshot covered it): whether the change happened
        # is for the current configuration to tell.
        self.events.append(
            ChangeSettled(
                change.token,
                error=ChangeOutcomeUnknownError(
                    f"the entry that was to {change.what} was replaced", self.core.leader_id
                ),
            )
        )

    def _refresh_senders(self) -> None:
        core = self._membership
        if core is None:
            base = self._static_peers
        else:
            voters = core.voters
            learners = core.learners
            self._seen_voters = voters
            self._seen_learners = learners
            base = frozenset(voters).union(learners)
            dropped = self._config_members - base
            if dropped:
                self._introduced -= dropped  # removed: only the configuration can bring it back
            self._config_members = base
        self._senders = (base | self._introduced) - {self.node_id}

    # -- counting -----------------------------------------------------------------------------------

    def _reject(self, reason: str) -> None:
        rejected = self.counters.rejected
        rejected[reason] = rejected.get(reason, 0) + 1

    def _count_send_drop(self, reason: str) -> None:
        dropped = self.counters.send_dropped
        dropped[reason] = dropped.get(reason, 0) + 1
