"""The single-client write path with no consensus in it: what Kafka and Redis alone cost on this machine.

    nice .venv/bin/python bench/etcd/relay_floor.py [--writes 3000] [--repeats 3] [--with-dscore]

Issue 8's single-client target is "p50 <= 4 Kafka hops + 1 ms", with the hop measured alone
(`baselines.kafka_hop`: one producer and one consumer, one record in flight, nothing else running). A
dscore write's path is not one hop after another on an idle machine, though: the leader sends to two
followers at once, both save to their own fsynced Redis at once, both acknowledge at once, and the
leader saves too while its appends travel. On two cores, that concurrent work is on the path.

This script runs that same path with none of dscore in it: on the broker and the Redis servers that
`compare.py` starts (`dscore_side.DscoreStack.start_servers`: one Redis per node, AOF with
`appendfsync always`), three relay processes and a client:

- the client produces a 100-byte record to the leader's inbox and waits for the answer on its own
  (one write in flight, back to back, like `compare.py`'s single client);
- the leader, on a client record, produces it to both followers' inboxes, then saves one entry to its
  own Redis (the appends travel while it saves, as dscore's leader does); on the first follower's
  acknowledgement of that record, once its own save is done, it produces the answer to the client;
  the second acknowledgement is read and dropped;
- each follower, on a record, saves one entry to its own Redis, then produces an acknowledgement.

Each relay is what a Python process at its leanest does with the transport's client: confluent-kafka
configured like `baselines.kafka_hop` (the transport's settings), a consumer thread handing records to
a uvloop event loop (as dscore's transport does), and a save that is `baselines.redis_multi_exec`'s
MULTI / HSET / ZADD / EXEC written by hand on an asyncio protocol (no client library). No codec, no
authentication, no protocol, no state machine, no HTTP: the client's latency here is a floor under
any implementation of the path in Python on this transport and storage, and a floor under a client
that talks HTTP to a gateway too (which adds a round trip on loopback).

In the same run, after the relays: the two isolated floors (`baselines`), on the warmed broker, with
the relays idle; and with `--with-dscore`, dscore's own single client through the gateway
(`httpload.closed_loop`, as `compare.py` runs it) on the same servers. It prints each, and the target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from baselines import RECORD_BYTES, hop_clients, kafka_hop, redis_multi_exec
from dscore_side import NODE_IDS, DscoreStack
from httpload import CLOCK_TICKS_S, DSCORE_PUT, closed_loop, cpu_ticks, percentile

from dscore.core.ids import NodeId
from dscore.protocols.contract import EntryKind, LogEntry
from dscore.storage.base import WriteBatch
from dscore.transport.base import OutboundFrame
from dscore.transport.kafka_config import KafkaTransportConfig
from dscore.transport.kafka_layout import KafkaLayout, ensure_topics

REPO = Path(__file__).resolve().parents[2]
#: how long a relay waits for its first record before it gives up (the client starts after them)
_START_S = 60.0


def _consume_in_thread(
    consumer: Any, loop: asyncio.AbstractEventLoop, handle: Callable[[bytes], None], stop: threading.Event
) -> threading.Thread:
    """dscore's transport's hand-off: a thread polls librdkafka and hands each record to the loop."""

    def run() -> None:
        while not stop.is_set():
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                loop.call_soon_threadsafe(handle, message.value())

    thread = threading.Thread(target=run, name="relay-consumer", daemon=True)
    thread.start()
    return thread


class _Save(asyncio.Protocol):
    """MULTI / HSET / ZADD / EXEC on one connection, one at a time; its six reply lines end it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.lines = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.lines += data.count(b"\r\n")
        if self.lines >= 6 and self.waiter is not None and not self.waiter.done():
            self.lines = 0
            self.waiter.set_result(None)

    async def save(self, index: int) -> None:
        assert self.transport is not None
        entry = b"e" * RECORD_BYTES + str(index).encode()
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(_command(b"MULTI"))
        self.transport.write(
            _command(b"HSET", b"relay:hard", b"term", b"7", b"vote", b"n1", b"commit", str(index).encode())
        )
        self.transport.write(_command(b"ZADD", b"relay:log", str(index).encode(), entry))
        self.transport.write(_command(b"EXEC"))
        await self.waiter


