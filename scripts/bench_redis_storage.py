"""RedisStorage.save against bare Redis round trips, measured in the same run on the same server.

    .venv/bin/python scripts/bench_redis_storage.py [--rounds 600] [--sizes 1,10,100]

Starts its own Redis servers (scripts/redis.sh, in a temporary folder): one with `appendfsync always`
(what dscore runs) and one with `everysec` (the same work without the per-write fsync, to show what is
CPU and protocol and what is the disk). For each batch size n it compares:

- `ping`: one PING (the floor: a round trip that writes nothing);
- `multi`: a bare MULTI / HSET hard / ZADD n entries / EXEC, carrying the same bytes a save does;
- `save`: RedisStorage.save(WriteBatch(hard_state, n entries)), encoding included.

Latency (p50 / p99, and ops/s of one client going back to back) is timed interleaved, round by round
with the order rotated, so machine noise hits every variant alike. CPU is measured in a second pass,
one variant at a time: the client's process time per op (asyncio and redis-py included) and the Redis
server's own CPU per op (INFO cpu, user + sys: command execution, the script, and with `always` the
fsync system calls).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis

from dscore.core.codec import encode_value, frame
from dscore.protocols.contract import EntryKind, LogEntry
from dscore.protocols.raft import HardState
from dscore.storage.base import WriteBatch
from dscore.storage.redis import RedisStorage

SCRIPTS = Path(__file__).resolve().parent
#: a kv put as the kv state machine encodes it is about 20-40 bytes; use 40
COMMAND_BYTES = 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(run_dir: str, name: str, fsync: str) -> str:
    env = {**os.environ, "DSCORE_RUN_DIR": run_dir, "DSCORE_REDIS_APPENDFSYNC": fsync}
    command = [str(SCRIPTS / "redis.sh"), "start", name, str(free_port())]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def stop_redis(run_dir: str, name: str) -> None:
    env = {**os.environ, "DSCORE_RUN_DIR": run_dir}
    subprocess.run([str(SCRIPTS / "redis.sh"), "stop", name], env=env, capture_output=True, check=False)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Workload:
    """The three variants for one batch size; each write goes to fresh log indexes."""

    def __init__(self, client: aioredis.Redis, storage: RedisStorage, size: int) -> None:
        self.client, self.storage, self.size = client, storage, size
        self.next_index = 1

    def batch(self) -> WriteBatch:
        first, self.next_index = self.next_index, self.next_index + self.size
        return WriteBatch(
            hard_state=HardState(1, "n1", first),
            entries=tuple(
                LogEntry(i, 1, EntryKind.NORMAL, os.urandom(COMMAND_BYTES))
                for i in range(first, first + self.size)
            ),
        )

    async def ping(self) -> None:
        await self.client.ping()

    async def multi(self) -> None:
        batch = self.batch()
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset("{bench:bare}:state", "hard", frame(encode_value(batch.hard_state)))
            pipe.zadd("{bench:bare}:log", {frame(encode_value(e)): e.index for e in batch.entries})
            await pipe.execute()

    async def save(self) -> None:
        await self.storage.save(self.batch())

    def variants(self) -> dict[str, Callable[[], Awaitable[None]]]:
        return {"ping": self.ping, "multi": self.multi, "save": self.save}


async def redis_cpu_s(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def bench_server(url: str, fsync: str, sizes: list[int], rounds: int) -> list[str]:
    client = aioredis.Redis.from_url(url)
    storage = RedisStorage(client, f"bench:{fsync}")
    await storage.bump_incarnation()
    rows = []
    for size in sizes:
        await client.delete("{bench:bare}:state", "{bench:bare}:log", *storage.keys)
        variants = Workload(client, storage, size).variants()
        for _ in range(20):  # warm up: connections, the script cache, the allocator
            for op in variants.values():
                await op()
        latencies: dict[str, list[float]] = {name: [] for name in variants}
        for round_no in range(rounds):
            names = list(variants)
            for name in names[round_no % 3 :] + names[: round_no % 3]:
                start = time.perf_counter()
                await variants[name]()
                latencies[name].append(time.perf_counter() - start)
        for name, op in variants.items():
            client_cpu, server_cpu = time.process_time(), await redis_cpu_s(client)
            for _ in range(rounds):
                await op()
            server_cpu = await redis_cpu_s(client) - server_cpu
            client_cpu = time.process_time() - client_cpu
            values = latencies[name]
            rows.append(
                f"| {fsync:8} | {size:3} | {name:5} | {percentile(values, 0.5) * 1e6:6.0f} | "
                f"{percentile(values, 0.99) * 1e6:6.0f} | {len(values) / sum(values):5.0f} | "
                f"{client_cpu / rounds * 1e6:6.0f} | {server_cpu / rounds * 1e6:6.0f} |"
            )
    await client.delete("{bench:bare}:state", "{bench:bare}:log", *storage.keys)
    await client.aclose()
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=600)
    parser.add_argument("--sizes", default="1,10,100")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{args.rounds} rounds per size; {COMMAND_BYTES}-byte entries; load average {load}")
    print("| fsync    |   n | op    | p50 µs | p99 µs | ops/s | client CPU µs/op | Redis CPU µs/op |")
    print("| -------- | --- | ----- | ------ | ------ | ----- | ------ | ------ |")
    with tempfile.TemporaryDirectory(prefix="dscore-bench-redis-") as run_dir:
        for fsync in ("always", "everysec"):
            name = f"bench-{fsync}"
            url = start_redis(run_dir, name, fsync)
            try:
                for row in await bench_server(url, fsync, sizes, args.rounds):
                    print(row, flush=True)
            finally:
                stop_redis(run_dir, name)


if __name__ == "__main__":
    asyncio.run(main())
