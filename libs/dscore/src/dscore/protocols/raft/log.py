"""Raft's log in memory (etcd's `raftLog` with its `unstable` part): the retained entries after the latest
snapshot, the commit index, and what is still to be handed to the driver.

Indexes: `entries[i]` has index `offset + i`; the snapshot covers every index up to `snap_index`
(`offset == snap_index + 1`), whose term `snap_term` is all that remains of it in the log. Index 0 is the
empty position before the first entry (term 0).

Three marks move forward through the log and are handed out through `Ready`:

- `unstable_from`: the first entry not yet handed out for persisting (`Ready.entries`); truncation moves
  it back;
- `committed`: the commit index (known to be stored by a majority), part of `HardState`;
- `handed`: the last committed entry handed out for applying (`Ready.committed`) or covered by a
  snapshot, and `applied`: the last one the driver acknowledged (`advance`).

The log knows nothing of configurations or roles; the node decides what to append or cut.
"""

from __future__ import annotations

from bisect import bisect_right
from operator import attrgetter

from dscore.protocols.contract import DurableState, LogEntry, Snapshot

__all__ = ["RaftLog"]

_entry_term = attrgetter("term")


class RaftLog:
    __slots__ = (
        "applied",
        "committed",
        "entries",
        "handed",
        "log_replaced",
        "offset",
        "pending_snapshot",
        "snap_index",
        "snap_term",
        "snapshot",
        "unstable_from",
    )

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []
        self.offset = 1
        self.snap_index = 0
        self.snap_term = 0
        #: the latest snapshot (taken by `compact` or installed from a leader)
        self.snapshot: Snapshot | None = None
        #: a snapshot not yet handed out in `Ready.snapshot`
        self.pending_snapshot: Snapshot | None = None
        #: the pending snapshot replaces the whole stored log (installed without a matching entry)
        self.log_replaced = False
        self.committed = 0
        self.unstable_from = 1
        self.handed = 0
        self.applied = 0

    def restore(self, durable: DurableState) -> bool:
        """Load the durable snapshot and entries (the snapshot is announced again in the next `Ready`, so
        an empty state machine restores it). Entries that do not follow on are cut off: returns False
        if any were."""
        snap = durable.snapshot
        if snap is not None:
            self.snap_index = snap.index
            self.snap_term = snap.term
            self.offset = snap.index + 1
            self.snapshot = snap
            self.pending_snapshot = snap
        intact = True
        expected = self.offset
        prev_term = self.snap_term
        for entry in durable.entries:
            if entry.index <= self.snap_index:
                continue
            if entry.index != expected or entry.term < prev_term:
                intact = False
                break
            self.entries.append(entry)
            expected += 1
            prev_term = entry.term
        self.committed = self.snap_index
        self.unstable_from = self.last_index + 1
        self.handed = self.snap_index
        self.applied = self.snap_index
        return intact

    # -- reading ----------------------------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        return self.offset + len(self.entries) - 1

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snap_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index` (the snapshot's term at `snap_index`, 0 at index 0), or None
        if it is compacted away or beyond the log."""
        if index == self.snap_index:
            return self.snap_term
        i = index - self.offset
        if 0 <= i < len(self.entries):
            return self.entries[i].term
        return None

    def slice(self, lo: int | None, hi: int | None) -> tuple[LogEntry, ...]:
        """Entries with lo <= index <= hi (defaults: the whole retained log)."""
        offset = self.offset
        last = self.last_index
        start = max(lo if lo is not None else offset, offset) - offset
        stop = min(hi if hi is not None else last, last) - offset + 1
        return tuple(self.entries[start:stop]) if stop > start else ()

    def batch(self, start: int, max_entries: int, max_bytes: int) -> tuple[LogEntry, ...]:
        """Entries from `start` for one message: at most `max_entries`, and about `max_bytes` of data
        (at least one entry)."""
        i = start - self.offset
        batch = self.entries[i : i + max_entries]
        size = 0
        for k, e in enumerate(batch):
            size += len(e.data)
            if size > max_bytes and k > 0:
                return tuple(batch[:k])
        return tuple(batch)

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest j <= index with term_at(j) <= term (terms never decrease along a log); the
        snapshot index if no retained entry qualifies, `index` itself if it is compacted."""
        index = min(index, self.last_index)
        if index <= self.snap_index:
            return index
        hi = index - self.offset + 1
        if self.entries[hi - 1].term <= term:
            return index
        pos = bisect_right(self.entries, term, 0, hi, key=_entry_term)
        return self.offset + pos - 1

    def first_new(self, entries: tuple[LogEntry, ...]) -> int:
        """The position in `entries` (contiguous, from a leader) of the first one this log does not hold
        with the same term; `len(entries)` if it holds them all (Log Matching)."""
        last = self.last_index
        if entries[0].index > last:
            return 0
        n = len(entries)
        tail = entries[-1]
        if tail.index <= last and self.term_at(tail.index) == tail.term:
            return n
        k = 0
        while k < n and entries[k].index <= last and self.term_at(entries[k].index) == entries[k].term:
            k += 1
        return k

    # -- writing ----------------------------------------------------------------------------------------

    def truncate_from(self, index: int) -> None:
        """Drop the entries from `index` on (they conflict with the leader's)."""
        del self.entries[index - self.offset :]
        self.unstable_from = min(self.unstable_from, index)

    def compact(self, snapshot: Snapshot) -> None:
        """The state machine was snapshotted at `snapshot.index` (an entry of this log): drop the prefix."""
        index = snapshot.index
        del self.entries[: index - self.offset + 1]
        self.offset = index + 1
        self.snap_index = index
        self.snap_term = snapshot.term
        self.snapshot = snapshot
        self.pending_snapshot = snapshot

    def install(self, snapshot: Snapshot) -> bool:
        """A leader's snapshot: keep the entries after it if this log holds its last entry, otherwise
        discard the whole log, in storage too (`log_replaced`). Returns True if the suffix was kept."""
        index = snapshot.index
        kept = index <= self.last_index and self.term_at(index) == snapshot.term
        if kept:
            del self.entries[: index - self.offset + 1]
        else:
            self.entries = []
            self.unstable_from = index + 1
            self.log_replaced = True  # stale entries after the snapshot must go from storage too
        self.offset = index + 1
        self.snap_index = index
        self.snap_term = snapshot.term
        self.unstable_from = max(self.unstable_from, index + 1)
        self.snapshot = snapshot
        self.pending_snapshot = snapshot
        self.committed = max(self.committed, index)
        self.handed = max(self.handed, index)
        return kept

    # -- handing out ------------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return (
            self.committed > self.handed
            or self.unstable_from <= self.offset + len(self.entries) - 1
            or self.pending_snapshot is not None
        )

    def take_ready(self) -> tuple[Snapshot | None, bool, tuple[LogEntry, ...], tuple[LogEntry, ...]]:
        """What the log hands out in a `Ready`: the pending snapshot (and whether it replaces the stored
        log), the entries not yet handed out for persisting, the committed ones not yet handed out for
        applying."""
        snapshot = self.pending_snapshot
        log_replaced = self.log_replaced
        self.pending_snapshot = None
        self.log_replaced = False
        offset = self.offset
        last = offset + len(self.entries) - 1
        entries: tuple[LogEntry, ...] = ()
        if self.unstable_from <= last:
            entries = tuple(self.entries[self.unstable_from - offset :])
            self.unstable_from = last + 1
        committed: tuple[LogEntry, ...] = ()
        if self.committed > self.handed:
            committed = tuple(self.entries[self.handed + 1 - offset : self.committed + 1 - offset])
            self.handed = self.committed
        return snapshot, log_replaced, entries, committed
