"""PBFT's core, section by section of Castro and Liskov (TOCS 2002; OSDI '99 section 4)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from pbft_harness import SECRET, Cluster

from dscore.core.codec import encode_value
from dscore.core.envelope import Envelope, Timestamp
from dscore.core.errors import LocalError
from dscore.core.ids import MsgId
from dscore.protocols.pbft import PairKeys, PbftRole
from dscore.protocols.pbft.auth import NULL_DIGEST, digest_of, pair_key
from dscore.protocols.pbft.messages import (
    Bundle,
    Commit,
    NewView,
    PbftHardState,
    PbftHardStateV1,
    PEntry,
    Prepare,
    PrePrepare,
    QEntry,
    ViewChange,
)
from dscore.protocols.pbft.node import MAX_BACKOFF
from dscore.protocols.pbft.viewchange import check, choose


def _data(i: int) -> bytes:
    return f"request-{i}".encode()


# -- 3: authentication ------------------------------------------------------------------------------------


def test_3_pair_keys_are_per_pair_and_a_replica_holds_only_its_own_row() -> None:
    ids = ("r0", "r1", "r2", "r3")
    assert pair_key(SECRET, "r0", "r1") == pair_key(SECRET, "r1", "r0")
    assert pair_key(SECRET, "r0", "r1") != pair_key(SECRET, "r0", "r2")
    liar = PairKeys.for_node(SECRET, "r3", ids)
    assert liar.knows("r0") and not liar.knows("r3")
    body = encode_value(Prepare(0, 1, b"d"))
    # r3 can MAC what it says to r0, but anything it makes up "from r1" fails at r0.
    r0 = PairKeys.for_node(SECRET, "r0", ids)
    assert r0.verify("r3", "r0", body, liar.mac("r3", "r0", body))
    assert not r0.verify("r1", "r0", body, liar.mac("r3", "r0", body))


def test_3_a_forged_or_altered_message_is_dropped_and_counted() -> None:
    c = Cluster()
    backup = c.nodes["r1"]
    liar = PairKeys.for_node(SECRET, "r3", c.ids)
    forged = PrePrepare(0, 1, digest_of(_data(1), ()), _data(1), ())
    forged = replace(forged, mac=liar.mac("r3", "r1", encode_value(forged)))  # r3's key, "from" r0
    backup.step(Envelope("r0", "r1", forged, Timestamp(0), MsgId("r0", 1, 1)))
    assert backup.counters.dropped["unauthenticated"] == 1
    assert not backup.has_ready() or not backup.ready().messages


# -- 4.2: normal-case operation ----------------------------------------------------------------------------


def test_4_2_pre_prepare_prepare_commit_execute_in_order_everywhere() -> None:
    c = Cluster()
    for i in range(1, 4):
        c.request(_data(i), at="r0")
    for r in c.ids:
        assert [d for _, d in c.executed[r]] == [_data(1), _data(2), _data(3)]
    assert c.nodes["r0"].role is PbftRole.PRIMARY and c.nodes["r1"].role is PbftRole.BACKUP
    assert c.nodes["r2"].origins_of(2) == (("c", 1),)


def test_4_2_a_backup_forwards_a_request_to_the_primary() -> None:
    c = Cluster()
    c.request(_data(1), at="r2")
    assert all([d for _, d in c.executed[r]] == [_data(1)] for r in c.ids)


def test_4_2_one_silent_replica_does_not_stop_a_quorum_of_2f_plus_1() -> None:
    c = Cluster()
    c.down.add("r3")
    c.request(_data(1))
    assert all(c.executed[r] == [(1, _data(1))] for r in ("r0", "r1", "r2"))


def test_4_2_two_silent_replicas_stop_progress_without_breaking_anything() -> None:
    c = Cluster()
    c.down.update({"r2", "r3"})
    c.request(_data(1))
    assert all(c.executed[r] == [] for r in c.ids)


def test_4_2_a_backup_accepts_one_digest_per_view_and_number() -> None:
    c = Cluster()
    keys = PairKeys.for_node(SECRET, "r0", c.ids)
    backup = c.nodes["r1"]
    for i, data in enumerate((_data(1), _data(2))):
        pp = PrePrepare(0, 1, digest_of(data, ()), data, ())
        pp = replace(pp, mac=keys.mac("r0", "r1", encode_value(pp)))
        backup.step(Envelope("r0", "r1", pp, Timestamp(0), MsgId("r0", 1, i + 1)))
    prepares = [m.content for m in backup.ready().messages if isinstance(m.content, Prepare)]
    assert {p.digest for p in prepares} == {digest_of(_data(1), ())}
    assert backup.counters.dropped["equivocation"] == 1


# -- 4.3: garbage collection -------------------------------------------------------------------------------


def test_4_3_checkpoints_become_stable_and_the_log_is_collected() -> None:
    c = Cluster()  # K = 2, L = 4
    for i in range(1, 6):
        c.request(_data(i))
    for r in c.ids:
        node = c.nodes[r]
        assert node.stable_seq == 4 and node.last_executed == 5
        assert all(n > node.prev_stable[0] for n in node._slots)
    # The stable checkpoint's image is durable: a replica restarts from it and replays what follows.
    snapshot = c.durable["r1"].snapshot
    assert snapshot is not None and snapshot.index == 4
    assert hashlib.sha256(snapshot.data).digest() == c.nodes["r1"].stable_digest


def test_4_3_the_primary_stops_at_the_high_water_mark_until_a_checkpoint_is_stable() -> None:
    c = Cluster()
    c.drop = lambda s, d, m: type(m).__name__ == "Checkpoint"  # nothing becomes stable
    for i in range(1, 8):
        c.request(_data(i), origin=("c", i))
    primary = c.nodes["r0"]
    assert primary.last_executed == 4 == primary.stable_seq + primary.config.log_size
    c.drop = lambda s, d, m: False
    c.tick(primary.config.status_every_ticks)  # retransmitted checkpoints make 4 stable; the rest goes
    assert all(c.nodes[r].last_executed == 7 for r in c.ids)


# -- 4.4 / 4.5: view changes ---------------------------------------------------------------------------------


def test_4_4_a_silent_primary_is_replaced_and_requests_go_on() -> None:
    c = Cluster()
    c.request(_data(1))
    c.down.add("r0")
    live = ("r1", "r2", "r3")
    for r in live:  # the client's retry goes to every replica; each forwards it and starts its timer
        c.request(_data(2), at=r, origin=("c", 2))
    c.tick(c.config.view_change_timeout_ticks + c.config.status_every_ticks)
    assert all(c.nodes[r].view == 1 and not c.nodes[r].changing for r in live)
    assert all([d for _, d in c.executed[r]] == [_data(1), _data(2)] for r in live)


def test_4_5_a_request_prepared_before_the_view_change_keeps_its_number() -> None:
    c = Cluster()

    def view_0_commit(m: object) -> bool:
        return isinstance(m, Commit) and m.view == 0

    # Commits of view 0 are lost (retransmitted ones too): r1..r3 are prepared on request 1 at number 1,
    # nobody executes it; only the new view can commit it, and only if VIEW-CHANGE carries it.
    c.drop = lambda s, d, m: view_0_commit(m) or (isinstance(m, Bundle) and any(map(view_0_commit, m.items)))
    c.request(_data(1))
    assert all(c.executed[r] == [] for r in c.ids)
    assert all(1 in c.nodes[r]._prepared for r in ("r1", "r2", "r3"))
    c.down.add("r0")
    for r in ("r1", "r2", "r3"):  # the client's retry reaches every replica: their timers run
        c.request(_data(1), at=r)
    c.tick(c.config.view_change_timeout_ticks + 2 * c.config.status_every_ticks)
    assert all(c.nodes[r].view >= 1 for r in ("r1", "r2", "r3"))
    assert all(c.executed[r] == [(1, _data(1))] for r in ("r1", "r2", "r3"))


def _vc(view: int, prepared: tuple[PEntry, ...] = (), pre: tuple[QEntry, ...] = ()) -> ViewChange:
    return ViewChange(view, 0, b"", prepared, pre, ())


def test_4_5_the_decision_procedure_keeps_prepared_requests_and_fills_gaps_with_null() -> None:
    d = digest_of(_data(1), ())
    prepared = PEntry(2, 0, d, _data(1), ())
    q = (QEntry(2, 0, d),)
    vcs = [_vc(1, (prepared,), q), _vc(1, (prepared,), q), _vc(1)]
    decision = choose(vcs, 1, quorum=3, weak=2)
    assert decision is not None
    (h, _), chosen = decision
    assert h == 0
    assert [(e.seq, e.digest) for e in chosen] == [(1, NULL_DIGEST), (2, d)]
    assert check(vcs, 1, (0, b""), chosen, quorum=3, weak=2) is None
    # A NEW-VIEW that drops the prepared request (or puts another one there) is refused.
    assert check(vcs, 1, (0, b""), chosen[:1], quorum=3, weak=2) is not None
    other = (chosen[0], PEntry(2, 1, NULL_DIGEST, b"", ()))
    assert check(vcs, 1, (0, b""), other, quorum=3, weak=2) is not None


def test_4_5_a_lie_about_a_prepared_certificate_needs_f_plus_1_pre_prepares_to_win() -> None:
    real = digest_of(_data(1), ())
    fake = digest_of(_data(9), ())
    liar = _vc(5, (PEntry(1, 4, fake, _data(9), ()),), (QEntry(1, 4, fake),))
    honest = _vc(5, (PEntry(1, 2, real, _data(1), ()),), (QEntry(1, 2, real),))
    # With the liar among 2f + 1 messages nothing is decided yet (the primary waits for more); the lie
    # never wins, and one more honest message settles it.
    assert choose([liar, honest, honest], 5, quorum=3, weak=2) is None
    decision = choose([liar, honest, honest, honest], 5, quorum=3, weak=2)
    assert decision is not None
    assert [e.digest for e in decision[1]] == [real]


def test_4_5_a_restarted_replica_keeps_its_promises() -> None:
    c = Cluster()
    c.request(_data(1))
    before = c.nodes["r2"]
    c.restart("r2")
    after = c.nodes["r2"]
    assert after.view == before.view and after.next_seq == before.next_seq
    assert set(after._preprepared) == set(before._preprepared)
    c.request(_data(2))
    assert [d for _, d in c.executed["r2"]][-1] == _data(2)


def test_4_4_a_backup_caught_up_by_state_transfer_does_not_suspect_a_healthy_primary() -> None:
    # Seen on the process stack: a backup forwards a client's request to the primary and is stopped before
    # any of it comes back; the others execute the request and move on past a stable checkpoint; the
    # backup returns and catches up by state transfer. The state image cannot say which requests it
    # holds, so a backup still watching its forwarded request would suspect a primary that did nothing
    # wrong and move alone to a view nobody joins (f + 1 are needed), never ready again.
    c = Cluster()  # K = 2, L = 4
    timeout = c.config.view_change_timeout_ticks
    c.drop = lambda s, d, m: d == "r1"  # r1's forward reaches the primary; nothing comes back to r1
    c.request(_data(1), at="r1")
    backup = c.nodes["r1"]
    assert backup.last_executed == 0 and all(c.executed[r] == [(1, _data(1))] for r in ("r0", "r2", "r3"))
    c.down.add("r1")  # stopped: it neither ticks nor hears anything
    c.drop = lambda s, d, m: False
    for i in range(2, 6):
        c.request(_data(i), origin=("c", i))
    assert all(c.nodes[r].stable_seq == 4 for r in ("r0", "r2", "r3"))
    c.down.discard("r1")
    c.tick(c.config.status_every_ticks)  # its status brings f + 1 matching state offers
    assert backup.stable_seq == 4 and c.executed["r1"][0] == (4, b"<state transfer>")
    # Well past the view-change timeout (not so long that the age limit on forwarded requests, four
    # timeouts, would drop the stale watch by itself): r1 stays with the primary, which is fine.
    c.tick(2 * timeout)
    assert backup.counters.dropped.get("primary_suspected", 0) == 0
    assert not backup.changing and backup.view == 0 and backup.role is PbftRole.BACKUP
    assert all(c.nodes[r].view == 0 and not c.nodes[r].changing for r in c.ids)
    assert backup.last_executed == 5
    # ... and it is ready: a request through it is executed everywhere, in view 0.
    c.request(_data(6), at="r1", origin=("c", 6))
    assert all(c.executed[r][-1] == (6, _data(6)) for r in c.ids)


# -- 4.5 / 5: view changes across crashes ------------------------------------------------------------------


def _is_new_view(m: object) -> bool:
    return isinstance(m, NewView) or (isinstance(m, Bundle) and any(isinstance(i, NewView) for i in m.items))


def _view_change_to_view_1(c: Cluster, drop_vc: tuple[str, str] | None = None) -> list[NewView]:
    """The primary of view 0 (r0) cannot reach anyone: the backups' timers expire on a client's request
    and they move to view 1 (r0 follows once f + 1 did). r1, the primary of view 1, multicasts its
    NEW-VIEW, which is lost (returned). `drop_vc` (src, dst) loses one VIEW-CHANGE for view 1 for good."""
    lost: list[NewView] = []

    def drop(s: str, d: str, m: object) -> bool:
        if isinstance(m, NewView):
            lost.append(m)
            return True
        if drop_vc is not None and (s, d) == drop_vc and isinstance(m, ViewChange):
            return True
        return _is_new_view(m) or (s == "r0" and not isinstance(m, ViewChange))

    c.drop = drop
    for r in ("r1", "r2", "r3"):
        c.request(_data(9), at=r, origin=("c", 9))
    c.tick(c.config.view_change_timeout_ticks)
    assert c.nodes["r1"].view == 1 and not c.nodes["r1"].changing and lost
    assert all(c.nodes[r].view == 1 and c.nodes[r].changing for r in ("r0", "r2", "r3") if r not in c.down)
    return lost


def test_4_5_a_restarted_primary_resends_the_new_view_it_sent_and_no_other() -> None:
    # The new primary's NEW-VIEW is lost and it crashes; so does a backup. Both come back from their
    # durable state: the primary (in the new view) with the NEW-VIEW it sent and its VIEW-CHANGE, the
    # backup with the VIEW-CHANGE it sent, word for word (its low water mark moved since: one made again
    # would not match the digest the NEW-VIEW names). The backups install the view it sent. r0 stays
    # away, so nothing but r1, r2 and r3 can make view 1 (and nothing times out into view 2: its timer
    # needs 2f + 1 replicas that left view 0 behind, which r2 and r3 alone are not).
    c = Cluster()  # K = 2, L = 4
    for i in range(1, 6):
        c.request(_data(i), origin=("c", i))
    assert all(c.nodes[r].stable_seq == 4 and c.nodes[r].prev_stable[0] == 2 for r in c.ids)
    c.down.add("r0")
    lost = _view_change_to_view_1(c, drop_vc=("r0", "r1"))
    sent = lost[0]
    assert {ref.replica for ref in sent.used} == {"r1", "r2", "r3"}
    c.restart("r1")
    c.restart("r2")
    c.drop = lambda s, d, m: False
    c.tick(2 * c.config.status_every_ticks)
    assert all(c.nodes[r].view == 1 and not c.nodes[r].changing for r in ("r1", "r2", "r3"))
    assert c.nodes["r2"].last_rejected_new_view == ""
    # r1 made no second NEW-VIEW: what reached the backups is the one it sent before the crash.
    assert c.nodes["r1"]._new_view_sent == replace(sent, mac=b"")
    c.request(_data(6), at="r2", origin=("c", 6))
    c.tick(c.config.status_every_ticks)
    assert all(c.executed[r][-1][1] == _data(6) for r in ("r1", "r2", "r3"))


def test_4_5_2_a_view_change_left_behind_by_a_quorum_times_out_into_the_next_view() -> None:
    # Simulator seed 933, in ticks: r1 becomes primary of view 1, its NEW-VIEW is lost and it crashes
    # (and stays down: f = 1 replica may). r0 times out in view 1 and moves to view 2 alone. r2 and r3
    # crashed in view 1 and come back holding only their own VIEW-CHANGE for it, then each other's. The
    # network is healthy and three correct replicas are up, yet nobody joins r0 (f + 1 are needed) and
    # r2 and r3 hold VIEW-CHANGE messages for view 1 from two replicas, not 2f + 1. They do hold
    # VIEW-CHANGE messages for view 1 or later from 2f + 1 replicas (r0's for view 2): their timer runs,
    # they move to view 2, whose primary r2 makes it with r0 and r3. r1 follows when it returns.
    c = Cluster()
    c.request(_data(1))
    lost = _view_change_to_view_1(c, drop_vc=("r3", "r1"))
    assert {ref.replica for ref in lost[0].used} == {"r0", "r1", "r2"}
    c.down.update({"r1", "r2", "r3"})  # crashed: r1 in view 1 (installed), r2 and r3 still moving to it
    c.drop = lambda s, d, m: False  # the network is healthy from now on
    c.tick(3 * c.config.view_change_timeout_ticks)
    assert c.nodes["r0"].view == 2 and c.nodes["r0"].changing
    for r in ("r2", "r3"):
        c.restart(r)
        c.down.discard(r)
    live = ("r0", "r2", "r3")
    c.tick(MAX_BACKOFF * c.config.view_change_timeout_ticks)
    assert all(c.nodes[r].view == 2 and not c.nodes[r].changing for r in live)
    c.request(_data(2), at="r3", origin=("c", 2))
    assert all(c.executed[r][-1][1] == _data(2) for r in live)
    c.restart("r1")
    c.down.discard("r1")
    assert c.nodes["r1"].view == 1 and not c.nodes["r1"].changing
    c.tick(2 * c.config.status_every_ticks)
    assert c.nodes["r1"].view == 2 and not c.nodes["r1"].changing
    assert c.executed["r1"][-1][1] == _data(2)


def test_5_a_durable_state_of_the_first_layout_loads_and_a_foreign_one_is_refused() -> None:
    c = Cluster()
    c.request(_data(1))
    saved = c.durable["r2"]
    hard = saved.hard_state
    assert isinstance(hard, PbftHardState) and hard.view_change is None and hard.new_view is None
    older = PbftHardStateV1(*[getattr(hard, name) for name in PbftHardStateV1.__slots__])
    c.durable["r2"] = replace(saved, hard_state=older)
    c.restart("r2")
    assert c.nodes["r2"].view == 0 and set(c.nodes["r2"]._preprepared) == {1}
    c.request(_data(2), origin=("c", 2))
    assert c.executed["r2"][-1] == (2, _data(2))
    c.durable["r3"] = replace(c.durable["r3"], hard_state=("raft", 3))
    with pytest.raises(LocalError, match="not a PBFT"):
        c.restart("r3")
