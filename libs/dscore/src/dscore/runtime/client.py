"""`KvClient`: a key-value client that finds the leader, retries safely and records a checkable history.

Each client has its own session: a `client_id` and a command counter `seq`. A command keeps its `seq`
across every retry, to whichever node, so the state machine's sessions make it take effect at most once
and a retry of an applied command returns the first answer (exactly-once). The client issues one command
at a time, as sessions require.

Routing: the client sends to the node it believes leads; a `NotLeaderError` names the next guess (its
leader hint); a down node, a missing hint or a timed-out attempt moves on round-robin. Each operation has
an overall `op_timeout_s` and each attempt an `attempt_timeout_s`.

Every operation is recorded into a `dscore.check.HistoryRecorder` (Jepsen semantics):

- `invoke` when issued; `ok` with the answer when it took effect;
- `fail` only when it certainly had no effect: it was never proposed (every attempt was refused), a cas
  whose compare failed (no effect, as in Jepsen's register model), or any read that got no answer
  (a read has no effect either way);
- `info` when the client gives up on a write that may have been proposed; the process then continues under
  a fresh process id (a Jepsen rule: an indeterminate op stays open forever), and the next command uses the
  next `seq` (a late arrival of the abandoned one is then rejected as stale, never applied out of order).

History functions (model `kv` of `dscore.check`): `put` (value), `get` (value read), `append` (suffix),
`cas` (value `[expected, new]`); `delete` is recorded as `put` of nil, which the kv model reads as "".
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from dscore.check.edn import EdnValue
from dscore.check.history import HistoryRecorder
from dscore.core.errors import ConfigError, NotLeaderError
from dscore.core.ids import NodeId
from dscore.runtime.errors import OutcomeUnknownError, OverloadedError, ReadFailedError
from dscore.runtime.node import NodeRuntime
from dscore.statemachine.kv import Append, Cas, Delete, KvOp, KvResult, Put

#: completions kept by `ClientStats` (oldest dropped first)
MAX_COMPLETIONS_KEPT = 2_000_000


class RuntimeDirectory(Protocol):
    """Where a client finds nodes: an `EmbeddedCluster`, or anything that maps ids to live runtimes."""

    @property
    def node_ids(self) -> tuple[NodeId, ...]: ...

    def runtime(self, node_id: NodeId) -> NodeRuntime | None: ...


@dataclass(frozen=True, slots=True)
class ClientConfig:
    #: give up on an operation after this long (writes then record `info`, reads `fail`)
    op_timeout_s: float = 5.0
    #: wait this long for one node's answer before trying the next
    attempt_timeout_s: float = 1.0
    #: pause after a round of refusals (no leader known), so an election is not flooded
    retry_backoff_s: float = 0.005

    def __post_init__(self) -> None:
        if not self.op_timeout_s > 0 or not self.attempt_timeout_s > 0 or self.retry_backoff_s < 0:
            raise ConfigError("client timeouts must be positive and the backoff non-negative")


class Outcome(enum.Enum):
    OK = "ok"
    #: certainly had no effect
    FAIL = "fail"
    #: may or may not have taken effect
    UNKNOWN = "info"


@dataclass(frozen=True, slots=True)
class OpResult:
    outcome: Outcome
    #: the value read; for a failed cas, the value found instead of the expected one
    value: str | None = None
    error: str | None = None
    #: the node that answered (None if none did)
    node_id: NodeId | None = None
    latency_s: float = 0.0
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


@dataclass(frozen=True, slots=True)
class Completion:
    """One finished operation, for throughput, latency, availability and failover figures."""

    time_s: float
    latency_s: float
    outcome: Outcome
    f: str
    node_id: NodeId | None
    #: why it failed or is unknown (`cas_mismatch`, `timeout`, `not_leader`, ...)
    error: str | None = None


class ClientStats:
    """Completions of every client that shares it (bounded; the oldest are dropped first)."""

    __slots__ = ("completions",)

    def __init__(self, max_kept: int = MAX_COMPLETIONS_KEPT) -> None:
        self.completions: deque[Completion] = deque(maxlen=max_kept)

    def ok_times(self) -> list[float]:
        return [c.time_s for c in self.completions if c.outcome is Outcome.OK]

    def latencies_s(self, outcome: Outcome = Outcome.OK) -> list[float]:
        return [c.latency_s for c in self.completions if c.outcome is outcome]


class KvClient:
    def __init__(
        self,
        directory: RuntimeDirectory,
        client_id: str,
        *,
        config: ClientConfig | None = None,
        history: HistoryRecorder | None = None,
        process: int = 0,
        process_stride: int = 1,
        stats: ClientStats | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.directory = directory
        self.config = config or ClientConfig()
        self.history = history
        #: the history process id; replaced by `process + process_stride` after an indeterminate op
        self.process = process
        self._process_stride = process_stride
        self.stats = stats
        self._base_client_id = client_id
        self._session_generation = 0
        self.client_id = client_id
        self.seq = 1
        self._misses = 0
        nodes = directory.node_ids
        self._target = (rng or random.Random(client_id)).randrange(len(nodes)) if nodes else 0

    # -- operations ---------------------------------------------------------------------------------

    async def put(self, key: str, value: str) -> OpResult:
        return await self._write("put", key, value, Put(key, value))

    async def append(self, key: str, suffix: str) -> OpResult:
        return await self._write("append", key, suffix, Append(key, suffix))

    async def cas(self, key: str, expected: str | None, new: str) -> OpResult:
        return await self._write("cas", key, (expected, new), Cas(key, expected, new))

    async def delete(self, key: str) -> OpResult:
        return await self._write("put", key, None, Delete(key))

    async def get(self, key: str) -> OpResult:
        loop = asyncio.get_running_loop()
        op_id = self.history.invoke(self.process, "get", key=key) if self.history is not None else -1
        start = loop.time()
        deadline = start + self.config.op_timeout_s
        attempts = 0
        last_error = "no node answered"
        while (remaining := deadline - loop.time()) > 0:
            node_id, runtime = self._current()
            if runtime is None:
                await self._next_node()
                continue
            attempts += 1
            try:
                value = await runtime.read(key, min(self.config.attempt_timeout_s, remaining))
            except (NotLeaderError, ReadFailedError, OutcomeUnknownError) as error:
                last_error = type(error).__name__
                await self._follow(node_id, error.leader_hint)
                continue
            except OverloadedError as error:
                last_error = str(error)
                await self._next_node(backoff=True)
                continue
            except TimeoutError:
                last_error = "timeout"
                await self._next_node()
                continue
            self._misses = 0
            if self.history is not None:
                self.history.ok(op_id, value)
            return self._done(
                OpResult(Outcome.OK, value, None, node_id, loop.time() - start, attempts), "get"
            )
        if self.history is not None:
            self.history.fail(op_id)
        return self._done(
            OpResult(Outcome.FAIL, None, last_error, None, loop.time() - start, attempts), "get"
        )

    async def _write(self, f: str, key: str, history_value: EdnValue, op: KvOp) -> OpResult:
        loop = asyncio.get_running_loop()
        op_id = (
            self.history.invoke(self.process, f, key=key, value=history_value)
            if self.history is not None
            else -1
        )
        start = loop.time()
        deadline = start + self.config.op_timeout_s
        seq = self.seq
        attempts = 0
        maybe_proposed = False
        last_error = "no node answered"
        while (remaining := deadline - loop.time()) > 0:
            node_id, runtime = self._current()
            if runtime is None:
                await self._next_node()
                continue
            attempts += 1
            try:
                result = await runtime.submit(
                    self.client_id, seq, op, min(self.config.attempt_timeout_s, remaining)
                )
            except NotLeaderError as error:
                last_error = "not_leader"
                await self._follow(node_id, error.leader_hint)
                continue
            except OverloadedError:
                last_error = "overloaded"
                await self._next_node(backoff=True)
                continue
            except OutcomeUnknownError as error:
                maybe_proposed = True
                last_error = type(error).__name__
                await self._follow(node_id, error.leader_hint)
                continue
            except TimeoutError:
                maybe_proposed = True
                last_error = "timeout"
                await self._next_node()
                continue
            self._misses = 0
            return self._done(self._interpret(op_id, result, node_id, loop.time() - start, attempts), f)
        latency_s = loop.time() - start
        if not maybe_proposed:
            # Never proposed anywhere: no effect, and the seq is still unused.
            if self.history is not None:
                self.history.fail(op_id)
            return self._done(OpResult(Outcome.FAIL, None, last_error, None, latency_s, attempts), f)
        self.seq += 1
        self._indeterminate(op_id)
        return self._done(OpResult(Outcome.UNKNOWN, None, last_error, None, latency_s, attempts), f)

    def _interpret(
        self, op_id: int, result: KvResult, node_id: NodeId, latency_s: float, attempts: int
    ) -> OpResult:
        history = self.history
        if result.ok:
            self.seq += 1
            if history is not None:
                history.ok(op_id)
            return OpResult(Outcome.OK, result.value, None, node_id, latency_s, attempts)
        if result.error == "cas_mismatch":
            self.seq += 1
            if history is not None:
                history.fail(op_id)
            return OpResult(Outcome.FAIL, result.value, result.error, node_id, latency_s, attempts)
        if result.error == "malformed":  # rejected before the session saw it: no effect, seq unused
            if history is not None:
                history.fail(op_id)
            return OpResult(Outcome.FAIL, None, result.error, node_id, latency_s, attempts)
        # stale_seq / session_expired: the session cannot tell whether an earlier copy took effect.
        self._indeterminate(op_id)
        self._new_session()
        return OpResult(Outcome.UNKNOWN, None, result.error, node_id, latency_s, attempts)

    # -- bookkeeping --------------------------------------------------------------------------------

    def _indeterminate(self, op_id: int) -> None:
        if self.history is not None:
            self.history.info(op_id)
            self.process += self._process_stride

    def _new_session(self) -> None:
        self._session_generation += 1
        self.client_id = f"{self._base_client_id}#{self._session_generation}"
        self.seq = 1

    def _done(self, result: OpResult, f: str) -> OpResult:
        if self.stats is not None:
            now = asyncio.get_running_loop().time()
            self.stats.completions.append(
                Completion(now, result.latency_s, result.outcome, f, result.node_id, result.error)
            )
        return result

    # -- routing ------------------------------------------------------------------------------------

    def _current(self) -> tuple[NodeId, NodeRuntime | None]:
        nodes = self.directory.node_ids
        node_id = nodes[self._target % len(nodes)]
        return node_id, self.directory.runtime(node_id)

    async def _next_node(self, backoff: bool = False) -> None:
        self._target = (self._target + 1) % len(self.directory.node_ids)
        await self._missed(backoff)

    async def _follow(self, asked: NodeId, hint: NodeId | None) -> None:
        nodes = self.directory.node_ids
        if hint is not None and hint != asked and hint in nodes:
            self._target = nodes.index(hint)
        else:
            self._target = (self._target + 1) % len(nodes)
        await self._missed(False)

    async def _missed(self, backoff: bool) -> None:
        # Refusals come back without suspending; after a full round of them (an election is under way,
        # or hints point at a dead leader) pause, so the client never spins the event loop.
        self._misses += 1
        if backoff or self._misses >= len(self.directory.node_ids):
            self._misses = 0
            await asyncio.sleep(self.config.retry_backoff_s)


async def mixed_workload(
    client: KvClient,
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
        token = f"{client.client_id.split('#')[0]}.{n}"
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
