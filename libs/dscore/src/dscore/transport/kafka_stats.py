"""Counters of one Kafka endpoint, for the node's metrics (plain numbers; `dscore.metrics` exports them).

Send failure reasons (a fixed, small set: they become a metric label):

- `too_large`: the frame is larger than `max_record_bytes` (or the broker refused its size);
- `backpressure`: the in-flight bound (records or bytes) was reached, the frame was dropped at once;
- `send_timeout`: `send()` reached `send_timeout_s`, the rest of its batch was dropped;
- `delivery_timeout`: the broker did not acknowledge within `delivery_timeout_s` (the producer is then
  replaced);
- `producer_unavailable`: no producer (the broker is down and a new one is not connected yet);
- `unknown_destination`: the destination's inbox topic does not exist (metadata lookup failed);
- `parked_overflow`: too many frames waited for one destination's metadata lookup;
- `broker_error`: any other failure the client reported for a record.

A lost frame is a lost message: protocols retry. Nothing here ever raises into the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SEND_FAILURE_REASONS = (
    "too_large",
    "backpressure",
    "send_timeout",
    "delivery_timeout",
    "producer_unavailable",
    "unknown_destination",
    "parked_overflow",
    "broker_error",
)


@dataclass(slots=True)
class KafkaTransportStats:
    """What one endpoint did since it started."""

    #: records the broker acknowledged
    records_sent: int = 0
    #: value bytes of acknowledged records
    bytes_sent: int = 0
    #: frames that will never be delivered, by reason (see the module docstring)
    send_failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEND_FAILURE_REASONS, 0))
    #: records handed to the runtime
    records_received: int = 0
    #: value bytes handed to the runtime
    bytes_received: int = 0
    #: records whose value was null (delivered as empty bytes, rejected above)
    null_records_received: int = 0
    #: errors the consumer reported while fetching, by client error name (it retries by itself)
    receive_errors: dict[str, int] = field(default_factory=dict)
    #: records of the inbox that retention deleted before this endpoint read them (seen at start)
    records_expired_unread: int = 0
    #: producers replaced after a stuck delivery or a fatal producer error
    producer_restarts: int = 0
    #: consumers rebuilt because they fetched nothing while the inbox held unread records
    #: (`dscore.transport.stall`; the aiokafka transport never rebuilds its consumer)
    consumer_restarts: int = 0
    #: commits of Kafka offsets (the hint) that failed; the next one carries the newer position
    commit_failures: int = 0
    #: records delivered again after a restart: at or below the highest offset read before it, as the
    #: last commit's read mark recorded it (a lower bound; see `dscore.transport.kafka_common`)
    redelivered: int = 0
    #: records the inbox holds after the last one delivered (from the last fetch), per channel
    lag: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str, count: int = 1) -> None:
        failures = self.send_failures
        failures[reason] = failures.get(reason, 0) + count

    def receive_error(self, name: str) -> None:
        self.receive_errors[name] = self.receive_errors.get(name, 0) + 1

    @property
    def send_failures_total(self) -> int:
        return sum(self.send_failures.values())
