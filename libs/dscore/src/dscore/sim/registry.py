"""The protocols the simulator can run, by name, and the entry points that look them up.

This module sits above the simulator: `Simulation` is handed a `ProtocolAdapter` and knows nothing
else about protocols; here adapters are registered by name, with each protocol's invariants and the
settings drawn per seed, and `run_simulation` / `swarm` find them.

To add one, write a `ProtocolAdapter` in `_builtin_adapters` below (or call `register_protocol` from
anywhere before the run):

    ProtocolAdapter(
        name="raft",
        make_core=lambda node_id, peers, rng, durable: RaftCore(node_id, peers, rng, durable),
        make_invariants=lambda: (*generic_invariants(), AtMostOneLeaderPerTerm(), LogMatching(), ...),
        draw_options=draw_raft_options,   # every setting users can set, valid combinations only
        configure=lambda options: RaftNode.factory(raft_config(options)),
    )
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from dscore.core.errors import ConfigError
from dscore.protocols.gossip import GossipCore
from dscore.protocols.noop import NoopCore
from dscore.protocols.paxos import PaxosConfig, PaxosNode
from dscore.protocols.pbft import PbftConfig, PbftNode
from dscore.protocols.raft import RaftConfig, RaftNode, ReadOnlyOption, max_tick_drift
from dscore.protocols.sequencer import SequencerCore
from dscore.sim.adapter import CoreOptions, ProtocolAdapter
from dscore.sim.config import DEPLOYMENT_TICK_DRIFT, SimConfig
from dscore.sim.gossip_invariants import gossip_invariants
from dscore.sim.host import ExecutorFactory
from dscore.sim.paxos_invariants import paxos_invariants
from dscore.sim.pbft_invariants import pbft_invariants
from dscore.sim.raft_invariants import raft_invariants
from dscore.sim.sequencer_invariants import sequencer_invariants
from dscore.sim.simulator import SimResult, Simulation
from dscore.statemachine.kv import valid_batch

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


def swarm(seed: int, protocol: str = "sequencer", **options: Any) -> SimConfig:
    """`SimConfig.swarm` with the protocol's own settings drawn too (see `ProtocolAdapter.draw_options`)."""
    try:
        adapter: ProtocolAdapter | None = get_protocol(protocol)
    except ConfigError:
        adapter = None  # a protocol only a test's adapter knows: nothing to draw
    draw = adapter.draw_options if adapter is not None else None
    # Byzantine faults are part of the swarm of protocols that claim to tolerate them.
    byzantine = adapter is not None and adapter.tolerates_byzantine and options.get("fault_kinds") is None
    return SimConfig.swarm(
        seed,
        protocol,
        draw_core_options=draw,
        max_tick_drift=adapter.max_tick_drift if adapter is not None else None,
        byzantine=byzantine,
        **options,
    )


def run_simulation(
    protocol: str = "sequencer",
    seed: int = 0,
    *,
    config: SimConfig | None = None,
    adapter: ProtocolAdapter | None = None,
    make_executor: ExecutorFactory | None = None,
    **swarm_options: Any,
) -> SimResult:
    """Run one simulation and return its result (it never raises for a failed run; see `ok`).

    With `config=None` the run is drawn from `seed` (`swarm(seed, protocol, **swarm_options)`: network
    model, swarm fault plan, dedup, protocol settings). With a `config`, that exact run (its seed and
    protocol win). `adapter` overrides the registry (a test's deliberately broken protocol, a recording
    gossip); `make_executor` replaces the executor (a deliberately broken one, see
    `dscore.sim.planted`).
    """
    if config is None:
        config = swarm(seed, protocol, **swarm_options)
    elif swarm_options:
        raise ConfigError("pass either a config or swarm options, not both")
    chosen = adapter if adapter is not None else get_protocol(config.protocol)
    return Simulation(config, chosen, make_executor=make_executor).run()


def _ensure_builtins() -> None:
    if not _registry:
        for adapter in _builtin_adapters():
            _registry[adapter.name] = adapter


