"""The simulated network: turns one send into zero, one or two timed deliveries.

Delays follow the run's `NetworkModel`; faults (omission, partitions and the flaky-leader cut, timing
spikes, duplication, corruption) apply only while `faults_active`. A partition or a cut blocks what is
sent while it holds; what is already in flight arrives. All randomness comes from the network's own
`random.Random`, so adding a client or a fault timer does not change any message's fate.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from dscore.sim.config import FaultPlan, NetworkConfig, NetworkModel


@dataclass(slots=True)
class NetworkStats:
    """Counters of what the network did (mutable: updated on every send)."""

    sent: int = 0
    delivered: int = 0
    dropped_omission: int = 0
    dropped_partition: int = 0
    dropped_down: int = 0
    duplicated: int = 0
    delayed: int = 0
    corrupted: int = 0
    max_delay_us: int = 0


@dataclass(frozen=True, slots=True)
class Partition:
    """Endpoints on `side_b` cannot exchange messages with the rest; if `one_way`, only messages from
    the rest to `side_b` are lost (the other direction still flows). Endpoints in `exempt` (clients,
    when only nodes are split) reach both sides."""

    side_b: frozenset[str]
    one_way: bool
    exempt: frozenset[str] = frozenset()

    def blocks(self, source: str, destination: str) -> bool:
        if source in self.exempt or destination in self.exempt:
            return False
        src_b = source in self.side_b
        if src_b == (destination in self.side_b):
            return False
        return not self.one_way or not src_b


@dataclass(frozen=True, slots=True)
class Isolation:
    """The flaky-leader cut: `node` cannot exchange messages with the nodes in `cut_from` (its other
    peers, and every client, still reach it). Counted with partition drops."""

    node: str
    cut_from: frozenset[str]

    def blocks(self, source: str, destination: str) -> bool:
        if source == self.node:
            return destination in self.cut_from
        return destination == self.node and source in self.cut_from


class SimNetwork:
    def __init__(
        self,
        config: NetworkConfig,
        plan: FaultPlan,
        rng: random.Random,
        endpoints: Sequence[str],
        gst_us: int,
    ) -> None:
        self.config = config
        self.plan = plan
        self.rng = rng
        self.gst_us = gst_us
        self.faults_active = bool(plan.enabled)
        self.partition: Partition | None = None
        self.isolation: Isolation | None = None
        self.stats = NetworkStats()
        # Per-link loss: some links are much worse than others, as in real networks.
        ordered = sorted(endpoints)
        self.link_drop: dict[tuple[str, str], float] = {
            (a, b): rng.uniform(0.0, plan.drop_probability) if plan.drop_probability else 0.0
            for a in ordered
            for b in ordered
            if a != b
        }

    def _tail_us(self) -> int:
        cfg = self.config
        extra = cfg.tail_scale_us * (self.rng.paretovariate(cfg.tail_alpha) - 1.0)
        return min(cfg.max_delay_us, cfg.min_delay_us + int(extra))

    def _bounded_us(self) -> int:
        return self.rng.randint(self.config.min_delay_us, self.config.delta_us)

    def delay_us(self, now_us: int) -> int:
        """One message's delay under the model alone (no faults)."""
        model = self.config.model
        if model is NetworkModel.SYNC:
            return self._bounded_us()
        if model is NetworkModel.ASYNC:
            return self._tail_us()
        if now_us >= self.gst_us:
            return self._bounded_us()
        # Before GST anything goes, but everything sent before GST arrives by GST + delta.
        return min(self._tail_us(), self.gst_us - now_us + self._bounded_us())

    def route(self, now_us: int, source: str, destination: str, data: bytes) -> list[tuple[int, bytes]]:
        """The deliveries of one send, as (delivery time, bytes); empty if the message is lost."""
        stats = self.stats
        stats.sent += 1
        if self.faults_active:
            if self.partition is not None and self.partition.blocks(source, destination):
                stats.dropped_partition += 1
                return []
            if self.isolation is not None and self.isolation.blocks(source, destination):
                stats.dropped_partition += 1
                return []
            drop = self.link_drop.get((source, destination), 0.0)
            if drop and self.rng.random() < drop:
                stats.dropped_omission += 1
                return []
            copies = 2 if self.rng.random() < self.plan.duplicate_probability else 1
        else:
            copies = 1
        out = []
        for _ in range(copies):
            delay = self.delay_us(now_us)
            payload = data
            if self.faults_active:
                if self.rng.random() < self.plan.delay_probability and self.plan.delay_extra_us:
                    delay += self.rng.randint(0, self.plan.delay_extra_us)
                    stats.delayed += 1
                if self.plan.corrupt_probability and self.rng.random() < self.plan.corrupt_probability:
                    payload = self._corrupt(data)
                    stats.corrupted += 1
            stats.max_delay_us = max(stats.max_delay_us, delay)
            out.append((now_us + delay, payload))
        if copies == 2:
            stats.duplicated += 1
        return out

    def _corrupt(self, data: bytes) -> bytes:
        position = self.rng.randrange(len(data))
        flipped = data[position] ^ (1 << self.rng.randrange(8))
        return data[:position] + bytes((flipped,)) + data[position + 1 :]