def _command(*parts: bytes) -> bytes:
    return b"".join([b"*%d\r\n" % len(parts), *(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)])


async def _connect_save(url: str) -> _Save:
    where = urlsplit(url)
    _, protocol = await asyncio.get_running_loop().create_connection(
        _Save, where.hostname or "127.0.0.1", where.port or 6379
    )
    return protocol


class _RawKafka:
    """The leanest Kafka I/O: confluent-kafka as `baselines.kafka_hop` sets it up, a consumer thread."""

    def __init__(self, bootstrap: str, topics: dict[str, str], me: str) -> None:
        self.topics = topics
        self.producer, self.consumer = hop_clients(bootstrap, topics[me])
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.position: tuple[str, int] = (f"{topics[me]}-0", -1)  # not tracked: the raw save ignores it

    async def start(self, handle: Callable[[bytes], None]) -> None:
        self.thread = _consume_in_thread(self.consumer, asyncio.get_running_loop(), handle, self.stop)

    async def send(self, to: str, value: bytes) -> None:
        self.producer.produce(self.topics[to], value, partition=0)
        self.producer.poll(0)

    async def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            await asyncio.to_thread(self.thread.join, 5)
        await asyncio.to_thread(self.producer.flush, 5)
        self.consumer.close()


class _DscoreKafka:
    """dscore's Kafka transport as a node uses it (`open_kafka_transport`: the default client and
    settings, inboxes named by the cluster's layout)."""

    def __init__(self, bootstrap: str, cluster_id: str, me: str) -> None:
        from dscore.transport.kafka import open_kafka_transport

        self.transport = open_kafka_transport(KafkaTransportConfig(bootstrap, cluster_id), NodeId(me))
        self.position: tuple[str, int] = ("", -1)
        self.reader: asyncio.Task[None] | None = None

    async def start(self, handle: Callable[[bytes], None]) -> None:
        await self.transport.start({})

        async def read() -> None:
            while True:
                for delivery in await self.transport.receive(64):
                    self.position = (delivery.channel, delivery.offset)
                    handle(delivery.data)

        self.reader = asyncio.get_running_loop().create_task(read())

    async def send(self, to: str, value: bytes) -> None:
        await self.transport.send([OutboundFrame(NodeId(to), value)])

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
        await self.transport.close()


