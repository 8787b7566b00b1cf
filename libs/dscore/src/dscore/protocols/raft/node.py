"""`RaftNode`: one Raft server, wiring the pieces of this package into `step`, `tick`, `propose`, `ready`
and `advance` (etcd's `raft.go`).

The node owns the term, the vote, its role and timers, and the messages to send; the log (`log.RaftLog`),
the configuration history (`confchange.ConfigHistory`), the peers' progress and votes
(`progress.ProgressTracker`), the leader's reads (`readonly.ReadOnly`) and a follower's snapshot transfer
(`snapshot.SnapshotReceiver`) are objects of their own.

Elections (5.2) use randomized timeouts in `[election_timeout_ticks, 2*election_timeout_ticks)` drawn from
the injected rng; term and vote go into `Ready.hard_state` in the same `Ready` as the vote reply, so a
vote is durable before it is announced. Election restriction (5.4.1). Pre-vote (9.6) and check-quorum
(6.2): a pre-candidate asks "would you vote for me at term+1?" without anyone changing term; a node that
heard from a leader within the election timeout ignores (pre)vote requests (leader stickiness) unless the
request comes from a leadership transfer; a leader that did not hear from a quorum during an election
timeout steps down.

Replication (5.3): consistency check, conflict truncation, fast backtracking (the follower's reject
carries a hint: the largest index at or below the probe whose term is at most the probe's term, and the
leader jumps over the conflicting term with the same search in its own log, as in etcd), batching (at
most `max_entries_per_msg` entries and about `max_bytes_per_msg` bytes per message), flow control per
follower (see `progress`). Commitment (5.3, 5.4.2): the leader commits an index only when a quorum of
voters stores it AND it is an entry of the current term (the Figure 8 rule). The rule lives in
`_maybe_commit()` / `_quorum_match()` / `_can_commit_by_counting(index)` so a test can subclass it with a
deliberately broken variant. A new leader appends a NOOP entry so it can commit.

Log compaction: `compact(index, data)` records a snapshot of the applied state machine and drops the log
prefix; a follower that needs compacted entries receives `InstallSnapshot` (see `snapshot`). A follower
whose log has the snapshot's last entry keeps the entries after it; otherwise it discards its whole log,
in memory and in storage (`Ready.log_replaced`). The final chunk also carries the leader's entries right
after the snapshot, if it has any, which saves the follower a round trip.

Robustness: stale-term messages are dropped (a stale leader's append or heartbeat is answered with our
term, so that it steps down, as etcd does); higher-term messages update the term (except pre-vote
requests and granted pre-vote responses); duplicated and reordered messages are harmless; invalid
messages (negative indexes, non-contiguous entries, a response from a non-member, ...) are dropped and
counted in `counters` (reason -> count), never raised.

Driving the core
----------------

Follow `Ready`'s contract. `ready()` hands over its contents (it is not produced again); `advance(ready)`
records that the driver applied it. Entries are returned in `Ready.entries` before or together with any
message or `committed` entry that depends on them, so persisting each `Ready` before sending its messages
is all the ordering a driver needs. On restart the first `Ready` announces the durable snapshot again
(`Ready.snapshot`), so a driver whose state machine starts empty restores it (persisting it again is a
no-op under `apply_persist`), then applies `Ready.committed` from the snapshot index on.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable, Sequence

from dscore.core import codec
from dscore.core.envelope import Envelope
from dscore.core.errors import ConfigError, LocalError, NotLeaderError
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
from dscore.protocols.raft.confchange import (
    ConfChangeType,
    ConfigHistory,
    apply_change,
    check_can_change,
    decode_config,
)
from dscore.protocols.raft.config import RaftConfig, ReadOnlyOption
from dscore.protocols.raft.log import RaftLog
from dscore.protocols.raft.messages import (
    AppendEntries,
    AppendResponse,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Membership,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
    valid_append,
    valid_install,
)
from dscore.protocols.raft.progress import Progress, ProgressState, ProgressTracker
from dscore.protocols.raft.quorum import VoteResult
from dscore.protocols.raft.readonly import ReadOnly
from dscore.protocols.raft.snapshot import SnapshotReceiver

__all__ = ["RaftFactory", "RaftNode", "Role"]


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"
    #: a follower that is a learner in its current configuration (never votes, never campaigns)
    LEARNER = "learner"


RaftFactory = Callable[[NodeId, Sequence[NodeId], random.Random, DurableState | None], "RaftNode"]


class RaftNode:
    """One Raft server. See the module docstring.

    `peers` are the initial voters (with or without `node_id`; this node is always added unless
    `join=True`), used only when `durable` holds no configuration (no snapshot and no CONFIG entry).
    A node started with `join=True` and no durable state has an empty configuration: it never campaigns
    and waits for a leader to add it (as a learner, then promote it, or as a voter).

    `counters` (reason -> count) records dropped input and notable events, for metrics and invariants:
    dropped messages `misrouted`, `from_self`, `unknown_message`, `invalid`, `stale_term`,
    `non_member` (a response or vote from outside our configuration), `unknown_peer`,
    `conflicting_leader`, `vote_in_lease` (leader stickiness), `ignored_timeout_now`; anomalies
    `conflict_with_committed` (a leader tried to overwrite a committed entry: only a broken commit rule
    can cause it), `bad_config_entry`, `bad_snapshot_config`, `missing_snapshot`,
    `restore_discarded_entries`; refused snapshot transfers `snapshot_too_large` (beyond
    `max_snapshot_bytes`) and `snapshot_chunks_disagree` (chunks announcing different sizes); events
    `check_quorum_step_down`, `removed_leader_step_down`, `transfer_aborted`, `snapshot_sent`,
    `snapshot_installed`.
    """

    def __init__(
        self,
        node_id: NodeId,
        config: RaftConfig,
        rng: random.Random,
        durable: DurableState | None = None,
        peers: Iterable[NodeId] = (),
        *,
        join: bool = False,
    ) -> None:
        if not isinstance(config, RaftConfig):
            raise ConfigError(f"config must be a RaftConfig, got {type(config).__name__}")
        self._id = node_id
        self.config = config
        self._rng = rng
        #: messages dropped and other anomalies, by reason
        self.counters: dict[str, int] = {}
        self._et = config.election_timeout_ticks
        #: no progress for this long although the follower answers: appends or chunks were lost
        self._stall_ticks = max(2 * config.heartbeat_ticks, self._et // 2)
        lease_mode = config.read_only_option is ReadOnlyOption.LEASE

        initial = set(peers)
        if not join:
            initial.add(node_id)
        self._log = RaftLog()
        self._confs = ConfigHistory(Membership(tuple(sorted(initial)), ()))
        self._term = 0
        self._vote: NodeId | None = None
        if durable is not None:
            self._restore(durable)
        self._prev_hs: tuple[int, NodeId | None, int] = (self._term, self._vote, self._log.committed)
        self._tracker = ProgressTracker(self._confs.current)
        self._read_only = ReadOnly(config.effective_lease_ticks if lease_mode else None)
        self._snap_recv = SnapshotReceiver(config.max_snapshot_bytes)
        self._msgs: list[Outgoing] = []

        self._role = Role.FOLLOWER
        self._leader: NodeId | None = None
        self._ticks = 0
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self._et
        #: with lease reads, a restarted node keeps the stickiness it may have promised before the crash
        self._restart_quiet = lease_mode
        #: leader: some follower may be sent appends (flushed by `ready`)
        self._append_dirty = False
        self._transferee: NodeId | None = None
        #: the voters whose granted votes made this node leader of its current term (observability: the
        #: simulator checks that each of those votes is in that voter's stable storage)
        self._elected_by: tuple[NodeId, ...] = ()
        self._transfer_elapsed = 0

        self._set_membership(self._confs.current)
        self._reset_election_timer()

    @classmethod
    def factory(cls, config: RaftConfig | None = None) -> RaftFactory:
        """A `(node_id, peers, rng, durable) -> RaftNode` builder for the runtime and the simulator."""
        cfg = config if config is not None else RaftConfig()

        def make(
            node_id: NodeId, peers: Sequence[NodeId], rng: random.Random, durable: DurableState | None
        ) -> RaftNode:
            return cls(node_id, cfg, rng, durable, peers)

        return make

    def _restore(self, durable: DurableState) -> None:
        snap = durable.snapshot
        if snap is not None:
            if not isinstance(snap.config, Membership):
                raise LocalError(f"durable snapshot config is not a raft Membership: {snap.config!r}")
            self._confs.reset(snap.config)
        log = self._log
        if not log.restore(durable):
            self._count("restore_discarded_entries")
        for entry in log.entries:
            if entry.kind == EntryKind.CONFIG:
                self._record_config(entry)
        hs = durable.hard_state
        if hs is not None:
            if not isinstance(hs, HardState):
                raise LocalError(f"durable hard state is not a raft HardState: {hs!r}")
            self._term = hs.term
            self._vote = hs.vote
            log.committed = max(min(hs.commit, log.last_index), log.snap_index)

    # -- read-only accessors ----------------------------------------------------------------------

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
    def elected_by(self) -> tuple[NodeId, ...]:
        """While leading: the voters (itself included) whose votes elected it in this term; else ()."""
        return self._elected_by if self._role is Role.LEADER else ()

    @property
    def term(self) -> int:
        return self._term

    @property
    def vote(self) -> NodeId | None:
        return self._vote

    @property
    def commit_index(self) -> int:
        return self._log.committed

    @property
    def applied_index(self) -> int:
        """The last index the driver acknowledged applying (through `advance`)."""
        return self._log.applied

    @property
    def last_index(self) -> int:
        return self._log.last_index

    @property
    def last_term(self) -> int:
        return self._log.last_term

    @property
    def snapshot_index(self) -> int:
        return self._log.snap_index

    @property
    def snapshot_term(self) -> int:
        return self._log.snap_term

    @property
    def snapshot(self) -> Snapshot | None:
        """The latest snapshot (taken by `compact` or installed from a leader), if any."""
        return self._log.snapshot

    @property
    def membership(self) -> Membership:
        return self._tracker.members

    @property
    def voters(self) -> tuple[NodeId, ...]:
        return self._tracker.members.voters

    @property
    def learners(self) -> tuple[NodeId, ...]:
        return self._tracker.members.learners

    @property
    def lead_transferee(self) -> NodeId | None:
        return self._transferee

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index` (the snapshot's term at `snapshot_index`, 0 at index 0),
        or None if it is compacted away or beyond the log."""
        return self._log.term_at(index)

    def entries(self, lo: int | None = None, hi: int | None = None) -> tuple[LogEntry, ...]:
        """Log entries with lo <= index <= hi (defaults: the whole retained log)."""
        return self._log.slice(lo, hi)

    def entries_view(self) -> list[tuple[int, int]]:
        """(index, term) of every retained entry, for invariant checks (O(log length))."""
        return [(e.index, e.term) for e in self._log.entries]

    def progress(self, node: NodeId) -> Progress | None:
        """The leader's replication progress for `node` (None when not leader or unknown)."""
        return self._tracker.progress.get(node) if self._role is Role.LEADER else None

    def _is_leader(self) -> bool:
        return self._role is Role.LEADER

    def is_promotable(self) -> bool:
        return self._id in self._tracker.voter_set

    def _count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1

    # -- configuration ----------------------------------------------------------------------------

    def _record_config(self, entry: LogEntry) -> bool:
        members = decode_config(entry)
        if members is None:
            self._count("bad_config_entry")
            return False
        self._confs.record(entry.index, members)
        return True

    def _set_membership(self, members: Membership) -> None:
        tracker = self._tracker
        tracker.set_members(members)
        role = self._role
        if role is Role.FOLLOWER or role is Role.LEARNER:
            self._role = Role.LEARNER if self._id in tracker.learner_set else Role.FOLLOWER
        elif role is Role.LEADER:
            if tracker.sync_progress(self._id, self._log.last_index + 1, self._ticks):
                self._append_dirty = True
            if self._transferee is not None and self._transferee not in tracker.voter_set:
                self._transferee = None
            self._read_only.restart_lease()
            self._maybe_commit()

    def _config_appended(self) -> None:
        self._set_membership(self._confs.current)

    # -- log changes --------------------------------------------------------------------------------

    def _truncate_from(self, index: int) -> None:
        self._log.truncate_from(index)
        if self._confs.truncate_from(index):
            self._config_appended()

    def _append_from_leader(self, entries: tuple[LogEntry, ...]) -> bool:
        """Append entries after a successful consistency check; truncate at the first conflict."""
        log = self._log
        k = log.first_new(entries)
        if k == len(entries):
            return True  # all present (Log Matching)
        conflict = entries[k].index
        if conflict <= log.last_index:
            if conflict <= log.committed:
                self._count("conflict_with_committed")
                return False
            self._truncate_from(conflict)
        new = entries[k:] if k else entries
        log.entries.extend(new)
        changed = False
        for e in new:
            if e.kind == EntryKind.CONFIG:
                changed = self._record_config(e) or changed
        if changed:
            self._config_appended()
        return True

    # -- inputs -----------------------------------------------------------------------------------

    def tick(self) -> None:
        self._ticks += 1
        if self._role is Role.LEADER:
            self._tick_leader()
            return
        self._election_elapsed += 1
        if self._election_elapsed >= self._et:
            self._restart_quiet = False
        if self._election_elapsed >= self._randomized_timeout and self._id in self._tracker.voter_set:
            self.campaign()

    def skip_ticks(self, count: int) -> None:
        """The driver stalled (GC, CPU starvation, a pause) and drops `count` ticks it will not replay
        (the runtime replays at most `max_catchup_ticks` of the ticks a stall made it miss).

        Time went on all the same, so the clock leases are measured with moves on by `count`: a lease
        earned before the stall then ends when it would have (a leader that counted only the replayed
        ticks would believe in its lease long after its followers' stickiness ran out and a new leader
        could be serving writes). No timeout fires: a follower does not campaign, and a leader does not
        step down by check-quorum, because its own process was slow. Produces no `Ready`."""
        if type(count) is not int or count < 0:
            raise LocalError(f"skip_ticks needs a count >= 0, got {count!r}")
        self._ticks += count

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self._et:
            self._election_elapsed = 0
            if self.config.check_quorum:
                if not self._tracker.quorum_active(self._id):
                    self._count("check_quorum_step_down")
                    self._become_follower(self._term, None)
                    return
                self._tracker.reset_recent_active(self._id)
        if self._transferee is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self._et:
                self._count("transfer_aborted")
                self._transferee = None
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def campaign(self) -> None:
        """Start an election now (with pre-vote if configured), as if the election timeout fired."""
        if self._role is Role.LEADER or self._id not in self._tracker.voter_set:
            return
        self._campaign(pre=self.config.pre_vote, transfer=False)

    def propose(self, data: bytes) -> int:
        if self._role is not Role.LEADER:
            raise NotLeaderError(f"{self._id} is not the leader", self._leader)
        if self._transferee is not None:
            raise NotLeaderError(
                f"{self._id} is transferring leadership to {self._transferee}", self._transferee
            )
        if type(data) is not bytes:
            raise LocalError(f"a proposal must be bytes, got {type(data).__name__}")
        return self._append_local(EntryKind.NORMAL, data)

    def read_index(self, request_id: int) -> None:
        """Register a linearizable read (leader only; followers raise `NotLeaderError`). See `readonly`."""
        if self._role is not Role.LEADER:
            raise NotLeaderError(f"{self._id} is not the leader", self._leader)
        if self._log.term_at(self._log.committed) != self._term:
            self._read_only.wait_for_term_commit(request_id)
            return
        self._register_read(request_id)

    def transfer_leadership(self, to: NodeId) -> None:
        """Hand leadership to voter `to` (3.10): stop accepting proposals, bring `to` up to date, then
        send it TimeoutNow. Aborted if `to` is not leader after an election timeout."""
        if self._role is not Role.LEADER:
            raise NotLeaderError(f"{self._id} is not the leader", self._leader)
        if to == self._id:
            return
        if to not in self._tracker.voter_set:
            raise LocalError(f"cannot transfer leadership to {to!r}: not a voter")
        if self._transferee == to:
            return
        self._transferee = to
        self._transfer_elapsed = 0
        self._read_only.lease_blocked = True
        pr = self._tracker.progress[to]
        if pr.match == self._log.last_index:
            self._send(to, TimeoutNow(self._term))
            return
        if pr.state is ProgressState.REPLICATE:
            pr.become_probe()  # do not wait for a stall to find out that appends were lost
        self._append_dirty = True

    # -- membership changes (see `confchange`) ----------------------------------------------------

    def propose_config_change(self, change: ConfChangeType, node: NodeId) -> int:
        """Append a single-server membership change; returns its log index. Raises `NotLeaderError`
        or `ConfChangeRejectedError`."""
        if self._role is not Role.LEADER:
            raise NotLeaderError(f"{self._id} is not the leader", self._leader)
        if self._transferee is not None:
            raise NotLeaderError(
                f"{self._id} is transferring leadership to {self._transferee}", self._transferee
            )
        log = self._log
        check_can_change(
            term_committed=log.term_at(log.committed) == self._term,
            pending=self._confs.last_index > log.committed,
        )
        members = apply_change(self._tracker.members, change, node)
        return self._append_local(EntryKind.CONFIG, codec.encode_value(members))

    def add_voter(self, node: NodeId) -> int:
        return self.propose_config_change(ConfChangeType.ADD_VOTER, node)

    def remove_voter(self, node: NodeId) -> int:
        return self.propose_config_change(ConfChangeType.REMOVE_VOTER, node)

    def add_learner(self, node: NodeId) -> int:
        return self.propose_config_change(ConfChangeType.ADD_LEARNER, node)

    def remove_learner(self, node: NodeId) -> int:
        return self.propose_config_change(ConfChangeType.REMOVE_LEARNER, node)

    def promote_learner(self, node: NodeId) -> int:
        """Make learner `node` a voter. Promote only a caught-up learner (check `progress(node).match`),
        or commits may stall until it catches up."""
        return self.propose_config_change(ConfChangeType.PROMOTE_LEARNER, node)

    # -- compaction -------------------------------------------------------------------------------

    def compact(self, index: int, data: bytes) -> None:
        """The driver snapshotted its state machine at applied `index` (`data`): record the snapshot with
        the membership at `index`, drop the log up to `index`, and persist it via `Ready.snapshot`."""
        log = self._log
        if index <= log.snap_index:
            raise LocalError(f"index {index} is already compacted (snapshot at {log.snap_index})")
        if index > log.handed:
            raise LocalError(f"index {index} was not handed out for applying yet (up to {log.handed})")
        term = log.term_at(index)
        if term is None:
            raise LocalError(f"index {index} is not in the log")
        members = self._confs.at(index)
        log.compact(Snapshot(index, term, data, members))
        self._confs.compact(index, members)

    # -- Ready ------------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        log = self._log
        read_only = self._read_only
        return bool(
            self._msgs
            or self._append_dirty
            or read_only.broadcast_wanted
            or log.committed > log.handed
            or log.unstable_from <= log.offset + len(log.entries) - 1
            or read_only.released
            or read_only.failed
            or log.pending_snapshot is not None
            or self._prev_hs[0] != self._term
            or self._prev_hs[1] != self._vote
        )

    def ready(self) -> Ready:
        read_only = self._read_only
        if self._role is Role.LEADER:
            if read_only.broadcast_wanted:
                self._broadcast_heartbeat()
            if self._append_dirty:
                self._append_dirty = False
                self._flush_appends()
        else:
            self._append_dirty = False
            read_only.broadcast_wanted = False
        log = self._log
        snapshot, log_replaced, entries, committed = log.take_ready()
        # The commit index is volatile state (Raft, Figure 2): a Ready whose only durable change would be
        # a higher commit index persists nothing (as etcd's raft, whose `MustSync` ignores the commit
        # index). The index rides along with the next write that persists something else (entries, a
        # snapshot, a term or a vote); a restart from an older one re-learns it from the leader. Saving
        # it on its own cost a fsynced write on every node per commit, and on the leader one on the path
        # of every client's answer (persist, then apply).
        prev = self._prev_hs
        hard_state = None
        # A leader whose term and vote are those of earlier Readys (so durable: a driver persists a Ready
        # before it asks for the next) sends only appends and heartbeats of its own log, refusals, and
        # pre-vote answers, none of which promises what this Ready's write holds: they may go while it
        # is persisted (`Ready.send_while_persisting`). Its own copy counts only at `advance`.
        same_term_and_vote = prev[0] == self._term and prev[1] == self._vote
        if not same_term_and_vote or (prev[2] != log.committed and (entries or snapshot is not None)):
            hs_tuple = (self._term, self._vote, log.committed)
            self._prev_hs = hs_tuple
            hard_state = HardState(*hs_tuple)
        messages: tuple[Outgoing, ...] = ()
        if self._msgs:
            messages = tuple(self._msgs)
            self._msgs = []
        read_states: tuple[ReadState, ...] = ()
        if read_only.released:
            read_states = tuple(read_only.released)
            read_only.released = []
        failed: tuple[int, ...] = ()
        if read_only.failed:
            failed = tuple(read_only.failed)
            read_only.failed = []
        if (
            hard_state is None
            and snapshot is None
            and not entries
            and not messages
            and not committed
            and not read_states
            and not failed
        ):
            return EMPTY_READY
        return Ready(
            hard_state=hard_state,
            snapshot=snapshot,
            log_replaced=log_replaced,
            entries=entries,
            messages=messages,
            committed=committed,
            read_states=read_states,
            failed_reads=failed,
            send_while_persisting=same_term_and_vote and self._role is Role.LEADER and bool(messages),
        )

    def advance(self, ready: Ready) -> None:
        log = self._log
        if ready.committed:
            log.applied = max(log.applied, ready.committed[-1].index)
        if ready.snapshot is not None:
            log.applied = max(log.applied, ready.snapshot.index)
        if ready.entries and self._role is Role.LEADER:
            # The leader counts its own copy of an entry only now that it is durable (Raft dissertation
            # 10.2.1): a commit must rest on a quorum of stored copies, whatever order the driver sends
            # and saves in.
            own = self._tracker.progress.get(self._id)
            if own is not None and ready.entries[-1].index > own.match:
                own.match = ready.entries[-1].index
                self._maybe_commit()

    # -- step -------------------------------------------------------------------------------------

    def step(self, envelope: Envelope) -> None:
        m = envelope.content
        src = envelope.source
        if envelope.destination != self._id:
            self._count("misrouted")
            return
        if src == self._id:
            self._count("from_self")
            return
        if isinstance(m, AppendEntries):
            if not valid_append(m):
                self._count("invalid")
            elif self._admit(src, m.term, from_leader=True):
                self._on_append(src, m)
        elif isinstance(m, AppendResponse):
            if m.term < 0 or m.index < 0 or m.hint_index < 0 or m.hint_term < 0:
                self._count("invalid")
            elif self._is_member(src) and self._admit(src, m.term):
                self._on_append_response(src, m)
        elif isinstance(m, Heartbeat):
            if m.term < 1 or m.commit < 0 or m.round < 0:
                self._count("invalid")
            elif self._admit(src, m.term, from_leader=True):
                self._on_heartbeat(src, m)
        elif isinstance(m, HeartbeatResponse):
            if m.term < 1 or m.round < 0:
                self._count("invalid")
            elif self._is_member(src) and self._admit(src, m.term):
                self._on_heartbeat_response(src, m)
        elif isinstance(m, VoteRequest):
            self._step_vote_request(src, m)
        elif isinstance(m, VoteResponse):
            if m.term < 0:
                self._count("invalid")
            elif src not in self._tracker.voter_set:
                self._count("non_member")
            elif self._admit(src, m.term, keep_term=m.pre_vote and m.granted):
                # A pre-vote grant carries the term we asked for; ours changes only when we win.
                self._on_vote_response(src, m)
        elif isinstance(m, InstallSnapshot):
            if not valid_install(m):
                self._count("invalid")
            elif self._admit(src, m.term, from_leader=True):
                self._on_install_snapshot(src, m)
        elif isinstance(m, SnapshotResponse):
            if m.term < 1 or m.index < 1 or m.next_offset < 0:
                self._count("invalid")
            elif self._is_member(src) and self._admit(src, m.term):
                self._on_snapshot_response(src, m)
        elif isinstance(m, TimeoutNow):
            if m.term < 1:
                self._count("invalid")
            elif self._admit(src, m.term):
                self._on_timeout_now(src)
        else:
            self._count("unknown_message")

    def _is_member(self, src: NodeId) -> bool:
        tracker = self._tracker
        if src in tracker.voter_set or src in tracker.learner_set:
            return True
        self._count("non_member")
        return False

    def _admit(self, src: NodeId, term: int, *, from_leader: bool = False, keep_term: bool = False) -> bool:
        """The term rules every message goes through (5.1): a higher term makes us a follower in it, a
        lower one is dropped. Returns False if the message must be dropped."""
        if term > self._term:
            if not keep_term:
                self._become_follower(term, src if from_leader else None)
        elif term < self._term:
            if from_leader and (self.config.check_quorum or self.config.pre_vote):
                # Tell the stale leader about the newer term, or (with pre-vote) it may never learn it.
                self._send(src, AppendResponse(self._term, 0, True))
            self._count("stale_term")
            return False
        return True

    def _step_vote_request(self, src: NodeId, m: VoteRequest) -> None:
        if m.term < 1 or m.last_log_index < 0 or m.last_log_term < 0 or m.last_log_term > m.term:
            self._count("invalid")
            return
        # Vote requests are answered whatever our configuration says: it may be stale (a learner may have
        # been promoted, a voter added, without our knowing yet), and refusing could stall elections
        # for good. Candidates count only their own voters, so this never lets a learner count.
        if m.term > self._term and not m.transfer and self._in_lease():
            self._count("vote_in_lease")  # leader stickiness (dissertation 4.2.3, 9.6)
            return
        if m.term < self._term and m.pre_vote:
            self._send(src, VoteResponse(self._term, False, True))
        if self._admit(src, m.term, keep_term=m.pre_vote):
            self._on_vote_request(src, m)

    def _in_lease(self) -> bool:
        return (
            self.config.check_quorum
            and (self._leader is not None or self._restart_quiet)
            and self._election_elapsed < self._et
        )

    def _send(self, to: NodeId, content: object) -> None:
        self._msgs.append(Outgoing(to, content))

    # -- role changes -----------------------------------------------------------------------------

    def _reset_election_timer(self) -> None:
        self._election_elapsed = 0
        self._randomized_timeout = self._rng.randrange(self._et, 2 * self._et)

    def _become_follower(self, term: int, leader: NodeId | None) -> None:
        if self._role is Role.LEADER:
            self._read_only.fail_all()
            self._tracker.clear_progress()
            self._transferee = None
            self._append_dirty = False
            self._read_only.broadcast_wanted = False
        if term != self._term:
            self._term = term
            self._vote = None
        self._leader = leader
        self._role = Role.LEARNER if self._id in self._tracker.learner_set else Role.FOLLOWER
        self._tracker.reset_votes()
        self._reset_election_timer()

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self._role = Role.PRE_CANDIDATE
            request_term = self._term + 1
        else:
            self._term += 1
            self._vote = self._id
            self._role = Role.CANDIDATE
            request_term = self._term
            self._count("elections_started")
        self._leader = None
        tracker = self._tracker
        tracker.reset_votes()
        tracker.record_vote(self._id, True)
        self._reset_election_timer()
        if tracker.tally_votes() is VoteResult.WON:
            self._won(pre)
            return
        log = self._log
        request = VoteRequest(request_term, log.last_index, log.last_term, pre, transfer)
        for voter in tracker.voters:
            if voter != self._id:
                self._send(voter, request)

    def _won(self, pre: bool) -> None:
        if pre:
            self._campaign(pre=False, transfer=False)
        else:
            self._become_leader()

    def _become_leader(self) -> None:
        self._count("elections_won")
        self._role = Role.LEADER
        self._leader = self._id
        self._elected_by = tuple(voter for voter, granted in self._tracker.votes.items() if granted)
        self._tracker.reset_votes()
        self._transferee = None
        self._heartbeat_elapsed = 0
        self._election_elapsed = 0
        self._tracker.reset_progress(self._id, self._log.last_index, self._ticks)
        self._read_only.reset()
        self._append_local(EntryKind.NOOP, b"")

    def _append_local(self, kind: EntryKind, data: bytes) -> int:
        log = self._log
        index = log.offset + len(log.entries)
        entry = LogEntry(index, self._term, kind, data)
        log.entries.append(entry)
        own = self._tracker.progress.get(self._id)
        if own is not None:
            # `match` waits for the entry to be durable (`advance`); a lone voter commits there too
            own.next = index + 1
        self._append_dirty = True
        if kind == EntryKind.CONFIG:
            self._record_config(entry)
            self._config_appended()
        return index

    # -- commitment -------------------------------------------------------------------------------

    def _maybe_commit(self) -> bool:
        """Advance the commit index to the largest index a quorum of voters stores, if the commit rule
        allows it. Returns True if the commit index moved."""
        index = self._quorum_match()
        if index <= self._log.committed or not self._can_commit_by_counting(index):
            return False
        self._log.committed = index
        self._on_leader_commit()
        return True

    def _can_commit_by_counting(self, index: int) -> bool:
        """Raft's rule (5.4.2, Figure 8): only an entry of the leader's current term is committed by
        counting replicas; earlier entries are committed indirectly, by Log Matching."""
        return self._log.term_at(index) == self._term

    def _quorum_match(self) -> int:
        """The largest index a quorum of voters stores."""
        return self._tracker.committed(self._log.committed)

    def _on_leader_commit(self) -> None:
        self._append_dirty = True  # tell followers
        log = self._log
        if self._read_only.waiting and log.term_at(log.committed) == self._term:
            for request_id in self._read_only.take_waiting():
                self._register_read(request_id)
        if self._id not in self._tracker.voter_set and self._confs.last_index <= log.committed:
            self._step_down_removed()

    def _step_down_removed(self) -> None:
        """Our removal is committed (4.2.2): hand over to the most up-to-date voter and step down."""
        last = self._log.last_index
        best: NodeId | None = None
        progress = self._tracker.progress
        for voter in self._tracker.voters:
            pr = progress.get(voter)
            if pr is not None and pr.match == last:
                best = voter
                break
        if best is not None:
            self._send(best, TimeoutNow(self._term))
        self._count("removed_leader_step_down")
        self._become_follower(self._term, None)

    # -- replication (leader) ---------------------------------------------------------------------

    def _flush_appends(self) -> None:
        for node, pr in list(self._tracker.progress.items()):
            if node != self._id:
                self._send_append(node, pr)

    def _send_append(self, to: NodeId, pr: Progress) -> None:
        config = self.config
        max_inflight = config.max_inflight_msgs
        log = self._log
        last = log.last_index
        commit = log.committed
        while True:
            state = pr.state
            if state is ProgressState.SNAPSHOT:
                return
            if state is ProgressState.PROBE:
                if pr.probe_sent:
                    return
            elif len(pr.inflight) >= max_inflight:
                return
            prev = pr.next - 1
            prev_term = log.term_at(prev)
            if prev_term is None:
                if prev > last:  # defensive: never probe beyond our log
                    pr.next = last + 1
                    continue
                self._start_snapshot(to, pr)
                return
            if pr.next <= last:
                entries = log.batch(pr.next, config.max_entries_per_msg, config.max_bytes_per_msg)
            else:
                # Nothing new for a replicating follower: an append only to carry a higher commit index,
                # unless `commit_only_appends` is off (then the next append or heartbeat carries it).
                if state is ProgressState.REPLICATE and (
                    pr.sent_commit >= commit or not config.commit_only_appends
                ):
                    return
                entries = ()
            self._msgs.append(Outgoing(to, AppendEntries(self._term, prev, prev_term, entries, commit)))
            pr.sent_commit = commit
            if state is ProgressState.PROBE:
                pr.probe_sent = True
                return
            if not entries:
                return
            pr.next = entries[-1].index + 1
            pr.inflight.append(pr.next - 1)
            if pr.next > last:
                return

    def _start_snapshot(self, to: NodeId, pr: Progress) -> None:
        snap = self._log.snapshot
        if snap is None:  # cannot happen: a compacted prefix implies a snapshot
            self._count("missing_snapshot")
            return
        pr.become_snapshot(snap, self._ticks)
        self._count("snapshot_sent")
        self._send_snapshot_chunk(to, pr)

    def _send_snapshot_chunk(self, to: NodeId, pr: Progress) -> None:
        snap = pr.snapshot
        if snap is None:
            return
        data = snap.data
        offset = min(pr.snap_offset, len(data))
        end = min(len(data), offset + self.config.snapshot_chunk_bytes)
        done = end >= len(data)
        entries: tuple[LogEntry, ...] = ()
        if done:
            log = self._log
            if snap.index != log.snap_index:
                # We compacted again meanwhile and no longer hold the entries after this snapshot.
                self._start_snapshot(to, pr)
                return
            cfg = self.config
            entries = log.batch(snap.index + 1, cfg.max_entries_per_msg, cfg.max_bytes_per_msg)
        config = snap.config
        if not isinstance(config, Membership):  # cannot happen: every snapshot we hold carries one
            self._count("bad_snapshot_config")
            return
        self._send(
            to,
            InstallSnapshot(
                self._term,
                snap.index,
                snap.term,
                config,
                offset,
                data[offset:end],
                done,
                entries,
                total_bytes=len(data),
            ),
        )

    def _on_append_response(self, src: NodeId, m: AppendResponse) -> None:
        if self._role is not Role.LEADER:
            return
        pr = self._tracker.progress.get(src)
        if pr is None:
            self._count("unknown_peer")
            return
        pr.recent_active = True
        log = self._log
        if m.reject:
            probe = m.hint_index
            if m.hint_term > 0:
                probe = log.find_conflict_by_term(probe, m.hint_term)  # skip the conflicting term at once
            if pr.maybe_decrease(m.index, probe):
                self._append_dirty = True
            return
        if m.index > log.last_index:
            self._count("invalid")
            return
        if pr.maybe_update(m.index, self._ticks):
            self._append_dirty = True
            if self._maybe_commit() and not self._is_leader():
                return  # our removal got committed and we stepped down
            if src == self._transferee and pr.match == log.last_index:
                self._send(src, TimeoutNow(self._term))

    def _on_snapshot_response(self, src: NodeId, m: SnapshotResponse) -> None:
        if self._role is not Role.LEADER:
            return
        pr = self._tracker.progress.get(src)
        if pr is None:
            self._count("unknown_peer")
            return
        pr.recent_active = True
        if pr.snapshot_acked(m.index, m.next_offset, self._ticks):
            self._send_snapshot_chunk(src, pr)

    # -- heartbeats and reads (leader; see `readonly`) ----------------------------------------------

    def _broadcast_heartbeat(self) -> None:
        r = self._read_only.start_round(self._ticks)
        commit = self._log.committed
        term = self._term
        msgs = self._msgs
        for node, pr in self._tracker.progress.items():
            if node == self._id:
                pr.acked_round = r
            else:
                msgs.append(Outgoing(node, Heartbeat(term, min(pr.match, commit), r)))
        self._read_only.confirm(self._tracker.confirmed_round())

    def _on_heartbeat_response(self, src: NodeId, m: HeartbeatResponse) -> None:
        if self._role is not Role.LEADER:
            return
        tracker = self._tracker
        pr = tracker.progress.get(src)
        if pr is None:
            self._count("unknown_peer")
            return
        pr.recent_active = True
        if m.round > self._read_only.round:
            self._count("invalid")
            return
        if m.round > pr.acked_round:
            pr.acked_round = m.round
            if src in tracker.voter_set:
                self._read_only.confirm(tracker.confirmed_round())
        last = self._log.last_index
        if pr.heartbeat_acked(last, self._ticks, self._stall_ticks, self.config.max_inflight_msgs):
            self._send_snapshot_chunk(src, pr)
        if pr.match < last or pr.state is ProgressState.PROBE:
            self._append_dirty = True

    def _register_read(self, request_id: int) -> None:
        voters = self._tracker.voters
        sole_voter = len(voters) == 1 and voters[0] == self._id
        self._read_only.register(request_id, self._log.committed, self._ticks, sole_voter=sole_voter)

    # -- follower side ----------------------------------------------------------------------------

    def _follow(self, src: NodeId) -> bool:
        """A message from the leader of our term: accept `src` as leader (once per term)."""
        role = self._role
        if role is Role.LEADER:
            self._count("conflicting_leader")
            return False
        if role is Role.CANDIDATE or role is Role.PRE_CANDIDATE:
            self._become_follower(self._term, src)
        elif self._leader is None:
            self._leader = src
        elif self._leader != src:
            self._count("conflicting_leader")
            return False
        self._election_elapsed = 0
        self._restart_quiet = False
        return True

    def _on_append(self, src: NodeId, m: AppendEntries) -> None:
        if not self._follow(src):
            return
        log = self._log
        prev = m.prev_index
        prev_term = m.prev_term
        entries = m.entries
        commit = log.committed
        if prev < commit:
            # Entries up to our commit index are committed, hence equal to the leader's: skip them.
            skip = commit - prev
            if skip >= len(entries):
                self._send(src, AppendResponse(self._term, commit))
                return
            prev_term = entries[skip - 1].term
            entries = entries[skip:]
            prev = commit
        if log.term_at(prev) != prev_term:
            hint = log.find_conflict_by_term(min(prev, log.last_index), prev_term)
            hint = max(hint, log.committed)
            hint_term = log.term_at(hint) or 0
            self._send(src, AppendResponse(self._term, m.prev_index, True, hint, hint_term))
            return
        last_new = prev + len(entries)
        if entries and not self._append_from_leader(entries):
            return
        new_commit = min(m.commit, last_new)
        log.committed = max(log.committed, new_commit)
        self._send(src, AppendResponse(self._term, last_new))

    def _on_heartbeat(self, src: NodeId, m: Heartbeat) -> None:
        if not self._follow(src):
            return
        log = self._log
        if m.commit > log.committed:
            log.committed = min(m.commit, log.last_index)
        self._send(src, HeartbeatResponse(self._term, m.round))

    def _on_install_snapshot(self, src: NodeId, m: InstallSnapshot) -> None:
        if not self._follow(src):
            return
        if m.index <= self._log.committed:
            self._snap_recv.cancel()
            self._send(src, AppendResponse(self._term, self._log.committed))
            return
        outcome = self._snap_recv.receive(src, self._term, m)
        if outcome.rejected is not None:
            self._count(outcome.rejected)
        if outcome.reply_offset is not None:
            self._send(src, SnapshotResponse(self._term, m.index, outcome.reply_offset))
        if outcome.data is None:
            return
        self._install_snapshot(Snapshot(m.index, m.snap_term, outcome.data, m.config), m.config)
        last_new = m.index
        if m.entries and self._append_from_leader(m.entries):
            last_new = m.entries[-1].index
        self._count("snapshot_installed")
        self._send(src, AppendResponse(self._term, last_new))

    def _install_snapshot(self, snap: Snapshot, members: Membership) -> None:
        if self._log.install(snap):
            self._confs.compact(snap.index, members)
        else:
            self._confs.reset(members)
        self._config_appended()

    def _on_vote_request(self, src: NodeId, m: VoteRequest) -> None:
        log = self._log
        last_term = log.last_term
        up_to_date = m.last_log_term > last_term or (
            m.last_log_term == last_term and m.last_log_index >= log.last_index
        )
        can_vote = (
            self._vote == src
            or (self._vote is None and self._leader is None)
            or (m.pre_vote and m.term > self._term)
        )
        if can_vote and up_to_date:
            if m.pre_vote:
                self._send(src, VoteResponse(m.term, True, True))
            else:
                self._vote = src
                self._election_elapsed = 0
                self._send(src, VoteResponse(self._term, True, False))
        else:
            self._send(src, VoteResponse(self._term, False, m.pre_vote))

    def _on_vote_response(self, src: NodeId, m: VoteResponse) -> None:
        if m.pre_vote:
            if self._role is not Role.PRE_CANDIDATE:
                return
            if m.granted and m.term != self._term + 1:
                return
        elif self._role is not Role.CANDIDATE or m.term != self._term:
            return
        tracker = self._tracker
        if not tracker.record_vote(src, m.granted):
            return
        result = tracker.tally_votes()
        if result is VoteResult.WON:
            self._won(m.pre_vote)
        elif result is VoteResult.LOST:
            self._become_follower(self._term, None)

    def _on_timeout_now(self, src: NodeId) -> None:
        if self._role is Role.LEADER or self._leader != src or self._id not in self._tracker.voter_set:
            self._count("ignored_timeout_now")
            return
        self._campaign(pre=False, transfer=True)
