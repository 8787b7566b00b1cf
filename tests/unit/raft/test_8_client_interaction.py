"""Paper section 8 / dissertation 6.4: leader-only proposals and reads (followers answer NotLeaderError
with a hint), linearizable ReadIndex reads confirmed by a heartbeat round, reads deferred until the
leader commits in its term, failed reads on step-down, and lease-based reads."""

from __future__ import annotations

import random

import pytest
from raft_harness import Cluster, cfg, drain

from dscore.core.errors import LocalError, NotLeaderError
from dscore.protocols.contract import ReadState
from dscore.protocols.raft import AppendEntries, Heartbeat, HeartbeatResponse, RaftNode, ReadOnlyOption

LEASE = cfg(read_only_option=ReadOnlyOption.LEASE)


def test_followers_refuse_proposals_and_reads_with_a_leader_hint() -> None:
    c = Cluster(seed=1)
    lead = c.wait_leader()
    f = c.nodes[next(n for n in c.ids if n != lead)]
    with pytest.raises(NotLeaderError) as raised:
        f.propose(b"x")
    assert raised.value.leader_hint == lead
    with pytest.raises(NotLeaderError) as raised:
        f.read_index(1)
    assert raised.value.leader_hint == lead


def test_read_index_is_released_only_after_a_quorum_confirms_leadership() -> None:
    c = Cluster(seed=2)
    lead = c.wait_leader()
    c.propose(b"w")
    node = c.nodes[lead]
    commit = node.commit_index
    node.read_index(7)
    c.process(lead)
    assert c.reads[lead] == []
    heartbeats = [e for e in c.queue if isinstance(e.content, Heartbeat)]
    assert len(heartbeats) == 2  # one round for the batch of reads
    c.deliver(lambda e: isinstance(e.content, Heartbeat))
    assert c.reads[lead] == []
    c.deliver(lambda e: isinstance(e.content, HeartbeatResponse))  # two acks: a quorum with the leader
    assert c.reads[lead] == [ReadState(7, commit)]


def test_reads_wait_until_the_new_leader_commits_an_entry_of_its_term() -> None:
    c = Cluster(seed=3)
    c.filter = lambda e: not isinstance(e.content, AppendEntries)
    leader = c.elect("a")
    leader.read_index(1)
    c.tick(2)
    assert c.reads["a"] == []  # its NOOP is not committed: its commit index may be stale
    c.heal()
    c.tick(1)
    assert c.reads["a"] == [ReadState(1, leader.commit_index)]
    assert leader.term_at(leader.commit_index) == leader.term


def test_a_deposed_leader_never_serves_a_read_and_fails_the_pending_ones() -> None:
    c = Cluster(seed=4)
    old = c.wait_leader()
    c.isolate(old)
    c.nodes[old].read_index(5)
    c.process(old)
    new = c.wait_leader(among=[n for n in c.ids if n != old])
    c.propose(b"newer", new)
    c.tick(25, [old])  # check-quorum: the cut-off leader steps down
    assert c.reads[old] == [] and c.failed_reads[old] == [5]


def test_a_single_node_serves_reads_at_once() -> None:
    node = RaftNode("a", cfg(), random.Random(1), None, [])
    node.campaign()
    drain(node)
    node.propose(b"x")
    node.read_index(9)
    readies = drain(node)
    # served in the first Ready, at the commit index the read found: "x" is not durable yet, so it is not
    # committed yet (a lone voter commits its entry once it is saved, like any leader)
    assert [s for rd in readies for s in rd.read_states] == [ReadState(9, 1)]
    assert readies[0].read_states and readies[0].entries[-1].data == b"x"
    assert [e.data for rd in readies for e in rd.committed] == [b"x"]


def test_lease_reads_are_served_at_once_while_the_lease_holds() -> None:
    c = Cluster(config=LEASE, seed=5)
    lead = c.wait_leader()
    c.tick(1)  # a confirmed heartbeat round
    node = c.nodes[lead]
    node.read_index(1)
    c.process(lead)
    assert c.reads[lead] == [ReadState(1, node.commit_index)]  # no message round needed
    c.isolate(lead)
    c.tick(LEASE.effective_lease_ticks)  # no confirmation since: the lease ran out
    node.read_index(2)
    c.process(lead)
    c.run()
    assert [r.request_id for r in c.reads[lead]] == [1]
    assert LEASE.effective_lease_ticks < LEASE.election_timeout_ticks


def test_ticks_a_stalled_driver_skips_still_run_the_lease_out() -> None:
    c = Cluster(config=LEASE, seed=5)
    lead = c.wait_leader()
    c.tick(1)  # a confirmed heartbeat round: the lease holds for lease_ticks from here
    node = c.nodes[lead]
    c.isolate(lead)
    node.skip_ticks(LEASE.effective_lease_ticks)  # the driver stalled that long and replays none of it
    assert node.role.name == "LEADER"  # a slow process is no reason to step down or time out
    node.read_index(1)
    c.process(lead)
    c.run()
    assert c.reads[lead] == []  # not served from a lease that ran out during the stall
    with pytest.raises(LocalError):
        node.skip_ticks(-1)


def test_lease_reads_stop_once_a_leadership_transfer_starts() -> None:
    c = Cluster(config=LEASE, seed=6)
    lead = c.wait_leader()
    c.tick(1)
    node = c.nodes[lead]
    c.filter = lambda e: e.source == lead and isinstance(e.content, Heartbeat)  # hold the transfer back
    node.transfer_leadership(next(n for n in c.ids if n != lead))
    node.read_index(3)
    c.process(lead)
    assert c.reads[lead] == []  # falls back to a heartbeat round, which cannot complete here
