"""Wire codec: msgpack body, CRC-32 error-detection code, optional HMAC-SHA256, typed errors only.

Frame layouts (all integers big-endian)::

    version 1 (no key):    1:u8 | crc32:u32 | body
    version 2 (with key):  2:u8 | crc32:u32 | mac:32 bytes | body

The CRC covers every byte after it (the MAC too, so corruption anywhere is reported as `checksum`, never
mistaken for a forgery); the MAC is HMAC-SHA256 with the cluster key over the version byte and the body
(the version byte is covered so a frame cannot be relabelled). `body` is a msgpack array `[source,
destination, lamport, vector|nil, sender, incarnation, seq, kind, fields, fingerprint]` where `fields` is
the content message's field values in declaration order (nested messages as nested arrays: their types
are known from the declaration, see `dscore.core.registry`) and `fingerprint` the sender's cluster-settings
fingerprint (u64, 0 for none). A message in a place whose type is dynamic travels as msgpack extension
type 1 holding `[kind, fields]`. (The fingerprint joined the body without a version bump: no frame had
been stored or exchanged between builds yet.)

Decoding checks, in order: size, version, CRC (`ChecksumMismatchError`), MAC (`UnauthenticatedError`),
then the body. Who accepts what:

- a receiver with a key accepts only version-2 frames whose MAC verifies; a version-1 frame (no MAC) or a
  wrong MAC is `UnauthenticatedError`;
- a receiver without a key accepts version-1 frames and rejects version-2 frames as `UnauthenticatedError`
  too: it cannot verify the MAC, and accepting would let a half-configured cluster (some members without
  `DSCORE_AUTH_KEY`) look healthy while those members check nothing. Both sides then count rejections,
  which makes the misconfiguration visible at once.

MACs are compared in constant time (`hmac.compare_digest`). A MAC authenticates the sender as a holder of
the key; it does not stop a replay of a genuine frame, which the receivers' duplicate filter on
`msg_id = (sender, incarnation, seq)` drops. Keys shorter than `MIN_KEY_BYTES` are a `ConfigError`.

Why msgpack: it is compact (field names are not repeated, unlike JSON), its C extension encodes and
decodes an AppendEntries with a hundred entries in tens of microseconds (see BENCHMARKS.md), and it keeps
`bytes` distinct from `str`, which JSON cannot. Why CRC-32 (zlib): it is in the standard library, runs in
C at several GB/s, and detects every burst error up to 32 bits. Why HMAC-SHA256 through `hmac.digest`:
the standard library's one-shot C path (OpenSSL), with no per-call Python object; `dscore bench codec`
measures what it costs beside the unauthenticated frame.

`decode_envelope` of arbitrary bytes raises only `dscore.core.errors.DecodeError` subclasses.
"""

from __future__ import annotations

import enum
import hmac
import struct
import zlib
from typing import Any

import msgpack

from dscore.core.envelope import FINGERPRINT_LIMIT, Envelope, Timestamp
from dscore.core.errors import (
    ChecksumMismatchError,
    ConfigError,
    DecodeError,
    LocalError,
    MalformedError,
    TooLargeError,
    UnauthenticatedError,
    UnsupportedVersionError,
)
from dscore.core.ids import MsgId
from dscore.core.registry import lookup_class, lookup_kind

#: a frame without a MAC
WIRE_VERSION = 1
#: a frame with an HMAC-SHA256 after the CRC
WIRE_VERSION_MAC = 2
MAC_BYTES = 32
#: the shortest cluster key accepted (HMAC-SHA256's output size: a shorter key is the weaker link)
MIN_KEY_BYTES = 32
_EXT_MESSAGE = 1
_HEADER = struct.Struct(">BI")
_MAC_VERSION_BYTE = bytes([WIRE_VERSION_MAC])
_MAC_HEADER_BYTES = _HEADER.size + MAC_BYTES
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


def check_key(key: bytes) -> bytes:
    """Return `key` if it can be a cluster key (bytes, at least `MIN_KEY_BYTES`); else `ConfigError`.
    The message never shows the key."""
    if type(key) is not bytes:
        raise ConfigError(f"a cluster key must be bytes, got {type(key).__name__}")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"a cluster key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")
    return key


