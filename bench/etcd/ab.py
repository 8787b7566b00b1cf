"""A/B of dscore's process stack against itself: configurations alternated, one fresh stack per run.

    nice .venv/bin/python bench/etcd/ab.py --config base= \\
        --config inflight8=DSCORE_RAFT__MAX_INFLIGHT_MSGS=8 --clients 64 --repeats 3

Each `--config NAME=SETTINGS` is a comma-separated list of `KEY=VALUE`: `DSCORE_*` settings go to the
nodes, `gateway:DSCORE_*` to the gateway, and `scripts=PATH` takes `kafka.sh` / `redis.sh` from PATH's
`scripts/` (a copy of the repository's with a broker or Redis setting changed; its `.cache` may be a link
to this repository's). Runs go config by config within a repeat, in reverse order every other repeat,
repeat after repeat, so drift on a shared machine spreads over all of them; the summary shows each
config's median writes/s and CPU per write, the figures to compare.

Each run starts its own broker, Redis servers, nodes and gateway (`dscore_side.DscoreStack`), loads it
for `--warmup-s` unmeasured seconds (a fresh broker's JIT compiles for tens of seconds: measure warm),
then measures `--duration-s` per client level with the same closed loop as `compare.py`. Beside
writes/s, p50/p99 and the stack's CPU per write by role, it prints the records each node moved per
second (`dscore_transport_records_*`) and the mean of every `*_seconds` histogram over the window (where
a write's time goes); with `--threads`, each node's and the gateway's CPU by thread (/proc), over the
whole measured call, warm-up included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dscore_side import DscoreStack, node_environment, scrape
from httpload import CLOCK_TICKS_S, DSCORE_PUT, Endpoint, closed_loop

REPO = Path(__file__).resolve().parents[2]


def parse_config(text: str) -> tuple[str, dict[str, str], dict[str, str], Path]:
    name, _, rest = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"--config {text!r}: NAME=SETTINGS")
    nodes: dict[str, str] = {}
    gateway: dict[str, str] = {}
    scripts = REPO
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--config {name}: {item!r} is not KEY=VALUE")
        if key == "scripts":
            scripts = Path(value)
        elif key.startswith("gateway:"):
            gateway[key.removeprefix("gateway:")] = value
        else:
            nodes[key] = value
    return name, nodes, gateway, scripts


def thread_ticks(pid: int) -> dict[tuple[str, str], int]:
    """CPU clock ticks (user + system) of each thread of `pid`, by (tid, name)."""
    out: dict[tuple[str, str], int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for tid in tids:
        try:
            raw = Path(f"/proc/{pid}/task/{tid}/stat").read_bytes()
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except FileNotFoundError:
            continue
        fields = raw[raw.rindex(b")") + 2 :].split()
        out[(tid, name)] = int(fields[11]) + int(fields[12])
    return out


async def node_records(stack: DscoreStack) -> dict[str, float]:
    """Each node's `dscore_transport_records_*_total` counters."""
    assert stack.cluster is not None
    out: dict[str, float] = {}
    for node_id, node in stack.cluster.nodes.items():
        if node.http_port is None:
            continue
        for line in (await scrape(Endpoint("127.0.0.1", node.http_port))).splitlines():
            if line.startswith("dscore_transport_records_") and "_total" in line:
                name, _, value = line.rpartition(" ")
                kind = name.split("{", 1)[0].removeprefix("dscore_transport_records_").removesuffix("_total")
                out[f"{node_id}:{kind}"] = out.get(f"{node_id}:{kind}", 0.0) + float(value)
    return out


