"""Paper 5.3 (log replication): consistency check, conflict truncation, fast backtracking, batching,
pipelining with a bounded number of appends in flight, probe/replicate states, and tolerance of lost,
duplicated and reordered messages."""

from __future__ import annotations

import random

import pytest
from raft_harness import Cluster, cfg, env

from dscore.core.envelope import Envelope
from dscore.protocols.contract import Ready
from dscore.protocols.raft import (
    AppendEntries,
    AppendResponse,
    HardState,
    ProgressState,
    RaftNode,
    Role,
    VoteRequest,
    VoteResponse,
)


def test_proposals_are_replicated_and_applied_in_the_same_order_everywhere() -> None:
    c = Cluster(seed=1, wire=True)  # every message goes through the codec
    c.wait_leader()
    for i in range(20):
        c.propose(b"cmd%d" % i)
    c.tick(2)
    expected = [b"cmd%d" % i for i in range(20)]
    assert all(c.sm[n] == expected for n in c.nodes)
    c.check_log_matching()


def test_conflicting_uncommitted_entries_are_truncated_and_never_applied() -> None:
    c = Cluster(seed=2)
    old = c.wait_leader()
    c.propose(b"committed")
    c.isolate(old)
    for i in range(3):
        c.propose(b"orphan%d" % i, old)  # appended on the old leader only
    others = [n for n in c.ids if n != old]
    new = c.wait_leader(among=others)
    c.propose(b"winner", new)
    c.heal()
    c.converge()
    assert c.nodes[old].role is Role.FOLLOWER
    for n in c.ids:
        assert c.sm[n] == [b"committed", b"winner"]
    assert all(b"orphan" not in e.data for e in c.nodes[old].entries())


def rejects_from(c: Cluster, node: str) -> int:
    return sum(
        1 for e in c.trace if e.source == node and isinstance(e.content, AppendResponse) and e.content.reject
    )


def test_fast_backtracking_skips_a_whole_conflicting_term_per_round_trip() -> None:
    c = Cluster(seed=3)
    old = c.wait_leader()
    c.isolate(old)
    for i in range(60):
        c.propose(b"stale%d" % i, old, run=False)
    others = [n for n in c.ids if n != old]
    new = c.wait_leader(among=others)
    for i in range(60):
        c.propose(b"fresh%d" % i, new, run=False)
    c.run()
    before = rejects_from(c, old)
    c.heal()
    c.converge()
    assert c.sm[old] == c.sm[new]
    assert rejects_from(c, old) - before <= 3  # not one per conflicting entry (60)


def appends_to(c: Cluster, node: str) -> list[AppendEntries]:
    return [e.content for e in c.trace if e.destination == node and isinstance(e.content, AppendEntries)]


def batch_sizes(c: Cluster, lead: str, payloads: list[bytes]) -> list[int]:
    """Propose all payloads before the leader's next Ready; return the entry counts sent to a follower."""
    c.trace.clear()
    for data in payloads:
        c.nodes[lead].propose(data)
    c.process(lead)
    c.run()
    follower = next(n for n in c.ids if n != lead)
    return [len(m.entries) for m in appends_to(c, follower) if m.entries]


def test_batches_respect_max_entries_and_max_bytes() -> None:
    c = Cluster(config=cfg(max_entries_per_msg=4, max_bytes_per_msg=100), seed=4)
    lead = c.wait_leader()
    assert batch_sizes(c, lead, [b"x" * 40] * 10) == [2, 2, 2, 2, 2]  # 2 x 40 bytes fit in 100, 3 do not
    assert batch_sizes(c, lead, [b"y" * 150] * 3) == [1, 1, 1]  # too large alone: still one per message
    assert batch_sizes(c, lead, [b""] * 10) == [4, 4, 2]


def test_appends_in_flight_to_a_silent_follower_are_bounded() -> None:
    c = Cluster(config=cfg(max_inflight_msgs=3, max_entries_per_msg=1), seed=5)
    lead = c.wait_leader()
    slow = next(n for n in c.ids if n != lead)
    c.tick(1)
    assert c.nodes[lead].progress(slow).state is ProgressState.REPLICATE  # type: ignore[union-attr]
    c.filter = lambda e: e.source != slow  # slow receives everything but its answers are lost
    c.trace.clear()
    for i in range(10):
        c.propose(b"p%d" % i)
    assert len([m for m in appends_to(c, slow) if m.entries]) == 3
    assert c.nodes[lead].commit_index == c.nodes[lead].last_index  # the other follower suffices
    c.heal()
    c.converge()
    assert c.sm[slow] == c.sm[lead]


