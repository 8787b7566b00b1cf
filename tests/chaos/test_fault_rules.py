"""Transport fault rules and commands (`dscore.transport.faults`), without I/O: the time and the random
stream are arguments, so every case is exact."""

from __future__ import annotations

import dataclasses
import random

import pytest

from dscore.core.client_messages import ClientRequests
from dscore.core.codec import encode_envelope, encode_value, frame
from dscore.core.envelope import EnvelopeFactory
from dscore.core.errors import ConfigError, LocalError, MalformedError, UnauthenticatedError
from dscore.transport.faults import (
    MAX_CLOCK_SKEW_S,
    MAX_FAULT_DURATION_S,
    CommandOutcome,
    Direction,
    FaultAction,
    FaultCommand,
    FaultCommandError,
    FaultKind,
    FaultRule,
    FaultRules,
    command_problems,
    decode_command,
    encode_command,
    peek_source,
)

KEY = b"k" * 32
NOW = 1_700_000_000.0
LATER_MS = int((NOW + 60) * 1000)


def start(fault_id: str = "f1", **fields: object) -> FaultCommand:
    base = FaultCommand(
        fault_id,
        FaultAction.START,
        FaultKind.OMISSION,
        Direction.SEND,
        drop_probability=1.0,
        issued_at_ms=int(NOW * 1000),
        expires_at_ms=LATER_MS,
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def stop(fault_id: str = "f1") -> FaultCommand:
    return FaultCommand(fault_id, FaultAction.STOP)


def partition(fault_id: str, *groups: tuple[str, ...]) -> FaultCommand:
    return start(
        fault_id, kind=FaultKind.PARTITION, direction=Direction.BOTH, drop_probability=0.0, groups=groups
    )


# -- commands on the wire ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", [KEY, None])
def test_a_command_round_trips_through_its_frame(key: bytes | None) -> None:
    command = partition("p1", ("n1",), ("n2", "n3"))
    assert decode_command(encode_command(command, key=key), key=key) == command


def test_forged_and_garbage_records_are_refused_with_a_reason() -> None:
    command = start()
    with pytest.raises(UnauthenticatedError):
        decode_command(encode_command(command, key=b"x" * 32), key=KEY)  # another key
    with pytest.raises(UnauthenticatedError):
        decode_command(encode_command(command, key=None), key=KEY)  # no MAC
    with pytest.raises(MalformedError):
        decode_command(b"\x02garbage", key=KEY)
    with pytest.raises(FaultCommandError, match="expected a fault command"):
        decode_command(frame(encode_value(ClientRequests(())), key=KEY), key=KEY)
    # well-formed and authentic, but no valid command: a probability above 1
    forged = frame(encode_value(dataclasses.replace(command, drop_probability=2.0)), key=KEY)
    with pytest.raises(FaultCommandError, match="drop_probability"):
        decode_command(forged, key=KEY)


def test_an_invalid_command_is_never_published() -> None:
    with pytest.raises(ConfigError, match="delay applies to sends only"):
        encode_command(
            start(kind=FaultKind.DELAY, delay_ms=10, direction=Direction.BOTH, drop_probability=0.0), key=KEY
        )


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        (start(fault_id=""), "fault_id"),
        (start(expires_at_ms=0), "expires_at_ms"),
        (start(drop_probability=0.0), "omission needs drop_probability"),
        (start(drop_probability=float("nan")), "drop_probability must be in"),
        (start(kind=FaultKind.DELAY, drop_probability=0.0), "delay needs delay_ms"),
        (start(kind=FaultKind.DELAY, delay_ms=120_000, drop_probability=0.0), "delay_ms must be in"),
        (partition("p", ("n1",)), "at least two non-empty groups"),
        (partition("p", ("n1",), ()), "at least two non-empty groups"),
        (partition("p", ("n1", "n2"), ("n2",)), "one partition group only"),
        (dataclasses.replace(partition("p", ("a",), ("b",)), peers=("c",)), "names groups"),
        (start(groups=(("a",), ("b",))), "groups are for partitions"),
        (start(peers=("x" * 64,)), "1-63 characters"),
        (start(peers=tuple(f"p{i}" for i in range(300))), "at most 256 names"),
    ],
)
def test_command_problems_name_what_is_wrong(command: FaultCommand, problem: str) -> None:
    problems = command_problems(command)
    assert any(problem in p for p in problems), problems


