"""`dscore compare`: Raft, Multi-Paxos and PBFT side by side, same workload, same fault schedule.

    dscore compare --seeds 10 --duration-ticks 300                 # crash faults, f = 1 everywhere
    dscore compare --seeds 12 --faults byzantine --duration-ticks 300
    dscore compare --seeds 5 --faults crash,partition --nodes raft=5,paxos=5,pbft=4 --json

Each seed's run of each protocol is the run `dscore sim --protocol P --seed N --nodes n_P --clients C
--duration-ticks D --faults F` makes (`dscore.sim.registry.swarm`), so every failing seed prints the
command that replays it exactly.

What is held equal, per seed, across the protocols: everything `SimConfig.swarm` draws from the seed
outside the protocol's own stream, i.e. the network model, the fault plan (kinds and intensities, except
`max_down`, which is drawn within the node count), the Byzantine behaviours, the workload (clients, keys,
read path, timeouts, leader affinity, the operation stream of each client), dedup, the snapshot interval
and the session bound; `duration_ticks` and `tick_us`. What differs: the node count (default f = 1:
2f + 1 = 3 for Raft and Paxos, 3f + 1 = 4 for PBFT), each protocol's own drawn settings, the tick drift
(drawn within what those settings tolerate: Raft lease reads tolerate less), and everything that follows
from the protocols' own choices (a fault that targets "the leader" hits whichever node leads then). The
swarm's random fault mix is refused (`--faults swarm`): it would give PBFT Byzantine replicas the others do
not get.

Figures, per protocol (definitions in `Figures`; performance over the seeds that passed): throughput,
messages per committed op, latency p50 / p99 in ticks, failover in ticks after a leader/primary crash,
availability (the seed's definition 1.7 measured by clients in windows of 10 ticks, 100 ms as in the
demo's report; definition 1.8's fault tolerance is the "tolerates" column), safety (invariants +
linearizability, over all seeds) and other failures (liveness: no convergence after the faults ended).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from rich.console import Console
from rich.table import Table

from dscore.core.errors import ConfigError
from dscore.sim.byzantine import BYZANTINE_KINDS
from dscore.sim.config import FAULT_KINDS, SimConfig
from dscore.sim.registry import get_protocol, run_simulation, swarm
from dscore.sim.simulator import SimResult

PROTOCOLS = ("raft", "paxos", "pbft")
#: availability windows, in ticks (10 ticks of 10 ms: the demo report's 100 ms windows)
WINDOW_TICKS = 10
#: the default fault kinds: crashes (with leader targeting, drawn per seed) and partitions
DEFAULT_FAULTS = "crash,partition"


@dataclass(frozen=True, slots=True)
class SeedRun:
    """One protocol's run of one seed, reduced to what the table needs."""

    protocol: str
    seed: int
    nodes: int
    ok: bool
    #: the run failed an invariant or linearizability (not just liveness)
    safety_failed: bool
    failure: str | None
    ops_ok: int
    messages: int
    sim_us: int
    #: CPU time of the simulation (simulator + protocol + checker), microseconds
    cpu_us: float
    latencies_ticks: tuple[float, ...]
    #: ticks from each leader crash to the first ok write completed after it (None: none by the end)
    failovers_ticks: tuple[float | None, ...]
    windows_up: int
    windows: int
    replay: str


@dataclass(frozen=True, slots=True)
class Figures:
    """One row of the table: a protocol over all seeds. The performance figures are over the runs that
    passed (a failed run stops at its failure); the safety and failure counts over all.

    - throughput: client operations answered ok per simulated second (whole run, drain included);
    - messages per op: every message the network carried (replica to replica and client traffic, lost
      ones too) per ok operation;
    - latency: nearest-rank percentiles of ok operations, invocation to completion (retries included);
    - failover: for each crash of a node that believed it led (Raft and Paxos leader, PBFT primary),
      ticks to the first ok write completed after it. Not "answered by another node" as in the demo's
      report: here the crashed node restarts and may lead again first, which is recovery too. A write
      committed just before the crash and answered just after it (PBFT backups reply themselves) counts,
      a bias of at most one message delay. Crashes with no ok write by the end are counted apart;
    - availability: share of `WINDOW_TICKS` windows of the workload with at least one ok completion;
    - CPU µs per op: the simulator's own CPU per ok operation (this machine, not the protocol's cost
      on a deployment)."""

    protocol: str
    nodes: str
    tolerates: str
    seeds: int
    throughput_ops_s: float
    messages_per_op: float
    latency_p50_ticks: float
    latency_p99_ticks: float
    failover_p50_ticks: float
    failovers: int
    failovers_unfinished: int
    availability: float
    cpu_us_per_op: float
    safety_passed: int
    other_failures: int
    failing_seeds: tuple[int, ...]
    replays: tuple[str, ...]


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (nan if empty), as `dscore.report.figures.percentile`."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(1, math.ceil(pct / 100 * len(sorted_values))) - 1]


