"""Every route of the gateway's HTTP API against an embedded Raft cluster, through FastAPI's ASGI app:
the answers, every status the gateway gives for bad input, and the JSON error bodies."""

from __future__ import annotations

import asyncio
import gzip
import json
import sys

import httpx
from gw_harness import Harness, harness
from starlette.exceptions import HTTPException as StarletteHTTPException

from dscore.core.client_messages import Outcome
from dscore_gateway.app import create_app
from dscore_gateway.outcomes import OUTCOME_HTTP


async def test_put_get_delete(h: Harness) -> None:
    put = await h.http.put("/v1/kv/colour", json={"value": "blue"})
    assert put.status_code == 204, put.text
    assert put.content == b""
    got = await h.http.get("/v1/kv/colour")
    assert got.status_code == 200
    assert got.json() == {"key": "colour", "value": "blue"}
    assert got.headers["Dscore-Consistency"] == "linearizable"
    # the node that answered: the leader, for a linearizable read and for a write
    assert got.headers["Dscore-Node"] == h.cluster.leader() == put.headers["Dscore-Node"]
    # what the gateway answered is what the replicated state machines hold
    leader = h.cluster.runtime(h.cluster.leader() or "")
    assert leader is not None and leader.state_machine.read("colour") == "blue"
    deleted = await h.http.delete("/v1/kv/colour")
    assert deleted.status_code == 204
    absent = await h.http.get("/v1/kv/colour")
    assert absent.status_code == 404
    assert absent.json() == {"error": "not_found", "message": "no value under key 'colour'", "key": "colour"}
    # deleting an absent key is not an error
    assert (await h.http.delete("/v1/kv/colour")).status_code == 204


async def test_empty_string_is_a_value_not_absence(h: Harness) -> None:
    assert (await h.http.put("/v1/kv/e", json={"value": ""})).status_code == 204
    got = await h.http.get("/v1/kv/e")
    assert got.status_code == 200 and got.json()["value"] == ""


async def test_cas(h: Harness) -> None:
    # expected null: only if absent
    first = await h.http.post("/v1/kv/lock/cas", json={"expected": None, "value": "owner-a"})
    assert first.status_code == 204, first.text
    again = await h.http.post("/v1/kv/lock/cas", json={"expected": None, "value": "owner-b"})
    assert again.status_code == 409
    body = again.json()
    assert body["error"] == "cas_mismatch"
    assert body["current"] == "owner-a"
    assert body["key"] == "lock"
    assert "compare failed" in body["message"]
    swapped = await h.http.post("/v1/kv/lock/cas", json={"expected": "owner-a", "value": "owner-b"})
    assert swapped.status_code == 204
    assert (await h.http.get("/v1/kv/lock")).json()["value"] == "owner-b"
    assert body["message"] == "compare failed: the key holds another value"


async def test_cas_on_an_absent_key_says_current_is_null(h: Harness) -> None:
    """A compare against a key that holds nothing: 409 with `"current": null` and a message saying the
    key holds no value (not "another value"), replayed the same for a retried Idempotency-Key."""
    expected = {
        "error": "cas_mismatch",
        "message": "compare failed: the key holds no value",
        "key": "nothing",
        "current": None,
    }
    missing = await h.http.post("/v1/kv/nothing/cas", json={"expected": "x", "value": "y"})
    assert missing.status_code == 409
    assert missing.json() == expected
    retried = {"Idempotency-Key": '"cas-1"'}
    first = await h.http.post("/v1/kv/nothing/cas", json={"expected": "x", "value": "y"}, headers=retried)
    again = await h.http.post("/v1/kv/nothing/cas", json={"expected": "x", "value": "y"}, headers=retried)
    assert first.status_code == again.status_code == 409
    assert first.json() == again.json() == expected
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await h.http.get("/v1/kv/nothing")).status_code == 404


async def test_append(h: Harness) -> None:
    for part in ("a", "b", "c"):
        response = await h.http.post("/v1/kv/log/append", json={"value": part})
        assert response.status_code == 204, response.text
    assert (await h.http.get("/v1/kv/log")).json()["value"] == "abc"


