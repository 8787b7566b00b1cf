"""The fault table and the scheduler: each fault is one task that waits for its injections' times on the
service's `Clock`, makes each through its kind's backend, ends each lasting one when its time is up, and
on a stop (or the service's shutdown) ends what is in force before it returns: a paused process is
resumed, a transport fault gets its stop command.

Every injection made is counted (`dscore_chaos_faults_injected_total{kind}`, and `heal` when a partition
ends) and, when Grafana is configured, annotated; one that cannot be made (no leader found, the platform
refused) is recorded as failed and counted in `dscore_chaos_injections_failed_total`. Nothing a backend
raises stops the scheduler.

Fault ids are random (`f-` and 12 hex digits), never reused across restarts of the service: nodes
remember stopped transport faults by id and ignore a later start with the same one.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dscore.core.errors import DscoreError, LocalError
from dscore_chaos.annotations import GrafanaAnnotator
from dscore_chaos.backends.base import Backend, Hit
from dscore_chaos.clock import Clock
from dscore_chaos.metrics import ServiceMetrics
from dscore_chaos.model import (
    HEAL_METRIC_KIND,
    METRIC_KIND,
    ChaosKind,
    FaultRequest,
    FaultSpec,
    FaultState,
    FaultView,
    InjectionView,
    InvalidFaultError,
    parse_request,
)

log = logging.getLogger("dscore_chaos")

#: injections remembered per fault (the newest)
MAX_INJECTIONS_KEPT = 100
#: how long a stop waits for the fault's end actions (each is bounded by its backend's timeouts)
STOP_TIMEOUT_S = 30.0


class KindUnavailableError(LocalError):
    """No backend of this service makes that kind (the API answers 422)."""


class TooManyFaultsError(LocalError):
    """`max_active_faults` are scheduled or in force already (the API answers 503)."""


class UnknownFaultError(LocalError):
    """No fault has that id (the API answers 404)."""


@dataclass(slots=True)
class Injection:
    number: int
    at: float
    outcome: str
    target: str | None
    detail: str
    ended_at: float | None = None
    end_detail: str | None = None


@dataclass(slots=True)
class Fault:
    id: str
    spec: FaultSpec
    created_at: float
    state: FaultState = FaultState.SCHEDULED
    next_at: float | None = None
    injections: deque[Injection] = field(default_factory=lambda: deque(maxlen=MAX_INJECTIONS_KEPT))
    task: asyncio.Task[None] | None = None
    #: the injection in force and how to end it
    active: tuple[Injection, Hit] | None = None
    settled: bool = False

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def view(self) -> FaultView:
        spec = self.spec
        return FaultView(
            id=self.id,
            kind=spec.kind,
            target=spec.target,
            params=spec.params_view(),
            schedule=spec.schedule,
            state=self.state,
            created_at=self.created_at,
            next_at=self.next_at,
            injections=[
                InjectionView(
                    number=i.number,
                    at=i.at,
                    outcome="injected" if i.outcome == "injected" else "failed",
                    target=i.target,
                    detail=i.detail,
                    ended_at=i.ended_at,
                    end_detail=i.end_detail,
                )
                for i in self.injections
            ],
        )


def new_fault_id() -> str:
    return f"f-{secrets.token_hex(6)}"


class ChaosService:
    def __init__(
        self,
        backends: Iterable[Backend],
        *,
        clock: Clock,
        metrics: ServiceMetrics,
        annotator: GrafanaAnnotator | None = None,
        max_active_faults: int = 32,
        max_finished_faults: int = 256,
        max_duration_s: float = 600.0,
        new_id: Callable[[], str] = new_fault_id,
    ) -> None:
        self.backends = list(backends)
        self._by_kind: dict[ChaosKind, Backend] = {}
        for backend in self.backends:
            for kind in backend.kinds:
                if kind in self._by_kind:
                    raise LocalError(f"two backends make {kind.value}")
                self._by_kind[kind] = backend
        self.clock = clock
        self.metrics = metrics
        self.annotator = annotator
        self.max_active_faults = max_active_faults
        self.max_finished_faults = max_finished_faults
        self.max_duration_s = max_duration_s
        self._new_id = new_id
        self._faults: dict[str, Fault] = {}
        self._finished: deque[str] = deque()
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def kinds(self) -> list[ChaosKind]:
        return [kind for kind in ChaosKind if kind in self._by_kind]

    def active_count(self) -> int:
        return sum(1 for fault in self._faults.values() if fault.running)

    async def start(self) -> None:
        for backend in self.backends:
            await backend.start()

    async def close(self) -> None:
        """Stop every fault (ending what is in force), then close the backends."""
        self._closed = True
        for fault in list(self._faults.values()):
            if fault.running:
                await self.stop_fault(fault.id)
        for backend in self.backends:
            try:
                await backend.close()
            except Exception:  # closing is best effort
                log.exception("closing a backend failed")
        if self.annotator is not None:
            await self.annotator.close()

    # -- the API ------------------------------------------------------------------------------------

    def check(self, request: FaultRequest) -> FaultSpec:
        """A request as a spec this service can carry out, or `InvalidFaultError` /
        `KindUnavailableError`."""
        spec = parse_request(request, max_duration_s=self.max_duration_s)
        backend = self._by_kind.get(spec.kind)
        if backend is None:
            available = ", ".join(k.value for k in self.kinds) or "none"
            raise KindUnavailableError(f"{spec.kind.value} is not enabled here (enabled: {available})")
        check = getattr(backend, "check", None)
        if check is not None:
            check(spec)
        return spec

    def start_fault(self, request: FaultRequest) -> Fault:
        if self._closed:
            raise TooManyFaultsError("the service is shutting down")
        spec = self.check(request)
        if self.active_count() >= self.max_active_faults:
            raise TooManyFaultsError(
                f"{self.max_active_faults} faults are scheduled or in force (DSCORE_CHAOS__MAX_ACTIVE_FAULTS)"
            )
        fault = Fault(self._new_id(), spec, self.clock.now())
        self._faults[fault.id] = fault
        task = asyncio.get_running_loop().create_task(self._run(fault), name=f"dscore-chaos-{fault.id}")
        fault.task = task
        # Settled by a callback, not only at the end of `_run`: a task cancelled before it ran never
        # enters it.
        task.add_done_callback(lambda _task: self._settle(fault))
        log.info("fault %s: %s on %s scheduled (%s)", fault.id, spec.kind.value, spec.target, spec.schedule)
        self._notify()
        return fault

    async def stop_fault(self, fault_id: str) -> Fault:
        fault = self.get(fault_id)
        task = fault.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=STOP_TIMEOUT_S)
            if task.done():
                self._settle(fault)
        return fault

    def get(self, fault_id: str) -> Fault:
        fault = self._faults.get(fault_id)
        if fault is None:
            raise UnknownFaultError(f"no fault {fault_id!r}")
        return fault

    def faults(self) -> list[Fault]:
        return list(self._faults.values())

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Wait until `predicate()` holds, checked after every change of a fault (tests, tools)."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    # -- the scheduler ------------------------------------------------------------------------------

    async def _run(self, fault: Fault) -> None:
        spec = fault.spec
        schedule = spec.schedule
        clock = self.clock
        first_at = fault.created_at + schedule.start_after_s
        try:
            for number in range(schedule.times):
                fault.state = FaultState.SCHEDULED
                fault.next_at = schedule.due(number, first_at)
                self._notify()
                await clock.sleep_until(fault.next_at)
                fault.next_at = None
                injection, hit = await self._inject(fault, number)
                if hit is not None and hit.end is not None and spec.duration_s is not None:
                    fault.active = (injection, hit)
                    fault.state = FaultState.ACTIVE
                    self._notify()
                    await clock.sleep_until(injection.at + spec.duration_s)
                    await self._end(fault)
            fault.state = FaultState.FINISHED
        finally:
            if fault.active is not None:
                await self._end(fault)

    def _settle(self, fault: Fault) -> None:
        """The fault's task is over: its final state, and a place among the finished (once)."""
        if fault.settled:
            return
        fault.settled = True
        if fault.state is not FaultState.FINISHED:
            fault.state = FaultState.STOPPED
            log.info("fault %s stopped", fault.id)
        fault.next_at = None
        self._finished.append(fault.id)
        while len(self._finished) > self.max_finished_faults:
            self._faults.pop(self._finished.popleft(), None)
        self._notify()

    async def _inject(self, fault: Fault, number: int) -> tuple[Injection, Hit | None]:
        spec = fault.spec
        backend = self._by_kind[spec.kind]
        at = self.clock.now()
        try:
            hit = await backend.inject(spec, fault.id, number)
        except (DscoreError, InvalidFaultError) as error:
            return self._failed(fault, number, at, str(error)), None
        except Exception as error:  # a backend's bug or a client library's surprise: recorded, not fatal
            log.exception("fault %s: injection %d raised", fault.id, number)
            return self._failed(fault, number, at, repr(error)), None
        injection = Injection(number, at, "injected", hit.target, hit.detail)
        fault.injections.append(injection)
        metric_kind = METRIC_KIND[spec.kind]
        self.metrics.chaos.fault_injected(metric_kind)
        log.info("fault %s: injection %d: %s", fault.id, number, hit.detail)
        if self.annotator is not None:
            self.annotator.annotate(at, metric_kind, f"{spec.kind.value} {fault.id}.{number}: {hit.detail}")
        self._notify()
        return injection, hit

    def _failed(self, fault: Fault, number: int, at: float, why: str) -> Injection:
        injection = Injection(number, at, "failed", None, why)
        fault.injections.append(injection)
        self.metrics.failed.labels(fault.spec.kind.value).inc()
        log.warning("fault %s: injection %d failed: %s", fault.id, number, why)
        self._notify()
        return injection

    async def _end(self, fault: Fault) -> None:
        active, fault.active = fault.active, None
        if active is None:
            return
        injection, hit = active
        assert hit.end is not None
        try:
            detail = await hit.end()
        except Exception as error:  # recorded; a transport fault still ends at its expiry on the nodes
            log.exception("fault %s: ending injection %d failed", fault.id, injection.number)
            detail = f"ending failed: {error!r}"
        injection.ended_at = self.clock.now()
        injection.end_detail = detail
        log.info("fault %s: injection %d ended: %s", fault.id, injection.number, detail)
        if fault.spec.kind is ChaosKind.PARTITION:
            self.metrics.chaos.fault_injected(HEAL_METRIC_KIND)
            if self.annotator is not None:
                self.annotator.annotate(
                    injection.ended_at, HEAL_METRIC_KIND, f"heal {fault.id}.{injection.number}"
                )
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
