"""Dissertation 3.10: leadership transfer. The leader stops accepting proposals, brings the target up to
date, and sends TimeoutNow; the target campaigns at once (no pre-vote, past leader stickiness). The
transfer is aborted after an election timeout."""

from __future__ import annotations

import pytest
from raft_harness import Cluster

from dscore.core.errors import LocalError, NotLeaderError
from dscore.protocols.raft import AppendEntries, Role, TimeoutNow


def test_transfer_to_an_up_to_date_follower_happens_without_waiting_for_a_timeout() -> None:
    c = Cluster(seed=1)
    lead = c.wait_leader()
    c.propose(b"x")
    c.tick(1)
    target = next(n for n in c.ids if n != lead)
    term = c.nodes[lead].term
    c.nodes[lead].transfer_leadership(target)
    c.process(lead)
    c.run()  # no ticks: the followers are sticky, yet they vote for the transfer target
    assert c.leader() == target and c.nodes[target].term == term + 1
    assert c.nodes[lead].role is Role.FOLLOWER
    c.propose(b"y", target)
    assert all(c.sm[n] == [b"x", b"y"] for n in c.nodes)


def test_a_lagging_target_is_caught_up_before_timeout_now() -> None:
    c = Cluster(seed=2)
    lead = c.wait_leader()
    target = next(n for n in c.ids if n != lead)
    c.isolate(target)
    for i in range(10):
        c.propose(b"p%d" % i)
    c.heal()
    c.trace.clear()
    c.nodes[lead].transfer_leadership(target)
    c.process(lead)
    c.run()
    assert c.leader() == target
    order = [
        type(e.content).__name__
        for e in c.trace
        if e.source == lead and e.destination == target and isinstance(e.content, AppendEntries | TimeoutNow)
    ]
    assert order[-1] == "TimeoutNow" and "AppendEntries" in order
    assert c.sm[target] == [b"p%d" % i for i in range(10)]


def test_proposals_and_membership_changes_are_refused_during_a_transfer() -> None:
    c = Cluster(seed=3)
    lead = c.wait_leader()
    target = next(n for n in c.ids if n != lead)
    c.isolate(target)
    node = c.nodes[lead]
    node.transfer_leadership(target)
    with pytest.raises(NotLeaderError) as raised:
        node.propose(b"x")
    assert raised.value.leader_hint == target
    with pytest.raises(NotLeaderError):
        node.add_learner("z")
    with pytest.raises(LocalError):
        node.transfer_leadership("nobody")


def test_a_transfer_is_aborted_after_an_election_timeout() -> None:
    c = Cluster(seed=4)
    lead = c.wait_leader()
    target = next(n for n in c.ids if n != lead)
    c.crash(target)
    node = c.nodes[lead]
    node.transfer_leadership(target)
    c.tick(c.config.election_timeout_ticks)
    assert node.lead_transferee is None and node.role is Role.LEADER
    assert node.counters["transfer_aborted"] == 1
    c.propose(b"accepted again", lead)
    assert c.sm[lead] == [b"accepted again"]
