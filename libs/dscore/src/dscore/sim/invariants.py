"""Safety invariants any log protocol gets, checked by the simulator after every event.

- `StateMachineSafety`: no two nodes ever apply different entries at the same index (including a node
  re-applying its log after a restart);
- the host also refuses (as `InvariantViolation`) to apply an entry out of order, twice, or before it is
  durable on that node (see `dscore.sim.host`), since each of those breaks the `Ready` contract.
"""

from __future__ import annotations

from dscore.core.errors import DecodeError
from dscore.core.ids import NodeId
from dscore.protocols.contract import LogEntry
from dscore.sim.view import ClusterView, Invariant, InvariantViolation
from dscore.statemachine.kv import decode_batch


class StateMachineSafety:
    """No two nodes apply different entries at the same index (the seed's consensus agreement, 2.4,
    in its replicated-log form). Checks only the entries applied since the previous call."""

    __slots__ = ("_first",)

    def __init__(self) -> None:
        # index -> (term, kind, data, node) of the first application seen at that index
        self._first: dict[int, tuple[int, int, bytes, NodeId]] = {}

    def __call__(self, view: ClusterView) -> None:
        applies = view.new_applies
        if not applies:
            return
        first = self._first
        # Byzantine nodes (`dscore.sim.byzantine`) are not held to it: the property is about correct ones.
        byzantine: frozenset[NodeId] = getattr(view, "byzantine", frozenset())
        for applied in applies:
            if applied.node in byzantine:
                continue
            entry = applied.entry
            seen = first.get(entry.index)
            if seen is None:
                first[entry.index] = (entry.term, int(entry.kind), entry.data, applied.node)
            elif seen[:3] != (entry.term, int(entry.kind), entry.data):
                raise InvariantViolation(
                    f"state-machine safety: {applied.node} applied {_describe(entry)} at index "
                    f"{entry.index}, but {seen[3]} applied term {seen[0]} kind {seen[1]} "
                    f"{describe_data(seen[2])} there"
                )


def _describe(entry: LogEntry) -> str:
    return f"term {entry.term} kind {int(entry.kind)} {describe_data(entry.data)}"


def describe_data(data: bytes) -> str:
    """A log entry's payload for humans: the kv commands if it holds some, else the first bytes."""
    try:
        commands = decode_batch(data)
    except DecodeError:
        return f"data {data[:40]!r}"
    shown = ", ".join(f"{c.client_id}#{c.seq} {c.op}" for c in commands[:3])
    more = f" (+{len(commands) - 3} more)" if len(commands) > 3 else ""
    return f"commands [{shown}{more}]"


def generic_invariants() -> tuple[Invariant, ...]:
    """Fresh instances of the invariants every protocol with a log gets."""
    return (StateMachineSafety(),)
