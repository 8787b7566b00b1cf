"""Identifiers: node ids and message ids.

A message id is `(sender, incarnation, seq)`: `incarnation` grows every time a node restarts (it is
persisted), and `seq` grows with every message the incarnation sends, so a receiver can drop duplicates
with one high-water mark per (sender, incarnation).
"""

from __future__ import annotations

from dataclasses import dataclass

NodeId = str


@dataclass(frozen=True, slots=True, order=True)
class MsgId:
    sender: NodeId
    incarnation: int
    seq: int

    def __str__(self) -> str:
        return f"{self.sender}/{self.incarnation}/{self.seq}"