def test_a_lagging_follower_is_probed_one_append_at_a_time_then_pipelined() -> None:
    c = Cluster(config=cfg(max_entries_per_msg=1), seed=6)
    c.isolate("c")
    lead = c.elect("a").node_id
    for i in range(5):
        c.propose(b"p%d" % i)
    pr = c.nodes[lead].progress("c")
    assert pr is not None and pr.state is ProgressState.PROBE
    c.heal()
    c.tick(1, deliver=False)
    states = set()
    while c.queue:
        in_flight = [e for e in c.queue if e.destination == "c" and isinstance(e.content, AppendEntries)]
        if pr.state is ProgressState.PROBE:
            assert len(in_flight) <= 1
        states.add(pr.state)
        c.deliver_one()
    assert states == {ProgressState.PROBE, ProgressState.REPLICATE}
    assert pr.match == c.nodes[lead].last_index
    assert c.sm["c"] == c.sm[lead]


def test_a_replicating_follower_whose_appends_were_lost_is_probed_again() -> None:
    c = Cluster(seed=6)
    lead = c.wait_leader()
    follower = next(n for n in c.ids if n != lead)
    pr = c.nodes[lead].progress(follower)
    assert pr is not None and pr.state is ProgressState.REPLICATE
    c.isolate(follower)
    for i in range(5):
        c.propose(b"p%d" % i)  # lost, and nothing new follows to reveal the gap
    c.heal()
    c.tick(c.config.election_timeout_ticks)  # heartbeats answered, no progress: probe again
    assert pr.match == c.nodes[lead].last_index
    assert c.sm[follower] == c.sm[lead]


def test_lost_messages_are_recovered() -> None:
    c = Cluster(["a", "b", "c", "d", "e"], seed=7)
    c.wait_leader()
    loss = random.Random(7)
    c.filter = lambda e: loss.random() > 0.25
    proposed = []
    for i in range(40):
        lead = c.leader()
        if lead is not None:
            try:
                c.propose(b"m%d" % i, lead)
                proposed.append(b"m%d" % i)
            except Exception:
                pass
        c.tick(1)
    c.heal()
    c.converge(40)
    reference = c.sm[c.wait_leader()]
    assert all(c.sm[n] == reference for n in c.nodes)
    assert set(reference) <= set(proposed)


def run_workload(duplicate: bool) -> list[bytes]:
    c = Cluster(seed=8)
    c.duplicate = duplicate
    c.wait_leader()
    for i in range(30):
        c.propose(b"d%d" % i)
        if i % 7 == 0:
            c.tick(1)
    c.tick(3)
    assert all(c.sm[n] == c.sm["a"] for n in c.nodes)
    return c.sm["a"]


def test_duplicating_every_message_changes_nothing() -> None:
    assert run_workload(duplicate=True) == run_workload(duplicate=False) == [b"d%d" % i for i in range(30)]


def test_reordered_messages_keep_safety_and_converge() -> None:
    c = Cluster(["a", "b", "c", "d", "e"], seed=9)
    c.shuffle_rng = random.Random(9)
    c.wait_leader()
    for i in range(30):
        lead = c.leader()
        if lead is not None and c.nodes[lead].lead_transferee is None:
            c.propose(b"r%d" % i, lead)
        c.tick(1)
    c.shuffle_rng = None
    c.converge(30)
    lead = c.wait_leader()
    assert all(c.sm[n] == c.sm[lead] for n in c.nodes)


def test_envelope_filter_signature() -> None:
    # the harness filter receives whole envelopes
    c = Cluster(seed=10)
    seen: list[Envelope] = []
    c.filter = lambda e: seen.append(e) is None
    c.wait_leader()
    assert seen


@pytest.mark.parametrize("commit_only_appends", [True, False])
def test_followers_learn_a_new_commit_index_by_an_empty_append_or_by_the_next_heartbeat(
    commit_only_appends: bool,
) -> None:
    """`commit_only_appends` (on by default, off in the node service): with it, a leader whose commit
    index moved tells its followers at once with an append that carries no entries; without it the next
    heartbeat (or append with entries) carries the commit index, and no entry-less append is sent to a
    follower that is replicating."""
    c = Cluster(config=cfg(commit_only_appends=commit_only_appends, heartbeat_ticks=3), seed=2)
    lead = c.wait_leader()
    c.tick(6)
    before = c.sent.copy()
    index = c.propose(b"x")  # delivers every message, with no tick
    empty_appends = sum(
        1
        for e in c.trace[-(sum(c.sent.values()) - sum(before.values())) :]
        if isinstance(e.content, AppendEntries) and not e.content.entries
    )
    followers = [n for n in c.ids if n != lead]
    assert c.nodes[lead].commit_index == index
    if commit_only_appends:
        assert empty_appends == len(followers)
        assert all(c.nodes[f].commit_index == index for f in followers)
    else:
        assert empty_appends == 0
        assert all(c.nodes[f].commit_index < index for f in followers)
        c.tick(3)  # the next heartbeat carries it
        assert all(c.nodes[f].commit_index == index for f in followers)
    assert all(c.sm[n] == [b"x"] for n in c.ids)


