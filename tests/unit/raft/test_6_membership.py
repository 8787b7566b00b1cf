"""Dissertation chapter 4 (paper section 6): single-server membership changes, learners, the
one-change-at-a-time and commit-in-term rules, configurations taking effect on append (and reverting on
truncation), a removed leader stepping down, and configurations restored after a restart."""

from __future__ import annotations

import pytest
from raft_harness import Cluster, env

from dscore.core import codec
from dscore.protocols.contract import EntryKind
from dscore.protocols.raft import (
    AppendEntries,
    ConfChangeRejectedError,
    ConfChangeType,
    Membership,
    Role,
    VoteResponse,
)


def committed(c: Cluster, lead: str, index: int) -> None:
    c.tick(2)
    assert c.nodes[lead].commit_index >= index


def test_a_learner_receives_the_log_but_never_votes_or_counts() -> None:
    c = Cluster(seed=1)
    lead = c.wait_leader()
    c.propose(b"before")
    c.add_node("d", join=True)
    assert c.nodes["d"].voters == () and c.nodes["d"].role is Role.FOLLOWER
    index = c.nodes[lead].add_learner("d")
    c.process(lead)
    c.run()
    committed(c, lead, index)
    d = c.nodes["d"]
    assert d.role is Role.LEARNER and d.learners == ("d",) and d.voters == ("a", "b", "c")
    assert c.sm["d"] == [b"before"]
    # a learner never campaigns, and no candidate counts its vote
    c.tick(100, ["d"])
    assert d.role is Role.LEARNER
    follower = c.nodes[next(n for n in ("a", "b", "c") if n != lead)]
    follower.campaign()
    follower.step(
        env("d", follower.node_id, VoteResponse(term=follower.term + 1, granted=True, pre_vote=True))
    )
    assert follower.counters["non_member"] == 1 and follower.role is Role.PRE_CANDIDATE
    c.process(follower.node_id)
    c.run()
    # and never counts: with the learner cut off, the voters still commit; with the other voters
    # cut off, leader and learner are no quorum
    c.isolate("d")
    c.propose(b"without d")
    assert c.nodes[lead].commit_index == c.nodes[lead].last_index
    c.partition([lead, "d"], [n for n in ("a", "b", "c") if n != lead])
    c.propose(b"needs a voter")
    assert c.nodes[lead].commit_index < c.nodes[lead].last_index
    assert c.nodes["d"].last_index == c.nodes[lead].last_index


def test_promoting_a_learner_makes_it_count() -> None:
    c = Cluster(seed=2)
    lead = c.wait_leader()
    c.add_node("d", join=True)
    committed(c, lead, c.nodes[lead].add_learner("d"))
    committed(c, lead, c.nodes[lead].promote_learner("d"))
    assert all(c.nodes[n].voters == ("a", "b", "c", "d") for n in c.nodes)
    assert c.nodes["d"].role is Role.FOLLOWER
    followers = [n for n in ("a", "b", "c") if n != lead]
    c.isolate(followers[0])
    c.cut |= {(lead, "d"), ("d", lead)}
    c.propose(b"2 of 4 is not a quorum")
    assert c.nodes[lead].commit_index < c.nodes[lead].last_index
    c.heal()
    c.tick(c.config.election_timeout_ticks)
    assert all(c.sm[n] == [b"2 of 4 is not a quorum"] for n in c.nodes)


def test_one_uncommitted_change_at_a_time_and_bad_changes_are_refused() -> None:
    c = Cluster(seed=3)
    lead = c.wait_leader()
    node = c.nodes[lead]
    c.isolate(lead)  # nothing commits
    node.add_learner("d")
    with pytest.raises(ConfChangeRejectedError, match="not committed"):
        node.add_learner("e")
    c.heal()
    c.tick(2)
    node.add_learner("e")
    c.tick(2)
    with pytest.raises(ConfChangeRejectedError):
        node.add_voter("a")  # already a voter
    with pytest.raises(ConfChangeRejectedError):
        node.promote_learner("zz")
    with pytest.raises(ConfChangeRejectedError):
        node.remove_voter("zz")
    committed(c, lead, node.propose_config_change(ConfChangeType.REMOVE_LEARNER, "d"))
    assert node.learners == ("e",)


def test_a_new_leader_must_commit_an_entry_of_its_term_before_changing_membership() -> None:
    c = Cluster(seed=4)
    c.filter = lambda e: not isinstance(e.content, AppendEntries)  # the NOOP cannot commit
    leader = c.elect("a")
    with pytest.raises(ConfChangeRejectedError, match="committed an entry of its term"):
        leader.add_voter("d")
    c.heal()
    c.tick(1)
    leader.add_voter("d")


def config_entries(c: Cluster, node: str) -> list[Membership]:
    return [codec.decode_value(e.data) for e in c.nodes[node].entries() if e.kind == EntryKind.CONFIG]


def test_a_configuration_takes_effect_when_appended_not_when_committed() -> None:
    c = Cluster(seed=5)
    lead = c.wait_leader()
    others = [n for n in c.ids if n != lead]
    c.filter = lambda e: not (e.source == others[0] and e.destination == lead)  # acks lost
    c.cut = {(lead, others[1])}
    index = c.nodes[lead].add_voter("d")
    assert c.nodes[lead].voters == ("a", "b", "c", "d")
    c.process(lead)
    c.run()
    f = c.nodes[others[0]]
    assert f.last_index == index and f.commit_index < index
    assert f.voters == ("a", "b", "c", "d")
    assert c.nodes[others[1]].voters == ("a", "b", "c")


