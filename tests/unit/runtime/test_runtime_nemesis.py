"""A randomized nemesis for the embedded runtime: Jepsen in one process.

The simulator (`dscore.sim`) checks the Raft *core* under seeded faults; this checks the asyncio *runtime*
around it (persist -> send -> apply ordering, restart from storage, dedup marks, proposal and read
bookkeeping, the membership admin API) on a 5-node `EmbeddedCluster` with the default 10 ms tick. For one
seed:

- `CLIENTS` `KvClient`s do put / append / cas / get on a few keys, recorded in one `HistoryRecorder`;
- a nemesis drawing from `random.Random` seeded by the seed acts every 100-300 ms for `FAULT_S` seconds,
  choosing among: kill -9 a random node or the leader (restarted from its storage by a later `restart`),
  partition a random minority from the majority (the leader on either side), isolate the leader, heal,
  switch seeded link faults on (drops, duplicates, reordering delays: `LinkFaults`) or off, a power cut
  (every running node killed at once and restarted 20-60 ms later), and, by seed (`seed % 4`: none,
  grow, shrink, both), add a fresh learner and later promote it, or remove a voter other than the leader
  (fresh ids, never reused). Membership changes run beside the other faults. Apart from the short power
  cut, at most a minority of the smallest configuration in play is down or cut off (learners counted
  too), so the cluster can always make progress;
- every other seed pair (`(seed // 2) % 2`) runs on a `SlowDisk`, whose saves suspend, so kills land in
  the middle of a `Ready` (its write lost whole, its messages never sent); the others on `MemoryStorage`;
  every other seed quadruple (`(seed // 4) % 2`) snapshots every `COMPACT_EVERY` entries, so restarts
  restore snapshots and lagging or new nodes catch up by InstallSnapshot;
- then everything heals: link faults off, partitions healed, dead nodes restarted, an unfinished
  membership change driven to its end; the clients run `AFTER_S` longer and stop.

It then asserts (a) the history is linearizable for the kv model, (b) every member's state machine
converges to the same applied index and image (data and sessions), (c) no node task failed (nor did a
task raise unhandled, nor did a node reject a message for a reason other than a duplicate or a removed
sender), and (d) operations invoked after the heal succeeded, and a final read of every key does. A
failure prints the seed, the pytest id to rerun, the figures and the nemesis schedule, and writes the
history as EDN (`dscore check FILE --model kv` explains it). A rerun draws from the same seeded streams
but does not replay bit-exactly: the runtime runs on real timers and the event loop's scheduling, so the
timing (which node leads when, client interleavings, and with them some nemesis choices) differs.

`test_the_nemesis_catches_a_broken_runtime` shows the checks are not vacuous: a state machine that
answers ok to appends it skips (on every replica alike, so only the history can tell), and a disk that
acknowledges writes it then loses, are each caught within a few short seeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dscore.check import HistoryRecorder, Verdict, check_history
from dscore.check.history import NEMESIS_PROCESS, Op, OpType
from dscore.core.ids import NodeId
from dscore.replica.executor import ExecutorConfig
from dscore.runtime.client import ClientConfig, ClientStats, Completion, KvClient, OpOutcome, mixed_workload
from dscore.runtime.cluster import EmbeddedCluster, raft_factory
from dscore.runtime.node import RuntimeConfig, StateMachineFactory
from dscore.statemachine.kv import _APPEND, _OK, KvResult, KvStateMachine
from dscore.storage.base import Storage, WriteBatch
from dscore.storage.memory import MemoryStorage
from dscore.transport.memory import LinkFaults

#: how long the nemesis acts
FAULT_S = 3.0
#: how long clients keep going once everything is healed
AFTER_S = 0.5
NODES = 5
CLIENTS = 4
KEYS = ("x", "y", "z")
CLIENT = ClientConfig(op_timeout_s=0.5, attempt_timeout_s=0.2, retry_backoff_s=0.005)
#: membership changes while faults go on (they may time out and are then finished after the heal)
CHANGE_TIMEOUT_S = 2.0
RECOVERY_TIMEOUT_S = 10.0
CHECK_TIMEOUT_S = 60.0
MEMBERSHIP_PLANS = ("none", "grow", "shrink", "both")
MIN_VOTERS, MAX_MEMBERS = 3, 7
#: why a runtime may drop an inbound message here: link duplicates, and messages of a removed node
EXPECTED_REJECTIONS = frozenset({"duplicate", "unknown_sender"})
#: snapshot (and compact the log) this often on the seeds that do (`(seed // 4) % 2`), so restarts restore
#: snapshots and lagging or new nodes catch up by InstallSnapshot
COMPACT_EVERY = 64
#: a slow disk's latency per save: uniform in [0, this]
SLOW_DISK_MAX_S = 0.002
#: a broken disk drops one in this many writes of protocol state
LOST_WRITE_EVERY = 20

DEFAULT_SEEDS = (1, 2, 3, 4)
SWEEP_SEEDS = tuple(range(100, 140))
#: seeds for the broken variants (each draws kills or a power cut in its first 1.5 s)
BROKEN_SEEDS = (7, 1, 6, 10, 13)


@dataclass(frozen=True, slots=True)
class Event:
    at_s: float
    action: str
    detail: str

    def __str__(self) -> str:
        return f"{self.at_s:7.3f}s  {self.action:<14} {self.detail}"


@dataclass
class NemesisReport:
    seed: int
    replay: str
    plan: str
    disk: str
    compact_every: int | None
    schedule: list[Event] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [
            f"runtime nemesis, seed {self.seed} (membership plan {self.plan!r}, disk {self.disk}, "
            f"snapshot every {self.compact_every or 'default'} entries)",
            f"rerun: .venv/bin/pytest '{self.replay}'  (same seeded nemesis; real timers: not bit-exact)",
            *self.summary,
            "nemesis schedule:",
            *(f"  {event}" for event in self.schedule),
            "problems (last: a checker's explanation can be long):",
            *(f"  - {p}" for p in self.problems),
        ]
        return "\n".join(lines)


class SlowDisk(MemoryStorage):
    """A `MemoryStorage` whose saves take a while (seeded). The node's loop task suspends in every save (a
    `MemoryStorage` save never does), so a kill -9 can land while a `Ready` is half carried out: its write
    not done (and lost whole, like an unfinished fsync) and its messages not sent."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    async def save(self, batch: WriteBatch) -> None:
        await asyncio.sleep(self.rng.uniform(0, SLOW_DISK_MAX_S))
        await super().save(batch)


