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
- `check_acknowledged_is_durable`: what a leader believes a follower stores (its `match`) is in that
  follower's durable image, unless the follower has since moved to a later term (whose leader may have
  cut its log). An acknowledgement is a promise about stable storage; one that a crash can take back lets
  a leader commit on a majority that does not exist;
- `check_votes_are_durable`: every vote that elected a leader is in its voter's stable storage when the
  leader takes office (the voter's durable term is the leader's with its vote for it, or later). A vote
  a crash can take back lets the voter vote again in that term, for another candidate;
- state-machine safety comes from `dscore.sim.invariants.StateMachineSafety`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dscore.core.ids import NodeId
from dscore.protocols.contract import DurableState, LogEntry
from dscore.protocols.raft import RaftNode, Role
from dscore.protocols.raft.messages import HardState
from dscore.sim.invariants import describe_data, generic_invariants
from dscore.sim.view import ClusterView, Invariant, InvariantViolation, NodeView


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

    def check(self, touched: Iterable[tuple[NodeId, NodeView]]) -> None:
        for node_id, node in touched:
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


def check_no_overwrite_of_committed(core: RaftNode) -> None:
    if core.counters.get("conflict_with_committed", 0):
        raise InvariantViolation(
            f"{core.node_id} was asked to overwrite a committed entry (a leader lacked it)"
        )


class RaftSafety:
    """All of Raft's invariants in one pass (this runs after every simulated event).

    After an event handed to one node (`ClusterView.changed`), only that node's core and durable image
    can have changed, so only what involves that node is checked again: whether it leads, what it
    persisted, and the acknowledgements between it and the leaders. After any other event every node
    is checked. The leaders are kept from one call to the next: a core's role changes only in an event
    handed to that node."""

    __slots__ = ("_durable_seen", "_leaders", "_votes_checked", "completeness", "election", "log_matching")

    def __init__(self) -> None:
        self.election = ElectionSafety()
        self.log_matching = LogMatching()
        self.completeness = LeaderCompleteness()
        #: the node id and live core of each node that led after the previous call
        self._leaders: dict[NodeId, RaftNode] = {}
        #: each node's durable image when the leaders' view of it was last checked
        self._durable_seen: dict[NodeId, DurableState] = {}
        #: (leader, term) whose electing votes were checked (once, when it took office)
        self._votes_checked: set[tuple[NodeId, int]] = set()

    def __call__(self, view: ClusterView) -> None:
        nodes = view.nodes
        changed = view.changed
        touched: Iterable[tuple[NodeId, NodeView]] = (
            nodes.items() if changed is None else ((changed, nodes[changed]),)
        )
        leaders = self._leaders
        new_leaders = []
        for node_id, node in touched:
            core = node.core
            if isinstance(core, RaftNode):
                check_no_overwrite_of_committed(core)
                if core.role is Role.LEADER:
                    leaders[node_id] = core
                    new_leaders.append(core)
                    continue
            leaders.pop(node_id, None)
        self.election.check(new_leaders)
        for core in new_leaders:
            office = (core.node_id, core.term)
            if office not in self._votes_checked:
                self._votes_checked.add(office)
                check_votes_are_durable(core, nodes)
        self.log_matching.check(touched)
        self.completeness.check(view, new_leaders)
        if changed is None:
            for leader in leaders.values():
                check_acknowledged_is_durable(leader, nodes.items())
            self._durable_seen = {node_id: node.durable for node_id, node in nodes.items()}
            return
        if changed in leaders:
            check_acknowledged_is_durable(leaders[changed], nodes.items())
        node = nodes[changed]
        durable = node.durable
        if self._durable_seen.get(changed) is durable:
            return  # what the other leaders count for it was checked against this very image
        self._durable_seen[changed] = durable
        pair = ((changed, node),)
        for leader_id, leader in leaders.items():
            if leader_id != changed:
                check_acknowledged_is_durable(leader, pair)


def check_acknowledged_is_durable(leader: RaftNode, peers: Iterable[tuple[NodeId, NodeView]]) -> None:
    term = leader.term
    for peer_id, peer in peers:
        if peer_id == leader.node_id:
            continue
        progress = leader.progress(peer_id)
        if progress is None or progress.match == 0:
            continue
        match = progress.match
        durable = peer.durable
        hard_state = durable.hard_state
        if isinstance(hard_state, HardState) and hard_state.term > term:
            continue  # a leader of a later term may have cut the follower's log since
        snapshot = durable.snapshot
        if snapshot is not None and snapshot.index >= match:
            continue
        expected = leader.term_at(match)
        stored = _stored_term(durable.entries, match)
        if stored is None or (expected is not None and stored != expected):
            held = "nothing" if stored is None else f"term {stored}"
            raise InvariantViolation(
                f"acknowledged is durable: leader {leader.node_id} of term {term} counts {peer_id} as "
                f"storing its log up to {match}, but {peer_id}'s stable storage holds {held} at {match}"
            )


def check_votes_are_durable(leader: RaftNode, nodes: Mapping[NodeId, NodeView]) -> None:
    term = leader.term
    for voter in leader.elected_by:
        if voter == leader.node_id:
            continue  # its own vote goes to storage with its vote requests; a lone voter wins before that
        node = nodes.get(voter)
        if node is None:
            continue
        hard_state = node.durable.hard_state
        if isinstance(hard_state, HardState) and (
            hard_state.term > term or (hard_state.term == term and hard_state.vote == leader.node_id)
        ):
            continue
        held = (
            f"term {hard_state.term}, vote {hard_state.vote}"
            if isinstance(hard_state, HardState)
            else "no hard state"
        )
        raise InvariantViolation(
            f"votes are durable: {leader.node_id} leads term {term} with {voter}'s vote, but {voter}'s "
            f"stable storage holds {held}"
        )


def _stored_term(entries: tuple[LogEntry, ...], index: int) -> int | None:
    if not entries:
        return None
    position = index - entries[0].index
    if 0 <= position < len(entries) and entries[position].index == index:
        return entries[position].term
    for entry in entries:  # not contiguous: look it up the slow way
        if entry.index == index:
            return entry.term
    return None


def raft_invariants() -> tuple[Invariant, ...]:
    return (*generic_invariants(), RaftSafety())
