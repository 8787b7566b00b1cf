"""Paper 5.2 (leader election) and 5.1 (terms): randomized timeouts, one vote per term, the election
restriction (5.4.1), persistence of term and vote, and restart from durable state."""

from __future__ import annotations

import random

import pytest
from raft_harness import Cluster, cfg, drain, env, sent

from dscore.protocols.contract import DurableState, EntryKind, LogEntry
from dscore.protocols.raft import (
    AppendResponse,
    HardState,
    Heartbeat,
    RaftNode,
    Role,
    VoteRequest,
    VoteResponse,
)

NO_PREVOTE = cfg(pre_vote=False, check_quorum=False)


@pytest.mark.parametrize(("size", "seed"), [(3, 0), (3, 1), (5, 2), (5, 3)])
def test_a_cluster_elects_exactly_one_leader_which_commits_a_noop(size: int, seed: int) -> None:
    ids = [f"n{i}" for i in range(size)]
    c = Cluster(ids, seed=seed)
    lead = c.wait_leader()
    leader = c.nodes[lead]
    c.tick(2)
    for node in c.nodes.values():
        assert node.term == leader.term
        assert node.leader_id == lead
        assert node.role is (Role.LEADER if node.node_id == lead else Role.FOLLOWER)
        assert node.commit_index == leader.last_index
    noop = leader.entries(leader.last_index, leader.last_index)[0]
    assert (noop.kind, noop.term) == (EntryKind.NOOP, leader.term)


def test_election_timeouts_are_randomized_from_the_injected_rng() -> None:
    def timeout(seed: int) -> int:
        node = RaftNode("a", cfg(election_timeout_ticks=10), random.Random(seed), None, ["b", "c"])
        for ticks in range(1, 100):
            node.tick()
            if node.role is not Role.FOLLOWER:
                return ticks
        raise AssertionError("never timed out")

    seen = [timeout(seed) for seed in range(40)]
    assert all(10 <= t < 20 for t in seen)
    assert len(set(seen)) >= 5  # really randomized
    assert seen == [timeout(seed) for seed in range(40)]  # and only by the injected rng


def test_the_grant_and_the_new_term_and_vote_are_in_the_same_ready() -> None:
    b = RaftNode("b", NO_PREVOTE, random.Random(1), None, ["a", "b", "c"])
    drain(b)
    b.step(env("a", "b", VoteRequest(term=1, last_log_index=0, last_log_term=0)))
    readies = drain(b)
    assert len(readies) == 1
    rd = readies[0]
    assert rd.hard_state == HardState(term=1, vote="a", commit=0)
    assert [m.content for m in rd.messages] == [VoteResponse(term=1, granted=True)]


def log_at_term_one(length: int) -> DurableState:
    entries = tuple(LogEntry(i, 1, EntryKind.NORMAL, b"") for i in range(1, length + 1))
    return DurableState(hard_state=HardState(1, None, 0), entries=entries)


def test_election_restriction_denies_candidates_with_less_up_to_date_logs() -> None:
    b = RaftNode("b", NO_PREVOTE, random.Random(1), log_at_term_one(2), ["a", "b", "c"])
    drain(b)
    b.step(env("a", "b", VoteRequest(term=2, last_log_index=1, last_log_term=1)))  # shorter log
    assert sent(drain(b), VoteResponse)[0].content == VoteResponse(term=2, granted=False)
    b.step(env("c", "b", VoteRequest(term=2, last_log_index=1, last_log_term=2)))  # later last term
    assert sent(drain(b), VoteResponse)[0].content == VoteResponse(term=2, granted=True)
    assert b.vote == "c"


def test_one_vote_per_term_survives_a_restart() -> None:
    b = RaftNode("b", NO_PREVOTE, random.Random(1), None, ["a", "b", "c"])
    durable = DurableState()
    from dscore.protocols.contract import apply_persist

    b.step(env("a", "b", VoteRequest(term=2, last_log_index=0, last_log_term=0)))
    for rd in drain(b):
        durable = apply_persist(durable, rd)
    b = RaftNode("b", NO_PREVOTE, random.Random(2), durable, ["a", "b", "c"])
    assert (b.term, b.vote, b.role) == (2, "a", Role.FOLLOWER)
    b.step(env("c", "b", VoteRequest(term=2, last_log_index=5, last_log_term=1)))
    assert sent(drain(b), VoteResponse)[0].content == VoteResponse(term=2, granted=False)
    b.step(env("a", "b", VoteRequest(term=2, last_log_index=0, last_log_term=0), seq=2))  # duplicate
    assert sent(drain(b), VoteResponse)[0].content == VoteResponse(term=2, granted=True)


