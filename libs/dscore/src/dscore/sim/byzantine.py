"""Byzantine replicas in the simulator (the seed, section 3.1): up to f nodes that lie, wrapping any core.

A Byzantine node runs the ordinary replica (its executor, a real core of the run's protocol) and corrupts
what leaves it. `ByzantineCore` wraps the core: it steps and ticks the inner core as usual, and rewrites
the messages of every `Ready` before the executor sends them; `ByzantineExecutor` adds what only the
frame layer can do (messages under another replica's name) and lies to clients. Nothing here knows the
protocol beyond field names, so the same wrapper runs Raft, Paxos and PBFT: a field called `granted`
becomes a "yes", `index` grows, `digest` and `data` change, and where the inner core holds pair keys
(`keys`, PBFT) the rewritten message is authenticated again with the Byzantine node's *own* keys, the only
ones it has.

Kinds (`BYZANTINE_KINDS`), each drawn per seed like any fault and replayable from it:

- `equivocate`: a message multicast in one step goes out in two versions, to two halves of the peers
  (different pre-prepares, votes or appends to different replicas);
- `forge`: messages sent under another replica's id (the frame layer holds the cluster key, the pair MAC
  does not verify: PBFT rejects them as `unauthenticated`, a core without pair MACs believes them);
- `replay`: old messages sent again, its own (stale views, old sequence numbers) and others' relayed to
  third parties under their sender's id;
- `corrupt_payload`: fields replaced by garbage, then authenticated again (well-formed, authentic, wrong);
- `silence`: nothing at all to a fixed subset of peers;
- `lie`: claims about its log and checkpoints (votes granted, higher indexes, invented prepared
  certificates in a view change, wrong checkpoint digests, false status) and wrong answers to clients;
- `collude`: every Byzantine node draws its lies from one shared stream, so they equivocate towards the
  same replicas with the same values.

Like every fault of the simulator, Byzantine behaviour stops at the end of the faulty part of the run
(`active` turns off; the node then runs its correct core), so liveness is checked on a fault-free tail:
safety is what must hold while they lie. (A replica that stays Byzantine forever can stall this PBFT's
view changes by sending its VIEW-CHANGE to the new primary alone: the paper's view-change acknowledgements
are not implemented; see the README.)

The number of Byzantine nodes is `ByzantinePlan.replicas` (0: the f the protocol claims to tolerate, at
least 1); which nodes are drawn from the run's seed.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dscore.core.client_messages import ClientResponse, Outcome
from dscore.core.codec import encode_envelope, encode_value
from dscore.core.envelope import Envelope, EnvelopeFactory
from dscore.core.errors import ConfigError
from dscore.core.ids import NodeId
from dscore.protocols.contract import LogEntry, Outgoing, ProtocolCore, Ready
from dscore.protocols.pbft.auth import digest_of
from dscore.protocols.pbft.messages import PEntry, QEntry, ViewChange
from dscore.replica.executor import Executor
from dscore.transport.base import OutboundFrame

BYZANTINE_KINDS = ("equivocate", "forge", "replay", "corrupt_payload", "silence", "lie", "collude")

#: messages kept for `replay`
_REPLAY_KEPT = 64
#: an empty kv batch: what an equivocating primary orders instead of the real request
_EMPTY_BATCH = b"\x90"
_YES_FIELDS = ("granted", "ok", "accepted", "promised", "success")
_NO_FIELDS = ("reject", "rejected", "nack")
#: fields that name the slot a message is about (equivocation is decided per slot)
_SLOT_FIELDS = ("seq", "index", "prev_index", "slot")
_MAX_SLOTS_KEPT = 4_096
_INDEX_FIELDS = ("index", "match", "commit", "executed", "stable_seq", "last_index", "slot")


@dataclass(frozen=True, slots=True)
class ByzantinePlan:
    """Which Byzantine behaviours a run injects, in how many nodes, how often."""

    kinds: tuple[str, ...] = ()
    #: Byzantine nodes; 0: the f the protocol tolerates (at least 1)
    replicas: int = 0
    #: chance each outgoing message is tampered with by an enabled kind
    intensity: float = 0.3

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(BYZANTINE_KINDS)
        if unknown:
            raise ConfigError(f"unknown Byzantine kinds: {', '.join(sorted(unknown))}")
        if not 0.0 <= self.intensity <= 1.0 or self.replicas < 0:
            raise ConfigError("ByzantinePlan needs intensity within [0, 1] and replicas >= 0")

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(kind for kind in BYZANTINE_KINDS if kind in self.kinds)

    def on(self, kind: str) -> bool:
        return kind in self.kinds

    @staticmethod
    def draw(rng: random.Random, kinds: Iterable[str] | None = None) -> ByzantinePlan:
        """`kinds=None`: swarm (each kind on with probability one half, at least one)."""
        intensity = round(rng.uniform(0.05, 0.5), 3)
        if kinds is None:
            chosen = [kind for kind in BYZANTINE_KINDS if rng.random() < 0.5]
            if not chosen:
                chosen = [rng.choice(BYZANTINE_KINDS)]
        else:
            chosen = list(kinds)
        return ByzantinePlan(tuple(k for k in BYZANTINE_KINDS if k in chosen), 0, intensity)


def split_fault_kinds(kinds: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Ordinary and Byzantine kinds of a list (`byzantine` stands for every Byzantine kind)."""
    ordinary: list[str] = []
    byzantine: list[str] = []
    for kind in kinds:
        if kind == "byzantine":
            byzantine.extend(BYZANTINE_KINDS)
        elif kind in BYZANTINE_KINDS:
            byzantine.append(kind)
        else:
            ordinary.append(kind)
    return tuple(ordinary), tuple(dict.fromkeys(byzantine))


