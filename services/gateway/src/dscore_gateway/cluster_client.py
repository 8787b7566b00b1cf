"""The gateway's side of the wire client protocol: one `ClientEndpoint`, the requests of every HTTP
request through it, retries until a definite answer or the deadline.

Every request goes through `dscore.runtime.client.ClientEndpoint` (batched per node per event-loop turn,
matched by request id, authenticated with the cluster key), so what reaches the nodes is exactly the
wire protocol of `dscore.core.client_messages`. Routing and leadership knowledge are shared by all
requests (`dscore_gateway.routing.LeaderTracker`).

Retries: a new attempt starts while the request's deadline (`request_timeout_s`) has not passed, and
each attempt gets its full `attempt_timeout_s` (an attempt is never cut short by the deadline: a reply
that was about to say NOT_LEADER would otherwise turn "certainly nothing happened" into "unknown"), so an
HTTP request is answered within `request_timeout_s + attempt_timeout_s`.

- `NOT_LEADER`: next to the hinted leader, else the next member; after a full round of refusals a pause
  of `retry_backoff_s`, so an election is not flooded;
- no answer within `attempt_timeout_s`: the next member (a write is then *maybe applied*);
- `UNKNOWN`: a write is retried with the same `(client_id, seq)`: the state machine applies it at most
  once and answers a retry of an applied command with the first result;
- a session not registered yet (or expired) is registered first (REGISTER, through the log);
- `SESSION_EXPIRED`: the session is registered again and the write retried in it, unless an earlier
  attempt may have been applied (that cannot be looked up any more: `UNKNOWN`);
- `OVERLOADED`: answered at once when nothing may have been applied (the client retries later; retrying
  here would add load), else retried like `UNKNOWN`.

A write that runs out of time ends `UNKNOWN` if any attempt may have been applied, and `NOT_LEADER` (or
`OVERLOADED`) otherwise: the one place where "certainly nothing happened" is decided. A read that runs
out of time is `NOT_LEADER`: a read has no effect.

PBFT (`byzantine=True`; Castro and Liskov, section 4.1). Every replica executes every request and answers
it, and one replica's answer is never believed: the endpoint (`ClientEndpoint` with `reply_quorum` f + 1,
the code the embedded cluster's clients use) hands an answer on only once f + 1 distinct replicas sent the
same one, so at least one correct replica vouches for it. The first attempt of a request goes to the
primary (learned from replies: each names the primary of its replica's view), every later one to all
replicas with one request id (a faulty or dead primary may have dropped it; the backups forward it to the
primary and start their view-change timers). Replicas never answer `NOT_LEADER`: a dead primary shows as
silence until a view change installs the next one. Reads go through the log (PBFT has no leader read
path), and a `stale` read is served as a linearizable one: a single replica's local state is exactly the
one-replica answer a Byzantine-tolerant client must not take.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from dscore.core.client_messages import ClientResponse, Op, Outcome, ReadMode
from dscore.core.ids import NodeId
from dscore.runtime.client import ClientEndpoint
from dscore_gateway.routing import TIMEOUT, LeadershipEvent, LeaderTracker
from dscore_gateway.sessions import Session


@dataclass(frozen=True, slots=True)
class Answer:
    """How one request ended. `outcome` is the wire protocol's; see `dscore_gateway.outcomes`."""

    outcome: Outcome
    #: GET: the value read (None: absent); CAS_MISMATCH: the current value
    value: str | None = None
    #: why, for anything but OK (shown in the HTTP error body)
    error: str | None = None
    #: the node that gave the final answer (None if none did)
    node: NodeId | None = None
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class WriteOp:
    """A write, as it is sent (every retry sends the same one)."""

    op: Op
    key: str
    value: str | None = None
    expected: str | None = None


#: a write's first attempt, made by `ClusterClient.start_write`: the node asked and its response (None:
#: none within the attempt timeout)
FirstAttempt = tuple[NodeId, ClientResponse | None]
#: called with each attempt's node and outcome label (an `Outcome` name in lower case, or "timeout")
AttemptHook = Callable[[NodeId, str], None]
#: called when a served request changed the leader or ended a failover gap
LeadershipHook = Callable[[LeadershipEvent], None]


