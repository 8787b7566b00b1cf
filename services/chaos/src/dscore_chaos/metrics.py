"""The chaos service's metrics, on `/metrics` (its own registry).

- `dscore_chaos_faults_injected_total{kind}` (`dscore.metrics.ChaosMetrics`): every injection made, by
  the kind label of `dscore.metrics.FAULT_KINDS` (`kill`, `pause`, `partition`, `heal`, `link_drop`,
  `link_delay`; see `dscore_chaos.model.METRIC_KIND`). The "Availability and failover" dashboard draws
  `sum by (kind) (increase(dscore_chaos_faults_injected_total{job=~"$job"}[1m15s])) > 0` as annotations.
- `dscore_chaos_injections_failed_total{kind}`: injections that could not be made (no leader found, no
  pod, the platform refused), by the API's kind (`pod_kill`, `process_pause`, ...).
- `dscore_chaos_annotations_failed_total`: Grafana annotations that could not be posted (only with
  `DSCORE_CHAOS__GRAFANA__URL`).
- `dscore_chaos_faults_active`: faults scheduled or in force.
- `dscore_chaos_requests_rejected_total{reason}`: fault API requests refused before acting on them:
  `missing_token` (no `Authorization: Bearer` header), `bad_token` (a wrong token); both from zero. A
  rising count is someone without the Secret's token knocking.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from dscore.metrics import ChaosMetrics
from dscore_chaos.model import ChaosKind

#: why the fault API refused a request (`dscore_chaos_requests_rejected_total{reason}`)
REJECT_REASONS = ("missing_token", "bad_token")


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry, active: Callable[[], int]) -> None:
        self.registry = registry
        self.chaos = ChaosMetrics(registry)
        self.failed = Counter(
            "dscore_chaos_injections_failed_total",
            "Injections the chaos service could not make, by the API's fault kind",
            ["kind"],
            registry=registry,
        )
        for kind in ChaosKind:
            self.failed.labels(kind.value)
        self.annotations_failed = Counter(
            "dscore_chaos_annotations_failed_total",
            "Grafana annotations the chaos service could not post",
            registry=registry,
        )
        self.rejected = Counter(
            "dscore_chaos_requests_rejected_total",
            "Fault API requests the chaos service refused before acting on them, by reason",
            ["reason"],
            registry=registry,
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        gauge = Gauge("dscore_chaos_faults_active", "Faults scheduled or in force", registry=registry)
        gauge.set_function(lambda: float(active()))
