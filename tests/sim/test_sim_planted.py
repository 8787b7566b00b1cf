"""The catalogue of planted bugs (`dscore.sim.planted`, `dscore sim --plant list`): each must be caught by
the default swarm of `dscore sim --protocol raft` within 200 seeds (`make test-slow`). Every catch prints
its seed and the command that replays it; a bug that survives 200 seeds fails the test, since then the
simulator no longer explores what that bug needs (a setting, a fault, a workload)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dscore.sim.planted import PLANTED, default_swarm, first_catch, replay_command, run_planted
from dscore.sim.registry import run_simulation

SEEDS = range(200)


#: planted bugs the default swarm does not catch within 200 seeds yet (strict: a catch fails the xfail, and
#: the bug then joins the rest). Empty since the `power_loss` fault exposed send_before_persist.
NOT_YET_CAUGHT: set[str] = set()


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(strict=True, reason="not caught within 200 default seeds")
            if name in NOT_YET_CAUGHT
            else (),
        )
        for name in PLANTED
    ],
)
def test_each_planted_bug_is_caught_by_the_default_swarm_within_200_seeds(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    caught = first_catch(name, SEEDS)
    assert caught is not None, f"{name} survived seeds 0..199 of the default swarm: the checks missed it"
    with capsys.disabled():
        print(
            f"\n{name}: caught by seed {caught.seed}: {caught.failure}\n  replay: {replay_command(name, caught.seed)}"
        )
    # The catch is the bug's doing: the same run (replay on, if the bug turned it on) passes without it.
    assert run_simulation(config=caught.config).ok


def test_the_catalogue_lists_what_each_bug_breaks_and_how_to_replay_it() -> None:
    assert len(PLANTED) >= 10
    for name, bug in PLANTED.items():
        assert bug.protocol in ("raft", "paxos") and bug.description
        assert (bug.make_adapter is None) != (bug.make_executor is None), name
    assert replay_command("lease_too_long", 7) == (
        "dscore sim --protocol raft --seed 7 --plant lease_too_long --verbose"
    )
    # A short run of a Raft bug keeps the run's drawn settings (the adapter only swaps the core class).
    config = replace(default_swarm(0), duration_ticks=50)
    result = run_planted("lease_too_long", config)
    assert result.config.core_options == config.core_options and result.stats.ops_invoked > 0
