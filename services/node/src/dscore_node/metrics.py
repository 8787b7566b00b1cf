"""The node's Prometheus metrics, served on `/metrics` from one `CollectorRegistry`.

Pull-style: `NodeServiceCollector` reads the runtime's status and the executor's, transport's and
storage's counters at scrape time, so the hot path pays nothing for metrics it does not push. The one
push metric is the persist latency histogram (`TimedStorage` observes every save).

This is the seam for `dscore.metrics` (every metric defined once, in the library): when its
`NodeCollector(source)` lands, the registry built by `build_registry` registers it instead of
`NodeServiceCollector`, and the names below are the ones it should keep. Naming follows Prometheus:
`dscore_` prefix, base units, `_total` on counters, labels from small fixed sets (role, kind, reason,
outcome), never a key, a term or a node's peer list.

What is not here yet, because the runtime does not expose it (see the README of services/node):
commit latency (proposal -> applied, needs the executor to time its pending entries) and messages
received by kind (the executor counts stepped messages, not their kinds).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from dscore.core.errors import LocalError
from dscore.protocols.raft import Role
from dscore.runtime.node import NodeRuntime
from dscore.transport.kafka_stats import KafkaTransportStats
from dscore_node.instruments import ObservedTransport

log = logging.getLogger("dscore_node")

#: the roles `dscore_node_role` reports (one is 1, the others 0); `down` = the runtime does not run
ROLES = (*(role.value for role in Role), "down")
#: persist latency buckets: Redis with `appendfsync always` takes ~0.1-10 ms per save on a local disk
PERSIST_BUCKETS_S = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(slots=True)
class LeadershipTracker:
    """Counts leader changes as this node sees them (the runtime's `on_change` calls `observe`)."""

    leader_id: str | None = None
    changes: int = 0

    def observe(self, runtime: NodeRuntime) -> None:
        leader = runtime.leader_id
        if leader is not None and leader != self.leader_id:
            self.changes += 1
            status = runtime.status()
            log.info("leader is %s (term %s) as %s sees it", leader, status.term, runtime.node_id)
        if leader is not None or not runtime.running:
            self.leader_id = leader


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _labelled_counter(
    name: str, documentation: str, label: str, values: Iterable[tuple[str, float]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values):
        family.add_metric([key], value)
    return family


class NodeServiceCollector(Collector):
    """Reads one node's figures at scrape time (see the module docstring)."""

    def __init__(
        self,
        runtime: NodeRuntime,
        transport: ObservedTransport,
        leadership: LeadershipTracker,
        kafka_stats: KafkaTransportStats | None = None,
    ) -> None:
        self._runtime = runtime
        self._transport = transport
        self._leadership = leadership
        self._kafka = kafka_stats

    def collect(self) -> Iterator[Metric]:
        runtime = self._runtime
        status = runtime.status()
        role = GaugeMetricFamily("dscore_node_role", "1 for this node's current role", labels=["role"])
        for name in ROLES:
            role.add_metric([name], 1.0 if status.role == name else 0.0)
        yield role
        yield GaugeMetricFamily("dscore_node_up", "1 while the runtime runs", value=float(status.running))
        yield GaugeMetricFamily(
            "dscore_node_has_leader",
            "1 while this node knows a leader",
            value=float(status.leader_id is not None),
        )
        if status.term is not None:
            yield GaugeMetricFamily("dscore_node_term", "the current term", value=status.term)
        if status.commit_index is not None:
            yield GaugeMetricFamily(
                "dscore_node_commit_index", "highest log index known committed", value=status.commit_index
            )
        yield GaugeMetricFamily(
            "dscore_node_applied_index", "highest log index applied", value=status.applied_index
        )
        yield GaugeMetricFamily(
            "dscore_node_incarnation", "restarts of this node (from storage)", value=status.incarnation
        )
        yield GaugeMetricFamily(
            "dscore_node_voters", "voters in this node's configuration", value=len(status.voters)
        )
        yield _counter(
            "dscore_leader_changes_total", "new leaders this node has seen", self._leadership.changes
        )
        yield _counter(
            "dscore_elections_total", "elections this node started as a candidate", self._transport.elections
        )
        yield _counter("dscore_storage_saves_total", "atomic writes made durable", runtime.saves)
        yield GaugeMetricFamily(
            "dscore_node_consuming",
            "1 while the node reads its inbox (0: cut off by /admin)",
            value=float(self._transport.consuming),
        )
        yield _labelled_counter(
            "dscore_messages_sent_total",
            "frames handed to the transport, by message kind",
            "kind",
            self._transport.sent_by_kind.items(),
        )
        yield _counter(
            "dscore_messages_received_total", "frames read from the inbox", self._transport.received
        )
        try:
            counters = runtime.executor.counters
        except LocalError:  # not started yet
            return
        yield _counter(
            "dscore_messages_stepped_total",
            "protocol messages stepped into the core",
            counters.messages_stepped,
        )
        yield _labelled_counter(
            "dscore_messages_rejected_total",
            "inbound frames dropped before the core, by reason (duplicate, unauthenticated, checksum, ...)",
            "reason",
            counters.rejected.items(),
        )
        yield _labelled_counter(
            "dscore_messages_send_dropped_total",
            "outgoing messages not sent, by reason",
            "reason",
            counters.send_dropped.items(),
        )
        yield _labelled_counter(
            "dscore_client_responses_total",
            "client requests answered, by outcome (ok: committed or read; the others: not or not known)",
            "outcome",
            ((name.lower(), value) for name, value in counters.requests.items()),
        )
        yield _counter(
            "dscore_entries_applied_total",
            "log entries applied to the state machine",
            counters.entries_applied,
        )
        yield _counter(
            "dscore_commands_applied_total",
            "client commands applied to the state machine",
            counters.commands_applied,
        )
        yield _counter(
            "dscore_snapshots_taken_total",
            "state-machine snapshots taken (log compaction)",
            counters.snapshots_taken,
        )
        kafka = self._kafka
        if kafka is None:
            return
        yield _counter(
            "dscore_kafka_records_sent_total", "records the broker acknowledged", kafka.records_sent
        )
        yield _counter(
            "dscore_kafka_records_received_total", "records read from the inbox", kafka.records_received
        )
        yield _labelled_counter(
            "dscore_kafka_send_failures_total",
            "frames the transport could not deliver, by reason",
            "reason",
            kafka.send_failures.items(),
        )
        yield _labelled_counter(
            "dscore_kafka_receive_errors_total",
            "errors the consumer reported, by client error",
            "error",
            kafka.receive_errors.items(),
        )
        yield _counter("dscore_kafka_producer_restarts_total", "producers replaced", kafka.producer_restarts)
        yield GaugeMetricFamily(
            "dscore_kafka_inbox_lag_records",
            "records in the inbox after the last one read",
            value=sum(kafka.lag.values()),
        )


def build_registry() -> tuple[CollectorRegistry, Histogram]:
    """The process's registry with the persist latency histogram and the process's own CPU, memory and
    GC figures (CPU seconds beside ops/s); register the node's collector once its runtime exists."""
    registry = CollectorRegistry()
    persist = Histogram(
        "dscore_persist_latency_seconds",
        "time to make one Ready's write durable (Storage.save)",
        buckets=PERSIST_BUCKETS_S,
        registry=registry,
    )
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry, persist
