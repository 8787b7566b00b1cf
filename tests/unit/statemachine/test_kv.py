"""The kv state machine: operations, exactly-once sessions, snapshots, determinism."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dscore.core.codec import encode_value
from dscore.core.errors import DecodeError, LocalError
from dscore.protocols.contract import EntryKind, LogEntry
from dscore.statemachine.kv import (
    Append,
    Cas,
    Command,
    Delete,
    Get,
    KvOp,
    KvResult,
    KvStateMachine,
    Put,
    decode_command,
    encode_command,
)


class Log:
    """Feeds commands to a state machine at consecutive indexes."""

    def __init__(self, sm: KvStateMachine) -> None:
        self.sm = sm
        self.index = sm.applied_index

    def run(self, client: str, seq: int, op: KvOp) -> KvResult:
        self.index += 1
        return self.sm.apply(self.index, encode_command(client, seq, op))


def test_operations() -> None:
    log = Log(KvStateMachine())
    assert log.run("c", 1, Get("k")).value is None
    assert log.run("c", 2, Append("k", "ab")).ok
    assert log.run("c", 3, Append("k", "c")).ok
    assert log.run("c", 4, Get("k")).value == "abc"
    assert log.run("c", 5, Put("k", "x")).ok
    assert log.sm.read("k") == "x"
    mismatch = log.run("c", 6, Cas("k", "y", "z"))
    assert (mismatch.ok, mismatch.error, mismatch.value) == (False, "cas_mismatch", "x")
    assert log.run("c", 7, Cas("k", "x", "z")).ok
    assert log.run("c", 8, Delete("k")).ok
    assert log.sm.read("k") is None
    assert log.run("c", 9, Cas("k", None, "new")).ok  # None expects the key absent
    assert log.sm.read("k") == "new"


def test_a_retried_command_takes_effect_once_and_returns_the_first_answer() -> None:
    log = Log(KvStateMachine())
    first = log.run("c", 1, Append("k", "a"))
    retry = log.run("c", 1, Append("k", "a"))
    assert retry == first
    assert log.sm.read("k") == "a"


def test_stale_and_expired_sessions_are_rejected_without_effect() -> None:
    log = Log(KvStateMachine(max_sessions=2))
    log.run("a", 1, Put("k", "1"))
    log.run("a", 2, Put("k", "2"))
    assert log.run("a", 1, Put("k", "stale")).error == "stale_seq"
    assert log.run("nobody", 5, Put("k", "x")).error == "session_expired"
    log.run("b", 1, Put("j", "b"))
    log.run("c", 1, Put("j", "c"))  # evicts "a", the least recently used
    assert log.run("a", 2, Put("k", "again")).error == "session_expired"
    assert log.sm.read("k") == "2"


def test_malformed_command_is_a_deterministic_error() -> None:
    sm = KvStateMachine()
    assert sm.apply(1, b"\xc1garbage").error == "malformed"
    assert sm.applied_index == 1


_text = st.text(max_size=8)
_ops = st.one_of(
    st.builds(Put, _text, _text),
    st.builds(Get, _text),
    st.builds(Delete, _text),
    st.builds(Cas, _text, st.none() | _text, _text),
    st.builds(Append, _text, _text),
)


@given(client=_text, seq=st.integers(1, 2**63 - 1), op=_ops)
def test_commands_round_trip(client: str, seq: int, op: KvOp) -> None:
    assert decode_command(encode_command(client, seq, op)) == Command(client, seq, op)


@pytest.mark.parametrize(
    "fields",
    [
        ("c", 1, 1, "k", "v"),  # five fields
        ("c", 1, 1, "k", "v", None, None),  # seven
        ("c", 0, 1, "k", "v", None),  # seq 0
        ("c", True, 1, "k", "v", None),  # a bool is not a seq
        (b"c", 1, 1, "k", "v", None),  # client id as bytes
        ("c", 1, 9, "k", "v", None),  # unknown op code
        ("c", 1, True, "k", "v", None),  # a bool is not an op code
        ("c", 1, 1, "k", None, None),  # put without a value
        ("c", 1, 1, "k", "v", "extra"),  # put with a third field
        ("c", 1, 2, "k", "v", None),  # get with a value
        ("c", 1, 4, "k", "old", None),  # cas without a new value
        ("c", 1, 4, "k", 5, "new"),  # cas expecting a number
        ("c", 1, 5, 7, "x", None),  # append to a non-string key
        ["c", 1, 1, "k", "v", None],  # a map or list where the array belongs is fine only as an array
    ],
)
def test_malformed_commands_have_no_effect_and_fail_the_same_everywhere(fields: object) -> None:
    data = encode_value(fields if not isinstance(fields, list) else {"not": "an array"})
    sm = KvStateMachine()
    result = sm.apply(1, data)
    assert (result.ok, result.error) == (False, "malformed")
    assert len(sm) == 0 and sm.applied_index == 1
    with pytest.raises(DecodeError):
        decode_command(data)
    # and nothing was opened: the same client's first command still opens its session
    assert sm.apply(2, encode_command("c", 1, Put("k", "v"))).ok


def test_applying_an_index_twice_is_a_local_error() -> None:
    sm = KvStateMachine()
    sm.apply(1, encode_command("c", 1, Put("k", "v")))
    with pytest.raises(LocalError):
        sm.apply(1, encode_command("c", 2, Put("k", "v")))


def test_non_command_entries_only_advance_the_index() -> None:
    sm = KvStateMachine()
    assert sm.apply_entry(LogEntry(1, 1, EntryKind.NOOP, b"")) is None
    assert sm.applied_index == 1


def test_snapshot_restore_keeps_data_sessions_and_recency() -> None:
    log = Log(KvStateMachine(max_sessions=2))
    log.run("a", 1, Put("k", "1"))
    log.run("b", 1, Put("j", "2"))
    log.run("a", 2, Append("k", "x"))  # "a" is now most recent, "b" least
    restored = KvStateMachine(max_sessions=2)
    restored.restore(log.sm.snapshot())
    assert restored.applied_index == log.sm.applied_index
    other = Log(restored)
    assert other.run("a", 2, Append("k", "x")) == KvResult("a", 2, ok=True)  # cached, not re-applied
    assert restored.read("k") == "1x"
    other.run("c", 1, Put("z", "z"))  # evicts "b"
    assert other.run("b", 2, Put("j", "3")).error == "session_expired"


def test_replicas_that_apply_the_same_log_agree() -> None:
    rng = random.Random(7)
    commands = []
    seqs: dict[str, int] = {}
    for _ in range(500):
        client = rng.choice("abcdef")
        seqs[client] = seqs.get(client, 0) + rng.choice((0, 1, 1, 1))  # some retries
        seq = max(seqs[client], 1)
        key = rng.choice("xyz")
        op = rng.choice(
            [Put(key, str(rng.randrange(5))), Append(key, "a"), Get(key), Delete(key), Cas(key, "1", "2")]
        )
        commands.append(encode_command(client, seq, op))
    replicas = [KvStateMachine(max_sessions=4) for _ in range(3)]
    answers = [[sm.apply(i, c) for i, c in enumerate(commands, 1)] for sm in replicas]
    assert answers[0] == answers[1] == answers[2]
    assert replicas[0].snapshot() == replicas[1].snapshot() == replicas[2].snapshot()
