"""The two floors under a dscore write, measured in the same run as the systems:

- `kafka_hop`: one 100-byte record produced and consumed back, one in flight at a time, with
  confluent-kafka (librdkafka), the client dscore's transport uses by default, configured as the
  transport configures it (`acks=all`, idempotent producer, `linger.ms=0`, Nagle off, the consumer's
  `fetch.wait.max.ms` = the transport's 50 ms, `fetch.min.bytes=1`), on the benchmark's broker. One dscore
  write crosses Kafka at least four times: gateway -> leader, leader -> followers, followers -> leader,
  leader -> gateway.
- `redis_multi_exec`: one MULTI / HSET (hard state) / ZADD (one ~100-byte entry) / EXEC round trip, what
  one `RedisStorage.save` of a single entry sends, against a Redis server run like the nodes' (AOF,
  `appendfsync always`), with redis-py, back to back.

Each reports p50 / p99 and the CPU per operation of its client process plus its server (the broker's
JVM, the Redis server), from /proc, like the systems' figures.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import Any

from httpload import CLOCK_TICKS_S, cpu_ticks, percentile

RECORD_BYTES = 100
FETCH_MAX_WAIT_MS = 50  # dscore.transport.kafka_config.KafkaTransportConfig.fetch_max_wait_ms


def _summary(name: str, latencies: list[float], cpu_s: float, server_cpu_s: float) -> dict[str, Any]:
    latencies.sort()
    count = len(latencies)
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    return {
        "baseline": name,
        "ops": count,
        "p50_ms": None if p50 is None else p50 * 1e3,
        "p99_ms": None if p99 is None else p99 * 1e3,
        "cpu_us_per_op": (cpu_s + server_cpu_s) / count * 1e6 if count else None,
        "server_cpu_us_per_op": server_cpu_s / count * 1e6 if count else None,
    }


def hop_clients(bootstrap: str, topic: str) -> tuple[Any, Any]:
    """A producer and a consumer set up as dscore's transport sets them up (the module doc), the consumer
    reading `topic`'s partition 0 from its start."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 0,
            "socket.nagle.disable": True,
        }
    )
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-group",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": FETCH_MAX_WAIT_MS,
            "fetch.min.bytes": 1,
            "socket.nagle.disable": True,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    return producer, consumer


def kafka_hop(bootstrap: str, server_pids: Sequence[int], hops: int, warmup: int = 200) -> dict[str, Any]:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"bench-etcd-hop-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        future.result(timeout=30)
    producer, consumer = hop_clients(bootstrap, topic)
    try:
        payload = b"x" * RECORD_BYTES
        latencies: list[float] = []
        cpu_before = ticks_before = 0.0
        for i in range(warmup + hops):
            if i == warmup:
                cpu_before, ticks_before = time.process_time(), cpu_ticks(server_pids)
            sent = time.perf_counter()
            producer.produce(topic, payload)
            producer.poll(0)
            deadline = sent + 10.0
            while True:
                message = consumer.poll(1.0)
                if message is not None:
                    if message.error():
                        raise KafkaException(message.error())
                    break
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"a record produced to {topic} was not consumed within 10 s")
            if i >= warmup:
                latencies.append(time.perf_counter() - sent)
        cpu_s = time.process_time() - cpu_before
        server_s = (cpu_ticks(server_pids) - ticks_before) / CLOCK_TICKS_S
    finally:
        consumer.close()
        producer.flush(10)
        for future in admin.delete_topics([topic]).values():
            with contextlib.suppress(Exception):  # a throwaway topic on the benchmark's own broker
                future.result(timeout=30)
    return _summary("kafka produce -> consume hop", latencies, cpu_s, server_s)


def redis_multi_exec(url: str, server_pids: Sequence[int], rounds: int, warmup: int = 200) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        fsync = client.config_get("appendfsync").get("appendfsync")
        if fsync != "always":
            raise RuntimeError(f"{url}: appendfsync is {fsync!r}, the nodes' Redis runs 'always'")
        entry = b"e" * RECORD_BYTES
        latencies: list[float] = []
        cpu_before = ticks_before = 0.0
        for i in range(warmup + rounds):
            if i == warmup:
                cpu_before, ticks_before = time.process_time(), cpu_ticks(server_pids)
            sent = time.perf_counter()
            pipe = client.pipeline(transaction=True)
            pipe.hset("bench:hard", mapping={"term": 7, "vote": "n1", "commit": i})
            pipe.zadd("bench:log", {entry + str(i).encode(): i})
            pipe.execute()
            if i >= warmup:
                latencies.append(time.perf_counter() - sent)
        cpu_s = time.process_time() - cpu_before
        server_s = (cpu_ticks(server_pids) - ticks_before) / CLOCK_TICKS_S
        client.delete("bench:hard", "bench:log")
    finally:
        client.close()
    return _summary("redis MULTI/EXEC (appendfsync always)", latencies, cpu_s, server_s)
