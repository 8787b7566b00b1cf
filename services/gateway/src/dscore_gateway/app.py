"""The HTTP API (FastAPI; the OpenAPI document is at `/openapi.json`, browsable at `/docs`).

    PUT    /v1/kv/{key}          {"value": "..."}                      204
    GET    /v1/kv/{key}?consistency=linearizable|lease|stale         200 {"key": ..., "value": ...} / 404
    DELETE /v1/kv/{key}                                               204
    POST   /v1/kv/{key}/cas      {"expected": "..." | null, "value": "..."}   204 / 409 with "current"
    POST   /v1/kv/{key}/append   {"value": "..."}                      204
    GET    /v1/cluster           what the gateway knows of the cluster
    GET    /healthz  /readyz  /metrics

HEAD works wherever GET does: the same status and headers, no body (a HEAD of a key reads it, as a GET).

Keys are the rest of the path after `/v1/kv/` (percent-decoded; they may contain `/`), 1 to
`max_key_bytes` bytes of UTF-8, without control characters (Unicode category Cc: U+0000-U+001F,
U+007F-U+009F). Values are JSON strings. Every error is JSON: `{"error": code,
"message": what was wrong, ...}`; the codes are the `outcome` labels of `dscore_gateway_requests_total`.
Statuses come from one table (`dscore_gateway.outcomes`); the gateway's own refusals:

- 400 `bad_request`: a bad key (empty, too long, not UTF-8, a control character), query parameter or
  Idempotency-Key header; more than one Content-Type or Idempotency-Key header; a body that is not JSON
  or cannot be read as JSON (invalid UTF-8, nested too deeply, a number of too many digits);
- 413 `body_too_large`: a body over `max_body_bytes` (checked from Content-Length and while reading);
  answered before the body was read, it closes the connection (`Connection: close`);
- 415 `unsupported_media_type`: a body that is not `application/json`, or has a Content-Encoding;
- 422 `invalid_body`: JSON of the wrong shape (a missing or unknown field, a non-string value, a string
  that is not valid Unicode); `idempotency_key_reused`: the key was first used for another request;
- 405 `method_not_allowed`, with `Allow`; 404 `no_such_route`;
- 409 `idempotency_key_in_use`: the key's first request is still running;
- 503 `gateway_busy` (`max_in_flight` requests already, or no session freed in time) and
  `shutting_down` (draining after SIGTERM), both with Retry-After. Overload is 503, not 429: the gateway
  has no per-client quota, so a full gateway is the server's condition, not the client's rate.

Read modes: `linearizable` (default) is served by the leader after its read path confirmed leadership
(ReadIndex, or a lease when the cluster runs `DSCORE_RAFT__READ_ONLY_OPTION=lease`); `stale` by any node
from what it has applied (fast, possibly old; no leader needed). `lease` is accepted and served by the
same linearizable path: whether a leader answers from its lease is the cluster's setting (Raft's
`read_only_option`), not a per-request choice, and a linearizable read is at least as strong as a lease
read. The `Dscore-Consistency` response header says how the read was served; `Dscore-Node` names the
node that gave the final answer (reads and writes).
"""

from __future__ import annotations

import enum
import json
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

from fastapi import APIRouter, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from dscore.core.client_messages import Op, Outcome, ReadMode
from dscore_gateway import outcomes
from dscore_gateway.cluster_client import Answer, WriteOp
from dscore_gateway.idempotency import IdempotencyKeyError, fingerprint, parse_key
from dscore_gateway.outcomes import HttpAnswer
from dscore_gateway.service import Gateway, IdempotentRequest, WriteResult, WriteVerdict
from dscore_gateway.status import ClusterView

