"""dscore's side of the comparison: the process stack a deployment runs, all of it on this machine.

- one Kafka broker (`scripts/kafka.sh start`, single-node KRaft) on a port of its own, its data in the
  benchmark's temporary folder (`DSCORE_RUN_DIR`); the jars come from the repository's cache;
- one Redis server per node (`scripts/redis.sh start`, AOF with `appendfsync always`), ports of their own;
- three `dscore-node` processes (`dscore.stack.ProcessCluster`), with the timing the project runs node
  processes with on this two-core machine (`dscore.demo_stack.STACK_ENV`, as `dscore demo --stack
  processes` and the end-to-end tests: 20 ms ticks, elections after 15-30 ticks, heartbeats every 3);
  `--dscore-env` overrides any of it;
- one `dscore-gateway` process (services/gateway) at its defaults, on a free port, started by the same
  `ProcessCluster` (`start_gateway`): the HTTP path.

`pids()` names every process of the stack (nodes, gateway, broker, Redis servers): the CPU a write costs
is theirs together. The leader is the node a majority names (`ProcessCluster.leader`, from each node's
`/debug/state`); `kill` is SIGKILL of its process, `restart` starts it again on its Redis state.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from httpload import Endpoint, HttpConnection, HttpError

if TYPE_CHECKING:
    from dscore.stack import ProcessCluster

NODE_IDS = ("n1", "n2", "n3")
#: the gateway's name (and endpoint id: its reply inbox)
GATEWAY = "gw-bench"
START_TIMEOUT_S = 120.0
POLL_INTERVAL_S = 0.05


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_pair() -> int:
    """A free port whose successor is free too (the broker's listener and its controller's)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port < 65535 and _free(port + 1):
            return port
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _script(repo: Path, env: Mapping[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(repo / "scripts" / args[0]), *args[1:]],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/{' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else ""


async def scrape(endpoint: Endpoint) -> str:
    """The text of `endpoint`'s /metrics, or "" if it does not answer 200 within 2 s."""
    connection = HttpConnection(endpoint)
    try:
        async with asyncio.timeout(2.0):
            status, body = await connection.request("GET", "/metrics", b"")
    except (OSError, HttpError, TimeoutError):
        return ""
    finally:
        connection.close()
    return body.decode("utf-8", "replace") if status == 200 else ""


def node_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """What the bench's nodes run with: `dscore.demo_stack.STACK_ENV` under `overrides`."""
    # imported here so that the etcd side and the baselines run without the node service
    from dscore.demo_stack import STACK_ENV

    return {**STACK_ENV, **overrides}


def _pid_file(path: Path) -> int:
    return int(path.read_text().strip())


@dataclass
class DscoreStack:
    repo: Path
    base_dir: Path
    #: extra environment of the nodes, over `dscore.demo_stack.STACK_ENV`
    node_env: Mapping[str, str] = field(default_factory=dict)
    #: extra environment of the gateway (`ab.py` compares gateway settings)
    gateway_env: Mapping[str, str] = field(default_factory=dict)
    cluster: ProcessCluster | None = None
    gateway_port: int = 0
    bootstrap: str = ""
    redis_urls: dict[str, str] = field(default_factory=dict)
    kafka_pid: int = 0
    redis_pids: list[int] = field(default_factory=list)
    baseline_redis_url: str = ""
    baseline_redis_pid: int = 0

    @property
    def run_env(self) -> dict[str, str]:
        return {"DSCORE_RUN_DIR": str(self.base_dir / "run")}

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.gateway_port)

    async def start_servers(self) -> None:
        """The broker and the Redis servers (the baselines need only these)."""
        env = {**self.run_env, "DSCORE_KAFKA_PORT": str(free_port_pair())}
        self.bootstrap = await asyncio.to_thread(_script, self.repo, env, "kafka.sh", "start")
        self.kafka_pid = _pid_file(self.base_dir / "run" / "kafka.pid")
        for node_id in NODE_IDS:
            name = f"redis-{node_id}"
            url = await asyncio.to_thread(_script, self.repo, self.run_env, "redis.sh", "start", name,
                                          str(free_port()))  # fmt: skip
            self.redis_urls[node_id] = url
            self.redis_pids.append(_pid_file(self.base_dir / "run" / f"{name}.pid"))
        # the Redis MULTI/EXEC baseline gets a server of its own, run exactly like the nodes'
        self.baseline_redis_url = await asyncio.to_thread(
            _script, self.repo, self.run_env, "redis.sh", "start", "redis-baseline", str(free_port())
        )
        self.baseline_redis_pid = _pid_file(self.base_dir / "run" / "redis-baseline.pid")

    async def start_nodes(self) -> None:
        """The node processes and the gateway, on the servers of `start_servers`."""
        # imported here so that the etcd side and the baselines run without the node service
        from dscore.stack import ProcessCluster

        cluster_id = f"bench-{secrets.token_hex(4)}"
        auth_key = secrets.token_urlsafe(48)
        self.cluster = ProcessCluster(
            cluster_id,
            NODE_IDS,
            kafka_bootstrap=self.bootstrap,
            redis_urls=self.redis_urls,
            auth_key=auth_key,
            log_dir=self.base_dir / "logs",
            extra_env=node_environment(self.node_env),
            gateway_env=dict(self.gateway_env),
        )
        await self.cluster.start()
        await self.cluster.wait_ready(timeout_s=START_TIMEOUT_S)
        # the gateway at its defaults, a process of the cluster's (`ProcessCluster.start_gateway`)
        await self.cluster.start_gateway(GATEWAY, timeout_s=START_TIMEOUT_S)
        await self.cluster.wait_gateway_ready(GATEWAY, timeout_s=START_TIMEOUT_S)
        port = self.cluster.gateways[GATEWAY].http_port
        assert port is not None
        self.gateway_port = port

    def pids_by_role(self) -> dict[str, list[int]]:
        """Every process of the stack by role: nodes, gateway, broker, the nodes' Redis servers."""
        if self.cluster is None:
            nodes, gateway = [], []
        else:
            nodes = [n.pid for n in self.cluster.nodes.values() if n.alive and n.pid is not None]
            gateway = [g.pid for g in self.cluster.gateways.values() if g.alive and g.pid is not None]
        return {"nodes": nodes, "gateway": gateway, "kafka": [self.kafka_pid], "redis": list(self.redis_pids)}

    def pids(self) -> list[int]:
        return [pid for pids in self.pids_by_role().values() for pid in pids]

    async def latency_totals(self) -> dict[str, tuple[float, float]]:
        """(sum, count) of every `*_seconds` histogram on the nodes' and the gateway's /metrics, summed
        over labels and over the nodes, keyed `nodes:<name>` / `gateway:<name>`. Differences of two reads
        give the mean of each timed step over a run (where a write's time goes), whatever the metrics'
        names are in this version."""
        targets: list[tuple[str, Endpoint]] = [("gateway", self.endpoint)]
        if self.cluster is not None:
            targets += [
                ("nodes", Endpoint("127.0.0.1", n.http_port))
                for n in self.cluster.nodes.values()
                if n.alive and n.http_port is not None
            ]
        totals: dict[str, tuple[float, float]] = {}
        for role, endpoint in targets:
            text = await scrape(endpoint)
            for line in text.splitlines():
                if line.startswith("#") or "_seconds_" not in line:
                    continue
                name, _, value = line.rpartition(" ")
                metric = name.split("{", 1)[0]
                for suffix, slot in (("_seconds_sum", 0), ("_seconds_count", 1)):
                    if metric.endswith(suffix):
                        key = f"{role}:{metric.removesuffix(suffix)}"
                        pair = list(totals.get(key, (0.0, 0.0)))
                        try:
                            pair[slot] += float(value)
                        except ValueError:
                            break
                        totals[key] = (pair[0], pair[1])
        return totals

    async def term(self) -> int:
        """The highest Raft term any running node reports in /debug/state."""
        assert self.cluster is not None
        states = await self.cluster.states()
        return max([0, *(int(state.get("term", 0)) for state in states.values())])

    async def leader(self) -> str:
        assert self.cluster is not None
        return await self.cluster.leader()

    def kill(self, node_id: str) -> None:
        assert self.cluster is not None
        self.cluster.kill(node_id)

    async def restart(self, node_id: str) -> None:
        assert self.cluster is not None
        await self.cluster.restart(node_id)
        await self.cluster.wait_ready(timeout_s=START_TIMEOUT_S)

    async def stop(self) -> None:
        if self.cluster is not None:
            await self.cluster.close()  # the gateway first (it drains), then the nodes
        for name in [*(f"redis-{n}" for n in NODE_IDS), "redis-baseline"]:
            try:
                await asyncio.to_thread(_script, self.repo, self.run_env, "redis.sh", "stop", name)
            except RuntimeError as error:
                print(f"# {error}", file=sys.stderr)
        if self.bootstrap:
            try:
                await asyncio.to_thread(_script, self.repo, self.run_env, "kafka.sh", "stop")
            except RuntimeError as error:
                print(f"# {error}", file=sys.stderr)
