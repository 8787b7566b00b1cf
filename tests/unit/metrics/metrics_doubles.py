"""Plain objects with the shapes `dscore.metrics` reads (doubles of our own code, not of a server)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
METRICS_TABLE = REPO / "docs" / "metrics.md"


@dataclass
class FakeStatus:
    running: bool = True
    role: str = "follower"
    leader_id: str | None = "n1"
    term: int | None = 3
    commit_index: int | None = 10
    applied_index: int = 9
    voters: tuple[str, ...] = ("n1", "n2", "n3")


@dataclass
class FakeCounters:
    rejected: dict[str, int] = field(default_factory=dict)
    send_dropped: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    entries_applied: int = 0
    commands_applied: int = 0
    readies: int = 0
    writes: int = 0
    snapshots_taken: int = 0
    leader_changes: int = 0
    proposals_committed: int = 0
    proposals_failed: dict[str, int] = field(default_factory=dict)


@dataclass
class FakeTransportStats:
    lag: dict[str, int] = field(default_factory=dict)
    send_failures: dict[str, int] = field(default_factory=dict)
    records_sent: int = 0
    records_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


@dataclass
class FakeTransportStatsWithRedeliveries(FakeTransportStats):
    redelivered: int = 0
    producer_restarts: int = 0
    consumer_restarts: int = 0


@dataclass
class FakeSource:
    node_status: FakeStatus = field(default_factory=FakeStatus)
    counters: FakeCounters | None = field(default_factory=FakeCounters)
    core_counters: dict[str, int] = field(default_factory=dict)
    transport: FakeTransportStats | None = field(default_factory=FakeTransportStatsWithRedeliveries)

    def status(self) -> FakeStatus:
        return self.node_status

    def executor_counters(self) -> FakeCounters | None:
        return self.counters

    def protocol_counters(self) -> Mapping[str, int]:
        return self.core_counters

    def transport_stats(self) -> FakeTransportStats | None:
        return self.transport


@dataclass
class FakeNetwork:
    delivered: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    duplicated: int = 0
    delayed: int = 0


@dataclass(frozen=True)
class TableRow:
    name: str
    type: str
    labels: frozenset[str]
    source: str
    #: the `## ` heading the row is under
    section: str


_ROW = re.compile(r"^\|\s*`(dscore_[a-z0-9_]+)`\s*\|\s*(counter|gauge|histogram)\s*\|([^|]*)\|([^|]*)\|")


def metrics_table() -> dict[str, TableRow]:
    """The metric rows of docs/metrics.md (recording rules have no type column and are not included)."""
    rows: dict[str, TableRow] = {}
    section = ""
    for line in METRICS_TABLE.read_text().splitlines():
        if line.startswith("## "):
            section = line.removeprefix("## ").strip()
            continue
        match = _ROW.match(line)
        if match is None:
            continue
        name, kind, labels, source = match.groups()
        assert name not in rows, f"{name} is listed twice in {METRICS_TABLE}"
        rows[name] = TableRow(
            name,
            kind,
            frozenset(x.strip() for x in labels.split(",") if x.strip()),
            source.strip(),
            section,
        )
    return rows


def recording_rules_in_table() -> set[str]:
    return set(re.findall(r"^\|\s*`([a-z_]+:[a-z0-9_]+:[a-z0-9_]+)`", METRICS_TABLE.read_text(), re.M))


class FakeFaulty:
    """A transport that obeys faults, as `TransportFaultCollector` reads it."""

    def __init__(self) -> None:
        from dscore.transport.faults import FaultStats

        self.fault_stats = FaultStats(dropped_sends=2, dropped_receives=3, delayed=1)
        self.fault_stats.commands["started"] = 1
        self.fault_stats.control_rejected["unauthenticated"] = 1
        self.active_faults = 1
