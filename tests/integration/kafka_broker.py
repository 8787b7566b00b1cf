"""A private Kafka broker process a test can freeze, stop and start (broker outage tests).

It runs the real broker (single-node KRaft, the recipe of /work/shared/reference/kafka/) from the jars in
`DSCORE_TEST_KAFKA_LIBS`, on free loopback ports, with its data in a temporary folder. Readiness is the
broker's own "Kafka Server started" log line, read from its output as it is printed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

LIBS_ENV = "DSCORE_TEST_KAFKA_LIBS"

_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
default.replication.factor=1
min.insync.replicas=1
num.partitions=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=2097152
"""

_LOG4J = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = STDOUT
logger.raftserver.name = kafka.server.KafkaRaftServer
logger.raftserver.level = INFO
"""

_JAVA_OPTS = [
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class BrokerProcess:
    """One broker; `start`, `stop` (SIGTERM, clean), `freeze` (SIGSTOP) and `thaw` (SIGCONT)."""

    def __init__(self, libs: Path, workdir: Path) -> None:
        self.libs = libs
        self.workdir = workdir
        self.port = _free_port()
        self.controller_port = _free_port()
        self.data = workdir / "data"
        self.properties = workdir / "server.properties"
        self.properties.write_text(
            _PROPERTIES.format(port=self.port, controller_port=self.controller_port, data=self.data)
        )
        self.log4j = workdir / "log4j2.properties"
        self.log4j.write_text(_LOG4J)
        self.log = workdir / "broker.log"
        self._process: subprocess.Popen[str] | None = None
        self._follower: threading.Thread | None = None
        self._started = threading.Event()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, *args: str) -> list[str]:
        return [
            "java",
            *_JAVA_OPTS,
            f"-Dlog4j2.configurationFile={self.log4j}",
            "-cp",
            f"{self.libs}/*",
            *args,
        ]

    def start(self, timeout_s: float = 90.0) -> None:
        assert self._process is None, "broker already running"
        if not (self.data / "meta.properties").exists():
            cluster_id = subprocess.run(
                self._java("kafka.tools.StorageTool", "random-uuid"),
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            subprocess.run(
                self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.properties)),
                check=True,
                capture_output=True,
            )
        self._started.clear()
        process = subprocess.Popen(
            self._java("kafka.Kafka", str(self.properties)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._process = process
        self._follower = threading.Thread(target=self._follow, args=(process,), daemon=True)
        self._follower.start()
        if not self._started.wait(timeout_s):
            self.stop()
            raise RuntimeError(f"Kafka broker did not start within {timeout_s} s; see {self.log}")

    def _follow(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        with process.stdout, self.log.open("a") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                if "Kafka Server started" in line:
                    self._started.set()

    def freeze(self) -> None:
        """SIGSTOP, and return once the JVM is stopped: `kill` returns when the signal is queued, its
        75 threads took 7-18 ms more to stop, and a thread still running answered a record sent after it
        (a test saw the record it sent into the freeze acknowledged). The kernel tells the parent when
        the last thread has stopped; WNOWAIT leaves that for `Popen`, which does not ask for stops."""
        assert self._process is not None
        pid = self._process.pid
        os.kill(pid, signal.SIGSTOP)
        os.waitid(os.P_PID, pid, os.WSTOPPED | os.WNOWAIT)

    def thaw(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)

    def stop(self, timeout_s: float = 60.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        os.kill(process.pid, signal.SIGCONT)  # a frozen broker cannot handle SIGTERM
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._follower is not None:
            self._follower.join()
            self._follower = None
