"""`dscore demo`: a Raft, Multi-Paxos or PBFT cluster, workload, faults, a checked history.

What it does, in order (times are fractions of `--duration-s`, jittered by `--seed`):

1. starts an `EmbeddedCluster` of `--nodes` replicas of `--protocol` (Raft by default, Multi-Paxos or PBFT) on
   the in-memory transport (real codec, real checksums, real storage semantics) and waits for a leader;
2. runs `--clients` concurrent `KvClient`s doing get / put / append / cas over `--keys` keys, each
   recording into one `dscore.check.HistoryRecorder`;
3. injects a deterministic fault schedule: kill the leader (~20%), restart it (~40%), partition the
   current leader into a minority (~55%), heal (~75%);
4. ends with a final read of every key by every client, waits for the replicas to converge, and checks
   the history for linearizability (model `kv`).

The report defines its figures precisely (`dscore.report.figures` is their one definition):

- availability: the seed's definition 1.7, uptime / total time, measured from the clients' side. The
  workload time is cut into consecutive 100 ms windows; a window is up when at least one client operation
  completed successfully (`ok`) in it; availability = up windows / all windows. It is what a user of the
  service sees, faults included.
- failover time: for each fault that removes the leader (kill, or partition into a minority), the time
  from the fault to the first successful write answered by a different node (i.e. the first commit
  under the new leader, as a client sees it).
- throughput: successful operations per second of workload time, beside the process's CPU time per
  successful operation; latency percentiles (nearest rank) over successful operations, retries included.

Besides the text report, the demo writes an HTML page (`--html FILE`, by default
`dscore-demo-report.html` in the current directory; `--no-html` skips it) drawn by `dscore.report` from a
`ReportData`: throughput and latency over time with the faults marked, each failover's gap, which node
led when (from the nodes' own roles, observed on every change and at least once a tick), the
availability windows and the checker's verdict.

Exit status: 0 when the history is linearizable (or the checker ran out of its time budget, which is
reported as UNKNOWN), 1 when it is not linearizable or a replica failed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dscore.check import HistoryRecorder, Verdict, check_history
from dscore.check.history import NEMESIS_PROCESS, Op, OpType
from dscore.check.result import CheckResult
from dscore.core.client_messages import Outcome
from dscore.core.errors import ConfigError
from dscore.core.ids import NodeId
from dscore.protocols.paxos import PaxosConfig, PaxosNode
from dscore.protocols.pbft import PbftConfig
from dscore.protocols.raft import RaftConfig
from dscore.report import (
    WINDOW_S,
    FailoverTime,
    FaultEvent,
    ReportData,
    RoleTracker,
    availability_windows,
    failover_time,
    percentile,
    write_report,
)
from dscore.runtime.client import ClientConfig, ClientStats, KvClient, OpOutcome, mixed_workload
from dscore.runtime.cluster import EmbeddedCluster, pbft_factory, raft_factory
from dscore.runtime.gc_tuning import DEFAULT_GC_GEN0_THRESHOLD, tune_gc
from dscore.runtime.node import DEFAULT_TICK_INTERVAL_S, RuntimeConfig
from dscore.settings import load_settings

# Re-exported: the figures and the fault records are defined in dscore.report, which the HTML page uses.
__all__ = [
    "WINDOW_S",
    "DemoOptions",
    "DemoReport",
    "FailoverTime",
    "Fault",
    "FaultEvent",
    "add_demo_parser",
    "availability_windows",
    "build_report",
    "failover_time",
    "fault_schedule",
    "format_report",
    "percentile",
    "run_demo",
    "run_scenario",
]

#: where `dscore demo` writes its HTML report unless told otherwise (`--html FILE`, `--no-html`)
DEFAULT_HTML_PATH = Path("dscore-demo-report.html")


DEFAULT_NODES = 5
#: the protocols the demo can run, with the name its report gives them
DEMO_PROTOCOLS = {"raft": "Raft", "paxos": "Multi-Paxos", "pbft": "PBFT"}


@dataclass(frozen=True, slots=True)
class DemoOptions:
    seed: int = 1
    nodes: int = DEFAULT_NODES
    duration_s: float = 20.0
    clients: int = 6
    keys: int = 3
    live: bool = True
    history_path: Path | None = None
    #: write the HTML report here (None: no HTML report)
    html_path: Path | None = None
    #: time budget of the linearizability check
    check_timeout_s: float = 120.0
    tick_interval_s: float = DEFAULT_TICK_INTERVAL_S
    #: pause between one client's operations (uniform in [0, think_s]); keeps the history checkable
    think_s: float = 0.01
    #: Raft's settings (`dscore demo` reads them from DSCORE_RAFT__*, e.g. DSCORE_RAFT__PRE_VOTE=false)
    raft: RaftConfig = field(default_factory=RaftConfig)
    #: the replication protocol: one of `DEMO_PROTOCOLS` (pbft: n = 3f + 1, at least 4 nodes; every
    #: replica answers, clients wait for f + 1 matching answers)
    protocol: str = "raft"
    #: Multi-Paxos's settings (with `protocol="paxos"`; DSCORE_PAXOS__*)
    paxos: PaxosConfig = field(default_factory=PaxosConfig)
    #: PBFT's settings (with `protocol="pbft"`; DSCORE_PBFT__*)
    pbft: PbftConfig = field(default_factory=PbftConfig)
    #: the process's young-generation GC threshold (DSCORE_GC_GEN0_THRESHOLD; 0 keeps CPython's)
    gc_gen0_threshold: int = DEFAULT_GC_GEN0_THRESHOLD
    #: the cluster-wide settings every node fingerprints (`ClusterSettings.description()`)
    cluster_settings: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.protocol == "pbft" and self.nodes < 4:
            raise ConfigError("--nodes must be at least 4 for pbft (n = 3f + 1 with f >= 1)")
        if self.nodes < 3:
            raise ConfigError("--nodes must be at least 3 (a minority must be able to fail)")
        if self.duration_s < 3:
            raise ConfigError("--duration-s must be at least 3 seconds to fit the fault schedule")
        if self.clients < 1 or self.keys < 1:
            raise ConfigError("--clients and --keys must be at least 1")
        if self.protocol not in DEMO_PROTOCOLS:
            raise ConfigError(f"--protocol must be one of {', '.join(DEMO_PROTOCOLS)}, got {self.protocol!r}")

    @property
    def protocol_label(self) -> str:
        return DEMO_PROTOCOLS[self.protocol]

    @property
    def protocol_name(self) -> str:
        return self.protocol_label

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DemoOptions:
        """The command line, plus the node settings from the environment (`dscore.settings`): the tick
        length, Raft's knobs and the GC threshold. Raises `ConfigError` naming a bad variable."""
        settings = load_settings()
        protocol = getattr(args, "protocol", "raft")
        # The fingerprint names what the nodes run: the protocol and its own section of the settings.
        description = settings.cluster_settings().model_copy(update={"protocol": protocol}).description()
        return cls(
            tick_interval_s=settings.tick_interval_s,
            raft=settings.raft.raft_config(),
            paxos=settings.paxos.paxos_config(),
            pbft=settings.pbft.pbft_config(),
            protocol=protocol,
            gc_gen0_threshold=settings.gc_gen0_threshold,
            cluster_settings=tuple(sorted(description.items())),
            seed=args.seed,
            nodes=args.nodes if args.nodes is not None else (4 if protocol == "pbft" else DEFAULT_NODES),
            duration_s=args.duration_s,
            clients=args.clients,
            keys=args.keys,
            live=not args.no_live,
            history_path=args.history,
            html_path=None if args.no_html else args.html,
            check_timeout_s=args.check_timeout_s,
        )


