"""What one simulated run looks like: network model, fault plan, workload; all drawn from one seed.

Network models (the seed, section 1.2):

- `sync`: every delay is at most `delta_us` (definition 1.3);
- `async`: delays are finite but unbounded, drawn from a heavy-tailed (Pareto) distribution
  (definition 1.4); a cap, far above every protocol timeout, keeps each run finite;
- `partial`: asynchronous until a global stabilization time GST, bounded by `delta_us` after it, and a
  message sent before GST arrives by GST + delta (Dwork, Lynch and Stockmeyer's form of definition 1.5).

Fault models (section 3.1) are deviations from the model, listed in `FAULT_KINDS`. A `FaultPlan` says
which are on and how hard; `FaultPlan.draw` turns a seed into one (swarm testing: each run enables a
random subset with random intensities, so rare combinations are met often). Every fault stops at
`end_fraction` of the run: partitions heal, paused nodes resume, crashed nodes restart, links stop losing
messages, so liveness can be checked on the fault-free tail.

Most faults strike at random times. `flaky_leader` strikes when consensus is fragile instead: when a
node takes the lead and when a leader commits (see `FaultPlan.flaky_leader_probability`). Interleavings
such as Raft's Figure 8 need a leader to fail inside a window one message delay wide, and faults at random
times almost never land there (400 swarm seeds without this kind never produced Figure 8). Faults
triggered by the protocol's own events do: `tests/sim/test_sim_figure8.py` finds it in about half of
its seeds (with Raft sending one entry per append, without which that bug cannot show).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dscore.core.errors import ConfigError
from dscore.sim.byzantine import ByzantinePlan, split_fault_kinds
from dscore.statemachine.kv import KvStateMachine


class NetworkModel(enum.Enum):
    SYNC = "sync"
    ASYNC = "async"
    PARTIAL = "partial"


class ReadMode(enum.Enum):
    #: linearizable reads through `read_index` (falls back to LOG if the protocol has no read path)
    READ_INDEX = "read_index"
    #: reads are `Get` commands ordered through the log like writes
    LOG = "log"


#: every fault kind a plan can enable
FAULT_KINDS = (
    "crash",
    "omission",
    "timing",
    "pause",
    "duplication",
    "partition",
    "corruption",
    "flaky_leader",
    "power_loss",
)

#: the kinds `FaultPlan.draw` has always drawn from its `rng`; kinds added later draw from `late_rng`, so a
#: seed that does not enable them replays exactly as it did before they existed
_FIRST_KINDS = FAULT_KINDS[:7]

#: the client operations a workload can mix
OP_KINDS = ("get", "put", "append", "cas", "delete")


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    model: NetworkModel = NetworkModel.SYNC
    min_delay_us: int = 200
    #: Delta: the bound on every delay (sync), and on delays after GST (partial)
    delta_us: int = 5_000
    #: scale and shape of the Pareto tail used while the network is asynchronous
    tail_scale_us: int = 1_000
    tail_alpha: float = 1.5
    #: cap on one delay so a run ends; it is far above every timeout, so protocols cannot tell
    max_delay_us: int = 1_000_000
    #: partial synchrony: GST; None draws it from the seed within the faulty part of the run
    gst_us: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.min_delay_us <= self.delta_us <= self.max_delay_us:
            raise ConfigError("need 0 <= min_delay_us <= delta_us <= max_delay_us")
        if self.tail_alpha <= 0 or self.tail_scale_us < 0:
            raise ConfigError("tail_alpha must be positive and tail_scale_us non-negative")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Which faults a run injects and how hard. Zero disables a kind. Ranges are inclusive (min, max)."""

    #: crash: mean ticks between crashes (exponential); a crashed node loses all volatile state
    crash_interval_ticks: int = 0
    crash_down_ticks: tuple[int, int] = (10, 100)
    #: most nodes down at once
    max_down: int = 1
    #: chance a crash (or a partition) targets the node that believes it leads, as Jepsen's
    #: leader-killing nemesis does: leader changes are where consensus bugs live
    target_leader_probability: float = 0.0
    #: omission: each directed link drops messages with a probability drawn in [0, this]
    drop_probability: float = 0.0
    #: timing: a message is held back an extra [0, delay_extra_us] with this probability (reorders)
    delay_probability: float = 0.0
    delay_extra_us: int = 0
    #: pause: a node stalls (no ticks, no deliveries) for a while, like a long GC pause; half the pauses
    #: stall the leader. When it resumes it replays at most `SimConfig.max_catchup_ticks` of the ticks it
    #: missed and reports the rest to the core (`skip_ticks`), as the runtime does after a stall of its
    #: event loop, then reads what queued up one sender at a time, senders in a seeded order
    pause_interval_ticks: int = 0
    pause_ticks: tuple[int, int] = (5, 50)
    #: duplication: a message is delivered twice (independent delays) with this probability
    duplicate_probability: float = 0.0
    #: partition: mean ticks between partitions; each splits nodes and clients in two, then heals
    partition_interval_ticks: int = 0
    partition_ticks: tuple[int, int] = (20, 200)
    #: chance that a partition blocks one direction only
    one_way_probability: float = 0.0
    #: corruption: a message has one byte flipped (the CRC must catch it) with this probability
    corrupt_probability: float = 0.0
    #: flaky leader: when a node takes the lead, and whenever a leader commits, with this probability cut
    #: it off from its peers at once, *before* the messages of that step leave it (a new leader's first
    #: entries; the appends and commit index that follow a commit). Clients still reach it, as Jepsen's
    #: clients reach every node, so it keeps accepting proposals it cannot commit. It keeps links to a
    #: few random peers, few enough that with them it is still a minority (none in a 3-node cluster):
    #: what it appends is replicated partially, never to a majority. One node is cut at a time: cutting
    #: the next leader lets the previous one back in, so the nemesis follows leadership around and old
    #: and new leaders' logs compete (Raft's Figure 8 is exactly that). A cut also heals after a number
    #: of ticks drawn from `flaky_leader_ticks`.
    flaky_leader_probability: float = 0.0
    flaky_leader_ticks: tuple[int, int] = (20, 150)
    #: power loss: a write is lost, with this probability, to a power loss while it is in flight (during
    #: its fsync): the node goes down as in a crash (restarting after `crash_down_ticks`), the write never
    #: becomes durable, and whatever the node handed the network before the write began has left. Only
    #: the write in flight is lost: every earlier one had returned, so it is durable. With the `Ready`
    #: order (persist, then send) nothing a lost write holds was announced; an executor that sends first
    #: lets a vote or an acknowledgement escape that the restarted node no longer knows it gave
    power_loss_probability: float = 0.0
    #: faults stop at this fraction of the run; the rest is fault-free so liveness can be checked
    end_fraction: float = 0.8

    def __post_init__(self) -> None:
        for name in ("drop_probability", "delay_probability", "duplicate_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"FaultPlan.{name} must be within [0, 1]")
        if not 0.0 <= self.target_leader_probability <= 1.0:
            raise ConfigError("FaultPlan.target_leader_probability must be within [0, 1]")
        if not 0.0 <= self.one_way_probability <= 1.0 or not 0.0 <= self.corrupt_probability <= 1.0:
            raise ConfigError("probabilities must be within [0, 1]")
        if not 0.0 <= self.flaky_leader_probability <= 1.0:
            raise ConfigError("FaultPlan.flaky_leader_probability must be within [0, 1]")
        if not 0.0 <= self.power_loss_probability <= 1.0:
            raise ConfigError("FaultPlan.power_loss_probability must be within [0, 1]")
        if not 0.0 <= self.end_fraction <= 1.0:
            raise ConfigError("FaultPlan.end_fraction must be within [0, 1]")
        for name in ("crash_down_ticks", "pause_ticks", "partition_ticks", "flaky_leader_ticks"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ConfigError(f"FaultPlan.{name} must be a range 1 <= min <= max")
        if self.max_down < 1:
            raise ConfigError("FaultPlan.max_down must be at least 1")

    @property
    def enabled(self) -> tuple[str, ...]:
        on = {
            "crash": self.crash_interval_ticks > 0,
            "omission": self.drop_probability > 0,
            "timing": self.delay_probability > 0 and self.delay_extra_us > 0,
            "pause": self.pause_interval_ticks > 0,
            "duplication": self.duplicate_probability > 0,
            "partition": self.partition_interval_ticks > 0,
            "corruption": self.corrupt_probability > 0,
            "flaky_leader": self.flaky_leader_probability > 0,
            "power_loss": self.power_loss_probability > 0,
        }
        return tuple(kind for kind in FAULT_KINDS if on[kind])

    @staticmethod
    def none() -> FaultPlan:
        return FaultPlan()

    @staticmethod
    def draw(
        rng: random.Random,
        kinds: Iterable[str] | None = None,
        *,
        nodes: int = 5,
        late_rng: random.Random | None = None,
    ) -> FaultPlan:
        """Intensities drawn from `rng` for `kinds`; `kinds=None` is swarm mode: each kind is on with
        probability one half.

        Kinds added after the first seven (`flaky_leader`) are switched on and drawn from `late_rng`
        (default: `rng`, after every other draw), so the first seven kinds' switches and intensities are
        the same as before those kinds existed; `SimConfig.swarm` passes a separate stream so that the
        rest of a seed's run (its workload, its dedup) is unchanged too."""
        late = late_rng if late_rng is not None else rng
        if kinds is None:
            chosen = {kind for kind in _FIRST_KINDS if rng.random() < 0.5}
        else:
            chosen = set(kinds)
            unknown = chosen - set(FAULT_KINDS)
            if unknown:
                raise ConfigError(f"unknown fault kinds: {', '.join(sorted(unknown))}")
        plan = FaultPlan()
        # Draw every intensity whether or not the kind is on, so one kind's switch does not shift the
        # others' draws (a seed's plan changes only where the user changed it).
        crash = replace(
            plan,
            crash_interval_ticks=rng.randint(20, 200),
            crash_down_ticks=(rng.randint(2, 20), rng.randint(20, 150)),
            max_down=rng.randint(1, max(1, nodes - 1)),
        )
        drop = round(rng.uniform(0.01, 0.3), 3)
        delay = (round(rng.uniform(0.01, 0.3), 3), rng.randint(5_000, 300_000))
        pause = (rng.randint(30, 300), (rng.randint(2, 10), rng.randint(10, 80)))
        duplicate = round(rng.uniform(0.01, 0.3), 3)
        partition = (rng.randint(30, 300), (rng.randint(5, 30), rng.randint(30, 200)))
        one_way = round(rng.uniform(0.0, 0.5), 3)
        corrupt = round(rng.uniform(0.001, 0.05), 4)
        target_leader = rng.choice((0.0, 0.5, 0.9))
        if "crash" in chosen or "partition" in chosen:
            plan = replace(plan, target_leader_probability=target_leader)
        if "crash" in chosen:
            plan = replace(
                plan,
                crash_interval_ticks=crash.crash_interval_ticks,
                crash_down_ticks=crash.crash_down_ticks,
                max_down=crash.max_down,
            )
        if "omission" in chosen:
            plan = replace(plan, drop_probability=drop)
        if "timing" in chosen:
            plan = replace(plan, delay_probability=delay[0], delay_extra_us=delay[1])
        if "pause" in chosen:
            plan = replace(plan, pause_interval_ticks=pause[0], pause_ticks=pause[1])
        if "duplication" in chosen:
            plan = replace(plan, duplicate_probability=duplicate)
        if "partition" in chosen:
            plan = replace(
                plan,
                partition_interval_ticks=partition[0],
                partition_ticks=partition[1],
                one_way_probability=one_way,
            )
        if "corruption" in chosen:
            plan = replace(plan, corrupt_probability=corrupt)
        # Later kinds, from `late` (see above).
        if kinds is None and late.random() < 0.5:
            chosen.add("flaky_leader")
        flaky = (round(late.uniform(0.3, 0.9), 2), (late.randint(10, 40), late.randint(40, 200)))
        if "flaky_leader" in chosen:
            plan = replace(plan, flaky_leader_probability=flaky[0], flaky_leader_ticks=flaky[1])
        # After flaky_leader's draws, so they did not move when power_loss was added.
        if kinds is None and late.random() < 0.5:
            chosen.add("power_loss")
        power_loss = round(late.uniform(0.002, 0.02), 4)
        if "power_loss" in chosen:
            plan = replace(plan, power_loss_probability=power_loss)
        return plan


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    clients: int = 3
    #: keys are "k0".."k{keys-1}"; few keys means more contention, which is what finds bugs
    keys: int = 3
    #: relative weights of the operations in `OP_KINDS`
    mix: tuple[tuple[str, int], ...] = (("get", 4), ("put", 3), ("append", 2), ("cas", 2), ("delete", 1))
    #: pause between one operation's end and the next one's start, drawn in this range
    think_ticks: tuple[int, int] = (0, 5)
    #: a request unanswered this long is sent again (same client id and seq) to another node
    request_timeout_ticks: int = 20
    #: while faults are active, a client gives up on an operation after this long (recorded `info`)
    give_up_ticks: int = 300
    reads: ReadMode = ReadMode.READ_INDEX
    #: chance a new operation goes to the node last named leader rather than a random node (random
    #: targets exercise redirects, and would expose a replica that answers what it should not)
    leader_affinity: float = 0.8

    def __post_init__(self) -> None:
        if not 0.0 <= self.leader_affinity <= 1.0:
            raise ConfigError("leader_affinity must be within [0, 1]")
        if self.clients < 0 or self.keys < 1:
            raise ConfigError("need clients >= 0 and keys >= 1")
        if not self.mix or any(kind not in OP_KINDS or weight < 0 for kind, weight in self.mix):
            raise ConfigError(f"mix must weight operations from {OP_KINDS}")
        if sum(weight for _, weight in self.mix) <= 0:
            raise ConfigError("mix weights must not all be zero")
        if not 0 <= self.think_ticks[0] <= self.think_ticks[1]:
            raise ConfigError("think_ticks must be a range 0 <= min <= max")
        if self.request_timeout_ticks < 1 or self.give_up_ticks < 1:
            raise ConfigError("timeouts must be at least one tick")


@dataclass(frozen=True, slots=True)
class SimConfig:
    protocol: str = "sequencer"
    seed: int = 0
    nodes: int = 5
    #: virtual length of the workload; faults stop at `faults.end_fraction` of it
    duration_ticks: int = 1_000
    #: virtual microseconds per protocol tick (timeouts are counted in ticks)
    tick_us: int = 10_000
    #: after the workload ends, how long outstanding operations may take to finish and nodes to converge
    drain_max_ticks: int = 3_000
    network: NetworkConfig = field(default_factory=NetworkConfig)
    faults: FaultPlan = field(default_factory=FaultPlan)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    #: drop duplicate envelopes per sender at each receiver (`dscore.core.dedup`)
    dedup: bool = False
    #: check the client history for linearizability at the end of the run
    check: bool = True
    check_timeout_s: float | None = 60.0
    #: compact the log every this many applied entries, for cores that can (`compact(index, data)`);
    #: 0 never. Small values make lagging and restarted nodes catch up by InstallSnapshot.
    snapshot_every_entries: int = 0
    #: protocol core settings for this run, as (name, value) pairs (see `ProtocolAdapter.draw_options`)
    core_options: tuple[tuple[str, int | bool | str], ...] = ()
    #: per-node tick drift: node i ticks every `tick_us * (1 + d_i)` with each d_i drawn in
    #: [0, tick_drift] (so two nodes' rates differ by at most that fraction). The swarm keeps it within
    #: what the drawn settings tolerate (`ProtocolAdapter.max_tick_drift`); more is not a valid deployment
    #: and only a test that shows what breaks beyond the bound asks for it (`swarm(..., tick_drift=x)`).
    tick_drift: float = 0.0
    #: the worst case the drift bound allows, in place of the drawn per-node drifts: the node that
    #: believes it leads ticks at the slowest rate, `tick_us * (1 + tick_drift)`, every other node at the
    #: fastest, `tick_us` (rates change, they never leave the bound). A slow leader's lease against fast
    #: followers' stickiness is the case the bound exists for; elections, won by the fastest timers,
    #: would seldom produce it from fixed rates
    slow_leader_clock: bool = False
    #: after a pause (a stalled process), the missed ticks replayed at once; the rest are skipped and the
    #: core told (`skip_ticks`), as `dscore.runtime` does with the same setting (`max_catchup_ticks`)
    max_catchup_ticks: int = 2
    #: client sessions each state machine keeps (least recently used evicted): few means clients'
    #: sessions are evicted under load and they re-register (`SESSION_EXPIRED`)
    max_sessions: int = KvStateMachine.DEFAULT_MAX_SESSIONS
    #: Byzantine replicas and what they do (`dscore.sim.byzantine`); none by default
    byzantine: ByzantinePlan = field(default_factory=ByzantinePlan)
    #: a restarted node is handed again what it received after its stored input position (as a
    #: transport's retained inbox does: Kafka, the memory transport), before anything new; off in the
    #: default swarm, whose seeds it would all change (`tests/sim/test_sim_replay.py` runs it)
    replay_on_restart: bool = False
    #: keep the trace lines on the result (the digest is always computed)
    keep_trace: bool = False
    #: bounds: events in the queue at once, and events processed in one run
    max_queue_events: int = 1_000_000
    max_events: int = 20_000_000

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ConfigError("a simulation needs at least one node")
        if self.duration_ticks < 1 or self.tick_us < 1 or self.drain_max_ticks < 0:
            raise ConfigError("duration_ticks and tick_us must be positive, drain_max_ticks >= 0")
        if self.max_queue_events < 1 or self.max_events < 1:
            raise ConfigError("event bounds must be positive")
        if self.snapshot_every_entries < 0:
            raise ConfigError("snapshot_every_entries must be >= 0 (0: never)")
        if not 0.0 <= self.tick_drift <= 10.0:
            raise ConfigError("tick_drift must be within [0, 10]")
        if self.max_catchup_ticks < 1 or self.max_sessions < 1:
            raise ConfigError("max_catchup_ticks and max_sessions must be at least 1")

    @property
    def duration_us(self) -> int:
        return self.duration_ticks * self.tick_us

    @property
    def faults_end_us(self) -> int:
        return int(self.duration_us * self.faults.end_fraction)

    @staticmethod
    def swarm(
        seed: int,
        protocol: str = "sequencer",
        *,
        nodes: int = 5,
        duration_ticks: int = 1_000,
        network: NetworkModel | None = None,
        fault_kinds: Iterable[str] | None = None,
        draw_core_options: Callable[[random.Random], dict[str, int | bool | str]] | None = None,
        max_tick_drift: Callable[[dict[str, int | bool | str]], float] | None = None,
        set_core_options: Mapping[str, int | bool | str] | None = None,
        byzantine: bool = False,
        **overrides: Any,
    ) -> SimConfig:
        """A run drawn from `seed`: the network model (unless given), a fault plan (swarm when
        `fault_kinds` is None, else those kinds with drawn intensities), the workload's knobs (keys, read
        path, timeouts), dedup, the protocol's settings (`draw_core_options`, from the protocol's
        adapter; `dscore.sim.registry.swarm` passes it), the tick drift within what those settings
        tolerate (`max_tick_drift`, default `DEPLOYMENT_TICK_DRIFT`) and the session bound.
        `set_core_options` replace drawn protocol settings (the drift is then drawn for the result, as
        `dscore sim --set NAME=VALUE` does). `overrides` replace any `SimConfig` field afterwards
        (`tick_drift=x` beyond the drawn settings' bound is how a test shows what breaks there; overriding
        `core_options` keeps the drift drawn for the drawn ones).

        Each later draw comes from a stream of its own (`{seed}:swarm:protocol`, `:drift`, `:sessions`),
        so adding one moved no earlier draw.

        Byzantine kinds (`dscore.sim.byzantine.BYZANTINE_KINDS`, or `byzantine` for all) may be listed in
        `fault_kinds`; with `fault_kinds=None` and `byzantine=True` (protocols that tolerate them) they are
        drawn swarm style too. Either way from a stream of their own, so the rest of the run is unchanged.
        """
        rng = random.Random(f"{seed}:swarm")
        drawn_model = rng.choice(list(NetworkModel))
        byzantine_rng = random.Random(f"{seed}:swarm:byzantine")
        byzantine_plan = ByzantinePlan()
        if fault_kinds is not None:
            fault_kinds, byzantine_kinds = split_fault_kinds(fault_kinds)
            if byzantine_kinds:
                byzantine_plan = ByzantinePlan.draw(byzantine_rng, byzantine_kinds)
        elif byzantine:
            byzantine_plan = ByzantinePlan.draw(byzantine_rng)
        faults = FaultPlan.draw(
            rng, fault_kinds, nodes=nodes, late_rng=random.Random(f"{seed}:swarm:late-faults")
        )
        workload = WorkloadConfig(
            keys=rng.randint(1, 4),
            reads=rng.choice(list(ReadMode)),
            request_timeout_ticks=rng.randint(5, 40),
            # Short enough, sometimes, that clients give up during faults (indeterminate `info` ops).
            give_up_ticks=rng.randint(40, 400),
            leader_affinity=round(rng.uniform(0.3, 1.0), 2),
        )
        dedup = rng.random() < 0.3
        snapshot_every_entries = rng.choice((0, 0, 10, 30, 100))
        core_options: tuple[tuple[str, int | bool | str], ...] = ()
        drawn: dict[str, int | bool | str] = {}
        if draw_core_options is not None:
            drawn = draw_core_options(random.Random(f"{seed}:swarm:protocol"))
        if set_core_options:
            drawn.update(set_core_options)
        core_options = tuple(sorted(drawn.items()))
        bound = DEPLOYMENT_TICK_DRIFT if max_tick_drift is None else max_tick_drift(drawn)
        drift_rng = random.Random(f"{seed}:swarm:drift")
        tick_drift = draw_tick_drift(drift_rng, bound)
        slow_leader_clock = drift_rng.random() < 0.5
        sessions_rng = random.Random(f"{seed}:swarm:sessions")
        # A quarter of the runs keep so few sessions that the clients' are evicted under load.
        max_sessions = (
            sessions_rng.choice((2, 3, 4))
            if sessions_rng.random() < 0.25
            else KvStateMachine.DEFAULT_MAX_SESSIONS
        )
        config = SimConfig(
            protocol=protocol,
            seed=seed,
            nodes=nodes,
            duration_ticks=duration_ticks,
            network=NetworkConfig(model=network or drawn_model),
            faults=faults,
            workload=workload,
            dedup=dedup,
            snapshot_every_entries=snapshot_every_entries,
            core_options=core_options,
            tick_drift=tick_drift,
            slow_leader_clock=slow_leader_clock,
            max_sessions=max_sessions,
            byzantine=byzantine_plan,
        )
        return replace(config, **overrides)


#: the drift in tick rate between nodes every deployment must stay within (`dscore.settings`: lease reads
#: assume rates within 12.5%); protocols whose settings tolerate less say so (`ProtocolAdapter`)
DEPLOYMENT_TICK_DRIFT = 0.125


def draw_tick_drift(rng: random.Random, bound: float) -> float:
    """A run's drift bound within `bound`: none in a quarter of the runs, exactly the bound in another
    quarter (where an off-by-one in the lease's arithmetic would show), else uniform below it."""
    pick = rng.random()
    below = rng.uniform(0.0, bound)
    if pick < 0.25 or bound <= 0:
        return 0.0
    if pick < 0.5:
        return bound
    return below


def draw_node_drifts(rng: random.Random, nodes: int, tick_drift: float) -> tuple[float, ...]:
    """Each node's own drift d_i in [0, tick_drift]: the extremes often (a slow leader and a fast
    follower are what a lease must survive), values between otherwise."""
    drifts = []
    for _ in range(nodes):
        pick = rng.random()
        between = rng.uniform(0.0, tick_drift)
        drifts.append(0.0 if pick < 1 / 3 else tick_drift if pick < 2 / 3 else between)
    return tuple(drifts)
