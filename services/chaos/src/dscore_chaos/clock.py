"""The service's time: Unix seconds, and waiting until a given one. The scheduler reads only this, so the
tests drive it with a virtual clock (no sleeps)."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Unix seconds."""
        ...

    async def sleep_until(self, at: float) -> None:
        """Return once `now() >= at` (at once if it is already)."""
        ...


class SystemClock:
    """The machine's clock (Unix seconds: expiries of transport faults are compared on the nodes)."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, at: float) -> None:
        while (left := at - time.time()) > 0:
            await asyncio.sleep(left)
