"""Seeded fuzzing of the HTTP API: random methods, paths (escapes, bad UTF-8, slashes), headers and
bodies (bad JSON, wrong shapes, wrong types, huge, surrogates, nested too deeply, numbers of too many
digits, invalid UTF-8, encoded). Whatever comes in, the gateway answers with a documented status and a
JSON error saying what was wrong (HEAD: the status and headers only); it never fails (500), never answers
`http_error` (availability would count the client's mistakes as the service failing), and keeps serving."""

from __future__ import annotations

import json
import random

from gw_harness import Harness

STATUSES = {200, 204, 400, 404, 405, 409, 413, 415, 422, 503, 504}
KEY_PARTS = [
    "a",
    "b",
    "k1",
    "users/1",
    "%2F",
    "%ff",
    "%C3%A9",
    "é",
    "%00",
    "..",
    "cas",
    "append",
    "x" * 300,
    " ",
    "%20",
    "%0A",  # control characters: refused (a trailing newline aliased the key without it)
    "%7F",
    "%C2%85",
    "%09",
]


def _key(rng: random.Random) -> str:
    return "".join(rng.choice(KEY_PARTS) for _ in range(rng.randint(0, 3)))


def _body(rng: random.Random, limit: int) -> tuple[bytes | None, str | None]:
    kind = rng.randrange(12)
    value: object
    if kind == 0:
        return None, None
    if kind >= 10:
        unreadable = [
            b'{"value":' + b"[" * 1000 + b"]" * 1000 + b"}",
            b'{"value": ' + b"7" * 5000 + b"}",
            b'{"value": "caf\xe9"}',
            b'{"expected": null, "value": "\xff"}',
        ]
        return rng.choice(unreadable), "application/json"
    if kind == 1:
        return rng.choice([b"{", b"[1,", b"nul", b'{"value": "a"', b"\xff\xfe", b""]), "application/json"
    if kind == 2:
        return b"v" * (limit + rng.randint(1, 100)), "application/json"
    if kind == 3:
        return b'{"value": "\\udc80"}', "application/json"
    if kind == 4:
        return json.dumps({"value": "x"}).encode(), rng.choice(
            ["text/plain", "application/x-www-form-urlencoded", ""]
        )
    fields: dict[str, object] = {}
    for name in rng.sample(["value", "expected", "valu", "extra"], rng.randint(0, 3)):
        fields[name] = rng.choice(["s", "", None, 1, 2.5, True, [], {"a": 1}, "ü" * rng.randint(0, 5)])
    value = fields if rng.random() < 0.9 else rng.choice([[], "x", 1, None])
    return json.dumps(value).encode(), "application/json"


async def test_fuzz_the_http_api(h: Harness) -> None:
    rng = random.Random(20260412)
    limit = h.gateway.options.max_body_bytes
    seen: dict[int, int] = {}
    for _ in range(400):
        method = rng.choice(["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD"])
        path = "/v1/kv/" + _key(rng) + rng.choice(["", "", "/cas", "/append", "/x"])
        if rng.random() < 0.05:
            path = rng.choice(["/v1/cluster", "/v1/", "/v1/kv", "/nowhere"])
        params = (
            {"consistency": rng.choice(["linearizable", "lease", "stale", "weird", ""])}
            if rng.random() < 0.3
            else None
        )
        headers: list[tuple[str, str | bytes]] = []
        body, content_type = _body(rng, limit) if method in ("PUT", "POST", "DELETE") else (None, None)
        if content_type:
            headers.append(("Content-Type", content_type))
        for _ in range(2 if rng.random() < 0.05 else 1):  # now and then twice
            if rng.random() < 0.3:
                headers.append(
                    ("Idempotency-Key", rng.choice(['"k1"', "k2", '""', '"bad\\q"', "é".encode(), "k" * 300]))
                )
            if content_type and rng.random() < 0.05:
                headers.append(("Content-Type", rng.choice(["application/json", "text/plain"])))
        if rng.random() < 0.03:
            headers.append(("Content-Encoding", rng.choice(["gzip", "identity", "br, identity"])))
        response = await h.http.request(method, path, params=params, content=body, headers=headers)
        status = response.status_code
        seen[status] = seen.get(status, 0) + 1
        assert status in STATUSES, (method, path, body, response.text)
        if method == "HEAD":
            assert response.content == b"", (path, response.content)
        elif status >= 400:
            error = response.json()
            assert set(error) >= {"error", "message"} and error["message"], (method, path, error)
        if status == 503:
            assert "Retry-After" in response.headers
    # the fuzzing reached the cluster and the gateway's own refusals alike
    assert {200, 204, 400, 404, 413, 415, 422} <= set(seen), seen
    assert h.cluster.node_failures() == {}
    assert h.metric("dscore_gateway_requests_total", outcome="internal_error") == 0
    assert h.metric("dscore_gateway_requests_total", outcome="http_error") == 0
    assert (await h.http.put("/v1/kv/after", json={"value": "ok"})).status_code == 204
    assert (await h.http.get("/v1/kv/after")).json()["value"] == "ok"
