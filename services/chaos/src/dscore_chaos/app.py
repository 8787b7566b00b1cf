"""The HTTP API (FastAPI; the OpenAPI document is at `/openapi.json`).

    POST   /v1/faults          {"kind", "target", "params", "schedule"}  201 the fault (its `id`; when
                               it is due at once, with its first injection's outcome)
    GET    /v1/faults          200 {"faults": [...]}, newest last
    GET    /v1/faults/{id}     200 the fault / 404
    DELETE /v1/faults/{id}     200 the fault, stopped (what was in force is ended first) / 404
    GET    /healthz            200 {"status": "ok", "kinds": [the kinds this service makes]}
    GET    /metrics            Prometheus text format

Every path but `/healthz`, `/metrics` and the API's documentation (`/openapi.json`, `/docs`, `/redoc`)
needs `Authorization: Bearer <token>` (`DSCORE_CHAOS__API_TOKEN`; compared in constant time): without
one, 401 `unauthorized` with `WWW-Authenticate: Bearer`; with a wrong one, 401 `unauthorized` too (as the
node's `/admin`); each refusal counted in `dscore_chaos_requests_rejected_total{reason="missing_token"|
"bad_token"}`. Only `DSCORE_CHAOS__INSECURE_NO_AUTH=true` serves the API without a token.

Kinds, targets, params and schedules: `dscore_chaos.model`. Errors are JSON `{"error": code, "message":
what was wrong}`: 401 `unauthorized` (above), 422 `invalid_request` (a body of the wrong shape, bad
params, a schedule that overlaps its own faults, an unknown node), 422 `kind_unavailable` (no backend of
this service makes that kind), 503 `too_many_faults` (`max_active_faults` reached), 404 `not_found`. A
fault whose injection fails (no leader found, the platform refused) is still created: its injections say
why.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from dscore_chaos.model import ErrorBody, FaultList, FaultRequest, FaultView, InvalidFaultError
from dscore_chaos.service import ChaosService, KindUnavailableError, TooManyFaultsError, UnknownFaultError

#: how long `POST /v1/faults` waits for a fault's first injection when it is due at once
FIRST_INJECTION_WAIT_S = 30.0

#: paths served without the bearer token: probes, Prometheus, and the API's documentation
OPEN_PATHS = frozenset({"/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
#: the realm of the `WWW-Authenticate` challenge
REALM = "dscore-chaos"

_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "unauthorized: no bearer token, or a wrong one"},
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no fault with that id"},
    422: {"model": ErrorBody, "description": "invalid_request or kind_unavailable"},
    503: {"model": ErrorBody, "description": "too_many_faults"},
}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def token_digest(token: SecretStr) -> bytes:
    """The SHA-256 `BearerAuth` compares with; refuses a blank token or one with surrounding whitespace
    (`dscore_chaos.settings` strips it at load and holds the token to its rules)."""
    secret = token.get_secret_value()
    if not secret or secret != secret.strip():
        raise ValueError("the chaos API token must be non-blank, without surrounding whitespace")
    return _digest(secret.encode())


class BearerAuth:
    """ASGI middleware: an HTTP request to any path but `OPEN_PATHS` goes on only with
    `Authorization: Bearer <token>`. It holds the token's SHA-256 only (`token_digest`), and compares
    the presented token's with it by `hmac.compare_digest` (constant time; nor is the token's length
    told). `rejected(reason)` counts each refusal."""

    def __init__(self, app: ASGIApp, *, digest: bytes, rejected: Callable[[str], None]) -> None:
        self._app = app
        self._expected = digest
        self._rejected = rejected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self._app(scope, receive, send)
            return
        # Starlette decodes header values as latin-1: encoding them back gives the bytes sent
        scheme, _, presented = Headers(scope=scope).get("authorization", "").partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            reason, why, challenge = "missing_token", "missing bearer token", f'Bearer realm="{REALM}"'
        elif not hmac.compare_digest(_digest(presented.encode("latin-1")), self._expected):
            reason, why = "bad_token", "bad bearer token"
            challenge = f'Bearer realm="{REALM}", error="invalid_token"'
        else:
            await self._app(scope, receive, send)
            return
        self._rejected(reason)
        response = _error(401, "unauthorized", why)
        response.headers["WWW-Authenticate"] = challenge
        await response(scope, receive, send)


def create_app(
    service: ChaosService, *, api_token: SecretStr | None, manage_lifecycle: bool = True
) -> FastAPI:
    """The app around a service. With `api_token`, every path but `OPEN_PATHS` needs it as a bearer
    token; `None` serves the fault API to anyone (only for `DSCORE_CHAOS__INSECURE_NO_AUTH`): a
    keyword without a default, so no caller opens the API by forgetting it. With `manage_lifecycle` the
    app starts the service's backends at start-up and stops every fault and closes them at shutdown."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await service.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await service.close()

    app = FastAPI(
        title="dscore chaos",
        version="1",
        description="Inject faults into a dscore cluster: kill or pause nodes, drop, delay or partition "
        "their traffic; list and stop them.",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors():
            where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
            problems.append(f"{where or 'body'}: {str(item.get('msg', '')).removeprefix('Value error, ')}")
        return _error(422, "invalid_request", "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return _error(error.status_code, code, str(error.detail))

    # the answers the OpenAPI document lists: 401 only when a token is needed
    unauthorized = _UNAUTHORIZED if api_token is not None else {}
    errors = {**unauthorized, **_ERRORS}
    if api_token is not None:
        app.add_middleware(
            BearerAuth,
            digest=token_digest(api_token),
            rejected=lambda reason: service.metrics.rejected.labels(reason).inc(),
        )

        def openapi() -> dict[str, Any]:
            # the bearer scheme in the document, so /docs asks for the token ("Authorize")
            if app.openapi_schema is None:
                schema = get_openapi(
                    title=app.title, version=app.version, description=app.description, routes=app.routes
                )
                schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
                schemes["bearer"] = {"type": "http", "scheme": "bearer"}
                for path, operations in schema["paths"].items():
                    if path not in OPEN_PATHS:
                        for operation in operations.values():
                            operation["security"] = [{"bearer": []}]
                app.openapi_schema = schema
            return app.openapi_schema

        app.openapi = openapi  # type: ignore[method-assign]

    @app.post("/v1/faults", status_code=201, response_model=FaultView, responses=errors)
    async def start_fault(request: FaultRequest) -> Any:
        try:
            fault = service.start_fault(request)
        except InvalidFaultError as error:
            return _error(422, "invalid_request", str(error))
        except KindUnavailableError as error:
            return _error(422, "kind_unavailable", str(error))
        except TooManyFaultsError as error:
            return _error(503, "too_many_faults", str(error))
        if fault.spec.schedule.start_after_s == 0:
            # Answer with the first injection's outcome (each backend bounds its calls).

            def made() -> bool:
                return bool(fault.injections or fault.settled)

            with contextlib.suppress(TimeoutError):
                await service.wait_for(made, FIRST_INJECTION_WAIT_S)
        return fault.view()

    @app.get("/v1/faults", response_model=FaultList, responses=unauthorized)
    async def list_faults() -> FaultList:
        return FaultList(faults=[fault.view() for fault in service.faults()])

    @app.get("/v1/faults/{fault_id}", response_model=FaultView, responses=errors)
    async def get_fault(fault_id: str) -> Any:
        try:
            return service.get(fault_id).view()
        except UnknownFaultError as error:
            return _error(404, "not_found", str(error))

    @app.delete("/v1/faults/{fault_id}", response_model=FaultView, responses=errors)
    async def stop_fault(fault_id: str) -> Any:
        try:
            fault = await service.stop_fault(fault_id)
        except UnknownFaultError as error:
            return _error(404, "not_found", str(error))
        return fault.view()

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "kinds": [kind.value for kind in service.kinds]}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