def test_a_truncated_configuration_entry_reverts_the_configuration() -> None:
    c = Cluster(seed=5)
    lead = c.wait_leader()
    c.isolate(lead)
    c.nodes[lead].add_voter("d")  # appended on the isolated leader only
    assert c.nodes[lead].voters == ("a", "b", "c", "d")
    new = c.wait_leader(among=[n for n in c.ids if n != lead])
    c.propose(b"new era", new)
    c.heal()
    c.converge()
    for n in c.ids:
        assert c.nodes[n].voters == ("a", "b", "c"), n
        assert config_entries(c, n) == []
    assert c.sm[lead] == [b"new era"]


def test_a_removed_leader_steps_down_once_its_removal_commits() -> None:
    c = Cluster(seed=6)
    lead = c.wait_leader()
    node = c.nodes[lead]
    index = node.remove_voter(lead)
    assert node.role is Role.LEADER  # still manages the cluster until the removal commits
    c.process(lead)
    c.run()
    assert node.commit_index >= index
    assert node.role is Role.FOLLOWER and node.counters["removed_leader_step_down"] == 1
    new = c.leader()  # TimeoutNow handed leadership over at once
    assert new is not None and new != lead
    term = node.term
    c.tick(60)
    assert node.term == term and node.role is Role.FOLLOWER  # the removed node never campaigns
    assert c.nodes[new].voters == tuple(sorted(n for n in c.ids if n != lead))
    c.propose(b"two voters left", new)
    assert c.sm[new] == [b"two voters left"]


def test_removing_a_follower_shrinks_the_quorum() -> None:
    c = Cluster(["a", "b", "c", "d"], seed=7)
    lead = c.wait_leader()
    gone = next(n for n in c.ids if n != lead)
    committed(c, lead, c.nodes[lead].remove_voter(gone))
    c.crash(gone)
    third = next(n for n in c.ids if n not in (lead, gone))
    c.isolate(third)  # 2 of the 3 remaining voters
    c.propose(b"ok")
    assert c.sm[lead] == [b"ok"]


def test_membership_is_restored_from_the_log_and_from_snapshots_after_a_restart() -> None:
    c = Cluster(seed=8)
    lead = c.wait_leader()
    c.add_node("d", join=True)
    committed(c, lead, c.nodes[lead].add_learner("d"))
    follower = next(n for n in ("a", "b", "c") if n != lead)
    c.crash(follower)
    assert c.restart(follower).learners == ("d",)
    c.tick(2)
    c.compact(follower)  # the config entry is now only in the snapshot
    assert not config_entries(c, follower)
    c.crash(follower)
    restarted = c.restart(follower)
    assert (restarted.voters, restarted.learners) == (("a", "b", "c"), ("d",))


@pytest.mark.parametrize("change", [ConfChangeType.REMOVE_VOTER, ConfChangeType.REMOVE_LEARNER])
def test_a_removed_id_is_never_added_again(change: ConfChangeType) -> None:
    c = Cluster(["a", "b", "c", "d"], seed=9)
    lead = c.wait_leader()
    node = c.nodes[lead]
    gone = next(n for n in c.ids if n != lead)
    if change is ConfChangeType.REMOVE_LEARNER:
        gone = "e"  # never started: it only has to be a learner in the configuration
        committed(c, lead, node.add_learner(gone))
    committed(c, lead, node.propose_config_change(change, gone))
    assert gone in node.membership.removed and gone not in (*node.voters, *node.learners)
    assert all(c.nodes[n].membership.removed == (gone,) for n in node.voters)
    for add in (node.add_voter, node.add_learner):
        with pytest.raises(
            ConfChangeRejectedError, match=f"'{gone}' was removed from this cluster; node ids"
        ):
            add(gone)
    with pytest.raises(ConfChangeRejectedError, match="restart its message numbering under the others'"):
        node.add_voter(gone)
    committed(c, lead, node.add_learner("f"))  # other ids still join


def test_the_removed_ids_reach_a_new_follower_in_a_snapshot_and_bind_it_as_leader() -> None:
    c = Cluster(seed=10)
    lead = c.wait_leader()
    gone = next(n for n in c.ids if n != lead)
    committed(c, lead, c.nodes[lead].remove_voter(gone))
    c.crash(gone)
    committed(c, lead, c.nodes[lead].add_learner("d"))  # "d" is not running yet: it hears nothing
    c.propose(b"before d")
    for n in c.nodes:
        c.compact(n)  # both configuration entries are now only in the snapshots
    d = c.add_node("d", join=True)
    c.tick(5)
    assert d.counters["snapshot_installed"] == 1 and not config_entries(c, "d")
    assert d.membership == Membership(tuple(sorted(set(c.ids) - {gone, "d"})), ("d",), (gone,))
    assert c.sm["d"] == [b"before d"]
    committed(c, lead, c.nodes[lead].promote_learner("d"))
    c.nodes[lead].transfer_leadership("d")
    c.process(lead)
    c.run()
    assert c.leader() == "d"
    c.tick(2)
    with pytest.raises(ConfChangeRejectedError, match=f"'{gone}' was removed from this cluster"):
        d.add_voter(gone)
    c.crash("d")
    assert gone in c.restart("d").membership.removed  # durable: the snapshot carries it


def test_a_membership_keeps_removed_ids_apart_from_members() -> None:
    assert Membership(("a", "b"), ("c",), ("d",)).removed == ("d",)
    for voters, learners, removed in [
        (("a",), (), ("a",)),
        (("a",), ("b",), ("b",)),
        (("a",), (), ("d", "d")),
    ]:
        with pytest.raises(ValueError):
            Membership(voters, learners, removed)
