"""`EmbeddedCluster`: n replicas in one process, on a `MemoryNetwork` and `MemoryStorage`s.

The cluster owns the network and one storage per node; a node's runtime is disposable. `kill(node)` is
kill -9 (the runtime is crashed and discarded, its inbox emptied, messages to it lost until it returns),
while its storage object, the stand-in for a disk, is kept; `restart(node)` builds a new runtime from that
storage, with a bumped incarnation. This is the default way to run dscore: no servers, real protocol code,
real codec, real faults.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dscore.core.errors import ConfigError, LocalError
from dscore.core.ids import NodeId
from dscore.protocols.raft import RaftConfig, RaftNode
from dscore.runtime.node import CoreFactory, NodeRuntime, NodeStatus, RuntimeConfig
from dscore.storage.base import Storage
from dscore.storage.memory import MemoryStorage
from dscore.transport.memory import DEFAULT_INBOX_MAX_MESSAGES, MemoryNetwork

#: elections remembered by `EmbeddedCluster.elections` (older ones are dropped)
MAX_ELECTIONS_KEPT = 10_000


def raft_factory(config: RaftConfig | None = None) -> CoreFactory:
    """Builds `RaftNode`s (default `RaftConfig`: election timeout 10-20 ticks, heartbeat every tick)."""
    return RaftNode.factory(config)


@dataclass(frozen=True, slots=True)
class Election:
    """A node became leader (as seen by the node itself)."""

    time_s: float
    node_id: NodeId
    term: int | None


class EmbeddedCluster:
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
    ) -> None:
        ids = tuple(node_ids) if node_ids is not None else tuple(f"n{i}" for i in range(1, size + 1))
        if not ids:
            raise ConfigError("a cluster needs at least one node")
        self.node_ids: tuple[NodeId, ...] = ids
        self.config = config or RuntimeConfig()
        self.seed = seed
        self._make_core = make_core
        self.network = MemoryNetwork(ids, inbox_max_messages)
        make_storage = storage_factory or (lambda _node: MemoryStorage())
        #: one stable storage per node, kept across the node's crashes (the embedded stand-in for a disk)
        self.storages: dict[NodeId, Storage] = {n: make_storage(n) for n in ids}
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
        runtimes = list(self._runtimes.values())
        self._runtimes.clear()
        for runtime in runtimes:
            await runtime.stop()

    async def __aenter__(self) -> EmbeddedCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _launch(self, node_id: NodeId) -> NodeRuntime:
        self.network.connect(node_id)
        runtime = NodeRuntime(
            node_id,
            self.node_ids,
            self._make_core,
            self.network.endpoint(node_id),
            self.storages[node_id],
            config=self.config,
            seed=self.seed,
            on_change=self._on_change,
        )
        self._runtimes[node_id] = runtime
        await runtime.start()
        self._changed.set()
        return runtime

    def kill(self, node_id: NodeId) -> None:
        """Crash `node_id` (kill -9): runtime discarded, storage kept, network cut until restart."""
        runtime = self._runtimes.pop(node_id, None)
        if runtime is None:
            raise LocalError(f"{node_id} is not running")
        runtime.crash()
        self.network.disconnect(node_id)
        self._leading.discard(node_id)
        self._changed.set()

    async def restart(self, node_id: NodeId) -> NodeRuntime:
        """A new runtime for a killed node, from what its storage kept (incarnation bumped)."""
        if node_id not in self.storages:
            raise LocalError(f"{node_id} is not a member of this cluster")
        if node_id in self._runtimes:
            raise LocalError(f"{node_id} is already running")
        return await self._launch(node_id)

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
