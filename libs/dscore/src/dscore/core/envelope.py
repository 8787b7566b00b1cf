"""The envelope every inter-node message travels in.

The seed (section 4.1) defines a message as the four-tuple (source, destination, content, timestamp).
Real delivery adds a message id, so that at-least-once transports can be deduplicated, and an
error-detection code over the encoded bytes (added by `dscore.core.codec`, not kept on the object).
"""

from __future__ import annotations

from dataclasses import dataclass

from dscore.core.ids import MsgId, NodeId
from dscore.core.registry import kind_of


@dataclass(frozen=True, slots=True)
class Timestamp:
    """A Lamport time, plus a vector time for protocols that track causality (causal store)."""

    lamport: int
    vector: tuple[tuple[NodeId, int], ...] | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    source: NodeId
    destination: NodeId
    #: a message registered with `dscore.core.registry.message`
    content: object
    timestamp: Timestamp
    msg_id: MsgId

    @property
    def kind(self) -> str:
        return kind_of(self.content)


class EnvelopeFactory:
    """Wraps a node's outgoing messages: assigns `msg_id`s and Lamport times, observes incoming ones.

    `incarnation` must be persisted and grow on every restart, so ids never repeat across crashes.
    """

    __slots__ = ("incarnation", "lamport", "node_id", "seq")

    def __init__(self, node_id: NodeId, incarnation: int, lamport: int = 0) -> None:
        self.node_id = node_id
        self.incarnation = incarnation
        self.seq = 0
        self.lamport = lamport

    def wrap(self, destination: NodeId, content: object) -> Envelope:
        self.seq += 1
        self.lamport += 1
        return Envelope(
            source=self.node_id,
            destination=destination,
            content=content,
            timestamp=Timestamp(self.lamport),
            msg_id=MsgId(self.node_id, self.incarnation, self.seq),
        )

    def observe(self, envelope: Envelope) -> None:
        """A receive event: Lamport time becomes max(local, remote) + 1."""
        self.lamport = max(self.lamport, envelope.timestamp.lamport) + 1
