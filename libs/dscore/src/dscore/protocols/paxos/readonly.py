"""Linearizable reads by a read quorum round (no lease).

A read registered on the leader at slot index `i` (the last slot it has assigned, which covers every
value a previous leader may have had chosen: phase 1 re-proposed them all) waits for a heartbeat round
sent after it to be acknowledged, at the leader's ballot, by a majority. An acceptor acknowledges only
while it has promised nothing higher, and any ballot that chose a value before the read began had a
majority promise it first; the two majorities share an acceptor, which would have refused. So when the
round is confirmed no other leader had chosen anything the read could miss, and the read is served once
the state machine has applied `i` (`ReadState`). This is Raft's ReadIndex (Ongaro, 6.4) in Paxos terms.

Why not a lease: a lease is safe only with a bound on clock drift, and the simulator pauses nodes and
skews time on purpose. A round costs one heartbeat's latency, and the regular heartbeat carries it.
"""

from __future__ import annotations

from dscore.core.ids import NodeId
from dscore.protocols.contract import ReadState

__all__ = ["ReadRounds"]


class ReadRounds:
    __slots__ = ("acked", "failed", "needed", "pending", "released", "round", "want_round")

    def __init__(self, needed: int) -> None:
        #: acknowledgements (self included) that confirm a round
        self.needed = needed
        #: the latest round sent
        self.round = 0
        #: highest round each peer acknowledged at our ballot
        self.acked: dict[NodeId, int] = {}
        #: (request id, index, round that confirms it)
        self.pending: list[tuple[int, int, int]] = []
        self.released: list[ReadState] = []
        self.failed: list[int] = []
        #: a read waits for a round not yet sent: send one at the next `ready`
        self.want_round = False

    def reset(self) -> None:
        """A new leadership (or none): rounds start again; pending reads fail."""
        self.failed.extend(request_id for request_id, _, _ in self.pending)
        self.pending = []
        self.acked = {}
        self.round = 0
        self.want_round = False

    def register(self, request_id: int, index: int) -> None:
        self.pending.append((request_id, index, self.round + 1))
        self.want_round = True
        if self.needed <= 1:
            self.next_round()
            self.confirm()

    def next_round(self) -> int:
        self.round += 1
        self.want_round = False
        return self.round

    def ack(self, peer: NodeId, round_: int) -> None:
        if round_ > self.acked.get(peer, 0) and round_ <= self.round:
            self.acked[peer] = round_
            if self.pending:
                self.confirm()

    def confirm(self) -> None:
        rounds = sorted((*self.acked.values(), self.round), reverse=True)
        confirmed = rounds[self.needed - 1] if len(rounds) >= self.needed else 0
        keep = []
        for request_id, index, needed_round in self.pending:
            if needed_round <= confirmed:
                self.released.append(ReadState(request_id, index))
            else:
                keep.append((request_id, index, needed_round))
        self.pending = keep
