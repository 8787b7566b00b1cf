"""Shared pieces of the chaos service's tests: a virtual clock, real child processes with pid files, a
real local HTTP server standing in for nodes' `/debug/state` and Grafana, and a service built from them."""

from __future__ import annotations

import asyncio
import heapq
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from dscore.transport.faults import MemoryControlChannel
from dscore_chaos.backends.base import Backend, LeaderSource
from dscore_chaos.backends.processes import ProcessBackend
from dscore_chaos.backends.transport import ChannelPublisher, TransportBackend
from dscore_chaos.metrics import ServiceMetrics
from dscore_chaos.service import ChaosService
from dscore_chaos.settings import ProcessOptions
from dscore_chaos.targets import HttpLeaderFinder

T0 = 1_700_000_000.0
KEY = b"k" * 32
#: the fault API's bearer token in these tests (`DSCORE_CHAOS__API_TOKEN`: at least 32 characters)
TOKEN = "chaos-test-token-" + "t" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: every child process carries it in its command line (the backend's cmdline_marker)
MARKER = "dscore-chaos-test-child"
WAIT_S = 10.0


class VirtualClock:
    """Unix seconds that move only when the test says; `advance` wakes each sleeper in time order and
    lets the woken tasks run before it moves on."""

    def __init__(self, start: float = T0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def now(self) -> float:
        return self._now

    async def sleep_until(self, at: float) -> None:
        if at <= self._now:
            return
        future = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (at, self._seq, future))
        await future

    async def advance(self, seconds: float) -> None:
        target = self._now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            at, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, at)
            if not future.done():
                future.set_result(None)
                await settle()
        self._now = target
        await settle()

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())


async def settle() -> None:
    """Let every ready task run until it waits again (nothing here waits on real I/O)."""
    for _ in range(50):
        await asyncio.sleep(0)


# -- child processes --------------------------------------------------------------------------------


@dataclass
class Children:
    """Child processes that sleep, each with a pid file `<run_dir>/<name>.pid`; all killed at the end."""

    run_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *, marker: str = MARKER) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)", marker],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs[name] = proc
        wait_for_cmdline(proc.pid, marker)
        (self.run_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
        return proc

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait(timeout=WAIT_S)


def state_of(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def wait_for_cmdline(pid: int, marker: str) -> None:
    """Wait (bounded) until /proc shows the child's command line. `Popen` returns once the exec is past
    its point of no return, but the kernel sets the new image's arguments a little later; until then
    /proc/<pid>/cmdline reads empty, and the backend rightly refuses a process without its marker."""
    deadline = time.monotonic() + WAIT_S
    path = Path(f"/proc/{pid}/cmdline")
    while marker.encode() not in path.read_bytes():
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} shows no {marker!r} in its command line within {WAIT_S} s")
        time.sleep(0.001)


def wait_state(pid: int, wanted: Callable[[str], bool], what: str) -> str:
    """Wait (bounded) until the process's /proc state satisfies `wanted`: a signal is delivered
    asynchronously, so the state changes shortly after `kill` returns."""
    deadline = time.monotonic() + WAIT_S
    while True:
        state = state_of(pid)
        if wanted(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} not {what} within {WAIT_S} s (state {state})")
        time.sleep(0.002)


def stopped(state: str) -> bool:
    return state == "T"


def running(state: str) -> bool:
    return state in ("S", "R")


# -- a real HTTP server for node states and Grafana --------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any


class JsonServer:
    """A threaded HTTP server on a free loopback port: GET answers from `routes` (path -> (status, body)),
    POST bodies are recorded and answered with `post_status`."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, Any]] = {}
        self.post_status = 200
        self.recorded: list[Recorded] = []
        self.posted = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = server.routes.get(self.path, (404, {"error": "not_found"}))
                self._answer(status, body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                server.recorded.append(Recorded("POST", self.path, dict(self.headers), body))
                self._answer(server.post_status, {"id": len(server.recorded), "message": "Annotation added"})
                server.posted.set()

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=WAIT_S)


def node_state(node_id: str, role: str, term: int) -> dict[str, Any]:
    """What the node service's `/debug/state` says (the fields the chaos service reads)."""
    return {"node_id": node_id, "role": role, "term": term, "leader_id": None, "state": "running"}


# -- a service --------------------------------------------------------------------------------------


class FixedLeader:
    """A `LeaderSource` that names a node (the transport backend's leader when no platform is in the
    test)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    async def leader_node_id(self) -> str:
        return self.node_id


def make_service(
    clock: VirtualClock,
    *,
    run_dir: Path | None = None,
    channel: MemoryControlChannel | None = None,
    nodes: tuple[str, ...] = ("n1", "n2", "n3"),
    leader: LeaderSource | None = None,
    node_urls: Mapping[str, str] | None = None,
    extra: tuple[Backend, ...] = (),
    seed: int = 0,
    **limits: Any,
) -> ChaosService:
    backends: list[Backend] = list(extra)
    if run_dir is not None:
        backends.append(
            ProcessBackend(
                ProcessOptions(
                    enabled=True, run_dir=run_dir, cmdline_marker=MARKER, node_urls=dict(node_urls or {})
                ),
                rng=random.Random(f"{seed}:processes"),
                finder=HttpLeaderFinder(timeout_s=2.0),
            )
        )
    if channel is not None:
        backends.append(
            TransportBackend(
                ChannelPublisher(channel, key=KEY),
                nodes=nodes,
                rng=random.Random(f"{seed}:transport"),
                clock=clock,
                leader=leader,
            )
        )
    registry = CollectorRegistry()
    holder: list[ChaosService] = []
    metrics = ServiceMetrics(registry, active=lambda: holder[0].active_count() if holder else 0)
    service = ChaosService(backends, clock=clock, metrics=metrics, **limits)
    holder.append(service)
    return service


def metric(service: ChaosService, name: str, **labels: str) -> float:
    value = service.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value