@dataclass(frozen=True, slots=True)
class Fault:
    """A scheduled fault: `kind` is kill_leader, restart, partition_leader or heal."""

    at_s: float
    kind: str


@dataclass(frozen=True, slots=True)
class DemoReport:
    options: DemoOptions
    workload_s: float
    ok: int
    failed: int
    cas_mismatches: int
    unknown: int
    throughput_ops_s: float
    latency_ms: dict[int, float]
    available_windows: int
    total_windows: int
    failovers: tuple[FailoverTime, ...]
    faults: tuple[FaultEvent, ...]
    converged: bool
    check: CheckResult
    node_failures: tuple[str, ...] = field(default=())
    #: CPU seconds the process used during the workload (nodes, clients and the demo itself)
    cpu_s: float | None = None
    #: what the HTML report is drawn from
    data: ReportData | None = None

    @property
    def cpu_us_per_op(self) -> float | None:
        return self.cpu_s / self.ok * 1e6 if self.cpu_s is not None and self.ok else None

    @property
    def availability(self) -> float:
        return self.available_windows / self.total_windows if self.total_windows else 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.check.verdict is Verdict.NOT_LINEARIZABLE or self.node_failures else 0


# -- the fault plan (tested directly) -------------------------------------------------------------------


def fault_schedule(seed: int, duration_s: float) -> tuple[Fault, ...]:
    """The fault plan: fixed shape, times jittered by the seed (±3% of the run)."""
    rng = random.Random(f"demo-faults/{seed}")
    plan = (("kill_leader", 0.20), ("restart", 0.40), ("partition_leader", 0.55), ("heal", 0.75))
    return tuple(Fault(round(duration_s * (at + rng.uniform(-0.03, 0.03)), 3), kind) for kind, at in plan)