def test_a_stop_needs_only_its_id() -> None:
    assert command_problems(stop("x")) == []


# -- rules ------------------------------------------------------------------------------------------


def test_a_partition_blocks_the_other_groups_both_ways_and_nothing_else() -> None:
    rng = random.Random(1)
    command = partition("p1", ("n1",), ("n2", "n3"))
    rules = {n: FaultRules(n) for n in ("n1", "n2", "n3", "n4")}
    outcomes = {n: r.apply(command, NOW) for n, r in rules.items()}
    assert outcomes == {
        "n1": CommandOutcome.STARTED,
        "n2": CommandOutcome.STARTED,
        "n3": CommandOutcome.STARTED,
        "n4": CommandOutcome.NOT_FOR_THIS_NODE,  # in no group: untouched
    }
    n1, n2 = rules["n1"], rules["n2"]
    assert n1.on_send("n2", NOW, rng) is None and n1.on_send("n3", NOW, rng) is None
    assert not n1.on_receive("n2", NOW, rng) and not n1.on_receive("n3", NOW, rng)
    assert n1.on_send("gw-1", NOW, rng) == 0.0 and n1.on_receive("gw-1", NOW, rng)  # clients pass
    assert n2.on_send("n1", NOW, rng) is None and not n2.on_receive("n1", NOW, rng)
    assert n2.on_send("n3", NOW, rng) == 0.0 and n2.on_receive("n3", NOW, rng)  # same side
    assert rules["n4"].on_send("n1", NOW, rng) == 0.0


def test_an_omission_draws_from_the_given_stream_so_a_seed_replays_it() -> None:
    def pattern(seed: int) -> list[bool]:
        rules = FaultRules("n1")
        rules.apply(start(drop_probability=0.3, peers=("n2",)), NOW)
        rng = random.Random(seed)
        return [rules.on_send("n2", NOW, rng) is None for _ in range(2000)]

    first = pattern(7)
    assert pattern(7) == first
    assert pattern(8) != first
    assert 500 <= sum(first) <= 700  # ~30% of 2000, exact for this seed
    rules = FaultRules("n1")
    rules.apply(start(drop_probability=0.3, peers=("n2",)), NOW)
    rng = random.Random(7)
    assert all(rules.on_send("n3", NOW, rng) == 0.0 for _ in range(100))  # another peer: untouched
    assert rng.random() == random.Random(7).random()  # ... and nothing was drawn for it


def test_directions_and_peers_select_the_traffic() -> None:
    rng = random.Random(1)
    rules = FaultRules("n1")
    rules.apply(start("r", direction=Direction.RECEIVE, peers=("n2",)), NOW)
    assert rules.on_send("n2", NOW, rng) == 0.0
    assert not rules.on_receive("n2", NOW, rng)
    assert rules.on_receive("n3", NOW, rng)
    everyone = FaultRules("n1")
    everyone.apply(start("all", direction=Direction.BOTH), NOW)  # no peers named: every endpoint
    assert everyone.on_send("gw-1", NOW, rng) is None and not everyone.on_receive("n9", NOW, rng)
    own = FaultRules("n1")
    own.apply(start("own", peers=("n1", "n2")), NOW)  # a node's own id among the peers is ignored
    assert own.active[0].peers == frozenset({"n2"})


def test_a_start_names_the_nodes_that_obey_it() -> None:
    command = start(nodes=("n2",))
    assert FaultRules("n1").apply(command, NOW) is CommandOutcome.NOT_FOR_THIS_NODE
    assert FaultRules("n2").apply(command, NOW) is CommandOutcome.STARTED
    assert FaultRule.from_command(start(), "anyone") is not None  # no nodes named: every node


def test_delays_are_for_sends_and_the_longest_wins() -> None:
    rng = random.Random(1)
    rules = FaultRules("n1")
    rules.apply(start("d1", kind=FaultKind.DELAY, delay_ms=40, drop_probability=0.0), NOW)
    rules.apply(start("d2", kind=FaultKind.DELAY, delay_ms=250, drop_probability=0.0, peers=("n2",)), NOW)
    assert rules.on_send("n2", NOW, rng) == pytest.approx(0.25)
    assert rules.on_send("n3", NOW, rng) == pytest.approx(0.04)
    assert not rules.has_receive_rules
    assert rules.on_receive("n2", NOW, rng)


