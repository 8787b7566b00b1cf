"""Raft (Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm", and Ongaro's
dissertation "Consensus: Bridging Theory and Practice"), sans-I/O, in the style of etcd's raft.

`RaftNode` implements `dscore.protocols.contract.ProtocolCore`: it never does I/O, never reads a clock
(time is `tick()`s) and draws randomness only from the injected `random.Random`. Section numbers below
refer to the paper (5.x) and the dissertation (3.x, 4.x, 6.x, 9.x).

What is implemented
-------------------

- Leader election (5.2) with randomized timeouts in `[election_timeout_ticks, 2*election_timeout_ticks)`
  drawn from the injected rng; term and vote go into `Ready.hard_state` in the same `Ready` as the vote
  reply, so a vote is durable before it is announced. Election restriction (5.4.1).
- Pre-vote (9.6) and check-quorum (6.2): a pre-candidate asks "would you vote for me at term+1?" without
  anyone changing term; a node that heard from a leader within the election timeout ignores (pre)vote
  requests (leader stickiness) unless the request comes from a leadership transfer; a leader that did not
  hear from a quorum during an election timeout steps down.
- Log replication (5.3): consistency check, conflict truncation, fast backtracking (the follower's reject
  carries a hint: the largest index at or below the probe whose term is at most the probe's term, and the
  leader jumps over the conflicting term with the same search in its own log, as in etcd), batching (at
  most `max_entries_per_msg` entries and about `max_bytes_per_msg` bytes per message), and flow control
  per follower as in etcd: PROBE (one append in flight until answered), REPLICATE (optimistic pipelining
  with at most `max_inflight_msgs` appends in flight), SNAPSHOT (sending a snapshot).
- Commitment (5.3, 5.4.2): the leader commits an index only when a quorum of voters stores it AND it is an
  entry of the current term (the Figure 8 rule). The rule lives in `_maybe_commit()` /
  `_can_commit_by_counting(index)` so a test can subclass it with a deliberately broken variant. A new
  leader appends a NOOP entry so it can commit.
- Linearizable reads without writing the log (6.4): `read_index(request_id)` on the leader records the
  commit index, confirms leadership with a heartbeat round (a quorum of heartbeat responses carrying the
  round number) and only after the leader committed an entry of its term; `Ready.read_states` then releases
  `(request_id, index)`. Reads that wait when the leader steps down are failed (`Ready.failed_reads`).
  Followers do not forward reads: `read_index` raises `NotLeaderError` with the leader hint (as `propose`
  does), and the client retries on the leader. `ReadOnlyOption.LEASE` serves a read at once, with the
  commit index, while the leader's lease holds (see "Lease reads" below), and falls back to a heartbeat
  round otherwise.
- Log compaction and snapshots (chapter 5 of the dissertation, 7 of the paper): `compact(index, data)`
  records a snapshot of the applied state machine and drops the log prefix; a follower that needs
  compacted entries receives `InstallSnapshot` in chunks of `snapshot_chunk_bytes` (stop-and-wait, with
  retransmission when a chunk is not acknowledged within `_stall_ticks`). A follower whose log has the
  snapshot's last entry keeps the entries after it; otherwise it discards its whole log, in memory and
  in storage (`Ready.log_replaced`). The final chunk also carries the leader's entries right after the
  snapshot, if it has any, which saves the follower a round trip.
- Membership changes: single-server changes (4.1); see "Membership" below. Learners: non-voting members
  that receive the log, never campaign and never count for a quorum or an election. (Like etcd's, a
  learner still answers vote requests: it may have been promoted without knowing yet, and refusing could
  stall elections; a candidate counts only the votes of its own voters.)
- Leadership transfer (3.10): `transfer_leadership(to)`.
- Robustness: stale-term messages are dropped (a stale leader's append or heartbeat is answered with
  our term, so that it steps down, as etcd does); higher-term messages update the term (except pre-vote
  requests and granted pre-vote responses); duplicated and reordered messages are harmless; invalid
  messages (negative indexes, non-contiguous entries, a response from a non-member, ...) are dropped
  and counted in `counters` (reason -> count), never raised.

Membership: single-server changes, and why
------------------------------------------

One voter or learner is added, removed or promoted per change, and the new configuration takes effect on
each server as soon as the CONFIG entry is appended to its log (not when committed), as in the
dissertation (4.1). Any two majorities of configurations that differ by one voter overlap, so no joint
configuration is needed. This is simpler to implement, to test and to reason about than joint consensus
(one active configuration, a plain majority everywhere) and covers what operators do in practice (grow
or shrink one node at a time). Two rules make it safe:

- at most one uncommitted configuration entry at a time (a second change is refused until the first is
  committed), and
- the fix from Ongaro's 2015 raft-dev post: a leader proposes a change only after it has committed an
  entry of its own term (its NOOP), otherwise a change from a previous term and one from this term could
  both be "one step" from different bases.

A CONFIG entry's data is `codec.encode_value(Membership(voters, learners))`: the whole new membership,
not a delta, so replaying or truncating the log restores the configuration exactly (a truncated config
entry reverts the node to the previous one). `Snapshot.config` is the `Membership` at the snapshot index.
A leader that removes itself keeps leading (without counting itself) until the removal is committed,
then steps down and sends TimeoutNow to the most up-to-date voter (4.2.2).

Lease reads and the clock-drift bound
-------------------------------------

With `ReadOnlyOption.LEASE` (which requires `check_quorum=True`), a heartbeat round broadcast at leader
tick `t` and acknowledged by a quorum gives the leader a lease until tick `t + lease_ticks`. It relies on
leader stickiness: a voter that received that heartbeat ignores (pre)vote requests until
`election_timeout_ticks` of its own ticks have passed since (and a restarted node ignores them for its
first `election_timeout_ticks` ticks), so no other leader can be elected before then. Counting from when
the heartbeat was *sent* makes message delay irrelevant; tick granularity costs up to one tick, so the
lease is safe if `lease_ticks` leader ticks never take longer in real time than
`election_timeout_ticks - 1` ticks of any other node: ticks on different nodes must not drift apart in
rate by more than `(election_timeout_ticks - 1) / lease_ticks - 1` (12.5% with the defaults 10 and 8).
The lease is always shorter than the minimum election timeout (`lease_ticks < election_timeout_ticks`).
A leader stops serving lease reads for the rest of its term once it starts a leadership transfer (a
TimeoutNow bypasses stickiness).

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
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter

from dscore.core import codec
from dscore.core.envelope import Envelope
from dscore.core.errors import ConfigError, DecodeError, LocalError, NotLeaderError
from dscore.core.ids import NodeId
from dscore.core.registry import message
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

__all__ = [
    "AppendEntries",
    "AppendResponse",
    "ConfChangeRejectedError",
    "ConfChangeType",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "Membership",
    "Progress",
    "ProgressState",
    "RaftConfig",
    "RaftNode",
    "ReadOnlyOption",
    "Role",
    "SnapshotResponse",
    "TimeoutNow",
    "VoteRequest",
    "VoteResponse",
]


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"
    #: a follower that is a learner in its current configuration (never votes, never campaigns)
    LEARNER = "learner"


class ReadOnlyOption(enum.Enum):
    #: confirm leadership with a heartbeat round per batch of reads (dissertation 6.4)
    READ_INDEX = "read_index"
    #: serve at once while the leader's check-quorum lease holds (dissertation 6.4.1); see module doc
    LEASE = "lease"


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class ConfChangeType(enum.Enum):
    ADD_VOTER = "add_voter"
    REMOVE_VOTER = "remove_voter"
    ADD_LEARNER = "add_learner"
    REMOVE_LEARNER = "remove_learner"
    PROMOTE_LEARNER = "promote_learner"


class ConfChangeRejectedError(LocalError):
    """A membership change was refused (not leader, another change pending, no commit in this term, ...)."""


def _check_int(name: str, value: object, minimum: int) -> None:
    if type(value) is not int or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Raft's knobs. Every duration is in ticks."""

    #: base election timeout; each wait is drawn from [election_timeout_ticks, 2*election_timeout_ticks)
    election_timeout_ticks: int = 10
    #: a leader broadcasts a heartbeat every `heartbeat_ticks` (must be < election_timeout_ticks)
    heartbeat_ticks: int = 1
    #: appends in flight per follower in REPLICATE state
    max_inflight_msgs: int = 256
    #: entries per AppendEntries
    max_entries_per_msg: int = 512
    #: payload bytes per AppendEntries (at least one entry is always sent)
    max_bytes_per_msg: int = 1 << 20
    #: bytes of snapshot data per InstallSnapshot chunk
    snapshot_chunk_bytes: int = 1 << 20
    pre_vote: bool = True
    check_quorum: bool = True
    read_only_option: ReadOnlyOption = ReadOnlyOption.READ_INDEX
    #: lease length for `ReadOnlyOption.LEASE`; None means `election_timeout_ticks - 2`
    lease_ticks: int | None = None

    def __post_init__(self) -> None:
        _check_int("election_timeout_ticks", self.election_timeout_ticks, 2)
        _check_int("heartbeat_ticks", self.heartbeat_ticks, 1)
        if self.heartbeat_ticks >= self.election_timeout_ticks:
            raise ConfigError(
                f"heartbeat_ticks ({self.heartbeat_ticks}) must be smaller than election_timeout_ticks "
                f"({self.election_timeout_ticks})"
            )
        _check_int("max_inflight_msgs", self.max_inflight_msgs, 1)
        _check_int("max_entries_per_msg", self.max_entries_per_msg, 1)
        _check_int("max_bytes_per_msg", self.max_bytes_per_msg, 1)
        _check_int("snapshot_chunk_bytes", self.snapshot_chunk_bytes, 1)
        for name in ("pre_vote", "check_quorum"):
            if type(getattr(self, name)) is not bool:
                raise ConfigError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not isinstance(self.read_only_option, ReadOnlyOption):
            raise ConfigError(f"read_only_option must be a ReadOnlyOption, got {self.read_only_option!r}")
        if self.lease_ticks is not None:
            _check_int("lease_ticks", self.lease_ticks, 1)
            if self.lease_ticks >= self.election_timeout_ticks:
                raise ConfigError(
                    f"lease_ticks ({self.lease_ticks}) must be smaller than election_timeout_ticks "
                    f"({self.election_timeout_ticks})"
                )
        if self.read_only_option is ReadOnlyOption.LEASE:
            if not self.check_quorum:
                raise ConfigError("read_only_option=LEASE needs check_quorum=True (leader stickiness)")
            if self.effective_lease_ticks < 1:
                raise ConfigError(
                    f"election_timeout_ticks={self.election_timeout_ticks} leaves no room for a lease; "
                    "raise it or set lease_ticks"
                )

    @property
    def effective_lease_ticks(self) -> int:
        return self.lease_ticks if self.lease_ticks is not None else self.election_timeout_ticks - 2


