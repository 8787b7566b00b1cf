"""`dscore.metrics.PROTOCOL_EVENT_REASONS[protocol]` is exactly what that protocol's core counts, so every
event series exists at zero before its first event (which `rate()` would otherwise never see)."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest
from metrics_doubles import FakeSource
from prometheus_client import CollectorRegistry

import dscore.protocols.paxos as paxos_package
import dscore.protocols.pbft as pbft_package
import dscore.protocols.raft as raft_package
from dscore.metrics import ELECTIONS_STARTED_KEY, ELECTIONS_WON_KEY, PROTOCOL_EVENT_REASONS, NodeCollector

#: `self._count("reason")` in Raft's and Paxos's cores, `rejected="reason"` in Raft's snapshot receiver
#: (counted by the core), `counters.drop("reason")` in PBFT's
_COUNTED = re.compile(r'(?:_count\(|rejected=|\.drop\()"([a-z0-9_]+)"')
PACKAGES: dict[str, tuple[ModuleType, str]] = {
    # each with a reason the scan must find, so that a scan finding nothing cannot pass
    "raft": (raft_package, "check_quorum_step_down"),
    "paxos": (paxos_package, "phase1_won"),
    "pbft": (pbft_package, "primary_suspected"),
}


def counted_by(package: ModuleType) -> set[str]:
    folder = Path(package.__file__ or "").parent
    return {m for path in folder.glob("*.py") for m in _COUNTED.findall(path.read_text())}


@pytest.mark.parametrize("protocol", sorted(PACKAGES))
def test_event_reasons_are_what_the_core_counts(protocol: str) -> None:
    package, known = PACKAGES[protocol]
    counted = counted_by(package) - {ELECTIONS_STARTED_KEY, ELECTIONS_WON_KEY}
    assert known in counted  # the scan finds the core's counts
    assert set(PROTOCOL_EVENT_REASONS[protocol]) == counted
    assert len(PROTOCOL_EVENT_REASONS[protocol]) == len(counted)


@pytest.mark.parametrize("protocol", sorted(PACKAGES))
def test_every_event_is_exported_at_zero_before_it_happens(protocol: str) -> None:
    registry = CollectorRegistry()
    NodeCollector(registry).add_node("n1", FakeSource(), protocol=protocol)
    for reason in PROTOCOL_EVENT_REASONS[protocol]:
        value = registry.get_sample_value(
            "dscore_protocol_events_total", {"protocol": protocol, "node": "n1", "reason": reason}
        )
        assert value == 0.0, reason
    # and a count the core has is exported as it is
    reason = PROTOCOL_EVENT_REASONS[protocol][-1]
    registry = CollectorRegistry()
    NodeCollector(registry).add_node("n1", FakeSource(core_counters={reason: 3}), protocol=protocol)
    labels = {"protocol": protocol, "node": "n1", "reason": reason}
    assert registry.get_sample_value("dscore_protocol_events_total", labels) == 3.0
