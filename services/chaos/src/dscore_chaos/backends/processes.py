"""Local processes: SIGKILL, and SIGSTOP then SIGCONT after a duration, by pid file.

`make up` (scripts/dev.sh) writes `.run/<name>.pid` for every process it starts (`node-n1`, ...) and
`.run/dev.env` with each node's HTTP address (`DSCORE_NODE_URL_N1=http://127.0.0.1:23181`), which is how
the leader is found (`HttpLeaderFinder`). The targets are `names` (default: every `node-*.pid`).

A pid is signalled only if its process is alive and its command line contains `cmdline_marker`
(default "dscore"), so a stale pid file never hits a process that reused the pid; a pause is resumed
only if the process is still the one paused (same start time in /proc).
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Sequence
from pathlib import Path

from dscore_chaos.backends.base import Hit, InjectionError
from dscore_chaos.model import ChaosKind, FaultSpec
from dscore_chaos.settings import ProcessOptions
from dscore_chaos.targets import LeaderFinder, Member, TargetError, choose

_URL_PREFIX = "DSCORE_NODE_URL_"


def read_dev_env(path: Path) -> dict[str, str]:
    """`node-<id>` -> URL from the `DSCORE_NODE_URL_<ID>=...` lines of `make up`'s dev.env (ids lower-cased,
    as dev.sh upper-cases them)."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    urls = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name.startswith(_URL_PREFIX) and value:
            urls[f"node-{name.removeprefix(_URL_PREFIX).lower()}"] = value
    return urls


def process_state(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) from /proc, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


class ProcessBackend:
    """`process_kill` and `process_pause` (see the module docstring)."""

    kinds = frozenset({ChaosKind.PROCESS_KILL, ChaosKind.PROCESS_PAUSE})

    def __init__(self, options: ProcessOptions, *, rng: random.Random, finder: LeaderFinder) -> None:
        self.options = options
        self._rng = rng
        self._finder = finder

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def members(self) -> list[Member]:
        options = self.options
        run_dir = options.run_dir
        names: Sequence[str] = options.names or sorted(p.stem for p in run_dir.glob("node-*.pid"))
        urls = options.node_urls or read_dev_env(run_dir / "dev.env")
        return [
            Member(
                name,
                base_url=urls.get(name),
                node_id=name.removeprefix("node-") if name.startswith("node-") else None,
            )
            for name in names
        ]

    def process(self, name: str) -> tuple[int, int]:
        """(pid, start time) of the live process `name`, checked (see the module docstring)."""
        path = self.options.run_dir / f"{name}.pid"
        try:
            text = path.read_text().strip()
        except OSError as error:
            raise InjectionError(f"{name}: no pid file {path}: {error.strerror}") from None
        if not text.isdigit() or int(text) < 2:
            raise InjectionError(f"{name}: {path} holds no pid")
        pid = int(text)
        state = process_state(pid)
        if state is None or state[0] in ("Z", "X"):
            raise InjectionError(f"{name}: pid {pid} is not running")
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            raise InjectionError(f"{name}: pid {pid} is not running") from None
        if self.options.cmdline_marker not in cmdline:
            raise InjectionError(
                f"{name}: pid {pid} runs {cmdline.strip()[:80]!r}, not a process with "
                f"{self.options.cmdline_marker!r} in its command line (a stale pid file?)"
            )
        return pid, state[1]

    async def inject(self, spec: FaultSpec, fault_id: str, number: int) -> Hit:
        try:
            member, _ = await choose(self.members(), spec.target, finder=self._finder, rng=self._rng)
        except TargetError as error:
            raise InjectionError(str(error)) from None
        name = member.name
        pid, started = self.process(name)
        if spec.kind is ChaosKind.PROCESS_KILL:
            _signal(pid, signal.SIGKILL, name)
            return Hit(name, f"SIGKILL to {name} (pid {pid})")
        _signal(pid, signal.SIGSTOP, name)

        async def resume() -> str:
            state = process_state(pid)
            if state is None or state[1] != started:
                return f"{name} (pid {pid}) is gone; nothing to resume"
            _signal(pid, signal.SIGCONT, name)
            return f"SIGCONT to {name} (pid {pid})"

        return Hit(name, f"SIGSTOP to {name} (pid {pid})", end=resume)

    async def leader_node_id(self) -> str:
        leader = await self._finder.find(self.members())
        if leader is None:
            raise TargetError("no leader found among the local nodes")
        return leader.node_id or leader.member.node_id or leader.member.name


def _signal(pid: int, signum: signal.Signals, name: str) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        raise InjectionError(f"{name} (pid {pid}) exited before {signum.name}") from None
    except PermissionError:
        raise InjectionError(f"not allowed to send {signum.name} to {name} (pid {pid})") from None