# -- wire and storage messages ---------------------------------------------------------------------


@message("raft.hard_state")
@dataclass(frozen=True, slots=True)
class HardState:
    """What Raft must persist before answering: current term, vote in that term, and commit index."""

    term: int
    vote: NodeId | None
    commit: int


@message("raft.membership")
@dataclass(frozen=True, slots=True)
class Membership:
    """A configuration: sorted voter and learner ids (disjoint)."""

    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()

    def __post_init__(self) -> None:
        if len(set(self.voters)) != len(self.voters) or len(set(self.learners)) != len(self.learners):
            raise ValueError("duplicate node ids in a membership")
        if set(self.voters) & set(self.learners):
            raise ValueError("a node cannot be both voter and learner")


@message("raft.vote_request")
@dataclass(frozen=True, slots=True)
class VoteRequest:
    """RequestVote (5.2); with `pre_vote` the PreVote of 9.6, sent with term = candidate's term + 1.
    `transfer` marks a campaign started by TimeoutNow, which bypasses leader stickiness (3.10)."""

    term: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False


@message("raft.vote_response")
@dataclass(frozen=True, slots=True)
class VoteResponse:
    term: int
    granted: bool
    pre_vote: bool = False


@message("raft.append")
@dataclass(frozen=True, slots=True)
class AppendEntries:
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[LogEntry, ...]
    commit: int


@message("raft.append_response")
@dataclass(frozen=True, slots=True)
class AppendResponse:
    """Success: `index` is the last index known to match the leader. Reject: `index` is the rejected
    `prev_index`, and (`hint_index`, `hint_term`) is where the leader should probe next (etcd style)."""

    term: int
    index: int
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0


