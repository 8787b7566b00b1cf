"""PBFT in the simulator: 500 fixed seeds under swarm faults, Byzantine replicas included (every invariant
after every event, every client history checked for linearizability, liveness once faults end); broken
PBFTs caught with the seed that replays them; Raft breaking under one Byzantine replica where PBFT holds,
and PBFT with n = 3f breaking.

Replay any seed named here with the command the failure prints, e.g.
`dscore sim --protocol pbft --seed 7 --nodes 4 --duration-ticks 150 --faults swarm --verbose`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from dscore.protocols.pbft import PbftConfig, PbftNode
from dscore.sim import FAULT_KINDS, NetworkModel, SimResult, run_simulation
from dscore.sim.adapter import ProtocolAdapter
from dscore.sim.byzantine import BYZANTINE_KINDS, ByzantineCore
from dscore.sim.invariants import generic_invariants
from dscore.sim.registry import get_protocol, pbft_config, swarm
from dscore.sim.simulator import Simulation
from dscore.statemachine.kv import valid_batch

SEEDS_PER_CHUNK = 25
CHUNKS = 20  # 500 seeds in all
#: simulated ticks per seed: faults (Byzantine ones too) for 80% of it, then the fault-free tail
DURATION_TICKS = 150


def nodes_of(chunk: int) -> int:
    return 7 if chunk in (5, 15) else 4  # two chunks with f = 2: colluding Byzantine replicas


def chunk_seeds(chunk: int) -> range:
    return range(chunk * SEEDS_PER_CHUNK, (chunk + 1) * SEEDS_PER_CHUNK)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_pbft_swarm_seeds_are_safe_live_and_linearizable(chunk: int) -> None:
    nodes = nodes_of(chunk)
    results = [
        run_simulation("pbft", seed, nodes=nodes, duration_ticks=DURATION_TICKS)
        for seed in chunk_seeds(chunk)
    ]
    failures = [r.failure for r in results if not r.ok]
    assert not failures, "\n".join(f or "" for f in failures)
    assert all(r.verdict == "LINEARIZABLE" for r in results)
    assert all(r.stats.ops_checked == r.stats.ops_invoked > 0 for r in results)


#: seeds outside the sweep that once failed, each with what it caught (replay: the command in the module
#: docstring with the seed and node count)
REGRESSION_SEEDS = {
    # n1 became primary of view 1, its NEW-VIEW was lost (leader isolation), it crashed and came back with
    # neither the NEW-VIEW nor its VIEW-CHANGE (kept in memory only); n2 and n3 restarted in view 1 with
    # each other's VIEW-CHANGE alone, so their timer (2f + 1 VIEW-CHANGE messages for the view) never
    # ran, and n0 sat in view 2 alone: clients waited forever once faults ended. Fixed by persisting
    # both messages and by counting replicas that moved past the view towards the timer's quorum.
    933: 4,
}


@pytest.mark.parametrize("seed", sorted(REGRESSION_SEEDS))
def test_pbft_regression_seeds_are_safe_live_and_linearizable(seed: int) -> None:
    result = run_simulation("pbft", seed, nodes=REGRESSION_SEEDS[seed], duration_ticks=DURATION_TICKS)
    assert result.ok, result.failure
    assert result.verdict == "LINEARIZABLE"
    assert result.stats.ops_checked == result.stats.ops_invoked > 0


def test_the_fixed_seeds_cover_every_fault_byzantine_kind_and_network_model() -> None:
    configs = [
        swarm(seed, "pbft", nodes=nodes_of(seed // SEEDS_PER_CHUNK), duration_ticks=DURATION_TICKS)
        for seed in range(CHUNKS * SEEDS_PER_CHUNK)
    ]
    kinds = Counter(kind for c in configs for kind in c.faults.enabled)
    assert set(kinds) == set(FAULT_KINDS)
    assert min(kinds.values()) > 100
    byzantine = Counter(kind for c in configs for kind in c.byzantine.enabled)
    assert set(byzantine) == set(BYZANTINE_KINDS)
    assert min(byzantine.values()) > 150
    assert all(c.byzantine.kinds for c in configs)  # every seed has a Byzantine replica
    assert {c.network.model for c in configs} == set(NetworkModel)
    # PBFT's own settings are drawn too: checkpoints every 2, 4 or 8 requests, windows of 2 or 3 of them.
    assert {dict(c.core_options)["checkpoint_interval"] for c in configs} == {2, 4, 8}
    assert {dict(c.core_options)["log_size_checkpoints"] for c in configs} == {2, 3}


def _simulate(seed: int, **options: object) -> Simulation:
    config = swarm(seed, "pbft", nodes=4, duration_ticks=DURATION_TICKS, **options)
    sim = Simulation(config, get_protocol("pbft"))
    sim.run()
    return sim


def test_byzantine_replicas_lie_and_correct_ones_reject_what_they_cannot_authenticate() -> None:
    # Section 3 of the paper: a faulty replica cannot forge a correct one's MACs. Seeds with every
    # Byzantine kind: the liar acts, the correct replicas count forged frames as unauthenticated, and the
    # run still passes (checked by the sweep above for the swarm; here for the full set of kinds).
    actions: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    for seed in range(6):
        sim = _simulate(seed, fault_kinds=("byzantine",))
        result_ok = all(node.core is not None for node in sim.nodes.values())
        assert result_ok
        for node_id, node in sim.nodes.items():
            core = node.core
            if node_id in sim.byzantine:
                assert isinstance(core, ByzantineCore)
                actions.update(core.actions)
            else:
                assert isinstance(core, PbftNode)
                rejected.update(core.counters.dropped)
    assert {"equivocate", "forge", "replay", "corrupt_payload", "silence", "lie"} <= set(actions)
    assert rejected["unauthenticated"] > 0
    for seed in range(6):
        result = run_simulation(
            "pbft", seed, nodes=4, duration_ticks=DURATION_TICKS, fault_kinds=("byzantine",)
        )
        assert result.ok, result.failure


def adapter_for(config: PbftConfig, name: str = "pbft") -> ProtocolAdapter:
    """The registered PBFT adapter, with a broken setting forced on every run (drawn ones kept)."""
    base = get_protocol("pbft")
    forced = {
        name: getattr(config, name)
        for name in ("quorum_override", "view_change_keeps_prepared", "faults_tolerated")
        if getattr(config, name) != getattr(PbftConfig(), name)
    }
    adapter = replace(
        base,
        name=name,
        configure_keyed=lambda options, secret: PbftNode.factory(
            replace(pbft_config(options), **forced), secret=secret, valid_request=valid_batch
        ),
    )
    claimed = config.faults_tolerated
    if claimed is not None:  # clients and the Byzantine count follow the f the replicas claim
        adapter = replace(adapter, tolerated=lambda n, o: claimed, reply_quorum=lambda n, o: claimed + 1)
    return adapter


def first_failure(adapter: ProtocolAdapter, seeds: range, **options: object) -> SimResult:
    for seed in seeds:
        result = run_simulation(
            "pbft",
            seed,
            adapter=adapter,
            duration_ticks=DURATION_TICKS,
            **options,  # type: ignore[arg-type]
        )
        if not result.ok:
            return result
    pytest.fail(f"survived seeds {seeds.start}..{seeds.stop - 1}: the checks missed the bug")


#: planted bugs (the issue's section 6): each is searched for in seeds 0..59 of the default PBFT swarm
#: (Byzantine replicas included); the first failing seed is replayed and passed by the correct PBFT
PLANTED = {
    "quorums_of_2f": PbftConfig(quorum_override=2),
    "view_change_drops_prepared": PbftConfig(view_change_keeps_prepared=False),
}


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_a_broken_pbft_is_caught_with_the_seed_that_replays_it(bug: str) -> None:
    adapter = adapter_for(PLANTED[bug])
    result = first_failure(adapter, range(0, 60), nodes=4)
    assert result.failure is not None
    assert result.failure.startswith(f"seed={result.seed} protocol=pbft nodes=4")
    assert "PBFT agreement" in result.failure or "NOT_LINEARIZABLE" in result.failure, result.failure
    # The same seed replays the same failure, and the correct PBFT passes it.
    again = run_simulation("pbft", result.seed, adapter=adapter, nodes=4, duration_ticks=DURATION_TICKS)
    assert (again.failure, again.trace_digest) == (result.failure, result.trace_digest)
    assert run_simulation("pbft", result.seed, nodes=4, duration_ticks=DURATION_TICKS).ok


def test_raft_breaks_under_one_byzantine_replica_where_pbft_holds() -> None:
    # Raft trusts its peers: one liar (votes granted to everyone, acknowledgements of entries it does
    # not have, different entries to different followers) breaks the safety of the *correct* replicas
    # (their state machines diverge, or clients see a non-linearizable history). Only the invariants that
    # hold correct replicas to account are used here, so the failure is not about the liar's own log.
    raft = replace(get_protocol("raft"), make_invariants=generic_invariants)
    failures = []
    for seed in range(20):
        result = run_simulation(
            "raft", seed, adapter=raft, nodes=3, duration_ticks=300, fault_kinds=("byzantine",)
        )
        if not result.ok:
            failures.append(result)
    assert len(failures) >= 2, "one Byzantine replica should break Raft in a few of these seeds"
    for result in failures:
        assert result.failure is not None
        assert "state-machine safety" in result.failure or "NOT_LINEARIZABLE" in result.failure, (
            result.failure
        )
        again = run_simulation(
            "raft", result.seed, adapter=raft, nodes=3, duration_ticks=300, fault_kinds=("byzantine",)
        )
        assert again.trace_digest == result.trace_digest
    # PBFT with the same Byzantine kinds on the same seeds: safe, live and linearizable.
    for result in failures:
        pbft = run_simulation(
            "pbft", result.seed, nodes=4, duration_ticks=DURATION_TICKS, fault_kinds=("byzantine",)
        )
        assert pbft.ok, pbft.failure


def test_pbft_with_n_equal_3f_breaks() -> None:
    # Three replicas claiming to tolerate one Byzantine (quorums of n - f = 2 = 2f): two quorums meet in
    # the liar alone, so an equivocating primary gets two requests committed at one sequence number.
    adapter = adapter_for(PbftConfig(faults_tolerated=1))
    result = first_failure(adapter, range(0, 30), nodes=3, fault_kinds=("equivocate",))
    assert result.failure is not None
    assert result.failure.startswith(f"seed={result.seed} protocol=pbft nodes=3")
    assert "PBFT agreement" in result.failure or "NOT_LINEARIZABLE" in result.failure, result.failure
    again = run_simulation(
        "pbft",
        result.seed,
        adapter=adapter,
        nodes=3,
        duration_ticks=DURATION_TICKS,
        fault_kinds=("equivocate",),
    )
    assert again.trace_digest == result.trace_digest
    # n = 3f + 1 with the same seed's faults holds.
    assert run_simulation(
        "pbft", result.seed, nodes=4, duration_ticks=DURATION_TICKS, fault_kinds=("equivocate",)
    ).ok


def test_a_pbft_seed_replays_exactly() -> None:
    first = run_simulation("pbft", 11, nodes=4, duration_ticks=DURATION_TICKS)
    second = run_simulation("pbft", 11, nodes=4, duration_ticks=DURATION_TICKS)
    assert first.ok and first.trace_digest == second.trace_digest
