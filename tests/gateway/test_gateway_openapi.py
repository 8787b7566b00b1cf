"""The OpenAPI document describes every route, its parameters, bodies and error answers."""

from __future__ import annotations

import json

from gw_harness import Harness


async def test_openapi_lists_every_route(h: Harness) -> None:
    response = await h.http.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    paths = {path: set(ops) for path, ops in doc["paths"].items()}
    assert paths == {
        "/v1/kv/{key}": {"put", "get", "delete"},
        "/v1/kv/{key}/cas": {"post"},
        "/v1/kv/{key}/append": {"post"},
        "/v1/cluster": {"get"},
        "/healthz": {"get"},
        "/readyz": {"get"},
        "/metrics": {"get"},
    }
    kv = doc["paths"]["/v1/kv/{key}"]
    assert set(kv["put"]["responses"]) >= {"204", "400", "409", "413", "415", "422", "503", "504"}
    assert set(kv["get"]["responses"]) >= {"200", "400", "404", "503"}
    get_params = {p["name"]: p for p in kv["get"]["parameters"]}
    assert get_params["consistency"]["in"] == "query"
    modes = doc["components"]["schemas"]["Consistency"]["enum"]
    assert modes == ["linearizable", "lease", "stale"]
    put_params = {p["name"]: p for p in kv["put"]["parameters"]}
    assert put_params["Idempotency-Key"]["in"] == "header"
    cas = doc["paths"]["/v1/kv/{key}/cas"]["post"]
    assert cas["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/CasBody")
    assert set(doc["components"]["schemas"]["CasBody"]["required"]) == {"expected", "value"}
    assert doc["components"]["schemas"]["ErrorBody"]["required"] == ["error", "message"]
    assert "ClusterView" in doc["components"]["schemas"]
    # the docs page is served too
    assert (await h.http.get("/docs")).status_code == 200


async def test_the_documented_answers_are_the_ones_sent(h: Harness) -> None:
    """No route declares FastAPI's default 422 `HTTPValidationError` (the gateway never sends it: its
    validation errors are `ErrorBody`s, 400 or 422, declared per route); every error is an `ErrorBody`
    (but /readyz's 503, a `Readiness`); the response headers are documented where they are sent."""
    doc = (await h.http.get("/openapi.json")).json()
    text = json.dumps(doc)
    assert "HTTPValidationError" not in text and "#/components/schemas/ValidationError" not in text
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) < 400 or path == "/readyz":
                    continue
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
                if status == "503":
                    assert "Retry-After" in response["headers"], (method, path)
    kv = doc["paths"]["/v1/kv/{key}"]
    # what a GET sends: a bad key or `consistency` is a 400 ErrorBody, not a 422
    assert set(kv["get"]["responses"]) == {"200", "400", "404", "503"}
    for status in ("200", "404", "503"):
        assert {"Dscore-Node", "Dscore-Consistency"} <= set(kv["get"]["responses"][status]["headers"])
    consistency = kv["get"]["responses"]["200"]["headers"]["Dscore-Consistency"]
    assert consistency["schema"]["enum"] == ["linearizable", "stale"]
    writes = [
        kv["put"],
        kv["delete"],
        doc["paths"]["/v1/kv/{key}/cas"]["post"],
        doc["paths"]["/v1/kv/{key}/append"]["post"],
    ]
    for write in writes:
        responses = write["responses"]
        assert "422" in responses and "413" in responses
        assert {"Dscore-Node", "Idempotent-Replayed"} <= set(responses["204"]["headers"])
        assert {"Retry-After", "Idempotent-Replayed"} <= set(responses["409"]["headers"])
        assert responses["503"]["headers"]["Retry-After"]["schema"] == {"type": "integer"}
    assert "415" not in kv["delete"]["responses"]  # only a PUT or POST body must be JSON
    assert "Retry-After" in doc["paths"]["/v1/cluster"]["get"]["responses"]["503"]["headers"]
    # a compare against an absent key answers `current: null`
    assert "null" in doc["components"]["schemas"]["ErrorBody"]["properties"]["current"]["description"]
