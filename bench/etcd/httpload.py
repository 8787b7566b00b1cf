"""The client side of the etcd comparison: one small HTTP/1.1 client and one closed-loop write workload,
used unchanged against both systems (only the request's shape differs: `WriteApi`).

Why not httpx or aiohttp: on two shared cores the load generator competes with the systems it measures,
and a full-featured client spends several hundred µs of CPU per request. This client writes a request
line and three headers on a kept-alive connection and reads the status, the headers and a
Content-Length (or chunked) body: a few tens of µs per request, the same for both sides.

Each client owns one connection. On a failure (connection refused or reset, a timeout, a status that
is not the API's success) it closes the connection and moves to the next endpoint of its list, as
etcd's clientv3 balancer moves to another endpoint: for etcd the list is every member, leader first;
for dscore it is the one gateway, which follows the leader itself.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: every request is bounded; past this the connection is dropped and the request counted as failed
REQUEST_TIMEOUT_S = 5.0
#: bytes of each written value (both systems get the same key and value bytes)
VALUE_BYTES = 100
#: keys per client (client i writes k<i>-0 .. k<i>-<KEYS_PER_CLIENT - 1> in turn)
KEYS_PER_CLIENT = 128
#: largest response head or body the client accepts (a bound, not an expected size)
MAX_RESPONSE_BYTES = 1 << 20
CLOCK_TICKS_S = os.sysconf("SC_CLK_TCK")


class HttpError(Exception):
    """The connection failed or the server's answer was not HTTP/1.1 this client can read."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"http://{self.host}:{self.port}"


class HttpConnection:
    """One kept-alive HTTP/1.1 connection (opened on first use, reopened after a failure)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._host_header = f"{endpoint.host}:{endpoint.port}".encode()

    async def request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.endpoint.host, self.endpoint.port)
        assert self._reader is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: ".encode()
            + self._host_header
            + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
        )
        self._writer.write(head + body)
        status, headers = await self._read_head(self._reader)
        payload = await self._read_body(self._reader, status, headers)
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, payload

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as error:
            raise HttpError("connection closed before a response") from error
        except asyncio.LimitOverrunError as error:
            raise HttpError("response head too large") from error
        lines = raw.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise HttpError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return int(parts[1]), headers

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, status: int, headers: dict[bytes, bytes]) -> bytes:
        if status in (204, 304) or 100 <= status < 200:
            return b""
        try:
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                chunks: list[bytes] = []
                total = 0
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")  # no trailers are sent by either server
                        return b"".join(chunks)
                    total += size
                    if total > MAX_RESPONSE_BYTES:
                        raise HttpError("response body too large")
                    chunks.append(await reader.readexactly(size))
                    await reader.readexactly(2)
            length = int(headers.get(b"content-length", b"0"))
            if length > MAX_RESPONSE_BYTES:
                raise HttpError("response body too large")
            return await reader.readexactly(length) if length else b""
        except (asyncio.IncompleteReadError, ValueError) as error:
            raise HttpError(f"bad response body: {error}") from error

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


@dataclass(frozen=True)
class WriteApi:
    """How one system takes a write over HTTP: the request for (key, value) and what success looks like."""

    name: str
    method: str
    path_of: Callable[[str], str]
    body_of: Callable[[str, str], bytes]
    success_status: int


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


#: etcd v3's HTTP/JSON gateway (grpc-gateway in every member): keys and values base64, 200 with a header
ETCD_PUT = WriteApi(
    name="etcd",
    method="POST",
    path_of=lambda key: "/v3/kv/put",
    body_of=lambda key, value: json.dumps({"key": _b64(key), "value": _b64(value)}).encode(),
    success_status=200,
)
#: dscore's gateway (services/gateway): PUT /v1/kv/{key} {"value": ...}, 204 once committed and applied
DSCORE_PUT = WriteApi(
    name="dscore",
    method="PUT",
    path_of=lambda key: f"/v1/kv/{key}",
    body_of=lambda key, value: json.dumps({"value": value}).encode(),
    success_status=204,
)


@dataclass
class WriteClient:
    """One client: writes over one connection, moving along `endpoints` (round) after each failure."""

    api: WriteApi
    endpoints: Sequence[Endpoint]
    index: int = 0
    timeout_s: float = REQUEST_TIMEOUT_S
    failures: int = 0
    last_error: str = ""
    _connection: HttpConnection | None = None

    async def put(self, key: str, value: str) -> bool:
        """One write; True if the system answered its success status. Never raises for the server's or
        the network's faults (they are counted and move the client to the next endpoint)."""
        if self._connection is None:
            self._connection = HttpConnection(self.endpoints[self.index % len(self.endpoints)])
        try:
            async with asyncio.timeout(self.timeout_s):
                status, body = await self._connection.request(
                    self.api.method, self.api.path_of(key), self.api.body_of(key, value)
                )
        except (OSError, HttpError, TimeoutError) as error:
            self._fail(f"{type(error).__name__}: {error}")
            return False
        if status != self.api.success_status:
            self._fail(f"HTTP {status}: {body[:200]!r}")
            return False
        return True

    def _fail(self, why: str) -> None:
        self.failures += 1
        self.last_error = why
        if self._connection is not None:
            self._connection.close()
        self._connection = None
        self.index += 1  # the next endpoint (a one-endpoint list stays where it is)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = None


