"""The gateway's parts on their own: settings, the Idempotency-Key table and header, leader tracking, the
session pool; and the service's lifecycle (drain, probe, readiness, bounds) on an embedded cluster."""

from __future__ import annotations

import asyncio

import pytest
from gw_harness import TIMEOUT_S, harness

from dscore.core.client_messages import ClientResponse, Outcome
from dscore.core.errors import ConfigError
from dscore.runtime.gc_tuning import DEFAULT_GC_GEN0_THRESHOLD
from dscore_gateway import outcomes
from dscore_gateway.idempotency import IdempotencyKeyError, IdempotencyTable, Verdict, fingerprint, parse_key
from dscore_gateway.routing import LeaderTracker
from dscore_gateway.sessions import PoolExhaustedError, SessionPool
from dscore_gateway.settings import DEFAULT_MAX_GATHER_S, GatewaySettings, load_gateway_settings

KEY = "k" * 40

# -- settings -----------------------------------------------------------------------------------------


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSCORE_NODES", "n1, n2,n3")
    monkeypatch.setenv("DSCORE_AUTH_KEY", KEY)
    monkeypatch.setenv("DSCORE_CLUSTER_ID", "prod")
    monkeypatch.setenv("DSCORE_KAFKA__BOOTSTRAP_SERVERS", "kafka-0:9092,kafka-1:9092")
    monkeypatch.setenv("DSCORE_GATEWAY__PORT", "9090")
    monkeypatch.setenv("DSCORE_GATEWAY__SESSION_POOL_SIZE", "8")
    monkeypatch.setenv("DSCORE_RAFT__PRE_VOTE", "false")  # a node's setting in a shared environment
    settings = load_gateway_settings()
    assert settings.nodes == ("n1", "n2", "n3")
    assert settings.cluster_id == "prod"
    assert settings.kafka.bootstrap_servers == "kafka-0:9092,kafka-1:9092"
    assert settings.gateway.port == 9090
    assert settings.gateway.session_pool_size == 8
    assert settings.gateway.endpoint_id.startswith("gw-")
    assert settings.auth_key_bytes() == KEY.encode()
    assert KEY not in repr(settings) and KEY not in str(settings)


def test_defaults() -> None:
    settings = load_gateway_settings(nodes="n1", auth_key=KEY)
    assert settings.gateway.port == 8080
    assert settings.gateway.host == "0.0.0.0"
    assert settings.envelopes_in_flight() == 1
    pbft = load_gateway_settings(nodes="n1,n2,n3,n4", auth_key=KEY, protocol="pbft")
    assert pbft.envelopes_in_flight() == 0  # its retries go to every replica at once
    assert (
        load_gateway_settings(
            nodes="n1", auth_key=KEY, gateway={"max_envelopes_in_flight": 0}
        ).envelopes_in_flight()
        == 0
    )
    assert settings.gather_s() == DEFAULT_MAX_GATHER_S
    assert pbft.gather_s() == 0.0  # nothing in flight to gather for
    no_limit = load_gateway_settings(nodes="n1", auth_key=KEY, gateway={"max_envelopes_in_flight": 0})
    assert no_limit.gather_s() == 0.0
    chosen = load_gateway_settings(nodes="n1", auth_key=KEY, gateway={"max_gather_s": 0.002})
    assert chosen.gather_s() == 0.002
    assert settings.gc_gen0_threshold == DEFAULT_GC_GEN0_THRESHOLD  # as the nodes' processes
    assert settings.gateway.silence_s == 0.2 and settings.gateway.silence_after_s() == 0.2
    # a default silence an attempt timeout set lower makes moot is off, not an error
    quick = load_gateway_settings(nodes="n1", auth_key=KEY, gateway={"attempt_timeout_s": 0.1})
    assert quick.gateway.silence_after_s() == 0.0
    off = load_gateway_settings(nodes="n1", auth_key=KEY, gateway={"silence_s": 0})
    assert off.gateway.silence_after_s() == 0.0


