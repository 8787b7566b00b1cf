"""Gossip's own invariant: a node's clocks only grow, across restarts too (they are persisted)."""

from __future__ import annotations

from dscore.clocks import Order, VectorClock
from dscore.core.ids import NodeId
from dscore.protocols.gossip import GossipCore
from dscore.sim.view import ClusterView, Invariant, InvariantViolation


class ClocksNeverGoBack:
    """Gossip's own invariant: a node's clocks only grow, across restarts too (they are persisted)."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[NodeId, tuple[VectorClock, int]] = {}

    def __call__(self, view: ClusterView) -> None:
        for node_id, node in view.nodes.items():
            core = node.core
            if not isinstance(core, GossipCore):
                continue
            previous = self._last.get(node_id)
            if previous is not None:
                if core.vector.compare(previous[0]) in (Order.BEFORE, Order.CONCURRENT):
                    raise InvariantViolation(
                        f"{node_id}'s vector clock went back: {previous[0]} -> {core.vector}"
                    )
                if core.lamport.time < previous[1]:
                    raise InvariantViolation(f"{node_id}'s Lamport clock went back")
            self._last[node_id] = (core.vector, core.lamport.time)


def gossip_invariants() -> tuple[Invariant, ...]:
    return (ClocksNeverGoBack(),)
