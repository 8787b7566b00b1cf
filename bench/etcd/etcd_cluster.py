"""Three etcd members on loopback, from Debian's `etcd-server` package, at etcd's own defaults.

Each member gets its own client and peer port (free ports picked on 127.0.0.1) and its own data folder
under the caller's temporary folder; nothing else is set, so the heartbeat (100 ms), the election
timeout (1000 ms), the snapshot count, the backend and the WAL's fsync are etcd's defaults. Members are
killed with SIGKILL (`kill`) and started again on the same data folder (`restart`: etcd ignores the
`--initial-cluster*` flags once its data folder holds a member).

The leader is found through etcd's own API: `POST /v3/maintenance/status` on each member answers its
member id and the leader's id. Readiness is `GET /health` = `{"health":"true"}` on every member (etcd says
so once the member has a leader and its applied index caught up).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from httpload import Endpoint, HttpConnection, HttpError

#: Debian installs the server as /usr/bin/etcd (package etcd-server)
ETCD_PACKAGE = "etcd-server"
START_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.05


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def etcd_binary() -> str:
    """`etcd` on PATH; installed with apt-get (package etcd-server) when missing and we may."""
    found = shutil.which("etcd")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", ETCD_PACKAGE], check=True, timeout=900,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )  # fmt: skip
        found = shutil.which("etcd")
        if found:
            return found
    raise RuntimeError(f"etcd is not installed: 'sudo apt-get install {ETCD_PACKAGE}' (Debian) installs it")


def etcd_version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    member_id: str = ""

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.client_port)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None


@dataclass
class EtcdCluster:
    """`size` members under `base_dir` (see the module docstring)."""

    base_dir: Path
    size: int = 3
    binary: str = field(default_factory=etcd_binary)
    members: list[Member] = field(default_factory=list)

    def __post_init__(self) -> None:
        token = f"bench-{secrets.token_hex(4)}"
        for i in range(self.size):
            name = f"etcd{i + 1}"
            self.members.append(
                Member(name, free_port(), free_port(), self.base_dir / name, self.base_dir / f"{name}.log")
            )
        self._initial_cluster = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        self._token = token

    def _command(self, member: Member) -> list[str]:
        client = f"http://127.0.0.1:{member.client_port}"
        peer = f"http://127.0.0.1:{member.peer_port}"
        # setpriv (util-linux) sets PR_SET_PDEATHSIG and execs etcd: a member dies with the benchmark's
        # process however that ends (no preexec_fn, which is unsafe with threads)
        die_with_parent = [setpriv, "--pdeathsig", "KILL"] if (setpriv := shutil.which("setpriv")) else []
        return [
            *die_with_parent,
            self.binary,
            f"--name={member.name}",
            f"--data-dir={member.data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self._initial_cluster}",
            f"--initial-cluster-token={self._token}",
            "--initial-cluster-state=new",
            "--logger=zap",  # 3.4's default (capnslog) is deprecated and prints a warning saying so
            "--log-outputs=stderr",
        ]

    def start_member(self, member: Member) -> None:
        if member.pid is not None:
            raise RuntimeError(f"{member.name} already runs (pid {member.pid})")
        with member.log_path.open("ab") as log:
            member.process = subprocess.Popen(
                self._command(member),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the benchmark, which stops the members itself
            )

    async def start(self) -> None:
        for member in self.members:
            self.start_member(member)
        await self.wait_healthy()
        for member in self.members:
            member.member_id = (await self.status(member))["header"]["member_id"]

    def pids(self) -> list[int]:
        return [m.pid for m in self.members if m.pid is not None]

    def pids_by_role(self) -> dict[str, list[int]]:
        return {"members": self.pids()}

    def kill(self, member: Member) -> None:
        """kill -9."""
        if member.process is not None and member.process.poll() is None:
            member.process.send_signal(signal.SIGKILL)

    async def restart(self, member: Member) -> None:
        if member.process is not None:
            member.process.kill()
            await asyncio.to_thread(member.process.wait)
        self.start_member(member)
        await self.wait_healthy()

    async def stop(self) -> None:
        for member in self.members:
            if member.process is not None and member.process.poll() is None:
                member.process.send_signal(signal.SIGTERM)
        for member in self.members:
            if member.process is None:
                continue
            try:
                await asyncio.wait_for(asyncio.to_thread(member.process.wait), 15.0)
            except TimeoutError:
                member.process.kill()
                await asyncio.to_thread(member.process.wait)

    # -- etcd's API -------------------------------------------------------------------------------------

    async def _call(self, member: Member, method: str, path: str, body: bytes = b"") -> tuple[int, Any]:
        connection = HttpConnection(member.endpoint)
        try:
            async with asyncio.timeout(2.0):
                status, payload = await connection.request(method, path, body)
            return status, json.loads(payload or b"null")
        finally:
            connection.close()

    async def status(self, member: Member) -> dict[str, Any]:
        status, body = await self._call(member, "POST", "/v3/maintenance/status", b"{}")
        if status != 200:
            raise HttpError(f"{member.name}: status answered {status}: {body}")
        result: dict[str, Any] = body
        return result

    async def _healthy(self, member: Member) -> bool:
        if member.pid is None:
            return False
        try:
            status, body = await self._call(member, "GET", "/health")
        except (OSError, HttpError, TimeoutError, ValueError):
            return False
        return status == 200 and isinstance(body, dict) and body.get("health") == "true"

    async def wait_healthy(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until every member answers /health with true (each has a leader and caught up)."""
        try:
            async with asyncio.timeout(timeout_s):
                while not all(await asyncio.gather(*(self._healthy(m) for m in self.members))):
                    for member in self.members:
                        if member.process is not None and member.process.poll() is not None:
                            raise RuntimeError(
                                f"{member.name} exited with {member.process.returncode}; "
                                f"log {member.log_path}:\n{_tail(member.log_path)}"
                            )
                    await asyncio.sleep(POLL_INTERVAL_S)
        except TimeoutError:
            tails = "\n".join(f"{m.name}:\n{_tail(m.log_path)}" for m in self.members)
            raise RuntimeError(f"etcd not healthy within {timeout_s} s\n{tails}") from None

    async def leader(self) -> Member:
        """The member every running member names as leader (asked through /v3/maintenance/status)."""
        async with asyncio.timeout(START_TIMEOUT_S):
            while True:
                named: set[str] = set()
                for member in self.members:
                    if member.pid is None:
                        continue
                    try:
                        named.add((await self.status(member))["leader"])
                    except (OSError, HttpError, TimeoutError, ValueError, KeyError):
                        named.add("?")
                if len(named) == 1 and (leader_id := named.pop()) not in ("?", "0"):
                    for member in self.members:
                        if member.member_id == leader_id:
                            return member
                await asyncio.sleep(POLL_INTERVAL_S)

    async def term(self) -> int:
        """The highest Raft term any running member reports (it grows by one or more per election)."""
        terms = [0]
        for member in self.members:
            if member.pid is None:
                continue
            try:
                terms.append(int((await self.status(member))["header"]["raft_term"]))
            except (OSError, HttpError, TimeoutError, ValueError, KeyError):
                continue
        return max(terms)

    def endpoints_leader_first(self, leader: Member) -> list[Endpoint]:
        others = [m for m in self.members if m is not leader]
        return [leader.endpoint, *(m.endpoint for m in others)]


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
