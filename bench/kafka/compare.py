"""The Kafka transport's two clients (aiokafka, confluent-kafka) through dscore's `Transport`, same run.

Two measurements per client, each in a fresh worker process, alternating which client goes first:

- hop: one endpoint sends one 100-byte frame to another and waits until the other receives it, then the
  next (no overlap): produce -> broker -> consume latency, p50 / p99 / p99.9, and the process's CPU per hop
  (which includes the client's idle fetch loop);
- rate: one endpoint sends `--records` 100-byte frames in batches of 100 (as a node sends one batch per
  `Ready`) to another endpoint of the same process, which receives them all: records/s end to end and
  CPU µs per record for the whole process (produce + consume, every thread, librdkafka's included).
  The sender keeps under 5,000 records in flight so no frame is dropped; any failure is reported;
- idle: the same two endpoints started and left alone for `--idle-s` seconds: the CPU an endpoint costs
  when nothing is sent (fetch loops, heartbeats, client threads), in % of one core per endpoint.

Needs a running broker: --bootstrap or DSCORE_TEST_KAFKA_BOOTSTRAP. Topics live in a fresh namespace and
are deleted afterwards.

Run from the repository root:
    .venv/bin/python bench/kafka/compare.py --bootstrap 127.0.0.1:19092 [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

from dscore.transport.base import OutboundFrame
from dscore.transport.kafka import open_kafka_transport
from dscore.transport.kafka_config import KafkaClient, KafkaTransportConfig, StartWithoutPosition
from dscore.transport.kafka_layout import delete_topics, ensure_topics

CLIENTS = ("aiokafka", "confluent")
MODES = ("hop", "rate", "idle")
RECORD_BYTES = 100
BATCH = 100
MAX_IN_FLIGHT = 5_000


async def _pair(config: KafkaTransportConfig) -> tuple[Any, Any]:
    await ensure_topics(config, ["a", "b"])
    a = open_kafka_transport(config, "a")
    b = open_kafka_transport(config, "b")
    await a.start({})
    await b.start({})
    return a, b


async def run_hop(config: KafkaTransportConfig, hops: int, warmup: int) -> dict[str, Any]:
    a, b = await _pair(config)
    payload = b"x" * RECORD_BYTES
    samples: list[float] = []
    try:
        for i in range(warmup + hops):
            if i == warmup:
                cpu0 = time.process_time()
                wall0 = time.perf_counter()
            started = time.perf_counter()
            await a.send([OutboundFrame("b", payload)])
            got = await b.receive(1)
            assert len(got) == 1
            if i >= warmup:
                samples.append(time.perf_counter() - started)
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
    finally:
        await a.close()
        await b.close()
    samples.sort()
    return {
        "p50_ms": 1000 * samples[len(samples) // 2],
        "p99_ms": 1000 * samples[int(len(samples) * 0.99)],
        "p999_ms": 1000 * samples[min(len(samples) - 1, int(len(samples) * 0.999))],
        "mean_ms": 1000 * statistics.fmean(samples),
        "cpu_us_per_hop": 1e6 * cpu / hops,
        "cpu_share": cpu / wall,
    }


async def run_rate(config: KafkaTransportConfig, records: int) -> dict[str, Any]:
    a, b = await _pair(config)
    payload = b"y" * RECORD_BYTES
    batch = [OutboundFrame("b", payload)] * BATCH
    received = 0

    async def consume() -> None:
        nonlocal received
        while received < records:
            received += len(await b.receive(4096))

    try:
        # warm up connections and metadata
        await a.send(batch)
        got = 0
        while got < BATCH:
            got += len(await b.receive(BATCH))
        consumer = asyncio.ensure_future(consume())
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        sent = 0
        while sent < records:
            await a.send(batch)
            sent += BATCH
            while a.in_flight_records > MAX_IN_FLIGHT:
                await asyncio.sleep(0.001)  # pacing the bench's sender only
            await asyncio.sleep(0)
        async with asyncio.timeout(120):
            await consumer
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        failures = a.stats.send_failures_total
    finally:
        await a.close()
        await b.close()
    return {
        "records_per_s": records / wall,
        "cpu_us_per_record": 1e6 * cpu / records,
        "cpu_share": cpu / wall,
        "send_failures": failures,
    }


async def run_idle(config: KafkaTransportConfig, idle_s: float) -> dict[str, Any]:
    a, b = await _pair(config)
    try:
        await asyncio.sleep(1.0)  # let start-up settle
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        await asyncio.sleep(idle_s)  # the measurement is of doing nothing for this long
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
    finally:
        await a.close()
        await b.close()
    return {"idle_core_percent_per_endpoint": 100 * cpu / wall / 2}


def worker(args: argparse.Namespace) -> None:
    config = KafkaTransportConfig(
        bootstrap_servers=args.bootstrap,
        cluster_id=args.namespace,
        client=KafkaClient(args.worker),
        start_without_position=StartWithoutPosition.LATEST,
        create_own_inbox=False,
    )

    async def main() -> dict[str, Any]:
        try:
            if args.mode == "hop":
                return await run_hop(config, args.hops, args.warmup)
            if args.mode == "idle":
                return await run_idle(config, args.idle_s)
            return await run_rate(config, args.records)
        finally:
            await delete_topics(config, ["a", "b"])

    print(json.dumps(asyncio.run(main())))


def run_worker(args: argparse.Namespace, client: str, mode: str) -> dict[str, Any]:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    command = [
        sys.executable,
        __file__,
        "--worker",
        client,
        "--mode",
        mode,
        "--namespace",
        namespace,
        "--bootstrap",
        args.bootstrap,
        "--hops",
        str(args.hops),
        "--warmup",
        str(args.warmup),
        "--records",
        str(args.records),
        "--idle-s",
        str(args.idle_s),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{client} {mode} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", default=os.environ.get("DSCORE_TEST_KAFKA_BOOTSTRAP", ""))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hops", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--worker", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.bootstrap:
        raise SystemExit("--bootstrap (or DSCORE_TEST_KAFKA_BOOTSTRAP) must name a running broker")
    if args.worker:
        worker(args)
        return

    results: dict[str, dict[str, list[dict[str, Any]]]] = {c: {m: [] for m in MODES} for c in CLIENTS}
    for repeat in range(args.repeats):
        order = CLIENTS if repeat % 2 == 0 else tuple(reversed(CLIENTS))
        for mode in MODES:
            for client in order:
                result = run_worker(args, client, mode)
                results[client][mode].append(result)
                print(f"repeat {repeat + 1} {client:9} {mode}: {json.dumps(result)}", file=sys.stderr)

    def median(client: str, mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[client][mode])

    load = os.getloadavg()
    print(
        f"\nKafka transport, same run: {platform.python_version()}, {os.cpu_count()} cores, "
        f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}, medians of {args.repeats} repeats"
    )
    print(
        f"{'client':10} {'hop p50 ms':>10} {'p99 ms':>8} {'p99.9 ms':>9} {'CPU µs/hop':>11} "
        f"{'records/s':>10} {'CPU µs/rec':>11} {'failures':>8}"
    )
    for client in CLIENTS:
        print(
            f"{client:10} {median(client, 'hop', 'p50_ms'):10.2f} {median(client, 'hop', 'p99_ms'):8.2f} "
            f"{median(client, 'hop', 'p999_ms'):9.2f} {median(client, 'hop', 'cpu_us_per_hop'):11.0f} "
            f"{median(client, 'rate', 'records_per_s'):10.0f} "
            f"{median(client, 'rate', 'cpu_us_per_record'):11.1f} "
            f"{sum(r['send_failures'] for r in results[client]['rate']):8d} "
            f"{median(client, 'idle', 'idle_core_percent_per_endpoint'):20.2f}"
        )
    ratio = median("confluent", "rate", "records_per_s") / median("aiokafka", "rate", "records_per_s")
    cpu_ratio = median("aiokafka", "rate", "cpu_us_per_record") / median(
        "confluent", "rate", "cpu_us_per_record"
    )
    print(f"confluent / aiokafka: {ratio:.2f}x records/s, {cpu_ratio:.2f}x less CPU per record")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