async def one_run(
    name: str, nodes: Mapping[str, str], gateway: Mapping[str, str], scripts: Path, args: argparse.Namespace
) -> list[dict[str, Any]]:
    base = Path(tempfile.mkdtemp(prefix="dscore-ab-"))
    stack = DscoreStack(scripts, base, node_env=dict(nodes), gateway_env=dict(gateway))
    results: list[dict[str, Any]] = []
    try:
        await stack.start_servers()
        await stack.start_nodes()
        roles = stack.pids_by_role
        await closed_loop(
            DSCORE_PUT,
            [stack.endpoint],
            max(args.clients),
            warmup_s=args.warmup_s,
            duration_s=1.0,
            stack_pids=roles,
        )
        for clients in args.clients:
            watched = [*roles()["nodes"], *roles()["gateway"]]
            threads_before = {pid: thread_ticks(pid) for pid in watched} if args.threads else {}
            latency_before, records_before = await stack.latency_totals(), await node_records(stack)
            result = await closed_loop(
                DSCORE_PUT,
                [stack.endpoint],
                clients,
                warmup_s=1.0,
                duration_s=args.duration_s,
                stack_pids=roles,
            )
            latency_after, records_after = await stack.latency_totals(), await node_records(stack)
            cores = {k: round(v, 2) for k, v in result.extra.get("cores_by_role", {}).items()}
            print(
                f"[{name}] {clients} clients: {result.ops_s:,.0f} writes/s, p50 {result.p50_ms or 0:.2f} ms, "
                f"p99 {result.p99_ms or 0:.2f} ms, {result.stack_cpu_us_per_op or 0:,.0f} CPU µs/op, "
                f"{result.stack_cpu_cores:.2f} cores {cores}, failures {result.failures}",
                flush=True,
            )
            rates = {
                k: round((v - records_before.get(k, 0.0)) / args.duration_s)
                for k, v in sorted(records_after.items())
            }
            print(f"    records/s {rates}; leader {await stack.leader()}", flush=True)
            for key in sorted(latency_after):
                total = latency_after[key][0] - latency_before.get(key, (0.0, 0.0))[0]
                count = latency_after[key][1] - latency_before.get(key, (0.0, 0.0))[1]
                if count:
                    print(f"    mean {key}: {total / count * 1e3:.2f} ms x {count:.0f}", flush=True)
            if args.threads:
                window_s = 1.0 + args.duration_s
                for pid in watched:
                    after = thread_ticks(pid)
                    busy = sorted(
                        ((after[k] - threads_before[pid].get(k, 0)) / CLOCK_TICKS_S / window_s, k[1])
                        for k in after
                    )[::-1]
                    print(
                        f"    pid {pid}: " + ", ".join(f"{n} {c:.3f}" for c, n in busy if c >= 0.005),
                        flush=True,
                    )
            results.append(
                {
                    "config": name,
                    "clients": clients,
                    "ops_s": result.ops_s,
                    "cpu_us_per_op": result.stack_cpu_us_per_op,
                }
            )
    finally:
        await stack.stop()
    return results


def check_configs_differ(
    configs: Sequence[tuple[str, dict[str, str], dict[str, str], Path]], allow_same: bool
) -> None:
    """Print what each config's nodes run with (`STACK_ENV` under the overrides), and refuse two configs
    that run the same: an override that `STACK_ENV` already sets measures nothing (an "A/B" of
    DSCORE_RAFT__HEARTBEAT_TICKS=3 against base was an A/A run, and still showed 1.11x)."""
    seen: dict[tuple[Any, ...], str] = {}
    for name, nodes, gateway, scripts in configs:
        effective = node_environment(nodes)
        print(f"# config {name}: nodes {effective}, gateway {gateway}, scripts {scripts}", flush=True)
        key = (tuple(sorted(effective.items())), tuple(sorted(gateway.items())), str(scripts))
        if key in seen and not allow_same:
            raise SystemExit(
                f"configs {seen[key]} and {name} run the same stack: nothing to compare "
                "(--allow-same for an A/A run, which shows the noise)"
            )
        seen[key] = name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--config",
        action="append",
        type=parse_config,
        required=True,
        help="NAME=KEY=VALUE,... (repeatable; 'base=' for the defaults)",
    )
    parser.add_argument(
        "--clients",
        type=lambda s: [int(c) for c in s.split(",")],
        default=[64],
        help="client levels, comma-separated",
    )
    parser.add_argument("--duration-s", type=float, default=8.0, help="measured seconds per level")
    parser.add_argument("--warmup-s", type=float, default=20.0, help="unmeasured load on each fresh stack")
    parser.add_argument("--repeats", type=int, default=3, help="runs per config")
    parser.add_argument("--threads", action="store_true", help="CPU by thread of the nodes and gateway")
    parser.add_argument(
        "--allow-same", action="store_true", help="run configs that start the same stack (an A/A run)"
    )
    args = parser.parse_args(argv)
    check_configs_differ(args.config, args.allow_same)
    results: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        # odd repeats run the configs in reverse: with one order throughout, a drift of the shared machine
        # over a repeat (~3 min per config) favoured the first config every time (BENCHMARKS.md, the
        # gather's A/B at one client)
        order = args.config if repeat % 2 == 0 else args.config[::-1]
        for name, nodes, gateway, scripts in order:
            print(f"# repeat {repeat + 1}/{args.repeats}, {name}", flush=True)
            results += asyncio.run(one_run(name, nodes, gateway, scripts, args))
    print("\n| config | clients | median writes/s | median CPU µs/op | runs (writes/s) |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, *_ in args.config:
        for clients in args.clients:
            mine = [r for r in results if r["config"] == name and r["clients"] == clients]
            rates = [r["ops_s"] for r in mine]
            cpus = [r["cpu_us_per_op"] for r in mine if r["cpu_us_per_op"] is not None]
            print(
                f"| {name} | {clients} | {statistics.median(rates):,.0f} | "
                f"{statistics.median(cpus) if cpus else 0:,.0f} | {', '.join(f'{r:,.0f}' for r in rates)} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
