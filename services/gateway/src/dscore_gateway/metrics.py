"""The gateway's Prometheus metrics, on `/metrics` (names are stable: dashboards and the repo-wide metrics
table use them; the gateway README lists each one).

Each `Gateway` has its own `CollectorRegistry`, so several gateways (tests) never share counters.
Outcome labels are the `error` codes of the JSON bodies ("ok" for success), one vocabulary for logs,
bodies and metrics (`dscore_gateway.outcomes`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: request latency buckets (seconds): a served request takes milliseconds, one through an election
#: hundreds of them, one that ends 504 `request_timeout_s`
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: failover buckets (seconds): Raft's default timing elects a new leader in 0.1-0.4 s
FAILOVER_BUCKETS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)

#: operations labelled on request metrics (`other`: any request that is not one of these routes)
OPERATIONS = ("put", "get", "delete", "cas", "append", "cluster", "other")


class _LiveValues(Collector):
    """Values read when scraped: the endpoint's rejected replies, sessions, table sizes."""

    def __init__(
        self,
        *,
        rejected: Callable[[], Mapping[str, int]],
        sessions: Callable[[], Mapping[str, int]],
        idempotency_keys: Callable[[], int],
        idempotency_evictions: Callable[[], int],
        leader_known: Callable[[], bool],
        leader_changes: Callable[[], int],
        leader_losses: Callable[[], int],
        gathers: Callable[[], Mapping[str, int]],
    ) -> None:
        self._gathers = gathers
        self._leader_changes = leader_changes
        self._leader_losses = leader_losses
        self._rejected = rejected
        self._sessions = sessions
        self._keys = idempotency_keys
        self._evictions = idempotency_evictions
        self._leader_known = leader_known

    def collect(self) -> Iterable[Metric]:
        yield _counter_by(
            "dscore_gateway_rejected_replies",
            "Replies from the cluster dropped by the gateway's endpoint, by reason "
            "(undecodable, unauthenticated, unexpected, late: answered after its attempt timed out)",
            "reason",
            self._rejected(),
        )
        sessions = GaugeMetricFamily(
            "dscore_gateway_sessions",
            "Client sessions of the gateway by state (busy: carrying a write; idle; pinned: held for the "
            "retry of a write whose outcome was unknown)",
            labels=["state"],
        )
        for state, count in sorted(self._sessions().items()):
            sessions.add_metric([state], count)
        yield sessions
        yield GaugeMetricFamily(
            "dscore_gateway_idempotency_keys", "Idempotency-Keys remembered", value=self._keys()
        )
        yield CounterMetricFamily(
            "dscore_gateway_idempotency_evictions",
            "Idempotency-Keys forgotten before their time because the table was full",
            value=self._evictions(),
        )
        yield GaugeMetricFamily(
            "dscore_gateway_leader_known",
            "1 while the gateway knows which node leads (from a served request), else 0",
            value=1 if self._leader_known() else 0,
        )
        yield CounterMetricFamily(
            "dscore_gateway_leader_changes",
            "Times the node serving the gateway's leader-only requests changed to another node",
            value=self._leader_changes(),
        )
        yield CounterMetricFamily(
            "dscore_gateway_leader_losses",
            "Times the leader the gateway followed failed a request (no answer, NOT_LEADER, stepped down)",
            value=self._leader_losses(),
        )
        yield _counter_by(
            "dscore_gateway_gathers",
            "Envelopes that waited to gather the requests of the clients their node had just answered, by "
            "how the wait ended (filled: as many came as were answered; expired: it ran out first)",
            "ended",
            self._gathers(),
        )


def _counter_by(name: str, documentation: str, label: str, counts: Mapping[str, int]) -> Metric:
    """A counter family with one sample per `counts` key (label value), in label order."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


class GatewayMetrics:
    """Every metric of one gateway (see the module doc and the README)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "dscore_gateway_requests",
            "HTTP requests answered, by operation and outcome (the error code of the body; ok on success)",
            ["operation", "outcome"],
            registry=r,
        )
        self.request_duration = Histogram(
            "dscore_gateway_request_duration_seconds",
            "Time from receiving an HTTP request to sending its answer, by operation",
            ["operation"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.in_flight = Gauge(
            "dscore_gateway_in_flight_requests", "HTTP requests being served now", registry=r
        )
        self.failover = Histogram(
            "dscore_failover_seconds",
            "Each gap between the last success before a leader loss and the first success after it, as "
            "the gateway's requests saw it",
            buckets=FAILOVER_BUCKETS_S,
            registry=r,
        )
        self.attempts = Counter(
            "dscore_gateway_node_attempts",
            "Requests sent to nodes (attempts: one HTTP request may need several), by node and the "
            "outcome of the attempt (a wire Outcome in lower case, or timeout)",
            ["node", "outcome"],
            registry=r,
        )
        self.registrations = Counter(
            "dscore_gateway_session_registrations",
            "Client sessions registered with the cluster (one log entry each)",
            registry=r,
        )
        self.idempotent_replays = Counter(
            "dscore_gateway_idempotent_replays",
            "Requests answered from the Idempotency-Key table (the first answer replayed)",
            registry=r,
        )
        self.silences = Counter(
            "dscore_gateway_node_silences",
            "Times a node was found silent (asked, and no answer to anything for silence_s): the attempts "
            "waiting on it were ended and went on elsewhere",
            ["node"],
            registry=r,
        )
        self.probes = Counter(
            "dscore_gateway_probes",
            "Background reads the gateway made to keep the leader known while idle, by outcome",
            ["outcome"],
            registry=r,
        )

    def watch(
        self,
        *,
        rejected: Callable[[], Mapping[str, int]],
        sessions: Callable[[], Mapping[str, int]],
        idempotency_keys: Callable[[], int],
        idempotency_evictions: Callable[[], int],
        leader_known: Callable[[], bool],
        leader_changes: Callable[[], int],
        leader_losses: Callable[[], int],
        gathers: Callable[[], Mapping[str, int]],
    ) -> None:
        self.registry.register(
            _LiveValues(
                rejected=rejected,
                sessions=sessions,
                idempotency_keys=idempotency_keys,
                idempotency_evictions=idempotency_evictions,
                leader_known=leader_known,
                leader_changes=leader_changes,
                leader_losses=leader_losses,
                gathers=gathers,
            )
        )
