"""Jepsen-style harness of the end-to-end tests: a cluster of node processes, clients that write while a
nemesis faults the cluster, and the checks afterwards.

- `e2e_cluster()` starts a `ProcessCluster` with one Redis server per node and a gateway
  (`dscore-gateway`, its HTTP API on a free port), and deletes its topics at the end.
- `Workload` runs clients that write through the gateway's HTTP API (`dscore.gateway_client.
  GatewayClient`): random get / put / append / cas on a few keys (`mixed_workload`), each operation
  recorded into one Jepsen history; and appenders that only append unique tokens to one key.
- `Workload.wait_ok(n)` waits for `n` more successful operations (the event that says the cluster
  serves), optionally answered by a node other than a given one (a new leader; the gateway names the
  node that answered in its `Dscore-Node` header).
- `check_outcome` then requires: every node converged (same applied index, same state-machine digest),
  no acknowledged append lost (each acknowledged suffix is in the key's final value, read through the
  gateway from the leader), and the history linearizable (`dscore.check`, model kv), written as EDN
  beside the node logs (`history.edn`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from dscore.check import HistoryRecorder, Verdict, check_history
from dscore.check.history import NEMESIS_PROCESS, Op, OpType
from dscore.gateway_client import GatewayClient, GatewayClientConfig, open_session
from dscore.runtime.client import ClientStats, OpOutcome, mixed_workload
from dscore.stack import ProcessCluster
from dscore.transport.faults_kafka import delete_control_topic
from dscore.transport.kafka_config import KafkaTransportConfig
from dscore.transport.kafka_layout import delete_topics

#: timing of the e2e clusters: Raft's defaults (10 ms ticks, elections after 100-200 ms of silence) are
#: for one process; five Python processes, a broker and Redis share two cores here, so a stall of a few
#: hundred ms is routine. 20 ms ticks, 15-30-tick election timeouts and heartbeats every 3 ticks keep a
#: loaded machine from electing for nothing while a dead leader is still replaced in under a second.
E2E_ENV = {
    "DSCORE_TICK_INTERVAL_S": "0.02",
    "DSCORE_RAFT__ELECTION_TIMEOUT_TICKS": "15",
    "DSCORE_RAFT__HEARTBEAT_TICKS": "3",
    # the same timing for Multi-Paxos (PBFT's defaults: a view change after 30 ticks, 0.6 s, of waiting)
    "DSCORE_PAXOS__ELECTION_TIMEOUT_TICKS": "15",
    "DSCORE_PAXOS__HEARTBEAT_TICKS": "3",
    "DSCORE_LOG_LEVEL": "info",
}
CLIENT_CONFIG = GatewayClientConfig(op_timeout_s=8.0, retry_backoff_s=0.02)
#: the gateway of every e2e cluster (its endpoint id, so its reply topic, and its pid file name)
GATEWAY = "gateway"
KEYS = ("k0", "k1", "k2")
#: appended to only (never put or cas), so every acknowledged append must be in its final value
ACKED_KEY = "acked"


@contextlib.asynccontextmanager
async def e2e_cluster(
    node_ids: Sequence[str],
    *,
    namespace: str,
    kafka_bootstrap: str,
    redis_server_factory: Callable[..., Any],
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
    pid_dir: Path | None = None,
    http_ports: dict[str, int] | None = None,
    protocol: str = "raft",
) -> AsyncIterator[tuple[ProcessCluster, dict[str, Any]]]:
    """A started cluster and its Redis servers by node id; everything is stopped at the end. `pid_dir`,
    `http_ports` and `protocol`: see `ProcessCluster` (pid files as `make up` writes them, fixed node
    ports, raft / paxos / pbft)."""
    redis = {n: redis_server_factory(name=f"{namespace[:20]}-{n}") for n in node_ids}
    cluster = ProcessCluster(
        namespace,
        node_ids,
        kafka_bootstrap=kafka_bootstrap,
        redis_urls={n: r.url for n, r in redis.items()},
        auth_key=secrets.token_urlsafe(48),
        log_dir=log_dir,
        extra_env={**E2E_ENV, **(extra_env or {})},
        pid_dir=pid_dir,
        http_ports=http_ports,
        protocol=protocol,
    )
    try:
        await cluster.start()
        await cluster.start_gateway(GATEWAY)
        yield cluster, redis
    finally:
        await cluster.close()
        config = KafkaTransportConfig(bootstrap_servers=kafka_bootstrap, cluster_id=namespace)
        with contextlib.suppress(Exception):
            await delete_topics(config, [*cluster.node_ids, GATEWAY])
        with contextlib.suppress(Exception):
            await delete_control_topic(config)
        for server in redis.values():
            with contextlib.suppress(BaseException):
                server.stop()


#: a checked history shorter than this proves nothing (`check_outcome`)
MIN_CHECKED_OPS = 40


@dataclass
class Workload:
    """Clients writing and reading through the gateway while the test faults the cluster (see the module
    docstring)."""

    cluster: ProcessCluster
    clients: int = 4
    seed: int = 1
    think_s: float = 0.005
    #: appenders to `ACKED_KEY` (their own history: a lost-write check, not a linearizability one)
    appenders: int = 2
    gateway: str = GATEWAY
    history: HistoryRecorder = field(default_factory=HistoryRecorder)
    appends: HistoryRecorder = field(default_factory=HistoryRecorder)
    stats: ClientStats = field(default_factory=ClientStats)
    _session: aiohttp.ClientSession | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _running: bool = False

    async def start(self) -> None:
        await self.cluster.wait_gateway_ready(self.gateway)
        url = self.cluster.gateway_url(self.gateway)
        self._session = session = open_session(self.clients + self.appenders)
        self._running = True
        for i in range(self.clients):
            client = GatewayClient(
                session,
                url,
                f"c{i}",
                config=CLIENT_CONFIG,
                history=self.history,
                process=i,
                process_stride=self.clients,
                stats=self.stats,
            )
            self._tasks.append(
                asyncio.ensure_future(
                    mixed_workload(
                        client,
                        KEYS,
                        random.Random(f"e2e-w/{self.seed}/{i}"),
                        lambda: self._running,
                        think_s=self.think_s,
                    )
                )
            )
        for i in range(self.appenders):
            appender = GatewayClient(
                session,
                url,
                f"a{i}",
                config=CLIENT_CONFIG,
                history=self.appends,
                process=i,
                process_stride=self.appenders,
                stats=self.stats,
            )
            self._tasks.append(asyncio.ensure_future(self._append_forever(appender)))

    async def _append_forever(self, client: GatewayClient) -> None:
        n = 0
        while self._running:
            n += 1
            await client.append(ACKED_KEY, f"{client.name}.{n};")
            await asyncio.sleep(random.uniform(0, self.think_s))

    def nemesis(self, what: str) -> None:
        """Record a fault in the history (Jepsen's :nemesis process; the checker skips it)."""
        self.history.record(Op(NEMESIS_PROCESS, OpType.INFO, "nemesis", None, what))

    def ok_count(self, *, not_node: str | None = None, writes_only: bool = False) -> int:
        return sum(
            1
            for c in self.stats.completions
            if c.outcome is OpOutcome.OK
            and (not_node is None or (c.node_id is not None and c.node_id != not_node))
            and (not writes_only or c.f != "get")
        )

    async def wait_ok(
        self,
        count: int = 5,
        *,
        not_node: str | None = None,
        writes_only: bool = False,
        timeout_s: float = 60.0,
    ) -> None:
        """Until `count` more operations succeed (answered by a node other than `not_node`)."""
        start = self.ok_count(not_node=not_node, writes_only=writes_only)
        await self._until(
            lambda: self.ok_count(not_node=not_node, writes_only=writes_only) >= start + count, timeout_s
        )

    def checked_ok_count(self) -> int:
        """Operations of the linearizability history that succeeded (the appenders keep their own)."""
        return sum(1 for op in self.history.history().ops if op.type is OpType.OK)

    async def wait_checked(self, count: int = MIN_CHECKED_OPS + 1, timeout_s: float = 60.0) -> None:
        """Until the linearizability history holds `count` successful operations: what `check_outcome`
        needs for a history that proves something, however fast the faults before went."""
        await self._until(lambda: self.checked_ok_count() >= count, timeout_s)

    async def _until(self, reached: Callable[[], bool], timeout_s: float) -> None:
        """Poll the clients' own records until `reached()`; a crashed client fails at once."""
        failed = [t for t in self._tasks if t.done()]
        assert not failed, f"a client crashed: {failed[0].exception()!r}"
        async with asyncio.timeout(timeout_s):
            while not reached():
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*self._tasks)  # each op ends within op_timeout_s
        if self._session is not None:
            await self._session.close()


