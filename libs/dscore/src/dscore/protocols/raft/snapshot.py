"""Receiving a snapshot in chunks (InstallSnapshot, paper section 7, dissertation chapter 5).

The leader sends its snapshot stop-and-wait, `snapshot_chunk_bytes` at a time: a chunk goes out when the
previous one is acknowledged (`SnapshotResponse.next_offset`), and is sent again from the last reported
offset when nothing moves for a while. The follower keeps one transfer at a time, identified by the leader,
its term and the snapshot's (index, term); a chunk of another transfer starts a new one only at offset 0.
The final chunk (`done`) completes the data; the node then installs it.

The receive buffer is bounded: every chunk carries the snapshot's size (`total_bytes`), a transfer larger
than `RaftConfig.max_snapshot_bytes` is refused before anything is buffered (`snapshot_too_large`), and
one whose chunks announce different sizes is dropped (`snapshot_chunks_disagree`). Chunks never reach
past `total_bytes` (`messages.valid_install`), so the buffer never holds more than the bound. Nothing is
answered to a refused chunk: the leader retries from its last acknowledged offset when it notices no
progress, and a leader whose snapshot exceeds a follower's bound never gets it installed there (the
counter says why).
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
    __slots__ = ("data", "index", "leader", "leader_term", "term", "total_bytes")

    def __init__(self, leader: NodeId, leader_term: int, m: InstallSnapshot) -> None:
        self.leader = leader
        self.leader_term = leader_term
        self.index = m.index
        self.term = m.snap_term
        self.total_bytes = m.total_bytes
        self.data = bytearray()


class SnapshotReceiver:
    """A follower's snapshot transfer in progress, if any, holding at most `max_bytes`."""

    __slots__ = ("_transfer", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._transfer: _Transfer | None = None

    @property
    def buffered_bytes(self) -> int:
        return len(self._transfer.data) if self._transfer is not None else 0

    def cancel(self) -> None:
        self._transfer = None

    def receive(self, leader: NodeId, leader_term: int, m: InstallSnapshot) -> ChunkOutcome:
        """Take one well-formed chunk (`messages.valid_install`) from the leader of our term."""
        if m.total_bytes > self.max_bytes:
            self._transfer = None
            return ChunkOutcome(rejected="snapshot_too_large")
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
            t = _Transfer(leader, leader_term, m)
            self._transfer = t
        elif t.total_bytes != m.total_bytes:
            self._transfer = None
            return ChunkOutcome(rejected="snapshot_chunks_disagree")
        have = len(t.data)
        if m.offset > have:
            return ChunkOutcome(reply_offset=have)
        end = m.offset + len(m.data)
        if end > have:
            t.data += m.data[have - m.offset :]
        if not m.done:
            return ChunkOutcome(reply_offset=len(t.data))
        # The last chunk ends at total_bytes, and no chunk of this transfer reached past it: the data is
        # complete.
        self._transfer = None
        return ChunkOutcome(data=bytes(t.data))
