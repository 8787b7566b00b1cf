"""The `Storage` protocol: a node's stable storage, behind one atomic write per `Ready`.

A runtime needs three things from stable storage, and nothing else:

- `load()` on start: everything earlier writes made durable (`StoredState`);
- `save(batch)` once per `Ready` that must persist: ONE atomic write (`WriteBatch`) of the protocol's
  persist step together with the dedup high-water marks and input positions of the messages whose effects
  that write contains. Either all of it is durable or none of it is, so a crash can neither apply a
  redelivered message twice (marks saved with the state) nor lose one (positions never run ahead of the
  state);
- `bump_incarnation()` on start, before the first send: message ids `(node, incarnation, seq)` must never
  repeat across crashes, or peers would drop a restarted node's messages as duplicates.

The shape is chosen so the Redis storage is a drop-in: `save` is one `MULTI`/`EXEC` (or one Lua script) over
a hash for the hard state and marks, a sorted set or list for the entries and a key for the snapshot, and
`bump_incarnation` is one `INCR`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from dscore.core.ids import NodeId
from dscore.protocols.contract import DurableState, LogEntry, Ready, Snapshot

#: a per-sender dedup high-water mark: the largest (incarnation, seq) accepted from that sender
DedupMark = tuple[int, int]


def _no_marks() -> Mapping[NodeId, DedupMark]:
    return MappingProxyType({})


def _no_positions() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class StoredState:
    """Everything a node finds on restart.

    `input_positions` maps a transport channel (a Kafka topic-partition, a memory inbox) to the position of
    the last input whose effects are in this state; a transport resumes after it.
    """

    durable: DurableState = field(default_factory=DurableState)
    incarnation: int = 0
    dedup_marks: Mapping[NodeId, DedupMark] = field(default_factory=_no_marks)
    input_positions: Mapping[str, int] = field(default_factory=_no_positions)


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """One atomic write: step 1 of a `Ready` plus the dedup marks and input positions that changed.

    `hard_state`, `snapshot`, `log_replaced` and `entries` follow `Ready`'s rules exactly (see
    `apply_persist`).
    `dedup_marks` and `input_positions` hold only the keys that changed; they are merged into the stored
    ones (a mark or a position only grows).
    """

    hard_state: object | None = None
    snapshot: Snapshot | None = None
    log_replaced: bool = False
    entries: tuple[LogEntry, ...] = ()
    dedup_marks: Mapping[NodeId, DedupMark] = field(default_factory=_no_marks)
    input_positions: Mapping[str, int] = field(default_factory=_no_positions)

    @classmethod
    def from_ready(
        cls,
        ready: Ready,
        dedup_marks: Mapping[NodeId, DedupMark] | None = None,
        input_positions: Mapping[str, int] | None = None,
    ) -> WriteBatch:
        return cls(
            hard_state=ready.hard_state,
            snapshot=ready.snapshot,
            log_replaced=ready.log_replaced,
            entries=ready.entries,
            dedup_marks=MappingProxyType(dict(dedup_marks or {})),
            input_positions=MappingProxyType(dict(input_positions or {})),
        )

    def as_ready(self) -> Ready:
        """The persist step alone, for `apply_persist`."""
        return Ready(
            hard_state=self.hard_state,
            snapshot=self.snapshot,
            log_replaced=self.log_replaced,
            entries=self.entries,
        )

    def __bool__(self) -> bool:
        return bool(
            self.hard_state is not None
            or self.snapshot is not None
            or self.entries
            or self.dedup_marks
            or self.input_positions
        )


class Storage(Protocol):
    """A node's stable storage. Every method is a suspension point, so a network store fits."""

    async def load(self) -> StoredState:
        """Everything made durable so far; an empty `StoredState` for a node that never ran."""
        ...

    async def save(self, batch: WriteBatch) -> None:
        """Make `batch` durable in one atomic write; return only once it is durable."""
        ...

    async def bump_incarnation(self) -> int:
        """Durably increase the incarnation number and return the new value (1 on a first start)."""
        ...
