"""Process-wide garbage-collector tuning for processes that run nodes.

CPython's cyclic collector runs a young-generation pass every 700 net allocations by default. A node
under load allocates a few dozen short-lived objects per client operation (envelopes, entries, futures,
results), almost none of them in cycles, so with 1000+ operations in flight the default spends a fifth
of the CPU scanning live objects and adds full collections of a growing old generation to tail latency.
`dscore bench raft --gc-gen0-threshold 0` shows the default next to the tuned one (see BENCHMARKS.md:
about 20% more committed ops/s and a p99 several times lower at 1000 in flight).

Raising the young-generation threshold keeps the collector on (reference cycles are still reclaimed)
while making it run some 70 times less often; `gc.freeze()` moves everything allocated while starting
up (modules, classes, settings) out of the collector's view for good.

This is the process's business, not a node's: several nodes share one process in the embedded mode, so
entry points (`dscore demo`, `dscore bench raft`, a service's main) call `tune_gc` once; the library
never changes the collector behind its caller's back.
"""

from __future__ import annotations

import gc

from dscore.core.errors import ConfigError

#: young-generation threshold for node processes (CPython's default is 700)
DEFAULT_GC_GEN0_THRESHOLD = 50_000


def tune_gc(gen0_threshold: int = DEFAULT_GC_GEN0_THRESHOLD, *, freeze: bool = True) -> None:
    """Set the young-generation threshold (0 leaves CPython's thresholds as they are) and, with
    `freeze`, exclude every object alive now from future collections."""
    if gen0_threshold < 0:
        raise ConfigError(f"gc gen0 threshold must be >= 0 (0 keeps the default), got {gen0_threshold}")
    if gen0_threshold:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0_threshold, gen1, gen2)
    if freeze:
        gc.freeze()
