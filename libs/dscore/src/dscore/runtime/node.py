"""The asyncio driver: runs one replica's `Executor` on a `Transport`, a `Storage` and real timers.

All the replica's logic (decoding and rejecting input, duplicate suppression, client requests and
sessions, reads, membership settlement, compaction, the `Ready` order) lives in the sans-I/O
`dscore.replica.executor.Executor`, which the simulator drives too. This module only waits:

1. a reader task moves deliveries from the transport into a bounded buffer;
2. the loop task sleeps until a delivery arrives, local work is asked for, or the next tick is due;
3. it feeds the executor in bulk (every buffered delivery, the ticks that are due), then carries out
   each `Work` in order: send the replies, `Storage.save` the write, send the messages, `done`, and hand
   saved positions to the transport as a hint; then it settles local futures from the executor's events.

Batching is where the throughput comes from: many messages and client commands go into one `ready()`,
one save and one send.

Ticks follow the event loop's clock. Missed ticks are caught up only `max_catchup_ticks` at a time: a
loop stall (GC, a slow save, CPU starvation on a shared machine) delays every node of a process alike,
and replaying all of its ticks at once would make followers time out on a leader that did nothing wrong.
The ticks beyond that are not lost from the core's clock, though: they are reported as skipped
(`Executor.skip_ticks`, which moves Raft's lease clock on without firing timeouts), before anything that
arrived during the stall is stepped.

`crash()` simulates kill -9: the tasks are cancelled where they stand and nothing is flushed; whatever
`Storage` holds is all that survives. `stop()` is the graceful variant. An unexpected exception in a task
(a bug: bad input never raises) puts the runtime in the FAILED state: `failure` holds the error and
`wait_failed()` returns it, so a process main can log it and exit non-zero for its supervisor to restart it
(see `dscore.runtime.process`).

Joining a running cluster (decided after etcd, where a new member is started with the current member
list and `--initial-cluster-state=existing`): start the runtime with a *joining* core factory (for Raft,
`RaftNode(join=True)`, e.g. `RaftCoreFactory.joining()`), `members` = the bootstrap configuration plus this
node, and `known_peers` = the cluster's current members. Its core then has the bootstrap configuration
without itself: it never campaigns, and it learns its real configuration from the leader's log or
snapshot. The other running nodes must be told about the new one too (`introduce()`), or a follower whose
log lags behind the change would drop messages from a leader added after its log ends.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from dscore.core.client_messages import ClientRequest, ClientResponse, Outcome
from dscore.core.errors import ConfigError, LocalError, NotLeaderError
from dscore.core.ids import NodeId
from dscore.metrics import NodeMetrics, TransportStatsView
from dscore.protocols.contract import DurableState, ProtocolCore, Reconfigurable
from dscore.replica.executor import (
    ChangeRejectedError,
    ChangeSettled,
    Counters,
    Executor,
    ExecutorConfig,
    LeadershipChanged,
    LocalResponse,
    PeerRefused,
    StorageWentBack,
    Work,
)
from dscore.runtime.errors import (
    LeadershipLostError,
    MembershipChangeRejectedError,
    ReadFailedError,
    RuntimeStoppedError,
    StorageWentBackError,
)
from dscore.statemachine.kv import KvStateMachine, StateMachine
from dscore.storage.base import Storage, WriteBatch
from dscore.transport.base import Delivery, Transport

log = logging.getLogger(__name__)

#: seconds per tick by default; see `dscore.settings` for why
DEFAULT_TICK_INTERVAL_S = 0.01

#: builds a core: (this node, the other members, injected randomness, what storage kept)
CoreFactory = Callable[[NodeId, tuple[NodeId, ...], random.Random, DurableState], ProtocolCore]

#: builds the replicated state machine (the kv store by default; tests plug in broken ones)
StateMachineFactory = Callable[[], StateMachine]


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """The runtime's knobs; `dscore.settings.NodeSettings` builds one from the environment."""

    #: seconds per core tick (every protocol timeout is counted in ticks)
    tick_interval_s: float = DEFAULT_TICK_INTERVAL_S
    #: at most this many overdue ticks fire at once after a stall; the rest are skipped
    max_catchup_ticks: int = 2
    #: inbound messages fed to the executor per loop iteration before its work is carried out
    max_inbound_batch: int = 4_096
    #: inbound messages received and not yet fed; the reader stops receiving when full
    max_inbound_buffer: int = 16_384
    #: client sessions the state machine keeps (least recently used evicted)
    max_sessions: int = KvStateMachine.DEFAULT_MAX_SESSIONS
    #: the executor's knobs (pending requests, batching, positions, compaction)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    def __post_init__(self) -> None:
        if not 0 < self.tick_interval_s <= 10:
            raise ConfigError(f"tick_interval_s must be in (0, 10], got {self.tick_interval_s}")
        for name in ("max_catchup_ticks", "max_inbound_batch", "max_inbound_buffer", "max_sessions"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """A point-in-time view of one node, for displays and metrics."""

    node_id: NodeId
    running: bool
    role: str
    leader_id: NodeId | None
    term: int | None
    commit_index: int | None
    applied_index: int
    incarnation: int
    #: the configuration as this node sees it (the static members for cores without one)
    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()
    removed: tuple[NodeId, ...] = ()


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"
    CRASHED = "crashed"
    FAILED = "failed"


class _Waker:
    """Lets the loop task sleep until a deadline or until someone has work for it (one waiter).

    The deadline timer is kept across waits while the deadline does not change (it is the next tick),
    so a busy loop does not arm and cancel a timer on every iteration.
    """

    __slots__ = ("_kicked", "_loop", "_timer", "_timer_at", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None
        self._kicked = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def kick(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        else:
            self._kicked = True

    def _fire(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_until(self, deadline: float) -> None:
        if self._kicked:
            self._kicked = False
            return
        if self._timer is None or self._timer_at != deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._fire)
            self._timer_at = deadline
        waiter = self._loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None
            self._kicked = False

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class NodeRuntime:
    """Runs one replica (a protocol core, a state machine, their executor). See the module docstring.

    `members` is the configuration the core is built from (the factory gets `members` without this node
    as its peers); for a Raft core, that is the cluster's bootstrap configuration, used only while the
    node's storage holds none. `known_peers` are further nodes to accept messages from before this node's
    configuration lists them (`introduce()` adds more later). `auth_key` authenticates every frame (the
    cluster key, from settings or a Kubernetes Secret; never logged); `cluster_settings` is the description
    of the cluster-wide settings (`dscore.settings.ClusterSettings.description()`), whose fingerprint every
    envelope carries so that a peer set up differently is refused by name.
    """

    def __init__(
        self,
        node_id: NodeId,
        members: tuple[NodeId, ...],
        make_core: CoreFactory,
        transport: Transport,
        storage: Storage,
        *,
        config: RuntimeConfig | None = None,
        seed: int = 0,
        on_change: Callable[[NodeRuntime], None] | None = None,
        known_peers: Iterable[NodeId] = (),
        make_state_machine: StateMachineFactory | None = None,
        auth_key: bytes | None = None,
        cluster_settings: Mapping[str, str] | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        if node_id not in members:
            raise ConfigError(f"node {node_id!r} is not one of the members {members}")
        if len(set(members)) != len(members):
            raise ConfigError(f"duplicate member ids in {members}")
        self.node_id = node_id
        self.members = members
        self.peers = tuple(m for m in members if m != node_id)
        self._known_peers = tuple(known_peers)
        self.config = config or RuntimeConfig()
        self._make_core = make_core
        self._make_sm: StateMachineFactory = make_state_machine or (
            lambda: KvStateMachine(self.config.max_sessions)
        )
        self._transport = transport
        self._storage = storage
        self._auth_key = auth_key
        #: where persist and commit latencies go (`dscore.metrics`); the counters are read at scrape time
        self.metrics = metrics
        self._cluster_settings = dict(cluster_settings) if cluster_settings is not None else None
        self._seed = seed
        self._on_change = on_change
        self._state = _State.NEW
        self._executor: Executor | None = None
        self.incarnation = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._waker: _Waker | None = None
        self._next_tick_at = 0.0
        self._inbound: deque[Delivery] = deque()
        self._inbound_space = asyncio.Event()
        # Local requests (membership changes, barriers), settled from the executor's events.
        self._changes: dict[int, asyncio.Future[int]] = {}
        self._local: dict[int, asyncio.Future[ClientResponse]] = {}
        self._next_local_id = 0
        self.saves = 0
        self.failure: BaseException | None = None
        self._failed = asyncio.Event()
        self._leadership_changed = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bump the incarnation, load stored state, rebuild the replica, start the loop.

        The bump comes first: it fences off an earlier process of this node that may still be running
        (a pod deleted by force, a stuck kubelet), whose saves the storage refuses from then on. Loading
        first would leave a window in which that process could still save, say, a vote and send it, and
        this one would run from a state without it and could vote twice in that term."""
        if self._state is not _State.NEW:
            raise LocalError(f"runtime of {self.node_id} was already started (state {self._state.value})")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.incarnation = await self._storage.bump_incarnation()
        stored = await self._storage.load()
        rng = random.Random(f"{self._seed}/{self.node_id}/{self.incarnation}")
        core = self._make_core(self.node_id, self.peers, rng, stored.durable)
        self._executor = Executor(
            self.node_id,
            core,
            self._make_sm(),
            members=self.members,
            stored=stored,
            incarnation=self.incarnation,
            config=self.config.executor,
            known_peers=self._known_peers,
            auth_key=self._auth_key,
            cluster_settings=self._cluster_settings,
            # used only if the storage has none yet (its first start): then kept there for good
            storage_epoch=secrets.randbits(63) + 1,
        )
        self.executor.replay_ends = await self._transport.start(stored.input_positions)
        self._waker = _Waker(loop)
        self._next_tick_at = loop.time() + self.config.tick_interval_s
        self._state = _State.RUNNING
        self._loop_task = loop.create_task(self._run(), name=f"dscore-node-{self.node_id}")
        self._loop_task.add_done_callback(self._task_done)
        self._reader_task = loop.create_task(self._read_inbox(), name=f"dscore-reader-{self.node_id}")
        self._reader_task.add_done_callback(self._task_done)

    async def stop(self) -> None:
        """Graceful stop: cancel the loop, wait for it, fail what is pending, close the transport."""
        if self._state is not _State.RUNNING:
            return
        self._state = _State.STOPPED
        tasks = [t for t in (self._loop_task, self._reader_task) if t is not None]
        for task in tasks:
            task.cancel()
        self._kick()  # a loop task that swallowed its cancellation wakes now and sees the state
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_local(f"node {self.node_id} stopped")
        if self._waker is not None:
            self._waker.close()
        await self._transport.close()

    def crash(self) -> None:
        """kill -9: stop where we stand and flush nothing. Only what `Storage` holds survives."""
        if self._state is not _State.RUNNING:
            return
        self._state = _State.CRASHED
        for task in (self._loop_task, self._reader_task):
            if task is not None:
                task.cancel()
        self._fail_local(f"node {self.node_id} crashed")
        if self._waker is not None:
            self._waker.close()
        self._inbound.clear()

    @property
    def running(self) -> bool:
        return self._state is _State.RUNNING

    @property
    def state(self) -> str:
        return self._state.value

    async def wait_failed(self) -> BaseException:
        """Wait until the runtime fails (an unexpected error in its loop) and return the error."""
        await self._failed.wait()
        assert self.failure is not None
        return self.failure

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None or self._state is not _State.RUNNING:
            return
        log.error("node %s failed: %r", self.node_id, error, exc_info=error)
        self.failure = error
        self.crash()
        self._state = _State.FAILED
        self._failed.set()

    # -- views --------------------------------------------------------------------------------------

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            raise LocalError(f"runtime of {self.node_id} is not started")
        return self._executor

    @property
    def core(self) -> ProtocolCore:
        return self.executor.core

    @property
    def state_machine(self) -> StateMachine:
        return self.executor.sm

    @property
    def leader_id(self) -> NodeId | None:
        return self._executor.leader_id if self._executor is not None and self.running else None

    @property
    def role(self) -> enum.Enum | None:
        return self._executor.core.role if self._executor is not None and self.running else None

    @property
    def is_leader(self) -> bool:
        return self.running and self._executor is not None and self._executor.is_leader

    @property
    def voters(self) -> tuple[NodeId, ...]:
        return self._executor.voters if self._executor is not None else self.members

    @property
    def learners(self) -> tuple[NodeId, ...]:
        return self._executor.learners if self._executor is not None else ()

    @property
    def removed(self) -> tuple[NodeId, ...]:
        """The ids ever removed from the configuration (adding one again is refused)."""
        return self._executor.removed if self._executor is not None else ()

    @property
    def accepted_senders(self) -> frozenset[NodeId]:
        """The nodes whose messages this runtime steps into its core now (others are `unknown_sender`)."""
        return self.executor.accepted_senders

    @property
    def rejected(self) -> dict[str, int]:
        """Inbound messages dropped before the core, by reason."""
        return self._executor.counters.rejected if self._executor is not None else {}

    # -- what the metrics read at scrape time (`dscore.metrics.NodeSource`) ---------------------------

    def executor_counters(self) -> Counters | None:
        return self._executor.counters if self._executor is not None else None

    def protocol_counters(self) -> Mapping[str, int]:
        counters = getattr(self._executor.core, "counters", None) if self._executor is not None else None
        if isinstance(counters, dict):
            return counters
        # a core that counts in `contract.Counters` (PBFT: dropped input and `primary_suspected`)
        dropped = getattr(counters, "dropped", None)
        return dropped if isinstance(dropped, dict) else {}

    def transport_stats(self) -> TransportStatsView | None:
        stats = getattr(self._transport, "stats", None)
        return stats if isinstance(stats, TransportStatsView) else None

    def message_counts(self) -> tuple[Mapping[str, int], Mapping[str, int]]:
        """Messages stepped into the core and sent, by kind."""
        counters = self.executor_counters()
        if counters is None:
            return {}, {}
        return counters.messages_in, counters.messages_out

    def status(self) -> NodeStatus:
        executor = self._executor
        core = executor.core if executor is not None else None
        term = getattr(core, "term", None)
        commit = getattr(core, "commit_index", None)
        return NodeStatus(
            node_id=self.node_id,
            running=self.running,
            role=core.role.name.lower() if core is not None and self.running else "down",
            leader_id=self.leader_id,
            term=term if isinstance(term, int) else None,
            commit_index=commit if isinstance(commit, int) else None,
            applied_index=executor.sm.applied_index if executor is not None else 0,
            incarnation=self.incarnation,
            voters=self.voters,
            learners=self.learners,
            removed=self.removed,
        )

    # -- local requests -----------------------------------------------------------------------------

    def introduce(self, node_id: NodeId) -> None:
        """Accept messages from `node_id` from now on, even while this node's configuration does not list
        it (a node being added; see the module docstring). Forgotten again if a configuration drops it."""
        if node_id not in self._known_peers:
            self._known_peers = (*self._known_peers, node_id)
        if self._executor is not None:
            self._executor.introduce(node_id)

    async def barrier(self, timeout_s: float) -> None:
        """On the leader: wait until every entry its log holds now is committed and applied here (a no-op
        goes through the log behind them). Raises `NotLeaderError`, `ReadFailedError`, `TimeoutError`."""
        self._check_running()
        future = self._local_future()
        request_id = self._next_local_id
        self.executor.barrier(request_id)
        self._kick()
        response = await self._await_local(request_id, future, timeout_s)
        if response.outcome is Outcome.NOT_LEADER:
            raise NotLeaderError(f"{self.node_id} is not the leader", response.leader_hint)
        if response.outcome is not Outcome.OK:
            raise ReadFailedError(f"barrier failed: {response.outcome.name} {response.error}", self.leader_id)

    async def hand_over(self, timeout_s: float) -> NodeId | None:
        """If this node leads, hand leadership to its most caught-up voter and wait (at most `timeout_s`,
        then `TimeoutError`) until it no longer leads; returns the voter asked, or None if there was
        nothing to hand over. A graceful stop calls this first, so the cluster does not wait an election
        timeout for a new leader."""
        self._check_running()
        target = self.executor.hand_over()
        if target is None:
            return None
        self._kick()
        assert self._loop is not None
        deadline = self._loop.time() + timeout_s
        async with asyncio.timeout_at(deadline):
            while self.is_leader:
                self._leadership_changed.clear()
                await self._leadership_changed.wait()
        return target

    async def request(self, request: ClientRequest, timeout_s: float) -> ClientResponse:
        """Serve one client request in-process (tools and tests; clients use the transport)."""
        self._check_running()
        future = self._local_future()
        self.executor.submit_local(
            ClientRequest(
                self._next_local_id,
                request.op,
                request.key,
                request.value,
                request.expected,
                request.client_id,
                request.seq,
                request.read_mode,
            )
        )
        self._kick()
        return await self._await_local(self._next_local_id, future, timeout_s)

    def _local_future(self) -> asyncio.Future[ClientResponse]:
        assert self._loop is not None
        self._next_local_id += 1
        future: asyncio.Future[ClientResponse] = self._loop.create_future()
        self._local[self._next_local_id] = future
        return future

    async def _await_local(
        self, request_id: int, future: asyncio.Future[ClientResponse], timeout_s: float
    ) -> ClientResponse:
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        finally:
            self._local.pop(request_id, None)

    # -- membership ---------------------------------------------------------------------------------

    async def add_member(self, node_id: NodeId, *, as_learner: bool = False, timeout_s: float) -> int:
        """Add `node_id` to the configuration as a voter (or a learner); return the change's log index once
        it is committed. Start the new node first (see the module docstring), and prefer adding a learner
        and promoting it once caught up: a voter with an empty log counts for the quorum at once.

        Raises `NotLeaderError` (with `leader_hint`) on a follower and `MembershipChangeRejectedError` when
        the core refuses the change or another change asked of this node is in progress: nothing was
        proposed. `LeadershipLostError`, `RuntimeStoppedError` or `TimeoutError`: the change may still take
        effect (check `voters` / `learners` on the next leader).
        """
        if as_learner:
            return await self._change_membership(
                f"add learner {node_id}", lambda c: c.add_learner(node_id), timeout_s
            )
        return await self._change_membership(
            f"add voter {node_id}", lambda c: c.add_voter(node_id), timeout_s
        )

    async def remove_member(self, node_id: NodeId, *, timeout_s: float) -> int:
        """Remove voter or learner `node_id` (it may be this leader: the core then keeps leading until the
        removal is committed, and steps down right after). Resolves and raises like `add_member`."""

        def propose(core: Reconfigurable) -> int:
            if node_id in core.learners:
                return core.remove_learner(node_id)
            return core.remove_voter(node_id)

        return await self._change_membership(f"remove {node_id}", propose, timeout_s)

    async def promote(self, node_id: NodeId, *, timeout_s: float) -> int:
        """Make learner `node_id` a voter. Resolves and raises like `add_member`."""
        return await self._change_membership(
            f"promote {node_id}", lambda c: c.promote_learner(node_id), timeout_s
        )

    async def _change_membership(
        self, what: str, propose: Callable[[Reconfigurable], int], timeout_s: float
    ) -> int:
        self._check_running()
        try:
            token = self.executor.request_change(what, propose)
        except ChangeRejectedError as error:
            raise MembershipChangeRejectedError(str(error), error.refusal) from error
        assert self._loop is not None
        future: asyncio.Future[int] = self._loop.create_future()
        self._changes[token] = future
        self._kick()
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        finally:
            self._changes.pop(token, None)

    # -- the loop -----------------------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._state is not _State.RUNNING:
            raise RuntimeStoppedError(f"node {self.node_id} is {self._state.value}")

    def _kick(self) -> None:
        if self._waker is not None:
            self._waker.kick()

    async def _read_inbox(self) -> None:
        receive = self._transport.receive
        inbound = self._inbound
        bound = self.config.max_inbound_buffer
        batch_max = self.config.max_inbound_batch
        space = self._inbound_space
        while True:
            while len(inbound) >= bound:
                space.clear()
                await space.wait()
            batch = await receive(min(batch_max, bound - len(inbound)))
            if self.metrics is not None:
                self._observe_hops(self.metrics, batch)
            inbound.extend(batch)
            self._kick()

    @staticmethod
    def _observe_hops(metrics: NodeMetrics, batch: Sequence[Delivery]) -> None:
        """Each message's time from the sender's transport to this one (wall clocks: on one machine or
        NTP-synchronised ones; a clock behind the sender's counts as 0)."""
        now_ms = time.time() * 1000.0
        observe = metrics.observe_hop_seconds
        for delivery in batch:
            if delivery.sent_at_ms is not None:
                observe(max(0.0, now_ms - delivery.sent_at_ms) / 1000.0)

    async def _run(self) -> None:
        executor = self.executor
        waker = self._waker
        assert waker is not None and self._loop is not None
        clock = self._loop.time
        metrics = self.metrics
        # Not `while True`: a cancellation that something below swallowed (Python 3.11's asyncio.wait_for
        # can, CPython gh-86296) must not keep a stopped node running; it ends at the next wake instead.
        while self._state is _State.RUNNING:
            await waker.wait_until(self._next_tick_at)
            executor.now_s = clock()
            self._feed(executor)
            while (work := executor.poll()) is not None:
                await self._carry_out(work)
                executor.now_s = clock()
                executor.done(work)
                if work.commit is not None:
                    await self._transport.commit(work.commit)
            if executor.events:
                self._settle(executor)
            if metrics is not None and executor.commit_latencies_s:
                for latency in executor.commit_latencies_s:
                    metrics.observe_commit_seconds(latency)
                executor.commit_latencies_s.clear()

    def _feed(self, executor: Executor) -> None:
        """The ticks that are due, then deliveries: all before one round of work.

        Ticks first, so the core's clock has counted the time that passed before it sees what arrived
        meanwhile. After a stall only `max_catchup_ticks` are replayed; the rest are reported as skipped
        (`Executor.skip_ticks`), so a Raft leader's lease ends when it would have: counting only the
        replayed ticks, a leader stalled for 50 ticks would serve lease reads for 48 ticks too long, while
        its followers' stickiness ran out on time and a new leader took writes."""
        assert self._loop is not None
        now = self._loop.time()
        if now >= self._next_tick_at:
            interval = self.config.tick_interval_s
            due = int((now - self._next_tick_at) / interval) + 1
            replayed = min(due, self.config.max_catchup_ticks)
            if due > replayed:
                executor.skip_ticks(due - replayed)
            for _ in range(replayed):
                executor.tick()
            self._next_tick_at += due * interval
            if self._next_tick_at <= now:  # float rounding: never a tick in the past
                self._next_tick_at = now + interval
        inbound = self._inbound
        count = min(len(inbound), self.config.max_inbound_batch)
        if count:
            receive = executor.receive
            for _ in range(count):
                delivery = inbound.popleft()
                receive(delivery.data, delivery.channel, delivery.offset)
            if not self._inbound_space.is_set():
                self._inbound_space.set()
            if inbound:
                self._kick()  # more than one batch waiting: come back without sleeping

    async def _carry_out(self, work: Work) -> None:
        """One `Work`, in the contract's order (the caller calls `done` afterwards).

        With `work.send_during_write` (a Raft leader's appends) the messages go while the write is
        saved: the followers' round trip overlaps the leader's own save instead of following it."""
        transport = self._transport
        if work.replies:
            await transport.send(work.replies)
        write = work.write
        if write is None:
            if work.messages:
                await transport.send(work.messages)
            return
        if work.send_during_write:
            saving = asyncio.ensure_future(self._save(write))
            try:
                await transport.send(work.messages)
            except BaseException:
                # The node fails or stops: the write is dropped as a crash would drop it (safe: the
                # core counted nothing of it), and no save outlives this call.
                saving.cancel()
                await asyncio.wait([saving])
                raise
            await saving
            return
        await self._save(write)
        if work.messages:
            await transport.send(work.messages)

    async def _save(self, write: WriteBatch) -> None:
        metrics = self.metrics
        if metrics is None:
            await self._storage.save(write)
        else:
            clock = time.perf_counter
            started = clock()
            await self._storage.save(write)
            metrics.observe_persist_seconds(clock() - started)
        self.saves += 1

    def _settle(self, executor: Executor) -> None:
        events = executor.events
        executor.events = []
        changed = False
        for event in events:
            if type(event) is LocalResponse:
                future = self._local.get(event.response.request_id)
                if future is not None and not future.done():
                    future.set_result(event.response)
            elif type(event) is ChangeSettled:
                change = self._changes.get(event.token)
                if change is None or change.done():
                    continue
                if event.error is None:
                    change.set_result(event.index)
                elif isinstance(event.error, NotLeaderError):
                    change.set_exception(event.error)
                elif isinstance(event.error, ChangeRejectedError):
                    change.set_exception(MembershipChangeRejectedError(str(event.error), event.error.refusal))
                else:
                    change.set_exception(LeadershipLostError(str(event.error), executor.leader_id))
            elif type(event) is LeadershipChanged:
                changed = True
                self._leadership_changed.set()
            elif type(event) is PeerRefused:
                log.error("node %s refuses %s: %s", self.node_id, event.peer, event.error)
            elif type(event) is StorageWentBack:
                raise StorageWentBackError(f"node {self.node_id}: {event.describe()}")
        if changed and self._on_change is not None:
            self._on_change(self)

    def _fail_local(self, reason: str) -> None:
        futures: list[asyncio.Future[ClientResponse] | asyncio.Future[int]] = [
            *self._local.values(),
            *self._changes.values(),
        ]
        for future in futures:
            if not future.done():
                future.set_exception(RuntimeStoppedError(reason))
        if self._on_change is not None:
            self._on_change(self)
