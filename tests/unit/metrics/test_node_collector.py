"""What NodeCollector, NodeMetrics, NetworkCollector and ChaosMetrics put in a scrape."""

from __future__ import annotations

import pytest
from metrics_doubles import (
    FakeCounters,
    FakeNetwork,
    FakeSource,
    FakeStatus,
    FakeTransportStats,
    FakeTransportStatsWithRedeliveries,
)
from prometheus_client import CollectorRegistry
from prometheus_client.registry import DuplicateTimeseries

from dscore.core.errors import LocalError
from dscore.metrics import (
    COMMIT_BUCKETS_S,
    FAULT_KINDS,
    OUTCOMES,
    REJECT_REASONS,
    ChaosMetrics,
    LatencyHistogram,
    NetworkCollector,
    NodeCollector,
)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def scrape(source: FakeSource, node: str = "n1") -> tuple[CollectorRegistry, NodeCollector]:
    registry = CollectorRegistry()
    collector = NodeCollector(registry)
    collector.add_node(node, source, protocol="raft")
    return registry, collector


def test_status_becomes_gauges_read_at_scrape_time() -> None:
    source = FakeSource(FakeStatus(role="leader", leader_id="n1", term=7, commit_index=42, applied_index=40))
    registry, _ = scrape(source)
    node = {"protocol": "raft", "node": "n1"}
    assert value(registry, "dscore_node_up", **node) == 1
    assert value(registry, "dscore_node_is_leader", **node) == 1
    assert value(registry, "dscore_node_term", **node) == 7
    assert value(registry, "dscore_node_commit_index", **node) == 42
    assert value(registry, "dscore_node_applied_index", **node) == 40
    assert value(registry, "dscore_node_voters", **node) == 3
    assert value(registry, "dscore_node_role", role="leader", **node) == 1
    assert value(registry, "dscore_node_role", role="follower", **node) == 0
    # the source is read again at every scrape: nothing is cached
    source.node_status = FakeStatus(role="follower", leader_id="n2", term=8)
    assert value(registry, "dscore_node_is_leader", **node) == 0
    assert value(registry, "dscore_node_term", **node) == 8
    assert value(registry, "dscore_node_role", role="leader", **node) == 0
    assert value(registry, "dscore_node_role", role="follower", **node) == 1


def test_a_down_node_is_down_and_never_leader() -> None:
    source = FakeSource(
        FakeStatus(running=False, role="leader", leader_id="n1", term=None, commit_index=None)
    )
    registry, _ = scrape(source)
    node = {"protocol": "raft", "node": "n1"}
    assert value(registry, "dscore_node_up", **node) == 0
    assert value(registry, "dscore_node_is_leader", **node) == 0
    assert value(registry, "dscore_node_role", role="down", **node) == 1
    assert value(registry, "dscore_node_role", role="leader", **node) == 0
    # unknown, not zero: a gauge we cannot read is absent
    assert value(registry, "dscore_node_term", **node) is None
    assert value(registry, "dscore_node_commit_index", **node) is None


def test_a_role_outside_the_known_set_is_still_reported() -> None:
    registry, _ = scrape(FakeSource(FakeStatus(role="primary")))
    assert value(registry, "dscore_node_role", protocol="raft", node="n1", role="primary") == 1


def test_rejections_are_zero_initialised_and_duplicates_are_apart() -> None:
    counters = FakeCounters(rejected={"checksum": 3, "duplicate": 11, "unauthenticated": 2})
    registry, _ = scrape(FakeSource(counters=counters))
    node = {"protocol": "raft", "node": "n1"}
    assert value(registry, "dscore_messages_rejected_total", reason="checksum", **node) == 3
    assert value(registry, "dscore_messages_rejected_total", reason="unauthenticated", **node) == 2
    for reason in REJECT_REASONS:
        assert value(registry, "dscore_messages_rejected_total", reason=reason, **node) is not None
    assert value(registry, "dscore_messages_rejected_total", reason="duplicate", **node) is None
    assert value(registry, "dscore_duplicates_dropped_total", **node) == 11


