"""The node process's `/metrics` registry. Every dscore metric is defined once, in `dscore.metrics`
(docs/metrics.md is its table); nothing is defined here.

- `dscore.metrics.NodeCollector`: the runtime is its `NodeSource` (role, term, commit and applied index,
  leader changes, elections, proposals committed and failed, messages in and out by kind, duplicates and
  rejections by reason, transport counters and lag), read at scrape time; the runtime pushes persist and
  commit latencies into the node's `NodeMetrics` handle.
- `dscore.metrics.TransportFaultCollector`: what the chaos injector's transport faults did here.
- prometheus-client's process, platform and GC collectors: the process's CPU seconds (report CPU per
  operation beside operations per second), memory and collections.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from dscore.metrics import NodeCollector, TransportFaultCollector
from dscore.runtime.node import NodeRuntime

log = logging.getLogger("dscore_node")


@dataclass(slots=True)
class LeadershipLog:
    """Logs each new leader as this node sees it (the runtime's `on_change` calls `observe`); the count
    is the executor's (`dscore_leader_changes_total`)."""

    leader_id: str | None = None

    def observe(self, runtime: NodeRuntime) -> None:
        leader = runtime.leader_id
        if leader is not None and leader != self.leader_id:
            log.info("leader is %s (term %s) as %s sees it", leader, runtime.status().term, runtime.node_id)
        if leader is not None or not runtime.running:
            self.leader_id = leader


def build_registry() -> tuple[CollectorRegistry, NodeCollector, TransportFaultCollector]:
    """The process's registry with dscore's collectors (attach the node once its runtime exists) and the
    process's own CPU, memory and GC figures."""
    registry = CollectorRegistry()
    nodes = NodeCollector(registry)
    faults = TransportFaultCollector(registry)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry, nodes, faults
