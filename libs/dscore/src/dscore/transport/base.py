"""The `Transport` protocol: moves encoded envelopes between nodes' inboxes.

A transport moves bytes; it never sees an `Envelope`. The runtime encodes (and frames, with the CRC) every
outgoing envelope with `dscore.core.codec` and decodes every incoming one, so corrupt or hostile bytes are
rejected by the same code whatever the transport, and the in-memory transport exercises the codec and its
checksum exactly as Kafka will.

The shape follows Kafka, so the aiokafka transport is a drop-in:

- every node has one inbox (a Kafka topic-partition; a bounded queue in memory), named by a `channel`;
- `send(frames)` appends each frame to its destination's inbox (Kafka: one produce batch);
- `receive(max_batch)` waits for at least one delivery and returns up to `max_batch`, each carrying its
  `Delivery.channel` and `Delivery.offset` (Kafka: `getmany` on the inbox partition);
- `start(resume_after)` seeks each channel past the position the node's storage kept for it: those stored
  positions are the ONLY resume point, because they are saved in the same atomic write as the protocol
  state they produced (see `dscore.replica.executor`). A channel without a position is read from its
  beginning for a node (nothing of it is durable yet) or from its end for a client endpoint that keeps
  no storage (see `dscore.transport.kafka_config.StartWithoutPosition`);
- `commit(positions)` is a hint: positions already saved in the node's storage, handed over in batches
  (every `commit_every_ticks`), for lag monitoring and tooling (Kafka: the consumer group's committed
  offsets). A transport may batch it and let it lag; nothing is resumed from it.

Delivery is at-least-once on both transports: a crash redelivers everything after the stored positions,
and the dedup high-water marks (saved with the state) drop the repeats. The memory transport keeps a
retained log per inbox like a Kafka partition, so the embedded cluster runs the same resume path. Protocol
cores tolerate loss; duplication is removed before them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from dscore.core.envelope import Envelope
from dscore.core.ids import NodeId


@dataclass(frozen=True, slots=True)
class OutboundFrame:
    """An encoded, framed envelope for `destination`'s inbox (a transport sends `data` only; `envelope`,
    when the sender kept it, is what `data` encodes, for traces)."""

    destination: NodeId
    data: bytes
    envelope: Envelope | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """Raw bytes read from an inbox, and where they were read from (untrusted until decoded).
    `sent_at_ms`: when the sender's transport sent it, wall-clock milliseconds (Kafka: the record's
    timestamp), if the transport knows; the runtime observes the hop latency from it."""

    data: bytes
    channel: str
    offset: int
    sent_at_ms: int | None = None


class Transport(Protocol):
    """One node's endpoint. Not shared between nodes; not used after `close()`."""

    @property
    def node_id(self) -> NodeId: ...

    async def start(self, resume_after: Mapping[str, int]) -> Mapping[str, int]:
        """Begin consuming this node's inbox right after the given per-channel positions (the stored ones;
        a channel without one: see the module docstring). Positions of channels this endpoint does not
        read are ignored.

        Returns, per channel read, where the inbox ended at start (the next offset): a delivery below it
        is replayed (an earlier incarnation of this node may have read it before its storage recorded
        so), one at or above it is new (`Executor.replay_ends`)."""
        ...

    async def send(self, frames: Sequence[OutboundFrame]) -> None:
        """Hand frames to the network, in order per destination. Delivery is not confirmed: a lost frame
        is a message loss, which protocols tolerate. Returns within a bound whatever the network does, and
        raises only for misuse (a closed transport), never for a frame that could not be sent."""
        ...

    async def receive(self, max_batch: int) -> list[Delivery]:
        """Wait until at least one delivery is available; return between 1 and `max_batch` of them."""
        ...

    async def commit(self, positions: Mapping[str, int]) -> None:
        """A hint: these positions are saved in the node's storage (the effects of every delivery up to
        them are durable). Nothing resumes from it; it may be batched and lag."""
        ...

    async def close(self) -> None: ...
