"""The Kafka transport on librdkafka (confluent-kafka): same contract and layout as `AioKafkaTransport`
(see `dscore.transport.kafka` for the contract), less Python per record.

How it sits on asyncio:

- Producing never blocks: `produce()` only queues in librdkafka, which batches, sends, retries and times out
  (`message.timeout.ms` = `delivery_timeout_s`, honoured by its idempotent producer) on its own threads.
  Delivery reports are served by `poll(0)` on the event loop thread: after every `send`, and every
  `_POLL_INTERVAL_S` while records are in flight. The in-flight bound is librdkafka's queue
  (`queue.buffering.max.messages` / `.kbytes`): a full queue drops the frame (`backpressure`).
- Consuming runs on one thread of its own (librdkafka's `poll` blocks): it hands batches to the loop with
  `call_soon_threadsafe`, stops fetching while `max_buffered_records` wait for the runtime, and is the
  only thread that touches the consumer after start (also for commits, which are asynchronous hints).
- A fatal producer error (librdkafka's idempotence state machine gave up) replaces the producer.
- Neither client is trusted forever (`dscore.transport.stall`): a producer that holds records and serves
  no delivery report for longer than its own timeouts allow is replaced, its records counted as
  `delivery_timeout`; a consumer that fetches nothing while the broker says its inbox holds unread
  records is rebuilt at the position it had handed over (nothing is skipped: the runtime dedups).

Ordering: librdkafka's idempotent producer keeps order with up to 5 requests in flight per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from dscore.core.errors import ConfigError, LocalError
from dscore.core.ids import NodeId
from dscore.transport.base import Delivery, OutboundFrame
from dscore.transport.kafka_common import (
    MAX_REMEMBERED_DESTINATIONS,
    check_resume_after,
    read_mark,
    resume_offset,
)
from dscore.transport.kafka_config import KafkaTransportConfig
from dscore.transport.kafka_layout import (
    KafkaLayout,
    KafkaUnavailableError,
    committed_read_mark,
    ensure_topics,
)
from dscore.transport.kafka_stats import KafkaTransportStats
from dscore.transport.stall import ProgressWatch

log = logging.getLogger(__name__)

#: how often delivery reports are served while records are in flight
_POLL_INTERVAL_S = 0.01
#: how long the consumer thread blocks in one poll (it also checks for stop and commits this often)
_CONSUMER_POLL_S = 0.1
#: records fetched and not yet handed to the runtime; the consumer thread pauses above it
MAX_BUFFERED_RECORDS = 10_000
#: how often the consumer thread checks that it is not stuck (it asks the broker only when it handed
#: nothing over since the last check)
_STALL_CHECK_INTERVAL_S = 1.0

_DELIVERY_FAILURES = {
    KafkaError._MSG_TIMED_OUT: "delivery_timeout",
    KafkaError.MSG_SIZE_TOO_LARGE: "too_large",
    KafkaError._UNKNOWN_TOPIC: "unknown_destination",
    KafkaError.UNKNOWN_TOPIC_OR_PART: "unknown_destination",
    KafkaError._QUEUE_FULL: "backpressure",
}


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


class ConfluentKafkaTransport:
    """One endpoint on Kafka through confluent-kafka (the `Transport` protocol)."""

    def __init__(self, config: KafkaTransportConfig, endpoint: NodeId) -> None:
        self.config = config
        self.layout = KafkaLayout(config.cluster_id)
        self._node_id = endpoint
        self.topic = self.layout.inbox_topic(endpoint)
        self.channel = self.layout.channel(self.topic)
        self.stats = KafkaTransportStats()
        self._state = _State.NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: Any = None
        self._producer_failed = False
        self._consumer: Any = None
        self._topic_of: dict[NodeId, str] = {}
        # consumer thread -> loop hand-off; `_pushed` is written by the thread only, `_taken` by the loop
        self._buffer: deque[Delivery] = deque()
        self._pushed = 0
        self._taken = 0
        self._arrival = asyncio.Event()
        self._space = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._to_commit: int | None = None
        #: (position, read mark) of the last commit handed to the client (consumer thread only)
        self._committed: tuple[int, int] | None = None
        #: the highest offset handed to the runtime (written by the loop, read by the consumer thread),
        #: in this run or (from the last commit) before it
        self._highest_read = -1
        #: records at or below this offset were read before this start: delivering one is a redelivery
        self._read_before = -1
        #: the next offset to hand over (consumer thread only): a rebuilt consumer starts there
        self._next_offset = 0
        #: the offset after the last record the node took (`receive`): the lag counts from here
        self._next_to_take = 0
        #: delivery reports served for the live producer (the producer watch's progress count)
        self._reports = 0
        self._work = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        #: the live producer's generation: reports and errors of any other producer (replaced, purged,
        #: flushed away at close, possibly on another thread) are not counted
        self._generation = 0
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    # -- start / close ------------------------------------------------------------------------------

    async def start(self, resume_after: Mapping[str, int]) -> Mapping[str, int]:
        if self._state is not _State.NEW:
            raise LocalError(f"transport of {self._node_id} was already started")
        stored = check_resume_after(self.channel, resume_after, self._node_id)
        loop = asyncio.get_running_loop()
        self._loop = loop
        config = self.config
        await ensure_topics(config, [self._node_id], create=config.create_own_inbox)
        read_before = await committed_read_mark(config, self._node_id)
        if read_before is not None:
            self._read_before = self._highest_read = read_before
        consumer = Consumer(self._consumer_config())
        self._consumer = consumer
        try:
            async with asyncio.timeout(config.start_timeout_s):
                begin, end = await self._watermarks(consumer)
        except (TimeoutError, KafkaException) as error:
            await asyncio.to_thread(consumer.close)
            self._consumer = None
            self._state = _State.CLOSED
            raise KafkaUnavailableError(
                f"{self._node_id}: Kafka at {config.bootstrap_servers} unavailable at start: {error!r}"
            ) from error
        first, expired = resume_offset(stored, begin, end, config.start_without_position)
        if expired:
            log.warning("%s: retention deleted %d unread records of %s", self._node_id, expired, self.topic)
        self.stats.records_expired_unread += expired
        consumer.assign([TopicPartition(self.topic, 0, first)])
        self._next_offset = self._next_to_take = first
        self._producer = self._new_producer()
        self._state = _State.RUNNING
        self._thread = threading.Thread(
            target=self._consume_forever, name=f"dscore-kafka-{self._node_id}-consumer", daemon=True
        )
        self._thread.start()
        self._poller = loop.create_task(self._serve_reports(), name=f"dscore-kafka-{self._node_id}-reports")
        return {self.channel: end}

    async def _watermarks(self, consumer: Any) -> tuple[int, int]:
        """The inbox's first retained and next offsets; asks again until the broker answers."""
        tp = TopicPartition(self.topic, 0)
        timeout_s = self.config.request_timeout_s
        while True:
            try:
                low, high = await asyncio.to_thread(consumer.get_watermark_offsets, tp, timeout_s)
                return int(low), int(high)
            except KafkaException as error:
                log.info("%s: inbox offsets not available yet: %r", self._node_id, error)

    async def close(self) -> None:
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        timeout_s = self.config.close_timeout_s
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        self._stopping.set()
        self._space.set()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, timeout_s)
        # read after the join: the thread may have rebuilt its consumer
        consumer, self._consumer = self._consumer, None
        if consumer is not None and (thread is None or not thread.is_alive()):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout_s):
                    await asyncio.to_thread(consumer.close)
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._let_go(producer, flush_s=timeout_s)
        self._arrival.set()  # a receive() still waiting sees the transport closed

    async def _let_go(self, producer: Any, flush_s: float) -> None:
        """Flush what the producer holds (bounded), drop the rest, close it."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(flush_s + 1):
                # delivery reports served here run on the worker thread: count nothing from them
                self._generation += 1
                remaining = await asyncio.to_thread(producer.flush, flush_s)
                if remaining:
                    producer.purge()
                    producer.flush(0)
                producer.close()

    def _consumer_config(self) -> dict[str, Any]:
        config = self.config
        return {
            "bootstrap.servers": config.bootstrap_servers,
            "client.id": f"dscore-{config.cluster_id}-{self._node_id}-in",
            "group.id": self.layout.group_id(self._node_id),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "fetch.wait.max.ms": config.fetch_max_wait_ms,
            "fetch.min.bytes": 1,
            "fetch.message.max.bytes": config.max_partition_fetch_bytes,
            # librdkafka prefetches up to 64 MiB per partition by default: bound it
            "queued.max.messages.kbytes": max(1024, 4 * config.max_partition_fetch_bytes // 1024),
            # after the prefetch queue crossed its bound, the next fetch waits this long (default 1 s,
            # which stalled a backlog for a second once the runtime had drained it)
            "fetch.queue.backoff.ms": 10,
            # after a failed fetch the next one waits this long (default 500 ms). A fetch in flight while
            # the process (or the broker) was paused past `socket.timeout.ms` fails as it resumes; 500 ms
            # without fetching is longer than a follower's 300-600 ms election timeout (STACK_ENV)
            "fetch.error.backoff.ms": 20,
            "check.crcs": True,
            "socket.nagle.disable": True,
            "socket.timeout.ms": int(config.request_timeout_s * 1000),
            "error_cb": self._consumer_error,
            "on_commit": self._committed_cb,
            "logger": log,
        }

    def _new_producer(self) -> Any:
        """A producer whose reports count from now on (the previous one's no longer do)."""
        self._generation += 1
        return Producer(self._producer_config(self._generation))

    def _producer_config(self, generation: int) -> dict[str, Any]:
        config = self.config
        return {
            "bootstrap.servers": config.bootstrap_servers,
            "client.id": f"dscore-{config.cluster_id}-{self._node_id}-out",
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": config.linger_ms,
            "message.max.bytes": config.topic_max_message_bytes,  # our own check is the exact bound
            "message.timeout.ms": int(config.delivery_timeout_s * 1000),
            "request.timeout.ms": int(config.request_timeout_s * 1000),
            "queue.buffering.max.messages": config.max_in_flight_records,
            "queue.buffering.max.kbytes": max(1, config.max_in_flight_bytes // 1024),
            "topic.metadata.propagation.max.ms": int(config.lookup_timeout_s * 1000),
            "socket.nagle.disable": True,
            "on_delivery": self._delivery_reporter(generation),
            "error_cb": self._producer_error_reporter(generation),
            "logger": log,
        }

    # -- send ---------------------------------------------------------------------------------------

    async def send(self, frames: Sequence[OutboundFrame]) -> None:
        if self._state is not _State.RUNNING:
            raise LocalError(f"transport of {self._node_id} is {self._state.value}")
        if self._producer_failed:
            self._replace_producer()
        producer = self._producer
        stats = self.stats
        limit = self.config.max_record_bytes
        topic_of = self._topic_of
        for frame in frames:
            data = frame.data
            if len(data) > limit:
                stats.fail("too_large")
                continue
            topic = topic_of.get(frame.destination)
            if topic is None:
                try:
                    topic = self.layout.inbox_topic(frame.destination)
                except ConfigError:
                    stats.fail("unknown_destination")
                    continue
                if len(topic_of) >= MAX_REMEMBERED_DESTINATIONS:
                    topic_of.clear()
                topic_of[frame.destination] = topic
            try:
                producer.produce(topic, data, partition=0)
            except BufferError:
                stats.fail("backpressure")
            except KafkaException as error:
                stats.fail(_DELIVERY_FAILURES.get(error.args[0].code(), "broker_error"))
        producer.poll(0)
        if not self._work.is_set():
            self._work.set()

    def _delivery_reporter(self, generation: int) -> Callable[[KafkaError | None, Message], None]:
        """The delivery callback of the producer of `generation`: it counts only while that producer is
        the live one (a replaced producer's records were already counted lost when it was replaced)."""
        stats = self.stats

        def delivered(error: KafkaError | None, message: Message) -> None:
            if generation != self._generation:
                return
            self._reports += 1
            if error is None:
                stats.records_sent += 1
                stats.bytes_sent += len(message)
            else:
                stats.fail(_DELIVERY_FAILURES.get(error.code(), "broker_error"))

        return delivered

    def _producer_error_reporter(self, generation: int) -> Callable[[KafkaError], None]:
        def producer_error(error: KafkaError) -> None:
            if error.fatal() and generation == self._generation:
                log.error("%s: Kafka producer failed fatally: %s", self._node_id, error)
                self._producer_failed = True
            else:
                log.debug("%s: Kafka producer: %s", self._node_id, error)

        return producer_error

    def _replace_producer(self, lost_as: str = "broker_error") -> None:
        """A new producer; what the old one held is counted as lost (`lost_as`) and purged."""
        old = self._producer
        self._producer_failed = False
        self.stats.producer_restarts += 1
        self._producer = self._new_producer()
        if old is not None:
            in_flight = len(old)
            if in_flight:
                self.stats.fail(lost_as, in_flight)
            with contextlib.suppress(Exception):
                old.purge(blocking=False)
                old.poll(0)
            assert self._loop is not None
            closing = self._loop.create_task(self._close_producer(old))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def _close_producer(self, producer: Any) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.config.close_timeout_s):
                await asyncio.to_thread(producer.close)

    async def _serve_reports(self) -> None:
        """Serve delivery reports while records are in flight; sleep on `_work` otherwise. Replace a
        producer that holds records and reported nothing for longer than librdkafka's own bounds
        (`message.timeout.ms`, plus one request timeout for a record in flight, plus its 1 s scan)."""
        work = self._work
        config = self.config
        watch = ProgressWatch(config.delivery_timeout_s + config.request_timeout_s + 1.0)
        while True:
            producer = self._producer
            if producer is None:
                return
            producer.poll(0)
            if self._producer_failed:
                self._replace_producer()
                watch.forget()
            elif watch.stalled(time.monotonic(), self._reports, owed=len(producer) > 0):
                log.warning(
                    "%s: the Kafka producer held %d records and reported nothing for %.1f s: replacing it",
                    self._node_id,
                    len(producer),
                    watch.bound_s,
                )
                self._replace_producer(lost_as="delivery_timeout")
                watch.forget()
            if len(self._producer):
                await asyncio.sleep(_POLL_INTERVAL_S)
            else:
                watch.forget()
                work.clear()
                await work.wait()

    @property
    def in_flight_records(self) -> int:
        producer = self._producer
        return len(producer) if producer is not None else 0

    async def wait_delivered(self, timeout_s: float) -> bool:
        """Wait until librdkafka holds no record (acknowledged or failed). False if `timeout_s` passed.
        librdkafka signals nothing to asyncio, so this serves reports every `_POLL_INTERVAL_S`."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    producer = self._producer
                    if producer is None:
                        return True
                    producer.poll(0)
                    if not len(producer):
                        return True
                    await asyncio.sleep(_POLL_INTERVAL_S)
        except TimeoutError:
            return False

    # -- receive / commit ---------------------------------------------------------------------------

    async def receive(self, max_batch: int) -> list[Delivery]:
        buffer = self._buffer
        while not buffer:
            if self._state is not _State.RUNNING:
                raise LocalError(f"transport of {self._node_id} is {self._state.value}")
            self._arrival.clear()
            await self._arrival.wait()
        count = min(max_batch, len(buffer))
        batch = [buffer.popleft() for _ in range(count)]
        self._taken += count
        stats = self.stats
        stats.records_received += count
        stats.bytes_received += sum(len(d.data) for d in batch)
        if batch[0].offset <= self._read_before:
            stats.redelivered += sum(1 for d in batch if d.offset <= self._read_before)
        last = batch[-1].offset
        self._next_to_take = last + 1
        self._highest_read = max(self._highest_read, last)
        if self._pushed - self._taken < MAX_BUFFERED_RECORDS // 2:
            self._space.set()
        return batch

    def _arrived(self, batch: list[Delivery]) -> None:
        self._buffer.extend(batch)
        self._arrival.set()

    async def commit(self, positions: Mapping[str, int]) -> None:
        position = positions.get(self.channel)
        if position is not None and (self._to_commit is None or position > self._to_commit):
            self._to_commit = position

    def _consume_forever(self) -> None:
        """The consumer thread: fetch, hand over, commit now and then; the only user of the consumer."""
        consumer = self._consumer
        loop = self._loop
        assert consumer is not None and loop is not None
        channel = self.channel
        stats = self.stats
        stopping = self._stopping
        space = self._space
        next_commit = time.monotonic() + self.config.commit_interval_s
        watch = ProgressWatch(2 * self.config.request_timeout_s + 1.0)
        next_check = time.monotonic() + _STALL_CHECK_INTERVAL_S
        pushed_at_check = self._pushed
        try:
            while not stopping.is_set():
                room = MAX_BUFFERED_RECORDS - (self._pushed - self._taken)
                if room <= 0:
                    watch.forget()  # paused by us, not stuck
                    space.clear()
                    if MAX_BUFFERED_RECORDS - (self._pushed - self._taken) <= 0:
                        space.wait(_CONSUMER_POLL_S)
                    now = time.monotonic()
                    if now >= next_check:  # the node takes nothing: keep its lag true while it does not
                        next_check = now + _STALL_CHECK_INTERVAL_S
                        self._broker_end(consumer)
                    continue
                first = consumer.poll(_CONSUMER_POLL_S)
                if first is not None:
                    messages = [first]
                    if room > 1:
                        messages.extend(consumer.consume(room - 1, 0))
                    deliveries = []
                    last_offset = -1
                    for message in messages:
                        error = message.error()
                        if error is not None:
                            stats.receive_error(error.name())
                            continue
                        value = message.value()
                        if value is None:
                            stats.null_records_received += 1
                            value = b""
                        last_offset = message.offset() or 0
                        kind, sent_at_ms = message.timestamp()
                        deliveries.append(
                            Delivery(
                                value,
                                channel,
                                last_offset,
                                sent_at_ms if kind != TIMESTAMP_NOT_AVAILABLE else None,
                            )
                        )
                    if deliveries:
                        self._pushed += len(deliveries)
                        self._next_offset = last_offset + 1
                        loop.call_soon_threadsafe(self._arrived, deliveries)
                        with contextlib.suppress(KafkaException):
                            _, high = consumer.get_watermark_offsets(
                                TopicPartition(self.topic, 0), cached=True
                            )
                            if high >= 0:
                                stats.lag[channel] = max(0, high - self._next_to_take)
                now = time.monotonic()
                if now >= next_commit:
                    next_commit = now + self.config.commit_interval_s
                    self._commit_from_thread(consumer, asynchronous=True)
                if now >= next_check:
                    next_check = now + _STALL_CHECK_INTERVAL_S
                    # the broker is asked only when nothing was handed over since the last check
                    pushed = self._pushed
                    owed = pushed != pushed_at_check or self._has_unfetched(consumer)
                    pushed_at_check = pushed
                    if watch.stalled(now, pushed, owed):
                        consumer = self._rebuild_consumer(consumer, watch.bound_s)
                        watch.forget()
            self._commit_from_thread(consumer, asynchronous=False)
        except RuntimeError:
            pass  # the event loop closed under us: nothing left to hand over to
        except BaseException as error:  # pragma: no cover - a bug; make it visible
            self._thread_error = error
            log.exception("%s: Kafka consumer thread failed", self._node_id)

    def _has_unfetched(self, consumer: Any) -> bool:
        """Whether the inbox holds records past the next one to hand over, as the broker says now (not
        from the last fetch). A broker that does not answer owes nothing: a consumer cannot be told
        stuck while the broker itself is away."""
        high = self._broker_end(consumer)
        return high is not None and high > self._next_offset

    def _broker_end(self, consumer: Any) -> int | None:
        """The inbox's end offset as the broker says now, None if it does not answer. It also sets the
        lag: a fetch sets it only when records come, so a node that stopped taking them (wedged, or its
        buffer full) or a consumer that stopped fetching would otherwise show its last lag for ever."""
        try:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, 0), timeout=min(self.config.request_timeout_s, 1.0), cached=False
            )
        except KafkaException:
            return None
        end = int(high)
        if end >= 0:
            self.stats.lag[self.channel] = max(0, end - self._next_to_take)
        return end

    def _rebuild_consumer(self, stuck: Any, stalled_s: float) -> Any:
        """A new consumer at the next offset to hand over; the stuck one is closed on a thread of its
        own (closing it may block as long as it is stuck)."""
        position = self._next_offset
        log.warning(
            "%s: the Kafka consumer fetched nothing for %.1f s while %s holds records from offset %d: "
            "rebuilding it there",
            self._node_id,
            stalled_s,
            self.topic,
            position,
        )
        self.stats.consumer_restarts += 1
        threading.Thread(
            target=_close_quietly, args=(stuck,), name=f"dscore-kafka-{self._node_id}-close", daemon=True
        ).start()
        consumer = Consumer(self._consumer_config())
        consumer.assign([TopicPartition(self.topic, 0, position)])
        self._consumer = consumer
        return consumer

    def _commit_from_thread(self, consumer: Any, asynchronous: bool) -> None:
        position = self._to_commit
        if position is None:
            return
        mark = (position, self._highest_read)
        if mark == self._committed:
            return
        # Kafka commits the next offset to read; the metadata records how far this endpoint has read
        offsets = [TopicPartition(self.topic, 0, position + 1, metadata=read_mark(mark[1]))]
        try:
            consumer.commit(offsets=offsets, asynchronous=asynchronous)
            self._committed = mark
        except KafkaException as error:
            self.stats.commit_failures += 1
            log.debug("%s: committing offsets failed: %r", self._node_id, error)

    def _committed_cb(self, error: KafkaError | None, partitions: Any) -> None:
        if error is not None:
            self.stats.commit_failures += 1

    def _consumer_error(self, error: KafkaError) -> None:
        self.stats.receive_error(error.name())
        log.debug("%s: Kafka consumer: %s", self._node_id, error)


def _close_quietly(client: Any) -> None:
    with contextlib.suppress(Exception):
        client.close()