log = logging.getLogger("dscore_gateway.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: where a handler leaves the request's outcome label for the metrics middleware
OUTCOME_SCOPE_KEY = "dscore.outcome"
KV_PREFIX = "/v1/kv/"

#: Unicode's control characters (category Cc: C0, DEL, C1), refused in keys and anywhere in a path. A
#: key with one aliased another (Starlette's `{key:path}` is `.*$`: `.` stops at a newline and `$`
#: matches before a trailing one, so `DELETE /v1/kv/victim%0A` was routed as `victim`), and none has a
#: use in a key.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def path_problem(path: str) -> str | None:
    """What no route may see in a percent-decoded request path: a control character (None: nothing)."""
    found = _CONTROL.search(path)
    if found is None:
        return None
    code = f"U+{ord(found.group()):04X}"
    if path.startswith(KV_PREFIX):
        at = found.start() - len(KV_PREFIX) + 1
        return f"the key must not contain control characters: {code} at character {at} of the key"
    return f"the path must not contain control characters: {code} at character {found.start() + 1}"


def unreadable_body(error: BaseException) -> str:
    """The message of a body the JSON parser could not read, from what it raised."""
    if isinstance(error, RecursionError):
        why = "it is nested too deeply"
    elif isinstance(error, UnicodeDecodeError):
        why = f"it is not valid UTF-8 ({error.reason} at byte {error.start})"
    elif isinstance(error, ValueError) and "integer string conversion" in str(error):
        why = f"a number in it has more than {sys.get_int_max_str_digits()} digits"
    else:
        why = str(error) or type(error).__name__
    return f"the body cannot be read as JSON: {why}"


# -- bodies -------------------------------------------------------------------------------------------


def _check_unicode(value: str | None) -> str | None:
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode (it contains a lone surrogate escape)") from None
    return value


class ValueBody(BaseModel):
    """The body of PUT and append."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"value": "hello"}]})

    value: str = Field(description="the value to store (PUT) or to add at the end (append)")

    _unicode = field_validator("value")(_check_unicode)


class CasBody(BaseModel):
    """The body of a compare-and-set: `expected` null means "only if the key is absent"."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"expected": "old", "value": "new"}]}
    )

    expected: str | None = Field(description="the value the key must hold now (null: the key must be absent)")
    value: str = Field(description="the new value")

    _unicode = field_validator("expected", "value")(_check_unicode)


class ValueView(BaseModel):
    key: str
    value: str


class ErrorBody(BaseModel):
    """Every error: a code (also the metrics' outcome label) and what was wrong."""

    error: str = Field(
        description="a short code: no_leader, outcome_unknown, cas_mismatch, invalid_body, ..."
    )
    message: str = Field(description="what was wrong, for people")
    key: str | None = None
    current: str | None = Field(
        default=None, description="cas_mismatch: the value the key holds now (null: it holds none)"
    )


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    reason: str


class Consistency(enum.StrEnum):
    LINEARIZABLE = "linearizable"
    LEASE = "lease"
    STALE = "stale"


_READ_MODE = {
    Consistency.LINEARIZABLE: ReadMode.LINEARIZABLE,
    Consistency.LEASE: ReadMode.LINEARIZABLE,
    Consistency.STALE: ReadMode.STALE,
}

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description='makes a retried write take effect once (an sf-string, e.g. "8e03978e-40d5-43e8"); '
        "ignored by GET",
    ),
]
KeyPath = Annotated[str, Path(description="the key: the rest of the path, percent-decoded (may contain '/')")]


#: the response headers the API sends, as the OpenAPI document describes them
_HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {
        "description": "seconds to wait before trying again (every 503; a 409 idempotency_key_in_use)",
        "schema": {"type": "integer"},
    },
    "Dscore-Node": {
        "description": "the node that gave the final answer (when a node answered)",
        "schema": {"type": "string"},
    },
    "Dscore-Consistency": {
        "description": "how the read was served (a lease read is served as linearizable)",
        "schema": {"type": "string", "enum": ["linearizable", "stale"]},
    },
    "Idempotent-Replayed": {
        "description": "the answer of the first request with this Idempotency-Key, replayed: nothing was "
        "done again",
        "schema": {"type": "string", "enum": ["true"]},
    },
}
_READ_TEXTS = {
    200: "the value",
    400: "bad key (empty, too long, not UTF-8, a control character) or query parameter",
    404: "no value under the key",
    503: "no leader, overloaded, busy or shutting down: nothing was done; see Retry-After",
}
_WRITE_TEXTS = {
    204: "done (once, whatever the retries)",
    400: "bad key (empty, too long, not UTF-8, a control character), header (a bad Idempotency-Key, more "
    "than one Content-Type or Idempotency-Key) or body (not JSON, or JSON that cannot be read); or "
    "rejected_by_cluster",
    409: "compare failed (cas_mismatch, with `current`: null when the key holds no value) or the "
    "Idempotency-Key's request is running (idempotency_key_in_use, with Retry-After)",
    413: "body larger than the limit",
    415: "body is not application/json, or has a Content-Encoding",
    422: "body of the wrong shape, or an Idempotency-Key reused for another request",
    503: "no leader, overloaded, busy or shutting down: nothing was done; see Retry-After",
    504: "outcome unknown: the write may or may not have taken effect",
}
#: status -> the headers it may carry, for a read (GET) and for a write
_READ_HEADERS = {
    200: ("Dscore-Node", "Dscore-Consistency"),
    404: ("Dscore-Node", "Dscore-Consistency"),
    503: ("Retry-After", "Dscore-Node", "Dscore-Consistency"),
}
_WRITE_HEADERS = {
    204: ("Dscore-Node", "Idempotent-Replayed"),
    400: ("Dscore-Node", "Idempotent-Replayed"),
    409: ("Retry-After", "Dscore-Node", "Idempotent-Replayed"),
    503: ("Retry-After", "Dscore-Node"),
    504: ("Dscore-Node",),
}