@pytest.mark.parametrize(
    ("env", "named", "says"),
    [
        ({"DSCORE_NODES": ""}, "DSCORE_NODES", "must list the cluster's node ids"),
        ({"DSCORE_NODES": "n1,n1"}, "DSCORE_NODES", "duplicate node ids"),
        ({"DSCORE_NODES": "n 1"}, "DSCORE_NODES", "letters, digits"),
        ({"DSCORE_AUTH_KEY": ""}, "DSCORE_AUTH_KEY", "at least 32 bytes"),
        ({"DSCORE_GATEWAY__PORT": "80000"}, "DSCORE_GATEWAY__PORT", "less than or equal to 65535"),
        ({"DSCORE_GATEWAY__MAX_BODY_BYTES": "lots"}, "DSCORE_GATEWAY__MAX_BODY_BYTES", "valid integer"),
        ({"DSCORE_GATEWAY__REQUEST_TIMEOUT_S": "-1"}, "DSCORE_GATEWAY__REQUEST_TIMEOUT_S", "greater than 0"),
        ({"DSCORE_GATEWAY__ATTEMPT_TIMEOUT_S": "9"}, "DSCORE_GATEWAY__ATTEMPT_TIMEOUT_S", "must not exceed"),
        (
            {"DSCORE_GATEWAY__ENDPOINT_ID": "n1"},
            "DSCORE_GATEWAY__ENDPOINT_ID",
            "must differ from every node id",
        ),
        ({"DSCORE_GATEWAY__PROT": "1"}, "DSCORE_GATEWAY__PROT", "Extra inputs are not permitted"),
        (
            {"DSCORE_KAFKA__BOOTSTRAP_SERVERS": "kafka"},
            "DSCORE_KAFKA__BOOTSTRAP_SERVERS",
            "must be host:port",
        ),
        ({"DSCORE_CLUSTER_ID": "a b"}, "DSCORE_CLUSTER_ID", "pattern"),
        (
            {"DSCORE_GATEWAY__MAX_ENVELOPES_IN_FLIGHT": "-1"},
            "DSCORE_GATEWAY__MAX_ENVELOPES_IN_FLIGHT",
            "greater than or equal to 0",
        ),
        (
            {
                "DSCORE_PROTOCOL": "pbft",
                "DSCORE_NODES": "n1,n2,n3,n4",
                "DSCORE_GATEWAY__MAX_ENVELOPES_IN_FLIGHT": "1",
            },
            "DSCORE_GATEWAY__MAX_ENVELOPES_IN_FLIGHT",
            "must be 0 with pbft",
        ),
        ({"DSCORE_GC_GEN0_THRESHOLD": "-1"}, "DSCORE_GC_GEN0_THRESHOLD", "greater than or equal to 0"),
        ({"DSCORE_GATEWAY__SILENCE_S": "-0.1"}, "DSCORE_GATEWAY__SILENCE_S", "greater than or equal to 0"),
        ({"DSCORE_GATEWAY__SILENCE_S": "0.5"}, "DSCORE_GATEWAY__SILENCE_S", "must be below"),
        (
            {"DSCORE_GATEWAY__MAX_GATHER_S": "-0.001"},
            "DSCORE_GATEWAY__MAX_GATHER_S",
            "greater than or equal to 0",
        ),
        ({"DSCORE_GATEWAY__MAX_GATHER_S": "nan"}, "DSCORE_GATEWAY__MAX_GATHER_S", "finite number"),
        (
            {"DSCORE_GATEWAY__MAX_ENVELOPES_IN_FLIGHT": "0", "DSCORE_GATEWAY__MAX_GATHER_S": "0.004"},
            "DSCORE_GATEWAY__MAX_GATHER_S",
            "must be 0 without DSCORE_GATEWAY__MAX_ENVELOPES_IN_FLIGHT",
        ),
        (
            {
                "DSCORE_PROTOCOL": "pbft",
                "DSCORE_NODES": "n1,n2,n3,n4",
                "DSCORE_GATEWAY__MAX_GATHER_S": "0.004",
            },
            "DSCORE_GATEWAY__MAX_GATHER_S",
            "must be 0 without",
        ),
    ],
)
def test_a_bad_setting_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str, says: str
) -> None:
    monkeypatch.setenv("DSCORE_NODES", "n1,n2,n3")
    monkeypatch.setenv("DSCORE_AUTH_KEY", KEY)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_gateway_settings()
    message = str(caught.value)
    assert named in message and says in message, message
    assert KEY not in message


