"""What a fault is, as the HTTP API takes and shows it.

    POST /v1/faults  {"kind": "pod_kill", "target": "leader", "schedule": {"every_s": 60, "times": 5}}

Kinds (target default in brackets; the backend that makes it):

- `pod_kill` (Kubernetes): target `leader` [default], `random` or a pod name; params `grace_period_s`
  (1..3600; default: the pod's own).
- `process_kill` (local processes, SIGKILL): target `leader` [default], `random` or a process name such
  as `node-n1`; no params.
- `process_pause` (local processes, SIGSTOP then SIGCONT): targets as `process_kill`; `duration_s`.
- `omission` (transport, over the control topic): target `all` [default], `leader`, `random` or a node
  id: the nodes that drop; `drop_probability`, `peers`, `direction` (send, receive, both), `duration_s`.
- `delay` (transport): targets as `omission`; `delay_ms`, `peers`, `duration_s` (sends only).
- `partition` (transport): target `leader` [default], `random` or a node id, cut off from every other
  node; or `params.groups` (then no target); `duration_s`.

A schedule is "once" (the default), or `every_s` seconds `times` times, the first after `start_after_s`.
A fault with a duration ends before the next one starts (`duration_s <= every_s`).

Every injection is counted in `dscore_chaos_faults_injected_total{kind}` under the label of
`dscore.metrics.FAULT_KINDS` that names it (`METRIC_KIND`), which the dashboards draw as annotations.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dscore.core.errors import LocalError
from dscore.transport.faults import MAX_DELAY_MS

#: a target or a peer: a node id, a pod or a process name, or a keyword
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")


class ChaosKind(enum.Enum):
    POD_KILL = "pod_kill"
    PROCESS_KILL = "process_kill"
    PROCESS_PAUSE = "process_pause"
    OMISSION = "omission"
    DELAY = "delay"
    PARTITION = "partition"


#: the `kind` label of dscore_chaos_faults_injected_total (one of dscore.metrics.FAULT_KINDS)
METRIC_KIND: dict[ChaosKind, str] = {
    ChaosKind.POD_KILL: "kill",
    ChaosKind.PROCESS_KILL: "kill",
    ChaosKind.PROCESS_PAUSE: "pause",
    ChaosKind.OMISSION: "link_drop",
    ChaosKind.DELAY: "link_delay",
    ChaosKind.PARTITION: "partition",
}
#: counted when a partition ends (the service stopped it, or its time was up)
HEAL_METRIC_KIND = "heal"
TRANSPORT_KINDS = frozenset({ChaosKind.OMISSION, ChaosKind.DELAY, ChaosKind.PARTITION})
DEFAULT_TARGET: dict[ChaosKind, str] = {
    ChaosKind.POD_KILL: "leader",
    ChaosKind.PROCESS_KILL: "leader",
    ChaosKind.PROCESS_PAUSE: "leader",
    ChaosKind.OMISSION: "all",
    ChaosKind.DELAY: "all",
    ChaosKind.PARTITION: "leader",
}
LEADER = "leader"
RANDOM = "random"
ALL = "all"


class InvalidFaultError(LocalError):
    """A fault request that cannot be carried out as asked (the API answers 422)."""


# -- params, one model per kind ---------------------------------------------------------------------


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @property
    def duration(self) -> float | None:
        return None


class PodKillParams(_Params):
    #: the pod's grace period for this deletion (SIGTERM, then SIGKILL after it); none: the pod's own.
    #: Never 0: a forced deletion lets the StatefulSet start a pod of the same identity while the old
    #: container may still run (two processes of one node on one storage)
    grace_period_s: int | None = Field(default=None, ge=1, le=3600)


class ProcessKillParams(_Params):
    pass


class _Lasting(_Params):
    #: how long the fault lasts (it ends by itself then)
    duration_s: float = Field(gt=0)

    @property
    def duration(self) -> float | None:
        return self.duration_s


class ProcessPauseParams(_Lasting):
    pass


def _check_names(names: list[str]) -> list[str]:
    for name in names:
        if not _NAME.match(name) or len(name) > 63:
            raise ValueError(f"{name!r} is not a node id")
    return names


class OmissionParams(_Lasting):
    drop_probability: float = Field(gt=0, le=1)
    #: only traffic with these endpoints (none: every endpoint, clients too)
    peers: list[str] = Field(default_factory=list, max_length=256)
    direction: Literal["send", "receive", "both"] = "send"

    _peers = field_validator("peers")(_check_names)


class DelayParams(_Lasting):
    delay_ms: int = Field(ge=1, le=MAX_DELAY_MS)
    peers: list[str] = Field(default_factory=list, max_length=256)

    _peers = field_validator("peers")(_check_names)


class PartitionParams(_Lasting):
    #: the sides, e.g. [["n1"], ["n2", "n3"]]; none: the target cut off from every other node
    groups: list[list[str]] | None = Field(default=None, max_length=64)

    @field_validator("groups")
    @classmethod
    def _check_groups(cls, value: list[list[str]] | None) -> list[list[str]] | None:
        if value is None:
            return None
        if len(value) < 2 or any(not group for group in value):
            raise ValueError("a partition needs at least two non-empty groups")
        members = [n for group in value for n in _check_names(group)]
        if len(set(members)) != len(members):
            raise ValueError("a node may be in one group only")
        return value


PARAMS: dict[ChaosKind, type[_Params]] = {
    ChaosKind.POD_KILL: PodKillParams,
    ChaosKind.PROCESS_KILL: ProcessKillParams,
    ChaosKind.PROCESS_PAUSE: ProcessPauseParams,
    ChaosKind.OMISSION: OmissionParams,
    ChaosKind.DELAY: DelayParams,
    ChaosKind.PARTITION: PartitionParams,
}


# -- requests ---------------------------------------------------------------------------------------


class Schedule(BaseModel):
    """Once (the default), or every `every_s` seconds, `times` times; the first after `start_after_s`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    every_s: float | None = Field(default=None, gt=0, le=86_400)
    times: int = Field(default=1, ge=1, le=10_000)
    start_after_s: float = Field(default=0.0, ge=0, le=86_400)

    @model_validator(mode="after")
    def _check(self) -> Schedule:
        if self.times > 1 and self.every_s is None:
            raise ValueError("times > 1 needs every_s")
        return self

    def due(self, number: int, first_at: float) -> float:
        """When injection `number` (0-based) is due, the first being due at `first_at`."""
        return first_at + number * (self.every_s or 0.0)


