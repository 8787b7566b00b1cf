"""End-to-end tests: `dscore-node` processes on a real Kafka broker and real Redis servers.

The servers come from the integration fixtures (tests/integration/conftest.py: `kafka_bootstrap`,
`redis_server_factory`, `namespace`, `kafka_broker`), loaded here under another module name, so both
folders share one contract. The nodes are run by `dscore.stack.ProcessCluster`; `e2e_cluster` builds
one with a Redis server per node (each node's durable state its own failure domain, as in `make up`).

Every test here is marked `e2e`; the short versions run in `make test`, the long ones (`slow`) in
`make test-slow`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
INTEGRATION = HERE.parent / "integration"
if str(INTEGRATION) not in sys.path:
    sys.path.insert(0, str(INTEGRATION))  # the integration conftest imports kafka_broker by name

_spec = importlib.util.spec_from_file_location("dscore_integration_fixtures", INTEGRATION / "conftest.py")
assert _spec is not None and _spec.loader is not None
_fixtures = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _fixtures  # dataclasses look their module up while the class is built
_spec.loader.exec_module(_fixtures)

kafka_bootstrap = _fixtures.kafka_bootstrap
redis_server_factory = _fixtures.redis_server_factory
namespace = _fixtures.namespace
kafka_broker = _fixtures.kafka_broker
RedisServer = _fixtures.RedisServer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)
