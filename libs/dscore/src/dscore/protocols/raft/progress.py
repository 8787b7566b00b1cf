"""What a node knows about the members of its configuration (etcd's `tracker` package).

`ProgressTracker` holds the configuration in force (voters, learners, their `Majority`), a leader's
`Progress` for every member, and a candidate's votes. It answers the quorum questions over them: the index
a majority stores (`committed`), the heartbeat round a majority acknowledged (`confirmed_round`), whether a
majority was heard from lately (`quorum_active`), and whether an election is won (`tally_votes`).

Flow control per follower, as in etcd: PROBE (one append in flight until answered: used to find where the
follower's log matches), REPLICATE (optimistic pipelining with at most `max_inflight_msgs` appends in
flight), SNAPSHOT (sending a snapshot; appends wait until it is installed).
"""

from __future__ import annotations

import enum
from collections import deque

from dscore.core.ids import NodeId
from dscore.protocols.contract import Snapshot
from dscore.protocols.raft.messages import Membership
from dscore.protocols.raft.quorum import Majority, VoteResult

__all__ = ["Progress", "ProgressState", "ProgressTracker"]


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


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
        #: the highest index known to match the leader's log
        self.match = 0
        #: the next index to send
        self.next = next_index
        self.state = ProgressState.PROBE
        #: PROBE: an append is outstanding; no more until an answer or a heartbeat response
        self.probe_sent = False
        #: REPLICATE: last index of each append in flight
        self.inflight: deque[int] = deque()
        #: heard from since the last check-quorum
        self.recent_active = False
        #: SNAPSHOT: the snapshot being sent, the offset to send next, the offset the follower reported
        self.snapshot: Snapshot | None = None
        self.snap_offset = 0
        self.snap_reported = 0
        #: the commit index last sent (REPLICATE sends an empty append only to announce a new one)
        self.sent_commit = 0
        #: the latest heartbeat round this member acknowledged
        self.acked_round = 0
        #: the tick `match` last moved (or a transfer started): no progress for long means lost messages
        self.last_progress_tick = now

    def __repr__(self) -> str:
        return f"Progress({self.state.value}, match={self.match}, next={self.next})"

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()
        self.snapshot = None

    def become_replicate(self, now: int) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()
        self.snapshot = None
        self.last_progress_tick = now

    def become_snapshot(self, snapshot: Snapshot, now: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.snapshot = snapshot
        self.snap_offset = 0
        self.snap_reported = 0
        self.inflight.clear()
        self.probe_sent = False
        self.last_progress_tick = now

    def maybe_update(self, index: int, now: int) -> bool:
        """The follower stores our log up to `index` (a successful AppendResponse): free the in-flight
        slots up to it, move `match` on, and leave PROBE (the log matches) or SNAPSHOT (installed). Returns
        False for a stale answer that changes nothing."""
        inflight = self.inflight
        while inflight and inflight[0] <= index:
            inflight.popleft()
        if index < self.match or (index == self.match and self.state is not ProgressState.PROBE):
            return False
        if index > self.match:
            self.match = index
            self.last_progress_tick = now
        if self.next <= self.match:
            self.next = self.match + 1
        if self.state is ProgressState.PROBE:
            self.become_replicate(now)
        elif self.state is ProgressState.SNAPSHOT and (
            self.snapshot is None or self.match >= self.snapshot.index
        ):
            self.become_probe()
        return True

    def maybe_decrease(self, rejected: int, probe: int) -> bool:
        """The follower rejected the append after `rejected` (etcd's MaybeDecrTo); `probe` is the last
        index its hint says may match. REPLICATE falls back to PROBE; PROBE retries from after `probe`
        (never at or below `match`). Returns False for a stale rejection."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.become_probe()
            return True
        if self.state is not ProgressState.PROBE or rejected != self.next - 1:
            return False  # stale, or we are sending a snapshot
        self.next = max(min(rejected, probe + 1), self.match + 1)
        self.probe_sent = False
        return True

    def snapshot_acked(self, index: int, next_offset: int, now: int) -> bool:
        """The follower holds the first `next_offset` bytes of snapshot `index`. Returns True if the next
        chunk is due."""
        if self.state is not ProgressState.SNAPSHOT or self.snapshot is None or self.snapshot.index != index:
            return False
        self.snap_reported = next_offset
        if next_offset <= self.snap_offset:
            return False
        self.snap_offset = next_offset
        self.last_progress_tick = now
        return True

    def heartbeat_acked(self, last_index: int, now: int, stall_ticks: int, max_inflight: int) -> bool:
        """The follower answered a heartbeat, so it is alive: an append that got no answer was probably
        lost. Unblock a probe, free a slot of a full window, and after `stall_ticks` without progress fall
        back (REPLICATE to PROBE; SNAPSHOT rewinds to the last acknowledged offset). Returns True if the
        snapshot chunk must be sent again."""
        state = self.state
        if state is ProgressState.PROBE:
            self.probe_sent = False
        elif state is ProgressState.REPLICATE and len(self.inflight) >= max_inflight:
            self.inflight.popleft()
        if self.match >= last_index or now - self.last_progress_tick < stall_ticks:
            return False
        self.last_progress_tick = now
        if state is ProgressState.REPLICATE:
            self.become_probe()
        elif state is ProgressState.SNAPSHOT:
            self.snap_offset = self.snap_reported
            return True
        return False


class ProgressTracker:
    """The configuration in force, the leader's progress per member, a candidate's votes."""

    __slots__ = ("learner_set", "majority", "members", "progress", "voter_set", "voters", "votes")

    def __init__(self, members: Membership) -> None:
        #: leader only: every member's progress, this node's own included
        self.progress: dict[NodeId, Progress] = {}
        #: candidate and pre-candidate only: vote (granted or not) per voter that answered
        self.votes: dict[NodeId, bool] = {}
        self.members = members
        self.voters: tuple[NodeId, ...] = ()
        self.voter_set: frozenset[NodeId] = frozenset()
        self.learner_set: frozenset[NodeId] = frozenset()
        self.majority = Majority(())
        self.set_members(members)

    def set_members(self, members: Membership) -> None:
        self.members = members
        self.voters = members.voters
        self.voter_set = frozenset(members.voters)
        self.learner_set = frozenset(members.learners)
        self.majority = Majority(members.voters)

    # -- progress (leader) ----------------------------------------------------------------------------

    def reset_progress(self, own: NodeId, last_index: int, now: int) -> None:
        """A new leadership: every member starts probing right after our last entry."""
        next_index = last_index + 1
        self.progress = {
            node: Progress(next_index, now) for node in (*self.voters, *self.members.learners, own)
        }
        mine = self.progress[own]
        mine.match = last_index
        mine.state = ProgressState.REPLICATE

    def sync_progress(self, own: NodeId, next_index: int, now: int) -> bool:
        """The configuration changed under a leader: forget members that left, start tracking new ones.
        Returns True if a member was added."""
        wanted = self.voter_set | self.learner_set | {own}
        progress = self.progress
        for node in list(progress):
            if node not in wanted:
                del progress[node]
        added = False
        # In configuration order, never a set's: the progress map's order is the order appends and
        # heartbeats go out, and a set's order changes with PYTHONHASHSEED.
        for node in (*self.voters, *self.members.learners, own):
            if node not in progress:
                progress[node] = Progress(next_index, now)
                added = True
        return added

    def clear_progress(self) -> None:
        self.progress = {}

    def committed(self, default: int) -> int:
        """The largest index a majority of voters stores (`default` without voters)."""
        voters = self.voters
        if len(voters) == 1:  # a majority of one is that voter: every proposal of a lone leader
            return self.progress[voters[0]].match
        if not voters:
            return default
        progress = self.progress
        return self.majority.committed([progress[v].match for v in voters])

    def confirmed_round(self) -> int:
        """The latest heartbeat round a majority of voters acknowledged (0 without voters)."""
        voters = self.voters
        if not voters:
            return 0
        progress = self.progress
        return self.majority.committed([progress[v].acked_round for v in voters])

    def quorum_active(self, own: NodeId) -> bool:
        """A majority of voters (counting ourselves) was heard from since the last check."""
        progress = self.progress
        active = sum(
            1 for v in self.voters if v == own or ((pr := progress.get(v)) is not None and pr.recent_active)
        )
        return self.majority.reached(active)

    def reset_recent_active(self, own: NodeId) -> None:
        for node, pr in self.progress.items():
            if node != own:
                pr.recent_active = False

    # -- votes (candidate) ----------------------------------------------------------------------------

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node: NodeId, granted: bool) -> bool:
        """Record `node`'s first answer in this election; False if it answered already."""
        if node in self.votes:
            return False
        self.votes[node] = granted
        return True

    def tally_votes(self) -> VoteResult:
        granted = sum(1 for g in self.votes.values() if g)
        return self.majority.vote_result(granted, len(self.votes) - granted)