def test_executor_counters_map_to_their_families() -> None:
    counters = FakeCounters(
        requests={"OK": 5, "NOT_LEADER": 2},
        entries_applied=4,
        commands_applied=9,
        readies=12,
        writes=10,
        snapshots_taken=1,
        leader_changes=2,
        proposals_committed=4,
        proposals_failed={"leader_lost": 3},
        send_dropped={"too_large": 1},
    )
    registry, _ = scrape(FakeSource(counters=counters))
    node = {"protocol": "raft", "node": "n1"}
    assert value(registry, "dscore_node_requests_total", outcome="ok", **node) == 5
    assert value(registry, "dscore_node_requests_total", outcome="not_leader", **node) == 2
    for outcome in OUTCOMES:
        assert value(registry, "dscore_node_requests_total", outcome=outcome, **node) is not None
    assert value(registry, "dscore_entries_applied_total", **node) == 4
    assert value(registry, "dscore_commands_applied_total", **node) == 9
    assert value(registry, "dscore_readies_total", **node) == 12
    assert value(registry, "dscore_storage_writes_total", **node) == 10
    assert value(registry, "dscore_snapshots_taken_total", **node) == 1
    assert value(registry, "dscore_leader_changes_total", **node) == 2
    assert value(registry, "dscore_proposals_committed_total", **node) == 4
    assert value(registry, "dscore_proposals_failed_total", reason="leader_lost", **node) == 3
    assert value(registry, "dscore_proposals_failed_total", reason="timeout", **node) == 0
    assert value(registry, "dscore_messages_send_dropped_total", reason="too_large", **node) == 1


def test_before_the_executor_exists_only_status_is_reported() -> None:
    registry, _ = scrape(FakeSource(counters=None))
    node = {"protocol": "raft", "node": "n1"}
    assert value(registry, "dscore_node_up", **node) == 1
    assert value(registry, "dscore_storage_writes_total", **node) is None


def test_protocol_counters_feed_elections_and_events() -> None:
    source = FakeSource(core_counters={"elections_started": 4, "elections_won": 2, "stale_term": 7})
    registry, _ = scrape(source)
    node = {"protocol": "raft", "node": "n1"}
    assert value(registry, "dscore_elections_started_total", **node) == 4
    assert value(registry, "dscore_elections_won_total", **node) == 2
    assert value(registry, "dscore_protocol_events_total", reason="stale_term", **node) == 7
    # the keys with families of their own are not repeated as events
    assert value(registry, "dscore_protocol_events_total", reason="elections_won", **node) is None


def test_transport_stats_and_the_optional_redeliveries_and_client_restarts() -> None:
    stats = FakeTransportStatsWithRedeliveries(
        lag={"inbox/n1": 5, "inbox/other": 2},
        send_failures={"backpressure": 3},
        records_sent=10,
        records_received=20,
        bytes_sent=1000,
        bytes_received=2000,
        redelivered=6,
        producer_restarts=2,
        consumer_restarts=1,
    )
    registry, _ = scrape(FakeSource(transport=stats))
    node = {"protocol": "raft", "node": "n1"}
    assert value(registry, "dscore_consumer_lag", **node) == 7
    assert value(registry, "dscore_transport_records_sent_total", **node) == 10
    assert value(registry, "dscore_transport_records_received_total", **node) == 20
    assert value(registry, "dscore_transport_sent_bytes_total", **node) == 1000
    assert value(registry, "dscore_transport_received_bytes_total", **node) == 2000
    assert value(registry, "dscore_transport_send_failures_total", reason="backpressure", **node) == 3
    assert value(registry, "dscore_transport_send_failures_total", reason="broker_error", **node) == 0
    assert value(registry, "dscore_redeliveries_total", **node) == 6
    assert value(registry, "dscore_transport_client_restarts_total", kind="producer", **node) == 2
    assert value(registry, "dscore_transport_client_restarts_total", kind="consumer", **node) == 1
    registry, _ = scrape(FakeSource(transport=FakeTransportStats()))
    assert value(registry, "dscore_redeliveries_total", **node) is None
    assert value(registry, "dscore_transport_client_restarts_total", kind="producer", **node) is None
    assert value(registry, "dscore_consumer_lag", **node) == 0


