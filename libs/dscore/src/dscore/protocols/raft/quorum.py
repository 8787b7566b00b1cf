"""Majority arithmetic, in one place (etcd's `quorum.MajorityConfig`).

Raft asks a majority of voters four questions: did a majority grant my vote (`vote_result`), has a
majority stored this index (`committed`), has a majority acknowledged this heartbeat round (`committed`
over rounds), and did a majority answer within an election timeout (`reached`, check-quorum). With
single-server membership changes there is one voter set at a time, so one `Majority` answers them all.
"""

from __future__ import annotations

import enum

from dscore.core.ids import NodeId

__all__ = ["Majority", "VoteResult"]


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


class Majority:
    """The majority of a voter set: `needed` of `size` voters."""

    __slots__ = ("needed", "size", "voters")

    def __init__(self, voters: tuple[NodeId, ...]) -> None:
        self.voters = voters
        self.size = len(voters)
        self.needed = self.size // 2 + 1

    def reached(self, count: int) -> bool:
        """`count` voters are a majority."""
        return count >= self.needed

    def committed(self, acked: list[int]) -> int:
        """The largest value that a majority has reached, given one value per voter (`acked` is sorted
        in place). An empty voter set has no majority: callers handle it before asking."""
        if len(acked) == 1:
            return acked[0]
        acked.sort(reverse=True)
        return acked[self.needed - 1]

    def vote_result(self, granted: int, rejected: int) -> VoteResult:
        """WON once a majority granted, LOST once a majority can no longer grant, else PENDING."""
        if granted >= self.needed:
            return VoteResult.WON
        if rejected > self.size - self.needed:
            return VoteResult.LOST
        return VoteResult.PENDING
