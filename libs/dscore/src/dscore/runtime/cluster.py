"""`EmbeddedCluster`: n replicas in one process, on a `MemoryNetwork` and `MemoryStorage`s.

The cluster owns the network and one storage per node; a node's runtime is disposable. `kill(node)` is
kill -9 (the runtime is crashed and discarded), while its storage object, the stand-in for a disk, is kept,
and so is its inbox, a retained log like a Kafka partition: `restart(node)` builds a new runtime from that
storage, with a bumped incarnation, which resumes reading its inbox after the positions the storage kept.
This is the default way to run dscore: no servers, real protocol code, real codec, real faults.

Every frame is authenticated (HMAC-SHA256) with a cluster key: a fresh random one per cluster unless
`auth_key` is given; with `cluster_settings` (a `ClusterSettings.description()`), nodes also refuse
peers whose cluster-wide settings differ.

Clients talk to the nodes over the same network (`client_endpoint(name)` gives an endpoint with its own
inbox for replies; `KvClient`s share it) with the wire client protocol: they find the leader from replies.
`leader()`, `statuses()` and `wait_for_leader()` read the runtimes' memory, for reports and tests only.

Membership. The nodes given at construction are the bootstrap configuration; a running Raft cluster then
grows or shrinks one server at a time. `add_node(node, as_learner=...)` attaches the node to the network,
introduces it to every running node, starts it as a *joining* node (its core does not count itself a
member and learns the configuration from the leader's log; see `NodeRuntime`) and has the leader add it;
`promote_node` makes a learner a voter; `remove_node` has the leader remove a node (the leader itself
included: it steps down once the removal commits), then stops it for good. Each call
resolves once the change is committed, retrying on whichever node leads (a retry after an unknown outcome
first looks whether the change is already in the leader's log). `node_ids` is always the current member
list, so `statuses()`, `leader()`, `live_nodes()` and `KvClient` follow the changes. Removed ids are not
reused. The runtime API underneath (`NodeRuntime.add_member`, ...) changes the configuration without
starting, introducing or stopping anything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from dscore.core.errors import ConfigError, LocalError, NotLeaderError
from dscore.core.ids import NodeId
from dscore.metrics import NodeCollector, NodeMetrics, TransportStatsView
from dscore.protocols.contract import DurableState
from dscore.protocols.pbft import PbftConfig, PbftNode
from dscore.protocols.raft import RaftConfig, RaftNode
from dscore.replica.executor import Counters
from dscore.runtime.client import ClientEndpoint
from dscore.runtime.errors import MembershipChangeRejectedError, OutcomeUnknownError, ReadFailedError
from dscore.runtime.node import CoreFactory, NodeRuntime, NodeStatus, RuntimeConfig, StateMachineFactory
from dscore.statemachine.kv import valid_batch
from dscore.storage.base import Storage
from dscore.storage.memory import MemoryStorage
from dscore.transport.memory import DEFAULT_INBOX_MAX_MESSAGES, MemoryNetwork

#: elections remembered by `EmbeddedCluster.elections` (older ones are dropped)
MAX_ELECTIONS_KEPT = 10_000

#: how long `add_node`, `promote_node` and `remove_node` try by default
DEFAULT_CHANGE_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class RaftCoreFactory:
    """Builds `RaftNode`s for the runtime (a `CoreFactory`); `peers` is the bootstrap configuration.

    `joining()` is the factory for a node that joins a running cluster: `RaftNode(join=True)` does not add
    itself to the bootstrap configuration, so a fresh joiner never campaigns and learns the configuration
    (itself included) from the leader's log or snapshot.
    """

    config: RaftConfig = dataclasses.field(default_factory=RaftConfig)
    join: bool = False

    def __call__(
        self, node_id: NodeId, peers: Sequence[NodeId], rng: random.Random, durable: DurableState | None
    ) -> RaftNode:
        return RaftNode(node_id, self.config, rng, durable, peers, join=self.join)

    def joining(self) -> RaftCoreFactory:
        return dataclasses.replace(self, join=True)


@dataclass(frozen=True, slots=True)
class PbftCoreFactory:
    """Builds `PbftNode`s for the runtime. Each replica gets its own row of pair keys
    (`dscore.protocols.pbft.auth`), derived from `secret`; `EmbeddedCluster` derives the secret from its
    cluster key (`with_secret`), so the embedded cluster authenticates every pair of replicas. Clients
    there wait for `reply_quorum` (f + 1) matching replies."""

    config: PbftConfig = dataclasses.field(default_factory=PbftConfig)
    secret: bytes | None = None

    def __call__(
        self, node_id: NodeId, peers: Sequence[NodeId], rng: random.Random, durable: DurableState | None
    ) -> PbftNode:
        if self.secret is None:
            raise ConfigError("a PBFT factory needs the secret its pair keys come from (with_secret)")
        return PbftNode.factory(self.config, secret=self.secret, valid_request=valid_batch)(
            node_id, peers, rng, durable
        )

    def with_secret(self, secret: bytes) -> PbftCoreFactory:
        return dataclasses.replace(self, secret=secret)

    def reply_quorum(self, nodes: int) -> int:
        f = self.config.faults_tolerated
        return (f if f is not None else (nodes - 1) // 3) + 1


def pair_key_secret(auth_key: bytes) -> bytes:
    """The secret PBFT's pair keys are derived from (`dscore.protocols.pbft.auth`), from the cluster key:
    a one-way function of it, so neither the key nor the pair keys appear anywhere. The embedded cluster
    and the node service (`dscore.runtime.protocols`) derive it the same way."""
    return hashlib.sha256(b"dscore-pair-keys:" + auth_key).digest()


def pbft_factory(config: PbftConfig | None = None) -> PbftCoreFactory:
    """Builds `PbftNode`s (n = 3f + 1; the secret of their pair keys comes from the cluster)."""
    return PbftCoreFactory(config if config is not None else PbftConfig())


def raft_factory(config: RaftConfig | None = None) -> RaftCoreFactory:
    """Builds `RaftNode`s (default `RaftConfig`: election timeout 10-20 ticks, heartbeat every tick)."""
    return RaftCoreFactory(config if config is not None else RaftConfig())


class _ClusterNodeSource:
    """One node of the cluster as the metrics see it (`dscore.metrics.NodeSource`), followed across its
    restarts (each one a new runtime); down while it is."""

    def __init__(self, cluster: EmbeddedCluster, node_id: NodeId) -> None:
        self._cluster = cluster
        self._node_id = node_id

    def _runtime(self) -> NodeRuntime | None:
        return self._cluster.runtime(self._node_id)

    def status(self) -> NodeStatus:
        runtime = self._cluster._runtimes.get(self._node_id)
        if runtime is None:
            return NodeStatus(self._node_id, False, "down", None, None, None, 0, 0)
        return runtime.status()

    def executor_counters(self) -> Counters | None:
        runtime = self._runtime()
        return runtime.executor_counters() if runtime is not None else None

    def protocol_counters(self) -> Mapping[str, int]:
        runtime = self._runtime()
        return runtime.protocol_counters() if runtime is not None else {}

    def transport_stats(self) -> TransportStatsView | None:
        return None

    def message_counts(self) -> tuple[Mapping[str, int], Mapping[str, int]]:
        runtime = self._runtime()
        return runtime.message_counts() if runtime is not None else ({}, {})


@dataclass(frozen=True, slots=True)
class Election:
    """A node became leader (as seen by the node itself)."""

    time_s: float
    node_id: NodeId
    term: int | None


class EmbeddedCluster:
    """n replicas in one process; see the module docstring.

    `make_joining_core` builds the core of a node added to the running cluster; by default it is
    `make_core.joining()` when the factory has one (`raft_factory()` does), and without it the cluster
    cannot grow.
    """

    def __init__(
        self,
        make_core: CoreFactory,
        size: int = 3,
        *,
        node_ids: Iterable[NodeId] | None = None,
        config: RuntimeConfig | None = None,
        seed: int = 0,
        inbox_max_messages: int = DEFAULT_INBOX_MAX_MESSAGES,
        storage_factory: Callable[[NodeId], Storage] | None = None,
        make_joining_core: CoreFactory | None = None,
        make_state_machine: StateMachineFactory | None = None,
        auth_key: bytes | None = None,
        cluster_settings: Mapping[str, str] | None = None,
        metrics: NodeCollector | None = None,
        protocol: str = "raft",
    ) -> None:
        ids = tuple(node_ids) if node_ids is not None else tuple(f"n{i}" for i in range(1, size + 1))
        if not ids:
            raise ConfigError("a cluster needs at least one node")
        #: the bootstrap configuration (every core is built from it; it never changes)
        self.initial_ids: tuple[NodeId, ...] = ids
        #: the current members: the bootstrap ones, plus those added, minus those removed
        self.node_ids: tuple[NodeId, ...] = ids
        self.config = config or RuntimeConfig()
        self.seed = seed
        self._make_core = make_core
        if make_joining_core is None:
            joining = getattr(make_core, "joining", None)
            make_joining_core = joining() if callable(joining) else None
        self._make_joining_core: CoreFactory | None = make_joining_core
        self._make_state_machine = make_state_machine
        # Authenticated by default: a key of its own unless one is given (never shown anywhere).
        self._auth_key = auth_key if auth_key is not None else secrets.token_bytes(32)
        # Cores that authenticate each pair of nodes (PBFT) get a secret derived from the cluster key.
        with_secret = getattr(make_core, "with_secret", None)
        if callable(with_secret):
            self._make_core = with_secret(pair_key_secret(self._auth_key))
        quorum = getattr(self._make_core, "reply_quorum", None)
        #: matching replies a client waits for (f + 1 for PBFT, one otherwise)
        self.reply_quorum: int = quorum(len(ids)) if callable(quorum) else 1
        self.cluster_settings = dict(cluster_settings) if cluster_settings is not None else None
        #: every node's metrics (one handle per node, kept across its restarts), when a collector is given
        self._metrics = metrics
        self._protocol = protocol
        self._node_metrics: dict[NodeId, NodeMetrics] = {}
        self.network = MemoryNetwork(ids, inbox_max_messages)
        self._endpoints: list[ClientEndpoint] = []
        self._make_storage: Callable[[NodeId], Storage] = storage_factory or (lambda _node: MemoryStorage())
        #: one stable storage per node, kept across the node's crashes (the embedded stand-in for a disk)
        self.storages: dict[NodeId, Storage] = {n: self._make_storage(n) for n in ids}
        self._joined: set[NodeId] = set()
        #: nodes removed from the cluster (their storage is kept, their id is never reused)
        self.removed: set[NodeId] = set()
        self._runtimes: dict[NodeId, NodeRuntime] = {}
        self._changed = asyncio.Event()
        #: every time a node became leader, oldest first
        self.elections: deque[Election] = deque(maxlen=MAX_ELECTIONS_KEPT)
        self._leading: set[NodeId] = set()

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        for node_id in self.node_ids:
            if node_id not in self._runtimes:
                await self._launch(node_id)

    async def stop(self) -> None:
        endpoints = self._endpoints
        self._endpoints = []
        for endpoint in endpoints:
            await endpoint.close()
        runtimes = list(self._runtimes.values())
        self._runtimes.clear()
        for runtime in runtimes:
            await runtime.stop()

    async def client_endpoint(self, name: str) -> ClientEndpoint:
        """A started client endpoint on this cluster's network (its own inbox for replies), talking to the
        current members; closed with the cluster. `KvClient`s share it."""
        endpoint = ClientEndpoint(
            self.network.add_client(name),
            lambda: self.node_ids,
            key=self._auth_key,
            reply_quorum=self.reply_quorum,
        )
        await endpoint.start()
        self._endpoints.append(endpoint)
        return endpoint

    async def __aenter__(self) -> EmbeddedCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _launch(self, node_id: NodeId) -> NodeRuntime:
        if node_id in self._joined:
            assert self._make_joining_core is not None
            members, make_core = (*self.initial_ids, node_id), self._make_joining_core
        else:
            members, make_core = self.initial_ids, self._make_core
        runtime = NodeRuntime(
            node_id,
            members,
            make_core,
            self.network.endpoint(node_id),
            self.storages[node_id],
            config=self.config,
            seed=self.seed,
            on_change=self._on_change,
            known_peers=self.node_ids,
            make_state_machine=self._make_state_machine,
            auth_key=self._auth_key,
            cluster_settings=self.cluster_settings,
            metrics=self._metrics_of(node_id),
        )
        self._runtimes[node_id] = runtime
        await runtime.start()
        self._changed.set()
        return runtime

    def _metrics_of(self, node_id: NodeId) -> NodeMetrics | None:
        if self._metrics is None:
            return None
        handle = self._node_metrics.get(node_id)
        if handle is None:
            source = _ClusterNodeSource(self, node_id)
            handle = self._metrics.add_node(node_id, source, protocol=self._protocol)
            self._node_metrics[node_id] = handle
        return handle

    def kill(self, node_id: NodeId) -> None:
        """Crash `node_id` (kill -9): runtime discarded, storage kept. Its inbox keeps what is sent to it
        (as a Kafka partition would), and a restart resumes after the positions its storage kept."""
        runtime = self._runtimes.pop(node_id, None)
        if runtime is None:
            raise LocalError(f"{node_id} is not running")
        runtime.crash()
        self._leading.discard(node_id)
        self._changed.set()

    async def restart(self, node_id: NodeId) -> NodeRuntime:
        """A new runtime for a killed node, from what its storage kept (incarnation bumped)."""
        if node_id not in self.storages:
            raise LocalError(f"{node_id} is not a member of this cluster")
        if node_id in self.removed:
            raise LocalError(f"{node_id} was removed from this cluster")
        if node_id in self._runtimes:
            raise LocalError(f"{node_id} is already running")
        return await self._launch(node_id)

    # -- membership ---------------------------------------------------------------------------------

    async def add_node(
        self, node_id: NodeId, *, as_learner: bool = False, timeout_s: float = DEFAULT_CHANGE_TIMEOUT_S
    ) -> None:
        """Grow the running cluster by `node_id`: attach it to the network, introduce it to every running
        node, start it as a joining node, and have the leader add it as a voter (or a learner). Returns
        once the change is committed.

        Raises `LocalError` for an id that is or was a member, `ConfigError` if this cluster cannot build
        joining cores, and `TimeoutError` (chained to the last refusal) if no leader committed the change
        in time: the node then stays started and listed, and calling `add_node` again resumes.
        """
        if node_id in self.removed:
            raise LocalError(f"{node_id} was removed from this cluster; node ids are not reused")
        if node_id not in self.node_ids:
            if self._make_joining_core is None:
                raise ConfigError("this cluster cannot grow: its core factory has no joining() variant")
            self.network.add_node(node_id)
            self.storages[node_id] = self._make_storage(node_id)
            self._joined.add(node_id)
            self.node_ids = (*self.node_ids, node_id)
            for runtime in self._runtimes.values():
                runtime.introduce(node_id)
            await self._launch(node_id)
        elif node_id not in self._joined:
            raise LocalError(f"{node_id} is already a member of this cluster")
        await self._drive_change(
            f"add {node_id}",
            lambda rt, t: rt.add_member(node_id, as_learner=as_learner, timeout_s=t),
            lambda rt: node_id in rt.voters or node_id in rt.learners,
            timeout_s,
        )

    async def promote_node(self, node_id: NodeId, *, timeout_s: float = DEFAULT_CHANGE_TIMEOUT_S) -> None:
        """Make learner `node_id` a voter; returns once the change is committed. Promote a learner that
        has caught up (compare `applied_index` in `statuses()`), or commits wait until it has."""
        if node_id not in self.node_ids:
            raise LocalError(f"{node_id} is not a member of this cluster")

        def refuse(leader: NodeRuntime) -> str | None:
            known = node_id in leader.learners or node_id in leader.voters
            return None if known else f"{node_id} is not a learner"

        await self._drive_change(
            f"promote {node_id}",
            lambda rt, t: rt.promote(node_id, timeout_s=t),
            lambda rt: node_id in rt.voters,
            timeout_s,
            refuse,
        )

    async def remove_node(self, node_id: NodeId, *, timeout_s: float = DEFAULT_CHANGE_TIMEOUT_S) -> None:
        """Shrink the running cluster: have the leader remove `node_id` (the leader itself included: it
        steps down once the removal commits), then stop its runtime for good.
        Its storage is kept in `storages`; its id is not reused. Raises `TimeoutError` like `add_node`
        (the node is then left running and listed)."""
        if node_id not in self.node_ids:
            raise LocalError(f"{node_id} is not a member of this cluster")

        def refuse(leader: NodeRuntime) -> str | None:
            return "it is the last voter" if leader.voters == (node_id,) else None

        await self._drive_change(
            f"remove {node_id}",
            lambda rt, t: rt.remove_member(node_id, timeout_s=t),
            lambda rt: node_id not in rt.voters and node_id not in rt.learners,
            timeout_s,
            refuse,
        )
        runtime = self._runtimes.pop(node_id, None)
        if runtime is not None:
            await runtime.stop()
        self.node_ids = tuple(n for n in self.node_ids if n != node_id)
        self.removed.add(node_id)
        self._leading.discard(node_id)
        self._changed.set()

    async def _drive_change(
        self,
        what: str,
        propose: Callable[[NodeRuntime, float], Awaitable[int]],
        done: Callable[[NodeRuntime], bool],
        timeout_s: float,
        refuse: Callable[[NodeRuntime], str | None] | None = None,
    ) -> None:
        """Propose a change on whichever node leads until one commits it. Before each attempt, a leader
        whose configuration already shows the change (an earlier attempt's outcome was unknown) is only
        asked to commit what its log holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last_error: BaseException | None = None
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    await self.wait_for(lambda: self._acting_leader() is not None, timeout_s)
            except TimeoutError:
                raise TimeoutError(f"could not {what} within {timeout_s} s") from last_error
            leader = self._acting_leader()
            assert leader is not None
            if refuse is not None and (reason := refuse(leader)) is not None:
                raise MembershipChangeRejectedError(f"cannot {what}: {reason}")
            remaining = deadline - loop.time()
            try:
                if done(leader):
                    await leader.barrier(remaining)
                else:
                    await propose(leader, remaining)
                return
            except (
                NotLeaderError,
                MembershipChangeRejectedError,
                OutcomeUnknownError,
                ReadFailedError,
                TimeoutError,
            ) as error:
                last_error = error  # nothing proposed, or the outcome is unknown: look again
            if loop.time() >= deadline:
                raise TimeoutError(f"could not {what} within {timeout_s} s") from last_error
            await asyncio.sleep(self.config.tick_interval_s)

    def _acting_leader(self) -> NodeRuntime | None:
        """The running node that leads in the highest term (a node being added does not know the leader
        yet, so `leader()`, which wants every node to agree, cannot be used to add it)."""
        best: NodeRuntime | None = None
        best_term = -1
        for runtime in self._runtimes.values():
            if runtime.is_leader:
                term = getattr(runtime.core, "term", 0)
                term = term if isinstance(term, int) else 0
                if term > best_term:
                    best, best_term = runtime, term
        return best

    # -- faults -------------------------------------------------------------------------------------

    def partition(self, groups: Iterable[Iterable[NodeId]]) -> None:
        self.network.partition(groups)
        self._changed.set()

    def isolate(self, node_id: NodeId) -> None:
        self.network.isolate(node_id)
        self._changed.set()

    def heal(self) -> None:
        self.network.heal()
        self._changed.set()

    @property
    def auth_key(self) -> bytes:
        """The cluster key every frame is authenticated with (in-process tools and tests only)."""
        return self._auth_key

    # -- inspection ---------------------------------------------------------------------------------

    def runtime(self, node_id: NodeId) -> NodeRuntime | None:
        """The live runtime of `node_id`, or None while it is down."""
        runtime = self._runtimes.get(node_id)
        return runtime if runtime is not None and runtime.running else None

    def live_nodes(self) -> tuple[NodeId, ...]:
        return tuple(n for n in self.node_ids if self.runtime(n) is not None)

    def statuses(self) -> list[NodeStatus]:
        out = []
        for node_id in self.node_ids:
            runtime = self._runtimes.get(node_id)
            if runtime is None:
                out.append(NodeStatus(node_id, False, "down", None, None, None, 0, 0))
            else:
                out.append(runtime.status())
        return out

    def node_failures(self) -> dict[NodeId, BaseException]:
        """Runtimes that died of an unexpected error (a bug: cores and the runtime never raise on bad
        input), by node."""
        return {n: rt.failure for n, rt in self._runtimes.items() if rt.failure is not None}

    def leader(self, among: Iterable[NodeId] | None = None) -> NodeId | None:
        """The node that every live runtime names as leader and that leads itself; with `among`, a
        member of `among` that every live runtime of `among` names (the leader of one side of a
        partition)."""
        nodes = self.live_nodes() if among is None else tuple(n for n in among if self.runtime(n))
        if not nodes:
            return None
        named = {self._runtimes[n].leader_id for n in nodes}
        if len(named) != 1:
            return None
        leader = named.pop()
        if leader is None or leader not in nodes:
            return None
        runtime = self.runtime(leader)
        return leader if runtime is not None and runtime.is_leader else None

    async def wait_for_leader(
        self, timeout_s: float, among: Iterable[NodeId] | None = None, exclude: Iterable[NodeId] = ()
    ) -> NodeId:
        """Wait until `leader(among)` is a node not in `exclude`; raise `TimeoutError` after `timeout_s`."""
        group = None if among is None else tuple(among)
        excluded = set(exclude)
        async with asyncio.timeout(timeout_s):
            while True:
                leader = self.leader(group)
                if leader is not None and leader not in excluded:
                    return leader
                self._changed.clear()
                await self._changed.wait()

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Wait until `predicate()` is true, re-checking whenever a node's role or leader changes and
        at every tick (for conditions on indexes, which change without a role change)."""
        interval = self.config.tick_interval_s
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self._changed.clear()
                try:
                    async with asyncio.timeout(interval):
                        await self._changed.wait()
                except TimeoutError:
                    pass

    def _on_change(self, runtime: NodeRuntime) -> None:
        if runtime.is_leader:
            if runtime.node_id not in self._leading:
                self._leading.add(runtime.node_id)
                loop = asyncio.get_running_loop()
                self.elections.append(Election(loop.time(), runtime.node_id, runtime.status().term))
        else:
            self._leading.discard(runtime.node_id)
        self._changed.set()
