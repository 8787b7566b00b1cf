"""The envelope every inter-node message travels in.

The seed (section 4.1) defines a message as the four-tuple (source, destination, content, timestamp).
Real delivery adds a message id, so that at-least-once transports can be deduplicated, the sender's
cluster-settings fingerprint (`dscore.core.cluster`), so a node can tell that a peer runs with other
cluster-wide settings, and an error-detection code or MAC over the encoded bytes (added by
`dscore.core.codec`, not kept on the object).
"""

from __future__ import annotations

from dataclasses import dataclass

from dscore.core.errors import ConfigError
from dscore.core.ids import MsgId, NodeId
from dscore.core.registry import kind_of

#: fingerprints are unsigned 64-bit integers on the wire
FINGERPRINT_LIMIT = 1 << 64


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
    #: the sender's cluster-settings fingerprint (u64, `dscore.core.cluster.fingerprint_of`); 0 means
    #: none (clients send 0)
    fingerprint: int = 0

    @property
    def kind(self) -> str:
        return kind_of(self.content)


class EnvelopeFactory:
    """Wraps a node's outgoing messages: assigns `msg_id`s and Lamport times, observes incoming ones.

    `incarnation` must be persisted and grow on every restart, so ids never repeat across crashes.
    `fingerprint` is stamped on every envelope (a node passes its cluster settings' fingerprint; clients
    leave it 0).
    """

    __slots__ = ("fingerprint", "incarnation", "lamport", "node_id", "seq")

    def __init__(self, node_id: NodeId, incarnation: int, lamport: int = 0, fingerprint: int = 0) -> None:
        if type(fingerprint) is not int or not 0 <= fingerprint < FINGERPRINT_LIMIT:
            raise ConfigError(f"fingerprint must be an unsigned 64-bit integer, got {fingerprint!r}")
        self.node_id = node_id
        self.incarnation = incarnation
        self.seq = 0
        self.lamport = lamport
        self.fingerprint = fingerprint

    def wrap(self, destination: NodeId, content: object) -> Envelope:
        self.seq += 1
        self.lamport += 1
        return Envelope(
            source=self.node_id,
            destination=destination,
            content=content,
            timestamp=Timestamp(self.lamport),
            msg_id=MsgId(self.node_id, self.incarnation, self.seq),
            fingerprint=self.fingerprint,
        )

    def observe(self, envelope: Envelope) -> None:
        """A receive event: Lamport time becomes max(local, remote) + 1."""
        self.lamport = max(self.lamport, envelope.timestamp.lamport) + 1
