"""bench/etcd/compare.py end to end with tiny durations: real etcd members, a real Kafka broker, real
Redis servers, dscore's node and gateway processes. It checks the report's shape (every table, one row
per system and client level, a verdict per target) and that both systems committed writes through their
HTTP APIs and recovered from a kill -9 of their leader; not the figures themselves."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPARE = REPO / "bench" / "etcd" / "compare.py"
LEVELS = (1, 3)

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _tables(text: str) -> list[list[list[str]]]:
    """Markdown tables in `text`: each a list of rows (header first, the --- row dropped) of cells."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r"-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def _number(cell: str) -> float:
    """A table's number ("1,234", "0.42x"); "-" (nothing measured) is 0."""
    return 0.0 if cell == "-" else float(cell.replace(",", "").rstrip("x"))


def test_compare_prints_every_table_and_both_systems_commit() -> None:
    if shutil.which("etcd") is None and os.geteuid() != 0:
        pytest.skip("etcd (Debian's etcd-server) is not installed and cannot be installed here")
    command = [
        sys.executable, str(COMPARE),
        "--clients", ",".join(map(str, LEVELS)),
        "--duration-s", "2", "--warmup-s", "0.5", "--repeats", "1", "--idle-s", "0.5", "--stack-warmup-s", "0.5",
        "--failover-trials", "1", "--allow-few-trials", "--kafka-hops", "50", "--redis-rounds", "50",
        "--relay-writes", "50",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=480)
    except subprocess.TimeoutExpired:
        process.terminate()  # compare.py stops etcd, the nodes, Redis and Kafka on SIGTERM
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"compare.py did not finish in 480 s\n{stdout[-3000:]}\n{stderr[-3000:]}")
    assert process.returncode == 0, f"exit {process.returncode}\n{stdout[-3000:]}\n{stderr[-3000:]}"
    tables = _tables(stdout)
    assert len(tables) == 5, stdout
    load, ratios, baselines, failover, targets = tables

    assert load[0] == [
        "system", "clients", "writes/s", "p50 ms", "p99 ms", "stack CPU µs/op", "stack cores",
        "client CPU µs/op", "other stack cores", "failed", "term changes", "runs",
    ]  # fmt: skip
    rows = {(row[0], int(row[1])): row for row in load[1:]}
    assert sorted(rows) == sorted((system, n) for system in ("etcd", "dscore") for n in LEVELS), stdout
    committed = dict.fromkeys(("etcd", "dscore"), 0.0)
    for (system, _clients), row in rows.items():
        assert row[-1] == "1", row
        assert _number(row[8]) < 0.05, f"the other system was not paused during this run: {row}"
        writes_s = _number(row[2])
        committed[system] += writes_s
        if writes_s:  # a run can commit nothing if an election on the loaded machine spans its window
            p50, p99, cpu = (_number(cell) for cell in row[3:6])
            assert 0 < p50 <= p99 and cpu > 0, f"{row}\n{stdout}"
    assert all(committed.values()), f"a system committed no write through its HTTP API: {committed}\n{stdout}"

    assert ratios[0][0] == "clients" and [int(row[0]) for row in ratios[1:]] == list(LEVELS)
    assert all(cell == "-" or _number(cell) > 0 for row in ratios[1:] for cell in row[1:]), stdout

    assert [row[0] for row in baselines[1:]] == [
        "kafka produce -> consume hop", "redis MULTI/EXEC (appendfsync always)",
        "write path without consensus (raw I/O: 4 hops, 2 followers, 3 saves)",
    ]  # fmt: skip
    assert all(0 < _number(row[1]) <= _number(row[2]) for row in baselines[1:]), stdout

    assert {row[0]: row[1] for row in failover[1:]} == {"etcd": "1", "dscore": "1"}
    assert all(_number(row[2]) > 0 for row in failover[1:]), stdout

    assert len(targets) == 4, stdout
    assert all(row[1] in ("met", "NOT MET") for row in targets[1:]), stdout
    assert re.search(r"the path without consensus: [\d.]+ ms", targets[3][2]), stdout
