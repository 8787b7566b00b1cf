"""The in-memory transport: one process, one retained log per inbox, faults on demand.

`MemoryNetwork` is a hub shaped like a Kafka cluster with one single-partition topic per endpoint. Each
endpoint (a node, or a client) has an inbox: a bounded log of frames with offsets that keep growing, and
each `MemoryTransport` reads it from a cursor. Frames travel as the encoded, authenticated bytes the
sender produced, so the codec runs exactly as it does over Kafka (and `inject` can put arbitrary bytes in
an inbox to test rejection).

Delivery is at-least-once, as on Kafka. A frame appended to an inbox stays there (up to the retention
bound) whether or not its reader is up: a node that crashes and restarts seeks past the positions its
storage kept (`start(resume_after)`) and is handed again everything after them, including what was sent
while it was down. So the embedded cluster runs the same resume path, redeliveries and duplicate
suppression as the Kafka deployment. `commit(positions)` only records the hint (`committed`).

A frame is dropped, and counted by reason, when

- source and destination are on different sides of a partition, or either is isolated (`partitioned`);
- the destination is not attached to the network (`unknown_node`);
- a link fault drops it (`link_drop`, see below).

Retention: an inbox keeps the newest `inbox_max_messages` frames at least and twice as many at most
(old frames are dropped in bulk, counted in `dropped["retention"]`, so an append stays O(1)). A reader
whose cursor fell behind the oldest kept frame skips to it and counts the frames it never saw in
`lost_to_retention`: the protocols see a message loss, which they tolerate.

Clients (`add_client`) are endpoints too, for replies. Partitions and isolation cut nodes from nodes; a
client reaches every node, as a client of the embedded cluster always could (the simulator has its own
client partitions).

Link faults (optional, off by default): `set_link_faults(LinkFaults(...), rng)` makes every link between
two nodes lossy, duplicating and reordering, drawn from a `random.Random` the caller injects (so a seed
drives them):

- a frame is dropped with `drop_probability` (`link_drop`);
- it is delivered twice with `duplicate_probability` (counted in `duplicated`): the receiver's dedup
  marks must throw the second copy away;
- each copy is held back with `delay_probability` for a time uniform in (0, `max_delay_s`] (counted in
  `delayed`), on the event loop's clock (`call_later`; the sender never waits), so it lands after frames
  sent later: reordering. A held-back frame meets the network as it is when it lands (a partition in
  between drops it then); `in_flight` counts those not landed yet.

Membership: `add_node` attaches a new endpoint to a running network (a new host on the wire). There is no
removal: a node that leaves the cluster keeps its inbox and offsets, so a node id always names the same
channel. Which senders a node listens to is the node's business, not the network's.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from dscore.core.errors import ConfigError, LocalError
from dscore.core.ids import NodeId
from dscore.transport.base import Delivery, OutboundFrame

DEFAULT_INBOX_MAX_MESSAGES = 10_000


def inbox_channel(endpoint: str) -> str:
    return f"inbox/{endpoint}"


@dataclass(frozen=True, slots=True)
class LinkFaults:
    """Seeded misbehaviour of every link between two nodes of a `MemoryNetwork` (see the module
    docstring)."""

    #: chance that a frame is lost
    drop_probability: float = 0.0
    #: chance that a frame (not lost) is delivered twice
    duplicate_probability: float = 0.0
    #: chance that each copy is held back, for a time uniform in (0, max_delay_s]
    delay_probability: float = 0.0
    max_delay_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("drop_probability", "duplicate_probability", "delay_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value!r}")
        if not (math.isfinite(self.max_delay_s) and self.max_delay_s >= 0):
            raise ConfigError(f"max_delay_s must be a finite number >= 0, got {self.max_delay_s!r}")
        if self.delay_probability > 0 and self.max_delay_s <= 0:
            raise ConfigError("delay_probability > 0 needs max_delay_s > 0")

    @property
    def active(self) -> bool:
        return self.drop_probability > 0 or self.duplicate_probability > 0 or self.delay_probability > 0


class _Inbox:
    """One endpoint's retained log: frames with offsets `base .. next_offset - 1`."""

    __slots__ = ("base", "channel", "frames", "next_offset", "waiter")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.frames: list[Delivery] = []
        self.base = 0
        self.next_offset = 0
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)


