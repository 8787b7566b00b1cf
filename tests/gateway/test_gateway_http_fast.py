"""The plain-PUT fast path below ASGI (`dscore_gateway.http_fast`) against uvicorn's own protocol, on the
wire: two real uvicorn servers (the gateway's config, with and without the fast path) in front of one
gateway on an embedded Raft cluster, raw HTTP/1.1 over TCP, the same requests to both, the same bytes
back (but the Date header)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
import uvicorn
from gw_harness import TIMEOUT_S, Harness, harness

from dscore_gateway.app import create_app
from dscore_gateway.http_fast import FastPutProtocol
from dscore_gateway.main import _uvicorn_config
from dscore_gateway.settings import load_gateway_settings


@dataclass
class Served:
    port: int
    #: requests that reached the ASGI app (the middleware) on this server
    asgi_calls: list[str]


@asynccontextmanager
async def serve(h: Harness, *, fast: bool) -> AsyncIterator[Served]:
    """A uvicorn server of `h`'s gateway with the gateway's own config, on a free port."""
    app = create_app(h.gateway, manage_lifecycle=False)
    settings = load_gateway_settings(nodes=("n1", "n2", "n3"), auth_key="k" * 32)
    options = settings.gateway.model_copy(update={"host": "127.0.0.1", "port": 0, "http_fast_path": fast})
    config = _uvicorn_config(app, settings.model_copy(update={"gateway": options}))
    calls: list[str] = []
    front = app.front

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            calls.append(f"http {scope['method']} {scope['path']}")
        await front(scope, receive, send)

    app.front = counted  # type: ignore[assignment]  # the ASGI path only: the protocol kept `front`
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while not server.started:
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Served(port, calls)
    finally:
        server.should_exit = True
        await task


async def exchange(port: int, raw: bytes, responses: int = 1) -> list[bytes]:
    """Send `raw` at once (several requests: pipelined) and read `responses` answers, each as sent with
    its Date header taken out (closing the connection after them)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        writer.write(raw)
        async with asyncio.timeout(TIMEOUT_S):
            for _ in range(responses):
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                assert sum(line.startswith(b"date: ") for line in lines) == 1, head
                length = next(
                    (int(line.split(b": ")[1]) for line in lines if line.startswith(b"content-length: ")), 0
                )
                body = await reader.readexactly(length)
                answers.append(b"\r\n".join(line for line in lines if not line.startswith(b"date: ")) + body)
            if any(b"connection: close" in answer for answer in answers):
                assert await reader.read() == b""  # the server closed it
    finally:
        writer.close()
    return answers


