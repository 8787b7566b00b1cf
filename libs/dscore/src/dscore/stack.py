"""A dscore cluster as local processes: one `dscore-node` process per replica, on a Kafka broker and Redis
servers that the caller runs (the end-to-end tests' fixtures, `dscore demo --stack processes`).

`ProcessCluster` starts, kills (-9), stops (SIGTERM), pauses (SIGSTOP / SIGCONT) and restarts node
processes, cuts a node off from its peers (`/admin/consume/stop`: it stops reading its inbox), and reads
each node's `/readyz` and `/debug/state`. It waits on events, never on fixed sleeps: a process's own log
lines (`http listening on HOST:PORT`), its HTTP answers, its exit.

It also supervises, as Kubernetes' `restartPolicy: Always` would: a process that exits on its own (a
storage failure, a bug: exit status 1) is started again after a short back-off, while one the caller
killed or stopped stays down until the caller restarts it. A node that refuses to run (status 2: a bad
setting; 3: its storage went back in time) is not restarted: a restart cannot change its answer. Every
exit is recorded (`exits`), so a test can tell a clean stop (0) from a failure (1) from a refusal (3)
from a kill (-9).

Gateways (`dscore-gateway`, services/gateway) are started with `start_gateway(name)`: the HTTP API in
front of the cluster, a client endpoint of its own on Kafka. Clients reach the cluster through a
gateway's HTTP API (`dscore.gateway_client.GatewayClient`) or, underneath, through the wire protocol on
Kafka (`client_endpoint()`: a `ClientEndpoint` with its own inbox topic); both satisfy `KvOps`.

With `pid_dir`, every process's pid is written to `<pid_dir>/<name>.pid` (`node-n1.pid`,
`gateway.pid`), as `make up` does, so a person can fault one by hand. With `http_ports`, each node listens
on its own fixed port across restarts (a Prometheus scrape target, a chaos service's node URL stay valid);
without, on a free port the node picks at each start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dscore.core.errors import ConfigError, LocalError
from dscore.core.ids import NodeId
from dscore.runtime.client import ClientEndpoint, KvOps
from dscore.runtime.protocols import reply_quorum, stack_protocol
from dscore.transport.kafka import open_kafka_transport
from dscore.transport.kafka_config import KafkaTransportConfig, StartWithoutPosition

log = logging.getLogger(__name__)

#: how long a node process may take from exec to listening on HTTP (imports, Redis, Kafka topics)
START_TIMEOUT_S = 60.0
#: a supervised node that exited on its own is started again after this back-off (doubling, capped)
RESTART_BACKOFF_S = 0.5
MAX_RESTART_BACKOFF_S = 4.0
#: how often a wait re-reads the nodes' HTTP state (the condition, not a sleep standing in for it)
POLL_INTERVAL_S = 0.05
#: one HTTP request to a node (a paused or dying node must not hold a wait up)
HTTP_TIMEOUT_S = 2.0
#: a membership change's request (the node answers once the change is committed, within 10 s)
CHANGE_TIMEOUT_S = 12.0
#: log lines of each node kept in memory (for failure messages)
KEPT_LINES = 200


#: exit statuses a restart cannot change: bad settings (2), storage went back in time (3)
REFUSALS = frozenset({2, 3})
#: what a gateway's uvicorn logs once it listens (the port is the bound one, also for port 0)
_UVICORN_LISTENING = re.compile(r"Uvicorn running on https?://[^\s:]+:(\d+)")

__all__ = ["KvOps", "ProcessCluster"]


def _executable(name: str, package: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"{name} is not installed (uv sync --all-packages installs {package})")
    return found


def node_executable() -> str:
    """The `dscore-node` console script of this environment (beside the interpreter), else on PATH."""
    return _executable("dscore-node", "services/node")


def gateway_executable() -> str:
    """The `dscore-gateway` console script of this environment (beside the interpreter), else on PATH."""
    return _executable("dscore-gateway", "services/gateway")


@dataclass
class Exit:
    node_id: NodeId
    returncode: int
    #: the caller killed or stopped it (otherwise it exited on its own)
    expected: bool
    last_lines: tuple[str, ...] = ()


@dataclass
class NodeProcess:
    """One process of the stack (a node, or a gateway: `kind`) and what it printed."""

    node_id: NodeId
    env: dict[str, str]
    log_path: Path
    kind: str = "node"
    executable: str = ""
    pid_path: Path | None = None
    process: asyncio.subprocess.Process | None = None
    http_port: int | None = None
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=KEPT_LINES))
    #: set when the process announces its HTTP port
    listening: asyncio.Event = field(default_factory=asyncio.Event)
    #: the caller wants it down (killed, stopped): the supervisor leaves it alone
    held_down: bool = False
    paused: bool = False
    starts: int = 0
    _reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def url(self, path: str) -> str:
        if self.http_port is None:
            raise LocalError(f"{self.node_id} has no HTTP port yet")
        return f"http://127.0.0.1:{self.http_port}{path}"


class ProcessCluster:
    """Node processes of one cluster (see the module docstring).

    `redis_urls` maps each node to its Redis; `extra_env` is added to every node's environment (say
    `DSCORE_TICK_INTERVAL_S`); `log_dir` receives `<node>.log` (JSON lines, appended across restarts).
    `protocol` (`DSCORE_PROTOCOL` of every node and gateway): raft, paxos or pbft
    (`dscore.runtime.protocols`); `leader()` then finds Raft's or Paxos's leader, or PBFT's primary.
    """

    def __init__(
        self,
        cluster_id: str,
        node_ids: Iterable[NodeId],
        *,
        kafka_bootstrap: str,
        redis_urls: Mapping[NodeId, str],
        auth_key: str,
        log_dir: Path,
        extra_env: Mapping[str, str] | None = None,
        executable: str | None = None,
        supervise: bool = True,
        pid_dir: Path | None = None,
        gateway_env: Mapping[str, str] | None = None,
        http_ports: Mapping[NodeId, int] | None = None,
        protocol: str = "raft",
    ) -> None:
        self.cluster_id = cluster_id
        self.protocol = stack_protocol(protocol)
        self.node_ids = tuple(node_ids)
        self.kafka_bootstrap = kafka_bootstrap
        self.auth_key = auth_key
        #: the bearer token of the nodes' `/admin/*` (drawn per cluster, like a chart's Secret)
        self.admin_token = secrets.token_urlsafe(32)
        self.log_dir = log_dir
        self.executable = executable or node_executable()
        self.pid_dir = pid_dir
        self.exits: list[Exit] = []
        #: gateways by name (`start_gateway`)
        self.gateways: dict[str, NodeProcess] = {}
        self._gateway_env = dict(gateway_env or {})
        self._supervise = supervise
        self._restarts: set[asyncio.Task[None]] = set()
        self._closing = False
        log_dir.mkdir(parents=True, exist_ok=True)
        self._base_env = {k: v for k, v in os.environ.items() if not k.startswith("DSCORE_")}
        self._extra_env = dict(extra_env or {})
        self._http_ports = dict(http_ports or {})
        self.nodes: dict[NodeId, NodeProcess] = {}
        for node_id in self.node_ids:
            peers = tuple(n for n in self.node_ids if n != node_id)
            env = self._env(node_id, peers, redis_urls[node_id])
            self.nodes[node_id] = self._node_process(node_id, env)

    def _node_process(self, node_id: NodeId, env: dict[str, str]) -> NodeProcess:
        return NodeProcess(
            node_id,
            env,
            self.log_dir / f"{node_id}.log",
            executable=self.executable,
            pid_path=None if self.pid_dir is None else self.pid_dir / f"node-{node_id}.pid",
        )

    def _process(self, name: str) -> NodeProcess:
        """A node by id, or a gateway by name."""
        found = self.nodes.get(name) or self.gateways.get(name)
        if found is None:
            raise LocalError(f"no node or gateway {name!r} in this cluster")
        return found

    def _env(self, node_id: NodeId, peers: Iterable[NodeId], redis_url: str) -> dict[str, str]:
        return {
            **self._base_env,
            "PYTHONUNBUFFERED": "1",
            "DSCORE_NODE_ID": node_id,
            "DSCORE_PEERS": ",".join(peers),
            "DSCORE_CLUSTER_ID": self.cluster_id,
            "DSCORE_PROTOCOL": self.protocol.name,
            "DSCORE_KAFKA__BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "DSCORE_REDIS__URL": redis_url,
            "DSCORE_AUTH_KEY": self.auth_key,
            "DSCORE_HTTP__PORT": str(self._http_ports.get(node_id, 0)),
            "DSCORE_HTTP__ADMIN": "true",
            "DSCORE_HTTP__ADMIN_TOKEN": self.admin_token,
            **self._extra_env,
        }

    def add_node(self, node_id: NodeId, redis_url: str) -> None:
        """A node that will join the running cluster (`DSCORE_INITIAL_CLUSTER_STATE=existing`, its peers
        the current members): `start_node` it, then `introduce` it and `add_member` it on the leader."""
        if node_id in self.nodes:
            raise LocalError(f"{node_id} is already a node of this cluster")
        env = self._env(node_id, self.node_ids, redis_url)
        env["DSCORE_INITIAL_CLUSTER_STATE"] = "existing"
        self.node_ids = (*self.node_ids, node_id)
        self.nodes[node_id] = self._node_process(node_id, env)

    async def introduce(self, node_id: NodeId) -> None:
        """Every other running node accepts messages from `node_id` from now on."""
        for other in self.node_ids:
            if other != node_id and self.nodes[other].alive:
                await self._post(other, f"/admin/introduce/{node_id}")

    async def add_member(self, node_id: NodeId, *, learner: bool, timeout_s: float = 30.0) -> dict[str, Any]:
        """Add `node_id` through the leader (a learner, or a voter); returns once it is committed."""
        query = "?learner=true" if learner else ""
        return await self._change(f"/admin/members/{node_id}{query}", timeout_s)

    async def promote(self, node_id: NodeId, timeout_s: float = 30.0) -> dict[str, Any]:
        return await self._change(f"/admin/members/{node_id}/promote", timeout_s)

    async def _change(self, path: str, timeout_s: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                leader = await self.leader(timeout_s)
                answer = await asyncio.to_thread(
                    _request, self.nodes[leader].url(path), "POST", CHANGE_TIMEOUT_S, self.admin_token
                )
                if answer is not None and answer[0] == 200:
                    return answer[1]
                if answer is not None and answer[0] == 409 and answer[1].get("error") != "change_in_progress":
                    raise LocalError(f"{path}: refused: {answer[1]}")
                # leadership moved (421), a change in progress (409), or the outcome is unknown: ask again
                await asyncio.sleep(POLL_INTERVAL_S)

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start every node and wait until each listens on HTTP."""
        for node_id in self.node_ids:
            await self.start_node(node_id, wait=False)
        await asyncio.gather(*(self.wait_listening(n, timeout_s) for n in self.node_ids))

    async def start_node(
        self, node_id: NodeId, *, wait: bool = True, timeout_s: float = START_TIMEOUT_S
    ) -> None:
        """Start a node (or a gateway, by name) process; with `wait`, until it listens on HTTP."""
        node = self._process(node_id)
        if node.alive:
            raise LocalError(f"{node_id} is already running (pid {node.pid})")
        node.held_down = False
        node.paused = False
        node.http_port = None
        node.listening = asyncio.Event()
        node.starts += 1
        node.process = await asyncio.create_subprocess_exec(
            node.executable,
            env=node.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C reaches the test or demo, not the nodes
        )
        if node.pid_path is not None:
            node.pid_path.parent.mkdir(parents=True, exist_ok=True)
            node.pid_path.write_text(f"{node.process.pid}\n", encoding="utf-8")
        node._reader = asyncio.ensure_future(self._follow(node, node.process))
        if wait:
            await self.wait_listening(node_id, timeout_s)

    async def _follow(self, node: NodeProcess, process: asyncio.subprocess.Process) -> None:
        """Copy the node's output to its log file, note its HTTP port, and record its exit."""
        assert process.stderr is not None
        with node.log_path.open("a", encoding="utf-8") as out:
            while raw := await process.stderr.readline():
                line = raw.decode("utf-8", "replace").rstrip("\n")
                out.write(line + "\n")
                out.flush()
                node.lines.append(line)
                port = _announced_port(line)
                if port is not None:
                    node.http_port = port
                    node.listening.set()
        returncode = await process.wait()
        expected = node.held_down or self._closing
        self.exits.append(Exit(node.node_id, returncode, expected, tuple(node.lines)[-20:]))
        node.listening.set()  # wake waiters: it will never listen now
        if not expected:
            log.warning("%s exited on its own with status %d", node.node_id, returncode)
            if self._supervise and returncode not in REFUSALS:
                task = asyncio.ensure_future(self._restart_later(node))
                self._restarts.add(task)
                task.add_done_callback(self._restarts.discard)

    async def _restart_later(self, node: NodeProcess) -> None:
        failures = sum(1 for e in self.exits if e.node_id == node.node_id and not e.expected)
        await asyncio.sleep(min(RESTART_BACKOFF_S * 2 ** min(failures - 1, 8), MAX_RESTART_BACKOFF_S))
        if not node.held_down and not node.alive and not self._closing:
            await self.start_node(node.node_id, wait=False)

    async def wait_listening(self, node_id: NodeId, timeout_s: float = START_TIMEOUT_S) -> int:
        node = self._process(node_id)
        async with asyncio.timeout(timeout_s):
            while True:
                await node.listening.wait()
                if node.http_port is not None and node.alive:
                    return node.http_port
                if not node.alive:
                    raise LocalError(
                        f"{node_id} exited before listening:\n" + "\n".join(list(node.lines)[-10:])
                    )
                node.listening = asyncio.Event()

    def kill(self, node_id: NodeId) -> None:
        """kill -9; the node stays down until `start_node`."""
        node = self._process(node_id)
        node.held_down = True
        if node.alive and node.process is not None:
            node.process.send_signal(signal.SIGKILL)

    async def wait_exit(self, node_id: NodeId, timeout_s: float = 30.0) -> int:
        node = self._process(node_id)
        assert node.process is not None
        async with asyncio.timeout(timeout_s):
            returncode = await node.process.wait()
            if node._reader is not None:
                await node._reader
        return returncode

    async def terminate(self, node_id: NodeId, timeout_s: float = 30.0) -> int:
        """SIGTERM (a leader hands over first); returns the exit status. The node stays down."""
        node = self._process(node_id)
        node.held_down = True
        if node.process is None:
            return 0
        if node.alive:
            if node.paused:
                self.resume(node_id)
            node.process.send_signal(signal.SIGTERM)
        try:
            return await self.wait_exit(node_id, timeout_s)
        except TimeoutError:
            # A node that does not stop: its stacks show where it hangs (in its log and `lines`).
            if node.alive and node.kind == "node":
                self.dump_stacks(node_id)
                with contextlib.suppress(TimeoutError):
                    await self.wait_exit(node_id, 2.0)
            raise TimeoutError(
                f"{node_id} did not exit within {timeout_s} s of SIGTERM:\n"
                + "\n".join(list(node.lines)[-200:])
            ) from None

    async def restart(self, node_id: NodeId, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start a node the caller killed or stopped (waits for its old process to be gone first)."""
        node = self._process(node_id)
        if node.alive:
            self.kill(node_id)
        if node.process is not None:
            await self.wait_exit(node_id)
        await self.start_node(node_id, timeout_s=timeout_s)

    def dump_stacks(self, node_id: NodeId) -> None:
        """Ask a `dscore-node` for its stacks: every asyncio task's (SIGUSR2) and every thread's (SIGUSR1),
        written to its log (and `lines`) while it keeps running."""
        node = self._process(node_id)
        assert node.process is not None and node.alive
        for dump in (signal.SIGUSR2, signal.SIGUSR1):
            node.process.send_signal(dump)

    def pause(self, node_id: NodeId) -> None:
        """SIGSTOP: the process freezes where it stands (a GC pause, a VM stall)."""
        node = self._process(node_id)
        assert node.process is not None and node.alive
        node.paused = True
        node.process.send_signal(signal.SIGSTOP)

    def resume(self, node_id: NodeId) -> None:
        node = self._process(node_id)
        assert node.process is not None
        node.paused = False
        if node.alive:
            node.process.send_signal(signal.SIGCONT)

    async def cut_off(self, node_id: NodeId) -> None:
        """The node stops reading its inbox (it still sends): cut off from what its peers say."""
        await self._post(node_id, "/admin/consume/stop")

    async def reconnect(self, node_id: NodeId) -> None:
        await self._post(node_id, "/admin/consume/start")

    async def close(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every node (SIGKILL after `timeout_s`)."""
        self._closing = True
        for task in list(self._restarts):
            task.cancel()
        # gateways first (they drain their requests), then the nodes
        for group in (self.gateways, self.nodes):
            for node_id, node in group.items():
                node.held_down = True
                if node.alive and node.process is not None:
                    if node.paused:
                        self.resume(node_id)
                    node.process.send_signal(signal.SIGTERM)
            for node_id, node in group.items():
                if node.process is None:
                    continue
                try:
                    await self.wait_exit(node_id, timeout_s)
                except TimeoutError:
                    node.process.kill()
                    await node.process.wait()
                if node.pid_path is not None:
                    node.pid_path.unlink(missing_ok=True)

    # -- gateways -----------------------------------------------------------------------------------

    async def start_gateway(
        self, name: str = "gateway", *, port: int = 0, wait: bool = True, timeout_s: float = START_TIMEOUT_S
    ) -> str:
        """Start a `dscore-gateway` process named `name` (also its endpoint id, so its reply inbox) in
        front of the nodes, on 127.0.0.1:`port` (0: a free one); returns its base URL once it listens
        (with `wait`) or "" (without)."""
        if name in self.nodes or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", name):
            raise LocalError(f"{name!r} cannot name a gateway (a node's id, or not a valid endpoint id)")
        if name not in self.gateways:
            env = {
                **self._base_env,
                "PYTHONUNBUFFERED": "1",
                "DSCORE_NODES": ",".join(self.node_ids),
                "DSCORE_CLUSTER_ID": self.cluster_id,
                "DSCORE_PROTOCOL": self.protocol.name,
                "DSCORE_KAFKA__BOOTSTRAP_SERVERS": self.kafka_bootstrap,
                "DSCORE_AUTH_KEY": self.auth_key,
                "DSCORE_GATEWAY__HOST": "127.0.0.1",
                "DSCORE_GATEWAY__PORT": str(port),
                "DSCORE_GATEWAY__ENDPOINT_ID": name,
                **self._gateway_env,
            }
            pid_name = "gateway" if name == "gateway" else f"gateway-{name}"
            self.gateways[name] = NodeProcess(
                name,
                env,
                self.log_dir / f"{name}.log",
                kind="gateway",
                executable=gateway_executable(),
                pid_path=None if self.pid_dir is None else self.pid_dir / f"{pid_name}.pid",
            )
        await self.start_node(name, wait=wait, timeout_s=timeout_s)
        return self.gateway_url(name) if wait else ""

    def gateway_url(self, name: str = "gateway") -> str:
        return self.gateways[name].url("")

    async def wait_gateway_ready(self, name: str = "gateway", timeout_s: float = 60.0) -> None:
        """Until the gateway's `/readyz` answers 200 (it knows a leader and a request succeeded)."""

        async def ready() -> bool:
            answer = await self.get_json(name, "/readyz")
            return answer is not None and answer[0] == 200

        await self.wait_for(ready, timeout_s, f"gateway {name} ready")

    # -- HTTP ---------------------------------------------------------------------------------------

    async def _post(self, node_id: NodeId, path: str) -> dict[str, Any]:
        answer = await asyncio.to_thread(
            _request, self._process(node_id).url(path), "POST", HTTP_TIMEOUT_S, self.admin_token
        )
        if answer is None or answer[0] != 200:
            raise LocalError(f"{node_id}: POST {path} failed: {answer}")
        return answer[1]

    async def get_json(self, node_id: NodeId, path: str) -> tuple[int, dict[str, Any]] | None:
        """(status, body) of a GET, or None if the node (or gateway) does not answer (down, paused,
        starting)."""
        node = self._process(node_id)
        if not node.alive or node.paused or node.http_port is None:
            return None
        return await asyncio.to_thread(_request, node.url(path), "GET")

    async def metrics(self, node_id: NodeId) -> dict[str, float]:
        """A node's (or gateway's) `/metrics`, as {'name{labels}': value} (labels as exposed, sorted by
        prometheus-client); {} if it does not answer."""
        node = self._process(node_id)
        if not node.alive or node.paused or node.http_port is None:
            return {}
        text = await asyncio.to_thread(_get_text, node.url("/metrics"))
        samples: dict[str, float] = {}
        for line in (text or "").splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    samples[name] = float(value)
        return samples

    async def states(self, node_ids: Iterable[NodeId] | None = None) -> dict[NodeId, dict[str, Any]]:
        """`/debug/state` of every node that answers."""
        ids = tuple(node_ids) if node_ids is not None else self.node_ids
        answers = await asyncio.gather(*(self.get_json(n, "/debug/state") for n in ids))
        return {n: a[1] for n, a in zip(ids, answers, strict=True) if a is not None and a[0] == 200}

    async def wait_for(self, condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
        """Re-evaluate an async condition until it returns something truthy; `TimeoutError` naming
        `what` and the nodes' last states otherwise."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    result = await condition()
                    if result:
                        return result
                    await asyncio.sleep(POLL_INTERVAL_S)
        except TimeoutError:
            states = await self.states()
            raise TimeoutError(
                f"{what}: not within {timeout_s} s; node states {json.dumps(states)}"
            ) from None

    async def wait_ready(self, node_ids: Iterable[NodeId] | None = None, timeout_s: float = 60.0) -> None:
        """Until each node answers `/readyz` with 200 (it knows a leader and applied what it knows)."""
        ids = tuple(node_ids) if node_ids is not None else self.node_ids

        async def ready() -> bool:
            answers = await asyncio.gather(*(self.get_json(n, "/readyz") for n in ids))
            return all(a is not None and a[0] == 200 for a in answers)

        await self.wait_for(ready, timeout_s, f"{', '.join(ids)} ready")

    async def leader(self, timeout_s: float = 30.0, *, other_than: NodeId | None = None) -> NodeId:
        """The node that says it leads (PBFT: it is the primary) and whom a majority of the answering nodes
        name as leader."""
        leader_role = self.protocol.leader_role

        async def agreed() -> NodeId | None:
            states = await self.states()
            for node_id, state in states.items():
                if state.get("role") != leader_role or node_id == other_than:
                    continue
                followers = sum(1 for s in states.values() if s.get("leader_id") == node_id)
                if followers > len(self.node_ids) // 2:
                    return node_id
            return None

        found: NodeId = await self.wait_for(agreed, timeout_s, "an agreed leader")
        return found

    async def wait_converged(
        self, node_ids: Iterable[NodeId] | None = None, timeout_s: float = 60.0
    ) -> dict[str, Any]:
        """Until every node runs and has applied the same index to an equal state machine (same digest);
        returns that common state."""
        ids = tuple(node_ids) if node_ids is not None else self.node_ids

        async def same() -> dict[str, Any] | None:
            states = await self.states(ids)
            if len(states) != len(ids):
                return None
            images = {(s["applied_index"], s.get("state_machine_sha256")) for s in states.values()}
            if len(images) != 1 or any(s.get("state") != "running" for s in states.values()):
                return None
            return next(iter(states.values()))

        result: dict[str, Any] = await self.wait_for(same, timeout_s, f"{', '.join(ids)} converged")
        return result

    # -- clients ------------------------------------------------------------------------------------

    def client_endpoint(self, endpoint_id: str) -> ClientEndpoint:
        """A client endpoint on Kafka (its own inbox, read from its end), authenticated with the cluster
        key, addressing every node of the cluster (not started); for PBFT it takes an answer once f + 1
        replicas sent the same one."""
        config = KafkaTransportConfig(
            bootstrap_servers=self.kafka_bootstrap,
            cluster_id=self.cluster_id,
            start_without_position=StartWithoutPosition.LATEST,
        )
        transport = open_kafka_transport(config, endpoint_id)
        return ClientEndpoint(
            transport,
            lambda: self.node_ids,
            key=self.auth_key.encode("utf-8"),
            reply_quorum=reply_quorum(self.protocol.name, len(self.node_ids)),
        )

    def failures(self) -> list[Exit]:
        """Exits nobody asked for."""
        return [e for e in self.exits if not e.expected]


def _request(
    url: str, method: str, timeout_s: float = HTTP_TIMEOUT_S, token: str | None = None
) -> tuple[int, dict[str, Any]] | None:
    """One HTTP request to a node on loopback (in a worker thread): (status, JSON body), or None when
    the node does not answer in time; `token`: the admin bearer token. Plain urllib: the harness needs
    nothing the library lacks."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read() or b"{}")
        except ValueError:
            return error.code, {}
    except (OSError, ValueError):
        return None


def _get_text(url: str, timeout_s: float = HTTP_TIMEOUT_S) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body: bytes = response.read()
            return body.decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


def _announced_port(line: str) -> int | None:
    """The HTTP port a process says it listens on: a node's JSON line `http listening on HOST:PORT`, a
    gateway's uvicorn line `Uvicorn running on http://HOST:PORT`; None for any other line."""
    message = _message_of(line)
    if message.startswith("http listening on "):
        return int(message.rsplit(":", 1)[1])
    found = _UVICORN_LISTENING.search(line) if "Uvicorn running on" in line else None
    return int(found.group(1)) if found else None


def _message_of(line: str) -> str:
    """The `msg` of a node's JSON log line ('' for anything else)."""
    if not line.startswith("{"):
        return ""
    try:
        record = json.loads(line)
    except ValueError:
        return ""
    message = record.get("msg", "") if isinstance(record, dict) else ""
    return message if isinstance(message, str) else ""


@contextlib.asynccontextmanager
async def running(cluster: ProcessCluster) -> Any:
    """`async with running(cluster):` starts it and closes it whatever happens."""
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.close()