def frame(body: bytes, *, key: bytes | None = None) -> bytes:
    """Frame an encoded body: version 1 with a CRC, or with `key` version 2 with a CRC and a MAC."""
    if key is None:
        return _HEADER.pack(WIRE_VERSION, zlib.crc32(body)) + body
    mac = hmac.digest(check_key(key), _MAC_VERSION_BYTE + body, "sha256")
    return _HEADER.pack(WIRE_VERSION_MAC, zlib.crc32(body, zlib.crc32(mac))) + mac + body


def unframe(data: bytes, max_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES, *, key: bytes | None = None) -> bytes:
    """Check size, version, CRC and (see the module doc) the MAC; return the body."""
    if key is not None:
        check_key(key)
    if len(data) > max_bytes:
        raise TooLargeError(f"{len(data)} bytes exceeds the {max_bytes}-byte limit")
    if len(data) < _HEADER.size:
        raise MalformedError(f"{len(data)} bytes is shorter than the {_HEADER.size}-byte header")
    version, crc = _HEADER.unpack_from(data)
    if version == WIRE_VERSION:
        body = data[_HEADER.size :]
        if zlib.crc32(body) != crc:
            raise ChecksumMismatchError("CRC-32 mismatch")
        if key is not None:
            raise UnauthenticatedError("frame carries no MAC; this node requires one")
        return body
    if version != WIRE_VERSION_MAC:
        raise UnsupportedVersionError(
            f"wire version {version}, this build reads {WIRE_VERSION} and {WIRE_VERSION_MAC}"
        )
    if len(data) < _MAC_HEADER_BYTES:
        raise MalformedError(f"{len(data)} bytes is shorter than the {_MAC_HEADER_BYTES}-byte MAC header")
    if zlib.crc32(memoryview(data)[_HEADER.size :]) != crc:
        raise ChecksumMismatchError("CRC-32 mismatch")
    if key is None:
        raise UnauthenticatedError("frame carries a MAC and this node has no cluster key to check it")
    body = data[_MAC_HEADER_BYTES:]
    expected = hmac.digest(key, _MAC_VERSION_BYTE + body, "sha256")
    if not hmac.compare_digest(expected, data[_HEADER.size : _MAC_HEADER_BYTES]):
        raise UnauthenticatedError("MAC mismatch")
    return body


def encode_envelope(envelope: Envelope, *, key: bytes | None = None) -> bytes:
    """Encode and frame; with `key` the frame carries an HMAC-SHA256 (wire version 2)."""
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
            envelope.fingerprint,
        ]
    )
    return frame(body, key=key)


def decode_envelope(
    data: bytes, max_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES, *, key: bytes | None = None
) -> Envelope:
    """Decode untrusted bytes; with `key` only frames with a valid MAC are accepted, without a key only
    frames without one. Raises only `DecodeError` subclasses (and `ConfigError` for a bad key)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedError(f"expected bytes, got {type(data).__name__}")
    body = unframe(bytes(data), max_bytes, key=key)
    fields = _unpack(body)
    if type(fields) is not tuple or len(fields) != 10:
        raise MalformedError("envelope must be an array of 10 fields")
    source, destination, lamport, vector, sender, incarnation, seq, kind, values, fingerprint = fields
    for name, value, typ in (
        ("source", source, str),
        ("destination", destination, str),
        ("lamport", lamport, int),
        ("sender", sender, str),
        ("incarnation", incarnation, int),
        ("seq", seq, int),
        ("kind", kind, str),
        ("fingerprint", fingerprint, int),
    ):
        if type(value) is not typ:
            raise MalformedError(f"envelope {name} must be {typ.__name__}")
    if not 0 <= fingerprint < FINGERPRINT_LIMIT:
        raise MalformedError("envelope fingerprint must be an unsigned 64-bit integer")
    content = lookup_kind(kind).decode(values)
    return Envelope(
        source=source,
        destination=destination,
        content=content,
        timestamp=Timestamp(lamport, _vector(vector)),
        msg_id=MsgId(sender, incarnation, seq),
        fingerprint=fingerprint,
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
