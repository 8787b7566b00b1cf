"""The chaos service's HTTP API (ASGI, in process) on real backends: child processes and memory
transports reading the control channel; Grafana annotations posted to a real local HTTP server. The fault
API only with the bearer token (missing or wrong: 401, counted, nothing done); probes and metrics open."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from chaos_helpers import (
    AUTH,
    KEY,
    T0,
    TOKEN,
    Children,
    FixedLeader,
    JsonServer,
    VirtualClock,
    make_service,
    metric,
    settle,
    state_of,
    wait_state,
)
from pydantic import SecretStr

from dscore.transport.faults import FaultyTransport, MemoryControlChannel
from dscore.transport.memory import MemoryNetwork
from dscore_chaos.annotations import GrafanaAnnotator
from dscore_chaos.app import OPEN_PATHS, create_app
from dscore_chaos.model import FaultRequest
from dscore_chaos.service import ChaosService


class Api:
    """`client` sends the right bearer token; `anonymous` sends what each request says, nothing else."""

    def __init__(
        self, service: ChaosService, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
    ) -> None:
        self.service = service
        self.client = client
        self.anonymous = anonymous

    async def post(self, body: Any) -> httpx.Response:
        response = await self.client.post("/v1/faults", json=body)
        await settle()
        return response


async def _api(service: ChaosService, *, token: str | None = TOKEN) -> AsyncIterator[Api]:
    """The app behind `token` (None: DSCORE_CHAOS__INSECURE_NO_AUTH); its client sends the right token."""
    app = create_app(service, api_token=None if token is None else SecretStr(token))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://chaos", headers=AUTH) as client,
            httpx.AsyncClient(transport=transport, base_url="http://chaos") as anonymous,
        ):
            yield Api(service, client, anonymous)


@pytest.fixture
async def api(clock: VirtualClock, children: Children) -> AsyncIterator[Api]:
    children.start("node-n1")
    children.start("node-n2")
    service = make_service(
        clock, run_dir=children.run_dir, channel=MemoryControlChannel(), leader=FixedLeader("n1")
    )
    async for running in _api(service):
        yield running


async def test_start_list_get_and_stop_a_fault(api: Api, clock: VirtualClock, children: Children) -> None:
    response = await api.post(
        {
            "kind": "process_pause",
            "target": "node-n2",
            "params": {"duration_s": 30},
            "schedule": {"every_s": 60, "times": 2},
        }
    )
    assert response.status_code == 201, response.text
    fault = response.json()
    assert fault["state"] == "active" and fault["kind"] == "process_pause" and fault["target"] == "node-n2"
    assert fault["params"] == {"duration_s": 30.0}
    assert fault["schedule"] == {"every_s": 60.0, "times": 2, "start_after_s": 0.0}
    (injection,) = fault["injections"]
    assert injection["outcome"] == "injected" and injection["at"] == T0 and injection["target"] == "node-n2"
    pid = children.pid("node-n2")
    wait_state(pid, lambda s: s == "T", "paused")

    listed = (await api.client.get("/v1/faults")).json()["faults"]
    assert [f["id"] for f in listed] == [fault["id"]]
    assert (await api.client.get(f"/v1/faults/{fault['id']}")).json()["state"] == "active"

    stopped = await api.client.delete(f"/v1/faults/{fault['id']}")
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    assert stopped.json()["injections"][0]["end_detail"].startswith("SIGCONT")
    wait_state(pid, lambda s: s in ("S", "R"), "resumed")
    await clock.advance(120)
    assert len((await api.client.get(f"/v1/faults/{fault['id']}")).json()["injections"]) == 1


async def test_metrics_count_every_injection_by_kind(api: Api, children: Children) -> None:
    assert (await api.post({"kind": "process_kill", "target": "node-n1"})).status_code == 201
    assert children.procs["node-n1"].wait(timeout=10) == -9
    assert (await api.post({"kind": "process_kill", "target": "node-n1"})).status_code == 201  # gone now
    assert (await api.post({"kind": "partition", "params": {"duration_s": 5}})).status_code == 201
    text = (await api.client.get("/metrics")).text
    assert 'dscore_chaos_faults_injected_total{kind="kill"} 1.0' in text
    assert 'dscore_chaos_faults_injected_total{kind="partition"} 1.0' in text
    assert 'dscore_chaos_faults_injected_total{kind="link_drop"} 0.0' in text  # every kind, from the start
    assert 'dscore_chaos_injections_failed_total{kind="process_kill"} 1.0' in text
    assert "dscore_chaos_faults_active 1.0" in text  # the partition, for 5 s


async def test_health_names_the_enabled_kinds(api: Api) -> None:
    body = (await api.client.get("/healthz")).json()
    assert body == {
        "status": "ok",
        "kinds": ["process_kill", "process_pause", "omission", "delay", "partition"],
    }


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        ({"kind": "meteor"}, 422, "invalid_request", "kind"),
        ({"kind": "pod_kill"}, 422, "kind_unavailable", "pod_kill is not enabled"),
        ({"kind": "process_kill", "colour": "red"}, 422, "invalid_request", "colour"),
        ({"kind": "process_kill", "target": "../etc"}, 422, "invalid_request", "target"),
        ({"kind": "process_pause"}, 422, "invalid_request", "params.duration_s"),
        ({"kind": "process_pause", "params": {"duration_s": -1}}, 422, "invalid_request", "greater than 0"),
        ({"kind": "process_kill", "schedule": {"times": 3}}, 422, "invalid_request", "needs every_s"),
        ({"kind": "process_kill", "target": "all"}, 422, "invalid_request", "target 'all'"),
        ({"kind": "delay", "params": {"delay_ms": 0, "duration_s": 1}}, 422, "invalid_request", "delay_ms"),
        ({"kind": "omission", "target": "n7", "params": {"drop_probability": 1, "duration_s": 1}}, 422,
         "invalid_request", "not nodes of this cluster"),
        ({"kind": "partition", "params": {"groups": [["n1"], ["n1"]], "duration_s": 1}}, 422, "invalid_request",
         "one group only"),
        ({"kind": "process_pause", "params": {"duration_s": 601}}, 422, "invalid_request", "at most 600 s"),
    ],
)  # fmt: skip
async def test_bad_requests_get_one_clear_error(
    api: Api, body: dict[str, Any], status: int, code: str, message: str
) -> None:
    response = await api.post(body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert message in response.json()["message"], response.json()
    assert (await api.client.get("/v1/faults")).json() == {"faults": []}


async def test_malformed_json_and_unknown_ids(api: Api) -> None:
    response = await api.client.post(
        "/v1/faults", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422 and response.json()["error"] == "invalid_request"
    for method in ("GET", "DELETE"):
        missing = await api.client.request(method, "/v1/faults/f-nope")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert (await api.client.get("/v1/nothing")).json()["error"] == "not_found"


async def test_too_many_faults_is_503(clock: VirtualClock, children: Children) -> None:
    children.start("node-n1")
    service = make_service(clock, run_dir=children.run_dir, max_active_faults=1)
    async for api in _api(service):
        later = {"kind": "process_kill", "target": "node-n1", "schedule": {"start_after_s": 60}}
        assert (await api.post(later)).status_code == 201
        response = await api.post(later)
        assert response.status_code == 503 and response.json()["error"] == "too_many_faults"


async def test_a_partition_over_the_api_cuts_the_leader_off(clock: VirtualClock) -> None:
    channel = MemoryControlChannel()
    network = MemoryNetwork(["n1", "n2", "n3"])
    nodes = {
        n: FaultyTransport(
            network.endpoint(n),
            n,
            rng=random.Random(n),
            clock=clock.now,
            control=channel.source(),
            auth_key=KEY,
        )
        for n in ("n1", "n2", "n3")
    }
    for node in nodes.values():
        await node.start({})
    service = make_service(clock, channel=channel, leader=FixedLeader("n3"))
    async for api in _api(service):
        response = await api.post({"kind": "partition", "target": "leader", "params": {"duration_s": 10}})
        assert response.status_code == 201
        assert response.json()["injections"][0]["target"] == "n3 | n1,n2"
        assert nodes["n3"].rules.active[0].peers == frozenset({"n1", "n2"})
        await api.client.delete(f"/v1/faults/{response.json()['id']}")
        await settle()
        assert all(node.rules.active == () for node in nodes.values())
        assert metric(service, "dscore_chaos_faults_injected_total", kind="heal") == 1
    for node in nodes.values():
        await node.close()


async def test_openapi_lists_the_routes(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    assert set(spec["paths"]) >= {"/v1/faults", "/v1/faults/{fault_id}", "/healthz", "/metrics"}
    assert set(spec["paths"]["/v1/faults/{fault_id}"]) == {"get", "delete"}


# -- the bearer token ---------------------------------------------------------------------------------

#: a request to each route of the fault API (and to a path nothing serves): all need the token
PROTECTED = (
    ("POST", "/v1/faults"),
    ("GET", "/v1/faults"),
    ("GET", "/v1/faults/f-1"),
    ("DELETE", "/v1/faults/f-1"),
    ("GET", "/v1/nothing"),
)
PAUSE = {"kind": "process_pause", "target": "node-n2", "params": {"duration_s": 30}}


def _rejected(service: ChaosService) -> dict[str, float]:
    return {
        reason: metric(service, "dscore_chaos_requests_rejected_total", reason=reason)
        for reason in ("missing_token", "bad_token")
    }


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "missing_token"),
        ("", "missing_token"),
        ("Bearer", "missing_token"),
        ("Bearer    ", "missing_token"),
        (f"Basic {TOKEN}", "missing_token"),
        (TOKEN, "missing_token"),  # no scheme
        ("Bearer wrong", "bad_token"),
        (f"Bearer {TOKEN}x", "bad_token"),
        (f"Bearer {TOKEN[:-1]}", "bad_token"),
        (f"Bearer {TOKEN.upper()}", "bad_token"),
        (f"Bearer {TOKEN} {TOKEN}", "bad_token"),
        (f"Bearer {TOKEN[:16]}é{TOKEN[17:]}", "bad_token"),
    ],
)
async def test_the_fault_api_refuses_a_request_without_the_right_token(
    api: Api, children: Children, authorization: str | None, reason: str
) -> None:
    # as bytes: a client may send any (UTF-8 here), and the service must refuse, not fail
    headers = {} if authorization is None else {b"Authorization": authorization.encode()}
    for method, path in PROTECTED:
        body = PAUSE if method == "POST" else None
        response = await api.anonymous.request(method, path, json=body, headers=headers)
        await settle()
        assert response.status_code == 401, (method, path, response.text)
        why = "missing bearer token" if reason == "missing_token" else "bad bearer token"
        assert response.json() == {"error": "unauthorized", "message": why}
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="dscore-chaos"'), challenge
        assert ('error="invalid_token"' in challenge) == (reason == "bad_token"), challenge
    # nothing was done, and every refusal was counted under its reason
    assert api.service.faults() == []
    assert state_of(children.pid("node-n2")) in ("S", "R")
    other = "bad_token" if reason == "missing_token" else "missing_token"
    assert _rejected(api.service) == {reason: len(PROTECTED), other: 0}


async def test_the_right_token_is_accepted_whatever_the_schemes_case_and_spacing(
    api: Api, children: Children
) -> None:
    for authorization in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER   {TOKEN}  "):
        response = await api.anonymous.get("/v1/faults", headers={"Authorization": authorization})
        assert response.status_code == 200, (authorization, response.text)
    response = await api.anonymous.post(
        "/v1/faults", json=PAUSE, headers={"Authorization": f"bearer {TOKEN}"}
    )
    assert response.status_code == 201, response.text
    wait_state(children.pid("node-n2"), lambda s: s == "T", "paused")
    stopped = await api.anonymous.delete(
        f"/v1/faults/{response.json()['id']}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    assert _rejected(api.service) == {"missing_token": 0, "bad_token": 0}


async def test_probes_metrics_and_the_api_document_need_no_token(api: Api) -> None:
    health = await api.anonymous.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    metrics = await api.anonymous.get("/metrics")
    assert metrics.status_code == 200
    # zero-initialised: rate() sees the first refusal
    assert 'dscore_chaos_requests_rejected_total{reason="missing_token"} 0.0' in metrics.text
    assert 'dscore_chaos_requests_rejected_total{reason="bad_token"} 0.0' in metrics.text
    spec = (await api.anonymous.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            secured = operation.get("security") == [{"bearer": []}]
            assert secured == (path not in OPEN_PATHS), (method, path)
            assert ("401" in operation["responses"]) == secured, (method, path)
    assert (await api.anonymous.get("/docs")).status_code == 200
    assert _rejected(api.service) == {"missing_token": 0, "bad_token": 0}


async def test_refusals_are_counted_on_metrics(api: Api) -> None:
    for _ in range(2):
        assert (await api.anonymous.get("/v1/faults")).status_code == 401
    for _ in range(3):
        bad = await api.anonymous.get("/v1/faults", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
    assert (await api.client.get("/v1/faults")).status_code == 200  # the right one is not counted
    text = (await api.anonymous.get("/metrics")).text
    assert 'dscore_chaos_requests_rejected_total{reason="missing_token"} 2.0' in text
    assert 'dscore_chaos_requests_rejected_total{reason="bad_token"} 3.0' in text


async def test_without_a_token_the_api_is_open(clock: VirtualClock, children: Children) -> None:
    """`api_token=None`: what DSCORE_CHAOS__INSECURE_NO_AUTH=true serves (the settings refuse it otherwise)."""
    children.start("node-n1")
    service = make_service(clock, run_dir=children.run_dir)
    async for api in _api(service, token=None):
        response = await api.anonymous.post("/v1/faults", json={"kind": "process_kill", "target": "node-n1"})
        assert response.status_code == 201, response.text
        assert children.procs["node-n1"].wait(timeout=10) == -9
        spec = (await api.anonymous.get("/openapi.json")).json()
        assert "securitySchemes" not in spec.get("components", {})
        assert "401" not in spec["paths"]["/v1/faults"]["post"]["responses"]


@pytest.mark.parametrize("token", ["", "  ", f" {TOKEN}", f"{TOKEN}\n"])
def test_the_app_refuses_a_blank_or_unstripped_token(clock: VirtualClock, token: str) -> None:
    with pytest.raises(ValueError, match="non-blank, without surrounding whitespace"):
        create_app(make_service(clock), api_token=SecretStr(token))


# -- Grafana ----------------------------------------------------------------------------------------


async def test_each_injection_is_posted_to_grafana(
    clock: VirtualClock, children: Children, http_server: JsonServer
) -> None:
    children.start("node-n1")
    service = make_service(clock, run_dir=children.run_dir)
    failures: list[int] = []
    annotator = GrafanaAnnotator(
        http_server.url, "secret-token", dashboard_uid="dscore-availability", timeout_s=5,
        on_failure=lambda: failures.append(1),
    )  # fmt: skip
    service.annotator = annotator
    fault = service.start_fault(
        _request({"kind": "process_pause", "target": "node-n1", "params": {"duration_s": 1}})
    )
    await settle()
    await annotator.drain()
    (posted,) = http_server.recorded
    assert posted.path == "/api/annotations"
    assert posted.headers["Authorization"] == "Bearer secret-token"
    assert posted.body == {
        "time": int(T0 * 1000),
        "tags": ["dscore", "chaos", "pause"],
        "text": f"process_pause {fault.id}.0: {fault.injections[0].detail}",
        "dashboardUID": "dscore-availability",
    }
    http_server.post_status = 500
    await clock.advance(1)  # the pause ends: not a fault, nothing posted
    service.start_fault(_request({"kind": "process_kill", "target": "node-n1"}))
    await settle()
    await annotator.drain()
    assert len(http_server.recorded) == 2 and failures == [1]
    await service.close()


async def test_grafana_out_of_reach_is_counted_and_the_fault_still_made(
    clock: VirtualClock, children: Children
) -> None:
    victim = children.start("node-n1")
    service = make_service(clock, run_dir=children.run_dir)
    annotator = GrafanaAnnotator(
        "http://127.0.0.1:9", "t", dashboard_uid=None, timeout_s=2,
        on_failure=service.metrics.annotations_failed.inc,
    )  # fmt: skip
    service.annotator = annotator
    service.start_fault(_request({"kind": "process_kill", "target": "node-n1"}))
    await settle()
    assert victim.wait(timeout=10) == -9
    await asyncio.wait_for(annotator.drain(), 10)
    assert metric(service, "dscore_chaos_annotations_failed_total") == 1


def _request(body: dict[str, Any]) -> FaultRequest:
    return FaultRequest.model_validate(body)
