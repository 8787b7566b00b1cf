"""Many seeds of the sequencer under swarm faults: every run must pass, every history is checked.

The fast sweep (200 seeds, 3 nodes, 3 simulated seconds each) runs in every `make test`; the slow ones
(`make test-slow`) run more and bigger clusters.
"""

from __future__ import annotations

from collections import Counter

import pytest

from dscore.sim import FAULT_KINDS, NetworkModel, ReadMode, SimResult, run_simulation


def sweep(seeds: range, **options: object) -> list[SimResult]:
    results = [run_simulation("sequencer", seed, **options) for seed in seeds]
    failures = [r.failure for r in results if not r.ok]
    assert not failures, "\n".join(f or "" for f in failures)
    return results


def test_200_seeds_of_the_sequencer_under_swarm_faults_are_linearizable() -> None:
    results = sweep(range(200), nodes=3, duration_ticks=300)
    assert all(r.verdict == "LINEARIZABLE" for r in results)
    # Every history was checked in full, not sampled.
    assert all(r.stats.ops_checked == r.stats.ops_invoked > 0 for r in results)
    # The sweep covered what it claims to cover.
    kinds = Counter(kind for r in results for kind in r.config.faults.enabled)
    assert set(kinds) == set(FAULT_KINDS)
    assert {r.config.network.model for r in results} == set(NetworkModel)
    assert {r.config.workload.reads for r in results} == set(ReadMode)
    assert sum(r.stats.ops_info for r in results) > 0  # indeterminate ops occurred
    assert sum(r.stats.ops_failed for r in results) > 0  # definite failures (cas mismatches) too
    assert sum(r.stats.crashes for r in results) > 50


def test_50_seeds_five_nodes() -> None:
    results = sweep(range(10_000, 10_050), nodes=5, duration_ticks=300)
    assert all(r.verdict == "LINEARIZABLE" for r in results)


@pytest.mark.slow
def test_2000_seeds_five_nodes() -> None:
    sweep(range(1000, 3000), nodes=5, duration_ticks=600)


@pytest.mark.slow
def test_long_runs_seven_nodes() -> None:
    sweep(range(5000, 5050), nodes=7, duration_ticks=3000)
