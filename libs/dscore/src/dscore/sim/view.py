"""What invariants see of a run: a read-only view of the cluster, and how they report a violation.

An invariant is any callable `(view) -> None` that raises `InvariantViolation` with a message; the run
stops and fails with the seed in its message. Invariants may keep state between calls (for example every
entry seen so far), so adapters hand out fresh ones per run (`ProtocolAdapter.make_invariants`).

Invariants depend on this view only, never on the simulator: `ClusterView.nodes` maps each node id to a
`NodeView` (its durable image, its live core or None while it is down, its state machine), and
`new_applies` lists the entries state machines applied since the previous check.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from dscore.core.errors import DscoreError
from dscore.core.ids import NodeId
from dscore.protocols.contract import DurableState, LogEntry, ProtocolCore
from dscore.statemachine.kv import KvStateMachine


class InvariantViolation(DscoreError):
    """A safety property does not hold. The simulator adds the seed and the virtual time."""


@dataclass(frozen=True, slots=True)
class AppliedEntry:
    """One committed entry handed to a node's state machine (recorded by the host)."""

    node: NodeId
    incarnation: int
    entry: LogEntry


class NodeView(Protocol):
    @property
    def node_id(self) -> NodeId: ...

    @property
    def incarnation(self) -> int: ...

    @property
    def durable(self) -> DurableState:
        """What the node's stable storage holds (the only thing a crash keeps)."""
        ...

    @property
    def core(self) -> ProtocolCore | None:
        """The live protocol core; None while the node is down."""
        ...

    @property
    def state_machine(self) -> KvStateMachine: ...


class ClusterView(Protocol):
    @property
    def now_us(self) -> int: ...

    @property
    def nodes(self) -> Mapping[NodeId, NodeView]: ...

    @property
    def new_applies(self) -> Sequence[AppliedEntry]:
        """Entries applied by any node since the previous invariant check, in order."""
        ...

    @property
    def changed(self) -> NodeId | None:
        """The node the last event was handed to (a delivery, a tick): its core, durable image and state
        machine are the only ones that may have changed since the previous check. None after any other
        event (a crash, a restart, a resume, the end of faults): any node may have changed. Invariants
        may use it to check only what involves that node; ignoring it is always correct."""
        ...


Invariant = Callable[[ClusterView], None]
