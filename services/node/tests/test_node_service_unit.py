"""The node service's pieces without servers: settings rules, the instruments around transport and
storage, the metrics a scrape returns and the HTTP endpoints, on the memory transport and storage.
(The process on real Kafka and Redis is tested end to end in tests/e2e/.)"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest
from pydantic import SecretStr

from dscore.core.errors import ConfigError
from dscore.runtime.cluster import raft_factory
from dscore.runtime.node import NodeRuntime
from dscore.storage.memory import MemoryStorage
from dscore.transport.faults import FaultyTransport
from dscore.transport.memory import MemoryNetwork
from dscore_node.http import build_app
from dscore_node.instruments import ConsumeGate
from dscore_node.logs import JsonLineFormatter, redact_url
from dscore_node.main import describe
from dscore_node.metrics import LeadershipLog, build_registry
from dscore_node.settings import load_service_settings

KEY = "a cluster key of at least thirty-two bytes"
PASSWORD = "s3cret-pa55word"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DSCORE_"):
            monkeypatch.delenv(name)


def complete_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSCORE_NODE_ID", "n1")
    monkeypatch.setenv("DSCORE_PEERS", "n2,n3")
    monkeypatch.setenv("DSCORE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    monkeypatch.setenv("DSCORE_REDIS__URL", f"redis://:{PASSWORD}@127.0.0.1:6379/0")
    monkeypatch.setenv("DSCORE_AUTH_KEY", KEY)


# -- settings -----------------------------------------------------------------------------------------


def test_a_node_needs_kafka_redis_and_the_cluster_key_and_says_which_is_missing() -> None:
    with pytest.raises(ConfigError) as error:
        load_service_settings()
    text = str(error.value)
    for name in ("DSCORE_KAFKA__BOOTSTRAP_SERVERS", "DSCORE_REDIS__URL", "DSCORE_AUTH_KEY"):
        assert name in text


def test_complete_settings_load_and_describe_shows_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    complete_env(monkeypatch)
    settings = load_service_settings()
    assert settings.members == ("n1", "n2", "n3")
    assert settings.kafka.transport_config(settings.cluster_id).bootstrap_servers == "127.0.0.1:9092"
    assert settings.redis.prefix_for(settings.cluster_id, "n1") == "dscore:dscore:n1"
    text = describe(settings) + repr(settings)
    assert PASSWORD not in text and KEY not in text
    assert "redis://:***@127.0.0.1:6379/0" in describe(settings)


def test_without_a_key_only_the_explicit_insecure_flag_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    complete_env(monkeypatch)
    monkeypatch.delenv("DSCORE_AUTH_KEY")
    with pytest.raises(ConfigError, match="DSCORE_AUTH_KEY: required"):
        load_service_settings()
    monkeypatch.setenv("DSCORE_INSECURE_NO_AUTH", "true")
    assert load_service_settings().auth_key_bytes() is None


ADMIN_TOKEN = "admin-token-" + "t" * 40


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"redis://:{PASSWORD}@127.0.0.1:bad/0", "not a Redis URL"),  # the port
        (f"redis://:{PASSWORD}@127.0.0.1:6379/abc", "database must be a number"),  # redis-py would use 0
        (f"redis://:{PASSWORD}@127.0.0.1:6379/0?foo=bar", "no Redis connection takes: foo"),  # first command
    ],
)
def test_a_redis_url_redis_py_would_trip_over_later_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, url: str, problem: str
) -> None:
    complete_env(monkeypatch)
    monkeypatch.setenv("DSCORE_REDIS__URL", url)
    with pytest.raises(ConfigError, match="DSCORE_REDIS__URL") as error:
        load_service_settings()
    assert problem in str(error.value) and PASSWORD not in str(error.value)
    # the ones it reads are fine: TLS options, a socket with a database, timeouts
    for good in (
        "rediss://127.0.0.1:6380/0?ssl_cert_reqs=none",
        "unix:///tmp/redis.sock?db=2",
        "redis://127.0.0.1:6379/0?socket_timeout=2&health_check_interval=5",
        "redis://127.0.0.1",
    ):
        monkeypatch.setenv("DSCORE_REDIS__URL", good)
        load_service_settings()


def test_admin_needs_a_long_token_that_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    complete_env(monkeypatch)
    monkeypatch.setenv("DSCORE_HTTP__ADMIN", "true")
    with pytest.raises(ConfigError, match="DSCORE_HTTP__ADMIN_TOKEN: required"):
        load_service_settings()
    monkeypatch.setenv("DSCORE_HTTP__ADMIN_TOKEN", "short-secret-token")
    with pytest.raises(ConfigError, match="DSCORE_HTTP__ADMIN_TOKEN: at least 32") as error:
        load_service_settings()
    assert "short-secret-token" not in str(error.value)
    monkeypatch.setenv("DSCORE_HTTP__ADMIN_TOKEN", ADMIN_TOKEN)
    settings = load_service_settings()
    assert settings.http.admin_token is not None
    assert settings.http.admin_token.get_secret_value() == ADMIN_TOKEN
    assert ADMIN_TOKEN not in describe(settings) + repr(settings)
    # a Secret made from a file keeps its last newline: dropped, or no request could ever match
    monkeypatch.setenv("DSCORE_HTTP__ADMIN_TOKEN", ADMIN_TOKEN + "\n")
    token = load_service_settings().http.admin_token
    assert token is not None and token.get_secret_value() == ADMIN_TOKEN
    # blank (32 spaces), or whitespace inside: refused, naming the setting, not showing the value
    for bad in (" " * 40, "t" * 20 + " " + "t" * 20):
        monkeypatch.setenv("DSCORE_HTTP__ADMIN_TOKEN", bad)
        with pytest.raises(ConfigError, match="HTTP__ADMIN_TOKEN") as error:
            load_service_settings()
        assert bad not in str(error.value)


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("DSCORE_KAFKA__BOOTSTRAP_SERVERS", "kafka-without-port", "DSCORE_KAFKA__BOOTSTRAP_SERVERS"),
        ("DSCORE_KAFKA__CLIENT", "java", "DSCORE_KAFKA__CLIENT"),
        ("DSCORE_REDIS__URL", f"http://:{PASSWORD}@x:1", "DSCORE_REDIS__URL"),
        ("DSCORE_REDIS__ALLOW_UNSAFE_DURABILITY", "maybe", "DSCORE_REDIS__ALLOW_UNSAFE_DURABILITY"),
        ("DSCORE_HTTP__PORT", "70000", "DSCORE_HTTP__PORT"),
        ("DSCORE_INITIAL_CLUSTER_STATE", "joining", "DSCORE_INITIAL_CLUSTER_STATE"),
    ],
)
def test_a_bad_setting_is_named_and_a_secret_is_not_shown(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    complete_env(monkeypatch)
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as error:
        load_service_settings()
    assert named in str(error.value)
    assert PASSWORD not in str(error.value)


def test_redact_url_and_log_lines_are_single_json_lines() -> None:
    assert redact_url("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"
    # redis-py also reads a password from the query string
    assert redact_url("redis://h:1/0?password=s3cret&db=2") == "redis://h:1/0?password=***&db=2"
    assert redact_url("unix:///tmp/r.sock?password=s3cret") == "unix:///tmp/r.sock?password=***"
    assert redact_url("rediss://:pw@h:1/0?ssl_password=k3y") == "rediss://:***@h:1/0?ssl_password=***"
    assert "pw" not in redact_url("redis://:pw@h:bad/0")  # a port that does not parse: not shown at all
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed: %s", ("why",), exc_info=None)
        import sys

        record.exc_info = sys.exc_info()
    line = JsonLineFormatter("n1").format(record)
    assert "\n" not in line and '"node": "n1"' in line and "boom" in line


# -- the consume gate -------------------------------------------------------------------------------


async def test_stopped_consumption_holds_deliveries_until_resumed() -> None:
    network = MemoryNetwork(("n1", "n2"))
    gate = ConsumeGate(network.endpoint("n1"))
    await gate.start({})
    gate.stop_consuming()
    receiving = asyncio.ensure_future(gate.receive(10))
    network.inject("n1", b"frame-1")
    network.inject("n1", b"frame-2")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not receiving.done()
    gate.resume_consuming()
    batch = await asyncio.wait_for(receiving, 5)
    assert [d.data for d in batch] == [b"frame-1", b"frame-2"]


# -- metrics and HTTP on a one-node runtime ------------------------------------------------------------


@pytest.fixture
async def single_node() -> AsyncIterator[tuple[NodeRuntime, ConsumeGate, TestClient]]:  # type: ignore[type-arg]
    network = MemoryNetwork(("n1",))
    faulty = FaultyTransport(network.endpoint("n1"), "n1", rng=random.Random(1))
    transport = ConsumeGate(faulty)
    registry, nodes, faults = build_registry()
    runtime = NodeRuntime(
        "n1", ("n1",), raft_factory(), transport, MemoryStorage(), on_change=LeadershipLog().observe
    )
    runtime.metrics = nodes.add_node("n1", runtime, protocol="raft")
    faults.add_node("n1", faulty)
    app = build_app(
        runtime, transport, registry, admin=True, admin_token=SecretStr(ADMIN_TOKEN), faults=faulty
    )
    client = TestClient(TestServer(app), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    await client.start_server()
    try:
        yield runtime, transport, client
    finally:
        await client.close()
        await runtime.stop()


async def wait_for_leader(runtime: NodeRuntime) -> None:
    async with asyncio.timeout(10):
        while not runtime.is_leader:
            await asyncio.sleep(0.01)


async def test_readyz_is_503_before_start_and_200_once_it_leads(single_node) -> None:  # type: ignore[no-untyped-def]
    runtime, _, client = single_node
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await client.get("/healthz")).status == 200  # starting counts as alive
    await runtime.start()
    await wait_for_leader(runtime)
    async with asyncio.timeout(10):
        while (response := await client.get("/readyz")).status != 200:
            await asyncio.sleep(0.01)
    body = await response.json()
    assert body["ready"] and body["leader_id"] == "n1"
    state = await (await client.get("/debug/state")).json()
    assert state["role"] == "leader" and len(state["state_machine_sha256"]) == 64
    await runtime.stop()
    assert (await client.get("/healthz")).status == 503
    assert (await client.get("/readyz")).status == 503


async def test_metrics_show_role_indexes_leader_changes_and_persist_latency(single_node) -> None:  # type: ignore[no-untyped-def]
    runtime, _, client = single_node
    await runtime.start()
    await wait_for_leader(runtime)
    await runtime.barrier(5.0)
    text = await (await client.get("/metrics")).text()
    lines = set(text.splitlines())
    node = 'node="n1",protocol="raft"'
    assert f'dscore_node_role{{{node},role="leader"}} 1.0' in lines
    assert f'dscore_node_role{{{node},role="follower"}} 0.0' in lines
    assert f"dscore_leader_changes_total{{{node}}} 1.0" in lines
    applied = next(line for line in lines if line.startswith("dscore_node_applied_index{"))
    assert float(applied.split()[1]) >= 2  # the leader's no-op and the barrier
    count = next(line for line in lines if line.startswith("dscore_persist_duration_seconds_count{"))
    assert float(count.split()[1]) == runtime.saves > 0
    # rejections by reason, each reason zero-initialised (one definition: dscore.metrics)
    assert f'dscore_messages_rejected_total{{{node},reason="unauthenticated"}} 0.0' in lines
    assert f'dscore_messages_rejected_total{{{node},reason="stale_storage"}} 0.0' in lines
    assert 'dscore_transport_faults_active{node="n1"} 0.0' in lines
    assert 'dscore_transport_fault_control_rejected_total{node="n1",reason="unauthenticated"} 0.0' in lines
    assert "process_cpu_seconds_total" in text
    # one definition: the node service defines no metric of its own
    names = {line.split("{")[0].split(" ")[0] for line in lines if line.startswith("dscore_")}
    assert not {n for n in names if n.startswith(("dscore_node_consuming", "dscore_kafka_"))}


async def test_admin_stops_and_resumes_consumption(single_node) -> None:  # type: ignore[no-untyped-def]
    _, transport, client = single_node
    assert (await (await client.post("/admin/consume/stop")).json()) == {"consuming": False}
    assert not transport.consuming
    assert (await (await client.post("/admin/consume/start")).json()) == {"consuming": True}
    assert transport.consuming


async def test_membership_changes_through_admin(single_node) -> None:  # type: ignore[no-untyped-def]
    runtime, _, client = single_node
    await runtime.start()
    await wait_for_leader(runtime)
    await runtime.barrier(5.0)  # a leader changes membership only after committing in its term
    assert (await client.post("/admin/introduce/n2")).status == 200
    assert "n2" in runtime.accepted_senders
    response = await client.post("/admin/members/n2?learner=true")
    body = await response.json()
    assert response.status == 200, body
    assert body["learners"] == ["n2"] and body["voters"] == ["n1"] and body["unchanged"] is False
    index = body["index"]
    # idempotent: a member added again is 200 with nothing proposed (a re-run Job, a retried request)
    again = await client.post("/admin/members/n2?learner=true")
    assert again.status == 200 and (await again.json())["unchanged"] is True
    as_voter = await client.post("/admin/members/n2")  # a learner is a member: unchanged, still a learner
    assert as_voter.status == 200 and (await as_voter.json())["unchanged"] is True
    assert runtime.learners == ("n2",) and runtime.status().commit_index == index
    removed = await client.delete("/admin/members/n2")
    body = await removed.json()
    assert removed.status == 200 and body["learners"] == [] and body["removed"] == ["n2"]
    state = await (await client.get("/debug/state")).json()
    assert state["removed"] == ["n2"]
    gone = await client.delete("/admin/members/n2")
    assert gone.status == 200 and (await gone.json())["unchanged"] is True
    # a removed id is never reused: 409 id_removed, nothing proposed
    reused = await client.post("/admin/members/n2?learner=true")
    assert reused.status == 409 and (await reused.json())["error"] == "id_removed"
    assert (await client.post("/admin/members/n1/promote")).status == 200  # a voter already
    not_learner = await client.post("/admin/members/n9/promote")
    assert not_learner.status == 409 and (await not_learner.json())["error"] == "not_learner"
    last = await client.delete("/admin/members/n1")
    assert last.status == 409 and (await last.json())["error"] == "last_voter"
    assert (await client.post("/admin/members/bad%20id")).status == 404
    # a node that is not running proposed nothing: 503 with Retry-After, not "outcome unknown"
    await runtime.stop()
    stopped = await client.post("/admin/members/n3?learner=true")
    assert stopped.status == 503 and (await stopped.json())["error"] == "not_running"
    assert stopped.headers["Retry-After"] == "1"


async def test_admin_without_the_token_is_refused_and_counted(single_node) -> None:  # type: ignore[no-untyped-def]
    runtime, transport, client = single_node
    server = client.server
    async with TestClient(server) as anonymous:  # no Authorization header
        assert (await anonymous.post("/admin/consume/stop")).status == 401
        wrong = await anonymous.post(
            "/admin/consume/stop", headers={"Authorization": f"Bearer {ADMIN_TOKEN}x"}
        )
        assert wrong.status == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
        basic = await anonymous.post("/admin/members/n2", headers={"Authorization": f"Basic {ADMIN_TOKEN}"})
        assert basic.status == 401
        assert transport.consuming and runtime.learners == ()
        # probes, metrics and /debug/state stay open
        assert (await anonymous.get("/debug/state")).status == 200
        text = await (await anonymous.get("/metrics")).text()
    assert 'dscore_admin_requests_rejected_total{node="n1",reason="missing_token"} 2.0' in text
    assert 'dscore_admin_requests_rejected_total{node="n1",reason="bad_token"} 1.0' in text
    assert ADMIN_TOKEN not in text


async def test_on_a_follower_a_change_is_misdirected_with_the_leader() -> None:
    """421 with the leader's id: the node that is asked cannot make the change."""
    network = MemoryNetwork(("n1", "n2", "n3"))
    gates = {n: ConsumeGate(network.endpoint(n)) for n in ("n1", "n2", "n3")}
    runtimes = {
        n: NodeRuntime(n, ("n1", "n2", "n3"), raft_factory(), gates[n], MemoryStorage()) for n in gates
    }
    for runtime in runtimes.values():
        await runtime.start()
    try:
        async with asyncio.timeout(10):
            while not any(r.is_leader for r in runtimes.values()) or any(
                r.leader_id is None for r in runtimes.values()
            ):
                await asyncio.sleep(0.01)
        leader = next(n for n, r in runtimes.items() if r.is_leader)
        follower = next(n for n, r in runtimes.items() if not r.is_leader)
        registry, _, _ = build_registry()
        app = build_app(
            runtimes[follower], gates[follower], registry, admin=True, admin_token=SecretStr(ADMIN_TOKEN)
        )
        async with TestClient(TestServer(app), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
            answer = await client.post("/admin/members/n4?learner=true")
            assert answer.status == 421
            assert await answer.json() == {"error": "not_leader", "leader_id": leader}
    finally:
        for runtime in runtimes.values():
            await runtime.stop()


async def test_admin_endpoints_are_off_by_default() -> None:
    network = MemoryNetwork(("n1",))
    transport = ConsumeGate(network.endpoint("n1"))
    runtime = NodeRuntime("n1", ("n1",), raft_factory(), transport, MemoryStorage())
    registry, _, _ = build_registry()
    client = TestClient(TestServer(build_app(runtime, transport, registry, admin=False)))
    await client.start_server()
    try:
        assert (await client.post("/admin/consume/stop")).status in (404, 405)
        assert (await client.post("/admin/members/n2")).status in (404, 405)
        assert transport.consuming
        assert generate_latest(registry)  # the registry serves without a node collector too
    finally:
        await client.close()
