"""Raft's safety properties (the paper's Figure 3), checked by the simulator after every event.

- `ElectionSafety`: at most one leader per term, over the whole run (the seed's Theorem 2.4);
- `LogMatching`: if two logs hold an entry with the same index and term, they hold the same entry there
  and agree on everything before it. Checked on what nodes *persist*: every persisted entry `(index,
  term)` must carry the same command and follow the same previous term as every other copy ever
  persisted, which by induction is the whole property, at O(new entries) per event;
- `LeaderCompleteness`: an entry committed in some term is in the log of every leader of a later term
  (checked when each leader appears);
- `check_no_overwrite_of_committed`: no follower saw a leader try to overwrite a committed entry (the
  Raft core counts such refusals as `conflict_with_committed`);
- state-machine safety comes from `dscore.sim.invariants.StateMachineSafety`.
"""

from __future__ import annotations

from dscore.core.ids import NodeId
from dscore.protocols.contract import LogEntry
from dscore.protocols.raft import RaftNode, Role
from dscore.sim.invariants import describe_data, generic_invariants
from dscore.sim.view import ClusterView, Invariant, InvariantViolation


class ElectionSafety:
    __slots__ = ("_leaders",)

    def __init__(self) -> None:
        self._leaders: dict[int, NodeId] = {}

    def check(self, leaders: list[RaftNode]) -> None:
        for core in leaders:
            first = self._leaders.setdefault(core.term, core.node_id)
            if first != core.node_id:
                raise InvariantViolation(
                    f"election safety: {core.node_id} and {first} were both leader in term {core.term}"
                )


class LogMatching:
    __slots__ = ("_copies", "_seen")

    def __init__(self) -> None:
        # (index, term) -> (previous entry's term, kind, data, first node that persisted it)
        self._copies: dict[tuple[int, int], tuple[int | None, int, bytes, NodeId]] = {}
        self._seen: dict[NodeId, tuple[LogEntry, ...]] = {}

    def check(self, view: ClusterView) -> None:
        for node_id, node in view.nodes.items():
            durable = node.durable
            entries = durable.entries
            old = self._seen.get(node_id, ())
            if entries is old:
                continue
            self._seen[node_id] = entries
            snapshot = durable.snapshot
            # Walk back from the end over the entries this write added (the rest are the same objects).
            position = len(entries) - 1
            while position >= 0 and not _same_object_at(old, entries[position]):
                entry = entries[position]
                if position > 0:
                    previous_term: int | None = entries[position - 1].term
                elif snapshot is not None and snapshot.index == entry.index - 1:
                    previous_term = snapshot.term
                else:
                    previous_term = 0 if entry.index == 1 else None
                self._record(node_id, entry, previous_term)
                position -= 1

    def _record(self, node_id: NodeId, entry: LogEntry, previous_term: int | None) -> None:
        key = (entry.index, entry.term)
        mine = (previous_term, int(entry.kind), entry.data, node_id)
        first = self._copies.setdefault(key, mine)
        if first[1:3] != mine[1:3]:
            raise InvariantViolation(
                f"log matching: {node_id} persisted {describe_data(entry.data)} at index {entry.index} "
                f"term {entry.term}, where {first[3]} persisted {describe_data(first[2])}"
            )
        if previous_term is not None and first[0] is not None and first[0] != previous_term:
            raise InvariantViolation(
                f"log matching: at index {entry.index} term {entry.term}, {node_id}'s previous entry has "
                f"term {previous_term} but {first[3]}'s has term {first[0]}"
            )


def _same_object_at(old: tuple[LogEntry, ...], entry: LogEntry) -> bool:
    if not old:
        return False
    position = entry.index - old[0].index
    return 0 <= position < len(old) and old[position] is entry


class LeaderCompleteness:
    """A leader of term T holds every entry committed in a term below T.

    The commit term of an entry is not observable from outside, but it is at most the highest leader
    term seen when the entry is first seen applied (`bound`); so a leader whose term exceeds that bound
    must hold the entry. Checked once per (leader, term) over every entry seen committed so far."""

    __slots__ = ("_checked_leaders", "_committed", "_max_leader_term")

    def __init__(self) -> None:
        self._committed: dict[int, tuple[int, int]] = {}  # index -> (term, bound on its commit term)
        self._checked_leaders: set[tuple[NodeId, int]] = set()
        self._max_leader_term = 0

    def check(self, view: ClusterView, leaders: list[RaftNode]) -> None:
        for leader in leaders:
            self._max_leader_term = max(self._max_leader_term, leader.term)
        for applied in view.new_applies:
            entry = applied.entry
            if entry.index not in self._committed:
                self._committed[entry.index] = (entry.term, self._max_leader_term)
        for leader in leaders:
            key = (leader.node_id, leader.term)
            if key not in self._checked_leaders:
                self._checked_leaders.add(key)
                for index, (term, bound) in self._committed.items():
                    if bound < leader.term:
                        self._check(leader, index, term)

    @staticmethod
    def _check(leader: RaftNode, index: int, term: int) -> None:
        if index <= leader.snapshot_index:
            return  # compacted into the leader's snapshot, which holds only committed entries
        if leader.term_at(index) != term:
            raise InvariantViolation(
                f"leader completeness: entry {index} (term {term}) is committed, but leader "
                f"{leader.node_id} of term {leader.term} holds term {leader.term_at(index)} there"
            )


def check_no_overwrite_of_committed(cores: list[RaftNode]) -> None:
    for core in cores:
        if core.counters.get("conflict_with_committed", 0):
            raise InvariantViolation(
                f"{core.node_id} was asked to overwrite a committed entry (a leader lacked it)"
            )


class RaftSafety:
    """All of Raft's invariants in one pass over the nodes (this runs after every simulated event)."""

    __slots__ = ("completeness", "election", "log_matching")

    def __init__(self) -> None:
        self.election = ElectionSafety()
        self.log_matching = LogMatching()
        self.completeness = LeaderCompleteness()

    def __call__(self, view: ClusterView) -> None:
        cores = [node.core for node in view.nodes.values() if isinstance(node.core, RaftNode)]
        leaders = [core for core in cores if core.role is Role.LEADER]
        self.election.check(leaders)
        self.log_matching.check(view)
        self.completeness.check(view, leaders)
        check_no_overwrite_of_committed(cores)


def raft_invariants() -> tuple[Invariant, ...]:
    return (*generic_invariants(), RaftSafety())
