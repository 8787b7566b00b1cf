"""A tiny deterministic network for PBFT cores in unit tests: every message is delivered (unless a test
drops it), in order, and each core's `Ready` is carried out as the executor would (persist, send, apply,
and hand the state image to `compact` at a checkpoint)."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from dscore.core.envelope import Envelope, Timestamp
from dscore.core.ids import MsgId, NodeId
from dscore.protocols.contract import DurableState, apply_persist
from dscore.protocols.pbft import PairKeys, PbftConfig, PbftNode

SECRET = b"unit-test-pbft-secret-0123456789"


class Cluster:
    def __init__(self, n: int = 4, config: PbftConfig | None = None) -> None:
        self.ids: tuple[NodeId, ...] = tuple(f"r{i}" for i in range(n))
        self.config = config or PbftConfig(checkpoint_interval=2, log_size_checkpoints=2)
        self.durable: dict[NodeId, DurableState] = {r: DurableState() for r in self.ids}
        self.nodes: dict[NodeId, PbftNode] = {r: self._make(r, None) for r in self.ids}
        #: what each replica executed: (seq, data)
        self.executed: dict[NodeId, list[tuple[int, bytes]]] = {r: [] for r in self.ids}
        self.queue: deque[tuple[NodeId, NodeId, object]] = deque()
        #: drop a message when this returns True (src, dst, content)
        self.drop: Callable[[NodeId, NodeId, object], bool] = lambda s, d, m: False
        self.down: set[NodeId] = set()
        self._seq = 0

    def _make(self, node: NodeId, durable: DurableState | None) -> PbftNode:
        keys = PairKeys.for_node(SECRET, node, self.ids)
        peers = [r for r in self.ids if r != node]
        return PbftNode(node, peers, random.Random(node), durable, keys=keys, config=self.config)

    def restart(self, node: NodeId) -> None:
        self.nodes[node] = self._make(node, self.durable[node])
        snapshot = self.durable[node].snapshot
        self.executed[node] = [e for e in self.executed[node] if snapshot is None or e[0] <= snapshot.index]

    def deliver(self, src: NodeId, dst: NodeId, content: object) -> None:
        self._seq += 1
        envelope = Envelope(src, dst, content, Timestamp(0), MsgId(src, 1, self._seq))
        self.nodes[dst].step(envelope)

    def process(self, node: NodeId) -> None:
        core = self.nodes[node]
        while core.has_ready():
            ready = core.ready()
            self.durable[node] = apply_persist(self.durable[node], ready)
            for out in ready.messages:
                self.queue.append((node, out.to, out.content))
            log = self.executed[node]
            if ready.snapshot is not None and (not log or ready.snapshot.index > log[-1][0]):
                log.clear()
                log.append((ready.snapshot.index, b"<state transfer>"))
            for entry in ready.committed:
                if not log or entry.index > log[-1][0]:
                    log.append((entry.index, entry.data))
            core.advance(ready)
            due = core.checkpoint_due
            if due and log and log[-1][0] == due:
                core.compact(due, repr([d for _, d in log]).encode())

    def run(self, max_messages: int = 100_000) -> None:
        for node in self.ids:
            if node not in self.down:
                self.process(node)
        delivered = 0
        while self.queue and delivered < max_messages:
            src, dst, content = self.queue.popleft()
            delivered += 1
            if dst in self.down or src in self.down or self.drop(src, dst, content):
                continue
            self.deliver(src, dst, content)
            self.process(dst)

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            for node in self.ids:
                if node not in self.down:
                    self.nodes[node].tick()
            self.run()

    def request(self, data: bytes, at: NodeId | None = None, origin: tuple[str, int] = ("c", 1)) -> None:
        node = at or self.ids[0]
        self.nodes[node].propose_with_origins(data, [origin])
        self.run()

    def primary(self) -> NodeId:
        views = {self.nodes[r].view for r in self.ids if r not in self.down}
        return self.nodes[self.ids[0]].primary_of(max(views))