def _responses(*statuses: int, read: bool = False) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a key's route: every status it sends, errors as `ErrorBody`, and the
    headers each may carry."""
    texts, headers = (_READ_TEXTS, _READ_HEADERS) if read else (_WRITE_TEXTS, _WRITE_HEADERS)
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response: dict[str, Any] = {"description": texts[status]}
        if status >= 400:
            response["model"] = ErrorBody
        if status in headers:
            response["headers"] = {name: _HEADERS[name] for name in headers[status]}
        out[status] = response
    return out


# -- responses ----------------------------------------------------------------------------------------


def error_body(code: str, message: str, **extra: str | None) -> dict[str, Any]:
    return {"error": code, "message": message, **{k: v for k, v in extra.items() if v is not None}}


def _respond(
    scope: Scope,
    answer: HttpAnswer,
    content: dict[str, Any] | None,
    retry_after_s: int,
    headers: dict[str, str] | None = None,
) -> Response:
    scope[OUTCOME_SCOPE_KEY] = answer.code
    out = dict(headers or {})
    if answer.retry_after:
        out["Retry-After"] = str(retry_after_s)
    if content is None:
        return Response(status_code=answer.status, headers=out)
    return JSONResponse(content, status_code=answer.status, headers=out)


def _name_node(answer: Answer, headers: dict[str, str]) -> None:
    """`Dscore-Node`: the node that gave the final answer (clients measure failovers with it)."""
    if answer.node is not None:
        headers["Dscore-Node"] = answer.node


def _gateway_error(scope: Scope, gateway: Gateway, answer: HttpAnswer, message: str) -> Response:
    return _respond(scope, answer, error_body(answer.code, message), gateway.options.retry_after_s)


def _error(
    request: Request,
    answer: HttpAnswer,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: str | None,
) -> Response:
    gateway: Gateway = request.app.state.gateway
    body = error_body(answer.code, message, **extra)
    return _respond(request.scope, answer, body, gateway.options.retry_after_s, headers)


def _answer_response(
    scope: Scope, gateway: Gateway, key: str, answer: Answer, headers: dict[str, str]
) -> Response:
    """A write's answer through the outcome table."""
    _name_node(answer, headers)
    http = outcomes.http_answer(answer.outcome)
    if answer.outcome is Outcome.OK:
        return _respond(scope, http, None, gateway.options.retry_after_s, headers)
    message = answer.error or answer.outcome.name
    if answer.outcome is Outcome.UNKNOWN or answer.outcome is Outcome.SESSION_EXPIRED:
        message = (
            f"outcome unknown: {message}. The write may or may not take effect; retry with the same "
            "Idempotency-Key to apply it at most once and learn its outcome"
        )
    body = error_body(http.code, message, key=key)
    if answer.outcome is Outcome.CAS_MISMATCH:
        # `current` is always there: null when the key holds no value (a compare against an absent key)
        body["message"] = cas_mismatch_message(answer.value)
        body["current"] = answer.value
    return _respond(scope, http, body, gateway.options.retry_after_s, headers)


def cas_mismatch_message(current: str | None) -> str:
    """The message of a compare that failed, `current` being what the key holds (None: nothing)."""
    if current is None:
        return "compare failed: the key holds no value"
    return "compare failed: the key holds another value"


def _write_response(scope: Scope, gateway: Gateway, key: str, result: WriteResult) -> Response:
    """The HTTP answer to a write, whichever path served it (the routes or the middleware's fast path)."""
    verdict = result.verdict
    if verdict is WriteVerdict.BUSY:
        return _gateway_error(
            scope,
            gateway,
            outcomes.GATEWAY_BUSY,
            f"all {gateway.options.session_pool_size} sessions stayed busy for "
            f"{gateway.options.request_timeout_s} s; nothing was done",
        )
    if verdict is WriteVerdict.KEY_IN_USE:
        return _gateway_error(
            scope,
            gateway,
            outcomes.IDEMPOTENCY_KEY_IN_USE,
            "a request with this Idempotency-Key is still being processed; retry after it finished",
        )
    if verdict is WriteVerdict.KEY_REUSED:
        return _gateway_error(
            scope,
            gateway,
            outcomes.IDEMPOTENCY_KEY_REUSED,
            "this Idempotency-Key was first used for a different request (another operation, key or "
            "body); use a new key for a new request",
        )
    assert result.answer is not None
    headers = {"Idempotent-Replayed": "true"} if verdict is WriteVerdict.REPLAYED else {}
    return _answer_response(scope, gateway, key, result.answer, headers)


