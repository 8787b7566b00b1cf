"""Telling a stuck Kafka client from a slow one (no I/O: the caller passes the time and what it saw).

A client library that owes progress (records in flight without an acknowledgement; an inbox holding
records the consumer has not fetched) and makes none for a bound longer than every timeout it was given
is stuck. A node's librdkafka consumer was seen to hand nothing over for two minutes after a broker
restart (the end-to-end broker-restart test), and a client's own timeouts hold only as long as its state
machine does (aiokafka #1017). The transport replaces such a client (counted in
`KafkaTransportStats.producer_restarts` / `consumer_restarts`) instead of trusting it forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ProgressWatch:
    """Says when progress was owed and none was made for at least `bound_s`."""

    bound_s: float
    #: the progress count seen last, and since when it has not moved while owed (None: nothing owed)
    _progress: int = field(default=0, init=False)
    _since_s: float | None = field(default=None, init=False)

    def stalled(self, now_s: float, progress: int, owed: bool) -> bool:
        """Observe: `progress` is a count that moves whenever the client makes any (records
        acknowledged or failed, records fetched); `owed` says whether it should be making some now."""
        if not owed:
            self._since_s = None
            return False
        if self._since_s is None or progress != self._progress:
            self._progress = progress
            self._since_s = now_s
            return False
        return now_s - self._since_s >= self.bound_s

    def forget(self) -> None:
        """Start over (the client was replaced, or it owes nothing for now)."""
        self._since_s = None