async def final_values(
    cluster: ProcessCluster, history: HistoryRecorder, gateway: str = GATEWAY
) -> dict[str, str | None]:
    """Every key read through the gateway (linearizable: from the leader) by a checker client (the
    workload's keys recorded in the history too)."""
    await cluster.wait_gateway_ready(gateway)
    url = cluster.gateway_url(gateway)
    config = GatewayClientConfig(op_timeout_s=30.0)
    async with open_session(2) as session:
        reader = GatewayClient(session, url, "checker", config=config, history=history, process=999)
        values: dict[str, str | None] = {}
        for key in KEYS:
            result = await reader.get(key)
            assert result.ok, f"final read of {key} failed: {result}"
            values[key] = result.value
        acked = await GatewayClient(session, url, "checker-acked", config=config).get(ACKED_KEY)
        assert acked.ok, f"final read of {ACKED_KEY} failed: {acked}"
        values[ACKED_KEY] = acked.value
        return values


def acknowledged_appends(history: HistoryRecorder) -> dict[str, list[str]]:
    """Tokens of appends acknowledged `ok`, by key (each suffix is `<client>.<n>;`)."""
    found: dict[str, list[str]] = {}
    for op in history.history().operations():
        if op.f == "append" and op.outcome is OpType.OK:
            found.setdefault(str(op.invoke.key), []).append(str(op.invoke.value).rstrip(";"))
    return found


