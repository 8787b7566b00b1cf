"""docs/metrics.md is the contract: every metric dscore registers is in it, with its type and labels, and
it lists nothing else. Three places register metrics, and each is instantiated here on a fresh registry:
`dscore.metrics` (node, embedded network, transport faults, admin, chaos injections), the gateway
service (`dscore_gateway.metrics.GatewayMetrics`) and the chaos service (`dscore_chaos.metrics.
ServiceMetrics`, which also registers `dscore.metrics.ChaosMetrics`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from metrics_doubles import (
    FakeFaulty,
    FakeNetwork,
    FakeSource,
    FakeTransportStatsWithRedeliveries,
    metrics_table,
)
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.metrics import MetricWrapperBase

from dscore.metrics import (
    AdminMetrics,
    ChaosMetrics,
    NetworkCollector,
    NodeCollector,
    TransportFaultCollector,
)
from dscore_chaos.metrics import ServiceMetrics
from dscore_gateway.metrics import GatewayMetrics


def _exposed_name(metric: Metric) -> str:
    # prometheus_client keeps a counter family's name without `_total`; the exposition adds it
    return metric.name + "_total" if metric.type == "counter" else metric.name


def _label_names(metric: Metric) -> frozenset[str]:
    names: set[str] = set()
    for sample in metric.samples:
        names.update(sample.labels)
    names.discard("le")
    return frozenset(names)


def _families(registry: CollectorRegistry, registered_by: str) -> dict[str, Metric]:
    families = {_exposed_name(m): m for m in registry.collect()}
    for name, metric in families.items():
        # without a sample there are no label names to compare
        assert metric.samples, f"{name} ({registered_by}) has no samples: the test does not exercise it"
    return families


def _give_each_labelled_metric_a_child(holder: object) -> None:
    """A labelled `prometheus_client` metric exports no sample (so no label names) until it has a child:
    make one for each such metric `holder` keeps, whatever its labels are."""
    for metric in vars(holder).values():
        if isinstance(metric, MetricWrapperBase) and metric._labelnames:
            metric.labels(*["x"] * len(metric._labelnames))


def _registered_by_dscore_metrics() -> dict[str, Metric]:
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
    return _families(registry, "dscore.metrics")


def _registered_by_the_gateway() -> dict[str, Metric]:
    metrics = GatewayMetrics()  # a fresh registry of its own, as each gateway has
    # what `dscore_gateway.service.Gateway` wires in, with a value for every labelled family
    metrics.watch(
        rejected=lambda: {"late": 1},
        sessions=lambda: {"busy": 1, "idle": 2, "pinned": 0},
        idempotency_keys=lambda: 3,
        idempotency_evictions=lambda: 0,
        leader_known=lambda: True,
        leader_changes=lambda: 1,
        leader_losses=lambda: 1,
        gathers=lambda: {"filled": 1, "expired": 0},
    )
    _give_each_labelled_metric_a_child(metrics)
    return _families(metrics.registry, "the gateway")


def _registered_by_the_chaos_service() -> dict[str, Metric]:
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry, active=lambda: 2)
    _give_each_labelled_metric_a_child(metrics)
    return _families(registry, "the chaos service")


#: who registers metrics -> what it registers
REGISTERED_BY: dict[str, Callable[[], dict[str, Metric]]] = {
    "dscore.metrics": _registered_by_dscore_metrics,
    "the gateway": _registered_by_the_gateway,
    "the chaos service": _registered_by_the_chaos_service,
}

#: a service -> what the heading of the table listing its own metrics names (where they are defined)
SERVICE_SECTIONS = {"the gateway": "services/gateway", "the chaos service": "services/chaos"}


@pytest.mark.parametrize("registered_by", sorted(REGISTERED_BY))
def test_every_registered_metric_is_in_the_table_with_its_type_and_labels(registered_by: str) -> None:
    table = metrics_table()
    problems = []
    for name, metric in sorted(REGISTERED_BY[registered_by]().items()):
        row = table.get(name)
        if row is None:
            problems.append(f"{name}: not in docs/metrics.md")
            continue
        if metric.type != row.type:
            problems.append(f"{name}: registered as a {metric.type}, documented as a {row.type}")
        if _label_names(metric) != row.labels:
            problems.append(
                f"{name}: labels {sorted(_label_names(metric))} registered, {sorted(row.labels)} documented"
            )
    assert not problems, f"registered by {registered_by}, not as documented:\n" + "\n".join(problems)


@pytest.mark.parametrize("service", sorted(SERVICE_SECTIONS))
def test_a_services_own_metrics_are_in_its_section(service: str) -> None:
    table = metrics_table()
    own = set(REGISTERED_BY[service]()) - set(_registered_by_dscore_metrics())
    assert own, f"{service} registers no metric of its own"
    where = SERVICE_SECTIONS[service]
    # a metric missing from the table is the test above's to report
    misplaced = sorted(
        f"{name} (under {table[name].section!r})"
        for name in own
        if name in table and where not in table[name].section
    )
    assert not misplaced, f"registered by {service}, but not under a heading naming {where}: {misplaced}"


def test_the_table_lists_nothing_that_is_not_registered() -> None:
    registered: set[str] = set()
    for registers in REGISTERED_BY.values():
        registered |= set(registers())
    phantom = sorted(set(metrics_table()) - registered)
    assert not phantom, (
        f"documented in docs/metrics.md but registered by none of {', '.join(REGISTERED_BY)}: {phantom}"
    )


def test_names_follow_the_conventions() -> None:
    for name, row in metrics_table().items():
        assert name.startswith("dscore_")
        if row.type == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name
        if row.type == "histogram":
            assert name.endswith("_seconds"), f"{name}: histograms here measure time, in seconds"
        assert row.labels <= {
            "protocol",
            "node",
            "role",
            "kind",
            "outcome",
            "reason",
            "operation",
            "state",
            "ended",
        }, f"{name}: label outside the bounded set: {sorted(row.labels)}"
