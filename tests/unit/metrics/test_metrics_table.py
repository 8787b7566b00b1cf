"""docs/metrics.md is the contract: every metric dscore.metrics defines is in it, with its type and
labels, and it lists nothing else but the gateway's (defined in services/gateway)."""

from __future__ import annotations

from metrics_doubles import (
    FakeFaulty,
    FakeNetwork,
    FakeSource,
    FakeTransportStatsWithRedeliveries,
    metrics_table,
)
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from dscore.metrics import (
    AdminMetrics,
    ChaosMetrics,
    NetworkCollector,
    NodeCollector,
    TransportFaultCollector,
)

#: defined by the gateway service, listed in the table so that the names are agreed in one place
GATEWAY_METRICS = {
    "dscore_gateway_requests_total",
    "dscore_gateway_request_duration_seconds",
    "dscore_failover_seconds",
    "dscore_gateway_node_silences_total",
}


def _exposed_name(metric: Metric) -> str:
    # prometheus_client keeps a counter family's name without `_total`; the exposition adds it
    return metric.name + "_total" if metric.type == "counter" else metric.name


def _label_names(metric: Metric) -> frozenset[str]:
    names: set[str] = set()
    for sample in metric.samples:
        names.update(sample.labels)
    names.discard("le")
    return frozenset(names)


def _everything_dscore_metrics_defines() -> dict[str, Metric]:
    registry = CollectorRegistry()
    nodes = NodeCollector(registry)
    source = FakeSource(
        core_counters={"elections_started": 1, "elections_won": 1, "stale_term": 2},
        transport=FakeTransportStatsWithRedeliveries(lag={"inbox/n1": 0}),
    )
    handle = nodes.add_node("n1", source, protocol="raft")
    handle.count_in("raft.append")
    handle.count_out("raft.append_response")
    NetworkCollector(registry, FakeNetwork())
    ChaosMetrics(registry)
    AdminMetrics(registry, "n1")
    TransportFaultCollector(registry).add_node("n1", FakeFaulty())
    families = {_exposed_name(m): m for m in registry.collect()}
    for metric in families.values():
        assert metric.samples, f"{metric.name} has no samples: the fake source misses something it reads"
    return families


def test_every_defined_metric_is_in_the_table_with_its_type_and_labels() -> None:
    table = metrics_table()
    families = _everything_dscore_metrics_defines()
    missing = sorted(set(families) - set(table))
    assert not missing, f"defined in dscore.metrics but not in docs/metrics.md: {missing}"
    for name, metric in families.items():
        row = table[name]
        assert metric.type == row.type, f"{name}: defined as a {metric.type}, documented as a {row.type}"
        assert _label_names(metric) == row.labels, (
            f"{name}: labels {sorted(_label_names(metric))} defined, {sorted(row.labels)} documented"
        )


def test_the_table_lists_nothing_that_does_not_exist() -> None:
    table = metrics_table()
    families = _everything_dscore_metrics_defines()
    phantom = sorted(set(table) - set(families) - GATEWAY_METRICS)
    assert not phantom, f"documented in docs/metrics.md but defined nowhere: {phantom}"
    assert set(table) >= GATEWAY_METRICS, "the gateway's agreed names must stay in the table"
    for name in GATEWAY_METRICS:
        assert table[name].source == "gateway"


def test_names_follow_the_conventions() -> None:
    for name, row in metrics_table().items():
        assert name.startswith("dscore_")
        if row.type == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name
        if row.type == "histogram":
            assert name.endswith("_seconds"), f"{name}: histograms here measure time, in seconds"
        assert row.labels <= {"protocol", "node", "role", "kind", "outcome", "reason", "operation"}, (
            f"{name}: label outside the bounded set: {sorted(row.labels)}"
        )
