"""`dscore demo --stack processes`: the demo's scenario on the real stack.

It starts a Kafka broker (`scripts/kafka.sh ensure`; stopped at the end only if it was not running
before), one Redis server per node (`scripts/redis.sh`, `appendfsync always`, in a folder of its own
under `.run/`), and one `dscore-node` process per node (`dscore.stack.ProcessCluster`); then it runs the
embedded demo's workload and fault schedule with clients on the wire protocol over Kafka, prints the same
report (availability, failovers, throughput, latency, linearizability), and stops everything it started.

The faults, as processes take them:

- kill the leader: SIGKILL of its process (what Redis holds is all that survives); restart: a new
  process from its Redis state;
- partition the leader into a minority: the minority's nodes stop reading their inboxes (`/admin/consume/
  stop`). They still send, so the cut is one-way: the old leader loses its quorum's acknowledgements and
  steps down (check-quorum, one election timeout) before the majority elects, where a two-way partition
  would let the majority time out at once; heal: they read again.

Run it from a dscore checkout (it needs `scripts/`), after `make sync` (it needs `dscore-node`). The
gateway joins the stack when it exists.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import subprocess
import time
from pathlib import Path

from dscore.check import HistoryRecorder
from dscore.check.history import NEMESIS_PROCESS, Op, OpType
from dscore.core.errors import ConfigError
from dscore.core.ids import NodeId
from dscore.demo import DemoOptions, DemoReport, build_report, fault_schedule, format_report
from dscore.report import FaultEvent, RoleTracker
from dscore.runtime.client import ClientConfig, ClientStats, KvClient, mixed_workload
from dscore.stack import ProcessCluster
from dscore.transport.kafka_config import KafkaTransportConfig
from dscore.transport.kafka_layout import delete_topics

#: node timing on a shared two-core machine (see tests/e2e/jepsen.py for why not the 10 ms default)
STACK_ENV = {
    "DSCORE_TICK_INTERVAL_S": "0.02",
    "DSCORE_RAFT__ELECTION_TIMEOUT_TICKS": "15",
    "DSCORE_RAFT__HEARTBEAT_TICKS": "3",
}
#: first Redis port of the demo's servers (node i gets PORT + i), apart from `make up`'s
REDIS_PORT = int(os.environ.get("DSCORE_DEMO_REDIS_PORT", "23480"))


def find_checkout() -> Path:
    """The dscore checkout (the folder with scripts/kafka.sh) at or above the working directory."""
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "scripts" / "kafka.sh").exists() and (folder / "scripts" / "redis.sh").exists():
            return folder
    raise ConfigError("dscore demo --stack processes runs from a dscore checkout (it uses scripts/)")


def _script(repo: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(
        [str(repo / "scripts" / args[0]), *args[1:]],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        timeout=900,
    )
    if check and done.returncode != 0:
        raise ConfigError(f"scripts/{' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else ""


class _StackDemo:
    def __init__(self, options: DemoOptions, repo: Path) -> None:
        self.options = options
        self.repo = repo
        self.run_dir = repo / ".run" / f"demo-{os.getpid()}"
        self.history = HistoryRecorder()
        self.stats = ClientStats()
        self.rng = random.Random(f"demo/{options.seed}")
        self.faults: list[FaultEvent] = []
        self.started_at = 0.0
        self.killed: NodeId | None = None
        self.cut: list[NodeId] = []
        self.client_config = ClientConfig(op_timeout_s=3.0, attempt_timeout_s=0.5, retry_backoff_s=0.01)
        self.node_ids = tuple(f"n{i + 1}" for i in range(options.nodes))
        self.redis_names = [f"redis-{n}" for n in self.node_ids]

    def now_s(self) -> float:
        return asyncio.get_running_loop().time()

    def log(self, message: str) -> None:
        at = self.now_s() - self.started_at if self.started_at else 0.0
        print(f"[{at:7.2f}s] {message}", flush=True)

    async def run(self) -> DemoReport:
        repo = self.repo
        kafka_was_running = (
            subprocess.run(
                [str(repo / "scripts" / "kafka.sh"), "status"], capture_output=True, check=False
            ).returncode
            == 0
        )
        self.log("starting Kafka (scripts/kafka.sh ensure)")
        bootstrap = await asyncio.to_thread(_script, repo, "kafka.sh", "ensure")
        env = {"DSCORE_RUN_DIR": str(self.run_dir)}
        urls = {}
        cluster = None
        cluster_id = f"demo-{self.options.seed}-{secrets.token_hex(4)}"
        try:
            for i, node_id in enumerate(self.node_ids):
                port = REDIS_PORT + i + 1
                urls[node_id] = await asyncio.to_thread(
                    _script, repo, "redis.sh", "start", self.redis_names[i], str(port), env=env
                )
            self.log(f"Kafka at {bootstrap}; Redis per node at {', '.join(urls.values())}")
            cluster = ProcessCluster(
                cluster_id,
                self.node_ids,
                kafka_bootstrap=bootstrap,
                redis_urls=urls,
                auth_key=secrets.token_urlsafe(48),
                log_dir=self.run_dir / "logs",
                extra_env=STACK_ENV,
            )
            await cluster.start()
            await cluster.wait_ready(timeout_s=120)
            return await self._scenario(cluster)
        finally:
            if cluster is not None:
                await cluster.close()
                config = KafkaTransportConfig(bootstrap_servers=bootstrap, cluster_id=cluster_id)
                with contextlib.suppress(Exception):
                    await delete_topics(config, [*self.node_ids, "demo-clients"])
            for name in self.redis_names:
                await asyncio.to_thread(_script, repo, "redis.sh", "stop", name, env=env, check=False)
            if not kafka_was_running:
                await asyncio.to_thread(_script, repo, "kafka.sh", "stop", check=False)
            self.log(f"stopped everything; node logs kept in {self.run_dir / 'logs'}")

    async def _scenario(self, cluster: ProcessCluster) -> DemoReport:
        opts = self.options
        leader = await cluster.leader()
        self.started_at = self.now_s()
        self.log(f"{opts.nodes} dscore-node processes up, leader {leader}; {opts.clients} clients")
        keys = [f"k{i}" for i in range(opts.keys)]
        endpoint = cluster.client_endpoint("demo-clients")
        await endpoint.start()
        clients = [
            KvClient(
                endpoint,
                f"client{i}",
                config=self.client_config,
                history=self.history,
                process=i,
                process_stride=opts.clients,
                stats=self.stats,
                rng=random.Random(f"demo-client/{opts.seed}/{i}"),
            )
            for i in range(opts.clients)
        ]
        stop_at = self.started_at + opts.duration_s
        try:
            workers = [
                asyncio.ensure_future(
                    mixed_workload(
                        c,
                        keys,
                        random.Random(f"w/{opts.seed}/{i}"),
                        lambda: self.now_s() < stop_at,
                        think_s=opts.think_s,
                    )
                )
                for i, c in enumerate(clients)
            ]
            await self._run_faults(cluster, stop_at)
            await asyncio.gather(*workers)
            workload_end = self.now_s()
            await self._recover(cluster)
            for client in clients:
                for key in keys:
                    await client.get(key)
            converged = True
            try:
                await cluster.wait_converged(timeout_s=30)
            except TimeoutError:
                converged = False
        finally:
            await endpoint.close()
        failures = tuple(f"{e.node_id}: exit status {e.returncode}" for e in cluster.failures())
        self.log(f"checking {len(self.history)} history events for linearizability (model kv)")
        return build_report(
            opts,
            self.history,
            self.stats,
            self.faults,
            RoleTracker(),
            nodes=self.node_ids,
            start=self.started_at,
            end=workload_end,
            converged=converged,
            failures=failures,
            cpu_s=None,
            stack="processes",
        )

    async def _run_faults(self, cluster: ProcessCluster, stop_at: float) -> None:
        for fault in fault_schedule(self.options.seed, self.options.duration_s):
            delay = self.started_at + fault.at_s - self.now_s()
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule is in workload time, as in the embedded demo
            at_s = self.now_s() - self.started_at
            if fault.kind == "kill_leader":
                leader = await self._leader(cluster)
                if leader is None:
                    continue
                cluster.kill(leader)
                self.killed = leader
                event = FaultEvent(at_s, fault.kind, f"kill -9 leader {leader} (process)", leader)
            elif fault.kind == "restart":
                if self.killed is None:
                    continue
                # Started, not awaited: a process takes seconds to come up on a loaded machine, and the
                # schedule goes on meanwhile (it rejoins when it is up)
                await cluster.wait_exit(self.killed)
                await cluster.start_node(self.killed, wait=False)
                event = FaultEvent(at_s, fault.kind, f"restart {self.killed} from its Redis")
                self.killed = None
            elif fault.kind == "partition_leader":
                leader = await self._leader(cluster)
                if leader is None:
                    continue
                others = [n for n in self.node_ids if n != leader]
                self.cut = [leader, *self.rng.sample(others, (len(self.node_ids) - 1) // 2 - 1)]
                for node_id in self.cut:
                    await cluster.cut_off(node_id)
                names = ",".join(sorted(self.cut))
                event = FaultEvent(
                    at_s, fault.kind, f"cut off {{{names}}} (leader {leader} in the minority)", leader
                )
            else:
                for node_id in self.cut:
                    await cluster.reconnect(node_id)
                event = FaultEvent(at_s, fault.kind, f"heal: {','.join(sorted(self.cut))} read again")
                self.cut = []
            self.faults.append(event)
            self.history.record(Op(NEMESIS_PROCESS, OpType.INFO, fault.kind, None, event.description))
            self.log(event.description)
        remaining = stop_at - self.now_s()
        if remaining > 0:
            await asyncio.sleep(remaining)

    async def _leader(self, cluster: ProcessCluster) -> NodeId | None:
        try:
            return await cluster.leader(timeout_s=10)
        except TimeoutError:
            self.log("no leader to fault; skipping")
            return None

    async def _recover(self, cluster: ProcessCluster) -> None:
        for node_id in self.cut:
            await cluster.reconnect(node_id)
        self.cut = []
        if self.killed is not None:
            await cluster.restart(self.killed)
            self.killed = None
        for node_id in self.node_ids:
            await cluster.wait_listening(node_id)
        await cluster.wait_ready(timeout_s=60)


def run_stack_demo(args: argparse.Namespace) -> int:
    try:
        repo = find_checkout()
        options = DemoOptions(
            seed=args.seed,
            nodes=args.nodes,
            duration_s=args.duration_s,
            clients=args.clients,
            keys=args.keys,
            live=False,
            history_path=args.history,
            check_timeout_s=args.check_timeout_s,
        )
    except ConfigError as error:
        print(f"dscore demo: {error}")
        return 2
    started = time.perf_counter()
    report = asyncio.run(_StackDemo(options, repo).run())
    print(
        format_report(report).replace(
            "dscore demo report:", "dscore demo report (processes: Kafka, Redis, dscore-node):"
        )
    )
    print(f"total run time {time.perf_counter() - started:.1f} s")
    return report.exit_code