class ClusterClient:
    """Reads and writes over one `ClientEndpoint` (see the module doc)."""

    def __init__(
        self,
        endpoint: ClientEndpoint,
        *,
        attempt_timeout_s: float,
        retry_backoff_s: float,
        on_attempt: AttemptHook | None = None,
        on_leadership: LeadershipHook | None = None,
        on_register: Callable[[], None] | None = None,
        byzantine: bool = False,
        silence_s: float = 0.0,
    ) -> None:
        self.endpoint = endpoint
        #: a node that answered nothing for this long is left (`end_silences`); 0: never
        self.silence_s = silence_s
        self.tracker = LeaderTracker(endpoint.nodes, suspect_for_s=silence_s)
        #: PBFT: every replica answers, retries go to all of them (see the module doc)
        self.byzantine = byzantine
        self._attempt_timeout_s = attempt_timeout_s
        self._retry_backoff_s = retry_backoff_s
        self._on_attempt = on_attempt
        self._on_leadership = on_leadership
        self._on_register = on_register

    # -- reads --------------------------------------------------------------------------------------

    async def read(self, key: str, mode: ReadMode, deadline: float) -> Answer:
        """A GET: linearizable (by the leader's read path) or stale (any node's applied state)."""
        loop = asyncio.get_running_loop()
        tracker = self.tracker
        attempts = 0
        misses = 0
        last_error = "no node answered in time"
        if self.byzantine:
            mode = ReadMode.LINEARIZABLE  # never one replica's local state (see the module doc)
        while deadline - loop.time() > 0:
            node = tracker.stale_target() if mode is ReadMode.STALE else tracker.target()
            attempts += 1
            response = await self._call(node, Op.GET, key, read_mode=mode, retry=attempts > 1)
            now = loop.time()
            if response is None:
                last_error = f"{node} did not answer within {self._attempt_timeout_s} s"
                misses = await self._missed(misses)
                continue
            if response.outcome is Outcome.OK:
                if mode is ReadMode.STALE:
                    tracker.answered(node, now, response)
                else:
                    node = self._served(node, now, response)
                return Answer(Outcome.OK, response.value, None, node, attempts)
            tracker.answered(node, now, response)
            last_error = self._why(node, response)
            if response.outcome is Outcome.OVERLOADED:
                return Answer(Outcome.OVERLOADED, None, last_error, node, attempts)
            misses = await self._missed(misses)
        return Answer(Outcome.NOT_LEADER, None, f"no leader answered the read: {last_error}", None, attempts)

    # -- writes -------------------------------------------------------------------------------------

    def start_write(self, write: WriteOp, session: Session, then: Callable[[FirstAttempt], None]) -> None:
        """The first attempt of `write` in `session` (registered), without a task or a future: `then` is
        called with its node and response (None: no answer within `attempt_timeout_s`), from the
        endpoint's reading, and hands an OK to `served_write` or anything else to `write(first=...)`.
        Not for PBFT (`byzantine`: its answers need a quorum of replicas, its retries go to all).

        Why: a plain PUT is the gateway's hot path, and an OK first attempt is nearly every write; a task
        and a chain of coroutines per request were a sixth of the gateway's CPU per write (py-spy, 64
        closed-loop clients)."""
        assert session.client_id != 0 and not self.byzantine
        endpoint = self.endpoint
        tracker = self.tracker
        node = tracker.target()
        now = endpoint.loop_time()
        tracker.attempted(node, now)

        def answered(response: ClientResponse | None) -> None:
            self._attempt_ended(node, response)
            then((node, response))

        endpoint.send(
            node,
            write.op,
            write.key,
            write.value,
            write.expected,
            session.client_id,
            session.seq,
            ReadMode.LINEARIZABLE,
            self._attempt_timeout_s,
            answered,
        )

    def end_silences(self, now: float) -> list[NodeId]:
        """End the attempts at every node silent for `silence_s` (`LeaderTracker.silent_nodes`) now, as
        timeouts, so their requests go on elsewhere instead of waiting out their attempt timeouts.
        Returns the nodes newly found silent. Not for PBFT (a request waits on a quorum of replicas)."""
        tracker = self.tracker
        newly = []
        for node in tracker.silent_nodes(now, self.silence_s):
            ended = self.endpoint.expire(node)
            # a suspect is found silent again only when asked again meanwhile (else it would never be)
            if (ended or node not in tracker.suspects) and tracker.suspect(node, now):
                newly.append(node)
        return newly

    def served_write(self, node: NodeId, response: ClientResponse) -> Answer:
        """The answer to a write whose first attempt (`start_write`) `node` answered OK."""
        node = self._served(node, self.endpoint.loop_time(), response)
        return Answer(Outcome.OK, response.value, None, node, 1)

    async def write(
        self,
        write: WriteOp,
        session: Session,
        deadline: float,
        *,
        maybe_applied: bool = False,
        first: FirstAttempt | None = None,
    ) -> tuple[Answer, bool]:
        """Send `write` in `session` (its `client_id` and `seq`) until a definite answer or `deadline`.

        `maybe_applied`: an earlier attempt with this `(client_id, seq)` may have been applied (a resumed
        write). `first`: the write's first attempt was made already (`start_write`), with this node and
        response; it is judged here like any attempt (even past the deadline). Returns the answer and
        whether an attempt may have been applied; `session.seq` is left as it was (the caller moves it on
        or pins the session), except that an expired session is reset.
        """
        loop = asyncio.get_running_loop()
        tracker = self.tracker
        attempts = 0
        misses = 0
        refusal = Outcome.NOT_LEADER
        last_error = "no node answered in time"
        sent = 0  # requests sent for this write, registrations included (a PBFT retry goes to all)
        while first is not None or deadline - loop.time() > 0:
            if first is not None:
                node, response = first
                first = None
                attempts += 1
                sent += 1
            elif session.client_id == 0:
                if maybe_applied:
                    break  # the session that may have applied it is gone: the outcome is unknown
                node = tracker.target()
                sent += 1
                response = await self._call(node, Op.REGISTER, "", retry=sent > 1)
                now = loop.time()
                if response is None:
                    last_error = f"{node} did not answer a registration within {self._attempt_timeout_s} s"
                    misses = await self._missed(misses)
                    continue
                if response.outcome is Outcome.OK and response.client_id > 0:
                    self._served(node, now, response)
                    session.registered(response.client_id)
                    if self._on_register is not None:
                        self._on_register()
                    continue
                tracker.answered(node, now, response)
                last_error = self._why(node, response)
                if response.outcome is Outcome.OVERLOADED:
                    return Answer(Outcome.OVERLOADED, None, last_error, node, attempts), False
                misses = await self._missed(misses)
                continue
            else:
                node = tracker.target()
                attempts += 1
                sent += 1
                response = await self._call(
                    node,
                    write.op,
                    write.key,
                    value=write.value,
                    expected=write.expected,
                    client_id=session.client_id,
                    seq=session.seq,
                    retry=sent > 1,
                )
            now = loop.time()
            if response is None:
                maybe_applied = True
                last_error = f"{node} did not answer within {self._attempt_timeout_s} s"
                misses = await self._missed(misses)
                continue
            outcome = response.outcome
            if outcome is Outcome.OK or outcome is Outcome.CAS_MISMATCH:
                node = self._served(node, now, response)
                error = None
                if outcome is Outcome.CAS_MISMATCH:
                    held = "no value" if response.value is None else "another value"
                    error = f"compare failed: the key holds {held}"
                return Answer(outcome, response.value, error, node, attempts), maybe_applied
            tracker.answered(node, now, response)
            last_error = self._why(node, response)
            if outcome is Outcome.UNKNOWN:
                maybe_applied = True
            elif outcome is Outcome.SESSION_EXPIRED:
                session.expired()
                if maybe_applied:
                    break
                continue  # nothing of this write was applied: register again and retry it
            elif outcome is Outcome.BAD_REQUEST:
                if maybe_applied:
                    break
                return Answer(outcome, None, last_error, node, attempts), False
            elif outcome is Outcome.OVERLOADED:
                refusal = Outcome.OVERLOADED
                if not maybe_applied:
                    return Answer(outcome, None, last_error, node, attempts), False
            else:
                refusal = Outcome.NOT_LEADER
            misses = await self._missed(misses)
        if maybe_applied:
            why = f"the write may or may not have been applied ({last_error})"
            return Answer(Outcome.UNKNOWN, None, why, None, attempts), True
        return Answer(refusal, None, f"no leader took the write: {last_error}", None, attempts), False

    # -- plumbing -----------------------------------------------------------------------------------

    async def _call(
        self,
        node: NodeId,
        op: Op,
        key: str,
        *,
        value: str | None = None,
        expected: str | None = None,
        client_id: int = 0,
        seq: int = 0,
        read_mode: ReadMode = ReadMode.LINEARIZABLE,
        retry: bool = False,
    ) -> ClientResponse | None:
        """One attempt at `node`; a PBFT retry goes to every replica (`node` first)."""
        loop = asyncio.get_running_loop()
        self.tracker.attempted(node, loop.time())
        response = await self.endpoint.call(
            node,
            op,
            key,
            value=value,
            expected=expected,
            client_id=client_id,
            seq=seq,
            read_mode=read_mode,
            timeout_s=self._attempt_timeout_s,
            to_all=self.byzantine and retry,
        )
        self._attempt_ended(node, response)
        return response

    def _attempt_ended(self, node: NodeId, response: ClientResponse | None) -> None:
        """What every attempt's end tells: a timeout to the tracker, the outcome to the attempt hook."""
        if response is None:
            self.tracker.timed_out(node, self.endpoint.loop_time())
        if self._on_attempt is not None:
            self._on_attempt(node, TIMEOUT if response is None else response.outcome.name.lower())

    def _served(self, node: NodeId, now: float, response: ClientResponse) -> NodeId:
        """`node` served a leader-only request; returns the node credited with it (PBFT: the primary)."""
        if self.byzantine:
            # f + 1 replicas answered, whoever was asked: the primary is the one their view names
            hint = response.leader_hint
            node = hint if hint is not None and hint in self.tracker.members() else node
        event = self.tracker.served(node, now, response)
        if event is not None and self._on_leadership is not None:
            self._on_leadership(event)
        return node

    async def _missed(self, misses: int) -> int:
        """Count one refusal or silence; after a full round of them (an election is under way, or the
        hints point at a dead leader) pause, so the cluster is never flooded."""
        misses += 1
        if misses >= max(1, len(self.tracker.members())):
            await asyncio.sleep(self._retry_backoff_s)
            return 0
        return misses

    @staticmethod
    def _why(node: NodeId, response: ClientResponse) -> str:
        text = f"{node}: {response.outcome.name}"
        if response.error:
            text += f" ({response.error})"
        if response.outcome is Outcome.NOT_LEADER:
            text += f", leader hint {response.leader_hint}" if response.leader_hint else ", no leader known"
        return text
