"""Wire codec: msgpack body, CRC-32 error-detection code, typed errors only.

Frame layout (all integers big-endian)::

    version:u8 | crc32:u32 | body

`body` is a msgpack array `[source, destination, lamport, vector|nil, sender, incarnation, seq, kind,
fields]` where `fields` is the content message's field values in declaration order (nested messages as
nested arrays: their types are known from the declaration, see `dscore.core.registry`). A message in a
place whose type is dynamic travels as msgpack extension type 1 holding `[kind, fields]`.

Why msgpack: it is compact (field names are not repeated, unlike JSON), its C extension encodes and
decodes an AppendEntries with a hundred entries in tens of microseconds (see BENCHMARKS.md), and it keeps
`bytes` distinct from `str`, which JSON cannot. Why CRC-32 (zlib): it is in the standard library, runs in
C at several GB/s, and detects every burst error up to 32 bits; authentication of peers (a MAC) is a
separate concern layered on top by the transport, not an error-detection code.

`decode_envelope` of arbitrary bytes raises only `dscore.core.errors.DecodeError` subclasses.
"""

from __future__ import annotations

import enum
import struct
import zlib
from typing import Any

import msgpack

from dscore.core.envelope import Envelope, Timestamp
from dscore.core.errors import (
    ChecksumMismatchError,
    DecodeError,
    LocalError,
    MalformedError,
    TooLargeError,
    UnsupportedVersionError,
)
from dscore.core.ids import MsgId
from dscore.core.registry import lookup_class, lookup_kind

WIRE_VERSION = 1
_EXT_MESSAGE = 1
_HEADER = struct.Struct(">BI")
#: default bound on one encoded envelope; transports pass their own setting
DEFAULT_MAX_ENVELOPE_BYTES = 4 * 1024 * 1024


def _default(obj: Any) -> Any:
    entry = lookup_class(type(obj))
    if entry is not None:
        return msgpack.ExtType(_EXT_MESSAGE, _pack([entry.kind, entry.encode(obj)]))
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, frozenset):
        return sorted(obj)
    raise LocalError(f"cannot encode {type(obj).__name__}")


# Packers are reused: `msgpack.packb` builds a fresh Packer (and its buffer) on every call, which costs
# more than packing a small command. A pool (list pop/append are atomic) keeps reuse safe when packing
# nests (the `default` hook packs extensions) and when threads share the codec.
_packer_pool: list[msgpack.Packer] = []


def _pack(value: Any) -> bytes:
    try:
        packer = _packer_pool.pop()
    except IndexError:
        packer = msgpack.Packer(default=_default, use_bin_type=True, autoreset=True)
    try:
        data: bytes = packer.pack(value)
    except BaseException:
        packer.reset()
        raise
    finally:
        _packer_pool.append(packer)
    return data


def _ext_hook(code: int, data: bytes) -> Any:
    if code != _EXT_MESSAGE:
        raise MalformedError(f"unknown extension type {code}")
    tagged = _unpack(data)
    if type(tagged) is not tuple or len(tagged) != 2 or type(tagged[0]) is not str:
        raise MalformedError("message extension must be [kind, fields]")
    return lookup_kind(tagged[0]).decode(tagged[1])


def _unpack(data: bytes) -> Any:
    try:
        # No max_*_len arguments: msgpack >= 1.0's unpackb already bounds every length by len(data), so
        # a forged length fails at once instead of allocating (tested with forged headers).
        return msgpack.unpackb(data, use_list=False, raw=False, ext_hook=_ext_hook, strict_map_key=False)
    except DecodeError:
        raise
    except RecursionError:
        raise MalformedError("nesting too deep") from None
    except Exception as exc:  # msgpack raises many types (ValueError, ExtraData, FormatError, ...)
        raise MalformedError(f"bad msgpack: {type(exc).__name__}: {exc}") from None


_VALUE_PLAIN = b"\x00"
_VALUE_MESSAGE = b"\x01"


