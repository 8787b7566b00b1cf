"""The envelope codec: round trips, and only dscore's typed errors on bad bytes."""

from __future__ import annotations

import contextlib
import enum
import random
import struct
import zlib
from dataclasses import dataclass

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dscore.core.codec import (
    WIRE_VERSION,
    decode_envelope,
    decode_value,
    encode_envelope,
    encode_value,
    frame,
)
from dscore.core.envelope import Envelope, EnvelopeFactory, Timestamp
from dscore.core.errors import (
    ChecksumMismatchError,
    DecodeError,
    LocalError,
    MalformedError,
    TooLargeError,
    UnknownKindError,
    UnsupportedVersionError,
)
from dscore.core.ids import MsgId
from dscore.core.registry import message


class Mood(enum.IntEnum):
    CALM = 1
    ANGRY = 2


@message("test.item")
@dataclass(frozen=True, slots=True)
class Item:
    index: int
    data: bytes


@message("test.batch")
@dataclass(frozen=True, slots=True)
class Batch:
    term: int
    leader: str
    items: tuple[Item, ...]
    hint: int | None
    mood: Mood
    flag: bool
    pair: tuple[int, str]
    extra: object
    weights: dict[str, int]


def sample_envelope(items: int = 3) -> Envelope:
    content = Batch(
        term=7,
        leader="n1",
        items=tuple(Item(i, bytes([i % 256]) * i) for i in range(items)),
        hint=None,
        mood=Mood.ANGRY,
        flag=True,
        pair=(3, "x"),
        extra=("anything", 1, None),
        weights={"a": 1},
    )
    return Envelope("n1", "n2", content, Timestamp(12, (("n1", 3), ("n2", 1))), MsgId("n1", 2, 99))


def test_round_trip_preserves_every_field() -> None:
    env = sample_envelope()
    assert decode_envelope(encode_envelope(env)) == env
    assert env.kind == "test.batch"


def test_factory_numbers_messages_and_keeps_lamport_time() -> None:
    factory = EnvelopeFactory("n1", incarnation=4)
    first = factory.wrap("n2", Item(1, b""))
    second = factory.wrap("n3", Item(2, b""))
    assert (first.msg_id, second.msg_id) == (MsgId("n1", 4, 1), MsgId("n1", 4, 2))
    assert first.timestamp.lamport < second.timestamp.lamport
    factory.observe(Envelope("n9", "n1", Item(0, b""), Timestamp(100), MsgId("n9", 1, 1)))
    assert factory.wrap("n2", Item(3, b"")).timestamp.lamport == 102


