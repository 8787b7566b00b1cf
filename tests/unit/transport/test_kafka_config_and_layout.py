"""The Kafka transport's pure parts: where a restart resumes, names, settings (no broker needed)."""

from __future__ import annotations

import pytest

from dscore.core.errors import ConfigError
from dscore.transport.kafka import check_resume_after, resume_offset
from dscore.transport.kafka_common import parse_read_mark, read_mark
from dscore.transport.kafka_config import KafkaTransportConfig, StartWithoutPosition
from dscore.transport.kafka_layout import KafkaLayout, topic_configs

EARLIEST = StartWithoutPosition.EARLIEST
LATEST = StartWithoutPosition.LATEST


def test_a_stored_position_resumes_right_after_it() -> None:
    # inbox holds offsets 10..99 (begin 10, end 100)
    assert resume_offset(41, 10, 100, EARLIEST) == (42, 0)
    assert resume_offset(99, 10, 100, EARLIEST) == (100, 0)  # everything consumed: wait for the next
    assert resume_offset(9, 10, 100, LATEST) == (10, 0)  # the next one is the first retained


def test_retention_gap_is_counted_and_a_log_shorter_than_the_position_is_read_from_its_start() -> None:
    assert resume_offset(4, 10, 100, EARLIEST) == (10, 5)  # offsets 5..9 deleted unread
    assert resume_offset(500, 0, 3, EARLIEST) == (0, 0)  # topic recreated: all of it is unread


def test_without_a_position_a_node_reads_from_the_start_and_a_client_from_the_end() -> None:
    assert resume_offset(None, 10, 100, EARLIEST) == (10, 0)
    assert resume_offset(None, 10, 100, LATEST) == (100, 0)


def test_only_this_inbox_position_counts() -> None:
    assert check_resume_after("dscore.c.inbox.n1-0", {"dscore.c.inbox.n1-0": 7, "inbox/n1": 3}, "n1") == 7
    assert check_resume_after("dscore.c.inbox.n1-0", {}, "n1") is None
    with pytest.raises(ConfigError):
        check_resume_after("dscore.c.inbox.n1-0", {"dscore.c.inbox.n1-0": -5}, "n1")


def test_names_are_namespaced_by_cluster_and_refuse_what_kafka_would() -> None:
    layout = KafkaLayout("prod-1")
    assert layout.inbox_topic("n1") == "dscore.prod-1.inbox.n1"
    assert layout.group_id("gw.a") == "dscore.prod-1.gw.a"
    assert layout.channel("dscore.prod-1.inbox.n1") == "dscore.prod-1.inbox.n1-0"
    for bad in ("", "a/b", "-x", "x" * 64, "naïve"):
        with pytest.raises(ConfigError):
            layout.inbox_topic(bad)
    with pytest.raises(ConfigError):
        KafkaLayout("a b")


def test_settings_are_checked() -> None:
    good = KafkaTransportConfig(bootstrap_servers="127.0.0.1:9092,k2:9093", cluster_id="c1")
    assert good.linger_ms == 0 and good.fetch_max_wait_ms < 500
    assert int(topic_configs(good)["max.message.bytes"]) > good.max_record_bytes
    bad_settings = [
        {"bootstrap_servers": ""},
        {"bootstrap_servers": "no-port"},
        {"bootstrap_servers": "h:99999"},
        {"cluster_id": "bad id"},
        {"send_timeout_s": 0},
        {"delivery_timeout_s": float("inf")},
        {"max_in_flight_records": 0},
        {"max_in_flight_bytes": 10, "max_record_bytes": 100},
        {"linger_ms": -1},
    ]
    for override in bad_settings:
        fields = {"bootstrap_servers": "127.0.0.1:9092", "cluster_id": "c1", **override}
        with pytest.raises(ConfigError):
            KafkaTransportConfig(**fields)  # type: ignore[arg-type]


def test_the_read_mark_round_trips_and_anything_else_is_ignored() -> None:
    for offset in (-1, 0, 7, 2**62):
        assert parse_read_mark(read_mark(offset)) == (None if offset < 0 else offset)
        assert parse_read_mark(read_mark(offset) + "\x00") == (None if offset < 0 else offset)  # librdkafka
    # not ours, or garbage: no mark (never an exception; another tool may have committed)
    for metadata in (
        None,
        "",
        "x",
        "dscore-read=",
        "dscore-read=-3",
        "dscore-read=1e3",
        "dscore-read=٣",
        "dscore-read=" + "9" * 20,
        "dscore-read=12 ",
        "DSCORE-READ=5",
    ):
        assert parse_read_mark(metadata) is None, metadata
