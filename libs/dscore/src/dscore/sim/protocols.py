"""The protocols the simulator can run, by name, and what it needs to know about each.

To add one (Raft, say), write a `ProtocolAdapter` in `_builtin_adapters` below (or call
`register_protocol` from anywhere before the run):

    ProtocolAdapter(
        name="raft",
        make_core=lambda node_id, peers, rng, durable: RaftCore(node_id, peers, rng, durable),
        make_invariants=lambda: (*generic_invariants(), AtMostOneLeaderPerTerm(), LogMatching(), ...),
    )

`make_core(node_id, peers, rng, durable)` builds one node: `peers` are the other nodes' ids, `rng` is the
node's own seeded `random.Random` (a new stream per incarnation), `durable` is what earlier `Ready`s
persisted (None on first start). `make_invariants()` is called once per run, so invariants may keep
state across calls; each is `(sim) -> None` raising `InvariantViolation`. Include
`generic_invariants()` for a log protocol.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dscore.core.errors import ConfigError
from dscore.core.ids import NodeId
from dscore.protocols.contract import DurableState, ProtocolCore
from dscore.sim.invariants import Invariant, generic_invariants

CoreFactory = Callable[[NodeId, Sequence[NodeId], random.Random, DurableState | None], ProtocolCore]


@dataclass(frozen=True, slots=True)
class ProtocolAdapter:
    name: str
    make_core: CoreFactory
    make_invariants: Callable[[], tuple[Invariant, ...]] = generic_invariants
    #: False for protocols without a replicated state machine (no clients are simulated)
    serves_clients: bool = True
    #: False if `read_index` is not implemented: clients then read through the log
    supports_read_index: bool = True
    description: str = ""


_registry: dict[str, ProtocolAdapter] = {}


def register_protocol(adapter: ProtocolAdapter, *, replace: bool = False) -> None:
    _ensure_builtins()
    if adapter.name in _registry and not replace:
        raise ConfigError(f"protocol {adapter.name!r} is already registered")
    _registry[adapter.name] = adapter


def get_protocol(name: str) -> ProtocolAdapter:
    _ensure_builtins()
    try:
        return _registry[name]
    except KeyError:
        raise ConfigError(f"unknown protocol {name!r}; known: {', '.join(protocol_names())}") from None


def protocol_names() -> tuple[str, ...]:
    _ensure_builtins()
    return tuple(sorted(_registry))


def _ensure_builtins() -> None:
    if not _registry:
        for adapter in _builtin_adapters():
            _registry[adapter.name] = adapter


def _builtin_adapters() -> tuple[ProtocolAdapter, ...]:
    # Imported here so that importing the registry does not import every protocol.
    from dscore.protocols.raft import RaftNode
    from dscore.protocols.sequencer import SequencerCore
    from dscore.sim.causality import GossipCore, NoopCore, gossip_invariants
    from dscore.sim.raft_invariants import raft_invariants
    from dscore.sim.sequencer_invariants import sequencer_invariants

    return (
        ProtocolAdapter(
            name="raft",
            make_core=RaftNode.factory(),
            make_invariants=raft_invariants,
            description="Raft with pre-vote, check-quorum, ReadIndex reads and snapshots",
        ),
        ProtocolAdapter(
            name="sequencer",
            make_core=SequencerCore,
            make_invariants=sequencer_invariants,
            description="one fixed sequencer orders a replicated log (no failover)",
        ),
        ProtocolAdapter(
            name="gossip",
            make_core=GossipCore,
            make_invariants=gossip_invariants,
            serves_clients=False,
            supports_read_index=False,
            description="random gossip carrying vector and Lamport clocks (no state machine)",
        ),
        ProtocolAdapter(
            name="noop",
            make_core=lambda node_id, peers, rng, durable: NoopCore(node_id),
            make_invariants=tuple,
            serves_clients=False,
            supports_read_index=False,
            description="does nothing: the event loop's own cost, the benchmark baseline",
        ),
    )
