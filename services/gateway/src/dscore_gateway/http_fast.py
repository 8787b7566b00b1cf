"""Plain writes served on uvicorn's HTTP protocol itself, below ASGI (`DSCORE_GATEWAY__HTTP_FAST_PATH`).

A plain `PUT /v1/kv/{key}` (the request `GatewayMiddleware`'s fast path serves: a body exactly
`{"value": "<string>"}`, no Idempotency-Key) is answered by `FastPutProtocol`, a subclass of uvicorn's
httptools protocol, straight from the parser's callbacks. With a registered session idle in the pool
(every write but a gateway's first few), `Gateway.start_write` sends it at once and the answer is
written from the endpoint's callback when the first attempt is OK: no task, no future, no coroutine per
write (anything else goes on in a task, through the same retries). Otherwise one task runs
`Gateway.write`. Either way the answer is built by the same code the routes use
(`GatewayMiddleware.answer_put` / `put`) and written in one `transport.write`.
Such a request costs no ASGI scope, request-response cycle, event, receive/send messages or middleware
layers, which were about half of the gateway's CPU per write (py-spy, 64 closed-loop clients).

Everything else goes to the ASGI app exactly as uvicorn's protocol sends it, decided request by request:
any other method or path, a query string, a percent-escape, a root path, an Idempotency-Key, a body
that is not plain (the routes then refuse it with their own errors), no Content-Length or one over
`max_body_bytes`, a non-JSON Content-Type or more than one Content-Type, a Content-Encoding,
`Expect: 100-continue`, an upgrade, HTTP/1.0, and a gateway that is draining or at `max_in_flight` (the
middleware answers those 503s). A request that turns out not to be plain once its body is in (`plain_put`
says None, whatever the body: it never raises in the parser's callback) is handed to ASGI then, as if it
had just been parsed. So every refusal (400, 413, 415, 503) is the middleware's or the routes', with
their bytes, on either path.

The response bytes are uvicorn's: its status line, its default headers (Date), the response's headers,
`connection: close` when the connection does not stay open. Requests pipelined on one connection are
answered in order: while a fast request is in flight the protocol stands in a `_FastCycle` for uvicorn's
current cycle, so a request parsed meanwhile is queued by uvicorn as behind any unfinished response, and
started when the fast response is complete. This relies on uvicorn's httptools protocol (its callbacks,
`cycle`, `pipeline`, `on_response_complete`); tests/gateway/test_gateway_http_fast.py holds it to
uvicorn's behaviour on the wire.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from fastapi.responses import Response
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from dscore.core.client_messages import Op, Outcome
from dscore_gateway import outcomes
from dscore_gateway.app import (
    KV_PREFIX,
    OUTCOME_SCOPE_KEY,
    GatewayMiddleware,
    _is_json,
    _unexpected,
    plain_put,
)
from dscore_gateway.cluster_client import Answer, WriteOp

log = logging.getLogger("dscore_gateway.http")

_PREFIX = KV_PREFIX.encode()
#: headers that make a PUT one for ASGI: the routes' (an Idempotency-Key), or the middleware's to refuse
#: or to read (a Content-Encoding: 415; a chunked body)
_NOT_PLAIN_HEADERS = frozenset({b"idempotency-key", b"transfer-encoding", b"content-encoding"})
#: uvicorn's answer when the app fails before responding (`RequestResponseCycle.send_500_response`)
_INTERNAL_ERROR = (
    STATUS_LINE[500] + b"content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\n"
    b"connection: close\r\n\r\nInternal Server Error"
)


#: a plain PUT's usual answer (`outcomes`: OK -> 204, no body), written without a response object
_OK = outcomes.http_answer(Outcome.OK)
#: node id -> its `Dscore-Node` header as `answer_put` renders it (a cluster has a handful of nodes)
_NODE_HEADERS: dict[str, tuple[tuple[bytes, bytes], ...]] = {}
_MAX_NODE_HEADERS = 256


def _node_header(node: str | None) -> tuple[tuple[bytes, bytes], ...]:
    if node is None:
        return ()
    header = _NODE_HEADERS.get(node)
    if header is None:
        if len(_NODE_HEADERS) >= _MAX_NODE_HEADERS:
            _NODE_HEADERS.clear()
        header = _NODE_HEADERS[node] = ((b"dscore-node", node.encode("latin-1")),)
    return header


class _NoWaiter:
    """The `message_event` of a `_FastCycle`: nothing waits for more of a fast request's body."""

    def set(self) -> None:
        pass


_NO_WAITER = _NoWaiter()


class _FastCycle:
    """What uvicorn's protocol reads of its current cycle, for a fast request in flight."""

    __slots__ = ("disconnected", "keep_alive", "response_complete")
    message_event = _NO_WAITER

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.disconnected = False
        self.response_complete = False


class FastPutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with plain PUTs served below ASGI (see the module doc). Subclassed
    per app by `fast_put_protocol` (uvicorn builds one protocol per connection from the class)."""

    front: GatewayMiddleware

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: the body of the request being parsed, when it may be served here (None: it goes to ASGI)
        self._fast_body: bytearray | None = None

    def on_headers_complete(self) -> None:
        if self._may_serve():
            self._fast_body = bytearray()
            return
        self._fast_body = None
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._fast_body is not None:
            self._fast_body += body  # at most max_body_bytes: its Content-Length said so
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        body = self._fast_body
        if body is None:
            super().on_message_complete()
            return
        self._fast_body = None
        gateway = self.front.gateway
        plain = None
        if not gateway.draining and gateway.in_flight < gateway.options.max_in_flight:
            plain = plain_put(self.url.decode("ascii"), bytes(body), gateway.options.max_key_bytes)
        if plain is None:
            # To ASGI, as uvicorn would have sent it: the cycle starts with the whole body in.
            super().on_headers_complete()
            if body:
                super().on_body(bytes(body))
            super().on_message_complete()
            return
        cycle = _FastCycle(self.parser.should_keep_alive())
        self.cycle = cycle  # type: ignore[assignment]
        if self._start(cycle, *plain):
            return
        task = self.loop.create_task(self._serve(cycle, *plain))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def _may_serve(self) -> bool:
        """Whether the request whose headers were just parsed may be a plain PUT served here."""
        url = self.url
        if (
            not url.startswith(_PREFIX)
            or self.parser.get_method() != b"PUT"
            or self.parser.get_http_version() != "1.1"
            or self.parser.should_upgrade()
            or self.expect_100_continue
            or self.root_path
            or self.limit_concurrency is not None
            or (self.cycle is not None and not self.cycle.response_complete)
            or self.pipeline
            or b"?" in url
            or b"%" in url
            or b"#" in url
            or not url.isascii()
        ):
            return False
        length = None
        content_type = None
        for name, value in self.headers:
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    return False
                length = int(value)
            elif name == b"content-type":
                if content_type is not None:  # more than one: the middleware refuses it
                    return False
                content_type = value
            elif name in _NOT_PLAIN_HEADERS:
                return False
        return (
            content_type is not None
            and _is_json(content_type.decode("latin-1"))
            and length is not None
            and length <= self.front.gateway.options.max_body_bytes
        )

    def _start(self, cycle: _FastCycle, key: str, value: str) -> bool:
        """Serve the plain PUT without a task (`Gateway.start_write`): answered from the endpoint's
        callback when its first attempt is OK. False: nothing was done (serve it in a task)."""
        front = self.front
        gateway = front.gateway
        start = time.perf_counter()

        def done(answer: Answer | None) -> None:
            if answer is not None and answer.outcome is Outcome.OK:
                # The usual answer, the bytes `answer_put` would give it without building them through a
                # response object (tests/gateway/test_gateway_http_fast.py compares the two).
                self._served({OUTCOME_SCOPE_KEY: _OK.code}, start)
                self._answer_raw(cycle, key, _OK.status, _node_header(answer.node), b"")
                return
            scope: dict[str, Any] = {}
            try:
                response = _unexpected(scope) if answer is None else front.answer_put(key, answer, scope)
            finally:
                self._served(scope, start)
            self._answer(cycle, key, response)

        gateway.enter()
        if gateway.start_write(WriteOp(Op.PUT, key, value), done):
            return True
        gateway.leave()
        return False

    async def _serve(self, cycle: _FastCycle, key: str, value: str) -> None:
        front = self.front
        gateway = front.gateway
        scope: dict[str, Any] = {}
        start = time.perf_counter()
        gateway.enter()
        try:
            response = await front.put(key, value, scope)
        except BaseException:  # cancelled (a shutdown past its grace period): as uvicorn answers it
            self._respond(cycle, _INTERNAL_ERROR, close=True)
            raise
        finally:
            self._served(scope, start)
        self._answer(cycle, key, response)

    def _served(self, scope: dict[str, Any], start: float) -> None:
        """A plain PUT's request is done with (`Gateway.enter` at `start`): leave, and count it."""
        front = self.front
        front.gateway.leave()
        front.count("put", scope.get(OUTCOME_SCOPE_KEY) or "internal_error", time.perf_counter() - start)

    def _answer(self, cycle: _FastCycle, key: str, response: Response) -> None:
        self._answer_raw(cycle, key, response.status_code, response.raw_headers, response.body)

    def _answer_raw(
        self,
        cycle: _FastCycle,
        key: str,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes | memoryview,
    ) -> None:
        if self.access_log:  # uvicorn's access line (off in the gateway's config)
            client = f"{self.client[0]}:{self.client[1]}" if self.client else ""
            self.access_logger.info('%s - "PUT %s HTTP/1.1" %d', client, f"{KV_PREFIX}{key}", status)
        head: list[bytes | memoryview] = [STATUS_LINE[status]]
        for name, header in (*self.server_state.default_headers, *headers):
            head += (name, b": ", header, b"\r\n")
        if not cycle.keep_alive:
            head.append(b"connection: close\r\n")
        head += (b"\r\n", body)
        self._respond(cycle, b"".join(head), close=not cycle.keep_alive)

    def _respond(self, cycle: _FastCycle, data: bytes, *, close: bool) -> None:
        if cycle.disconnected or cycle.response_complete:
            return
        cycle.response_complete = True
        self.transport.write(data)
        if close:
            self.transport.close()
        self.on_response_complete()


def fast_put_protocol(front: GatewayMiddleware) -> type[FastPutProtocol]:
    """The protocol class (uvicorn's `http` setting) that serves plain PUTs through `front`."""
    return type("FastPutProtocol", (FastPutProtocol,), {"front": front})
