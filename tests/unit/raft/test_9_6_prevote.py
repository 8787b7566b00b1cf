"""Dissertation 9.6 (pre-vote) with check-quorum and leader stickiness (4.2.3, 6.2): a node cut off and
rejoining does not depose a healthy leader, a pre-vote never changes anyone's term, followers in touch
with a leader ignore vote requests, and a leader that loses its quorum steps down."""

from __future__ import annotations

import random

from raft_harness import Cluster, cfg, drain, env, sent

from dscore.protocols.contract import DurableState
from dscore.protocols.raft import HardState, Heartbeat, RaftNode, Role, VoteRequest, VoteResponse


def rejoin(c: Cluster) -> tuple[str, str, int]:
    lead = c.wait_leader()
    term = c.nodes[lead].term
    loner = next(n for n in c.ids if n != lead)
    c.isolate(loner)
    c.tick(80)
    c.heal()
    c.tick(20)
    return lead, loner, term


def test_a_rejoining_node_does_not_depose_a_healthy_leader() -> None:
    c = Cluster(seed=1)
    lead, loner, term = rejoin(c)
    assert c.nodes[loner].counters.get("check_quorum_step_down", 0) == 0
    assert c.leader() == lead and c.nodes[lead].term == term
    assert c.nodes[loner].term == term and c.nodes[loner].role is Role.FOLLOWER


def test_without_pre_vote_and_check_quorum_the_rejoining_node_disrupts() -> None:
    c = Cluster(config=cfg(pre_vote=False, check_quorum=False), seed=1)
    _lead, loner, term = rejoin(c)
    assert c.nodes[loner].term > term + 1  # it kept bumping its term, and dragged everyone along
    assert all(n.term > term for n in c.nodes.values())


def test_a_pre_vote_request_never_changes_the_receivers_term() -> None:
    b = RaftNode(
        "b", cfg(), random.Random(1), DurableState(hard_state=HardState(2, None, 0)), ["a", "b", "c"]
    )
    drain(b)
    b.step(env("a", "b", VoteRequest(term=7, last_log_index=0, last_log_term=0, pre_vote=True)))
    replies = sent(drain(b), VoteResponse)
    assert [r.content for r in replies] == [VoteResponse(term=7, granted=True, pre_vote=True)]
    assert (b.term, b.vote) == (2, None)


def test_a_follower_in_touch_with_its_leader_ignores_vote_requests() -> None:
    b = RaftNode("b", cfg(), random.Random(1), None, ["a", "b", "c"])
    b.step(env("a", "b", Heartbeat(term=1, commit=0, round=1)))
    drain(b)
    for pre in (True, False):
        b.step(env("c", "b", VoteRequest(term=2, last_log_index=9, last_log_term=1, pre_vote=pre)))
    assert sent(drain(b)) == [] and b.counters["vote_in_lease"] == 2
    assert (b.term, b.leader_id) == (1, "a")
    for _ in range(cfg().election_timeout_ticks):
        b.tick()
    drain(b)
    b.step(env("c", "b", VoteRequest(term=2, last_log_index=9, last_log_term=1)))
    assert [m.content for m in sent(drain(b), VoteResponse)] == [VoteResponse(term=2, granted=True)]


def test_a_leader_cut_off_from_its_quorum_steps_down() -> None:
    c = Cluster(["a", "b", "c", "d", "e"], seed=2)
    lead = c.wait_leader()
    c.partition([lead, next(n for n in c.ids if n != lead)], [n for n in c.ids if n != lead][1:])
    c.tick(2 * c.config.election_timeout_ticks, [lead])
    node = c.nodes[lead]
    assert node.role is Role.FOLLOWER and node.counters["check_quorum_step_down"] == 1


def test_a_losing_pre_candidate_keeps_its_term() -> None:
    c = Cluster(seed=3)
    lead = c.wait_leader()
    term = c.nodes[lead].term
    loner = next(n for n in c.ids if n != lead)
    c.nodes[loner].campaign()  # others are in touch with the leader: they ignore it
    c.process(loner)
    c.run()
    assert c.nodes[loner].role is Role.PRE_CANDIDATE and c.nodes[loner].term == term
    c.tick(1)
    assert c.nodes[loner].role is Role.FOLLOWER and c.nodes[lead].role is Role.LEADER
