"""Paper 5.4 (safety): the commitment rule of Figure 8, reproduced step by step with explicit message
routing, against a deliberately broken commit rule that the harness must catch; and a short randomized
fault schedule with every invariant checked along the way."""

from __future__ import annotations

import random

import pytest
from raft_harness import Cluster, SafetyViolation, cfg

from dscore.core.envelope import Envelope
from dscore.protocols.raft import AppendEntries, Heartbeat, RaftNode, Role

FIG8 = cfg(pre_vote=False, check_quorum=False, max_entries_per_msg=2)
S = ["s1", "s2", "s3", "s4", "s5"]


class CommitsByCountingAnyTerm(RaftNode):
    """The bug Figure 8 warns about: commit an entry of an earlier term as soon as a majority stores it."""

    def _can_commit_by_counting(self, index: int) -> bool:
        return True


def from_leader_to(src: str, dsts: set[str]) -> object:
    return lambda e: (
        not (e.source == src and e.destination in dsts and isinstance(e.content, AppendEntries | Heartbeat))
    )


def campaign_until_leader(c: Cluster, node_id: str, tries: int = 3) -> None:
    for _ in range(tries):
        c.nodes[node_id].campaign()
        c.process(node_id)
        c.run()
        if c.nodes[node_id].role is Role.LEADER:
            return
    raise AssertionError(f"{node_id} did not win")


def figure_8(node_cls: type[RaftNode], replicate_term_4_entry: bool) -> Cluster:
    c = Cluster(S, FIG8, node_cls=node_cls)
    c.elect("s5")  # term 1: the NOOP at index 1 is committed everywhere
    assert all(n.commit_index == 1 for n in c.nodes.values())

    # (a) S1 leads term 2; its entries (2: NOOP, 3: "x") reach S2 only.
    c.filter = from_leader_to("s1", {"s3", "s4", "s5"})  # type: ignore[assignment]
    c.elect("s1")
    c.propose(b"x", "s1")
    assert c.nodes["s1"].term == 2
    assert c.nodes["s2"].entries_view() == [(1, 1), (2, 2), (3, 2)]

    # (b) S1 crashes; S5 wins term 3 with S3 and S4 and appends index 2 locally only.
    c.crash("s1")
    c.filter = from_leader_to("s5", set(S))  # type: ignore[assignment]
    c.elect("s5")
    assert c.nodes["s5"].term == 3 and c.nodes["s5"].entries_view() == [(1, 1), (2, 3)]

    # (c) S5 crashes; S1 restarts and wins term 4 (S2, S3, S4 vote: its last term 2 beats their 1).
    c.crash("s5")
    c.restart("s1")
    c.heal()
    if not replicate_term_4_entry:
        # Only the term-2 entries get through: index 2 is then on a majority (S1, S2, S3, S4)...
        def no_term_4_entry(e: Envelope) -> bool:
            m = e.content
            if not isinstance(m, AppendEntries) or not any(x.term == 4 for x in m.entries):
                return True
            # let it through only if the consistency check will refuse it anyway
            return c.nodes[e.destination].term_at(m.prev_index) != m.prev_term

        c.filter = no_term_4_entry
    campaign_until_leader(c, "s1")
    s1 = c.nodes["s1"]
    assert s1.term == 4
    return c


def test_figure_8_an_old_term_entry_on_a_majority_is_not_committed_and_may_be_overwritten() -> None:
    c = figure_8(RaftNode, replicate_term_4_entry=False)
    s1 = c.nodes["s1"]
    for n in ("s2", "s3", "s4"):
        assert c.nodes[n].entries_view()[:3] == [(1, 1), (2, 2), (3, 2)]
    assert s1.commit_index == 1  # ...but it is not of term 4, so S1 does not commit it
    # (d) S1 crashes; S5 (last term 3) wins term 5 and overwrites index 2 everywhere: nothing lost,
    # since nothing was committed.
    c.crash("s1")
    c.heal()
    c.restart("s5")
    campaign_until_leader(c, "s5")
    c.tick(3)
    for n in ("s2", "s3", "s4", "s5"):
        assert c.nodes[n].entries_view()[1] == (2, 3)
        assert c.sm[n] == []  # "x" was never committed
    c.check_log_matching()


@pytest.mark.parametrize(
    ("completeness", "caught"),
    [
        (True, "leader completeness: s5 leads term 5 without committed 2"),  # as soon as S5 wins
        (False, "state-machine safety"),  # else when S5's own entry 2 gets applied
    ],
)
def test_figure_8_with_the_broken_commit_rule_the_invariants_catch_it(
    completeness: bool, caught: str
) -> None:
    c = figure_8(CommitsByCountingAnyTerm, replicate_term_4_entry=False)
    c.check_completeness = completeness
    s1 = c.nodes["s1"]
    assert s1.commit_index == 3  # the bug: committed index 2 and 3 (term 2) by counting
    assert c.sm["s1"] == [b"x"]  # and applied "x"
    c.crash("s1")  # before anyone else learns the commit index
    c.drop_queued()
    c.heal()
    c.restart("s5")
    with pytest.raises(SafetyViolation, match=caught):
        campaign_until_leader(c, "s5")
        c.tick(3)


def test_figure_8_e_once_a_term_4_entry_is_on_a_majority_s5_cannot_win() -> None:
    c = figure_8(RaftNode, replicate_term_4_entry=True)
    s1 = c.nodes["s1"]
    c.tick(1)
    assert s1.commit_index == s1.last_index == 4  # index 2 and 3 committed indirectly
    assert c.sm["s1"] == [b"x"]
    c.crash("s1")
    c.restart("s5")
    for _ in range(3):
        c.nodes["s5"].campaign()
        c.process("s5")
        c.run()
        assert c.nodes["s5"].role is not Role.LEADER
    lead = c.wait_leader()
    c.tick(2)
    assert lead in {"s2", "s3", "s4"} and c.sm["s5"] == [b"x"]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_crashes_partitions_and_loss_never_violate_safety(seed: int) -> None:
    rng = random.Random(seed)
    ids = ["a", "b", "c", "d", "e"]
    c = Cluster(ids, seed=seed)
    loss = 0.0

    def lossy(_e: Envelope) -> bool:
        return rng.random() >= loss

    c.filter = lossy
    for step in range(250):
        roll = rng.random()
        if roll < 0.02 and len(c.down) < 2:
            c.crash(rng.choice(sorted(c.nodes)))
        elif roll < 0.05 and c.down:
            c.restart(rng.choice(sorted(c.down)))
        elif roll < 0.07:
            c.partition(rng.sample(ids, 2))
        elif roll < 0.10:
            c.cut = set()
        elif roll < 0.12:
            loss = rng.choice([0.0, 0.1, 0.3])
        lead = c.leader()
        if lead is not None and c.nodes[lead].lead_transferee is None and step % 3 == 0:
            c.propose(b"op%d" % step, lead)
        c.tick(1)
    loss = 0.0
    c.cut = set()
    for node_id in sorted(c.down):
        c.restart(node_id)
    c.converge(40)
    lead = c.wait_leader()
    c.tick(3)
    assert all(c.sm[n] == c.sm[lead] for n in ids)
