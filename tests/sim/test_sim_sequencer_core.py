"""The sequencer core on its own, driven by hand: the contract's shape and each repair path."""

from __future__ import annotations

import random

import pytest

from dscore.core.envelope import Envelope, Timestamp
from dscore.core.errors import ConfigError, NotLeaderError
from dscore.core.ids import MsgId
from dscore.protocols.contract import DurableState, EntryKind, Ready, apply_persist
from dscore.protocols.sequencer import (
    Entries,
    Fetch,
    Sequenced,
    SequencerCore,
    SequencerRole,
    SequencerSettings,
    Status,
)

PEERS = ("n0", "n1", "n2")


def core(node_id: str, durable: DurableState | None = None, **settings: int) -> SequencerCore:
    return SequencerCore(
        node_id, [p for p in PEERS if p != node_id], random.Random(0), durable, SequencerSettings(**settings)
    )


def envelope(source: str, destination: str, content: object) -> Envelope:
    return Envelope(source, destination, content, Timestamp(1), MsgId(source, 1, 1))


def drain(node: SequencerCore, durable: DurableState | None = None) -> tuple[list[Ready], DurableState]:
    durable = durable or DurableState()
    readies = []
    while node.has_ready():
        ready = node.ready()
        durable = apply_persist(durable, ready)
        node.advance(ready)
        readies.append(ready)
    return readies, durable


def test_the_smallest_id_is_the_sequencer() -> None:
    assert core("n0").role is SequencerRole.SEQUENCER
    assert core("n2").role is SequencerRole.REPLICA
    assert core("n2").leader_id == "n0"


def test_replicas_refuse_proposals_and_reads_with_a_hint() -> None:
    replica = core("n1")
    with pytest.raises(NotLeaderError) as caught:
        replica.propose(b"x")
    assert caught.value.leader_hint == "n0"
    with pytest.raises(NotLeaderError):
        replica.read_index(1)


def test_a_proposal_is_persisted_announced_and_committed_in_one_ready() -> None:
    sequencer = core("n0")
    assert sequencer.propose(b"a") == 1
    assert sequencer.propose(b"b") == 2
    (ready,), durable = drain(sequencer)
    assert [e.index for e in ready.entries] == [1, 2]
    assert all(e.kind is EntryKind.NORMAL for e in ready.entries)
    # Announcements ride in the same Ready, which the driver sends only after persisting its entries.
    assert {(m.to, m.content) for m in ready.messages} == {
        (peer, Sequenced(i, d)) for peer in ("n1", "n2") for i, d in ((1, b"a"), (2, b"b"))
    }
    assert ready.committed == ready.entries
    assert [e.data for e in durable.entries] == [b"a", b"b"]
    assert not sequencer.has_ready()


def test_read_index_is_the_sequencers_last_index() -> None:
    sequencer = core("n0")
    sequencer.propose(b"a")
    sequencer.read_index(7)
    (ready,), _ = drain(sequencer)
    assert [(r.request_id, r.index) for r in ready.read_states] == [(7, 1)]


def test_a_replica_buffers_early_entries_fetches_the_gap_and_applies_in_order() -> None:
    replica = core("n1")
    replica.step(envelope("n0", "n1", Sequenced(3, b"c")))
    replica.step(envelope("n0", "n1", Sequenced(2, b"b")))
    readies, _ = drain(replica)
    assert [m.content for r in readies for m in r.messages] == [Fetch(1)]
    assert not [e for r in readies for e in r.committed]
    replica.step(envelope("n0", "n1", Sequenced(1, b"a")))
    readies, durable = drain(replica)
    assert [e.data for r in readies for e in r.committed] == [b"a", b"b", b"c"]
    assert [e.index for e in durable.entries] == [1, 2, 3]


def test_duplicates_are_ignored_and_counted() -> None:
    replica = core("n1")
    replica.step(envelope("n0", "n1", Sequenced(1, b"a")))
    replica.step(envelope("n0", "n1", Sequenced(1, b"a")))
    readies, _ = drain(replica)
    assert [e.data for r in readies for e in r.committed] == [b"a"]
    assert replica.counters.dropped == {"duplicate": 1}


def test_only_the_sequencer_may_announce_entries() -> None:
    replica = core("n1")
    replica.step(envelope("n2", "n1", Sequenced(1, b"forged")))
    replica.step(envelope("n9", "n1", Sequenced(1, b"stranger")))
    assert replica.last_index == 0
    assert replica.counters.dropped == {"not_from_sequencer": 1, "unknown_peer": 1}


def test_status_reveals_a_lost_tail_and_fetch_repairs_it() -> None:
    sequencer = core("n0", max_batch=2)
    for data in (b"a", b"b", b"c"):
        sequencer.propose(data)
    drain(sequencer)
    replica = core("n1")
    replica.step(envelope("n0", "n1", Status(3)))
    (ready,), _ = drain(replica)
    assert [m.content for m in ready.messages] == [Fetch(1)]
    sequencer.step(envelope("n1", "n0", Fetch(1)))
    (answer,), _ = drain(sequencer)
    assert [m.content for m in answer.messages] == [Entries(1, (b"a", b"b"))]  # bounded batch
    replica.step(envelope("n0", "n1", answer.messages[0].content))
    drain(replica)
    assert replica.last_index == 2
    # The next fetch waits for the retry timer, then asks for the rest.
    for _ in range(2 * replica.settings.fetch_retry_ticks):
        replica.tick()
    readies, _ = drain(replica)
    assert Fetch(3) in [m.content for r in readies for m in r.messages]


def test_heartbeat_every_few_ticks() -> None:
    sequencer = core("n0", heartbeat_ticks=3)
    for _ in range(6):
        sequencer.tick()
    readies, _ = drain(sequencer)
    statuses = [m for r in readies for m in r.messages if isinstance(m.content, Status)]
    assert len(statuses) == 4  # two heartbeats to two replicas


def test_a_restarted_node_recommits_its_durable_log_and_continues() -> None:
    sequencer = core("n0")
    sequencer.propose(b"a")
    sequencer.propose(b"b")
    _, durable = drain(sequencer)
    restarted = core("n0", durable)
    assert restarted.last_index == 2
    (ready,), _ = drain(restarted, durable)
    assert [e.data for e in ready.committed] == [b"a", b"b"]
    assert not ready.entries  # already durable
    assert restarted.propose(b"c") == 3  # never re-uses an announced index


def test_unacknowledged_ready_is_offered_again() -> None:
    sequencer = core("n0")
    sequencer.propose(b"a")
    first = sequencer.ready()
    assert sequencer.ready() == first  # nothing is lost before advance
    sequencer.advance(first)
    assert not sequencer.has_ready()


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError):
        SequencerSettings(window=0)
