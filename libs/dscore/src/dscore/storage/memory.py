"""In-memory stable storage: the embedded stand-in for a disk.

`EmbeddedCluster` keeps a node's `MemoryStorage` when it "crashes" (the runtime object is discarded, the
storage object is not), so what was saved survives a crash exactly as a disk or Redis would keep it, and
what was not saved is gone.

The entry log is kept as a list with the exact semantics of `apply_persist` (the reference the Redis
storage is tested against too): appending a Ready's entries costs O(new entries), not O(log), because a
core's entries arrive in increasing index order, so truncation points are found by bisection.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from types import MappingProxyType

from dscore.core.ids import NodeId
from dscore.protocols.contract import DurableState, LogEntry, Snapshot
from dscore.storage.base import DedupMark, StoredState, WriteBatch


def _index(entry: LogEntry) -> int:
    return entry.index


class MemoryStorage:
    """A `Storage` held in process memory. Writes are atomic because `save` never suspends mid-write."""

    __slots__ = ("_entries", "_hard_state", "_incarnation", "_marks", "_positions", "_snapshot", "saves")

    def __init__(self) -> None:
        self._hard_state: object | None = None
        self._snapshot: Snapshot | None = None
        self._entries: list[LogEntry] = []
        self._incarnation = 0
        self._marks: dict[NodeId, DedupMark] = {}
        self._positions: dict[str, int] = {}
        #: number of `save` calls, for tests and benchmarks
        self.saves = 0

    async def load(self) -> StoredState:
        return self.stored_state()

    def stored_state(self) -> StoredState:
        """A synchronous `load`, for tests and the embedded cluster's inspection."""
        return StoredState(
            durable=DurableState(self._hard_state, self._snapshot, tuple(self._entries)),
            incarnation=self._incarnation,
            dedup_marks=MappingProxyType(dict(self._marks)),
            input_positions=MappingProxyType(dict(self._positions)),
        )

    async def save(self, batch: WriteBatch) -> None:
        self.saves += 1
        if batch.hard_state is not None:
            self._hard_state = batch.hard_state
        snapshot = batch.snapshot
        entries = self._entries
        if snapshot is not None and (self._snapshot is None or snapshot.index > self._snapshot.index):
            self._snapshot = snapshot
            if batch.log_replaced:
                entries.clear()
            else:
                del entries[: bisect_right(entries, snapshot.index, key=_index)]
        if batch.entries:
            del entries[bisect_left(entries, batch.entries[0].index, key=_index) :]
            entries.extend(batch.entries)
        for sender, mark in batch.dedup_marks.items():
            old = self._marks.get(sender)
            if old is None or mark > old:
                self._marks[sender] = mark
        for channel, position in batch.input_positions.items():
            if position > self._positions.get(channel, -1):
                self._positions[channel] = position

    async def bump_incarnation(self) -> int:
        self._incarnation += 1
        return self._incarnation
