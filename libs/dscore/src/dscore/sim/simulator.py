"""The deterministic simulator: one seed, virtual time, one event queue, no threads, no wall clock.

Everything random is drawn from `random.Random` streams derived from the seed by name
(`Random(f"{seed}:network")`, `Random(f"{seed}:node:n2:3")`, ...; a str seed is hashed with SHA-512, so
the streams are the same on every run and every machine, whatever PYTHONHASHSEED is). Events sit in a
heap ordered by (virtual time in microseconds, insertion number), so ties break the same way every time.
Nothing is ever iterated in set order.

A run:

1. nodes start (each ticks every `tick_us * (1 + d_i)`, with a per-node phase and drift d_i drawn within
   `SimConfig.tick_drift`), clients start their workload;
2. until `faults.end_fraction` of `duration_ticks`, faults are injected (crashes and restarts, pauses,
   partitions and heals by timers; omission, timing, duplication and corruption by the network; the
   flaky-leader cut by leader events that hosts report, see `Simulation.leader_event`);
3. then the network heals, every node restarts; clients keep working until `duration_ticks`;
4. drain: no new operations; every outstanding one must finish and every node's state machine must
   converge to the same state within `drain_max_ticks` (the liveness check), else the run fails;
5. the client history is checked for linearizability (`dscore.check`, kv model).

After every event the host-level checks and the adapter's invariants run. A failure of any kind (an
invariant, a liveness timeout, a non-linearizable history, an exception in a core) ends the run with a
message that starts with `seed=N`, which reproduces it exactly: every event is folded into a SHA-256
trace digest, and two runs of one seed have the same digest.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dscore.check import History, HistoryRecorder, check_history
from dscore.core.envelope import Envelope
from dscore.core.errors import ConfigError
from dscore.core.ids import NodeId
from dscore.protocols.contract import DurableState, ProtocolCore
from dscore.replica.executor import Executor, ExecutorConfig
from dscore.sim.adapter import CoreFactory, ProtocolAdapter
from dscore.sim.byzantine import ByzantineCore, ByzantineExecutor, choose_byzantine
from dscore.sim.client import OpTiming, SimClient
from dscore.sim.config import NetworkModel, ReadMode, SimConfig, draw_node_drifts
from dscore.sim.host import CRASH_POINTS, POWER_LOSS_POINT, ExecutorFactory, SimNode
from dscore.sim.kernel import Kernel, QueueFull
from dscore.sim.network import Isolation, Partition, SimNetwork
from dscore.sim.view import AppliedEntry, InvariantViolation

# Event kinds (small ints: the heap holds plain tuples, the fastest thing heapq can compare).
_DELIVER = 0
_TICK = 1
_CLIENT_TIMER = 2
_CRASH_TIMER = 3
_RESTART = 4
_PARTITION_TIMER = 5
_HEAL = 6
_PAUSE_TIMER = 7
_FAULTS_END = 8
_WORKLOAD_END = 9
_DRAIN_CHECK = 10
_REJOIN = 11
_RESUME = 12


class SimulationFailure(Exception):
    """Raised by `SimResult.raise_for_failure`; the message starts with `seed=N`."""


@dataclass(frozen=True, slots=True)
class SimStats:
    sim_time_us: int
    wall_s: float
    check_s: float
    events: int
    messages_sent: int
    messages_delivered: int
    dropped_omission: int
    dropped_partition: int
    dropped_down: int
    duplicated: int
    delayed: int
    corrupted: int
    decode_errors: int
    dedup_dropped: int
    crashes: int
    restarts: int
    partitions: int
    pauses: int
    #: flaky-leader cuts (a leader cut off from its peers as it took the lead or committed)
    leader_isolations: int
    #: writes lost in flight to a power loss (each also counted in `crashes`)
    power_losses: int
    ops_invoked: int
    ops_ok: int
    ops_failed: int
    ops_info: int
    ops_checked: int
    entries_applied: int
    max_delay_us: int

    @property
    def sim_seconds(self) -> float:
        return self.sim_time_us / 1e6


@dataclass(frozen=True, slots=True)
class SimResult:
    config: SimConfig
    ok: bool
    #: why the run failed, starting with `seed=N`; None if it passed
    failure: str | None
    #: SHA-256 over every event of the run, hex
    trace_digest: str
    stats: SimStats
    #: the checker's verdict ("LINEARIZABLE", ...), None if the history was not checked
    verdict: str | None
    history: History | None
    #: the trace lines, if `config.keep_trace`
    trace: tuple[str, ...] = ()
    #: extra detail for a failure (a traceback for an exception in a core)
    detail: str = ""
    #: every client operation's timing, in completion order (`dscore.sim.client.OpTiming`)
    op_timings: tuple[OpTiming, ...] = ()
    #: (virtual us, node) of each crash of a node that believed it led (leader or primary)
    leader_crashes: tuple[tuple[int, NodeId], ...] = ()

    @property
    def seed(self) -> int:
        return self.config.seed

    def raise_for_failure(self) -> None:
        if not self.ok:
            raise SimulationFailure(self.failure or f"seed={self.seed}: failed")


class _Stop(Exception):
    """Internal: ends the event loop (the run finished, or failed with a message)."""

    def __init__(self, failure: str | None = None) -> None:
        super().__init__(failure)
        self.failure = failure


class Simulation:
    """One run: the kernel, the network, the hosts, the clients, the faults and the invariants.

    It is the context hosts and clients are given (`dscore.sim.host.HostContext`,
    `dscore.sim.client.ClientContext`) and the view invariants read (`dscore.sim.view.ClusterView`);
    none of them imports it."""

    def __init__(
        self, config: SimConfig, adapter: ProtocolAdapter, *, make_executor: ExecutorFactory | None = None
    ) -> None:
        self.config = config
        self.seed = config.seed
        self.adapter = adapter
        self._kernel = kernel = Kernel(
            config.seed, max_queue_events=config.max_queue_events, keep_trace=config.keep_trace
        )
        self._push = kernel.push
        self.trace = kernel.trace
        self.count = kernel.count
        self.counters = kernel.counters
        self._events = 0
        self._new_applies: list[AppliedEntry] = []
        #: the node the last event was handed to, None after a control event (`ClusterView.changed`)
        self.changed: NodeId | None = None
        self.invariants = adapter.make_invariants()
        # Every frame is authenticated with a key of the run (drawn from the seed, so a run replays), and
        # carries the fingerprint of the run's cluster-wide settings, as on a real cluster.
        self.auth_key = hashlib.sha256(f"dscore-sim-key:{config.seed}".encode()).digest()
        options = dict(config.core_options)
        #: builds this run's cores (with the run's drawn core settings, if the adapter takes them, and
        #: pair keys derived from a secret of the run, if the protocol has them)
        self.make_core = adapter.core_factory(
            options, secret=hashlib.sha256(b"pair-keys:" + self.auth_key).digest()
        )
        self._fault_rng = kernel.stream("faults")
        node_ids = tuple(f"n{i}" for i in range(config.nodes))
        self.node_ids: tuple[NodeId, ...] = node_ids
        workload = config.workload
        executor_config = ExecutorConfig(
            snapshot_every_entries=config.snapshot_every_entries or 2**62,
            dedup=config.dedup,
            reads_through_log=workload.reads is ReadMode.LOG or not adapter.supports_read_index,
        )
        #: Byzantine nodes (`dscore.sim.byzantine`): their cores and executors lie; invariants and the
        #: convergence check hold the others only
        tolerated = adapter.tolerated(config.nodes, options) if adapter.tolerated else (config.nodes - 1) // 2
        self.byzantine = choose_byzantine(config.byzantine, node_ids, tolerated, kernel.stream("byzantine"))
        cluster_settings = {
            "cluster_id": f"sim-{config.seed}",
            "protocol": adapter.name,
            "max_sessions": str(config.max_sessions),
            **{f"{adapter.name}.{name}": str(value) for name, value in config.core_options},
        }
        #: each node's drift and tick period (its own clock runs slow by that fraction)
        self.tick_drifts = draw_node_drifts(kernel.stream("drift"), config.nodes, config.tick_drift)
        self.tick_periods_us = tuple(
            config.tick_us + int(config.tick_us * drift) for drift in self.tick_drifts
        )
        self.nodes: dict[NodeId, SimNode] = {}
        for index, node_id in enumerate(node_ids):
            self.nodes[node_id] = SimNode(
                self,
                index,
                node_id,
                node_ids,
                make_core=self._byzantine_core(node_id) if node_id in self.byzantine else self.make_core,
                make_rng=kernel.stream,
                config=executor_config,
                max_sessions=config.max_sessions,
                replay_on_restart=config.replay_on_restart,
                make_executor=ByzantineExecutor if node_id in self.byzantine else (make_executor or Executor),
                auth_key=self.auth_key,
                cluster_settings=cluster_settings,
            )
        self._node_list = list(self.nodes.values())
        self.recorder = HistoryRecorder()
        client_count = workload.clients if adapter.serves_clients else 0
        self.clients: list[SimClient] = [
            SimClient(
                self,
                index,
                kernel.stream(f"client:{index}"),
                workload,
                node_ids,
                recorder=self.recorder,
                auth_key=self.auth_key,
                reply_quorum=adapter.reply_quorum(config.nodes, options) if adapter.reply_quorum else 1,
            )
            for index in range(client_count)
        ]
        self._clients_by_id = {client.name: client for client in self.clients}
        endpoints = (*node_ids, *self._clients_by_id)
        network_config = config.network
        gst_us = network_config.gst_us
        if gst_us is None:
            gst_us = kernel.stream("gst").randint(0, max(0, config.faults_end_us))
        self.gst_us = gst_us if network_config.model is NetworkModel.PARTIAL else 0
        self.network = SimNetwork(network_config, config.faults, kernel.stream("network"), endpoints, gst_us)
        self.faults_active = bool(config.faults.enabled) or bool(self.byzantine)
        #: hosts report leader events only when the flaky-leader nemesis is on (`leader_event`)
        self.watch_leaders = config.faults.flaky_leader_probability > 0
        # Its own stream, so that turning it on leaves every other fault's draws where they were.
        self._leader_rng = kernel.stream("flaky-leader")
        self._crash_point_rng = kernel.stream("crash-points")
        #: writes lost to a power loss (`FaultPlan.power_loss_probability`), drawn per write
        self._power_loss_rng = kernel.stream("power-loss")
        self.power_loss_on = self.faults_active and config.faults.power_loss_probability > 0
        self._partition_clients_rng = kernel.stream("partition-clients")
        self._pause_leader_rng = kernel.stream("pause-leader")
        self._resume_order_rng = kernel.stream("resume-order")
        self._isolation_serial = 0
        self.accepting_ops = True
        self._partition_serial = 0
        self._done = False
        self._collusion_rng = kernel.stream("byzantine:collusion")
        self._leader_crashes: list[tuple[int, NodeId]] = []

    def _byzantine_core(self, node_id: NodeId) -> CoreFactory:
        """The core factory of a Byzantine node: the run's core, wrapped (a new liar per incarnation)."""
        plan = self.config.byzantine
        stream = self._kernel.stream
        incarnations = [0]

        def make(
            node: NodeId, peers: Sequence[NodeId], rng: random.Random, durable: DurableState | None
        ) -> ProtocolCore:
            incarnations[0] += 1
            inner = self.make_core(node, peers, rng, durable)
            return ByzantineCore(
                inner,
                plan,
                stream(f"byzantine:{node}:{incarnations[0]}"),
                peers,
                shared_rng=self._collusion_rng,
                active=self.faults_active,
            )

        return make

    # -- the context of hosts and clients, the view of invariants -----------------------------------

    @property
    def now_us(self) -> int:
        return self._kernel.now_us

    @property
    def tick_us(self) -> int:
        return self.config.tick_us

    @property
    def client_count(self) -> int:
        return len(self.clients)

    @property
    def requests_may_duplicate(self) -> bool:
        return self.config.faults.duplicate_probability > 0

    @property
    def new_applies(self) -> Sequence[AppliedEntry]:
        return self._new_applies

    def applied(self, entry: AppliedEntry) -> None:
        self._new_applies.append(entry)

    def transmit(self, source: str, destination: str, data: bytes, envelope: Envelope | None) -> None:
        deliveries = self.network.route(self.now_us, source, destination, data)
        label = f"{envelope.kind} {envelope.msg_id.incarnation}/{envelope.msg_id.seq}" if envelope else "?"
        if not deliveries:
            self.trace(f"lost {source}>{destination} {label}")
            return
        for at_us, payload in deliveries:
            self._push(at_us, _DELIVER, destination, (source, payload))
        self.trace(f"send {source}>{destination} {label} at={','.join(str(at) for at, _ in deliveries)}")

    def leader_event(self, node_id: NodeId, *, took_lead: bool) -> None:
        """`node_id` took the lead, or committed entries while leading; its host calls this after
        persisting that step's write and before sending its messages. The flaky-leader nemesis may cut it
        off now, so those messages never leave (see `FaultPlan.flaky_leader_probability`): a new leader's
        first entries, or the appends and commit index that follow a commit, reach at most a minority.

        Why these moments: a leader that dies just after winning leaves entries only it has, and one
        that dies just after committing leaves followers that do not know what is committed, while
        an uncommitted entry may sit on a majority. Every leader-change safety bug of the Figure 8 kind
        needs leaders to fail at exactly such points, one message delay wide, which faults at random
        times almost never hit."""
        plan = self.config.faults
        rng = self._leader_rng
        previous = self.network.isolation
        if not self.faults_active or (previous is not None and previous.node == node_id):
            return
        if rng.random() >= plan.flaky_leader_probability:
            return
        peers = [peer for peer in self.node_ids if peer != node_id]
        # Links kept to a minority of peers minus itself: with them it is still a minority.
        kept = rng.sample(peers, rng.randint(0, max(0, (len(self.node_ids) - 1) // 2 - 1)))
        self.network.isolation = Isolation(node_id, frozenset(p for p in peers if p not in kept))
        self._isolation_serial += 1
        low, high = plan.flaky_leader_ticks
        self._push(
            self.now_us + rng.randint(low, high) * self.config.tick_us, _REJOIN, self._isolation_serial, None
        )
        self.count("leader_isolations")
        if previous is not None:
            self.trace(f"rejoin {previous.node}")
        self.trace(
            f"isolate {node_id} {'took the lead' if took_lead else 'committed'} "
            f"keep={','.join(sorted(kept)) or '-'}"
        )

    def power_fails(self, node: SimNode) -> bool:
        """A power loss during `node`'s write in flight, with the plan's probability; as with crashes, at
        most `max_down` nodes are down (or about to go down) at once."""
        if self._power_loss_rng.random() >= self.config.faults.power_loss_probability:
            return False
        down = sum(1 for other in self._node_list if other.executor is None or other.crash_point is not None)
        return down < self.config.faults.max_down

    def schedule_client_timer(self, client_index: int, delay_us: int, token: int) -> None:
        self._push(self.now_us + delay_us, _CLIENT_TIMER, client_index, token)

    # -- the run ------------------------------------------------------------------------------------

    def run(self) -> SimResult:
        config = self.config
        started = time.perf_counter()
        failure: str | None = None
        detail = ""
        try:
            self._start()
            self._loop()
        except _Stop as stop:
            failure = stop.failure
        except QueueFull as full:
            failure = str(full)
        except InvariantViolation as violation:
            failure = f"invariant violated at t={self.now_us}us: {violation}"
        except Exception as error:  # a core or the state machine blew up: report it with the seed
            failure = f"{type(error).__name__} at t={self.now_us}us: {error}"
            detail = traceback.format_exc()
        if failure is None and not self._done:
            failure = "the event queue ran dry before the run finished"
        wall_s = time.perf_counter() - started
        history = self.recorder.history() if self.clients else None
        verdict: str | None = None
        ops_checked = 0
        check_started = time.perf_counter()
        if failure is None and history is not None and config.check:
            result = check_history(history, model="kv", timeout_s=config.check_timeout_s)
            verdict = result.verdict.value
            ops_checked = result.ops_checked
            if not result.is_linearizable:
                failure = f"history is {verdict}: {result.explanation}"
        check_s = time.perf_counter() - check_started
        if failure is not None:
            failure = (
                f"seed={config.seed} protocol={self.adapter.name} nodes={config.nodes} "
                f"network={config.network.model.value} faults={','.join(config.faults.enabled) or 'none'}"
                + (f" byzantine={','.join(config.byzantine.enabled)}" if self.byzantine else "")
                + f": {failure}"
            )
        return SimResult(
            config=config,
            ok=failure is None,
            failure=failure,
            trace_digest=self._kernel.digest,
            stats=self._stats(wall_s, check_s, ops_checked),
            verdict=verdict,
            history=history,
            trace=self._kernel.lines if self.config.keep_trace else (),
            detail=detail,
            op_timings=tuple(
                sorted((t for c in self.clients for t in c.timings), key=lambda t: t.completed_us)
            ),
            leader_crashes=tuple(self._leader_crashes),
        )

    def _start(self) -> None:
        config = self.config
        plan = config.faults
        self.trace(
            f"start seed={config.seed} protocol={self.adapter.name} nodes={config.nodes} "
            f"clients={len(self.clients)} network={config.network.model.value} gst={self.gst_us} "
            f"faults={','.join(plan.enabled) or 'none'} dedup={config.dedup} sessions={config.max_sessions}"
            f" tick_periods_us={','.join(str(p) for p in self.tick_periods_us)}"
            f"{' slow-leader-clock' if config.slow_leader_clock and config.tick_drift > 0 else ''}"
            + "".join(f" {name}={value}" for name, value in self._applied_core_options())
            + (
                f" byzantine={','.join(sorted(self.byzantine))} kinds={','.join(config.byzantine.enabled)}"
                if self.byzantine
                else ""
            )
        )
        phase_rng = self._kernel.stream("phase")
        for node in self._node_list:
            node.start()
            self._push(phase_rng.randrange(config.tick_us) + 1, _TICK, node.index, node.incarnation)
        self._run_invariants()
        for client in self.clients:
            client.start()
        if self.faults_active:
            if plan.crash_interval_ticks:
                self._push(self._next_fault_us(plan.crash_interval_ticks), _CRASH_TIMER, None, None)
            if plan.partition_interval_ticks:
                self._push(self._next_fault_us(plan.partition_interval_ticks), _PARTITION_TIMER, None, None)
            if plan.pause_interval_ticks:
                self._push(self._next_fault_us(plan.pause_interval_ticks), _PAUSE_TIMER, None, None)
            self._push(config.faults_end_us, _FAULTS_END, None, None)
        self._push(config.duration_us, _WORKLOAD_END, None, None)

    def _applied_core_options(self) -> tuple[tuple[str, int | bool | str], ...]:
        return self.config.core_options if self.adapter.configure is not None else ()

    def _next_fault_us(self, mean_interval_ticks: int) -> int:
        gap_ticks = self._fault_rng.expovariate(1.0 / mean_interval_ticks)
        return self.now_us + max(1, int(gap_ticks * self.config.tick_us))

    def _loop(self) -> None:
        kernel = self._kernel
        queue = kernel.queue
        heappop = heapq.heappop
        nodes = self._node_list
        by_id = self.nodes
        clients = self._clients_by_id
        max_events = self.config.max_events
        periods = self.tick_periods_us
        slow_leader = self.config.slow_leader_clock and self.config.tick_drift > 0
        fastest = self.config.tick_us
        slowest = fastest + int(fastest * self.config.tick_drift)
        while queue and not self._done:
            at_us, _, kind, a, b = heappop(queue)
            kernel.now_us = at_us
            self._events += 1
            if self._events > max_events:
                raise _Stop(f"more than {max_events} events")
            if kind == _DELIVER:
                node = by_id.get(a)
                if node is None:
                    clients[a].receive(b[1])
                    continue  # clients hold no protocol state: nothing for invariants to see
                if node.executor is None:
                    self.network.stats.dropped_down += 1
                    self.trace(f"drop-down {a}")
                    continue
                if node.paused_until_us > at_us:
                    node.held.append(b)  # read when it resumes (see `_RESUME`)
                    continue
                self.network.stats.delivered += 1
                self.changed = a
                node.receive(b[1])
            elif kind == _TICK:
                node = nodes[a]
                if node.executor is None or node.incarnation != b:
                    continue  # a tick of a crashed incarnation
                if slow_leader:  # the worst case the bound allows: a slowest leader, fastest followers
                    leads = node.executor.core.leader_id == node.node_id
                    self._push(at_us + (slowest if leads else fastest), _TICK, a, b)
                else:
                    self._push(at_us + periods[a], _TICK, a, b)
                if node.paused_until_us > at_us:
                    node.missed_ticks += 1  # the stalled process misses it (see `_RESUME`)
                    continue
                self.changed = node.node_id
                node.tick()
            elif kind == _CLIENT_TIMER:
                self.clients[a].on_timer(b)
                continue
            else:
                self.changed = None
                self._control(kind, a, b)
            if self.invariants or self._new_applies:
                self._run_invariants()

    def _run_invariants(self) -> None:
        for invariant in self.invariants:
            invariant(self)
        self._new_applies.clear()

    # -- faults and phases --------------------------------------------------------------------------

    def _control(self, kind: int, a: Any, b: Any) -> None:
        config = self.config
        plan = config.faults
        rng = self._fault_rng
        tick_us = config.tick_us
        if kind == _CRASH_TIMER:
            if not self.faults_active:
                return
            down = sum(1 for node in self._node_list if node.core is None)
            candidates = [node for node in self._node_list if node.core is not None]
            armed = sum(1 for node in self._node_list if node.crash_point is not None)
            if candidates and down + armed < plan.max_down:
                victim = self._pick_victim(candidates)
                # Half the kills land inside the victim's next Work (its own stream, so turning this on
                # moved no other draw): between replies, write and messages, as kill -9 can.
                points = self._crash_point_rng
                if points.random() < 0.5:
                    victim.crash_point = points.choice(CRASH_POINTS)
                    self.trace(f"crash-armed {victim.node_id} at={victim.crash_point}")
                else:
                    victim.crash()
                    self._crashed(victim, rng)
                    self.trace(f"crash {victim.node_id} incarnation={victim.incarnation}")
            self._push(self._next_fault_us(plan.crash_interval_ticks), _CRASH_TIMER, None, None)
        elif kind == _RESTART:
            node = self._node_list[a]
            if node.core is None and node.incarnation == b:
                self._restart(node)
        elif kind == _PARTITION_TIMER:
            if not self.faults_active:
                return
            if self.network.partition is None:
                self._partition()
            self._push(self._next_fault_us(plan.partition_interval_ticks), _PARTITION_TIMER, None, None)
        elif kind == _HEAL:
            if self._partition_serial == a and self.network.partition is not None:
                self.network.partition = None
                self.trace("heal")
        elif kind == _REJOIN:
            isolation = self.network.isolation
            if self._isolation_serial == a and isolation is not None:
                self.network.isolation = None
                self.trace(f"rejoin {isolation.node}")
        elif kind == _PAUSE_TIMER:
            if not self.faults_active:
                return
            candidates = [
                n for n in self._node_list if n.core is not None and n.paused_until_us <= self.now_us
            ]
            if candidates:
                node = rng.choice(candidates)
                # Most pauses stall the leader (its own stream: no other draw moved): a leader that
                # stalls while the others elect a new one is what tests a lease's clock.
                if self._pause_leader_rng.random() < 0.8:
                    leaders = [n for n in candidates if n.core is not None and n.core.leader_id == n.node_id]
                    if leaders:
                        node = self._pause_leader_rng.choice(leaders)
                low, high = plan.pause_ticks
                node.paused_until_us = self.now_us + rng.randint(low, high) * tick_us
                node.missed_ticks = 0
                # Before any delivery held back during the pause: a resumed runtime counts the ticks
                # that are due before it hands the core what arrived meanwhile.
                self._push(node.paused_until_us, _RESUME, node.index, node.incarnation)
                self.count("pauses")
                self.trace(f"pause {node.node_id} until={node.paused_until_us}")
            self._push(self._next_fault_us(plan.pause_interval_ticks), _PAUSE_TIMER, None, None)
        elif kind == _RESUME:
            node = self._node_list[a]
            if node.executor is not None and node.incarnation == b:
                missed = node.missed_ticks
                replayed = min(missed, config.max_catchup_ticks)
                node.resume(replayed, missed - replayed)
                # A resumed process reads what queued up on its connections one connection at a time,
                # in no particular order: each sender's messages in order, but a client's request sent
                # late may come before a peer's message sent early. Seeded; all after the ticks above.
                held = node.held
                node.held = []
                queues: dict[str, list[tuple[str, bytes]]] = {}
                for delivery in held:
                    queues.setdefault(delivery[0], []).append(delivery)
                order = list(queues)
                self._resume_order_rng.shuffle(order)
                for source in order:
                    for delivery in queues[source]:
                        self._push(self.now_us, _DELIVER, node.node_id, delivery)
                self.trace(
                    f"resume {node.node_id} replayed={replayed} skipped={missed - replayed} held={len(held)}"
                )
        elif kind == _FAULTS_END:
            self.faults_active = False
            self.watch_leaders = False
            self.power_loss_on = False
            self.network.faults_active = False
            self.network.partition = None
            self.network.isolation = None
            for node in self._node_list:
                if isinstance(node.core, ByzantineCore):
                    node.core.active = False  # Byzantine behaviour is a fault too: it ends here
                node.crash_point = None  # a kill armed but not landed yet is called off
                if node.core is None:
                    self._restart(node)
            self.trace("faults end")
        elif kind == _WORKLOAD_END:
            self.accepting_ops = False
            self.trace("workload end")
            self._push(self.now_us, _DRAIN_CHECK, None, None)
        elif kind == _DRAIN_CHECK:
            if all(client.idle for client in self.clients) and self._converged():
                self.trace("converged")
                self._done = True
                return
            deadline_us = config.duration_us + config.drain_max_ticks * tick_us
            if self.now_us >= deadline_us:
                raise _Stop(
                    f"liveness: not done {config.drain_max_ticks} ticks after the workload: {self._stuck()}"
                )
            self._push(self.now_us + tick_us, _DRAIN_CHECK, None, None)
        else:
            raise ConfigError(f"unknown event kind {kind}")

    def crashed_mid_work(self, node: SimNode, point: str) -> None:
        self._crashed(node, self._fault_rng)
        if point == POWER_LOSS_POINT:
            self.count("power_losses")
            self.trace(f"power-loss {node.node_id} incarnation={node.incarnation} write lost in flight")
        else:
            self.trace(f"crash {node.node_id} incarnation={node.incarnation} mid-work after {point}")

    def _crashed(self, node: SimNode, rng: random.Random) -> None:
        self.count("crashes")
        if node.led_when_crashed:
            self._leader_crashes.append((self.now_us, node.node_id))
        low, high = self.config.faults.crash_down_ticks
        self._push(
            self.now_us + rng.randint(low, high) * self.config.tick_us, _RESTART, node.index, node.incarnation
        )

    def _pick_victim(self, candidates: list[SimNode]) -> SimNode:
        rng = self._fault_rng
        if rng.random() < self.config.faults.target_leader_probability:
            leaders = [n for n in candidates if n.core is not None and n.core.leader_id == n.node_id]
            if leaders:
                return rng.choice(leaders)
        return rng.choice(candidates)

    def _restart(self, node: SimNode) -> None:
        node.start()
        self.count("restarts")
        self._push(
            self.now_us + self._fault_rng.randrange(1, self.config.tick_us + 1),
            _TICK,
            node.index,
            node.incarnation,
        )
        self.trace(f"restart {node.node_id} incarnation={node.incarnation}")

    def _partition(self) -> None:
        rng = self._fault_rng
        plan = self.config.faults
        node_ids = list(self.node_ids)
        size = rng.randint(1, max(1, len(node_ids) - 1))
        side_b = set(rng.sample(node_ids, size))
        if len(node_ids) > 1 and rng.random() < plan.target_leader_probability:
            up = [n for n in self._node_list if n.core is not None]
            leaders = [n.node_id for n in up if n.core is not None and n.core.leader_id == n.node_id]
            if leaders:
                side_b = {rng.choice(leaders)}  # isolate the leader alone
        for client_id in self._clients_by_id:
            if rng.random() < 0.5:
                side_b.add(client_id)
        one_way = rng.random() < plan.one_way_probability
        # Half the partitions split only the nodes, and every client reaches both sides (as Jepsen's
        # clients do): a leader cut off from its peers then still answers clients, which is where a
        # deposed leader that does not know it yet serves stale reads. Its own stream: no other draw moved.
        exempt: frozenset[str] = frozenset()
        if self._partition_clients_rng.random() < 0.5:
            exempt = frozenset(self._clients_by_id)
            side_b -= exempt
        self.network.partition = Partition(frozenset(side_b), one_way, exempt)
        self._partition_serial += 1
        low, high = plan.partition_ticks
        self._push(
            self.now_us + rng.randint(low, high) * self.config.tick_us, _HEAL, self._partition_serial, None
        )
        self.count("partitions")
        self.trace(
            f"partition {'one-way ' if one_way else ''}{'nodes-only ' if exempt else ''}"
            f"{','.join(sorted(side_b))}"
        )

    def _converged(self) -> bool:
        nodes = [node for node in self._node_list if node.node_id not in self.byzantine]
        if any(node.core is None or node.paused_until_us > self.now_us for node in nodes):
            return False
        first = nodes[0].state_machine
        if any(node.state_machine.applied_index != first.applied_index for node in nodes):
            return False
        image = first.snapshot()
        return all(node.state_machine.snapshot() == image for node in nodes[1:])

    def _stuck(self) -> str:
        busy = [c.client_id for c in self.clients if not c.idle]
        applied = ", ".join(
            f"{n.node_id}={'down' if n.core is None else n.state_machine.applied_index}"
            for n in self._node_list
        )
        return f"clients still waiting: {busy or 'none'}; applied index per node: {applied}"

    def _stats(self, wall_s: float, check_s: float, ops_checked: int) -> SimStats:
        net = self.network.stats
        counters = self.counters
        rejected: dict[str, int] = {}
        for node in self._node_list:
            for reason, count in node.rejected().items():
                rejected[reason] = rejected.get(reason, 0) + count
        return SimStats(
            sim_time_us=self.now_us,
            wall_s=wall_s,
            check_s=check_s,
            events=self._events,
            messages_sent=net.sent,
            messages_delivered=net.delivered,
            dropped_omission=net.dropped_omission,
            dropped_partition=net.dropped_partition,
            dropped_down=net.dropped_down,
            duplicated=net.duplicated,
            delayed=net.delayed,
            corrupted=net.corrupted,
            decode_errors=sum(
                count
                for reason, count in rejected.items()
                if reason not in ("duplicate", "misaddressed", "unknown_sender")
            )
            + counters.get("client_decode_errors", 0),
            dedup_dropped=rejected.get("duplicate", 0),
            crashes=counters.get("crashes", 0),
            restarts=counters.get("restarts", 0),
            partitions=counters.get("partitions", 0),
            pauses=counters.get("pauses", 0),
            leader_isolations=counters.get("leader_isolations", 0),
            power_losses=counters.get("power_losses", 0),
            ops_invoked=sum(c.invoked for c in self.clients),
            ops_ok=sum(c.completed_ok for c in self.clients),
            ops_failed=sum(c.completed_fail for c in self.clients),
            ops_info=sum(c.completed_info for c in self.clients),
            ops_checked=ops_checked,
            entries_applied=max((n.state_machine.applied_index for n in self._node_list), default=0),
            max_delay_us=net.max_delay_us,
        )
