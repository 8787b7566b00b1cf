"""The simulator's kernel: virtual time, one event queue, seeded random streams and the trace.

It knows nothing about nodes, clients or networks. Events are plain tuples `(time_us, number, kind, a,
b)` in a heap, so ties break by insertion order, the same way on every run. Every random stream is
`random.Random(f"{seed}:{name}")` (a str seed is hashed with SHA-512), so streams do not depend on
PYTHONHASHSEED or on one another: adding a draw to one stream never moves another. Every trace line is
folded into a SHA-256 digest: two runs of one seed have the same digest.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from typing import Any


class QueueFull(Exception):
    """More events are queued than the run's bound allows (a message storm)."""


class Kernel:
    __slots__ = ("_hash", "_lines", "_max_queue", "_sequence", "counters", "now_us", "queue", "seed")

    def __init__(self, seed: int, *, max_queue_events: int, keep_trace: bool = False) -> None:
        self.seed = seed
        self.now_us = 0
        self.queue: list[tuple[int, int, int, Any, Any]] = []
        self._sequence = 0
        self._max_queue = max_queue_events
        self._hash = hashlib.sha256()
        self._lines: list[str] | None = [] if keep_trace else None
        self.counters: dict[str, int] = {}

    def stream(self, name: str) -> random.Random:
        """The run's random stream called `name`."""
        return random.Random(f"{self.seed}:{name}")

    def push(self, at_us: int, kind: int, a: Any, b: Any) -> None:
        queue = self.queue
        if len(queue) >= self._max_queue:
            raise QueueFull(f"event queue exceeded {self._max_queue} events (message storm?)")
        self._sequence += 1
        heapq.heappush(queue, (at_us, self._sequence, kind, a, b))

    def trace(self, line: str) -> None:
        text = f"{self.now_us} {line}"
        self._hash.update(f"{text}\n".encode())  # one update: the same digest as text, then b"\n"
        if self._lines is not None:
            self._lines.append(text)

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(self._lines or ())