def acting_leader(cluster: EmbeddedCluster) -> NodeId | None:
    """The running node that leads in the highest term (a stale leader may still think it leads)."""
    best: NodeId | None = None
    best_term = -1
    for node in cluster.node_ids:
        runtime = cluster.runtime(node)
        if runtime is not None and runtime.is_leader:
            term = runtime.status().term or 0
            if term > best_term:
                best, best_term = node, term
    return best


class Nemesis:
    """Chooses and applies faults from one seeded stream, keeping a majority of every configuration that
    may be in force up and connected. See the module docstring."""

    def __init__(self, cluster: EmbeddedCluster, seed: int, plan: str, history: HistoryRecorder) -> None:
        self.cluster = cluster
        self.rng = random.Random(f"nemesis/{seed}")
        self.link_rng = random.Random(f"links/{seed}")
        self.plan = plan
        self.history = history
        self.schedule: list[Event] = []
        self.started_at = asyncio.get_running_loop().time()
        self.down: set[NodeId] = set()
        self.cut: set[NodeId] = set()
        self.links_on = False
        self.voters: frozenset[NodeId] = frozenset(cluster.node_ids)
        self.learners: set[NodeId] = set()
        #: (voters before, voters after, the call to finish it) of a change not known to be done
        self.change: tuple[frozenset[NodeId], frozenset[NodeId], Callable[[float], Any]] | None = None
        self.change_task: asyncio.Task[None] | None = None
        self.change_what = ""
        self.change_done: Callable[[], None] = lambda: None
        self.next_id = len(cluster.node_ids) + 1
        self.grown = self.shrunk = 0

    # -- bookkeeping --------------------------------------------------------------------------------

    def note(self, action: str, detail: str) -> None:
        at_s = asyncio.get_running_loop().time() - self.started_at
        self.schedule.append(Event(at_s, action, detail))
        self.history.record(Op(NEMESIS_PROCESS, OpType.INFO, action, None, detail))

    def budget(self) -> int:
        """How many members may be down or cut off: a minority of the smallest configuration in play."""
        sizes = [len(self.voters)]
        if self.change is not None:
            sizes += [len(self.change[0]), len(self.change[1])]
        return (min(sizes) - 1) // 2

    def impaired(self, extra: Sequence[NodeId] = ()) -> int:
        members = set(self.cluster.node_ids)
        return len((self.down | self.cut | set(extra)) & members)

    def live(self) -> list[NodeId]:
        return [n for n in self.cluster.node_ids if n not in self.down]

    # -- the actions --------------------------------------------------------------------------------

    def choices(self) -> list[tuple[str, int]]:
        budget, impaired = self.budget(), self.impaired()
        options: list[tuple[str, int]] = []
        if impaired < budget:
            options += [("kill", 2), ("kill_leader", 2), ("partition", 2), ("isolate_leader", 2)]
        options.append(("power_cut", 1))
        if self.down:
            options.append(("restart", 3))
        if self.cut:
            options.append(("heal", 2))
        options.append(("links_off", 1) if self.links_on else ("links_on", 2))
        if self.change is None:
            members = len(self.cluster.node_ids)
            if self.plan in ("grow", "both") and not self.cut and members < MAX_MEMBERS and self.grown < 2:
                options.append(("grow", 2))
            if self.learners:
                options.append(("promote", 3))
            # a removal shrinks the budget: only while what is impaired fits the smaller configuration
            shrinkable = len(self.voters) > MIN_VOTERS and impaired <= (len(self.voters) - 2) // 2
            if self.plan in ("shrink", "both") and shrinkable and self.shrunk < 2:
                options.append(("remove", 1))
        return options

    async def step(self) -> None:
        self.reap_change()
        options = self.choices()
        action = self.rng.choices([o for o, _ in options], [w for _, w in options])[0]
        await getattr(self, f"do_{action}")()

    async def do_kill(self, leader: bool = False) -> None:
        target = acting_leader(self.cluster) if leader else None
        if target is None:
            candidates = [n for n in self.live() if self.cluster.runtime(n) is not None]
            if not candidates:
                return
            target = self.rng.choice(sorted(candidates))
        if self.impaired([target]) > self.budget() or self.cluster.runtime(target) is None:
            return
        self.cluster.kill(target)
        self.down.add(target)
        self.note("kill", f"kill -9 {target}{' (leader)' if leader else ''}")

    async def do_kill_leader(self) -> None:
        await self.do_kill(leader=True)

    async def do_power_cut(self) -> None:
        """Every running node is killed at the same instant (a power failure) and restarted shortly after:
        the one fault that loses every node's unfinished save at once."""
        victims = [n for n in self.live() if self.cluster.runtime(n) is not None]
        for node in victims:
            self.cluster.kill(node)
        self.note("power_cut", f"kill -9 {','.join(victims)} at once")
        await asyncio.sleep(self.rng.uniform(0.02, 0.06))
        back = [n for n in victims if n not in self.cluster.removed]
        for node in back:
            await self.cluster.restart(node)
        self.note("power_back", f"restart {','.join(back)} from their storage")

    async def do_restart(self) -> None:
        target = self.rng.choice(sorted(self.down))
        self.down.discard(target)
        if target in self.cluster.removed:
            return
        await self.cluster.restart(target)
        self.note("restart", f"restart {target} from its storage")

    async def do_partition(self) -> None:
        room = self.budget() - len(self.down & set(self.cluster.node_ids))
        if room < 1:
            return
        candidates = sorted(self.live())
        minority = set(self.rng.sample(candidates, self.rng.randint(1, min(room, len(candidates) - 1))))
        majority = [n for n in self.cluster.node_ids if n not in minority]
        self.cluster.heal()
        self.cluster.partition([sorted(minority), majority])
        self.cut = minority
        leader = acting_leader(self.cluster)
        where = f" (leader {leader} in the minority)" if leader in minority else ""
        self.note("partition", f"{{{','.join(sorted(minority))}}} | {{{','.join(majority)}}}{where}")

    async def do_isolate_leader(self) -> None:
        leader = acting_leader(self.cluster)
        if leader is None or leader in self.cut:
            return
        if self.impaired([leader]) > self.budget():
            if len((self.down & set(self.cluster.node_ids)) | {leader}) > self.budget():
                return
            self.cluster.heal()
            self.cut = set()
        self.cluster.isolate(leader)
        self.cut.add(leader)
        self.note("isolate", f"isolate leader {leader}")

    async def do_heal(self) -> None:
        self.cluster.heal()
        self.cut = set()
        self.note("heal", "heal partitions and isolation")

    async def do_links_on(self) -> None:
        rng = self.rng
        faults = LinkFaults(
            drop_probability=round(rng.uniform(0.0, 0.15), 3),
            duplicate_probability=round(rng.uniform(0.0, 0.3), 3),
            delay_probability=round(rng.uniform(0.0, 0.3), 3),
            max_delay_s=round(rng.uniform(0.005, 0.03), 3),
        )
        self.cluster.network.set_link_faults(faults, self.link_rng)
        self.links_on = True
        self.note("links_on", repr(faults))

    async def do_links_off(self) -> None:
        self.cluster.network.set_link_faults(None)
        self.links_on = False
        self.note("links_off", "links reliable again")

    async def do_grow(self) -> None:
        node = f"n{self.next_id}"
        self.next_id += 1
        self.grown += 1

        def finish(timeout_s: float) -> Any:
            return self.cluster.add_node(node, as_learner=True, timeout_s=timeout_s)

        def done() -> None:
            self.learners.add(node)

        self.start_change(f"add learner {node}", self.voters, finish, done)

    async def do_promote(self) -> None:
        node = self.rng.choice(sorted(self.learners))

        def finish(timeout_s: float) -> Any:
            return self.cluster.promote_node(node, timeout_s=timeout_s)

        def done() -> None:
            self.learners.discard(node)

        self.start_change(f"promote {node}", self.voters | {node}, finish, done)

    async def do_remove(self) -> None:
        leader = acting_leader(self.cluster)
        candidates = sorted(n for n in self.voters if n != leader)
        node = self.rng.choice(candidates)
        self.shrunk += 1

        def finish(timeout_s: float) -> Any:
            return self.cluster.remove_node(node, timeout_s=timeout_s)

        def done() -> None:
            self.down.discard(node)
            self.cut.discard(node)

        self.start_change(f"remove {node}", self.voters - {node}, finish, done)

    # -- membership changes run beside the other faults ---------------------------------------------

    def start_change(
        self,
        what: str,
        new_voters: frozenset[NodeId],
        finish: Callable[[float], Any],
        done: Callable[[], None],
    ) -> None:
        old = self.voters
        self.change = (old, new_voters, finish)
        self.change_what = what
        self.note("membership", f"{what} (voters {','.join(sorted(old))} -> {','.join(sorted(new_voters))})")

        async def run() -> None:
            await finish(CHANGE_TIMEOUT_S)
            self.voters = new_voters
            self.change = None
            done()
            self.note("membership", f"{what}: committed")

        self.change_done = done
        self.change_task = asyncio.ensure_future(run())

    def reap_change(self) -> None:
        task = self.change_task
        if task is None or not task.done():
            return
        self.change_task = None
        if not task.cancelled() and (error := task.exception()) is not None:
            # Unknown outcome: keep counting both configurations until the change is finished after heal.
            self.note("membership", f"{self.change_what}: not finished yet ({type(error).__name__})")

    async def recover(self) -> None:
        """Heal everything, restart the dead, finish a pending membership change."""
        if self.change_task is not None:
            await asyncio.gather(self.change_task, return_exceptions=True)
            self.reap_change()
        self.cluster.network.set_link_faults(None)
        self.links_on = False
        self.cluster.heal()
        self.cut = set()
        for node in sorted(self.down):
            if node not in self.cluster.removed:
                await self.cluster.restart(node)
        self.down.clear()
        self.note("recover", "links reliable, partitions healed, every node restarted")
        if self.change is not None:
            _old, new_voters, finish = self.change
            await finish(RECOVERY_TIMEOUT_S)
            self.voters = new_voters
            self.change = None
            self.change_done()
            self.note("membership", f"{self.change_what}: committed after the heal")