def test_the_key_is_required_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSCORE_NODES", "n1")
    with pytest.raises(ConfigError, match="DSCORE_AUTH_KEY: is required"):
        load_gateway_settings()
    monkeypatch.setenv("DSCORE_AUTH_KEY", "short-secret")
    with pytest.raises(ConfigError) as caught:
        load_gateway_settings()
    assert "short-secret" not in str(caught.value)
    assert "DSCORE_AUTH_KEY" in str(caught.value)


def test_settings_are_frozen() -> None:
    settings = GatewaySettings(nodes=("n1",), auth_key=KEY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="frozen"):
        settings.cluster_id = "x"  # type: ignore[misc]


# -- Idempotency-Key ----------------------------------------------------------------------------------


def test_parse_key() -> None:
    assert parse_key('"8e03978e-40d5-43e8-bc93-6894a57f9324"') == "8e03978e-40d5-43e8-bc93-6894a57f9324"
    assert parse_key("abc") == "abc"
    assert parse_key('"with \\"quote\\" and \\\\"') == 'with "quote" and \\'
    for bad, says in (
        ('""', "must not be empty"),
        ("", "must not be empty"),
        ('"a\\x"', "bad escape"),
        ('"a"b"', "unescaped"),
        ("x" * 256, "at most 255"),
        ("clé", "printable ASCII"),
        ('"tab\there"', "printable ASCII"),
    ):
        with pytest.raises(IdempotencyKeyError, match=says):
            parse_key(bad)


def test_table_lifecycle() -> None:
    table: IdempotencyTable[str] = IdempotencyTable(max_keys=10, ttl_s=60)
    one = fingerprint("PUT", "a", b'{"value": "1"}')
    assert fingerprint("PUT", "a", b'{"value": "1"}') == one
    assert fingerprint("PUT", "a1", b'{"value": "') != fingerprint("PUT", "a", b'1{"value": "')
    assert table.begin("k", one, now=0).verdict is Verdict.NEW
    assert table.begin("k", one, now=1).verdict is Verdict.IN_PROGRESS
    assert table.begin("k", b"other", now=1).verdict is Verdict.MISMATCH
    table.finish("k", "answer", now=2)
    replay = table.begin("k", one, now=3)
    assert replay.verdict is Verdict.REPLAY and replay.response == "answer"
    # expired: the key is free again
    assert table.begin("k", b"other", now=62.5).verdict is Verdict.NEW
    table.forget("k")
    assert len(table) == 0
    # unknown: resumed by a retry; dropped unknown keys are reported (their sessions are let go)
    table.begin("u", one, now=0)
    table.unknown("u", "504", now=0)
    assert table.begin("u", one, now=1).verdict is Verdict.RESUME
    assert table.begin("u", one, now=1).verdict is Verdict.IN_PROGRESS
    table.unknown("u", "504", now=1)
    table.expire(now=100)
    assert table.take_dropped_unknown() == ["u"] and len(table) == 0


def test_table_is_bounded_and_never_evicts_a_request_in_progress() -> None:
    table: IdempotencyTable[str] = IdempotencyTable(max_keys=3, ttl_s=1000)
    table.begin("running", b"r", now=0)
    for i in range(10):
        assert table.begin(f"k{i}", b"x", now=i).verdict is Verdict.NEW
        table.finish(f"k{i}", "done", now=i)
        assert len(table) <= 3
    assert table.evictions == 8
    assert table.begin("running", b"r", now=20).verdict is Verdict.IN_PROGRESS
    assert table.begin("k9", b"x", now=20).verdict is Verdict.REPLAY


# -- leader tracking ----------------------------------------------------------------------------------


def _response(outcome: Outcome, hint: str | None = None) -> ClientResponse:
    return ClientResponse(1, outcome, leader_hint=hint)


