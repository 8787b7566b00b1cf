"""RaftConfig validation, the wire messages (codec round trips), and invalid input being dropped and
counted instead of raised."""

from __future__ import annotations

import random

import pytest
from raft_harness import cfg, drain, env, sent

from dscore.core import codec
from dscore.core.errors import ConfigError, LocalError
from dscore.protocols.contract import DurableState, EntryKind, LogEntry, Snapshot
from dscore.protocols.raft import (
    AppendEntries,
    AppendResponse,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Membership,
    RaftConfig,
    RaftNode,
    ReadOnlyOption,
    Role,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)


@pytest.mark.parametrize(
    "overrides",
    [
        {"election_timeout_ticks": 1},
        {"heartbeat_ticks": 0},
        {"heartbeat_ticks": 10},
        {"max_inflight_msgs": 0},
        {"max_entries_per_msg": 0},
        {"max_bytes_per_msg": -1},
        {"snapshot_chunk_bytes": 0},
        {"max_snapshot_bytes": 0},
        {"pre_vote": 1},
        {"election_timeout_ticks": 10.5},
        {"lease_ticks": 10},
        {"read_only_option": ReadOnlyOption.LEASE, "check_quorum": False},
        {"read_only_option": ReadOnlyOption.LEASE, "election_timeout_ticks": 2, "heartbeat_ticks": 1},
        {"read_only_option": "lease"},
    ],
)
def test_bad_settings_raise_config_error(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        cfg(**overrides)


def test_default_settings() -> None:
    c = RaftConfig()
    assert (c.election_timeout_ticks, c.pre_vote, c.check_quorum) == (10, True, True)
    assert c.effective_lease_ticks == 8 and cfg(lease_ticks=3).effective_lease_ticks == 3
    with pytest.raises(ConfigError):
        RaftNode("a", object(), random.Random(1))  # type: ignore[arg-type]


ENTRY = LogEntry(3, 2, EntryKind.CONFIG, codec.encode_value(Membership(("a", "b"), ("c",))))
MESSAGES = [
    HardState(3, "a", 7),
    HardState(3, None, 0),
    Membership(("a", "b"), ("c",)),
    Membership(("a", "b"), ("c",), ("d", "e")),
    VoteRequest(4, 10, 3, pre_vote=True, transfer=False),
    VoteResponse(4, True, pre_vote=True),
    AppendEntries(2, 2, 1, (ENTRY,), 2),
    AppendResponse(2, 9, True, 4, 1),
    Heartbeat(2, 5, 17),
    HeartbeatResponse(2, 17),
    InstallSnapshot(2, 5, 2, Membership(("a",)), 0, b"\x00\x01", True, (ENTRY,), total_bytes=2),
    SnapshotResponse(2, 5, 1024),
    TimeoutNow(9),
]


@pytest.mark.parametrize("content", MESSAGES, ids=lambda m: type(m).__name__)
def test_messages_round_trip_through_the_codec(content: object) -> None:
    e = env("a", "b", content)
    assert codec.decode_envelope(codec.encode_envelope(e)).content == content
    assert codec.decode_value(codec.encode_value(content)) == content


def test_a_snapshot_with_its_membership_round_trips() -> None:
    snap = Snapshot(5, 2, b"img", Membership(("a", "b", "c")))
    assert codec.decode_value(codec.encode_value(snap)) == snap


def fresh() -> RaftNode:
    node = RaftNode(
        "b", cfg(), random.Random(1), DurableState(hard_state=HardState(1, None, 0)), ["a", "b", "c"]
    )
    drain(node)
    return node


@pytest.mark.parametrize(
    ("src", "dst", "content", "reason"),
    [
        ("a", "x", Heartbeat(1, 0, 1), "misrouted"),
        ("b", "b", Heartbeat(1, 0, 1), "from_self"),
        ("a", "b", object(), "unknown_message"),
        ("a", "b", AppendEntries(1, -1, 0, (), 0), "invalid"),
        ("a", "b", AppendEntries(1, 0, 0, (LogEntry(2, 1, EntryKind.NORMAL, b""),), 0), "invalid"),
        ("a", "b", AppendEntries(1, 0, 0, (LogEntry(1, 5, EntryKind.NORMAL, b""),), 0), "invalid"),
        ("a", "b", AppendEntries(1, 0, 2, (), 0), "invalid"),
        ("a", "b", Heartbeat(1, -3, 1), "invalid"),
        ("a", "b", VoteRequest(2, -1, 0), "invalid"),
        ("z", "b", AppendResponse(1, 0), "non_member"),
        ("z", "b", VoteResponse(1, True), "non_member"),
        ("a", "b", InstallSnapshot(1, 0, 1, Membership(()), 0, b"", True, total_bytes=0), "invalid"),
        # a chunk reaching past the snapshot's size, one ending at it but not done, one done too early
        ("a", "b", InstallSnapshot(1, 1, 1, Membership(("a",)), 0, b"abc", False, total_bytes=2), "invalid"),
        ("a", "b", InstallSnapshot(1, 1, 1, Membership(("a",)), 0, b"ab", False, total_bytes=2), "invalid"),
        ("a", "b", InstallSnapshot(1, 1, 1, Membership(("a",)), 0, b"a", True, total_bytes=2), "invalid"),
        ("a", "b", SnapshotResponse(1, 1, -1), "invalid"),
        ("a", "b", TimeoutNow(0), "invalid"),
        ("a", "b", TimeoutNow(1), "ignored_timeout_now"),  # not from our leader
    ],
)
def test_invalid_messages_are_dropped_and_counted(src: str, dst: str, content: object, reason: str) -> None:
    node = fresh()
    node.step(env(src, dst, content))
    assert node.counters == {reason: 1}
    assert (node.term, node.role, node.last_index) == (1, Role.FOLLOWER, 0)
    assert sent(drain(node)) == []


def test_bad_durable_state_is_a_local_error() -> None:
    with pytest.raises(LocalError):
        RaftNode("a", cfg(), random.Random(1), DurableState(hard_state=("term", 1)), ["a"])
    with pytest.raises(LocalError):
        RaftNode("a", cfg(), random.Random(1), DurableState(snapshot=Snapshot(3, 1, b"", None)), ["a"])


def test_a_gap_in_durable_entries_is_cut_off_and_counted() -> None:
    entries = (LogEntry(1, 1, EntryKind.NOOP, b""), LogEntry(3, 1, EntryKind.NOOP, b""))
    node = RaftNode("a", cfg(), random.Random(1), DurableState(entries=entries), ["a", "b"])
    assert node.last_index == 1 and node.counters == {"restore_discarded_entries": 1}


def test_the_factory_matches_the_runtime_and_simulator_signature() -> None:
    make = RaftNode.factory(cfg(election_timeout_ticks=5))
    node = make("a", ("b", "c"), random.Random(1), DurableState())
    assert node.voters == ("a", "b", "c") and node.config.election_timeout_ticks == 5
    assert RaftNode("a", cfg(), random.Random(1), None, [], join=True).voters == ()
