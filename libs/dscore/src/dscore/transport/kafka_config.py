"""Settings of the Kafka transports (both clients read the same `KafkaTransportConfig`).

Every bound the transport keeps is here, with why its default is what it is:

- `linger_ms = 0`: a protocol message is sent the moment the runtime hands it over; the runtime already
  batches (one `send` per `Ready`), so lingering would only add latency.
- `fetch_max_wait_ms = 50`: how long the broker holds a fetch that finds no data. A waiting fetch returns
  as soon as data arrives, so this does not add latency to a steady stream; it bounds the wait after a
  seek (aiokafka waits for the fetch already in flight) and sets the idle fetch rate (20/s per endpoint).
  aiokafka's default is 500 ms; 0 would spin.
- `max_in_flight_records` / `max_in_flight_bytes`: records handed to the producer and not yet
  acknowledged. Beyond them a frame is dropped at once (`backpressure`), never queued: the node's loop is
  never blocked by a slow or absent broker, and Raft retransmits what was lost.
- `send_timeout_s`: the longest one `send()` call may take; what is left of the batch is dropped
  (`send_timeout`).
- `delivery_timeout_s`: a record not acknowledged after this long is counted as lost
  (`delivery_timeout`). librdkafka enforces it itself (`message.timeout.ms`); aiokafka's idempotent
  producer retries forever and can hang through a broker outage (aiokafka #1017), so the aiokafka
  transport replaces its producer instead. The confluent transport does not rely on librdkafka alone
  either: it replaces a producer that owes reports and served none for `delivery_timeout_s +
  request_timeout_s + 1 s`, longer than librdkafka's own bound.
- `request_timeout_s`: one request to the broker. The confluent transport also reads it to tell a stuck
  consumer: one that fetched nothing for `2 * request_timeout_s + 1 s` while the broker answered that
  its inbox holds records it has not fetched is rebuilt at the position it had handed over.
- `max_record_bytes`: the largest record sent; larger frames are dropped (`too_large`). Topics are
  created with a broker limit above it, so one oversized record never fails a batch of small ones.
- `retention_ms` / `segment_ms`: an inbox keeps an hour of records (what a restarted node may replay:
  protocol messages older than that are useless to it) and rolls segments every 10 minutes so retention
  can delete them.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

from dscore.core.codec import DEFAULT_MAX_ENVELOPE_BYTES
from dscore.core.errors import ConfigError

#: Kafka's legal topic characters; ids and the cluster id go into topic names
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class KafkaClient(enum.Enum):
    """Which Kafka client library moves the records. Both pass the same integration tests.

    The default is librdkafka (confluent-kafka), chosen by CPU in a same-run comparison through this
    `Transport` (`bench/kafka/compare.py`; numbers in bench/kafka/README.md): 2.7-4.4x less CPU per
    record end to end (produce + consume), 3.4-4.9x the records/s of one process, half the CPU per
    isolated hop, a quarter of the idle CPU per endpoint, and the same or lower one-hop latency. On two
    cores shared by three nodes, a broker and Redis, the transport's CPU is not noise: a committed Raft
    op costs the whole embedded cluster ~17 µs, and a client's request and reply alone are two records.
    aiokafka stays available (pure Python, no native wheel)."""

    #: librdkafka through confluent-kafka (default)
    CONFLUENT = "confluent"
    #: aiokafka, pure asyncio
    AIOKAFKA = "aiokafka"


class StartWithoutPosition(enum.Enum):
    """Where an endpoint starts reading its inbox when its storage holds no position for it.

    Kafka's committed offsets are never a resume point: they are a hint committed after the storage, so
    they can only lag it, and when the storage is empty they describe effects that are not durable
    anymore (the storage was lost or this is a fresh node reusing a topic)."""

    #: from the first record the inbox still holds: a node (nothing durable yet, so everything is unread)
    EARLIEST = "earliest"
    #: from the end: a client endpoint (a gateway, a KvClient) that keeps no storage; replies already in
    #: its inbox answer requests of a previous process and nobody waits for them
    LATEST = "latest"


def check_name(what: str, value: str) -> str:
    """`value` as a part of a topic name, or `ConfigError` saying what is wrong with it."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigError(
            f"{what} {value!r} must be 1-63 characters: letters, digits, '_', '.', '-' (not first)"
        )
    return value