class _RawStore:
    """The leanest save: `_Save` on a connection of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.saver: _Save | None = None

    async def start(self) -> None:
        self.saver = await _connect_save(self.url)

    async def save(self, index: int, position: tuple[str, int]) -> None:
        assert self.saver is not None
        await self.saver.save(index)

    async def close(self) -> None:
        if self.saver is not None and self.saver.transport is not None:
            self.saver.transport.close()


class _DscoreStore:
    """dscore's `RedisStorage.save` of what a follower saves for one append: the entry, the sender's
    dedup mark and the inbox position, in one EVALSHA."""

    def __init__(self, url: str, key_prefix: str) -> None:
        from dscore.storage.redis import RedisStorage

        self.storage = RedisStorage.from_url(url, key_prefix)

    async def start(self) -> None:
        await self.storage.load()
        await self.storage.bump_incarnation()

    async def save(self, index: int, position: tuple[str, int]) -> None:
        channel, offset = position
        await self.storage.save(
            WriteBatch(
                entries=(LogEntry(index + 1, 7, EntryKind.NORMAL, b"e" * RECORD_BYTES),),
                dedup_marks={NodeId(NODE_IDS[0]): (1, index + 1)},
                input_positions={channel: offset} if offset >= 0 else {},
            )
        )

    async def close(self) -> None:
        await self.storage.close()


#: `--io` modes: the Kafka side and the Redis side of each relay, raw or dscore's own
_IO_MODES = {
    "raw": ("raw", "raw"),
    "transport": ("dscore", "raw"),
    "storage": ("raw", "dscore"),
    "dscore": ("dscore", "dscore"),
}
_IO_NAMES = {
    "raw": "raw I/O",
    "transport": "dscore's transport, raw save",
    "storage": "raw Kafka, dscore's storage",
    "dscore": "dscore's transport and storage",
}


class _Link:
    def __init__(self, args: argparse.Namespace, me: str, redis_url: str | None) -> None:
        topics: dict[str, str] = json.loads(args.topics)
        kafka_side, redis_side = _IO_MODES[args.io]
        self.kafka: _RawKafka | _DscoreKafka = (
            _DscoreKafka(args.bootstrap, topics["cluster"], me)
            if kafka_side == "dscore"
            else _RawKafka(args.bootstrap, topics, me)
        )
        self.store: _RawStore | _DscoreStore | None = None
        if redis_url is not None:
            prefix = f"relay:{topics['cluster']}:{me}"
            self.store = _DscoreStore(redis_url, prefix) if redis_side == "dscore" else _RawStore(redis_url)

    async def start(self, handle: Callable[[bytes], None]) -> None:
        if self.store is not None:
            await self.store.start()
        await self.kafka.start(handle)

    async def send(self, to: str, value: bytes) -> None:
        await self.kafka.send(to, value)

    async def save(self, index: int) -> None:
        assert self.store is not None
        await self.store.save(index, self.kafka.position)

    async def close(self) -> None:
        await self.kafka.close()
        if self.store is not None:
            await self.store.close()


async def _relay(args: argparse.Namespace) -> None:
    """One relay process: `--role leader` or `--role follower` (started by the measuring process)."""
    loop = asyncio.get_running_loop()
    link = _Link(args, args.name, args.redis)
    done = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    leader, *followers = NODE_IDS

    def spawn(work: Any) -> None:
        task = loop.create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    if args.role == "follower":

        async def acknowledge(value: bytes) -> None:
            await link.save(int(value[:12]))
            await link.send(leader, value)

        def handle(value: bytes) -> None:
            if value == b"stop":
                done.set()
            else:
                spawn(acknowledge(value))

    else:
        saved: dict[bytes, asyncio.Future[None]] = {}

        async def append(value: bytes) -> None:
            # the appends leave first, the leader's own save runs while they travel
            for follower in followers:
                await link.send(follower, value[:12] + b"f" + value[13:])
            await link.save(int(value[:12]))

        async def answer(value: bytes) -> None:
            own = saved.pop(value[:12], None)
            if own is None:
                return  # the second follower's acknowledgement: read and dropped
            await own
            await link.send("client", value)

        async def stop() -> None:
            for follower in followers:
                await link.send(follower, b"stop")
            done.set()

        def handle(value: bytes) -> None:
            if value == b"stop":
                spawn(stop())
            elif value[12:13] == b"c":  # from the client
                saved[value[:12]] = loop.create_task(append(value))
            else:
                spawn(answer(value))

    await link.start(handle)
    await done.wait()
    await asyncio.sleep(0.2)  # the stop's sends on their way
    await link.close()


def _start_relays(stack: DscoreStack, topics: dict[str, str], io: str) -> list[subprocess.Popen[bytes]]:
    common = [sys.executable, str(Path(__file__).resolve()), "--bootstrap", stack.bootstrap]
    common += ["--io", io, "--topics", json.dumps(topics)]
    return [
        subprocess.Popen(
            [
                *common,
                "--role",
                "leader" if name == NODE_IDS[0] else "follower",
                "--name",
                name,
                "--redis",
                stack.redis_urls[name],
            ]
        )
        for name in NODE_IDS
    ]


def _layout_topics(run: str) -> dict[str, str]:
    """Each endpoint's inbox (`client` and the node ids), named by dscore's transport layout for cluster
    `relay<run>` (under `cluster`): the raw relays use the same topics."""
    layout = KafkaLayout(f"relay{run}")
    return {name: layout.inbox_topic(NodeId(name)) for name in (*NODE_IDS, "client")} | {
        "cluster": f"relay{run}"
    }


async def _client(
    args: argparse.Namespace, pids_by_role: dict[str, list[int]], warmup_s: float
) -> dict[str, Any]:
    """Back-to-back writes through the relays; p50 / p99 and CPU per write of everything on the path."""
    link = _Link(args, "client", None)
    answers: asyncio.Queue[bytes] = asyncio.Queue()
    await link.start(answers.put_nowait)
    padding = b"c" + b"x" * (RECORD_BYTES - 13)
    latencies: list[float] = []
    cpu_before = 0.0
    ticks_before: dict[str, int] = {}
    measured_from: int | None = None
    warm_at = time.monotonic() + warmup_s
    try:
        i = 0
        while measured_from is None or i < measured_from + args.writes:
            if measured_from is None and time.monotonic() >= warm_at:
                measured_from = i
                cpu_before = time.process_time()
                ticks_before = {role: cpu_ticks(pids) for role, pids in pids_by_role.items()}
            seq = b"%012d" % i
            sent = time.perf_counter()
            await link.send(NODE_IDS[0], seq + padding)
            timeout_s = _START_S if i == 0 else 5.0
            while (await asyncio.wait_for(answers.get(), timeout_s))[:12] != seq:
                pass  # an answer to an earlier write that timed out: not this one's
            if measured_from is not None:
                latencies.append(time.perf_counter() - sent)
            i += 1
        cpu_s = time.process_time() - cpu_before
        by_role = {
            role: (cpu_ticks(pids) - ticks_before[role]) / CLOCK_TICKS_S
            for role, pids in pids_by_role.items()
        }
        await link.send(NODE_IDS[0], b"stop")
    finally:
        await link.close()
    latencies.sort()
    return {
        "p50_ms": (percentile(latencies, 0.5) or 0) * 1e3,
        "p99_ms": (percentile(latencies, 0.99) or 0) * 1e3,
        "writes_s": len(latencies) / sum(latencies),
        "cpu_us_per_op": (cpu_s + sum(by_role.values())) / len(latencies) * 1e6,
        "cpu_by_role": {"client": cpu_s / len(latencies) * 1e6}
        | {role: seconds / len(latencies) * 1e6 for role, seconds in by_role.items()},
    }


async def _run_client(  # noqa: PLR0917
    bootstrap: str,
    topics: dict[str, str],
    io: str,
    writes: int,
    pids_by_role: dict[str, list[int]],
    warmup_s: float,
) -> dict[str, Any]:
    """`_client` in a process of its own on uvloop, as the gateway runs (this process's loop is asyncio's:
    `closed_loop` needs its clock)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).resolve()),
        "--role",
        "client",
        "--bootstrap",
        bootstrap,
        "--topics",
        json.dumps(topics),
        "--io",
        io,
        "--writes",
        str(writes),
        "--pids",
        json.dumps(pids_by_role),
        "--warmup-s",
        str(warmup_s),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the relay client failed (exit {process.returncode})")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def relay_path(stack: DscoreStack, io: str, writes: int, warmup_s: float) -> dict[str, Any]:
    """One run of the relays on `stack`'s broker and Redis servers (topics of their own, keys under
    `relay:`), shaped like a `baselines` record: p50 / p99 of the client's writes, CPU per write of every
    process on the path (client, relays, broker, Redis) and of the servers alone, and by role."""
    run = uuid.uuid4().hex[:10]
    topics = _layout_topics(run)
    # each endpoint's inbox up front, as dscore's transport creates it (the raw relays use the same topics)
    config = KafkaTransportConfig(stack.bootstrap, topics["cluster"])
    await ensure_topics(config, [NodeId(name) for name in (*NODE_IDS, "client")])
    relays = _start_relays(stack, topics, io)
    try:
        pids = {
            "leader": [relays[0].pid],
            "followers": [p.pid for p in relays[1:]],
            "kafka": [stack.kafka_pid],
            "redis": list(stack.redis_pids),
        }
        result = await _run_client(stack.bootstrap, topics, io, writes, pids, warmup_s)
    finally:
        for process in relays:
            try:
                await asyncio.to_thread(process.wait, 10)
            except subprocess.TimeoutExpired:
                process.kill()
    by_role = result["cpu_by_role"]
    return result | {
        "baseline": f"write path without consensus ({_IO_NAMES[io]}: 4 hops, 2 followers, 3 saves)",
        "ops": writes,
        "server_cpu_us_per_op": by_role["kafka"] + by_role["redis"],
    }