async def check_outcome(
    cluster: ProcessCluster, workload: Workload, *, converge_timeout_s: float = 60.0
) -> None:
    """No acknowledged write lost, every node converged, the history linearizable."""
    await cluster.wait_ready(timeout_s=converge_timeout_s)
    values = await final_values(cluster, workload.history)
    state = await cluster.wait_converged(timeout_s=converge_timeout_s)
    assert state["applied_index"] > 0
    acknowledged = acknowledged_appends(workload.appends).get(ACKED_KEY, [])
    assert len(acknowledged) > 10, "hardly any append was acknowledged: the test proved nothing"
    present = set((values[ACKED_KEY] or "").split(";"))
    lost = [token for token in acknowledged if token not in present]
    assert not lost, f"{len(lost)} acknowledged appends lost, e.g. {lost[:5]}"
    history = workload.history.history()
    (cluster.log_dir / "history.edn").write_text(history.to_edn(), encoding="utf-8")
    result = check_history(history, model="kv", timeout_s=120.0)
    assert result.verdict is Verdict.LINEARIZABLE, result.explanation
    assert result.ops_checked > MIN_CHECKED_OPS, (
        f"only {result.ops_checked} operations checked: the test proved nothing"
    )
    crashed = [e for e in cluster.failures() if e.returncode not in (1,) or e.node_id not in cluster.nodes]
    assert not crashed, f"nodes exited unexpectedly: {crashed}"
