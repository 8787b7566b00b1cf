"""The confluent-kafka transport replaces a client that is stuck (`dscore.transport.stall`), against a
real broker.

A stuck librdkafka client cannot be produced on demand (the two cases seen here took a frozen broker or a
broker restart and then happened rarely), so these tests make one: a real client, connected to the real
broker, that stops handing over what it has. The producer keeps its delivery reports to itself; the
consumer keeps fetching and hands nothing over. Everything else (the broker, the records, the offsets,
the replacement clients) is real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from kafka_helpers import Endpoints, frames, get_through, receive_n, ticks_until

from dscore.transport import kafka_confluent
from dscore.transport.kafka_config import KafkaClient, KafkaTransportConfig
from dscore.transport.kafka_layout import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class _ReportsNothing(Producer):  # type: ignore[misc]
    """Sends records (the broker acknowledges them) and never serves a delivery report."""

    def poll(self, timeout: float | None = None) -> int:
        return 0


class _HandsOverOnce(Consumer):  # type: ignore[misc]
    """Hands over its first batch, then keeps fetching and hands over nothing."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.handed_over = False

    def poll(self, timeout: float | None = None) -> Any:
        message = super().poll(timeout) if timeout is not None else super().poll()
        if self.handed_over:
            return None
        self.handed_over = message is not None
        return message

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        messages = super().consume(num_messages, timeout)
        return [] if self.handed_over else messages


def _first_of(endpoint_suffix: str, stuck: type, real: type) -> Any:
    """A client factory: the first client whose client.id ends with `endpoint_suffix` is `stuck`."""
    made: list[str] = []

    def make(config: dict[str, Any]) -> Any:
        if config["client.id"].endswith(endpoint_suffix) and not made:
            made.append(config["client.id"])
            return stuck(config)
        return real(config)

    return make


@pytest.fixture
async def endpoints(kafka_bootstrap: str, namespace: str) -> AsyncIterator[Endpoints]:
    config = KafkaTransportConfig(
        bootstrap_servers=kafka_bootstrap,
        cluster_id=namespace,
        client=KafkaClient.CONFLUENT,
        delivery_timeout_s=2.0,
        request_timeout_s=1.0,
    )
    opened = Endpoints(config)
    yield opened
    await opened.close_all()


async def test_a_producer_that_reports_nothing_is_replaced_and_its_records_counted_lost(
    endpoints: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_confluent, "Producer", _first_of("-a-out", _ReportsNothing, Producer))
    await ensure_topics(endpoints.config, ["a", "b"])
    a = await endpoints.open("a")
    b = await endpoints.open("b")
    await a.send(frames("b", [b"unreported"]))
    # the broker has it (b reads it), yet a's producer never says so: a counts it lost and moves on
    assert [d.data for d in await receive_n(b, 1)] == [b"unreported"]
    await ticks_until(lambda: a.stats.producer_restarts > 0, limit_s=30)
    # at least the record (librdkafka's queue length also counts events it has not served, such as logs)
    assert a.stats.send_failures["delivery_timeout"] >= 1
    # once the replaced producer is closed (closing serves its reports), its record is still not
    # counted as sent: it was counted lost
    await ticks_until(lambda: not a._closing, limit_s=30)
    assert a.stats.records_sent == 0
    await get_through(a, b, "b", b"after ")
    assert await a.wait_delivered(30)  # b may read a record before a's producer reports it
    assert a.stats.records_sent > 0
    assert a.stats.producer_restarts == 1


async def test_a_consumer_that_hands_over_nothing_is_rebuilt_where_it_stopped(
    endpoints: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_confluent, "Consumer", _first_of("-b-in", _HandsOverOnce, Consumer))
    await ensure_topics(endpoints.config, ["a", "b"])
    a = await endpoints.open("a")
    b = await endpoints.open("b")
    await a.send(frames("b", [b"first"]))
    assert [d.data for d in await receive_n(b, 1)] == [b"first"]
    # what follows is fetched by the stuck consumer and dropped; the rebuilt one reads it all, in order
    later = [f"later {i}".encode() for i in range(50)]
    await a.send(frames("b", later))
    got = await receive_n(b, len(later), timeout_s=60)
    assert [d.data for d in got] == later
    assert b.stats.consumer_restarts == 1
    assert a.stats.consumer_restarts == 0


@pytest.mark.parametrize("buffered", [10_000, 10], ids=["room-to-buffer", "buffer-full"])
async def test_the_lag_counts_what_the_node_has_not_taken_while_it_takes_nothing(
    endpoints: Endpoints, monkeypatch: pytest.MonkeyPatch, buffered: int
) -> None:
    # A wedged node takes nothing: its consumer fetches into the buffer until the buffer is full, then
    # pauses. The lag must show every record the node has not taken, in both cases (it used to count
    # from the last fetch only, so a wedged node showed a lag of 0).
    monkeypatch.setattr(kafka_confluent, "MAX_BUFFERED_RECORDS", buffered)
    await ensure_topics(endpoints.config, ["a", "b"])
    a = await endpoints.open("a")
    b = await endpoints.open("b")
    await a.send(frames("b", [f"record {i}".encode() for i in range(30)]))
    await ticks_until(lambda: b.stats.lag.get(b.channel) == 30, limit_s=30)
    # more while the consumer may be paused (nothing fetched: the broker is asked)
    await a.send(frames("b", [f"record {i}".encode() for i in range(30, 50)]))
    await ticks_until(lambda: b.stats.lag.get(b.channel) == 50, limit_s=30)
    assert len(await receive_n(b, 50)) == 50
    await ticks_until(lambda: b.stats.lag.get(b.channel) == 0, limit_s=30)