def tolerates(protocol: str, nodes: int) -> str:
    adapter = get_protocol(protocol)
    if adapter.tolerates_byzantine:
        f = adapter.tolerated(nodes, {}) if adapter.tolerated else (nodes - 1) // 3
        return f"f={f} Byzantine of 3f+1" + ("" if nodes >= 3 * f + 1 else f" (n={nodes} < 3f+1)")
    return f"f={(nodes - 1) // 2} crash of 2f+1"


def default_nodes(f: int) -> dict[str, int]:
    return {"raft": 2 * f + 1, "paxos": 2 * f + 1, "pbft": 3 * f + 1}


def parse_nodes(spec: str | None, f: int) -> dict[str, int]:
    """`--nodes`: one count for all, or `raft=3,paxos=3,pbft=4` (the rest from f)."""
    nodes = default_nodes(f)
    if not spec:
        return nodes
    if spec.strip().isdigit():
        return dict.fromkeys(PROTOCOLS, int(spec))
    for part in spec.split(","):
        name, sep, count = part.partition("=")
        name = name.strip()
        if not sep or name not in PROTOCOLS or not count.strip().isdigit() or int(count) < 1:
            raise ConfigError(f"--nodes wants N or raft=N,paxos=N,pbft=N; got {spec!r}")
        nodes[name] = int(count)
    return nodes


def fault_kinds(spec: str) -> tuple[str, ...]:
    spec = spec.strip().lower()
    if spec == "swarm":
        raise ConfigError(
            "--faults swarm draws Byzantine replicas for pbft only, so the runs would not be comparable; "
            "name the kinds (e.g. crash,partition), none, or byzantine"
        )
    if spec in ("none", ""):
        return ()
    kinds = tuple(k.strip() for k in spec.split(",") if k.strip())
    known = (*FAULT_KINDS, *BYZANTINE_KINDS, "byzantine")
    unknown = [k for k in kinds if k not in known]
    if unknown:
        raise ConfigError(f"unknown fault kinds {unknown}; choose from {', '.join(known)}")
    return kinds


def seed_config(
    protocol: str, seed: int, *, nodes: int, clients: int, duration_ticks: int, faults: str
) -> SimConfig:
    """Exactly the config `dscore sim` builds for these arguments (so the replay command replays it)."""
    config = swarm(
        seed, protocol, nodes=nodes, duration_ticks=duration_ticks, fault_kinds=fault_kinds(faults)
    )
    return replace(config, workload=replace(config.workload, clients=clients))


def replay_command(
    protocol: str, seed: int, *, nodes: int, clients: int, duration_ticks: int, faults: str
) -> str:
    return (
        f"dscore sim --protocol {protocol} --seed {seed} --nodes {nodes} --clients {clients} "
        f"--duration-ticks {duration_ticks} --faults {faults} --verbose"
    )


def is_safety_failure(failure: str | None) -> bool:
    """Invariant violations and non-linearizable histories (see `Simulation.run`); the rest are
    liveness failures (no convergence after the faults) or an exhausted budget."""
    return failure is not None and (
        "invariant violated" in failure or "history is NOT_LINEARIZABLE" in failure
    )


