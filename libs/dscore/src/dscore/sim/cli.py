"""`dscore sim`: run the simulator from the command line.

    dscore sim --protocol sequencer --seed 42 --verbose      # replay one seed, with its trace
    dscore sim --protocol sequencer --seeds 500              # a sweep; failures list their seeds
    dscore sim --seeds 100 --faults crash,partition --network partial
    dscore sim --protocol raft --plant apply_before_persist --seeds 200   # must fail: a planted bug
    dscore sim --plant list                                   # the catalogue of planted bugs
    dscore sim --protocol raft --seed 3 --set read_only_option=lease --set check_quorum=true \
        --tick-drift 0.5                                      # drift beyond the bound lease reads assume
    dscore sim --protocol pbft --seeds 100 --faults byzantine --nodes 4   # every Byzantine kind

One seed prints the run's configuration, statistics and trace digest (and with `--verbose` every trace
line); the same seed always prints the same digest. Many seeds print a summary table. The exit status
is non-zero if any run failed.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Any

from rich.console import Console
from rich.table import Table

from dscore.core.errors import ConfigError
from dscore.sim.byzantine import BYZANTINE_KINDS
from dscore.sim.config import FAULT_KINDS, NetworkModel, SimConfig
from dscore.sim.planted import PLANTED, planted, run_planted
from dscore.sim.registry import protocol_names, run_simulation, swarm
from dscore.sim.simulator import SimResult


def add_sim_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `sim` subcommand to an `argparse` subparsers object; its `func` default is `run_sim`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sim",
        help="run protocols in the deterministic simulator",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--protocol", default="sequencer", help=f"one of: {', '.join(protocol_names())}")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="run (replay) exactly this seed")
    seeds.add_argument("--seeds", type=int, help="run this many consecutive seeds")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed of --seeds (default 0)")
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--duration-ticks", type=int, default=1_000)
    parser.add_argument(
        "--faults",
        default="swarm",
        help=f"swarm (a random subset per seed; Byzantine kinds too for pbft), none, or a comma list of: "
        f"{', '.join(FAULT_KINDS)}, and Byzantine kinds {', '.join(BYZANTINE_KINDS)} (byzantine: all of "
        "them)",
    )
    parser.add_argument(
        "--network",
        choices=[m.value for m in NetworkModel],
        default=None,
        help="network model (default: drawn from each seed)",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the linearizability check")
    parser.add_argument(
        "--plant",
        choices=["list", *sorted(PLANTED)],
        default=None,
        metavar="NAME",
        help="run a deliberately broken variant (dscore.sim.planted; `--plant list` lists them); its "
        "failures are expected",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="replace a protocol setting drawn from the seed (repeatable), e.g. read_only_option=lease",
    )
    parser.add_argument(
        "--tick-drift",
        type=float,
        default=None,
        help="nodes' tick rates drift apart by up to this fraction (default: drawn within what the "
        "settings tolerate, 12.5%% at most; more is not a valid deployment, and shows what breaks)",
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="print every trace line of a single seed"
    )
    parser.set_defaults(func=run_sim)
    return parser


def _fault_kinds(spec: str) -> tuple[str, ...] | None:
    spec = spec.strip().lower()
    if spec == "swarm":
        return None
    if spec in ("none", ""):
        return ()
    kinds = tuple(k.strip() for k in spec.split(",") if k.strip())
    known = (*FAULT_KINDS, *BYZANTINE_KINDS, "byzantine")
    unknown = [k for k in kinds if k not in known]
    if unknown:
        raise ConfigError(f"unknown fault kinds {unknown}; choose from {', '.join(known)}")
    return kinds


def _setting(spec: str) -> tuple[str, int | bool | str]:
    """`NAME=VALUE` with VALUE an int, true/false, or else a string."""
    name, sep, text = spec.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"--set wants NAME=VALUE, got {spec!r}")
    text = text.strip()
    value: int | bool | str = text
    if text.lower() in ("true", "false"):
        value = text.lower() == "true"
    elif text.lstrip("-").isdigit():
        value = int(text)
    return name.strip(), value


def _config(args: argparse.Namespace, seed: int, keep_trace: bool) -> SimConfig:
    extra: dict[str, Any] = {}
    if args.tick_drift is not None:
        extra["tick_drift"] = args.tick_drift
    config = swarm(
        seed,
        args.protocol,
        nodes=args.nodes,
        duration_ticks=args.duration_ticks,
        network=NetworkModel(args.network) if args.network else None,
        fault_kinds=_fault_kinds(args.faults),
        check=not args.no_check,
        keep_trace=keep_trace,
        set_core_options=dict(_setting(spec) for spec in args.set),
        **extra,
    )
    return replace(config, workload=replace(config.workload, clients=args.clients))


def run_sim(args: argparse.Namespace) -> int:
    console = Console(highlight=False, soft_wrap=True)
    try:
        if args.plant == "list":
            for bug in PLANTED.values():
                console.print(f"{bug.name:36} {bug.protocol:10} {bug.description}", markup=False)
            return 0
        if args.plant and planted(args.plant).protocol != args.protocol:
            raise ConfigError(f"--plant {args.plant} breaks protocol {planted(args.plant).protocol!r}")
        if args.protocol not in protocol_names():
            raise ConfigError(f"unknown protocol {args.protocol!r}; known: {', '.join(protocol_names())}")
        if args.seeds is None:
            seed = args.seed if args.seed is not None else args.first_seed
            return _single(console, args, _config(args, seed, keep_trace=args.verbose), verbose=args.verbose)
        if args.seeds < 1:
            raise ConfigError("--seeds must be at least 1")
        return _sweep(console, args)
    except ConfigError as error:
        console.print(f"dscore sim: {error}")
        return 2


def replay_command(args: argparse.Namespace, seed: int) -> str:
    """The command line that replays `seed` of a run started with `args`."""
    parts = [
        f"dscore sim --protocol {args.protocol} --seed {seed} --nodes {args.nodes} --clients {args.clients}",
        f"--duration-ticks {args.duration_ticks} --faults {args.faults}",
    ]
    if args.network:
        parts.append(f"--network {args.network}")
    parts.extend(f"--set {spec}" for spec in args.set)
    if args.tick_drift is not None:
        parts.append(f"--tick-drift {args.tick_drift}")
    if args.no_check:
        parts.append("--no-check")
    if args.plant:
        parts.append(f"--plant {args.plant}")
    return " ".join([*parts, "--verbose"])


def _run(args: argparse.Namespace, config: SimConfig) -> SimResult:
    if not args.plant:
        return run_simulation(config=config)
    return run_planted(args.plant, config)


def _single(console: Console, args: argparse.Namespace, config: SimConfig, *, verbose: bool) -> int:
    result = _run(args, config)
    if verbose:
        for line in result.trace:
            console.print(line, markup=False)
    stats = result.stats
    plan = config.faults
    console.print(
        f"seed={config.seed} protocol={config.protocol} nodes={config.nodes} "
        f"clients={config.workload.clients} network={config.network.model.value} "
        f"faults={','.join(plan.enabled) or 'none'} dedup={config.dedup} reads={config.workload.reads.value}",
        markup=False,
    )
    if config.byzantine.kinds:
        console.print(f"byzantine: {config.byzantine}", markup=False)
    console.print(f"plan: {plan}", markup=False)
    settings = " ".join(f"{name}={value}" for name, value in config.core_options) or "defaults"
    console.print(
        f"settings: {settings} tick_drift={config.tick_drift:.4f}"
        f"{' slow_leader_clock' if config.slow_leader_clock and config.tick_drift else ''}"
        f" max_sessions={config.max_sessions}",
        markup=False,
    )
    console.print(
        f"events={stats.events} messages={stats.messages_sent} delivered={stats.messages_delivered} "
        f"dropped={stats.dropped_omission}+{stats.dropped_partition}(partition)+{stats.dropped_down}(down) "
        f"duplicated={stats.duplicated} delayed={stats.delayed} corrupted={stats.corrupted} "
        f"crashes={stats.crashes} (power losses={stats.power_losses}) restarts={stats.restarts} "
        f"partitions={stats.partitions} "
        f"pauses={stats.pauses} leader-isolations={stats.leader_isolations}",
        markup=False,
    )
    console.print(
        f"ops={stats.ops_invoked} ok={stats.ops_ok} fail={stats.ops_failed} info={stats.ops_info} "
        f"checked={stats.ops_checked} verdict={result.verdict} applied={stats.entries_applied} "
        f"simulated={stats.sim_seconds:.2f}s wall={stats.wall_s:.2f}s check={stats.check_s:.2f}s",
        markup=False,
    )
    console.print(f"trace digest: {result.trace_digest}", markup=False)
    if result.ok:
        console.print("PASS", markup=False)
        return 0
    console.print(f"FAIL {result.failure}", markup=False)
    if result.detail:
        console.print(result.detail, markup=False)
    return 1


def _sweep(console: Console, args: argparse.Namespace) -> int:
    started = time.perf_counter()
    results: list[SimResult] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        results.append(_run(args, _config(args, seed, keep_trace=False)))
    wall_s = time.perf_counter() - started
    failed = [r for r in results if not r.ok]
    sim_s = sum(r.stats.sim_seconds for r in results)
    table = Table(title=f"dscore sim --protocol {args.protocol}")
    for column in (
        "seeds",
        "passed",
        "failed",
        "ops",
        "ops checked",
        "simulated s",
        "wall s",
        "simulated s / wall s",
    ):
        table.add_column(column, justify="right")
    table.add_row(
        str(len(results)),
        str(len(results) - len(failed)),
        str(len(failed)),
        str(sum(r.stats.ops_invoked for r in results)),
        str(sum(r.stats.ops_checked for r in results)),
        f"{sim_s:.1f}",
        f"{wall_s:.2f}",
        f"{sim_s / wall_s:.1f}" if wall_s else "-",
    )
    console.print(table)
    if failed:
        console.print(f"failed seeds: {' '.join(str(r.seed) for r in failed)}", markup=False)
        for result in failed:
            console.print(result.failure, markup=False)
        console.print(f"replay one with: {replay_command(args, failed[0].seed)}", markup=False)
        return 1
    return 0
