"""The gateway as a process: `python -m dscore_gateway --embedded 3` serves HTTP on a real socket
(uvicorn), becomes ready, and on SIGTERM drains, closes and exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Lines:
    """The child's log lines, read on a thread; `wait_for(text)` blocks until one contains it."""

    def __init__(self, stream: object) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join(timeout=30)

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<eof>")
            self._changed.notify_all()

    def wait_for(self, text: str, timeout_s: float = 60) -> str:
        with self._changed:
            found = self._changed.wait_for(
                lambda: any(text in line or line == "<eof>" for line in self.lines), timeout_s
            )
            assert found, f"no log line with {text!r} within {timeout_s} s:\n{''.join(self.lines)}"
            line = next(line for line in self.lines if text in line or line == "<eof>")
            assert line != "<eof>", f"the gateway exited before logging {text!r}:\n{''.join(self.lines)}"
            return line


@pytest.fixture
def gateway_process() -> Iterator[tuple[subprocess.Popen[str], _Lines, str]]:
    port = _free_port()
    env = {
        **os.environ,
        "DSCORE_GATEWAY__HOST": "127.0.0.1",
        "DSCORE_GATEWAY__PORT": str(port),
        "DSCORE_GATEWAY__PROBE_INTERVAL_S": "0.05",
        "DSCORE_GATEWAY__ENDPOINT_ID": "gw-process-test",
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "dscore_gateway", "--embedded", "3"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = _Lines(child.stdout)
    try:
        yield child, lines, f"http://127.0.0.1:{port}"
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
        lines.join()
        assert child.stdout is not None
        child.stdout.close()


def test_serves_http_and_exits_cleanly_on_sigterm(
    gateway_process: tuple[subprocess.Popen[str], _Lines, str],
) -> None:
    child, lines, base = gateway_process
    lines.wait_for("Uvicorn running on")
    lines.wait_for("leader is n")  # the probe found the leader: ready
    with httpx.Client(base_url=base, timeout=30) as http:
        assert http.get("/readyz").status_code == 200
        assert http.put("/v1/kv/k", json={"value": "v"}).status_code == 204
        assert http.get("/v1/kv/k").json() == {"key": "k", "value": "v"}
        assert "dscore_gateway_requests_total" in http.get("/metrics").text
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 0, "".join(lines.lines)
    lines.wait_for("stopped (drained)")


def test_a_bad_setting_stops_it_at_start_naming_the_variable() -> None:
    env = {**os.environ, "DSCORE_NODES": "n1,n2", "DSCORE_AUTH_KEY": "x" * 40, "DSCORE_GATEWAY__PORT": "http"}
    done = subprocess.run(
        [sys.executable, "-m", "dscore_gateway"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 2
    assert "DSCORE_GATEWAY__PORT" in done.stderr and "valid integer" in done.stderr
    assert "x" * 40 not in done.stderr + done.stdout
