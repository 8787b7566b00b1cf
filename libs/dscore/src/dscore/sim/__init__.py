"""dscore.sim: a deterministic simulator for protocol cores (FoundationDB / TigerBeetle VOPR style).

One integer seed drives a whole run: virtual time, the network model (synchronous, asynchronous,
partially synchronous), a swarm of faults (crash-restart, omission, timing, pauses, duplication,
partitions, corruption, and flaky leaders cut off the moment they win or commit), a key-value client
workload, invariants after every event, and a linearizability check of the client history at the end.
A failing run names its seed, and the same seed replays the same run, event for event
(`SimResult.trace_digest`).

    from dscore.sim import run_simulation
    result = run_simulation("sequencer", seed=7)
    assert result.ok, result.failure

Layers (imports point down, no cycles): `registry` (protocols by name, `run_simulation`, `swarm`) ->
`simulator` (the run) -> `host`, `client`, `network` (driven through narrow contexts) -> `kernel`
(virtual clock, event queue, seeded streams, trace); invariants see only `view.ClusterView`.
"""

from dscore.sim.adapter import CoreFactory, ProtocolAdapter
from dscore.sim.config import (
    FAULT_KINDS,
    FaultPlan,
    NetworkConfig,
    NetworkModel,
    ReadMode,
    SimConfig,
    WorkloadConfig,
)
from dscore.sim.invariants import StateMachineSafety, generic_invariants
from dscore.sim.registry import get_protocol, protocol_names, register_protocol, run_simulation, swarm
from dscore.sim.simulator import SimResult, SimStats, Simulation, SimulationFailure
from dscore.sim.view import AppliedEntry, ClusterView, Invariant, InvariantViolation

__all__ = [
    "FAULT_KINDS",
    "AppliedEntry",
    "ClusterView",
    "CoreFactory",
    "FaultPlan",
    "Invariant",
    "InvariantViolation",
    "NetworkConfig",
    "NetworkModel",
    "ProtocolAdapter",
    "ReadMode",
    "SimConfig",
    "SimResult",
    "SimStats",
    "Simulation",
    "SimulationFailure",
    "StateMachineSafety",
    "WorkloadConfig",
    "generic_invariants",
    "get_protocol",
    "protocol_names",
    "register_protocol",
    "run_simulation",
    "swarm",
]
