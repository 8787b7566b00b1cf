"""The topic layout: one single-partition inbox topic per endpoint, named by cluster id and endpoint id.

    dscore.<cluster_id>.inbox.<endpoint_id>      partition 0 only; every node and every client has one
    dscore.<cluster_id>.<endpoint_id>            the endpoint's consumer group (committed offsets: a hint)

Why this layout:

- One partition per inbox is the only way to keep every sender's records in the order it sent them
  without the receiver merging streams, so per-sender high-water marks (the dedup above the transport)
  stay valid; and one topic per endpoint means a node fetches only what is addressed to it.
- Nodes and clients are endpoints alike: a node answers a client by sending to the client's id, exactly
  as it sends to a peer. A gateway (or a KvClient) creates its own inbox, its reply topic, at start; the
  nodes' inboxes are created up front with `ensure_topics` (cluster bootstrap, or before adding a node).
- Topics, not partitions of a shared topic: endpoints come and go (membership changes, gateways scale)
  and a topic is created or deleted on its own, while a partition can never be removed from a topic and
  a partition index would need a registry mapping ids to indexes.
- Per-link topics (one per sender and receiver) would make a node fetch from N partitions and grow as
  N^2 topics, for no ordering gain: one partition already keeps each sender's order.
- The cluster id namespaces everything, so several clusters (tests, tenants) share one broker.

Caveat: Kafka refuses two topic names that differ only by '.' against '_' (their metric names collide),
so endpoints `n_1` and `n.1` cannot live in one cluster; `ensure_topics` says so if it happens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from dscore.core.errors import ConfigError, DscoreError
from dscore.core.ids import NodeId
from dscore.transport.kafka_common import parse_read_mark
from dscore.transport.kafka_config import KafkaTransportConfig, check_name

log = logging.getLogger(__name__)

#: Kafka's error code for a topic that already exists (CreateTopics)
_TOPIC_ALREADY_EXISTS = 36
#: Kafka's error code for a topic name that collides with an existing one ('.' against '_')
_INVALID_TOPIC = 17


class KafkaUnavailableError(DscoreError):
    """The broker did not answer within the configured bound (start, topic creation)."""


@dataclass(frozen=True, slots=True)
class KafkaLayout:
    """Names of one cluster's topics, channels and consumer groups."""

    cluster_id: str

    def __post_init__(self) -> None:
        check_name("cluster_id", self.cluster_id)

    def inbox_topic(self, endpoint: NodeId) -> str:
        return f"dscore.{self.cluster_id}.inbox.{check_name('endpoint id', endpoint)}"

    def group_id(self, endpoint: NodeId) -> str:
        return f"dscore.{self.cluster_id}.{check_name('endpoint id', endpoint)}"

    @staticmethod
    def channel(topic: str, partition: int = 0) -> str:
        """`Delivery.channel`: the topic-partition, as Kafka's tools print it."""
        return f"{topic}-{partition}"


def topic_configs(config: KafkaTransportConfig) -> dict[str, str]:
    """Per-topic settings every inbox is created with (see `KafkaTransportConfig`)."""
    return {
        "max.message.bytes": str(config.topic_max_message_bytes),
        "retention.ms": str(config.retention_ms),
        "segment.ms": str(config.segment_ms),
        # the producer's CreateTime would let a sender's clock skew decide retention
        "message.timestamp.type": "LogAppendTime",
        "cleanup.policy": "delete",
    }


