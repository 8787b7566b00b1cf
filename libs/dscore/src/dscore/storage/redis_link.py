"""The connection a `RedisStorage` saves on: one command at a time, RESP read by an asyncio protocol.

Why not redis-py's own read and write: every consensus round saves on three nodes, and redis-py's
connection path (a timeout context per send and per read, a stream writer and reader, its RESP parser)
is about a quarter of a save's client CPU. The same `RedisStorage.save` (one entry, one mark, one
position), 2,000 saves at a time, alternated, against a real Redis run like the nodes' (`appendfsync
always`): 164-203 µs of client CPU per save through redis-py's connection, 128-154 µs on this link
(p50 0.37-0.43 against 0.36-0.45 ms: the same within the noise). What is left is `RedisStorage`'s own
encoding and packing.

How: redis-py opens and sets up the connection (address, TLS, AUTH, HELLO, SELECT, client name:
whatever the URL and the pool say), then `take_over` moves its transport to this protocol, which only
writes a packed command and parses the one reply it waits for. What redis-py did for a save is kept:

- a reply is a result (`+`, `:`, `$`, `_`) or an error (`-`, `!`), raised as the exception redis-py
  raises for it (`BaseParser.parse_error`: `NoScriptError` for NOSCRIPT, `BusyLoadingError` for
  LOADING, a `ResponseError` otherwise), so callers handle both paths alike;
- a lost connection is `ConnectionError`, an answer slower than the connection's `socket_timeout` is
  `TimeoutError` and ends the link;
- a call cancelled (or timed out) while its reply is on the way ends the link: that reply must never
  be read as the answer to the next command. A reply of any other type, or bytes nobody asked for, end
  it too. An ended link is replaced by the caller.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: reply types a save's command can get; anything else ends the link
_SIMPLE = frozenset(b"+-:_")
_BULK = frozenset(b"$!")


class SaveLink(asyncio.Protocol):
    """One command at a time on a connection taken over from redis-py (`take_over`)."""

    def __init__(self, connection: Any, timeout_s: float | None) -> None:
        #: redis-py's connection object, disconnected and released to its pool at the end
        self.connection = connection
        self.timeout_s = timeout_s
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[object] | None = None
        self._ended: str | None = None
        self._streams_protocol: asyncio.BaseProtocol | None = None
        #: commands written, for tests (one per save: one round trip)
        self.sends = 0

    @classmethod
    def take_over(cls, connection: Any) -> SaveLink:
        """This protocol on `connection`'s transport (connected and set up by redis-py, nothing in
        flight); redis-py's reader and writer on it are not used again."""
        writer, reader = connection._writer, connection._reader
        if writer is None or reader is None:
            raise RedisConnectionError("the connection is not open")
        link = cls(connection, connection.socket_timeout)
        link._buffer += bytes(getattr(reader, "_buffer", b""))  # nothing is expected: nothing was asked
        link.transport = writer.transport
        # redis-py keeps its reader and writer, so that it (or its pool) can still close the socket; the
        # end of the connection is passed on to them (`connection_lost`), which its close waits for.
        link._streams_protocol = writer.transport.get_protocol()
        writer.transport.set_protocol(link)
        if link._buffer:
            link._end("bytes arrived that no command asked for")
        return link

    @property
    def is_open(self) -> bool:
        return self._ended is None and self.transport is not None and not self.transport.is_closing()

    async def call(self, packed: bytes) -> object:
        """Write one packed command and return its reply (or raise what redis-py would raise)."""
        if not self.is_open:
            raise RedisConnectionError(f"the save connection is closed: {self._ended or 'closing'}")
        assert self.transport is not None and self._waiter is None
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self.transport.write(packed)
        self.sends += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                return await waiter
        except TimeoutError:
            self._end("no answer in time")
            raise RedisTimeoutError(f"no answer from Redis within {self.timeout_s} s") from None
        except asyncio.CancelledError:
            # The task's cancellation cancels the waiter too; only an answer already taken (the waiter
            # holds it) leaves nothing behind on the connection.
            if waiter.cancelled() or not waiter.done():
                self._end("a call was cancelled while its answer was on the way")
            raise
        finally:
            self._waiter = None

    def close(self) -> None:
        self._end("closed")

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while buffer and self._ended is None:
            parsed = _parse(buffer)
            if parsed is None:
                return  # the reply is not complete yet
            reply, used = parsed
            del buffer[:used]
            waiter = self._waiter
            if waiter is None or waiter.done():
                self._end("bytes arrived that no command asked for")
                return
            if isinstance(reply, _Unexpected):
                self._end(f"an answer of type {reply.kind!r}, not one a save gets")
                waiter.set_exception(RedisConnectionError(f"unexpected answer type {reply.kind!r}"))
            elif isinstance(reply, Exception):
                waiter.set_exception(reply)
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(f"connection lost: {exc}" if exc else "connection closed")
        if self._streams_protocol is not None:
            self._streams_protocol.connection_lost(exc)

    def _end(self, why: str) -> None:
        if self._ended is None:
            self._ended = why
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(RedisConnectionError(f"the save connection ended: {why}"))
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class _Unexpected:
    def __init__(self, kind: str) -> None:
        self.kind = kind


def _parse(buffer: bytearray) -> tuple[object, int] | None:
    """One reply from the start of `buffer` and its length in bytes, or None if it is not all there."""
    end = buffer.find(b"\r\n")
    if end < 0:
        return None
    kind = buffer[0]
    head = bytes(buffer[1:end])
    try:
        return _parse_typed(buffer, kind, head, end)
    except ValueError:  # a length or an integer that is not one
        return _Unexpected(chr(kind)), len(buffer)


def _parse_typed(buffer: bytearray, kind: int, head: bytes, end: int) -> tuple[object, int] | None:
    if kind in _SIMPLE:
        if kind == ord("+"):
            return head, end + 2
        if kind == ord("-"):
            return _error(head), end + 2
        if kind == ord(":"):
            return int(head), end + 2
        return None, end + 2  # "_": RESP3 null
    if kind in _BULK:
        length = int(head)
        if length < 0:
            return None, end + 2  # a RESP2 null bulk string
        total = end + 2 + length + 2
        if len(buffer) < total:
            return None
        body = bytes(buffer[end + 2 : end + 2 + length])
        if kind == ord("!"):
            return _error(body), total
        return body, total
    return _Unexpected(chr(kind)), len(buffer)


def _error(message: bytes) -> Exception:
    """The exception redis-py raises for this error reply."""
    error: Exception = BaseParser.parse_error(message.decode("utf-8", "replace"))  # type: ignore[no-untyped-call]
    return error
