"""A small synchronous, deterministic cluster of `PaxosNode`s for unit tests (virtual time: `tick`).

Messages are queued FIFO and delivered one at a time; after every input the receiving node's `Ready`s are
carried out in the contract's order (persist with `apply_persist`, send, restore/apply, reads, advance).
Faults: cut links (`isolate`, `cut`), a delivery `filter`, crash (volatile state lost, the durable image
kept) and restart. Every message can go through the real codec (`wire=True`).

Checked as the run goes: entries applied in order and only once persisted, no two nodes applying
different values at one slot, and every value a node applies agreeing with the acceptors' majority
(the simulator's `PaxosSafety`, fed by this harness).
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from dscore.core import codec
from dscore.core.envelope import Envelope, EnvelopeFactory, Timestamp
from dscore.core.ids import MsgId, NodeId
from dscore.protocols.contract import DurableState, EntryKind, LogEntry, ReadState, Ready, apply_persist
from dscore.protocols.paxos import PaxosConfig, PaxosNode, Role
from dscore.sim.paxos_invariants import PaxosSafety
from dscore.sim.view import AppliedEntry


class SafetyViolation(AssertionError):
    pass


def env(src: str, dst: str, content: object, seq: int = 1) -> Envelope:
    """A hand-made envelope, for stepping one node directly."""
    return Envelope(src, dst, content, Timestamp(seq), MsgId(src, 1, seq))


def drain(node: PaxosNode) -> list[Ready]:
    out = []
    while node.has_ready():
        rd = node.ready()
        out.append(rd)
        node.advance(rd)
    return out


def sent(readies: list[Ready], kind: type | None = None) -> list[object]:
    return [m.content for rd in readies for m in rd.messages if kind is None or isinstance(m.content, kind)]


@dataclass
class _NodeView:
    node_id: NodeId
    durable: DurableState
    incarnation: int = 1
    core: PaxosNode | None = None
    state_machine: object = None


@dataclass
class _View:
    nodes: Mapping[NodeId, _NodeView]
    new_applies: Sequence[AppliedEntry] = ()
    now_us: int = 0


@dataclass
class Cluster:
    ids: Sequence[str] = ("a", "b", "c")
    config: PaxosConfig = field(default_factory=PaxosConfig)
    seed: int = 0
    node_cls: type[PaxosNode] = PaxosNode
    wire: bool = False

    def __post_init__(self) -> None:
        self.ids = list(self.ids)
        self.durable: dict[str, DurableState] = {i: DurableState() for i in self.ids}
        self.incarnation: dict[str, int] = dict.fromkeys(self.ids, 0)
        self.nodes: dict[str, PaxosNode] = {}
        self.factories: dict[str, EnvelopeFactory] = {}
        self.sm: dict[str, list[bytes]] = {}
        self.applied: dict[str, int] = {}
        self.reads: dict[str, list[ReadState]] = {i: [] for i in self.ids}
        self.failed_reads: dict[str, list[int]] = {i: [] for i in self.ids}
        self.first_applied: dict[int, tuple[int, EntryKind, bytes, str]] = {}
        self.queue: deque[Envelope] = deque()
        self.cut: set[tuple[str, str]] = set()
        self.down: set[str] = set()
        self.filter: Callable[[Envelope], bool] | None = None
        self.sent: Counter[str] = Counter()
        self.safety = PaxosSafety()
        self._applies: list[AppliedEntry] = []
        for node_id in self.ids:
            self._start(node_id)

    # -- lifecycle ----------------------------------------------------------------------------------

    def _start(self, node_id: str) -> PaxosNode:
        self.incarnation[node_id] += 1
        inc = self.incarnation[node_id]
        rng = random.Random(f"{self.seed}/{node_id}/{inc}")
        durable = self.durable[node_id] if inc > 1 else None
        node = self.node_cls(node_id, self.config, rng, durable, self.ids)
        self.nodes[node_id] = node
        self.factories[node_id] = EnvelopeFactory(node_id, inc)
        self.sm[node_id] = []
        self.applied[node_id] = 0
        self.down.discard(node_id)
        self.process(node_id)
        return node

    def crash(self, node_id: str) -> None:
        self.down.add(node_id)
        del self.nodes[node_id]

    def restart(self, node_id: str) -> PaxosNode:
        assert node_id in self.down
        return self._start(node_id)

    # -- driving ------------------------------------------------------------------------------------

    def process(self, node_id: str) -> None:
        node = self.nodes[node_id]
        while node.has_ready():
            rd = node.ready()
            self.durable[node_id] = apply_persist(self.durable[node_id], rd)
            self._check()
            for out in rd.messages:
                self._transmit(self.factories[node_id].wrap(out.to, out.content))
            if rd.snapshot is not None and rd.snapshot.index > self.applied[node_id]:
                self.sm[node_id] = list(codec.decode_value(rd.snapshot.data))
                self.applied[node_id] = rd.snapshot.index
            for entry in rd.committed:
                self._apply(node_id, entry)
            self.reads[node_id].extend(rd.read_states)
            self.failed_reads[node_id].extend(rd.failed_reads)
            node.advance(rd)
        self._check()

    def _check(self) -> None:
        views = {i: _NodeView(i, self.durable[i]) for i in self.ids}
        applies, self._applies = self._applies, []
        try:
            self.safety(_View(views, applies))
        except Exception as error:
            raise SafetyViolation(str(error)) from error

    def _apply(self, node_id: str, entry: LogEntry) -> None:
        if entry.index <= self.applied[node_id]:
            return  # in the restored snapshot
        if entry.index != self.applied[node_id] + 1:
            raise SafetyViolation(f"{node_id} applied {entry.index} after {self.applied[node_id]}")
        durable = self.durable[node_id]
        stored = durable.entries
        pos = entry.index - stored[0].index if stored else -1
        if not (0 <= pos < len(stored) and stored[pos] == entry):
            raise SafetyViolation(f"{node_id} applied entry {entry.index} before persisting it")
        key = (entry.term, entry.kind, entry.data, node_id)
        first = self.first_applied.setdefault(entry.index, key)
        if first[:3] != key[:3]:
            raise SafetyViolation(
                f"{node_id} applied {key[:3]} at {entry.index}, {first[3]} applied {first[:3]}"
            )
        self._applies.append(AppliedEntry(node_id, self.incarnation[node_id], entry))
        self.applied[node_id] = entry.index
        if entry.kind == EntryKind.NORMAL:
            self.sm[node_id].append(entry.data)

    def _transmit(self, envelope: Envelope) -> None:
        if self.wire:
            envelope = codec.decode_envelope(codec.encode_envelope(envelope))
        self.sent[type(envelope.content).__name__] += 1
        self.queue.append(envelope)

    def deliver_one(self) -> bool:
        if not self.queue:
            return False
        envelope = self.queue.popleft()
        src, dst = envelope.source, envelope.destination
        if (
            dst in self.down
            or (src, dst) in self.cut
            or (self.filter is not None and not self.filter(envelope))
        ):
            return True
        self.nodes[dst].step(envelope)
        self.process(dst)
        return True

    def deliver_all(self, limit: int = 100_000) -> None:
        for _ in range(limit):
            if not self.deliver_one():
                return
        raise AssertionError("messages never quiesced")

    def tick(self, times: int = 1, nodes: Iterable[str] | None = None) -> None:
        for _ in range(times):
            for node_id in list(nodes if nodes is not None else self.ids):
                if node_id in self.nodes:
                    self.nodes[node_id].tick()
                    self.process(node_id)
            self.deliver_all()

    def isolate(self, node_id: str) -> None:
        for other in self.ids:
            if other != node_id:
                self.cut |= {(node_id, other), (other, node_id)}

    def heal(self) -> None:
        self.cut = set()

    def step_local(self, node_id: str, fn: Callable[[PaxosNode], object]) -> object:
        result = fn(self.nodes[node_id])
        self.process(node_id)
        return result

    # -- views --------------------------------------------------------------------------------------

    def leaders(self) -> list[str]:
        return [i for i, n in self.nodes.items() if n.role is Role.LEADER]

    def elect(self, node_id: str) -> None:
        """`node_id` starts phase 1 now, and the others have gone an election timeout without hearing
        from their leader (so they no longer ignore other proposers: stickiness), then everything
        delivered."""
        for other, node in self.nodes.items():
            if other != node_id:
                node._elapsed = max(node._elapsed, self.config.election_timeout_ticks)
        self.step_local(node_id, PaxosNode.campaign)
        self.deliver_all()
        if self.nodes[node_id].role is not Role.LEADER:
            raise AssertionError(f"{node_id} did not become leader")

    def propose(self, node_id: str, data: bytes) -> int:
        return int(self.step_local(node_id, lambda n: n.propose(data)))  # type: ignore[call-overload]
