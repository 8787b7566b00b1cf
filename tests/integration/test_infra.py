"""The test infrastructure itself: the broker and servers the fixtures hand out are real, configured as
dscore needs them, and isolated per test."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka_wire import api_versions, broker_configs, metadata

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def test_kafka_answers_the_kafka_protocol(kafka_bootstrap: str) -> None:
    versions = api_versions(_host_port(kafka_bootstrap))
    assert 0 in versions, "a broker serves Produce"
    assert versions[3][0] <= 4 <= versions[3][1], "Metadata v4 is served"


def test_kafka_advertises_its_loopback_address(kafka_bootstrap: str, namespace: str) -> None:
    brokers, topics = metadata(_host_port(kafka_bootstrap), [f"{namespace}-unknown"])
    assert brokers == [_host_port(kafka_bootstrap)]
    assert topics == {f"{namespace}-unknown": 3}, "UNKNOWN_TOPIC_OR_PARTITION"


def test_kafka_runs_with_dscores_broker_settings(kafka_bootstrap: str) -> None:
    wanted = {
        "auto.create.topics.enable": "false",  # a typo in a topic name must not create a topic
        "num.partitions": "1",
        "default.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
        "message.max.bytes": "5242880",  # room for the codec's 4 MiB envelopes
        "log.cleaner.dedupe.buffer.size": "2097152",
    }
    assert broker_configs(_host_port(kafka_bootstrap), 1, list(wanted)) == wanted


def test_kafka_ensure_is_idempotent(kafka_bootstrap: str) -> None:
    if not (SCRIPTS.parent / ".run" / "kafka.pid").exists():
        pytest.skip("the broker comes from DSCORE_TEST_KAFKA_BOOTSTRAP, not scripts/kafka.sh")
    again = subprocess.run(
        [str(SCRIPTS / "kafka.sh"), "ensure"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert again.stdout.strip() == kafka_bootstrap


def test_redis_url_is_a_server_that_fsyncs_every_write(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert client.ping()
        settings = client.config_get("append*")
        assert (settings["appendonly"], settings["appendfsync"]) == ("yes", "always")


def test_an_extra_server_keeps_acknowledged_writes_through_kill_9_and_restart(
    redis_server_factory: Callable[..., Any], redis_url: str
) -> None:
    server = redis_server_factory()
    assert server.url != redis_url and server.data_dir.is_dir()
    with redis.Redis.from_url(server.url) as client:
        client.set("k", "acknowledged")
    first_pid = server.pid
    server.kill()
    with pytest.raises(redis.ConnectionError), redis.Redis.from_url(server.url, retry=None) as client:
        client.ping()
    server.restart()
    assert server.pid != first_pid
    with redis.Redis.from_url(server.url) as client:
        assert client.get("k") == b"acknowledged"


def test_extra_servers_take_redis_settings(redis_server_factory: Callable[..., Any]) -> None:
    server = redis_server_factory("--appendfsync", "everysec")
    with redis.Redis.from_url(server.url, decode_responses=True) as client:
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}


_SEEN: set[str] = set()


@pytest.mark.parametrize("run", [1, 2, 3])
def test_each_test_gets_its_own_namespace(namespace: str, run: int, request: pytest.FixtureRequest) -> None:
    assert re.fullmatch(r"[A-Za-z0-9-]{1,100}", namespace), "fits Kafka topic names and Redis key prefixes"
    assert namespace not in _SEEN
    _SEEN.add(namespace)
    assert request.node.get_closest_marker("integration") is not None