def test_pushed_counts_and_latencies() -> None:
    registry = CollectorRegistry()
    handle = NodeCollector(registry).add_node("n1", FakeSource(), protocol="raft")
    handle.count_in("raft.append", 3)
    handle.count_in("raft.append")
    handle.count_out("raft.heartbeat", 2)
    for seconds in (0.0004, 0.001, 0.003, 7.0):
        handle.observe_commit_seconds(seconds)
    handle.observe_persist_seconds(0.002)
    handle.observe_hop_seconds(0.0001)
    node = {"protocol": "raft", "node": "n1"}
    assert value(registry, "dscore_messages_received_total", kind="raft.append", **node) == 4
    assert value(registry, "dscore_messages_sent_total", kind="raft.heartbeat", **node) == 2
    assert value(registry, "dscore_commit_duration_seconds_count", **node) == 4
    assert value(registry, "dscore_commit_duration_seconds_sum", **node) == pytest.approx(7.0044)
    # buckets are cumulative and `le` is inclusive: 0.001 falls in le="0.001"
    assert value(registry, "dscore_commit_duration_seconds_bucket", le="0.0005", **node) == 1
    assert value(registry, "dscore_commit_duration_seconds_bucket", le="0.001", **node) == 2
    assert value(registry, "dscore_commit_duration_seconds_bucket", le="0.005", **node) == 3
    assert value(registry, "dscore_commit_duration_seconds_bucket", le="5.0", **node) == 3
    assert value(registry, "dscore_commit_duration_seconds_bucket", le="+Inf", **node) == 4
    assert value(registry, "dscore_persist_duration_seconds_count", **node) == 1
    assert value(registry, "dscore_transport_hop_duration_seconds_count", **node) == 1


def test_latency_histogram_buckets_match_their_bounds() -> None:
    histogram = LatencyHistogram(COMMIT_BUCKETS_S)
    for bound in COMMIT_BUCKETS_S:
        histogram.observe(bound)
    buckets, total = histogram.buckets()
    assert [count for _, count in buckets] == [*range(1, len(COMMIT_BUCKETS_S) + 1), len(COMMIT_BUCKETS_S)]
    assert total == pytest.approx(sum(COMMIT_BUCKETS_S))
    with pytest.raises(LocalError):
        LatencyHistogram((0.1, 0.01))


def test_several_nodes_share_each_family() -> None:
    registry = CollectorRegistry()
    collector = NodeCollector(registry)
    collector.add_node("n1", FakeSource(FakeStatus(leader_id="n1", role="leader")), protocol="raft")
    collector.add_node("n2", FakeSource(FakeStatus(leader_id="n1")), protocol="raft")
    families = [m for m in registry.collect() if m.name == "dscore_node_is_leader"]
    assert len(families) == 1
    assert {s.labels["node"]: s.value for s in families[0].samples} == {"n1": 1, "n2": 0}
    with pytest.raises(LocalError):
        collector.add_node("n1", FakeSource(), protocol="raft")
    collector.remove_node("n2")
    assert value(registry, "dscore_node_up", protocol="raft", node="n2") is None
    with pytest.raises(LocalError):
        collector.remove_node("n2")


def test_registries_are_the_callers_and_never_shared() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    NodeCollector(first).add_node("n1", FakeSource(), protocol="raft")
    NodeCollector(second).add_node("n1", FakeSource(FakeStatus(term=99)), protocol="raft")
    assert value(first, "dscore_node_term", protocol="raft", node="n1") == 3
    assert value(second, "dscore_node_term", protocol="raft", node="n1") == 99
    # two collectors on one registry would repeat every family: refused at registration
    with pytest.raises(DuplicateTimeseries):
        NodeCollector(first)


def test_network_collector_reads_the_memory_network() -> None:
    registry = CollectorRegistry()
    network = FakeNetwork(delivered=5, dropped={"partitioned": 2}, duplicated=1, delayed=3)
    NetworkCollector(registry, network)
    assert value(registry, "dscore_network_frames_delivered_total") == 5
    assert value(registry, "dscore_network_frames_dropped_total", reason="partitioned") == 2
    assert value(registry, "dscore_network_frames_dropped_total", reason="link_drop") == 0
    assert value(registry, "dscore_network_frames_duplicated_total") == 1
    assert value(registry, "dscore_network_frames_delayed_total") == 3


def test_chaos_faults_by_kind() -> None:
    registry = CollectorRegistry()
    chaos = ChaosMetrics(registry)
    for kind in FAULT_KINDS:
        assert value(registry, "dscore_chaos_faults_injected_total", kind=kind) == 0
    chaos.fault_injected("kill")
    chaos.fault_injected("kill")
    assert value(registry, "dscore_chaos_faults_injected_total", kind="kill") == 2
    with pytest.raises(LocalError, match="unknown fault kind"):
        chaos.fault_injected("meteor")
