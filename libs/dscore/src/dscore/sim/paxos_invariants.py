"""Multi-Paxos's safety properties, checked by the simulator after every event.

- `OneValuePerSlot`: at most one value is chosen per slot (Lamport, "Paxos Made Simple", 2.1: "only a
  single value is chosen"). Chosen is judged from the acceptors' durable state alone, the way the paper
  defines it: a value is chosen at slot s once a majority of acceptors has persisted accepting it at one
  ballot (recorded over the whole run, so a majority that existed only briefly still counts). Each
  acceptor's claim that a slot is chosen (its chosen prefix and `CHOSEN` marks, what its learner applies)
  must agree with that, and with every other claim;
- `OneProposalPerBallot`: no two acceptors accepted different values in one slot at one ballot (a
  proposer proposes one value per slot per ballot, which the argument for P2c relies on);
- `PromiseNeverRegresses`: an acceptor's persisted promise never goes down, across crashes too;
- state-machine safety comes from `dscore.sim.invariants.StateMachineSafety`, and the linearizability of
  the clients' history is checked on every run by the simulator itself.
"""

from __future__ import annotations

from dscore.core.ids import NodeId
from dscore.protocols.contract import DurableState, LogEntry
from dscore.protocols.paxos import CHOSEN, NO_BALLOT, PaxosHardState
from dscore.sim.invariants import describe_data, generic_invariants
from dscore.sim.view import ClusterView, Invariant, InvariantViolation

_Value = tuple[int, int, bytes]  # (first ballot, kind, data)


def _value(entry: LogEntry) -> _Value:
    return (entry.term, int(entry.kind), entry.data)


def _describe(value: _Value) -> str:
    return f"ballot {value[0]} kind {value[1]} {describe_data(value[2])}"


class PaxosSafety:
    """`OneValuePerSlot`, `OneProposalPerBallot` and `PromiseNeverRegresses` in one pass (this runs after
    every simulated event, and looks only at durable images that changed since the previous call)."""

    __slots__ = ("_accepts", "_chosen", "_claims", "_majority", "_promised", "_seen")

    def __init__(self) -> None:
        #: (slot, ballot) -> (value, acceptors that persisted accepting it)
        self._accepts: dict[tuple[int, int], tuple[_Value, set[NodeId]]] = {}
        #: slot -> (value, ballot) chosen by a majority of acceptors
        self._chosen: dict[int, tuple[_Value, int]] = {}
        #: slot -> (value, node) first claimed chosen by some node
        self._claims: dict[int, tuple[_Value, NodeId]] = {}
        self._majority = 0
        self._promised: dict[NodeId, int] = {}
        self._seen: dict[NodeId, DurableState] = {}

    def __call__(self, view: ClusterView) -> None:
        nodes = view.nodes
        if not self._majority:
            self._majority = len(nodes) // 2 + 1
        for node_id, node in nodes.items():
            durable = node.durable
            if self._seen.get(node_id) is durable:
                continue
            old = self._seen.get(node_id)
            self._seen[node_id] = durable
            self._check_node(node_id, durable, old)
        for applied in view.new_applies:
            self._claim(applied.entry.index, _value(applied.entry), applied.node)

    def _check_node(self, node_id: NodeId, durable: DurableState, old: DurableState | None) -> None:
        hs = durable.hard_state
        if not isinstance(hs, PaxosHardState):
            return
        before = self._promised.get(node_id, NO_BALLOT)
        if hs.promised < before:
            raise InvariantViolation(
                f"paxos: {node_id}'s persisted promise went down from ballot {before} to {hs.promised}"
            )
        self._promised[node_id] = hs.promised
        entries = durable.entries
        if not entries:
            return
        first = entries[0].index
        old_hs = old.hard_state if old is not None else None
        old_chosen = old_hs.chosen if isinstance(old_hs, PaxosHardState) else 0
        # Newly claimed chosen prefix.
        for slot in range(max(old_chosen, first - 1) + 1, hs.chosen + 1):
            self._claim(slot, _value(entries[slot - first]), node_id)
        # Open slots: accepted (or known chosen) values with their ballots.
        slot = hs.chosen + 1
        for count, ballot in hs.accepted:
            for _ in range(count):
                if ballot != NO_BALLOT:
                    entry = entries[slot - first]
                    if ballot == CHOSEN:
                        self._claim(slot, _value(entry), node_id)
                    else:
                        self._accepted(slot, ballot, _value(entry), node_id)
                slot += 1

    def _accepted(self, slot: int, ballot: int, value: _Value, node_id: NodeId) -> None:
        key = (slot, ballot)
        record = self._accepts.get(key)
        if record is None:
            record = (value, set())
            self._accepts[key] = record
        elif record[0] != value:
            raise InvariantViolation(
                f"paxos: two proposals at slot {slot} ballot {ballot}: {node_id} accepted "
                f"{_describe(value)}, another acceptor {_describe(record[0])}"
            )
        acceptors = record[1]
        if node_id in acceptors:
            return
        acceptors.add(node_id)
        if len(acceptors) >= self._majority:
            chosen = self._chosen.get(slot)
            if chosen is None:
                self._chosen[slot] = (value, ballot)
                claim = self._claims.get(slot)
                if claim is not None and claim[0] != value:
                    self._two_values(slot, value, f"a majority at ballot {ballot}", claim)
            elif chosen[0] != value:
                raise InvariantViolation(
                    f"paxos: two values chosen at slot {slot}: {_describe(chosen[0])} by a majority at "
                    f"ballot {chosen[1]}, and {_describe(value)} by a majority at ballot {ballot}"
                )

    def _claim(self, slot: int, value: _Value, node_id: NodeId) -> None:
        chosen = self._chosen.get(slot)
        if chosen is not None and chosen[0] != value:
            self._two_values(slot, chosen[0], f"a majority at ballot {chosen[1]}", (value, node_id))
        claim = self._claims.setdefault(slot, (value, node_id))
        if claim[0] != value:
            raise InvariantViolation(
                f"paxos: two values taken as chosen at slot {slot}: {node_id} has {_describe(value)}, "
                f"{claim[1]} has {_describe(claim[0])}"
            )

    @staticmethod
    def _two_values(slot: int, value: _Value, how: str, claim: tuple[_Value, NodeId]) -> None:
        raise InvariantViolation(
            f"paxos: two values chosen at slot {slot}: {_describe(value)} by {how}, but {claim[1]} "
            f"takes {_describe(claim[0])} as chosen"
        )


def paxos_invariants() -> tuple[Invariant, ...]:
    return (*generic_invariants(), PaxosSafety())
