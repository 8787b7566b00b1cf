"""`PaxosNode`: one Multi-Paxos replica (proposer, acceptor and learner in one), wiring this package into
`step`, `tick`, `propose`, `read_index`, `ready` and `advance`.

Structure after van Renesse and Altinbuken ("Paxos Made Moderately Complex"): a leader owns a ballot,
runs phase 1 once for every slot from its chosen prefix on (their "scout"), then phase 2 per slot (their
"commanders", here a tally per slot), pipelined up to `window_slots` slots above its commit index. Rules
after Lamport ("Paxos Made Simple"): an acceptor promises a ballot above every ballot it promised before
and then ignores lower ones (P1a); a new leader proposes, in each open slot, the value accepted at the
highest ballot among a majority's promises, and fills slots nobody reported with no-ops (P2c, and the
gap rule of section 3); a value is chosen once a majority accepted it at one ballot. Engineering after
Chandra et al. ("Paxos Made Live"): a stable leader, heartbeats, catch-up of lagging replicas (from any
peer, by chosen values or a snapshot), snapshots that truncate the log, and durable state written
before any message that depends on it (promises and accepts are in the `Ready` that carries the reply).

Leadership: a follower that hears nothing from a leader for a randomized timeout (drawn from the
injected rng) first asks whether a majority would promise a higher ballot (`Probe`, which changes
nothing anywhere: Raft's pre-vote), then starts phase 1 with a ballot above every round it has seen; a
proposer refused by an acceptor's higher promise (`Nack`) steps down and backs off for a fresh
randomized timeout. A node that heard from its leader within the election timeout, and the leader
itself, refuse probes and ignore other proposers' `Prepare` (stickiness, as Raft's check-quorum); a
leader that has not heard from a majority for an election timeout steps down. Together they keep a node
that was cut off from deposing a working leader when it comes back.

Learning: every `Accept` and `Heartbeat` carries the leader's commit index; a node marks chosen the slots
up to it that it accepted at the leader's ballot (the leader proposes one value per slot per ballot).
Whatever it cannot tell that way it asks for (`CatchUp`) and receives as chosen values (`Learn`) or, when
the peer has compacted them, as its snapshot (`SnapshotOffer`). A new leader behind some acceptor's
chosen prefix catches up the same way before it proposes anything.

Reads: a read quorum round per `readonly` (no lease; see there why).

Limits: membership is fixed (no reconfiguration: `PaxosNode` is not `Reconfigurable`, so the executor
refuses changes with a clear error); a snapshot travels in one message (bounded by the envelope size).

Robustness: a message from outside the membership, a ballot that is not its sender's, slots that do not
ascend and the like are dropped and counted (`counters`), never raised; duplicates and reordering are
harmless (every handler is idempotent).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable, Sequence

from dscore.core.envelope import Envelope
from dscore.core.errors import ConfigError, NotLeaderError
from dscore.core.ids import NodeId
from dscore.protocols.contract import (
    EMPTY_READY,
    DurableState,
    EntryKind,
    LogEntry,
    Outgoing,
    ReadState,
    Ready,
    Snapshot,
)
from dscore.protocols.paxos.ballot import CHOSEN, NO_BALLOT, Ballots
from dscore.protocols.paxos.config import PaxosConfig
from dscore.protocols.paxos.log import PaxosLog
from dscore.protocols.paxos.messages import (
    Accept,
    Accepted,
    CatchUp,
    Heartbeat,
    HeartbeatAck,
    Learn,
    Nack,
    PaxosHardState,
    Prepare,
    Probe,
    ProbeReply,
    Promise,
    PromisedSlot,
    SnapshotOffer,
    ascending_entries,
)
from dscore.protocols.paxos.readonly import ReadRounds

__all__ = ["PaxosFactory", "PaxosNode", "Role"]


class Role(enum.Enum):
    FOLLOWER = "follower"
    #: asking whether a majority would promise a higher ballot (`Probe`) before phase 1
    PRE_CANDIDATE = "pre_candidate"
    #: running phase 1 (and catching up to the promises' chosen prefix before proposing)
    CANDIDATE = "candidate"
    LEADER = "leader"


PaxosFactory = Callable[[NodeId, Sequence[NodeId], random.Random, DurableState | None], "PaxosNode"]


class PaxosNode:
    """One Multi-Paxos replica. See the module docstring.

    `counters` (reason -> count): dropped input `misrouted`, `from_self`, `non_member`, `invalid`,
    `unknown_message`, `stale_ballot` (answered with a `Nack`), `prepare_in_lease` (stickiness),
    `beyond_open_slots`; events `probe_started`, `phase1_started`, `phase1_won`, `preempted`,
    `check_quorum_step_down`, `catch_up_requested`, `snapshot_sent`, `snapshot_installed`.
    """

    def __init__(
        self,
        node_id: NodeId,
        config: PaxosConfig,
        rng: random.Random,
        durable: DurableState | None = None,
        peers: Iterable[NodeId] = (),
    ) -> None:
        if not isinstance(config, PaxosConfig):
            raise ConfigError(f"config must be a PaxosConfig, got {type(config).__name__}")
        self._id = node_id
        self.config = config
        self._rng = rng
        self.counters: dict[str, int] = {}
        self._ballots = Ballots((node_id, *peers))
        self._peers = tuple(m for m in self._ballots.members if m != node_id)
        self._quorum = len(self._ballots.members) // 2 + 1
        self._et = config.election_timeout_ticks

        self._log = PaxosLog()
        self._promised = NO_BALLOT
        if durable is not None:
            self._promised = self._log.restore(durable)
        self._prev_hs: PaxosHardState = self._log.hard_state(self._promised)
        self._pending_hs: PaxosHardState | None = None
        self._maybe_hs = False
        self._max_round = Ballots.round_of(self._promised)
        self._msgs: list[Outgoing] = []

        self._role = Role.FOLLOWER
        self._leader: NodeId | None = None
        #: our own ballot while candidate or leader
        self._ballot = NO_BALLOT
        self._elapsed = 0
        self._timeout = self._et
        # candidate: promises by acceptor (ours is implicit); pre-candidate: the probed ballot and grants
        self._promises: dict[NodeId, Promise] = {}
        self._probe_ballot = NO_BALLOT
        self._probe_grants: set[NodeId] = set()
        # catch-up: the peer to ask and the chosen prefix to reach
        self._catch_up_from: NodeId | None = None
        self._catch_up_to = 0
        self._catch_up_elapsed = 0
        # leader: per-slot acceptors (ourselves implicit), slots sent once, window to send
        self._votes: dict[int, set[NodeId]] = {}
        self._sent_upto = 0
        self._accepts_dirty = False
        self._heartbeat_elapsed = 0
        self._retry_elapsed = 0
        self._heard: set[NodeId] = set()
        self._quorum_elapsed = 0
        self._reads = ReadRounds(self._quorum)
        self._reset_timer()

    @classmethod
    def factory(cls, config: PaxosConfig | None = None) -> PaxosFactory:
        """A `(node_id, peers, rng, durable) -> PaxosNode` builder for the runtime and the simulator."""
        cfg = config if config is not None else PaxosConfig()

        def make(
            node_id: NodeId, peers: Sequence[NodeId], rng: random.Random, durable: DurableState | None
        ) -> PaxosNode:
            return cls(node_id, cfg, rng, durable, peers)

        return make

    # -- read-only accessors ------------------------------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        return self._id

    @property
    def leader_id(self) -> NodeId | None:
        return self._leader

    @property
    def role(self) -> Role:
        return self._role

    @property
    def members(self) -> tuple[NodeId, ...]:
        return self._ballots.members

    @property
    def ballots(self) -> Ballots:
        return self._ballots

    @property
    def promised(self) -> int:
        return self._promised

    @property
    def term(self) -> int:
        """The protocol's epoch, as drivers read it (status, "the leader of the highest term"): the
        highest ballot promised. A deposed leader's is below its successor's."""
        return self._promised

    @property
    def ballot(self) -> int:
        """Our own ballot while candidate or leader (0 otherwise)."""
        return self._ballot if self._role in (Role.CANDIDATE, Role.LEADER) else NO_BALLOT

    @property
    def commit_index(self) -> int:
        """The chosen prefix: every slot up to it is chosen and known here."""
        return self._log.chosen

    @property
    def last_index(self) -> int:
        return self._log.last_index

    @property
    def snapshot_index(self) -> int:
        return self._log.snap_index

    @property
    def quorum(self) -> int:
        return self._quorum

    def entry_at(self, slot: int) -> LogEntry | None:
        return self._log.entry_at(slot)

    def ballot_at(self, slot: int) -> int:
        return self._log.ballot_at(slot)

    def _count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1

    def _send(self, to: NodeId, content: object) -> None:
        self._msgs.append(Outgoing(to, content))

    def _broadcast(self, content: object) -> None:
        for peer in self._peers:
            self._msgs.append(Outgoing(peer, content))

    # -- the rule this package is tested for -----------------------------------------------------------

    def _is_chosen(self, acceptors: int) -> bool:
        """Phase 2 ends when a majority accepted ("Paxos Made Simple", 2.2). `acceptors` counts us."""
        return acceptors >= self._quorum

    # -- inputs: client -----------------------------------------------------------------------------

    def propose(self, data: bytes) -> int:
        if self._role is not Role.LEADER:
            raise NotLeaderError(f"{self._id} is not the Paxos leader", self._leader)
        log = self._log
        slot = log.last_index + 1
        log.store(LogEntry(slot, self._ballot, EntryKind.NORMAL, data), self._ballot)
        self._maybe_hs = True
        self._votes[slot] = set()
        self._accepts_dirty = True
        if self._is_chosen(1):  # a cluster of one
            self._slot_chosen(slot)
            self._advance()
        return slot

    def read_index(self, request_id: int) -> None:
        if self._role is not Role.LEADER:
            raise NotLeaderError(f"{self._id} is not the Paxos leader", self._leader)
        self._reads.register(request_id, self._log.last_index)

    def campaign(self) -> None:
        """Start phase 1 now, as if the election timeout had fired (tests, operators)."""
        self._start_phase1()

    # -- inputs: time -------------------------------------------------------------------------------

    def tick(self) -> None:
        if self._catch_up_from is not None:
            self._catch_up_elapsed += 1
            if self._catch_up_elapsed >= self.config.retry_ticks:
                self._request_catch_up()
        if self._role is Role.LEADER:
            self._tick_leader()
            return
        self._elapsed += 1
        if self._role is Role.CANDIDATE and self._elapsed % self.config.retry_ticks == 0:
            prepare = Prepare(self._ballot, self._log.chosen + 1)
            for peer in self._peers:
                if peer not in self._promises:
                    self._send(peer, prepare)
        if self._elapsed >= self._timeout:
            self._start_probe()

    def _tick_leader(self) -> None:
        config = self.config
        self._heartbeat_elapsed += 1
        if self._heartbeat_elapsed >= config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()
        self._retry_elapsed += 1
        if self._retry_elapsed >= config.retry_ticks:
            self._retry_elapsed = 0
            self._resend_accepts()
        self._quorum_elapsed += 1
        if self._quorum_elapsed >= self._et:
            heard = len(self._heard) + 1
            self._heard = set()
            self._quorum_elapsed = 0
            if heard < self._quorum:
                self._count("check_quorum_step_down")
                self._become_follower(None)

    def _reset_timer(self) -> None:
        self._elapsed = 0
        self._timeout = self._rng.randrange(self._et, 2 * self._et)

    # -- roles --------------------------------------------------------------------------------------

    def _become_follower(self, leader: NodeId | None) -> None:
        if self._role in (Role.CANDIDATE, Role.LEADER):
            self._reads.reset()
            self._votes = {}
            self._promises = {}
            self._accepts_dirty = False
        self._role = Role.FOLLOWER
        self._leader = leader
        self._reset_timer()

    def _sticky(self, proposer: NodeId) -> bool:
        """Whether we stand by a live leader against `proposer`: we lead, or heard from our leader within
        the election timeout."""
        if self._role is Role.LEADER:
            return True
        return self._leader not in (None, proposer) and self._elapsed < self._et

    def _start_probe(self) -> None:
        if self._role is Role.CANDIDATE:
            self._become_follower(None)
        self._count("probe_started")
        self._role = Role.PRE_CANDIDATE
        self._leader = None
        self._probe_ballot = self._ballots.make(self._max_round + 1, self._id)
        self._probe_grants = set()
        self._reset_timer()
        if self._quorum <= 1:
            self._start_phase1()
            return
        self._broadcast(Probe(self._probe_ballot))

    def _start_phase1(self) -> None:
        """Phase 1a for every slot from our chosen prefix on, with a ballot above every round seen."""
        if self._role is not Role.FOLLOWER:
            self._become_follower(None)
        self._count("phase1_started")
        self._max_round += 1
        self._ballot = self._ballots.make(self._max_round, self._id)
        self._promised = self._ballot
        self._maybe_hs = True
        self._role = Role.CANDIDATE
        self._leader = None
        self._promises = {}
        self._reset_timer()
        self._broadcast(Prepare(self._ballot, self._log.chosen + 1))
        self._maybe_finish_phase1()

    def _raise_promise(self, ballot: int) -> None:
        if ballot > self._promised:
            self._promised = ballot
            self._maybe_hs = True
        self._max_round = max(self._max_round, Ballots.round_of(ballot))

    def _follow(self, leader: NodeId, ballot: int) -> None:
        """A message of phase 2 (or a heartbeat) at `ballot` >= our promise: its sender leads."""
        self._raise_promise(ballot)
        if self._role is not Role.FOLLOWER:
            self._become_follower(leader)
        self._leader = leader
        self._elapsed = 0

    def _maybe_finish_phase1(self) -> None:
        if self._role is not Role.CANDIDATE or len(self._promises) + 1 < self._quorum:
            return
        log = self._log
        target = max((p.chosen for p in self._promises.values()), default=0)
        if log.chosen < target:
            # Some acceptor knows more chosen slots than we do (it reports values only above its
            # prefix): learn them before proposing anything.
            if self._catch_up_to < target or self._catch_up_from is None:
                ahead = max(self._promises, key=lambda peer: (self._promises[peer].chosen, peer))
                self._catch_up_to = target
                self._catch_up_from = ahead
                self._request_catch_up()
            return
        # P2c: in each open slot the value accepted at the highest ballot (CHOSEN outranks all).
        ballot = self._ballot
        best: dict[int, tuple[int, LogEntry]] = {}
        for accepted_ballot, entry in log.open_slots(log.chosen):
            best[entry.index] = (accepted_ballot, entry)
        for promise in self._promises.values():
            for reported in promise.slots:
                slot = reported.entry.index
                if slot > log.chosen and (slot not in best or reported.ballot > best[slot][0]):
                    best[slot] = (reported.ballot, reported.entry)
        end = max((*best, log.last_index))
        self._role = Role.LEADER
        self._leader = self._id
        self._promises = {}
        self._votes = {}
        self._count("phase1_won")
        for slot in range(log.chosen + 1, end + 1):
            found = best.get(slot)
            value = found[1] if found is not None else LogEntry(slot, ballot, EntryKind.NOOP, b"")
            if found is not None and found[0] == CHOSEN:
                log.store(value, CHOSEN)
                continue
            log.store(value, ballot)
            self._votes[slot] = set()
        self._maybe_hs = True
        self._sent_upto = log.chosen
        self._accepts_dirty = True
        self._heartbeat_elapsed = 0
        self._retry_elapsed = 0
        self._quorum_elapsed = 0
        self._heard = set()
        self._reads.reset()
        if self._is_chosen(1):
            for slot in list(self._votes):
                self._slot_chosen(slot)
        self._advance()
        self._broadcast_heartbeat()

    # -- leader: phase 2 ----------------------------------------------------------------------------

    def _slot_chosen(self, slot: int) -> None:
        self._log.mark_chosen(slot)
        self._votes.pop(slot, None)

    def _advance(self) -> None:
        log = self._log
        if log.advance_chosen():
            self._maybe_hs = True
            self._accepts_dirty = True
            for slot in [s for s in self._votes if s <= log.chosen]:
                del self._votes[slot]

    def _flush_accepts(self) -> None:
        """Send slots that entered the window (every peer gets each slot once; `_resend_accepts`
        retries)."""
        log = self._log
        hi = min(log.last_index, log.chosen + self.config.window_slots)
        if self._sent_upto >= hi:
            return
        entries = [e for s in range(self._sent_upto + 1, hi + 1) if (e := log.entry_at(s)) is not None]
        self._sent_upto = hi
        per = self.config.max_entries_per_msg
        for start in range(0, len(entries), per):
            self._broadcast(Accept(self._ballot, tuple(entries[start : start + per]), log.chosen))

    def _resend_accepts(self) -> None:
        log = self._log
        per = self.config.max_entries_per_msg
        slots = sorted(s for s in self._votes if s <= self._sent_upto)
        if not slots:
            return
        for peer in self._peers:
            missing = []
            for slot in slots:
                if peer not in self._votes[slot]:
                    entry = log.entry_at(slot)
                    if entry is not None:
                        missing.append(entry)
                        if len(missing) == per:
                            break
            if missing:
                self._send(peer, Accept(self._ballot, tuple(missing), log.chosen))

    def _broadcast_heartbeat(self) -> None:
        self._broadcast(Heartbeat(self._ballot, self._log.chosen, self._reads.next_round()))

    # -- output -------------------------------------------------------------------------------------

    def _changed_hard_state(self) -> PaxosHardState | None:
        if self._maybe_hs:
            self._maybe_hs = False
            hs = self._log.hard_state(self._promised)
            self._pending_hs = hs if hs != self._prev_hs else None
        return self._pending_hs

    def has_ready(self) -> bool:
        reads = self._reads
        return bool(
            self._msgs
            or (self._role is Role.LEADER and (self._accepts_dirty or reads.want_round))
            or self._log.has_ready()
            or reads.released
            or reads.failed
            or self._changed_hard_state() is not None
        )

    def ready(self) -> Ready:
        reads = self._reads
        if self._role is Role.LEADER:
            if reads.want_round:
                self._broadcast_heartbeat()
            if self._accepts_dirty:
                self._accepts_dirty = False
                self._flush_accepts()
        hard_state = self._changed_hard_state()
        if hard_state is not None:
            self._prev_hs = hard_state
            self._pending_hs = None
        snapshot, entries, committed = self._log.take_ready()
        messages: tuple[Outgoing, ...] = ()
        if self._msgs:
            messages = tuple(self._msgs)
            self._msgs = []
        read_states: tuple[ReadState, ...] = ()
        if reads.released:
            read_states = tuple(reads.released)
            reads.released = []
        failed: tuple[int, ...] = ()
        if reads.failed:
            failed = tuple(reads.failed)
            reads.failed = []
        if not (hard_state or snapshot or entries or messages or committed or read_states or failed):
            return EMPTY_READY
        return Ready(
            hard_state=hard_state,
            snapshot=snapshot,
            entries=entries,
            messages=messages,
            committed=committed,
            read_states=read_states,
            failed_reads=failed,
        )

    def advance(self, ready: Ready) -> None:
        """Nothing to record: `ready` already moved what was handed out (entries, committed)."""

    def compact(self, index: int, data: bytes) -> None:
        """The driver snapshotted its state machine at applied `index`: drop the slots up to it."""
        self._log.compact(index, data)

    # -- step ---------------------------------------------------------------------------------------

    def step(self, envelope: Envelope) -> None:
        m = envelope.content
        src = envelope.source
        if envelope.destination != self._id:
            self._count("misrouted")
            return
        if src == self._id:
            self._count("from_self")
            return
        if src not in self._ballots.members:
            self._count("non_member")
            return
        owned = self._ballots.owned_by
        if isinstance(m, Prepare):
            if not owned(m.ballot, src) or m.from_slot < 1:
                self._count("invalid")
            else:
                self._on_prepare(src, m)
        elif isinstance(m, Probe):
            if not owned(m.ballot, src):
                self._count("invalid")
            else:
                granted = m.ballot > self._promised and not self._sticky(src)
                self._send(src, ProbeReply(m.ballot, granted, self._promised))
        elif isinstance(m, ProbeReply):
            if not self._ballots.valid(m.ballot) or m.promised < 0 or m.promised >= CHOSEN:
                self._count("invalid")
            else:
                self._max_round = max(self._max_round, Ballots.round_of(m.promised))
                if self._role is Role.PRE_CANDIDATE and m.ballot == self._probe_ballot and m.granted:
                    self._probe_grants.add(src)
                    if len(self._probe_grants) + 1 >= self._quorum:
                        self._start_phase1()
        elif isinstance(m, Promise):
            if not self._ballots.valid(m.ballot) or m.chosen < 0 or not _valid_promised(m.slots, m.ballot):
                self._count("invalid")
            elif self._role is Role.CANDIDATE and m.ballot == self._ballot:
                self._promises[src] = m
                self._maybe_finish_phase1()
        elif isinstance(m, Accept):
            if (
                not owned(m.ballot, src)
                or m.commit < 0
                or not m.entries
                or not ascending_entries(m.entries, consecutive=False, max_term=m.ballot)
            ):
                self._count("invalid")
            else:
                self._on_accept(src, m)
        elif isinstance(m, Accepted):
            if not self._ballots.valid(m.ballot) or m.chosen < 0 or not _ascending(m.slots):
                self._count("invalid")
            else:
                self._on_accepted(src, m)
        elif isinstance(m, Heartbeat):
            if not owned(m.ballot, src) or m.commit < 0 or m.round < 0:
                self._count("invalid")
            else:
                self._on_heartbeat(src, m)
        elif isinstance(m, HeartbeatAck):
            if not self._ballots.valid(m.ballot) or m.round < 0 or m.chosen < 0:
                self._count("invalid")
            elif self._role is Role.LEADER and m.ballot == self._ballot:
                self._heard.add(src)
                self._reads.ack(src, m.round)
                self._behind(src, m.chosen)
        elif isinstance(m, Nack):
            if not self._ballots.valid(m.ballot) or not self._ballots.valid(m.promised):
                self._count("invalid")
            else:
                self._on_nack(m)
        elif isinstance(m, CatchUp):
            if m.from_slot < 1:
                self._count("invalid")
            else:
                self._on_catch_up(src, m)
        elif isinstance(m, Learn):
            if not m.entries or not ascending_entries(m.entries, consecutive=True, max_term=CHOSEN - 1):
                self._count("invalid")
            else:
                self._on_learn(m)
        elif isinstance(m, SnapshotOffer):
            snap = m.snapshot
            if snap.index < 1 or snap.term < 1 or not isinstance(snap.data, bytes):
                self._count("invalid")
            else:
                self._on_snapshot(snap)
        else:
            self._count("unknown_message")

    def _refuse(self, src: NodeId, ballot: int) -> None:
        self._count("stale_ballot")
        self._send(src, Nack(ballot, self._promised))

    def _on_prepare(self, src: NodeId, m: Prepare) -> None:
        if m.ballot < self._promised:
            self._refuse(src, m.ballot)
            return
        if m.ballot > self._promised:
            if self._sticky(src):
                self._count("prepare_in_lease")  # our leader is alive: do not help depose it
                return
            self._raise_promise(m.ballot)
            self._become_follower(None)
        log = self._log
        slots = tuple(PromisedSlot(b, e) for b, e in log.open_slots(max(log.chosen, m.from_slot - 1)))
        self._send(src, Promise(m.ballot, log.chosen, slots))

    def _on_accept(self, src: NodeId, m: Accept) -> None:
        if m.ballot < self._promised:
            self._refuse(src, m.ballot)
            return
        self._follow(src, m.ballot)
        log = self._log
        limit = log.chosen + self.config.max_open_slots
        accepted = []
        for entry in m.entries:
            slot = entry.index
            if slot > limit:
                self._count("beyond_open_slots")
                break
            if log.store(entry, m.ballot):
                self._maybe_hs = True
                accepted.append(slot)
            elif log.ballot_at(slot) == CHOSEN and log.entry_at(slot) == entry:
                accepted.append(slot)  # already known chosen with this very value
        self._learn_commit(src, m.commit, m.ballot)
        self._send(src, Accepted(m.ballot, tuple(accepted), log.chosen))

    def _on_accepted(self, src: NodeId, m: Accepted) -> None:
        if self._role is not Role.LEADER or m.ballot != self._ballot:
            return
        self._heard.add(src)
        self._behind(src, m.chosen)
        votes = self._votes
        for slot in m.slots:
            voters = votes.get(slot)
            if voters is not None and src not in voters:
                voters.add(src)
                if self._is_chosen(len(voters) + 1):
                    self._slot_chosen(slot)
        self._advance()

    def _on_heartbeat(self, src: NodeId, m: Heartbeat) -> None:
        if m.ballot < self._promised:
            self._refuse(src, m.ballot)
            return
        self._follow(src, m.ballot)
        self._learn_commit(src, m.commit, m.ballot)
        self._send(src, HeartbeatAck(m.ballot, m.round, self._log.chosen))

    def _on_nack(self, m: Nack) -> None:
        self._max_round = max(self._max_round, Ballots.round_of(m.promised))
        if (
            self._role in (Role.CANDIDATE, Role.LEADER)
            and m.ballot == self._ballot
            and m.promised > self._ballot
        ):
            self._count("preempted")
            self._become_follower(None)  # backs off for a fresh randomized timeout

    # -- learning -----------------------------------------------------------------------------------

    def _learn_commit(self, leader: NodeId, commit: int, ballot: int) -> None:
        """The leader at `ballot` says every slot up to `commit` is chosen: the ones we accepted at
        `ballot` hold its (only) value there."""
        log = self._log
        for slot in range(log.chosen + 1, min(commit, log.last_index) + 1):
            if log.ballot_at(slot) == ballot:
                log.mark_chosen(slot)
        self._advance()
        if log.chosen < commit:
            self._catch_up_to = max(self._catch_up_to, commit)
            if self._catch_up_from is None:  # one request in flight (the tick retries it)
                self._catch_up_from = leader
                self._request_catch_up()

    def _behind(self, peer: NodeId, chosen: int) -> None:
        """A leader learns that `peer` knows more chosen slots than it does (values chosen under an
        earlier ballot that it re-proposed, which the peer has compacted and so cannot accept again):
        fetch them, or those slots would wait for a majority forever."""
        if chosen > self._log.chosen:
            self._catch_up_to = max(self._catch_up_to, chosen)
            if self._catch_up_from is None:
                self._catch_up_from = peer
                self._request_catch_up()

    def _request_catch_up(self) -> None:
        peer = self._catch_up_from
        if peer is None:
            return
        if self._log.chosen >= self._catch_up_to:
            self._catch_up_from = None
            return
        self._catch_up_elapsed = 0
        self._count("catch_up_requested")
        self._send(peer, CatchUp(self._log.chosen + 1))

    def _on_catch_up(self, src: NodeId, m: CatchUp) -> None:
        log = self._log
        if m.from_slot <= log.snap_index and log.snapshot is not None:
            self._count("snapshot_sent")
            self._send(src, SnapshotOffer(log.snapshot))
        elif m.from_slot <= log.chosen:
            hi = min(log.chosen, m.from_slot + self.config.max_entries_per_msg - 1)
            self._send(src, Learn(log.chosen_entries(m.from_slot, hi)))

    def _on_learn(self, m: Learn) -> None:
        log = self._log
        before = log.chosen
        for entry in m.entries:
            if entry.index > log.chosen:
                log.store(entry, CHOSEN)
        self._maybe_hs = True
        self._advance()
        self._after_learning(before)

    def _on_snapshot(self, snap: Snapshot) -> None:
        log = self._log
        if snap.index <= log.chosen:
            return
        before = log.chosen
        self._count("snapshot_installed")
        log.install(snap)
        self._votes = {s: v for s, v in self._votes.items() if s > log.chosen}
        self._maybe_hs = True
        self._after_learning(before)

    def _after_learning(self, before: int) -> None:
        if self._catch_up_from is not None and self._log.chosen > before:
            self._request_catch_up()  # progress: ask for the next batch at once
        if self._role is Role.CANDIDATE:
            self._maybe_finish_phase1()


def _ascending(slots: tuple[int, ...]) -> bool:
    previous = 0
    for slot in slots:
        if slot <= previous:
            return False
        previous = slot
    return True


def _valid_promised(slots: tuple[PromisedSlot, ...], ballot: int) -> bool:
    previous = 0
    for reported in slots:
        entry = reported.entry
        if entry.index <= previous or not 0 < entry.term <= ballot:
            return False
        if reported.ballot != CHOSEN and not 0 < reported.ballot <= ballot:
            return False
        previous = entry.index
    return True
