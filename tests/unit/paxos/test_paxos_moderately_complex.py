"""van Renesse and Altinbuken, "Paxos Made Moderately Complex" (2015): the structure of Multi-Paxos.

- 3 (leaders, scouts): a leader runs phase 1 once, for every slot at once, and then only phase 2 while
  it keeps its ballot; a lost scout message is sent again; section 4's remedy for dueling leaders (a
  leader is not preempted while it is alive: here a probe first, and stickiness) keeps a node that
  cannot hear the leader from deposing it;
- 3 (commanders): phase 2 runs per slot, several slots in flight (here a bounded window, "WINDOW" in
  their section 4), each decided by its own majority, in any order;
- 3 (replicas): decisions are applied in slot order only; a later slot chosen first waits for the
  earlier one.
"""

from __future__ import annotations

import random

from paxos_harness import Cluster, drain, env, sent

from dscore.protocols.paxos import (
    Accept,
    Accepted,
    Ballots,
    PaxosConfig,
    PaxosNode,
    Prepare,
    Probe,
    ProbeReply,
    Role,
)

IDS = ("a", "b", "c")


def test_phase1_runs_once_per_leadership_for_every_slot() -> None:
    c = Cluster(IDS)
    c.elect("a")
    prepares = c.sent["Prepare"]
    assert prepares == 2  # one per peer, covering all slots
    for i in range(30):
        c.propose("a", f"v{i}".encode())
        c.tick(nodes=["a"])
    c.tick(nodes=["a"])  # the last commit index reaches the followers with the next heartbeat
    assert c.sent["Prepare"] == prepares
    assert c.sm["a"] == c.sm["b"] == c.sm["c"] == [f"v{i}".encode() for i in range(30)]


def test_phase2_is_pipelined_within_the_window_and_slides() -> None:
    c = Cluster(IDS, PaxosConfig(window_slots=4))
    c.elect("a")
    c.tick(2, nodes=["a"])
    in_flight: list[int] = []

    def record(envelope: object) -> bool:
        content = envelope.content  # type: ignore[attr-defined]
        if isinstance(content, Accept):
            in_flight.extend(e.index for e in content.entries)
        return True

    c.filter = record
    start = c.nodes["a"].commit_index
    # Ten proposals before anything is delivered: only the window's four slots go out.
    slots = [int(c.nodes["a"].propose(f"x{i}".encode())) for i in range(10)]
    c.process("a")
    queued = {e.index for m in c.queue if isinstance(m.content, Accept) for e in m.content.entries}
    assert sorted(queued) == list(range(start + 1, start + 5))
    c.deliver_all()  # acceptances choose those four, the window slides, the rest follow
    assert c.nodes["a"].commit_index == slots[-1]
    assert sorted(set(in_flight)) == list(range(start + 1, slots[-1] + 1))


def test_slots_are_decided_independently_and_applied_in_order() -> None:
    c = Cluster(IDS)
    c.elect("a")
    c.tick(2, nodes=["a"])
    first = c.propose("a", b"first")
    # The acceptances of the first slot are held back; the second slot is chosen before it.
    held = []

    def hold(envelope: object) -> bool:
        content = envelope.content  # type: ignore[attr-defined]
        if isinstance(content, Accepted) and first in content.slots:
            held.append(envelope)
            return False
        return True

    c.filter = hold
    c.deliver_all()
    second = c.propose("a", b"second")
    c.deliver_all()
    leader = c.nodes["a"]
    assert leader.ballot_at(second) > leader.ballot_at(first)  # second marked chosen, first still open
    assert leader.commit_index == first - 1 and c.sm["a"] == []
    c.filter = None
    c.tick(3, nodes=["a"])  # the leader resends the first slot's accept and gets it chosen
    assert leader.commit_index == second and c.sm["a"] == [b"first", b"second"]


def test_a_node_cut_off_from_the_leader_cannot_depose_it() -> None:
    c = Cluster(IDS)
    c.elect("b")
    # a, cut off from b's heartbeats, tries to take over: its probe is refused by c (b is alive).
    c.cut = {("b", "a")}
    c.tick(40, nodes=["a"])
    assert c.nodes["a"].role is not Role.LEADER and c.leaders() == ["b"]
    assert c.nodes["a"].counters.get("phase1_started", 0) == 0
    assert c.nodes["a"].counters["probe_started"] >= 1
    # Without the probe (campaign), a's Prepare is refused by the sticky nodes and it gets nowhere.
    c.step_local("a", lambda n: n.campaign())
    c.deliver_all()
    assert c.nodes["a"].role is Role.CANDIDATE and c.leaders() == ["b"]
    assert c.nodes["c"].counters["prepare_in_lease"] >= 1


def test_a_resent_prepare_after_loss_still_completes_phase1() -> None:
    c = Cluster(IDS)
    dropped = []

    def lose_first_prepares(envelope: object) -> bool:
        content = envelope.content  # type: ignore[attr-defined]
        if isinstance(content, Prepare) and len(dropped) < 2:
            dropped.append(envelope)
            return False
        return True

    c.filter = lose_first_prepares
    c.step_local("a", lambda n: n.campaign())
    c.deliver_all()
    assert c.nodes["a"].role is Role.CANDIDATE and len(dropped) == 2
    c.tick(3, nodes=["a"])  # retry_ticks: the Prepare goes again
    assert c.nodes["a"].role is Role.LEADER


def test_a_refused_probe_teaches_the_prober_the_rounds_it_missed() -> None:
    node = PaxosNode("a", PaxosConfig(), random.Random(0), None, IDS)
    drain(node)
    for _ in range(40):
        node.tick()
        if node.role is Role.PRE_CANDIDATE:
            break
    probes = sent(drain(node), Probe)
    assert probes and Ballots.round_of(probes[0].ballot) == 1  # type: ignore[attr-defined]
    higher = Ballots(IDS).make(5, "c")
    node.step(env("b", "a", ProbeReply(probes[0].ballot, False, higher)))  # type: ignore[attr-defined]
    for _ in range(40):
        node.tick()
        again = sent(drain(node), Probe)
        if again:
            assert Ballots.round_of(again[0].ballot) == 6  # type: ignore[attr-defined]
            return
    raise AssertionError("no second probe")


def test_a_probe_is_granted_once_the_leader_is_silent() -> None:
    c = Cluster(IDS)
    c.elect("b")
    c.elect("c")  # rounds go up: c's ballot is in round 2
    c.crash("c")
    # a and b stop hearing from c; b's first probe is refused by a until a's timeout has passed too.
    c.tick(25, nodes=["a", "b"])
    leaders = c.leaders()
    assert len(leaders) == 1 and leaders[0] in ("a", "b")
    winner = c.nodes[leaders[0]]
    assert winner.counters["probe_started"] >= 1 and winner.counters["phase1_won"] >= 1
    assert winner.ballots.round_of(winner.ballot) == 3  # above every round seen, c's included
