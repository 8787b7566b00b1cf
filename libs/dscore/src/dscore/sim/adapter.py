"""How the simulator runs one protocol: a `ProtocolAdapter` (its cores, invariants, settings to draw).

The registry of adapters by name (`dscore.sim.registry`) sits above the simulator; the simulator is handed
an adapter and knows nothing else about protocols.

`make_core(node_id, peers, rng, durable)` builds one node: `peers` are the other nodes' ids, `rng` is the
node's own seeded `random.Random` (a new stream per incarnation), `durable` is what earlier `Ready`s
persisted (None on first start). `make_invariants()` is called once per run, so invariants may keep state
across calls. Protocol settings drawn per seed: `draw_options(rng) -> {setting: value}` (valid
combinations only) and `configure(options) -> CoreFactory` builds the cores of that run;
`max_tick_drift(options)` is how far nodes' tick rates may drift apart under those settings (the swarm
draws each run's drift within it).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from dscore.core.ids import NodeId
from dscore.protocols.contract import DurableState, ProtocolCore
from dscore.sim.invariants import generic_invariants
from dscore.sim.view import Invariant

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
    #: the tick-rate drift between nodes these settings tolerate (None: `DEPLOYMENT_TICK_DRIFT`)
    max_tick_drift: Callable[[CoreOptions], float] | None = None
    #: builds the cores of a run from drawn settings and the run's secret (cores that authenticate each
    #: pair of nodes with keys derived from it, e.g. PBFT); wins over `configure` when a secret is given
    configure_keyed: Callable[[CoreOptions, bytes], CoreFactory] | None = None
    #: the protocol tolerates Byzantine replicas: swarm runs draw Byzantine faults for it
    tolerates_byzantine: bool = False
    #: the faults it claims to tolerate with this many nodes and settings (how many Byzantine nodes a run
    #: with Byzantine faults gets); None: (nodes - 1) // 2
    tolerated: Callable[[int, CoreOptions], int] | None = None
    #: matching answers from distinct replicas a client waits for (None: one, the leader's)
    reply_quorum: Callable[[int, CoreOptions], int] | None = None

    def core_factory(self, options: CoreOptions, secret: bytes | None = None) -> CoreFactory:
        """The factory for a run with these drawn settings (and this run's secret, if it has one)."""
        if secret is not None and self.configure_keyed is not None:
            return self.configure_keyed(options, secret)
        if options and self.configure is not None:
            return self.configure(options)
        return self.make_core
