"""Every fault model of the seed (3.1) is really injected, and the sequencer survives each one."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dscore.sim import FAULT_KINDS, FaultPlan, SimConfig, SimStats, run_simulation
from dscore.sim.config import ConfigError


def happened(kind: str, stats: SimStats) -> bool:
    return {
        "crash": stats.crashes > 0 and stats.restarts >= stats.crashes,
        "omission": stats.dropped_omission > 0,
        "timing": stats.delayed > 0,
        "pause": stats.pauses > 0,
        "duplication": stats.duplicated > 0,
        "partition": stats.partitions > 0 and stats.dropped_partition > 0,
        "corruption": stats.corrupted > 0 and stats.decode_errors > 0,
        "flaky_leader": stats.leader_isolations > 0 and stats.dropped_partition > 0,
        "power_loss": stats.power_losses > 0 and stats.restarts >= stats.crashes,
    }[kind]


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_kind_happens_and_the_run_still_passes(kind: str) -> None:
    for seed in range(5):
        result = run_simulation("sequencer", seed, nodes=3, duration_ticks=400, fault_kinds=(kind,))
        assert result.ok, result.failure
        assert result.config.faults.enabled == (kind,)
        if happened(kind, result.stats):
            assert result.verdict == "LINEARIZABLE"
            return
    pytest.fail(f"{kind} never happened in 5 seeds")


def test_the_sequencer_itself_crashes_and_progress_resumes_after_restart() -> None:
    plan = FaultPlan(crash_interval_ticks=10, crash_down_ticks=(5, 30), max_down=2)
    config = replace(SimConfig(seed=2, nodes=3, duration_ticks=400, faults=plan), keep_trace=True)
    result = run_simulation(config=config)
    assert result.ok, result.failure
    assert any(" crash n0 " in f"{line} " for line in result.trace)
    assert result.stats.ops_ok > 20
    # Faults stop, every node restarts, then the cluster converges (the liveness check).
    tail = result.trace[-1]
    assert tail.endswith("converged")


def test_dedup_filter_drops_duplicates() -> None:
    plan = FaultPlan(duplicate_probability=0.3)
    result = run_simulation(config=SimConfig(seed=1, nodes=3, duration_ticks=300, faults=plan, dedup=True))
    assert result.ok, result.failure
    assert result.stats.duplicated > 0 and result.stats.dedup_dropped > 0


def test_swarm_draws_subsets_and_all_kinds_over_seeds() -> None:
    plans = [SimConfig.swarm(seed).faults for seed in range(40)]
    sizes = {len(plan.enabled) for plan in plans}
    assert 0 in sizes or 1 in sizes
    assert max(sizes) >= 5
    assert {kind for plan in plans for kind in plan.enabled} == set(FAULT_KINDS)


def test_fault_plans_are_validated() -> None:
    with pytest.raises(ConfigError):
        FaultPlan(drop_probability=1.5)
    with pytest.raises(ConfigError):
        FaultPlan(crash_down_ticks=(5, 1))
    with pytest.raises(ConfigError):
        SimConfig.swarm(1, fault_kinds=("meteor",))
    assert FaultPlan.none().enabled == ()