@given(
    term=st.integers(min_value=-(2**63), max_value=2**64 - 1),
    leader=st.text(max_size=20),
    datas=st.lists(st.binary(max_size=50), max_size=10),
    hint=st.none() | st.integers(min_value=0, max_value=2**32),
    flag=st.booleans(),
)
def test_round_trip_property(
    term: int, leader: str, datas: list[bytes], hint: int | None, flag: bool
) -> None:
    content = Batch(
        term, leader, tuple(Item(i, d) for i, d in enumerate(datas)), hint, Mood.CALM, flag, (1, ""), None, {}
    )
    env = Envelope(leader, "dst", content, Timestamp(term % 1000), MsgId(leader, 0, 1))
    assert decode_envelope(encode_envelope(env)) == env


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_decode_errors(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_envelope(data)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bodies_with_a_valid_frame_raise_only_decode_errors(body: bytes) -> None:
    # A correct CRC gets past the checksum, so this reaches the msgpack and type checks.
    with contextlib.suppress(DecodeError):
        decode_envelope(frame(body))


def _reframed(body_object: object) -> bytes:
    return frame(msgpack.packb(body_object, use_bin_type=True))


def _ext(kind: str, *fields: object) -> msgpack.ExtType:
    return msgpack.ExtType(1, msgpack.packb([kind, list(fields)], use_bin_type=True))


GOOD_HEADER = ["n1", "n2", 1, None, "n1", 1, 1]
ITEM = ["test.item", [1, b""]]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", MalformedError),
        (b"\x01\x00", MalformedError),
        (struct.pack(">BI", 9, 0) + b"\x90", UnsupportedVersionError),
        (struct.pack(">BI", WIRE_VERSION, 1234) + b"\x90", ChecksumMismatchError),
        (frame(b"\xc1"), MalformedError),  # 0xc1 is never used in msgpack
        (frame(b"\x92\x01"), MalformedError),  # truncated array
        (frame(b"\x90\x90"), MalformedError),  # trailing data
        (_reframed([1, 2, 3]), MalformedError),  # wrong arity
        (_reframed([*GOOD_HEADER, "test.item", 5]), MalformedError),  # fields are not an array
        (_reframed([*GOOD_HEADER, 7, [1, b""]]), MalformedError),  # kind is not a string
        (_reframed([*GOOD_HEADER, "no.such.kind", []]), UnknownKindError),
        (_reframed([*GOOD_HEADER, "test.item", [1]]), MalformedError),  # missing field
        (_reframed([*GOOD_HEADER, "test.item", ["1", b""]]), MalformedError),  # str for int
        (_reframed([*GOOD_HEADER, "test.item", [True, b""]]), MalformedError),  # bool is not int
        (
            _reframed([*GOOD_HEADER, "test.batch", [1, "x", [[1]], None, 1, True, [1, ""], None, {}]]),
            MalformedError,
        ),
        (
            _reframed([*GOOD_HEADER, "test.batch", [1, "x", [], None, 9, True, [1, ""], None, {}]]),
            MalformedError,
        ),
        (
            _reframed([*GOOD_HEADER, "test.batch", [1, "x", [], None, 1, True, [1, 2], None, {}]]),
            MalformedError,
        ),
        (
            _reframed([*GOOD_HEADER, "test.batch", [1, "x", [], None, 1, True, [1, ""], None, []]]),
            MalformedError,
        ),
        (
            _reframed(
                [
                    *GOOD_HEADER,
                    "test.batch",
                    [1, "x", [], None, 1, True, [1, ""], msgpack.ExtType(7, b""), {}],
                ]
            ),
            MalformedError,
        ),  # unknown ext code
        (
            _reframed(
                [*GOOD_HEADER, "test.batch", [1, "x", [], None, 1, True, [1, ""], _ext("no.kind"), {}]]
            ),
            UnknownKindError,
        ),
        (
            _reframed(
                [
                    *GOOD_HEADER,
                    "test.batch",
                    [1, "x", [], None, 1, True, [1, ""], _ext("test.item", "1", b""), {}],
                ]
            ),
            MalformedError,
        ),
        (_reframed([1, "n2", 1, None, "n1", 1, 1, *ITEM]), MalformedError),
        (_reframed(["n1", "n2", 1, [["n1", "x"]], "n1", 1, 1, *ITEM]), MalformedError),
    ],
)
def test_bad_input_raises_a_typed_error(data: bytes, error: type[DecodeError]) -> None:
    with pytest.raises(error):
        decode_envelope(data)


def test_too_large_is_refused_before_parsing() -> None:
    data = encode_envelope(sample_envelope(items=100))
    with pytest.raises(TooLargeError):
        decode_envelope(data, max_bytes=len(data) - 1)
    assert decode_envelope(data, max_bytes=len(data)) == sample_envelope(items=100)


def test_deep_nesting_is_a_typed_error() -> None:
    body = b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(MalformedError):
        decode_envelope(frame(body))


def test_every_error_has_a_metric_reason() -> None:
    reasons = {cls.reason for cls in (MalformedError, ChecksumMismatchError, UnknownKindError, TooLargeError)}
    assert reasons == {"malformed", "checksum", "unknown_kind", "too_large"}


def test_encoding_an_unregistered_object_is_a_local_error() -> None:
    with pytest.raises(LocalError):
        encode_value(object())


def test_values_round_trip_with_nested_messages() -> None:
    value = {"k": (Item(1, b"a"), None, 3)}
    assert decode_value(encode_value(value)) == value


def test_crc_detects_every_single_bit_flip() -> None:
    data = encode_envelope(sample_envelope())
    for position in range(5, len(data)):
        for bit in range(8):
            corrupted = bytearray(data)
            corrupted[position] ^= 1 << bit
            with pytest.raises(ChecksumMismatchError):
                decode_envelope(bytes(corrupted))
    assert zlib.crc32(data[5:]) == struct.unpack(">I", data[1:5])[0]


