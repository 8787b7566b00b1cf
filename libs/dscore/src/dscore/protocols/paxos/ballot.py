"""Ballots: (round, node) pairs, totally ordered, packed into one int.

Lamport ("Paxos Made Simple", 2.2) needs proposal numbers that are totally ordered and that no two
proposers share; van Renesse and Altinbuken ("Paxos Made Moderately Complex", 3) make them pairs
(round, leader id) compared lexicographically. Here a ballot is `round << 8 | rank`, where `rank` is the
node's position in the sorted member list (membership is fixed, so every node computes the same rank):
comparing the ints compares (round, rank). One int fits `LogEntry.term` (the protocol's epoch), the
wire and the durable hard state alike.

Ballot 0 is "none" (nothing promised, nothing accepted). `CHOSEN` is above every real ballot: an acceptor
marks with it a slot whose value it knows is chosen, and reports it so in phase 1 (a chosen value is the
only one any later ballot may propose, so it outranks every accepted one).
"""

from __future__ import annotations

from collections.abc import Sequence

from dscore.core.errors import ConfigError
from dscore.core.ids import NodeId

__all__ = ["CHOSEN", "MAX_MEMBERS", "NO_BALLOT", "Ballots"]

#: ranks take the low 8 bits
MAX_MEMBERS = 256
NO_BALLOT = 0
#: marks a slot known chosen; above every real ballot (rounds stay below 2**54)
CHOSEN = 1 << 62


class Ballots:
    """Ballot arithmetic for one fixed membership."""

    __slots__ = ("_rank", "members")

    def __init__(self, members: Sequence[NodeId]) -> None:
        ordered = tuple(sorted(set(members)))
        if not ordered:
            raise ConfigError("a Paxos cluster needs at least one member")
        if len(ordered) > MAX_MEMBERS:
            raise ConfigError(f"a Paxos cluster has at most {MAX_MEMBERS} members, got {len(ordered)}")
        self.members = ordered
        self._rank = {node: rank for rank, node in enumerate(ordered)}

    def make(self, round_: int, node: NodeId) -> int:
        return (round_ << 8) | self._rank[node]

    @staticmethod
    def round_of(ballot: int) -> int:
        return ballot >> 8

    def owner(self, ballot: int) -> NodeId | None:
        """The node whose ballot this is (None for a rank outside the membership)."""
        rank = ballot & 0xFF
        return self.members[rank] if rank < len(self.members) else None

    def valid(self, ballot: int) -> bool:
        """A real ballot (not none, not the chosen mark) of some member."""
        return 0 < ballot < CHOSEN and (ballot & 0xFF) < len(self.members) and ballot >> 8 >= 1

    def owned_by(self, ballot: int, node: NodeId) -> bool:
        return self.valid(ballot) and self.members[ballot & 0xFF] == node
