"""The executor, driven by hand (no event loop, no I/O): the Ready order, the input-positions rule,
duplicate suppression, rejection of bad input, client requests and sessions, reads, bounds, leadership
loss, timeouts in ticks and compaction. The simulator and the runtime drive this same object."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from types import MappingProxyType

import pytest
from rt_doubles import MiniLogCore, MiniNote, NoReadIndexCore

from dscore.core.client_messages import (
    ClientRequest,
    ClientRequests,
    ClientResponse,
    ClientResponses,
    Op,
    Outcome,
    ReadMode,
)
from dscore.core.cluster import IncarnationNotice, SettingsNotice, StorageHello
from dscore.core.codec import decode_envelope, encode_envelope, frame
from dscore.core.envelope import Envelope, EnvelopeFactory
from dscore.protocols.contract import DurableState, apply_persist
from dscore.replica.executor import (
    Executor,
    ExecutorConfig,
    LocalResponse,
    PeerRefused,
    StorageWentBack,
    Work,
)
from dscore.statemachine.kv import KvStateMachine
from dscore.storage.base import StoredState

CHANNEL = "inbox/n1"


@dataclass
class Harness:
    """A synchronous driver: an in-memory durable image, and a record of everything sent."""

    executor: Executor
    durable: DurableState = field(default_factory=DurableState)
    marks: dict[str, tuple[int, int]] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    sent: list[Envelope] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    commits: list[dict[str, int]] = field(default_factory=list)
    offset: int = -1
    key: bytes | None = None

    @property
    def core(self) -> MiniLogCore:
        assert isinstance(self.executor.core, MiniLogCore)
        return self.executor.core

    def deliver(self, data: bytes) -> None:
        self.offset += 1
        self.executor.receive(data, CHANNEL, self.offset)

    def run(self) -> None:
        while (work := self.executor.poll()) is not None:
            self.carry_out(work)

    def carry_out(self, work: Work) -> None:
        for frame_ in work.replies:
            self.sent.append(decode_envelope(frame_.data, key=self.key))
            self.events.append("reply")
        if work.write is not None:
            self.durable = apply_persist(self.durable, work.write.as_ready())
            self.marks.update((k, v) for k, v in work.write.dedup_marks.items() if not k.startswith("epoch/"))
            self.positions.update(work.write.input_positions)
            self.events.append(f"save:{len(work.write.entries)}")
        for frame_ in work.messages:
            envelope = decode_envelope(frame_.data, key=self.key)
            if isinstance(envelope.content, MiniNote):
                # What was durable and applied when this announcement left.
                durable_last = self.durable.entries[-1].index if self.durable.entries else 0
                applied = self.executor.sm.applied_index
                self.events.append(f"send:{envelope.content.last_index}:{durable_last}:{applied}")
            self.sent.append(envelope)
        self.executor.done(work)
        if work.commit is not None:
            # The rule: a commit hint names only positions already saved.
            for channel, position in work.commit.items():
                assert self.positions.get(channel, -1) >= position, (work.commit, self.positions)
            self.commits.append(dict(work.commit))

    def responses(self) -> list[ClientResponse]:
        """Every response sent, in the order they were sent."""
        return [r for e in self.sent if isinstance(e.content, ClientResponses) for r in e.content.responses]

    def answer(self, request: ClientRequest) -> ClientResponse:
        (response,) = [r for r in self.responses() if r.request_id == request.request_id]
        return response

    def tick(self, count: int = 1) -> None:
        for _ in range(count):
            self.executor.tick()
            self.run()


def harness(
    members: tuple[str, ...] = ("n1",),
    *,
    node_id: str = "n1",
    core: type[MiniLogCore] = MiniLogCore,
    config: ExecutorConfig | None = None,
    stored: StoredState | None = None,
    incarnation: int = 1,
) -> Harness:
    peers = tuple(m for m in members if m != node_id)
    durable = stored.durable if stored is not None else None
    executor = Executor(
        node_id,
        core(node_id, peers, random.Random(1), durable),
        KvStateMachine(),
        members=members,
        stored=stored,
        incarnation=incarnation,
        config=config or ExecutorConfig(),
    )
    h = Harness(executor)
    if stored is not None:
        h.durable = stored.durable
        h.marks = dict(stored.dedup_marks)
        h.positions = dict(stored.input_positions)
    return h


class Client:
    """Builds client request frames from one client endpoint."""

    def __init__(self, name: str = "c1", destination: str = "n1") -> None:
        self.ids = EnvelopeFactory(name, 1)
        self.destination = destination
        self.next_id = 0

    def frame(self, *requests: ClientRequest) -> bytes:
        return encode_envelope(self.ids.wrap(self.destination, ClientRequests(requests)))

    def request(self, op: Op, key: str = "", **fields: object) -> ClientRequest:
        self.next_id += 1
        return ClientRequest(self.next_id, op, key, **fields)  # type: ignore[arg-type]


def register(h: Harness, client: Client) -> int:
    h.deliver(client.frame(client.request(Op.REGISTER)))
    h.run()
    response = h.responses()[-1]
    assert response.outcome is Outcome.OK and response.client_id > 0
    return response.client_id


def peer_note(factory: EnvelopeFactory, destination: str, last_index: int) -> bytes:
    return encode_envelope(factory.wrap(destination, MiniNote(last_index)))


def test_register_write_and_read_over_the_wire_protocol() -> None:
    h = harness()
    client = Client()
    session = register(h, client)
    assert session == 1  # the log index of the registration
    put = client.request(Op.PUT, "k", value="v", client_id=session, seq=1)
    cas = client.request(Op.CAS, "k", value="y", expected="x", client_id=session, seq=2)
    h.deliver(client.frame(put))
    h.deliver(client.frame(cas))
    h.run()
    get = client.request(Op.GET, "k")
    h.deliver(client.frame(get))
    h.run()
    assert h.answer(put).outcome is Outcome.OK
    assert (h.answer(cas).outcome, h.answer(cas).value) == (Outcome.CAS_MISMATCH, "v")
    assert (h.answer(get).outcome, h.answer(get).value) == (Outcome.OK, "v")
    assert {e.destination for e in h.sent} == {"c1"}


def test_a_work_persists_then_sends_then_applies() -> None:
    h = harness(("n1", "n2"))
    client = Client()
    session = register(h, client)
    h.deliver(
        client.frame(
            *(client.request(Op.PUT, "k", value=str(i), client_id=session, seq=i) for i in range(1, 51))
        )
    )
    h.run()
    sends = [e for e in h.events if e.startswith("send:")]
    assert sends
    for event in sends:
        _, announced, durable_last, applied = event.split(":")
        assert int(durable_last) >= int(announced)  # persisted before it was announced
        assert int(applied) < int(announced)  # applied only after the send
    # Batching: 50 commands that arrived together are one log entry, one write.
    assert h.core.last_index == 2
    assert all(r.outcome is Outcome.OK for r in h.responses())


def test_positions_are_saved_with_the_state_and_committed_only_once_saved() -> None:
    config = ExecutorConfig(positions_every_deliveries=3, positions_every_ticks=1_000, commit_every_ticks=2)
    h = harness(("n1", "n2"), config=config)
    peer = EnvelopeFactory("n2", 1)
    h.deliver(peer_note(peer, "n1", 1))  # changes nothing durable: nothing is saved for it yet
    h.run()
    assert h.positions == {} and h.commits == []
    h.deliver(peer_note(peer, "n1", 2))
    h.deliver(peer_note(peer, "n1", 3))
    h.tick(2)
    assert h.positions == {CHANNEL: 2}  # the third delivery made a write of positions (and marks) due
    assert h.marks == {"n2": (1, 3)}
    assert h.commits == [{CHANNEL: 2}]  # and the hint followed that write, never ahead of it
    h.deliver(peer_note(peer, "n1", 4))  # not saved yet: no hint may name it
    h.tick(3)
    assert h.positions == {CHANNEL: 2} and h.commits == [{CHANNEL: 2}]
    # A write of protocol state carries the positions of every input before it.
    client = Client()
    h.deliver(client.frame(client.request(Op.REGISTER)))
    h.tick(2)
    assert h.positions == {CHANNEL: 4}
    assert h.commits[-1] == {CHANNEL: 4}


def test_duplicates_are_dropped_and_their_marks_saved_with_the_state() -> None:
    h = harness(("n1", "n2"))
    peer = EnvelopeFactory("n2", 3)
    first, second = peer_note(peer, "n1", 1), peer_note(peer, "n1", 2)
    for data in (first, first, second, first, second):
        h.deliver(data)
    h.run()
    assert h.executor.counters.rejected == {"duplicate": 3}
    assert [e.msg_id.seq for e in h.core.received] == [1, 2]
    register(h, Client())
    assert h.marks == {"n2": (3, 2)}
    # A new incarnation of this node starts from the saved marks: a redelivery is still a duplicate.
    again = harness(
        ("n1", "n2"),
        stored=StoredState(h.durable, 1, MappingProxyType(h.marks), MappingProxyType(h.positions)),
        incarnation=2,
    )
    again.deliver(first)
    assert again.executor.counters.rejected == {"duplicate": 1}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "malformed"),
        (b"\x01\x00\x00\x00\x00garbage", "checksum"),
        (b"\x09" + b"\x00" * 10, "version"),
        (frame(b"\xc1"), "malformed"),
        (b"\x01" + b"\x00" * 5_000, "too_large"),
    ],
)
def test_bad_bytes_are_counted_and_dropped(data: bytes, reason: str) -> None:
    h = harness(("n1", "n2"), config=ExecutorConfig(max_envelope_bytes=4_096))
    h.deliver(data)
    h.run()
    assert h.executor.counters.rejected == {reason: 1}
    assert h.core.received == []
    register(h, Client())  # still serving


def test_misaddressed_and_forged_envelopes_are_dropped() -> None:
    h = harness(("n1", "n2", "n3"))
    h.deliver(peer_note(EnvelopeFactory("n2", 1), "n3", 1))  # meant for n3
    h.deliver(peer_note(EnvelopeFactory("mallory", 1), "n1", 1))  # not a member
    h.deliver(peer_note(EnvelopeFactory("n1", 1), "n1", 1))  # claims to be us
    h.run()
    assert h.executor.counters.rejected == {"misaddressed": 1, "unknown_sender": 2}
    assert h.core.received == []


def test_a_retry_takes_effect_once_and_a_reused_seq_is_a_bad_request() -> None:
    h = harness()
    client = Client()
    session = register(h, client)
    append = client.request(Op.APPEND, "k", value="a", client_id=session, seq=1)
    h.deliver(client.frame(append))
    h.deliver(client.frame(append))  # the same request again (a retry, a redelivery)
    h.deliver(client.frame(client.request(Op.APPEND, "k", value="zzz", client_id=session, seq=1)))
    h.run()
    first, retry, reused = h.responses()[1:]
    assert first.outcome is retry.outcome is Outcome.OK
    assert reused.outcome is Outcome.BAD_REQUEST and "reused" in (reused.error or "")
    assert h.executor.sm.read("k") == "a"


def test_a_follower_answers_not_leader_with_a_hint_and_serves_stale_reads() -> None:
    h = harness(("n1", "n2"), node_id="n2")
    client = Client(destination="n2")
    register_, read = client.request(Op.REGISTER), client.request(Op.GET, "k")
    stale = client.request(Op.GET, "k", read_mode=ReadMode.STALE)
    h.deliver(client.frame(register_, read, stale))
    h.run()
    assert (h.answer(register_).outcome, h.answer(register_).leader_hint) == (Outcome.NOT_LEADER, "n1")
    assert (h.answer(read).outcome, h.answer(read).leader_hint) == (Outcome.NOT_LEADER, "n1")
    assert (h.answer(stale).outcome, h.answer(stale).value) == (Outcome.OK, None)


def test_pending_requests_are_bounded() -> None:
    h = harness(config=ExecutorConfig(max_pending_proposals=2))
    client = Client()
    session = register(h, client)
    writes = [client.request(Op.PUT, "k", value=str(i), client_id=session, seq=i) for i in range(1, 4)]
    h.deliver(client.frame(*writes))
    h.run()
    outcomes = [r.outcome for r in h.responses()[1:]]
    assert sorted(outcomes) == [Outcome.OK, Outcome.OK, Outcome.OVERLOADED]
    refused = next(r for r in h.responses() if r.outcome is Outcome.OVERLOADED)
    assert "max_pending_proposals=2" in (refused.error or "")


def test_reads_go_through_the_log_without_a_read_index() -> None:
    h = harness(core=NoReadIndexCore)
    client = Client()
    session = register(h, client)
    h.deliver(client.frame(client.request(Op.PUT, "k", value="v", client_id=session, seq=1)))
    h.run()
    h.deliver(client.frame(*(client.request(Op.GET, "k") for _ in range(5))))
    h.run()
    assert [r.value for r in h.responses()[2:]] == ["v"] * 5
    assert h.executor.sm.applied_index == 3  # the five reads were one entry of the log


def test_losing_the_lead_answers_pending_commands_unknown() -> None:
    h = harness(("n1", "n2"))
    client = Client()
    session = register(h, client)
    h.core.commit_delay = True  # entries stay uncommitted
    h.deliver(client.frame(client.request(Op.PUT, "k", value="v", client_id=session, seq=1)))
    h.run()
    assert len(h.responses()) == 1
    h.core.leader = "n2"  # deposed before the entry committed
    h.run()
    last = h.responses()[-1]
    assert (last.outcome, last.leader_hint) == (Outcome.UNKNOWN, "n2")


def test_a_command_never_committed_times_out_in_ticks() -> None:
    h = harness(("n1", "n2"), config=ExecutorConfig(request_timeout_ticks=5))
    client = Client()
    session = register(h, client)
    h.core.commit_delay = True
    h.deliver(client.frame(client.request(Op.PUT, "k", value="v", client_id=session, seq=1)))
    h.run()
    h.tick(4)
    assert len(h.responses()) == 1
    h.tick(1)
    assert h.responses()[-1].outcome is Outcome.UNKNOWN
    assert h.executor.pending_requests == 0


def test_an_entry_replaced_by_another_leaders_is_answered_unknown() -> None:
    h = harness(("n1", "n2"))
    client = Client()
    session = register(h, client)
    h.core.commit_delay = True
    h.deliver(client.frame(client.request(Op.PUT, "k", value="mine", client_id=session, seq=1)))
    h.run()
    h.core.replace_uncommitted(b"\x90")  # another leader's (empty) batch took the index
    h.core.commit_delay = False
    h.run()
    assert h.responses()[-1].outcome is Outcome.UNKNOWN
    assert h.executor.sm.read("k") is None


def test_compaction_hands_the_core_a_snapshot_and_a_new_incarnation_restores_it() -> None:
    h = harness(config=ExecutorConfig(snapshot_every_entries=3))
    client = Client()
    session = register(h, client)
    for seq in range(1, 7):
        h.deliver(client.frame(client.request(Op.APPEND, "k", value=str(seq), client_id=session, seq=seq)))
        h.run()
    assert h.core.compactions == [3, 6]  # entry 1 is the registration, 2-7 the appends
    assert h.durable.snapshot is not None and h.durable.snapshot.index == 6
    assert [e.index for e in h.durable.entries] == [7]
    again = harness(stored=StoredState(h.durable, 1), incarnation=2)
    assert again.executor.sm.read("k") == "12345"  # the snapshot, restored before anything runs
    again.run()
    assert again.executor.sm.read("k") == "123456"  # then the entry after it, from the log
    assert again.executor.sm.applied_index == 7


def test_local_requests_are_answered_through_events() -> None:
    h = harness()
    h.executor.submit_local(ClientRequest(7, Op.REGISTER))
    h.run()
    h.executor.barrier(8)
    h.run()
    answers = {e.response.request_id: e.response for e in h.executor.events if isinstance(e, LocalResponse)}
    assert answers[7].outcome is Outcome.OK and answers[7].client_id == 1
    assert answers[8].outcome is Outcome.OK
    assert h.sent == []


KEY = b"k" * 32


def test_with_a_cluster_key_only_authenticated_frames_are_read() -> None:
    peers = ("n1", "n2")
    h = Harness(
        Executor(
            "n1",
            MiniLogCore("n1", ("n2",), random.Random(1), None),
            KvStateMachine(),
            members=peers,
            auth_key=KEY,
        ),
        key=KEY,
    )
    peer = EnvelopeFactory("n2", 1)
    h.deliver(encode_envelope(peer.wrap("n1", MiniNote(1))))  # no MAC
    h.deliver(encode_envelope(peer.wrap("n1", MiniNote(2)), key=b"x" * 32))  # another cluster's key
    h.deliver(encode_envelope(peer.wrap("n1", MiniNote(3)), key=KEY))
    h.run()
    assert h.executor.counters.rejected == {"unauthenticated": 2}
    assert [e.content for e in h.core.received] == [MiniNote(3)]


def executor_with(settings: dict[str, str], node_id: str) -> Executor:
    peers = tuple(p for p in ("n1", "n2") if p != node_id)
    core = MiniLogCore(node_id, peers, random.Random(1), None)
    return Executor(node_id, core, KvStateMachine(), members=("n1", "n2"), cluster_settings=settings)


def test_a_peer_with_other_cluster_settings_is_refused_by_name() -> None:
    n1 = Harness(executor_with({"cluster_id": "c", "raft.election_timeout_ticks": "10"}, "n1"))
    n2 = Harness(executor_with({"cluster_id": "c", "raft.election_timeout_ticks": "20"}, "n2"))
    # n2 writes to n1; n1 refuses it and tells n2 its settings once; n2 learns what differs.
    n1.deliver(encode_envelope(n2.executor._factory.wrap("n1", MiniNote(1))))
    n1.run()
    assert n1.executor.counters.rejected == {"settings_mismatch": 1}
    assert n1.core.received == []
    (notice,) = [e for e in n1.sent if e.destination == "n2" and isinstance(e.content, SettingsNotice)]
    n2.deliver(encode_envelope(notice))
    n2.run()
    (refusal,) = [e for e in n2.executor.events if isinstance(e, PeerRefused)]
    assert refusal.peer == "n1"
    assert "raft.election_timeout_ticks: 20 here, 10 on n1" in str(refusal.error)
    # A second message from n2 is refused without telling it again.
    n1.deliver(encode_envelope(n2.executor._factory.wrap("n1", MiniNote(2))))
    n1.run()
    assert n1.executor.counters.rejected == {"settings_mismatch": 2}
    assert len([e for e in n1.sent if isinstance(e.content, SettingsNotice)]) == 1


def test_members_with_the_same_settings_talk() -> None:
    settings = {"cluster_id": "c", "protocol": "raft"}
    n1 = Harness(executor_with(settings, "n1"))
    n2 = Harness(executor_with(dict(settings), "n2"))
    n1.deliver(encode_envelope(n2.executor._factory.wrap("n1", MiniNote(1))))
    n1.run()
    assert n1.executor.counters.rejected == {} and len(n1.core.received) == 1


def test_a_peer_whose_storage_went_back_in_time_is_told_and_stops() -> None:
    # n1 has accepted n2's messages up to incarnation 5; n2 restarts from a wiped storage at incarnation 1.
    n1 = harness(("n1", "n2"), stored=StoredState(DurableState(), 1, MappingProxyType({"n2": (5, 10)})))
    wiped = Harness(
        Executor(
            "n2", MiniLogCore("n2", ("n1",), random.Random(1), None), KvStateMachine(), members=("n1", "n2")
        )
    )
    for last in (1, 2):
        n1.deliver(encode_envelope(wiped.executor._factory.wrap("n1", MiniNote(last))))
    n1.run()
    assert n1.core.received == [] and n1.executor.counters.rejected == {"duplicate": 2}
    notices = [e for e in n1.sent if isinstance(e.content, IncarnationNotice)]
    assert [(e.destination, e.content.seen) for e in notices] == [("n2", 5)]  # told once
    wiped.deliver(encode_envelope(notices[0]))
    (went_back,) = [e for e in wiped.executor.events if isinstance(e, StorageWentBack)]
    assert (went_back.peer, went_back.seen, went_back.incarnation) == ("n1", 5, 1)
    assert "storage went back in time" in went_back.describe()


def test_a_stale_redelivery_from_an_older_incarnation_changes_nothing_for_the_sender() -> None:
    sender = harness(("n1", "n2"), node_id="n2", incarnation=7)
    epoch = sender.executor.storage_epoch
    sender.deliver(encode_envelope(EnvelopeFactory("n1", 1).wrap("n2", IncarnationNotice(6, epoch))))
    assert [e for e in sender.executor.events if isinstance(e, StorageWentBack)] == []


def test_a_peer_back_on_another_storage_is_refused_even_at_the_same_incarnation() -> None:
    # n1 knows n2 at incarnation 1 (it never restarted), on storage epoch 111.
    known = MappingProxyType({"n2": (1, 500), "epoch/n2": (0, 111)})
    n1 = harness(("n1", "n2"), stored=StoredState(DurableState(), 1, known))
    wiped = Harness(
        Executor(
            "n2",
            MiniLogCore("n2", ("n1",), random.Random(1), None),
            KvStateMachine(),
            members=("n1", "n2"),
            storage_epoch=222,
        )
    )
    wiped.run()  # its first words: hello, from storage epoch 222
    (hello,) = [e for e in wiped.sent if isinstance(e.content, StorageHello)]
    assert (hello.destination, hello.content.epoch, hello.content.incarnation) == ("n1", 222, 1)
    n1.deliver(encode_envelope(hello))
    for last in range(1, 600):  # past the old mark: without the epoch, these would be accepted
        n1.deliver(encode_envelope(wiped.executor._factory.wrap("n1", MiniNote(last))))
    n1.run()
    assert n1.core.received == []
    assert n1.executor.counters.rejected == {"stale_storage": 600}
    (notice,) = [e for e in n1.sent if isinstance(e.content, IncarnationNotice)]
    assert (notice.content.seen, notice.content.epoch) == (1, 111)
    wiped.deliver(encode_envelope(notice))
    assert [type(e) for e in wiped.executor.events] == [StorageWentBack]
    # The same node on its real storage says hello with the right epoch and is heard again.
    n1.deliver(encode_envelope(EnvelopeFactory("n2", 2).wrap("n1", StorageHello(111, 2))))
    n1.deliver(encode_envelope(EnvelopeFactory("n2", 2).wrap("n1", MiniNote(1))))
    n1.run()
    assert [e.content for e in n1.core.received] == [MiniNote(1)]


def test_the_first_start_makes_its_storage_epoch_durable_before_saying_hello() -> None:
    h = harness(("n1", "n2"))
    h.deliver(peer_note(EnvelopeFactory("n2", 1), "n1", 1))  # stepped before the first poll
    first = h.executor.poll()
    assert first is not None and first.write is not None
    assert dict(first.write.dedup_marks) == {"epoch/n1": first.write.dedup_marks["epoch/n1"]}
    assert dict(first.write.input_positions) == {}  # that input's effects are not durable yet
    assert [type(decode_envelope(f.data).content) for f in first.messages] == [StorageHello]
    assert first.replies == []  # nothing leaves before the write: the hello goes with the messages
    h.carry_out(first)
    # A restart on that storage keeps the epoch, and says hello with it without writing it again.
    again = harness(
        ("n1", "n2"),
        stored=StoredState(h.durable, 1, MappingProxyType({"epoch/n1": first.write.dedup_marks["epoch/n1"]})),
        incarnation=2,
    )
    second = again.executor.poll()
    assert second is not None and second.write is None
    (hello,) = [decode_envelope(f.data).content for f in second.messages]
    assert isinstance(hello, StorageHello) and hello.epoch == h.executor.storage_epoch


def test_leader_changes_count_a_new_leader_not_the_same_one_found_again() -> None:
    h = harness(("n1", "n2", "n3"))  # its core leads from the start: no change
    h.run()
    for leader in (None, "n1", None, "n1"):  # lost sight of it, found it again (a pre-vote, say)
        h.core.leader = leader
        h.run()
    assert h.executor.counters.leader_changes == 0
    h.core.leader = "n2"
    h.run()
    assert h.executor.counters.leader_changes == 1
    h.core.leader = None
    h.run()
    h.core.leader = "n1"
    h.run()
    assert h.executor.counters.leader_changes == 2
