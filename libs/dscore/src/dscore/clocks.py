"""Lamport and vector clocks (the seed, section 4.2).

- Lamport: LC(e) = max(LC of e's causal predecessors) + 1, so e -> f implies LC(e) < LC(f)
  (not the converse).
- Vector: VC(e)[i] counts the events of node i that happened before or at e, so e -> f iff VC(e) < VC(f)
  (the seed's Theorem 4.2): vector order *is* happened-before, and incomparable vectors mean concurrent.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dscore.core.ids import NodeId


class LamportClock:
    """A node's Lamport clock. `tick()` for a local or send event, `observe(t)` on receive."""

    __slots__ = ("time",)

    def __init__(self, time: int = 0) -> None:
        self.time = time

    def tick(self) -> int:
        self.time += 1
        return self.time

    def observe(self, remote_time: int) -> int:
        """A receive event: max(local, remote) + 1."""
        self.time = max(self.time, remote_time) + 1
        return self.time


class Order(enum.Enum):
    BEFORE = "before"
    AFTER = "after"
    EQUAL = "equal"
    CONCURRENT = "concurrent"


@dataclass(frozen=True, slots=True)
class VectorClock:
    """An immutable vector timestamp; missing entries are zero. Compact form: sorted (node, count) pairs
    with zeros left out, so equal clocks have equal encodings."""

    entries: tuple[tuple[NodeId, int], ...] = ()

    @staticmethod
    def from_mapping(counts: Mapping[NodeId, int]) -> VectorClock:
        return VectorClock(tuple(sorted((n, c) for n, c in counts.items() if c)))

    def as_dict(self) -> dict[NodeId, int]:
        return dict(self.entries)

    def get(self, node: NodeId) -> int:
        for n, c in self.entries:
            if n == node:
                return c
        return 0

    def increment(self, node: NodeId) -> VectorClock:
        counts = self.as_dict()
        counts[node] = counts.get(node, 0) + 1
        return VectorClock.from_mapping(counts)

    def merge(self, other: VectorClock) -> VectorClock:
        counts = self.as_dict()
        for n, c in other.entries:
            if c > counts.get(n, 0):
                counts[n] = c
        return VectorClock.from_mapping(counts)

    def compare(self, other: VectorClock) -> Order:
        mine, theirs = self.as_dict(), other.as_dict()
        less = greater = False
        for node in mine.keys() | theirs.keys():
            a, b = mine.get(node, 0), theirs.get(node, 0)
            if a < b:
                less = True
            elif a > b:
                greater = True
            if less and greater:
                return Order.CONCURRENT
        if less:
            return Order.BEFORE
        if greater:
            return Order.AFTER
        return Order.EQUAL

    def happened_before(self, other: VectorClock) -> bool:
        return self.compare(other) is Order.BEFORE

    def concurrent_with(self, other: VectorClock) -> bool:
        return self.compare(other) is Order.CONCURRENT

    def __le__(self, other: VectorClock) -> bool:
        return self.compare(other) in (Order.BEFORE, Order.EQUAL)

    def __lt__(self, other: VectorClock) -> bool:
        return self.compare(other) is Order.BEFORE


def merge_all(clocks: Iterable[VectorClock]) -> VectorClock:
    out = VectorClock()
    for clock in clocks:
        out = out.merge(clock)
    return out
