"""Algebraic laws of `dscore.clocks`: vector-clock order is a partial order, merge is its least upper
bound, the compact form round-trips through the codec, and Lamport clocks only move forward."""

from __future__ import annotations

import functools

from hypothesis import given
from hypothesis import strategies as st

from dscore.clocks import LamportClock, Order, VectorClock, merge_all
from dscore.core.codec import decode_envelope, decode_value, encode_envelope, encode_value
from dscore.core.envelope import Envelope, Timestamp
from dscore.core.ids import MsgId
from dscore.protocols.gossip import Rumor

NODES = ("a", "b", "c", "d")

counts = st.dictionaries(st.sampled_from(NODES), st.integers(min_value=0, max_value=4))
clocks = counts.map(VectorClock.from_mapping)


def leq_by_definition(x: VectorClock, y: VectorClock) -> bool:
    return all(x.get(n) <= y.get(n) for n in NODES)


@given(clocks)
def test_compare_is_reflexive(a: VectorClock) -> None:
    assert a.compare(a) is Order.EQUAL
    assert a <= a
    assert not a < a
    assert not a.concurrent_with(a)


@given(clocks, clocks)
def test_compare_is_antisymmetric_and_dual(a: VectorClock, b: VectorClock) -> None:
    if a <= b and b <= a:
        assert a == b
    dual = {Order.BEFORE: Order.AFTER, Order.AFTER: Order.BEFORE}
    order = a.compare(b)
    assert b.compare(a) is dual.get(order, order)


@given(clocks, clocks)
def test_compare_matches_theorem_4_2(a: VectorClock, b: VectorClock) -> None:
    # e1 -> e2 iff every component <= and at least one <.
    before = leq_by_definition(a, b) and any(a.get(n) < b.get(n) for n in NODES)
    assert a.happened_before(b) is before
    assert (a < b) is before
    assert a.concurrent_with(b) is (not leq_by_definition(a, b) and not leq_by_definition(b, a))


@given(clocks, counts, counts)
def test_order_is_transitive(a: VectorClock, up1: dict[str, int], up2: dict[str, int]) -> None:
    b = a.merge(VectorClock.from_mapping(up1))
    c = b.merge(VectorClock.from_mapping(up2))
    assert a <= b <= c
    assert a <= c
    if a < b or b < c:
        assert a < c


@given(clocks, clocks, clocks)
def test_order_is_transitive_on_arbitrary_triples(a: VectorClock, b: VectorClock, c: VectorClock) -> None:
    if a <= b and b <= c:
        assert a <= c


@given(clocks, clocks, clocks)
def test_merge_is_commutative_associative_idempotent(a: VectorClock, b: VectorClock, c: VectorClock) -> None:
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(a) == a
    assert merge_all([a, b, c]) == functools.reduce(VectorClock.merge, [a, b, c], VectorClock())


@given(clocks, clocks, clocks)
def test_merge_is_the_least_upper_bound(a: VectorClock, b: VectorClock, c: VectorClock) -> None:
    join = a.merge(b)
    assert a <= join and b <= join
    if a <= c and b <= c:
        assert join <= c
    assert join <= a.merge(b).merge(c)
    # Componentwise maximum, nothing more.
    assert all(join.get(n) == max(a.get(n), b.get(n)) for n in NODES)


@given(clocks, st.sampled_from(NODES))
def test_increment_moves_strictly_forward_in_one_component(a: VectorClock, node: str) -> None:
    after = a.increment(node)
    assert a < after
    assert after.get(node) == a.get(node) + 1
    assert all(after.get(n) == a.get(n) for n in NODES if n != node)


@given(counts)
def test_compact_form_is_canonical(mapping: dict[str, int]) -> None:
    clock = VectorClock.from_mapping(mapping)
    assert all(c > 0 for _, c in clock.entries)
    assert [n for n, _ in clock.entries] == sorted(n for n, _ in clock.entries)
    assert clock == VectorClock.from_mapping({n: c for n, c in mapping.items() if c})
    assert clock.as_dict() == {n: c for n, c in mapping.items() if c}


@given(clocks)
def test_compact_encoding_round_trips_through_the_codec(a: VectorClock) -> None:
    assert VectorClock(decode_value(encode_value(a.entries))) == a


@given(clocks, st.integers(min_value=0, max_value=2**40))
def test_vector_timestamp_round_trips_in_an_envelope(a: VectorClock, lamport: int) -> None:
    envelope = Envelope(
        source="a",
        destination="b",
        content=Rumor(event=1, vector=a.entries, lamport=lamport),
        timestamp=Timestamp(lamport, a.entries),
        msg_id=MsgId("a", 1, 1),
    )
    decoded = decode_envelope(encode_envelope(envelope))
    assert decoded == envelope
    assert VectorClock(decoded.timestamp.vector or ()) == a


@given(st.lists(st.one_of(st.none(), st.integers(min_value=0, max_value=1000)), max_size=50))
def test_lamport_clock_is_strictly_monotonic(steps: list[int | None]) -> None:
    clock = LamportClock()
    previous = clock.time
    for remote in steps:
        now = clock.tick() if remote is None else clock.observe(remote)
        assert now == clock.time > previous
        if remote is not None:
            assert now > remote  # a receive is after the send it observes
        previous = now
