"""Committed ops/s of dscore's 3-node Raft against PySyncObj 0.3.17's, measured in the same run.

The project's Raft issue anchors throughput on PySyncObj (three processes on loopback, no fsync,
about 36k committed ops/s with 5,000 in flight). This script measures that anchor on this machine
next to dscore, so BENCHMARKS.md can quote dscore as a ratio rather than a number measured elsewhere:

- PySyncObj: run_pysyncobj.py, three node processes on 127.0.0.1, PySyncObj's default `SyncObjConf`
  (in-memory journal, no fsync), the leader's process keeping N commands in flight by callback;
- dscore: run_dscore.py, `dscore.runtime.bench.cluster_throughput` (what `dscore bench raft` reports
  as "3-node Raft committed"): three replicas in one process on the memory transport, `tune_gc()`.

Each in-flight level runs both for the same warm-up and duration, --repeats times, alternating which
goes first; the table shows the medians, dscore / PySyncObj, and CPU µs per committed op (all three
PySyncObj processes; the one dscore process). PySyncObj 0.3.17 lives in a private venv,
bench/pysyncobj/.venv, made with this interpreter's base Python and pip on the first run.

Run from the repository root: .venv/bin/python bench/pysyncobj/compare.py [--help]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENV = HERE / ".venv"
PYSYNCOBJ_VERSION = "0.3.17"
SYSTEMS = ("pysyncobj", "dscore")
DEFAULT_LEVELS = (1000, 5000)


def installed_pysyncobj(python: Path) -> str | None:
    probe = "import importlib.metadata as m; print(m.version('pysyncobj'))"
    completed = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    return completed.stdout.strip() if completed.returncode == 0 else None


def ensure_venv() -> Path:
    """bench/pysyncobj/.venv with pysyncobj==0.3.17, on the same base Python as this interpreter."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
    if installed_pysyncobj(python) != PYSYNCOBJ_VERSION:
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             f"pysyncobj=={PYSYNCOBJ_VERSION}"],
            check=True,
            timeout=600,
        )  # fmt: skip
        if installed_pysyncobj(python) != PYSYNCOBJ_VERSION:
            raise RuntimeError(f"could not install pysyncobj=={PYSYNCOBJ_VERSION} into {VENV}")
    return python


