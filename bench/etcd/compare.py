"""dscore's process stack against etcd, measured in one run: committed writes over HTTP, CPU per write,
and failover after kill -9 of the leader, with the Kafka and Redis floors under dscore measured beside.

In one run, on this machine, with everything in a fresh temporary folder and on ports of its own:

- etcd: three members of Debian's etcd-server at etcd's defaults (100 ms heartbeat, 1 s election
  timeout), written through etcd's own HTTP/JSON gateway (`POST /v3/kv/put`), clients on the leader's
  endpoint and moving to the next member on a failure (etcd_cluster.py);
- dscore: three `dscore-node` processes on one Kafka broker and one Redis server per node, written
  through one `dscore-gateway` process (`PUT /v1/kv/{key}`) (dscore_side.py);
- baselines: a raw Kafka produce -> consume hop (confluent-kafka, configured as dscore's transport) and a
  Redis MULTI/EXEC round trip on a server with `appendfsync always` (baselines.py); and the single-client
  write path with no consensus in it: relay processes on the same broker and Redis servers, a leader
  fanning each write out to two followers that save and acknowledge, with the leanest I/O Python has
  (relay_floor.py). The last is the floor of the single-client target's path on this machine.

The same client code (httpload.py) drives both systems: N clients, each one kept-alive HTTP/1.1
connection writing 100-byte values back to back (closed loop), at each --clients level, --repeats times
alternating which system goes first; the tables show medians. While one system is loaded the other
is paused (SIGSTOP of all its processes, SIGCONT after; `--no-pause-idle` keeps it running): idle,
dscore's stack still takes ~0.25 cores (ticks, heartbeats, a JVM), which on two cores would handicap
etcd's runs. CPU µs per write is the CPU of every
process of that system's stack over the measured window (/proc/<pid>/stat): the etcd members; the
dscore nodes, gateway, broker and Redis servers. Failover is the time from the kill -9 of the leader (found
through each system's own API) to the completion of the first write sent after it, one client writing,
median of --failover-trials kills per system (the killed member is restarted and the cluster is healthy
again before the next). Targets (issue 8, same run): writes/s at 64 clients >= 1.0x etcd's; failover
median <= 0.5x etcd's; single-client write p50 <= 4 Kafka hops + 1 ms.

Run from the repository root (README.md in this folder has the fairness notes):

    nice .venv/bin/python bench/etcd/compare.py [--help]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from baselines import kafka_hop, redis_multi_exec
from etcd_cluster import EtcdCluster, etcd_version
from httpload import (
    CLOCK_TICKS_S,
    DSCORE_PUT,
    ETCD_PUT,
    LoadResult,
    closed_loop,
    cpu_ticks,
    first_write_after,
)
from relay_floor import relay_path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SYSTEMS = ("etcd", "dscore")
#: kill -9 trials per system at least (issue 8: a median of at least 5)
MIN_FAILOVER_TRIALS = 5


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("client counts must be positive integers")
    return values


def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("DSCORE_"):
        raise argparse.ArgumentTypeError(f"expected DSCORE_NAME=VALUE, got {text!r}")
    return name, value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--clients", type=_ints, default=(1, 16, 64), help="concurrent client levels")
    parser.add_argument("--duration-s", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="unmeasured seconds under load first")
    parser.add_argument("--repeats", type=int, default=3, help="runs per level and system (medians shown)")
    parser.add_argument("--failover-trials", type=int, default=7, help="kill -9 trials per system")
    parser.add_argument(
        "--failover-request-timeout-s",
        type=float,
        default=0.1,
        help="the failover client's bound on one attempt, then the next endpoint (both systems)",
    )
    parser.add_argument("--kafka-hops", type=int, default=2000, help="Kafka hops in the baseline")
    parser.add_argument(
        "--redis-rounds", type=int, default=2000, help="MULTI/EXEC round trips in the baseline"
    )
    parser.add_argument(
        "--relay-writes",
        type=int,
        default=2000,
        help="writes through the path without consensus (relay_floor.py) in the baseline; 0 skips it",
    )
    parser.add_argument(
        "--stack-warmup-s", type=float, default=10.0, help="unmeasured load on each system before the runs"
    )
    parser.add_argument("--idle-s", type=float, default=3.0, help="seconds each stack's idle CPU is measured")
    parser.add_argument(
        "--dscore-env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="DSCORE_NAME=VALUE",
        help="node setting over dscore.demo_stack.STACK_ENV (repeatable)",
    )
    parser.add_argument(
        "--no-pause-idle",
        dest="pause_idle",
        action="store_false",
        help="keep the other system running (idle) during each load run instead of pausing it",
    )
    parser.add_argument("--json", action="store_true", help="JSON lines: every measurement, then a summary")
    parser.add_argument("--keep-dir", action="store_true", help="keep the temporary folder (logs, data)")
    parser.add_argument("--allow-few-trials", action="store_true", help=argparse.SUPPRESS)  # the smoke test
    args = parser.parse_args(argv)
    if args.duration_s <= 0 or min(args.warmup_s, args.idle_s, args.stack_warmup_s) < 0 or args.repeats < 1:
        parser.error("--duration-s > 0, --repeats >= 1 and the other durations >= 0 required")
    if args.failover_trials < (1 if args.allow_few_trials else MIN_FAILOVER_TRIALS):
        parser.error(f"--failover-trials must be at least {MIN_FAILOVER_TRIALS} (a median of >= 5 kills)")
    return args


@contextlib.contextmanager
def paused(pids: Sequence[int]) -> Iterator[None]:
    """The processes `pids` stopped (SIGSTOP) for the block, continued (SIGCONT) after, whatever happens.
    All of one system's processes stop and resume together, so none of them sees the others go silent:
    on resume, dscore's nodes replay at most two missed ticks (`NodeConfig.max_catchup_ticks`) and etcd's
    tickers drop the missed ones; nobody times out on a peer (a librdkafka fetch in flight may time out and
    be sent again), and each run's `--warmup-s` comes first."""
    stopped: list[int] = []
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def median_of(records: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in records if r.get(key) is not None]
    return statistics.median(values) if values else None


