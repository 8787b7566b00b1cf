"""Debian's promtool and prometheus for the deploy tests: found (or installed) once, a server started on a
free loopback port with an empty TSDB of its own, and stopped by the fixture that started it."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ENSURE_TOOLS = REPO / "deploy" / "prometheus" / "ensure-tools.sh"
#: what prometheus logs once its HTTP API answers queries
READY_LINE = "Server is ready to receive web requests."
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class PromTools:
    promtool: str
    prometheus: str


def find_tools() -> PromTools:
    result = subprocess.run(
        ["bash", str(ENSURE_TOOLS)], capture_output=True, text=True, timeout=900, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{ENSURE_TOOLS} failed ({result.returncode}):\n{result.stderr}")
    promtool, prometheus = result.stdout.split()
    return PromTools(promtool, prometheus)


def promtool(tools: PromTools, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tools.promtool, *args], input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class QueryError(Exception):
    pass


#: a Prometheus with no scrape targets: it parses and evaluates queries against an empty TSDB
EMPTY_CONFIG = "global:\n  scrape_interval: 15s\nscrape_configs: []\n"


class PrometheusServer:
    """A real Prometheus: by default with no scrape targets (`EMPTY_CONFIG`); `config` is another
    prometheus.yml (scrape targets, rule files), written to the server's own work folder."""

    def __init__(self, tools: PromTools, workdir: Path, config: str = EMPTY_CONFIG) -> None:
        self._tools = tools
        self._workdir = workdir
        self._config = config
        self._process: subprocess.Popen[str] | None = None
        self._log: list[str] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self.url = ""

    def start(self) -> None:
        config = self._workdir / "prometheus.yml"
        config.write_text(self._config)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._process = subprocess.Popen(
            [
                self._tools.prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={self._workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        # Wait for the event (the ready line), or for the process to die: the reader sets `_ready` on both.
        if not self._ready.wait(START_TIMEOUT_S) or self._process.poll() is not None:
            self.stop()
            log = "".join(self._log[-40:])
            raise RuntimeError(f"prometheus did not become ready on {self.url}:\n{log}")

    def _read_log(self) -> None:
        process = self._process
        assert process is not None and process.stderr is not None
        for line in process.stderr:
            self._log.append(line)
            if READY_LINE in line:
                self._ready.set()
        self._ready.set()  # the process ended: let start() see it

    def query(self, expr: str) -> list[dict[str, object]]:
        """Evaluate `expr` now; raise QueryError with Prometheus' message if it does not parse."""
        data = self.api("query", query=expr)
        result: list[dict[str, object]] = data["result"] if data["resultType"] == "vector" else []
        return result

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
        """The matrix `expr` gives over [start, end] (Unix seconds) every `step_s`, as Grafana asks a panel's."""
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step_s:g}")
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, label: str, match: str, start: float, end: float) -> list[str]:
        """The values of `label` on the series `match` selects (Grafana's `label_values(match, label)`)."""
        data = self.api(
            f"label/{label}/values", **{"match[]": match, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        )
        return sorted(str(v) for v in data)

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>: its `data`, or QueryError with Prometheus' message."""
        url = f"{self.url}/api/v1/{path}?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
            raise QueryError(f"{body.get('errorType')}: {body.get('error')}") from None
        if body.get("status") != "success":
            raise QueryError(str(body))
        return body["data"]

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT_S)
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT_S)  # it ends at the log's end of file
        if process.stderr is not None:
            process.stderr.close()