def fuzz(inputs: int, seed: int) -> tuple[int, int]:
    """Mutate valid envelopes (re-framed with a valid CRC half of the time, so mutations reach the
    parser) and decode; returns (decoded, rejected). Any exception other than DecodeError escapes."""
    rng = random.Random(seed)
    valid = [encode_envelope(sample_envelope(items=n)) for n in (0, 1, 5)]
    decoded = rejected = 0
    for _ in range(inputs):
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 4)):
            if not data:
                break
            action = rng.random()
            if action < 0.6:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif action < 0.8:
                del data[rng.randrange(len(data)) :]
            else:
                data[rng.randrange(len(data)) : rng.randrange(len(data))] = rng.randbytes(rng.randint(1, 8))
        if rng.random() < 0.5 and len(data) > 5:
            data = bytearray(frame(bytes(data[5:])))
        try:
            decode_envelope(bytes(data))
            decoded += 1
        except DecodeError:
            rejected += 1
    return decoded, rejected


def test_fuzz_100k_inputs() -> None:
    decoded, rejected = fuzz(100_000, seed=2026)
    assert decoded + rejected == 100_000
    assert rejected > 90_000


@message("test.choice")
@dataclass(frozen=True, slots=True)
class Choice:
    pick: Item | Batch | None


def test_union_of_messages_round_trips_tagged() -> None:
    for pick in (Item(3, b"z"), sample_envelope(items=1).content, None):
        value = Choice(pick)  # type: ignore[arg-type]
        assert decode_value(encode_value(value)) == value


@pytest.mark.parametrize(
    "fields",
    [
        [["test.choice", [None]]],  # a kind outside the union
        [["test.item"]],  # tag without fields
        [["test.item", ["x", b""]]],  # bad field inside the tagged member
        [5],
    ],
)
def test_union_of_messages_rejects_bad_tags(fields: list[object]) -> None:
    data = b"\x01" + msgpack.packb(["test.choice", fields], use_bin_type=True)
    with pytest.raises(MalformedError):
        decode_value(data)


@pytest.mark.parametrize("data", [b"", b"\x07\x90", b"\x01\x90", b"\x01\x92\x05\x90", b"\x00\xc1"])
def test_decode_value_rejects_bad_input(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_value(data)


def test_nested_packing_reuses_packers_safely() -> None:
    # A message inside an `object` field packs an extension while the outer packer is busy.
    outer = Batch(1, "n", (), None, Mood.CALM, False, (1, ""), Item(2, b"in"), {"w": 1})
    assert decode_value(encode_value(outer)) == outer
    assert decode_value(encode_value((outer, outer))) == (outer, outer)


@pytest.mark.parametrize(
    "header",
    [
        b"\xdd\xff\xff\xff\xff",  # array32 of 4 billion items
        b"\xdf\xff\xff\xff\xff",  # map32 of 4 billion pairs
        b"\xdb\xff\xff\xff\xff",  # str32 of 4 GiB
        b"\xc6\xff\xff\xff\xff",  # bin32 of 4 GiB
        b"\xc9\xff\xff\xff\xff\x01",  # ext32 of 4 GiB
        b"\x92\xdd\x7f\xff\xff\xff\x00",  # a forged length nested one level down
    ],
)
def test_forged_lengths_fail_at_once_without_allocating(header: bytes) -> None:
    # Every length is bounded by the input's size before anything is allocated, for both entry points.
    with pytest.raises(MalformedError):
        decode_value(b"\x00" + header + b"\x00" * 16)
    with pytest.raises(MalformedError):
        decode_envelope(frame(header + b"\x00" * 16))


def test_decoded_messages_equal_constructed_ones_and_stay_frozen() -> None:
    # Decoding fills slots directly (no __init__): the result must be indistinguishable from a built one.
    item = Item(7, b"payload")
    decoded = decode_value(encode_value(item))
    assert decoded == item and hash(decoded) == hash(item) and type(decoded) is Item
    assert repr(decoded) == repr(item)
    with pytest.raises(AttributeError):
        decoded.index = 8  # type: ignore[misc]


@message("test.validated")
@dataclass(frozen=True, slots=True)
class Validated:
    low: int
    high: int

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low must not exceed high")


def test_a_message_that_validates_itself_is_still_built_through_its_init() -> None:
    assert decode_value(encode_value(Validated(1, 2))) == Validated(1, 2)
    with pytest.raises(MalformedError, match="low must not exceed high"):
        decode_value(b"\x01" + msgpack.packb(["test.validated", [3, 2]]))