async def test_keys_may_contain_slashes_and_unicode(h: Harness) -> None:
    assert (await h.http.put("/v1/kv/users/42/name", json={"value": "Zoë"})).status_code == 204
    assert (await h.http.get("/v1/kv/users/42/name")).json() == {"key": "users/42/name", "value": "Zoë"}
    # a key ending in /cas is a key for PUT and GET; only POST .../cas is the compare-and-set
    assert (await h.http.put("/v1/kv/a/cas", json={"value": "v"})).status_code == 204
    assert (await h.http.get("/v1/kv/a/cas")).json() == {"key": "a/cas", "value": "v"}
    assert (await h.http.put("/v1/kv/caf%C3%A9%2Fx", json={"value": "1"})).status_code == 204
    assert (await h.http.get("/v1/kv/café/x")).json()["value"] == "1"


async def test_stale_and_lease_reads(h: Harness) -> None:
    assert (await h.http.put("/v1/kv/r", json={"value": "1"})).status_code == 204
    lease = await h.http.get("/v1/kv/r", params={"consistency": "lease"})
    assert lease.status_code == 200 and lease.json()["value"] == "1"
    assert lease.headers["Dscore-Consistency"] == "linearizable"
    # a stale read may come from any node; once every node applied the write, each answers it
    await h.cluster.wait_for(
        lambda: all(
            (rt := h.cluster.runtime(n)) is not None and rt.state_machine.read("r") == "1"
            for n in h.cluster.node_ids
        ),
        10,
    )
    answered_by = set()
    for _ in range(2 * len(h.cluster.node_ids)):
        stale = await h.http.get("/v1/kv/r", params={"consistency": "stale"})
        assert stale.status_code == 200 and stale.json()["value"] == "1"
        assert stale.headers["Dscore-Consistency"] == "stale"
    for node, seen in h.gateway.client.tracker.observations.items():
        if seen.last_outcome == "ok":
            answered_by.add(node)
    # stale reads go round the members, not only to the leader
    assert answered_by == set(h.cluster.node_ids)


