"""What every backend offers the service: inject one fault now, and say which node leads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from dscore.core.errors import DscoreError
from dscore_chaos.model import ChaosKind, FaultSpec


class InjectionError(DscoreError):
    """The fault could not be made (no target, the platform refused); recorded as a failed injection."""


@dataclass(frozen=True, slots=True)
class Hit:
    """One injection made: what it hit, and, for a lasting fault, how to end it (returns what it did)."""

    target: str
    detail: str
    end: Callable[[], Awaitable[str]] | None = None


class Backend(Protocol):
    #: the kinds this backend makes
    kinds: frozenset[ChaosKind]

    async def start(self) -> None: ...

    async def inject(self, spec: FaultSpec, fault_id: str, number: int) -> Hit:
        """Make injection `number` of fault `fault_id` now; `InjectionError` (or `TargetError`) if it
        cannot."""
        ...

    async def close(self) -> None: ...


class LeaderSource(Protocol):
    """Something that can tell which node leads (the node id), for transport faults aimed at it."""

    async def leader_node_id(self) -> str: ...
