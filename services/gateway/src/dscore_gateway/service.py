"""`Gateway`: the service behind the HTTP routes, with no HTTP in it: reads, writes with sessions and
Idempotency-Keys, readiness, the cluster view, draining, and the background probe.

One `Gateway` is one client endpoint of the cluster (`ClientEndpoint`; its id is the gateway's reply
inbox). Several gateways can run at once: each has its own endpoint, sessions, Idempotency-Key table
and leader knowledge; the cluster's sessions keep their writes apart.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dscore.core.client_messages import Outcome, ReadMode
from dscore.runtime.client import ClientEndpoint
from dscore.runtime.protocols import stack_protocol
from dscore_gateway.cluster_client import Answer, ClusterClient, FirstAttempt, WriteOp
from dscore_gateway.idempotency import IdempotencyTable, Verdict
from dscore_gateway.metrics import GatewayMetrics
from dscore_gateway.routing import LeadershipEvent
from dscore_gateway.sessions import PoolExhaustedError, Session, SessionPool
from dscore_gateway.settings import GatewayOptions
from dscore_gateway.status import ClusterView, NodeStatusSource, cluster_view

log = logging.getLogger("dscore_gateway")

#: how often expired Idempotency-Keys are dropped and the probe considered
_HOUSEKEEPING_S = 0.25
#: silent nodes are looked for this many times per `silence_s` (a silence is seen within 1.25x of it)
SILENCE_CHECKS_PER_SILENCE = 4


#: how a write ends when the gateway is cancelled while it is in flight
_CANCELLED = Answer(Outcome.UNKNOWN, error="the request was cancelled while its write was in flight")


def _deliver(done: Callable[[Answer | None], None], answer: Answer | None) -> None:
    """Hand a `start_write` answer on; a failure there is a bug, logged, never raised into the caller
    (the endpoint's reading, or a task nobody awaits)."""
    try:
        done(answer)
    except Exception:
        log.exception("unexpected error answering a write")


class WriteVerdict(enum.Enum):
    """How a write request ended, before HTTP (see `WriteResult`)."""

    #: the cluster (or the gateway's retries) gave `answer`
    ANSWERED = "answered"
    #: `answer` is the stored answer of an earlier request with the same Idempotency-Key
    REPLAYED = "replayed"
    #: the Idempotency-Key's first request is still running (409)
    KEY_IN_USE = "key_in_use"
    #: the Idempotency-Key was used for a different request (422)
    KEY_REUSED = "key_reused"
    #: no session became free in time (503)
    BUSY = "busy"


@dataclass(frozen=True, slots=True)
class WriteResult:
    verdict: WriteVerdict
    answer: Answer | None = None


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    key: str
    #: `dscore_gateway.idempotency.fingerprint` of the request
    fingerprint: bytes


class Gateway:
    """See the module doc. `close` is awaited by `stop()` (closing the endpoint it was given, when the
    gateway owns it)."""

    def __init__(
        self,
        endpoint: ClientEndpoint,
        options: GatewayOptions,
        *,
        cluster_id: str,
        status_source: NodeStatusSource | None = None,
        close: Callable[[], Awaitable[None]] | None = None,
        protocol: str = "raft",
    ) -> None:
        self.options = options
        self.cluster_id = cluster_id
        #: the nodes' protocol (`dscore.runtime.protocols`): what the leader is called, what `term` means,
        #: and whether every replica answers (PBFT)
        self.protocol = stack_protocol(protocol)
        self.endpoint = endpoint
        self.metrics = GatewayMetrics()
        self.client = ClusterClient(
            endpoint,
            attempt_timeout_s=options.attempt_timeout_s,
            retry_backoff_s=options.retry_backoff_s,
            on_attempt=self._on_attempt,
            on_leadership=self._on_leadership,
            on_register=self.metrics.registrations.inc,
            byzantine=self.protocol.byzantine,
            silence_s=0.0 if self.protocol.byzantine else options.silence_after_s(),
        )
        self.pool = SessionPool(options.session_pool_size, name=endpoint.endpoint_id)
        self.idempotency: IdempotencyTable[Answer] = IdempotencyTable(
            options.idempotency_max_keys, options.idempotency_ttl_s
        )
        self.status_source = status_source
        self._close = close
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        #: writes begun by `start_write` that went on in a task (held here: the loop keeps weak references)
        self._writes: set[asyncio.Task[None]] = set()
        self._stopped = False
        # read at scrape time, not set on every request (a locked write per request and per answer)
        self.metrics.in_flight.set_function(lambda: self.in_flight)
        #: (node, outcome) -> its labelled attempts counter
        self._attempt_counters: dict[tuple[str, str], Any] = {}
        self.metrics.watch(
            rejected=lambda: endpoint.rejected,
            sessions=lambda: {
                "busy": self.pool.busy,
                "idle": self.pool.idle,
                "pinned": len(self.pool.pinned),
            },
            idempotency_keys=lambda: len(self.idempotency),
            idempotency_evictions=lambda: self.idempotency.evictions,
            leader_known=lambda: self.client.tracker.leader is not None,
            leader_changes=lambda: self.client.tracker.leader_changes,
            leader_losses=lambda: self.client.tracker.leader_losses,
            gathers=lambda: {"filled": endpoint.gathers_filled, "expired": endpoint.gathers_expired},
        )

    @property
    def endpoint_id(self) -> str:
        return self.endpoint.endpoint_id

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._housekeeping(), name=f"dscore-gateway-{self.endpoint_id}")]
        silence_s = self.client.silence_s
        if silence_s > 0:
            self._tasks.append(
                loop.create_task(
                    self._watch_silence(silence_s), name=f"dscore-gateway-silence-{self.endpoint_id}"
                )
            )
        log.info(
            "gateway %s started: cluster %s, members %s",
            self.endpoint_id,
            self.cluster_id,
            ",".join(self.client.tracker.members()),
        )

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests (503 shutting_down) and wait up to `timeout_s` for those in flight; True
        if none is left."""
        self.draining = True
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            log.warning(
                "gateway %s: %d requests still in flight after draining", self.endpoint_id, self.in_flight
            )
            return False
        return True

    async def stop(self) -> None:
        """Drain (bounded by `drain_timeout_s`), stop the background task, close the endpoint if owned."""
        if self._stopped:
            return
        self._stopped = True
        drained = await self.drain(self.options.drain_timeout_s)
        tasks = [*self._tasks, *self._writes]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        if self._close is not None:
            await self._close()
        log.info("gateway %s stopped (%s)", self.endpoint_id, "drained" if drained else "drain timed out")

    def enter(self) -> None:
        """An HTTP request starts being served (paired with `leave`)."""
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    # -- operations ---------------------------------------------------------------------------------

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.options.request_timeout_s

    async def read(self, key: str, mode: ReadMode) -> Answer:
        return await self.client.read(key, mode, self._deadline())

    async def write(self, write: WriteOp, idempotent: IdempotentRequest | None = None) -> WriteResult:
        """One write, carried by one session of the pool; with an Idempotency-Key, at most once across
        retries of the same HTTP request (see `dscore_gateway.idempotency`)."""
        loop = asyncio.get_running_loop()
        deadline = self._deadline()
        if idempotent is None:
            session = await self._acquire(deadline)
            if session is None:
                return WriteResult(WriteVerdict.BUSY)
            return WriteResult(WriteVerdict.ANSWERED, await self._run(write, session, deadline, None))

        key = idempotent.key
        table = self.idempotency
        begin = table.begin(key, idempotent.fingerprint, loop.time())
        self._unpin_dropped()
        verdict = begin.verdict
        if verdict is Verdict.MISMATCH:
            return WriteResult(WriteVerdict.KEY_REUSED)
        if verdict is Verdict.IN_PROGRESS:
            return WriteResult(WriteVerdict.KEY_IN_USE)
        if verdict is Verdict.REPLAY:
            self.metrics.idempotent_replays.inc()
            return WriteResult(WriteVerdict.REPLAYED, begin.response)
        if verdict is Verdict.RESUME:
            resumed = self.pool.resume(key)
            if resumed is None:
                answer = Answer(
                    Outcome.UNKNOWN,
                    error="the write under this Idempotency-Key may or may not have been applied, and the "
                    "session that could tell was let go (too many unresolved writes); the outcome cannot be "
                    "learned any more: read the key to see its state",
                )
                table.finish(key, answer, loop.time())
                return WriteResult(WriteVerdict.ANSWERED, answer)
            answer = await self._run(write, resumed, deadline, key, maybe_applied=True)
            return WriteResult(WriteVerdict.ANSWERED, answer)
        try:
            acquired = await self._acquire(deadline)
        except BaseException:
            table.forget(key)  # cancelled while waiting for a session: nothing was sent
            raise
        if acquired is None:
            table.forget(key)
            return WriteResult(WriteVerdict.BUSY)
        return WriteResult(WriteVerdict.ANSWERED, await self._run(write, acquired, deadline, key))

    def start_write(self, write: WriteOp, done: Callable[[Answer | None], None]) -> bool:
        """`write` (no Idempotency-Key) begun without a task when nothing needs waiting for: an idle
        registered session is at hand and the cluster is not PBFT. `done` is called once, with the
        answer `write` would have given, or None if the gateway failed (a bug, logged, or a shutdown
        that cancelled the retries). False: nothing was done (call `write`).

        An OK first attempt, nearly every write, is settled in the endpoint's callback; anything else
        goes on in a task, through `ClusterClient.write`'s retries, from that first attempt."""
        if self.client.byzantine:
            return False
        session = self.pool.take_registered()
        if session is None:
            return False
        deadline = self.endpoint.loop_time() + self.options.request_timeout_s

        def then(first: FirstAttempt) -> None:
            node, response = first
            answer: Answer | None = None
            try:
                if response is not None and response.outcome is Outcome.OK:
                    answer = self.client.served_write(node, response)
                    self._settle(session, answer, False, None)
                elif not self._stopped:
                    task = asyncio.get_running_loop().create_task(
                        self._go_on(write, session, deadline, first, done)
                    )
                    self._writes.add(task)
                    task.add_done_callback(self._writes.discard)
                    return
                else:  # the endpoint closed under it (`stop`): no retries any more
                    self._settle(session, _CANCELLED, True, None)
                    answer = None
            except Exception:  # a bug: logged, answered 500, never raised into the endpoint's reading
                log.exception("unexpected error settling a write to %s", write.key)
            _deliver(done, answer)

        try:
            self.client.start_write(write, session, then)
        except Exception:  # nothing sent (no node to talk to): the task path answers it as it always did
            self.pool.release(session)
            return False
        return True

    async def _go_on(
        self,
        write: WriteOp,
        session: Session,
        deadline: float,
        first: FirstAttempt,
        done: Callable[[Answer | None], None],
    ) -> None:
        """A write begun by `start_write` whose first attempt was not OK, carried on to its answer."""
        try:
            answer = await self._run(write, session, deadline, None, first=first)
        except Exception:
            log.exception("unexpected error writing %s", write.key)
            _deliver(done, None)
            return
        except BaseException:  # cancelled: `stop`, or a shutdown past its grace period
            _deliver(done, None)
            raise
        _deliver(done, answer)

    async def _run(
        self,
        write: WriteOp,
        session: Session,
        deadline: float,
        key: str | None,
        *,
        maybe_applied: bool = False,
        first: FirstAttempt | None = None,
    ) -> Answer:
        """Carry `write` in `session`, then settle the session (and the key) whatever happens: a request
        cancelled mid-write (a shutdown past its grace period) leaves its write unknown, not lost."""
        try:
            answer, maybe_applied = await self.client.write(
                write, session, deadline, maybe_applied=maybe_applied, first=first
            )
        except BaseException:
            self._settle(session, _CANCELLED, True, key)
            raise
        self._settle(session, answer, maybe_applied, key)
        return answer

    async def _acquire(self, deadline: float) -> Session | None:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            return await self.pool.acquire(max(0.0, remaining))
        except PoolExhaustedError:
            return None

    def _settle(self, session: Session, answer: Answer, maybe_applied: bool, key: str | None) -> None:
        """Give the session back (or pin it to `key`) and record the key's state, after one write."""
        now = asyncio.get_running_loop().time()
        table = self.idempotency
        outcome = answer.outcome
        if outcome is Outcome.UNKNOWN:
            if key is not None and session.client_id != 0 and self.options.max_pinned_sessions > 0:
                self.pool.pin(session, key)  # its seq stays: a retry re-sends this command
                table.unknown(key, answer, now)
                self._bound_pinned(now)
                return
            if session.client_id != 0:
                session.seq += 1  # a late copy of the abandoned command is then refused as stale
            if key is not None:
                table.finish(key, answer, now)
        elif outcome is Outcome.NOT_LEADER or outcome is Outcome.OVERLOADED:
            # Certainly not applied; a resumed write (maybe_applied) never ends here.
            assert not maybe_applied
            if key is not None:
                table.forget(key)
        else:  # OK, CAS_MISMATCH, BAD_REQUEST: a definite answer for this seq
            if session.client_id != 0:
                session.seq += 1
            if key is not None:
                table.finish(key, answer, now)
        self.pool.release(session)

    def _bound_pinned(self, now: float) -> None:
        pool = self.pool
        while len(pool.pinned) > self.options.max_pinned_sessions:
            oldest = pool.oldest_pinned()
            if oldest is None:
                return
            pool.unpin(oldest)
            self.idempotency.finish(
                oldest,
                Answer(
                    Outcome.UNKNOWN,
                    error="the write under this Idempotency-Key may or may not have been applied; the "
                    "gateway let its session go (too many unresolved writes), so the outcome cannot be "
                    "learned any more: read the key to see its state",
                ),
                now,
            )

    def _unpin_dropped(self) -> None:
        for key in self.idempotency.take_dropped_unknown():
            self.pool.unpin(key)

    # -- state --------------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        """(ready, why): not draining, a leader known, and a success within `ready_success_within_s`."""
        if self.draining:
            return False, "shutting down"
        tracker = self.client.tracker
        leader_role = self.protocol.leader_role
        if tracker.leader is None:
            return False, f"no {leader_role} known"
        last = tracker.last_success_at
        now = asyncio.get_running_loop().time()
        if last is None or now - last > self.options.ready_success_within_s:
            return False, f"no request succeeded in the last {self.options.ready_success_within_s} s"
        return True, f"{leader_role} {tracker.leader}"

    def cluster_view(self) -> ClusterView:
        now = asyncio.get_running_loop().time()
        return cluster_view(
            self.cluster_id,
            self.endpoint_id,
            self.client.tracker,
            now,
            self.status_source,
            protocol=self.protocol,
            reply_quorum=self.endpoint.reply_quorum,
        )

    # -- hooks and background ----------------------------------------------------------------------

    def _on_attempt(self, node: str, outcome: str) -> None:
        counter = self._attempt_counters.get((node, outcome))
        if counter is None:
            counter = self._attempt_counters[(node, outcome)] = self.metrics.attempts.labels(node, outcome)
        counter.inc()

    def _on_leadership(self, event: LeadershipEvent) -> None:
        if event.failover_s is not None:
            self.metrics.failover.observe(event.failover_s)
            log.info("leader %s serves again after a gap of %.3f s", event.leader, event.failover_s)
        if event.previous is not None and event.previous != event.leader:
            log.info("leader changed: %s -> %s", event.previous, event.leader)
        elif event.previous is None:
            log.info("leader is %s", event.leader)

    async def _watch_silence(self, silence_s: float) -> None:
        """Every `SILENCE_CHECKS_PER_SILENCE`th of `silence_s`, end the attempts waiting on a silent node
        (`ClusterClient.end_silences`): a dead leader's writes go on within about `silence_s`, not each
        after its `attempt_timeout_s`. A timer-driven look at what the tracker already holds: no work per
        request."""
        loop = asyncio.get_running_loop()
        interval_s = silence_s / SILENCE_CHECKS_PER_SILENCE
        while True:
            await asyncio.sleep(interval_s)
            for node in self.client.end_silences(loop.time()):
                self.metrics.silences.labels(node).inc()
                log.warning(
                    "node %s answered nothing for %.3f s: its attempts go on elsewhere", node, silence_s
                )

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        tracker = self.client.tracker
        while True:
            await asyncio.sleep(_HOUSEKEEPING_S)
            now = loop.time()
            self.idempotency.expire(now)
            self._unpin_dropped()
            interval = self.options.probe_interval_s
            if interval <= 0 or self.draining:
                continue
            last = tracker.last_success_at
            if last is not None and now - last < interval:
                continue
            answer = await self.client.read(
                self.options.probe_key, ReadMode.LINEARIZABLE, now + self.options.request_timeout_s
            )
            self.metrics.probes.labels("ok" if answer.outcome is Outcome.OK else "failed").inc()
