"""Transport faults a node obeys: rules that drop, delay or block its traffic, changed at run time by
authenticated commands from the chaos injector (`services/chaos`).

`FaultyTransport(inner, node_id, rng=...)` is a `Transport` around the node's real one (Kafka, memory).
It applies the `FaultRules` in force to every frame:

- **omission**: drop a frame with probability p (from the given `random.Random`, so a seed replays it);
- **delay**: hold a frame back d ms before handing it to the inner transport (sends only, see below);
- **partition**: drop every frame to and from the peers on the other side (p = 1).

A rule names the peers it affects (none: every endpoint, clients included) and a direction: `send` (the
frames this node sends to them), `receive` (the frames it reads from them) or `both`. A partition is
`both`, so it holds even where only one side heard the command. Delays are for sends only: a delivery
read from a single-partition inbox can only be held back with everything behind it (the runtime's input
positions must keep growing), which would delay every peer, not the one named. Frames held back to one
destination keep their order, and a frame sent to it while older ones are held waits behind them.

The receive side reads a delivery's source from its frame without checking the MAC (`peek_source`):
the runtime above checks it, and a forged source can only make this node drop what it would have
rejected anyway. Deliveries whose source cannot be read pass untouched, for the runtime to count.

Commands travel as `FaultCommand` messages (`chaos.fault_command`) in `dscore.core.codec` frames with an
HMAC-SHA256 under the cluster key (`encode_command` / `decode_command`), on the control channel, a Kafka
topic `dscore.<cluster_id>.control` that every node reads (`dscore.transport.faults_kafka`). The
wrapper's reader task reads it; every record is decoded, checked and applied, or counted by reason in
`FaultStats.control_rejected` and dropped: nothing on the topic can raise out of the reader.

A start command carries an absolute expiry (Unix milliseconds): a node removes the rule then on its own,
so a lost or never-sent stop cannot leave a cluster partitioned; an expiry further ahead than
`MAX_FAULT_DURATION_S` (plus `MAX_CLOCK_SKEW_S`) is refused. A node that starts reads the control topic
from its oldest retained record and replays it: expired starts are skipped, starts and stops of live
faults apply in order, so a node restarted in the middle of a partition rejoins it. A start whose fault
was already stopped is ignored (a replayed record cannot bring a fault back). Expiries are wall-clock
times: the injector's and the nodes' clocks must agree to within `MAX_CLOCK_SKEW_S` (NTP does that).

Rules and commands are plain data (`FaultRules` takes the time and the random stream as arguments), so
they are tested without a clock; `FaultyTransport` is the thin asynchronous driver around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dscore.core.codec import WIRE_VERSION, WIRE_VERSION_MAC, decode_value, encode_value, frame, unframe
from dscore.core.errors import ConfigError, DecodeError, LocalError, RemoteError
from dscore.core.ids import NodeId
from dscore.core.registry import message
from dscore.transport.base import Delivery, OutboundFrame, Transport

log = logging.getLogger(__name__)

#: the longest a transport fault may last (a start command's expiry is at most this far ahead)
MAX_FAULT_DURATION_S = 3600.0
#: how far the injector's clock may run ahead of a node's before a command is refused as too long
MAX_CLOCK_SKEW_S = 60.0
#: the longest delay a rule may put on a frame
MAX_DELAY_MS = 60_000
#: rules in force at one node; a start beyond it is refused (`too_many_rules`)
MAX_RULES = 64
#: ids of stopped faults a node remembers, so a replayed start cannot bring one back
MAX_REMEMBERED_STOPS = 4_096
#: names in one command (nodes, peers, groups' members)
MAX_NAMES = 256
#: the largest control record accepted
MAX_COMMAND_BYTES = 64 * 1024
#: frames held back by delays at one node; beyond it a frame to delay is dropped (`delay_overflow`)
DEFAULT_MAX_HELD_FRAMES = 10_000
#: control records applied per read of the control channel
_CONTROL_BATCH = 256
_CONTROL_RETRY_S = 1.0
#: how long `FaultyTransport.close` waits for its cancelled tasks
_CLOSE_WAIT_S = 5.0
_MAX_CONTROL_RETRY_S = 30.0


class FaultAction(enum.Enum):
    START = "start"
    STOP = "stop"


class FaultKind(enum.Enum):
    #: drop frames with a probability
    OMISSION = "omission"
    #: hold frames back for a time (sends only)
    DELAY = "delay"
    #: drop every frame between the groups
    PARTITION = "partition"


class Direction(enum.Enum):
    SEND = "send"
    RECEIVE = "receive"
    BOTH = "both"

    @property
    def sends(self) -> bool:
        return self is not Direction.RECEIVE

    @property
    def receives(self) -> bool:
        return self is not Direction.SEND


# -- the command ------------------------------------------------------------------------------------


@message("chaos.fault_command")
@dataclass(frozen=True, slots=True)
class FaultCommand:
    """Start or stop one transport fault on the nodes it names (see the module docstring).

    A stop needs only `fault_id` and `action`. A start of an omission or a delay affects the traffic of
    `nodes` (none: every node) with `peers` (none: every endpoint); a start of a partition cuts every
    node of one of `groups` off from the nodes of the other groups (a node in no group is untouched)."""

    fault_id: str
    action: FaultAction
    kind: FaultKind = FaultKind.OMISSION
    direction: Direction = Direction.SEND
    nodes: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()
    groups: tuple[tuple[str, ...], ...] = ()
    drop_probability: float = 0.0
    delay_ms: int = 0
    #: when the injector issued it, Unix milliseconds (for logs; expiry decides)
    issued_at_ms: int = 0
    #: when the rule ends by itself, Unix milliseconds
    expires_at_ms: int = 0


class FaultCommandError(RemoteError):
    """A control record decoded but describes no valid fault command."""

    reason = "invalid"


def command_problems(command: FaultCommand) -> list[str]:
    """What is wrong with a command, [] if nothing (the injector checks before it publishes, nodes check
    what they read)."""
    problems: list[str] = []
    if not 1 <= len(command.fault_id) <= 128:
        problems.append("fault_id must be 1-128 characters")
    if command.action is FaultAction.STOP:
        return problems
    names = [*command.nodes, *command.peers, *(n for g in command.groups for n in g)]
    if len(names) > MAX_NAMES or len(command.groups) > MAX_NAMES:
        problems.append(f"at most {MAX_NAMES} names in one command")
    if any(not 1 <= len(n) <= 63 for n in names):
        problems.append("endpoint ids must be 1-63 characters")
    if not math.isfinite(command.drop_probability) or not 0.0 <= command.drop_probability <= 1.0:
        problems.append(f"drop_probability must be in [0, 1], got {command.drop_probability!r}")
    if not 0 <= command.delay_ms <= MAX_DELAY_MS:
        problems.append(f"delay_ms must be in [0, {MAX_DELAY_MS}], got {command.delay_ms}")
    if command.expires_at_ms <= 0:
        problems.append("a start needs expires_at_ms (Unix milliseconds)")
    kind = command.kind
    if kind is FaultKind.OMISSION and command.drop_probability <= 0.0:
        problems.append("an omission needs drop_probability > 0")
    if kind is FaultKind.DELAY:
        if command.delay_ms <= 0:
            problems.append("a delay needs delay_ms > 0")
        if command.direction is not Direction.SEND:
            problems.append("a delay applies to sends only (direction=send)")
    if kind is FaultKind.PARTITION:
        members = [n for g in command.groups for n in g]
        if len(command.groups) < 2 or any(not g for g in command.groups):
            problems.append("a partition needs at least two non-empty groups")
        if len(set(members)) != len(members):
            problems.append("a node may be in one partition group only")
        if command.peers or command.nodes:
            problems.append("a partition names groups, not nodes or peers")
    elif command.groups:
        problems.append(f"groups are for partitions, not {kind.value}")
    return problems


def encode_command(command: FaultCommand, *, key: bytes | None) -> bytes:
    """A control record: the command in a codec frame, with an HMAC under the cluster key when given."""
    problems = command_problems(command)
    if problems:
        raise ConfigError("invalid fault command: " + "; ".join(problems))
    return frame(encode_value(command), key=key)


def decode_command(data: bytes, *, key: bytes | None, max_bytes: int = MAX_COMMAND_BYTES) -> FaultCommand:
    """Decode and check a control record; raises only `RemoteError` subclasses (`DecodeError`'s for bad
    bytes or a bad MAC, `FaultCommandError` for a well-formed message that is no valid command)."""
    if not isinstance(data, bytes):
        raise FaultCommandError(f"expected bytes, got {type(data).__name__}")
    value = decode_value(unframe(data, max_bytes, key=key))
    if type(value) is not FaultCommand:
        raise FaultCommandError(f"expected a fault command, got {type(value).__name__}")
    problems = command_problems(value)
    if problems:
        raise FaultCommandError("; ".join(problems))
    return value


# -- rules ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FaultRule:
    """One fault in force at one node."""

    fault_id: str
    kind: FaultKind
    direction: Direction
    #: the endpoints whose traffic it affects; None: every endpoint
    peers: frozenset[str] | None
    drop_probability: float
    delay_s: float
    #: Unix seconds
    expires_at_s: float

    @staticmethod
    def from_command(command: FaultCommand, node_id: NodeId) -> FaultRule | None:
        """The rule a start command puts in force at `node_id`, or None when it does not concern it."""
        if command.kind is FaultKind.PARTITION:
            mine = [g for g in command.groups if node_id in g]
            if not mine:
                return None
            others = frozenset(n for g in command.groups if g is not mine[0] for n in g)
            return FaultRule(
                command.fault_id, command.kind, Direction.BOTH, others, 1.0, 0.0, command.expires_at_ms / 1000
            )
        if command.nodes and node_id not in command.nodes:
            return None
        peers = frozenset(command.peers) - {node_id} if command.peers else None
        return FaultRule(
            command.fault_id,
            command.kind,
            command.direction,
            peers,
            command.drop_probability if command.kind is FaultKind.OMISSION else 0.0,
            command.delay_ms / 1000 if command.kind is FaultKind.DELAY else 0.0,
            command.expires_at_ms / 1000,
        )

    def affects(self, peer: str) -> bool:
        return self.peers is None or peer in self.peers


class CommandOutcome(enum.Enum):
    """What a node did with a valid command (the `result` label of its count)."""

    STARTED = "started"
    STOPPED = "stopped"
    #: a stop for a fault not in force here
    NOT_ACTIVE = "not_active"
    #: a start that names other nodes
    NOT_FOR_THIS_NODE = "not_for_this_node"
    #: a start whose expiry has passed (replayed from the topic after it ended)
    EXPIRED = "expired"
    #: a start of a fault already stopped (a replayed record)
    ALREADY_STOPPED = "already_stopped"
    #: a start whose expiry is further ahead than MAX_FAULT_DURATION_S allows
    EXPIRY_TOO_FAR = "expiry_too_far"
    #: MAX_RULES rules in force already
    TOO_MANY_RULES = "too_many_rules"


class FaultRules:
    """The rules in force at one node. Sans-I/O: every call is given the time (Unix seconds) and, when it
    draws, the random stream. Expired rules are removed at the first call that sees them expired."""

    def __init__(
        self, node_id: NodeId, *, max_rules: int = MAX_RULES, remembered_stops: int = MAX_REMEMBERED_STOPS
    ) -> None:
        if max_rules < 1 or remembered_stops < 1:
            raise ConfigError("max_rules and remembered_stops must be at least 1")
        self.node_id = node_id
        self._max_rules = max_rules
        self._rules: dict[str, FaultRule] = {}
        self._stopped: OrderedDict[str, None] = OrderedDict()
        self._remembered_stops = remembered_stops
        self._next_expiry = math.inf
        self._send_rules: tuple[FaultRule, ...] = ()
        self._receive_rules: tuple[FaultRule, ...] = ()
        #: rules that ended by expiry (not by a stop)
        self.expired = 0
        #: bumped on every change, so a driver can tell (e.g. to wake a waiter)
        self.version = 0

    @property
    def active(self) -> tuple[FaultRule, ...]:
        return tuple(self._rules.values())

    @property
    def has_send_rules(self) -> bool:
        return bool(self._send_rules)

    @property
    def has_receive_rules(self) -> bool:
        return bool(self._receive_rules)

    def apply(self, command: FaultCommand, now_s: float) -> CommandOutcome:
        """Carry out a valid command (`decode_command` checked it)."""
        self.expire(now_s)
        fault_id = command.fault_id
        if command.action is FaultAction.STOP:
            self._remember_stop(fault_id)
            return CommandOutcome.STOPPED if self.remove(fault_id) else CommandOutcome.NOT_ACTIVE
        if fault_id in self._stopped:
            return CommandOutcome.ALREADY_STOPPED
        if command.expires_at_ms / 1000 <= now_s:
            return CommandOutcome.EXPIRED
        if command.expires_at_ms / 1000 > now_s + MAX_FAULT_DURATION_S + MAX_CLOCK_SKEW_S:
            return CommandOutcome.EXPIRY_TOO_FAR
        rule = FaultRule.from_command(command, self.node_id)
        if rule is None:
            return CommandOutcome.NOT_FOR_THIS_NODE
        if fault_id not in self._rules and len(self._rules) >= self._max_rules:
            return CommandOutcome.TOO_MANY_RULES
        self.add(rule)
        return CommandOutcome.STARTED

    def add(self, rule: FaultRule) -> None:
        """Put a rule in force (replacing one with its id)."""
        if rule.fault_id not in self._rules and len(self._rules) >= self._max_rules:
            raise LocalError(f"{self._max_rules} fault rules in force already")
        self._rules[rule.fault_id] = rule
        self._changed()

    def remove(self, fault_id: str) -> bool:
        if self._rules.pop(fault_id, None) is None:
            return False
        self._changed()
        return True

    def clear(self) -> None:
        if self._rules:
            self._rules.clear()
            self._changed()

    def expire(self, now_s: float) -> int:
        """Remove the rules whose expiry has come; returns how many."""
        if now_s < self._next_expiry:
            return 0
        ended = [r.fault_id for r in self._rules.values() if r.expires_at_s <= now_s]
        for fault_id in ended:
            del self._rules[fault_id]
        self.expired += len(ended)
        self._changed()
        return len(ended)

    def on_send(self, destination: str, now_s: float, rng: random.Random) -> float | None:
        """None: drop the frame to `destination`; else hold it back this many seconds (0: send now).
        Every rule that applies is drawn from in order; the longest delay wins."""
        if not self._send_rules:
            return 0.0
        if now_s >= self._next_expiry:
            self.expire(now_s)
        delay_s = 0.0
        for rule in self._send_rules:
            if not rule.affects(destination):
                continue
            if _drops(rule.drop_probability, rng):
                return None
            delay_s = max(delay_s, rule.delay_s)
        return delay_s

    def on_receive(self, source: str, now_s: float, rng: random.Random) -> bool:
        """Whether to keep a delivery from `source`."""
        if not self._receive_rules:
            return True
        if now_s >= self._next_expiry:
            self.expire(now_s)
        return not any(r.affects(source) and _drops(r.drop_probability, rng) for r in self._receive_rules)

    def _remember_stop(self, fault_id: str) -> None:
        stopped = self._stopped
        stopped[fault_id] = None
        stopped.move_to_end(fault_id)
        while len(stopped) > self._remembered_stops:
            stopped.popitem(last=False)

    def _changed(self) -> None:
        rules = self._rules.values()
        self._send_rules = tuple(r for r in rules if r.direction.sends)
        self._receive_rules = tuple(r for r in rules if r.direction.receives and r.drop_probability > 0)
        self._next_expiry = min((r.expires_at_s for r in rules), default=math.inf)
        self.version += 1


def _drops(probability: float, rng: random.Random) -> bool:
    if probability >= 1.0:
        return True
    return probability > 0.0 and rng.random() < probability


def peek_source(data: bytes) -> str | None:
    """The `source` of an envelope frame (`dscore.core.codec`: a header, then a msgpack array of 10 whose
    first item is the source), read without checking CRC or MAC; None when it cannot be read."""
    if len(data) < 6:
        return None
    version = data[0]
    if version == WIRE_VERSION:
        at = 5
    elif version == WIRE_VERSION_MAC:
        at = 37
    else:
        return None
    if len(data) < at + 2 or data[at] != 0x9A:  # fixarray of 10
        return None
    head = data[at + 1]
    if 0xA0 <= head <= 0xBF:  # fixstr
        length, start = head - 0xA0, at + 2
    elif head == 0xD9 and len(data) > at + 2:  # str 8
        length, start = data[at + 2], at + 3
    else:
        return None
    raw = data[start : start + length]
    if len(raw) != length:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


# -- the control channel ----------------------------------------------------------------------------


class ControlSource(Protocol):
    """Where a node reads fault commands (records as bytes, untrusted)."""

    async def start(self) -> None: ...

    async def read(self, max_records: int) -> list[bytes]:
        """Wait for at least one record; return 1..max_records of them, oldest first."""
        ...

    async def close(self) -> None: ...


class MemoryControlChannel:
    """A control channel in one process (the embedded cluster, tests): a retained, bounded log every
    reader reads from its oldest record, like the Kafka topic."""

    def __init__(self, max_records: int = 10_000) -> None:
        self._records: deque[bytes] = deque(maxlen=max_records)
        self._base = 0
        self._waiters: list[asyncio.Future[None]] = []

    def publish(self, data: bytes) -> None:
        if len(self._records) == self._records.maxlen:
            self._base += 1
        self._records.append(data)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def source(self) -> _MemoryControlSource:
        return _MemoryControlSource(self)


class _MemoryControlSource:
    def __init__(self, channel: MemoryControlChannel) -> None:
        self._channel = channel
        self._next = 0
        self._closed = False

    async def start(self) -> None:
        self._next = self._channel._base

    async def read(self, max_records: int) -> list[bytes]:
        channel = self._channel
        while True:
            if self._closed:
                raise LocalError("control source is closed")
            self._next = max(self._next, channel._base)
            available = channel._base + len(channel._records) - self._next
            if available > 0:
                first = self._next - channel._base
                count = min(available, max_records)
                self._next += count
                return [channel._records[first + i] for i in range(count)]
            waiter = asyncio.get_running_loop().create_future()
            channel._waiters.append(waiter)
            await waiter

    async def close(self) -> None:
        self._closed = True


# -- the wrapper ------------------------------------------------------------------------------------


@dataclass(slots=True)
class FaultStats:
    """What the faults did at one node (exported by the node's metrics)."""

    #: frames this node did not send / deliveries it did not hand to the runtime, because of a rule
    dropped_sends: int = 0
    dropped_receives: int = 0
    #: frames held back by a delay
    delayed: int = 0
    #: frames dropped because `max_held_frames` were held back already
    delay_overflow: int = 0
    #: held-back frames discarded at close
    held_discarded: int = 0
    #: valid commands, by `CommandOutcome` value
    commands: dict[str, int] = field(default_factory=dict)
    #: control records refused, by reason (a `DecodeError` reason, `invalid`, `unavailable`)
    control_rejected: dict[str, int] = field(default_factory=dict)

    def count_command(self, outcome: CommandOutcome) -> None:
        self.commands[outcome.value] = self.commands.get(outcome.value, 0) + 1

    def reject(self, reason: str) -> None:
        self.control_rejected[reason] = self.control_rejected.get(reason, 0) + 1


class FaultyTransport:
    """A `Transport` that applies `FaultRules` to what passes through it (see the module docstring).

    `rng` draws the omissions (seed it: a seed replays which frames are lost); `clock` gives Unix
    seconds (expiries are wall-clock times shared with the injector); `control`, when given, is read by
    a task of this transport from `start` to `close`, and every command in it is checked against
    `auth_key` (the cluster key; None only for a cluster without authentication) and obeyed."""

    def __init__(
        self,
        inner: Transport,
        node_id: NodeId,
        *,
        rng: random.Random,
        clock: Callable[[], float] = time.time,
        control: ControlSource | None = None,
        auth_key: bytes | None = None,
        max_held_frames: int = DEFAULT_MAX_HELD_FRAMES,
        max_rules: int = MAX_RULES,
    ) -> None:
        if inner.node_id != node_id:
            raise ConfigError(f"FaultyTransport of {node_id!r} wraps the transport of {inner.node_id!r}")
        if max_held_frames < 1:
            raise ConfigError("max_held_frames must be at least 1")
        self.inner = inner
        self._node_id = node_id
        self.rules = FaultRules(node_id, max_rules=max_rules)
        self.fault_stats = FaultStats()
        self._rng = rng
        self._clock = clock
        self._control = control
        self._auth_key = auth_key
        self._max_held = max_held_frames
        #: frames held back, per destination, in the order they were sent: (due, loop time; frame)
        self._held: dict[str, deque[tuple[float, OutboundFrame]]] = {}
        self._held_count = 0
        self._drainers: dict[str, asyncio.Task[None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self._rules_changed = asyncio.Event()

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    @property
    def stats(self) -> object:
        """The inner transport's statistics (what the runtime's metrics read), if it has any."""
        return getattr(self.inner, "stats", None)

    @property
    def held_frames(self) -> int:
        return self._held_count

    @property
    def active_faults(self) -> int:
        """Rules in force now (`dscore.metrics.TransportFaultCollector` reads it)."""
        return len(self.rules.active)

    async def start(self, resume_after: Mapping[str, int]) -> Mapping[str, int]:
        ends = await self.inner.start(resume_after)
        if self._control is not None:
            self._reader = asyncio.get_running_loop().create_task(
                self._obey_control(self._control), name=f"dscore-faults-{self._node_id}-control"
            )
        return ends

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._reader, *self._drainers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: a client call that does not yield to cancellation must not hold a stop up
            await asyncio.wait(tasks, timeout=_CLOSE_WAIT_S)
        self.fault_stats.held_discarded += self._held_count
        self._held.clear()
        self._held_count = 0
        if self._control is not None:
            with contextlib.suppress(Exception):
                await self._control.close()
        await self.inner.close()

    # -- traffic ------------------------------------------------------------------------------------

    async def send(self, frames: Sequence[OutboundFrame]) -> None:
        if self._closed:
            raise LocalError(f"transport of {self._node_id} is closed")
        rules = self.rules
        if not rules.has_send_rules and not self._held:
            await self.inner.send(frames)
            return
        now_s = self._clock()
        rng = self._rng
        stats = self.fault_stats
        passing: list[OutboundFrame] = []
        for item in frames:
            delay_s = rules.on_send(item.destination, now_s, rng)
            if delay_s is None:
                stats.dropped_sends += 1
            elif delay_s > 0 or item.destination in self._held:
                self._hold(item, delay_s)
            else:
                passing.append(item)
        if passing:
            await self.inner.send(passing)

    def _hold(self, item: OutboundFrame, delay_s: float) -> None:
        stats = self.fault_stats
        if self._held_count >= self._max_held:
            stats.delay_overflow += 1
            return
        destination = item.destination
        loop = asyncio.get_running_loop()
        queue = self._held.get(destination)
        if queue is None:
            queue = self._held[destination] = deque()
        queue.append((loop.time() + delay_s, item))
        self._held_count += 1
        if delay_s > 0:
            stats.delayed += 1
        if destination not in self._drainers:
            self._drainers[destination] = loop.create_task(
                self._drain(destination, queue), name=f"dscore-faults-{self._node_id}-delay-{destination}"
            )

    async def _drain(self, destination: str, queue: deque[tuple[float, OutboundFrame]]) -> None:
        """Hand `destination`'s held frames to the inner transport as they fall due, in order."""
        loop = asyncio.get_running_loop()
        try:
            while queue:
                wait_s = queue[0][0] - loop.time()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)  # the delay itself
                now = loop.time()
                due: list[OutboundFrame] = []
                while queue and queue[0][0] <= now:
                    due.append(queue.popleft()[1])
                self._held_count -= len(due)
                if due:
                    await self.inner.send(due)
        except LocalError:
            pass  # the inner transport closed under us: what is held is lost, as a crash would lose it
        finally:
            if self._drainers.get(destination) is asyncio.current_task():
                del self._drainers[destination]
                if self._held.get(destination) is queue:
                    self._held_count -= len(queue)
                    self.fault_stats.held_discarded += len(queue)
                    del self._held[destination]

    async def receive(self, max_batch: int) -> list[Delivery]:
        rules = self.rules
        while True:
            batch = await self.inner.receive(max_batch)
            if not rules.has_receive_rules:
                return batch
            now_s = self._clock()
            rng = self._rng
            kept = []
            for delivery in batch:
                source = peek_source(delivery.data)
                if source is None or rules.on_receive(source, now_s, rng):
                    kept.append(delivery)
            self.fault_stats.dropped_receives += len(batch) - len(kept)
            if kept:
                return kept

    async def commit(self, positions: Mapping[str, int]) -> None:
        await self.inner.commit(positions)

    # -- commands -----------------------------------------------------------------------------------

    def obey(self, data: bytes) -> CommandOutcome | None:
        """Decode, check and carry out one control record; None (and counted by reason) if refused."""
        stats = self.fault_stats
        try:
            command = decode_command(data, key=self._auth_key)
        except (DecodeError, FaultCommandError) as error:
            stats.reject(error.reason)
            log.warning("%s: control record refused: %s", self._node_id, error)
            return None
        return self.apply(command)

    def apply(self, command: FaultCommand) -> CommandOutcome:
        """Carry out a checked command (`obey` for untrusted bytes)."""
        before = self.rules.version
        outcome = self.rules.apply(command, self._clock())
        self.fault_stats.count_command(outcome)
        if outcome in (CommandOutcome.STARTED, CommandOutcome.STOPPED):
            log.info("%s: fault %s %s", self._node_id, command.fault_id, outcome.value)
        if self.rules.version != before:
            self._rules_changed.set()
        return outcome

    async def wait_rules_changed(self, since: int | None = None) -> int:
        """Wait until the rules in force differ from version `since` (`rules.version`; default: now), and
        return the new version (tools, tests: pass the version read before checking a condition, and no
        change between the check and the wait is missed)."""
        if since is None:
            since = self.rules.version
        while self.rules.version == since:
            self._rules_changed.clear()
            await self._rules_changed.wait()
        return self.rules.version

    async def _obey_control(self, control: ControlSource) -> None:
        retry_s = _CONTROL_RETRY_S
        while True:
            try:
                await control.start()
                break
            except Exception as error:  # the broker may be away: the node runs on, without commands
                self.fault_stats.reject("unavailable")
                log.warning(
                    "%s: control channel unavailable (retry in %.0f s): %r", self._node_id, retry_s, error
                )
                await asyncio.sleep(retry_s)
                retry_s = min(2 * retry_s, _MAX_CONTROL_RETRY_S)
        while True:
            records = await control.read(_CONTROL_BATCH)
            for data in records:
                self.obey(data)


__all__ = [
    "MAX_CLOCK_SKEW_S",
    "MAX_FAULT_DURATION_S",
    "CommandOutcome",
    "ControlSource",
    "Direction",
    "FaultAction",
    "FaultCommand",
    "FaultCommandError",
    "FaultKind",
    "FaultRule",
    "FaultRules",
    "FaultStats",
    "FaultyTransport",
    "MemoryControlChannel",
    "command_problems",
    "decode_command",
    "encode_command",
    "peek_source",
]
