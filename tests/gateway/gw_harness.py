"""Helpers of the gateway's tests: an embedded Raft cluster (memory transport, real Raft, real codec and
authentication) and the gateway's FastAPI app in front of it, driven through httpx's ASGITransport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from dscore.protocols.raft import RaftConfig
from dscore.runtime.cluster import EmbeddedCluster, raft_factory
from dscore_gateway.app import create_app
from dscore_gateway.service import Gateway
from dscore_gateway.settings import GatewayOptions

TIMEOUT_S = 10.0

#: fast enough for tests, slow enough for a loaded 2-core machine; the probe is off unless a test wants it
TEST_OPTIONS: dict[str, Any] = {
    "endpoint_id": "gw-test",
    "request_timeout_s": 5.0,
    "attempt_timeout_s": 1.0,
    "retry_backoff_s": 0.005,
    "probe_interval_s": 0.0,
    "drain_timeout_s": 5.0,
}


@dataclass
class Harness:
    cluster: EmbeddedCluster
    gateway: Gateway
    http: httpx.AsyncClient

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the gateway's /metrics registry (0.0 if absent)."""
        return sample(self.gateway, name, **labels)


def sample(gateway: Gateway, name: str, **labels: str) -> float:
    from prometheus_client import generate_latest

    text = generate_latest(gateway.metrics.registry).decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


@asynccontextmanager
async def gateway_on(
    cluster: EmbeddedCluster, name: str = "gw-test", **options: Any
) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    """A started gateway on its own endpoint of `cluster`'s network, and an HTTP client for its app."""
    endpoint = await cluster.client_endpoint(name)
    gateway = Gateway(
        endpoint, GatewayOptions(**{**TEST_OPTIONS, "endpoint_id": name, **options}), cluster_id="test"
    )
    app = create_app(gateway)
    await gateway.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway", timeout=60
        ) as http:
            yield gateway, http
    finally:
        await gateway.stop()


@asynccontextmanager
async def harness(
    size: int = 3,
    *,
    raft: RaftConfig | None = None,
    cluster_args: dict[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[Harness]:
    async with EmbeddedCluster(raft_factory(raft), size, seed=7, **(cluster_args or {})) as cluster:
        await cluster.wait_for_leader(TIMEOUT_S)
        async with gateway_on(cluster, **options) as (gateway, http):
            yield Harness(cluster, gateway, http)