def put(key: str, body: bytes, *, content_type: str = "application/json", extra: str = "") -> bytes:
    return (
        f"PUT /v1/kv/{key} HTTP/1.1\r\nHost: gw\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def plain(key: str, value: str, extra: str = "") -> bytes:
    return put(key, json.dumps({"value": value}).encode(), extra=extra)


class Both(Protocol):
    def __call__(
        self, raw: bytes, responses: int, *, same: Callable[[bytes], bytes] = ...
    ) -> Awaitable[tuple[list[bytes], Served]]: ...


@pytest.fixture
async def both() -> AsyncIterator[tuple[Harness, Both]]:
    """`exchange` with the fast server and the ASGI-only one; asserts they answered the same, returns
    the answers and the fast server."""
    async with harness() as h, serve(h, fast=True) as fast, serve(h, fast=False) as slow:

        async def run(
            raw: bytes, responses: int, *, same: Callable[[bytes], bytes] = lambda answer: answer
        ) -> tuple[list[bytes], Served]:
            fast_answers = await exchange(fast.port, raw, responses)
            slow_answers = await exchange(slow.port, raw, responses)
            assert [same(a) for a in fast_answers] == [same(a) for a in slow_answers]
            return fast_answers, fast

        yield h, run


async def test_a_plain_put_is_answered_below_asgi_with_uvicorns_bytes(both: tuple[Harness, Both]) -> None:
    h, run = both
    (answer,), fast = await run(plain("a", "1"), 1)
    assert answer.startswith(b"HTTP/1.1 204 No Content\r\ndscore-node: n")
    assert fast.asgi_calls == []
    assert h.metric("dscore_gateway_requests_total", operation="put", outcome="ok") == 2
    assert h.metric("dscore_gateway_request_duration_seconds_count", operation="put") == 2
    (read,), _ = await run(b"GET /v1/kv/a HTTP/1.1\r\nHost: gw\r\n\r\n", 1)
    assert read.endswith(b'{"key":"a","value":"1"}')
    assert fast.asgi_calls == ["http GET /v1/kv/a"]


async def test_a_plain_put_with_a_session_at_hand_needs_no_task(
    both: tuple[Harness, Both], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the pool holds a registered idle session, a plain PUT is begun by `Gateway.start_write` and
    answered from the endpoint's callback (no `_serve` task), with the same bytes as the routes'."""
    h, run = both
    await run(plain("a", "0"), 1)  # registers the sessions (the first write of each, in a task)
    tasks: list[str] = []
    serve_in_a_task = FastPutProtocol._serve

    async def counted(self: FastPutProtocol, cycle: Any, key: str, value: str) -> None:
        tasks.append(key)
        await serve_in_a_task(self, cycle, key, value)

    monkeypatch.setattr(FastPutProtocol, "_serve", counted)
    answers, fast = await run(plain("a", "1"), 1)
    answers += (await run(plain("b", "2"), 1))[0]
    assert all(answer.startswith(b"HTTP/1.1 204 No Content\r\ndscore-node: n") for answer in answers)
    assert tasks == [] and fast.asgi_calls == []
    assert h.metric("dscore_gateway_requests_total", operation="put", outcome="ok") == 6
    (read,), _ = await run(b"GET /v1/kv/b HTTP/1.1\r\nHost: gw\r\n\r\n", 1)
    assert read.endswith(b'{"key":"b","value":"2"}')


async def test_connection_close_and_keep_alive_are_uvicorns(both: tuple[Harness, Both]) -> None:
    _, run = both
    (answer,), fast = await run(plain("a", "1", "Connection: close\r\n"), 1)
    assert b"\r\nconnection: close\r\n" in answer
    answers, _ = await run(plain("a", "2") + plain("b", "3") + plain("c", "4", "Connection: close\r\n"), 3)
    assert [a.split(b"\r\n")[0] for a in answers] == [b"HTTP/1.1 204 No Content"] * 3
    # the first served below ASGI; those pipelined behind its response queued by uvicorn, for ASGI
    assert fast.asgi_calls == ["http PUT /v1/kv/b", "http PUT /v1/kv/c"]


async def test_pipelined_requests_are_answered_in_order(both: tuple[Harness, Both]) -> None:
    _, run = both
    raw = (
        plain("p", "1")
        + b"GET /v1/kv/p HTTP/1.1\r\nHost: gw\r\n\r\n"
        + plain("p", "2")
        + put("p", b'{"value": 3}')
        + b"GET /v1/kv/p HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    answers, fast = await run(raw, 5)
    assert [a.split(b"\r\n")[0].split(b" ")[1] for a in answers] == [b"204", b"200", b"204", b"422", b"200"]
    assert answers[1].endswith(b'"value":"1"}') and answers[4].endswith(b'"value":"2"}')
    assert "http PUT /v1/kv/p" in fast.asgi_calls  # the 422 (and whatever queued behind a response)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (put("x", b'{"value": "1", "other": 2}'), b"422"),  # not plain once the body is in
        (put("x", b'{"value": "\\ud800"}'), b"422"),  # a lone surrogate
        (put("x", b'{"value": '), b"400"),  # not JSON
        (put("x", b'{"value": "1"}', content_type="text/plain"), b"415"),
        (put("x", b"x" * 70_000), b"413"),  # over max_body_bytes by Content-Length
        (put("x" * 1025, b'{"value": "1"}'), b"400"),  # a key over max_key_bytes
        (put("", b'{"value": "1"}'), b"400"),  # no key
        (put("x%20y", b'{"value": "1"}'), b"204"),  # percent-escapes: the routes decode them
        (put("x?consistency=stale", b'{"value": "1"}'), b"204"),  # a query string
        (b'PUT /v1/kv/x HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n""', b"422"),
        # a key with a control character (Starlette routed `victim%0A` as `victim`)
        (put("victim%0A", b'{"value": "1"}'), b"400"),
        (put("a%0Ab", b'{"value": "1"}'), b"400"),
        (put("a%7F", b'{"value": "1"}'), b"400"),
        # bodies the JSON parser cannot read: nested too deeply, too many digits, invalid UTF-8
        (put("x", b'{"value":' + b"[" * 1000 + b"]" * 1000 + b"}"), b"400"),
        (put("x", b'{"value": ' + b"1" * 5000 + b"}"), b"400"),
        (put("x", b'{"value": "caf\xe9"}'), b"400"),
        # a header sent twice (the fast path took the last Content-Type, FastAPI the first)
        (
            put(
                "x", b'{"value": "1"}', content_type="text/plain", extra="Content-Type: application/json\r\n"
            ),
            b"400",
        ),
        (put("x", b'{"value": "1"}', extra="Content-Type: application/json\r\n"), b"400"),
        (put("x", b'{"value": "1"}', extra='Idempotency-Key: "a"\r\nIdempotency-Key: "b"\r\n'), b"400"),
        # a Content-Encoding (the fast path took a plain body that said it was gzip)
        (put("x", b'{"value": "1"}', extra="Content-Encoding: gzip\r\n"), b"415"),
    ],
)
async def test_anything_but_a_plain_put_is_the_routes_answer(
    both: tuple[Harness, Both], raw: bytes, status: bytes
) -> None:
    _, run = both
    (answer,), fast = await run(raw, 1)
    assert answer.split(b"\r\n")[0].split(b" ")[1] == status, answer
    # a refusal is the client's doing, under a client code: never `http_error`, which availability counts
    # as the service failing
    assert b'"error":"http_error"' not in answer, answer
    assert len(fast.asgi_calls) == 1


async def test_an_idempotency_key_goes_to_the_routes() -> None:
    async with harness() as h, serve(h, fast=True) as fast:
        raw = put("i", b'{"value": "1"}', extra='Idempotency-Key: "k1"\r\n')
        first, again = await exchange(fast.port, raw + raw, 2)
    assert first.startswith(b"HTTP/1.1 204 ") and b"idempotent-replayed: true" in again
    assert fast.asgi_calls == ["http PUT /v1/kv/i"] * 2
    assert h.metric("dscore_gateway_idempotency_keys") == 1


async def test_draining_and_a_full_gateway_are_refused_by_the_middleware(both: tuple[Harness, Both]) -> None:
    h, run = both
    h.gateway.draining = True
    (answer,), fast = await run(plain("d", "1"), 1)
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and b"\r\nretry-after: 1\r\n" in answer
    assert b'"error":"shutting_down"' in answer
    assert len(fast.asgi_calls) == 1
    h.gateway.draining = False
    h.gateway.in_flight += h.gateway.options.max_in_flight
    try:
        (answer,), _ = await run(plain("d", "1"), 1)
    finally:
        h.gateway.in_flight -= h.gateway.options.max_in_flight
    assert b'"error":"gateway_busy"' in answer
    assert len(fast.asgi_calls) == 2


async def test_a_cluster_error_is_the_same_json_answer(both: tuple[Harness, Both]) -> None:
    h, run = both
    for node in h.cluster.node_ids:
        h.cluster.network.isolate(node)  # no quorum: the leader cannot commit, the write times out
    h.gateway.options = h.gateway.options.model_copy(
        update={"request_timeout_s": 0.2, "attempt_timeout_s": 0.1}
    )
    # the message names the node that refused last, which may differ between the two requests
    (answer,), fast = await run(plain("u", "1"), 1, same=lambda answer: re.sub(rb"\bn\d\b", b"n?", answer))
    assert answer.split(b" ")[1] in {b"503", b"504"}, answer  # no leader, or the write's outcome unknown
    assert b"content-type: application/json" in answer
    assert fast.asgi_calls == []


async def read_until_closed(port: int, raw: bytes) -> bytes:
    """Send `raw` and read everything the server sends until it closes, Date headers taken out."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        async with asyncio.timeout(TIMEOUT_S):
            data = await reader.read(-1)
    finally:
        writer.close()
    return re.sub(rb"date: [^\r]*\r\n", b"", data)


@pytest.mark.parametrize(
    "raw",
    [
        # over max_body_bytes by Content-Length, the body held back for a 100 Continue
        put("big", b"", extra="Expect: 100-continue\r\n").replace(b"Length: 0", b"Length: 70000"),
        # over max_body_bytes by Content-Length, part of the body sent
        put("big", b"x" * 1000).replace(b"Length: 1000", b"Length: 70000"),
        # refused for its key before the body was read
        put("a%0A", b"", extra="Expect: 100-continue\r\n").replace(b"Length: 0", b"Length: 14"),
        # refused for a repeated header before the body was read
        put("a", b"", extra="Content-Type: application/json\r\nExpect: 100-continue\r\n").replace(
            b"Length: 0", b"Length: 14"
        ),
    ],
)
async def test_an_answer_before_the_body_was_read_closes_the_connection(
    both: tuple[Harness, Both], raw: bytes
) -> None:
    """Answered before its body was read, a request leaves the connection unusable: what the client sends
    next would be read as that body (with `Expect: 100-continue` the body never comes, and a GET sent next
    went unanswered). The answer says `Connection: close` and the server closes, on both servers."""
    _, run = both
    (answer,), fast = await run(raw, 1)  # `exchange` checks that the server closed the connection
    assert answer.split(b" ")[1] in {b"400", b"413"}, answer
    assert b"\r\nconnection: close\r\n" in answer
    assert len(fast.asgi_calls) == 1
    # the GET a client sends next on the connection is not taken for the body: the connection is closed
    # once the answer is out, so the GET gets no answer there (and the client opens another connection)
    data = await read_until_closed(fast.port, raw + b"GET /v1/kv/big HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert data.count(b"HTTP/1.1 ") == 1, data


async def test_head_on_the_wire_is_get_without_a_body() -> None:
    """HEAD: the GET's status and headers (Content-Length included), no body, on both servers; the GET
    pipelined behind it is answered right after the HEAD's blank line."""
    head = b"HEAD /v1/kv/a HTTP/1.1\r\nHost: gw\r\n\r\n"
    get = b"GET /v1/kv/a HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    async with harness() as h, serve(h, fast=True) as fast, serve(h, fast=False) as slow:
        await exchange(fast.port, plain("a", "1"))
        answers = [await read_until_closed(served.port, head + get) for served in (fast, slow)]
    assert answers[0] == answers[1]
    head_answer, get_answer = answers[0].split(b"HTTP/1.1 ")[1:]
    assert head_answer.startswith(b"200 OK\r\n") and head_answer.endswith(b"\r\n\r\n")
    assert get_answer.startswith(b"200 OK\r\n") and get_answer.endswith(b'{"key":"a","value":"1"}')
    get_head = get_answer.split(b"\r\n\r\n")[0].replace(b"\r\nconnection: close", b"")
    assert head_answer.split(b"\r\n\r\n")[0] == get_head
    assert b"content-length: 23\r\n" in head_answer
