"""The consume gate the node process puts around its transport, for `/admin/consume/stop|start`.

The runtime sees a plain `Transport`; `ConsumeGate` only holds back inbound deliveries while consumption
is stopped. It never changes what is saved, sent or received, and it forwards the inner transport's
statistics (`stats`), which the metrics read (`dscore.metrics.NodeCollector` via the runtime).

Stopping consumption is how a test cuts a node off from its peers without touching Kafka or the process:
the reader task waits at the gate, nothing is read or acknowledged, the stored positions stay where they
are, and everything queued in the inbox is delivered when consumption resumes (a one-way partition: the
node still sends, so its peers still hear it). Deliveries already fetched when the gate closes are held,
never dropped. Two-way partitions, omissions and delays between named nodes are the chaos injector's
transport faults (`dscore.transport.faults.FaultyTransport`, inside this gate).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from dscore.core.ids import NodeId
from dscore.transport.base import Delivery, OutboundFrame, Transport


class ConsumeGate:
    """A `Transport` that can stop consuming its inbox (see the module docstring)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self._consuming = asyncio.Event()
        self._consuming.set()

    @property
    def node_id(self) -> NodeId:
        return self.inner.node_id

    @property
    def stats(self) -> object:
        """The inner transport's statistics (what the runtime's metrics read), if it has any."""
        return getattr(self.inner, "stats", None)

    @property
    def consuming(self) -> bool:
        return self._consuming.is_set()

    def stop_consuming(self) -> None:
        self._consuming.clear()

    def resume_consuming(self) -> None:
        self._consuming.set()

    async def start(self, resume_after: Mapping[str, int]) -> Mapping[str, int]:
        return await self.inner.start(resume_after)

    async def send(self, frames: Sequence[OutboundFrame]) -> None:
        await self.inner.send(frames)

    async def receive(self, max_batch: int) -> list[Delivery]:
        await self._consuming.wait()
        batch = await self.inner.receive(max_batch)
        await self._consuming.wait()  # fetched just as consumption stopped: hold it, never drop it
        return batch

    async def commit(self, positions: Mapping[str, int]) -> None:
        await self.inner.commit(positions)

    async def close(self) -> None:
        await self.inner.close()
