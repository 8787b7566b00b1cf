"""The HTTP API (FastAPI; the OpenAPI document is at `/openapi.json`).

    POST   /v1/faults          {"kind", "target", "params", "schedule"}  201 the fault (its `id`; when
                               it is due at once, with its first injection's outcome)
    GET    /v1/faults          200 {"faults": [...]}, newest last
    GET    /v1/faults/{id}     200 the fault / 404
    DELETE /v1/faults/{id}     200 the fault, stopped (what was in force is ended first) / 404
    GET    /healthz            200 {"status": "ok", "kinds": [the kinds this service makes]}
    GET    /metrics            Prometheus text format

Kinds, targets, params and schedules: `dscore_chaos.model`. Errors are JSON `{"error": code, "message":
what was wrong}`: 422 `invalid_request` (a body of the wrong shape, bad params, a schedule that overlaps
its own faults, an unknown node), 422 `kind_unavailable` (no backend of this service makes that kind),
503 `too_many_faults` (`max_active_faults` reached), 404 `not_found`. A fault whose injection fails (no
leader found, the platform refused) is still created: its injections say why.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from dscore_chaos.model import ErrorBody, FaultList, FaultRequest, FaultView, InvalidFaultError
from dscore_chaos.service import ChaosService, KindUnavailableError, TooManyFaultsError, UnknownFaultError

#: how long `POST /v1/faults` waits for a fault's first injection when it is due at once
FIRST_INJECTION_WAIT_S = 30.0

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no fault with that id"},
    422: {"model": ErrorBody, "description": "invalid_request or kind_unavailable"},
    503: {"model": ErrorBody, "description": "too_many_faults"},
}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def create_app(service: ChaosService, *, manage_lifecycle: bool = True) -> FastAPI:
    """The app around a service; with `manage_lifecycle` the app starts the service's backends at
    start-up and stops every fault and closes them at shutdown."""

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

    @app.post("/v1/faults", status_code=201, response_model=FaultView, responses=_ERRORS)
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

    @app.get("/v1/faults", response_model=FaultList)
    async def list_faults() -> FaultList:
        return FaultList(faults=[fault.view() for fault in service.faults()])

    @app.get("/v1/faults/{fault_id}", response_model=FaultView, responses=_ERRORS)
    async def get_fault(fault_id: str) -> Any:
        try:
            return service.get(fault_id).view()
        except UnknownFaultError as error:
            return _error(404, "not_found", str(error))

    @app.delete("/v1/faults/{fault_id}", response_model=FaultView, responses=_ERRORS)
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