class MemoryNetwork:
    """The hub every `MemoryTransport` of one embedded cluster is attached to."""

    def __init__(
        self,
        nodes: Iterable[NodeId],
        inbox_max_messages: int = DEFAULT_INBOX_MAX_MESSAGES,
        *,
        link_faults: LinkFaults | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if inbox_max_messages < 1:
            raise ConfigError("inbox_max_messages must be at least 1")
        self.nodes: tuple[NodeId, ...] = tuple(nodes)
        if len(set(self.nodes)) != len(self.nodes):
            raise ConfigError(f"duplicate node ids in {self.nodes}")
        self.inbox_max_messages = inbox_max_messages
        self._inboxes: dict[str, _Inbox] = {n: _Inbox(inbox_channel(n)) for n in self.nodes}
        self._clients: set[str] = set()
        self._isolated: set[NodeId] = set()
        #: partition group number per node; empty when the network is whole
        self._group_of: dict[NodeId, int] = {}
        #: frames dropped, by reason (partitioned, unknown_node, link_drop, retention)
        self.dropped: dict[str, int] = {}
        #: frames appended to an inbox
        self.delivered = 0
        self._link_faults: LinkFaults | None = None
        self._rng: random.Random | None = None
        #: frames delivered a second time by a link fault
        self.duplicated = 0
        #: frame copies held back by a link fault
        self.delayed = 0
        self._in_flight: dict[int, asyncio.TimerHandle] = {}
        self._next_token = 0
        self.set_link_faults(link_faults, rng)

    # -- endpoints ----------------------------------------------------------------------------------

    def add_node(self, node_id: NodeId) -> None:
        """Attach a new node (with an empty inbox) to the running network. While a partition is in force
        the new node is cut off alone, like a node named in no group, until `heal`."""
        if node_id in self._inboxes:
            raise LocalError(f"{node_id!r} is already attached to this network")
        self.nodes = (*self.nodes, node_id)
        self._inboxes[node_id] = _Inbox(inbox_channel(node_id))
        if self._group_of:
            self._group_of[node_id] = max(self._group_of.values()) + 1

    def add_client(self, endpoint: str) -> MemoryTransport:
        """Attach a client endpoint (its inbox receives replies) and return its transport, which reads
        from the end of its inbox."""
        if endpoint in self._inboxes:
            raise LocalError(f"{endpoint!r} is already attached to this network")
        inbox = _Inbox(inbox_channel(endpoint))
        self._inboxes[endpoint] = inbox
        self._clients.add(endpoint)
        return MemoryTransport(self, endpoint)

    def endpoint(self, node_id: NodeId) -> MemoryTransport:
        if node_id not in self._inboxes:
            raise LocalError(f"{node_id!r} is not attached to this network ({', '.join(self.nodes)})")
        return MemoryTransport(self, node_id)

    # -- faults -------------------------------------------------------------------------------------

    def partition(self, groups: Iterable[Iterable[NodeId]]) -> None:
        """Split the network: nodes talk only within their group. A node in no group is cut off alone."""
        group_of: dict[NodeId, int] = {}
        for number, group in enumerate(groups):
            for node in group:
                if node not in self._inboxes or node in self._clients:
                    raise LocalError(f"cannot partition unknown node {node!r}")
                if node in group_of:
                    raise LocalError(f"node {node!r} is in two partition groups")
                group_of[node] = number
        next_group = len(group_of) + 1_000_000
        for node in self.nodes:
            if node not in group_of:
                group_of[node] = next_group
                next_group += 1
        self._group_of = group_of

    def isolate(self, node_id: NodeId) -> None:
        """Cut one node off from every other node (on top of any partition)."""
        if node_id not in self._inboxes or node_id in self._clients:
            raise LocalError(f"cannot isolate unknown node {node_id!r}")
        self._isolated.add(node_id)

    def heal(self) -> None:
        """Undo every partition and isolation."""
        self._group_of = {}
        self._isolated.clear()

    def set_link_faults(self, faults: LinkFaults | None, rng: random.Random | None = None) -> None:
        """Turn link faults on (with `faults`, drawing from `rng`) or off (None, or nothing active).

        `rng` is kept across calls, so faults can be switched off and on again on one random stream;
        turning them on needs one. Frames already held back still land when off."""
        if rng is not None:
            self._rng = rng
        if faults is None or not faults.active:
            self._link_faults = None
            return
        if self._rng is None:
            raise ConfigError("link faults draw from a random.Random: pass rng")
        self._link_faults = faults

    @property
    def link_faults(self) -> LinkFaults | None:
        return self._link_faults

    @property
    def in_flight(self) -> int:
        """Frame copies held back by a link fault that have not landed yet."""
        return len(self._in_flight)

    def can_reach(self, source: str, destination: str) -> bool:
        if source == destination or source in self._clients or destination in self._clients:
            return True
        if source in self._isolated or destination in self._isolated:
            return False
        group_of = self._group_of
        return not group_of or group_of.get(source) == group_of.get(destination)

    # -- delivery -----------------------------------------------------------------------------------

    def deliver(self, source: str, destination: str, data: bytes) -> bool:
        """Append one frame to `destination`'s inbox if the network allows; count it as dropped otherwise.

        With link faults on, True means at least one copy was delivered or is held back to land later."""
        faults = self._link_faults
        if faults is not None and source not in self._clients and destination not in self._clients:
            return self._deliver_faulty(faults, source, destination, data)
        return self._land(source, destination, data)

    def _deliver_faulty(self, faults: LinkFaults, source: str, destination: str, data: bytes) -> bool:
        if destination not in self._inboxes or not self.can_reach(source, destination):
            return self._land(source, destination, data)  # refused now: counted by reason, nothing drawn
        rng = self._rng
        assert rng is not None
        if faults.drop_probability and rng.random() < faults.drop_probability:
            self._drop("link_drop")
            return False
        copies = 1
        if faults.duplicate_probability and rng.random() < faults.duplicate_probability:
            copies = 2
            self.duplicated += 1
        accepted = False
        for _ in range(copies):
            if faults.delay_probability and rng.random() < faults.delay_probability:
                self.delayed += 1
                token = self._next_token
                self._next_token = token + 1
                delay_s = faults.max_delay_s * (1.0 - rng.random())  # (0, max_delay_s]
                loop = asyncio.get_running_loop()
                self._in_flight[token] = loop.call_later(
                    delay_s, self._land_late, token, source, destination, data
                )
                accepted = True
            elif self._land(source, destination, data):
                accepted = True
        return accepted

    def _land_late(self, token: int, source: str, destination: str, data: bytes) -> None:
        del self._in_flight[token]
        self._land(source, destination, data)

    def _land(self, source: str, destination: str, data: bytes) -> bool:
        inbox = self._inboxes.get(destination)
        if inbox is None:
            self._drop("unknown_node")
            return False
        if not self.can_reach(source, destination):
            self._drop("partitioned")
            return False
        self._append(inbox, data)
        self.delivered += 1
        return True

    def _append(self, inbox: _Inbox, data: bytes) -> None:
        frames = inbox.frames
        if len(frames) >= 2 * self.inbox_max_messages:
            excess = len(frames) - self.inbox_max_messages
            del frames[:excess]
            inbox.base += excess
            self.dropped["retention"] = self.dropped.get("retention", 0) + excess
        offset = inbox.next_offset
        inbox.next_offset = offset + 1
        frames.append(Delivery(data, inbox.channel, offset))
        if inbox.waiter is not None:
            inbox.wake()

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def inject(self, destination: str, data: bytes) -> bool:
        """Append raw bytes straight to an inbox, bypassing partitions: a corrupt or forged frame."""
        inbox = self._inboxes.get(destination)
        if inbox is None:
            return False
        self._append(inbox, data)
        return True

    def _inbox(self, endpoint: str) -> _Inbox:
        return self._inboxes[endpoint]

    def end_offset(self, endpoint: str) -> int:
        """The offset the next frame appended to `endpoint`'s inbox will get."""
        return self._inboxes[endpoint].next_offset

    def retained(self, endpoint: str) -> list[Delivery]:
        """What `endpoint`'s inbox holds now (tests)."""
        return list(self._inboxes[endpoint].frames)


class MemoryTransport:
    """One endpoint of a `MemoryNetwork` (the `Transport` protocol)."""

    __slots__ = ("_closed", "_cursor", "_inbox", "_network", "committed", "lost_to_retention", "node_id")

    def __init__(self, network: MemoryNetwork, node_id: str) -> None:
        self._network = network
        self.node_id = node_id
        self._inbox = network._inbox(node_id)
        self._closed = False
        # Nodes read from the start of what is retained unless told where to resume; clients from the end.
        self._cursor = self._inbox.base if node_id not in network._clients else self._inbox.next_offset
        #: the last committed position per channel (a hint: the node's storage holds the real ones)
        self.committed: dict[str, int] = {}
        #: frames this reader never saw because retention dropped them first
        self.lost_to_retention = 0

    @property
    def channel(self) -> str:
        return self._inbox.channel

    async def start(self, resume_after: Mapping[str, int]) -> Mapping[str, int]:
        """Seek past the stored position of this endpoint's inbox (from the oldest retained frame when
        none is stored)."""
        inbox = self._inbox
        position = resume_after.get(inbox.channel)
        if position is not None:
            self._cursor = position + 1
        return {inbox.channel: inbox.next_offset}

    async def send(self, frames: Sequence[OutboundFrame]) -> None:
        if self._closed:
            raise LocalError(f"transport of {self.node_id} is closed")
        deliver = self._network.deliver
        source = self.node_id
        for frame in frames:
            deliver(source, frame.destination, frame.data)

    async def receive(self, max_batch: int) -> list[Delivery]:
        inbox = self._inbox
        while True:
            if self._closed:
                raise LocalError(f"transport of {self.node_id} is closed")
            cursor = self._cursor
            if cursor < inbox.base:
                self.lost_to_retention += inbox.base - cursor
                cursor = inbox.base
            available = inbox.next_offset - cursor
            if available > 0:
                frames = inbox.frames
                start = cursor - inbox.base
                count = min(available, max_batch)
                batch = frames[start : start + count]
                self._cursor = cursor + count
                return batch
            waiter = inbox.waiter
            if waiter is None or waiter.done():
                waiter = asyncio.get_running_loop().create_future()
                inbox.waiter = waiter
            await waiter

    async def commit(self, positions: Mapping[str, int]) -> None:
        self.committed.update(positions)

    async def close(self) -> None:
        self._closed = True
        self._inbox.wake()