def _kill_group(process: subprocess.Popen[str]) -> None:
    """SIGTERM the run's process group (run_pysyncobj.py then kills its nodes), then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(5.0)
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def run_json(command: list[str], timeout_s: float) -> dict[str, Any]:
    """Run one measurement in its own process group, with a hard timeout; its last JSON line."""
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise RuntimeError(f"{' '.join(command)} timed out after {timeout_s:g} s") from None
    finally:
        if process.poll() is None:  # interrupted: leave nothing behind
            _kill_group(process)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}: {stderr.strip()[-2000:]}")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(command)} printed no result: {stdout.strip()[-2000:]}")
    record: dict[str, Any] = json.loads(lines[-1])
    return record


def measure(system: str, level: int, args: argparse.Namespace, venv_python: Path) -> dict[str, Any]:
    common = [
        "--in-flight",
        str(level),
        "--duration-s",
        str(args.duration_s),
        "--warmup-s",
        str(args.warmup_s),
    ]
    timeout_s = args.timeout_s or 120.0 + args.warmup_s + args.duration_s
    if system == "pysyncobj":
        command = [str(venv_python), str(HERE / "run_pysyncobj.py"), *common, "--timeout-s", str(timeout_s)]
        if args.pysyncobj_cpus:
            command += ["--cpus", args.pysyncobj_cpus]
        command += [f"--conf={setting}" for setting in args.pysyncobj_conf]
        return run_json(command, timeout_s + 30.0)  # run_pysyncobj.py enforces timeout_s itself
    return run_json([sys.executable, str(HERE / "run_dscore.py"), *common], timeout_s)


def median_of(runs: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [float(run[key]) for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


def _anomalous(run: dict[str, Any]) -> bool:
    """A PySyncObj run with failed commands, or whose leader changed or was not the driver."""
    return bool(run["errors"]) or bool(run["leader_changed"]) or not run["driver_is_leader"]


def summarize(level: int, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"summary": True, "in_flight": level}
    for system in SYSTEMS:
        for key in ("ops_s", "cpu_us_per_op", "p50_ms", "p99_ms"):
            summary[f"{system}_{key}"] = median_of(runs[system], key)
        summary[f"{system}_runs"] = len(runs[system])
    pysyncobj_rate, dscore_rate = summary["pysyncobj_ops_s"], summary["dscore_ops_s"]
    summary["ratio"] = dscore_rate / pysyncobj_rate if pysyncobj_rate and dscore_rate is not None else None
    pysyncobj_cpu, dscore_cpu = summary["pysyncobj_cpu_us_per_op"], summary["dscore_cpu_us_per_op"]
    summary["cpu_ratio"] = dscore_cpu / pysyncobj_cpu if pysyncobj_cpu and dscore_cpu is not None else None
    summary["pysyncobj_anomalies"] = sum(1 for run in runs["pysyncobj"] if _anomalous(run))
    return summary


COLUMNS = (
    # (title, width)
    ("in flight", 9),
    ("PySyncObj ops/s", 15),
    ("dscore ops/s", 12),
    ("dscore/PySyncObj", 16),
    ("PySyncObj CPU µs/op", 19),
    ("dscore CPU µs/op", 16),
    ("CPU dscore/PySyncObj", 20),
    ("PySyncObj p50/p99 ms", 20),
    ("dscore p50/p99 ms", 17),
    ("runs", 5),
)


def render(cells: Sequence[str]) -> str:
    return "  ".join(cell.rjust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=True))


def _number(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def format_summary(summary: dict[str, Any]) -> str:
    def latency(system: str) -> str:
        return f"{_number(summary[f'{system}_p50_ms'], '.0f')}/{_number(summary[f'{system}_p99_ms'], '.0f')}"

    runs = f"{summary['pysyncobj_runs']}+{summary['dscore_runs']}"
    return render(
        [
            str(summary["in_flight"]),
            _number(summary["pysyncobj_ops_s"], ",.0f"),
            _number(summary["dscore_ops_s"], ",.0f"),
            _number(summary["ratio"], ".2f", "x"),
            _number(summary["pysyncobj_cpu_us_per_op"], ".1f"),
            _number(summary["dscore_cpu_us_per_op"], ".1f"),
            _number(summary["cpu_ratio"], ".2f", "x"),
            latency("pysyncobj"),
            latency("dscore"),
            runs,
        ]
    )


def format_run(record: dict[str, Any], repeat: int, repeats: int) -> str:
    notes = ""
    if record["system"] == "pysyncobj" and _anomalous(record):
        notes = f" ANOMALY: errors {record['errors']}, leader changed {record['leader_changed']}"
    return (
        f"# run {repeat + 1}/{repeats}, {record['in_flight']} in flight, {record['system']}: "
        f"{record['ops_s']:,.0f} ops/s, {_number(record['cpu_us_per_op'], '.1f')} CPU µs/op, "
        f"p50 {record['p50_ms']:.1f} ms, p99 {record['p99_ms']:.1f} ms{notes}"
    )


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("in-flight levels must be positive integers")
    return levels


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--levels", type=_levels, default=DEFAULT_LEVELS, help="in-flight levels, e.g. 1,5000"
    )
    parser.add_argument("--duration-s", type=float, default=10.0, help="measurement seconds per run")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="unmeasured seconds under load per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per level and system (medians shown)")
    parser.add_argument(
        "--timeout-s", type=float, default=None, help="hard limit per run (default 120 + warm-up + duration)"
    )
    parser.add_argument(
        "--pysyncobj-cpus", default=None, help="pin the PySyncObj nodes to these CPUs (e.g. 0: one core)"
    )
    parser.add_argument(
        "--pysyncobj-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="SyncObjConf override passed to run_pysyncobj.py --conf (repeatable; default: none)",
    )
    parser.add_argument("--json", action="store_true", help="JSON lines: every run, then a summary per level")
    args = parser.parse_args(argv)
    if args.duration_s <= 0 or args.warmup_s < 0 or args.repeats < 1:
        parser.error("--duration-s > 0, --warmup-s >= 0 and --repeats >= 1 required")
    if args.timeout_s is not None and args.timeout_s <= args.warmup_s + args.duration_s:
        parser.error("--timeout-s must exceed --warmup-s + --duration-s")

    venv_python = ensure_venv()
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"# {started}; {os.cpu_count()} CPUs; load {load_before[0]:.2f} {load_before[1]:.2f} "
        f"{load_before[2]:.2f}; Python {platform.python_version()}; PySyncObj {PYSYNCOBJ_VERSION}; "
        f"warm-up {args.warmup_s:g} s, {args.duration_s:g} s per run, {args.repeats} repeats; "
        f"PySyncObj CPUs {args.pysyncobj_cpus or 'all'}; SyncObjConf overrides "
        f"{' '.join(args.pysyncobj_conf) or 'none'}"
    )
    if not args.json:
        print(header, flush=True)
    runs: dict[int, dict[str, list[dict[str, Any]]]] = {
        level: {system: [] for system in SYSTEMS} for level in args.levels
    }
    failures = 0
    for repeat in range(args.repeats):
        for index, level in enumerate(args.levels):
            order = SYSTEMS if (repeat + index) % 2 == 0 else SYSTEMS[::-1]  # alternate who goes first
            for system in order:
                try:
                    record = measure(system, level, args, venv_python)
                except (RuntimeError, subprocess.CalledProcessError) as error:
                    failures += 1
                    print(f"# run {repeat + 1}, {level} in flight, {system} FAILED: {error}", file=sys.stderr)
                    continue
                record["repeat"] = repeat
                runs[level][system].append(record)
                line = json.dumps(record) if args.json else format_run(record, repeat, args.repeats)
                print(line, flush=True)
    load_after = os.getloadavg()
    summaries = [summarize(level, runs[level]) for level in args.levels]
    if args.json:
        for summary in summaries:
            summary["load_before"], summary["load_after"] = load_before, load_after
            print(json.dumps(summary))
    else:
        print(render([title for title, _ in COLUMNS]))
        print(render(["-" * width for _, width in COLUMNS]))
        for summary in summaries:
            print(format_summary(summary))
        anomalies = sum(summary["pysyncobj_anomalies"] for summary in summaries)
        print(
            f"# medians of {args.repeats} runs; load after {load_after[0]:.2f} {load_after[1]:.2f} "
            f"{load_after[2]:.2f}; PySyncObj runs with errors or a leader change: {anomalies}; "
            f"failed runs: {failures}"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
