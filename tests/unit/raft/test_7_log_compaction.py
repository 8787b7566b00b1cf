"""Paper section 7 / dissertation chapter 5: log compaction, snapshots, InstallSnapshot (chunked) for
lagging and restarted followers, keeping a matching suffix, restart from snapshot + entries, and the
bound on a follower's snapshot receive buffer."""

from __future__ import annotations

import random

import pytest
from raft_harness import Cluster, cfg, drain, env

from dscore.core import codec
from dscore.core.errors import LocalError
from dscore.protocols.contract import DurableState, EntryKind, LogEntry, Snapshot, apply_persist
from dscore.protocols.raft import (
    AppendResponse,
    HardState,
    InstallSnapshot,
    Membership,
    RaftConfig,
    RaftNode,
    Role,
    SnapshotResponse,
)

ABC = Membership(("a", "b", "c"))


def chunk(offset: int, data: bytes, done: bool, total: int, *, snap_term: int = 2) -> InstallSnapshot:
    """A chunk of a snapshot at index 5 from leader "a" in term 2."""
    return InstallSnapshot(2, 5, snap_term, ABC, offset, data, done, total_bytes=total)


def test_compact_drops_the_prefix_and_persists_a_snapshot_with_the_membership() -> None:
    c = Cluster(seed=1)
    lead = c.wait_leader()
    for i in range(10):
        c.propose(b"v%d" % i)
    node = c.nodes[lead]
    applied = c.applied[lead]
    c.compact(lead)
    assert node.snapshot_index == applied and node.entries() == ()
    stored = c.durable[lead].snapshot
    assert stored is not None and stored.index == applied and stored.config == ABC
    assert codec.decode_value(stored.data) == tuple(b"v%d" % i for i in range(10))
    assert all(e.index > applied for e in c.durable[lead].entries)
    c.propose(b"after")  # replication goes on from the snapshot
    assert all(c.sm[n][-1] == b"after" for n in c.nodes)


def test_compact_refuses_unapplied_or_already_compacted_indexes() -> None:
    c = Cluster(seed=2)
    lead = c.wait_leader()
    c.propose(b"x")
    node = c.nodes[lead]
    with pytest.raises(LocalError, match="not handed out"):
        node.compact(node.last_index + 1, b"")
    c.compact(lead)
    with pytest.raises(LocalError, match="already compacted"):
        node.compact(node.snapshot_index, b"")


@pytest.mark.parametrize("lossy", [False, True])
def test_a_lagging_follower_catches_up_through_a_chunked_snapshot(lossy: bool) -> None:
    c = Cluster(config=cfg(snapshot_chunk_bytes=16), seed=3)
    lead = c.wait_leader()
    lag = next(n for n in c.ids if n != lead)
    c.crash(lag)
    for i in range(30):
        c.propose(b"value-%02d" % i)
    for n in c.nodes:
        c.compact(n)
    c.restart(lag)
    if lossy:
        drops = random.Random(3)
        c.filter = lambda e: (
            not isinstance(e.content, InstallSnapshot | SnapshotResponse) or drops.random() > 0.3
        )
    c.tick(40)
    c.heal()
    c.tick(5)
    assert c.sent["InstallSnapshot"] > 10  # the image took many chunks
    assert c.nodes[lag].counters["snapshot_installed"] >= 1
    assert c.sm[lag] == c.sm[lead] and len(c.sm[lag]) == 30
    c.propose(b"next")
    assert c.sm[lag][-1] == b"next"


def follower(entries: int, term: int = 1, config: RaftConfig | None = None) -> tuple[RaftNode, DurableState]:
    log = tuple(LogEntry(i, term, EntryKind.NORMAL, b"e%d" % i) for i in range(1, entries + 1))
    durable = DurableState(hard_state=HardState(term, None, 0), entries=log)
    node = RaftNode("b", config or cfg(), random.Random(1), durable, ["a", "b", "c"])
    for rd in drain(node):
        durable = apply_persist(durable, rd)
    return node, durable


