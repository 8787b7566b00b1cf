"""Everything at once under random faults: crashes and restarts, partitions, loss, duplication,
reordering, compaction, membership changes, leadership transfers and reads. The harness checks election
safety and state-machine safety on every step; at the end the log-matching property, that every member
applied the same commands, and that every read was linearizable (its index covered every write any node
had applied when the read was registered)."""

from __future__ import annotations

import random

import pytest
from raft_harness import Cluster, cfg

from dscore.core.errors import LocalError, NotLeaderError
from dscore.protocols.raft import ConfChangeRejectedError, ReadOnlyOption

#: why a leader refuses a valid membership change (see dscore.protocols.raft.confchange)
CHANGE_RULES = {
    "the leader has not committed an entry of its term yet",
    "another membership change is not committed yet",
}


def run(seed: int, steps: int, lease: bool) -> Cluster:
    rng = random.Random(seed)
    config = cfg(
        election_timeout_ticks=rng.choice([5, 10]),
        max_inflight_msgs=rng.choice([1, 4, 64]),
        max_entries_per_msg=rng.choice([1, 3, 100]),
        snapshot_chunk_bytes=rng.choice([8, 64, 1 << 20]),
        pre_vote=lease or rng.random() < 0.8,
        check_quorum=lease or rng.random() < 0.8,
        read_only_option=ReadOnlyOption.LEASE if lease else ReadOnlyOption.READ_INDEX,
    )
    c = Cluster(["a", "b", "c"], config, seed=seed, wire=rng.random() < 0.3)
    spare = ["d", "e"]
    loss = [0.0]
    c.filter = lambda _e: rng.random() >= loss[0]
    c.duplicate = rng.random() < 0.3
    if rng.random() < 0.3:
        c.shuffle_rng = random.Random(seed)
    pending_reads: dict[int, int] = {}
    for step in range(steps):
        roll = rng.random()
        alive = sorted(c.nodes)
        if roll < 0.02 and len(c.down) < 2:
            c.crash(rng.choice(alive))
        elif roll < 0.05 and c.down:
            c.restart(rng.choice(sorted(c.down)))
        elif roll < 0.07:
            c.partition(rng.sample(c.ids, rng.randint(1, 2)))
        elif roll < 0.10:
            c.cut = set()
        elif roll < 0.12:
            loss[0] = rng.choice([0.0, 0.05, 0.2])
        elif roll < 0.14:
            node_id = rng.choice(alive)
            if c.applied[node_id] > c.nodes[node_id].snapshot_index:
                c.compact(node_id)
        lead = c.leader()
        if lead is not None:
            # Each call may fail only as documented for a leader; anything else fails the test.
            node = c.nodes[lead]
            action = rng.random()
            if action < 0.4:
                try:
                    node.propose(b"op%d" % step)
                except NotLeaderError:
                    assert node.lead_transferee is not None  # refused only while handing over
            elif action < 0.45:
                target = rng.choice(c.ids)
                if target in node.voters or target == lead:
                    node.transfer_leadership(target)
                else:
                    with pytest.raises(LocalError, match="not a voter"):
                        node.transfer_leadership(target)
            elif action < 0.5:
                change = rng.random()
                try:
                    if spare and change < 0.3:
                        new = spare.pop(0)
                        c.add_node(new, join=True)
                        node.add_learner(new)
                    elif change < 0.5 and node.learners:
                        node.promote_learner(rng.choice(node.learners))
                    elif change < 0.6 and len(node.voters) > 3:
                        node.remove_voter(rng.choice(node.voters))
                except NotLeaderError:
                    assert node.lead_transferee is not None
                except ConfChangeRejectedError as refused:
                    # the two rules of single-server changes; the changes chosen here are always valid
                    assert str(refused) in CHANGE_RULES, refused
            elif action < 0.6:
                pending_reads[step] = max(c.applied.values())
                node.read_index(step)  # a leader never refuses a read
            c.process(lead)
        c.tick(1)
        for node_id in c.ids:
            for state in c.reads[node_id]:
                assert state.index >= pending_reads.pop(state.request_id), f"stale read at step {step}"
            c.reads[node_id].clear()
    loss[0] = 0.0
    c.cut = set()
    c.shuffle_rng = None
    for node_id in sorted(c.down):
        c.restart(node_id)
    c.converge(60)
    lead = c.wait_leader(600)
    c.propose(b"final", lead)
    c.tick(40)
    leader = c.nodes[lead]
    for node_id in (*leader.voters, *leader.learners):
        assert c.sm[node_id] == c.sm[lead], node_id
    assert c.sm[lead][-1] == b"final"
    return c


@pytest.mark.parametrize("seed", range(20))
def test_random_faults_read_index(seed: int) -> None:
    run(seed, 300, lease=False)


@pytest.mark.parametrize("seed", range(10))
def test_random_faults_lease_reads(seed: int) -> None:
    run(seed, 300, lease=True)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 200))
def test_random_faults_many_seeds(seed: int) -> None:
    run(seed, 400, lease=seed % 3 == 0)