class ApiError(Exception):
    """A request the gateway refuses itself (rendered by the app's handler)."""

    def __init__(self, answer: HttpAnswer, message: str) -> None:
        super().__init__(message)
        self.answer = answer
        self.message = message


def _check_key(request: Request, key: str) -> None:
    """Refuse a key the gateway does not serve. The path is checked, not only `key`: a route's match can
    differ from the path only through a control character (a newline before `$`), so refusing those
    also makes `key` the rest of the path (the middleware refuses them first; this is the routes' own
    guard)."""
    gateway: Gateway = request.app.state.gateway
    problem = path_problem(str(request.scope["path"]))
    if problem is not None:
        raise ApiError(outcomes.BAD_INPUT, problem)
    if not key:
        raise ApiError(outcomes.BAD_INPUT, "the key must not be empty: use /v1/kv/<key>")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > gateway.options.max_key_bytes:
        raise ApiError(
            outcomes.BAD_INPUT, f"the key is {size} bytes long; at most {gateway.options.max_key_bytes}"
        )


# -- routes -------------------------------------------------------------------------------------------

router = APIRouter()


async def _write(request: Request, write: WriteOp, body: BaseModel | None, header: str | None) -> Response:
    gateway: Gateway = request.app.state.gateway
    _check_key(request, write.key)
    idempotent = None
    if header is not None:
        try:
            idem_key = parse_key(header)
        except IdempotencyKeyError as error:
            raise ApiError(outcomes.BAD_INPUT, str(error)) from None
        payload = json.dumps(body.model_dump() if body is not None else None, sort_keys=True).encode()
        idempotent = IdempotentRequest(idem_key, fingerprint(request.method, write.key, payload))
    result: WriteResult = await gateway.write(write, idempotent)
    return _write_response(request.scope, gateway, write.key, result)


@router.put(
    "/v1/kv/{key:path}",
    status_code=204,
    summary="Store a value",
    responses=_responses(204, 400, 409, 413, 415, 422, 503, 504),
)
async def put_value(
    request: Request, key: KeyPath, body: ValueBody, idempotency_key: IdempotencyKeyHeader = None
) -> Response:
    return await _write(request, WriteOp(Op.PUT, key, body.value), body, idempotency_key)


@router.get(
    "/v1/kv/{key:path}",
    response_model=ValueView,
    summary="Read a value",
    responses=_responses(200, 400, 404, 503, read=True),
)
async def get_value(
    request: Request,
    key: KeyPath,
    consistency: Annotated[
        Consistency,
        Query(
            description="linearizable (default); lease (served by the linearizable path: the cluster "
            "decides ReadIndex vs lease); stale (any node's applied state)"
        ),
    ] = Consistency.LINEARIZABLE,
) -> Response:
    gateway: Gateway = request.app.state.gateway
    _check_key(request, key)
    mode = _READ_MODE[consistency]
    answer = await gateway.read(key, mode)
    # PBFT serves a stale read as a linearizable one (a single replica's state is never taken)
    stale = mode is ReadMode.STALE and not gateway.protocol.byzantine
    headers = {"Dscore-Consistency": "stale" if stale else "linearizable"}
    _name_node(answer, headers)
    if answer.outcome is Outcome.OK:
        if answer.value is None:
            return _respond(
                request.scope,
                outcomes.GET_ABSENT,
                error_body(outcomes.GET_ABSENT.code, f"no value under key {key!r}", key=key),
                gateway.options.retry_after_s,
                headers,
            )
        return _respond(
            request.scope,
            outcomes.GET_FOUND,
            {"key": key, "value": answer.value},
            gateway.options.retry_after_s,
            headers,
        )
    return _answer_response(request.scope, gateway, key, answer, headers)


@router.delete(
    "/v1/kv/{key:path}",
    status_code=204,
    summary="Delete a key (204 whether or not it held a value)",
    responses=_responses(204, 400, 409, 413, 422, 503, 504),
)
async def delete_value(
    request: Request, key: KeyPath, idempotency_key: IdempotencyKeyHeader = None
) -> Response:
    return await _write(request, WriteOp(Op.DELETE, key), None, idempotency_key)


@router.post(
    "/v1/kv/{key:path}/cas",
    status_code=204,
    summary="Compare and set: write `value` only if the key holds `expected`",
    responses=_responses(204, 400, 409, 413, 415, 422, 503, 504),
)
async def compare_and_set(
    request: Request, key: KeyPath, body: CasBody, idempotency_key: IdempotencyKeyHeader = None
) -> Response:
    write = WriteOp(Op.CAS, key, body.value, body.expected)
    return await _write(request, write, body, idempotency_key)