def install(node: RaftNode, durable: DurableState, m: InstallSnapshot) -> tuple[DurableState, list[object]]:
    node.step(env("a", "b", m))
    out = []
    for rd in drain(node):
        durable = apply_persist(durable, rd)
        out += [o.content for o in rd.messages]
    return durable, out


def test_a_follower_keeps_the_entries_after_a_matching_snapshot() -> None:
    node, durable = follower(6)
    durable, out = install(node, durable, InstallSnapshot(2, 3, 1, ABC, 0, b"img", True, total_bytes=3))
    assert out == [AppendResponse(term=2, index=3)]
    assert node.snapshot_index == 3 and node.commit_index == 3
    assert node.entries_view() == [(4, 1), (5, 1), (6, 1)]
    assert durable.snapshot is not None and durable.snapshot.data == b"img"
    assert [e.index for e in durable.entries] == [4, 5, 6]


def test_a_follower_discards_a_conflicting_log_including_its_stored_suffix() -> None:
    node, durable = follower(6)
    after = (LogEntry(4, 2, EntryKind.NOOP, b""),)
    durable, out = install(
        node, durable, InstallSnapshot(2, 3, 2, ABC, 0, b"img", True, after, total_bytes=3)
    )
    assert out == [AppendResponse(term=2, index=4)]
    assert node.entries_view() == [(4, 2)]
    assert durable.entries == after  # the stale 5 and 6 are gone from storage too


def test_a_conflicting_snapshot_with_nothing_after_it_still_empties_the_stored_log() -> None:
    # The leader has no entries after its snapshot: the install itself must drop the stale suffix
    # (Ready.log_replaced), the stored log must not keep 4..6 of the old term.
    node, durable = follower(6)
    durable, out = install(node, durable, InstallSnapshot(2, 3, 2, ABC, 0, b"img", True, total_bytes=3))
    assert out == [AppendResponse(term=2, index=3)]
    assert node.entries_view() == [] and node.last_index == 3
    assert durable.entries == () and durable.snapshot is not None and durable.snapshot.term == 2
    restarted = RaftNode("b", cfg(), random.Random(2), durable, ["a", "b", "c"])
    assert (restarted.last_index, restarted.last_term) == (3, 2)


def test_a_leader_streams_a_snapshot_without_appending_anything() -> None:
    c = Cluster(seed=4)
    lead = c.wait_leader()
    lag = next(n for n in c.ids if n != lead)
    c.crash(lag)
    for i in range(5):
        c.propose(b"v%d" % i)
    for n in c.nodes:
        c.compact(n)
    last = c.nodes[lead].last_index
    assert c.nodes[lead].snapshot_index == last  # nothing after the snapshot
    c.restart(lag)
    c.tick(20)
    assert c.nodes[lag].counters["snapshot_installed"] >= 1
    assert c.nodes[lead].last_index == last  # no NOOP was appended to carry the install
    assert c.sm[lag] == c.sm[lead]


def test_snapshot_chunks_are_reassembled_in_order_and_duplicates_are_harmless() -> None:
    node, durable = follower(1)
    chunks = [
        (0, b"abc", False),
        (3, b"def", False),
        (3, b"def", False),
        (7, b"h", False),
        (6, b"g", False),
        (7, b"hi", True),
    ]
    replies = []
    for offset, data, done in chunks:
        durable, out = install(node, durable, chunk(offset, data, done, 9))
        replies += out
    assert replies == [
        SnapshotResponse(2, 5, 3),
        SnapshotResponse(2, 5, 6),
        SnapshotResponse(2, 5, 6),  # duplicate: same answer
        SnapshotResponse(2, 5, 6),  # a gap: tell the leader where to resume
        SnapshotResponse(2, 5, 7),
        AppendResponse(2, 5),
    ]
    assert durable.snapshot == Snapshot(5, 2, b"abcdefghi", ABC)