async def ensure_topics(
    config: KafkaTransportConfig, endpoints: Iterable[NodeId], *, create: bool = True
) -> list[str]:
    """Create the inbox of every endpoint that has none (one request; with `create=False` a missing one
    is an error), then check that each inbox exists with exactly one partition. Returns the topics
    created by this call. Idempotent. An inbox that exists keeps its settings (they are not altered): a
    smaller `max.message.bytes` there makes the broker refuse larger records, which senders count as
    `too_large`.

    Raises `ConfigError` when an inbox exists with another partition count or a name collides, and
    `KafkaUnavailableError` when the broker does not answer within `config.start_timeout_s`."""
    layout = KafkaLayout(config.cluster_id)
    topics = sorted({layout.inbox_topic(e) for e in endpoints})
    if not topics:
        return []
    admin = AIOKafkaAdminClient(
        bootstrap_servers=config.bootstrap_servers,
        request_timeout_ms=int(config.request_timeout_s * 1000),
        client_id=f"dscore-admin-{config.cluster_id}",
    )
    try:
        async with asyncio.timeout(config.start_timeout_s):
            await admin.start()
            existing = _partition_counts(await admin.describe_topics(topics))
            missing = [t for t in topics if t not in existing]
            created: list[str] = []
            if missing and not create:
                raise ConfigError(
                    f"inbox topics missing: {', '.join(missing)} (create them with ensure_topics)"
                )
            if missing:
                configs = topic_configs(config)
                response = await admin.create_topics(
                    [NewTopic(t, 1, config.replication_factor, topic_configs=configs) for t in missing],
                    timeout_ms=int(config.request_timeout_s * 1000),
                )
                for item in response.topic_errors:
                    topic, code = item[0], item[1]
                    message = item[2] if len(item) > 2 else None
                    if code == 0:
                        created.append(topic)
                    elif code == _INVALID_TOPIC:
                        raise ConfigError(f"Kafka refuses topic {topic!r}: {message or 'invalid name'}")
                    elif code != _TOPIC_ALREADY_EXISTS:  # a concurrent creator won: checked below
                        raise KafkaUnavailableError(
                            f"creating {topic!r} failed: error {code} {message or ''}"
                        )
                # Creation is acknowledged before every broker's metadata shows the topic: ask again.
                backoff_s = 0.02
                while True:
                    existing = _partition_counts(await admin.describe_topics(topics))
                    if all(t in existing for t in topics):
                        break
                    await asyncio.sleep(backoff_s)
                    backoff_s = min(2 * backoff_s, 0.5)
            for topic in topics:
                partitions = existing.get(topic)
                if partitions is None:
                    raise KafkaUnavailableError(f"topic {topic!r} still missing after creating it")
                if partitions != 1:
                    raise ConfigError(
                        f"inbox topic {topic!r} has {partitions} partitions; dscore inboxes have exactly one "
                        "(delete it or pick another cluster_id)"
                    )
            return created
    except TimeoutError:
        raise KafkaUnavailableError(
            f"Kafka at {config.bootstrap_servers} did not answer within {config.start_timeout_s} s"
        ) from None
    except KafkaError as error:
        raise KafkaUnavailableError(f"Kafka at {config.bootstrap_servers} failed: {error!r}") from error
    finally:
        await close_quietly(admin.close(), config.close_timeout_s)


async def committed_read_mark(config: KafkaTransportConfig, endpoint: NodeId) -> int | None:
    """The highest offset of `endpoint`'s inbox that it read before (the read mark of its group's last
    commit, `dscore.transport.kafka_common.read_mark`), or None: no commit, not ours, or the broker did
    not answer within `request_timeout_s`. Only counts redeliveries, so it never fails a start."""
    layout = KafkaLayout(config.cluster_id)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=config.bootstrap_servers,
        request_timeout_ms=int(config.request_timeout_s * 1000),
        client_id=f"dscore-admin-{config.cluster_id}",
    )
    topic = layout.inbox_topic(endpoint)
    try:
        async with asyncio.timeout(config.request_timeout_s):
            await admin.start()
            offsets = await admin.list_consumer_group_offsets(
                layout.group_id(endpoint), partitions=[TopicPartition(topic, 0)]
            )
    except (TimeoutError, KafkaError, OSError) as error:
        log.info("%s: could not read the last commit's read mark: %r", endpoint, error)
        return None
    finally:
        await close_quietly(admin.close(), config.close_timeout_s)
    committed = offsets.get(TopicPartition(topic, 0))
    if committed is None or committed.offset < 0:
        return None
    return parse_read_mark(committed.metadata)


async def delete_topics(config: KafkaTransportConfig, endpoints: Iterable[NodeId]) -> None:
    """Delete the inboxes of these endpoints (a removed node, a test's namespace). Missing ones are fine."""
    layout = KafkaLayout(config.cluster_id)
    topics = sorted({layout.inbox_topic(e) for e in endpoints})
    admin = AIOKafkaAdminClient(
        bootstrap_servers=config.bootstrap_servers,
        request_timeout_ms=int(config.request_timeout_s * 1000),
    )
    try:
        async with asyncio.timeout(config.start_timeout_s):
            await admin.start()
            await admin.delete_topics(topics, timeout_ms=int(config.request_timeout_s * 1000))
    except TimeoutError:
        raise KafkaUnavailableError(
            f"Kafka at {config.bootstrap_servers} did not answer within {config.start_timeout_s} s"
        ) from None
    except KafkaError as error:
        raise KafkaUnavailableError(f"Kafka at {config.bootstrap_servers} failed: {error!r}") from error
    finally:
        await close_quietly(admin.close(), config.close_timeout_s)


def _partition_counts(described: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in described:
        if entry.get("error_code", 0) == 0:
            counts[entry["topic"]] = len(entry["partitions"])
    return counts


async def close_quietly(closing: Awaitable[Any], timeout_s: float) -> None:
    """Await a client's close, bounded; a close that fails or hangs must not hide the real outcome."""
    try:
        async with asyncio.timeout(timeout_s):
            await closing
    except Exception:  # closing is best effort
        pass
