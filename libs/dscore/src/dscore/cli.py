"""The `dscore` command line: `dscore demo | check | sim | bench ...`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

Runner = Callable[[argparse.Namespace], int]


def _add_bench_sim_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sim", help="simulated seconds per wall-clock second, against a no-op protocol baseline"
    )
    parser.add_argument("--protocol", default="sequencer")
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--duration-ticks", type=int, default=2_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    return parser


def _run_bench_sim(args: argparse.Namespace) -> int:
    from dscore.sim.bench import run_sim_bench

    report = run_sim_bench(
        args.protocol,
        nodes=args.nodes,
        duration_ticks=args.duration_ticks,
        seeds=args.seeds,
        first_seed=args.first_seed,
    )
    print(report.format())
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    """`dscore demo`: embedded by default, or on Kafka, Redis and node processes (`--stack processes`)."""
    if getattr(args, "stack", "embedded") == "processes":
        from dscore.demo_stack import run_stack_demo

        return run_stack_demo(args)
    from dscore.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    from dscore.bench.codec import add_bench_codec_parser, run_bench_codec
    from dscore.check.cli import add_bench_check_parser, add_check_parser, run_bench_check, run_check
    from dscore.demo import add_demo_parser
    from dscore.runtime.bench import add_bench_raft_parser, run_bench_raft
    from dscore.sim.cli import add_sim_parser, run_sim
    from dscore.sim.compare import add_compare_parser, run_compare

    parser = argparse.ArgumentParser(prog="dscore", description="Run, break and measure consensus.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_demo_parser(commands).set_defaults(func=_run_demo)
    add_check_parser(commands).set_defaults(func=run_check)
    add_sim_parser(commands).set_defaults(func=run_sim)
    add_compare_parser(commands).set_defaults(func=run_compare)

    bench = commands.add_parser("bench", help="benchmarks; each prints ratios against a same-run baseline")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    add_bench_codec_parser(benches).set_defaults(func=run_bench_codec)
    add_bench_check_parser(benches).set_defaults(func=run_bench_check)
    add_bench_raft_parser(benches).set_defaults(func=run_bench_raft)
    _add_bench_sim_parser(benches).set_defaults(func=_run_bench_sim)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    func: Runner = args.func
    return func(args)


if __name__ == "__main__":
    raise SystemExit(main())