# -- clients --------------------------------------------------------------------------------------------


@contextmanager
def failures_captured(into: list[str]) -> Iterator[None]:
    """Collect node failures (logged by the runtime) and exceptions no task retrieved."""

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            into.append(record.getMessage())

    handler = Collect(logging.ERROR)
    logger = logging.getLogger("dscore.runtime")
    logger.addHandler(handler)
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def on_error(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        into.append(f"unhandled in the event loop: {context.get('message')} {context.get('exception')!r}")

    loop.set_exception_handler(on_error)
    try:
        yield
    finally:
        loop.set_exception_handler(previous)
        logger.removeHandler(handler)


async def converge(cluster: EmbeddedCluster, timeout_s: float) -> str | None:
    """None once every member runs with the same applied index and state; else what differs."""

    def images() -> dict[NodeId, tuple[int, bytes] | None]:
        out: dict[NodeId, tuple[int, bytes] | None] = {}
        for node in cluster.node_ids:
            runtime = cluster.runtime(node)
            sm = runtime.state_machine if runtime is not None else None
            out[node] = None if sm is None else (sm.applied_index, sm.snapshot())
        return out

    def same() -> bool:
        seen = images().values()
        return None not in seen and len(set(seen)) == 1

    try:
        await cluster.wait_for(same, timeout_s)
    except TimeoutError:
        parts = []
        for node, image in images().items():
            runtime = cluster.runtime(node)
            if image is None or runtime is None:
                parts.append(f"{node}: down")
            else:
                data = {k: runtime.state_machine.read(k) for k in KEYS}
                parts.append(f"{node}: applied {image[0]} {data}")
        return "; ".join(parts)
    return None


async def run_nemesis(
    seed: int,
    replay: str,
    history_dir: Path | None = None,
    *,
    fault_s: float = FAULT_S,
    storage_factory: Callable[[NodeId], Storage] | None = None,
    make_state_machine: StateMachineFactory | None = None,
) -> NemesisReport:
    """One seeded run (see the module docstring); every check's failure is a line of `problems`."""
    plan = MEMBERSHIP_PLANS[seed % len(MEMBERSHIP_PLANS)]
    slow_disk = (seed // 2) % 2 == 1
    disk = "slow (yields in every save)" if slow_disk else "memory"
    if storage_factory is not None:
        disk = "given"
    elif slow_disk:
        storage_factory = lambda node: SlowDisk(random.Random(f"disk/{seed}/{node}"))  # noqa: E731
    compact = (seed // 4) % 2 == 1
    report = NemesisReport(seed, replay, plan, disk, COMPACT_EVERY if compact else None)
    history = HistoryRecorder()
    stats = ClientStats()
    failures: list[str] = []
    rejected: dict[str, int] = {}
    snapshots = 0
    config = (
        RuntimeConfig(executor=ExecutorConfig(snapshot_every_entries=COMPACT_EVERY))
        if compact
        else RuntimeConfig()
    )
    cluster = EmbeddedCluster(
        raft_factory(),
        NODES,
        seed=seed,
        config=config,
        storage_factory=storage_factory,
        make_state_machine=make_state_machine,
    )
    with failures_captured(failures):
        try:
            await drive(cluster, Nemesis(cluster, seed, plan, history), report, stats, fault_s)
            failures.extend(f"{n}: {e!r}" for n, e in cluster.node_failures().items())
            for node in cluster.live_nodes():
                runtime = cluster.runtime(node)
                assert runtime is not None
                for reason, count in runtime.rejected.items():
                    rejected[reason] = rejected.get(reason, 0) + count
                snapshots += runtime.executor.counters.snapshots_taken
        except Exception as error:
            report.problems.append(f"the run raised {error!r}:\n{traceback.format_exc()}")
        finally:
            await cluster.stop()
    unexpected = {r: c for r, c in rejected.items() if r not in EXPECTED_REJECTIONS}
    if unexpected:
        report.problems.append(f"inbound messages rejected for unexpected reasons: {unexpected}")
    if failures:
        report.problems.append(f"node or task failures: {failures}")
    result = check_history(history.history(), model="kv", timeout_s=CHECK_TIMEOUT_S)
    if result.verdict is not Verdict.LINEARIZABLE:
        report.problems.append(f"history {result.verdict.name}: {result.explanation}")
    outcomes = [c.outcome for c in stats.completions]
    net = cluster.network
    report.summary += [
        f"clients: ok={outcomes.count(OpOutcome.OK)} fail={outcomes.count(OpOutcome.FAIL)} "
        f"info={outcomes.count(OpOutcome.UNKNOWN)}; check {result.verdict.name} in {result.elapsed_s:.2f}s "
        f"over {result.ops_checked} ops",
        f"network: delivered={net.delivered} dropped={net.dropped} duplicated={net.duplicated} "
        f"delayed={net.delayed}; rejected by the live nodes: {rejected}",
        f"elections={len(cluster.elections)}; snapshots taken by the live nodes={snapshots}; "
        f"members at the end: {','.join(cluster.node_ids)}",
    ]
    if report.problems and history_dir is not None:
        path = history_dir / f"nemesis-{seed}.edn"
        path.write_text(history.history().to_edn())
        report.summary.append(f"history written to {path}")
    return report


async def drive(
    cluster: EmbeddedCluster, nemesis: Nemesis, report: NemesisReport, stats: ClientStats, fault_s: float
) -> None:
    """Start, run clients beside the nemesis, heal, let clients finish, then the liveness and convergence
    checks (the history is checked by the caller)."""
    loop = asyncio.get_running_loop()
    history = nemesis.history
    report.schedule = nemesis.schedule
    await cluster.start()
    await cluster.wait_for_leader(RECOVERY_TIMEOUT_S)
    nemesis.started_at = loop.time()
    endpoint = await cluster.client_endpoint("clients")
    clients = [
        KvClient(
            endpoint,
            f"c{i}",
            config=CLIENT,
            history=history,
            process=i,
            process_stride=CLIENTS,
            stats=stats,
            rng=random.Random(f"client/{report.seed}/{i}"),
        )
        for i in range(CLIENTS)
    ]
    stop = asyncio.Event()
    workers = [
        asyncio.ensure_future(
            mixed_workload(
                c, KEYS, random.Random(f"work/{report.seed}/{i}"), lambda: not stop.is_set(), think_s=0.01
            )
        )
        for i, c in enumerate(clients)
    ]
    try:
        fault_end = loop.time() + fault_s
        while loop.time() < fault_end:
            await asyncio.sleep(nemesis.rng.uniform(0.1, 0.3))
            await nemesis.step()
        await nemesis.recover()
        healed_at = loop.time()

        def after_heal() -> list[Completion]:
            return [
                c
                for c in stats.completions
                if c.outcome is OpOutcome.OK and c.time_s - c.latency_s >= healed_at
            ]

        await asyncio.sleep(AFTER_S)
        with contextlib.suppress(TimeoutError):  # a slow machine: give the first success more time
            await cluster.wait_for(lambda: bool(after_heal()), RECOVERY_TIMEOUT_S)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    after = after_heal()
    report.summary.append(f"operations invoked after the heal that succeeded: {len(after)}")
    if not after:
        report.problems.append("liveness: no operation invoked after the heal succeeded")
    reader = KvClient(endpoint, "final", config=ClientConfig(op_timeout_s=5.0), history=history, process=-1)
    for key in KEYS:
        if not (await reader.get(key)).ok:
            report.problems.append(f"liveness: the final read of {key!r} failed")
    differs = await converge(cluster, RECOVERY_TIMEOUT_S)
    if differs is not None:
        report.problems.append(f"replicas did not converge: {differs}")


# -- the tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", DEFAULT_SEEDS)
async def test_runtime_survives_the_nemesis(
    seed: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    report = await run_nemesis(seed, request.node.nodeid, tmp_path)
    assert not report.problems, report.describe()


@pytest.mark.slow
@pytest.mark.parametrize("seed", SWEEP_SEEDS)
async def test_runtime_survives_the_nemesis_sweep(
    seed: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    report = await run_nemesis(seed, request.node.nodeid, tmp_path)
    assert not report.problems, report.describe()


class SkipsEveryTenthAppend(KvStateMachine):
    """A broken state machine: an append at a log index divisible by 10 is answered ok and not done
    (on every replica alike, so replicas still agree: only the history can tell)."""

    def _execute(self, code: int, key: str, a: str | None, b: str | None) -> KvResult:
        if code == _APPEND and self.applied_index % 10 == 0:
            return _OK
        return super()._execute(code, key, a, b)


class LosesWrites(MemoryStorage):
    """A broken disk: it acknowledges every write but silently drops one in `LOST_WRITE_EVERY` of those
    that carry protocol state (a vote, entries). What is lost stays lost: the node's later writes carry
    later input positions, so no redelivery brings the lost inputs back, and a restart finds a log with
    holes or a forgotten vote.

    (A disk that only *delays* writes, a volatile cache lost in a power cut, is no longer caught by this
    short run: since the memory transport keeps every inbox like a Kafka partition, a restarted node
    resumes after the positions its storage really kept and is handed the lost appends and client requests
    again, which repairs the loss in most runs. A lost vote can still elect two leaders in one term; the
    simulator's planted bugs cover that.)"""

    def __init__(self) -> None:
        super().__init__()
        self.state_writes = 0

    async def save(self, batch: WriteBatch) -> None:
        if batch.hard_state is not None or batch.entries:
            self.state_writes += 1
            if self.state_writes % LOST_WRITE_EVERY == 0:
                return
        await super().save(batch)


@pytest.mark.parametrize("broken", ["skips_appends", "loses_writes"])
async def test_the_nemesis_catches_a_broken_runtime(broken: str, request: pytest.FixtureRequest) -> None:
    """The checks are not vacuous: two deliberately broken variants, each caught within a few seeds of a
    short run. A state machine that answers ok to some appends it skips is caught by the history check
    (replicas agree, all wrong alike); a disk that acknowledges writes it loses leaves restarted nodes with
    holes or forgotten votes, caught by the history check, replicas that never converge, or a failure."""
    storage_factory: Callable[[NodeId], Storage] | None = None
    make_state_machine: StateMachineFactory | None = None
    if broken == "skips_appends":
        make_state_machine = SkipsEveryTenthAppend
    else:
        storage_factory = lambda _node: LosesWrites()  # noqa: E731
    caught: list[str] = []
    for seed in BROKEN_SEEDS:
        report = await run_nemesis(
            seed,
            request.node.nodeid,
            fault_s=1.5,
            storage_factory=storage_factory,
            make_state_machine=make_state_machine,
        )
        if report.problems:
            caught = report.problems
            break
    assert caught, f"{broken}: no check failed in seeds {BROKEN_SEEDS}"
    assert any(p.startswith(("history NOT_LINEARIZABLE", "replicas did not converge")) for p in caught), (
        caught
    )
