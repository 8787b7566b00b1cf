"""`SimConfig.replay_on_restart`: a restarted node is handed again what it received after its stored input
position, before anything new, as a transport's retained inbox does (Kafka, the memory transport).

The default swarm leaves it off (turning it on would change every seed's run). Here it is on: the
correct code passes, and the planted `replay_served_as_new` (a request read again served or refused as if
new) is caught. That is the hole a leader's early appends open (`Work.send_during_write`): its request's
input position was in the write a crash lost, while the entry reached the others."""

from __future__ import annotations

from dataclasses import replace

from dscore.sim.planted import default_swarm, run_planted
from dscore.sim.registry import get_protocol, run_simulation
from dscore.sim.simulator import Simulation

#: the first default-swarm seed on which the planted bug is caught (replay on); see test_sim_planted.py
FIRST_CATCH = 59


def test_restarted_nodes_are_handed_their_inputs_again_and_every_check_holds() -> None:
    replayed = 0
    unknown = 0
    for seed in range(12):
        config = replace(default_swarm(seed), replay_on_restart=True)
        sim = Simulation(config, get_protocol("raft"))
        result = sim.run()
        assert result.ok, result.failure
        replayed += sum(node.replayed for node in sim.nodes.values())
        unknown += sum(
            node.executor.replayed_requests for node in sim.nodes.values() if node.executor is not None
        )
    assert replayed > 100  # restarts happened, and they were handed their inputs again
    assert unknown > 0  # among them client requests, answered UNKNOWN


def test_replay_served_as_new_is_caught_from_its_seed() -> None:
    config = default_swarm(FIRST_CATCH)
    result = run_planted("replay_served_as_new", config)  # turns replay on: the bug needs it
    assert result.config.replay_on_restart
    assert result.failure is not None and "NOT_LINEARIZABLE" in result.failure
    assert run_simulation(config=replace(config, replay_on_restart=True)).ok