def choose_byzantine(
    plan: ByzantinePlan, node_ids: Sequence[NodeId], tolerated: int, rng: random.Random
) -> frozenset[NodeId]:
    if not plan.kinds:
        return frozenset()
    count = plan.replicas or max(1, tolerated)
    return frozenset(rng.sample(list(node_ids), min(count, len(node_ids) - 1)))


# -- rewriting messages -------------------------------------------------------------------------------


def _replace(content: Any, **changes: Any) -> Any:
    return dataclasses.replace(content, **changes)


def _alternative_data(data: bytes) -> bytes:
    return _EMPTY_BATCH if data != _EMPTY_BATCH else b"\x91\xc0"


def _fix_digest(content: Any) -> Any:
    """Keep a PBFT request's digest consistent with its (changed) data, so it looks well-formed."""
    fields = {f.name for f in dataclasses.fields(content)}
    if {"digest", "data", "origins"} <= fields and content.digest:
        origins = tuple((o.address, o.request_id) for o in content.origins)
        return _replace(content, digest=digest_of(content.data, origins))
    return content


def equivocate(content: Any, rng: random.Random, alternatives: dict[bytes, bytes] | None = None) -> Any:
    """Another version of the same message: another request, another vote, other entries. A request's
    digest and the votes for it change together (`alternatives` maps each digest to its other version),
    so the replicas lied to see one consistent story."""
    if not dataclasses.is_dataclass(content):
        return content
    alternatives = alternatives if alternatives is not None else {}
    fields = {f.name for f in dataclasses.fields(content)}
    request: Any = content
    if {"digest", "data", "origins"} <= fields and request.digest:
        # Another request, named by no client (an empty batch): it orders something else, it does not
        # impersonate a client (client requests carry no MAC of their own here; see the README).
        other = _fix_digest(_replace(request, data=_EMPTY_BATCH, origins=()))
        alternatives[request.digest] = other.digest
        return other
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(content):
        value = getattr(content, f.name)
        if f.name == "data" and isinstance(value, bytes):
            changes["data"] = _alternative_data(value)
        elif f.name == "digest" and isinstance(value, bytes) and value:
            changes["digest"] = alternatives.get(value) or hashlib.sha256(value + b"equivocation").digest()
        elif f.name == "entries" and isinstance(value, tuple) and value:
            changes["entries"] = tuple(
                _replace(e, data=_alternative_data(e.data)) if isinstance(e, LogEntry) else e for e in value
            )
        elif f.name == "value" and isinstance(value, bytes):
            changes["value"] = _alternative_data(value)
    return _fix_digest(_replace(content, **changes)) if changes else content


def lie(content: Any, rng: random.Random) -> Any:
    """Claims about its own state: yes to every vote, more log than it has, invented certificates."""
    if isinstance(content, ViewChange):
        seq = content.stable_seq + 1
        fake = PEntry(seq, max(0, content.view - 1), digest_of(_EMPTY_BATCH, ()), _EMPTY_BATCH, ())
        kept = tuple(p for p in content.prepared if p.seq != seq)
        return _replace(
            content,
            prepared=(fake, *kept),
            preprepared=(QEntry(seq, fake.view, fake.digest), *content.preprepared),
        )
    if not dataclasses.is_dataclass(content):
        return content
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(content):
        value = getattr(content, f.name)
        if f.name in _YES_FIELDS and type(value) is bool:
            changes[f.name] = True
        elif f.name in _NO_FIELDS and type(value) is bool:
            changes[f.name] = False
        elif f.name in _INDEX_FIELDS and type(value) is int:
            changes[f.name] = value + rng.randint(1, 8)
        elif f.name == "digest" and isinstance(value, bytes) and "data" not in content.__dataclass_fields__:
            changes[f.name] = hashlib.sha256(value + b"lie").digest()
    return _replace(content, **changes) if changes else content


