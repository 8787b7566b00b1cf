"""The `power_loss` fault: a node loses power while a write is in flight (during its fsync).

The write is lost, the node is down, and what it handed the network before the write began has left. With
the `Ready` order (persist, then send) that is only replies about durable state, and a leader's appends
that its core vouched for (`Work.send_during_write`); an executor that sends its protocol messages first
(`send_before_persist`), or a core that vouches for a follower's (`early_send_beyond_leader`), lets an
acknowledgement escape that the restarted follower no longer holds, and Raft's "acknowledged is durable"
invariant catches the leader counting it.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import replace

import pytest

from dscore.core.envelope import Envelope
from dscore.core.errors import ConfigError
from dscore.protocols.contract import DurableState
from dscore.replica.executor import Executor, Work
from dscore.sim import FaultPlan, run_simulation
from dscore.sim.host import SimNode
from dscore.sim.planted import default_swarm, run_planted
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


class LastWork(Executor):
    """Remembers the `Work` it handed out last (the one a power loss interrupts)."""

    last: Work | None = None

    def poll(self) -> Work | None:
        self.last = work = super().poll()
        return work


class LeaderLossSimulation(WatchedSimulation):
    """Also records, for each power loss, whether the interrupted Work's messages had already left (a
    leader's appends, `Work.send_during_write`) and how many they were."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, make_executor=LastWork, **kwargs)
        #: per power loss of a `send_during_write` Work: (its messages, how many of them had left)
        self.early_losses: list[tuple[int, int]] = []
        self._recent: dict[str, deque[bytes]] = {}

    def transmit(self, source: str, destination: str, data: bytes, envelope: Envelope | None) -> None:
        self._recent.setdefault(source, deque(maxlen=1_000)).append(data)
        super().transmit(source, destination, data, envelope)

    def power_fails(self, node: SimNode) -> bool:
        fails = super().power_fails(node)
        work = node.executor.last if isinstance(node.executor, LastWork) else None
        if fails and work is not None and work.send_during_write:
            recent = set(self._recent.get(node.node_id, ()))
            self.early_losses.append((len(work.messages), sum(f.data in recent for f in work.messages)))
        return fails


def test_a_leader_that_loses_power_after_its_appends_left_loses_nothing_committed() -> None:
    """The simulator carries out a leader's `send_during_write` Work in the order worst for it: its
    appends leave, then the write runs, so a power loss lands between. The leader counted nothing of
    its own copy yet (it does at `advance`), so every check still holds."""
    early = 0
    for seed in range(12):
        config = swarm(seed, "raft", nodes=5, duration_ticks=400, fault_kinds=POWER_LOSS)
        sim = LeaderLossSimulation(config, get_protocol("raft"))
        result = sim.run()
        assert result.ok, result.failure
        early += len(sim.early_losses)
        assert all(0 < left == count for count, left in sim.early_losses), sim.early_losses
    assert early >= 3  # the case happened, more than once


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


def test_early_send_beyond_leader_is_caught_from_its_seed() -> None:
    """A Raft core that vouches for every Ready's messages (votes and acknowledgements too) is caught by
    the default swarm on its first seed; the correct core passes the same seed."""
    result = run_planted("early_send_beyond_leader", default_swarm(1))
    assert result.failure is not None and "acknowledged is durable" in result.failure
    assert run_simulation(config=default_swarm(1)).ok


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
