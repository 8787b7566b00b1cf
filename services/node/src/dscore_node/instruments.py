"""Wrappers the node process puts around its storage and transport, to measure and to fault them.

The runtime sees a plain `Storage` and `Transport`; these only observe (and, for the admin endpoint,
hold back inbound deliveries). They never change what is saved, sent or received.

- `TimedStorage`: the latency of every `save` (the persist step of a `Ready`), for the
  `dscore_persist_latency_seconds` histogram.
- `ObservedTransport`: messages sent by kind, records received, elections this node started (a Raft
  candidate sends one `RequestVote` round per term, so the distinct terms of its non-pre-vote requests
  count its campaigns exactly, retransmissions included once), and a gate that stops consuming the inbox.

Stopping consumption is how a test cuts a node off from its peers without touching Kafka or the
process: the reader task waits at the gate, nothing is read or acknowledged, the stored positions stay
where they are, and everything queued in the inbox is delivered when consumption resumes (a one-way
partition: the node still sends, so its peers still hear it). Deliveries already fetched when the gate
closes are held, never dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence

from dscore.core.ids import NodeId
from dscore.protocols.raft import VoteRequest
from dscore.storage.base import Storage, StoredState, WriteBatch
from dscore.transport.base import Delivery, OutboundFrame, Transport


class TimedStorage:
    """A `Storage` that reports how long each successful `save` took (seconds) to `observe`."""

    def __init__(self, inner: Storage, observe: Callable[[float], None]) -> None:
        self.inner = inner
        self._observe = observe

    async def load(self) -> StoredState:
        return await self.inner.load()

    async def save(self, batch: WriteBatch) -> None:
        started = time.perf_counter()
        await self.inner.save(batch)
        self._observe(time.perf_counter() - started)

    async def bump_incarnation(self) -> int:
        return await self.inner.bump_incarnation()


class ObservedTransport:
    """A `Transport` that counts what passes and can stop consuming (see the module docstring)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        #: frames handed to the transport, by message kind
        self.sent_by_kind: dict[str, int] = {}
        #: deliveries handed to the runtime
        self.received = 0
        #: elections this node started (distinct terms of its RequestVotes, pre-votes excluded)
        self.elections = 0
        self._last_campaign_term = 0
        self._consuming = asyncio.Event()
        self._consuming.set()

    @property
    def node_id(self) -> NodeId:
        return self.inner.node_id

    @property
    def consuming(self) -> bool:
        return self._consuming.is_set()

    def stop_consuming(self) -> None:
        self._consuming.clear()

    def resume_consuming(self) -> None:
        self._consuming.set()

    async def start(self, resume_after: Mapping[str, int]) -> None:
        await self.inner.start(resume_after)

    async def send(self, frames: Sequence[OutboundFrame]) -> None:
        counts = self.sent_by_kind
        for frame in frames:
            envelope = frame.envelope
            kind = envelope.kind if envelope is not None else "unknown"
            counts[kind] = counts.get(kind, 0) + 1
            if envelope is not None and type(envelope.content) is VoteRequest:
                request = envelope.content
                if not request.pre_vote and request.term > self._last_campaign_term:
                    self._last_campaign_term = request.term
                    self.elections += 1
        await self.inner.send(frames)

    async def receive(self, max_batch: int) -> list[Delivery]:
        await self._consuming.wait()
        batch = await self.inner.receive(max_batch)
        await self._consuming.wait()  # fetched just as consumption stopped: hold it, never drop it
        self.received += len(batch)
        return batch

    async def commit(self, positions: Mapping[str, int]) -> None:
        await self.inner.commit(positions)

    async def close(self) -> None:
        await self.inner.close()
