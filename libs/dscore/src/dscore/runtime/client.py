"""`KvClient`: a key-value client that speaks the wire client protocol, follows the leader from replies
alone, retries safely and records a checkable history.

`ClientEndpoint` is one client endpoint on a `Transport` (an inbox for replies, like a gateway's reply
topic). Many `KvClient`s share it: their requests are batched into one `ClientRequests` envelope per node
per event-loop turn, and responses are matched back by request id. An endpoint knows the nodes' ids (as an
etcd client knows its endpoints); who leads it learns from the responses (`NOT_LEADER` with a hint).

Each `KvClient` has its own session (Raft dissertation, section 6.3): it registers (a REGISTER committed
through the log returns its client id) before its first write, then numbers its writes `seq = 1, 2, ...`,
one at a time. A write keeps its `seq` across every retry, to whichever node, so the state machine's
sessions make it take effect at most once and a retry of an applied write returns the first answer.

Byzantine-tolerant protocols (PBFT): every replica answers, and with `reply_quorum=f + 1` an endpoint
hands a request's answer on only once f + 1 distinct nodes sent the same one.

Routing: a client sends to the node it believes leads; `NOT_LEADER` names the next guess; a missing hint,
`OVERLOADED` or an attempt without an answer moves on round-robin. Each operation has an overall
`op_timeout_s` and each attempt an `attempt_timeout_s`.

Every operation is recorded into a `dscore.check.HistoryRecorder` (Jepsen semantics), from the
`dscore.core.client_messages.Outcome` of the responses:

- `invoke` when issued; `ok` with the answer on `OK`;
- `fail` only when it certainly had no effect: a cas whose compare failed (`CAS_MISMATCH`), a write never
  proposed anywhere (every attempt was `NOT_LEADER` / `OVERLOADED`, or refused as `BAD_REQUEST`), a write
  whose session expired before any attempt could have applied it (the client registers again and retries
  it), or any read that got no answer;
- `info` when the client gives up on a write that may have been proposed (an attempt timed out or was
  answered `UNKNOWN`), or when its session expired after such an attempt: the process then continues under a
  fresh process id (a Jepsen rule: an indeterminate op stays open forever), and the next write uses the
  next `seq` (a late copy of the abandoned one is then refused as stale, never applied out of order).

History functions (model `kv` of `dscore.check`): `put` (value), `get` (value read), `append` (suffix),
`cas` (value `[expected, new]`); `delete` is recorded as `put` of nil, which the kv model reads as "".
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from dscore.check.edn import EdnValue
from dscore.check.history import HistoryRecorder
from dscore.core.client_messages import (
    ClientRequest,
    ClientRequests,
    ClientResponse,
    ClientResponses,
    Op,
    Outcome,
    ReadMode,
)
from dscore.core.codec import decode_envelope, encode_envelope
from dscore.core.envelope import EnvelopeFactory
from dscore.core.errors import ConfigError, DecodeError, LocalError
from dscore.core.ids import NodeId
from dscore.core.registry import constructor
from dscore.transport.base import OutboundFrame, Transport

#: build requests and the endpoint's own refusals without the frozen dataclasses' checks (hot path)
_new_request = constructor(ClientRequest)
_new_request_answer = constructor(ClientResponse)

#: completions kept by `ClientStats` (oldest dropped first)
MAX_COMPLETIONS_KEPT = 2_000_000
#: requests waiting for an answer on one endpoint; beyond it `call` refuses at once
MAX_OUTSTANDING_REQUESTS = 100_000
#: with `max_gather_s`, a node's next envelope waits at most this share of the answered envelope's round
#: trip: the wait scales with the stack's own latency (a fast stack waits little), and a request that
#: arrives when no answered client comes back is delayed by at most half a round trip
GATHER_SHARE_OF_ROUND_TRIP = 0.5


@dataclass(frozen=True, slots=True)
class ClientConfig:
    #: give up on an operation after this long (writes then record `info` or `fail`, reads `fail`)
    op_timeout_s: float = 5.0
    #: wait this long for one node's answer before trying the next
    attempt_timeout_s: float = 1.0
    #: pause after a round of refusals (no leader known), so an election is not flooded
    retry_backoff_s: float = 0.005

    def __post_init__(self) -> None:
        if not self.op_timeout_s > 0 or not self.attempt_timeout_s > 0 or self.retry_backoff_s < 0:
            raise ConfigError("client timeouts must be positive and the backoff non-negative")


class _Flight:
    """An envelope sent under `max_envelopes_in_flight`: its node, its requests still unanswered, how many
    it carried and when it left (loop time)."""

    __slots__ = ("left", "node", "sent_at", "size")

    def __init__(self, node: NodeId, size: int, sent_at: float) -> None:
        self.node = node
        self.left = size
        self.size = size
        self.sent_at = sent_at


class ClientEndpoint:
    """One client endpoint: its transport, batching of requests, matching of responses, timeouts.

    `nodes()` returns the ids of the nodes to talk to (it may change as the cluster's membership does).
    `first_request_id`: request ids count up from it. A process that reuses an endpoint id (a restarted
    gateway on a Kafka inbox) starts from a random point, so late replies to its predecessor's requests
    cannot match its own.
    """

    def __init__(
        self,
        transport: Transport,
        nodes: Callable[[], Sequence[NodeId]],
        *,
        key: bytes | None = None,
        sweep_interval_s: float = 0.005,
        max_batch: int = 4_096,
        first_request_id: int = 0,
        reply_quorum: int = 1,
        max_envelopes_in_flight: int = 0,
        max_gather_s: float = 0.0,
    ) -> None:
        if max_envelopes_in_flight < 0:
            raise ConfigError(
                f"max_envelopes_in_flight must be >= 0 (0: no limit), not {max_envelopes_in_flight}"
            )
        if not (math.isfinite(max_gather_s) and max_gather_s >= 0):
            raise ConfigError(f"max_gather_s must be a finite number >= 0 (0: off), not {max_gather_s}")
        if max_gather_s and not max_envelopes_in_flight:
            raise ConfigError("max_gather_s needs max_envelopes_in_flight (it gathers for the next envelope)")
        if max_envelopes_in_flight and reply_quorum > 1:
            raise ConfigError(
                "max_envelopes_in_flight needs reply_quorum 1 (a multicast is in several flights)"
            )
        self.transport = transport
        self.endpoint_id = transport.node_id
        self.nodes = nodes
        self._key = key
        self._factory = EnvelopeFactory(self.endpoint_id, 1)
        self._sweep_interval_s = sweep_interval_s
        self._max_batch = max_batch
        self._next_request_id = first_request_id
        #: request id -> what to call with its response (None: no answer in time)
        self._waiting: dict[int, Callable[[ClientResponse | None], object]] = {}
        #: request id -> the node it was sent to (a multicast: the first), while it waits; see `expire`
        self._node_of: dict[int, NodeId] = {}
        self._deadlines: list[tuple[float, int]] = []  # heap of (deadline, request id)
        #: the sweep's timer and when it fires (inf: none armed); see `_sweep`
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._sweep_at = math.inf
        self._outbox: dict[NodeId, list[ClientRequest]] = {}
        self._outbox_ready = asyncio.Event()
        #: envelopes a node may have unanswered before the next waits (0: no limit); see `_send`
        self.max_envelopes_in_flight = max_envelopes_in_flight
        #: per node, its envelopes with a request still unanswered
        self._flights: dict[NodeId, int] = {}
        #: request id -> the envelope it went in (shared by the envelope's requests)
        self._flight_of: dict[int, _Flight] = {}
        #: the longest a node's next envelope waits to gather its answered clients' next requests (0: off);
        #: see `_send`
        self.max_gather_s = max_gather_s
        #: node -> (requests its next envelope waits for, until when): set when an envelope is answered
        self._gathers: dict[NodeId, tuple[int, float]] = {}
        #: envelopes sent full (their gather reached its count) and sent when their wait ran out
        self.gathers_filled = 0
        self.gathers_expired = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._loop_time: Callable[[], float] = time.monotonic
        #: responses that could not be decoded or matched, by reason
        self.rejected: dict[str, int] = {}
        #: matching responses from distinct nodes a request needs (PBFT: f + 1, as every replica answers;
        #: one otherwise); until then they are counted here: request id -> answer -> nodes
        self.reply_quorum = reply_quorum
        self._votes: dict[int, dict[tuple[object, ...], set[str]]] = {}

    async def start(self) -> None:
        await self.transport.start({})
        loop = asyncio.get_running_loop()
        self._loop_time = loop.time
        name = self.endpoint_id
        self._tasks = [
            loop.create_task(self._read(), name=f"dscore-client-read-{name}"),
            loop.create_task(self._send(), name=f"dscore-client-send-{name}"),
        ]

    async def close(self) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        self._sweep_at = -math.inf  # a closed endpoint arms no timer
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        waiting = self._waiting
        self._waiting = {}
        self._node_of = {}
        for answer in waiting.values():
            answer(None)
        await self.transport.close()

    def loop_time(self) -> float:
        """The clock of timeouts and flights: the event loop's once started (`time.monotonic` before)."""
        return self._loop_time()

    async def __aenter__(self) -> ClientEndpoint:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def call(
        self,
        node: NodeId,
        op: Op,
        key: str = "",
        *,
        value: str | None = None,
        expected: str | None = None,
        client_id: int = 0,
        seq: int = 0,
        read_mode: ReadMode = ReadMode.LINEARIZABLE,
        timeout_s: float,
        to_all: bool = False,
    ) -> asyncio.Future[ClientResponse | None]:
        """Send one request to `node`; the future resolves to its response, or None if none came within
        `timeout_s` (the request may still take effect). With `to_all`, the same request (one request id)
        goes to every node, `node` first: a Byzantine-tolerant client's retry (Castro and Liskov, section
        4.1: a faulty primary may have dropped it; the backups forward it and start their view-change
        timers), answered once `reply_quorum` nodes sent the same answer."""
        future: asyncio.Future[ClientResponse | None] = asyncio.get_running_loop().create_future()

        def answer(response: ClientResponse | None) -> None:
            if not future.done():
                future.set_result(response)

        if to_all:
            nodes = (node, *(n for n in self.nodes() if n != node))
            self.multicast(nodes, op, key, value, expected, client_id, seq, read_mode, timeout_s, answer)
        else:
            self.send(node, op, key, value, expected, client_id, seq, read_mode, timeout_s, answer)
        return future

    def send(  # noqa: PLR0917 (positional on purpose: the hot path of a load generator)
        self,
        node: NodeId,
        op: Op,
        key: str,
        value: str | None,
        expected: str | None,
        client_id: int,
        seq: int,
        read_mode: ReadMode,
        timeout_s: float,
        answer: Callable[[ClientResponse | None], object],
    ) -> None:
        """`call` without a future: `answer(response)` is called with the response, or with None if none
        came within `timeout_s`. For load generators and gateways that keep many requests in flight
        (no task and no future per request)."""
        if len(self._waiting) >= MAX_OUTSTANDING_REQUESTS:
            answer(_new_request_answer(0, Outcome.OVERLOADED, None, None, 0, "client endpoint is full"))
            return
        self._next_request_id += 1
        request_id = self._next_request_id
        self._waiting[request_id] = answer
        self._node_of[request_id] = node
        deadline = self._loop_time() + timeout_s
        heapq.heappush(self._deadlines, (deadline, request_id))
        if deadline < self._sweep_at:
            self._arm_sweep(deadline)
        self._enqueue(node, _new_request(request_id, op, key, value, expected, client_id, seq, read_mode))

    def _enqueue(self, node: NodeId, request: ClientRequest) -> None:
        """Queue `request` for `node`'s next envelope (one per node per event-loop turn)."""
        queue = self._outbox.get(node)
        if queue is None:
            self._outbox[node] = queue = [request]
            self._outbox_ready.set()
        else:
            queue.append(request)
        if self._gathers:
            gather = self._gathers.get(node)
            if gather is not None and len(queue) >= gather[0]:
                self._outbox_ready.set()  # gathered: it leaves now

    def multicast(  # noqa: PLR0917 (the same arguments as `send`)
        self,
        nodes: Sequence[NodeId],
        op: Op,
        key: str,
        value: str | None,
        expected: str | None,
        client_id: int,
        seq: int,
        read_mode: ReadMode,
        timeout_s: float,
        answer: Callable[[ClientResponse | None], object],
    ) -> None:
        """`send` of one request (one request id) to each of `nodes`; `answer` is called once, with the
        first answer `reply_quorum` nodes agree on, or None after `timeout_s`."""
        if not nodes:
            raise LocalError("a multicast needs at least one node")
        if self.max_envelopes_in_flight:
            raise LocalError("a multicast request travels in several envelopes: no max_envelopes_in_flight")
        before = self._next_request_id
        self.send(nodes[0], op, key, value, expected, client_id, seq, read_mode, timeout_s, answer)
        if self._next_request_id == before:
            return  # refused at once (the endpoint is full): answered already
        request = self._outbox[nodes[0]][-1]
        for node in nodes[1:]:
            self._enqueue(node, request)

    async def _send(self) -> None:
        """One envelope per node per event-loop turn, or, with `max_envelopes_in_flight`, only while the
        node has fewer envelopes unanswered: requests wait in the outbox for the next envelope, so under
        load a leader gets fewer, fuller envelopes (each costs it a round of appends, saves and
        acknowledgements, whatever it carries), and a single client's request still leaves at once.

        With `max_gather_s` too, a node's next envelope after an answered envelope of several requests
        waits (in the outbox) until it holds as many requests as were held plus as many as were answered,
        or for at most `GATHER_SHARE_OF_ROUND_TRIP` of the answered envelope's round trip (never more
        than `max_gather_s`). Why: closed-loop clients answered by envelope k send their next requests
        only after envelope k+1 left with the held ones; without the wait they ride in k+2, and the
        clients split into two groups that take turns, each envelope half full. Gathering merges them:
        fuller envelopes, fewer rounds per write. A lone client's envelope (one request) never waits."""
        ready = self._outbox_ready
        wrap = self._factory.wrap
        key = self._key
        limit = self.max_envelopes_in_flight
        flights = self._flights
        flight_of = self._flight_of
        waiting = self._waiting
        gathers = self._gathers
        loop_time = self._loop_time
        while True:
            await ready.wait()
            ready.clear()
            outbox = self._outbox
            self._outbox = {}
            frames = []
            now = loop_time()
            for node, queued in outbox.items():
                if limit and flights.get(node, 0) >= limit:
                    self._outbox[node] = queued  # held: sent when one of its envelopes is answered
                    continue
                if gathers:
                    gather = gathers.get(node)
                    if gather is not None:
                        if len(queued) < gather[0] and now < gather[1]:
                            self._outbox[node] = queued  # gathering: sent when full or at gather[1]
                            continue
                        del gathers[node]
                        if len(queued) >= gather[0]:
                            self.gathers_filled += 1
                        else:
                            self.gathers_expired += 1
                # A request whose deadline passed while it was held was answered None already: it is not
                # sent (in a flight nothing would ever land it, and the node's next envelope would wait
                # for it forever).
                requests = [r for r in queued if r.request_id in waiting] if limit else queued
                for start in range(0, len(requests), self._max_batch):
                    chunk = tuple(requests[start : start + self._max_batch])
                    frames.append(
                        OutboundFrame(node, encode_envelope(wrap(node, ClientRequests(chunk)), key=key))
                    )
                    if limit:
                        flight = _Flight(node, len(chunk), now)
                        for request in chunk:
                            flight_of[request.request_id] = flight
                        flights[node] = flights.get(node, 0) + 1
            await self.transport.send(frames)

    def _landed(self, request_id: int, *, answered: bool) -> None:
        """A request is answered or timed out: its envelope leaves the flight once all its requests have.
        An envelope of several requests, the last of them answered, starts the node's gather (`_send`)."""
        flight = self._flight_of.pop(request_id, None)
        if flight is None:
            return
        flight.left -= 1
        if flight.left == 0:
            node = flight.node
            self._flights[node] -= 1
            if answered and flight.size > 1 and self.max_gather_s:
                now = self._loop_time()
                wait_s = min(self.max_gather_s, GATHER_SHARE_OF_ROUND_TRIP * (now - flight.sent_at))
                if wait_s > 0:
                    self._gathers[node] = (len(self._outbox.get(node, ())) + flight.size, now + wait_s)
                    # A wake-up when the wait runs out; a stale one (the envelope left full) costs one
                    # pass of `_send` that finds nothing to do.
                    asyncio.get_running_loop().call_at(now + wait_s, self._outbox_ready.set)
            if node in self._outbox:
                self._outbox_ready.set()

    async def _read(self) -> None:
        receive = self.transport.receive
        waiting = self._waiting
        node_of = self._node_of
        flight_of = self._flight_of
        key = self._key
        while True:
            for delivery in await receive(4_096):
                try:
                    envelope = decode_envelope(delivery.data, key=key)
                except DecodeError as error:
                    self._reject(error.reason)
                    continue
                content = envelope.content
                if type(content) is not ClientResponses or envelope.destination != self.endpoint_id:
                    self._reject("unexpected")
                    continue
                for response in content.responses:
                    if self.reply_quorum > 1 and not self._believed(envelope.source, response):
                        continue
                    answer = waiting.pop(response.request_id, None)
                    node_of.pop(response.request_id, None)
                    if answer is None:
                        self._reject("late")  # answered after its attempt timed out, or a redelivery
                    else:
                        if flight_of:
                            self._landed(response.request_id, answered=True)
                        answer(response)

    def _arm_sweep(self, when: float) -> None:
        """Run `_sweep` at `when` (a deadline earlier than the armed one, or the next one)."""
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
        self._sweep_at = when
        self._sweep_timer = asyncio.get_running_loop().call_at(when, self._sweep)

    def _sweep(self) -> None:
        """Answer None to the requests whose deadline passed, then arm the timer for the earliest deadline
        of a request still waiting (at least `sweep_interval_s` on, so timeouts close together are
        answered together). A timer, not a task polling every `sweep_interval_s`: an endpoint with
        nothing outstanding never wakes, and a loaded one wakes about once per attempt timeout (entries
        of answered requests are dropped on the way), not hundreds of times a second."""
        self._sweep_timer = None
        self._sweep_at = math.inf
        now = self._loop_time()
        deadlines = self._deadlines
        waiting = self._waiting
        while deadlines and (deadlines[0][0] <= now or deadlines[0][1] not in waiting):
            _, request_id = heapq.heappop(deadlines)
            answer = waiting.pop(request_id, None)
            self._node_of.pop(request_id, None)
            self._votes.pop(request_id, None)
            if answer is not None:
                self._landed(request_id, answered=False)
                answer(None)
        if len(deadlines) > 2 * len(waiting) + 4_096:  # drop answered requests' deadlines
            self._deadlines = deadlines = [d for d in deadlines if d[1] in waiting]
            heapq.heapify(deadlines)
        if deadlines:
            self._arm_sweep(max(deadlines[0][0], now + self._sweep_interval_s))

    def expire(self, node: NodeId) -> int:
        """Answer None now to every request waiting on `node` (sent, or held for its next envelope), as
        if its timeout had passed; returns how many. For a caller that learned `node` is silent (it
        answered nothing for longer than it should) and retries elsewhere, instead of waiting out each
        attempt's timeout. A late answer from `node` is then counted `late`, like any."""
        expired = [request_id for request_id, to in self._node_of.items() if to == node]
        for request_id in expired:
            del self._node_of[request_id]
            answer = self._waiting.pop(request_id, None)
            self._votes.pop(request_id, None)
            if answer is not None:
                self._landed(request_id, answered=False)
                answer(None)
        return len(expired)

    def _believed(self, source: str, response: ClientResponse) -> bool:
        """Count one node's answer; True once `reply_quorum` nodes sent the same one."""
        request_id = response.request_id
        if request_id not in self._waiting:
            return True  # answered or timed out: counted as late below
        by_answer = self._votes.setdefault(request_id, {})
        voters = by_answer.setdefault((response.outcome, response.value, response.client_id), set())
        voters.add(source)
        if len(voters) < self.reply_quorum:
            return False
        del self._votes[request_id]
        return True

    def _reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


class OpOutcome(enum.Enum):
    """What an operation's history record says: Jepsen's three completions."""

    OK = "ok"
    #: certainly had no effect
    FAIL = "fail"
    #: may or may not have taken effect
    UNKNOWN = "info"


@dataclass(frozen=True, slots=True)
class OpResult:
    outcome: OpOutcome
    #: the value read; for a failed cas, the value found instead of the expected one
    value: str | None = None
    #: the last response's outcome name or "timeout" (None when OK)
    error: str | None = None
    #: the node that answered (None if none did)
    node_id: NodeId | None = None
    latency_s: float = 0.0
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome is OpOutcome.OK


@dataclass(frozen=True, slots=True)
class Completion:
    """One finished operation, for throughput, latency, availability and failover figures."""

    time_s: float
    latency_s: float
    outcome: OpOutcome
    f: str
    node_id: NodeId | None
    #: why it failed or is unknown (`CAS_MISMATCH`, `timeout`, `NOT_LEADER`, ...)
    error: str | None = None


class ClientStats:
    """Completions of every client that shares it (bounded; the oldest are dropped first)."""

    __slots__ = ("completions",)

    def __init__(self, max_kept: int = MAX_COMPLETIONS_KEPT) -> None:
        self.completions: deque[Completion] = deque(maxlen=max_kept)

    def ok_times(self) -> list[float]:
        return [c.time_s for c in self.completions if c.outcome is OpOutcome.OK]

    def latencies_s(self, outcome: OpOutcome = OpOutcome.OK) -> list[float]:
        return [c.latency_s for c in self.completions if c.outcome is outcome]


class KvOps(Protocol):
    """What a workload's client does: `KvClient` on the wire protocol, and
    `dscore.gateway_client.GatewayClient` through a gateway's HTTP API."""

    name: str

    async def put(self, key: str, value: str) -> OpResult: ...

    async def append(self, key: str, suffix: str) -> OpResult: ...

    async def cas(self, key: str, expected: str | None, new: str) -> OpResult: ...

    async def get(self, key: str) -> OpResult: ...


class KvClient:
    def __init__(
        self,
        endpoint: ClientEndpoint,
        name: str,
        *,
        config: ClientConfig | None = None,
        history: HistoryRecorder | None = None,
        process: int = 0,
        process_stride: int = 1,
        stats: ClientStats | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.endpoint = endpoint
        #: a name for logs and unique values; the session id is `client_id`
        self.name = name
        self.config = config or ClientConfig()
        self.history = history
        #: the history process id; replaced by `process + process_stride` after an indeterminate op
        self.process = process
        self._process_stride = process_stride
        self.stats = stats
        #: the session (0: not registered yet)
        self.client_id = 0
        self.seq = 1
        self._misses = 0
        nodes = endpoint.nodes()
        self._target = (rng or random.Random(name)).randrange(len(nodes)) if nodes else 0
        self._leader_guess: NodeId | None = None

    # -- operations ---------------------------------------------------------------------------------

    async def put(self, key: str, value: str) -> OpResult:
        return await self._write("put", key, value, Op.PUT, value=value)

    async def append(self, key: str, suffix: str) -> OpResult:
        return await self._write("append", key, suffix, Op.APPEND, value=suffix)

    async def cas(self, key: str, expected: str | None, new: str) -> OpResult:
        return await self._write("cas", key, (expected, new), Op.CAS, value=new, expected=expected)

    async def delete(self, key: str) -> OpResult:
        return await self._write("put", key, None, Op.DELETE)

    async def get(self, key: str) -> OpResult:
        loop = asyncio.get_running_loop()
        op_id = self.history.invoke(self.process, "get", key=key) if self.history is not None else -1
        start = loop.time()
        deadline = start + self.config.op_timeout_s
        attempts = 0
        last_error = "no node answered"
        while (remaining := deadline - loop.time()) > 0:
            node = self._node()
            attempts += 1
            response = await self.endpoint.call(
                node, Op.GET, key, timeout_s=min(self.config.attempt_timeout_s, remaining)
            )
            if response is None:
                last_error = "timeout"
                await self._next_node(False)
                continue
            if response.outcome is Outcome.OK:
                self._answered(node)
                if self.history is not None:
                    self.history.ok(op_id, response.value)
                return self._done(
                    OpResult(OpOutcome.OK, response.value, None, node, loop.time() - start, attempts), "get"
                )
            last_error = response.outcome.name
            await self._refused(node, response)
        if self.history is not None:
            self.history.fail(op_id)
        return self._done(
            OpResult(OpOutcome.FAIL, None, last_error, None, loop.time() - start, attempts), "get"
        )

    async def _write(
        self,
        f: str,
        key: str,
        history_value: EdnValue,
        op: Op,
        *,
        value: str | None = None,
        expected: str | None = None,
    ) -> OpResult:
        loop = asyncio.get_running_loop()
        history = self.history
        op_id = history.invoke(self.process, f, key=key, value=history_value) if history is not None else -1
        start = loop.time()
        deadline = start + self.config.op_timeout_s
        attempts = 0
        #: an attempt of this op (with the current session and seq) may have been applied
        maybe_applied = False
        last_error = "no node answered"
        while (remaining := deadline - loop.time()) > 0:
            if self.client_id == 0 and not await self._register(deadline):
                last_error = "could not register"
                continue
            node = self._node()
            attempts += 1
            response = await self.endpoint.call(
                node,
                op,
                key,
                value=value,
                expected=expected,
                client_id=self.client_id,
                seq=self.seq,
                timeout_s=min(self.config.attempt_timeout_s, remaining),
            )
            latency_s = loop.time() - start
            if response is None:
                maybe_applied = True
                last_error = "timeout"
                await self._next_node(False)
                continue
            outcome = response.outcome
            if outcome is Outcome.OK:
                self._answered(node)
                self.seq += 1
                if history is not None:
                    history.ok(op_id)
                return self._done(OpResult(OpOutcome.OK, response.value, None, node, latency_s, attempts), f)
            if outcome is Outcome.CAS_MISMATCH:
                self._answered(node)
                self.seq += 1
                if history is not None:
                    history.fail(op_id)
                return self._done(
                    OpResult(OpOutcome.FAIL, response.value, outcome.name, node, latency_s, attempts), f
                )
            last_error = outcome.name
            if outcome is Outcome.UNKNOWN:
                maybe_applied = True
                await self._refused(node, response)
                continue
            if outcome is Outcome.SESSION_EXPIRED:
                self.client_id = 0  # register again
                self.seq = 1
                if not maybe_applied:
                    continue  # this op certainly did nothing yet: retry it in the new session
                return self._done(self._indeterminate(op_id, outcome.name, node, latency_s, attempts), f)
            if outcome is Outcome.BAD_REQUEST:
                # Refused by the state machine: no effect of this copy. A client of this module never
                # reuses a seq for another op, so this is a malformed op (or a bug): do not retry it.
                self.seq += 1
                if maybe_applied:
                    return self._done(
                        self._indeterminate(op_id, response.error, node, latency_s, attempts), f
                    )
                if history is not None:
                    history.fail(op_id)
                return self._done(
                    OpResult(OpOutcome.FAIL, None, response.error, node, latency_s, attempts), f
                )
            await self._refused(node, response)  # NOT_LEADER, OVERLOADED: not proposed
        latency_s = loop.time() - start
        if not maybe_applied:
            if history is not None:
                history.fail(op_id)
            return self._done(OpResult(OpOutcome.FAIL, None, last_error, None, latency_s, attempts), f)
        self.seq += 1  # a late copy of the abandoned seq is then stale, never applied out of order
        return self._done(self._indeterminate(op_id, last_error, None, latency_s, attempts), f)

    async def _register(self, deadline: float) -> bool:
        loop = asyncio.get_running_loop()
        while (remaining := deadline - loop.time()) > 0:
            node = self._node()
            response = await self.endpoint.call(
                node, Op.REGISTER, timeout_s=min(self.config.attempt_timeout_s, remaining)
            )
            if response is None:
                await self._next_node(False)
                continue
            if response.outcome is Outcome.OK and response.client_id > 0:
                self._answered(node)
                self.client_id = response.client_id
                self.seq = 1
                return True
            await self._refused(node, response)
        return False

    # -- bookkeeping --------------------------------------------------------------------------------

    def _indeterminate(
        self, op_id: int, error: str | None, node: NodeId | None, latency_s: float, attempts: int
    ) -> OpResult:
        if self.history is not None:
            self.history.info(op_id)
            self.process += self._process_stride
        return OpResult(OpOutcome.UNKNOWN, None, error, node, latency_s, attempts)

    def _done(self, result: OpResult, f: str) -> OpResult:
        if self.stats is not None:
            now = asyncio.get_running_loop().time()
            self.stats.completions.append(
                Completion(now, result.latency_s, result.outcome, f, result.node_id, result.error)
            )
        return result

    # -- routing ------------------------------------------------------------------------------------

    def _node(self) -> NodeId:
        nodes = self.endpoint.nodes()
        if not nodes:
            raise LocalError("the client knows no node to talk to")
        guess = self._leader_guess
        if guess is not None and guess in nodes:
            return guess
        self._leader_guess = None
        return nodes[self._target % len(nodes)]

    def _answered(self, node: NodeId) -> None:
        self._misses = 0
        self._leader_guess = node

    async def _next_node(self, backoff: bool) -> None:
        self._leader_guess = None
        nodes = self.endpoint.nodes()
        self._target = (self._target + 1) % max(1, len(nodes))
        await self._missed(backoff)

    async def _refused(self, node: NodeId, response: ClientResponse) -> None:
        hint = response.leader_hint
        if response.outcome is Outcome.OVERLOADED:
            await self._next_node(True)
        elif hint is not None and hint != node and hint in self.endpoint.nodes():
            self._leader_guess = hint
            await self._missed(False)
        else:
            await self._next_node(False)

    async def _missed(self, backoff: bool) -> None:
        # Refusals come back fast; after a full round of them (an election is under way, or hints point
        # at a dead leader) pause, so the client never floods the cluster.
        self._misses += 1
        if backoff or self._misses >= len(self.endpoint.nodes()):
            self._misses = 0
            await asyncio.sleep(self.config.retry_backoff_s)


async def mixed_workload(
    client: KvOps,
    keys: Sequence[str],
    rng: random.Random,
    keep_going: Callable[[], bool],
    *,
    think_s: float = 0.0,
) -> None:
    """Jepsen-style random operations on `keys` while `keep_going()`: 35% get, 25% put, 20% append, 20%
    cas from the value this client last saw. Written values are unique (`client.n`), which keeps the
    history checkable; `think_s` > 0 pauses uniformly in [0, think_s] between operations."""
    last_seen: dict[str, str | None] = {}
    n = 0
    while keep_going():
        n += 1
        key = rng.choice(keys)
        token = f"{client.name}.{n}"
        draw = rng.random()
        if draw < 0.35:
            result = await client.get(key)
            if result.ok:
                last_seen[key] = result.value
        elif draw < 0.6:
            await client.put(key, token)
        elif draw < 0.8:
            await client.append(key, token + ";")
        else:
            result = await client.cas(key, last_seen.get(key), token)
            last_seen[key] = token if result.ok else result.value
        if think_s:
            await asyncio.sleep(rng.uniform(0, think_s))