async def measure(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="dscore-relay-"))
    stack = DscoreStack(REPO, base)
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        await stack.start_servers()
        modes = [m for m in args.io.split(",") if m]
        for repeat in range(args.repeats):
            for io in modes if repeat % 2 == 0 else modes[::-1]:
                warmup_s = args.warmup_s if not rows else 2.0
                result = await relay_path(stack, io, args.writes, warmup_s)
                rows.append((f"relay path, {_IO_NAMES[io]}, run {repeat + 1}", result))
        if args.with_dscore:
            await stack.start_nodes()
            for repeat in range(args.repeats):
                load = await closed_loop(
                    DSCORE_PUT,
                    [stack.endpoint],
                    1,
                    warmup_s=2.0,
                    duration_s=args.dscore_s,
                    stack_pids=stack.pids_by_role,
                )
                rows.append(
                    (
                        f"dscore through the gateway, run {repeat + 1}",
                        {
                            "p50_ms": load.p50_ms or 0,
                            "p99_ms": load.p99_ms or 0,
                            "writes_s": load.ops_s,
                            "cpu_us_per_op": load.stack_cpu_us_per_op or 0,
                            "cpu_by_role": {
                                role: cores * 1e6 / load.ops_s
                                for role, cores in load.extra.get("cores_by_role", {}).items()
                            }
                            if load.ops_s
                            else {},
                        },
                    )
                )
        # the floors on the warmed broker, with the relays gone and the nodes (if any) idle, as path_trace.py
        hop = await asyncio.to_thread(kafka_hop, stack.bootstrap, [stack.kafka_pid], args.hops)
        save = await asyncio.to_thread(
            redis_multi_exec, stack.baseline_redis_url, [stack.baseline_redis_pid], args.hops
        )
    finally:
        await stack.stop()
    target = 4 * hop["p50_ms"] + 1.0
    print(
        f"floors, same run: Kafka hop p50 {hop['p50_ms']:.3f} ms, "
        f"Redis MULTI/EXEC p50 {save['p50_ms']:.3f} ms"
    )
    print(f"issue 8's single-client target: 4 x {hop['p50_ms']:.3f} + 1 = {target:.2f} ms\n")
    print("| path | p50 ms | p99 ms | writes/s | CPU µs/write, all processes | by role |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, row in rows:
        roles = ", ".join(f"{role} {us:,.0f}" for role, us in row.get("cpu_by_role", {}).items())
        print(
            f"| {name} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['writes_s']:,.0f} | "
            f"{row['cpu_us_per_op']:,.0f} | {roles} |"
        )
    print()
    for io in modes:
        p50s = [row["p50_ms"] for name, row in rows if name.startswith(f"relay path, {_IO_NAMES[io]},")]
        median = statistics.median(p50s)
        ratio = median / target
        print(f"relay path, {_IO_NAMES[io]}: p50 (median of runs) {median:.2f} ms = {ratio:.2f}x the target")
    dscore = [row["p50_ms"] for name, row in rows if name.startswith("dscore")]
    if dscore:
        median = statistics.median(dscore)
        print(f"dscore: p50 (median of runs) {median:.2f} ms = {median / target:.2f}x the target")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=3000, help="measured writes per relay run")
    parser.add_argument("--repeats", type=int, default=3, help="relay runs (and dscore runs)")
    parser.add_argument(
        "--warmup-s", type=float, default=20.0, help="unmeasured writes first (a fresh broker's JIT)"
    )
    parser.add_argument("--hops", type=int, default=2000, help="round trips in each isolated floor")
    parser.add_argument(
        "--with-dscore", action="store_true", help="also dscore's single client, same servers"
    )
    parser.add_argument("--dscore-s", type=float, default=10.0, help="measured seconds per dscore run")
    # a relay process (started by the measuring process)
    parser.add_argument(
        "--io",
        default="raw,dscore",
        help="relays' I/O: raw (the leanest), dscore (its transport and storage)",
    )
    parser.add_argument("--role", choices=("leader", "follower", "client"), help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--topics", help=argparse.SUPPRESS)
    parser.add_argument("--pids", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import uvloop

    if args.role == "client":
        result = uvloop.run(_client(args, json.loads(args.pids), args.warmup_s))
        print(json.dumps(result))
        return 0
    if args.role is not None:
        uvloop.run(_relay(args))
        return 0
    # the measuring process on asyncio's own loop, as compare.py's: `closed_loop` times writes with
    # `loop.time()`, which uvloop keeps to the millisecond
    return asyncio.run(measure(args))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
