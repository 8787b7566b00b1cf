"""The Kafka transports against a real broker: order, resume, redelivery, hostile records, topics.

Run with a broker: `DSCORE_TEST_KAFKA_BOOTSTRAP=127.0.0.1:19092 make test` (see conftest.py). Every test
runs once per client (aiokafka, confluent-kafka), in its own cluster namespace.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from kafka_helpers import CLIENTS, Endpoints, config_fields, frames, get_through, receive_n, receive_until

from dscore.transport.base import OutboundFrame
from dscore.transport.kafka_common import parse_read_mark
from dscore.transport.kafka_config import KafkaClient, KafkaTransportConfig, StartWithoutPosition
from dscore.transport.kafka_layout import KafkaLayout, committed_read_mark, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(params=CLIENTS, ids=lambda c: c.value)
def client(request: pytest.FixtureRequest) -> KafkaClient:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def config(kafka_bootstrap: str, namespace: str, client: KafkaClient) -> KafkaTransportConfig:
    return KafkaTransportConfig(bootstrap_servers=kafka_bootstrap, cluster_id=namespace, client=client)


@pytest.fixture
async def endpoints(config: KafkaTransportConfig) -> AsyncIterator[Endpoints]:
    opened = Endpoints(config)
    yield opened
    await opened.close_all()


async def test_two_senders_keep_their_order(endpoints: Endpoints) -> None:
    await ensure_topics(endpoints.config, ["a", "b", "c"])
    a = await endpoints.open("a")
    b = await endpoints.open("b")
    c = await endpoints.open("c")
    per_sender = 300
    # Interleave the two senders' batches; each batch holds several frames for c.
    for start in range(0, per_sender, 30):
        await a.send(frames("c", [f"a:{i}".encode() for i in range(start, start + 30)]))
        await b.send(frames("c", [f"b:{i}".encode() for i in range(start, start + 30)]))
    got = await receive_n(c, 2 * per_sender)
    seen: dict[str, list[int]] = {"a": [], "b": []}
    offsets = [d.offset for d in got]
    layout = KafkaLayout(endpoints.config.cluster_id)
    assert {d.channel for d in got} == {layout.channel(layout.inbox_topic("c"))}
    for delivery in got:
        sender, seq = delivery.data.decode().split(":")
        seen[sender].append(int(seq))
    assert seen["a"] == list(range(per_sender))
    assert seen["b"] == list(range(per_sender))
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    # c answers a: a node can send to any endpoint, and a receives it
    await c.send([OutboundFrame("a", b"reply")])
    assert [d.data for d in await receive_n(a, 1)] == [b"reply"]
    assert a.stats.send_failures_total == 0 and b.stats.send_failures_total == 0
    assert await a.wait_delivered(10) and await b.wait_delivered(10)
    assert a.stats.records_sent == per_sender and b.stats.records_sent == per_sender
    assert c.stats.records_received == 2 * per_sender
    assert c.stats.bytes_received == sum(len(d.data) for d in got)


async def test_restart_resumes_exactly_after_the_stored_position(endpoints: Endpoints) -> None:
    await ensure_topics(endpoints.config, ["s", "r"])
    sender = await endpoints.open("s")
    receiver = await endpoints.open("r")
    await sender.send(frames("r", [f"m{i}".encode() for i in range(50)]))
    first = await receive_n(receiver, 50)
    stored = first[29]  # effects of m0..m29 are durable; m30.. are not
    await receiver.commit({stored.channel: first[-1].offset})  # Kafka's offsets run ahead: must not matter
    await receiver.close()

    again = await endpoints.open("r", {stored.channel: stored.offset})
    await sender.send(frames("r", [b"end"]))
    resumed = await receive_until(again, b"end")
    assert resumed[0].offset == stored.offset + 1
    assert [d.data for d in resumed] == [f"m{i}".encode() for i in range(30, 50)] + [b"end"]
    # m30..m49 were read before the restart (the close's commit recorded how far): 20 redeliveries;
    # "end" is read for the first time
    assert again.stats.redelivered == 20
    assert receiver.stats.redelivered == 0
    # `start` says where the inbox ended: m0..m49 lie below it (replays, to a node), "end" above it
    assert endpoints.replay_ends["r"] == {stored.channel: first[-1].offset + 1}
    assert resumed[-2].offset < first[-1].offset + 1 <= resumed[-1].offset


async def test_a_crash_counts_what_the_last_periodic_commit_saw_read(endpoints: Endpoints) -> None:
    """No clean close: the read mark comes from the periodic commit, so a crashed node counts too."""
    await ensure_topics(endpoints.config, ["s", "r"])
    sender = await endpoints.open("s")
    receiver = await endpoints.open("r", commit_interval_s=0.05)
    await sender.send(frames("r", [f"m{i}".encode() for i in range(40)]))
    got = await receive_n(receiver, 40)
    await receiver.commit({got[9].channel: got[9].offset})  # m0..m9 durable
    async with asyncio.timeout(30):  # the periodic commit carries the read mark to Kafka
        while await committed_read_mark(endpoints.config, "r") != got[-1].offset:
            await asyncio.sleep(0.05)
    # The process "dies" here: the next incarnation starts while the old one never closed.
    again = await endpoints.open("r", {got[9].channel: got[9].offset})
    await sender.send(frames("r", [b"end"]))
    resumed = await receive_until(again, b"end")
    assert [d.data for d in resumed] == [f"m{i}".encode() for i in range(10, 40)] + [b"end"]
    assert again.stats.redelivered == 30


async def test_a_foreign_commit_metadata_is_ignored(endpoints: Endpoints) -> None:
    """Another tool's commit of the group (say, `kafka-consumer-groups --reset-offsets`) carries its own
    metadata, or garbage: the start ignores it and counts nothing."""
    await ensure_topics(endpoints.config, ["s", "r"])
    sender = await endpoints.open("s")
    await sender.send(frames("r", [b"x"] * 5))
    assert await sender.wait_delivered(10)
    layout = KafkaLayout(endpoints.config.cluster_id)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=endpoints.config.bootstrap_servers,
        group_id=layout.group_id("r"),
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tp = TopicPartition(layout.inbox_topic("r"), 0)
        consumer.assign([tp])
        await consumer.commit({tp: (5, "dscore-read=99999999999999999999999; DROP")})
    finally:
        await consumer.stop()
    assert await committed_read_mark(endpoints.config, "r") is None
    receiver = await endpoints.open("r")
    got = await receive_n(receiver, 5)
    assert [d.data for d in got] == [b"x"] * 5
    assert receiver.stats.redelivered == 0


async def test_without_stored_positions_everything_is_redelivered(endpoints: Endpoints) -> None:
    await ensure_topics(endpoints.config, ["s", "r"])
    sender = await endpoints.open("s")
    receiver = await endpoints.open("r")
    await sender.send(frames("r", [f"m{i}".encode() for i in range(20)]))
    got = await receive_n(receiver, 20)
    # Kafka's committed offset (a hint) says all 20 are done, but nothing was stored: redeliver all.
    await receiver.commit({got[-1].channel: got[-1].offset})
    await receiver.close()

    again = await endpoints.open("r")
    await sender.send(frames("r", [b"end"]))
    redelivered = await receive_until(again, b"end")
    assert [d.data for d in redelivered] == [d.data for d in got] + [b"end"]
    assert [d.offset for d in redelivered[:-1]] == [d.offset for d in got]


async def test_a_client_endpoint_starts_at_the_end_of_its_inbox(endpoints: Endpoints) -> None:
    await ensure_topics(endpoints.config, ["node", "gateway"])
    node = await endpoints.open("node")
    await node.send(frames("gateway", [b"stale reply"]))
    assert await node.wait_delivered(10)
    gateway = await endpoints.open("gateway", start_without_position=StartWithoutPosition.LATEST)
    await node.send(frames("gateway", [b"fresh reply"]))
    assert [d.data for d in await receive_n(gateway, 1)] == [b"fresh reply"]


async def test_committed_offsets_reach_kafka(endpoints: Endpoints) -> None:
    await ensure_topics(endpoints.config, ["s", "r"])
    sender = await endpoints.open("s")
    receiver = await endpoints.open("r", commit_interval_s=600)  # only close() can commit
    await sender.send(frames("r", [b"x"] * 5))
    got = await receive_n(receiver, 5)
    await receiver.commit({got[-1].channel: got[-1].offset})
    await receiver.close()  # flushes the last position
    layout = KafkaLayout(endpoints.config.cluster_id)
    admin = AIOKafkaAdminClient(bootstrap_servers=endpoints.config.bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(layout.group_id("r"))
    finally:
        await admin.close()
    assert {tp.topic: meta.offset for tp, meta in offsets.items()} == {
        layout.inbox_topic("r"): got[-1].offset + 1
    }
    # the commit also records how far the endpoint read (it counts redeliveries after a restart)
    assert [parse_read_mark(meta.metadata) for meta in offsets.values()] == [got[-1].offset]
    assert await committed_read_mark(endpoints.config, "r") == got[-1].offset


async def test_hostile_records_are_delivered_as_bytes_and_never_crash(endpoints: Endpoints) -> None:
    await ensure_topics(endpoints.config, ["r"])
    receiver = await endpoints.open("r")
    topic = KafkaLayout(endpoints.config.cluster_id).inbox_topic("r")
    # Another producer on the wire (not dscore): garbage, empty, null values, keys, headers.
    raw = AIOKafkaProducer(bootstrap_servers=endpoints.config.bootstrap_servers)
    await raw.start()
    try:
        await raw.send_and_wait(topic, b"\x00\xff garbage \xfe", partition=0)
        await raw.send_and_wait(topic, b"", partition=0)
        await raw.send_and_wait(topic, None, key=b"tombstone", partition=0)
        await raw.send_and_wait(
            topic, b"with headers", key=b"\xff" * 100, partition=0, headers=[("h", b"\x00"), ("", b"")]
        )
        await raw.send_and_wait(topic, b"end", partition=0)
    finally:
        await raw.stop()
    got = await receive_until(receiver, b"end")
    assert [d.data for d in got] == [b"\x00\xff garbage \xfe", b"", b"", b"with headers", b"end"]
    assert receiver.stats.null_records_received == 1


async def test_oversized_frames_are_dropped_and_counted(endpoints: Endpoints) -> None:
    await ensure_topics(endpoints.config, ["s", "r"])
    sender = await endpoints.open("s", max_record_bytes=64 * 1024, max_in_flight_bytes=1024 * 1024)
    receiver = await endpoints.open("r")
    big = b"x" * (64 * 1024 + 1)
    await sender.send(frames("r", [b"before", big, b"after"]))
    got = await receive_until(receiver, b"after")
    assert [d.data for d in got] == [b"before", b"after"]
    assert sender.stats.send_failures["too_large"] == 1
    # a record just under the limit goes through
    fits = b"y" * (64 * 1024)
    await sender.send(frames("r", [fits, b"end"]))
    assert [len(d.data) for d in await receive_until(receiver, b"end")] == [len(fits), 3]


async def test_records_over_the_brokers_limit_are_counted_and_the_sender_recovers(
    endpoints: Endpoints,
) -> None:
    """The receiver's inbox was created with a smaller limit than the sender allows itself (settings that
    differ between endpoints): the broker refuses the record; it is counted, and later frames get through."""
    small = KafkaTransportConfig(**{**config_fields(endpoints.config), "max_record_bytes": 16 * 1024})
    await ensure_topics(small, ["r"])  # broker limit: 16 KiB + 64 KiB
    await ensure_topics(endpoints.config, ["s"])
    sender = await endpoints.open("s")  # allows itself 4 MiB records
    receiver = await endpoints.open("r", max_record_bytes=16 * 1024)
    await sender.send(frames("r", [b"z" * (200 * 1024)]))
    async with asyncio.timeout(30):
        while sender.stats.send_failures["too_large"] + sender.stats.send_failures["broker_error"] == 0:
            await sender.wait_delivered(1)
    assert sender.stats.send_failures["too_large"] == 1
    await get_through(sender, receiver, "r", b"after ")


async def test_many_endpoints_topics_created_up_front(endpoints: Endpoints) -> None:
    ids = [f"n{i}" for i in range(40)]
    created = await ensure_topics(endpoints.config, ids)
    assert sorted(created) == sorted(KafkaLayout(endpoints.config.cluster_id).inbox_topic(i) for i in ids)
    assert await ensure_topics(endpoints.config, ids) == []  # idempotent
    hub = await endpoints.open("hub")
    await hub.send([OutboundFrame(i, i.encode()) for i in ids])
    assert await hub.wait_delivered(30)
    assert hub.stats.records_sent == len(ids) and hub.stats.send_failures_total == 0
    for endpoint in ids[:: len(ids) // 4]:  # a sample of inboxes, read back
        inbox = await endpoints.open(endpoint, create_own_inbox=False)
        assert [d.data for d in await receive_n(inbox, 1)] == [endpoint.encode()]


async def test_a_destination_without_a_topic_never_blocks_the_sender(endpoints: Endpoints) -> None:
    await ensure_topics(endpoints.config, ["s"])
    sender = await endpoints.open("s", lookup_timeout_s=1.0)
    auto_create = await _broker_auto_creates_topics(endpoints.config.bootstrap_servers)
    async with asyncio.timeout(endpoints.config.send_timeout_s + 1):
        await sender.send(frames("nobody", [b"1", b"2"]))
    assert await sender.wait_delivered(30)
    if auto_create:  # the broker created the topic on the lookup: delivered there
        assert sender.stats.records_sent == 2
        endpoints.ids.add("nobody")
    else:
        assert sender.stats.send_failures["unknown_destination"] == 2
        # for a while later frames fail at once, without a new lookup
        await sender.send(frames("nobody", [b"3"]))
        assert sender.stats.send_failures["unknown_destination"] == 3
    # an id that cannot name a topic is refused the same way
    await sender.send(frames("bad/id", [b"x"]))
    assert sender.stats.send_failures["unknown_destination"] >= 1


async def test_a_reply_topic_created_later_is_found(endpoints: Endpoints) -> None:
    """A node learns a client's reply topic created after the node started (first reply not lost)."""
    await ensure_topics(endpoints.config, ["node"])
    node = await endpoints.open("node")
    gateway = await endpoints.open("gateway", start_without_position=StartWithoutPosition.LATEST)
    await node.send(frames("gateway", [b"r1", b"r2"]))
    await node.send(frames("gateway", [b"r3"]))
    assert [d.data for d in await receive_n(gateway, 3)] == [b"r1", b"r2", b"r3"]


async def _broker_auto_creates_topics(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        broker_id = str(cluster["brokers"][0]["node_id"])
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, broker_id)])
        for resource in response.resources:
            for entry in resource[4]:
                if entry[0] == "auto.create.topics.enable":
                    return bool(entry[1] == "true")
    finally:
        await admin.close()
    return True
