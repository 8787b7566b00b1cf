"""Integration tests run against a real Kafka broker and real Redis servers, started here by `scripts/`.

The fixture contract (other tests code against these names):

- `kafka_bootstrap` (session) -> "127.0.0.1:PORT": `$DSCORE_TEST_KAFKA_BOOTSTRAP` if set, else the
  broker of `scripts/kafka.sh ensure` (started if needed and left running for the next session: a warm
  run skips the JVM's start; `make down` stops it).
- `redis_url` (session) -> "redis://127.0.0.1:PORT/0": `$DSCORE_TEST_REDIS_URL` if set, else a Redis
  server started for this session (`appendfsync always`), stopped at its end.
- `redis_server_factory` (session): `redis_server_factory(*redis_args, name=None) -> RedisServer`
  starts one more server on a free port with its own data folder (per-node Redis, kill/restart tests).
  A `RedisServer` has `url`, `port`, `pid`, `data_dir`, `kill()` (SIGKILL, returns once it is gone),
  `restart()` (start again on the same port and data) and `stop()`. All are stopped at session end.
- `namespace` (function) -> a string unique to the test and the run (letters, digits and '-', at most
  55 characters: it may be a cluster id, which names Kafka topics): use it in topic names and key
  prefixes, so reruns and parallel sessions never see each other's data.
- `kafka_broker` (module) -> a broker process of the test module's own, which its tests may freeze,
  stop and start (outage tests); its jars come from `$DSCORE_TEST_KAFKA_LIBS`, else from
  `scripts/kafka.sh fetch` (the cached jars of the dev broker).

Every test under tests/integration/ is marked `integration`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kafka_broker import LIBS_ENV, BrokerProcess

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
HERE = Path(__file__).resolve().parent
#: where this session's own Redis servers live; one folder per session, removed at its end
TEST_RUN_ROOT = REPO / ".run" / "tests"

_kafka_note: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _kafka_note:
        terminalreporter.write_line(line)


def _script(*args: str, env: dict[str, str] | None = None, timeout_s: float = 120) -> str:
    """Run a script; return the last line of its stdout. A failure fails the test with its stderr."""
    try:
        done = subprocess.run(
            [str(SCRIPTS / args[0]), *args[1:]],
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scripts/{' '.join(args)} did not finish within {timeout_s}s: {exc.stderr!r}", False)
    if done.returncode != 0:
        pytest.fail(f"scripts/{' '.join(args)} failed (exit {done.returncode}):\n{done.stderr}", False)
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (pid 1 may never reap what we killed)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


# -- Kafka --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    configured = os.environ.get("DSCORE_TEST_KAFKA_BOOTSTRAP")
    if configured:
        return configured
    bootstrap = _script("kafka.sh", "ensure", timeout_s=900)
    _kafka_note.append(
        f"The Kafka broker of scripts/kafka.sh keeps running at {bootstrap} for the next run "
        "(`make down` or `scripts/kafka.sh stop` stops it)."
    )
    return bootstrap


# -- Redis --------------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """A Redis server this session started: its own port, data folder and log."""

    name: str
    port: int
    run_dir: Path
    redis_args: tuple[str, ...]
    pid: int = 0
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def data_dir(self) -> Path:
        return self.run_dir / self.name

    @property
    def log_file(self) -> Path:
        return self.run_dir / "logs" / f"{self.name}.log"

    def start(self) -> None:
        args = ("--", *self.redis_args) if self.redis_args else ()
        _script("redis.sh", "start", self.name, str(self.port), *args, env=self._env())
        self.pid = int((self.run_dir / f"{self.name}.pid").read_text())
        self._stopped = False

    def kill(self) -> None:
        """kill -9: no shutdown, no final fsync; returns once the process is gone."""
        if self.pid and _alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.pid and _alive(self.pid):
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} (pid {self.pid}) survived SIGKILL for 10 s", False)
            time.sleep(0.01)

    def restart(self) -> None:
        """Start again on the same port and data folder (after `kill()`; a running server is stopped
        first)."""
        if self.pid and _alive(self.pid):
            self.stop()
        self.start()

    def stop(self) -> None:
        _script("redis.sh", "stop", self.name, env=self._env())
        self._stopped = True

    def _env(self) -> dict[str, str]:
        return {"DSCORE_RUN_DIR": str(self.run_dir)}


def _sweep_abandoned_sessions() -> None:
    """Stop the Redis servers of earlier sessions that died without cleaning up (their pytest is gone)."""
    if not TEST_RUN_ROOT.is_dir():
        return
    for session_dir in TEST_RUN_ROOT.iterdir():
        if session_dir.name.startswith("."):
            continue
        owner = session_dir / "owner.pid"
        try:
            owner_pid = int(owner.read_text())
        except (OSError, ValueError):
            owner_pid = 0
        if owner_pid and _alive(owner_pid):
            continue
        for pid_file in session_dir.glob("*.pid"):
            if pid_file.name != "owner.pid":
                subprocess.run(
                    [str(SCRIPTS / "redis.sh"), "stop", pid_file.stem],
                    env={**os.environ, "DSCORE_RUN_DIR": str(session_dir)},
                    capture_output=True,
                    check=False,
                    stdin=subprocess.DEVNULL,
                )
        shutil.rmtree(session_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    _sweep_abandoned_sessions()
    # Made under a hidden name, then renamed: a concurrent sweep never sees a folder without its owner.
    session = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    new_dir, run_dir = TEST_RUN_ROOT / f".new-{session}", TEST_RUN_ROOT / session
    new_dir.mkdir(parents=True)
    (new_dir / "owner.pid").write_text(str(os.getpid()))
    new_dir.rename(run_dir)
    servers: list[RedisServer] = []

    def start(*redis_args: str, name: str | None = None) -> RedisServer:
        name = name or f"redis-{len(servers) + 1}"
        for attempt in range(5):
            server = RedisServer(name, _free_port(), run_dir, tuple(redis_args))
            try:
                server.start()
            except pytest.fail.Exception as exc:
                if "in use" not in str(exc) or attempt == 4:
                    raise
                continue  # another process took the free port first: try another
            servers.append(server)
            return server
        raise AssertionError("unreachable")

    yield start
    # All at once: each stop waits for its server to fsync and exit.
    stopping = [
        subprocess.Popen(
            [str(SCRIPTS / "redis.sh"), "stop", server.name],
            env={**os.environ, **server._env()},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for server in servers
    ]
    for process in stopping:
        process.wait(timeout=60)
    shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(redis_server_factory: Callable[..., RedisServer]) -> str:
    configured = os.environ.get("DSCORE_TEST_REDIS_URL")
    if configured:
        return configured
    return redis_server_factory(name="redis-shared").url


# -- per test -----------------------------------------------------------------------------------------


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    test = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:40].strip("-")
    return f"t-{uuid.uuid4().hex[:12]}-{test}"


@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker of this test module's own, which its tests may freeze, stop and start (outage tests)."""
    libs = os.environ.get(LIBS_ENV, "").strip()
    if not libs:
        _script("kafka.sh", "fetch")
        found = sorted(p.parent for p in (REPO / ".cache" / "kafka").glob("*/kafka_2.13-*.jar"))
        if not found:
            pytest.fail("scripts/kafka.sh fetch left no jars under .cache/kafka/", pytrace=False)
        libs = str(found[-1])
    broker = BrokerProcess(Path(libs), tmp_path_factory.mktemp("kafka-broker"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
