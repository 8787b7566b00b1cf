"""The Kafka transport: each endpoint (node or client) reads its own single-partition inbox topic and
produces to the others' (layout and why: `dscore.transport.kafka_layout`; settings:
`dscore.transport.kafka_config`). Two clients implement it: `AioKafkaTransport` here (aiokafka, pure
asyncio) and `ConfluentKafkaTransport` (librdkafka, the default: less CPU per record, see `KafkaClient`);
`open_kafka_transport` picks by the config.

Contract with the runtime (`dscore.transport.base`), as both implement it:

- `start(resume_after)`: the positions in the node's storage are the ONLY resume point. The inbox's channel
  in `resume_after` (`<topic>-0`) is read from the record after it. With no position for it, a node reads
  from the first record the inbox still holds and a client endpoint from the end (`StartWithoutPosition`);
  Kafka's committed offsets are never used to resume. A stored position that retention already deleted
  resumes at the first retained record (the gap is counted in `records_expired_unread`); one beyond the
  end of the log (the topic was recreated) resumes at its start. Positions of other channels are ignored.
- `receive(max_batch)`: 1..max_batch deliveries, in inbox order. `Delivery.data` is the record's value
  (a null value is delivered as `b""`; keys and headers are ignored), `channel` the topic-partition and
  `offset` the Kafka offset. Nothing in a record can make the transport raise: decoding and
  authentication happen above, which counts and rejects what is bad.
- `send(frames)`: never blocks longer than `send_timeout_s` and never raises for a delivery problem: a
  frame that cannot be sent is counted by reason in `stats.send_failures` and is lost (protocols retry).
  Records go out in the order given, per destination: one partition per inbox, an idempotent producer
  with `acks=all`, and at most one produce request in flight per broker (aiokafka) or at most 5 with
  idempotence (librdkafka), both of which keep order.
- `commit(positions)`: a hint, never awaited on the broker: the newest position is written to Kafka's
  committed offsets at most every `commit_interval_s` (for lag monitoring and Kafka's tools), with the
  highest offset read so far as the commit's metadata, so that the next start can count redeliveries
  (`stats.redelivered`; see `dscore.transport.kafka_common`).

Ordering caveat: when a producer is replaced (a delivery stuck for `delivery_timeout_s`, or a fatal
producer error), records the old producer still had in flight may land after the new producer's first
records. The receiver's high-water marks then drop the late ones as duplicates: a loss, which protocols
tolerate, never a reordering that reaches a protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from dscore.core.errors import ConfigError, LocalError
from dscore.core.ids import NodeId
from dscore.transport.base import Delivery, OutboundFrame, Transport
from dscore.transport.kafka_common import (
    MAX_REMEMBERED_DESTINATIONS,
    check_resume_after,
    read_mark,
    resume_offset,
)
from dscore.transport.kafka_config import KafkaClient, KafkaTransportConfig
from dscore.transport.kafka_layout import (
    KafkaLayout,
    KafkaUnavailableError,
    close_quietly,
    committed_read_mark,
    ensure_topics,
)
from dscore.transport.kafka_stats import KafkaTransportStats

log = logging.getLogger(__name__)

#: how long `receive` asks the client to wait per call before asking again (it returns at once on data)
_RECEIVE_POLL_MS = 1_000
#: pause after a consumer error before fetching again
_RECEIVE_ERROR_BACKOFF_S = 0.1
_MAX_RECONNECT_BACKOFF_S = 2.0
#: destinations looked up at once; frames to a further unknown destination are dropped
_MAX_LOOKUPS = 64
#: remembered destination names (topic names, failed lookups); forgotten all at once beyond it


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


__all__ = [
    "MAX_REMEMBERED_DESTINATIONS",
    "AioKafkaTransport",
    "check_resume_after",
    "open_kafka_transport",
    "resume_offset",
]


def open_kafka_transport(config: KafkaTransportConfig, endpoint: NodeId) -> Transport:
    """The endpoint's transport, with the client the config names (not started)."""
    if config.client is KafkaClient.CONFLUENT:
        from dscore.transport.kafka_confluent import ConfluentKafkaTransport

        return ConfluentKafkaTransport(config, endpoint)
    return AioKafkaTransport(config, endpoint)


