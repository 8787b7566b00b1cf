"""The slots one node keeps as acceptor and learner, and what of them is still to be handed out.

Slots after the snapshot are stored as consecutive `LogEntry`s (the durable format every protocol
shares: `Ready.entries` replaces the stored suffix from its first index on), each with the ballot it was
accepted at (`ballots`, kept in the hard state). A slot with nothing accepted holds a placeholder (ballot
0; its entry is never reported, applied or sent). Slots up to `chosen` hold chosen values; above it a
slot may be accepted at some ballot, or known chosen (`CHOSEN`) while an earlier slot is not.

A write of slot `s` rewrites the stored suffix from `s` on, so accepts arriving in slot order (the common
case) append, and a resend that fills a hole rewrites at most the open slots after it.
"""

from __future__ import annotations

from dscore.core.errors import LocalError
from dscore.protocols.contract import DurableState, EntryKind, LogEntry, Snapshot
from dscore.protocols.paxos.ballot import CHOSEN, NO_BALLOT
from dscore.protocols.paxos.messages import PaxosHardState

__all__ = ["PaxosLog"]

_NOTHING = 1 << 70  # "no unstable slot"


def _placeholder(slot: int) -> LogEntry:
    return LogEntry(slot, 0, EntryKind.NOOP, b"")