@pytest.mark.parametrize("total", [8, 9])
def test_a_snapshot_beyond_the_bound_is_refused_before_anything_is_buffered(total: int) -> None:
    node, durable = follower(1, config=cfg(max_snapshot_bytes=8))
    durable, out = install(node, durable, chunk(0, b"abcd", False, total))
    if total == 8:  # at the bound: accepted
        assert out == [SnapshotResponse(2, 5, 4)] and "snapshot_too_large" not in node.counters
        durable, out = install(node, durable, chunk(4, b"efgh", True, total))
        assert out == [AppendResponse(2, 5)] and node.snapshot_index == 5
        return
    assert out == [] and node.counters["snapshot_too_large"] == 1
    # nothing was kept: a chunk continuing it (within the bound) finds no transfer to continue
    durable, out = install(node, durable, chunk(4, b"efgh", True, 8))
    assert out == [SnapshotResponse(2, 5, 0)]
    assert node.snapshot_index == 0 and durable.snapshot is None


def test_chunks_that_disagree_on_the_snapshot_size_drop_the_transfer() -> None:
    node, durable = follower(1)
    durable, out = install(node, durable, chunk(0, b"abc", False, 9))
    assert out == [SnapshotResponse(2, 5, 3)]
    durable, out = install(node, durable, chunk(3, b"def", False, 12))
    assert out == [] and node.counters["snapshot_chunks_disagree"] == 1
    durable, out = install(node, durable, chunk(6, b"ghi", True, 9))
    assert out == [SnapshotResponse(2, 5, 0)]  # the transfer is gone: start over
    assert node.snapshot_index == 0 and durable.snapshot is None


def test_a_follower_never_installs_a_leader_snapshot_beyond_its_bound() -> None:
    c = Cluster(config=cfg(snapshot_chunk_bytes=16, max_snapshot_bytes=64), seed=3)
    lead = c.wait_leader()
    lag = next(n for n in c.ids if n != lead)
    c.crash(lag)
    for i in range(30):
        c.propose(b"value-%02d" % i)
    for n in c.nodes:
        c.compact(n)
    snapshot = c.nodes[lead].snapshot
    assert snapshot is not None and len(snapshot.data) > 64
    c.restart(lag)
    c.tick(40)
    assert c.nodes[lead].counters["snapshot_sent"] >= 1
    assert c.nodes[lag].counters["snapshot_too_large"] >= 1
    assert "snapshot_installed" not in c.nodes[lag].counters and c.sm[lag] == []
    c.propose(b"still committing")  # the others go on
    assert c.sm[lead][-1] == b"still committing"


def test_restart_from_snapshot_and_entries_resumes_with_the_right_commit_index() -> None:
    entries = tuple(LogEntry(i, 2, EntryKind.NORMAL, b"") for i in range(6, 9))
    snap = Snapshot(5, 2, b"image", ABC)
    node = RaftNode("b", cfg(), random.Random(1), DurableState(HardState(3, "a", 2), snap, entries), ["x"])
    assert (node.term, node.vote, node.role) == (3, "a", Role.FOLLOWER)
    assert node.commit_index == 5  # max(hard state commit, snapshot index)
    assert (node.snapshot_index, node.last_index, node.voters) == (5, 8, ("a", "b", "c"))
    first = drain(node)[0]
    assert first.snapshot == snap  # announced again for an empty state machine
    node = RaftNode("b", cfg(), random.Random(1), DurableState(HardState(3, "a", 7), snap, entries), ["x"])
    assert node.commit_index == 7
    assert [e.index for rd in drain(node) for e in rd.committed] == [6, 7]


def test_a_crashed_node_restarts_from_its_snapshot_and_catches_up() -> None:
    c = Cluster(seed=4)
    lead = c.wait_leader()
    for i in range(8):
        c.propose(b"k%d" % i)
    c.tick(1)
    f = next(n for n in c.ids if n != lead)
    c.compact(f)
    c.propose(b"tail")
    c.tick(1)
    c.crash(f)
    c.restart(f)
    expected = [b"k%d" % i for i in range(8)] + [b"tail"]
    # from the snapshot and the durable commit index (volatile, so it may lag by the last commit) ...
    assert c.sm[f] == expected[: len(c.sm[f])] and len(c.sm[f]) >= 8
    c.tick(5)
    assert c.sm[f] == expected  # ... then the leader's next message tells it the rest
