"""The chaos service's scheduler on a virtual clock (no sleeps): once, every N seconds M times, after a
delay; lasting faults end on time; a stop ends what is in force; failures are recorded and counted; random
choices replay from a seed. Faults land on real child processes and on real `FaultyTransport`s."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from chaos_helpers import (
    KEY,
    T0,
    Children,
    FixedLeader,
    VirtualClock,
    make_service,
    metric,
    running,
    settle,
    state_of,
    stopped,
    wait_state,
)

from dscore.transport.faults import FaultyTransport, MemoryControlChannel
from dscore.transport.memory import MemoryNetwork
from dscore_chaos.backends.base import Hit, InjectionError
from dscore_chaos.model import ChaosKind, FaultRequest, FaultSpec, FaultState, InvalidFaultError
from dscore_chaos.service import ChaosService, KindUnavailableError, TooManyFaultsError, UnknownFaultError

INJECTED = "dscore_chaos_faults_injected_total"
FAILED = "dscore_chaos_injections_failed_total"


def request(kind: str, target: str | None = None, **body: Any) -> FaultRequest:
    return FaultRequest.model_validate({"kind": kind, "target": target, **body})


async def test_a_kill_once_hits_the_named_process_now(clock: VirtualClock, children: Children) -> None:
    victim = children.start("node-n1")
    bystander = children.start("node-n2")
    service = make_service(clock, run_dir=children.run_dir)
    fault = service.start_fault(request("process_kill", "node-n1"))
    await settle()
    assert victim.wait(timeout=10) == -9
    assert bystander.poll() is None
    assert fault.state is FaultState.FINISHED
    (injection,) = fault.injections
    assert (injection.at, injection.outcome, injection.target) == (T0, "injected", "node-n1")
    assert f"pid {victim.pid}" in injection.detail
    assert metric(service, INJECTED, kind="kill") == 1
    assert metric(service, INJECTED, kind="pause") == 0


async def test_a_pause_every_10_s_three_times_resumes_after_its_duration(
    clock: VirtualClock, children: Children
) -> None:
    pid = children.start("node-n1").pid
    service = make_service(clock, run_dir=children.run_dir)
    fault = service.start_fault(
        request("process_pause", "node-n1", params={"duration_s": 4}, schedule={"every_s": 10, "times": 3})
    )
    for round_start in (0, 10, 20):
        await clock.advance(0 if round_start == 0 else 6)
        wait_state(pid, stopped, "stopped")
        assert fault.state is FaultState.ACTIVE
        await clock.advance(4)
        wait_state(pid, running, "running again")
        assert fault.injections[-1].ended_at == T0 + round_start + 4
        assert (fault.state, fault.next_at) == (
            (FaultState.SCHEDULED, T0 + round_start + 10) if round_start < 20 else (FaultState.FINISHED, None)
        )
    assert [i.at for i in fault.injections] == [T0, T0 + 10, T0 + 20]
    assert all("SIGCONT" in (i.end_detail or "") for i in fault.injections)
    assert metric(service, INJECTED, kind="pause") == 3
    assert clock.sleepers == 0


async def test_start_after_waits_and_a_stop_resumes_what_is_paused(
    clock: VirtualClock, children: Children
) -> None:
    pid = children.start("node-n1").pid
    service = make_service(clock, run_dir=children.run_dir)
    fault = service.start_fault(
        request(
            "process_pause",
            "node-n1",
            params={"duration_s": 30},
            schedule={"every_s": 60, "times": 5, "start_after_s": 15},
        )
    )
    await clock.advance(14.9)
    assert state_of(pid) != "T" and fault.injections == type(fault.injections)()
    assert fault.next_at == T0 + 15
    await clock.advance(0.1)
    wait_state(pid, stopped, "stopped")
    stopped_fault = await service.stop_fault(fault.id)
    assert stopped_fault is fault and fault.state is FaultState.STOPPED
    wait_state(pid, running, "resumed by the stop")
    assert fault.injections[-1].ended_at == T0 + 15
    await clock.advance(600)  # nothing more happens
    assert len(fault.injections) == 1 and state_of(pid) != "T"
    assert service.active_count() == 0


async def test_failed_injections_are_recorded_counted_and_the_schedule_goes_on(
    clock: VirtualClock, children: Children
) -> None:
    children.start("node-n1")
    (children.run_dir / "node-n2.pid").write_text("not a pid")
    children.start("node-n3", marker="someone-else")  # a stale pid file: a process that is not ours
    service = make_service(clock, run_dir=children.run_dir)
    missing = service.start_fault(request("process_kill", "node-n9", schedule={"every_s": 5, "times": 2}))
    garbage = service.start_fault(request("process_kill", "node-n2"))
    foreign = service.start_fault(request("process_kill", "node-n3"))
    no_leader = service.start_fault(request("process_kill", "leader"))  # no node URLs: nobody to ask
    await clock.advance(5)
    assert [i.outcome for i in missing.injections] == ["failed", "failed"]
    assert "not one of" in missing.injections[0].detail
    assert "holds no pid" in garbage.injections[0].detail
    assert "not a process with" in foreign.injections[0].detail
    assert children.procs["node-n3"].poll() is None  # untouched
    assert "no leader found" in no_leader.injections[0].detail
    assert metric(service, FAILED, kind="process_kill") == 5
    assert metric(service, INJECTED, kind="kill") == 0
    assert {f.state for f in (missing, garbage, foreign, no_leader)} == {FaultState.FINISHED}


async def test_random_targets_replay_from_the_seed(clock: VirtualClock, children: Children) -> None:
    for i in range(1, 6):
        children.start(f"node-n{i}")

    async def targets(seed: int) -> list[str]:
        service = make_service(clock, run_dir=children.run_dir, seed=seed)
        fault = service.start_fault(
            request("process_pause", "random", params={"duration_s": 1}, schedule={"every_s": 1, "times": 6})
        )
        await clock.advance(6)
        await service.wait_for(lambda: fault.state is FaultState.FINISHED, 10)
        return [i.target or "" for i in fault.injections]

    first = await targets(3)
    assert await targets(3) == first
    assert len(set(first)) > 1
    rng = random.Random("3:processes")
    assert first == [rng.choice([f"node-n{i}" for i in range(1, 6)]) for _ in range(6)]


# -- transport faults through the control channel ---------------------------------------------------


class Cluster:
    """Three wrapped memory transports reading one control channel."""

    def __init__(self, clock: VirtualClock) -> None:
        self.channel = MemoryControlChannel()
        network = MemoryNetwork(["n1", "n2", "n3"])
        self.nodes = {
            n: FaultyTransport(
                network.endpoint(n),
                n,
                rng=random.Random(n),
                clock=clock.now,
                control=self.channel.source(),
                auth_key=KEY,
            )
            for n in ("n1", "n2", "n3")
        }

    async def start(self) -> None:
        for node in self.nodes.values():
            await node.start({})

    async def close(self) -> None:
        for node in self.nodes.values():
            await node.close()

    def rules(self) -> dict[str, list[str]]:
        return {n: [r.fault_id for r in t.rules.active] for n, t in self.nodes.items()}


async def test_a_partition_of_the_leader_reaches_every_node_and_ends_with_a_stop(clock: VirtualClock) -> None:
    cluster = Cluster(clock)
    await cluster.start()
    service = make_service(clock, channel=cluster.channel, leader=FixedLeader("n2"))
    fault = service.start_fault(request("partition", params={"duration_s": 20}))
    await settle()
    command_id = f"{fault.id}.0"
    assert cluster.rules() == {"n1": [command_id], "n2": [command_id], "n3": [command_id]}
    n2 = cluster.nodes["n2"].rules.active[0]
    assert n2.peers == frozenset({"n1", "n3"}) and n2.expires_at_s == T0 + 20
    assert cluster.nodes["n1"].rules.active[0].peers == frozenset({"n2"})
    assert fault.injections[0].target == "n2 | n1,n3"
    assert metric(service, INJECTED, kind="partition") == 1 and metric(service, INJECTED, kind="heal") == 0
    await clock.advance(20)
    assert cluster.rules() == {"n1": [], "n2": [], "n3": []}
    for node in cluster.nodes.values():  # the stop came at the expiry: the rule had just ended
        assert node.fault_stats.commands == {"started": 1, "not_active": 1} and node.rules.expired == 1
    assert metric(service, INJECTED, kind="heal") == 1
    assert fault.state is FaultState.FINISHED
    await cluster.close()


async def test_omission_and_delay_name_the_nodes_and_peers(clock: VirtualClock) -> None:
    cluster = Cluster(clock)
    await cluster.start()
    service = make_service(clock, channel=cluster.channel)
    omission = service.start_fault(
        request(
            "omission",
            "n1",
            params={"drop_probability": 0.25, "peers": ["n3"], "direction": "both", "duration_s": 9},
        )
    )
    delay = service.start_fault(request("delay", params={"delay_ms": 150, "duration_s": 9}))
    await settle()
    rules = {n: {r.fault_id: r for r in t.rules.active} for n, t in cluster.nodes.items()}
    drop = rules["n1"][f"{omission.id}.0"]
    assert (drop.drop_probability, drop.peers, drop.direction.value) == (0.25, frozenset({"n3"}), "both")
    assert f"{omission.id}.0" not in rules["n2"]  # only n1 drops
    assert all(rules[n][f"{delay.id}.0"].delay_s == 0.15 for n in rules)  # target all: every node
    assert (
        metric(service, INJECTED, kind="link_drop") == 1 and metric(service, INJECTED, kind="link_delay") == 1
    )
    await service.stop_fault(delay.id)
    await settle()
    assert cluster.rules() == {"n1": [f"{omission.id}.0"], "n2": [], "n3": []}
    await clock.advance(9)
    assert cluster.rules() == {"n1": [], "n2": [], "n3": []}
    await cluster.close()


async def test_a_lost_stop_still_ends_at_the_expiry_on_the_nodes(clock: VirtualClock) -> None:
    cluster = Cluster(clock)
    await cluster.start()
    service = make_service(clock, channel=cluster.channel)
    service.start_fault(request("partition", params={"groups": [["n1"], ["n2", "n3"]], "duration_s": 5}))
    await settle()
    cluster.channel.publish = lambda data: None  # type: ignore[method-assign]  # the stop never arrives
    await clock.advance(5)
    n1 = cluster.nodes["n1"]
    assert len(n1.rules.active) == 1  # the stop was lost ...
    assert n1.rules.on_send("n2", clock.now(), random.Random(0)) == 0.0  # ... the expiry ended it anyway
    assert n1.rules.active == ()
    await cluster.close()


# -- limits and checks ------------------------------------------------------------------------------


async def test_requests_are_checked_before_anything_is_scheduled(
    clock: VirtualClock, children: Children
) -> None:
    service = make_service(clock, channel=MemoryControlChannel(), max_duration_s=60)
    with pytest.raises(KindUnavailableError, match="pod_kill is not enabled"):
        service.start_fault(request("pod_kill"))
    bad = [
        (request("partition", "n9", params={"duration_s": 5}), "not nodes of this cluster"),
        (request("partition", params={"duration_s": 5}), "needs a backend that can see the nodes"),
        (request("omission", params={"drop_probability": 0.5, "duration_s": 61}), "at most 60 s"),
        (
            request("delay", params={"delay_ms": 5, "duration_s": 10}, schedule={"every_s": 5, "times": 2}),
            "must not exceed schedule.every_s",
        ),
        (request("partition", "n1", params={"groups": [["n1"], ["n2"]], "duration_s": 1}), "not both"),
        (request("omission", params={"duration_s": 1}), "drop_probability"),
        (request("omission", params={"drop_probability": 0.1, "duration_s": 1, "colour": "red"}), "colour"),
    ]
    for req, problem in bad:
        with pytest.raises(InvalidFaultError, match=problem):
            service.start_fault(req)
    assert service.faults() == []


async def test_active_faults_are_bounded_and_finished_ones_forgotten(
    clock: VirtualClock, children: Children
) -> None:
    children.start("node-n1")
    service = make_service(clock, run_dir=children.run_dir, max_active_faults=2, max_finished_faults=1)
    waiting = [
        service.start_fault(request("process_kill", "node-n1", schedule={"start_after_s": 100}))
        for _ in range(2)
    ]
    with pytest.raises(TooManyFaultsError):
        service.start_fault(request("process_kill", "node-n1"))
    for fault in waiting:
        await service.stop_fault(fault.id)
    assert [f.id for f in service.faults()] == [waiting[1].id]  # one finished fault kept
    with pytest.raises(UnknownFaultError):
        service.get(waiting[0].id)


class _Exploding:
    kinds = frozenset({ChaosKind.PROCESS_KILL})

    def __init__(self) -> None:
        self.calls = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def inject(self, spec: FaultSpec, fault_id: str, number: int) -> Hit:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("a client library's surprise")
        raise InjectionError("the platform refused")


async def test_a_backend_that_raises_never_stops_the_scheduler(clock: VirtualClock) -> None:
    backend = _Exploding()
    service = make_service(clock, extra=(backend,))
    fault = service.start_fault(request("process_kill", "x", schedule={"every_s": 1, "times": 3}))
    await clock.advance(2)
    assert [i.detail for i in fault.injections] == [
        'RuntimeError("a client library\'s surprise")',
        "the platform refused",
        "the platform refused",
    ]
    assert fault.state is FaultState.FINISHED


async def test_closing_the_service_ends_what_is_in_force(clock: VirtualClock, children: Children) -> None:
    pid = children.start("node-n1").pid
    service: ChaosService = make_service(clock, run_dir=children.run_dir)
    fault = service.start_fault(request("process_pause", "node-n1", params={"duration_s": 300}))
    await settle()
    wait_state(pid, stopped, "stopped")
    await asyncio.wait_for(service.close(), 10)
    wait_state(pid, running, "resumed at shutdown")
    assert fault.state is FaultState.STOPPED
    with pytest.raises(TooManyFaultsError, match="shutting down"):
        service.start_fault(request("process_kill", "node-n1"))