def run_seed(
    protocol: str, seed: int, *, nodes: int, clients: int, duration_ticks: int, faults: str
) -> SeedRun:
    config = seed_config(
        protocol, seed, nodes=nodes, clients=clients, duration_ticks=duration_ticks, faults=faults
    )
    cpu_started = time.process_time()
    result = run_simulation(config=config)
    cpu_us = (time.process_time() - cpu_started) * 1e6
    return reduce(
        result,
        cpu_us,
        replay_command(
            protocol, seed, nodes=nodes, clients=clients, duration_ticks=duration_ticks, faults=faults
        ),
    )


def reduce(result: SimResult, cpu_us: float, replay: str) -> SeedRun:
    config = result.config
    tick_us = config.tick_us
    timings = result.op_timings
    ok = [t for t in timings if t.outcome == "ok"]
    failovers: list[float | None] = []
    for crashed_us, _leader in result.leader_crashes:
        # While the crashed node is down it answers nothing, and after its restart it may lead again:
        # any ok write from the crash on is the service back, as its clients see it.
        first = next((t.completed_us for t in ok if t.is_write and t.completed_us >= crashed_us), None)
        failovers.append(None if first is None else (first - crashed_us) / tick_us)
    window_us = WINDOW_TICKS * tick_us
    windows = max(1, math.ceil(config.duration_us / window_us))
    up = {t.completed_us // window_us for t in ok if t.completed_us < config.duration_us}
    return SeedRun(
        protocol=config.protocol,
        seed=config.seed,
        nodes=config.nodes,
        ok=result.ok,
        safety_failed=is_safety_failure(result.failure),
        failure=result.failure,
        ops_ok=result.stats.ops_ok,
        messages=result.stats.messages_sent,
        sim_us=result.stats.sim_time_us,
        cpu_us=cpu_us,
        latencies_ticks=tuple((t.completed_us - t.invoked_us) / tick_us for t in ok),
        failovers_ticks=tuple(failovers),
        windows_up=len(up),
        windows=windows,
        replay=replay,
    )


def summarize(protocol: str, runs: Sequence[SeedRun]) -> Figures:
    failing = [r for r in runs if not r.ok]
    nodes = sorted({r.nodes for r in runs})
    every = runs
    # A failed run stops at its failure: its rates and windows would describe a truncated run.
    runs = [r for r in runs if r.ok]
    ops = sum(r.ops_ok for r in runs)
    latencies = sorted(x for r in runs for x in r.latencies_ticks)
    failovers = [x for r in runs for x in r.failovers_ticks]
    finished = sorted(x for x in failovers if x is not None)
    return Figures(
        protocol=protocol,
        nodes=",".join(str(n) for n in nodes),
        tolerates=tolerates(protocol, nodes[0]) if nodes else "-",
        seeds=len(every),
        throughput_ops_s=ops / (sum(r.sim_us for r in runs) / 1e6) if runs else math.nan,
        messages_per_op=sum(r.messages for r in runs) / ops if ops else math.nan,
        latency_p50_ticks=percentile(latencies, 50),
        latency_p99_ticks=percentile(latencies, 99),
        failover_p50_ticks=percentile(finished, 50),
        failovers=len(finished),
        failovers_unfinished=len(failovers) - len(finished),
        availability=sum(r.windows_up for r in runs) / sum(r.windows for r in runs) if runs else math.nan,
        cpu_us_per_op=sum(r.cpu_us for r in runs) / ops if ops else math.nan,
        safety_passed=sum(1 for r in every if not r.safety_failed),
        other_failures=sum(1 for r in every if not r.ok and not r.safety_failed),
        failing_seeds=tuple(r.seed for r in failing),
        replays=tuple(r.replay for r in failing),
    )


def compare(
    seeds: Sequence[int],
    *,
    nodes: dict[str, int],
    clients: int = 3,
    duration_ticks: int = 300,
    faults: str = DEFAULT_FAULTS,
    protocols: Sequence[str] = PROTOCOLS,
) -> list[Figures]:
    """Run every seed on every protocol and return one `Figures` per protocol (in `protocols` order)."""
    fault_kinds(faults)  # a bad spec fails before any run
    rows = []
    for protocol in protocols:
        runs = [
            run_seed(
                protocol,
                seed,
                nodes=nodes[protocol],
                clients=clients,
                duration_ticks=duration_ticks,
                faults=faults,
            )
            for seed in seeds
        ]
        rows.append(summarize(protocol, runs))
    return rows


COLUMNS = (
    ("protocol", "protocol"),
    ("nodes", "n"),
    ("tolerates", "tolerates"),
    ("throughput_ops_s", "ops/s (sim)"),
    ("cpu_us_per_op", "CPU µs/op (sim)"),
    ("messages_per_op", "msgs/op"),
    ("latency_p50_ticks", "p50 ticks"),
    ("latency_p99_ticks", "p99 ticks"),
    ("failover_p50_ticks", "failover p50 ticks"),
    ("availability", "availability"),
    ("safety", "safe (inv+lin)"),
    ("other_failures", "liveness fail"),
)


def cells(row: Figures) -> list[str]:
    def number(value: float, digits: int = 1) -> str:
        return "-" if math.isnan(value) else f"{value:.{digits}f}"

    failover = number(row.failover_p50_ticks)
    if row.failovers or row.failovers_unfinished:
        failover += (
            f" ({row.failovers}"
            + (f"+{row.failovers_unfinished} none" if row.failovers_unfinished else "")
            + ")"
        )
    return [
        row.protocol,
        row.nodes,
        row.tolerates,
        number(row.throughput_ops_s),
        number(row.cpu_us_per_op, 0),
        number(row.messages_per_op),
        number(row.latency_p50_ticks),
        number(row.latency_p99_ticks),
        failover,
        "-" if math.isnan(row.availability) else f"{row.availability:.1%}",
        f"{row.safety_passed}/{row.seeds}",
        str(row.other_failures),
    ]


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "compare",
        help="raft, paxos and pbft side by side: same seeds, workload and fault schedule, one table",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--seeds", type=int, default=10, help="how many consecutive seeds (default 10)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--f", type=int, default=1, dest="f", help="faults to tolerate: 2f+1 / 3f+1 nodes (default 1)"
    )
    parser.add_argument(
        "--nodes", default=None, help="N for all, or raft=N,paxos=N,pbft=N (default from --f)"
    )
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--duration-ticks", type=int, default=300)
    parser.add_argument(
        "--faults",
        default=DEFAULT_FAULTS,
        help=f"none, byzantine, or a comma list of {', '.join(FAULT_KINDS)} and Byzantine kinds "
        f"(default {DEFAULT_FAULTS})",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.set_defaults(func=run_compare)
    return parser


def run_compare(args: argparse.Namespace) -> int:
    """Exit 0 if every run passed, 1 if any failed (expected for raft/paxos with `--faults byzantine`),
    2 on bad arguments."""
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = max(console.width, 180)  # a pipe or a file: keep one row a line
    try:
        if args.seeds < 1 or args.f < 1 or args.clients < 0 or args.duration_ticks < 1:
            raise ConfigError("need --seeds >= 1, --f >= 1, --clients >= 0, --duration-ticks >= 1")
        nodes = parse_nodes(args.nodes, args.f)
        fault_kinds(args.faults)
    except ConfigError as error:
        console.print(f"dscore compare: {error}", markup=False)
        return 2
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    rows = compare(
        seeds, nodes=nodes, clients=args.clients, duration_ticks=args.duration_ticks, faults=args.faults
    )
    if args.json:
        console.print(json.dumps([asdict(row) for row in rows], indent=2), markup=False)
    else:
        table = Table(
            title=f"dscore compare: seeds {seeds.start}..{seeds.stop - 1}, faults {args.faults}, "
            f"{args.duration_ticks} ticks, {args.clients} clients"
        )
        for _, title in COLUMNS:
            table.add_column(title, justify="left" if title in ("protocol", "tolerates") else "right")
        for row in rows:
            table.add_row(*cells(row))
        console.print(table)
        for row in rows:
            if row.failing_seeds:
                console.print(
                    f"{row.protocol} failed seeds: {' '.join(map(str, row.failing_seeds))}", markup=False
                )
                for replay in row.replays:
                    console.print(f"  {replay}", markup=False)
    return 0 if all(not row.failing_seeds for row in rows) else 1