@router.post(
    "/v1/kv/{key:path}/append",
    status_code=204,
    summary="Append to a value (an absent key starts from the empty string)",
    responses=_responses(204, 400, 409, 413, 415, 422, 503, 504),
)
async def append_value(
    request: Request, key: KeyPath, body: ValueBody, idempotency_key: IdempotencyKeyHeader = None
) -> Response:
    return await _write(request, WriteOp(Op.APPEND, key, body.value), body, idempotency_key)


@router.get(
    "/v1/cluster",
    response_model=ClusterView,
    summary="What this gateway knows of the cluster",
    responses={
        503: {
            "model": ErrorBody,
            "description": "the gateway is busy or shutting down; see Retry-After",
            "headers": {"Retry-After": _HEADERS["Retry-After"]},
        }
    },
)
async def cluster(request: Request) -> ClusterView:
    gateway: Gateway = request.app.state.gateway
    request.scope[OUTCOME_SCOPE_KEY] = "ok"
    return gateway.cluster_view()


@router.get("/healthz", response_model=Health, summary="Liveness: the process is up")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: a leader is known and a request succeeded recently",
    responses={503: {"model": Readiness, "description": "not ready"}},
)
async def readyz(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    ready, reason = gateway.readiness()
    return JSONResponse({"ready": ready, "reason": reason}, status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics (text exposition format)",
)
async def metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# -- error handlers -----------------------------------------------------------------------------------


def _where(location: tuple[Any, ...]) -> str:
    parts = [str(p) for p in location if not isinstance(p, int)]
    return ".".join(parts) if parts else "request"


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e["type"] == "json_invalid" for e in errors):
        detail = next(e for e in errors if e["type"] == "json_invalid").get("ctx", {}).get("error", "")
        return _error(
            request, outcomes.BAD_INPUT, f"the body is not valid JSON{': ' + detail if detail else ''}"
        )
    problems = []
    in_body = True
    for item in errors:
        location = tuple(item["loc"])
        if location and location[0] != "body":
            in_body = False
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "missing" and location == ("body",):
            message = "a JSON body is required"
        elif item["type"] == "model_attributes_type" and location == ("body",):
            message = "the body must be a JSON object"
        problems.append(f"{_where(location)}: {message}")
    answer = outcomes.INVALID_BODY if in_body else outcomes.BAD_INPUT
    return _error(request, answer, "; ".join(problems))


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error(request, exc.answer, exc.message)


#: the order `Allow` lists methods in
_METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS")
#: the framework's 4xx errors the gateway's table names (any other 4xx keeps its status, as bad_request)
_FRAMEWORK_4XX = {
    400: outcomes.BAD_INPUT,
    413: outcomes.BODY_TOO_LARGE,
    415: outcomes.UNSUPPORTED_MEDIA_TYPE,
}