class PaxosLog:
    __slots__ = (
        "ballots",
        "chosen",
        "entries",
        "handed",
        "pending_snapshot",
        "snap_index",
        "snap_term",
        "snapshot",
        "unstable_from",
    )

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.snap_index = 0
        self.snap_term = 0
        #: slots snap_index+1 .. last
        self.entries: list[LogEntry] = []
        self.ballots: list[int] = []
        self.chosen = 0
        #: committed entries handed out for applying, up to here
        self.handed = 0
        #: lowest slot changed since the last `take_ready`
        self.unstable_from = _NOTHING
        #: a snapshot to persist (and restore the state machine from) in the next Ready
        self.pending_snapshot: Snapshot | None = None

    # -- restore ------------------------------------------------------------------------------------

    def restore(self, durable: DurableState) -> int:
        """Load the durable image; returns the promised ballot."""
        snap = durable.snapshot
        if snap is not None:
            self.snapshot = snap
            self.snap_index = snap.index
            self.snap_term = snap.term
            self.chosen = self.handed = snap.index
            self.pending_snapshot = snap  # announced again: the state machine starts empty
        entries = [e for e in durable.entries if e.index > self.snap_index]
        for offset, entry in enumerate(entries):
            if entry.index != self.snap_index + 1 + offset:
                raise LocalError(f"durable paxos slots are not consecutive after {self.snap_index}")
        self.entries = entries
        hs = durable.hard_state
        if hs is None:
            self.ballots = [NO_BALLOT] * len(entries)
            if entries:
                raise LocalError("durable paxos slots without a hard state")
            return NO_BALLOT
        if not isinstance(hs, PaxosHardState):
            raise LocalError(f"durable hard state is not a PaxosHardState: {hs!r}")
        chosen = max(hs.chosen, self.snap_index)
        if chosen > self.last_index:
            raise LocalError(f"durable chosen prefix {chosen} beyond the stored slots ({self.last_index})")
        self.chosen = chosen
        open_ballots = [ballot for count, ballot in hs.accepted for _ in range(count)]
        if len(open_ballots) != self.last_index - chosen:
            raise LocalError("durable accepted ballots do not cover the stored open slots")
        self.ballots = [CHOSEN] * (chosen - self.snap_index) + open_ballots
        return hs.promised

    # -- reading ------------------------------------------------------------------------------------

    @property
    def last_index(self) -> int:
        return self.snap_index + len(self.entries)

    def ballot_at(self, slot: int) -> int:
        position = slot - self.snap_index - 1
        if slot <= self.snap_index:
            return CHOSEN
        if position >= len(self.entries):
            return NO_BALLOT
        return self.ballots[position]

    def entry_at(self, slot: int) -> LogEntry | None:
        """The value stored at `slot` (None for nothing accepted, or compacted)."""
        position = slot - self.snap_index - 1
        if position < 0 or position >= len(self.entries) or self.ballots[position] == NO_BALLOT:
            return None
        return self.entries[position]

    def chosen_entries(self, lo: int, hi: int) -> tuple[LogEntry, ...]:
        """Chosen values of slots lo..hi (inclusive; within snap_index < lo, hi <= chosen)."""
        base = self.snap_index + 1
        return tuple(self.entries[lo - base : hi - base + 1])

    def open_slots(self, above: int) -> list[tuple[int, LogEntry]]:
        """(ballot, value) of every slot above `above` holding one."""
        start = max(above, self.snap_index) - self.snap_index
        found = []
        for position in range(start, len(self.entries)):
            ballot = self.ballots[position]
            if ballot != NO_BALLOT:
                found.append((ballot, self.entries[position]))
        return found

    def hard_state(self, promised: int) -> PaxosHardState:
        runs: list[tuple[int, int]] = []
        for ballot in self.ballots[self.chosen - self.snap_index :]:
            if runs and runs[-1][1] == ballot:
                runs[-1] = (runs[-1][0] + 1, ballot)
            else:
                runs.append((1, ballot))
        return PaxosHardState(promised, self.chosen, tuple(runs))

    # -- writing ------------------------------------------------------------------------------------

    def _extend_to(self, slot: int) -> None:
        if self.last_index < slot:
            self.unstable_from = min(self.unstable_from, self.last_index + 1)
        while self.last_index < slot:
            self.entries.append(_placeholder(self.last_index + 1))
            self.ballots.append(NO_BALLOT)

    def store(self, entry: LogEntry, ballot: int) -> bool:
        """Accept `entry` at `ballot` (or record it chosen, with `CHOSEN`). Slots already chosen keep
        their value. Returns whether the slot is (now) held at `ballot`."""
        slot = entry.index
        if slot <= self.chosen:
            return False
        self._extend_to(slot)
        position = slot - self.snap_index - 1
        if self.ballots[position] == CHOSEN and ballot != CHOSEN:
            return False  # known chosen: nothing can replace it
        if self.ballots[position] != ballot or self.entries[position] != entry:
            self.entries[position] = entry
            self.ballots[position] = ballot
            self.unstable_from = min(self.unstable_from, slot)
        return True

    def mark_chosen(self, slot: int) -> None:
        position = slot - self.snap_index - 1
        if slot > self.chosen and position < len(self.entries) and self.ballots[position] != NO_BALLOT:
            self.ballots[position] = CHOSEN

    def advance_chosen(self) -> bool:
        """Move the chosen prefix over slots known chosen; returns whether it moved."""
        before = self.chosen
        ballots = self.ballots
        base = self.snap_index + 1
        while self.chosen < self.last_index and ballots[self.chosen + 1 - base] == CHOSEN:
            self.chosen += 1
        return self.chosen != before

    def install(self, snap: Snapshot) -> None:
        """A snapshot of chosen state newer than our chosen prefix: keep the slots after it."""
        drop = min(snap.index, self.last_index) - self.snap_index
        del self.entries[:drop]
        del self.ballots[:drop]
        self.snapshot = snap
        self.snap_index = snap.index
        self.snap_term = snap.term
        self.chosen = max(self.chosen, snap.index)
        self.handed = max(self.handed, snap.index)
        self.pending_snapshot = snap
        if self.unstable_from <= snap.index:
            self.unstable_from = snap.index + 1 if self.entries else _NOTHING
        self.advance_chosen()

    def compact(self, index: int, data: bytes) -> None:
        """The state machine applied up to `index` is kept as `data`: drop the slots up to it."""
        if index <= self.snap_index:
            raise LocalError(f"index {index} is already compacted (snapshot at {self.snap_index})")
        if index > self.handed:
            raise LocalError(f"index {index} was not handed out for applying yet (up to {self.handed})")
        entry = self.entries[index - self.snap_index - 1]
        snap = Snapshot(index, entry.term, data, None)
        drop = index - self.snap_index
        del self.entries[:drop]
        del self.ballots[:drop]
        self.snapshot = snap
        self.snap_index = index
        self.snap_term = entry.term
        self.pending_snapshot = snap
        if self.unstable_from <= index:
            self.unstable_from = index + 1 if self.entries else _NOTHING

    # -- Ready --------------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return (
            self.pending_snapshot is not None
            or self.unstable_from <= self.last_index
            or self.chosen > self.handed
        )

    def take_ready(self) -> tuple[Snapshot | None, tuple[LogEntry, ...], tuple[LogEntry, ...]]:
        snapshot = self.pending_snapshot
        self.pending_snapshot = None
        entries: tuple[LogEntry, ...] = ()
        if self.unstable_from <= self.last_index:
            entries = tuple(self.entries[self.unstable_from - self.snap_index - 1 :])
        self.unstable_from = _NOTHING
        committed: tuple[LogEntry, ...] = ()
        if self.chosen > self.handed:
            committed = self.chosen_entries(self.handed + 1, self.chosen)
            self.handed = self.chosen
        return snapshot, entries, committed
