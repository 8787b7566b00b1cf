"""`dscore bench raft`: Raft on the embedded runtime, one process, measured against baselines.

What it measures (all in one run, so the ratios compare like with like on the same machine):

- throughput and commit latency of a 3-node cluster (`--nodes`) with 1 and with 1000+ client operations
  in flight (`--in-flight 1,1000`): each in-flight slot is a registered client session writing back to
  back over the wire client protocol (its own inbox for replies, the replies matched by request id),
  driven by callbacks as PySyncObj's benchmark drives its cluster (`Writers`: no task and no future per
  operation; `--clients kvclient` drives one `KvClient` coroutine per slot instead, what an application
  would write); committed ops/s counts writes answered in the measurement window (after `--warmup-s`);
  latency is send -> answer (p50/p99, nearest rank);
- baselines at the same concurrency: a bare in-memory transport round trip (encode, deliver, decode,
  answer, decode: the codec and the event loop without any protocol) and a 1-node Raft cluster (Raft and
  the runtime without replication); the table shows the 3-node rate as a ratio of each;
- failover with the default tick and timeouts: kill the leader `--failovers` times (restarting it after
  each round), and time kill -> new leader elected and kill -> first write committed under it;
- stability: a fault-free run of `--stable-s` seconds under load, counting leader changes (must be 0;
  the exit status is 1 otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from rich.console import Console
from rich.table import Table

from dscore.core.client_messages import ClientResponse, Op, Outcome, ReadMode
from dscore.core.codec import decode_envelope, encode_envelope
from dscore.core.envelope import EnvelopeFactory
from dscore.core.errors import ConfigError
from dscore.protocols.contract import EntryKind, LogEntry
from dscore.runtime.client import ClientConfig, ClientEndpoint, ClientStats, KvClient, OpOutcome
from dscore.runtime.cluster import EmbeddedCluster, raft_factory
from dscore.runtime.gc_tuning import DEFAULT_GC_GEN0_THRESHOLD, tune_gc
from dscore.runtime.node import DEFAULT_TICK_INTERVAL_S, CoreFactory, RuntimeConfig
from dscore.transport.base import OutboundFrame
from dscore.transport.memory import MemoryNetwork

#: the failover target the defaults are chosen for
FAILOVER_TARGET_MS = 400.0
_BENCH_CLIENT = ClientConfig(op_timeout_s=60.0, attempt_timeout_s=30.0, retry_backoff_s=0.005)
_PROBE_CLIENT = ClientConfig(op_timeout_s=10.0, attempt_timeout_s=0.2, retry_backoff_s=0.002)


@dataclass(frozen=True, slots=True)
class Throughput:
    label: str
    in_flight: int
    ops: int
    seconds: float
    p50_ms: float
    p99_ms: float
    #: process CPU seconds spent in the window (on a shared machine, ops/s understates what a dedicated
    #: core does; ops per CPU second does not)
    cpu_s: float

    @property
    def cpu_us_per_op(self) -> float:
        return self.cpu_s / self.ops * 1e6 if self.ops else float("nan")

    @property
    def ops_s(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class FailoverRound:
    killed: str
    election_ms: float
    commit_ms: float


@dataclass(frozen=True, slots=True)
class Stability:
    seconds: float
    leader_changes: int
    ops: int


def _percentile(sorted_values: Sequence[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values)) - 1))]


class _Window:
    """The measurement window: [start, end) in loop time, with the process CPU time spent inside it."""

    def __init__(self, warmup_s: float, duration_s: float) -> None:
        loop = asyncio.get_running_loop()
        self.start = loop.time() + warmup_s
        self.end = self.start + duration_s
        self.cpu_s = 0.0
        self._task = asyncio.ensure_future(self._measure())

    async def _measure(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, self.start - loop.time()))
        cpu0 = time.process_time()
        await asyncio.sleep(max(0.0, self.end - loop.time()))
        self.cpu_s = time.process_time() - cpu0

    async def summarize(self, label: str, in_flight: int, latencies_s: list[float]) -> Throughput:
        await self._task
        ordered = sorted(latencies_s)
        p50, p99 = _percentile(ordered, 50) * 1000, _percentile(ordered, 99) * 1000
        return Throughput(label, in_flight, len(ordered), self.end - self.start, p50, p99, self.cpu_s)


class Writers:
    """`count` client sessions, each writing `put`s back to back, driven by callbacks on one client
    endpoint (see the module docstring). Every reply is handled by its outcome like any client would: a
    NOT_LEADER follows the hint, an unanswered or UNKNOWN write is sent again with the same seq (the
    session makes it take effect once), an expired session registers again."""

    def __init__(self, endpoint: ClientEndpoint, count: int, window: _Window, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.window = window
        self.timeout_s = timeout_s
        self.loop = asyncio.get_running_loop()
        self.nodes = tuple(endpoint.nodes())
        self.leader = self.nodes[0]
        self.client_ids = [0] * count
        self.seqs = [1] * count
        self.sent_at = [0.0] * count
        self.keys = [f"k{i % 64}" for i in range(count)]
        #: latencies of the writes answered OK inside the window
        self.latencies: list[float] = []

    def start(self) -> None:
        for session in range(len(self.client_ids)):
            self._register(session)

    def _register(self, session: int) -> None:
        self.endpoint.send(
            self.leader,
            Op.REGISTER,
            "",
            None,
            None,
            0,
            0,
            ReadMode.LINEARIZABLE,
            self.timeout_s,
            partial(self._registered, session),
        )

    def _registered(self, session: int, response: ClientResponse | None) -> None:
        if response is not None and response.outcome is Outcome.OK:
            self.client_ids[session] = response.client_id
            self.seqs[session] = 1
            self._write(session)
        else:
            self._follow(response)
            self._register(session)

    def _write(self, session: int) -> None:
        now = self.loop.time()
        if now >= self.window.end:
            return
        self.sent_at[session] = now
        self.endpoint.send(
            self.leader,
            Op.PUT,
            self.keys[session],
            "v",
            None,
            self.client_ids[session],
            self.seqs[session],
            ReadMode.LINEARIZABLE,
            self.timeout_s,
            partial(self._answered, session),
        )

    def _answered(self, session: int, response: ClientResponse | None) -> None:
        outcome = response.outcome if response is not None else None
        if outcome is Outcome.OK:
            done = self.loop.time()
            window = self.window
            if window.start <= done < window.end:
                self.latencies.append(done - self.sent_at[session])
            self.seqs[session] += 1
        elif outcome is Outcome.SESSION_EXPIRED:
            self._register(session)
            return
        elif outcome is Outcome.BAD_REQUEST or outcome is Outcome.CAS_MISMATCH:
            self.seqs[session] += 1
        else:  # not proposed, or unknown: the same seq again (applied at most once)
            self._follow(response)
        self._write(session)

    def _follow(self, response: ClientResponse | None) -> None:
        hint = response.leader_hint if response is not None else None
        if hint is not None and hint in self.nodes:
            self.leader = hint
        elif response is None or response.outcome is Outcome.NOT_LEADER:
            self.leader = self.nodes[(self.nodes.index(self.leader) + 1) % len(self.nodes)]


async def cluster_throughput(
    make_core: CoreFactory,
    *,
    nodes: int,
    in_flight: int,
    duration_s: float,
    warmup_s: float,
    config: RuntimeConfig,
    label: str,
    clients: str = "callbacks",
) -> Throughput:
    """Committed writes per second with `in_flight` client sessions writing back to back (`clients`:
    `callbacks`, the `Writers` load generator, or `kvclient`, one `KvClient` coroutine each)."""
    loop = asyncio.get_running_loop()
    async with EmbeddedCluster(make_core, nodes, config=config) as cluster:
        await cluster.wait_for_leader(10.0)
        endpoint = await cluster.client_endpoint("bench")
        window = _Window(warmup_s, duration_s)
        if clients == "kvclient":
            stats = ClientStats()
            kv_clients = [
                KvClient(endpoint, f"bench{i}", config=_BENCH_CLIENT, stats=stats) for i in range(in_flight)
            ]

            async def write_loop(client: KvClient, key: str) -> None:
                while loop.time() < window.end:
                    await client.put(key, "v")

            await asyncio.gather(*(write_loop(c, f"k{i % 64}") for i, c in enumerate(kv_clients)))
            latencies = [
                c.latency_s
                for c in stats.completions
                if c.outcome is OpOutcome.OK and window.start <= c.time_s < window.end
            ]
            return await window.summarize(label, in_flight, latencies)
        writers = Writers(endpoint, in_flight, window, _BENCH_CLIENT.attempt_timeout_s)
        writers.start()
        await asyncio.sleep(max(0.0, window.end - loop.time()))
        return await window.summarize(label, in_flight, writers.latencies)


async def transport_round_trip(in_flight: int, duration_s: float, warmup_s: float) -> Throughput:
    """The floor under any protocol: request and answer through the memory transport and the codec."""
    loop = asyncio.get_running_loop()
    network = MemoryNetwork(("server",), inbox_max_messages=max(10_000, 4 * in_flight))
    client, server = network.add_client("client"), network.endpoint("server")
    client_ids, server_ids = EnvelopeFactory("client", 1), EnvelopeFactory("server", 1)
    waiting: dict[int, asyncio.Future[None]] = {}

    async def serve() -> None:
        while True:
            batch = await server.receive(4096)
            replies = []
            for delivery in batch:
                request = decode_envelope(delivery.data)
                replies.append(
                    OutboundFrame("client", encode_envelope(server_ids.wrap("client", request.content)))
                )
            await server.send(replies)

    async def collect() -> None:
        while True:
            for delivery in await client.receive(4096):
                answer = decode_envelope(delivery.data).content
                assert isinstance(answer, LogEntry)
                future = waiting.pop(answer.index, None)
                if future is not None and not future.done():
                    future.set_result(None)

    latencies: list[float] = []
    window = _Window(warmup_s, duration_s)
    counter = iter(range(1, 1 << 62))

    async def request_loop() -> None:
        while (sent := loop.time()) < window.end:
            request_id = next(counter)
            future: asyncio.Future[None] = loop.create_future()
            waiting[request_id] = future
            entry = LogEntry(request_id, 1, EntryKind.NORMAL, b"v")
            await client.send([OutboundFrame("server", encode_envelope(client_ids.wrap("server", entry)))])
            await future
            done = loop.time()
            if window.start <= done < window.end:
                latencies.append(done - sent)

    tasks = [asyncio.ensure_future(serve()), asyncio.ensure_future(collect())]
    try:
        await asyncio.gather(*(request_loop() for _ in range(in_flight)))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return await window.summarize("transport round trip (no protocol)", in_flight, latencies)


async def failover_rounds(
    make_core: CoreFactory, nodes: int, rounds: int, config: RuntimeConfig, seed: int
) -> list[FailoverRound]:
    """Kill the leader `rounds` times under a light write load; restart it after each round."""
    loop = asyncio.get_running_loop()
    results: list[FailoverRound] = []
    async with EmbeddedCluster(make_core, nodes, config=config, seed=seed) as cluster:
        stats = ClientStats()
        endpoint = await cluster.client_endpoint("probes")
        probes = [KvClient(endpoint, f"probe{i}", config=_PROBE_CLIENT, stats=stats) for i in range(8)]
        stop = asyncio.Event()

        async def probe_loop(client: KvClient) -> None:
            while not stop.is_set():
                await client.put("probe", client.name)

        workers = [asyncio.ensure_future(probe_loop(p)) for p in probes]
        try:
            for _ in range(rounds):
                leader = await cluster.wait_for_leader(10.0)
                # Steady state first: a write committed by this leader after every node is back.
                mark = loop.time()
                await cluster.wait_for(partial(_committed_since, stats, mark, leader), 10.0)
                killed_at = loop.time()
                cluster.kill(leader)
                await cluster.wait_for_leader(10.0, exclude=(leader,))
                elected_at = loop.time()
                await cluster.wait_for(partial(_committed_since, stats, killed_at, exclude=leader), 10.0)
                committed_at = next(
                    c.time_s
                    for c in stats.completions
                    if c.time_s >= killed_at and c.outcome is OpOutcome.OK and c.node_id != leader
                )
                results.append(
                    FailoverRound(leader, (elected_at - killed_at) * 1000, (committed_at - killed_at) * 1000)
                )
                await cluster.restart(leader)
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)
    return results


def _committed_since(
    stats: ClientStats, since_s: float, leader: str | None = None, exclude: str | None = None
) -> bool:
    for completion in reversed(stats.completions):
        if completion.time_s < since_s:
            return False
        if (
            completion.outcome is OpOutcome.OK
            and completion.node_id != exclude
            and (leader is None or completion.node_id == leader)
        ):
            return True
    return False


async def stable_run(
    make_core: CoreFactory, *, nodes: int, seconds: float, in_flight: int, config: RuntimeConfig, seed: int
) -> Stability:
    """A fault-free run under load: how many times did leadership change after the first election?"""
    loop = asyncio.get_running_loop()
    async with EmbeddedCluster(make_core, nodes, config=config, seed=seed) as cluster:
        await cluster.wait_for_leader(10.0)
        elections_before = len(cluster.elections)
        stats = ClientStats()
        endpoint = await cluster.client_endpoint("stable")
        clients = [
            KvClient(endpoint, f"stable{i}", config=_BENCH_CLIENT, stats=stats) for i in range(in_flight)
        ]
        end = loop.time() + seconds

        async def write_loop(client: KvClient) -> None:
            while loop.time() < end:
                await client.put(client.name, "v")

        await asyncio.gather(*(write_loop(c) for c in clients))
        changes = len(cluster.elections) - elections_before
        ops = sum(1 for c in stats.completions if c.outcome is OpOutcome.OK)
    return Stability(seconds, changes, ops)


# -- CLI ------------------------------------------------------------------------------------------------


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("in-flight levels must be positive integers")
    return levels


def add_bench_raft_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `raft` to the `dscore bench` subcommand parser (an `argparse` `_SubParsersAction`)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "raft",
        help="Raft on the embedded runtime: throughput, latency, failover, stability",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--nodes", type=int, default=3, help="cluster size (default 3)")
    parser.add_argument("--in-flight", type=_levels, default=(1, 1000), help="levels, e.g. 1,1000,5000")
    parser.add_argument("--duration-s", type=float, default=5.0, help="measurement seconds per level")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="unmeasured seconds before each level")
    parser.add_argument("--failovers", type=int, default=5, help="leader kills (0 to skip)")
    parser.add_argument("--stable-s", type=float, default=60.0, help="fault-free seconds (0 to skip)")
    parser.add_argument("--stable-in-flight", type=int, default=100, help="load during the stable run")
    parser.add_argument("--tick-interval-s", type=float, default=DEFAULT_TICK_INTERVAL_S)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--gc-gen0-threshold",
        type=int,
        default=DEFAULT_GC_GEN0_THRESHOLD,
        help=f"young-generation GC threshold (default {DEFAULT_GC_GEN0_THRESHOLD}; 0 keeps CPython's 700)",
    )
    return parser


@dataclass(frozen=True, slots=True)
class BenchResults:
    throughput: tuple[Throughput, ...]
    baselines: dict[int, tuple[Throughput, ...]]
    failovers: tuple[FailoverRound, ...]
    stability: Stability | None


async def run_all(args: argparse.Namespace, console: Console) -> BenchResults:
    config = RuntimeConfig(tick_interval_s=args.tick_interval_s)
    make_core = raft_factory()
    throughput = []
    baselines: dict[int, tuple[Throughput, ...]] = {}
    for level in args.in_flight:
        console.print(f"throughput: {level} in flight ...")
        bare = await transport_round_trip(level, args.duration_s, args.warmup_s)
        common = {
            "in_flight": level,
            "duration_s": args.duration_s,
            "warmup_s": args.warmup_s,
            "config": config,
        }
        single = await cluster_throughput(make_core, nodes=1, label="1-node Raft (no replication)", **common)
        multi = await cluster_throughput(
            make_core, nodes=args.nodes, label=f"{args.nodes}-node Raft", **common
        )
        throughput.append(multi)
        baselines[level] = (bare, single)
    failovers: list[FailoverRound] = []
    if args.failovers:
        console.print(f"failover: killing the leader {args.failovers} times ...")
        failovers = await failover_rounds(make_core, args.nodes, args.failovers, config, args.seed)
    stability = None
    if args.stable_s > 0:
        console.print(
            f"stability: {args.stable_s:.0f} s fault-free with {args.stable_in_flight} in flight ..."
        )
        stability = await stable_run(
            make_core,
            nodes=args.nodes,
            seconds=args.stable_s,
            in_flight=args.stable_in_flight,
            config=config,
            seed=args.seed,
        )
    return BenchResults(tuple(throughput), baselines, tuple(failovers), stability)


def render(results: BenchResults, args: argparse.Namespace) -> Table:
    gc_text = f"gc gen0 {args.gc_gen0_threshold}" if args.gc_gen0_threshold else "CPython's default gc"
    table = Table(
        title=f"dscore bench raft (embedded, one process, tick {args.tick_interval_s * 1000:g} ms, {gc_text})"
    )
    columns = ("measurement", "in flight", "result", "p50 ms", "p99 ms", "CPU µs/op", "vs baseline")
    for column in columns:
        table.add_column(column, justify="left" if column == "measurement" else "right")
    for multi in results.throughput:
        bare, single = results.baselines[multi.in_flight]
        for row in (bare, single):
            table.add_row(
                f"[dim]{row.label}[/dim]", str(row.in_flight), f"{row.ops_s:,.0f} ops/s",
                f"{row.p50_ms:.2f}", f"{row.p99_ms:.2f}", f"{row.cpu_us_per_op:.1f}", "baseline",
            )  # fmt: skip
        ratios = " / ".join(f"{multi.ops_s / b.ops_s:.2f}x" if b.ops_s else "-" for b in (bare, single))
        table.add_row(
            f"[bold]{multi.label} committed[/bold]", str(multi.in_flight), f"{multi.ops_s:,.0f} ops/s",
            f"{multi.p50_ms:.2f}", f"{multi.p99_ms:.2f}", f"{multi.cpu_us_per_op:.1f}", ratios,
        )  # fmt: skip
    if results.failovers:
        elections = [r.election_ms for r in results.failovers]
        commits = [r.commit_ms for r in results.failovers]
        table.add_row(
            "failover: kill leader -> new leader", f"{len(elections)} kills",
            f"median {statistics.median(elections):.0f} ms", "", f"max {max(elections):.0f}", "", "",
        )  # fmt: skip
        median_commit = statistics.median(commits)
        verdict = "ok" if median_commit < FAILOVER_TARGET_MS else "OVER TARGET"
        table.add_row(
            "failover: kill leader -> first commit", f"{len(commits)} kills",
            f"median {median_commit:.0f} ms", "", f"max {max(commits):.0f}", "",
            f"target < {FAILOVER_TARGET_MS:.0f} ms: {verdict}",
        )  # fmt: skip
    if results.stability is not None:
        s = results.stability
        table.add_row(
            f"fault-free {s.seconds:.0f} s: leader changes", str(args.stable_in_flight),
            str(s.leader_changes), "", "", "", "must be 0" if s.leader_changes else "ok (0)",
        )  # fmt: skip
    return table


def run_bench_raft(args: argparse.Namespace) -> int:
    if args.gc_gen0_threshold < 0:
        print("dscore bench raft: --gc-gen0-threshold must be >= 0")
        return 2
    if args.nodes < 1 or args.failovers < 0 or args.duration_s <= 0 or args.tick_interval_s <= 0:
        print("dscore bench raft: --nodes >= 1, --failovers >= 0, positive durations and tick required")
        return 2
    if args.failovers and args.nodes < 3:
        print("dscore bench raft: failover needs at least 3 nodes (or --failovers 0)")
        return 2
    console = Console()
    if not console.is_terminal:  # pipes and CI logs: do not wrap the table at 80 columns
        console = Console(width=160)
    try:
        tune_gc(args.gc_gen0_threshold)
        results = asyncio.run(run_all(args, console))
    except ConfigError as error:
        print(f"dscore bench raft: {error}")
        return 2
    console.print(render(results, args))
    console.print(
        "vs baseline: 3-node ops/s as a ratio of the transport round trip / of the 1-node cluster "
        "(the seed's scalability, definition 1.6). CPU µs/op is process CPU time per committed op: "
        "1e6 / it is the rate one dedicated core sustains, whatever else the machine runs."
    )
    if results.stability is not None and results.stability.leader_changes:
        return 1
    return 0
