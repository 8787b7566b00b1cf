"""bench/etcd/relay_floor.py end to end with tiny counts: a real Kafka broker and real Redis servers, the
relay processes, then dscore's nodes and gateway on the same servers. It checks the report's shape (the
floors, the target computed from them, one row per run of each path) and that writes went through both
paths; not the figures themselves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RELAY_FLOOR = REPO / "bench" / "etcd" / "relay_floor.py"

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_relay_floor_reports_the_floors_the_target_and_both_paths() -> None:
    command = [
        sys.executable, str(RELAY_FLOOR), "--writes", "100", "--repeats", "1", "--warmup-s", "1",
        "--hops", "50", "--with-dscore", "--dscore-s", "1",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.terminate()
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"relay_floor.py did not finish in 300 s\n{stdout[-3000:]}\n{stderr[-3000:]}")
    assert process.returncode == 0, f"exit {process.returncode}\n{stdout[-3000:]}\n{stderr[-3000:]}"

    floors = re.search(r"Kafka hop p50 ([\d.]+) ms, Redis MULTI/EXEC p50 ([\d.]+) ms", stdout)
    assert floors is not None, stdout
    hop = float(floors.group(1))
    assert hop > 0 and float(floors.group(2)) > 0, stdout
    target = re.search(r"target: 4 x ([\d.]+) \+ 1 = ([\d.]+) ms", stdout)
    assert target is not None and float(target.group(1)) == hop, stdout
    assert float(target.group(2)) == pytest.approx(4 * hop + 1, abs=0.01), stdout

    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in stdout.splitlines()
        if line.startswith("| relay path") or line.startswith("| dscore through")
    ]
    assert [row[0] for row in rows] == [
        "relay path, raw I/O, run 1",
        "relay path, dscore's transport and storage, run 1",
        "dscore through the gateway, run 1",
    ], stdout
    for row in rows:
        p50, p99, writes_s = (float(cell.replace(",", "")) for cell in row[1:4])
        assert 0 < p50 <= p99 and writes_s > 0, f"{row}\n{stdout}"
    for relay in rows[:2]:
        assert all(role in relay[5] for role in ("client", "leader", "followers", "kafka", "redis")), stdout
    for path in ("relay path, raw I/O", "relay path, dscore's transport and storage", "dscore"):
        assert re.search(rf"^{path}: p50 \(median of runs\) [\d.]+ ms = [\d.]+x the target$", stdout, re.M), (
            stdout
        )