def cpu_ticks(pids: Sequence[int]) -> int:
    """utime + stime of every process in `pids` (all its threads), in clock ticks, from /proc/<pid>/stat.
    A process that is gone counts 0: callers read the same pids before and after a window, with no kill
    in between."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                raw = stat.read()
        except FileNotFoundError:
            continue
        fields = raw[raw.rindex(b")") + 2 :].split()  # after "pid (comm) "; comm may contain spaces
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5): utime, stime
    return total


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def value_of(client: int) -> str:
    return (f"c{client}-" + "x" * VALUE_BYTES)[:VALUE_BYTES]


@dataclass
class LoadResult:
    system: str
    clients: int
    duration_s: float
    ops: int
    failures: int
    ops_s: float
    p50_ms: float | None
    p99_ms: float | None
    stack_cpu_us_per_op: float | None
    stack_cpu_cores: float
    client_cpu_us_per_op: float | None
    last_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "extra"} | self.extra


async def closed_loop(
    api: WriteApi,
    endpoints: Sequence[Endpoint],
    clients: int,
    *,
    warmup_s: float,
    duration_s: float,
    stack_pids: Callable[[], Mapping[str, Sequence[int]]],
    other_pids: Callable[[], Sequence[int]] = lambda: (),
) -> LoadResult:
    """`clients` clients writing back to back for warm-up + duration; counts the writes that completed
    inside the measured window, their latencies, and the CPU the stack's processes (`stack_pids()`: pids
    by role, read at both ends of the window; the total and each role's share) and this process spent
    in it; `other_pids()` (the other system, idle
    meanwhile) is reported as `other_cpu_cores`, the share of the machine it took."""
    loop = asyncio.get_running_loop()
    writers = [WriteClient(api, endpoints) for _ in range(clients)]
    window: list[float] = [0.0, 0.0]  # [start, end] on the loop's clock, set after the warm-up
    latencies: list[float] = []
    failures = 0

    async def run(number: int, writer: WriteClient) -> None:
        nonlocal failures
        value = value_of(number)
        sequence = 0
        while True:
            key = f"k{number}-{sequence % KEYS_PER_CLIENT}"
            sequence += 1
            sent = loop.time()
            ok = await writer.put(key, value)
            done = loop.time()
            if window[0] and sent >= window[0] and done <= window[1]:
                if ok:
                    latencies.append(done - sent)
                else:
                    failures += 1
            if window[1] and done > window[1]:
                return

    tasks = [asyncio.ensure_future(run(i, w)) for i, w in enumerate(writers)]
    try:
        await asyncio.sleep(warmup_s)  # the load's own warm-up: connections opened, sessions registered
        roles, others = {role: list(p) for role, p in stack_pids().items()}, list(other_pids())
        other_before = cpu_ticks(others)
        roles_before = {role: cpu_ticks(p) for role, p in roles.items()}
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        window[0] = loop.time()
        window[1] = window[0] + duration_s
        await asyncio.sleep(duration_s)
        cpu_after, wall_after = time.process_time(), time.perf_counter()
        roles_after = {role: cpu_ticks(p) for role, p in roles.items()}
        other_after = cpu_ticks(others)
        await asyncio.wait_for(asyncio.gather(*tasks), REQUEST_TIMEOUT_S + 5.0)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.close()
    elapsed = wall_after - wall_before
    ops = len(latencies)
    role_cpu_s = {role: (roles_after[role] - roles_before[role]) / CLOCK_TICKS_S for role in roles}
    stack_cpu_s = sum(role_cpu_s.values())
    latencies.sort()
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    return LoadResult(
        system=api.name,
        clients=clients,
        duration_s=elapsed,
        ops=ops,
        failures=failures,
        ops_s=ops / elapsed,
        p50_ms=None if p50 is None else p50 * 1e3,
        p99_ms=None if p99 is None else p99 * 1e3,
        stack_cpu_us_per_op=stack_cpu_s / ops * 1e6 if ops else None,
        stack_cpu_cores=stack_cpu_s / elapsed,
        client_cpu_us_per_op=(cpu_after - cpu_before) / ops * 1e6 if ops else None,
        last_error=next((w.last_error for w in writers if w.last_error), ""),
        extra={
            "other_cpu_cores": (other_after - other_before) / CLOCK_TICKS_S / elapsed,
            "cores_by_role": {role: cpu_s / elapsed for role, cpu_s in role_cpu_s.items()},
        },
    )


async def first_write_after(
    api: WriteApi,
    endpoints: Sequence[Endpoint],
    fault: Callable[[], Any],
    *,
    request_timeout_s: float,
    before_ok: int = 20,
    timeout_s: float = 60.0,
) -> tuple[float, int]:
    """One client writes back to back; after `before_ok` successes `fault()` runs (the kill), and the
    result is the seconds from just before the fault to the completion of the first successful write
    *sent* after it (a write in flight at the kill does not count, even if it succeeds), with the number
    of failed attempts in between. Each attempt is bounded by `request_timeout_s` (then the client moves
    to its next endpoint and tries again)."""
    loop = asyncio.get_running_loop()
    writer = WriteClient(api, endpoints, timeout_s=request_timeout_s)
    value = value_of(0)
    successes = 0
    sequence = 0
    fault_at: float | None = None
    failures_at_fault = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                key = f"failover-{sequence % KEYS_PER_CLIENT}"
                sequence += 1
                sent = loop.time()
                ok = await writer.put(key, value)
                done = loop.time()
                if ok and fault_at is not None and sent >= fault_at:
                    return done - fault_at, writer.failures - failures_at_fault
                if ok:
                    successes += 1
                if fault_at is None and successes >= before_ok:
                    failures_at_fault = writer.failures
                    fault_at = loop.time()
                    result = fault()
                    if asyncio.iscoroutine(result):
                        await result
    except TimeoutError:
        when = "after the fault" if fault_at is not None else f"before the fault ({successes} successes)"
        raise RuntimeError(
            f"{api.name}: no successful write {when} within {timeout_s} s; last error: {writer.last_error}"
        ) from None
    finally:
        writer.close()
