"""Membership changes: single-server changes (dissertation 4.1), and the configuration at every log index.

Single-server changes, and why
------------------------------

One voter or learner is added, removed or promoted per change, and the new configuration takes effect on
each server as soon as the CONFIG entry is appended to its log (not when committed), as in the
dissertation (4.1). Any two majorities of configurations that differ by one voter overlap, so no joint
configuration is needed. This is simpler to implement, to test and to reason about than joint consensus
(one active configuration, a plain majority everywhere) and covers what operators do in practice (grow
or shrink one node at a time). Two rules make it safe (`check_can_change`):

- at most one uncommitted configuration entry at a time (a second change is refused until the first is
  committed), and
- the fix from Ongaro's 2015 raft-dev post: a leader proposes a change only after it has committed an
  entry of its own term (its NOOP), otherwise a change from a previous term and one from this term could
  both be "one step" from different bases.

A CONFIG entry's data is `codec.encode_value(Membership(voters, learners, removed))`: the whole new
membership, not a delta, so replaying or truncating the log restores the configuration exactly (a truncated
config entry reverts the node to the previous one: `ConfigHistory`). `Snapshot.config` is the `Membership`
at the snapshot index. A leader that removes itself keeps leading (without counting itself) until the
removal is committed, then steps down and sends TimeoutNow to the most up-to-date voter (4.2.2).

Removed ids are never reused
----------------------------

`Membership.removed` lists every id ever removed (a voter or a learner), and adding one again, as a voter
or a learner, is refused (`REUSED_ID_REASON`). Node ids key the duplicate filters of every peer: a fresh
node under a removed id would restart its message numbering (a new incarnation that starts from nothing)
while the others still hold the old one's marks, so its messages could be taken for duplicates. The list
is part of the replicated configuration, carried by CONFIG entries and snapshots, so every leader, a new
one included, knows it without any bookkeeping outside Raft.

Learners are non-voting members that receive the log, never campaign and never count for a quorum or an
election. (Like etcd's, a learner still answers vote requests: it may have been promoted without knowing
yet, and refusing could stall elections; a candidate counts only the votes of its own voters.)
"""

from __future__ import annotations

import enum

from dscore.core import codec
from dscore.core.errors import ChangeRefusal, DecodeError, LocalError
from dscore.core.ids import NodeId
from dscore.protocols.contract import LogEntry
from dscore.protocols.raft.messages import Membership

__all__ = [
    "REUSED_ID_REASON",
    "ConfChangeRejectedError",
    "ConfChangeType",
    "ConfigHistory",
    "apply_change",
    "check_can_change",
    "decode_config",
]


class ConfChangeType(enum.Enum):
    ADD_VOTER = "add_voter"
    REMOVE_VOTER = "remove_voter"
    ADD_LEARNER = "add_learner"
    REMOVE_LEARNER = "remove_learner"
    PROMOTE_LEARNER = "promote_learner"


class ConfChangeRejectedError(LocalError):
    """A membership change was refused (another change pending, no commit in this term, ...); `refusal`
    says why, for callers that act on it (an add of a member is done already, say)."""

    def __init__(self, message: str, refusal: ChangeRefusal) -> None:
        super().__init__(message)
        self.refusal = refusal


REUSED_ID_REASON = (
    "node ids are never reused: a fresh node under a removed id would restart its message numbering "
    "under the others' duplicate filters"
)


def check_can_change(*, term_committed: bool, pending: bool) -> None:
    """The two rules of single-server changes (see the module docstring)."""
    if not term_committed:
        raise ConfChangeRejectedError(
            "the leader has not committed an entry of its term yet", ChangeRefusal.CHANGE_IN_PROGRESS
        )
    if pending:
        raise ConfChangeRejectedError(
            "another membership change is not committed yet", ChangeRefusal.CHANGE_IN_PROGRESS
        )


def apply_change(members: Membership, change: ConfChangeType, node: NodeId) -> Membership:
    """The configuration after `change` of `node`; raises `ConfChangeRejectedError` if it does not apply."""
    voters = set(members.voters)
    learners = set(members.learners)
    removed = set(members.removed)
    if node in removed and change in (ConfChangeType.ADD_VOTER, ConfChangeType.ADD_LEARNER):
        raise ConfChangeRejectedError(
            f"{node!r} was removed from this cluster; {REUSED_ID_REASON}", ChangeRefusal.ID_REMOVED
        )
    if change is ConfChangeType.ADD_VOTER:
        if node in voters or node in learners:
            raise ConfChangeRejectedError(
                f"{node!r} is already a member (promote a learner instead)", ChangeRefusal.ALREADY_MEMBER
            )
        voters.add(node)
    elif change is ConfChangeType.REMOVE_VOTER:
        if node not in voters:
            raise ConfChangeRejectedError(f"{node!r} is not a voter", ChangeRefusal.NOT_MEMBER)
        if len(voters) == 1:
            raise ConfChangeRejectedError("cannot remove the last voter", ChangeRefusal.LAST_VOTER)
        voters.discard(node)
        removed.add(node)
    elif change is ConfChangeType.ADD_LEARNER:
        if node in voters or node in learners:
            raise ConfChangeRejectedError(f"{node!r} is already a member", ChangeRefusal.ALREADY_MEMBER)
        learners.add(node)
    elif change is ConfChangeType.REMOVE_LEARNER:
        if node not in learners:
            raise ConfChangeRejectedError(f"{node!r} is not a learner", ChangeRefusal.NOT_MEMBER)
        learners.discard(node)
        removed.add(node)
    else:  # PROMOTE_LEARNER
        if node not in learners:
            raise ConfChangeRejectedError(f"{node!r} is not a learner", ChangeRefusal.NOT_LEARNER)
        learners.discard(node)
        voters.add(node)
    return Membership(tuple(sorted(voters)), tuple(sorted(learners)), tuple(sorted(removed)))


def decode_config(entry: LogEntry) -> Membership | None:
    """The membership a CONFIG entry installs, or None if its data is not one."""
    try:
        members = codec.decode_value(entry.data)
    except DecodeError:
        return None
    return members if isinstance(members, Membership) else None


class ConfigHistory:
    """The configuration at every retained log index: `base` (the one at the snapshot, or the initial
    one) and (index, membership) of every CONFIG entry after it, in index order."""

    __slots__ = ("base", "changes")

    def __init__(self, base: Membership) -> None:
        self.base = base
        self.changes: list[tuple[int, Membership]] = []

    @property
    def current(self) -> Membership:
        """The configuration in force: the latest in the log, committed or not."""
        return self.changes[-1][1] if self.changes else self.base

    @property
    def last_index(self) -> int:
        """The index of the latest CONFIG entry in the log (0 if none after the snapshot)."""
        return self.changes[-1][0] if self.changes else 0

    def at(self, index: int) -> Membership:
        for conf_index, members in reversed(self.changes):
            if conf_index <= index:
                return members
        return self.base

    def record(self, index: int, members: Membership) -> None:
        self.changes.append((index, members))

    def truncate_from(self, index: int) -> bool:
        """CONFIG entries from `index` on left the log; returns True if the configuration reverted."""
        changes = self.changes
        if not changes or changes[-1][0] < index:
            return False
        while changes and changes[-1][0] >= index:
            changes.pop()
        return True

    def compact(self, index: int, members: Membership) -> None:
        """The log up to `index` became a snapshot whose configuration is `members`."""
        self.base = members
        self.changes = [(i, m) for i, m in self.changes if i > index]

    def reset(self, members: Membership) -> None:
        """The whole log was replaced by a snapshot whose configuration is `members`."""
        self.base = members
        self.changes = []