class FaultRequest(BaseModel):
    """The body of `POST /v1/faults`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"kind": "pod_kill", "target": "leader"},
                {"kind": "partition", "target": "leader", "params": {"duration_s": 10}},
                {"kind": "process_pause", "target": "random", "params": {"duration_s": 5},
                 "schedule": {"every_s": 30, "times": 4}},
            ]
        },
    )  # fmt: skip

    kind: ChaosKind
    #: see the module docstring; default per kind
    target: str | None = Field(default=None, max_length=253)
    params: dict[str, Any] = Field(default_factory=dict)
    schedule: Schedule = Field(default_factory=Schedule)

    @field_validator("target")
    @classmethod
    def _check_target(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError("must be leader, random, all or a name (letters, digits, '_', '.', '-')")
        return value


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """A checked request: what the service schedules."""

    kind: ChaosKind
    target: str
    params: _Params
    schedule: Schedule

    @property
    def duration_s(self) -> float | None:
        return self.params.duration

    def params_view(self) -> dict[str, Any]:
        return self.params.model_dump(mode="json")


def parse_request(request: FaultRequest, *, max_duration_s: float) -> FaultSpec:
    """Check a request against its kind's params and the service's limits; `InvalidFaultError` says
    what is wrong."""
    kind = request.kind
    try:
        params = PARAMS[kind].model_validate(request.params)
    except ValidationError as error:
        problems = "; ".join(
            f"params.{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors()
        )
        raise InvalidFaultError(problems) from None
    duration = params.duration
    if duration is not None and duration > max_duration_s:
        raise InvalidFaultError(
            f"params.duration_s: at most {max_duration_s:g} s (DSCORE_CHAOS__MAX_DURATION_S)"
        )
    schedule = request.schedule
    if (
        duration is not None
        and schedule.times > 1
        and schedule.every_s is not None
        and duration > schedule.every_s
    ):
        raise InvalidFaultError("params.duration_s must not exceed schedule.every_s (one fault at a time)")
    target = request.target
    if kind is ChaosKind.PARTITION and isinstance(params, PartitionParams) and params.groups is not None:
        if target is not None:
            raise InvalidFaultError("a partition takes either a target or params.groups, not both")
        target = "groups"
    if target is None:
        target = DEFAULT_TARGET[kind]
    if target == ALL and kind not in (ChaosKind.OMISSION, ChaosKind.DELAY):
        raise InvalidFaultError(f"target 'all' is for omission and delay, not {kind.value}")
    return FaultSpec(kind, target, params, schedule)


# -- views ------------------------------------------------------------------------------------------


class FaultState(enum.Enum):
    #: waiting for its next injection
    SCHEDULED = "scheduled"
    #: an injection with a duration is in force
    ACTIVE = "active"
    #: every injection was made (and ended)
    FINISHED = "finished"
    #: stopped by `DELETE /v1/faults/{id}` (or the service's shutdown)
    STOPPED = "stopped"


class InjectionView(BaseModel):
    number: int = Field(description="0-based, in schedule order")
    at: float = Field(description="when it was made, Unix seconds")
    outcome: Literal["injected", "failed"]
    target: str | None = Field(description="what was hit: a pod, a process, node ids")
    detail: str
    ended_at: float | None = Field(default=None, description="when a lasting fault ended, Unix seconds")
    end_detail: str | None = None


class FaultView(BaseModel):
    id: str
    kind: ChaosKind
    target: str
    params: dict[str, Any]
    schedule: Schedule
    state: FaultState
    created_at: float = Field(description="Unix seconds")
    next_at: float | None = Field(description="when the next injection is due, Unix seconds")
    injections: list[InjectionView]


class FaultList(BaseModel):
    faults: list[FaultView]


class ErrorBody(BaseModel):
    error: str = Field(description="invalid_request, kind_unavailable, too_many_faults, not_found")
    message: str