def test_tracker_follows_hints_and_confirms_leaders_by_service() -> None:
    tracker = LeaderTracker(lambda: ("n1", "n2", "n3"))
    assert tracker.target() == "n1"
    tracker.answered("n1", 0.0, _response(Outcome.NOT_LEADER, "n3"))
    assert tracker.target() == "n3" and tracker.leader is None  # a hint is a guess, not a leader
    assert tracker.served("n3", 1.0, _response(Outcome.OK)) is not None
    assert tracker.leader == "n3" and tracker.leader_changes == 0
    assert tracker.served("n3", 2.0, _response(Outcome.OK)) is None  # nothing new
    # the leader stops answering: lost; the next node in turn is tried
    tracker.timed_out("n3", 3.0)
    assert tracker.leader is None and tracker.lost_leader == "n3" and tracker.leader_losses == 1
    assert tracker.target() == "n1"
    tracker.answered("n1", 3.1, _response(Outcome.NOT_LEADER, None))
    assert tracker.target() == "n2"
    event = tracker.served("n2", 3.5, _response(Outcome.OK))
    assert event is not None and event.previous == "n3" and event.leader == "n2"
    assert event.failover_s == pytest.approx(1.5)  # from the last success (2.0) to this one
    assert tracker.leader_changes == 1
    # a leader that steps down while a request is pending answers UNKNOWN naming another leader
    tracker.answered("n2", 4.0, _response(Outcome.UNKNOWN, "n1"))
    assert tracker.leader is None and tracker.target() == "n1"
    # the same node serving again after a loss is a gap but not a change
    event = tracker.served("n2", 4.5, _response(Outcome.OK))
    assert event is not None and event.failover_s == pytest.approx(1.0) and tracker.leader_changes == 1
    # stale reads go round every member
    assert {tracker.stale_target() for _ in range(3)} == {"n1", "n2", "n3"}


def test_a_silent_node_is_passed_over_a_while_and_hints_naming_it_not_followed() -> None:
    tracker = LeaderTracker(lambda: ("n1", "n2", "n3"), suspect_for_s=0.2)
    tracker.served("n1", 0.0, _response(Outcome.OK))
    tracker.attempted("n1", 1.0)  # asked; nothing comes back
    tracker.attempted("n1", 1.1)  # (the first unanswered attempt is what counts)
    assert tracker.silent_nodes(1.15, 0.2) == []
    assert tracker.silent_nodes(1.21, 0.2) == ["n1"]
    assert tracker.suspect("n1", 1.21) is True and tracker.suspect("n1", 1.25) is False
    tracker.timed_out("n1", 1.25)  # its attempts were ended as timeouts
    assert tracker.leader is None and tracker.lost_leader == "n1"
    assert tracker.target() == "n2"
    # the election is not over: the followers still name the dead leader, and are not followed back to it
    tracker.answered("n2", 1.3, _response(Outcome.NOT_LEADER, "n1"))
    assert tracker.target() == "n3"
    tracker.answered("n3", 1.31, _response(Outcome.NOT_LEADER, "n1"))
    assert tracker.target() == "n2"  # the round passes over n1
    # `suspect_for_s` on, it may be back (or leader again): hints naming it are followed
    tracker.attempted("n2", 1.5)
    tracker.answered("n2", 1.5, _response(Outcome.NOT_LEADER, "n1"))
    assert tracker.target() == "n1"
    # an answer ends the suspicion and the silence
    tracker.attempted("n1", 1.55)
    tracker.served("n1", 1.6, _response(Outcome.OK))
    assert tracker.suspects == {} and tracker.silent_nodes(9.0, 0.2) == []
    assert tracker.leader == "n1"


def test_every_node_silent_still_gets_asked() -> None:
    tracker = LeaderTracker(lambda: ("n1", "n2"), suspect_for_s=10.0)
    for node in ("n1", "n2"):
        tracker.attempted(node, 0.0)
        assert tracker.suspect(node, 1.0)
    assert tracker.target() in {"n1", "n2"}  # nobody else to ask


# -- session pool -------------------------------------------------------------------------------------


async def test_pool_is_bounded_and_pins_sessions_outside_the_bound() -> None:
    pool = SessionPool(2)
    a = await pool.acquire(1)
    b = await pool.acquire(1)
    assert pool.busy == 2
    with pytest.raises(PoolExhaustedError):
        await pool.acquire(0.01)
    waiter = asyncio.create_task(pool.acquire(10))
    await asyncio.sleep(0)
    assert not waiter.done()
    pool.release(a)
    assert await waiter is a
    a.registered(7)
    a.seq = 5
    pool.pin(a, "key")
    assert pool.busy == 1 and pool.pinned == {"key": a}
    c = await pool.acquire(0.01)  # a pinned session frees its place in the pool
    assert c not in (a, b)
    resumed = pool.resume("key")
    assert resumed is a and a.seq == 5 and a.pinned_to is None
    pool.pin(a, "key")
    assert pool.unpin("key") and a.seq == 6  # the abandoned seq is skipped
    assert pool.idle == 1


