"""The envelope codec: round trips, and only dscore's typed errors on bad bytes."""

from __future__ import annotations

import collections
import contextlib
import enum
import hashlib
import hmac
import random
import struct
import zlib
from dataclasses import dataclass, replace

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dscore.core import codec
from dscore.core.codec import (
    MIN_KEY_BYTES,
    WIRE_VERSION,
    WIRE_VERSION_MAC,
    decode_envelope,
    decode_value,
    encode_envelope,
    encode_value,
    frame,
)
from dscore.core.envelope import Envelope, EnvelopeFactory, Timestamp
from dscore.core.errors import (
    ChecksumMismatchError,
    ConfigError,
    DecodeError,
    LocalError,
    MalformedError,
    TooLargeError,
    UnauthenticatedError,
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
    return Envelope(
        "n1", "n2", content, Timestamp(12, (("n1", 3), ("n2", 1))), MsgId("n1", 2, 99), 0x1234_5678_9ABC_DEF0
    )


KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


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
        (_reframed([*GOOD_HEADER, "test.item", 5, 0]), MalformedError),  # fields are not an array
        (_reframed([*GOOD_HEADER, 7, [1, b""], 0]), MalformedError),  # kind is not a string
        (_reframed([*GOOD_HEADER, "no.such.kind", [], 0]), UnknownKindError),
        (_reframed([*GOOD_HEADER, "test.item", [1], 0]), MalformedError),  # missing field
        (_reframed([*GOOD_HEADER, "test.item", ["1", b""], 0]), MalformedError),  # str for int
        (_reframed([*GOOD_HEADER, "test.item", [True, b""], 0]), MalformedError),  # bool is not int
        (
            _reframed([*GOOD_HEADER, "test.batch", [1, "x", [[1]], None, 1, True, [1, ""], None, {}], 0]),
            MalformedError,
        ),
        (
            _reframed([*GOOD_HEADER, "test.batch", [1, "x", [], None, 9, True, [1, ""], None, {}], 0]),
            MalformedError,
        ),
        (
            _reframed([*GOOD_HEADER, "test.batch", [1, "x", [], None, 1, True, [1, 2], None, {}], 0]),
            MalformedError,
        ),
        (
            _reframed([*GOOD_HEADER, "test.batch", [1, "x", [], None, 1, True, [1, ""], None, []], 0]),
            MalformedError,
        ),
        (
            _reframed(
                [
                    *GOOD_HEADER,
                    "test.batch",
                    [1, "x", [], None, 1, True, [1, ""], msgpack.ExtType(7, b""), {}],
                    0,
                ]
            ),
            MalformedError,
        ),  # unknown ext code
        (
            _reframed(
                [*GOOD_HEADER, "test.batch", [1, "x", [], None, 1, True, [1, ""], _ext("no.kind"), {}], 0]
            ),
            UnknownKindError,
        ),
        (
            _reframed(
                [
                    *GOOD_HEADER,
                    "test.batch",
                    [1, "x", [], None, 1, True, [1, ""], _ext("test.item", "1", b""), {}],
                    0,
                ]
            ),
            MalformedError,
        ),
        (_reframed([1, "n2", 1, None, "n1", 1, 1, *ITEM, 0]), MalformedError),
        (_reframed(["n1", "n2", 1, [["n1", "x"]], "n1", 1, 1, *ITEM, 0]), MalformedError),
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
    classes = (
        MalformedError,
        ChecksumMismatchError,
        UnknownKindError,
        TooLargeError,
        UnsupportedVersionError,
        UnauthenticatedError,
    )
    reasons = {cls.reason for cls in classes}
    assert reasons == {"malformed", "checksum", "unknown_kind", "too_large", "version", "unauthenticated"}


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


def test_a_well_formed_body_decodes() -> None:
    # The malformed cases above differ from this one in one field each.
    decoded = decode_envelope(_reframed([*GOOD_HEADER, *ITEM, 7]))
    assert decoded.content == Item(1, b"") and decoded.fingerprint == 7


@pytest.mark.parametrize(
    "fingerprint",
    [-1, "7", None, 1.5],
)
def test_a_bad_fingerprint_is_malformed(fingerprint: object) -> None:
    with pytest.raises(MalformedError, match="fingerprint"):
        decode_envelope(_reframed([*GOOD_HEADER, *ITEM, fingerprint]))


def test_envelopes_built_positionally_default_to_no_fingerprint() -> None:
    env = Envelope("n1", "n2", Item(1, b""), Timestamp(1), MsgId("n1", 1, 1))
    assert env.fingerprint == 0
    assert decode_envelope(encode_envelope(env)) == env


def test_factory_stamps_the_fingerprint_and_it_round_trips() -> None:
    for fingerprint in (1, 2**63, 2**64 - 1):
        env = EnvelopeFactory("n1", 3, fingerprint=fingerprint).wrap("n2", Item(1, b"x"))
        assert env.fingerprint == fingerprint
        assert decode_envelope(encode_envelope(env)) == env
        assert decode_envelope(encode_envelope(env, key=KEY), key=KEY) == env
    assert EnvelopeFactory("c1", 1).wrap("n1", Item(1, b"")).fingerprint == 0


@pytest.mark.parametrize("fingerprint", [-1, 2**64, True, "1"])
def test_factory_refuses_a_fingerprint_that_is_not_u64(fingerprint: object) -> None:
    with pytest.raises(ConfigError, match="fingerprint"):
        EnvelopeFactory("n1", 1, fingerprint=fingerprint)  # type: ignore[arg-type]


# -- authenticated frames ---------------------------------------------------------------------------


def test_mac_frames_round_trip_with_the_key() -> None:
    env = sample_envelope()
    data = encode_envelope(env, key=KEY)
    assert data[0] == WIRE_VERSION_MAC
    assert decode_envelope(data, key=KEY) == env
    assert len(data) == len(encode_envelope(env)) + 32


def test_mac_frame_layout() -> None:
    # version | crc32 over everything after it | HMAC-SHA256(key, version + body) | body
    env = sample_envelope()
    data = encode_envelope(env, key=KEY)
    body = encode_envelope(env)[5:]
    assert data[37:] == body
    assert data[5:37] == hmac.new(KEY, bytes([WIRE_VERSION_MAC]) + body, hashlib.sha256).digest()
    assert struct.unpack(">I", data[1:5])[0] == zlib.crc32(data[5:])


def test_wrong_key_is_unauthenticated() -> None:
    data = encode_envelope(sample_envelope(), key=KEY)
    with pytest.raises(UnauthenticatedError, match="MAC mismatch"):
        decode_envelope(data, key=OTHER_KEY)
    assert UnauthenticatedError.reason == "unauthenticated"


def test_a_keyed_receiver_rejects_frames_without_a_mac() -> None:
    with pytest.raises(UnauthenticatedError, match="no MAC"):
        decode_envelope(encode_envelope(sample_envelope()), key=KEY)


def test_a_receiver_without_a_key_rejects_mac_frames() -> None:
    with pytest.raises(UnauthenticatedError, match="no cluster key"):
        decode_envelope(encode_envelope(sample_envelope(), key=KEY))


def test_a_forged_body_with_a_valid_crc_is_unauthenticated() -> None:
    # A forger can always fix the CRC; only the MAC stops a changed body.
    genuine = encode_envelope(sample_envelope(), key=KEY)
    forged_body = encode_envelope(replace(sample_envelope(), destination="n3"))[5:]
    forged = genuine[:1] + struct.pack(">I", zlib.crc32(genuine[5:37] + forged_body)) + genuine[5:37]
    with pytest.raises(UnauthenticatedError):
        decode_envelope(forged + forged_body, key=KEY)
    # The same frame signed with the wrong key is no better.
    with pytest.raises(UnauthenticatedError):
        decode_envelope(frame(forged_body, key=OTHER_KEY), key=KEY)


def test_relabelling_a_mac_frame_as_version_1_does_not_get_past_a_keyed_receiver() -> None:
    data = encode_envelope(sample_envelope(), key=KEY)
    relabelled = bytes([WIRE_VERSION]) + data[1:]  # the CRC still matches: it covers mac + body
    with pytest.raises(UnauthenticatedError):
        decode_envelope(relabelled, key=KEY)


def test_mac_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(codec.hmac, "compare_digest", spy)
    data = encode_envelope(sample_envelope(), key=KEY)
    decode_envelope(data, key=KEY)
    assert calls == [(data[5:37], data[5:37])]


def test_a_truncated_mac_header_is_malformed() -> None:
    data = encode_envelope(sample_envelope(), key=KEY)
    short = data[:1] + struct.pack(">I", zlib.crc32(data[5:20])) + data[5:20]
    with pytest.raises(MalformedError, match="MAC header"):
        decode_envelope(short, key=KEY)


def test_crc_detects_every_single_bit_flip_in_a_mac_frame() -> None:
    # Corruption is reported as corruption, never as a forgery: the CRC covers the MAC too.
    data = encode_envelope(sample_envelope(items=1), key=KEY)
    for position in range(5, len(data)):
        for bit in range(8):
            corrupted = bytearray(data)
            corrupted[position] ^= 1 << bit
            with pytest.raises(ChecksumMismatchError):
                decode_envelope(bytes(corrupted), key=KEY)


@pytest.mark.parametrize("key", [b"", b"k" * (MIN_KEY_BYTES - 1), "k" * 64, bytearray(64)])
def test_a_short_or_mistyped_key_is_a_config_error(key: object) -> None:
    data = encode_envelope(sample_envelope())
    with pytest.raises(ConfigError, match="cluster key") as error:
        encode_envelope(sample_envelope(), key=key)  # type: ignore[arg-type]
    assert "kkk" not in str(error.value)
    with pytest.raises(ConfigError, match="cluster key"):
        decode_envelope(data, key=key)  # type: ignore[arg-type]


def fuzz(inputs: int, seed: int) -> collections.Counter[str]:
    """Mutate valid envelopes, with and without a MAC, and decode them; returns how many were decoded
    (`"decoded"`) and how many were rejected per reason. Any exception other than DecodeError escapes.

    Half the mutants are re-framed so they pass the checks before the parser: a valid CRC, and for MAC'd
    frames a valid MAC too (re-signed with the key), so mutations reach the msgpack and type checks. The
    receiver mostly holds the sender's key, sometimes another key or none."""
    rng = random.Random(seed)
    envelopes = [sample_envelope(items=n) for n in (0, 1, 5)]
    valid = [(encode_envelope(e), None) for e in envelopes]
    valid += [(encode_envelope(e, key=KEY), KEY) for e in envelopes]
    outcomes: collections.Counter[str] = collections.Counter()
    for _ in range(inputs):
        original, key = rng.choice(valid)
        data = bytearray(original)
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
        if rng.random() < 0.5:
            if key is None and len(data) > 5:
                data = bytearray(frame(bytes(data[5:])))
            elif key is not None and len(data) > 37:
                data = bytearray(frame(bytes(data[37:]), key=key))
        receiver = key if rng.random() < 0.9 else rng.choice([None, KEY, OTHER_KEY])
        try:
            decode_envelope(bytes(data), key=receiver)
            outcomes["decoded"] += 1
        except DecodeError as error:
            outcomes[error.reason] += 1
    return outcomes


def test_fuzz_100k_inputs() -> None:
    outcomes = fuzz(100_000, seed=2026)
    assert outcomes.total() == 100_000
    assert outcomes.total() - outcomes["decoded"] > 90_000
    # Mutants got past each stage: corruption, forgery and the parser all rejected some.
    for reason in ("checksum", "unauthenticated", "malformed", "version", "decoded"):
        assert outcomes[reason] > 100, outcomes


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
