"""PBFT's safety property, checked after every event: no two correct replicas execute different requests at
one sequence number (Castro and Liskov, TOCS 2002, section 4.6: "safety").

Unlike `StateMachineSafety`, the view an entry carries is not compared: it is the view in which each replica
committed (or learned) it, which may differ between replicas for the same request. Byzantine nodes
(`ClusterView.byzantine` when the run has them) are not held to it.
"""

from __future__ import annotations

from dscore.core.ids import NodeId
from dscore.sim.invariants import describe_data
from dscore.sim.view import ClusterView, Invariant, InvariantViolation


class PbftAgreement:
    __slots__ = ("_first",)

    def __init__(self) -> None:
        # sequence number -> (kind, request, replica) of the first execution seen there
        self._first: dict[int, tuple[int, bytes, NodeId]] = {}

    def __call__(self, view: ClusterView) -> None:
        byzantine: frozenset[NodeId] = getattr(view, "byzantine", frozenset())
        first = self._first
        for applied in view.new_applies:
            if applied.node in byzantine:
                continue
            entry = applied.entry
            seen = first.get(entry.index)
            if seen is None:
                first[entry.index] = (int(entry.kind), entry.data, applied.node)
            elif seen[:2] != (int(entry.kind), entry.data):
                raise InvariantViolation(
                    f"PBFT agreement: {applied.node} executed kind {int(entry.kind)} "
                    f"{describe_data(entry.data)} at sequence number {entry.index}, but {seen[2]} executed "
                    f"kind {seen[0]} {describe_data(seen[1])} there"
                )


def pbft_invariants() -> tuple[Invariant, ...]:
    return (PbftAgreement(),)
