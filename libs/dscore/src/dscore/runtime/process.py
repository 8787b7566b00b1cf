"""Running one node as a process: until SIGTERM (a clean stop) or an internal failure (a non-zero exit).

An orchestrator (Kubernetes, systemd, `make up`) restarts a process that exits non-zero, and stops one by
SIGTERM. `serve(runtime)` gives a node process exactly that contract:

- it starts the runtime and waits for SIGTERM / SIGINT or for the runtime to fail;
- on SIGTERM a leader first hands leadership to a caught-up voter (Raft's leadership transfer, bounded by
  `handover_timeout_s`), so the cluster does not wait an election timeout for a new one; then the
  runtime stops and `serve` returns 0;
- if the runtime fails (an unexpected exception in its loop: a bug, since bad input never raises), the
  error is logged with its traceback and `serve` returns 1. Nothing is flushed on the way out: what the
  storage holds is what the next incarnation resumes from, as after kill -9.

A process main is then `sys.exit(asyncio.run(serve(runtime)))` (see `services/node`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from dscore.runtime.node import NodeRuntime

log = logging.getLogger(__name__)

#: a leader stopping on SIGTERM waits at most this long for another node to take over
DEFAULT_HANDOVER_TIMEOUT_S = 2.0
EXIT_OK = 0
EXIT_FAILED = 1


async def serve(
    runtime: NodeRuntime,
    *,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    handover_timeout_s: float = DEFAULT_HANDOVER_TIMEOUT_S,
    restart_cannot_help: tuple[type[BaseException], ...] = (),
) -> int:
    """Run `runtime` until `stop` is set (SIGTERM / SIGINT set it when `handle_signals`) or it fails;
    return the process exit status (see the module docstring). A failure of one of the
    `restart_cannot_help` types is left to the caller to report (it exits with a status of its own), so
    it is not logged here as one to restart."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    installed: list[signal.Signals] = []
    if handle_signals:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
    try:
        await runtime.start()
        log.info("node %s started (incarnation %d)", runtime.node_id, runtime.incarnation)
        stopping = asyncio.ensure_future(stop.wait())
        failing = asyncio.ensure_future(runtime.wait_failed())
        done, pending = await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if failing in done:
            error = failing.result()
            if isinstance(error, restart_cannot_help):
                return EXIT_FAILED
            log.error(
                "node %s failed; exiting with status %d so that it is restarted: %r",
                runtime.node_id,
                EXIT_FAILED,
                error,
                exc_info=error,
            )
            return EXIT_FAILED
        log.info("node %s stopping", runtime.node_id)
        with contextlib.suppress(TimeoutError):
            await runtime.hand_over(handover_timeout_s)
        await runtime.stop()
        if runtime.failure is not None:
            return EXIT_FAILED
        log.info("node %s stopped", runtime.node_id)
        return EXIT_OK
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
