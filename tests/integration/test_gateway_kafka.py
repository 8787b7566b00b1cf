"""The gateway on the real Kafka transport: three Raft nodes on Kafka inboxes, the gateway's own inbox for
replies, the HTTP API in front. It learns the leader from the nodes' replies (nothing configures it) and
follows it when the leader is killed.

No mocks: a real broker from `kafka_bootstrap`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from dscore.runtime.cluster import raft_factory
from dscore.runtime.node import NodeRuntime
from dscore.storage.memory import MemoryStorage
from dscore.transport import kafka, kafka_layout
from dscore_gateway.app import create_app
from dscore_gateway.service import Gateway
from dscore_gateway.settings import GatewayOptions, GatewaySettings, KafkaOptions
from dscore_gateway.transport import make_endpoint, open_transport

pytestmark = [pytest.mark.timeout(180)]

MEMBERS = ("n1", "n2", "n3")


def _node(settings: GatewaySettings, node_id: str, opened: list[Any]) -> NodeRuntime:
    config = kafka.KafkaTransportConfig(
        bootstrap_servers=settings.kafka.bootstrap_servers, cluster_id=settings.cluster_id
    )
    transport = kafka.open_kafka_transport(config, node_id)
    opened.append(transport)
    return NodeRuntime(
        node_id, MEMBERS, raft_factory(), transport, MemoryStorage(), auth_key=settings.auth_key_bytes()
    )


@pytest.fixture
async def deployment(
    kafka_bootstrap: str, namespace: str
) -> AsyncIterator[tuple[dict[str, NodeRuntime], Gateway, httpx.AsyncClient]]:
    settings = GatewaySettings(
        nodes=MEMBERS,
        cluster_id=namespace[:63].rstrip("-"),
        auth_key=secrets.token_urlsafe(48),  # type: ignore[arg-type]
        kafka=KafkaOptions(bootstrap_servers=kafka_bootstrap),
        gateway=GatewayOptions(
            endpoint_id="gw-it", request_timeout_s=10.0, attempt_timeout_s=1.0, probe_interval_s=0
        ),
    )
    opened: list[Any] = []
    runtimes = {n: _node(settings, n, opened) for n in MEMBERS}
    for runtime in runtimes.values():
        await runtime.start()
    endpoint = make_endpoint(settings, open_transport(settings))
    await endpoint.start()
    gateway = Gateway(endpoint, settings.gateway, cluster_id=settings.cluster_id, close=endpoint.close)
    await gateway.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(gateway)), base_url="http://gateway", timeout=60
        ) as http:
            yield runtimes, gateway, http
    finally:
        await gateway.stop()
        for runtime in runtimes.values():
            await runtime.stop()
        for transport in opened:
            await transport.close()
        layout: Any = kafka_layout
        config = kafka.KafkaTransportConfig(
            bootstrap_servers=settings.kafka.bootstrap_servers, cluster_id=settings.cluster_id
        )
        await layout.delete_topics(config, {*MEMBERS, settings.gateway.endpoint_id})


async def test_gateway_serves_and_follows_the_leader_over_kafka(
    deployment: tuple[dict[str, NodeRuntime], Gateway, httpx.AsyncClient],
) -> None:
    runtimes, gateway, http = deployment
    assert (await http.put("/v1/kv/k", json={"value": "v1"})).status_code == 204
    assert (
        await http.post("/v1/kv/k/append", json={"value": "+"}, headers={"Idempotency-Key": "a"})
    ).status_code == 204
    assert (
        await http.post("/v1/kv/k/append", json={"value": "+"}, headers={"Idempotency-Key": "a"})
    ).status_code == 204
    assert (await http.post("/v1/kv/k/cas", json={"expected": "v1+", "value": "v2"})).status_code == 204
    got = await http.get("/v1/kv/k")
    assert got.status_code == 200 and got.json() == {"key": "k", "value": "v2"}
    leader = gateway.client.tracker.leader
    assert leader is not None and runtimes[leader].is_leader  # learned from replies
    runtimes[leader].crash()
    async with asyncio.timeout(60):
        while True:
            response = await http.put("/v1/kv/k", json={"value": "v3"})
            if response.status_code == 204:
                break
            assert response.status_code in (503, 504), response.text
    assert gateway.client.tracker.leader not in (None, leader)
    assert (await http.get("/v1/kv/k")).json()["value"] == "v3"
    view = (await http.get("/v1/cluster")).json()
    assert view["leader"] == gateway.client.tracker.leader


def test_the_process_on_kafka_starts_and_exits_cleanly_on_sigterm(
    kafka_bootstrap: str, namespace: str
) -> None:
    """`dscore-gateway` with the Kafka transport: it opens its inbox, serves HTTP (not ready: no node
    runs), and on SIGTERM closes the transport and exits 0."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "DSCORE_NODES": ",".join(MEMBERS),
        "DSCORE_CLUSTER_ID": namespace[:63].rstrip("-"),
        "DSCORE_AUTH_KEY": secrets.token_urlsafe(48),
        "DSCORE_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DSCORE_GATEWAY__HOST": "127.0.0.1",
        "DSCORE_GATEWAY__PORT": str(port),
        "DSCORE_GATEWAY__ENDPOINT_ID": "gw-process-it",
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "dscore_gateway"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert child.stdout is not None
    try:
        for line in child.stdout:
            if "Uvicorn running on" in line:
                break
        else:
            pytest.fail("the gateway exited before serving")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            assert http.get("/healthz").status_code == 200
            ready = http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["reason"] == "no leader known"
        child.send_signal(signal.SIGTERM)
        output = child.communicate(timeout=60)[0]
        assert child.returncode == 0, output
        assert "stopped (drained)" in output
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=30)
        layout: Any = kafka_layout
        config = kafka.KafkaTransportConfig(
            bootstrap_servers=kafka_bootstrap, cluster_id=env["DSCORE_CLUSTER_ID"]
        )
        asyncio.run(layout.delete_topics(config, {"gw-process-it"}))
