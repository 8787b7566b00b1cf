"""The control channel of transport faults on Kafka: one topic per cluster, written by the chaos injector
and read by every node's `FaultyTransport` (`dscore.transport.faults`).

    dscore.<cluster_id>.control      partition 0 only; records are `encode_command` frames

- One partition, so every node reads the commands in the order they were published (a stop after its
  start).
- No consumer group and no committed offsets: every node reads the whole retained topic from its start
  (`KafkaControlSource`), replaying what is still in force; expired commands are skipped by the rules.
- Retention (`CONTROL_RETENTION_MS`) outlasts the longest fault (`MAX_FAULT_DURATION_S` + skew), so a
  node that restarts in the middle of a fault still finds its start.
- Both sides create the topic if it is missing (idempotent; the broker does not auto-create topics).

Both sides use aiokafka: control traffic is a handful of records, and a node's idle consumer fetches
twice a second (`fetch_max_wait_ms` 500).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import ConsumerStoppedError, KafkaError

from dscore.core.errors import ConfigError, LocalError
from dscore.core.ids import NodeId
from dscore.transport.faults import (
    MAX_CLOCK_SKEW_S,
    MAX_COMMAND_BYTES,
    MAX_FAULT_DURATION_S,
    FaultCommand,
    encode_command,
)
from dscore.transport.kafka_config import KafkaTransportConfig, check_name
from dscore.transport.kafka_layout import KafkaUnavailableError, close_quietly

log = logging.getLogger(__name__)

#: twice the longest fault and the allowed skew: a node restarted mid-fault finds the fault's start
CONTROL_RETENTION_MS = int(2 * (MAX_FAULT_DURATION_S + MAX_CLOCK_SKEW_S) * 1000)
_TOPIC_ALREADY_EXISTS = 36
_POLL_MS = 1_000
_ERROR_BACKOFF_S = 0.5


def control_topic(cluster_id: str) -> str:
    return f"dscore.{check_name('cluster_id', cluster_id)}.control"


async def ensure_control_topic(config: KafkaTransportConfig) -> bool:
    """Create the cluster's control topic if it is missing; check it has one partition. True if this call
    created it. Raises `KafkaUnavailableError` (no answer within `config.start_timeout_s`) or
    `ConfigError` (the topic exists with several partitions)."""
    topic = control_topic(config.cluster_id)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=config.bootstrap_servers,
        request_timeout_ms=int(config.request_timeout_s * 1000),
        client_id=f"dscore-admin-{config.cluster_id}-control",
    )
    created = False
    try:
        async with asyncio.timeout(config.start_timeout_s):
            await admin.start()
            partitions = await _partitions(admin, topic)
            if partitions is None:
                response = await admin.create_topics(
                    [
                        NewTopic(
                            topic,
                            1,
                            config.replication_factor,
                            topic_configs={
                                "retention.ms": str(CONTROL_RETENTION_MS),
                                "segment.ms": str(min(CONTROL_RETENTION_MS // 4, 600_000)),
                                "max.message.bytes": str(MAX_COMMAND_BYTES + 64 * 1024),
                                "message.timestamp.type": "LogAppendTime",
                                "cleanup.policy": "delete",
                            },
                        )
                    ],
                    timeout_ms=int(config.request_timeout_s * 1000),
                )
                for item in response.topic_errors:
                    code = item[1]
                    if code == 0:
                        created = True
                    elif code != _TOPIC_ALREADY_EXISTS:
                        raise KafkaUnavailableError(f"creating {topic!r} failed: error {code}")
                backoff_s = 0.02
                while (partitions := await _partitions(admin, topic)) is None:
                    await asyncio.sleep(backoff_s)  # created, not yet in every broker's metadata
                    backoff_s = min(2 * backoff_s, 0.5)
            if partitions != 1:
                raise ConfigError(
                    f"control topic {topic!r} has {partitions} partitions; it needs exactly one"
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


async def delete_control_topic(config: KafkaTransportConfig) -> None:
    """Delete the cluster's control topic (a test's namespace, a cluster torn down); missing is fine."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=config.bootstrap_servers,
        request_timeout_ms=int(config.request_timeout_s * 1000),
        client_id=f"dscore-admin-{config.cluster_id}-control",
    )
    try:
        async with asyncio.timeout(config.start_timeout_s):
            await admin.start()
            await admin.delete_topics([control_topic(config.cluster_id)])
    except TimeoutError:
        raise KafkaUnavailableError(
            f"Kafka at {config.bootstrap_servers} did not answer within {config.start_timeout_s} s"
        ) from None
    except KafkaError as error:
        if "UnknownTopicOrPartition" not in type(error).__name__:
            raise KafkaUnavailableError(f"deleting the control topic failed: {error!r}") from error
    finally:
        await close_quietly(admin.close(), config.close_timeout_s)


