"""Duplicate suppression for at-least-once delivery.

Each sender numbers its messages `(incarnation, seq)` in send order. A receiver keeps one high-water mark
per sender and accepts a message only if its id is above the mark. Over an ordered channel (a Kafka
partition, the in-memory transport) this drops exactly the redeliveries; over a reordering network it may
also drop a late message, which protocols already tolerate as loss. The marks are persisted in the same
atomic write as the protocol state, so a crash cannot make a node apply a message twice.
"""

from __future__ import annotations

from dscore.core.ids import MsgId, NodeId


class DedupFilter:
    __slots__ = ("marks",)

    def __init__(self, marks: dict[NodeId, tuple[int, int]] | None = None) -> None:
        self.marks: dict[NodeId, tuple[int, int]] = dict(marks or {})

    def accept(self, msg_id: MsgId) -> bool:
        """True (and raise the mark) if `msg_id` was not seen; False for a duplicate or stale id."""
        key = (msg_id.incarnation, msg_id.seq)
        mark = self.marks.get(msg_id.sender)
        if mark is not None and key <= mark:
            return False
        self.marks[msg_id.sender] = key
        return True
