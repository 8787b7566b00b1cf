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

Protocol settings drawn per seed: an adapter with `draw_options(rng) -> {setting: value}` gets some of
its core's settings drawn by `SimConfig.swarm` (from its own stream, `Random(f"{seed}:swarm:protocol")`,
so no other draw moves), and `configure(options) -> CoreFactory` builds the cores of that run. Raft draws
its batch size and in-flight window: the Figure 8 interleaving needs a follower that catches up over
several appends, which a 512-entry batch almost never produces. An adapter without `configure` builds
every run's cores the same way and ignores drawn options (a test's deliberately broken protocol).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from dscore.core.errors import ConfigError
from dscore.core.ids import NodeId
from dscore.protocols.contract import DurableState, ProtocolCore
from dscore.sim.invariants import Invariant, generic_invariants

if TYPE_CHECKING:
    from dscore.protocols.raft import RaftConfig

CoreFactory = Callable[[NodeId, Sequence[NodeId], random.Random, DurableState | None], ProtocolCore]
#: core settings drawn for one run, e.g. {"max_entries_per_msg": 1}
CoreOptions = Mapping[str, int | bool | str]


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
    #: core settings to draw per seed (None: the protocol has none worth varying)
    draw_options: Callable[[random.Random], dict[str, int | bool | str]] | None = None
    #: builds the cores of a run from drawn settings (None: `make_core` always, options ignored)
    configure: Callable[[CoreOptions], CoreFactory] | None = None

    def core_factory(self, options: CoreOptions) -> CoreFactory:
        """The factory for a run with these drawn settings."""
        if options and self.configure is not None:
            return self.configure(options)
        return self.make_core


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
            draw_options=draw_raft_options,
            configure=lambda options: RaftNode.factory(raft_config(options)),
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


def draw_raft_options(rng: random.Random) -> dict[str, int | bool | str]:
    """Half the seeds run Raft's defaults; the rest small batches and windows, where followers catch up
    over many appends and probe/replicate transitions are frequent (see the module docstring)."""
    options: dict[str, int | bool | str] = {}
    if rng.random() < 0.5:
        options["max_entries_per_msg"] = rng.choice((1, 2, 4))
    if rng.random() < 0.25:
        options["max_inflight_msgs"] = rng.choice((1, 4))
    return options


def raft_config(options: CoreOptions) -> RaftConfig:
    """Raft's default settings with `options` replaced (unknown names are a `ConfigError`)."""
    from dscore.protocols.raft import RaftConfig

    base = RaftConfig()
    unknown = set(options) - set(RaftConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown raft settings: {', '.join(sorted(unknown))}")
    return replace(base, **options)  # type: ignore[arg-type]
