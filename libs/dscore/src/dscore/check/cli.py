"""Command-line pieces for `dscore check` and `dscore bench check` (wired in `dscore.cli`).

`dscore check FILE... [--model register|kv] [--timeout-s N] [--json]` checks each EDN
history and prints one verdict per file (with `--json`, one JSON object per line). `-` reads
standard input. The exit status is the worst over all files, in this order of severity:

    3  bad input (unreadable file, malformed EDN or operation, unpairable completion)
    1  not linearizable
    2  unknown (the time budget ran out)
    0  linearizable

so a definite violation outranks an undecided file, and unusable input outranks both
(a run that could not read every file proves nothing).

`dscore bench check [--sizes 1k,10k,100k] [--processes 5,10,50] [--models register,kv]
[--quick] [--seed N] [--timeout-s N] [--json]` runs `dscore.check.bench` and prints a
table; it exits 0 when every generated history checks linearizable, 2 if some check ran out
of time, 1 if any came out not linearizable (the generator only makes linearizable ones).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dscore.check.bench import (
    BENCH_MODELS,
    DEFAULT_PROCESSES,
    DEFAULT_SIZES,
    QUICK_PROCESSES,
    QUICK_SIZES,
    BenchRow,
    bench_cases,
    format_header,
    format_row,
    run_case,
)
from dscore.check.errors import HistoryError
from dscore.check.history import parse_edn_history, read_edn_history
from dscore.check.linearizability import check_history
from dscore.check.models import MODELS
from dscore.check.result import CheckResult, Verdict

EXIT_LINEARIZABLE = 0
EXIT_NOT_LINEARIZABLE = 1
EXIT_UNKNOWN = 2
EXIT_BAD_INPUT = 3
# Exit statuses from least to most severe; a run exits with the most severe one seen.
EXIT_SEVERITY = (EXIT_LINEARIZABLE, EXIT_UNKNOWN, EXIT_NOT_LINEARIZABLE, EXIT_BAD_INPUT)
_EXIT_FOR_VERDICT = {
    Verdict.LINEARIZABLE: EXIT_LINEARIZABLE,
    Verdict.NOT_LINEARIZABLE: EXIT_NOT_LINEARIZABLE,
    Verdict.UNKNOWN: EXIT_UNKNOWN,
}
DEFAULT_BENCH_TIMEOUT_S = 120.0


def worst_exit(statuses: list[int]) -> int:
    return max(statuses, key=EXIT_SEVERITY.index, default=EXIT_LINEARIZABLE)


def _positive_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be zero or more")
    return value


def add_check_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `check` to `subparsers` (from `ArgumentParser.add_subparsers`); returns its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check",
        help="check EDN histories for linearizability",
        description="Check Jepsen-style EDN histories (one op map per line) for linearizability. "
        "Exit status: 0 linearizable, 1 not linearizable, 2 unknown (time budget spent), "
        "3 bad input; with several files, the most severe (3 > 1 > 2 > 0).",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="history file, or - for standard input")
    parser.add_argument("--model", choices=sorted(MODELS), default="register", help="default: register")
    parser.add_argument(
        "--timeout-s", type=_positive_float, default=None, help="time budget per file, in seconds"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    return parser


def _check_file(path: str, model: str, timeout_s: float | None) -> CheckResult:
    if path == "-":
        return check_history(parse_edn_history(sys.stdin.read(), source="<stdin>"), model, timeout_s)
    # A Path, so that read_edn_history never mistakes the name for EDN text.
    return check_history(read_edn_history(Path(path)), model, timeout_s)


def run_check(args: argparse.Namespace) -> int:
    """Run `dscore check` for parsed `args`; returns the exit status."""
    statuses: list[int] = []
    for path in args.files:
        try:
            result = _check_file(path, args.model, args.timeout_s)
        except HistoryError as error:
            statuses.append(EXIT_BAD_INPUT)
            if args.json:
                print(
                    json.dumps(
                        {"file": path, "verdict": "BAD_INPUT", "error": error.message, "line": error.line}
                    )
                )
            else:
                print(f"{path}: BAD INPUT: {error}")
            continue
        statuses.append(_EXIT_FOR_VERDICT[result.verdict])
        if args.json:
            print(json.dumps({"file": path, **result.to_dict()}))
            continue
        skipped = f", {result.ops_skipped} skipped: :f unknown to the model" if result.ops_skipped else ""
        print(f"{path}: {result.verdict.value} ({result.ops_checked} ops{skipped}, {result.elapsed_s:.3f} s)")
        if result.verdict is not Verdict.LINEARIZABLE:
            for line in result.explanation.splitlines():
                print(f"  {line}")
    return worst_exit(statuses)


def _sizes(text: str) -> tuple[int, ...]:
    sizes = []
    for part in text.split(","):
        part = part.strip().lower()
        multiplier = 1
        if part.endswith("k"):
            part, multiplier = part[:-1], 1_000
        elif part.endswith("m"):
            part, multiplier = part[:-1], 1_000_000
        try:
            size = int(float(part) * multiplier)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a size: {part!r}") from None
        if size <= 0:
            raise argparse.ArgumentTypeError("sizes must be positive")
        sizes.append(size)
    return tuple(sizes)


def _models(text: str) -> tuple[str, ...]:
    models = tuple(part.strip() for part in text.split(","))
    unknown = [model for model in models if model not in MODELS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown model(s): {', '.join(unknown)}")
    return models


def add_bench_check_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `check` to the `bench` command's `subparsers`; returns its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check",
        help="benchmark the linearizability checker",
        description="Check generated linearizable histories and time each check against the "
        "parse+pair baseline of the same history.",
    )
    parser.add_argument("--sizes", type=_sizes, default=None, help="operations per history, e.g. 1k,10k,100k")
    parser.add_argument("--processes", type=_sizes, default=None, help="client counts, e.g. 5,10,50")
    parser.add_argument("--models", type=_models, default=BENCH_MODELS, help="register,kv (default: both)")
    parser.add_argument(
        "--quick", action="store_true", help=f"sizes {QUICK_SIZES} and processes {QUICK_PROCESSES} only"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--timeout-s", type=_positive_float, default=DEFAULT_BENCH_TIMEOUT_S, help="time budget per check"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per case")
    return parser


def run_bench_check(args: argparse.Namespace) -> int:
    """Run `dscore bench check` for parsed `args`; returns the exit status."""
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    processes = args.processes or (QUICK_PROCESSES if args.quick else DEFAULT_PROCESSES)
    rows: list[BenchRow] = []
    if not args.json:
        print(format_header(), flush=True)
    for case in bench_cases(sizes, processes, args.models):
        row = run_case(case, seed=args.seed, timeout_s=args.timeout_s)
        rows.append(row)
        print(json.dumps(row.to_dict()) if args.json else format_row(row), flush=True)
    return worst_exit([_EXIT_FOR_VERDICT[row.verdict] for row in rows])
