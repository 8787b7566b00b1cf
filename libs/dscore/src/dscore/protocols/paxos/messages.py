"""Multi-Paxos's wire and storage messages, and the well-formedness checks a node applies to them.

Every class is a registered message (`dscore.core.registry`): its kind (`paxos.prepare`, ...) and the
order of its fields are its wire format. Names follow Lamport's phases ("Paxos Made Simple", 2.2):

- phase 1: `Prepare` (1a) covers every slot from `from_slot` on at once (Multi-Paxos runs phase 1 once
  per leadership, "Paxos Made Simple" 3); `Promise` (1b) reports the acceptor's chosen prefix and every
  value it accepted above it, each with its ballot (`CHOSEN` for values it knows are chosen);
- phase 2: `Accept` (2a) carries values for some slots; `Accepted` (2b) lists the slots accepted;
- `Probe` / `ProbeReply`: before phase 1, would a majority promise a higher ballot at all?
- `Nack`: a ballot below the acceptor's promise was refused (the proposer is preempted);
- learning: `Accept` and `Heartbeat` carry the leader's commit index (its chosen prefix); a node that
  cannot tell the values from its own accepts asks any peer that has them with `CatchUp` and gets
  `Learn` (chosen values) or, below the peer's snapshot, `SnapshotOffer`;
- `Heartbeat` / `HeartbeatAck`: liveness, the commit index, and rounds that confirm reads;
- `PaxosHardState`: what an acceptor persists before it answers (promise, chosen prefix, and the ballot
  of each accepted slot above it, run-length encoded).

Log entries are the values: `LogEntry.term` is the ballot that first proposed the value (a new leader
re-proposes a value unchanged, so every learner applies the same entry); the ballot a slot was accepted
at is kept beside it (`PaxosHardState.accepted`, `PromisedSlot.ballot`).
"""

from __future__ import annotations

from dataclasses import dataclass

from dscore.core.registry import message
from dscore.protocols.contract import LogEntry, Snapshot

__all__ = [
    "Accept",
    "Accepted",
    "CatchUp",
    "Heartbeat",
    "HeartbeatAck",
    "Learn",
    "Nack",
    "PaxosHardState",
    "Prepare",
    "Probe",
    "ProbeReply",
    "Promise",
    "PromisedSlot",
    "SnapshotOffer",
    "ascending_entries",
]


@message("paxos.hard_state")
@dataclass(frozen=True, slots=True)
class PaxosHardState:
    """`promised`: the highest ballot promised; `chosen`: every slot up to it is chosen and stored;
    `accepted`: runs of (count, ballot) giving the ballot of each stored slot after `chosen`, in order
    (0 for a slot with nothing accepted, `CHOSEN` for one known chosen)."""

    promised: int
    chosen: int
    accepted: tuple[tuple[int, int], ...] = ()


@message("paxos.prepare")
@dataclass(frozen=True, slots=True)
class Prepare:
    ballot: int
    #: the proposer's chosen prefix + 1: report every accepted value from here on
    from_slot: int


@message("paxos.probe")
@dataclass(frozen=True, slots=True)
class Probe:
    """Would you promise `ballot`? Asked before phase 1, changing nothing (Raft's pre-vote, 9.6 of
    Ongaro's dissertation, in Paxos terms): a node cut off from the leader cannot raise everyone's
    promises and depose a leader the others still hear."""

    ballot: int


@message("paxos.probe_reply")
@dataclass(frozen=True, slots=True)
class ProbeReply:
    ballot: int
    granted: bool
    #: the replier's promise (a prober whose rounds are behind probes higher next time)
    promised: int


@message("paxos.promised_slot")
@dataclass(frozen=True, slots=True)
class PromisedSlot:
    ballot: int
    entry: LogEntry


@message("paxos.promise")
@dataclass(frozen=True, slots=True)
class Promise:
    ballot: int
    #: the acceptor's chosen prefix (a proposer behind it catches up before it proposes anything)
    chosen: int
    #: every value accepted (or known chosen) above max(chosen, from_slot - 1), ascending by slot
    slots: tuple[PromisedSlot, ...]


@message("paxos.accept")
@dataclass(frozen=True, slots=True)
class Accept:
    ballot: int
    #: values for some slots, ascending (not necessarily consecutive: resends fill holes)
    entries: tuple[LogEntry, ...]
    #: the leader's chosen prefix
    commit: int


@message("paxos.accepted")
@dataclass(frozen=True, slots=True)
class Accepted:
    ballot: int
    slots: tuple[int, ...]
    #: the acceptor's chosen prefix
    chosen: int


@message("paxos.nack")
@dataclass(frozen=True, slots=True)
class Nack:
    """`ballot` was refused: the acceptor promised `promised`, which is higher."""

    ballot: int
    promised: int


@message("paxos.heartbeat")
@dataclass(frozen=True, slots=True)
class Heartbeat:
    ballot: int
    commit: int
    #: numbers heartbeat rounds within a leadership: a majority acknowledging round r confirms reads
    #: registered before r was sent
    round: int


@message("paxos.heartbeat_ack")
@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    ballot: int
    round: int
    chosen: int


@message("paxos.catch_up")
@dataclass(frozen=True, slots=True)
class CatchUp:
    """Send me the chosen values from `from_slot` on."""

    from_slot: int


@message("paxos.learn")
@dataclass(frozen=True, slots=True)
class Learn:
    """Chosen values, consecutive slots (facts: true whatever ballot is current)."""

    entries: tuple[LogEntry, ...]


@message("paxos.snapshot")
@dataclass(frozen=True, slots=True)
class SnapshotOffer:
    """The sender's snapshot: every slot up to `snapshot.index` is chosen and reflected in it."""

    snapshot: Snapshot


def ascending_entries(entries: tuple[LogEntry, ...], *, consecutive: bool, max_term: int) -> bool:
    """Slots >= 1, strictly ascending (consecutive if asked), each value first proposed by a real
    ballot no higher than `max_term`."""
    previous = 0
    for entry in entries:
        if entry.index <= previous or (consecutive and previous and entry.index != previous + 1):
            return False
        if not 0 < entry.term <= max_term:
            return False
        previous = entry.index
    return True