def encode_value(value: Any) -> bytes:
    """Encode any msgpack value or registered message (no frame); for storage records and commands.

    One leading byte says which: a message is packed as `[kind, fields]` directly (one msgpack pass, no
    extension wrapper), since commands and log records are encoded and decoded on every replica."""
    entry = lookup_class(type(value))
    if entry is not None:
        return _VALUE_MESSAGE + _pack([entry.kind, entry.encode(value)])
    return _VALUE_PLAIN + _pack(value)


def decode_value(data: bytes) -> Any:
    """Inverse of `encode_value`; raises only `DecodeError` subclasses."""
    if not isinstance(data, bytes) or not data:
        raise MalformedError("an encoded value needs at least its leading byte")
    mode, body = data[:1], data[1:]
    if mode == _VALUE_PLAIN:
        return _unpack(body)
    if mode == _VALUE_MESSAGE:
        tagged = _unpack(body)
        if type(tagged) is not tuple or len(tagged) != 2 or type(tagged[0]) is not str:
            raise MalformedError("an encoded message must be [kind, fields]")
        return lookup_kind(tagged[0]).decode(tagged[1])
    raise MalformedError(f"unknown value encoding {mode!r}")


def frame(body: bytes) -> bytes:
    return _HEADER.pack(WIRE_VERSION, zlib.crc32(body)) + body


def unframe(data: bytes, max_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES) -> bytes:
    """Check size, version and CRC; return the body."""
    if len(data) > max_bytes:
        raise TooLargeError(f"{len(data)} bytes exceeds the {max_bytes}-byte limit")
    if len(data) < _HEADER.size:
        raise MalformedError(f"{len(data)} bytes is shorter than the {_HEADER.size}-byte header")
    version, crc = _HEADER.unpack_from(data)
    if version != WIRE_VERSION:
        raise UnsupportedVersionError(f"wire version {version}, this build reads {WIRE_VERSION}")
    body = data[_HEADER.size :]
    if zlib.crc32(body) != crc:
        raise ChecksumMismatchError("CRC-32 mismatch")
    return body


def encode_envelope(envelope: Envelope) -> bytes:
    ts = envelope.timestamp
    mid = envelope.msg_id
    entry = lookup_class(type(envelope.content))
    if entry is None:
        raise LocalError(f"{type(envelope.content).__name__} is not a registered message")
    body = _pack(
        [
            envelope.source,
            envelope.destination,
            ts.lamport,
            ts.vector,
            mid.sender,
            mid.incarnation,
            mid.seq,
            entry.kind,
            entry.encode(envelope.content),
        ]
    )
    return frame(body)


def decode_envelope(data: bytes, max_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES) -> Envelope:
    """Decode untrusted bytes. Raises only `DecodeError` subclasses."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedError(f"expected bytes, got {type(data).__name__}")
    body = unframe(bytes(data), max_bytes)
    fields = _unpack(body)
    if type(fields) is not tuple or len(fields) != 9:
        raise MalformedError("envelope must be an array of 9 fields")
    source, destination, lamport, vector, sender, incarnation, seq, kind, values = fields
    for name, value, typ in (
        ("source", source, str),
        ("destination", destination, str),
        ("lamport", lamport, int),
        ("sender", sender, str),
        ("incarnation", incarnation, int),
        ("seq", seq, int),
        ("kind", kind, str),
    ):
        if type(value) is not typ:
            raise MalformedError(f"envelope {name} must be {typ.__name__}")
    content = lookup_kind(kind).decode(values)
    return Envelope(
        source=source,
        destination=destination,
        content=content,
        timestamp=Timestamp(lamport, _vector(vector)),
        msg_id=MsgId(sender, incarnation, seq),
    )


def _vector(value: Any) -> tuple[tuple[str, int], ...] | None:
    if value is None:
        return None
    if type(value) is not tuple:
        raise MalformedError("vector timestamp must be an array")
    out = []
    for item in value:
        if type(item) is not tuple or len(item) != 2 or type(item[0]) is not str or type(item[1]) is not int:
            raise MalformedError("vector timestamp entries must be [node, counter]")
        out.append((item[0], item[1]))
    return tuple(out)
