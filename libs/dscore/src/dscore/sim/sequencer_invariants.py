"""The sequencer protocol's own invariants, checked by the simulator after every event.

- `DurablePrefixAgreement`: every node's durable log is a gap-free prefix of one common log, and never
  shrinks. Stronger than state-machine safety: it also covers entries persisted but not yet applied, so
  a sequencer that re-uses an index after a crash is caught when the replica stores it, not later.
"""

from __future__ import annotations

from dscore.core.ids import NodeId
from dscore.sim.invariants import describe_data, generic_invariants
from dscore.sim.view import ClusterView, Invariant, InvariantViolation


class DurablePrefixAgreement:
    __slots__ = ("_checked", "_log")

    def __init__(self) -> None:
        self._log: list[bytes] = []  # the common log: data of the entry at index k + 1
        self._checked: dict[NodeId, int] = {}  # how many of each node's durable entries were checked

    def __call__(self, view: ClusterView) -> None:
        log = self._log
        for node_id, node in view.nodes.items():
            entries = node.durable.entries
            checked = self._checked.get(node_id, 0)
            if len(entries) == checked:
                continue
            if len(entries) < checked:
                raise InvariantViolation(
                    f"{node_id}'s durable log shrank from {checked} to {len(entries)} entries"
                )
            for position in range(checked, len(entries)):
                entry = entries[position]
                if entry.index != position + 1:
                    raise InvariantViolation(
                        f"{node_id} persisted entry {entry.index} at position {position + 1}"
                    )
                if position < len(log):
                    if log[position] != entry.data:
                        raise InvariantViolation(
                            f"{node_id} persisted {describe_data(entry.data)} at index {entry.index}, where "
                            f"another node persisted {describe_data(log[position])}"
                        )
                else:
                    log.append(entry.data)
            self._checked[node_id] = len(entries)


def sequencer_invariants() -> tuple[Invariant, ...]:
    return (*generic_invariants(), DurablePrefixAgreement())