# -- the service ----------------------------------------------------------------------------------------


async def test_drain_finishes_requests_in_flight_and_refuses_new_ones() -> None:
    async with harness(request_timeout_s=1.0) as h:
        assert (await h.http.put("/v1/kv/k", json={"value": "v"})).status_code == 204
        h.cluster.partition([[n] for n in h.cluster.node_ids])
        await h.cluster.wait_for(
            lambda: (
                not any((rt := h.cluster.runtime(n)) is not None and rt.is_leader for n in h.cluster.node_ids)
            ),
            TIMEOUT_S,
        )
        slow = asyncio.create_task(h.http.put("/v1/kv/k", json={"value": "w"}))
        while h.gateway.in_flight == 0:
            await asyncio.sleep(0)
        drain = asyncio.create_task(h.gateway.drain(TIMEOUT_S))
        await asyncio.sleep(0)
        refused = await h.http.put("/v1/kv/k", json={"value": "x"})
        assert refused.status_code == 503 and refused.json()["error"] == "shutting_down"
        assert refused.headers["Retry-After"] == "1"
        ready = await h.http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == "shutting down"
        assert await drain is True
        assert slow.done()  # drained means: the request in flight got its answer first
        assert (await slow).status_code == 503
        assert h.metric("dscore_gateway_requests_total", operation="put", outcome="shutting_down") == 1


async def test_in_flight_bound() -> None:
    async with harness(max_in_flight=1, idempotency_max_keys=10, request_timeout_s=1.0) as h:
        h.cluster.partition([[n] for n in h.cluster.node_ids])
        await h.cluster.wait_for(
            lambda: (
                not any((rt := h.cluster.runtime(n)) is not None and rt.is_leader for n in h.cluster.node_ids)
            ),
            TIMEOUT_S,
        )
        slow = asyncio.create_task(h.http.get("/v1/kv/k"))
        while h.gateway.in_flight == 0:
            await asyncio.sleep(0)
        busy = await h.http.get("/v1/kv/k")
        assert busy.status_code == 503 and busy.json()["error"] == "gateway_busy"
        assert busy.headers["Retry-After"] == "1"
        assert (await slow).status_code == 503
        # health, readiness and metrics are never refused
        assert (await h.http.get("/metrics")).status_code == 200


async def test_probe_makes_an_idle_gateway_ready() -> None:
    async with harness(probe_interval_s=0.05) as h:
        await h.cluster.wait_for(lambda: h.gateway.readiness()[0], TIMEOUT_S)
        assert (await h.http.get("/readyz")).json() == {
            "ready": True,
            "reason": f"leader {h.cluster.leader()}",
        }
        assert h.metric("dscore_gateway_probes_total", outcome="ok") >= 1
        # probes are not HTTP requests
        assert h.metric("dscore_gateway_requests_total") == 0


async def test_stop_closes_what_the_gateway_owns() -> None:
    from dscore.runtime.cluster import EmbeddedCluster, raft_factory
    from dscore_gateway.service import Gateway
    from dscore_gateway.settings import GatewayOptions

    async with EmbeddedCluster(raft_factory(), 1) as cluster:
        endpoint = await cluster.client_endpoint("gw-own")
        closed = asyncio.Event()

        async def close() -> None:
            await endpoint.close()
            closed.set()

        gateway = Gateway(endpoint, GatewayOptions(endpoint_id="gw-own"), cluster_id="c", close=close)
        await gateway.start()
        await gateway.stop()
        assert closed.is_set() and gateway.draining
        await gateway.stop()  # idempotent


