"""`dscore demo --stack processes`: the demo's scenario on the real stack.

It starts a Kafka broker (`scripts/kafka.sh ensure`; stopped at the end only if it was not running
before), one Redis server per node (`scripts/redis.sh`, `appendfsync always`, in a folder of its own
under `.run/`), one `dscore-node` process per node and a gateway (`dscore-gateway`, on a free port;
`dscore.stack.ProcessCluster`); then it runs the embedded demo's workload and fault schedule with clients
writing through the gateway's HTTP API (`dscore.gateway_client`), prints the same report (availability,
failovers, throughput, latency, CPU per operation, linearizability), writes the same HTML report
(`--html`, `--no-html`), and stops everything it started.

The figures are computed by the same code as the embedded demo's (`dscore.demo.build_report`). Who led
when comes from the nodes' `/debug/state`, read every 100 ms (a killed node is `down`). CPU is the whole
stack's: the user and system time of every process (nodes, gateway, Redis servers, the broker, and this
process with its clients), read from `/proc` at the same observations; a process killed during the run
counts up to its last observation.

The faults, as processes take them:

- kill the leader: SIGKILL of its process (what Redis holds is all that survives); restart: a new
  process from its Redis state;
- partition the leader into a minority: a two-way partition {minority} | {majority} commanded on the
  cluster's control topic, as the chaos injector does (`dscore.transport.faults`: every node drops what
  it would send to, or read from, the other side); heal: the fault is stopped on the same topic.

`--protocol raft|paxos|pbft` picks what the nodes run (`DSCORE_PROTOCOL`; pbft with 4 nodes by default,
n >= 3f + 1): "the leader" the faults hit is then Paxos's leader or PBFT's primary, and PBFT's gateway
takes an answer only once f + 1 replicas sent the same one.

Run it from a dscore checkout (it needs `scripts/`), after `make sync` (it needs `dscore-node` and
`dscore-gateway`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import socket
import subprocess
import time
from pathlib import Path

from dscore.check import HistoryRecorder
from dscore.check.history import NEMESIS_PROCESS, Op, OpType
from dscore.core.errors import ConfigError
from dscore.core.ids import NodeId
from dscore.demo import DemoOptions, DemoReport, build_report, fault_schedule, format_report
from dscore.gateway_client import GatewayClient, GatewayClientConfig, open_session
from dscore.report import FaultEvent, RoleTracker, write_report
from dscore.report.model import DOWN
from dscore.runtime.client import ClientStats, mixed_workload
from dscore.stack import ProcessCluster
from dscore.transport.faults import FaultAction, FaultCommand, FaultKind
from dscore.transport.faults_kafka import KafkaControlPublisher, delete_control_topic
from dscore.transport.kafka_config import KafkaTransportConfig
from dscore.transport.kafka_layout import delete_topics

#: node timing on a shared two-core machine (see tests/e2e/jepsen.py for why not the 10 ms default)
STACK_ENV = {
    "DSCORE_TICK_INTERVAL_S": "0.02",
    "DSCORE_RAFT__ELECTION_TIMEOUT_TICKS": "15",
    "DSCORE_RAFT__HEARTBEAT_TICKS": "3",
    "DSCORE_PAXOS__ELECTION_TIMEOUT_TICKS": "15",
    "DSCORE_PAXOS__HEARTBEAT_TICKS": "3",
}
#: how often the nodes' roles (and the stack's CPU) are observed
OBSERVE_INTERVAL_S = 0.1
#: the id of the demo's partition on the control topic
PARTITION_ID = "demo-partition"
#: the demo's gateway (its endpoint id on Kafka)
GATEWAY = "demo-gateway"
_CLOCK_TICKS_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` so far (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) * _CLOCK_TICKS_S


class StackCpu:
    """CPU seconds of a set of processes between `start` and the last `observe` (see the module
    docstring): per pid, the last reading minus the first."""

    def __init__(self) -> None:
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}

    def observe(self, pids: list[int]) -> None:
        for pid in pids:
            used = _cpu_s(pid)
            if used is None:
                continue
            self._first.setdefault(pid, used)
            self._last[pid] = used

    def total_s(self) -> float:
        return sum(self._last[pid] - self._first[pid] for pid in self._last)


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
        self.client_config = GatewayClientConfig(op_timeout_s=8.0, retry_backoff_s=0.01)
        self.node_ids = tuple(f"n{i + 1}" for i in range(options.nodes))
        self.redis_names = [f"redis-{n}" for n in self.node_ids]
        self.roles = RoleTracker()
        self.cpu = StackCpu()
        self._last_roles: dict[NodeId, tuple[str, int | None]] = {}
        self.chaos: KafkaControlPublisher | None = None
        #: when the workload ends (moved back by the time restarts took; see `_run_faults`), which then
        #: stops the clients
        self.stop_at = 0.0
        self.running = True

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
                urls[node_id] = await asyncio.to_thread(
                    _script, repo, "redis.sh", "start", self.redis_names[i], str(_free_port()), env=env
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
                pid_dir=self.run_dir,
                protocol=self.options.protocol,
            )
            await cluster.start()
            await cluster.wait_ready(timeout_s=120)
            url = await cluster.start_gateway(GATEWAY)
            await cluster.wait_gateway_ready(GATEWAY, timeout_s=60)
            self.log(f"gateway at {url}")
            self._print_pids(cluster)
            return await self._scenario(cluster, url)
        finally:
            if self.chaos is not None:
                with contextlib.suppress(Exception):
                    await self.chaos.close()
            if cluster is not None:
                await cluster.close()
                config = KafkaTransportConfig(bootstrap_servers=bootstrap, cluster_id=cluster_id)
                with contextlib.suppress(Exception):
                    await delete_topics(config, [*self.node_ids, GATEWAY])
                with contextlib.suppress(Exception):
                    await delete_control_topic(config)
            for name in self.redis_names:
                await asyncio.to_thread(_script, repo, "redis.sh", "stop", name, env=env, check=False)
            if not kafka_was_running:
                await asyncio.to_thread(_script, repo, "kafka.sh", "stop", check=False)
            self.log(f"stopped everything; node logs kept in {self.run_dir / 'logs'}")

    def _print_pids(self, cluster: ProcessCluster) -> None:
        """One `pid NAME PID` line per process of the stack (to fault one by hand, or check it is gone)."""
        names = [f"node-{n}" for n in self.node_ids] + ["gateway-" + GATEWAY] + self.redis_names
        for name in names:
            with contextlib.suppress(OSError, ValueError):
                print(f"pid {name} {int((self.run_dir / f'{name}.pid').read_text().strip())}", flush=True)

    def _stack_pids(self, cluster: ProcessCluster) -> list[int]:
        pids = [os.getpid()]
        for process in (*cluster.nodes.values(), *cluster.gateways.values()):
            if process.pid is not None and process.alive:
                pids.append(process.pid)
        for name in ("kafka", *self.redis_names):
            for folder in (self.run_dir, self.repo / ".run"):
                with contextlib.suppress(OSError, ValueError):
                    pids.append(int((folder / f"{name}.pid").read_text().strip()))
        return pids

    async def _observe(self, cluster: ProcessCluster) -> None:
        """Who leads (each node's role and term, `down` when its process is not running) and the stack's
        CPU, every OBSERVE_INTERVAL_S until cancelled."""
        while True:
            states = await cluster.states()
            roles: dict[NodeId, tuple[str, int | None]] = {}
            for node_id in self.node_ids:
                state = states.get(node_id)
                if not cluster.nodes[node_id].alive:
                    roles[node_id] = (DOWN, None)
                elif state is not None:
                    roles[node_id] = (str(state.get("role")), state.get("term"))
                elif node_id in self._last_roles:  # alive but silent this time: as it was
                    roles[node_id] = self._last_roles[node_id]
            self._last_roles = roles
            self.roles.observe(self.now_s() - self.started_at, roles)
            self.cpu.observe(self._stack_pids(cluster))
            await asyncio.sleep(OBSERVE_INTERVAL_S)  # sampling period of the timeline, not a wait

    async def _scenario(self, cluster: ProcessCluster, url: str) -> DemoReport:
        opts = self.options
        leader = await cluster.leader()
        self.started_at = self.now_s()
        self.cpu.observe(self._stack_pids(cluster))
        observer = asyncio.ensure_future(self._observe(cluster))
        self.log(
            f"{opts.nodes} {opts.protocol_label} dscore-node processes up, {cluster.protocol.leader_role} "
            f"{leader}; {opts.clients} clients through the gateway"
        )
        keys = [f"k{i}" for i in range(opts.keys)]
        session = open_session(opts.clients + 1)
        clients = [
            GatewayClient(
                session,
                url,
                f"client{i}",
                config=self.client_config,
                history=self.history,
                process=i,
                process_stride=opts.clients,
                stats=self.stats,
            )
            for i in range(opts.clients)
        ]
        self.stop_at = self.started_at + opts.duration_s
        try:
            workers = [
                asyncio.ensure_future(
                    mixed_workload(
                        c,
                        keys,
                        random.Random(f"w/{opts.seed}/{i}"),
                        lambda: self.running,
                        think_s=opts.think_s,
                    )
                )
                for i, c in enumerate(clients)
            ]
            await self._run_faults(cluster)
            await asyncio.gather(*workers)
            workload_end = self.now_s()
            self.cpu.observe(self._stack_pids(cluster))
            observer.cancel()
            await asyncio.gather(observer, return_exceptions=True)
            await self._recover(cluster)
            await cluster.wait_gateway_ready(GATEWAY, timeout_s=60)
            for client in clients:
                for key in keys:
                    await client.get(key)
            converged = True
            try:
                await cluster.wait_converged(timeout_s=30)
            except TimeoutError:
                converged = False
        finally:
            self.running = False  # the clients stop also when a fault step failed
            observer.cancel()
            await asyncio.gather(observer, return_exceptions=True)
            await session.close()
        failures = tuple(f"{e.node_id}: exit status {e.returncode}" for e in cluster.failures())
        self.log(f"checking {len(self.history)} history events for linearizability (model kv)")
        return build_report(
            opts,
            self.history,
            self.stats,
            self.faults,
            self.roles,
            nodes=self.node_ids,
            start=self.started_at,
            end=workload_end,
            converged=converged,
            failures=failures,
            cpu_s=self.cpu.total_s(),
            stack="processes",
            settings=(
                ("stack", "Kafka, Redis per node, dscore-node processes, dscore-gateway"),
                *sorted(STACK_ENV.items()),
            ),
        )

    async def _run_faults(self, cluster: ProcessCluster) -> None:
        """The embedded demo's fault schedule. A restart is awaited until the node is ready, and the rest
        of the schedule (and the end of the workload) moves back by the time it took, so every fault
        keeps its place in the run's shape (a partition still lasts its ~20% of the run)."""
        shift_s = 0.0
        for fault in fault_schedule(self.options.seed, self.options.duration_s):
            delay = self.started_at + fault.at_s + shift_s - self.now_s()
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
                # Awaited until the node is back and caught up, as the embedded demo's restart is: a
                # process takes a second or two to start here, and a partition that follows at once
                # would otherwise leave the majority side without a quorum. The next fault waits.
                await cluster.wait_exit(self.killed)
                await cluster.start_node(self.killed)
                event = FaultEvent(at_s, fault.kind, f"restart {self.killed} from its Redis")
                with contextlib.suppress(TimeoutError):
                    await cluster.wait_ready([self.killed], timeout_s=30)
                took_s = self.now_s() - self.started_at - at_s
                shift_s += took_s
                self.stop_at += took_s
                self.killed = None
            elif fault.kind == "partition_leader":
                leader = await self._leader(cluster)
                if leader is None:
                    continue
                others = [n for n in self.node_ids if n != leader]
                self.cut = [leader, *self.rng.sample(others, (len(self.node_ids) - 1) // 2 - 1)]
                majority = tuple(n for n in self.node_ids if n not in self.cut)
                await self._partition(cluster, (tuple(self.cut), majority))
                names = ",".join(sorted(self.cut))
                event = FaultEvent(
                    at_s,
                    fault.kind,
                    f"partition {{{names}}} | {{{','.join(majority)}}} (leader {leader} in the minority)",
                    leader,
                )
            else:
                await self._heal()
                event = FaultEvent(at_s, fault.kind, "heal the partition")
            self.faults.append(event)
            self.history.record(Op(NEMESIS_PROCESS, OpType.INFO, fault.kind, None, event.description))
            self.log(event.description)
        remaining = self.stop_at - self.now_s()
        if remaining > 0:
            await asyncio.sleep(remaining)
        self.running = False

    async def _partition(self, cluster: ProcessCluster, groups: tuple[tuple[NodeId, ...], ...]) -> None:
        if self.chaos is None:
            config = KafkaTransportConfig(
                bootstrap_servers=cluster.kafka_bootstrap, cluster_id=cluster.cluster_id
            )
            self.chaos = KafkaControlPublisher(config, key=cluster.auth_key.encode("utf-8"))
            await self.chaos.start()
        now_ms = int(time.time() * 1000)
        expires_ms = now_ms + int((self.options.duration_s + 60) * 1000)  # ends by itself if never healed
        command = FaultCommand(
            PARTITION_ID,
            FaultAction.START,
            kind=FaultKind.PARTITION,
            groups=groups,
            issued_at_ms=now_ms,
            expires_at_ms=expires_ms,
        )
        await self.chaos.publish(command)

    async def _heal(self) -> None:
        if self.cut and self.chaos is not None:
            await self.chaos.publish(FaultCommand(PARTITION_ID, FaultAction.STOP))
        self.cut = []

    async def _leader(self, cluster: ProcessCluster) -> NodeId | None:
        try:
            return await cluster.leader(timeout_s=10)
        except TimeoutError:
            self.log("no leader to fault; skipping")
            return None

    async def _recover(self, cluster: ProcessCluster) -> None:
        await self._heal()
        if self.killed is not None:
            await cluster.restart(self.killed)
            self.killed = None
        for node_id in self.node_ids:
            await cluster.wait_listening(node_id)
        await cluster.wait_ready(timeout_s=60)


#: node processes by default: three (the embedded demo's five cost too much CPU here); PBFT needs 3f + 1
STACK_DEFAULT_NODES = {"raft": 3, "paxos": 3, "pbft": 4}


def stack_demo_options(args: argparse.Namespace) -> DemoOptions:
    """The demo's options from `dscore demo --stack processes ...` (the nodes read their own settings from
    the environment, so none are loaded here). Without `--nodes`, the protocol's default node count.
    Raises `ConfigError` for a bad combination (pbft with fewer than four nodes, say)."""
    protocol = getattr(args, "protocol", "raft")
    return DemoOptions(
        seed=args.seed,
        protocol=protocol,
        nodes=args.nodes if args.nodes is not None else STACK_DEFAULT_NODES.get(protocol, 3),
        duration_s=args.duration_s,
        clients=args.clients,
        keys=args.keys,
        live=False,
        history_path=args.history,
        html_path=None if args.no_html else args.html,
        check_timeout_s=args.check_timeout_s,
    )


def run_stack_demo(args: argparse.Namespace) -> int:
    """`dscore demo --stack processes` (see the module docstring); the same exit status as the embedded
    demo's."""
    try:
        repo = find_checkout()
        options = stack_demo_options(args)
    except ConfigError as error:
        print(f"dscore demo: {error}")
        return 2
    html_dir = None if options.html_path is None else options.html_path.resolve().parent
    if html_dir is not None and not html_dir.is_dir():
        print(f"dscore demo: --html: the directory {html_dir} does not exist")
        return 2
    started = time.perf_counter()
    report = asyncio.run(_StackDemo(options, repo).run())
    print(
        format_report(report).replace(
            "dscore demo report:", "dscore demo report (processes: Kafka, Redis, dscore-node, gateway):"
        )
    )
    if options.html_path is not None and report.data is not None:
        try:
            written = write_report(report.data, options.html_path)
        except OSError as error:
            print(f"dscore demo: could not write the HTML report to {options.html_path}: {error}")
            return 2
        print(f"HTML report: {written}")
    print(f"total run time {time.perf_counter() - started:.1f} s")
    return report.exit_code
