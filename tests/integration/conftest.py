"""Fixtures of the integration tests: a real Kafka broker (never a mock).

Minimal version from the kafka-transport branch; the infra branch's conftest (which starts the broker
with scripts/kafka.sh) replaces it. Start a broker yourself and point the tests at it:

    DSCORE_TEST_KAFKA_BOOTSTRAP=127.0.0.1:19092 make test

- `kafka_bootstrap`: `host:port` of the broker, from `DSCORE_TEST_KAFKA_BOOTSTRAP` (the test fails with a
  clear message when it is unset);
- `namespace`: a string unique to each test, used as the cluster id so tests never see each other's topics;
- `kafka_broker`: a broker process of the test module's own, for outage tests (freeze, stop, start); it
  needs `DSCORE_TEST_KAFKA_LIBS`, a folder of the broker's jars.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka_broker import LIBS_ENV, BrokerProcess

BOOTSTRAP_ENV = "DSCORE_TEST_KAFKA_BOOTSTRAP"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    bootstrap = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if not bootstrap:
        pytest.fail(
            f"{BOOTSTRAP_ENV} is not set: integration tests need a real Kafka broker. Start one (see "
            "/work/shared/reference/kafka/ or scripts/kafka.sh) and export "
            f"{BOOTSTRAP_ENV}=host:port",
            pytrace=False,
        )
    return bootstrap


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    """Unique per test: letters, digits and '-' only (it names Kafka topics)."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:32].strip("-")
    return f"t-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker of this test module's own, which its tests may freeze, stop and start (outage tests).
    Needs `DSCORE_TEST_KAFKA_LIBS`: a folder holding the broker's jars (see kafka_broker.py)."""
    libs = os.environ.get(LIBS_ENV, "").strip()
    if not libs or not Path(libs).is_dir():
        pytest.fail(
            f"{LIBS_ENV} is not set to a folder of Kafka broker jars: broker outage tests start a broker "
            "of their own (fetch the jars with `mvn dependency:copy-dependencies` on "
            "/work/shared/reference/kafka/pom.xml, or use scripts/kafka.sh's folder)",
            pytrace=False,
        )
    broker = BrokerProcess(Path(libs), tmp_path_factory.mktemp("kafka-broker"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