def _num(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


class Bench:
    def __init__(self, args: argparse.Namespace, base_dir: Path) -> None:
        from dscore_side import DscoreStack

        self.args = args
        self.etcd = EtcdCluster(base_dir / "etcd")
        (base_dir / "etcd").mkdir(parents=True, exist_ok=True)
        self.dscore = DscoreStack(REPO, base_dir / "dscore", node_env=dict(args.dscore_env))
        self.records: list[dict[str, Any]] = []

    def emit(self, record: dict[str, Any], text: str) -> None:
        self.records.append(record)
        print(json.dumps(record) if self.args.json else text, flush=True)

    async def run(self) -> dict[str, Any]:
        await self.etcd.start()
        await self.dscore.start_servers()
        await self.dscore.start_nodes()
        await self.idle("start")
        await self.warm_up()
        await self.baselines()  # after the warm-up: the broker's JIT has compiled its hot paths
        await self.throughput()
        await self.idle("after load")
        await self.failovers()
        return self.summary()

    # -- phases -----------------------------------------------------------------------------------------

    async def idle(self, when: str) -> None:
        """Each stack's CPU with no load (ticks, heartbeats, the broker's and the gateway's timers); at
        the start (a just-started JVM is still compiling) and again after the load."""
        if not self.args.idle_s:
            return
        stacks = {"etcd": self.etcd.pids_by_role(), "dscore": self.dscore.pids_by_role()}
        before = {name: {role: cpu_ticks(p) for role, p in roles.items()} for name, roles in stacks.items()}
        await asyncio.sleep(self.args.idle_s)
        for name, roles in stacks.items():
            by_role = {
                role: (cpu_ticks(p) - before[name][role]) / CLOCK_TICKS_S / self.args.idle_s
                for role, p in roles.items()
            }
            cores = sum(by_role.values())
            self.emit(
                {"kind": "idle", "when": when, "system": name, "cores": cores, "cores_by_role": by_role},
                f"# idle ({when}): {name} stack uses {cores:.3f} cores with no load ("
                + ", ".join(f"{role} {c:.3f}" for role, c in by_role.items())
                + ")",
            )

    async def baselines(self) -> None:
        hop = await asyncio.to_thread(
            kafka_hop, self.dscore.bootstrap, [self.dscore.kafka_pid], self.args.kafka_hops
        )
        redis = await asyncio.to_thread(
            redis_multi_exec,
            self.dscore.baseline_redis_url,
            [self.dscore.baseline_redis_pid],
            self.args.redis_rounds,
        )
        records = [hop, redis]
        if self.args.relay_writes:
            records.append(await relay_path(self.dscore, "raw", self.args.relay_writes, warmup_s=2.0))
        for record in records:
            self.emit(
                {"kind": "baseline", **record},
                f"# baseline {record['baseline']}: p50 {record['p50_ms']:.2f} ms, p99 "
                f"{record['p99_ms']:.2f} ms, {record['cpu_us_per_op']:.0f} CPU µs/op "
                f"(server {record['server_cpu_us_per_op']:.0f})",
            )

    async def warm_up(self) -> None:
        """Both systems under the highest load for --stack-warmup-s, unmeasured: the broker's JVM compiles
        its hot paths, etcd's backend and both systems' caches warm up, before any measured run."""
        if not self.args.stack_warmup_s:
            return
        clients = max(self.args.clients)
        for system in SYSTEMS:
            result = await self._load(system, clients, 0.0, self.args.stack_warmup_s)
            print(
                f"# warm-up, {clients} clients, {system}: {result.ops_s:,.0f} writes/s (not counted)",
                file=sys.stderr if self.args.json else sys.stdout,
                flush=True,
            )

    async def _load(self, system: str, clients: int, warmup_s: float, duration_s: float) -> LoadResult:
        other = self.dscore.pids() if system == "etcd" else self.etcd.pids()
        with paused(other if self.args.pause_idle else []):
            return await self._closed_loop(system, clients, warmup_s, duration_s)

    async def _closed_loop(self, system: str, clients: int, warmup_s: float, duration_s: float) -> LoadResult:
        if system == "etcd":
            leader = await self.etcd.leader()
            return await closed_loop(
                ETCD_PUT, self.etcd.endpoints_leader_first(leader), clients,
                warmup_s=warmup_s, duration_s=duration_s,
                stack_pids=self.etcd.pids_by_role, other_pids=self.dscore.pids,
            )  # fmt: skip
        return await closed_loop(
            DSCORE_PUT, [self.dscore.endpoint], clients,
            warmup_s=warmup_s, duration_s=duration_s,
            stack_pids=self.dscore.pids_by_role, other_pids=self.etcd.pids,
        )  # fmt: skip

    async def throughput(self) -> None:
        args = self.args
        for repeat in range(args.repeats):
            for index, clients in enumerate(args.clients):
                order = SYSTEMS if (repeat + index) % 2 == 0 else SYSTEMS[::-1]
                for system in order:
                    stack = self.etcd if system == "etcd" else self.dscore
                    term_before = await stack.term()
                    if system == "dscore":
                        before = await self.dscore.latency_totals()
                    result = await self._load(system, clients, args.warmup_s, args.duration_s)
                    record = {"kind": "load", "repeat": repeat, **result.as_dict()}
                    # an election during the run (a term change) is reported: the machine is shared, and a
                    # stalled leader is replaced; such a run stays in the medians, flagged
                    record["term_changes"] = await stack.term() - term_before
                    if system == "dscore":
                        record["step_means_ms"] = _means_ms(before, await self.dscore.latency_totals())
                    self.emit(
                        record,
                        f"# run {repeat + 1}/{args.repeats}, {clients} clients, {system}: "
                        f"{result.ops_s:,.0f} writes/s, p50 {_num(result.p50_ms, '.2f')} ms, p99 "
                        f"{_num(result.p99_ms, '.2f')} ms, {_num(result.stack_cpu_us_per_op, '.0f')} CPU "
                        f"µs/op ({result.stack_cpu_cores:.2f} cores: "
                        + ", ".join(f"{role} {cores:.2f}" for role, cores in record["cores_by_role"].items())
                        + f"), failures {result.failures}, term changes {record['term_changes']}"
                        + (f" (last: {result.last_error})" if result.failures else "")
                        + "".join(
                            f"\n#   mean {name}: {ms:.2f} ms"
                            for name, ms in record.get("step_means_ms", {}).items()
                        ),
                    )

    async def failovers(self) -> None:
        args = self.args
        for trial in range(args.failover_trials):
            order = SYSTEMS if trial % 2 == 0 else SYSTEMS[::-1]
            for system in order:
                if system == "etcd":
                    member = await self.etcd.leader()
                    victim = member.name
                    seconds, failed = await first_write_after(
                        ETCD_PUT, self.etcd.endpoints_leader_first(member),
                        functools.partial(self.etcd.kill, member),
                        request_timeout_s=args.failover_request_timeout_s,
                    )  # fmt: skip
                    await self.etcd.restart(member)
                else:
                    node = await self.dscore.leader()
                    victim = node
                    seconds, failed = await first_write_after(
                        DSCORE_PUT, [self.dscore.endpoint],
                        functools.partial(self.dscore.kill, node),
                        request_timeout_s=args.failover_request_timeout_s,
                    )  # fmt: skip
                    await self.dscore.restart(node)
                self.emit(
                    {
                        "kind": "failover",
                        "system": system,
                        "trial": trial,
                        "killed": victim,
                        "seconds": seconds,
                        "failed_attempts": failed,
                    },
                    f"# failover {trial + 1}/{args.failover_trials}, {system}: killed leader {victim}, "
                    f"first write after {seconds * 1e3:.0f} ms ({failed} failed attempts)",
                )

    # -- report -----------------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        loads = [r for r in self.records if r["kind"] == "load"]
        rows = []
        for clients in self.args.clients:
            for system in SYSTEMS:
                runs = [r for r in loads if r["system"] == system and r["clients"] == clients]
                row: dict[str, Any] = {"system": system, "clients": clients, "runs": len(runs)}
                for key in ("ops_s", "p50_ms", "p99_ms", "stack_cpu_us_per_op", "stack_cpu_cores",
                            "client_cpu_us_per_op", "other_cpu_cores"):  # fmt: skip
                    row[key] = median_of(runs, key)
                row["failures"] = sum(r["failures"] for r in runs)
                row["term_changes"] = sum(r["term_changes"] for r in runs)
                row["ops"] = sum(r["ops"] for r in runs)
                rows.append(row)
        baselines = {r["baseline"]: r for r in self.records if r["kind"] == "baseline"}
        hop = next((r for name, r in baselines.items() if name.startswith("kafka")), None)
        relay = next((r for name, r in baselines.items() if name.startswith("write path")), None)
        failover = {
            system: [r["seconds"] for r in self.records if r["kind"] == "failover" and r["system"] == system]
            for system in SYSTEMS
        }
        failover_median = {s: statistics.median(v) if v else None for s, v in failover.items()}

        def at(system: str, clients: int, key: str) -> float | None:
            return next((r[key] for r in rows if r["system"] == system and r["clients"] == clients), None)

        top = max(self.args.clients)
        single = min(self.args.clients)
        throughput_ratio = _ratio(at("dscore", top, "ops_s"), at("etcd", top, "ops_s"))
        failover_ratio = _ratio(failover_median["dscore"], failover_median["etcd"])
        hop_p50 = hop["p50_ms"] if hop else None
        p50_bound = 4 * hop_p50 + 1.0 if hop_p50 is not None else None
        dscore_p50 = at("dscore", 1, "p50_ms")
        targets = [
            {
                "target": f"writes/s at {top} clients >= 1.0x etcd's",
                "value": throughput_ratio,
                "met": throughput_ratio is not None and throughput_ratio >= 1.0 and top == 64,
                "detail": f"dscore {_num(at('dscore', top, 'ops_s'), ',.0f')} / etcd "
                f"{_num(at('etcd', top, 'ops_s'), ',.0f')} writes/s = {_num(throughput_ratio, '.2f', 'x')}",
            },
            {
                "target": "failover median <= 0.5x etcd's",
                "value": failover_ratio,
                "met": failover_ratio is not None and failover_ratio <= 0.5,
                "detail": f"dscore {_num(_ms(failover_median['dscore']), '.0f')} ms / etcd "
                f"{_num(_ms(failover_median['etcd']), '.0f')} ms = {_num(failover_ratio, '.2f', 'x')}",
            },
            {
                "target": "single-client write p50 <= 4 Kafka hops + 1 ms",
                "value": _ratio(dscore_p50, p50_bound),
                "met": dscore_p50 is not None
                and p50_bound is not None
                and single == 1
                and dscore_p50 <= p50_bound,
                "detail": f"dscore p50 {_num(dscore_p50, '.2f')} ms vs 4 x {_num(hop_p50, '.2f')} + 1 = "
                f"{_num(p50_bound, '.2f')} ms"
                + (
                    f" (the path without consensus: {_num(relay['p50_ms'], '.2f')} ms)"
                    if relay is not None
                    else ""
                ),
            },
        ]
        return {
            "kind": "summary",
            "rows": rows,
            "baselines": list(baselines.values()),
            "failover_s": failover,
            "failover_median_s": failover_median,
            "targets": targets,
            "idle_cores": {
                f"{r['system']} ({r['when']})": r["cores"] for r in self.records if r["kind"] == "idle"
            },
        }


def _means_ms(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """The mean of each histogram over a run, in ms, for those observed in it."""
    means = {}
    for key, (total, count) in sorted(after.items()):
        total_before, count_before = before.get(key, (0.0, 0.0))
        if count > count_before:
            means[key] = (total - total_before) / (count - count_before) * 1e3
    return means


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def format_summary(summary: dict[str, Any], clients: Sequence[int]) -> str:
    lines = [
        "",
        "| system | clients | writes/s | p50 ms | p99 ms | stack CPU µs/op | stack cores | client CPU µs/op "
        "| other stack cores | failed | term changes | runs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary["rows"]:
        lines.append(
            f"| {row['system']} | {row['clients']} | {_num(row['ops_s'], ',.0f')} | "
            f"{_num(row['p50_ms'], '.2f')} | {_num(row['p99_ms'], '.2f')} | "
            f"{_num(row['stack_cpu_us_per_op'], ',.0f')} | {_num(row['stack_cpu_cores'], '.2f')} | "
            f"{_num(row['client_cpu_us_per_op'], '.0f')} | {_num(row['other_cpu_cores'], '.2f')} | "
            f"{row['failures']} | {row['term_changes']} | {row['runs']} |"
        )
    lines += ["", "| clients | dscore / etcd writes/s | CPU µs/op dscore / etcd | p50 dscore / etcd |",
              "| ---: | ---: | ---: | ---: |"]  # fmt: skip
    for n in clients:
        by = {r["system"]: r for r in summary["rows"] if r["clients"] == n}
        ratios = [
            _ratio(by["dscore"][key], by["etcd"][key]) for key in ("ops_s", "stack_cpu_us_per_op", "p50_ms")
        ]
        lines.append(f"| {n} | " + " | ".join(_num(r, ".2f", "x") for r in ratios) + " |")
    lines += [
        "",
        "| baseline | p50 ms | p99 ms | CPU µs/op (client + server) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for base in summary["baselines"]:
        lines.append(
            f"| {base['baseline']} | {_num(base['p50_ms'], '.2f')} | {_num(base['p99_ms'], '.2f')} | "
            f"{_num(base['cpu_us_per_op'], '.0f')} |"
        )
    lines += ["", "| failover (kill -9 leader -> first write) | trials | median ms | min ms | max ms |",
              "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for system, values in summary["failover_s"].items():
        lines.append(
            f"| {system} | {len(values)} | {_num(_ms(summary['failover_median_s'][system]), '.0f')} | "
            f"{_num(_ms(min(values)) if values else None, '.0f')} | "
            f"{_num(_ms(max(values)) if values else None, '.0f')} |"
        )
    lines += ["", "| target (same run) | result | |", "| --- | --- | --- |"]
    for target in summary["targets"]:
        lines.append(f"| {target['target']} | {'met' if target['met'] else 'NOT MET'} | {target['detail']} |")
    return "\n".join(lines)


def kafka_version() -> str:
    cache = REPO / ".cache" / "kafka"
    versions = sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []
    return versions[-1] if versions else "?"


def git_commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "?"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    base_dir = Path(tempfile.mkdtemp(prefix="dscore-etcd-bench-"))
    bench = Bench(args, base_dir)
    header = (
        f"# {started}; commit {git_commit()}; {os.cpu_count()} CPUs; load {load_before[0]:.2f} "
        f"{load_before[1]:.2f} {load_before[2]:.2f}; Python {platform.python_version()}; etcd "
        f"{etcd_version(bench.etcd.binary)}; nice {os.nice(0)}; clients {','.join(map(str, args.clients))}; "
        f"warm-up {args.warmup_s:g} s, {args.duration_s:g} s per run, {args.repeats} repeats; "
        f"{args.failover_trials} failover trials (attempt timeout {args.failover_request_timeout_s:g} s); "
        f"dscore env overrides {' '.join(f'{k}={v}' for k, v in args.dscore_env) or 'none'}; dir {base_dir}"
    )
    if not args.json:
        print(header, flush=True)

    async def go() -> dict[str, Any]:
        # SIGTERM (a timeout, a supervisor) cancels the run, so the finally below stops every process
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await bench.run()
        finally:
            await bench.etcd.stop()
            await bench.dscore.stop()

    try:
        summary = asyncio.run(go())
    finally:
        if not args.keep_dir:
            shutil.rmtree(base_dir, ignore_errors=True)
    load_after = os.getloadavg()
    summary["kafka"] = kafka_version()
    summary["load_before"], summary["load_after"] = load_before, load_after
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_summary(summary, args.clients))
        print(f"\n# load after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; Kafka "
              f"{summary['kafka']}; medians of {args.repeats} runs")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
