"""The OpenAPI document describes every route, its parameters, bodies and error answers."""

from __future__ import annotations

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