def corrupt(content: Any, rng: random.Random) -> Any:
    """One field replaced by garbage of its type."""
    if not dataclasses.is_dataclass(content):
        return content
    fields = [f for f in dataclasses.fields(content) if f.name != "mac"]
    if not fields:
        return content
    f = rng.choice(fields)
    value = getattr(content, f.name)
    garbage: Any
    if type(value) is int:
        garbage = rng.choice((0, -1, value + rng.randint(1, 1000), 2**62))
    elif type(value) is bool:
        garbage = not value
    elif isinstance(value, bytes):
        garbage = rng.randbytes(rng.randint(0, 40))
    elif isinstance(value, str):
        garbage = value + "?"
    elif isinstance(value, tuple):
        garbage = value[: rng.randint(0, len(value))] if value else value
    else:
        return content
    return _replace(content, **{f.name: garbage})


class ByzantineCore:
    """Wraps a correct core and tampers with what it sends (see the module docstring).

    Everything else (`leader_id`, `propose`, `compact`, the pair keys, ...) is the inner core's, so the
    executor drives it like any core."""

    def __init__(
        self,
        inner: ProtocolCore,
        plan: ByzantinePlan,
        rng: random.Random,
        peers: Sequence[NodeId],
        *,
        shared_rng: random.Random | None = None,
        active: bool = True,
    ) -> None:
        self.inner = inner
        #: lying now (the simulator turns it off when faults end)
        self.active = active
        self.plan = plan
        self._rng = rng
        # Colluders draw their lies from one stream: the same victims, the same values.
        self._lie_rng = shared_rng if plan.on("collude") and shared_rng is not None else rng
        self.peers = tuple(sorted(peers))
        silenced = rng.sample(self.peers, rng.randint(1, max(1, len(self.peers) - 1))) if self.peers else []
        self.silenced = frozenset(silenced) if plan.on("silence") else frozenset()
        self._heard: deque[tuple[NodeId, object]] = deque(maxlen=_REPLAY_KEPT)
        self._said: deque[tuple[NodeId, object]] = deque(maxlen=_REPLAY_KEPT)
        #: messages to send under another node's id: (claimed sender, destination, content)
        self.forged: list[tuple[NodeId, NodeId, object]] = []
        #: what it did, by kind (for tests and the trace)
        self.actions: dict[str, int] = {}
        self._inner_ready: Ready | None = None
        #: equivocation decided per (view, slot): the replicas that get the other version
        self._equivocations: dict[tuple[object, int], frozenset[NodeId]] = {}
        self._alternatives: dict[bytes, bytes] = {}
        #: its own old messages, to go out again with the next step's (stale, not forged: authentic)
        self._replays: list[Outgoing] = []
        keys = getattr(inner, "keys", None)
        self._keys = keys if hasattr(keys, "mac") else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def node_id(self) -> NodeId:
        return self.inner.node_id

    @property
    def leader_id(self) -> NodeId | None:
        return self.inner.leader_id

    @property
    def role(self) -> enum.Enum:
        return self.inner.role

    def step(self, envelope: Envelope) -> None:
        self._heard.append((envelope.source, envelope.content))
        self.inner.step(envelope)

    def tick(self) -> None:
        self.inner.tick()

    def propose(self, data: bytes) -> int:
        return self.inner.propose(data)

    def read_index(self, request_id: int) -> None:
        self.inner.read_index(request_id)

    def has_ready(self) -> bool:
        return self.inner.has_ready()

    def ready(self) -> Ready:
        ready = self.inner.ready()
        self._inner_ready = ready
        if not ready.messages or not self.active:
            return ready
        return dataclasses.replace(ready, messages=tuple(self._tamper(ready.messages)))

    def advance(self, ready: Ready) -> None:
        inner_ready = self._inner_ready if self._inner_ready is not None else ready
        self._inner_ready = None
        self.inner.advance(inner_ready)

    # -- tampering ------------------------------------------------------------------------------------

    def _did(self, kind: str) -> None:
        self.actions[kind] = self.actions.get(kind, 0) + 1

    def _authentic(self, to: NodeId, content: Any) -> Any:
        """Authenticated again with its own pair key (the only one it has for `to`)."""
        keys = self._keys
        if keys is None or not dataclasses.is_dataclass(content) or "mac" not in content.__dataclass_fields__:
            return content
        blank = _replace(content, mac=b"")
        return _replace(blank, mac=keys.mac(self.node_id, to, encode_value(blank)))

    def _tamper(self, messages: Sequence[Outgoing]) -> list[Outgoing]:
        plan = self.plan
        rng = self._rng
        lie_rng = self._lie_rng
        out: list[Outgoing] = []
        # Equivocation splits the peers in two for each distinct message multicast in this step.
        for outgoing in messages:
            to = outgoing.to
            content = outgoing.content
            if to in self.silenced:
                self._did("silence")
                continue
            self._said.append((to, content))
            changed = content
            if plan.on("equivocate"):
                # Decided once per slot (sequence number, log index): the same replicas get the other
                # version of the request and of every vote on it.
                victims = self._victims(content)
                if victims is not None and to in victims:
                    changed = equivocate(content, lie_rng, self._alternatives)
                    self._did("equivocate")
            if changed is content and rng.random() >= plan.intensity:
                out.append(outgoing)
                continue
            if plan.on("lie") and rng.random() < 0.5:
                changed = lie(changed, lie_rng)
                self._did("lie")
            if plan.on("corrupt_payload") and rng.random() < 0.3:
                changed = corrupt(changed, rng)
                self._did("corrupt_payload")
            if changed is not content:
                changed = self._authentic(to, changed)
            out.append(Outgoing(to, changed))
            if plan.on("forge") and rng.random() < 0.3:
                victim = rng.choice([p for p in self.peers if p != to] or list(self.peers))
                self.forged.append((victim, to, changed))
                self._did("forge")
            if plan.on("replay") and rng.random() < 0.3:
                self._replay(to)
        return out

    def _victims(self, content: Any) -> frozenset[NodeId] | None:
        slot = next((getattr(content, name) for name in _SLOT_FIELDS if hasattr(content, name)), None)
        if type(slot) is not int:
            return None
        key = (getattr(content, "view", getattr(content, "term", 0)), slot)
        plans = self._equivocations
        if key not in plans:
            if len(plans) > _MAX_SLOTS_KEPT:
                plans.clear()
                self._alternatives.clear()
            rng = self._lie_rng
            on = rng.random() < self.plan.intensity
            plans[key] = frozenset(rng.sample(self.peers, len(self.peers) // 2)) if on else frozenset()
        return plans[key]

    def _replay(self, to: NodeId) -> None:
        rng = self._rng
        if self._said and rng.random() < 0.5:
            old_to, content = rng.choice(self._said)
            self._replays.append(Outgoing(old_to, content))
            self._did("replay")
        elif self._heard:
            source, content = rng.choice(self._heard)
            if source != to:
                self.forged.append((source, to, content))  # relayed under its sender's id
                self._did("replay")

    def take_extra(self) -> tuple[list[tuple[NodeId, NodeId, object]], list[Outgoing]]:
        forged = self.forged
        self.forged = []
        replays = self._replays
        self._replays = []
        return forged, replays


def _has_mac(content: object) -> bool:
    return dataclasses.is_dataclass(content) and "mac" in content.__dataclass_fields__


class ByzantineExecutor(Executor):
    """The executor of a Byzantine node: sends what its `ByzantineCore` forged under other ids, resends
    old messages, and (`lie`) answers clients with values nobody wrote."""

    def _frames_for(self, ready: Ready) -> list[OutboundFrame]:
        frames = super()._frames_for(ready)
        core = self.core
        if not isinstance(core, ByzantineCore):
            return frames
        forged, replays = core.take_extra()
        if not core.active:
            return frames
        if replays:
            frames.extend(super()._frames_for(Ready(messages=tuple(replays))))
        for victim, to, content in forged:
            # Incarnation 0: never above the victim's real ids, so duplicate filters keep its marks.
            factory = EnvelopeFactory(victim, 0, fingerprint=self._factory.fingerprint)
            envelope = factory.wrap(to, content)
            frames.append(OutboundFrame(to, encode_envelope(envelope, key=self._key), envelope))
        return frames

    def _reply(self, destination: str, response: ClientResponse) -> None:
        core = self.core
        if (
            isinstance(core, ByzantineCore)
            and core.active
            and core.plan.on("lie")
            and response.outcome is Outcome.OK
            and core._rng.random() < core.plan.intensity
        ):
            response = _replace(response, value=f"byzantine-{core.node_id}")
            core._did("lie_to_client")
        super()._reply(destination, response)
