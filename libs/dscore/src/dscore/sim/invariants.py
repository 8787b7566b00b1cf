"""Safety invariants the simulator checks after every delivery, tick and restart.

An invariant is any callable `(sim) -> None` that raises `InvariantViolation` with a message; the run
stops and fails with the seed in its message. Invariants may keep state between calls (for example
every entry seen so far), so adapters hand out fresh ones per run (`ProtocolAdapter.make_invariants`).

Generic, for any log protocol hosted by the simulator:

- `StateMachineSafety`: no two nodes ever apply different entries at the same index (including a node
  re-applying its log after a restart);
- the host itself also refuses to apply an entry out of order, twice, or before it is durable on that
  node (see `dscore.sim.host`), since each of those breaks the `Ready` contract.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dscore.core.errors import DecodeError, DscoreError
from dscore.core.ids import NodeId
from dscore.protocols.contract import LogEntry
from dscore.statemachine.kv import decode_command

if TYPE_CHECKING:
    from dscore.sim.simulator import Simulation


class InvariantViolation(DscoreError):
    """A safety property does not hold. The simulator adds the seed and the virtual time."""


Invariant = Callable[["Simulation"], None]


@dataclass(frozen=True, slots=True)
class AppliedEntry:
    """One committed entry handed to a node's state machine (recorded by the host)."""

    node: NodeId
    incarnation: int
    entry: LogEntry


class StateMachineSafety:
    """No two nodes apply different entries at the same index (the seed's consensus agreement, 2.4,
    in its replicated-log form). Checks only the entries applied since the previous call."""

    __slots__ = ("_first",)

    def __init__(self) -> None:
        # index -> (term, kind, data, node) of the first application seen at that index
        self._first: dict[int, tuple[int, int, bytes, NodeId]] = {}

    def __call__(self, sim: Simulation) -> None:
        first = self._first
        for applied in sim.new_applies:
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
    """A log entry's payload for humans: the kv command if it is one, else the first bytes."""
    try:
        command = decode_command(data)
    except DecodeError:
        return f"data {data[:40]!r}"
    return f"command {command.client_id}#{command.seq} {command.op}"


def generic_invariants() -> tuple[Invariant, ...]:
    """Fresh instances of the invariants every protocol with a log gets."""
    return (StateMachineSafety(),)
