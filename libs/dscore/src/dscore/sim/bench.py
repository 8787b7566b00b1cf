"""How fast the simulator runs: simulated seconds per wall-clock second.

`run_sim_bench` runs a protocol (the sequencer by default, 5 nodes, a client workload, no faults, sync
network, no linearizability check: this measures the simulator, not the checker) and, in the same
process and the same conditions, the `noop` protocol: the same nodes ticking with nothing to do, which is
the event loop's own cost. The ratio between the two says what the protocol and its workload cost on top
of the loop, and is comparable across machines where the absolute rates are not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dscore.sim.config import FaultPlan, NetworkConfig, NetworkModel, SimConfig
from dscore.sim.registry import run_simulation


@dataclass(frozen=True, slots=True)
class BenchRun:
    protocol: str
    nodes: int
    seeds: int
    sim_seconds: float
    wall_seconds: float
    events: int
    ops: int
    messages: int

    @property
    def sim_per_wall(self) -> float:
        return self.sim_seconds / self.wall_seconds if self.wall_seconds else float("inf")

    @property
    def events_per_second(self) -> float:
        return self.events / self.wall_seconds if self.wall_seconds else float("inf")


@dataclass(frozen=True, slots=True)
class SimBenchReport:
    subject: BenchRun
    baseline: BenchRun

    @property
    def ratio(self) -> float:
        """Subject speed as a fraction of the bare event loop's (1.0: the protocol costs nothing)."""
        return self.subject.sim_per_wall / self.baseline.sim_per_wall

    def format(self) -> str:
        lines = []
        for run in (self.subject, self.baseline):
            lines.append(
                f"{run.protocol:>10}: {run.nodes} nodes, {run.seeds} seeds, "
                f"{run.sim_seconds:.1f} simulated s in {run.wall_seconds:.2f} wall s = "
                f"{run.sim_per_wall:.1f} simulated s per wall s "
                f"({run.events_per_second:,.0f} events/s, {run.ops} ops, {run.messages} messages)"
            )
        lines.append(f"{self.subject.protocol} runs at {self.ratio:.3f} x the bare event loop's speed")
        return "\n".join(lines)


def _measure(protocol: str, nodes: int, duration_ticks: int, seeds: int, first_seed: int) -> BenchRun:
    sim_us = events = ops = messages = 0
    started = time.perf_counter()
    for seed in range(first_seed, first_seed + seeds):
        config = SimConfig(
            protocol=protocol,
            seed=seed,
            nodes=nodes,
            duration_ticks=duration_ticks,
            network=NetworkConfig(model=NetworkModel.SYNC),
            faults=FaultPlan.none(),
            check=False,
        )
        result = run_simulation(config=config)
        result.raise_for_failure()
        sim_us += result.stats.sim_time_us
        events += result.stats.events
        ops += result.stats.ops_invoked
        messages += result.stats.messages_sent
    wall = time.perf_counter() - started
    return BenchRun(protocol, nodes, seeds, sim_us / 1e6, wall, events, ops, messages)


def run_sim_bench(
    protocol: str = "sequencer",
    *,
    nodes: int = 5,
    duration_ticks: int = 2_000,
    seeds: int = 3,
    first_seed: int = 0,
    baseline: str = "noop",
) -> SimBenchReport:
    # Baseline first and subject second would favour the subject with a warm interpreter; run a short
    # warm-up of each so neither pays for imports and first-call costs.
    _measure(protocol, nodes, 50, 1, first_seed)
    _measure(baseline, nodes, 50, 1, first_seed)
    subject = _measure(protocol, nodes, duration_ticks, seeds, first_seed)
    base = _measure(baseline, nodes, duration_ticks, seeds, first_seed)
    return SimBenchReport(subject, base)