def _allowed_methods(request: Request) -> str:
    """`Allow` of a 405: every method some route serves on the path (Starlette's names only the first
    route that matched the path, `PUT` for `/v1/kv/{key}`), HEAD wherever GET (`GatewayApp`)."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if method != "HEAD"
        and any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]
    if "GET" in allowed:
        allowed.insert(allowed.index("GET") + 1, "HEAD")
    return ", ".join(allowed)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    headers = dict(exc.headers or {})
    if status == 404:
        return _error(request, outcomes.ROUTE_NOT_FOUND, f"no route {request.url.path}; see /docs")
    if status == 405:
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
        return _error(
            request,
            outcomes.METHOD_NOT_ALLOWED,
            f"{request.method} is not allowed on {request.url.path}; allowed: {headers['Allow']}",
            headers=headers,
        )
    if status == 400 and exc.__cause__ is not None:
        # FastAPI's "There was an error parsing the body": what its JSON parser raised, other than a
        # syntax error (`_on_validation_error`): invalid UTF-8, nesting deeper than Python's recursion
        # limit, an integer of more digits than Python converts
        return _error(request, outcomes.BAD_INPUT, unreadable_body(exc.__cause__), headers=headers)
    if status < 500:
        # the client's doing, whatever the framework found: a client code, never `http_error` (which
        # availability counts as the service failing)
        answer = _FRAMEWORK_4XX.get(status) or HttpAnswer(status, outcomes.BAD_INPUT.code)
        return _error(request, answer, str(exc.detail), headers=headers)
    answer = HttpAnswer(status, outcomes.HTTP_ERROR)
    return _respond(request.scope, answer, error_body(answer.code, str(exc.detail)), 0, headers)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error serving %s %s", request.method, request.url.path, exc_info=exc)
    return _unexpected(request.scope)


def _unexpected(scope: Scope) -> Response:
    answer = HttpAnswer(500, "internal_error")
    return _respond(scope, answer, error_body(answer.code, "the gateway failed unexpectedly (logged)"), 0)


# -- the middleware: bounds, body limit, metrics -------------------------------------------------------


def operation_of(method: str, path: str) -> str:
    """The `operation` label of a request (see `dscore_gateway.metrics.OPERATIONS`)."""
    if path.startswith(KV_PREFIX):
        if method == "POST":
            if path.endswith("/cas"):
                return "cas"
            if path.endswith("/append"):
                return "append"
            return "other"
        return {"GET": "get", "PUT": "put", "DELETE": "delete"}.get(method, "other")
    if path == "/v1/cluster":
        return "cluster" if method == "GET" else "other"
    return "other"


def plain_put(path: str, body: bytes, max_key_bytes: int) -> tuple[str, str] | None:
    """(key, value) of a plain `PUT /v1/kv/{key}` (`path` percent-decoded) whose body is exactly
    `{"value": "<string>"}` with a key of 1 to `max_key_bytes` bytes and no control character; None for
    anything else, which the routes serve (and refuse with their own errors)."""
    if len(path) <= len(KV_PREFIX) or len(path) - len(KV_PREFIX) > max_key_bytes:  # chars <= bytes
        return None
    key = path[len(KV_PREFIX) :]
    if len(key.encode("utf-8", "surrogatepass")) > max_key_bytes or _CONTROL.search(key):
        return None
    try:
        parsed = json.loads(body) if body else None
    except (ValueError, RecursionError):  # not JSON, not UTF-8, too many digits, nested too deeply
        return None
    if type(parsed) is not dict or len(parsed) != 1:
        return None
    value = parsed.get("value")
    if type(value) is not str:
        return None
    try:
        _check_unicode(value)
    except ValueError:
        return None
    return key, value


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class GatewayMiddleware:
    """Bounds every `/v1/` request before the routes see it, and counts it after.

    - a path that is not UTF-8 once percent-decoded (Starlette would replace the bad bytes and serve
      another key), or holds a control character (a key could alias another: `path_problem`): 400,
      before anything else (on every path, `/v1/` or not);
    - draining (SIGTERM): 503 `shutting_down`; `max_in_flight` reached: 503 `gateway_busy`;
    - more than one Content-Type or Idempotency-Key header: 400 (which one counts would differ between
      layers);
    - a body: over `max_body_bytes` by Content-Length, or once that many bytes were read: 413; not JSON,
      or with a Content-Encoding: 415. The body is read here (bounded) and handed on, so no route ever
      reads an unbounded body.
    - an answer given before the body was read closes the connection (`Connection: close`): the unread
      body would otherwise be taken for the next request, or, with `Expect: 100-continue`, never come
      while the server waits for it.
    - metrics: `dscore_gateway_requests_total{operation,outcome}` and the latency histogram.

    The fast path: a plain `PUT /v1/kv/{key}` (a body `{"value": "<string>"}`, no Idempotency-Key) is
    served here, straight to `Gateway.write` and the same response builder the route uses, without
    FastAPI's routing, dependency injection and pydantic validation, which cost more CPU than the rest
    of the write together (py-spy of the gateway at 64 clients: ~55% of its time in FastAPI/Starlette's
    layers). Anything else, including every malformed PUT, goes through the routes as before, so the
    errors and the OpenAPI document stay theirs.
    """

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        #: (operation, outcome) -> the labelled counter; operation -> the labelled histogram
        self._counters: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not str(scope["path"]).startswith("/v1/"):
            problem = path_problem(scope["path"])
            if problem is None:
                await self.app(scope, receive, send)
            else:
                await self._reply(scope, send, outcomes.BAD_INPUT, problem, close=_declares_body(scope))
            return
        gateway = self.gateway
        operation = operation_of(scope["method"], scope["path"])
        start = time.perf_counter()
        status = 500

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await self._reply(scope, send_counted, *refusal, close=_declares_body(scope))
                return
            gateway.enter()
            try:
                read = await self._bounded_body(scope, receive, send_counted)
                if read is not None:
                    body, headers, body_receive = read
                    if operation != "put" or not await self._fast_put(scope, headers, body, send_counted):
                        await self.app(scope, body_receive, send_counted)
            finally:
                gateway.leave()
        finally:
            outcome = scope.get(OUTCOME_SCOPE_KEY) or _label_of(status)
            self.count(operation, outcome, time.perf_counter() - start)

    def count(self, operation: str, outcome: str, duration_s: float) -> None:
        """One answered request in the request metrics."""
        metrics = self.gateway.metrics
        counter = self._counters.get((operation, outcome))
        if counter is None:
            counter = self._counters[(operation, outcome)] = metrics.requests.labels(operation, outcome)
        counter.inc()
        histogram = self._durations.get(operation)
        if histogram is None:
            histogram = self._durations[operation] = metrics.request_duration.labels(operation)
        histogram.observe(duration_s)

    async def _fast_put(self, scope: Scope, headers: dict[str, str], body: bytes, send: Send) -> bool:
        """Serve a plain PUT here (see the class doc); False, having done nothing, for the routes."""
        if scope.get("root_path") or "idempotency-key" in headers:
            return False
        plain = plain_put(scope["path"], body, self.gateway.options.max_key_bytes)
        if plain is None:
            return False
        key, value = plain
        response = await self.put(key, value, scope)
        await response(scope, _disconnected, send)
        return True

    async def put(self, key: str, value: str, scope: Scope) -> Response:
        """The answer to a plain PUT (`plain_put`), whichever fast path serves it; its outcome label is
        left in `scope`."""
        gateway = self.gateway
        try:
            result = await gateway.write(WriteOp(Op.PUT, key, value), None)
            return _write_response(scope, gateway, key, result)
        except Exception as error:  # a bug: answered like the routes' handler answers it
            log.exception("unexpected error serving PUT %s%s", KV_PREFIX, key, exc_info=error)
            return _unexpected(scope)

    def answer_put(self, key: str, answer: Answer, scope: Scope) -> Response:
        """The answer to a plain PUT begun by `Gateway.start_write` (as `put` would give it)."""
        try:
            return _write_response(scope, self.gateway, key, WriteResult(WriteVerdict.ANSWERED, answer))
        except Exception as error:
            log.exception("unexpected error answering PUT %s%s", KV_PREFIX, key, exc_info=error)
            return _unexpected(scope)

    def _refusal(self, scope: Scope) -> tuple[HttpAnswer, str] | None:
        """The answer to a request refused before its body is read: a bad path, draining, full."""
        raw_path = scope.get("raw_path")
        if isinstance(raw_path, bytes):
            try:
                unquote_to_bytes(raw_path.split(b"?", 1)[0]).decode("utf-8")
            except UnicodeDecodeError:
                return outcomes.BAD_INPUT, "the path is not valid UTF-8 once percent-decoded"
        problem = path_problem(scope["path"])
        if problem is not None:
            return outcomes.BAD_INPUT, problem
        gateway = self.gateway
        if gateway.draining:
            return (
                outcomes.SHUTTING_DOWN,
                "the gateway is shutting down; retry (another gateway may serve it)",
            )
        if gateway.in_flight >= gateway.options.max_in_flight:
            return (
                outcomes.GATEWAY_BUSY,
                f"the gateway is serving {gateway.in_flight} requests (its limit); nothing was done",
            )
        return None

    async def _bounded_body(
        self, scope: Scope, receive: Receive, send: Send
    ) -> tuple[bytes, dict[str, str], Receive] | None:
        """Read the body (at most `max_body_bytes`); return it, the headers (names in lower case) and a
        `receive` that replays it; None when the request was answered here (400, 413, 415)."""
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return b"", {}, receive
        limit = self.gateway.options.max_body_bytes
        headers: dict[str, str] = {}
        repeated = None
        encodings: list[str] = []
        for raw_name, raw_value in scope.get("headers", ()):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            if name in headers and name in _SINGLE_HEADERS:
                repeated = _SINGLE_HEADERS[name]
            elif name == "content-encoding":
                encodings += (coding.strip().lower() for coding in value.split(","))
            headers[name] = value
        if repeated is not None:
            why = f"more than one {repeated} header: send one"
            await self._reply(scope, send, outcomes.BAD_INPUT, why, close=_declares_body(scope))
            return None
        too_large = (
            f"the body is larger than {limit} bytes (DSCORE_GATEWAY__MAX_BODY_BYTES); values must fit in it"
        )
        length = headers.get("content-length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            await self._reply(scope, send, outcomes.BODY_TOO_LARGE, too_large, close=True)
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                scope[OUTCOME_SCOPE_KEY] = outcomes.CLIENT_DISCONNECTED
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._reply(scope, send, outcomes.BODY_TOO_LARGE, too_large, close=True)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if body and scope["method"] in ("PUT", "POST") and not _is_json(headers.get("content-type", "")):
            shown = headers.get("content-type", "none")[:100]
            await self._reply(
                scope,
                send,
                outcomes.UNSUPPORTED_MEDIA_TYPE,
                f"the body must be JSON (Content-Type: application/json), not {shown}",
            )
            return None
        coded = [coding for coding in encodings if coding not in ("identity", "")]
        if body and scope["method"] in ("PUT", "POST") and coded:
            await self._reply(
                scope,
                send,
                outcomes.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Encoding {', '.join(coded)[:100]} is not supported: send the body unencoded",
                headers={"Accept-Encoding": "identity"},
            )
            return None
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return body, headers, replay

    async def _reply(
        self,
        scope: Scope,
        send: Send,
        answer: HttpAnswer,
        message: str,
        *,
        close: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer here. `close`: the body was not read (all of it), so the connection cannot serve another
        request (uvicorn closes it after a response with `Connection: close`)."""
        scope[OUTCOME_SCOPE_KEY] = answer.code
        out = dict(headers or {})
        if answer.retry_after:
            out["Retry-After"] = str(self.gateway.options.retry_after_s)
        if close:
            out["Connection"] = "close"
        response = JSONResponse(error_body(answer.code, message), status_code=answer.status, headers=out)
        await response(scope, _disconnected, send)