@message("raft.heartbeat")
@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Leader liveness; `commit` is min(follower's match, leader commit); `round` numbers heartbeat
    rounds within a leadership (ReadIndex confirmation and lease)."""

    term: int
    commit: int
    round: int


@message("raft.heartbeat_response")
@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    term: int
    round: int


@message("raft.install_snapshot")
@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """One chunk of the leader's snapshot. The final chunk (`done`) carries the entries right after the
    snapshot, so the follower's `Ready` that installs it also rewrites its stored log suffix."""

    term: int
    index: int
    snap_term: int
    config: Membership
    offset: int
    data: bytes
    done: bool
    entries: tuple[LogEntry, ...] = ()


@message("raft.snapshot_response")
@dataclass(frozen=True, slots=True)
class SnapshotResponse:
    """The follower holds the first `next_offset` bytes of snapshot `index`."""

    term: int
    index: int
    next_offset: int


@message("raft.timeout_now")
@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer (3.10): start an election now, skipping pre-vote and stickiness."""

    term: int


_entry_term = attrgetter("term")


class Progress:
    """The leader's view of one member (etcd's Progress). Read-only outside the core."""

    __slots__ = (
        "acked_round",
        "inflight",
        "last_progress_tick",
        "match",
        "next",
        "probe_sent",
        "recent_active",
        "sent_commit",
        "snap_offset",
        "snap_reported",
        "snapshot",
        "state",
    )

    def __init__(self, next_index: int, now: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        #: PROBE: an append is outstanding; no more until an answer or a heartbeat response
        self.probe_sent = False
        #: REPLICATE: last index of each append in flight
        self.inflight: deque[int] = deque()
        self.recent_active = False
        self.snapshot: Snapshot | None = None
        self.snap_offset = 0
        self.snap_reported = 0
        self.sent_commit = 0
        self.acked_round = 0
        self.last_progress_tick = now

    def __repr__(self) -> str:
        return f"Progress({self.state.value}, match={self.match}, next={self.next})"


class _SnapshotBuffer:
    __slots__ = ("data", "index", "leader", "leader_term", "term")

    def __init__(self, leader: NodeId, leader_term: int, index: int, term: int) -> None:
        self.leader = leader
        self.leader_term = leader_term
        self.index = index
        self.term = term
        self.data = bytearray()


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
    `restore_discarded_entries`; events `check_quorum_step_down`, `removed_leader_step_down`,
    `transfer_aborted`, `snapshot_sent`, `snapshot_installed`.
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
        self._stall_ticks = max(2 * config.heartbeat_ticks, self._et // 2)
        self._lease_mode = config.read_only_option is ReadOnlyOption.LEASE

        # The log: _entries[i] has index _offset + i; _snap_* describe the entry just before.
        self._entries: list[LogEntry] = []
        self._offset = 1
        self._snap_index = 0
        self._snap_term = 0
        self._snapshot: Snapshot | None = None
        initial = set(peers)
        if not join:
            initial.add(node_id)
        self._base_membership = Membership(tuple(sorted(initial)), ())
        #: (index, membership) of every CONFIG entry in the log, in index order
        self._conf_history: list[tuple[int, Membership]] = []
        self._members = self._base_membership
        self._voters: tuple[NodeId, ...] = ()
        self._voter_set: frozenset[NodeId] = frozenset()
        self._learner_set: frozenset[NodeId] = frozenset()

        self._term = 0
        self._vote: NodeId | None = None
        self._commit = 0
        self._pending_snapshot: Snapshot | None = None
        #: the pending snapshot replaces the whole stored log (installed without a matching entry)
        self._pending_log_replaced = False
        if durable is not None:
            self._restore(durable)
        #: first index not yet handed out in Ready.entries
        self._unstable_from = self.last_index + 1
        #: last index handed out in Ready.committed (or covered by a snapshot)
        self._handed = self._snap_index
        #: last index the driver acknowledged applying (advance)
        self._applied = self._snap_index
        self._prev_hs: tuple[int, NodeId | None, int] = (self._term, self._vote, self._commit)

        self._msgs: list[Outgoing] = []
        self._read_states: list[ReadState] = []
        self._failed_reads: list[int] = []

        self._role = Role.FOLLOWER
        self._leader: NodeId | None = None
        self._ticks = 0
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self._et
        #: with lease reads, a restarted node keeps the stickiness it may have promised before the crash
        self._restart_quiet = self._lease_mode
        self._votes: dict[NodeId, bool] = {}
        self._progress: dict[NodeId, Progress] = {}
        self._append_dirty = False
        self._transferee: NodeId | None = None
        self._transfer_elapsed = 0
        self._snap_recv: _SnapshotBuffer | None = None
        # Reads (leader only).
        self._round = 0
        self._confirmed_round = 0
        self._read_bcast = False
        self._reads: deque[tuple[int, int, int]] = deque()  # (round, request_id, index)
        self._reads_waiting: list[int] = []  # until the leader commits an entry of its term
        self._round_ticks: deque[tuple[int, int]] = deque()  # (round, tick sent), LEASE only
        self._lease_start: int | None = None
        self._lease_blocked = False

        self._set_membership(self._current_membership())
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
            self._snap_index = snap.index
            self._snap_term = snap.term
            self._offset = snap.index + 1
            self._snapshot = snap
            self._base_membership = snap.config
            self._pending_snapshot = snap  # re-announced so an empty state machine restores it
        expected = self._offset
        prev_term = self._snap_term
        for entry in durable.entries:
            if entry.index <= self._snap_index:
                continue
            if entry.index != expected or entry.term < prev_term:
                self._count("restore_discarded_entries")
                break
            self._entries.append(entry)
            if entry.kind == EntryKind.CONFIG:
                self._record_config(entry)
            expected += 1
            prev_term = entry.term
        hs = durable.hard_state
        if hs is not None:
            if not isinstance(hs, HardState):
                raise LocalError(f"durable hard state is not a raft HardState: {hs!r}")
            self._term = hs.term
            self._vote = hs.vote
            self._commit = min(hs.commit, self.last_index)
        self._commit = max(self._commit, self._snap_index)

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
    def term(self) -> int:
        return self._term

    @property
    def vote(self) -> NodeId | None:
        return self._vote

    @property
    def commit_index(self) -> int:
        return self._commit

    @property
    def applied_index(self) -> int:
        """The last index the driver acknowledged applying (through `advance`)."""
        return self._applied

    @property
    def last_index(self) -> int:
        return self._offset + len(self._entries) - 1

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self._snap_term

    @property
    def snapshot_index(self) -> int:
        return self._snap_index

    @property
    def snapshot_term(self) -> int:
        return self._snap_term

    @property
    def snapshot(self) -> Snapshot | None:
        """The latest snapshot (taken by `compact` or installed from a leader), if any."""
        return self._snapshot

    @property
    def membership(self) -> Membership:
        return self._members

    @property
    def voters(self) -> tuple[NodeId, ...]:
        return self._members.voters

    @property
    def learners(self) -> tuple[NodeId, ...]:
        return self._members.learners

    @property
    def lead_transferee(self) -> NodeId | None:
        return self._transferee

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index` (the snapshot's term at `snapshot_index`, 0 at index 0),
        or None if it is compacted away or beyond the log."""
        if index == self._snap_index:
            return self._snap_term
        i = index - self._offset
        if 0 <= i < len(self._entries):
            return self._entries[i].term
        return None

    def entries(self, lo: int | None = None, hi: int | None = None) -> tuple[LogEntry, ...]:
        """Log entries with lo <= index <= hi (defaults: the whole retained log)."""
        start = max(lo if lo is not None else self._offset, self._offset) - self._offset
        stop = min(hi if hi is not None else self.last_index, self.last_index) - self._offset + 1
        return tuple(self._entries[start:stop]) if stop > start else ()

    def entries_view(self) -> list[tuple[int, int]]:
        """(index, term) of every retained entry, for invariant checks (O(log length))."""
        return [(e.index, e.term) for e in self._entries]

    def progress(self, node: NodeId) -> Progress | None:
        """The leader's replication progress for `node` (None when not leader or unknown)."""
        return self._progress.get(node) if self._role is Role.LEADER else None

    def _is_leader(self) -> bool:
        return self._role is Role.LEADER

    def is_promotable(self) -> bool:
        return self._id in self._voter_set

    def _count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1

    # -- membership -------------------------------------------------------------------------------

    def _current_membership(self) -> Membership:
        return self._conf_history[-1][1] if self._conf_history else self._base_membership

    def _membership_at(self, index: int) -> Membership:
        for conf_index, members in reversed(self._conf_history):
            if conf_index <= index:
                return members
        return self._base_membership

    def _record_config(self, entry: LogEntry) -> bool:
        try:
            members = codec.decode_value(entry.data)
        except DecodeError:
            members = None
        if not isinstance(members, Membership):
            self._count("bad_config_entry")
            return False
        self._conf_history.append((entry.index, members))
        return True

    def _set_membership(self, members: Membership) -> None:
        self._members = members
        self._voters = members.voters
        self._voter_set = frozenset(members.voters)
        self._learner_set = frozenset(members.learners)
        role = self._role
        if role is Role.FOLLOWER or role is Role.LEARNER:
            self._role = Role.LEARNER if self._id in self._learner_set else Role.FOLLOWER
        elif role is Role.LEADER:
            wanted = self._voter_set | self._learner_set | {self._id}
            progress = self._progress
            for node in list(progress):
                if node not in wanted:
                    del progress[node]
            for node in wanted:
                if node not in progress:
                    progress[node] = Progress(self.last_index + 1, self._ticks)
                    self._append_dirty = True
            if self._transferee is not None and self._transferee not in self._voter_set:
                self._transferee = None
            self._lease_start = None  # re-earn the lease under the new configuration
            self._round_ticks.clear()
            self._maybe_commit()

    def _config_appended(self) -> None:
        self._set_membership(self._current_membership())

    # -- log helpers ------------------------------------------------------------------------------

    def _find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest j <= index with term_at(j) <= term (terms never decrease along a log); the
        snapshot index if no retained entry qualifies, `index` itself if it is compacted."""
        last = self.last_index
        index = min(index, last)
        if index <= self._snap_index:
            return index
        hi = index - self._offset + 1
        if self._entries[hi - 1].term <= term:
            return index
        pos = bisect_right(self._entries, term, 0, hi, key=_entry_term)
        return self._offset + pos - 1

    def _truncate_from(self, index: int) -> None:
        del self._entries[index - self._offset :]
        self._unstable_from = min(self._unstable_from, index)
        history = self._conf_history
        if history and history[-1][0] >= index:
            while history and history[-1][0] >= index:
                history.pop()
            self._config_appended()

    def _append_from_leader(self, entries: tuple[LogEntry, ...]) -> bool:
        """Append entries after a successful consistency check; truncate at the first conflict."""
        last = self.last_index
        first = entries[0].index
        k = 0
        if first <= last:
            tail = entries[-1]
            if tail.index <= last and self.term_at(tail.index) == tail.term:
                return True  # all present (Log Matching)
            n = len(entries)
            while k < n and entries[k].index <= last and self.term_at(entries[k].index) == entries[k].term:
                k += 1
            if k == n:
                return True
            conflict = entries[k].index
            if conflict <= last:
                if conflict <= self._commit:
                    self._count("conflict_with_committed")
                    return False
                self._truncate_from(conflict)
        new = entries[k:] if k else entries
        self._entries.extend(new)
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
        if self._election_elapsed >= self._randomized_timeout and self._id in self._voter_set:
            self.campaign()

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self._et:
            self._election_elapsed = 0
            if self.config.check_quorum:
                if not self._quorum_active():
                    self._count("check_quorum_step_down")
                    self._become_follower(self._term, None)
                    return
                for node, pr in self._progress.items():
                    if node != self._id:
                        pr.recent_active = False
        if self._transferee is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self._et:
                self._count("transfer_aborted")
                self._transferee = None
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _quorum_active(self) -> bool:
        progress = self._progress
        active = sum(
            1
            for v in self._voters
            if v == self._id or ((pr := progress.get(v)) is not None and pr.recent_active)
        )
        return active >= len(self._voters) // 2 + 1

    def campaign(self) -> None:
        """Start an election now (with pre-vote if configured), as if the election timeout fired."""
        if self._role is Role.LEADER or self._id not in self._voter_set:
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
        """Register a linearizable read (leader only; followers raise `NotLeaderError`)."""
        if self._role is not Role.LEADER:
            raise NotLeaderError(f"{self._id} is not the leader", self._leader)
        if self.term_at(self._commit) != self._term:
            self._reads_waiting.append(request_id)
            return
        self._register_read(request_id)

    def transfer_leadership(self, to: NodeId) -> None:
        """Hand leadership to voter `to` (3.10): stop accepting proposals, bring `to` up to date, then
        send it TimeoutNow. Aborted if `to` is not leader after an election timeout."""
        if self._role is not Role.LEADER:
            raise NotLeaderError(f"{self._id} is not the leader", self._leader)
        if to == self._id:
            return
        if to not in self._voter_set:
            raise LocalError(f"cannot transfer leadership to {to!r}: not a voter")
        if self._transferee == to:
            return
        self._transferee = to
        self._transfer_elapsed = 0
        self._lease_blocked = True
        pr = self._progress[to]
        if pr.match == self.last_index:
            self._send(to, TimeoutNow(self._term))
            return
        if pr.state is ProgressState.REPLICATE:
            self._become_probe(pr)  # do not wait for a stall to find out that appends were lost
        self._append_dirty = True

    # -- membership changes -----------------------------------------------------------------------

    def propose_config_change(self, change: ConfChangeType, node: NodeId) -> int:
        """Append a single-server membership change; returns its log index. Raises `NotLeaderError`
        or `ConfChangeRejectedError`."""
        if self._role is not Role.LEADER:
            raise NotLeaderError(f"{self._id} is not the leader", self._leader)
        if self._transferee is not None:
            raise NotLeaderError(
                f"{self._id} is transferring leadership to {self._transferee}", self._transferee
            )
        if self.term_at(self._commit) != self._term:
            raise ConfChangeRejectedError("the leader has not committed an entry of its term yet")
        if self._conf_history and self._conf_history[-1][0] > self._commit:
            raise ConfChangeRejectedError("another membership change is not committed yet")
        voters = set(self._members.voters)
        learners = set(self._members.learners)
        if change is ConfChangeType.ADD_VOTER:
            if node in voters or node in learners:
                raise ConfChangeRejectedError(f"{node!r} is already a member (promote a learner instead)")
            voters.add(node)
        elif change is ConfChangeType.REMOVE_VOTER:
            if node not in voters:
                raise ConfChangeRejectedError(f"{node!r} is not a voter")
            if len(voters) == 1:
                raise ConfChangeRejectedError("cannot remove the last voter")
            voters.discard(node)
        elif change is ConfChangeType.ADD_LEARNER:
            if node in voters or node in learners:
                raise ConfChangeRejectedError(f"{node!r} is already a member")
            learners.add(node)
        elif change is ConfChangeType.REMOVE_LEARNER:
            if node not in learners:
                raise ConfChangeRejectedError(f"{node!r} is not a learner")
            learners.discard(node)
        else:  # PROMOTE_LEARNER
            if node not in learners:
                raise ConfChangeRejectedError(f"{node!r} is not a learner")
            learners.discard(node)
            voters.add(node)
        members = Membership(tuple(sorted(voters)), tuple(sorted(learners)))
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
        if index <= self._snap_index:
            raise LocalError(f"index {index} is already compacted (snapshot at {self._snap_index})")
        if index > self._handed:
            raise LocalError(f"index {index} was not handed out for applying yet (up to {self._handed})")
        term = self.term_at(index)
        if term is None:
            raise LocalError(f"index {index} is not in the log")
        members = self._membership_at(index)
        snap = Snapshot(index, term, data, members)
        del self._entries[: index - self._offset + 1]
        self._offset = index + 1
        self._snap_index = index
        self._snap_term = term
        self._snapshot = snap
        self._pending_snapshot = snap
        self._base_membership = members
        self._conf_history = [(i, m) for i, m in self._conf_history if i > index]

    # -- Ready ------------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self._msgs
            or self._append_dirty
            or self._read_bcast
            or self._commit > self._handed
            or self._unstable_from <= self._offset + len(self._entries) - 1
            or self._read_states
            or self._failed_reads
            or self._pending_snapshot is not None
            or self._prev_hs != (self._term, self._vote, self._commit)
        )

    def ready(self) -> Ready:
        if self._role is Role.LEADER:
            if self._read_bcast:
                self._broadcast_heartbeat()
            if self._append_dirty:
                self._append_dirty = False
                self._flush_appends()
        else:
            self._append_dirty = False
            self._read_bcast = False
        hs_tuple = (self._term, self._vote, self._commit)
        hard_state = None
        if hs_tuple != self._prev_hs:
            self._prev_hs = hs_tuple
            hard_state = HardState(*hs_tuple)
        snapshot = self._pending_snapshot
        self._pending_snapshot = None
        log_replaced = self._pending_log_replaced
        self._pending_log_replaced = False
        offset = self._offset
        last = offset + len(self._entries) - 1
        entries: tuple[LogEntry, ...] = ()
        if self._unstable_from <= last:
            entries = tuple(self._entries[self._unstable_from - offset :])
            self._unstable_from = last + 1
        committed: tuple[LogEntry, ...] = ()
        if self._commit > self._handed:
            committed = tuple(self._entries[self._handed + 1 - offset : self._commit + 1 - offset])
            self._handed = self._commit
        messages: tuple[Outgoing, ...] = ()
        if self._msgs:
            messages = tuple(self._msgs)
            self._msgs = []
        read_states: tuple[ReadState, ...] = ()
        if self._read_states:
            read_states = tuple(self._read_states)
            self._read_states = []
        failed: tuple[int, ...] = ()
        if self._failed_reads:
            failed = tuple(self._failed_reads)
            self._failed_reads = []
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
        )

    def advance(self, ready: Ready) -> None:
        if ready.committed:
            self._applied = max(self._applied, ready.committed[-1].index)
        if ready.snapshot is not None:
            self._applied = max(self._applied, ready.snapshot.index)

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
            if not self._valid_append(m):
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
            elif src not in self._voter_set:
                self._count("non_member")
            elif self._admit(src, m.term, keep_term=m.pre_vote and m.granted):
                # A pre-vote grant carries the term we asked for; ours changes only when we win.
                self._on_vote_response(src, m)
        elif isinstance(m, InstallSnapshot):
            if not self._valid_install(m):
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
        if src in self._voter_set or src in self._learner_set:
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

    @staticmethod
    def _valid_entries(entries: tuple[LogEntry, ...], prev_index: int, prev_term: int, term: int) -> bool:
        expected = prev_index + 1
        last_term = prev_term
        for e in entries:
            if e.index != expected or e.term < last_term or e.term > term:
                return False
            expected += 1
            last_term = e.term
        return True

    def _valid_append(self, m: AppendEntries) -> bool:
        if m.term < 1 or m.prev_index < 0 or m.prev_term < 0 or m.prev_term > m.term or m.commit < 0:
            return False
        entries = m.entries
        if not entries:
            return True
        # Cheap checks first; the full walk only when the ends look right.
        if entries[0].index != m.prev_index + 1 or entries[-1].index != m.prev_index + len(entries):
            return False
        return self._valid_entries(entries, m.prev_index, m.prev_term, m.term)

    def _valid_install(self, m: InstallSnapshot) -> bool:
        if m.term < 1 or m.index < 1 or m.snap_term < 1 or m.snap_term > m.term or m.offset < 0:
            return False
        config: object = m.config
        if not isinstance(config, Membership):
            return False
        return self._valid_entries(m.entries, m.index, m.snap_term, m.term)

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
            self._fail_reads()
            self._progress = {}
            self._transferee = None
            self._append_dirty = False
            self._read_bcast = False
        if term != self._term:
            self._term = term
            self._vote = None
        self._leader = leader
        self._role = Role.LEARNER if self._id in self._learner_set else Role.FOLLOWER
        self._votes = {}
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
        self._leader = None
        self._votes = {self._id: True}
        self._reset_election_timer()
        if self._poll() > 0:
            self._won(pre)
            return
        request = VoteRequest(request_term, self.last_index, self.last_term, pre, transfer)
        for voter in self._voters:
            if voter != self._id:
                self._send(voter, request)

    def _poll(self) -> int:
        """1 if the election is won, -1 if lost, 0 while undecided."""
        granted = sum(1 for g in self._votes.values() if g)
        rejected = len(self._votes) - granted
        n = len(self._voters)
        quorum = n // 2 + 1
        if granted >= quorum:
            return 1
        if rejected > n - quorum:
            return -1
        return 0

    def _won(self, pre: bool) -> None:
        if pre:
            self._campaign(pre=False, transfer=False)
        else:
            self._become_leader()

    def _become_leader(self) -> None:
        self._role = Role.LEADER
        self._leader = self._id
        self._votes = {}
        self._transferee = None
        self._heartbeat_elapsed = 0
        self._election_elapsed = 0
        next_index = self.last_index + 1
        self._progress = {
            node: Progress(next_index, self._ticks)
            for node in (*self._voters, *self._members.learners, self._id)
        }
        own = self._progress[self._id]
        own.match = self.last_index
        own.state = ProgressState.REPLICATE
        self._round = 0
        self._confirmed_round = 0
        self._reads.clear()
        self._reads_waiting = []
        self._round_ticks.clear()
        self._lease_start = None
        self._lease_blocked = False
        self._append_local(EntryKind.NOOP, b"")

    def _append_local(self, kind: EntryKind, data: bytes) -> int:
        entries = self._entries
        index = self._offset + len(entries)
        entry = LogEntry(index, self._term, kind, data)
        entries.append(entry)
        own = self._progress.get(self._id)
        if own is not None:
            own.match = index
            own.next = index + 1
        self._append_dirty = True
        if kind == EntryKind.CONFIG:
            self._record_config(entry)
            self._config_appended()
        elif len(self._voters) == 1:
            self._maybe_commit()
        return index

    # -- commitment -------------------------------------------------------------------------------

    def _maybe_commit(self) -> bool:
        """Advance the commit index to the largest index a quorum of voters stores, if the commit rule
        allows it. Returns True if the commit index moved."""
        index = self._quorum_match()
        if index <= self._commit or not self._can_commit_by_counting(index):
            return False
        self._commit = index
        self._on_leader_commit()
        return True

    def _can_commit_by_counting(self, index: int) -> bool:
        """Raft's rule (5.4.2, Figure 8): only an entry of the leader's current term is committed by
        counting replicas; earlier entries are committed indirectly, by Log Matching."""
        return self.term_at(index) == self._term

    def _quorum_match(self) -> int:
        voters = self._voters
        n = len(voters)
        if n == 0:
            return self._commit
        progress = self._progress
        if n == 1:
            return progress[voters[0]].match
        matches = sorted([progress[v].match for v in voters], reverse=True)
        return matches[n // 2]

    def _on_leader_commit(self) -> None:
        self._append_dirty = True  # tell followers
        if self._reads_waiting and self.term_at(self._commit) == self._term:
            waiting = self._reads_waiting
            self._reads_waiting = []
            for request_id in waiting:
                self._register_read(request_id)
        if self._id not in self._voter_set and (
            not self._conf_history or self._conf_history[-1][0] <= self._commit
        ):
            self._step_down_removed()

    def _step_down_removed(self) -> None:
        """Our removal is committed (4.2.2): hand over to the most up-to-date voter and step down."""
        last = self.last_index
        best: NodeId | None = None
        for voter in self._voters:
            pr = self._progress.get(voter)
            if pr is not None and pr.match == last:
                best = voter
                break
        if best is not None:
            self._send(best, TimeoutNow(self._term))
        self._count("removed_leader_step_down")
        self._become_follower(self._term, None)

    # -- replication (leader) ---------------------------------------------------------------------

    def _flush_appends(self) -> None:
        for node, pr in list(self._progress.items()):
            if node != self._id:
                self._send_append(node, pr)

    def _send_append(self, to: NodeId, pr: Progress) -> None:
        max_inflight = self.config.max_inflight_msgs
        last = self.last_index
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
            prev_term = self.term_at(prev)
            if prev_term is None:
                if prev > last:  # defensive: never probe beyond our log
                    pr.next = last + 1
                    continue
                self._start_snapshot(to, pr)
                return
            if pr.next <= last:
                entries = self._batch(pr.next)
            else:
                if state is ProgressState.REPLICATE and pr.sent_commit >= self._commit:
                    return
                entries = ()
            self._msgs.append(Outgoing(to, AppendEntries(self._term, prev, prev_term, entries, self._commit)))
            pr.sent_commit = self._commit
            if state is ProgressState.PROBE:
                pr.probe_sent = True
                return
            if not entries:
                return
            pr.next = entries[-1].index + 1
            pr.inflight.append(pr.next - 1)
            if pr.next > last:
                return

    def _batch(self, start: int) -> tuple[LogEntry, ...]:
        i = start - self._offset
        batch = self._entries[i : i + self.config.max_entries_per_msg]
        limit = self.config.max_bytes_per_msg
        size = 0
        for k, e in enumerate(batch):
            size += len(e.data)
            if size > limit and k > 0:
                return tuple(batch[:k])
        return tuple(batch)

    def _become_probe(self, pr: Progress) -> None:
        pr.state = ProgressState.PROBE
        pr.next = pr.match + 1
        pr.probe_sent = False
        pr.inflight.clear()
        pr.snapshot = None

    def _become_replicate(self, pr: Progress) -> None:
        pr.state = ProgressState.REPLICATE
        pr.next = pr.match + 1
        pr.probe_sent = False
        pr.inflight.clear()
        pr.snapshot = None
        pr.last_progress_tick = self._ticks

    def _start_snapshot(self, to: NodeId, pr: Progress) -> None:
        snap = self._snapshot
        if snap is None:  # cannot happen: a compacted prefix implies a snapshot
            self._count("missing_snapshot")
            return
        pr.state = ProgressState.SNAPSHOT
        pr.snapshot = snap
        pr.snap_offset = 0
        pr.snap_reported = 0
        pr.inflight.clear()
        pr.probe_sent = False
        pr.last_progress_tick = self._ticks
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
            if snap.index != self._snap_index:
                # We compacted again meanwhile and no longer hold the entries after this snapshot.
                self._start_snapshot(to, pr)
                return
            entries = self._batch(snap.index + 1)
        config = snap.config
        if not isinstance(config, Membership):  # cannot happen: every snapshot we hold carries one
            self._count("bad_snapshot_config")
            return
        self._send(
            to,
            InstallSnapshot(
                self._term, snap.index, snap.term, config, offset, data[offset:end], done, entries
            ),
        )

    def _on_append_response(self, src: NodeId, m: AppendResponse) -> None:
        if self._role is not Role.LEADER:
            return
        pr = self._progress.get(src)
        if pr is None:
            self._count("unknown_peer")
            return
        pr.recent_active = True
        if m.reject:
            if self._maybe_decrease(pr, m):
                self._append_dirty = True
            return
        if m.index > self.last_index:
            self._count("invalid")
            return
        inflight = pr.inflight
        while inflight and inflight[0] <= m.index:
            inflight.popleft()
        if m.index > pr.match or (pr.state is ProgressState.PROBE and m.index == pr.match):
            if m.index > pr.match:
                pr.match = m.index
                pr.last_progress_tick = self._ticks
            if pr.next <= pr.match:
                pr.next = pr.match + 1
            if pr.state is ProgressState.PROBE:
                self._become_replicate(pr)
            elif pr.state is ProgressState.SNAPSHOT and (
                pr.snapshot is None or pr.match >= pr.snapshot.index
            ):
                self._become_probe(pr)
            self._append_dirty = True
            if self._maybe_commit() and not self._is_leader():
                return  # our removal got committed and we stepped down
            if src == self._transferee and pr.match == self.last_index:
                self._send(src, TimeoutNow(self._term))

    def _maybe_decrease(self, pr: Progress, m: AppendResponse) -> bool:
        rejected = m.index
        if pr.state is ProgressState.REPLICATE:
            if rejected <= pr.match:
                return False  # stale
            self._become_probe(pr)
            return True
        if pr.state is not ProgressState.PROBE or rejected != pr.next - 1:
            return False  # stale, or we are sending a snapshot
        probe = m.hint_index
        if m.hint_term > 0:
            probe = self._find_conflict_by_term(probe, m.hint_term)
        pr.next = max(min(rejected, probe + 1), pr.match + 1)
        pr.probe_sent = False
        return True

    def _on_snapshot_response(self, src: NodeId, m: SnapshotResponse) -> None:
        if self._role is not Role.LEADER:
            return
        pr = self._progress.get(src)
        if pr is None:
            self._count("unknown_peer")
            return
        pr.recent_active = True
        if pr.state is not ProgressState.SNAPSHOT or pr.snapshot is None or pr.snapshot.index != m.index:
            return
        pr.snap_reported = m.next_offset
        if m.next_offset > pr.snap_offset:
            pr.snap_offset = m.next_offset
            pr.last_progress_tick = self._ticks
            self._send_snapshot_chunk(src, pr)

    def _broadcast_heartbeat(self) -> None:
        self._read_bcast = False
        self._round += 1
        r = self._round
        if self._lease_mode:
            self._round_ticks.append((r, self._ticks))
        commit = self._commit
        for node, pr in self._progress.items():
            if node == self._id:
                pr.acked_round = r
            else:
                self._msgs.append(Outgoing(node, Heartbeat(self._term, min(pr.match, commit), r)))
        self._advance_reads()

    def _on_heartbeat_response(self, src: NodeId, m: HeartbeatResponse) -> None:
        if self._role is not Role.LEADER:
            return
        pr = self._progress.get(src)
        if pr is None:
            self._count("unknown_peer")
            return
        pr.recent_active = True
        if m.round > self._round:
            self._count("invalid")
            return
        if m.round > pr.acked_round:
            pr.acked_round = m.round
            if src in self._voter_set:
                self._advance_reads()
        last = self.last_index
        state = pr.state
        if state is ProgressState.PROBE:
            pr.probe_sent = False
        elif state is ProgressState.REPLICATE and len(pr.inflight) >= self.config.max_inflight_msgs:
            pr.inflight.popleft()  # maybe lost: let one more through
        if pr.match < last and self._ticks - pr.last_progress_tick >= self._stall_ticks:
            # No progress for a while although the follower answers: appends or chunks were lost.
            pr.last_progress_tick = self._ticks
            if state is ProgressState.REPLICATE:
                self._become_probe(pr)
            elif state is ProgressState.SNAPSHOT:
                pr.snap_offset = pr.snap_reported
                self._send_snapshot_chunk(src, pr)
        if pr.match < last or pr.state is ProgressState.PROBE:
            self._append_dirty = True

    # -- reads (leader) ---------------------------------------------------------------------------

    def _register_read(self, request_id: int) -> None:
        if len(self._voters) == 1 and self._voters[0] == self._id:
            self._read_states.append(ReadState(request_id, self._commit))
            return
        if self._lease_mode and self._lease_valid():
            self._read_states.append(ReadState(request_id, self._commit))
            return
        self._reads.append((self._round + 1, request_id, self._commit))
        self._read_bcast = True

    def _lease_valid(self) -> bool:
        start = self._lease_start
        return (
            start is not None
            and not self._lease_blocked
            and self._ticks < start + self.config.effective_lease_ticks
        )

    def _advance_reads(self) -> None:
        voters = self._voters
        n = len(voters)
        if n == 0:
            return
        progress = self._progress
        rounds = sorted([progress[v].acked_round for v in voters], reverse=True)
        confirmed = rounds[n // 2]
        if confirmed <= self._confirmed_round:
            return
        self._confirmed_round = confirmed
        if self._lease_mode:
            sent_at = None
            ticks = self._round_ticks
            while ticks and ticks[0][0] <= confirmed:
                sent_at = ticks.popleft()[1]
            if sent_at is not None and (self._lease_start is None or sent_at > self._lease_start):
                self._lease_start = sent_at
        reads = self._reads
        while reads and reads[0][0] <= confirmed:
            _, request_id, index = reads.popleft()
            self._read_states.append(ReadState(request_id, index))

    def _fail_reads(self) -> None:
        self._failed_reads.extend(request_id for _, request_id, _ in self._reads)
        self._failed_reads.extend(self._reads_waiting)
        self._reads.clear()
        self._reads_waiting = []

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
        prev = m.prev_index
        prev_term = m.prev_term
        entries = m.entries
        commit = self._commit
        if prev < commit:
            # Entries up to our commit index are committed, hence equal to the leader's: skip them.
            skip = commit - prev
            if skip >= len(entries):
                self._send(src, AppendResponse(self._term, commit))
                return
            prev_term = entries[skip - 1].term
            entries = entries[skip:]
            prev = commit
        if self.term_at(prev) != prev_term:
            hint = self._find_conflict_by_term(min(prev, self.last_index), prev_term)
            hint = max(hint, self._commit)
            hint_term = self.term_at(hint) or 0
            self._send(src, AppendResponse(self._term, m.prev_index, True, hint, hint_term))
            return
        last_new = prev + len(entries)
        if entries and not self._append_from_leader(entries):
            return
        new_commit = min(m.commit, last_new)
        self._commit = max(self._commit, new_commit)
        self._send(src, AppendResponse(self._term, last_new))

    def _on_heartbeat(self, src: NodeId, m: Heartbeat) -> None:
        if not self._follow(src):
            return
        if m.commit > self._commit:
            self._commit = min(m.commit, self.last_index)
        self._send(src, HeartbeatResponse(self._term, m.round))

    def _on_install_snapshot(self, src: NodeId, m: InstallSnapshot) -> None:
        if not self._follow(src):
            return
        if m.index <= self._commit:
            self._snap_recv = None
            self._send(src, AppendResponse(self._term, self._commit))
            return
        buf = self._snap_recv
        if (
            buf is None
            or buf.leader != src
            or buf.leader_term != self._term
            or buf.index != m.index
            or buf.term != m.snap_term
        ):
            if m.offset != 0:
                self._send(src, SnapshotResponse(self._term, m.index, 0))
                return
            buf = _SnapshotBuffer(src, self._term, m.index, m.snap_term)
            self._snap_recv = buf
        have = len(buf.data)
        if m.offset > have:
            self._send(src, SnapshotResponse(self._term, m.index, have))
            return
        end = m.offset + len(m.data)
        if end > have:
            buf.data += m.data[have - m.offset :]
        if not m.done:
            self._send(src, SnapshotResponse(self._term, m.index, len(buf.data)))
            return
        if len(buf.data) != end:
            self._count("invalid")
            self._snap_recv = None
            self._send(src, SnapshotResponse(self._term, m.index, 0))
            return
        self._snap_recv = None
        self._install_snapshot(Snapshot(m.index, m.snap_term, bytes(buf.data), m.config))
        last_new = m.index
        if m.entries and self._append_from_leader(m.entries):
            last_new = m.entries[-1].index
        self._count("snapshot_installed")
        self._send(src, AppendResponse(self._term, last_new))

    def _install_snapshot(self, snap: Snapshot) -> None:
        index = snap.index
        if index <= self.last_index and self.term_at(index) == snap.term:
            del self._entries[: index - self._offset + 1]  # keep the matching suffix
            self._conf_history = [(i, c) for i, c in self._conf_history if i > index]
        else:
            self._entries = []
            self._conf_history = []
            self._unstable_from = index + 1
            self._pending_log_replaced = True  # stale entries after the snapshot must go from storage too
        self._offset = index + 1
        self._snap_index = index
        self._snap_term = snap.term
        self._unstable_from = max(self._unstable_from, index + 1)
        self._snapshot = snap
        self._pending_snapshot = snap
        if isinstance(snap.config, Membership):
            self._base_membership = snap.config
        self._commit = max(self._commit, index)
        self._handed = max(self._handed, index)
        self._config_appended()

    def _on_vote_request(self, src: NodeId, m: VoteRequest) -> None:
        last_term = self.last_term
        up_to_date = m.last_log_term > last_term or (
            m.last_log_term == last_term and m.last_log_index >= self.last_index
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
        if src in self._votes:
            return
        self._votes[src] = m.granted
        result = self._poll()
        if result > 0:
            self._won(m.pre_vote)
        elif result < 0:
            self._become_follower(self._term, None)

    def _on_timeout_now(self, src: NodeId) -> None:
        if self._role is Role.LEADER or self._leader != src or self._id not in self._voter_set:
            self._count("ignored_timeout_now")
            return
        self._campaign(pre=False, transfer=True)
