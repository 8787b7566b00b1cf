"""The in-memory transport: one process, one bounded inbox per node, faults on demand.

`MemoryNetwork` is a hub. Each node gets a `MemoryTransport` endpoint whose inbox is an `asyncio.Queue`
with a `maxsize`; frames travel as the encoded, checksummed bytes the runtime produced, so the codec runs
exactly as it will over Kafka (and `inject` can put arbitrary bytes in an inbox to test rejection).

Delivery is at-most-once per send: a frame is dropped, and counted by reason, when

- the destination inbox is full (`overflow`: the newest frame is dropped, so a slow node sheds load
  instead of growing without bound),
- source and destination are on different sides of a partition, or either is isolated (`partitioned`),
- the destination (or the source) is down, i.e. crashed and not yet restarted (`node_down`: a crashed
  process that has no Kafka log loses what was sent to it; its inbox is emptied on the crash),
- the destination is not a member of the network (`unknown_node`).

Link faults (optional, off by default): `set_link_faults(LinkFaults(...), rng)` makes every link lossy,
duplicating and reordering, drawn from a `random.Random` the caller injects (so a seed drives them):

- a frame is dropped with `drop_probability` (`link_drop`);
- it is delivered twice with `duplicate_probability` (counted in `duplicated`): the runtime's dedup marks
  must throw the second copy away;
- each copy is held back with `delay_probability` for a time uniform in (0, `max_delay_s`] (counted in
  `delayed`), on the event loop's clock (`call_later`; the sender never waits), so it lands after frames
  sent later: reordering. A held-back frame meets the network as it is when it lands (a partition or a
  crash in between drops it then, by the usual reasons); `in_flight` counts those not landed yet.

A frame the network refuses at send time (down, partitioned, ...) is dropped for that reason before any
draw. Off, the faults cost `deliver` one attribute check. With them on, delivery stays at-most-once per
copy, and a duplicated frame is the one case of a frame delivered twice.

Kafka will be at-least-once instead; the runtime handles both (see `dscore.transport.base`). Offsets are
per inbox and keep growing across a node's crashes, like a Kafka partition's.

Membership: `add_node` attaches a new endpoint to a running network (a new host on the wire). There is no
removal: a node that leaves the cluster is `disconnect`ed and stays so (like a decommissioned host, its
address still resolves but nothing reaches it); keeping its inbox and offsets means a node id always names
the same channel. Which senders a node listens to is the runtime's business, not the network's.
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


def inbox_channel(node_id: NodeId) -> str:
    return f"inbox/{node_id}"


@dataclass(frozen=True, slots=True)
class LinkFaults:
    """Seeded misbehaviour of every link of a `MemoryNetwork` (see the module docstring)."""

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
        self._inboxes: dict[NodeId, asyncio.Queue[Delivery]] = {
            n: asyncio.Queue(inbox_max_messages) for n in self.nodes
        }
        self._next_offset: dict[NodeId, int] = dict.fromkeys(self.nodes, 0)
        self._down: set[NodeId] = set()
        self._isolated: set[NodeId] = set()
        #: partition group number per node; empty when the network is whole
        self._group_of: dict[NodeId, int] = {}
        #: frames dropped, by reason (overflow, partitioned, node_down, unknown_node, link_drop)
        self.dropped: dict[str, int] = {}
        #: frames delivered into an inbox
        self.delivered = 0
        #: link faults in force (None when off: `deliver` then checks nothing else)
        self._link_faults: LinkFaults | None = None
        self._rng: random.Random | None = None
        #: frames delivered a second time by a link fault
        self.duplicated = 0
        #: frame copies held back by a link fault
        self.delayed = 0
        #: held-back copies not landed yet, by a token
        self._in_flight: dict[int, asyncio.TimerHandle] = {}
        self._next_token = 0
        self.set_link_faults(link_faults, rng)

    # -- endpoints ----------------------------------------------------------------------------------

    def add_node(self, node_id: NodeId) -> None:
        """Attach a new node (up, with an empty inbox) to the running network. While a partition is in
        force the new node is cut off alone, like a node named in no group, until `heal`."""
        if node_id in self._inboxes:
            raise LocalError(f"{node_id!r} is already a member of this network")
        self.nodes = (*self.nodes, node_id)
        self._inboxes[node_id] = asyncio.Queue(self.inbox_max_messages)
        self._next_offset[node_id] = 0
        if self._group_of:
            self._group_of[node_id] = max(self._group_of.values()) + 1

    def endpoint(self, node_id: NodeId) -> MemoryTransport:
        if node_id not in self._inboxes:
            raise LocalError(f"{node_id!r} is not a member of this network ({', '.join(self.nodes)})")
        return MemoryTransport(self, node_id)

    # -- faults -------------------------------------------------------------------------------------

    def partition(self, groups: Iterable[Iterable[NodeId]]) -> None:
        """Split the network: nodes talk only within their group. A node in no group is cut off alone."""
        group_of: dict[NodeId, int] = {}
        for number, group in enumerate(groups):
            for node in group:
                if node not in self._inboxes:
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
        """Cut one node off from every other (on top of any partition)."""
        if node_id not in self._inboxes:
            raise LocalError(f"cannot isolate unknown node {node_id!r}")
        self._isolated.add(node_id)

    def heal(self) -> None:
        """Undo every partition and isolation (crashed nodes stay down)."""
        self._group_of = {}
        self._isolated.clear()

    def disconnect(self, node_id: NodeId) -> None:
        """The node crashed: what is in its inbox is lost, and so is whatever is sent to it until
        `connect`."""
        self._down.add(node_id)
        inbox = self._inboxes[node_id]
        lost = inbox.qsize()
        if lost:
            self.dropped["node_down"] = self.dropped.get("node_down", 0) + lost
        # A fresh queue: the crashed runtime's reader may still hold a reference to the old one.
        self._inboxes[node_id] = asyncio.Queue(self.inbox_max_messages)

    def connect(self, node_id: NodeId) -> None:
        """The node restarted and receives again."""
        self._down.discard(node_id)

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

    def is_up(self, node_id: NodeId) -> bool:
        return node_id not in self._down

    def can_reach(self, source: NodeId, destination: NodeId) -> bool:
        if source in self._down or destination in self._down:
            return False
        if source == destination:
            return True
        if source in self._isolated or destination in self._isolated:
            return False
        group_of = self._group_of
        return not group_of or group_of.get(source) == group_of.get(destination)

    # -- delivery -----------------------------------------------------------------------------------

    def deliver(self, source: NodeId, destination: NodeId, data: bytes) -> bool:
        """Put one frame in `destination`'s inbox if the network allows; count it as dropped otherwise.

        With link faults on, True means at least one copy was delivered or is held back to land later."""
        if self._link_faults is not None:
            return self._deliver_faulty(self._link_faults, source, destination, data)
        return self._land(source, destination, data)

    def _deliver_faulty(self, faults: LinkFaults, source: NodeId, destination: NodeId, data: bytes) -> bool:
        if not self._can_send(source, destination):
            return self._land(source, destination, data)  # refused now: counted by reason, nothing drawn
        rng = self._rng
        assert rng is not None
        if faults.drop_probability and rng.random() < faults.drop_probability:
            self.dropped["link_drop"] = self.dropped.get("link_drop", 0) + 1
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

    def _can_send(self, source: NodeId, destination: NodeId) -> bool:
        return destination in self._inboxes and self.can_reach(source, destination)

    def _land_late(self, token: int, source: NodeId, destination: NodeId, data: bytes) -> None:
        del self._in_flight[token]
        self._land(source, destination, data)

    def _land(self, source: NodeId, destination: NodeId, data: bytes) -> bool:
        """`deliver` without link faults: into the inbox if the network allows, else counted by reason."""
        inbox = self._inboxes.get(destination)
        if inbox is None:
            reason = "unknown_node"
        elif source in self._down or destination in self._down:
            reason = "node_down"
        elif not self.can_reach(source, destination):
            reason = "partitioned"
        elif inbox.full():
            reason = "overflow"
        else:
            offset = self._next_offset[destination]
            self._next_offset[destination] = offset + 1
            inbox.put_nowait(Delivery(data, inbox_channel(destination), offset))
            self.delivered += 1
            return True
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        return False

    def inject(self, destination: NodeId, data: bytes) -> bool:
        """Put raw bytes straight into an inbox, bypassing partitions: a corrupt or forged frame."""
        inbox = self._inboxes.get(destination)
        if inbox is None or destination in self._down or inbox.full():
            return False
        offset = self._next_offset[destination]
        self._next_offset[destination] = offset + 1
        inbox.put_nowait(Delivery(data, inbox_channel(destination), offset))
        return True

    def inbox(self, node_id: NodeId) -> asyncio.Queue[Delivery]:
        return self._inboxes[node_id]


class MemoryTransport:
    """One node's endpoint on a `MemoryNetwork` (the `Transport` protocol)."""

    __slots__ = ("_closed", "_network", "committed", "node_id")

    def __init__(self, network: MemoryNetwork, node_id: NodeId) -> None:
        self._network = network
        self.node_id = node_id
        self._closed = False
        #: the last committed position per channel (memory inboxes cannot replay, so this is informative)
        self.committed: dict[str, int] = {}

    async def start(self, resume_after: Mapping[str, int]) -> None:
        # An in-memory inbox has no log to rewind or skip: what it holds was never consumed.
        self.committed.update(resume_after)

    async def send(self, frames: Sequence[OutboundFrame]) -> None:
        if self._closed:
            raise LocalError(f"transport of {self.node_id} is closed")
        deliver = self._network.deliver
        source = self.node_id
        for frame in frames:
            deliver(source, frame.destination, frame.data)

    async def receive(self, max_batch: int) -> list[Delivery]:
        if self._closed:
            raise LocalError(f"transport of {self.node_id} is closed")
        inbox = self._network.inbox(self.node_id)
        batch = [await inbox.get()]
        while len(batch) < max_batch and not inbox.empty():
            batch.append(inbox.get_nowait())
        return batch

    async def commit(self, positions: Mapping[str, int]) -> None:
        self.committed.update(positions)

    async def close(self) -> None:
        self._closed = True
