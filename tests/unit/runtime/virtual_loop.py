"""An asyncio event loop on virtual time, for tests of code that waits on the loop's clock (`call_at`,
`asyncio.sleep`, `loop.time()`): when nothing is ready to run, the clock jumps to the next timer instead of
the loop sleeping. A run takes no wall-clock time, and the times it observes are exact.

Only for code without real I/O (the memory transport): the selector polls real file descriptors without
ever blocking, and a loop with nothing ready and no timer raises instead of hanging.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _Clockwork(selectors.SelectSelector):
    """A selector that moves the virtual clock by each wait the loop asks for, and never blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise RuntimeError("virtual loop: nothing is ready and no timer is set: the run would hang")
        self.now += max(0.0, timeout)
        return super().select(0)


class VirtualLoop(asyncio.SelectorEventLoop):
    """`asyncio.SelectorEventLoop` whose `time()` is virtual (starts at 0.0)."""

    def __init__(self) -> None:
        self._clockwork = _Clockwork()
        super().__init__(self._clockwork)

    def time(self) -> float:
        return self._clockwork.now


def run_virtual(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` to its end on a fresh `VirtualLoop`."""
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()