#: headers a request may carry once (which of several counts would differ between layers: FastAPI takes
#: the first, a dict of them the last)
_SINGLE_HEADERS = {"content-type": "Content-Type", "idempotency-key": "Idempotency-Key"}


def _declares_body(scope: Scope) -> bool:
    """Whether the request says a body follows (Content-Length over 0, or Transfer-Encoding)."""
    for raw_name, value in scope.get("headers", ()):
        name = raw_name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


async def _disconnected() -> Message:
    """The `receive` of a response sent after the body was read: nothing more will come."""
    return {"type": "http.disconnect"}


def _label_of(status: int) -> str:
    if status < 400:
        return "ok"
    return {404: "not_found", 405: "method_not_allowed", 500: "internal_error"}.get(status, f"http_{status}")


# -- the app ------------------------------------------------------------------------------------------


def create_app(gateway: Gateway, *, manage_lifecycle: bool = True) -> GatewayApp:
    """The ASGI app of `gateway`. With `manage_lifecycle`, the app's lifespan starts the gateway and, on
    shutdown (uvicorn's SIGTERM handling: stop accepting, finish in-flight requests), stops it: drain
    within `drain_timeout_s`, then close the endpoint. Tests that drive the app through httpx's
    ASGITransport (which runs no lifespan) start and stop the gateway themselves."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await gateway.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await gateway.stop()

    app = GatewayApp(
        gateway,
        title="dscore gateway",
        version="1",
        summary="The client HTTP API of a dscore cluster: a replicated key-value store",
        description=__doc__,
        lifespan=lifespan,
        redirect_slashes=False,  # /v1/kv is a 404 with a JSON body, not a redirect to /v1/kv/
    )
    app.state.gateway = gateway
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
    return app


class GatewayApp(FastAPI):
    """FastAPI with `GatewayMiddleware` in front of all of FastAPI's and Starlette's own layers (error
    handling, body limits, telemetry, routing), not among them: a plain PUT served by the middleware's
    fast path then costs none of them (they were ~10% of the gateway's CPU at 64 clients), and every
    other request passes through them as before. An exception escaping the middleware itself (a bug)
    reaches uvicorn, which answers 500 and logs it.

    HEAD is served as GET everywhere (FastAPI's GET routes do not take HEAD): the request goes on as a
    GET (a HEAD of a key reads it, counted as a `get`) and the response's body is dropped, so the status
    and headers (Content-Length included) are the GET's."""

    def __init__(self, gateway: Gateway, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.front = GatewayMiddleware(self._fastapi, gateway)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            # a copy: the server's scope still says HEAD (uvicorn then sends no body either)
            await self.front({**scope, "method": "GET"}, receive, _headers_only(send))
            return
        await self.front(scope, receive, send)

    async def _fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document without the 422 `HTTPValidationError` it adds to every route with
        parameters that does not declare a 422 itself: the gateway never sends it (its validation errors
        are `ErrorBody`s, 400 or 422, declared per route)."""
        doc = super().openapi()
        for operations in doc.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                    del responses["422"]
        schemas = doc.get("components", {}).get("schemas", {})
        if "HTTPValidationError" in schemas and "HTTPValidationError" not in json.dumps(doc["paths"]):
            del schemas["HTTPValidationError"]
            if "/ValidationError" not in json.dumps(doc):
                schemas.pop("ValidationError", None)
        return doc


def _headers_only(send: Send) -> Send:
    """`send` with the response's body left out (a HEAD's)."""

    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            message = {**message, "body": b""}
        await send(message)

    return send_head