# -- the run --------------------------------------------------------------------------------------------


class _Demo:
    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.cluster = EmbeddedCluster(
            PaxosNode.factory(options.paxos)
            if options.protocol == "paxos"
            else pbft_factory(options.pbft)
            if options.protocol == "pbft"
            else raft_factory(options.raft),
            options.nodes,
            config=RuntimeConfig(tick_interval_s=options.tick_interval_s),
            seed=options.seed,
            cluster_settings=dict(options.cluster_settings) or None,
            protocol=options.protocol,
        )
        self.history = HistoryRecorder()
        self.stats = ClientStats()
        self.rng = random.Random(f"demo/{options.seed}")
        self.phase = "starting"
        self.faults: list[FaultEvent] = []
        self.started_at = 0.0
        self.killed: NodeId | None = None
        self.roles = RoleTracker()
        self.cpu_started_s = 0.0
        self.client_config = ClientConfig(op_timeout_s=2.0, attempt_timeout_s=0.25, retry_backoff_s=0.005)

    def now_s(self) -> float:
        return asyncio.get_running_loop().time()

    def log(self, message: str) -> None:
        if not self.options.live:
            print(f"[{self.now_s() - self.started_at:7.2f}s] {message}", flush=True)

    async def run(self) -> DemoReport:
        opts = self.options
        await self.cluster.start()
        leader = await self.cluster.wait_for_leader(10.0)
        self.started_at = self.now_s()
        self.cpu_started_s = time.process_time()
        roles = asyncio.ensure_future(self._track_roles())
        self.log(
            f"{opts.nodes} {opts.protocol_label} nodes up, leader {leader}; "
            f"{opts.clients} clients on {opts.keys} keys"
        )
        keys = [f"k{i}" for i in range(opts.keys)]
        endpoint = await self.cluster.client_endpoint("demo-clients")
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
        self.phase = "steady"
        display = asyncio.ensure_future(self._display(stop_at))
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
            await self._run_faults(stop_at)
            await asyncio.gather(*workers)
            workload_end = self.now_s()
            cpu_s = time.process_time() - self.cpu_started_s
            roles.cancel()
            await asyncio.gather(roles, return_exceptions=True)
            self.phase = "final reads"
            await self._recover()
            for client in clients:
                for key in keys:
                    await client.get(key)
            self.phase = "converging"
            converged = await self._converged(5.0)
        finally:
            self.phase = "done"
            roles.cancel()
            display.cancel()
            await asyncio.gather(display, return_exceptions=True)
            failures = tuple(f"{n}: {error!r}" for n, error in self.cluster.node_failures().items())
            await self.cluster.stop()
        return self._report(workload_end, converged, failures, cpu_s)

    async def _track_roles(self) -> None:
        """Record every node's role and term on every change the cluster signals, and at least once a
        tick (`wait_for` re-checks its predicate then), until cancelled at the end of the workload."""

        def observe() -> bool:
            statuses = self.cluster.statuses()
            self.roles.observe(
                self.now_s() - self.started_at, {s.node_id: (s.role, s.term) for s in statuses}
            )
            return False

        await self.cluster.wait_for(observe, timeout_s=self.options.duration_s + 3600.0)

    async def _run_faults(self, stop_at: float) -> None:
        cluster = self.cluster
        for fault in fault_schedule(self.options.seed, self.options.duration_s):
            delay = self.started_at + fault.at_s - self.now_s()
            if delay > 0:
                await asyncio.sleep(delay)
            at_s = self.now_s() - self.started_at
            if fault.kind == "kill_leader":
                leader = await self._current_leader()
                if leader is None:
                    continue
                cluster.kill(leader)
                self.killed = leader
                event = FaultEvent(at_s, fault.kind, f"kill -9 leader {leader}", leader)
                self.phase = f"leader {leader} killed"
            elif fault.kind == "restart":
                if self.killed is None:
                    continue
                await cluster.restart(self.killed)
                event = FaultEvent(at_s, fault.kind, f"restart {self.killed} from its storage")
                self.phase = f"{self.killed} restarted"
                self.killed = None
            elif fault.kind == "partition_leader":
                leader = await self._current_leader()
                if leader is None:
                    continue
                others = [n for n in cluster.node_ids if n != leader]
                minority = [leader, *self.rng.sample(others, (len(cluster.node_ids) - 1) // 2 - 1)]
                majority = [n for n in cluster.node_ids if n not in minority]
                cluster.partition([minority, majority])
                groups = f"{{{','.join(sorted(minority))}}} | {{{','.join(majority)}}}"
                event = FaultEvent(
                    at_s, fault.kind, f"partition {groups} (leader {leader} in minority)", leader
                )
                self.phase = f"partition {groups}"
            else:
                cluster.heal()
                event = FaultEvent(at_s, fault.kind, "heal the partition")
                self.phase = "healed"
            self.faults.append(event)
            self.history.record(Op(NEMESIS_PROCESS, OpType.INFO, fault.kind, None, event.description))
            self.log(event.description)
        remaining = stop_at - self.now_s()
        if remaining > 0:
            await asyncio.sleep(remaining)

    async def _current_leader(self) -> NodeId | None:
        try:
            return await self.cluster.wait_for_leader(5.0)
        except TimeoutError:
            self.log("no leader to fault; skipping")
            return None

    async def _recover(self) -> None:
        self.cluster.heal()
        if self.killed is not None:
            await self.cluster.restart(self.killed)
            self.killed = None
        await self.cluster.wait_for_leader(10.0)

    async def _converged(self, timeout_s: float) -> bool:
        def same() -> bool:
            runtimes = [self.cluster.runtime(n) for n in self.cluster.node_ids]
            if any(rt is None for rt in runtimes):
                return False
            images = {rt.state_machine.snapshot() for rt in runtimes if rt is not None}
            return len(images) == 1

        try:
            await self.cluster.wait_for(same, timeout_s)
        except TimeoutError:
            return False
        return True

    # -- display ------------------------------------------------------------------------------------

    async def _display(self, stop_at: float) -> None:
        if not self.options.live:
            while True:
                await asyncio.sleep(1.0)
                self.log(self._status_line())
        with Live(self._render(stop_at), console=self.console, refresh_per_second=8, transient=False) as live:
            while True:
                await asyncio.sleep(0.25)
                live.update(self._render(stop_at))

    def _recent_ops_s(self, span_s: float = 1.0) -> float:
        now = self.now_s()
        count = 0
        for completion in reversed(self.stats.completions):
            if completion.time_s < now - span_s:
                break
            if completion.outcome is OpOutcome.OK:
                count += 1
        return count / span_s

    def _leaders(self) -> str:
        """Who leads, as the nodes themselves say (two during a partition, until the old one notices)."""
        leading = [n for n in self.cluster.node_ids if (rt := self.cluster.runtime(n)) and rt.is_leader]
        return ",".join(leading) or "-"

    def _status_line(self) -> str:
        leader = self._leaders()
        done = len(self.stats.completions)
        return f"phase={self.phase} leader={leader} ops/s={self._recent_ops_s():.0f} ops={done}"

    def _render(self, stop_at: float) -> Group:
        elapsed = self.now_s() - self.started_at if self.started_at else 0.0
        table = Table(title="nodes", expand=False)
        for column in ("node", "role", "term", "commit", "applied", "incarnation", "leader seen"):
            table.add_column(column, justify="right" if column not in ("node", "role") else "left")
        for status in self.cluster.statuses():
            style = {"leader": "bold green", "down": "red", "candidate": "yellow"}.get(status.role, "")
            table.add_row(
                status.node_id,
                Text(status.role, style=style),
                "-" if status.term is None else str(status.term),
                "-" if status.commit_index is None else str(status.commit_index),
                str(status.applied_index),
                str(status.incarnation),
                status.leader_id or "-",
            )
        ok = sum(1 for c in self.stats.completions if c.outcome is OpOutcome.OK)
        header = Text.assemble(
            ("dscore demo ", "bold"),
            f"{self.options.nodes}-node {self.options.protocol_label}, seed {self.options.seed}   ",
            (f"{elapsed:5.1f}/{self.options.duration_s:.0f} s", "cyan"),
            "   phase: ",
            (self.phase, "bold magenta"),
            f"\nleader {self._leaders()}   ops/s {self._recent_ops_s():6.0f}   ok ops {ok}   "
            f"faults {len(self.faults)}",
        )
        return Group(header, table)

    # -- report -------------------------------------------------------------------------------------

    def _report(
        self, workload_end: float, converged: bool, failures: tuple[str, ...], cpu_s: float
    ) -> DemoReport:
        self.phase = "checking linearizability"
        self.log(f"checking {len(self.history)} history events for linearizability (model kv)")
        return build_report(
            self.options,
            self.history,
            self.stats,
            self.faults,
            self.roles,
            nodes=self.cluster.node_ids,
            start=self.started_at,
            end=workload_end,
            converged=converged,
            failures=failures,
            cpu_s=cpu_s,
            stack="embedded",
        )


def build_report(
    opts: DemoOptions,
    history_recorder: HistoryRecorder,
    stats: ClientStats,
    faults: Sequence[FaultEvent],
    roles: RoleTracker,
    *,
    nodes: tuple[NodeId, ...],
    start: float,
    end: float,
    converged: bool,
    failures: tuple[str, ...],
    cpu_s: float | None,
    stack: str,
    settings: tuple[tuple[str, str], ...] = (),
) -> DemoReport:
    """The report of a run whose workload ran from `start` to `end` (event-loop time; fault times are
    relative to `start`): the figures of the module docstring, the linearizability verdict and the
    `ReportData` the HTML page is drawn from. Shared by the embedded demo and `dscore demo --stack
    processes` (`dscore.demo_stack`), so both stacks report the same figures the same way."""
    completions = [c for c in stats.completions if start <= c.time_s < end]
    ok_latencies = sorted(c.latency_s * 1000 for c in completions if c.outcome is OpOutcome.OK)
    available, total = availability_windows(
        [c.time_s for c in completions if c.outcome is OpOutcome.OK], start, end
    )
    failovers = []
    for fault in faults:
        if fault.removed_leader is None:
            continue
        # Completions carry loop time; faults are kept relative to the workload start.
        absolute = FaultEvent(fault.at_s + start, fault.kind, fault.description, fault.removed_leader)
        measured = failover_time(completions, absolute)
        failovers.append(FailoverTime(fault, measured.seconds, measured.new_leader))
    history = history_recorder.history()
    if opts.history_path is not None:
        opts.history_path.write_text(history.to_edn(), encoding="utf-8")
    check = check_history(history, model="kv", timeout_s=opts.check_timeout_s)
    data = ReportData(
        title=f"demo: {opts.nodes}-node {opts.protocol_label}, seed {opts.seed}",
        stack=stack,
        protocol=opts.protocol,
        nodes=nodes,
        seed=opts.seed,
        clients=opts.clients,
        keys=opts.keys,
        duration_s=end - start,
        completions=tuple(replace(c, time_s=c.time_s - start) for c in completions),
        faults=tuple(faults),
        roles=roles.finish(end - start),
        check=check,
        converged=converged,
        node_failures=failures,
        cpu_s=cpu_s,
        settings=settings or (("tick_interval_s", f"{opts.tick_interval_s:g}"), *opts.cluster_settings),
    )
    return DemoReport(
        options=opts,
        workload_s=end - start,
        ok=sum(1 for c in completions if c.outcome is OpOutcome.OK),
        failed=sum(1 for c in completions if c.outcome is OpOutcome.FAIL),
        cas_mismatches=sum(1 for c in completions if c.error == Outcome.CAS_MISMATCH.name),
        unknown=sum(1 for c in completions if c.outcome is OpOutcome.UNKNOWN),
        throughput_ops_s=len(ok_latencies) / (end - start) if end > start else 0.0,
        latency_ms={p: percentile(ok_latencies, p) for p in (50, 90, 99)},
        available_windows=available,
        total_windows=total,
        failovers=tuple(failovers),
        faults=tuple(faults),
        converged=converged,
        check=check,
        node_failures=failures,
        cpu_s=cpu_s,
        data=data,
    )


def format_report(report: DemoReport) -> str:
    opts = report.options
    lines = [
        "",
        f"dscore demo report: {opts.nodes}-node {opts.protocol_label}, seed {opts.seed}, "
        f"{report.workload_s:.1f} s of workload, {opts.clients} clients on {opts.keys} keys",
        "",
        "faults:",
        *(f"  t={f.at_s:6.2f}s  {f.description}" for f in report.faults),
        "",
        f"operations: {report.ok} ok, {report.failed} failed with no effect ({report.cas_mismatches} of them "
        f"a cas whose compare failed), {report.unknown} with unknown outcome",
        f"throughput: {report.throughput_ops_s:.0f} successful ops/s"
        + (
            ""
            if report.cpu_us_per_op is None
            else f", {report.cpu_us_per_op:.0f} µs of CPU per successful op"
        ),
        "latency of successful ops (nearest rank, retries included): "
        + ", ".join(f"p{p} {v:.1f} ms" for p, v in report.latency_ms.items()),
        f"availability (uptime / total time): {report.availability:.1%} ({report.available_windows} of "
        f"{report.total_windows} {WINDOW_S * 1000:.0f}-ms windows had at least one successful op)",
        "failover (fault removing the leader -> first successful write answered by another node):",
    ]
    for failover in report.failovers:
        took = "no recovery seen" if failover.seconds is None else f"{failover.seconds * 1000:.0f} ms"
        lines.append(f"  {failover.fault.description}: {took} (new leader {failover.new_leader or '-'})")
    check = report.check
    lines += [
        f"replicas converged: {'yes' if report.converged else 'NO'}",
        f"linearizability (model kv, {check.ops_checked} ops, {len(check.per_key)} keys, "
        f"{check.elapsed_s:.1f} s): {check.verdict.value}",
    ]
    if check.verdict is not Verdict.LINEARIZABLE:
        lines.append(f"  {check.explanation}")
    lines += [f"  node failure: {failure}" for failure in report.node_failures]
    return "\n".join(lines)


# -- CLI ------------------------------------------------------------------------------------------------


def add_demo_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `demo` to a `dscore` subcommand parser (an `argparse` `_SubParsersAction`)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run a Raft, Multi-Paxos or PBFT cluster (in one process or as processes), break it, check it",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    defaults = DemoOptions()
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seeds the workload and faults")
    parser.add_argument(
        "--protocol",
        choices=tuple(DEMO_PROTOCOLS),
        default=defaults.protocol,
        help="raft (default), paxos or pbft (at least 4 nodes; the primary is the leader the faults hit)",
    )
    parser.add_argument(
        "--nodes", type=int, default=None, help=f"replicas (default {defaults.nodes}; 4 for pbft; at least 3)"
    )
    parser.add_argument("--duration-s", type=float, default=defaults.duration_s, help="workload seconds")
    parser.add_argument("--clients", type=int, default=defaults.clients, help="concurrent clients")
    parser.add_argument("--keys", type=int, default=defaults.keys, help="keys the clients share")
    parser.add_argument("--no-live", action="store_true", help="plain log lines instead of a live view")
    parser.add_argument("--history", type=Path, default=None, help="write the EDN history to this file")
    parser.add_argument(
        "--html",
        type=Path,
        default=DEFAULT_HTML_PATH,
        metavar="FILE",
        help="write the HTML report (charts of throughput, latency, failovers, who led when, availability "
        f"and the verdict; one self-contained file) to FILE (default: ./{DEFAULT_HTML_PATH})",
    )
    parser.add_argument("--no-html", action="store_true", help="write no HTML report")
    parser.add_argument(
        "--check-timeout-s", type=float, default=defaults.check_timeout_s, help="linearizability budget"
    )
    parser.add_argument(
        "--stack",
        choices=("embedded", "processes"),
        default="embedded",
        help="embedded: one process, memory transport (default); processes: Kafka, Redis, one "
        "dscore-node process per node and a gateway, started and stopped by the demo (dscore.demo_stack)",
    )
    return parser


def run_scenario(options: DemoOptions, console: Console | None = None) -> DemoReport:
    """Run the demo once and return its report (`report.data` is what the HTML page is drawn from).
    Unlike `dscore demo`, it leaves the garbage collector as it is and writes no file but the history."""
    return asyncio.run(_Demo(options, console or Console()).run())


def run_demo(args: argparse.Namespace) -> int:
    """The embedded demo (`--stack processes` is dispatched by `dscore.cli` to `dscore.demo_stack`)."""
    try:
        options = DemoOptions.from_args(args)
    except ConfigError as error:
        print(f"dscore demo: {error}")
        return 2
    html_dir = None if options.html_path is None else options.html_path.resolve().parent
    if html_dir is not None and not html_dir.is_dir():
        print(f"dscore demo: --html: the directory {html_dir} does not exist")
        return 2
    tune_gc(options.gc_gen0_threshold)
    started = time.perf_counter()
    report = run_scenario(options)
    print(format_report(report))
    if options.html_path is not None and report.data is not None:
        try:
            written = write_report(report.data, options.html_path)
        except OSError as error:
            print(f"dscore demo: could not write the HTML report to {options.html_path}: {error}")
            return 2
        print(f"HTML report: {written}")
    print(f"total run time {time.perf_counter() - started:.1f} s")
    return report.exit_code
