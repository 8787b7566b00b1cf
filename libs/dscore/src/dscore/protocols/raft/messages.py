"""Raft's wire and storage messages, and the well-formedness checks a node applies to what it receives.

Every class is a registered message (`dscore.core.registry`): its kind (`raft.append`, ...) and the order
of its fields are its wire format, so neither changes without a version note here.

Wire changes:

- `InstallSnapshot.total_bytes` (appended after `entries`): every chunk carries the snapshot's size, so a
  follower can refuse a transfer larger than `RaftConfig.max_snapshot_bytes` before buffering it, and
  notice chunks that disagree. Chunks without it no longer decode.
- `Membership.removed` (appended after `learners`): the ids ever removed, carried by every CONFIG entry and
  snapshot, so the cluster itself refuses to reuse one (see `confchange`). A membership of two fields no
  longer decodes.

The checks (`valid_append`, `valid_install`) look at one message alone (no node state): a message that
fails them is dropped and counted as `invalid` by the node, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dscore.core.ids import NodeId
from dscore.core.registry import message
from dscore.protocols.contract import LogEntry

__all__ = [
    "AppendEntries",
    "AppendResponse",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "Membership",
    "SnapshotResponse",
    "TimeoutNow",
    "VoteRequest",
    "VoteResponse",
    "valid_append",
    "valid_install",
]


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
    """A configuration: sorted voter and learner ids, and the sorted ids ever removed from the cluster
    (never reused); the three are disjoint."""

    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...] = ()
    removed: tuple[NodeId, ...] = ()

    def __post_init__(self) -> None:
        voters, learners, removed = set(self.voters), set(self.learners), set(self.removed)
        if len(voters) != len(self.voters) or len(learners) != len(self.learners):
            raise ValueError("duplicate node ids in a membership")
        if len(removed) != len(self.removed):
            raise ValueError("duplicate removed node ids in a membership")
        if voters & learners:
            raise ValueError("a node cannot be both voter and learner")
        if removed & (voters | learners):
            raise ValueError("a removed node cannot be a member")


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
    """One chunk of the leader's snapshot: `data` is bytes [offset, offset + len(data)) of a snapshot of
    `total_bytes`; `done` marks the last chunk (it ends at `total_bytes`). The final chunk carries the
    entries right after the snapshot, so the follower's `Ready` that installs it also rewrites its stored
    log suffix."""

    term: int
    index: int
    snap_term: int
    config: Membership
    offset: int
    data: bytes
    done: bool
    entries: tuple[LogEntry, ...] = ()
    total_bytes: int = field(kw_only=True)


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


# -- well-formedness ---------------------------------------------------------------------------------


def valid_entries(entries: tuple[LogEntry, ...], prev_index: int, prev_term: int, term: int) -> bool:
    """Entries that may follow (prev_index, prev_term) in a log of a leader at `term`: contiguous
    indexes, terms never decreasing and never above the leader's."""
    expected = prev_index + 1
    last_term = prev_term
    for e in entries:
        if e.index != expected or e.term < last_term or e.term > term:
            return False
        expected += 1
        last_term = e.term
    return True


def valid_append(m: AppendEntries) -> bool:
    if m.term < 1 or m.prev_index < 0 or m.prev_term < 0 or m.prev_term > m.term or m.commit < 0:
        return False
    entries = m.entries
    if not entries:
        return True
    # Cheap checks first; the full walk only when the ends look right.
    if entries[0].index != m.prev_index + 1 or entries[-1].index != m.prev_index + len(entries):
        return False
    return valid_entries(entries, m.prev_index, m.prev_term, m.term)


def valid_install(m: InstallSnapshot) -> bool:
    if m.term < 1 or m.index < 1 or m.snap_term < 1 or m.snap_term > m.term or m.offset < 0:
        return False
    end = m.offset + len(m.data)
    if end > m.total_bytes or m.done != (end == m.total_bytes):
        return False
    config: object = m.config
    if not isinstance(config, Membership):
        return False
    return valid_entries(m.entries, m.index, m.snap_term, m.term)