async def _partitions(admin: Any, topic: str) -> int | None:
    for entry in await admin.describe_topics([topic]):
        if entry.get("topic") == topic and entry.get("error_code", 0) == 0:
            return len(entry["partitions"])
    return None


class KafkaControlSource:
    """A node's reader of the control topic (`dscore.transport.faults.ControlSource`), from its oldest
    retained record."""

    def __init__(self, config: KafkaTransportConfig, endpoint: NodeId) -> None:
        self.config = config
        self.endpoint = endpoint
        self.topic = control_topic(config.cluster_id)
        self._tp = TopicPartition(self.topic, 0)
        self._consumer: Any = None
        #: fetch errors the client reported (it retries by itself)
        self.errors = 0

    async def start(self) -> None:
        if self._consumer is not None:
            raise LocalError("control source already started")
        config = self.config
        await ensure_control_topic(config)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=config.bootstrap_servers,
            client_id=f"dscore-{config.cluster_id}-{self.endpoint}-control",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=500,
            max_partition_fetch_bytes=MAX_COMMAND_BYTES * 16,
            request_timeout_ms=int(config.request_timeout_s * 1000),
        )
        try:
            async with asyncio.timeout(config.start_timeout_s):
                await consumer.start()
                consumer.assign([self._tp])
                await consumer.seek_to_beginning(self._tp)
        except (TimeoutError, KafkaError, OSError) as error:
            await close_quietly(consumer.stop(), config.close_timeout_s)
            raise KafkaUnavailableError(f"control topic {self.topic} unavailable: {error!r}") from error
        self._consumer = consumer

    async def read(self, max_records: int) -> list[bytes]:
        consumer = self._consumer
        if consumer is None:
            raise LocalError("control source is not started")
        while True:
            try:
                fetched = await consumer.getmany(self._tp, timeout_ms=_POLL_MS, max_records=max_records)
            except ConsumerStoppedError:
                raise LocalError("control source is closed") from None
            except KafkaError as error:
                self.errors += 1
                log.debug("%s: control fetch failed: %r", self.endpoint, error)
                await asyncio.sleep(_ERROR_BACKOFF_S)
                continue
            records = fetched.get(self._tp)
            if records:
                return [r.value if r.value is not None else b"" for r in records]

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await close_quietly(consumer.stop(), self.config.close_timeout_s)


class KafkaControlPublisher:
    """The injector's writer of the control topic: `publish` returns once the broker acknowledged the
    record (acks=all), within `config.send_timeout_s` + `config.request_timeout_s`, or raises
    `KafkaUnavailableError`."""

    def __init__(self, config: KafkaTransportConfig, *, key: bytes | None) -> None:
        self.config = config
        self.topic = control_topic(config.cluster_id)
        self._key = key
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await ensure_control_topic(self.config)
        await self._connect()

    async def _connect(self) -> Any:
        config = self.config
        producer = AIOKafkaProducer(
            bootstrap_servers=config.bootstrap_servers,
            client_id=f"dscore-{config.cluster_id}-chaos-control",
            enable_idempotence=True,
            acks="all",
            request_timeout_ms=int(config.request_timeout_s * 1000),
        )
        try:
            async with asyncio.timeout(config.start_timeout_s):
                await producer.start()
        except (TimeoutError, KafkaError, OSError) as error:
            await close_quietly(producer.stop(), config.close_timeout_s)
            raise KafkaUnavailableError(
                f"Kafka at {config.bootstrap_servers} unavailable: {error!r}"
            ) from error
        self._producer = producer
        return producer

    async def publish(self, command: FaultCommand) -> int:
        """Publish one command; returns its offset on the control topic."""
        data = encode_command(command, key=self._key)
        config = self.config
        async with self._lock:  # one at a time: the order of publication is the order nodes obey
            producer = self._producer or await self._connect()
            try:
                async with asyncio.timeout(config.send_timeout_s + config.request_timeout_s):
                    metadata = await producer.send_and_wait(self.topic, data, partition=0)
            except (TimeoutError, KafkaError) as error:
                # A stuck idempotent producer may never recover (aiokafka #1017): start afresh next time.
                self._producer = None
                await close_quietly(producer.stop(), config.close_timeout_s)
                raise KafkaUnavailableError(
                    f"publishing fault {command.fault_id} failed: {error!r}"
                ) from error
            return int(metadata.offset)

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await close_quietly(producer.stop(), self.config.close_timeout_s)