class AioKafkaTransport:
    """One endpoint on Kafka through aiokafka (the `Transport` protocol; see the module docstring)."""

    def __init__(self, config: KafkaTransportConfig, endpoint: NodeId) -> None:
        self.config = config
        self.layout = KafkaLayout(config.cluster_id)
        self._node_id = endpoint
        self.topic = self.layout.inbox_topic(endpoint)
        self.channel = self.layout.channel(self.topic)
        self._tp = TopicPartition(self.topic, 0)
        self.stats = KafkaTransportStats()
        self._state = _State.NEW
        self._consumer: Any = None
        self._producer: Any = None
        #: bumped whenever the producer is retired: callbacks and lookups of an older one are ignored
        self._generation = 0
        #: topics whose metadata the current producer has (records go straight to the producer)
        self._ready_topics: set[str] = set()
        self._topic_of: dict[NodeId, str] = {}
        #: frames waiting for their destination's metadata lookup, in order, and the lookups
        self._parked: dict[str, deque[bytes]] = {}
        self._lookups: dict[str, asyncio.Task[None]] = {}
        #: destinations whose lookup failed, until this loop time
        self._unknown_until: dict[str, float] = {}
        self._in_flight_records = 0
        self._in_flight_bytes = 0
        #: (handed at, generation, delivery future), oldest first: the watchdog looks at the head
        self._pending: deque[tuple[float, int, asyncio.Future[Any]]] = deque()
        self._to_commit: int | None = None
        #: (position, read mark) of the last commit that went through
        self._committed: tuple[int, int] | None = None
        #: the highest offset handed to the runtime, in this run or (from the last commit) before it
        self._highest_read = -1
        #: records at or below this offset were read before this start: delivering one is a redelivery
        self._read_before = -1
        self._tasks: set[asyncio.Task[None]] = set()
        self._replacing: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    # -- start / close ------------------------------------------------------------------------------

    async def start(self, resume_after: Mapping[str, int]) -> Mapping[str, int]:
        if self._state is not _State.NEW:
            raise LocalError(f"transport of {self._node_id} was already started")
        stored = check_resume_after(self.channel, resume_after, self._node_id)
        self._loop = asyncio.get_running_loop()
        config = self.config
        await ensure_topics(config, [self._node_id], create=config.create_own_inbox)
        read_before = await committed_read_mark(config, self._node_id)
        if read_before is not None:
            self._read_before = self._highest_read = read_before
        try:
            async with asyncio.timeout(config.start_timeout_s):
                self._consumer = self._make_consumer()
                await self._consumer.start()
                self._consumer.assign([self._tp])
                tp = self._tp
                begin = (await self._consumer.beginning_offsets([tp]))[tp]
                end = (await self._consumer.end_offsets([tp]))[tp]
                first, expired = resume_offset(stored, begin, end, config.start_without_position)
                if expired:
                    log.warning("%s: retention deleted %d unread records of %s", self._node_id, expired, tp)
                self.stats.records_expired_unread += expired
                self._consumer.seek(tp, first)
                producer = self._make_producer()
                self._producer = producer
                await producer.start()
        except (TimeoutError, KafkaError, OSError) as error:
            await self._shutdown_clients()
            self._state = _State.CLOSED
            raise KafkaUnavailableError(
                f"{self._node_id}: Kafka at {config.bootstrap_servers} unavailable at start: {error!r}"
            ) from error
        self._state = _State.RUNNING
        self._spawn(self._commit_periodically(), "commit")
        self._spawn(self._watch_deliveries(), "watchdog")
        return {self.channel: end}

    async def close(self) -> None:
        if self._state is _State.CLOSED:
            return
        was_running = self._state is _State.RUNNING
        self._state = _State.CLOSED
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if was_running:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.config.close_timeout_s):
                    await self._commit_now()
        await self._shutdown_clients()

    async def _shutdown_clients(self) -> None:
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        if consumer is not None:
            await close_quietly(consumer.stop(), self.config.close_timeout_s)
        if producer is not None:
            # A graceful stop flushes what is in flight (bounded); a stuck one is abandoned.
            try:
                async with asyncio.timeout(self.config.close_timeout_s):
                    await producer.stop()
            except Exception:  # stuck or failed: let go of it
                await self._abandon(producer)

    def _make_consumer(self) -> Any:
        config = self.config
        return AIOKafkaConsumer(
            bootstrap_servers=config.bootstrap_servers,
            client_id=f"dscore-{config.cluster_id}-{self._node_id}-in",
            group_id=self.layout.group_id(self._node_id),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=config.fetch_max_wait_ms,
            max_partition_fetch_bytes=config.max_partition_fetch_bytes,
            request_timeout_ms=int(config.request_timeout_s * 1000),
            check_crcs=True,
        )

    def _make_producer(self) -> Any:
        config = self.config
        return AIOKafkaProducer(
            bootstrap_servers=config.bootstrap_servers,
            client_id=f"dscore-{config.cluster_id}-{self._node_id}-out",
            enable_idempotence=True,
            acks="all",
            linger_ms=config.linger_ms,
            max_request_size=config.topic_max_message_bytes,  # our own check is the exact bound
            request_timeout_ms=int(config.request_timeout_s * 1000),
        )

    # -- send ---------------------------------------------------------------------------------------

    async def send(self, frames: Sequence[OutboundFrame]) -> None:
        if self._state is not _State.RUNNING:
            raise LocalError(f"transport of {self._node_id} is {self._state.value}")
        handed = 0
        try:
            async with asyncio.timeout(self.config.send_timeout_s):
                for frame in frames:
                    await self._send_one(frame.destination, frame.data)
                    handed += 1
        except TimeoutError:
            self.stats.fail("send_timeout", len(frames) - handed)
            self._retire_producer("send_timeout")

    async def _send_one(self, destination: NodeId, data: bytes) -> None:
        if len(data) > self.config.max_record_bytes:
            self.stats.fail("too_large")
            return
        topic = self._topic_of.get(destination)
        if topic is None:
            try:
                topic = self.layout.inbox_topic(destination)
            except ConfigError:
                self.stats.fail("unknown_destination")
                return
            if len(self._topic_of) >= MAX_REMEMBERED_DESTINATIONS:
                self._topic_of.clear()
            self._topic_of[destination] = topic
        producer = self._producer
        if producer is None:
            self.stats.fail("producer_unavailable")
            return
        if topic in self._parked or topic not in self._ready_topics:
            self._park(topic, data)
            return
        await self._hand(producer, topic, data)

    async def _hand(self, producer: Any, topic: str, data: bytes) -> None:
        size = len(data)
        config = self.config
        if (
            self._in_flight_records >= config.max_in_flight_records
            or self._in_flight_bytes + size > config.max_in_flight_bytes
        ):
            self.stats.fail("backpressure")
            return
        try:
            future = await producer.send(topic, data, partition=0)
        except MessageSizeTooLargeError:
            self.stats.fail("too_large")
            return
        except KafkaError as error:
            # The producer refuses records: it is closed or failed fatally (e.g. out-of-order sequence
            # after the broker lost data). Replace it.
            self.stats.fail("broker_error")
            self._retire_producer(f"producer refused a record: {error!r}")
            return
        generation = self._generation
        self._in_flight_records += 1
        self._in_flight_bytes += size
        assert self._loop is not None
        self._pending.append((self._loop.time(), generation, future))
        future.add_done_callback(functools.partial(self._delivered, generation, size))

    def _delivered(self, generation: int, size: int, future: asyncio.Future[Any]) -> None:
        if generation != self._generation:
            return  # its producer was retired and this record already counted as lost
        self._in_flight_records -= 1
        self._in_flight_bytes -= size
        stats = self.stats
        if future.cancelled():
            stats.fail("broker_error")
            return
        error = future.exception()
        if error is None:
            stats.records_sent += 1
            stats.bytes_sent += size
        elif isinstance(error, MessageSizeTooLargeError):
            stats.fail("too_large")
        elif isinstance(error, KafkaTimeoutError):
            stats.fail("delivery_timeout")
        else:
            stats.fail("broker_error")

    def _park(self, topic: str, data: bytes) -> None:
        assert self._loop is not None
        until = self._unknown_until.get(topic)
        if until is not None:
            if self._loop.time() < until:
                self.stats.fail("unknown_destination")
                return
            del self._unknown_until[topic]
        parked = self._parked.get(topic)
        if parked is None:
            if len(self._lookups) >= _MAX_LOOKUPS:
                self.stats.fail("unknown_destination")
                return
            parked = self._parked[topic] = deque()
            self._lookups[topic] = self._spawn(self._look_up(topic, self._generation), f"lookup {topic}")
        if len(parked) >= self.config.max_parked_frames:
            self.stats.fail("parked_overflow")
            return
        parked.append(data)

    async def _look_up(self, topic: str, generation: int) -> None:
        """Fetch a destination's metadata off the node's path, then send what waited for it, in order."""
        try:
            await self._look_up_and_flush(topic, generation)
        finally:
            if self._lookups.get(topic) is asyncio.current_task():
                del self._lookups[topic]

    async def _look_up_and_flush(self, topic: str, generation: int) -> None:
        producer = self._producer
        found = False
        if producer is not None:
            try:
                async with asyncio.timeout(self.config.lookup_timeout_s):
                    partitions = await producer.partitions_for(topic)
                found = 0 in (partitions or ())
            except (TimeoutError, KafkaError) as error:
                log.debug("%s: no metadata for %s: %r", self._node_id, topic, error)
        if generation != self._generation:
            return  # the producer was retired meanwhile; what was parked was counted then
        parked = self._parked.get(topic)
        if parked is None:
            return
        if not found:
            del self._parked[topic]
            self.stats.fail("unknown_destination", len(parked))
            assert self._loop is not None
            if len(self._unknown_until) >= MAX_REMEMBERED_DESTINATIONS:
                self._unknown_until.clear()
            self._unknown_until[topic] = self._loop.time() + self.config.unknown_destination_retry_s
            log.warning("%s: destination topic %s not found; dropping frames to it", self._node_id, topic)
            return
        self._ready_topics.add(topic)
        while parked:
            data = parked.popleft()
            try:
                async with asyncio.timeout(self.config.send_timeout_s):
                    await self._hand(producer, topic, data)
            except TimeoutError:
                self.stats.fail("send_timeout")
                self._retire_producer("send_timeout")
            if generation != self._generation:
                return
        # No await since `parked` was found empty: frames sent meanwhile were queued behind, in order.
        del self._parked[topic]

    # -- the producer's health ----------------------------------------------------------------------

    async def _watch_deliveries(self) -> None:
        """Retire the producer when a record waits for its acknowledgement longer than the bound."""
        timeout_s = self.config.delivery_timeout_s
        period_s = min(1.0, timeout_s / 4)
        pending = self._pending
        assert self._loop is not None
        loop = self._loop
        while True:
            await asyncio.sleep(period_s)
            generation = self._generation
            while pending and (pending[0][2].done() or pending[0][1] != generation):
                pending.popleft()
            if pending and loop.time() - pending[0][0] > timeout_s:
                self._retire_producer(f"a record waited over {timeout_s} s for the broker")

    def _retire_producer(self, reason: str) -> None:
        """Stop using the producer at once; count what it had in flight as lost; connect a new one in
        the background (sends meanwhile fail as `producer_unavailable`)."""
        old = self._producer
        if old is None or self._state is not _State.RUNNING:
            return
        log.warning("%s: replacing the Kafka producer: %s", self._node_id, reason)
        self._producer = None
        self._generation += 1
        stats = self.stats
        stats.producer_restarts += 1
        if self._in_flight_records:
            stats.fail("delivery_timeout", self._in_flight_records)
        self._in_flight_records = 0
        self._in_flight_bytes = 0
        self._pending.clear()
        self._ready_topics.clear()
        for parked in self._parked.values():
            stats.fail("producer_unavailable", len(parked))
        self._parked.clear()
        self._replacing = self._spawn(self._replace_producer(old), "replace producer")

    async def _replace_producer(self, old: Any) -> None:
        await self._abandon(old)
        backoff_s = 0.05
        while True:
            producer = self._make_producer()
            try:
                async with asyncio.timeout(self.config.request_timeout_s):
                    await producer.start()
            except (TimeoutError, KafkaError, OSError) as error:
                log.info("%s: Kafka producer not connected yet: %r", self._node_id, error)
                await self._abandon(producer)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, _MAX_RECONNECT_BACKOFF_S)
                continue
            self._producer = producer
            log.info("%s: Kafka producer connected", self._node_id)
            return

    async def _abandon(self, producer: Any) -> None:
        """Let go of a producer that may be stuck. aiokafka's idempotent producer never expires a batch
        (aiokafka #1017), so `stop()`, which flushes, could wait forever: stop its sender task first (an
        in-flight request ends within the request timeout), then fail the batches nobody will send, then
        stop it, every step bounded. (Failing batches while the sender runs races its retries.)"""
        timeout_s = self.config.close_timeout_s
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            await close_quietly(sender.close(), timeout_s)
        accumulator = getattr(producer, "_message_accumulator", None)
        if accumulator is not None:
            with contextlib.suppress(Exception):
                accumulator.fail_all(KafkaTimeoutError("producer abandoned by dscore"))
        await close_quietly(producer.stop(), timeout_s)

    # -- receive / commit ---------------------------------------------------------------------------

    async def receive(self, max_batch: int) -> list[Delivery]:
        consumer = self._consumer
        if self._state is not _State.RUNNING or consumer is None:
            raise LocalError(f"transport of {self._node_id} is {self._state.value}")
        tp = self._tp
        channel = self.channel
        stats = self.stats
        while True:
            try:
                fetched = await consumer.getmany(tp, timeout_ms=_RECEIVE_POLL_MS, max_records=max_batch)
            except ConsumerStoppedError:
                raise LocalError(f"transport of {self._node_id} is closed") from None
            except KafkaError as error:
                # The client retries fetching by itself; count, pause, ask again.
                stats.receive_error(type(error).__name__)
                await asyncio.sleep(_RECEIVE_ERROR_BACKOFF_S)
                continue
            records = fetched.get(tp)
            if not records:
                continue
            deliveries = []
            received_bytes = 0
            for record in records:
                value = record.value
                if value is None:
                    stats.null_records_received += 1
                    value = b""
                received_bytes += len(value)
                deliveries.append(Delivery(value, channel, record.offset, record.timestamp))
            stats.records_received += len(deliveries)
            stats.bytes_received += received_bytes
            last = records[-1].offset
            if records[0].offset <= self._read_before:
                stats.redelivered += sum(1 for r in records if r.offset <= self._read_before)
            self._highest_read = max(self._highest_read, last)
            highwater = consumer.highwater(tp)
            if highwater is not None:
                stats.lag[channel] = max(0, highwater - records[-1].offset - 1)
            return deliveries

    async def commit(self, positions: Mapping[str, int]) -> None:
        position = positions.get(self.channel)
        if position is not None and (self._to_commit is None or position > self._to_commit):
            self._to_commit = position

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.commit_interval_s)
            try:
                async with asyncio.timeout(self.config.request_timeout_s):
                    await self._commit_now()
            except (TimeoutError, KafkaError) as error:
                self.stats.commit_failures += 1
                log.debug("%s: committing offsets failed: %r", self._node_id, error)

    async def _commit_now(self) -> None:
        position = self._to_commit
        consumer = self._consumer
        if position is None or consumer is None:
            return
        mark = (position, self._highest_read)
        if mark == self._committed:
            return
        # Kafka commits the next offset to read; the metadata records how far this endpoint has read
        await consumer.commit({self._tp: (position + 1, read_mark(self._highest_read))})
        self._committed = mark

    # -- helpers ------------------------------------------------------------------------------------

    def _spawn(self, work: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            work, name=f"dscore-kafka-{self._node_id}-{name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "%s: Kafka transport task %s failed",
                self._node_id,
                task.get_name(),
                exc_info=task.exception(),
            )

    @property
    def in_flight_records(self) -> int:
        return self._in_flight_records

    async def wait_delivered(self, timeout_s: float) -> bool:
        """Wait until every record handed to the producer is acknowledged or failed (tests, benches,
        graceful hand-off). False if `timeout_s` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    if self._lookups:
                        await asyncio.wait(list(self._lookups.values()))
                        continue
                    pending = [f for _, g, f in self._pending if g == self._generation and not f.done()]
                    if not pending:
                        break
                    await asyncio.wait(pending)
        except TimeoutError:
            return False
        return True
