"""Lamport, "Paxos Made Simple" (2001): the rules, one core at a time (deterministic, virtual time).

- 2.2 P1a: an acceptor promises a ballot only above every ballot it promised, and refuses lower ones;
- 2.2 phase 2: a value is chosen once a majority accepted it at one ballot (and not before);
- 2.2 P2c: a new proposer proposes, in each slot, the value accepted at the highest ballot among a
  majority's promises; 3: holes nobody reported are filled with no-ops;
- 2.3: acceptors must remember what they promised and accepted across crashes (persisted in the same
  `Ready` as the reply that announces it).
"""

from __future__ import annotations

import random

from paxos_harness import Cluster, drain, env, sent

from dscore.protocols.contract import DurableState, EntryKind, LogEntry
from dscore.protocols.paxos import (
    CHOSEN,
    Accept,
    Accepted,
    Ballots,
    Nack,
    PaxosConfig,
    PaxosHardState,
    PaxosNode,
    Prepare,
    Promise,
    PromisedSlot,
    Role,
)

IDS = ("a", "b", "c")
B = Ballots(IDS)


def acceptor(node_id: str = "b", durable: DurableState | None = None) -> PaxosNode:
    node = PaxosNode(node_id, PaxosConfig(), random.Random(0), durable, IDS)
    drain(node)
    return node


def test_ballots_order_by_round_then_node_and_name_their_owner() -> None:
    assert B.make(1, "c") < B.make(2, "a") < B.make(2, "b")
    assert B.owner(B.make(7, "b")) == "b" and B.round_of(B.make(7, "b")) == 7
    assert B.valid(B.make(1, "a")) and not B.valid(0) and not B.valid(CHOSEN)
    assert not B.owned_by(B.make(3, "a"), "b")


def test_p1a_an_acceptor_promises_higher_ballots_and_nacks_lower_ones() -> None:
    node = acceptor()
    node.step(env("c", "b", Prepare(B.make(2, "c"), 1)))
    rds = drain(node)
    assert sent(rds, Promise) == [Promise(B.make(2, "c"), 0, ())]
    # The promise is persisted in the very Ready that carries the Promise (persist before send).
    assert [rd.hard_state for rd in rds if rd.messages] == [PaxosHardState(B.make(2, "c"), 0, ())]
    node.step(env("a", "b", Prepare(B.make(1, "a"), 1)))
    assert sent(drain(node)) == [Nack(B.make(1, "a"), B.make(2, "c"))]
    node.step(
        env("a", "b", Accept(B.make(1, "a"), (LogEntry(1, B.make(1, "a"), EntryKind.NORMAL, b"x"),), 0))
    )
    assert sent(drain(node)) == [Nack(B.make(1, "a"), B.make(2, "c"))]
    assert node.entry_at(1) is None and node.counters["stale_ballot"] == 2


def test_a_prepare_whose_ballot_is_not_its_senders_is_dropped() -> None:
    node = acceptor()
    node.step(env("c", "b", Prepare(B.make(5, "a"), 1)))  # c claims a's ballot
    assert not drain(node) and node.counters["invalid"] == 1 and node.promised == 0


def test_accepts_are_persisted_before_accepted_is_sent_and_reported_in_later_promises() -> None:
    node = acceptor()
    ballot = B.make(1, "a")
    value = LogEntry(2, ballot, EntryKind.NORMAL, b"v")
    node.step(env("a", "b", Accept(ballot, (value,), 0)))
    rds = drain(node)
    assert sent(rds) == [Accepted(ballot, (2,), 0)]
    persisted = [rd for rd in rds if rd.entries]
    assert persisted and persisted[0].messages  # same Ready: persisted, then sent
    assert persisted[0].entries[-1] == value
    assert persisted[0].hard_state == PaxosHardState(ballot, 0, ((1, 0), (1, ballot)))  # slot 1 empty
    # (from a itself: b follows a and, while a is alive, ignores other proposers; see the stickiness test)
    node.step(env("a", "b", Prepare(B.make(2, "a"), 1)))
    assert sent(drain(node), Promise) == [Promise(B.make(2, "a"), 0, (PromisedSlot(ballot, value),))]


def test_an_acceptor_remembers_promise_and_accepts_across_a_crash() -> None:
    durable = DurableState()
    from dscore.protocols.contract import apply_persist

    node = acceptor()
    ballot = B.make(3, "a")
    node.step(env("a", "b", Accept(ballot, (LogEntry(1, ballot, EntryKind.NORMAL, b"v"),), 0)))
    for rd in drain(node):
        durable = apply_persist(durable, rd)
    again = acceptor(durable=durable)
    assert again.promised == ballot and again.entry_at(1) == LogEntry(1, ballot, EntryKind.NORMAL, b"v")
    again.step(env("c", "b", Prepare(B.make(2, "c"), 1)))
    assert sent(drain(again)) == [Nack(B.make(2, "c"), ballot)]


