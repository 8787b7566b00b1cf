"""The simulator catches broken protocols, and says which seed shows it.

Each variant below breaks the sequencer in one way; each must fail with `seed=N` in the message.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from dscore.protocols.contract import ReadState, Ready
from dscore.protocols.sequencer import Fetch, SequencerCore
from dscore.sim import (
    FaultPlan,
    InvariantViolation,
    ProtocolAdapter,
    ReadMode,
    SimConfig,
    Simulation,
    SimulationFailure,
    run_simulation,
)
from dscore.sim.config import WorkloadConfig
from dscore.sim.sequencer_invariants import sequencer_invariants


def adapter(name: str, core: type[SequencerCore]) -> ProtocolAdapter:
    return ProtocolAdapter(name=name, make_core=core, make_invariants=sequencer_invariants)


class AppliesOnArrival(SequencerCore):
    """Replicas append whatever arrives next, ignoring its index (no reorder buffer)."""

    def _on_entry(self, index: int, data: bytes) -> None:
        if index > len(self._log):
            self._known_last = max(self._known_last, index)
            self._append(data)


class AppliesBeforePersisting(SequencerCore):
    """Hands entries to apply a Ready before handing them to persist."""

    def ready(self) -> Ready:
        ready = super().ready()
        if ready.entries and ready.committed and ready.committed[-1].index >= ready.entries[0].index:
            return replace(ready, entries=())
        return ready

    def advance(self, ready: Ready) -> None:
        super().advance(ready)
        if not ready.entries:
            self._stable_index = min(self._stable_index, len(self._log))


class AnnouncesBeforePersisting(SequencerCore):
    """Group commit done wrong: announces and applies at once, persists only on the next tick."""

    flush = False

    def tick(self) -> None:
        super().tick()
        self.flush = True

    def ready(self) -> Ready:
        ready = super().ready()
        if self.flush or not ready.entries:
            return replace(
                ready, committed=tuple(e for e in ready.committed if e.index <= self._stable_index)
            )
        return replace(
            ready, entries=(), committed=tuple(e for e in ready.committed if e.index <= self._stable_index)
        )

    def has_ready(self) -> bool:
        if self.flush:
            return super().has_ready()
        return bool(self._outbox or self._reads or self._applied_index < self._stable_index)

    def advance(self, ready: Ready) -> None:
        super().advance(ready)
        self.flush = False


class ReplicasReadLocally(SequencerCore):
    """Serves reads on every node at its own last index: stale reads on lagging replicas."""

    def read_index(self, request_id: int) -> None:
        self._reads.append(ReadState(request_id, len(self._log)))


class NeverRetransmits(SequencerCore):
    def _on_fetch(self, source: str, fetch: Fetch) -> None:
        return None


class ExplodesOnTick(SequencerCore):
    def tick(self) -> None:
        super().tick()
        if self._ticks == 30 and self.is_sequencer:
            raise RuntimeError("boom")


def swarm(seed: int, **overrides: object) -> SimConfig:
    return SimConfig.swarm(seed, nodes=3, duration_ticks=300, **overrides)


def test_out_of_order_apply_breaks_state_machine_safety() -> None:
    result = run_simulation(config=swarm(0), adapter=adapter("arrival", AppliesOnArrival))
    assert not result.ok
    assert result.failure is not None
    assert result.failure.startswith("seed=0 ")
    assert "state-machine safety" in result.failure


def test_applying_before_persisting_is_refused_by_the_host() -> None:
    result = run_simulation(config=swarm(1), adapter=adapter("early-apply", AppliesBeforePersisting))
    assert not result.ok
    assert "seed=1 " in (result.failure or "")
    assert "before persisting" in (result.failure or "")
    with pytest.raises(SimulationFailure, match="seed=1 "):
        result.raise_for_failure()


def test_announcing_before_persisting_loses_entries_when_the_sequencer_crashes() -> None:
    plan = FaultPlan(crash_interval_ticks=8, crash_down_ticks=(1, 5), max_down=1)
    failures = []
    for seed in range(10):
        config = SimConfig(seed=seed, nodes=3, duration_ticks=300, faults=plan)
        result = run_simulation(config=config, adapter=adapter("early-announce", AnnouncesBeforePersisting))
        if not result.ok:
            failures.append(result.failure or "")
    assert failures, "a crash between announcing and persisting never happened"
    assert all(f.startswith("seed=") for f in failures)
    assert any("persisted" in f or "state-machine safety" in f for f in failures), failures


def test_stale_replica_reads_are_caught_by_the_linearizability_check() -> None:
    verdicts = []
    for seed in range(20):
        config = swarm(seed)
        config = replace(
            config, workload=replace(config.workload, reads=ReadMode.READ_INDEX, leader_affinity=0.3)
        )
        result = run_simulation(config=config, adapter=adapter("local-reads", ReplicasReadLocally))
        if not result.ok:
            verdicts.append(result.failure or "")
    assert verdicts
    assert all(v.startswith("seed=") and "NOT_LINEARIZABLE" in v for v in verdicts)


def test_a_protocol_that_cannot_repair_gaps_fails_the_liveness_check() -> None:
    plan = FaultPlan(drop_probability=0.3)
    config = SimConfig(seed=3, nodes=3, duration_ticks=200, drain_max_ticks=300, faults=plan)
    result = run_simulation(config=config, adapter=adapter("no-retransmit", NeverRetransmits))
    assert not result.ok
    assert (result.failure or "").startswith("seed=3 ")
    assert "liveness" in (result.failure or "")


def test_an_exception_in_a_core_fails_the_run_with_its_seed_and_traceback() -> None:
    result = run_simulation(config=swarm(4), adapter=adapter("explodes", ExplodesOnTick))
    assert not result.ok
    assert (result.failure or "").startswith("seed=4 ")
    assert "RuntimeError" in (result.failure or "")
    assert "boom" in result.detail


def test_custom_invariant_hooks_run_after_every_event() -> None:
    calls = []

    def at_most_five_entries(sim: Simulation) -> None:
        calls.append(sim.now_us)
        if max(node.state_machine.applied_index for node in sim.nodes.values()) > 5:
            raise InvariantViolation("more than five entries applied")

    broken = ProtocolAdapter(
        name="capped", make_core=SequencerCore, make_invariants=lambda: (at_most_five_entries,)
    )
    result = run_simulation(config=swarm(6), adapter=broken)
    assert not result.ok
    assert (result.failure or "").startswith("seed=6 ")
    assert "invariant violated" in (result.failure or "") and "more than five entries" in (
        result.failure or ""
    )
    assert len(calls) > 5


def test_a_correct_run_reports_no_failure() -> None:
    result = run_simulation(config=replace(swarm(7), workload=WorkloadConfig(clients=2)))
    assert result.ok and result.failure is None and result.verdict == "LINEARIZABLE"
    result.raise_for_failure()