@dataclass(frozen=True, slots=True)
class KafkaTransportConfig:
    """How an endpoint reaches Kafka and every bound it keeps (see the module docstring)."""

    #: `host:port[,host:port...]`
    bootstrap_servers: str
    #: namespaces every topic and consumer group: two clusters can share a broker
    cluster_id: str
    client: KafkaClient = KafkaClient.CONFLUENT
    start_without_position: StartWithoutPosition = StartWithoutPosition.EARLIEST
    #: create this endpoint's own inbox at start if it is missing (idempotent)
    create_own_inbox: bool = True
    linger_ms: int = 0
    fetch_max_wait_ms: int = 50
    #: bytes fetched per partition per request (prefetch bound; a larger record still comes alone)
    max_partition_fetch_bytes: int = 1024 * 1024
    max_record_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES
    max_in_flight_records: int = 10_000
    max_in_flight_bytes: int = 64 * 1024 * 1024
    send_timeout_s: float = 1.0
    delivery_timeout_s: float = 10.0
    #: one request to the broker (produce, fetch, metadata, commit)
    request_timeout_s: float = 5.0
    #: `start()` gives up (KafkaUnavailableError) when the broker does not answer within this
    start_timeout_s: float = 30.0
    #: `close()` waits at most this for the clients to flush and disconnect
    close_timeout_s: float = 5.0
    #: Kafka's committed offsets (a hint for lag monitoring) are written at most this often
    commit_interval_s: float = 1.0
    #: a destination whose topic metadata is unknown is looked up for at most this long while its
    #: frames wait (in order, at most `max_parked_frames` per destination)
    lookup_timeout_s: float = 2.0
    max_parked_frames: int = 1_000
    #: after a failed lookup, frames to that destination are dropped at once for this long
    unknown_destination_retry_s: float = 5.0
    replication_factor: int = 1
    retention_ms: int = 3_600_000
    segment_ms: int = 600_000

    def __post_init__(self) -> None:
        if not isinstance(self.bootstrap_servers, str) or not self.bootstrap_servers.strip():
            raise ConfigError("bootstrap_servers must name at least one host:port")
        for server in self.bootstrap_servers.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"bootstrap server {server!r} must be host:port")
        check_name("cluster_id", self.cluster_id)
        if not isinstance(self.client, KafkaClient):
            raise ConfigError(f"client must be a KafkaClient, got {self.client!r}")
        if not isinstance(self.start_without_position, StartWithoutPosition):
            raise ConfigError(
                f"start_without_position must be a StartWithoutPosition, got {self.start_without_position!r}"
            )
        positive_ints = (
            "fetch_max_wait_ms",
            "max_partition_fetch_bytes",
            "max_record_bytes",
            "max_in_flight_records",
            "max_in_flight_bytes",
            "max_parked_frames",
            "replication_factor",
            "retention_ms",
            "segment_ms",
        )
        for name in positive_ints:
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if type(self.linger_ms) is not int or self.linger_ms < 0:
            raise ConfigError(f"linger_ms must be an integer >= 0, got {self.linger_ms!r}")
        if self.max_in_flight_bytes < self.max_record_bytes:
            raise ConfigError("max_in_flight_bytes must be at least max_record_bytes")
        for name in (
            "send_timeout_s",
            "delivery_timeout_s",
            "request_timeout_s",
            "start_timeout_s",
            "close_timeout_s",
            "commit_interval_s",
            "lookup_timeout_s",
            "unknown_destination_retry_s",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")

    @property
    def topic_max_message_bytes(self) -> int:
        """The broker's per-topic limit: above `max_record_bytes` by a record batch's overhead, so the
        broker never refuses a batch the client let through."""
        return self.max_record_bytes + 64 * 1024
