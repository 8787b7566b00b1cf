"""Running dscore's images under podman, for the tests: the flags this machine needs, containers named by
the test, their state, and waits on conditions (an HTTP answer, an exit), never on fixed sleeps."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES_SCRIPT = REPO / "scripts" / "images.sh"
#: every container runs as this user (the images' USER; also passed explicitly)
SERVICE_USER = "10001:10001"
#: how often a wait re-checks its condition
POLL_INTERVAL_S = 0.05
#: one podman command (podman itself, not the container's life)
PODMAN_TIMEOUT_S = 120.0


def run_flags() -> list[str]:
    """`scripts/images.sh run-flags`: runc and explicit ulimits (see the script)."""
    done = subprocess.run(
        [str(IMAGES_SCRIPT), "run-flags"], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.split()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET; status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


@dataclass
class Podman:
    """Starts containers and removes, at the end, the ones it started."""

    flags: list[str] = field(default_factory=run_flags)
    started: list[str] = field(default_factory=list)

    def podman(self, *args: str, check: bool = True, timeout_s: float = PODMAN_TIMEOUT_S) -> str:
        done = subprocess.run(
            ["podman", *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            pytest.fail(f"podman {' '.join(args)} failed (exit {done.returncode}):\n{done.stderr}", False)
        return done.stdout

    def run(
        self,
        image: str,
        name: str,
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        entrypoint: str | None = None,
        detach: bool = True,
        network: str = "host",
        read_only: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """`podman run` as a deployment would: non-root, read-only root with a tmpfs on /tmp."""
        command = ["podman", "run", *self.flags, "--name", name, "--user", SERVICE_USER, "--network", network]
        if read_only:
            command += ["--read-only", "--tmpfs", "/tmp"]
        for key, value in (env or {}).items():
            command += ["-e", f"{key}={value}"]
        if entrypoint is not None:
            command += ["--entrypoint", entrypoint]
        command += ["-d"] if detach else []
        command += [image, *args]
        self.started.append(name)
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=PODMAN_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def start(self, image: str, name: str, *, env: Mapping[str, str], args: Sequence[str] = ()) -> None:
        """A container in the background."""
        done = self.run(image, name, env=env, args=args)
        if done.returncode != 0:
            pytest.fail(f"podman run {name} failed (exit {done.returncode}):\n{done.stderr}", False)

    def inspect(self, name: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(self.podman("inspect", "--type", "container", name))
        return found[0]

    def image_inspect(self, ref: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(self.podman("image", "inspect", ref))
        return found[0]

    def running(self, name: str) -> bool:
        return bool(self.inspect(name)["State"]["Running"])

    def logs(self, name: str) -> str:
        done = subprocess.run(
            ["podman", "logs", name], capture_output=True, text=True, timeout=PODMAN_TIMEOUT_S, check=False
        )
        return done.stdout + done.stderr

    def stop(self, name: str, timeout_s: int = 30) -> int:
        """`podman stop`: SIGTERM (the image's STOPSIGNAL) to PID 1, SIGKILL after `timeout_s`; the exit
        status (137 means the SIGKILL was needed)."""
        self.podman("stop", "-t", str(timeout_s), name, timeout_s=timeout_s + PODMAN_TIMEOUT_S)
        return self.exit_code(name)

    def kill(self, name: str) -> None:
        """SIGKILL to the whole container (PID 1 and the service)."""
        self.podman("kill", "--signal", "KILL", name)
        self.podman("wait", name)

    def exit_code(self, name: str) -> int:
        state = self.inspect(name)["State"]
        assert not state["Running"], f"{name} still runs"
        return int(state["ExitCode"])

    def processes(self, name: str) -> list[tuple[int, str]]:
        """(pid, command) of the container's processes, pids as the container sees them."""
        out = self.podman("top", name, "pid", "args")
        rows = []
        for line in out.splitlines()[1:]:
            pid, _, args = line.strip().partition(" ")
            rows.append((int(pid), args.strip()))
        return rows

    def wait_http(self, name: str, url: str, *, status: int = 200, timeout_s: float = 60.0) -> str:
        """Until GET `url` answers `status`; fails at once (with the logs) if the container exits."""
        deadline = time.monotonic() + timeout_s
        last = (0, "")
        while time.monotonic() < deadline:
            last = http_get(url)
            if last[0] == status:
                return last[1]
            if not self.running(name):
                pytest.fail(
                    f"{name} exited before {url} answered {status}:\n{self.logs(name)[-4000:]}", False
                )
            time.sleep(POLL_INTERVAL_S)
        pytest.fail(
            f"{url} did not answer {status} within {timeout_s} s (last: {last}):\n{self.logs(name)[-4000:]}",
            False,
        )

    def remove_all(self) -> None:
        for name in self.started:
            subprocess.run(
                ["podman", "rm", "--force", "--time", "5", name],
                capture_output=True,
                timeout=PODMAN_TIMEOUT_S,
                check=False,
            )
        self.started.clear()