def test_a_leader_counts_its_own_entry_only_once_it_is_durable() -> None:
    """Raft dissertation 10.2.1: a commit rests on a quorum of stored copies. A follower's acknowledgement
    that arrives before the leader's own save (a driver may send while it saves) commits nothing yet."""
    c = Cluster(seed=1)
    leader = c.elect("a")
    committed = leader.commit_index
    index = leader.propose(b"x")
    rd = leader.ready()  # handed out for saving, not yet saved (no advance)
    assert [e.index for e in rd.entries] == [index]
    leader.step(env("b", "a", AppendResponse(leader.term, index)))
    assert leader.commit_index == committed  # only b's copy is durable: 1 of 3
    leader.advance(rd)  # the leader's own copy is durable now: 2 of 3
    assert leader.commit_index == index


class _RecordingNode(RaftNode):
    """Records every Ready it hands out, with its role and its term and vote before the Ready."""

    readies: list[tuple[str, Role, tuple[int, str | None], Ready]]

    def ready(self) -> Ready:
        before = (self.term, self.vote)
        rd = super().ready()
        hs = rd.hard_state
        if isinstance(hs, HardState):
            before = self._last_hs.get(self.node_id, before)
            self._last_hs[self.node_id] = (hs.term, hs.vote)
        self.readies.append((self.node_id, self.role, before, rd))
        return rd

    _last_hs: dict[str, tuple[int, str | None]]


def test_only_a_leaders_appends_of_its_own_log_may_leave_while_they_are_persisted() -> None:
    """`Ready.send_while_persisting` (dissertation 10.2.1): set on a leader's Readys whose term and vote
    were persisted before, never on one that carries a vote, a follower's acknowledgement, or a new term."""
    _RecordingNode.readies = []
    _RecordingNode._last_hs = {}
    c = Cluster(seed=3, node_cls=_RecordingNode)
    first = c.elect("a")
    for i in range(5):
        c.propose(b"x%d" % i)
    c.isolate("a")
    second = c.wait_leader(among=["b", "c"])
    c.propose(b"y", second)
    c.heal()
    c.converge()
    assert first.role is Role.FOLLOWER
    early = [
        (node, role, before, rd)
        for node, role, before, rd in _RecordingNode.readies
        if rd.send_while_persisting
    ]
    late = [rd for _, _, _, rd in _RecordingNode.readies if rd.messages and not rd.send_while_persisting]
    assert early and late
    for node, role, before, rd in early:
        assert role is Role.LEADER, node
        hs = rd.hard_state
        assert not isinstance(hs, HardState) or (hs.term, hs.vote) == before, (node, hs, before)
        for out in rd.messages:
            content = out.content
            # A refusal (a stale leader's append answered with our term) promises nothing.
            assert not isinstance(content, VoteRequest), content
            assert not (isinstance(content, AppendResponse) and not content.reject), content
            assert not (isinstance(content, VoteResponse) and content.granted and not content.pre_vote)
    # Every acknowledgement and every vote waited for its write.
    for _, _, _, rd in _RecordingNode.readies:
        if any(
            isinstance(o.content, VoteRequest)
            or (isinstance(o.content, AppendResponse) and not o.content.reject)
            for o in rd.messages
        ):
            assert not rd.send_while_persisting
    assert any(
        isinstance(o.content, AppendEntries) and o.content.entries
        for rd in (e[3] for e in early)
        for o in rd.messages
    )


def test_a_lone_voter_that_wins_at_once_waits_for_its_new_term_before_its_appends() -> None:
    """A single voter with a learner wins an election within one step: the Ready that makes it leader
    also carries its new term and vote. Its appends must wait for them (a crash would otherwise let it
    lead that term again, with another log)."""
    _RecordingNode.readies = []
    _RecordingNode._last_hs = {}
    c = Cluster(ids=("a",), seed=4, node_cls=_RecordingNode)
    c.elect("a")
    c.add_node("d", join=True)
    c.process("a")
    c.run()
    index = c.nodes["a"].add_learner("d")
    c.process("a")
    c.run()
    c.tick(2)
    assert c.nodes["d"].role is Role.LEARNER and c.nodes["a"].commit_index >= index
    c.crash("a")
    _RecordingNode.readies = []
    c.restart("a")
    c.tick(100, ["a"])
    assert c.nodes["a"].role is Role.LEADER
    won = [
        rd
        for node, role, before, rd in _RecordingNode.readies
        if node == "a"
        and role is Role.LEADER
        and isinstance(rd.hard_state, HardState)
        and (rd.hard_state.term, rd.hard_state.vote) != before
    ]
    assert [len(rd.messages) > 0 for rd in won] == [True]  # the winning Ready: new term, vote, appends
    assert not won[0].send_while_persisting