def _builtin_adapters() -> tuple[ProtocolAdapter, ...]:
    return (
        ProtocolAdapter(
            name="raft",
            make_core=RaftNode.factory(),
            make_invariants=raft_invariants,
            description="Raft with pre-vote, check-quorum, ReadIndex and lease reads, and snapshots",
            draw_options=draw_raft_options,
            configure=lambda options: RaftNode.factory(raft_config(options)),
            max_tick_drift=raft_max_tick_drift,
        ),
        ProtocolAdapter(
            name="paxos",
            make_core=PaxosNode.factory(),
            make_invariants=paxos_invariants,
            description="Multi-Paxos: stable leader, pipelined phase 2, read quorum rounds, snapshots",
            draw_options=draw_paxos_options,
            configure=lambda options: PaxosNode.factory(paxos_config(options)),
        ),
        ProtocolAdapter(
            name="pbft",
            make_core=PbftNode.factory(secret=b"dscore-sim-pbft-default-secret"),
            make_invariants=pbft_invariants,
            supports_read_index=False,
            description="PBFT (Castro and Liskov): n = 3f + 1, checkpoints, view changes, pair MACs",
            draw_options=draw_pbft_options,
            configure=lambda options: PbftNode.factory(
                pbft_config(options), secret=b"dscore-sim-pbft-default-secret"
            ),
            configure_keyed=lambda options, secret: PbftNode.factory(
                pbft_config(options), secret=secret, valid_request=valid_batch
            ),
            tolerates_byzantine=True,
            tolerated=pbft_tolerated,
            reply_quorum=lambda nodes, options: pbft_tolerated(nodes, options) + 1,
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
    """Every Raft setting users can set (`dscore.settings.RaftSettings`), drawn per seed; valid
    combinations only (`raft_config` builds the `RaftConfig`, which refuses the rest).

    About half the seeds keep each default, so defaults stay well covered and every combination of
    departures from them is met too (swarm testing): other election timeouts (3, 5, 20 ticks) and
    heartbeat periods (up to one tick short of the timeout); pre-vote and check-quorum off; lease reads in
    two thirds of the runs that keep check-quorum (with the default lease or any `lease_ticks` below the
    timeout; lease bugs also need a stalled leader, so they get more of the seeds); small batches and
    windows, where followers catch up over many appends and probe/replicate transitions are frequent
    (the Figure 8 interleaving needs a follower that catches up over several appends, which a 512-entry
    batch almost never produces); byte limits that cut batches; snapshots sent in many small chunks; no
    appends sent only for a new commit index (the node service's setting) in half of them."""
    options: dict[str, int | bool | str] = {}
    # Every value is drawn whether or not it is used, so one switch never shifts the draws after it.
    election = rng.choice((3, 5, 20))
    heartbeat_pick = rng.random()
    pre_vote = rng.random() < 0.75
    check_quorum = rng.random() < 0.75
    lease = rng.random() < 2 / 3
    lease_pick = rng.random()
    entries = rng.choice((1, 2, 4))
    inflight = rng.choice((1, 4))
    message_bytes = rng.choice((1, 200, 2_000))
    chunk_bytes = rng.choice((64, 256, 4_096))
    switches = [rng.random() for _ in range(6)]
    if switches[0] < 0.5:
        options["election_timeout_ticks"] = election
    else:
        election = RaftConfig().election_timeout_ticks
    if heartbeat_pick >= 0.5:
        # 2 ticks, half the timeout, or one tick short of it (the slowest valid heartbeat)
        choices = (2, election // 2, election - 1)
        options["heartbeat_ticks"] = max(1, choices[int((heartbeat_pick - 0.5) * 6) % 3])
    if not pre_vote:
        options["pre_vote"] = False
    if not check_quorum:
        options["check_quorum"] = False
    elif lease:  # leases need check-quorum (leader stickiness)
        options["read_only_option"] = ReadOnlyOption.LEASE.value
        if lease_pick < 0.5:
            # any lease shorter than the timeout; the longest leave no room for drift at all
            options["lease_ticks"] = 1 + int((lease_pick / 0.5) * (election - 1)) % (election - 1)
    if switches[1] < 0.5:
        options["max_entries_per_msg"] = entries
    if switches[2] < 0.25:
        options["max_inflight_msgs"] = inflight
    if switches[3] < 0.2:
        options["max_bytes_per_msg"] = message_bytes
    if switches[4] < 0.3:
        options["snapshot_chunk_bytes"] = chunk_bytes
    if switches[5] < 0.5:
        options["commit_only_appends"] = False  # the node service's setting: commit via the next message
    return options


def raft_config(options: CoreOptions) -> RaftConfig:
    """Raft's default settings with `options` replaced (unknown names are a `ConfigError`; the read
    option may be given by its value, as in the environment: `read_only_option="lease"`)."""
    base = RaftConfig()
    unknown = set(options) - set(RaftConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown raft settings: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = dict(options)
    read_option = values.get("read_only_option")
    if isinstance(read_option, str):
        try:
            values["read_only_option"] = ReadOnlyOption(read_option)
        except ValueError:
            raise ConfigError(f"unknown read_only_option {read_option!r}") from None
    return replace(base, **values)


def raft_max_tick_drift(options: CoreOptions) -> float:
    """How far nodes' tick rates may drift apart under these Raft settings: the deployment bound (12.5%,
    `dscore.settings`), or less if a lease is configured that tolerates less
    (`dscore.protocols.raft.readonly.max_tick_drift`: (election_timeout_ticks - 1) / lease_ticks - 1)."""
    config = raft_config(options)
    if config.read_only_option is not ReadOnlyOption.LEASE:
        return DEPLOYMENT_TICK_DRIFT
    return min(
        DEPLOYMENT_TICK_DRIFT, max_tick_drift(config.election_timeout_ticks, config.effective_lease_ticks)
    )


def draw_paxos_options(rng: random.Random) -> dict[str, int | bool | str]:
    """Half the seeds run Paxos's defaults; the rest tiny windows and one-entry messages (many slots in
    flight out of order, holes for a new leader to fill, catch-up over many `Learn`s)."""
    options: dict[str, int | bool | str] = {}
    if rng.random() < 0.5:
        options["max_entries_per_msg"] = rng.choice((1, 2, 4))
    if rng.random() < 0.25:
        options["window_slots"] = rng.choice((1, 4))
    return options


def paxos_config(options: CoreOptions) -> PaxosConfig:
    """Paxos's default settings with `options` replaced (unknown names are a `ConfigError`)."""
    unknown = set(options) - set(PaxosConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown paxos settings: {', '.join(sorted(unknown))}")
    return replace(PaxosConfig(), **options)  # type: ignore[arg-type]


def draw_pbft_options(rng: random.Random) -> dict[str, int | bool | str]:
    """Small checkpoint intervals and windows (so checkpoints, garbage collection and the water marks are
    met in every run), and short or long view-change timeouts."""
    return {
        "checkpoint_interval": rng.choice((2, 4, 8)),
        "log_size_checkpoints": rng.choice((2, 3)),
        "view_change_timeout_ticks": rng.choice((15, 30, 60)),
        "status_every_ticks": rng.choice((5, 10, 20)),
    }


def pbft_config(options: CoreOptions) -> PbftConfig:
    """PBFT's default settings with `options` replaced (unknown names are a `ConfigError`)."""
    unknown = set(options) - set(PbftConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown pbft settings: {', '.join(sorted(unknown))}")
    return replace(PbftConfig(), **options)  # type: ignore[arg-type]


def pbft_tolerated(nodes: int, options: CoreOptions) -> int:
    """f: what the settings claim (`faults_tolerated`), else the most n = 3f + 1 allows."""
    claimed = options.get("faults_tolerated")
    return int(claimed) if claimed is not None else (nodes - 1) // 3