def test_phase2_chooses_only_with_a_majority() -> None:
    c = Cluster(("a", "b", "c", "d", "e"))
    c.elect("a")
    c.cut = {("a", x) for x in "cde"}  # a reaches b only: two of five
    slot = c.propose("a", b"x")
    c.tick(5, nodes=["a"])  # resends too; still no majority (and no check-quorum step-down yet)
    assert c.nodes["a"].role is Role.LEADER
    assert c.nodes["a"].commit_index < slot and c.applied["a"] < slot
    c.heal()
    c.tick(4, nodes=["a"])
    assert c.nodes["a"].commit_index >= slot
    assert c.sm["a"] == [b"x"]


def test_p2c_a_new_leader_reproposes_the_highest_ballot_value_and_fills_holes_with_noops() -> None:
    c = Cluster(IDS)
    c.elect("a")
    # a gets slot 1 chosen everywhere, then proposes 2, 3, 4 which reach only b, and only 2 and 4.
    c.propose("a", b"one")
    c.tick(2, nodes=["a"])
    c.filter = lambda e: not (isinstance(e.content, Accept) and any(x.index == 3 for x in e.content.entries))
    c.cut = {("a", "c")}
    for data in (b"two", b"three", b"four"):
        c.propose("a", data)
    c.deliver_all()
    c.filter = None
    c.crash("a")
    assert c.nodes["b"].entry_at(2) is not None and c.nodes["b"].entry_at(3) is None
    assert c.nodes["b"].entry_at(4) is not None
    c.elect("c")
    c.tick(5, nodes=["b", "c"])
    ballot_c = c.nodes["c"].ballot
    for node in ("b", "c"):
        assert c.nodes[node].commit_index >= 4
    assert c.sm["c"] == [b"one", b"two", b"four"]
    hole = c.nodes["c"].entry_at(3)
    assert hole == LogEntry(3, ballot_c, EntryKind.NOOP, b"")
    # Re-proposed values keep the ballot that first proposed them: every learner applies one entry.
    assert c.nodes["c"].entry_at(2) == c.nodes["b"].entry_at(2)
    assert c.nodes["c"].entry_at(2).term < ballot_c  # type: ignore[union-attr]


def test_a_value_chosen_by_a_minority_leader_survives_its_crash() -> None:
    c = Cluster(IDS)
    c.elect("a")
    slot = c.propose("a", b"kept")
    c.deliver_all()  # accepted by b and c, chosen at a; nobody else learned it yet
    assert c.nodes["a"].commit_index == slot
    c.crash("a")
    c.elect("b")
    c.tick(3, nodes=["b", "c"])
    assert c.sm["b"][:1] == [b"kept"] and c.sm["c"][:1] == [b"kept"]


def test_preemption_a_proposer_refused_by_a_higher_promise_steps_down_and_backs_off() -> None:
    c = Cluster(IDS)
    c.elect("a")
    c.elect("b")  # b's timeout fires (a is not ticked): its higher ballot preempts a
    c.tick(1, nodes=["a"])
    assert c.nodes["a"].role is Role.FOLLOWER and c.nodes["a"].leader_id == "b"
    assert c.leaders() == ["b"]


def test_an_old_leader_nacked_by_a_majority_learns_of_the_higher_ballot() -> None:
    c = Cluster(IDS)
    c.elect("a")
    c.isolate("a")
    c.elect("b")
    c.heal()
    c.propose("a", b"stale")  # a still believes it leads
    c.deliver_all()
    assert c.nodes["a"].role is Role.FOLLOWER and c.nodes["a"].counters["preempted"] == 1
    c.tick(3, nodes=["b", "c"])
    assert all(b"stale" not in c.sm[n] for n in IDS)


def test_p2c_among_conflicting_promises_the_value_of_the_highest_ballot_wins() -> None:
    node = PaxosNode("a", PaxosConfig(), random.Random(0), None, ("a", "b", "c", "d", "e"))
    five = Ballots(("a", "b", "c", "d", "e"))
    drain(node)
    for _ in range(3):  # a third try: our ballot is in round 3
        node.campaign()
    drain(node)
    ballot = node.ballot
    low, high = five.make(1, "d"), five.make(2, "e")
    old = LogEntry(1, low, EntryKind.NORMAL, b"old")
    newer = LogEntry(1, high, EntryKind.NORMAL, b"newer")
    node.step(env("b", "a", Promise(ballot, 0, (PromisedSlot(low, old),))))
    assert node.role is Role.CANDIDATE  # two of five so far
    node.step(env("c", "a", Promise(ballot, 0, (PromisedSlot(high, newer),))))
    assert node.role is Role.LEADER
    accepts = sent(drain(node), Accept)
    assert accepts and all(a.entries == (newer,) for a in accepts)  # type: ignore[attr-defined]