async def test_bad_input_gets_400_with_a_message(h: Harness) -> None:
    bad_mode = await h.http.get("/v1/kv/x", params={"consistency": "eventual"})
    assert bad_mode.status_code == 400
    assert bad_mode.json()["error"] == "bad_request"
    assert "query.consistency" in bad_mode.json()["message"]
    assert "linearizable" in bad_mode.json()["message"]

    empty = await h.http.put("/v1/kv/", json={"value": "v"})
    assert empty.status_code == 400 and "must not be empty" in empty.json()["message"]

    long_key = "k" * 1025
    too_long = await h.http.get(f"/v1/kv/{long_key}")
    assert too_long.status_code == 400 and "1025 bytes" in too_long.json()["message"]

    not_utf8 = await h.http.put("/v1/kv/%ff%fe", json={"value": "v"})
    assert not_utf8.status_code == 400 and "UTF-8" in not_utf8.json()["message"]

    not_json = await h.http.put(
        "/v1/kv/x", content=b"{value: 1", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 400
    assert not_json.json()["error"] == "bad_request"
    assert "not valid JSON" in not_json.json()["message"]

    bad_key = await h.http.put("/v1/kv/x", json={"value": "v"}, headers={"Idempotency-Key": '""'})
    assert bad_key.status_code == 400 and "Idempotency-Key must not be empty" in bad_key.json()["message"]
    # nothing of these reached the cluster as a write
    assert (await h.http.get("/v1/kv/x")).status_code == 404


async def test_bad_bodies_get_422_with_what_was_wrong(h: Harness) -> None:
    cases = [
        ({"valu": "v"}, ["body.value: Field required", "body.valu: Extra inputs are not permitted"]),
        ({"value": 12}, ["body.value: Input should be a valid string"]),
        ({"value": None}, ["body.value: Input should be a valid string"]),
        (["v"], ["the body must be a JSON object"]),
    ]
    for body, messages in cases:
        response = await h.http.put("/v1/kv/x", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"] == "invalid_body"
        for message in messages:
            assert message in response.json()["message"], (body, response.json())
    missing = await h.http.put("/v1/kv/x")
    assert missing.status_code == 422 and "a JSON body is required" in missing.json()["message"]
    cas = await h.http.post("/v1/kv/x/cas", json={"value": "v"})
    assert cas.status_code == 422 and "body.expected: Field required" in cas.json()["message"]
    surrogate = await h.http.put(
        "/v1/kv/x", content=b'{"value": "\\ud800"}', headers={"Content-Type": "application/json"}
    )
    assert surrogate.status_code == 422
    assert "lone surrogate" in surrogate.json()["message"]
    assert (await h.http.get("/v1/kv/x")).status_code == 404


async def test_413_for_a_body_over_the_limit(h: Harness) -> None:
    limit = h.gateway.options.max_body_bytes
    big = {"value": "v" * limit}
    response = await h.http.put("/v1/kv/big", json=big)
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert f"larger than {limit} bytes" in response.json()["message"]

    # without a Content-Length (chunked), the limit holds while reading
    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"value": "'
        for _ in range(limit // 1000 + 1):
            yield b"x" * 1000
        yield b'"}'

    chunked = await h.http.put("/v1/kv/big", content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    # just under the limit passes
    fits = await h.http.put("/v1/kv/big", json={"value": "v" * (limit - 20)})
    assert fits.status_code == 204
    assert h.metric("dscore_gateway_requests_total", operation="put", outcome="body_too_large") == 2


async def test_415_for_a_body_that_is_not_json(h: Harness) -> None:
    response = await h.http.put("/v1/kv/x", content=b'{"value": "v"}', headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert "application/json" in response.json()["message"] and "text/plain" in response.json()["message"]
    ok = await h.http.put(
        "/v1/kv/x", content=b'{"value": "v"}', headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert ok.status_code == 204


async def test_unknown_routes_and_methods_answer_json(h: Harness) -> None:
    nowhere = await h.http.get("/v2/kv/x")
    assert nowhere.status_code == 404 and nowhere.json()["error"] == "no_such_route"
    wrong = await h.http.post("/v1/kv/x", json={"value": "v"})
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"


async def test_cluster_view(h: Harness) -> None:
    assert (await h.http.put("/v1/kv/x", json={"value": "v"})).status_code == 204
    view = (await h.http.get("/v1/cluster")).json()
    leader = h.cluster.leader()
    assert view["cluster_id"] == "test"
    assert view["gateway"] == "gw-test"
    assert view["members"] == list(h.cluster.node_ids)
    assert view["leader"] == leader
    assert view["source"] == "gateway"
    assert view["term"] is None
    roles = {n["id"]: n for n in view["nodes"]}
    assert set(roles) == set(h.cluster.node_ids)
    assert roles[leader]["role"] == "leader" and roles[leader]["last_outcome"] == "ok"
    assert roles[leader]["last_answer_s_ago"] is not None


async def test_health_ready_and_metrics(h: Harness) -> None:
    assert (await h.http.get("/healthz")).json() == {"status": "ok"}
    # nothing succeeded yet through this gateway (the probe is off in tests): not ready
    not_ready = await h.http.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["ready"] is False
    assert (await h.http.put("/v1/kv/x", json={"value": "v"})).status_code == 204
    ready = await h.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    metrics = await h.http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for name in (
        'dscore_gateway_requests_total{operation="put",outcome="ok"} 1.0',
        "dscore_gateway_request_duration_seconds_bucket",
        "dscore_failover_seconds_bucket",
        "dscore_gateway_leader_changes_total 0.0",
        "dscore_gateway_session_registrations_total 1.0",
        'dscore_gateway_sessions{state="idle"} 1.0',
        "dscore_gateway_leader_known 1.0",
        "dscore_gateway_in_flight_requests 0.0",
        "dscore_gateway_idempotency_keys 0.0",
        'dscore_gateway_gathers_total{ended="filled"} 0.0',
        'dscore_gateway_gathers_total{ended="expired"} 0.0',
    ):
        assert name in text, name


async def test_concurrent_requests(h: Harness) -> None:
    """Many clients at once: writes to distinct keys and appends to one key all take effect once."""
    writers = 40

    async def one(i: int) -> tuple[int, int]:
        put = await h.http.put(f"/v1/kv/c{i}", json={"value": str(i)})
        append = await h.http.post("/v1/kv/shared/append", json={"value": f"<{i}>"})
        return put.status_code, append.status_code

    results = await asyncio.gather(*(one(i) for i in range(writers)))
    assert results == [(204, 204)] * writers
    reads = await asyncio.gather(*(h.http.get(f"/v1/kv/c{i}") for i in range(writers)))
    assert [r.json()["value"] for r in reads] == [str(i) for i in range(writers)]
    shared = (await h.http.get("/v1/kv/shared")).json()["value"]
    assert sorted(shared[1:-1].split("><")) == sorted(str(i) for i in range(writers))
    # one session per write in flight, never more than the pool holds
    assert h.gateway.pool.busy == 0
    assert h.gateway.pool.idle <= h.gateway.options.session_pool_size


async def test_every_outcome_has_one_status() -> None:
    assert set(OUTCOME_HTTP) == set(Outcome)
    assert OUTCOME_HTTP[Outcome.OK].status == 204
    assert OUTCOME_HTTP[Outcome.CAS_MISMATCH].status == 409
    assert OUTCOME_HTTP[Outcome.NOT_LEADER].status == 503 and OUTCOME_HTTP[Outcome.NOT_LEADER].retry_after
    assert OUTCOME_HTTP[Outcome.OVERLOADED].status == 503 and OUTCOME_HTTP[Outcome.OVERLOADED].retry_after
    assert OUTCOME_HTTP[Outcome.UNKNOWN].status == 504 and not OUTCOME_HTTP[Outcome.UNKNOWN].retry_after
    assert OUTCOME_HTTP[Outcome.BAD_REQUEST].status == 400


# -- keys, bodies, headers and methods: the same answer whichever path serves the request --------------


async def test_keys_with_control_characters_are_refused_before_anything_else(h: Harness) -> None:
    """A key with a control character is a 400 on every route, before its body, method or anything else
    is looked at: Starlette's `{key:path}` (`.*$`) matched `victim%0A` as `victim`, so a DELETE or an
    Idempotency-Key PUT of `victim\\n` hit `victim` while a plain PUT stored "victim\\n"."""
    assert (await h.http.put("/v1/kv/victim", json={"value": "v"})).status_code == 204
    idempotent = {"Idempotency-Key": '"alias-1"'}
    cases: list[tuple[str, str, object, dict[str, str]]] = [
        ("DELETE", "/v1/kv/victim%0A", None, {}),
        ("DELETE", "/v1/kv/victim%0A", None, idempotent),
        ("PUT", "/v1/kv/victim%0A", {"value": "overwritten"}, {}),
        ("PUT", "/v1/kv/victim%0A", {"value": "overwritten"}, idempotent),
        ("GET", "/v1/kv/victim%0A", None, {}),
        ("POST", "/v1/kv/victim%0A/append", {"value": "x"}, {}),
        ("POST", "/v1/kv/victim/append%0A", {"value": "x"}, {}),
        ("POST", "/v1/kv/victim/cas%0A", {"expected": "v", "value": "x"}, {}),
        ("PUT", "/v1/kv/a%0Ab", {"value": "1"}, {}),
        ("GET", "/v1/kv/a%0Ab", None, {}),
        ("DELETE", "/v1/kv/a%0Ab", None, {}),
        ("PUT", "/v1/kv/nul%00", {"value": "1"}, {}),
        ("PUT", "/v1/kv/tab%09tab", {"value": "1"}, {}),
        ("PUT", "/v1/kv/del%7F", {"value": "1"}, {}),
        ("PUT", "/v1/kv/c1%C2%85", {"value": "1"}, {}),  # U+0085, a C1 control
        # before anything else: a body the routes would refuse (422), a method no route takes (405)
        ("PUT", "/v1/kv/victim%0A", ["not", "an", "object"], {}),
        ("PATCH", "/v1/kv/victim%0A", None, {}),
    ]
    for method, path, body, headers in cases:
        response = await h.http.request(method, path, json=body, headers=headers)
        assert response.status_code == 400, (method, path, response.text)
        error = response.json()
        assert error["error"] == "bad_request", (method, path, error)
        assert "the key must not contain control characters: U+00" in error["message"], (method, path)
    first = await h.http.delete("/v1/kv/victim%0A")
    assert first.json()["message"] == (
        "the key must not contain control characters: U+000A at character 7 of the key"
    )
    # a draining gateway refuses it the same (the key is looked at first)
    h.gateway.draining = True
    try:
        assert (await h.http.delete("/v1/kv/victim%0A")).status_code == 400
    finally:
        h.gateway.draining = False
    # nothing of these reached the cluster
    assert (await h.http.get("/v1/kv/victim")).json() == {"key": "victim", "value": "v"}
    leader = h.cluster.runtime(h.cluster.leader() or "")
    assert leader is not None
    for key in ("victim\n", "a\nb", "a", "nul\x00", "del\x7f"):
        assert leader.state_machine.read(key) is None, key
    refused = len(cases) + 2
    assert h.metric("dscore_gateway_requests_total", outcome="bad_request") == refused
    # outside /v1/ too: no route matches a path with a newline as the path without it
    assert (await h.http.get("/healthz%0A")).status_code == 400


async def test_the_routes_serve_no_key_but_the_rest_of_the_path(h: Harness) -> None:
    """Behind the middleware's check, the routes themselves refuse a match whose key is not the decoded
    rest of the path (`victim\\n` matched as `victim`)."""
    assert (await h.http.put("/v1/kv/victim", json={"value": "v"})).status_code == 204
    app = create_app(h.gateway, manage_lifecycle=False)
    transport = httpx.ASGITransport(app=app._fastapi)  # the routes, without the middleware
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as routes:
        for method, path, body in [
            ("DELETE", "/v1/kv/victim%0A", None),
            ("PUT", "/v1/kv/victim%0A", {"value": "overwritten"}),
            ("POST", "/v1/kv/victim/cas%0A", {"expected": "v", "value": "x"}),
            ("GET", "/v1/kv/victim%0A", None),
        ]:
            response = await routes.request(method, path, json=body)
            assert response.status_code == 400, (method, path, response.text)
            assert "control characters" in response.json()["message"]
    assert (await h.http.get("/v1/kv/victim")).json()["value"] == "v"


async def test_bodies_that_cannot_be_read_as_json_are_bad_requests(h: Harness) -> None:
    """What FastAPI's parser raises beyond a syntax error (nesting past the recursion limit, a number of
    more digits than Python converts, invalid UTF-8) is a 400 bad_request saying what was wrong, never a
    500 nor an `http_error` (which availability counts as a failure)."""
    nested = b'{"value":' + b"[" * 1000 + b"]" * 1000 + b"}"
    digits = b'{"value": ' + b"1" * 5000 + b"}"
    not_utf8 = b'{"value": "caf\xe9"}'
    json_type = {"Content-Type": "application/json"}
    cases = [
        (nested, "the body cannot be read as JSON: it is nested too deeply"),
        (
            digits,
            f"the body cannot be read as JSON: a number in it has more than {sys.get_int_max_str_digits()}",
        ),
        (not_utf8, "the body cannot be read as JSON: it is not valid UTF-8 (invalid continuation byte"),
    ]
    for method, path in [("PUT", "/v1/kv/x"), ("POST", "/v1/kv/x/append"), ("POST", "/v1/kv/x/cas")]:
        for body, message in cases:
            response = await h.http.request(method, path, content=body, headers=json_type)
            assert response.status_code == 400, (method, path, body[:20], response.text)
            assert response.json()["error"] == "bad_request"
            assert response.json()["message"].startswith(message), response.json()
    assert h.metric("dscore_gateway_requests_total", operation="put", outcome="bad_request") == 3
    assert h.metric("dscore_gateway_requests_total", outcome="bad_request") == 9
    assert h.metric("dscore_gateway_requests_total", outcome="http_error") == 0
    assert h.metric("dscore_gateway_requests_total", outcome="internal_error") == 0
    assert (await h.http.get("/v1/kv/x")).status_code == 404


async def test_a_content_encoding_is_refused_with_415(h: Harness) -> None:
    json_type = {"Content-Type": "application/json"}
    compressed = await h.http.put(
        "/v1/kv/x",
        content=gzip.compress(b'{"value": "v"}'),
        headers={**json_type, "Content-Encoding": "gzip"},
    )
    assert compressed.status_code == 415
    assert compressed.json() == {
        "error": "unsupported_media_type",
        "message": "Content-Encoding gzip is not supported: send the body unencoded",
    }
    assert compressed.headers["Accept-Encoding"] == "identity"
    # a plain body that says it is encoded is not taken as plain either
    lying = await h.http.put(
        "/v1/kv/x", content=b'{"value": "v"}', headers={**json_type, "Content-Encoding": "br"}
    )
    assert lying.status_code == 415
    assert (await h.http.get("/v1/kv/x")).status_code == 404
    identity = await h.http.put(
        "/v1/kv/x", content=b'{"value": "v"}', headers={**json_type, "Content-Encoding": "identity"}
    )
    assert identity.status_code == 204


async def test_other_framework_errors_get_client_codes() -> None:
    """A 4xx the framework raises is the client's doing (`bad_request`, its status kept); only a 5xx is
    `http_error`."""
    from starlette.requests import Request

    from dscore_gateway.app import OUTCOME_SCOPE_KEY, _on_http_error

    async with harness() as h:
        app = create_app(h.gateway, manage_lifecycle=False)
        for status, code in [
            (400, "bad_request"),
            (431, "bad_request"),
            (413, "body_too_large"),
            (502, "http_error"),
        ]:
            scope: dict[str, object] = {
                "type": "http",
                "method": "GET",
                "path": "/v1/x",
                "headers": [],
                "query_string": b"",
                "app": app,
            }
            response = await _on_http_error(Request(scope), StarletteHTTPException(status, "what was wrong"))
            assert response.status_code == status
            assert json.loads(bytes(response.body)) == {"error": code, "message": "what was wrong"}
            assert scope[OUTCOME_SCOPE_KEY] == code


async def test_405_names_every_allowed_method(h: Harness) -> None:
    """RFC 9110: a 405 carries `Allow`; it lists every method some route serves on the path."""
    for method, path, allowed in [
        ("POST", "/v1/kv/x", "GET, HEAD, PUT, DELETE"),
        ("PATCH", "/v1/kv/x", "GET, HEAD, PUT, DELETE"),
        ("PATCH", "/v1/kv/x/cas", "GET, HEAD, PUT, POST, DELETE"),
        ("DELETE", "/v1/cluster", "GET, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
    ]:
        response = await h.http.request(method, path)
        assert response.status_code == 405, (method, path, response.text)
        assert response.headers["Allow"] == allowed, (method, path)
        assert response.json()["error"] == "method_not_allowed"
        assert allowed in response.json()["message"]


async def test_head_is_get_without_a_body(h: Harness) -> None:
    assert (await h.http.put("/v1/kv/a", json={"value": "1"})).status_code == 204
    gets_before = h.metric("dscore_gateway_requests_total", operation="get")
    for path in [
        "/v1/kv/a",
        "/v1/kv/absent",
        "/v1/kv/a?consistency=bogus",
        "/healthz",
        "/readyz",
        "/v1/cluster",
    ]:
        got = await h.http.get(path)
        head = await h.http.head(path)
        assert head.status_code == got.status_code, path
        assert head.content == b"", path
        assert set(head.headers) == set(got.headers), path
        if not path.startswith("/v1/cluster"):  # its "seconds ago" fields change the length
            assert head.headers == got.headers, path
    assert h.metric("dscore_gateway_requests_total", operation="get") == gets_before + 6
    stale = await h.http.head("/v1/kv/a", params={"consistency": "stale"})
    assert stale.status_code == 200 and stale.headers["Dscore-Consistency"] == "stale"
    assert stale.headers["Content-Length"] == str(len(b'{"key":"a","value":"1"}'))


async def test_a_header_sent_twice_is_refused(h: Harness) -> None:
    """More than one Content-Type or Idempotency-Key: 400 (the fast paths took the last, FastAPI the
    first)."""
    body = b'{"value": "v"}'
    for headers in (
        [("Content-Type", "text/plain"), ("Content-Type", "application/json")],
        [("Content-Type", "application/json"), ("Content-Type", "text/plain")],
        [("Content-Type", "application/json"), ("Content-Type", "application/json")],
    ):
        response = await h.http.put("/v1/kv/d", content=body, headers=headers)
        assert response.status_code == 400, (headers, response.text)
        assert response.json() == {
            "error": "bad_request",
            "message": "more than one Content-Type header: send one",
        }
    keys = [("Content-Type", "application/json"), ("Idempotency-Key", '"k1"'), ("Idempotency-Key", '"k2"')]
    for method, path in [("PUT", "/v1/kv/d"), ("POST", "/v1/kv/d/append"), ("DELETE", "/v1/kv/d")]:
        response = await h.http.request(method, path, content=body, headers=keys)
        assert response.status_code == 400, (method, response.text)
        assert response.json()["message"] == "more than one Idempotency-Key header: send one"
    assert (await h.http.get("/v1/kv/d")).status_code == 404
    assert h.metric("dscore_gateway_idempotency_keys") == 0
