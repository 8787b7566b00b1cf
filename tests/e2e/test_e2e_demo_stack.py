"""`dscore demo --stack processes`, short: it starts Redis per node, three `dscore-node` processes and a
gateway (Kafka too, unless one runs: the test session's does), runs the embedded demo's scenario with
clients writing through the gateway (kill -9 of the leader's process, restart, a two-way partition of the
leader into a minority on the control topic, heal), prints the same report as the embedded demo, writes
the same HTML report, and stops everything it started."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_the_demo_on_processes_reports_like_the_embedded_one_and_stops_everything(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    html = tmp_path / "report.html"
    history = tmp_path / "history.edn"
    dscore = Path(sys.executable).parent / "dscore"
    done = subprocess.run(
        [
            str(dscore),
            "demo",
            "--stack",
            "processes",
            "--nodes",
            "3",
            "--duration-s",
            "10",
            "--clients",
            "4",
            "--seed",
            "3",
            "--html",
            str(html),
            "--history",
            str(history),
        ],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("DSCORE_")},
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]
    # the embedded demo's report, line for line in shape (dscore.demo.format_report)
    assert "dscore demo report (processes: Kafka, Redis, dscore-node, gateway): 3-node Raft, seed 3" in out
    for heading in (
        "faults:",
        "operations: ",
        "throughput: ",
        "µs of CPU per successful op",
        "latency of successful ops",
        "availability (uptime / total time): ",
        "failover (fault removing the leader",
        "replicas converged: yes",
        ": LINEARIZABLE",
    ):
        assert heading in out, heading
    assert re.search(r"kill -9 leader n\d \(process\): \d+ ms \(new leader n\d\)", out), out
    assert re.search(r"partition \{n\d\} \| \{n\d,n\d\} \(leader n\d in the minority\): \d+ ms", out), out
    ok = int(re.search(r"operations: (\d+) ok", out).group(1))  # type: ignore[union-attr]
    assert ok > 100, out
    # the same HTML report: drawn from ReportData, with who led when from the processes' roles
    page = html.read_text(encoding="utf-8")
    assert "<svg" in page and "processes" in page and "LINEARIZABLE" in page.upper()
    assert history.read_text(encoding="utf-8").count(":invoke") > 100
    # everything it started is stopped: the node, gateway and Redis processes of its run folder
    run_dir = Path(re.search(r"node logs kept in (\S+)/logs", out).group(1))  # type: ignore[union-attr]
    assert (run_dir / "logs" / "n1.log").exists()
    # every process wrote its pid to <run dir>/<name>.pid and its file is removed when it is stopped
    assert {p.name for p in run_dir.glob("*.pid")} == set(), list(run_dir.glob("*.pid"))
    pids = [int(line.split()[-1]) for line in out.splitlines() if line.startswith("pid ")]
    assert len(pids) >= 7 and not [pid for pid in pids if _alive(pid)], pids
