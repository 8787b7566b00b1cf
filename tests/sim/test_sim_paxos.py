"""Multi-Paxos in the simulator: a fixed set of 500 seeds across swarm fault mixes, every invariant checked
after every event (at most one value chosen per slot, judged from the acceptors' durable state; state-
machine safety) and every client history checked for linearizability; and the planted "accepting without
a quorum" variant, which these checks must catch with the seed that replays it.

Simulated duration: 200 ticks per seed keeps the 500 seeds near 47 s of CPU on this machine class
(measured: `/usr/bin/time pytest tests/sim/test_sim_paxos.py -k swarm_seeds`: 46.6 s user, 2.6 s sys);
faults stop at 80% of the run and every client operation must be checked, so each seed also shows the
cluster recovering.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from dscore.core.errors import ConfigError
from dscore.protocols.paxos import PaxosNode
from dscore.replica.executor import ChangeRejectedError, Executor
from dscore.sim import FAULT_KINDS, NetworkModel, SimResult, run_simulation
from dscore.sim.planted import planted
from dscore.sim.registry import get_protocol, paxos_config, swarm
from dscore.sim.simulator import Simulation
from dscore.statemachine.kv import KvStateMachine

SEEDS_PER_CHUNK = 25
CHUNKS = 20  # 500 seeds in all
DURATION_TICKS = 200


def chunk_seeds(chunk: int) -> range:
    return range(chunk * SEEDS_PER_CHUNK, (chunk + 1) * SEEDS_PER_CHUNK)


def nodes_for(chunk: int) -> int:
    return 3 if chunk % 2 == 0 else 5


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_paxos_swarm_seeds_are_safe_and_linearizable(chunk: int) -> None:
    results = [
        run_simulation("paxos", seed, nodes=nodes_for(chunk), duration_ticks=DURATION_TICKS)
        for seed in chunk_seeds(chunk)
    ]
    failures = [r.failure for r in results if not r.ok]
    assert not failures, "\n".join(f or "" for f in failures)
    assert all(r.verdict == "LINEARIZABLE" for r in results)
    assert all(r.stats.ops_checked == r.stats.ops_invoked > 0 for r in results)


def test_the_fixed_paxos_seeds_cover_every_fault_and_network_model() -> None:
    configs = [
        swarm(seed, "paxos", nodes=nodes_for(seed // SEEDS_PER_CHUNK))
        for seed in range(CHUNKS * SEEDS_PER_CHUNK)
    ]
    kinds = Counter(kind for c in configs for kind in c.faults.enabled)
    assert set(kinds) == set(FAULT_KINDS)
    assert min(kinds.values()) > 100
    assert {c.network.model for c in configs} == set(NetworkModel)
    assert sum(1 for c in configs if c.snapshot_every_entries) > 100
    # Paxos's own settings are drawn too: one-entry messages and a window of one slot.
    assert sum(1 for c in configs if dict(c.core_options).get("max_entries_per_msg") == 1) > 50
    assert sum(1 for c in configs if dict(c.core_options).get("window_slots") == 1) > 25
    assert sum(1 for c in configs if not c.core_options) > 150


def test_drawn_paxos_settings_reach_every_core_and_bad_ones_are_refused() -> None:
    config = swarm(0, "paxos", nodes=3, duration_ticks=50)
    config = replace(config, core_options=(("max_entries_per_msg", 1), ("window_slots", 4)))
    sim = Simulation(config, get_protocol("paxos"))
    sim.run()
    cores = [node.core for node in sim.nodes.values() if isinstance(node.core, PaxosNode)]
    assert cores and all((c.config.max_entries_per_msg, c.config.window_slots) == (1, 4) for c in cores)
    with pytest.raises(ConfigError, match="unknown paxos settings: window"):
        paxos_config({"window": 1})
    with pytest.raises(ConfigError, match="max_open_slots"):
        paxos_config({"window_slots": 512})


def test_paxos_is_registered_with_its_invariants() -> None:
    adapter = get_protocol("paxos")
    names = {type(inv).__name__ for inv in adapter.make_invariants()}
    assert {"StateMachineSafety", "PaxosSafety"} <= names


def test_snapshots_and_catch_up_happen_in_the_sweep() -> None:
    # Not only possible: the seeds above install snapshots on lagging replicas and catch up by Learn.
    totals: Counter[str] = Counter()
    for seed in chunk_seeds(0):
        config = swarm(seed, "paxos", nodes=3, duration_ticks=DURATION_TICKS)
        sim = Simulation(config, get_protocol("paxos"))
        assert sim.run().ok
        for node in sim.nodes.values():
            if isinstance(node.core, PaxosNode):
                totals.update(node.core.counters)
    assert totals["snapshot_installed"] > 0 and totals["catch_up_requested"] > 0
    assert totals["preempted"] + totals["phase1_won"] > 0


def test_the_executor_refuses_membership_changes_for_paxos_with_a_clear_error() -> None:
    core = PaxosNode.factory()("a", ("b", "c"), __import__("random").Random(0), None)
    executor = Executor("a", core, KvStateMachine(), members=("a", "b", "c"))
    with pytest.raises(ChangeRejectedError, match=r"PaxosNode.*no membership changes"):
        executor.request_change("add d", lambda c: c.add_voter("d"))


def first_failure(seeds: range, nodes: int) -> SimResult:
    bug = planted("paxos_accept_without_quorum")
    for seed in seeds:
        result = run_simulation(
            "paxos", seed, adapter=bug.make_adapter(), nodes=nodes, duration_ticks=DURATION_TICKS
        )
        if not result.ok:
            return result
    pytest.fail(
        f"accepting without a quorum survived seeds {seeds.start}..{seeds.stop - 1}: the checks missed it"
    )


@pytest.mark.parametrize("nodes", [3, 5])
def test_paxos_accepting_without_a_quorum_is_caught_with_its_seed(nodes: int) -> None:
    result = first_failure(range(40), nodes)
    assert result.failure is not None
    assert result.failure.startswith(f"seed={result.seed} protocol=paxos")
    assert "invariant violated" in result.failure or "NOT_LINEARIZABLE" in result.failure
    # The same seed replays the same failure, and the correct Paxos passes it.
    bug = planted("paxos_accept_without_quorum")
    again = run_simulation(
        "paxos", result.seed, adapter=bug.make_adapter(), nodes=nodes, duration_ticks=DURATION_TICKS
    )
    assert (again.failure, again.trace_digest) == (result.failure, result.trace_digest)
    assert run_simulation("paxos", result.seed, nodes=nodes, duration_ticks=DURATION_TICKS).ok


def test_dscore_sim_runs_paxos_and_its_planted_bug_names_the_seed_to_replay(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import argparse

    from dscore.sim.cli import add_sim_parser, run_sim

    def run(*argv: str) -> tuple[int, str]:
        parser = argparse.ArgumentParser(prog="dscore")
        add_sim_parser(parser.add_subparsers(dest="command"))
        code = run_sim(parser.parse_args(["sim", "--protocol", "paxos", *argv]))
        return code, capsys.readouterr().out

    code, out = run("--seeds", "3", "--nodes", "3", "--duration-ticks", "150")
    assert code == 0 and "failed" in out
    code, out = run(
        "--seeds", "3", "--nodes", "3", "--duration-ticks", "200", "--plant", "paxos_accept_without_quorum"
    )
    assert code == 1
    replay = out.split("replay one with: ")[1].split()
    assert replay[:3] == ["dscore", "sim", "--protocol"] and "--plant" in replay
    seed = replay[replay.index("--seed") + 1]
    code, again = run(
        "--seed", seed, "--nodes", "3", "--duration-ticks", "200", "--plant", "paxos_accept_without_quorum"
    )
    assert code == 1 and f"FAIL seed={seed} protocol=paxos" in again
    assert run("--seed", "1", "--plant", "apply_before_persist")[0] == 2  # a raft bug, not a paxos one


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(CHUNKS, 5 * CHUNKS))
def test_more_paxos_seeds_for_longer(chunk: int) -> None:
    # `make test-slow`: 2000 further seeds, each 500 ticks long (2.5 times the `make test` runs).
    results = [
        run_simulation("paxos", seed, nodes=nodes_for(chunk), duration_ticks=500)
        for seed in chunk_seeds(chunk)
    ]
    failures = [r.failure for r in results if not r.ok]
    assert not failures, "\n".join(f or "" for f in failures)
    assert all(
        r.verdict == "LINEARIZABLE" and r.stats.ops_checked == r.stats.ops_invoked > 0 for r in results
    )


@pytest.mark.parametrize("nodes", [3, 5])
def test_paxos_safety_alone_catches_choosing_without_a_quorum(nodes: int) -> None:
    # The Paxos invariant by itself (no state-machine safety, no linearizability check): a value taken as
    # chosen that no majority accepted, or two values chosen at one slot, from the durable states alone.
    from dscore.sim.adapter import ProtocolAdapter
    from dscore.sim.paxos_invariants import PaxosSafety
    from dscore.sim.planted import AcceptWithoutQuorum

    adapter = ProtocolAdapter(
        name="paxos", make_core=AcceptWithoutQuorum.factory(), make_invariants=lambda: (PaxosSafety(),)
    )
    for seed in range(40):
        result = run_simulation(
            "paxos", seed, adapter=adapter, nodes=nodes, duration_ticks=DURATION_TICKS, check=False
        )
        if not result.ok:
            assert result.failure is not None and "invariant violated" in result.failure
            assert "paxos: two values" in result.failure
            return
    pytest.fail("PaxosSafety missed a Paxos that chooses without a majority")
