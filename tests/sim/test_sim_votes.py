"""Votes are durable: every vote that elected a Raft leader is in its voter's stable storage when the leader
takes office (`dscore.sim.raft_invariants.check_votes_are_durable`). The planted `vote_not_persisted` (a
node writes the term of a vote it grants but not the vote) breaks exactly that rule; "one leader per term"
would see it only after a crash between two candidates' requests (no default seed of 0..199 did), the new
check at the first election."""

from __future__ import annotations

from dscore.sim.planted import default_swarm, replay_command, run_planted
from dscore.sim.registry import run_simulation

#: the first seed of the default swarm (see tests/sim/test_sim_planted.py for the 200-seed sweep)
SEED = 0


def test_a_vote_that_never_reached_storage_is_caught_when_its_leader_takes_office() -> None:
    config = default_swarm(SEED)
    broken = run_planted("vote_not_persisted", config)
    replay = replay_command("vote_not_persisted", SEED)
    assert not broken.ok, f"a forgotten vote elected a leader unnoticed; replay: {replay}"
    assert "votes are durable" in str(broken.failure), f"{broken.failure}\nreplay: {replay}"
    correct = run_simulation(config=config)
    assert correct.ok, f"{correct.failure}\nreplay: dscore sim --protocol raft --seed {SEED} -v"
