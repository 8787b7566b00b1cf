"""A small synchronous, deterministic cluster of `RaftNode`s for unit tests.

Messages are queued FIFO and delivered one at a time; after every input the receiving node's `Ready`s are
carried out in the contract's order (persist with `apply_persist`, send, restore/apply, reads, advance).
Faults: cut links (`partition`, `isolate`), a delivery `filter`, duplicating every message, shuffling the
queue, crash (volatile state lost, the durable image kept) and restart from the `DurableState`.

Safety is checked as the run goes: at most one leader per term (election safety), every new leader holds
every entry any node knew committed (leader completeness), entries applied in order and only once
persisted, and no two nodes ever apply different entries at the same index (state-machine safety). A
violation raises `SafetyViolation`.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable, Iterable

from dscore.core import codec
from dscore.core.envelope import Envelope, EnvelopeFactory, Timestamp
from dscore.core.ids import MsgId
from dscore.protocols.contract import (
    DurableState,
    EntryKind,
    LogEntry,
    Outgoing,
    ReadState,
    Ready,
    apply_persist,
)
from dscore.protocols.raft import RaftConfig, RaftNode, Role


class SafetyViolation(AssertionError):
    pass


def cfg(**overrides: object) -> RaftConfig:
    return RaftConfig(**overrides)  # type: ignore[arg-type]


def env(src: str, dst: str, content: object, seq: int = 1) -> Envelope:
    """A hand-made envelope, for stepping one node directly."""
    return Envelope(src, dst, content, Timestamp(seq), MsgId(src, 1, seq))


def drain(node: RaftNode) -> list[Ready]:
    """Collect (and acknowledge) every pending Ready of a lone node."""
    out = []
    while node.has_ready():
        rd = node.ready()
        out.append(rd)
        node.advance(rd)
    return out


def sent(readies: list[Ready], kind: type | None = None) -> list[Outgoing]:
    return [m for rd in readies for m in rd.messages if kind is None or isinstance(m.content, kind)]


class Cluster:
    def __init__(
        self,
        ids: Iterable[str] = ("a", "b", "c"),
        config: RaftConfig | None = None,
        *,
        seed: int = 0,
        node_cls: type[RaftNode] = RaftNode,
        wire: bool = False,
        peers: Iterable[str] | None = None,
    ) -> None:
        self.ids = list(ids)
        self.config = config or RaftConfig()
        self.seed = seed
        self.node_cls = node_cls
        self.wire = wire
        self.peers = tuple(peers) if peers is not None else tuple(self.ids)
        self.durable: dict[str, DurableState] = {}
        self.incarnation: dict[str, int] = {}
        self.nodes: dict[str, RaftNode] = {}
        self.factories: dict[str, EnvelopeFactory] = {}
        self.sm: dict[str, list[bytes]] = {}
        self.applied: dict[str, int] = {}
        self.reads: dict[str, list[ReadState]] = {}
        self.failed_reads: dict[str, list[int]] = {}
        self.first_applied: dict[int, tuple[int, EntryKind, bytes, str]] = {}
        self.leaders: dict[int, str] = {}
        #: index -> term of every entry some node knew committed (for leader completeness)
        self.committed_terms: dict[int, int] = {}
        self.committed_top = 0
        self.checked_leaders: set[tuple[int, str]] = set()
        self.check_completeness = True
        self.queue: deque[Envelope] = deque()
        self.cut: set[tuple[str, str]] = set()
        self.down: set[str] = set()
        self.filter: Callable[[Envelope], bool] | None = None
        self.duplicate = False
        self.shuffle_rng: random.Random | None = None
        self.sent: Counter[str] = Counter()
        self.trace: list[Envelope] = []
        self.delivered = 0
        for node_id in self.ids:
            self.add_node(node_id)

    # -- membership of the harness ------------------------------------------------------------------

    def add_node(self, node_id: str, *, join: bool = False) -> RaftNode:
        if node_id not in self.ids:
            self.ids.append(node_id)
        self.durable.setdefault(node_id, DurableState())
        self.incarnation.setdefault(node_id, 0)
        self.reads.setdefault(node_id, [])
        self.failed_reads.setdefault(node_id, [])
        return self._start(node_id, join=join)

    def _start(self, node_id: str, *, join: bool = False) -> RaftNode:
        self.incarnation[node_id] += 1
        inc = self.incarnation[node_id]
        rng = random.Random(f"{self.seed}/{node_id}/{inc}")
        node = self.node_cls(
            node_id, self.config, rng, self.durable[node_id], () if join else self.peers, join=join
        )
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

    def restart(self, node_id: str) -> RaftNode:
        assert node_id in self.down
        return self._start(node_id)

    # -- driving --------------------------------------------------------------------------------------

    def process(self, node_id: str) -> None:
        node = self.nodes[node_id]
        while node.has_ready():
            rd = node.ready()
            self.durable[node_id] = apply_persist(self.durable[node_id], rd)
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
        for index in range(max(self.committed_top, node.snapshot_index) + 1, node.commit_index + 1):
            term = node.term_at(index)
            if term is not None:
                self.committed_terms.setdefault(index, term)
        self.committed_top = max(self.committed_top, node.commit_index)
        if node.role is Role.LEADER:
            seen = self.leaders.setdefault(node.term, node_id)
            if seen != node_id:
                raise SafetyViolation(f"two leaders in term {node.term}: {seen} and {node_id}")
            if self.check_completeness and (node.term, node_id) not in self.checked_leaders:
                self.checked_leaders.add((node.term, node_id))
                for index, term in self.committed_terms.items():
                    if index > node.snapshot_index and node.term_at(index) != term:
                        raise SafetyViolation(
                            f"leader completeness: {node_id} leads term {node.term} without committed {index}"
                        )

    def _apply(self, node_id: str, entry: LogEntry) -> None:
        if entry.index != self.applied[node_id] + 1:
            raise SafetyViolation(f"{node_id} applied {entry.index} after {self.applied[node_id]}")
        durable = self.durable[node_id]
        stored = durable.entries
        pos = entry.index - stored[0].index if stored else -1
        persisted = 0 <= pos < len(stored) and stored[pos] == entry
        snap = durable.snapshot
        if not persisted and not (snap is not None and snap.index >= entry.index):
            raise SafetyViolation(f"{node_id} applied entry {entry.index} before persisting it")
        key = (entry.term, entry.kind, entry.data, node_id)
        first = self.first_applied.setdefault(entry.index, key)
        if first[:3] != key[:3]:
            raise SafetyViolation(
                f"state-machine safety: {node_id} applied {key[:3]} at {entry.index}, {first[3]} applied {first[:3]}"
            )
        self.applied[node_id] = entry.index
        if entry.kind == EntryKind.NORMAL:
            self.sm[node_id].append(entry.data)

    def _transmit(self, env: Envelope) -> None:
        if self.wire:
            env = codec.decode_envelope(codec.encode_envelope(env))
        self.sent[type(env.content).__name__] += 1
        self.trace.append(env)
        self.queue.append(env)
        if self.duplicate:
            self.queue.append(env)

    def _droppable(self, env: Envelope) -> bool:
        return (
            env.destination in self.down
            or env.destination not in self.nodes
            or (env.source, env.destination) in self.cut
            or (self.filter is not None and not self.filter(env))
        )

    def deliver_one(self) -> None:
        if self.shuffle_rng is not None and len(self.queue) > 1:
            i = self.shuffle_rng.randrange(len(self.queue))
            self.queue.rotate(-i)
            env = self.queue.popleft()
            self.queue.rotate(i)
        else:
            env = self.queue.popleft()
        if self._droppable(env):
            return
        self.delivered += 1
        self.nodes[env.destination].step(env)
        self.process(env.destination)

    def run(self, max_messages: int = 200_000) -> None:
        for _ in range(max_messages):
            if not self.queue:
                return
            self.deliver_one()
        raise AssertionError("message storm: the queue never drained")

    def deliver(self, pred: Callable[[Envelope], bool]) -> int:
        """Deliver queued messages matching `pred` (also ones sent meanwhile); keep the others queued."""
        count = 0
        while True:
            match = next((e for e in self.queue if pred(e)), None)
            if match is None:
                return count
            self.queue.remove(match)
            if not self._droppable(match):
                self.nodes[match.destination].step(match)
                self.process(match.destination)
                count += 1

    def drop_queued(self, pred: Callable[[Envelope], bool] | None = None) -> int:
        kept = deque(e for e in self.queue if pred is not None and not pred(e))
        dropped = len(self.queue) - len(kept)
        self.queue = kept
        return dropped

    def tick(self, n: int = 1, nodes: Iterable[str] | None = None, *, deliver: bool = True) -> None:
        for _ in range(n):
            for node_id in list(nodes if nodes is not None else self.nodes):
                if node_id in self.nodes:
                    self.nodes[node_id].tick()
                    self.process(node_id)
            if deliver:
                self.run()

    # -- faults ---------------------------------------------------------------------------------------

    def partition(self, *groups: Iterable[str]) -> None:
        sets = [set(g) for g in groups]
        self.cut = {
            (a, b) for i, ga in enumerate(sets) for j, gb in enumerate(sets) if i != j for a in ga for b in gb
        }

    def isolate(self, node_id: str) -> None:
        others = [i for i in self.ids if i != node_id]
        self.partition([node_id], others)

    def heal(self) -> None:
        self.cut = set()
        self.filter = None

    # -- helpers --------------------------------------------------------------------------------------

    def elect(self, node_id: str) -> RaftNode:
        node = self.nodes[node_id]
        node.campaign()
        self.process(node_id)
        self.run()
        assert node.role is Role.LEADER, f"{node_id} is {node.role} after campaigning"
        return node

    def leader(self) -> str | None:
        leaders = [n for n in self.nodes.values() if n.role is Role.LEADER]
        if not leaders:
            return None
        return max(leaders, key=lambda n: n.term).node_id

    def wait_leader(self, max_ticks: int = 300, among: Iterable[str] | None = None) -> str:
        allowed = set(among) if among is not None else None
        for _ in range(max_ticks):
            lead = self.leader()
            if lead is not None and (allowed is None or lead in allowed):
                node = self.nodes[lead]
                if node.term_at(node.commit_index) == node.term:
                    return lead
            self.tick()
        raise AssertionError(f"no leader after {max_ticks} ticks")

    def propose(self, data: bytes, node_id: str | None = None, *, run: bool = True) -> int:
        lead = node_id or self.leader()
        assert lead is not None
        index = self.nodes[lead].propose(data)
        self.process(lead)
        if run:
            self.run()
        return index

    def compact(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.compact(self.applied[node_id], codec.encode_value(tuple(self.sm[node_id])))
        self.process(node_id)

    def check_log_matching(self) -> None:
        """Log Matching across live nodes: same (index, term) implies identical entries up to there."""
        logs = {i: {e.index: e for e in n.entries()} for i, n in self.nodes.items()}
        ids = sorted(logs)
        for x in range(len(ids)):
            for y in range(x + 1, len(ids)):
                a, b = logs[ids[x]], logs[ids[y]]
                common = sorted(set(a) & set(b))
                matched = [i for i in common if a[i].term == b[i].term]
                if not matched:
                    continue
                top = matched[-1]
                for i in common:
                    if i <= top and a[i] != b[i]:
                        raise SafetyViolation(f"log matching broken at {i} between {ids[x]} and {ids[y]}")

    def converge(self, ticks: int = 30) -> None:
        self.tick(ticks)
        self.check_log_matching()