def test_a_rule_ends_by_itself_at_its_expiry() -> None:
    rng = random.Random(1)
    rules = FaultRules("n1")
    rules.apply(start("short", expires_at_ms=int((NOW + 5) * 1000)), NOW)
    rules.apply(start("long", peers=("n3",), expires_at_ms=int((NOW + 10) * 1000)), NOW)
    assert rules.on_send("n2", NOW + 4.999, rng) is None
    assert rules.on_send("n2", NOW + 5.0, rng) == 0.0  # "short" ended; "long" is for n3 only
    assert [r.fault_id for r in rules.active] == ["long"]
    assert rules.on_send("n3", NOW + 9.9, rng) is None
    assert rules.on_receive("n3", NOW + 9.9, rng)  # a send rule: receives untouched
    assert rules.on_send("n3", NOW + 10.0, rng) == 0.0
    assert rules.active == () and rules.expired == 2


def test_stop_and_replayed_records() -> None:
    rules = FaultRules("n1")
    assert rules.apply(stop("f1"), NOW) is CommandOutcome.NOT_ACTIVE
    assert rules.apply(start("f2"), NOW) is CommandOutcome.STARTED
    assert rules.apply(start("f2"), NOW) is CommandOutcome.STARTED  # the same start again: one rule
    assert len(rules.active) == 1
    assert rules.apply(stop("f2"), NOW) is CommandOutcome.STOPPED
    assert rules.active == ()
    # the start read again (a replay, or a node reading the topic from its start): stays stopped
    assert rules.apply(start("f2"), NOW) is CommandOutcome.ALREADY_STOPPED
    assert rules.apply(start("f1"), NOW) is CommandOutcome.ALREADY_STOPPED  # stopped before it began
    assert rules.apply(start("old", expires_at_ms=int(NOW * 1000)), NOW) is CommandOutcome.EXPIRED
    too_far = int((NOW + MAX_FAULT_DURATION_S + MAX_CLOCK_SKEW_S + 1) * 1000)
    assert rules.apply(start("long", expires_at_ms=too_far), NOW) is CommandOutcome.EXPIRY_TOO_FAR
    assert rules.active == ()


def test_rules_and_remembered_stops_are_bounded() -> None:
    rules = FaultRules("n1", max_rules=2, remembered_stops=2)
    assert rules.apply(start("a"), NOW) is CommandOutcome.STARTED
    assert rules.apply(start("b"), NOW) is CommandOutcome.STARTED
    assert rules.apply(start("c"), NOW) is CommandOutcome.TOO_MANY_RULES
    assert rules.apply(start("a", drop_probability=0.5), NOW) is CommandOutcome.STARTED  # replaces
    with pytest.raises(LocalError):
        rules.add(FaultRule("d", FaultKind.OMISSION, Direction.SEND, None, 1.0, 0.0, NOW + 1))
    for fault_id in ("x", "y", "z"):
        rules.apply(stop(fault_id), NOW)
    assert rules.apply(start("x"), NOW) is CommandOutcome.TOO_MANY_RULES  # "x" was forgotten ...
    assert rules.apply(start("z"), NOW) is CommandOutcome.ALREADY_STOPPED  # ... the newest are kept


# -- reading the source of a frame ------------------------------------------------------------------


@pytest.mark.parametrize("key", [KEY, None])
@pytest.mark.parametrize("source", ["n1", "gw-" + "h" * 40, "ñ"])
def test_peek_source_reads_the_envelope_source(key: bytes | None, source: str) -> None:
    envelope = EnvelopeFactory(source, 1).wrap("n2", ClientRequests(()))
    data = encode_envelope(envelope, key=key)
    assert peek_source(data) == source


@pytest.mark.parametrize(
    "data",
    [b"", b"\x01\x00\x00\x00\x00", b"\x07" + b"\x00" * 40, b"\x01\x00\x00\x00\x00\x9a\xa5ab", b"\xff" * 64],
)
def test_peek_source_gives_up_on_what_it_cannot_read(data: bytes) -> None:
    assert peek_source(data) is None