async def test_request_ids_from_a_random_start_round_trip() -> None:
    """A gateway's endpoint numbers its requests from a random point (`first_request_id`, so a restarted
    gateway on the same Kafka inbox never matches its predecessor's late replies); ids that large travel
    through the codec and back."""
    import httpx

    from dscore.runtime.client import ClientEndpoint
    from dscore.runtime.cluster import EmbeddedCluster, raft_factory
    from dscore_gateway.app import create_app
    from dscore_gateway.service import Gateway
    from dscore_gateway.settings import GatewayOptions
    from dscore_gateway.transport import first_request_id

    starts = {first_request_id() for _ in range(100)}
    assert len(starts) == 100 and max(starts) < 2**56
    async with EmbeddedCluster(raft_factory(), 3) as cluster:
        await cluster.wait_for_leader(TIMEOUT_S)
        transport = cluster.network.add_client("gw-big-ids")
        endpoint = ClientEndpoint(
            transport, lambda: cluster.node_ids, key=cluster.auth_key, first_request_id=2**56 - 10
        )
        await endpoint.start()
        gateway = Gateway(
            endpoint, GatewayOptions(endpoint_id="gw-big-ids"), cluster_id="c", close=endpoint.close
        )
        await gateway.start()
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(gateway)), base_url="http://g"
            ) as http:
                for i in range(20):  # crosses 2**56
                    assert (await http.put(f"/v1/kv/k{i}", json={"value": str(i)})).status_code == 204
                assert (await http.get("/v1/kv/k19")).json()["value"] == "19"
        finally:
            await gateway.stop()


async def test_pool_waiters_in_order_and_cancellation_loses_no_session() -> None:
    pool = SessionPool(1)
    held = await pool.acquire(1)
    first = asyncio.create_task(pool.acquire(10))
    second = asyncio.create_task(pool.acquire(10))
    await asyncio.sleep(0)
    first.cancel()  # a waiter that goes away passes its turn on
    pool.release(held)
    assert await second is held
    with pytest.raises(asyncio.CancelledError):
        await first
    assert pool.busy == 1
    pool.release(held)
    # a session handed over just as its waiter is cancelled goes back to the pool
    taken = await pool.acquire(1)
    late = asyncio.create_task(pool.acquire(10))
    await asyncio.sleep(0)
    pool.release(taken)  # hands `taken` to `late`...
    late.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await late
    assert pool.busy == 0 and pool.idle == 1


async def test_a_cancelled_write_is_kept_resumable() -> None:
    """An HTTP request cancelled while its write is in flight (uvicorn past its grace period) gives its
    session back pinned to its Idempotency-Key: the retry applies the write at most once."""
    async with harness(request_timeout_s=30.0) as h:
        assert (await h.http.put("/v1/kv/k", json={"value": "v"})).status_code == 204
        h.cluster.partition([[n] for n in h.cluster.node_ids])
        await h.cluster.wait_for(
            lambda: (
                not any((rt := h.cluster.runtime(n)) is not None and rt.is_leader for n in h.cluster.node_ids)
            ),
            TIMEOUT_S,
        )
        headers = {"Idempotency-Key": "cancelled-1"}
        before = h.metric("dscore_gateway_node_attempts_total")
        request = asyncio.create_task(h.http.post("/v1/kv/k/append", json={"value": "+"}, headers=headers))
        # cancelled after its write went out at least once
        await h.cluster.wait_for(lambda: h.metric("dscore_gateway_node_attempts_total") > before, TIMEOUT_S)
        assert h.gateway.in_flight == 1
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        assert h.gateway.pool.busy == 0
        assert list(h.gateway.pool.pinned) == ["cancelled-1"]
        h.cluster.heal()
        await h.cluster.wait_for_leader(TIMEOUT_S)
        retry = await h.http.post("/v1/kv/k/append", json={"value": "+"}, headers=headers)
        assert retry.status_code == 204
        assert (await h.http.get("/v1/kv/k")).json()["value"] == "v+"
        assert not h.gateway.pool.pinned and h.gateway.pool.busy == 0


# -- availability classes ----------------------------------------------------------------------------


def test_every_answer_is_classed_for_availability() -> None:
    # A new answer defined in outcomes but left out of ALL_ANSWERS would count as a failure unnoticed.
    defined = {value for value in vars(outcomes).values() if isinstance(value, outcomes.HttpAnswer)}
    defined |= set(outcomes.OUTCOME_HTTP.values())
    assert defined <= set(outcomes.ALL_ANSWERS)
    served, client = set(outcomes.SERVED_CODES), set(outcomes.CLIENT_CODES)
    assert not served & client
    # a key that holds nothing and a compare that failed are answers the cluster served
    assert served == {"ok", "not_found", "cas_mismatch"}
    for answer in outcomes.ALL_ANSWERS:
        if answer.code in served:
            continue
        # every other 4xx is the client's doing; every 5xx, the service failing
        assert (answer.code in client) == (answer.status < 500), answer
    assert outcomes.CLIENT_DISCONNECTED in client
    assert outcomes.HTTP_ERROR not in served | client
