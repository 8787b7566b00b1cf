"""Broker outages: the transport never blocks its node and recovers by itself.

These tests run a broker of their own (`kafka_broker`, needs DSCORE_TEST_KAFKA_LIBS) so they can freeze it
(SIGSTOP: connections stay open and nothing answers, the case that hangs aiokafka's idempotent producer,
aiokafka #1017) and stop and start it (a clean broker restart).

A node here is the test's loop: it sends one frame per 10 ms tick, as a Raft leader sends heartbeats, and
every send must return within the send bound, whatever the broker does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kafka_broker import BrokerProcess
from kafka_helpers import CLIENTS, Endpoints, frames, get_through, receive_n, tick_until, ticks_until

from dscore.transport.kafka_config import KafkaClient, KafkaTransportConfig
from dscore.transport.kafka_layout import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture(params=CLIENTS, ids=lambda c: c.value)
def client(request: pytest.FixtureRequest) -> KafkaClient:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def endpoints(
    kafka_broker: BrokerProcess, namespace: str, client: KafkaClient
) -> AsyncIterator[Endpoints]:
    config = KafkaTransportConfig(
        bootstrap_servers=kafka_broker.bootstrap,
        cluster_id=namespace,
        client=client,
        send_timeout_s=0.5,
        delivery_timeout_s=2.0,
        request_timeout_s=1.0,
        close_timeout_s=2.0,
        start_timeout_s=60.0,
    )
    opened = Endpoints(config)
    yield opened
    await opened.close_all()


async def test_sends_stay_bounded_while_the_broker_is_frozen(
    kafka_broker: BrokerProcess, endpoints: Endpoints
) -> None:
    await ensure_topics(endpoints.config, ["a", "b"])
    a = await endpoints.open("a")
    b = await endpoints.open("b")
    await a.send(frames("b", [b"before"]))
    assert [d.data for d in await receive_n(b, 1)] == [b"before"]

    kafka_broker.freeze()
    try:
        # One record, then silence: it must not stay in flight forever (aiokafka #1017's hang).
        await a.send(frames("b", [b"stuck"]))
        # Counted as lost, whichever bound ends it first: the acknowledgement overdue (`delivery_timeout`),
        # handing it over outlasting the send bound, or the client giving up on the request itself
        # (aiokafka reports a frozen broker as RequestTimedOutError on a loaded machine: `broker_error`).
        try:
            await ticks_until(lambda: a.stats.send_failures_total > 0)
        except TimeoutError:
            in_flight = getattr(a, "in_flight_records", getattr(a, "_in_flight_records", None))
            pytest.fail(f"no send failure 60 s into the freeze: {a.stats}, {in_flight} in flight")
        # A node that keeps sending every tick is never blocked longer than the send bound.
        failures_before = a.stats.send_failures_total
        ticks = await tick_until(
            a, "b", lambda: a.stats.send_failures_total >= failures_before + 100, b"during "
        )
    finally:
        kafka_broker.thaw()
    assert ticks > 0

    await get_through(a, b, "b", b"after ")
    # and the other way round: b's producer was idle during the outage
    await get_through(b, a, "a", b"back ")


async def test_a_broker_restart_loses_no_acknowledged_record(
    kafka_broker: BrokerProcess, endpoints: Endpoints
) -> None:
    await ensure_topics(endpoints.config, ["a", "b"])
    a = await endpoints.open("a")
    b = await endpoints.open("b")
    acknowledged = [f"acked {i}".encode() for i in range(100)]
    await a.send(frames("b", acknowledged))
    assert await a.wait_delivered(30)
    assert a.stats.records_sent == len(acknowledged)

    kafka_broker.stop()
    try:
        await tick_until(
            a,
            "b",
            lambda: (
                a.stats.send_failures["delivery_timeout"] + a.stats.send_failures["producer_unavailable"] > 0
            ),
            b"down ",
        )
    finally:
        kafka_broker.start()

    # b reads everything acknowledged before the restart, in order, then what came after it
    got = await receive_n(b, len(acknowledged))
    assert [d.data for d in got] == acknowledged
    await get_through(a, b, "b", b"after ")
    # a endpoint started after the restart works too
    c = await endpoints.open("c")
    await get_through(c, a, "a", b"from c ")