def test_stale_terms_are_dropped_and_higher_terms_adopted() -> None:
    b = RaftNode(
        "b", cfg(), random.Random(1), DurableState(hard_state=HardState(3, None, 0)), ["a", "b", "c"]
    )
    drain(b)
    b.step(env("a", "b", Heartbeat(term=2, commit=0, round=1)))
    assert b.counters["stale_term"] == 1
    # the stale leader is told about the newer term so that it steps down
    assert sent(drain(b))[0].content == AppendResponse(term=3, index=0, reject=True)
    b.step(env("c", "b", Heartbeat(term=5, commit=0, round=1)))
    assert (b.term, b.leader_id, b.vote) == (5, "c", None)


def test_simultaneous_candidates_still_yield_one_leader() -> None:
    c = Cluster(["a", "b", "c", "d"], NO_PREVOTE, seed=4)
    c.cut = {("a", "d"), ("b", "c")}  # c can only vote for a, d only for b
    c.nodes["a"].campaign()
    c.nodes["b"].campaign()
    c.process("a")
    c.process("b")
    c.run()  # a 2-2 split: nobody wins term 1
    assert c.leader() is None
    assert {n.term for n in c.nodes.values()} == {1}
    c.heal()
    lead = c.wait_leader()
    assert c.nodes[lead].term >= 2  # the harness checked one leader per term throughout


def test_a_restarted_node_resumes_as_follower_with_its_term_vote_log_and_durable_commit() -> None:
    c = Cluster(seed=5)
    lead = c.wait_leader()
    for i in range(5):
        c.propose(b"x%d" % i)
    c.tick(2)
    before = c.nodes[lead]
    term, vote, last, commit = before.term, before.vote, before.last_index, before.commit_index
    hs = c.durable[lead].hard_state
    c.crash(lead)
    node = c.restart(lead)
    assert node.role is Role.FOLLOWER
    assert (node.term, node.vote, node.last_index) == (term, vote, last)
    assert isinstance(hs, HardState)
    # the commit index is volatile: the durable one may lag (it is saved with the next persisted write)
    assert node.commit_index == hs.commit <= commit
    applied = hs.commit - 1  # the leader's no-op is index 1
    assert c.sm[lead] == [b"x%d" % i for i in range(applied)]  # re-applied from the durable log
    c.wait_leader()
    c.tick(10)
    assert c.nodes[lead].commit_index >= commit  # the leader tells it the rest
    assert c.sm[lead] == [b"x%d" % i for i in range(5)]


def test_a_commit_index_advance_alone_persists_nothing_and_rides_with_the_next_write() -> None:
    """etcd's rule (`MustSync` ignores the commit index): a Ready whose only durable change would be a
    higher commit index carries no hard state, so no node makes a write (a fsync) just for it; the next
    Ready that persists entries carries the current commit index with them."""
    c = Cluster(seed=5)
    lead = c.wait_leader()
    c.tick(2)
    c.propose(b"a")
    c.tick(2)
    follower = next(n for n in c.nodes if n != lead)
    node = c.nodes[follower]
    durable_commit = c.durable[follower].hard_state.commit  # type: ignore[union-attr]
    assert node.commit_index > durable_commit  # it learned the commit of "a" and did not persist it
    c.propose(b"b", run=False)
    c.tick(1)
    stored = c.durable[follower].hard_state
    assert isinstance(stored, HardState) and stored.commit >= durable_commit + 1


def test_when_the_leader_crashes_another_is_elected_with_every_committed_entry() -> None:
    c = Cluster(["a", "b", "c", "d", "e"], seed=6)
    lead = c.wait_leader()
    for i in range(3):
        c.propose(b"v%d" % i)
    old_term = c.nodes[lead].term
    c.crash(lead)
    new = c.wait_leader()
    assert new != lead and c.nodes[new].term > old_term
    c.propose(b"after")
    c.tick(2)
    for node_id in c.nodes:
        assert c.sm[node_id] == [b"v0", b"v1", b"v2", b"after"]


def test_a_leader_knows_which_votes_elected_it_and_forgets_them_when_it_steps_down() -> None:
    c = Cluster(["n0", "n1", "n2", "n3", "n4"], seed=4)
    lead = c.wait_leader()
    leader = c.nodes[lead]
    electors = leader.elected_by
    assert lead in electors and len(electors) >= 3  # itself and enough voters for a majority of five
    assert all(c.nodes[voter].term == leader.term for voter in electors)
    c.isolate(lead)
    c.wait_leader(among=[n for n in c.nodes if n != lead])
    c.heal()
    c.tick(5)
    assert leader.role is not Role.LEADER and leader.elected_by == ()
