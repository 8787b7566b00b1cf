"""A gossip protocol that carries vector and Lamport clocks and records every event it performs.

`GossipCore` performs three kinds of events (the seed, section 4.2): local events, sends of a `Rumor`
to a random peer, and receives. Each event increments the node's own vector entry and its Lamport clock
(a receive first merges the rumor's clocks). A `CausalityRecorder` keeps every event with its clocks and,
for a receive, which send it matches, so a test can rebuild happened-before from the execution graph
(program order plus send -> receive, closed transitively) and compare it with the clocks.

The clocks are persisted in `hard_state`, so a node that crashes and restarts continues its event
numbering and its clocks (a restarted node with reset clocks would break both clock conditions).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass

from dscore.clocks import LamportClock, VectorClock
from dscore.core.envelope import Envelope
from dscore.core.errors import ConfigError, NotLeaderError
from dscore.core.ids import NodeId
from dscore.core.registry import message
from dscore.protocols.contract import Counters, DurableState, Outgoing, Ready


class EventKind(enum.Enum):
    LOCAL = "local"
    SEND = "send"
    RECEIVE = "receive"


class GossipRole(enum.Enum):
    PEER = "peer"


@message("gossip.rumor")
@dataclass(frozen=True, slots=True)
class Rumor:
    #: the number of the send event on its node (1-based), so a receive names its send
    event: int
    vector: tuple[tuple[str, int], ...]
    lamport: int


@dataclass(frozen=True, slots=True)
class CausalEvent:
    node: NodeId
    #: 1-based position in its node's program order
    number: int
    kind: EventKind
    vector: VectorClock
    lamport: int
    #: for a receive, the (node, number) of the send it delivers
    send: tuple[NodeId, int] | None = None


class CausalityRecorder:
    """Every event of a run, in the order the simulator performed them (a topological order of
    happened-before, since a receive is always performed after its send)."""

    def __init__(self, max_events: int = 200_000) -> None:
        self.max_events = max_events
        self.events: list[CausalEvent] = []

    def record(self, event: CausalEvent) -> None:
        if len(self.events) >= self.max_events:
            raise ConfigError(f"more than {self.max_events} causal events; shorten the run")
        self.events.append(event)


@dataclass(frozen=True, slots=True)
class GossipSettings:
    send_probability: float = 0.3
    local_probability: float = 0.1


class GossipCore:
    def __init__(
        self,
        node_id: NodeId,
        peers: Sequence[NodeId],
        rng: random.Random,
        durable: DurableState | None = None,
        *,
        recorder: CausalityRecorder | None = None,
        settings: GossipSettings | None = None,
    ) -> None:
        self._node_id = node_id
        self._peers = tuple(sorted(p for p in set(peers) if p != node_id))
        self._rng = rng
        self._recorder = recorder
        self.settings = settings or GossipSettings()
        self.counters = Counters()
        self.vector = VectorClock()
        self.lamport = LamportClock()
        self.events = 0
        hard = durable.hard_state if durable is not None else None
        if hard is not None:
            entries, lamport, events = _load_hard_state(hard)
            self.vector = VectorClock(entries)
            self.lamport = LamportClock(lamport)
            self.events = events
        self._outbox: list[Outgoing] = []
        self._dirty = False

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    @property
    def leader_id(self) -> NodeId | None:
        return None

    @property
    def role(self) -> GossipRole:
        return GossipRole.PEER

    def step(self, envelope: Envelope) -> None:
        rumor = envelope.content
        if not isinstance(rumor, Rumor) or envelope.source not in self._peers:
            self.counters.drop("unexpected")
            return
        self.vector = self.vector.merge(VectorClock(rumor.vector)).increment(self._node_id)
        self.lamport.observe(rumor.lamport)
        self._event(EventKind.RECEIVE, (envelope.source, rumor.event))

    def tick(self) -> None:
        draw = self._rng.random()
        settings = self.settings
        if draw < settings.send_probability and self._peers:
            peer = self._rng.choice(self._peers)
            self.vector = self.vector.increment(self._node_id)
            self.lamport.tick()
            self._event(EventKind.SEND, None)
            self._outbox.append(Outgoing(peer, Rumor(self.events, self.vector.entries, self.lamport.time)))
        elif draw < settings.send_probability + settings.local_probability:
            self.vector = self.vector.increment(self._node_id)
            self.lamport.tick()
            self._event(EventKind.LOCAL, None)

    def _event(self, kind: EventKind, send: tuple[NodeId, int] | None) -> None:
        self.events += 1
        self._dirty = True
        if self._recorder is not None:
            self._recorder.record(
                CausalEvent(self._node_id, self.events, kind, self.vector, self.lamport.time, send)
            )

    def propose(self, data: bytes) -> int:
        raise NotLeaderError("gossip has no log")

    def read_index(self, request_id: int) -> None:
        raise NotLeaderError("gossip has no state machine")

    def has_ready(self) -> bool:
        return self._dirty or bool(self._outbox)

    def ready(self) -> Ready:
        hard = (self.vector.entries, self.lamport.time, self.events) if self._dirty else None
        return Ready(hard_state=hard, messages=tuple(self._outbox))

    def advance(self, ready: Ready) -> None:
        if ready.hard_state is not None:
            self._dirty = False
        del self._outbox[: len(ready.messages)]


def _load_hard_state(hard: object) -> tuple[tuple[tuple[NodeId, int], ...], int, int]:
    if not (isinstance(hard, tuple) and len(hard) == 3):
        raise ConfigError(f"not a gossip hard state: {hard!r}")
    entries, lamport, events = hard
    return tuple((str(n), int(c)) for n, c in entries), int(lamport), int(events)
