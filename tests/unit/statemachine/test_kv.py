"""The kv state machine: operations, registered sessions (exactly-once), batches, snapshots, determinism."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dscore.core.client_messages import ClientRequest, Op, Outcome
from dscore.core.errors import DecodeError, LocalError
from dscore.protocols.contract import EntryKind, LogEntry
from dscore.statemachine.kv import (
    Append,
    BadCommandError,
    Cas,
    Command,
    Delete,
    Get,
    KvOp,
    KvResult,
    KvStateMachine,
    Put,
    Register,
    command_fields,
    command_for,
    decode_batch,
    encode_batch,
    encode_command,
    encode_entry,
)


class Log:
    """Feeds commands to a state machine at consecutive indexes, one entry per command."""

    def __init__(self, sm: KvStateMachine) -> None:
        self.sm = sm
        self.index = sm.applied_index

    def run(self, client: int, seq: int, op: KvOp) -> KvResult:
        self.index += 1
        (result,) = self.sm.apply(self.index, [encode_command(client, seq, op)])
        return result

    def register(self) -> int:
        result = self.run(0, 0, Register())
        assert result.ok and result.client_id == self.index
        return result.client_id


def test_operations() -> None:
    log = Log(KvStateMachine())
    c = log.register()
    assert log.run(c, 1, Get("k")).value is None
    assert log.run(c, 2, Append("k", "ab")).ok
    assert log.run(c, 3, Append("k", "c")).ok
    assert log.run(c, 4, Get("k")).value == "abc"
    assert log.run(c, 5, Put("k", "x")).ok
    assert log.sm.read("k") == "x"
    mismatch = log.run(c, 6, Cas("k", "y", "z"))
    assert (mismatch.outcome, mismatch.value) == (Outcome.CAS_MISMATCH, "x")
    assert log.run(c, 7, Cas("k", "x", "z")).ok
    assert log.run(c, 8, Delete("k")).ok
    assert log.sm.read("k") is None
    assert log.run(c, 9, Cas("k", None, "new")).ok  # None expects the key absent
    assert log.sm.read("k") == "new"
    assert log.run(0, 0, Get("k")).value == "new"  # a GET through the log needs no session


def test_registration_ids_are_log_indexes_and_never_repeat() -> None:
    log = Log(KvStateMachine(max_sessions=2))
    ids = [log.register() for _ in range(5)]
    assert ids == [1, 2, 3, 4, 5]
    assert log.sm.session_ids == (4, 5)


def test_a_retried_command_takes_effect_once_and_returns_the_first_answer() -> None:
    log = Log(KvStateMachine())
    c = log.register()
    first = log.run(c, 1, Append("k", "a"))
    retry = log.run(c, 1, Append("k", "a"))
    assert retry == first
    assert log.sm.read("k") == "a"


def test_a_reused_seq_with_another_operation_is_a_bad_request_not_the_cached_answer() -> None:
    log = Log(KvStateMachine())
    c = log.register()
    assert log.run(c, 1, Cas("k", None, "a")).ok
    reused = log.run(c, 1, Cas("k", "a", "b"))
    assert reused.outcome is Outcome.BAD_REQUEST and "reused" in (reused.error or "")
    assert log.sm.read("k") == "a"


def test_unknown_and_evicted_sessions_are_always_expired() -> None:
    log = Log(KvStateMachine(max_sessions=2))
    a = log.register()
    assert log.run(a, 1, Put("k", "1")).ok
    assert log.run(a, 2, Put("k", "2")).ok
    stale = log.run(a, 1, Put("k", "stale"))
    assert stale.outcome is Outcome.BAD_REQUEST and "stale" in (stale.error or "")
    assert log.run(999, 1, Put("k", "x")).outcome is Outcome.SESSION_EXPIRED  # never registered, seq 1
    b = log.register()
    log.run(b, 1, Put("j", "b"))
    log.register()  # evicts "a", the least recently used
    assert log.run(a, 3, Put("k", "again")).outcome is Outcome.SESSION_EXPIRED
    assert log.run(a, 1, Put("k", "first again")).outcome is Outcome.SESSION_EXPIRED
    assert log.sm.read("k") == "2"


def test_recency_counts_uses_not_registrations() -> None:
    log = Log(KvStateMachine(max_sessions=2))
    a = log.register()
    b = log.register()
    log.run(a, 1, Put("k", "a"))  # "a" used after "b" registered: "b" is now least recent
    log.register()
    assert log.run(b, 1, Put("k", "b")).outcome is Outcome.SESSION_EXPIRED
    assert log.run(a, 2, Put("k", "a2")).ok


def test_batches_apply_in_order_with_one_result_per_command() -> None:
    sm = KvStateMachine()
    (reg,) = sm.apply(1, [encode_command(0, 0, Register())])
    c = reg.client_id
    results = sm.apply(
        2,
        [
            encode_command(c, 1, Put("k", "a")),
            encode_command(c, 1, Put("k", "a")),  # a duplicate inside the batch
            encode_command(c, 2, Append("k", "b")),
            encode_command(0, 0, Get("k")),
            encode_command(0, 0, Register()),  # not alone: refused
        ],
    )
    assert [r.outcome for r in results] == [
        Outcome.OK,
        Outcome.OK,
        Outcome.OK,
        Outcome.OK,
        Outcome.BAD_REQUEST,
    ]
    assert results[3].value == "ab" and sm.read("k") == "ab"
    assert len(sm.session_ids) == 1


def test_malformed_entry_is_a_deterministic_error() -> None:
    sm = KvStateMachine()
    (result,) = sm.apply_entry(LogEntry(1, 1, EntryKind.NORMAL, b"\xc1garbage"))
    assert result.outcome is Outcome.BAD_REQUEST
    assert sm.applied_index == 1


_text = st.text(max_size=8)
_writes = st.one_of(
    st.builds(Put, _text, _text),
    st.builds(Delete, _text),
    st.builds(Cas, _text, st.none() | _text, _text),
    st.builds(Append, _text, _text),
)


@given(client=st.integers(1, 2**63 - 1), seq=st.integers(1, 2**63 - 1), op=_writes)
def test_commands_round_trip(client: int, seq: int, op: KvOp) -> None:
    assert decode_batch(encode_batch([encode_command(client, seq, op)])) == (Command(client, seq, op),)


@given(ops=st.lists(_writes | st.builds(Get, _text), max_size=70))
def test_batches_of_any_size_round_trip(ops: list[KvOp]) -> None:
    commands = [encode_command(7, i + 1, op) for i, op in enumerate(ops)]
    decoded = decode_batch(encode_batch(commands))
    assert [c.op for c in decoded] == ops


@pytest.mark.parametrize(
    "fields",
    [
        (5, 1, 1, "k", "v"),  # five fields
        (5, 1, 1, "k", "v", None, None),  # seven
        (5, 0, 1, "k", "v", None),  # seq 0
        (5, True, 1, "k", "v", None),  # a bool is not a seq
        ("c", 1, 1, "k", "v", None),  # client id as a string
        (0, 1, 1, "k", "v", None),  # a write without a session
        (5, 1, 9, "k", "v", None),  # unknown op code
        (5, 1, True, "k", "v", None),  # a bool is not an op code
        (5, 1, 1, "k", None, None),  # put without a value
        (5, 1, 1, "k", "v", "extra"),  # put with a third field
        (5, 1, 2, "k", "v", None),  # get with a value
        (5, 1, 4, "k", "old", None),  # cas without a new value
        (5, 1, 4, "k", 5, "new"),  # cas expecting a number
        (5, 1, 5, 7, "x", None),  # append to a non-string key
        (3, 0, 6, "", None, None),  # register with a client id
        {"not": "an array"},
    ],
)
def test_malformed_commands_have_no_effect_and_fail_the_same_everywhere(fields: object) -> None:
    data = msgpack.packb(fields, use_bin_type=True)
    sm = KvStateMachine()
    (reg,) = sm.apply(1, [encode_command(0, 0, Register())])
    (result,) = sm.apply(2, [data])
    assert result.outcome is Outcome.BAD_REQUEST and result.error == "malformed command"
    assert len(sm) == 0 and sm.applied_index == 2
    with pytest.raises(DecodeError):
        decode_batch(encode_batch([data]))
    # and nothing changed in the session: its first command still applies
    assert sm.apply(3, [encode_command(reg.client_id, 1, Put("k", "v"))])[0].ok


def test_client_requests_become_commands_or_clear_errors() -> None:
    put = command_for(ClientRequest(1, Op.PUT, "k", "v", client_id=4, seq=2))
    assert decode_batch(encode_batch([put])) == (Command(4, 2, Put("k", "v")),)
    cas = command_for(ClientRequest(1, Op.CAS, "k", "new", expected=None, client_id=4, seq=3))
    assert decode_batch(encode_batch([cas])) == (Command(4, 3, Cas("k", None, "new")),)
    with pytest.raises(BadCommandError, match="register first"):
        command_for(ClientRequest(1, Op.PUT, "k", "v"))
    with pytest.raises(BadCommandError, match="needs a value"):
        command_for(ClientRequest(1, Op.APPEND, "k", None, client_id=4, seq=1))
    with pytest.raises(BadCommandError, match="seq"):
        command_for(ClientRequest(1, Op.DELETE, "k", client_id=4, seq=0))


def test_applying_an_index_twice_is_a_local_error() -> None:
    sm = KvStateMachine()
    sm.apply(1, [encode_command(0, 0, Register())])
    with pytest.raises(LocalError):
        sm.apply(1, [encode_command(1, 1, Put("k", "v"))])


def test_non_command_entries_only_advance_the_index() -> None:
    sm = KvStateMachine()
    assert sm.apply_entry(LogEntry(1, 1, EntryKind.NOOP, b"")) == ()
    assert sm.applied_index == 1


def test_snapshot_restore_keeps_data_sessions_and_recency() -> None:
    log = Log(KvStateMachine(max_sessions=2))
    a = log.register()
    b = log.register()
    log.run(a, 1, Put("k", "1"))
    log.run(b, 1, Put("j", "2"))
    log.run(a, 2, Append("k", "x"))  # "a" is now most recent, "b" least
    restored = KvStateMachine(max_sessions=2)
    restored.restore(log.sm.snapshot())
    assert restored.applied_index == log.sm.applied_index
    other = Log(restored)
    assert other.run(a, 2, Append("k", "x")) == KvResult(Outcome.OK)  # cached, not re-applied
    assert restored.read("k") == "1x"
    other.register()  # evicts "b"
    assert other.run(b, 2, Put("j", "3")).outcome is Outcome.SESSION_EXPIRED


def test_restore_orders_sessions_by_their_replicated_recency_not_the_encoding() -> None:
    log = Log(KvStateMachine(max_sessions=3))
    a, b, c = log.register(), log.register(), log.register()
    log.run(a, 1, Put("k", "a"))  # recency now: b, c, a
    snapshot = log.sm.snapshot()
    # Shuffle the session map's order in the encoding: a replica must evict the same session anyway.
    from dscore.core.codec import decode_value, encode_value

    image = decode_value(snapshot)
    shuffled = dict(reversed(list(image.sessions.items())))
    restored = KvStateMachine(max_sessions=3)
    restored.restore(
        encode_value(type(image)(image.applied_index, image.commands_applied, image.data, shuffled))
    )
    assert restored.session_ids == log.sm.session_ids == (b, c, a)


def test_replicas_that_apply_the_same_log_agree() -> None:
    rng = random.Random(7)
    entries: list[list[bytes]] = [[encode_command(0, 0, Register())] for _ in range(6)]
    seqs: dict[int, int] = {}
    for _ in range(300):
        batch = []
        for _ in range(rng.randint(1, 4)):
            client = rng.randint(1, 8)  # 7 and 8 were never registered
            seqs[client] = seqs.get(client, 0) + rng.choice((0, 1, 1, 1))  # some retries
            seq = max(seqs[client], 1)
            key = rng.choice("xyz")
            op = rng.choice(
                [Put(key, str(rng.randrange(5))), Append(key, "a"), Get(key), Delete(key), Cas(key, "1", "2")]
            )
            batch.append(encode_command(client, seq, op))
        entries.append(batch)
        if rng.random() < 0.05:
            entries.append([encode_command(0, 0, Register())])
    replicas = [KvStateMachine(max_sessions=4) for _ in range(3)]
    answers = [[sm.apply(i, batch) for i, batch in enumerate(entries, 1)] for sm in replicas]
    assert answers[0] == answers[1] == answers[2]
    assert replicas[0].snapshot() == replicas[1].snapshot() == replicas[2].snapshot()


class ExactlyOnceUnderEviction(RuleBasedStateMachine):
    """Clients register, write appends with unique tokens, and their commands are retried and redelivered
    (a copy applied again, in a later entry) while other registrations evict sessions. However the log
    interleaves them, every token is in the value at most once, and a command that was answered OK is in
    it exactly once. On the old kv (any `seq == 1` opened a session) a redelivered first command of an
    evicted client appended twice."""

    @initialize()
    def setup(self) -> None:
        self.sm = KvStateMachine(max_sessions=2)
        self.index = 0
        #: client id -> (last seq, its command)
        self.clients: dict[int, tuple[int, bytes]] = {}
        self.acknowledged: set[str] = set()
        self.tokens = 0

    def _apply(self, command: bytes) -> KvResult:
        self.index += 1
        (result,) = self.sm.apply(self.index, [command])
        return result

    @rule()
    def register(self) -> None:
        result = self._apply(encode_command(0, 0, Register()))
        self.clients[result.client_id] = (0, b"")

    @precondition(lambda self: bool(self.clients))
    @rule(data=st.data())
    def write(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from(sorted(self.clients)))
        seq = self.clients[client][0] + data.draw(st.sampled_from((1, 1, 2)))  # gaps after a give-up
        self.tokens += 1
        token = f"t{self.tokens}"
        command = encode_command(client, seq, Append("k", token + ";"))
        self.clients[client] = (seq, command)
        if self._apply(command).ok:
            self.acknowledged.add(token)

    @precondition(lambda self: any(seq for seq, _ in self.clients.values()))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from(sorted(c for c, (seq, _) in self.clients.items() if seq)))
        self._apply(self.clients[client][1])

    @invariant()
    def each_token_at_most_once_and_acknowledged_ones_exactly_once(self) -> None:
        value = self.sm.read("k") or ""
        tokens = [t for t in value.split(";") if t]
        assert len(tokens) == len(set(tokens)), value
        assert self.acknowledged <= set(tokens)


TestExactlyOnceUnderEviction = ExactlyOnceUnderEviction.TestCase
TestExactlyOnceUnderEviction.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)


@given(ops=st.lists(_writes, min_size=1, max_size=40))
def test_an_entry_packed_in_one_pass_equals_the_batch_of_its_commands(ops: list[KvOp]) -> None:
    requests = []
    for i, op in enumerate(ops, 1):
        if isinstance(op, Put):
            requests.append(ClientRequest(i, Op.PUT, op.key, op.value, client_id=3, seq=i))
        elif isinstance(op, Append):
            requests.append(ClientRequest(i, Op.APPEND, op.key, op.suffix, client_id=3, seq=i))
        elif isinstance(op, Delete):
            requests.append(ClientRequest(i, Op.DELETE, op.key, client_id=3, seq=i))
        elif isinstance(op, Cas):
            requests.append(ClientRequest(i, Op.CAS, op.key, op.new, op.expected, client_id=3, seq=i))
    assert encode_entry([command_fields(r) for r in requests]) == encode_batch(
        [command_for(r) for r in requests]
    )


_any_command = st.tuples(
    st.sampled_from([0, 1, 2, 3, 9]),  # client ids: 0 (none), registered ones, an unknown one
    st.integers(-1, 4),
    st.sampled_from([1, 2, 3, 4, 5, 6, 7]),
    st.sampled_from(["k", "j"]) | st.integers(-5, 5),
    st.none() | st.sampled_from(["a", "b"]) | st.integers(-5, 5),
    st.none() | st.sampled_from(["a", "b"]),
)


@given(commands=st.lists(_any_command, max_size=60))
def test_a_batch_applies_exactly_like_its_commands_one_by_one(commands: list[tuple[object, ...]]) -> None:
    """The batch loop's inline fast path must not differ from the general path in any way."""
    batched, single = KvStateMachine(), KvStateMachine()
    for sm in (batched, single):
        for index in (1, 2, 3):
            sm.apply(index, [encode_command(0, 0, Register())])
    encoded = [msgpack.packb(c, use_bin_type=True) for c in commands]
    together = list(batched.apply(4, encoded)) if encoded else []
    apart: list[KvResult] = []
    for i, data in enumerate(encoded):
        (result,) = single.apply(4 + i, [data])
        apart.append(result)
    # A REGISTER is accepted only alone in its entry: the one difference a batch can make.
    for command, a, b in zip(commands, together, apart, strict=True):
        if command[2] != 6:
            assert a == b, command
    if not any(c[2] == 6 for c in commands):
        assert batched._data == single._data
        assert {k: (v.last_seq, v.last_command, v.last_result) for k, v in batched._sessions.items()} == {
            k: (v.last_seq, v.last_command, v.last_result) for k, v in single._sessions.items()
        }
