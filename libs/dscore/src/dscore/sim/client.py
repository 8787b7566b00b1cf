"""Simulated clients: they run a key-value workload against the cluster and record its history.

A simulated client speaks the same wire protocol as every client (`dscore.core.client_messages`): it
registers a session (a REGISTER committed through the log) before its first write, numbers its writes
`seq = 1, 2, ...`, one operation at a time, and finds the leader from the responses. Requests and
responses cross the simulated network like any message, so they are lost, delayed, duplicated and
corrupted too.

Each operation is recorded in a `dscore.check.HistoryRecorder` (the kv model), from the `Outcome`s of the
responses, with the same rules as `dscore.runtime.client.KvClient`:

- `invoke` when the operation starts; `ok` on `OK`;
- `fail` when it certainly did not take effect: `CAS_MISMATCH`; a write refused (`BAD_REQUEST`) before any
  attempt could have applied it; a read that got no answer before the client gave up;
- `info` when a write may or may not have taken effect (an attempt went unanswered or was answered
  `UNKNOWN`, then the client gave up or its session expired); it then continues as a fresh history
  process, Jepsen style.

Byzantine-tolerant protocols (PBFT): with `reply_quorum > 1` every replica answers, and the client takes
an answer only once `reply_quorum` (f + 1) distinct replicas sent the same one (so at least one correct
replica vouches for it); a retry goes to every replica, as the paper's client broadcasts (section 4.1).

Retries: an unanswered request is sent again after `request_timeout_ticks` to another node with the same
`(client_id, seq)`; `NOT_LEADER` redirects to the hinted node; `SESSION_EXPIRED` makes the client register
again (and retry the operation in the new session if no earlier attempt could have applied it).

`SESSION_EXPIRED` says the session was gone when *that copy* of a request was applied; it proves the
operation did nothing only if no other copy could have been applied before the session was evicted (a
session never comes back, so any copy applied later is refused too). So it counts only for a request
of the current session (a late answer about an earlier session says nothing about the attempt in this
one), and only while the network cannot duplicate requests: with duplication on, one copy may apply,
the session be evicted by other clients' registrations (few `max_sessions`), and the duplicate then
answer `SESSION_EXPIRED`; the operation is then indeterminate (`info`), as after a timeout.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from dscore.check import HistoryRecorder
from dscore.core.client_messages import (
    ClientRequest,
    ClientRequests,
    ClientResponse,
    ClientResponses,
    Op,
    Outcome,
)
from dscore.core.codec import decode_envelope, encode_envelope
from dscore.core.envelope import Envelope, EnvelopeFactory
from dscore.core.errors import DecodeError
from dscore.core.ids import NodeId
from dscore.sim.config import WorkloadConfig


class ClientContext(Protocol):
    """What a simulated client needs from the simulation around it."""

    @property
    def now_us(self) -> int: ...

    @property
    def tick_us(self) -> int: ...

    @property
    def accepting_ops(self) -> bool: ...

    @property
    def faults_active(self) -> bool: ...

    @property
    def client_count(self) -> int: ...

    @property
    def requests_may_duplicate(self) -> bool:
        """Whether the network may deliver a request twice (then a copy may apply unseen)."""
        ...

    def transmit(self, source: str, destination: str, data: bytes, envelope: Envelope | None) -> None: ...

    def schedule_client_timer(self, client_index: int, delay_us: int, token: int) -> None: ...

    def trace(self, line: str) -> None: ...

    def count(self, name: str, amount: int = 1) -> None: ...


#: low bits of a request id that number the requests of one operation
_ATTEMPT_BITS = 24
#: answers that are true whichever attempt of the operation they answer
_DEFINITE = frozenset({Outcome.OK, Outcome.CAS_MISMATCH, Outcome.BAD_REQUEST, Outcome.SESSION_EXPIRED})


@dataclass(slots=True)
class _Operation:
    op_id: int
    f: str
    op: Op
    key: str
    value: str | None
    expected: str | None
    history_value: str | tuple[str | None, str] | None
    history_id: int
    invoked_us: int
    target: NodeId
    attempts: int = 0
    #: an attempt with the current session and seq may have been applied
    maybe_applied: bool = False
    #: waiting for a REGISTER to answer before sending the operation
    registering: bool = False
    #: the last request sent has not been answered yet
    awaiting: bool = False
    #: requests sent for this operation (attempts and registrations), numbering their request ids
    sent: int = 0
    #: the number of the first request sent in the current session (earlier ones used another)
    session_from: int = 0

    @property
    def is_write(self) -> bool:
        return self.op is not Op.GET


@dataclass(frozen=True, slots=True)
class OpTiming:
    """When one operation was invoked and completed (virtual microseconds), how, and which replica's
    answer decided it (None unless ok). For figures such as latency and failover (`dscore compare`)."""

    invoked_us: int
    completed_us: int
    #: "ok", "fail" or "info"
    outcome: str
    is_write: bool
    answered_by: NodeId | None


class SimClient:
    """One client process; driven by the simulator through `start`, `on_timer` and `receive`."""

    def __init__(
        self,
        ctx: ClientContext,
        index: int,
        rng: random.Random,
        workload: WorkloadConfig,
        nodes: tuple[NodeId, ...],
        *,
        recorder: HistoryRecorder,
        auth_key: bytes | None = None,
        reply_quorum: int = 1,
    ) -> None:
        self.ctx = ctx
        self.index = index
        self.name = f"c{index}"
        self.rng = rng
        self.workload = workload
        self.nodes = nodes
        self.recorder = recorder
        self._key = auth_key
        self.factory = EnvelopeFactory(self.name, incarnation=1)
        self.process = index
        self.generation = 0
        #: the session (0: not registered)
        self.client_id = 0
        self.seq = 1
        self.next_op_id = 0
        self.op: _Operation | None = None
        self.timer_token = 0
        self.leader_guess: NodeId | None = None
        self.last_seen: dict[str, str | None] = {}
        kinds = [kind for kind, weight in workload.mix if weight > 0]
        self._kinds = kinds
        self._weights = [weight for _, weight in workload.mix if weight > 0]
        self.invoked = self.completed_ok = self.completed_fail = self.completed_info = 0
        #: matching answers from distinct replicas needed before one is believed (1: the leader's)
        self.reply_quorum = reply_quorum
        #: answers of the current operation's requests by request id: answer -> replicas that sent it
        self._votes: dict[int, dict[tuple[object, ...], set[NodeId]]] = {}
        #: every finished operation, in completion order (one per operation, like the history)
        self.timings: list[OpTiming] = []

    @property
    def idle(self) -> bool:
        return self.op is None

    # -- driven by the simulator --------------------------------------------------------------------

    def start(self) -> None:
        self._think()

    def on_timer(self, token: int) -> None:
        if token != self.timer_token:
            return  # superseded by a later timer
        op = self.op
        if op is None:
            if self.ctx.accepting_ops:
                self._begin()
            return
        if op.awaiting and not op.registering and op.is_write:
            op.maybe_applied = True  # the attempt went unanswered: it may have been applied
        ctx = self.ctx
        if ctx.faults_active and ctx.now_us - op.invoked_us >= self.workload.give_up_ticks * ctx.tick_us:
            self._give_up()
            return
        others = [n for n in self.nodes if n != op.target] or list(self.nodes)
        self._send(self.rng.choice(others))

    def receive(self, data: bytes) -> None:
        try:
            envelope = decode_envelope(data, key=self._key)
        except DecodeError:
            self.ctx.count("client_decode_errors")
            return
        self.factory.observe(envelope)
        content = envelope.content
        if not isinstance(content, ClientResponses):
            self.ctx.count("client_unexpected")
            return
        for response in content.responses:
            op = self.op
            request_id = response.request_id
            if op is None or request_id >> _ATTEMPT_BITS != op.op_id:
                continue  # a late answer to an operation already finished
            if self.reply_quorum > 1 and not self._believed(envelope.source, response):
                continue
            if request_id != self._request_id(op):
                # An earlier request of this operation: only what it says for sure counts.
                if response.outcome is Outcome.UNKNOWN and op.is_write:
                    op.maybe_applied = True
                if response.outcome not in _DEFINITE or (request_id & 1) != (1 if op.registering else 0):
                    continue
                number = (request_id & ((1 << _ATTEMPT_BITS) - 1)) >> 1
                if response.outcome is Outcome.SESSION_EXPIRED and number < op.session_from:
                    continue  # about a session this client already left
            self._on_response(op, envelope.source, response)

    def _believed(self, source: NodeId, response: ClientResponse) -> bool:
        """Count `source`'s answer; True once `reply_quorum` replicas sent this same answer (the first
        time only: later copies are dropped)."""
        by_answer = self._votes.setdefault(response.request_id, {})
        answer = (response.outcome, response.value, response.client_id)
        voters = by_answer.setdefault(answer, set())
        if len(voters) >= self.reply_quorum:
            return False  # already believed and acted on
        voters.add(source)
        if len(voters) < self.reply_quorum:
            return False
        self.ctx.trace(f"believed {self.name} request={response.request_id} from={','.join(sorted(voters))}")
        return True

    # -- operations ---------------------------------------------------------------------------------

    def _request_id(self, op: _Operation) -> int:
        """The id of the operation's latest request: the operation in the high bits, the request's number
        in the low ones, odd for a registration."""
        return (op.op_id << _ATTEMPT_BITS) | (op.sent << 1) | (1 if op.registering else 0)

    def _think(self) -> None:
        low, high = self.workload.think_ticks
        tick_us = self.ctx.tick_us
        self._set_timer(self.rng.randint(low, high) * tick_us + self.rng.randrange(1000))

    def _begin(self) -> None:
        rng = self.rng
        kind = rng.choices(self._kinds, self._weights)[0]
        key = f"k{rng.randrange(self.workload.keys)}"
        self.next_op_id += 1
        op_id = self.next_op_id
        unique = f"{self.name}.{op_id}"
        value: str | None = None
        expected: str | None = None
        history_value: str | tuple[str | None, str] | None
        if kind == "get":
            f, op, history_value = "get", Op.GET, None
        elif kind == "put":
            f, op, history_value, value = "put", Op.PUT, unique, unique
        elif kind == "append":
            f, op, history_value, value = "append", Op.APPEND, unique + ";", unique + ";"
        elif kind == "delete":
            # The kv model has no delete; an absent key reads as nil, which the model equates with "".
            f, op, history_value = "put", Op.DELETE, None
        else:
            expected = self.last_seen.get(key)
            f, op, history_value, value = "cas", Op.CAS, (expected, unique), unique
        history_id = self.recorder.invoke(self.process, f, key=key, value=history_value)
        self.invoked += 1
        guess = self.leader_guess
        use_guess = guess is not None and rng.random() < self.workload.leader_affinity
        target = guess if guess is not None and use_guess else rng.choice(self.nodes)
        self.op = _Operation(
            op_id, f, op, key, value, expected, history_value, history_id, self.ctx.now_us, target
        )
        self.op.registering = op is not Op.GET and self.client_id == 0
        self._votes = {}
        self.ctx.trace(f"invoke {self.name} op={op_id} {f} {key} {history_value!r}")
        self._send(target)

    def _send(self, target: NodeId) -> None:
        op = self.op
        assert op is not None
        op.target = target
        op.sent += 1
        if op.registering:
            request = ClientRequest(self._request_id(op), Op.REGISTER)
        else:
            op.attempts += 1
            session = (self.client_id, self.seq) if op.is_write else (0, 0)
            request = ClientRequest(
                self._request_id(op), op.op, op.key, op.value, op.expected, session[0], session[1]
            )
        op.awaiting = True
        targets = [target]
        if self.reply_quorum > 1 and op.attempts + (1 if op.registering else 0) > 1:
            targets = list(self.nodes)  # a retry goes to every replica (a faulty primary may drop it)
        for node in targets:
            envelope = self.factory.wrap(node, ClientRequests((request,)))
            self.ctx.transmit(self.name, node, encode_envelope(envelope, key=self._key), envelope)
        self._set_timer(self.workload.request_timeout_ticks * self.ctx.tick_us)

    def _on_response(self, op: _Operation, source: NodeId, response: ClientResponse) -> None:
        op.awaiting = False
        outcome = response.outcome
        if op.registering:
            if outcome is Outcome.OK and response.client_id > 0:
                self.client_id = response.client_id
                self.seq = 1
                op.registering = False
                self.leader_guess = source
                op.session_from = op.sent + 1
                self._send(source)
            else:
                self._refused(response, source)
            return
        if outcome is Outcome.OK:
            self.leader_guess = source
            self._finish_ok(response.value)
        elif outcome is Outcome.CAS_MISMATCH:
            self.last_seen[op.key] = response.value
            self._finish_fail()
        elif outcome is Outcome.UNKNOWN:
            op.maybe_applied = op.maybe_applied or op.is_write
            self._refused(response, source)
        elif outcome is Outcome.SESSION_EXPIRED:
            self.client_id = 0
            if self.ctx.requests_may_duplicate and op.is_write and op.attempts:
                op.maybe_applied = True  # a duplicate may have applied before the eviction
            if op.maybe_applied:
                self._finish_info()
            else:
                op.registering = True  # this op certainly did nothing yet: retry it in a new session
                self._send(source)
        elif outcome is Outcome.BAD_REQUEST:
            self.ctx.trace(f"bad-request {self.name} op={op.op_id}: {response.error}")
            if op.maybe_applied:
                self._finish_info()
            else:
                self._finish_fail()
        else:  # NOT_LEADER, OVERLOADED: not proposed
            self._refused(response, source)

    def _refused(self, response: ClientResponse, source: NodeId) -> None:
        hint = response.leader_hint
        if response.outcome is Outcome.NOT_LEADER and hint and hint != source and hint in self.nodes:
            self.leader_guess = hint
            self._send(hint)
            return
        if response.outcome is Outcome.NOT_LEADER:
            self.leader_guess = None
        # Not served, and no better node to ask: back off a little, then ask another node.
        self._set_timer(self.rng.randint(1, 3) * self.ctx.tick_us)

    def _set_timer(self, delay_us: int) -> None:
        self.timer_token += 1
        self.ctx.schedule_client_timer(self.index, delay_us, self.timer_token)

    def _give_up(self) -> None:
        op = self.op
        assert op is not None
        if op.maybe_applied:
            self._finish_info()
        else:
            self._finish_fail()

    def _finish_ok(self, value: str | None) -> None:
        op = self.op
        assert op is not None
        if op.f == "get":
            self.last_seen[op.key] = value
        elif op.f == "put":
            self.last_seen[op.key] = op.history_value if isinstance(op.history_value, str) else None
        elif op.f == "cas":
            self.last_seen[op.key] = f"{self.name}.{op.op_id}"
        else:
            self.last_seen.pop(op.key, None)  # an append: the full value is unknown here
        if op.f == "get":
            self.recorder.ok(op.history_id, value)
        else:
            self.recorder.ok(op.history_id)
        self.completed_ok += 1
        self._finish("ok", value)

    def _finish_fail(self) -> None:
        op = self.op
        assert op is not None
        self.recorder.fail(op.history_id)
        self.completed_fail += 1
        self._finish("fail", None)

    def _finish_info(self) -> None:
        op = self.op
        assert op is not None
        self.recorder.info(op.history_id)
        self.completed_info += 1
        # Jepsen style: after an indeterminate op the client continues as a fresh process.
        self.generation += 1
        self.process = self.index + self.generation * max(1, self.ctx.client_count)
        self._finish("info", None)

    def _finish(self, outcome: str, value: str | None) -> None:
        op = self.op
        assert op is not None
        if op.is_write and op.attempts:
            self.seq += 1  # a late copy of this seq is then stale, never applied out of order
        self.ctx.trace(f"complete {self.name} op={op.op_id} {outcome} {value!r} attempts={op.attempts}")
        self.timings.append(
            OpTiming(
                op.invoked_us,
                self.ctx.now_us,
                outcome,
                op.is_write,
                self.leader_guess if outcome == "ok" else None,  # an ok answer sets leader_guess
            )
        )
        self.op = None
        if self.ctx.accepting_ops:
            self._think()
        else:
            self.timer_token += 1  # cancel the request timer
