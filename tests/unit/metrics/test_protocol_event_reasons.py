"""`dscore.metrics.PROTOCOL_EVENT_REASONS["raft"]` is exactly what Raft's core counts, so every event
series exists at zero before its first event (which `rate()` would otherwise never see)."""

from __future__ import annotations

import re
from pathlib import Path

from metrics_doubles import FakeSource
from prometheus_client import CollectorRegistry

import dscore.protocols.raft as raft_package
from dscore.metrics import ELECTIONS_STARTED_KEY, ELECTIONS_WON_KEY, PROTOCOL_EVENT_REASONS, NodeCollector

#: `self._count("reason")` in the core, `rejected="reason"` in the snapshot receiver (counted by the core)
_COUNTED = re.compile(r'(?:_count\(|rejected=)"([a-z_]+)"')


def counted_by_raft() -> set[str]:
    folder = Path(raft_package.__file__).parent
    return {m for path in folder.glob("*.py") for m in _COUNTED.findall(path.read_text())}


def test_raft_event_reasons_are_what_the_core_counts() -> None:
    counted = counted_by_raft() - {ELECTIONS_STARTED_KEY, ELECTIONS_WON_KEY}
    assert "check_quorum_step_down" in counted  # the scan finds the core's counts
    assert set(PROTOCOL_EVENT_REASONS["raft"]) == counted
    assert len(PROTOCOL_EVENT_REASONS["raft"]) == len(counted)


def test_every_raft_event_is_exported_at_zero_before_it_happens() -> None:
    registry = CollectorRegistry()
    NodeCollector(registry).add_node("n1", FakeSource(), protocol="raft")
    for reason in PROTOCOL_EVENT_REASONS["raft"]:
        value = registry.get_sample_value(
            "dscore_protocol_events_total", {"protocol": "raft", "node": "n1", "reason": reason}
        )
        assert value == 0.0, reason
    # and a count the core has is exported as it is
    registry = CollectorRegistry()
    NodeCollector(registry).add_node("n1", FakeSource(core_counters={"stale_term": 3}), protocol="raft")
    labels = {"protocol": "raft", "node": "n1", "reason": "stale_term"}
    assert registry.get_sample_value("dscore_protocol_events_total", labels) == 3.0
