"""Simulated clients: they run a key-value workload against the cluster and record its history.

A client issues one operation at a time. Writes (and reads when the protocol has no read path) are kv
commands `(client_id, seq, op)` proposed through the log; the replicated state machine's client sessions
make a retried command take effect once. Reads go through `read_index` where the protocol supports it.

Each operation is recorded in a `dscore.check.HistoryRecorder` (the kv model):

- `invoke` when the request is first sent;
- `ok` when a node answers with the result;
- `fail` only when the operation certainly did not take effect (a cas whose compare failed, a command
  the state machine rejected as stale);
- `info` when the client gives up (it may or may not have taken effect); it then continues as a fresh
  history process, Jepsen style.

Retries: an unanswered request is sent again after `request_timeout_ticks` to another node, with the same
`(client_id, seq)`; a `NOT_LEADER` answer redirects to the hinted node. Requests and replies cross the
simulated network like any message, so they are lost, delayed, duplicated and corrupted too.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dscore.check import HistoryRecorder
from dscore.core.codec import decode_envelope, encode_envelope
from dscore.core.envelope import EnvelopeFactory
from dscore.core.errors import DecodeError
from dscore.core.ids import NodeId
from dscore.core.registry import message
from dscore.sim.config import WorkloadConfig
from dscore.statemachine.kv import Append, Cas, Delete, Get, KvOp, Put, encode_command

if TYPE_CHECKING:
    from dscore.sim.simulator import Simulation


class ReplyStatus(enum.IntEnum):
    OK = 0
    #: certainly had no effect (a failed cas compare, a stale command)
    FAIL = 1
    #: outcome unknown to the node too (the session was evicted); the client records `info`
    UNKNOWN = 2
    #: not served now; try again (a failed read, a node too busy to track the request)
    RETRY = 3
    NOT_LEADER = 4


@message("sim.client_request")
@dataclass(frozen=True, slots=True)
class ClientRequest:
    client_id: str
    #: the client's operation number; every retry of one operation carries the same one
    op_id: int
    #: the kv session sequence number of `command` (0 for a `read_index` read)
    seq: int
    #: an encoded kv command to propose, or None for a `read_index` read of `read_key`
    command: bytes | None
    read_key: str | None


@message("sim.client_reply")
@dataclass(frozen=True, slots=True)
class ClientReply:
    op_id: int
    status: ReplyStatus
    value: str | None = None
    error: str | None = None
    leader_hint: str | None = None


@dataclass(slots=True)
class _Operation:
    op_id: int
    f: str
    key: str
    history_value: str | tuple[str | None, str] | None
    seq: int
    command: bytes | None
    history_id: int
    invoked_us: int
    target: NodeId
    attempts: int = 1


class SimClient:
    """One client process; driven by the simulator through `start`, `on_timer` and `receive`."""

    def __init__(
        self,
        sim: Simulation,
        index: int,
        rng: random.Random,
        workload: WorkloadConfig,
        nodes: tuple[NodeId, ...],
        *,
        recorder: HistoryRecorder,
        read_through_log: bool,
    ) -> None:
        self.sim = sim
        self.index = index
        self.client_id = f"c{index}"
        self.rng = rng
        self.workload = workload
        self.nodes = nodes
        self.recorder = recorder
        self.read_through_log = read_through_log
        self.factory = EnvelopeFactory(self.client_id, incarnation=1)
        self.process = index
        self.generation = 0
        self.seq = 0
        self.next_op_id = 0
        self.op: _Operation | None = None
        self.timer_token = 0
        self.leader_guess: NodeId | None = None
        self.last_seen: dict[str, str | None] = {}
        kinds = [kind for kind, weight in workload.mix if weight > 0]
        self._kinds = kinds
        self._weights = [weight for _, weight in workload.mix if weight > 0]
        self.invoked = self.completed_ok = self.completed_fail = self.completed_info = 0

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
            if self.sim.accepting_ops:
                self._begin()
            return
        workload = self.workload
        tick_us = self.sim.config.tick_us
        if self.sim.faults_active and self.sim.now_us - op.invoked_us >= workload.give_up_ticks * tick_us:
            self._finish_info()
            return
        others = [n for n in self.nodes if n != op.target] or list(self.nodes)
        self._send(self.rng.choice(others))

    def receive(self, data: bytes) -> None:
        try:
            envelope = decode_envelope(data)
        except DecodeError:
            self.sim.count("client_decode_errors")
            return
        self.factory.observe(envelope)
        source = envelope.source
        reply = envelope.content
        op = self.op
        if not isinstance(reply, ClientReply) or op is None or reply.op_id != op.op_id:
            return  # a late answer to an operation already finished
        status = reply.status
        if status is ReplyStatus.OK:
            self._finish_ok(reply.value)
        elif status is ReplyStatus.FAIL:
            if op.f == "cas":
                self.last_seen[op.key] = reply.value
            self._finish_fail()
        elif status is ReplyStatus.UNKNOWN:
            self._finish_info()
        elif status is ReplyStatus.NOT_LEADER and reply.leader_hint and reply.leader_hint != source:
            self.leader_guess = reply.leader_hint
            self._send(reply.leader_hint)
        else:
            # Not served, and no better node to ask: back off a little, then ask another node.
            if status is ReplyStatus.NOT_LEADER:
                self.leader_guess = None
            self._set_timer(self.rng.randint(1, 3) * self.sim.config.tick_us)

    # -- operations ---------------------------------------------------------------------------------

    def _think(self) -> None:
        low, high = self.workload.think_ticks
        self._set_timer(self.rng.randint(low, high) * self.sim.config.tick_us + self.rng.randrange(1000))

    def _begin(self) -> None:
        rng = self.rng
        kind = rng.choices(self._kinds, self._weights)[0]
        key = f"k{rng.randrange(self.workload.keys)}"
        self.next_op_id += 1
        op_id = self.next_op_id
        unique = f"{self.client_id}.{op_id}"
        kv_op: KvOp | None
        history_value: str | tuple[str | None, str] | None
        if kind == "get":
            f, history_value = "get", None
            kv_op = Get(key) if self.read_through_log else None
        elif kind == "put":
            f, history_value, kv_op = "put", unique, Put(key, unique)
        elif kind == "append":
            f, history_value, kv_op = "append", unique + ";", Append(key, unique + ";")
        elif kind == "delete":
            # The kv model has no delete; an absent key reads as nil, which the model equates with "".
            f, history_value, kv_op = "put", None, Delete(key)
        else:
            expected = self.last_seen.get(key)
            f, history_value, kv_op = "cas", (expected, unique), Cas(key, expected, unique)
        seq = 0
        command = None
        if kv_op is not None:
            self.seq += 1
            seq = self.seq
            command = encode_command(self.client_id, seq, kv_op)
        history_id = self.recorder.invoke(self.process, f, key=key, value=history_value)
        self.invoked += 1
        guess = self.leader_guess
        use_guess = guess is not None and rng.random() < self.workload.leader_affinity
        target = guess if guess is not None and use_guess else rng.choice(self.nodes)
        self.op = _Operation(
            op_id, f, key, history_value, seq, command, history_id, self.sim.now_us, target, 0
        )
        self.sim.trace(f"invoke {self.client_id} op={op_id} {f} {key} {history_value!r}")
        self._send(target)

    def _send(self, target: NodeId) -> None:
        op = self.op
        assert op is not None
        op.target = target
        op.attempts += 1
        request = ClientRequest(
            self.client_id, op.op_id, op.seq, op.command, op.key if op.command is None else None
        )
        envelope = self.factory.wrap(target, request)
        self.sim.transmit(self.client_id, target, encode_envelope(envelope), envelope)
        self._set_timer(self.workload.request_timeout_ticks * self.sim.config.tick_us)

    def _set_timer(self, delay_us: int) -> None:
        self.timer_token += 1
        self.sim.schedule_client_timer(self.index, delay_us, self.timer_token)

    def _finish_ok(self, value: str | None) -> None:
        op = self.op
        assert op is not None
        if op.f == "get":
            self.last_seen[op.key] = value
        elif op.f == "put":
            self.last_seen[op.key] = op.history_value if isinstance(op.history_value, str) else None
        elif op.f == "cas":
            self.last_seen[op.key] = f"{self.client_id}.{op.op_id}"
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
        self.process = self.index + self.generation * max(1, len(self.sim.clients))
        self._finish("info", None)

    def _finish(self, outcome: str, value: str | None) -> None:
        op = self.op
        assert op is not None
        self.sim.trace(f"complete {self.client_id} op={op.op_id} {outcome} {value!r} attempts={op.attempts}")
        self.op = None
        if self.sim.accepting_ops:
            self._think()
        else:
            self.timer_token += 1  # cancel the request timer
