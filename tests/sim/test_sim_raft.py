"""Raft in the simulator: a fixed set of 500 seeds across swarm fault mixes, every invariant checked after
every event and every client history checked for linearizability; and deliberately broken variants that
these checks must catch, each failure naming the seed that replays it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import pytest

from dscore.core.ids import NodeId
from dscore.protocols.contract import DurableState
from dscore.protocols.raft import RaftConfig, RaftNode, ReadOnlyOption
from dscore.sim import FAULT_KINDS, NetworkModel, SimResult, run_simulation
from dscore.sim.adapter import ProtocolAdapter
from dscore.sim.config import DEPLOYMENT_TICK_DRIFT
from dscore.sim.raft_invariants import raft_invariants
from dscore.sim.registry import get_protocol, raft_config, raft_max_tick_drift, swarm

SEEDS_PER_CHUNK = 25
CHUNKS = 20  # 500 seeds in all


def chunk_seeds(chunk: int) -> range:
    return range(chunk * SEEDS_PER_CHUNK, (chunk + 1) * SEEDS_PER_CHUNK)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_raft_swarm_seeds_are_safe_and_linearizable(chunk: int) -> None:
    nodes = 3 if chunk % 2 == 0 else 5
    results = [run_simulation("raft", seed, nodes=nodes, duration_ticks=500) for seed in chunk_seeds(chunk)]
    failures = [r.failure for r in results if not r.ok]
    assert not failures, "\n".join(f or "" for f in failures)
    assert all(r.verdict == "LINEARIZABLE" for r in results)
    assert all(r.stats.ops_checked == r.stats.ops_invoked > 0 for r in results)


def test_the_fixed_seeds_cover_every_fault_and_network_model() -> None:
    # The configurations alone (cheap to draw) show what the 500 seeds above exercise.

    configs = [
        swarm(seed, "raft", nodes=3 if (seed // SEEDS_PER_CHUNK) % 2 == 0 else 5)
        for seed in range(CHUNKS * SEEDS_PER_CHUNK)
    ]
    kinds = Counter(kind for c in configs for kind in c.faults.enabled)
    assert set(kinds) == set(FAULT_KINDS)
    assert min(kinds.values()) > 100
    assert {c.network.model for c in configs} == set(NetworkModel)
    assert sum(1 for c in configs if c.snapshot_every_entries) > 100
    assert sum(1 for c in configs if c.faults.target_leader_probability) > 100
    # Raft's own settings are drawn too: one-entry batches (Figure 8 needs them) and tiny windows.
    assert sum(1 for c in configs if dict(c.core_options).get("max_entries_per_msg") == 1) > 50
    assert sum(1 for c in configs if dict(c.core_options).get("max_inflight_msgs") == 1) > 25
    # Every setting users can set is drawn (valid combinations only), each default kept in about half
    # the seeds; tick rates drift within what the drawn settings tolerate.
    options = [dict(c.core_options) for c in configs]
    for config, drawn in zip(configs, options, strict=True):
        built = raft_config(drawn)  # RaftConfig refuses invalid combinations
        assert config.tick_drift <= raft_max_tick_drift(drawn) <= DEPLOYMENT_TICK_DRIFT
        if built.read_only_option is ReadOnlyOption.LEASE:
            assert built.check_quorum
            lease = built.effective_lease_ticks
            assert config.tick_drift <= (built.election_timeout_ticks - 1) / lease - 1
    lease_runs = [o for o in options if o.get("read_only_option") == "lease"]
    assert len(lease_runs) > 100
    assert sum(1 for o in lease_runs if "lease_ticks" in o) > 30
    assert sum(1 for o in options if o.get("pre_vote") is False) > 75
    assert sum(1 for o in options if o.get("check_quorum") is False) > 75
    assert {o.get("election_timeout_ticks") for o in options} == {None, 3, 5, 20}
    assert sum(1 for o in options if "election_timeout_ticks" not in o) > 200
    assert sum(1 for o in options if "heartbeat_ticks" in o) > 200
    assert sum(1 for o in options if "max_bytes_per_msg" in o) > 50
    assert sum(1 for o in options if "snapshot_chunk_bytes" in o) > 100
    assert sum(1 for o in options if o.get("commit_only_appends") is False) > 150  # the node service's
    assert sum(1 for c in configs if c.tick_drift == DEPLOYMENT_TICK_DRIFT) > 50
    assert sum(1 for c in configs if c.tick_drift > 0) > 300


def test_drawn_raft_settings_reach_every_core_and_bad_ones_are_refused() -> None:
    from dscore.core.errors import ConfigError
    from dscore.sim.simulator import Simulation

    config = swarm(0, "raft", nodes=3, duration_ticks=50)
    config = replace(config, core_options=(("max_entries_per_msg", 1), ("max_inflight_msgs", 4)))
    sim = Simulation(config, get_protocol("raft"))
    sim.run()
    cores = [node.core for node in sim.nodes.values() if node.core is not None]
    assert cores and all(
        (c.config.max_entries_per_msg, c.config.max_inflight_msgs) == (1, 4)  # type: ignore[attr-defined]
        for c in cores
    )
    with pytest.raises(ConfigError, match="unknown raft settings: max_entries"):
        raft_config({"max_entries": 1})


def test_raft_is_registered_with_its_invariants() -> None:
    adapter = get_protocol("raft")
    names = {type(inv).__name__ for inv in adapter.make_invariants()}
    assert {"StateMachineSafety", "RaftSafety"} <= names


class MinorityCommit(RaftNode):
    """Broken on purpose: counts a quorum as two of five (one fewer than a majority)."""

    def _quorum_match(self) -> int:
        matches = sorted((self.progress(v).match for v in self.voters), reverse=True)  # type: ignore[union-attr]
        return matches[max(0, len(matches) // 2 - 1)]


class ForgetfulVoter(RaftNode):
    """Broken on purpose: grants a vote even to a candidate whose log is behind (no election restriction)."""

    def _on_vote_request(self, src: NodeId, m: object) -> None:
        from dataclasses import replace

        from dscore.protocols.raft import VoteRequest

        assert isinstance(m, VoteRequest)
        super()._on_vote_request(src, replace(m, last_log_term=10**9))


def adapter_for(cls: type[RaftNode]) -> ProtocolAdapter:
    def make(node_id: NodeId, peers: Sequence[NodeId], rng: object, durable: DurableState | None) -> RaftNode:
        return cls(node_id, RaftConfig(), rng, durable, peers)  # type: ignore[arg-type]

    return ProtocolAdapter(name="raft", make_core=make, make_invariants=raft_invariants)


def first_failure(cls: type[RaftNode], seeds: range) -> SimResult:
    for seed in seeds:
        result = run_simulation("raft", seed, adapter=adapter_for(cls), nodes=5)
        if not result.ok:
            return result
    pytest.fail(f"{cls.__name__} survived seeds {seeds.start}..{seeds.stop - 1}: the checks missed the bug")


@pytest.mark.parametrize("broken", [MinorityCommit, ForgetfulVoter])
def test_a_broken_raft_is_caught_with_its_seed(broken: type[RaftNode]) -> None:
    result = first_failure(broken, range(40))
    assert result.failure is not None
    assert result.failure.startswith(f"seed={result.seed} protocol=raft")
    assert "invariant violated" in result.failure or "NOT_LINEARIZABLE" in result.failure
    # The same seed replays the same failure, and the correct Raft passes it.
    again = run_simulation("raft", result.seed, adapter=adapter_for(broken), nodes=5)
    assert (again.failure, again.trace_digest) == (result.failure, result.trace_digest)
    assert run_simulation("raft", result.seed, nodes=5).ok
