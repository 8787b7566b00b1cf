"""The `power_loss` fault: a node loses power while a write is in flight (during its fsync).

The write is lost, the node is down, and what it handed the network before the write began has left. With
the `Ready` order (persist, then send) that is only replies about durable state; an executor that sends
its protocol messages first (`send_before_persist`) lets an acknowledgement escape that the restarted
follower no longer holds, and Raft's "acknowledged is durable" invariant catches the leader counting it.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from dscore.core.envelope import Envelope
from dscore.core.errors import ConfigError
from dscore.protocols.contract import DurableState
from dscore.sim import FaultPlan, run_simulation
from dscore.sim.host import SimNode
from dscore.sim.planted import run_planted
from dscore.sim.registry import get_protocol, swarm
from dscore.sim.simulator import Simulation

POWER_LOSS = ("power_loss",)


class WatchedSimulation(Simulation):
    """Records, for each power loss, the durable image before the lost write and what the node sent
    between the loss and its crash."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.failing: dict[str, DurableState] = {}
        self.losses: list[tuple[str, bool, int]] = []  # (node, image unchanged, frames sent meanwhile)
        self._sent_meanwhile: dict[str, int] = {}

    def power_fails(self, node: SimNode) -> bool:
        fails = super().power_fails(node)
        if fails:
            self.failing[node.node_id] = node.durable
            self._sent_meanwhile[node.node_id] = 0
        return fails

    def transmit(self, source: str, destination: str, data: bytes, envelope: Envelope | None) -> None:
        if source in self._sent_meanwhile:
            self._sent_meanwhile[source] += 1
        super().transmit(source, destination, data, envelope)

    def crashed_mid_work(self, node: SimNode, point: str) -> None:
        if point == "fsync":
            before = self.failing.pop(node.node_id)
            sent = self._sent_meanwhile.pop(node.node_id)
            self.losses.append((node.node_id, node.durable is before, sent))
        super().crashed_mid_work(node, point)


def test_a_power_loss_loses_the_write_in_flight_and_sends_nothing_after_it() -> None:
    config = swarm(5, "raft", nodes=5, duration_ticks=400, fault_kinds=POWER_LOSS, keep_trace=True)
    sim = WatchedSimulation(config, get_protocol("raft"))
    result = sim.run()
    assert result.ok, result.failure
    assert result.stats.power_losses == len(sim.losses) > 3
    assert result.stats.crashes == result.stats.power_losses  # no other fault is on
    # The durable image is the one from before the write, and the Work's messages never left.
    assert all(unchanged and sent == 0 for _, unchanged, sent in sim.losses), sim.losses
    assert sum(" power-loss " in line for line in result.trace) == len(sim.losses)
    assert result.trace[-1].endswith("converged")


def test_turning_power_loss_on_changes_no_other_draw() -> None:
    for seed in range(20):
        kinds = ("crash", "partition", "omission", "flaky_leader")
        without = FaultPlan.draw(random.Random(seed), kinds)
        with_it = FaultPlan.draw(random.Random(seed), (*kinds, "power_loss"))
        assert with_it.enabled == (*without.enabled, "power_loss")
        assert replace(with_it, power_loss_probability=0.0) == without
    # The swarm switches it on for about half the seeds, after every earlier kind's draws.
    on = sum("power_loss" in swarm(seed, "raft").faults.enabled for seed in range(200))
    assert 60 < on < 140


def test_send_before_persist_is_exposed_by_power_loss_and_replays_from_its_seed() -> None:
    for seed in range(10):
        config = swarm(seed, "raft", nodes=5, duration_ticks=400, fault_kinds=POWER_LOSS)
        result = run_planted("send_before_persist", config)
        if not result.ok:
            break
    else:
        raise AssertionError("send_before_persist survived 10 seeds of power losses")
    assert result.failure is not None and result.failure.startswith(f"seed={seed} protocol=raft")
    assert "acknowledged is durable" in result.failure
    again = run_planted("send_before_persist", config)
    assert (again.failure, again.trace_digest) == (result.failure, result.trace_digest)
    # The power loss is what exposes it: the same run without it passes, and so does the correct executor.
    calm = replace(config, faults=replace(config.faults, power_loss_probability=0.0))
    assert run_planted("send_before_persist", calm).ok
    assert run_simulation(config=config).ok


def test_power_loss_is_validated() -> None:
    with pytest.raises(ConfigError):
        FaultPlan(power_loss_probability=1.5)
    assert FaultPlan(power_loss_probability=0.01).enabled == ("power_loss",)
