"""Receiving a snapshot in chunks (InstallSnapshot, paper section 7, dissertation chapter 5).

The leader sends its snapshot stop-and-wait, `snapshot_chunk_bytes` at a time: a chunk goes out when the
previous one is acknowledged (`SnapshotResponse.next_offset`), and is sent again from the last reported
offset when nothing moves for a while. The follower keeps one transfer at a time, identified by the leader,
its term and the snapshot's (index, term); a chunk of another transfer starts a new one only at offset 0.
The final chunk (`done`) completes the data; the node then installs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dscore.core.ids import NodeId
from dscore.protocols.raft.messages import InstallSnapshot

__all__ = ["ChunkOutcome", "SnapshotReceiver"]


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    """What to do after a chunk: install `data` (the whole snapshot), answer with `reply_offset` (the
    bytes held so far, or where to restart), and count `rejected` (the transfer was dropped)."""

    data: bytes | None = None
    reply_offset: int | None = None
    rejected: str | None = None


class _Transfer:
    __slots__ = ("data", "index", "leader", "leader_term", "term")

    def __init__(self, leader: NodeId, leader_term: int, index: int, term: int) -> None:
        self.leader = leader
        self.leader_term = leader_term
        self.index = index
        self.term = term
        self.data = bytearray()


class SnapshotReceiver:
    """A follower's snapshot transfer in progress, if any."""

    __slots__ = ("_transfer",)

    def __init__(self) -> None:
        self._transfer: _Transfer | None = None

    def cancel(self) -> None:
        self._transfer = None

    def receive(self, leader: NodeId, leader_term: int, m: InstallSnapshot) -> ChunkOutcome:
        """Take one chunk from the leader of our term (`leader_term`)."""
        t = self._transfer
        if (
            t is None
            or t.leader != leader
            or t.leader_term != leader_term
            or t.index != m.index
            or t.term != m.snap_term
        ):
            if m.offset != 0:
                return ChunkOutcome(reply_offset=0)
            t = _Transfer(leader, leader_term, m.index, m.snap_term)
            self._transfer = t
        have = len(t.data)
        if m.offset > have:
            return ChunkOutcome(reply_offset=have)
        end = m.offset + len(m.data)
        if end > have:
            t.data += m.data[have - m.offset :]
        if not m.done:
            return ChunkOutcome(reply_offset=len(t.data))
        self._transfer = None
        if len(t.data) != end:
            return ChunkOutcome(reply_offset=0, rejected="invalid")
        return ChunkOutcome(data=bytes(t.data))
